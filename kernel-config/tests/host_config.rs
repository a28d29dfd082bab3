//! This machine's own kernel config, when it exposes one. The host is not the VM, so only
//! that reading and checking work is asserted, never the verdict.

use std::path::PathBuf;

use eci_kernel_config::{CheckOptions, KernelConfig, Pins, Target};

fn host_config() -> Option<PathBuf> {
    let proc = PathBuf::from("/proc/config.gz");
    if proc.is_file() {
        return Some(proc);
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let boot = PathBuf::from(format!("/boot/config-{}", release.trim()));
    boot.is_file().then_some(boot)
}

#[test]
fn parses_and_checks_this_machines_config() {
    let Some(path) = host_config() else {
        println!("skipped: neither /proc/config.gz nor /boot/config-$(uname -r) exists here");
        return;
    };
    let config = KernelConfig::from_path(&path)
        .unwrap_or_else(|e| panic!("this machine's config {} should parse: {e}", path.display()));
    assert!(config.len() > 100, "{} has too few symbols", path.display());
    assert!(
        config.version().is_some(),
        "kconfig writes a version header"
    );
    for target in Target::ALL {
        let report = Pins::builtin(target)
            .unwrap()
            .check(&config, &CheckOptions::default())
            .unwrap();
        assert_eq!(
            report.rows.len(),
            {
                let pins = Pins::builtin(target).unwrap();
                pins.requirements.len() + pins.version_pins.len()
            } + usize::from(config.release().is_some())
        );
        let table = report.render_table();
        println!(
            "{} against {target}: {}",
            path.display(),
            table.lines().last().unwrap_or_default()
        );
    }
}
