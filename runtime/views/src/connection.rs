//! The FUSE connection the views are served on, and how it outlives its server (issue 10: the
//! FUSE descriptor is kept in the fd store, `eci_init::fd_store`, like the seccomp listeners).
//!
//! A server that finds nothing to take back mounts: it opens /dev/fuse (the connection's
//! first device), mounts with it, and reads the kernel's INIT request itself. fuser makes the
//! INIT exchange through a socket pair (the request written into one end, its answer read back
//! and written to the device), then reads and answers requests on a clone of the device
//! (`FUSE_DEV_IOC_CLONE`) put in place of its end of the pair (`dup3`, same descriptor number).
//! The first device and the INIT request go to the fd store. A server that starts after one
//! was killed takes them back, checks that the mount is still that connection's (its device
//! number), replays the INIT request to its own fuser (whose answer is dropped: the kernel
//! keeps the first exchange's) and reads on a clone of its own. fuser 0.18 insists on the INIT
//! exchange before it serves (requests before it are answered with an error), hence the pair.
//!
//! Why a clone and not the first device: the kernel keeps the requests a server has read but
//! not answered on the device it read them from. When that device closes (the server died) the
//! kernel ends them with ECONNABORTED and the connection lives on as long as another device of
//! it is open (the store's). Requests read from the stored device would wait forever, and
//! their callers could not even be killed. Between two servers, new requests wait in the
//! kernel's queue: a fatal signal (SIGKILL, or one the caller does not handle) ends the wait,
//! a handled one does not. So while no server runs, a view read waits rather than failing,
//! for at most the store's grace (`eci_init::fd_store::FUSE_GRACE`, 15 s), after which the
//! store closes the device and the connection ends (ENOTCONN).
//!
//! A server takes the connection over only if the mount there is still that connection, the
//! connection is alive (the device reports no error) and its fuser answers INIT exactly as the
//! first server's did (kept in the store too); otherwise it drops the device from the store
//! and closes it, which ends the connection (the old containers' reads fail, ENOTCONN), and
//! mounts anew. Its file handles carry its generation on the connection (held.rs), so a
//! handle the kernel kept from a server before never names one of its own opens.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use eci_init::fd_store::{Client, Kind};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use serde::{Deserialize, Serialize};

use crate::{Error, Layout};

/// The largest request the kernel may hand a reader (fuser reads with the same size).
const READ_BUFFER: usize = (16 << 20) + 4096;

/// What the store keeps beside the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The mount's device number (`major:minor` in mountinfo): the connection's identity.
    pub dev: String,
    /// The kernel's INIT request, hex.
    pub init: String,
    /// fuser's answer to it, hex: a server taking the connection over must give the same
    /// (the kernel keeps the first), or it serves with settings the kernel does not have.
    #[serde(default)]
    pub answer: String,
}

/// A mounted connection, ready for a session.
#[derive(Debug)]
pub struct Connection {
    /// The connection's first device: kept (here and in the store), never read.
    pub master: OwnedFd,
    pub meta: Meta,
    /// Taken back from the store: the kernel already has its INIT answer, and it may hold
    /// inodes and pages of the server before.
    pub resumed: bool,
    /// The store holds it for this server's connection to the store (taken back and kept).
    pub in_store: bool,
}

/// The store's key for the views mounted at `layout`'s mount point.
pub fn store_key(layout: &Layout) -> String {
    format!("eci-views {}", layout.mount().display())
}

/// The connection to serve: the one the store holds for this mount point when the mount is
/// still it and the connection alive, else a new mount (whatever stale mount was there is
/// detached first). A device the store held that is not taken back is dropped from the store
/// and closed, which ends its connection (its containers' reads fail, ENOTCONN). A store that
/// fails the take is no store (`*store` becomes `None`): the running containers lose their
/// views (a new mount), new containers do not.
pub fn open(layout: &Layout, store: &mut Option<Client>) -> Result<Connection, Error> {
    let mnt = layout.mount();
    let key = store_key(layout);
    let Some(c) = store.as_ref() else {
        return mount_new(&mnt);
    };
    let held = match c.take(&[Kind::Fuse], Some(&key)) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("eci-views: take the FUSE connection back from the fd store: {e}; serving without a store");
            c.abandon();
            *store = None;
            return mount_new(&mnt);
        }
    };
    let now = mounted_dev(&mnt);
    let mut keep = None;
    let mut rejected = 0;
    for h in held {
        let meta: Option<Meta> = serde_json::from_str(&h.meta).ok();
        let alive = !aborted(&h.fd);
        match meta {
            Some(meta) if keep.is_none() && alive && now.as_deref() == Some(meta.dev.as_str()) => {
                keep = Some(Connection {
                    master: h.fd,
                    meta,
                    resumed: true,
                    in_store: true,
                })
            }
            _ => rejected += 1,
        }
    }
    if rejected > 0 {
        eprintln!(
            "eci-views: {rejected} FUSE device(s) the fd store held for {} are not the live mount there now ({now:?}): closed",
            mnt.display()
        );
        // Drops every copy of the key this connection owns, the kept one's too: it goes back.
        let _ = c.drop_key(&key);
        if let Some(k) = keep.as_mut() {
            k.in_store = false;
        }
    }
    match keep {
        Some(k) => Ok(k),
        None => mount_new(&mnt),
    }
}

/// Give up a connection taken back that cannot be served: out of the store and closed.
pub fn discard(store: Option<&Client>, layout: &Layout, conn: Connection) {
    if let Some(c) = store {
        let _ = c.drop_key(&store_key(layout));
    }
    drop(conn);
}

