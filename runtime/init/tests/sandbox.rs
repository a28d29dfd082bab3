//! eci-init as PID 1 of a private PID and mount namespace (`unshare --pid --mount --fork`),
//! booting a fake root whose services are stub scripts (tests/stubs). Proves, on this machine:
//! the root made read-only with /run, /tmp and /var on tmpfs and the image's /var copied (SPEC
//! V2); start order with readiness waits (dockerd's stub refuses to run before containerd
//! answers and is probed with GET /_ping); a missing program skipped; a crashing service
//! restarted with growing delays; orphans reaped; SIGTERM shutting down in reverse order with a
//! SIGKILL for a service that ignores SIGTERM; and the namespace ended by reboot(POWER_OFF).
//! The kernel check (SPEC V5) reads a fake kernel tree inside the root (`--probe-root`): a
//! matching one lets the services start; a drifting one starts none of them, names the drift on
//! the console and in /run/eci/kernel-drift.json, and init stays up until told to stop.
//!
//! Needs root (mount and PID namespaces), util-linux `unshare` and perl. Without them it prints
//! why and passes on a laptop; in CI (`CI` set) it fails instead.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::symlink;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eci_test_support::prerequisite;

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

const SERVICES: &str = r#"{"services": [
  {"name": "containerd", "command": ["/stub/containerd"],
   "ready": {"unix_socket": "/run/containerd/containerd.sock"}, "ready_timeout_seconds": 20, "stop_timeout_seconds": 3},
  {"name": "dockerd", "command": ["/stub/dockerd", "--config-file", "/run/eci/dockerd.json"],
   "ready": {"http_unix": {"socket": "/run/eci/dockerd.sock", "path": "/_ping"}}, "ready_timeout_seconds": 20, "stop_timeout_seconds": 3},
  {"name": "ghost", "command": ["/stub/not-in-the-image"]},
  {"name": "crasher", "command": ["/stub/crasher"]},
  {"name": "spawner", "command": ["/stub/spawner"], "ready": {"path": "/run/spawner.done"}, "ready_timeout_seconds": 20},
  {"name": "stubborn", "command": ["/stub/stubborn"], "stop_timeout_seconds": 1}
]}"#;

/// The kernel the fake image pins: the one eci builds for qemu (everything built in, no
/// loadable modules), so the pins need no boot modules.
const PINNED_RELEASE: &str = "6.12.117-eci-qemu";

/// What the kernel check reads, under `k`: the pinned kernel after boot (config, release,
/// hardening sysctls), or, with `drift`, another release with a weaker sysctl. The image's pins
/// go to ROOT/etc/eci/kernel-pins.json.
fn fake_kernel(root: &Path, k: &Path, drift: bool) {
    let put = |rel: &str, text: &str| {
        let p = k.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    let release = if drift {
        "6.6.87.2-microsoft-standard-WSL2"
    } else {
        PINNED_RELEASE
    };
    put("proc/sys/kernel/osrelease", &format!("{release}\n"));
    let config = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernel-config/generated/qemu.config"),
    )
    .unwrap();
    put(&format!("boot/config-{release}"), &config);
    for (name, value) in [
        ("kernel/kptr_restrict", if drift { "0" } else { "2" }),
        ("kernel/dmesg_restrict", "1"),
        ("kernel/unprivileged_bpf_disabled", "1"),
        ("kernel/perf_event_paranoid", "3"),
        ("kernel/yama/ptrace_scope", "1"),
        ("fs/protected_symlinks", "1"),
        ("fs/protected_hardlinks", "1"),
        ("fs/protected_fifos", "2"),
        ("fs/protected_regular", "2"),
        ("vm/unprivileged_userfaultfd", "0"),
        ("kernel/kexec_load_disabled", "1"),
    ] {
        put(&format!("proc/sys/{name}"), &format!("{value}\n"));
    }
    let pins = eci_kernel_config::ImagePins {
        target: "qemu".into(),
        fragments: vec!["container".into(), "hardening".into(), "qemu".into()],
        kernel_release: PINNED_RELEASE.into(),
        boot_modules: vec![],
        profile: None,
    };
    std::fs::write(root.join("etc/eci/kernel-pins.json"), pins.to_json()).unwrap();
}

