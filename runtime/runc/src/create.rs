//! `create`: the runtime process (P, VM root) and the processes that set up the container.
//!
//! ```text
//! P  fork ──► C: unshare(mnt) = M (the VM's user ns owns it), join spec ns paths,
//!               unshare(user) ──"map"──► P writes uid/gid_map, cgroup
//!            C: unshare(pid, net, ipc, uts, cgroup), fork ──► I (pid 1, in M)
//!            C ──"pid" + fds of M, net──► P; C exits
//!            I: fork ──► X: unshare(mnt) (the container's), open rootfs, become container root
//! P  idmapped layer and bind mounts (needs VM root + the new user ns); overlay over the layers
//!    with fs ids = container root's VM id (rootfs::container_overlay) ──fds──► X
//! X  attaches the rootfs, spec mounts, devices ──detached copy of the tree──► P; X exits
//! P  fork ──► V (VM root): setns(M, net), attach the tree; P runs prestart/createRuntime hooks
//! V  pivot_root (moves I's root), masks, read-only paths ──"hardened"──► P; V exits
//! P ──"mounts done"──► I: unshare(mnt), a copy whose mounts the kernel locks (SPEC M2); user,
//!    caps, seccomp ──"ready"──► P writes state + pid file and exits; I blocks on exec.fifo
//! ```
//!
//! Every wait is a read on a SOCK_SEQPACKET pair, so if either side dies the other sees EOF
//! and gives up instead of hanging.

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use eci_policy::spec::Spec;
use eci_policy::{IdRange, Policy, PolicyError};
use serde::{Deserialize, Serialize};

use crate::cgroup::{self, Cgroup};
use crate::share::{self, Sharing};
use crate::state::{self, State, FIFO};
use nix::sys::stat::Mode;

use crate::sys::{self, Result};
use crate::{binds, hooks, process, rootfs, Global};

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
    /// The container's finished mount tree, detached (one descriptor), and what the builder
    /// has to warn about.
    Tree {
        warnings: Vec<String>,
    },
    /// The mount helper attached the tree at the rootfs path; the hooks may look at it.
    Attached,
    /// From the mount helper to the init: its mount namespace is complete (with the new root's
    /// descriptor); lock it.
    MountsDone,
    HooksDone,
    /// An exec'd process's mount-vetting listener (SCM_RIGHTS) for the supervisor.
    Listener,
    /// The supervisor has the listener; the exec'd process may go on.
    Vetted,
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

const PIPEFS_MAGIC: i64 = 0x5049_5045;
const SOCKFS_MAGIC: i64 = 0x534f_434b;
const DEVPTS_SUPER_MAGIC: i64 = 0x1cd1;
/// Unix 98 pty slaves (`/dev/pts/N`) use majors 136-143.
const PTY_SLAVE_MAJORS: std::ops::RangeInclusive<u32> = 136..=143;

/// Whether an inherited stdio descriptor may be given to container root: only what a shim
/// hands over, an anonymous pipe (pipefs), a socket or a pty slave (devpts), owned by VM
/// root. A regular file, a named FIFO or a device node on a real filesystem stays as it is:
/// chowning it would hand a VM file (`eci-runc run c > /etc/x`) to the container's range, as
/// plain runc does for a regular stdout file. Decided on what `fstat`/`fstatfs` say about the
/// descriptor itself, never on a path.
pub fn stdio_chown_allowed(mode: u32, fs_magic: i64, rdev_major: u32, uid: u32) -> bool {
    if uid != 0 {
        return false;
    }
    match mode & libc::S_IFMT {
        libc::S_IFIFO => fs_magic == PIPEFS_MAGIC,
        libc::S_IFSOCK => fs_magic == SOCKFS_MAGIC,
        libc::S_IFCHR => fs_magic == DEVPTS_SUPER_MAGIC && PTY_SLAVE_MAJORS.contains(&rdev_major),
        _ => false,
    }
}

