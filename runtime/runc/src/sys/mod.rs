//! The runtime's system-call layer: the only place with `unsafe`. Calls nix has are used from
//! nix directly by the rest of the crate; what nix lacks (the new mount API, bpf, nsfs and pty
//! ioctls, capability sets, fork and `_exit`, signals by number, statx mount ids) is wrapped
//! here once, each `unsafe` block saying which invariant makes it sound.

use std::ffi::CString;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use nix::unistd::Pid;

pub type Result<T> = std::result::Result<T, String>;

/// `errno` as an io::Error, with `what` in front.
pub fn errno(what: impl std::fmt::Display) -> String {
    format!("{what}: {}", io::Error::last_os_error())
}

pub fn cstr(p: impl AsRef<Path>) -> Result<CString> {
    CString::new(p.as_ref().as_os_str().as_bytes())
        .map_err(|_| format!("path {:?} contains a NUL byte", p.as_ref()))
}

/// A nix error as `what: <io::Error text>`, the same words as before the move to nix.
pub fn nix_err(what: impl std::fmt::Display, e: Errno) -> String {
    format!("{what}: {}", io::Error::from(e))
}

fn check(rc: libc::c_int, what: impl FnOnce() -> String) -> Result<libc::c_int> {
    if rc < 0 {
        Err(errno(what()))
    } else {
        Ok(rc)
    }
}

pub fn mount(
    src: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<()> {
    nix::mount::mount(src, target, fstype, MsFlags::from_bits_retain(flags), data).map_err(|e| {
        nix_err(
            format!(
                "mount {} on {} (type {}, flags {flags:#x}, data {:?})",
                src.unwrap_or("none"),
                target.display(),
                fstype.unwrap_or("none"),
                data.unwrap_or("")
            ),
            e,
        )
    })
}

pub fn umount2(target: &Path, flags: libc::c_int) -> Result<()> {
    nix::mount::umount2(target, MntFlags::from_bits_retain(flags))
        .map_err(|e| nix_err(format!("umount {}", target.display()), e))
}

pub mod bpf;
pub mod caps;
pub mod listener;
pub mod mountfd;
pub mod ns;
#[cfg(test)]
pub mod probe;
pub mod tty;

// The mount API lives in `mountfd`; these names stay here for the callers that had them.
pub use mountfd::{
    mount_setattr, move_mount, open_tree_clone, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC,
    MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY,
};

pub fn pivot_root(new: &Path, old: &Path) -> Result<()> {
    nix::unistd::pivot_root(new, old).map_err(|e| nix_err("pivot_root", e))
}

/// `open(2)` with `O_CLOEXEC` added.
pub fn open(path: &Path, flags: libc::c_int, mode: libc::mode_t) -> Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::from_bits_retain(flags | libc::O_CLOEXEC),
        Mode::from_bits_retain(mode),
    )
    .map_err(|e| nix_err(format!("open {}", path.display()), e))
}

pub fn setns(fd: BorrowedFd<'_>, kind: libc::c_int, what: &str) -> Result<()> {
    nix::sched::setns(fd, CloneFlags::from_bits_retain(kind))
        .map_err(|e| nix_err(format!("setns {what}"), e))
}

pub fn unshare(flags: libc::c_int) -> Result<()> {
    nix::sched::unshare(CloneFlags::from_bits_retain(flags))
        .map_err(|e| nix_err(format!("unshare {flags:#x}"), e))
}

/// Set this process's file-system uid and gid to `id` and keep every capability it has.
/// Changing the fs uid away from 0 clears the file capabilities (CAP_CHOWN, CAP_DAC_OVERRIDE,
/// CAP_FOWNER, CAP_MKNOD, ...) from the effective set; they are raised again from the
/// permitted set.
pub fn set_fs_ids(id: u32) -> Result<()> {
    use nix::unistd::{setfsgid, setfsuid, Gid, Uid};
    setfsgid(Gid::from_raw(id));
    setfsuid(Uid::from_raw(id));
    // An invalid id (-1) changes nothing and returns the current one.
    if setfsgid(Gid::from_raw(u32::MAX)) != Gid::from_raw(id)
        || setfsuid(Uid::from_raw(u32::MAX)) != Uid::from_raw(id)
    {
        return Err(format!("setfsuid/setfsgid {id} did not take effect"));
    }
    let mut sets = caps::capget().map_err(|e| format!("capget: {e}"))?;
    sets.effective = sets.permitted;
    caps::capset(&sets).map_err(|e| format!("capset: {e}"))
}

/// `_exit(2)`: leave a forked child at once, without running the parent's destructors,
/// atexit handlers or stdio flushes (they belong to the parent's copy of the state).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions; it never returns.
    unsafe { libc::_exit(code) }
}

/// `setdomainname(2)` (the NIS domain of the uts namespace), which nix does not wrap.
pub fn setdomainname(name: &str) -> Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes, borrowed for the call; the
    // kernel copies them and needs no NUL.
    let rc = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    nix::errno::Errno::result(rc)
        .map(drop)
        .map_err(|e| format!("setdomainname: {e}"))
}

