//! A dynamic VHDX writer ([MS-VHDX] version 1, the format Hyper-V uses) and a small reader.
//!
//! `qemu-img convert -O vhdx` would do the conversion, but it fills the headers with random
//! GUIDs (FileWriteGuid, DataWriteGuid) and a random virtual disk id, so two conversions of one
//! raw image differ. This writer takes every identifier from the caller.
//!
//! File layout (every structure 1 MiB-aligned, as the format requires):
//!
//! | offset | contents |
//! |---|---|
//! | 0 | file type identifier, two headers, two region tables (1 MiB) |
//! | 1 MiB | log, 1 MiB, empty (LogGuid is zero: nothing to replay) |
//! | 2 MiB | metadata region, 1 MiB |
//! | 3 MiB | BAT, rounded up to whole MiB |
//! | after | payload blocks that hold non-zero data, in virtual order |
//!
//! Blocks that are all zeros are not stored: their BAT entry says PAYLOAD_BLOCK_ZERO, which
//! readers must return as zeros. (NOT_PRESENT, what Hyper-V writes for a fresh disk, lets a
//! reader return arbitrary data, and a boot disk's free FAT entries must read as zero.)
//!
//! Checksums are CRC-32C (Castagnoli), as the specification says.

use super::guid::Guid;
use sha2::{Digest, Sha256};
use std::io::{self, Write};

const MIB: u64 = 1 << 20;
const KIB64: usize = 64 * 1024;

const BAT_REGION: Guid = Guid::from_fields(
    0x2DC2_7766,
    0xF623,
    0x4200,
    [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08],
);
const METADATA_REGION: Guid = Guid::from_fields(
    0x8B7C_A206,
    0x4790,
    0x4B9A,
    [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E],
);
const FILE_PARAMETERS: Guid = Guid::from_fields(
    0xCAA1_6737,
    0xFA36,
    0x4D43,
    [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B],
);
const VIRTUAL_DISK_SIZE: Guid = Guid::from_fields(
    0x2FA5_4224,
    0xCD1B,
    0x4876,
    [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8],
);
const VIRTUAL_DISK_ID: Guid = Guid::from_fields(
    0xBECA_12AB,
    0xB2E6,
    0x4523,
    [0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46],
);
const LOGICAL_SECTOR_SIZE: Guid = Guid::from_fields(
    0x8141_BF1D,
    0xA96F,
    0x4709,
    [0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F],
);
const PHYSICAL_SECTOR_SIZE: Guid = Guid::from_fields(
    0xCDA3_48C7,
    0x445D,
    0x4471,
    [0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56],
);

const PAYLOAD_BLOCK_ZERO: u64 = 2;
const PAYLOAD_BLOCK_FULLY_PRESENT: u64 = 6;

const LOG_OFFSET: u64 = MIB;
const LOG_LENGTH: u64 = MIB;
const METADATA_OFFSET: u64 = 2 * MIB;
const METADATA_LENGTH: u64 = MIB;
const BAT_OFFSET: u64 = 3 * MIB;

/// Identity and geometry of a VHDX.
#[derive(Debug, Clone)]
pub struct VhdxOptions {
    pub virtual_size: u64,
    /// Payload block size: a power of two from 1 MiB to 256 MiB.
    pub block_size: u32,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    /// The disk's identity as the guest sees it (SCSI page 83).
    pub disk_id: Guid,
    pub file_write_guid: Guid,
    pub data_write_guid: Guid,
    /// Diagnostic only (the format forbids acting on it).
    pub creator: String,
}

