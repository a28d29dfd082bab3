//! The runtime's rule input ([`Policy`]) and its defaults, derived from `/etc/eci/policy.json`
//! ([`PolicyFile`]) in one function, [`Policy::from_file`]. Keys vm-config does not write (the
//! `eciRunc` section) fall back to the defaults documented in runtime/README.md.

use std::path::Path;

use crate::policy_file::{PolicyFile, PolicyFileError};
use crate::PolicyError;

/// The first host id handed out to containers (SPEC U1: ids below it belong to the VM).
pub const DEFAULT_POOL_START: u32 = 100_000;
/// How many 65536-id ranges the pool holds: 4096 ranges end below 2^31, so no container id can
/// look negative to software that stores ids in a signed int.
pub const DEFAULT_POOL_RANGES: u32 = 4096;
/// Every container's range is this long (SPEC U1).
pub const RANGE_SIZE: u32 = 65_536;

/// Where dockerd keeps its data in the VM; `containers/<id>/` and `volumes/` below it hold the
/// engine-internal bind sources (SPEC B3).
pub const DEFAULT_ENGINE_DATA_ROOTS: &[&str] = &[eci_facts::vm_paths::DOCKER_DATA_ROOT];
/// Where Debian and Docker's packages install `docker-init` (`docker run --init`, SPEC B3).
pub const DEFAULT_INIT_BINARIES: &[&str] = &[
    "/usr/bin/docker-init",
    "/usr/sbin/docker-init",
    "/usr/libexec/docker/docker-init",
    "/usr/local/bin/docker-init",
];
/// The guard's engine sockets: a container may bind-mount one only when the policy lets some
/// image mount the engine socket; the guard decides which images (SPEC B4) and re-points the
/// mount to its container socket, so behind the guard only that one reaches the runtime.
pub const DEFAULT_ENGINE_SOCKETS: &[&str] = &[
    "/var/run/docker.sock",
    eci_facts::vm_paths::ENGINE_SOCKET,
    eci_facts::vm_paths::CONTAINER_ENGINE_SOCKET,
];
/// Root-only engine endpoints: dockerd's folder (its socket, its config), containerd's state
/// (its socket and the shims'). A container reaching one would bypass the guard (SPEC S4), so
/// no setting makes them, anything below them or a folder holding them a bind source; they
/// are refused with the B2 message. The guard's container socket
/// (`eci_facts::vm_paths::CONTAINER_ENGINE_SOCKET`), which lives in dockerd's folder so that only
/// the mounts the guard makes reach it, is the one exception, and only while it is listed in
/// the engine sockets. `dockerdSocket` from the policy file is added to these.
pub const PRIVATE_ENGINE_PATHS: &[&str] = &[
    eci_facts::vm_paths::RUN_DIR,
    eci_facts::vm_paths::DOCKERD_SOCKET,
    eci_facts::vm_paths::CONTAINERD_STATE,
    eci_facts::vm_paths::CONTAINERD_SOCKET,
];

/// Cgroup parents a spec's `linux.cgroupsPath` may name (SPEC P5): a container's cgroup must be
/// a new folder strictly below one of them, so a spec can neither reach the VM's own cgroups
/// (`/`, `/system.slice/containerd.service`) nor, with `..`, leave the hierarchy. dockerd uses
/// `/docker/<id>` (cgroupfs driver, also `/docker/buildkit/...` for build containers) or
/// `system.slice:docker:<id>` (systemd driver); containerd's CRI plugin uses
/// `/kubepods/<qos>/pod<uid>/<id>` or `kubepods-<qos>-pod<uid>.slice:cri-containerd:<id>`,
/// which the runtime expands to `/kubepods.slice/...`. `/eci` is where eci-runc puts a
/// container whose spec names no cgroup. systemd slices are written as slice names and compared
/// as `/NAME.slice` folders. `eciRunc.cgroupParents` replaces the list.
pub const DEFAULT_CGROUP_PARENTS: &[&str] = &[
    "/eci",
    "/docker",
    "system.slice",
    "/kubepods",
    "kubepods.slice",
];

/// eci-runc's audit log (SPEC S5): one JSON line per refusal, in the guard's record shape. On
/// the data disk (`/var/lib/eci` is one of eci-init's persistent folders), so the record of a
/// refused container survives a reboot; /var/log is tmpfs in the VM.
pub const DEFAULT_RUNC_AUDIT_LOG: &str = eci_facts::vm_paths::RUNC_AUDIT_LOG;
/// The audit log is renamed to `<file>.1` (replacing the previous one) when it grows past
/// this, so at most twice this much of the data disk holds it.
pub const DEFAULT_RUNC_AUDIT_LOG_MAX_BYTES: u64 = 8 << 20;

