//! The VM side of eci (runtime, guard, init, probe) is built from this workspace and installed
//! into the image like any package file.
//!
//! They are compiled by cargo with the `image` profile (release, fat LTO, one codegen unit) into
//! their own target directory with the checkout's path remapped, by the pinned toolchain
//! (rust-toolchain.toml), so the bytes depend on the source, Cargo.lock and the toolchain, not
//! on where the checkout or the target folder lives; the VM's glibc is Debian 12's, the same the
//! build host links against.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

use crate::spec::WorkspaceBinary;

#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error("binaries: the image needs {names} from the eci workspace, but {} is not an eci checkout; build from a checkout", root.display())]
    NoWorkspace { names: String, root: PathBuf },
    #[error("binaries: `cargo build --profile image --bin {names}` failed ({message}); the compiler output above says why")]
    Cargo { names: String, message: String },
    #[error("binaries: the VM binaries must be built with the pinned Rust toolchain {pinned} ({pin_file}), but the compiler cargo would use reports {found}; build without overriding the toolchain (no `cargo +VERSION`, no RUSTUP_TOOLCHAIN), or pass --allow-other-toolchain (manifest.json and the SBOM then say so)")]
    Toolchain {
        pinned: String,
        found: String,
        pin_file: String,
    },
    #[error("binaries: {}: {reason}", path.display())]
    Pin { path: PathBuf, reason: String },
    #[error("binaries: `rustc -vV` failed ({message}); is the Rust toolchain installed?")]
    Rustc { message: String },
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

/// What the VM binaries were built from besides the source: the compiler and the crates. A
/// verifier needs the same to reproduce the image (SPEC V1); manifest.json and the SBOM
/// record it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CargoInputs {
    /// `rustc -vV`'s first line, e.g. `rustc 1.95.0 (59807616e 2026-04-14)`.
    pub rustc: String,
    /// `release:` of `rustc -vV`.
    pub release: String,
    pub commit_hash: String,
    pub llvm: String,
    /// `channel` of rust-toolchain.toml.
    pub pinned: String,
    /// False only when the build was told to accept another toolchain.
    pub pinned_matches: bool,
    /// sha256 of the workspace's Cargo.lock: every crate version and checksum.
    pub cargo_lock_sha256: String,
}

/// The cargo profile the VM binaries are built with (Cargo.toml says why).
pub const PROFILE: &str = "image";

/// The pin file, relative to the workspace root.
pub const TOOLCHAIN_FILE: &str = "rust-toolchain.toml";

/// `channel` of rust-toolchain.toml (a minimal reader: the file is ours and holds one table).
pub fn pinned_channel(root: &Path) -> Result<String, BinaryError> {
    let path = root.join(TOOLCHAIN_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| BinaryError::Io {
        path: path.clone(),
        source,
    })?;
    text.lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("channel"))
        .filter_map(|rest| rest.trim_start().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_string())
        .find(|v| !v.is_empty())
        .ok_or_else(|| BinaryError::Pin {
            path,
            reason: "no `channel = \"VERSION\"` line in [toolchain]".into(),
        })
}

/// Reads `rustc -vV` output into (first line, release, commit hash, LLVM version).
fn parse_rustc_version(text: &str) -> (String, String, String, String) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    (
        text.lines().next().unwrap_or_default().trim().to_string(),
        field("release:"),
        field("commit-hash:"),
        field("LLVM version:"),
    )
}

