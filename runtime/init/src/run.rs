//! The edge that runs as PID 1: enters the root, mounts, hardens, loads modules, prepares the
//! data disk, then runs the supervisor loop until shutdown and powers off. Every decision is
//! made by the pure modules; this file carries them out and logs what happened.

use crate::cmdline::{self, BootOptions, DataDiskChoice};
use crate::disk::{self, BlockDevice, Decision, FsckVerdict, Signature};
use crate::input;
use crate::kernel_check;
use crate::legacy;
use crate::log::{self, say, Logger};
use crate::modinfo;
use crate::mounts::{self, Mount};
use crate::ready;
use crate::services::ServicesFile;
use crate::supervise::{Action, Backoff, Machine};
use crate::sys;
use eci_kernel_config::{DriftVerdict, ModuleFailure, IMAGE_PINS_PATH};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::kmod::{finit_module, ModuleInitFlags};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::reboot::{reboot, set_cad_enabled, RebootMode};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{getpid, sync, Pid};
use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const SERVICES_FILE: &str = "/etc/eci/services.json";
pub use eci_facts::vm_paths::{MODULES_FILE, SYSCTL_FILE};
pub const SELFTEST: &str = "/usr/lib/eci/selftest";
pub const LOG_DIR: &str = "/var/log/eci";
/// root:root 0700: dockerd's socket lives here (SPEC S4).
pub use eci_facts::vm_paths::RUN_DIR;
/// The image path of eci-init; `eci-init poweroff` is the kernel's poweroff helper.
pub const SELF_PATH: &str = "/usr/sbin/eci-init";
const SELFTEST_TIMEOUT: Duration = Duration::from_secs(300);
/// How long leftover processes get between SIGTERM and SIGKILL at power off.
const FINAL_GRACE: Duration = Duration::from_secs(3);
const PATH_ENV: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// How eci-init runs.
#[derive(Debug, Clone, Default)]
pub struct Mode {
    /// `Some(root)`: the test sandbox (a private PID and mount namespace): enter `root` instead
    /// of the initramfs, and leave everything kernel-global alone (sysctls, modules, hostname,
    /// network, disks, ctrl-alt-del, the power button).
    pub sandbox: Option<PathBuf>,
    /// Replaces /proc/cmdline (sandbox only).
    pub cmdline: Option<String>,
    /// Where the kernel check reads /proc, /sys and /boot instead of / (sandbox only: a fake
    /// kernel tree inside the sandbox root, so a test can present a matching or a drifting
    /// kernel; the VM always probes the kernel it runs on).
    pub probe_root: Option<PathBuf>,
    /// Under another init (WSL2, whose own init is PID 1 and runs the image's boot command):
    /// no root to enter, nothing to mount, no disks, no power off; the hardening sysctls, the
    /// boot modules while the pinned kernel runs, the kernel check, the legacy-container scan
    /// and the supervised services as in the VM.
    pub under_init: bool,
}

impl Mode {
    /// The eci VM proper, eci-init as the kernel's PID 1.
    fn vm(&self) -> bool {
        self.sandbox.is_none() && !self.under_init
    }

    /// Whether this init hardens the kernel it runs on (sysctls, modules, module lock).
    fn hardens(&self) -> bool {
        self.sandbox.is_none()
    }

    fn probe_root(&self) -> PathBuf {
        self.probe_root
            .clone()
            .unwrap_or_else(|| PathBuf::from("/"))
    }
}

/// What the self-test and the log report about the data disk.
#[derive(Debug, Clone)]
struct DataDisk {
    /// `formatted`, `existing` or `tmpfs`.
    state: &'static str,
    device: String,
    uuid: String,
    detail: String,
}

struct Init {
    under_init: bool,
    opts: BootOptions,
    signals: sys::SignalFd,
    power_buttons: Vec<File>,
    machine: Machine,
    facts: Vec<(String, String)>,
    selftest: Option<(i32, Instant)>,
    shutdown_reason: Option<String>,
    data_mounted: bool,
    orphans_reaped: u64,
    /// The kernel check refused isolation: no service was started.
    refused: bool,
}

/// Runs PID 1 and never returns: the end is always a power off.
pub fn pid1(mode: Mode) -> ! {
    std::env::set_var("PATH", PATH_ENV);
    log::install(Logger::new(Box::new(std::io::stderr()), sys::uptime));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| boot(mode)));
    match result {
        Ok(Ok(())) => say("power off failed"),
        Ok(Err(e)) => say(&format!("fatal: {e}; powering off")),
        Err(_) => say("fatal: eci-init panicked (message above); powering off"),
    }
    log::close();
    sync();
    let _ = reboot(RebootMode::RB_POWER_OFF);
    // reboot only returns on error; PID 1 exiting panics the kernel, which panic=-1 turns
    // into a reset: still no shell.
    std::process::exit(1)
}

/// `eci-init --under-init`: the same boot minus the PID-1 duties (see [`Mode::under_init`]);
/// returns the process's exit code once the services stopped after SIGTERM.
pub fn under_init(mode: Mode) -> i32 {
    std::env::set_var("PATH", PATH_ENV);
    log::install(Logger::new(Box::new(std::io::stderr()), sys::uptime));
    // Orphans of the services (containerd's shims) are ours to reap, as they are PID 1's in
    // the VM, instead of the other init's.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        say(&format!("cannot become the services' subreaper: {e}"));
    }
    // One supervisor per distribution: the boot command run by hand a second time must not
    // start a second engine. The lock lives as long as this process.
    let _lock = match single_instance() {
        Ok(lock) => lock,
        Err(e) => {
            say(&e);
            log::close();
            return 1;
        }
    };
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<(), String> {
            let mut init = Init::stage2(mode)?;
            init.run();
            let reason = init.shutdown_reason.clone().unwrap_or_default();
            init.power_off(&reason);
            Ok(())
        }));
    let code = match result {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            say(&format!("fatal: {e}"));
            1
        }
        Err(_) => {
            say("fatal: eci-init panicked (message above)");
            1
        }
    };
    log::close();
    code
}

