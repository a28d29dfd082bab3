//! The WSL2 distribution under QEMU (SPEC V7, H5): `eci-build test|boot --target wsl2` boot the
//! image's own kernel with an initramfs made here from the shipped `rootfs.tar.gz` (its bytes,
//! not the build's tree) plus a stand-in for WSL's init under [`DIR`] (`wsl_standin/*.sh`).
//! WSL mounts the distribution, runs `/etc/wsl.conf`'s `[boot] command` as root and later opens
//! sessions as its default user; the stand-in does the same under QEMU (init.sh says what it
//! stands in for and what not), so the engine starts exactly as on WSL: `wsl-boot` starts
//! `eci-init --under-init`, which checks the kernel against its pins and starts the services.
//!
//! The stand-in's files are never in the tarball; the archive's own `/init` (the VM targets')
//! stays unused, as on WSL, because the kernel starts `rdinit=` [`INIT`].
//!
//! newc cpio has no extended attributes: files with file capabilities lose them in this boot
//! (WSL's ext4 keeps them). [`StandinInitramfs::dropped_xattrs`] names them.

use crate::initramfs::{self, Compression, DroppedXattrs, InitramfsError};
use crate::manifest::{Entry, EntryKind, Manifest, ManifestError};
use eci_facts::vm_paths;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Where the stand-in's files live in the boot's root (beside the distribution's own).
pub const DIR: &str = "/.wsl-standin";
/// PID 1 of the boot (`rdinit=`).
pub const INIT: &str = "/.wsl-standin/init";
/// Where the stand-in's first stage mounts the tmpfs it copies the distribution into; outside
/// the copied tree.
pub const NEW_ROOT: &str = "/.wsl-standin-root";
/// The boot's initramfs, written into the build folder for each boot.
pub const INITRAMFS_FILE: &str = "wsl-standin.cpio";
/// WSL boots every kernel with cgroup v1 off (since WSL 1.1.5) and mounts cgroup v2 alone.
pub const WSL_CMDLINE: &[&str] = &["cgroup_no_v1=all"];

/// The guest's uplink as the stand-in configures it (QEMU's user network, standing in for
/// WSL's NAT), the gateway port forwards come from, and the DNS server resolv.conf names.
pub const UPLINK_ADDRESS: &str = "10.0.2.15";
pub const UPLINK_PREFIX: u8 = 24;
pub const GATEWAY: &str = "10.0.2.2";
pub const DNS: &str = "10.0.2.3";
/// The relay's TCP port on the uplink address: the engine endpoint of this boot
/// (builder/standin-relay: WSL's is hv_sock, which QEMU lacks).
pub const RELAY_PORT: u16 = 2375;
/// The relay's workspace binary and where it goes in the boot's root.
pub const RELAY_BIN: &str = "eci-standin-relay";
pub const RELAY_PATH: &str = "/.wsl-standin/relay";

/// The stand-in's programs, relative to [`DIR`].
const PROGRAMS: &[(&str, &str)] = &[
    ("init", include_str!("wsl_standin/init.sh")),
    ("conf", include_str!("wsl_standin/conf.sh")),
    ("terminate", include_str!("wsl_standin/terminate.sh")),
    (
        "session-check",
        include_str!("wsl_standin/session-check.sh"),
    ),
    // busybox acpid runs CONFDIR/<event>/<parameter> for an event: the power button's.
    (
        "acpi/PWRF/00000080",
        include_str!("wsl_standin/power-button.sh"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum StandinError {
    #[error("{}: cannot read the distribution tarball: {source}; run `eci-build image --target wsl2` again", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: member {member}: {reason}", path.display())]
    Member {
        path: PathBuf,
        member: String,
        reason: String,
    },
    #[error("{}: member {member}: {source}", path.display())]
    Tree {
        path: PathBuf,
        member: String,
        #[source]
        source: ManifestError,
    },
    #[error("the WSL stand-in's own files: {0}")]
    Standin(#[source] ManifestError),
    #[error(transparent)]
    Initramfs(#[from] InitramfsError),
}

/// The initramfs [`write_initramfs`] wrote.
#[derive(Debug, Clone)]
pub struct StandinInitramfs {
    pub path: PathBuf,
    pub entries: u64,
    pub bytes: u64,
    /// Files whose extended attributes (file capabilities) newc could not carry.
    pub dropped_xattrs: Vec<DroppedXattrs>,
}

/// Reads a root filesystem tarball (pax, as [`crate::artifact::tar`] writes it; gzip or plain)
/// into a tree: owners, modes, mtimes, links, device nodes and `SCHILY.xattr.*` records.
pub fn read_tarball(path: &Path) -> Result<Manifest, StandinError> {
    let read_err = |source| StandinError::Read {
        path: path.to_path_buf(),
        source,
    };
    use std::io::BufRead;
    let mut file = io::BufReader::new(std::fs::File::open(path).map_err(read_err)?);
    let gzip = file
        .fill_buf()
        .map_err(read_err)?
        .starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gzip {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut archive = tar::Archive::new(reader);
    let mut tree = Manifest::new();
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let member = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let bad = |reason: String| StandinError::Member {
            path: path.to_path_buf(),
            member: member.clone(),
            reason,
        };
        let header = entry.header().clone();
        let num = |v: io::Result<u64>, what: &str| v.map_err(|e| bad(format!("{what}: {e}")));
        let mode = num(header.mode().map(u64::from), "mode")? as u32 & 0o7777;
        let uid =
            u32::try_from(num(header.uid(), "uid")?).map_err(|_| bad("uid out of range".into()))?;
        let gid =
            u32::try_from(num(header.gid(), "gid")?).map_err(|_| bad("gid out of range".into()))?;
        let mtime = num(header.mtime(), "mtime")?;
        let mut xattrs = Vec::new();
        if let Some(pax) = entry.pax_extensions().map_err(read_err)? {
            for record in pax {
                let record = record.map_err(read_err)?;
                if let Some(name) = record
                    .key()
                    .ok()
                    .and_then(|k| k.strip_prefix("SCHILY.xattr."))
                {
                    xattrs.push((name.to_string(), record.value_bytes().to_vec()));
                }
            }
        }
        let link = || {
            entry
                .link_name_bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .ok_or_else(|| bad("a link without a target".into()))
        };
        let device = || -> Result<(u32, u32), StandinError> {
            Ok((
                num(
                    header.device_major().map(|v| v.unwrap_or(0).into()),
                    "device major",
                )? as u32,
                num(
                    header.device_minor().map(|v| v.unwrap_or(0).into()),
                    "device minor",
                )? as u32,
            ))
        };
        let kind = match header.entry_type() {
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut data = Vec::with_capacity(entry.size() as usize);
                entry.read_to_end(&mut data).map_err(read_err)?;
                EntryKind::File(data.into())
            }
            tar::EntryType::Symlink => EntryKind::Symlink(link()?),
            tar::EntryType::Link => EntryKind::Hardlink(format!(
                "/{}",
                link()?.trim_start_matches("./").trim_start_matches('/')
            )),
            tar::EntryType::Char => {
                let (major, minor) = device()?;
                EntryKind::CharDevice { major, minor }
            }
            tar::EntryType::Block => {
                let (major, minor) = device()?;
                EntryKind::BlockDevice { major, minor }
            }
            tar::EntryType::Fifo => EntryKind::Fifo,
            other => return Err(bad(format!("unexpected tar entry type {other:?}"))),
        };
        let mut e = Entry::new(kind, mode)
            .with_owner(uid, gid)
            .with_mtime(mtime);
        for (name, value) in xattrs {
            e = e.with_xattr(name, value);
        }
        let at = format!("/{}", member.trim_start_matches("./").trim_end_matches('/'));
        tree.insert(&at, e).map_err(|source| StandinError::Tree {
            path: path.to_path_buf(),
            member: member.clone(),
            source,
        })?;
    }
    Ok(tree)
}

/// The relay, built like the image's own binaries (crate::binaries).
pub fn relay_binary() -> crate::spec::WorkspaceBinary {
    crate::spec::WorkspaceBinary {
        bin: RELAY_BIN.into(),
        path: RELAY_PATH.into(),
    }
}

/// The facts the stand-in's scripts read (`. /.wsl-standin/env`), from the constants above.
fn env_file() -> String {
    format!(
        "# The WSL stand-in's settings, written by eci-build (builder/src/wsl_standin.rs).\n\
         UPLINK={UPLINK_ADDRESS}/{UPLINK_PREFIX}\nGATEWAY={GATEWAY}\nDNS={DNS}\n\
         RELAY_LISTEN={UPLINK_ADDRESS}:{RELAY_PORT}\nGUARD_SOCKET={}\nDOCKERD_SOCKET={}\n\
         KERNEL_DRIFT_STATUS={}\nNEW_ROOT={NEW_ROOT}\n",
        vm_paths::ENGINE_SOCKET,
        vm_paths::DOCKERD_SOCKET,
        vm_paths::KERNEL_DRIFT_STATUS,
    )
}

/// Adds the stand-in's programs and settings under [`DIR`], the relay, the mount point the
/// first stage needs ([`NEW_ROOT`]), and the console node the kernel opens for PID 1 when the archive has none.
pub fn add_standin(tree: &mut Manifest, relay: &[u8]) -> Result<(), StandinError> {
    let add = |tree: &mut Manifest, path: &str, entry: Entry| {
        tree.insert(path, entry)
            .map(|_| ())
            .map_err(StandinError::Standin)
    };
    add(tree, DIR, Entry::dir(0o700))?;
    add(tree, NEW_ROOT, Entry::dir(0o755))?;
    for (name, text) in PROGRAMS {
        add(
            tree,
            &format!("{DIR}/{name}"),
            Entry::file(text.as_bytes().to_vec(), 0o700),
        )?;
    }
    add(
        tree,
        &format!("{DIR}/env"),
        Entry::file(env_file().into_bytes(), 0o600),
    )?;
    add(tree, RELAY_PATH, Entry::file(relay.to_vec(), 0o700))?;
    // The distribution's /dev is WSL's devtmpfs; before it is mounted, PID 1's console is
    // the archive's /dev/console.
    if !tree.contains("/dev/console") {
        add(
            tree,
            "/dev/console",
            Entry::new(EntryKind::CharDevice { major: 5, minor: 1 }, 0o600),
        )?;
    }
    Ok(())
}

/// Writes the boot's initramfs at `out` (uncompressed: QEMU loads it at the host's speed and
/// the guest skips a decompression that costs seconds under TCG).
pub fn write_initramfs(
    tarball: &Path,
    relay: &[u8],
    out: &Path,
) -> Result<StandinInitramfs, StandinError> {
    let mut tree = read_tarball(tarball)?;
    add_standin(&mut tree, relay)?;
    // The members' own mtimes, unclamped: nothing here is compared between builds.
    let epoch = tree.iter().map(|(_, e)| e.mtime).max().unwrap_or(0);
    let info = initramfs::write_initramfs(&tree, epoch, Compression::None, out)?;
    Ok(StandinInitramfs {
        path: out.to_path_buf(),
        entries: info.entries,
        bytes: info.uncompressed_size,
        dropped_xattrs: info.dropped_xattrs,
    })
}

/// The boot's kernel command line: the image's, WSL's additions, the stand-in as PID 1, and
/// `eci.selftest` for the self-test boot (the stand-in's session check).
pub fn cmdline(image: &[String], selftest: bool) -> Vec<String> {
    let mut out: Vec<String> = image.to_vec();
    out.extend(WSL_CMDLINE.iter().map(|s| s.to_string()));
    out.push(format!("rdinit={INIT}"));
    if selftest {
        out.push("eci.selftest".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::tar::write_tar;
    use crate::initramfs::read_initramfs;

    fn sample() -> Manifest {
        let mut m = Manifest::new();
        m.add_dir("/etc", 0o755, 0, 0).unwrap();
        m.add_file(
            "/etc/wsl.conf",
            b"[boot]\ncommand = /x\n".to_vec(),
            0o644,
            0,
            0,
        )
        .unwrap();
        m.add_dir("/usr/bin", 0o755, 0, 0).unwrap();
        m.insert(
            "/usr/bin/newuidmap",
            Entry::file(b"elf".to_vec(), 0o755)
                .with_xattr("security.capability", vec![1, 0, 0, 2, 0x80, 0, 0, 0]),
        )
        .unwrap();
        m.add_hardlink("/usr/bin/newgidmap", "/usr/bin/newuidmap")
            .unwrap();
        m.add_symlink("/bin", "usr/bin").unwrap();
        m.add_dir("/home/eci", 0o750, 1000, 999).unwrap();
        m.insert("/run/fifo", Entry::new(EntryKind::Fifo, 0o600))
            .unwrap();
        m
    }

    #[test]
    fn the_tarball_reads_back_as_the_tree_it_was_written_from() {
        let dir = tempfile::tempdir().unwrap();
        let original = sample();
        let path = dir.path().join("rootfs.tar.gz");
        let file = std::fs::File::create(&path).unwrap();
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        write_tar(&original, 1_700_000_000, &mut gz).unwrap();
        gz.finish().unwrap();
        let read = read_tarball(&path).unwrap();
        // A hard-linked inode: which of its names carries the data and the metadata is the
        // writer's choice (the first in path order), so compare through the links.
        let inode = |m: &Manifest, p: &str| -> Entry {
            match &m.get(p).unwrap_or_else(|| panic!("{p} missing")).kind {
                EntryKind::Hardlink(target) => m.get(target).unwrap().clone(),
                _ => m.get(p).unwrap().clone(),
            }
        };
        for (p, _) in original.iter().skip(1) {
            let (got, want) = (inode(&read, p), inode(&original, p));
            assert_eq!(
                (got.mode, got.uid, got.gid),
                (want.mode, want.uid, want.gid),
                "{p}"
            );
            assert_eq!(got.kind, want.kind, "{p}");
            assert_eq!(got.xattrs, want.xattrs, "{p}");
        }
        assert!(
            matches!(
                read.get("/usr/bin/newuidmap").unwrap().kind,
                EntryKind::Hardlink(_)
            ) || matches!(
                read.get("/usr/bin/newgidmap").unwrap().kind,
                EntryKind::Hardlink(_)
            )
        );
        assert_eq!(read.len(), original.len());
    }

    #[test]
    fn the_initramfs_holds_the_distribution_and_the_standin_and_names_lost_capabilities() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rootfs.tar");
        write_tar(
            &sample(),
            1_700_000_000,
            std::fs::File::create(&path).unwrap(),
        )
        .unwrap();
        let out = dir.path().join(INITRAMFS_FILE);
        let written = write_initramfs(&path, b"relay", &out).unwrap();
        let img = read_initramfs(&out).unwrap();
        let names: Vec<&str> = img.entries.iter().map(|e| e.path.as_str()).collect();
        for want in [
            "etc/wsl.conf",
            "home/eci",
            ".wsl-standin/init",
            ".wsl-standin-root",
            ".wsl-standin/acpi/PWRF/00000080",
            ".wsl-standin/relay",
            ".wsl-standin/env",
            "dev/console",
        ] {
            assert!(
                names.iter().any(|n| n.trim_start_matches('/') == want),
                "{want} missing from {names:?}"
            );
        }
        let init = img
            .entries
            .iter()
            .find(|e| e.path.trim_start_matches('/') == ".wsl-standin/init")
            .unwrap();
        assert!(img.data(init).starts_with(b"#!/bin/busybox sh\n"));
        assert_eq!(init.mode & 0o777, 0o700);
        let env = img
            .entries
            .iter()
            .find(|e| e.path.trim_start_matches('/') == ".wsl-standin/env")
            .unwrap();
        let env = String::from_utf8_lossy(img.data(env)).into_owned();
        assert!(
            env.contains(&format!("RELAY_LISTEN={UPLINK_ADDRESS}:{RELAY_PORT}\n")),
            "{env}"
        );
        // One inode with a file capability, named once.
        assert_eq!(
            written.dropped_xattrs.len(),
            1,
            "{:?}",
            written.dropped_xattrs
        );
        assert!(written.dropped_xattrs[0].path.starts_with("/usr/bin/new"));
        assert_eq!(written.dropped_xattrs[0].names, ["security.capability"]);
    }

    #[test]
    fn a_tarball_that_is_not_one_is_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rootfs.tar.gz");
        std::fs::write(&path, [0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
        let err = read_tarball(&path).unwrap_err().to_string();
        assert!(err.contains("rootfs.tar.gz"), "{err}");
        assert!(err.contains("eci-build image --target wsl2"), "{err}");
    }

    #[test]
    fn the_command_line_adds_wsl_and_the_standin() {
        let image = vec!["console=ttyS0".to_string(), "init=/init".to_string()];
        let c = cmdline(&image, true);
        assert!(c.contains(&"cgroup_no_v1=all".to_string()));
        assert!(c.contains(&format!("rdinit={INIT}")));
        assert_eq!(c.last().map(String::as_str), Some("eci.selftest"));
        assert!(!cmdline(&image, false).contains(&"eci.selftest".to_string()));
    }
}
