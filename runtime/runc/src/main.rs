//! eci-runc: a runc-compatible OCI runtime that runs every container in its own user namespace
//! with an exclusive id range (see runtime/README.md).

mod alloc;
mod audit;
mod binds;
mod build_step;
mod cgroup;
mod create;
mod devices;
mod exec;
mod hooks;
mod log;
mod process;
mod rootfs;
mod seccomp;
mod share;
mod state;
mod sys;

use std::fs;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use eci_policy::spec::Resources;
use eci_policy::Policy;

use crate::state::State;

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Where the allocator keeps its state unless ECI_RUNC_STATE_DIR says otherwise.
pub const DEFAULT_ALLOC_DIR: &str = "/run/eci-runc-ids";

#[derive(Parser)]
#[command(
    name = "eci-runc",
    disable_version_flag = true,
    about = "runc-compatible runtime with exclusive user namespaces"
)]
struct Cli {
    /// Folder for container state (runc's --root).
    #[arg(long, global = true, default_value = "/run/eci-runc")]
    root: PathBuf,
    /// Log file; errors are also printed on stderr.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// text or json (runc's shape: level, msg, time).
    #[arg(long = "log-format", global = true, default_value = "text")]
    log_format: String,
    /// Accept systemd-style cgroupsPath (slice:prefix:name); cgroups are still managed directly.
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    #[arg(long, global = true)]
    debug: bool,
    /// Isolation policy file (default /etc/eci/policy.json).
    /// Also ECI_RUNC_POLICY.
    #[arg(long, global = true)]
    policy: Option<PathBuf>,
    #[arg(long, global = true, hide = true)]
    criu: Option<String>,
    #[arg(long, global = true, hide = true)]
    rootless: Option<String>,
    #[arg(short = 'v', long = "version")]
    version: bool,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(clap::Args)]
struct CreateArgs {
    #[arg(short = 'b', long, default_value = ".")]
    bundle: PathBuf,
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    /// Accepted for compatibility: the session keyring is never shared with the VM here.
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: i32,
    id: String,
}

