//! One notification, handled in the container's helper: read the call's arguments once from the
//! caller's memory, open the caller's root, cwd and mount namespace, re-validate the
//! notification, vet and perform it, re-validate, answer.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use eci_policy::mount_vetting::{self as mv, Call, Caller, Target, Verdict};
use libseccomp::{notify_id_valid, ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags};
use nix::fcntl::OFlag;

use crate::proto::CallArgs;
use crate::step::{self, Step};

/// The longest string read from a caller (PATH_MAX; mount data is at most a page as well).
const MAX_STRING: usize = 4096;

/// A NUL-terminated string at `addr` in the memory of thread `pid`; `None` for a null pointer.
/// Read with `process_vm_readv` (no file to open per call) in steps that end at 256-byte
/// boundaries, so a read never crosses into an unmapped page before the NUL is seen.
fn read_string(pid: u32, addr: u64) -> io::Result<Option<String>> {
    use nix::sys::uio::{process_vm_readv, RemoteIoVec};
    if addr == 0 {
        return Ok(None);
    }
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    while out.len() < MAX_STRING {
        let at = addr + out.len() as u64;
        let step = 256 - (at % 256) as usize;
        let remote = [RemoteIoVec {
            base: at as usize,
            len: step,
        }];
        let n = process_vm_readv(pid, &mut [io::IoSliceMut::new(&mut buf[..step])], &remote)?;
        if n == 0 {
            return Err(io::Error::from_raw_os_error(libc::EFAULT));
        }
        if let Some(i) = buf[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..i]);
            return String::from_utf8(out)
                .map(Some)
                .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
        }
        out.extend_from_slice(&buf[..n]);
    }
    Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG))
}

fn open_at(proc: BorrowedFd<'_>, p: &str, flags: OFlag) -> io::Result<OwnedFd> {
    Ok(nix::fcntl::openat(
        proc,
        p,
        flags | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?)
}

/// CAP_SYS_ADMIN (21) in the calling thread's effective set.
fn has_sys_admin(tid: u32) -> bool {
    crate::sys::effective_caps(tid as i32).is_ok_and(|m| m & (1 << 21) != 0)
}

/// SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (linux/seccomp.h).
const SYNC_WAKE_UP: u64 = 1;

/// Asks the kernel to hand each notification to the helper on the caller's CPU and the answer
/// back on the helper's (kernel 6.6+): the caller sleeps while the helper works, so the two
/// swap on one CPU instead of each waking the other, which on an idle VM means waking a halted
/// vCPU twice per call. False on older kernels, which keep the ordinary wake-ups.
pub fn wake_synchronously(listener: BorrowedFd<'_>) -> bool {
    let ok = crate::sys::notif_set_flags(listener, SYNC_WAKE_UP).is_ok();
    if !ok && crate::verbose() {
        eprintln!("eci-supervisor: the kernel has no synchronous seccomp notification wake-ups");
    }
    ok
}

/// What the vetting needs of the caller, opened while its notification was valid.
pub struct CallerCtx {
    pub root: OwnedFd,
    pub cwd: OwnedFd,
    pub mnt: OwnedFd,
    /// The caller's user namespace, and its nsfs device and inode.
    pub user: OwnedFd,
    pub userns: (u64, u64),
    pub sys_admin: bool,
    /// The namespace a new kernel view is for, opened only for such a mount: the caller's pid
    /// namespace for proc, its network namespace for sysfs.
    pub view_ns: Option<OwnedFd>,
    /// The object the caller's own descriptor N pins, when the mount's target (or source) is
    /// `/proc/self/fd/N` or `/proc/thread-self/fd/N` ([`mv::caller_fd`]); taken once, here,
    /// while the notification was valid. The helper still checks it lies inside `root`.
    pub target_fd: Option<OwnedFd>,
    pub source_fd: Option<OwnedFd>,
}

/// The caller's thread group id (`Tgid:` of /proc/TID/status): `/proc/self` names the group.
fn tgid(proc: BorrowedFd<'_>, tid: u32) -> io::Result<u32> {
    let f = open_at(proc, &format!("{tid}/status"), OFlag::O_RDONLY)?;
    let mut text = String::new();
    io::Read::read_to_string(&mut std::fs::File::from(f), &mut text)?;
    text.lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))
}

