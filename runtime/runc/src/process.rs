//! The last steps before a container process runs, shared by the container's init and by
//! `exec`: terminal, rlimits, user, capabilities, seccomp, and the executable lookup.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;

use eci_policy::cap_bit;
use eci_policy::spec::{Process, Seccomp};

use nix::errno::Errno;
use nix::sys::prctl;
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::stat::Mode;
use nix::unistd::{self, AccessFlags, Gid, Uid};

use crate::sys::{self, caps, tty, Result};

/// Create a pseudo-terminal in the container's devpts, hand its master to the engine through
/// the console socket and make the slave the process's controlling terminal and stdio.
pub fn setup_terminal(console: RawFd, p: &Process, bind_console: bool) -> Result<()> {
    let master = sys::open(Path::new("/dev/ptmx"), libc::O_RDWR | libc::O_NOCTTY, 0)?;
    tty::unlock(master.as_fd()).map_err(|e| sys::nix_err("unlock pty", e))?;
    let n = tty::number(master.as_fd()).map_err(|e| sys::nix_err("pty number", e))?;
    let name = format!("/dev/pts/{n}");
    let slave = sys::open(Path::new(&name), libc::O_RDWR | libc::O_NOCTTY, 0)?;
    if let Some(sz) = p.console_size {
        let _ = tty::set_window_size(slave.as_fd(), sz.height, sz.width);
    }
    sys::send(console, name.as_bytes(), &[master.as_raw_fd()])?;
    drop(master);
    if bind_console {
        let c = Path::new("/dev/console");
        if !c.exists() {
            let _ = std::fs::File::create(c);
        }
        sys::mount(Some(&name), c, None, libc::MS_BIND, None)?;
    }
    // Fails only for a process group leader, which the container's processes are not; the
    // controlling terminal below then fails with the reason.
    let _ = unistd::setsid();
    tty::set_controlling(slave.as_fd()).map_err(|e| sys::nix_err("set controlling terminal", e))?;
    unistd::dup2_stdin(&slave)
        .and_then(|()| unistd::dup2_stdout(&slave))
        .and_then(|()| unistd::dup2_stderr(&slave))
        .map_err(|e| sys::nix_err("dup2 pty", e))
}

fn rlimit_resource(name: &str) -> Option<Resource> {
    Some(match name {
        "RLIMIT_CPU" => Resource::RLIMIT_CPU,
        "RLIMIT_FSIZE" => Resource::RLIMIT_FSIZE,
        "RLIMIT_DATA" => Resource::RLIMIT_DATA,
        "RLIMIT_STACK" => Resource::RLIMIT_STACK,
        "RLIMIT_CORE" => Resource::RLIMIT_CORE,
        "RLIMIT_RSS" => Resource::RLIMIT_RSS,
        "RLIMIT_NPROC" => Resource::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => Resource::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => Resource::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => Resource::RLIMIT_AS,
        "RLIMIT_LOCKS" => Resource::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => Resource::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => Resource::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => Resource::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => Resource::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => Resource::RLIMIT_RTTIME,
        _ => return None,
    })
}

/// Apply rlimits; raising a hard limit needs CAP_SYS_RESOURCE in the VM's namespace, which no
/// container has (SPEC P8), so such a limit is clamped to what is allowed with a warning.
pub fn set_rlimits(p: &Process, warn: &mut Vec<String>) -> Result<()> {
    for r in &p.rlimits {
        let Some(res) = rlimit_resource(&r.kind) else {
            return Err(format!("unknown rlimit {}", r.kind));
        };
        if setrlimit(res, r.soft, r.hard).is_ok() {
            continue;
        }
        let (_, max) = getrlimit(res).unwrap_or((0, 0));
        let (soft, hard) = (r.soft.min(max), r.hard.min(max));
        let _ = setrlimit(res, soft, hard);
        warn.push(format!(
            "{} {}:{} exceeds the VM's limit; clamped to {soft}:{hard} (SPEC P8)",
            r.kind, r.soft, r.hard
        ));
    }
    Ok(())
}

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

fn mask(names: &[String]) -> u64 {
    names
        .iter()
        .filter_map(|n| cap_bit(n))
        .fold(0u64, |m, b| m | (1u64 << b))
}

