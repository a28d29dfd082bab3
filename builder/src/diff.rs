//! `eci-build inspect --diff A B`: which files of two builds differ, down to the member of an
//! initramfs or a root filesystem tarball, so a reproducibility regression (SPEC V1) is found in
//! seconds instead of by hand.

use crate::artifact::{INITRAMFS_FILE, MANIFEST_FILE};
use crate::initramfs;
use anyhow::{Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// One difference, as a path (the artifact, or `artifact:member`) and what differs.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Difference {
    pub path: String,
    pub what: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    pub a: String,
    pub b: String,
    pub differences: Vec<Difference>,
}

impl DiffReport {
    pub fn identical(&self) -> bool {
        self.differences.is_empty()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for d in &self.differences {
            out.push_str(&format!("{}: {}\n", d.path, d.what));
        }
        if self.identical() {
            out.push_str(&format!("{} and {} are identical\n", self.a, self.b));
        } else {
            out.push_str(&format!(
                "{} and {} differ: {} difference(s)\n",
                self.a,
                self.b,
                self.differences.len()
            ));
        }
        out
    }
}

/// Compares two build output folders, or two single artifacts of the same kind.
pub fn diff(a: &Path, b: &Path) -> Result<DiffReport> {
    let mut differences = Vec::new();
    if a.is_dir() && b.is_dir() {
        diff_folders(a, b, &mut differences)?;
    } else {
        let name = a
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (x, y) = (read(a)?, read(b)?);
        diff_file(&name, &x, &y, &mut differences)?;
    }
    Ok(DiffReport {
        a: a.display().to_string(),
        b: b.display().to_string(),
        differences,
    })
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn files(dir: &Path) -> Result<BTreeMap<String, std::path::PathBuf>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let e = e?;
        if e.file_type()?.is_file() {
            out.insert(e.file_name().to_string_lossy().into_owned(), e.path());
        }
    }
    Ok(out)
}

fn diff_folders(a: &Path, b: &Path, out: &mut Vec<Difference>) -> Result<()> {
    if !a.join(MANIFEST_FILE).is_file() || !b.join(MANIFEST_FILE).is_file() {
        anyhow::bail!(
            "{} and {} must both be build output folders (with {MANIFEST_FILE})",
            a.display(),
            b.display()
        );
    }
    let (fa, fb) = (files(a)?, files(b)?);
    for name in fa
        .keys()
        .chain(fb.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        match (fa.get(name), fb.get(name)) {
            (Some(x), Some(y)) => diff_file(name, &read(x)?, &read(y)?, out)?,
            (Some(_), None) => out.push(Difference {
                path: name.clone(),
                what: format!("only in {}", a.display()),
            }),
            (None, Some(_)) => out.push(Difference {
                path: name.clone(),
                what: format!("only in {}", b.display()),
            }),
            (None, None) => unreachable!("the name came from one of the folders"),
        }
    }
    Ok(())
}

/// A differing artifact is reported, and then what inside it differs when its format is one
/// eci writes with members: the initramfs, a root filesystem tarball, the manifest.
fn diff_file(name: &str, a: &[u8], b: &[u8], out: &mut Vec<Difference>) -> Result<()> {
    if a == b {
        return Ok(());
    }
    out.push(Difference {
        path: name.to_string(),
        what: format!("content differs (sha256 {} vs {})", sha(a), sha(b)),
    });
    if name == INITRAMFS_FILE || initramfs::looks_like_initramfs(a) {
        let (x, y) = (
            members_of_initramfs(name, a)?,
            members_of_initramfs(name, b)?,
        );
        diff_members(name, &x, &y, out);
    } else if name.ends_with(".tar.gz") || name.ends_with(".wsl") || name.ends_with(".tar") {
        let (x, y) = (members_of_tar(a)?, members_of_tar(b)?);
        diff_members(name, &x, &y, out);
    } else if name == MANIFEST_FILE {
        let (x, y): (serde_json::Value, serde_json::Value) =
            (serde_json::from_slice(a)?, serde_json::from_slice(b)?);
        for key in x
            .as_object()
            .into_iter()
            .chain(y.as_object())
            .flat_map(|o| o.keys())
            .collect::<std::collections::BTreeSet<_>>()
        {
            if x.get(key) != y.get(key) {
                out.push(Difference {
                    path: format!("{name}:{key}"),
                    what: "field differs".into(),
                });
            }
        }
    }
    Ok(())
}

/// What a member is, compared field by field: metadata as text and the data's hash.
type Members = BTreeMap<String, BTreeMap<&'static str, String>>;

fn members_of_initramfs(name: &str, bytes: &[u8]) -> Result<Members> {
    let img = initramfs::parse_initramfs(bytes.to_vec(), Path::new(name))?;
    let mut out = Members::new();
    for e in &img.entries {
        let mut m = BTreeMap::new();
        m.insert("mode", format!("{:o}", e.mode));
        m.insert("owner", format!("{}:{}", e.uid, e.gid));
        m.insert("mtime", e.mtime.to_string());
        m.insert("device", format!("{}:{}", e.rdev_major, e.rdev_minor));
        m.insert("data", sha(img.data(e)));
        out.insert(e.path.clone(), m);
    }
    Ok(out)
}

