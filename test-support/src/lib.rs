//! What every eci test shares, so it cannot drift between the crates' tests and the end-to-end
//! suites. The rule a test follows when something it needs is missing (a command, root, QEMU,
//! an engine): on a laptop it prints why and skips; in CI (`CI` set, as `.ci/run` runs) it
//! fails, so CI can never pass by skipping. And where a checkout's test runs find the
//! mount-vetting supervisor ([`checkout_supervisor_socket`]).

use std::path::{Path, PathBuf};

/// Is this a CI run? `CI` set to anything but empty, `false` or `0`.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Returns true when the test may go on. Otherwise prints the reason and returns false (the
/// caller returns early), or panics in CI.
pub fn prerequisite(ok: bool, reason: &str) -> bool {
    if ok {
        return true;
    }
    if in_ci() {
        panic!("prerequisite missing in CI: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
    false
}

/// Can `command` be started (found on PATH, whatever it answers to `--version`)? Used with
/// [`prerequisite`]: `if !prerequisite(have("sgdisk"), "sgdisk (apt-get install gdisk)") { return; }`.
pub fn have(command: &str) -> bool {
    std::process::Command::new(command)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// The supervisor socket a test run of eci-runc uses (`ECI_SUPERVISOR_SOCKET`), given the
/// eci-runc binary it runs: beside that binary, so the supervisor eci-runc starts when none
/// answers belongs to this checkout's build, not the machine's default socket. A run from
/// another checkout (CI's clone beside a working tree) then never registers its containers with
/// a program that was since rebuilt elsewhere.
pub fn checkout_supervisor_socket(eci_runc: &Path) -> PathBuf {
    eci_runc.with_file_name("e2e-supervisor/supervisor.sock")
}

/// The /proc views root a test run of eci-runc uses (`ECI_VIEWS_ROOT`), beside the binary for
/// the same reason: the views server (and the fd store it starts) eci-runc starts when none
/// answers is this checkout's, and the machine's /run/eci-views is left alone.
pub fn checkout_views_root(eci_runc: &Path) -> PathBuf {
    eci_runc.with_file_name("e2e-views")
}
