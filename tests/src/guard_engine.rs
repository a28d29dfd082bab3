//! A private dockerd with eci-guard in front of it, for the guard's end-to-end suite.
//!
//! Each [`GuardEngine`] has its own data root, exec root, sockets, pidfile and containerd
//! namespaces under one temporary folder, runs without a bridge or iptables rules, and is torn
//! down by `Drop` even when the test panics. The guard runs in-process (the `eci_guard`
//! library on its own tokio runtime), so the suite needs no prebuilt binary.
//!
//! Test fixture, not the product: the test dockerd registers a runtime named `eci` that is
//! plain runc, because eci-runc may not be installed on this machine. The guard's job is the
//! rewrite to the runtime named `eci`; which binary that name runs is the VM's daemon.json.
//!
//! Against the VM (SPEC V7, `ECI_E2E_DOCKER_HOST` set, see `runc_engine::vm_engine`): the
//! guard is the VM's own with the image's policy, `guard_sock` is the relayed endpoint, and
//! nothing is started here. dockerd's own socket, the container listener, the audit log and the
//! policy file are inside the VM: [`GuardEngine::on_this_machine`] tells, and the methods that
//! need them refuse rather than pass vacuously. Test images are imported through the guard.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{is_root, prerequisite};

/// Where a program is on PATH, if anywhere.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// True when this machine can run the suite; otherwise skips (or fails in CI) with the reason.
pub fn engine_prerequisites() -> bool {
    if crate::runc_engine::in_vm() {
        return crate::runc_engine::vm_prerequisites();
    }
    prerequisite(
        is_root(),
        "the guard engine suite starts dockerd and needs root",
    ) && prerequisite(
        which("dockerd").is_some(),
        "dockerd not found (apt-get install -y docker.io)",
    ) && prerequisite(
        which("docker").is_some(),
        "docker CLI not found (apt-get install -y docker.io)",
    ) && prerequisite(
        which("runc").is_some(),
        "runc not found (apt-get install -y runc)",
    ) && prerequisite(
        Path::new("/bin/busybox").is_file(),
        "/bin/busybox not found (apt-get install -y busybox-static)",
    ) && prerequisite(which("tar").is_some(), "tar not found")
}

/// One HTTP answer read with [`http`].
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    pub status: u16,
    pub body: String,
}

