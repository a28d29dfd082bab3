//! `start`: let a created container's init run its process.

use std::fs;
use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::error::{Error, Result};
use crate::state::{self, State, Status};
use crate::{hooks, log, sys, Global};

pub fn start(g: &Global, id: &str) -> Result<()> {
    let st = State::load(&g.root, id)?;
    match st.status(&g.root) {
        Status::Created => {}
        Status::Stopped => return Err(Error::StartStopped),
        _ => return Err(Error::StartRunning),
    }
    let fifo = state::dir(&g.root, id).join(state::FIFO);
    // Opening the read end does not block (O_NONBLOCK); the init's blocked open of the write
    // end returns, it writes one byte and execs. A short poll keeps noticing an init that died.
    let fd = sys::open(&fifo, (OFlag::O_RDONLY | OFlag::O_NONBLOCK).bits(), 0)?;
    loop {
        let mut pfd = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        let ready = match poll(&mut pfd, PollTimeout::from(50u8)) {
            Ok(n) => n > 0,
            Err(Errno::EINTR) => false,
            Err(e) => return Err(Error::Setup(format!("poll {}: {e}", fifo.display()))),
        };
        if ready
            && pfd[0]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLIN))
        {
            let mut b = [0u8; 1];
            if nix::unistd::read(&fd, &mut b) == Ok(1) {
                break;
            }
        }
        if !st.alive() {
            return Err(Error::InitExited);
        }
    }
    let _ = fs::remove_file(&fifo);
    if let Some(h) = st.config(&g.root).ok().and_then(|c| c.hooks) {
        if let Err(e) = hooks::run(
            &h.poststart,
            &hooks::state_json(&st, Status::Running),
            "poststart",
        ) {
            log::warn(&e);
        }
    }
    Ok(())
}
