//! A container's state folder `<root>/<id>/`: `state.json` (ours), `config.json` (the spec
//! after isolation rewrote it, used by `exec`) and `exec.fifo` while the container is created
//! but not started.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use eci_policy::spec::Spec;
use serde::{Deserialize, Serialize};

use crate::cgroup::Cgroup;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub id: String,
    /// 0 until the init process exists.
    pub pid: i32,
    /// Start time of `pid` (guards against pid reuse).
    pub pid_start: u64,
    pub bundle: String,
    pub rootfs: String,
    pub created: String,
    pub range_start: u32,
    pub range_size: u32,
    pub cgroup: Cgroup,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

pub const FIFO: &str = "exec.fifo";

pub fn dir(root: &Path, id: &str) -> PathBuf {
    root.join(id)
}

/// Container ids as runc accepts them: they become folder names.
pub fn valid_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c))
        && id != "."
        && id != "..";
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid container id {id:?}: use letters, digits, _ + - ."
        ))
    }
}

impl State {
    pub fn load(root: &Path, id: &str) -> Result<State, String> {
        valid_id(id)?;
        let p = dir(root, id).join("state.json");
        let b = fs::read(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                format!("container {id} does not exist")
            } else {
                format!("read {}: {e}", p.display())
            }
        })?;
        serde_json::from_slice(&b).map_err(|e| format!("{} is corrupt: {e}", p.display()))
    }

    pub fn save(&self, root: &Path) -> Result<(), String> {
        let d = dir(root, &self.id);
        write_atomic(
            &d.join("state.json"),
            &serde_json::to_vec(self).map_err(|e| e.to_string())?,
        )
    }

    pub fn config(&self, root: &Path) -> Result<Spec, String> {
        let p = dir(root, &self.id).join("config.json");
        let b = fs::read(&p).map_err(|e| format!("read {}: {e}", p.display()))?;
        serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", p.display()))
    }

    pub fn alive(&self) -> bool {
        self.pid > 0 && crate::sys::start_time(self.pid) == Some(self.pid_start)
    }

    /// runc's status words.
    pub fn status(&self, root: &Path) -> &'static str {
        if !self.alive() {
            return "stopped";
        }
        if dir(root, &self.id).join(FIFO).exists() {
            return "created";
        }
        if self.cgroup.is_frozen() {
            return "paused";
        }
        "running"
    }

    /// The JSON `runc state` prints and containerd's go-runc parses.
    pub fn to_runc(&self, root: &Path) -> serde_json::Value {
        let status = self.status(root);
        serde_json::json!({
            "ociVersion": "1.0.2",
            "id": self.id,
            "pid": if status == "stopped" { 0 } else { self.pid },
            "status": status,
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": "",
            "annotations": self.annotations,
        })
    }
}

/// Replaces `path` atomically (temporary file, rename). No fsync, like the allocator's table
/// (alloc.rs says why): the state root lives in /run, so after a VM crash there is no state to
/// be torn, and a crash of the runtime itself is covered by the page cache.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let r = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        fs::rename(&tmp, path)
    })();
    r.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("write {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(valid_id("abc-1_2.3+x").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "../x"] {
            assert!(valid_id(bad).is_err(), "{bad}");
        }
    }
}
