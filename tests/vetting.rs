//! Mount vetting (issue 10, SPEC M1-M5) and the vsock refusal (issue 11, SPEC H2) through a
//! real dockerd whose default runtime is eci-runc. Each attack is first shown to work under
//! Debian's runc (`plain-runc`, no vetting), then refused under eci. Plain runc cannot run
//! `--privileged` on this machine (CAP_SYS_RESOURCE is missing from the bounding set), so its
//! baseline is `--cap-add SYS_ADMIN --security-opt seccomp=unconfined --security-opt
//! apparmor=unconfined`, which gives the same mount powers and keeps docker's masks.
//!
//! `eci-build test` runs this suite against the VM's engine too (SPEC V7), where the VM's own
//! supervisor vets the containers: the eci side of each test runs there; the plain-runc
//! baselines (no such runtime in the VM, SPEC A4) and the checks that read the private
//! supervisor's log or processes are this machine's only; the two tests that kill the
//! supervisor or a helper are listed as not run there.

use eci_e2e::escapes::Setup;
use eci_e2e::runc_engine::{not_run_in_vm, prerequisites, RuncEngine, IMAGE, PLAIN_RUNC};
use eci_e2e::vetting::{probe, signaled_mounts, stop_supervisor, supervisor_pid, TestSupervisor};

/// The engine and the supervisor that vets its containers: a private one here, the VM's own
/// against the VM (`eci-build test`).
fn engine(name: &str) -> Option<(RuncEngine, TestSupervisor)> {
    if !prerequisites() {
        return None;
    }
    let e = RuncEngine::start(name).unwrap_or_else(|e| panic!("engine {name}: {e:#}"));
    let sup = TestSupervisor::for_engine(&e).unwrap_or_else(|e| panic!("supervisor: {e:#}"));
    Some((e, sup))
}

/// What each attack prints: `NAME-ok` when the call worked, `NAME-refused: <error>` otherwise.
const ATTACKS: &str = "\
    mkdir -p /tmp/dbg; mount -t debugfs none /tmp/dbg 2>/tmp/e && echo debugfs-ok || echo \"debugfs-refused: $(cat /tmp/e)\"; \
    m=$(for p in kcore keys timer_list sched_debug latency_stats; do grep -q \" /proc/$p \" /proc/mounts && { echo /proc/$p; break; }; done); echo \"mask=$m\"; \
    umount $m 2>/tmp/e && echo mask-umount-ok || echo \"mask-umount-refused: $(cat /tmp/e)\"; \
    mount -o remount,rw /proc/sys 2>/tmp/e && echo procsys-rw-ok || echo \"procsys-rw-refused: $(cat /tmp/e)\"; \
    umount -l /proc 2>/tmp/e && echo proc-umount-ok || echo \"proc-umount-refused: $(cat /tmp/e)\"; ";

/// The masks docker and eci lay over /proc differ by kernel (/proc/kcore is absent on some), so
/// the attacks use the first masked file the container has (`mask=` in the output).
/// What a container may do itself: a tmpfs (owned by its root, writable, remountable,
/// unmountable), a bind inside its tree, propagation changes.
const OWN_MOUNTS: &str = "\
    mkdir -p /tmp/t && mount -t tmpfs -o size=1m,mode=755 t /tmp/t && echo tmpfs-ok; \
    echo hi > /tmp/t/f && cat /tmp/t/f && stat -c tmpfs-owner=%u:%g /tmp/t; \
    mount -o remount,bind,ro /tmp/t && { echo x > /tmp/t/g 2>/dev/null && echo ro-ignored || echo remount-ro-ok; }; \
    mount -o remount,bind,rw /tmp/t && echo y > /tmp/t/g && echo remount-rw-ok; \
    mkdir -p /tmp/src /tmp/b && echo s > /tmp/src/f && mount --bind /tmp/src /tmp/b && cat /tmp/b/f && echo bind-ok; \
    umount /tmp/b && echo umount-bind-ok; \
    mkdir -p /tmp/e2 && mount --rbind /etc /tmp/e2 && test -f /tmp/e2/hostname && echo rbind-ok; \
    mount --make-rshared / && echo propagation-ok; \
    cd /tmp && mkdir -p rel && mount -t tmpfs r rel && grep -q ' /tmp/rel tmpfs ' /proc/mounts && echo relative-ok; \
    mkdir -p /tmp/ov && mount -t tmpfs ov /tmp/ov && mkdir -p /tmp/ov/l /tmp/ov/u /tmp/ov/w /tmp/ov/m && echo low > /tmp/ov/l/f && \
    mount -t overlay o -o lowerdir=/tmp/ov/l,upperdir=/tmp/ov/u,workdir=/tmp/ov/w /tmp/ov/m && echo up >> /tmp/ov/m/f && \
    cat /tmp/ov/u/f | tr '\\n' ' ' && stat -c overlay-upper-owner=%u:%g /tmp/ov/u/f; \
    umount /tmp/t && echo umount-own-ok; ";

/// `sh -c SCRIPT` in a `--privileged` eci container without a network; its stdout.
fn privileged_sh(e: &RuncEngine, script: &str) -> String {
    privileged_sh_in(e, IMAGE, script)
}

/// [`privileged_sh`] in another image.
fn privileged_sh_in(e: &RuncEngine, image: &str, script: &str) -> String {
    e.ok(&[
        "run",
        "--rm",
        "--privileged",
        "--network",
        "none",
        image,
        "sh",
        "-c",
        script,
    ])
}

