//! The container's filesystem (SPEC U4): the image rootfs from idmapped layers, the spec's
//! mounts and the safe device set (P3), built as container root inside the container's user
//! namespace and handed over as one detached tree; then, in the init's mount namespace, which
//! the VM's user namespace owns, pivot_root and the masked/read-only paths (P4, F4), and the
//! copy into the container's user namespace that locks them all (M2, [`lock_mounts`]).

use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{symlink, DirBuilderExt};
use std::path::{Component, Path, PathBuf};

use eci_policy::spec::{Mount, Spec};
use eci_policy::NAMESPACED_PROC_SYS;

use crate::cgroup::Cgroup;
use crate::sys::mountfd::FsContext;
use crate::sys::{self, Result};

/// Attach detached mount `fd` on the mount point `target_fd` refers to.
pub fn attach_at_fd(fd: RawFd, target_fd: RawFd) -> Result<()> {
    sys::mountfd::move_mount_onto(fd, target_fd)
        .map_err(|e| format!("attach the container rootfs: {e}"))
}

/// The container's rootfs overlay over its idmapped layers, created by a short-lived helper
/// process in a private mount namespace of the VM, as VM root but with file-system ids set to
/// container root's VM id (`fs_id`). Returns the detached overlay mount.
///
/// Why these credentials: overlay does its internal work (work folder, copy-up, whiteouts,
/// opaque markers) with the credentials of whoever created it.
/// - Created inside the container's user namespace, it cannot read or write `trusted.overlay.*`
///   xattrs, which are reserved to the VM's init namespace: opaque folders of the image's layers
///   are ignored (a deleted lower folder's files show through again) and removing a merged
///   folder fails with EIO. With `userxattr` it would use `user.overlay.*`, which dockerd does
///   not read when it turns an upper layer into an image layer (`docker commit`, `build`).
/// - Created by plain VM root (fs id 0), every operation in the idmapped work folder fails
///   with EOVERFLOW, because id 0 has no mapping there, and overlay falls back to read-only.
///
/// VM root holding its capabilities with file-system id = container root's VM id gets both:
/// `trusted.*` markers exactly as dockerd writes and reads them, and work files that the
/// idmapped upper layer stores on disk as VM id 0, which is what docker expects. `layers` are
/// the idmapped lower layers (top first) and the last descriptor is the idmapped folder holding
/// `upper` and `work`; they are attached below `stage` in the helper's namespace only (overlay
/// takes its own private copies), so nothing is ever mounted in the VM's namespace.
pub fn container_overlay(
    stage: &Path,
    layers: &[OwnedFd],
    upper: &str,
    work: &str,
    fs_id: u32,
) -> Result<OwnedFd> {
    if layers.len() < 2 || !plain_name(upper) || !plain_name(work) {
        return Err("an overlay needs lower layers and plain upper/work folder names".into());
    }
    let (parent, child) = sys::socketpair()?;
    let pid = sys::fork()?;
    if pid == 0 {
        drop(parent);
        let made = (|| -> Result<OwnedFd> {
            sys::unshare(libc::CLONE_NEWNS)?;
            sys::mount(
                None,
                Path::new("/"),
                None,
                libc::MS_REC | libc::MS_PRIVATE,
                None,
            )?;
            std::env::set_current_dir(stage)
                .map_err(|e| format!("enter {}: {e}", stage.display()))?;
            let (upper_fd, lowers) = layers.split_last().expect("checked above");
            for (i, fd) in lowers.iter().enumerate() {
                sys::move_mount(fd.as_raw_fd(), Path::new(&format!("l{i}")))?;
            }
            sys::move_mount(upper_fd.as_raw_fd(), Path::new("u"))?;
            sys::set_fs_ids(fs_id)?;
            make_overlay(lowers.len(), upper, work)
        })();
        let sent = match &made {
            Ok(fd) => sys::send(child.as_raw_fd(), b"ok", &[fd.as_raw_fd()]),
            Err(e) => sys::send(child.as_raw_fd(), e.as_bytes(), &[]),
        };
        // Leave the forked helper without running the parent's destructors.
        sys::exit_now(i32::from(sent.is_err() || made.is_err()));
    }
    drop(child);
    let reply = sys::recv(parent.as_raw_fd());
    let _ = sys::waitpid(pid);
    match reply? {
        Some((msg, mut fds)) if msg == b"ok" && fds.len() == 1 => Ok(fds.remove(0)),
        Some((msg, _)) => Err(format!(
            "create the container's overlay: {}",
            String::from_utf8_lossy(&msg)
        )),
        None => Err("create the container's overlay: the helper process died".into()),
    }
}

