//! eci-runc as a library: a runc-compatible OCI runtime that runs every container in its own
//! user namespace with an exclusive id range (see runtime/README.md). The binary (`main.rs`)
//! parses runc's command line and calls [`commands`]; a long-lived supervisor uses the same
//! state ([`State`], [`Status`]), id allocator ([`Allocator`]) and policy loading ([`Global`]).

pub mod alloc;
mod audit;
mod binds;
mod build_step;
mod cgroup;
pub mod commands;
mod create;
mod devices;
pub mod error;
mod exec;
mod hooks;
pub mod log;
mod network_hook;
mod process;
mod rootfs;
pub mod seccomp;
mod share;
pub mod state;
mod sys;
mod views;

use std::path::PathBuf;

use eci_policy::Policy;

pub use alloc::Allocator;
pub use create::CreateOpts;
pub use error::{Error, Result};
pub use exec::ExecOpts;
pub use state::{State, Status};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Where the allocator keeps its state unless ECI_RUNC_STATE_DIR says otherwise.
pub const DEFAULT_ALLOC_DIR: &str = "/run/eci-runc-ids";
/// runc's default `--root`.
pub const DEFAULT_ROOT: &str = "/run/eci-runc";

/// Settings every command shares: where state, policy and the allocator live.
pub struct Global {
    /// Folder for container state (runc's `--root`).
    pub root: PathBuf,
    pub systemd_cgroup: bool,
    pub policy_path: PathBuf,
    pub alloc_dir: PathBuf,
}

impl Global {
    /// The settings as the runtime resolves them: `policy` (`--policy`), else
    /// `ECI_RUNC_POLICY`, else the VM's policy file; the allocator folder from
    /// `ECI_RUNC_STATE_DIR`, else [`DEFAULT_ALLOC_DIR`].
    pub fn from_env(root: PathBuf, systemd_cgroup: bool, policy: Option<PathBuf>) -> Global {
        Global {
            root,
            systemd_cgroup,
            policy_path: policy
                .or_else(|| std::env::var_os("ECI_RUNC_POLICY").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from(eci_facts::vm_paths::POLICY_PATH)),
            alloc_dir: std::env::var_os("ECI_RUNC_STATE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_ALLOC_DIR)),
        }
    }

    /// The isolation policy (a missing file means the defaults).
    pub fn policy(&self) -> Result<Policy> {
        Ok(Policy::load(&self.policy_path)?)
    }

    pub fn allocator_with(&self, p: &Policy) -> Allocator {
        Allocator::new(&self.alloc_dir, p.pool_start, p.pool_ranges)
    }

    /// For release, which does not depend on the pool's geometry.
    pub fn allocator(&self) -> Allocator {
        let p = self.policy().unwrap_or_default();
        self.allocator_with(&p)
    }
}

/// Reports the error that ends a command as runc does (the `--log` file and stderr) and, when
/// it is an isolation refusal, in the audit log (SPEC S5).
pub fn report(e: &Error) {
    let msg = e.to_string();
    log::error(&msg);
    audit::flush(&msg);
}
