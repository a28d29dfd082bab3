//! The VM's mount layout (SPEC V2): the image is the root, read-only; everything written at run
//! time lives on tmpfs (/run, /tmp, /var) or on the data disk.
//!
//! /var: the image's /var (dpkg status, empty engine directories) is copied onto a fresh tmpfs
//! at boot, so it stays part of the image and its definition while being writable; the copy is
//! a few hundred KiB. The data disk is mounted at [`DATA_MOUNT`] and its [`PERSISTENT`]
//! directories are bind-mounted over the /var/lib ones, so only engine and eci state persists
//! and logs do not fill the disk (/var/log stays on tmpfs).

/// Where the data disk is mounted.
pub const DATA_MOUNT: &str = "/var/lib/eci-data";

/// Directories that live on the data disk: (directory on the disk, mount point, mode).
pub const PERSISTENT: &[(&str, &str, u32)] = &[
    ("docker", eci_facts::vm_paths::DOCKER_DATA_ROOT, 0o710),
    ("containerd", eci_facts::vm_paths::CONTAINERD_ROOT, 0o711),
    // The guard's image pins and last good settings, and the guard's and eci-runc's audit logs
    // (SPEC S5).
    ("eci", "/var/lib/eci", 0o700),
];

use nix::mount::MsFlags;

/// One mount(2) call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MsFlags,
    pub data: &'static str,
    /// Mode of the mount point if eci-init has to create it.
    pub mode: u32,
}

const NOSUID: MsFlags = MsFlags::MS_NOSUID;
const NODEV: MsFlags = MsFlags::MS_NODEV;
const NOEXEC: MsFlags = MsFlags::MS_NOEXEC;

/// The kernel file systems and tmpfs mounts, in order (each target exists once the previous
/// ones are mounted). /var comes separately because its image content is copied in.
pub fn early() -> Vec<Mount> {
    let m = |source, target, fstype, flags, data, mode| Mount {
        source,
        target,
        fstype,
        flags,
        data,
        mode,
    };
    vec![
        m("proc", "/proc", "proc", NOSUID | NODEV | NOEXEC, "", 0o555),
        m("sysfs", "/sys", "sysfs", NOSUID | NODEV | NOEXEC, "", 0o555),
        m("devtmpfs", "/dev", "devtmpfs", NOSUID, "mode=0755", 0o755),
        m(
            "devpts",
            "/dev/pts",
            "devpts",
            NOSUID | NOEXEC,
            "gid=5,mode=0620,ptmxmode=0666",
            0o755,
        ),
        m(
            "shm",
            "/dev/shm",
            "tmpfs",
            NOSUID | NODEV,
            "mode=1777",
            0o1777,
        ),
        m("tmpfs", "/run", "tmpfs", NOSUID | NODEV, "mode=0755", 0o755),
        m(
            "tmpfs",
            "/tmp",
            "tmpfs",
            NOSUID | NODEV,
            "mode=1777",
            0o1777,
        ),
        m(
            "cgroup2",
            "/sys/fs/cgroup",
            "cgroup2",
            NOSUID | NODEV | NOEXEC,
            "",
            0o555,
        ),
        m(
            "securityfs",
            "/sys/kernel/security",
            "securityfs",
            NOSUID | NODEV | NOEXEC,
            "",
            0o755,
        ),
    ]
}

/// The /var tmpfs. No nosuid/nodev/noexec: without a data disk it holds docker's volumes, and
/// a volume bind-mounted into a container inherits its source mount's flags.
pub fn var() -> Mount {
    Mount {
        source: "tmpfs",
        target: "/var",
        fstype: "tmpfs",
        flags: MsFlags::empty(),
        data: "mode=0755",
        mode: 0o755,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_before_anything_writes_and_kernel_filesystems_locked_down() {
        let plan = early();
        let pos = |t: &str| plan.iter().position(|m| m.target == t).unwrap();
        assert!(pos("/proc") < pos("/sys") && pos("/sys") < pos("/sys/fs/cgroup"));
        assert!(pos("/dev") < pos("/dev/pts") && pos("/dev") < pos("/dev/shm"));
        for m in &plan {
            assert!(m.flags.contains(NOSUID), "{} must be nosuid", m.target);
        }
        // Volumes on the fallback /var keep setuid files and device nodes working.
        assert!(!var().flags.intersects(NOSUID | NODEV | NOEXEC));
    }

    #[test]
    fn persistent_state_is_only_engine_and_eci_state_under_var_lib() {
        for (dir, target, _) in PERSISTENT {
            assert!(target.starts_with("/var/lib/") && !dir.contains('/'));
        }
        assert!(DATA_MOUNT.starts_with("/var/lib/"));
        assert!(!PERSISTENT.iter().any(|(_, t, _)| t.starts_with("/var/log")));
    }
}
