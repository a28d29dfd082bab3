//! A Debian source package of format `3.0 (quilt)` made into a patched tree, as dpkg-source
//! would extract it: the upstream tarball, the `debian/` tarball on top, then the patches of
//! `debian/patches/series` in order with no fuzz.

use std::path::{Component, Path, PathBuf};
use std::process::Command;

use super::SourceBuildError;
use crate::apt::lock::{LockedSource, LockedSourceFile};

/// The files of a source package read from the cache (each checked against its pin there).
pub struct SourceFiles<'a> {
    pub source: &'a LockedSource,
    pub read: &'a dyn Fn(&LockedSourceFile) -> Result<Vec<u8>, SourceBuildError>,
}

/// Unpacks `files` into `tree` (which must not exist yet) and applies the Debian patches.
/// Returns the names of the patches applied.
pub fn extract(files: &SourceFiles<'_>, tree: &Path) -> Result<Vec<String>, SourceBuildError> {
    let src = files.source;
    let err = |message: String| SourceBuildError::Source {
        package: format!("{} {}", src.name, src.version),
        message,
    };
    let dsc_file = src
        .files
        .iter()
        .find(|f| f.name.ends_with(".dsc"))
        .ok_or_else(|| err("the lock lists no .dsc".into()))?;
    let dsc = String::from_utf8((files.read)(dsc_file)?)
        .map_err(|_| err(format!("{} is not UTF-8 text", dsc_file.name)))?;
    let format = dsc_field(&dsc, "Format").unwrap_or_default();
    if format != "3.0 (quilt)" {
        return Err(err(format!(
            "{} has `Format: {format}`; only `3.0 (quilt)` source packages are supported",
            dsc_file.name
        )));
    }
    // The .dsc names the files it is made of: they must be the ones the lock pins, so a lock
    // edited by hand cannot pair a .dsc with another tarball.
    let listed = dsc_checksums(&dsc);
    for (sha256, size, name) in &listed {
        let pinned = src.files.iter().find(|f| &f.name == name);
        if pinned.is_none_or(|f| &f.sha256 != sha256 || f.size != *size) {
            return Err(err(format!(
                "{} lists {name} (sha256 {sha256}, {size} bytes), which the lock does not pin; re-run `eci-build lock`",
                dsc_file.name
            )));
        }
    }
    // Component tarballs (`.orig-NAME.tar.*`) would need unpacking into their own folders;
    // skipping one would build from an incomplete tree, so any file not understood is refused.
    if let Some((_, _, other)) = listed
        .iter()
        .find(|(_, _, n)| !n.ends_with(".dsc") && !n.ends_with(".asc") && tarball_kind(n).is_none())
    {
        return Err(err(format!(
            "{} lists {other}, which this builder does not know how to unpack (only one upstream and one Debian tarball)",
            dsc_file.name
        )));
    }
    let pick = |suffix: &str| -> Result<&LockedSourceFile, SourceBuildError> {
        let found: Vec<&LockedSourceFile> = src
            .files
            .iter()
            .filter(|f| listed.iter().any(|(_, _, n)| n == &f.name))
            .filter(|f| tarball_kind(&f.name) == Some(suffix))
            .collect();
        match found.as_slice() {
            [one] => Ok(one),
            _ => Err(err(format!(
                "expected one {suffix} tarball in {}, found {}",
                dsc_file.name,
                found.len()
            ))),
        }
    };
    let orig = pick("orig")?;
    let debian = pick("debian")?;

    std::fs::create_dir_all(tree).map_err(super::io_err(tree))?;
    unpack_tarball(&(files.read)(orig)?, &orig.name, tree, true, None)
        .map_err(|m| err(format!("{}: {m}", orig.name)))?;
    // A `debian/` shipped inside the upstream tarball is replaced, as dpkg-source does.
    let debian_dir = tree.join("debian");
    if debian_dir.exists() {
        std::fs::remove_dir_all(&debian_dir).map_err(super::io_err(&debian_dir))?;
    }
    unpack_tarball(
        &(files.read)(debian)?,
        &debian.name,
        tree,
        false,
        Some("debian"),
    )
    .map_err(|m| err(format!("{}: {m}", debian.name)))?;
    if !debian_dir.is_dir() {
        return Err(err(format!("{} holds no debian/ folder", debian.name)));
    }
    apply_series(tree).map_err(err)
}

