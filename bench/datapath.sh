#!/usr/bin/env bash
# The data path under eci against runc (issue 10 target: ratio <= 1.02). A static program in a
# busybox image times three loops inside the container and prints ns per iteration:
#   rw   open + 4 KiB pwrite + 4 KiB pread + close of a file in the container's rootfs (upper
#        layer of dockerd's overlay; under eci its lower layers are idmapped mounts)
#   ro   open + 4 KiB pread + close of /bin/busybox (a lower-layer file)
#   sys  a 1-byte read of /dev/zero (the bare system call: every seccomp filter on the path)
# One private dockerd (own data/exec roots, socket, containerd namespaces, no bridge, no
# iptables) has eci-runc and runc registered; one container of each (`docker run -i --runtime
# eci` and `--runtime runc`) runs the program, which waits on its stdin for a batch size and
# answers with the three timings. Batches alternate between the two containers (which goes
# first alternates too), so a load change on the shared machine hits neighbouring batches
# alike. Prints the load average, both medians per loop and the median of the ratios of
# neighbouring batches (the figure to read), and the ratio of the medians.
#   bench/datapath.sh [N] [BATCHES]      defaults 5000 iterations per batch, 61 batches each
#   ECI_BENCH_CHECK=1 bench/datapath.sh  exit 1 when the rw ratio is above 1.02
#   RUN_ARGS='--security-opt seccomp=unconfined' bench/datapath.sh   more `docker run` options
#                                        for both (here: no docker profile, so the difference
#                                        left is eci's own filters, user namespace and mounts)
# Needs root, docker.io (dockerd, runc), cc with a static libc, busybox-static. Builds eci-runc,
# eci-supervisor and eci-views --release; the supervisor and the views server eci-runc starts
# are private ones (in the work folder), stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-5000}
batches=${2:-61}

cargo build --release -p eci-runc -p eci-supervisor -p eci-views >&2
eci=$PWD/target/release/eci-runc

