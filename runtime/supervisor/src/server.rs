//! The supervisor's socket: eci-runc registers each container process's listener here
//! ([`eci_runc::seccomp::Register`]); the supervisor checks it against the container's state
//! and hands it to the container's helper, which receives and answers its notifications.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use eci_runc::seccomp::{Register, Registered};

use crate::helper::Helper;
use crate::proto::HelperInit;
use crate::{store, sys, Error};

/// One container the supervisor serves.
pub struct Container {
    /// The container's user namespace (nsfs device and inode).
    pub userns: (u64, u64),
    /// Its one helper, which serves all its listeners.
    pub helper: Mutex<Helper>,
    /// What the fd store keeps beside its listeners, and the same as JSON.
    pub meta: store::Meta,
    pub meta_json: String,
}

type Table = Mutex<HashMap<(PathBuf, String), Arc<Container>>>;

fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Serve until killed. A second supervisor for the same socket exits at once (`Ok`): the lock
/// beside the socket says one is already serving.
pub fn serve(socket: &Path) -> Result<(), Error> {
    let dir = socket.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(|e| Error::Io(format!("create {}", dir.display()), e))?;
    let lock_path = socket.with_extension("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::Io(format!("open {}", lock_path.display()), e))?;
    let _lock = match nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(()),
        Err((_, e)) => return Err(Error::Io(format!("lock {}", lock_path.display()), e.into())),
    };
    // Before the socket answers: an exec into a container the killed predecessor served finds
    // the container re-attached, not half-way.
    store::connect(socket);
    reattach();
    let _ = std::fs::remove_file(socket);
    use nix::sys::socket::{
        bind, listen, socket as mk, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
    };
    let s = mk(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| Error::Io("socket".into(), e.into()))?;
    let addr = UnixAddr::new(socket).map_err(|e| Error::Io("socket path".into(), e.into()))?;
    bind(s.as_raw_fd(), &addr)
        .map_err(|e| Error::Io(format!("bind {}", socket.display()), e.into()))?;
    // Only VM root may register listeners.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::Io(format!("chmod {}", socket.display()), e))?;
    listen(&s, Backlog::new(64).expect("valid backlog"))
        .map_err(|e| Error::Io("listen".into(), e.into()))?;
    eprintln!("eci-supervisor: serving {}", socket.display());
    if !eci_runc::seccomp::kernel_waits_killable() {
        // eci-runc then loads the vetting filter without the flag (its container's init has
        // no log to say so): a caller interrupted by a signal while its call is being made asks
        // again, and a mount or umount already made is asked for twice.
        eprintln!(
            "eci-supervisor: this kernel has no SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux \
             5.19): a vetted call interrupted by a signal is asked again after it was made"
        );
    }
    let bound = std::fs::metadata(socket).map(|m| m.ino()).ok();
    loop {
        let conn = match nix::sys::socket::accept4(&s, SockFlag::SOCK_CLOEXEC) {
            Ok(fd) => fd,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::Io("accept".into(), e.into())),
        };
        if replaced() {
            // An upgrade replaced this program: the new one serves new registrations. This
            // one stops listening (the socket goes, the lock is released) and keeps serving
            // the listeners it has until their containers end.
            let _ = answer(
                &conn,
                &Registered::Refused {
                    msg: RETIRED.into(),
                },
            );
            if std::fs::metadata(socket).map(|m| m.ino()).ok() == bound {
                let _ = std::fs::remove_file(socket);
            }
            drop(_lock);
            drop(s);
            eprintln!("eci-supervisor: this program was replaced; no new registrations");
            // Serve the containers this program has until their helpers are gone, then leave
            // (the helpers would die with it: PR_SET_PDEATHSIG).
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
                let mut t = table().lock().unwrap_or_else(|p| p.into_inner());
                forget_exited(&mut t);
                if t.is_empty() {
                    eprintln!("eci-supervisor: retired, no container left");
                    std::process::exit(0);
                }
            }
        }
        std::thread::spawn(move || {
            if let Err(e) = client(conn) {
                eprintln!("eci-supervisor: registration: {e}");
            }
        });
    }
}