/// `orig` or `debian` for the tarballs of a 3.0 (quilt) package, by name.
fn tarball_kind(name: &str) -> Option<&'static str> {
    let stem = [".tar.xz", ".tar.gz"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))?;
    if stem.ends_with(".debian") {
        Some("debian")
    } else if stem.contains(".orig") && !stem.contains(".orig-") {
        Some("orig")
    } else {
        None
    }
}

/// One field of the .dsc (its text may be wrapped in an OpenPGP clearsignature; the
/// signature is not what protects it: its sha256 is pinned through the signed Release).
fn dsc_field<'a>(dsc: &'a str, name: &str) -> Option<&'a str> {
    dsc.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == name).then(|| v.trim())
    })
}

/// `Checksums-Sha256` of the .dsc as `(sha256, size, name)`.
fn dsc_checksums(dsc: &str) -> Vec<(String, u64, String)> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in dsc.lines() {
        if line.starts_with("Checksums-Sha256:") {
            inside = true;
            continue;
        }
        if inside {
            if !line.starts_with(' ') {
                break;
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            if let [sha, size, name] = parts[..] {
                if let Ok(size) = size.parse() {
                    out.push((sha.to_ascii_lowercase(), size, name.to_string()));
                }
            }
        }
    }
    out
}

/// Unpacks a .tar.xz or .tar.gz into `dest`, dropping the single top-level folder of an
/// upstream tarball (`iptables-1.8.9/`); with `only_under`, every entry must be inside that
/// folder (the Debian tarball may only add `debian/`). Only files, folders and symbolic links
/// are accepted; no entry may leave `dest` by its path, by a link's target, or by being
/// written through a link an earlier entry made (`Entry::unpack` checks none of this).
fn unpack_tarball(
    bytes: &[u8],
    name: &str,
    dest: &Path,
    strip_top: bool,
    only_under: Option<&str>,
) -> Result<(), String> {
    let reader: Box<dyn std::io::Read> = if name.ends_with(".xz") {
        Box::new(xz2::read::XzDecoder::new(bytes))
    } else {
        Box::new(flate2::read::GzDecoder::new(bytes))
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(false);
    let mut top: Option<std::ffi::OsString> = None;
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = entry.path().map_err(|e| e.to_string())?.into_owned();
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir() || kind.is_symlink()) {
            return Err(format!(
                "{} is a {kind:?} entry; only files, folders and symbolic links are accepted",
                path.display()
            ));
        }
        // Plain names only: `./` prefixes are dropped, anything else (`..`, `/`) refused.
        let mut names = Vec::new();
        for c in path.components() {
            match c {
                Component::Normal(n) => names.push(n.to_os_string()),
                Component::CurDir => {}
                _ => return Err(format!("{} leaves the tree", path.display())),
            }
        }
        if strip_top && !names.is_empty() {
            let first = names.remove(0);
            match &top {
                None => top = Some(first),
                Some(t) if *t != first => {
                    return Err(format!(
                        "entries under both {} and {}: not one top-level folder",
                        t.to_string_lossy(),
                        first.to_string_lossy()
                    ))
                }
                Some(_) => {}
            }
        }
        if names.is_empty() {
            continue;
        }
        let rel: PathBuf = names.iter().collect();
        if let Some(folder) = only_under {
            if names[0] != folder {
                return Err(format!(
                    "{} is outside {folder}/, which is all this tarball may hold",
                    path.display()
                ));
            }
        }
        if kind.is_symlink() {
            let link = entry
                .link_name()
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{} is a link without a target", path.display()))?;
            if !link_stays_inside(&names[..names.len() - 1], &link) {
                return Err(format!(
                    "{} links to {}, outside the tree",
                    path.display(),
                    link.display()
                ));
            }
        }
        let parent = make_parents(dest, &names[..names.len() - 1])
            .map_err(|m| format!("{}: {m}", path.display()))?;
        let target = parent.join(names.last().expect("not empty"));
        match std::fs::symlink_metadata(&target) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Ok(m) if m.is_dir() && kind.is_dir() => continue,
            Ok(_) => {
                return Err(format!(
                    "{} is in the tarball twice; the second would replace the first",
                    rel.display()
                ))
            }
            Err(e) => return Err(format!("{}: {e}", target.display())),
        }
        entry
            .unpack(&target)
            .map_err(|e| format!("{}: {}", rel.display(), e))?;
    }
    Ok(())
}