/// Give the container's root ownership of the stdio the shim handed over (pipes, sockets,
/// ptys; see [`stdio_chown_allowed`]) so `/dev/stdout` can be reopened inside (the shim
/// created them as VM root).
pub fn chown_stdio(uid: u32) {
    let (stdin, stdout, stderr) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
    for fd in [stdin.as_fd(), stdout.as_fd(), stderr.as_fd()] {
        let Ok(st) = nix::sys::stat::fstat(fd) else {
            continue;
        };
        let Ok(sfs) = nix::sys::statfs::fstatfs(fd) else {
            continue;
        };
        if !stdio_chown_allowed(
            st.st_mode,
            sfs.filesystem_type().0,
            libc::major(st.st_rdev),
            st.st_uid,
        ) {
            continue;
        }
        // Failures are harmless: the process keeps the descriptor, only reopening
        // `/dev/stdout` inside would fail.
        let id = Some(nix::unistd::Uid::from_raw(uid));
        let _ = nix::unistd::fchown(fd, id, Some(nix::unistd::Gid::from_raw(uid)));
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
    /// Set-up processes besides the init (the first stage, the init's parent).
    helpers: Vec<i32>,
    armed: bool,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for pid in self.child.iter().chain(&self.helpers) {
            let _ = sys::kill(*pid, libc::SIGKILL);
        }
        if let Some(cg) = &self.cgroup {
            for p in cg.pids() {
                let _ = sys::kill(p, libc::SIGKILL);
            }
            let _ = cg.destroy();
        }
        crate::views::release(&self.g.root, &self.id);
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
    donors: &[eci_policy::Donor],
) -> Result<Vec<String>> {
    let bnd = bounding_set();
    let is_vm = |kind: &str, path: &str| {
        same_file(path, &format!("/proc/self/ns/{}", ns_file(kind)))
            || same_file(path, &format!("/proc/1/ns/{}", ns_file(kind)))
    };
    let env = eci_policy::Environment {
        container_id: id,
        range,
        donors,
        bounding: &bnd,
        is_vm_namespace: &is_vm,
    };
    // The device filter first, so its one summary line (SPEC P3, P8; `--privileged` lists
    // every VM device node) can also go to the audit log; `apply` runs it again, which changes
    // nothing. A refused spec is dropped, so filtering before the refusals does no harm.
    let devices = eci_policy::filter_devices(spec);
    let w = eci_policy::apply(spec, policy, &env).map_err(crate::audit::refusal)?;
    for d in &devices {
        crate::audit::rewrite(&["P3", "P8"], &d.0);
    }
    Ok(devices.into_iter().chain(w).map(|w| w.0).collect())
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
        helpers: Vec::new(),
        armed: true,
    };
    let mut policy = g.policy()?;
    // A BuildKit RUN step (SPEC D3): its bundle is in BuildKit's executor folder, which only
    // dockerd (VM root) creates; then BuildKit's step files and dockerd's layer folders may be
    // bind sources, each checked on the opened file (build_step.rs).
    policy.build_step = crate::build_step::data_root(&bundle, &o.id, &policy);
    crate::audit::begin("create", &o.id, &policy);
    // Namespaces the spec joins, identified (and refused) before anything is allocated: a
    // container sharing another's namespaces shares its user namespace and range (SPEC U2).
    let sharing = share::resolve(&spec, &g.allocator_with(&policy))?;
    let range = sharing.allocate(&g.allocator_with(&policy), &o.id, &g.root)?;
    stall("allocated");
    for w in apply_policy(&mut spec, &policy, &o.id, range, &sharing.plan.donors)? {
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

    // Bind sources: each is opened once, below the folder that bounds it (the allowed share,
    // dockerd's folder for this container, the volume's judged `_data`), and that descriptor
    // is what gets mounted: a path component swapped for a symlink after this point reaches
    // nothing, and a symlink inside a share cannot lead out of it (binds.rs).
    let mut binds = Vec::new();
    for (i, m) in spec.mounts.iter().enumerate() {
        if !m.is_bind() {
            continue;
        }
        let src = m.source.as_deref().unwrap_or_default();
        binds.push((
            i,
            binds::open_source(src, &m.destination, &policy, &o.id, &sharing.plan.donors)?,
        ));
    }

    let cg = container_cgroup(&spec, &policy, g.systemd_cgroup, &o.id)?;
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
    // The /proc and /sys views (SPEC F1-F4): detached mounts the init inherits and attaches.
    crate::views::prepare(&g.root, &o.id, &cg, range, &dir)?;

    let fifo = dir.join(FIFO);
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o622))
        .map_err(|e| sys::nix_err("create exec.fifo", e))?;
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

    // One socket per set-up process: the first stage (C), the builder of the mount tree (X),
    // the container's init; the mount helper (V) gets its own when it is forked.
    let (p_sock, c_sock) = sys::socketpair()?;
    let (p_xsock, x_sock) = sys::socketpair()?;
    let (p_isock, i_sock) = sys::socketpair()?;
    let ctx = ChildCtx {
        spec: &spec,
        root_path: &root_path,
        cgroup: &cg,
        fifo_fd: fifo_fd.as_raw_fd(),
        console: console.as_ref().map(|c| c.as_raw_fd()),
        no_pivot: o.no_pivot,
        preserve_fds: o.preserve_fds,
        sharing: &sharing,
    };
    let pid = sys::fork()?;
    if pid == 0 {
        drop((p_sock, p_xsock, p_isock));
        let sock = c_sock.as_raw_fd();
        if let Err(e) = stage1(&ctx, c_sock, x_sock, i_sock) {
            let _ = send_msg(sock, &Msg::Error { msg: e }, &[]);
        }
        sys::exit_now(1);
    }
    drop((c_sock, x_sock, i_sock));
    cleanup.child = Some(pid);
    let sock = p_sock.as_raw_fd();
    let (xsock, isock) = (p_xsock.as_raw_fd(), p_isock.as_raw_fd());

    match recv_msg(sock, "container init")? {
        (Msg::Map, _) => {}
        (m, _) => return Err(format!("unexpected message {m:?}")),
    }
    // oomScoreAdj now, from VM root and before the init is forked (it inherits the value):
    // once the container's ids are in effect, /proc/self/oom_score_adj belongs to VM root,
    // which is unmapped, so the init cannot write it itself.
    if let Some(adj) = spec.process.as_ref().and_then(|p| p.oom_score_adj) {
        set_oom_score_adj(pid, adj);
    }
    match sharing.joined_userns() {
        None => {
            let map = format!("0 {} {}\n", range.start, range.size);
            fs::write(format!("/proc/{pid}/uid_map"), &map)
                .map_err(|e| format!("write uid_map: {e}"))?;
            fs::write(format!("/proc/{pid}/gid_map"), &map)
                .map_err(|e| format!("write gid_map: {e}"))?;
        }
        // The group's user namespace already has its map; check the child really is in it
        // before anything is idmapped with it.
        Some(group) => {
            if share::path_id(&format!("/proc/{pid}/ns/user")) != Some(group) {
                return Err(
                    "the container did not enter the user namespace of the namespaces it shares"
                        .into(),
                );
            }
        }
    }
    cg.add_pid(pid)?;
    let userns = sys::open(
        Path::new(&format!("/proc/{pid}/ns/user")),
        libc::O_RDONLY,
        0,
    )?;
    send_msg(sock, &Msg::Mapped, &[])?;
    stall("mapped");

    // The init's pid, with its mount namespace (the VM's user namespace owns it) and network
    // namespace, for the mount helper below.
    let (init, init_ns) = match recv_msg(sock, "container init")? {
        (Msg::Pid { pid }, fds) if fds.len() == 2 => (pid, fds),
        (m, _) => return Err(format!("unexpected message {m:?}")),
    };
    let _ = sys::waitpid(pid);
    cleanup.child = Some(init);
    // The mount helper (V) joins the init's namespaces while the layers are idmapped below; it
    // takes the tree straight from the builder and, after the hooks, tells the init itself
    // that its mounts are complete: fewer hops through P, which start-up time pays for.
    let hooks = spec
        .hooks
        .as_ref()
        .is_some_and(|h| !h.prestart.is_empty() || !h.create_runtime.is_empty());
    let (p_vsock, v_sock) = sys::socketpair()?;
    let helper = sys::fork()?;
    if helper == 0 {
        drop((p_vsock, p_sock));
        let socks = HelperSocks {
            p: v_sock.as_raw_fd(),
            builder: xsock,
            init: isock,
        };
        if let Err(e) = mount_helper(&ctx, &socks, &init_ns, hooks) {
            // P waits for it until the hooks ran, the init afterwards.
            let _ = send_msg(socks.p, &Msg::Error { msg: e.clone() }, &[]);
            let _ = send_msg(socks.init, &Msg::Error { msg: e }, &[]);
        }
        sys::exit_now(1);
    }
    drop((v_sock, init_ns));
    cleanup.helpers.push(helper);
    let vsock = p_vsock.as_raw_fd();

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
    for (i, source) in &binds {
        let m = &spec.mounts[*i];
        let src = Path::new(m.source.as_deref().unwrap_or_default());
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
        // `rbind` (docker's `-v`) copies the mounts below the source too, `bind` only its own.
        let recursive = flags & libc::MS_REC != 0;
        // Cloned from the descriptor opened and judged before the fork, never from the path.
        let fd = sys::mountfd::clone_tree(source.fd.as_fd(), recursive, src)?;
        if let Err(e) = sys::mount_setattr(&fd, attrs, Some(userns.as_raw_fd()), recursive, 0) {
            crate::log::warn(&format!(
                "bind mount {} is not idmapped ({e}); files owned by VM ids outside the container's range show as nobody (SPEC U4)",
                src.display()
            ));
            // A failed mount_setattr changed none of the tree: the same copy gets the plain
            // attributes.
            sys::mount_setattr(&fd, attrs, None, recursive, 0)?;
        }
        let propagation = prop & !libc::MS_REC;
        if propagation != 0 {
            sys::mount_setattr(&fd, 0, None, recursive, propagation)?;
        }
        bind_list.push((*i, source.is_dir));
        fds.push(fd);
    }
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    send_msg(
        xsock,
        &Msg::Mounts {
            root: plan.clone(),
            binds: bind_list,
        },
        &raw,
    )?;
    drop(fds);
    drop(binds);
    drop(userns);
    stall("mounts");
    // The builder makes the tree in a mount namespace of the container's user namespace and
    // hands a detached copy to the mount helper, which attaches it in the init's (SPEC M2).
    if hooks {
        match recv_msg(vsock, "the mount helper")? {
            (Msg::Attached, _) => {}
            (m, _) => return Err(format!("unexpected message {m:?}")),
        }
    }

    st.pid = init;
    st.pid_start = sys::start_time(init).unwrap_or(0);
    st.save(&g.root)?;
    if let Some(h) = &spec.hooks {
        let state_json = hooks::state_json(&st, crate::state::Status::Creating);
        hooks::run(&h.prestart, &state_json, "prestart")?;
        hooks::run(&h.create_runtime, &state_json, "createRuntime")?;
    }
    if hooks {
        send_msg(vsock, &Msg::HooksDone, &[])?;
    }
    match recv_msg(isock, "container init")? {
        (Msg::Ready { warnings }, fds) => {
            for w in warnings {
                crate::log::warn(&w);
            }
            // SPEC M1, M5 (issue 10): the init's mount-vetting listener goes to the supervisor
            // before the container can start; without a supervisor the create fails.
            let listener = fds
                .into_iter()
                .next()
                .ok_or("the container init sent no mount-vetting listener")?;
            crate::seccomp::hand_off(&g.root, &o.id, init, true, listener)?;
        }
        (m, _) => return Err(format!("unexpected message {m:?}")),
    }
    // The helper exited after telling the init.
    let _ = sys::waitpid(helper);
    if let Some(pf) = &o.pid_file {
        state::write_atomic(pf, init.to_string().as_bytes())?;
    }
    cleanup.armed = false;
    Ok(init)
}

