//! SPEC V5 (and V3's result): before any service starts, the running kernel is probed against
//! the pins the image carries (/etc/eci/kernel-pins.json), after the boot modules are loaded,
//! the hardening sysctls applied and module loading disabled. The decision is the kernel-config
//! library's ([`DriftVerdict`]); init supplies the boot modules that did not load and why, so
//! that only those whose hardware is absent are excused. On drift init starts none of the
//! services (containerd, dockerd and eci-guard: isolation is refused), says on the console what
//! drifted and what to do, records the verdict in [`STATUS_FILE`] and stays up, so the reason
//! can be read and the VM powered off as usual.

use eci_kernel_config::{
    probe_running_kernel, DriftVerdict, HardwareAbsent, ImagePins, ModuleFailure, Phase,
};
use std::path::Path;

/// The verdict as JSON (`isolation`: `allowed` or `refused`, `drifted`, `excused`, `remedy`),
/// root-only like the rest of /run/eci; rewritten at every boot, whatever the verdict.
pub const STATUS_FILE: &str = eci_facts::vm_paths::KERNEL_DRIFT_STATUS;

/// Probes the kernel whose /proc and /sys are under `probe_root` against the pins in
/// `pins_path`. A probe that cannot run refuses too: nothing was verified.
pub fn check(probe_root: &Path, pins_path: &Path, failures: &[ModuleFailure]) -> DriftVerdict {
    let origin = pins_path.display().to_string();
    let text = match std::fs::read_to_string(pins_path) {
        Ok(t) => t,
        Err(e) => {
            return DriftVerdict::probe_failed(
                None,
                "no kernel pins file",
                &format!("cannot read {origin}: {e}; eci-build writes it into every image"),
            )
        }
    };
    let image = match ImagePins::from_json(&text, &origin) {
        Ok(i) => i,
        Err(e) => {
            return DriftVerdict::probe_failed(None, "unreadable kernel pins file", &e.to_string())
        }
    };
    let target = image.target().ok();
    let pins = match image.pins() {
        Ok(p) => p,
        Err(e) => return DriftVerdict::probe_failed(target, "unknown kernel pins", &e.to_string()),
    };
    match probe_running_kernel(
        probe_root,
        &pins,
        &image.probe_options(Phase::AfterModuleLock),
    ) {
        Ok(report) => DriftVerdict::new(&report, &HardwareAbsent::from_failures(failures)),
        Err(e) => DriftVerdict::probe_failed(target, "cannot read /proc", &e.to_string()),
    }
}

/// The console block: one line per drifted or excused item, what was not started, what to do.
pub fn refusal_block(verdict: &DriftVerdict, not_started: &[String]) -> Vec<String> {
    let rule = "=".repeat(72);
    let mut out = vec![
        rule.clone(),
        format!(
            "KERNEL DRIFT: isolation refused (SPEC V5); not started: {}",
            if not_started.is_empty() {
                "no services are configured".to_string()
            } else {
                not_started.join(", ")
            }
        ),
    ];
    out.extend(verdict.lines());
    out.push(format!(
        "eci-init keeps running, with nothing started, so this can be read; the verdict is in \
         {STATUS_FILE}; shut down as usual"
    ));
    out.push(rule);
    out
}

