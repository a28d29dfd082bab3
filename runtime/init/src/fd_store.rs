//! The fd store (issue 10, SPEC M5): copies of each container's seccomp listeners, held by a
//! process that outlives the mount-vetting supervisor, so a restarted supervisor takes its
//! running containers back instead of leaving their mount calls failing until they end; and
//! the /proc views server's FUSE device, so a restarted views server serves the same mount
//! (the containers' binds of it) instead of leaving their reads failing (runtime/views).
//!
//! In the VM eci-init holds the store (a thread of PID 1, started before the services, on
//! `/run/eci/fd-store.sock` in root-only `/run/eci`; the peer must be uid 0 too), shared by
//! every server there ([`socket_for`]). Where no eci-init runs (a development machine, a test
//! engine) `eci-supervisor fd-store` or `eci-views fd-store` serves the same code
//! ([`serve_alone`]): each server starts one beside its own socket, in a process group of its
//! own, when nothing answers there ([`connect_or_start`]).
//!
//! # Protocol
//!
//! `SOCK_SEQPACKET`, one JSON [`Request`] per message, descriptors as `SCM_RIGHTS`:
//! - `deposit` (one descriptor): the server serves this descriptor; the store keeps a copy,
//!   owned by that connection. No answer, so a registration waits for nothing.
//! - `take`: a server that just started takes every copy of the kinds it asks for (in its
//!   scope: keys equal to it or starting with it and a space) that no live connection owns;
//!   the store answers one [`Reply::Held`] per descriptor, then [`Reply::End`]. Owners that
//!   hung up are ended first, even if the loop has not seen it yet, so a server killed just
//!   before its successor asks is not mistaken for a live one.
//! - `release`: the supervisor could not re-attach that container; the store answers its
//!   calls again (below) until its processes end or a later supervisor takes it.
//! - `drop`: the server will not use that key's descriptors (a FUSE connection that is not the
//!   mount's any more): the store closes its copies.
//! - A request the store cannot read is answered with [`Reply::Error`]; a client waits at most
//!   5 s for an answer, so a store of another build is no store rather than a hang.
//!
//! FUSE devices are not polled (the kernel wakes a device's pollers on every request of its
//! connection); the store drops those whose connection was aborted when a take asks for them,
//! and closes an orphaned one no server took back within [`FUSE_GRACE`].
//!
//! # Fail closed
//!
//! While its owner's connection is open the store only watches a listener for hang-up (every
//! process of its filter has exited: the copy is closed). When the owner goes (killed,
//! crashed) its copies are orphans: the store receives their notifications and answers each
//! with EPERM, so the container's mount calls fail at once rather than waiting for a
//! supervisor. A call the dying helper had already received but not answered stays blocked
//! until a signal interrupts it (the kernel then restarts it as a new notification).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    accept4, bind, connect, getsockopt, listen, recvmsg, sendmsg, socket, sockopt, AddressFamily,
    Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
};
use serde::{Deserialize, Serialize};

/// How long a client waits for the store's answer to a take.
const REPLY_WAIT_SECS: i64 = 5;

/// How long an orphaned FUSE device waits for a server to take it back. Its connection's
/// requests wait meanwhile (and so does anything that looks at the mount point, `ls` of its
/// folder too); after it the device is closed, which ends the connection: its containers'
/// view reads fail (ENOTCONN) and nothing hangs on it any more. eci-init restarts the views
/// server after 1 s; a server that does not come back is not waited for.
/// `ECI_FD_STORE_FUSE_GRACE_MS` changes it (tests).
pub const FUSE_GRACE: std::time::Duration = std::time::Duration::from_secs(15);