/// Takes `RUN_DIR/eci-init.lock`, or says who has it.
fn single_instance() -> Result<Flock<File>, String> {
    let path = Path::new(RUN_DIR).join("eci-init.lock");
    let file = std::fs::create_dir_all(RUN_DIR)
        .and_then(|_| std::fs::set_permissions(RUN_DIR, std::fs::Permissions::from_mode(0o700)))
        .and_then(|_| {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(&path)
        })
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((_, Errno::EWOULDBLOCK)) => Err(format!(
            "another eci-init already supervises the engine ({} is locked); exiting",
            path.display()
        )),
        Err((_, e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

fn boot(mode: Mode) -> Result<(), String> {
    // Stage 1. The initramfs root cannot be pivot_root'ed away from (EINVAL), and container
    // runtimes pivot_root. Bind-mounting the initramfs onto /sysroot and moving that mount over
    // / makes the root a mount with a parent, which is all pivot_root needs: no copy, no
    // second tmpfs, and the same files (the copy it replaces took ~0.9 s under TCG).
    let (src, at) = match &mode.sandbox {
        None => (PathBuf::from("/"), PathBuf::from("/sysroot")),
        Some(root) => (root.clone(), root.clone()),
    };
    phase("root");
    enter_root(&src, &at).map_err(|e| format!("cannot make {} the root: {e}", src.display()))?;
    let mut init = Init::stage2(mode)?;
    init.run();
    let reason = init.shutdown_reason.clone().unwrap_or_default();
    init.power_off(&reason);
    Ok(())
}

/// Bind `src` on `at`, move that mount over /, chroot into it.
fn enter_root(src: &Path, at: &Path) -> std::io::Result<()> {
    mount(
        Some(src),
        at,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )?;
    std::env::set_current_dir(at)?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)?;
    nix::unistd::chroot(".")?;
    std::env::set_current_dir("/")
}

fn do_mount(m: &Mount) -> std::io::Result<()> {
    let target = Path::new(m.target);
    if !target.is_dir() {
        std::fs::create_dir_all(target)?;
        std::fs::set_permissions(target, std::fs::Permissions::from_mode(m.mode))?;
    }
    let data = (!m.data.is_empty()).then_some(m.data);
    Ok(mount(
        Some(m.source),
        target,
        Some(m.fstype),
        m.flags,
        data,
    )?)
}

impl Init {
    fn stage2(mode: Mode) -> Result<Init, String> {
        // Under another init, /proc, /sys, /dev, /run and the cgroups are its mounts.
        if !mode.under_init {
            phase("mounts");
            for m in mounts::early() {
                if let Err(e) = do_mount(&m) {
                    say(&format!("cannot mount {} on {}: {e}", m.fstype, m.target));
                }
            }
        }
        let stdin_to_null =
            std::fs::File::open("/dev/null").and_then(|null| Ok(nix::unistd::dup2_stdin(&null)?));
        if let Err(e) = stdin_to_null {
            say(&format!("cannot point stdin at /dev/null: {e}"));
        }
        let signals = sys::SignalFd::new().map_err(|e| format!("signalfd: {e}"))?;
        let cmdline = match &mode.cmdline {
            Some(c) => c.clone(),
            None => std::fs::read_to_string("/proc/cmdline").unwrap_or_default(),
        };
        let opts = cmdline::parse(&cmdline);
        for w in &opts.warnings {
            say(w);
        }
        let mut facts = Vec::new();
        if mode.vm() {
            // ctrl-alt-del becomes SIGINT to PID 1 (a clean shutdown) instead of a hard reset.
            if let Err(e) = set_cad_enabled(false) {
                say(&format!("cannot turn off the ctrl-alt-del reset: {e}"));
            }
            vm_identity();
        }
        let mut module_failures = Vec::new();
        if mode.hardens() {
            module_failures = harden(mode.under_init, &mut facts);
        }
        if mode.vm() {
            // Hyper-V's shutdown integration service (hv_utils) runs the kernel's poweroff
            // helper; Debian's busybox installs no /sbin/poweroff, so point it at eci-init.
            if let Err(e) = std::fs::write(
                "/proc/sys/kernel/poweroff_cmd",
                format!("{SELF_PATH} poweroff"),
            ) {
                say(&format!("cannot set kernel.poweroff_cmd: {e}"));
            }
        }
        // Under another init the distribution's disk is persistent and its /var is the engine's.
        if !mode.under_init {
            phase("var");
            prepare_var()?;
        }
        for (dir, mode_bits) in [(RUN_DIR, 0o700), (LOG_DIR, 0o755)] {
            std::fs::create_dir_all(dir)
                .and_then(|_| {
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode_bits))
                })
                .map_err(|e| format!("cannot create {dir}: {e}"))?;
        }
        if let Err(e) = log::open(&Path::new(LOG_DIR).join("init.log")) {
            say(&format!(
                "cannot open {LOG_DIR}/init.log: {e}; logging to the console only"
            ));
        }
        // SPEC M5: copies of the containers' listeners outlive the supervisor (fd_store.rs).
        let store = Path::new(RUN_DIR).join(crate::fd_store::SOCKET_NAME);
        if let Err(e) = crate::fd_store::start(&store, say) {
            say(&format!(
                "cannot serve the fd store at {}: {e}",
                store.display()
            ));
        }

        // SPEC V5: hardening done, module loading off; nothing started yet.
        phase("kernel-check");
        let verdict = kernel_check::check(
            &mode.probe_root(),
            Path::new(IMAGE_PINS_PATH),
            &module_failures,
        );
        facts.push(("ECI_KERNEL_DRIFT".into(), verdict.selftest_value()));
        facts.push(("ECI_KERNEL_EXCUSED".into(), verdict.excused_value()));
        for e in &verdict.excused {
            say(&format!(
                "kernel check: excused ({}): {}",
                e.reason, e.detail
            ));
        }
        if let Err(e) = kernel_check::write_status(Path::new(kernel_check::STATUS_FILE), &verdict) {
            say(&format!("cannot write {}: {e}", kernel_check::STATUS_FILE));
        }
        if !verdict.is_refused() {
            say(&format!(
                "kernel check: {} matches the image's kernel pins",
                verdict.kernel_release
            ));
        }

        phase("data-disk");
        let data = if mode.vm() {
            data_disk(&opts)
        } else if mode.under_init {
            DataDisk {
                state: "distribution",
                device: String::new(),
                uuid: String::new(),
                detail: "engine data is on the distribution's own disk".into(),
            }
        } else {
            DataDisk {
                state: "tmpfs",
                device: String::new(),
                uuid: String::new(),
                detail: "disks are not probed in the sandbox".into(),
            }
        };
        if data.state == "tmpfs" {
            say(&format!(
                "no data disk ({}): engine data is on tmpfs and is lost at power off",
                data.detail
            ));
        }
        let data_mounted = data.state != "tmpfs";
        facts.push(("ECI_DATA_DISK".into(), data.state.into()));
        facts.push(("ECI_DATA_DISK_DEVICE".into(), data.device.clone()));
        facts.push(("ECI_DATA_DISK_UUID".into(), data.uuid.clone()));
        facts.push(("ECI_DATA_DISK_DETAIL".into(), data.detail.clone()));
        facts.push(("ECI_LEGACY_CONTAINERS".into(), record_legacy().to_string()));
        if mode.vm() {
            // SPEC H3: host folders announced by `eci-build boot --share`, while mount points
            // can still be made on the root ([`crate::shares`]).
            let shares = crate::shares::mount_announced();
            let mounted = shares
                .iter()
                .filter(|(_, o)| *o == crate::shares::Outcome::Mounted)
                .count();
            facts.push(("ECI_SHARES".into(), format!("{mounted}/{}", shares.len())));
        }

        // SPEC V2: from here on the image is read-only; /run, /tmp, /var and the data disk are
        // the only writable places. Under another init the root is the distribution's disk,
        // which that init and its tools write to.
        if !mode.under_init {
            phase("root-ro");
            match mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
                None::<&str>,
            ) {
                Ok(()) => say("root filesystem is read-only"),
                Err(e) => say(&format!("cannot make the root read-only: {e}")),
            }
            facts.push(("ECI_ROOT_RO_UPTIME".into(), format!("{:.2}", sys::uptime())));
        }

        let power_buttons = if mode.vm() {
            power_buttons()
        } else {
            Vec::new()
        };
        facts.push(("ECI_POWER_BUTTONS".into(), power_buttons.len().to_string()));

        write_engine_config();
        let services = std::fs::read_to_string(SERVICES_FILE)
            .map_err(|e| format!("cannot read {SERVICES_FILE}: {e}"))
            .and_then(|t| ServicesFile::parse(&t, SERVICES_FILE).map_err(|e| e.to_string()))?;
        let refused = verdict.is_refused();
        let specs = if refused {
            refuse(&verdict, &services, mode.under_init);
            Vec::new()
        } else {
            services.services
        };
        let mut opts = opts;
        if mode.under_init && opts.selftest {
            say("eci.selftest is for the VM (it checks the VM's mounts); not run under another init");
            opts.selftest = false;
        }
        let machine = Machine::new(specs, Backoff::default(), is_executable);
        Ok(Init {
            under_init: mode.under_init,
            opts,
            signals,
            power_buttons,
            machine,
            facts,
            selftest: None,
            shutdown_reason: None,
            data_mounted,
            orphans_reaped: 0,
            refused,
        })
    }

    /// The supervisor loop: until every service has stopped after a shutdown request.
    fn run(&mut self) {
        phase("services");
        let actions = self.machine.start(Instant::now());
        self.execute(actions);
        while !self.machine.is_down() {
            let now = Instant::now();
            let mut deadline = self.machine.next_deadline();
            if let Some((_, started)) = self.selftest {
                let t = started + SELFTEST_TIMEOUT;
                deadline = Some(deadline.map_or(t, |d| d.min(t)));
            }
            let mut fds: Vec<BorrowedFd> = vec![self.signals.as_fd()];
            fds.extend(self.power_buttons.iter().map(|f| f.as_fd()));
            let readable =
                sys::poll_readable(&fds, deadline.map(|d| d.saturating_duration_since(now)));
            if readable[0] {
                for (sig, from) in self.signals.read() {
                    self.on_signal(sig, from);
                }
            }
            let mut pressed = false;
            for (i, f) in self.power_buttons.iter().enumerate() {
                if readable[i + 1] {
                    let mut buf = [0u8; input::EVENT_SIZE * 16];
                    let n = nix::unistd::read(f, &mut buf).unwrap_or(0);
                    pressed |= input::power_pressed(&buf[..n]);
                }
            }
            if pressed {
                self.request_shutdown("power button pressed".into());
            }
            if let Some((pid, started)) = self.selftest {
                if started.elapsed() >= SELFTEST_TIMEOUT {
                    say(&format!(
                        "self-test still running after {} s; stopping it",
                        SELFTEST_TIMEOUT.as_secs()
                    ));
                    let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
                    self.selftest = None;
                    self.request_shutdown("self-test timed out".into());
                }
            }
            let actions = self.machine.tick(Instant::now());
            self.execute(actions);
        }
    }

    fn on_signal(&mut self, sig: Signal, from: u32) {
        match sig {
            Signal::SIGCHLD => self.reap(),
            Signal::SIGHUP => say("SIGHUP ignored (nothing to reload)"),
            _ => {
                let name = match sig {
                    Signal::SIGTERM => "SIGTERM",
                    Signal::SIGINT => "SIGINT (ctrl-alt-del)",
                    Signal::SIGPWR => "SIGPWR",
                    Signal::SIGUSR1 => "SIGUSR1",
                    _ => "SIGUSR2 (poweroff)",
                };
                self.request_shutdown(format!("{name} from pid {from}"));
            }
        }
    }

    fn reap(&mut self) {
        loop {
            match sys::reap_one() {
                Ok(Some(exit)) => {
                    let now = Instant::now();
                    if self.selftest.is_some_and(|(pid, _)| pid == exit.pid) {
                        self.selftest = None;
                        self.request_shutdown(format!("self-test finished ({})", exit.describe()));
                    } else if let Some(actions) =
                        self.machine.exited(exit.pid, &exit.describe(), now)
                    {
                        self.execute(actions);
                    } else {
                        self.orphans_reaped += 1;
                    }
                }
                Ok(None) | Err(_) => return,
            }
        }
    }

    fn request_shutdown(&mut self, reason: String) {
        if self.shutdown_reason.is_some() {
            say(&format!("{reason}; already shutting down"));
            return;
        }
        say(&format!("{reason}: shutting down"));
        self.shutdown_reason = Some(reason);
        let actions = self.machine.shutdown(Instant::now());
        self.execute(actions);
    }

    fn execute(&mut self, actions: Vec<Action>) {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(a) = queue.pop_front() {
            let now = Instant::now();
            let more = match a {
                Action::Log(l) => {
                    say(&l);
                    Vec::new()
                }
                Action::Spawn(i) => match self.spawn(i) {
                    Ok(pid) => self.machine.spawned(i, pid, now),
                    Err(e) => self.machine.spawn_failed(i, &e.to_string(), now),
                },
                Action::CheckReady(i) => {
                    if ready::check(&self.machine.services[i].spec.ready) {
                        self.machine.ready(i, Instant::now())
                    } else {
                        self.machine.not_ready(i, Instant::now());
                        Vec::new()
                    }
                }
                Action::Signal { pid, signal, group } => {
                    let target = if group { -pid } else { pid };
                    if pid > 0 {
                        if let Err(e) = kill(Pid::from_raw(target), signal) {
                            say(&format!("cannot signal {target}: {e}"));
                        }
                    }
                    Vec::new()
                }
                Action::AllStarted => {
                    self.all_started();
                    Vec::new()
                }
                Action::AllStopped => Vec::new(),
            };
            queue.extend(more);
        }
    }

    fn spawn(&mut self, index: usize) -> std::io::Result<i32> {
        let spec = &self.machine.services[index].spec;
        let log_path = Path::new(LOG_DIR).join(format!("{}.log", spec.name));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&log_path)?;
        let mut cmd = Command::new(&spec.command[0]);
        cmd.args(&spec.command[1..])
            .env_clear()
            .env("PATH", PATH_ENV)
            .env("HOME", "/root")
            .envs(&spec.env)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        // Its own session and process group: a stop can kill the whole group, and nothing a
        // service starts can take the console as its controlling terminal.
        sys::own_session(&mut cmd);
        let child = cmd.spawn()?;
        // The child is reaped by the SIGCHLD loop, never through `Child`.
        Ok(child.id() as i32)
    }

    fn all_started(&mut self) {
        let mut summary = Vec::new();
        for s in &self.machine.services {
            let state = match (&s.state, s.ready_at) {
                (crate::supervise::State::Missing, _) => "missing".to_string(),
                (_, Some(at)) => format!("ready@{:.2}", uptime_at(at)),
                (_, None) => "not-ready".to_string(),
            };
            summary.push(format!("{}:{state}", s.spec.name));
            if let Some(at) = s.ready_at {
                let key = format!("ECI_READY_{}", s.spec.name.to_uppercase().replace('-', "_"));
                self.facts.push((key, format!("{:.2}", uptime_at(at))));
            }
        }
        let summary = if self.refused {
            "none (isolation refused: kernel drift)".to_string()
        } else {
            summary.join(" ")
        };
        say(&format!("ready: {summary}"));
        self.facts.push(("ECI_SERVICES".into(), summary));
        if self.opts.selftest {
            self.start_selftest();
        }
    }

    fn start_selftest(&mut self) {
        let mut cmd = Command::new(SELFTEST);
        cmd.env_clear()
            .env("PATH", PATH_ENV)
            .env("HOME", "/root")
            .env(
                "DOCKER_HOST",
                format!("unix://{}", eci_facts::vm_paths::DOCKERD_SOCKET),
            )
            .env("ECI_ORPHANS_REAPED", self.orphans_reaped.to_string())
            .envs(self.facts.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir("/")
            .stdin(Stdio::null());
        sys::own_session(&mut cmd);
        match cmd.spawn() {
            Ok(child) => {
                say(&format!("running {SELFTEST}"));
                self.selftest = Some((child.id() as i32, Instant::now()));
            }
            Err(e) => {
                println!("ECI-SELFTEST-BEGIN\nECI-SELFTEST selftest-error=cannot run {SELFTEST}: {e}\nECI-SELFTEST-END status=fail");
                self.request_shutdown("self-test could not run".into());
            }
        }
    }

    /// After the services stopped: end what is left, flush, unmount, power off. Under another
    /// init only the first step's log line: the machine is not ours to power off.
    fn power_off(&mut self, reason: &str) {
        say(&format!(
            "all services stopped ({reason}); {} orphaned processes were reaped",
            self.orphans_reaped
        ));
        if self.under_init {
            say("exiting");
            return;
        }
        if getpid() == Pid::from_raw(1) {
            // Only PID 1 may do this: -1 means every process it can signal.
            let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
            let deadline = Instant::now() + FINAL_GRACE;
            while Instant::now() < deadline {
                match sys::reap_one() {
                    Ok(Some(_)) => continue,
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                    Err(_) => break,
                }
            }
            let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
            while let Ok(Some(_)) = sys::reap_one() {}
        }
        sync();
        if self.data_mounted {
            say("unmounting the data disk");
            log::close();
            let mut targets: Vec<&str> = mounts::PERSISTENT.iter().map(|(_, t, _)| *t).collect();
            targets.reverse();
            targets.push(mounts::DATA_MOUNT);
            for t in targets {
                if let Err(e) = umount2(t, MntFlags::empty()) {
                    say(&format!("cannot unmount {t}: {e}; remounting it read-only"));
                    let _ = mount(
                        None::<&str>,
                        t,
                        None::<&str>,
                        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                        None::<&str>,
                    );
                }
            }
        }
        sync();
        say("powering off");
        log::close();
        let _ = reboot(RebootMode::RB_POWER_OFF);
    }
}