/// The container's cgroup for the spec's `linux.cgroupsPath` (SPEC P5): below an allowed
/// parent (`eciRunc.cgroupParents`), without `..`, and not a cgroup that already holds
/// processes. Checked before the cgroup is created, and before the create's clean-up may
/// empty it: a failed create kills every process in its cgroup.
fn container_cgroup(spec: &Spec, policy: &Policy, systemd: bool, id: &str) -> Result<Cgroup> {
    let spec_path = spec
        .linux
        .as_ref()
        .and_then(|l| l.cgroups_path.as_deref())
        .filter(|p| !p.is_empty());
    let folder = cgroup::resolve_path(spec_path, systemd, id);
    // No cgroupsPath: the runtime's own `/eci/<id>` (the id is a checked folder name).
    if let Some(p) = spec_path {
        eci_policy::check_cgroup_folder(&folder, p, &policy.cgroup_parents)
            .map_err(crate::audit::refusal)?;
    }
    let cg = Cgroup::plan(&folder);
    // Nested inside another container's cgroup (or one holding processes): that container
    // could move this one's processes into its own cgroup, freeze or kill them.
    if spec_path.is_some() {
        for between in eci_policy::intermediate_folders(&folder, &policy.cgroup_parents) {
            for d in &cg.dirs {
                let dir = Path::new(&d.mount).join(between.trim_start_matches('/'));
                let Ok(meta) = fs::metadata(&dir) else {
                    continue;
                };
                use std::os::unix::fs::MetadataExt;
                let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                let first = procs.lines().next().map(str::to_string);
                let holder = if meta.uid() != 0 {
                    Some(format!(
                        "delegated to a container's root, VM uid {}",
                        meta.uid()
                    ))
                } else {
                    first.map(|p| format!("pid {p}"))
                };
                if let Some(holder) = holder {
                    return Err(crate::audit::refusal(PolicyError::CgroupInUse {
                        path: spec_path.unwrap_or(&folder).to_string(),
                        folder: dir.display().to_string(),
                        pids: holder,
                    }));
                }
            }
        }
    }
    if let Some((dir, pids)) = cg.populated() {
        let mut shown: Vec<String> = pids.iter().take(8).map(|p| p.to_string()).collect();
        if pids.len() > 8 {
            shown.push(format!("and {} more", pids.len() - 8));
        }
        return Err(crate::audit::refusal(PolicyError::CgroupInUse {
            path: spec_path.unwrap_or(&folder).to_string(),
            folder: dir.display().to_string(),
            pids: format!("pid {}", shown.join(", ")),
        }));
    }
    Ok(cg)
}

