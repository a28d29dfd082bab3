#!/usr/bin/env bash
# The read cost of the /proc views (issue 10 target: under 50 µs per read, SPEC F3 under load).
# Builds eci-views --release and its readbench example, starts a private views server (its own
# ECI_VIEWS_ROOT in a temporary folder, stopped at the end), registers containers on cgroups
# made for the run (cgroup v2, or v1's memory/cpu/cpuacct/cpuset/blkio/pids hierarchies), and
# measures in one run:
#   1. one open + read + close of each view against the VM's own file: µs each and the ratio;
#   2. 50 containers with 50 different memory limits read their /proc/meminfo in parallel for
#      SECONDS: every read must show the reader's own MemTotal; latency p50/p99 under that load.
#   bench/views.sh [N [SECONDS]]        N reads per timing round (default 20000), default 5 s
#   ECI_BENCH_CHECK=1 bench/views.sh    exit 1 when a meminfo read costs 50 µs or more
#   THREADS=N bench/views.sh           the server's worker threads (default 2, as eci-views serve)
#   BASE=/path/eci-views bench/views.sh also start a server from that binary (an older build)
#                                       and time views of this build against the same views
#                                       of BASE, interleaved in one run: the ratio of a change
# Needs root and /dev/fuse.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20000}
secs=${2:-5}

cargo build --release -p eci-views --bin eci-views --example readbench >&2
bin=$PWD/target/release/eci-views
bench=$PWD/target/release/examples/readbench

work=$(mktemp -d /tmp/eci-views-bench.XXXXXX)
export ECI_VIEWS_ROOT=$work/views
tag=eci-views-bench-$$
server=""
base_server=""
cgroups=()
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  [ -n "$base_server" ] && kill "$base_server" 2>/dev/null || true
  # The fd stores the servers started (eci-views fd-store --socket $work/...): they outlive them.
  pkill -f -- "--socket $work/" 2>/dev/null || true
  umount -l "$ECI_VIEWS_ROOT/fs" 2>/dev/null || true
  umount -l "$work/base/fs" 2>/dev/null || true
  for d in "${cgroups[@]}"; do rmdir "$d" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

"$bin" serve --threads "${THREADS:-2}" >"$work/serve.log" 2>&1 &
server=$!
[ -n "${RENICE:-}" ] && renice -n "$RENICE" -p "$server" >/dev/null
for _ in $(seq 100); do [ -S "$ECI_VIEWS_ROOT/serve.sock" ] && break; sleep 0.05; done
[ -S "$ECI_VIEWS_ROOT/serve.sock" ] || { cat "$work/serve.log" >&2; exit 1; }
if [ -n "${BASE:-}" ]; then
  ECI_VIEWS_ROOT=$work/base "$BASE" serve --threads "${THREADS:-2}" >"$work/base.log" 2>&1 &
  base_server=$!
  for _ in $(seq 100); do [ -S "$work/base/serve.sock" ] && break; sleep 0.05; done
  [ -S "$work/base/serve.sock" ] || { cat "$work/base.log" >&2; exit 1; }
fi

v2=false
[ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ] && v2=true
# register KEY MEGABYTES: a cgroup with that memory limit and the record naming it.
register() {
  local key=$1 mb=$2 dirs
  if $v2; then
    local d=/sys/fs/cgroup/$tag-$key
    mkdir "$d"; cgroups+=("$d")
    echo $((mb * 1048576)) > "$d/memory.max"
    dirs="\"v2\":\"$d\""
  else
    dirs=""
    for c in memory cpu cpuacct cpuset blkio pids; do
      local d=/sys/fs/cgroup/$c/$tag-$key
      [ -d "/sys/fs/cgroup/$c" ] || continue
      mkdir -p "$d"; cgroups+=("$d")
      dirs+="${dirs:+,}\"$c\":\"$d\""
    done
    echo $((mb * 1048576)) > "/sys/fs/cgroup/memory/$tag-$key/memory.limit_in_bytes"
  fi
  mkdir -p "$ECI_VIEWS_ROOT/containers"
  cat > "$ECI_VIEWS_ROOT/containers/$key.json" <<EOF
{"key":"$key","cgroup":{$dirs},"root_uid":100000,"root_gid":100000,"id_range":65536,
 "started_boottime_ns":0,"boot_id":"00000000-0000-4000-8000-000000000000",
 "machine_id":"00000000000040008000000000000000","product_uuid":"00000000-0000-4000-8000-000000000000",
 "state_dir":"$work"}
EOF
  if [ -n "$base_server" ]; then
    mkdir -p "$work/base/containers"
    cp "$ECI_VIEWS_ROOT/containers/$key.json" "$work/base/containers/"
  fi
}

echo "cgroup $($v2 && echo v2 || echo v1), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
register c0 256
echo "1. one read (open + read + close), $n reads each in alternating batches (median batch; ratio: median of neighbouring batches):"
for f in meminfo uptime stat cpuinfo loadavg swaps diskstats; do
  "$bench" single "$ECI_VIEWS_ROOT/fs/c0/proc/$f" "/proc/$f" "$n" | tee -a "$work/single.txt"
done
# A view with a fixed text: the FUSE round trips alone, without rendering.
"$bench" single "$ECI_VIEWS_ROOT/fs/c0/boot_id" /proc/sys/kernel/random/boot_id "$n"
if [ -n "$base_server" ]; then
  echo "1b. this build against BASE ($BASE), same view, interleaved (ratio = this build / BASE):"
  for f in proc/meminfo proc/uptime boot_id; do
    "$bench" single "$ECI_VIEWS_ROOT/fs/c0/$f" "$work/base/fs/c0/$f" "$n" |
      sed "s|^$work/base/fs/c0/\([^ ]*\) *view|  \1: this build|; s|native|BASE|"
  done
fi

echo "2. 50 containers, each reading its own /proc/meminfo for $secs s:"
readers=()
for i in $(seq 1 50); do
  register "m$i" $((64 + i))
  readers+=("$ECI_VIEWS_ROOT/fs/m$i/proc/meminfo:$(((64 + i) * 1024))")
done
"$bench" load "$secs" "${readers[@]}"

if [ "${ECI_BENCH_CHECK:-0}" = 1 ]; then
  us=$(awk '/\/proc\/meminfo/ {print $4}' "$work/single.txt")
  awk -v us="$us" 'BEGIN { exit !(us < 50) }' || { echo "meminfo read $us µs >= 50 µs" >&2; exit 1; }
fi
