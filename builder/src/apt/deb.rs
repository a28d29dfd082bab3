//! Reading Debian binary packages in-process, without dpkg and without root.
//!
//! A `.deb` is an `ar` archive holding `debian-binary` ("2.0\n"), `control.tar[.gz|.xz|.zst]` and
//! `data.tar[.gz|.xz|.lzma|.zst]` (deb(5)). Everything is read from an in-memory byte slice:
//! members are borrowed sub-slices and `data.tar` is streamed through its decompressor straight
//! into [`Entry`] values, so file contents are decompressed once and never copied afterwards.
//!
//! Unpacking follows dpkg where it matters for the resulting tree:
//! - Directories: first writer wins. A directory entry for a path that is already a directory,
//!   or a symlink resolving to one (merged /usr: `/lib -> usr/lib`), keeps the existing entry
//!   and its metadata.
//! - Everything else: last writer wins; a later package's file replaces an earlier one. A
//!   non-directory over an existing directory is an error.
//! - Paths are followed through symlinked parent directories, as dpkg's extraction does.
//!
//! For parallel builds, [`read_deb`] (pure, can run on many packages at once) is split from
//! [`DebContents::apply_to`] (sequential, in package order, so precedence stays deterministic);
//! [`unpack_into`] does both.
//!
//! Tar archives are walked in raw mode and extension headers are decoded here: PAX records are
//! length-prefixed and binary xattr values (file capabilities) may contain newlines, which a
//! line-based PAX reader silently mangles.

use std::collections::BTreeMap;
use std::io::{self, BufReader, Read};

use crate::manifest::{self, Blob, Entry, EntryKind, Manifest, ManifestError};

const AR_MAGIC: &[u8] = b"!<arch>\n";
const AR_HEADER_LEN: usize = 60;
/// Control-archive files we keep are small text files; more than this is a broken package.
const MAX_CONTROL_MEMBER: u64 = 16 << 20;
/// GNU long names/links and PAX headers beyond this are not paths but garbage.
const MAX_EXTENSION_HEADER: u64 = 1 << 20;
/// Decompressed-stream read buffer; large enough that per-call overhead vanishes.
const STREAM_BUFFER: usize = 256 << 10;

/// Control-archive members that dpkg runs or interprets, in the order dpkg documents them.
pub const MAINTAINER_SCRIPTS: [&str; 6] = [
    "preinst", "postinst", "prerm", "postrm", "config", "triggers",
];

#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error(
        "{deb}: not a Debian package (no \"!<arch>\" signature); check that the file is a .deb \
         and that its download completed"
    )]
    NotAnArchive { deb: String },
    #[error("{deb}: malformed ar archive at byte {offset}: {reason}; the file is corrupt or truncated, fetch it again")]
    BadArchive {
        deb: String,
        offset: usize,
        reason: String,
    },
    #[error(
        "{deb}: missing ar member {member}; a .deb holds debian-binary, control.tar* and data.tar*"
    )]
    MissingMember { deb: String, member: &'static str },
    #[error("{deb}: debian-binary says {found:?}, expected format version \"2.0\"")]
    BadDebianBinary { deb: String, found: String },
    #[error(
        "{deb}: member {member} uses an unsupported compression; supported are none, gzip, xz, \
         lzma and zstd"
    )]
    UnsupportedCompression { deb: String, member: String },
    #[error("{deb}: cannot read {member}: {source}; the package is corrupt or truncated, fetch it again")]
    Corrupt {
        deb: String,
        member: String,
        #[source]
        source: io::Error,
    },
    #[error("{deb}: {member}: entry {path:?}: {reason}")]
    BadEntry {
        deb: String,
        member: String,
        path: String,
        reason: String,
    },
    #[error("{deb}: bad control file: {reason}")]
    BadControl { deb: String, reason: String },
    #[error("{deb}: cannot place {path:?} in the root filesystem: {source}")]
    Manifest {
        deb: String,
        path: String,
        #[source]
        source: ManifestError,
    },
}

/// What `control.tar` says about a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebControl {
    /// Fields of the `control` file in file order. Continuation lines are joined with `\n`,
    /// each without its first (indenting) whitespace character, so `Description` keeps its
    /// `.` paragraph separators and verbatim indentation.
    pub fields: Vec<(String, String)>,
    /// Names of the [`MAINTAINER_SCRIPTS`] present, in that order.
    pub maintainer_scripts: Vec<String>,
    /// Absolute paths listed in `conffiles`; `remove-on-upgrade` entries are left out because
    /// the package does not ship them.
    pub conffiles: Vec<String>,
    scripts: BTreeMap<String, Vec<u8>>,
}

impl DebControl {
    /// Value of a field; names compare case-insensitively as in deb822.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn package(&self) -> &str {
        self.field("Package").expect("checked when parsed")
    }

    pub fn version(&self) -> &str {
        self.field("Version").expect("checked when parsed")
    }

    pub fn architecture(&self) -> &str {
        self.field("Architecture").expect("checked when parsed")
    }

    /// Contents of a maintainer script (or `triggers` file), if the package has it.
    pub fn script(&self, name: &str) -> Option<&[u8]> {
        self.scripts.get(name).map(Vec::as_slice)
    }
}

/// A package read into memory, ready to be applied to a [`Manifest`].
#[derive(Debug, Clone)]
pub struct DebContents {
    source: String,
    pub control: DebControl,
    entries: Vec<(String, Entry)>,
}

impl DebContents {
    /// The package file name used in error messages.
    pub fn source_name(&self) -> &str {
        &self.source
    }

    /// `data.tar` entries in archive order, with normalised (not yet symlink-resolved) paths.
    pub fn entries(&self) -> &[(String, Entry)] {
        &self.entries
    }

    /// Adds the entries to `manifest` with dpkg's precedence rules (see the module docs).
    pub fn apply_to(self, manifest: &mut Manifest) -> Result<DebControl, DebError> {
        for (path, entry) in self.entries {
            if entry.is_dir() && keeps_existing_dir(manifest, &path) {
                continue;
            }
            manifest
                .insert(&path, entry)
                .map_err(|source| DebError::Manifest {
                    deb: self.source.clone(),
                    path,
                    source,
                })?;
        }
        Ok(self.control)
    }
}

fn keeps_existing_dir(manifest: &Manifest, path: &str) -> bool {
    match manifest.get(path).map(|e| &e.kind) {
        Some(EntryKind::Dir) => true,
        Some(EntryKind::Symlink(_)) => manifest.resolve(path).is_ok_and(|r| r.entry.is_dir()),
        _ => false,
    }
}