/// Set a process's `oom_score_adj` (`process.oomScoreAdj`). Raising it needs no privilege;
/// lowering it below the runtime's own needs CAP_SYS_RESOURCE, and failing that is a warning,
/// as for the other limits the VM cannot grant (SPEC P8).
pub fn set_oom_score_adj(pid: i32, adj: i32) {
    if let Err(e) = fs::write(format!("/proc/{pid}/oom_score_adj"), adj.to_string()) {
        crate::log::warn(&format!(
            "process.oomScoreAdj {adj} not applied ({e}); a value below the runtime's own needs CAP_SYS_RESOURCE, which this VM does not grant (SPEC P8)"
        ));
    }
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
    sharing: &'a Sharing,
}

/// The first stage (C). Makes the mount namespace the container's init will live in while
/// still VM root, so that the VM's user namespace owns it (SPEC M2); then enters the container's
/// user namespace (its own, or the group's), where it makes the pid, network, ipc, uts and
/// cgroup namespaces, so that those belong to the container (a privileged container administers
/// them: Docker-in-Docker needs CAP_NET_ADMIN in its network namespace). Forks the init and
/// sends its pid with the descriptors of its mount and network namespaces.
fn stage1(c: &ChildCtx<'_>, c_sock: OwnedFd, x_sock: OwnedFd, i_sock: OwnedFd) -> Result<()> {
    let sock = c_sock.as_raw_fd();
    let linux = c.spec.linux.clone().unwrap_or_default();
    sys::unshare(libc::CLONE_NEWNS)?;
    sys::mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_SLAVE,
        None,
    )?;
    let mnt = sys::open(Path::new("/proc/self/ns/mnt"), libc::O_RDONLY, 0)?;
    // Namespaces given by path, through the descriptors the runtime opened and identified,
    // and the container's user namespace (its own, or the group's it shares them with).
    let premade = c.sharing.enter(c.spec)?;
    send_msg(sock, &Msg::Map, &[])?;
    match recv_msg(sock, "eci-runc")? {
        (Msg::Mapped, _) => {}
        (m, _) => return Err(format!("unexpected message {m:?}")),
    }
    let mut flags = 0;
    for ns in &linux.namespaces {
        if ns.path.is_none() && ns.kind != "user" && ns.kind != "mount" {
            flags |= ns_flag(&ns.kind);
        }
    }
    sys::unshare(flags)?;
    let net = sys::open(Path::new("/proc/self/ns/net"), libc::O_RDONLY, 0)?;
    let pid = sys::fork()?;
    if pid > 0 {
        send_msg(sock, &Msg::Pid { pid }, &[mnt.as_raw_fd(), net.as_raw_fd()])?;
        // The first stage is done.
        sys::exit_now(0);
    }
    drop((c_sock, mnt, net));
    let isock = i_sock.as_raw_fd();
    match init(c, x_sock, i_sock, premade) {
        Ok(never) => match never {},
        Err(e) => {
            let _ = send_msg(isock, &Msg::Error { msg: e }, &[]);
            sys::exit_now(1)
        }
    }
}

