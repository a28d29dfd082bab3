//! The main job end to end: `images/hyperv.yaml` + its lock -> artifacts -> a QEMU boot.
//!
//! Proves SPEC V1 (pinned inputs, byte-identical rebuilds), V3 (modules loaded, then loading
//! disabled), A2/S3/S4 (baked settings: eci is dockerd's default runtime, root-only socket) and
//! V7 (the artifact boots and reports a machine-readable self-test). Through eci-guard on the
//! CLI's default socket inside the VM: A3 (`--runtime=runc` rewritten, audited as S5 asks), B2
//! and S4 (dockerd's socket is no bind source, for the guard nor for eci-runc; no TCP listener),
//! B4 (the engine socket for an image the admin did not allow) and A5 (a container made without
//! eci is not started). And the targets: the initramfs stays under 150 MiB compressed
//! and dynamic binaries (dockerd, containerd, docker) run inside the VM, with dockerd answering
//! its API. eci-init is PID 1: read-only root with tmpfs /run, /tmp, /var and the tmpfs
//! fallback for engine data (V2), kexec off (V3), nothing on the console (V4), services in
//! readiness order.

use eci_build::boot::{self, Accel, BootOptions};
use eci_build::inspect;
use eci_build::pipeline;
use eci_e2e::{build_image_or_skip, image_request, prerequisite, workspace};
use std::path::Path;
use std::time::Duration;

