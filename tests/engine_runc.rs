//! eci-runc under a real dockerd (SPEC A2, A6, U1, U2, U4, P1-P5, P8, B2, B3): every check goes
//! through the docker CLI against a private engine whose default runtime is eci-runc.

use eci_e2e::runc_engine::{parse_map, prerequisites, RuncEngine, IMAGE};

fn engine(name: &str) -> Option<RuncEngine> {
    if !prerequisites() {
        return None;
    }
    Some(RuncEngine::start(name).unwrap_or_else(|e| panic!("engine {name}: {e:#}")))
}

/// SPEC A2, U1: eci is the default runtime and root maps to an unprivileged 65536-id range.
#[test]
fn containers_get_an_exclusive_user_namespace() {
    let Some(e) = engine("userns") else { return };
    assert_eq!(e.ok(&["info", "--format", "{{.DefaultRuntime}}"]), "eci");
    let out = e.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        IMAGE,
        "cat",
        "/proc/self/uid_map",
        "/proc/self/gid_map",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for l in lines {
        let (inside, outside, count) = parse_map(l).unwrap_or_else(|| panic!("bad map {l:?}"));
        assert_eq!((inside, count), (0, 65536), "{l}");
        assert!(outside >= 100_000, "{l}");
    }
    // --userns=host is ignored (SPEC A6).
    let out = e.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--userns",
        "host",
        IMAGE,
        "cat",
        "/proc/self/uid_map",
    ]);
    let (_, outside, count) = parse_map(&out).unwrap();
    assert!(outside >= 100_000 && count == 65536, "{out}");
    assert!(
        e.ranges().is_empty(),
        "ranges left after --rm: {:?}",
        e.ranges()
    );
}

/// SPEC U2: two running containers get disjoint ranges, 20 parallel creates stay disjoint, and
/// ranges are released on `docker rm` and handed out again.
#[test]
fn ranges_are_disjoint_released_and_reused() {
    let Some(e) = engine("ranges") else { return };
    let run = |name: &str| {
        e.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "none",
            IMAGE,
            "sleep",
            "300",
        ]);
        let m = e.ok(&["exec", name, "cat", "/proc/self/uid_map"]);
        parse_map(&m).unwrap().1
    };
    let a = run("ca");
    let b = run("cb");
    assert!(a.abs_diff(b) >= 65536, "overlapping ranges {a} and {b}");
    // Twenty creates at once.
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let mut c = e.command(&[
                "create",
                "--name",
                &format!("p{i}"),
                "--network",
                "none",
                IMAGE,
                "sleep",
                "300",
            ]);
            c.stdout(std::process::Stdio::null()).spawn().unwrap()
        })
        .collect();
    for mut h in handles {
        assert!(h.wait().unwrap().success());
    }
    let names: Vec<String> = (0..20).map(|i| format!("p{i}")).collect();
    let mut args = vec!["start"];
    args.extend(names.iter().map(|s| s.as_str()));
    e.ok(&args);
    let mut starts: Vec<u64> = e.ranges().into_iter().map(|(_, s)| s).collect();
    assert_eq!(starts.len(), 22, "{:?}", e.ranges());
    starts.sort();
    for w in starts.windows(2) {
        assert!(w[1] - w[0] >= 65536, "overlap in {starts:?}");
    }
    assert!(starts[0] >= 100_000);
    // Release and reuse: a's range goes back to the pool and the next container gets it.
    e.ok(&["rm", "-f", "ca"]);
    assert!(
        !e.ranges().iter().any(|(_, s)| *s == a),
        "range {a} not released"
    );
    let c = run("cc");
    assert_eq!(c, a, "the lowest free range should be reused");
}

/// SPEC U4: image files appear owned by container root, writes land on disk as VM root
/// (through the idmapped layers), and a named volume written by one container is usable by
/// another container with a different range.
#[test]
fn rootfs_and_volumes_have_correct_owners() {
    let Some(e) = engine("owners") else { return };
    let out = e.ok(&[
        "run",
        "--name",
        "wr",
        "--network",
        "none",
        "-v",
        "vol:/data",
        IMAGE,
        "sh",
        "-c",
        "stat -c %u:%g /bin/busybox /etc/passwd && echo x > /newfile && stat -c %u:%g /newfile \
         && echo y > /data/f && stat -c %u:%g /data/f && cat /proc/self/uid_map",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..4], &["0:0", "0:0", "0:0", "0:0"], "{out}");
    let first = parse_map(lines[4]).unwrap().1;
    let upper = e.ok(&["inspect", "-f", "{{.GraphDriver.Data.UpperDir}}", "wr"]);
    let meta = std::fs::metadata(format!("{upper}/newfile")).expect("file in the upper layer");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta.uid(), meta.gid()),
        (0, 0),
        "written through the idmapped upper layer"
    );
    // Keep w alive so the second container gets another range.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "hold",
        "--network",
        "none",
        IMAGE,
        "sleep",
        "300",
    ]);
    let out = e.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        "vol:/data",
        IMAGE,
        "sh",
        "-c",
        "cat /data/f && stat -c %u:%g /data/f && echo z >> /data/f && cat /proc/self/uid_map",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..2], &["y", "0:0"], "{out}");
    let second = parse_map(lines[2]).unwrap().1;
    assert_ne!(
        first, second,
        "the second container should have its own range"
    );
}