/// The fake image: stubs, services.json, an image /var, and the host's /usr (bound read-only
/// inside the namespace) for perl.
fn make_root(root: &Path) -> Vec<String> {
    let mut binds = vec!["/usr".to_string()];
    std::fs::create_dir_all(root.join("usr")).unwrap();
    for top in ["bin", "sbin", "lib", "lib64"] {
        let host = Path::new("/").join(top);
        match std::fs::read_link(&host) {
            Ok(target) => symlink(target, root.join(top)).unwrap(),
            Err(_) if host.is_dir() => {
                std::fs::create_dir(root.join(top)).unwrap();
                binds.push(host.display().to_string());
            }
            Err(_) => {}
        }
    }
    std::fs::create_dir_all(root.join("etc/eci")).unwrap();
    std::fs::write(root.join("etc/eci/services.json"), SERVICES).unwrap();
    std::fs::create_dir_all(root.join("etc/docker")).unwrap();
    std::fs::write(
        root.join("etc/docker/daemon.json"),
        r#"{"default-runtime": "eci"}"#,
    )
    .unwrap();
    std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
    std::fs::write(root.join("var/lib/dpkg/status"), "Package: stub\n").unwrap();
    std::fs::create_dir_all(root.join("var/lib/docker")).unwrap();
    std::fs::create_dir_all(root.join("stub")).unwrap();
    let stubs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stubs");
    for e in std::fs::read_dir(stubs).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), root.join("stub").join(e.file_name())).unwrap();
    }
    binds
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn zombies_of(parent: u32) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        if field("PPid:") == parent.to_string() && field("State:").starts_with('Z') {
            n += 1;
        }
    }
    n
}

fn in_order<S: AsRef<str>>(text: &str, lines: &[S]) {
    let mut at = 0;
    for l in lines {
        let l = l.as_ref();
        match text[at..].find(l) {
            Some(i) => at += i + l.len(),
            None => panic!("{l:?} missing or out of order after byte {at}:\n{text}"),
        }
    }
}

fn prerequisites() -> bool {
    let root_user = nix::unistd::geteuid().is_root();
    prerequisite(root_user, "needs root for mount and PID namespaces")
        && prerequisite(have("unshare"), "util-linux unshare is not installed")
        && prerequisite(
            have("perl"),
            "perl is not installed (the stub services are perl)",
        )
}

/// eci-init booting a fresh fake root in its own namespaces; the console is collected.
struct Sandbox {
    _tmp: tempfile::TempDir,
    under_init: bool,
    child: std::process::Child,
    console: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Sandbox {
    /// As PID 1 of the namespace with `--sandbox`, the fake kernel at ROOT/kernel.
    fn start(drift: bool) -> Sandbox {
        Sandbox::launch(drift, false)
    }

    /// `--under-init` in a chroot of ROOT, under a shell that is PID 1 of the namespace (WSL's
    /// init in the real thing). The check reads the real paths, so ROOT's /proc, /sys and /boot
    /// are the fake kernel's plain directories: a kernel without loadable modules, as the WSL2
    /// kernel eci builds.
    fn under_init(drift: bool) -> Sandbox {
        Sandbox::launch(drift, true)
    }

    fn launch(drift: bool, under_init: bool) -> Sandbox {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let binds = make_root(&root);
        let kernel = if under_init {
            root.clone()
        } else {
            root.join("kernel")
        };
        fake_kernel(&root, &kernel, drift);
        let r = root.display();
        let mut script = String::from("set -e\n");
        for b in &binds {
            script.push_str(&format!(
                "mount --bind {b} {r}{b}\nmount -o remount,bind,ro {r}{b}\n"
            ));
        }
        let bin = env!("CARGO_BIN_EXE_eci-init");
        if under_init {
            std::fs::create_dir_all(root.join("dev")).unwrap();
            std::fs::write(root.join("dev/null"), "").unwrap();
            std::fs::write(root.join("eci-init"), "").unwrap();
            script.push_str(&format!(
                "mount --bind /dev/null {r}/dev/null\nmount --bind {bin} {r}/eci-init\n\
                 chroot {r} /eci-init --under-init\n"
            ));
        } else {
            script.push_str(&format!("exec {bin} --sandbox {r} --probe-root /kernel\n"));
        }
        let mut child = Command::new("unshare")
            .args([
                "--pid",
                "--mount",
                "--fork",
                "--propagation",
                "private",
                "--",
            ])
            .args(["/bin/sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .spawn()
            .expect("unshare starts");
        let console = Arc::new(Mutex::new(String::new()));
        let reader = {
            let console = console.clone();
            let stderr = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("{line}");
                    let mut c = console.lock().unwrap();
                    c.push_str(&line);
                    c.push('\n');
                }
            })
        };
        Sandbox {
            _tmp: tmp,
            under_init,
            child,
            console,
            reader: Some(reader),
        }
    }