/// Creates the folders `names` below `dest` one by one, refusing to go through anything that
/// is not a real folder (a link an earlier entry made could point anywhere).
fn make_parents(dest: &Path, names: &[std::ffi::OsString]) -> Result<PathBuf, String> {
    let mut at = dest.to_path_buf();
    for n in names {
        at.push(n);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "{} is not a folder (a link or a file), so nothing is unpacked below it",
                    at.display()
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&at).map_err(|e| format!("{}: {e}", at.display()))?
            }
            Err(e) => return Err(format!("{}: {e}", at.display())),
        }
    }
    Ok(at)
}

/// Whether a relative link in folder `dir` (names below the tree's root) resolves, read
/// lexically, to a path inside the tree.
fn link_stays_inside(dir: &[std::ffi::OsString], link: &Path) -> bool {
    let mut depth = dir.len();
    for c in link.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                if depth == 0 {
                    return false;
                }
                depth -= 1;
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Applies `debian/patches/series` (if any; `debian.series` first, as dpkg-source reads it)
/// with `patch -p1`, no fuzz, in order.
fn apply_series(tree: &Path) -> Result<Vec<String>, String> {
    let patches = tree.join("debian/patches");
    let series = ["debian.series", "series"]
        .iter()
        .map(|n| patches.join(n))
        .find(|p| p.is_file())
        .unwrap_or_else(|| patches.join("series"));
    let text = match std::fs::read_to_string(&series) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", series.display())),
    };
    let mut applied = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let name = words.next().expect("non-empty line");
        let level = match words.next() {
            None => "-p1".to_string(),
            Some(p) if p.starts_with("-p") && p[2..].parse::<u8>().is_ok() => p.to_string(),
            Some(other) => {
                return Err(format!(
                    "debian/patches/series: `{other}` after {name} is not a -pN option"
                ))
            }
        };
        if name.contains("..") || name.starts_with('/') {
            return Err(format!(
                "debian/patches/series names {name}, outside debian/patches"
            ));
        }
        let file = patches.join(name);
        // Only PATH from the caller: POSIXLY_CORRECT, VERSION_CONTROL and PATCH_GET change
        // what patch does. -E removes files a patch empties, as dpkg-source has it.
        let out = Command::new("patch")
            .arg(&level)
            .args([
                "--fuzz=0",
                "--forward",
                "--batch",
                "--no-backup-if-mismatch",
                "-E",
            ])
            .arg("-i")
            .arg(&file)
            .current_dir(tree)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LC_ALL", "C")
            .output()
            .map_err(|e| format!("cannot run `patch` ({e}); install it: apt-get install patch"))?;
        if !out.status.success() {
            return Err(format!(
                "debian/patches/{name} does not apply: {}{}",
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        applied.push(name.to_string());
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tarball_kinds_follow_the_3_0_quilt_names() {
        assert_eq!(tarball_kind("iptables_1.8.9.orig.tar.xz"), Some("orig"));
        assert_eq!(
            tarball_kind("iptables_1.8.9-2.debian.tar.xz"),
            Some("debian")
        );
        assert_eq!(tarball_kind("x_1.0.orig-extra.tar.gz"), None);
        assert_eq!(tarball_kind("iptables_1.8.9-2.dsc"), None);
    }

    #[test]
    fn dsc_fields_and_checksums_are_read_from_a_signed_dsc() {
        let dsc = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nFormat: 3.0 (quilt)\nSource: x\nChecksums-Sha256:\n aa 10 x_1.orig.tar.xz\n bb 20 x_1-1.debian.tar.xz\nFiles:\n cc 10 x_1.orig.tar.xz\n";
        assert_eq!(dsc_field(dsc, "Format"), Some("3.0 (quilt)"));
        assert_eq!(
            dsc_checksums(dsc),
            vec![
                ("aa".into(), 10, "x_1.orig.tar.xz".into()),
                ("bb".into(), 20, "x_1-1.debian.tar.xz".into())
            ]
        );
    }

    fn tar_xz(entries: &[(&str, &[u8])], link: Option<(&str, &str)>) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, *data).unwrap();
        }
        if let Some((path, target)) = link {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, path, target).unwrap();
        }
        xz(b.into_inner().unwrap())
    }

    fn xz(raw: Vec<u8>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = xz2::write::XzEncoder::new(&mut out, 1);
        std::io::Write::write_all(&mut enc, &raw).unwrap();
        enc.finish().unwrap();
        out
    }

    /// What `unpack_tarball` would be without its checks: the top folder stripped, parents
    /// created, each entry written with `Entry::unpack` at the joined path. `Archive::unpack`
    /// and `Entry::unpack_in` are not used because they refuse these archives themselves
    /// (tar 0.4 checks the canonical parent); `Entry::unpack` is what `unpack_tarball` calls.
    fn unpack_without_checks(xz_bytes: &[u8], dest: &Path) {
        let mut archive = tar::Archive::new(xz2::read::XzDecoder::new(xz_bytes));
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let rel: PathBuf = entry.path().unwrap().components().skip(1).collect();
            let target = dest.join(rel);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            entry.unpack(&target).unwrap();
        }
    }

    fn symlink_entry(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &Path) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, path, target).unwrap();
    }

    fn file_entry(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, data).unwrap();
    }

    #[test]
    fn a_file_written_through_a_link_out_of_the_tree_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        // A link to a folder outside (say /etc/cron.d), then a file through the link.
        let archive = {
            let mut b = tar::Builder::new(Vec::new());
            file_entry(&mut b, "x-1/a.c", b"int a;");
            symlink_entry(&mut b, "x-1/l", &victim);
            file_entry(&mut b, "x-1/l/pwned", b"x");
            xz(b.into_inner().unwrap())
        };
        // The attack works: unpacked without the checks, the file lands in the victim folder.
        let naive = dir.path().join("naive");
        unpack_without_checks(&archive, &naive);
        assert_eq!(std::fs::read(victim.join("pwned")).unwrap(), b"x");
        std::fs::remove_file(victim.join("pwned")).unwrap();
        // The same archive is refused at the link, before anything is written through it.
        let dest = dir.path().join("tree");
        std::fs::create_dir(&dest).unwrap();
        let e = unpack_tarball(&archive, "x.orig.tar.xz", &dest, true, None).unwrap_err();
        assert!(
            e.starts_with("x-1/l links to ") && e.ends_with("outside the tree"),
            "{e}"
        );
        assert!(!victim.join("pwned").exists());
        // The link itself is not left behind either (symlink_metadata: `exists` would follow it).
        assert!(dest.join("l").symlink_metadata().is_err());
    }

    #[test]
    fn unpack_strips_the_top_folder_and_refuses_links_out_of_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let ok = tar_xz(&[("x-1/a.c", b"int a;"), ("x-1/sub/b.c", b"int b;")], None);
        unpack_tarball(&ok, "x.orig.tar.xz", dir.path(), true, None).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("sub/b.c")).unwrap(),
            b"int b;"
        );
        let two_tops = tar_xz(&[("x-1/a.c", b""), ("y/b.c", b"")], None);
        let fresh = tempfile::tempdir().unwrap();
        let e = unpack_tarball(&two_tops, "x.orig.tar.xz", fresh.path(), true, None).unwrap_err();
        assert!(e.contains("not one top-level folder"), "{e}");
        let escape = tar_xz(&[("x-1/a.c", b"")], Some(("x-1/l", "../../etc/passwd")));
        let fresh = tempfile::tempdir().unwrap();
        let e = unpack_tarball(&escape, "x.orig.tar.xz", fresh.path(), true, None).unwrap_err();
        assert!(e.contains("outside the tree"), "{e}");
        let absolute = tar_xz(&[("x-1/a.c", b"")], Some(("x-1/l", "/etc/passwd")));
        let fresh = tempfile::tempdir().unwrap();
        let e = unpack_tarball(&absolute, "x.orig.tar.xz", fresh.path(), true, None).unwrap_err();
        assert!(e.contains("outside the tree"), "{e}");
    }

    #[test]
    fn unpack_never_writes_outside_the_tree() {
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("tree");
        std::fs::create_dir(&dest).unwrap();
        // A chain of links that each look harmless: d/up -> .. (the tree), then up/esc -> ..
        // (which would be the tree's parent), then a file through both.
        let chain = {
            let mut b = tar::Builder::new(Vec::new());
            let link = |b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str| {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, path, target).unwrap();
            };
            link(&mut b, "x-1/d/up", "..");
            link(&mut b, "x-1/d/up/esc", "..");
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, "x-1/d/up/esc/pwned", &b"x"[..])
                .unwrap();
            xz(b.into_inner().unwrap())
        };
        // The attack works: unpacked without the checks into a folder of its own, the file
        // lands beside that folder, outside it.
        let naive = tempfile::tempdir().unwrap();
        unpack_without_checks(&chain, &naive.path().join("tree"));
        assert_eq!(std::fs::read(naive.path().join("pwned")).unwrap(), b"x");
        // Each link stays inside on its own, so the link check passes them; the second one is
        // refused because its parent (`d/up`) is a link, not a folder.
        let e = unpack_tarball(&chain, "x.orig.tar.xz", &dest, true, None).unwrap_err();
        assert!(e.contains("is not a folder"), "{e}");
        assert!(!dir.path().join("pwned").exists() && !dest.join("pwned").exists());
        // Paths that climb or start at the root are refused before anything is written; the
        // tar crate's builder will not write them, so the header's name field is set by hand.
        let evil_archive = |evil: &str| {
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_mode(0o644);
            h.as_gnu_mut().unwrap().name[..evil.len()].copy_from_slice(evil.as_bytes());
            h.set_cksum();
            let mut b = tar::Builder::new(Vec::new());
            b.append(&h, &b"x"[..]).unwrap();
            xz(b.into_inner().unwrap())
        };
        // The climbing one works without the checks: below `naive/a/tree`, `x-1` stripped,
        // `../../pwned` is `naive/pwned`. (`/pwned` is not tried that way: it would write to
        // the test machine's root.)
        let naive = tempfile::tempdir().unwrap();
        let naive_dest = naive.path().join("a/tree");
        std::fs::create_dir_all(&naive_dest).unwrap();
        unpack_without_checks(&evil_archive("x-1/../../pwned"), &naive_dest);
        assert_eq!(std::fs::read(naive.path().join("pwned")).unwrap(), b"x");
        // The project's unpacker gets the same shape: where the climbing entry would land is
        // `outside/pwned`, checked after both are refused.
        let evil_dest = outside.path().join("a/tree");
        std::fs::create_dir_all(&evil_dest).unwrap();
        for evil in ["x-1/../../pwned", "/pwned"] {
            let raw = evil_archive(evil);
            let e = unpack_tarball(&raw, "x.orig.tar.xz", &evil_dest, true, None).unwrap_err();
            assert!(e.contains("leaves the tree"), "{evil}: {e}");
        }
        assert!(!outside.path().join("pwned").exists());
        // The Debian tarball may only add debian/.
        let upstream_file = tar_xz(&[("debian/rules", b""), ("configure", b"evil")], None);
        let e = unpack_tarball(
            &upstream_file,
            "x.debian.tar.xz",
            &dest,
            false,
            Some("debian"),
        )
        .unwrap_err();
        assert!(e.contains("outside debian/"), "{e}");
        // A hard link is refused whatever it names.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        b.append_link(&mut h, "x-1/h", "x-1/a").unwrap();
        let e = unpack_tarball(
            &xz(b.into_inner().unwrap()),
            "x.orig.tar.xz",
            &dest,
            true,
            None,
        )
        .unwrap_err();
        assert!(e.contains("only files, folders and symbolic links"), "{e}");
    }

    #[test]
    fn series_applies_in_order_and_a_failing_patch_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path();
        std::fs::create_dir_all(tree.join("debian/patches")).unwrap();
        std::fs::write(tree.join("f.txt"), "one\ntwo\n").unwrap();
        std::fs::write(
            tree.join("debian/patches/01.patch"),
            "--- a/f.txt\n+++ b/f.txt\n@@ -1,2 +1,2 @@\n-one\n+uno\n two\n",
        )
        .unwrap();
        std::fs::write(
            tree.join("debian/patches/02.patch"),
            "--- a/f.txt\n+++ b/f.txt\n@@ -1,2 +1,2 @@\n uno\n-two\n+dos\n",
        )
        .unwrap();
        std::fs::write(
            tree.join("debian/patches/series"),
            "# order\n01.patch\n02.patch -p1\n",
        )
        .unwrap();
        assert_eq!(apply_series(tree).unwrap(), ["01.patch", "02.patch"]);
        assert_eq!(
            std::fs::read_to_string(tree.join("f.txt")).unwrap(),
            "uno\ndos\n"
        );
        // Applying again finds the changes already made: a patch that does not apply fails.
        let e = apply_series(tree).unwrap_err();
        assert!(e.contains("01.patch does not apply"), "{e}");
    }
}
