//! `pause` and `resume`: freeze and thaw the container's cgroup.

use crate::error::{Error, Result};
use crate::state::{State, Status};
use crate::Global;

pub fn pause(g: &Global, id: &str) -> Result<()> {
    let st = State::load(&g.root, id)?;
    if st.status(&g.root) != Status::Running {
        return Err(Error::NotRunning { id: id.to_string() });
    }
    Ok(st.cgroup.freeze(true)?)
}

pub fn resume(g: &Global, id: &str) -> Result<()> {
    let st = State::load(&g.root, id)?;
    if st.status(&g.root) != Status::Paused {
        return Err(Error::NotPaused { id: id.to_string() });
    }
    Ok(st.cgroup.freeze(false)?)
}
