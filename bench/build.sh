#!/usr/bin/env bash
# Build-time and size figures for `eci-build image` (issue targets: warm rebuild < 15 s on
# 2 cores, excluding cargo compilation; initramfs < 150 MiB compressed).
#   bench/build.sh [TARGET]     default target: hyperv
# The cold build uses a fresh, empty cache (so it includes downloads); the warm rebuild reuses it.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-hyperv}
cargo build --release --locked -p eci-build >&2
bin=target/release/eci-build
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

now() { date +%s.%N; }
t0=$(now)
ECI_CACHE_DIR="$work/cache" "$bin" image --target "$target" --out "$work/cold" 2> "$work/cold.log"
t1=$(now)
ECI_CACHE_DIR="$work/cache" "$bin" image --target "$target" --out "$work/warm" --offline 2> "$work/warm.log"
t2=$(now)

size_of() { python3 -c "import json,sys; m=json.load(open(sys.argv[1])); a=[x for x in m['artifacts'] if x['kind']=='initramfs'][0]; print(a['size'], a['uncompressed_size'])" "$1"; }
read -r compressed uncompressed < <(size_of "$work/warm/manifest.json")
cmp -s "$work/cold/initramfs.img" "$work/warm/initramfs.img" && same=yes || same=no
awk -v c="$t0" -v w="$t1" -v e="$t2" -v cs="$compressed" -v us="$uncompressed" -v same="$same" -v t="$target" 'BEGIN {
  printf "target                      %s\n", t
  printf "cold build (downloads)      %.1f s\n", w - c
  printf "warm rebuild (full cache)   %.1f s   (target < 15 s)\n", e - w
  printf "initramfs compressed        %.1f MiB (target < 150 MiB)\n", cs / 1048576
  printf "initramfs uncompressed      %.1f MiB (ratio %.2f)\n", us / 1048576, cs / us
  printf "cold and warm byte-identical %s\n", same
}'
