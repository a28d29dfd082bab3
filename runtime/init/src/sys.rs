//! The kernel edge nix does not cover safely, and the few compositions over nix the supervisor
//! loop shares. Every other system call in eci-init goes through nix directly; this is the only
//! module with `unsafe`, and each block says which invariant makes it sound.

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd as NixSignalFd};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
use nix::time::{clock_gettime, ClockId};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

nix::ioctl_readwrite_bad!(get_interface_flags, libc::SIOCGIFFLAGS, libc::ifreq);
nix::ioctl_write_ptr_bad!(set_interface_flags, libc::SIOCSIFFLAGS, libc::ifreq);

/// `ip link set lo up`, with the SIOCGIFFLAGS/SIOCSIFFLAGS ioctls. nix has no call that sets an
/// interface's flags, only the ioctl macros, whose functions are unsafe.
pub fn loopback_up() -> nix::Result<()> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let mut name = [0 as libc::c_char; libc::IFNAMSIZ];
    for (dst, src) in name.iter_mut().zip(b"lo") {
        *dst = *src as libc::c_char;
    }
    let mut req = libc::ifreq {
        ifr_name: name,
        ifr_ifru: libc::__c_anonymous_ifr_ifru { ifru_flags: 0 },
    };
    // SAFETY: `sock` is an open socket for the whole call and `req` a live, exclusively
    // borrowed ifreq naming "lo" (NUL-terminated); SIOCGIFFLAGS writes only inside it.
    unsafe { get_interface_flags(sock.as_raw_fd(), &mut req) }?;
    // SAFETY: SIOCGIFFLAGS succeeded, so the kernel wrote `ifru_flags`, the union member read.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: as above; SIOCSIFFLAGS only reads the name and the flags from `req`.
    unsafe { set_interface_flags(sock.as_raw_fd(), &req) }.map(drop)
}

/// Makes `cmd`'s child a process of its own session (no controlling terminal, its own process
/// group) with the signal state a program expects, before it execs. std's `pre_exec` is the only
/// way to run code in the forked child, and it is unsafe because that code runs in a copy of a
/// possibly multi-threaded process.
pub fn own_session(cmd: &mut Command) -> &mut Command {
    // SAFETY: `child_setup` makes only async-signal-safe calls (setsid, sigemptyset,
    // sigprocmask, signal), touches only its own stack and allocates nothing, so it cannot
    // deadlock on a lock another thread held at fork time.
    unsafe { cmd.pre_exec(child_setup) }
}

/// Runs in the forked child. PID 1 blocks the signals it reads through its signalfd; a blocked
/// mask survives exec, and a service started with SIGTERM blocked would never see a stop request.
fn child_setup() -> std::io::Result<()> {
    nix::unistd::setsid()?;
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
    for &s in HANDLED_SIGNALS {
        // SAFETY: SIG_DFL installs no handler, so no Rust code can ever run in signal context;
        // signal(2) itself is async-signal-safe.
        let _ = unsafe { nix::sys::signal::signal(s, SigHandler::SigDfl) };
    }
    Ok(())
}

/// A child's end, as reaped by waitpid: the raw wait status.
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
/// `Err(ECHILD)`: no children at all.
///
/// Not nix's `waitpid`: its `WaitStatus` names the terminating signal with nix's `Signal`, which
/// has no real-time signals, so for a child killed by SIGRTMIN+n it returns EINVAL after the
/// kernel has already reaped the child, and PID 1 would lose that service's exit for good.
pub fn reap_one() -> nix::Result<Option<Exit>> {
    let mut status = 0;
    // SAFETY: `status` is a live, exclusively borrowed c_int for the call; waitpid writes only
    // there.
    let pid = Errno::result(unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) })?;
    Ok((pid > 0).then_some(Exit { pid, status }))
}

/// The signals PID 1 handles, blocked and delivered through a signalfd so one poll loop sees
/// signals, input events and timeouts. Children get an empty mask ([`own_session`]).
pub const HANDLED_SIGNALS: &[Signal] = &[
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGPWR,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGHUP,
];

