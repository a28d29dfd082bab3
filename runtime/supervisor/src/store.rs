//! The supervisor's side of the fd store (`eci_init::fd_store`, SPEC M5): every listener the
//! supervisor serves is deposited there; a supervisor that starts takes back what its killed
//! predecessor served and re-attaches each container, or names it in its log.
//!
//! Who holds the store: in the VM eci-init (PID 1 outlives every service). Where none runs
//! (a development machine, a test engine), this supervisor starts `eci-supervisor fd-store`
//! beside its socket when nothing answers there: a separate process, in a process group of its
//! own, so killing the supervisor leaves it. Re-executing the supervisor while keeping the
//! descriptors was not chosen: it covers an upgrade but not a crash or a kill, which is what
//! the store is for.
//!
//! # What a re-attached container keeps
//!
//! A new helper is made from the container's state (`eci_runc::State`: its init, checked alive
//! by its start time and in the user namespace the listeners were registered with). The mounts
//! the container started with come from the store (recorded at its first registration), not
//! from its mounts now, which include the container's own. The old helper's memory is lost,
//! so what it had added is rebuilt on the safe side, from the mounts of every mount namespace
//! of the container's processes: every proc and sysfs and everything below one (new procs the
//! helper made and their masks) and every mount showing the same filesystem folder as an
//! initial one (copies) is protected. So a container may find a mount it made before the
//! restart protected (it cannot unmount it) or a filesystem it made refused a read-write
//! remount; nothing it could not change before becomes changeable.

use std::collections::{BTreeMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use eci_init::fd_store::{self, Client, Kind};
use serde::{Deserialize, Serialize};

/// What the store keeps beside a container's listeners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub state_root: PathBuf,
    pub id: String,
    /// The container's user namespace (nsfs device and inode) at registration.
    pub userns: (u64, u64),
    /// The mounts it started with: id, device major and minor, root folder.
    pub initial: Vec<(u64, u32, u32, String)>,
}

impl Meta {
    /// The store's key: unique among live containers (a user namespace is one container's).
    pub fn key(&self) -> String {
        format!(
            "{}/{} userns {}:{}",
            self.state_root.display(),
            self.id,
            self.userns.0,
            self.userns.1
        )
    }
}

/// The store's connection, and this supervisor's scope in it: its socket's path, the first
/// word of every key it deposits, so that two supervisors sharing eci-init's store each take
/// back only their own containers.
static STORE: OnceLock<Option<(Client, String)>> = OnceLock::new();

/// Connect to the store of a supervisor serving `supervisor_socket`
/// ([`fd_store::socket_for`]: in the VM eci-init's /run/eci/fd-store.sock), starting
/// `eci-supervisor fd-store` beside the socket when none answers. Without a store the
/// supervisor still vets; only a restart would lose the containers.
pub fn connect(supervisor_socket: &Path) {
    let path = fd_store::socket_for(supervisor_socket);
    let client = fd_store::connect_or_start(&path);
    if client.is_none() {
        eprintln!(
            "eci-supervisor: no fd store answers at {}: a restart of this supervisor will leave the running containers' mount calls failing",
            path.display()
        );
    }
    // The socket as its folder really is (a symlink such as /var/run -> /run, a relative path):
    // the next supervisor on the same socket finds its predecessor's containers.
    let scope = supervisor_socket
        .parent()
        .and_then(|d| std::fs::canonicalize(d).ok())
        .map_or_else(
            || supervisor_socket.to_path_buf(),
            |d| d.join(supervisor_socket.file_name().unwrap_or_default()),
        )
        .display()
        .to_string();
    let _ = STORE.set(client.map(|c| (c, scope)));
}

/// Keep a copy of a listener this supervisor now serves.
pub fn deposit(meta: &Meta, meta_json: &str, listener: &OwnedFd) {
    if let Some(Some((c, scope))) = STORE.get() {
        let key = format!("{scope} {}", meta.key());
        if let Err(e) = c.deposit(&key, meta_json, Kind::Listener, listener.as_fd()) {
            eprintln!(
                "eci-supervisor: the fd store did not take container {}'s listener: {e}",
                meta.id
            );
        }
    }
}

