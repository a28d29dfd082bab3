//! A POSIX (pax) tar writer for a root filesystem [`Manifest`], deterministic by construction:
//!
//! - entries in sorted path order (a directory before its contents), the root itself omitted;
//! - owners numeric from the manifest, user and group names empty, so an extractor running with
//!   `--numeric-owner` or without a matching /etc/passwd gets the same ids;
//! - mtimes clamped to `SOURCE_DATE_EPOCH`;
//! - a pax extended header only where ustar cannot say it: a path or link target that does not
//!   fit, an id or size out of octal range, or extended attributes, which are written as
//!   `SCHILY.xattr.<name>` records (the convention GNU tar and libarchive read back), so
//!   `security.capability` survives;
//! - a pax header is named `PaxHeaders/<file name>` (GNU tar puts a process id there);
//! - hard links: the first name in path order carries the data, later names link to it, so an
//!   extractor never meets a link before its target.
//!
//! Why not the `tar` crate's `Builder` (0.4.46, which the tree uses to read archives): its
//! `append_data`/`append_link` store a path or link target that does not fit the header as a
//! GNU `././@LongLink` entry, not as a pax record; its `append_pax_extensions` writes the pax
//! header with an empty name, empty mode and owner fields and mtime 0 (here: `PaxHeaders/NAME`,
//! 0644, 0:0 and the entry's clamped mtime); and `finish` ends the archive with two zero blocks,
//! without padding to the 20-block record. Getting these bytes from it would mean building
//! every header here and handing it to the raw `append`, which then only adds the checksum and
//! the block padding; otherwise the WSL rootfs (and the `.wsl` file, the same bytes) would
//! change. The tests read the written archives back with the crate.

use crate::manifest::{Entry, EntryKind, Manifest, ManifestError};
use std::collections::HashMap;
use std::io::{self, Write};

const BLOCK: usize = 512;
/// Archives are padded to a multiple of the default POSIX record size (20 blocks).
const RECORD: u64 = 20 * BLOCK as u64;

#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("the root filesystem is inconsistent: {0}")]
    Manifest(#[from] ManifestError),
    #[error("{path}: hard link to {target}, which is not a regular file in the image")]
    DanglingLink { path: String, target: String },
    #[error(transparent)]
    Io(#[from] io::Error),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TarStats {
    pub entries: u64,
    pub pax_headers: u64,
    pub hardlinks: u64,
    pub bytes: u64,
}

/// Writes `manifest` as a tar archive to `out` (uncompressed; wrap `out` to compress).
pub fn write_tar<W: Write>(manifest: &Manifest, epoch: u64, out: W) -> Result<TarStats, TarError> {
    manifest.validate()?;
    let mut w = Counting {
        inner: out,
        written: 0,
    };
    let mut stats = TarStats::default();
    // Canonical file path -> archive name that carried its data.
    let mut first_name: HashMap<&str, String> = HashMap::new();
    for (path, entry) in manifest.iter() {
        if path == "/" {
            continue;
        }
        let name = path.trim_start_matches('/').to_string();
        let (meta, kind) = match &entry.kind {
            EntryKind::Hardlink(target) => {
                let file = manifest
                    .get(target)
                    .filter(|e| matches!(e.kind, EntryKind::File(_)))
                    .ok_or_else(|| TarError::DanglingLink {
                        path: path.to_string(),
                        target: target.clone(),
                    })?;
                (file, Some(target.as_str()))
            }
            EntryKind::File(_) => (entry, Some(path)),
            _ => (entry, None),
        };
        let header = match kind {
            Some(inode) => match first_name.get(inode) {
                Some(carrier) => {
                    stats.hardlinks += 1;
                    Header::new(&name, meta, epoch, Type::Hardlink(carrier.clone()))
                }
                None => {
                    first_name.insert(inode, name.clone());
                    Header::new(&name, meta, epoch, Type::File)
                }
            },
            None => Header::new(&name, meta, epoch, Type::Other),
        };
        stats.pax_headers += header.write(&mut w)? as u64;
        stats.entries += 1;
    }
    // End of archive: two zero blocks, then padding to a whole record.
    w.write_all(&[0u8; 2 * BLOCK])?;
    let pad = (RECORD - w.written % RECORD) % RECORD;
    w.write_all(&vec![0u8; pad as usize])?;
    w.flush()?;
    stats.bytes = w.written;
    Ok(stats)
}

enum Type {
    File,
    Hardlink(String),
    Other,
}

struct Header<'a> {
    name: String,
    entry: &'a Entry,
    mtime: u64,
    typeflag: u8,
    link: String,
    data: &'a [u8],
    dev: (u32, u32),
}