/// Unpacks `data.tar` of a package into `manifest` and returns its control information.
///
/// `source_name` (usually the file name) names the package in errors.
pub fn unpack_into(
    deb_bytes: &[u8],
    source_name: &str,
    manifest: &mut Manifest,
) -> Result<DebControl, DebError> {
    read_deb(deb_bytes, source_name)?.apply_to(manifest)
}

/// Reads control information and all of `data.tar` without touching a manifest.
pub fn read_deb(deb_bytes: &[u8], source_name: &str) -> Result<DebContents, DebError> {
    let parts = DebParts::split(deb_bytes, source_name)?;
    let control = parse_control_member(&parts.control, source_name)?;
    let mut entries = Vec::new();
    walk_tar(&parts.data, source_name, |meta, body| {
        entries.push(to_manifest_entry(meta, body, source_name, parts.data.name)?);
        Ok(())
    })?;
    Ok(DebContents {
        source: source_name.to_owned(),
        control,
        entries,
    })
}

/// Reads only the control information (cheap: `data.tar` is not decompressed).
pub fn read_control(deb_bytes: &[u8], source_name: &str) -> Result<DebControl, DebError> {
    let parts = DebParts::split(deb_bytes, source_name)?;
    parse_control_member(&parts.control, source_name)
}

/// Returns the contents of the regular files in `data.tar` whose normalised path (e.g.
/// "/boot/config-6.1.0-18-amd64") satisfies `want`, in archive order.
///
/// Paths are as written in the archive, not resolved through symlinks; hard links are not
/// followed.
pub fn read_data_file(
    deb_bytes: &[u8],
    source_name: &str,
    want: impl Fn(&str) -> bool,
) -> Result<Vec<(String, Vec<u8>)>, DebError> {
    let parts = DebParts::split(deb_bytes, source_name)?;
    let member = parts.data.name;
    let mut found = Vec::new();
    walk_tar(&parts.data, source_name, |meta, body| {
        if !matches!(
            meta.entry_type,
            tar::EntryType::Regular | tar::EntryType::Continuous
        ) {
            return Ok(());
        }
        let path = normalized(&meta.path, source_name, member)?;
        if want(&path) {
            let data = read_body(body, meta, source_name, member, u64::MAX)?;
            found.push((path, data));
        }
        Ok(())
    })?;
    Ok(found)
}

struct ArMember<'a> {
    name: &'a str,
    data: &'a [u8],
}

fn ar_members<'a>(bytes: &'a [u8], deb: &str) -> Result<Vec<ArMember<'a>>, DebError> {
    if !bytes.starts_with(AR_MAGIC) {
        return Err(DebError::NotAnArchive { deb: deb.into() });
    }
    let bad = |offset: usize, reason: String| DebError::BadArchive {
        deb: deb.into(),
        offset,
        reason,
    };
    let mut members = Vec::new();
    let mut pos = AR_MAGIC.len();
    while pos < bytes.len() {
        let header = bytes
            .get(pos..pos + AR_HEADER_LEN)
            .ok_or_else(|| bad(pos, "member header is cut short".into()))?;
        if &header[58..60] != b"`\n" {
            return Err(bad(
                pos,
                "member header lacks its \"`\\n\" terminator".into(),
            ));
        }
        let name = std::str::from_utf8(&header[..16])
            .map_err(|_| bad(pos, "member name is not ASCII".into()))?
            .trim_end_matches(' ');
        // GNU ar terminates names with '/'; dpkg-deb writes them without.
        let name = name.strip_suffix('/').unwrap_or(name);
        let size = std::str::from_utf8(&header[48..58])
            .ok()
            .map(str::trim)
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| bad(pos, format!("member {name:?} has an invalid size field")))?;
        let start = pos + AR_HEADER_LEN;
        let end = start
            .checked_add(size)
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| {
                bad(
                    pos,
                    format!(
                        "member {name:?} claims {size} bytes but only {} remain",
                        bytes.len() - start
                    ),
                )
            })?;
        members.push(ArMember {
            name,
            data: &bytes[start..end],
        });
        // Odd-sized members are followed by one '\n' of padding (possibly omitted at the end).
        pos = end + (size & 1);
    }
    Ok(members)
}

struct DebParts<'a> {
    control: ArMember<'a>,
    data: ArMember<'a>,
}

impl<'a> DebParts<'a> {
    fn split(bytes: &'a [u8], deb: &str) -> Result<Self, DebError> {
        let members = ar_members(bytes, deb)?;
        match members.first() {
            Some(m) if m.name == "debian-binary" => check_debian_binary(m.data, deb)?,
            Some(_) if members.iter().any(|m| m.name == "debian-binary") => {
                return Err(DebError::BadArchive {
                    deb: deb.into(),
                    offset: AR_MAGIC.len(),
                    reason: "debian-binary is not the first member".into(),
                })
            }
            _ => {
                return Err(DebError::MissingMember {
                    deb: deb.into(),
                    member: "debian-binary",
                })
            }
        }
        let mut control = None;
        let mut data = None;
        for member in members {
            let (slot, label) = if member.name.starts_with("control.tar") {
                (&mut control, "control.tar")
            } else if member.name.starts_with("data.tar") {
                (&mut data, "data.tar")
            } else {
                // deb(5) lets tools add members (conventionally starting with '_'); dpkg
                // ignores them too.
                continue;
            };
            if slot.is_some() {
                // Two payloads are ambiguous and a classic way to hide content from reviewers.
                return Err(DebError::BadArchive {
                    deb: deb.into(),
                    offset: 0,
                    reason: format!("more than one {label} member"),
                });
            }
            *slot = Some(member);
        }
        Ok(DebParts {
            control: control.ok_or(DebError::MissingMember {
                deb: deb.into(),
                member: "control.tar",
            })?,
            data: data.ok_or(DebError::MissingMember {
                deb: deb.into(),
                member: "data.tar",
            })?,
        })
    }
}

fn check_debian_binary(data: &[u8], deb: &str) -> Result<(), DebError> {
    let text = String::from_utf8_lossy(data);
    let version = text.lines().next().unwrap_or("").trim();
    // dpkg accepts any 2.x; the minor number has never changed the layout.
    let ok = version
        .strip_prefix("2.")
        .is_some_and(|minor| !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(DebError::BadDebianBinary {
            deb: deb.into(),
            found: text.chars().take(40).collect(),
        })
    }
}

