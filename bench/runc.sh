#!/usr/bin/env bash
# eci-runc against runc and crun (issue targets: eci/runc <= 1.0 on the bare cycle, <= 1.1 through
# docker). Two figures, each alternating the runtimes per iteration so drift in the machine's
# load hits all of them alike:
#   1. bare cycle: `create` + `start` + `delete --force` of a busybox bundle (`true`), per runtime;
#   2. `docker run --rm --network none IMAGE true` through one private dockerd (own data/exec
#      roots, socket, containerd namespaces, no bridge, no iptables) that has eci-runc and runc
#      registered, `--runtime eci` vs `--runtime runc`.
#   bench/runc.sh [ITERATIONS]        default 30 per runtime and figure
#   ECI_BENCH_CHECK=1 bench/runc.sh   exit 1 when a target is missed
# Needs root, docker.io (dockerd, runc), crun and busybox-static. Builds eci-runc --release.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-30}

# eci-runc hands every container's mount-vetting listener to eci-supervisor (issue 10), which
# it finds beside itself; this run gets a private one (socket in the work folder), stopped at
# the end, so the figures include the hand-off.
cargo build --release -p eci-runc -p eci-supervisor -p eci-views >&2
eci=$PWD/target/release/eci-runc
runc=$(command -v runc)
crun=$(command -v crun || true)

