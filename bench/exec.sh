#!/usr/bin/env bash
# What a process start costs in the VM under TCG (issue 13): a diagnostic boot of the built
# image's kernel and initramfs with a timing script as `rdinit` (eci-init does not run), which
# times, in interleaved rounds: a static binary (busybox-static `true`), a dynamically linked
# one (the image's busybox `true`), the image's `iptables -V` and `iptables -n -L FORWARD`, and
# the iptables runs dockerd makes when it starts, replayed with the image's iptables.
#   bench/exec.sh [--target T] [--rounds N] [--iptables PATH]
# Defaults: hyperv (the build in out/T: run `eci-build image` first), 3 rounds.
# --iptables PATH: also time PATH, a multi-call xtables-legacy-multi (run as `PATH iptables`;
# a static build, say), the same way, and print its ratio to the image's.
#
# The replayed runs are logged live: a dockerd of this machine (Debian's, the image's version)
# starts in a network namespace of its own with a logging `iptables` first on its PATH, and is
# stopped once it answers. Times are guest uptime (10 ms steps) around loops of 20 runs; the
# figure printed is the median per run over the rounds, and the ratio is of medians of one boot.
# QEMU runs as `eci-build boot` runs it under TCG (builder/src/boot.rs: q35, qemu64 with RDRAND and without CMPXCHG16B,
# one thread for both vCPUs before QEMU 8.1).
set -euo pipefail
cd "$(dirname "$0")/.."
target=hyperv rounds=3 extra=
while [ $# -gt 0 ]; do
    case "$1" in
        --target) target=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2
            [[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "--rounds: a number of at least 1" >&2; exit 2; } ;;
        --iptables) extra=$(realpath "$2"); shift 2 ;;
        *) echo "usage: bench/exec.sh [--target T] [--rounds N] [--iptables PATH]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "bench/exec.sh: needs root (a dockerd in its own network namespace)" >&2; exit 1; }
img=out/$target
for f in "$img/vmlinuz" "$img/initramfs.img" /bin/busybox; do
    [ -f "$f" ] || { echo "bench/exec.sh: $f missing (eci-build image --target $target; busybox-static)" >&2; exit 1; }
done
# ldd says "not a dynamic executable" (and fails) for a static binary.
if ldd /bin/busybox >/dev/null 2>&1; then
    echo "bench/exec.sh: /bin/busybox is not static (apt-get install busybox-static)" >&2; exit 1
fi

work=$(mktemp -d)
dockerd_pid=
stop_dockerd() {
    [ -n "$dockerd_pid" ] || return 0
    kill "$dockerd_pid" 2>/dev/null || true
    wait "$dockerd_pid" 2>/dev/null || true
    dockerd_pid=
}
cleanup() {
    stop_dockerd
    awk -v w="$work/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# 1. dockerd's iptables runs, as it makes them on a fresh start (its own data root, exec root,
# socket and containerd namespace, as every engine the tests start).
mkdir -p "$work/bin" "$work/d"
cat > "$work/bin/iptables" <<EOF
#!/bin/sh
printf '%s\n' "\$*" >> $work/calls.txt
exec $(command -v iptables) "\$@"
EOF
chmod +x "$work/bin/iptables"
unshare -n sh -c "ip link set lo up; PATH=$work/bin:\$PATH exec dockerd --data-root $work/d/data \
    --exec-root $work/d/exec --pidfile $work/d/pid -H unix://$work/d/sock --iptables=true \
    --containerd-namespace eci-bench-exec --containerd-plugins-namespace eci-bench-exec-plugins" \
    > "$work/dockerd.log" 2>&1 &
dockerd_pid=$!
for _ in $(seq 300); do
    grep -q "API listen" "$work/dockerd.log" && break
    sleep 0.1
done
grep -q "API listen" "$work/dockerd.log" || { tail -5 "$work/dockerd.log" >&2; echo "bench/exec.sh: dockerd did not start" >&2; exit 1; }
# Its start only: what it runs when it stops is not part of a boot.
cp "$work/calls.txt" "$work/start-calls.txt"
stop_dockerd
calls=$(wc -l < "$work/start-calls.txt")

# 2. The timing script and what it runs, as an archive before the image's (the kernel unpacks
# both; a compressed archive is read to the end of the input, so it goes last).
mkdir -p "$work/app/tbin"
cp /bin/busybox "$work/app/tbin/busybox"
cp "$work/start-calls.txt" "$work/app/replay.txt"
[ -z "$extra" ] || cp "$extra" "$work/app/extra-ipt"
cat > "$work/app/timing.sh" <<'EOF'
#!/tbin/busybox sh
B=/tbin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t tmpfs tmp /run
for m in $(cat /etc/eci/modules.load); do $B insmod "$m" 2>/dev/null; done
# The clock read by the shell itself: a `cut` would be one more process start in the window.
# A line: T LABEL START END RUNS FAILED.
loop() {
    label=$1; shift; i=0; f=0
    read -r s _ < /proc/uptime
    while [ $i -lt 20 ]; do "$@" >/dev/null 2>&1 || f=$((f + 1)); i=$((i + 1)); done
    read -r e _ < /proc/uptime
    echo "T $label $s $e 20 $f"
}
# dockerd's runs on tables as a fresh boot has them (its deletions fail there, as at boot:
# failures are counted, not refused).
replay() {
    label=$1; shift
    for t in filter nat mangle raw; do "$@" -t $t -F >/dev/null 2>&1; "$@" -t $t -X >/dev/null 2>&1; done
    "$@" -t filter -P FORWARD ACCEPT >/dev/null 2>&1
    f=0
    read -r s _ < /proc/uptime
    while read -r line; do "$@" $line >/dev/null 2>&1 || f=$((f + 1)); done < /replay.txt
    read -r e _ < /proc/uptime
    echo "T $label $s $e 1 $f"
}
for round in $(seq ROUNDS); do
    loop static-true $B true
    loop dynamic-true /bin/busybox true
    loop iptables-V /usr/sbin/iptables-legacy -V
    loop iptables-L /usr/sbin/iptables-legacy -t filter -n -L FORWARD
    replay dockerd-replay /usr/sbin/iptables-legacy
    if [ -x /extra-ipt ]; then
        loop extra-iptables-V /extra-ipt iptables -V
        loop extra-iptables-L /extra-ipt iptables -t filter -n -L FORWARD
        replay extra-dockerd-replay /extra-ipt iptables
    fi
done
echo "T done"
$B poweroff -f
EOF
sed -i "s/seq ROUNDS/seq $rounds/" "$work/app/timing.sh"
chmod +x "$work/app/timing.sh"
(cd "$work/app" && find . -mindepth 1 | sed 's|^\./||' | cpio -o -H newc --quiet) > "$work/initrd"
cat "$img/initramfs.img" >> "$work/initrd"

# 3. The boot.
accel=tcg,thread=single
case "$(qemu-system-x86_64 --version | sed -n 's/.*version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')" in
    [1-9][0-9]*\ *|8\ [1-9]*|9\ *) accel=tcg ;;
