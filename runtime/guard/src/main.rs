//! `eci-guard`: see README.md for flags, listener roles and the rules it enforces.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use eci_guard::proxy::{run, Config, Listener};
use eci_guard::settings::load_settings;
use eci_guard::Role;

#[derive(Parser, Debug)]
#[command(
    name = "eci-guard",
    version,
    about = "Docker API policy proxy of the eci VM"
)]
struct Args {
    /// Socket to serve, `[ROLE=]PATH`; ROLE is `user` (default: the engine socket users
    /// reach) or `container` (the socket bind-mounted into allowed containers, where
    /// commandList applies). Repeatable.
    #[arg(
        long = "listen",
        required_unless_present = "check",
        value_name = "[ROLE=]PATH"
    )]
    listen: Vec<String>,
    /// Also serve the host over AF_VSOCK on PORT with the user role; only connections from
    /// the host (CID 2) are accepted (SPEC H2). Repeatable.
    #[arg(long = "listen-vsock", value_name = "PORT")]
    listen_vsock: Vec<u32>,
    /// dockerd's root-only socket.
    #[arg(long, value_name = "PATH", default_value = eci_facts::vm_paths::DOCKERD_SOCKET)]
    upstream: PathBuf,
    /// admin-settings.json or the rendered policy.json; re-read when it changes.
    #[arg(long, value_name = "FILE", default_value = eci_facts::vm_paths::POLICY_PATH)]
    settings: PathBuf,
    /// One JSON line per decision; `-` for standard output.
    #[arg(long = "audit-log", value_name = "FILE", default_value = eci_facts::vm_paths::GUARD_AUDIT_LOG)]
    audit_log: PathBuf,
    /// Past this size the audit log becomes FILE.1 and a new one starts.
    #[arg(long = "audit-log-max-bytes", value_name = "BYTES", default_value_t = eci_guard::audit::DEFAULT_MAX_BYTES)]
    audit_log_max_bytes: u64,
    /// Image pins and the last good settings live here.
    #[arg(
        long = "state-dir",
        value_name = "DIR",
        default_value = eci_facts::vm_paths::GUARD_STATE_DIR
    )]
    state_dir: PathBuf,
    /// Another path that names the engine socket in bind mounts (repeatable); defaults to
    /// /var/run/docker.sock and /run/docker.sock.
    #[arg(long = "engine-socket-alias", value_name = "PATH")]
    engine_socket_alias: Vec<PathBuf>,
    /// Permission bits of the listening sockets, octal.
    #[arg(long = "socket-mode", value_name = "OCTAL", default_value = "660")]
    socket_mode: String,
    /// Group (name from /etc/group, or a number) of the user-role sockets; by default they
    /// keep the guard's group. The container socket always keeps it.
    #[arg(long = "socket-group", value_name = "GROUP")]
    socket_group: Option<String>,
    /// Largest JSON body the policy reads, in bytes.
    #[arg(long = "max-body", value_name = "BYTES", default_value_t = 16 << 20)]
    max_body: usize,
    /// Seconds to wait for dockerd at start before serving anyway.
    #[arg(long = "upstream-wait", value_name = "SECONDS", default_value_t = 30)]
    upstream_wait: u64,
    /// Parse the settings, print the policy the guard would enforce, and exit.
    #[arg(long)]
    check: bool,
}

fn parse_listener(s: &str) -> Result<Listener, String> {
    let (role, path) = match s.split_once('=') {
        Some(("user", p)) => (Role::User, p),
        Some(("container", p)) => (Role::Container, p),
        Some((r, _)) if !r.contains('/') => {
            return Err(format!(
                "--listen {s}: unknown role {r:?}; use user=PATH or container=PATH"
            ))
        }
        _ => (Role::User, s),
    };
    if !path.starts_with('/') {
        return Err(format!("--listen {s}: the socket path must be absolute"));
    }
    Ok(Listener {
        path: PathBuf::from(path),
        role,
    })
}

const GROUP_FILE: &str = "/etc/group";

/// A group name looked up in `group_file` (the text of /etc/group), or a numeric gid.
fn resolve_group(name: &str, group_file: &str) -> Result<u32, String> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    group_file
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let (n, _, gid) = (f.next()?, f.next()?, f.next()?);
            (n == name).then(|| gid.parse::<u32>().ok()).flatten()
        })
        .next()
        .ok_or_else(|| {
            format!("--socket-group {name}: no such group in {GROUP_FILE}; give a group listed there or a numeric gid")
        })
}

