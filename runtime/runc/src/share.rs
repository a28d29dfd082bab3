//! Namespaces a spec joins by path (SPEC A6, U2): `--network/--pid/--ipc container:X`,
//! compose's `network_mode: service:x`, the containers of a CRI pod.
//!
//! The runtime (P, VM root) opens every such namespace once, before anything is allocated, and
//! identifies it by its nsfs device and inode and by the user namespace that owns it
//! (`NS_GET_USERNS`). That owner is compared with the VM's user namespace and with the user
//! namespace of every running eci container the allocator knows. `eci_policy::plan_sharing`
//! decides from those facts; the container's first stage ([`Sharing::enter`]) then enters the
//! very namespaces P identified, through the descriptors P opened (inherited over `fork`), so a
//! pid reused between the check and the join cannot swap a namespace.

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use eci_policy::spec::Spec;
use eci_policy::{
    plan_sharing, ContainerRef, Group, IdRange, JoinedNamespace, NsId, NsOwner, SharingPlan,
    UserNamespacePlan,
};

use crate::alloc::Allocator;
use crate::rootfs;
use crate::state::State;
use crate::sys::mountfd::FsContext;
use crate::sys::{self, Result};

/// `statfs` type of the namespace filesystem (`/proc/PID/ns/*` and their bind mounts).
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// `fsmount` attributes (linux/mount.h).
const MOUNT_ATTR_RDONLY: u32 = 0x1;
const MOUNT_ATTR_NOSUID: u32 = 0x2;
const MOUNT_ATTR_NODEV: u32 = 0x4;
const MOUNT_ATTR_NOEXEC: u32 = 0x8;

/// The kinds a container may share, with their `/proc/PID/ns` file and `setns` type.
const SHARED: &[(&str, &str, libc::c_int)] = &[
    ("pid", "pid", libc::CLONE_NEWPID),
    ("network", "net", libc::CLONE_NEWNET),
    ("ipc", "ipc", libc::CLONE_NEWIPC),
    ("uts", "uts", libc::CLONE_NEWUTS),
];

/// Kinds whose path `eci_policy::apply` drops with a warning: every container gets its own.
const ALWAYS_OWN: &[&str] = &["user", "mount", "cgroup"];

/// A namespace the container enters, opened by P.
pub struct Joined {
    pub kind: String,
    pub flag: libc::c_int,
    pub fd: OwnedFd,
    /// For messages: `network namespace /proc/42/ns/net`.
    pub what: String,
    /// Owned by the VM's user namespace (a CRI pod's pinned network namespace): entered while
    /// still VM root, and the container gets no power over it.
    pub vm_owned: bool,
}

/// What `create` does about the namespaces its spec joins.
pub struct Sharing {
    pub joined: Vec<Joined>,
    pub plan: SharingPlan,
    /// The group's user namespace (from `NS_GET_USERNS` on a joined namespace) when the plan
    /// joins it.
    pub userns: Option<OwnedFd>,
}

fn stat_id(st: &libc::stat) -> NsId {
    NsId {
        dev: st.st_dev,
        ino: st.st_ino,
    }
}

/// A namespace's identity from its descriptor.
pub fn fd_id(fd: impl AsFd) -> Result<NsId> {
    nix::sys::stat::fstat(fd)
        .map(|st| stat_id(&st))
        .map_err(|e| sys::nix_err("fstat namespace", e))
}

/// A namespace's identity from a `/proc/PID/ns/X` path (`None` when it cannot be read).
pub fn path_id(path: &str) -> Option<NsId> {
    nix::sys::stat::stat(path).ok().map(|st| stat_id(&st))
}

/// The filesystem type (`f_type`) of an open file.
fn fs_type(fd: impl AsFd) -> Option<i64> {
    nix::sys::statfs::fstatfs(fd)
        .ok()
        .map(|s| s.filesystem_type().0)
}

