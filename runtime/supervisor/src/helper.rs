//! A container's helper: one process per container, made once when its init registers, that
//! performs the allowed mount calls with the container's user namespace and credentials.
//!
//! Why a process: `setns` into a user namespace needs a single-threaded caller, and the
//! supervisor is multi-threaded; mounts made with the supervisor's own (VM root) credentials
//! would belong to the VM's user namespace (container root could not change its own tmpfs, and
//! overlayfs would do its copy-up as VM root). The helper is `eci-supervisor helper`, executed
//! by the supervisor (VM root) and only then entering the container's namespaces, so its memory
//! belongs to the VM's user namespace: container root cannot ptrace it, read its memory or make
//! it do anything; it can only kill it (which fails its own mount calls closed, EPERM).
//!
//! Each request carries the caller's root, cwd and mount namespace as descriptors. The helper
//! enters that mount namespace when it differs from the last one, chroots to the caller's root
//! and changes to its cwd, so names in mount options (overlay's lowerdir) resolve exactly as the
//! caller's would; the target and source paths are resolved once with `openat2(root,
//! RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, the facts for the decision are read from those
//! descriptors, and the mount is made onto the very descriptor that was judged (`move_mount`
//! to an fd). Requests are handled one at a time, so no other mount change of the container
//! can slip between a decision and its act (every mount change of the container comes through
//! here).

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use eci_policy::mount_vetting::{self as mv, Action, Call, Caller, Source, Target, Verdict};
use libseccomp::ScmpNotifReq;
use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sched::CloneFlags;

mod nested;

use crate::notify::{self, CallerCtx};
use crate::proto::{CallArgs, HelperInit, HelperReply};
use crate::step::{self, Step};
use crate::sys;

/// The supervisor's end of a helper.
pub struct Helper {
    child: Child,
    sock: OwnedFd,
}

impl Helper {
    /// Start `eci-supervisor helper` and hand it the container's namespaces.
    pub fn spawn(init: &HelperInit, ns: &[OwnedFd]) -> io::Result<Helper> {
        let (mine, theirs) = sys::channel()?;
        // /proc/self/exe, not the path: it still reaches this very program after an upgrade
        // replaced the file, so a helper always speaks its supervisor's protocol.
        let child = Command::new("/proc/self/exe")
            .arg("helper")
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .current_dir("/")
            .spawn()?;
        let raw: Vec<RawFd> = ns.iter().map(|f| f.as_raw_fd()).collect();
        sys::send(
            mine.as_raw_fd(),
            &serde_json::to_vec(init).expect("serializable"),
            &raw,
        )?;
        let mut h = Helper { child, sock: mine };
        let r = h.round_trip(None)?;
        if r.errno != 0 {
            return Err(io::Error::other(format!(
                "the container's mount helper did not start: {}",
                r.note
            )));
        }
        Ok(h)
    }

    fn round_trip(&mut self, send: Option<(&[u8], &[RawFd])>) -> io::Result<HelperReply> {
        if let Some((b, fds)) = send {
            sys::send(self.sock.as_raw_fd(), b, fds)?;
        }
        match sys::recv(self.sock.as_raw_fd())? {
            None => Err(io::Error::other("the container's mount helper is gone")),
            Some((b, _)) => serde_json::from_slice(&b).map_err(io::Error::other),
        }
    }

    /// Hand the helper one more listener (the init's, or an exec'd process's) to serve.
    pub fn add_listener(&mut self, listener: &OwnedFd) -> io::Result<()> {
        let r = self.round_trip(Some((b"{}", &[listener.as_raw_fd()])))?;
        if r.errno != 0 {
            return Err(io::Error::other(r.note));
        }
        Ok(())
    }

    /// The helper's process id, in the supervisor's pid namespace.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The helper has exited (its container is gone, or it was killed).
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // Closing the socket ends the helper's loop; the kill covers a helper stuck in a call.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ns_flag(kind: &str) -> Option<CloneFlags> {
    Some(match kind {
        "mnt" => CloneFlags::CLONE_NEWNS,
        "ipc" => CloneFlags::CLONE_NEWIPC,
        "net" => CloneFlags::CLONE_NEWNET,
        "cgroup" => CloneFlags::CLONE_NEWCGROUP,
        "uts" => CloneFlags::CLONE_NEWUTS,
        "user" => CloneFlags::CLONE_NEWUSER,
        _ => return None,
    })
}

