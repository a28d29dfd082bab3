//! Bind sources, opened once below the folder that bounds them (SPEC B1-B3; issue 9).
//!
//! The policy decides on a source's path (`eci_policy::check_bind_source`). Between that
//! decision and the mount, anyone who can write inside a shared folder (a container that has
//! it bound, the host user) could swap a component of the path for a symlink to a VM folder.
//! So the path is never looked up from `/` again: the runtime opens the folder that bounds the
//! source ([`Anchor`]: the allowed share prefix, dockerd's folder for this container, the
//! volume's `_data`), walks the rest below it with `openat2(RESOLVE_IN_ROOT)`, decides on the
//! opened descriptor, and clones that descriptor into the container's mount
//! (`sys::mountfd::clone_tree`). What is mounted is what was decided on.
//!
//! Symlinks inside a share are resolved as if the share were `/`: a link to `/etc` inside
//! `<share>` reaches `<share>/etc`, never the VM's `/etc`. When that in-share place does not
//! exist but the link would lead outside, the refusal names the source with SPEC B2's words
//! rather than "no such file".

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use eci_policy::{
    check_bind_source, donor_files, named_volume_data, normalize_path, restricted_mount_message,
    BindContext, BindKind, Donor, Policy, PolicyError, ShareFolder, VolumeDataKind,
};

use crate::sys::mountfd::{self, Scope};
use crate::sys::{self, Result};

/// The folder a bind source is opened below, and the rest of its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anchor {
    /// A folder others can write into (an allowed share prefix, or dockerd's
    /// `<data-root>/containers/<id>`): `rest` is walked below `root` and cannot leave it. `root`
    /// itself and the folders above it are VM paths only VM root can change.
    Below { root: String, rest: String },
    /// An allowed share prefix: like `Below`, but the prefix itself is opened without following
    /// any symlink (prefixes nest, and a writer of an enclosing share could replace an inner
    /// prefix by a link to `/`).
    Share { root: String, rest: String },
    /// A named volume's `<data-root>/volumes/<name>/_data`: the folder is judged by the mount
    /// it is on (dockerd mounts whatever the volume's options say there), then `rest` is walked
    /// below it.
    Volume {
        data_root: String,
        data: String,
        rest: String,
    },
    /// A VM-owned file no container can change (an engine socket, docker-init), opened as the
    /// VM resolves it. `init` says which, for the check on the opened file.
    VmOwned { path: String, init: bool },
}

/// `path` below `root` (both normalised, absolute), byte for byte and whole components only:
/// `Some("")` for the root itself. The policy's prefix check also folds Windows spellings
/// (`\`, case); a source that passes only that way has no exact root to be opened below, and
/// [`anchor`] refuses it.
fn rest_below(path: &str, root: &str) -> Option<String> {
    if root == "/" {
        return path.strip_prefix('/').map(str::to_string);
    }
    if path == root {
        return Some(String::new());
    }
    path.strip_prefix(root)?
        .strip_prefix('/')
        .map(str::to_string)
}