/// Create an overlay from layers attached below the current folder (`l0`, `l1`, ...,
/// `u/<upper>`, `u/<work>`) with this process's credentials ([`container_overlay`] says which).
/// Returns the detached mount.
fn make_overlay(lowers: usize, upper: &str, work: &str) -> Result<OwnedFd> {
    let fs = FsContext::open("overlay").map_err(|e| format!("fsopen overlay: {e}"))?;
    let lowerdir = (0..lowers)
        .map(|i| format!("l{i}"))
        .collect::<Vec<_>>()
        .join(":");
    let set = |k: &str, v: Option<&str>| -> Result<()> {
        fs.set(k, v).map_err(|e| {
            format!(
                "overlay option {k}={}: {e} ({})",
                v.unwrap_or(""),
                fs.messages()
            )
        })
    };
    set("lowerdir", Some(&lowerdir))?;
    set("upperdir", Some(&format!("u/{upper}")))?;
    set("workdir", Some(&format!("u/{work}")))?;
    // dockerd's own mount of these layers stays in place (index=off there too); an inode index
    // would refuse the shared upper folder with EBUSY on kernels built with index on.
    set("index", Some("off"))?;
    fs.create()
        .map_err(|e| format!("create the container's overlay: {e} ({})", fs.messages()))?;
    fs.mount(0).map_err(|e| format!("fsmount overlay: {e}"))
}

pub fn fchdir(fd: impl AsFd) -> Result<()> {
    nix::unistd::fchdir(fd).map_err(|e| sys::nix_err("fchdir", e))
}

/// `dest` (absolute inside the container) as a path relative to the rootfs (the current
/// folder), with symlinks resolved inside the rootfs so that a malicious image cannot point a
/// mount outside it.
pub fn resolve_in_root(dest: &str) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    let mut todo: Vec<String> = dest
        .split('/')
        .filter(|c| !c.is_empty())
        .map(String::from)
        .rev()
        .collect();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        match c.as_str() {
            "." => continue,
            ".." => {
                out.pop();
                continue;
            }
            _ => {}
        }
        let cand = out.join(&c);
        match fs::symlink_metadata(&cand) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 255 {
                    return Err(format!("too many symlinks resolving {dest}"));
                }
                let target = fs::read_link(&cand).map_err(|e| e.to_string())?;
                let t = target.to_string_lossy().into_owned();
                if t.starts_with('/') {
                    out = PathBuf::new();
                }
                for part in t.split('/').filter(|p| !p.is_empty()).rev() {
                    todo.push(part.to_string());
                }
            }
            _ => out.push(c),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    Ok(out)
}

fn mkdir_all(p: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(p)
        .map_err(|e| format!("create mount point {}: {e}", p.display()))
}

fn ensure_file(p: &Path) -> Result<()> {
    if p.exists() {
        return Ok(());
    }
    if let Some(parent) = p.parent() {
        if !parent.as_os_str().is_empty() {
            mkdir_all(parent)?;
        }
    }
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(p)
        .map(|_| ())
        .map_err(|e| format!("create mount point {}: {e}", p.display()))
}