fn nsid(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    let st = nix::sys::stat::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

/// The helper process's state. Mounts are named by their unique id (`STATX_MNT_ID_UNIQUE`,
/// Linux >= 6.8; [`mount_key`]), never reused while the system runs: the old ids mountinfo
/// shows are reused as soon as a mount is freed, and Docker-in-Docker frees many (every inner
/// container's namespace, with the protected copies and own filesystems recorded in it, goes
/// when the container ends). With an old id a later, unrelated mount (the next inner
/// container's root) inherited a protection or an own-filesystem mark it never had; found by
/// `docker build` in Docker-in-Docker, whose RUN container's root could not be unmounted.
/// Kernels without unique ids (older than 6.8) fall back to the old ids.
struct Worker {
    protected: HashSet<u64>,
    mask_roots: HashSet<(u32, u32, u64)>,
    /// Mount ids of filesystems the helper made for the container.
    own_fs: HashSet<u64>,
    mnt: (u64, u64),
    /// The container's user namespace (nsfs device and inode).
    userns: (u64, u64),
    /// Mount ids of the new procs the helper attached: a bind of one is refused like a bind
    /// of the first /proc (the copy would not carry the masks).
    kernel_views: HashSet<u64>,
    /// The channel to the supervisor for a masked new proc (`powers.rs`).
    powers: OwnedFd,
    /// The VM's /proc, to read the path of a descriptor the helper holds (`pinned_place`).
    proc: OwnedFd,
    role: Role,
}

/// Whose calls a helper makes.
enum Role {
    /// The container's user namespace's; calls from user namespaces nested in it go to their
    /// own helpers (SPEC M7, [`nested`]).
    Container(nested::NestedHelpers),
    /// One nested user namespace's; the mount namespaces it has seen (by their ids, which are
    /// never reused, unlike their inode numbers), whose inherited mounts it protects.
    Nested { seen: HashSet<u64> },
}

/// Mount namespaces a nested helper keeps a record of, and protected mounts it holds, before it
/// starts its record afresh (every namespace is listed again on its next call, which protects
/// more, never less): a loop of `unshare -m` must not grow a process outside the container's
/// memory limit without end.
const NESTED_MAX_SEEN: usize = 256;
const NESTED_MAX_PROTECTED: usize = 1 << 18;

/// A mount namespace's key for [`Role::Nested`]: its id, or on kernels without one (before
/// 6.8) its inode number, marked so the two never meet.
fn mntns_key(mnt: BorrowedFd<'_>) -> io::Result<u64> {
    match sys::mntns_id(mnt) {
        Ok(id) => Ok(id),
        Err(_) => Ok(nsid(mnt)?.1 | 1 << 63),
    }
}

fn reply(errno: i32, note: impl Into<String>) -> HelperReply {
    HelperReply {
        errno,
        note: note.into(),
    }
}

/// `eci-supervisor helper`: the socket to the supervisor is stdin. Serves the container's
/// listeners (one per process tree: the init's and each exec's) in one thread, since `setns`
/// into the callers' mount namespaces needs a single-threaded process; ends when the last
/// listener hangs up (the container is gone) or the supervisor goes.
pub fn main() -> i32 {
    let _ = nix::sys::prctl::set_dumpable(false);
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    let sock: RawFd = 0;
    // The VM's /proc, opened before entering the container's mount namespace: notifications
    // name callers by their pid in the VM's pid namespace.
    let proc = match nix::fcntl::open(
        "/proc",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        Ok(p) => p,
        Err(_) => return 1,
    };
    let Ok(Some((b, ns))) = sys::recv(sock) else {
        return 1;
    };
    let init: HelperInit = match serde_json::from_slice(&b) {
        Ok(i) => i,
        Err(e) => {
            let _ = send_reply(sock, &reply(libc::EINVAL, format!("bad init: {e}")));
            return 1;
        }
    };
    let vm_proc = match proc.try_clone() {
        Ok(p) => p,
        Err(_) => return 1,
    };
    let mut w = match enter(&init, ns, vm_proc) {
        Ok(w) => w,
        Err(e) => {
            let _ = send_reply(sock, &reply(libc::EPERM, e));
            return 1;
        }
    };
    if send_reply(sock, &reply(0, "ready")).is_err() {
        return 1;
    }
    let stdin = std::io::stdin();
    let mut listeners: Vec<OwnedFd> = Vec::new();
    loop {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = vec![PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        fds.extend(
            listeners
                .iter()
                .map(|l| PollFd::new(l.as_fd(), PollFlags::POLLIN)),
        );
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(_) => return 1,
        }
        let events: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        if !events[0].is_empty() {
            match sys::recv(sock) {
                Ok(Some((_, mut fds))) => {
                    let r = match fds.pop() {
                        Some(l) => {
                            notify::wake_synchronously(l.as_fd());
                            listeners.push(l);
                            reply(0, "serving")
                        }
                        None => reply(libc::EINVAL, "no listener"),
                    };
                    if send_reply(sock, &r).is_err() {
                        return 0;
                    }
                }
                _ => return 0,
            }
        }
        let mut gone = Vec::new();
        for (i, ev) in events[1..].iter().enumerate() {
            if ev.contains(PollFlags::POLLIN) {
                if let Ok(req) = ScmpNotifReq::receive(listeners[i].as_raw_fd()) {
                    notify::handle(proc.as_fd(), &listeners[i], &req, |call, ctx| {
                        w.handle(call, ctx)
                    });
                }
            } else if ev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
                gone.push(i);
            }
        }
        for i in gone.into_iter().rev() {
            listeners.remove(i);
        }
        if listeners.is_empty() {
            // Every process of the container is gone.
            return 0;
        }
    }
}

fn send_reply(sock: RawFd, r: &HelperReply) -> io::Result<()> {
    sys::send(sock, &serde_json::to_vec(r).expect("serializable"), &[])
}

/// Enter the container's namespaces (the user namespace last: the others may belong to the VM,
/// which the helper can enter only while it is still VM root) and become container root.
fn enter(init: &HelperInit, ns: Vec<OwnedFd>, proc: OwnedFd) -> Result<Worker, String> {
    if ns.len() != init.ns.len() {
        return Err("namespace descriptors do not match their names".into());
    }
    let mut mnt = None;
    let mut user = None;
    let mut powers = None;
    for (kind, fd) in init.ns.iter().zip(ns) {
        if kind == "powers" {
            powers = Some(fd);
            continue;
        }
        let flag = ns_flag(kind).ok_or(format!("unknown namespace {kind}"))?;
        if kind == "user" {
            user = Some(fd);
            continue;
        }
        nix::sched::setns(fd.as_fd(), flag).map_err(|e| format!("setns {kind}: {e}"))?;
        if kind == "mnt" {
            mnt = Some(nsid(fd.as_fd()).map_err(|e| e.to_string())?);
        }
    }
    let user = user.ok_or("no user namespace")?;
    let userns = nsid(user.as_fd()).map_err(|e| e.to_string())?;
    become_root_of(user.as_fd())?;
    // The initial ids come from mountinfo (old ids) of the container's mount namespace, which
    // the helper is in now.
    let keys = keys_by_old_id();
    Ok(Worker {
        protected: init
            .protected_ids
            .iter()
            .filter_map(|id| key_of_old(&keys, *id))
            .collect(),
        mask_roots: init.mask_roots.iter().copied().collect(),
        own_fs: HashSet::new(),
        mnt: mnt.ok_or("no mount namespace")?,
        userns,
        kernel_views: HashSet::new(),
        powers: powers.ok_or("no channel to the supervisor")?,
        proc,
        role: Role::Container(nested::NestedHelpers::default()),
    })
}

