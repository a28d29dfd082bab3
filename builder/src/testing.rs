//! Helpers the builder's unit tests share.

use crate::workspace::Workspace;
use std::path::Path;
use std::process::{Command, Output};

/// This checkout: the committed definitions, locks and kernel config the tests hold the code to.
pub(crate) fn checkout() -> Workspace {
    Workspace::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../images"))
}

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
