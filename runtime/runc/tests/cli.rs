//! The binary's surface without root: version for `docker info`, features, and runc-style
//! JSON error logs that containerd forwards to the docker user.

use std::path::Path;
use std::process::{Command, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_eci-runc"))
}

#[test]
fn version_has_the_lines_dockerd_parses() {
    let o = bin().arg("--version").output().unwrap();
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert!(s.starts_with("eci-runc version "), "{s}");
    assert!(s.lines().any(|l| l.starts_with("commit: ")), "{s}");
    assert!(s.lines().any(|l| l.starts_with("spec: ")), "{s}");
}

#[test]
fn features_is_json_with_the_isolation_surface() {
    let o = bin().arg("features").output().unwrap();
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n == "user"));
    assert_eq!(v["linux"]["cgroup"]["v1"], true);
    assert_eq!(v["linux"]["cgroup"]["v2"], true);
}

#[test]
fn errors_go_to_the_log_in_runc_json_shape() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("log.json");
    let o = bin()
        .arg("--root")
        .arg(d.path().join("root"))
        .arg("--log")
        .arg(&log)
        .args(["--log-format", "json", "state", "nope"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(line["level"], "error");
    assert_eq!(line["msg"], "container nope does not exist");
    assert!(line["time"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn forced_delete_of_a_missing_container_succeeds_as_runc_does() {
    // containerd's shim runs `delete --force` again after the task's own delete: runc answers
    // success there, and only an unforced delete of a missing container is an error.
    let d = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        bin()
            .arg("--root")
            .arg(d.path().join("root"))
            .args(args)
            .output()
            .unwrap()
    };
    let forced = run(&["delete", "--force", "gone"]);
    assert!(forced.status.success(), "{forced:?}");
    let plain = run(&["delete", "gone"]);
    assert!(!plain.status.success());
    assert!(String::from_utf8_lossy(&plain.stderr).contains("container gone does not exist"));
    // A create that died before its state was written leaves a folder only: both deletes
    // remove it, and only the forced one reports success (runc's answers).
    for (id, force) in [("half1", true), ("half2", false)] {
        let folder = d.path().join("root").join(id);
        std::fs::create_dir_all(&folder).unwrap();
        let args: Vec<&str> = if force {
            vec!["delete", "--force", id]
        } else {
            vec!["delete", id]
        };
        let o = run(&args);
        assert_eq!(o.status.success(), force, "{id}: {o:?}");
        assert!(!folder.exists(), "{id}: the folder is left");
    }
}

/// eci-runc (and plain runc, to show what an attack does without eci) on an OCI bundle, as
/// containerd's shim drives them. Root and busybox-static are needed; on a laptop without
/// them the tests skip, in CI they fail (eci-test-support).
mod bundle {
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    pub fn prerequisites(runc_too: bool) -> bool {
        // SAFETY: getuid has no preconditions.
        let root = unsafe { libc::getuid() } == 0;
        eci_test_support::prerequisite(root, "bundle tests create containers and need root")
            && eci_test_support::prerequisite(
                Path::new("/bin/busybox").is_file(),
                "busybox is missing (apt-get install busybox-static)",
            )
            && (!runc_too
                || eci_test_support::prerequisite(
                    Path::new(RUNC).is_file(),
                    "runc is missing (apt-get install runc)",
                ))
    }

    pub const RUNC: &str = "/usr/bin/runc";

    pub struct Bundle {
        pub dir: tempfile::TempDir,
        /// A name unique to this bundle, for cgroups and ids.
        pub name: String,
        pub config: serde_json::Value,
    }

    impl Bundle {
        pub fn new(args: &[&str]) -> Bundle {
            let dir = tempfile::Builder::new()
                .prefix("eci-cli-")
                .tempdir_in("/tmp")
                .unwrap();
            let name = dir
                .path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .replace(|c: char| !c.is_ascii_alphanumeric(), "");
            let root = dir.path().join("bundle/rootfs");
            for sub in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
                std::fs::create_dir_all(root.join(sub)).unwrap();
            }
            std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
            for a in [
                "sh", "sleep", "cat", "echo", "true", "ls", "stat", "head", "wc", "test",
            ] {
                std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
            }
            let config = serde_json::json!({
                "ociVersion": "1.0.2",
                "process": {"user": {"uid": 0, "gid": 0}, "args": args, "cwd": "/",
                    "env": ["PATH=/bin"],
                    "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]}},
                "root": {"path": "rootfs"},
                "hostname": "cli",
                "mounts": [
                    {"destination": "/proc", "type": "proc", "source": "proc"},
                    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]}
                ],
                "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
                          "cgroupsPath": format!("/eci/cli-{name}")}
            });
            let b = Bundle { dir, name, config };
            b.save();
            b
        }

        pub fn save(&self) {
            std::fs::write(
                self.dir.path().join("bundle/config.json"),
                serde_json::to_vec_pretty(&self.config).unwrap(),
            )
            .unwrap();
        }

        pub fn bundle(&self) -> String {
            self.dir.path().join("bundle").display().to_string()
        }

        pub fn audit_path(&self) -> PathBuf {
            self.dir.path().join("audit/eci-runc.log")
        }

        pub fn eci(&self, args: &[&str]) -> Command {
            let d = self.dir.path();
            let mut c = Command::new(env!("CARGO_BIN_EXE_eci-runc"));
            // This checkout's own supervisor, not the machine's default socket.
            c.env(
                "ECI_SUPERVISOR_SOCKET",
                eci_test_support::checkout_supervisor_socket(Path::new(env!(
                    "CARGO_BIN_EXE_eci-runc"
                ))),
            )
            .env(
                "ECI_VIEWS_ROOT",
                eci_test_support::checkout_views_root(Path::new(env!("CARGO_BIN_EXE_eci-runc"))),
            )
            .env("ECI_RUNC_STATE_DIR", d.join("ids"))
            .env("ECI_RUNC_POLICY", d.join("no-policy.json"))
            .env("ECI_RUNC_AUDIT_LOG", self.audit_path())
            .arg("--root")
            .arg(d.join("state"))
            .arg("--log")
            .arg(d.join("log.json"))
            .args(["--log-format", "json"])
            .args(args);
            c
        }

        /// `create` with stdio that does not keep the test's pipes open: the container's init
        /// holds its stdio until `start` (and after), so a pipe would never reach EOF. The
        /// outcome is in the exit status and the JSON log.
        pub fn eci_create(&self, id: &str) -> std::process::ExitStatus {
            self.eci(&["create", "--bundle", &self.bundle(), id])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap()
        }

        pub fn eci_ok(&self, args: &[&str]) -> String {
            let o = self.eci(args).stdin(Stdio::null()).output().unwrap();
            assert!(
                o.status.success(),
                "eci-runc {args:?}: {}{}",
                String::from_utf8_lossy(&o.stderr),
                self.log()
            );
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        }

        pub fn runc(&self, args: &[&str]) -> Command {
            let mut c = Command::new(RUNC);
            c.arg("--root").arg(self.dir.path().join("runc")).args(args);
            c
        }

        pub fn log(&self) -> String {
            std::fs::read_to_string(self.dir.path().join("log.json")).unwrap_or_default()
        }

        pub fn audit(&self) -> Vec<serde_json::Value> {
            std::fs::read_to_string(self.audit_path())
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        }

        pub fn ranges(&self) -> String {
            std::fs::read_to_string(self.dir.path().join("ids/ranges.json")).unwrap_or_default()
        }

        pub fn eci_pid(&self, id: &str) -> i32 {
            let st: serde_json::Value = serde_json::from_str(&self.eci_ok(&["state", id])).unwrap();
            st["pid"].as_i64().unwrap() as i32
        }

        /// A refused create leaves nothing: no state folder, no id range.
        pub fn assert_nothing_left(&self, id: &str) {
            assert!(
                !self.dir.path().join("state").join(id).exists(),
                "state folder of {id} left"
            );
            assert!(!self.ranges().contains(id), "range left: {}", self.ranges());
        }
    }

    impl Drop for Bundle {
        fn drop(&mut self) {
            // Containers a failed test left behind.
            for id in ["c1", "c2", "c3", "r1", "r2"] {
                let _ = self
                    .eci(&["delete", "--force", id])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                let _ = self
                    .runc(&["delete", "--force", id])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }

    /// Every cgroup hierarchy folder for `rel` (v1 controllers, name=systemd, the unified one).
    pub fn cgroup_dirs(rel: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            out.push(Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/')));
            return out;
        }
        for d in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            out.push(d.path().join(rel.trim_start_matches('/')));
        }
        out
    }

    /// Remove the (empty) cgroup folders of `rel` a test made or a runtime left.
    pub fn remove_cgroup(rel: &str) {
        for d in cgroup_dirs(rel) {
            let _ = std::fs::remove_dir(d);
        }
    }

    /// The cgroup of `pid` in the hierarchy with `controller` (v1) or the unified one.
    pub fn cgroup_of(pid: i32, controller: &str) -> String {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        text.lines()
            .find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, ctl, path) = (f.next()?, f.next()?, f.next()?);
                (ctl.split(',').any(|c| c == controller)
                    || (ctl.is_empty() && controller.is_empty()))
                .then(|| path.to_string())
            })
            .unwrap_or_default()
    }

    pub fn owner(p: &Path) -> (u32, u32) {
        let m = std::fs::metadata(p).unwrap();
        (m.uid(), m.gid())
    }
}

