//! Which mounts a container may have (SPEC B1, B2, B3, B4 runtime side).

use eci_facts::path::is_within;
use eci_facts::vm_paths::CONTAINER_ENGINE_SOCKET;

use crate::sharing::{donor_files, Donor};
use crate::spec::Spec;
use crate::volume_data::named_volume_data;
use crate::{Policy, PolicyError};

/// Filesystems the runtime creates fresh inside the container's own namespaces; none of them
/// exposes a VM path.
pub const VIRTUAL_FS_TYPES: &[&str] = &[
    "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2",
];

/// `/proc` files a later release may cover with per-container emulation (SPEC F1, F3); any
/// other destination under `/proc` could hide a mask, so it is refused.
pub const ALLOWED_PROC_DESTINATIONS: &[&str] = &[
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/diskstats",
    "/proc/swaps",
];

/// Why a bind source is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindKind {
    /// Under a host-share prefix (SPEC B1).
    HostShare,
    /// A file the engine made for this very container (resolv.conf, hosts, hostname, shm,
    /// secrets), a named volume, or docker-init (SPEC B3).
    EngineInternal,
    /// The engine socket, allowed by the policy (the guard checks the image, SPEC B4).
    EngineSocket,
    /// A file or layer folder dockerd's BuildKit made for a RUN step, only for a container the
    /// runtime proved to be one (`Policy::build_step`, SPEC D3). The runtime still checks the
    /// opened file's mount (`build_step` module).
    BuildStep,
}

/// What the caller knows about the mount besides its source.
#[derive(Debug, Clone, Copy, Default)]
pub struct BindContext<'a> {
    /// The id of the container being created; engine files are only recognised for their own
    /// container (`<data-root>/containers/<id>/...`). The API guard passes `None`.
    pub container_id: Option<&'a str>,
    /// Where the mount lands inside the container.
    pub destination: Option<&'a str>,
    /// Containers whose namespace the new one shares, as the runtime proved from the namespace
    /// identities (`plan_sharing`): dockerd binds their resolv.conf, hosts and hostname for
    /// `--network container:X` and their shm folder for `--ipc container:X` (SPEC B3, U2).
    pub donors: &'a [Donor],
}

/// A container id usable as one folder name under `<data-root>/containers`.
fn plain_id(id: &str) -> bool {
    !id.is_empty() && !id.contains('/') && id != "." && id != ".."
}

/// The refusal text of SPEC B2.
pub fn restricted_mount_message(path: &str) -> String {
    PolicyError::RestrictedMount(path.to_string()).to_string()
}

/// `path` with `//`, `.` and `..` resolved lexically; eci-facts' cleaner, which the guard
/// uses too, so the API and the runtime compare the same path (its tests hold the edge cases).
pub use eci_facts::path::clean as normalize_path;