/// `sh -c SCRIPT` in `image` under plain runc with CAP_SYS_ADMIN and no seccomp or AppArmor
/// profile (`Setup::PlainRuncSysAdmin`: this machine's stand-in for `--privileged`, module
/// docs), without a network; `extra` flags before the image. Its stdout.
fn plain_sh(e: &RuncEngine, extra: &[&str], image: &str, script: &str) -> String {
    let mut args: Vec<String> = ["run", "--rm", "--network", "none"]
        .map(String::from)
        .to_vec();
    args.extend(Setup::PlainRuncSysAdmin.flags());
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend([image, "sh", "-c", script].map(String::from));
    e.ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// images/util-linux.yaml's root filesystem in the test engine.
const UTIL_LINUX_IMAGE: &str = "eci-util-linux:test";

/// Every line of `wants` is in `out` (an eci container's output), else a panic with the output
/// and the supervisor's log.
fn has_all(out: &str, wants: &[&str], sup: &TestSupervisor) {
    for want in wants {
        assert!(
            has(out, want),
            "missing {want} under eci:\n{out}\nsupervisor:\n{}",
            sup.log()
        );
    }
}

fn has(out: &str, line: &str) -> bool {
    out.lines().any(|l| l == line)
}

/// EPERM as busybox words it (`umount` prints strerror, `mount` its own "are you root?"), or
/// as util-linux 2.38 does for root (libmount's messages for EPERM: `mount: DIR: permission
/// denied.`, `umount: DIR: must be superuser to unmount.`).
fn refused_eperm(out: &str, name: &str) -> bool {
    out.lines().any(|l| {
        l.starts_with(&format!("{name}-refused:"))
            && (l.contains("Operation not permitted")
                || l.contains("permission denied (are you root?)")
                || l.ends_with(": permission denied.")
                || l.ends_with(": must be superuser to unmount."))
    })
}

/// The attacks under plain runc (where the engine has it) all work; in a `--privileged` eci
/// container of `image` the container's own mounts work and every attack is refused with
/// EPERM. `first` runs before the scripts in both; the eci container's output is returned.
fn own_mounts_work_and_attacks_are_refused(
    e: &RuncEngine,
    sup: &TestSupervisor,
    image: &str,
    first: &str,
) -> String {
    if e.plain_runc_baseline() {
        let plain = plain_sh(e, &[], image, &format!("{first} {ATTACKS}"));
        for attack in ["debugfs", "mask-umount", "procsys-rw", "proc-umount"] {
            assert!(
                has(&plain, &format!("{attack}-ok")),
                "plain runc baseline ({image}): {attack}:\n{plain}"
            );
        }
    }

    let eci = privileged_sh_in(e, image, &format!("{first} {OWN_MOUNTS} {ATTACKS}"));
    for own in [
        "tmpfs-ok",
        "hi",
        "tmpfs-owner=0:0",
        "remount-ro-ok",
        "remount-rw-ok",
        "s",
        "bind-ok",
        "umount-bind-ok",
        "rbind-ok",
        "low up overlay-upper-owner=0:0",
        "propagation-ok",
        "relative-ok",
        "umount-own-ok",
    ] {
        assert!(
            has(&eci, own),
            "missing {own} under eci ({image}):\n{eci}\nsupervisor:\n{}",
            sup.log()
        );
    }
    for attack in ["debugfs", "mask-umount", "procsys-rw", "proc-umount"] {
        assert!(
            refused_eperm(&eci, attack),
            "{attack} not refused with EPERM under eci ({image}):\n{eci}"
        );
    }
    eci
}

/// SPEC M1-M4, P1 (issue 10): in a `--privileged` eci container the container's own mounts
/// work and the VM-global filesystem, the masks and the initial mounts are refused with EPERM;
/// under plain runc (no vetting) the same attacks work.
#[test]
fn privileged_mounts_are_vetted() {
    let Some((e, sup)) = engine("vet") else {
        return;
    };
    own_mounts_work_and_attacks_are_refused(&e, &sup, IMAGE, "");
    if !e.on_this_machine() {
        println!(
            "the helper reaping is not checked in the VM: it reads the supervisor's children in \
             /proc of the machine that runs it (the VM's self-test counts leaked zombies there)"
        );
        return;
    }
    let sock = sup.sock();
    let sup = supervisor_pid(sock);
    assert!(
        sup.is_some(),
        "eci-runc started no supervisor at {}",
        sock.display()
    );
    // The container has ended: its helper is reaped as it exits, not when the next container
    // registers (the VM's self-test counts a zombie left by an idle supervisor as a leak).
    let sup = sup.expect("checked");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !zombie_children(sup).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        zombie_children(sup),
        Vec::<String>::new(),
        "the supervisor left its ended container's helper unreaped"
    );
}

/// SPEC M1-M4 (issue 10): util-linux's mount(8) and umount(8), the programs most images carry
/// (Debian 12's, from images/util-linux.yaml), get the same vetting as busybox's: the
/// container's own mounts work, the VM-global filesystem, the masks and the initial mounts are
/// refused with EPERM; under plain runc the attacks work. Debian 12's libmount (2.38) mounts
/// with mount(2) only; the new mount API's ENOSYS answer is
/// [`the_new_mount_api_is_answered_with_enosys`]'s.
#[test]
fn util_linux_mount_is_vetted_like_busyboxs() {
    let Some((e, sup)) = engine("vul") else {
        return;
    };
    let out = tempfile::Builder::new()
        .prefix("util-linux-image-")
        .tempdir_in("/tmp")
        .unwrap();
    let Some(tarball) = eci_e2e::build_rootfs_tarball("util-linux", out.path()) else {
        return;
    };
    e.import_rootfs(
        &tarball,
        UTIL_LINUX_IMAGE,
        &[eci_e2e::runc_engine::SHELL_CMD],
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let eci = own_mounts_work_and_attacks_are_refused(
        &e,
        &sup,
        UTIL_LINUX_IMAGE,
        "echo \"version: $(mount --version)\";",
    );
    let version = eci
        .lines()
        .find_map(|l| l.strip_prefix("version: "))
        .unwrap_or_default();
    assert!(
        version.starts_with("mount from util-linux "),
        "not util-linux's mount: {version:?}\n{eci}"
    );
    eprintln!("{version}");
}

/// The zombie children of `parent`, by pid.
fn zombie_children(parent: i32) -> Vec<String> {
    let mut found = Vec::new();
    for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(p.path().join("stat")) else {
            continue;
        };
        // Fields after the command name, which may hold spaces: state, then the parent.
        let rest: Vec<&str> = stat
            .rsplit_once(") ")
            .map(|(_, r)| r.split_whitespace().take(2).collect())
            .unwrap_or_default();
        if rest.first() == Some(&"Z") && rest.get(1) == Some(&parent.to_string().as_str()) {
            found.push(p.file_name().to_string_lossy().to_string());
        }
    }
    found
}

/// What Docker-in-Docker's inner runc does to the /proc it is given (issue 10, SPEC M2, P7):
/// covers, recursive copies, bind remounts that add restrictions; and what stays refused.
/// `m` is the first masked /proc file, `/sys/firmware` the masked folder.
const COVERS: &str = "\
    m=$(for p in kcore keys timer_list sched_debug latency_stats; do grep -q \" /proc/$p \" /proc/mounts && { echo $p; break; }; done); echo \"mask=$m\"; \
    n=$(grep -c ' /sys/firmware ' /proc/mounts); \
    mount -t tmpfs -o ro c /sys/firmware 2>/tmp/e && echo cover-tmpfs-ok || echo \"cover-tmpfs-refused: $(cat /tmp/e)\"; \
    umount /sys/firmware 2>/tmp/e && echo cover-umount-ok || echo \"cover-umount-refused: $(cat /tmp/e)\"; \
    [ \"$(grep -c ' /sys/firmware ' /proc/mounts)\" = \"$n\" ] && [ -z \"$(ls /sys/firmware)\" ] && echo firmware-mask-kept; \
    mount --bind /etc/hostname /proc/$m 2>/tmp/e && echo cover-bind-ok || echo \"cover-bind-refused: $(cat /tmp/e)\"; \
    grep -q \"$(cat /etc/hostname)\" /proc/$m && echo cover-bind-shows-hostname; \
    mkdir -p /tmp/pc && mount --rbind /proc /tmp/pc 2>/tmp/e && echo rbind-proc-ok || echo \"rbind-proc-refused: $(cat /tmp/e)\"; \
    umount /tmp/pc/sys 2>/tmp/e && echo copy-umount-ok || echo \"copy-umount-refused: $(cat /tmp/e)\"; \
    umount -l /tmp/pc/sys 2>/tmp/e && echo copy-lazy-umount-ok || echo \"copy-lazy-umount-refused: $(cat /tmp/e)\"; \
    mkdir -p /tmp/ps && mount --bind /proc/sys /tmp/ps 2>/tmp/e && echo bind-procsys-ok || echo \"bind-procsys-refused: $(cat /tmp/e)\"; \
    mount --rbind /proc/bus /proc/bus 2>/tmp/e && echo rbind-self-ok || echo \"rbind-self-refused: $(cat /tmp/e)\"; \
    mount -o remount,bind,rw,nosuid,nodev,noexec /proc/sys 2>/tmp/e && echo bind-rw-ok || echo \"bind-rw-refused: $(cat /tmp/e)\"; \
    mount -o remount,bind,ro,nosuid,nodev,noexec /proc 2>/tmp/e && echo bind-ro-ok || echo \"bind-ro-refused: $(cat /tmp/e)\"; \
    grep -q ' /proc proc ro,' /proc/mounts && echo proc-now-ro; ";

