//! `eci-build boot --share HOSTDIR` (SPEC H3): a host folder appears in the VM at the path
//! settings give it (`/home/me/src` at `/mnt/host/home/me/src`, eci-vm-config's `vm_path`),
//! below the share root that B1 lets containers bind, so `docker run -v` names it there.
//!
//! The transport is virtiofs, with QEMU's `vhost-user-fs-pci` and a `virtiofsd` on this
//! machine, not virtio-9p: the VM boots Debian's 6.12 cloud kernel, which builds virtiofs in
//! (`CONFIG_VIRTIO_FS=y`) and has no 9P at all (`CONFIG_NET_9P` is not set), so `-virtfs` would
//! give it a device it cannot mount. Debian 12 ships no virtiofsd package, so `./dev` installs
//! the pinned [`VIRTIOFSD_VERSION`] from crates.io with its lock file, as it does the vsock
//! backend.
//!
//! Owners (SPEC U4): virtiofsd passes the host's uids and gids through, so the VM sees a host
//! file's owner as is, and eci-runc idmaps every bind into the container's range: VM id N shows
//! as N in the container (root as root, 1000 as 1000), whatever the container's range, and
//! what container id N writes lands on the host as N. The kernel allows an idmapped mount of
//! virtiofs (6.12) only when the daemon grants `FUSE_ALLOW_IDMAP`, which virtiofsd
//! [`VIRTIOFSD_VERSION`] does; eci-init checks it on each share it mounts and leaves a share
//! unmounted, saying why, when the idmap is refused, so no container sees it with wrong owners.
//! Run by a user other than root, virtiofsd cannot change owners on the host: files the VM
//! creates belong to that user and a chown from the VM fails.
//!
//! Each share is announced to eci-init with an SMBIOS OEM string ([`eci_facts::host_share`]).

use eci_facts::host_share;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The virtiofsd release `./dev` installs (`cargo install --locked`) and [`check_version`]
/// accepts: the first eci has seen grant idmapped mounts (`FUSE_ALLOW_IDMAP` in its INIT
/// reply). A unit test keeps `./dev` in step.
pub const VIRTIOFSD_VERSION: &str = "1.14.0";
pub const VIRTIOFSD_NAME: &str = "virtiofsd";
/// Overrides where virtiofsd is looked for.
pub const VIRTIOFSD_ENV: &str = "ECI_VIRTIOFSD";
/// Where Debian's and Fedora's virtiofsd packages put the daemon (not on PATH).
const LIBEXEC_VIRTIOFSD: &str = "/usr/libexec/virtiofsd";

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error("--share {}: {source}; give an existing folder", dir.display())]
    Missing {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--share {}: not a folder; share the folder that holds it", dir.display())]
    NotADir { dir: PathBuf },
    #[error("--share {}: {reason}", dir.display())]
    Unplaceable { dir: PathBuf, reason: String },
    #[error("--share {} and --share {} overlap (one holds the other); share only the outer folder", a.display(), b.display())]
    Overlap { a: PathBuf, b: PathBuf },
    #[error("--share needs {VIRTIOFSD_NAME} {VIRTIOFSD_VERSION} (looked in {} and on PATH); install it with `./dev test` (or: cargo install --locked {VIRTIOFSD_NAME} --version {VIRTIOFSD_VERSION} --root {})", install.display(), root.display())]
    NoDaemon { install: PathBuf, root: PathBuf },
    #[error("{} says {said:?}, not {VIRTIOFSD_NAME} {VIRTIOFSD_VERSION}: eci has checked only that release grants idmapped mounts, without which containers would see shared files with wrong owners (SPEC U4); install it with `./dev test` or point {VIRTIOFSD_ENV} at it", program.display())]
    Version { program: PathBuf, said: String },
    #[error("{VIRTIOFSD_NAME} for {} did not create its socket {} within {seconds} s; its log: {}", dir.display(), socket.display(), log.display())]
    DaemonStart {
        dir: PathBuf,
        socket: PathBuf,
        seconds: u64,
        log: PathBuf,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// One host folder and where it appears in the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// Canonical: symlinks resolved, so the VM path names the real folder.
    pub host_dir: PathBuf,
    pub vm_path: String,
    pub tag: String,
}

/// Checks the `--share` folders and places each in the VM.
pub fn plan(dirs: &[PathBuf]) -> Result<Vec<Share>, ShareError> {
    let mut shares: Vec<Share> = Vec::new();
    for (index, dir) in dirs.iter().enumerate() {
        let host_dir = std::fs::canonicalize(dir).map_err(|source| ShareError::Missing {
            dir: dir.clone(),
            source,
        })?;
        if !host_dir.is_dir() {
            return Err(ShareError::NotADir { dir: dir.clone() });
        }
        let unplaceable = |reason: String| ShareError::Unplaceable {
            dir: dir.clone(),
            reason,
        };
        let text = host_dir.to_str().ok_or_else(|| {
            unplaceable("the path is not UTF-8, which the VM path must be".into())
        })?;
        let vm_path = eci_vm_config::vm_path(text)
            .ok_or_else(|| unplaceable("the path has no place under the share root".into()))?;
        host_share::check_vm_path(&vm_path).map_err(unplaceable)?;
        if let Some(other) = shares
            .iter()
            .find(|s| host_dir.starts_with(&s.host_dir) || s.host_dir.starts_with(&host_dir))
        {
            return Err(ShareError::Overlap {
                a: other.host_dir.clone(),
                b: host_dir,
            });
        }
        shares.push(Share {
            host_dir,
            vm_path,
            tag: host_share::tag(index),
        });
    }
    Ok(shares)
}

/// Where `./dev` installs virtiofsd: `<cache>/tools/virtiofsd-<version>` (`cargo install
/// --root`); the binary is in its `bin/`.
pub fn daemon_root(cache_root: &Path) -> PathBuf {
    cache_root
        .join("tools")
        .join(format!("{VIRTIOFSD_NAME}-{VIRTIOFSD_VERSION}"))
}

/// `$ECI_VIRTIOFSD`, else the pinned install in the eci cache, else PATH, else
/// `/usr/libexec/virtiofsd`.
pub fn daemon_program(cache_root: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(VIRTIOFSD_ENV) {
        return Some(PathBuf::from(p));
    }
    let pinned = daemon_root(cache_root).join("bin").join(VIRTIOFSD_NAME);
    if pinned.is_file() {
        return Some(pinned);
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(VIRTIOFSD_NAME))
                .find(|p| p.is_file())
        })
        .or_else(|| Some(PathBuf::from(LIBEXEC_VIRTIOFSD)).filter(|p| p.is_file()))
}

