//! GUID Partition Table (UEFI specification, "GUID Partition Table Disk Layout") for a disk
//! image held in memory, with 512-byte logical sectors.
//!
//! Layout written: LBA 0 protective MBR, LBA 1 primary header, LBA 2-33 the 128-entry array;
//! at the end of the disk the backup array and, on the last LBA, the backup header. Every field
//! comes from the caller or the geometry, so the same inputs give the same bytes.

use super::guid::Guid;

pub const SECTOR: u64 = 512;
const ENTRY_COUNT: u32 = 128;
const ENTRY_SIZE: u32 = 128;
/// Sectors taken by the 128 x 128-byte entry array.
const ENTRY_SECTORS: u64 = (ENTRY_COUNT as u64 * ENTRY_SIZE as u64) / SECTOR;
const HEADER_SIZE: u32 = 92;
const SIGNATURE: &[u8; 8] = b"EFI PART";
const REVISION_1_0: u32 = 0x0001_0000;

/// Partition type of an EFI System Partition.
pub const ESP_TYPE: Guid = Guid::from_fields(
    0xC12A_7328,
    0xF81F,
    0x11D2,
    [0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B],
);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub type_guid: Guid,
    pub unique_guid: Guid,
    pub first_lba: u64,
    /// Inclusive, as GPT stores it.
    pub last_lba: u64,
    pub attributes: u64,
    /// At most 36 UTF-16 code units.
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub disk_guid: Guid,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    pub partitions: Vec<Partition>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GptError {
    #[error("the disk image is {bytes} bytes; a GPT disk needs a whole number of 512-byte sectors and at least 68 of them")]
    BadSize { bytes: usize },
    #[error("partition `{name}` spans LBA {first}-{last}, outside the usable range {first_usable}-{last_usable}")]
    OutOfRange {
        name: String,
        first: u64,
        last: u64,
        first_usable: u64,
        last_usable: u64,
    },
    #[error("partitions `{a}` and `{b}` overlap")]
    Overlap { a: String, b: String },
    #[error("partition name `{0}` is longer than the 36 UTF-16 code units GPT stores")]
    NameTooLong(String),
    #[error("more than {ENTRY_COUNT} partitions")]
    TooManyPartitions,
    #[error("{0} GPT header: {1}")]
    BadHeader(&'static str, String),
}

/// Usable LBA range of a disk of `sectors` sectors with a standard 128-entry table.
pub fn usable_range(sectors: u64) -> (u64, u64) {
    (2 + ENTRY_SECTORS, sectors - 2 - ENTRY_SECTORS)
}

/// Writes a protective MBR and both GPT copies into `disk` (sectors outside the tables are not
/// touched).
pub fn write(disk: &mut [u8], disk_guid: Guid, partitions: &[Partition]) -> Result<(), GptError> {
    if !(disk.len() as u64).is_multiple_of(SECTOR)
        || (disk.len() as u64) < SECTOR * (3 + 2 * ENTRY_SECTORS)
    {
        return Err(GptError::BadSize { bytes: disk.len() });
    }
    if partitions.len() > ENTRY_COUNT as usize {
        return Err(GptError::TooManyPartitions);
    }
    let sectors = disk.len() as u64 / SECTOR;
    let (first_usable, last_usable) = usable_range(sectors);
    for (i, p) in partitions.iter().enumerate() {
        if p.first_lba < first_usable || p.last_lba > last_usable || p.first_lba > p.last_lba {
            return Err(GptError::OutOfRange {
                name: p.name.clone(),
                first: p.first_lba,
                last: p.last_lba,
                first_usable,
                last_usable,
            });
        }
        if p.name.encode_utf16().count() > 36 {
            return Err(GptError::NameTooLong(p.name.clone()));
        }
        for q in &partitions[..i] {
            if p.first_lba <= q.last_lba && q.first_lba <= p.last_lba {
                return Err(GptError::Overlap {
                    a: q.name.clone(),
                    b: p.name.clone(),
                });
            }
        }
    }

    let mut entries = vec![0u8; (ENTRY_COUNT * ENTRY_SIZE) as usize];
    for (i, p) in partitions.iter().enumerate() {
        let e = &mut entries[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
        e[0..16].copy_from_slice(&p.type_guid.to_le_bytes());
        e[16..32].copy_from_slice(&p.unique_guid.to_le_bytes());
        e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
        e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
        e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
        for (j, unit) in p.name.encode_utf16().enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&unit.to_le_bytes());
        }
    }
    let entries_crc = crc32(&entries);

    write_protective_mbr(&mut disk[..SECTOR as usize], sectors);
    let last_lba = sectors - 1;
    let backup_entries_lba = last_lba - ENTRY_SECTORS;
    for (my_lba, alternate_lba, entries_lba) in
        [(1, last_lba, 2), (last_lba, 1, backup_entries_lba)]
    {
        let header = header_bytes(HeaderFields {
            my_lba,
            alternate_lba,
            first_usable,
            last_usable,
            disk_guid,
            entries_lba,
            entries_crc,
        });
        let at = (my_lba * SECTOR) as usize;
        disk[at..at + SECTOR as usize].copy_from_slice(&header);
        let at = (entries_lba * SECTOR) as usize;
        disk[at..at + entries.len()].copy_from_slice(&entries);
    }
    Ok(())
}

