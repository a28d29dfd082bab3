//! `run`: create, start and (unless detached) wait for the container and delete it.

use crate::error::Result;
use crate::{commands, CreateOpts, Global};

/// The init's exit code (0 when `detach`).
pub fn run(g: &Global, o: &CreateOpts, detach: bool, keep: bool) -> Result<i32> {
    if !detach {
        // The init is a grandchild (the set-up forks twice): become its reaper to wait for it.
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| format!("become a child subreaper: {e}"))?;
    }
    let pid = commands::create(g, o)?;
    commands::start(g, &o.id)?;
    if detach {
        return Ok(0);
    }
    let code = crate::sys::waitpid(pid)?;
    if !keep {
        commands::delete(g, &o.id, true)?;
    }
    Ok(code)
}
