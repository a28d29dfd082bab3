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
