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

/// Runtime name dockerd and containerd know eci-runc by.
pub const ECI_RUNTIME_NAME: &str = "eci";
/// Where the rootfs installs eci-runc.
pub const ECI_RUNC_PATH: &str = "/usr/bin/eci-runc";
/// dockerd's own socket: root-only (SPEC S4). The user-facing socket belongs to the guard.
pub const DOCKERD_SOCKET: &str = "/run/eci/dockerd.sock";
/// The engine socket users reach (also `/var/run/docker.sock`): eci-guard listens here (S4).
pub const ENGINE_SOCKET: &str = "/run/docker.sock";
/// eci-guard's socket for containers allowed to mount the engine socket: their bind mount of
/// it is re-pointed here, and requests arriving here are filtered by commandList (B4, B6).
/// The runtime must treat it as an engine socket too.
pub const CONTAINER_ENGINE_SOCKET: &str = "/run/eci/container-engine.sock";
/// eci-guard's image pins and last good settings (on the data disk).
pub const GUARD_STATE_DIR: &str = "/var/lib/eci/guard";
/// eci-guard's audit log, one JSON line per decision (S5); on the data disk beside eci-runc's,
/// so both survive a reboot, rotated by size by the guard.
pub const GUARD_AUDIT_LOG: &str = "/var/lib/eci/audit/guard.log";
/// eci-runc's audit log of its own refusals (S5), in the guard's record shape. Under
/// `/var/lib/eci`, which eci-init keeps on the data disk, so it survives a reboot; eci-runc
/// rotates it by size (eci-policy's `Policy::audit_log_max_bytes`).
pub const RUNC_AUDIT_LOG: &str = "/var/lib/eci/audit/eci-runc.log";
pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
pub const CONTAINERD_ROOT: &str = "/var/lib/containerd";
pub const CONTAINERD_STATE: &str = "/run/containerd";
/// Engine data, on the data disk (SPEC V2).
pub const DOCKER_DATA_ROOT: &str = "/var/lib/docker";
pub const DOCKER_EXEC_ROOT: &str = "/run/docker";
pub const DOCKERD_PIDFILE: &str = "/run/docker.pid";
/// Where host file shares are mounted in the VM: `C:\x` at `/mnt/host/c/x`, `/x` at
/// `/mnt/host/x` (SPEC B1).
pub const HOST_SHARE_ROOT: &str = "/mnt/host";
/// The settings store in the VM (on the data disk, so it survives reboots).
pub const SETTINGS_DIR: &str = "/var/lib/eci/settings";

pub const DAEMON_JSON_PATH: &str = "/etc/docker/daemon.json";
pub const CONTAINERD_CONFIG_PATH: &str = "/etc/containerd/config.toml";
pub const POLICY_PATH: &str = "/etc/eci/policy.json";