    fn wait_for(&self, needle: &str, secs: u64) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(secs) {
            if self.console.lock().unwrap().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "no {needle:?} after {secs} s:\n{}",
            self.console.lock().unwrap()
        );
    }

    /// eci-init's pid as seen from here (the namespace's PID 1, or its child under another
    /// init).
    fn init(&self) -> u32 {
        let pid1 = children(self.child.id())[0];
        if self.under_init {
            children(pid1)[0]
        } else {
            pid1
        }
    }

    /// SIGTERM to init, then the whole console once the namespace ended.
    fn stop(&mut self) -> (std::process::ExitStatus, String) {
        let init = nix::unistd::Pid::from_raw(self.init() as i32);
        nix::sys::signal::kill(init, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = self.child.wait().unwrap();
        self.reader.take().unwrap().join().unwrap();
        let console = self.console.lock().unwrap().clone();
        (status, console)
    }
}

#[test]
fn pid1_in_a_namespace_orders_supervises_reaps_and_shuts_down() {
    if !prerequisites() {
        return;
    }
    let mut sb = Sandbox::start(false);
    let wait_for = |needle: &str, secs: u64| sb.wait_for(needle, secs);
    wait_for("eci-init: ready:", 60);
    // The crasher's third run (after 1 s and 2 s of backoff) stays up.
    wait_for("), restart #2\n", 15);
    let init = sb.init();
    // Orphans have had time to exit; PID 1 must have reaped them.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(zombies_of(init), 0, "zombies left under eci-init");

    let mountinfo = std::fs::read_to_string(format!("/proc/{init}/mountinfo")).unwrap();
    let mount = |target: &str| {
        mountinfo
            .lines()
            .rev()
            .find(|l| l.split_whitespace().nth(4) == Some(target))
            .unwrap_or_else(|| panic!("{target} not mounted:\n{mountinfo}"))
            .to_string()
    };
    let rootline = mount("/");
    assert!(
        rootline
            .split_whitespace()
            .nth(5)
            .unwrap()
            .split(',')
            .any(|o| o == "ro"),
        "root not read-only: {rootline}"
    );
    for t in ["/run", "/tmp", "/var"] {
        assert!(mount(t).contains(" - tmpfs "), "{t}: {}", mount(t));
    }
    let inside = Path::new("/proc").join(init.to_string()).join("root");
    assert_eq!(
        std::fs::read_to_string(inside.join("var/lib/dpkg/status")).unwrap(),
        "Package: stub\n",
        "the image's /var is copied onto the tmpfs"
    );
    assert!(
        std::fs::write(inside.join("etc/x"), "x").is_err(),
        "/etc is writable"
    );
    let dockerd_log = std::fs::read_to_string(inside.join("var/log/eci/dockerd.log")).unwrap();
    assert!(
        dockerd_log.contains("containerd answers, config ok"),
        "{dockerd_log}"
    );
    let legacy = std::fs::read_to_string(inside.join("run/eci/legacy-containers.json")).unwrap();
    assert!(legacy.contains("\"containers\": []"), "{legacy}");
    let verdict: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(inside.join("run/eci/kernel-drift.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(verdict["isolation"], "allowed", "{verdict}");
    assert_eq!(verdict["kernel_release"], PINNED_RELEASE);

    // SIGTERM from outside: clean shutdown, reverse order, then reboot(POWER_OFF), which ends
    // a PID namespace as if its init was killed by SIGINT.
    let started = Instant::now();
    let (status, console) = sb.stop();
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}\n{console}");
    assert!(started.elapsed() < Duration::from_secs(20));

    in_order(
        &console,
        &[
            &format!("eci-init: kernel check: {PINNED_RELEASE} matches the image's kernel pins"),
            "eci-init: root filesystem is read-only",
            "eci-init: ghost: /stub/not-in-the-image is not in the image; skipped",
            "eci-init: containerd: started",
            "eci-init: containerd: ready after",
            "eci-init: dockerd: started",
            "eci-init: dockerd: ready after",
            "eci-init: crasher: started",
            "eci-init: spawner: started",
            "eci-init: spawner: ready after",
            "eci-init: stubborn: started",
            "eci-init: ready: containerd:ready@",
        ],
    );
    in_order(
        &console,
        &[
            "eci-init: crasher: exited (exit status 1) after",
            "restart #1 in 1.0 s",
            "eci-init: crasher: started",
            "restart #1",
            "eci-init: crasher: exited (exit status 1) after",
            "restart #2 in 2.0 s",
            "eci-init: crasher: started",
            "restart #2",
        ],
    );
    in_order(
        &console,
        &[
            "eci-init: SIGTERM from pid 0: shutting down",
            "eci-init: stubborn: stopping (SIGTERM)",
            "eci-init: stubborn: still running 1 s after SIGTERM; killing it",
            "eci-init: stubborn: stopped (killed by signal 9)",
            "eci-init: spawner: stopped (exit status 0)",
            "eci-init: crasher: stopped (exit status 0)",
            "eci-init: dockerd: stopping (SIGTERM)",
            "eci-init: dockerd: stopped (exit status 0)",
            "eci-init: containerd: stopped (exit status 0)",
            "eci-init: all services stopped (SIGTERM from pid 0)",
            "eci-init: powering off",
        ],
    );
    let reaped: u32 = console
        .lines()
        .find(|l| l.ends_with(" orphaned processes were reaped"))
        .and_then(|l| l.rsplit("; ").next())
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(reaped >= 5, "only {reaped} orphans reaped:\n{console}");
    assert!(!console.contains("ORDER VIOLATION"));
}

#[test]
fn a_drifting_kernel_starts_no_service_and_says_why() {
    if !prerequisites() {
        return;
    }
    let mut sb = Sandbox::start(true);
    sb.wait_for(
        "eci-init: ready: none (isolation refused: kernel drift)",
        60,
    );
    let init = sb.init();
    // Init stays up with nothing under it: no service was started, none is pending.
    std::thread::sleep(Duration::from_secs(2));
    assert!(sb.child.try_wait().unwrap().is_none(), "init ended");
    assert_eq!(children(init), Vec::<u32>::new(), "init started something");

    let inside = Path::new("/proc").join(init.to_string()).join("root");
    let path = inside.join("run/eci/kernel-drift.json");
    let meta = std::fs::metadata(&path).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "root-only");
    let verdict: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(verdict["isolation"], "refused", "{verdict}");
    let drifted: Vec<&str> = verdict["drifted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    for name in ["kernel release", "kernel.kptr_restrict"] {
        assert!(drifted.contains(&name), "{name} not in {drifted:?}");
    }
    assert!(verdict["remedy"]
        .as_str()
        .unwrap()
        .contains(&format!("pinned kernel {PINNED_RELEASE}")));

    let (status, console) = sb.stop();
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}\n{console}");
    in_order(
        &console,
        &[
            "eci-init: KERNEL DRIFT: isolation refused (SPEC V5); not started: containerd, dockerd, ghost, crasher, spawner, stubborn",
            "eci-init: running kernel 6.6.87.2-microsoft-standard-WSL2, target qemu, pinned kernel 6.12.117-eci-qemu",
            "eci-init:   DRIFT kernel release: wanted 6.12.117-eci-qemu, found 6.6.87.2-microsoft-standard-WSL2",
            "eci-init:   DRIFT kernel.kptr_restrict: wanted >=1, found 0",
            "eci-init: what to do: boot the image's pinned kernel 6.12.117-eci-qemu",
            "/run/eci/kernel-drift.json",
            "eci-init: ready: none (isolation refused: kernel drift)",
            "eci-init: SIGTERM from pid 0: shutting down",
            "eci-init: powering off",
        ],
    );
    for service in ["containerd", "dockerd", "crasher", "spawner", "stubborn"] {
        assert!(
            !console.contains(&format!("eci-init: {service}: started")),
            "{service} started:\n{console}"
        );
    }
}

