//! `create`: the runtime process (P, VM root) and the two stages of the container's init.
//!
//! ```text
//! P  fork ──► C: join spec ns paths, unshare(user) ──"map"──► P writes uid/gid_map, cgroup
//!            C: unshare(mnt, pid, net, ipc, uts, cgroup), open rootfs/stage as VM-root-owner,
//!               become container root, fork ──► C2 (pid 1)     ◄──"pid"── C exits
//! P  idmapped layer and bind mounts (needs VM root + the new user ns); overlay over the layers
//!    with fs ids = container root's VM id (rootfs::container_overlay) ──fds──► C2
//! C2 attaches the rootfs, spec mounts, devices
//! P  prestart/createRuntime hooks ──"hooks"──► C2 pivot_root, masks, user, caps, seccomp
//! C2 ──"ready"──► P writes state + pid file and exits; C2 blocks on exec.fifo until `start`
//! ```
//!
//! Every wait is a read on a SOCK_SEQPACKET pair, so if either side dies the other sees EOF
//! and gives up instead of hanging.

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use eci_policy::spec::Spec;
use eci_policy::{
    check_bind_source, named_volume_data, BindContext, IdRange, Policy, ShareFolder, VolumeDataKind,
};
use serde::{Deserialize, Serialize};

use crate::cgroup::{self, Cgroup};
use crate::state::{self, State, FIFO};
use crate::sys::{self, errno, Result};
use crate::{hooks, process, rootfs, Global};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Msg {
    Map,
    Mapped,
    Pid {
        pid: i32,
    },
    Mounts {
        root: RootPlan,
        binds: Vec<(usize, bool)>,
    },
    HooksDone,
    Ready {
        warnings: Vec<String>,
    },
    Error {
        msg: String,
    },
}

pub fn send_msg(sock: RawFd, m: &Msg, fds: &[RawFd]) -> Result<()> {
    sys::send(sock, &serde_json::to_vec(m).expect("serializable"), fds)
}

/// Next message; EOF and `Error` become `Err`.
pub fn recv_msg(sock: RawFd, who: &str) -> Result<(Msg, Vec<OwnedFd>)> {
    match sys::recv(sock)? {
        None => Err(format!(
            "{who} exited before finishing the container set-up"
        )),
        Some((b, fds)) => match serde_json::from_slice::<Msg>(&b) {
            Ok(Msg::Error { msg }) => Err(msg),
            Ok(m) => Ok((m, fds)),
            Err(e) => Err(format!("bad message from {who}: {e}")),
        },
    }
}

/// The image rootfs as the runtime found it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RootPlan {
    /// An overlay (dockerd's overlay2, containerd's snapshotter): rebuilt from idmapped layers.
    Overlay {
        lowers: Vec<PathBuf>,
        upper_parent: PathBuf,
        upper: String,
        work: String,
    },
    /// A plain folder, idmapped as a whole.
    Dir,
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut esc = false;
    for c in s.chars() {
        if esc {
            out.last_mut().expect("non-empty").push(c);
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else if c == sep {
            out.push(String::new());
        } else {
            out.last_mut().expect("non-empty").push(c);
        }
    }
    out
}

