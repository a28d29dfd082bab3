//! The last steps before a container process runs, shared by the container's init and by
//! `exec`: terminal, rlimits, user, capabilities, seccomp, and the executable lookup.

use std::ffi::CString;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use eci_policy::cap_bit;
use eci_policy::spec::{Process, Seccomp};

use crate::sys::{self, errno, Result};

/// Create a pseudo-terminal in the container's devpts, hand its master to the engine through
/// the console socket and make the slave the process's controlling terminal and stdio.
pub fn setup_terminal(console: RawFd, p: &Process, bind_console: bool) -> Result<()> {
    let master = sys::open(Path::new("/dev/ptmx"), libc::O_RDWR | libc::O_NOCTTY, 0)?;
    let mut unlock: libc::c_int = 0;
    let mut n: libc::c_uint = 0;
    // SAFETY: ioctls on the master fd with correctly typed out-pointers.
    unsafe {
        if libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &mut unlock) < 0 {
            return Err(errno("unlock pty"));
        }
        if libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) < 0 {
            return Err(errno("pty number"));
        }
    }
    let name = format!("/dev/pts/{n}");
    let slave = sys::open(Path::new(&name), libc::O_RDWR | libc::O_NOCTTY, 0)?;
    if let Some(sz) = p.console_size {
        let ws = libc::winsize {
            ws_row: sz.height,
            ws_col: sz.width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: valid winsize pointer.
        unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
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
    // SAFETY: setsid/ioctl/dup2 on our own descriptors.
    unsafe {
        libc::setsid();
        if libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) < 0 {
            return Err(errno("set controlling terminal"));
        }
        for fd in 0..3 {
            if libc::dup2(slave.as_raw_fd(), fd) < 0 {
                return Err(errno("dup2 pty"));
            }
        }
    }
    Ok(())
}

fn rlimit_resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name {
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
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
        let lim = libc::rlimit {
            rlim_cur: r.soft,
            rlim_max: r.hard,
        };
        // SAFETY: valid rlimit pointer.
        if unsafe { libc::setrlimit(res, &lim) } == 0 {
            continue;
        }
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: valid out-pointer.
        unsafe { libc::getrlimit(res, &mut cur) };
        let clamped = libc::rlimit {
            rlim_cur: r.soft.min(cur.rlim_max),
            rlim_max: r.hard.min(cur.rlim_max),
        };
        // SAFETY: valid rlimit pointer.
        unsafe { libc::setrlimit(res, &clamped) };
        warn.push(format!(
            "{} {}:{} exceeds the VM's limit; clamped to {}:{} (SPEC P8)",
            r.kind, r.soft, r.hard, clamped.rlim_cur, clamped.rlim_max
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

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Switch to the process's user and capabilities (SPEC P1: whatever caps it gets, they are
/// capabilities in the container's user namespace only).
pub fn finalize(p: &Process) -> Result<()> {
    let caps = p.capabilities.clone().unwrap_or_default();
    let last = last_cap();
    let bounding = mask(&caps.bounding);
    for c in 0..=last {
        if bounding & (1u64 << c) == 0 {
            // SAFETY: prctl with integer arguments.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, c as libc::c_ulong, 0, 0, 0) } < 0
                && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
            {
                return Err(errno(format!("drop capability {c} from the bounding set")));
            }
        }
    }
    // SAFETY: prctl/setgroups/setres[ug]id with valid arguments.
    unsafe {
        if libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0 {
            return Err(errno("keep capabilities"));
        }
        let groups: Vec<libc::gid_t> = p.user.additional_gids.clone();
        if libc::setgroups(groups.len(), groups.as_ptr()) < 0 {
            return Err(errno("setgroups"));
        }
        if libc::setresgid(p.user.gid, p.user.gid, p.user.gid) < 0 {
            return Err(errno(format!("setgid {}", p.user.gid)));
        }
        if libc::setresuid(p.user.uid, p.user.uid, p.user.uid) < 0 {
            return Err(errno(format!("setuid {}", p.user.uid)));
        }
        libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0);
        if let Some(u) = p.user.umask {
            libc::umask(u as libc::mode_t);
        }
    }
    let eff = mask(&caps.effective);
    let perm = mask(&caps.permitted);
    let inh = mask(&caps.inheritable);
    let hdr = CapHeader {
        version: 0x2008_0522,
        pid: 0,
    };
    let data = [
        CapData {
            effective: eff as u32,
            permitted: perm as u32,
            inheritable: inh as u32,
        },
        CapData {
            effective: (eff >> 32) as u32,
            permitted: (perm >> 32) as u32,
            inheritable: (inh >> 32) as u32,
        },
    ];
    // SAFETY: header and two data structs as capset(2) expects for version 3.
    if unsafe { libc::syscall(libc::SYS_capset, &hdr, data.as_ptr()) } < 0 {
        return Err(errno("capset"));
    }
    for name in &caps.ambient {
        if let Some(b) = cap_bit(name) {
            // SAFETY: prctl with integer arguments.
            unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    b as libc::c_ulong,
                    0,
                    0,
                )
            };
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
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
            return Err(errno("set no_new_privs"));
        }
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
    let runnable = |p: &Path| {
        sys::cstr(p).is_ok_and(|c| {
            // SAFETY: valid C string.
            unsafe { libc::access(c.as_ptr(), libc::X_OK) == 0 }
        }) && p.is_file()
    };
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
    let mut ap: Vec<*const libc::c_char> = a.iter().map(|s| s.as_ptr()).collect();
    ap.push(std::ptr::null());
    let mut ep: Vec<*const libc::c_char> = e.iter().map(|s| s.as_ptr()).collect();
    ep.push(std::ptr::null());
    // SAFETY: NUL-terminated arrays of valid C strings.
    unsafe { libc::execve(p.as_ptr(), ap.as_ptr(), ep.as_ptr()) };
    Err(errno(format!("exec {path}")))
}
