//! Hyper-V outputs (SPEC V4): a Generation 2 (UEFI) boot disk, an empty data disk, both
//! dynamic VHDX, and `create-vm.ps1`, which creates the VM around them.
//!
//! # Boot path
//! The boot disk is GPT with one EFI System Partition (FAT32) holding:
//!
//! ```text
//! EFI/BOOT/BOOTX64.EFI        systemd-boot, from the locked systemd-boot-efi package
//! loader/loader.conf          default entry, no menu, command-line editor off
//! loader/entries/eci.conf     linux + initrd + options (the definition's kernel.cmdline)
//! eci/vmlinuz                 the kernel (EFI stub)
//! eci/initramfs.img           the whole root filesystem
//! ```
//!
//! Why systemd-boot: the firmware finds it at the removable-media path, so the disk boots on a
//! fresh VM without NVRAM boot entries; the command line is a text file on the ESP that this
//! writer controls, so it is pinned by the image; and it is one small binary from a Debian
//! package the lock pins by sha256. The kernel's own EFI stub alone would need an NVRAM entry
//! to get a command line. A unified kernel image (systemd's stub) seals the command line too,
//! but only pays off once it is signed for Secure Boot, which the unsigned Debian kernel and
//! loader rule out for now (see the template's Secure Boot note).
//!
//! # Identity and determinism
//! Disk GUID, partition GUID, FAT serial number and the VHDX ids are derived from the lock's
//! sha256; FAT timestamps are `SOURCE_DATE_EPOCH`. [`BootDisk`] is public so the UEFI boot test
//! can write the same disk with extra command-line tokens (`eci.selftest`) and check that,
//! without them, it reproduces the shipped `boot.vhdx` byte for byte.

use super::fat::{self, FatFile, FatOptions};
use super::gpt::{self, Partition};
use super::guid::{self, Guid};
use super::vhdx::{self, VhdxInfo, VhdxOptions};
use super::{io, render_template, ArtifactError, ArtifactRecord, BuildInfo};
use crate::manifest::Blob;
use crate::rootfs::{Package, Rootfs};
use std::fs;
use std::path::Path;

pub const TARGET: &str = "hyperv";
pub const BOOT_DISK_FILE: &str = "boot.vhdx";
pub const DATA_DISK_FILE: &str = "data.vhdx";
pub const SCRIPT_FILE: &str = "create-vm.ps1";
pub const SCRIPT_TEMPLATE: &str = "hyperv-create-vm.ps1.tera";
/// The package that provides the loader, and the loader's path inside it.
pub const LOADER_PACKAGE: &str = "systemd-boot-efi";
pub const LOADER_PATH: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
/// Size of the empty data disk. Dynamic: the file starts at 4 MiB and grows with what the VM
/// writes; `create-vm.ps1 -DataDiskSizeBytes` can enlarge it before first boot.
pub const DATA_DISK_SIZE: u64 = 64 << 30;
/// Microsoft recommends 1 MiB VHDX blocks for Linux guests: ext4 and FAT allocate in small
/// runs, and the 32 MiB default wastes space on every partially used block.
pub const BLOCK_SIZE: u32 = 1 << 20;

const MIB: u64 = 1 << 20;
/// The ESP starts at 1 MiB (LBA 2048), the alignment every partitioning tool uses.
const ESP_FIRST_LBA: u64 = 2048;
/// At least 512 MiB: 4 KiB clusters (FAT32 needs 65,525 of them), and room for a second
/// kernel + initramfs when updates are staged on the ESP.
const ESP_MIN_BYTES: u64 = 512 * MIB;
const ESP_LABEL: &str = "ECI-ESP";
const ENTRY_FILE: &str = "eci.conf";

