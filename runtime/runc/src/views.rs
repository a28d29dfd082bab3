//! The container's /proc and /sys views (SPEC F1-F4), served by eci-views over FUSE.
//!
//! At create the runtime (VM root, in the VM's mount namespace) runs `eci-views register`,
//! which makes sure a views server answers, records the container (cgroup folders, id range,
//! start time, a fresh identity) and prints the container's folder in the FUSE mount and the
//! list of views. The runtime clones each view file as a detached mount ([`prepare`]); the
//! container's set-up processes are forks of the runtime and inherit those descriptors, and
//! after pivot_root and the masks the views are attached over /proc, /proc/sys and /sys
//! ([`attach`]). Nothing is looked up by a name the container controls. A bind of a FUSE file
//! stays bound to that connection: if the server dies, the connection waits in the fd store
//! for the next server (runtime/views/src/connection.rs), and without a store reads fail with
//! ENOTCONN; they never reach the VM's own files.
//!
//! The runtime calls the binary rather than linking the crate, so it carries no FUSE code and
//! the record format, key and bind list have one home (runtime/views).

use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use eci_policy::IdRange;

use crate::cgroup::{Cgroup, Mode};
use crate::error::Result;
use crate::sys;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    /// Only over an empty regular file (/etc/machine-id as images ship it for systemd).
    EmptyFile,
    /// A folder the container sees empty (/sys/firmware, /sys/kernel/debug, ...).
    EmptyDir,
}

/// What the container's set-up attaches: detached mounts of views and their places.
struct Prepared {
    mounts: Vec<(Option<OwnedFd>, PathBuf, Kind)>,
}

/// The runtime's prepared views. The init's set-up stages are forks of the runtime, so they
/// find them here (and the descriptors, inherited) without the views riding through every
/// stage's context and message.
static PREPARED: Mutex<Option<Prepared>> = Mutex::new(None);

/// `ECI_VIEWS_BIN`, else `eci-views` beside this runtime (the image installs both in
/// /usr/bin; cargo builds both into one target folder).
fn binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ECI_VIEWS_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| format!("views: locate eci-runc: {e}"))?;
    let p = exe.with_file_name("eci-views");
    if p.is_file() {
        return Ok(p);
    }
    Err(format!(
        "views: {} does not exist (install eci-views beside eci-runc, `cargo build -p eci-views`, \
         or set ECI_VIEWS_BIN)",
        p.display()
    )
    .into())
}

/// `--cgroup CONTROLLER=FOLDER` arguments for the container's cgroup.
fn cgroup_args(cg: &Cgroup) -> Vec<String> {
    let mut args = Vec::new();
    if cg.mode == Mode::V2 {
        if let Some(d) = cg.dirs.first() {
            args.push(format!("v2={}", d.path.display()));
        }
    } else {
        for c in ["memory", "cpu", "cpuacct", "cpuset", "blkio", "pids"] {
            if let Some(d) = cg
                .dirs
                .iter()
                .find(|d| !d.v2 && d.controllers.iter().any(|x| x == c))
            {
                args.push(format!("{c}={}", d.path.display()));
            }
        }
    }
    args.into_iter()
        .flat_map(|a| ["--cgroup".to_string(), a])
        .collect()
}

/// One view from `eci-views register`: source below the folder, target, kind.
type View = (String, PathBuf, Kind);

/// `eci-views register`'s answer: the container's folder, then `SOURCE TARGET KIND` lines.
fn parse(out: &str) -> Result<(PathBuf, Vec<View>)> {
    let mut lines = out.lines();
    let folder = lines
        .next()
        .filter(|l| l.starts_with('/'))
        .ok_or_else(|| format!("views: eci-views register printed no folder: {out:?}"))?;
    let mut views = Vec::new();
    for l in lines {
        let f: Vec<&str> = l.split(' ').collect();
        let kind = match f.get(2).copied() {
            Some("file") => Kind::File,
            Some("dir") => Kind::Dir,
            Some("empty-file") => Kind::EmptyFile,
            Some("empty-dir") => Kind::EmptyDir,
            _ => {
                return Err(format!("views: unexpected line from eci-views register: {l:?}").into())
            }
        };
        if f.len() != 3 || !f[1].starts_with('/') || f[0].contains("..") {
            return Err(format!("views: unexpected line from eci-views register: {l:?}").into());
        }
        views.push((f[0].to_string(), PathBuf::from(f[1]), kind));
    }
    Ok((PathBuf::from(folder), views))
}

