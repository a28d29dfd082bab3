#!/usr/bin/env bash
# Mount-vetting overhead (issue 10, SPEC M4/M6; target: < 50 us added per vetted call). A static
# program in a busybox bundle mounts a tmpfs and unmounts it N times and prints the time per
# pair; it runs under eci-runc (each mount and umount2 is a seccomp notification answered by
# eci-supervisor, whose helper makes the call in the container's namespaces) and under runc (no
# vetting), alternating ROUNDS times in the same run so machine load hits both alike. Prints both
# figures, the ratio and the added time per call ((eci - runc) / 2 per pair); then the same
# pairs made from a user namespace nested in the container (SPEC M7: eci hands them to that
# namespace's own helper).
#   bench/mounts.sh [N] [ROUNDS]      defaults 2000 pairs, 5 rounds
#   ECI_BENCH_CHECK=1 bench/mounts.sh exit 1 when the target is missed
#   BASE=DIR bench/mounts.sh          also run eci-runc from DIR (with the eci-supervisor and
#                                     eci-views of that build beside it, a supervisor of its
#                                     own) in the same alternation: a change's effect in one run
# Needs root, runc, cc with a static libc, busybox-static. Builds eci-runc and eci-supervisor
# --release; the supervisor is a private one (its socket in the work folder), stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2000}
rounds=${2:-5}

# ECI_BENCH_PROFILE=debug measures the debug build instead (quicker to build, slower to run).
profile=${ECI_BENCH_PROFILE:-release}
if [ "$profile" = release ]; then
  cargo build --release -p eci-runc -p eci-supervisor -p eci-views >&2
else
  cargo build -p eci-runc -p eci-supervisor -p eci-views >&2
fi
eci=$PWD/target/$profile/eci-runc
runc=$(command -v runc)

work=$(mktemp -d /tmp/eci-mount-bench.XXXXXX)
export ECI_SUPERVISOR_SOCKET=$work/supervisor/supervisor.sock
export ECI_RUNC_STATE_DIR=$work/ids
export ECI_VIEWS_ROOT=$work/views
# The daemons eci-runc started for this run (supervisor, its fd store, views server): their
# command line or environment names $work. In a subshell without pipefail: with it, grep -q
# ending the pipe early made tr die of SIGPIPE and every match count as none, and the
# supervisors of earlier runs were left running.
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
  for r in eci runc base; do
    [ -n "${!r:-}" ] || continue
    for id in $(ls "$work/root-$r" 2>/dev/null); do
      "${!r}" --root "$work/root-$r" delete --force "$id" >/dev/null 2>&1 || true
    done
  done
  for p in $(run_daemons); do kill "$p" 2>/dev/null || true; done
  grep -o " $work[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

bundle=$work/bundle
root=$bundle/rootfs
mkdir -p "$root"/{bin,etc,tmp,proc,sys,dev,m}
cp /bin/busybox "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
cat > "$work/mb.c" <<'EOF'
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <time.h>
#include <unistd.h>
static int put(const char *path, const char *text) {
    int fd = open(path, O_WRONLY);
    if (fd < 0) return -1;
    int ok = write(fd, text, strlen(text)) == (ssize_t)strlen(text);
    close(fd);
    return ok ? 0 : -1;
}
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000;
    struct timespec a, b;
    /* "nested": the pairs come from a user namespace this process makes inside the container
       (root mapped to its own root), as a sandbox or rootless runtime inside would. */
    if (argc > 2 && !strcmp(argv[2], "nested")) {
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS)) { perror("unshare"); return 1; }
        /* The maps are written from inside, so setgroups must be denied first. */
        const char *files[] = {"/proc/self/uid_map", "/proc/self/setgroups", "/proc/self/gid_map"};
        const char *texts[] = {"0 0 1", "deny", "0 0 1"};
        for (int i = 0; i < 3; i++)
            if (put(files[i], texts[i])) { perror(files[i]); return 1; }
    }
    /* One pair first: the supervisor's helper and caches are warm before timing starts. */
    if (mount("t", "/m", "tmpfs", 0, NULL) || umount2("/m", 0)) { perror("mount/umount"); return 1; }
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) {
        if (mount("t", "/m", "tmpfs", 0, NULL)) { perror("mount"); return 1; }
        if (umount2("/m", 0)) { perror("umount2"); return 1; }
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
    printf("ns_per_pair %.0f\n", ns / n);
    return 0;
}
EOF
cc -static -O2 -o "$root/mb" "$work/mb.c"
(cd "$bundle" && "$runc" spec)
# A second bundle on the same root filesystem runs the pairs from a nested user namespace.
nested_bundle=$work/nested-bundle
mkdir -p "$nested_bundle"
python3 - "$bundle/config.json" "$n" "$nested_bundle/config.json" "$root" <<'EOF'
import json, sys
p, n, nested, root = sys.argv[1:5]
c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["args"] = ["/mb", n]
# CAP_SETFCAP: the kernel lets a new user namespace map its root only when its maker had it.
for s in ("bounding", "effective", "permitted"):
    c["process"]["capabilities"][s] += ["CAP_SYS_ADMIN", "CAP_SETFCAP"]
