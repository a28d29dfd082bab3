//! Last good settings, kept on disk (SPEC S1: a malformed file leaves the VM on its last good
//! settings).
//!
//! Layout of the store directory:
//! ```text
//! current -> gen-7            symlink, swapped atomically by rename(2)
//! gen-7/admin-settings.json   the admin's file, byte for byte
//! gen-7/effective.json        the merged result it produced
//! gen-6/                      the previous generation, kept for readers still on it
//! ```
//! Both files of a generation are written and fsynced in a hidden temporary directory that is
//! renamed into place, and only then does `current` move. A crash at any point leaves `current`
//! on a complete generation, so no reader ever sees a partial file or a mismatched pair.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::admin::AdminSettings;
use crate::error::{SettingsError, Warning};
use crate::merge::{effective, Effective};
use crate::render::render_vm_files;
use crate::user::UserSettings;

pub const ADMIN_SETTINGS_FILE: &str = "admin-settings.json";
pub const EFFECTIVE_FILE: &str = "effective.json";
const CURRENT: &str = "current";
const GEN_PREFIX: &str = "gen-";
const TMP_PREFIX: &str = ".tmp-";

/// A settings directory with a last good generation. One writer at a time (the VM's settings
/// agent); any number of readers.
#[derive(Debug, Clone)]
pub struct SettingsStore {
    dir: PathBuf,
}

/// The last good settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub generation: u64,
    pub admin_text: String,
    pub admin: AdminSettings,
    pub effective: Effective,
}

/// The outcome of a successful [`SettingsStore::apply`].
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub generation: u64,
    pub effective: Effective,
    pub warnings: Vec<Warning>,
}

fn store_err<'p>(
    path: &'p Path,
    action: &'static str,
) -> impl FnOnce(std::io::Error) -> SettingsError + 'p {
    move |source| SettingsError::Store {
        path: path.to_path_buf(),
        action,
        source,
    }
}

