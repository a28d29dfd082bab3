//! A private dockerd whose default runtime is eci-runc, for the runtime's end-to-end suite.
//!
//! Each [`RuncEngine`] has its own data root, exec root, socket, pidfile, containerd
//! namespaces, eci-runc policy and id-allocator folder under one temporary folder, runs without
//! a bridge or iptables rules, and is torn down by `Drop` even when the test panics: containers
//! removed, dockerd stopped, leftover mounts under the folder detached, the folder removed.
//!
//! Against the VM (SPEC V7): with `ECI_E2E_DOCKER_HOST=unix://PATH` set (`eci-build test` sets
//! it to its relay of the VM's guard), [`RuncEngine::start`] starts nothing and drives that
//! engine instead; the test image is imported through it (SPEC H4) when it is missing. What
//! only the build machine's engine shows (the allocator's file, the data root, plain runc)
//! answers [`RuncEngine::on_this_machine`]; a test that cannot run without it calls
//! [`not_run_in_vm`] first and is listed as not run with its reason.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{is_root, prerequisite, workspace_root};

/// The command of an imported test image whose containers are each given theirs
/// ([`RuncEngine::import_rootfs`]).
pub const SHELL_CMD: &str = r#"CMD ["/bin/sh"]"#;

/// The test image: a busybox-static rootfs imported with `docker import`.
pub const IMAGE: &str = "eci-busybox:test";

/// Debian's runc, registered under this name (`--runtime plain-runc`): `runc` itself is eci-runc
/// on the engine's PATH, as in the VM.
pub const PLAIN_RUNC: &str = "plain-runc";

/// The VM engine the suites drive instead of a private dockerd: the socket
/// `ECI_E2E_DOCKER_HOST` names (`unix://PATH`; the guard's endpoint is a Unix socket here).
pub fn vm_engine() -> Option<PathBuf> {
    let v = std::env::var(eci_build::suites::VM_DOCKER_HOST_ENV).ok()?;
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    match v.strip_prefix("unix://") {
        Some(path) => Some(PathBuf::from(path)),
        None => panic!(
            "{}={v}: the suites reach an engine through a Unix socket (unix://PATH)",
            eci_build::suites::VM_DOCKER_HOST_ENV
        ),
    }
}

/// Whether this run drives the VM's engine ([`vm_engine`]).
pub fn in_vm() -> bool {
    vm_engine().is_some()
}

/// In a run against the VM: prints why this test does not run there (`eci-build test` lists
/// it as not run with that reason) and returns true, so the test returns. Here: false.
pub fn not_run_in_vm(reason: &str) -> bool {
    if !in_vm() {
        return false;
    }
    println!("{} {reason}", eci_build::suites::NOT_RUN_MARKER);
    true
}

/// What the suites need to drive the VM's engine from here: the docker CLI, busybox and tar
/// for the test image, and the engine answering.
pub fn vm_prerequisites() -> bool {
    let sock = vm_engine().expect("called in a run against the VM");
    prerequisite(
        which("docker").is_some(),
        "docker CLI not found (apt-get install -y docker.io)",
    ) && prerequisite(
        Path::new("/bin/busybox").is_file(),
        "/bin/busybox not found (apt-get install -y busybox-static)",
    ) && prerequisite(which("tar").is_some(), "tar not found")
        && prerequisite(
            crate::guard_engine::ping(&sock),
            &format!(
                "the VM's engine does not answer /_ping on {}",
                sock.display()
            ),
        )
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Install Debian packages that are missing (as root, through apt with the machine's own
/// sources). Returns false when they are still missing.
pub fn ensure_packages(pkgs: &[&str]) -> bool {
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return true;
    }
    if !is_root() {
        return false;
    }
    let _ = Command::new("apt-get").args(["update", "-qq"]).status();
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success());
    ok && missing.iter().all(|p| installed(p))
}

/// The eci-runc binary cargo built next to this test (`cargo test --workspace` builds it, since
/// eci-runc has integration tests of its own).
pub fn eci_runc_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    let p = profile_dir.join("eci-runc");
    if p.is_file() {
        return Some(p);
    }
    let p = workspace_root().join("target/debug/eci-runc");
    p.is_file().then_some(p)
}