/// A running eci container's user namespace, range and shareable namespaces.
struct Live {
    who: ContainerRef,
    range: IdRange,
    userns: NsId,
    ns: Vec<(&'static str, NsId)>,
}

/// Every running container holding a range in the allocator's table (all state roots), with
/// the identities of its init's namespaces. A container whose init is gone or was replaced
/// by another process with the same pid (start time) is left out.
fn live_containers(alloc: &Allocator) -> Result<Vec<Live>> {
    let mut out = Vec::new();
    for e in alloc.snapshot()? {
        for (id, root) in e.holders() {
            let Ok(st) = State::load(Path::new(root), id) else {
                continue;
            };
            if !st.alive() {
                continue;
            }
            let proc_ns = |f: &str| path_id(&format!("/proc/{}/ns/{f}", st.pid));
            let Some(userns) = proc_ns("user") else {
                continue;
            };
            let ns = SHARED
                .iter()
                .filter_map(|(kind, file, _)| proc_ns(file).map(|n| (*kind, n)))
                .collect();
            let map = fs::read_to_string(format!("/proc/{}/uid_map", st.pid)).unwrap_or_default();
            // Read after the namespaces: the pid still names the same init.
            if !st.alive() {
                continue;
            }
            let expected = format!("0 {} {}", st.range_start, st.range_size);
            let actual = map.split_whitespace().collect::<Vec<_>>().join(" ");
            if actual != expected {
                return Err(format!(
                    "container {id}: its uid_map ({actual}) differs from the id range the allocator recorded ({expected}); delete and recreate it"
                ));
            }
            out.push(Live {
                who: ContainerRef {
                    id: id.to_string(),
                    root: root.to_string(),
                },
                range: IdRange {
                    start: st.range_start,
                    size: st.range_size,
                },
                userns,
                ns,
            });
        }
    }
    Ok(out)
}

/// Open, identify and classify every namespace `spec` joins by path, and decide (SPEC A6, U2).
pub fn resolve(spec: &Spec, alloc: &Allocator) -> Result<Sharing> {
    let namespaces = spec
        .linux
        .as_ref()
        .map(|l| l.namespaces.clone())
        .unwrap_or_default();
    // The VM's user namespace: PID 1's (the VM init), which is also the runtime's.
    let vm_users: Vec<NsId> = ["/proc/1/ns/user", "/proc/self/ns/user"]
        .iter()
        .filter_map(|p| path_id(p))
        .collect();
    let mut live: Option<Vec<Live>> = None;
    let mut joined = Vec::new();
    let mut facts = Vec::new();
    let mut owners = Vec::new();
    for ns in &namespaces {
        let Some(path) = &ns.path else { continue };
        if ALWAYS_OWN.contains(&ns.kind.as_str()) {
            continue;
        }
        let Some((kind, file, flag)) = SHARED.iter().find(|(k, _, _)| *k == ns.kind) else {
            return Err(format!(
                "joining a {} namespace by path ({path}) is not supported by eci-runc; remove its path from the spec",
                ns.kind
            ));
        };
        let what = format!("{kind} namespace {path}");
        // O_NONBLOCK: a FIFO planted at the path must not hang the runtime.
        let fd = sys::open(Path::new(path), libc::O_RDONLY | libc::O_NONBLOCK, 0)?;
        // Only then the namespace ioctls: on a device node they would reach its driver.
        if fs_type(&fd) != Some(NSFS_MAGIC) {
            return Err(format!(
                "{path} is not a namespace file (/proc/PID/ns/{file} or a bind mount of one)"
            ));
        }
        let ty = sys::ns::namespace_type(fd.as_fd())
            .map_err(|e| sys::nix_err(format!("{path} is not a namespace file"), e))?;
        if ty != *flag {
            return Err(format!("{path} is not a {kind} namespace"));
        }
        let id = fd_id(&fd)?;
        let vm_itself = [
            format!("/proc/1/ns/{file}"),
            format!("/proc/self/ns/{file}"),
        ]
        .iter()
        .any(|p| path_id(p) == Some(id));
        let owner_fd = sys::ns::owning_user_namespace(fd.as_fd())
            .map_err(|e| sys::nix_err(format!("find the user namespace owning the {what}"), e))?;
        let owner_id = fd_id(&owner_fd)?;
        let owner = if vm_itself {
            NsOwner::VmItself
        } else if vm_users.contains(&owner_id) {
            NsOwner::Vm
        } else {
            if live.is_none() {
                live = Some(live_containers(alloc)?);
            }
            let members: Vec<&Live> = live
                .iter()
                .flatten()
                .filter(|l| l.userns == owner_id)
                .collect();
            match members.first() {
                None => NsOwner::Unknown,
                Some(first) => {
                    if let Some(other) = members.iter().find(|m| m.range != first.range) {
                        return Err(format!(
                            "containers {} and {} share a user namespace but the allocator gives them different id ranges; delete and recreate them",
                            first.who, other.who
                        ));
                    }
                    NsOwner::Group(Group {
                        userns: owner_id,
                        range: first.range,
                        member: first.who.clone(),
                        same_namespace: members
                            .iter()
                            .filter(|m| m.ns.contains(&(*kind, id)))
                            .map(|m| m.who.id.clone())
                            .collect(),
                    })
                }
            }
        };
        facts.push(JoinedNamespace {
            kind: kind.to_string(),
            path: path.clone(),
            owner: owner.clone(),
        });
        owners.push((owner_id, owner_fd));
        joined.push(Joined {
            kind: kind.to_string(),
            flag: *flag,
            fd,
            what,
            vm_owned: owner == NsOwner::Vm,
        });
    }
    let plan = plan_sharing(&facts).map_err(crate::audit::refusal)?;
    let userns = match &plan.user {
        UserNamespacePlan::Own => None,
        UserNamespacePlan::Join { userns, .. } => owners
            .into_iter()
            .find(|(id, _)| id == userns)
            .map(|(_, fd)| fd),
    };
    Ok(Sharing {
        joined,
        plan,
        userns,
    })
}

impl Sharing {
    /// The container's range: a new exclusive one, or the group's, counted as one more member
    /// (SPEC U1, U2).
    pub fn allocate(&self, alloc: &Allocator, id: &str, root: &Path) -> Result<IdRange> {
        match &self.plan.user {
            UserNamespacePlan::Own => Ok(alloc.allocate(id, root)?),
            UserNamespacePlan::Join { range, member, .. } => {
                Ok(alloc.join(id, root, (&member.id, &member.root), *range)?)
            }
        }
    }

