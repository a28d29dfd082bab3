//! BuildKit RUN steps (SPEC D3): which containers are build steps, and the check on the opened
//! file for their build-step bind sources. The path rules and what BuildKit's spec holds are in
//! `eci_policy`'s `build_step` module.

use std::os::fd::OwnedFd;
use std::path::Path;

use eci_policy::{build_step_source, restricted_mount_message, BuildSource, Policy};

use crate::sys::{self, Result};

/// The data root whose BuildKit made the container's bundle, when the bundle (already resolved
/// through symlinks) is `<data-root>/buildkit/executor/<id>`. Data roots are tried as the
/// policy names them and resolved, since `/var/lib/docker` may be a symlink to the data disk.
pub fn data_root(bundle: &Path, id: &str, policy: &Policy) -> Option<String> {
    let mut roots = policy.engine_data_roots.clone();
    roots.extend(
        policy
            .engine_data_roots
            .iter()
            .filter_map(|r| std::fs::canonicalize(r).ok())
            .map(|r| r.display().to_string()),
    );
    eci_policy::build_step_data_root(&bundle.display().to_string(), id, &roots)
}

/// The refusal for a build-step source that is not what its path says (SPEC B2's words, the
/// reason after them).
fn refuse(path: &str, why: &str) -> String {
    crate::audit::refuse(
        &["B2", "D3"],
        format!("{} ({why})", restricted_mount_message(path)),
    )
}

/// Decide on the opened bind source `fd`, whose (normalised, resolved) path `path` the policy
/// allowed as a build-step source of `data_root`: BuildKit's files and snapshot folders must be
/// on the data root's own mount (so a mount of something else over one of those paths does not
/// pass), and a `merged` folder must be dockerd's overlay made only of layers in the data root's
/// overlay2 folder, each on the data root's mount.
pub fn check_opened(fd: &OwnedFd, path: &str, data_root: &str) -> Result<()> {
    let source = build_step_source(path, data_root)
        .ok_or_else(|| refuse(path, "not a BuildKit step file or layer folder"))?;
    let root_path = Path::new(data_root);
    let root_mnt = sys::mount_id(&sys::open_dir_path(root_path)?, root_path)?;
    let mnt = sys::mount_id(fd, Path::new(path))?;
    match source {
        BuildSource::ExecutorFile | BuildSource::LayerDiff { .. } => {
            if mnt != root_mnt {
                return Err(refuse(path, "not on the data root's filesystem"));
            }
        }
        BuildSource::LayerMerged { merged } => {
            check_overlay(&mountinfo()?, mnt, &merged, path, data_root, root_mnt)?;
        }
        BuildSource::TempMount { mount_point } => {
            let text = mountinfo()?;
            match eci_policy::temp_mount_origin(&text, mnt, &mount_point, data_root, root_mnt)
                .map_err(|e| refuse(path, &e))?
            {
                // A layer's diff folder, on the data root's own filesystem (same device, the
                // mount's root mapped through the data root's mount).
                eci_policy::TempMountOrigin::Folder(_) => {}
                eci_policy::TempMountOrigin::Merged { merged, mount_id } => {
                    check_overlay(&text, mount_id, &merged, path, data_root, root_mnt)?;
                }
            }
        }
        BuildSource::Secret { tmpfs } => {
            eci_policy::check_secret_tmpfs(&mountinfo()?, mnt, &tmpfs)
                .map_err(|e| refuse(path, &e))?;
        }
    }
    Ok(())
}

/// `/proc/self/mountinfo`, read after the mount ids were taken: a mount that went away in
/// between is not found, and refused.
fn mountinfo() -> Result<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("read /proc/self/mountinfo: {e}"))
}

/// The overlay `mount_id` must be dockerd's on `merged`, every layer in the data root's overlay2
/// folder and on the data root's mount `root_mnt`.
fn check_overlay(
    text: &str,
    mount_id: u64,
    merged: &str,
    path: &str,
    data_root: &str,
    root_mnt: u64,
) -> Result<()> {
    let dirs = eci_policy::snapshot_overlay_dirs(text, mount_id, merged, data_root)
        .map_err(|e| refuse(path, &e))?;
    for d in dirs {
        // dockerd's `l/` short names are symlinks to `../<layer>/diff`.
        let real = std::fs::canonicalize(&d)
            .map_err(|e| refuse(path, &format!("overlay layer {d}: {e}")))?;
        let real_s = real.display().to_string();
        if !eci_policy::in_overlay2(&real_s, data_root) {
            return Err(refuse(
                path,
                &format!("overlay layer {d} leads to {real_s}, outside overlay2"),
            ));
        }
        if sys::mount_id(&sys::open_dir_path(&real)?, &real)? != root_mnt {
            return Err(refuse(
                path,
                &format!("overlay layer {real_s} is not on the data root's filesystem"),
            ));
        }
    }
    Ok(())
}

/// [`check_opened`] for a source given by path, opened without following a final symlink (the
/// unit tests' way in; `binds::open_source` passes the descriptor it mounts).
#[cfg(test)]
fn check_path(path: &Path, data_root: &str) -> Result<()> {
    let fd = sys::open(path, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
    check_opened(&fd, &path.display().to_string(), data_root)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The filesystem check, on a real folder tree: files and folders of the data root's own
    /// mount pass; the same paths with a tmpfs mounted over them do not (root only: skipped
    /// otherwise).
    #[test]
    fn sources_must_be_on_the_data_roots_mount() {
        if !nix::unistd::getuid().is_root() {
            eprintln!("skipped: needs root to mount a tmpfs");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("data");
        let exec = root.join("buildkit/executor");
        let diff = root.join("overlay2/abc/diff");
        let other = root.join("overlay2/def/diff");
        for p in [&exec, &diff, &other] {
            std::fs::create_dir_all(p).unwrap();
        }
        std::fs::write(exec.join("resolv.conf"), "nameserver 1.1.1.1\n").unwrap();
        std::fs::write(exec.join("hosts.x1"), "127.0.0.1 localhost\n").unwrap();
        let root_s = root.display().to_string();
        for p in [
            exec.join("resolv.conf"),
            exec.join("hosts.x1"),
            diff.clone(),
        ] {
            check_path(&p, &root_s).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
        // Not a build-step path at all.
        let e = check_path(&root.join("overlay2/abc"), &root_s).unwrap_err();
        assert!(e.contains("restricted host mount"), "{e}");

        // A folder mounted over a layer path is something else than the data root's folder.
        nix::mount::mount(
            Some("tmpfs"),
            &other,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .expect("mount tmpfs");
        let res = check_path(&other, &root_s);
        let _ = nix::mount::umount2(&other, nix::mount::MntFlags::MNT_DETACH);
        let e = res.unwrap_err();
        assert!(
            e.contains("restricted host mount") && e.contains("not on the data root's filesystem"),
            "{e}"
        );
    }

    /// A `merged` folder that is a plain folder (no overlay of dockerd's on it) is refused.
    #[test]
    fn merged_must_be_dockers_overlay() {
        if !nix::unistd::getuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("data");
        let merged = root.join("overlay2/abc/merged");
        std::fs::create_dir_all(&merged).unwrap();
        let e = check_path(&merged, &root.display().to_string()).unwrap_err();
        assert!(e.contains("is not an overlay mount"), "{e}");
    }
}
