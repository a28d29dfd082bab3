//! Host folders shared with the VM (SPEC H3): `eci-build boot --share` gives QEMU a virtiofs
//! device per folder and announces each in an SMBIOS OEM string (`eci.share=TAG:VMPATH`,
//! [`eci_facts::host_share`]). At boot, before the root becomes read-only, eci-init mounts a
//! tmpfs at the share root (`/mnt/host`, B1's default bind prefix), each tag at its path below
//! it, and makes the tmpfs read-only again; the shares themselves stay writable.
//!
//! U4: eci-runc idmaps every bind from a share into the container's range, which the kernel
//! allows on virtiofs (6.12) only when the file server grants it. Each share is checked here
//! the way eci-runc will use it, an idmapped clone of the mount; a share that cannot be
//! idmapped is unmounted again with a console line saying why, so no container ever binds it
//! with owners shown wrong. Nothing in this module runs without an announcement: on Hyper-V,
//! under WSL and in a plain QEMU boot there are none.

use crate::log::say;
use crate::sys;
use eci_facts::host_share::{self, Announced};
use eci_facts::vm_paths::HOST_SHARE_ROOT;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The kernel's view of the firmware's SMBIOS structures, one folder per structure
/// (`11-0` is the first type-11 one), its bytes in `raw`.
pub const DMI_ENTRIES: &str = "/sys/firmware/dmi/entries";
/// SMBIOS type 11: OEM strings.
const OEM_STRINGS_TYPE: u8 = 11;
/// How long a share may take to answer its first request (TCG boots are slow; a file server
/// that never answers must not hold PID 1).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);
/// The range the idmap check maps, shaped like a container's (SPEC U1).
const CHECK_MAP: &str = "0 100000 65536";

/// The strings of one raw SMBIOS structure when it is an OEM-strings one: the formatted part
/// (its length in byte 1) is followed by NUL-terminated strings and an empty one.
pub fn oem_strings(raw: &[u8]) -> Vec<String> {
    if raw.len() < 5 || raw[0] != OEM_STRINGS_TYPE {
        return Vec::new();
    }
    let start = usize::from(raw[1]).min(raw.len());
    raw[start..]
        .split(|b| *b == 0)
        .take_while(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// The shares announced in `strings`, and a console line for each announcement refused:
/// malformed, a tag or path given twice, or a path inside another share.
pub fn announced(strings: &[String]) -> (Vec<Announced>, Vec<String>) {
    let mut shares: Vec<Announced> = Vec::new();
    let mut problems = Vec::new();
    for s in strings {
        match host_share::decode(s) {
            None => {}
            Some(Err(e)) => problems.push(format!("share not mounted: {e}")),
            Some(Ok(a)) => {
                let clash = shares.iter().find(|o| {
                    o.tag == a.tag
                        || eci_facts::path::is_within(&a.vm_path, &o.vm_path)
                        || eci_facts::path::is_within(&o.vm_path, &a.vm_path)
                });
                match clash {
                    Some(o) => problems.push(format!(
                        "share {} not mounted at {}: it clashes with share {} at {}",
                        a.tag, a.vm_path, o.tag, o.vm_path
                    )),
                    None => shares.push(a),
                }
            }
        }
    }
    (shares, problems)
}

/// The OEM strings of every type-11 structure under `entries`.
pub fn read_oem_strings(entries: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(entries) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("11-"))
        .collect();
    names.sort();
    names
        .iter()
        .filter_map(|n| std::fs::read(Path::new(entries).join(n).join("raw")).ok())
        .flat_map(|raw| oem_strings(&raw))
        .collect()
}

/// What became of one share, for the console and the self-test facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Mounted,
    Refused(String),
}