/// Where to open the (normalised) bind source `path` that the policy allowed as `kind`, mirroring
/// the cases of `check_bind_source`. `None` refuses it (SPEC B2).
pub fn anchor(path: &str, kind: BindKind, policy: &Policy, container_id: &str) -> Option<Anchor> {
    match kind {
        BindKind::HostShare => policy
            .allowed_bind_prefixes
            .iter()
            .map(|p| normalize_path(p))
            .filter_map(|p| rest_below(path, &p).map(|rest| (p, rest)))
            // The longest prefix bounds the walk most tightly.
            .max_by_key(|(p, _)| p.len())
            .map(|(root, rest)| Anchor::Share { root, rest }),
        BindKind::EngineInternal => {
            let own_id = !container_id.is_empty()
                && !container_id.contains('/')
                && container_id != "."
                && container_id != "..";
            for root in &policy.engine_data_roots {
                let root = normalize_path(root);
                let own = format!("{}/containers/{container_id}", root.trim_end_matches('/'));
                if let Some(rest) = rest_below(path, &own).filter(|r| own_id && !r.is_empty()) {
                    return Some(Anchor::Below { root: own, rest });
                }
            }
            if let Some((data_root, data)) = named_volume_data(path, &policy.engine_data_roots) {
                let rest = rest_below(path, &data)?;
                return Some(Anchor::Volume {
                    data_root,
                    data,
                    rest,
                });
            }
            policy
                .init_binaries
                .iter()
                .any(|b| normalize_path(b) == path)
                .then(|| Anchor::VmOwned {
                    path: path.to_string(),
                    init: true,
                })
        }
        BindKind::EngineSocket => Some(Anchor::VmOwned {
            path: path.to_string(),
            init: false,
        }),
        // A BuildKit step's file is opened in BuildKit's executor folder; a cache, context or
        // `from=` mount below its layer folder, so a symlink the build wrote there stays inside
        // (SPEC D3). The opened file's mount is checked in `open_source`.
        BindKind::BuildStep => {
            let data_root = policy.build_step.as_deref()?;
            let root = match eci_policy::build_step_source(path, data_root)? {
                eci_policy::BuildSource::ExecutorFile => format!(
                    "{}/buildkit/executor",
                    normalize_path(data_root).trim_end_matches('/')
                ),
                eci_policy::BuildSource::LayerDiff { layer_dir } => layer_dir,
                eci_policy::BuildSource::LayerMerged { merged } => merged,
                eci_policy::BuildSource::TempMount { mount_point } => mount_point,
                eci_policy::BuildSource::Secret { tmpfs } => tmpfs,
            };
            let rest = rest_below(path, &root)?;
            Some(Anchor::Below { root, rest })
        }
    }
}

/// A file dockerd shares from the engine folder of a container whose namespace this one
/// shares (`eci_policy::donor_files`): opened below that folder, like the container's own.
fn donor_anchor(path: &str, policy: &Policy, donors: &[Donor]) -> Option<Anchor> {
    for root in &policy.engine_data_roots {
        let root = normalize_path(root);
        for d in donors {
            let base = format!(
                "{}/containers/{}",
                root.trim_end_matches('/'),
                d.container_id
            );
            let Some(rest) = rest_below(path, &base) else {
                continue;
            };
            let shared = donor_files(&d.kind).iter().any(|(file, below)| {
                rest == *file || (*below && rest.starts_with(&format!("{file}/")))
            });
            if shared && !d.container_id.contains('/') {
                return Some(Anchor::Below { root: base, rest });
            }
        }
    }
    None
}

/// An opened bind source, ready to be cloned into a mount.
#[derive(Debug)]
pub struct Source {
    /// `O_PATH` handle on the very file or folder that gets mounted.
    pub fd: OwnedFd,
    /// Whether it is a folder (the mount point to create), from the opened file itself.
    pub is_dir: bool,
}