fn fuse_grace() -> std::time::Duration {
    static G: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();
    *G.get_or_init(|| {
        std::env::var("ECI_FD_STORE_FUSE_GRACE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(FUSE_GRACE, std::time::Duration::from_millis)
    })
}

/// The store's socket, in eci-init's run folder (/run/eci) and beside a supervisor's socket.
pub const SOCKET_NAME: &str = "fd-store.sock";

/// What a stored descriptor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A seccomp user-notification listener: answered with EPERM while orphaned.
    Listener,
    /// The first /dev/fuse descriptor of a mounted FUSE filesystem: kept, never read, so the
    /// connection outlives its server (requests wait for the next one); dropped once the
    /// connection is aborted (unmounted), which the device reports as an error.
    Fuse,
    /// Any other descriptor (kept, never read).
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// `key` groups a container's descriptors; `meta` is the depositor's, returned as is.
    Deposit {
        key: String,
        meta: String,
        kind: Kind,
    },
    Take {
        kinds: Vec<Kind>,
        /// Only keys equal to it or starting with it and a space; every key when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
    },
    Release {
        key: String,
    },
    /// The connection gives up `key`'s descriptors for good: the store closes its copies.
    Drop {
        key: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Held {
        key: String,
        meta: String,
        kind: Kind,
    },
    End {
        count: usize,
    },
    /// A request the store could not read (a client of another build).
    Error {
        message: String,
    },
}

/// One descriptor handed back by [`Client::take`].
#[derive(Debug)]
pub struct Held {
    pub key: String,
    pub meta: String,
    pub kind: Kind,
    pub fd: OwnedFd,
}

fn send(sock: BorrowedFd<'_>, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let iov = [io::IoSlice::new(data)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// One message and its descriptors; `None` at end of file.
fn recv(sock: BorrowedFd<'_>) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut buf = vec![0u8; 256 << 10];
    let mut cbuf = nix::cmsg_space!([RawFd; 8]);
    let (n, raw) = loop {
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cbuf),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let mut raw = Vec::new();
                for c in msg.cmsgs()? {
                    if let ControlMessageOwned::ScmRights(fds) = c {
                        raw.extend(fds);
                    }
                }
                break (msg.bytes, raw);
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    };
    // SAFETY: SCM_RIGHTS installed these descriptors in this process for this message; nothing
    // else knows their numbers, so each gets exactly one owner.
    let fds: Vec<OwnedFd> = raw
        .into_iter()
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    buf.truncate(n);
    Ok(Some((buf, fds)))
}

/// A supervisor's connection to the store.
pub struct Client {
    sock: OwnedFd,
}

impl Client {
    pub fn connect(path: &Path) -> io::Result<Client> {
        let sock = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        let addr = UnixAddr::new(path)?;
        connect(sock.as_raw_fd(), &addr)?;
        // A store that does not answer a take (hung, or of another build) is no store: the
        // caller goes on without it instead of waiting forever.
        nix::sys::socket::setsockopt(
            &sock,
            sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(REPLY_WAIT_SECS, 0),
        )?;
        Ok(Client { sock })
    }

    /// The store keeps a copy of `fd` for this connection.
    pub fn deposit(&self, key: &str, meta: &str, kind: Kind, fd: BorrowedFd<'_>) -> io::Result<()> {
        let r = Request::Deposit {
            key: key.into(),
            meta: meta.into(),
            kind,
        };
        send(
            self.sock.as_fd(),
            &serde_json::to_vec(&r).expect("serializable"),
            &[fd.as_raw_fd()],
        )
    }

    /// Every descriptor of `kinds` (and in `scope`, when given: keys equal to it or starting
    /// with it and a space) that no live connection owns; this connection owns them from now on.
    pub fn take(&self, kinds: &[Kind], scope: Option<&str>) -> io::Result<Vec<Held>> {
        let r = Request::Take {
            kinds: kinds.to_vec(),
            scope: scope.map(str::to_string),
        };
        send(
            self.sock.as_fd(),
            &serde_json::to_vec(&r).expect("serializable"),
            &[],
        )?;
        let mut held = Vec::new();
        loop {
            let (b, mut fds) = recv(self.sock.as_fd())?
                .ok_or_else(|| io::Error::other("the fd store hung up during a take"))?;
            match serde_json::from_slice::<Reply>(&b).map_err(io::Error::other)? {
                Reply::Held { key, meta, kind } => {
                    let fd = fds.pop().ok_or_else(|| {
                        io::Error::other("the fd store sent an entry without its descriptor")
                    })?;
                    held.push(Held {
                        key,
                        meta,
                        kind,
                        fd,
                    });
                }
                Reply::Error { message } => {
                    return Err(io::Error::other(format!("the fd store: {message}")))
                }
                Reply::End { count } if count == held.len() => return Ok(held),
                Reply::End { count } => {
                    return Err(io::Error::other(format!(
                        "the fd store announced {count} descriptors and sent {}",
                        held.len()
                    )))
                }
            }
        }
    }

    /// This connection gives up `key`'s descriptors: the store answers their calls (EPERM).
    pub fn release(&self, key: &str) -> io::Result<()> {
        let r = Request::Release { key: key.into() };
        send(
            self.sock.as_fd(),
            &serde_json::to_vec(&r).expect("serializable"),
            &[],
        )
    }

    /// Ends this connection for the store now (after a take that failed or timed out, so
    /// that what the store may still hand it becomes orphans again, not this connection's).
    pub fn abandon(&self) {
        let _ = nix::sys::socket::shutdown(self.sock.as_raw_fd(), nix::sys::socket::Shutdown::Both);
    }

    /// This connection gives up `key`'s descriptors for good: the store closes its copies.
    pub fn drop_key(&self, key: &str) -> io::Result<()> {
        let r = Request::Drop { key: key.into() };
        send(
            self.sock.as_fd(),
            &serde_json::to_vec(&r).expect("serializable"),
            &[],
        )
    }
}

/// Where a server's store is: `ECI_FD_STORE_SOCKET`; else eci-init's in the VM
/// (`/run/eci/fd-store.sock`, present once eci-init runs), so every service and every server a
/// runtime starts there shares the store that outlives them all; else `fd-store.sock` beside
/// `own_socket`, the server's own socket (a development machine, a test engine).
pub fn socket_for(own_socket: &Path) -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("ECI_FD_STORE_SOCKET") {
        return p.into();
    }
    let vm = Path::new(eci_facts::vm_paths::RUN_DIR).join(SOCKET_NAME);
    if vm.exists() {
        return vm;
    }
    own_socket.with_file_name(SOCKET_NAME)
}

