//! `eci-build inspect`: shows what an artifact ships, so nobody has to trust a build blindly.
//!
//! Accepts an initramfs (any compression the kernel reads), a Debian package, or a build output
//! folder (its `manifest.json` summary followed by the initramfs listing).

use crate::apt::deb;
use crate::artifact::{INITRAMFS_FILE, MANIFEST_FILE};
use crate::{initramfs, manifest};
use anyhow::{Context, Result};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Listed {
    pub path: String,
    /// `ls -l` style type and permissions, e.g. `-rwsr-xr-x`.
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    pub artifact: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<serde_json::Value>,
    pub entries: Vec<Listed>,
    pub total_bytes: u64,
}

impl Listing {
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Some(m) = &self.manifest {
            let _ = writeln!(
                out,
                "{} for {} (source date {}, lock sha256 {})",
                m["name"].as_str().unwrap_or("?"),
                m["target"].as_str().unwrap_or("?"),
                m["source_date_epoch"],
                m["lock_sha256"].as_str().unwrap_or("?")
            );
            for a in m["artifacts"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    out,
                    "  {:<16} {:>12} bytes  sha256 {}",
                    a["path"].as_str().unwrap_or("?"),
                    a["size"],
                    a["sha256"].as_str().unwrap_or("?")
                );
            }
            let _ = writeln!(out);
        }
        let owner_width = self
            .entries
            .iter()
            .map(|e| format!("{}:{}", e.uid, e.gid).len())
            .max()
            .unwrap_or(3);
        for e in &self.entries {
            let owner = format!("{}:{}", e.uid, e.gid);
            let _ = write!(
                out,
                "{} {owner:<owner_width$} {:>10} {}",
                e.mode, e.size, e.path
            );
            if let Some(t) = &e.target {
                let _ = write!(out, " -> {t}");
            }
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "{} ({}): {} entries, {} bytes of file data",
            self.artifact,
            self.kind,
            self.entries.len(),
            self.total_bytes
        );
        out
    }
}

/// `ls -l` mode string from full `st_mode` bits.
pub fn mode_string(st_mode: u32) -> String {
    let kind = match st_mode & 0o170_000 {
        0o040_000 => 'd',
        0o120_000 => 'l',
        0o020_000 => 'c',
        0o060_000 => 'b',
        0o010_000 => 'p',
        0o140_000 => 's',
        _ => '-',
    };
    let mut s = String::with_capacity(10);
    s.push(kind);
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ];
    for (i, (bit, c)) in bits.iter().enumerate() {
        let special = match i {
            2 => st_mode & 0o4000 != 0,
            5 => st_mode & 0o2000 != 0,
            8 => st_mode & 0o1000 != 0,
            _ => false,
        };
        let set = st_mode & bit != 0;
        s.push(match (special, set, i) {
            (true, true, 8) => 't',
            (true, false, 8) => 'T',
            (true, true, _) => 's',
            (true, false, _) => 'S',
            (false, true, _) => *c,
            (false, false, _) => '-',
        });
    }
    s
}

pub fn inspect(path: &Path) -> Result<Listing> {
    if path.is_dir() {
        return inspect_output_dir(path);
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.starts_with(b"!<arch>\n") {
        return inspect_deb(path, &bytes);
    }
    inspect_initramfs(path)
}

fn inspect_output_dir(dir: &Path) -> Result<Listing> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&manifest_path).with_context(|| {
        format!(
            "{} is not a build output folder (no {MANIFEST_FILE})",
            dir.display()
        )
    })?;
    let manifest: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", manifest_path.display()))?;
    let mut listing = inspect_initramfs(&dir.join(INITRAMFS_FILE))?;
    listing.artifact = dir.display().to_string();
    listing.kind = "build output".into();
    listing.manifest = Some(manifest);
    Ok(listing)
}

