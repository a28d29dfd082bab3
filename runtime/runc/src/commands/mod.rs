//! runc's lifecycle commands, one file each. `create` and `exec` live in `crate::create` and
//! `crate::exec` (the container set-up they run is most of the runtime).

mod delete;
mod events;
mod features;
mod kill;
mod list;
mod pause;
mod ps;
mod run;
mod start;
mod state;
mod update;

pub use delete::delete;
pub use events::events;
pub use features::features;
pub use kill::{kill, parse_signal};
pub use list::{list, ListFormat};
pub use pause::{pause, resume};
pub use ps::ps;
pub use run::run;
pub use start::start;
pub use state::state;
pub use update::{parse_bytes, update, UpdateOpts};

use crate::{CreateOpts, ExecOpts, Global, Result};

/// Sets the container up and leaves its init waiting for `start`; the init's pid.
pub fn create(g: &Global, o: &CreateOpts) -> Result<i32> {
    Ok(crate::create::create(g, o)?)
}

/// Runs a process in the container; its exit code (0 with `detach`).
pub fn exec(g: &Global, o: &ExecOpts) -> Result<i32> {
    Ok(crate::exec::exec(g, o)?)
}
