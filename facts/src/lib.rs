//! Facts and helpers every eci crate needs the same way, written once: the build side
//! (eci-build, eci-vm-config) and the VM side (eci-runc, eci-guard, eci-init, eci-policy) use
//! these, so a path, a rule or a parser bug is fixed in one place. No dependencies, so
//! depending on it costs nothing.
//!
//! - [`vm_paths`]: paths inside the VM and the runtime name both sides use.
//! - [`host_share`]: how `eci-build boot --share` announces a host folder to eci-init (H3).
//! - [`legacy`]: which containers predate isolation, and the message that refuses them (A5).
//! - [`path`]: the lexical path cleaner and the "is below" comparison.
//! - [`sysctl`]: the sysctl.conf format.
//! - [`suggest`]: "did you mean" hints for mistyped names.
//! - [`write_atomic`], [`rfc3339`]: crash-safe file replacement, RFC 3339 time.

mod atomic;
pub mod host_share;
pub mod legacy;
pub mod path;
pub mod suggest;
pub mod sysctl;
mod time;
pub mod vm_paths;

pub use atomic::write_atomic;
pub use time::{rfc3339, Precision};
