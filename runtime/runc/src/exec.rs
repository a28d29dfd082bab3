//! `exec`: a new process in a running container's namespaces, cgroup, user range, capability
//! clamp and seccomp filters (the same rules as the init, SPEC P1, P2, P8).

use std::fs;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use eci_policy::spec::{Process, Spec};

use crate::create::{self, recv_msg, send_msg, Msg};
use crate::state::Status;
use crate::state::{self, State};
use crate::sys::{self, Result};
use crate::{process, Global};

pub struct ExecOpts {
    pub id: String,
    pub process: Option<PathBuf>,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub tty: bool,
    pub cwd: Option<String>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub caps: Vec<String>,
    pub no_new_privs: bool,
    pub preserve_fds: i32,
    pub additional_gids: Vec<u32>,
    pub args: Vec<String>,
}

fn build_process(o: &ExecOpts, config: &Spec) -> Result<Process> {
    let mut p = if let Some(f) = &o.process {
        let b = fs::read(f).map_err(|e| format!("read {}: {e}", f.display()))?;
        serde_json::from_slice::<Process>(&b).map_err(|e| format!("{}: {e}", f.display()))?
    } else {
        let base = config.process.clone().unwrap_or_default();
        if o.args.is_empty() {
            return Err("exec needs a command (or --process FILE)".into());
        }
        Process {
            args: o.args.clone(),
            env: base.env.clone(),
            cwd: base.cwd.clone(),
            user: base.user.clone(),
            capabilities: base.capabilities.clone(),
            no_new_privileges: base.no_new_privileges,
            ..Process::default()
        }
    };
    if o.tty {
        p.terminal = true;
    }
    if let Some(c) = &o.cwd {
        p.cwd = c.clone();
    }
    p.env.extend(o.env.iter().cloned());
    if let Some(u) = &o.user {
        let (uid, gid) = u.split_once(':').unwrap_or((u, "0"));
        p.user.uid = uid
            .parse()
            .map_err(|_| format!("--user {u}: expected UID[:GID]"))?;
        p.user.gid = gid
            .parse()
            .map_err(|_| format!("--user {u}: expected UID[:GID]"))?;
    }
    p.user.additional_gids.extend(&o.additional_gids);
    if !o.caps.is_empty() {
        let caps = p.capabilities.get_or_insert_with(Default::default);
        for c in &o.caps {
            for set in [
                &mut caps.bounding,
                &mut caps.effective,
                &mut caps.permitted,
                &mut caps.inheritable,
            ] {
                if !set.contains(c) {
                    set.push(c.clone());
                }
            }
        }
    }
    if o.no_new_privs {
        p.no_new_privileges = true;
    }
    Ok(p)
}