/// Parse an overlay mount's super options from mountinfo.
pub fn overlay_plan(super_options: &str) -> Result<RootPlan> {
    let mut lower = None;
    let mut upper = None;
    let mut work = None;
    for o in super_options.split(',') {
        let o = cgroup::unescape(o);
        if let Some(v) = o.strip_prefix("lowerdir=") {
            lower = Some(v.to_string());
        } else if let Some(v) = o.strip_prefix("upperdir=") {
            upper = Some(PathBuf::from(v));
        } else if let Some(v) = o.strip_prefix("workdir=") {
            work = Some(PathBuf::from(v));
        }
    }
    let (Some(lower), Some(upper), Some(work)) = (lower, upper, work) else {
        return Err(
            "the rootfs is a read-only overlay (no upperdir/workdir); eci-runc needs a writable container layer"
                .into(),
        );
    };
    let upper_parent = upper
        .parent()
        .filter(|p| Some(*p) == work.parent())
        .ok_or_else(|| {
            format!(
                "overlay upperdir {} and workdir {} must share a parent folder to be idmapped together",
                upper.display(),
                work.display()
            )
        })?
        .to_path_buf();
    // dockerd shortens long layer lists with paths relative to its overlay2 folder.
    let base = upper_parent
        .parent()
        .unwrap_or(Path::new("/"))
        .to_path_buf();
    let lowers = split_unescaped(&lower, ':')
        .into_iter()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let p = PathBuf::from(&l);
            let p = if p.is_absolute() { p } else { base.join(p) };
            fs::canonicalize(&p).unwrap_or(p)
        })
        .collect();
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    Ok(RootPlan::Overlay {
        lowers,
        upper: name(&upper).unwrap_or_default(),
        work: name(&work).unwrap_or_default(),
        upper_parent,
    })
}

fn root_plan(root: &Path) -> Result<RootPlan> {
    let root_s = root.display().to_string();
    let found = cgroup::mountinfo()
        .into_iter()
        .rfind(|m| m.mount_point == root_s);
    match found {
        Some(m) if m.fstype == "overlay" => overlay_plan(&m.super_options),
        _ => Ok(RootPlan::Dir),
    }
}

fn ns_file(kind: &str) -> &str {
    match kind {
        "network" => "net",
        "mount" => "mnt",
        k => k,
    }
}

fn ns_flag(kind: &str) -> libc::c_int {
    match kind {
        "pid" => libc::CLONE_NEWPID,
        "network" => libc::CLONE_NEWNET,
        "ipc" => libc::CLONE_NEWIPC,
        "uts" => libc::CLONE_NEWUTS,
        "mount" => libc::CLONE_NEWNS,
        "cgroup" => libc::CLONE_NEWCGROUP,
        "user" => libc::CLONE_NEWUSER,
        _ => 0,
    }
}

fn same_file(a: &str, b: &str) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

pub fn bounding_set() -> Vec<&'static str> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    eci_policy::caps_from_mask(mask)
}

/// Give the container's root ownership of inherited pipes so `/dev/stdout` can be reopened
/// inside (the shim created them as VM root).
pub fn chown_stdio(uid: u32) {
    for fd in 0..3 {
        // SAFETY: fstat into a zeroed struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid out-pointer.
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            continue;
        }
        let fmt = st.st_mode & libc::S_IFMT;
        if fmt == libc::S_IFCHR || st.st_uid != 0 {
            continue;
        }
        // SAFETY: fchown on an inherited descriptor; failures are harmless.
        unsafe { libc::fchown(fd, uid, uid) };
    }
}

pub struct CreateOpts {
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub no_pivot: bool,
    pub preserve_fds: i32,
}

/// Undo a half-made container unless disarmed.
struct Cleanup<'a> {
    g: &'a Global,
    id: String,
    dir: PathBuf,
    cgroup: Option<Cgroup>,
    child: Option<i32>,
    armed: bool,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.child {
            let _ = sys::kill(pid, libc::SIGKILL);
        }
        if let Some(cg) = &self.cgroup {
            for p in cg.pids() {
                let _ = sys::kill(p, libc::SIGKILL);
            }
            let _ = cg.destroy();
        }
        let _ = self.g.allocator().release(&self.id, &self.g.root);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn stall(point: &str) {
    // Lets the crash-safety test kill the runtime at a known point of `create`; the test waits
    // for the point's name in ECI_RUNC_TEST_STALL_MARK before it kills.
    if std::env::var("ECI_RUNC_TEST_STALL").is_ok_and(|v| v == point) {
        if let Some(mark) = std::env::var_os("ECI_RUNC_TEST_STALL_MARK") {
            let _ = fs::write(mark, point);
        }
        std::thread::sleep(std::time::Duration::from_secs(600));
    }
}

