//! The rules applied to every spec: user namespace and ids (SPEC U1, A6), namespaces (A6, P5),
//! capabilities (P1, P8), devices (P3), kernel-global syscalls (P2), masked and read-only paths
//! (P4, F4).

use std::collections::BTreeSet;

use crate::caps::cap_bit;
use crate::mounts::check_mounts_sharing;
use crate::sharing::Donor;
use crate::spec::{DeviceRule, IdMapping, Namespace, Spec};
use crate::{Policy, PolicyError, Warning};

/// A container's exclusive host id range: container id `i` is host id `start + i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub start: u32,
    pub size: u32,
}

impl IdRange {
    pub fn end(&self) -> u64 {
        u64::from(self.start) + u64::from(self.size)
    }
}

/// Facts about the machine the rules need, supplied by the runtime.
pub struct Environment<'a> {
    pub container_id: &'a str,
    /// The container's range: its own, or the group's when it shares another container's
    /// namespaces (`plan_sharing`, SPEC U2).
    pub range: IdRange,
    /// Containers whose namespaces it shares, whose engine files it may bind (SPEC B3).
    pub donors: &'a [Donor],
    /// Capability names in the runtime's bounding set (`CapBnd`).
    pub bounding: &'a [&'a str],
    /// True when the namespace file `path` of kind `kind` (OCI names: `pid`, `network`, ...)
    /// is the VM's own namespace.
    pub is_vm_namespace: &'a dyn Fn(&str, &str) -> bool,
}

/// A device node containers may use (SPEC P3). `minor: None` means any minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SafeDevice {
    pub path: &'static str,
    pub major: i64,
    pub minor: Option<i64>,
}

/// The only device nodes a container gets, with `--privileged` or `--device` too. `/dev/fuse`
/// only when the spec asks for it.
pub const SAFE_DEVICES: &[SafeDevice] = &[
    SafeDevice {
        path: "/dev/null",
        major: 1,
        minor: Some(3),
    },
    SafeDevice {
        path: "/dev/zero",
        major: 1,
        minor: Some(5),
    },
    SafeDevice {
        path: "/dev/full",
        major: 1,
        minor: Some(7),
    },
    SafeDevice {
        path: "/dev/random",
        major: 1,
        minor: Some(8),
    },
    SafeDevice {
        path: "/dev/urandom",
        major: 1,
        minor: Some(9),
    },
    SafeDevice {
        path: "/dev/tty",
        major: 5,
        minor: Some(0),
    },
    SafeDevice {
        path: "/dev/console",
        major: 5,
        minor: Some(1),
    },
    SafeDevice {
        path: "/dev/ptmx",
        major: 5,
        minor: Some(2),
    },
    SafeDevice {
        path: "/dev/pts/*",
        major: 136,
        minor: None,
    },
    SafeDevice {
        path: "/dev/fuse",
        major: 10,
        minor: Some(229),
    },
];

/// Syscalls that act on the whole VM; a second seccomp filter refuses them with EPERM for every
/// container, privileged or `seccomp=unconfined` included (SPEC P2). The user namespace already
/// denies most of them (they check capabilities in the VM's namespace); the filter makes the
/// refusal independent of that. `adjtimex` is not listed: with `modes == 0` it only reads the
/// clock, and any change needs CAP_SYS_TIME in the VM's namespace, which no container has.
pub const KERNEL_GLOBAL_SYSCALLS: &[&str] = &[
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "swapon",
    "swapoff",
    "acct",
    "iopl",
    "ioperm",
    "reboot",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "stime",
    "bpf",
    "perf_event_open",
    "syslog",
    "open_by_handle_at",
    "lookup_dcookie",
    "quotactl",
    "nfsservctl",
];

/// Paths hidden in every container (SPEC F4): what docker masks for unprivileged containers,
/// plus the kernel's symbol table, debug/security filesystems and the VM's identity.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/kallsyms",
    "/proc/kmsg",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/sys/kernel/debug",
    "/sys/kernel/security",
    "/sys/class/dmi",
    "/sys/devices/virtual/dmi",
];

