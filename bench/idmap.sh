#!/usr/bin/env bash
# The kernel's own share of the data path's cost under eci (bench/datapath.sh's rw loop: open
# + 4 KiB pwrite + 4 KiB pread + close of a rootfs file), without docker, eci-runc or seccomp:
# bench/idmap.c mounts three overlays of identical layer trees (a lower layer with tmp/, an
# upper the loop writes to) in a private mount namespace and runs the loop in a process
# chrooted into each, batches alternating (which one goes first turns every batch):
#   plain   plain layers, the process VM root (runc's rootfs and process)
#   chown   layers chowned to 100000, the process root of a user namespace mapping 0 to
#           100000 (a user namespace without idmapped mounts)
#   idmap   the layers as idmapped mounts (0 -> 100000), the process root of that user
#           namespace (eci-runc's shape, runtime/runc/src/rootfs.rs)
# The two container overlays are made by VM root with file-system ids 100000, as eci-runc
# makes its overlay.
# Prints the medians and the median ratio of neighbouring batches: idmap/plain is what the
# kernel alone charges eci's shape against runc's on the loop of bench/datapath.sh's rw ratio.
#   bench/idmap.sh [N] [BATCHES]      defaults 50000 iterations per batch, 101 batches
# Needs root, cc with a static libc, python3, and a /tmp whose filesystem takes idmapped
# mounts and an overlay upper layer.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-50000}
batches=${2:-101}
work=$(mktemp -d /tmp/eci-idmap-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
cc -O2 -static -I bench -o "$work/bench" bench/idmap.c
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs, kernel $(uname -r)"
# The mounts live in the program's own mount namespace and end with it.
"$work/bench" "$work" "$n" "$batches" > "$work/results"
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"
echo "ns per rw iteration, $batches batches of $n iterations each, alternating:"
python3 - "$work/results" <<'PYEOF'
import statistics, sys
res = {}
for line in open(sys.argv[1]):
    mode, b, ns = line.split()
    res.setdefault(mode, {})[int(b)] = float(ns)
for m in ("plain", "chown", "idmap"):
    print(f"  {m:<6} {statistics.median(res[m].values()):8.1f}")
for a, b in (("chown", "plain"), ("idmap", "plain"), ("idmap", "chown")):
    r = statistics.median(res[a][k] / res[b][k] for k in res[a])
    print(f"  {a}/{b}: {r:.3f}")
PYEOF