fn main() -> std::process::ExitCode {
    match real_main(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("eci-guard: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main(args: Args) -> anyhow::Result<()> {
    if args.check {
        let loaded = load_settings(&args.settings).map_err(|e| anyhow::anyhow!("{e}"))?;
        for w in &loaded.warnings {
            eprintln!("{w}");
        }
        println!("{:#?}", loaded.policy);
        return Ok(());
    }
    let listeners = args
        .listen
        .iter()
        .map(|s| parse_listener(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!(e))?;
    if listeners
        .iter()
        .filter(|l| l.role == Role::Container)
        .count()
        > 1
    {
        anyhow::bail!("--listen: give at most one container=PATH socket");
    }
    let mode = u32::from_str_radix(&args.socket_mode, 8).map_err(|_| {
        anyhow::anyhow!(
            "--socket-mode {}: expected octal bits such as 660",
            args.socket_mode
        )
    })?;
    let mut config = Config::new(listeners, args.upstream, args.settings, args.audit_log);
    config.state_dir = Some(args.state_dir);
    config.audit_log_max_bytes = args.audit_log_max_bytes;
    if !args.engine_socket_alias.is_empty() {
        config.engine_aliases = args.engine_socket_alias;
    }
    config.socket_mode = mode;
    if let Some(g) = &args.socket_group {
        let groups = std::fs::read_to_string(GROUP_FILE).unwrap_or_default();
        config.socket_group = Some(resolve_group(g, &groups).map_err(|e| anyhow::anyhow!(e))?);
    }
    config.max_body = args.max_body;
    let (fits, warning) = eci_guard::limits::fit_open_files(config.max_connections)
        .map_err(|e| anyhow::anyhow!(e))?;
    if let Some(w) = warning {
        eprintln!("eci-guard: {w}");
    }
    config.max_connections = fits;
    config.upstream_wait = Duration::from_secs(args.upstream_wait);
    config.vsock_ports = args.listen_vsock;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        tokio::select! {
            r = run(config) => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = sigterm() => Ok(()),
        }
    })
}

async fn sigterm() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_take_an_optional_role() {
        assert_eq!(parse_listener("/run/docker.sock").unwrap().role, Role::User);
        assert_eq!(
            parse_listener("container=/run/eci/c.sock").unwrap().role,
            Role::Container
        );
        assert_eq!(parse_listener("user=/x").unwrap().path, PathBuf::from("/x"));
        assert!(parse_listener("admin=/x").is_err());
        assert!(parse_listener("relative.sock").is_err());
    }

    /// The VM's service line (vm-config/templates/services.json.tera) parses, and names the
    /// sockets and files eci-vm-config, eci-runc and eci-init expect (SPEC S4, S5, B4).
    #[test]
    fn the_vm_service_line_uses_the_vm_paths() {
        let t = include_str!("../../../vm-config/templates/services.json.tera");
        let json = t.split_once("-#}").map_or(t, |(_, rest)| rest);
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        let services = v["services"].as_array().unwrap();
        let at = |name: &str| services.iter().position(|s| s["name"] == name).unwrap();
        let guard = &services[at("eci-guard")];
        assert!(
            at("eci-guard") > at("dockerd"),
            "the guard starts after dockerd"
        );
        assert_eq!(
            guard["ready"]["http_unix"]["socket"],
            eci_facts::vm_paths::ENGINE_SOCKET,
            "ready when its own socket answers"
        );
        let argv: Vec<&str> = guard["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(argv[0], "/usr/bin/eci-guard");
        let base = include_str!("../../../images/base.yaml");
        assert!(
            base.contains("{bin: eci-guard, path: /usr/bin/eci-guard}"),
            "images/base.yaml installs the binary the service runs"
        );
        let args = Args::try_parse_from(&argv).unwrap();
        let listeners: Vec<Listener> = args
            .listen
            .iter()
            .map(|l| parse_listener(l).unwrap())
            .collect();
        assert_eq!(
            listeners,
            [
                Listener {
                    path: eci_facts::vm_paths::ENGINE_SOCKET.into(),
                    role: Role::User
                },
                Listener {
                    path: eci_facts::vm_paths::CONTAINER_ENGINE_SOCKET.into(),
                    role: Role::Container
                },
            ]
        );
        assert!(eci_policy::DEFAULT_ENGINE_SOCKETS
            .contains(&eci_facts::vm_paths::CONTAINER_ENGINE_SOCKET));
        assert_eq!(
            args.upstream,
            PathBuf::from(eci_facts::vm_paths::DOCKERD_SOCKET)
        );
        assert_eq!(
            args.settings,
            PathBuf::from(eci_facts::vm_paths::POLICY_PATH)
        );
        assert_eq!(
            args.audit_log,
            PathBuf::from(eci_facts::vm_paths::GUARD_AUDIT_LOG)
        );
        assert_eq!(
            args.state_dir,
            PathBuf::from(eci_facts::vm_paths::GUARD_STATE_DIR)
        );
        assert_eq!(
            args.listen_vsock,
            [375],
            "the host endpoint (SPEC H2; eci-build's ENGINE_PORT)"
        );
        assert_eq!(args.socket_mode, "660");
        let group = args.socket_group.as_deref().unwrap();
        assert!(
            base.contains(&format!("- {{name: {group}, gid: ")),
            "the image declares the socket group {group}"
        );
    }

    #[test]
    fn socket_groups_by_name_or_number() {
        let groups = "root:x:0:\ndocker:x:999:alice\nbad:x:notanumber:\n";
        assert_eq!(resolve_group("docker", groups), Ok(999));
        assert_eq!(resolve_group("root", groups), Ok(0));
        assert_eq!(resolve_group("1234", groups), Ok(1234));
        let e = resolve_group("bad", groups).unwrap_err();
        assert!(
            e.contains("--socket-group bad") && e.contains("/etc/group"),
            "{e}"
        );
        assert!(resolve_group("dock", groups).is_err());
    }
}
