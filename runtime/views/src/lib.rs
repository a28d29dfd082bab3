//! Per-container views of /proc and /sys (SPEC F1-F4), served over FUSE.
//!
//! One FUSE mount (`<root>/fs`, default root `/run/eci-views`) serves every container: a folder
//! per container holds its files (uptime, meminfo, cpuinfo, stat, loadavg, swaps, diskstats,
//! the emulated /proc/sys knobs, boot_id, machine-id, DMI product_uuid). The runtime clones
//! those files as detached bind mounts at create and the container's init attaches them over
//! /proc, /proc/sys and /sys. One connection, not one per container: one server process, one
//! set of worker threads, and a new container costs a record, not a mount.
//!
//! - [`render`]: pure renderers (VM file text + cgroup numbers -> the container's text).
//! - [`cgroup`]: the container's numbers from cgroup v1 or v2.
//! - [`knobs`]: the documented list of emulated /proc/sys knobs.
//! - [`registry`]: the per-container records the runtime writes and the server reads.
//! - [`fs`]: the FUSE filesystem; [`notifier`]: the thread that puts texts in the kernel's page
//!   cache and answers the opens waiting for it; [`server`]: the process around them
//!   ([`server::serve`] is the seam a supervisor calls to host it); [`client`]: what the
//!   runtime calls.
//!
//! A proc or sysfs the container mounts itself gets the same views: the supervisor clones them
//! from the container's first ones (runtime/supervisor, `powers.rs`; SPEC M3).
//! - [`connection`]: the FUSE connection, kept in the fd store so that it outlives its server;
//!   [`held`]: what a server taking it over needs of the one before (slots, knobs).

pub mod cgroup;
pub mod client;
pub mod connection;
pub mod fs;
pub mod held;
pub mod knobs;
pub mod notifier;
pub mod registry;
pub mod render;
pub mod server;

use std::path::{Path, PathBuf};

/// The folder under which the server keeps its mount, records, socket and lock.
pub const DEFAULT_ROOT: &str = "/run/eci-views";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "view record {0}: {1} (remove the file; the runtime writes it again at the next create)"
    )]
    Record(PathBuf, String),
    #[error("{0:?} is not a plain folder name (letters, digits, '_', '-', '.')")]
    BadKey(String),
    #[error("another eci-views server holds {0} (it serves the views; nothing to do)")]
    AlreadyServing(PathBuf),
    #[error("the /proc views server did not answer on {socket} within {secs} s after being started as {bin:?}; its log is {log}")]
    NoServer {
        socket: PathBuf,
        bin: PathBuf,
        secs: u64,
        log: PathBuf,
    },
    #[error("mount FUSE at {0}: {1} (is the `fuse` module loaded? /dev/fuse must exist)")]
    Mount(PathBuf, String),
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Where one server instance keeps its things.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    /// `ECI_VIEWS_ROOT`, else [`DEFAULT_ROOT`].
    pub fn from_env() -> Layout {
        Layout::new(
            std::env::var_os("ECI_VIEWS_ROOT")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT)),
        )
    }

    /// The FUSE mount point.
    pub fn mount(&self) -> PathBuf {
        self.root.join("fs")
    }

    pub fn records(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// What the server keeps for a server that takes its FUSE connection over (held.rs).
    pub fn held(&self) -> PathBuf {
        self.root.join("held")
    }

    pub fn socket(&self) -> PathBuf {
        self.root.join("serve.sock")
    }

    pub fn lock(&self) -> PathBuf {
        self.root.join("serve.lock")
    }

    pub fn log(&self) -> PathBuf {
        self.root.join("serve.log")
    }

    /// A container's folder in the mount.
    pub fn container(&self, key: &str) -> PathBuf {
        self.mount().join(key)
    }
}

/// One view attached in the container: `source` relative to the container's folder, `target`
/// the absolute path inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: String,
    pub target: String,
    pub kind: BindKind,
}

/// What the target must be for the view to be attached (a missing target is left alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindKind {
    File,
    Dir,
    /// Only over an empty regular file: /etc/machine-id as images ship it for systemd to fill
    /// in at boot; an image's own id is the image's business.
    EmptyFile,
}

impl BindKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BindKind::File => "file",
            BindKind::Dir => "dir",
            BindKind::EmptyFile => "empty-file",
        }
    }
}

/// The /proc files computed from the container's cgroup (SPEC F1, F3).
pub const PROC_FILES: &[&str] = &[
    "uptime",
    "meminfo",
    "cpuinfo",
    "stat",
    "loadavg",
    "swaps",
    "diskstats",
];

/// Every view and where it goes. /sys/class/dmi and /sys/devices/virtual/dmi get a folder
/// holding only `id/product_uuid` (SPEC F4).
pub fn binds() -> Vec<Bind> {
    let bind = |source: String, target: String, kind| Bind {
        source,
        target,
        kind,
    };
    let mut v: Vec<Bind> = PROC_FILES
        .iter()
        .map(|f| bind(format!("proc/{f}"), format!("/proc/{f}"), BindKind::File))
        .collect();
    for k in knobs::KNOBS {
        v.push(bind(
            format!("sysctl/{}", knobs::file_name(k)),
            format!("/proc/sys/{}", k.path),
            BindKind::File,
        ));
    }
    v.push(bind(
        "boot_id".into(),
        "/proc/sys/kernel/random/boot_id".into(),
        BindKind::File,
    ));
    for t in ["/sys/class/dmi", "/sys/devices/virtual/dmi"] {
        v.push(bind("dmi".into(), t.into(), BindKind::Dir));
    }
    v.push(bind(
        "machine-id".into(),
        "/etc/machine-id".into(),
        BindKind::EmptyFile,
    ));
    v
}

/// Folders of the VM that show hardware, firmware or kernel internals and are empty in every
/// container (SPEC F4).
pub const EMPTY_DIRS: &[&str] = &[
    "/sys/firmware",
    "/sys/kernel/debug",
    "/sys/kernel/security",
    "/sys/bus/vmbus",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bind_source_exists_in_the_tree() {
        for b in binds() {
            assert!(
                fs::Tree::get().find(&b.source).is_some(),
                "{} is not served",
                b.source
            );
            assert!(["/proc/", "/sys/", "/etc/"]
                .iter()
                .any(|p| b.target.starts_with(p)));
        }
    }
}
