//! Whether a named volume's `_data` folder holds what the engine made (SPEC B2, the runtime's
//! side).
//!
//! [`check_bind_source`](crate::check_bind_source) treats `<data-root>/volumes/<name>/_data` as
//! engine-internal by its path. But dockerd's `local` driver mounts whatever the volume's options
//! say onto that folder before it starts the container: `type=none,o=bind,device=/etc` makes
//! `_data` the VM's `/etc`, `type=overlay` or `type=ext4` mount VM folders or disks there. The
//! path alone proves nothing, so the runtime looks at the mount the opened `_data` folder is on
//! (its mount id from `statx`) and at that mount's line in `/proc/self/mountinfo`, and accepts
//! only what cannot be a VM path:
//!
//! 1. a plain folder on the data root's own mount (dockerd's default volume);
//! 2. a fresh tmpfs, or a remote filesystem (nfs, nfs4, cifs);
//! 3. a bind of a folder inside an allowed share (the policy's `allowed_bind_prefixes`).
//!
//! The API guard judges volumes by their options (`volumes.rs`); this rule does not rely on it.
//! Facts about the system (mount ids, mountinfo text) come in as arguments, so every case is
//! unit-tested without root.

use crate::PolicyError;

/// Remote filesystems: their source is an export on another machine, never a VM path. 9p and
/// virtiofs are how the VM sees its host's shares, so they pass only as a share (case 3), and
/// only inside an allowed prefix.
pub const REMOTE_FS_TYPES: &[&str] = &["nfs", "nfs4", "cifs"];

/// One line of `/proc/self/mountinfo` (proc(5)), with the escapes decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Field 1: the mount's id, what `statx(STATX_MNT_ID)` reports.
    pub id: u64,
    pub parent: u64,
    /// Field 3: the filesystem's device; two mounts with the same one show the same files.
    pub major: u32,
    pub minor: u32,
    /// Field 4: which folder of the filesystem is the root of this mount (`/` unless it is a
    /// bind of a subfolder).
    pub root: String,
    /// Field 5, relative to the reading process's root.
    pub mount_point: String,
    pub fstype: String,
    pub source: String,
}

/// What an accepted `_data` folder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeDataKind {
    /// A plain folder on the data root's mount: a default `local` volume.
    DataRoot,
    /// A tmpfs mounted for this volume alone (`type=tmpfs`).
    Tmpfs,
    /// An nfs, nfs4 or cifs mount (`type=nfs` ...).
    Remote,
    /// A bind of a folder inside an allowed share.
    Share,
}

/// An allowed share prefix as the runtime found it: its path with symlinks resolved, and the
/// mount id of the opened folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareFolder {
    pub path: String,
    pub mount_id: u64,
}

/// Decode mountinfo's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134`
/// backslash); the kernel writes them so that fields stay space-separated.
pub fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|d| {
            d.iter().all(|c| (b'0'..=b'7').contains(c)) && d[0] <= b'3' // at most \377
        });
        match octal {
            Some(d) if b[i] == b'\\' => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse `/proc/self/mountinfo`. A malformed line is skipped: a mount the runtime cannot read
/// is a mount it does not find, and [`classify`] refuses a volume on a mount it does not find.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    // The optional fields (shared:N, master:N, ...) vary in number; " - " ends them.
    let (head, tail) = line.split_once(" - ")?;
    let f: Vec<&str> = head.split(' ').collect();
    let g: Vec<&str> = tail.split(' ').collect();
    let (major, minor) = f.get(2)?.split_once(':')?;
    Some(MountEntry {
        id: f.first()?.parse().ok()?,
        parent: f.get(1)?.parse().ok()?,
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        root: unescape_mountinfo(f.get(3)?),
        mount_point: unescape_mountinfo(f.get(4)?),
        fstype: unescape_mountinfo(g.first()?),
        source: unescape_mountinfo(g.get(1).unwrap_or(&"")),
    })
}

/// If `path` (normalised, symlinks resolved) is a named volume's data or below it, the data
/// root it belongs to and the volume's `_data` folder: `<root>/volumes/<name>/_data`.
pub fn named_volume_data(path: &str, data_roots: &[String]) -> Option<(String, String)> {
    data_roots.iter().find_map(|root| {
        let root = crate::normalize_path(root);
        let rest = path.strip_prefix(&format!("{}/volumes/", root.trim_end_matches('/')))?;
        let mut it = rest.split('/');
        match (it.next(), it.next()) {
            (Some(name), Some("_data")) if !name.is_empty() && name != "." && name != ".." => {
                let data = format!("{}/volumes/{name}/_data", root.trim_end_matches('/'));
                Some((root, data))
            }
            _ => None,
        }
    })
}