/// One container to re-attach: its meta and its listeners.
pub struct Orphan {
    pub key: String,
    pub meta: String,
    pub listeners: Vec<OwnedFd>,
}

/// Everything the store holds that no live supervisor serves, by container.
pub fn take() -> Vec<Orphan> {
    let Some(Some((c, scope))) = STORE.get() else {
        return Vec::new();
    };
    let held = match c.take(&[Kind::Listener], Some(scope)) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("eci-supervisor: take the running containers back from the fd store: {e}; going on without the store");
            // Whatever the store hands over late must stay its orphans (answered), not
            // listeners of this connection that nobody reads.
            c.abandon();
            return Vec::new();
        }
    };
    let mut by_key: BTreeMap<String, Orphan> = BTreeMap::new();
    for h in held {
        let o = by_key.entry(h.key.clone()).or_insert_with(|| Orphan {
            key: h.key,
            meta: h.meta,
            listeners: Vec::new(),
        });
        if h.kind == Kind::Listener {
            o.listeners.push(h.fd);
        }
    }
    by_key.into_values().collect()
}

/// The store answers `meta`'s container's calls again (EPERM): this supervisor no longer
/// serves it.
pub fn release(meta: &Meta) {
    if let Some(Some((c, scope))) = STORE.get() {
        let _ = c.release(&format!("{scope} {}", meta.key()));
    }
}

/// The same for a key as the store gave it back ([`Orphan::key`]).
pub fn release_held(key: &str) {
    if let Some(Some((c, _))) = STORE.get() {
        let _ = c.release(key);
    }
}

/// The mount ids a re-attached container's helper protects (module docs): the initial
/// mounts, every proc and sysfs and what is below one, and copies of the initial mounts, in
/// every mount namespace of the processes in the container's user namespace.
pub fn protected_after_restart(meta: &Meta) -> Vec<u64> {
    let initial_src: HashSet<(u32, u32, &str)> = meta
        .initial
        .iter()
        .map(|(_, ma, mi, root)| (*ma, *mi, root.as_str()))
        .collect();
    let mut protected: HashSet<u64> = meta.initial.iter().map(|m| m.0).collect();
    let mut seen_mnt = HashSet::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return protected.into_iter().collect();
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let ns = |kind: &str| {
            std::fs::metadata(format!("/proc/{pid}/ns/{kind}"))
                .map(|m| (m.dev(), m.ino()))
                .ok()
        };
        if ns("user") != Some(meta.userns) {
            continue;
        }
        let Some(mnt) = ns("mnt") else { continue };
        if !seen_mnt.insert(mnt) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")) else {
            continue;
        };
        let mounts = eci_policy::parse_mountinfo(&text);
        let mut kernel: HashSet<u64> = mounts
            .iter()
            .filter(|m| m.fstype == "proc" || m.fstype == "sysfs")
            .map(|m| m.id)
            .collect();
        // Everything below one, however mountinfo orders parents and children.
        loop {
            let before = kernel.len();
            for m in &mounts {
                if kernel.contains(&m.parent) {
                    kernel.insert(m.id);
                }
            }
            if kernel.len() == before {
                break;
            }
        }
        for m in &mounts {
            if kernel.contains(&m.id) || initial_src.contains(&(m.major, m.minor, m.root.as_str()))
            {
                protected.insert(m.id);
            }
        }
    }
    protected.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_names_the_container_and_its_user_namespace() {
        let m = Meta {
            state_root: "/run/docker/runtime-runc/moby".into(),
            id: "abc".into(),
            userns: (4, 4026532000),
            initial: vec![(20, 0, 30, "/".into())],
        };
        assert_eq!(
            m.key(),
            "/run/docker/runtime-runc/moby/abc userns 4:4026532000"
        );
        let j = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Meta>(&j).unwrap(), m);
    }

    #[test]
    fn protected_after_restart_keeps_the_initial_mounts_without_processes() {
        // No process lives in this user namespace: only the recorded initial mounts remain.
        let m = Meta {
            state_root: "/nonexistent".into(),
            id: "x".into(),
            userns: (u64::MAX, u64::MAX),
            initial: vec![(7, 0, 1, "/".into()), (9, 0, 2, "/a".into())],
        };
        let mut p = protected_after_restart(&m);
        p.sort();
        assert_eq!(p, [7, 9]);
    }
}
