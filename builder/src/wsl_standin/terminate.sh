#!/bin/busybox sh
# The stand-in's `wsl --terminate` (init.sh): every process of the distribution gets SIGTERM
# (eci-init --under-init then stops the engine's services in order), at most 60 s to end,
# SIGKILL for the rest, and the VM powers off.
bb=/bin/busybox
say() { echo "wsl-standin: $*" > /dev/console; }
# kill(-1) spares only its caller: the shell's own `kill`, not busybox's applet in a child, and
# the signal ignored besides, so this script outlives what it terminates.
trap '' TERM
say "terminating the distribution, as wsl --terminate does"
kill -TERM -1
waited=0
while [ -n "$($bb pidof eci-init)" ] && [ $waited -lt 60 ]; do
    $bb sleep 1
    waited=$((waited + 1))
done
if [ -n "$($bb pidof eci-init)" ]; then
    say "eci-init did not stop within 60 s of SIGTERM"
else
    say "eci-init stopped after ${waited} s"
fi
kill -KILL -1
$bb sync
$bb poweroff -f
