//! Escapes from a privileged container (SPEC M2, P2-P5, F4, issue 10). Every attack runs first
//! under plain runc, in the strongest set-up that starts on this machine with docker's masks in
//! place (`eci_e2e::escapes::Setup::PlainRunc`), where it must work, then in `docker run
//! --privileged` under eci-runc, where it must be refused. Each attack gets a container of its
//! own. Attacks that cannot be shown under plain runc on this machine are said so where they
//! run; the eci side is then still checked.
//!
//! Needs root, dockerd (docker.io), busybox-static, gcc with the static C library (the probe
//! for `init_module`/`open_by_handle_at`) and nsenter; skips without root, fails in CI.
//!
//! `eci-build test` runs the suite against the VM's engine too (SPEC V7): cgroup v2 and the
//! full capability bounding set, so `--privileged` is eci's real one there. The eci side of
//! each attack runs in the VM; the plain-runc baselines cannot (the VM's engine reaches no
//! runtime but eci-runc, SPEC A4) and are this machine's. What the VM holds (its sysctls) is
//! read through a fresh container of the VM's engine.

use eci_e2e::escapes::{
    assert_all_refused, assert_all_worked, build_probe, container_pid, engine_block_device,
    in_container_namespaces, run_attacks, Attack, Setup,
};
use eci_e2e::runc_engine::{not_run_in_vm, prerequisites, RuncEngine, IMAGE};

fn engine(name: &str) -> Option<RuncEngine> {
    if !prerequisites() {
        return None;
    }
    Some(RuncEngine::start(name).unwrap_or_else(|e| panic!("engine {name}: {e:#}")))
}

/// Exits 0 when `/sys/firmware` (masked by an empty read-only tmpfs) shows the VM's firmware
/// entries (acpi, memmap, ...) at `$1`.
const FIRMWARE_SHOWN: &str = "[ -n \"$(ls \"$1\" 2>/dev/null)\" ]";

fn firmware_shown(path: &str) -> String {
    format!("set -- {path}; {FIRMWARE_SHOWN}")
}

/// SPEC M2, F4: the masks over /proc and /sys cannot be unmounted, moved, bound away or
/// replaced by a fresh proc or sysfs to read what they hide.
#[test]
fn masks_cannot_be_removed_or_bypassed() {
    let Some(e) = engine("esc-masks") else { return };
    if e.on_this_machine() {
        assert!(
            std::fs::read_dir("/sys/firmware").is_ok_and(|mut d| d.next().is_some()),
            "this machine's /sys/firmware is empty: nothing to reveal"
        );
    }
    let attacks = vec![
        Attack::new(
            "umount_masked_file",
            "umount /proc/timer_list && [ -n \"$(head -c 64 /proc/timer_list)\" ]",
        ),
        Attack::new(
            "umount_masked_folder",
            format!("umount /sys/firmware && {}", firmware_shown("/sys/firmware")),
        ),
        Attack::new(
            "lazy_umount_masked_folder",
            format!(
                "umount -l /sys/firmware && {}",
                firmware_shown("/sys/firmware")
            ),
        ),
        Attack::new(
            "move_mask_away",
            format!(
                "mkdir -p /tmp/m && mount --move /sys/firmware /tmp/m && {}",
                firmware_shown("/sys/firmware")
            ),
        ),
        Attack::new(
            "bind_without_masks",
            format!(
                "mkdir -p /tmp/s && mount --bind /sys /tmp/s && {}",
                firmware_shown("/tmp/s/firmware")
            ),
        ),
        Attack::new(
            "umount_proc_then_fresh_proc",
            "umount -l /proc && mount -t proc proc /proc && [ -n \"$(head -c 64 /proc/timer_list)\" ]",
        ),
        Attack::new(
            "fresh_proc_elsewhere",
            "mkdir -p /tmp/p && mount -t proc proc /tmp/p && [ -n \"$(head -c 64 /tmp/p/timer_list)\" ]",
        ),
        Attack::new(
            "fresh_sysfs_elsewhere",
            format!(
                "mkdir -p /tmp/s && mount -t sysfs sysfs /tmp/s && {}",
                firmware_shown("/tmp/s/firmware")
            ),
        ),
    ];
    if e.plain_runc_baseline() {
        assert_all_worked(&run_attacks(&e, Setup::PlainRunc, &[], &attacks));
    }
    assert_all_refused(&run_attacks(&e, Setup::EciPrivileged, &[], &attacks));
}

