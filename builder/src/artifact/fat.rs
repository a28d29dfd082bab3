//! A FAT32 writer (and reader) for the EFI System Partition, following Microsoft's "FAT:
//! General Overview of On-Disk Format" as the UEFI specification requires for an ESP.
//!
//! The writer formats a volume held in memory and fills it in one pass, so nothing depends on the
//! order a tool happened to copy files in:
//! - clusters are handed out in a fixed order (a directory, then its files by name, then its
//!   subdirectories by name), every file is contiguous;
//! - every timestamp is `SOURCE_DATE_EPOCH` (as UTC: FAT has no time zone), the volume serial
//!   number and label are the caller's;
//! - a name that fits 8.3 in one case gets a single short entry (lower case is kept with the
//!   Windows NT case flags, which Linux, Windows and EDK2 firmware all read); any other name
//!   gets long-name (VFAT) entries and a generated `BASIS~N.EXT` short name.
//!
//! The cluster size is the largest of 4 KiB, 2 KiB, 1 KiB and 512 bytes that still gives at least
//! 65,525 clusters: fewer clusters would make the volume FAT16 by definition, whatever its
//! boot sector says, and firmware decides the FAT type by that count alone.

use std::collections::BTreeSet;

pub const SECTOR: usize = 512;
const MIN_CLUSTERS: u64 = 65_525;
const MAX_CLUSTERS: u64 = 0x0FFF_FFF4;
const END_OF_CHAIN: u32 = 0x0FFF_FFFF;
const ENTRY: usize = 32;

const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_ARCHIVE: u8 = 0x20;
const ATTR_LONG_NAME: u8 = 0x0F;
const NT_LOWER_BASE: u8 = 0x08;
const NT_LOWER_EXT: u8 = 0x10;

#[derive(Debug, Clone)]
pub struct FatOptions<'a> {
    pub volume_id: u32,
    /// Up to 11 characters: A-Z, 0-9, space, `-` and `_`.
    pub label: &'a str,
    /// Seconds since 1970 for every timestamp.
    pub epoch: u64,
    /// LBA of the partition on its disk (the BPB's "hidden sectors").
    pub hidden_sectors: u32,
}

/// A file to store; directories are created from the paths.
#[derive(Debug, Clone, Copy)]
pub struct FatFile<'a> {
    /// `/`-separated, e.g. `EFI/BOOT/BOOTX64.EFI`.
    pub path: &'a str,
    pub data: &'a [u8],
}