work=$(mktemp -d /tmp/eci-runc-bench.XXXXXX)
export ECI_SUPERVISOR_SOCKET=$work/supervisor/supervisor.sock
# The views server eci-runc starts, and the fd stores the servers start, are this run's too.
export ECI_VIEWS_ROOT=$work/views
dockerd_pid=""
cleanup() {
  # The daemons of this run: the supervisor and views server eci-runc started and their fd
  # stores (they name the work folder in their command line or environment).
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = $$ ] && continue
    if cat "$p/cmdline" "$p/environ" 2>/dev/null | tr '\0' '\n' | grep -qF -- "$work/"; then
      case "$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null)" in
        *eci-supervisor*|*eci-views*|*fd-store*) kill "${p#/proc/}" 2>/dev/null || true ;;
      esac
    fi
  done
  for r in eci runc crun; do
    for id in $(ls "$work/root-$r" 2>/dev/null); do
      ECI_RUNC_STATE_DIR=$work/ids "${!r:-true}" --root "$work/root-$r" delete --force "$id" >/dev/null 2>&1 || true
    done
  done
  if [ -n "$dockerd_pid" ]; then
    ids=$(DOCKER_HOST=unix://$work/docker.sock docker ps -aq 2>/dev/null || true)
    [ -n "$ids" ] && DOCKER_HOST=unix://$work/docker.sock docker rm -f $ids >/dev/null 2>&1 || true
    kill "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$dockerd_pid" 2>/dev/null || true
  fi
  grep -o " $work[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# A busybox rootfs, used as the bare bundle and imported as the docker image.
img=$work/image
mkdir -p "$img"/{bin,etc,tmp,proc,sys,dev,root}
cp /bin/busybox "$img/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$img/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$img/etc/passwd"
echo 'root:x:0:' > "$img/etc/group"

bundle=$work/bundle
mkdir -p "$bundle"
cp -a "$img" "$bundle/rootfs"
(cd "$bundle" && "$runc" spec)
python3 - "$bundle/config.json" <<'EOF'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["args"] = ["true"]
c["root"]["readonly"] = False
json.dump(c, open(p, "w"))
EOF

now() { date +%s%N; }
declare -A total
cycle() { # runtime-name binary id
  local r=$1 bin=$2 id=$3 t0 t1
  t0=$(now)
  ECI_RUNC_STATE_DIR=$work/ids "$bin" --root "$work/root-$r" create --bundle "$bundle" "$id" \
    </dev/null >/dev/null 2>>"$work/$r.err" &&
  ECI_RUNC_STATE_DIR=$work/ids "$bin" --root "$work/root-$r" start "$id" 2>>"$work/$r.err" &&
  ECI_RUNC_STATE_DIR=$work/ids "$bin" --root "$work/root-$r" delete --force "$id" 2>>"$work/$r.err" ||
    return 1
  t1=$(now)
  total[$r]=$(( ${total[$r]:-0} + t1 - t0 ))
}

runtimes="eci runc"
[ -n "$crun" ] && runtimes="$runtimes crun"
# Warm-up (page cache, cgroup parents); a runtime that cannot run the bundle here is reported
# and left out rather than ending the benchmark.
ok_runtimes=""
for r in $runtimes; do
  if cycle "$r" "${!r}" warm; then
    ok_runtimes="$ok_runtimes $r"
  else
    echo "$r cannot run the bundle on this machine, left out: $(tail -n 3 "$work/$r.err")" >&2
    [ "$r" = crun ] || exit 1
  fi
done
runtimes=$ok_runtimes
[[ " $runtimes " == *" crun "* ]] || crun=""
total=()
for i in $(seq "$n"); do
  for r in $runtimes; do
    if ! cycle "$r" "${!r}" "b$i"; then
      # crun 1.8 fails now and then on this hybrid cgroup layout; it is only a reference.
      [ "$r" = crun ] || { echo "$r failed: $(tail -n 3 "$work/$r.err")" >&2; exit 1; }
      echo "crun failed in cycle $i, left out: $(tail -n 2 "$work/crun.err" | tr '\n' ' ')" >&2
      runtimes=${runtimes/ crun/}
      crun=""
    fi
  done
done
echo "bare create+start+delete of a busybox bundle, $n cycles each:"
for r in $runtimes; do
  printf '  %-5s %8.1f ms/cycle\n' "$r" "$(echo "${total[$r]} / $n / 1000000" | bc -l)"
done
bare_ratio=$(echo "${total[eci]} / ${total[runc]}" | bc -l)
printf '  ratio eci-runc/runc %.3f (target <= 1.0)\n' "$bare_ratio"
[ -n "$crun" ] && [ -n "${total[crun]:-}" ] && printf '  ratio eci-runc/crun %.3f\n' "$(echo "${total[eci]} / ${total[crun]}" | bc -l)"

# Through dockerd. The engine-internal files (hosts, resolv.conf) live under this engine's
# data root, which the policy names; dockerd's environment reaches eci-runc through the
# containerd and shim it starts.
cat > "$work/policy.json" <<EOF
{"bindMounts": {"allowedVmPrefixes": ["/mnt/host"]}, "eciRunc": {"engineDataRoots": ["$work/data"]}}
EOF
echo '{}' > "$work/daemon.json"
ns="eci-runc-bench-$$"
ECI_RUNC_POLICY=$work/policy.json ECI_RUNC_STATE_DIR=$work/ids \
dockerd --config-file "$work/daemon.json" --data-root "$work/data" --exec-root "$work/exec" \
  --pidfile "$work/dockerd.pid" -H "unix://$work/docker.sock" \
  --containerd-namespace "$ns" --containerd-plugins-namespace "$ns-plugins" \
  --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
  --add-runtime "eci=$eci" --log-level warn > "$work/dockerd.log" 2>&1 &
dockerd_pid=$!
export DOCKER_HOST=unix://$work/docker.sock
for _ in $(seq 300); do docker version >/dev/null 2>&1 && break; sleep 0.2; done
tar -C "$img" -cf - . | docker import - eci-bench:busybox >/dev/null
docker run --rm --network none --runtime eci eci-bench:busybox true
docker run --rm --network none --runtime runc eci-bench:busybox true
declare -A dtotal
for i in $(seq "$n"); do
  for r in eci runc; do
    t0=$(now)
    docker run --rm --network none --runtime "$r" eci-bench:busybox true
    t1=$(now)
    dtotal[$r]=$(( ${dtotal[$r]:-0} + t1 - t0 ))
  done
done
echo "docker run --rm --network none IMAGE true, $n runs each:"
for r in eci runc; do
  printf '  %-5s %8.1f ms/run\n' "$r" "$(echo "${dtotal[$r]} / $n / 1000000" | bc -l)"
done
docker_ratio=$(echo "${dtotal[eci]} / ${dtotal[runc]}" | bc -l)
printf '  ratio eci-runc/runc %.3f (target <= 1.1)\n' "$docker_ratio"

if [ "${ECI_BENCH_CHECK:-}" = 1 ]; then
  fail=0
  [ "$(echo "$bare_ratio > 1.0" | bc -l)" = 1 ] && { echo "bare cycle target missed" >&2; fail=1; }
  [ "$(echo "$docker_ratio > 1.1" | bc -l)" = 1 ] && { echo "docker run target missed" >&2; fail=1; }
  exit $fail
fi