impl<'a> Header<'a> {
    fn new(name: &str, entry: &'a Entry, epoch: u64, t: Type) -> Header<'a> {
        let mut h = Header {
            name: name.to_string(),
            entry,
            mtime: entry.mtime.min(epoch),
            typeflag: b'0',
            link: String::new(),
            data: &[],
            dev: (0, 0),
        };
        match (t, &entry.kind) {
            (Type::Hardlink(to), _) => {
                h.typeflag = b'1';
                h.link = to;
            }
            (Type::File, EntryKind::File(blob)) => h.data = blob.as_slice(),
            (_, EntryKind::Dir) => {
                h.typeflag = b'5';
                h.name.push('/');
            }
            (_, EntryKind::Symlink(target)) => {
                h.typeflag = b'2';
                h.link = target.clone();
            }
            (_, EntryKind::CharDevice { major, minor }) => {
                h.typeflag = b'3';
                h.dev = (*major, *minor);
            }
            (_, EntryKind::BlockDevice { major, minor }) => {
                h.typeflag = b'4';
                h.dev = (*major, *minor);
            }
            (_, EntryKind::Fifo) => h.typeflag = b'6',
            (_, EntryKind::File(_) | EntryKind::Hardlink(_)) => {
                unreachable!("files and links are typed by the caller")
            }
        }
        h
    }

    /// Writes the (pax +) ustar header and the data; returns whether a pax header was needed.
    fn write<W: Write>(&self, w: &mut W) -> io::Result<bool> {
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let split = split_name(&self.name);
        if split.is_none() {
            pax.push(("path".into(), self.name.as_bytes().to_vec()));
        }
        if self.link.len() > 100 {
            pax.push(("linkpath".into(), self.link.as_bytes().to_vec()));
        }
        const MAX_ID: u64 = 0o7_777_777;
        const MAX_SIZE: u64 = 0o77_777_777_777;
        if u64::from(self.entry.uid) > MAX_ID {
            pax.push(("uid".into(), self.entry.uid.to_string().into_bytes()));
        }
        if u64::from(self.entry.gid) > MAX_ID {
            pax.push(("gid".into(), self.entry.gid.to_string().into_bytes()));
        }
        if self.data.len() as u64 > MAX_SIZE {
            pax.push(("size".into(), self.data.len().to_string().into_bytes()));
        }
        if self.mtime > MAX_SIZE {
            pax.push(("mtime".into(), self.mtime.to_string().into_bytes()));
        }
        for (k, v) in &self.entry.xattrs {
            pax.push((format!("SCHILY.xattr.{k}"), v.clone()));
        }

        let wrote_pax = !pax.is_empty();
        if wrote_pax {
            let records = pax_records(&pax);
            let base = self
                .name
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or("");
            let pax_name = truncate(&format!("PaxHeaders/{base}"), 100);
            let mut h = ustar(
                (String::new(), pax_name),
                0o644,
                (0, 0),
                records.len() as u64,
                self.mtime,
                b'x',
                "",
                (0, 0),
            );
            checksum(&mut h);
            w.write_all(&h)?;
            write_padded(w, &records)?;
        }
        let (prefix, name) = split.unwrap_or_else(|| (String::new(), truncate(&self.name, 100)));
        let mut h = ustar(
            (prefix, name),
            self.entry.mode & 0o7777,
            (
                u64::from(self.entry.uid).min(MAX_ID),
                u64::from(self.entry.gid).min(MAX_ID),
            ),
            (self.data.len() as u64).min(MAX_SIZE),
            self.mtime.min(MAX_SIZE),
            self.typeflag,
            &truncate(&self.link, 100),
            self.dev,
        );
        checksum(&mut h);
        w.write_all(&h)?;
        write_padded(w, self.data)?;
        Ok(wrote_pax)
    }
}

/// Splits a name into ustar's prefix (155) and name (100) fields at a `/`, if it fits.
fn split_name(name: &str) -> Option<(String, String)> {
    if name.len() <= 100 {
        return Some((String::new(), name.to_string()));
    }
    // A directory's trailing slash belongs to the name part.
    let body = name.trim_end_matches('/');
    let slash = &name[body.len()..];
    body.match_indices('/')
        .map(|(i, _)| i)
        .find(|&i| i <= 155 && body.len() - i - 1 + slash.len() <= 100 && i + 1 < body.len())
        .map(|i| (body[..i].to_string(), format!("{}{slash}", &body[i + 1..])))
}

/// At most `max` bytes, cut on a character boundary.
fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// `"<len> <key>=<value>\n"` records, where `<len>` counts the whole record including itself.
fn pax_records(pairs: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        let rest = k.len() + v.len() + 3; // space, '=', newline
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn ustar(
    (prefix, name): (String, String),
    mode: u32,
    (uid, gid): (u64, u64),
    size: u64,
    mtime: u64,
    typeflag: u8,
    link: &str,
    (major, minor): (u32, u32),
) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], uid);
    octal(&mut h[116..124], gid);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    if matches!(typeflag, b'3' | b'4') {
        octal(&mut h[329..337], u64::from(major));
        octal(&mut h[337..345], u64::from(minor));
    }
    h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    h
}