/// Marks the start of a boot step on the console, `phase <step> at <uptime>`: the boot-phase
/// report (`eci-build test`, bench/boot.sh; builder/src/boot_phases.rs) measures each step as
/// the time to the next mark, so a new step needs only a new mark (issue 13).
fn phase(step: &str) {
    say(&format!("phase {step} at {:.3}", sys::uptime()));
}

fn uptime_at(t: Instant) -> f64 {
    sys::uptime() - t.elapsed().as_secs_f64()
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Hostname and loopback. VM only: under another init both are its business.
fn vm_identity() {
    if let Ok(name) = std::fs::read_to_string("/etc/hostname") {
        if let Err(e) = nix::unistd::sethostname(name.trim()) {
            say(&format!("cannot set the hostname: {e}"));
        }
    }
    if let Err(e) = sys::loopback_up() {
        say(&format!("cannot bring up lo: {e}"));
    }
}

/// SPEC V3: the boot modules, the hardening sysctls, then module loading off for good. Returns
/// the modules that did not load, with their errno and dependencies, for the kernel check.
///
/// Under another init (WSL2) the kernel is shared and may not be the image's: modules are only
/// loaded, and loading only disabled, while the image's pinned kernel runs and has loadable
/// module support at all (the WSL2 kernel eci builds has none). Another kernel is drift that
/// the check refuses; changing it further would only disturb the other distributions.
fn harden(under_init: bool, facts: &mut Vec<(String, String)>) -> Vec<ModuleFailure> {
    let modular = Path::new("/proc/modules").exists();
    let ours = !under_init || running_pinned_kernel();
    phase("modules");
    let (loaded, failures) = if modular && ours {
        load_modules()
    } else {
        if !modular {
            say("the kernel has no loadable module support; no modules to load");
        } else {
            say("the running kernel is not the image's pinned kernel; no modules loaded");
        }
        (0, Vec::new())
    };
    let names: Vec<&str> = failures.iter().map(|f| f.name.as_str()).collect();
    facts.push(("ECI_MODULES_LOADED".into(), loaded.to_string()));
    facts.push(("ECI_MODULES_FAILED".into(), names.join(" ")));

    phase("sysctls");
    let text = std::fs::read_to_string(SYSCTL_FILE).unwrap_or_default();
    let (settings, errors) = crate::sysctl::parse(&text, SYSCTL_FILE);
    for e in errors {
        say(&e.to_string());
    }
    let mut applied = 0;
    for s in &settings {
        match std::fs::write(s.proc_path(), &s.value) {
            Ok(()) => applied += 1,
            Err(e) => say(&format!(
                "{SYSCTL_FILE}:{}: cannot set {} = {}: {e}",
                s.line, s.name, s.value
            )),
        }
    }
    say(&format!(
        "{applied} of {} hardening sysctls applied",
        settings.len()
    ));
    // Module loading ends here for the life of the kernel (SPEC V3).
    if modular && ours {
        if let Err(e) = std::fs::write("/proc/sys/kernel/modules_disabled", "1") {
            say(&format!("cannot disable module loading: {e}"));
        }
    }
    failures
}

/// Whether the running release is the one /etc/eci/kernel-pins.json names.
fn running_pinned_kernel() -> bool {
    let running = read_sys(Path::new("/proc/sys/kernel/osrelease"));
    std::fs::read_to_string(IMAGE_PINS_PATH)
        .ok()
        .and_then(|t| eci_kernel_config::ImagePins::from_json(&t, IMAGE_PINS_PATH).ok())
        .is_some_and(|p| p.kernel_release == running)
}

/// Loads /etc/eci/modules.load (dependencies first). A failure keeps its errno and the
/// module's declared dependencies: the kernel check excuses only modules whose hardware is
/// absent, and tells that from other failures by them.
///
/// Two loaders work through the list (issue 13: ~50 modules one after another took 1.1-1.6 s
/// under TCG, most of it the kernel's work per module, which two vCPUs can do side by side). A
/// module is taken only once every module of the list its .modinfo depends on was tried, so
/// each load sees the same loaded set as in list order, and failures are reported in list order.
/// A module one of whose dependencies failed is not tried at all: the kernel could only refuse
/// it for unresolved symbols, after reading and relocating it and printing every symbol it
/// missed (the Hyper-V drivers after `hv_vmbus` under QEMU).
fn load_modules() -> (usize, Vec<ModuleFailure>) {
    let list = std::fs::read_to_string(MODULES_FILE).unwrap_or_default();
    let paths: Vec<&str> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let name_of = |path: &str| {
        Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().trim_end_matches(".ko").to_string())
            .unwrap_or_default()
    };
    // Module names in .modinfo use '_' where file names may use '-'.
    let key = |name: &str| name.replace('-', "_");
    let keys: Vec<String> = paths.iter().map(|p| key(&name_of(p))).collect();
    let waits: Vec<Vec<usize>> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let deps = std::fs::read(p)
                .ok()
                .and_then(|elf| modinfo::depends(&elf))
                .unwrap_or_default();
            (0..i)
                .filter(|&j| deps.iter().any(|d| key(d) == keys[j]))
                .collect()
        })
        .collect();
    let state = std::sync::Mutex::new((vec![false; paths.len()], vec![false; paths.len()]));
    let changed = std::sync::Condvar::new();
    let results: Vec<std::sync::Mutex<Option<Result<(), ModuleFailure>>>> =
        paths.iter().map(|_| std::sync::Mutex::new(None)).collect();
    let worker = || loop {
        let index = {
            let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                let (taken, done) = &mut *guard;
                if taken.iter().all(|t| *t) {
                    return;
                }
                let next =
                    (0..paths.len()).find(|&i| !taken[i] && waits[i].iter().all(|&d| done[d]));
                if let Some(i) = next {
                    taken[i] = true;
                    break i;
                }
                guard = changed.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
        };
        let failed_dep = waits[index].iter().copied().find(|&d| {
            matches!(
                *results[d].lock().unwrap_or_else(|e| e.into_inner()),
                Some(Err(_))
            )
        });
        let outcome = match failed_dep {
            Some(d) => Err(skip_module(paths[index], name_of(paths[index]), &keys[d])),
            None => load_module(paths[index], name_of(paths[index])),
        };
        *results[index].lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
        state.lock().unwrap_or_else(|e| e.into_inner()).1[index] = true;
        changed.notify_all();
    };
    std::thread::scope(|scope| {
        scope.spawn(worker);
        worker();
    });
    let mut loaded = 0;
    let mut failures = Vec::new();
    for r in results {
        match r.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(Ok(())) => loaded += 1,
            Some(Err(f)) => failures.push(f),
            None => {}
        }
    }
    say(&format!(
        "{loaded} modules loaded, {} failed",
        failures.len()
    ));
    (loaded, failures)
}