/// Enter the user namespace `user` and become its root: the container's for a container's
/// helper, a nested one's for a nested helper. A namespace that maps no root id has no
/// credentials to act with.
fn become_root_of(user: BorrowedFd<'_>) -> Result<(), String> {
    nix::sched::setns(user, CloneFlags::CLONE_NEWUSER).map_err(|e| format!("setns user: {e}"))?;
    let root = nix::unistd::Gid::from_raw(0);
    nix::unistd::setresgid(root, root, root)
        .map_err(|e| format!("setgid 0 (the user namespace maps no root group?): {e}"))?;
    // Refused when the namespace's setgroups is "deny"; then the groups stay as they are.
    let _ = nix::unistd::setgroups(&[]);
    let uroot = nix::unistd::Uid::from_raw(0);
    nix::unistd::setresuid(uroot, uroot, uroot)
        .map_err(|e| format!("setuid 0 (the user namespace maps no root user?): {e}"))?;
    // setresuid reset it; nobody in the namespace may ptrace the helper.
    let _ = nix::sys::prctl::set_dumpable(false);
    Ok(())
}

/// Resolve `path` inside `root` (as `/`), following symlinks only inside it and no magic link.
fn resolve(root: BorrowedFd<'_>, path: &str) -> io::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    for _ in 0..64 {
        match openat2(root, path, how) {
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
    Err(io::Error::from_raw_os_error(libc::EAGAIN))
}

/// Split a cleaned absolute path into its folder and last name.
fn split(path: &str) -> (String, String) {
    let p = path.trim_end_matches('/');
    match p.rfind('/') {
        Some(i) => (
            if i == 0 {
                "/".into()
            } else {
                p[..i].to_string()
            },
            p[i + 1..].to_string(),
        ),
        None => ("/".into(), p.to_string()),
    }
}

impl Worker {
    /// The state a nested user namespace's helper starts from (in the forked copy): the masks
    /// (protected wherever a copy of one shows), the channel to the supervisor, the VM's /proc;
    /// the container's own filesystems and kernel views are mounts of other namespaces.
    fn for_nested(&self, userns: (u64, u64)) -> io::Result<Worker> {
        Ok(Worker {
            protected: HashSet::new(),
            mask_roots: self.mask_roots.clone(),
            own_fs: HashSet::new(),
            // None seen yet: the first call enters its mount namespace, whose root is then
            // the helper's, so the inherited mounts are listed from that root.
            mnt: (0, 0),
            userns,
            kernel_views: HashSet::new(),
            powers: self.powers.try_clone()?,
            proc: self.proc.try_clone()?,
            role: Role::Nested {
                seen: HashSet::new(),
            },
        })
    }

    /// Facts about the mount a descriptor reached; its settings (`attrs`, `read_only`) are
    /// looked up only when asked (a remount), which keeps the common calls to one statx.
    fn target_facts(&self, fd: BorrowedFd<'_>, want_read_only: bool) -> io::Result<Target> {
        let f = sys::statx(fd)?;
        let key = mount_key(fd)?;
        // Unknown settings count as every restriction, so a remount must keep them all.
        let attrs = if want_read_only {
            nix::sys::statvfs::fstatvfs(fd)
                .map(|s| mount_attrs(s.flags().bits()))
                .unwrap_or(!mv::attr::ATIME_MASK | mv::attr::NOATIME)
        } else {
            0
        };
        Ok(Target {
            is_mount_root: f.mount_root,
            protected: self.protected.contains(&key)
                || (f.mount_root && self.mask_roots.contains(&(f.dev.0, f.dev.1, f.ino))),
            read_only: attrs & mv::attr::RDONLY != 0,
            own_fs: self.own_fs.contains(&key),
            attrs,
        })
    }

    fn source_facts(&self, fd: BorrowedFd<'_>) -> io::Result<Source> {
        let t = self.target_facts(fd, false)?;
        let magic = nix::sys::statfs::fstatfs(fd)?.filesystem_type();
        let id = mount_key(fd)?;
        Ok(Source {
            is_mount_root: t.is_mount_root,
            protected: t.protected || self.kernel_views.contains(&id),
            kernel_view: magic == nix::sys::statfs::PROC_SUPER_MAGIC
                || magic == nix::sys::statfs::SYSFS_MAGIC,
        })
    }

    fn handle(&mut self, call: &CallArgs, ctx: &CallerCtx) -> (i32, String) {
        let result = match &mut self.role {
            Role::Container(helpers)
                if ctx.userns != self.userns
                    && nested::nested_in(ctx.user.as_fd(), self.userns) =>
            {
                let mut helpers = std::mem::take(helpers);
                let r = helpers
                    .forward(self, call, ctx)
                    .step("hand the call to the nested user namespace's helper");
                self.role = Role::Container(helpers);
                r
            }
            _ => self.try_handle(call, ctx),
        };
        match result {
            Ok(r) => (r.errno, r.note),
            Err(e) => {
                // Refusals are decisions; a failed step is logged whether or not the
                // supervisor is verbose (crate::step).
                eprintln!("eci-supervisor helper: {call:?}: {e}");
                (step::errno(&e), e.to_string())
            }
        }
    }

    /// Who the caller is, as the vetting rules ask (`eci_policy::mount_vetting::Caller`).
    fn caller(&self, ctx: &CallerCtx) -> io::Result<Caller> {
        let owner =
            sys::ns_owner(ctx.mnt.as_fd()).step("the owner of the caller's mount namespace")?;
        let owns_mount_namespace = nsid(owner.as_fd())? == ctx.userns;
        let owns_view_namespace = match &ctx.view_ns {
            None => true,
            // The kernel answers EPERM for an owner outside the helper's own user namespace
            // (a nested helper asking about the container's pid namespace): not the caller's.
            Some(v) => match sys::ns_owner(v.as_fd()) {
                Ok(o) => nsid(o.as_fd())? == ctx.userns || nested::nested_in(o.as_fd(), ctx.userns),
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => false,
                Err(e) => return Err(e).step("the owner of the new view's namespace"),
            },
        };
        Ok(Caller {
            sys_admin: ctx.sys_admin,
            inside_container: ctx.userns == self.userns,
            owns_mount_namespace,
            owns_view_namespace,
        })
    }

    /// A nested helper's record of the mount namespace it just entered: on its first call
    /// there, every mount it inherited but the caller's root (which a sandbox detaches after
    /// `pivot_root`, once the kernel moved its lock to the new root) is protected.
    fn record_namespace(&mut self, ctx: &CallerCtx) -> io::Result<()> {
        let Role::Nested { seen } = &mut self.role else {
            return Ok(());
        };
        let key = mntns_key(ctx.mnt.as_fd())?;
        if seen.contains(&key) {
            return Ok(());
        }
        if seen.len() >= NESTED_MAX_SEEN || self.protected.len() >= NESTED_MAX_PROTECTED {
            seen.clear();
            self.protected.clear();
            self.own_fs.clear();
            self.kernel_views.clear();
        }
        seen.insert(key);
        let root = mount_key(ctx.root.as_fd())?;
        let inherited = inherited_mounts(self.proc.as_fd());
        self.protected
            .extend(inherited.into_iter().filter(|k| *k != root));
        Ok(())
    }

    fn try_handle(&mut self, call: &CallArgs, ctx: &CallerCtx) -> io::Result<HelperReply> {
        let (root, cwd, mnt) = (&ctx.root, &ctx.cwd, &ctx.mnt);
        let caller = self.caller(ctx)?;
        if let Some(r) = mv::refuse_caller(caller) {
            return Ok(reply(r.errno.raw(), r.why));
        }
        let id = nsid(mnt.as_fd()).step("stat the caller's mount namespace")?;
        if id != self.mnt {
            nix::sched::setns(mnt.as_fd(), CloneFlags::CLONE_NEWNS)
                .step("enter the caller's mount namespace")?;
            self.mnt = id;
        }
        self.record_namespace(ctx)
            .step("list the mounts the namespace inherited")?;
        // The caller's root and cwd become the helper's, so the kernel resolves names in mount
        // options as it would for the caller.
        nix::unistd::fchdir(root).step("change to the caller's root")?;
        nix::unistd::chroot(".").step("chroot to the caller's root")?;
        nix::unistd::fchdir(cwd).step("change to the caller's cwd")?;
        let here = nix::unistd::getcwd().step("name the caller's cwd")?;
        let here = here
            .to_str()
            .filter(|h| h.starts_with('/'))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "the caller's cwd is outside its root",
                )
            })?;
        let abs = |p: &str| -> String {
            if p.starts_with('/') {
                p.to_string()
            } else {
                format!("{}/{p}", here.trim_end_matches('/'))
            }
        };
        match call {
            CallArgs::Umount { target, flags } if target == "." || target == "./" => {
                // The mount the caller's cwd is the root of (runc, after `pivot_root(".", ".")`,
                // detaches the old root stacked on the new one this way). No name is looked
                // up: the cwd descriptor taken while the notification was valid is judged, and
                // `umount2(".")` from it reaches that very mount. The helper's own reference
                // makes it busy exactly when the caller's cwd already does (no MNT_DETACH).
                let t = self
                    .target_facts(cwd.as_fd(), false)
                    .step("the facts of the caller's cwd")?;
                match mv::decide(&Call::Umount { flags: *flags }, caller, t, None) {
                    Verdict::Refuse(r) => Ok(reply(r.errno.raw(), r.why)),
                    Verdict::Allow(Action::Umount { flags }) => {
                        nix::unistd::fchdir(cwd).step("change to the caller's cwd")?;
                        let f = nix::mount::MntFlags::from_bits_truncate(flags as i32)
                            | nix::mount::MntFlags::UMOUNT_NOFOLLOW;
                        nix::mount::umount2(Path::new("."), f).step("umount2 of \".\"")?;
                        Ok(reply(0, "umount of the caller's cwd"))
                    }
                    Verdict::Allow(a) => Ok(reply(libc::EINVAL, format!("unexpected {a:?}"))),
                }
            }
            CallArgs::Umount { target, flags } => {
                let follow = flags & mv::umount::NOFOLLOW == 0;
                let (dir, name) = self
                    .umount_place(root.as_fd(), &abs(target), follow)
                    .step("resolve the umount target")?;
                let t = if name.is_empty() {
                    self.target_facts(dir.as_fd(), false)?
                } else {
                    let how = OpenHow::new()
                        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
                        .resolve(ResolveFlag::RESOLVE_NO_MAGICLINKS);
                    let fd = openat2(dir.as_fd(), name.as_str(), how)?;
                    self.target_facts(fd.as_fd(), false)?
                };
                let call = Call::Umount { flags: *flags };
                match mv::decide(&call, caller, t, None) {
                    Verdict::Refuse(r) => Ok(reply(r.errno.raw(), r.why)),
                    Verdict::Allow(Action::Umount { flags }) => {
                        if name.is_empty() {
                            return Ok(reply(libc::EINVAL, "umount of the caller's root"));
                        }
                        // No descriptor on the mount may stay open (it would be busy): the
                        // name is looked up once more, from the pinned folder, without
                        // following a symlink. A mount point cannot be renamed or replaced
                        // while it is one, and every other mount change of this container
                        // waits for this request, so the name still reaches the judged mount.
                        nix::unistd::fchdir(&dir).step("change to the mount point's folder")?;
                        let f = nix::mount::MntFlags::from_bits_truncate(flags as i32)
                            | nix::mount::MntFlags::UMOUNT_NOFOLLOW;
                        nix::mount::umount2(Path::new(&name), f).step("umount2")?;
                        Ok(reply(0, format!("umount {target}")))
                    }
                    Verdict::Allow(a) => Ok(reply(libc::EINVAL, format!("unexpected {a:?}"))),
                }
            }
            CallArgs::Mount {
                source,
                target,
                fstype,
                flags,
                data,
            } => {
                let tfd = self
                    .place(root.as_fd(), &abs(target), ctx.target_fd.as_ref())
                    .step("resolve the target")?;
                let t = self
                    .target_facts(tfd.as_fd(), flags & mv::ms::REMOUNT != 0)
                    .step("the target's facts")?;
                let needs_source =
                    flags & (mv::ms::BIND | mv::ms::MOVE) != 0 && flags & mv::ms::REMOUNT == 0;
                let sfd = match (needs_source, source) {
                    (true, Some(s)) => Some(match mv::ns_link(s) {
                        Some((owner, kind)) => self
                            .namespace(root.as_fd(), owner, kind, ctx.source_fd.as_ref())
                            .step("open the source namespace")?,
                        None => self
                            .place(root.as_fd(), &abs(s), ctx.source_fd.as_ref())
                            .step("resolve the source")?,
                    }),
                    _ => None,
                };
                let s = sfd
                    .as_ref()
                    .map(|f| self.source_facts(f.as_fd()))
                    .transpose()
                    .step("the source's facts")?;
                let call = Call::Mount {
                    source: source.clone(),
                    fstype: fstype.clone(),
                    flags: *flags,
                    data: data.clone(),
                };
                match mv::decide(&call, caller, t, s) {
                    Verdict::Refuse(r) => Ok(reply(r.errno.raw(), r.why)),
                    Verdict::Allow(a) => {
                        self.act(&a, tfd.as_fd(), sfd.as_ref().map(|f| f.as_fd()), ctx)
                            .step(format_args!("{a:?}"))?;
                        Ok(reply(0, format!("{a:?} on {target}")))
                    }
                }
            }
        }
    }

    /// The object a mount path reaches: the caller's own descriptor's object when the path was
    /// `/proc/self/fd/N` (taken in `notify::gather`) and the caller's /proc is a proc, else the
    /// path resolved inside the root.
    fn place(
        &self,
        root: BorrowedFd<'_>,
        path: &str,
        pinned: Option<&OwnedFd>,
    ) -> io::Result<OwnedFd> {
        match pinned {
            Some(obj) if self.proc_at(root) => self.pinned_place(root, obj),
            // The kernel would not have followed the link either: /proc is something else in
            // this root, so the name is an ordinary path.
            _ => resolve(root, path),
        }
    }

    /// The namespace file a bind source `/proc/{self,thread-self,PID}/ns/KIND` names, only if
    /// the caller's /proc is a proc and the object is a namespace (nsfs). `self` and
    /// `thread-self` were taken from the caller (`notify::gather`); a PID is looked up in the
    /// caller's own /proc, inside its root: `/proc/PID/ns` is resolved like every path (no
    /// magic link on the way) and only the one last name, a plain word, follows its magic
    /// link, as the kernel would for the caller (the same ptrace-read check applies to the
    /// helper, container root in the container's user namespace).
    fn namespace(
        &self,
        root: BorrowedFd<'_>,
        owner: mv::NsOwner,
        kind: &str,
        taken: Option<&OwnedFd>,
    ) -> io::Result<OwnedFd> {
        let not_ns = || {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the bind source is not a namespace file",
            )
        };
        if !self.proc_at(root) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        let obj = match (owner, taken) {
            (mv::NsOwner::Pid(pid), _) => {
                let dir = resolve(root, &format!("/proc/{pid}/ns"))?;
                if nix::sys::statfs::fstatfs(&dir)?.filesystem_type()
                    != nix::sys::statfs::PROC_SUPER_MAGIC
                {
                    return Err(not_ns());
                }
                nix::fcntl::openat(
                    dir.as_fd(),
                    kind,
                    OFlag::O_PATH | OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )?
            }
            (_, Some(t)) => t.try_clone()?,
            (_, None) => return Err(io::Error::from_raw_os_error(libc::ENOENT)),
        };
        const NSFS_MAGIC: i64 = 0x6e73_6673;
        if nix::sys::statfs::fstatfs(&obj)?.filesystem_type().0 as i64 != NSFS_MAGIC {
            return Err(not_ns());
        }
        Ok(obj)
    }

    /// The caller's `/proc` (inside its root) is a proc filesystem, so `/proc/self/fd/N` in its
    /// call named its descriptor N.
    fn proc_at(&self, root: BorrowedFd<'_>) -> bool {
        resolve(root, "/proc")
            .and_then(|p| Ok(nix::sys::statfs::fstatfs(&p)?))
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC)
    }

    /// The caller's descriptor's object, if it lies inside the caller's root (the helper is
    /// chrooted there now): its path as the kernel names it from that root (readlink of the
    /// helper's own copy, never the caller's table again) is resolved inside the root and must
    /// reach the same mount and inode. An object outside the root has no name there that
    /// reaches it (the kernel's name for it is then one from the namespace's root, and whatever
    /// that reaches inside the root is another mount or inode); a deleted or anonymous object
    /// has none at all. Either is refused (EPERM), although the kernel would follow the link:
    /// a container mounts only inside its own tree.
    fn pinned_place(&self, root: BorrowedFd<'_>, obj: &OwnedFd) -> io::Result<OwnedFd> {
        let outside = || {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the descriptor's file is not inside the caller's root",
            )
        };
        let me = format!("{}/fd/{}", std::process::id(), obj.as_raw_fd());
        let name = nix::fcntl::readlinkat(self.proc.as_fd(), me.as_str())?;
        let name = name
            .to_str()
            .filter(|n| n.starts_with('/'))
            .ok_or_else(outside)?;
        let again = resolve(root, name).map_err(|_| outside())?;
        let (a, b) = (sys::statx(obj.as_fd())?, sys::statx(again.as_fd())?);
        if (a.mnt_id, a.dev, a.ino) != (b.mnt_id, b.dev, b.ino) {
            return Err(outside());
        }
        // The judged and acted-on descriptor stays the caller's object, not the re-resolved
        // name: it is the one its descriptor pinned when the call was made.
        obj.try_clone()
    }

    /// The folder holding the mount point and its name, following a symlink in the last name
    /// (inside the root) unless `UMOUNT_NOFOLLOW`.
    fn umount_place(
        &self,
        root: BorrowedFd<'_>,
        path: &str,
        follow: bool,
    ) -> io::Result<(OwnedFd, String)> {
        let mut path = path.to_string();
        for _ in 0..40 {
            let (dir, name) = split(&path);
            if name == "." || name == ".." {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            let dfd = resolve(root, &dir)?;
            if follow && !name.is_empty() {
                match nix::fcntl::readlinkat(dfd.as_fd(), name.as_str()) {
                    Ok(link) => {
                        let link = link.to_string_lossy().into_owned();
                        path = if link.starts_with('/') {
                            link
                        } else {
                            format!("{}/{link}", dir.trim_end_matches('/'))
                        };
                        continue;
                    }
                    Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            return Ok((dfd, name));
        }
        Err(io::Error::from_raw_os_error(libc::ELOOP))
    }

    /// The mounts below `top` (an old id) in the helper's mount namespace (the caller's) that
    /// show the same tree of the same filesystem as a protected mount: the copies a recursive
    /// bind made of protected mounts, as unique ids.
    fn protected_copies(&self, top: u64) -> io::Result<Vec<u64>> {
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_NO_XDEV);
        let f = openat2(self.proc.as_fd(), "thread-self/mountinfo", how)?;
        let mut text = String::new();
        io::Read::read_to_string(&mut std::fs::File::from(f), &mut text)?;
        // mountinfo names mounts by their old ids; the protected set by unique ones.
        let keys = keys_by_old_id();
        let copies = copies_of(&text, top, |old| {
            key_of_old(&keys, old).is_some_and(|k| self.protected.contains(&k))
        });
        Ok(copies
            .into_iter()
            .filter_map(|old| key_of_old(&keys, old))
            .collect())
    }

    /// A new proc from the supervisor (made for the caller's pid namespace, masked like the
    /// first), attached onto the target; its masks join the protected mounts.
    fn masked_proc(
        &mut self,
        fstype: &str,
        options: &[(String, Option<String>)],
        attrs: u64,
        target: BorrowedFd<'_>,
        ctx: &CallerCtx,
    ) -> io::Result<()> {
        let pidns = ctx
            .view_ns
            .as_ref()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        let req = crate::proto::ProcRequest {
            fstype: fstype.to_string(),
            options: options.to_vec(),
            attrs,
        };
        sys::send(
            self.powers.as_raw_fd(),
            &serde_json::to_vec(&req).expect("serializable"),
            &[pidns.as_raw_fd()],
        )?;
        let Some((b, mut fds)) = sys::recv(self.powers.as_raw_fd())? else {
            return Err(io::Error::other("the supervisor is gone"));
        };
        let r: crate::proto::ProcReply = serde_json::from_slice(&b).map_err(io::Error::other)?;
        if r.errno != 0 {
            return Err(io::Error::other(format!("new proc: {}", r.note)));
        }
        let tree = fds.pop().ok_or_else(|| io::Error::other("no proc tree"))?;
        sys::move_mount(tree.as_fd(), target)?;
        self.kernel_views.insert(mount_key(tree.as_fd())?);
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        for rel in &r.masks {
            if let Ok(m) = openat2(tree.as_fd(), rel.as_str(), how) {
                self.protected.insert(mount_key(m.as_fd())?);
                // By its root's identity too, like the first /proc's masks: a copy of the mask
                // in a mount namespace the container makes (`unshare -m`) has another mount id
                // and, in the same user namespace, no kernel lock; without this, unmounting the
                // copy of a tmpfs mask revealed what it hides (/proc/acpi) and unmounting a
                // read-only bind's copy dropped the restriction.
                let f = sys::statx(m.as_fd())?;
                if f.mount_root {
                    self.mask_roots.insert((f.dev.0, f.dev.1, f.ino));
                }
            }
        }
        Ok(())
    }

    fn act(
        &mut self,
        a: &Action,
        target: BorrowedFd<'_>,
        source: Option<BorrowedFd<'_>>,
        ctx: &CallerCtx,
    ) -> io::Result<()> {
        let per_mount = mv::attr::RDONLY
            | mv::attr::NOSUID
            | mv::attr::NODEV
            | mv::attr::NOEXEC
            | mv::attr::NODIRATIME
            | mv::attr::NOSYMFOLLOW
            | mv::attr::ATIME_MASK;
        let missing = || io::Error::from_raw_os_error(libc::EINVAL);
        match a {
            Action::NewFs {
                fstype,
                options,
                attrs,
                powers: mv::Powers::Supervisor,
            } => self.masked_proc(fstype, options, *attrs, target, ctx)?,
            Action::NewFs {
                fstype,
                options,
                attrs,
                ..
            } => {
                let fs = sys::fsopen(fstype)?;
                for (k, v) in options {
                    // Options the filesystem does not take fail the call as mount(2) would.
                    sys::fsconfig_set(fs.as_fd(), k, v.as_deref())?;
                }
                if let Err(e) = sys::fsconfig_cmd(fs.as_fd(), sys::FSCONFIG_CMD_CREATE) {
                    eprintln!(
                        "eci-supervisor helper: create {fstype}: {}",
                        sys::fs_messages(fs.as_fd())
                    );
                    return Err(e);
                }
                let m = sys::fsmount(fs.as_fd(), *attrs)?;
                sys::move_mount(m.as_fd(), target)?;
                if let Ok(k) = mount_key(m.as_fd()) {
                    self.own_fs.insert(k);
                }
            }
            Action::Bind { recursive, .. } => {
                let source = source.ok_or_else(missing)?;
                // mount(2) says ENOTDIR for a folder bound onto a file or the reverse, and
                // callers rely on it (runc masks a folder with a tmpfs when binding /dev/null
                // onto it fails so); move_mount says EINVAL for the same case.
                let is_dir = |fd: BorrowedFd<'_>| {
                    nix::sys::stat::fstat(fd).map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
                };
                if is_dir(source)? != is_dir(target)? {
                    return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
                }
                let s = self.source_facts(source)?;
                let m = sys::open_tree_clone(source, *recursive)?;
                sys::move_mount(m.as_fd(), target)?;
                if *recursive && (s.protected || s.kernel_view) {
                    // A recursive copy of a protected tree carries its masks and read-only
                    // paths; unmounting one inside the copy would reveal what it hides, so
                    // each copy of a protected mount is protected like it. The copy of a
                    // protected kernel view is protected itself too: a plain bind of it would
                    // peel the masks off (module docs of eci_policy::mount_vetting).
                    let top = sys::statx(m.as_fd())?.mnt_id;
                    let copies = self.protected_copies(top)?;
                    self.protected.extend(copies);
                    if s.kernel_view && s.protected {
                        self.protected.insert(mount_key(m.as_fd())?);
                    }
                }
            }
            Action::SetAttrs { attrs } => {
                sys::mount_setattr(target, false, *attrs, per_mount, 0)?;
            }
            Action::Reconfigure { options, attrs } => {
                let fs = sys::fspick(target)?;
                for (k, v) in options {
                    sys::fsconfig_set(fs.as_fd(), k, v.as_deref())?;
                }
                sys::fsconfig_cmd(fs.as_fd(), sys::FSCONFIG_CMD_RECONFIGURE)?;
                sys::mount_setattr(target, false, *attrs, per_mount, 0)?;
            }
            Action::Propagation {
                propagation,
                recursive,
            } => sys::mount_setattr(target, *recursive, 0, 0, *propagation)?,
            Action::Move => sys::move_mount(source.ok_or_else(missing)?, target)?,
            Action::Umount { .. } => return Err(missing()),
        }
        Ok(())
    }
}

