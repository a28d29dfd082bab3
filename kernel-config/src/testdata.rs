//! Fixtures of `kernel-config/testdata/` for the workspace's tests (the probe, eci-init and
//! eci-build fake booted VMs with them). Not part of the API.

use std::path::PathBuf;

/// `kernel-config/testdata/` in this checkout.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

/// A list of `testdata/boot-modules/` (`common`, `hyperv`, `qemu`): the boot modules of the
/// image definitions, which an eci-build test keeps them equal to.
pub fn boot_modules(list: &str) -> Vec<String> {
    let p = dir().join("boot-modules").join(format!("{list}.txt"));
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}