/// Mounts the announced shares (see the module docs). Returns each share with its outcome.
pub fn mount_announced() -> Vec<(Announced, Outcome)> {
    let (shares, problems) = announced(&read_oem_strings(Path::new(DMI_ENTRIES)));
    for p in problems {
        say(&p);
    }
    if shares.is_empty() {
        return Vec::new();
    }
    let nothing_special = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let root = Path::new(HOST_SHARE_ROOT);
    let made_root = std::fs::create_dir_all(root)
        .map_err(|e| e.to_string())
        .and_then(|_| {
            mount(
                Some("tmpfs"),
                root,
                Some("tmpfs"),
                nothing_special,
                Some("mode=0755"),
            )
            .map_err(|e| e.to_string())
        });
    if let Err(e) = made_root {
        let why = format!("cannot mount a tmpfs at {HOST_SHARE_ROOT}: {e}");
        say(&format!("shares not mounted: {why}"));
        return shares
            .into_iter()
            .map(|s| (s, Outcome::Refused(why.clone())))
            .collect();
    }
    let results: Vec<(Announced, Outcome)> = shares
        .into_iter()
        .map(|s| {
            let outcome = match mount_one(&s) {
                Ok(()) => {
                    say(&format!(
                        "share {} mounted at {} (virtiofs, idmapped binds allowed)",
                        s.tag, s.vm_path
                    ));
                    Outcome::Mounted
                }
                Err(e) => {
                    say(&format!(
                        "share {} not mounted at {}: {e}",
                        s.tag, s.vm_path
                    ));
                    Outcome::Refused(e)
                }
            };
            (s, outcome)
        })
        .collect();
    // The folders leading to the shares are eci-init's; nothing else may add to them (V2).
    if let Err(e) = mount(
        None::<&str>,
        root,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | nothing_special,
        None::<&str>,
    ) {
        say(&format!("cannot make {HOST_SHARE_ROOT} read-only: {e}"));
    }
    results
}

fn mount_one(s: &Announced) -> Result<(), String> {
    let at = Path::new(&s.vm_path);
    std::fs::create_dir_all(at).map_err(|e| format!("cannot create the mount point: {e}"))?;
    // Shared folders hold files, not devices or setuid programs for the VM.
    mount(
        Some(s.tag.as_str()),
        at,
        Some("virtiofs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|e| {
        format!(
            "mount -t virtiofs {}: {e} (is the virtiofs device there?)",
            s.tag
        )
    })?;
    // The first request waits for the file server's INIT answer, which decides whether an
    // idmapped mount is allowed; a server that never answers would block this thread for good,
    // so the check runs on its own and PID 1 gives up on it after a while.
    let (tx, rx) = mpsc::channel();
    let path = at.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(check_share(&path));
    });
    let verdict = rx.recv_timeout(ANSWER_TIMEOUT).unwrap_or_else(|_| {
        Err(format!(
            "the file server did not answer within {} s",
            ANSWER_TIMEOUT.as_secs()
        ))
    });
    if let Err(e) = verdict {
        // Detached: a mount whose server hangs cannot be unmounted synchronously.
        let _ = umount2(at, MntFlags::MNT_DETACH);
        let _ = std::fs::set_permissions(at, std::fs::Permissions::from_mode(0o000));
        return Err(e);
    }
    Ok(())
}

/// Reads the share, then makes an idmapped clone of it with a user namespace shaped like a
/// container's: what eci-runc does for every bind from it (SPEC U4).
fn check_share(at: &Path) -> Result<(), String> {
    std::fs::read_dir(at).map_err(|e| format!("cannot read the share: {e}"))?;
    let userns = ScratchUserns::new()?;
    let tree = sys::open_tree_clone(at).map_err(|e| format!("open_tree: {e}"))?;
    sys::idmap_mount(&tree, &userns.fd).map_err(|e| {
        format!(
            "its file server does not allow idmapped mounts ({e}), so containers would see its files with wrong owners (SPEC U4); serve it with the virtiofsd `eci-build boot --share` accepts"
        )
    })
}

/// A user namespace of a short-lived process that only sleeps in it, mapped like a container's.
struct ScratchUserns {
    child: std::process::Child,
    fd: std::fs::File,
}

