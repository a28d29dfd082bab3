//! eci's settings model: Docker Desktop's `admin-settings.json` (SPEC S1), its merge with the
//! user's settings and daemon options (S2, S3), and the VM files rendered from it (dockerd's
//! and containerd's configuration from `templates/`, the guard/runtime policy.json with
//! serde_json from eci-policy's `PolicyFile`).
//!
//! Everything here is pure, so the builder (at image build time, and for `eci-build settings
//! check`) and the guard (reading an `admin-settings.json` given as `--settings`) share one
//! implementation of the rules.

mod admin;
mod error;
mod merge;
mod policy;
mod render;
mod report;
mod spans;
mod user;

pub use admin::{
    AdminSettings, AllowedDirectory, CommandList, DockerSocketMount, EnhancedContainerIsolation,
    ImageList, Locked, ProxyMode, ProxySettings, LATEST_CONFIGURATION_FILE_VERSION,
};
pub use error::{Location, Problem, SettingsError, Warning, WarningKind};
pub use merge::{
    effective, forced_daemon_keys, is_within, resolve, vm_path, Effective, EffectiveSettings,
    FileSharing, ForcedKey, RefusedOverride, Setting, SharedDirectory, Source, DAEMON_OPTIONS_KEY,
};
// policy.json's one type and the rule types inside it are eci-policy's (the guard and the
// runtime read the file without this crate); re-exported for the settings model's users.
pub use eci_policy::{
    normalise, BindMountPolicy, CommandListType, CommandRule, ImageRef, ImageRefError, ImageRule,
    PolicyFile, PolicyRuntime, SocketMountPolicy, COMMAND_WILDCARDS, DEFAULT_DOMAIN, DEFAULT_TAG,
    DOCKER_COMMANDS, POLICY_FILE_VERSION,
};
pub use policy::policy_file;
pub use render::{render_vm_files, VmFile};
pub use report::{check_report, check_report_text};
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
    GUARD_STATE_DIR, HOST_SHARE_ROOT, POLICY_PATH, RUNC_AUDIT_LOG,
};