/// The isolation policy the runtime applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// VM paths bind mounts may come from (SPEC B1). Default: the host-share root.
    pub allowed_bind_prefixes: Vec<String>,
    /// dockerd data roots whose `containers/<id>/` and `volumes/` are engine-internal.
    pub engine_data_roots: Vec<String>,
    /// `docker-init` binaries that may be bound to `/sbin/docker-init`.
    pub init_binaries: Vec<String>,
    /// Engine sockets (refused as bind sources unless `allow_engine_socket`).
    pub engine_sockets: Vec<String>,
    /// Paths no bind mount may reach, nor a folder holding them, whatever else allows it (see
    /// [`PRIVATE_ENGINE_PATHS`]); the guard's container socket below them is the exception.
    pub private_engine_paths: Vec<String>,
    /// True when the admin lets some images mount the engine socket; the API guard decides
    /// which (SPEC B4, B5), the runtime only stops refusing the path.
    pub allow_engine_socket: bool,
    pub pool_start: u32,
    pub pool_ranges: u32,
    /// Where containers' cgroups may be made (see [`DEFAULT_CGROUP_PARENTS`]).
    pub cgroup_parents: Vec<String>,
    /// eci-runc's audit log file and its rotation size (see [`DEFAULT_RUNC_AUDIT_LOG`]).
    pub audit_log: String,
    pub audit_log_max_bytes: u64,
    /// Never read from policy.json: the runtime sets it to the data root when it has proven
    /// that the container is a BuildKit RUN step of that engine (`build_step_data_root` on the
    /// bundle path). Only then are BuildKit's per-step files and dockerd's layer folders bind
    /// sources ([`crate::BindKind::BuildStep`], SPEC D3); the guard leaves it `None`.
    pub build_step: Option<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allowed_bind_prefixes: vec![eci_facts::vm_paths::HOST_SHARE_ROOT.to_string()],
            engine_data_roots: strings(DEFAULT_ENGINE_DATA_ROOTS),
            init_binaries: strings(DEFAULT_INIT_BINARIES),
            engine_sockets: strings(DEFAULT_ENGINE_SOCKETS),
            private_engine_paths: strings(PRIVATE_ENGINE_PATHS),
            allow_engine_socket: false,
            pool_start: DEFAULT_POOL_START,
            pool_ranges: DEFAULT_POOL_RANGES,
            cgroup_parents: strings(DEFAULT_CGROUP_PARENTS),
            audit_log: DEFAULT_RUNC_AUDIT_LOG.to_string(),
            audit_log_max_bytes: DEFAULT_RUNC_AUDIT_LOG_MAX_BYTES,
            build_step: None,
        }
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

impl Policy {
    /// The rules a policy file asks for, checked: a relative path, an id pool that does not
    /// fit or a cgroup parent that could reach the VM's own cgroups is an error naming the key
    /// and `origin`, and the caller keeps the policy it had.
    pub fn from_file(file: &PolicyFile, origin: &str) -> Result<Policy, PolicyError> {
        let bad = |reason: String| PolicyError::PolicyFile {
            path: origin.to_string(),
            reason,
        };
        let mut p = Policy::default();
        let prefixes = &file.bind_mounts.allowed_vm_prefixes;
        for pre in prefixes {
            if !pre.starts_with('/') {
                return Err(bad(format!(
                    "bindMounts.allowedVmPrefixes: {pre:?} is not an absolute VM path; write it as /mnt/host/..."
                )));
            }
        }
        p.allowed_bind_prefixes = prefixes.clone();
        let sock = &file.dockerd_socket;
        if !sock.starts_with('/') {
            return Err(bad(format!(
                "dockerdSocket: {sock:?} is not an absolute VM path; write it as {}",
                eci_facts::vm_paths::DOCKERD_SOCKET
            )));
        }
        if !p.private_engine_paths.contains(sock) {
            p.private_engine_paths.push(sock.clone());
        }
        p.allow_engine_socket = !file.docker_socket_mount.images.is_empty();
        if let Some(r) = &file.eci_runc {
            if let Some(pool) = r.id_pool {
                let end = u64::from(pool.start) + u64::from(pool.ranges) * u64::from(RANGE_SIZE);
                if pool.ranges == 0 || end > u64::from(u32::MAX) {
                    return Err(bad(format!(
                        "eciRunc.idPool: start {} with {} ranges of {RANGE_SIZE} ids does not fit in 32-bit ids; lower start or ranges",
                        pool.start, pool.ranges
                    )));
                }
                if pool.start < RANGE_SIZE {
                    return Err(bad(format!(
                        "eciRunc.idPool.start: {} would hand VM system ids to containers; use at least {RANGE_SIZE}",
                        pool.start
                    )));
                }
                p.pool_start = pool.start;
                p.pool_ranges = pool.ranges;
            }
            if let Some(v) = &r.engine_data_roots {
                p.engine_data_roots = v.clone();
            }
            if let Some(v) = &r.init_binaries {
                p.init_binaries = v.clone();
            }
            if let Some(v) = &r.engine_sockets {
                p.engine_sockets = v.clone();
            }
            if let Some(v) = &r.cgroup_parents {
                for parent in v {
                    crate::cgroups::parent_folder(parent).map_err(|reason| {
                        bad(format!("eciRunc.cgroupParents: {parent:?} {reason}"))
                    })?;
                }
                p.cgroup_parents = v.clone();
            }
            if let Some(v) = &r.audit_log {
                if !v.starts_with('/') {
                    return Err(bad(format!(
                        "eciRunc.auditLog: {v:?} is not an absolute VM path; write it as {DEFAULT_RUNC_AUDIT_LOG}"
                    )));
                }
                p.audit_log = v.clone();
            }
            if let Some(v) = r.audit_log_max_bytes {
                if v < 4096 {
                    return Err(bad(format!(
                        "eciRunc.auditLogMaxBytes: {v} would rotate on nearly every line; use at least 4096 (default {DEFAULT_RUNC_AUDIT_LOG_MAX_BYTES})"
                    )));
                }
                p.audit_log_max_bytes = v;
            }
        }
        Ok(p)
    }