/// `statvfs` `f_flag` bits as `MOUNT_ATTR_*` (the `ST_*` flag bits equal the `MS_*` ones;
/// `ST_RELATIME` is 4096, and neither atime flag means strictatime).
fn mount_attrs(st: u64) -> u64 {
    const ST_NOATIME: u64 = 1024;
    const ST_RELATIME: u64 = 4096;
    let flags = mv::ms::RDONLY
        | mv::ms::NOSUID
        | mv::ms::NODEV
        | mv::ms::NOEXEC
        | mv::ms::NODIRATIME
        | mv::ms::NOSYMFOLLOW;
    let atime = if st & ST_NOATIME != 0 {
        mv::ms::NOATIME
    } else if st & ST_RELATIME != 0 {
        0
    } else {
        mv::ms::STRICTATIME
    };
    mv::attrs_of(st & flags | atime)
}

/// `statmount` and `listmount` (Linux >= 6.8); the numbers of the generic syscall table,
/// which x86_64 and arm64 share. libc names them only for some architectures.
const SYS_STATMOUNT: libc::c_long = 457;
const SYS_LISTMOUNT: libc::c_long = 458;
/// `listmount` from the root of the caller's mount namespace.
const LSMT_ROOT: u64 = u64::MAX;
const STATMOUNT_MNT_BASIC: u64 = 0x2;
/// `struct mnt_id_req` (`MNT_ID_REQ_SIZE_VER0`).
#[repr(C)]
struct MntIdReq {
    size: u32,
    spare: u32,
    mnt_id: u64,
    param: u64,
}

