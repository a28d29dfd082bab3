//! Deterministic initramfs images: a cpio "newc" archive of a [`Manifest`], optionally
//! compressed, as the Linux kernel unpacks it at boot (Documentation/driver-api/early-userspace
//! /buffer-format.rst).
//!
//! Determinism (SPEC V1): entries are written in sorted path order (parents first), inode
//! numbers are assigned sequentially in that order, the archive's own device numbers are 0,
//! mtimes are clamped to `SOURCE_DATE_EPOCH`, and the compressors run single-threaded at fixed
//! levels with no timestamps or names in their headers. The same manifest and epoch therefore
//! give byte-identical output on any machine with the same `Cargo.lock`.
//!
//! Hard links use the newc convention that both the kernel and GNU cpio understand: every name
//! of the inode carries the same inode number and link count, and only the last name in the
//! archive carries the data (size 0 on the others). Metadata of all names comes from the
//! target file. newc cannot carry extended attributes, so files with xattrs (e.g. file
//! capabilities) are reported in [`CpioStats::dropped_xattrs`] for the caller to act on.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::manifest::{self, file_type, Entry, EntryKind, Manifest, ManifestError};

const NEWC_MAGIC: &[u8; 6] = b"070701";
/// newc with a (data byte sum) checksum; accepted when reading.
const NEWC_CRC_MAGIC: &[u8; 6] = b"070702";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";
/// Output buffer: big enough that headers of small files are batched and compressors get
/// large chunks; file data larger than this is passed through without a copy.
const WRITE_BUFFER: usize = 1 << 20;

/// zstd level for [`Compression::Zstd`]. Measured on 300 MiB of real binaries, libraries and
/// text (`bench_write_speed`, 2 shared cores): level 3 takes 2.3-3.2 s for 37% of the input,
/// level 5 3.3 s for 36%, level 7 6 s for 35%, level 10 12 s for 31%. The image build must stay
/// under 15 s including package decompression, so we stop at zstd's default.
pub const ZSTD_LEVEL: i32 = 3;
/// gzip level for [`Compression::Gzip`] (miniz_oxide backend): level 1 takes 2.5 s for 48% of
/// the same input, level 6 takes 17 s for 42%, which alone would exceed the build budget.
pub const GZIP_LEVEL: u32 = 1;
/// LZ4 HC level for [`Compression::Lz4`]. On the 222 MB hyperv initramfs (`lz4 -l`, one
/// thread): level 3 takes 2.2 s for 89.3 MB, 6 3.5 s for 87.0 MB, 9 6.0 s for 86.6 MB; blocks
/// are compressed in parallel. The kernel decompresses all levels at the same speed, and 2 MB
/// more is ~0.05 s of UEFI loader reading, so the cheap end is enough.
pub const LZ4_HC_LEVEL: i32 = 3;
/// xz preset for [`Compression::Xz`] (the kernel needs the CRC32 check, which we use).
pub const XZ_PRESET: u32 = 6;

/// How the cpio archive is compressed. Debian kernels unpack all of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
    Xz,
    /// LZ4's legacy frame ([`crate::lz4_legacy`]): the fastest for the kernel to unpack.
    Lz4,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
            Compression::Lz4 => "lz4",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "xz" => Ok(Compression::Xz),
            "lz4" => Ok(Compression::Lz4),
            other => Err(format!(
                "unknown initramfs compression {other:?}; use none, gzip, zstd, xz or lz4"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("cannot write an initramfs from an inconsistent root filesystem: {0}")]
    Manifest(#[from] ManifestError),
    #[error("{path}: {field} {value} does not fit the 32-bit cpio newc header field")]
    FieldOverflow {
        path: String,
        field: &'static str,
        value: u64,
    },
    #[error(
        "SOURCE_DATE_EPOCH {0} is after 2106 and cannot be stored in a cpio newc header \
         (32-bit mtime); use a smaller epoch"
    )]
    EpochOutOfRange(u64),
    #[error("writing the cpio archive failed: {0}")]
    Io(#[from] io::Error),
    #[error("{}: cannot {action}: {source}", path.display())]
    File {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("malformed cpio archive at byte {offset}: {reason}")]
    Malformed { offset: usize, reason: String },
    #[error(
        "{}: not an initramfs (starts with {magic}); expected a newc cpio archive, plain or \
         compressed with gzip, zstd, xz or lz4 (legacy frame){hint}", path.display()
    )]
    UnknownFormat {
        path: PathBuf,
        magic: String,
        hint: &'static str,
    },
}

/// A file whose extended attributes the archive could not carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedXattrs {
    pub path: String,
    pub names: Vec<String>,
}

/// What [`write_cpio`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpioStats {
    /// Archive members, not counting the trailer.
    pub entries: u64,
    /// Size of the (uncompressed) archive in bytes.
    pub bytes: u64,
    /// Regular-file data bytes, each hard-linked inode counted once.
    pub file_bytes: u64,
    /// Names written as additional links of an inode already in the archive.
    pub hardlinks: u64,
    /// Files with xattrs (file capabilities, SELinux labels...) that newc cannot store.
    pub dropped_xattrs: Vec<DroppedXattrs>,
}

/// What [`write_initramfs`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitramfsInfo {
    pub compression: Compression,
    /// Lowercase hex SHA-256 of the file as written.
    pub sha256: String,
    pub compressed_size: u64,
    pub uncompressed_size: u64,
    pub entries: u64,
    pub dropped_xattrs: Vec<DroppedXattrs>,
}