/// The object behind the caller's descriptor that `path` names, if it names one: opened with
/// `O_PATH` through the VM's /proc (the same ptrace-read check as its `root` and `cwd`), which
/// follows that one magic link to the file itself. The caller's table is read once; what it
/// does with descriptor N afterwards does not change the object the helper holds.
fn caller_object(
    proc: BorrowedFd<'_>,
    tid: u32,
    path: Option<&str>,
    source: bool,
) -> io::Result<Option<OwnedFd>> {
    if let Some((owner, kind)) = path.and_then(mv::ns_link).filter(|_| source) {
        // `/proc/PID/ns/KIND` names a process of the caller's /proc: resolved in the helper,
        // inside the caller's root. `self` and `thread-self` name the caller, taken here.
        let owner = match owner {
            mv::NsOwner::Pid(_) => return Ok(None),
            mv::NsOwner::Thread => tid,
            mv::NsOwner::Process => tgid(proc, tid)?,
        };
        return open_at(proc, &format!("{owner}/ns/{kind}"), OFlag::O_PATH).map(Some);
    }
    let Some((table, n)) = path.and_then(mv::caller_fd) else {
        return Ok(None);
    };
    let owner = match table {
        mv::FdTable::Thread => tid,
        mv::FdTable::Process => tgid(proc, tid)?,
    };
    match open_at(proc, &format!("{owner}/fd/{n}"), OFlag::O_PATH) {
        // No such descriptor: the helper resolves the name like any path, which gives the
        // caller ENOENT when its /proc is a proc (as the kernel would) and reaches a real
        // folder of that name when it is not.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        r => r.map(Some),
    }
}

/// Answer one notification. `proc` is the VM's /proc (the notification's pid is the VM's);
/// `act` vets and performs a mount(2)/umount2(2) call and says the errno (0: done) and why.
/// Errors only mean it could not be answered (the caller is gone).
pub fn handle(
    proc: BorrowedFd<'_>,
    listener: &OwnedFd,
    req: &ScmpNotifReq,
    act: impl FnOnce(&CallArgs, &CallerCtx) -> (i32, String),
) {
    let errno = vet(proc, listener, req, act);
    // Re-validated before answering: an id that is no longer valid belongs to a caller that is
    // gone (its pid may be reused), and the answer would be refused anyway.
    if notify_id_valid(listener.as_raw_fd(), req.id).is_err() {
        return;
    }
    let resp = if errno == 0 {
        ScmpNotifResp::new_val(req.id, 0, ScmpNotifRespFlags::empty())
    } else {
        ScmpNotifResp::new_error(req.id, -errno, ScmpNotifRespFlags::empty())
    };
    let _ = resp.respond(listener.as_raw_fd());
}

fn vet(
    proc: BorrowedFd<'_>,
    listener: &OwnedFd,
    req: &ScmpNotifReq,
    act: impl FnOnce(&CallArgs, &CallerCtx) -> (i32, String),
) -> i32 {
    let name = req
        .data
        .syscall
        .get_name_by_arch(req.data.arch)
        .unwrap_or_default();
    let pid = req.pid;
    if name != "mount" && name != "umount2" {
        let Some(n) = mv::TRAPPED_SYSCALLS.iter().find(|s| **s == name) else {
            return libc::ENOSYS;
        };
        let caller = Caller::container(true);
        return match mv::decide(&Call::NewApi(n), caller, Target::default(), None) {
            Verdict::Refuse(r) => r.errno.raw(),
            Verdict::Allow(_) => libc::ENOSYS,
        };
    }
    let (call, ctx) = match gather(proc, listener, req, &name, pid) {
        Ok(g) => g,
        Err(e) => {
            // Always logged, like the helper's own failures (crate::step).
            eprintln!("eci-supervisor: {name} from pid {pid}: {e}");
            return step::errno(&e);
        }
    };
    let (errno, why) = act(&call, &ctx);
    if crate::verbose() {
        eprintln!("eci-supervisor: pid {pid}: {call:?} -> errno {errno} ({why})");
    }
    errno
}

