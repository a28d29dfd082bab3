//! `eci-build boot`: the VM met from its host (SPEC H2, H4). The VM runs under QEMU with a
//! vsock device; once eci-guard answers `/_ping` on its vsock port, a Unix socket on the host
//! relays every connection to that port, so `DOCKER_HOST=unix://...` and the docker CLI work
//! from the host while the only engine endpoint stays the guard (never dockerd, never TCP).
//!
//! Under QEMU the vsock device is the kernel's vhost-vsock when `/dev/vhost-vsock` exists, and
//! otherwise rust-vmm's `vhost-device-vsock` backend, which `./dev` installs at the pinned
//! [`BACKEND_VERSION`] into the eci cache ([`backend_program`] finds it). The VM powers off
//! cleanly on [`RunningVm::power_off`]: QEMU's ACPI power button, which eci-init handles.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::boot::Accel;
use crate::vsock::{VsockDevice, VHOST_VSOCK_DEV};

/// The `vhost-device-vsock` release `./dev` installs (`cargo install --locked`); a unit test
/// keeps the two in step.
pub const BACKEND_VERSION: &str = "0.3.0";
pub const BACKEND_NAME: &str = "vhost-device-vsock";
/// Overrides where the backend is looked for.
pub const BACKEND_ENV: &str = "ECI_VHOST_DEVICE_VSOCK";

/// The guest CID. One per VM: the backend is per VM, and with the kernel's vhost-vsock the
/// caller picks a free one ([`free_kernel_cid`]).
pub const GUEST_CID: u32 = 3;

/// The relayed engine socket, the QEMU control socket and the backend's sockets live in the
/// boot's run folder under these names.
pub const DOCKER_SOCKET: &str = "docker.sock";
pub const QMP_SOCKET: &str = "qmp.sock";
pub const PID_FILE: &str = "eci-build.pid";
/// The id of the user-networking netdev `boot.rs` gives QEMU.
const NETDEV: &str = "n0";

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("{BACKEND_NAME} {BACKEND_VERSION} is not installed (looked in {} and on PATH), and {VHOST_VSOCK_DEV} does not exist for the kernel's vhost-vsock; install it with `./dev test` (or: cargo install --locked {BACKEND_NAME} --version {BACKEND_VERSION} --root {})", install.display(), root.display())]
    NoBackend { install: PathBuf, root: PathBuf },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{BACKEND_NAME} did not create its control socket {} within {seconds} s; its log: {}", socket.display(), log.display())]
    BackendStart {
        socket: PathBuf,
        seconds: u64,
        log: PathBuf,
    },
    #[error("the engine did not answer on vsock port {port} within {seconds} s ({last}); console log: {}", console.display())]
    NotReady {
        port: u32,
        seconds: u64,
        last: String,
        console: PathBuf,
    },
    #[error("the VM stopped before the engine answered (QEMU exit {code:?}); console log: {}", console.display())]
    Exited { code: Option<i32>, console: PathBuf },
    #[error(transparent)]
    Boot(#[from] crate::boot::BootError),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> EndpointError {
    let what = what.into();
    move |source| EndpointError::Io { what, source }
}

/// Where `./dev` installs the backend: `<cache>/tools/vhost-device-vsock-<version>`, the
/// `cargo install --root`; the binary is in its `bin/`.
pub fn backend_root(cache_root: &Path) -> PathBuf {
    cache_root
        .join("tools")
        .join(format!("{BACKEND_NAME}-{BACKEND_VERSION}"))
}

/// `$ECI_VHOST_DEVICE_VSOCK`, else the pinned install in the eci cache, else PATH.
pub fn backend_program(cache_root: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(BACKEND_ENV) {
        return Some(PathBuf::from(p));
    }
    let pinned = backend_root(cache_root).join("bin").join(BACKEND_NAME);
    if pinned.is_file() {
        return Some(pinned);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(BACKEND_NAME))
            .find(|p| p.is_file())
    })
}

/// A running `vhost-device-vsock` for one VM; stopped when dropped.
pub struct Backend {
    child: Child,
    pub device: VsockDevice,
}