/// Whether the connection of `dev` was aborted (the device reports an error).
fn aborted(dev: &OwnedFd) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut p = [PollFd::new(dev.as_fd(), PollFlags::empty())];
    matches!(poll(&mut p, PollTimeout::ZERO), Ok(n) if n > 0)
        && p[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLERR))
}

pub fn mount_new(mnt: &Path) -> Result<Connection, Error> {
    // A server that died without a store leaves its mount answering ENOTCONN (containers made
    // with it keep failing closed); new containers get the new mount, stacked where the old
    // one was.
    for _ in 0..16 {
        if umount2(mnt, MntFlags::MNT_DETACH).is_err() {
            break;
        }
    }
    std::fs::create_dir_all(mnt).map_err(|e| Error::io(mnt, e))?;
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| Error::io(Path::new("/dev/fuse"), e))?;
    let data = format!(
        "fd={},rootmode=40000,user_id=0,group_id=0,allow_other",
        dev.as_raw_fd()
    );
    mount(
        Some("eci-views"),
        mnt,
        Some("fuse.eci-views"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(data.as_str()),
    )
    .map_err(|e| Error::Mount(mnt.to_path_buf(), e.to_string()))?;
    let dev_no = mounted_dev(mnt).ok_or_else(|| {
        Error::Mount(
            mnt.to_path_buf(),
            "the new mount is not in /proc/self/mountinfo".into(),
        )
    })?;
    // The kernel queued INIT when it mounted.
    let mut buf = vec![0u8; READ_BUFFER];
    let n = (&dev)
        .read(&mut buf)
        .map_err(|e| Error::io(Path::new("/dev/fuse"), e))?;
    Ok(Connection {
        master: OwnedFd::from(dev),
        meta: Meta {
            dev: dev_no,
            init: hex(&buf[..n]),
            answer: String::new(),
        },
        resumed: false,
        in_store: false,
    })
}

/// A fuser session on `conn`: the INIT exchange through a socket pair, then a clone of the
/// connection's device in the pair's place (module docs).
pub fn session<FS: fuser::Filesystem>(
    conn: &mut Connection,
    fs: FS,
    config: fuser::Config,
    mnt: &Path,
) -> Result<fuser::Session<FS>, Error> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        Error::Mount(mnt.to_path_buf(), format!("{what}: {e}"))
    };
    let init = unhex(&conn.meta.init).ok_or_else(|| fail("INIT request", &"not hex"))?;
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| fail("socketpair", &e))?;
    let mut ours = std::fs::File::from(ours);
    ours.write_all(&init).map_err(|e| fail("replay INIT", &e))?;
    let acl = config.acl;
    let session =
        fuser::Session::from_fd(fs, theirs, acl, config).map_err(|e| fail("INIT exchange", &e))?;
    let mut answer = vec![0u8; 64 << 10];
    let n = ours
        .read(&mut answer)
        .map_err(|e| fail("INIT answer", &e))?;
    let answer = hex(&answer[..n]);
    if !conn.resumed {
        // Through the device that read the request: the kernel looks the answer up there.
        let bytes = unhex(&answer).expect("hex made above");
        nix::unistd::write(&conn.master, &bytes).map_err(|e| fail("answer INIT", &e))?;
        conn.meta.answer = answer;
    } else if !conn.meta.answer.is_empty() && conn.meta.answer != answer {
        return Err(fail(
            "take the connection over",
            &"this server answers INIT unlike the connection's first server (another eci-views build?)",
        ));
    }
    let clone = clone_device(&conn.master).map_err(|e| fail("FUSE_DEV_IOC_CLONE", &e))?;
    let slot = session.as_fd().as_raw_fd();
    // SAFETY: both descriptors are open; `slot` belongs to the session, whose File now refers
    // to the clone (same number, atomically replaced), and `clone` is closed when it drops.
    if unsafe { libc::dup3(clone.as_raw_fd(), slot, libc::O_CLOEXEC) } < 0 {
        return Err(fail("dup3", &std::io::Error::last_os_error()));
    }
    Ok(session)
}

/// Keep the connection's first device, INIT request and answer in the store (unless it is
/// there for this server already).
pub fn deposit(store: &Client, layout: &Layout, conn: &Connection) {
    if conn.in_store {
        return;
    }
    let meta = serde_json::to_string(&conn.meta).expect("serializable");
    if let Err(e) = store.deposit(&store_key(layout), &meta, Kind::Fuse, conn.master.as_fd()) {
        eprintln!("eci-views: the fd store did not take the FUSE device: {e}");
    }
}

nix::ioctl_read!(fuse_dev_ioc_clone, 229, 0, u32);

/// A new device of the same connection.
fn clone_device(master: &OwnedFd) -> std::io::Result<OwnedFd> {
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")?;
    let mut from = master.as_raw_fd() as u32;
    // SAFETY: FUSE_DEV_IOC_CLONE reads one u32 (the descriptor to clone) from the pointer,
    // which lives for the call; `dev` is an open /dev/fuse.
    unsafe { fuse_dev_ioc_clone(dev.as_raw_fd(), &mut from) }?;
    Ok(OwnedFd::from(dev))
}

/// The `major:minor` of the topmost mount at `mnt` in this process's mount namespace.
pub fn mounted_dev(mnt: &Path) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let at = PathBuf::from(unescape(f.get(4)?));
        (at == mnt).then(|| f[2].to_string())
    })
}

/// mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_junk() {
        let b = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&b), "0001abff");
        assert_eq!(unhex("0001abff").unwrap(), b);
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/run/a\040b"), "/run/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/end\04"), r"/end\04");
    }

    #[test]
    fn the_root_mount_has_a_device_number() {
        let d = mounted_dev(Path::new("/")).unwrap();
        assert!(d.split_once(':').is_some(), "{d}");
        assert!(mounted_dev(Path::new("/nonexistent/mount")).is_none());
    }
}
