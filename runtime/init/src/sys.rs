//! The syscalls eci-init makes, as small checked wrappers. Everything here is a thin edge; the
//! decisions live in the pure modules.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

fn cstr(p: impl AsRef<OsStr>) -> io::Result<CString> {
    CString::new(p.as_ref().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub fn mount(
    source: &str,
    target: &Path,
    fstype: Option<&str>,
    flags: u64,
    data: &str,
) -> io::Result<()> {
    let source = cstr(source)?;
    let target = cstr(target)?;
    let fstype = fstype.map(cstr).transpose()?;
    let data = cstr(data)?;
    // SAFETY: every pointer is a valid NUL-terminated string or null, alive for the call.
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
            flags as libc::c_ulong,
            if data.as_bytes().is_empty() {
                std::ptr::null()
            } else {
                data.as_ptr().cast()
            },
        )
    })
    .map(drop)
}

pub fn umount(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let target = cstr(target)?;
    // SAFETY: valid string for the call.
    check(unsafe { libc::umount2(target.as_ptr(), flags) }).map(drop)
}

pub fn chroot(path: &Path) -> io::Result<()> {
    let p = cstr(path)?;
    // SAFETY: valid string for the call.
    check(unsafe { libc::chroot(p.as_ptr()) }).map(drop)
}

/// reboot(2) with one of the `LINUX_REBOOT_CMD_*` commands.
pub fn reboot(cmd: libc::c_int) -> io::Result<()> {
    // SAFETY: no pointers; the kernel validates the command.
    check(unsafe { libc::reboot(cmd) }).map(drop)
}

/// Loads a kernel module from an open file (the module was decompressed at image build).
pub fn finit_module(file: &std::fs::File) -> io::Result<()> {
    let empty = c"";
    // SAFETY: a valid fd and an empty parameter string, alive for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            empty.as_ptr(),
            0 as libc::c_int,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: pointer and length describe `name`'s bytes.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}

/// `ip link set lo up`, with the SIOCGIFFLAGS/SIOCSIFFLAGS ioctls.
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket creation.
    let fd =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: we own the new descriptor.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: the ioctls read/write the ifreq we pass.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) })?;
    // SAFETY: reading the union member SIOCGIFFLAGS filled.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: as above.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) }).map(drop)
}

pub fn kill(pid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: no pointers.
    check(unsafe { libc::kill(pid, signal) }).map(drop)
}

pub fn getpid() -> i32 {
    // SAFETY: no preconditions.
    unsafe { libc::getpid() }
}

/// prctl(PR_SET_CHILD_SUBREAPER): orphaned descendants are reparented to this process
/// instead of PID 1 (eci-init under another init reaps its services' orphans itself).
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes one integer argument; no pointers.
    check(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong) }).map(drop)
}

/// flock(LOCK_EX | LOCK_NB): `Ok(false)` if another process holds the lock.
pub fn try_lock(file: &std::fs::File) -> io::Result<bool> {
    // SAFETY: a valid fd; flock takes no pointers.
    match check(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

pub fn sync() {
    // SAFETY: no preconditions.
    unsafe { libc::sync() }
}

/// Runs in a freshly forked child before exec: its own session (no controlling terminal, its
/// own process group) and the signal state a program expects. PID 1 blocks the signals it reads
/// through its signalfd; a blocked mask survives exec, and a service started with SIGTERM
/// blocked would never see a stop request.
pub fn child_setup() -> io::Result<()> {
    // SAFETY: only async-signal-safe calls (setsid, sigemptyset, sigprocmask, signal) on
    // local data.
    unsafe {
        check(libc::setsid())?;
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        check(libc::sigprocmask(
            libc::SIG_SETMASK,
            &set,
            std::ptr::null_mut(),
        ))?;
        for &s in HANDLED_SIGNALS {
            libc::signal(s, libc::SIG_DFL);
        }
    }
    Ok(())
}

/// Seconds since boot, including suspend (what /proc/uptime shows).
pub fn uptime() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// A child's end, as reaped by waitpid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub pid: i32,
    pub status: i32,
}

impl Exit {
    pub fn describe(&self) -> String {
        let s = self.status;
        if libc::WIFEXITED(s) {
            format!("exit status {}", libc::WEXITSTATUS(s))
        } else if libc::WIFSIGNALED(s) {
            format!("killed by signal {}", libc::WTERMSIG(s))
        } else {
            format!("wait status {s:#x}")
        }
    }
}

/// Reaps one exited child without blocking. `Ok(None)`: children exist but none has exited;
/// `Err` with ECHILD: no children at all.
pub fn reap_one() -> io::Result<Option<Exit>> {
    let mut status = 0;
    // SAFETY: status is a valid out pointer.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    match pid {
        0 => Ok(None),
        p if p > 0 => Ok(Some(Exit { pid: p, status })),
        _ => Err(io::Error::last_os_error()),
    }
}

/// The signals PID 1 handles, blocked and delivered through a signalfd so one poll loop sees
/// signals, input events and timeouts. Children get an empty mask (std resets it at spawn).
pub struct SignalFd {
    fd: OwnedFd,
}

pub const HANDLED_SIGNALS: &[libc::c_int] = &[
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGPWR,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGHUP,
];

impl SignalFd {
    pub fn new() -> io::Result<SignalFd> {
        // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: set is valid for these calls.
        unsafe {
            libc::sigemptyset(&mut set);
            for &s in HANDLED_SIGNALS {
                libc::sigaddset(&mut set, s);
            }
        }
        // SAFETY: valid set, null old-set.
        check(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) })?;
        // SAFETY: valid set.
        let fd =
            check(unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) })?;
        Ok(SignalFd {
            // SAFETY: we own the new descriptor.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Drains pending signals; each entry is (signal, sending pid).
    pub fn read(&self) -> Vec<(i32, u32)> {
        let mut out = Vec::new();
        loop {
            // SAFETY: signalfd_siginfo is plain data.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: reading into a buffer of exactly `size` bytes.
            let n = unsafe {
                libc::read(
                    self.raw(),
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    size,
                )
            };
            if n != size as isize {
                return out;
            }
            out.push((info.ssi_signo as i32, info.ssi_pid));
        }
    }
}

/// poll(2) for readability; returns which of `fds` are readable. EINTR counts as nothing ready.
pub fn poll_readable(fds: &[RawFd], timeout: Option<Duration>) -> Vec<bool> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32 + 1);
    // SAFETY: pfds is a valid array of the given length.
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if n <= 0 {
        return vec![false; fds.len()];
    }
    pfds.iter()
        .map(|p| p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0)
        .collect()
}

/// Reads whatever is available from a non-blocking descriptor.
pub fn read_available(fd: RawFd, buf: &mut [u8]) -> usize {
    // SAFETY: buf is valid for writes of its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    n.max(0) as usize
}

/// Makes fd 0 /dev/null: PID 1 never reads the console (SPEC V4).
pub fn stdin_to_null() -> io::Result<()> {
    let null = std::fs::File::open("/dev/null")?;
    // SAFETY: both descriptors are valid.
    check(unsafe { libc::dup2(null.as_raw_fd(), 0) }).map(drop)
}
