//! The supervisor's system-call layer: the only place with `unsafe`. nix 0.32 lacks `statx` and
//! the new mount API (`fsopen`, `fsconfig`, `fsmount`, `fspick`, `open_tree`, `move_mount`,
//! `mount_setattr`), so they are wrapped here once with the constants of `linux/mount.h`; every
//! descriptor comes back owned and close-on-exec.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

const FS_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
pub const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
pub const FSCONFIG_CMD_RECONFIGURE: libc::c_uint = 7;
const FSPICK_CLOEXEC: libc::c_uint = 1;
const FSPICK_EMPTY_PATH: libc::c_uint = 8;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
const STATX_MNT_ID: libc::c_uint = 0x1000;
const STATX_ATTR_MOUNT_ROOT: u64 = 0x2000;

fn check(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A descriptor a system call just returned.
fn owned(rc: libc::c_long) -> io::Result<OwnedFd> {
    let fd = check(rc)? as RawFd;
    // SAFETY: the kernel installed this descriptor for this call only; nobody else knows it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn c(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// What `statx` says about the file a descriptor pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub mnt_id: u64,
    /// The file is the root of its mount.
    pub mount_root: bool,
    pub dev: (u32, u32),
    pub ino: u64,
}

pub fn statx(fd: BorrowedFd<'_>) -> io::Result<Facts> {
    let mut buf = std::mem::MaybeUninit::<libc::statx>::zeroed();
    let empty = c("")?;
    // SAFETY: statx writes at most one struct statx into buf, which is that size; the path is
    // a NUL-terminated empty string that lives for the call.
    let rc = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            empty.as_ptr(),
            // DONT_SYNC: identity only (mount, device, inode), which no filesystem refreshes;
            // a FUSE file (a view) would otherwise ask its server, and wait for one being
            // restarted.
            libc::AT_EMPTY_PATH
                | libc::AT_SYMLINK_NOFOLLOW
                | libc::AT_NO_AUTOMOUNT
                | libc::AT_STATX_DONT_SYNC,
            libc::STATX_INO | STATX_MNT_ID,
            buf.as_mut_ptr(),
        )
    };
    check(rc as libc::c_long)?;
    // SAFETY: statx succeeded, so it filled the struct (and it was zeroed before).
    let s = unsafe { buf.assume_init() };
    if s.stx_mask & STATX_MNT_ID == 0 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "statx gives no mount id (Linux >= 5.8 is needed)",
        ));
    }
    Ok(Facts {
        mnt_id: s.stx_mnt_id,
        mount_root: s.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT != 0
            && s.stx_attributes & STATX_ATTR_MOUNT_ROOT != 0,
        dev: (s.stx_dev_major, s.stx_dev_minor),
        ino: s.stx_ino,
    })
}

/// A filesystem context (`fsopen`) made with the calling process's credentials and namespaces.
pub fn fsopen(fstype: &str) -> io::Result<OwnedFd> {
    let name = c(fstype)?;
    // SAFETY: fsopen reads a NUL-terminated name that lives for the call.
    owned(unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FS_CLOEXEC) })
}

/// `key=value` (or the flag `key`) on a context.
pub fn fsconfig_set(fs: BorrowedFd<'_>, key: &str, value: Option<&str>) -> io::Result<()> {
    let key = c(key)?;
    let value = value.map(c).transpose()?;
    let (cmd, ptr) = match &value {
        Some(v) => (FSCONFIG_SET_STRING, v.as_ptr()),
        None => (FSCONFIG_SET_FLAG, std::ptr::null()),
    };
    // SAFETY: both strings live for the call; a flag takes no value.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            cmd,
            key.as_ptr(),
            ptr,
            0,
        )
    })
    .map(drop)
}

/// `FSCONFIG_CMD_CREATE` or `FSCONFIG_CMD_RECONFIGURE`.
pub fn fsconfig_cmd(fs: BorrowedFd<'_>, cmd: libc::c_uint) -> io::Result<()> {
    // SAFETY: the commands take no key or value.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            cmd,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    })
    .map(drop)
}

/// The kernel's messages about a context, `; `-separated (why a create failed).
pub fn fs_messages(fs: BorrowedFd<'_>) -> String {
    let mut out = String::new();
    let mut buf = [0u8; 512];
    while let Ok(n @ 1..) = nix::unistd::read(fs, &mut buf) {
        out.push_str(String::from_utf8_lossy(&buf[..n]).trim());
        out.push_str("; ");
    }
    out
}