/// Reads the loader out of its locked package.
pub fn loader_from_packages(
    definition: &Path,
    packages: &[Package],
) -> Result<Blob, ArtifactError> {
    let err = |message: String| ArtifactError::Loader {
        target: TARGET.into(),
        message,
    };
    let pkg = packages
        .iter()
        .find(|p| p.name == LOADER_PACKAGE)
        .ok_or_else(|| {
            err(format!(
                "the boot disk boots through systemd-boot, but {LOADER_PACKAGE} is not locked; add it to \
                 packages.include in {} and run `eci-build lock --target {TARGET}`",
                definition.display()
            ))
        })?;
    loader_from_deb(&pkg.bytes, &format!("{} {}", pkg.name, pkg.version))
}

/// The loader binary from a `systemd-boot-efi` .deb.
pub fn loader_from_deb(deb: &[u8], label: &str) -> Result<Blob, ArtifactError> {
    let err = |message: String| ArtifactError::Loader {
        target: TARGET.into(),
        message,
    };
    let found = crate::apt::deb::read_data_file(deb, label, |p| p == LOADER_PATH)
        .map_err(|e| err(format!("reading {label}: {e}")))?;
    let [(_, bytes)] = <[_; 1]>::try_from(found).map_err(|f: Vec<_>| {
        err(format!(
            "{label} has {} files at {LOADER_PATH}, expected one",
            f.len()
        ))
    })?;
    if !bytes.starts_with(b"MZ") {
        return Err(err(format!(
            "{LOADER_PATH} in {label} is not a PE/COFF (EFI) binary"
        )));
    }
    Ok(Blob::new(bytes))
}

/// Everything the boot disk is made of.
#[derive(Debug, Clone)]
pub struct BootDisk<'a> {
    pub kernel: &'a [u8],
    pub initramfs: &'a [u8],
    pub loader: &'a [u8],
    pub kernel_release: &'a str,
    /// Kernel command line tokens, written to the loader entry.
    pub cmdline: Vec<String>,
    pub lock_sha256: &'a str,
    pub epoch: u64,
}

