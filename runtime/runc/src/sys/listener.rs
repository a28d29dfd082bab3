//! The seccomp notification listener: the mount-vetting filter is loaded here, with one.

use std::os::fd::{FromRawFd, OwnedFd};

/// `ctx` (a filter with notify rules) as a BPF program for [`load_listening`]. Made before any
/// filter is loaded: a container's own profile may refuse the calls this needs (`memfd_create`,
/// `read`).
pub fn program(ctx: &libseccomp::ScmpFilterContext) -> super::Result<Vec<libc::sock_filter>> {
    use std::io::{Read, Seek};
    // SAFETY: memfd_create takes a NUL-terminated name and flags; a non-negative return is a
    // new descriptor that nothing else owns.
    let fd = unsafe { libc::memfd_create(c"eci-vetting-filter".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(super::errno("memfd for the mount-vetting filter"));
    }
    // SAFETY: fd was just created and is owned by nothing else.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    ctx.export_bpf(&file)
        .map_err(|e| format!("export the mount-vetting filter: {e}"))?;
    let mut prog = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut prog))
        .map_err(|e| format!("read the mount-vetting filter back: {e}"))?;
    let insn = std::mem::size_of::<libc::sock_filter>();
    if prog.is_empty() || prog.len() % insn != 0 || prog.len() / insn > u16::MAX as usize {
        return Err(format!(
            "the exported mount-vetting filter has {} bytes, not a whole BPF program",
            prog.len()
        ));
    }
    // The bytes are copied into properly aligned instructions (a Vec<u8> promises no
    // alignment for sock_filter's u32). libseccomp writes them in the host's byte order.
    Ok(prog
        .chunks_exact(insn)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

/// Does the kernel know `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` ([`load_listening`])? Asked
/// without loading anything: the kernel checks the flags first (EINVAL for one it does not
/// know) and only then reads the program, which a null pointer makes fail with EFAULT.
pub fn kernel_waits_killable() -> bool {
    // SAFETY: the kernel reads no program from a null pointer; it fails the call (EFAULT)
    // or refuses the flags (EINVAL) first, and installs nothing either way.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
            std::ptr::null::<libc::sock_fprog>(),
        )
    };
    rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EFAULT)
}

/// Loads `filter` (from [`program`]) on this thread with a new listener and returns it.
///
/// Loaded here rather than by libseccomp (whose 2.5 cannot ask for it) so that the kernel
/// can be told `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` (Linux 5.19): once the supervisor has
/// received a call, the caller waits for the answer without being interrupted by a signal.
/// Without it a signal arriving while the supervisor acts (Go's runtime sends SIGURG to its
/// threads to preempt them; runc and dockerd are Go programs) ends the wait, the call is
/// restarted and becomes a second notification, and a mount or umount that was already made
/// is asked for again: runc's `umount2(".", MNT_DETACH)` of its old root then found its cwd
/// already detached and failed with ENOENT. Older kernels refuse the flag (EINVAL) and get
/// the filter without it.
pub fn load_listening(filter: &[libc::sock_filter]) -> super::Result<OwnedFd> {
    if filter.is_empty() || filter.len() > u16::MAX as usize {
        return Err(format!("a BPF program of {} instructions", filter.len()));
    }
    let fprog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    let load = |flags: libc::c_ulong| {
        // SAFETY: seccomp(SECCOMP_SET_MODE_FILTER) reads the program that fprog describes,
        // which `filter` keeps alive for the call; with NEW_LISTENER it returns a new
        // descriptor.
        unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                &fprog as *const libc::sock_fprog,
            )
        }
    };
    let mut rc =
        load(libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV);
    if rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        rc = load(libc::SECCOMP_FILTER_FLAG_NEW_LISTENER);
    }
    if rc < 0 {
        return Err(super::errno("load eci's mount-vetting filter"));
    }
    // SAFETY: with SECCOMP_FILTER_FLAG_NEW_LISTENER a successful seccomp() returns a new
    // descriptor for the listener, which nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as libc::c_int) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's kernel (6.x) and the VM's have the flag; the probe installs nothing, so
    /// asking twice gives the same answer and this process's seccomp state stays as it was.
    #[test]
    fn the_probe_finds_the_flag_and_loads_nothing() {
        let mode = || {
            std::fs::read_to_string("/proc/thread-self/status")
                .unwrap()
                .lines()
                .find(|l| l.starts_with("Seccomp"))
                .map(str::to_string)
        };
        let before = mode();
        assert!(kernel_waits_killable());
        assert!(kernel_waits_killable());
        assert_eq!(
            mode(),
            before,
            "the probe changed this thread's seccomp state"
        );
    }
}