/// The compiler cargo uses for the VM binaries, checked against the pin. `rustc` runs in the
/// checkout, so rustup resolves it the way it resolves the cargo build (rust-toolchain.toml,
/// unless RUSTUP_TOOLCHAIN overrides it).
pub fn cargo_inputs(root: &Path, allow_other: bool) -> Result<CargoInputs, BinaryError> {
    let pinned = pinned_channel(root)?;
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = duct::cmd(rustc, ["-vV"])
        .dir(root)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .map_err(|e| BinaryError::Rustc {
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(BinaryError::Rustc {
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let lock = root.join("Cargo.lock");
    let lock_bytes =
        std::fs::read(&lock).map_err(|source| BinaryError::Io { path: lock, source })?;
    judge_toolchain(
        pinned,
        &String::from_utf8_lossy(&out.stdout),
        hex::encode(Sha256::digest(&lock_bytes)),
        allow_other,
    )
}

/// The decision of [`cargo_inputs`], apart from running anything.
fn judge_toolchain(
    pinned: String,
    rustc_vv: &str,
    cargo_lock_sha256: String,
    allow_other: bool,
) -> Result<CargoInputs, BinaryError> {
    let (line, release, commit_hash, llvm) = parse_rustc_version(rustc_vv);
    let pinned_matches = release == pinned;
    if !pinned_matches && !allow_other {
        return Err(BinaryError::Toolchain {
            pinned,
            found: line,
            pin_file: TOOLCHAIN_FILE.into(),
        });
    }
    Ok(CargoInputs {
        rustc: line,
        release,
        commit_hash,
        llvm,
        pinned,
        pinned_matches,
        cargo_lock_sha256,
    })
}

/// The checkout this `eci-build` was compiled from.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("builder/ lives in the workspace")
        .to_path_buf()
}

/// Builds `wanted` from the checkout at `root` with the pinned toolchain (another one only with
/// `allow_other_toolchain`), and says what they were built from.
pub fn build(
    wanted: &[WorkspaceBinary],
    root: &Path,
    allow_other_toolchain: bool,
) -> Result<(Vec<Built>, Option<CargoInputs>), BinaryError> {
    if wanted.is_empty() {
        return Ok((Vec::new(), None));
    }
    let names: Vec<&str> = wanted.iter().map(|b| b.bin.as_str()).collect();
    if !root.join("Cargo.toml").is_file() || !root.join("builder").is_dir() {
        return Err(BinaryError::NoWorkspace {
            names: names.join(", "),
            root: root.to_path_buf(),
        });
    }
    let inputs = cargo_inputs(root, allow_other_toolchain)?;
    let target_dir = root.join("target").join("image");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // The compiler that was just checked, whichever cargo runs it.
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    // The image profile (Cargo.toml) is what makes the bytes independent of the checkout's
    // folder, together with the path remapping below.
    let mut args: Vec<String> = vec![
        "build".into(),
        "--profile".into(),
        PROFILE.into(),
        "--locked".into(),
    ];
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
        .env("RUSTC", rustc)
        .env("RUSTFLAGS", remap)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        // Cargo's own progress goes to the user's terminal; errors explain themselves there.
        .stdout_to_stderr()
        .run()
        .map_err(|e| BinaryError::Cargo {
            names: names.join(" --bin "),
            message: e.to_string(),
        })?;
    let built = wanted
        .iter()
        .map(|b| {
            let file = target_dir.join(PROFILE).join(&b.bin);
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
        .collect::<Result<Vec<_>, BinaryError>>()?;
    Ok((built, Some(inputs)))
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
    fn the_pin_and_rustc_versions_are_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(TOOLCHAIN_FILE),
            "# why\n[toolchain]\nchannel = \"1.95.0\"\n",
        )
        .unwrap();
        assert_eq!(pinned_channel(dir.path()).unwrap(), "1.95.0");
        std::fs::write(dir.path().join(TOOLCHAIN_FILE), "[toolchain]\n").unwrap();
        let e = pinned_channel(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("rust-toolchain.toml") && e.contains("channel"),
            "{e}"
        );
        let (line, release, hash, llvm) = parse_rustc_version(
            "rustc 1.95.0 (59807616e 2026-04-14)\nbinary: rustc\ncommit-hash: 5980\nrelease: 1.95.0\nLLVM version: 22.1.2\n",
        );
        assert_eq!(
            (
                line.as_str(),
                release.as_str(),
                hash.as_str(),
                llvm.as_str()
            ),
            (
                "rustc 1.95.0 (59807616e 2026-04-14)",
                "1.95.0",
                "5980",
                "22.1.2"
            )
        );
    }

    /// The checkout's own pin resolves to the toolchain installed here, offline, and a
    /// different pin is refused unless allowed (then recorded as not matching).
    #[test]
    fn the_toolchain_is_checked_against_the_pin() {
        let root = workspace_root();
        let inputs = cargo_inputs(&root, false).expect("the pinned toolchain is installed");
        assert!(inputs.pinned_matches);
        assert_eq!(inputs.release, pinned_channel(&root).unwrap());
        assert_eq!(inputs.cargo_lock_sha256.len(), 64);

        // Another compiler than the pin (say `cargo +nightly`): refused unless allowed.
        let nightly = "rustc 1.97.0-nightly (abc 2026-06-01)\nrelease: 1.97.0-nightly\n";
        let e = judge_toolchain("1.95.0".into(), nightly, "00".into(), false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("1.95.0")
                && e.contains("1.97.0-nightly")
                && e.contains("--allow-other-toolchain"),
            "{e}"
        );
        let allowed = judge_toolchain("1.95.0".into(), nightly, "00".into(), true).unwrap();
        assert!(!allowed.pinned_matches);
        assert_eq!(allowed.release, "1.97.0-nightly");
    }

    #[test]
    fn nothing_wanted_builds_nothing_and_a_non_checkout_is_refused() {
        assert!(build(&[], Path::new("/nonexistent"), false)
            .unwrap()
            .0
            .is_empty());
        let err = build(
            &[WorkspaceBinary {
                bin: "eci-probe".into(),
                path: "/usr/bin/eci-probe".into(),
            }],
            Path::new("/"),
            false,
        )
        .unwrap_err();
        assert!(matches!(err, BinaryError::NoWorkspace { .. }), "{err}");
        assert!(err.to_string().contains("eci-probe"));
    }
}