impl BootDisk<'_> {
    /// systemd-boot's settings: boot the one entry at once, no menu, no editor (the editor
    /// would let anyone at the console append `init=/bin/sh`; SPEC V4 allows no shell there).
    pub fn loader_conf() -> String {
        format!(
            "# Written by eci-build (builder/src/artifact/hyperv.rs).\n\
             default {ENTRY_FILE}\n\
             timeout 0\n\
             editor no\n\
             auto-entries no\n\
             auto-firmware no\n\
             console-mode keep\n"
        )
    }

    /// The Boot Loader Specification entry for the kernel.
    pub fn entry_conf(&self) -> String {
        format!(
            "# Written by eci-build from the image definition's kernel.cmdline.\n\
             title eci\n\
             version {}\n\
             linux /eci/vmlinuz\n\
             initrd /eci/initramfs.img\n\
             options {}\n",
            self.kernel_release,
            self.cmdline.join(" ")
        )
    }

    /// ESP size: twice the payload plus 64 MiB slack, in 64 MiB steps, at least 512 MiB.
    pub fn esp_size(&self) -> u64 {
        let payload = (self.kernel.len() + self.initramfs.len() + self.loader.len()) as u64;
        (2 * payload + 64 * MIB)
            .div_ceil(64 * MIB)
            .max(ESP_MIN_BYTES / (64 * MIB))
            * 64
            * MIB
    }

    /// Total disk size: 1 MiB before the ESP (MBR + GPT), 1 MiB after it (backup GPT).
    pub fn disk_size(&self) -> u64 {
        self.esp_size() + 2 * MIB
    }

    /// The raw disk image: GPT + FAT32 ESP.
    pub fn raw(&self) -> Result<Vec<u8>, ArtifactError> {
        let size = self.disk_size();
        let mut disk = vec![0u8; size as usize];
        let esp_start = ESP_FIRST_LBA * gpt::SECTOR;
        let esp_end = esp_start + self.esp_size();
        let loader_conf = Self::loader_conf();
        let entry = self.entry_conf();
        let entry_path = format!("loader/entries/{ENTRY_FILE}");
        let files = [
            FatFile {
                path: "EFI/BOOT/BOOTX64.EFI",
                data: self.loader,
            },
            FatFile {
                path: "loader/loader.conf",
                data: loader_conf.as_bytes(),
            },
            FatFile {
                path: &entry_path,
                data: entry.as_bytes(),
            },
            FatFile {
                path: "eci/vmlinuz",
                data: self.kernel,
            },
            FatFile {
                path: "eci/initramfs.img",
                data: self.initramfs,
            },
        ];
        let options = FatOptions {
            volume_id: guid::derive_u32(self.lock_sha256, "hyperv esp fat volume id"),
            label: ESP_LABEL,
            epoch: self.epoch,
            hidden_sectors: ESP_FIRST_LBA as u32,
        };
        fat::format(
            &mut disk[esp_start as usize..esp_end as usize],
            &options,
            &files,
        )
        .map_err(|e| ArtifactError::Disk {
            what: "the EFI System Partition",
            message: e.to_string(),
        })?;
        let esp = Partition {
            type_guid: gpt::ESP_TYPE,
            unique_guid: Guid::derive(self.lock_sha256, "hyperv esp partition"),
            first_lba: ESP_FIRST_LBA,
            last_lba: esp_end / gpt::SECTOR - 1,
            attributes: 0,
            name: "EFI system partition".into(),
        };
        gpt::write(
            &mut disk,
            Guid::derive(self.lock_sha256, "hyperv boot disk gpt"),
            &[esp],
        )
        .map_err(|e| ArtifactError::Disk {
            what: "the boot disk's partition table",
            message: e.to_string(),
        })?;
        Ok(disk)
    }

    /// Writes the boot disk as a dynamic VHDX at `path`.
    pub fn write_vhdx(&self, path: &Path) -> Result<VhdxInfo, ArtifactError> {
        let raw = self.raw()?;
        write_vhdx_file(
            path,
            &vhdx_options(self.lock_sha256, "boot", raw.len() as u64),
            &raw,
        )
    }
}

/// VHDX identity for `role` ("boot" or "data") in the build pinned by `lock_sha256`.
pub fn vhdx_options(lock_sha256: &str, role: &str, virtual_size: u64) -> VhdxOptions {
    let id = |what: &str| Guid::derive(lock_sha256, &format!("hyperv {role} disk vhdx {what}"));
    VhdxOptions {
        virtual_size,
        block_size: BLOCK_SIZE,
        // 512-byte logical sectors on 4 KiB physical ones, what Hyper-V's New-VHD makes.
        logical_sector_size: 512,
        physical_sector_size: 4096,
        disk_id: id("disk id"),
        file_write_guid: id("file write guid"),
        data_write_guid: id("data write guid"),
        creator: format!("eci-build {}", env!("CARGO_PKG_VERSION")),
    }
}

fn write_vhdx_file(
    path: &Path,
    opts: &VhdxOptions,
    payload: &[u8],
) -> Result<VhdxInfo, ArtifactError> {
    let mut file = fs::File::create(path).map_err(io(path))?;
    let info = vhdx::write_dynamic(&mut file, opts, payload).map_err(|e| match e {
        vhdx::VhdxError::Io(source) => ArtifactError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => ArtifactError::Disk {
            what: "a VHDX",
            message: other.to_string(),
        },
    })?;
    file.sync_all().map_err(io(path))?;
    Ok(info)
}