/// SPEC M2, P7 (issue 10): covering a protected mount or a mask (a tmpfs, a bind) reveals
/// nothing and works; unmounting the cover leaves the mask. A recursive copy of /proc carries
/// the masks and the read-only paths, which stay protected in the copy; a bind remount that
/// only adds restrictions works, one that drops read-only and a non-recursive bind of
/// /proc/sys stay EPERM. Under plain runc the refused ones work.
#[test]
fn covers_and_recursive_copies_keep_the_masks() {
    let Some((e, sup)) = engine("vcover") else {
        return;
    };
    if e.plain_runc_baseline() {
        let plain = plain_sh(&e, &[], IMAGE, COVERS);
        for attack in ["copy-umount", "bind-procsys", "bind-rw"] {
            assert!(
                has(&plain, &format!("{attack}-ok")),
                "plain runc baseline: {attack}:\n{plain}"
            );
        }
    }

    let eci = privileged_sh(&e, COVERS);
    has_all(
        &eci,
        &[
            "cover-tmpfs-ok",
            "cover-umount-ok",
            "firmware-mask-kept",
            "cover-bind-ok",
            "cover-bind-shows-hostname",
            "rbind-proc-ok",
            "rbind-self-ok",
            "bind-ro-ok",
            "proc-now-ro",
        ],
        &sup,
    );
    for attack in ["copy-umount", "copy-lazy-umount", "bind-procsys", "bind-rw"] {
        assert!(
            refused_eperm(&eci, attack),
            "{attack} not refused with EPERM under eci:\n{eci}"
        );
    }
}

/// What a process of a user namespace nested in the container (`unshare -Urm`, as a sandbox
/// or a rootless runtime inside makes one) does with its mounts: its own work, then the
/// attacks of [`ATTACKS`]. `nested-tmpfs-owner` is seen from inside the nested namespace.
const NESTED: &str = "unshare -Urm sh -c '\
    mkdir -p /tmp/n && mount -t tmpfs -o size=1m n /tmp/n && echo nested-tmpfs-ok; \
    echo hi > /tmp/n/f && stat -c nested-tmpfs-owner=%u:%g /tmp/n; \
    mkdir -p /tmp/nb && mount --bind /tmp/n /tmp/nb && cat /tmp/nb/f && echo nested-bind-ok; \
    umount /tmp/nb && echo nested-umount-bind-ok; \
    mount -o remount,bind,ro /tmp/n && { echo x > /tmp/n/g 2>/dev/null && echo ro-ignored || echo nested-remount-ro-ok; }; \
    umount /tmp/n && echo nested-umount-own-ok; \
    mkdir -p /tmp/dbg; mount -t debugfs none /tmp/dbg 2>/tmp/e && echo debugfs-ok || echo \"debugfs-refused: $(cat /tmp/e)\"; \
    m=$(for p in kcore keys timer_list sched_debug latency_stats; do grep -q \" /proc/$p \" /proc/mounts && { echo /proc/$p; break; }; done); echo \"mask=$m\"; \
    umount $m 2>/tmp/e && echo mask-umount-ok || echo \"mask-umount-refused: $(cat /tmp/e)\"; \
    mount -o remount,bind,rw /proc/sys 2>/tmp/e && echo procsys-rw-ok || echo \"procsys-rw-refused: $(cat /tmp/e)\"; \
    umount -l /proc 2>/tmp/e && echo proc-umount-ok || echo \"proc-umount-refused: $(cat /tmp/e)\"; \
    mkdir -p /tmp/bp; mount -t proc proc /tmp/bp 2>/tmp/e && echo borrowed-proc-ok || echo \"borrowed-proc-refused: $(cat /tmp/e)\"'; \
    unshare -Urm sh -c \"\
    mkdir -p /tmp/nr && mount -t tmpfs nr /tmp/nr && mkdir -p /tmp/nr/old && cd /tmp/nr && pivot_root . old && cd / && echo nested-pivot-ok; \
    /old/bin/busybox umount -l /old 2>/e && echo nested-old-root-detached || echo old-root-refused: \\$(/old/bin/busybox cat /e); \
    [ -d /old/bin ] || echo nested-old-root-gone\"; \
    i=0; while [ $i -lt 20 ]; do unshare -Urm sh -c 'mount -t tmpfs t /tmp' || break; i=$((i+1)); done; \
    echo nested-namespaces=$i; \
    unshare -Urmpf sh -c '\
    m=$(for p in timer_list sched_debug kcore keys; do grep -q \" /proc/$p \" /proc/mounts && { echo $p; break; }; done); \
    mkdir -p /tmp/p && mount -t proc proc /tmp/p 2>/tmp/e && echo nested-proc-ok || echo \"nested-proc-refused: $(cat /tmp/e)\"; \
    [ \"$(cat /tmp/p/1/comm)\" = sh ] && echo nested-proc-own-pid-namespace; \
    [ -n \"$(head -c 64 /tmp/p/$m)\" ] && echo nested-mask-revealed || echo nested-mask-kept; \
    umount /tmp/p/$m 2>/tmp/e && echo nested-mask-umount-ok || echo \"nested-mask-umount-refused: $(cat /tmp/e)\"'";