/// Become container root (ids 0, no supplementary groups) inside the new user namespace, where
/// the process holds every capability.
pub fn become_root() -> Result<()> {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    setgroups(&[]).map_err(|e| sys::nix_err("setgroups", e))?;
    let (u, g) = (Uid::from_raw(0), Gid::from_raw(0));
    setresgid(g, g, g)
        .and_then(|()| setresuid(u, u, u))
        .map_err(|e| sys::nix_err("become container root", e))
}

/// The builder (X, the init's child): the container's mounts, made as container root in a
/// mount namespace of its own that the container's user namespace owns, exactly as the
/// container could make them: tmpfs, devpts and mqueue belong to container root, proc shows
/// the container's pid namespace, and mount points are created with container root's rights
/// only (a symlink planted in a shared volume cannot make VM root write a VM file). The rootfs
/// P made, the spec's mounts (binds as the descriptors P forwards), the safe devices. Returns
/// a detached copy of the whole tree.
fn build_tree(
    c: &ChildCtx<'_>,
    sock: RawFd,
    premade: Vec<(usize, OwnedFd)>,
    warnings: &mut Vec<String>,
) -> Result<OwnedFd> {
    sys::unshare(libc::CLONE_NEWNS)?;
    // Still VM id 0 as far as file owners go: open the rootfs folder now, while the owner
    // bits of VM-root-only folders (dockerd's 0710 data dirs) let us through.
    let root_fd = sys::open(c.root_path, libc::O_PATH | libc::O_DIRECTORY, 0)?;
    become_root()?;
    let (msg, mut fds) = recv_msg(sock, "eci-runc")?;
    let Msg::Mounts { root, binds } = msg else {
        return Err(format!("unexpected message {msg:?}"));
    };
    let mut it = fds.drain(..);
    match &root {
        RootPlan::Overlay { .. } | RootPlan::Dir => {
            let fd = it.next().ok_or("missing rootfs descriptor")?;
            rootfs::attach_at_fd(fd.as_raw_fd(), root_fd.as_raw_fd())?;
            rootfs::fchdir(fd)?;
        }
    }
    let mut bind_fds = BTreeMap::new();
    for (i, is_dir) in binds {
        let fd = it.next().ok_or("missing bind mount descriptor")?;
        bind_fds.insert(i, (fd, is_dir));
    }
    drop(it);
    // sysfs/mqueue the runtime made for a namespace the VM owns: attached like a bind.
    for (i, fd) in premade {
        bind_fds.insert(i, (fd, true));
    }
    rootfs::mount_all(c.spec, &mut bind_fds, c.cgroup, warnings)?;
    rootfs::setup_dev(c.spec)?;
    rootfs::detached_copy()
}