/// Mount flags and filesystem data of an OCI mount's options.
pub fn parse_options(opts: &[String]) -> (libc::c_ulong, libc::c_ulong, Vec<String>) {
    let mut flags: libc::c_ulong = 0;
    let mut prop: libc::c_ulong = 0;
    let mut data = Vec::new();
    for o in opts {
        match o.as_str() {
            "ro" => flags |= libc::MS_RDONLY,
            "rw" => flags &= !libc::MS_RDONLY,
            "nosuid" => flags |= libc::MS_NOSUID,
            "suid" => flags &= !libc::MS_NOSUID,
            "nodev" => flags |= libc::MS_NODEV,
            "dev" => flags &= !libc::MS_NODEV,
            "noexec" => flags |= libc::MS_NOEXEC,
            "exec" => flags &= !libc::MS_NOEXEC,
            "sync" => flags |= libc::MS_SYNCHRONOUS,
            "dirsync" => flags |= libc::MS_DIRSYNC,
            "noatime" => flags |= libc::MS_NOATIME,
            "nodiratime" => flags |= libc::MS_NODIRATIME,
            "relatime" => flags |= libc::MS_RELATIME,
            "strictatime" => flags |= libc::MS_STRICTATIME,
            "bind" => flags |= libc::MS_BIND,
            "rbind" => flags |= libc::MS_BIND | libc::MS_REC,
            "private" => prop = libc::MS_PRIVATE,
            "rprivate" => prop = libc::MS_PRIVATE | libc::MS_REC,
            "slave" => prop = libc::MS_SLAVE,
            "rslave" => prop = libc::MS_SLAVE | libc::MS_REC,
            "shared" => prop = libc::MS_SHARED,
            "rshared" => prop = libc::MS_SHARED | libc::MS_REC,
            "unbindable" => prop = libc::MS_UNBINDABLE,
            "runbindable" => prop = libc::MS_UNBINDABLE | libc::MS_REC,
            "defaults" | "async" | "atime" | "diratime" | "norelatime" | "nostrictatime" => {}
            other => data.push(other.to_string()),
        }
    }
    (flags, prop, data)
}

fn mount_cgroup(
    rel: &Path,
    flags: libc::c_ulong,
    cg: &Cgroup,
    warn: &mut Vec<String>,
) -> Result<()> {
    let ro = flags & libc::MS_RDONLY;
    let base = flags & (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC);
    mkdir_all(rel)?;
    if cg.mode == crate::cgroup::Mode::V2 {
        return sys::mount(Some("cgroup2"), rel, Some("cgroup2"), base | ro, None);
    }
    sys::mount(Some("tmpfs"), rel, Some("tmpfs"), base, Some("mode=755"))?;
    for d in &cg.dirs {
        let (name, fstype, data) = if d.v2 {
            ("unified".to_string(), "cgroup2", None)
        } else {
            let name = d
                .controllers
                .iter()
                .map(|c| c.trim_start_matches("name=").to_string())
                .collect::<Vec<_>>()
                .join(",");
            let data = if d.controllers.iter().any(|c| c.starts_with("name=")) {
                format!("none,{}", d.controllers.join(","))
            } else {
                d.controllers.join(",")
            };
            (name, "cgroup", Some(data))
        };
        let target = rel.join(&name);
        mkdir_all(&target)?;
        if let Err(e) = sys::mount(
            Some("cgroup"),
            &target,
            Some(fstype),
            base | ro,
            data.as_deref(),
        ) {
            warn.push(format!(
                "cgroup hierarchy {name} not mounted in the container: {e}"
            ));
            let _ = fs::remove_dir(&target);
        }
    }
    if ro != 0 {
        sys::mount(
            None,
            rel,
            None,
            libc::MS_REMOUNT | libc::MS_BIND | base | ro,
            None,
        )?;
    }
    Ok(())
}