pub fn exec(g: &Global, o: &ExecOpts) -> Result<i32> {
    let st = State::load(&g.root, &o.id)?;
    // Only for the audit log's place: a policy file that does not load is not this
    // command's concern.
    crate::audit::begin("exec", &o.id, &g.policy().unwrap_or_default());
    let status = st.status(&g.root);
    if status != Status::Running && status != Status::Created {
        return Err(format!("cannot exec in a {status} container"));
    }
    let config = st.config(&g.root)?;
    let mut p = build_process(o, &config)?;
    // The same clamps as the init: capabilities to the VM's bounding set, ids into the range.
    let mut probe = Spec {
        process: Some(p.clone()),
        ..Spec::default()
    };
    for w in eci_policy::clamp_capabilities(&mut probe, &create::bounding_set()) {
        crate::log::warn(&w.0);
    }
    p = probe.process.take().expect("set above");
    for id in [p.user.uid, p.user.gid]
        .into_iter()
        .chain(p.user.additional_gids.iter().copied())
    {
        if id >= st.range_size {
            return Err(format!(
                "id {id} is outside the container's 65536 ids (0-65535); use an id below 65536"
            ));
        }
    }
    let console = match (&o.console_socket, p.terminal) {
        (Some(s), true) => Some(
            std::os::unix::net::UnixStream::connect(s)
                .map_err(|e| format!("connect console socket {}: {e}", s.display()))?,
        ),
        (None, true) => return Err("a terminal was requested but no --console-socket given".into()),
        _ => None,
    };
    create::chown_stdio(st.range_start);
    if !o.detach {
        // The exec'd process is reparented to us when the intermediate child exits.
        let _ = nix::sys::prctl::set_child_subreaper(true);
    }
    let ns: Vec<(String, i32)> = [
        ("ipc", libc::CLONE_NEWIPC),
        ("uts", libc::CLONE_NEWUTS),
        ("net", libc::CLONE_NEWNET),
        ("pid", libc::CLONE_NEWPID),
        ("cgroup", libc::CLONE_NEWCGROUP),
        ("mnt", libc::CLONE_NEWNS),
        ("user", libc::CLONE_NEWUSER),
    ]
    .into_iter()
    .map(|(n, f)| (n.to_string(), f))
    .collect();
    let mut ns_fds = Vec::new();
    for (name, flag) in &ns {
        let path = format!("/proc/{}/ns/{name}", st.pid);
        // Namespaces shared with the caller (joined by path at create) need no setns.
        if fs::read_link(&path).ok() == fs::read_link(format!("/proc/self/ns/{name}")).ok() {
            continue;
        }
        ns_fds.push((
            sys::open(Path::new(&path), libc::O_RDONLY, 0)?,
            *flag,
            name.clone(),
        ));
    }
    check_target(&st)?;
    // Inherited through both forks; see create::set_oom_score_adj.
    if let Some(adj) = p.oom_score_adj {
        create::set_oom_score_adj(std::process::id() as i32, adj);
    }
    let (p_sock, c_sock) = sys::socketpair()?;
    let pid = sys::fork()?;
    if pid == 0 {
        drop(p_sock);
        let sock = c_sock.as_raw_fd();
        let r = child(
            &st,
            &p,
            &config,
            &ns_fds,
            sock,
            console.as_ref().map(|c| c.as_raw_fd()),
            o.preserve_fds,
        );
        if let Err(e) = r {
            let _ = send_msg(sock, &Msg::Error { msg: e }, &[]);
        }
        sys::exit_now(1);
    }
    drop(c_sock);
    drop(ns_fds);
    let sock = p_sock.as_raw_fd();
    let target = match recv_msg(sock, "exec process") {
        Ok((Msg::Pid { pid: t }, _)) => t,
        Ok((m, _)) => return Err(format!("unexpected message {m:?}")),
        Err(e) => {
            let _ = sys::waitpid(pid);
            return Err(e);
        }
    };
    let _ = sys::waitpid(pid);
    // SPEC M1, M5 (issue 10): the process's mount-vetting listener goes to the supervisor
    // before it executes anything; without a supervisor the exec fails.
    match recv_msg(sock, "exec process") {
        Ok((Msg::Listener, fds)) => {
            let handed = fds
                .into_iter()
                .next()
                .ok_or_else(|| "the exec process sent no mount-vetting listener".to_string())
                .and_then(|l| crate::seccomp::hand_off(&g.root, &o.id, target, false, l));
            if let Err(e) = handed {
                let _ = send_msg(sock, &Msg::Error { msg: e.clone() }, &[]);
                let _ = sys::waitpid(target);
                return Err(e);
            }
            send_msg(sock, &Msg::Vetted, &[])?;
        }
        Ok((m, _)) => return Err(format!("unexpected message {m:?}")),
        Err(e) => {
            let _ = sys::waitpid(target);
            return Err(e);
        }
    }
    // EOF means the process reached execve (the socket is close-on-exec); a message is an error.
    if let Some((b, _)) = sys::recv(sock)? {
        let _ = sys::waitpid(target);
        return Err(match serde_json::from_slice::<Msg>(&b) {
            Ok(Msg::Error { msg }) => msg,
            _ => "exec failed".into(),
        });
    }
    if let Some(pf) = &o.pid_file {
        state::write_atomic(pf, target.to_string().as_bytes())?;
    }
    if o.detach {
        return Ok(0);
    }
    sys::waitpid(target)
}

