//! Choosing the data disk (SPEC V2): engine data lives on its own disk, formatted ext4 on the
//! first boot. Formatting destroys data, so the rule is deliberately narrow:
//!
//! 1. A filesystem labelled [`DATA_LABEL`] (whole disk or partition) is the data disk. Two of
//!    them is ambiguous: neither is used.
//! 2. Otherwise a disk is formatted only if it is the **one** disk that is a whole, physical
//!    (not loop/ram/zram/device-mapper), writable, non-removable disk of at least
//!    [`MIN_DATA_DISK_BYTES`] with no partitions, not mounted, whose first and last MiB read as
//!    zeros. Every partition table and filesystem eci could meet writes within those ranges
//!    (MBR/GPT and its backup, ext*, xfs, btrfs, LVM, LUKS, swap, ZFS labels, md superblocks at
//!    either end), so a disk that has ever held data is never formatted; the boot disk always has
//!    a partition table or filesystem, so it is never a candidate. Two blank disks is ambiguous:
//!    none is formatted.
//! 3. No data disk: engine data stays on tmpfs, and the console says so.

use std::path::PathBuf;

/// The ext4 label eci gives the data disk.
pub const DATA_LABEL: &str = "eci-data";
/// How much of each end of a disk must be zero for it to count as blank.
pub const BLANK_PROBE_BYTES: usize = 1 << 20;
/// Smaller disks are not data disks (a tiny blank disk is more likely a mistake or a seed).
pub const MIN_DATA_DISK_BYTES: u64 = 64 << 20;

const EXT_SUPERBLOCK: usize = 1024;
const EXT_MAGIC: u16 = 0xEF53;

/// What the start (and end) of a block device holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// Zeros at both ends.
    Blank,
    Ext {
        label: String,
        uuid: String,
    },
    /// Anything else; the text says what was recognised, for the console.
    Data(String),
    /// Could not be read.
    Unreadable(String),
}

/// Reads what `head` (the first bytes, ideally [`BLANK_PROBE_BYTES`]) and `tail` (the last
/// bytes) of a device hold.
pub fn probe(head: &[u8], tail: &[u8]) -> Signature {
    if head.len() >= EXT_SUPERBLOCK + 136 {
        let sb = &head[EXT_SUPERBLOCK..];
        let magic = u16::from_le_bytes([sb[56], sb[57]]);
        if magic == EXT_MAGIC {
            let label_bytes = &sb[120..136];
            let end = label_bytes.iter().position(|&b| b == 0).unwrap_or(16);
            let label = String::from_utf8_lossy(&label_bytes[..end]).into_owned();
            return Signature::Ext {
                label,
                uuid: format_uuid(&sb[104..120]),
            };
        }
    }
    if let Some(at) = head.iter().position(|&b| b != 0) {
        let what = if head.len() >= 520 && &head[512..520] == b"EFI PART" {
            "a GPT partition table".to_string()
        } else if head.len() >= 512 && head[510] == 0x55 && head[511] == 0xAA {
            "an MBR partition table or boot sector".to_string()
        } else {
            format!("data at byte {at}")
        };
        return Signature::Data(what);
    }
    if tail.iter().any(|&b| b != 0) {
        return Signature::Data("data in its last MiB".into());
    }
    Signature::Blank
}

fn format_uuid(b: &[u8]) -> String {
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

/// One entry of /sys/class/block, as read by the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    /// Kernel name (`vda`, `sdb1`).
    pub name: String,
    pub size_bytes: u64,
    pub is_partition: bool,
    /// Under /sys/devices/virtual (loop, ram, zram, dm-*, md*): never a data disk.
    pub is_virtual: bool,
    pub removable: bool,
    pub read_only: bool,
    /// Partitions of this disk (empty for partitions).
    pub partitions: Vec<String>,
    /// This device or one of its partitions is mounted.
    pub mounted: bool,
    pub signature: Signature,
}