/// A module not tried because `failed` (a dependency of it) did not load.
fn skip_module(path: &str, name: String, failed: &str) -> ModuleFailure {
    let depends = std::fs::read(path)
        .ok()
        .and_then(|elf| modinfo::depends(&elf))
        .unwrap_or_default();
    say(&format!(
        "not loading {path}: it needs {failed}, which did not load"
    ));
    ModuleFailure {
        name,
        errno: None,
        depends,
        skipped: true,
    }
}

/// One module: loaded (or already loaded), or why not.
fn load_module(path: &str, name: String) -> Result<(), ModuleFailure> {
    let file = File::open(path).map_err(|e| {
        say(&format!("cannot open {path}: {e}"));
        ModuleFailure {
            name: name.clone(),
            errno: None,
            depends: Vec::new(),
            skipped: false,
        }
    })?;
    match finit_module(&file, c"", ModuleInitFlags::empty()) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => {
            let depends = std::fs::read(path)
                .ok()
                .and_then(|elf| modinfo::depends(&elf))
                .unwrap_or_default();
            // finit_module's ENOENT is not a missing file (the file is open) but symbols
            // no loaded module provides; strerror would say the former.
            if e == Errno::ENOENT {
                say(&format!(
                    "cannot load {path}: unresolved symbols (ENOENT); it needs: {}",
                    if depends.is_empty() {
                        "nothing, per its .modinfo".to_string()
                    } else {
                        depends.join(", ")
                    }
                ));
            } else {
                say(&format!("cannot load {path}: {e}"));
            }
            Err(ModuleFailure {
                name,
                errno: Some(e as i32),
                depends,
                skipped: false,
            })
        }
    }
}

