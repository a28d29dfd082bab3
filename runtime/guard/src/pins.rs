//! Image pins on disk, so a restart of the guard does not trust a name that was moved while
//! it was down (SPEC B4). Written atomically: temp file, fsync, rename, fsync of the folder.

use std::fs::{self};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::images::{PinUpdate, Pins};

pub const PINS_FILE: &str = "image-pins.json";

#[derive(Debug)]
pub struct PinStore {
    path: Option<PathBuf>,
    pins: Mutex<Pins>,
}

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("image pins {path}: {source}\n  fix: check that the state folder exists and is writable by root")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("image pins {path} are not valid JSON ({source})\n  fix: remove the file; the guard pins the allowed images it finds again")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl PinStore {
    /// Pins kept in memory only (tests, `--state-dir` unset).
    pub fn in_memory() -> PinStore {
        PinStore {
            path: None,
            pins: Mutex::new(Pins::default()),
        }
    }

    pub fn open(dir: &Path) -> Result<PinStore, PinError> {
        let io = |source| PinError::Io {
            path: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join(PINS_FILE);
        let pins = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| PinError::Corrupt {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Pins::default(),
            Err(source) => return Err(PinError::Io { path, source }),
        };
        Ok(PinStore {
            path: Some(path),
            pins: Mutex::new(pins),
        })
    }

    pub fn snapshot(&self) -> Pins {
        self.pins.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Record updates; returns whether anything changed.
    pub fn apply(&self, updates: &[PinUpdate]) -> Result<bool, PinError> {
        if updates.is_empty() {
            return Ok(false);
        }
        let mut pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        if !pins.apply(updates) {
            return Ok(false);
        }
        if let Some(path) = &self.path {
            write_atomic(
                path,
                &serde_json::to_vec_pretty(&*pins).expect("pins serialise"),
            )
            .map_err(|source| PinError::Io {
                path: path.clone(),
                source,
            })?;
        }
        Ok(true)
    }
}

/// Replaces `path` crash-safely, mode 0600 (eci-facts says how).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    eci_facts::write_atomic(path, bytes, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::{Pin, PinSource};

    #[test]
    fn pins_survive_a_reopen_and_corruption_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = PinStore::open(dir.path()).unwrap();
        let up = PinUpdate {
            reference: "docker.io/library/docker:cli".into(),
            pin: Pin {
                id: "sha256:a".into(),
                layers: vec!["l".into()],
                source: PinSource::FirstSeen,
            },
        };
        assert!(store.apply(std::slice::from_ref(&up)).unwrap());
        assert!(!store.apply(std::slice::from_ref(&up)).unwrap());
        let again = PinStore::open(dir.path()).unwrap();
        assert_eq!(
            again.snapshot().by_ref["docker.io/library/docker:cli"].id,
            "sha256:a"
        );
        fs::write(dir.path().join(PINS_FILE), "{").unwrap();
        let e = PinStore::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("remove the file"), "{e}");
    }
}