/// Registers the container with the views server (starting one if none answers) and clones
/// its view files. Runs in the runtime as VM root before the set-up processes are forked.
pub fn prepare(root: &Path, id: &str, cg: &Cgroup, range: IdRange, state_dir: &Path) -> Result<()> {
    let bin = binary()?;
    let out = Command::new(&bin)
        .arg("register")
        .arg("--state-root")
        .arg(root)
        .args(["--id", id])
        .arg("--state-dir")
        .arg(state_dir)
        .args(["--uid", &range.start.to_string()])
        .args(["--gid", &range.start.to_string()])
        .args(["--range", &range.size.to_string()])
        .args(cgroup_args(cg))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("views: run {}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "views: {}",
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .trim_start_matches("eci-views: ")
        )
        .into());
    }
    let (folder, views) = parse(&String::from_utf8_lossy(&out.stdout))?;
    let mut mounts = Vec::new();
    for (source, target, kind) in views {
        if kind == Kind::EmptyDir {
            mounts.push((None, target, kind));
            continue;
        }
        let src = folder.join(&source);
        let fd = sys::open(&src, libc::O_PATH | libc::O_CLOEXEC, 0)
            .map_err(|e| format!("views: {e}"))?;
        let m = sys::mountfd::clone_tree(fd.as_fd(), false, &src)?;
        mounts.push((Some(m), target, kind));
    }
    *PREPARED.lock().unwrap_or_else(|e| e.into_inner()) = Some(Prepared { mounts });
    Ok(())
}

/// After pivot_root and the masks: the views over the container's own paths, and the
/// firmware and kernel-internal folders emptied (SPEC F4). Targets the container does not have
/// (no /proc mounted, a knob of a module the VM did not load, no DMI) are left alone.
pub fn attach() -> Result<()> {
    let p = PREPARED.lock().unwrap_or_else(|e| e.into_inner()).take();
    let p = p.ok_or("views: the runtime prepared no views for this container")?;
    for (fd, target, kind) in &p.mounts {
        let Ok(m) = fs::symlink_metadata(target) else {
            continue;
        };
        match (kind, fd) {
            (Kind::EmptyDir, _) => {
                let non_empty =
                    m.is_dir() && fs::read_dir(target).is_ok_and(|mut r| r.next().is_some());
                if non_empty {
                    sys::mount(
                        Some("tmpfs"),
                        target,
                        Some("tmpfs"),
                        libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        Some("size=0,mode=555"),
                    )
                    .map_err(|e| format!("views: empty {}: {e}", target.display()))?;
                }
            }
            (_, Some(fd)) => {
                let fits = match kind {
                    Kind::File => m.is_file(),
                    Kind::Dir => m.is_dir(),
                    _ => m.is_file() && m.len() == 0,
                };
                if fits {
                    sys::move_mount(fd.as_raw_fd(), target)
                        .map_err(|e| format!("views: attach {}: {e}", target.display()))?;
                }
            }
            (_, None) => {}
        }
    }
    Ok(())
}

/// At delete (and when a create fails): the record goes and the server drops the container.
pub fn release(root: &Path, id: &str) {
    let Ok(bin) = binary() else { return };
    let out = Command::new(&bin)
        .arg("unregister")
        .arg("--state-root")
        .arg(root)
        .args(["--id", id])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => crate::log::warn(&format!(
            "views: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => crate::log::warn(&format!("views: run {}: {e}", bin.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_output_is_parsed_and_checked() {
        let (folder, views) = parse(
            "/run/eci-views/fs/k\nproc/meminfo /proc/meminfo file\ndmi /sys/class/dmi dir\n\
             machine-id /etc/machine-id empty-file\n- /sys/firmware empty-dir\n",
        )
        .unwrap();
        assert_eq!(folder, Path::new("/run/eci-views/fs/k"));
        assert_eq!(views.len(), 4);
        assert!(views[3].2 == Kind::EmptyDir && views[2].2 == Kind::EmptyFile);
        assert!(parse("").is_err());
        assert!(parse("relative\n").is_err());
        assert!(parse("/f\nproc/meminfo /proc/meminfo fifo\n").is_err());
        assert!(parse("/f\n../x /proc/meminfo file\n").is_err());
        assert!(parse("/f\nproc/meminfo relative file\n").is_err());
    }
}
