//! Paths inside the VM and names both sides use: the builder and vm-config write files at these
//! paths and render them into the engines' configuration; eci-init, eci-runc and eci-guard read,
//! serve or protect them. Each is defined here once, so the two sides cannot drift apart.

/// Runtime name dockerd and containerd know eci-runc by; every container created through eci
/// records it as its `HostConfig.Runtime` (SPEC A1, A3, A5).
pub const ECI_RUNTIME_NAME: &str = "eci";
/// Where the rootfs installs eci-runc.
pub const ECI_RUNC_PATH: &str = "/usr/bin/eci-runc";

/// eci's run-time folder (tmpfs), root-only: dockerd's socket, the guard's container socket
/// and eci-init's status files live here.
pub const RUN_DIR: &str = "/run/eci";
/// dockerd's own socket: root-only (SPEC S4). The user-facing socket belongs to the guard.
pub const DOCKERD_SOCKET: &str = "/run/eci/dockerd.sock";
/// The engine socket users reach (also `/var/run/docker.sock`): eci-guard listens here (S4).
pub const ENGINE_SOCKET: &str = "/run/docker.sock";
/// eci-guard's socket for containers allowed to mount the engine socket: their bind mount of
/// it is re-pointed here, and requests arriving here are filtered by commandList (B4, B6).
/// The runtime must treat it as an engine socket too.
pub const CONTAINER_ENGINE_SOCKET: &str = "/run/eci/container-engine.sock";
/// eci-init's verdict on the running kernel against the image's pins (SPEC V5), as JSON.
pub const KERNEL_DRIFT_STATUS: &str = "/run/eci/kernel-drift.json";
/// Where eci-init records the containers it found at boot that predate isolation (SPEC A5).
pub const LEGACY_LIST: &str = "/run/eci/legacy-containers.json";

/// eci-guard's image pins and last good settings (on the data disk).
pub const GUARD_STATE_DIR: &str = "/var/lib/eci/guard";
/// eci-guard's audit log, one JSON line per decision (S5); on the data disk beside eci-runc's,
/// so both survive a reboot, rotated by size by the guard.
pub const GUARD_AUDIT_LOG: &str = "/var/lib/eci/audit/guard.log";
/// eci-runc's audit log of its own refusals (S5), in the guard's record shape. Under
/// `/var/lib/eci`, which eci-init keeps on the data disk, so it survives a reboot; eci-runc
/// rotates it by size.
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

/// dockerd's configuration as the image ships it.
pub const DAEMON_JSON_PATH: &str = "/etc/docker/daemon.json";
pub const CONTAINERD_CONFIG_PATH: &str = "/etc/containerd/config.toml";
/// The guard's and the runtime's policy (SPEC B1-B6, S1).
pub const POLICY_PATH: &str = "/etc/eci/policy.json";
/// The hardening sysctls (SPEC V3) and the kernel pins' compensations; eci-init applies the
/// file at boot and the image build checks it establishes what the pins need.
pub const SYSCTL_FILE: &str = "/etc/eci/sysctl.conf";
/// The kernel modules eci-init loads at boot, in order, one file name a line; the image build
/// writes it from the modules' dependency closure.
pub const MODULES_FILE: &str = "/etc/eci/modules.load";

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn private_sockets_sit_in_the_root_only_run_folder() {
        // eci-init makes RUN_DIR root-only; only the mounts the guard makes reach the container
        // socket in it, and dockerd's socket is never reachable from a container (SPEC S4).
        for s in [DOCKERD_SOCKET, CONTAINER_ENGINE_SOCKET, LEGACY_LIST] {
            assert_eq!(Path::new(s).parent(), Some(Path::new(RUN_DIR)), "{s}");
        }
        assert!(!ENGINE_SOCKET.starts_with(RUN_DIR));
        for p in [GUARD_STATE_DIR, GUARD_AUDIT_LOG, RUNC_AUDIT_LOG] {
            assert!(p.starts_with("/var/lib/eci/"), "{p}");
        }
    }
}
