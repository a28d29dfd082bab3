//! Helpers the builder's unit tests share.

use crate::workspace::Workspace;
use std::path::Path;
use std::process::{Command, Output};

/// This checkout: the committed definitions, locks and kernel config the tests hold the code to.
pub(crate) fn checkout() -> Workspace {
    Workspace::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../images"))
}

/// `len` bytes that compress well but not trivially: text lines with a changing counter, so
/// chunks of the compressors' tests differ.
pub(crate) fn compressible_text(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut i = 0u64;
    while v.len() < len {
        v.extend_from_slice(
            format!("line {i} of some tar-like content {}\n", i * 7919 % 1000).as_bytes(),
        );
        i += 1;
    }
    v.truncate(len);
    v
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