use bundle::{cgroup_dirs, cgroup_of, owner, prerequisites, remove_cgroup, Bundle};

/// The folder of cgroup `rel` in the pids hierarchy (v1), or the unified one.
fn pids_dir(rel: &str) -> std::path::PathBuf {
    let dirs = cgroup_dirs(rel);
    dirs.iter()
        .find(|d| d.starts_with("/sys/fs/cgroup/pids"))
        .unwrap_or(&dirs[0])
        .clone()
}

/// SPEC P5, S5. Plain runc puts a container wherever `linux.cgroupsPath` says: `..` leaves the
/// parent the engine chose, and a cgroup already holding processes is adopted. eci-runc
/// refuses all three (`..`, outside `eciRunc.cgroupParents`, in use), leaves no range or state
/// behind, does not touch the processes of the cgroup in use, and writes each refusal to its
/// audit log as a JSON line in the guard's shape.
#[test]
fn cgroups_path_escapes_and_cgroups_in_use_are_refused() {
    if !prerequisites(true) {
        return;
    }
    let mut b = Bundle::new(&["sleep", "300"]);
    let name = b.name.clone();
    let outside = format!("/eci-cli-{name}");
    let escape = format!("/docker/..{outside}");

    // Plain runc: `..` takes the container out of /docker, and a second container is put in
    // the first one's cgroup.
    b.config["linux"]["cgroupsPath"] = escape.clone().into();
    b.save();
    let st = b
        .runc(&["create", "--bundle", &b.bundle(), "r1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "plain runc create failed");
    let state: serde_json::Value =
        serde_json::from_slice(&b.runc(&["state", "r1"]).output().unwrap().stdout).unwrap();
    let r1 = state["pid"].as_i64().unwrap() as i32;
    assert_eq!(cgroup_of(r1, "pids"), outside);
    println!("plain runc: cgroupsPath {escape:?} put the container in {outside} (outside /docker)");
    let st = b
        .runc(&["create", "--bundle", &b.bundle(), "r2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "plain runc create of r2 failed");
    let procs = std::fs::read_to_string(pids_dir(&outside).join("cgroup.procs")).unwrap();
    assert_eq!(procs.lines().count(), 2, "{procs}");
    println!("plain runc: a second container was adopted into the first one's cgroup: {procs:?}");
    for id in ["r1", "r2"] {
        let _ = b.runc(&["delete", "--force", id]).output();
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    remove_cgroup(&outside);

    // eci-runc: `..`.
    assert!(!b.eci_create("c1").success());
    let log = b.log();
    assert!(
        log.contains(&format!(
            "linux.cgroupsPath \\\"{escape}\\\" has a \\\"..\\\" component"
        )),
        "{log}"
    );
    b.assert_nothing_left("c1");
    assert!(cgroup_dirs(&outside).iter().all(|d| !d.exists()));

    // Outside the allowed parents.
    b.config["linux"]["cgroupsPath"] = outside.clone().into();
    b.save();
    assert!(!b.eci_create("c2").success());
    assert!(
        b.log()
            .contains("is outside the cgroup parents containers may use"),
        "{}",
        b.log()
    );
    b.assert_nothing_left("c2");

    // A cgroup below /docker that already holds a process.
    let in_use = format!("/docker/eci-cli-{name}");
    let pids_dir = pids_dir(&in_use);
    std::fs::create_dir_all(&pids_dir).unwrap();
    let mut victim = Command::new("sleep").arg("300").spawn().unwrap();
    std::fs::write(pids_dir.join("cgroup.procs"), victim.id().to_string()).unwrap();
    b.config["linux"]["cgroupsPath"] = in_use.clone().into();
    b.save();
    assert!(!b.eci_create("c3").success());
    assert!(b.log().contains("already holds processes"), "{}", b.log());
    b.assert_nothing_left("c3");
    // The failed create did not kill the cgroup's process or remove its cgroup.
    assert!(
        victim.try_wait().unwrap().is_none(),
        "the process in the cgroup was killed"
    );
    assert!(std::fs::read_to_string(pids_dir.join("cgroup.procs"))
        .unwrap()
        .contains(&victim.id().to_string()));
    victim.kill().unwrap();
    victim.wait().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    remove_cgroup(&in_use);

    // Each refusal is one audit line.
    let audit = b.audit();
    assert_eq!(audit.len(), 3, "{audit:?}");
    for (rec, id) in audit.iter().zip(["c1", "c2", "c3"]) {
        println!("audit: {rec}");
        assert_eq!(rec["event"], "create");
        assert_eq!(rec["decision"], "refuse");
        assert_eq!(rec["container"], id);
        assert_eq!(rec["rules"], serde_json::json!(["P5"]));
        assert!(rec["message"]
            .as_str()
            .unwrap()
            .contains("linux.cgroupsPath"));
        let t = rec["time"].as_str().unwrap();
        assert!(
            t.len() == 24 && t.ends_with('Z') && &t[10..11] == "T",
            "{t}"
        );
    }
}

/// `process.oomScoreAdj` is applied: /proc/<init>/oom_score_adj reads the spec's value before
/// and after `start` (it used to stay 0: the init tried to write it after becoming container
/// root, when the file belongs to unmapped VM root).
#[test]
fn oom_score_adj_is_applied() {
    if !prerequisites(false) {
        return;
    }
    let mut b = Bundle::new(&["sleep", "300"]);
    b.config["process"]["oomScoreAdj"] = 500.into();
    b.save();
    assert!(b.eci_create("c1").success(), "{}", b.log());
    let pid = b.eci_pid("c1");
    let adj = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap();
    assert_eq!(adj.trim(), "500");
    b.eci_ok(&["start", "c1"]);
    let adj = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap();
    assert_eq!(adj.trim(), "500");
    println!("/proc/{pid}/oom_score_adj = {}", adj.trim());
    assert!(!b.log().contains("oom"), "{}", b.log());
    b.eci_ok(&["delete", "--force", "c1"]);
}

/// SPEC P3, P8: a safe device at a custom path is there (a bind of the VM's node, usable);
/// a device outside the safe set is left out with one warning line and an audit record.
#[test]
fn safe_devices_at_custom_paths_exist_and_others_are_dropped() {
    if !prerequisites(false) {
        return;
    }
    let mut b = Bundle::new(&["sleep", "300"]);
    b.config["linux"]["devices"] = serde_json::json!([
        {"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 438},
        {"path": "/dev/custom/zero2", "type": "c", "major": 1, "minor": 5},
        {"path": "/dev/mem", "type": "c", "major": 1, "minor": 1},
        {"path": "/dev/sda-like", "type": "b", "major": 8, "minor": 0}
    ]);
    b.save();
    assert!(b.eci_create("c1").success(), "{}", b.log());
    b.eci_ok(&["start", "c1"]);
    let out = b.eci_ok(&[
        "exec",
        "c1",
        "sh",
        "-c",
        "stat -c '%F %t:%T' /dev/mynull /dev/custom/zero2; echo x > /dev/mynull && echo wrote; \
         head -c 8 /dev/custom/zero2 | wc -c; test -e /dev/mem || echo no-mem; \
         test -e /dev/sda-like || echo no-sda",
    ]);
    println!("{out}");
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        vec![
            "character special file 1:3",
            "character special file 1:5",
            "wrote",
            "8",
            "no-mem",
            "no-sda"
        ]
    );
    let log = b.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("not available in isolated containers"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("2 devices") && warnings[0].contains("/dev/mem (c 1:1)"));
    assert!(
        warnings[0].contains("/dev/sda-like (b 8:0)"),
        "{}",
        warnings[0]
    );
    let audit = b.audit();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["decision"], "rewrite");
    assert_eq!(audit[0]["rules"], serde_json::json!(["P3", "P8"]));
    assert!(audit[0]["message"].as_str().unwrap().contains("/dev/mem"));
    b.eci_ok(&["delete", "--force", "c1"]);
}

/// `--privileged` makes dockerd list every device node of the VM: the ones outside the safe
/// set are left out with ONE warning line (SPEC P3, P8), whatever their number.
#[test]
fn a_privileged_device_list_gives_one_warning_line() {
    if !prerequisites(false) {
        return;
    }
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut b = Bundle::new(&["true"]);
    let mut devices = Vec::new();
    for e in std::fs::read_dir("/dev").unwrap().flatten() {
        let Ok(m) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        let kind = if m.file_type().is_char_device() {
            "c"
        } else if m.file_type().is_block_device() {
            "b"
        } else {
            continue;
        };
        devices.push(serde_json::json!({"path": e.path(), "type": kind,
            "major": libc::major(m.rdev()), "minor": libc::minor(m.rdev())}));
    }
    assert!(
        devices.len() > 20,
        "only {} device nodes here",
        devices.len()
    );
    b.config["linux"]["devices"] = devices.into();
    b.save();
    assert!(b.eci_create("c1").success(), "{}", b.log());
    let log = b.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("not available in isolated containers"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    println!("{}", lines[0]);
    assert!(lines[0].contains(" more"), "{}", lines[0]);
    assert!(lines[0].len() < 2000, "{}", lines[0]);
    assert_eq!(b.audit().len(), 1);
    b.eci_ok(&["delete", "--force", "c1"]);
}

/// Plain runc chowns a root-owned regular file given as stdout to the container's user (runc
/// `create`, as a shim runs it); eci-runc leaves it root-owned and only gives the container
/// the pipes, sockets and ptys a shim hands over.
#[test]
fn a_regular_root_owned_stdout_file_is_not_chowned() {
    if !prerequisites(true) {
        return;
    }
    let mut b = Bundle::new(&["sh", "-c", "echo hello"]);
    let out = b.dir.path().join("out");
    let fresh = |p: &Path| {
        let _ = std::fs::remove_file(p);
        std::fs::write(p, "").unwrap();
        assert_eq!(owner(p), (0, 0));
        std::fs::File::options().append(true).open(p).unwrap()
    };

    // Plain runc, container user 1000, no user namespace.
    b.config["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000});
    b.config["linux"]["cgroupsPath"] = format!("/eci-cli-{}", b.name).into();
    b.save();
    let st = b
        .runc(&["create", "--bundle", &b.bundle(), "r1"])
        .stdin(Stdio::null())
        .stdout(fresh(&out))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let runc_owner = owner(&out);
    let _ = b.runc(&["delete", "--force", "r1"]).output();
    std::thread::sleep(std::time::Duration::from_millis(200));
    remove_cgroup(&format!("/eci-cli-{}", b.name));
    println!("plain runc: a root-owned stdout file now belongs to {runc_owner:?}");
    assert_eq!(
        runc_owner.0, 1000,
        "plain runc did not chown the stdout file"
    );

    // eci-runc, container root (VM id >= 100000).
    b.config["process"]["user"] = serde_json::json!({"uid": 0, "gid": 0});
    b.config["linux"]["cgroupsPath"] = format!("/eci/cli-{}", b.name).into();
    b.save();
    let o = b
        .eci(&["create", "--bundle", &b.bundle(), "c1"])
        .stdin(Stdio::null())
        .stdout(fresh(&out))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(o.success(), "{}", b.log());
    assert_eq!(
        owner(&out),
        (0, 0),
        "eci-runc chowned a regular stdout file"
    );
    b.eci_ok(&["start", "c1"]);
    for _ in 0..200 {
        if std::fs::read_to_string(&out).unwrap() == "hello\n" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // The container still writes through the descriptor it was given.
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "hello\n");
    assert_eq!(owner(&out), (0, 0));
    println!("eci-runc: the stdout file stays {:?}", owner(&out));
    b.eci_ok(&["delete", "--force", "c1"]);
}

/// SPEC U3: `exec` into a container whose init pid now belongs to a VM process (the pid was
/// reused; here the state is pointed at a process of the test, start time included) is
/// refused, not run as "container root" in the VM's namespaces, and audited.
#[test]
fn exec_into_a_reused_pid_in_the_vms_namespaces_is_refused() {
    if !prerequisites(false) {
        return;
    }
    let b = Bundle::new(&["sleep", "300"]);
    assert!(b.eci_create("c1").success(), "{}", b.log());
    b.eci_ok(&["start", "c1"]);
    b.eci_ok(&["exec", "c1", "true"]);
    // The init "exits" and a VM process gets its pid.
    let mut vm_proc = Command::new("sleep").arg("300").spawn().unwrap();
    let pid = vm_proc.id() as i32;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let start: u64 = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    let state_file = b.dir.path().join("state/c1/state.json");
    let saved = std::fs::read(&state_file).unwrap();
    let mut st: serde_json::Value = serde_json::from_slice(&saved).unwrap();
    st["pid"] = pid.into();
    st["pidStart"] = start.into();
    std::fs::write(&state_file, serde_json::to_vec(&st).unwrap()).unwrap();
    let marker = b.dir.path().join("ran-as-vm-root");
    let o = b
        .eci(&[
            "exec",
            "c1",
            "/bin/sh",
            "-c",
            &format!("touch {}", marker.display()),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(!marker.exists(), "the exec ran in the VM");
    let log = b.log();
    assert!(log.contains("VM's user namespace"), "{log}");
    let audit = b.audit();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["event"], "exec");
    assert_eq!(audit[0]["rules"], serde_json::json!(["U3", "A6"]));
    println!("audit: {}", audit[0]);
    vm_proc.kill().unwrap();
    vm_proc.wait().unwrap();
    std::fs::write(&state_file, saved).unwrap();
    b.eci_ok(&["delete", "--force", "c1"]);
}
