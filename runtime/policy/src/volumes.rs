//! Which named volumes a container may use, judged by the volume's driver and options
//! (SPEC B2, the API guard's side).
//!
//! dockerd's `local` driver passes a volume's options straight to mount(2) when a container
//! using it starts: `type=none,o=bind,device=/etc` bind-mounts a VM folder, `type=overlay` or
//! `type=proc` mount whatever the options name, and a relative `device` is resolved against
//! dockerd's working directory (`/` in the VM). So a volume is only as safe as its options.
//! The guard applies this rule when a volume is created, when a container that names one is
//! created and when it is started (dockerd mounts volumes at every start); eci-runc checks the
//! mounted `_data` folder itself (`volume_data`), so neither relies on the other.

use std::fmt;

/// Where an allowed volume's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// A folder dockerd makes on its data root (no options).
    Plain,
    /// A fresh tmpfs.
    Tmpfs,
    /// An NFS or CIFS export: not a VM path.
    Remote,
    /// A bind of this absolute VM path; the caller checks it like any bind source (it must lie
    /// under an allowed share).
    Bind(String),
}

/// Why a volume is refused; the message names the volume and the option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRefusal {
    pub volume: String,
    pub reason: String,
}

impl fmt::Display for VolumeRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if self.volume.is_empty() {
            "(new)"
        } else {
            &self.volume
        };
        write!(
            f,
            "volume {name:?} is not allowed under Enhanced Container Isolation: {}",
            self.reason
        )
    }
}

impl std::error::Error for VolumeRefusal {}

/// The options dockerd's local driver knows.
const LOCAL_OPTIONS: &[&str] = &["type", "o", "device", "size"];

/// Flags that give no power beyond a default mount (most take some away); allowed with every
/// type.
const RESTRICTIVE_FLAGS: &[&str] = &[
    "ro",
    "rw",
    "noexec",
    "exec",
    "nosuid",
    "nodev",
    "noatime",
    "nodiratime",
    "relatime",
];

/// tmpfs options that shape the fresh filesystem and reach nothing else.
const TMPFS_OPTIONS: &[&str] = &["size", "mode", "uid", "gid", "nr_inodes"];