impl BlockDevice {
    pub fn dev_path(&self) -> PathBuf {
        PathBuf::from("/dev").join(&self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Mount this labelled filesystem.
    UseExisting { device: String, uuid: String },
    /// Format this blank disk, then mount it.
    Format { device: String },
    /// Engine data on tmpfs, for this reason.
    Fallback { reason: String },
}

/// Applies the rule in the module documentation. `only` restricts it to one device name (from
/// `eci.datadisk=/dev/NAME`).
pub fn select(devices: &[BlockDevice], only: Option<&str>) -> Decision {
    let considered: Vec<&BlockDevice> = devices
        .iter()
        .filter(|d| only.is_none_or(|o| o.trim_start_matches("/dev/") == d.name))
        .collect();
    let labelled: Vec<&&BlockDevice> = considered
        .iter()
        .filter(|d| matches!(&d.signature, Signature::Ext { label, .. } if label == DATA_LABEL))
        .collect();
    match labelled.as_slice() {
        [one] => {
            let Signature::Ext { uuid, .. } = &one.signature else {
                unreachable!("filtered on Ext")
            };
            return Decision::UseExisting {
                device: one.name.clone(),
                uuid: uuid.clone(),
            };
        }
        [] => {}
        many => {
            return Decision::Fallback {
                reason: format!(
                    "{} filesystems are labelled {DATA_LABEL} ({}); using none. Remove or relabel all but one",
                    many.len(),
                    names(many.iter().map(|d| d.name.as_str()))
                ),
            }
        }
    }
    let blank: Vec<&&BlockDevice> = considered.iter().filter(|d| formattable(d)).collect();
    match blank.as_slice() {
        [one] => Decision::Format {
            device: one.name.clone(),
        },
        [] => Decision::Fallback {
            reason: match only {
                Some(o) => format!(
                    "{o} is neither labelled {DATA_LABEL} nor a blank whole disk ({})",
                    considered
                        .first()
                        .map(|d| why_not(d))
                        .unwrap_or_else(|| "no such device".into())
                ),
                None => format!(
                    "no disk is labelled {DATA_LABEL} and no blank whole disk is attached{}",
                    if considered.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " ({})",
                            considered
                                .iter()
                                .filter(|d| !d.is_virtual && !d.is_partition)
                                .map(|d| format!("{}: {}", d.name, why_not(d)))
                                .collect::<Vec<_>>()
                                .join("; ")
                        )
                    }
                ),
            },
        },
        many => Decision::Fallback {
            reason: format!(
                "{} blank disks are attached ({}); formatting none. Attach only one, or format one with `mkfs.ext4 -L {DATA_LABEL}`",
                many.len(),
                names(many.iter().map(|d| d.name.as_str()))
            ),
        },
    }
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    it.collect::<Vec<_>>().join(", ")
}

fn formattable(d: &BlockDevice) -> bool {
    why_not(d).is_empty()
}

/// Why a device may not be formatted; empty when it may.
fn why_not(d: &BlockDevice) -> String {
    let mut r = Vec::new();
    if d.is_partition {
        r.push("a partition".to_string());
    }
    if d.is_virtual {
        r.push("a virtual device".to_string());
    }
    if d.removable {
        r.push("removable".to_string());
    }
    if d.read_only {
        r.push("read-only".to_string());
    }
    if d.size_bytes < MIN_DATA_DISK_BYTES {
        r.push(format!("smaller than {} MiB", MIN_DATA_DISK_BYTES >> 20));
    }
    if !d.partitions.is_empty() {
        r.push(format!("has partitions ({})", d.partitions.join(", ")));
    }
    if d.mounted {
        r.push("mounted".to_string());
    }
    match &d.signature {
        Signature::Blank => {}
        Signature::Ext { label, .. } => {
            r.push(format!("holds an ext filesystem labelled {label:?}"))
        }
        Signature::Data(what) => r.push(format!("holds {what}")),
        Signature::Unreadable(e) => r.push(format!("unreadable: {e}")),
    }
    r.join(", ")
}

/// Whether to look again for a data disk: disks behind an asynchronously scanned controller
/// (Hyper-V's storvsc) can appear after the driver loaded, so boot waits for them up to
/// `budget`; synchronous drivers (virtio-blk) never make boot wait.
pub fn keep_waiting(
    decision: &Decision,
    async_controllers: bool,
    waited: std::time::Duration,
    budget: std::time::Duration,
) -> bool {
    matches!(decision, Decision::Fallback { .. }) && async_controllers && waited < budget
}