/// Isolation refused: the console block (and, under another init, the kernel log, which
/// `dmesg` in any distribution of the same WSL VM shows), no services.
fn refuse(verdict: &DriftVerdict, services: &ServicesFile, under_init: bool) {
    let names: Vec<String> = services.services.iter().map(|s| s.name.clone()).collect();
    let block = kernel_check::refusal_block(verdict, &names);
    for line in &block {
        say(line);
    }
    if under_init {
        if let Ok(mut kmsg) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
            for line in &block {
                // One write per record; level 3 (error) so it stands out.
                let _ = std::io::Write::write_all(
                    &mut kmsg,
                    format!("<3>eci-init: {line}\n").as_bytes(),
                );
            }
        }
    }
}

/// Mounts the /var tmpfs and copies the image's /var onto it.
fn prepare_var() -> Result<(), String> {
    // Keep a handle on the image's /var: once the tmpfs covers it, /proc/self/fd/N still
    // reaches the covered directory.
    let image_var = File::open("/var").map_err(|e| format!("cannot open /var: {e}"))?;
    do_mount(&mounts::var()).map_err(|e| format!("cannot mount tmpfs on /var: {e}"))?;
    let src = PathBuf::from(format!("/proc/self/fd/{}", image_var.as_raw_fd()));
    match copy_tree(&src, Path::new("/var")) {
        Ok(n) => say(&format!(
            "/var is tmpfs ({n} entries copied from the image)"
        )),
        Err(e) => say(&format!("copying the image's /var: {e}")),
    }
    Ok(())
}