#[derive(Subcommand)]
enum Cmd {
    Create(CreateArgs),
    Run {
        #[command(flatten)]
        c: CreateArgs,
        #[arg(short = 'd', long)]
        detach: bool,
        #[arg(long)]
        keep: bool,
    },
    Start {
        id: String,
    },
    State {
        id: String,
    },
    Kill {
        #[arg(short = 'a', long)]
        all: bool,
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    Delete {
        #[arg(short = 'f', long)]
        force: bool,
        id: String,
    },
    Exec {
        #[arg(long = "console-socket")]
        console_socket: Option<PathBuf>,
        #[arg(long)]
        cwd: Option<String>,
        #[arg(short = 'e', long)]
        env: Vec<String>,
        #[arg(short = 't', long)]
        tty: bool,
        #[arg(short = 'u', long)]
        user: Option<String>,
        #[arg(short = 'g', long = "additional-gids")]
        additional_gids: Vec<u32>,
        #[arg(short = 'p', long)]
        process: Option<PathBuf>,
        #[arg(short = 'd', long)]
        detach: bool,
        #[arg(long = "pid-file")]
        pid_file: Option<PathBuf>,
        #[arg(long = "process-label")]
        process_label: Option<String>,
        #[arg(long)]
        apparmor: Option<String>,
        #[arg(long = "no-new-privs")]
        no_new_privs: bool,
        #[arg(short = 'c', long = "cap")]
        cap: Vec<String>,
        #[arg(long = "preserve-fds", default_value_t = 0)]
        preserve_fds: i32,
        #[arg(long)]
        cgroup: Option<String>,
        #[arg(long = "ignore-paused")]
        ignore_paused: bool,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    Ps {
        #[arg(short = 'f', long, default_value = "table")]
        format: String,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    Features,
    Events {
        #[arg(long)]
        stats: bool,
        #[arg(long, default_value = "5s")]
        interval: String,
        id: String,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    Update {
        #[arg(short = 'r', long)]
        resources: Option<PathBuf>,
        #[arg(short = 'm', long)]
        memory: Option<String>,
        #[arg(long = "memory-swap")]
        memory_swap: Option<String>,
        #[arg(long = "memory-reservation")]
        memory_reservation: Option<String>,
        #[arg(long = "cpu-shares")]
        cpu_shares: Option<u64>,
        #[arg(long = "cpu-quota")]
        cpu_quota: Option<i64>,
        #[arg(long = "cpu-period")]
        cpu_period: Option<u64>,
        #[arg(long = "cpuset-cpus")]
        cpuset_cpus: Option<String>,
        #[arg(long = "cpuset-mems")]
        cpuset_mems: Option<String>,
        #[arg(long = "pids-limit")]
        pids_limit: Option<i64>,
        id: String,
    },
    List {
        #[arg(short = 'f', long, default_value = "table")]
        format: String,
        #[arg(short = 'q', long)]
        quiet: bool,
    },
}

/// Global settings shared by the commands.
pub struct Global {
    pub root: PathBuf,
    pub systemd_cgroup: bool,
    pub policy_path: PathBuf,
    pub alloc_dir: PathBuf,
}

impl Global {
    pub fn policy(&self) -> Result<Policy, String> {
        Policy::load(&self.policy_path).map_err(|e| e.to_string())
    }

    pub fn allocator_with(&self, p: &Policy) -> alloc::Allocator {
        alloc::Allocator::new(&self.alloc_dir, p.pool_start, p.pool_ranges)
    }

    /// For release, which does not depend on the pool's geometry.
    pub fn allocator(&self) -> alloc::Allocator {
        let p = self.policy().unwrap_or_default();
        self.allocator_with(&p)
    }
}

fn parse_signal(s: &str) -> Result<i32, String> {
    if let Ok(n) = s.parse::<i32>() {
        return Ok(n);
    }
    let name = s.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" | "CLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        other => {
            if let Some(rest) = other.strip_prefix("RTMIN+") {
                libc::SIGRTMIN()
                    + rest
                        .parse::<i32>()
                        .map_err(|_| format!("unknown signal {s:?}"))?
            } else if other == "RTMIN" {
                libc::SIGRTMIN()
            } else if other == "RTMAX" {
                libc::SIGRTMAX()
            } else {
                return Err(format!("unknown signal {s:?}"));
            }
        }
    };
    Ok(n)
}

fn parse_bytes(s: &str) -> Result<i64, String> {
    let t = s.trim().to_ascii_lowercase();
    if t == "-1" {
        return Ok(-1);
    }
    let t = t.trim_end_matches('b');
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    num.parse::<i64>()
        .map(|n| n * mult)
        .map_err(|_| format!("invalid size {s:?}"))
}

fn start(g: &Global, id: &str) -> Result<(), String> {
    let st = State::load(&g.root, id)?;
    match st.status(&g.root) {
        "created" => {}
        "stopped" => return Err("cannot start a container that has stopped".into()),
        _ => return Err("cannot start an already running container".into()),
    }
    let fifo = state::dir(&g.root, id).join(state::FIFO);
    let fd = sys::open(&fifo, libc::O_RDONLY | libc::O_NONBLOCK, 0)?;
    loop {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 50) };
        if n > 0 && pfd.revents & libc::POLLIN != 0 {
            let mut b = [0u8; 1];
            // SAFETY: reading into a local buffer.
            let r = unsafe { libc::read(fd.as_raw_fd(), b.as_mut_ptr() as *mut libc::c_void, 1) };
            if r == 1 {
                break;
            }
        }
        if !st.alive() {
            return Err("container init exited before start".into());
        }
    }
    let _ = fs::remove_file(&fifo);
    if let Some(h) = st.config(&g.root).ok().and_then(|c| c.hooks) {
        if let Err(e) = hooks::run(
            &h.poststart,
            &hooks::state_json(&st, "running"),
            "poststart",
        ) {
            log::warn(&e);
        }
    }
    Ok(())
}

fn kill(g: &Global, id: &str, all: bool, signal: &str) -> Result<(), String> {
    let sig = parse_signal(signal)?;
    let st = State::load(&g.root, id)?;
    if !st.alive() {
        return Err("container not running".into());
    }
    if all {
        for p in st.cgroup.pids() {
            let _ = sys::kill(p, sig);
        }
        if sig == libc::SIGKILL && st.cgroup.is_frozen() {
            let _ = st.cgroup.freeze(false);
        }
        return Ok(());
    }
    sys::kill(st.pid, sig)
}

fn delete(g: &Global, id: &str, force: bool) -> Result<(), String> {
    state::valid_id(id)?;
    let dir = state::dir(&g.root, id);
    let st = match State::load(&g.root, id) {
        Ok(st) => st,
        Err(e) if dir.is_dir() && !dir.join("state.json").exists() => {
            // A create that died before writing any state: nothing runs, only the range and
            // the folder are left.
            let _ = e;
            g.allocator().release(id, &g.root)?;
            return fs::remove_dir_all(&dir).map_err(|e| format!("remove {}: {e}", dir.display()));
        }
        Err(e) => return Err(e),
    };
    let status = st.status(&g.root);
    if (status == "running" || status == "paused") && !force {
        return Err(format!(
            "cannot delete container {id} that is not stopped: {status}"
        ));
    }
    if st.alive() {
        let _ = sys::kill(st.pid, libc::SIGKILL);
    }
    for p in st.cgroup.pids() {
        let _ = sys::kill(p, libc::SIGKILL);
    }
    if st.cgroup.is_frozen() {
        let _ = st.cgroup.freeze(false);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while (st.alive() || !st.cgroup.pids().is_empty()) && std::time::Instant::now() < deadline {
        for p in st.cgroup.pids() {
            let _ = sys::kill(p, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    st.cgroup.destroy()?;
    if let Some(h) = st.config(&g.root).ok().and_then(|c| c.hooks) {
        if let Err(e) = hooks::run(&h.poststop, &hooks::state_json(&st, "stopped"), "poststop") {
            log::warn(&e);
        }
    }
    g.allocator().release(id, &g.root)?;
    fs::remove_dir_all(&dir).map_err(|e| format!("remove {}: {e}", dir.display()))
}

fn ps(g: &Global, id: &str, format: &str, ps_args: &[String]) -> Result<(), String> {
    let st = State::load(&g.root, id)?;
    let pids = st.cgroup.pids();
    if format == "json" {
        println!("{}", serde_json::to_string(&pids).expect("ints"));
        return Ok(());
    }
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .map_err(|e| format!("run ps: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    let col = header
        .split_whitespace()
        .position(|c| c == "PID")
        .ok_or("ps output has no PID column")?;
    println!("{header}");
    for l in lines {
        if let Some(p) = l
            .split_whitespace()
            .nth(col)
            .and_then(|p| p.parse::<i32>().ok())
        {
            if pids.contains(&p) {
                println!("{l}");
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn update(
    g: &Global,
    id: &str,
    file: Option<&Path>,
    memory: Option<&str>,
    swap: Option<&str>,
    reservation: Option<&str>,
    shares: Option<u64>,
    quota: Option<i64>,
    period: Option<u64>,
    cpus: Option<&str>,
    mems: Option<&str>,
    pids: Option<i64>,
) -> Result<(), String> {
    let st = State::load(&g.root, id)?;
    let mut r: Resources = match file {
        Some(p) if p == Path::new("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| format!("read resources from stdin: {e}"))?;
            serde_json::from_str(&s).map_err(|e| format!("resources JSON: {e}"))?
        }
        Some(p) => {
            let s = fs::read_to_string(p).map_err(|e| format!("read {}: {e}", p.display()))?;
            serde_json::from_str(&s).map_err(|e| format!("{}: {e}", p.display()))?
        }
        None => Resources::default(),
    };
    // Device rules never change after create: the safe set is fixed (SPEC P3).
    r.devices.clear();
    {
        let m = r.memory.get_or_insert_with(Default::default);
        if let Some(v) = memory {
            m.limit = Some(parse_bytes(v)?);
        }
        if let Some(v) = swap {
            m.swap = Some(parse_bytes(v)?);
        }
        if let Some(v) = reservation {
            m.reservation = Some(parse_bytes(v)?);
        }
    }
    {
        let c = r.cpu.get_or_insert_with(Default::default);
        c.shares = shares.or(c.shares);
        c.quota = quota.or(c.quota);
        c.period = period.or(c.period);
        if let Some(v) = cpus {
            c.cpus = Some(v.to_string());
        }
        if let Some(v) = mems {
            c.mems = Some(v.to_string());
        }
    }
    if let Some(p) = pids {
        r.pids = Some(eci_policy::spec::Pids { limit: p });
    }
    st.cgroup.apply(&r)
}

fn events(g: &Global, id: &str, stats: bool, interval: &str) -> Result<(), String> {
    let secs: f64 = interval
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("invalid interval {interval:?} (use e.g. 5s)"))?;
    loop {
        let st = State::load(&g.root, id)?;
        if !st.alive() {
            return Err(format!("container {id} is not running"));
        }
        let ev = serde_json::json!({"type": "stats", "id": id, "data": st.cgroup.stats()});
        println!("{ev}");
        if stats {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs_f64(secs.max(0.1)));
    }
}

fn list(g: &Global, format: &str, quiet: bool) -> Result<(), String> {
    let mut states = Vec::new();
    if let Ok(rd) = fs::read_dir(&g.root) {
        for e in rd.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if let Ok(st) = State::load(&g.root, &id) {
                states.push(st);
            }
        }
    }
    states.sort_by(|a, b| a.id.cmp(&b.id));
    if quiet {
        for s in &states {
            println!("{}", s.id);
        }
    } else if format == "json" {
        let v: Vec<_> = states.iter().map(|s| s.to_runc(&g.root)).collect();
        println!("{}", serde_json::Value::from(v));
    } else {
        println!("ID\tPID\tSTATUS\tBUNDLE\tCREATED\tOWNER");
        for s in &states {
            let v = s.to_runc(&g.root);
            println!(
                "{}\t{}\t{}\t{}\t{}\troot",
                s.id,
                v["pid"],
                v["status"].as_str().unwrap_or(""),
                s.bundle,
                s.created
            );
        }
    }
    Ok(())
}

fn features() -> serde_json::Value {
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.1.0",
        "hooks": ["prestart", "createRuntime", "poststart", "poststop"],
        "mountOptions": ["async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec",
            "noatime", "nodev", "nodiratime", "noexec", "norelatime", "nostrictatime", "nosuid",
            "private", "rbind", "relatime", "ro", "rprivate", "rshared", "rslave", "runbindable",
            "rw", "shared", "slave", "strictatime", "suid", "sync", "unbindable"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": eci_policy::CAPABILITIES,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {"enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                            "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                              "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"]},
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
        },
        "annotations": {
            "io.github.eci.runc.version": VERSION,
            "io.github.eci.runc.isolation": "user namespace with an exclusive 65536-id range per container",
        },
    })
}

fn run() -> Result<i32, String> {
    let cli = Cli::parse();
    if cli.version {
        println!("eci-runc version {VERSION}\ncommit: eci-{VERSION}\nspec: 1.0.2-dev");
        return Ok(0);
    }
    log::init(
        cli.log.as_ref().map(|p| p.display().to_string()),
        cli.log_format == "json",
        cli.debug,
    );
    log::debug(&format!(
        "eci-runc {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    ));
    let g = Global {
        root: cli.root.clone(),
        systemd_cgroup: cli.systemd_cgroup,
        policy_path: cli
            .policy
            .clone()
            .or_else(|| std::env::var_os("ECI_RUNC_POLICY").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(eci_vm_config_policy_path())),
        alloc_dir: std::env::var_os("ECI_RUNC_STATE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ALLOC_DIR)),
    };
    let Some(cmd) = cli.cmd else {
        return Err("no command given; see eci-runc --help".into());
    };
    let create_opts = |c: &CreateArgs| create::CreateOpts {
        id: c.id.clone(),
        bundle: c.bundle.clone(),
        pid_file: c.pid_file.clone(),
        console_socket: c.console_socket.clone(),
        no_pivot: c.no_pivot,
        preserve_fds: c.preserve_fds,
    };
    match cmd {
        Cmd::Create(c) => {
            let _ = c.no_new_keyring;
            create::create(&g, &create_opts(&c))?;
        }
        Cmd::Run { c, detach, keep } => {
            if !detach {
                // SAFETY: prctl with integer arguments.
                unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
            }
            let pid = create::create(&g, &create_opts(&c))?;
            start(&g, &c.id)?;
            if detach {
                return Ok(0);
            }
            let code = sys::waitpid(pid)?;
            if !keep {
                delete(&g, &c.id, true)?;
            }
            return Ok(code);
        }
        Cmd::Start { id } => start(&g, &id)?,
        Cmd::State { id } => {
            let st = State::load(&g.root, &id)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&st.to_runc(&g.root)).expect("json")
            );
        }
        Cmd::Kill { all, id, signal } => kill(&g, &id, all, &signal)?,
        Cmd::Delete { force, id } => delete(&g, &id, force)?,
        Cmd::Exec {
            console_socket,
            cwd,
            env,
            tty,
            user,
            additional_gids,
            process,
            detach,
            pid_file,
            process_label: _,
            apparmor: _,
            no_new_privs,
            cap,
            preserve_fds,
            cgroup: _,
            ignore_paused: _,
            id,
            args,
        } => {
            let o = exec::ExecOpts {
                id,
                process,
                detach,
                pid_file,
                console_socket,
                tty,
                cwd,
                env,
                user,
                caps: cap,
                no_new_privs,
                preserve_fds,
                additional_gids,
                args,
            };
            return exec::exec(&g, &o);
        }
        Cmd::Ps {
            format,
            id,
            ps_args,
        } => ps(&g, &id, &format, &ps_args)?,
        Cmd::Features => println!(
            "{}",
            serde_json::to_string_pretty(&features()).expect("json")
        ),
        Cmd::Events {
            stats,
            interval,
            id,
        } => events(&g, &id, stats, &interval)?,
        Cmd::Pause { id } => {
            let st = State::load(&g.root, &id)?;
            if st.status(&g.root) != "running" {
                return Err(format!("container {id} is not running"));
            }
            st.cgroup.freeze(true)?;
        }
        Cmd::Resume { id } => {
            let st = State::load(&g.root, &id)?;
            if st.status(&g.root) != "paused" {
                return Err(format!("container {id} is not paused"));
            }
            st.cgroup.freeze(false)?;
        }
        Cmd::Update {
            resources,
            memory,
            memory_swap,
            memory_reservation,
            cpu_shares,
            cpu_quota,
            cpu_period,
            cpuset_cpus,
            cpuset_mems,
            pids_limit,
            id,
        } => update(
            &g,
            &id,
            resources.as_deref(),
            memory.as_deref(),
            memory_swap.as_deref(),
            memory_reservation.as_deref(),
            cpu_shares,
            cpu_quota,
            cpu_period,
            cpuset_cpus.as_deref(),
            cpuset_mems.as_deref(),
            pids_limit,
        )?,
        Cmd::List { format, quiet } => list(&g, &format, quiet)?,
    }
    Ok(0)
}

fn eci_vm_config_policy_path() -> &'static str {
    eci_vm_config::POLICY_PATH
}

fn main() {
    match run() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            log::error(&e);
            // An isolation refusal also goes to the audit log (SPEC S5).
            audit::flush(&e);
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("9"), Ok(9));
        assert_eq!(parse_signal("SIGTERM"), Ok(libc::SIGTERM));
        assert_eq!(parse_signal("term"), Ok(libc::SIGTERM));
        assert_eq!(parse_signal("KILL"), Ok(libc::SIGKILL));
        assert_eq!(parse_signal("SIGRTMIN+1"), Ok(libc::SIGRTMIN() + 1));
        assert!(parse_signal("SIGNOPE").is_err());
    }

    #[test]
    fn sizes_with_units() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("64m"), Ok(64 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes("-1"), Ok(-1));
        assert!(parse_bytes("lots").is_err());
    }

    #[test]
    fn cli_accepts_what_containerd_sends() {
        let c = Cli::try_parse_from([
            "eci-runc",
            "--root",
            "/r",
            "--log",
            "/l",
            "--log-format",
            "json",
            "--systemd-cgroup",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/p",
            "--console-socket",
            "/s",
            "--no-pivot",
            "--no-new-keyring",
            "id1",
        ])
        .unwrap();
        assert!(matches!(c.cmd, Some(Cmd::Create(_))));
        let c = Cli::try_parse_from([
            "eci-runc",
            "--root",
            "/r",
            "exec",
            "--process",
            "/p.json",
            "--detach",
            "--pid-file",
            "/pid",
            "id1",
        ])
        .unwrap();
        assert!(matches!(c.cmd, Some(Cmd::Exec { detach: true, .. })));
        let c = Cli::try_parse_from(["eci-runc", "kill", "--all", "id1", "9"]).unwrap();
        assert!(matches!(c.cmd, Some(Cmd::Kill { all: true, .. })));
        let c =
            Cli::try_parse_from(["eci-runc", "exec", "-t", "id1", "sh", "-c", "ls -l"]).unwrap();
        let Some(Cmd::Exec { args, .. }) = c.cmd else {
            panic!()
        };
        assert_eq!(args, vec!["sh", "-c", "ls -l"]);
        let c = Cli::try_parse_from(["eci-runc", "delete", "--force", "id1"]).unwrap();
        assert!(matches!(c.cmd, Some(Cmd::Delete { force: true, .. })));
        let c = Cli::try_parse_from(["eci-runc", "update", "--resources", "-", "id1"]).unwrap();
        assert!(matches!(c.cmd, Some(Cmd::Update { .. })));
        let c = Cli::try_parse_from(["eci-runc", "ps", "--format", "json", "id1"]).unwrap();
        assert!(matches!(c.cmd, Some(Cmd::Ps { .. })));
    }
}