/// Writes `verdict` to `path` atomically (a temporary file in the same directory, renamed), mode
/// 0600, so a reader never sees half a verdict or one from an earlier start.
pub fn write_status(path: &Path, verdict: &DriftVerdict) -> std::io::Result<()> {
    eci_facts::write_atomic(path, verdict.to_json().as_bytes(), 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use eci_kernel_config::{Isolation, ENODEV, ENOENT};
    use std::os::unix::fs::PermissionsExt;

    const RELEASE: &str = "6.12.117-eci-qemu";

    /// The kernel eci builds for qemu, as its /proc and /sys look after boot.
    fn fake_kernel(dir: &Path, release: &str) {
        let put = |rel: &str, text: &str| {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        put("proc/sys/kernel/osrelease", &format!("{release}\n"));
        let config = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernel-config/generated/qemu.config"),
        )
        .unwrap();
        put(&format!("boot/config-{release}"), &config);
        for (name, value) in [
            ("kernel/kptr_restrict", "2"),
            ("kernel/dmesg_restrict", "1"),
            ("kernel/unprivileged_bpf_disabled", "1"),
            ("kernel/perf_event_paranoid", "3"),
            ("kernel/yama/ptrace_scope", "1"),
            ("fs/protected_symlinks", "1"),
            ("fs/protected_hardlinks", "1"),
            ("fs/protected_fifos", "2"),
            ("fs/protected_regular", "2"),
            ("vm/unprivileged_userfaultfd", "0"),
            ("kernel/kexec_load_disabled", "1"),
        ] {
            put(&format!("proc/sys/{name}"), &format!("{value}\n"));
        }
    }

    fn pins(dir: &Path, target: &str, fragment: &str, modules: &[&str]) -> std::path::PathBuf {
        let p = dir.join("kernel-pins.json");
        let pins = ImagePins {
            target: target.into(),
            fragments: vec!["container".into(), "hardening".into(), fragment.into()],
            kernel_release: RELEASE.into(),
            boot_modules: modules.iter().map(|m| m.to_string()).collect(),
            profile: None,
        };
        std::fs::write(&p, pins.to_json()).unwrap();
        p
    }

    #[test]
    fn the_pinned_kernel_is_allowed_and_a_weaker_one_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("k");
        fake_kernel(&root, RELEASE);
        let pins = pins(tmp.path(), "qemu", "qemu", &[]);
        let v = check(&root, &pins, &[]);
        assert_eq!(v.isolation, Isolation::Allowed, "{:#?}", v.lines());

        std::fs::write(root.join("proc/sys/kernel/kptr_restrict"), "0\n").unwrap();
        let v = check(&root, &pins, &[]);
        assert!(v.is_refused());
        assert_eq!(v.selftest_value(), "1: kernel.kptr_restrict");
        let block = refusal_block(&v, &["containerd".into(), "dockerd".into()]);
        assert!(
            block[1].contains("not started: containerd, dockerd"),
            "{block:?}"
        );
        assert!(block
            .iter()
            .any(|l| l.starts_with("  DRIFT kernel.kptr_restrict: wanted >=1, found 0")));
        assert!(block.iter().any(|l| l.starts_with("what to do: boot")));
        assert!(block.iter().any(|l| l.contains(STATUS_FILE)));
    }

    const DEBIAN: &str = "6.12.107+deb12-cloud-amd64";

    use eci_kernel_config::testdata::boot_modules;

    /// The hyperv image's boot modules.
    fn hyperv_modules() -> Vec<String> {
        let mut m = boot_modules("common");
        m.extend(boot_modules("hyperv"));
        m
    }

    /// The Hyper-V drivers among them, which cannot bind without Hyper-V (the SCSI disk
    /// modules are generic and load anywhere).
    fn hv() -> Vec<String> {
        boot_modules("hyperv")
            .into_iter()
            .filter(|m| m != "scsi_mod" && m != "sd_mod")
            .collect()
    }

    /// The hyperv image booted under QEMU: Debian's kernel with its compensations in force,
    /// every module loaded except the Hyper-V drivers, which have no VMBus to bind to.
    fn hyperv_under_qemu(dir: &Path) -> std::path::PathBuf {
        let root = dir.join("k");
        fake_kernel(&root, DEBIAN);
        std::fs::remove_file(root.join(format!("boot/config-{DEBIAN}"))).unwrap();
        let put = |rel: &str, text: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        let config = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("../../kernel-config/testdata/config-{DEBIAN}")),
        )
        .unwrap();
        put(&format!("boot/config-{DEBIAN}"), &config);
        for (name, value) in [
            ("kernel/modules_disabled", "1"),
            ("kernel/sysrq", "0"),
            ("kernel/panic_on_oops", "1"),
            ("dev/tty/ldisc_autoload", "0"),
            ("vm/mmap_rnd_bits", "32"),
            ("net/core/bpf_jit_enable", "1"),
        ] {
            put(&format!("proc/sys/{name}"), &format!("{value}\n"));
        }
        put(
            "sys/kernel/security/lockdown",
            "none [integrity] confidentiality\n",
        );
        put(
            "proc/cmdline",
            "console=ttyS0 panic=-1 lockdown=integrity slab_nomerge\n",
        );
        let hv = hv();
        for m in hyperv_modules().iter().filter(|m| !hv.contains(m)) {
            std::fs::create_dir_all(root.join("sys/module").join(m)).unwrap();
        }
        root
    }

    fn hv_failures(errno_of_netvsc: i32) -> Vec<ModuleFailure> {
        hv().iter()
            .map(|m| ModuleFailure {
                name: m.replace('_', "-"),
                errno: Some(match m.as_str() {
                    "hv_vmbus" => ENODEV,
                    "hv_netvsc" => errno_of_netvsc,
                    _ => ENOENT,
                }),
                depends: if m == "hv_vmbus" {
                    vec![]
                } else {
                    vec!["hv_vmbus".into()]
                },
                skipped: false,
            })
            .collect()
    }

    #[test]
    fn hyperv_drivers_without_their_hardware_are_excused_other_failures_are_not() {
        let tmp = tempfile::tempdir().unwrap();
        let root = hyperv_under_qemu(tmp.path());
        let p = tmp.path().join("kernel-pins.json");
        let image = ImagePins {
            target: "hyperv".into(),
            fragments: vec!["container".into(), "hardening".into(), "hyperv".into()],
            kernel_release: DEBIAN.into(),
            boot_modules: hyperv_modules(),
            profile: None,
        };
        std::fs::write(&p, image.to_json()).unwrap();

        let v = check(&root, &p, &hv_failures(ENOENT));
        assert_eq!(v.isolation, Isolation::Allowed, "{:#?}", v.lines());
        let excused: Vec<&str> = v.excused.iter().map(|e| e.name.as_str()).collect();
        for m in hv() {
            assert!(
                excused.contains(&m.as_str()),
                "{m} not excused: {excused:?}"
            );
        }
        assert!(v.excused.iter().all(|e| e.reason == "hardware absent"));

        // hv_netvsc refused for another reason (EPERM): drift, isolation refused.
        let v = check(&root, &p, &hv_failures(libc::EPERM));
        assert!(v.is_refused());
        assert_eq!(v.selftest_value(), "1: hv_netvsc");
        // Without the load failures nothing explains the missing drivers.
        let v = check(&root, &p, &[]);
        assert_eq!(v.drifted.len(), hv().len(), "{:#?}", v.lines());
    }

    #[test]
    fn no_pins_no_proc_or_bad_pins_refuse() {
        let tmp = tempfile::tempdir().unwrap();
        let v = check(tmp.path(), &tmp.path().join("missing.json"), &[]);
        assert_eq!(v.selftest_value(), "unknown: no kernel pins file");
        assert!(v.drifted[0].reason.contains("missing.json"), "{v:?}");
        let bad = tmp.path().join("bad.json");
        std::fs::write(&bad, "{\"target\": \"qemu\"}").unwrap();
        assert_eq!(
            check(tmp.path(), &bad, &[]).selftest_value(),
            "unknown: unreadable kernel pins file"
        );
        let pins = pins(tmp.path(), "qemu", "qemu", &[]);
        let v = check(&tmp.path().join("nothing"), &pins, &[]);
        assert_eq!(v.selftest_value(), "unknown: cannot read /proc");
        assert!(v.is_refused());
    }

    #[test]
    fn the_status_file_is_replaced_whole_and_root_only() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("kernel-drift.json");
        std::fs::write(&path, "stale").unwrap();
        let v = check(tmp.path(), &tmp.path().join("missing.json"), &[]);
        write_status(&path, &v).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["isolation"], "refused");
        assert_eq!(doc["drifted"][0]["name"], "no kernel pins file");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }
}