/// The spec's mounts, relative to the rootfs (the current folder). `binds[i]` is the detached,
/// already idmapped tree P prepared for mount `i`.
pub fn mount_all(
    spec: &Spec,
    binds: &mut std::collections::BTreeMap<usize, (OwnedFd, bool)>,
    cg: &Cgroup,
    warn: &mut Vec<String>,
) -> Result<()> {
    for (i, m) in spec.mounts.iter().enumerate() {
        let rel = resolve_in_root(&m.destination)?;
        if let Some((fd, is_dir)) = binds.remove(&i) {
            if is_dir {
                mkdir_all(&rel)?;
            } else {
                ensure_file(&rel)?;
            }
            sys::move_mount(fd.as_raw_fd(), &rel).map_err(|e| {
                format!(
                    "bind mount {} on {}: {e}",
                    m.source.as_deref().unwrap_or(""),
                    m.destination
                )
            })?;
            continue;
        }
        mount_one(m, &rel, cg, warn)?;
    }
    Ok(())
}

fn mount_one(m: &Mount, rel: &Path, cg: &Cgroup, warn: &mut Vec<String>) -> Result<()> {
    let (flags, prop, data) = parse_options(&m.options);
    let kind = m.kind.as_deref().unwrap_or("");
    let data_s = data.join(",");
    let data_opt = if data_s.is_empty() {
        None
    } else {
        Some(data_s.as_str())
    };
    match kind {
        "cgroup" | "cgroup2" => mount_cgroup(rel, flags, cg, warn)?,
        "sysfs" => {
            mkdir_all(rel)?;
            if let Err(e) = sys::mount(Some("sysfs"), rel, Some("sysfs"), flags, None) {
                // The kernel lets only a process with CAP_SYS_ADMIN in the user namespace that
                // owns the network namespace mount its sysfs. A container sharing another
                // container's network namespace is in that user namespace; one in a namespace
                // the VM owns normally gets a sysfs the runtime made (share.rs). Whatever is
                // left gets an empty read-only /sys, never the VM's: that shows the VM's
                // devices and network and carries its cgroup, bpf and debug mounts (SPEC P6).
                warn.push(format!(
                    "sysfs could not be mounted at {} ({e}); the container gets an empty read-only /sys",
                    m.destination
                ));
                empty_readonly_sys(rel)?;
            }
        }
        _ => {
            mkdir_all(rel)?;
            let src = m.source.as_deref().unwrap_or(kind);
            sys::mount(Some(src), rel, Some(kind), flags, data_opt)?;
        }
    }
    if prop != 0 {
        sys::mount(None, rel, None, prop, None)?;
    }
    Ok(())
}

/// An empty read-only tmpfs at `rel` holding only the `fs/cgroup` mount point, which the
/// spec's cgroup mount needs below /sys.
fn empty_readonly_sys(rel: &Path) -> Result<()> {
    let base = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    sys::mount(
        Some("tmpfs"),
        rel,
        Some("tmpfs"),
        base,
        Some("mode=755,size=4k"),
    )?;
    mkdir_all(&rel.join("fs/cgroup"))?;
    sys::mount(
        None,
        rel,
        None,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | base,
        None,
    )
}

/// Device nodes: the default set plus the spec's safe devices, as binds of the VM's nodes (a
/// user namespace cannot mknod, SPEC P3), and the usual /dev symlinks.
/// The VM's node for a safe device is the character device it should be (a /dev that is not
/// devtmpfs could hold anything under those names); otherwise it is not bound.
fn vm_node_is(d: &eci_policy::SafeDevice) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    fs::metadata(d.path).is_ok_and(|m| {
        m.file_type().is_char_device()
            && i64::from(libc::major(m.rdev())) == d.major
            && d.minor == Some(i64::from(libc::minor(m.rdev())))
    })
}

