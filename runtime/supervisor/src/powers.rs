//! What only the supervisor (VM root, in the VM's mount namespace) can do for a container: a new
//! proc for the caller's pid namespace, given the masks of the container's first /proc before
//! the container gets it (SPEC M3, F4). Inside the container the kernel refuses a new proc while
//! the first one has locked masks (it would show what they hide); here it is made outside,
//! masked, and handed as a detached tree to the container's helper, which attaches it onto the
//! judged target. The helper protects the masks like the first ones, and the views: a new proc
//! or sysfs shows the container's views (SPEC F1-F4) where the first does, cloned from the
//! container's own mount namespace, so a fresh `mount -t proc` reads the container's meminfo and
//! writes its own knobs, not the VM's.

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
            // A container cannot mount FUSE (eci_policy::mount_vetting refuses the type), so the
            // FUSE mounts below its first /proc and /sys are the runtime's views.
            t if t == "fuse" || t.starts_with("fuse.") => MaskKind::View {
                path: m.mount_point.clone(),
                dev: (m.major, m.minor),
            },
            // Not a mask (the cgroup hierarchies below /sys/fs/cgroup): a new sysfs shows an
            // empty folder there, as it shows nothing of the cgroups either.
            _ => continue,
        };
        // A view keeps its own read-only flag (a clone of one mount copies it); asking a FUSE
        // mount's statvfs would send the views server a request, and wait for a server that
        // is being restarted.
        let read_only = !matches!(kind, MaskKind::View { .. }) && {
            let how = OpenHow::new()
                .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
                .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
            openat2(root, m.mount_point.as_str(), how)
                .ok()
                .and_then(|fd| nix::sys::statvfs::fstatvfs(&fd).ok())
                .is_none_or(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
        };
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

/// The mount and network namespaces of a container's init, and its root (the place the plan's
/// paths are relative to), kept for its helper's requests.
pub struct ContainerNamespaces {
    pub mnt: OwnedFd,
    pub net: OwnedFd,
    pub root: OwnedFd,
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

fn ns_of_this_thread(kind: &str) -> io::Result<OwnedFd> {
    Ok(nix::fcntl::open(
        format!("/proc/thread-self/ns/{kind}").as_str(),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?)
}

/// `f` run in the container's mount namespace, then back in this thread's private one. Not
/// getting back is an error the caller must not go on from: the tree it attaches to `/` next
/// would land on the container's root.
fn in_container_mounts<T>(
    own: &ContainerNamespaces,
    f: impl FnOnce() -> io::Result<T>,
) -> io::Result<T> {
    use nix::sched::{setns, CloneFlags};
    let private = ns_of_this_thread("mnt")?;
    setns(own.mnt.as_fd(), CloneFlags::CLONE_NEWNS)?;
    let r = f();
    setns(private.as_fd(), CloneFlags::CLONE_NEWNS)?;
    r
}

/// Clones of the views `plan` lists (`MaskKind::View`), by the plan's index, taken in the
/// container's mount namespace: before Linux 6.15 the kernel clones only mounts of the caller's
/// own namespace. The path resolves in the init's root without symlinks; what it reaches must
/// be the root of a mount of the views' filesystem, else the new proc is refused rather than
/// made without a view (it would show the VM's file). Nothing here asks the views server (`sys::statx` takes the
/// cached attributes), so a server being restarted does not hold the request.
fn clone_views(own: &ContainerNamespaces, plan: &[MaskStep]) -> io::Result<Vec<Option<OwnedFd>>> {
    if !plan.iter().any(|s| matches!(s.kind, MaskKind::View { .. })) {
        return Ok(plan.iter().map(|_| None).collect());
    }
    in_container_mounts(own, || {
        // /proc/sys/net lists the sysctls of the looking thread's network namespace, each its
        // own dentry: a view there (nf_conntrack_max) sits on the container's, and from the
        // VM's namespace the path reaches the VM's file beside it. The caller goes on in a
        // container's network namespace anyway (the proc in its own, a sysfs in the caller's).
        nix::sched::setns(own.net.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_SYMLINKS);
        plan.iter()
            .map(|step| {
                let MaskKind::View { path, dev } = &step.kind else {
                    return Ok(None);
                };
                let refused = |why: String| {
                    io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!("the view at {path}: {why}"),
                    )
                };
                let fd = openat2(own.root.as_fd(), path.as_str(), how)
                    .map_err(|e| refused(e.to_string()))?;
                let f = sys::statx(fd.as_fd())?;
                if f.dev != *dev || !f.mount_root {
                    return Err(refused(format!(
                        "no longer the view the container started with (device {}:{}, {} a \
                         mount's root; the views' device is {}:{})",
                        f.dev.0,
                        f.dev.1,
                        if f.mount_root { "is" } else { "not" },
                        dev.0,
                        dev.1
                    )));
                }
                Ok(Some(sys::open_tree_clone(fd.as_fd(), false)?))
            })
            .collect()
    })
}

fn masked_in_own_namespace(
    req: &ProcRequest,
    ns: BorrowedFd<'_>,
    own: &ContainerNamespaces,
    plan: &[MaskStep],
) -> io::Result<(OwnedFd, Vec<String>)> {
    let mut views = clone_views(own, plan)?;
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
        let home_pid = ns_of_this_thread("pid")?;
        in_container_mounts(own, || {
            nix::sched::setns(own.net.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
            sys::fsopen_in_pid_namespace("proc", ns, home_pid.as_fd())
        })?
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
    for (step, view) in plan.iter().zip(views.iter_mut()) {
        // A mask whose place this proc lacks (a pid namespace without it) is not needed.
        let Ok(place) = below(tree.as_fd(), &step.rel) else {
            continue;
        };
        let m = match &step.kind {
            MaskKind::ProcSub(sub) => sys::open_tree_clone_at(tree.as_fd(), sub)?,
            MaskKind::View { .. } => view.take().expect("cloned for every view step"),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan of a first /proc and /sys as eci-runc lays them: masks in mount order, the
    /// views (FUSE) with their place and device, a container's own bind below /proc ignored.
    #[test]
    fn the_plan_replays_masks_and_views_in_mount_order() {
        let info = "\
20 1 0:1 / / rw - overlay o rw
30 20 0:5 / /proc rw - proc proc rw
40 30 0:5 /sys /proc/sys ro - proc proc rw
41 30 0:8 / /proc/acpi ro - tmpfs t rw
42 30 0:45 /c1/proc/meminfo /proc/meminfo rw - fuse.eci-views eci-views rw
43 40 0:45 /c1/sysctl/vm.overcommit_memory /proc/sys/vm/overcommit_memory rw - fuse.eci-views eci-views rw
44 30 0:2 /null /proc/kcore rw - devtmpfs udev rw
45 30 0:9 /x /proc/driver rw - ext4 /dev/vda rw
50 20 0:6 / /sys ro - sysfs sysfs ro
51 50 0:8 / /sys/firmware ro - tmpfs t rw
52 50 0:45 /c1/dmi /sys/class/dmi ro - fuse.eci-views eci-views rw
";
        let mounts = eci_policy::parse_mountinfo(info);
        let dir = std::env::temp_dir();
        let root = std::fs::File::open(&dir).unwrap();
        let proc = proc_plan("proc", "/proc", &mounts, root.as_fd());
        let kinds: Vec<(&str, MaskKind)> = proc
            .iter()
            .map(|s| (s.rel.as_str(), s.kind.clone()))
            .collect();
        let view = |p: &str| MaskKind::View {
            path: p.into(),
            dev: (0, 45),
        };
        assert_eq!(
            kinds,
            [
                ("sys", MaskKind::ProcSub("sys".into())),
                ("acpi", MaskKind::Tmpfs),
                ("meminfo", view("/proc/meminfo")),
                (
                    "sys/vm/overcommit_memory",
                    view("/proc/sys/vm/overcommit_memory")
                ),
                ("kcore", MaskKind::DevNull),
            ]
        );
        let sys = proc_plan("sysfs", "/sys", &mounts, root.as_fd());
        let rels: Vec<&str> = sys.iter().map(|s| s.rel.as_str()).collect();
        assert_eq!(rels, ["firmware", "class/dmi"]);
        assert!(matches!(&sys[1].kind, MaskKind::View { path, .. } if path == "/sys/class/dmi"));
    }
}