/// Paths mounted read-only in every container (SPEC P4).
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Parts of `/proc/sys` that belong to the container's own namespaces and stay writable under the
/// read-only `/proc/sys` (SPEC P4: `net.*` of its netns, hostname, IPC limits).
pub const NAMESPACED_PROC_SYS: &[&str] = &[
    "/proc/sys/net",
    "/proc/sys/kernel/hostname",
    "/proc/sys/kernel/domainname",
    "/proc/sys/kernel/shmmax",
    "/proc/sys/kernel/shmall",
    "/proc/sys/kernel/shmmni",
    "/proc/sys/kernel/shm_rmid_forced",
    "/proc/sys/kernel/msgmax",
    "/proc/sys/kernel/msgmnb",
    "/proc/sys/kernel/msgmni",
    "/proc/sys/kernel/sem",
    "/proc/sys/fs/mqueue",
];

const SHARED_KINDS: &[&str] = &["pid", "network", "ipc", "uts"];

/// Refuse sharing the VM's pid, network, ipc or uts namespace (SPEC A6): a kind missing from the
/// spec means "the runtime's own", a path may name the VM's namespace file.
pub fn check_namespaces(
    spec: &Spec,
    is_vm_namespace: &dyn Fn(&str, &str) -> bool,
) -> Result<(), PolicyError> {
    for kind in SHARED_KINDS {
        let refused = match spec.namespace(kind) {
            None => true,
            Some(Namespace { path: Some(p), .. }) => is_vm_namespace(kind, p),
            Some(_) => false,
        };
        if refused {
            return Err(PolicyError::HostNamespace {
                kind: kind.to_string(),
            });
        }
    }
    Ok(())
}

/// Every container gets a new user namespace mapping 0 to `range` (SPEC U1, A6); a spec that
/// asks for none, the host's or another path is rewritten.
pub fn force_user_namespace(spec: &mut Spec, range: IdRange) -> Vec<Warning> {
    let mut w = Vec::new();
    let linux = spec.linux_mut();
    let mut had_user = false;
    linux.namespaces.retain(|n| {
        if n.kind != "user" {
            return true;
        }
        if let Some(p) = &n.path {
            w.push(Warning(format!(
                "user namespace path {p} ignored: every container gets its own user namespace (SPEC A6)"
            )));
            return false;
        }
        had_user = true;
        true
    });
    if !had_user {
        linux.namespaces.push(Namespace {
            kind: "user".into(),
            path: None,
        });
    }
    let map = vec![IdMapping {
        container_id: 0,
        host_id: range.start,
        size: range.size,
    }];
    if (!linux.uid_mappings.is_empty() && linux.uid_mappings != map)
        || (!linux.gid_mappings.is_empty() && linux.gid_mappings != map)
    {
        w.push(Warning(
            "uid/gid mappings of the spec replaced by the container's exclusive range (SPEC U1)"
                .into(),
        ));
    }
    linux.uid_mappings = map.clone();
    linux.gid_mappings = map;
    w
}

/// A new mount and cgroup namespace for every container (SPEC P5); a cgroup namespace path is
/// dropped so the container never sees another cgroup tree.
pub fn ensure_private_namespaces(spec: &mut Spec) -> Vec<Warning> {
    let mut w = Vec::new();
    let linux = spec.linux_mut();
    for kind in ["mount", "cgroup"] {
        match linux.namespaces.iter_mut().find(|n| n.kind == kind) {
            Some(n) => {
                if let Some(p) = n.path.take() {
                    w.push(Warning(format!(
                        "{kind} namespace path {p} ignored: every container gets its own (SPEC P5)"
                    )));
                }
            }
            None => linux.namespaces.push(Namespace {
                kind: kind.into(),
                path: None,
            }),
        }
    }
    w
}

