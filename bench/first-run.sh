#!/usr/bin/env bash
# Where a `docker run --rm` goes in the VM (issue 13): one diagnostic boot of the built image
# under TCG whose self-test, in place of the image's, imports the one-binary test image and
# runs its first container (both through eci-guard, the users' socket), then RUNS rounds of: a
# `docker run --rm --network none` through the guard, the same on dockerd's own socket (where
# the image's self-test and so bench/boot.sh's first-run milestone run it), one through the
# guard on the default bridge, the docker CLI's start alone (`docker --version`) and a start of
# dockerd's binary (`dockerd --version`: what each of dockerd's self re-executions costs).
# Prints the median of each with the runtime's calls (create, start, delete, the shim's second
# forced delete) and dockerd's "set key" time.
#   bench/first-run.sh [--target T] [--runs N] [--runtime PATH]
# Defaults: hyperv (the build in out/T: run `eci-build image` first), 5 runs (at most 20: the
# self-test has 300 s). --runtime PATH: another OCI runtime binary (Debian's runc, say; it runs
# in the VM, so it may link only what the image has) joins dockerd as `bench-other`, and every
# round also runs the container with it on dockerd's socket (the guard refuses other runtimes).
#
# The diagnostic files go into a copy of the image's initramfs (decompressed, extended, and
# compressed again as the image's is, legacy LZ4): the self-test; dockerd at log level debug (it
# logs "sandbox set key processing took" only there; debug logging slows dockerd a little);
# eci-runc behind a shell that notes each call's start and end in guest uptime (10 ms steps;
# the shell adds one process start per call, ~20 ms under TCG). The boot is `eci-build test`'s.
set -euo pipefail
cd "$(dirname "$0")/.."
target=hyperv runs=5 other=
while [ $# -gt 0 ]; do
    case "$1" in
        --target) target=$2; shift 2 ;;
        --runs) runs=$2; shift 2
            [[ "$runs" =~ ^[1-9][0-9]*$ ]] && [ "$runs" -le 20 ] ||
                { echo "--runs: a number from 1 to 20" >&2; exit 2; } ;;
        --runtime) other=$(realpath "$2"); shift 2
            [ -x "$other" ] || { echo "--runtime: $other is not an executable file" >&2; exit 2; } ;;
        *) echo "usage: bench/first-run.sh [--target T] [--runs N] [--runtime PATH]" >&2; exit 2 ;;
    esac
done
for tool in lz4 cpio python3; do
    command -v "$tool" >/dev/null || { echo "bench/first-run.sh: needs $tool (apt-get install $tool)" >&2; exit 1; }
done
img=out/$target
for f in "$img/vmlinuz" "$img/initramfs.img" "$img/manifest.json"; do
    [ -f "$f" ] || { echo "bench/first-run.sh: $f missing (eci-build image --target $target)" >&2; exit 1; }
done
[ "$(head -c 4 "$img/initramfs.img" | od -An -tx1 | tr -d ' ')" = 02214c18 ] ||
    { echo "bench/first-run.sh: $img/initramfs.img is not legacy LZ4" >&2; exit 1; }

cargo build -q --locked -p eci-build >&2
bin=${CARGO_TARGET_DIR:-target}/debug/eci-build
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

lz4 -dc "$img/initramfs.img" > "$work/image.cpio"
ov=$work/overlay
mkdir -p "$ov/usr/lib/eci" "$ov/usr/bin"
(cd "$ov" && cpio -i --quiet -d etc/docker/daemon.json < "$work/image.cpio")
[ -f "$ov/etc/docker/daemon.json" ] || { echo "bench/first-run.sh: the image has no /etc/docker/daemon.json" >&2; exit 1; }
[ -z "$other" ] || cp "$other" "$ov/usr/bin/eci-bench-other-runtime"
python3 - "$ov/etc/docker/daemon.json" "$other" <<'EOF'
import json, sys
p, other = sys.argv[1], sys.argv[2]
d = json.load(open(p))
d["debug"] = True
d["log-level"] = "debug"
rt = d["runtimes"][d["default-runtime"]]
if rt["path"] != "/usr/bin/eci-runc":
    sys.exit(f"bench/first-run.sh: the default runtime is {rt['path']}, not /usr/bin/eci-runc")
