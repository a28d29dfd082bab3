//! The pinned Debian kernel's config (testdata/, copied from the package's /boot) against the
//! built-in pins.

use std::path::PathBuf;

use eci_kernel_config::{
    CheckOptions, KernelConfig, Pins, ProfileSelection, Report, Status, Target,
};

const RELEASE: &str = "6.12.107+deb12-cloud-amd64";

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("testdata/config-{RELEASE}"))
}

fn debian() -> KernelConfig {
    KernelConfig::from_path(&fixture()).expect("the fixture parses")
}

use eci_kernel_config::testdata::boot_modules;

fn modules(target: Target) -> Vec<String> {
    let mut m = boot_modules("common");
    match target {
        Target::Hyperv => m.extend(boot_modules("hyperv")),
        Target::Qemu => m.extend(boot_modules("qemu")),
        Target::Wsl2 => {}
    }
    m
}

fn check(target: Target, config: &KernelConfig) -> Report {
    Pins::builtin(target)
        .unwrap()
        .check(
            config,
            &CheckOptions {
                boot_modules: modules(target),
                ..Default::default()
            },
        )
        .unwrap()
}

#[test]
fn fixture_is_the_pinned_kernel() {
    let c = debian();
    assert_eq!(c.release(), Some(RELEASE));
    assert_eq!(c.version().unwrap().to_string(), "6.12.107");
    assert!(c.len() > 3000);
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
}

#[test]
fn hyperv_and_qemu_pass_with_the_proposed_module_list() {
    for target in [Target::Hyperv, Target::Qemu] {
        let report = check(target, &debian());
        let table = report.render_table();
        if std::env::var_os("ECI_SHOW_REPORT").is_some() {
            println!("{table}");
        }
        assert!(report.is_ok(), "{target}:\n{table}");
        assert_eq!(report.profile.as_deref(), Some("debian12-cloud-6.12"));
        assert!(
            report.warnings.is_empty(),
            "{target}: {:?}",
            report.warnings
        );
        // departures show as compensated, never as ok
        for option in ["KEXEC", "DEVMEM", "MODULE_SIG_FORCE", "SLAB_MERGE_DEFAULT"] {
            assert!(
                matches!(report.row(option).unwrap().status, Status::Compensated(_)),
                "{target}: {option} should be compensated"
            );
        }
    }
}

#[test]
fn the_strict_pin_fails_on_the_pinned_kernel() {
    let report = Pins::builtin(Target::Hyperv)
        .unwrap()
        .check(
            &debian(),
            &CheckOptions {
                boot_modules: modules(Target::Hyperv),
                profile: ProfileSelection::Disabled,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(!report.is_ok());
    let failing: Vec<&str> = report.violations().map(|r| r.option.as_str()).collect();
    assert!(failing.contains(&"CONFIG_KEXEC"), "{failing:?}");
    assert!(failing.contains(&"CONFIG_HYPERV_STORAGE"), "{failing:?}");
}

#[test]
fn removing_user_ns_fails_naming_it() {
    let text = std::fs::read_to_string(fixture()).unwrap();
    let without: String = text
        .lines()
        .filter(|l| !l.starts_with("CONFIG_USER_NS="))
        .map(|l| format!("{l}\n"))
        .collect();
    let config = KernelConfig::parse(&without, "edited")
        .unwrap()
        .with_release(RELEASE);
    for target in [Target::Hyperv, Target::Qemu] {
        let report = check(target, &config);
        assert!(!report.is_ok());
        let names: Vec<&str> = report.violations().map(|r| r.option.as_str()).collect();
        assert_eq!(names, vec!["CONFIG_USER_NS"], "{target}");
        assert!(report
            .render_table()
            .contains("VIOLATION    CONFIG_USER_NS"));
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["passed"], false);
    }
}

#[test]
fn a_missing_boot_module_fails_with_the_fix() {
    let pins = Pins::builtin(Target::Qemu).unwrap();
    let mods: Vec<String> = modules(Target::Qemu)
        .into_iter()
        .filter(|m| m != "overlay")
        .collect();
    let report = pins
        .check(
            &debian(),
            &CheckOptions {
                boot_modules: mods,
                ..Default::default()
            },
        )
        .unwrap();
    let row = report.row("OVERLAY_FS").unwrap();
    let Status::Violation(detail) = &row.status else {
        panic!("{row:?}")
    };
    assert!(detail.contains("add overlay to kernel.modules in the image definition or build it in"));
}

#[test]
fn wsl2_is_not_satisfied_by_the_debian_cloud_kernel() {
    let report = check(Target::Wsl2, &debian());
    assert_eq!(
        report.profile, None,
        "the Debian profile is not reviewed for wsl2"
    );
    let failing: Vec<&str> = report.violations().map(|r| r.option.as_str()).collect();
    for option in [
        "CONFIG_NET_9P",
        "CONFIG_9P_FS",
        "CONFIG_IKCONFIG_PROC",
        "CONFIG_HYPERV",
    ] {
        assert!(
            failing.contains(&option),
            "{option} missing from {failing:?}"
        );
    }
}
