//! What only the supervisor (VM root, in the VM's mount namespace) can do for a container: a new
//! proc for the caller's pid namespace, given the masks of the container's first /proc before
//! the container gets it (SPEC M3, F4). Inside the container the kernel refuses a new proc while
//! the first one has locked masks (it would show what they hide); here it is made outside,
//! masked, and handed as a detached tree to the container's helper, which attaches it onto the
//! judged target. The helper protects the masks like the first ones.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use eci_policy::mount_vetting::attr;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};

use crate::proto::{MaskKind, MaskStep, ProcReply, ProcRequest};
use crate::sys;

/// The masks of the container's first /proc, read from its init's mounts: every mount below
/// the init's `/proc`, in mount order, with its kind and whether it is read-only.
pub fn proc_plan(
    fstype: &str,
    at: &str,
    mounts: &[eci_policy::MountEntry],
    root: BorrowedFd<'_>,
) -> Vec<MaskStep> {
    let Some(proc) = mounts
        .iter()
        .find(|m| m.fstype == fstype && m.mount_point == at)
    else {
        return Vec::new();
    };
    let mut below = std::collections::HashSet::from([proc.id]);
    let mut plan = Vec::new();
    for m in mounts {
        if !below.contains(&m.parent) {
            continue;
        }
        below.insert(m.id);
        let Some(rel) = m.mount_point.strip_prefix(&format!("{at}/")) else {
            continue;
        };
        // On a cgroup v1 machine runc mounts a tmpfs on /sys/fs/cgroup to hold the hierarchies
        // (skipped below); it hides nothing of sysfs (whose fs/cgroup is an empty folder), so a
        // new sysfs does not get it as a mask, and a runc inside the container (Docker in
        // Docker) may lay its own tmpfs there.
        if fstype == "sysfs" && rel == "fs/cgroup" && m.fstype == "tmpfs" {
            continue;
        }
        let kind = match m.fstype.as_str() {
            "proc" | "sysfs" => MaskKind::ProcSub(m.root.trim_start_matches('/').to_string()),
            "tmpfs" => MaskKind::Tmpfs,
            "devtmpfs" => MaskKind::DevNull,
            // Not a mask (the cgroup hierarchies below /sys/fs/cgroup): a new sysfs shows an
            // empty folder there, as it shows nothing of the cgroups either.
            _ => continue,
        };
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let read_only = openat2(root, m.mount_point.as_str(), how)
            .ok()
            .and_then(|fd| nix::sys::statvfs::fstatvfs(&fd).ok())
            .is_none_or(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
        plan.push(MaskStep {
            rel: rel.to_string(),
            kind,
            read_only,
        });
    }
    plan
}

fn below(tree: BorrowedFd<'_>, rel: &str) -> io::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    Ok(openat2(tree, rel, how)?)
}

/// The mount and network namespaces of a container's init, kept for its helper's requests.
pub struct ContainerNamespaces {
    pub mnt: OwnedFd,
    pub net: OwnedFd,
}

/// A detached proc (or sysfs) for the caller's namespace `ns` with `plan`'s masks on it, built
/// in a mount namespace of its own by a thread that lives for this request: before Linux 6.15
/// the kernel lays mounts only on places in the caller's mount namespace and clones only from
/// there, so the new tree is attached (in a private copy of the VM's namespace, whose mounts
/// reach nothing else and go with the thread), masked, and handed out as a detached clone.
pub fn masked_proc(
    req: &ProcRequest,
    ns: BorrowedFd<'_>,
    own: &ContainerNamespaces,
    plan: &[MaskStep],
) -> io::Result<(OwnedFd, Vec<String>)> {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
            nix::mount::mount(
                None::<&str>,
                "/",
                None::<&str>,
                nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                None::<&str>,
            )?;
            masked_in_own_namespace(req, ns, own, plan)
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the proc builder thread panicked")))
    })
}