#[derive(Debug, thiserror::Error)]
pub enum VhdxError {
    #[error("VHDX: {0}")]
    Invalid(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhdxInfo {
    pub file_size: u64,
    pub sha256: String,
    pub stored_blocks: u64,
    pub total_blocks: u64,
}

impl VhdxOptions {
    fn check(&self, payload_len: usize) -> Result<(), VhdxError> {
        let bad = |m: String| Err(VhdxError::Invalid(m));
        if !self.block_size.is_power_of_two()
            || !(MIB as u32..=256 * MIB as u32).contains(&self.block_size)
        {
            return bad(format!(
                "block size {} is not a power of two between 1 MiB and 256 MiB",
                self.block_size
            ));
        }
        for s in [self.logical_sector_size, self.physical_sector_size] {
            if s != 512 && s != 4096 {
                return bad(format!("sector size {s} is neither 512 nor 4096"));
            }
        }
        if self.virtual_size == 0
            || !self
                .virtual_size
                .is_multiple_of(u64::from(self.logical_sector_size))
            || self.virtual_size > 64 << 40
        {
            return bad(format!(
                "virtual size {} is not a positive multiple of the sector size up to 64 TiB",
                self.virtual_size
            ));
        }
        if payload_len as u64 > self.virtual_size {
            return bad(format!(
                "{payload_len} bytes of data do not fit a {} byte disk",
                self.virtual_size
            ));
        }
        if self.creator.encode_utf16().count() > 255 {
            return bad("creator longer than 255 UTF-16 units".into());
        }
        Ok(())
    }

    fn chunk_ratio(&self) -> u64 {
        ((1u64 << 23) * u64::from(self.logical_sector_size)) / u64::from(self.block_size)
    }

    fn blocks(&self) -> u64 {
        self.virtual_size.div_ceil(u64::from(self.block_size))
    }

    fn bat_entries(&self) -> u64 {
        let blocks = self.blocks();
        // One sector-bitmap entry after every `chunk_ratio` payload entries; the last chunk's
        // entry is omitted for non-differencing disks.
        blocks + (blocks - 1) / self.chunk_ratio()
    }
}

/// Writes a dynamic VHDX whose virtual disk starts with `payload` and is zero after it.
pub fn write_dynamic<W: Write>(
    out: W,
    opts: &VhdxOptions,
    payload: &[u8],
) -> Result<VhdxInfo, VhdxError> {
    opts.check(payload.len())?;
    let block = opts.block_size as usize;
    let blocks = opts.blocks();
    let ratio = opts.chunk_ratio();
    let bat_len = (opts.bat_entries() * 8).div_ceil(MIB) * MIB;

    let zero = vec![0u8; block];
    let block_data = |i: u64| -> Option<&[u8]> {
        let start = i as usize * block;
        if start >= payload.len() {
            return None;
        }
        let data = &payload[start..payload.len().min(start + block)];
        (data != &zero[..data.len()]).then_some(data)
    };

    let mut bat = vec![0u8; bat_len as usize];
    let mut next = BAT_OFFSET + bat_len;
    let mut stored = Vec::new();
    for i in 0..blocks {
        let entry = match block_data(i) {
            Some(_) => {
                stored.push(i);
                let e = PAYLOAD_BLOCK_FULLY_PRESENT | ((next / MIB) << 20);
                next += u64::from(opts.block_size);
                e
            }
            None => PAYLOAD_BLOCK_ZERO,
        };
        let at = ((i + i / ratio) * 8) as usize;
        bat[at..at + 8].copy_from_slice(&entry.to_le_bytes());
    }

    let mut w = HashingWriter::new(out);
    w.write_all(&header_section(opts, bat_len))?;
    w.write_zeros(LOG_LENGTH)?;
    w.write_all(&metadata_region(opts))?;
    w.write_all(&bat)?;
    for &i in &stored {
        let data = block_data(i).expect("stored blocks have data");
        w.write_all(data)?;
        w.write_zeros((block - data.len()) as u64)?;
    }
    w.flush()?;
    Ok(VhdxInfo {
        file_size: w.written,
        sha256: hex::encode(w.hasher.finalize()),
        stored_blocks: stored.len() as u64,
        total_blocks: blocks,
    })
}

fn header_section(opts: &VhdxOptions, bat_len: u64) -> Vec<u8> {
    let mut s = vec![0u8; MIB as usize];
    s[0..8].copy_from_slice(b"vhdxfile");
    for (i, u) in opts.creator.encode_utf16().enumerate() {
        s[8 + 2 * i..10 + 2 * i].copy_from_slice(&u.to_le_bytes());
    }
    // Two headers with consecutive sequence numbers: the second is current, and whoever opens
    // the file for writing next overwrites the first, as the format's update procedure says.
    for (slot, sequence) in [(1usize, 1u64), (2, 2)] {
        let h = &mut s[slot * KIB64..slot * KIB64 + 4096];
        h[0..4].copy_from_slice(b"head");
        h[8..16].copy_from_slice(&sequence.to_le_bytes());
        h[16..32].copy_from_slice(&opts.file_write_guid.to_le_bytes());
        h[32..48].copy_from_slice(&opts.data_write_guid.to_le_bytes());
        // 48..64 LogGuid: zero, no log entries to replay. 64..66 LogVersion 0.
        h[66..68].copy_from_slice(&1u16.to_le_bytes());
        h[68..72].copy_from_slice(&(LOG_LENGTH as u32).to_le_bytes());
        h[72..80].copy_from_slice(&LOG_OFFSET.to_le_bytes());
        let crc = crc32c(h);
        h[4..8].copy_from_slice(&crc.to_le_bytes());
    }
    for slot in [3usize, 4] {
        let t = &mut s[slot * KIB64..(slot + 1) * KIB64];
        t[0..4].copy_from_slice(b"regi");
        t[8..12].copy_from_slice(&2u32.to_le_bytes());
        let entries = [
            (BAT_REGION, BAT_OFFSET, bat_len),
            (METADATA_REGION, METADATA_OFFSET, METADATA_LENGTH),
        ];
        for (i, (guid, offset, len)) in entries.iter().enumerate() {
            let e = &mut t[16 + 32 * i..16 + 32 * (i + 1)];
            e[0..16].copy_from_slice(&guid.to_le_bytes());
            e[16..24].copy_from_slice(&offset.to_le_bytes());
            e[24..28].copy_from_slice(&(*len as u32).to_le_bytes());
            e[28..32].copy_from_slice(&1u32.to_le_bytes()); // required
        }
        let crc = crc32c(t);
        t[4..8].copy_from_slice(&crc.to_le_bytes());
    }
    s
}

fn metadata_region(opts: &VhdxOptions) -> Vec<u8> {
    const IS_VIRTUAL_DISK: u32 = 1 << 1;
    const IS_REQUIRED: u32 = 1 << 2;
    let mut m = vec![0u8; METADATA_LENGTH as usize];
    m[0..8].copy_from_slice(b"metadata");
    let items: [(Guid, Vec<u8>, u32); 5] = [
        (
            FILE_PARAMETERS,
            [opts.block_size.to_le_bytes(), 0u32.to_le_bytes()].concat(),
            IS_REQUIRED,
        ),
        (
            VIRTUAL_DISK_SIZE,
            opts.virtual_size.to_le_bytes().to_vec(),
            IS_VIRTUAL_DISK | IS_REQUIRED,
        ),
        (
            VIRTUAL_DISK_ID,
            opts.disk_id.to_le_bytes().to_vec(),
            IS_VIRTUAL_DISK | IS_REQUIRED,
        ),
        (
            LOGICAL_SECTOR_SIZE,
            opts.logical_sector_size.to_le_bytes().to_vec(),
            IS_VIRTUAL_DISK | IS_REQUIRED,
        ),
        (
            PHYSICAL_SECTOR_SIZE,
            opts.physical_sector_size.to_le_bytes().to_vec(),
            IS_VIRTUAL_DISK | IS_REQUIRED,
        ),
    ];
    m[10..12].copy_from_slice(&(items.len() as u16).to_le_bytes());
    // Items follow the 64 KiB table, packed in table order.
    let mut offset = KIB64;
    for (i, (guid, data, flags)) in items.iter().enumerate() {
        let e = &mut m[32 + 32 * i..32 + 32 * (i + 1)];
        e[0..16].copy_from_slice(&guid.to_le_bytes());
        e[16..20].copy_from_slice(&(offset as u32).to_le_bytes());
        e[20..24].copy_from_slice(&(data.len() as u32).to_le_bytes());
        e[24..28].copy_from_slice(&flags.to_le_bytes());
        m[offset..offset + data.len()].copy_from_slice(data);
        offset += data.len();
    }
    m
}

struct HashingWriter<W: Write> {
    inner: io::BufWriter<W>,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner: io::BufWriter::with_capacity(1 << 20, inner),
            hasher: Sha256::new(),
            written: 0,
        }
    }