fn inspect_initramfs(path: &Path) -> Result<Listing> {
    let entries = initramfs::read_initramfs(path)
        .with_context(|| {
            format!(
                "{} is neither a .deb, a build folder nor an initramfs",
                path.display()
            )
        })?
        .entries;
    let mut listed = Vec::with_capacity(entries.len());
    let mut total = 0;
    for e in entries {
        total += e.size;
        listed.push(Listed {
            path: e.path,
            mode: mode_string(e.mode),
            uid: e.uid,
            gid: e.gid,
            size: e.size,
            target: e.link_target,
        });
    }
    Ok(Listing {
        artifact: path.display().to_string(),
        kind: "initramfs".into(),
        manifest: None,
        entries: listed,
        total_bytes: total,
    })
}

fn inspect_deb(path: &Path, bytes: &[u8]) -> Result<Listing> {
    let name = path.display().to_string();
    let mut m = manifest::Manifest::new();
    deb::unpack_into(bytes, &name, &mut m)?;
    let mut listed = Vec::with_capacity(m.len());
    let mut total = 0;
    for (p, e) in m.iter() {
        let (size, target) = match &e.kind {
            manifest::EntryKind::File(blob) => (blob.len() as u64, None),
            manifest::EntryKind::Symlink(t) | manifest::EntryKind::Hardlink(t) => {
                (0, Some(t.clone()))
            }
            _ => (0, None),
        };
        total += size;
        listed.push(Listed {
            path: p.to_string(),
            mode: mode_string(e.st_mode()),
            uid: e.uid,
            gid: e.gid,
            size,
            target,
        });
    }
    Ok(Listing {
        artifact: name,
        kind: "debian package".into(),
        manifest: None,
        entries: listed,
        total_bytes: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_strings_match_ls() {
        assert_eq!(mode_string(0o100755), "-rwxr-xr-x");
        assert_eq!(mode_string(0o104755), "-rwsr-xr-x");
        assert_eq!(mode_string(0o041777), "drwxrwxrwt");
        assert_eq!(mode_string(0o120777), "lrwxrwxrwx");
        assert_eq!(mode_string(0o020600), "crw-------");
        assert_eq!(mode_string(0o102644), "-rw-r-Sr--");
    }

    #[test]
    fn an_initramfs_round_trips_through_inspect() {
        let mut m = manifest::Manifest::new();
        m.add_file("/usr/bin/tool", b"#!/bin/sh\n", 0o4755, 0, 0)
            .unwrap();
        m.add_symlink("/bin/sh", "dash").unwrap();
        m.add_dir("/var/lib/docker", 0o710, 0, 999).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("initramfs.img");
        initramfs::write_initramfs(&m, 1_700_000_000, initramfs::Compression::Zstd, &path).unwrap();
        let listing = inspect(&path).unwrap();
        assert_eq!(listing.kind, "initramfs");
        let tool = listing
            .entries
            .iter()
            .find(|e| e.path == "/usr/bin/tool")
            .unwrap();
        assert_eq!(tool.mode, "-rwsr-xr-x");
        assert_eq!(tool.size, 10);
        let sh = listing
            .entries
            .iter()
            .find(|e| e.path == "/bin/sh")
            .unwrap();
        assert_eq!(sh.target.as_deref(), Some("dash"));
        let docker = listing
            .entries
            .iter()
            .find(|e| e.path == "/var/lib/docker")
            .unwrap();
        assert_eq!(
            (docker.uid, docker.gid, docker.mode.as_str()),
            (0, 999, "drwx--x---")
        );
        let text = listing.render();
        assert!(text.contains("-rwsr-xr-x 0:0"), "{text}");
        assert!(text.contains("/bin/sh -> dash"), "{text}");
        assert!(inspect(&dir.path().join("missing")).is_err());
        std::fs::write(dir.path().join("junk"), b"junk").unwrap();
        let err = inspect(&dir.path().join("junk")).unwrap_err();
        assert!(format!("{err:#}").contains("neither a .deb"), "{err:#}");
    }
}
