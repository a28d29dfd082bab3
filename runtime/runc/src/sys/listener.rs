//! The seccomp notification listener, which libseccomp hands out as a bare descriptor number.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Takes ownership of the listener `seccomp_notify_fd` returned for the filter this process just
/// loaded; `None` for libseccomp's "no listener" (a negative number).
pub fn adopt(fd: RawFd) -> Option<OwnedFd> {
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel installed this descriptor when the filter with
    // SECCOMP_FILTER_FLAG_NEW_LISTENER was loaded; libseccomp only remembers the number to
    // return it again and closes it only in seccomp_reset(NULL), which eci-runc never calls, so
    // the OwnedFd becomes its one owner.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}
