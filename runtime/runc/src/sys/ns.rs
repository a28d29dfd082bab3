//! The nsfs ioctls (`ioctl_ns(2)`), which nix does not wrap.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

/// `NS_GET_USERNS`: the user namespace that owns namespace `ns`.
pub fn owning_user_namespace(ns: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
    // _IO(0xb7, 0x1)
    const NS_GET_USERNS: libc::c_ulong = 0xb701;
    // SAFETY: NS_GET_USERNS takes no argument and returns a new descriptor or -1.
    let fd = Errno::result(unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_USERNS as _) })?;
    // SAFETY: the kernel just opened `fd` for us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `NS_GET_NSTYPE`: the `CLONE_NEW*` flag of namespace `ns`.
pub fn namespace_type(ns: BorrowedFd<'_>) -> Result<libc::c_int, Errno> {
    // _IO(0xb7, 0x3)
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: NS_GET_NSTYPE takes no argument and returns an integer or -1.
    Errno::result(unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_NSTYPE as _) })
}
