//! The library's error. Callers that act on a container's status (a supervisor, the CLI) match
//! the variants; every message names the file, field or container and, where there is one,
//! the fix, in the words runc uses where containerd or dockerd look for them.

use std::path::PathBuf;

use crate::state::Status;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid container id {0:?}: use letters, digits, _ + - .")]
    InvalidId(String),
    #[error("container {0} does not exist")]
    NotFound(String),
    /// An operation on a file or folder failed; `what` is the verb ("read", "remove", ...).
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is corrupt: {source}", path.display())]
    CorruptState {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The spec kept in the state folder does not parse.
    #[error("{}: {source}", path.display())]
    Config {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Policy(#[from] eci_policy::PolicyError),
    #[error("{} is corrupt ({source}); stop all containers and remove it", path.display())]
    CorruptAllocTable {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("all {ranges} id ranges of the pool are in use; remove stopped containers or enlarge eciRunc.idPool.ranges")]
    PoolExhausted { ranges: u32 },
    #[error("container {id} already holds the id range starting at {start}; delete it before creating it again")]
    RangeAlreadyHeld { id: String, start: u32 },
    #[error("container {via} whose namespaces are to be shared no longer holds its id range {start}-{last}; start it again and retry")]
    GroupRangeGone { via: String, start: u32, last: u64 },
    #[error("cannot start a container that has stopped")]
    StartStopped,
    #[error("cannot start an already running container")]
    StartRunning,
    #[error("container init exited before start")]
    InitExited,
    /// runc's words for `kill` of a stopped container; containerd matches them.
    #[error("container not running")]
    KillStopped,
    #[error("container {id} is not running")]
    NotRunning { id: String },
    #[error("container {id} is not paused")]
    NotPaused { id: String },
    #[error("cannot delete container {id} that is not stopped: {status}")]
    NotStopped { id: String, status: Status },
    #[error("unknown signal {0:?}")]
    UnknownSignal(String),
    #[error("invalid size {0:?}")]
    InvalidSize(String),
    #[error("invalid interval {0:?} (use e.g. 5s)")]
    InvalidInterval(String),
    /// A failure or isolation refusal of the set-up code (create, exec, cgroups, mounts); the
    /// message names the file or spec field and the fix, and is what the audit log records.
    #[error("{0}")]
    Setup(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

/// The set-up code still speaks in messages; they pass the boundary unchanged.
impl From<String> for Error {
    fn from(s: String) -> Self {
        Error::Setup(s)
    }
}

impl From<&str> for Error {
    fn from(s: &str) -> Self {
        Error::Setup(s.to_string())
    }
}

/// Inside the set-up code an error from the typed parts (state, allocator, policy) becomes its
/// message.
impl From<Error> for String {
    fn from(e: Error) -> Self {
        e.to_string()
    }
}
