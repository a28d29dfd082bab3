//! The `eci-probe` binary against fake VM trees: the contract the image's init relies on
//! (arguments, the self-test line, exit codes), for the pinned Debian kernel with its
//! compensations and for the kernel eci builds itself (no exceptions, config in /proc).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use eci_kernel_config::ImagePins;

const DEBIAN_RELEASE: &str = "6.12.107+deb12-cloud-amd64";
const OWN_RELEASE: &str = "6.12.117-eci-qemu";

fn kernel_config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../kernel-config")
}

/// The modules images/base.yaml and images/qemu.yaml load at boot, from
/// kernel-config/testdata/boot-modules/ (a builder test keeps those lists equal to the
/// definitions).
fn qemu_modules() -> Vec<String> {
    let mut m = eci_kernel_config::testdata::boot_modules("common");
    m.extend(eci_kernel_config::testdata::boot_modules("qemu"));
    m
}

struct Vm {
    dir: tempfile::TempDir,
}

impl Vm {
    fn new(release: &str, pins: &ImagePins) -> Vm {
        let vm = Vm {
            dir: tempfile::tempdir().unwrap(),
        };
        vm.write("proc/sys/kernel/osrelease", &format!("{release}\n"));
        vm.write("etc/eci/kernel-pins.json", &pins.to_json());
        // What the init applies at boot (SPEC V3) and after the boot modules.
        for (name, value) in [
            ("kernel.kptr_restrict", "1"),
            ("kernel.dmesg_restrict", "1"),
            ("kernel.unprivileged_bpf_disabled", "2"),
            ("kernel.perf_event_paranoid", "3"),
            ("kernel.yama.ptrace_scope", "1"),
            ("fs.protected_symlinks", "1"),
            ("fs.protected_hardlinks", "1"),
            ("fs.protected_fifos", "2"),
            ("fs.protected_regular", "2"),
            ("vm.unprivileged_userfaultfd", "0"),
            ("kernel.kexec_load_disabled", "1"),
            ("kernel.modules_disabled", "1"),
        ] {
            vm.sysctl(name, value);
        }
        vm
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, rel: &str, text: &str) {
        self.write_bytes(rel, text.as_bytes());
    }

    fn write_bytes(&self, rel: &str, bytes: &[u8]) {
        let p = self.root().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    fn sysctl(&self, name: &str, value: &str) {
        self.write(
            &format!("proc/sys/{}", name.replace('.', "/")),
            &format!("{value}\n"),
        );
    }

    fn probe(&self, extra: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_eci-probe"))
            .arg("--root")
            .arg(self.root())
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }
}

fn gzip(text: &str) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(text.as_bytes()).unwrap();
    enc.finish().unwrap()
}

fn qemu_pins(release: &str, modules: &[String]) -> ImagePins {
    ImagePins {
        target: "qemu".into(),
        fragments: vec!["container".into(), "hardening".into(), "qemu".into()],
        kernel_release: release.into(),
        boot_modules: modules.to_vec(),
        profile: None,
    }
}

/// The pinned Debian kernel after boot: /boot/config, modules loaded, compensations in place.
fn debian_vm() -> Vm {
    let modules = qemu_modules();
    let vm = Vm::new(DEBIAN_RELEASE, &qemu_pins(DEBIAN_RELEASE, &modules));
    let config = std::fs::read_to_string(
        kernel_config_dir().join(format!("testdata/config-{DEBIAN_RELEASE}")),
    )
    .unwrap();
    vm.write(&format!("boot/config-{DEBIAN_RELEASE}"), &config);
    for m in &modules {
        std::fs::create_dir_all(vm.root().join("sys/module").join(m)).unwrap();
    }
    for (name, value) in [
        ("kernel.sysrq", "0"),
        ("kernel.panic_on_oops", "1"),
        ("dev.tty.ldisc_autoload", "0"),
        ("vm.mmap_rnd_bits", "32"),
        ("net.core.bpf_jit_enable", "1"),
    ] {
        vm.sysctl(name, value);
    }
    vm.write(
        "sys/kernel/security/lockdown",
        "none [integrity] confidentiality\n",
    );
    vm.write(
        "proc/cmdline",
        "console=ttyS0 panic=-1 lockdown=integrity slab_nomerge\n",
    );
    vm
}

#[test]
fn pinned_debian_kernel_with_its_compensations_reports_no_drift() {
    let vm = debian_vm();
    let (code, out, err) = vm.probe(&["--selftest"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "ECI-SELFTEST kernel-drift=none\n");
    assert!(err.is_empty(), "{err}");

    let (code, out, _) = vm.probe(&[]);
    assert_eq!(code, 0);
    assert!(out.contains("matches the qemu pin"), "{out}");
    assert!(
        out.contains(&format!("boot/config-{DEBIAN_RELEASE}")),
        "{out}"
    );
}

#[test]
fn drift_is_named_on_the_selftest_line_and_detailed_on_stderr() {
    let vm = debian_vm();
    // Module loading never got disabled, and a boot module is missing.
    vm.sysctl("kernel.modules_disabled", "0");
    std::fs::remove_dir(vm.root().join("sys/module/overlay")).unwrap();
    let (code, out, err) = vm.probe(&["--selftest"]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(
        out,
        "ECI-SELFTEST kernel-drift=2: overlay, kernel.modules_disabled\n"
    );
    assert!(
        err.contains("DRIFT") && err.contains("isolation must not start"),
        "{err}"
    );

    // Before the lock the same VM only misses the module.
    let (code, out, _) = vm.probe(&["--selftest", "--phase", "before-module-lock"]);
    assert_eq!(code, 1);
    assert_eq!(out, "ECI-SELFTEST kernel-drift=1: overlay\n");
}

#[test]
fn a_replaced_kernel_is_drift() {
    let vm = debian_vm();
    vm.write("proc/sys/kernel/osrelease", "6.12.999-custom\n");
    let (code, out, _) = vm.probe(&["--selftest"]);
    assert_eq!(code, 1);
    assert!(out.starts_with("ECI-SELFTEST kernel-drift="), "{out}");
    assert!(out.contains("kernel release"), "{out}");
}

#[test]
fn own_kernel_passes_the_strict_pin_from_proc_config_gz() {
    // The config eci builds for qemu, embedded as /proc/config.gz (IKCONFIG_PROC): no module
    // list, no lockdown or command-line compensations needed.
    let config =
        std::fs::read_to_string(kernel_config_dir().join("generated/qemu.config")).unwrap();
    let vm = Vm::new(OWN_RELEASE, &qemu_pins(OWN_RELEASE, &[]));
    vm.write_bytes("proc/config.gz", &gzip(&config));
    let (code, out, err) = vm.probe(&["--format", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["passed"], true);
    assert_eq!(doc["profile"], serde_json::Value::Null);
    assert!(doc["config_source"]
        .as_str()
        .unwrap()
        .ends_with("proc/config.gz"));
    let compensated = doc["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["note"]
                .as_str()
                .is_some_and(|n| n.starts_with("compensated"))
        })
        .count();
    assert_eq!(compensated, 0, "{out}");
}

#[test]
fn a_broken_pins_file_fails_closed() {
    let vm = debian_vm();
    vm.write("etc/eci/kernel-pins.json", "{\"target\": \"qemu\"}\n");
    let (code, out, err) = vm.probe(&["--selftest"]);
    assert_eq!(code, 2);
    assert_eq!(
        out,
        "ECI-SELFTEST kernel-drift=unknown: unreadable kernel pins file\n"
    );
    assert!(err.contains("etc/eci/kernel-pins.json:1:"), "{err}");
}