/// Copies a directory tree keeping modes, owners and symlinks. Returns the number of entries.
pub fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<usize> {
    use std::os::unix::fs::MetadataExt;
    let mut count = 0;
    let meta = std::fs::metadata(src)?;
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let m = std::fs::symlink_metadata(&from)?;
        let ft = m.file_type();
        if ft.is_dir() {
            std::fs::create_dir(&to)?;
            count += copy_tree(&from, &to)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else if ft.is_file() {
            std::fs::copy(&from, &to)?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
        } else {
            // Sockets, fifos and device nodes have no place in an image's /var.
            continue;
        }
        std::os::unix::fs::lchown(&to, Some(m.uid()), Some(m.gid()))?;
        count += 1;
    }
    Ok(count)
}

fn data_disk(opts: &BootOptions) -> DataDisk {
    let fallback = |detail: String| DataDisk {
        state: "tmpfs",
        device: String::new(),
        uuid: String::new(),
        detail,
    };
    let only = match &opts.datadisk {
        DataDiskChoice::Disabled => return fallback("eci.datadisk=none".into()),
        DataDiskChoice::Auto => None,
        DataDiskChoice::Device(d) => Some(d.as_str()),
    };
    let started = Instant::now();
    let mut announced = false;
    let decision = loop {
        let devices = block_devices();
        let decision = disk::select(&devices, only);
        if !disk::keep_waiting(
            &decision,
            async_controllers(),
            started.elapsed(),
            opts.datadisk_wait,
        ) {
            break decision;
        }
        if !announced {
            say(&format!(
                "waiting up to {} s for the data disk behind a Hyper-V storage controller",
                opts.datadisk_wait.as_secs()
            ));
            announced = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (state, device, uuid) = match decision {
        Decision::Fallback { reason } => return fallback(reason),
        Decision::UseExisting { device, uuid } => {
            let dev = format!("/dev/{device}");
            let status = run_tool("e2fsck", &["-p", &dev]);
            match disk::fsck_verdict(status) {
                FsckVerdict::Mount => {}
                FsckVerdict::MountAfterFix => say(&format!("e2fsck fixed {dev}")),
                FsckVerdict::Repair => {
                    say(&format!("e2fsck -p found errors on {dev} (status {status}); repairing with e2fsck -y"));
                    let s = run_tool("e2fsck", &["-y", &dev]);
                    say(&format!("e2fsck -y finished with status {s}"));
                }
            }
            ("existing", device, uuid)
        }
        Decision::Format { device } => {
            let dev = format!("/dev/{device}");
            say(&format!(
                "formatting the blank disk {dev} as ext4 ({})",
                disk::DATA_LABEL
            ));
            let status = run_tool(
                "mkfs.ext4",
                &[
                    "-q",
                    "-L",
                    disk::DATA_LABEL,
                    "-m",
                    "0",
                    "-E",
                    "lazy_itable_init=1,lazy_journal_init=1",
                    &dev,
                ],
            );
            if status != 0 {
                return fallback(format!("mkfs.ext4 {dev} failed with status {status}"));
            }
            let uuid = match probe_device(&device, u64::MAX) {
                Signature::Ext { uuid, .. } => uuid,
                _ => String::new(),
            };
            ("formatted", device, uuid)
        }
    };
    let dev = format!("/dev/{device}");
    let mount_at = Path::new(mounts::DATA_MOUNT);
    let mounted = std::fs::create_dir_all(mount_at).and_then(|_| {
        Ok(mount(
            Some(dev.as_str()),
            mount_at,
            Some("ext4"),
            MsFlags::MS_NOATIME,
            None::<&str>,
        )?)
    });
    if let Err(e) = mounted {
        return fallback(format!("cannot mount {dev}: {e}"));
    }
    let mut kept = Vec::new();
    for (dir, target, mode) in mounts::PERSISTENT {
        let on_disk = mount_at.join(dir);
        if on_disk.is_dir() {
            kept.push(*dir);
        }
        let bound = (|| -> std::io::Result<()> {
            if !on_disk.exists() {
                std::fs::create_dir(&on_disk)?;
                std::fs::set_permissions(&on_disk, std::fs::Permissions::from_mode(*mode))?;
            }
            std::fs::create_dir_all(target)?;
            Ok(mount(
                Some(&on_disk),
                *target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?)
        })();
        if let Err(e) = bound {
            say(&format!(
                "cannot bind {} on {target}: {e}",
                on_disk.display()
            ));
        }
    }
    say(&format!(
        "data disk {dev} ({state}, uuid {uuid}) mounted on {}",
        mounts::DATA_MOUNT
    ));
    if !kept.is_empty() {
        say(&format!("kept from the last boot: {}", kept.join(", ")));
    }
    DataDisk {
        state,
        detail: format!("{state} {dev}"),
        device: dev,
        uuid,
    }
}

/// Runs a tool with no stdin (it must never prompt), logging its output.
fn run_tool(program: &str, args: &[&str]) -> i32 {
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => {
            for line in String::from_utf8_lossy(&out.stdout)
                .lines()
                .chain(String::from_utf8_lossy(&out.stderr).lines())
            {
                say(&format!("{program}: {line}"));
            }
            out.status.code().unwrap_or(-1)
        }
        Err(e) => {
            say(&format!("cannot run {program}: {e}"));
            -1
        }
    }
}

fn read_sys(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// /sys/class/block, read into [`BlockDevice`]s.
fn block_devices() -> Vec<BlockDevice> {
    let mounted =
        disk::mounted_devices(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
    let dev_of = |name: &str| -> Option<(u32, u32)> {
        let s = read_sys(&Path::new("/sys/class/block").join(name).join("dev"));
        let (a, b) = s.split_once(':')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    let Ok(entries) = std::fs::read_dir("/sys/class/block") else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in &names {
        let sys = Path::new("/sys/class/block").join(name);
        let real = std::fs::canonicalize(&sys).unwrap_or_default();
        let is_virtual = real.to_string_lossy().contains("/devices/virtual/");
        let is_partition = sys.join("partition").exists();
        let size_bytes = read_sys(&sys.join("size")).parse::<u64>().unwrap_or(0) * 512;
        let partitions: Vec<String> = if is_partition {
            Vec::new()
        } else {
            names
                .iter()
                .filter(|p| {
                    *p != name
                        && p.starts_with(name.as_str())
                        && sys.join(p).join("partition").exists()
                })
                .cloned()
                .collect()
        };
        let is_mounted = std::iter::once(name)
            .chain(partitions.iter())
            .filter_map(|n| dev_of(n))
            .any(|d| mounted.contains(&d));
        let signature = if is_virtual {
            Signature::Unreadable("virtual device, not probed".into())
        } else {
            probe_device(name, size_bytes)
        };
        out.push(BlockDevice {
            name: name.clone(),
            size_bytes,
            is_partition,
            is_virtual,
            removable: read_sys(&sys.join("removable")) == "1",
            read_only: read_sys(&sys.join("ro")) == "1",
            partitions,
            mounted: is_mounted,
            signature,
        });
    }
    out
}

/// Reads the first and last MiB of /dev/NAME.
fn probe_device(name: &str, size: u64) -> Signature {
    use std::io::{Seek, SeekFrom};
    let path = Path::new("/dev").join(name);
    let read = || -> std::io::Result<(Vec<u8>, Vec<u8>)> {
        let mut f = File::open(&path)?;
        let len = if size == u64::MAX {
            f.seek(SeekFrom::End(0))?
        } else {
            size
        };
        f.seek(SeekFrom::Start(0))?;
        let n = (disk::BLANK_PROBE_BYTES as u64).min(len) as usize;
        let mut head = vec![0u8; n];
        f.read_exact(&mut head)?;
        let mut tail = vec![0u8; n];
        f.seek(SeekFrom::Start(len - n as u64))?;
        f.read_exact(&mut tail)?;
        Ok((head, tail))
    };
    match read() {
        Ok((head, tail)) => disk::probe(&head, &tail),
        Err(e) => Signature::Unreadable(e.to_string()),
    }
}

/// Whether a storage controller that finds its disks asynchronously is present (Hyper-V).
fn async_controllers() -> bool {
    let Ok(hosts) = std::fs::read_dir("/sys/class/scsi_host") else {
        return false;
    };
    hosts
        .flatten()
        .any(|h| read_sys(&h.path().join("proc_name")) == "storvsc")
}

/// dockerd's run-time config (crate::engine), root-only.
fn write_engine_config() {
    let result = std::fs::read_to_string(crate::engine::IMAGE_DAEMON_JSON)
        .map_err(|e| format!("cannot read {}: {e}", crate::engine::IMAGE_DAEMON_JSON))
        .and_then(|t| crate::engine::runtime_daemon_json(&t).map_err(|e| e.to_string()))
        .and_then(|text| {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(crate::engine::RUN_DAEMON_JSON)
                .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
                .map_err(|e| format!("cannot write {}: {e}", crate::engine::RUN_DAEMON_JSON))
        });
    if let Err(e) = result {
        say(&format!("{e}; dockerd will not start"));
    }
}

/// Lists legacy containers (SPEC A5) into /run/eci/legacy-containers.json.
fn record_legacy() -> usize {
    let dir = Path::new(eci_paths::DOCKER_CONTAINERS);
    let found = match legacy::scan(dir) {
        Ok(f) => f,
        Err(e) => {
            say(&format!("{e}; legacy containers not checked"));
            return 0;
        }
    };
    for c in &found {
        say(&format!("legacy container: {}", c.message));
    }
    let written = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(legacy::LEGACY_LIST)
        .and_then(|mut f| std::io::Write::write_all(&mut f, legacy::list_json(&found).as_bytes()));
    if let Err(e) = written {
        say(&format!("cannot write {}: {e}", legacy::LEGACY_LIST));
    }
    found.len()
}

mod eci_paths {
    pub const DOCKER_CONTAINERS: &str = "/var/lib/docker/containers";
}

/// Opens every input device that has a power key (the ACPI power button).
fn power_buttons() -> Vec<File> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/class/input") else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("event") {
            continue;
        }
        let caps = read_sys(&e.path().join("device/capabilities/key"));
        if !input::has_key(&caps, input::KEY_POWER) {
            continue;
        }
        let dev = Path::new("/dev/input").join(&name);
        match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&dev)
        {
            Ok(f) => {
                let label = read_sys(&e.path().join("device/name"));
                say(&format!(
                    "watching {} ({label}) for the power button",
                    dev.display()
                ));
                out.push(f);
            }
            Err(err) => say(&format!("cannot open {}: {err}", dev.display())),
        }
    }
    out
}

/// `eci-init poweroff`: asks PID 1 for a clean shutdown (the kernel's poweroff helper).
pub fn request_poweroff() -> Result<(), String> {
    kill(Pid::from_raw(1), Signal::SIGUSR2).map_err(|e| format!("cannot signal PID 1: {e}"))
}