/// A hard-linked inode while writing: its names share one inode number.
struct LinkedInode<'a> {
    nlink: u32,
    /// The name that carries the data: the last one in archive order.
    last: &'a str,
    ino: Option<u32>,
}

/// Writes `manifest` as a newc cpio archive (see the module docs for the layout rules) and
/// returns what was written. `out` is buffered internally.
pub fn write_cpio<W: Write>(
    manifest: &Manifest,
    epoch: u64,
    out: W,
) -> Result<CpioStats, InitramfsError> {
    manifest.validate()?;
    let epoch = u32::try_from(epoch).map_err(|_| InitramfsError::EpochOutOfRange(epoch))?;

    let mut inodes: HashMap<&str, LinkedInode<'_>> = manifest
        .hardlink_groups()
        .into_iter()
        .map(|(file, links)| {
            let last_link = *links.last().expect("groups are non-empty");
            let info = LinkedInode {
                nlink: u32::try_from(links.len() + 1).unwrap_or(u32::MAX),
                last: if last_link > file { last_link } else { file },
                ino: None,
            };
            (file, info)
        })
        .collect();
    // Directory link count as a filesystem would report it: "." , the name, and each
    // subdirectory's "..".
    let mut subdirs: HashMap<&str, u32> = HashMap::new();
    for (path, entry) in manifest.iter().skip(1) {
        if entry.is_dir() {
            *subdirs.entry(manifest::parent_path(path)).or_default() += 1;
        }
    }

    let mut w = NewcWriter {
        out: BufWriter::with_capacity(WRITE_BUFFER, out),
        offset: 0,
    };
    let mut stats = CpioStats::default();
    let mut next_ino: u32 = 1;
    let mut take_ino = || {
        let ino = next_ino;
        next_ino += 1;
        ino
    };
    for (path, entry) in manifest.iter() {
        // The entry that owns the inode: itself, or the file a hard link names.
        let (inode, link_key) = match &entry.kind {
            EntryKind::Hardlink(target) => {
                let file = manifest
                    .get(target)
                    .ok_or_else(|| ManifestError::BadHardlink {
                        path: path.to_owned(),
                        target: target.clone(),
                        reason: "target does not exist",
                    })?;
                (file, Some(target.as_str()))
            }
            EntryKind::File(_) if inodes.contains_key(path) => (entry, Some(path)),
            _ => (entry, None),
        };
        let mut data: &[u8] = &[];
        let (ino, nlink) = match link_key {
            Some(key) => {
                let linked = inodes.get_mut(key).expect("every link target has a group");
                let ino = *linked.ino.get_or_insert_with(&mut take_ino);
                if linked.last == path {
                    data = inode.data().map(|b| b.as_slice()).unwrap_or_default();
                }
                if matches!(entry.kind, EntryKind::Hardlink(_)) {
                    stats.hardlinks += 1;
                }
                (ino, linked.nlink)
            }
            None => {
                let nlink = match &entry.kind {
                    EntryKind::Dir => 2 + subdirs.get(path).copied().unwrap_or(0),
                    _ => 1,
                };
                match &entry.kind {
                    EntryKind::File(blob) => data = blob,
                    EntryKind::Symlink(target) => data = target.as_bytes(),
                    _ => {}
                }
                (take_ino(), nlink)
            }
        };
        let (rdev_major, rdev_minor) = match inode.kind {
            EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
                (major, minor)
            }
            _ => (0, 0),
        };
        let size = u32::try_from(data.len()).map_err(|_| InitramfsError::FieldOverflow {
            path: path.to_owned(),
            field: "file size",
            value: data.len() as u64,
        })?;
        let name = if path == "/" { "." } else { &path[1..] };
        let mtime = u32::try_from(inode.mtime).map_or(epoch, |m| m.min(epoch));
        w.member(
            &Header {
                ino,
                mode: inode.st_mode(),
                uid: inode.uid,
                gid: inode.gid,
                nlink,
                mtime,
                size,
                rdev_major,
                rdev_minor,
            },
            name,
            data,
        )?;
        stats.entries += 1;
        // Only one name of a linked inode carries data, so this counts each inode once.
        if matches!(inode.kind, EntryKind::File(_)) {
            stats.file_bytes += data.len() as u64;
        }
        if !entry.xattrs.is_empty() && !matches!(entry.kind, EntryKind::Hardlink(_)) {
            stats.dropped_xattrs.push(dropped(path, entry));
        }
    }
    w.member(
        &Header {
            nlink: 1,
            ..Header::default()
        },
        TRAILER,
        &[],
    )?;
    w.out.flush()?;
    stats.bytes = w.offset;
    Ok(stats)
}

fn dropped(path: &str, entry: &Entry) -> DroppedXattrs {
    DroppedXattrs {
        path: path.to_owned(),
        names: entry.xattrs.keys().cloned().collect(),
    }
}

#[derive(Default)]
struct Header {
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    size: u32,
    rdev_major: u32,
    rdev_minor: u32,
}

struct NewcWriter<W: Write> {
    out: BufWriter<W>,
    offset: u64,
}