/// The daemon for `--share`, found and of the accepted release.
pub fn find_daemon(cache_root: &Path) -> Result<PathBuf, ShareError> {
    let program = daemon_program(cache_root).ok_or_else(|| ShareError::NoDaemon {
        install: daemon_root(cache_root).join("bin"),
        root: daemon_root(cache_root),
    })?;
    let out = Command::new(&program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ShareError::Io {
            what: format!("cannot run {} --version", program.display()),
            source,
        })?;
    check_version(&program, &String::from_utf8_lossy(&out.stdout))?;
    Ok(program)
}

/// `virtiofsd --version` prints `virtiofsd 1.14.0`.
pub fn check_version(program: &Path, said: &str) -> Result<(), ShareError> {
    let said = said.trim();
    if said.split_whitespace().last() == Some(VIRTIOFSD_VERSION) {
        Ok(())
    } else {
        Err(ShareError::Version {
            program: program.to_path_buf(),
            said: said.to_string(),
        })
    }
}

/// One running virtiofsd per share; stopped when dropped. virtiofsd serves one vhost-user
/// connection and exits when QEMU closes it, so it never outlives the VM by much either way.
pub struct Daemon {
    child: Child,
    pub share: Share,
    pub socket: PathBuf,
}

impl Daemon {
    pub fn start(program: &Path, share: &Share, run_dir: &Path) -> Result<Daemon, ShareError> {
        let socket = run_dir.join(format!("{}.sock", share.tag));
        let _ = std::fs::remove_file(&socket);
        let log_path = run_dir.join(format!("{VIRTIOFSD_NAME}-{}.log", share.tag));
        let io = |what: String| move |source| ShareError::Io { what, source };
        let log = File::create(&log_path).map_err(io(log_path.display().to_string()))?;
        // As root virtiofsd confines itself to the folder in its own mount, pid and network
        // namespaces; another user cannot make them, and the folder's permissions are then
        // the limit (the daemon runs as that user).
        let sandbox = if running_as_root() {
            "namespace"
        } else {
            "none"
        };
        let mut child = Command::new(program)
            .arg("--socket-path")
            .arg(&socket)
            .arg("--shared-dir")
            .arg(&share.host_dir)
            .args(["--sandbox", sandbox])
            // The host may change a file while a container reads it: attributes and data are
            // re-checked after a second, as virtiofsd's default does.
            .args(["--cache", "auto"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io("virtiofsd log".into()))?)
            .stderr(log)
            .spawn()
            .map_err(io(format!("cannot start {}", program.display())))?;
        let seconds = 10;
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while !socket.exists() {
            let exited = child.try_wait().ok().flatten().is_some();
            if exited || Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ShareError::DaemonStart {
                    dir: share.host_dir.clone(),
                    socket,
                    seconds,
                    log: log_path,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Daemon {
            child,
            share: share.clone(),
            socket,
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// /proc/self belongs to the effective user.
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Starts a virtiofsd for each share in `run_dir`.
pub fn start_all(
    program: &Path,
    shares: &[Share],
    run_dir: &Path,
) -> Result<Vec<Daemon>, ShareError> {
    shares
        .iter()
        .map(|s| Daemon::start(program, s, run_dir))
        .collect()
}

/// QEMU's arguments for the shares: a `vhost-user-fs-pci` device per daemon and its SMBIOS
/// announcement. vhost-user needs the guest's RAM in shared memory; `memory_is_shared` says
/// whether another device's arguments already put it there (the vsock backend's do,
/// [`crate::vsock::VsockDevice::qemu_args`]); otherwise these do, `memory_mib` large.
pub fn qemu_args(daemons: &[Daemon], memory_mib: u32, memory_is_shared: bool) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    if daemons.is_empty() {
        return args;
    }
    if !memory_is_shared {
        args.extend([
            "-object".into(),
            format!("memory-backend-memfd,id=eci-mem,size={memory_mib}M,share=on").into(),
            "-machine".into(),
            "memory-backend=eci-mem".into(),
        ]);
    }
    for d in daemons {
        let mut chardev = OsString::from(format!("socket,id={},path=", d.share.tag));
        // QEMU's option syntax escapes a comma by doubling it.
        chardev.push(d.socket.to_string_lossy().replace(',', ",,"));
        args.extend([
            "-chardev".into(),
            chardev,
            "-device".into(),
            format!(
                "vhost-user-fs-pci,chardev={tag},tag={tag}",
                tag = d.share.tag
            )
            .into(),
            "-smbios".into(),
            format!(
                "type=11,value={}",
                host_share::encode(&d.share.tag, &d.share.vm_path).replace(',', ",,")
            )
            .into(),
        ]);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_placed_below_the_share_root_by_their_real_path() {
        let work = tempfile::tempdir().unwrap();
        let real = work.path().join("src");
        std::fs::create_dir(&real).unwrap();
        let link = work.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let shares = plan(&[link]).unwrap();
        let canonical = std::fs::canonicalize(&real).unwrap();
        assert_eq!(shares[0].host_dir, canonical);
        assert_eq!(
            shares[0].vm_path,
            format!("/mnt/host{}", canonical.display())
        );
        assert_eq!(shares[0].tag, "eci-share0");
    }

    #[test]
    fn missing_files_root_and_overlapping_folders_are_refused() {
        let work = tempfile::tempdir().unwrap();
        let e = plan(&[work.path().join("nope")]).unwrap_err().to_string();
        assert!(e.contains("existing folder"), "{e}");
        let file = work.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let e = plan(&[file]).unwrap_err().to_string();
        assert!(e.contains("not a folder"), "{e}");
        // `/` would be the share root itself, which B1's prefix holds but no share may cover.
        let e = plan(&[PathBuf::from("/")]).unwrap_err().to_string();
        assert!(e.contains("not below /mnt/host"), "{e}");
        let inner = work.path().join("a/b");
        std::fs::create_dir_all(&inner).unwrap();
        let e = plan(&[work.path().join("a"), inner])
            .unwrap_err()
            .to_string();
        assert!(e.contains("overlap"), "{e}");
    }

    #[test]
    fn only_the_checked_release_is_accepted() {
        let p = Path::new("/x/virtiofsd");
        assert!(check_version(p, "virtiofsd 1.14.0\n").is_ok());
        let e = check_version(p, "virtiofsd 1.10.1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("idmapped mounts") && e.contains("1.10.1"), "{e}");
    }

    #[test]
    fn qemu_gets_a_device_and_an_announcement_per_share_and_shared_memory_once() {
        let work = tempfile::tempdir().unwrap();
        let d = |tag: &str, vm: &str| Daemon {
            // A placeholder child that is reaped on drop.
            child: Command::new("true").spawn().unwrap(),
            share: Share {
                host_dir: work.path().into(),
                vm_path: vm.into(),
                tag: tag.into(),
            },
            socket: work.path().join(format!("{tag},x.sock")),
        };
        let daemons = [d("eci-share0", "/mnt/host/a,b")];
        let text = |v: Vec<OsString>| {
            v.iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        };
        let own = text(qemu_args(&daemons, 2048, false));
        assert!(own.contains(&"memory-backend-memfd,id=eci-mem,size=2048M,share=on".to_string()));
        assert!(own.contains(&"vhost-user-fs-pci,chardev=eci-share0,tag=eci-share0".to_string()));
        assert!(own.contains(&"type=11,value=eci.share=eci-share0:/mnt/host/a,,b".to_string()));
        assert!(own
            .iter()
            .any(|a| a.starts_with("socket,id=eci-share0,path=") && a.ends_with(",,x.sock")));
        let with_vsock = text(qemu_args(&daemons, 2048, true));
        assert!(!with_vsock.iter().any(|a| a.contains("memory-backend")));
        assert!(qemu_args(&[], 2048, false).is_empty());
    }

    #[test]
    fn dev_installs_the_pinned_daemon() {
        let dev =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../dev")).unwrap();
        assert!(
            dev.contains(&format!("virtiofsd_version={VIRTIOFSD_VERSION}")),
            "./dev must install {VIRTIOFSD_NAME} {VIRTIOFSD_VERSION}"
        );
        assert!(dev.contains("tools/virtiofsd-$"));
    }
}
