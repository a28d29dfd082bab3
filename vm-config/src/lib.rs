//! eci's settings model: Docker Desktop's `admin-settings.json` (SPEC S1), its merge with the
//! user's settings and daemon options (S2, S3), the last-good settings store, and the VM files
//! rendered from `templates/` (dockerd, containerd, the guard/runtime policy).
//!
//! Everything here is pure or touches only the store directory, so the builder (at image build
//! time, and for `eci-build settings check`) and the VM's settings agent (at run time) share one
//! implementation of the rules.

mod admin;
mod commands;
mod error;
mod image;
mod merge;
mod policy;
mod render;
mod report;
mod spans;
#[cfg(unix)]
mod store;
mod user;

pub use admin::{
    AdminSettings, AllowedDirectory, CommandList, DockerSocketMount, EnhancedContainerIsolation,
    ImageList, Locked, ProxyMode, ProxySettings, LATEST_CONFIGURATION_FILE_VERSION,
};
pub use commands::{CommandListType, CommandRule, COMMAND_WILDCARDS, DOCKER_COMMANDS};
pub use error::{Location, Problem, SettingsError, Warning, WarningKind};
pub use image::{normalise, ImageRef, ImageRefError, ImageRule, DEFAULT_DOMAIN, DEFAULT_TAG};
pub use merge::{
    effective, forced_daemon_keys, is_within, resolve, vm_path, Effective, EffectiveSettings,
    FileSharing, ForcedKey, RefusedOverride, Setting, SharedDirectory, Source, DAEMON_OPTIONS_KEY,
};
pub use policy::{
    BindMountPolicy, PolicyFile, PolicyRuntime, SocketMountPolicy, POLICY_FILE_VERSION,
};
pub use render::{render_vm_files, VmFile};
pub use report::{check_report, check_report_text};
#[cfg(unix)]
pub use store::{Applied, SettingsStore, Stored, ADMIN_SETTINGS_FILE, EFFECTIVE_FILE};
pub use user::{parse_daemon_options, UserSettings};

/// The tera templates of the VM files (also compiled into this library).
pub const TEMPLATES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/templates");

// The VM's paths and the runtime name are eci-facts' (the runtime side uses them without this
// crate's template and TOML dependencies); re-exported because the templates' context and the
// builder name them from here.
pub use eci_facts::vm_paths::{
    CONTAINERD_CONFIG_PATH, CONTAINERD_ROOT, CONTAINERD_SOCKET, CONTAINERD_STATE,
    CONTAINER_ENGINE_SOCKET, DAEMON_JSON_PATH, DOCKERD_PIDFILE, DOCKERD_SOCKET, DOCKER_DATA_ROOT,
    DOCKER_EXEC_ROOT, ECI_RUNC_PATH, ECI_RUNTIME_NAME, ENGINE_SOCKET, GUARD_AUDIT_LOG,
    GUARD_STATE_DIR, HOST_SHARE_ROOT, POLICY_PATH, RUNC_AUDIT_LOG, SETTINGS_DIR,
};
