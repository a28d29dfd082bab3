//! Mounts made from file descriptors: `openat2`, `open_tree`, `mount_setattr`, `move_mount`,
//! and new filesystems through a context (`fsopen`, `fsconfig`, `fsmount`).
//!
//! A bind source is opened once, below the folder that bounds it, and that very descriptor is
//! cloned into the detached mount the container gets (SPEC B1, B2; issue 9). No name is looked
//! up a second time, so swapping a path component for a symlink after the decision reaches
//! nothing. Every call returns an owned descriptor (`O_CLOEXEC`), so nothing leaks into a
//! process the runtime executes and nothing is closed twice.
//!
//! `openat2` comes from nix. nix 0.32 has none of the new mount API, so `open_tree`,
//! `move_mount`, `mount_setattr` and `fsopen`/`fsconfig`/`fsmount` are raw system calls here,
//! with the flags of `linux/mount.h` (`OPEN_TREE_*`, `MOVE_MOUNT_*`, `MOUNT_ATTR_*`, `struct
//! mount_attr`) defined below with their kernel values, which libc lacks.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use super::{cstr, errno, Result};

/// `open_tree`: return a detached copy of the mount instead of a handle on the original.
pub const OPEN_TREE_CLONE: libc::c_uint = 1;
/// `open_tree`: the new descriptor is close-on-exec (`linux/mount.h` defines it as `O_CLOEXEC`).
const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
/// With `open_tree`/`mount_setattr`: the whole tree below the mount, not just its top (`rbind`).
pub const AT_RECURSIVE: libc::c_uint = libc::AT_RECURSIVE as libc::c_uint;
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
/// `move_mount`: the source is the descriptor itself (the path is empty).
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
/// `move_mount`: the target is the descriptor itself (the path is empty).
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// `struct mount_attr` (`linux/mount.h`, version 0: 32 bytes).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// How a walk below a root folder treats names that would lead above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `RESOLVE_IN_ROOT`: the root acts as `/` for the whole walk, as after a `chroot`: absolute
    /// symlinks and `..` are resolved against it, so the walk never leaves it.
    InRoot,
    /// `RESOLVE_BENEATH`: a name that would leave the root (an absolute symlink, `..` above it)
    /// is an error, `EXDEV`. Used to tell the user *why* a path is missing inside a share.
    Beneath,
    /// `RESOLVE_NO_SYMLINKS`: any symlink on the way is an error (`ELOOP`). For share prefixes,
    /// which a writer of an enclosing share could replace by a link.
    NoSymlinks,
}

/// How often a walk is retried when the kernel reports that a rename or mount raced with a
/// `..` step (`EAGAIN`); the kernel asks callers to retry, and a bound keeps a hostile writer
/// renaming in a loop from stalling `create`.
const RACE_RETRIES: usize = 64;

/// An `O_PATH` handle on `rest` (relative; `.` for the root itself) below the folder `root`,
/// resolved entirely inside it (`scope`). Symlinks are followed, the last one too, but only
/// inside the root; magic links (`/proc/PID/fd/N`, which can point anywhere) are refused
/// (`ELOOP`). The handle pins the file it found: whatever happens to the names afterwards,
/// [`clone_tree`] on it clones exactly this file. Errors keep the kernel's errno so callers can
/// tell `ENOENT` from `EXDEV`.
pub fn open_below(root: BorrowedFd<'_>, rest: &Path, scope: Scope) -> io::Result<OwnedFd> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    let how = OpenHow::new()
        // O_PATH: the handle reads nothing and needs no permission on the file itself; with
        // O_PATH openat2 accepts only O_CLOEXEC, O_DIRECTORY and O_NOFOLLOW besides. The mode
        // stays 0 (without O_CREAT/O_TMPFILE anything else is EINVAL).
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_NO_MAGICLINKS
                | match scope {
                    Scope::InRoot => ResolveFlag::RESOLVE_IN_ROOT,
                    Scope::Beneath => ResolveFlag::RESOLVE_BENEATH,
                    Scope::NoSymlinks => ResolveFlag::RESOLVE_NO_SYMLINKS,
                },
        );
    for _ in 0..RACE_RETRIES {
        let e = match openat2(root, rest, how) {
            Ok(fd) => return Ok(fd),
            Err(e) => io::Error::from(e),
        };
        match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => continue,
            Some(libc::ENOSYS) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "openat2 is missing (Linux >= 5.6 is needed to open bind sources safely)",
                ))
            }
            _ => return Err(e),
        }
    }
    Err(io::Error::from_raw_os_error(libc::EAGAIN))
}