/// SPEC P1-P5, P8: --privileged works (CAP_SYS_RESOURCE is dropped with a warning instead of
/// failing) and its powers stay inside the container.
#[test]
fn privileged_containers_are_confined() {
    let Some(e) = engine("priv") else { return };
    let script = "set -u; \
        mkdir -p /tmp/t && mount -t tmpfs t /tmp/t && echo tmpfs-ok; \
        head -c 65536 /dev/zero > /tmp/m.ko; insmod /tmp/m.ko 2>/dev/null && echo insmod-worked || echo insmod-refused; \
        mknod /tmp/blk b 8 0 2>/dev/null && echo mknod-worked || echo mknod-refused; \
        ls /dev | grep -E '^(sd|vd|nvme|loop|mem|kmem|port|kmsg|kvm|vsock)' || echo no-hw-devices; \
        echo x > /proc/sys/kernel/core_pattern 2>/dev/null && echo core-worked || echo core-refused; \
        echo h > /proc/sysrq-trigger 2>/dev/null && echo sysrq-worked || echo sysrq-refused; \
        grep -q '^CapEff:.*' /proc/self/status && grep ^Seccomp: /proc/self/status";
    let out = e.ok(&[
        "run",
        "--rm",
        "--privileged",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        script,
    ]);
    for want in [
        "tmpfs-ok",
        "insmod-refused",
        "mknod-refused",
        "no-hw-devices",
        "core-refused",
        "sysrq-refused",
    ] {
        assert!(out.lines().any(|l| l == want), "missing {want} in:\n{out}");
    }
    // eci's own filter is loaded even though --privileged turns docker's profile off.
    assert!(out.contains("Seccomp:\t2"), "{out}");
    // The host's core_pattern is unchanged.
    let cp = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    assert_ne!(cp.trim(), "x");
}

/// SPEC A6, B2, B3: host namespaces and VM paths are refused with the SPEC's words; engine
/// files, shared folders and --init keep working.
#[test]
fn host_namespaces_and_restricted_binds_are_refused() {
    let Some(e) = engine("refuse") else { return };
    let err = e.fails(&[
        "run",
        "--rm",
        "-v",
        "/etc:/x",
        "--network",
        "none",
        IMAGE,
        "true",
    ]);
    assert!(
        err.contains("can't mount /etc because it's configured as a restricted host mount"),
        "{err}"
    );
    let err = e.fails(&[
        "run",
        "--rm",
        "--pid",
        "host",
        "--network",
        "none",
        IMAGE,
        "true",
    ]);
    assert!(err.contains("VM's pid namespace"), "{err}");
    let err = e.fails(&["run", "--rm", "--network", "host", IMAGE, "true"]);
    assert!(err.contains("VM's network namespace"), "{err}");
    let err = e.fails(&[
        "run",
        "--rm",
        "--ipc",
        "host",
        "--network",
        "none",
        IMAGE,
        "true",
    ]);
    assert!(err.contains("VM's ipc namespace"), "{err}");
    assert!(
        e.ranges().is_empty(),
        "refused creates leaked ranges: {:?}",
        e.ranges()
    );
    // Allowed: a shared folder, and the engine's own files with --init.
    std::fs::write(e.share.join("hello"), "shared\n").unwrap();
    let share = format!("{}:/s", e.share.display());
    let out = e.ok(&[
        "run",
        "--rm",
        "--init",
        "--network",
        "none",
        "-v",
        &share,
        IMAGE,
        "sh",
        "-c",
        "cat /s/hello; cat /etc/hostname | wc -l; ps -o pid,comm | sed -n 2p",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "shared", "{out}");
    assert_eq!(lines[1], "1", "{out}");
    assert!(
        lines[2].contains("docker-init") || lines[2].contains("init"),
        "{out}"
    );
}