/// What [`format`] laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatLayout {
    pub sectors_per_cluster: u32,
    pub reserved_sectors: u32,
    pub fat_sectors: u32,
    pub clusters: u32,
    pub used_clusters: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FatError {
    #[error("a FAT32 volume of {bytes} bytes is too small: FAT32 needs at least 65,525 clusters, about {min_mib} MiB with 512-byte clusters")]
    TooSmall { bytes: usize, min_mib: u64 },
    #[error("`{path}`: {why}")]
    BadName { path: String, why: &'static str },
    #[error("`{path}` is given twice (FAT names are case-insensitive)")]
    Duplicate { path: String },
    #[error("`{path}` is both a file and a directory")]
    Conflict { path: String },
    #[error("the files need {need} clusters, the volume has {have}; make the partition larger")]
    Full { need: u64, have: u64 },
    #[error("volume label `{0}`: use at most 11 characters from A-Z, 0-9, space, - and _")]
    BadLabel(String),
    #[error("not a valid FAT32 volume: {0}")]
    Corrupt(String),
}

enum Node<'a> {
    Dir(Dir<'a>),
    File { data: &'a [u8], cluster: u32 },
}

#[derive(Default)]
struct Dir<'a> {
    /// Sorted by name.
    children: Vec<(String, Node<'a>)>,
    cluster: u32,
    clusters: u32,
}

/// Formats `volume` (a zeroed, whole number of sectors) as FAT32 holding `files`.
pub fn format(
    volume: &mut [u8],
    options: &FatOptions<'_>,
    files: &[FatFile<'_>],
) -> Result<FatLayout, FatError> {
    let label = volume_label(options.label)?;
    let g = geometry(volume.len())?;
    let mut root = build_tree(files)?;
    let cluster_bytes = g.sectors_per_cluster as usize * SECTOR;

    let mut fat = vec![0u32; g.clusters as usize + 2];
    fat[0] = 0x0FFF_FFF8; // media descriptor F8 in the low byte
    fat[1] = END_OF_CHAIN; // "clean, no I/O errors"
    let mut next = 2u64;
    let need = count_clusters(&root, cluster_bytes, true);
    if need > u64::from(g.clusters) {
        return Err(FatError::Full {
            need,
            have: u64::from(g.clusters),
        });
    }
    allocate_dir(&mut root, true, cluster_bytes, &mut fat, &mut next);
    let used = (next - 2) as u32;

    let stamp = Stamp::from_epoch(options.epoch);
    let data_start = (g.reserved_sectors + 2 * g.fat_sectors) as usize * SECTOR;
    let mut ctx = WriteCtx {
        volume,
        data_start,
        cluster_bytes,
        stamp,
    };
    write_dir(&mut ctx, &root, 0, Some(&label))?;

    let volume = ctx.volume;
    let boot = boot_sector(&g, options, &label, volume.len());
    let info = fs_info(g.clusters - used, 2 + used);
    volume[..SECTOR].copy_from_slice(&boot);
    volume[SECTOR..2 * SECTOR].copy_from_slice(&info);
    volume[6 * SECTOR..7 * SECTOR].copy_from_slice(&boot);
    volume[7 * SECTOR..8 * SECTOR].copy_from_slice(&info);
    let fat_bytes: Vec<u8> = fat.iter().flat_map(|e| e.to_le_bytes()).collect();
    for copy in 0..2 {
        let at = (g.reserved_sectors + copy * g.fat_sectors) as usize * SECTOR;
        let len = g.fat_sectors as usize * SECTOR;
        volume[at..at + len].fill(0);
        volume[at..at + fat_bytes.len()].copy_from_slice(&fat_bytes);
    }
    Ok(FatLayout {
        sectors_per_cluster: g.sectors_per_cluster,
        reserved_sectors: g.reserved_sectors,
        fat_sectors: g.fat_sectors,
        clusters: g.clusters,
        used_clusters: used,
    })
}

#[derive(Debug, Clone, Copy)]
struct Geometry {
    sectors_per_cluster: u32,
    reserved_sectors: u32,
    fat_sectors: u32,
    clusters: u32,
}

fn geometry(bytes: usize) -> Result<Geometry, FatError> {
    let too_small = FatError::TooSmall {
        bytes,
        min_mib: (MIN_CLUSTERS * SECTOR as u64) / (1 << 20) + 1,
    };
    if !bytes.is_multiple_of(SECTOR) {
        return Err(too_small);
    }
    let total = (bytes / SECTOR) as u64;
    for spc in [8u64, 4, 2, 1] {
        let mut reserved = 32u64;
        let mut fat = 1u64;
        let clusters = loop {
            let data_start = reserved + 2 * fat;
            if data_start >= total {
                break 0;
            }
            let clusters = (total - data_start) / spc;
            let need = ((clusters + 2) * 4).div_ceil(SECTOR as u64);
            if need > fat {
                fat = need;
                continue;
            }
            // Start the data area on a cluster boundary (with the partition 1 MiB-aligned, a
            // 4 KiB cluster then never straddles a 4 KiB physical sector).
            let misalign = data_start % spc;
            if misalign != 0 {
                reserved += spc - misalign;
                continue;
            }
            break clusters;
        };
        if clusters >= MIN_CLUSTERS {
            return Ok(Geometry {
                sectors_per_cluster: spc as u32,
                reserved_sectors: reserved as u32,
                fat_sectors: fat as u32,
                clusters: clusters.min(MAX_CLUSTERS) as u32,
            });
        }
    }
    Err(too_small)
}

fn volume_label(label: &str) -> Result<[u8; 11], FatError> {
    let ok = label.len() <= 11
        && label
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b" -_".contains(&b));
    if !ok {
        return Err(FatError::BadLabel(label.to_string()));
    }
    let mut out = [b' '; 11];
    out[..label.len()].copy_from_slice(label.as_bytes());
    Ok(out)
}

fn build_tree<'a>(files: &[FatFile<'a>]) -> Result<Dir<'a>, FatError> {
    let mut root = Dir::default();
    for f in files {
        let parts: Vec<&str> = f.path.trim_start_matches('/').split('/').collect();
        for p in &parts {
            check_long_name(p).map_err(|why| FatError::BadName {
                path: f.path.to_string(),
                why,
            })?;
        }
        let (leaf, dirs) = parts.split_last().expect("split yields one part");
        let mut dir = &mut root;
        for d in dirs {
            let i = match dir
                .children
                .iter()
                .position(|(n, _)| n.eq_ignore_ascii_case(d))
            {
                Some(i) => i,
                None => {
                    dir.children
                        .push((d.to_string(), Node::Dir(Dir::default())));
                    dir.children.len() - 1
                }
            };
            dir = match &mut dir.children[i].1 {
                Node::Dir(sub) => sub,
                Node::File { .. } => {
                    return Err(FatError::Conflict {
                        path: f.path.to_string(),
                    })
                }
            };
        }
        if let Some((_, existing)) = dir
            .children
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(leaf))
        {
            return Err(match existing {
                Node::Dir(_) => FatError::Conflict {
                    path: f.path.to_string(),
                },
                Node::File { .. } => FatError::Duplicate {
                    path: f.path.to_string(),
                },
            });
        }
        dir.children.push((
            leaf.to_string(),
            Node::File {
                data: f.data,
                cluster: 0,
            },
        ));
    }
    sort_tree(&mut root);
    Ok(root)
}