/// SPEC M7 with M2, M3, F4 (issue 10): a user namespace nested in a `--privileged` eci container
/// gets the same vetting as the container: its own tmpfs, binds and remounts work (the tmpfs
/// belongs to the nested namespace's root), a new proc for its own pid namespace carries the
/// masks, a sandbox pivots into its own root and detaches the old one, and the VM-global
/// filesystem, the masks, the initial mounts it inherited and a proc of the container's pid
/// namespace stay refused with EPERM; twenty nested namespaces in a row each mount. Without vetting of nested
/// namespaces there is nothing to show under
/// plain runc: the kernel itself refuses debugfs there and locks the inherited mounts, and
/// eci refused every mount of a nested namespace before (EPERM), the tmpfs included.
#[test]
fn nested_user_namespaces_get_the_same_vetting() {
    let Some((e, sup)) = engine("vnest") else {
        return;
    };
    let eci = privileged_sh(&e, NESTED);
    for want in [
        "nested-tmpfs-ok",
        "nested-tmpfs-owner=0:0",
        "hi",
        "nested-bind-ok",
        "nested-umount-bind-ok",
        "nested-remount-ro-ok",
        "nested-umount-own-ok",
        "nested-proc-ok",
        "nested-proc-own-pid-namespace",
        "nested-mask-kept",
        // What a sandbox does (bubblewrap, a rootless runtime): its own root, pivot_root into
        // it, then detach the old root (whose lock the kernel moved to the new one).
        "nested-pivot-ok",
        "nested-old-root-detached",
        "nested-old-root-gone",
        // More nested namespaces than a helper serves at once (eci_supervisor's nested::MAX):
        // the least recently used one's helper ends and the next starts.
        "nested-namespaces=20",
    ] {
        assert!(
            has(&eci, want),
            "missing {want} under eci:\n{eci}\nsupervisor:\n{}",
            sup.log()
        );
    }
    for attack in [
        "debugfs",
        "mask-umount",
        "procsys-rw",
        "proc-umount",
        "nested-mask-umount",
        // A new proc of the container's pid namespace, which the nested namespace does not
        // own (the kernel asks for CAP_SYS_ADMIN over it).
        "borrowed-proc",
    ] {
        assert!(
            refused_eperm(&eci, attack),
            "{attack} not refused with EPERM in a nested user namespace:\n{eci}\nsupervisor:\n{}",
            sup.log()
        );
    }
}

/// SPEC M7 with F4, M2 (issue 10): a sandbox's mounts are vetted in its own user namespace
/// only. The sandbox (a nested user and pid namespace) mounts its own proc, which carries the
/// masks; container root then enters the sandbox's mount namespace (`nsenter -m`) and binds that
/// proc without its masks. Judged by the container's helper, which has no record of the
/// sandbox's proc, the bind went through (checked before the rule) and showed what the masks
/// hide; a call made in a mount namespace that another user namespace owns is refused.
#[test]
fn a_sandboxs_mounts_are_not_vetted_from_outside_its_user_namespace() {
    let Some((e, sup)) = engine("vforeign") else {
        return;
    };
    let script = "m=$(for p in timer_list sched_debug kcore keys; do grep -q \" /proc/$p \" /proc/mounts && { echo $p; break; }; done); echo mask=$m; \
        unshare -Urmpf sh -c 'mkdir -p /tmp/p && mount -t proc proc /tmp/p && touch /tmp/sandbox-ready; sleep 60' & \
        i=0; while [ ! -e /tmp/sandbox-ready ] && [ $i -lt 60 ]; do sleep 1; i=$((i+1)); done; \
        nsenter -t $! -m sh -c \"mkdir -p /tmp/q; mount --bind /tmp/p /tmp/q 2>/tmp/e && echo foreign-bind-ok || echo \\\"foreign-bind-refused: \\$(cat /tmp/e)\\\"; \
          [ -n \\\"\\$(head -c 64 /tmp/q/$m 2>/dev/null)\\\" ] && echo foreign-mask-revealed\"; \
        kill $!";
    let eci = privileged_sh(&e, script);
    assert!(
        refused_eperm(&eci, "foreign-bind") && !has(&eci, "foreign-mask-revealed"),
        "container root bound a sandbox's proc without its masks:\n{eci}\nsupervisor:\n{}",
        sup.log()
    );
}

/// SPEC M7 (issue 10): nothing nested reaches further than its parent. A non-root user of the
/// container makes a user namespace (whose root is that user) and binds a folder below one
/// only the container's root may enter: the kernel would refuse the lookup with that user's
/// ids, and so does the vetting, which makes a nested namespace's calls with that namespace's
/// credentials, never the container root's. The contrast: the container's root binds the
/// same folder (what a helper acting as container root would have done for anyone).
#[test]
fn nested_user_namespaces_reach_no_further_than_their_creator() {
    let Some((e, sup)) = engine("vreach") else {
        return;
    };
    e.ok(&[
        "run",
        "-d",
        "--name",
        "vreach",
        "--privileged",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "mkdir -p /srv/locked/inner /tmp/u && echo secret > /srv/locked/inner/s && \
         chmod 700 /srv/locked && chmod 777 /tmp/u && touch /tmp/ready && sleep 300",
    ]);
    let bind = "e=/tmp/u/e.$$; mkdir -p /tmp/u/x && mount --bind /srv/locked/inner /tmp/u/x 2>$e \
                && cat /tmp/u/x/s || echo \"bind-refused: $(cat $e)\"";
    let root = e.ok(&[
        "exec",
        "vreach",
        "sh",
        "-c",
        &format!("while [ ! -e /tmp/ready ]; do sleep 1; done; {bind}"),
    ]);
    assert!(
        has(&root, "secret"),
        "the container's root could not bind the folder:\n{root}\nsupervisor:\n{}",
        sup.log()
    );
    e.ok(&["exec", "vreach", "umount", "/tmp/u/x"]);
    let nested = e.ok(&[
        "exec",
        "-u",
        "1000:1000",
        "vreach",
        "unshare",
        "-Urm",
        "sh",
        "-c",
        &format!("id -u; {bind}"),
    ]);
    assert!(
        !nested.contains("secret")
            && nested
                .lines()
                .any(|l| l.starts_with("bind-refused:") && l.contains("Permission denied")),
        "a nested user namespace of uid 1000 reached a folder only the container's root may \
         enter:\n{nested}\nsupervisor:\n{}",
        sup.log()
    );
    e.ok(&["rm", "-f", "vreach"]);
}