/// Zero-padded octal digits filling the field but its last byte, which stays NUL.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&text.as_bytes()[text.len() - digits..]);
}

fn checksum(h: &mut [u8; BLOCK]) {
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(text.as_bytes());
}

fn write_padded<W: Write>(w: &mut W, data: &[u8]) -> io::Result<()> {
    w.write_all(data)?;
    let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
    w.write_all(&[0u8; BLOCK][..pad])
}

struct Counting<W: Write> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::manifest::Entry;
    use crate::testing::run_ok;
    use std::io::Read;
    use std::process::Command;

    pub(crate) const EPOCH: u64 = 1_747_699_200;

    /// Effective and permitted CAP_SETUID (bit 7) as a VFS_CAP_REVISION_2 xattr.
    pub(crate) fn cap_setuid() -> Vec<u8> {
        let mut v = vec![0u8; 20];
        v[..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
        v[4..8].copy_from_slice(&(1u32 << 7).to_le_bytes());
        v
    }

    /// A small tree with every entry kind, long names, big ids, xattrs and hard links whose
    /// canonical file sorts after one of its names.
    pub(crate) fn sample() -> Manifest {
        let mut m = Manifest::new();
        let ins = |m: &mut Manifest, p: &str, e: Entry| {
            m.insert(p, e).unwrap();
        };
        for d in ["/etc", "/usr", "/usr/bin", "/dev", "/var", "/var/lib"] {
            ins(&mut m, d, Entry::dir(0o755).with_mtime(EPOCH + 999));
        }
        ins(
            &mut m,
            "/etc/hostname",
            Entry::file("eci\n", 0o644).with_mtime(EPOCH - 10),
        );
        ins(
            &mut m,
            "/usr/bin/newuidmap",
            Entry::file(vec![0x7f, b'E', b'L', b'F'], 0o4755)
                .with_owner(0, 0)
                // A whole VFS_CAP_REVISION_2 value (20 bytes; the kernel refuses a shorter
                // one, so GNU tar could not restore the old 8-byte sample).
                .with_xattr("security.capability", cap_setuid()),
        );
        ins(&mut m, "/usr/bin/zz-target", Entry::file("shared", 0o755));
        ins(
            &mut m,
            "/usr/bin/aa-link",
            Entry::hardlink("/usr/bin/zz-target"),
        );
        ins(&mut m, "/usr/bin/sh", Entry::symlink("dash"));
        ins(
            &mut m,
            "/dev/console",
            Entry::new(EntryKind::CharDevice { major: 5, minor: 1 }, 0o600),
        );
        ins(&mut m, "/dev/initctl", Entry::new(EntryKind::Fifo, 0o600));
        ins(
            &mut m,
            "/var/lib/owned-by-subuid",
            Entry::file("x", 0o600).with_owner(100_000_000, 100_000_000),
        );
        let deep = format!("/var/lib/{}/{}", "d".repeat(120), "f".repeat(90));
        ins(
            &mut m,
            &format!("/var/lib/{}", "d".repeat(120)),
            Entry::dir(0o700),
        );
        ins(&mut m, &deep, Entry::file("deep", 0o644));
        let very_long = format!("/var/lib/{}", "L".repeat(180));
        ins(&mut m, &very_long, Entry::symlink("t".repeat(150)));
        m
    }

    fn archive(m: &Manifest) -> (Vec<u8>, TarStats) {
        let mut out = Vec::new();
        let stats = write_tar(m, EPOCH, &mut out).unwrap();
        (out, stats)
    }

    #[test]
    fn tar_crate_reads_back_every_entry() {
        let m = sample();
        let (bytes, stats) = archive(&m);
        assert_eq!(bytes.len() as u64 % RECORD, 0);
        assert_eq!(stats.entries as usize, m.len() - 1);
        assert_eq!(stats.hardlinks, 1);
        let mut ar = ::tar::Archive::new(bytes.as_slice());
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let h = e.header().clone();
            let pax: Vec<(String, Vec<u8>)> = e
                .pax_extensions()
                .unwrap()
                .map(|ex| {
                    ex.map(|x| {
                        let x = x.unwrap();
                        (x.key().unwrap().to_string(), x.value_bytes().to_vec())
                    })
                    .collect()
                })
                .unwrap_or_default();
            let xattrs: Vec<(String, Vec<u8>)> = pax
                .iter()
                .filter_map(|(k, v)| {
                    Some((k.strip_prefix("SCHILY.xattr.")?.to_string(), v.clone()))
                })
                .collect();
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            seen.push((path.clone(), h.entry_type(), link.clone()));
            assert!(h.mtime().unwrap() <= EPOCH, "{path}");
            assert_eq!(h.username_bytes(), Some(&b""[..]), "{path}");
            match path.as_str() {
                "usr/bin/newuidmap" => {
                    assert_eq!(h.mode().unwrap(), 0o4755);
                    assert_eq!(xattrs, [("security.capability".into(), cap_setuid())]);
                }
                "usr/bin/aa-link" => assert_eq!(data, b"shared"),
                "usr/bin/zz-target" => {
                    assert!(h.entry_type().is_hard_link());
                    assert_eq!(link.as_deref(), Some("usr/bin/aa-link"));
                }
                "var/lib/owned-by-subuid" => {
                    // Beyond ustar's 7 octal digits: the pax records carry the real ids.
                    assert!(
                        pax.contains(&("uid".into(), b"100000000".to_vec())),
                        "{pax:?}"
                    );
                    assert!(
                        pax.contains(&("gid".into(), b"100000000".to_vec())),
                        "{pax:?}"
                    );
                }
                "dev/console" => {
                    assert_eq!(h.device_major().unwrap(), Some(5));
                    assert_eq!(h.device_minor().unwrap(), Some(1));
                }
                "etc/hostname" => assert_eq!(h.mtime().unwrap(), EPOCH - 10),
                _ => {}
            }
        }
        let names: Vec<&str> = seen.iter().map(|(p, _, _)| p.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "entries come in path order");
        assert!(names.contains(&format!("var/lib/{}/{}", "d".repeat(120), "f".repeat(90)).as_str()));
        let long = seen
            .iter()
            .find(|(p, _, _)| p.starts_with("var/lib/LLL"))
            .unwrap();
        assert_eq!(long.0.len(), "var/lib/".len() + 180);
        assert_eq!(long.2.as_deref(), Some("t".repeat(150).as_str()));
    }

    #[test]
    fn same_manifest_same_bytes() {
        let (a, _) = archive(&sample());
        let (b, _) = archive(&sample());
        assert!(a == b);
        let mut later = Vec::new();
        write_tar(&sample(), EPOCH + 1, &mut later).unwrap();
        assert!(a != later, "the clamp uses the epoch");
    }

    #[test]
    fn pax_record_lengths_count_themselves() {
        let r = pax_records(&[("path".into(), b"x".to_vec())]);
        assert_eq!(r, b"9 path=x\n");
        let v = vec![b'a'; 91]; // record crosses from 2 to 3 digits
        let r = pax_records(&[("path".into(), v)]);
        assert_eq!(&r[..4], b"101 ");
        assert_eq!(r.len(), 101);
    }

    /// GNU tar is an independent reader; it must list the archive without warnings, with the
    /// numeric owners, and restore file capabilities.
    #[test]
    fn gnu_tar_lists_and_extracts_it() {
        if !eci_test_support::prerequisite(
            eci_test_support::have("tar"),
            "GNU tar is not installed",
        ) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rootfs.tar");
        std::fs::write(&path, archive(&sample()).0).unwrap();
        let out = Command::new("tar")
            .args(["--numeric-owner", "-tvf"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && err.is_empty(), "{err}");
        assert!(text.contains("100000000/100000000"), "{text}");
        assert!(text.contains("crw------- 0/0"), "{text}");
        assert!(
            text.contains("usr/bin/zz-target link to usr/bin/aa-link"),
            "{text}"
        );

        let root = dir.path().join("x");
        std::fs::create_dir(&root).unwrap();
        run_ok(
            Command::new("tar")
                .args(["--xattrs", "--xattrs-include=*", "--no-same-owner", "-xf"])
                .arg(&path)
                .arg("-C")
                .arg(&root)
                .args(["usr", "etc"]),
        );
        assert_eq!(
            std::fs::read_to_string(root.join("usr/bin/zz-target")).unwrap(),
            "shared"
        );
        let caps = Command::new("getfattr")
            .args(["--absolute-names", "-n", "security.capability", "-e", "hex"])
            .arg(root.join("usr/bin/newuidmap"))
            .output();
        // Restoring security.* needs CAP_SETFCAP and getfattr (package attr): CI runs as
        // root with both, a laptop may have neither.
        let restored = caps.as_ref().is_ok_and(|o| o.status.success());
        if eci_test_support::prerequisite(
            restored,
            "capability check: getfattr missing (apt-get install attr) or not privileged",
        ) {
            let t = String::from_utf8_lossy(&caps.unwrap().stdout).to_string();
            assert!(
                t.contains("0x0100000280000000000000000000000000000000"),
                "{t}"
            );
        }
    }
}