/// SPEC M2, P4: read-only paths cannot be made writable, directly or through a new bind of
/// them.
#[test]
fn read_only_paths_stay_read_only() {
    let Some(e) = engine("esc-ro") else { return };
    let rw = |p: &str| format!("grep -q ' {p} [^ ]* rw[, ]' /proc/mounts");
    let attacks = vec![
        Attack::new(
            "remount_proc_sys_rw",
            format!("mount -o remount,rw /proc/sys && {}", rw("/proc/sys")),
        ),
        Attack::new(
            "bind_remount_proc_sys_rw",
            format!(
                "mount -o remount,bind,rw /proc/sys && {}",
                rw("/proc/sys")
            ),
        ),
        Attack::new(
            "new_bind_of_proc_sys_remounted_rw",
            format!(
                "mkdir -p /tmp/b && mount --rbind /proc/sys /tmp/b && mount -o remount,bind,rw /tmp/b && {}",
                rw("/tmp/b")
            ),
        ),
        Attack::new(
            "remount_proc_bus_rw",
            format!("mount -o remount,bind,rw /proc/bus && {}", rw("/proc/bus")),
        ),
    ];
    if e.plain_runc_baseline() {
        assert_all_worked(&run_attacks(&e, Setup::PlainRunc, &[], &attacks));
    }
    assert_all_refused(&run_attacks(&e, Setup::EciPrivileged, &[], &attacks));

    // /sys is read-only for a container that is not --privileged; CAP_SYS_ADMIN alone (the
    // same flags for both runtimes apart from the runtime) cannot change that under eci.
    let sys = vec![
        Attack::new(
            "remount_sys_rw",
            format!("mount -o remount,rw /sys && {}", rw("/sys")),
        ),
        Attack::new(
            "new_bind_of_sys_remounted_rw",
            format!(
                "mkdir -p /tmp/b && mount --rbind /sys /tmp/b && mount -o remount,rw /tmp/b && {}",
                rw("/tmp/b")
            ),
        ),
    ];
    if e.plain_runc_baseline() {
        assert_all_worked(&run_attacks(&e, Setup::PlainRuncSysAdmin, &[], &sys));
    }
    assert_all_refused(&run_attacks(&e, Setup::EciSysAdmin, &[], &sys));

    // A read-only root (`docker run --read-only`) stays read-only.
    let root = [Attack::new(
        "remount_read_only_root_rw",
        "mount -o remount,rw / && touch /escape",
    )];
    if e.plain_runc_baseline() {
        assert_all_worked(&run_attacks(&e, Setup::PlainRunc, &["--read-only"], &root));
    }
    assert_all_refused(&run_attacks(
        &e,
        Setup::EciPrivileged,
        &["--read-only"],
        &root,
    ));
}