/// A detached copy of the mount at the file `src` refers to (`open_tree(src, "",
/// AT_EMPTY_PATH | OPEN_TREE_CLONE)`), with the mounts below it when `recursive` (`rbind`).
/// Nothing is looked up by name: the copy shows the very file or folder `src` pins, wherever
/// its names have moved since it was opened. `what` only names it in errors.
pub fn clone_tree(src: BorrowedFd<'_>, recursive: bool, what: &Path) -> Result<OwnedFd> {
    let mut flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    let empty = c"";
    // SAFETY: `src` is a live descriptor and the path an empty NUL-terminated string
    // (AT_EMPTY_PATH makes the kernel use the descriptor itself).
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, src.as_raw_fd(), empty.as_ptr(), flags) };
    if fd < 0 {
        return Err(errno(format!("open_tree {}", what.display())));
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A detached copy of the mount tree at `path` (`open_tree(OPEN_TREE_CLONE)`), looked up by
/// name. Only for VM-owned paths no container can change (dockerd's image layers); bind
/// sources go through [`open_below`] and [`clone_tree`].
pub fn open_tree_clone(path: &Path, recursive: bool) -> Result<OwnedFd> {
    let p = cstr(path)?;
    let mut flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: valid C string; the kernel returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, p.as_ptr(), flags) };
    if fd < 0 {
        return Err(errno(format!("open_tree {}", path.display())));
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Set attributes (and an id mapping when `userns` is given) on a detached mount. The kernel
/// applies them to the whole tree or, on any error, to none of it.
pub fn mount_setattr(
    fd: &OwnedFd,
    set: u64,
    userns: Option<RawFd>,
    recursive: bool,
    propagation: u64,
) -> Result<()> {
    let mut attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation,
        userns_fd: 0,
    };
    if let Some(u) = userns {
        attr.attr_set |= MOUNT_ATTR_IDMAP;
        attr.userns_fd = u as u64;
    }
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    let empty = c"";
    // SAFETY: attr lives across the call; size matches the struct the kernel expects.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            empty.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(errno("mount_setattr"));
    }
    Ok(())
}

/// Attach a detached mount at `target` (relative to the current folder when relative).
pub fn move_mount(fd: RawFd, target: &Path) -> Result<()> {
    let t = cstr(target)?;
    let empty = c"";
    // SAFETY: valid strings and fd.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd,
            empty.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(errno(format!("move_mount to {}", target.display())));
    }
    Ok(())
}