/// Namespaces an exec joins, by identity (nsfs device and inode).
const TARGET_NAMESPACES: &[&str] = &["user", "mnt", "pid"];

fn ns_identity(path: &str) -> Result<(u64, u64)> {
    let m = fs::metadata(path).map_err(|e| format!("{path}: {e}"))?;
    Ok((m.dev(), m.ino()))
}

/// The first of the target's namespaces that is the VM's (PID 1's) or the runtime's own.
/// Joining none of them there and becoming "container root" would be VM root (SPEC U3).
pub fn vm_namespace<'a>(
    target: &[(&'a str, (u64, u64))],
    vm: &[(&str, (u64, u64))],
    runtime: &[(&str, (u64, u64))],
) -> Option<&'a str> {
    target.iter().find_map(|(kind, id)| {
        let same = |set: &[(&str, (u64, u64))]| set.iter().any(|(k, i)| k == kind && i == id);
        (same(vm) || same(runtime)).then_some(*kind)
    })
}

/// Refuse an exec whose target is not the container's init any more (SPEC U3, A6): the init
/// exited and its pid now belongs to a VM process, whose namespaces are the VM's. Its user,
/// mount and pid namespaces are compared with PID 1's and the runtime's own, and its start
/// time with the state's, after the namespace files were opened, so a pid reused in between
/// is caught too.
fn check_target(st: &State) -> Result<()> {
    let ids = |pid: &str| -> Result<Vec<(&'static str, (u64, u64))>> {
        TARGET_NAMESPACES
            .iter()
            .map(|k| Ok((*k, ns_identity(&format!("/proc/{pid}/ns/{k}"))?)))
            .collect()
    };
    let refused = |why: String| {
        crate::audit::refuse(
            &["U3", "A6"],
            format!(
                "exec into container {} refused: {why}; the container's init (pid {}) has exited, start the container again",
                st.id, st.pid
            ),
        )
    };
    let target = ids(&st.pid.to_string())
        .map_err(|e| refused(format!("cannot read its namespaces ({e})")))?;
    if sys::start_time(st.pid) != Some(st.pid_start) {
        return Err(refused(format!(
            "pid {} is no longer the process the container started (start time differs from the state)",
            st.pid
        )));
    }
    // PID 1's namespace files are unreadable when the runtime lacks a capability PID 1 holds
    // (the kernel's ptrace access check; the development machine's runtime has no
    // CAP_SYS_RESOURCE). The runtime's own namespaces are the VM's too (the shim and dockerd
    // run there), so the check still holds with those alone.
    let vm = ids("1").unwrap_or_default();
    if let Some(kind) = vm_namespace(&target, &vm, &ids("self")?) {
        return Err(refused(format!(
            "pid {} is in the VM's {kind} namespace, not the container's",
            st.pid
        )));
    }
    Ok(())
}