fn decompressor<'a>(member: &ArMember<'a>, deb: &str) -> Result<Box<dyn Read + 'a>, DebError> {
    let suffix = member
        .name
        .strip_prefix("control.tar")
        .or_else(|| member.name.strip_prefix("data.tar"))
        .unwrap_or(member.name);
    let data = member.data;
    let corrupt = |source| DebError::Corrupt {
        deb: deb.into(),
        member: member.name.into(),
        source,
    };
    Ok(match suffix {
        "" => Box::new(data),
        ".gz" => Box::new(flate2::bufread::MultiGzDecoder::new(data)),
        ".xz" => Box::new(xz2::bufread::XzDecoder::new_multi_decoder(data)),
        ".lzma" => {
            let stream = xz2::stream::Stream::new_lzma_decoder(u64::MAX)
                .map_err(|e| corrupt(io::Error::other(e)))?;
            Box::new(xz2::bufread::XzDecoder::new_stream(data, stream))
        }
        ".zst" => Box::new(zstd::stream::read::Decoder::with_buffer(data).map_err(corrupt)?),
        _ => {
            return Err(DebError::UnsupportedCompression {
                deb: deb.into(),
                member: member.name.into(),
            })
        }
    })
}

/// Remembers whether the decompressed stream ran dry while tar still wanted data: a tar that
/// ends without its end-of-archive blocks has been cut short.
struct EofTracker<R> {
    inner: R,
    hit_eof: bool,
}

impl<R: Read> Read for EofTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.hit_eof = true;
        }
        Ok(n)
    }
}

type TarStream<'a> = BufReader<EofTracker<Box<dyn Read + 'a>>>;

/// One tar member with its GNU long-name and PAX extension headers applied.
struct TarMeta {
    path: String,
    entry_type: tar::EntryType,
    link: Option<String>,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
    size: u64,
    /// Major and minor number, for device entries whose header has them.
    device: Option<(u32, u32)>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

#[derive(Default)]
struct PendingExtensions {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Vec<(String, Vec<u8>)>>,
}

impl PendingExtensions {
    fn is_empty(&self) -> bool {
        self.long_name.is_none() && self.long_link.is_none() && self.pax.is_none()
    }
}

fn walk_tar<'a>(
    member: &ArMember<'a>,
    deb: &str,
    mut visit: impl FnMut(&TarMeta, &mut tar::Entry<'_, TarStream<'a>>) -> Result<(), DebError>,
) -> Result<(), DebError> {
    let name = member.name;
    let corrupt = |source: io::Error| DebError::Corrupt {
        deb: deb.into(),
        member: name.into(),
        source,
    };
    let stream = BufReader::with_capacity(
        STREAM_BUFFER,
        EofTracker {
            inner: decompressor(member, deb)?,
            hit_eof: false,
        },
    );
    let mut archive = tar::Archive::new(stream);
    let mut pending = PendingExtensions::default();
    for entry in archive.entries().map_err(corrupt)?.raw(true) {
        let mut entry = entry.map_err(corrupt)?;
        let header_path = |entry: &tar::Entry<'_, TarStream<'a>>| {
            String::from_utf8_lossy(&entry.path_bytes()).into_owned()
        };
        let read_ext = |entry: &mut tar::Entry<'_, TarStream<'a>>, what: &str| {
            let size = entry.size();
            if size > MAX_EXTENSION_HEADER {
                return Err(DebError::BadEntry {
                    deb: deb.into(),
                    member: name.into(),
                    path: String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
                    reason: format!("{what} header of {size} bytes is implausibly large"),
                });
            }
            let mut buf = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut buf).map_err(corrupt)?;
            Ok(buf)
        };
        let duplicate = |what: &str, path: String| DebError::BadEntry {
            deb: deb.into(),
            member: name.into(),
            path,
            reason: format!("two {what} headers describe the same entry"),
        };
        match entry.header().entry_type() {
            tar::EntryType::GNULongName => {
                if pending.long_name.is_some() {
                    return Err(duplicate("GNU long name", header_path(&entry)));
                }
                let mut v = read_ext(&mut entry, "GNU long name")?;
                trim_nuls(&mut v);
                pending.long_name = Some(v);
            }
            tar::EntryType::GNULongLink => {
                if pending.long_link.is_some() {
                    return Err(duplicate("GNU long link", header_path(&entry)));
                }
                let mut v = read_ext(&mut entry, "GNU long link")?;
                trim_nuls(&mut v);
                pending.long_link = Some(v);
            }
            tar::EntryType::XHeader => {
                if pending.pax.is_some() {
                    return Err(duplicate("PAX", header_path(&entry)));
                }
                let raw = read_ext(&mut entry, "PAX")?;
                let records = parse_pax(&raw).map_err(|reason| DebError::BadEntry {
                    deb: deb.into(),
                    member: name.into(),
                    path: header_path(&entry),
                    reason: format!("malformed PAX header: {reason}"),
                })?;
                pending.pax = Some(records);
            }
            // Global PAX headers only carry archive comments in practice (git archive, bsdtar);
            // per-file metadata always comes in local headers.
            tar::EntryType::XGlobalHeader => {}
            _ => {
                let ext = std::mem::take(&mut pending);
                let meta = tar_meta(&entry, ext, deb, name)?;
                visit(&meta, &mut entry)?;
            }
        }
    }
    if !pending.is_empty() {
        return Err(corrupt(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "archive ends after an extension header, without the entry it describes",
        )));
    }
    let mut stream = archive.into_inner();
    if stream.get_ref().hit_eof {
        return Err(corrupt(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "tar archive ends without its end-of-archive marker",
        )));
    }
    // Drain what follows the end marker so the decompressor verifies its trailing checksum.
    io::copy(&mut stream, &mut io::sink()).map_err(corrupt)?;
    Ok(())
}

fn trim_nuls(v: &mut Vec<u8>) {
    while v.last() == Some(&0) {
        v.pop();
    }
}