fn gather(
    proc: BorrowedFd<'_>,
    listener: &OwnedFd,
    req: &ScmpNotifReq,
    name: &str,
    pid: u32,
) -> io::Result<(CallArgs, CallerCtx)> {
    let args = req.data.args;
    // SPEC M4: every argument is read exactly once, here, from the caller's memory; what the
    // caller changes in its memory afterwards is never looked at.
    let call = if name == "mount" {
        CallArgs::Mount {
            source: read_string(pid, args[0]).step("read the source")?,
            target: read_string(pid, args[1])
                .step("read the target")?
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EFAULT))?,
            fstype: read_string(pid, args[2]).step("read the type")?,
            flags: args[3],
            // Mount data is a string for every filesystem a container may mount.
            data: read_string(pid, args[4]).unwrap_or(None),
        }
    } else {
        CallArgs::Umount {
            target: read_string(pid, args[0])
                .step("read the target")?
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EFAULT))?,
            flags: args[1],
        }
    };
    let dir = OFlag::O_PATH | OFlag::O_DIRECTORY;
    let root = open_at(proc, &format!("{pid}/root"), dir).step("open the caller's root")?;
    let cwd = open_at(proc, &format!("{pid}/cwd"), dir).step("open the caller's cwd")?;
    let mnt = open_at(proc, &format!("{pid}/ns/mnt"), OFlag::O_RDONLY)
        .step("open the caller's mount namespace")?;
    let user = open_at(proc, &format!("{pid}/ns/user"), OFlag::O_RDONLY)
        .step("open the caller's user namespace")?;
    let user_st = nix::sys::stat::fstat(&user).step("stat the caller's user namespace")?;
    let sys_admin = has_sys_admin(pid);
    let view_ns = match &call {
        CallArgs::Mount {
            fstype: Some(t), ..
        } if t == "proc" || t == "sysfs" => {
            let kind = if t == "proc" { "pid" } else { "net" };
            Some(
                open_at(proc, &format!("{pid}/ns/{kind}"), OFlag::O_RDONLY)
                    .step(format_args!("open the caller's {kind} namespace"))?,
            )
        }
        _ => None,
    };
    let (target_fd, source_fd) = match &call {
        CallArgs::Mount {
            source,
            target,
            flags,
            ..
        } => {
            let t = caller_object(proc, pid, Some(target), false)?;
            let binds = flags & (mv::ms::BIND | mv::ms::MOVE) != 0;
            let s = if binds {
                caller_object(proc, pid, source.as_deref(), true)?
            } else {
                None
            };
            (t, s)
        }
        CallArgs::Umount { .. } => (None, None),
    };
    // The pid named a live caller while everything above was read and opened only if the
    // notification is still valid now (a pid is not reused while its task waits here).
    if notify_id_valid(listener.as_raw_fd(), req.id).is_err() {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok((
        call,
        CallerCtx {
            root,
            cwd,
            mnt,
            user,
            userns: (user_st.st_dev, user_st.st_ino),
            sys_admin,
            view_ns,
            target_fd,
            source_fd,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_read_from_a_process_memory() {
        let s = std::ffi::CString::new("/some/where").unwrap();
        let me = std::process::id();
        assert_eq!(
            read_string(me, s.as_ptr() as u64).unwrap().as_deref(),
            Some("/some/where")
        );
        assert_eq!(read_string(me, 0).unwrap(), None);
    }
}