pub fn load_spec(bundle: &Path) -> Result<Spec> {
    let p = bundle.join("config.json");
    let b = fs::read(&p).map_err(|e| format!("read {}: {e}", p.display()))?;
    serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", p.display()))
}

pub fn apply_policy(
    spec: &mut Spec,
    policy: &Policy,
    id: &str,
    range: IdRange,
) -> Result<Vec<String>> {
    let bnd = bounding_set();
    let is_vm = |kind: &str, path: &str| {
        same_file(path, &format!("/proc/self/ns/{}", ns_file(kind)))
            || same_file(path, &format!("/proc/1/ns/{}", ns_file(kind)))
    };
    let env = eci_policy::Environment {
        container_id: id,
        range,
        bounding: &bnd,
        is_vm_namespace: &is_vm,
    };
    let w = eci_policy::apply(spec, policy, &env).map_err(|e| e.to_string())?;
    Ok(w.into_iter().map(|w| w.0).collect())
}

pub fn create(g: &Global, o: &CreateOpts) -> Result<i32> {
    state::valid_id(&o.id)?;
    let bundle =
        fs::canonicalize(&o.bundle).map_err(|e| format!("bundle {}: {e}", o.bundle.display()))?;
    let mut spec = load_spec(&bundle)?;
    fs::create_dir_all(&g.root).map_err(|e| format!("create {}: {e}", g.root.display()))?;
    let dir = state::dir(&g.root, &o.id);
    if let Err(e) = fs::create_dir(&dir) {
        return Err(if e.kind() == std::io::ErrorKind::AlreadyExists {
            format!("container with id exists: {}", o.id)
        } else {
            format!("create {}: {e}", dir.display())
        });
    }
    let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o711));
    let mut cleanup = Cleanup {
        g,
        id: o.id.clone(),
        dir: dir.clone(),
        cgroup: None,
        child: None,
        armed: true,
    };
    let policy = g.policy()?;
    let range = g.allocator_with(&policy).allocate(&o.id, &g.root)?;
    stall("allocated");
    for w in apply_policy(&mut spec, &policy, &o.id, range)? {
        crate::log::warn(&w);
    }
    let root_rel = spec
        .root
        .as_ref()
        .map(|r| r.path.clone())
        .ok_or("config.json has no root.path")?;
    let root_path =
        fs::canonicalize(bundle.join(&root_rel)).map_err(|e| format!("rootfs {root_rel}: {e}"))?;
    let plan = root_plan(&root_path)?;

    // Bind sources: resolved here (symlinks included) and checked again, so a link planted
    // under a shared folder cannot lead outside it.
    let mut binds = Vec::new();
    for (i, m) in spec.mounts.iter().enumerate() {
        if !m.is_bind() {
            continue;
        }
        let src = m.source.clone().unwrap_or_default();
        let real = fs::canonicalize(&src).map_err(|e| format!("bind mount source {src}: {e}"))?;
        let real_s = real.display().to_string();
        // docker-init is a VM-owned symlink (Debian: to tini-static); everything else is
        // checked again once resolved.
        let init_binary = policy
            .init_binaries
            .iter()
            .any(|b| eci_policy::normalize_path(b) == eci_policy::normalize_path(&src));
        if real_s != src && !init_binary {
            let ctx = BindContext {
                container_id: Some(&o.id),
                destination: Some(&m.destination),
            };
            check_bind_source(&real_s, &policy, &ctx).map_err(|e| e.to_string())?;
        }
        // A named volume's path says nothing about what dockerd mounted on its `_data` (SPEC
        // B2): check that folder's mount, also for a source below it.
        if let Some((root, data)) = named_volume_data(&real_s, &policy.engine_data_roots) {
            let kind = check_volume_data(&root, &data, &policy)?;
            crate::log::debug(&format!("volume folder {data}: {kind:?}"));
        }
        binds.push((i, real));
    }

    let cg = Cgroup::plan(&cgroup::resolve_path(
        spec.linux.as_ref().and_then(|l| l.cgroups_path.as_deref()),
        g.systemd_cgroup,
        &o.id,
    ));
    let mut st = State {
        id: o.id.clone(),
        pid: 0,
        pid_start: 0,
        bundle: bundle.display().to_string(),
        rootfs: root_path.display().to_string(),
        created: crate::log::rfc3339(SystemTime::now()),
        range_start: range.start,
        range_size: range.size,
        cgroup: cg.clone(),
        annotations: spec.annotations.clone().unwrap_or_default(),
    };
    state::write_atomic(
        &dir.join("config.json"),
        &serde_json::to_vec(&spec).map_err(|e| e.to_string())?,
    )?;
    st.save(&g.root)?;
    cleanup.cgroup = Some(cg.clone());
    cg.create()?;
    if let Some(r) = spec.linux.as_ref().and_then(|l| l.resources.as_ref()) {
        cg.apply(r)?;
        for w in cg.restrict_devices(&r.devices)? {
            crate::log::warn(&w);
        }
    }
    cg.delegate(range.start, range.start);
    stall("cgroup");

    let fifo = dir.join(FIFO);
    let fifo_c = sys::cstr(&fifo)?;
    // SAFETY: valid path.
    if unsafe { libc::mkfifo(fifo_c.as_ptr(), 0o622) } != 0 {
        return Err(errno("create exec.fifo"));
    }
    let _ = fs::set_permissions(&fifo, fs::Permissions::from_mode(0o622));
    sys::chown_path(&fifo, range.start, range.start)?;
    let fifo_fd = sys::open(&fifo, libc::O_PATH, 0)?;

    let stage = dir.join("stage");
    fs::create_dir(&stage).map_err(|e| format!("create {}: {e}", stage.display()))?;
    if let RootPlan::Overlay { lowers, .. } = &plan {
        for i in 0..lowers.len() {
            fs::create_dir(stage.join(format!("l{i}"))).map_err(|e| e.to_string())?;
        }
        fs::create_dir(stage.join("u")).map_err(|e| e.to_string())?;
    }

    let terminal = spec.process.as_ref().is_some_and(|p| p.terminal);
    let console = match (&o.console_socket, terminal) {
        (Some(p), true) => Some(
            std::os::unix::net::UnixStream::connect(p)
                .map_err(|e| format!("connect console socket {}: {e}", p.display()))?,
        ),
        (None, true) => {
            return Err("process.terminal is set but no --console-socket was given".into())
        }
        _ => None,
    };
    chown_stdio(range.start);

    let (p_sock, c_sock) = sys::socketpair()?;
    let ctx = ChildCtx {
        spec: &spec,
        root_path: &root_path,
        cgroup: &cg,
        fifo_fd: fifo_fd.as_raw_fd(),
        console: console.as_ref().map(|c| c.as_raw_fd()),
        no_pivot: o.no_pivot,
        preserve_fds: o.preserve_fds,
    };
    let pid = sys::fork()?;
    if pid == 0 {
        drop(p_sock);
        let sock = c_sock.as_raw_fd();
        if let Err(e) = stage1(&ctx, sock) {
            let _ = send_msg(sock, &Msg::Error { msg: e }, &[]);
        }
        // SAFETY: leave the forked child without running the parent's destructors.
        unsafe { libc::_exit(1) };
    }
    drop(c_sock);
    cleanup.child = Some(pid);
    let sock = p_sock.as_raw_fd();

    match recv_msg(sock, "container init")? {
        (Msg::Map, _) => {}
        (m, _) => return Err(format!("unexpected message {m:?}")),
    }
    let map = format!("0 {} {}\n", range.start, range.size);
    fs::write(format!("/proc/{pid}/uid_map"), &map).map_err(|e| format!("write uid_map: {e}"))?;
    fs::write(format!("/proc/{pid}/gid_map"), &map).map_err(|e| format!("write gid_map: {e}"))?;
    cg.add_pid(pid)?;
    let userns = sys::open(
        Path::new(&format!("/proc/{pid}/ns/user")),
        libc::O_RDONLY,
        0,
    )?;
    send_msg(sock, &Msg::Mapped, &[])?;
    stall("mapped");

    let init = match recv_msg(sock, "container init")? {
        (Msg::Pid { pid }, _) => pid,
        (m, _) => return Err(format!("unexpected message {m:?}")),
    };
    let _ = sys::waitpid(pid);
    cleanup.child = Some(init);

    let mut fds: Vec<OwnedFd> = Vec::new();
    match &plan {
        RootPlan::Overlay {
            lowers,
            upper_parent,
            upper,
            work,
        } => {
            let mut layers = Vec::with_capacity(lowers.len() + 1);
            for l in lowers {
                layers.push(idmapped(l, &userns, sys::MOUNT_ATTR_RDONLY, false, true)?);
            }
            layers.push(idmapped(upper_parent, &userns, 0, false, true)?);
            fds.push(rootfs::container_overlay(
                &stage,
                &layers,
                upper,
                work,
                range.start,
            )?);
        }
        RootPlan::Dir => fds.push(idmapped(&root_path, &userns, 0, true, true)?),
    }
    let mut bind_list = Vec::new();
    for (i, real) in &binds {
        let m = &spec.mounts[*i];
        let (flags, prop, _) = rootfs::parse_options(&m.options);
        let mut attrs = 0;
        for (ms, at) in [
            (libc::MS_RDONLY, sys::MOUNT_ATTR_RDONLY),
            (libc::MS_NOSUID, sys::MOUNT_ATTR_NOSUID),
            (libc::MS_NODEV, sys::MOUNT_ATTR_NODEV),
            (libc::MS_NOEXEC, sys::MOUNT_ATTR_NOEXEC),
        ] {
            if flags & ms != 0 {
                attrs |= at;
            }
        }
        let recursive = flags & libc::MS_REC != 0;
        let fd = match idmapped(real, &userns, attrs, recursive, false) {
            Ok(fd) => fd,
            Err(e) => {
                crate::log::warn(&format!(
                    "bind mount {} is not idmapped ({e}); files owned by VM ids outside the container's range show as nobody (SPEC U4)",
                    real.display()
                ));
                let fd = sys::open_tree_clone(real, recursive)?;
                sys::mount_setattr(&fd, attrs, None, recursive, 0)?;
                fd
            }
        };
        let propagation = prop & !libc::MS_REC;
        if propagation != 0 {
            sys::mount_setattr(&fd, 0, None, recursive, propagation)?;
        }
        bind_list.push((*i, real.is_dir()));
        fds.push(fd);
    }
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    send_msg(
        sock,
        &Msg::Mounts {
            root: plan.clone(),
            binds: bind_list,
        },
        &raw,
    )?;
    drop(fds);
    drop(userns);
    stall("mounts");

    st.pid = init;
    st.pid_start = sys::start_time(init).unwrap_or(0);
    st.save(&g.root)?;
    if let Some(h) = &spec.hooks {
        let state_json = hooks::state_json(&st, "creating");
        hooks::run(&h.prestart, &state_json, "prestart")?;
        hooks::run(&h.create_runtime, &state_json, "createRuntime")?;
    }
    send_msg(sock, &Msg::HooksDone, &[])?;
    match recv_msg(sock, "container init")? {
        (Msg::Ready { warnings }, _) => {
            for w in warnings {
                crate::log::warn(&w);
            }
        }
        (m, _) => return Err(format!("unexpected message {m:?}")),
    }
    if let Some(pf) = &o.pid_file {
        state::write_atomic(pf, init.to_string().as_bytes())?;
    }
    cleanup.armed = false;
    Ok(init)
}