const TARGET: &str = "hyperv";

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// An ELF file's type and whether it names a program interpreter (is dynamically linked).
fn elf_kind(elf: &[u8]) -> (&'static str, bool) {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "64-bit");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
    let kind = match u16_at(16) {
        2 => "ET_EXEC",
        3 => "ET_DYN",
        _ => "other",
    };
    let (phoff, phentsize, phnum) = (u64_at(32) as usize, u16_at(54) as usize, u16_at(56));
    const PT_INTERP: u32 = 3;
    let interp = (0..phnum as usize).any(|i| u32_at(phoff + i * phentsize) == PT_INTERP);
    (kind, interp)
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn hyperv_image_rebuilds_identically_and_boots_to_a_passing_selftest() {
    let work = tempfile::tempdir().unwrap();
    let first = work.path().join("first");
    let second = work.path().join("second");

    let Some(built) = build_image_or_skip(TARGET, &first) else {
        return;
    };
    let rebuilt = pipeline::build_image(&image_request(TARGET, &second)).expect("warm rebuild");
    assert_eq!(
        rebuilt.fetch.downloaded, 0,
        "a warm rebuild downloads nothing"
    );
    for a in &built.manifest.artifacts {
        let x = std::fs::read(first.join(&a.path)).unwrap();
        let y = std::fs::read(second.join(&a.path)).unwrap();
        assert!(
            x == y,
            "{} differs between two builds from the same lock",
            a.path
        );
    }
    assert_eq!(
        std::fs::read(first.join("manifest.json")).unwrap(),
        std::fs::read(second.join("manifest.json")).unwrap()
    );

    let initrd = built
        .manifest
        .artifacts
        .iter()
        .find(|a| a.kind == "initramfs")
        .expect("an initramfs artifact");
    assert!(
        initrd.size < 150 * 1024 * 1024,
        "initramfs is {} bytes compressed, over the 150 MiB budget",
        initrd.size
    );

    // What ships: engine binaries owned by root, only the pinned modules, no docs.
    let listing = inspect::inspect(&first).unwrap();
    let find = |p: &str| listing.entries.iter().find(|e| e.path == p);
    let dockerd = find("/usr/sbin/dockerd").expect("dockerd is in the image");
    assert_eq!(
        (dockerd.uid, dockerd.gid, dockerd.mode.as_str()),
        (0, 0, "-rwxr-xr-x")
    );
    assert!(find("/init").is_some() && find("/dev/console").is_some());
    // eci-init is PID 1 (through /init) and no file in the image starts a login on the
    // console: no inittab, no getty of any kind (SPEC V4).
    let init = find("/usr/sbin/eci-init").expect("eci-init is in the image");
    assert_eq!((init.uid, init.mode.as_str()), (0, "-rwxr-xr-x"));
    assert!(find("/usr/lib/eci/selftest").is_some() && find("/etc/eci/services.json").is_some());
    // The guard ships where services.json starts it from, next to the policy it reads.
    let spec = pipeline::load_spec(&workspace(), TARGET).unwrap();
    let guard_path = &spec
        .binaries
        .iter()
        .find(|b| b.bin == "eci-guard")
        .expect("eci-guard is in images/base.yaml binaries")
        .path;
    let guard = find(guard_path).expect("eci-guard is in the image");
    assert_eq!((guard.uid, guard.mode.as_str()), (0, "-rwxr-xr-x"));
    // The guard's settings hold the containers' proxy credentials: root's alone.
    let policy = find("/etc/eci/policy.json").expect("the baked policy is in the image");
    assert_eq!((policy.uid, policy.mode.as_str()), (0, "-rw-------"));
    for e in &listing.entries {
        let name = e.path.rsplit('/').next().unwrap_or("");
        assert!(
            e.path != "/etc/inittab" && !name.contains("getty"),
            "{} could start a console login",
            e.path
        );
    }
    let modules: Vec<_> = listing
        .entries
        .iter()
        .filter(|e| e.path.starts_with("/lib/modules/") && e.path.contains(".ko"))
        .collect();
    assert_eq!(
        modules.len(),
        built.manifest.kernel.modules.len(),
        "only the pinned module closure ships"
    );
    assert!(
        built.manifest.kernel.modules.iter().any(|m| m == "overlay")
            || built
                .manifest
                .kernel
                .builtin_modules
                .iter()
                .any(|m| m == "overlay")
    );
    assert!(!listing
        .entries
        .iter()
        .any(|e| e.path.starts_with("/usr/share/doc/")));

    // dockerd's iptables is eci's static build of Debian's pinned iptables source (issue 13):
    // where Debian's package would have put it, the bytes the manifest records, a PIE with no
    // program interpreter (nothing loaded at each of dockerd's 68 runs), and what the
    // alternatives name leads to it. Debian's dynamic libraries for it are not shipped.
    let record = built
        .manifest
        .source_builds
        .iter()
        .find(|b| b.package == "iptables")
        .expect("manifest.json records the iptables source build");
    let initramfs = eci_build::initramfs::read_initramfs(&first.join("initramfs.img")).unwrap();
    let member = |p: &str| {
        initramfs
            .entries
            .iter()
            .find(|e| e.path == p)
            .unwrap_or_else(|| panic!("{p} is not in the image"))
    };
    let program = initramfs.data(member(&record.program));
    assert_eq!(sha256_hex(program), record.program_sha256);
    assert_eq!(elf_kind(program), ("ET_DYN", false), "a static PIE");
    for (link, target) in [
        ("/usr/sbin/iptables", "/etc/alternatives/iptables"),
        ("/etc/alternatives/iptables", "/usr/sbin/iptables-legacy"),
        ("/usr/sbin/iptables-legacy", "xtables-legacy-multi"),
        ("/usr/sbin/ip6tables-legacy-restore", "xtables-legacy-multi"),
    ] {
        assert_eq!(member(link).link_target.as_deref(), Some(target), "{link}");
    }
    assert!(!listing
        .entries
        .iter()
        .any(|e| e.path.contains("libxtables") || e.path.contains("/xtables/libxt_")));
    // Every other program of the image is Debian's dynamic build: the check above can fail.
    assert_eq!(
        elf_kind(initramfs.data(member("/usr/sbin/dockerd"))),
        ("ET_DYN", true)
    );

    if !prerequisite(
        boot::qemu_available(),
        "qemu-system-x86_64 is not installed (apt-get install -y qemu-system-x86)",
    ) {
        return;
    }
    let mut cmdline = spec.kernel.cmdline.clone();
    cmdline.push("eci.selftest".into());
    let console = work.path().join("console.log");
    let result = boot::boot(&BootOptions {
        kernel: first.join("vmlinuz"),
        initramfs: first.join("initramfs.img"),
        cmdline,
        memory_mib: 2048,
        cpus: 2,
        accel: Accel::Auto,
        timeout: Duration::from_secs(420),
        console_log: console.clone(),
        echo: false,
    })
    .unwrap_or_else(|e| panic!("boot failed: {e}\n{}", tail(&console, 60)));
    let t = &result.selftest;
    assert!(
        t.passed(),
        "self-test did not pass ({:?}); console tail:\n{}",
        t.status,
        tail(&console, 80)
    );
    assert!(
        t.fact("dockerd")
            .unwrap_or("")
            .starts_with("Docker version 20.10"),
        "{t:?}"
    );
    assert!(t.fact("containerd").unwrap_or("").contains("1.6"), "{t:?}");
    assert_eq!(t.fact("modules_disabled"), Some("1"), "{t:?}");
    // Under QEMU only the Hyper-V drivers may fail to bind; every other pinned module loads,
    // with kernel lockdown in force (the compensations in kernel-config rely on it).
    let failed = t.fact("modules-failed").unwrap_or("");
    for m in failed.split_whitespace() {
        assert!(
            m.starts_with("hv_") || m.contains("hyperv"),
            "module {m} failed to load: {t:?}"
        );
    }
    let loaded: usize = t
        .fact("modules-loaded")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert_eq!(
        loaded + failed.split_whitespace().count(),
        built.manifest.kernel.modules.len(),
        "{t:?}"
    );
    assert!(
        t.fact("lockdown").unwrap_or("").contains("[integrity]"),
        "{t:?}"
    );
    // SPEC V5: the in-VM probe finds no drift from the pins, except pinned Hyper-V drivers
    // that cannot bind under QEMU (they are in modules-failed above).
    let drift = t.fact("kernel-drift").expect("the probe ran");
    if drift != "none" {
        let failed = failed.replace('-', "_");
        let names = drift.split_once(": ").map(|(_, n)| n).unwrap_or(drift);
        for name in names.split(", ") {
            assert!(
                failed.split_whitespace().any(|f| f == name),
                "kernel drift {name} is not explained by a module without hardware: {t:?}"
            );
        }
    }
    assert_eq!(
        t.fact("kernel"),
        Some(built.manifest.kernel.release.as_str())
    );
    assert!(t.fact("server").unwrap_or("").starts_with("20.10"), "{t:?}");
    // SPEC A2 and S4: the baked settings make eci the default runtime, on a root-only socket.
    assert_eq!(t.fact("default-runtime"), Some("eci"), "{t:?}");
    assert_eq!(t.fact("socket-mode"), Some("700"), "{t:?}");
    // SPEC A1, A2, A4, U1 inside the VM: `runc` leads to eci-runc, and a container started through the
    // engine runs under eci-runc in its own user namespace.
    assert_eq!(t.fact("runc"), Some("eci-runc"), "{t:?}");
    assert_eq!(t.fact("container-userns"), Some("isolated"), "{t:?}");
    // SPEC A3, A1 through the guard on the CLI's default socket: `--runtime=runc` is accepted,
    // the container runs under eci in its own user namespace, and the rewrite is audited (S5).
    assert_eq!(t.fact("container-runtime"), Some("eci"), "{t:?}");
    let map: Vec<u64> = t
        .fact("guard-run-uid-map")
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        map.len() == 3 && map[0] == 0 && map[1] >= 100_000 && map[2] == 65_536,
        "{t:?}"
    );
    let line = t.fact("guard-audit-rewrite").unwrap_or("none");
    let audit: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("audit line is not one JSON object ({e}): {line}"));
    assert_eq!(audit["event"], "request", "{line}");
    assert_eq!(audit["listener"], "user", "{line}");
    // DOCKER_HOST unset: the CLI's default path.
    // The docker CLI's default /var/run/docker.sock is the guard's /run/docker.sock.
    assert_eq!(audit["socket"], "/run/docker.sock", "{line}");
    assert_eq!(audit["method"], "POST", "{line}");
    assert!(
        audit["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("/containers/create")),
        "{line}"
    );
    assert_eq!(audit["decision"], "rewrite", "{line}");
    assert_eq!(audit["status"], 201, "{line}");
    assert!(
        audit["rules"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r == "A3")),
        "{line}"
    );
    assert!(
        audit["notes"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n == "Runtime \"runc\" -> \"eci\"")),
        "{line}"
    );
    // SPEC S4: dockerd's socket is root's alone (its folder is 700, above); users get the
    // guard's socket with the image's docker group; nothing listens on TCP.
    assert_eq!(t.fact("dockerd-socket"), Some("660 0:0"), "{t:?}");
    let docker_gid = spec
        .groups
        .iter()
        .find(|g| g.name == "docker")
        .expect("images/base.yaml declares the docker group")
        .gid;
    for key in ["user-socket", "cli-socket"] {
        assert_eq!(
            t.fact(key),
            Some(format!("660 0:{docker_gid}").as_str()),
            "{key}: {t:?}"
        );
    }
    assert_eq!(t.fact("container-socket"), Some("660 0:0"), "{t:?}");
    assert_eq!(t.fact("tcp-listeners"), Some("none"), "{t:?}");
    // SPEC B2, S4: dockerd's socket is no bind source, through the guard and for eci-runc when
    // root asks dockerd directly.
    let b2 = "can't mount /run/eci/dockerd.sock because it's configured as a restricted host mount";
    for key in ["guard-dockerd-socket-mount", "runtime-dockerd-socket-mount"] {
        assert!(t.fact(key).unwrap_or("").contains(b2), "{key}: {t:?}");
    }
    // SPEC B4: the baked imageList is empty, so the self-test's image may not mount the socket.
    assert!(
        t.fact("guard-socket-mount").unwrap_or("").contains(
            "image \"eci-selftest:busybox\" is not allowed to mount the Docker engine socket: it is not in enhancedContainerIsolation.dockerSocketMount.imageList"
        ),
        "{t:?}"
    );
    // SPEC A5: a container created without eci is not started through the guard; the
    // refusal names it and says how to recreate it.
    let legacy = t.fact("guard-legacy-start").unwrap_or("");
    assert!(
        legacy.contains(
            "container eci-selftest-legacy was created before container isolation was enabled (runtime runc)"
        ) && legacy.contains("`docker rm eci-selftest-legacy`"),
        "{t:?}"
    );
    // SPEC V2: the image is read-only, run-time state on tmpfs; this boot has no data disk,
    // so the engine data falls back to tmpfs and says so (tests/init_boot.rs boots with one).
    assert_eq!(t.fact("root"), Some("ro"), "{t:?}");
    assert_eq!(t.fact("etc-write"), Some("refused"), "{t:?}");
    for d in ["run", "tmp", "var"] {
        assert_eq!(t.fact(d), Some("tmpfs"), "/{d}: {t:?}");
    }
    assert_eq!(t.fact("data-disk"), Some("tmpfs"), "{t:?}");
    assert!(
        t.fact("data-disk-detail")
            .unwrap_or("")
            .contains("no disk is labelled eci-data"),
        "{t:?}"
    );
    assert_eq!(t.fact("docker-data-fs"), Some("tmpfs"), "{t:?}");
    // SPEC V3: kexec is off with module loading.
    assert_eq!(t.fact("kexec_load_disabled"), Some("1"), "{t:?}");
    // Containers can pivot_root out of the root eci-init leaves (no initramfs rootfs).
    assert_eq!(t.fact("pivot_root"), Some("ok"), "{t:?}");
    // SPEC V4: no process but PID 1 holds the console; PID 1 reaps what it inherits.
    assert_eq!(t.fact("console-readers"), Some("0"), "{t:?}");
    assert_eq!(t.fact("zombies"), Some("0"), "{t:?}");
    // Services start in order, each once the previous one answered: containerd's socket, then
    // dockerd's /_ping, then the guard's own /_ping.
    let services = t.fact("services").unwrap_or("");
    let ready_at = |name: &str| -> f64 {
        services
            .split_whitespace()
            .find_map(|s| s.strip_prefix(&format!("{name}:ready@")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} not ready: {services}"))
    };
    assert!(ready_at("containerd") <= ready_at("dockerd"), "{services}");
    assert!(ready_at("dockerd") <= ready_at("eci-guard"), "{services}");
    // SPEC F1, F3 (issue 10): eci-init has the /proc views server ready before dockerd (the
    // only client that creates containers), and a container reads its own /proc: MemTotal is
    // its `-m 64m`, and its uptime began with it (below the VM's uptime read before the
    // container was created).
    assert!(ready_at("eci-views") <= ready_at("dockerd"), "{services}");
    assert_eq!(t.fact("views-memtotal-kb"), Some("65536"), "{t:?}");
    let (up, vm) = t
        .fact("views-uptime")
        .and_then(|f| f.split_once(" vm="))
        .and_then(|(c, v)| Some((c.parse::<f64>().ok()?, v.parse::<f64>().ok()?)))
        .unwrap_or_else(|| panic!("views-uptime is not `SECONDS vm=SECONDS`: {t:?}"));
    assert!(
        up < vm,
        "container uptime {up} s is not below the VM's {vm} s: {t:?}"
    );
    // SPEC M5 (issue 10): eci-init holds the fd store; with the supervisor killed and restarted
    // by eci-init, a running container's own init mounts again, and the supervisor's log says
    // it re-attached that container.
    assert_eq!(t.fact("fd-store"), Some("socket"), "{t:?}");
    let reattach = t.fact("fd-store-reattach").unwrap_or("");
    assert!(
        reattach.starts_with("before:tmpfs-ok after:tmpfs-ok supervisor:"),
        "{t:?}"
    );
    assert!(
        t.fact("fd-store-log")
            .unwrap_or("")
            .contains("from the fd store"),
        "{t:?}"
    );
    // The views server, killed with it, took the FUSE connection back from the same store:
    // the running container reads its own boot_id again (not the VM's, not a new one).
    let views = t.fact("fd-store-views").unwrap_or("");
    let ids: Vec<&str> = views
        .split(' ')
        .filter_map(|w| {
            w.strip_prefix("before:")
                .or_else(|| w.strip_prefix("after:"))
        })
        .collect();
    assert!(
        ids.len() == 2 && ids[0].len() == 36 && ids[0] == ids[1],
        "{t:?}"
    );
    // ... and a view it had not read before the restart, whole (its uptime: two numbers).
    let uptime = views
        .split_once("uptime:")
        .map(|(_, r)| r.split(" views:").next().unwrap_or(""))
        .unwrap_or("");
    assert_eq!(
        uptime.split(' ').filter(|w| w.contains('.')).count(),
        2,
        "{t:?}"
    );
    assert!(
        t.fact("fd-store-views-log")
            .unwrap_or("")
            .contains("took the FUSE connection"),
        "{t:?}"
    );
    // Issue 13: the boot's phase report exists and is well-formed; its figures belong to
    // bench/boot.sh, never to a test. Every milestone of the chain, in boot order, and the
    // consecutive phases add up to the first run's uptime.
    let tl = &result.timeline;
    let at = |name: &str| {
        tl.milestone(name)
            .unwrap_or_else(|| panic!("no {name} milestone: {:?}", tl.milestones))
            .uptime
    };
    let chain = [
        "kernel",
        "initramfs-unpack",
        "initramfs-unpacked",
        "init",
        "init-mounts",
        "init-modules",
        "init-kernel-check",
        "init-data-disk",
        "init-services",
        "containerd-ready",
        "dockerd-ready",
        "eci-guard-ready",
        "first-run",
    ];
    for pair in chain.windows(2) {
        assert!(at(pair[0]) <= at(pair[1]), "{pair:?}: {:?}", tl.milestones);
    }
    assert!(
        tl.milestones
            .iter()
            .all(|m| m.uptime >= 0.0 && m.wall >= 0.0 && m.wall.is_finite()),
        "{:?}",
        tl.milestones
    );
    let consecutive: f64 = tl
        .phases
        .iter()
        .filter(|p| {
            !["firmware", "loader", "kernel-start", "initramfs-unpack"].contains(&p.name.as_str())
        })
        .map(|p| p.seconds)
        .sum();
    assert!(
        (consecutive - at("first-run")).abs() < 0.01,
        "{consecutive} vs {}: {:?}",
        at("first-run"),
        tl.phases
    );
    assert!(
        tl.phases.iter().any(|p| p.name == "firmware")
            && tl.phases.iter().all(|p| p.seconds >= 0.0),
        "{:?}",
        tl.phases
    );
    eprintln!(
        "booted under {} in {:.1} s; ready at uptime: {services}\n{}",
        result.accel,
        result.seconds,
        t.facts.join("\n")
    );
}
