//! A private eci-runc engine whose /proc views server is its own (SPEC F1-F4 suite).
//!
//! The engine's eci-runc gets `ECI_VIEWS_ROOT` inside the engine's folder, so the server it
//! starts (and any server a test stops) is this engine's alone; `Drop` stops it by its pid.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::runc_engine::{eci_runc_binary, RuncEngine};

pub struct ViewsEngine {
    pub engine: RuncEngine,
    pub views_root: PathBuf,
}

/// True when eci-views was built beside eci-runc (`cargo test --workspace` builds it; else
/// `cargo build -p eci-views`).
pub fn views_binary_built() -> bool {
    eci_runc_binary().is_some_and(|b| b.with_file_name("eci-views").is_file())
}

impl ViewsEngine {
    /// Against the VM (`eci-build test`) the views server is the VM's own (eci-init's
    /// service): nothing is changed and [`Self::server_pid`] and [`Self::kill_server`] panic.
    pub fn start(name: &str) -> Result<ViewsEngine> {
        let engine = RuncEngine::start(name)?;
        let views_root = engine.path().join("views");
        if !engine.on_this_machine() {
            return Ok(ViewsEngine { engine, views_root });
        }
        // dockerd runs the wrapper anew for every container, so the line takes effect now.
        let wrapper = engine.path().join("eci-runc");
        let text = std::fs::read_to_string(&wrapper).context("read the eci-runc wrapper")?;
        let text = text.replacen(
            "#!/bin/sh\n",
            &format!(
                "#!/bin/sh\nexport ECI_VIEWS_ROOT={}\n",
                views_root.display()
            ),
            1,
        );
        std::fs::write(&wrapper, text).context("write the eci-runc wrapper")?;
        Ok(ViewsEngine { engine, views_root })
    }

    /// The pid of this engine's views server, when one answers.
    pub fn server_pid(&self) -> Option<i32> {
        self.engine.local_only("the views server's process");
        server_pid(&self.views_root)
    }

    /// Stops this engine's views server (SIGKILL, as a crash would) and waits until it is gone.
    pub fn kill_server(&self) -> Option<i32> {
        let pid = self.server_pid()?;
        kill_and_wait(pid);
        Some(pid)
    }

    /// Stops the fd store this engine's first views server started (`eci-views fd-store
    /// --socket VIEWS_ROOT/fd-store.sock`), which holds the FUSE connection between servers.
    pub fn kill_store(&self) -> Option<i32> {
        self.engine.local_only("the views server's fd store");
        let want = format!(
            "--socket\0{}",
            self.views_root.join("fd-store.sock").display()
        );
        let pid = std::fs::read_dir("/proc").ok()?.flatten().find_map(|p| {
            let pid: i32 = p.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(p.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmd).contains(&want).then_some(pid)
        })?;
        kill_and_wait(pid);
        Some(pid)
    }
}

fn kill_and_wait(pid: i32) {
    // SAFETY: signalling a process this engine's runtime started, by its pid.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    for _ in 0..200 {
        if !Path::new(&format!("/proc/{pid}")).exists() || zombie(pid) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('Z')))
        .unwrap_or(true)
}

/// Asks the server at `root` for its pid (`ping` answers `ok eci-views PID`).
pub fn server_pid(root: &Path) -> Option<i32> {
    let mut s = UnixStream::connect(root.join("serve.sock")).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .ok()?;
    s.write_all(b"ping\n").ok()?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).ok()?;
    line.trim().rsplit(' ').next()?.parse().ok()
}

impl Drop for ViewsEngine {
    fn drop(&mut self) {
        // Containers first (RuncEngine's drop removes them), while the server still answers.
        let ids = self.engine.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.engine.docker(&["rm", "-f", id]);
        }
        if !self.engine.on_this_machine() {
            return;
        }
        self.kill_server();
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.views_root.join("fs"))
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A field of a /proc/meminfo text, in kB.
pub fn meminfo_kb(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}