/// SPEC M3, M2, F4 (issue 10): a container may mount a new proc; it is made for the caller's
/// pid namespace and carries the masks of the first /proc, which cannot be unmounted or bound
/// away; the new proc itself can be unmounted. Under plain runc a new proc shows what the
/// masks hide.
#[test]
fn a_new_proc_gets_the_masks_of_the_first() {
    let Some((e, sup)) = engine("vproc") else {
        return;
    };
    // The first masked file of this kernel's /proc that has content when unmasked.
    let script = "m=$(for p in timer_list sched_debug kcore keys; do grep -q \" /proc/$p \" /proc/mounts && { echo $p; break; }; done); echo \"mask=$m\"; \
        mkdir -p /tmp/p && mount -t proc proc /tmp/p 2>/tmp/e && echo proc-ok || echo \"proc-refused: $(cat /tmp/e)\"; \
        [ \"$(cat /tmp/p/1/comm)\" = \"$(cat /proc/1/comm)\" ] && echo same-pid-namespace; \
        [ -n \"$(head -c 64 /tmp/p/$m)\" ] && echo mask-revealed || echo mask-kept; \
        umount /tmp/p/$m 2>/tmp/e && echo mask-umount-ok || echo \"mask-umount-refused: $(cat /tmp/e)\"; \
        mkdir -p /tmp/pp; mount --bind /tmp/p /tmp/pp 2>/tmp/e && echo bind-ok || echo \"bind-refused: $(cat /tmp/e)\"; \
        umount -l /tmp/p && echo umount-new-proc-ok";
    if e.plain_runc_baseline() {
        let plain = plain_sh(&e, &[], IMAGE, script);
        assert!(
            has(&plain, "proc-ok") && has(&plain, "mask-revealed"),
            "plain runc baseline:\n{plain}"
        );
    }

    let eci = privileged_sh(&e, script);
    has_all(
        &eci,
        &[
            "proc-ok",
            "same-pid-namespace",
            "mask-kept",
            "umount-new-proc-ok",
        ],
        &sup,
    );
    for attack in ["mask-umount", "bind"] {
        assert!(
            refused_eperm(&eci, attack),
            "{attack} not refused with EPERM:\n{eci}"
        );
    }
}

/// SPEC M2, M3 (issue 10): the masks of a new proc stay protected in a copy of the mount
/// namespace (`unshare -m`, the container's own user namespace, so the kernel locks nothing).
/// Before its masks were also protected by their root's identity, every copy could be unmounted
/// there: /proc/acpi's tmpfs mask (revealing it) and the read-only binds of bus, fs and irq
/// (a new proc under plain runc carries no masks at all, so that baseline shows nothing).
#[test]
fn a_new_procs_masks_stay_protected_in_a_copied_mount_namespace() {
    let Some((e, sup)) = engine("vcopy") else {
        return;
    };
    let script = "mkdir -p /tmp/p && mount -t proc proc /tmp/p && echo proc-ok; \
        echo masks=$(grep -c ' /tmp/p/' /proc/mounts); \
        unshare -m sh -c 'for m in $(grep \" /tmp/p/\" /proc/mounts | cut -d\" \" -f2); do \
          umount $m 2>/dev/null && echo copy-umount-ok:$m; done; true'";
    let eci = privileged_sh(&e, script);
    assert!(has(&eci, "proc-ok") && !has(&eci, "masks=0"), "{eci}");
    assert!(
        !eci.contains("copy-umount-ok"),
        "a copy of a new proc's mask was unmounted:\n{eci}\nsupervisor:\n{}",
        sup.log()
    );
}

/// SPEC M3, P2 (issue 10): a new proc cannot name its pid namespace. proc's `pidns=` option
/// (Linux 6.18) takes a path; the supervisor makes the new proc, so the path would resolve in
/// the VM and `/proc/1/ns/pid` would be the VM's pid namespace: every VM process in the
/// container's view. Under plain runc the path resolves in the container (its own pid
/// namespace), so there is no attack to show there. The vetting refuses every option but the
/// few a new proc or sysfs may carry (EINVAL, `eci_policy::mount_vetting`), and the
/// supervisor checks them again.
#[test]
fn a_new_proc_cannot_name_another_pid_namespace() {
    let Some((e, sup)) = engine("vpidns") else {
        return;
    };
    let eci = e.ok(&[
        "run",
        "--rm",
        "--privileged",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "mkdir -p /tmp/q; if mount -t proc -o pidns=/proc/1/ns/pid proc /tmp/q 2>/tmp/e; then \
           echo pidns-ok; [ \"$(cat /tmp/q/1/comm)\" = \"$(cat /proc/1/comm)\" ] || echo other-pid-namespace; \
         else echo \"pidns-refused: $(cat /tmp/e)\"; fi",
    ]);
    assert!(
        eci.lines().any(|l| l.starts_with("pidns-refused:")) && !has(&eci, "other-pid-namespace"),
        "a new proc named another pid namespace under eci:\n{eci}\nsupervisor:\n{}",
        sup.log()
    );
}

/// SPEC M3, F4 (issue 10): a new sysfs is the container's network namespace's (its `lo` and
/// none of the VM's interfaces; a kernel with built-in IP tunnels, the WSL2 one, adds its
/// fallback devices such as `sit0` to every namespace) and keeps the masks of the first /sys
/// (/sys/firmware); under plain runc a new sysfs shows the firmware entries the mask hides.
#[test]
fn a_new_sysfs_gets_the_masks_of_the_first() {
    let Some((e, sup)) = engine("vsys") else {
        return;
    };
    let script = "mkdir -p /tmp/s && mount -t sysfs sysfs /tmp/s 2>/tmp/e && echo sysfs-ok || echo \"sysfs-refused: $(cat /tmp/e)\"; \
        nets=\" $(ls /tmp/s/class/net | tr '\\n' ' ')\"; echo \"nets:$nets\"; \
        case \"$nets\" in *' lo '*) echo \"$nets\" | grep -qE ' (eth|docker|veth|br-)' || echo own-network;; esac; \
        [ -n \"$(ls /tmp/s/firmware)\" ] && echo firmware-revealed || echo firmware-kept; \
        umount /tmp/s/firmware 2>/tmp/e && echo mask-umount-ok || echo \"mask-umount-refused: $(cat /tmp/e)\"; \
        umount -l /tmp/s && echo umount-new-sysfs-ok";
    if e.plain_runc_baseline() {
        let plain = plain_sh(&e, &[], IMAGE, script);
        assert!(
            has(&plain, "sysfs-ok") && has(&plain, "firmware-revealed"),
            "plain runc baseline:\n{plain}"
        );
    }

    let eci = privileged_sh(&e, script);
    has_all(
        &eci,
        &[
            "sysfs-ok",
            "own-network",
            "firmware-kept",
            "umount-new-sysfs-ok",
        ],
        &sup,
    );
    assert!(refused_eperm(&eci, "mask-umount"), "{eci}");
}