    /// Parse a policy file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let file = PolicyFile::parse(text, origin).map_err(file_error)?;
        Policy::from_file(&file, origin)
    }

    /// Load `path`; a missing file gives the defaults (a VM without settings still isolates).
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        match PolicyFile::load(path) {
            Ok(file) => Policy::from_file(&file, &path.display().to_string()),
            Err(PolicyFileError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(Policy::default())
            }
            Err(e) => Err(file_error(e)),
        }
    }
}

fn file_error(e: PolicyFileError) -> PolicyError {
    PolicyError::PolicyFile {
        path: e.origin().to_string(),
        reason: e.detail(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_vm_paths() {
        let p = Policy::default();
        assert_eq!(p.allowed_bind_prefixes, vec!["/mnt/host".to_string()]);
        // The guard's sockets are engine sockets; dockerd's and containerd's are private.
        for s in [
            eci_facts::vm_paths::ENGINE_SOCKET,
            eci_facts::vm_paths::CONTAINER_ENGINE_SOCKET,
        ] {
            assert!(p.engine_sockets.iter().any(|e| e == s), "{s}");
        }
        for s in [
            eci_facts::vm_paths::DOCKERD_SOCKET,
            eci_facts::vm_paths::CONTAINERD_SOCKET,
        ] {
            assert!(!p.engine_sockets.iter().any(|e| e == s), "{s}");
            assert!(p.private_engine_paths.iter().any(|e| e == s), "{s}");
        }
        // dockerd's folder is the private one, and the guard's container socket sits in it
        // (eci-init makes it root-only, so only the mounts the guard makes reach that socket).
        let dir = std::path::Path::new(eci_facts::vm_paths::DOCKERD_SOCKET)
            .parent()
            .unwrap();
        assert_eq!(dir, std::path::Path::new(PRIVATE_ENGINE_PATHS[0]));
        assert_eq!(
            std::path::Path::new(eci_facts::vm_paths::CONTAINER_ENGINE_SOCKET).parent(),
            Some(dir)
        );
        assert!(!p.allow_engine_socket);
        assert_eq!(p.pool_start, 100_000);
    }

    #[test]
    fn rendered_policy_shape_is_read() {
        let text = r#"{"version":1,"isolation":true,"dockerdSocket":"/run/x.sock",
          "runtime":{"name":"eci","path":"/usr/bin/eci-runc"},
          "bindMounts":{"allowedVmPrefixes":["/mnt/host/c/src"],"sharedHostPaths":["C:\\src"]},
          "dockerSocketMount":{"images":["docker.io/library/docker:cli"],"allowDerivedImages":false,
             "commandList":{"type":"deny","commands":[]}},
          "containersProxy":{}}"#;
        let p = Policy::parse(text, "policy.json").unwrap();
        assert_eq!(p.allowed_bind_prefixes, vec!["/mnt/host/c/src".to_string()]);
        assert!(p.private_engine_paths.contains(&"/run/x.sock".to_string()));
        assert!(!p.engine_sockets.contains(&"/run/x.sock".to_string()));
        assert!(p.allow_engine_socket);
        let e = Policy::parse(r#"{"dockerdSocket": "run/x.sock"}"#, "p")
            .unwrap_err()
            .to_string();
        assert!(e.contains("dockerdSocket"), "{e}");
    }

    #[test]
    fn empty_image_list_keeps_socket_refused() {
        let p = Policy::parse(r#"{"dockerSocketMount":{"images":[]}}"#, "p").unwrap();
        assert!(!p.allow_engine_socket);
        // The default file is the default policy.
        assert_eq!(
            Policy::from_file(&PolicyFile::default(), "p").unwrap(),
            Policy::default()
        );
    }

    #[test]
    fn runc_section_overrides_pool_and_roots() {
        let p = Policy::parse(
            r#"{"eciRunc":{"idPool":{"start":200000,"ranges":10},"engineDataRoots":["/d"]}}"#,
            "p",
        )
        .unwrap();
        assert_eq!((p.pool_start, p.pool_ranges), (200_000, 10));
        assert_eq!(p.engine_data_roots, vec!["/d".to_string()]);
    }

    #[test]
    fn runc_section_sets_cgroup_parents_and_the_audit_log() {
        let p = Policy::default();
        assert_eq!(p.cgroup_parents, strings(DEFAULT_CGROUP_PARENTS));
        for parent in [
            "/docker",
            "system.slice",
            "/kubepods",
            "kubepods.slice",
            "/eci",
        ] {
            assert!(p.cgroup_parents.iter().any(|c| c == parent), "{parent}");
        }
        // On the data disk (eci-init's persistent /var/lib/eci), not the /var/log tmpfs.
        assert!(p.audit_log.starts_with("/var/lib/eci/"), "{}", p.audit_log);
        assert_eq!(p.audit_log_max_bytes, DEFAULT_RUNC_AUDIT_LOG_MAX_BYTES);
        let p = Policy::parse(
            r#"{"eciRunc":{"cgroupParents":["/ci","ci.slice"],"auditLog":"/d/a.log","auditLogMaxBytes":65536}}"#,
            "p",
        )
        .unwrap();
        assert_eq!(p.cgroup_parents, vec!["/ci".to_string(), "ci.slice".into()]);
        assert_eq!(
            (p.audit_log.as_str(), p.audit_log_max_bytes),
            ("/d/a.log", 65536)
        );
        for (text, key) in [
            (r#"{"eciRunc":{"cgroupParents":["/"]}}"#, "cgroupParents"),
            (
                r#"{"eciRunc":{"cgroupParents":["/a/../b"]}}"#,
                "cgroupParents",
            ),
            (
                r#"{"eciRunc":{"cgroupParents":["docker"]}}"#,
                "cgroupParents",
            ),
            (r#"{"eciRunc":{"auditLog":"a.log"}}"#, "auditLog"),
            (r#"{"eciRunc":{"auditLogMaxBytes":10}}"#, "auditLogMaxBytes"),
        ] {
            let e = Policy::parse(text, "policy.json").unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("policy.json"), "{e}");
        }
    }

    #[test]
    fn bad_pool_and_relative_prefix_are_errors_naming_the_key() {
        let e = Policy::parse(
            r#"{"eciRunc":{"idPool":{"start":100000,"ranges":70000}}}"#,
            "p",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("eciRunc.idPool"), "{e}");
        let e = Policy::parse(r#"{"eciRunc":{"idPool":{"start":0,"ranges":1}}}"#, "p")
            .unwrap_err()
            .to_string();
        assert!(e.contains("idPool.start"), "{e}");
        let e = Policy::parse(r#"{"bindMounts":{"allowedVmPrefixes":["mnt"]}}"#, "p")
            .unwrap_err()
            .to_string();
        assert!(e.contains("allowedVmPrefixes"), "{e}");
        let e = Policy::parse(r#"{"eciRunc":{"idPol":{}}}"#, "p")
            .unwrap_err()
            .to_string();
        assert!(e.contains("idPol"), "{e}");
    }

    #[test]
    fn missing_file_gives_defaults_and_malformed_is_error() {
        let dir = std::env::temp_dir().join(format!("eci-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(
            Policy::load(&dir.join("absent.json")).unwrap(),
            Policy::default()
        );
        let f = dir.join("bad.json");
        std::fs::write(&f, "{").unwrap();
        let e = Policy::load(&f).unwrap_err().to_string();
        assert!(e.contains("bad.json"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
