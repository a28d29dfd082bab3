//! Helpers shared by the end-to-end suites.
//!
//! End-to-end tests need root, QEMU, network access to the Debian mirror or a Docker engine.
//! On a laptop they may skip, printing why; in CI (`CI` set) a missing prerequisite fails the
//! test instead, so CI can never pass by skipping.

use std::path::PathBuf;

pub mod containerd_pod;
pub mod dind;
pub mod escapes;
pub mod guard_engine;
pub mod host_vm;
pub mod runc_engine;
pub mod vetting;
pub mod views;

/// The checkout's root folder.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace root")
        .to_path_buf()
}

/// The checkout's images/, kernel-config/ and out/ folders, as eci-build finds them.
pub fn workspace() -> eci_build::workspace::Workspace {
    eci_build::workspace::Workspace::new(workspace_root().join("images"))
}

/// `eci-build image` for `target` into `out`. `None` when the test should skip: only an
/// unreachable Debian mirror (a laptop offline), with the reason printed; in CI that fails, as
/// does any other error.
pub fn build_image_or_skip(
    target: &str,
    out: &std::path::Path,
) -> Option<eci_build::pipeline::ImageReport> {
    match eci_build::pipeline::build_image(&image_request(target, out)) {
        Ok(b) => Some(b),
        Err(e) => {
            let msg = format!("{e:#}");
            let offline = msg.contains("cannot download") || msg.contains("not in the cache");
            if offline && !prerequisite(false, &format!("Debian mirror unreachable: {msg}")) {
                return None;
            }
            panic!("image build failed: {msg}");
        }
    }
}

/// The `container-rootfs` tarball of `eci-build image --target TARGET` into `out` (the test
/// images: dind, systemd, util-linux); `None` as for [`build_image_or_skip`].
pub fn build_rootfs_tarball(target: &str, out: &std::path::Path) -> Option<PathBuf> {
    let report = build_image_or_skip(target, out)?;
    let record = report
        .manifest
        .artifacts
        .iter()
        .find(|a| a.kind == "container-rootfs")
        .unwrap_or_else(|| panic!("images/{target}.yaml names no container-rootfs output"));
    Some(out.join(&record.path))
}

pub use eci_test_support::{in_ci, prerequisite};

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// `eci-build image` for the checkout's definition of `target`, written to `out`, with the
/// user's package cache and the machine's apt sources (what `./dev image` does).
pub fn image_request(target: &str, out: &std::path::Path) -> eci_build::pipeline::ImageRequest {
    use eci_build::apt::fetch::{Cache, FetchOptions};
    eci_build::pipeline::ImageRequest {
        workspace: workspace(),
        target: target.into(),
        out_dir: out.to_path_buf(),
        cache: Cache::new(Cache::default_location()),
        fetch: FetchOptions {
            progress: false,
            ..FetchOptions::default()
        },
        sources_root: "/etc/apt".into(),
        mirrors: vec![],
        allow_other_toolchain: false,
    }
}