/// The mount helper's sockets: its own to P, and P's ends of the builder's and the init's.
struct HelperSocks {
    p: RawFd,
    builder: RawFd,
    init: RawFd,
}

/// The mount helper (V): VM root, forked by P. Joins the init's mount namespace (the VM's user
/// namespace owns it) and network namespace (for `/proc/sys/net`), takes the builder's tree
/// and attaches it at the rootfs path; after the hooks (when the spec has some) pivots into it,
/// which moves the init's root along, detaches the old root, masks and makes read-only what
/// the spec says, and tells the init.
fn mount_helper(c: &ChildCtx<'_>, socks: &HelperSocks, ns: &[OwnedFd], hooks: bool) -> Result<()> {
    let [mnt, net] = ns else {
        return Err("the init's namespaces are missing".into());
    };
    sys::setns(
        net.as_fd(),
        libc::CLONE_NEWNET,
        "network namespace of the container",
    )?;
    sys::setns(
        mnt.as_fd(),
        libc::CLONE_NEWNS,
        "mount namespace of the container",
    )?;
    let root_fd = sys::open(c.root_path, libc::O_PATH | libc::O_DIRECTORY, 0)?;
    let tree = match recv_msg(socks.builder, "the container's mount builder")? {
        (Msg::Tree { warnings }, mut fds) if fds.len() == 1 => {
            for w in warnings {
                crate::log::warn(&w);
            }
            fds.remove(0)
        }
        (m, _) => return Err(format!("unexpected message {m:?}")),
    };
    rootfs::attach_at_fd(tree.as_raw_fd(), root_fd.as_raw_fd())?;
    rootfs::fchdir(tree)?;
    if hooks {
        send_msg(socks.p, &Msg::Attached, &[])?;
        match recv_msg(socks.p, "eci-runc")? {
            (Msg::HooksDone, _) => {}
            (m, _) => return Err(format!("unexpected message {m:?}")),
        }
    }
    rootfs::pivot(c.no_pivot)?;
    rootfs::harden(c.spec)?;
    // The /proc and /sys views over the container's paths, before the mounts are locked.
    crate::views::attach()?;
    if c.spec.root.as_ref().is_some_and(|r| r.readonly) {
        rootfs::readonly_root()?;
    }
    let root = sys::open(Path::new("/"), libc::O_PATH | libc::O_DIRECTORY, 0)?;
    send_msg(socks.init, &Msg::MountsDone, &[root.as_raw_fd()])?;
    sys::exit_now(0)
}