/// The created filesystem as a detached mount with `attrs` (`MOUNT_ATTR_*`).
pub fn fsmount(fs: BorrowedFd<'_>, attrs: u64) -> io::Result<OwnedFd> {
    // SAFETY: plain integers.
    owned(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            FS_CLOEXEC,
            attrs as libc::c_uint,
        )
    })
}

/// A context for the superblock of the mount `fd` pins, to reconfigure it.
pub fn fspick(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let empty = c("")?;
    // SAFETY: the empty path lives for the call.
    owned(unsafe {
        libc::syscall(
            libc::SYS_fspick,
            fd.as_raw_fd(),
            empty.as_ptr(),
            FSPICK_CLOEXEC | FSPICK_EMPTY_PATH,
        )
    })
}

/// A detached copy of the mount at `fd` (with the mounts below it when `recursive`).
pub fn open_tree_clone(fd: BorrowedFd<'_>, recursive: bool) -> io::Result<OwnedFd> {
    let empty = c("")?;
    let mut flags =
        OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: the empty path lives for the call.
    owned(unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), empty.as_ptr(), flags) })
}

/// Attach (or move) the mount `from` pins onto the file `to` pins.
pub fn move_mount(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> io::Result<()> {
    let empty = c("")?;
    // SAFETY: both paths are the same empty string, alive for the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            empty.as_ptr(),
            to.as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// `struct mount_attr` (version 0, 32 bytes).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Change the attributes or propagation of the mount `fd` pins (its tree when `recursive`).
pub fn mount_setattr(
    fd: BorrowedFd<'_>,
    recursive: bool,
    set: u64,
    clr: u64,
    propagation: u64,
) -> io::Result<()> {
    let empty = c("")?;
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clr,
        propagation,
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: the kernel reads size_of::<MountAttr>() bytes from attr, which lives for the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            empty.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

/// nsfs ioctls (linux/nsfs.h): the user namespace that owns a namespace, a user namespace's
/// parent, a mount namespace's id.
const NS_GET_USERNS: libc::c_ulong = 0xb701;
const NS_GET_PARENT: libc::c_ulong = 0xb702;
/// `_IOR(0xb7, 0x5, __u64)`.
const NS_GET_MNTNS_ID: libc::c_ulong = 0x8008_b705;

fn ns_fd_ioctl(ns: BorrowedFd<'_>, request: libc::c_ulong) -> io::Result<OwnedFd> {
    // SAFETY: these requests take no argument and return a new descriptor or -1.
    let fd = unsafe { libc::ioctl(ns.as_raw_fd(), request) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel installed this descriptor for this call; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The user namespace that owns the namespace `ns`.
pub fn ns_owner(ns: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    ns_fd_ioctl(ns, NS_GET_USERNS)
}

/// The parent of the user namespace `user` (EPERM above the caller's own).
pub fn ns_parent(user: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    ns_fd_ioctl(user, NS_GET_PARENT)
}

/// A mount namespace's 64-bit id (Linux 6.8), never reused while the system runs, unlike its
/// nsfs inode number.
pub fn mntns_id(mnt: BorrowedFd<'_>) -> io::Result<u64> {
    let mut id: u64 = 0;
    // SAFETY: NS_GET_MNTNS_ID writes one u64 to the pointer.
    let rc = unsafe { libc::ioctl(mnt.as_raw_fd(), NS_GET_MNTNS_ID, &mut id as *mut u64) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(id)
}

/// A connected pair of the message sockets [`send`] and [`recv`] use (`SOCK_SEQPACKET`: one
/// message per call, its descriptors with it).
pub fn channel() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )?)
}

/// Send one message with descriptors (SCM_RIGHTS).
pub fn send(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    use nix::errno::Errno;
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let iov = [io::IoSlice::new(data)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    loop {
        match sendmsg::<()>(sock, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receive one message (up to 64 KiB) and its descriptors; `None` on EOF.
pub fn recv(sock: RawFd) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    use nix::errno::Errno;
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut buf = vec![0u8; 65536];
    let mut cbuf = vec![0u8; 1024];
    let (n, raw) = loop {
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(sock, &mut iov, Some(&mut cbuf), MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(msg) => {
                let mut raw = Vec::new();
                for c in msg.cmsgs()? {
                    if let ControlMessageOwned::ScmRights(fds) = c {
                        raw.extend(fds);
                    }
                }
                break (msg.bytes, raw);
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
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

/// The effective capability set of the thread `tid` (capget, ABI version 3), one bit per
/// capability number. Cheaper than formatting /proc/TID/status on every vetted call.
pub fn effective_caps(tid: i32) -> io::Result<u64> {
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
        pid: tid,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: a version-3 header and the two entries the kernel writes for version 3, both
    // alive for the call; capget only reads the header and writes the entries.
    check(unsafe { libc::syscall(libc::SYS_capget, &hdr, data.as_mut_ptr()) })?;
    Ok(u64::from(data[0].effective) | (u64::from(data[1].effective) << 32))
}

/// A filesystem context opened by a process of the pid namespace `pidns`: proc takes the pid
/// namespace a context is for from its opener's active one (fsconfig's `pidns=` option, which
/// sets it on any context, is Linux 6.18; the VM runs 6.12). Entering a pid namespace only
/// changes where a thread's children go, so a child made for the call does the `fsopen`: it
/// shares this process's memory and descriptor table (the context lands in it) and this thread
/// waits for it (`CLONE_VFORK`), then the thread goes back to its own pid namespace.
/// For its few microseconds the child is a process of the container's pid namespace with VM
/// root's credentials: the container can list it, but neither signal, trace nor enter it.
/// Its /proc/PID/mountinfo and /proc/PID/net need no ptrace right: the caller makes it in
/// namespaces that show the container nothing it does not already see (`powers.rs`).
/// `home` is the thread's own pid namespace (open it before entering a mount namespace whose
/// /proc is another pid namespace's).
pub fn fsopen_in_pid_namespace(
    fstype: &str,
    pidns: BorrowedFd<'_>,
    home: BorrowedFd<'_>,
) -> io::Result<OwnedFd> {
    use nix::sched::{setns, CloneFlags};
    struct Call {
        name: CString,
        result: libc::c_long,
        errno: i32,
    }
    extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: arg is the parent's Call, alive and untouched while it waits for this child
        // (CLONE_VFORK). Only the system call runs here: the child shares the parent's memory.
        unsafe {
            let call = &mut *(arg as *mut Call);
            call.result = libc::syscall(libc::SYS_fsopen, call.name.as_ptr(), FS_CLOEXEC);
            call.errno = *libc::__errno_location();
        }
        0
    }
    let mut call = Call {
        name: c(fstype)?,
        result: -1,
        errno: libc::ECHILD,
    };
    let mut stack = vec![0u8; 64 * 1024];
    setns(pidns, CloneFlags::CLONE_NEWPID)?;
    // SAFETY: the stack is ours for the child's life (the parent waits, CLONE_VFORK); it grows
    // down, so the child starts at its (16-byte aligned) top. CLONE_FILES: the descriptor the
    // child gets is in this process's table. SIGCHLD: reaped below by its pid only.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.len()) as usize & !15;
        libc::clone(
            child,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_FILES | libc::SIGCHLD,
            &mut call as *mut Call as *mut libc::c_void,
        )
    };
    let spawned = if pid < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    };
    let back = setns(home, CloneFlags::CLONE_NEWPID);
    spawned?;
    let child_pid = nix::unistd::Pid::from_raw(pid);
    while let Err(nix::errno::Errno::EINTR) = nix::sys::wait::waitpid(child_pid, None) {}
    if call.result < 0 {
        back?;
        return Err(io::Error::from_raw_os_error(call.errno));
    }
    // SAFETY: the child installed this descriptor in the shared table for this call only.
    let fs = unsafe { OwnedFd::from_raw_fd(call.result as RawFd) };
    back?;
    Ok(fs)
}

/// Attach the mount `from` pins onto `path` (in this thread's mount namespace).
pub fn move_mount_to_path(from: BorrowedFd<'_>, path: &str) -> io::Result<()> {
    let empty = c("")?;
    let to = c(path)?;
    // SAFETY: both paths are NUL-terminated strings alive for the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// A detached copy of the mount at `path` below `dir` (with what is mounted below it).
pub fn open_tree_clone_at(dir: BorrowedFd<'_>, path: &str) -> io::Result<OwnedFd> {
    let p = c(path)?;
    let flags =
        OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_RECURSIVE as libc::c_uint;
    // SAFETY: the path lives for the call.
    owned(unsafe { libc::syscall(libc::SYS_open_tree, dir.as_raw_fd(), p.as_ptr(), flags) })
}

/// SECCOMP_IOCTL_NOTIF_SET_FLAGS (kernel 6.6): the flags are the ioctl's argument itself.
pub fn notif_set_flags(listener: BorrowedFd<'_>, flags: u64) -> io::Result<()> {
    // SAFETY: no pointer is passed; the kernel reads the flags from the argument value.
    check(unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS as _,
            flags as libc::c_ulong,
        ) as libc::c_long
    })
    .map(drop)
}
