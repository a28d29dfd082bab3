//! Seccomp: the spec's filter (docker's profile, or none when privileged/unconfined), eci's
//! own filter that refuses the kernel-global calls of SPEC P2 for every container, and the
//! mount-vetting filter whose notifications go to eci-supervisor (SPEC M1, issue 10). The
//! filters are loaded in that order; the kernel applies the most restrictive answer, so eci's
//! EPERM wins over the spec's ALLOW, a spec's ERRNO for `mount` wins over the notification, and
//! no filter needs to know the others.
//!
//! The hand-off: the last filter is loaded with SECCOMP_FILTER_FLAG_NEW_LISTENER and, where the
//! kernel has it, WAIT_KILLABLE_RECV ([`crate::sys::listener::load_listening`]); the process that loaded it (the container's init,
//! or an exec'd process) passes the listener to eci-runc over its set-up socket and closes its
//! own copy before it executes anything of the container's, since a process holding its own
//! listener could answer its own mount calls. eci-runc passes it on with [`hand_off`] to the
//! supervisor's socket (SCM_RIGHTS, one message per listener: create and every exec), starting
//! a supervisor when none answers, and fails the create or exec when none can be had.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use eci_policy::mount_vetting::TRAPPED_SYSCALLS;
use eci_policy::spec::Seccomp;
use eci_policy::KERNEL_GLOBAL_SYSCALLS;
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use serde::{Deserialize, Serialize};

fn cmp(index: u32, name: &str, value: u64, value_two: u64) -> Result<ScmpArgCompare, String> {
    let (o, datum) = match name {
        "SCMP_CMP_NE" => (ScmpCompareOp::NotEqual, value),
        "SCMP_CMP_LT" => (ScmpCompareOp::Less, value),
        "SCMP_CMP_LE" => (ScmpCompareOp::LessOrEqual, value),
        "SCMP_CMP_EQ" => (ScmpCompareOp::Equal, value),
        "SCMP_CMP_GE" => (ScmpCompareOp::GreaterEqual, value),
        "SCMP_CMP_GT" => (ScmpCompareOp::Greater, value),
        // OCI: value is the mask, valueTwo the expected masked value.
        "SCMP_CMP_MASKED_EQ" => (ScmpCompareOp::MaskedEqual(value), value_two),
        other => return Err(format!("seccomp: unknown operator {other}")),
    };
    Ok(ScmpArgCompare::new(index, o, datum))
}

fn action(name: &str, errno: Option<u32>) -> Result<ScmpAction, String> {
    let errno = errno.unwrap_or(libc::EPERM as u32) as i32;
    match name {
        "SCMP_ACT_ERRNO" => Ok(ScmpAction::Errno(errno)),
        "SCMP_ACT_TRACE" => Ok(ScmpAction::Trace(errno as u16)),
        "SCMP_ACT_NOTIFY" => Err(
            "seccomp: SCMP_ACT_NOTIFY is reserved for eci's mount vetting and cannot come from the spec"
                .into(),
        ),
        other => ScmpAction::from_str(other, None).map_err(|e| format!("seccomp action {other}: {e}")),
    }
}

fn arch(name: &str) -> Option<ScmpArch> {
    name.parse().ok()
}

/// Build the spec's filter. Unknown syscall names are skipped, as runc does, so one profile
/// serves several kernels.
pub fn spec_filter(s: &Seccomp) -> Result<ScmpFilterContext, String> {
    let default = action(&s.default_action, s.default_errno_ret)?;
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| format!("seccomp init: {e}"))?;
    ctx.set_ctl_nnp(false).map_err(|e| e.to_string())?;
    for a in &s.architectures {
        if let Some(a) = arch(a) {
            let _ = ctx.add_arch(a);
        }
    }
    for rule in &s.syscalls {
        let act = action(&rule.action, rule.errno_ret)?;
        if act == default {
            continue;
        }
        let conds = rule
            .args
            .iter()
            .map(|a| cmp(a.index, &a.op, a.value, a.value_two))
            .collect::<Result<Vec<_>, _>>()?;
        let mut idx: Vec<u32> = rule.args.iter().map(|a| a.index).collect();
        idx.sort_unstable();
        idx.dedup();
        for name in &rule.names {
            let Ok(sc) = ScmpSyscall::from_name(name) else {
                continue;
            };
            let res = if conds.is_empty() {
                ctx.add_rule(act, sc).map(|_| ())
            } else if idx.len() == conds.len() {
                ctx.add_rule_conditional(act, sc, &conds).map(|_| ())
            } else {
                // Several conditions on one argument mean "any of them" in OCI profiles;
                // libseccomp can only AND them, so each becomes its own rule.
                conds
                    .iter()
                    .try_for_each(|c| ctx.add_rule_conditional(act, sc, &[*c]).map(|_| ()))
            };
            res.map_err(|e| format!("seccomp rule {name}: {e}"))?;
        }
    }
    Ok(ctx)
}

