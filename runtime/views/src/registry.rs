//! The per-container registry: one JSON record per container, written by the runtime at
//! create and removed at delete, read by the server when a container's folder is first looked
//! up. On disk (tmpfs under /run), so a restarted server finds every live container again.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cgroup::CgroupDirs;
use crate::Error;

/// What the server needs to know about one container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The folder name in the mount (see [`key`]).
    pub key: String,
    pub cgroup: CgroupDirs,
    /// The VM ids of the container's root: the view files belong to it, and only it may write
    /// the emulated knobs.
    pub root_uid: u32,
    pub root_gid: u32,
    /// The length of the container's id range from `root_uid`: its users may read its views.
    pub id_range: u32,
    /// CLOCK_BOOTTIME at create, in nanoseconds: uptime counts from here (SPEC F1).
    pub started_boottime_ns: u64,
    /// The container's identity (SPEC F4), made at create and kept for its life.
    pub boot_id: String,
    pub machine_id: String,
    pub product_uuid: String,
    /// The runtime's state folder of the container: when it is gone, so is the container
    /// (a runtime that died before `delete` removed the record).
    pub state_dir: PathBuf,
}

/// The folder name of a container in the mount: its id, plus a hash of the runtime's state
/// root, since two engines (or a test and an engine) may use one id under different roots.
pub fn key(root: &Path, id: &str) -> String {
    // FNV-1a: stable across builds and versions, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in root.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{id}-{h:016x}")
}

/// A key is a plain folder name: letters, digits and `_.-` (container ids are that already).
pub fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 200
        && !k.starts_with('.')
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The records folder.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
}

impl Registry {
    pub fn new(dir: impl Into<PathBuf>) -> Registry {
        Registry { dir: dir.into() }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    pub fn put(&self, r: &Record) -> Result<(), Error> {
        if !valid_key(&r.key) {
            return Err(Error::BadKey(r.key.clone()));
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let p = self.path(&r.key);
        let bytes = serde_json::to_vec(r).map_err(|e| Error::Record(p.clone(), e.to_string()))?;
        eci_facts::write_atomic(&p, &bytes, 0o600).map_err(|e| Error::io(&p, e))
    }

    /// The record of `key`, None when there is none.
    pub fn get(&self, key: &str) -> Result<Option<Record>, Error> {
        if !valid_key(key) {
            return Ok(None);
        }
        let p = self.path(key);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::Record(p, e.to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&p, e)),
        }
    }

    pub fn remove(&self, key: &str) -> Result<(), Error> {
        if !valid_key(key) {
            return Ok(());
        }
        let p = self.path(key);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io(&p, e)),
            _ => Ok(()),
        }
    }

    pub fn exists(&self, key: &str) -> bool {
        valid_key(key) && self.path(key).exists()
    }

    /// Every key with a record.
    pub fn keys(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| {
                let n = e.file_name().into_string().ok()?;
                n.strip_suffix(".json")
                    .filter(|k| valid_key(k))
                    .map(str::to_string)
            })
            .collect()
    }
}

/// Random bytes from the kernel (identity values need no more than that).
fn random<const N: usize>() -> io::Result<[u8; N]> {
    use std::io::Read;
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A random (version 4) UUID in the kernel's boot_id form.
pub fn new_uuid() -> io::Result<String> {
    let mut b = random::<16>()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// A machine id as systemd writes /etc/machine-id (32 hex digits, a v4 UUID's bits).
pub fn new_machine_id() -> io::Result<String> {
    Ok(new_uuid()?.replace('-', ""))
}

/// CLOCK_BOOTTIME now, in nanoseconds.
pub fn boottime_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_root_and_are_plain_names() {
        let a = key(Path::new("/run/docker/runtime-runc/moby"), "abc");
        let b = key(Path::new("/run/eci-runc"), "abc");
        assert_ne!(a, b);
        assert!(valid_key(&a) && a.starts_with("abc-"));
        assert!(!valid_key("../x") && !valid_key("a/b") && !valid_key(".x") && !valid_key(""));
    }

    #[test]
    fn records_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let reg = Registry::new(d.path().join("c"));
        let r = Record {
            key: "k1".into(),
            cgroup: CgroupDirs {
                v2: Some("/sys/fs/cgroup/eci/k1".into()),
                ..CgroupDirs::default()
            },
            root_uid: 100000,
            root_gid: 100000,
            id_range: 65536,
            started_boottime_ns: 5,
            boot_id: new_uuid().unwrap(),
            machine_id: new_machine_id().unwrap(),
            product_uuid: new_uuid().unwrap(),
            state_dir: "/run/eci-runc/k1".into(),
        };
        reg.put(&r).unwrap();
        assert_eq!(reg.get("k1").unwrap(), Some(r));
        assert_eq!(reg.keys(), vec!["k1".to_string()]);
        reg.remove("k1").unwrap();
        assert_eq!(reg.get("k1").unwrap(), None);
        reg.remove("k1").unwrap();
    }

    #[test]
    fn identities_have_the_kernels_shape() {
        let u = new_uuid().unwrap();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, new_uuid().unwrap());
        let m = new_machine_id().unwrap();
        assert!(m.len() == 32 && m.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