/// Decide whether a bind mount of VM path `source` is allowed (SPEC B1-B4).
pub fn check_bind_source(
    source: &str,
    policy: &Policy,
    ctx: &BindContext<'_>,
) -> Result<BindKind, PolicyError> {
    if !source.starts_with('/') {
        return Err(PolicyError::RelativeSource(source.to_string()));
    }
    let path = normalize_path(source);
    let engine_socket = policy
        .engine_sockets
        .iter()
        .any(|s| normalize_path(s) == path);
    // dockerd's and containerd's own endpoints, and any folder holding them, before every
    // rule that could allow the path (S4: only the guard's sockets reach the engine).
    let private = policy.private_engine_paths.iter().any(|p| {
        let p = normalize_path(p);
        is_within(&path, &p) || is_within(&p, &path)
    });
    let guard_container_socket = path == CONTAINER_ENGINE_SOCKET;
    if private && !(engine_socket && guard_container_socket) {
        return Err(PolicyError::RestrictedMount(source.to_string()));
    }
    if engine_socket {
        // Only the guard's container socket: the guard re-points the socket mount of an image
        // it allows there (SPEC B4, B6). The user socket (`/run/docker.sock`,
        // `/var/run/docker.sock`) reaching the runtime as a source means the mount did not go
        // through that decision (a request straight to dockerd or containerd), and mounting it
        // would give the container the user's unfiltered API; dockerd's own socket is private
        // (refused above).
        return if policy.allow_engine_socket && guard_container_socket {
            Ok(BindKind::EngineSocket)
        } else {
            Err(PolicyError::EngineSocket(source.to_string()))
        };
    }
    if policy
        .allowed_bind_prefixes
        .iter()
        .any(|p| is_within(&path, &normalize_path(p)))
    {
        return Ok(BindKind::HostShare);
    }
    for root in &policy.engine_data_roots {
        let root = normalize_path(root);
        if let Some(id) = ctx.container_id {
            if plain_id(id) {
                let own = format!("{root}/containers/{id}");
                if path != own && is_within(&path, &own) {
                    return Ok(BindKind::EngineInternal);
                }
            }
        }
        // Only the files dockerd shares for the namespace kind: the donor's secrets, logs and
        // config stay its own.
        for d in ctx.donors.iter().filter(|d| plain_id(&d.container_id)) {
            let base = format!("{root}/containers/{}", d.container_id);
            for (file, below) in donor_files(&d.kind) {
                let f = format!("{base}/{file}");
                if path == f || (*below && is_within(&path, &f)) {
                    return Ok(BindKind::EngineInternal);
                }
            }
        }
    }
    // <root>/volumes/<name>/_data and below: a named volume. The runtime also checks what is
    // mounted on `_data` (`volume_data::classify`), since dockerd's local driver mounts there
    // whatever the volume's options say.
    if named_volume_data(&path, &policy.engine_data_roots).is_some() {
        return Ok(BindKind::EngineInternal);
    }
    let dest_ok = ctx
        .destination
        .is_none_or(|d| normalize_path(d) == "/sbin/docker-init");
    if dest_ok
        && policy
            .init_binaries
            .iter()
            .any(|b| normalize_path(b) == path)
    {
        return Ok(BindKind::EngineInternal);
    }
    // Last, so no rule above changes for build steps; `build_step` is only ever set by the
    // runtime for a bundle in BuildKit's executor folder (never by the guard).
    if let Some(root) = &policy.build_step {
        if crate::build_step::build_step_source(&path, root).is_some() {
            return Ok(BindKind::BuildStep);
        }
    }
    Err(PolicyError::RestrictedMount(source.to_string()))
}

/// Check every mount of `spec` (SPEC B1-B4): binds by source, other mounts by type, and no
/// destination under `/proc` that could cover a mask.
pub fn check_mounts(
    spec: &Spec,
    policy: &Policy,
    container_id: &str,
) -> Result<Vec<BindKind>, PolicyError> {
    check_mounts_sharing(spec, policy, container_id, &[])
}