/// True when this machine can run the suite; otherwise skips (or fails in CI) with the reason.
pub fn prerequisites() -> bool {
    if in_vm() {
        return vm_prerequisites();
    }
    prerequisite(
        is_root(),
        "the eci-runc engine suite starts dockerd and needs root",
    ) && prerequisite(
        ensure_packages(&["docker.io", "busybox-static"]),
        "docker.io and busybox-static are missing (apt-get install -y docker.io busybox-static)",
    ) && prerequisite(which("dockerd").is_some(), "dockerd not found")
        && prerequisite(which("docker").is_some(), "docker CLI not found")
        && prerequisite(
            eci_runc_binary().is_some(),
            "eci-runc is not built (cargo build -p eci-runc)",
        )
        // eci-runc gives every container its /proc views from eci-views beside it.
        && prerequisite(
            crate::views::views_binary_built(),
            "eci-views is not built beside eci-runc (cargo build -p eci-views)",
        )
}

pub struct RuncEngine {
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    /// The only bind-mount prefix the policy allows (a stand-in for /mnt/host).
    pub share: PathBuf,
    /// eci-runc's id-allocator folder for this engine.
    pub ids: PathBuf,
    /// dockerd's working directory, an empty folder of its own: the kernel resolves a volume's
    /// relative `device` against it, so tests that use one know where it points.
    pub cwd: PathBuf,
    dockerd: Option<Child>,
    /// Driving the VM's engine ([`vm_engine`]): nothing of it lives in `dir`.
    vm: bool,
    /// The name the test gave the engine (the VM's share volume is named after it).
    name: String,
}