enum Never {}

/// The container's init (pid 1 of its pid namespace, or a process of the pid namespace it
/// joins): container root in the container's user namespace, in a mount namespace the VM's user
/// namespace owns, which it cannot change itself. Forks the builder, waits until the mount
/// helper has pivoted into the tree and hardened it, then unshares its mount namespace: the
/// kernel locks every mount of that copy (SPEC M2, [`rootfs::lock_mounts`]).
fn init(
    c: &ChildCtx<'_>,
    x_sock: OwnedFd,
    i_sock: OwnedFd,
    premade: Vec<(usize, OwnedFd)>,
) -> Result<Never> {
    let sock = i_sock.as_raw_fd();
    // The mount namespace's root, so that pivot_root moves this process's root and folder.
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    let builder = sys::fork()?;
    if builder == 0 {
        drop(i_sock);
        let xsock = x_sock.as_raw_fd();
        let mut warnings = Vec::new();
        let sent = match build_tree(c, xsock, premade, &mut warnings) {
            Ok(tree) => send_msg(xsock, &Msg::Tree { warnings }, &[tree.as_raw_fd()]),
            Err(e) => send_msg(xsock, &Msg::Error { msg: e }, &[]),
        };
        sys::exit_now(i32::from(sent.is_err()));
    }
    drop((x_sock, premade));
    become_root()?;
    let root = match recv_msg(sock, "eci-runc")? {
        (Msg::MountsDone, mut fds) if fds.len() == 1 => fds.remove(0),
        (m, _) => return Err(format!("unexpected message {m:?}")),
    };
    // The builder is done once the helper has its tree; reap it so that no zombie stays in the
    // container's pid namespace.
    let _ = sys::waitpid(builder);
    rootfs::fchdir(&root)?;
    if c.no_pivot {
        nix::unistd::chroot(".").map_err(|e| sys::nix_err("chroot", e))?;
    }
    drop(root);
    rootfs::lock_mounts()?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    let linux = c.spec.linux.clone().unwrap_or_default();
    let own_uts = linux
        .namespaces
        .iter()
        .any(|n| n.kind == "uts" && n.path.is_none());
    if own_uts {
        if let Some(h) = &c.spec.hostname {
            nix::unistd::sethostname(h).map_err(|e| sys::nix_err("sethostname", e))?;
        }
        if let Some(d) = &c.spec.domainname {
            sys::setdomainname(d)?;
        }
    }
    for (k, v) in linux.sysctl.iter().flatten() {
        let p = format!("/proc/sys/{}", k.replace('.', "/"));
        let v = clamp_sysctl(k, v);
        fs::write(&p, &v).map_err(|e| format!("sysctl {k}={v}: {e}"))?;
    }
    let mut warnings = Vec::new();
    let p = c.spec.process.clone().ok_or("config.json has no process")?;
    match c.console {
        Some(fd) if p.terminal => process::setup_terminal(fd, &p, true)?,
        _ => {
            let _ = nix::unistd::setsid();
        }
    }
    process::set_rlimits(&p, &mut warnings)?;
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
    // The init must not keep its own listener: it could answer its own mount calls.
    let listener =
        crate::seccomp::take_listener().ok_or("eci's mount-vetting filter was not loaded")?;
    send_msg(sock, &Msg::Ready { warnings }, &[listener.as_raw_fd()])?;
    drop(listener);
    // Wait for `start`: opening the FIFO for writing blocks until it is opened for reading.
    let path = format!("/proc/self/fd/{}", c.fifo_fd);
    let w = sys::open(Path::new(&path), libc::O_WRONLY, 0)
        .map_err(|e| format!("open exec fifo: {e}"))?;
    let _ = nix::unistd::write(&w, b"0");
    drop(w);
    let e = process::execve(&exe, &p.args, &p.env).unwrap_err();
    eprintln!("eci-runc: {e}");
    // Exec failed after start: nothing left to report to.
    sys::exit_now(127)
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

    /// Only what a shim hands over is given to container root; a regular file, a named FIFO
    /// on disk, /dev/null or a console stay VM root's, and nothing not owned by VM root moves.
    #[test]
    fn stdio_chown_is_for_pipes_sockets_and_ptys_only() {
        const EXT4: i64 = 0xef53;
        const TMPFS: i64 = 0x0102_1994;
        let ok = |mode, fs, major| stdio_chown_allowed(mode, fs, major, 0);
        assert!(ok(libc::S_IFIFO | 0o600, PIPEFS_MAGIC, 0));
        assert!(ok(libc::S_IFSOCK | 0o777, SOCKFS_MAGIC, 0));
        assert!(ok(libc::S_IFCHR | 0o620, DEVPTS_SUPER_MAGIC, 136));
        assert!(ok(libc::S_IFCHR | 0o620, DEVPTS_SUPER_MAGIC, 143));
        assert!(!ok(libc::S_IFREG | 0o644, EXT4, 0), "regular file");
        assert!(
            !ok(libc::S_IFREG | 0o644, TMPFS, 0),
            "regular file on tmpfs"
        );
        assert!(!ok(libc::S_IFIFO | 0o600, EXT4, 0), "named FIFO on disk");
        assert!(
            !ok(libc::S_IFCHR | 0o666, TMPFS, 1),
            "/dev/null on devtmpfs"
        );
        assert!(!ok(libc::S_IFCHR | 0o600, TMPFS, 5), "/dev/console");
        assert!(
            !ok(libc::S_IFCHR | 0o666, DEVPTS_SUPER_MAGIC, 5),
            "devpts ptmx (5:2)"
        );
        assert!(!ok(libc::S_IFDIR | 0o755, EXT4, 0), "folder");
        assert!(!ok(libc::S_IFBLK | 0o660, TMPFS, 8), "block device");
        assert!(!stdio_chown_allowed(libc::S_IFIFO, PIPEFS_MAGIC, 0, 1000));
    }

    #[test]
    fn escaped_separators_stay_in_paths() {
        assert_eq!(split_unescaped("a\\,b,c", ','), vec!["a,b", "c"]);
        assert_eq!(split_unescaped("/x\\:y:/z", ':'), vec!["/x:y", "/z"]);
    }
}