/// eci's filter: allow everything except [`KERNEL_GLOBAL_SYSCALLS`] (EPERM).
pub fn deny_filter() -> Result<ScmpFilterContext, String> {
    let mut ctx =
        ScmpFilterContext::new(ScmpAction::Allow).map_err(|e| format!("seccomp init: {e}"))?;
    ctx.set_ctl_nnp(false).map_err(|e| e.to_string())?;
    add_compat_archs(&mut ctx);
    for name in KERNEL_GLOBAL_SYSCALLS {
        if let Ok(sc) = ScmpSyscall::from_name(name) {
            ctx.add_rule(ScmpAction::Errno(libc::EPERM), sc)
                .map_err(|e| format!("seccomp rule {name}: {e}"))?;
        }
    }
    // SPEC H2 (issue 11): AF_VSOCK is the VM's channel to its host, served only by the policy
    // layer outside every container. EAFNOSUPPORT, the kernel's own answer for a family it
    // lacks, so programs that probe for vsock treat it as absent instead of as a permission
    // problem. Loaded into every container, so nested containers inherit it (filters cannot
    // be removed).
    ctx.add_rule_conditional(
        ScmpAction::Errno(libc::EAFNOSUPPORT),
        ScmpSyscall::from_name("socket").map_err(|e| format!("seccomp: socket: {e}"))?,
        &[ScmpArgCompare::new(
            0,
            ScmpCompareOp::Equal,
            libc::AF_VSOCK as u64,
        )],
    )
    .map_err(|e| format!("seccomp rule socket(AF_VSOCK): {e}"))?;
    Ok(ctx)
}

/// 32-bit entry points reach the same kernel code, so every eci filter covers them too.
fn add_compat_archs(ctx: &mut ScmpFilterContext) {
    for a in [ScmpArch::X86, ScmpArch::X32] {
        if ScmpArch::native() == ScmpArch::X8664 {
            let _ = ctx.add_arch(a);
        }
    }
}

/// The mount-vetting filter: every call of [`TRAPPED_SYSCALLS`] becomes a notification for the
/// supervisor (SPEC M1); nothing else is touched (M6: data-path calls never leave the kernel).
pub fn notify_filter() -> Result<ScmpFilterContext, String> {
    let mut ctx =
        ScmpFilterContext::new(ScmpAction::Allow).map_err(|e| format!("seccomp init: {e}"))?;
    ctx.set_ctl_nnp(false).map_err(|e| e.to_string())?;
    add_compat_archs(&mut ctx);
    for name in TRAPPED_SYSCALLS {
        if let Ok(sc) = ScmpSyscall::from_name(name) {
            ctx.add_rule(ScmpAction::Notify, sc)
                .map_err(|e| format!("seccomp notify rule {name}: {e}"))?;
        }
    }
    Ok(ctx)
}

/// The listener of the vetting filter this process loaded, until [`take_listener`] takes it.
/// A slot rather than a return value because `load` runs inside the shared set-up steps
/// (`process::secure`), whose callers (create, exec) each hand it over their own way.
static LISTENER: Mutex<Option<OwnedFd>> = Mutex::new(None);

/// The vetting filter's listener, once per load.
pub fn take_listener() -> Option<OwnedFd> {
    LISTENER.lock().unwrap_or_else(|p| p.into_inner()).take()
}