/// The refusal a retiring supervisor answers; eci-runc then starts the new program.
pub use eci_runc::seccomp::RETIRED;

/// The file this process runs was replaced or removed (an upgrade).
fn replaced() -> bool {
    std::fs::read_link("/proc/self/exe")
        .map(|p| p.to_string_lossy().ends_with(" (deleted)"))
        .unwrap_or(false)
}

fn answer(conn: &OwnedFd, r: &Registered) -> io::Result<()> {
    sys::send(
        conn.as_raw_fd(),
        &serde_json::to_vec(r).expect("serializable"),
        &[],
    )
}

fn client(conn: OwnedFd) -> io::Result<()> {
    let Some((b, mut fds)) = sys::recv(conn.as_raw_fd())? else {
        return Ok(());
    };
    let result = (|| -> Result<(), String> {
        let reg: Register =
            serde_json::from_slice(&b).map_err(|e| format!("bad registration: {e}"))?;
        let listener = fds.pop().ok_or("a registration without its listener")?;
        let c = container(&reg)?;
        let mut h = c.helper.lock().unwrap_or_else(|p| p.into_inner());
        h.add_listener(&listener)
            .map_err(|e| format!("container {}: {e}", reg.id))?;
        store::deposit(&c.meta, &c.meta_json, &listener);
        Ok(())
    })();
    match result {
        Err(msg) => answer(&conn, &Registered::Refused { msg }),
        Ok(()) => answer(&conn, &Registered::Ok),
    }
}

fn ns_id(pid: i32, kind: &str) -> Result<(u64, u64), String> {
    let m = std::fs::metadata(format!("/proc/{pid}/ns/{kind}"))
        .map_err(|e| format!("/proc/{pid}/ns/{kind}: {e}"))?;
    Ok((m.dev(), m.ino()))
}

/// The container a registration belongs to: found, or (for an init, or an exec after the
/// supervisor restarted) set up from the container's state.
fn container(reg: &Register) -> Result<Arc<Container>, String> {
    let key = (reg.state_root.clone(), reg.id.clone());
    let mut t = table().lock().unwrap_or_else(|p| p.into_inner());
    // A helper ends with its container's last process (or was killed): forget it. An exec
    // into a container whose helper was killed gets a new helper. (Exited helpers are also
    // pruned as they exit, see `reap_when_gone`; this covers one that exited just now.)
    forget_exited(&mut t);
    if let Some(c) = t.get(&key) {
        if reg.init {
            // A new container that reuses the id of one whose listeners are not all gone yet.
            if let Some(old) = t.remove(&key) {
                store::release(&old.meta);
            }
        } else {
            if ns_id(reg.pid, "user")? != c.userns {
                return Err(format!(
                    "pid {} is not in container {}'s user namespace",
                    reg.pid, reg.id
                ));
            }
            return Ok(c.clone());
        }
    }
    let st = eci_runc::State::load(&reg.state_root, &reg.id).map_err(|e| e.to_string())?;
    if reg.init && st.pid != reg.pid {
        return Err(format!(
            "pid {} is not the init of container {} ({})",
            reg.pid, reg.id, st.pid
        ));
    }
    let c = Arc::new(make_container(&reg.state_root, &reg.id, st.pid, None)?);
    if !reg.init && ns_id(reg.pid, "user")? != c.userns {
        return Err(format!(
            "pid {} is not in container {}'s user namespace",
            reg.pid, reg.id
        ));
    }
    let pid = c.helper.lock().unwrap_or_else(|p| p.into_inner()).pid();
    t.insert(key, c.clone());
    reap_when_gone(pid);
    Ok(c)
}

