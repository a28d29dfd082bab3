//! eci's isolation rules as pure functions over an OCI runtime spec.
//!
//! The runtime (eci-runc) calls [`apply`] on every spec it is given; the API guard reuses
//! [`check_bind_source`] for bind mounts it sees in Docker API requests. Nothing here touches the
//! system: facts about the machine (the capability bounding set, which namespace files are the
//! VM's own) come in as arguments, so every rule is unit-tested without root.

mod build_step;
mod caps;
mod cgroups;
mod commands;
mod config;
mod image;
pub mod mount_vetting;
mod mounts;
mod policy_file;
mod rules;
mod sharing;
pub mod spec;
mod volume_data;
mod volumes;

pub use build_step::{
    build_step_data_root, build_step_source, check_secret_tmpfs, in_overlay2,
    snapshot_overlay_dirs, temp_mount_origin, BuildSource, TempMountOrigin,
};
pub use caps::{cap_bit, cap_name, caps_from_mask, CAPABILITIES};
pub use cgroups::{cgroup_folder, check_cgroup_folder, intermediate_folders, parent_folder};
pub use commands::{CommandListType, CommandRule, COMMAND_WILDCARDS, DOCKER_COMMANDS};
pub use config::{
    Policy, DEFAULT_CGROUP_PARENTS, DEFAULT_ENGINE_DATA_ROOTS, DEFAULT_ENGINE_SOCKETS,
    DEFAULT_INIT_BINARIES, DEFAULT_POOL_RANGES, DEFAULT_POOL_START, DEFAULT_RUNC_AUDIT_LOG,
    DEFAULT_RUNC_AUDIT_LOG_MAX_BYTES, PRIVATE_ENGINE_PATHS, RANGE_SIZE,
};
pub use image::{normalise, ImageRef, ImageRefError, ImageRule, DEFAULT_DOMAIN, DEFAULT_TAG};
pub use mounts::{
    check_bind_source, check_mounts, check_mounts_sharing, normalize_path,
    restricted_mount_message, BindContext, BindKind, ALLOWED_PROC_DESTINATIONS, VIRTUAL_FS_TYPES,
};
pub use policy_file::{
    BindMountPolicy, CommandList, IdPool, PolicyFile, PolicyFileError, PolicyRuntime, ProxyMode,
    ProxySettings, RuncSection, SocketMountPolicy, POLICY_FILE_VERSION,
};
pub use rules::{
    apply, bindable_safe_device, check_namespaces, check_sysctls, clamp_capabilities,
    ensure_private_namespaces, filter_devices, force_user_namespace, harden_paths, safe_device,
    Environment, IdRange, SafeDevice, KERNEL_GLOBAL_SYSCALLS, MASKED_PATHS, NAMESPACED_PROC_SYS,
    READONLY_PATHS, SAFE_DEVICES,
};
pub use sharing::{
    donor_files, plan_sharing, ContainerRef, Donor, Group, JoinedNamespace, NsId, NsOwner,
    SharingPlan, UserNamespacePlan,
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
    #[error("the {kind} namespace {path} belongs to no running eci container (its user namespace is neither the VM's nor a running container's); share the namespace of a running container instead (--{kind} container:NAME)")]
    UnknownNamespaceOwner { kind: String, path: String },
    #[error("the pid namespace {path} is owned by the VM's user namespace, where a container cannot mount its own /proc; share the pid namespace of a running container instead (--pid container:NAME)")]
    VmOwnedPidNamespace { path: String },
    #[error("the {first} and the {second} belong to two different containers' user namespaces and id ranges; a container can share namespaces with one container (and those sharing its namespaces) only")]
    TwoNamespaceGroups { first: String, second: String },
    #[error("linux.cgroupsPath {0:?} has a \"..\" component and could leave the container's cgroup subtree; name a cgroup below one of the allowed parents (policy.json eciRunc.cgroupParents)")]
    CgroupPathDots(String),
    #[error("linux.cgroupsPath {path:?} is outside the cgroup parents containers may use ({parents}); use --cgroup-parent with one of them, or add the parent to policy.json eciRunc.cgroupParents")]
    CgroupOutsideParents { path: String, parents: String },
    #[error("linux.cgroupsPath {path:?}: cgroup {folder} already holds processes ({pids}); eci-runc never adopts a cgroup in use, give the container a cgroup of its own")]
    CgroupInUse {
        path: String,
        folder: String,
        pids: String,
    },
}

impl PolicyError {
    /// The SPEC items behind the refusal, for the audit log (SPEC S5).
    pub fn rules(&self) -> &'static [&'static str] {
        match self {
            PolicyError::RestrictedMount(_) | PolicyError::RelativeSource(_) => &["B2"],
            PolicyError::EngineSocket(_) => &["B4", "S4"],
            PolicyError::MountType { .. } => &["B2", "P3"],
            PolicyError::ProcDestination(_) => &["P4", "F4"],
            PolicyError::HostNamespace { .. } => &["A6"],
            PolicyError::UnknownNamespaceOwner { .. }
            | PolicyError::VmOwnedPidNamespace { .. }
            | PolicyError::TwoNamespaceGroups { .. } => &["U2"],
            PolicyError::GlobalSysctl(_) => &["P4"],
            PolicyError::IdOutOfRange { .. } => &["U1", "U3"],
            PolicyError::PolicyFile { .. } => &["S1"],
            PolicyError::CgroupPathDots(_)
            | PolicyError::CgroupOutsideParents { .. }
            | PolicyError::CgroupInUse { .. } => &["P5"],
        }
    }
}

/// Something the runtime changed instead of failing; logged as a warning (SPEC P8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning(pub String);

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