    fn write_zeros(&mut self, mut n: u64) -> io::Result<()> {
        let zeros = [0u8; 64 * 1024];
        while n > 0 {
            let k = n.min(zeros.len() as u64) as usize;
            self.write_all(&zeros[..k])?;
            n -= k as u64;
        }
        Ok(())
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78).
pub fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    !data.iter().fold(!0u32, |c, &b| {
        TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8)
    })
}

/// A parsed VHDX, enough to read its virtual disk back (tests and inspection).
#[derive(Debug, Clone)]
pub struct VhdxReader<'a> {
    file: &'a [u8],
    pub virtual_size: u64,
    pub block_size: u32,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    pub disk_id: Guid,
    pub file_write_guid: Guid,
    pub data_write_guid: Guid,
    bat: Vec<u64>,
    chunk_ratio: u64,
}

impl<'a> VhdxReader<'a> {
    /// Parses and checks the headers, region tables, metadata and BAT.
    pub fn open(file: &'a [u8]) -> Result<Self, VhdxError> {
        let bad = |m: &str| VhdxError::Invalid(m.to_string());
        if file.len() < 3 * MIB as usize || &file[0..8] != b"vhdxfile" {
            return Err(bad("no `vhdxfile` signature"));
        }
        let header = |slot: usize| -> Option<(u64, &[u8])> {
            let h = &file[slot * KIB64..slot * KIB64 + 4096];
            let mut copy = h.to_vec();
            copy[4..8].fill(0);
            let ok = &h[0..4] == b"head" && crc32c(&copy) == u32_le(h, 4);
            ok.then(|| (u64_le(h, 8), h))
        };
        let (_, h) = match (header(1), header(2)) {
            (Some(a), Some(b)) if a.0 == b.0 => {
                return Err(bad("both headers have one sequence number"))
            }
            (Some(a), Some(b)) => {
                if a.0 > b.0 {
                    a
                } else {
                    b
                }
            }
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return Err(bad("no valid header")),
        };
        if h[48..64].iter().any(|&b| b != 0) {
            return Err(bad("the log has entries to replay"));
        }
        if u16_le(h, 66) != 1 {
            return Err(bad("version is not 1"));
        }
        let region = &file[3 * KIB64..4 * KIB64];
        let mut copy = region.to_vec();
        copy[4..8].fill(0);
        if &region[0..4] != b"regi" || crc32c(&copy) != u32_le(region, 4) {
            return Err(bad("region table signature or checksum"));
        }
        if region != &file[4 * KIB64..5 * KIB64] {
            return Err(bad("the two region tables differ"));
        }
        let mut bat_at = None;
        let mut meta_at = None;
        for i in 0..u32_le(region, 8) as usize {
            let e = &region[16 + 32 * i..16 + 32 * (i + 1)];
            let guid = Guid::from_le_bytes(e[0..16].try_into().expect("16"));
            let range = (u64_le(e, 16) as usize, u32_le(e, 24) as usize);
            if guid == BAT_REGION {
                bat_at = Some(range);
            } else if guid == METADATA_REGION {
                meta_at = Some(range);
            } else if u32_le(e, 28) & 1 != 0 {
                return Err(bad("an unknown required region"));
            }
        }
        let (meta_off, meta_len) = meta_at.ok_or_else(|| bad("no metadata region"))?;
        let meta = file
            .get(meta_off..meta_off + meta_len)
            .ok_or_else(|| bad("metadata region beyond the file"))?;
        if &meta[0..8] != b"metadata" {
            return Err(bad("metadata signature"));
        }
        let item = |want: Guid| -> Option<&[u8]> {
            (0..u16_le(meta, 10) as usize).find_map(|i| {
                let e = &meta[32 + 32 * i..32 + 32 * (i + 1)];
                let guid = Guid::from_le_bytes(e[0..16].try_into().expect("16"));
                let (o, l) = (u32_le(e, 16) as usize, u32_le(e, 20) as usize);
                (guid == want).then(|| &meta[o..o + l])
            })
        };
        let need = |g: Guid, what: &str| item(g).ok_or_else(|| bad(&format!("no {what} item")));
        let params = need(FILE_PARAMETERS, "file parameters")?;
        if u32_le(params, 4) & 2 != 0 {
            return Err(bad("differencing disks are not supported"));
        }
        let block_size = u32_le(params, 0);
        let virtual_size = u64_le(need(VIRTUAL_DISK_SIZE, "virtual disk size")?, 0);
        let logical = u32_le(need(LOGICAL_SECTOR_SIZE, "logical sector size")?, 0);
        let physical = u32_le(need(PHYSICAL_SECTOR_SIZE, "physical sector size")?, 0);
        let disk_id = Guid::from_le_bytes(
            need(VIRTUAL_DISK_ID, "virtual disk id")?[0..16]
                .try_into()
                .expect("16"),
        );
        let opts = VhdxOptions {
            virtual_size,
            block_size,
            logical_sector_size: logical,
            physical_sector_size: physical,
            disk_id,
            file_write_guid: Guid::from_le_bytes(h[16..32].try_into().expect("16")),
            data_write_guid: Guid::from_le_bytes(h[32..48].try_into().expect("16")),
            creator: String::new(),
        };
        opts.check(0)?;
        let (bat_off, bat_len) = bat_at.ok_or_else(|| bad("no BAT region"))?;
        let bat_bytes = file
            .get(bat_off..bat_off + bat_len)
            .ok_or_else(|| bad("BAT beyond the file"))?;
        let entries = opts.bat_entries() as usize;
        if entries * 8 > bat_bytes.len() {
            return Err(bad("BAT too small for the disk"));
        }
        let bat: Vec<u64> = (0..entries).map(|i| u64_le(bat_bytes, i * 8)).collect();
        Ok(VhdxReader {
            file,
            virtual_size,
            block_size,
            logical_sector_size: logical,
            physical_sector_size: physical,
            disk_id,
            file_write_guid: opts.file_write_guid,
            data_write_guid: opts.data_write_guid,
            chunk_ratio: opts.chunk_ratio(),
            bat,
        })
    }

