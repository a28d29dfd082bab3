//! The one rule every eci test follows when something it needs is missing (a command, root,
//! QEMU, an engine): on a laptop it prints why and skips; in CI (`CI` set, as `.ci/run` runs)
//! it fails, so CI can never pass by skipping. Unit tests of every crate and the end-to-end
//! suites use this, so the rule cannot drift between them.

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