/// The command line that serves a store of its own at a socket: `PROGRAM fd-store --socket
/// PATH`, which eci-supervisor and eci-views both answer with [`serve_alone`].
pub const SERVE_ALONE_COMMAND: &str = "fd-store";

/// A connection to the store at `path`; when none answers, this very program is started as
/// `fd-store --socket PATH` ([`SERVE_ALONE_COMMAND`]) to serve it (in a process group of its
/// own, so killing the caller leaves it) and waited for up to 3 s. `None`: no store (the
/// caller says what a restart then loses).
pub fn connect_or_start(path: &Path) -> Option<Client> {
    use std::os::unix::process::CommandExt;
    if let Ok(c) = Client::connect(path) {
        return Some(c);
    }
    let mut child = std::process::Command::new("/proc/self/exe")
        .arg(SERVE_ALONE_COMMAND)
        .arg("--socket")
        .arg(path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .current_dir("/")
        .process_group(0)
        .spawn()
        .ok()?;
    // A thread reaps it should it ever end, so it never lingers as the caller's zombie.
    std::thread::spawn(move || child.wait());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        if let Ok(c) = Client::connect(path) {
            return Some(c);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    None
}

/// A store of its own at `socket` (where no eci-init runs), until the process is killed. A
/// second one for the same socket returns at once (the lock beside it), so it never replaces
/// one that holds descriptors.
pub fn serve_alone(socket: &Path, log: fn(&str)) -> io::Result<()> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let lock_path = socket.with_extension("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)?;
    let _lock = match nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, Errno::EWOULDBLOCK)) => return Ok(()),
        Err((_, e)) => return Err(e.into()),
    };
    let s = bind_socket(socket)?;
    log(&format!("fd store: serving {}", socket.display()));
    serve(s, log);
    Ok(())
}

/// Bind the store's socket (a stale one is replaced): root's alone.
pub fn bind_socket(path: &Path) -> io::Result<OwnedFd> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let s = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(s.as_raw_fd(), &UnixAddr::new(path)?)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    listen(&s, Backlog::new(16).expect("valid backlog"))?;
    Ok(s)
}

/// eci-init's wiring: bind `path` now (before any service starts) and serve in a thread of
/// its own; lines go through `log`.
pub fn start(path: &Path, log: fn(&str)) -> io::Result<()> {
    let s = bind_socket(path)?;
    std::thread::Builder::new()
        .name("fd-store".into())
        .spawn(move || serve(s, log))?;
    Ok(())
}

struct Record {
    key: String,
    meta: String,
    kind: Kind,
    fd: OwnedFd,
    /// The connection that serves it; `None`: an orphan, answered by the store.
    owner: Option<u64>,
    /// When it became an orphan.
    orphaned: Option<std::time::Instant>,
}

