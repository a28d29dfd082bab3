//! eci-init in a real VM with a data disk (SPEC V2): the qemu target's image boots with a blank
//! virtio disk, formats it ext4 (label eci-data) and keeps the engine data on it; a second boot
//! reuses it without formatting, and the ACPI power button (QEMU's `system_powerdown`) shuts
//! the VM down cleanly: services stopped in reverse order, the disk unmounted, the VM powered
//! off by itself. The disk image is checked from the host between boots.

use eci_build::boot::{self, Accel, BootOptions, SelfTest};
use eci_build::pipeline;
use eci_e2e::{build_image_or_skip, prerequisite, workspace};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TARGET: &str = "qemu";
const DISK_BYTES: u64 = 512 << 20;

struct Vm {
    child: Child,
    console: PathBuf,
    monitor: PathBuf,
}

impl Vm {
    fn start(out: &Path, disk: &Path, extra_cmdline: &[&str], work: &Path, name: &str) -> Vm {
        let spec = pipeline::load_spec(&workspace(), TARGET).unwrap();
        let mut cmdline = spec.kernel.cmdline.clone();
        cmdline.extend(extra_cmdline.iter().map(|s| s.to_string()));
        let probe = BootOptions {
            kernel: out.join("vmlinuz"),
            initramfs: out.join("initramfs.img"),
            cmdline: cmdline.clone(),
            memory_mib: 2048,
            cpus: 2,
            accel: Accel::Auto,
            timeout: Duration::from_secs(10),
            console_log: work.join("probe.log"),
            echo: false,
        };
        let kvm = boot::kvm_works(&probe);
        let console = work.join(format!("{name}.console"));
        let monitor = work.join(format!("{name}.monitor"));
        let accel = if kvm { Accel::Kvm } else { Accel::Tcg };
        let mut cmd = Command::new(boot::QEMU);
        cmd.args([
            "-machine",
            "q35",
            "-accel",
            boot::accel_arg(accel),
            "-cpu",
            boot::cpu_arg(accel),
        ])
        .args([
            "-m",
            "2048",
            "-smp",
            "2",
            "-display",
            "none",
            "-no-reboot",
            "-nodefaults",
        ])
        .arg("-monitor")
        .arg(format!("unix:{},server=on,wait=off", monitor.display()))
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .args([
            "-netdev",
            "user,id=n0,restrict=on",
            "-device",
            "virtio-net-pci,netdev=n0",
        ])
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=raw", disk.display()))
        .arg("-kernel")
        .arg(out.join("vmlinuz"))
        .arg("-initrd")
        .arg(out.join("initramfs.img"))
        .args(["-append", &cmdline.join(" ")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        Vm {
            child: cmd.spawn().expect("qemu starts"),
            console,
            monitor,
        }
    }

    fn console(&self) -> String {
        std::fs::read_to_string(&self.console)
            .unwrap_or_default()
            .replace('\r', "")
    }

    fn wait_for_line(&mut self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.console().contains(needle) {
                return;
            }
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!(
                    "VM exited ({s}) before {needle:?}:\n{}",
                    tail(&self.console())
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let _ = self.child.kill();
        panic!(
            "no {needle:?} within {timeout:?}:\n{}",
            tail(&self.console())
        );
    }

    /// Waits for QEMU to exit on its own (the VM powered off).
    fn wait_exit(&mut self, timeout: Duration) -> String {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "qemu: {status}");
                return self.console();
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!(
            "the VM did not power off within {timeout:?}:\n{}",
            tail(&self.console())
        );
    }

    fn press_power_button(&self) {
        let mut s = std::os::unix::net::UnixStream::connect(&self.monitor).expect("QEMU monitor");
        s.write_all(b"system_powerdown\n").unwrap();
        // Let the monitor read the command before the connection closes.
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// (label, uuid, cleanly unmounted) from the ext4 superblock of the raw disk image.
fn superblock(disk: &Path) -> (String, String, bool) {
    let bytes = std::fs::read(disk).unwrap();
    let sb = &bytes[1024..2048];
    assert_eq!(
        u16::from_le_bytes([sb[56], sb[57]]),
        0xEF53,
        "no ext4 superblock"
    );
    let label = String::from_utf8_lossy(&sb[120..136])
        .trim_end_matches('\0')
        .to_string();
    let uuid: String = sb[104..120].iter().map(|b| format!("{b:02x}")).collect();
    let incompat = u32::from_le_bytes([sb[96], sb[97], sb[98], sb[99]]);
    // INCOMPAT_RECOVER is set while the journal is in use and cleared by a clean unmount.
    (label, uuid, incompat & 0x4 == 0)
}

fn in_order(console: &str, lines: &[&str]) {
    let mut at = 0;
    for l in lines {
        match console[at..].find(l) {
            Some(i) => at += i + l.len(),
            None => panic!(
                "{l:?} missing or out of order after byte {at}:\n{}",
                tail(console)
            ),
        }
    }
}

#[test]
fn data_disk_is_formatted_once_reused_and_the_power_button_shuts_down_cleanly() {
    if !prerequisite(
        boot::qemu_available(),
        "qemu-system-x86_64 is not installed (apt-get install -y qemu-system-x86)",
    ) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    if build_image_or_skip(TARGET, &out).is_none() {
        return;
    }
    let disk = work.path().join("data.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(DISK_BYTES)
        .unwrap();

    // First boot: the blank disk is formatted and holds the engine data.
    let mut vm = Vm::start(&out, &disk, &["eci.selftest"], work.path(), "first");
    let console = vm.wait_exit(Duration::from_secs(420));
    let t = SelfTest::parse(&console);
    assert!(t.passed(), "{t:?}\n{}", tail(&console));
    assert_eq!(t.fact("data-disk"), Some("formatted"), "{t:?}");
    assert_eq!(t.fact("data-disk-device"), Some("/dev/vda"), "{t:?}");
    // busybox names ext4 by its superblock family.
    assert_eq!(t.fact("docker-data-fs"), Some("ext2/ext3"), "{t:?}");
    assert_eq!(t.fact("containerd-data-fs"), Some("ext2/ext3"), "{t:?}");
    assert_eq!(t.fact("root"), Some("ro"), "{t:?}");
    assert!(t.fact("dockerd-ready uptime").is_some(), "{t:?}");
    let (label, uuid, clean) = superblock(&disk);
    assert_eq!(label, "eci-data");
    assert_eq!(
        t.fact("data-disk-uuid").map(|u| u.replace('-', "")),
        Some(uuid.clone())
    );
    assert!(clean, "the first boot's power off left the journal dirty");
    in_order(
        &console,
        &[
            "formatting the blank disk /dev/vda",
            "data disk /dev/vda (formatted",
            "dockerd: stopped",
            "containerd: stopped",
            "unmounting the data disk",
            "powering off",
        ],
    );

    // Second boot, no self-test: the disk is found by its label, checked, not formatted; then
    // the power button ends the VM.
    let mut vm = Vm::start(&out, &disk, &[], work.path(), "second");
    vm.wait_for_line("eci-init: ready:", Duration::from_secs(300));
    vm.press_power_button();
    let console = vm.wait_exit(Duration::from_secs(180));
    assert!(!console.contains("formatting"), "{}", tail(&console));
    in_order(
        &console,
        &[
            "e2fsck: eci-data: clean",
            "data disk /dev/vda (existing",
            "kept from the last boot: docker, containerd, eci",
            "root filesystem is read-only",
            "(Power Button) for the power button",
            "containerd: ready",
            "dockerd: ready",
            "power button pressed: shutting down",
            "dockerd: stopping (SIGTERM)",
            "dockerd: stopped",
            "containerd: stopping (SIGTERM)",
            "containerd: stopped",
            "unmounting the data disk",
            "powering off",
        ],
    );
    assert!(console.contains("reboot: Power down"), "{}", tail(&console));
    let (label2, uuid2, clean2) = superblock(&disk);
    assert_eq!(
        (label2.as_str(), uuid2.as_str()),
        ("eci-data", uuid.as_str())
    );
    assert!(clean2, "the power-button shutdown left the journal dirty");
}
