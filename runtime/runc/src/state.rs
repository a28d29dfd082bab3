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
use crate::error::{Error, Result};

/// runc's lifecycle words, as `state` prints them and containerd parses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The runtime is setting the container up (only hooks see this).
    Creating,
    /// The init waits on `exec.fifo` for `start`.
    Created,
    Running,
    Stopped,
    Paused,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
            Status::Paused => "paused",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
pub fn valid_id(id: &str) -> Result<()> {
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
        Err(Error::InvalidId(id.to_string()))
    }
}

impl State {
    pub fn load(root: &Path, id: &str) -> Result<State> {
        valid_id(id)?;
        let p = dir(root, id).join("state.json");
        let b = fs::read(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound(id.to_string())
            } else {
                Error::io("read", &p, e)
            }
        })?;
        serde_json::from_slice(&b).map_err(|source| Error::CorruptState { path: p, source })
    }

    pub fn save(&self, root: &Path) -> Result<()> {
        let d = dir(root, &self.id);
        // Plain strings, numbers and maps: serialising cannot fail.
        let body = serde_json::to_vec(self).expect("State serialises");
        write_atomic(&d.join("state.json"), &body)
    }

    /// The spec as isolation rewrote it at create.
    pub fn config(&self, root: &Path) -> Result<Spec> {
        let p = dir(root, &self.id).join("config.json");
        let b = fs::read(&p).map_err(|e| Error::io("read", &p, e))?;
        serde_json::from_slice(&b).map_err(|source| Error::Config { path: p, source })
    }

    pub fn alive(&self) -> bool {
        self.pid > 0 && crate::sys::start_time(self.pid) == Some(self.pid_start)
    }

    pub fn status(&self, root: &Path) -> Status {
        if !self.alive() {
            return Status::Stopped;
        }
        if dir(root, &self.id).join(FIFO).exists() {
            return Status::Created;
        }
        if self.cgroup.is_frozen() {
            return Status::Paused;
        }
        Status::Running
    }

    /// The JSON `runc state` prints and containerd's go-runc parses.
    pub fn to_runc(&self, root: &Path) -> serde_json::Value {
        let status = self.status(root);
        serde_json::json!({
            "ociVersion": "1.0.2",
            "id": self.id,
            "pid": if status == Status::Stopped { 0 } else { self.pid },
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
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let r = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        fs::rename(&tmp, path)
    })();
    r.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("write", path, e)
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

    #[test]
    fn status_words_are_runcs() {
        for (s, w) in [
            (Status::Creating, "creating"),
            (Status::Created, "created"),
            (Status::Running, "running"),
            (Status::Stopped, "stopped"),
            (Status::Paused, "paused"),
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), serde_json::json!(w));
            assert_eq!(s.to_string(), w);
        }
    }
}