impl HttpAnswer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    /// The `message` of Docker's error shape.
    pub fn message(&self) -> String {
        self.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

pub struct GuardEngine {
    pub dir: tempfile::TempDir,
    pub dockerd_sock: PathBuf,
    pub guard_sock: PathBuf,
    pub container_sock: PathBuf,
    pub audit_log: PathBuf,
    pub settings: PathBuf,
    /// The folder bind mounts may come from (the policy's only allowed prefix).
    pub share: PathBuf,
    dockerd: Option<Child>,
    guard: Option<InProcessGuard>,
    /// Driving the VM's guard: dockerd, the audit log and the policy are the VM's.
    vm: bool,
}

struct InProcessGuard {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for InProcessGuard {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A policy.json in the shape eci-vm-config renders, with the share as the only bind prefix.
pub fn policy_json(
    share: &Path,
    images: &[&str],
    derived: bool,
    list: &str,
    commands: &[&str],
) -> Value {
    serde_json::json!({
        "version": 1,
        "isolation": true,
        "dockerdSocket": "/run/eci/dockerd.sock",
        "runtime": {"name": "eci", "path": "/usr/bin/eci-runc"},
        "bindMounts": {"allowedVmPrefixes": [share], "sharedHostPaths": []},
        "dockerSocketMount": {
            "images": images,
            "allowDerivedImages": derived,
            "commandList": {"type": list, "commands": commands}
        }
    })
}

impl GuardEngine {
    /// Start dockerd, import `images` (busybox, each with a distinct marker file) straight into
    /// it, then start the guard with `policy`. Images exist before the guard, as the admin's
    /// images do in the VM, so allowed ones are pinned at start.
    pub fn start(
        name: &str,
        images: &[&str],
        policy: impl FnOnce(&Path) -> Value,
    ) -> Result<GuardEngine> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("eg-{name}-"))
            .tempdir_in("/tmp")
            .context("temporary folder")?;
        let d = dir.path().to_path_buf();
        let share = d.join("share");
        std::fs::create_dir_all(&share)?;
        let mut e = GuardEngine {
            dockerd_sock: d.join("dockerd.sock"),
            guard_sock: d.join("guard.sock"),
            container_sock: d.join("guard-c.sock"),
            audit_log: d.join("audit.log"),
            settings: d.join("policy.json"),
            share,
            dir,
            dockerd: None,
            guard: None,
            vm: false,
        };
        if let Some(sock) = crate::runc_engine::vm_engine() {
            // The VM's policy is the image's; a test that runs there asked for the plain one.
            let _ = policy;
            e.guard_sock = sock;
            e.vm = true;
            for image in images {
                let have = e.docker(&["image", "inspect", "--format", "{{.Id}}", image]);
                if !have.status.success() {
                    e.import_image(image)?;
                }
            }
            return Ok(e);
        }
        e.start_dockerd(name)?;
        for image in images {
            e.import_image(image)?;
        }
        let p = policy(&e.share);
        e.write_policy(&p)?;
        e.start_guard()?;
        Ok(e)
    }

    fn start_dockerd(&mut self, name: &str) -> Result<()> {
        let d = self.dir.path();
        std::fs::write(d.join("daemon.json"), "{}")?;
        let runc = which("runc").context("runc")?;
        let ns = format!("eci-guard-test-{name}-{}", std::process::id());
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
            .arg(format!("unix://{}", self.dockerd_sock.display()))
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
            .arg(format!("eci={}", runc.display()))
            .args(["--log-level", "warn"])
            // dockerd resolves a local volume's relative `device` against its working
            // directory: `/` in the VM, the engine's own folder here (tests plant a stand-in
            // for a VM folder there).
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting dockerd")?;
        self.dockerd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if ping(&self.dockerd_sock) {
                return Ok(());
            }
            if let Some(status) = self
                .dockerd
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("dockerd exited with {status}:\n{}", self.dockerd_log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "dockerd did not answer within 60 s:\n{}",
            self.dockerd_log()
        )
    }

    /// Whether dockerd, the guard, its audit log and its policy are the ones started here;
    /// false against the VM.
    pub fn on_this_machine(&self) -> bool {
        !self.vm
    }

    /// A check that needs the build machine's side must not run against the VM, where it could
    /// only pass vacuously or test nothing.
    fn local_only(&self, what: &str) {
        assert!(
            !self.vm,
            "{what} is on the build machine's engine only; guard the check with on_this_machine()"
        );
    }

    pub fn dockerd_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    pub fn write_policy(&self, policy: &Value) -> Result<()> {
        self.local_only("the guard's policy file");
        // Through a rename, as any writer of policy.json must, so the guard never reads half.
        let tmp = self.dir.path().join(".policy.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(policy)?)?;
        std::fs::rename(&tmp, &self.settings)?;
        Ok(())
    }

    /// Write raw settings text (for malformed-file tests).
    pub fn write_settings_text(&self, text: &str) -> Result<()> {
        self.local_only("the guard's policy file");
        let tmp = self.dir.path().join(".policy.json.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.settings)?;
        Ok(())
    }

    pub fn start_guard(&mut self) -> Result<()> {
        self.local_only("starting the guard");
        use eci_guard::proxy::{run, Config, Listener};
        let mut config = Config::new(
            vec![
                Listener {
                    path: self.guard_sock.clone(),
                    role: eci_guard::Role::User,
                },
                Listener {
                    path: self.container_sock.clone(),
                    role: eci_guard::Role::Container,
                },
            ],
            self.dockerd_sock.clone(),
            self.settings.clone(),
            self.audit_log.clone(),
        );
        config.state_dir = Some(self.dir.path().join("guard-state"));
        config.settings_poll = Duration::from_millis(100);
        config.upstream_wait = Duration::from_secs(10);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<String>();
        let thread = std::thread::spawn(move || {
            // The runtime flavour the eci-guard binary uses.
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(e.to_string());
                    return;
                }
            };
            rt.block_on(async move {
                tokio::select! {
                    r = run(config) => {
                        let _ = ready_tx.send(format!("guard stopped: {r:?}"));
                    }
                    _ = rx => {}
                }
            });
        });
        self.guard = Some(InProcessGuard {
            stop: Some(tx),
            thread: Some(thread),
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if ping(&self.guard_sock) && ping(&self.container_sock) {
                return Ok(());
            }
            if let Ok(msg) = ready_rx.try_recv() {
                bail!("eci-guard did not start: {msg}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("eci-guard did not answer within 30 s")
    }

    pub fn stop_guard(&mut self) {
        if self.vm {
            return;
        }
        self.guard = None;
        let _ = std::fs::remove_file(&self.guard_sock);
        let _ = std::fs::remove_file(&self.container_sock);
    }

    fn cli(
        &self,
        sock: &Path,
        args: &[&str],
        stdin: Option<&[u8]>,
        env: &[(&str, &str)],
    ) -> Output {
        let mut cmd = Command::new("docker");
        cmd.env("DOCKER_HOST", format!("unix://{}", sock.display()))
            .env("DOCKER_CONFIG", self.dir.path().join("docker-config"))
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("docker CLI runs");
        if let Some(input) = stdin {
            let mut s = child.stdin.take().expect("piped stdin");
            s.write_all(input).expect("write stdin");
        }
        child.wait_with_output().expect("docker CLI finishes")
    }

    /// The docker CLI through the guard.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.cli(&self.guard_sock, args, None, &[])
    }

    pub fn docker_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.cli(&self.guard_sock, args, None, env)
    }

    pub fn docker_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        self.cli(&self.guard_sock, args, Some(input), &[])
    }

    /// The docker CLI straight to dockerd, bypassing the guard (setup and checks only).
    pub fn docker_direct(&self, args: &[&str]) -> Output {
        self.local_only("dockerd's own socket");
        self.cli(&self.dockerd_sock, args, None, &[])
    }

    /// Raw HTTP on a socket (JSON body when given): status and body.
    pub fn curl(&self, sock: &Path, method: &str, path: &str, body: Option<&str>) -> HttpAnswer {
        let ct = body.map(|_| "application/json");
        http(
            sock,
            method,
            path,
            ct,
            body.unwrap_or("").as_bytes().to_vec(),
        )
    }

    /// A read-only query of the engine (inspect, ps, network inspect): straight to dockerd here,
    /// through the guard against the VM, where dockerd's socket is out of reach.
    pub fn docker_read(&self, args: &[&str]) -> Output {
        let sock = if self.vm {
            &self.guard_sock
        } else {
            &self.dockerd_sock
        };
        self.cli(sock, args, None, &[])
    }

    /// Import a busybox image under `name` straight into dockerd (through the guard against
    /// the VM, SPEC H4); returns its id. Each import
    /// carries a marker file with the name, so different names are different images.
    pub fn import_image(&self, name: &str) -> Result<String> {
        let root = self
            .dir
            .path()
            .join(format!("rootfs-{}", name.replace(['/', ':'], "_")));
        std::fs::create_dir_all(root.join("bin"))?;
        std::fs::copy("/bin/busybox", root.join("bin/busybox"))?;
        for applet in [
            "sh", "cat", "echo", "sleep", "ls", "true", "false", "id", "head", "wc", "mkdir",
            "touch", "test",
        ] {
            let link = root.join("bin").join(applet);
            if !link.exists() {
                std::os::unix::fs::symlink("busybox", link)?;
            }
        }
        std::fs::write(root.join("marker"), name)?;
        let tar = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .args(["-c", "."])
            .output()?;
        if !tar.status.success() {
            bail!(
                "tar of {}: {}",
                root.display(),
                String::from_utf8_lossy(&tar.stderr)
            );
        }
        let out = self.cli(
            if self.vm {
                &self.guard_sock
            } else {
                &self.dockerd_sock
            },
            &["import", "-", name],
            Some(&tar.stdout),
            &[],
        );
        if !out.status.success() {
            bail!(
                "docker import {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Every audit line, parsed.
    pub fn audit(&self) -> Vec<Value> {
        self.local_only("the guard's audit log");
        std::fs::read_to_string(&self.audit_log)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    /// Wait until an audit line satisfies `pred` (lines are written by a background thread).
    pub fn wait_audit(&self, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(v) = self.audit().into_iter().find(|v| pred(v)) {
                return Some(v);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Put the docker CLI into the share (a hard link when possible) so containers can run it
    /// from an allowed bind mount; returns the folder to mount.
    pub fn share_docker_cli(&self) -> Result<PathBuf> {
        let dir = self.share.join("cli");
        std::fs::create_dir_all(&dir)?;
        let src = which("docker").context("docker CLI")?;
        let dst = dir.join("docker");
        if !dst.exists() && std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst)?;
        }
        Ok(dir)
    }
}

/// One HTTP/1.1 request on a unix socket with hyper (what a client library does); the body
/// is read to its end.
pub fn http(
    sock: &Path,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> HttpAnswer {
    let (status, bytes) = http_read(sock, method, path, content_type, body, None);
    HttpAnswer {
        status,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// Like [`http`] but stops reading the body after `window` (for streams that stay open):
/// what arrived by then.
pub fn http_stream(sock: &Path, path: &str, window: Duration) -> (u16, Vec<u8>) {
    http_read(sock, "GET", path, None, Vec::new(), Some(window))
}

fn http_read(
    sock: &Path,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
    window: Option<Duration>,
) -> (u16, Vec<u8>) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let stream = tokio::net::UnixStream::connect(sock)
            .await
            .expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP handshake");
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("Host", "docker");
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        let req = req
            .body(Full::new(bytes::Bytes::from(body)))
            .expect("request");
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + window.unwrap_or(Duration::from_secs(120));
        while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, body.frame()).await {
            if let Some(d) = frame.data_ref() {
                out.extend_from_slice(d);
            }
        }
        (status, out)
    })
}

/// `GET /_ping` answered 200 on `sock`.
pub fn ping(sock: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(sock) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    buf.starts_with(b"HTTP/1.1 200")
}

impl Drop for GuardEngine {
    fn drop(&mut self) {
        if self.vm {
            // The next test starts from an engine without containers, as it would here.
            let ids = self.docker(&["ps", "-aq"]);
            let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids.iter().map(String::as_str));
                let _ = self.docker(&args);
            }
            return;
        }
        self.stop_guard();
        if let Some(mut child) = self.dockerd.take() {
            // Containers first, so dockerd exits without leaving shims and mounts behind.
            let ids = self.docker_direct(&["ps", "-aq"]);
            let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids.iter().map(String::as_str));
                let _ = self.docker_direct(&args);
            }
            // SIGTERM, then SIGKILL after 20 s.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    _ if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(100)),
                }
            }
            // Anything dockerd left mounted under the folder would make its removal fail.
            if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
                let mut targets: Vec<&str> = mounts
                    .lines()
                    .filter_map(|l| l.split_whitespace().nth(1))
                    .filter(|t| t.starts_with(&*self.dir.path().to_string_lossy()))
                    .collect();
                targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
                for t in targets {
                    let _ = Command::new("umount").args(["-l", t]).status();
                }
            }
        }
    }
}