/// Forget every container whose helper has exited; that reaps the helper.
fn prune() {
    forget_exited(&mut table().lock().unwrap_or_else(|p| p.into_inner()));
}

/// Drop the containers whose helpers exited (reaping them). The fd store answers whatever
/// calls their listeners still bring (a killed helper's container): EPERM, not a wait.
fn forget_exited(t: &mut HashMap<(PathBuf, String), Arc<Container>>) {
    t.retain(|_, c| {
        let gone = c.helper.lock().unwrap_or_else(|p| p.into_inner()).exited();
        if gone {
            store::release(&c.meta);
        }
        !gone
    });
}

/// Reap a helper as soon as it exits. Without this a helper whose container ended stayed a
/// zombie of the supervisor until the next container registered (a VM left idle after its
/// last container keeps one). `WNOWAIT` only watches: [`prune`] reaps through the `Child`, so
/// the pid is never freed behind its owner's back; should it belong to a newer helper by then
/// (the entry was replaced and its helper reaped on drop), the prune is merely early.
fn reap_when_gone(pid: u32) {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    std::thread::spawn(move || loop {
        match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Err(nix::errno::Errno::EINTR) => continue,
            // Exited, or already reaped by a drop (ECHILD): either way prune.
            _ => {
                prune();
                return;
            }
        }
    });
}

/// Take back what the fd store holds of containers a killed predecessor served: each gets a
/// new helper serving its listeners, or is named here and left to the store, which fails its
/// mount calls (EPERM) until its processes end.
fn reattach() {
    for o in store::take() {
        match reattach_one(&o) {
            Ok((id, n)) => eprintln!(
                "eci-supervisor: re-attached container {id} ({n} listeners) from the fd store"
            ),
            Err(why) => {
                eprintln!(
                    "eci-supervisor: could not re-attach {why}; its mount calls fail (EPERM)"
                );
                store::release_held(&o.key);
            }
        }
    }
}

/// Re-attach one container; the error names it.
fn reattach_one(o: &store::Orphan) -> Result<(String, usize), String> {
    let meta: store::Meta = serde_json::from_str(&o.meta)
        .map_err(|e| format!("{}: unreadable record in the fd store: {e}", o.key))?;
    let name = format!(
        "container {} (state root {})",
        meta.id,
        meta.state_root.display()
    );
    let fail = |why: String| format!("{name}: {why}");
    let st = eci_runc::State::load(&meta.state_root, &meta.id).map_err(|e| fail(e.to_string()))?;
    if !st.alive() {
        return Err(fail(format!("its init (pid {}) is gone", st.pid)));
    }
    // The pid is the container's init (start time checked above); its user namespace must be
    // the one these listeners were registered with, or the state was made anew.
    if ns_id(st.pid, "user").map_err(fail)? != meta.userns {
        return Err(fail(format!(
            "its init (pid {}) is not in the user namespace its listeners came from",
            st.pid
        )));
    }
    let c = make_container(&meta.state_root, &meta.id, st.pid, Some(&meta)).map_err(fail)?;
    let mut n = 0;
    {
        let mut h = c.helper.lock().unwrap_or_else(|p| p.into_inner());
        for l in &o.listeners {
            match h.add_listener(l) {
                Ok(()) => n += 1,
                Err(e) => eprintln!("eci-supervisor: {name}: a listener was not taken: {e}"),
            }
        }
    }
    if n == 0 && !o.listeners.is_empty() {
        return Err(fail("its new helper took none of its listeners".into()));
    }
    let pid = c.helper.lock().unwrap_or_else(|p| p.into_inner()).pid();
    table()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert((meta.state_root.clone(), meta.id.clone()), Arc::new(c));
    reap_when_gone(pid);
    Ok((meta.id, n))
}