/// Keep only capabilities the runtime can grant (SPEC P8); the user namespace confines the rest
/// to the container's own resources (P1). One warning per dropped capability.
pub fn clamp_capabilities(spec: &mut Spec, bounding: &[&str]) -> Vec<Warning> {
    let allowed: BTreeSet<u32> = bounding.iter().filter_map(|n| cap_bit(n)).collect();
    let mut dropped = BTreeSet::new();
    if let Some(caps) = spec.process.as_mut().and_then(|p| p.capabilities.as_mut()) {
        for set in [
            &mut caps.bounding,
            &mut caps.effective,
            &mut caps.inheritable,
            &mut caps.permitted,
            &mut caps.ambient,
        ] {
            set.retain(|c| {
                let ok = cap_bit(c).is_some_and(|b| allowed.contains(&b));
                if !ok {
                    dropped.insert(c.clone());
                }
                ok
            });
        }
    }
    dropped
        .into_iter()
        .map(|c| {
            Warning(format!(
                "capability {c} is not in the VM's bounding set and was dropped (SPEC P8)"
            ))
        })
        .collect()
}

/// The entry of [`SAFE_DEVICES`] a device node (`c`, `u` or `b`, major, minor) is, if any; the
/// API guard asks this for `--device` and `--device-cgroup-rule` (SPEC P3).
pub fn safe_device(kind: &str, major: i64, minor: i64) -> Option<&'static SafeDevice> {
    safe(kind, major, minor)
}

/// The VM node the runtime binds for a device the spec lists (`linux.devices`), wherever the
/// spec puts it: a character device of the safe set with a fixed number (SPEC P3). `None` for
/// everything else, and for the nodes a container gets from its own devpts (`ptmx`, `pts/N`)
/// or terminal set-up (`console`).
pub fn bindable_safe_device(kind: &str, major: i64, minor: i64) -> Option<&'static SafeDevice> {
    safe(kind, major, minor).filter(|d| {
        d.minor.is_some() && !matches!(d.path, "/dev/console" | "/dev/ptmx" | "/dev/pts/*")
    })
}

/// How many dropped devices the warning names before it only counts them: `--privileged`
/// lists every node of the VM's /dev (hundreds of ttys, loops, disks).
const NAMED_DROPPED_DEVICES: usize = 12;

fn safe(kind: &str, major: i64, minor: i64) -> Option<&'static SafeDevice> {
    if kind != "c" && kind != "u" {
        return None;
    }
    SAFE_DEVICES
        .iter()
        .find(|d| d.major == major && d.minor.is_none_or(|m| m == minor))
}

/// Drop every device node outside [`SAFE_DEVICES`] (SPEC P3) and rewrite the device cgroup
/// rules to: deny all, allow the safe set. The spec's own rules are not kept: engines rely on
/// the runtime's defaults for ptmx/pts/full (docker lists only null, zero, random, urandom,
/// tty and console), and nothing outside the safe set may be allowed anyway. `/dev/fuse` is
/// allowed only when the spec lists it as a device or has a rule naming it.
pub fn filter_devices(spec: &mut Spec) -> Vec<Warning> {
    let linux = spec.linux_mut();
    let mut dropped = Vec::new();
    linux.devices.retain(|d| {
        let ok = safe(&d.kind, d.major, d.minor).is_some();
        if !ok {
            dropped.push(format!("{} ({} {}:{})", d.path, d.kind, d.major, d.minor));
        }
        ok
    });
    let fuse_rule = linux.resources.as_ref().is_some_and(|r| {
        r.devices
            .iter()
            .any(|d| d.allow && d.major == Some(10) && d.minor == Some(229))
    });
    let fuse = fuse_rule
        || linux
            .devices
            .iter()
            .any(|d| d.major == 10 && d.minor == 229);
    let mut rules = vec![DeviceRule {
        allow: false,
        kind: Some("a".into()),
        major: None,
        minor: None,
        access: Some("rwm".into()),
    }];
    for d in SAFE_DEVICES.iter().filter(|d| d.major != 10 || fuse) {
        rules.push(DeviceRule {
            allow: true,
            kind: Some("c".into()),
            major: Some(d.major),
            minor: d.minor,
            access: Some("rwm".into()),
        });
    }
    linux.resources.get_or_insert_with(Default::default).devices = rules;
    if dropped.is_empty() {
        return Vec::new();
    }
    // One line for all of them (SPEC P8 warns, P3 refuses): a per-device line would bury the
    // log under `--privileged`.
    let n = dropped.len();
    let mut named = dropped[..n.min(NAMED_DROPPED_DEVICES)].join(", ");
    if n > NAMED_DROPPED_DEVICES {
        named.push_str(&format!(" and {} more", n - NAMED_DROPPED_DEVICES));
    }
    vec![Warning(format!(
        "{n} device{} not available in isolated containers left out (SPEC P3, P8): {named}",
        if n == 1 { "" } else { "s" }
    ))]
}