c["root"]["readonly"] = False
json.dump(c, open(p, "w"))
c["process"]["args"] = ["/mb", n, "nested"]
c["root"]["path"] = root
json.dump(c, open(nested, "w"))
EOF

declare -A total
base=${BASE:+$BASE/eci-runc}
runtimes="eci runc${base:+ base}"
one() { # runtime-name binary id [bundle]
  local out sock=$ECI_SUPERVISOR_SOCKET views=$ECI_VIEWS_ROOT
  [ "$1" = base ] && sock=$work/base-supervisor/supervisor.sock views=$work/base-views
  out=$(ECI_SUPERVISOR_SOCKET=$sock ECI_VIEWS_ROOT=$views \
    "$2" --root "$work/root-$1" run --bundle "${4:-$bundle}" "$3" </dev/null 2>>"$work/$1.err") || {
    echo "$1 failed: $(tail -n 3 "$work/$1.err") $out" >&2
    exit 1
  }
  local ns
  ns=$(echo "$out" | sed -n 's/^ns_per_pair //p')
  [ -n "$ns" ] || { echo "$1: no figure in: $out" >&2; exit 1; }
  local key=$1${4:+-nested}
  total[$key]=$(( ${total[$key]:-0} + ns ))
}
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"
for r in $runtimes; do one "$r" "${!r}" warm; done
total=()
for i in $(seq "$rounds"); do
  for r in $runtimes; do one "$r" "${!r}" "b$i"; done
  for r in eci runc; do one "$r" "${!r}" "n$i" "$nested_bundle"; done
done
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"
e=$(echo "${total[eci]} / $rounds / 1000" | bc -l)
p=$(echo "${total[runc]} / $rounds / 1000" | bc -l)
echo "mount+umount2 of a tmpfs, $n pairs x $rounds rounds each:"
printf '  eci   %8.1f us/pair\n' "$e"
printf '  runc  %8.1f us/pair\n' "$p"
printf '  ratio eci-runc/runc %.2f\n' "$(echo "$e / $p" | bc -l)"
added=$(echo "($e - $p) / 2" | bc -l)
printf '  added per vetted call %.1f us (target < 50)\n' "$added"
en=$(echo "${total[eci-nested]} / $rounds / 1000" | bc -l)
pn=$(echo "${total[runc-nested]} / $rounds / 1000" | bc -l)
echo "the same from a user namespace nested in the container (eci hands the calls to its helper):"
printf '  eci   %8.1f us/pair\n' "$en"
printf '  runc  %8.1f us/pair\n' "$pn"
printf '  added per vetted call %.1f us (%.1f us more than from the container itself)\n' \
  "$(echo "($en - $pn) / 2" | bc -l)" "$(echo "($en - $pn) / 2 - $added" | bc -l)"
if [ -n "$base" ]; then
  b=$(echo "${total[base]} / $rounds / 1000" | bc -l)
  printf '  BASE  %8.1f us/pair (%s), added per vetted call %.1f us\n' "$b" "$BASE" "$(echo "($b - $p) / 2" | bc -l)"
  printf '  ratio eci-runc/BASE %.3f\n' "$(echo "$e / $b" | bc -l)"
fi
if [ "${ECI_BENCH_CHECK:-}" = 1 ] && [ "$(echo "$added >= 50" | bc -l)" = 1 ]; then
  echo "mount-vetting overhead target missed" >&2
  exit 1
fi