/// Whether a named volume's `_data` folder may be bound (SPEC B2): dockerd's local driver mounts
/// whatever the volume's options say there (`type=none,o=bind,device=/etc`), so the path proves
/// nothing. The rule (`eci_policy::classify`) looks at the mount the opened folder is on, found
/// by its mount id, not at mount points as text (which stacked or escaped mounts can blur).
fn check_volume_data(root: &str, data_dir: &str, policy: &Policy) -> Result<VolumeDataKind> {
    let data_path = Path::new(data_dir);
    let data_id = sys::mount_id(&sys::open_dir_path(data_path)?, data_path)?;
    let root_path = Path::new(root);
    let root_id = sys::mount_id(&sys::open_dir_path(root_path)?, root_path)?;
    let mut shares = Vec::new();
    for prefix in &policy.allowed_bind_prefixes {
        // A prefix that does not exist here (no share mounted) allows nothing.
        let Ok(real) = fs::canonicalize(prefix) else {
            continue;
        };
        let Ok(fd) = sys::open_dir_path(&real) else {
            continue;
        };
        shares.push(ShareFolder {
            path: real.display().to_string(),
            mount_id: sys::mount_id(&fd, &real)?,
        });
    }
    // Read after the ids: a mount that went away in between is not found, and refused.
    let text = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("read /proc/self/mountinfo: {e}"))?;
    let mounts = eci_policy::parse_mountinfo(&text);
    eci_policy::classify(data_dir, data_id, root_id, &mounts, &shares).map_err(|e| e.to_string())
}

