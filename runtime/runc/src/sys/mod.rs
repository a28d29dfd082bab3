//! Thin, checked wrappers over the system calls the runtime needs.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub type Result<T> = std::result::Result<T, String>;

/// `errno` as an io::Error, with `what` in front.
pub fn errno(what: impl std::fmt::Display) -> String {
    format!("{what}: {}", io::Error::last_os_error())
}

pub fn cstr(p: impl AsRef<Path>) -> Result<CString> {
    CString::new(p.as_ref().as_os_str().as_bytes())
        .map_err(|_| format!("path {:?} contains a NUL byte", p.as_ref()))
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
    let src_c = src
        .map(CString::new)
        .transpose()
        .map_err(|e| e.to_string())?;
    let fs_c = fstype
        .map(CString::new)
        .transpose()
        .map_err(|e| e.to_string())?;
    let data_c = data
        .map(CString::new)
        .transpose()
        .map_err(|e| e.to_string())?;
    let t = cstr(target)?;
    // SAFETY: every pointer is a valid NUL-terminated string or null.
    let rc = unsafe {
        libc::mount(
            src_c.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            t.as_ptr(),
            fs_c.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data_c
                .as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr() as *const libc::c_void),
        )
    };
    check(rc, || {
        format!(
            "mount {} on {} (type {}, flags {flags:#x}, data {:?})",
            src.unwrap_or("none"),
            target.display(),
            fstype.unwrap_or("none"),
            data.unwrap_or("")
        )
    })
    .map(|_| ())
}

pub fn umount2(target: &Path, flags: libc::c_int) -> Result<()> {
    let t = cstr(target)?;
    // SAFETY: valid C string.
    check(unsafe { libc::umount2(t.as_ptr(), flags) }, || {
        format!("umount {}", target.display())
    })
    .map(|_| ())
}

pub mod mountfd;

// The mount API lives in `mountfd`; these names stay here for the callers that had them.
pub use mountfd::{
    mount_setattr, move_mount, open_tree_clone, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC,
    MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY,
};

pub fn pivot_root(new: &Path, old: &Path) -> Result<()> {
    let n = cstr(new)?;
    let o = cstr(old)?;
    // SAFETY: valid C strings.
    let rc = unsafe { libc::syscall(libc::SYS_pivot_root, n.as_ptr(), o.as_ptr()) };
    if rc < 0 {
        return Err(errno("pivot_root"));
    }
    Ok(())
}

pub fn open(path: &Path, flags: libc::c_int, mode: libc::mode_t) -> Result<OwnedFd> {
    let p = cstr(path)?;
    // SAFETY: valid C string.
    let fd = unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) };
    if fd < 0 {
        return Err(errno(format!("open {}", path.display())));
    }
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn setns(fd: RawFd, kind: libc::c_int, what: &str) -> Result<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::setns(fd, kind) }, || format!("setns {what}")).map(|_| ())
}

pub fn unshare(flags: libc::c_int) -> Result<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::unshare(flags) }, || {
        format!("unshare {flags:#x}")
    })
    .map(|_| ())
}

/// Set this process's file-system uid and gid to `id` and keep every capability it has.
/// Changing the fs uid away from 0 clears the file capabilities (CAP_CHOWN, CAP_DAC_OVERRIDE,
/// CAP_FOWNER, CAP_MKNOD, ...) from the effective set; they are raised again from the
/// permitted set.
pub fn set_fs_ids(id: u32) -> Result<()> {
    // SAFETY: plain syscalls; the previous value is returned, -1 as argument only queries.
    unsafe {
        libc::setfsgid(id);
        libc::setfsuid(id);
        if libc::setfsgid(u32::MAX) as u32 != id || libc::setfsuid(u32::MAX) as u32 != id {
            return Err(format!("setfsuid/setfsgid {id} did not take effect"));
        }
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let hdr = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: header and two data structs as capget(2) expects for version 3.
    if unsafe { libc::syscall(libc::SYS_capget, &hdr, data.as_mut_ptr()) } < 0 {
        return Err(errno("capget"));
    }
    for d in &mut data {
        d.effective = d.permitted;
    }
    // SAFETY: as above, for capset(2).
    if unsafe { libc::syscall(libc::SYS_capset, &hdr, data.as_ptr()) } < 0 {
        return Err(errno("capset"));
    }
    Ok(())
}

/// fork(2). The runtime is single-threaded, so the child may run arbitrary Rust code.
pub fn fork() -> Result<libc::pid_t> {
    // SAFETY: the process has one thread (no runtime threads are ever started).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(errno("fork"));
    }
    Ok(pid)
}

/// A connected SOCK_SEQPACKET pair: message boundaries are kept, and EOF tells that the other
/// side died, which is how every wait in the create/exec handshake fails closed.
pub fn socketpair() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    check(rc, || "socketpair".into())?;
    // SAFETY: both fresh.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Send one message with optional descriptors.
pub fn send(sock: RawFd, data: &[u8], fds: &[RawFd]) -> Result<()> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let space = if fds.is_empty() {
        0
    } else {
        // SAFETY: CMSG_SPACE is a pure computation.
        unsafe { libc::CMSG_SPACE(std::mem::size_of_val(fds) as u32) as usize }
    };
    let mut cbuf = vec![0u8; space];
    // SAFETY: zeroed msghdr is valid; fields set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        // SAFETY: control buffer sized with CMSG_SPACE for these fds.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr() as *const u8,
                libc::CMSG_DATA(c),
                std::mem::size_of_val(fds),
            );
        }
    }
    loop {
        // SAFETY: msg points at live buffers.
        let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(());
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Err(errno("sendmsg"));
        }
    }
}

/// Receive one message (up to 64 KiB) and any descriptors with it. `Ok(None)` on EOF.
pub fn recv(sock: RawFd) -> Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut buf = vec![0u8; 65536];
    let mut cbuf = vec![0u8; 4096];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: zeroed msghdr is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = cbuf.len() as _;
    let n = loop {
        // SAFETY: buffers outlive the call.
        let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Err(errno("recvmsg"));
        }
    };
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel wrote.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c);
                let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let count = len / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    let mut fd: RawFd = 0;
                    std::ptr::copy_nonoverlapping(
                        data.add(i * std::mem::size_of::<RawFd>()),
                        &mut fd as *mut RawFd as *mut u8,
                        std::mem::size_of::<RawFd>(),
                    );
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    buf.truncate(n);
    Ok(Some((buf, fds)))
}

pub fn waitpid(pid: libc::pid_t) -> Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: status is a valid out-pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc >= 0 {
            break;
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Err(errno(format!("waitpid {pid}")));
        }
    }
    Ok(exit_code(status))
}

/// Shell-style exit code of a wait status (128+signal when killed).
pub fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
}

pub fn kill(pid: libc::pid_t, sig: i32) -> Result<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::kill(pid, sig) }, || format!("kill {pid}")).map(|_| ())
}

pub fn set_cloexec(fd: RawFd, on: bool) {
    // SAFETY: fcntl on a descriptor number; errors are ignored (fd may be closed).
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

pub fn chown_path(path: &Path, uid: u32, gid: u32) -> Result<()> {
    let p = cstr(path)?;
    // SAFETY: valid C string.
    check(unsafe { libc::lchown(p.as_ptr(), uid, gid) }, || {
        format!("chown {}", path.display())
    })
    .map(|_| ())
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