/// Decide on a named volume from its driver and options (SPEC B2). `driver` is empty when the
/// request names none (dockerd then uses `local`).
pub fn check_volume<'a>(
    name: &str,
    driver: &str,
    options: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<VolumeSource, VolumeRefusal> {
    let refuse = |reason: String| VolumeRefusal {
        volume: name.to_string(),
        reason,
    };
    if !(driver.is_empty() || driver == "local") {
        return Err(refuse(format!(
            "volume driver {driver:?} runs outside the eci runtime and mounts what it likes; use the local driver"
        )));
    }
    let mut ty = None;
    let mut flags = None;
    let mut device = None;
    let mut any = false;
    for (key, value) in options {
        any = true;
        match key {
            "type" => ty = Some(value),
            "o" => flags = Some(value),
            "device" => device = Some(value),
            "size" => {}
            other => {
                return Err(refuse(format!(
                    "option {other}={value} is unknown to the local driver (it knows {})",
                    LOCAL_OPTIONS.join(", ")
                )))
            }
        }
    }
    if !any {
        return Ok(VolumeSource::Plain);
    }
    let flags: Vec<&str> = flags
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .collect();
    let ty = ty.unwrap_or("");
    let check_flags = |allowed: &[&str]| -> Result<(), VolumeRefusal> {
        for flag in &flags {
            let key = flag.split_once('=').map_or(*flag, |(k, _)| k);
            if !RESTRICTIVE_FLAGS.contains(flag) && !allowed.contains(&key) {
                return Err(refuse(format!(
                    "mount option o={flag} is not allowed with type={ty} (allowed: {})",
                    RESTRICTIVE_FLAGS
                        .iter()
                        .chain(allowed)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        Ok(())
    };
    match ty {
        "tmpfs" => {
            check_flags(TMPFS_OPTIONS)?;
            Ok(VolumeSource::Tmpfs)
        }
        "none" => {
            if !flags.iter().any(|f| *f == "bind" || *f == "rbind") {
                return Err(refuse(
                    "type=none mounts its device as is; only o=bind (or rbind) of a shared host folder is allowed".into(),
                ));
            }
            check_flags(&["bind", "rbind"])?;
            let Some(device) = device.filter(|d| !d.is_empty()) else {
                return Err(refuse(
                    "a bind volume needs device=PATH inside a shared host folder".into(),
                ));
            };
            if !device.starts_with('/') {
                return Err(refuse(format!(
                    "option device={device} is a relative path, which dockerd resolves against its own working directory in the VM; give the absolute path of a shared host folder"
                )));
            }
            Ok(VolumeSource::Bind(device.to_string()))
        }
        // Remote filesystems: an export on another machine, never a VM path (9p and virtiofs
        // are how the VM sees its host's shares, so they count only as shares, i.e. a bind).
        t if crate::REMOTE_FS_TYPES.contains(&t) => {
            let device = device.unwrap_or("");
            // nfs exports are `host:/path` (or `:/path` with addr=); cifs shares `//host/share`.
            let remote = if t == "cifs" {
                device.starts_with("//")
            } else {
                !device.starts_with('/') && device.contains(":/")
            };
            if !remote {
                return Err(refuse(format!(
                    "option device={device} is not a remote {t} export (nfs: host:/path, cifs: //host/share)"
                )));
            }
            // A remote filesystem's own options (addr, vers, credentials, timeouts) reach only
            // the remote server; bind-like flags have no meaning there and are refused.
            if let Some(f) = flags
                .iter()
                .find(|f| matches!(**f, "bind" | "rbind" | "move" | "remount"))
            {
                return Err(refuse(format!(
                    "mount option o={f} is not allowed with type={t}"
                )));
            }
            Ok(VolumeSource::Remote)
        }
        "" => Err(refuse(
            "options without type= (or with an empty one) are refused; use type=tmpfs, type=none with o=bind, nfs or cifs".into(),
        )),
        other => Err(refuse(format!(
            "option type={other} is not allowed: it would mount a VM filesystem or device into the container (allowed: tmpfs, none with o=bind, nfs, nfs4, cifs)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(driver: &str, opts: &[(&str, &str)]) -> Result<VolumeSource, VolumeRefusal> {
        check_volume("v", driver, opts.iter().copied())
    }

    fn refused(driver: &str, opts: &[(&str, &str)], words: &[&str]) {
        let e = check(driver, opts).expect_err("refused");
        let text = e.to_string();
        assert!(text.contains("volume \"v\""), "{text}");
        for w in words {
            assert!(text.contains(w), "{w:?} missing in {text}");
        }
    }

    #[test]
    fn plain_and_tmpfs_volumes_pass() {
        assert_eq!(check("", &[]), Ok(VolumeSource::Plain));
        assert_eq!(check("local", &[]), Ok(VolumeSource::Plain));
        assert_eq!(
            check(
                "local",
                &[
                    ("type", "tmpfs"),
                    ("device", "tmpfs"),
                    (
                        "o",
                        "size=64m,mode=1777,uid=1000,gid=1000,noexec,nosuid,nodev"
                    )
                ]
            ),
            Ok(VolumeSource::Tmpfs)
        );
    }

    #[test]
    fn bind_volumes_need_an_absolute_device() {
        assert_eq!(
            check(
                "",
                &[
                    ("type", "none"),
                    ("o", "bind,ro"),
                    ("device", "/mnt/host/x")
                ]
            ),
            Ok(VolumeSource::Bind("/mnt/host/x".into()))
        );
        assert_eq!(
            check(
                "",
                &[("type", "none"), ("o", "rbind"), ("device", "/mnt/host")]
            ),
            Ok(VolumeSource::Bind("/mnt/host".into()))
        );
        // The attack of issue 9: dockerd resolves `etc` against `/` in the VM.
        refused(
            "",
            &[("type", "none"), ("o", "bind"), ("device", "etc")],
            &["device=etc", "relative"],
        );
        refused("", &[("type", "none"), ("o", "bind")], &["device=PATH"]);
        refused(
            "",
            &[("type", "none"), ("device", "/mnt/host/x")],
            &["o=bind"],
        );
        refused(
            "",
            &[
                ("type", "none"),
                ("o", "bind,shared"),
                ("device", "/mnt/host"),
            ],
            &["o=shared"],
        );
    }

    #[test]
    fn remote_filesystems_pass_with_remote_devices_only() {
        assert_eq!(
            check(
                "",
                &[
                    ("type", "nfs"),
                    ("o", "addr=10.0.0.1,rw,vers=4"),
                    ("device", ":/export")
                ]
            ),
            Ok(VolumeSource::Remote)
        );
        assert_eq!(
            check(
                "",
                &[("type", "cifs"), ("o", "username=u"), ("device", "//srv/s")]
            ),
            Ok(VolumeSource::Remote)
        );
        refused(
            "",
            &[("type", "nfs"), ("device", "/etc")],
            &["device=/etc", "not a remote"],
        );
        refused(
            "",
            &[("type", "nfs4"), ("o", "bind"), ("device", "h:/x")],
            &["o=bind"],
        );
    }

    #[test]
    fn every_other_type_driver_and_option_is_refused() {
        for ty in [
            "overlay",
            "proc",
            "sysfs",
            "cgroup",
            "cgroup2",
            "bpf",
            "debugfs",
            "tracefs",
            "securityfs",
            "devpts",
            "mqueue",
            "ext4",
            "xfs",
            "btrfs",
            "9p",
            "virtiofs",
        ] {
            refused(
                "",
                &[("type", ty), ("device", "x"), ("o", "lowerdir=/etc")],
                &[&format!("type={ty}")],
            );
        }
        refused("", &[("device", "/etc")], &["without type="]);
        refused("", &[("type", "tmpfs"), ("o", "huge=always")], &["o=huge"]);
        refused(
            "",
            &[("type", "tmpfs"), ("foo", "1")],
            &["foo=1", "unknown"],
        );
        refused("flocker", &[], &["driver \"flocker\""]);
        refused(
            "vieux/sshfs",
            &[("sshcmd", "x")],
            &["driver \"vieux/sshfs\""],
        );
    }
}
