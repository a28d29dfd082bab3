//! `delete`: kill what is left of a container, then remove its cgroup, range and state folder.

use std::fs;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::state::{self, State, Status};
use crate::{hooks, log, sys, Global};

pub fn delete(g: &Global, id: &str, force: bool) -> Result<()> {
    state::valid_id(id)?;
    let dir = state::dir(&g.root, id);
    let st = match State::load(&g.root, id) {
        Ok(st) => st,
        Err(_) if dir.is_dir() && !dir.join("state.json").exists() => {
            // A create that died before writing any state: nothing runs, only the range and
            // the folder are left. Cleaned up either way; as with runc, only a forced delete
            // calls that success (there was no container to delete).
            crate::views::release(&g.root, id);
            g.allocator().release(id, &g.root)?;
            fs::remove_dir_all(&dir).map_err(|e| Error::io("remove", &dir, e))?;
            return if force {
                Ok(())
            } else {
                Err(Error::NotFound(id.to_string()))
            };
        }
        // runc's rule: a forced delete of a container that is not there succeeds. containerd's
        // shim runs `delete --force` once more after every task's own delete removed it, and
        // logs a warning for anything else.
        Err(Error::NotFound(_)) if force => return Ok(()),
        Err(e) => return Err(e),
    };
    let status = st.status(&g.root);
    if (status == Status::Running || status == Status::Paused) && !force {
        return Err(Error::NotStopped {
            id: id.to_string(),
            status,
        });
    }
    if st.alive() {
        let _ = sys::kill(st.pid, libc::SIGKILL);
    }
    for p in st.cgroup.pids() {
        let _ = sys::kill(p, libc::SIGKILL);
    }
    if st.cgroup.is_frozen() {
        let _ = st.cgroup.freeze(false);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while (st.alive() || !st.cgroup.pids().is_empty()) && Instant::now() < deadline {
        for p in st.cgroup.pids() {
            let _ = sys::kill(p, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    st.cgroup.destroy()?;
    if let Some(h) = st.config(&g.root).ok().and_then(|c| c.hooks) {
        if let Err(e) = hooks::run(
            &h.poststop,
            &hooks::state_json(&st, Status::Stopped),
            "poststop",
        ) {
            log::warn(&e);
        }
    }
    crate::views::release(&g.root, id);
    g.allocator().release(id, &g.root)?;
    fs::remove_dir_all(&dir).map_err(|e| Error::io("remove", &dir, e))
}