/// Parses PAX extended header records ("<len> <key>=<value>\n"), honouring the length so
/// binary values may contain any byte.
fn parse_pax(mut data: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut records = Vec::new();
    while !data.is_empty() {
        if data.iter().all(|&b| b == 0) {
            break;
        }
        let space = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or("record without a length")?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("record length is not a number")?;
        if len <= space + 1 || len > data.len() {
            return Err(format!("record length {len} is out of range"));
        }
        let record = data[space + 1..len]
            .strip_suffix(b"\n")
            .ok_or("record does not end in a newline")?;
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or("record has no '='")?;
        let key = std::str::from_utf8(&record[..eq]).map_err(|_| "record key is not UTF-8")?;
        records.push((key.to_owned(), record[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(records)
}

fn tar_meta(
    entry: &tar::Entry<'_, TarStream<'_>>,
    ext: PendingExtensions,
    deb: &str,
    member: &str,
) -> Result<TarMeta, DebError> {
    let header = entry.header();
    let mut path_bytes = ext
        .long_name
        .unwrap_or_else(|| entry.path_bytes().into_owned());
    let mut link_bytes = ext
        .long_link
        .or_else(|| entry.link_name_bytes().map(|l| l.into_owned()));
    let lossy_path = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
    let bad = |path: &[u8], reason: String| DebError::BadEntry {
        deb: deb.into(),
        member: member.into(),
        path: lossy_path(path),
        reason,
    };
    let field = |path: &[u8], what: &str, r: io::Result<u64>| {
        r.map_err(|e| bad(path, format!("unreadable {what} field: {e}")))
    };
    let mut uid = field(&path_bytes, "uid", header.uid())?;
    let mut gid = field(&path_bytes, "gid", header.gid())?;
    let mut mtime = field(&path_bytes, "mtime", header.mtime())?;
    let mode = header
        .mode()
        .map_err(|e| bad(&path_bytes, format!("unreadable mode field: {e}")))?;
    let size = entry.size();
    let mut xattrs = BTreeMap::new();
    for (key, value) in ext.pax.unwrap_or_default() {
        let number = |what: &str| {
            std::str::from_utf8(&value)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| bad(&path_bytes, format!("PAX {what} {value:?} is not a number")))
        };
        match key.as_str() {
            "path" => path_bytes = value,
            "linkpath" => link_bytes = Some(value),
            "uid" => uid = number("uid")?,
            "gid" => gid = number("gid")?,
            "mtime" => {
                // Fractional seconds ("1700000000.5") are truncated; images keep whole seconds.
                let secs = std::str::from_utf8(&value)
                    .ok()
                    .map(|s| s.split('.').next().unwrap_or(""))
                    .and_then(|s| s.parse::<i64>().ok())
                    .ok_or_else(|| bad(&path_bytes, format!("PAX mtime {value:?} is invalid")))?;
                mtime = secs.max(0) as u64;
            }
            "size" => {
                // The raw walk sizes entries from the ustar header; a differing PAX size means
                // a >8 GiB member, which no root filesystem of ours contains.
                if number("size")? != size {
                    return Err(bad(
                        &path_bytes,
                        "PAX size differs from the header size (member over 8 GiB?)".into(),
                    ));
                }
            }
            k => {
                if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(name.to_owned(), value);
                }
            }
        }
    }
    let path = String::from_utf8(path_bytes)
        .map_err(|e| bad(e.as_bytes(), "path is not valid UTF-8".into()))?;
    let link = link_bytes
        .filter(|l| !l.is_empty())
        .map(|l| {
            String::from_utf8(l)
                .map_err(|_| bad(path.as_bytes(), "link target is not valid UTF-8".into()))
        })
        .transpose()?;
    let id = |what: &str, v: u64| {
        u32::try_from(v).map_err(|_| bad(path.as_bytes(), format!("{what} {v} exceeds 32 bits")))
    };
    let device = match (header.device_major(), header.device_minor()) {
        (Ok(Some(major)), Ok(Some(minor))) => Some((major, minor)),
        _ => None,
    };
    Ok(TarMeta {
        device,
        uid: id("uid", uid)?,
        gid: id("gid", gid)?,
        entry_type: header.entry_type(),
        link,
        // Some writers put S_IF* bits into the mode field; the entry type is authoritative.
        mode: mode & manifest::PERMISSION_BITS,
        mtime,
        size,
        xattrs,
        path,
    })
}

fn normalized(path: &str, deb: &str, member: &str) -> Result<String, DebError> {
    manifest::normalize_path(path).map_err(|e| DebError::BadEntry {
        deb: deb.into(),
        member: member.into(),
        path: path.into(),
        reason: e.to_string(),
    })
}

fn read_body(
    body: &mut impl Read,
    meta: &TarMeta,
    deb: &str,
    member: &str,
    limit: u64,
) -> Result<Vec<u8>, DebError> {
    let bad = |reason: String| DebError::BadEntry {
        deb: deb.into(),
        member: member.into(),
        path: meta.path.clone(),
        reason,
    };
    if meta.size > limit {
        return Err(bad(format!(
            "is {} bytes, more than the {limit} allowed here",
            meta.size
        )));
    }
    let len = usize::try_from(meta.size).map_err(|_| bad("does not fit in memory".into()))?;
    let mut data = Vec::new();
    // Exact allocation: no regrowth copies, no slack; a lying size fails here instead of
    // aborting the process.
    data.try_reserve_exact(len)
        .map_err(|_| bad(format!("claims {len} bytes, more than memory allows")))?;
    body.take(meta.size)
        .read_to_end(&mut data)
        .map_err(|source| DebError::Corrupt {
            deb: deb.into(),
            member: member.into(),
            source,
        })?;
    if data.len() != len {
        return Err(DebError::Corrupt {
            deb: deb.into(),
            member: member.into(),
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{:?} ends after {} of {len} bytes", meta.path, data.len()),
            ),
        });
    }
    Ok(data)
}

fn to_manifest_entry(
    meta: &TarMeta,
    body: &mut impl Read,
    deb: &str,
    member: &str,
) -> Result<(String, Entry), DebError> {
    let path = normalized(&meta.path, deb, member)?;
    let bad = |reason: &str| DebError::BadEntry {
        deb: deb.into(),
        member: member.into(),
        path: meta.path.clone(),
        reason: reason.into(),
    };
    let link = || {
        meta.link
            .clone()
            .ok_or_else(|| bad("link entry without a target"))
    };
    let device = || {
        meta.device
            .ok_or_else(|| bad("device entry without readable major/minor numbers"))
    };
    let kind = match meta.entry_type {
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            EntryKind::File(Blob::new(read_body(body, meta, deb, member, u64::MAX)?))
        }
        tar::EntryType::Directory => EntryKind::Dir,
        tar::EntryType::Symlink => EntryKind::Symlink(link()?),
        tar::EntryType::Link => EntryKind::Hardlink(normalized(&link()?, deb, member)?),
        tar::EntryType::Char => {
            let (major, minor) = device()?;
            EntryKind::CharDevice { major, minor }
        }
        tar::EntryType::Block => {
            let (major, minor) = device()?;
            EntryKind::BlockDevice { major, minor }
        }
        tar::EntryType::Fifo => EntryKind::Fifo,
        other => {
            return Err(bad(&format!(
                "unsupported tar entry type {:?} ({})",
                other,
                other.as_byte() as char
            )))
        }
    };
    Ok((
        path,
        Entry {
            kind,
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            mtime: meta.mtime,
            xattrs: meta.xattrs.clone(),
        },
    ))
}

