//! eci's isolation rules as pure functions over an OCI runtime spec.
//!
//! The runtime (eci-runc) calls [`apply`] on every spec it is given; the API guard reuses
//! [`check_bind_source`] for bind mounts it sees in Docker API requests. Nothing here touches the
//! system: facts about the machine (the capability bounding set, which namespace files are the
//! VM's own) come in as arguments, so every rule is unit-tested without root.

mod caps;
mod config;
mod mounts;
mod rules;
pub mod spec;
mod volume_data;
mod volumes;

pub use caps::{cap_bit, cap_name, caps_from_mask, CAPABILITIES};
pub use config::{
    Policy, DEFAULT_ENGINE_DATA_ROOTS, DEFAULT_ENGINE_SOCKETS, DEFAULT_INIT_BINARIES,
    DEFAULT_POOL_RANGES, DEFAULT_POOL_START, PRIVATE_ENGINE_PATHS, RANGE_SIZE,
};
pub use mounts::{
    check_bind_source, check_mounts, normalize_path, restricted_mount_message, BindContext,
    BindKind, ALLOWED_PROC_DESTINATIONS, VIRTUAL_FS_TYPES,
};
pub use rules::{
    apply, check_namespaces, check_sysctls, clamp_capabilities, ensure_private_namespaces,
    filter_devices, force_user_namespace, harden_paths, safe_device, Environment, IdRange,
    SafeDevice, KERNEL_GLOBAL_SYSCALLS, MASKED_PATHS, NAMESPACED_PROC_SYS, READONLY_PATHS,
    SAFE_DEVICES,
};
pub use volume_data::{
    classify, named_volume_data, parse_mountinfo, unescape_mountinfo, MountEntry, ShareFolder,
    VolumeDataKind, REMOTE_FS_TYPES,
};
pub use volumes::{check_volume, VolumeRefusal, VolumeSource};

/// Why a spec is refused. The message is what the docker user sees (containerd forwards the
/// runtime's last error log line), so it names the offending item and the way out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("can't mount {0} because it's configured as a restricted host mount")]
    RestrictedMount(String),
    #[error("can't mount {0} because it is the engine socket and the admin's policy does not allow containers to mount it (enhancedContainerIsolation.dockerSocketMount.imageList)")]
    EngineSocket(String),
    #[error("mount of type {kind:?} at {destination} is not allowed: containers may only mount {allowed} (use a bind mount of a shared host path or a volume)")]
    MountType {
        kind: String,
        destination: String,
        allowed: String,
    },
    #[error("mount destination {0} is under /proc and would cover what isolation hides; choose another destination")]
    ProcDestination(String),
    #[error("bind mount source {0:?} is not an absolute path")]
    RelativeSource(String),
    #[error("sharing the VM's {kind} namespace is refused by enhanced container isolation (--{kind}=host); run the container without --{kind}=host")]
    HostNamespace { kind: String },
    #[error("sysctl {0} is not namespaced and would change the whole VM; remove --sysctl {0}")]
    GlobalSysctl(String),
    #[error("process {which} id {id} is outside the container's 65536 ids (0-65535); use an id below 65536")]
    IdOutOfRange { which: &'static str, id: u32 },
    #[error("policy file {path}: {reason}")]
    PolicyFile { path: String, reason: String },
}

/// Something the runtime changed instead of failing; logged as a warning (SPEC P8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning(pub String);

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