/// Open the bind source `src` (as the spec gives it) of a mount at `destination`, deciding on
/// the opened file. `donors` are the containers whose namespaces this one shares (SPEC U2,
/// B3). Refusals carry SPEC B2's message and are noted for the audit log.
pub fn open_source(
    src: &str,
    destination: &str,
    policy: &Policy,
    container_id: &str,
    donors: &[Donor],
) -> Result<Source> {
    let ctx = BindContext {
        container_id: Some(container_id),
        destination: Some(destination),
        donors,
    };
    let kind = check_bind_source(src, policy, &ctx).map_err(crate::audit::refusal)?;
    let path = normalize_path(src);
    let donor_anchor = (kind == BindKind::EngineInternal)
        .then(|| donor_anchor(&path, policy, donors))
        .flatten();
    let anchor = donor_anchor
        .or_else(|| anchor(&path, kind, policy, container_id))
        .ok_or_else(|| crate::audit::refusal(PolicyError::RestrictedMount(src.to_string())))?;
    let fd = match anchor {
        Anchor::Share { root, rest } => {
            let root_fd = mountfd::open_no_symlinks(Path::new(&root)).map_err(|e| {
                crate::audit::refuse(
                    &["B2"],
                    format!(
                        "{} (the shared folder {root} must be a folder, not a symlink: {e})",
                        eci_policy::restricted_mount_message(src)
                    ),
                )
            })?;
            walk(&root_fd, &rest, src, &root)?
        }
        Anchor::Below { root, rest } => {
            // A VM path only VM root can change (see `Anchor::Below`): opened as the VM
            // resolves it, since an admin's share prefix or data root may be a symlink.
            let root_fd = sys::open(Path::new(&root), libc::O_PATH | libc::O_DIRECTORY, 0)
                .map_err(|e| format!("bind mount source {src}: {e}"))?;
            walk(&root_fd, &rest, src, &root)?
        }
        Anchor::Volume {
            data_root,
            data,
            rest,
        } => {
            // The `_data` handle that was judged is the one walked below: a mount swapped onto
            // `_data` afterwards is not what gets mounted.
            let (kind, data_fd) = check_volume_data(&data_root, &data, policy)?;
            crate::log::debug(&format!("volume folder {data}: {kind:?}"));
            walk(&data_fd, &rest, src, &data)?
        }
        Anchor::VmOwned { path, init } => {
            let fd = sys::open(Path::new(&path), libc::O_PATH, 0)
                .map_err(|e| format!("bind mount source {src}: {e}"))?;
            if init {
                // docker-init is a VM-owned symlink (Debian: to tini-static); what it leads to
                // must be a program, nothing else goes to /sbin/docker-init.
                if file_type(&fd, src)? != libc::S_IFREG {
                    return Err(format!(
                        "bind mount source {src}: docker-init is not a regular file"
                    ));
                }
            } else {
                // An engine socket path may pass through VM symlinks (/var/run -> /run): the
                // file it reached is checked again by its own path, read from the handle.
                let real = fd_path(&fd, src)?;
                if real != path {
                    check_bind_source(&real, policy, &ctx).map_err(crate::audit::refusal)?;
                }
            }
            fd
        }
    };
    if kind == BindKind::BuildStep {
        // The path said BuildKit's file or dockerd's layer; the opened file must also be on the
        // data root's own mount (nothing mounted over it), a `merged` one dockerd's overlay.
        let data_root = policy.build_step.as_deref().unwrap_or_default();
        crate::build_step::check_opened(&fd, &path, data_root)?;
    }
    let is_dir = file_type(&fd, src)? == libc::S_IFDIR;
    Ok(Source { fd, is_dir })
}

/// Walk `rest` below the opened `root` (`RESOLVE_IN_ROOT`). If nothing is found there but the
/// same walk would have left the root (a symlink to a VM path, with no such place inside the
/// share), the source is refused with B2's words naming it.
fn walk(root: &OwnedFd, rest: &str, src: &str, root_path: &str) -> Result<OwnedFd> {
    let rest = Path::new(if rest.is_empty() { "." } else { rest });
    let e = match mountfd::open_below(root.as_fd(), rest, Scope::InRoot) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    let missing = matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR));
    if missing {
        // Only for the message: the descriptor mounted always comes from the walk above.
        let leaves = mountfd::open_below(root.as_fd(), rest, Scope::Beneath)
            .err()
            .and_then(|b| b.raw_os_error())
            == Some(libc::EXDEV);
        if leaves {
            return Err(crate::audit::refuse(
                &["B2"],
                format!(
                    "{} (a symlink on its path leads outside {root_path})",
                    restricted_mount_message(src)
                ),
            ));
        }
    }
    Err(format!("bind mount source {src}: {e}"))
}

/// The file type bits (`S_IFMT`) of the opened file.
fn file_type(fd: &OwnedFd, what: &str) -> Result<libc::mode_t> {
    let st = nix::sys::stat::fstat(fd)
        .map_err(|e| sys::nix_err(format!("stat bind mount source {what}"), e))?;
    Ok(st.st_mode & libc::S_IFMT)
}

/// The path the kernel has for the opened file (`/proc/self/fd/N`).
fn fd_path(fd: &OwnedFd, what: &str) -> Result<String> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map(|p| p.display().to_string())
        .map_err(|e| format!("bind mount source {what}: {e}"))
}