impl SettingsStore {
    /// Open (creating it root-only if missing) a store directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<SettingsStore, SettingsError> {
        let dir = dir.into();
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(store_err(&dir, "create directory"))?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .map_err(store_err(&dir, "set permissions"))?;
        }
        Ok(SettingsStore { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path through `current` to the last good admin file (for readers outside this crate).
    pub fn admin_settings_path(&self) -> PathBuf {
        self.dir.join(CURRENT).join(ADMIN_SETTINGS_FILE)
    }

    /// Path through `current` to the last good effective settings.
    pub fn effective_path(&self) -> PathBuf {
        self.dir.join(CURRENT).join(EFFECTIVE_FILE)
    }

    /// Validate a new admin-settings.json (with no user settings) and, only if valid, make it
    /// the current generation. On error nothing on disk changes.
    pub fn apply(&self, text: &str) -> Result<Applied, SettingsError> {
        self.apply_with(text, &UserSettings::default(), None)
    }

    /// Like [`apply`](Self::apply), merging the user's settings and daemon options.
    pub fn apply_with(
        &self,
        text: &str,
        user: &UserSettings,
        user_daemon_options: Option<Value>,
    ) -> Result<Applied, SettingsError> {
        let (admin, warnings) = AdminSettings::parse(text, ADMIN_SETTINGS_FILE)?;
        let eff = effective(&admin, user, user_daemon_options);
        // Settings whose VM files cannot be rendered are not good settings.
        render_vm_files(&eff)?;
        let effective_json =
            serde_json::to_string_pretty(&eff).expect("effective settings always serialise");

        let generation = self.current_generation()?.unwrap_or(0) + 1;
        let name = format!("{GEN_PREFIX}{generation}");
        let tmp = self.dir.join(format!("{TMP_PREFIX}{name}"));
        let fin = self.dir.join(&name);
        // Leftovers of a crashed apply with the same number are incomplete by definition.
        remove_any(&tmp)?;
        remove_any(&fin)?;
        fs::create_dir(&tmp).map_err(store_err(&tmp, "create directory"))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700))
            .map_err(store_err(&tmp, "set permissions"))?;
        write_synced(&tmp.join(ADMIN_SETTINGS_FILE), text.as_bytes())?;
        write_synced(&tmp.join(EFFECTIVE_FILE), effective_json.as_bytes())?;
        sync_dir(&tmp)?;
        fs::rename(&tmp, &fin).map_err(store_err(&fin, "rename generation into place"))?;
        sync_dir(&self.dir)?;

        let link_tmp = self.dir.join(format!("{TMP_PREFIX}{CURRENT}"));
        remove_any(&link_tmp)?;
        symlink(&name, &link_tmp).map_err(store_err(&link_tmp, "create symlink"))?;
        let current = self.dir.join(CURRENT);
        fs::rename(&link_tmp, &current)
            .map_err(store_err(&current, "switch current generation"))?;
        sync_dir(&self.dir)?;

        self.prune(generation);
        Ok(Applied {
            generation,
            effective: eff,
            warnings,
        })
    }

    /// The last good settings, or `None` if nothing was ever applied.
    pub fn current(&self) -> Result<Option<Stored>, SettingsError> {
        // A reader can lose a race with two quick applies that prune the generation it just
        // resolved; resolving again finds the newer one.
        let mut last_err = None;
        for _ in 0..5 {
            let Some(generation) = self.current_generation()? else {
                return Ok(None);
            };
            let gen_dir = self.dir.join(format!("{GEN_PREFIX}{generation}"));
            let admin_path = gen_dir.join(ADMIN_SETTINGS_FILE);
            let admin_text = match fs::read_to_string(&admin_path) {
                Ok(t) => t,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    last_err = Some(store_err(&admin_path, "read")(e));
                    continue;
                }
                Err(e) => return Err(store_err(&admin_path, "read")(e)),
            };
            let eff_path = gen_dir.join(EFFECTIVE_FILE);
            let eff_text = match fs::read_to_string(&eff_path) {
                Ok(t) => t,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    last_err = Some(store_err(&eff_path, "read")(e));
                    continue;
                }
                Err(e) => return Err(store_err(&eff_path, "read")(e)),
            };
            let (admin, _) = AdminSettings::parse(&admin_text, &admin_path.display().to_string())
                .map_err(|e| SettingsError::StoreCorrupt {
                path: admin_path.clone(),
                message: format!("the stored settings no longer validate: {e}"),
                fix: "apply a valid admin-settings.json again".into(),
            })?;
            let effective: Effective =
                serde_json::from_str(&eff_text).map_err(|e| SettingsError::StoreCorrupt {
                    path: eff_path.clone(),
                    message: format!("unreadable effective settings: {e}"),
                    fix: "apply the admin-settings.json again".into(),
                })?;
            return Ok(Some(Stored {
                generation,
                admin_text,
                admin,
                effective,
            }));
        }
        Err(last_err.expect("the loop only continues after an error"))
    }

    fn current_generation(&self) -> Result<Option<u64>, SettingsError> {
        let link = self.dir.join(CURRENT);
        let target = match fs::read_link(&link) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(store_err(&link, "read symlink")(e)),
        };
        // Only our own names are followed, so a planted link cannot point the store elsewhere.
        let generation = target
            .to_str()
            .and_then(|t| t.strip_prefix(GEN_PREFIX))
            .and_then(|n| n.parse::<u64>().ok());
        match generation {
            Some(g) => Ok(Some(g)),
            None => Err(SettingsError::StoreCorrupt {
                path: link,
                message: format!("`current` points at {target:?}, not at a generation directory"),
                fix: "remove the `current` link and apply the admin settings again".into(),
            }),
        }
    }

    /// Drop generations older than the previous one and temporary leftovers. Failures are
    /// ignored: stale directories cost disk space, not correctness.
    fn prune(&self, current: u64) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let stale = match name
                .strip_prefix(GEN_PREFIX)
                .and_then(|n| n.parse::<u64>().ok())
            {
                Some(g) => g + 1 < current,
                None => name.starts_with(TMP_PREFIX),
            };
            if stale {
                let _ = remove_any(&entry.path());
            }
        }
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), SettingsError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(store_err(path, "create"))?;
    f.write_all(bytes).map_err(store_err(path, "write"))?;
    f.sync_all().map_err(store_err(path, "fsync"))
}

fn sync_dir(dir: &Path) -> Result<(), SettingsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(store_err(dir, "fsync directory"))
}

