//! templates/wsl-boot.sh.tera, the WSL2 distribution's boot command, rendered as eci-build
//! renders image files (a tera one-off with `image` and `kernel`) and run with its absolute
//! paths pointed at a stub: the engine is started only through `eci-init --under-init` (which
//! runs the kernel check, SPEC V5), in a session of its own, and the script does not wait for
//! it. The image's own render and install path is covered in builder/src/artifact/wsl2.rs.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const RELEASE: &str = "6.12.117-eci-wsl2";

fn render() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/wsl-boot.sh.tera");
    let source = std::fs::read_to_string(path).unwrap();
    let mut ctx = tera::Context::new();
    ctx.insert(
        "image",
        &serde_json::json!({"name": "eci", "target": "wsl2"}),
    );
    ctx.insert(
        "kernel",
        &serde_json::json!({"release": RELEASE, "modules": []}),
    );
    tera::Tera::one_off(&source, &ctx, false).unwrap()
}

fn busybox() -> Option<String> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .map(str::to_string)
}

#[test]
fn renders_a_script_that_leaves_the_engine_to_eci_init() {
    let text = render();
    assert!(text.starts_with("#!/bin/busybox sh\n"), "{text}");
    assert!(
        text.contains(RELEASE),
        "the comment names the pinned kernel"
    );
    let code: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .collect();
    let starts: Vec<&&str> = code
        .iter()
        .filter(|l| l.contains("/usr/sbin/eci-init"))
        .collect();
    assert_eq!(starts.len(), 1, "{code:#?}");
    assert!(starts[0].contains("--under-init"), "{}", starts[0]);
    // Nothing else may start the engine or touch the kernel behind the check's back.
    for banned in [
        "dockerd",
        "containerd",
        "eci-guard",
        "insmod",
        "modprobe",
        "sysctl",
    ] {
        assert!(
            !code.iter().any(|l| l.contains(banned)),
            "{banned} outside eci-init:\n{code:#?}"
        );
    }
    let check = Command::new("sh")
        .args(["-n", "-c", &text])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn the_script_starts_eci_init_detached_and_returns() {
    let bb = busybox();
    if !eci_test_support::prerequisite(
        bb.is_some(),
        "busybox is not installed (apt-get install busybox-static)",
    ) {
        return;
    }
    let bb = bb.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("stub.out");
    let stub = tmp.path().join("eci-init");
    std::fs::write(
        &stub,
        format!(
            "#!/bin/sh\nread -r stat < /proc/$$/stat\nset -- \"$@\" -- $stat\n\
             echo \"$* stdin=$(readlink /proc/$$/fd/0)\" > {o}.tmp\nmv {o}.tmp {o}\nsleep 3\n",
            o = out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let logs = tmp.path().join("log");
    let script = render()
        .replace("bb=/bin/busybox", &format!("bb={bb}"))
        .replace("/usr/sbin/eci-init", &stub.display().to_string())
        .replace("/var/log/eci", &logs.display().to_string());
    let started = Instant::now();
    let status = Command::new(&bb)
        .args(["sh", "-c", &script])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the boot command waited for the supervisor"
    );
    let start = Instant::now();
    while !out.exists() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let line = std::fs::read_to_string(&out).unwrap();
    // "--under-init -- PID (sh) STATE PPID PGRP SESSION ... stdin=/dev/null"
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[0], "--under-init", "{line}");
    assert_eq!(fields[1], "--", "no other argument: {line}");
    assert_eq!(fields[2], fields[7], "not a session leader: {line}");
    assert!(line.trim_end().ends_with("stdin=/dev/null"), "{line}");
    assert!(logs.join("wsl-boot.log").exists());
}