/// The id the helper names a mount by: its unique id where the kernel has one (never reused),
/// else the old id mountinfo shows ([`Worker`]).
fn mount_key(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut buf = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: statx writes at most one struct statx into buf, which is that size; the path is
    // a NUL-terminated empty string.
    let rc = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW | libc::AT_NO_AUTOMOUNT,
            libc::STATX_MNT_ID_UNIQUE,
            buf.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statx succeeded and the buffer was zeroed before.
    let s = unsafe { buf.assume_init() };
    if s.stx_mask & (libc::STATX_MNT_ID_UNIQUE | libc::STATX_MNT_ID) == 0 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "statx gives no mount id (Linux >= 5.8 is needed)",
        ));
    }
    Ok(s.stx_mnt_id)
}

/// Every mount the helper's mount namespace shows from its root, as (unique id, its parent's
/// unique id, old id), from `listmount` and `statmount`; `None` where the kernel has neither
/// (older than 6.8).
fn mount_rows() -> Option<Vec<(u64, u64, u64)>> {
    let mut ids = vec![0u64; 4096];
    let mut all = Vec::new();
    let mut last = 0u64;
    loop {
        let req = MntIdReq {
            size: std::mem::size_of::<MntIdReq>() as u32,
            spare: 0,
            mnt_id: LSMT_ROOT,
            param: last,
        };
        // SAFETY: the kernel reads one mnt_id_req and writes at most `ids.len()` u64s.
        let n = unsafe {
            libc::syscall(
                SYS_LISTMOUNT,
                &req as *const MntIdReq,
                ids.as_mut_ptr(),
                ids.len(),
                0u32,
            )
        };
        if n < 0 {
            return None;
        }
        let n = n as usize;
        all.extend_from_slice(&ids[..n]);
        if n < ids.len() {
            break;
        }
        last = ids[n - 1];
    }
    // struct statmount is 512 bytes; nothing but the basic fields is asked for.
    let mut buf = vec![0u64; 128];
    let mut rows = Vec::with_capacity(all.len());
    for id in all {
        let req = MntIdReq {
            size: std::mem::size_of::<MntIdReq>() as u32,
            spare: 0,
            mnt_id: id,
            param: STATMOUNT_MNT_BASIC,
        };
        // SAFETY: the kernel reads one mnt_id_req and writes at most the buffer's size.
        let rc = unsafe {
            libc::syscall(
                SYS_STATMOUNT,
                &req as *const MntIdReq,
                buf.as_mut_ptr(),
                buf.len() * 8,
                0u32,
            )
        };
        // A mount gone since the listing is not one to name.
        if rc == 0 {
            // mnt_id at byte 40, mnt_parent_id at 48, mnt_id_old (u32) at 56.
            rows.push((buf[5], buf[6], buf[7] & 0xffff_ffff));
        }
    }
    Some(rows)
}