#[test]
fn under_another_init_the_engine_starts_only_on_the_pinned_kernel_and_once() {
    if !prerequisites() {
        return;
    }
    let mut sb = Sandbox::under_init(false);
    sb.wait_for("eci-init: ready: containerd:ready@", 60);
    let init = sb.init();
    let inside = Path::new("/proc").join(init.to_string()).join("root");
    let verdict: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(inside.join("run/eci/kernel-drift.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(verdict["isolation"], "allowed", "{verdict}");
    // The spawner's orphans come back to eci-init (a subreaper), not to the other init.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(zombies_of(init), 0, "zombies left under eci-init");

    // The boot command run again: the second eci-init finds the first and leaves.
    let again = Command::new("nsenter")
        .args(["--target", &init.to_string(), "--mount", "--"])
        .arg("chroot")
        .arg(inside.canonicalize().unwrap())
        .args(["/eci-init", "--under-init"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(1), "{err}");
    assert!(
        err.contains("another eci-init already supervises the engine"),
        "{err}"
    );

    let (status, console) = sb.stop();
    assert_eq!(status.code(), Some(0), "{status:?}\n{console}");
    in_order(
        &console,
        &[
            "eci-init: the kernel has no loadable module support; no modules to load",
            "eci-init: 0 of 0 hardening sysctls applied",
            &format!("eci-init: kernel check: {PINNED_RELEASE} matches the image's kernel pins"),
            "eci-init: containerd: ready after",
            "eci-init: dockerd: ready after",
            "eci-init: SIGTERM from pid 0: shutting down",
            "eci-init: containerd: stopped (exit status 0)",
            "eci-init: exiting",
        ],
    );
    for vm_only in [
        "root filesystem is read-only",
        "/var is tmpfs",
        "powering off",
        "no data disk",
    ] {
        assert!(!console.contains(vm_only), "{vm_only}:\n{console}");
    }
}

#[test]
fn under_another_init_a_drifting_kernel_starts_no_service() {
    if !prerequisites() {
        return;
    }
    let mut sb = Sandbox::under_init(true);
    sb.wait_for(
        "eci-init: ready: none (isolation refused: kernel drift)",
        60,
    );
    let init = sb.init();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(children(init), Vec::<u32>::new(), "init started something");
    let inside = Path::new("/proc").join(init.to_string()).join("root");
    let verdict: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(inside.join("run/eci/kernel-drift.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(verdict["isolation"], "refused", "{verdict}");
    let (status, console) = sb.stop();
    assert_eq!(status.code(), Some(0), "{status:?}\n{console}");
    assert!(
        console.contains("eci-init:   DRIFT kernel.kptr_restrict: wanted >=1, found 0"),
        "{console}"
    );
    assert!(!console.contains("containerd: started"), "{console}");
}