/// Attach a detached mount on the folder `target_fd` refers to (no name looked up on either
/// side).
pub fn move_mount_onto(fd: RawFd, target_fd: RawFd) -> io::Result<()> {
    let empty = c"";
    // SAFETY: valid descriptors and empty NUL-terminated strings.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd,
            empty.as_ptr(),
            target_fd,
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens an absolute VM path (`O_PATH`) without following any symlink on it: a share prefix
/// that lies inside another share (or inside a share's mount) can be swapped for a link by
/// whoever writes there, so it is taken only as the folder it literally is.
pub fn open_no_symlinks(path: &Path) -> io::Result<OwnedFd> {
    let rest = path
        .strip_prefix("/")
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let root = std::fs::File::open("/")?;
    if rest.as_os_str().is_empty() {
        return Ok(root.into());
    }
    open_below(root.as_fd(), rest, Scope::NoSymlinks)
}

/// A filesystem context (`fsopen`): options are set one by one, then the filesystem is
/// created and mounted detached. Used for the container's overlay and for sysfs/mqueue made for
/// a joined namespace; each is created with the calling process's credentials and namespaces.
pub struct FsContext {
    fd: OwnedFd,
}

/// `fsconfig` commands (`linux/mount.h`).
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
/// `fsopen`/`fsmount`: the new descriptor is close-on-exec.
const FS_CLOEXEC: libc::c_uint = 1;

impl FsContext {
    pub fn open(fstype: &str) -> io::Result<FsContext> {
        let name = CString::new(fstype).map_err(io::Error::other)?;
        // SAFETY: fsopen reads a NUL-terminated name that lives for the call.
        let fd = unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FS_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        Ok(FsContext {
            fd: unsafe { OwnedFd::from_raw_fd(fd as RawFd) },
        })
    }

    /// The kernel's messages about this context (why `create` failed), `; `-separated.
    pub fn messages(&self) -> String {
        let mut out = String::new();
        let mut buf = [0u8; 512];
        // Each read returns one message; the end of the log is an error (ENODATA).
        while let Ok(n @ 1..) = nix::unistd::read(&self.fd, &mut buf) {
            out.push_str(String::from_utf8_lossy(&buf[..n]).trim());
            out.push_str("; ");
        }
        out
    }

    /// `key=value`, or the flag `key` when `value` is `None`.
    pub fn set(&self, key: &str, value: Option<&str>) -> io::Result<()> {
        let key = CString::new(key).map_err(io::Error::other)?;
        let value = value
            .map(CString::new)
            .transpose()
            .map_err(io::Error::other)?;
        let (cmd, ptr) = match &value {
            Some(v) => (FSCONFIG_SET_STRING, v.as_ptr()),
            None => (FSCONFIG_SET_FLAG, std::ptr::null()),
        };
        // SAFETY: both strings live for the call; a flag takes no value.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                self.fd.as_raw_fd(),
                cmd,
                key.as_ptr(),
                ptr,
                0,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Creates the filesystem from the options set so far.
    pub fn create(&self) -> io::Result<()> {
        // SAFETY: FSCONFIG_CMD_CREATE takes no key or value.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                self.fd.as_raw_fd(),
                FSCONFIG_CMD_CREATE,
                std::ptr::null::<libc::c_char>(),
                std::ptr::null::<libc::c_char>(),
                0,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The created filesystem as a detached mount with `attrs` (`MOUNT_ATTR_*`).
    pub fn mount(&self, attrs: u32) -> io::Result<OwnedFd> {
        // SAFETY: plain syscall on our context descriptor.
        let m = unsafe { libc::syscall(libc::SYS_fsmount, self.fd.as_raw_fd(), FS_CLOEXEC, attrs) };
        if m < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(m as RawFd) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn ino(fd: &OwnedFd) -> u64 {
        nix::sys::stat::fstat(fd).unwrap().st_ino
    }

    /// Swap the names `a` and `b` atomically (renameat2 RENAME_EXCHANGE).
    fn exchange(a: &Path, b: &Path) -> nix::Result<()> {
        use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
        renameat2(AT_FDCWD, a, AT_FDCWD, b, RenameFlags::RENAME_EXCHANGE)
    }

    fn dir_fd(p: &Path) -> OwnedFd {
        crate::sys::open(p, libc::O_PATH | libc::O_DIRECTORY, 0).unwrap()
    }

    /// `<tmp>/share/real/f` ("share"), `<tmp>/out/f` ("vm"), and links inside the share that
    /// point out of it.
    fn layout() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let share = t.path().join("share");
        let out = t.path().join("out");
        std::fs::create_dir_all(share.join("real")).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(share.join("real/f"), "share").unwrap();
        std::fs::write(out.join("f"), "vm").unwrap();
        symlink(&out, share.join("abs")).unwrap();
        symlink("../../../../../../../../../..", share.join("up")).unwrap();
        symlink("/", share.join("slash")).unwrap();
        (t, share, out)
    }

    #[test]
    fn walks_in_root_stay_inside_and_beneath_refuses_to_leave() {
        let (_t, share, out) = layout();
        let root = dir_fd(&share);
        let inside = std::fs::metadata(share.join("real/f")).unwrap().ino();
        let vm = std::fs::metadata(out.join("f")).unwrap().ino();
        let open = |p: &str, s| open_below(root.as_fd(), Path::new(p), s);
        assert_eq!(ino(&open("real/f", Scope::InRoot).unwrap()), inside);
        // An absolute link to a VM folder resolves against the share: no such place there.
        let e = open("abs/f", Scope::InRoot).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
        // `..` (spelled out, or inside a link) stops at the share; `/` is the share.
        let upmost = format!("{}/f", "../".repeat(12));
        assert_eq!(
            open(&upmost, Scope::InRoot).unwrap_err().raw_os_error(),
            Some(libc::ENOENT)
        );
        assert_eq!(ino(&open("up/real/f", Scope::InRoot).unwrap()), inside);
        assert_eq!(ino(&open("slash/real/f", Scope::InRoot).unwrap()), inside);
        assert_eq!(ino(&open("../real/f", Scope::InRoot).unwrap()), inside);
        // The place the absolute link names, made inside the share, is what it reaches.
        let mirror = share.join(out.strip_prefix("/").unwrap());
        std::fs::create_dir_all(&mirror).unwrap();
        std::fs::write(mirror.join("f"), "copy").unwrap();
        let got = ino(&open("abs/f", Scope::InRoot).unwrap());
        assert_eq!(got, std::fs::metadata(mirror.join("f")).unwrap().ino());
        assert_ne!(got, vm);
        // RESOLVE_BENEATH: every way out is EXDEV, also when the place exists inside.
        for p in ["abs/f", "up/real/f", "slash/real/f", "../real/f"] {
            let e = open(p, Scope::Beneath).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EXDEV), "{p}: {e}");
        }
        assert_eq!(ino(&open("real/f", Scope::Beneath).unwrap()), inside);
        // Magic links (`/proc/PID/cwd` leads wherever that process is) are refused even
        // inside the root.
        let proc_root = dir_fd(Path::new("/proc"));
        let e = open_below(proc_root.as_fd(), Path::new("self/cwd"), Scope::InRoot).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
    }

    /// Swap `share/d` between a folder inside the share and a symlink to a VM folder until
    /// `stop`, with renameat2(RENAME_EXCHANGE): every state any reader sees is one of the two.
    fn swapper(share: &Path, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
        let (a, b) = (share.join("d"), share.join(".swap"));
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                exchange(&a, &b).unwrap();
                n += 1;
            }
            n
        })
    }

    /// The attack of issue 9 on the path level: a check of the resolved path followed by an
    /// open by name (what a check-then-mount-by-path runtime does) reaches the VM folder while
    /// a writer swaps a share component for a symlink; the same race against a walk below the
    /// share never does.
    #[test]
    fn a_swapped_symlink_beats_check_then_open_but_not_open_below() {
        let (_t, share, out) = layout();
        std::fs::create_dir_all(share.join("d")).unwrap();
        std::fs::write(share.join("d/f"), "share").unwrap();
        symlink(&out, share.join(".swap")).unwrap();
        let vm = std::fs::metadata(out.join("f")).unwrap().ino();
        let stop = Arc::new(AtomicBool::new(false));
        let t = swapper(&share, stop.clone());
        let source = share.join("d/f");

        // Check-then-open: canonicalize, refuse anything outside the share, open by name.
        let (mut hits, mut tries) = (0u64, 0u64);
        let deadline = Instant::now() + Duration::from_secs(20);
        while hits < 5 && Instant::now() < deadline {
            tries += 1;
            let Ok(real) = std::fs::canonicalize(&source) else {
                continue;
            };
            if !real.starts_with(&share) {
                continue;
            }
            if let Ok(fd) = crate::sys::open(&source, libc::O_PATH, 0) {
                hits += u64::from(ino(&fd) == vm);
            }
        }
        println!("check-then-open by path: {hits} opens of the VM file in {tries} tries");
        assert!(hits > 0, "the race was not won in {tries} tries");

        // Open below the share: never the VM file.
        let root = dir_fd(&share);
        let (mut vm_hits, mut inside, mut missing) = (0u64, 0u64, 0u64);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            match open_below(root.as_fd(), Path::new("d/f"), Scope::InRoot) {
                Ok(fd) if ino(&fd) == vm => vm_hits += 1,
                Ok(_) => inside += 1,
                Err(_) => missing += 1,
            }
        }
        stop.store(true, Ordering::Relaxed);
        let swaps = t.join().unwrap();
        println!(
            "open_below: {inside} share opens, {missing} misses, {vm_hits} VM opens ({swaps} swaps)"
        );
        assert_eq!(vm_hits, 0);
        assert!(inside > 0 && missing > 0, "the swap did not interleave");
    }

    /// A handle opened while a share folder was real is mounted as that folder after the name
    /// became a symlink to a VM folder: the clone follows the descriptor, not the name. Needs
    /// root (a mount namespace of its own for this thread).
    #[test]
    fn the_clone_mounts_what_was_opened() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to make a mount namespace");
            return;
        }
        let (_t, share, out) = layout();
        std::fs::create_dir_all(share.join("d")).unwrap();
        std::fs::write(share.join("d/f"), "share").unwrap();
        symlink(&out, share.join(".swap")).unwrap();
        let target = _t.path().join("target");
        std::fs::create_dir(&target).unwrap();
        let got = std::thread::spawn(move || -> Result<String> {
            // This thread alone enters a new mount namespace (unshare(CLONE_NEWNS) is allowed
            // in a threaded process and takes the calling thread only); it goes with the thread.
            crate::sys::unshare(libc::CLONE_NEWNS)?;
            crate::sys::mount(
                None,
                Path::new("/"),
                None,
                libc::MS_REC | libc::MS_PRIVATE,
                None,
            )?;
            let root = dir_fd(&share);
            let src = open_below(root.as_fd(), Path::new("d"), Scope::InRoot)
                .map_err(|e| e.to_string())?;
            // Now `d` becomes the symlink to the VM folder.
            exchange(&share.join("d"), &share.join(".swap")).unwrap();
            assert!(std::fs::symlink_metadata(share.join("d"))
                .unwrap()
                .is_symlink());
            let tree = clone_tree(src.as_fd(), true, Path::new("d"))?;
            mount_setattr(&tree, MOUNT_ATTR_RDONLY, None, true, 0)?;
            move_mount(tree.as_raw_fd(), &target)?;
            let seen = std::fs::read_to_string(target.join("f")).map_err(|e| e.to_string())?;
            let ro = std::fs::write(target.join("g"), "x").is_err();
            Ok(format!("{seen} ro={ro}"))
        })
        .join()
        .unwrap()
        .unwrap();
        assert_eq!(got, "share ro=true");
    }
}