/// Old id -> unique id of every mount the helper's mount namespace shows from its root
/// ([`mount_rows`]); `None` where the kernel has no unique ids (the old ids are the keys then).
fn keys_by_old_id() -> Option<std::collections::HashMap<u64, u64>> {
    Some(
        mount_rows()?
            .into_iter()
            .map(|(k, _, old)| (old, k))
            .collect(),
    )
}

/// The keys of the mounts of the helper's mount namespace (just entered, so its root is the
/// namespace's) but its root: what a nested user namespace's mount namespace inherited
/// ([`nested`]). Without `listmount`, the old ids of the VM's /proc's mountinfo for the helper.
fn inherited_mounts(proc: BorrowedFd<'_>) -> Vec<u64> {
    let rows = mount_rows().unwrap_or_else(|| {
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_NO_XDEV);
        let mut text = String::new();
        if let Ok(f) = openat2(proc, "thread-self/mountinfo", how) {
            let _ = io::Read::read_to_string(&mut std::fs::File::from(f), &mut text);
        }
        text.lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let id = w.next()?.parse().ok()?;
                Some((id, w.next()?.parse().ok()?, id))
            })
            .collect()
    });
    not_roots(&rows)
}

/// The ids of `rows` (id, parent, old id) but the roots: a mount that is its own parent (a
/// namespace's root) or whose parent is not among them.
fn not_roots(rows: &[(u64, u64, u64)]) -> Vec<u64> {
    let ids: HashSet<u64> = rows.iter().map(|r| r.0).collect();
    rows.iter()
        .filter(|(id, parent, _)| parent != id && ids.contains(parent))
        .map(|r| r.0)
        .collect()
}