    /// The group's user namespace the container joins instead of getting its own.
    pub fn joined_userns(&self) -> Option<NsId> {
        match &self.plan.user {
            UserNamespacePlan::Own => None,
            UserNamespacePlan::Join { userns, .. } => Some(*userns),
        }
    }

    /// In the container's first stage (still VM root, in the VM's user namespace): enter the
    /// joined namespaces and the container's user namespace, in the order the kernel's
    /// ownership rules need.
    ///
    /// 1. Namespaces the VM's user namespace owns, while the process still has power there.
    ///    A sysfs or mqueue the container needs for them is made now ([`premade_mounts`]):
    ///    later, in a user namespace of its own, the kernel refuses it.
    /// 2. The user namespace: the group's (`setns`) or a new one (`unshare`; P writes the map).
    /// 3. The group's namespaces, from inside their owner. The mount namespace is created
    ///    afterwards by the caller, so it belongs to the group's user namespace, where the
    ///    container may mount `/proc` for a shared pid namespace and sysfs for a shared
    ///    network namespace.
    ///
    /// Returns the premade mounts with the index of the spec mount each one stands for.
    pub fn enter(&self, spec: &Spec) -> Result<Vec<(usize, OwnedFd)>> {
        for j in self.joined.iter().filter(|j| j.vm_owned) {
            sys::setns(j.fd.as_fd(), j.flag, &j.what)?;
        }
        let premade = premade_mounts(spec, &self.joined);
        match &self.userns {
            Some(u) => sys::setns(
                u.as_fd(),
                libc::CLONE_NEWUSER,
                "user namespace owning the shared namespaces",
            )?,
            None => sys::unshare(libc::CLONE_NEWUSER)?,
        }
        for j in self.joined.iter().filter(|j| !j.vm_owned) {
            sys::setns(j.fd.as_fd(), j.flag, &j.what)?;
        }
        Ok(premade)
    }
}

/// For a network or ipc namespace the VM's user namespace owns, the sysfs or mqueue the spec
/// mounts, made by VM root inside that namespace: the kernel lets only a process with
/// CAP_SYS_ADMIN in the namespace's owner mount them, which the container never has. sysfs is
/// always read-only (its files belong to VM root, which the container cannot write anyway).
/// A failure leaves the mount to the container's init, whose fallback says what it got.
fn premade_mounts(spec: &Spec, joined: &[Joined]) -> Vec<(usize, OwnedFd)> {
    let mut out = Vec::new();
    for j in joined.iter().filter(|j| j.vm_owned) {
        let fstype = match j.kind.as_str() {
            "network" => "sysfs",
            "ipc" => "mqueue",
            _ => continue,
        };
        let Some(i) = spec
            .mounts
            .iter()
            .position(|m| m.kind.as_deref() == Some(fstype))
        else {
            continue;
        };
        let (flags, _, _) = rootfs::parse_options(&spec.mounts[i].options);
        let mut attrs = 0u32;
        for (ms, at) in [
            (libc::MS_RDONLY, MOUNT_ATTR_RDONLY),
            (libc::MS_NOSUID, MOUNT_ATTR_NOSUID),
            (libc::MS_NODEV, MOUNT_ATTR_NODEV),
            (libc::MS_NOEXEC, MOUNT_ATTR_NOEXEC),
        ] {
            if flags & ms != 0 {
                attrs |= at;
            }
        }
        if fstype == "sysfs" {
            attrs |= MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
        }
        if let Ok(fd) = detached_mount(fstype, attrs) {
            out.push((i, fd));
        }
    }
    out
}

/// A new, detached instance of `fstype` for the current namespaces (`fsopen` + `fsmount`).
fn detached_mount(fstype: &str, attrs: u32) -> Result<OwnedFd> {
    let fs = FsContext::open(fstype).map_err(|e| format!("fsopen {fstype}: {e}"))?;
    // The source /proc/mounts shows, as for a `mount -t sysfs sysfs /sys`.
    fs.set("source", Some(fstype))
        .map_err(|e| format!("name the {fstype} source: {e}"))?;
    fs.create().map_err(|e| format!("create {fstype}: {e}"))?;
    fs.mount(attrs)
        .map_err(|e| format!("fsmount {fstype}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use eci_policy::spec::{Linux, Namespace};

    fn spec_joining(kind: &str, path: &str) -> Spec {
        Spec {
            linux: Some(Linux {
                namespaces: vec![Namespace {
                    kind: kind.into(),
                    path: Some(path.into()),
                }],
                ..Linux::default()
            }),
            ..Spec::default()
        }
    }

    fn root() -> bool {
        let root = nix::unistd::geteuid().is_root();
        if !root {
            assert!(std::env::var_os("CI").is_none(), "CI runs as root");
            eprintln!("skipped: opening PID 1's namespaces needs root");
        }
        root
    }

    /// SPEC A6: the VM's own network namespace (PID 1's) stays refused, found by its identity.
    #[test]
    fn joining_the_vms_network_namespace_is_refused() {
        if !root() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let a = Allocator::new(d.path(), 100_000, 4);
        // Some sandboxes deny even root PID 1's namespace files (the development machine's
        // PID 1 is its hypervisor agent); eci-init as PID 1 of the VM does not. The runtime's
        // own namespace is the VM's too (eci-runc runs in the VM init's namespaces).
        let pid1 = path_id("/proc/1/ns/net").is_some();
        for path in ["/proc/1/ns/net", "/proc/self/ns/net"] {
            let e = resolve(&spec_joining("network", path), &a)
                .err()
                .unwrap_or_else(|| panic!("{path} was accepted"));
            if path.starts_with("/proc/1/") && !pid1 {
                assert!(e.contains("open /proc/1/ns/net"), "{path}: {e}");
                eprintln!("{path} is not readable here: refused by the kernel ({e})");
                continue;
            }
            assert!(
                e.contains("sharing the VM's network namespace is refused"),
                "{path}: {e}"
            );
            println!("{path}: {e}");
        }
        // Through a link of its own (a path text that names no /proc file).
        let link = d.path().join("vm-net");
        let vm_net = if pid1 {
            "/proc/1/ns/net".to_string()
        } else {
            format!("/proc/{}/ns/net", std::process::id())
        };
        std::os::unix::fs::symlink(&vm_net, &link).unwrap();
        let e = resolve(&spec_joining("network", link.to_str().unwrap()), &a)
            .err()
            .unwrap();
        assert!(e.contains("VM's network namespace"), "{e}");
        assert!(!d.path().join("ranges.json").exists(), "nothing allocated");
    }

    #[test]
    fn wrong_kinds_and_non_namespaces_are_refused() {
        if !root() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let a = Allocator::new(d.path(), 100_000, 4);
        let e = resolve(&spec_joining("pid", "/proc/self/ns/net"), &a)
            .err()
            .unwrap();
        assert!(e.contains("not a pid namespace"), "{e}");
        let e = resolve(&spec_joining("network", "/etc/passwd"), &a)
            .err()
            .unwrap();
        assert!(e.contains("not a namespace file"), "{e}");
        let e = resolve(&spec_joining("time", "/proc/self/ns/time"), &a)
            .err()
            .unwrap();
        assert!(e.contains("time namespace"), "{e}");
        // Paths of kinds every container gets anew are left to the policy (dropped, warned).
        let s = resolve(&spec_joining("mount", "/proc/self/ns/mnt"), &a).unwrap();
        assert!(s.joined.is_empty() && s.userns.is_none());
    }
}