/// The user-notification ioctls of linux/seccomp.h.
const NOTIF_RECV: libc::Ioctl = libc::SECCOMP_IOCTL_NOTIF_RECV;
const NOTIF_SEND: libc::Ioctl = libc::SECCOMP_IOCTL_NOTIF_SEND;

/// Receive one notification of an orphaned listener and fail its call with EPERM. Errors are
/// expected and harmless (the caller was interrupted, or another reader took it).
fn refuse_one(listener: BorrowedFd<'_>) {
    // SAFETY: an all-zero seccomp_notif is valid (plain integers), and the kernel requires
    // the buffer zeroed before NOTIF_RECV.
    let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: NOTIF_RECV writes one struct seccomp_notif into req, which is that size.
    if unsafe { libc::ioctl(listener.as_raw_fd(), NOTIF_RECV, &mut req) } != 0 {
        return;
    }
    let resp = libc::seccomp_notif_resp {
        id: req.id,
        val: 0,
        error: -libc::EPERM,
        flags: 0,
    };
    // SAFETY: NOTIF_SEND reads one struct seccomp_notif_resp from resp, which lives for the call.
    unsafe { libc::ioctl(listener.as_raw_fd(), NOTIF_SEND, &resp) };
}

/// Only the store's own user (root, in the VM) may connect: the socket's folder is root's
/// already; this also stops a process that was handed a path to it some other way.
fn peer_is_owner(conn: BorrowedFd<'_>) -> bool {
    getsockopt(&conn, sockopt::PeerCredentials)
        .is_ok_and(|c| c.uid() == nix::unistd::geteuid().as_raw())
}

/// Serve until the process ends.
pub fn serve(listener: OwnedFd, log: fn(&str)) {
    let mut st = Store {
        conns: HashMap::new(),
        records: Vec::new(),
        log,
    };
    let mut next_conn = 0u64;
    loop {
        let conn_ids: Vec<u64> = st.conns.keys().copied().collect();
        // A FUSE device is not polled: the kernel wakes its pollers on every request of the
        // connection, which would wake the store for each read of a view. Dead ones are swept
        // when a server asks for them (`take`).
        let watched: Vec<usize> = (0..st.records.len())
            .filter(|i| st.records[*i].kind != Kind::Fuse)
            .collect();
        let mut fds = vec![PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        fds.extend(
            conn_ids
                .iter()
                .map(|c| PollFd::new(st.conns[c].as_fd(), PollFlags::POLLIN)),
        );
        fds.extend(watched.iter().map(|i| {
            let r = &st.records[*i];
            // Owned listeners: hang-up only (their supervisor reads them); orphans: calls too.
            let ev = if r.owner.is_none() && r.kind == Kind::Listener {
                PollFlags::POLLIN
            } else {
                PollFlags::empty()
            };
            PollFd::new(r.fd.as_fd(), ev)
        }));
        // Woken in time to close the first orphaned FUSE device whose grace ends.
        let wake = st
            .records
            .iter()
            .filter(|r| r.kind == Kind::Fuse)
            .filter_map(|r| r.orphaned)
            .map(|t| (t + fuse_grace()).saturating_duration_since(std::time::Instant::now()))
            .min();
        let timeout = match wake {
            Some(d) => PollTimeout::try_from(d.as_millis().min(60_000) as i32 + 1)
                .unwrap_or(PollTimeout::MAX),
            None => PollTimeout::NONE,
        };
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => {
                log(&format!("fd store: poll: {e}; stopped"));
                return;
            }
        }

        let ev: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        let (ev_listen, rest) = ev.split_first().expect("the socket is polled");
        let (ev_conns, ev_records) = rest.split_at(conn_ids.len());

        // Orphaned calls first: they are callers waiting.
        let mut closed = Vec::new();
        for (i, e) in watched.iter().zip(ev_records) {
            if e.contains(PollFlags::POLLIN) {
                refuse_one(st.records[*i].fd.as_fd());
            } else if e.intersects(GONE) {
                closed.push(*i);
            }
        }
        closed.sort_unstable();
        for i in closed.into_iter().rev() {
            st.records.swap_remove(i);
        }

        // Ends before requests: a server's take finds what a server gone in the same round
        // held.
        let mut msgs = Vec::new();
        for (c, e) in conn_ids.iter().zip(ev_conns) {
            if e.is_empty() {
                continue;
            }
            match recv(st.conns[c].as_fd()) {
                Ok(Some((b, fds))) => msgs.push((*c, b, fds)),
                _ => st.end(*c),
            }
        }
        // Takes last: what the others sent this round (a deposit of a server that has just
        // gone) is in the store before a take settles their owners.
        let (takes, rest): (Vec<_>, Vec<_>) = msgs
            .into_iter()
            .partition(|(_, b, _)| matches!(serde_json::from_slice(b), Ok(Request::Take { .. })));
        for (c, b, fds) in rest.into_iter().chain(takes) {
            if st.conns.contains_key(&c) {
                st.handle(c, &b, fds);
            }
        }

        if !ev_listen.is_empty() {
            match accept4(&listener, SockFlag::SOCK_CLOEXEC) {
                Ok(conn) => {
                    if peer_is_owner(conn.as_fd()) {
                        st.conns.insert(next_conn, conn);
                        next_conn += 1;
                    } else {
                        log("fd store: refused a connection from another user");
                    }
                }
                Err(Errno::EINTR) | Err(Errno::ECONNABORTED) => {}
                Err(e) => log(&format!("fd store: accept: {e}")),
            }
        }
        // Last: it removes records, whose places the steps above count by.
        st.expire();
    }
}

