#!/usr/bin/env bash
# Latency of the Docker API through eci-guard vs straight to dockerd (issue target: overhead
# under 5 %). Starts a private dockerd (own data/exec roots, sockets, containerd namespaces, no
# bridge, no iptables) and the release eci-guard in front of it, imports a busybox image, then
# times `docker run --rm IMAGE true` and `docker ps` on both sockets, alternating so drift in
# the machine's load hits both sides alike.
#   bench/guard.sh [ITERATIONS]        default 40 per operation and side
#   ECI_BENCH_CHECK=1 bench/guard.sh   exit 1 when an overhead is 5 % or more
# Needs root, docker.io (dockerd, runc), the docker CLI and busybox-static.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-40}

cargo build --release -p eci-guard >&2
guard_bin=$PWD/target/release/eci-guard

work=$(mktemp -d /tmp/eci-guard-bench.XXXXXX)
dockerd_pid=""
guard_pid=""
cleanup() {
  [ -n "$guard_pid" ] && kill "$guard_pid" 2>/dev/null && wait "$guard_pid" 2>/dev/null || true
  if [ -n "$dockerd_pid" ]; then
    ids=$(DOCKER_HOST=unix://$work/dockerd.sock docker ps -aq 2>/dev/null || true)
    [ -n "$ids" ] && DOCKER_HOST=unix://$work/dockerd.sock docker rm -f $ids >/dev/null 2>&1 || true
    kill "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$dockerd_pid" 2>/dev/null || true
  fi
  grep -o " $work[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo '{}' > "$work/daemon.json"
ns="eci-guard-bench-$$"
dockerd --config-file "$work/daemon.json" --data-root "$work/data" --exec-root "$work/exec" \
  --pidfile "$work/dockerd.pid" -H "unix://$work/dockerd.sock" \
  --containerd-namespace "$ns" --containerd-plugins-namespace "$ns-plugins" \
  --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
  --add-runtime "eci=$(command -v runc)" --log-level warn > "$work/dockerd.log" 2>&1 &
dockerd_pid=$!
direct="unix://$work/dockerd.sock"
for _ in $(seq 600); do DOCKER_HOST=$direct docker version >/dev/null 2>&1 && break; sleep 0.1; done
DOCKER_HOST=$direct docker version >/dev/null

mkdir -p "$work/rootfs/bin"
cp /bin/busybox "$work/rootfs/bin/"
ln -s busybox "$work/rootfs/bin/true"
ln -s busybox "$work/rootfs/bin/sh"
tar -C "$work/rootfs" -c . | DOCKER_HOST=$direct docker import - eci-bench/busybox:1 >/dev/null

mkdir -p "$work/share"
cat > "$work/policy.json" <<EOF
{"version": 1, "isolation": true, "dockerdSocket": "$work/dockerd.sock",
 "runtime": {"name": "eci", "path": "/usr/bin/eci-runc"},
 "bindMounts": {"allowedVmPrefixes": ["$work/share"], "sharedHostPaths": []},
 "dockerSocketMount": {"images": [], "allowDerivedImages": false,
                       "commandList": {"type": "deny", "commands": []}}}
EOF
"$guard_bin" --listen "$work/guard.sock" --listen "container=$work/guard-c.sock" \
  --upstream "$work/dockerd.sock" --settings "$work/policy.json" \
  --audit-log "$work/audit.log" --state-dir "$work/guard-state" 2> "$work/guard.log" &
guard_pid=$!
guarded="unix://$work/guard.sock"
for _ in $(seq 100); do [ -S "$work/guard.sock" ] && DOCKER_HOST=$guarded docker version >/dev/null 2>&1 && break; sleep 0.1; done

# A few containers so `docker ps` has something to list.
for i in 1 2 3 4 5; do DOCKER_HOST=$direct docker run -d --name "idle$i" eci-bench/busybox:1 sh -c 'sleep 3600' >/dev/null; done

ns_now() { date +%s%N; }
time_one() { # DOCKER_HOST, command... -> nanoseconds on stdout
  local host=$1; shift
  local t0 t1
  t0=$(ns_now)
  DOCKER_HOST=$host "$@" >/dev/null
  t1=$(ns_now)
  echo $((t1 - t0))
}

run_cmd=(docker run --rm eci-bench/busybox:1 true)
ps_cmd=(docker ps)
# Warm up both paths (page cache, first containerd shim start, guard's first connection).
for _ in 1 2 3; do
  for h in "$direct" "$guarded"; do DOCKER_HOST=$h "${run_cmd[@]}" >/dev/null; DOCKER_HOST=$h "${ps_cmd[@]}" >/dev/null; done
done

: > "$work/samples"
for i in $(seq "$n"); do
  # Alternate which side goes first so neither always runs on a freshly idle machine.
  if [ $((i % 2)) -eq 0 ]; then order=("$direct" "$guarded"); else order=("$guarded" "$direct"); fi
  for h in "${order[@]}"; do
    side=direct; [ "$h" = "$guarded" ] && side=guard
    echo "run $side $(time_one "$h" "${run_cmd[@]}")" >> "$work/samples"
    echo "ps $side $(time_one "$h" "${ps_cmd[@]}")" >> "$work/samples"
  done
done

[ "$(DOCKER_HOST=$direct docker inspect -f '{{.HostConfig.Runtime}}' idle1)" = "runc" ]
python3 - "$work/samples" "$n" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
n = int(sys.argv[2])
fail = False
print(f"eci-guard latency, {n} samples per operation and side (ms)")
print(f"{'operation':<22}{'direct median':>14}{'guard median':>14}{'overhead':>10}{'direct mean':>13}{'guard mean':>12}{'overhead':>10}")
for op, label in (("run", "docker run --rm"), ("ps", "docker ps")):
    d = [int(r[2]) / 1e6 for r in rows if r[0] == op and r[1] == "direct"]
    g = [int(r[2]) / 1e6 for r in rows if r[0] == op and r[1] == "guard"]
    dm, gm = statistics.median(d), statistics.median(g)
    da, ga = statistics.mean(d), statistics.mean(g)
    om, oa = (gm / dm - 1) * 100, (ga / da - 1) * 100
    fail |= om >= 5
    print(f"{label:<22}{dm:>14.1f}{gm:>14.1f}{om:>9.1f}%{da:>13.1f}{ga:>12.1f}{oa:>9.1f}%")
print("target: median overhead under 5 % ->", "FAIL" if fail else "ok")
open(sys.argv[1] + ".verdict", "w").write("fail" if fail else "ok")
EOF
if [ "${ECI_BENCH_CHECK:-0}" = 1 ] && [ "$(cat "$work/samples.verdict")" = fail ]; then exit 1; fi