/// `child` is `parent` or inside it, whole components only. Plain text on Linux paths (unlike
/// `eci_facts::path::is_within`, which also folds Windows spellings): mountinfo roots are
/// filesystem paths, where `\` and case are ordinary characters.
fn lies_within(child: &str, parent: &str) -> bool {
    let parent = parent.trim_end_matches('/');
    child == parent
        || (parent.is_empty() && child.starts_with('/'))
        || child
            .strip_prefix(parent)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The folder of `mount`'s filesystem that `path` (a path at or below the mount point) shows.
fn root_of(mount: &MountEntry, path: &str) -> Option<String> {
    let mp = mount.mount_point.trim_end_matches('/');
    let rel = if mp.is_empty() {
        path.strip_prefix('/')?
    } else if path == mp {
        ""
    } else {
        path.strip_prefix(mp)?.strip_prefix('/')?
    };
    let rel = rel.trim_end_matches('/');
    let base = mount.root.trim_end_matches('/');
    Some(if rel.is_empty() {
        if base.is_empty() {
            "/".to_string()
        } else {
            base.to_string()
        }
    } else {
        format!("{base}/{rel}")
    })
}

/// A tmpfs made for this volume: the whole filesystem (root `/`), and mounted nowhere else but
/// at this volume's `_data` (propagation may copy that mount into peers of the data root, at
/// the same `.../volumes/<name>/_data` tail). A bind of one of the VM's own tmpfs (`/run`,
/// `/tmp`, `/var`, `/dev/shm`, a container's shm) also says `tmpfs`, but its filesystem is
/// mounted at the VM's path too, so it fails here.
fn fresh_tmpfs(m: &MountEntry, mounts: &[MountEntry], data_dir: &str) -> bool {
    let tail = data_dir
        .rsplit('/')
        .nth(1)
        .map(|name| format!("/volumes/{name}/_data"));
    m.fstype == "tmpfs"
        && m.root == "/"
        && mounts
            .iter()
            .filter(|o| o.id != m.id && (o.major, o.minor) == (m.major, m.minor))
            .all(|o| o.root == "/" && tail.as_deref().is_some_and(|t| o.mount_point.ends_with(t)))
}

/// Decide on a named volume's `_data` folder (SPEC B2). `data_mount_id` is the mount id of the
/// opened `_data` folder, `data_root_mount_id` that of the opened data root folder, `mounts` the
/// runtime's `/proc/self/mountinfo`, `shares` the allowed share prefixes that exist. Refusals
/// carry the B2 message naming `data_dir`.
pub fn classify(
    data_dir: &str,
    data_mount_id: u64,
    data_root_mount_id: u64,
    mounts: &[MountEntry],
    shares: &[ShareFolder],
) -> Result<VolumeDataKind, PolicyError> {
    let refuse = || PolicyError::RestrictedMount(data_dir.to_string());
    // Case 1: the folder dockerd made, not a mount point. Any mount on `_data` (even a bind of
    // another data-root folder) has an id of its own.
    if data_mount_id == data_root_mount_id {
        return Ok(VolumeDataKind::DataRoot);
    }
    let m = mounts
        .iter()
        .find(|m| m.id == data_mount_id)
        .ok_or_else(refuse)?;
    // Case 2.
    if fresh_tmpfs(m, mounts, data_dir) {
        return Ok(VolumeDataKind::Tmpfs);
    }
    if REMOTE_FS_TYPES.contains(&m.fstype.as_str()) {
        return Ok(VolumeDataKind::Remote);
    }
    // Case 3: the same filesystem as a share's mount, and a folder at or below the one the
    // share prefix shows. Compared as (device, folder of the filesystem), so it holds whatever
    // path the bind was made from.
    for share in shares {
        let Some(s) = mounts.iter().find(|s| s.id == share.mount_id) else {
            continue;
        };
        let Some(share_root) = root_of(s, &share.path) else {
            continue;
        };
        if (m.major, m.minor) == (s.major, s.minor) && lies_within(&m.root, &share_root) {
            return Ok(VolumeDataKind::Share);
        }
    }
    Err(refuse())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: &str = "/var/lib/docker/volumes/v/_data";

    /// A VM like eci's: root filesystem, tmpfs /run /tmp /var, the data disk on
    /// /var/lib/docker, the host share on /mnt/host (9p), and whatever the test adds.
    fn vm(extra: &str) -> Vec<MountEntry> {
        let base = "\
20 1 254:0 / / ro,relatime shared:1 - ext4 /dev/vda rw
21 20 0:22 / /run rw,nosuid shared:2 - tmpfs tmpfs rw,mode=755
22 20 0:23 / /tmp rw shared:3 - tmpfs tmpfs rw
23 20 0:24 / /var rw shared:4 - tmpfs tmpfs rw
24 23 254:16 / /var/lib/docker rw,relatime shared:5 - ext4 /dev/vdb rw
25 20 0:40 / /mnt/host rw shared:6 - 9p host rw,trans=virtio
26 20 0:21 / /proc rw,nosuid - proc proc rw
27 20 0:6 / /dev rw - devtmpfs udev rw
28 27 0:25 / /dev/shm rw - tmpfs shm rw
";
        parse_mountinfo(&format!("{base}{extra}"))
    }

    fn shares() -> Vec<ShareFolder> {
        vec![ShareFolder {
            path: "/mnt/host".into(),
            mount_id: 25,
        }]
    }

    /// `_data` is mount 100; the data root folder is on mount 24.
    fn decide(line: &str) -> Result<VolumeDataKind, PolicyError> {
        classify(DATA, 100, 24, &vm(line), &shares())
    }

    fn refused(line: &str) {
        assert_eq!(
            decide(line),
            Err(PolicyError::RestrictedMount(DATA.into())),
            "{line}"
        );
        assert_eq!(
            decide(line).unwrap_err().to_string(),
            format!("can't mount {DATA} because it's configured as a restricted host mount")
        );
    }

    #[test]
    fn a_plain_volume_folder_is_on_the_data_root_mount() {
        assert_eq!(
            classify(DATA, 24, 24, &vm(""), &shares()),
            Ok(VolumeDataKind::DataRoot)
        );
        // With no data disk the data root is a folder on the /var tmpfs; still the same mount.
        assert_eq!(
            classify(DATA, 23, 23, &vm(""), &shares()),
            Ok(VolumeDataKind::DataRoot)
        );
    }

    #[test]
    fn binds_of_vm_folders_are_refused() {
        // type=none,o=bind,device=/etc: the root filesystem, folder /etc.
        refused(
            "100 24 254:0 /etc /var/lib/docker/volumes/v/_data rw shared:1 - ext4 /dev/vda rw\n",
        );
        // device=/ and a relative device resolved against dockerd's cwd land the same way.
        refused("100 24 254:0 / /var/lib/docker/volumes/v/_data rw - ext4 /dev/vda rw\n");
        // Another folder of the data disk, even another volume's data.
        refused("100 24 254:16 /volumes/w/_data /var/lib/docker/volumes/v/_data rw - ext4 /dev/vdb rw\n");
        refused("100 24 254:16 / /var/lib/docker/volumes/v/_data rw - ext4 /dev/vdb rw\n");
    }

    #[test]
    fn overlay_proc_and_block_mounts_are_refused() {
        refused("100 24 0:50 / /var/lib/docker/volumes/v/_data rw - overlay overlay rw,lowerdir=/etc,upperdir=/tmp/u,workdir=/tmp/w\n");
        refused("100 24 0:51 / /var/lib/docker/volumes/v/_data rw - proc proc rw\n");
        refused("100 24 0:6 / /var/lib/docker/volumes/v/_data rw - devtmpfs udev rw\n");
        // type=ext4,device=/dev/vdb: the data disk again, but a mount of its own.
        refused("100 24 254:16 / /var/lib/docker/volumes/v/_data rw - ext4 /dev/vdb rw\n");
        refused("100 24 0:52 / /var/lib/docker/volumes/v/_data rw - sysfs sysfs rw\n");
    }

    #[test]
    fn binds_of_vm_tmpfs_are_refused() {
        // /run holds dockerd's own socket: a bind of it says tmpfs, but not a fresh one.
        refused("100 24 0:22 / /var/lib/docker/volumes/v/_data rw - tmpfs tmpfs rw\n");
        refused("100 24 0:22 /eci /var/lib/docker/volumes/v/_data rw - tmpfs tmpfs rw\n");
        refused("100 24 0:25 / /var/lib/docker/volumes/v/_data rw - tmpfs shm rw\n");
        // A container's shm, which dockerd mounts under its data root.
        refused(
            "90 24 0:60 / /var/lib/docker/containers/abc/mounts/shm rw - tmpfs shm rw\n\
             100 24 0:60 / /var/lib/docker/volumes/v/_data rw - tmpfs shm rw\n",
        );
    }

    #[test]
    fn a_fresh_tmpfs_is_allowed() {
        assert_eq!(
            decide(
                "100 24 0:70 / /var/lib/docker/volumes/v/_data rw - tmpfs tmpfs rw,size=1024k\n"
            ),
            Ok(VolumeDataKind::Tmpfs)
        );
        // A copy propagated into a peer of the data root is the same volume.
        assert_eq!(
            decide(
                "100 24 0:70 / /var/lib/docker/volumes/v/_data rw shared:9 - tmpfs tmpfs rw\n\
                 101 60 0:70 / /peer/var/lib/docker/volumes/v/_data rw shared:9 - tmpfs tmpfs rw\n"
            ),
            Ok(VolumeDataKind::Tmpfs)
        );
        // ... but not another volume's tmpfs bound here.
        refused(
            "99 24 0:70 / /var/lib/docker/volumes/w/_data rw - tmpfs tmpfs rw\n\
             100 24 0:70 / /var/lib/docker/volumes/v/_data rw - tmpfs tmpfs rw\n",
        );
    }

    #[test]
    fn remote_filesystems_are_allowed() {
        for line in [
            "100 24 0:80 / /var/lib/docker/volumes/v/_data rw - nfs4 10.0.0.2:/export rw,vers=4.2\n",
            "100 24 0:80 / /var/lib/docker/volumes/v/_data rw - nfs 10.0.0.2:/export rw,vers=3\n",
            "100 24 0:81 / /var/lib/docker/volumes/v/_data rw - cifs //server/share rw\n",
        ] {
            assert_eq!(decide(line), Ok(VolumeDataKind::Remote), "{line}");
        }
    }

    #[test]
    fn shares_count_only_as_binds_inside_an_allowed_prefix() {
        // device=/mnt/host/c/Users/me/src: the share's filesystem, a folder below its root.
        assert_eq!(
            decide("100 24 0:40 /c/Users/me/src /var/lib/docker/volumes/v/_data rw - 9p host rw\n"),
            Ok(VolumeDataKind::Share)
        );
        assert_eq!(
            decide("100 24 0:40 / /var/lib/docker/volumes/v/_data rw - 9p host rw\n"),
            Ok(VolumeDataKind::Share)
        );
        // type=9p of some other tag, not a share (another device), and virtiofs likewise.
        refused("100 24 0:90 / /var/lib/docker/volumes/v/_data rw - 9p other rw,trans=virtio\n");
        refused("100 24 0:91 / /var/lib/docker/volumes/v/_data rw - virtiofs other rw\n");
        // Without any share configured, the share's filesystem is nothing special.
        assert_eq!(
            classify(
                DATA,
                100,
                24,
                &vm("100 24 0:40 /c /var/lib/docker/volumes/v/_data rw - 9p host rw\n"),
                &[]
            ),
            Err(PolicyError::RestrictedMount(DATA.into()))
        );
    }

    #[test]
    fn a_share_that_is_a_folder_of_a_bigger_filesystem_bounds_the_bind() {
        // The share prefix /srv/share is a folder of the root filesystem (no mount of its own),
        // as in the engine tests: a bind of its subfolder passes, /etc or a sibling does not.
        let share = [ShareFolder {
            path: "/srv/share".into(),
            mount_id: 20,
        }];
        let at = |root: &str| {
            let line = format!("100 24 254:0 {root} {DATA} rw - ext4 /dev/vda rw\n");
            classify(DATA, 100, 24, &vm(&line), &share)
        };
        assert_eq!(at("/srv/share/sub"), Ok(VolumeDataKind::Share));
        assert_eq!(at("/srv/share"), Ok(VolumeDataKind::Share));
        for escape in ["/etc", "/srv", "/srv/share2", "/srv/shareX/y", "/"] {
            assert_eq!(
                at(escape),
                Err(PolicyError::RestrictedMount(DATA.into())),
                "{escape}"
            );
        }
    }

    #[test]
    fn a_share_mount_of_a_subfolder_is_compared_within_its_root() {
        // The share itself is a bind of /exports/host on device 0:40 mounted at /mnt/host: a
        // volume bind of /mnt/host/x has root /exports/host/x on that device.
        let mounts = parse_mountinfo(
            "25 20 0:40 /exports/host /mnt/host rw - virtiofs host rw\n\
             100 24 0:40 /exports/host/x /var/lib/docker/volumes/v/_data rw - virtiofs host rw\n\
             101 24 0:40 /exports/other /var/lib/docker/volumes/w/_data rw - virtiofs host rw\n",
        );
        let shares = [ShareFolder {
            path: "/mnt/host/".into(),
            mount_id: 25,
        }];
        assert_eq!(
            classify(DATA, 100, 24, &mounts, &shares),
            Ok(VolumeDataKind::Share)
        );
        let w = "/var/lib/docker/volumes/w/_data";
        assert_eq!(
            classify(w, 101, 24, &mounts, &shares),
            Err(PolicyError::RestrictedMount(w.into()))
        );
        // A share prefix deeper than its mount point narrows the allowed root.
        let deeper = [ShareFolder {
            path: "/mnt/host/y".into(),
            mount_id: 25,
        }];
        assert_eq!(
            classify(DATA, 100, 24, &mounts, &deeper),
            Err(PolicyError::RestrictedMount(DATA.into()))
        );
    }

    #[test]
    fn an_unknown_mount_is_refused() {
        // The mount id is not in mountinfo (it went away, or the line was unreadable).
        assert_eq!(
            classify(DATA, 999, 24, &vm(""), &shares()),
            Err(PolicyError::RestrictedMount(DATA.into()))
        );
        // A share whose mount is gone is skipped, not trusted.
        let gone = [ShareFolder {
            path: "/mnt/host".into(),
            mount_id: 998,
        }];
        assert_eq!(
            classify(
                DATA,
                100,
                24,
                &vm("100 24 0:40 /c /var/lib/docker/volumes/v/_data rw - 9p host rw\n"),
                &gone
            ),
            Err(PolicyError::RestrictedMount(DATA.into()))
        );
    }

    #[test]
    fn mountinfo_lines_are_parsed_with_their_escapes() {
        let m = parse_mountinfo(
            "36 35 98:0 /mnt\\0401 /my\\040mnt rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue\n\
             37 35 0:5 /a\\134b\\011c /x\\012y rw - tmpfs none rw\n\
             garbage line\n\
             38 35 0:5 / /z rw\n",
        );
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[0],
            MountEntry {
                id: 36,
                parent: 35,
                major: 98,
                minor: 0,
                root: "/mnt 1".into(),
                mount_point: "/my mnt".into(),
                fstype: "ext3".into(),
                source: "/dev/root".into(),
            }
        );
        assert_eq!(m[1].root, "/a\\b\tc");
        assert_eq!(m[1].mount_point, "/x\ny");
        assert_eq!(unescape_mountinfo("\\040"), " ");
        assert_eq!(unescape_mountinfo("\\"), "\\");
        assert_eq!(unescape_mountinfo("a\\04"), "a\\04");
        assert_eq!(unescape_mountinfo("\\999"), "\\999");
    }

    #[test]
    fn a_share_folder_with_a_space_matches_its_escaped_mountinfo() {
        let mounts = parse_mountinfo(
            "25 20 0:40 / /mnt/host\\040share rw - 9p host rw\n\
             100 24 0:40 /my\\040files /var/lib/docker/volumes/v/_data rw - 9p host rw\n",
        );
        let shares = [ShareFolder {
            path: "/mnt/host share".into(),
            mount_id: 25,
        }];
        assert_eq!(
            classify(DATA, 100, 24, &mounts, &shares),
            Ok(VolumeDataKind::Share)
        );
    }

    #[test]
    fn volume_data_folders_are_found_by_path() {
        let roots = vec!["/var/lib/docker".to_string(), "/tmp/e2e/data/".to_string()];
        let want = |root: &str, data: &str| Some((root.to_string(), data.to_string()));
        assert_eq!(
            named_volume_data("/var/lib/docker/volumes/v/_data", &roots),
            want("/var/lib/docker", "/var/lib/docker/volumes/v/_data")
        );
        assert_eq!(
            named_volume_data("/var/lib/docker/volumes/v/_data/sub/x", &roots),
            want("/var/lib/docker", "/var/lib/docker/volumes/v/_data")
        );
        assert_eq!(
            named_volume_data("/tmp/e2e/data/volumes/w/_data", &roots),
            want("/tmp/e2e/data", "/tmp/e2e/data/volumes/w/_data")
        );
        for other in [
            "/var/lib/docker/volumes/v",
            "/var/lib/docker/volumes//_data",
            "/var/lib/docker/volumes/v/_dataX",
            "/var/lib/docker/volumes/metadata.db",
            "/var/lib/docker/containers/abc/hosts",
            "/etc",
        ] {
            assert_eq!(named_volume_data(other, &roots), None, "{other}");
        }
    }

    #[test]
    fn within_is_by_whole_components() {
        assert!(lies_within("/a/b", "/a"));
        assert!(lies_within("/a", "/a/"));
        assert!(lies_within("/anything", "/"));
        assert!(!lies_within("/ab", "/a"));
        assert!(!lies_within("/A/b", "/a"));
        assert!(!lies_within("/a\\b", "/a"));
    }
}
