//! Messages between the supervisor and a container's helper (JSON over SOCK_SEQPACKET, with
//! descriptors as SCM_RIGHTS): [`HelperInit`] once, then one message per listener to serve
//! (its only content the listener), each answered with a [`HelperReply`].

use serde::{Deserialize, Serialize};

/// First message to a new helper. Descriptors: the container's namespaces, in `ns` order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HelperInit {
    /// Namespace kinds (`mnt`, `ipc`, `net`, `cgroup`, `uts`, `user`) of the descriptors.
    pub ns: Vec<String>,
    /// Mount ids of the mounts the container started with (its mount namespace as created).
    pub protected_ids: Vec<u64>,
    /// Root identities (device major, minor, inode) of the masks and read-only paths laid over
    /// the container's /proc and /sys: a copy of one (in a mount namespace the container makes)
    /// is as protected as the original.
    pub mask_roots: Vec<(u32, u32, u64)>,
}

/// A vetted call's arguments, read once from the caller's memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CallArgs {
    Mount {
        source: Option<String>,
        target: String,
        fstype: Option<String>,
        flags: u64,
        data: Option<String>,
    },
    Umount {
        target: String,
        flags: u64,
    },
}

/// The errno the caller gets (0: success) and, for the log, why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HelperReply {
    pub errno: i32,
    pub note: String,
}

/// One mask of the container's first /proc, replayed on every new proc it mounts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MaskStep {
    /// Below the proc mount (`keys`, `sys`, `sys/net`).
    pub rel: String,
    pub kind: MaskKind,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MaskKind {
    /// A bind of the new proc's own folder or file (read-only paths; the writable namespaced
    /// parts of /proc/sys), the path inside proc.
    ProcSub(String),
    /// An empty tmpfs over a folder.
    Tmpfs,
    /// The VM's /dev/null over a file.
    DevNull,
    /// A view of eci-views (SPEC F1-F4) bound over the first proc or sysfs: its path in the
    /// container and the views' device. The new one shows the same view (the same
    /// per-container file and knobs).
    View { path: String, dev: (u32, u32) },
}

/// The helper's request for a new proc or sysfs (descriptor: the caller's pid or network
/// namespace).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcRequest {
    /// `proc` or `sysfs`.
    pub fstype: String,
    pub options: Vec<(String, Option<String>)>,
    pub attrs: u64,
}

/// The answer (descriptor: the detached, masked proc tree); `masks` are the places below it
/// that carry a mask, for the helper to protect.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcReply {
    pub errno: i32,
    pub note: String,
    pub masks: Vec<String>,
}