/// fork(2). The runtime is single-threaded, so the child may run arbitrary Rust code (it
/// allocates, formats errors, sends messages) until it execs or calls [`exit_now`]. A caller
/// with other threads (a unit test under the test harness) must keep its child to
/// async-signal-safe calls on memory prepared before the fork.
pub fn fork() -> Result<libc::pid_t> {
    // SAFETY: in the runtime no other thread exists whose locks (the allocator's, stdio's)
    // the child could inherit held; test callers keep to the rule above.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(errno("fork"));
    }
    Ok(pid)
}

/// A connected SOCK_SEQPACKET pair: message boundaries are kept, and EOF tells that the other
/// side died, which is how every wait in the create/exec handshake fails closed.
pub fn socketpair() -> Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| nix_err("socketpair", e))
}

/// Send one message with optional descriptors.
pub fn send(sock: RawFd, data: &[u8], fds: &[RawFd]) -> Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let iov = [IoSlice::new(data)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    loop {
        match sendmsg::<()>(sock, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(nix_err("sendmsg", e)),
        }
    }
}

/// Receive one message (up to 64 KiB) and any descriptors with it. `Ok(None)` on EOF.
pub fn recv(sock: RawFd) -> Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut buf = vec![0u8; 65536];
    let mut cbuf = vec![0u8; 4096];
    let (n, raw) = loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(sock, &mut iov, Some(&mut cbuf), MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(msg) => {
                let mut raw = Vec::new();
                for c in msg.cmsgs().map_err(|e| nix_err("recvmsg", e))? {
                    if let ControlMessageOwned::ScmRights(fds) = c {
                        raw.extend(fds);
                    }
                }
                break (msg.bytes, raw);
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(nix_err("recvmsg", e)),
        }
    };
    let fds: Vec<OwnedFd> = raw
        .into_iter()
        // SAFETY: SCM_RIGHTS installed these descriptors in this process for this message;
        // nothing else knows their numbers, so each gets exactly one owner.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    buf.truncate(n);
    Ok(Some((buf, fds)))
}

pub fn waitpid(pid: libc::pid_t) -> Result<i32> {
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => return Ok(255),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(nix_err(format!("waitpid {pid}"), e)),
        }
    }
}

/// `kill(2)` with a signal number: nix's `Signal` has no real-time signals (`RTMIN+n`),
/// which `kill` accepts as runc does.
pub fn kill(pid: libc::pid_t, sig: i32) -> Result<()> {
    // SAFETY: kill takes two integers and touches no memory of ours.
    check(unsafe { libc::kill(pid, sig) }, || format!("kill {pid}")).map(|_| ())
}

/// Set or clear close-on-exec on descriptor number `fd`, which this process may not own as an
/// `OwnedFd` (the numbers come from `/proc/self/fd` at exec time); a closed number is ignored.
pub fn set_cloexec(fd: RawFd, on: bool) {
    // SAFETY: F_GETFD/F_SETFD only read and change the descriptor's flag word and touch no
    // memory; a number that is not open fails with EBADF, which is ignored.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            let f = if on {
                flags | libc::FD_CLOEXEC
            } else {
                flags & !libc::FD_CLOEXEC
            };
            libc::fcntl(fd, libc::F_SETFD, f);
        }
    }
}

/// The start time of a process (field 22 of /proc/PID/stat), which tells a live container init
/// apart from an unrelated process that reused its pid. `None` if gone or a zombie.
pub fn start_time(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Change the owner of `path` itself (a final symlink is not followed).
pub fn chown_path(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .map_err(|e| format!("chown {}: {e}", path.display()))
}

/// An `O_PATH` handle on the folder at `path`, for asking the kernel about that very folder.
/// `O_NOFOLLOW` refuses a final symlink (the caller resolved the path, so a link there now was
/// planted after the check) and `O_DIRECTORY` anything but a folder; `O_PATH` reads nothing and
/// needs no permission on the folder itself. `open` adds `O_CLOEXEC`.
pub fn open_dir_path(path: &Path) -> Result<OwnedFd> {
    open(path, libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0)
}

/// The id of the mount the opened `fd` lies on, as `/proc/self/mountinfo` numbers mounts
/// (field 1). `Err` when the kernel does not report it (`STATX_MNT_ID` is Linux >= 5.8): the
/// caller must then refuse rather than guess.
pub fn mount_id(fd: &OwnedFd, what: &Path) -> Result<u64> {
    // SAFETY: statx is plain old data; all-zero is a valid value.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    let empty = c"";
    // AT_EMPTY_PATH: describe `fd` itself, not a name under it. AT_STATX_DONT_SYNC: the mount
    // id is the VFS's own knowledge, so a remote filesystem need not ask its server.
    // SAFETY: valid descriptor, NUL-terminated empty path and a live out-buffer of the type the
    // kernel fills.
    let rc = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_DONT_SYNC,
            libc::STATX_MNT_ID,
            &mut st,
        )
    };
    check(rc, || format!("statx {}", what.display()))?;
    // The kernel sets in stx_mask what it filled; a zeroed stx_mnt_id is not an answer.
    if st.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(format!(
            "statx {}: the kernel does not report mount ids (STATX_MNT_ID, Linux >= 5.8)",
            what.display()
        ));
    }
    Ok(st.stx_mnt_id)
}