impl Backend {
    pub fn start(program: &Path, run_dir: &Path) -> Result<Backend, EndpointError> {
        let control = run_dir.join("vhost-vsock.sock");
        let uds = run_dir.join("vm.vsock");
        for p in [&control, &uds] {
            let _ = std::fs::remove_file(p);
        }
        let log_path = run_dir.join("vhost-device-vsock.log");
        let log = File::create(&log_path).map_err(io_err(log_path.display().to_string()))?;
        let mut child = Command::new(program)
            .arg("--vm")
            .arg(format!(
                "guest-cid={GUEST_CID},socket={},uds-path={}",
                control.display(),
                uds.display()
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io_err("backend log"))?)
            .stderr(log)
            .spawn()
            .map_err(io_err(format!("cannot start {}", program.display())))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !control.exists() {
            let exited = child.try_wait().ok().flatten().is_some();
            if exited || Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(EndpointError::BackendStart {
                    socket: control,
                    seconds: 10,
                    log: log_path,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Backend {
            child,
            device: VsockDevice::User { control, uds },
        })
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let VsockDevice::User { control, uds } = &self.device {
            let _ = std::fs::remove_file(control);
            let _ = std::fs::remove_file(uds);
        }
    }
}

/// The device for this machine: the kernel's vhost-vsock when it is there (the backend is then
/// not needed), otherwise the backend, started now.
pub fn device(
    run_dir: &Path,
    cache_root: &Path,
) -> Result<(VsockDevice, Option<Backend>), EndpointError> {
    if Path::new(VHOST_VSOCK_DEV).exists() {
        return Ok((
            VsockDevice::Kernel {
                cid: free_kernel_cid(),
            },
            None,
        ));
    }
    let program = backend_program(cache_root).ok_or_else(|| EndpointError::NoBackend {
        install: backend_root(cache_root).join("bin"),
        root: backend_root(cache_root),
    })?;
    let backend = Backend::start(&program, run_dir)?;
    Ok((backend.device.clone(), Some(backend)))
}

/// With the kernel's vhost-vsock every VM on the host needs its own CID; QEMU refuses one in
/// use. The process id spreads concurrent boots apart (CIDs 0-2 are reserved).
fn free_kernel_cid() -> u32 {
    1000 + std::process::id() % 1_000_000
}

/// `GET /_ping` through the device: true once the guard answers 200.
pub fn ping(device: &VsockDevice, port: u32) -> io::Result<bool> {
    let mut s = device.connect(port, Duration::from_secs(5))?;
    s.write_all(b"GET /_ping HTTP/1.0\r\nHost: eci\r\n\r\n")?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    let head = String::from_utf8_lossy(&answer[..answer.len().min(32)]).into_owned();
    Ok(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"))
}

/// The host's engine socket: every connection to `path` becomes a stream to `port` in the
/// guest. Stops accepting when dropped.
pub struct Relay {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    /// Binds `path` (0600: the engine is this user's) and relays in the background.
    pub fn serve(path: &Path, device: VsockDevice, port: u32) -> Result<Relay, EndpointError> {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(io_err(format!(
            "cannot listen on {} (a stale socket from another boot?)",
            path.display()
        )))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(path.display().to_string()))?;
        listener
            .set_nonblocking(true)
            .map_err(io_err("relay listener"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let device = device.clone();
                        std::thread::spawn(move || relay_one(client, &device, port));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(e) => {
                        eprintln!("eci-build: relay accept: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        });
        Ok(Relay {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What to export for the docker CLI.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.path.display())
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Copies both ways until each side has closed its half (attach, exec and `logs -f` keep
/// streaming in either direction; `docker load` closes its upload before reading the answer).
fn relay_one(client: UnixStream, device: &VsockDevice, port: u32) {
    let _ = client.set_nonblocking(false);
    // Through the backend, a tagged stream, so that the end of the client's input can be said
    // on the side channel ([`half_close`]).
    let tag = matches!(device, VsockDevice::User { .. }).then(stream_token);
    let opened = match tag {
        None => device.connect(port, Duration::from_secs(10)),
        Some(token) => device
            .connect(crate::vsock::TAGGED_PORT, Duration::from_secs(10))
            .and_then(|mut s| {
                s.write_all(format!("ECI-STREAM {token}\n").as_bytes())?;
                Ok(s)
            }),
    };
    let guest = match opened {
        Ok(g) => g,
        Err(e) => {
            // The CLI shows this as the daemon's answer instead of a bare hang-up.
            let msg = format!("eci-build relay: cannot reach the engine in the VM: {e}");
            let body = serde_json::json!({ "message": msg }).to_string();
            let mut c = client;
            let _ = write!(
                c,
                "HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            return;
        }
    };
    let (Ok(mut client_r), Ok(mut guest_r)) = (client.try_clone(), guest.try_clone()) else {
        return;
    };
    let mut guest_w = guest;
    let device = device.clone();
    let up = std::thread::spawn(move || {
        let mut sent = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match client_r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if guest_w.write_all(&buf[..n]).is_err() {
                        return;
                    }
                    sent += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        half_close(&device, tag, &guest_w, sent);
    });
    let mut client_w = client;
    let _ = io::copy(&mut guest_r, &mut client_w);
    let _ = client_w.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}

/// A token no other open stream of this relay has.
fn stream_token() -> u64 {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // The counter keeps concurrent streams apart; the clock, relays that restarted.
    (seed & !0xffff_ffff) | (NEXT.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff)
}

/// The client sent everything it will: tell the guest so that it can still answer. Through the
/// backend this goes on the guard's side channel (`SHUT <token> <bytes>`), since closing the
/// backend's stream would end both directions; where that fails, a real close is all that is
/// left.
fn half_close(device: &VsockDevice, tag: Option<u64>, guest: &crate::vsock::Stream, sent: u64) {
    let Some(token) = tag else {
        guest.shutdown_write();
        return;
    };
    let told = (|| -> io::Result<bool> {
        let mut s = device.connect(crate::vsock::HALF_CLOSE_PORT, Duration::from_secs(10))?;
        s.write_all(format!("SHUT {token} {sent}\n").as_bytes())?;
        let mut answer = [0u8; 3];
        s.read_exact(&mut answer)?;
        Ok(&answer == b"OK\n")
    })();
    if !matches!(told, Ok(true)) {
        guest.shutdown_write();
    }
}

/// What [`start`] needs besides the QEMU command.
pub struct StartOptions<'a> {
    /// Sockets, logs and the pid file; created if missing.
    pub run_dir: &'a Path,
    /// The eci cache, where `./dev` installed the backend.
    pub cache_root: &'a Path,
    pub memory_mib: u32,
    pub console_log: &'a Path,
    /// Echo the console to stderr.
    pub echo: bool,
    /// How the engine is reached: eci-guard's vsock port, or a guest TCP port forwarded to the
    /// WSL stand-in's relay.
    pub reach: EngineReach,
}

/// How the host reaches a boot's engine under QEMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineReach {
    /// eci-guard's vsock port, through the VM's virtio-vsock device.
    Vsock,
    /// The WSL stand-in's relay on this guest TCP port (crate::wsl_standin), forwarded from a
    /// free port on this machine's loopback.
    StandinRelay { guest_port: u16 },
}

/// A VM running in the background with its host endpoint.
pub struct RunningVm {
    qemu: Child,
    pub accel: Accel,
    pub device: VsockDevice,
    qmp: PathBuf,
    console_log: PathBuf,
    last_line: Arc<std::sync::Mutex<String>>,
    started: Instant,
    // Dropped after QEMU has gone (see Drop): the device outlives the guest.
    _backend: Option<Backend>,
}

/// Starts the VM `command` describes (from [`crate::boot::direct_command`]) with the vsock
/// device and a QMP socket added.
pub fn start(
    (mut command, accel): (Command, Accel),
    o: &StartOptions<'_>,
) -> Result<RunningVm, EndpointError> {
    std::fs::create_dir_all(o.run_dir).map_err(io_err(o.run_dir.display().to_string()))?;
    let (device, backend) = match o.reach {
        EngineReach::Vsock => device(o.run_dir, o.cache_root)?,
        EngineReach::StandinRelay { .. } => (
            VsockDevice::Forwarded {
                host_port: free_loopback_port()?,
            },
            None,
        ),
    };
    let qmp = o.run_dir.join(QMP_SOCKET);
    let _ = std::fs::remove_file(&qmp);
    command.args(device.qemu_args(o.memory_mib));
    let mut qmp_arg = std::ffi::OsString::from("unix:");
    qmp_arg.push(qmp.as_os_str());
    qmp_arg.push(",server=on,wait=off");
    command.arg("-qmp").arg(qmp_arg);
    // Its own process group: Ctrl-C on the terminal reaches eci-build, which powers the VM
    // off cleanly, instead of killing QEMU under a running guest.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut qemu = command
        .spawn()
        .map_err(|e| EndpointError::Boot(crate::boot::BootError::Spawn(e)))?;
    if let Some(dir) = o.console_log.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir.display().to_string()))?;
    }
    let log = File::create(o.console_log).map_err(io_err(o.console_log.display().to_string()))?;
    let last_line = Arc::new(std::sync::Mutex::new(String::new()));
    let stdout = qemu.stdout.take().expect("piped");
    let stderr = qemu.stderr.take().expect("piped");
    let (echo, last) = (o.echo, last_line.clone());
    let log_out = Arc::new(std::sync::Mutex::new(log));
    let log_err = log_out.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            let text = String::from_utf8_lossy(&line).replace('\r', "");
            if echo {
                eprintln!("{text}");
            }
            if let Ok(mut f) = log_out.lock() {
                let _ = writeln!(f, "{text}");
            }
            if !text.trim().is_empty() {
                if let Ok(mut l) = last.lock() {
                    *l = text;
                }
            }
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[qemu] {line}");
            if let Ok(mut f) = log_err.lock() {
                let _ = writeln!(f, "[qemu] {line}");
            }
        }
    });
    let mut vm = RunningVm {
        qemu,
        accel,
        device,
        qmp,
        console_log: o.console_log.to_path_buf(),
        last_line,
        started: Instant::now(),
        _backend: backend,
    };
    if let (EngineReach::StandinRelay { guest_port }, VsockDevice::Forwarded { host_port }) =
        (o.reach, vm.device.clone())
    {
        // QMP answers once QEMU has set its machine up: moments after the spawn.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match vm.forward_port(host_port, guest_port) {
                Ok(()) => break,
                Err(e) if Instant::now() >= deadline || vm.exited().is_some() => {
                    return Err(EndpointError::Io {
                        what: format!(
                            "cannot forward 127.0.0.1:{host_port} to the guest's port {guest_port}"
                        ),
                        source: e,
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
    Ok(vm)
}

/// A port on this machine's loopback that nothing listens on now (QEMU binds it moments later).
fn free_loopback_port() -> Result<u16, EndpointError> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(io_err("cannot find a free port on 127.0.0.1"))
}

impl RunningVm {
    /// Waits until the guard answers on `port`; returns the seconds since QEMU started.
    pub fn wait_engine(&mut self, port: u32, timeout: Duration) -> Result<f64, EndpointError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.qemu.try_wait() {
                return Err(EndpointError::Exited {
                    code: status.code(),
                    console: self.console_log.clone(),
                });
            }
            let last = match ping(&self.device, port) {
                Ok(true) => return Ok(self.started.elapsed().as_secs_f64()),
                Ok(false) => "the guard answered, but not 200".to_string(),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                let console = self.last_line.lock().map(|l| l.clone()).unwrap_or_default();
                return Err(EndpointError::NotReady {
                    port,
                    seconds: timeout.as_secs(),
                    last: format!("{last}; last console line: {console:?}"),
                    console: self.console_log.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// QEMU's exit code once it has exited.
    pub fn exited(&mut self) -> Option<Option<i32>> {
        self.qemu.try_wait().ok().flatten().map(|s| s.code())
    }

    pub fn console_log(&self) -> &Path {
        &self.console_log
    }

    /// Forwards `127.0.0.1:host_port` on this machine to `guest_port` on the VM's uplink
    /// address (QEMU user networking's `hostfwd`, added at run time through QMP). The traffic
    /// arrives on the uplink like any inbound connection, so the VM's filter judges it (H1).
    pub fn forward_port(&self, host_port: u16, guest_port: u16) -> io::Result<()> {
        let hmp = format!("hostfwd_add {NETDEV} tcp:127.0.0.1:{host_port}-:{guest_port}");
        let said = qmp(
            &self.qmp,
            &[serde_json::json!({
                "execute": "human-monitor-command",
                "arguments": {"command-line": hmp},
            })
            .to_string()],
        )?;
        // The human monitor reports its errors as text in a successful answer.
        match said.as_str() {
            Some("") => Ok(()),
            _ => Err(io::Error::other(format!("QEMU {hmp}: {said}"))),
        }
    }

    /// Presses the ACPI power button (eci-init stops the services and powers off) and waits up
    /// to `grace` for QEMU to exit; after that QEMU is killed. Returns whether the guest shut
    /// down by itself.
    pub fn power_off(&mut self, grace: Duration) -> bool {
        if self.exited().is_some() {
            return true;
        }
        if let Err(e) = qmp_powerdown(&self.qmp) {
            eprintln!("eci-build: cannot press the VM's power button ({e}); stopping QEMU");
        } else {
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if self.exited().is_some() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            eprintln!(
                "eci-build: the VM did not power off within {} s; stopping QEMU",
                grace.as_secs()
            );
        }
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
        false
    }
}

impl Drop for RunningVm {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.qemu.kill();
            let _ = self.qemu.wait();
        }
        let _ = std::fs::remove_file(&self.qmp);
    }
}

/// QMP: the greeting, `qmp_capabilities`, then `system_powerdown`.
fn qmp_powerdown(path: &Path) -> io::Result<()> {
    qmp(path, &[r#"{"execute": "system_powerdown"}"#.to_string()]).map(|_| ())
}

/// Sends each command after the capabilities handshake; fails on the first QMP error.
/// Returns the last command's `return` value.
fn qmp(path: &Path, commands: &[String]) -> io::Result<serde_json::Value> {
    let s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(s.try_clone()?);
    let mut w = s;
    let mut line = String::new();
    reader.read_line(&mut line)?; // greeting
    let hello = r#"{"execute": "qmp_capabilities"}"#.to_string();
    let mut last = serde_json::Value::Null;
    for cmd in std::iter::once(&hello).chain(commands) {
        writeln!(w, "{cmd}")?;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "QMP closed the connection",
                ));
            }
            let answer: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if let Some(r) = answer.get("return") {
                last = r.clone();
                break;
            }
            if answer.get("error").is_some() {
                return Err(io::Error::other(format!("QMP {cmd}: {}", line.trim())));
            }
            // Anything else is an event, which may come before the command's answer.
        }
    }
    Ok(last)
}

/// SIGINT and SIGTERM set a flag instead of ending the process, so `eci-build boot` can power
/// the VM off cleanly on Ctrl-C or `eci-build stop`.
pub mod signals {
    use std::sync::atomic::{AtomicBool, Ordering};

    static STOP: AtomicBool = AtomicBool::new(false);

    extern "C" fn on_signal(_: i32) {
        STOP.store(true, Ordering::SeqCst);
    }

    extern "C" {
        fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
        fn kill(pid: i32, sig: i32) -> i32;
    }

    pub const SIGINT: i32 = 2;
    pub const SIGTERM: i32 = 15;

    pub fn install() {
        for s in [SIGINT, SIGTERM] {
            // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
            unsafe { signal(s, on_signal) };
        }
    }

    pub fn stop_requested() -> bool {
        STOP.load(Ordering::SeqCst)
    }

    /// SIGTERM to `pid`; false when no such process exists.
    pub fn terminate(pid: i32) -> bool {
        // SAFETY: kill takes no pointers.
        pid > 0 && unsafe { kill(pid, SIGTERM) } == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_installs_the_pinned_backend() {
        let dev = include_str!("../../dev");
        assert!(
            dev.contains(&format!("vhost_device_vsock_version={BACKEND_VERSION}")),
            "./dev must install {BACKEND_NAME} {BACKEND_VERSION}"
        );
        assert!(dev.contains("tools/vhost-device-vsock-$"));
    }

    #[test]
    fn the_guard_listens_on_the_port_the_relay_uses() {
        let t = include_str!("../../vm-config/templates/services.json.tera");
        assert!(
            t.contains(&format!(
                "\"--listen-vsock\", \"{}\"",
                crate::vsock::ENGINE_PORT
            )),
            "services.json.tera must pass --listen-vsock {}",
            crate::vsock::ENGINE_PORT
        );
    }

    #[test]
    fn the_backend_is_looked_up_in_the_cache_first() {
        let cache = tempfile::tempdir().unwrap();
        let bin = backend_root(cache.path()).join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join(BACKEND_NAME), "").unwrap();
        if std::env::var_os(BACKEND_ENV).is_none() {
            assert_eq!(backend_program(cache.path()), Some(bin.join(BACKEND_NAME)));
        }
    }

    /// The relay end to end against a stand-in backend that plays the guest: a tagged stream
    /// (CONNECT to the tagged port, then its token), the request, the client's end of input on
    /// the side channel with the byte count, and the answer still coming back.
    #[test]
    fn the_relay_carries_a_connection_to_the_guest_port() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("vm.vsock");
        let backend = UnixListener::bind(&uds).unwrap();
        let guest = std::thread::spawn(move || {
            let (c, _) = backend.accept().unwrap();
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut c = c;
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert_eq!(line, "CONNECT 377\n");
            c.write_all(b"OK 377\n").unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            let token = line
                .strip_prefix("ECI-STREAM ")
                .and_then(|t| t.trim_end().parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{line:?}"));
            let mut request = [0u8; 23];
            r.read_exact(&mut request).unwrap();
            assert_eq!(&request, b"GET /_ping HTTP/1.0\r\n\r\n");
            // The client's end of input comes on the side channel, not as the stream's end.
            let (side, _) = backend.accept().unwrap();
            let mut sr = BufReader::new(side.try_clone().unwrap());
            let mut side = side;
            line.clear();
            sr.read_line(&mut line).unwrap();
            assert_eq!(line, "CONNECT 376\n");
            side.write_all(b"OK 376\n").unwrap();
            line.clear();
            sr.read_line(&mut line).unwrap();
            assert_eq!(line, format!("SHUT {token} 23\n"));
            side.write_all(b"OK\n").unwrap();
            c.write_all(b"HTTP/1.0 200 OK\r\n\r\nOK").unwrap();
        });
        let device = VsockDevice::User {
            control: dir.path().join("unused"),
            uds,
        };
        let relay = Relay::serve(&dir.path().join("docker.sock"), device, 375).unwrap();
        assert!(relay.docker_host().starts_with("unix:///"));
        let mut c = UnixStream::connect(relay.path()).unwrap();
        c.write_all(b"GET /_ping HTTP/1.0\r\n\r\n").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "HTTP/1.0 200 OK\r\n\r\nOK");
        guest.join().unwrap();
    }

    #[test]
    fn a_guest_that_does_not_answer_gets_a_docker_error() {
        let dir = tempfile::tempdir().unwrap();
        let device = VsockDevice::User {
            control: dir.path().join("unused"),
            uds: dir.path().join("missing.vsock"),
        };
        let relay = Relay::serve(&dir.path().join("docker.sock"), device, 375).unwrap();
        let mut c = UnixStream::connect(relay.path()).unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 502") && answer.contains("cannot reach the engine"),
            "{answer}"
        );
    }
}