/// [`HANDLED_SIGNALS`] blocked, and the signalfd that reads them.
pub struct SignalFd {
    fd: NixSignalFd,
}

impl SignalFd {
    pub fn new() -> nix::Result<SignalFd> {
        let set: SigSet = HANDLED_SIGNALS.iter().copied().collect();
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
        let fd = NixSignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
        Ok(SignalFd { fd })
    }

    /// Drains pending signals; each entry is (signal, sending pid). Only the blocked
    /// [`HANDLED_SIGNALS`] reach the signalfd, and nix names all of them.
    pub fn read(&self) -> Vec<(Signal, u32)> {
        let mut out = Vec::new();
        while let Ok(Some(info)) = self.fd.read_signal() {
            if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                out.push((sig, info.ssi_pid));
            }
        }
        out
    }
}

impl AsFd for SignalFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// poll(2) for readability; returns which of `fds` are readable. EINTR counts as nothing ready.
pub fn poll_readable(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> Vec<bool> {
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|&fd| PollFd::new(fd, PollFlags::POLLIN))
        .collect();
    // One millisecond more, so a deadline is never woken up for just before it is due.
    let timeout = timeout.map_or(PollTimeout::NONE, |t| {
        PollTimeout::try_from(t.as_millis().saturating_add(1)).unwrap_or(PollTimeout::MAX)
    });
    match nix::poll::poll(&mut pfds, timeout) {
        Ok(n) if n > 0 => pfds
            .iter()
            .map(|p| {
                p.revents().is_some_and(|r| {
                    r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
                })
            })
            .collect(),
        _ => vec![false; fds.len()],
    }
}

/// Seconds since boot, including suspend (what /proc/uptime shows).
pub fn uptime() -> f64 {
    clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map_or(0.0, |ts| ts.tv_sec() as f64 + ts.tv_nsec() as f64 / 1e9)
}

/// A detached copy of the mount at `path` (`open_tree(OPEN_TREE_CLONE)`), for the share check
/// (shares.rs); nix has no open_tree. Gone when the descriptor closes.
pub fn open_tree_clone(path: &std::path::Path) -> nix::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let c =
        std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)?;
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    // SAFETY: `c` is a NUL-terminated string that outlives the call; the kernel only reads it.
    let fd = Errno::result(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    })?;
    // SAFETY: `fd` is the descriptor the kernel just returned; nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// Idmaps the detached mount `tree` with the user namespace `userns`
/// (`mount_setattr(MOUNT_ATTR_IDMAP)`), as eci-runc does for a bind (SPEC U4).
pub fn idmap_mount(tree: &impl AsFd, userns: &impl AsFd) -> nix::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_fd().as_raw_fd() as u64,
    };
    // SAFETY: `attr` is a live `struct mount_attr` of the size passed; the empty path with
    // AT_EMPTY_PATH names the descriptor itself; nothing is written back.
    Errno::result(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_fd().as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reaped_child_is_described_by_its_exit_code_or_its_signal() {
        let exited = Exit {
            pid: 7,
            status: 3 << 8,
        };
        assert_eq!(exited.describe(), "exit status 3");
        // SIGRTMIN+2 (36): a signal nix's Signal cannot name still gets its number.
        let killed = Exit { pid: 7, status: 36 };
        assert_eq!(killed.describe(), "killed by signal 36");
    }

    #[test]
    fn poll_reports_only_the_readable_descriptor() {
        let (r1, w1) = nix::unistd::pipe().unwrap();
        let (r2, _w2) = nix::unistd::pipe().unwrap();
        nix::unistd::write(&w1, b"x").unwrap();
        let ready = poll_readable(&[r1.as_fd(), r2.as_fd()], Some(Duration::from_millis(50)));
        assert_eq!(ready, vec![true, false]);
        let none = poll_readable(&[r2.as_fd()], Some(Duration::ZERO));
        assert_eq!(none, vec![false]);
    }
}