work=$(mktemp -d /tmp/eci-datapath-bench.XXXXXX)
export ECI_SUPERVISOR_SOCKET=$work/supervisor/supervisor.sock
export ECI_VIEWS_ROOT=$work/views
export ECI_RUNC_STATE_DIR=$work/ids
dockerd_pid=""
# The daemons eci-runc started for this run (supervisor, its fd store, views server): their
# command line or environment names $work. In a subshell without pipefail: a file that cannot
# be read (the process ended) must not turn a match into a failure.
run_daemons() (
  set +o pipefail
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = $$ ] && continue
    if cat "$p/cmdline" "$p/environ" 2>/dev/null | tr '\0' '\n' | grep -qF -- "$work/"; then
      echo "${p#/proc/}"
    fi
  done
)
cleanup() {
  if [ -n "$dockerd_pid" ]; then
    ids=$(docker ps -aq 2>/dev/null || true)
    [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1 || true
    kill "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$dockerd_pid" 2>/dev/null || true
  fi
  for p in $(run_daemons); do kill "$p" 2>/dev/null || true; done
  grep -o " $work[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

img=$work/image
mkdir -p "$img"/{bin,etc,tmp,proc,sys,dev,root}
cp /bin/busybox "$img/bin/busybox"
ln -s busybox "$img/bin/sh"
echo 'root:x:0:0:root:/root:/bin/sh' > "$img/etc/passwd"
echo 'root:x:0:' > "$img/etc/group"
cat > "$work/dp.c" <<'EOF'
#include <string.h>
#include "rwloop.h"
static void ro(long n) {
    for (long i = 0; i < n; i++) {
        int fd = open("/bin/busybox", O_RDONLY | O_CLOEXEC);
        if (fd < 0) die("open /bin/busybox");
        if (pread(fd, buf, sizeof buf, 0) != sizeof buf) die("pread busybox");
        close(fd);
    }
}
static void sys(long n) {
    int fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("open /dev/zero");
    for (long i = 0; i < n; i++)
        if (read(fd, buf, 1) != 1) die("read /dev/zero");
    close(fd);
}
/* Each line on stdin is a batch size N: the loops run N times (sys 20 N) and their ns per
 * iteration come back on stdout, one line each. */
int main(void) {
    struct { const char *name; void (*f)(long); long scale; } loops[] = {
        {"rw", rw, 1}, {"ro", ro, 1}, {"sys", sys, 20}};
    char line[64];
    memset(buf, 'x', sizeof buf);
    while (fgets(line, sizeof line, stdin)) {
        long n = atol(line);
        if (n <= 0) return 2;
        for (int i = 0; i < 3; i++) {
            long k = n * loops[i].scale;
            double a = now();
            loops[i].f(k);
            printf("%s %.1f\n", loops[i].name, (now() - a) / k);
        }
        fflush(stdout);
    }
    return 0;
}
EOF
cc -static -O2 -I bench -o "$img/dp" "$work/dp.c"

# The engine-internal files (hosts, resolv.conf) live under this engine's data root, which the
# policy names; dockerd's environment reaches eci-runc through the containerd and shim it starts.
cat > "$work/policy.json" <<EOF
{"bindMounts": {"allowedVmPrefixes": ["/mnt/host"]}, "eciRunc": {"engineDataRoots": ["$work/data"]}}
EOF
echo '{}' > "$work/daemon.json"
ns="eci-datapath-bench-$$"
ECI_RUNC_POLICY=$work/policy.json \
dockerd --config-file "$work/daemon.json" --data-root "$work/data" --exec-root "$work/exec" \
  --pidfile "$work/dockerd.pid" -H "unix://$work/docker.sock" \
  --containerd-namespace "$ns" --containerd-plugins-namespace "$ns-plugins" \
  --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
  --add-runtime "eci=$eci" --log-level warn > "$work/dockerd.log" 2>&1 &
dockerd_pid=$!
export DOCKER_HOST=unix://$work/docker.sock
for _ in $(seq 300); do docker version >/dev/null 2>&1 && break; sleep 0.2; done
docker version >/dev/null 2>&1 || { tail -n 20 "$work/dockerd.log" >&2; exit 1; }
tar -C "$img" -cf - . | docker import - eci-bench:datapath >/dev/null

# One container per runtime, fed batch sizes through a fifo on its stdin.
runs=()
for r in eci runc; do
  mkfifo "$work/$r.in" "$work/$r.out"
  # shellcheck disable=SC2086 # RUN_ARGS is a list of options
  docker run -i --rm --network none ${RUN_ARGS:-} --runtime "$r" eci-bench:datapath /dp \
    <"$work/$r.in" >"$work/$r.out" 2>"$work/$r.err" &
  runs+=($!)
done
exec {eci_in}>"$work/eci.in" {eci_out}<"$work/eci.out"
exec {runc_in}>"$work/runc.in" {runc_out}<"$work/runc.out"
batch() { # runtime batch-name
  local in out line
  in=${1}_in out=${1}_out
  echo "$n" >&"${!in}"
  for _ in 1 2 3; do
    read -r -t 120 -u "${!out}" line || { echo "$1 gave no figure: $(cat "$work/$1.err")" >&2; exit 1; }
    echo "$1 $2 $line" >> "$work/results"
  done
}
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"
for r in eci runc; do batch "$r" warm; batch "$r" warm; done
for i in $(seq "$batches"); do
  if [ $((i % 2)) = 1 ]; then batch eci "$i"; batch runc "$i"; else batch runc "$i"; batch eci "$i"; fi
done
exec {eci_in}>&- {runc_in}>&-
wait "${runs[@]}"
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"
echo "ns per iteration, $batches batches of $n iterations each (sys: $((n * 20))), alternating${RUN_ARGS:+, docker run $RUN_ARGS}:"
python3 - "$work/results" <<'EOF'
import statistics, sys
res = {}
for line in open(sys.argv[1]):
    p = line.split()
    if len(p) != 4 or p[1] == "warm":
        continue
    try:
        res.setdefault(p[2], {}).setdefault(p[0], {})[p[1]] = float(p[3])
    except ValueError:
        sys.exit(f"unexpected output: {line!r}")
worst = 0.0
for loop in ("rw", "ro", "sys"):
    e, r = res[loop]["eci"], res[loop]["runc"]
    me, mr = statistics.median(e.values()), statistics.median(r.values())
    paired = statistics.median(e[k] / r[k] for k in e if k in r)
    print(f"  {loop:<4} eci {me:9.1f}  runc {mr:9.1f}  ratio {paired:.3f}"
          f"  (ratio of the medians {me / mr:.3f})")
    if loop == "rw":
        worst = paired
open(sys.argv[1] + ".rw", "w").write(f"{worst}\n")
EOF
if [ "${ECI_BENCH_CHECK:-0}" = 1 ]; then
  awk '{ exit !($1 <= 1.02) }' "$work/results.rw" || { echo "data path ratio above 1.02" >&2; exit 1; }
fi