/// A detached copy of `path` whose owners are shifted into the container's range: VM id 0
/// appears as container root, and container root's writes land on disk as VM id 0.
fn idmapped(
    path: &Path,
    userns: &OwnedFd,
    attrs: u64,
    recursive: bool,
    required: bool,
) -> Result<OwnedFd> {
    let fd = sys::open_tree_clone(path, recursive)?;
    match sys::mount_setattr(&fd, attrs, Some(userns.as_raw_fd()), recursive, 0) {
        Ok(()) => Ok(fd),
        Err(e) if required => Err(format!(
            "cannot idmap {} ({e}): the kernel or this filesystem lacks idmapped mounts (Linux >= 5.19 and a filesystem that supports them are needed); refusing to run the container with wrong file owners (SPEC U4)",
            path.display()
        )),
        Err(e) => Err(e),
    }
}

/// dockerd asks for `net.ipv4.ping_group_range=0 2147483647` (every group may ping); inside a
/// user namespace only mapped groups can be named, which is all of the container's 65536.
fn clamp_sysctl(key: &str, value: &str) -> String {
    if key == "net.ipv4.ping_group_range" {
        let parts: Vec<u64> = value
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if let [lo, hi] = parts[..] {
            let max = u64::from(eci_policy::RANGE_SIZE - 1);
            return format!("{} {}", lo.min(max), hi.min(max));
        }
    }
    value.to_string()
}

