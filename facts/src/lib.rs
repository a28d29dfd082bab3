//! Helpers every eci crate needs the same way, written once: the build side (eci-build) and
//! the VM side (eci-runc, eci-guard, eci-init) use these, so a crash-safety or date bug is
//! fixed in one place. No dependencies, so depending on it costs nothing.

mod atomic;
mod time;

pub use atomic::write_atomic;
pub use time::{rfc3339, Precision};