/// SPEC M2 without the mount-vetting supervisor: from the VM, enter a privileged container's
/// user and mount namespaces with nsenter (no seccomp filter, so no vetting) and try the mask
/// and read-only attacks as container root with every capability there. Only the kernel's
/// locks (MNT_LOCKED, MNT_LOCK_READONLY) stand in the way, and they hold.
#[test]
fn initial_mounts_are_locked_by_the_kernel() {
    if not_run_in_vm(
        "it enters the container's namespaces with nsenter from the machine that runs the \
         engine (bypassing the seccomp filter); the VM has no shell to run nsenter in (SPEC V4)",
    ) {
        return;
    }
    let Some(e) = engine("esc-locked") else {
        return;
    };
    e.ok(&[
        "run",
        "-d",
        "--name",
        "target",
        "--privileged",
        "--network",
        "none",
        IMAGE,
        "sleep",
        "600",
    ]);
    let pid = container_pid(&e, "target");
    let (ok, map) = in_container_namespaces(pid, "cat /proc/self/uid_map");
    assert!(
        ok && map.split_whitespace().nth(1) != Some("0"),
        "nsenter did not reach the container's user namespace: {map}"
    );
    let attacks = [
        ("umount_mask", "umount /proc/timer_list"),
        ("lazy_umount_mask", "umount -l /sys/firmware"),
        ("umount_proc", "umount -l /proc"),
        ("umount_root", "umount -l /"),
        (
            "move_mask",
            "mkdir -p /tmp/m && mount --move /sys/firmware /tmp/m",
        ),
        (
            "bind_proc_without_masks",
            "mkdir -p /tmp/p && mount --bind /proc /tmp/p",
        ),
        ("remount_proc_sys_rw", "mount -o remount,bind,rw /proc/sys"),
        (
            "new_bind_remounted_rw",
            "mkdir -p /tmp/b && mount --rbind /proc/sys /tmp/b && mount -o remount,bind,rw /tmp/b",
        ),
        ("fresh_proc", "mkdir -p /tmp/q && mount -t proc proc /tmp/q"),
        (
            "fresh_sysfs",
            "mkdir -p /tmp/s && mount -t sysfs sysfs /tmp/s",
        ),
    ];
    for (name, script) in attacks {
        let (ok, out) = in_container_namespaces(pid, script);
        assert!(!ok, "{name} worked in the container's namespaces: {out}");
        println!("kernel refused {name}: {}", out.trim());
    }
    // Everything is still in place, and what the container itself may do still works.
    let (_, mounts) = in_container_namespaces(pid, "cat /proc/self/mountinfo");
    for p in [" /proc/timer_list ", " /sys/firmware ", " /proc/sys "] {
        assert!(mounts.contains(p), "{p} is no longer mounted:\n{mounts}");
    }
    let (ok, out) = in_container_namespaces(
        pid,
        "mkdir -p /tmp/t && mount -t tmpfs t /tmp/t && echo x > /tmp/t/f && umount /tmp/t",
    );
    assert!(
        ok,
        "a tmpfs of the container's own could not be mounted and unmounted: {out}"
    );
}

/// SPEC P4: kernel-global sysctls cannot be changed. The baseline writes each knob's current
/// value back (proving the write is possible without changing this machine); under eci a
/// different value is written and the VM's value must not move.
#[test]
fn kernel_global_sysctls_cannot_be_changed() {
    let Some(e) = engine("esc-sysctl") else {
        return;
    };
    let mut knobs = vec![
        ("core_pattern", "kernel/core_pattern", "|/tmp/escape %p"),
        ("swappiness", "vm/swappiness", "7"),
    ];
    // Absent from this kernel (no module loading, no magic SysRq): their baseline cannot be
    // shown here; where the VM has them they are checked like the others.
    for (name, knob, value) in [
        ("modprobe", "kernel/modprobe", "/tmp/escape"),
        ("sysrq", "kernel/sysrq", "1"),
    ] {
        if e.machine_file(&format!("/proc/sys/{knob}")).is_some() {
            knobs.push((name, knob, value));
        } else {
            println!("/proc/sys/{knob} does not exist on this kernel: not tried");
        }
    }
    let same: Vec<Attack> = knobs
        .iter()
        .map(|(name, knob, _)| {
            Attack::new(
                name,
                format!(
                    "cat /proc/sys/{knob} > /tmp/v && mount -o remount,rw /proc/sys && cat /tmp/v > /proc/sys/{knob}"
                ),
            )
        })
        .collect();
    if e.plain_runc_baseline() {
        assert_all_worked(&run_attacks(&e, Setup::PlainRunc, &[], &same));
    }
    let knob = |k: &str| {
        e.machine_file(&format!("/proc/sys/{k}"))
            .unwrap_or_else(|| panic!("/proc/sys/{k} cannot be read"))
    };
    let before: Vec<String> = knobs.iter().map(|(_, k, _)| knob(k)).collect();
    let changed: Vec<Attack> = knobs
        .iter()
        .map(|(name, knob, value)| {
            Attack::new(
                name,
                format!(
                    "mount -o remount,rw /proc/sys; echo '{value}' > /proc/sys/{knob} || {{ mkdir -p /tmp/p && mount -t proc proc /tmp/p && echo '{value}' > /tmp/p/sys/{knob}; }}"
                ),
            )
        })
        .collect();
    assert_all_refused(&run_attacks(&e, Setup::EciPrivileged, &[], &changed));
    for ((_, k, _), b) in knobs.iter().zip(before) {
        assert_eq!(knob(k), b, "the VM's {k} changed");
    }
    if sysrq_trigger_exists(&e) {
        let sysrq = [Attack::new(
            "sysrq_trigger",
            "mount -o remount,bind,rw /proc/sysrq-trigger; echo h > /proc/sysrq-trigger",
        )];
        if e.plain_runc_baseline() {
            assert_all_worked(&run_attacks(&e, Setup::PlainRunc, &[], &sysrq));
        }
        assert_all_refused(&run_attacks(&e, Setup::EciPrivileged, &[], &sysrq));
    } else {
        println!("/proc/sysrq-trigger does not exist on this kernel: not tried");
    }
}