fn masked_in_own_namespace(
    req: &ProcRequest,
    ns: BorrowedFd<'_>,
    own: &ContainerNamespaces,
    plan: &[MaskStep],
) -> io::Result<(OwnedFd, Vec<String>)> {
    let fs = if req.fstype == "sysfs" {
        // sysfs takes the network namespace of whoever opens the context; this thread is
        // about to end, so it stays in the caller's.
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
        sys::fsopen("sysfs")?
    } else {
        // The child that opens the context is, for its few microseconds, a process the
        // container sees, and /proc/PID/mountinfo and /proc/PID/net need no ptrace right: it
        // is made in the container's own mount and network namespaces, so they show nothing
        // of the VM. This thread then returns to its private copy of the VM's namespace.
        use nix::sched::{setns, CloneFlags};
        let ns_of_this_thread = |kind: &str| {
            nix::fcntl::open(
                format!("/proc/thread-self/ns/{kind}").as_str(),
                OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
        };
        let private = ns_of_this_thread("mnt")?;
        let home_pid = ns_of_this_thread("pid")?;
        setns(own.mnt.as_fd(), CloneFlags::CLONE_NEWNS)?;
        setns(own.net.as_fd(), CloneFlags::CLONE_NEWNET)?;
        let fs = sys::fsopen_in_pid_namespace("proc", ns, home_pid.as_fd());
        setns(private.as_fd(), CloneFlags::CLONE_NEWNS)?;
        fs?
    };
    for (k, v) in &req.options {
        // The vetting refused it already; checked again where the option would take effect.
        if !eci_policy::mount_vetting::kernel_view_option_allowed(&req.fstype, k) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        sys::fsconfig_set(fs.as_fd(), k, v.as_deref())?;
    }
    sys::fsconfig_cmd(fs.as_fd(), sys::FSCONFIG_CMD_CREATE)?;
    let tree = sys::fsmount(fs.as_fd(), req.attrs)?;
    // The source of /dev/null masks, opened before the tree covers the root.
    let null = nix::fcntl::open(
        "/dev/null",
        OFlag::O_PATH | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    // On the namespace's root: the tree's place only has to be in this namespace.
    sys::move_mount_to_path(tree.as_fd(), "/")?;
    let mut masks = Vec::new();
    for step in plan {
        // A mask whose place this proc lacks (a pid namespace without it) is not needed.
        let Ok(place) = below(tree.as_fd(), &step.rel) else {
            continue;
        };
        let m = match &step.kind {
            MaskKind::ProcSub(sub) => sys::open_tree_clone_at(tree.as_fd(), sub)?,
            MaskKind::DevNull => sys::open_tree_clone(null.as_fd(), false)?,
            MaskKind::Tmpfs => {
                let t = sys::fsopen("tmpfs")?;
                sys::fsconfig_set(t.as_fd(), "size", Some("0"))?;
                sys::fsconfig_set(t.as_fd(), "mode", Some("555"))?;
                sys::fsconfig_cmd(t.as_fd(), sys::FSCONFIG_CMD_CREATE)?;
                sys::fsmount(t.as_fd(), attr::NOSUID | attr::NODEV | attr::NOEXEC)?
            }
        };
        if step.read_only {
            sys::mount_setattr(m.as_fd(), true, attr::RDONLY, 0, 0)?;
        } else if matches!(step.kind, MaskKind::ProcSub(_)) {
            // A clone keeps the read-only flag of what it copied: the writable /proc/sys/net
            // laid again below the read-only /proc/sys is cloned from that read-only copy, and
            // is writable in the first proc, so here too (runc writes net sysctls there).
            sys::mount_setattr(m.as_fd(), false, 0, attr::RDONLY, 0)?;
        }
        sys::move_mount(m.as_fd(), place.as_fd())?;
        masks.push(step.rel.clone());
    }
    Ok((sys::open_tree_clone(tree.as_fd(), true)?, masks))
}

/// Serve one helper's requests for new procs until it goes.
pub fn serve(
    sock: OwnedFd,
    own: ContainerNamespaces,
    proc_plan: Vec<MaskStep>,
    sys_plan: Vec<MaskStep>,
) {
    loop {
        let Ok(Some((b, fds))) = sys::recv(sock.as_raw_fd()) else {
            return;
        };
        let (reply, tree) = match (serde_json::from_slice::<ProcRequest>(&b), fds.first()) {
            (Ok(req), Some(ns)) => match masked_proc(
                &req,
                ns.as_fd(),
                &own,
                if req.fstype == "sysfs" {
                    &sys_plan
                } else {
                    &proc_plan
                },
            ) {
                Ok((tree, masks)) => (
                    ProcReply {
                        errno: 0,
                        note: String::new(),
                        masks,
                    },
                    Some(tree),
                ),
                Err(e) => (
                    ProcReply {
                        errno: e.raw_os_error().unwrap_or(libc::EPERM),
                        note: e.to_string(),
                        masks: Vec::new(),
                    },
                    None,
                ),
            },
            _ => (
                ProcReply {
                    errno: libc::EINVAL,
                    note: "malformed proc request".into(),
                    masks: Vec::new(),
                },
                None,
            ),
        };
        let raw: Vec<i32> = tree.iter().map(|t| t.as_raw_fd()).collect();
        if sys::send(
            sock.as_raw_fd(),
            &serde_json::to_vec(&reply).expect("serializable"),
            &raw,
        )
        .is_err()
        {
            return;
        }
    }
}