fn child(
    st: &State,
    p: &Process,
    config: &Spec,
    ns_fds: &[(std::os::fd::OwnedFd, i32, String)],
    sock: RawFd,
    console: Option<RawFd>,
    preserve_fds: i32,
) -> Result<()> {
    st.cgroup.join_for_exec(st.pid)?;
    for (fd, flag, name) in ns_fds {
        sys::setns(
            fd.as_fd(),
            *flag,
            &format!("{name} namespace of the container"),
        )?;
    }
    // Become container root first, so files the set-up creates (the pty) get mapped owners.
    create::become_root()?;
    let pid = sys::fork()?;
    if pid > 0 {
        send_msg(sock, &Msg::Pid { pid }, &[])?;
        // The intermediate child is done.
        sys::exit_now(0);
    }
    let r = (|| -> Result<()> {
        match console {
            Some(fd) if p.terminal => process::setup_terminal(fd, p, false)?,
            _ => {
                let _ = nix::unistd::setsid();
            }
        }
        let mut warnings = Vec::new();
        process::set_rlimits(p, &mut warnings)?;
        let cwd = if p.cwd.is_empty() { "/" } else { &p.cwd };
        std::env::set_current_dir(cwd).map_err(|e| format!("chdir to cwd {cwd:?}: {e}"))?;
        let arg0 = p.args.first().ok_or("process.args is empty")?;
        let exe = process::lookup(arg0, &p.env)?;
        let seccomp = config.linux.as_ref().and_then(|l| l.seccomp.as_ref());
        process::secure(p, seccomp, true)?;
        process::finalize(p)?;
        process::secure(p, seccomp, false)?;
        // The process must not keep its own listener: it could answer its own mount calls.
        let listener =
            crate::seccomp::take_listener().ok_or("eci's mount-vetting filter was not loaded")?;
        send_msg(sock, &Msg::Listener, &[listener.as_raw_fd()])?;
        drop(listener);
        match recv_msg(sock, "eci-runc")? {
            (Msg::Vetted, _) => {}
            (m, _) => return Err(format!("unexpected message {m:?}")),
        }
        process::cloexec_from(3 + preserve_fds);
        sys::set_cloexec(sock, true);
        process::execve(&exe, &p.args, &p.env)
    })();
    if let Err(e) = r {
        let _ = send_msg(sock, &Msg::Error { msg: e }, &[]);
    }
    sys::exit_now(127)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_in_the_vms_namespaces_is_found() {
        let vm = [("user", (4, 1)), ("mnt", (4, 2)), ("pid", (4, 3))];
        let me = vm;
        let container = [("user", (4, 11)), ("mnt", (4, 12)), ("pid", (4, 13))];
        assert_eq!(vm_namespace(&container, &vm, &me), None);
        // A recycled pid: a VM process.
        assert_eq!(vm_namespace(&vm, &vm, &me), Some("user"));
        // Any one of them is enough, also when only the runtime's own matches.
        let mixed = [("user", (4, 11)), ("mnt", (4, 2)), ("pid", (4, 13))];
        assert_eq!(vm_namespace(&mixed, &vm, &me), Some("mnt"));
        let other = [("user", (4, 21)), ("mnt", (4, 22)), ("pid", (4, 23))];
        let mine = [("user", (4, 21)), ("mnt", (4, 99)), ("pid", (4, 98))];
        assert_eq!(vm_namespace(&mine, &vm, &other), Some("user"));
        // Same inode on another device is another namespace.
        let dev = [("user", (5, 1)), ("mnt", (5, 2)), ("pid", (5, 3))];
        assert_eq!(vm_namespace(&dev, &vm, &me), None);
    }

    /// This test process runs in the VM's (the machine's) namespaces, like a reused pid.
    #[test]
    fn the_runtimes_own_process_is_refused_as_a_target() {
        let st = State {
            id: "c1".into(),
            pid: std::process::id() as i32,
            pid_start: sys::start_time(std::process::id() as i32).unwrap(),
            bundle: String::new(),
            rootfs: String::new(),
            created: String::new(),
            range_start: 100_000,
            range_size: 65_536,
            cgroup: crate::cgroup::Cgroup {
                mode: crate::cgroup::Mode::V2,
                dirs: vec![],
            },
            annotations: Default::default(),
        };
        let e = check_target(&st).unwrap_err();
        assert!(e.contains("VM's user namespace"), "{e}");
        assert!(e.contains("exec into container c1 refused"), "{e}");
        let stale = State {
            pid_start: st.pid_start + 1,
            ..st
        };
        let e = check_target(&stale).unwrap_err();
        assert!(e.contains("start time"), "{e}");
    }
}