/// Whether the machine that runs the engine has /proc/sysrq-trigger (write-only, so asked of
/// a container's /proc against the VM).
fn sysrq_trigger_exists(e: &RuncEngine) -> bool {
    if e.on_this_machine() {
        return std::path::Path::new("/proc/sysrq-trigger").exists();
    }
    e.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        IMAGE,
        "test",
        "-e",
        "/proc/sysrq-trigger",
    ])
    .status
    .success()
}

/// SPEC P5: the cgroup v1 `release_agent` escape (a fresh hierarchy mount, then a release
/// agent the kernel runs as VM root) is closed. The baseline writes the agent's current value
/// back.
#[test]
fn cgroup_release_agent_cannot_be_set() {
    let Some(e) = engine("esc-cgroup") else {
        return;
    };
    if !e.on_this_machine() {
        // The VM mounts cgroup v2 only: no hierarchy of it has a release_agent, and its memory
        // controller is bound to v2, so the baseline has nothing to write to. What a container
        // can still try is a named v1 hierarchy of its own, whose root has a release_agent.
        println!(
            "in the VM (cgroup v2 only) the baseline cannot be shown: no v1 hierarchy exists \
             whose release_agent plain runc could write; eci is tried with a named v1 hierarchy"
        );
        let eci = [Attack::new(
            "release_agent",
            "for f in $(find /sys/fs/cgroup -name release_agent 2>/dev/null); do echo /tmp/x > $f && exit 0; done; \
             mkdir -p /tmp/cg && mount -t cgroup -o none,name=eci cgroup /tmp/cg && echo /tmp/x > /tmp/cg/release_agent",
        )];
        assert_all_refused(&run_attacks(&e, Setup::EciPrivileged, &[], &eci));
        return;
    }
    if !std::path::Path::new("/sys/fs/cgroup/memory/release_agent").exists() {
        println!("no cgroup v1 memory hierarchy here: the release_agent escape needs one");
        return;
    }
    let attacks = [Attack::new(
        "release_agent",
        "mkdir -p /tmp/cg && mount -t cgroup -o memory cgroup /tmp/cg && echo \"$(cat /tmp/cg/release_agent)\" > /tmp/cg/release_agent",
    )];
    if e.plain_runc_baseline() {
        assert_all_worked(&run_attacks(&e, Setup::PlainRunc, &[], &attacks));
    }
    let eci = [Attack::new(
        "release_agent",
        "for f in $(find /sys/fs/cgroup -name release_agent 2>/dev/null); do echo /tmp/x > $f && exit 0; done; \
         mkdir -p /tmp/cg && mount -t cgroup -o memory cgroup /tmp/cg && echo /tmp/x > /tmp/cg/release_agent",
    )];
    assert_all_refused(&run_attacks(&e, Setup::EciPrivileged, &[], &eci));
    let agent = std::fs::read_to_string("/sys/fs/cgroup/memory/release_agent").unwrap();
    assert_ne!(agent.trim(), "/tmp/x", "the VM's release_agent changed");
}