pub fn setup_dev(spec: &Spec) -> Result<()> {
    let dev = resolve_in_root("/dev")?;
    if !dev.is_dir() {
        return Ok(());
    }
    // (VM node, path in the container): the base set at its usual paths, then every safe
    // device the spec lists, at the spec's path (`--device /dev/null:/dev/mynull`). A user
    // namespace cannot mknod, so each is a bind of the VM's node; the spec's fileMode, uid and
    // gid are not applied (the node keeps the VM's mode, and VM root shows as nobody).
    // Devices outside the safe set never get here: eci-policy dropped them with a warning.
    let mut wanted: Vec<(&str, String)> = [
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
        "/dev/tty",
    ]
    .iter()
    .map(|p| (*p, p.to_string()))
    .collect();
    if let Some(l) = &spec.linux {
        for d in &l.devices {
            let Some(s) = eci_policy::bindable_safe_device(&d.kind, d.major, d.minor) else {
                continue;
            };
            if !vm_node_is(s) {
                continue;
            }
            let dest = format!("/{}", d.path.trim_start_matches('/'));
            if !wanted.iter().any(|(_, p)| *p == dest) {
                wanted.push((s.path, dest));
            }
        }
    }
    for (host, dest) in wanted {
        if !Path::new(host).exists() {
            continue;
        }
        let rel = resolve_in_root(&dest)?;
        if fs::symlink_metadata(&rel).is_ok_and(|m| m.file_type().is_symlink()) {
            fs::remove_file(&rel).map_err(|e| e.to_string())?;
        }
        ensure_file(&rel)?;
        sys::mount(Some(host), &rel, None, libc::MS_BIND, None)
            .map_err(|e| format!("device {dest} (the VM's {host}): {e}"))?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let _ = symlink(target, dev.join(name));
    }
    let ptmx = dev.join("ptmx");
    if dev.join("pts/ptmx").exists() {
        let _ = fs::remove_file(&ptmx);
        symlink("pts/ptmx", &ptmx).map_err(|e| format!("/dev/ptmx: {e}"))?;
    }
    Ok(())
}

pub fn pivot(no_pivot: bool) -> Result<()> {
    if no_pivot {
        sys::mount(Some("."), Path::new("/"), None, libc::MS_MOVE, None)?;
        nix::unistd::chroot(".").map_err(|e| sys::nix_err("chroot", e))?;
    } else {
        sys::pivot_root(Path::new("."), Path::new("."))?;
        // The old root now sits on top of "/": detach it without letting the unmount
        // propagate anywhere.
        sys::mount(
            None,
            Path::new("."),
            None,
            libc::MS_SLAVE | libc::MS_REC,
            None,
        )?;
        sys::umount2(Path::new("."), libc::MNT_DETACH)?;
    }
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))
}

fn mount_flags_of(p: &Path) -> libc::c_ulong {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let Ok(st) = statvfs(p) else { return 0 };
    let mut f = 0;
    for (st_flag, ms) in [
        (FsFlags::ST_NOSUID, libc::MS_NOSUID),
        (FsFlags::ST_NODEV, libc::MS_NODEV),
        (FsFlags::ST_NOEXEC, libc::MS_NOEXEC),
        (FsFlags::ST_RDONLY, libc::MS_RDONLY),
    ] {
        if st.flags().contains(st_flag) {
            f |= ms;
        }
    }
    f
}

fn readonly(p: &Path) -> Result<()> {
    sys::mount(
        Some(&p.to_string_lossy()),
        p,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )?;
    let f = mount_flags_of(p);
    sys::mount(
        None,
        p,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | f,
        None,
    )
}