fn remove_any(path: &Path) -> Result<(), SettingsError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(store_err(path, "inspect")(e)),
    };
    let r = if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    r.map_err(store_err(path, "remove"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    const GOOD1: &str = r#"{"configurationFileVersion": 2, "exposeDockerAPIOnTCP2375": {"locked": true, "value": false}}"#;
    const GOOD2: &str =
        r#"{"linuxVM": {"dockerDaemonOptions": {"locked": true, "value": "{\"debug\": true}"}}}"#;

    fn store() -> (tempfile::TempDir, SettingsStore) {
        let t = tempfile::tempdir().unwrap();
        let s = SettingsStore::open(t.path().join("settings")).unwrap();
        (t, s)
    }

    #[test]
    fn empty_store_has_no_current_settings() {
        let (_t, s) = store();
        assert_eq!(s.current().unwrap(), None);
        assert_eq!(
            fs::metadata(s.dir()).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn apply_writes_both_files_and_current_reads_them_back() {
        let (_t, s) = store();
        let applied = s.apply(GOOD1).unwrap();
        assert_eq!(applied.generation, 1);
        assert_eq!(fs::read_to_string(s.admin_settings_path()).unwrap(), GOOD1);
        let on_disk: Effective =
            serde_json::from_str(&fs::read_to_string(s.effective_path()).unwrap()).unwrap();
        assert_eq!(on_disk, applied.effective);
        let cur = s.current().unwrap().unwrap();
        assert_eq!(cur.generation, 1);
        assert_eq!(cur.admin_text, GOOD1);
        assert_eq!(cur.effective, applied.effective);
        let mode = fs::metadata(s.admin_settings_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn malformed_or_invalid_file_keeps_the_last_good_settings_untouched() {
        let (_t, s) = store();
        s.apply(GOOD1).unwrap();
        let before_admin = fs::read(s.admin_settings_path()).unwrap();
        let before_eff = fs::read(s.effective_path()).unwrap();

        let err = s
            .apply("{\"exposeDockerAPIOnTCP2375\": {\"locked\": true,,}}")
            .unwrap_err();
        assert!(matches!(err, SettingsError::Syntax { .. }), "{err}");
        assert!(
            err.to_string().starts_with("admin-settings.json:1:"),
            "{err}"
        );
        let err = s
            .apply("{\"enhancedContainerIsolation\": {\"dockerSocketMount\": {\"commandList\": {\"type\": \"block\"}}}}")
            .unwrap_err();
        assert!(matches!(err, SettingsError::Invalid { .. }), "{err}");

        assert_eq!(fs::read(s.admin_settings_path()).unwrap(), before_admin);
        assert_eq!(fs::read(s.effective_path()).unwrap(), before_eff);
        let cur = s.current().unwrap().unwrap();
        assert_eq!((cur.generation, cur.admin_text.as_str()), (1, GOOD1));
        assert_eq!(names(&s), vec!["current", "gen-1"]);
    }

    fn names(s: &SettingsStore) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(s.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_crash_at_any_step_leaves_current_on_a_complete_generation() {
        let (_t, s) = store();
        s.apply(GOOD1).unwrap();
        let d = s.dir();

        // Crash while writing: a half-written temporary generation.
        fs::create_dir(d.join(".tmp-gen-2")).unwrap();
        fs::write(d.join(".tmp-gen-2/admin-settings.json"), &GOOD2[..20]).unwrap();
        assert_eq!(s.current().unwrap().unwrap().admin_text, GOOD1);

        // Crash after the generation was renamed but before `current` moved.
        fs::rename(d.join(".tmp-gen-2"), d.join("gen-2")).unwrap();
        assert_eq!(s.current().unwrap().unwrap().admin_text, GOOD1);

        // Crash after the new link was made but before it replaced `current`.
        symlink("gen-2", d.join(".tmp-current")).unwrap();
        assert_eq!(s.current().unwrap().unwrap().admin_text, GOOD1);

        // The next apply replaces the leftovers and cleans up.
        let applied = s.apply(GOOD2).unwrap();
        assert_eq!(applied.generation, 2);
        let cur = s.current().unwrap().unwrap();
        assert_eq!(cur.admin_text, GOOD2);
        assert_eq!(cur.effective.daemon_json["debug"], true);
        assert_eq!(names(&s), vec!["current", "gen-1", "gen-2"]);

        s.apply(GOOD1).unwrap();
        assert_eq!(names(&s), vec!["current", "gen-2", "gen-3"]);
    }

    #[test]
    fn readers_never_see_a_partial_or_mismatched_generation() {
        let (_t, s) = store();
        s.apply(GOOD1).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let s = s.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut reads = 0;
                while !stop.load(Ordering::Relaxed) || reads == 0 {
                    let cur = s.current().expect("read failed").expect("no settings");
                    let (admin, _) = AdminSettings::parse(&cur.admin_text, "x").unwrap();
                    assert_eq!(
                        cur.effective,
                        effective(&admin, &UserSettings::default(), None)
                    );
                    reads += 1;
                }
                reads
            })
        };
        for i in 0..60 {
            s.apply(if i % 2 == 0 { GOOD2 } else { GOOD1 }).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    }

    #[test]
    fn a_foreign_current_link_is_reported_not_followed() {
        let (_t, s) = store();
        symlink("/etc", s.dir().join("current")).unwrap();
        let err = s.current().unwrap_err();
        assert!(matches!(err, SettingsError::StoreCorrupt { .. }), "{err}");
    }

    #[test]
    fn apply_with_merges_user_inputs() {
        let (_t, s) = store();
        let applied = s
            .apply_with(
                GOOD2,
                &UserSettings::default(),
                Some(serde_json::json!({"debug": false})),
            )
            .unwrap();
        assert_eq!(applied.effective.refused.len(), 1);
        assert_eq!(
            s.current().unwrap().unwrap().effective.refused[0].key,
            "linuxVM.dockerDaemonOptions.debug"
        );
    }
}