fn sort_tree(dir: &mut Dir<'_>) {
    dir.children.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, c) in &mut dir.children {
        if let Node::Dir(d) = c {
            sort_tree(d);
        }
    }
}

fn check_long_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name == "." || name == ".." {
        return Err("empty, `.` or `..` path component");
    }
    if name.encode_utf16().count() > 255 {
        return Err("a name is longer than 255 UTF-16 code units");
    }
    if name
        .chars()
        .any(|c| (c as u32) < 0x20 || "\"*/:<>?\\|".contains(c))
    {
        return Err(
            "a name contains a character FAT does not allow (control, \" * / : < > ? \\ |)",
        );
    }
    if name.ends_with(' ') || name.ends_with('.') {
        return Err("a name ends with a space or a dot, which FAT drops");
    }
    Ok(())
}

/// How one name is stored in its directory.
struct DirName {
    short: [u8; 11],
    nt_case: u8,
    long: Option<Vec<u16>>,
}

impl DirName {
    fn slots(&self) -> usize {
        1 + self.long.as_ref().map_or(0, |l| l.len().div_ceil(13))
    }
}

fn is_short_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'()-@^_`{}~".contains(&b)
}

/// An 8.3 name in a single case, stored as a short entry with NT case flags.
fn plain_short(name: &str) -> Option<([u8; 11], u8)> {
    let (base, ext) = match name.rfind('.') {
        Some(0) => return None,
        Some(i) => (&name[..i], &name[i + 1..]),
        None => (name, ""),
    };
    if base.is_empty() || base.len() > 8 || ext.len() > 3 {
        return None;
    }
    if !base.bytes().chain(ext.bytes()).all(is_short_char) {
        return None;
    }
    let case = |s: &str| -> Option<bool> {
        let lower = s.bytes().any(|b| b.is_ascii_lowercase());
        let upper = s.bytes().any(|b| b.is_ascii_uppercase());
        if lower && upper {
            None
        } else {
            Some(lower)
        }
    };
    let mut flags = 0;
    if case(base)? {
        flags |= NT_LOWER_BASE;
    }
    if case(ext)? {
        flags |= NT_LOWER_EXT;
    }
    let mut short = [b' '; 11];
    for (i, b) in base.bytes().enumerate() {
        short[i] = b.to_ascii_uppercase();
    }
    for (i, b) in ext.bytes().enumerate() {
        short[8 + i] = b.to_ascii_uppercase();
    }
    Some((short, flags))
}

/// The `BASIS~N.EXT` short name for a long name, unique within `taken`.
fn generated_short(name: &str, taken: &BTreeSet<[u8; 11]>) -> [u8; 11] {
    let (base, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i + 1..]),
        _ => (name, ""),
    };
    let clean = |s: &str, max: usize| -> Vec<u8> {
        s.chars()
            .filter(|c| *c != ' ' && *c != '.')
            .map(|c| {
                let u = c.to_ascii_uppercase();
                if u.is_ascii() && is_short_char(u as u8) {
                    u as u8
                } else {
                    b'_'
                }
            })
            .take(max)
            .collect()
    };
    let mut basis = clean(base, 8);
    if basis.is_empty() {
        basis.push(b'_');
    }
    let ext = clean(ext, 3);
    for n in 1u32.. {
        let tail = format!("~{n}");
        let keep = basis.len().min(8 - tail.len());
        let mut short = [b' '; 11];
        short[..keep].copy_from_slice(&basis[..keep]);
        short[keep..keep + tail.len()].copy_from_slice(tail.as_bytes());
        short[8..8 + ext.len()].copy_from_slice(&ext);
        if !taken.contains(&short) {
            return short;
        }
    }
    unreachable!("some ~N is free")
}

fn dir_names(dir: &Dir<'_>) -> Vec<DirName> {
    let mut taken = BTreeSet::new();
    let mut names: Vec<Option<DirName>> = dir
        .children
        .iter()
        .map(|(n, _)| {
            plain_short(n).map(|(short, nt_case)| {
                taken.insert(short);
                DirName {
                    short,
                    nt_case,
                    long: None,
                }
            })
        })
        .collect();
    for (slot, (n, _)) in names.iter_mut().zip(&dir.children) {
        if slot.is_none() {
            let short = generated_short(n, &taken);
            taken.insert(short);
            *slot = Some(DirName {
                short,
                nt_case: 0,
                long: Some(n.encode_utf16().collect()),
            });
        }
    }
    names.into_iter().map(|n| n.expect("filled")).collect()
}