impl ScratchUserns {
    fn new() -> Result<ScratchUserns, String> {
        // busybox's unshare makes the namespace without any code of ours in a forked child.
        let child = Command::new("/bin/busybox")
            .args(["unshare", "-U", "/bin/busybox", "sleep", "60"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start a process in a new user namespace: {e}"))?;
        let mut me = ScratchUserns {
            fd: std::fs::File::open("/dev/null").map_err(|e| e.to_string())?,
            child,
        };
        let pid = me.child.id();
        let own = std::fs::read_link("/proc/self/ns/user").map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match std::fs::read_link(format!("/proc/{pid}/ns/user")) {
                Ok(ns) if ns != own => break,
                _ if Instant::now() >= deadline => {
                    return Err("the process did not enter a new user namespace".into())
                }
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        for map in ["uid_map", "gid_map"] {
            std::fs::write(format!("/proc/{pid}/{map}"), CHECK_MAP)
                .map_err(|e| format!("cannot write {map}: {e}"))?;
        }
        me.fd = std::fs::File::open(format!("/proc/{pid}/ns/user"))
            .map_err(|e| format!("cannot open the user namespace: {e}"))?;
        Ok(me)
    }
}

impl Drop for ScratchUserns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn structure(kind: u8, strings: &[&str]) -> Vec<u8> {
        let mut raw = vec![kind, 5, 0x00, 0x0b, strings.len() as u8];
        for s in strings {
            raw.extend_from_slice(s.as_bytes());
            raw.push(0);
        }
        if strings.is_empty() {
            raw.push(0);
        }
        raw.push(0);
        raw
    }

    #[test]
    fn oem_strings_come_from_type_11_structures_only() {
        let raw = structure(11, &["eci.share=eci-share0:/mnt/host/a b", "other"]);
        assert_eq!(
            oem_strings(&raw),
            ["eci.share=eci-share0:/mnt/host/a b", "other"]
        );
        assert!(oem_strings(&structure(1, &["eci.share=x:/mnt/host/y"])).is_empty());
        assert!(oem_strings(&structure(11, &[])).is_empty());
        assert!(oem_strings(&[11, 5]).is_empty());
    }

    #[test]
    fn oem_strings_are_read_from_every_type_11_entry() {
        let dir = tempfile::tempdir().unwrap();
        for (name, raw) in [
            ("11-0", structure(11, &["eci.share=eci-share0:/mnt/host/a"])),
            ("11-1", structure(11, &["eci.share=eci-share1:/mnt/host/b"])),
            ("1-0", structure(1, &["eci.share=eci-share2:/mnt/host/c"])),
        ] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("raw"), raw).unwrap();
        }
        let (shares, problems) = announced(&read_oem_strings(dir.path()));
        assert!(problems.is_empty(), "{problems:?}");
        let paths: Vec<&str> = shares.iter().map(|s| s.vm_path.as_str()).collect();
        assert_eq!(paths, ["/mnt/host/a", "/mnt/host/b"]);
        assert!(read_oem_strings(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn the_idmap_check_passes_where_idmapped_mounts_work() {
        let root = nix::unistd::geteuid().is_root();
        if !eci_test_support::prerequisite(root, "root, to make an idmapped mount")
            || !eci_test_support::prerequisite(
                Path::new("/bin/busybox").is_file(),
                "/bin/busybox for its unshare (apt-get install busybox-static)",
            )
        {
            return;
        }
        // A tempdir on this machine's /tmp (tmpfs or ext4, both idmappable since 5.19/6.3).
        let dir = tempfile::tempdir().unwrap();
        check_share(dir.path()).unwrap();
        // procfs allows no idmapped mounts: the check must say so, naming U4.
        let e = check_share(Path::new("/proc/sys")).unwrap_err();
        assert!(e.contains("idmapped mounts") && e.contains("U4"), "{e}");
    }

    #[test]
    fn bad_twice_given_and_nested_announcements_are_refused_with_a_reason() {
        let strings: Vec<String> = [
            "eci.share=eci-share0:/mnt/host/src",
            "eci.share=eci-share0:/mnt/host/other",
            "eci.share=eci-share1:/mnt/host/src/inner",
            "eci.share=eci-share2:/etc",
            "eci.share=eci-share3:/mnt/host/data",
            "unrelated=1",
        ]
        .map(String::from)
        .to_vec();
        let (shares, problems) = announced(&strings);
        let tags: Vec<&str> = shares.iter().map(|s| s.tag.as_str()).collect();
        assert_eq!(tags, ["eci-share0", "eci-share3"]);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[2].contains("not below /mnt/host"), "{problems:?}");
        assert!(problems[1].contains("clashes"), "{problems:?}");
    }
}
