#!/usr/bin/env bash
# Where a `docker run --rm` goes in the VM (issue 13): one diagnostic boot of the built image
# under TCG whose self-test, in place of the image's, imports the one-binary test image, runs
# its first container, then RUNS rounds of: a `docker run --rm --network none` through the
# guard, the same on dockerd's own socket, one on the default bridge, the docker CLI's start
# alone (`docker --version`) and a start of dockerd's binary (`dockerd --version`: what each of
# dockerd's self re-executions costs). Prints the median of each with the runtime's calls
# (create, start, delete, the shim's second forced delete) and dockerd's "set key" time.
#   bench/first-run.sh [--target T] [--runs N]
# Defaults: hyperv (the build in out/T: run `eci-build image` first), 5 runs.
#
# The diagnostic files go into a copy of the image's initramfs (decompressed, extended, and
# compressed again as the image's is, legacy LZ4): the self-test; dockerd at log level debug (it
# logs "sandbox set key processing took" only there; debug logging slows dockerd a little);
# eci-runc behind a shell that notes each call's start and end in guest uptime (10 ms steps;
# the shell adds one process start per call, ~20 ms under TCG). The boot is `eci-build test`'s.
set -euo pipefail
cd "$(dirname "$0")/.."
target=hyperv runs=5
while [ $# -gt 0 ]; do
    case "$1" in
        --target) target=$2; shift 2 ;;
        --runs) runs=$2; shift 2
            [[ "$runs" =~ ^[1-9][0-9]*$ ]] || { echo "--runs: a number of at least 1" >&2; exit 2; } ;;
        *) echo "usage: bench/first-run.sh [--target T] [--runs N]" >&2; exit 2 ;;
    esac
done
for tool in lz4 cpio python3; do
    command -v "$tool" >/dev/null || { echo "bench/first-run.sh: needs $tool (apt-get install $tool)" >&2; exit 1; }
done
img=out/$target
for f in "$img/vmlinuz" "$img/initramfs.img"; do
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
python3 - "$ov/etc/docker/daemon.json" <<'EOF'
import json, sys
p = sys.argv[1]
d = json.load(open(p))
d["debug"] = True
d["log-level"] = "debug"
rt = d["runtimes"][d["default-runtime"]]
if rt["path"] != "/usr/bin/eci-runc":
    sys.exit(f"bench/first-run.sh: the default runtime is {rt['path']}, not /usr/bin/eci-runc")
rt["path"] = "/usr/bin/eci-runc-timed"
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
t() { echo "ECI-BENCH t \$1 \$(\$bb cut -d' ' -f1 /proc/uptime)"; }
direct="docker -H unix:///run/eci/dockerd.sock"
image=eci-bench:busybox
echo "ECI-SELFTEST-BEGIN"
t import-begin
\$bb tar -c -h -C / bin/busybox lib64/ld-linux-x86-64.so.2 lib/x86_64-linux-gnu/libc.so.6 \\
    lib/x86_64-linux-gnu/libresolv.so.2 | docker import - \$image > /dev/null || echo "ECI-BENCH failed import"
t import-end
t first-begin; docker run --rm --network none \$image /bin/busybox true || echo "ECI-BENCH failed first"; t first-end
i=0
while [ \$i -lt $runs ]; do
    t guard-begin; docker run --rm --network none \$image /bin/busybox true || echo "ECI-BENCH failed guard"; t guard-end
    t direct-begin; \$direct run --rm --network none \$image /bin/busybox true || echo "ECI-BENCH failed direct"; t direct-end
    t bridge-begin; docker run --rm \$image /bin/busybox true || echo "ECI-BENCH failed bridge"; t bridge-end
    t cli-begin; docker --version > /dev/null; t cli-end
    t dockerd-begin; dockerd --version > /dev/null; t dockerd-end
    i=\$((i + 1))
done
\$bb sed 's/^/ECI-BENCH runtime /' /run/eci-bench-runtime
\$bb grep -o 'set key processing took [0-9.]*[mµ]*s' /var/log/eci/dockerd.log | \$bb sed 's/^/ECI-BENCH /'
echo "ECI-SELFTEST fail: a benchmark boot (bench/first-run.sh), not the image's self-test"
EOF
chmod 755 "$ov/usr/bin/eci-runc-timed" "$ov/usr/lib/eci/selftest"
(cd "$ov" && find . -mindepth 1 | sed 's|^\./||' | cpio -o -H newc --quiet -R 0:0) > "$work/overlay.cpio"

# A copy of the build with the extended initramfs; the later archive's files replace the image's.
# Copies, not links: the test writes its console and verdict into that folder.
mkdir "$work/out"
for f in "$img"/*; do
    case "$(basename "$f")" in initramfs.img|console.log|junit.xml) ;; *) cp "$f" "$work/out/" ;; esac
done
cat "$work/image.cpio" "$work/overlay.cpio" | lz4 -l -q -c > "$work/out/initramfs.img"
rm "$work/image.cpio"

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cpus)"
"$bin" test --target "$target" --out "$work/out" --accel tcg --firmware direct --format json \
    > "$work/verdict.json" 2> "$work/test.err" || true
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"
[ -f "$work/out/console.log" ] || { tail -5 "$work/test.err" >&2; echo "bench/first-run.sh: no console" >&2; exit 1; }

python3 - "$work/out/console.log" "$runs" <<'EOF'
import re, statistics, sys
console, runs = sys.argv[1], int(sys.argv[2])
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
    if f[1] == "t":
        marks.setdefault(f[2], []).append(float(f[3]))
    elif f[1] == "runtime":
        s, e, rc, args = float(f[2]), float(f[3]), f[4], f[5:]
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

def spans(name):
    b, e = marks.get(name + "-begin", []), marks.get(name + "-end", [])
    return [y - x for x, y in zip(b, e)]

def row(label, xs, note=""):
    if not xs:
        print(f"  {label:<46} (none)")
        return
    print(f"  {label:<46} {statistics.median(xs):6.2f} s  ({min(xs):.2f}-{max(xs):.2f}, n={len(xs)}){note}")

if failed:
    print("failed steps: " + ", ".join(failed))
if "import-end" not in marks:
    sys.exit("bench/first-run.sh: the benchmark self-test did not run (see the console)")
print(f"engine ready through the guard at uptime {ready:.2f} s" if ready else "engine ready: not seen")
print(f"first `docker run --rm` done at uptime {marks['first-end'][0]:.2f} s")
print("seconds, median (min-max) over the runs:")
row("import of the test image (docker import)", spans("import"))
row("first docker run --rm --network none", spans("first"))
row("docker run --rm --network none, guard", spans("guard"))
row("docker run --rm --network none, dockerd socket", spans("direct"))
row("docker run --rm (default bridge), guard", spans("bridge"))
row("docker CLI start (docker --version)", spans("cli"))
row("dockerd binary start (dockerd --version)", spans("dockerd"))
row("dockerd: sandbox set key (its set-ipv6 re-exec)", setkey)
for cmd in ("create", "start", "delete", "delete --force"):
    xs = [d for c, d, _ in runtime if c == cmd]
    rcs = sorted({rc for c, _, rc in runtime if c == cmd})
    row(f"runtime {cmd}", xs, f"  exit {','.join(rcs)}" if rcs and rcs != ["0"] else "")
EOF