struct ChildCtx<'a> {
    spec: &'a Spec,
    root_path: &'a Path,
    cgroup: &'a Cgroup,
    fifo_fd: RawFd,
    console: Option<RawFd>,
    no_pivot: bool,
    preserve_fds: i32,
}

fn stage1(c: &ChildCtx<'_>, sock: RawFd) -> Result<()> {
    let linux = c.spec.linux.clone().unwrap_or_default();
    // Join namespaces given by path while still VM root, which may enter any of them.
    let mut joined = Vec::new();
    for ns in &linux.namespaces {
        if let Some(p) = &ns.path {
            if ns.kind == "mount" {
                return Err(
                    "joining a mount namespace by path is not supported by eci-runc".into(),
                );
            }
            let fd = sys::open(Path::new(p), libc::O_RDONLY, 0)?;
            joined.push((fd, ns_flag(&ns.kind), format!("{} namespace {p}", ns.kind)));
        }
    }
    for (fd, flag, what) in &joined {
        sys::setns(fd.as_raw_fd(), *flag, what)?;
    }
    sys::unshare(libc::CLONE_NEWUSER)?;
    send_msg(sock, &Msg::Map, &[])?;
    match recv_msg(sock, "eci-runc")? {
        (Msg::Mapped, _) => {}
        (m, _) => return Err(format!("unexpected message {m:?}")),
    }
    let mut flags = 0;
    for ns in &linux.namespaces {
        if ns.path.is_none() && ns.kind != "user" {
            flags |= ns_flag(&ns.kind);
        }
    }
    sys::unshare(flags)?;
    sys::mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_SLAVE,
        None,
    )?;
    // Still VM id 0 as far as file owners go: open the rootfs folder now, while the owner
    // bits of VM-root-only folders (dockerd's 0710 data dirs) let us through.
    let root_fd = sys::open(c.root_path, libc::O_PATH | libc::O_DIRECTORY, 0)?;
    // SAFETY: id changes inside the new user namespace, where we hold every capability.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) < 0 {
            return Err(errno("setgroups"));
        }
        if libc::setresgid(0, 0, 0) < 0 || libc::setresuid(0, 0, 0) < 0 {
            return Err(errno("become container root"));
        }
    }
    let pid = sys::fork()?;
    if pid > 0 {
        send_msg(sock, &Msg::Pid { pid }, &[])?;
        // SAFETY: the first stage is done; leave without destructors.
        unsafe { libc::_exit(0) };
    }
    match stage2(c, sock, &root_fd) {
        Ok(never) => match never {},
        Err(e) => Err(e),
    }
}