/// Writes the Hyper-V outputs into `dir` (the initramfs is already there).
pub fn write(
    dir: &Path,
    rootfs: &Rootfs,
    info: &BuildInfo,
) -> Result<Vec<ArtifactRecord>, ArtifactError> {
    let loader = info
        .platform
        .uefi_loader
        .as_ref()
        .ok_or_else(|| ArtifactError::Loader {
            target: TARGET.into(),
            message: format!(
                "no loader was passed to the artifact writer; build through the pipeline, which \
                 reads it from the locked {LOADER_PACKAGE} package"
            ),
        })?;
    let initrd_path = dir.join(super::INITRAMFS_FILE);
    let initramfs = fs::read(&initrd_path).map_err(io(&initrd_path))?;
    let disk = BootDisk {
        kernel: &rootfs.booted_kernel().vmlinuz,
        initramfs: &initramfs,
        loader,
        kernel_release: &rootfs.booted_kernel().release,
        cmdline: info.platform.cmdline.clone(),
        lock_sha256: &info.lock_sha256,
        epoch: info.source_date_epoch,
    };
    let boot_path = dir.join(BOOT_DISK_FILE);
    let boot = disk.write_vhdx(&boot_path)?;
    let boot_record = ArtifactRecord {
        virtual_size: Some(disk.disk_size()),
        ..ArtifactRecord::plain(BOOT_DISK_FILE, "boot-disk", boot.sha256, boot.file_size)
    };
    drop(initramfs);

    let data_path = dir.join(DATA_DISK_FILE);
    let data = write_vhdx_file(
        &data_path,
        &vhdx_options(&info.lock_sha256, "data", DATA_DISK_SIZE),
        &[],
    )?;
    let data_record = ArtifactRecord {
        virtual_size: Some(DATA_DISK_SIZE),
        ..ArtifactRecord::plain(DATA_DISK_FILE, "data-disk", data.sha256, data.file_size)
    };

    let mut context = tera::Context::new();
    context.insert(
        "image",
        &serde_json::json!({ "name": info.name, "target": info.target }),
    );
    context.insert(
        "kernel",
        &serde_json::json!({
            "release": rootfs.booted_kernel().release,
            "cmdline": info.platform.cmdline.join(" "),
        }),
    );
    context.insert("lock_sha256", &info.lock_sha256);
    context.insert("built", &super::rfc3339(info.source_date_epoch));
    context.insert("script_name", SCRIPT_FILE);
    for (key, r) in [("boot_disk", &boot_record), ("data_disk", &data_record)] {
        context.insert(
            key,
            &serde_json::json!({
                "file": r.path,
                "sha256": r.sha256,
                "size": r.size,
                "virtual_size": r.virtual_size,
            }),
        );
    }
    let script = render_template(&info.platform.templates_dir, SCRIPT_TEMPLATE, &context)?;
    // PowerShell 5.1 reads a BOM-less script as the ANSI code page; the script is ASCII-only
    // so that never matters, and CRLF line ends are what Windows editors expect.
    if let Some(c) = script.chars().find(|c| !c.is_ascii()) {
        return Err(ArtifactError::Template {
            path: info.platform.templates_dir.join(SCRIPT_TEMPLATE),
            message: format!(
                "the rendered script must be ASCII for Windows PowerShell 5.1; found {c:?}"
            ),
        });
    }
    let script = script.replace("\r\n", "\n").replace('\n', "\r\n");
    let script_path = dir.join(SCRIPT_FILE);
    super::write_synced(&script_path, script.as_bytes())?;
    let script_record = ArtifactRecord::plain(
        SCRIPT_FILE,
        "hyperv-script",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(script.as_bytes())),
        script.len() as u64,
    );
    Ok(vec![boot_record, data_record, script_record])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk<'a>(kernel: &'a [u8], initrd: &'a [u8], extra: &[&str]) -> BootDisk<'a> {
        let mut cmdline: Vec<String> = ["console=ttyS0", "panic=-1"].map(String::from).to_vec();
        cmdline.extend(extra.iter().map(|s| s.to_string()));
        BootDisk {
            kernel,
            initramfs: initrd,
            loader: b"MZ not really a loader",
            kernel_release: "6.12.0-test",
            cmdline,
            lock_sha256: "ab12",
            epoch: 1_747_699_200,
        }
    }

    #[test]
    fn boot_disk_holds_loader_entry_kernel_and_initramfs() {
        let kernel = vec![1u8; 3 << 20];
        let initrd = vec![2u8; 5 << 20];
        let d = disk(&kernel, &initrd, &[]);
        let raw = d.raw().unwrap();
        assert_eq!(raw.len() as u64, 512 * MIB + 2 * MIB);
        let table = gpt::read(&raw).unwrap();
        assert_eq!(
            table.disk_guid,
            Guid::derive("ab12", "hyperv boot disk gpt")
        );
        let [esp] = &table.partitions[..] else {
            panic!("one partition: {table:?}")
        };
        assert_eq!(esp.type_guid, gpt::ESP_TYPE);
        assert_eq!(esp.first_lba, 2048);
        let vol = &raw[(esp.first_lba * 512) as usize..((esp.last_lba + 1) * 512) as usize];
        let files = fat::read(vol).unwrap();
        let get = |p: &str| {
            files
                .iter()
                .find(|e| e.path == p)
                .unwrap_or_else(|| panic!("{p} missing: {files:?}"))
                .data
                .clone()
        };
        assert_eq!(get("EFI/BOOT/BOOTX64.EFI"), b"MZ not really a loader");
        assert!(get("eci/vmlinuz") == kernel);
        assert!(get("eci/initramfs.img") == initrd);
        let entry = String::from_utf8(get("loader/entries/eci.conf")).unwrap();
        assert!(
            entry.contains("\noptions console=ttyS0 panic=-1\n"),
            "{entry}"
        );
        assert!(entry.contains("\nlinux /eci/vmlinuz\ninitrd /eci/initramfs.img\n"));
        let conf = String::from_utf8(get("loader/loader.conf")).unwrap();
        assert!(
            conf.contains("\neditor no\n") && conf.contains("\ntimeout 0\n"),
            "{conf}"
        );
    }

    #[test]
    fn extra_tokens_change_only_the_entry() {
        let kernel = vec![1u8; 1 << 20];
        let initrd = vec![2u8; 1 << 20];
        let a = disk(&kernel, &initrd, &[]).raw().unwrap();
        let b = disk(&kernel, &initrd, &[]).raw().unwrap();
        assert!(a == b, "same inputs, same disk");
        let c = disk(&kernel, &initrd, &["eci.selftest"]).raw().unwrap();
        let differing: Vec<usize> = a
            .chunks(4096)
            .zip(c.chunks(4096))
            .enumerate()
            .filter(|(_, (x, y))| x != y)
            .map(|(i, _)| i)
            .collect();
        // The entry's data cluster and its directory entry (size) differ, nothing else.
        assert_eq!(differing.len(), 2, "{differing:?}");
    }

    #[test]
    fn large_payloads_grow_the_esp() {
        let kernel = vec![1u8; 200 << 20];
        let d = disk(&kernel, &[], &[]);
        assert_eq!(d.esp_size(), 512 * MIB);
        let initrd = vec![1u8; 300 << 20];
        let d = disk(&kernel, &initrd, &[]);
        // 2 * 500 MiB + 64 MiB, rounded up to 64 MiB steps.
        assert_eq!(d.esp_size(), 1088 * MIB);
    }

    #[test]
    fn loader_is_taken_from_its_package_only() {
        let err = loader_from_packages(Path::new("images/hyperv.yaml"), &[]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("systemd-boot-efi") && msg.contains("eci-build lock --target hyperv"),
            "{msg}"
        );
    }

    #[test]
    fn vhdx_ids_differ_between_disks_and_builds() {
        let a = vhdx_options("ab", "boot", MIB);
        let b = vhdx_options("ab", "data", MIB);
        let c = vhdx_options("cd", "boot", MIB);
        assert_ne!(a.disk_id, b.disk_id);
        assert_ne!(a.disk_id, c.disk_id);
        assert_ne!(a.file_write_guid, a.data_write_guid);
    }
}