/// After pivot_root: read-only and masked paths (SPEC P4, F4), keeping the namespaced parts of
/// /proc/sys writable.
pub fn harden(spec: &Spec) -> Result<()> {
    let Some(l) = &spec.linux else { return Ok(()) };
    if l.readonly_paths.iter().any(|p| p == "/proc/sys") {
        for p in NAMESPACED_PROC_SYS {
            let p = Path::new(p);
            if p.exists() {
                sys::mount(Some(&p.to_string_lossy()), p, None, libc::MS_BIND, None)?;
            }
        }
    }
    for p in &l.readonly_paths {
        let p = Path::new(p);
        if p.exists() {
            readonly(p)?;
        }
    }
    for p in &l.masked_paths {
        let p = Path::new(p);
        match fs::metadata(p) {
            Ok(m) if m.is_dir() => sys::mount(
                Some("tmpfs"),
                p,
                Some("tmpfs"),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                Some("size=0,mode=555"),
            )?,
            Ok(_) => sys::mount(Some("/dev/null"), p, None, libc::MS_BIND, None)?,
            Err(_) => {}
        }
    }
    Ok(())
}

/// A detached copy of the mount tree at the current folder (the container's rootfs with every
/// mount below it), for the init to attach in its own mount namespace.
///
/// Unbindable mounts (`runbindable` in a spec) are not copied, as for any recursive bind.
pub fn detached_copy() -> Result<OwnedFd> {
    let here = sys::open(Path::new("."), libc::O_PATH | libc::O_DIRECTORY, 0)?;
    sys::mountfd::clone_tree(here.as_fd(), true, Path::new("the container's mount tree"))
}

/// Make the init's mount namespace its own copy (SPEC M2). The caller is in the container's
/// user namespace, in a mount namespace the VM's user namespace owns, where the mount helper
/// pivoted into the container's tree, masked and made read-only what the spec says. Copied
/// into a namespace the container's user namespace owns, the kernel marks every mount
/// MNT_LOCKED (it cannot be unmounted or moved, and is bound only together with what is
/// mounted on it, so a mask cannot be peeled off) and keeps read-only, nosuid, nodev, noexec
/// and atime flags as they are (MNT_LOCK_*), even for a process holding CAP_SYS_ADMIN there.
/// Whatever is mounted when the copy is made is what the container gets: the old root must be
/// detached and the masks in place before.
pub fn lock_mounts() -> Result<()> {
    sys::unshare(libc::CLONE_NEWNS)
}

pub fn readonly_root() -> Result<()> {
    let f = mount_flags_of(Path::new("/"));
    sys::mount(
        None,
        Path::new("/"),
        None,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | f,
        None,
    )
}

/// True for paths that only contain normal components (no `..`), for staged layer names.
pub fn plain_name(p: &str) -> bool {
    let path = Path::new(p);
    path.components().count() == 1 && matches!(path.components().next(), Some(Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o: Vec<String> = [
            "rbind",
            "ro",
            "nosuid",
            "rprivate",
            "mode=755",
            "size=65536k",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (f, p, d) = parse_options(&o);
        assert_eq!(
            f,
            libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY | libc::MS_NOSUID
        );
        assert_eq!(p, libc::MS_PRIVATE | libc::MS_REC);
        assert_eq!(d, vec!["mode=755".to_string(), "size=65536k".to_string()]);
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let old = std::env::current_dir().unwrap();
        fs::create_dir_all(d.path().join("real/dir")).unwrap();
        symlink("/real", d.path().join("abs")).unwrap();
        symlink("../../../../etc", d.path().join("real/up")).unwrap();
        std::env::set_current_dir(d.path()).unwrap();
        let a = resolve_in_root("/abs/dir/x").unwrap();
        let b = resolve_in_root("/real/up/passwd").unwrap();
        let c = resolve_in_root("/../../x").unwrap();
        std::env::set_current_dir(old).unwrap();
        assert_eq!(a, PathBuf::from("real/dir/x"));
        assert_eq!(b, PathBuf::from("etc/passwd"));
        assert_eq!(c, PathBuf::from("x"));
    }

    #[test]
    fn layer_names_are_plain() {
        assert!(plain_name("diff"));
        assert!(!plain_name("../diff"));
        assert!(!plain_name("a/b"));
    }
}