/// Read the container's initial mounts from its init and start its helper. A container
/// re-attached after a restart (`restart`: its record from the fd store) protects what
/// [`store::protected_after_restart`] says instead of the mounts its init has now.
fn make_container(
    state_root: &Path,
    id: &str,
    init: i32,
    restart: Option<&store::Meta>,
) -> Result<Container, String> {
    let mountinfo = std::fs::read_to_string(format!("/proc/{init}/mountinfo"))
        .map_err(|e| format!("read the mounts of container {id}: {e}"))?;
    let mounts = eci_policy::parse_mountinfo(&mountinfo);
    let kind: HashMap<u64, &str> = mounts.iter().map(|m| (m.id, m.fstype.as_str())).collect();
    let root = std::fs::File::open(format!("/proc/{init}/root"))
        .map_err(|e| format!("open the root of container {id}: {e}"))?;
    let mut mask_roots = Vec::new();
    for m in &mounts {
        if !matches!(kind.get(&m.parent), Some(&"proc") | Some(&"sysfs")) {
            continue;
        }
        let how = nix::fcntl::OpenHow::new()
            .flags(nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC)
            .resolve(
                nix::fcntl::ResolveFlag::RESOLVE_IN_ROOT
                    | nix::fcntl::ResolveFlag::RESOLVE_NO_MAGICLINKS,
            );
        if let Ok(fd) = nix::fcntl::openat2(root.as_fd(), m.mount_point.as_str(), how) {
            if let Ok(f) = sys::statx(fd.as_fd()) {
                mask_roots.push((f.dev.0, f.dev.1, f.ino));
            }
        }
    }
    let proc_plan = crate::powers::proc_plan("proc", "/proc", &mounts, root.as_fd());
    let sys_plan = crate::powers::proc_plan("sysfs", "/sys", &mounts, root.as_fd());
    let mut names = Vec::new();
    let mut fds = Vec::new();
    let (mut own_mnt, mut own_net) = (None, None);
    for kind in ["mnt", "ipc", "net", "cgroup", "uts", "user"] {
        let f = std::fs::File::open(format!("/proc/{init}/ns/{kind}"))
            .map_err(|e| format!("open the {kind} namespace of container {id}: {e}"))?;
        let copy = || {
            f.try_clone()
                .map(OwnedFd::from)
                .map_err(|e| format!("copy the {kind} namespace of container {id}: {e}"))
        };
        match kind {
            "mnt" => own_mnt = Some(copy()?),
            "net" => own_net = Some(copy()?),
            _ => {}
        }
        names.push(kind.to_string());
        fds.push(OwnedFd::from(f));
    }
    let own = crate::powers::ContainerNamespaces {
        mnt: own_mnt.expect("opened above"),
        net: own_net.expect("opened above"),
        root: root
            .try_clone()
            .map(OwnedFd::from)
            .map_err(|e| format!("copy the root of container {id}: {e}"))?,
    };
    // The helper's channel for what needs the supervisor's powers (a masked new proc).
    let (powers, theirs) = crate::sys::channel().map_err(|e| format!("socketpair: {e}"))?;
    names.push("powers".to_string());
    fds.push(theirs);
    std::thread::spawn(move || crate::powers::serve(powers, own, proc_plan, sys_plan));
    let userns = ns_id(init, "user")?;
    let meta = match restart {
        Some(m) => m.clone(),
        None => store::Meta {
            state_root: state_root.to_path_buf(),
            id: id.to_string(),
            userns,
            initial: mounts
                .iter()
                .map(|m| (m.id, m.major, m.minor, m.root.clone()))
                .collect(),
        },
    };
    let protected_ids = match restart {
        Some(m) => store::protected_after_restart(m),
        None => mounts.iter().map(|m| m.id).collect(),
    };
    let init_msg = HelperInit {
        ns: names,
        protected_ids,
        mask_roots,
    };
    let helper = Helper::spawn(&init_msg, &fds).map_err(|e| format!("container {id}: {e}"))?;
    Ok(Container {
        userns,
        helper: Mutex::new(helper),
        meta_json: serde_json::to_string(&meta).expect("serializable"),
        meta,
    })
}