/// SPEC M3, F1-F4 (issue 10): a new proc or sysfs shows the container's views where the first
/// does, the same per-container files: MemTotal of its memory limit, its boot_id and uptime, its
/// emulated knobs (a write through the new proc is the container's, read back in /proc/sys),
/// its DMI identity where the machine has one; the views in it cannot be unmounted. Under plain
/// runc a new proc shows the machine's memory (its knobs would be the machine's: not written).
#[test]
fn a_new_proc_and_sysfs_show_the_views_of_the_first() {
    let Some((e, sup)) = engine("vviews") else {
        return;
    };
    let mem = "awk '/^MemTotal:/ {print $2}'";
    let baseline = format!(
        "mkdir -p /tmp/p && mount -t proc proc /tmp/p && echo proc-ok; \
         echo mem-new=$({mem} /tmp/p/meminfo)"
    );
    if e.plain_runc_baseline() {
        let plain = plain_sh(&e, &["-m", "64m"], IMAGE, &baseline);
        assert!(
            has(&plain, "proc-ok") && !has(&plain, "mem-new=65536"),
            "plain runc baseline:\n{plain}"
        );
    }
    let knob = "/proc/sys/vm/overcommit_memory";
    let new_knob = "/tmp/p/sys/vm/overcommit_memory";
    let script = format!(
        "{baseline}; echo mem-first=$({mem} /proc/meminfo); \
         [ \"$(cat /tmp/p/sys/kernel/random/boot_id)\" = \"$(cat /proc/sys/kernel/random/boot_id)\" ] && echo same-boot-id; \
         a=$(cut -d. -f1 /proc/uptime); b=$(cut -d. -f1 /tmp/p/uptime); [ $((b - a)) -ge 0 ] && [ $((b - a)) -le 1 ] && [ $a -lt 600 ] && echo container-uptime; \
         v=$(cat {knob}); n=2; [ \"$v\" = 2 ] && n=1; \
         echo $n > {new_knob} 2>/tmp/e && echo knob-write-ok || echo \"knob-write-refused: $(cat /tmp/e)\"; \
         [ \"$(cat {knob})\" = $n ] && [ \"$(cat {new_knob})\" = $n ] && echo same-knob; \
         umount /tmp/p/meminfo 2>/tmp/e && echo view-umount-ok || echo \"view-umount-refused: $(cat /tmp/e)\"; \
         mkdir -p /tmp/s && mount -t sysfs sysfs /tmp/s && echo sysfs-ok; \
         if [ -e /sys/class/dmi/id/product_uuid ]; then \
           [ \"$(cat /tmp/s/class/dmi/id/product_uuid)\" = \"$(cat /sys/class/dmi/id/product_uuid)\" ] && echo same-dmi; \
         else echo same-dmi; echo no-dmi-on-this-machine; fi"
    );
    let eci = e.ok(&[
        "run",
        "--rm",
        "--privileged",
        "--network",
        "none",
        "-m",
        "64m",
        IMAGE,
        "sh",
        "-c",
        &script,
    ]);
    has_all(
        &eci,
        &[
            "proc-ok",
            "mem-new=65536",
            "mem-first=65536",
            "same-boot-id",
            "container-uptime",
            "knob-write-ok",
            "same-knob",
            "sysfs-ok",
            "same-dmi",
        ],
        &sup,
    );
    assert!(refused_eperm(&eci, "view-umount"), "{eci}");
}

/// SPEC M1 (issue 10): `docker exec` processes are vetted too (their listener is handed over
/// at every exec), also with `seccomp=unconfined`.
#[test]
fn exec_processes_are_vetted() {
    let Some((e, _sup)) = engine("vexec") else {
        return;
    };
    e.ok(&[
        "run",
        "-d",
        "--name",
        "vexec",
        "--cap-add",
        "SYS_ADMIN",
        "--security-opt",
        "seccomp=unconfined",
        "--network",
        "none",
        IMAGE,
        "sleep",
        "300",
    ]);
    let out = e.ok(&[
        "exec", "vexec", "sh", "-c",
        "mkdir -p /tmp/x && mount -t tmpfs x /tmp/x && echo tmpfs-ok; \
         mkdir -p /tmp/d; mount -t debugfs none /tmp/d 2>/tmp/e && echo debugfs-ok || echo \"debugfs-refused: $(cat /tmp/e)\"",
    ]);
    assert!(has(&out, "tmpfs-ok"), "{out}");
    assert!(refused_eperm(&out, "debugfs"), "{out}");
    e.ok(&["rm", "-f", "vexec"]);
}

/// SPEC M1 (issue 10): the new mount API is answered with ENOSYS (callers fall back to the
/// vetted mount(2)); plain runc lets it through.
#[test]
fn the_new_mount_api_is_answered_with_enosys() {
    let Some((e, _sup)) = engine("vapi") else {
        return;
    };
    probe(&e).unwrap();
    let bind = format!("{}:ro", e.share_bind("/s"));
    let script = "/s/probe/probe fsopen; /s/probe/probe open_tree";
    if e.plain_runc_baseline() {
        let plain = plain_sh(&e, &["-v", &bind], IMAGE, script);
        assert!(has(&plain, "fsopen ok"), "plain runc baseline:\n{plain}");
    }
    let eci = e.ok(&[
        "run",
        "--rm",
        "--privileged",
        "--network",
        "none",
        "-v",
        &bind,
        IMAGE,
        "sh",
        "-c",
        script,
    ]);
    assert!(
        has(&eci, &format!("fsopen errno {}", libc::ENOSYS)),
        "{eci}"
    );
    assert!(
        has(&eci, &format!("open_tree errno {}", libc::ENOSYS)),
        "{eci}"
    );
}

/// SPEC M3, M4, M7 (issue 10): a vetted call is made exactly once, even when signals keep
/// interrupting the caller. Go's runtime preempts its threads with SIGURG; before eci-runc
/// loaded the vetting filter with WAIT_KILLABLE_RECV, a signal landing while the helper acted
/// restarted the call as a second notification, and Docker-in-Docker's inner runc failed now
/// and then with `unmount ., flags: 0x2: no such file or directory` (its old root was already
/// detached). The program counts mounts made twice and umounts asked twice; plain runc (no
/// vetting: the kernel makes each call once) shows that the program itself finds none.
#[test]
fn calls_interrupted_by_signals_are_made_once() {
    let Some((e, _sup)) = engine("vsig") else {
        return;
    };
    signaled_mounts(&e).unwrap();
    let bind = format!("{}:ro", e.share_bind("/s"));
    let run = |setup: Setup| {
        let mut args: Vec<String> = ["run", "--rm", "--network", "none", "-v", &bind]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(setup.flags());
        args.extend(
            [
                IMAGE,
                "sh",
                "-c",
                "mkdir -p /tmp/m && /s/signaled/signaled-mounts /tmp/m 400",
            ]
            .map(String::from),
        );
        let o = e.docker(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.success() && text.contains("anomalies=0"), text)
    };
    if e.plain_runc_baseline() {
        let (ok, plain) = run(Setup::PlainRuncSysAdmin);
        assert!(ok, "plain runc baseline:\n{plain}");
    }
    let (ok, eci) = run(Setup::EciPrivileged);
    println!("{eci}");
    assert!(ok, "{eci}");
    let signals: u64 = eci
        .split("signals=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        signals > 100,
        "the storm sent too few signals to prove anything:\n{eci}"
    );
}