fn dir_entries(dir: &Dir<'_>, is_root: bool) -> usize {
    let fixed = if is_root { 1 } else { 2 }; // volume label, or `.` and `..`
    fixed + dir_names(dir).iter().map(DirName::slots).sum::<usize>()
}

fn clusters_for(bytes: usize, cluster_bytes: usize) -> u64 {
    bytes.div_ceil(cluster_bytes) as u64
}

fn count_clusters(dir: &Dir<'_>, cluster_bytes: usize, is_root: bool) -> u64 {
    let mut n = clusters_for(dir_entries(dir, is_root) * ENTRY, cluster_bytes).max(1);
    for (_, c) in &dir.children {
        n += match c {
            Node::Dir(d) => count_clusters(d, cluster_bytes, false),
            Node::File { data, .. } => clusters_for(data.len(), cluster_bytes),
        };
    }
    n
}

fn chain(fat: &mut [u32], next: &mut u64, count: u64) -> u32 {
    if count == 0 {
        return 0;
    }
    let first = *next as u32;
    for i in 0..count {
        let c = (*next + i) as usize;
        fat[c] = if i + 1 == count {
            END_OF_CHAIN
        } else {
            c as u32 + 1
        };
    }
    *next += count;
    first
}

fn allocate_dir(
    dir: &mut Dir<'_>,
    is_root: bool,
    cluster_bytes: usize,
    fat: &mut [u32],
    next: &mut u64,
) {
    let n = clusters_for(dir_entries(dir, is_root) * ENTRY, cluster_bytes).max(1);
    dir.clusters = n as u32;
    dir.cluster = chain(fat, next, n);
    for (_, c) in &mut dir.children {
        if let Node::File { data, cluster } = c {
            *cluster = chain(fat, next, clusters_for(data.len(), cluster_bytes));
        }
    }
    for (_, c) in &mut dir.children {
        if let Node::Dir(d) = c {
            allocate_dir(d, false, cluster_bytes, fat, next);
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Stamp {
    date: u16,
    time: u16,
}

impl Stamp {
    fn from_epoch(epoch: u64) -> Stamp {
        let (y, mo, d, h, mi, s) = super::civil(epoch);
        if y < 1980 {
            return Stamp {
                date: (1 << 5) | 1,
                time: 0,
            };
        }
        if y > 2107 {
            return Stamp {
                date: (127 << 9) | (12 << 5) | 31,
                time: (23 << 11) | (59 << 5) | 29,
            };
        }
        Stamp {
            date: (((y - 1980) as u16) << 9) | ((mo as u16) << 5) | d as u16,
            time: ((h as u16) << 11) | ((mi as u16) << 5) | (s as u16 / 2),
        }
    }
}

struct WriteCtx<'v> {
    volume: &'v mut [u8],
    data_start: usize,
    cluster_bytes: usize,
    stamp: Stamp,
}

impl WriteCtx<'_> {
    fn cluster_offset(&self, cluster: u32) -> usize {
        self.data_start + (cluster as usize - 2) * self.cluster_bytes
    }

    fn short_entry(
        &self,
        name: &[u8; 11],
        attr: u8,
        nt: u8,
        cluster: u32,
        size: u32,
    ) -> [u8; ENTRY] {
        let mut e = [0u8; ENTRY];
        e[0..11].copy_from_slice(name);
        e[11] = attr;
        e[12] = nt;
        e[13] = 0; // creation time, tenths of a second
        e[14..16].copy_from_slice(&self.stamp.time.to_le_bytes());
        e[16..18].copy_from_slice(&self.stamp.date.to_le_bytes());
        e[18..20].copy_from_slice(&self.stamp.date.to_le_bytes());
        e[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
        e[22..24].copy_from_slice(&self.stamp.time.to_le_bytes());
        e[24..26].copy_from_slice(&self.stamp.date.to_le_bytes());
        e[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
        e[28..32].copy_from_slice(&size.to_le_bytes());
        e
    }
}

fn lfn_checksum(short: &[u8; 11]) -> u8 {
    short
        .iter()
        .fold(0u8, |sum, &b| sum.rotate_right(1).wrapping_add(b))
}

fn lfn_entries(long: &[u16], checksum: u8) -> Vec<[u8; ENTRY]> {
    let n = long.len().div_ceil(13);
    let mut units = long.to_vec();
    if !units.len().is_multiple_of(13) {
        units.push(0);
    }
    units.resize(n * 13, 0xFFFF);
    (0..n)
        .rev()
        .map(|i| {
            let part = &units[i * 13..(i + 1) * 13];
            let mut e = [0u8; ENTRY];
            e[0] = (i as u8 + 1) | if i + 1 == n { 0x40 } else { 0 };
            let put = |e: &mut [u8; ENTRY], at: usize, us: &[u16]| {
                for (j, u) in us.iter().enumerate() {
                    e[at + 2 * j..at + 2 * j + 2].copy_from_slice(&u.to_le_bytes());
                }
            };
            put(&mut e, 1, &part[0..5]);
            e[11] = ATTR_LONG_NAME;
            e[13] = checksum;
            put(&mut e, 14, &part[5..11]);
            put(&mut e, 28, &part[11..13]);
            e
        })
        .collect()
}

fn write_dir(
    ctx: &mut WriteCtx<'_>,
    dir: &Dir<'_>,
    parent_cluster: u32,
    label: Option<&[u8; 11]>,
) -> Result<(), FatError> {
    let mut bytes: Vec<u8> = Vec::new();
    match label {
        Some(l) => bytes.extend(ctx.short_entry(l, ATTR_VOLUME_ID, 0, 0, 0)),
        None => {
            let mut dot = [b' '; 11];
            dot[0] = b'.';
            bytes.extend(ctx.short_entry(&dot, ATTR_DIRECTORY, 0, dir.cluster, 0));
            dot[1] = b'.';
            bytes.extend(ctx.short_entry(&dot, ATTR_DIRECTORY, 0, parent_cluster, 0));
        }
    }
    for (name, (_, node)) in dir_names(dir).iter().zip(&dir.children) {
        if let Some(long) = &name.long {
            for e in lfn_entries(long, lfn_checksum(&name.short)) {
                bytes.extend(e);
            }
        }
        let (attr, cluster, size) = match node {
            Node::Dir(d) => (ATTR_DIRECTORY, d.cluster, 0),
            Node::File { data, cluster } => (
                ATTR_ARCHIVE,
                *cluster,
                u32::try_from(data.len()).map_err(|_| FatError::BadName {
                    path: String::from_utf8_lossy(&name.short).into_owned(),
                    why: "a file is 4 GiB or larger, which FAT cannot store",
                })?,
            ),
        };
        bytes.extend(ctx.short_entry(&name.short, attr, name.nt_case, cluster, size));
    }
    let at = ctx.cluster_offset(dir.cluster);
    let len = dir.clusters as usize * ctx.cluster_bytes;
    ctx.volume[at..at + len].fill(0);
    ctx.volume[at..at + bytes.len()].copy_from_slice(&bytes);

    // `..` of a directory in the root names cluster 0, as the format requires.
    let own = if label.is_some() { 0 } else { dir.cluster };
    for (_, node) in &dir.children {
        match node {
            Node::File { data, cluster } if !data.is_empty() => {
                let at = ctx.cluster_offset(*cluster);
                ctx.volume[at..at + data.len()].copy_from_slice(data);
            }
            Node::File { .. } => {}
            Node::Dir(d) => write_dir(ctx, d, own, None)?,
        }
    }
    Ok(())
}

fn boot_sector(g: &Geometry, o: &FatOptions<'_>, label: &[u8; 11], bytes: usize) -> [u8; SECTOR] {
    let mut b = [0u8; SECTOR];
    b[0..3].copy_from_slice(&[0xEB, 0x58, 0x90]);
    // The OEM name most FAT drivers expect; some old ones treat other values as suspect.
    b[3..11].copy_from_slice(b"MSWIN4.1");
    b[11..13].copy_from_slice(&(SECTOR as u16).to_le_bytes());
    b[13] = g.sectors_per_cluster as u8;
    b[14..16].copy_from_slice(&(g.reserved_sectors as u16).to_le_bytes());
    b[16] = 2; // FAT copies
    b[21] = 0xF8; // fixed disk
    b[24..26].copy_from_slice(&63u16.to_le_bytes());
    b[26..28].copy_from_slice(&255u16.to_le_bytes());
    b[28..32].copy_from_slice(&o.hidden_sectors.to_le_bytes());
    b[32..36].copy_from_slice(&((bytes / SECTOR) as u32).to_le_bytes());
    b[36..40].copy_from_slice(&g.fat_sectors.to_le_bytes());
    b[44..48].copy_from_slice(&2u32.to_le_bytes()); // root directory cluster
    b[48..50].copy_from_slice(&1u16.to_le_bytes()); // FSInfo sector
    b[50..52].copy_from_slice(&6u16.to_le_bytes()); // backup boot sector
    b[64] = 0x80;
    b[66] = 0x29; // the next three fields are present
    b[67..71].copy_from_slice(&o.volume_id.to_le_bytes());
    b[71..82].copy_from_slice(label);
    b[82..90].copy_from_slice(b"FAT32   ");
    // Not a BIOS boot volume: if a BIOS ever jumps here, halt instead of running zeros.
    b[90..94].copy_from_slice(&[0xFA, 0xF4, 0xEB, 0xFD]);
    b[510] = 0x55;
    b[511] = 0xAA;
    b
}

fn fs_info(free: u32, next_free: u32) -> [u8; SECTOR] {
    let mut s = [0u8; SECTOR];
    s[0..4].copy_from_slice(&0x4161_5252u32.to_le_bytes());
    s[484..488].copy_from_slice(&0x6141_7272u32.to_le_bytes());
    s[488..492].copy_from_slice(&free.to_le_bytes());
    s[492..496].copy_from_slice(&next_free.to_le_bytes());
    s[508..512].copy_from_slice(&0xAA55_0000u32.to_le_bytes());
    s
}

/// A file or directory found by [`read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEntry {
    /// `/`-separated, long names where present.
    pub path: String,
    pub is_dir: bool,
    pub data: Vec<u8>,
}

/// Reads every file and directory of a FAT32 volume (used to check the writer and the disks it
/// is part of). Checks that both FAT copies agree and that chains stay inside the volume.
pub fn read(volume: &[u8]) -> Result<Vec<ReadEntry>, FatError> {
    let bad = |m: &str| FatError::Corrupt(m.to_string());
    if volume.len() < SECTOR || volume[510..512] != [0x55, 0xAA] {
        return Err(bad("no boot sector signature"));
    }
    let u16_at = |o: usize| u16::from_le_bytes([volume[o], volume[o + 1]]) as usize;
    let u32_at =
        |o: usize| u32::from_le_bytes(volume[o..o + 4].try_into().expect("4 bytes")) as usize;
    if u16_at(11) != SECTOR || u16_at(17) != 0 || u16_at(22) != 0 {
        return Err(bad("not a FAT32 BPB with 512-byte sectors"));
    }
    let spc = volume[13] as usize;
    let reserved = u16_at(14);
    let fats = volume[16] as usize;
    let fat_sectors = u32_at(36);
    let root = u32_at(44) as u32;
    let total = u32_at(32);
    if spc == 0 || fats == 0 || total * SECTOR > volume.len() {
        return Err(bad("geometry does not fit the volume"));
    }
    let fat_len = fat_sectors * SECTOR;
    let fat_at = reserved * SECTOR;
    let first = &volume[fat_at..fat_at + fat_len];
    for i in 1..fats {
        if &volume[fat_at + i * fat_len..fat_at + (i + 1) * fat_len] != first {
            return Err(bad("the FAT copies differ"));
        }
    }
    let data_start = fat_at + fats * fat_len;
    let cluster_bytes = spc * SECTOR;
    let clusters = (total * SECTOR - data_start) / cluster_bytes;
    let fat_entry = |c: u32| -> u32 {
        let o = c as usize * 4;
        u32::from_le_bytes(first[o..o + 4].try_into().expect("4 bytes")) & 0x0FFF_FFFF
    };
    let read_chain = |start: u32, limit: Option<usize>| -> Result<Vec<u8>, FatError> {
        let mut out = Vec::new();
        let mut c = start;
        let mut hops = 0;
        while (2..0x0FFF_FFF8).contains(&c) {
            if c as usize >= clusters + 2 || hops > clusters {
                return Err(bad("a cluster chain leaves the volume or loops"));
            }
            let at = data_start + (c as usize - 2) * cluster_bytes;
            out.extend_from_slice(&volume[at..at + cluster_bytes]);
            if limit.is_some_and(|l| out.len() >= l) {
                break;
            }
            c = fat_entry(c);
            hops += 1;
        }
        if let Some(l) = limit {
            if out.len() < l {
                return Err(bad("a file's chain is shorter than its size"));
            }
            out.truncate(l);
        }
        Ok(out)
    };

    let mut found = Vec::new();
    let mut pending = vec![(String::new(), root)];
    while let Some((prefix, cluster)) = pending.pop() {
        let bytes = read_chain(cluster, None)?;
        let mut long: Vec<(u8, Vec<u16>, u8)> = Vec::new();
        for e in bytes.chunks_exact(ENTRY) {
            if e[0] == 0 {
                break;
            }
            if e[0] == 0xE5 {
                long.clear();
                continue;
            }
            if e[11] == ATTR_LONG_NAME {
                let mut units = Vec::new();
                for r in [1..11, 14..26, 28..32] {
                    units.extend(
                        e[r].chunks_exact(2)
                            .map(|c| u16::from_le_bytes([c[0], c[1]])),
                    );
                }
                long.push((e[0], units, e[13]));
                continue;
            }
            let short: [u8; 11] = e[0..11].try_into().expect("11 bytes");
            if e[11] & ATTR_VOLUME_ID != 0 || short[0] == b'.' {
                long.clear();
                continue;
            }
            let name = long_name(&long, &short).unwrap_or_else(|| short_name(&short, e[12]));
            long.clear();
            let path = format!("{prefix}{name}");
            let first = (u32::from(u16::from_le_bytes([e[20], e[21]])) << 16)
                | u32::from(u16::from_le_bytes([e[26], e[27]]));
            if e[11] & ATTR_DIRECTORY != 0 {
                found.push(ReadEntry {
                    path: path.clone(),
                    is_dir: true,
                    data: Vec::new(),
                });
                pending.push((format!("{path}/"), first));
            } else {
                let size = u32::from_le_bytes(e[28..32].try_into().expect("4 bytes")) as usize;
                let data = if size == 0 {
                    Vec::new()
                } else {
                    read_chain(first, Some(size))?
                };
                found.push(ReadEntry {
                    path,
                    is_dir: false,
                    data,
                });
            }
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

/// The long name the collected VFAT entries spell, if they belong to `short`.
fn long_name(parts: &[(u8, Vec<u16>, u8)], short: &[u8; 11]) -> Option<String> {
    if parts.is_empty() {
        return None;
    }
    let sum = lfn_checksum(short);
    if parts.iter().any(|(_, _, s)| *s != sum) || parts[0].0 & 0x40 == 0 {
        return None;
    }
    let mut units = Vec::new();
    for (_, u, _) in parts.iter().rev() {
        units.extend_from_slice(u);
    }
    let end = units.iter().position(|&u| u == 0).unwrap_or(units.len());
    String::from_utf16(&units[..end]).ok()
}

fn short_name(short: &[u8; 11], nt: u8) -> String {
    let part = |b: &[u8], lower: bool| -> String {
        let s = String::from_utf8_lossy(b).trim_end().to_string();
        if lower {
            s.to_ascii_lowercase()
        } else {
            s
        }
    };
    let base = part(&short[..8], nt & NT_LOWER_BASE != 0);
    let ext = part(&short[8..], nt & NT_LOWER_EXT != 0);
    if ext.is_empty() {
        base
    } else {
        format!("{base}.{ext}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::run_ok;
    use std::process::Command;

    const MIB: usize = 1 << 20;

    fn options() -> FatOptions<'static> {
        FatOptions {
            volume_id: 0x1234_5678,
            label: "ECI-ESP",
            epoch: 1_747_699_200, // 2025-05-20T00:00:00Z
            hidden_sectors: 2048,
        }
    }

    fn sample(big: &[u8]) -> Vec<FatFile<'_>> {
        vec![
            FatFile {
                path: "EFI/BOOT/BOOTX64.EFI",
                data: b"MZ loader",
            },
            FatFile {
                path: "loader/loader.conf",
                data: b"timeout 0\n",
            },
            FatFile {
                path: "loader/entries/eci.conf",
                data: b"title eci\n",
            },
            FatFile {
                path: "eci/vmlinuz",
                data: big,
            },
            FatFile {
                path: "eci/initramfs.img",
                data: &big[..big.len() / 3],
            },
            FatFile {
                path: "eci/empty",
                data: b"",
            },
            FatFile {
                path: "eci/A Long Mixed-Case Name with ünïcode.txt",
                data: b"x",
            },
        ]
    }

    fn big() -> Vec<u8> {
        (0..3 * MIB + 17).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn round_trip_keeps_names_case_and_contents() {
        let big = big();
        let mut vol = vec![0u8; 300 * MIB];
        let layout = format(&mut vol, &options(), &sample(&big)).unwrap();
        assert_eq!(layout.sectors_per_cluster, 8, "4 KiB clusters at 300 MiB");
        assert!(layout.clusters >= 65_525);
        assert_eq!(
            (layout.reserved_sectors + 2 * layout.fat_sectors) % layout.sectors_per_cluster,
            0
        );
        let read = read(&vol).unwrap();
        let files: Vec<(&str, &[u8])> = read
            .iter()
            .filter(|e| !e.is_dir)
            .map(|e| (e.path.as_str(), e.data.as_slice()))
            .collect();
        let mut want: Vec<(&str, &[u8])> = sample(&big).iter().map(|f| (f.path, f.data)).collect();
        want.sort();
        assert_eq!(files, want);
        let dirs: Vec<&str> = read
            .iter()
            .filter(|e| e.is_dir)
            .map(|e| e.path.as_str())
            .collect();
        assert_eq!(dirs, ["EFI", "EFI/BOOT", "eci", "loader", "loader/entries"]);
    }

    #[test]
    fn same_input_same_bytes_and_epoch_in_timestamps() {
        let big = big();
        let mut a = vec![0u8; 40 * MIB];
        let mut b = vec![0u8; 40 * MIB];
        format(&mut a, &options(), &sample(&big)).unwrap();
        format(&mut b, &options(), &sample(&big)).unwrap();
        assert!(a == b);
        let mut later = options();
        later.epoch += 3600;
        let mut c = vec![0u8; 40 * MIB];
        format(&mut c, &later, &sample(&big)).unwrap();
        assert!(a != c, "timestamps come from the epoch");
        let stamp = Stamp::from_epoch(1_747_699_200);
        assert_eq!(stamp.date, ((2025 - 1980) << 9) | (5 << 5) | 20);
        assert_eq!(stamp.time, 0);
        assert_eq!(Stamp::from_epoch(0).date, (1 << 5) | 1, "clamped to 1980");
    }

    #[test]
    fn small_volumes_use_smaller_clusters_or_are_refused() {
        let mut vol = vec![0u8; 40 * MIB];
        let layout = format(&mut vol, &options(), &[]).unwrap();
        assert_eq!(layout.sectors_per_cluster, 1);
        assert!(layout.clusters >= 65_525);
        let mut tiny = vec![0u8; 16 * MIB];
        assert!(matches!(
            format(&mut tiny, &options(), &[]),
            Err(FatError::TooSmall { .. })
        ));
        let big = vec![1u8; 40 * MIB];
        let mut vol = vec![0u8; 40 * MIB];
        assert!(matches!(
            format(
                &mut vol,
                &options(),
                &[FatFile {
                    path: "x",
                    data: &big
                }]
            ),
            Err(FatError::Full { .. })
        ));
    }

    #[test]
    fn bad_names_and_duplicates_are_refused() {
        let mut vol = vec![0u8; 40 * MIB];
        let f = |path| FatFile { path, data: b"" };
        for bad in ["a/../b", "a//b", "what?", "trailing."] {
            assert!(
                matches!(
                    format(&mut vol, &options(), &[f(bad)]),
                    Err(FatError::BadName { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            format(&mut vol, &options(), &[f("A/b"), f("a/B")]),
            Err(FatError::Duplicate { .. })
        ));
        assert!(matches!(
            format(&mut vol, &options(), &[f("a"), f("a/b")]),
            Err(FatError::Conflict { .. })
        ));
        assert!(matches!(
            format(
                &mut vol,
                &FatOptions {
                    label: "lower",
                    ..options()
                },
                &[]
            ),
            Err(FatError::BadLabel(_))
        ));
    }

    #[test]
    fn short_names() {
        assert_eq!(plain_short("BOOTX64.EFI"), Some((*b"BOOTX64 EFI", 0)));
        assert_eq!(
            plain_short("vmlinuz"),
            Some((*b"VMLINUZ    ", NT_LOWER_BASE))
        );
        assert_eq!(plain_short("Mixed"), None);
        assert_eq!(plain_short("loader.conf"), None);
        let mut taken = BTreeSet::new();
        let a = generated_short("initramfs.img", &taken);
        assert_eq!(&a, b"INITRA~1IMG");
        taken.insert(a);
        assert_eq!(&generated_short("initramfs.imgz", &taken), b"INITRA~2IMG");
        assert_eq!(&generated_short("a+b c.conf", &taken), b"A_BC~1  CON");
    }

    /// dosfstools' fsck and mtools are independent implementations of the format.
    #[test]
    fn fsck_and_mtools_accept_the_volume() {
        use eci_test_support::{have, prerequisite};
        let big = big();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("esp.img");
        let mut vol = vec![0u8; 300 * MIB];
        format(&mut vol, &options(), &sample(&big)).unwrap();
        std::fs::write(&path, &vol).unwrap();
        if prerequisite(
            have("fsck.vfat"),
            "fsck: fsck.vfat is not installed (apt-get install dosfstools)",
        ) {
            let out = Command::new("fsck.vfat")
                .args(["-n", "-V"])
                .arg(&path)
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "fsck.vfat:\n{text}");
            assert!(!text.contains("differ"), "fsck.vfat:\n{text}");
        }
        if prerequisite(
            have("mdir"),
            "mtools: mdir is not installed (apt-get install mtools)",
        ) {
            let img = path.to_str().unwrap();
            let out = Command::new("mdir")
                .args(["-i", img, "-/", "-b", "::"])
                .env("MTOOLS_SKIP_CHECK", "0")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            for want in [
                "::/EFI/BOOT/BOOTX64.EFI",
                "::/loader/entries/eci.conf",
                "::/eci/initramfs.img",
                "::/eci/A Long Mixed-Case Name with ünïcode.txt",
            ] {
                assert!(text.lines().any(|l| l == want), "{want} missing:\n{text}");
            }
            let copy = dir.path().join("vmlinuz");
            run_ok(
                Command::new("mcopy")
                    .args(["-i", img, "::/eci/vmlinuz"])
                    .arg(&copy),
            );
            assert!(std::fs::read(&copy).unwrap() == big);
            let label = Command::new("mlabel")
                .args(["-i", img, "-s", "::"])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&label.stdout);
            assert!(text.contains("ECI-ESP"), "{text}");
        }
    }
}