/// Add the masked and read-only paths of SPEC P4/F4 to the spec (kept if already there).
pub fn harden_paths(spec: &mut Spec) {
    let linux = spec.linux_mut();
    for p in MASKED_PATHS {
        if !linux.masked_paths.iter().any(|m| m == p) {
            linux.masked_paths.push(p.to_string());
        }
    }
    for p in READONLY_PATHS {
        if !linux.readonly_paths.iter().any(|m| m == p) {
            linux.readonly_paths.push(p.to_string());
        }
    }
}

/// Only sysctls of the container's own namespaces may be set (SPEC P4).
pub fn check_sysctls(spec: &Spec) -> Result<(), PolicyError> {
    let Some(map) = spec.linux.as_ref().and_then(|l| l.sysctl.as_ref()) else {
        return Ok(());
    };
    for key in map.keys() {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let ok = NAMESPACED_PROC_SYS
            .iter()
            .any(|p| path == *p || path.starts_with(&format!("{p}/")));
        if !ok {
            return Err(PolicyError::GlobalSysctl(key.clone()));
        }
    }
    Ok(())
}

fn check_ids(spec: &Spec, range: IdRange) -> Result<(), PolicyError> {
    let Some(p) = &spec.process else {
        return Ok(());
    };
    let u = &p.user;
    let out = |id: u32| u64::from(id) >= u64::from(range.size);
    if out(u.uid) {
        return Err(PolicyError::IdOutOfRange {
            which: "user",
            id: u.uid,
        });
    }
    if out(u.gid) {
        return Err(PolicyError::IdOutOfRange {
            which: "group",
            id: u.gid,
        });
    }
    if let Some(g) = u.additional_gids.iter().find(|g| out(**g)) {
        return Err(PolicyError::IdOutOfRange {
            which: "supplementary group",
            id: *g,
        });
    }
    Ok(())
}