enum Never {}

fn stage2(c: &ChildCtx<'_>, sock: RawFd, root_fd: &OwnedFd) -> Result<Never> {
    let (msg, mut fds) = recv_msg(sock, "eci-runc")?;
    let Msg::Mounts { root, binds } = msg else {
        return Err(format!("unexpected message {msg:?}"));
    };
    let mut warnings = Vec::new();
    let mut it = fds.drain(..);
    match &root {
        RootPlan::Overlay { .. } | RootPlan::Dir => {
            let fd = it.next().ok_or("missing rootfs descriptor")?;
            rootfs::attach_at_fd(fd.as_raw_fd(), root_fd.as_raw_fd())?;
            rootfs::fchdir(fd.as_raw_fd())?;
        }
    }
    let mut bind_fds = BTreeMap::new();
    for (i, is_dir) in binds {
        let fd = it.next().ok_or("missing bind mount descriptor")?;
        bind_fds.insert(i, (fd, is_dir));
    }
    drop(it);
    rootfs::mount_all(c.spec, &mut bind_fds, c.cgroup, &mut warnings)?;
    rootfs::setup_dev(c.spec)?;
    match recv_msg(sock, "eci-runc")? {
        (Msg::HooksDone, _) => {}
        (m, _) => return Err(format!("unexpected message {m:?}")),
    }
    rootfs::pivot(c.no_pivot)?;
    rootfs::harden(c.spec)?;
    let linux = c.spec.linux.clone().unwrap_or_default();
    let own_uts = linux
        .namespaces
        .iter()
        .any(|n| n.kind == "uts" && n.path.is_none());
    if own_uts {
        if let Some(h) = &c.spec.hostname {
            // SAFETY: valid buffer and length.
            if unsafe { libc::sethostname(h.as_ptr() as *const libc::c_char, h.len()) } < 0 {
                return Err(errno("sethostname"));
            }
        }
        if let Some(d) = &c.spec.domainname {
            // SAFETY: valid buffer and length.
            if unsafe { libc::setdomainname(d.as_ptr() as *const libc::c_char, d.len()) } < 0 {
                return Err(errno("setdomainname"));
            }
        }
    }
    for (k, v) in linux.sysctl.iter().flatten() {
        let p = format!("/proc/sys/{}", k.replace('.', "/"));
        let v = clamp_sysctl(k, v);
        fs::write(&p, &v).map_err(|e| format!("sysctl {k}={v}: {e}"))?;
    }
    if c.spec.root.as_ref().is_some_and(|r| r.readonly) {
        rootfs::readonly_root()?;
    }
    let p = c.spec.process.clone().ok_or("config.json has no process")?;
    match c.console {
        Some(fd) if p.terminal => process::setup_terminal(fd, &p, true)?,
        _ => {
            // SAFETY: plain syscall.
            unsafe { libc::setsid() };
        }
    }
    process::set_rlimits(&p, &mut warnings)?;
    if let Some(adj) = p.oom_score_adj {
        if let Err(e) = fs::write("/proc/self/oom_score_adj", adj.to_string()) {
            warnings.push(format!("oom_score_adj {adj} not applied: {e}"));
        }
    }
    let cwd = if p.cwd.is_empty() { "/" } else { &p.cwd };
    std::env::set_current_dir(cwd).map_err(|e| format!("chdir to cwd {cwd:?}: {e}"))?;
    let arg0 = p.args.first().ok_or("process.args is empty")?;
    let exe = process::lookup(arg0, &p.env)?;
    let seccomp = linux.seccomp.as_ref();
    process::secure(&p, seccomp, true)?;
    process::finalize(&p)?;
    process::secure(&p, seccomp, false)?;
    process::cloexec_from(3 + c.preserve_fds);
    for fd in 3..3 + c.preserve_fds {
        sys::set_cloexec(fd, false);
    }
    send_msg(sock, &Msg::Ready { warnings }, &[])?;
    // Wait for `start`: opening the FIFO for writing blocks until it is opened for reading.
    let path = format!("/proc/self/fd/{}", c.fifo_fd);
    let w = sys::open(Path::new(&path), libc::O_WRONLY, 0)
        .map_err(|e| format!("open exec fifo: {e}"))?;
    // SAFETY: one byte from a static buffer.
    unsafe { libc::write(w.as_raw_fd(), b"0".as_ptr() as *const libc::c_void, 1) };
    drop(w);
    let e = process::execve(&exe, &p.args, &p.env).unwrap_err();
    eprintln!("eci-runc: {e}");
    // SAFETY: exec failed after start; nothing left to report to.
    unsafe { libc::_exit(127) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_overlay_options_are_understood() {
        let o = "rw,lowerdir=/d/overlay2/l/AAA:/d/overlay2/l/BBB,upperdir=/d/overlay2/x/diff,workdir=/d/overlay2/x/work,index=off";
        let RootPlan::Overlay {
            lowers,
            upper_parent,
            upper,
            work,
        } = overlay_plan(o).unwrap()
        else {
            panic!("not an overlay plan");
        };
        assert_eq!(lowers.len(), 2);
        assert_eq!(upper_parent, PathBuf::from("/d/overlay2/x"));
        assert_eq!((upper.as_str(), work.as_str()), ("diff", "work"));
    }

    #[test]
    fn relative_lowers_resolve_against_the_overlay2_folder() {
        let o = "lowerdir=l/AAA,upperdir=/d/overlay2/x/diff,workdir=/d/overlay2/x/work";
        let RootPlan::Overlay { lowers, .. } = overlay_plan(o).unwrap() else {
            panic!();
        };
        assert_eq!(lowers, vec![PathBuf::from("/d/overlay2/l/AAA")]);
    }

    #[test]
    fn unusable_overlays_are_refused_with_a_reason() {
        assert!(overlay_plan("lowerdir=/a:/b")
            .unwrap_err()
            .contains("read-only overlay"));
        let e = overlay_plan("lowerdir=/a,upperdir=/x/diff,workdir=/y/work").unwrap_err();
        assert!(e.contains("share a parent"), "{e}");
    }

    #[test]
    fn ping_group_range_is_clamped_to_the_mapped_groups() {
        assert_eq!(
            clamp_sysctl("net.ipv4.ping_group_range", "0 2147483647"),
            "0 65535"
        );
        assert_eq!(clamp_sysctl("net.ipv4.ping_group_range", "1 5"), "1 5");
        assert_eq!(clamp_sysctl("net.ipv4.ip_forward", "1"), "1");
    }

    #[test]
    fn escaped_separators_stay_in_paths() {
        assert_eq!(split_unescaped("a\\,b,c", ','), vec!["a,b", "c"]);
        assert_eq!(split_unescaped("/x\\:y:/z", ':'), vec!["/x:y", "/z"]);
    }
}
