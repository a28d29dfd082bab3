//! OCI hooks, run by the runtime in the VM's namespaces with the container state on stdin.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use eci_policy::spec::Hook;

use crate::state::{State, Status};

pub fn state_json(st: &State, status: Status) -> String {
    serde_json::json!({
        "ociVersion": "1.0.2",
        "id": st.id,
        "pid": st.pid,
        "status": status,
        "bundle": st.bundle,
        "annotations": st.annotations,
    })
    .to_string()
}

pub fn run(hooks: &[Hook], state: &str, phase: &str) -> Result<(), String> {
    for h in hooks {
        // dockerd's network hook: its one message sent from here (network_hook.rs).
        if let Some(k) = crate::network_hook::recognise(h) {
            crate::network_hook::send(&k, state, h.timeout)
                .map_err(|e| format!("{phase} hook: {e}"))?;
            continue;
        }
        let mut cmd = Command::new(&h.path);
        if let Some((first, rest)) = h.args.split_first() {
            cmd.arg0(first).args(rest);
        }
        cmd.env_clear();
        for kv in &h.env {
            if let Some((k, v)) = kv.split_once('=') {
                cmd.env(k, v);
            }
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("{phase} hook {}: {e}", h.path))?;
        if let Some(mut i) = child.stdin.take() {
            let _ = i.write_all(state.as_bytes());
        }
        let deadline = h.timeout.map(|t| Instant::now() + Duration::from_secs(t));
        let status = loop {
            if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
                break s;
            }
            if deadline.is_some_and(|d| Instant::now() > d) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{phase} hook {} timed out", h.path));
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        if !status.success() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return Err(format!(
                "{phase} hook {} failed ({status}): {}",
                h.path,
                err.trim()
            ));
        }
    }
    Ok(())
}
