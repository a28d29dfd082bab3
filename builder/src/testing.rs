//! Helpers the builder's unit tests share.

use std::process::{Command, Output};

/// Runs an independent tool over what a test wrote and fails the test, with the tool's
/// stderr, unless it exits successfully.
pub(crate) fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