impl<W: Write> NewcWriter<W> {
    fn member(&mut self, h: &Header, name: &str, data: &[u8]) -> io::Result<()> {
        let namesize = name.len() as u32 + 1;
        let fields = [
            h.ino,
            h.mode,
            h.uid,
            h.gid,
            h.nlink,
            h.mtime,
            h.size,
            0, // devmajor of the archive's own filesystem: none
            0, // devminor
            h.rdev_major,
            h.rdev_minor,
            namesize,
            0, // check: unused by newc
        ];
        let mut header = [0u8; HEADER_LEN];
        header[..6].copy_from_slice(NEWC_MAGIC);
        for (i, value) in fields.iter().enumerate() {
            put_hex8(&mut header[6 + 8 * i..14 + 8 * i], *value);
        }
        self.write(&header)?;
        self.write(name.as_bytes())?;
        self.write(&[0])?;
        self.pad()?;
        self.write(data)?;
        self.pad()
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Header+name and data are each padded to a multiple of 4 bytes from the archive start.
    fn pad(&mut self) -> io::Result<()> {
        let pad = (4 - (self.offset % 4) as usize) % 4;
        self.write(&[0; 3][..pad])
    }
}

fn put_hex8(out: &mut [u8], value: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = HEX[((value >> (28 - 4 * i)) & 0xf) as usize];
    }
}

