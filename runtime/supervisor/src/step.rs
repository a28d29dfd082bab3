//! Which step of answering a vetted call failed. The caller only ever sees an errno; the
//! supervisor's log names the step (opening the caller's cwd, entering its mount namespace,
//! the umount itself), because one errno such as ENOENT can come from several of them, and a
//! failure that happens now and then cannot be re-run with more logging switched on.

use std::fmt;
use std::io;

/// An io error with the step it happened in; its errno is the cause's.
#[derive(Debug)]
struct Failed {
    step: String,
    cause: io::Error,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step, self.cause)
    }
}

impl std::error::Error for Failed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.cause)
    }
}

/// `.step("what")` names the step an io or nix error came from.
pub trait Step<T> {
    fn step(self, what: impl fmt::Display) -> io::Result<T>;
}

impl<T, E: Into<io::Error>> Step<T> for Result<T, E> {
    fn step(self, what: impl fmt::Display) -> io::Result<T> {
        self.map_err(|e| {
            let cause = e.into();
            io::Error::new(
                cause.kind(),
                Failed {
                    step: what.to_string(),
                    cause,
                },
            )
        })
    }
}

/// The errno the caller gets for `e`: its own, or that of the step's cause; EPERM when there is
/// none (a failure that is not the kernel's refuses the call).
pub fn errno(e: &io::Error) -> i32 {
    if let Some(n) = e.raw_os_error() {
        return n;
    }
    match e.get_ref().and_then(|i| i.downcast_ref::<Failed>()) {
        Some(f) => errno(&f.cause),
        None => libc::EPERM,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_keeps_the_errno_and_names_itself() {
        let r: Result<(), nix::errno::Errno> = Err(nix::errno::Errno::ENOENT);
        let e = r.step("open the caller's cwd").unwrap_err();
        assert_eq!(errno(&e), libc::ENOENT);
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().starts_with("open the caller's cwd: "), "{e}");
        let twice: io::Result<()> = Err(e);
        let e = twice.step("umount2 \".\"").unwrap_err();
        assert_eq!(errno(&e), libc::ENOENT);
        assert!(
            e.to_string()
                .starts_with("umount2 \".\": open the caller's cwd: "),
            "{e}"
        );
    }

    #[test]
    fn an_error_without_an_errno_refuses_with_eperm() {
        let e = io::Error::new(io::ErrorKind::PermissionDenied, "outside its root");
        assert_eq!(errno(&e), libc::EPERM);
        assert_eq!(
            errno(&io::Error::from_raw_os_error(libc::EBUSY)),
            libc::EBUSY
        );
    }
}