esac
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cpus); dockerd made $calls iptables runs"
timeout 900 qemu-system-x86_64 -machine q35 -accel "$accel" -m 2048 -smp 2 -cpu qemu64,+rdrand,-cx16 \
    -display none -monitor none -no-reboot -nodefaults -serial stdio \
    -kernel "$img/vmlinuz" -initrd "$work/initrd" \
    -append "console=ttyS0 panic=-1 lockdown=integrity slab_nomerge apparmor=0 quiet rdinit=/timing.sh" \
    > "$work/console" 2>&1 || true
tr -d '\r' < "$work/console" | grep -E '^T ([a-zA-Z-]+ [0-9.]+ [0-9.]+ [0-9]+ [0-9]+|done)$' > "$work/times" || true
grep -q '^T done' "$work/times" || {
    tail -20 "$work/console" >&2; echo "bench/exec.sh: the diagnostic boot did not finish" >&2; exit 1; }
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

# 4. Medians per run (ms), and the ratios.
awk -v calls="$calls" '
    $2 != "done" { ms = ($4 - $3) * 1000 / $5; v[$2] = v[$2] " " ms; n[$2]++; failed[$2] += $6 }
    function median(s,   a, k, i, j, t) {
        k = split(s, a, " ")
        for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
    }
    END {
        # A program that fails at once would look fast: only dockerd'"'"'s replay may fail (its
        # deletions of what a fresh boot does not have).
        for (l in failed) if (failed[l] && l !~ /replay/) { printf "%s failed %d times: figures refused\n", l, failed[l]; bad = 1 }
        if (bad) exit 1
        for (l in v) m[l] = median(v[l])
        printf "%-24s %10s  (median of %d rounds)\n", "", "ms per run", n["static-true"]
        split("static-true dynamic-true iptables-V iptables-L extra-iptables-V extra-iptables-L", order, " ")
        for (i = 1; i <= 6; i++) if (order[i] in m) printf "%-24s %10.1f\n", order[i], m[order[i]]
        printf "%-24s %10.0f  (all %d runs, %d failing as at a fresh boot)\n", "dockerd-replay", m["dockerd-replay"], calls, failed["dockerd-replay"] / n["dockerd-replay"]
        if ("extra-dockerd-replay" in m)
            printf "%-24s %10.0f  (all %d runs, %d failing)\n", "extra-dockerd-replay", m["extra-dockerd-replay"], calls, failed["extra-dockerd-replay"] / n["extra-dockerd-replay"]
        printf "ratio dynamic/static start: %.2f\n", m["dynamic-true"] / m["static-true"]
        if ("extra-dockerd-replay" in m)
            printf "ratio --iptables/image iptables, dockerd replay: %.2f\n", m["extra-dockerd-replay"] / m["dockerd-replay"]
    }' "$work/times"
