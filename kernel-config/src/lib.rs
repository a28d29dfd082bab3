//! Pinned kernel configuration for the eci VM: what the kernel must and must not have per
//! target (SPEC V6), a checker for kernel configs, and a run-time probe of the running kernel
//! (SPEC V5).
//!
//! - [`KernelConfig`] reads a kernel `.config` (text, gzip such as `/proc/config.gz`, a file, or
//!   a source tree).
//! - [`Pins`] holds a [`Target`]'s requirements, parsed from the fragments in `fragments/`
//!   (compiled in), plus the kernel exception profiles in `fragments/kernels/`.
//! - [`Pins::check`] produces a [`Report`] with a row per pinned option; [`Report::render_table`]
//!   and [`Report::to_json`] present it, [`Report::is_ok`] is the verdict.
//! - [`probe_running_kernel`] is what the VM init calls before starting isolation;
//!   [`ImagePins`] is the file an image carries to tell it which pins apply; [`DriftVerdict`]
//!   turns the probe's report into allowed or refused, excusing only boot modules whose
//!   hardware is absent ([`HardwareAbsent`]).
//!
//! See README.md for the fragment format, the targets and the exception profiles.

mod check;
mod drift;
mod error;
mod fragment;
mod image_pins;
mod kconfig;
pub mod modinfo;
mod probe;
mod profile;
mod target;
#[doc(hidden)]
pub mod testdata;
mod version;

pub use check::{CheckOptions, ProfileSelection, Report, Row, RuntimeRequirement, Status};
pub use drift::{
    DriftItem, DriftVerdict, ExcusedItem, HardwareAbsent, Isolation, ModuleFailure, ENODEV, ENOENT,
    ENXIO, HARDWARE_ABSENT,
};
pub use error::{CheckError, ConfigError, PinError, ProbeError};
pub use fragment::{normalize_module, Fragment, Requirement, Term, VersionPin, Want};
pub use image_pins::{ImagePins, IMAGE_PINS_PATH};
pub use kconfig::{KernelConfig, Value};
pub use probe::{
    probe_running_kernel, Phase, ProbeKind, ProbeOptions, ProbeReport, ProbeRow, ProbeStatus,
};
pub use profile::{Cmp, Condition, Exception, LockdownLevel, Profile, RuntimeCondition};
pub use target::{Pins, Target, BUILTIN_FRAGMENTS, BUILTIN_PROFILES};
pub use version::KernelVersion;

/// The fragments directory of this crate's source tree (for reviewing edits with
/// [`Pins::load`]; the same files are compiled in for [`Pins::builtin`]).
pub const FRAGMENTS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fragments");
