//! What the server keeps on disk so that a server taking its connection over (connection.rs)
//! answers the kernel as the one before did: each container's slot (its inode numbers: the
//! kernel caches them, and the containers' binds hold them), the knobs it wrote, and the next
//! slot to give (slots are never reused on one connection, fs.rs). One file per container
//! plus `next-slot` and `generation` (the servers on this connection so far, which file
//! handles carry), under `<root>/held` (tmpfs under /run), each written atomically before the
//! kernel learns what it records (the lookup's or the write's answer, the first open), so a
//! server killed at any point leaves files that say no less than the kernel knows.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One container's part.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub slot: u64,
    /// The registration it belongs to (the record's boot_id, new at every create): a container
    /// created again under the same key is a new one.
    #[serde(default)]
    pub boot_id: String,
    /// Emulated /proc/sys knobs the container wrote: path -> value.
    #[serde(default)]
    pub knobs: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct HeldDir {
    dir: PathBuf,
}

const NEXT: &str = "next-slot";
const GENERATION: &str = "generation";

impl HeldDir {
    pub fn new(dir: impl Into<PathBuf>) -> HeldDir {
        HeldDir { dir: dir.into() }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// A new connection: nothing of an earlier one applies.
    pub fn clear(&self) -> io::Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The first slot not given yet on this connection (1 when none was).
    pub fn next_slot(&self) -> u64 {
        std::fs::read_to_string(self.dir.join(NEXT))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1)
    }

    pub fn set_next_slot(&self, n: u64) -> io::Result<()> {
        self.write(&self.dir.join(NEXT), format!("{n}\n").as_bytes())
    }

    /// A new server on this connection: its number (1 for the first), kept before it serves.
    /// File handles carry it, so a handle the kernel kept from a server before never names
    /// one of this server's opens.
    pub fn next_generation(&self) -> io::Result<u64> {
        let g = std::fs::read_to_string(self.dir.join(GENERATION))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        self.write(&self.dir.join(GENERATION), format!("{g}\n").as_bytes())?;
        Ok(g)
    }

    pub fn get(&self, key: &str) -> Option<Held> {
        let b = std::fs::read(self.path(key)).ok()?;
        serde_json::from_slice(&b).ok()
    }

    pub fn put(&self, key: &str, h: &Held) -> io::Result<()> {
        let b = serde_json::to_vec(h).expect("serializable");
        self.write(&self.path(key), &b)
    }

    pub fn remove(&self, key: &str) {
        let _ = std::fs::remove_file(self.path(key));
    }

    /// Every container held, by key.
    pub fn all(&self) -> Vec<(String, Held)> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut v: Vec<(String, Held)> = rd
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().into_string().ok()?;
                let key = n.strip_suffix(".json")?.to_string();
                let h = self.get(&key)?;
                Some((key, h))
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// A new file renamed over the old: whole or not at all when the server dies. Not synced:
    /// what it records lives as long as the FUSE connection, which no reboot keeps, and a sync
    /// on a disk-backed root (a test's) would cost milliseconds at every container's first
    /// lookup.
    fn write(&self, path: &std::path::Path, bytes: &[u8]) -> io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(&self.dir)?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("held");
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        drop(f);
        std::fs::rename(&tmp, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_and_knobs_survive_and_clear_forgets_them() {
        let d = tempfile::tempdir().unwrap();
        let h = HeldDir::new(d.path().join("held"));
        assert_eq!(h.next_slot(), 1);
        assert!(h.all().is_empty());
        let mut a = Held {
            slot: 3,
            boot_id: "b".into(),
            knobs: BTreeMap::new(),
        };
        assert_eq!(h.next_generation().unwrap(), 1);
        assert_eq!(h.next_generation().unwrap(), 2);
        a.knobs.insert("net/ipv4/ip_forward".into(), "1\n".into());
        h.put("a-1", &a).unwrap();
        h.put("b-2", &Held::default()).unwrap();
        h.set_next_slot(4).unwrap();
        let again = HeldDir::new(d.path().join("held"));
        assert_eq!(again.next_slot(), 4);
        assert_eq!(again.get("a-1").unwrap(), a);
        assert_eq!(
            again
                .all()
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>(),
            ["a-1", "b-2"]
        );
        again.remove("b-2");
        assert!(again.get("b-2").is_none());
        again.clear().unwrap();
        assert_eq!(again.next_slot(), 1);
        assert_eq!(again.next_generation().unwrap(), 1);
        again.clear().unwrap();
        assert!(again.all().is_empty());
        again.clear().unwrap();
    }
}