impl RuncEngine {
    /// Start dockerd with eci-runc as `eci`, the default runtime, and import the test image.
    pub fn start(name: &str) -> Result<RuncEngine> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("er-{name}-"))
            .tempdir_in("/tmp")
            .context("temporary folder")?;
        let d = dir.path().to_path_buf();
        let share = d.join("share");
        std::fs::create_dir_all(&share)?;
        let cwd = d.join("cwd");
        std::fs::create_dir_all(&cwd)?;
        let mut e = RuncEngine {
            sock: d.join("docker.sock"),
            share,
            ids: d.join("ids"),
            cwd,
            dir,
            dockerd: None,
            vm: false,
            name: name.to_string(),
        };
        if let Some(sock) = vm_engine() {
            e.sock = sock;
            e.vm = true;
            let have = e.docker(&["image", "inspect", "--format", "{{.Id}}", IMAGE]);
            if !have.status.success() {
                e.import_image()?;
            }
            return Ok(e);
        }
        e.write_policy()?;
        e.start_dockerd(name)?;
        e.import_image()?;
        Ok(e)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the engine is the private one started here, whose data root, allocator folder
    /// and plain-runc runtime the test can reach; false against the VM.
    pub fn on_this_machine(&self) -> bool {
        !self.vm
    }

    /// The `-v` value that hands the share folder in at `dest` (append `:ro` as needed). Here
    /// the folder itself is bound. The VM sees no folder of this machine (`eci-build test`
    /// shares none, SPEC H3), so against it the share is a named volume of the VM's engine,
    /// into which the folder's current contents are copied through the endpoint first (`docker
    /// cp`, SPEC H4): write the files before asking for the bind, and ask again after changing
    /// them.
    pub fn share_bind(&self, dest: &str) -> String {
        if !self.vm {
            return format!("{}:{dest}", self.share.display());
        }
        let volume = self.share_volume();
        let holder = format!("{volume}-holder");
        let have = self.docker(&["container", "inspect", "--format", "{{.Id}}", &holder]);
        if !have.status.success() {
            // Never started: `docker cp` reaches a created container's volumes all the same.
            self.ok(&[
                "create",
                "--name",
                &holder,
                "--network",
                "none",
                "-v",
                &format!("{volume}:/share"),
                IMAGE,
                "true",
            ]);
        }
        self.ok(&[
            "cp",
            &format!("{}/.", self.share.display()),
            &format!("{holder}:/share"),
        ]);
        format!("{volume}:{dest}")
    }

    fn share_volume(&self) -> String {
        format!("eci-e2e-share-{}", self.name)
    }

    /// The text of `path` as the machine that runs the engine has it; `None` when it has no
    /// such file. Against the VM it is read by a fresh container of the test image: under eci
    /// its /proc/sys shows the VM's values, but for the knobs eci-views emulates, where a
    /// container that wrote none reads the VM's value too (runtime/views/src/knobs.rs).
    pub fn machine_file(&self, path: &str) -> Option<String> {
        if !self.vm {
            return std::fs::read_to_string(path).ok();
        }
        let o = self.docker(&["run", "--rm", "--network", "none", IMAGE, "cat", path]);
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).to_string())
    }

    /// Whether the test shows its attack under plain runc first (the project's rule for attack
    /// tests). Not against the VM: there eci-runc is the only runtime dockerd and containerd
    /// can reach (SPEC A4), so this prints why and the build machine's run of the same test
    /// carries the baseline.
    pub fn plain_runc_baseline(&self) -> bool {
        if self.vm {
            println!(
                "no plain-runc baseline in the VM: eci-runc is the only runtime its engine can \
                 reach (SPEC A4); the build machine's run of this test shows the attack working"
            );
        }
        !self.vm
    }

    /// A check that needs the build machine's side must not run against the VM, where it could
    /// only pass vacuously (an empty allocator table, say).
    pub fn local_only(&self, what: &str) {
        assert!(
            !self.vm,
            "{what} is on the build machine's engine only; guard the check with on_this_machine()"
        );
    }

    fn write_policy(&self) -> Result<()> {
        let d = self.path();
        let wrapper = write_eci_runc(d, &self.share, &d.join("data"), &self.ids)?;
        // As in the VM, `runc` on dockerd's PATH is eci-runc: dockerd's BuildKit runs RUN steps
        // with whatever `runc` it finds there, not with the default runtime (SPEC D3), and
        // dockerd's own `runc` runtime resolves to it too. Debian's runc stays reachable as
        // `plain-runc` for tests that show an attack against it.
        std::fs::create_dir_all(d.join("bin"))?;
        std::os::unix::fs::symlink(&wrapper, d.join("bin/runc"))?;
        Ok(())
    }

    fn start_dockerd(&mut self, name: &str) -> Result<()> {
        let d = self.path().to_path_buf();
        std::fs::write(d.join("daemon.json"), "{}")?;
        let ns = format!("eci-runc-test-{name}-{}", std::process::id());
        let log = std::fs::File::create(d.join("dockerd.log"))?;
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .arg("--containerd-namespace")
            .arg(&ns)
            .arg("--containerd-plugins-namespace")
            .arg(format!("{ns}-plugins"))
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
            ])
            .arg("--add-runtime")
            .arg(format!("eci={}", d.join("eci-runc").display()))
            .args(["--add-runtime", &format!("{PLAIN_RUNC}=/usr/bin/runc")])
            .args(["--default-runtime", "eci", "--log-level", "warn"])
            .env("PATH", {
                let mut dirs = vec![d.join("bin")];
                dirs.extend(std::env::split_paths(
                    &std::env::var_os("PATH").unwrap_or_default(),
                ));
                std::env::join_paths(dirs)?
            })
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting dockerd")?;
        self.dockerd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self
                .docker(&["version", "--format", "{{.Server.Version}}"])
                .status
                .success()
            {
                return Ok(());
            }
            if let Some(status) = self
                .dockerd
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("dockerd exited with {status}:\n{}", self.dockerd_log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!(
            "dockerd did not answer within 60 s:\n{}",
            self.dockerd_log()
        )
    }

    pub fn dockerd_log(&self) -> String {
        if self.vm {
            return "(dockerd runs in the VM: its log is in the console log)".into();
        }
        std::fs::read_to_string(self.path().join("dockerd.log")).unwrap_or_default()
    }

    /// `docker import` of a root filesystem tarball (an eci-build test image) as `name`, with
    /// the PATH a tarball does not carry and `changes` (Dockerfile lines: the command, more
    /// environment). Against the VM an image stays imported between a suite's tests: one that
    /// is there is kept.
    pub fn import_rootfs(&self, tarball: &Path, name: &str, changes: &[&str]) -> Result<()> {
        if self
            .docker(&["image", "inspect", "--format", "{{.Id}}", name])
            .status
            .success()
        {
            return Ok(());
        }
        let tar = tarball.display().to_string();
        let mut args = vec![
            "import",
            "--change",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ];
        for change in changes {
            args.extend(["--change", change]);
        }
        args.extend([tar.as_str(), name]);
        let out = self.docker(&args);
        if !out.status.success() {
            bail!(
                "docker import {}: {}",
                tarball.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Import a busybox-static rootfs (every applet linked, passwd/group for root) as IMAGE.
    fn import_image(&self) -> Result<()> {
        let tar = self.busybox_tarball()?;
        let out = self.docker(&["import", &tar.display().to_string(), IMAGE]);
        if !out.status.success() {
            bail!("docker import: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// The tarball of IMAGE's root filesystem (`image.tar` in the engine's folder), written
    /// when missing: against the VM an engine that already has the image imports none.
    pub fn busybox_tarball(&self) -> Result<PathBuf> {
        let tar = self.path().join("image.tar");
        if tar.is_file() {
            return Ok(tar);
        }
        let root = self.path().join("image");
        for sub in [
            "bin", "sbin", "etc", "tmp", "proc", "sys", "dev", "root", "usr/bin", "var",
        ] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox"))?;
        let list = Command::new("/bin/busybox").arg("--list").output()?;
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
            }
        }
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        )?;
        std::fs::write(root.join("etc/group"), "root:x:0:\nnobody:x:65534:\n")?;
        let st = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .args(["--numeric-owner", "--owner=0", "--group=0", "-cf"])
            .arg(&tar)
            .arg(".")
            .status()?;
        if !st.success() {
            bail!("tar of the busybox rootfs failed");
        }
        std::fs::remove_dir_all(&root)?;
        Ok(tar)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
            .env("DOCKER_CONFIG", self.path().join("cli"))
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Debian's docker 20.10 CLI (`/usr/bin/docker`), whose `docker build` speaks BuildKit
    /// itself with `DOCKER_BUILDKIT=1` (the newer CLI in /usr/local/bin needs buildx), pointed at
    /// this engine.
    pub fn buildkit_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("/usr/bin/docker");
        c.env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
            .env("DOCKER_CONFIG", self.path().join("cli"))
            .env("DOCKER_BUILDKIT", "1")
            .args(args)
            .stdin(Stdio::null());
        c
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run docker CLI")
    }

    /// `docker ARGS`, asserting success; stdout trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(
            o.status.success(),
            "docker {args:?} failed: {}\n--- dockerd log tail:\n{}",
            String::from_utf8_lossy(&o.stderr),
            tail(&self.dockerd_log(), 30)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// `docker ARGS`, asserting failure; stderr returned.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(
            !o.status.success(),
            "docker {args:?} should have failed; stdout: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).to_string()
    }

    /// The allocator's table of live ranges (start per container id).
    pub fn ranges(&self) -> Vec<(String, u64)> {
        self.local_only("the allocator's table");
        let text = std::fs::read_to_string(self.ids.join("ranges.json")).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        v["ranges"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        (
                            e["id"].as_str().unwrap_or_default().to_string(),
                            e["start"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Parse a `/proc/self/uid_map` line into (inside, outside, count).
pub fn parse_map(text: &str) -> Option<(u64, u64, u64)> {
    let mut it = text.split_whitespace().map(|s| s.parse::<u64>().ok());
    Some((it.next()??, it.next()??, it.next()??))
}

/// Writes `<dir>/policy.json` (only `share` may be bound, `data_root` is the engine's) and an
/// executable `<dir>/eci-runc` wrapper that runs eci-runc with that policy and the allocator
/// folder `ids`: an engine passes no environment of its own to a runtime it runs by path.
/// The mount-vetting supervisor and the /proc views server eci-runc starts when none answers
/// live in `dir` too (`supervisor/`, `views/`), so each engine has its own, built from this
/// checkout, instead of sharing the machine's `/run/eci` ones with other engines and other
/// checkouts; [`stop_engine_daemons`] ends them. Returns the wrapper's path.
pub fn write_eci_runc(dir: &Path, share: &Path, data_root: &Path, ids: &Path) -> Result<PathBuf> {
    let policy = serde_json::json!({
        "version": 1,
        "isolation": true,
        "bindMounts": {"allowedVmPrefixes": [share], "sharedHostPaths": []},
        "dockerSocketMount": {"images": [], "allowDerivedImages": false,
                              "commandList": {"type": "deny", "commands": []}},
        "eciRunc": {"engineDataRoots": [data_root], "auditLog": dir.join("audit.log")}
    });
    std::fs::write(dir.join("policy.json"), serde_json::to_vec_pretty(&policy)?)?;
    let bin = eci_runc_binary().context("eci-runc binary")?;
    let wrapper = dir.join("eci-runc");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexport ECI_RUNC_POLICY={}\nexport ECI_RUNC_STATE_DIR={}\n\
             export ECI_SUPERVISOR_SOCKET={}\nexport ECI_VIEWS_ROOT={}\nexec {} \"$@\"\n",
            dir.join("policy.json").display(),
            ids.display(),
            dir.join("supervisor/supervisor.sock").display(),
            dir.join("views").display(),
            bin.display()
        ),
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
    Ok(wrapper)
}

/// SIGTERM to a daemon the test started, SIGKILL after 20 s, then reaped.
pub fn stop_daemon(mut c: Child) {
    // SAFETY: signalling our own child.
    unsafe { libc_kill(c.id() as i32, 15) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if c.try_wait().ok().flatten().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// Kills (SIGKILL) the daemons eci-runc started for the engine in `dir`: the processes whose
/// command line or environment names `dir` (its supervisor is started with `--socket
/// DIR/supervisor/...`, its views server inherits `ECI_VIEWS_ROOT=DIR/views`), so no engine
/// leaves daemons behind for the next test or the next checkout. Repeated until a pass finds
/// none: a daemon may start another while /proc is read (the supervisor its fd store, eci-runc
/// a views server), at a pid the pass has already gone by; escapes runs left an fd store and a
/// views mount behind that way.
pub fn stop_engine_daemons(dir: &Path) {
    for _ in 0..50 {
        if kill_engine_daemons(dir) == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One pass of [`stop_engine_daemons`]: how many processes it signalled.
fn kill_engine_daemons(dir: &Path) -> usize {
    // With the slash, another engine folder whose name merely starts with this one is not hit.
    let needle = format!("{}/", dir.display());
    let me = std::process::id().to_string();
    let mut hit = 0;
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for p in procs.flatten() {
        let pid = p.file_name().to_string_lossy().to_string();
        if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let names_dir = ["cmdline", "environ"].iter().any(|f| {
            std::fs::read(p.path().join(f))
                .map(|b| String::from_utf8_lossy(&b).contains(&needle))
                .unwrap_or(false)
        });
        if names_dir {
            if let Ok(n) = pid.parse::<i32>() {
                // SAFETY: kill(2) on a pid read from /proc; at worst it has exited (ESRCH).
                if unsafe { libc_kill(n, 9) } == 0 {
                    hit += 1;
                }
            }
        }
    }
    hit
}

/// Detaches whatever is still mounted below `dir`, deepest first, so its removal succeeds.
pub fn unmount_below(dir: &Path) {
    let prefix = dir.display().to_string();
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(|s| s.replace("\\040", " ")))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = Command::new("umount").args(["-l", &m]).status();
    }
}

impl Drop for RuncEngine {
    fn drop(&mut self) {
        let ids = self.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        if self.vm {
            let _ = self.docker(&["volume", "rm", "-f", &self.share_volume()]);
            return;
        }
        if let Some(c) = self.dockerd.take() {
            stop_daemon(c);
        }
        stop_engine_daemons(self.path());
        unmount_below(self.path());
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

impl RuncEngine {
    /// The allocator's table as (range start, every container id holding it): the allocating
    /// container or the member that took its place, then the containers that joined its user
    /// namespace (SPEC U2).
    pub fn range_holders(&self) -> Vec<(u64, Vec<String>)> {
        self.local_only("the allocator's table");
        let text = std::fs::read_to_string(self.ids.join("ranges.json")).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let id = |e: &serde_json::Value| e["id"].as_str().unwrap_or_default().to_string();
        v["ranges"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        let mut ids = vec![id(e)];
                        if let Some(m) = e["members"].as_array() {
                            ids.extend(m.iter().map(id));
                        }
                        (e["start"].as_u64().unwrap_or(0), ids)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The full id of container `name`.
    pub fn container_id(&self, name: &str) -> String {
        self.ok(&["inspect", "-f", "{{.Id}}", name])
    }
}