rt["path"] = "/usr/bin/eci-runc-timed"
if other:
    d["runtimes"]["bench-other"] = {"path": "/usr/bin/eci-bench-other-runtime"}
json.dump(d, open(p, "w"), indent=2)
EOF
cat > "$ov/usr/bin/eci-runc-timed" <<'EOF'
#!/bin/busybox sh
read -r s _ < /proc/uptime
/usr/bin/eci-runc "$@"
rc=$?
read -r e _ < /proc/uptime
echo "$s $e $rc $*" >> /run/eci-bench-runtime
exit $rc
EOF
cat > "$ov/usr/lib/eci/selftest" <<EOF
#!/bin/sh
bb=/bin/busybox
# A mark: ECI-BENCH t STEP ROUND UPTIME.
t() { echo "ECI-BENCH t \$1 \$2 \$(\$bb cut -d' ' -f1 /proc/uptime)"; }
# eci-init points the self-test at dockerd's own socket; users reach the guard.
guard="docker -H unix:///run/docker.sock"
direct="docker -H unix:///run/eci/dockerd.sock"
image=eci-bench:busybox
other=${other:+yes}
echo "ECI-SELFTEST-BEGIN"
t import-begin 0
\$bb tar -c -h -C / bin/busybox lib64/ld-linux-x86-64.so.2 lib/x86_64-linux-gnu/libc.so.6 \\
    lib/x86_64-linux-gnu/libresolv.so.2 | \$guard import - \$image > /dev/null || echo "ECI-BENCH failed import"
t import-end 0
t first-begin 0; \$guard run --rm --network none \$image /bin/busybox true || echo "ECI-BENCH failed first"; t first-end 0
i=1
while [ \$i -le $runs ]; do
    t guard-begin \$i; \$guard run --rm --network none \$image /bin/busybox true || echo "ECI-BENCH failed guard"; t guard-end \$i
    t direct-begin \$i; \$direct run --rm --network none \$image /bin/busybox true || echo "ECI-BENCH failed direct"; t direct-end \$i
    t bridge-begin \$i; \$guard run --rm \$image /bin/busybox true || echo "ECI-BENCH failed bridge"; t bridge-end \$i
    if [ -n "\$other" ]; then
        t other-begin \$i
        \$direct run --rm --network none --runtime bench-other \$image /bin/busybox true || echo "ECI-BENCH failed other"
        t other-end \$i
    fi
    t cli-begin \$i; docker --version > /dev/null; t cli-end \$i
    t dockerd-begin \$i; dockerd --version > /dev/null; t dockerd-end \$i
    i=\$((i + 1))
done
\$bb sed 's/^/ECI-BENCH runtime /' /run/eci-bench-runtime
\$bb grep -o 'set key processing took [0-9.]*[mµ]*s' /var/log/eci/dockerd.log | \$bb sed 's/^/ECI-BENCH /'
echo "ECI-BENCH done"
echo "ECI-SELFTEST fail: a benchmark boot (bench/first-run.sh), not the image's self-test"
EOF
chmod 755 "$ov/usr/bin/eci-runc-timed" "$ov/usr/lib/eci/selftest"
# Files only: a folder entry would reset the image's folder to this umask's mode.
(cd "$ov" && find . -type f | sed 's|^\./||' | cpio -o -H newc --quiet -R 0:0) > "$work/overlay.cpio"

# What a direct boot reads: the kernel and the manifest beside the extended initramfs (the later
# archive's files replace the image's). The test writes its console and verdict there too.
mkdir "$work/out"
cp "$img/vmlinuz" "$img/manifest.json" "$work/out/"
cat "$work/image.cpio" "$work/overlay.cpio" | lz4 -l -q -c > "$work/out/initramfs.img"
rm "$work/image.cpio"

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cpus)"
"$bin" test --target "$target" --out "$work/out" --accel tcg --firmware direct --format json \
    > "$work/verdict.json" 2> "$work/test.err" || true
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"
[ -f "$work/out/console.log" ] || { tail -5 "$work/test.err" >&2; echo "bench/first-run.sh: no console" >&2; exit 1; }
grep -q "^ECI-BENCH done" "$work/out/console.log" || {
    tail -20 "$work/out/console.log" >&2
    echo "bench/first-run.sh: the benchmark self-test did not finish (the console's end is above)" >&2
    exit 1
}