/// Load the filters: the spec's, eci's deny filter, then the vetting filter, whose listener
/// waits in [`take_listener`].
pub fn load(spec: Option<&Seccomp>) -> Result<(), String> {
    // Before any filter: the spec's profile may refuse what exporting the program needs.
    let vetting = crate::sys::listener::program(&notify_filter()?)?;
    if let Some(s) = spec {
        spec_filter(s)?
            .load()
            .map_err(|e| format!("load the container's seccomp profile: {e}"))?;
    }
    deny_filter()?
        .load()
        .map_err(|e| format!("load eci's seccomp filter: {e}"))?;
    let fd = crate::sys::listener::load_listening(&vetting)?;
    *LISTENER.lock().unwrap_or_else(|p| p.into_inner()) = Some(fd);
    Ok(())
}

/// Whether the vetting filter waits killably (Linux 5.19); the supervisor says so when not.
pub use crate::sys::listener::kernel_waits_killable;

/// Where the supervisor listens unless `ECI_SUPERVISOR_SOCKET` says otherwise.
pub const DEFAULT_SUPERVISOR_SOCKET: &str = "/run/eci/supervisor.sock";

pub fn supervisor_socket() -> PathBuf {
    std::env::var_os("ECI_SUPERVISOR_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SUPERVISOR_SOCKET))
}

/// What eci-runc sends the supervisor with a listener (JSON, one SOCK_SEQPACKET message, the
/// listener as SCM_RIGHTS).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Register {
    /// The runtime's state root (`--root`) and the container's id: with them the supervisor
    /// loads the container's [`crate::State`].
    pub state_root: PathBuf,
    pub id: String,
    /// The process that loaded the filter (the container's init, or the exec'd process).
    pub pid: i32,
    /// True for the init (create), false for an exec.
    pub init: bool,
}

/// The supervisor's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Registered {
    Ok,
    Refused { msg: String },
}

fn connect(path: &Path) -> Result<OwnedFd, String> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let s = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| crate::sys::nix_err("socket", e))?;
    let addr = UnixAddr::new(path).map_err(|e| crate::sys::nix_err("socket path", e))?;
    connect(s.as_raw_fd(), &addr)
        .map_err(|e| crate::sys::nix_err(format!("connect {}", path.display()), e))?;
    Ok(s)
}

/// The supervisor binary: `ECI_SUPERVISOR_BIN`, else `eci-supervisor` next to this binary,
/// else from PATH.
fn supervisor_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("ECI_SUPERVISOR_BIN") {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("eci-supervisor")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("eci-supervisor"))
}

/// Start a supervisor in a session of its own (it outlives this command); several eci-runc
/// starting one at once is fine: the supervisor holds a lock beside its socket and a second
/// one exits.
fn start_supervisor(socket: &Path) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let dir = socket.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("supervisor.log"))
        .map_err(|e| format!("open the supervisor log in {}: {e}", dir.display()))?;
    let bin = supervisor_binary();
    Command::new(&bin)
        .arg("serve")
        .arg("--socket")
        .arg(socket)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| {
            format!(
                "no mount-vetting supervisor answers at {} and starting {} failed: {e} (SPEC M5)",
                socket.display(),
                bin.display()
            )
        })?;
    Ok(())
}

/// What a supervisor whose program was replaced (an upgrade) answers; it has stopped listening,
/// and [`hand_off`] starts the new program.
pub const RETIRED: &str = "retired: this supervisor's program was replaced";

/// Hand a container process's listener to the supervisor (starting one when none answers) and
/// wait for its answer. An error fails the create or exec: a container is never started
/// without vetting (SPEC M5).
pub fn hand_off(
    state_root: &Path,
    id: &str,
    pid: i32,
    init: bool,
    listener: OwnedFd,
) -> Result<(), String> {
    // A supervisor that retires (its program was replaced) answers RETIRED to the registration
    // it accepted and closes its socket, which resets the ones still queued on it: both are
    // tried once more, against the new program (started here if nobody else did).
    match hand_off_once(state_root, id, pid, init, &listener) {
        Err(e) if e.ends_with(RETIRED) || e.contains(GONE) || e.contains(RESET) => {
            hand_off_once(state_root, id, pid, init, &listener)
        }
        r => r,
    }
}

