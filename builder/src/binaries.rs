//! The VM side of eci (runtime, guard, init, probe) is built from this workspace and installed
//! into the image like any package file.
//!
//! They are compiled by cargo in release mode into their own target directory with the
//! checkout's path remapped, so the bytes depend on the source and toolchain, not on where the
//! checkout lives; the VM's glibc is Debian 12's, the same the build host links against.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

use crate::spec::WorkspaceBinary;

#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error("binaries: the image needs {names} from the eci workspace, but {} is not an eci checkout; build from a checkout", root.display())]
    NoWorkspace { names: String, root: PathBuf },
    #[error("binaries: `cargo build --release --bin {names}` failed ({message}); the compiler output above says why")]
    Cargo { names: String, message: String },
    #[error("binaries: cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A built binary ready to go into the rootfs.
#[derive(Debug, Clone)]
pub struct Built {
    pub path: String,
    pub bin: String,
    pub bytes: Vec<u8>,
    pub sha256: String,
}

/// The checkout this `eci-build` was compiled from.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("builder/ lives in the workspace")
        .to_path_buf()
}

pub fn build(wanted: &[WorkspaceBinary], root: &Path) -> Result<Vec<Built>, BinaryError> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<&str> = wanted.iter().map(|b| b.bin.as_str()).collect();
    if !root.join("Cargo.toml").is_file() || !root.join("builder").is_dir() {
        return Err(BinaryError::NoWorkspace {
            names: names.join(", "),
            root: root.to_path_buf(),
        });
    }
    let target_dir = root.join("target").join("image");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut args: Vec<String> = vec!["build".into(), "--release".into(), "--locked".into()];
    for n in &names {
        args.push("--bin".into());
        args.push((*n).to_string());
    }
    let remap = format!(
        "--remap-path-prefix={}=/eci --remap-path-prefix={}=/cargo",
        root.display(),
        cargo_home().display()
    );
    duct::cmd(cargo, &args)
        .dir(root)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("RUSTFLAGS", remap)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        // Cargo's own progress goes to the user's terminal; errors explain themselves there.
        .stdout_to_stderr()
        .run()
        .map_err(|e| BinaryError::Cargo {
            names: names.join(" --bin "),
            message: e.to_string(),
        })?;
    wanted
        .iter()
        .map(|b| {
            let file = target_dir.join("release").join(&b.bin);
            let bytes = std::fs::read(&file).map_err(|source| BinaryError::Io {
                path: file.clone(),
                source,
            })?;
            Ok(Built {
                path: b.path.clone(),
                bin: b.bin.clone(),
                sha256: hex::encode(Sha256::digest(&bytes)),
                bytes,
            })
        })
        .collect()
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_wanted_builds_nothing_and_a_non_checkout_is_refused() {
        assert!(build(&[], Path::new("/nonexistent")).unwrap().is_empty());
        let err = build(
            &[WorkspaceBinary {
                bin: "eci-probe".into(),
                path: "/usr/bin/eci-probe".into(),
            }],
            Path::new("/"),
        )
        .unwrap_err();
        assert!(matches!(err, BinaryError::NoWorkspace { .. }), "{err}");
        assert!(err.to_string().contains("eci-probe"));
    }
}