    /// Reads `len` bytes of the virtual disk at `offset`.
    pub fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, VhdxError> {
        if offset + len as u64 > self.virtual_size {
            return Err(VhdxError::Invalid("read beyond the virtual disk".into()));
        }
        let bs = u64::from(self.block_size);
        let mut out = Vec::with_capacity(len);
        let mut pos = offset;
        while out.len() < len {
            let block = pos / bs;
            let within = pos % bs;
            let take = ((bs - within) as usize).min(len - out.len());
            let entry = self.bat[(block + block / self.chunk_ratio) as usize];
            match entry & 7 {
                6 => {
                    let at = ((entry >> 20) * MIB + within) as usize;
                    let data = self.file.get(at..at + take).ok_or_else(|| {
                        VhdxError::Invalid(format!("block {block} beyond the end of the file"))
                    })?;
                    out.extend_from_slice(data);
                }
                0 | 2 | 3 => out.resize(out.len() + take, 0),
                s => return Err(VhdxError::Invalid(format!("block {block} is in state {s}"))),
            }
            pos += take as u64;
        }
        Ok(out)
    }
}

fn u16_le(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn u32_le(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}

fn u64_le(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::run_ok;
    use std::process::Command;

    fn options(size: u64) -> VhdxOptions {
        VhdxOptions {
            virtual_size: size,
            block_size: MIB as u32,
            logical_sector_size: 512,
            physical_sector_size: 4096,
            disk_id: Guid::derive("00", "disk"),
            file_write_guid: Guid::derive("00", "file"),
            data_write_guid: Guid::derive("00", "data"),
            creator: "eci-build test".into(),
        }
    }

    fn payload() -> Vec<u8> {
        let mut p = vec![0u8; 5 * MIB as usize + 4096];
        p[..11].copy_from_slice(b"first block");
        p[3 * MIB as usize + 7] = 0xAB;
        let n = p.len();
        p[n - 1] = 0xCD;
        p
    }

    #[test]
    fn crc32c_known_values() {
        // RFC 3720 B.4 test vectors.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn round_trip_stores_only_non_zero_blocks() {
        let p = payload();
        let mut file = Vec::new();
        let info = write_dynamic(&mut file, &options(64 * MIB), &p).unwrap();
        assert_eq!(info.total_blocks, 64);
        assert_eq!(info.stored_blocks, 3, "blocks 0, 3 and 5 hold data");
        assert_eq!(info.file_size, file.len() as u64);
        assert_eq!(file.len() as u64, 4 * MIB + 3 * MIB);
        let r = VhdxReader::open(&file).unwrap();
        assert_eq!(r.virtual_size, 64 * MIB);
        assert_eq!(r.disk_id, Guid::derive("00", "disk"));
        assert!(r.read_at(0, p.len()).unwrap() == p);
        assert!(r
            .read_at(p.len() as u64, 4096)
            .unwrap()
            .iter()
            .all(|&b| b == 0));
    }

    #[test]
    fn deterministic_and_identity_from_options() {
        let p = payload();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write_dynamic(&mut a, &options(64 * MIB), &p).unwrap();
        write_dynamic(&mut b, &options(64 * MIB), &p).unwrap();
        assert!(a == b);
        let mut other = options(64 * MIB);
        other.disk_id = Guid::derive("01", "disk");
        let mut c = Vec::new();
        write_dynamic(&mut c, &other, &p).unwrap();
        assert!(a != c);
    }

    #[test]
    fn large_empty_disk_has_interleaved_bat() {
        // 64 GiB of 1 MiB blocks: 65,536 payload entries plus 15 sector-bitmap entries.
        let opts = options(64 << 30);
        assert_eq!(opts.chunk_ratio(), 4096);
        assert_eq!(opts.bat_entries(), 65_536 + 15);
        let mut file = Vec::new();
        let info = write_dynamic(&mut file, &opts, &[]).unwrap();
        assert_eq!(info.stored_blocks, 0);
        assert_eq!(file.len() as u64, 4 * MIB);
        let r = VhdxReader::open(&file).unwrap();
        assert!(r
            .read_at((64 << 30) - 512, 512)
            .unwrap()
            .iter()
            .all(|&b| b == 0));
    }

    #[test]
    fn refuses_bad_options() {
        let mut o = options(64 * MIB);
        o.block_size = 3 * MIB as u32;
        assert!(write_dynamic(Vec::new(), &o, &[]).is_err());
        let mut o = options(1000);
        o.logical_sector_size = 512;
        assert!(write_dynamic(Vec::new(), &o, &[]).is_err());
        assert!(write_dynamic(Vec::new(), &options(MIB), &[0u8; 2 << 20]).is_err());
    }

    #[test]
    fn corruption_is_detected() {
        let mut file = Vec::new();
        write_dynamic(&mut file, &options(8 * MIB), &payload()[..MIB as usize]).unwrap();
        let mut broken = file.clone();
        broken[3 * KIB64 + 20] ^= 1; // region table
        assert!(VhdxReader::open(&broken).is_err());
        let mut one_header = file.clone();
        one_header[2 * KIB64 + 100] ^= 1; // the current header: the other one still opens
        assert!(VhdxReader::open(&one_header).is_ok());
    }

    /// QEMU's VHDX driver is an independent reader: its consistency check must pass and its
    /// raw conversion must give back the payload.
    #[test]
    fn qemu_img_checks_and_converts_it() {
        if !eci_test_support::prerequisite(
            eci_test_support::have("qemu-img"),
            "qemu-img is not installed (apt-get install qemu-utils)",
        ) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let vhdx = dir.path().join("disk.vhdx");
        let p = payload();
        let mut f = std::fs::File::create(&vhdx).unwrap();
        write_dynamic(&mut f, &options(64 * MIB), &p).unwrap();
        drop(f);
        let check = Command::new("qemu-img")
            .args(["check", "-f", "vhdx"])
            .arg(&vhdx)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "qemu-img check: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let info = Command::new("qemu-img")
            .args(["info", "--output=json", "-f", "vhdx"])
            .arg(&vhdx)
            .output()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(json["virtual-size"], 64 * MIB);
        assert_eq!(json["format"], "vhdx");
        let raw = dir.path().join("disk.raw");
        run_ok(
            Command::new("qemu-img")
                .args(["convert", "-f", "vhdx", "-O", "raw"])
                .arg(&vhdx)
                .arg(&raw),
        );
        let back = std::fs::read(&raw).unwrap();
        assert_eq!(back.len() as u64, 64 * MIB);
        assert!(back[..p.len()] == p[..]);
        assert!(back[p.len()..].iter().all(|&b| b == 0));
    }
}