const GONE: PollFlags = PollFlags::POLLHUP
    .union(PollFlags::POLLERR)
    .union(PollFlags::POLLNVAL);

/// Whether `fd` reports `flags` now (a poll that does not wait).
fn reports(fd: BorrowedFd<'_>, flags: PollFlags) -> bool {
    let mut p = [PollFd::new(fd, PollFlags::POLLIN)];
    matches!(poll(&mut p, PollTimeout::ZERO), Ok(n) if n > 0)
        && p[0].revents().is_some_and(|r| r.intersects(flags))
}

/// Whether the peer of `sock` hangs up within `ms` milliseconds (what it sends meanwhile is
/// left for the caller to read).
fn hangs_up_within(sock: BorrowedFd<'_>, ms: u16) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(ms.into());
    loop {
        if reports(sock, PollFlags::POLLHUP) {
            return true;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        std::thread::sleep(left.min(std::time::Duration::from_millis(10)));
    }
}

/// Whether `key` is in `scope`: the scope itself, or a key that starts with it and a space.
fn in_scope(key: &str, scope: Option<&str>) -> bool {
    scope.is_none_or(|s| key == s || key.strip_prefix(s).is_some_and(|r| r.starts_with(' ')))
}

struct Store {
    conns: HashMap<u64, OwnedFd>,
    records: Vec<Record>,
    log: fn(&str),
}

impl Store {
    /// Orphaned FUSE devices whose grace ended are closed ([`FUSE_GRACE`]).
    fn expire(&mut self) {
        let log = self.log;
        self.records.retain(|r| {
            let over =
                r.kind == Kind::Fuse && r.orphaned.is_some_and(|t| t.elapsed() >= fuse_grace());
            if over {
                log(&format!(
                    "fd store: no server took {} back within {:.1} s: closed, its reads fail (ENOTCONN)",
                    r.key,
                    fuse_grace().as_secs_f64()
                ));
            }
            !over
        });
    }

    /// A connection ended: what it owned becomes orphans.
    fn end(&mut self, c: u64) {
        self.conns.remove(&c);
        let (mut n, mut fuse) = (0, 0);
        let mut keys = std::collections::BTreeSet::new();
        for r in self.records.iter_mut().filter(|r| r.owner == Some(c)) {
            r.owner = None;
            r.orphaned = Some(std::time::Instant::now());
            match r.kind {
                Kind::Listener => {
                    n += 1;
                    keys.insert(r.key.clone());
                }
                Kind::Fuse => fuse += 1,
                Kind::Other => {}
            }
        }
        if n > 0 {
            (self.log)(&format!(
                "fd store: the supervisor went; {n} descriptors of {} containers are kept, their mount calls fail (EPERM) until a supervisor takes them back",
                keys.len()
            ));
        }
        if fuse > 0 {
            (self.log)(&format!(
                "fd store: a FUSE server went; {fuse} connection(s) kept, their requests wait for the next server"
            ));
        }
    }

    /// Before a take: owners that hung up but whose end this loop has not seen yet (a server
    /// killed just before its successor asked) end now, after what they still had sent; FUSE
    /// devices whose connection was aborted are dropped.
    fn settle(&mut self, taker: u64, kinds: &[Kind], scope: Option<&str>) {
        let owners: std::collections::BTreeSet<u64> = self
            .records
            .iter()
            .filter(|r| kinds.contains(&r.kind) && in_scope(&r.key, scope))
            .filter_map(|r| r.owner)
            .filter(|o| *o != taker)
            .collect();
        for o in owners {
            // One FUSE server per mount (its lock): a live owner of the device another server
            // asks for is a server on its way out (its lock went before this connection); its
            // end is waited for, briefly.
            let dying = kinds.contains(&Kind::Fuse)
                && self
                    .records
                    .iter()
                    .any(|r| r.owner == Some(o) && r.kind == Kind::Fuse && in_scope(&r.key, scope));
            let hung_up = self.conns.get(&o).is_some_and(|s| {
                reports(s.as_fd(), PollFlags::POLLHUP)
                    || (dying && hangs_up_within(s.as_fd(), 1000))
            });
            if !hung_up {
                continue;
            }
            while let Some(Ok(Some((b, fds)))) = self.conns.get(&o).map(|s| recv(s.as_fd())) {
                // Deposits, releases and drops of the gone server still count; nothing is
                // answered to it.
                if !matches!(serde_json::from_slice(&b), Ok(Request::Take { .. })) {
                    self.handle(o, &b, fds);
                }
            }
            self.end(o);
        }
        self.records
            .retain(|r| r.kind != Kind::Fuse || !reports(r.fd.as_fd(), PollFlags::POLLERR));
    }

    fn handle(&mut self, conn: u64, msg: &[u8], mut fds: Vec<OwnedFd>) {
        let log = self.log;
        match serde_json::from_slice::<Request>(msg) {
            Ok(Request::Deposit { key, meta, kind }) => match fds.pop() {
                Some(fd) => self.records.push(Record {
                    key,
                    meta,
                    kind,
                    fd,
                    owner: Some(conn),
                    orphaned: None,
                }),
                None => log(&format!(
                    "fd store: a deposit for {key} without its descriptor"
                )),
            },
            Ok(Request::Take { kinds, scope }) => {
                self.settle(conn, &kinds, scope.as_deref());
                let Some(sock) = self.conns.get(&conn) else {
                    return;
                };
                let mut count = 0;
                for r in self.records.iter_mut().filter(|r| {
                    r.owner.is_none()
                        && kinds.contains(&r.kind)
                        && in_scope(&r.key, scope.as_deref())
                }) {
                    let reply = Reply::Held {
                        key: r.key.clone(),
                        meta: r.meta.clone(),
                        kind: r.kind,
                    };
                    let b = serde_json::to_vec(&reply).expect("serializable");
                    if send(sock.as_fd(), &b, &[r.fd.as_raw_fd()]).is_err() {
                        // The taker went; what was not sent stays an orphan.
                        return;
                    }
                    r.owner = Some(conn);
                    r.orphaned = None;
                    count += 1;
                }
                let b = serde_json::to_vec(&Reply::End { count }).expect("serializable");
                let _ = send(sock.as_fd(), &b, &[]);
            }
            Ok(Request::Release { key }) => {
                for r in self
                    .records
                    .iter_mut()
                    .filter(|r| r.owner == Some(conn) && r.key == key)
                {
                    r.owner = None;
                    r.orphaned = Some(std::time::Instant::now());
                }
            }
            Ok(Request::Drop { key }) => {
                self.records
                    .retain(|r| !(r.owner == Some(conn) && r.key == key));
            }
            Err(e) => {
                log(&format!("fd store: bad request: {e}"));
                // Answered, so a client of another build waiting for a reply learns it at once.
                if let Some(sock) = self.conns.get(&conn) {
                    let b = serde_json::to_vec(&Reply::Error {
                        message: format!("bad request: {e}"),
                    })
                    .expect("serializable");
                    let _ = send(sock.as_fd(), &b, &[]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_log(_: &str) {}

    fn store() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fd-store.sock");
        let s = bind_socket(&path).unwrap();
        std::thread::spawn(move || serve(s, no_log));
        (dir, path)
    }

    fn same_file(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> bool {
        let (x, y) = (
            nix::sys::stat::fstat(a).unwrap(),
            nix::sys::stat::fstat(b).unwrap(),
        );
        (x.st_dev, x.st_ino) == (y.st_dev, y.st_ino)
    }

    #[test]
    fn a_new_client_takes_what_a_gone_one_deposited_and_nothing_a_live_one_owns() {
        let (_dir, path) = store();
        let (r1, _w1) = nix::unistd::pipe().unwrap();
        let (r2, _w2) = nix::unistd::pipe().unwrap();
        let gone = Client::connect(&path).unwrap();
        gone.deposit("c1", "{\"a\":1}", Kind::Other, r1.as_fd())
            .unwrap();
        let live = Client::connect(&path).unwrap();
        live.deposit("c2", "m2", Kind::Other, r2.as_fd()).unwrap();
        drop(gone);
        // The store sees the hang-up before the take (poll order is not guaranteed: retry).
        let mut held = Vec::new();
        for _ in 0..100 {
            let c = Client::connect(&path).unwrap();
            held = c.take(&[Kind::Other], None).unwrap();
            if !held.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(held.len(), 1, "{held:?}");
        assert_eq!(
            (held[0].key.as_str(), held[0].meta.as_str()),
            ("c1", "{\"a\":1}")
        );
        assert!(same_file(held[0].fd.as_fd(), r1.as_fd()));
        // The taker above went too: its entries are orphans again; a release hands them back.
        let again = Client::connect(&path).unwrap();
        let mut got = Vec::new();
        for _ in 0..100 {
            got = again.take(&[Kind::Other], None).unwrap();
            if !got.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(got.len(), 1);
        again.release("c1").unwrap();
        let third = Client::connect(&path).unwrap();
        let mut got = Vec::new();
        for _ in 0..100 {
            got = third.take(&[Kind::Other], Some("c1")).unwrap();
            if !got.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(
            got.iter().map(|h| h.key.as_str()).collect::<Vec<_>>(),
            ["c1"]
        );
        drop(live);
    }

    #[test]
    fn a_take_hands_over_only_the_kinds_and_key_it_asks_for() {
        let (_dir, path) = store();
        let (r1, _w1) = nix::unistd::pipe().unwrap();
        let (r2, _w2) = nix::unistd::pipe().unwrap();
        let (r3, _w3) = nix::unistd::pipe().unwrap();
        let gone = Client::connect(&path).unwrap();
        gone.deposit("views a", "", Kind::Other, r1.as_fd())
            .unwrap();
        gone.deposit("views b", "", Kind::Other, r2.as_fd())
            .unwrap();
        gone.deposit("views b", "", Kind::Listener, r3.as_fd())
            .unwrap();
        drop(gone);
        let c = Client::connect(&path).unwrap();
        let mut got = Vec::new();
        for _ in 0..100 {
            got = c.take(&[Kind::Other], Some("views b")).unwrap();
            if !got.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(same_file(got[0].fd.as_fd(), r2.as_fd()));
        assert!(c.take(&[Kind::Fuse], None).unwrap().is_empty());
        let rest = c.take(&[Kind::Other, Kind::Listener], None).unwrap();
        let mut kinds: Vec<_> = rest.iter().map(|h| (h.key.as_str(), h.kind)).collect();
        kinds.sort_by_key(|k| k.0);
        assert_eq!(
            kinds,
            [("views a", Kind::Other), ("views b", Kind::Listener)]
        );
    }

    #[test]
    fn scopes_match_the_key_or_a_key_that_continues_after_a_space() {
        assert!(in_scope(
            "eci-views /run/eci-views/fs",
            Some("eci-views /run/eci-views/fs")
        ));
        assert!(!in_scope(
            "eci-views /run/eci-views/fs2",
            Some("eci-views /run/eci-views/fs")
        ));
        assert!(in_scope(
            "/run/eci/supervisor.sock /run/docker/x userns 4:5",
            Some("/run/eci/supervisor.sock")
        ));
        assert!(!in_scope(
            "/run/eci/supervisor.sock2 /x",
            Some("/run/eci/supervisor.sock")
        ));
        assert!(in_scope("anything", None));
    }

    #[test]
    fn a_descriptor_its_taker_drops_is_closed_for_good() {
        let (_dir, path) = store();
        let (r, _w) = nix::unistd::pipe().unwrap();
        let gone = Client::connect(&path).unwrap();
        gone.deposit("k", "m", Kind::Fuse, r.as_fd()).unwrap();
        drop(gone);
        // No retry: the store ends a hung-up owner before it answers a take.
        let c = Client::connect(&path).unwrap();
        let got = c.take(&[Kind::Fuse], Some("k")).unwrap();
        assert_eq!(got.len(), 1);
        assert!(same_file(got[0].fd.as_fd(), r.as_fd()));
        c.drop_key("k").unwrap();
        drop(c);
        let d = Client::connect(&path).unwrap();
        assert!(d.take(&[Kind::Fuse], None).unwrap().is_empty());
    }

    #[test]
    fn a_take_ends_an_owner_that_hung_up_before_the_loop_saw_it() {
        use nix::sys::socket::socketpair;
        let pair = || {
            socketpair(
                AddressFamily::Unix,
                SockType::SeqPacket,
                None,
                SockFlag::SOCK_CLOEXEC,
            )
            .unwrap()
        };
        let (gone_store_end, gone_server_end) = pair();
        let (taker_store_end, taker_server_end) = pair();
        let (r, _w) = nix::unistd::pipe().unwrap();
        let mut st = Store {
            conns: HashMap::from([(0, gone_store_end), (1, taker_store_end)]),
            records: vec![Record {
                key: "k".into(),
                meta: String::new(),
                kind: Kind::Fuse,
                fd: r,
                owner: Some(0),
                orphaned: None,
            }],
            log: no_log,
        };
        drop(gone_server_end);
        let take = serde_json::to_vec(&Request::Take {
            kinds: vec![Kind::Fuse],
            scope: Some("k".into()),
        })
        .unwrap();
        st.handle(1, &take, Vec::new());
        let (b, fds) = recv(taker_server_end.as_fd()).unwrap().unwrap();
        assert!(matches!(
            serde_json::from_slice(&b).unwrap(),
            Reply::Held { .. }
        ));
        assert_eq!(fds.len(), 1);
        assert!(!st.conns.contains_key(&0));
        assert_eq!(st.records[0].owner, Some(1));
    }

    #[test]
    fn an_orphaned_fuse_device_is_closed_when_its_grace_ends() {
        let rec = |kind, since: std::time::Duration| {
            let (r, _w) = nix::unistd::pipe().unwrap();
            Record {
                key: format!("{kind:?} {}", since.as_secs()),
                meta: String::new(),
                kind,
                fd: r,
                owner: None,
                orphaned: std::time::Instant::now().checked_sub(since),
            }
        };
        let late = FUSE_GRACE + std::time::Duration::from_secs(1);
        let mut st = Store {
            conns: HashMap::new(),
            records: vec![
                rec(Kind::Fuse, late),
                rec(Kind::Fuse, std::time::Duration::from_secs(1)),
                rec(Kind::Other, late),
            ],
            log: no_log,
        };
        st.expire();
        let left: Vec<&str> = st.records.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(left, ["Fuse 1", &format!("Other {}", late.as_secs())]);
    }

    #[test]
    fn a_request_the_store_cannot_read_is_answered_with_an_error() {
        let (_dir, path) = store();
        let c = Client::connect(&path).unwrap();
        send(c.sock.as_fd(), br#"{"take":"everything"}"#, &[]).unwrap();
        let (b, _) = recv(c.sock.as_fd()).unwrap().unwrap();
        match serde_json::from_slice::<Reply>(&b).unwrap() {
            Reply::Error { message } => assert!(message.contains("bad request"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_descriptor_whose_other_end_hung_up_is_dropped() {
        let (_dir, path) = store();
        let (r, w) = nix::unistd::pipe().unwrap();
        let c = Client::connect(&path).unwrap();
        c.deposit("c", "", Kind::Other, r.as_fd()).unwrap();
        drop(c);
        drop(r);
        // The writer's end closes: the store sees POLLHUP on its copy and closes it.
        drop(w);
        std::thread::sleep(std::time::Duration::from_millis(100));
        let t = Client::connect(&path).unwrap();
        assert!(t.take(&[Kind::Other], None).unwrap().is_empty());
    }

    #[test]
    fn requests_round_trip_as_json() {
        let r = Request::Deposit {
            key: "k".into(),
            meta: "m".into(),
            kind: Kind::Listener,
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"deposit":{"key":"k","meta":"m","kind":"listener"}}"#);
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        let t = Request::Take {
            kinds: vec![Kind::Fuse],
            scope: None,
        };
        let s = serde_json::to_string(&t).unwrap();
        assert_eq!(s, r#"{"take":{"kinds":["fuse"]}}"#);
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), t);
    }
}