python3 - "$work/out/console.log" "$other" <<'EOF'
import re, statistics, sys
console, other = sys.argv[1], sys.argv[2]
marks, runtime, setkey, failed = {}, [], [], []
ready = None
for line in open(console, errors="replace"):
    line = line.rstrip("\n")
    m = re.search(r"eci-init: ready: .*eci-guard:ready@([0-9.]+)", line)
    if m:
        ready = float(m.group(1))
    if not line.startswith("ECI-BENCH "):
        continue
    f = line.split()
    if f[1] == "t" and len(f) == 5:
        marks[(f[2], f[3])] = float(f[4])
    elif f[1] == "runtime":
        s, e, rc, args = float(f[2]), float(f[3]), f[4], f[5:]
        # go-runc's shape: global options with their values, then the command.
        skip = {"--root", "--log", "--log-format", "--criu"}
        cmd, i = None, 0
        while i < len(args):
            if args[i] in skip:
                i += 2
                continue
            if not args[i].startswith("-"):
                cmd = args[i]
                break
            i += 1
        if cmd == "delete" and "--force" in args:
            cmd = "delete --force"
        runtime.append((cmd or "?", e - s, rc))
    elif f[1] == "failed":
        failed.append(f[2])
    else:
        m = re.match(r"ECI-BENCH set key processing took ([0-9.]+)(ms|µs|s)", line)
        if m:
            setkey.append(float(m.group(1)) * {"ms": 1e-3, "µs": 1e-6, "s": 1.0}[m.group(2)])

def spans(step):
    """Begin and end of each round, paired by the round's number."""
    out = []
    for (name, r), begin in marks.items():
        end = marks.get((step + "-end", r))
        if name == step + "-begin" and end is not None:
            out.append(end - begin)
    return out

def row(label, xs, note=""):
    if not xs:
        print(f"  {label:<54} (none)")
        return
    print(f"  {label:<54} {statistics.median(xs):6.2f} s  ({min(xs):.2f}-{max(xs):.2f}, n={len(xs)}){note}")

def single(label, xs):
    print(f"  {label:<54} {xs[0]:6.2f} s" if xs else f"  {label:<54} (none)")

first_end = marks.get(("first-end", "0"))
print(f"engine ready through the guard at uptime {ready:.2f} s" if ready else "engine ready: not seen")
print(f"first `docker run --rm` through the guard done at uptime {first_end:.2f} s" if first_end else "first run: not seen")
print("one boot; single samples, then medians (min-max) over the rounds, seconds:")
single("import of the test image (docker import), guard", spans("import"))
single("first docker run --rm --network none, guard", spans("first"))
row("docker run --rm --network none, guard", spans("guard"))
row("docker run --rm --network none, dockerd socket", spans("direct"))
row("docker run --rm (default bridge), guard", spans("bridge"))
if other:
    row(f"docker run --rm --network none, {other.rsplit('/', 1)[-1]}", spans("other"))
row("docker CLI start (docker --version)", spans("cli"))
row("dockerd binary start (dockerd --version)", spans("dockerd"))
row("dockerd: sandbox set key (a set-ipv6 re-exec in it)", setkey)
print("eci-runc's calls from the shim (each with the timing shell's ~20 ms):")
for cmd in ("create", "start", "delete", "delete --force"):
    xs = [d for c, d, _ in runtime if c == cmd]
    rcs = sorted({rc for c, _, rc in runtime if c == cmd})
    row(f"{cmd}", xs, f"  exit {','.join(rcs)}" if rcs and rcs != ["0"] else "")
problems = [f"failed steps: {', '.join(failed)}"] if failed else []
if not runtime:
    problems.append("no runtime calls were timed (the eci-runc wrapper was not used)")
if not setkey:
    problems.append("dockerd logged no set-key times (not at debug level?)")
if problems:
    sys.exit("bench/first-run.sh: " + "; ".join(problems) + ": the figures above are not to be used")
EOF