/// Hashes and counts what passes through to the output file.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `manifest` as a compressed initramfs at `out_path`, atomically: the data goes to a
/// temporary file in the same directory, is fsynced and renamed over `out_path`, and the
/// directory is fsynced. On error nothing is left behind and an existing `out_path` is
/// untouched. The file is created mode 0644.
pub fn write_initramfs(
    manifest: &Manifest,
    epoch: u64,
    compression: Compression,
    out_path: &Path,
) -> Result<InitramfsInfo, InitramfsError> {
    let file_err = |path: &Path, action| {
        let path = path.to_path_buf();
        move |source| InitramfsError::File {
            path,
            action,
            source,
        }
    };
    let dir = match out_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let file_name = out_path.file_name().ok_or_else(|| InitramfsError::File {
        path: out_path.to_path_buf(),
        action: "write an initramfs to a path without a file name",
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", file_name.to_string_lossy()))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(file_err(dir, "create a temporary file in"))?;

    let (stats, sha256, compressed_size) = {
        let sink = HashingWriter {
            inner: BufWriter::with_capacity(WRITE_BUFFER, tmp.as_file()),
            hasher: Sha256::new(),
            count: 0,
        };
        let (stats, sink) = compress_cpio(manifest, epoch, compression, sink)?;
        let HashingWriter {
            inner,
            hasher,
            count,
        } = sink;
        // into_inner flushes and reports the error a silent flush-on-drop would swallow.
        inner.into_inner().map_err(io::IntoInnerError::into_error)?;
        (stats, hex::encode(hasher.finalize()), count)
    };

    let file = tmp.as_file();
    file.set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(file_err(tmp.path(), "set permissions on"))?;
    file.sync_all().map_err(file_err(tmp.path(), "fsync"))?;
    tmp.persist(out_path)
        .map_err(|e| file_err(out_path, "rename the finished image to")(e.error))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(file_err(dir, "fsync the directory"))?;

    Ok(InitramfsInfo {
        compression,
        sha256,
        compressed_size,
        uncompressed_size: stats.bytes,
        entries: stats.entries,
        dropped_xattrs: stats.dropped_xattrs,
    })
}

/// Writes the cpio archive through the chosen compressor and returns the inner writer.
fn compress_cpio<W: Write>(
    manifest: &Manifest,
    epoch: u64,
    compression: Compression,
    sink: W,
) -> Result<(CpioStats, W), InitramfsError> {
    Ok(match compression {
        Compression::None => {
            let mut sink = sink;
            (write_cpio(manifest, epoch, &mut sink)?, sink)
        }
        Compression::Gzip => {
            // OS byte fixed to Unix and no name/mtime: gzip headers otherwise vary by host.
            let mut enc = flate2::GzBuilder::new()
                .operating_system(3)
                .write(sink, flate2::Compression::new(GZIP_LEVEL));
            let stats = write_cpio(manifest, epoch, &mut enc)?;
            (stats, enc.finish()?)
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(sink, ZSTD_LEVEL)?;
            enc.include_checksum(true)?;
            let stats = write_cpio(manifest, epoch, &mut enc)?;
            (stats, enc.finish()?)
        }
        Compression::Xz => {
            let stream =
                xz2::stream::Stream::new_easy_encoder(XZ_PRESET, xz2::stream::Check::Crc32)
                    .map_err(io::Error::other)?;
            let mut enc = xz2::write::XzEncoder::new_stream(sink, stream);
            let stats = write_cpio(manifest, epoch, &mut enc)?;
            (stats, enc.finish()?)
        }
        Compression::Lz4 => {
            let mut enc = crate::lz4_legacy::Lz4LegacyWriter::new(sink, LZ4_HC_LEVEL)?;
            let stats = write_cpio(manifest, epoch, &mut enc)?;
            (stats, enc.finish()?)
        }
    })
}

/// One member of a cpio archive as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpioEntry {
    /// Normalised absolute path ("/" for the archive's ".").
    pub path: String,
    pub ino: u32,
    /// Full `st_mode`, type bits included.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u64,
    pub size: u64,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    pub link_target: Option<String>,
    /// Byte range of the member's data in the archive that was read.
    pub data: Range<usize>,
}

impl CpioEntry {
    pub fn file_type(&self) -> u32 {
        self.mode & file_type::MASK
    }
}

/// Parses a newc (or newc-crc) cpio archive up to its trailer.
pub fn read_cpio(bytes: &[u8]) -> Result<Vec<CpioEntry>, InitramfsError> {
    let mut entries = Vec::new();
    let mut pos = 0usize;
    loop {
        let malformed =
            |offset: usize, reason: String| InitramfsError::Malformed { offset, reason };
        let header = bytes
            .get(pos..pos + HEADER_LEN)
            .ok_or_else(|| malformed(pos, format!("archive ends before a {TRAILER} entry")))?;
        if &header[..6] != NEWC_MAGIC && &header[..6] != NEWC_CRC_MAGIC {
            return Err(malformed(
                pos,
                format!(
                    "bad magic {:?}; only newc (070701/070702) is supported",
                    String::from_utf8_lossy(&header[..6])
                ),
            ));
        }
        let mut fields = [0u32; 13];
        for (i, field) in fields.iter_mut().enumerate() {
            let hex = &header[6 + 8 * i..14 + 8 * i];
            *field = std::str::from_utf8(hex)
                .ok()
                .and_then(|s| u32::from_str_radix(s, 16).ok())
                .ok_or_else(|| malformed(pos + 6 + 8 * i, "header field is not hex".into()))?;
        }
        let [ino, mode, uid, gid, nlink, mtime, size, _, _, rdev_major, rdev_minor, namesize, _] =
            fields;
        let name_start = pos + HEADER_LEN;
        let name_end = name_start + namesize as usize;
        let name = bytes
            .get(name_start..name_end)
            .and_then(|n| n.strip_suffix(&[0]))
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                malformed(pos, "name missing, cut short or not NUL-terminated".into())
            })?;
        let name = std::str::from_utf8(name)
            .map_err(|_| malformed(name_start, "name is not UTF-8".into()))?;
        let data_start = align4(name_end);
        let data_end = data_start + size as usize;
        if data_end > bytes.len() {
            return Err(malformed(
                pos,
                format!("{name:?} claims {size} data bytes past the end of the archive"),
            ));
        }
        if name == TRAILER {
            return Ok(entries);
        }
        let path =
            manifest::normalize_path(name).map_err(|e| malformed(name_start, e.to_string()))?;
        let link_target = if mode & file_type::MASK == file_type::SYMLINK {
            Some(
                String::from_utf8(bytes[data_start..data_end].to_vec()).map_err(|_| {
                    malformed(data_start, format!("{name:?}: link target is not UTF-8"))
                })?,
            )
        } else {
            None
        };
        entries.push(CpioEntry {
            path,
            ino,
            mode,
            uid,
            gid,
            nlink,
            mtime: mtime.into(),
            size: size.into(),
            rdev_major,
            rdev_minor,
            link_target,
            data: data_start..data_end,
        });
        pos = align4(data_end);
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A decompressed initramfs and its members.
#[derive(Debug, Clone)]
pub struct Initramfs {
    pub compression: Compression,
    /// The uncompressed cpio archive.
    pub archive: Vec<u8>,
    pub entries: Vec<CpioEntry>,
}

impl Initramfs {
    /// Data of a member (symlink target for symlinks; empty for all but the last name of a
    /// hard-linked file).
    pub fn data(&self, entry: &CpioEntry) -> &[u8] {
        &self.archive[entry.data.clone()]
    }
}

/// Reads an initramfs file, detecting gzip, zstd, xz, lz4 or no compression by magic number.
pub fn read_initramfs(path: &Path) -> Result<Initramfs, InitramfsError> {
    let raw = fs::read(path).map_err(|source| InitramfsError::File {
        path: path.to_path_buf(),
        action: "read",
        source,
    })?;
    parse_initramfs(raw, path)
}

/// An initramfs already in memory; `path` only names it in errors.
pub fn parse_initramfs(raw: Vec<u8>, path: &Path) -> Result<Initramfs, InitramfsError> {
    let compression = detect(&raw, path)?;
    let decode_err = |source| InitramfsError::File {
        path: path.to_path_buf(),
        action: "decompress",
        source,
    };
    let archive = match compression {
        Compression::None => raw,
        Compression::Gzip => {
            read_all(flate2::read::MultiGzDecoder::new(&raw[..]), raw.len()).map_err(decode_err)?
        }
        Compression::Zstd => zstd::stream::read::Decoder::with_buffer(&raw[..])
            .and_then(|d| read_all(d, raw.len()))
            .map_err(decode_err)?,
        Compression::Xz => read_all(xz2::read::XzDecoder::new_multi_decoder(&raw[..]), raw.len())
            .map_err(decode_err)?,
        Compression::Lz4 => crate::lz4_legacy::decompress(&raw).map_err(decode_err)?,
    };
    let entries = read_cpio(&archive)?;
    Ok(Initramfs {
        compression,
        archive,
        entries,
    })
}

fn read_all(mut r: impl Read, hint: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(hint.saturating_mul(3));
    r.read_to_end(&mut out)?;
    Ok(out)
}

/// Whether `raw` starts like an initramfs eci can read (newc cpio, plain or compressed).
pub fn looks_like_initramfs(raw: &[u8]) -> bool {
    detect(raw, Path::new("")).is_ok()
}

fn detect(raw: &[u8], path: &Path) -> Result<Compression, InitramfsError> {
    let starts = |magic: &[u8]| raw.starts_with(magic);
    if starts(NEWC_MAGIC) || starts(NEWC_CRC_MAGIC) {
        return Ok(Compression::None);
    }
    if starts(&[0x1f, 0x8b]) {
        return Ok(Compression::Gzip);
    }
    if starts(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Ok(Compression::Zstd);
    }
    if starts(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return Ok(Compression::Xz);
    }
    if starts(&crate::lz4_legacy::MAGIC) {
        return Ok(Compression::Lz4);
    }
    let hint = if starts(b"BZh") {
        " (this is bzip2)"
    } else if starts(&[0x04, 0x22, 0x4d, 0x18]) {
        " (this is lz4's frame format; the kernel reads only its legacy format, `lz4 -l`)"
    } else if starts(&[0x89, b'L', b'Z', b'O']) {
        " (this is lzo)"
    } else if starts(b"070707") {
        " (this is the old odc cpio format)"
    } else {
        ""
    };
    Err(InitramfsError::UnknownFormat {
        path: path.to_path_buf(),
        magic: hex::encode(&raw[..raw.len().min(6)]),
        hint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::MetadataExt;
    use std::process::{Command, Stdio};

    const EPOCH: u64 = 1_700_000_000;

    /// Every entry kind, a hard-link group whose links sort both before and after the file,
    /// odd name lengths, a setuid file, a capability xattr and mtimes on both sides of EPOCH.
    fn sample() -> Manifest {
        let mut m = Manifest::new();
        m.insert("/", Entry::dir(0o755).with_mtime(EPOCH + 10))
            .unwrap();
        m.insert("/etc", Entry::dir(0o750).with_owner(0, 4).with_mtime(5))
            .unwrap();
        m.insert(
            "/usr/bin/su",
            Entry::file("setuid-binary-payload", 0o4755).with_mtime(EPOCH - 1),
        )
        .unwrap();
        m.insert(
            "/usr/bin/ping",
            Entry::file("ping", 0o755).with_xattr("security.capability", vec![1, 0, 0, 2, 0x0a]),
        )
        .unwrap();
        m.add_hardlink("/usr/bin/a-link", "/usr/bin/su").unwrap();
        m.add_hardlink("/usr/bin/zz-link", "/usr/bin/su").unwrap();
        m.add_symlink("/bin", "usr/bin").unwrap();
        m.add_file("/e", "", 0o600, 1000, 1000).unwrap();
        m.add_file("/ab", "x", 0o644, 0, 0).unwrap();
        m.add_file("/abc", "xy", 0o644, 0, 0).unwrap();
        m.add_file("/abcd", "xyz", 0o644, 0, 0).unwrap();
        m.insert(
            "/dev/console",
            Entry::new(EntryKind::CharDevice { major: 5, minor: 1 }, 0o600),
        )
        .unwrap();
        m.insert(
            "/dev/vda",
            Entry::new(
                EntryKind::BlockDevice {
                    major: 254,
                    minor: 0,
                },
                0o660,
            )
            .with_owner(0, 6),
        )
        .unwrap();
        m.insert("/run/fifo", Entry::new(EntryKind::Fifo, 0o644))
            .unwrap();
        m.insert("/tmp", Entry::dir(0o1777)).unwrap();
        m
    }

    fn cpio(m: &Manifest) -> (Vec<u8>, CpioStats) {
        let mut out = Vec::new();
        let stats = write_cpio(m, EPOCH, &mut out).unwrap();
        (out, stats)
    }

    #[test]
    fn round_trip_preserves_every_field() {
        let m = sample();
        let (bytes, stats) = cpio(&m);
        assert_eq!(stats.bytes, bytes.len() as u64);
        let entries = read_cpio(&bytes).unwrap();
        assert_eq!(entries.len(), m.len());
        assert_eq!(stats.entries, m.len() as u64);
        let su_ino = entries
            .iter()
            .find(|e| e.path == "/usr/bin/su")
            .unwrap()
            .ino;
        for (e, (path, entry)) in entries.iter().zip(m.iter()) {
            assert_eq!(e.path, path);
            let inode = match &entry.kind {
                EntryKind::Hardlink(t) => m.get(t).unwrap(),
                _ => entry,
            };
            assert_eq!(e.mode, inode.st_mode(), "{path}");
            assert_eq!((e.uid, e.gid), (inode.uid, inode.gid), "{path}");
            assert_eq!(e.mtime, inode.mtime.min(EPOCH), "{path}");
            let data = &bytes[e.data.clone()];
            match &entry.kind {
                EntryKind::Symlink(t) => {
                    assert_eq!(e.link_target.as_deref(), Some(t.as_str()));
                    assert_eq!(data, t.as_bytes());
                }
                EntryKind::CharDevice { major, minor }
                | EntryKind::BlockDevice { major, minor } => {
                    assert_eq!((e.rdev_major, e.rdev_minor), (*major, *minor), "{path}");
                }
                EntryKind::File(blob)
                    if !path.starts_with("/usr/bin/") || path == "/usr/bin/ping" =>
                {
                    assert_eq!(data, blob.as_slice(), "{path}");
                    assert_eq!(e.nlink, 1);
                }
                EntryKind::Dir => assert!(e.nlink >= 2),
                _ => {}
            }
            if e.link_target.is_none() {
                assert_eq!(e.size as usize, data.len());
            }
            if path.starts_with("/usr/bin/") && path != "/usr/bin/ping" {
                assert_eq!((e.ino, e.nlink), (su_ino, 3), "{path}");
            }
        }
        // Sequential inode numbers in path order; the linked inode is numbered at its first name.
        let mut seen = BTreeMap::new();
        for e in &entries {
            seen.entry(e.ino).or_insert(e.path.clone());
        }
        assert_eq!(
            seen.keys().copied().collect::<Vec<_>>(),
            (1..=seen.len() as u32).collect::<Vec<_>>()
        );
        assert_eq!(seen[&su_ino], "/usr/bin/a-link");
        assert_eq!(
            stats.dropped_xattrs,
            vec![DroppedXattrs {
                path: "/usr/bin/ping".into(),
                names: vec!["security.capability".into()]
            }]
        );
        assert_eq!(stats.hardlinks, 2);
        assert_eq!(stats.file_bytes, m.total_file_bytes());
        // "/" has subdirectories bin? no: /bin is a symlink; dev, etc, run, tmp, usr are dirs.
        assert_eq!(entries[0].nlink, 2 + 5);
        assert_eq!(std::str::from_utf8(&bytes[110..112]).unwrap(), ".\0");
    }

    #[test]
    fn hardlink_data_goes_on_the_last_name_only() {
        let (bytes, _) = cpio(&sample());
        let entries = read_cpio(&bytes).unwrap();
        let sizes: Vec<(&str, u64)> = entries
            .iter()
            .filter(|e| e.file_type() == file_type::FILE && e.nlink == 3)
            .map(|e| (e.path.as_str(), e.size))
            .collect();
        assert_eq!(
            sizes,
            [
                ("/usr/bin/a-link", 0),
                ("/usr/bin/su", 0),
                ("/usr/bin/zz-link", 21)
            ]
        );
        let last = entries
            .iter()
            .find(|e| e.path == "/usr/bin/zz-link")
            .unwrap();
        assert_eq!(&bytes[last.data.clone()], b"setuid-binary-payload");
        assert!(entries
            .iter()
            .filter(|e| e.path.starts_with("/usr/bin/") && e.path != "/usr/bin/ping")
            .all(|e| e.mode == 0o104755));

        // When the file itself sorts last it carries the data.
        let mut m = Manifest::new();
        m.add_file("/z", "data", 0o644, 0, 0).unwrap();
        m.add_hardlink("/a", "/z").unwrap();
        let (bytes, _) = cpio(&m);
        let entries = read_cpio(&bytes).unwrap();
        assert_eq!((entries[1].path.as_str(), entries[1].size), ("/a", 0));
        assert_eq!((entries[2].path.as_str(), entries[2].size), ("/z", 4));
    }

    #[test]
    fn mtimes_are_clamped_to_the_epoch() {
        let mut m = Manifest::new();
        m.insert("/old", Entry::file("", 0o644).with_mtime(100))
            .unwrap();
        m.insert("/new", Entry::file("", 0o644).with_mtime(EPOCH + 1))
            .unwrap();
        m.insert("/far", Entry::file("", 0o644).with_mtime(u64::MAX))
            .unwrap();
        let (bytes, _) = cpio(&m);
        let mtimes: BTreeMap<_, _> = read_cpio(&bytes)
            .unwrap()
            .into_iter()
            .map(|e| (e.path, e.mtime))
            .collect();
        assert_eq!(mtimes["/old"], 100);
        assert_eq!(mtimes["/new"], EPOCH);
        assert_eq!(mtimes["/far"], EPOCH);
        assert!(matches!(
            write_cpio(&m, 1 << 33, io::sink()),
            Err(InitramfsError::EpochOutOfRange(_))
        ));
    }

    #[test]
    fn members_are_aligned_and_padded_with_zeros() {
        let mut m = Manifest::new();
        for len in 1..=9 {
            let name = format!("/{}", "n".repeat(len));
            m.add_file(&name, "d".repeat(len).as_str(), 0o644, 0, 0)
                .unwrap();
        }
        let (bytes, _) = cpio(&m);
        assert_eq!(bytes.len() % 4, 0);
        // Walk the archive with independent arithmetic rather than through read_cpio.
        let mut pos = 0;
        loop {
            assert_eq!(pos % 4, 0);
            assert_eq!(&bytes[pos..pos + 6], NEWC_MAGIC);
            let field = |i: usize| {
                usize::from_str_radix(
                    std::str::from_utf8(&bytes[pos + 6 + 8 * i..pos + 14 + 8 * i]).unwrap(),
                    16,
                )
                .unwrap()
            };
            let (size, namesize) = (field(6), field(11));
            assert_eq!((field(7), field(8)), (0, 0), "archive dev numbers");
            let name_end = pos + 110 + namesize;
            let data_start = (name_end + 3) & !3;
            assert!(bytes[name_end - 1..data_start].iter().all(|&b| b == 0));
            let data_end = data_start + size;
            let next = (data_end + 3) & !3;
            assert!(bytes[data_end..next].iter().all(|&b| b == 0));
            if &bytes[pos + 110..name_end - 1] == TRAILER.as_bytes() {
                assert_eq!(next, bytes.len());
                break;
            }
            pos = next;
        }
    }

    #[test]
    fn output_is_deterministic_and_readable_for_every_compression() {
        let dir = tempfile::tempdir().unwrap();
        let m = sample();
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Zstd,
            Compression::Xz,
            Compression::Lz4,
        ] {
            let a = dir.path().join(format!("a.{compression}"));
            let b = dir.path().join(format!("b.{compression}"));
            let info = write_initramfs(&m, EPOCH, compression, &a).unwrap();
            // A second, separately built but equal manifest must give the same bytes.
            let info_b = write_initramfs(&sample(), EPOCH, compression, &b).unwrap();
            let (bytes_a, bytes_b) = (fs::read(&a).unwrap(), fs::read(&b).unwrap());
            assert_eq!(bytes_a, bytes_b, "{compression}");
            assert_eq!(info, info_b);
            assert_eq!(info.sha256, hex::encode(Sha256::digest(&bytes_a)));
            assert_eq!(info.compressed_size, bytes_a.len() as u64);
            assert_eq!(info.entries, m.len() as u64);
            assert_eq!(info.dropped_xattrs.len(), 1);
            assert_eq!(
                fs::metadata(&a).unwrap().permissions().mode() & 0o777,
                0o644
            );

            let read = read_initramfs(&a).unwrap();
            assert_eq!(read.compression, compression);
            assert_eq!(read.archive.len() as u64, info.uncompressed_size);
            assert_eq!(read.archive, cpio(&m).0);
            let su = read
                .entries
                .iter()
                .find(|e| e.path == "/usr/bin/zz-link")
                .unwrap();
            assert_eq!(read.data(su), b"setuid-binary-payload");
        }
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn failed_writes_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        // Renaming a file over a non-empty directory fails after all data was written.
        let target = dir.path().join("initrd.img");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("keep"), "x").unwrap();
        let err = write_initramfs(&sample(), EPOCH, Compression::Zstd, &target).unwrap_err();
        assert!(matches!(err, InitramfsError::File { .. }), "{err}");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["initrd.img"]);

        let mut broken = sample();
        broken.get_mut("/usr/bin/su").unwrap().kind = EntryKind::Fifo;
        let out = dir.path().join("broken.img");
        assert!(matches!(
            write_initramfs(&broken, EPOCH, Compression::Gzip, &out),
            Err(InitramfsError::Manifest(ManifestError::BadHardlink { .. }))
        ));
        assert!(!out.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn rejects_malformed_archives() {
        let (bytes, _) = cpio(&sample());
        for cut in [0, 50, 200, bytes.len() - 4] {
            assert!(
                matches!(
                    read_cpio(&bytes[..cut]),
                    Err(InitramfsError::Malformed { .. })
                ),
                "cut at {cut}"
            );
        }
        let mut bad = bytes.clone();
        bad[..6].copy_from_slice(b"070707");
        assert!(read_cpio(&bad).is_err());
        let mut bad = bytes.clone();
        bad[6] = b'g';
        assert!(read_cpio(&bad).is_err());

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.img");
        fs::write(&p, b"BZh91AY&SY").unwrap();
        let err = read_initramfs(&p).unwrap_err();
        assert!(err.to_string().contains("bzip2"), "{err}");
    }

    fn gnu_cpio() -> Option<()> {
        let ok = Command::new("cpio")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            println!("SKIP: GNU cpio is not installed (apt-get install cpio)");
        }
        ok.then_some(())
    }

    fn run_cpio(args: &[&str], input: &[u8], cwd: &Path) -> std::process::Output {
        let mut child = Command::new("cpio")
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    #[test]
    fn gnu_cpio_lists_the_archive() {
        if gnu_cpio().is_none() {
            return;
        }
        let m = sample();
        let (bytes, _) = cpio(&m);
        let dir = tempfile::tempdir().unwrap();
        let out = run_cpio(&["-t", "--quiet"], &bytes, dir.path());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        let expected: Vec<String> = m
            .iter()
            .map(|(p, _)| {
                if p == "/" {
                    ".".into()
                } else {
                    p[1..].to_owned()
                }
            })
            .collect();
        assert_eq!(listed, expected);
    }

    /// GNU cpio extracts like the kernel does (per-name creation, links by inode number).
    /// Needs root for ownership; device nodes are left out as containers may forbid mknod.
    #[test]
    fn gnu_cpio_extracts_the_archive() {
        if gnu_cpio().is_none() {
            return;
        }
        use std::os::unix::fs::FileTypeExt;
        let mut m = sample();
        m.remove("/dev").unwrap();
        let (bytes, _) = cpio(&m);
        let dir = tempfile::tempdir().unwrap();
        let out = run_cpio(
            &["-i", "-d", "-m", "--no-absolute-filenames", "--quiet"],
            &bytes,
            dir.path(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let root = dir.path();
        let su = fs::metadata(root.join("usr/bin/su")).unwrap();
        let link = fs::metadata(root.join("usr/bin/a-link")).unwrap();
        assert_eq!(su.ino(), link.ino());
        assert_eq!(su.nlink(), 3);
        assert_eq!(
            fs::read(root.join("usr/bin/a-link")).unwrap(),
            b"setuid-binary-payload"
        );
        assert_eq!(su.mtime() as u64, EPOCH - 1);
        assert_eq!(
            fs::read_link(root.join("bin")).unwrap(),
            Path::new("usr/bin")
        );
        assert_eq!(fs::read(root.join("abcd")).unwrap(), b"xyz");
        assert!(fs::symlink_metadata(root.join("run/fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
        if running_as_root() {
            assert_eq!(su.mode() & 0o7777, 0o4755);
            let e = fs::metadata(root.join("e")).unwrap();
            assert_eq!((e.uid(), e.gid(), e.mode() & 0o7777), (1000, 1000, 0o600));
        } else {
            println!("not root: ownership and setuid bits not checked");
        }
    }

    fn running_as_root() -> bool {
        // Files we create are owned by our effective uid.
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().metadata().unwrap().uid() == 0
    }

    /// Loads real files (binaries, libraries, text) from this machine into a manifest of
    /// about `mib` MiB: a realistic mix for compressor timings. Each tree gets a share of the
    /// budget so that small text files are represented as in a real root filesystem.
    fn realistic_manifest(mib: u64) -> Manifest {
        let mut m = Manifest::new();
        for (root, percent) in [("/usr/bin", 30), ("/usr/lib", 50), ("/usr/share", 20)] {
            let budget = m.total_file_bytes() + (mib << 20) * percent / 100;
            let mut stack = vec![PathBuf::from(root)];
            while let Some(dir) = stack.pop() {
                let Ok(read) = fs::read_dir(&dir) else {
                    continue;
                };
                let mut children: Vec<_> = read.filter_map(|e| e.ok()).map(|e| e.path()).collect();
                children.sort();
                for path in children.into_iter().rev() {
                    let (Ok(meta), Some(name)) = (fs::symlink_metadata(&path), path.to_str())
                    else {
                        continue;
                    };
                    if meta.is_dir() {
                        stack.push(path);
                    } else if meta.file_type().is_symlink() {
                        if let Some(t) = fs::read_link(&path)
                            .ok()
                            .and_then(|t| t.to_str().map(String::from))
                        {
                            let _ = m.add_symlink(name, &t);
                        }
                    } else if meta.is_file()
                        && meta.len() < 32 << 20
                        && m.total_file_bytes() + meta.len() <= budget
                    {
                        if let Ok(data) = fs::read(&path) {
                            let _ = m.add_file(name, data, meta.mode() & 0o7777, 0, 0);
                        }
                    }
                }
            }
        }
        m
    }

    /// `cargo test -p eci-build --lib bench_write_speed -- --ignored --nocapture`
    /// (ECI_BENCH_MIB sets the size, ECI_BENCH_ZSTD_LEVELS="3,6,10" compares levels).
    #[test]
    #[ignore = "benchmark; run explicitly with --ignored --nocapture"]
    fn bench_write_speed() {
        use std::time::Instant;
        let mib = std::env::var("ECI_BENCH_MIB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300);
        let t = Instant::now();
        let m = realistic_manifest(mib);
        let total = m.total_file_bytes() as f64 / (1 << 20) as f64;
        println!(
            "manifest: {} entries, {total:.0} MiB file data, loaded in {:.2?}",
            m.len(),
            t.elapsed()
        );
        let t = Instant::now();
        let stats = write_cpio(&m, EPOCH, io::sink()).unwrap();
        let secs = t.elapsed().as_secs_f64();
        println!(
            "write_cpio -> sink: {:.3} s, {:.0} MiB/s ({} bytes)",
            secs,
            stats.bytes as f64 / (1 << 20) as f64 / secs,
            stats.bytes
        );

        let t = Instant::now();
        let mut raw = Vec::with_capacity(stats.bytes as usize);
        write_cpio(&m, EPOCH, &mut raw).unwrap();
        println!("write_cpio -> new Vec: {:.3} s", t.elapsed().as_secs_f64());
        raw.clear();
        let t = Instant::now();
        write_cpio(&m, EPOCH, &mut raw).unwrap();
        println!(
            "write_cpio -> reused Vec: {:.3} s",
            t.elapsed().as_secs_f64()
        );
        if let Ok(levels) = std::env::var("ECI_BENCH_GZIP_LEVELS") {
            for level in levels
                .split(',')
                .filter_map(|l| l.trim().parse::<u32>().ok())
            {
                let t = Instant::now();
                let mut enc =
                    flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::new(level));
                enc.write_all(&raw).unwrap();
                let out = enc.finish().unwrap();
                println!(
                    "gzip level {level}: {:.2} s, {:.1} MiB",
                    t.elapsed().as_secs_f64(),
                    out.len() as f64 / (1 << 20) as f64
                );
            }
        }
        if let Ok(levels) = std::env::var("ECI_BENCH_ZSTD_LEVELS") {
            for level in levels
                .split(',')
                .filter_map(|l| l.trim().parse::<i32>().ok())
            {
                let t = Instant::now();
                let mut enc = zstd::stream::write::Encoder::new(Vec::new(), level).unwrap();
                enc.include_checksum(true).unwrap();
                enc.write_all(&raw).unwrap();
                let out = enc.finish().unwrap();
                println!(
                    "zstd level {level:>2}: {:.2} s, {:.1} MiB ({:.1}%)",
                    t.elapsed().as_secs_f64(),
                    out.len() as f64 / (1 << 20) as f64,
                    100.0 * out.len() as f64 / raw.len() as f64
                );
            }
        }

        let dir = tempfile::tempdir().unwrap();
        for compression in [
            Compression::None,
            Compression::Zstd,
            Compression::Lz4,
            Compression::Gzip,
        ] {
            let t = Instant::now();
            let info = write_initramfs(&m, EPOCH, compression, &dir.path().join("initrd")).unwrap();
            println!(
                "write_initramfs {compression:>4}: {:.2} s, {:.1} MiB -> {:.1} MiB",
                t.elapsed().as_secs_f64(),
                info.uncompressed_size as f64 / (1 << 20) as f64,
                info.compressed_size as f64 / (1 << 20) as f64
            );
        }
    }
}