/// SPEC P3: the VM's block devices and memory cannot be opened or created, even with
/// --privileged and a device cgroup rule allowing them.
#[test]
fn vm_devices_cannot_be_reached() {
    let Some(e) = engine("esc-dev") else { return };
    let (maj, min) = engine_block_device(&e).unwrap_or_else(|| {
        // The VM's root is its initramfs and QEMU attaches no disk under `eci-build test`.
        println!("the VM has no block device: a first virtio disk's numbers (254:0) are tried");
        (254, 0)
    });
    let rule = format!("b {maj}:{min} rwm");
    // Opening the VM's disk cannot be shown here: even VM root gets EPERM opening /dev/vda on
    // the development machine (its sandbox). Creating the node is the step plain runc allows.
    let mknod_disk = Attack::new("mknod_vm_disk", format!("mknod /tmp/disk b {maj} {min}"));
    if e.plain_runc_baseline() {
        assert_all_worked(&run_attacks(
            &e,
            Setup::PlainRunc,
            &["--device-cgroup-rule", &rule],
            std::slice::from_ref(&mknod_disk),
        ));
    }
    let attacks = [
        mknod_disk,
        Attack::new("block_devices_listed", "ls -l /dev | grep -q '^b'"),
        Attack::new(
            "vm_disk_passed_in",
            format!("ls -l /dev | grep -q '^b.* {maj}, *{min} '"),
        ),
        Attack::new("mknod_dev_mem", "mknod /tmp/mem c 1 1"),
        Attack::new("mknod_dev_kmsg", "mknod /tmp/kmsg c 1 11"),
    ];
    let disk = format!("/dev/block/{maj}:{min}");
    let mut flags = vec![];
    if e.on_this_machine() {
        flags.extend([
            "--device-cgroup-rule",
            &rule,
            "--device-cgroup-rule",
            "c 1:* rwm",
        ]);
        if std::path::Path::new(&disk).exists() {
            flags.extend(["--device", &disk]);
        }
    } else {
        // The VM's guard refuses device cgroup rules at create (tests/engine_guard.rs covers
        // that layer); `--privileged` alone already allows every device in the cgroup, so
        // what refuses the nodes below is eci's runtime, not the guard.
        println!("the VM's guard refuses --device-cgroup-rule: the attacks run without it");
    }
    assert_all_refused(&run_attacks(&e, Setup::EciPrivileged, &flags, &attacks));
    // /dev/mem itself: this kernel has none (no CONFIG_DEVMEM), so its baseline cannot be
    // shown here; an eci container is refused the node above whatever the kernel has. In the
    // VM the guard refuses `--device /dev/mem` at create (tests/engine_guard.rs), so the
    // container would never run the attack.
    if !e.on_this_machine() {
        println!("--device /dev/mem is refused by the VM's guard at create: not tried here");
    } else if std::path::Path::new("/dev/mem").exists() {
        let mem = [Attack::new(
            "read_dev_mem",
            "head -c 1 /dev/mem > /dev/null",
        )];
        if e.plain_runc_baseline() {
            assert_all_worked(&run_attacks(
                &e,
                Setup::PlainRunc,
                &["--device", "/dev/mem"],
                &mem,
            ));
        }
        assert_all_refused(&run_attacks(
            &e,
            Setup::EciPrivileged,
            &["--device", "/dev/mem"],
            &mem,
        ));
    } else {
        println!("/dev/mem does not exist on this kernel: its baseline is not shown");
    }
}

/// SPEC P2: module loading and `open_by_handle_at` (the "shocker" escape to the VM's root
/// folder through a file dockerd binds into the container) fail with EPERM.
#[test]
fn kernel_global_calls_are_refused() {
    let Some(e) = engine("esc-calls") else { return };
    if let Err(msg) = build_probe(&e.share) {
        assert!(!eci_e2e::in_ci(), "{msg}");
        println!("skipped: {msg}");
        return;
    }
    let bind = format!("{}:ro", e.share_bind("/s"));
    let attacks = [
        Attack::new("init_module", "/s/probe init_module"),
        Attack::new("finit_module", "/s/probe finit_module"),
        Attack::new("open_by_handle_at", "/s/probe open_by_handle_at"),
        Attack::new(
            "insmod",
            "head -c 4096 /dev/zero > /tmp/m.ko; insmod /tmp/m.ko 2>&1 | grep -vq 'not permitted'",
        ),
    ];
    if e.plain_runc_baseline() {
        assert_all_worked(&run_attacks(&e, Setup::PlainRunc, &["-v", &bind], &attacks));
    }
    let eci = run_attacks(&e, Setup::EciPrivileged, &["-v", &bind], &attacks);
    assert_all_refused(&eci);
    for name in ["init_module", "finit_module", "open_by_handle_at"] {
        assert!(eci[name].1.contains("EPERM"), "{name}: {}", eci[name].1);
    }
}