/// [`check_mounts`] for a container that shares the namespaces of `donors` (SPEC U2, B3).
pub fn check_mounts_sharing(
    spec: &Spec,
    policy: &Policy,
    container_id: &str,
    donors: &[Donor],
) -> Result<Vec<BindKind>, PolicyError> {
    let mut kinds = Vec::new();
    for m in &spec.mounts {
        let dest = normalize_path(&m.destination);
        let is_proc_root = dest == "/proc" && m.kind.as_deref() == Some("proc");
        if (dest == "/proc" || dest.starts_with("/proc/"))
            && !is_proc_root
            && !ALLOWED_PROC_DESTINATIONS.contains(&dest.as_str())
        {
            return Err(PolicyError::ProcDestination(m.destination.clone()));
        }
        if m.is_bind() {
            let src = m.source.as_deref().unwrap_or("");
            let ctx = BindContext {
                container_id: Some(container_id),
                destination: Some(&m.destination),
                donors,
            };
            kinds.push(check_bind_source(src, policy, &ctx)?);
            continue;
        }
        let kind = m.kind.as_deref().unwrap_or("");
        if !VIRTUAL_FS_TYPES.contains(&kind) {
            return Err(PolicyError::MountType {
                kind: kind.to_string(),
                destination: m.destination.clone(),
                allowed: VIRTUAL_FS_TYPES.join(", "),
            });
        }
    }
    Ok(kinds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Mount;
    use crate::DEFAULT_ENGINE_SOCKETS;

    fn pol() -> Policy {
        Policy {
            engine_data_roots: vec!["/var/lib/docker".into(), "/tmp/e2e/data".into()],
            ..Policy::default()
        }
    }

    fn ctx<'a>(id: &'a str, dest: &'a str) -> BindContext<'a> {
        BindContext {
            container_id: Some(id),
            destination: Some(dest),
            donors: &[],
        }
    }

    #[test]
    fn host_share_paths_are_allowed() {
        let p = pol();
        for src in ["/mnt/host", "/mnt/host/c/src", "/mnt/host/home/me/x/../y"] {
            assert_eq!(
                check_bind_source(src, &p, &BindContext::default()),
                Ok(BindKind::HostShare),
                "{src}"
            );
        }
    }

    #[test]
    fn vm_paths_are_refused_with_the_spec_message() {
        let p = pol();
        for src in [
            "/etc",
            "/",
            "/mnt/hostile",
            "/mnt/host/../etc",
            "/var/lib/docker",
            "/var/lib/docker/containers",
            "/var/lib/docker/volumes",
            "/var/lib/docker/volumes/x",
            "/var/lib/docker/volumes//_data",
            "/usr/bin/docker",
        ] {
            let e = check_bind_source(src, &p, &ctx("abc", "/x")).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("can't mount {src} because it's configured as a restricted host mount")
            );
        }
        assert_eq!(
            restricted_mount_message("/etc"),
            "can't mount /etc because it's configured as a restricted host mount"
        );
    }

    #[test]
    fn relative_source_is_refused() {
        assert!(matches!(
            check_bind_source("etc", &pol(), &BindContext::default()),
            Err(PolicyError::RelativeSource(_))
        ));
    }

    #[test]
    fn engine_files_only_for_their_own_container() {
        let p = pol();
        let c = ctx("abc", "/etc/hosts");
        for src in [
            "/var/lib/docker/containers/abc/hosts",
            "/var/lib/docker/containers/abc/resolv.conf",
            "/var/lib/docker/containers/abc/hostname",
            "/var/lib/docker/containers/abc/mounts/shm",
            "/var/lib/docker/containers/abc/mounts/secrets",
            "/tmp/e2e/data/containers/abc/hosts",
        ] {
            assert_eq!(check_bind_source(src, &p, &c), Ok(BindKind::EngineInternal));
        }
        // Another container's files, the folder itself, escapes and the guard's view.
        for (src, id) in [
            ("/var/lib/docker/containers/other/hosts", Some("abc")),
            ("/var/lib/docker/containers/abc", Some("abc")),
            ("/var/lib/docker/containers/abc/../other/hosts", Some("abc")),
            ("/var/lib/docker/containers/abc/hosts", None),
            ("/var/lib/docker/containers/x/hosts", Some("..")),
            ("/var/lib/docker/containers/hosts", Some("")),
        ] {
            let c = BindContext {
                container_id: id,
                destination: None,
                donors: &[],
            };
            assert!(check_bind_source(src, &p, &c).is_err(), "{src} {id:?}");
        }
    }

    /// SPEC U2, B3: a container sharing another's network namespace gets that container's
    /// resolv.conf, hosts and hostname; one sharing its ipc namespace gets its shm folder.
    /// Nothing else of the donor's, and nothing of a container it does not share with.
    #[test]
    fn donors_engine_files_pass_only_for_the_shared_kind() {
        let p = pol();
        let net = [Donor {
            kind: "network".into(),
            container_id: "donor".into(),
        }];
        let c = BindContext {
            container_id: Some("joiner"),
            destination: Some("/etc/resolv.conf"),
            donors: &net,
        };
        for src in [
            "/var/lib/docker/containers/donor/resolv.conf",
            "/var/lib/docker/containers/donor/hosts",
            "/tmp/e2e/data/containers/donor/hostname",
            "/var/lib/docker/containers/joiner/hosts",
        ] {
            assert_eq!(
                check_bind_source(src, &p, &c),
                Ok(BindKind::EngineInternal),
                "{src}"
            );
        }
        for src in [
            "/var/lib/docker/containers/donor/mounts/shm",
            "/var/lib/docker/containers/donor/mounts/secrets",
            "/var/lib/docker/containers/donor/config.v2.json",
            "/var/lib/docker/containers/donor",
            "/var/lib/docker/containers/donor/resolv.conf/../../other/hosts",
            "/var/lib/docker/containers/other/resolv.conf",
        ] {
            assert!(check_bind_source(src, &p, &c).is_err(), "{src}");
        }
        let ipc = [Donor {
            kind: "ipc".into(),
            container_id: "donor".into(),
        }];
        let c = BindContext { donors: &ipc, ..c };
        assert_eq!(
            check_bind_source("/var/lib/docker/containers/donor/mounts/shm", &p, &c),
            Ok(BindKind::EngineInternal)
        );
        assert!(check_bind_source("/var/lib/docker/containers/donor/resolv.conf", &p, &c).is_err());
        // A donor id that is not one folder name grants nothing.
        let bad = [Donor {
            kind: "network".into(),
            container_id: "..".into(),
        }];
        let c = BindContext { donors: &bad, ..c };
        assert!(check_bind_source("/var/lib/docker/resolv.conf", &p, &c).is_err());
        // check_mounts passes the donors to every bind.
        let mut s = docker_like(vec![]);
        s.mounts.push(m(
            "/etc/resolv.conf",
            Some("bind"),
            Some("/var/lib/docker/containers/donor/resolv.conf"),
            &["rbind"],
        ));
        assert!(check_mounts(&s, &p, "id1").is_err());
        assert_eq!(check_mounts_sharing(&s, &p, "id1", &net).unwrap().len(), 2);
    }

    #[test]
    fn named_volumes_are_engine_internal() {
        let p = pol();
        for src in [
            "/var/lib/docker/volumes/data/_data",
            "/var/lib/docker/volumes/data/_data/sub",
            "/tmp/e2e/data/volumes/v/_data",
        ] {
            assert_eq!(
                check_bind_source(src, &p, &BindContext::default()),
                Ok(BindKind::EngineInternal)
            );
        }
        assert!(check_bind_source(
            "/var/lib/docker/volumes/metadata.db",
            &p,
            &BindContext::default()
        )
        .is_err());
    }

    #[test]
    fn docker_init_only_at_its_destination() {
        let p = pol();
        assert_eq!(
            check_bind_source("/usr/bin/docker-init", &p, &ctx("a", "/sbin/docker-init")),
            Ok(BindKind::EngineInternal)
        );
        assert!(check_bind_source("/usr/bin/docker-init", &p, &ctx("a", "/bin/sh")).is_err());
    }

    #[test]
    fn engine_socket_refused_unless_policy_allows() {
        let mut p = pol();
        for s in [
            "/var/run/docker.sock",
            "/run/docker.sock",
            "/run/eci/container-engine.sock",
            "/var/run/../run/docker.sock",
        ] {
            let e = check_bind_source(s, &p, &BindContext::default()).unwrap_err();
            assert!(matches!(e, PolicyError::EngineSocket(_)), "{s}");
            assert!(e.to_string().contains("dockerSocketMount"));
        }
        p.allow_engine_socket = true;
        assert_eq!(
            check_bind_source(
                "/run/eci/container-engine.sock",
                &p,
                &BindContext::default()
            ),
            Ok(BindKind::EngineSocket)
        );
        // A socket under a shared prefix is still the socket when listed.
        p.allow_engine_socket = false;
        p.engine_sockets.push("/mnt/host/run/docker.sock".into());
        assert!(
            check_bind_source("/mnt/host/run/docker.sock", &p, &BindContext::default()).is_err()
        );
    }

    /// SPEC B4, S4: with socket mounting allowed, the runtime still accepts only the guard's
    /// container socket. The user socket as a source did not pass the guard's image check
    /// (the guard re-points allowed mounts), so it is refused with the B4 message, also when
    /// listed in `eciRunc.engineSockets`, reached through `..`, or given with a trailing slash.
    #[test]
    fn only_the_guards_container_socket_is_an_engine_socket_mount() {
        let mut p = pol();
        p.allow_engine_socket = true;
        for s in [
            eci_facts::vm_paths::ENGINE_SOCKET,
            "/var/run/docker.sock",
            "/var/run/../run/docker.sock",
            "/run//docker.sock",
        ] {
            let e = check_bind_source(s, &p, &ctx("abc", "/var/run/docker.sock")).unwrap_err();
            assert_eq!(e, PolicyError::EngineSocket(s.to_string()), "{s}");
            assert!(
                e.to_string()
                    .contains("enhancedContainerIsolation.dockerSocketMount.imageList"),
                "{e}"
            );
            assert_eq!(e.rules(), &["B4", "S4"]);
        }
        // dockerd's socket stays the B2 refusal.
        assert_eq!(
            check_bind_source(
                eci_facts::vm_paths::DOCKERD_SOCKET,
                &p,
                &BindContext::default()
            ),
            Err(PolicyError::RestrictedMount(
                eci_facts::vm_paths::DOCKERD_SOCKET.to_string()
            ))
        );
        // The defaults name every engine socket, so none of them falls through to a shared
        // prefix or another rule that could allow it.
        for s in DEFAULT_ENGINE_SOCKETS {
            assert!(p.engine_sockets.iter().any(|e| e == s), "{s}");
        }
        assert_eq!(
            check_bind_source(CONTAINER_ENGINE_SOCKET, &p, &BindContext::default()),
            Ok(BindKind::EngineSocket)
        );
    }

    /// SPEC S4 and B2: whatever the settings say, a container never gets dockerd's or
    /// containerd's own endpoints, nor a folder that holds them.
    #[test]
    fn root_only_engine_endpoints_are_always_restricted() {
        let mut p = Policy::parse(
            r#"{"dockerdSocket": "/run/dockerd-alt.sock",
                "bindMounts": {"allowedVmPrefixes": ["/run", "/mnt/host"]},
                "dockerSocketMount": {"images": ["*"]},
                "eciRunc": {"engineSockets": ["/run/eci/dockerd.sock", "/run/eci/container-engine.sock",
                                             "/run/containerd/containerd.sock", "/run/dockerd-alt.sock"]}}"#,
            "policy.json",
        )
        .unwrap();
        assert!(p.allow_engine_socket);
        for src in [
            "/run/eci/dockerd.sock",
            "/run/eci//dockerd.sock",
            "/run/eci/./../eci/dockerd.sock",
            "/run/eci",
            "/run/eci/",
            "/run/eci/dockerd.json",
            "/run/eci/legacy-containers.json",
            "/run/containerd/containerd.sock",
            "/run/containerd/s/0123abcd",
            "/run/containerd",
            "/run/dockerd-alt.sock",
            // Folders holding them would expose them too.
            "/run",
            "/",
        ] {
            let ctx = ctx("abc", "/var/run/docker.sock");
            assert_eq!(
                check_bind_source(src, &p, &ctx),
                Err(PolicyError::RestrictedMount(src.to_string())),
                "{src}"
            );
            assert_eq!(
                check_bind_source(src, &p, &ctx).unwrap_err().to_string(),
                format!("can't mount {src} because it's configured as a restricted host mount")
            );
        }
        // The guard's container socket in dockerd's folder is the one exception (B4: the guard
        // chose the image), and only while it is an engine socket.
        assert_eq!(
            check_bind_source(CONTAINER_ENGINE_SOCKET, &p, &BindContext::default()),
            Ok(BindKind::EngineSocket)
        );
        // Other paths under the allowed prefix keep passing.
        assert_eq!(
            check_bind_source("/run/user/1000/x", &p, &BindContext::default()),
            Ok(BindKind::HostShare)
        );
        p.engine_sockets.retain(|s| s != CONTAINER_ENGINE_SOCKET);
        assert_eq!(
            check_bind_source(CONTAINER_ENGINE_SOCKET, &p, &BindContext::default()),
            Err(PolicyError::RestrictedMount(
                CONTAINER_ENGINE_SOCKET.to_string()
            ))
        );
    }

    fn m(dest: &str, kind: Option<&str>, src: Option<&str>, opts: &[&str]) -> Mount {
        Mount {
            destination: dest.into(),
            kind: kind.map(Into::into),
            source: src.map(Into::into),
            options: opts.iter().map(|s| s.to_string()).collect(),
            ..Mount::default()
        }
    }

    fn docker_like(extra: Vec<Mount>) -> Spec {
        let mut s = Spec {
            mounts: vec![
                m("/proc", Some("proc"), Some("proc"), &[]),
                m("/dev", Some("tmpfs"), Some("tmpfs"), &["nosuid"]),
                m("/dev/pts", Some("devpts"), Some("devpts"), &[]),
                m("/sys", Some("sysfs"), Some("sysfs"), &["ro"]),
                m("/sys/fs/cgroup", Some("cgroup"), Some("cgroup"), &["ro"]),
                m("/dev/mqueue", Some("mqueue"), Some("mqueue"), &[]),
                m("/dev/shm", Some("tmpfs"), Some("shm"), &[]),
                m(
                    "/etc/hosts",
                    Some("bind"),
                    Some("/var/lib/docker/containers/id1/hosts"),
                    &["rbind", "rprivate"],
                ),
            ],
            ..Spec::default()
        };
        s.mounts.extend(extra);
        s
    }

    #[test]
    fn a_docker_spec_passes() {
        let kinds = check_mounts(&docker_like(vec![]), &pol(), "id1").unwrap();
        assert_eq!(kinds, vec![BindKind::EngineInternal]);
    }

    #[test]
    fn bind_spellings_are_all_checked() {
        for mnt in [
            m("/x", Some("bind"), Some("/etc"), &["rbind"]),
            m("/x", None, Some("/etc"), &["bind"]),
            m("/x", Some("none"), Some("/etc"), &["rbind", "ro"]),
        ] {
            let e = check_mounts(&docker_like(vec![mnt]), &pol(), "id1").unwrap_err();
            assert_eq!(e, PolicyError::RestrictedMount("/etc".into()));
        }
    }

    #[test]
    fn block_backed_and_unknown_types_are_refused() {
        for kind in ["ext4", "overlay", "nfs", "devtmpfs", ""] {
            let e = check_mounts(
                &docker_like(vec![m("/x", Some(kind), Some("/dev/vda"), &[])]),
                &pol(),
                "id1",
            )
            .unwrap_err();
            assert!(matches!(e, PolicyError::MountType { .. }), "{kind}");
        }
    }

    #[test]
    fn proc_destinations_are_limited() {
        let e = check_mounts(
            &docker_like(vec![m("/proc/sys", Some("tmpfs"), Some("t"), &[])]),
            &pol(),
            "id1",
        )
        .unwrap_err();
        assert!(matches!(e, PolicyError::ProcDestination(_)));
        let e = check_mounts(
            &docker_like(vec![m("/proc", Some("tmpfs"), Some("t"), &[])]),
            &pol(),
            "id1",
        )
        .unwrap_err();
        assert!(matches!(e, PolicyError::ProcDestination(_)));
        check_mounts(
            &docker_like(vec![m(
                "/proc/uptime",
                Some("bind"),
                Some("/mnt/host/up"),
                &["bind"],
            )]),
            &pol(),
            "id1",
        )
        .unwrap();
    }
}