fn parse_control_member(member: &ArMember<'_>, deb: &str) -> Result<DebControl, DebError> {
    let mut control_text = None;
    let mut conffiles_text = None;
    let mut scripts = BTreeMap::new();
    walk_tar(member, deb, |meta, body| {
        if !matches!(meta.entry_type, tar::EntryType::Regular) {
            return Ok(());
        }
        let path = normalized(&meta.path, deb, member.name)?;
        let Some(name) = path.strip_prefix('/').filter(|n| !n.contains('/')) else {
            return Ok(());
        };
        let slot = match name {
            "control" => &mut control_text,
            "conffiles" => &mut conffiles_text,
            n if MAINTAINER_SCRIPTS.contains(&n) => {
                let body = read_body(body, meta, deb, member.name, MAX_CONTROL_MEMBER)?;
                scripts.insert(n.to_owned(), body);
                return Ok(());
            }
            _ => return Ok(()),
        };
        *slot = Some(read_body(body, meta, deb, member.name, MAX_CONTROL_MEMBER)?);
        Ok(())
    })?;
    let bad = |reason: String| DebError::BadControl {
        deb: deb.into(),
        reason,
    };
    let control_text =
        control_text.ok_or_else(|| bad(format!("{} has no ./control file", member.name)))?;
    let control_text =
        String::from_utf8(control_text).map_err(|_| bad("control file is not UTF-8".into()))?;
    let fields = parse_control_fields(&control_text).map_err(bad)?;
    let conffiles = match conffiles_text {
        None => Vec::new(),
        Some(text) => parse_conffiles(
            &String::from_utf8(text).map_err(|_| bad("conffiles is not UTF-8".into()))?,
        )
        .map_err(bad)?,
    };
    let control = DebControl {
        fields,
        maintainer_scripts: MAINTAINER_SCRIPTS
            .iter()
            .filter(|s| scripts.contains_key(**s))
            .map(|s| s.to_string())
            .collect(),
        conffiles,
        scripts,
    };
    for required in ["Package", "Version", "Architecture"] {
        if control.field(required).is_none_or(str::is_empty) {
            return Err(bad(format!("required field {required} is missing")));
        }
    }
    Ok(control)
}

/// Parses the single deb822 paragraph of a binary package's control file.
fn parse_control_fields(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let lineno = n + 1;
        if line.trim().is_empty() {
            if fields.is_empty() {
                continue;
            }
            break;
        }
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix([' ', '\t']) {
            let (_, value) = fields.last_mut().ok_or_else(|| {
                format!("line {lineno} continues a field but no field precedes it")
            })?;
            value.push('\n');
            value.push_str(rest.trim_end());
            continue;
        }
        let (key, value) = line
            .split_once(':')
            .ok_or_else(|| format!("line {lineno} is not \"Field: value\": {line:?}"))?;
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!("line {lineno} has an invalid field name {key:?}"));
        }
        if fields.iter().any(|(k, _)| k.eq_ignore_ascii_case(key)) {
            return Err(format!("field {key} appears twice (line {lineno})"));
        }
        fields.push((key.to_owned(), value.trim().to_owned()));
    }
    if fields.is_empty() {
        return Err("control file has no fields".into());
    }
    Ok(fields)
}