fn write_protective_mbr(sector: &mut [u8], sectors: u64) {
    sector.fill(0);
    let p = &mut sector[446..462];
    p[0] = 0x00; // not bootable
    p[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
    p[4] = 0xEE; // GPT protective
    p[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]); // CHS beyond what CHS can express
    p[8..12].copy_from_slice(&1u32.to_le_bytes());
    let size = u32::try_from(sectors - 1).unwrap_or(u32::MAX);
    p[12..16].copy_from_slice(&size.to_le_bytes());
    sector[510] = 0x55;
    sector[511] = 0xAA;
}

struct HeaderFields {
    my_lba: u64,
    alternate_lba: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: Guid,
    entries_lba: u64,
    entries_crc: u32,
}

fn header_bytes(f: HeaderFields) -> [u8; SECTOR as usize] {
    let mut h = [0u8; SECTOR as usize];
    h[0..8].copy_from_slice(SIGNATURE);
    h[8..12].copy_from_slice(&REVISION_1_0.to_le_bytes());
    h[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
    // 16..20 header CRC, filled below; 20..24 reserved.
    h[24..32].copy_from_slice(&f.my_lba.to_le_bytes());
    h[32..40].copy_from_slice(&f.alternate_lba.to_le_bytes());
    h[40..48].copy_from_slice(&f.first_usable.to_le_bytes());
    h[48..56].copy_from_slice(&f.last_usable.to_le_bytes());
    h[56..72].copy_from_slice(&f.disk_guid.to_le_bytes());
    h[72..80].copy_from_slice(&f.entries_lba.to_le_bytes());
    h[80..84].copy_from_slice(&ENTRY_COUNT.to_le_bytes());
    h[84..88].copy_from_slice(&ENTRY_SIZE.to_le_bytes());
    h[88..92].copy_from_slice(&f.entries_crc.to_le_bytes());
    let crc = crc32(&h[..HEADER_SIZE as usize]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(data);
    c.sum()
}

/// Reads and cross-checks both GPT copies (signatures, CRCs, the backup mirroring the primary).
pub fn read(disk: &[u8]) -> Result<Table, GptError> {
    if !(disk.len() as u64).is_multiple_of(SECTOR)
        || (disk.len() as u64) < SECTOR * (3 + 2 * ENTRY_SECTORS)
    {
        return Err(GptError::BadSize { bytes: disk.len() });
    }
    if disk[510..512] != [0x55, 0xAA] || disk[446 + 4] != 0xEE {
        return Err(GptError::BadHeader(
            "protective MBR",
            "no 0xEE partition or boot signature".into(),
        ));
    }
    let sectors = disk.len() as u64 / SECTOR;
    let primary = read_copy(disk, 1, "primary")?;
    let backup = read_copy(disk, sectors - 1, "backup")?;
    if primary.alternate_lba != sectors - 1 || backup.alternate_lba != 1 {
        return Err(GptError::BadHeader(
            "primary",
            "AlternateLBA fields do not point at each other".into(),
        ));
    }
    if primary.table != backup.table {
        return Err(GptError::BadHeader(
            "backup",
            "differs from the primary".into(),
        ));
    }
    Ok(primary.table)
}

struct Copy {
    alternate_lba: u64,
    table: Table,
}

fn read_copy(disk: &[u8], lba: u64, which: &'static str) -> Result<Copy, GptError> {
    let bad = |m: String| GptError::BadHeader(which, m);
    let at = (lba * SECTOR) as usize;
    let h = &disk[at..at + SECTOR as usize];
    if &h[0..8] != SIGNATURE {
        return Err(bad("signature is not `EFI PART`".into()));
    }
    let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().expect("8 bytes"));
    let size = u32_at(12) as usize;
    if !(HEADER_SIZE as usize..=SECTOR as usize).contains(&size) {
        return Err(bad(format!("header size {size}")));
    }
    let mut copy = h[..size].to_vec();
    copy[16..20].fill(0);
    if crc32(&copy) != u32_at(16) {
        return Err(bad("header CRC mismatch".into()));
    }
    if u64_at(24) != lba {
        return Err(bad(format!("MyLBA is {}, found at {lba}", u64_at(24))));
    }
    let entries_lba = u64_at(72);
    let count = u32_at(80) as usize;
    let esize = u32_at(84) as usize;
    if esize < 128 || count > 4096 {
        return Err(bad(format!("{count} entries of {esize} bytes")));
    }
    let start = (entries_lba * SECTOR) as usize;
    let entries = disk
        .get(start..start + count * esize)
        .ok_or_else(|| bad("entry array beyond the end of the disk".into()))?;
    if crc32(entries) != u32_at(88) {
        return Err(bad("entry array CRC mismatch".into()));
    }
    let mut partitions = Vec::new();
    for e in entries.chunks_exact(esize) {
        let type_guid = Guid::from_le_bytes(e[0..16].try_into().expect("16 bytes"));
        if type_guid.is_nil() {
            continue;
        }
        let units: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        partitions.push(Partition {
            type_guid,
            unique_guid: Guid::from_le_bytes(e[16..32].try_into().expect("16 bytes")),
            first_lba: u64::from_le_bytes(e[32..40].try_into().expect("8 bytes")),
            last_lba: u64::from_le_bytes(e[40..48].try_into().expect("8 bytes")),
            attributes: u64::from_le_bytes(e[48..56].try_into().expect("8 bytes")),
            name: String::from_utf16_lossy(&units),
        });
    }
    Ok(Copy {
        alternate_lba: u64_at(32),
        table: Table {
            disk_guid: Guid::from_le_bytes(h[56..72].try_into().expect("16 bytes")),
            first_usable_lba: u64_at(40),
            last_usable_lba: u64_at(48),
            partitions,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esp(first: u64, last: u64) -> Partition {
        Partition {
            type_guid: ESP_TYPE,
            unique_guid: Guid::derive("00", "p"),
            first_lba: first,
            last_lba: last,
            attributes: 0,
            name: "EFI system partition".into(),
        }
    }

    #[test]
    fn round_trip_and_checksums() {
        let mut disk = vec![0u8; 8 << 20];
        let sectors = disk.len() as u64 / SECTOR;
        let p = esp(2048, sectors - 2049);
        write(&mut disk, Guid::derive("00", "d"), std::slice::from_ref(&p)).unwrap();
        let t = read(&disk).unwrap();
        assert_eq!(t.disk_guid, Guid::derive("00", "d"));
        assert_eq!(t.partitions, vec![p]);
        assert_eq!((t.first_usable_lba, t.last_usable_lba), (34, sectors - 34));

        // A flipped bit in the entry array is caught by its CRC.
        disk[2 * 512 + 60] ^= 1;
        assert!(matches!(
            read(&disk),
            Err(GptError::BadHeader("primary", _))
        ));
    }

    #[test]
    fn refuses_bad_layouts() {
        let mut disk = vec![0u8; 1 << 20];
        let sectors = disk.len() as u64 / SECTOR;
        assert!(matches!(
            write(&mut disk, Guid::NIL, &[esp(10, 100)]),
            Err(GptError::OutOfRange { .. })
        ));
        assert!(matches!(
            write(&mut disk, Guid::NIL, &[esp(40, 100), esp(100, 200)]),
            Err(GptError::Overlap { .. })
        ));
        assert!(matches!(
            write(&mut disk, Guid::NIL, &[esp(40, sectors - 1)]),
            Err(GptError::OutOfRange { .. })
        ));
        let mut long = esp(40, 100);
        long.name = "x".repeat(37);
        assert!(matches!(
            write(&mut disk, Guid::NIL, &[long]),
            Err(GptError::NameTooLong(_))
        ));
        assert!(matches!(
            write(&mut [0u8; 1000], Guid::NIL, &[]),
            Err(GptError::BadSize { .. })
        ));
    }

    /// sgdisk (gdisk package) is an independent reader of the same on-disk format.
    #[test]
    fn sgdisk_verifies_the_table() {
        let out = std::process::Command::new("sgdisk")
            .arg("--version")
            .output();
        if !eci_test_support::prerequisite(
            out.is_ok(),
            "sgdisk is not installed (apt-get install gdisk)",
        ) {
            return;
        }
        let out = out.unwrap();
        assert!(out.status.success());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let mut disk = vec![0u8; 8 << 20];
        let sectors = disk.len() as u64 / SECTOR;
        let p = esp(2048, sectors - 2049);
        write(&mut disk, Guid::derive("00", "d"), std::slice::from_ref(&p)).unwrap();
        std::fs::write(&path, &disk).unwrap();
        let v = std::process::Command::new("sgdisk")
            .arg("--verify")
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&v.stdout);
        assert!(
            v.status.success() && text.contains("No problems found"),
            "{text}"
        );
        let info = std::process::Command::new("sgdisk")
            .args(["--info=1"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&info.stdout);
        assert!(
            text.contains("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
            "{text}"
        );
        assert!(text.contains(&p.unique_guid.to_string()), "{text}");
        assert!(text.contains("First sector: 2048"), "{text}");
    }
}