/// What `e2fsck -p` exit status means for boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsckVerdict {
    /// 0 or 1: clean, or fixed.
    Mount,
    /// 2: fixed, and the fix asks for a reboot. Only matters for a mounted root; mount it.
    MountAfterFix,
    /// 4 and up: errors `-p` may not fix. Run `e2fsck -y` (there is no console to ask).
    Repair,
}

pub fn fsck_verdict(status: i32) -> FsckVerdict {
    match status {
        0 | 1 => FsckVerdict::Mount,
        2 | 3 => FsckVerdict::MountAfterFix,
        _ => FsckVerdict::Repair,
    }
}

/// Parses the major:minor pairs (field 3) of /proc/self/mountinfo.
pub fn mounted_devices(mountinfo: &str) -> Vec<(u32, u32)> {
    mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter_map(|mm| mm.split_once(':'))
        .filter_map(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext_head(label: &str) -> Vec<u8> {
        let mut h = vec![0u8; 4096];
        h[1024 + 56] = 0x53;
        h[1024 + 57] = 0xEF;
        h[1024 + 104..1024 + 120].copy_from_slice(&[
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0, 1, 2, 3, 4, 5, 6, 7,
        ]);
        h[1024 + 120..1024 + 120 + label.len()].copy_from_slice(label.as_bytes());
        h
    }

    fn disk(name: &str, signature: Signature) -> BlockDevice {
        BlockDevice {
            name: name.into(),
            size_bytes: 1 << 30,
            is_partition: false,
            is_virtual: false,
            removable: false,
            read_only: false,
            partitions: vec![],
            mounted: false,
            signature,
        }
    }

    #[test]
    fn probe_reads_ext_labels_tables_and_blank_disks() {
        let zeros = vec![0u8; 4096];
        assert_eq!(probe(&zeros, &zeros), Signature::Blank);
        assert_eq!(
            probe(&ext_head("eci-data"), &zeros),
            Signature::Ext {
                label: "eci-data".into(),
                uuid: "12345678-9abc-def0-0001-020304050607".into()
            }
        );
        let mut gpt = zeros.clone();
        gpt[510] = 0x55;
        gpt[511] = 0xAA;
        gpt[512..520].copy_from_slice(b"EFI PART");
        assert_eq!(
            probe(&gpt, &zeros),
            Signature::Data("a GPT partition table".into())
        );
        let mut mbr = zeros.clone();
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        assert!(matches!(probe(&mbr, &zeros), Signature::Data(s) if s.contains("MBR")));
        // A btrfs superblock lives at 64 KiB; LUKS at 0; either is "data".
        let mut btrfs = vec![0u8; BLANK_PROBE_BYTES];
        btrfs[65536 + 64..65536 + 72].copy_from_slice(b"_BHRfS_M");
        assert_eq!(
            probe(&btrfs, &zeros),
            Signature::Data("data at byte 65600".into())
        );
        // md 0.90 and GPT backups live at the end.
        let mut tail = zeros.clone();
        tail[4000] = 1;
        assert_eq!(
            probe(&zeros, &tail),
            Signature::Data("data in its last MiB".into())
        );
    }

    #[test]
    fn a_labelled_filesystem_wins_and_is_never_formatted() {
        let devs = vec![
            disk("sda", Signature::Data("a GPT partition table".into())),
            disk(
                "sdb",
                Signature::Ext {
                    label: DATA_LABEL.into(),
                    uuid: "u".into(),
                },
            ),
            disk("sdc", Signature::Blank),
        ];
        assert_eq!(
            select(&devs, None),
            Decision::UseExisting {
                device: "sdb".into(),
                uuid: "u".into()
            }
        );
    }

    #[test]
    fn the_one_blank_whole_disk_is_formatted() {
        let mut boot = disk("sda", Signature::Data("a GPT partition table".into()));
        boot.partitions = vec!["sda1".into(), "sda2".into()];
        let mut part = disk("sda1", Signature::Data("data at byte 0".into()));
        part.is_partition = true;
        let mut loop0 = disk("loop0", Signature::Blank);
        loop0.is_virtual = true;
        let devs = vec![boot, part, loop0, disk("sdb", Signature::Blank)];
        assert_eq!(
            select(&devs, None),
            Decision::Format {
                device: "sdb".into()
            }
        );
    }

    #[test]
    fn anything_that_might_hold_data_is_refused() {
        let other_ext = disk(
            "vdb",
            Signature::Ext {
                label: "home".into(),
                uuid: "u".into(),
            },
        );
        let mut ro = disk("vdc", Signature::Blank);
        ro.read_only = true;
        let mut usb = disk("sdd", Signature::Blank);
        usb.removable = true;
        let mut tiny = disk("vde", Signature::Blank);
        tiny.size_bytes = 1 << 20;
        let mut mounted = disk("vdf", Signature::Blank);
        mounted.mounted = true;
        let mut parted = disk("vdg", Signature::Blank);
        parted.partitions = vec!["vdg1".into()];
        let unreadable = disk("vdh", Signature::Unreadable("EIO".into()));
        let devs = vec![other_ext, ro, usb, tiny, mounted, parted, unreadable];
        let Decision::Fallback { reason } = select(&devs, None) else {
            panic!("must not format any of these")
        };
        for why in [
            "vdb: holds an ext filesystem labelled \"home\"",
            "vdc: read-only",
            "sdd: removable",
            "vde: smaller than 64 MiB",
            "vdf: mounted",
            "vdg: has partitions (vdg1)",
            "vdh: unreadable: EIO",
        ] {
            assert!(reason.contains(why), "{why} missing from: {reason}");
        }
    }

    #[test]
    fn ambiguity_formats_nothing() {
        let two_blank = vec![disk("vdb", Signature::Blank), disk("vdc", Signature::Blank)];
        let Decision::Fallback { reason } = select(&two_blank, None) else {
            panic!()
        };
        assert!(reason.contains("2 blank disks") && reason.contains("vdb, vdc"));
        let label = Signature::Ext {
            label: DATA_LABEL.into(),
            uuid: "u".into(),
        };
        let two_labelled = vec![disk("vdb", label.clone()), disk("vdc", label)];
        assert!(matches!(
            select(&two_labelled, None),
            Decision::Fallback { .. }
        ));
        // Naming one of them on the command line resolves it.
        assert!(matches!(
            select(&two_blank, Some("/dev/vdc")),
            Decision::Format { device } if device == "vdc"
        ));
    }

    #[test]
    fn no_disk_falls_back_and_names_a_missing_choice() {
        assert!(
            matches!(select(&[], None), Decision::Fallback { reason } if reason.contains("no disk is labelled"))
        );
        let devs = vec![disk("vdb", Signature::Data("data at byte 0".into()))];
        let Decision::Fallback { reason } = select(&devs, Some("/dev/vdb")) else {
            panic!()
        };
        assert!(reason.contains("/dev/vdb") && reason.contains("holds data at byte 0"));
        let Decision::Fallback { reason } = select(&devs, Some("/dev/vdz")) else {
            panic!()
        };
        assert!(reason.contains("no such device"));
    }

    #[test]
    fn waiting_only_behind_async_controllers_and_within_budget() {
        use std::time::Duration;
        let fb = Decision::Fallback { reason: "x".into() };
        let s = Duration::from_secs;
        assert!(keep_waiting(&fb, true, s(1), s(10)));
        assert!(!keep_waiting(&fb, true, s(10), s(10)));
        assert!(!keep_waiting(&fb, false, s(0), s(10)));
        let found = Decision::Format {
            device: "sdb".into(),
        };
        assert!(!keep_waiting(&found, true, s(0), s(10)));
    }

    #[test]
    fn fsck_status_and_mountinfo() {
        assert_eq!(fsck_verdict(0), FsckVerdict::Mount);
        assert_eq!(fsck_verdict(1), FsckVerdict::Mount);
        assert_eq!(fsck_verdict(2), FsckVerdict::MountAfterFix);
        assert_eq!(fsck_verdict(4), FsckVerdict::Repair);
        let mi = "22 1 0:21 / / rw shared:1 - tmpfs rootfs rw\n30 22 253:0 / /data rw - ext4 /dev/vda rw\n";
        assert_eq!(mounted_devices(mi), vec![(0, 21), (253, 0)]);
    }
}