fn parse_conffiles(text: &str) -> Result<Vec<String>, String> {
    let mut paths = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        // deb-conffiles(5): an optional flag may precede the path.
        let (flag, path) = match line.split_once(char::is_whitespace) {
            Some((flag, path)) if !line.starts_with('/') => (Some(flag), path.trim()),
            _ => (None, line),
        };
        if !path.starts_with('/') {
            return Err(format!(
                "conffiles line {line:?} does not name an absolute path"
            ));
        }
        if flag != Some("remove-on-upgrade") {
            paths.push(path.to_owned());
        }
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const SUFFIXES: [&str; 5] = ["", ".gz", ".xz", ".lzma", ".zst"];

    /// VFS_CAP_REVISION_2 granting CAP_DAC_OVERRIDE|CAP_FOWNER: the permitted mask is 0x0a,
    /// a newline byte, which line-based PAX parsers corrupt.
    const CAPABILITY: [u8; 20] = [
        1, 0, 0, 2, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = AR_MAGIC.to_vec();
        for (name, data) in members {
            let header = format!(
                "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                name,
                0,
                0,
                0,
                "100644",
                data.len()
            );
            assert_eq!(header.len(), AR_HEADER_LEN);
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(data);
            if data.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    fn compress(suffix: &str, data: &[u8]) -> Vec<u8> {
        match suffix {
            "" => data.to_vec(),
            ".gz" => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            ".xz" => {
                let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            ".lzma" => {
                let opts = xz2::stream::LzmaOptions::new_preset(6).unwrap();
                let stream = xz2::stream::Stream::new_lzma_encoder(&opts).unwrap();
                let mut e = xz2::write::XzEncoder::new_stream(Vec::new(), stream);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            ".zst" => zstd::encode_all(data, 3).unwrap(),
            other => panic!("no test compressor for {other}"),
        }
    }

    /// Tar writer that keeps names byte-exact ("./usr/bin/x", as dpkg-deb writes them).
    struct Tar(tar::Builder<Vec<u8>>);

    impl Tar {
        fn new() -> Self {
            Tar(tar::Builder::new(Vec::new()))
        }

        fn header(name: &str, ty: tar::EntryType, mode: u32, size: u64) -> tar::Header {
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(ty);
            h.set_mode(mode);
            h.set_size(size);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_600_000_000);
            h
        }

        fn add(&mut self, mut h: tar::Header, data: &[u8]) -> &mut Self {
            h.set_cksum();
            self.0.append(&h, data).unwrap();
            self
        }

        fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
            self.add(Self::header(name, tar::EntryType::Directory, mode, 0), b"")
        }

        fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Self {
            let h = Self::header(name, tar::EntryType::Regular, mode, data.len() as u64);
            self.add(h, data)
        }

        fn link(&mut self, name: &str, ty: tar::EntryType, target: &str) -> &mut Self {
            let mut h = Self::header(name, ty, 0o777, 0);
            h.set_link_name_literal(target).unwrap();
            self.add(h, b"")
        }

        fn device(
            &mut self,
            name: &str,
            ty: tar::EntryType,
            mode: u32,
            dev: (u32, u32),
        ) -> &mut Self {
            let mut h = Self::header(name, ty, mode, 0);
            h.set_device_major(dev.0).unwrap();
            h.set_device_minor(dev.1).unwrap();
            self.add(h, b"")
        }

        fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
            self.0
                .append_pax_extensions(records.iter().copied())
                .unwrap();
            self
        }

        fn finish(self) -> Vec<u8> {
            self.0.into_inner().unwrap()
        }
    }

    fn control_tar() -> Vec<u8> {
        let control = "Package: eci-test\nVersion: 1.2-3\nArchitecture: amd64\n\
                       Maintainer: Nobody <nobody@example.org>\nDepends: libc6 (>= 2.36)\n\
                       Description: test package\n long line one\n .\n   indented\n";
        let mut t = Tar::new();
        t.dir("./", 0o755)
            .file("./control", 0o644, control.as_bytes())
            .file("./md5sums", 0o644, b"00  usr/bin/tool\n")
            .file(
                "./conffiles",
                0o644,
                b"/etc/foo.conf\nremove-on-upgrade /etc/old.conf\n",
            )
            .file("./postinst", 0o755, b"#!/bin/sh\nexit 0\n")
            .file("./prerm", 0o755, b"#!/bin/sh\n");
        t.finish()
    }

    fn data_tar() -> Vec<u8> {
        let long_name = format!("./usr/share/{}/file", "d".repeat(120));
        let mut t = Tar::new();
        t.dir("./", 0o755)
            .dir("./usr/", 0o755)
            .dir("./usr/bin/", 0o755)
            .file("./usr/bin/tool", 0o4755, b"setuid tool")
            .link(
                "./usr/bin/tool-again",
                tar::EntryType::Link,
                "./usr/bin/tool",
            )
            .link("./usr/bin/sh", tar::EntryType::Symlink, "dash")
            .pax(&[("SCHILY.xattr.security.capability", &CAPABILITY[..])])
            .file("./usr/bin/ping", 0o755, b"ping")
            .dir("./dev/", 0o755)
            .device("./dev/null", tar::EntryType::Char, 0o666, (1, 3))
            .device("./dev/sda", tar::EntryType::Block, 0o660, (8, 0))
            .device("./run/initctl", tar::EntryType::Fifo, 0o600, (0, 0));
        let mut conf = Tar::header("./etc/foo.conf", tar::EntryType::Regular, 0o640, 3);
        conf.set_uid(1000);
        conf.set_gid(42);
        conf.set_mtime(1_700_000_000);
        t.add(conf, b"a=1");
        // Long names need GNU extension headers; let the tar crate emit them.
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(4);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        t.0.append_data(&mut h, &long_name[2..], &b"long"[..])
            .unwrap();
        t.finish()
    }

    fn deb_with(suffix: &str, control: &[u8], data: &[u8]) -> Vec<u8> {
        ar(&[
            ("debian-binary", b"2.0\n"),
            (&format!("control.tar{suffix}"), &compress(suffix, control)),
            (&format!("data.tar{suffix}"), &compress(suffix, data)),
        ])
    }

    fn test_deb(suffix: &str) -> Vec<u8> {
        deb_with(suffix, &control_tar(), &data_tar())
    }

    #[test]
    fn unpacks_every_entry_kind_with_each_compression() {
        for suffix in SUFFIXES {
            let deb = test_deb(suffix);
            let mut m = Manifest::new();
            let control = unpack_into(&deb, "eci-test.deb", &mut m)
                .unwrap_or_else(|e| panic!("data.tar{suffix}: {e}"));
            assert_eq!(control.package(), "eci-test", "{suffix}");

            let tool = m.get("/usr/bin/tool").unwrap();
            assert_eq!(tool.data().unwrap().as_slice(), b"setuid tool");
            assert_eq!((tool.mode, tool.mtime), (0o4755, 1_600_000_000));
            assert_eq!(
                m.get("/usr/bin/tool-again").unwrap().kind,
                EntryKind::Hardlink("/usr/bin/tool".into())
            );
            assert_eq!(
                m.get("/usr/bin/sh").unwrap().kind,
                EntryKind::Symlink("dash".into())
            );
            let ping = m.get("/usr/bin/ping").unwrap();
            assert_eq!(ping.xattrs["security.capability"], CAPABILITY.to_vec());
            assert_eq!(ping.data().unwrap().as_slice(), b"ping");
            let null = m.get("/dev/null").unwrap();
            assert_eq!(null.kind, EntryKind::CharDevice { major: 1, minor: 3 });
            assert_eq!(null.mode, 0o666);
            assert_eq!(
                m.get("/dev/sda").unwrap().kind,
                EntryKind::BlockDevice { major: 8, minor: 0 }
            );
            let fifo = m.get("/run/initctl").unwrap();
            assert_eq!((&fifo.kind, fifo.mode), (&EntryKind::Fifo, 0o600));
            // Parent not listed in the archive: created root-owned 0755.
            assert_eq!(m.get("/run").unwrap().mode, 0o755);
            let conf = m.get("/etc/foo.conf").unwrap();
            assert_eq!(
                (conf.uid, conf.gid, conf.mode, conf.mtime),
                (1000, 42, 0o640, 1_700_000_000)
            );
            let long = format!("/usr/share/{}/file", "d".repeat(120));
            assert_eq!(m.get(&long).unwrap().data().unwrap().as_slice(), b"long");
            m.validate().unwrap();
        }
    }

    #[test]
    fn parses_control_scripts_and_conffiles() {
        let control = read_control(&test_deb(".xz"), "eci-test.deb").unwrap();
        assert_eq!(control.version(), "1.2-3");
        assert_eq!(control.architecture(), "amd64");
        assert_eq!(control.field("depends"), Some("libc6 (>= 2.36)"));
        assert_eq!(
            control.field("Description"),
            Some("test package\nlong line one\n.\n  indented")
        );
        assert_eq!(control.fields[0].0, "Package");
        assert_eq!(control.maintainer_scripts, ["postinst", "prerm"]);
        assert_eq!(
            control.script("postinst"),
            Some(&b"#!/bin/sh\nexit 0\n"[..])
        );
        assert_eq!(control.script("preinst"), None);
        assert_eq!(control.conffiles, ["/etc/foo.conf"]);
    }

    #[test]
    fn control_field_errors() {
        assert!(parse_control_fields(" leading continuation\n").is_err());
        assert!(parse_control_fields("Package eci\n").is_err());
        assert!(parse_control_fields("Package: a\npackage: b\n").is_err());
        let no_arch = {
            let mut t = Tar::new();
            t.file("./control", 0o644, b"Package: x\nVersion: 1\n");
            t.finish()
        };
        let err = read_control(&deb_with("", &no_arch, &data_tar()), "x.deb").unwrap_err();
        assert!(err.to_string().contains("Architecture"), "{err}");
    }

    #[test]
    fn reads_selected_files_only() {
        let mut t = Tar::new();
        t.dir("./boot/", 0o755)
            .file("./boot/config-6.1.0-18-amd64", 0o644, b"CONFIG_X=y\n")
            .file("./boot/vmlinuz-6.1.0-18-amd64", 0o644, b"kernel")
            .file("./usr/lib/modules/foo.ko", 0o644, b"module")
            .link(
                "./boot/vmlinuz",
                tar::EntryType::Symlink,
                "vmlinuz-6.1.0-18-amd64",
            );
        let deb = deb_with(".xz", &control_tar(), &t.finish());
        let got = read_data_file(&deb, "linux-image.deb", |p| p.starts_with("/boot/")).unwrap();
        assert_eq!(
            got,
            vec![
                (
                    "/boot/config-6.1.0-18-amd64".to_owned(),
                    b"CONFIG_X=y\n".to_vec()
                ),
                (
                    "/boot/vmlinuz-6.1.0-18-amd64".to_owned(),
                    b"kernel".to_vec()
                ),
            ]
        );
    }

    #[test]
    fn directories_first_writer_wins_files_last() {
        let mut first = Tar::new();
        first.dir("./etc/", 0o755).file("./etc/motd", 0o644, b"one");
        let mut second = Tar::new();
        let mut etc = Tar::header("./etc/", tar::EntryType::Directory, 0o700, 0);
        etc.set_uid(5);
        second.add(etc, b"").file("./etc/motd", 0o600, b"two");
        let mut m = Manifest::new();
        unpack_into(
            &deb_with(".gz", &control_tar(), &first.finish()),
            "a.deb",
            &mut m,
        )
        .unwrap();
        unpack_into(
            &deb_with(".gz", &control_tar(), &second.finish()),
            "b.deb",
            &mut m,
        )
        .unwrap();
        let etc = m.get("/etc").unwrap();
        assert_eq!((etc.mode, etc.uid), (0o755, 0));
        let motd = m.get("/etc/motd").unwrap();
        assert_eq!(
            (motd.data().unwrap().as_slice(), motd.mode),
            (&b"two"[..], 0o600)
        );

        let mut third = Tar::new();
        third.file("./etc", 0o644, b"not a dir");
        let err = unpack_into(
            &deb_with("", &control_tar(), &third.finish()),
            "c.deb",
            &mut m,
        )
        .unwrap_err();
        assert!(
            matches!(&err, DebError::Manifest { deb, source: ManifestError::DirectoryReplaced { .. }, .. } if deb == "c.deb"),
            "{err}"
        );
    }

    #[test]
    fn merged_usr_symlinks_are_kept_and_followed() {
        let mut m = Manifest::new();
        m.add_dir("/usr/lib", 0o755, 0, 0).unwrap();
        m.add_symlink("/lib", "usr/lib").unwrap();
        let mut t = Tar::new();
        t.dir("./", 0o755)
            .dir("./lib/", 0o755)
            .dir("./lib/x86_64-linux-gnu/", 0o755)
            .file("./lib/x86_64-linux-gnu/libc.so.6", 0o755, b"libc")
            .link(
                "./lib/x86_64-linux-gnu/libc-again.so",
                tar::EntryType::Link,
                "./lib/x86_64-linux-gnu/libc.so.6",
            );
        unpack_into(
            &deb_with(".zst", &control_tar(), &t.finish()),
            "libc6.deb",
            &mut m,
        )
        .unwrap();
        assert!(matches!(m.get("/lib").unwrap().kind, EntryKind::Symlink(_)));
        assert!(m.get("/usr/lib/x86_64-linux-gnu/libc.so.6").is_some());
        assert_eq!(
            m.get("/usr/lib/x86_64-linux-gnu/libc-again.so")
                .unwrap()
                .kind,
            EntryKind::Hardlink("/usr/lib/x86_64-linux-gnu/libc.so.6".into())
        );
    }

    fn expect_err(deb: &[u8]) -> DebError {
        let mut m = Manifest::new();
        let err = unpack_into(deb, "broken_1.0_amd64.deb", &mut m).unwrap_err();
        assert!(
            err.to_string().starts_with("broken_1.0_amd64.deb: "),
            "error must name the package: {err}"
        );
        err
    }

    #[test]
    fn rejects_malformed_packages() {
        assert!(matches!(expect_err(b""), DebError::NotAnArchive { .. }));
        assert!(matches!(
            expect_err(b"PK\x03\x04 definitely a zip"),
            DebError::NotAnArchive { .. }
        ));
        let good = test_deb(".xz");
        assert!(matches!(
            expect_err(&good[..good.len() / 2]),
            DebError::BadArchive { .. }
        ));
        let bad_version = ar(&[
            ("debian-binary", b"3.0\n"),
            ("control.tar", b""),
            ("data.tar", b""),
        ]);
        assert!(matches!(
            expect_err(&bad_version),
            DebError::BadDebianBinary { found, .. } if found == "3.0\n"
        ));
        let no_data = ar(&[("debian-binary", b"2.0\n"), ("control.tar", &control_tar())]);
        assert!(matches!(
            expect_err(&no_data),
            DebError::MissingMember {
                member: "data.tar",
                ..
            }
        ));
        let misordered = ar(&[("control.tar", &control_tar()), ("debian-binary", b"2.0\n")]);
        assert!(matches!(
            expect_err(&misordered),
            DebError::BadArchive { .. }
        ));
        let twice = ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar", &control_tar()),
            ("data.tar", &data_tar()),
            ("data.tar.xz", &compress(".xz", &data_tar())),
        ]);
        assert!(matches!(expect_err(&twice), DebError::BadArchive { .. }));
        let bz2 = ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar", &control_tar()),
            ("data.tar.bz2", b"BZh9"),
        ]);
        assert!(matches!(
            expect_err(&bz2),
            DebError::UnsupportedCompression { member, .. } if member == "data.tar.bz2"
        ));
    }

    #[test]
    fn rejects_truncated_compressed_data() {
        for suffix in [".gz", ".xz", ".lzma", ".zst"] {
            let data = compress(suffix, &data_tar());
            for cut in [data.len() / 2, data.len() - 1] {
                let deb = ar(&[
                    ("debian-binary", b"2.0\n"),
                    ("control.tar", &control_tar()),
                    (&format!("data.tar{suffix}"), &data[..cut]),
                ]);
                let err = expect_err(&deb);
                assert!(
                    matches!(&err, DebError::Corrupt { member, .. } if *member == format!("data.tar{suffix}")),
                    "{suffix} cut at {cut}: {err}"
                );
            }
        }
    }

    #[test]
    fn rejects_corrupt_tar() {
        let mut tar = data_tar();
        tar[512 + 100] ^= 0x55; // inside the second header: checksum mismatch
        let err = expect_err(&deb_with("", &control_tar(), &tar));
        assert!(matches!(err, DebError::Corrupt { .. }), "{err}");

        let mut unterminated = data_tar();
        unterminated.truncate(unterminated.len() - 1024);
        let err = expect_err(&deb_with(".zst", &control_tar(), &unterminated));
        assert!(err.to_string().contains("end-of-archive"), "{err}");

        let mut cut_body = Tar::new();
        cut_body.file("./big", 0o644, &[7u8; 4096]);
        let mut cut_body = cut_body.finish();
        cut_body.truncate(512 + 1000);
        let err = expect_err(&deb_with(".gz", &control_tar(), &cut_body));
        assert!(matches!(err, DebError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn rejects_hostile_entries() {
        let mut escape = Tar::new();
        escape.file("./../../etc/passwd", 0o644, b"root::0:0::/:/bin/sh\n");
        let err = expect_err(&deb_with("", &control_tar(), &escape.finish()));
        assert!(
            matches!(&err, DebError::BadEntry { path, .. } if path == "./../../etc/passwd"),
            "{err}"
        );

        let mut bad_pax = Tar::new();
        bad_pax.pax(&[("path", b"x")]);
        let mut raw = bad_pax.finish();
        // Shorten the record length ("9 path=x\n" -> "8 path=x\n"): no closing newline.
        let at = raw.windows(7).position(|w| w == b"9 path=").unwrap();
        raw[at] = b'8';
        let err = expect_err(&deb_with("", &control_tar(), &raw));
        assert!(err.to_string().contains("PAX"), "{err}");

        let mut sparse = Tar::new();
        sparse.add(
            Tar::header("./sparse", tar::EntryType::GNUSparse, 0o644, 0),
            b"",
        );
        let err = expect_err(&deb_with("", &control_tar(), &sparse.finish()));
        assert!(
            err.to_string().contains("unsupported tar entry type"),
            "{err}"
        );
    }

    #[test]
    fn pax_records_with_binary_values() {
        let mut raw = Vec::new();
        for (k, v) in [
            ("SCHILY.xattr.security.capability", &CAPABILITY[..]),
            ("uid", b"70000"),
        ] {
            let body = format!(" {k}=").into_bytes();
            let mut len = body.len() + v.len() + 1;
            len += len.to_string().len();
            raw.extend_from_slice(len.to_string().as_bytes());
            raw.extend_from_slice(&body);
            raw.extend_from_slice(v);
            raw.push(b'\n');
        }
        let records = parse_pax(&raw).unwrap();
        assert_eq!(records[0].1, CAPABILITY.to_vec());
        assert_eq!(records[1], ("uid".to_owned(), b"70000".to_vec()));
    }

    /// Cross-checks against a real package: `ECI_TEST_DEB=/path/x.deb`, or the first .deb in
    /// apt's cache. Where dpkg-deb exists, our file list must equal the one dpkg extracts.
    #[test]
    fn reads_a_real_package_if_available() {
        let path = std::env::var_os("ECI_TEST_DEB")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                let dir = std::fs::read_dir("/var/cache/apt/archives").ok()?;
                let mut debs: Vec<_> = dir
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "deb"))
                    .collect();
                debs.sort();
                debs.into_iter().next()
            });
        let Some(path) = path else {
            println!("SKIP: no .deb in /var/cache/apt/archives and ECI_TEST_DEB unset");
            return;
        };
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut m = Manifest::new();
        let control = unpack_into(&bytes, &name, &mut m).unwrap();
        assert!(
            name.starts_with(control.package()),
            "{name} vs {}",
            control.package()
        );
        m.validate().unwrap();
        let ours: std::collections::BTreeSet<String> = read_deb(&bytes, &name)
            .unwrap()
            .entries()
            .iter()
            .map(|(p, _)| p.clone())
            .collect();
        let dpkg = std::process::Command::new("dpkg-deb")
            .arg("--fsys-tarfile")
            .arg(&path)
            .output();
        match dpkg {
            Ok(out) if out.status.success() => {
                let mut theirs = std::collections::BTreeSet::new();
                let mut archive = tar::Archive::new(&out.stdout[..]);
                for e in archive.entries().unwrap() {
                    let e = e.unwrap();
                    let p = String::from_utf8(e.path_bytes().into_owned()).unwrap();
                    theirs.insert(manifest::normalize_path(&p).unwrap());
                }
                assert_eq!(ours, theirs);
                println!("{name}: {} entries match dpkg-deb", ours.len());
            }
            _ => println!(
                "{name}: {} entries (dpkg-deb unavailable, not cross-checked)",
                ours.len()
            ),
        }
    }

    /// `ECI_BENCH_DEBS=/dir cargo test -p eci-build --lib bench_read_debs -- --ignored
    /// --nocapture`: decompression throughput of real packages, one thread.
    #[test]
    #[ignore = "benchmark; run explicitly with --ignored --nocapture"]
    fn bench_read_debs() {
        let dir = std::env::var("ECI_BENCH_DEBS").unwrap_or("/var/cache/apt/archives".into());
        let mut debs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "deb"))
            .collect();
        debs.sort();
        let (mut packed, mut unpacked) = (0u64, 0u64);
        let start = std::time::Instant::now();
        let mut m = Manifest::new();
        for path in &debs {
            let bytes = std::fs::read(path).unwrap();
            packed += bytes.len() as u64;
            let name = path.file_name().unwrap().to_string_lossy();
            unpack_into(&bytes, &name, &mut m).unwrap();
        }
        unpacked += m.total_file_bytes();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{} packages, {:.1} MiB .deb -> {:.1} MiB files, {} entries: {secs:.2} s, {:.0} MiB/s out",
            debs.len(),
            packed as f64 / (1 << 20) as f64,
            unpacked as f64 / (1 << 20) as f64,
            m.len(),
            unpacked as f64 / (1 << 20) as f64 / secs
        );
    }
}
