//! SPEC V4 end to end: `images/hyperv.yaml` + its lock -> `boot.vhdx`, `data.vhdx` and
//! `create-vm.ps1` -> a UEFI boot of the VHDX through OVMF (the EDK2 firmware family Hyper-V's
//! Generation 2 firmware comes from) -> the in-VM self-test passes (SPEC V3, V7).
//!
//! The self-test needs `eci.selftest` on the kernel command line, and the shipped disk must not
//! carry it. The command line lives in the ESP's loader entry, so the test writes its own disk
//! with the builder's [`BootDisk`] from the build's outputs (`vmlinuz`, `initramfs.img`, the
//! loader from the locked `systemd-boot-efi` package, the definition's `kernel.cmdline`, and the
//! lock hash and source date from `manifest.json`): first with no extra token, which must give
//! the shipped `boot.vhdx` byte for byte, then with `eci.selftest` appended, which is what boots.
//! The disk under test therefore differs from the shipped one by that token alone.

use eci_build::apt::fetch::Cache;
use eci_build::apt::lock::Lockfile;
use eci_build::artifact::fat;
use eci_build::artifact::gpt;
use eci_build::artifact::hyperv::{self, BootDisk};
use eci_build::artifact::vhdx::VhdxReader;
use eci_build::boot::{self, Accel, Disk, DiskFormat, Firmware, UefiBootOptions};
use eci_build::pipeline;
use eci_e2e::{build_image_or_skip, prerequisite, workspace, workspace_root};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const TARGET: &str = "hyperv";

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn qemu_img(args: &[&str], file: &Path) -> (bool, String) {
    let out = Command::new("qemu-img")
        .args(args)
        .arg(file)
        .output()
        .expect("qemu-img runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn hyperv_boot_disk_boots_through_uefi_to_a_passing_selftest() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let Some(built) = build_image_or_skip(TARGET, &out) else {
        return;
    };
    let m = &built.manifest;
    let record = |kind: &str| {
        m.artifacts
            .iter()
            .find(|a| a.kind == kind)
            .unwrap_or_else(|| panic!("no {kind} in manifest.json: {:?}", m.artifacts))
    };
    let (boot_rec, data_rec, script_rec) = (
        record("boot-disk"),
        record("data-disk"),
        record("hyperv-script"),
    );
    for r in [boot_rec, data_rec, script_rec] {
        let bytes = std::fs::read(out.join(&r.path)).unwrap();
        assert_eq!(hex::encode(Sha256::digest(&bytes)), r.sha256, "{}", r.path);
        assert_eq!(bytes.len() as u64, r.size, "{}", r.path);
    }
    assert_eq!(data_rec.virtual_size, Some(hyperv::DATA_DISK_SIZE));
    assert!(
        data_rec.size <= 4 << 20,
        "the empty data disk stays a few MiB: {data_rec:?}"
    );

    // What the shipped boot disk holds, read through the builder's own readers.
    let spec = pipeline::load_spec(&workspace(), TARGET).unwrap();
    let boot_vhdx = std::fs::read(out.join(&boot_rec.path)).unwrap();
    let reader = VhdxReader::open(&boot_vhdx).unwrap();
    assert_eq!(Some(reader.virtual_size), boot_rec.virtual_size);
    let raw = reader.read_at(0, reader.virtual_size as usize).unwrap();
    let table = gpt::read(&raw).unwrap();
    let [esp] = &table.partitions[..] else {
        panic!("one partition expected: {table:?}")
    };
    assert_eq!(esp.type_guid, gpt::ESP_TYPE);
    let files =
        fat::read(&raw[(esp.first_lba * 512) as usize..((esp.last_lba + 1) * 512) as usize])
            .unwrap();
    let file = |p: &str| {
        files
            .iter()
            .find(|f| f.path == p)
            .unwrap_or_else(|| panic!("{p} not on the ESP"))
            .data
            .clone()
    };
    assert!(file("eci/vmlinuz") == std::fs::read(out.join("vmlinuz")).unwrap());
    assert!(file("eci/initramfs.img") == std::fs::read(out.join("initramfs.img")).unwrap());
    let entry = String::from_utf8(file("loader/entries/eci.conf")).unwrap();
    let shipped_options = format!("\noptions {}\n", spec.kernel.cmdline.join(" "));
    assert!(entry.contains(&shipped_options), "{entry}");
    assert!(
        !entry.contains("eci.selftest"),
        "the self-test token must not ship: {entry}"
    );

    // The loader as the pipeline takes it: from the locked package, verified by the cache.
    let lock = Lockfile::read(&workspace_root().join("images/hyperv.lock")).unwrap();
    let locked = lock
        .package(hyperv::LOADER_PACKAGE)
        .expect("systemd-boot-efi is locked for hyperv");
    let deb = Cache::new(Cache::default_location())
        .read_verified(&locked.sha256)
        .unwrap();
    let loader = hyperv::loader_from_deb(&deb, hyperv::LOADER_PACKAGE).unwrap();
    assert!(file("EFI/BOOT/BOOTX64.EFI") == loader.as_slice());

    let kernel = std::fs::read(out.join("vmlinuz")).unwrap();
    let initramfs = std::fs::read(out.join("initramfs.img")).unwrap();
    let disk = |extra: &[&str]| {
        let mut cmdline = spec.kernel.cmdline.clone();
        cmdline.extend(extra.iter().map(|s| s.to_string()));
        BootDisk {
            kernel: &kernel,
            initramfs: &initramfs,
            loader: &loader,
            kernel_release: &m.kernel.release,
            cmdline,
            lock_sha256: &m.lock_sha256,
            epoch: m.source_date_epoch,
        }
    };
    let same = work.path().join("same.vhdx");
    disk(&[]).write_vhdx(&same).unwrap();
    assert!(
        std::fs::read(&same).unwrap() == boot_vhdx,
        "rewriting the boot disk from the build's outputs must reproduce boot.vhdx"
    );
    drop((raw, boot_vhdx));
    let selftest_disk = work.path().join("selftest.vhdx");
    disk(&["eci.selftest"]).write_vhdx(&selftest_disk).unwrap();

    // The Hyper-V script creates a Gen2 VM around exactly these disks.
    let script = std::fs::read_to_string(out.join(&script_rec.path)).unwrap();
    assert!(
        script
            .lines()
            .any(|l| l.split_whitespace().eq(["Generation", "=", "2"])),
        "create-vm.ps1 does not create a Generation 2 VM"
    );
    for want in [
        "New-VM @newVm",
        "-EnableSecureBoot Off",
        "Set-VMComPort -VM $vm -Number 1",
        "-FirstBootDevice $bootDrive",
        boot_rec.sha256.as_str(),
        data_rec.sha256.as_str(),
    ] {
        assert!(script.contains(want), "create-vm.ps1 lacks `{want}`");
    }
    assert!(script.contains("\r\n") && script.is_ascii());

    if !prerequisite(
        Command::new("qemu-img").arg("--version").output().is_ok(),
        "qemu-img is not installed (apt-get install qemu-utils)",
    ) {
        return;
    }
    for d in [
        out.join(&boot_rec.path),
        out.join(&data_rec.path),
        selftest_disk.clone(),
    ] {
        let (ok, text) = qemu_img(&["check", "-f", "vhdx"], &d);
        assert!(ok, "qemu-img check {}: {text}", d.display());
    }
    let (ok, text) = qemu_img(
        &["info", "--output=json", "-f", "vhdx"],
        &out.join(&data_rec.path),
    );
    assert!(ok, "{text}");
    let info: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(info["virtual-size"], hyperv::DATA_DISK_SIZE);

    if !prerequisite(
        boot::qemu_available(),
        "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)",
    ) || !prerequisite(
        Firmware::installed(),
        "OVMF firmware is not installed (apt-get install ovmf)",
    ) {
        return;
    }
    let console = work.path().join("console.log");
    let result = boot::boot_uefi(&UefiBootOptions {
        boot_disk: Disk {
            path: selftest_disk,
            format: DiskFormat::Vhdx,
        },
        extra_disks: vec![Disk {
            path: out.join(&data_rec.path),
            format: DiskFormat::Vhdx,
        }],
        firmware: Firmware::with_private_vars(work.path()).unwrap(),
        memory_mib: 2048,
        cpus: 2,
        accel: Accel::Tcg,
        timeout: Duration::from_secs(240),
        console_log: console.clone(),
        echo: false,
    })
    .unwrap_or_else(|e| panic!("UEFI boot failed: {e}\n{}", tail(&console, 60)));
    let log = std::fs::read_to_string(&console).unwrap();
    let t = &result.selftest;
    assert!(
        t.passed(),
        "self-test did not pass ({:?}); console tail:\n{}",
        t.status,
        tail(&console, 80)
    );
    // The firmware found the loader on the disk (no boot entries exist in a fresh store), the
    // loader handed over the initramfs, and the command line is the entry's.
    assert!(log.contains("BdsDxe: starting"), "{}", tail(&console, 80));
    assert!(
        log.contains("EFI stub: Loaded initrd"),
        "{}",
        tail(&console, 80)
    );
    let cmdline = log
        .lines()
        .find_map(|l| l.split("Kernel command line: ").nth(1))
        .expect("the kernel prints its command line");
    for token in spec
        .kernel
        .cmdline
        .iter()
        .map(String::as_str)
        .chain(["eci.selftest"])
    {
        assert!(
            cmdline.split_whitespace().any(|t| t == token),
            "`{token}` missing from {cmdline}"
        );
    }
    assert_eq!(t.fact("kernel"), Some(m.kernel.release.as_str()));
    assert_eq!(t.fact("modules_disabled"), Some("1"), "{t:?}");
    assert!(
        t.fact("lockdown").unwrap_or("").contains("[integrity]"),
        "{t:?}"
    );
    assert!(t.fact("server").unwrap_or("").starts_with("20.10"), "{t:?}");
    eprintln!(
        "UEFI boot under {} in {:.1} s; boot.vhdx {} bytes (virtual {}), data.vhdx {} bytes",
        result.accel,
        result.seconds,
        boot_rec.size,
        boot_rec.virtual_size.unwrap_or(0),
        data_rec.size
    );
}