/// Switch to the process's user and capabilities (SPEC P1: whatever caps it gets, they are
/// capabilities in the container's user namespace only).
pub fn finalize(p: &Process) -> Result<()> {
    let caps = p.capabilities.clone().unwrap_or_default();
    let last = last_cap();
    let bounding = mask(&caps.bounding);
    for c in 0..=last {
        if bounding & (1u64 << c) == 0 {
            match caps::drop_bounding(c) {
                Ok(()) | Err(Errno::EINVAL) => {}
                Err(e) => {
                    return Err(sys::nix_err(
                        format!("drop capability {c} from the bounding set"),
                        e,
                    ))
                }
            }
        }
    }
    prctl::set_keepcaps(true).map_err(|e| sys::nix_err("keep capabilities", e))?;
    let groups: Vec<Gid> = p
        .user
        .additional_gids
        .iter()
        .map(|&g| Gid::from_raw(g))
        .collect();
    unistd::setgroups(&groups).map_err(|e| sys::nix_err("setgroups", e))?;
    let (uid, gid) = (Uid::from_raw(p.user.uid), Gid::from_raw(p.user.gid));
    unistd::setresgid(gid, gid, gid)
        .map_err(|e| sys::nix_err(format!("setgid {}", p.user.gid), e))?;
    unistd::setresuid(uid, uid, uid)
        .map_err(|e| sys::nix_err(format!("setuid {}", p.user.uid), e))?;
    let _ = prctl::set_keepcaps(false);
    if let Some(u) = p.user.umask {
        nix::sys::stat::umask(Mode::from_bits_truncate(u as libc::mode_t));
    }
    caps::capset(&caps::CapSets {
        effective: mask(&caps.effective),
        permitted: mask(&caps.permitted),
        inheritable: mask(&caps.inheritable),
    })
    .map_err(|e| sys::nix_err("capset", e))?;
    for name in &caps.ambient {
        if let Some(b) = cap_bit(name) {
            let _ = caps::raise_ambient(b);
        }
    }
    Ok(())
}

/// Seccomp placement as runc does it: without no_new_privs the filters must be loaded while
/// CAP_SYS_ADMIN is still held (before `finalize`), with it as late as possible.
pub fn secure(p: &Process, seccomp: Option<&Seccomp>, before_finalize: bool) -> Result<()> {
    if p.no_new_privileges {
        if before_finalize {
            return Ok(());
        }
        prctl::set_no_new_privs().map_err(|e| sys::nix_err("set no_new_privs", e))?;
        return crate::seccomp::load(seccomp);
    }
    if before_finalize {
        return crate::seccomp::load(seccomp);
    }
    Ok(())
}

pub fn env_path(env: &[String]) -> String {
    env.iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .to_string()
}

/// Find the executable the way runc does, so a typo fails `create` with the docker-familiar
/// message instead of at `start`.
pub fn lookup(arg0: &str, env: &[String]) -> Result<String> {
    let runnable = |p: &Path| unistd::access(p, AccessFlags::X_OK).is_ok() && p.is_file();
    if arg0.contains('/') {
        if runnable(Path::new(arg0)) {
            return Ok(arg0.to_string());
        }
        return Err(format!(
            "exec: \"{arg0}\": stat {arg0}: no such file or directory"
        ));
    }
    for dir in env_path(env).split(':') {
        let cand = Path::new(if dir.is_empty() { "." } else { dir }).join(arg0);
        if runnable(&cand) {
            return Ok(cand.display().to_string());
        }
    }
    Err(format!(
        "exec: \"{arg0}\": executable file not found in $PATH"
    ))
}

/// Close every inherited descriptor above the preserved ones at exec time.
pub fn cloexec_from(first: RawFd) {
    if let Ok(rd) = std::fs::read_dir("/proc/self/fd") {
        let fds: Vec<RawFd> = rd
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        for fd in fds {
            if fd >= first {
                sys::set_cloexec(fd, true);
            }
        }
    }
}

pub fn execve(path: &str, args: &[String], env: &[String]) -> Result<()> {
    let to_c = |v: &[String]| -> Result<Vec<CString>> {
        v.iter()
            .map(|s| CString::new(s.as_str()).map_err(|_| format!("{s:?} contains a NUL byte")))
            .collect()
    };
    let p = CString::new(path).map_err(|e| e.to_string())?;
    let a = to_c(args)?;
    let mut e = to_c(env)?;
    if !env.iter().any(|v| v.starts_with("HOME=")) {
        e.push(CString::new("HOME=/").expect("no NUL"));
    }
    let Err(e) = unistd::execve(&p, &a, &e);
    Err(sys::nix_err(format!("exec {path}"), e))
}