const GONE: &str = "the mount-vetting supervisor closed the connection without an answer";
/// How the system-call layer words ECONNRESET.
const RESET: &str = "(os error 104)";

fn hand_off_once(
    state_root: &Path,
    id: &str,
    pid: i32,
    init: bool,
    listener: &OwnedFd,
) -> Result<(), String> {
    let path = supervisor_socket();
    let sock = match connect(&path) {
        Ok(s) => s,
        Err(_) => {
            start_supervisor(&path)?;
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match connect(&path) {
                    Ok(s) => break s,
                    Err(e) if Instant::now() > deadline => {
                        return Err(format!(
                            "the mount-vetting supervisor did not come up: {e} (see supervisor.log beside the socket)"
                        ))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
    };
    let msg = Register {
        state_root: state_root.to_path_buf(),
        id: id.to_string(),
        pid,
        init,
    };
    crate::sys::send(
        sock.as_raw_fd(),
        &serde_json::to_vec(&msg).expect("serializable"),
        &[listener.as_raw_fd()],
    )?;
    let answer = crate::sys::recv(sock.as_raw_fd())?;
    match answer {
        None => Err(GONE.into()),
        Some((b, _)) => match serde_json::from_slice::<Registered>(&b) {
            Ok(Registered::Ok) => Ok(()),
            Ok(Registered::Refused { msg }) => Err(format!("mount-vetting supervisor: {msg}")),
            Err(e) => Err(format!("bad answer from the mount-vetting supervisor: {e}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eci_policy::spec::{SyscallArg, SyscallRule};

    #[test]
    fn docker_like_profile_builds() {
        let s = Seccomp {
            default_action: "SCMP_ACT_ERRNO".into(),
            default_errno_ret: Some(1),
            architectures: vec!["SCMP_ARCH_X86_64".into(), "SCMP_ARCH_X86".into()],
            syscalls: vec![
                SyscallRule {
                    names: vec!["read".into(), "write".into(), "no_such_call".into()],
                    action: "SCMP_ACT_ALLOW".into(),
                    ..SyscallRule::default()
                },
                SyscallRule {
                    names: vec!["personality".into()],
                    action: "SCMP_ACT_ALLOW".into(),
                    args: vec![
                        SyscallArg {
                            index: 0,
                            value: 0,
                            value_two: 0,
                            op: "SCMP_CMP_EQ".into(),
                        },
                        SyscallArg {
                            index: 0,
                            value: 8,
                            value_two: 0,
                            op: "SCMP_CMP_EQ".into(),
                        },
                    ],
                    ..SyscallRule::default()
                },
                SyscallRule {
                    names: vec!["clone".into()],
                    action: "SCMP_ACT_ALLOW".into(),
                    args: vec![SyscallArg {
                        index: 0,
                        value: 0x7E02_0000,
                        value_two: 0,
                        op: "SCMP_CMP_MASKED_EQ".into(),
                    }],
                    ..SyscallRule::default()
                },
            ],
            ..Seccomp::default()
        };
        spec_filter(&s).unwrap();
        deny_filter().unwrap();
    }

    /// Runs in a child process of its own (see below): the filters loaded under a container
    /// profile that refuses `memfd_create`, which exporting the vetting filter uses.
    #[test]
    fn vetting_filter_child() {
        if std::env::var_os("ECI_VETTING_FILTER_CHILD").is_none() {
            return;
        }
        let profile = Seccomp {
            default_action: "SCMP_ACT_ALLOW".into(),
            syscalls: vec![SyscallRule {
                names: vec!["memfd_create".into()],
                action: "SCMP_ACT_ERRNO".into(),
                errno_ret: Some(libc::EPERM as u32),
                ..SyscallRule::default()
            }],
            ..Seccomp::default()
        };
        match load(Some(&profile)) {
            Ok(()) => println!("VETTING listener={}", take_listener().is_some()),
            Err(e) => println!("VETTING failed: {e}"),
        }
    }

    /// The vetting filter loads after a container profile that refuses the calls its export
    /// needs (the program is made before any filter), and hands out its listener.
    #[test]
    fn the_vetting_filter_loads_under_a_strict_profile() {
        if !nix::unistd::geteuid().is_root() {
            assert!(std::env::var_os("CI").is_none(), "CI runs as root");
            eprintln!("skipped: loading a filter without no_new_privs needs root");
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "seccomp::tests::vetting_filter_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("ECI_VETTING_FILTER_CHILD", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("VETTING listener=true"), "{text}");
    }

    /// Runs in a child process of its own (see below): the probe calls without, then with
    /// eci's filter, printed as `name errno_without errno_with` lines.
    #[test]
    fn seccomp_probe_child() {
        if std::env::var_os("ECI_SECCOMP_PROBE_CHILD").is_none() {
            return;
        }
        let before = crate::sys::probe::kernel_global_calls();
        deny_filter().unwrap().load().unwrap();
        let after = crate::sys::probe::kernel_global_calls();
        for ((name, b), (_, a)) in before.iter().zip(after) {
            println!("PROBE {name} {b} {a}");
        }
    }

    /// SPEC P2: the filter itself refuses the VM-global calls with EPERM, whatever the user
    /// namespace would have said (a test of the filter's behaviour, not just that it builds).
    #[test]
    fn the_filter_refuses_vm_global_calls() {
        if !nix::unistd::geteuid().is_root() {
            assert!(std::env::var_os("CI").is_none(), "CI runs as root");
            eprintln!("skipped: needs root to tell the filter's EPERM from the kernel's");
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "seccomp::tests::seccomp_probe_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("ECI_SECCOMP_PROBE_CHILD", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: Vec<(String, i32, i32)> = text
            .lines()
            // The harness prints `test NAME ... ` on the first line's front.
            .filter_map(|l| l.find("PROBE ").map(|i| &l[i + 6..]))
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (
                    f[0].to_string(),
                    f[1].parse().unwrap(),
                    f[2].parse().unwrap(),
                )
            })
            .collect();
        assert_eq!(rows.len(), 6, "{text}");
        for (name, _, with) in &rows {
            assert_eq!(*with, libc::EPERM, "{name} must be refused by the filter");
        }
        let telling: Vec<&String> = rows
            .iter()
            .filter(|(_, without, _)| *without != libc::EPERM)
            .map(|(n, _, _)| n)
            .collect();
        assert!(
            telling.len() >= 4,
            "too few calls whose unfiltered errno differs from EPERM here: {rows:?}"
        );
    }

    fn vsock_errno() -> i32 {
        use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
        match socket(
            AddressFamily::Vsock,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        ) {
            Ok(_) => 0,
            Err(e) => e as i32,
        }
    }

    /// Runs in a child process of its own: socket(AF_VSOCK) without, then with eci's filter.
    #[test]
    fn vsock_probe_child() {
        if std::env::var_os("ECI_VSOCK_PROBE_CHILD").is_none() {
            return;
        }
        let before = vsock_errno();
        deny_filter().unwrap().load().unwrap();
        println!("VSOCK {before} {}", vsock_errno());
    }

    /// SPEC H2 (issue 11): the filter answers socket(AF_VSOCK) with EAFNOSUPPORT.
    #[test]
    fn the_filter_refuses_vsock_sockets() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "seccomp::tests::vsock_probe_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("ECI_VSOCK_PROBE_CHILD", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        let row = text
            .lines()
            .find_map(|l| l.find("VSOCK ").map(|i| l[i + 6..].to_string()))
            .unwrap_or_else(|| panic!("no VSOCK line in {text}"));
        let f: Vec<i32> = row.split(' ').map(|x| x.parse().unwrap()).collect();
        assert_eq!(f[1], libc::EAFNOSUPPORT, "with the filter: {row}");
        eprintln!("socket(AF_VSOCK) without the filter: errno {}", f[0]);
    }

    #[test]
    fn notify_and_unknown_actions_are_refused() {
        let s = Seccomp {
            default_action: "SCMP_ACT_NOTIFY".into(),
            ..Seccomp::default()
        };
        assert!(spec_filter(&s).unwrap_err().contains("NOTIFY"));
        let s = Seccomp {
            default_action: "SCMP_ACT_BOGUS".into(),
            ..Seccomp::default()
        };
        assert!(spec_filter(&s).is_err());
    }
}
