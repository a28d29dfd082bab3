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
    /// dockerd's root-only socket.
    #[arg(long, value_name = "PATH", default_value = eci_vm_config::DOCKERD_SOCKET)]
    upstream: PathBuf,
    /// admin-settings.json or the rendered policy.json; re-read when it changes.
    #[arg(long, value_name = "FILE", default_value = eci_vm_config::POLICY_PATH)]
    settings: PathBuf,
    /// One JSON line per decision; `-` for standard output.
    #[arg(long = "audit-log", value_name = "FILE", default_value = eci_vm_config::GUARD_AUDIT_LOG)]
    audit_log: PathBuf,
    /// Image pins and the last good settings live here.
    #[arg(
        long = "state-dir",
        value_name = "DIR",
        default_value = eci_vm_config::GUARD_STATE_DIR
    )]
    state_dir: PathBuf,
    /// Another path that names the engine socket in bind mounts (repeatable); defaults to
    /// /var/run/docker.sock and /run/docker.sock.
    #[arg(long = "engine-socket-alias", value_name = "PATH")]
    engine_socket_alias: Vec<PathBuf>,
    /// Permission bits of the listening sockets, octal.
    #[arg(long = "socket-mode", value_name = "OCTAL", default_value = "660")]
    socket_mode: String,
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
    if !args.engine_socket_alias.is_empty() {
        config.engine_aliases = args.engine_socket_alias;
    }
    config.socket_mode = mode;
    config.max_body = args.max_body;
    config.upstream_wait = Duration::from_secs(args.upstream_wait);
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
}