/// SPEC H2 (issue 11): socket(AF_VSOCK) fails with EAFNOSUPPORT in every eci container
/// (default profile, --privileged, seccomp=unconfined); under plain runc it works on this
/// machine (it has vsock).
#[test]
fn vsock_sockets_are_refused_in_every_container() {
    let Some((e, _sup)) = engine("vsock") else {
        return;
    };
    probe(&e).unwrap();
    let bind = format!("{}:ro", e.share_bind("/s"));
    let want = format!("vsock errno {}", libc::EAFNOSUPPORT);
    if e.plain_runc_baseline() {
        let plain = e.ok(&[
            "run",
            "--rm",
            "--runtime",
            PLAIN_RUNC,
            "--security-opt",
            "seccomp=unconfined",
            "--network",
            "none",
            "-v",
            &bind,
            IMAGE,
            "/s/probe/probe",
            "vsock",
        ]);
        if has(&plain, &want) {
            eprintln!("this kernel has no vsock: the runc baseline shows nothing ({plain})");
        } else {
            assert!(has(&plain, "vsock ok"), "plain runc baseline:\n{plain}");
        }
    }
    for extra in [
        &[][..],
        &["--privileged"][..],
        &["--security-opt", "seccomp=unconfined"][..],
    ] {
        let mut args = vec!["run", "--rm", "--network", "none", "-v", &bind];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[IMAGE, "/s/probe/probe", "vsock"]);
        let out = e.ok(&args);
        assert!(has(&out, &want), "{extra:?}: {out}");
    }
}

/// The folder of container `id`'s eci-runc state (`state.json`), wherever the engine's
/// containerd keeps its runtime root.
fn state_file(e: &RuncEngine, id: &str) -> std::path::PathBuf {
    fn walk(dir: &std::path::Path, id: &str, depth: u32) -> Option<std::path::PathBuf> {
        let f = dir.join(id).join("state.json");
        if f.is_file() {
            return Some(f);
        }
        if depth == 0 {
            return None;
        }
        std::fs::read_dir(dir).ok()?.flatten().find_map(|d| {
            let t = d.file_type().ok()?;
            (t.is_dir() && !t.is_symlink())
                .then(|| walk(&d.path(), id, depth - 1))
                .flatten()
        })
    }
    [e.path(), std::path::Path::new("/run/containerd/runc")]
        .iter()
        .find_map(|d| walk(d, id, 5))
        .unwrap_or_else(|| panic!("no state.json of container {id}"))
}

/// The init of a container made by [`asking_container`]: it mounts a tmpfs whenever /x/go
/// appears and writes how it went to /x/result. The test asks through the shared folder: an
/// exec would register with a supervisor (and start one) itself.
const ASKED_INIT: &str = "n=0; while true; do if [ -f /x/go ]; then rm /x/go; n=$((n+1)); mkdir -p /tmp/m$n; \
    mount -t tmpfs m /tmp/m$n 2>/tmp/e && echo tmpfs-ok > /x/r || echo \"tmpfs-refused: $(cat /tmp/e)\" > /x/r; \
    mv /x/r /x/result; fi; sleep 0.1; done";

/// Start `--privileged` container `name` running [`ASKED_INIT`] with its folder in the share;
/// returns its full id.
fn asking_container(e: &RuncEngine, name: &str) -> String {
    let dir = e.share.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let bind = format!("{}:/x", dir.display());
    e.ok(&[
        "run",
        "-d",
        "--name",
        name,
        "--privileged",
        "--network",
        "none",
        "-v",
        &bind,
        IMAGE,
        "sh",
        "-c",
        ASKED_INIT,
    ]);
    e.container_id(name)
}

/// Ask container `name`'s init to mount a tmpfs; its answer (`tmpfs-ok` or `tmpfs-refused:
/// <error>`). A call nobody answers fails the test after 60 s.
fn ask_init(e: &RuncEngine, name: &str) -> String {
    let dir = e.share.join(name);
    let _ = std::fs::remove_file(dir.join("result"));
    std::fs::write(dir.join("go"), "").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if let Ok(r) = std::fs::read_to_string(dir.join("result")) {
            return r;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("container {name}'s init did not answer within 60 s (a mount call left waiting)");
}

/// SPEC M5 (issue 10): with the supervisor gone the mount calls of a running container fail
/// (EPERM from the fd store; the container keeps running); the next supervisor (eci-runc
/// starts one for a new container) takes the listeners back from the store and the same
/// container's mount calls work again, and it names the container it could not re-attach
/// (its state hidden here), whose calls keep failing. New containers and execs are served,
/// and a new proc of a re-attached container shows its views (SPEC M3).
#[test]
fn a_restarted_supervisor_takes_the_running_containers_back() {
    if not_run_in_vm(
        "it kills the supervisor process and hides a container's state file on the machine \
         that runs the engine; the VM's supervisor is eci-init's service, out of reach from here",
    ) {
        return;
    }
    let Some((e, sup)) = engine("vclosed") else {
        return;
    };
    let sock = sup.sock();
    let old_id = asking_container(&e, "old");
    let lost_id = asking_container(&e, "lost");
    let ask = |name: &str| ask_init(&e, name);
    for name in ["old", "lost"] {
        let before = ask(name);
        assert!(has(&before, "tmpfs-ok"), "{name}: {before}");
    }
    let first = supervisor_pid(sock).expect("a supervisor serves the first containers");
    stop_supervisor(sock);
    let after = ask("old");
    assert!(
        refused_eperm(&after, "tmpfs"),
        "the init's mount call must fail (EPERM) once its supervisor is gone: {after}\n{}",
        sup.log()
    );

    // The next supervisor cannot re-attach `lost`: its state is hidden while it starts.
    let state = state_file(&e, &lost_id);
    let hidden = state.with_extension("hidden");
    std::fs::rename(&state, &hidden).unwrap();
    let new = e.docker(&[
        "run",
        "--rm",
        "--privileged",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "mkdir -p /tmp/y && mount -t tmpfs y /tmp/y && echo tmpfs-ok",
    ]);
    std::fs::rename(&hidden, &state).unwrap();
    let new =
        String::from_utf8_lossy(&new.stdout).to_string() + &String::from_utf8_lossy(&new.stderr);
    let log = sup.log();
    assert!(has(&new, "tmpfs-ok"), "{new}\n{log}");
    let second = supervisor_pid(sock).expect("eci-runc started a new supervisor");
    assert_ne!(first, second);

    let again = ask("old");
    let log = sup.log();
    assert!(
        has(&again, "tmpfs-ok"),
        "the same container's mount must work once a supervisor took it back: {again}\n{log}"
    );
    assert!(
        log.contains(&format!("re-attached container {old_id} ")),
        "the log does not say {old_id} was re-attached:\n{log}"
    );
    assert!(
        log.contains(&format!("could not re-attach container {lost_id} ")),
        "the log does not name {lost_id} as not re-attached:\n{log}"
    );
    let lost = ask("lost");
    assert!(
        refused_eperm(&lost, "tmpfs"),
        "a container that was not re-attached must keep failing closed: {lost}"
    );
    let exec = e.ok(&[
        "exec",
        "old",
        "sh",
        "-c",
        "mkdir -p /tmp/x && mount -t tmpfs x /tmp/x && echo tmpfs-ok",
    ]);
    assert!(has(&exec, "tmpfs-ok"), "{exec}");
    // A new proc of the re-attached container still shows its views (SPEC M3, F2): the new
    // supervisor made its plan again from the init's mounts.
    let proc = e.ok(&[
        "exec",
        "old",
        "sh",
        "-c",
        "mkdir -p /tmp/p && mount -t proc proc /tmp/p && \
         [ \"$(cat /tmp/p/sys/kernel/random/boot_id)\" = \"$(cat /proc/sys/kernel/random/boot_id)\" ] && \
         echo same-boot-id",
    ]);
    assert!(has(&proc, "same-boot-id"), "{proc}\n{}", sup.log());
    e.ok(&["rm", "-f", "old", "lost"]);
}

/// The supervisor's helper processes (`eci-supervisor helper`, its children).
fn helpers_of(supervisor: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|p| {
            let pid: i32 = p.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(p.path().join("stat")).ok()?;
            let ppid: i32 = stat
                .rsplit_once(") ")?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            let cmd = std::fs::read(p.path().join("cmdline")).ok()?;
            (ppid == supervisor && cmd.split(|b| *b == 0).nth(1) == Some(b"helper")).then_some(pid)
        })
        .collect()
}

