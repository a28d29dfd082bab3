#!/usr/bin/env bash
# Where a boot's time goes (issue 13): boots the built image with its self-test RUNS times per
# firmware path under TCG, back to back, and prints the median of every phase and milestone.
#   bench/boot.sh [--target T] [--runs N] [--firmware direct|uefi|both] [--out DIR] [--keep DIR]
# Defaults: hyperv, 3 runs, both paths, the build in out/T (run `eci-build image` first).
#
# Figures come from `eci-build test --format json` (builder/src/boot_phases.rs reads the
# console): guest uptime from the kernel's stamps, eci-init's `phase` marks, the services'
# readiness and the self-test's first `docker run --rm`; wall time from each line's arrival.
# `command wall` is the whole `eci-build test` run as this script saw it: the self-test boot and,
# where the target runs them, the test suites' own boot. TCG only: `--accel auto` spends
# seconds on a KVM probe, and /dev/kvm can hang QEMU.
# The machine's load average is printed before and after: on a shared machine every figure
# moves with it, so compare phases and ratios of one run of this script, not runs of two days.
set -euo pipefail
cd "$(dirname "$0")/.."
target=hyperv runs=3 firmware=both out= keep=
while [ $# -gt 0 ]; do
    case "$1" in
        --target) target=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --firmware) firmware=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --keep) keep=$2; shift 2 ;;
        *) echo "usage: bench/boot.sh [--target T] [--runs N] [--firmware direct|uefi|both] [--out DIR] [--keep DIR]" >&2; exit 2 ;;
    esac
done
case "$firmware" in both) paths="direct uefi" ;; direct|uefi) paths=$firmware ;; *) echo "--firmware: direct, uefi or both" >&2; exit 2 ;; esac

cargo build -q --locked -p eci-build >&2
bin=${CARGO_TARGET_DIR:-target}/debug/eci-build
work=${keep:-$(mktemp -d)}
mkdir -p "$work"
[ -n "$keep" ] || trap 'rm -rf "$work"' EXIT

load() { cut -d' ' -f1-3 /proc/loadavg; }
echo "load average before: $(load) ($(nproc) cpus)"
for path in $paths; do
    for i in $(seq 1 "$runs"); do
        t0=$(date +%s.%N)
        # A failing self-test still has its phases; the verdict is reported, not fatal.
        "$bin" test --target "$target" ${out:+--out "$out"} --accel tcg --firmware "$path" \
            --format json > "$work/$path-$i.json" 2> "$work/$path-$i.err" || true
        t1=$(date +%s.%N)
        echo "$t0 $t1" > "$work/$path-$i.wall"
        echo "$path run $i: $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); b=r.get("boot", r); print(b["selftest"]["status"], "in %.1f s" % b["seconds"])' "$work/$path-$i.json" 2>/dev/null || echo "no result: $(tail -n 2 "$work/$path-$i.err")")" >&2
    done
done
echo "load average after:  $(load)"

python3 - "$work" "$runs" $paths <<'EOF'
import json, os, statistics, sys
work, runs, paths = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
results = {}
for p in paths:
    rs = []
    for i in range(1, runs + 1):
        try:
            r = json.load(open(os.path.join(work, f"{p}-{i}.json")))
            # Since eci-build test also runs the test suites against the VM, its verdict nests
            # the self-test boot under `boot`; the command's wall time then includes the suites.
            r = dict(r.get("boot", r), command_seconds=r.get("seconds"))
        except (OSError, ValueError):
            continue
        t0, t1 = map(float, open(os.path.join(work, f"{p}-{i}.wall")).read().split())
        r["command_wall"] = t1 - t0
        rs.append(r)
    results[p] = rs

def med(xs):
    return statistics.median(xs) if xs else None

def cell(xs):
    if not xs:
        return "-"
    return f"{med(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})" if len(xs) > 1 else f"{xs[0]:.2f}"

# Phase and milestone names in boot order: a name only one path has (UEFI's loader) goes
# right after the name that precedes it in that path's runs.
def names(key):
    seen = []
    for rs in results.values():
        for r in rs:
            prev = None
            for x in r.get(key, []):
                n = x["name"]
                if n not in seen:
                    seen.insert(seen.index(prev) + 1 if prev in seen else len(seen), n)
                prev = n
    return seen

head = "| " + " | ".join(["phase (s, median (min-max))"] + [f"{p} ({len(results[p])} runs)" for p in paths]) + " |"
print()
print(head)
print("|" + "---|" * (len(paths) + 1))
for n in names("phases"):
    row = [n]
    for p in paths:
        row.append(cell([x["seconds"] for r in results[p] for x in r.get("phases", []) if x["name"] == n]))
    print("| " + " | ".join(row) + " |")
print()
# Each service from its start to its readiness: services start together where services.json
# lets them, so these overlap; the chain above is the critical path.
print("| " + " | ".join(["service start -> ready (s, median (min-max))"] + paths) + " |")
print("|" + "---|" * (len(paths) + 1))
for n in names("services"):
    row = [n]
    for p in paths:
        ss = [x for r in results[p] for x in r.get("services", []) if x["name"] == n]
        row.append(cell([x["seconds"] for x in ss]) + (f" from {med([x['started'] for x in ss]):.2f}" if ss else ""))
    print("| " + " | ".join(row) + " |")
print()
print("| " + " | ".join(["milestone: uptime / wall (s, median)"] + paths) + " |")
print("|" + "---|" * (len(paths) + 1))
for n in names("milestones"):
    row = [n]
    for p in paths:
        ms = [x for r in results[p] for x in r.get("milestones", []) if x["name"] == n]
        row.append(f"{med([m['uptime'] for m in ms]):.2f} / {med([m['wall'] for m in ms]):.2f}" if ms else "-")
    print("| " + " | ".join(row) + " |")
row = ["command wall (eci-build test)"]
for p in paths:
    row.append(cell([r["command_wall"] for r in results[p]]))
print("| " + " | ".join(row) + " |")
row = ["self-test verdicts"]
for p in paths:
    row.append(" ".join(r["selftest"]["status"] or "none" for r in results[p]) or "-")
print("| " + " | ".join(row) + " |")
EOF
