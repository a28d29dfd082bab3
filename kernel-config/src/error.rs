//! Typed errors. Every message names the file (and line/column where there is one) and says
//! what to do about it.

use std::path::PathBuf;

use thiserror::Error;

/// Reading a kernel config.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read kernel config {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}:{line}:{column}: {message} (line: `{text}`)")]
    Malformed {
        origin: String,
        line: usize,
        column: usize,
        text: String,
        message: String,
    },
    #[error("{origin}: starts with the gzip magic but does not decompress ({source}); pass the uncompressed config or a complete config.gz")]
    Gzip {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{origin}:{line}: not UTF-8 text; a kernel config is plain text (is this the right file?)"
    )]
    NotUtf8 { origin: String, line: usize },
    #[error("{dir} is a directory without a .config; run `make olddefconfig` there or pass the config file itself")]
    NoDotConfig { dir: PathBuf },
    #[error("{origin} is larger than {limit} bytes; that is not a kernel config")]
    TooLarge { origin: String, limit: u64 },
}

/// Loading the pins: fragments and kernel exception profiles.
#[derive(Debug, Error)]
pub enum PinError {
    #[error("{file}:{line}:{column}: {message}; fix: {fix}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
        fix: String,
    },
    #[error("{second}: CONFIG_{option} is already pinned at {first} for the same target; keep one requirement per option (use `||` for alternatives)")]
    Duplicate {
        option: String,
        first: String,
        second: String,
    },
    #[error("{second}: exception profile `{name}` is already defined at {first}; profile names are unique")]
    DuplicateProfile {
        name: String,
        first: String,
        second: String,
    },
    #[error("cannot read pin file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("there is no fragment `{name}`; the fragments are {known}")]
    UnknownFragment { name: String, known: String },
    #[error("{dir} has no fragment {name}; expected the fragments container, hardening, hyperv, wsl2 and qemu (*.config)")]
    MissingFragment { dir: PathBuf, name: String },
    #[error("{origin}:{line}:{column}: {message}; the file is written by eci-build at image build time, rebuild the image")]
    ImagePins {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
}

/// Checking a config against the pins.
#[derive(Debug, Error)]
pub enum CheckError {
    #[error(
        "no kernel exception profile `{name}` for target {target}; known for this target: {known}"
    )]
    UnknownProfile {
        name: String,
        target: String,
        known: String,
    },
    #[error("kernel exception profile `{name}` covers releases {patterns}, but the kernel release is {release}; pick the profile for this kernel or none")]
    ProfileMismatch {
        name: String,
        patterns: String,
        release: String,
    },
    #[error("kernel exception profile `{name}` was requested but the kernel release is unknown; pass the release (e.g. from the .deb or /boot/config-RELEASE) so the profile can be matched")]
    ReleaseUnknown { name: String },
}

/// Probing the running kernel.
#[derive(Debug, Error)]
pub enum ProbeError {
    #[error("cannot read {path}: {source}; the probe needs /proc mounted (pass the root of a mounted tree)")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Check(#[from] CheckError),
}
