#!/bin/busybox sh
# `wsl -d DISTRO` for the self-test boot (init.sh): a session as /etc/wsl.conf's [user]
# default, with that account's groups, must reach the engine through eci-guard's socket and
# must not reach dockerd's own (SPEC H5); the engine must have started on the pinned kernel
# (SPEC V5). Reports `ECI-SELFTEST key=value` lines and `ECI-SELFTEST-END status=...`, which
# eci-build reads from the console.
bb=/bin/busybox
here=/.wsl-standin
failed=0
fact() { echo "ECI-SELFTEST $1=$2" > /dev/console; }
fail() {
    fact "$1" "$2"
    failed=1
}

user=$($here/conf user default)
uid=$($bb awk -F: -v u="$user" '$1 == u { print $3 }' /etc/passwd)
home=$($bb awk -F: -v u="$user" '$1 == u { print $6 }' /etc/passwd)
fact wsl-session-user "${user:-none} uid=${uid:-none}"
if [ -z "$uid" ] || [ "$uid" = 0 ]; then
    fail wsl-session "the default user must exist and must not be root"
fi
# As WSL starts a session: the account's uid, primary group and supplementary groups.
session() {
    HOME=$home $bb start-stop-daemon -S -c "$user" -n wsl-standin-session -a "$@"
}

# The engine is up when the guard answers; eci-init starts it in the background.
. $here/env
waited=0
until /usr/bin/docker -H "unix://$GUARD_SOCKET" version > /dev/null 2>&1; do
    if [ $waited -ge 300 ]; then
        fail wsl-engine "no answer on $GUARD_SOCKET within 300 s"
        break
    fi
    $bb sleep 1
    waited=$((waited + 1))
done
fact wsl-engine-wait-seconds "$waited"

if [ -n "$uid" ] && [ "$uid" != 0 ]; then
    fact wsl-session-id "$(session $bb -- id)"
    if out=$(session /usr/bin/docker -- -H "unix://$GUARD_SOCKET" version --format '{{.Server.Version}}' 2>&1); then
        fact wsl-session-guard "reachable server=$out"
    else
        fail wsl-session-guard "refused: $out"
    fi
    # Denied by the socket's folder, not missing: root reaches it.
    if ! /usr/bin/docker -H "unix://$DOCKERD_SOCKET" version > /dev/null 2>&1; then
        fail wsl-session-dockerd "root does not reach $DOCKERD_SOCKET either; nothing was checked"
    elif out=$(session /usr/bin/docker -- -H "unix://$DOCKERD_SOCKET" version --format '{{.Server.Version}}' 2>&1); then
        fail wsl-session-dockerd "reachable: the session user reaches dockerd's own socket"
    elif echo "$out" | $bb grep -qi "permission denied"; then
        fact wsl-session-dockerd "denied"
    else
        fail wsl-session-dockerd "refused, but not for permissions: $out"
    fi
fi

status=$KERNEL_DRIFT_STATUS
if $bb grep -q '"isolation": "allowed"' $status 2>/dev/null; then
    fact kernel-drift none
else
    fail kernel-drift "isolation refused or not checked: $($bb tr -d '\n' < $status 2>&1)"
fi

if [ $failed != 0 ]; then
    echo "wsl-standin: the engine's logs:" > /dev/console
    $bb tail -n 40 /var/log/eci/wsl-boot.log /var/log/eci/init.log > /dev/console 2>&1
fi
if [ $failed = 0 ]; then
    echo "ECI-SELFTEST-END status=pass" > /dev/console
else
    echo "ECI-SELFTEST-END status=fail" > /dev/console
fi