/// The key of the mount with old id `old` in the helper's mount namespace ([`keys_by_old_id`]).
fn key_of_old(keys: &Option<std::collections::HashMap<u64, u64>>, old: u64) -> Option<u64> {
    match keys {
        Some(m) => m.get(&old).copied(),
        None => Some(old),
    }
}

/// Mount ids below `top` (its parent chain reaches it) whose filesystem and root in it (the
/// third and fourth mountinfo fields) are those of a mount `protected` says is one.
fn copies_of(mountinfo: &str, top: u64, protected: impl Fn(u64) -> bool) -> Vec<u64> {
    let rows: Vec<(u64, u64, &str, &str)> = mountinfo
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((
                w.next()?.parse().ok()?,
                w.next()?.parse().ok()?,
                w.next()?,
                w.next()?,
            ))
        })
        .collect();
    let keys: HashSet<(&str, &str)> = rows
        .iter()
        .filter(|r| protected(r.0))
        .map(|r| (r.2, r.3))
        .collect();
    let mut below = vec![top];
    let mut i = 0;
    while i < below.len() {
        let p = below[i];
        for r in &rows {
            if r.1 == p && r.0 != p && !below.contains(&r.0) {
                below.push(r.0);
            }
        }
        i += 1;
    }
    below
        .into_iter()
        .skip(1)
        .filter(|id| {
            rows.iter()
                .any(|r| r.0 == *id && keys.contains(&(r.2, r.3)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nested_namespace_inherits_every_mount_but_its_root() {
        // (id, parent, old id): 1 is the namespace's root (its own parent), 2 and 3 hang
        // below it, 4 below 3; 9 names a parent outside the listing (a chroot's view).
        let rows = [(1, 1, 11), (2, 1, 12), (3, 1, 13), (4, 3, 14), (5, 9, 15)];
        let mut got = not_roots(&rows);
        got.sort();
        assert_eq!(got, vec![2, 3, 4]);
    }

    #[test]
    fn paths_split_into_folder_and_name() {
        assert_eq!(split("/a/b"), ("/a".into(), "b".into()));
        assert_eq!(split("/a/b/"), ("/a".into(), "b".into()));
        assert_eq!(split("/a"), ("/".into(), "a".into()));
        assert_eq!(split("/"), ("/".into(), "".into()));
    }

    #[test]
    fn copies_of_protected_mounts_below_a_copy_are_found() {
        let info = "\
20 1 0:1 / / rw - overlay o rw
30 20 0:5 / /proc rw - proc proc rw
40 30 0:5 /bus /proc/bus ro - proc proc rw
50 30 0:8 / /proc/kcore ro - tmpfs t rw
60 20 0:9 / /tmp/own rw - tmpfs t rw
70 20 0:5 / /tmp/pc rw - proc proc rw
71 70 0:5 /bus /tmp/pc/bus ro - proc proc rw
72 70 0:8 / /tmp/pc/kcore ro - tmpfs t rw
73 70 0:9 / /tmp/pc/own rw - tmpfs t rw
74 72 0:8 / /tmp/pc/kcore/x ro - tmpfs t rw
";
        let protected: HashSet<u64> = [20, 30, 40, 50].into_iter().collect();
        let p = |id: u64| protected.contains(&id);
        assert_eq!(copies_of(info, 70, p), vec![71, 72, 74]);
        assert_eq!(copies_of(info, 73, p), Vec::<u64>::new());
    }

    #[test]
    fn statvfs_flags_become_mount_attributes() {
        assert_eq!(
            mount_attrs(1 | 2 | 4096),
            mv::attr::RDONLY | mv::attr::NOSUID | mv::attr::RELATIME
        );
        assert_eq!(mount_attrs(8 | 1024), mv::attr::NOEXEC | mv::attr::NOATIME);
        assert_eq!(mount_attrs(0), mv::attr::STRICTATIME);
    }
}