/// SPEC M5 (issue 10): a killed helper fails its container's mount calls with EPERM at once
/// (the fd store answers them; it does not leave them waiting for a helper), the supervisor
/// keeps serving, and an exec into the container gets a new helper.
#[test]
fn a_killed_helper_fails_its_containers_calls() {
    if not_run_in_vm(
        "it kills one of the supervisor's helper processes on the machine that runs the \
         engine; the VM's supervisor and its helpers are out of reach from here",
    ) {
        return;
    }
    let Some((e, sup)) = engine("vhelper") else {
        return;
    };
    let sock = sup.sock();
    asking_container(&e, "hk");
    let before = ask_init(&e, "hk");
    assert!(has(&before, "tmpfs-ok"), "{before}");
    let pid = supervisor_pid(sock).expect("a supervisor serves the container");
    let helpers = helpers_of(pid);
    assert_eq!(
        helpers.len(),
        1,
        "one helper for one container: {helpers:?}"
    );
    // SAFETY: kill(2) on the helper this test's own supervisor started.
    unsafe { libc::kill(helpers[0], libc::SIGKILL) };
    let after = ask_init(&e, "hk");
    assert!(
        refused_eperm(&after, "tmpfs"),
        "the init's call must fail (EPERM) once its helper is gone: {after}\n{}",
        sup.log()
    );
    assert_eq!(
        supervisor_pid(sock),
        Some(pid),
        "the supervisor keeps serving"
    );
    let exec = e.ok(&[
        "exec",
        "hk",
        "sh",
        "-c",
        "mkdir -p /tmp/x && mount -t tmpfs x /tmp/x && echo tmpfs-ok",
    ]);
    assert!(has(&exec, "tmpfs-ok"), "{exec}");
    e.ok(&["rm", "-f", "hk"]);
}

/// SPEC P7, M3, M4 (issue 10): runc >= 1.0 mounts every rootfs entry onto `/proc/self/fd/N`, an
/// `O_PATH` descriptor it opened on the mount point (Docker-in-Docker's inner runc). The
/// supervisor takes the caller's descriptor N instead of resolving the magic link: a mount
/// onto it and a bind from it work, also under a chroot; a descriptor on a folder outside the
/// caller's root (here: outside its chroot) is refused with EPERM.
#[test]
fn mounts_through_the_callers_descriptors() {
    let Some((e, sup)) = engine("vfd") else {
        return;
    };
    let script = "\
        mkdir -p /tmp/m /tmp/src /tmp/b && echo s > /tmp/src/f; \
        exec 7</tmp/m; mount -t tmpfs t /proc/self/fd/7 2>/tmp/e && grep -q ' /tmp/m tmpfs ' /proc/mounts && echo fd-target-ok || echo \"fd-target-refused: $(cat /tmp/e)\"; \
        exec 8</tmp/src; mount --bind /proc/self/fd/8 /tmp/b 2>/tmp/e && cat /tmp/b/f && echo fd-source-ok || echo \"fd-source-refused: $(cat /tmp/e)\"; \
        mkdir -p /tmp/nr/bin /tmp/nr/proc /tmp/nr/in /tmp/out && cp /bin/busybox /tmp/nr/bin/ && mount -t proc proc /tmp/nr/proc && echo chroot-proc-ok; \
        exec 6</tmp/nr/in; chroot /tmp/nr /bin/busybox mount -t tmpfs t /proc/self/fd/6 2>/tmp/e && grep -q ' /tmp/nr/in tmpfs ' /proc/mounts && echo chroot-inside-ok || echo \"chroot-inside-refused: $(cat /tmp/e)\"; \
        exec 9</tmp/out; chroot /tmp/nr /bin/busybox mount -t tmpfs t /proc/self/fd/9 2>/tmp/e && echo outside-ok || echo \"outside-refused: $(cat /tmp/e)\"; \
        grep -q ' /tmp/out tmpfs ' /proc/mounts && echo outside-mounted || echo outside-untouched; \
        mount -t tmpfs t /proc/self/fd/55 2>/tmp/e && echo missing-ok || echo \"missing-refused: $(cat /tmp/e)\"; \
        mkdir -p /tmp/d && mount --bind /dev/null /tmp/d 2>/tmp/e && echo file-on-dir-ok || echo \"file-on-dir-refused: $(cat /tmp/e)\"";
    let eci = privileged_sh(&e, script);
    let log = sup.log();
    for want in [
        "fd-target-ok",
        "s",
        "fd-source-ok",
        "chroot-proc-ok",
        "chroot-inside-ok",
        "outside-untouched",
    ] {
        assert!(
            has(&eci, want),
            "missing {want} under eci:\n{eci}\nsupervisor:\n{log}"
        );
    }
    assert!(
        refused_eperm(&eci, "outside"),
        "a descriptor outside the root not refused with EPERM:\n{eci}\nsupervisor:\n{log}"
    );
    // A descriptor the caller does not have: ENOENT, as the kernel says.
    assert!(
        eci.lines()
            .any(|l| l.starts_with("missing-refused:") && l.contains("No such file or directory")),
        "a missing descriptor not refused with ENOENT:\n{eci}\nsupervisor:\n{log}"
    );
    // A file bound onto a folder: ENOTDIR, as mount(2) says (runc then masks with a tmpfs).
    assert!(
        eci.lines()
            .any(|l| l.starts_with("file-on-dir-refused:") && l.contains("Not a directory")),
        "a file bound onto a folder not refused with ENOTDIR:\n{eci}\nsupervisor:\n{log}"
    );
    // The calls reached the supervisor in the descriptor form (busybox did not resolve it).
    // Only the private supervisor's log shows that; the VM's goes to its console.
    if !e.on_this_machine() {
        return;
    }
    for path in ["/proc/self/fd/7", "/proc/self/fd/8", "/proc/self/fd/6"] {
        assert!(
            log.contains(&format!("\"{path}\"")),
            "{path} never reached the supervisor:\n{log}"
        );
    }
}