fn members_of_tar(bytes: &[u8]) -> Result<Members> {
    let reader: Box<dyn Read + '_> = if bytes.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(bytes))
    } else {
        Box::new(bytes)
    };
    let mut archive = tar::Archive::new(reader);
    let mut out = Members::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        let h = entry.header().clone();
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        let mut m = BTreeMap::new();
        m.insert("mode", format!("{:o}", h.mode().unwrap_or(0)));
        m.insert(
            "owner",
            format!("{}:{}", h.uid().unwrap_or(0), h.gid().unwrap_or(0)),
        );
        m.insert("mtime", h.mtime().unwrap_or(0).to_string());
        m.insert(
            "link",
            entry
                .link_name()?
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        let mut xattrs = Vec::new();
        if let Some(ext) = entry.pax_extensions()? {
            for x in ext.flatten() {
                xattrs.push(format!(
                    "{}={}",
                    x.key().unwrap_or("?"),
                    sha(x.value_bytes())
                ));
            }
        }
        m.insert("pax", xattrs.join(","));
        m.insert("data", sha(&data));
        out.insert(path, m);
    }
    Ok(out)
}

fn diff_members(artifact: &str, a: &Members, b: &Members, out: &mut Vec<Difference>) {
    for path in a
        .keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let what = match (a.get(path), b.get(path)) {
            (Some(x), Some(y)) if x == y => continue,
            (Some(x), Some(y)) => {
                x.iter()
                    .filter(|(k, v)| y.get(*k) != Some(v))
                    .map(|(k, _)| *k)
                    .collect::<Vec<_>>()
                    .join(", ")
                    + " differ"
            }
            (Some(_), None) => "only in the first".into(),
            (None, Some(_)) => "only in the second".into(),
            (None, None) => unreachable!("the path came from one of the listings"),
        };
        out.push(Difference {
            path: format!("{artifact}:{path}"),
            what,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Entry, Manifest};

    fn initramfs_with(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut m = Manifest::new();
        for (p, data) in files {
            m.insert(p, Entry::file(data.to_vec(), 0o755)).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.img");
        initramfs::write_initramfs(&m, 0, initramfs::Compression::Zstd, &path).unwrap();
        std::fs::read(path).unwrap()
    }

    fn folder(files: &[(&str, Vec<u8>)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST_FILE), b"{\"name\": \"eci\"}").unwrap();
        for (name, data) in files {
            std::fs::write(dir.path().join(name), data).unwrap();
        }
        dir
    }

    #[test]
    fn identical_builds_have_no_differences() {
        let img = initramfs_with(&[("/usr/bin/eci-init", b"same")]);
        let (a, b) = (
            folder(&[(INITRAMFS_FILE, img.clone())]),
            folder(&[(INITRAMFS_FILE, img)]),
        );
        let r = diff(a.path(), b.path()).unwrap();
        assert!(r.identical(), "{}", r.render());
        assert!(r.render().contains("are identical"));
    }

    /// The regression of issue 14: one binary inside the initramfs differs; the report names
    /// the initramfs, the member and what about it differs.
    #[test]
    fn a_differing_member_is_named() {
        let (a, b) = (
            folder(&[
                (
                    INITRAMFS_FILE,
                    initramfs_with(&[("/usr/bin/eci-init", b"one"), ("/etc/x", b"x")]),
                ),
                ("vmlinuz", b"k".to_vec()),
            ]),
            folder(&[
                (
                    INITRAMFS_FILE,
                    initramfs_with(&[("/usr/bin/eci-init", b"two"), ("/etc/x", b"x")]),
                ),
                ("vmlinuz", b"k".to_vec()),
                ("extra", b"e".to_vec()),
            ]),
        );
        let r = diff(a.path(), b.path()).unwrap();
        let text = r.render();
        assert_eq!(
            r.differences
                .iter()
                .map(|d| d.path.as_str())
                .collect::<Vec<_>>(),
            vec![
                "extra",
                INITRAMFS_FILE,
                &format!("{INITRAMFS_FILE}:/usr/bin/eci-init"),
            ],
            "{text}"
        );
        assert!(text.contains("/usr/bin/eci-init: data differ"), "{text}");
        assert!(text.contains("extra: only in"), "{text}");
    }

    #[test]
    fn tarball_members_and_manifest_fields_are_compared() {
        let tarball = |data: &[u8]| {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, "etc/eci/policy.json", data).unwrap();
            b.into_inner().unwrap()
        };
        let mut out = Vec::new();
        diff_file("rootfs.tar", &tarball(b"a"), &tarball(b"b"), &mut out).unwrap();
        assert_eq!(out[1].path, "rootfs.tar:etc/eci/policy.json");
        let mut out = Vec::new();
        diff_file(
            MANIFEST_FILE,
            br#"{"name": "eci", "lock_sha256": "1"}"#,
            br#"{"name": "eci", "lock_sha256": "2"}"#,
            &mut out,
        )
        .unwrap();
        assert_eq!(out[1].path, "manifest.json:lock_sha256");
    }
}