/// Every rule, in the order the runtime needs: refusals first (nothing is changed when the spec
/// is refused), then the rewrites. Returns the warnings to log.
pub fn apply(
    spec: &mut Spec,
    policy: &Policy,
    env: &Environment<'_>,
) -> Result<Vec<Warning>, PolicyError> {
    check_namespaces(spec, env.is_vm_namespace)?;
    check_mounts_sharing(spec, policy, env.container_id, env.donors)?;
    check_sysctls(spec)?;
    check_ids(spec, env.range)?;
    let mut w = force_user_namespace(spec, env.range);
    w.extend(ensure_private_namespaces(spec));
    w.extend(clamp_capabilities(spec, env.bounding));
    w.extend(filter_devices(spec));
    harden_paths(spec);
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::{caps_from_mask, CAPABILITIES};
    use crate::spec::{Capabilities, Device, Linux, Process, Resources, User};
    use std::collections::BTreeMap;

    const RANGE: IdRange = IdRange {
        start: 165_536,
        size: 65_536,
    };

    fn ns(kinds: &[&str]) -> Vec<Namespace> {
        kinds
            .iter()
            .map(|k| Namespace {
                kind: k.to_string(),
                path: None,
            })
            .collect()
    }

    fn base() -> Spec {
        Spec {
            process: Some(Process {
                args: vec!["sh".into()],
                ..Process::default()
            }),
            linux: Some(Linux {
                namespaces: ns(&["pid", "network", "ipc", "uts", "mount"]),
                ..Linux::default()
            }),
            ..Spec::default()
        }
    }

    fn never(_: &str, _: &str) -> bool {
        false
    }

    #[test]
    fn host_namespaces_are_refused_by_name() {
        for (kind, flag) in [
            ("pid", "--pid=host"),
            ("network", "--network=host"),
            ("ipc", "--ipc=host"),
            ("uts", "--uts=host"),
        ] {
            let mut s = base();
            s.linux_mut().namespaces.retain(|n| n.kind != kind);
            let e = check_namespaces(&s, &never).unwrap_err().to_string();
            assert!(e.contains(&format!("VM's {kind} namespace")), "{e}");
            assert!(e.contains(flag), "{e}");
        }
        check_namespaces(&base(), &never).unwrap();
    }

    #[test]
    fn a_path_to_the_vm_namespace_is_refused_other_paths_join() {
        let mut s = base();
        s.linux_mut()
            .namespaces
            .iter_mut()
            .find(|n| n.kind == "network")
            .unwrap()
            .path = Some("/proc/1/ns/net".into());
        let is_vm = |k: &str, p: &str| k == "network" && p == "/proc/1/ns/net";
        let e = check_namespaces(&s, &is_vm).unwrap_err();
        assert_eq!(
            e,
            PolicyError::HostNamespace {
                kind: "network".into()
            }
        );
        // --network container:other: another container's namespace is fine.
        let other = |_: &str, _: &str| false;
        check_namespaces(&s, &other).unwrap();
    }

    #[test]
    fn user_namespace_is_always_new_with_the_range() {
        // No user namespace at all (docker without userns-remap).
        let mut s = base();
        let w = force_user_namespace(&mut s, RANGE);
        assert!(w.is_empty());
        let l = s.linux.as_ref().unwrap();
        assert_eq!(l.namespaces.iter().filter(|n| n.kind == "user").count(), 1);
        assert!(s.namespace("user").unwrap().path.is_none());
        let m = IdMapping {
            container_id: 0,
            host_id: 165_536,
            size: 65_536,
        };
        assert_eq!(l.uid_mappings, vec![m]);
        assert_eq!(l.gid_mappings, vec![m]);

        // A path (joining the VM's or another user namespace) and foreign mappings.
        let mut s = base();
        let l = s.linux_mut();
        l.namespaces.push(Namespace {
            kind: "user".into(),
            path: Some("/proc/1/ns/user".into()),
        });
        l.uid_mappings = vec![IdMapping {
            container_id: 0,
            host_id: 0,
            size: u32::MAX,
        }];
        let w = force_user_namespace(&mut s, RANGE);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(s.namespace("user").unwrap().path.is_none());
        assert_eq!(s.linux.as_ref().unwrap().uid_mappings[0].host_id, 165_536);
    }

    #[test]
    fn mount_and_cgroup_namespaces_are_private() {
        let mut s = base();
        s.linux_mut().namespaces.push(Namespace {
            kind: "cgroup".into(),
            path: Some("/proc/1/ns/cgroup".into()),
        });
        let w = ensure_private_namespaces(&mut s);
        assert_eq!(w.len(), 1);
        assert!(s.namespace("cgroup").unwrap().path.is_none());
        assert!(s.namespace("mount").is_some());
        let mut s = base();
        s.linux_mut().namespaces.retain(|n| n.kind != "mount");
        assert!(ensure_private_namespaces(&mut s).is_empty());
        assert!(s.namespace("mount").is_some() && s.namespace("cgroup").is_some());
    }

    fn privileged_caps() -> Capabilities {
        let all: Vec<String> = CAPABILITIES.iter().map(|s| s.to_string()).collect();
        Capabilities {
            bounding: all.clone(),
            effective: all.clone(),
            inheritable: all.clone(),
            permitted: all,
            ambient: vec![],
        }
    }

    #[test]
    fn caps_missing_from_the_bounding_set_are_dropped_with_one_warning_each() {
        let mut s = base();
        s.process.as_mut().unwrap().capabilities = Some(privileged_caps());
        let bnd = caps_from_mask(0x0000_01ff_feff_ffff);
        let w = clamp_capabilities(&mut s, &bnd);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].0.contains("CAP_SYS_RESOURCE"));
        let c = s.process.unwrap().capabilities.unwrap();
        for set in [&c.bounding, &c.effective, &c.inheritable, &c.permitted] {
            assert!(!set.iter().any(|x| x == "CAP_SYS_RESOURCE"));
            assert!(set.iter().any(|x| x == "CAP_SYS_ADMIN"));
            assert_eq!(set.len(), 40);
        }
    }

    #[test]
    fn unknown_cap_names_are_dropped_and_no_caps_is_fine() {
        let mut s = base();
        s.process.as_mut().unwrap().capabilities = Some(Capabilities {
            bounding: vec!["CAP_CHOWN".into(), "CAP_MADE_UP".into()],
            ..Capabilities::default()
        });
        let w = clamp_capabilities(&mut s, &["CAP_CHOWN"]);
        assert_eq!(w.len(), 1);
        assert!(w[0].0.contains("CAP_MADE_UP"));
        let mut s = base();
        assert!(clamp_capabilities(&mut s, &[]).is_empty());
    }

    fn dev(path: &str, kind: &str, major: i64, minor: i64) -> Device {
        Device {
            kind: kind.into(),
            path: path.into(),
            major,
            minor,
            ..Device::default()
        }
    }

    fn rule(allow: bool, kind: &str, major: Option<i64>, minor: Option<i64>) -> DeviceRule {
        DeviceRule {
            allow,
            kind: Some(kind.into()),
            major,
            minor,
            access: Some("rwm".into()),
        }
    }

    #[test]
    fn only_safe_devices_survive_privileged() {
        let mut s = base();
        let l = s.linux_mut();
        l.devices = vec![
            dev("/dev/null", "c", 1, 3),
            dev("/dev/sda", "b", 8, 0),
            dev("/dev/vda", "b", 253, 0),
            dev("/dev/mem", "c", 1, 1),
            dev("/dev/kmsg", "c", 1, 11),
            dev("/dev/port", "c", 1, 4),
            dev("/dev/kvm", "c", 10, 232),
            dev("/dev/vsock", "c", 10, 121),
            dev("/dev/fuse", "c", 10, 229),
            dev("/dev/pts/3", "c", 136, 3),
            dev("/dev/loop0", "b", 7, 0),
        ];
        l.resources = Some(Resources {
            devices: vec![rule(true, "a", None, None)],
            ..Resources::default()
        });
        let w = filter_devices(&mut s);
        assert_eq!(w.len(), 1);
        for p in [
            "/dev/sda",
            "/dev/mem",
            "/dev/kmsg",
            "/dev/kvm",
            "/dev/vsock",
            "/dev/loop0",
        ] {
            assert!(w[0].0.contains(p), "{p} not named in {w:?}");
        }
        let l = s.linux.as_ref().unwrap();
        let kept: Vec<&str> = l.devices.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(kept, vec!["/dev/null", "/dev/fuse", "/dev/pts/3"]);
        let rules = &l.resources.as_ref().unwrap().devices;
        assert_eq!(rules[0], rule(false, "a", None, None));
        assert!(rules[1..]
            .iter()
            .all(|r| r.allow && r.kind.as_deref() == Some("c")));
        assert!(rules.contains(&rule(true, "c", Some(10), Some(229))));
        assert!(!rules
            .iter()
            .any(|r| r.allow && r.kind.as_deref() == Some("b")));
        assert!(!rules.iter().any(|r| r.allow && r.major.is_none()));
        assert_eq!(rules.len(), 1 + SAFE_DEVICES.len());
    }

    /// `--privileged` lists every node of the VM's /dev: one warning line counts and names
    /// them (the first few), whatever their number.
    #[test]
    fn privileged_device_lists_give_one_summary_line() {
        let mut s = base();
        let l = s.linux_mut();
        l.devices = (0..64)
            .map(|i| dev(&format!("/dev/tty{i}"), "c", 4, i))
            .chain((0..8).map(|i| dev(&format!("/dev/loop{i}"), "b", 7, i)))
            .chain([dev("/dev/null", "c", 1, 3), dev("/dev/urandom", "c", 1, 9)])
            .collect();
        let w = filter_devices(&mut s);
        assert_eq!(w.len(), 1, "{w:?}");
        let line = &w[0].0;
        assert!(!line.contains('\n'));
        assert!(line.starts_with("72 devices not available"), "{line}");
        assert!(line.contains("SPEC P3, P8"), "{line}");
        assert!(line.contains("/dev/tty0 (c 4:0)"), "{line}");
        assert!(line.ends_with("and 60 more"), "{line}");
        assert!(!line.contains("/dev/null"), "{line}");
        let kept: Vec<&str> = s
            .linux
            .as_ref()
            .unwrap()
            .devices
            .iter()
            .map(|d| d.path.as_str())
            .collect();
        assert_eq!(kept, vec!["/dev/null", "/dev/urandom"]);
    }

    #[test]
    fn safe_devices_at_any_path_are_bindable_others_are_not() {
        assert_eq!(bindable_safe_device("c", 1, 3).unwrap().path, "/dev/null");
        assert_eq!(
            bindable_safe_device("u", 1, 9).unwrap().path,
            "/dev/urandom"
        );
        assert_eq!(
            bindable_safe_device("c", 10, 229).unwrap().path,
            "/dev/fuse"
        );
        for (k, maj, min) in [
            ("b", 1, 3),
            ("c", 1, 1),
            ("c", 5, 1),
            ("c", 5, 2),
            ("c", 136, 0),
            ("c", 10, 232),
            ("p", 0, 0),
        ] {
            assert!(
                bindable_safe_device(k, maj, min).is_none(),
                "{k} {maj}:{min}"
            );
        }
    }

    #[test]
    fn docker_default_rules_become_the_safe_set_without_fuse() {
        let mut s = base();
        // dockerd 20.10's default rules (it relies on the runtime for ptmx, pts and full).
        s.linux_mut().resources = Some(Resources {
            devices: vec![
                rule(false, "a", None, None),
                rule(true, "c", Some(1), Some(5)),
                rule(true, "c", Some(1), Some(3)),
                rule(true, "c", Some(5), Some(0)),
                rule(false, "c", Some(10), Some(229)),
                DeviceRule {
                    access: Some("m".into()),
                    ..rule(true, "b", None, None)
                },
            ],
            ..Resources::default()
        });
        assert!(filter_devices(&mut s).is_empty());
        let rules = &s
            .linux
            .as_ref()
            .unwrap()
            .resources
            .as_ref()
            .unwrap()
            .devices;
        assert_eq!(rules[0], rule(false, "a", None, None));
        for (maj, min) in [(1, Some(3)), (1, Some(7)), (5, Some(2)), (136, None)] {
            assert!(
                rules.contains(&rule(true, "c", Some(maj), min)),
                "{maj}:{min:?}"
            );
        }
        assert!(!rules.iter().any(|r| r.major == Some(10) && r.allow));
        assert!(!rules
            .iter()
            .any(|r| r.kind.as_deref() == Some("b") && r.allow));
        assert_eq!(rules.len(), SAFE_DEVICES.len());
        // A rule naming fuse (--device-cgroup-rule) is asking for it.
        s.linux_mut().resources.as_mut().unwrap().devices =
            vec![rule(true, "c", Some(10), Some(229))];
        filter_devices(&mut s);
        let rules = &s
            .linux
            .as_ref()
            .unwrap()
            .resources
            .as_ref()
            .unwrap()
            .devices;
        assert!(rules.contains(&rule(true, "c", Some(10), Some(229))));
    }

    #[test]
    fn hardening_adds_masks_and_readonly_paths_once() {
        let mut s = base();
        s.linux_mut().masked_paths = vec!["/proc/kcore".into()];
        harden_paths(&mut s);
        harden_paths(&mut s);
        let l = s.linux.as_ref().unwrap();
        assert_eq!(l.masked_paths.len(), MASKED_PATHS.len());
        for p in [
            "/proc/kallsyms",
            "/proc/keys",
            "/sys/firmware",
            "/sys/kernel/debug",
        ] {
            assert!(l.masked_paths.iter().any(|m| m == p), "{p}");
        }
        assert!(l.readonly_paths.iter().any(|m| m == "/proc/sys"));
        assert!(l.readonly_paths.iter().any(|m| m == "/proc/sysrq-trigger"));
    }

    #[test]
    fn the_syscall_list_covers_spec_p2() {
        for s in [
            "init_module",
            "finit_module",
            "delete_module",
            "kexec_load",
            "kexec_file_load",
            "swapon",
            "swapoff",
            "acct",
            "iopl",
            "ioperm",
            "reboot",
            "settimeofday",
            "clock_settime",
            "bpf",
            "perf_event_open",
        ] {
            assert!(KERNEL_GLOBAL_SYSCALLS.contains(&s), "{s}");
        }
        // Calls containers need must never be on it.
        for s in [
            "mount",
            "unshare",
            "clone",
            "setns",
            "sethostname",
            "adjtimex",
        ] {
            assert!(!KERNEL_GLOBAL_SYSCALLS.contains(&s), "{s}");
        }
    }

    #[test]
    fn only_namespaced_sysctls_pass() {
        let mut s = base();
        let mut map = BTreeMap::new();
        map.insert("net.ipv4.ip_forward".to_string(), "1".to_string());
        map.insert("kernel.shmmax".to_string(), "1".to_string());
        map.insert("fs.mqueue.msg_max".to_string(), "10".to_string());
        s.linux_mut().sysctl = Some(map.clone());
        check_sysctls(&s).unwrap();
        for bad in [
            "kernel.core_pattern",
            "vm.overcommit_memory",
            "kernel.sysrq",
            "kernel.shmmaxx",
        ] {
            let mut m = map.clone();
            m.insert(bad.to_string(), "1".to_string());
            s.linux_mut().sysctl = Some(m);
            assert_eq!(
                check_sysctls(&s),
                Err(PolicyError::GlobalSysctl(bad.to_string()))
            );
        }
    }

    #[test]
    fn apply_refuses_before_rewriting_and_checks_ids() {
        let bnd = caps_from_mask(0x0000_01ff_feff_ffff);
        let env = Environment {
            container_id: "c1",
            range: RANGE,
            donors: &[],
            bounding: &bnd,
            is_vm_namespace: &never,
        };
        let mut s = base();
        s.linux_mut().namespaces.retain(|n| n.kind != "pid");
        let before = s.clone();
        assert!(apply(&mut s, &Policy::default(), &env).is_err());
        assert_eq!(s, before, "a refused spec must not be half-rewritten");

        let mut s = base();
        s.process.as_mut().unwrap().user = User {
            uid: 65_536,
            ..User::default()
        };
        let e = apply(&mut s, &Policy::default(), &env).unwrap_err();
        assert!(e.to_string().contains("65536"), "{e}");
        let mut s = base();
        s.process.as_mut().unwrap().user.additional_gids = vec![10, 70_000];
        assert!(apply(&mut s, &Policy::default(), &env).is_err());

        let mut s = base();
        s.process.as_mut().unwrap().user = User {
            uid: 1000,
            gid: 65_535,
            ..User::default()
        };
        let w = apply(&mut s, &Policy::default(), &env).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert!(s.namespace("user").is_some() && s.namespace("cgroup").is_some());
        assert!(!s.linux.as_ref().unwrap().masked_paths.is_empty());
    }

    #[test]
    fn spec_round_trips_unknown_fields() {
        let text = r#"{"ociVersion":"1.0.2","process":{"user":{"uid":0,"gid":0},"args":["sh"],"cwd":"/","x-proc":1},
          "root":{"path":"rootfs"},"linux":{"namespaces":[{"type":"pid"}],"intelRdt":{"closID":"a"},
          "resources":{"blockIO":{"weight":10},"memory":{"limit":1048576,"disableOOMKiller":false}}},"vendor":{"a":[1]}}"#;
        let s: Spec = serde_json::from_str(text).unwrap();
        let back: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(back["vendor"]["a"][0], 1);
        assert_eq!(back["process"]["x-proc"], 1);
        assert_eq!(back["linux"]["intelRdt"]["closID"], "a");
        assert_eq!(back["linux"]["resources"]["blockIO"]["weight"], 10);
        assert_eq!(back["linux"]["resources"]["memory"]["limit"], 1_048_576);
        assert_eq!(
            back["linux"]["resources"]["memory"]["disableOOMKiller"],
            false
        );
    }
}