/// Whether a named volume's `_data` folder may be bound (SPEC B2): dockerd's local driver mounts
/// whatever the volume's options say there (`type=none,o=bind,device=/etc`), so the path proves
/// nothing. The rule (`eci_policy::classify`) looks at the mount the opened folder is on, found
/// by its mount id, not at mount points as text (which stacked or escaped mounts can blur).
/// Returns the judged folder's handle, which is what the source is then opened below.
fn check_volume_data(
    root: &str,
    data_dir: &str,
    policy: &Policy,
) -> Result<(VolumeDataKind, OwnedFd)> {
    let data_path = Path::new(data_dir);
    let data_fd = sys::open_dir_path(data_path)?;
    let data_id = sys::mount_id(&data_fd, data_path)?;
    let root_path = Path::new(root);
    let root_id = sys::mount_id(&sys::open_dir_path(root_path)?, root_path)?;
    let mut shares = Vec::new();
    for prefix in &policy.allowed_bind_prefixes {
        // A prefix that does not exist here (no share mounted) allows nothing, and neither
        // does one that is (or passes through) a symlink: a writer of an enclosing share could
        // point it at `/` and make the whole root filesystem look like a share.
        let path = normalize_path(prefix);
        let Ok(fd) = mountfd::open_no_symlinks(Path::new(&path)) else {
            continue;
        };
        shares.push(ShareFolder {
            mount_id: sys::mount_id(&fd, Path::new(&path))?,
            path,
        });
    }
    // Read after the ids: a mount that went away in between is not found, and refused.
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("read /proc/self/mountinfo: {e}"))?;
    let mounts = eci_policy::parse_mountinfo(&text);
    let kind = eci_policy::classify(data_dir, data_id, root_id, &mounts, &shares)
        .map_err(crate::audit::refusal)?;
    Ok((kind, data_fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt};

    fn policy(share: &str, data: &str) -> Policy {
        Policy {
            allowed_bind_prefixes: vec![share.to_string(), format!("{share}/deeper/")],
            engine_data_roots: vec![data.to_string()],
            ..Policy::default()
        }
    }

    fn below(root: &str, rest: &str) -> Option<Anchor> {
        Some(Anchor::Below {
            root: root.into(),
            rest: rest.into(),
        })
    }

    #[test]
    fn anchors_follow_the_policy_cases() {
        let p = policy("/mnt/host", "/var/lib/docker");
        let share = |path: &str| anchor(path, BindKind::HostShare, &p, "abc");
        let in_share = |root: &str, rest: &str| {
            Some(Anchor::Share {
                root: root.into(),
                rest: rest.into(),
            })
        };
        assert_eq!(share("/mnt/host"), in_share("/mnt/host", ""));
        assert_eq!(share("/mnt/host/c/src"), in_share("/mnt/host", "c/src"));
        // The longest allowed prefix bounds the walk.
        assert_eq!(
            share("/mnt/host/deeper/x"),
            in_share("/mnt/host/deeper", "x")
        );
        // Whole components, byte for byte: Windows folding in the policy's check gives no root.
        assert_eq!(share("/mnt/hostile"), None);
        assert_eq!(share("/MNT/HOST/x\\y"), None);

        let engine = |path: &str, id: &str| anchor(path, BindKind::EngineInternal, &p, id);
        assert_eq!(
            engine("/var/lib/docker/containers/abc/hosts", "abc"),
            below("/var/lib/docker/containers/abc", "hosts")
        );
        assert_eq!(
            engine("/var/lib/docker/containers/abc/mounts/shm", "abc"),
            below("/var/lib/docker/containers/abc", "mounts/shm")
        );
        assert_eq!(engine("/var/lib/docker/containers/abc", "abc"), None);
        assert_eq!(engine("/var/lib/docker/containers/x/hosts", ".."), None);
        assert_eq!(
            engine("/var/lib/docker/volumes/v/_data/sub/dir", "abc"),
            Some(Anchor::Volume {
                data_root: "/var/lib/docker".into(),
                data: "/var/lib/docker/volumes/v/_data".into(),
                rest: "sub/dir".into(),
            })
        );
        assert_eq!(
            engine("/usr/bin/docker-init", "abc"),
            Some(Anchor::VmOwned {
                path: "/usr/bin/docker-init".into(),
                init: true
            })
        );
        assert_eq!(engine("/etc", "abc"), None);
        assert_eq!(
            anchor("/run/docker.sock", BindKind::EngineSocket, &p, "abc"),
            Some(Anchor::VmOwned {
                path: "/run/docker.sock".into(),
                init: false
            })
        );
    }

    /// A temp "share" holding `real/file`, a folder outside it holding `secret`, and links.
    struct Fixture {
        _dir: tempfile::TempDir,
        share: String,
        outside: std::path::PathBuf,
        policy: Policy,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let share = dir.path().join("share");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(share.join("real")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(share.join("real/file"), "share\n").unwrap();
        std::fs::write(outside.join("secret"), "vm\n").unwrap();
        symlink(&outside, share.join("abs")).unwrap();
        symlink("../outside", share.join("up")).unwrap();
        symlink("real", share.join("rel")).unwrap();
        let share = share.display().to_string();
        let policy = policy(&share, "/nonexistent-data-root");
        Fixture {
            _dir: dir,
            share,
            outside,
            policy,
        }
    }

    fn ino(fd: &OwnedFd) -> u64 {
        nix::sys::stat::fstat(fd).unwrap().st_ino
    }

    /// A security review found this: prefixes nest (the fixture allows `share` and
    /// `share/deeper`), so whoever writes into `share` can replace `share/deeper` by a link to a
    /// VM folder. The inner prefix is taken only as the folder it literally is.
    #[test]
    fn a_nested_share_prefix_replaced_by_a_symlink_is_refused() {
        let f = fixture();
        symlink(&f.outside, format!("{}/deeper", f.share)).unwrap();
        for src in [
            format!("{}/deeper/secret", f.share),
            format!("{}/deeper", f.share),
        ] {
            let e = open_source(&src, "/m", &f.policy, "c1", &[])
                .err()
                .unwrap_or_else(|| panic!("{src} was opened through the link"));
            assert!(
                e.starts_with(&format!(
                    "can't mount {src} because it's configured as a restricted host mount"
                )) && e.contains("must be a folder, not a symlink"),
                "{e}"
            );
        }
        // The real folder works.
        std::fs::remove_file(format!("{}/deeper", f.share)).unwrap();
        std::fs::create_dir(format!("{}/deeper", f.share)).unwrap();
        std::fs::write(format!("{}/deeper/ok", f.share), "ok").unwrap();
        open_source(
            &format!("{}/deeper/ok", f.share),
            "/m",
            &f.policy,
            "c1",
            &[],
        )
        .unwrap();
    }

    #[test]
    fn share_sources_open_inside_the_share() {
        let f = fixture();
        let s = open_source(&format!("{}/rel/file", f.share), "/m", &f.policy, "c1", &[]).unwrap();
        let inside = std::fs::metadata(format!("{}/real/file", f.share)).unwrap();
        assert_eq!(ino(&s.fd), inside.ino());
        assert!(!s.is_dir);
        let s = open_source(&format!("{}/rel", f.share), "/m", &f.policy, "c1", &[]).unwrap();
        assert!(s.is_dir);
        // A link to a VM folder, absolute or by `..`: nothing of that name inside the share, so
        // refused with B2's words.
        for link in ["abs", "up"] {
            let src = format!("{}/{link}", f.share);
            let e = open_source(&src, "/m", &f.policy, "c1", &[]).unwrap_err();
            assert!(
                e.starts_with(&format!(
                    "can't mount {src} because it's configured as a restricted host mount"
                )),
                "{e}"
            );
            assert!(e.contains("a symlink on its path leads outside"), "{e}");
        }
        // With the same place present inside the share, the link stays in the share.
        let mirror = format!("{}/{}", f.share, f.outside.display());
        std::fs::create_dir_all(&mirror).unwrap();
        std::fs::write(format!("{mirror}/secret"), "share copy\n").unwrap();
        let s = open_source(
            &format!("{}/abs/secret", f.share),
            "/m",
            &f.policy,
            "c1",
            &[],
        )
        .unwrap();
        let vm = std::fs::metadata(f.outside.join("secret")).unwrap();
        let copy = std::fs::metadata(format!("{mirror}/secret")).unwrap();
        assert_eq!(ino(&s.fd), copy.ino());
        assert_ne!(ino(&s.fd), vm.ino());
        // Plain misses keep the kernel's reason; paths outside every prefix are refused.
        let e = open_source(&format!("{}/nope", f.share), "/m", &f.policy, "c1", &[]).unwrap_err();
        assert!(e.contains("No such file"), "{e}");
        let e =
            open_source(&f.outside.display().to_string(), "/m", &f.policy, "c1", &[]).unwrap_err();
        assert!(e.contains("restricted host mount"), "{e}");
    }
}
