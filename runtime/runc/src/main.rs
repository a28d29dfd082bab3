//! eci-runc: runc's command line over the `eci_runc` library (runtime/README.md).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use eci_runc::commands::{self, ListFormat, UpdateOpts};
use eci_runc::{CreateOpts, ExecOpts, Global, VERSION};

#[derive(Parser)]
#[command(
    name = "eci-runc",
    disable_version_flag = true,
    about = "runc-compatible runtime with exclusive user namespaces"
)]
struct Cli {
    /// Folder for container state (runc's --root).
    #[arg(long, global = true, default_value = eci_runc::DEFAULT_ROOT)]
    root: PathBuf,
    /// Log file; errors are also printed on stderr.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// text or json (runc's shape: level, msg, time).
    #[arg(long = "log-format", global = true, default_value = "text")]
    log_format: String,
    /// Accept systemd-style cgroupsPath (slice:prefix:name); cgroups are still managed directly.
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    #[arg(long, global = true)]
    debug: bool,
    /// Isolation policy file (default /etc/eci/policy.json).
    /// Also ECI_RUNC_POLICY.
    #[arg(long, global = true)]
    policy: Option<PathBuf>,
    #[arg(long, global = true, hide = true)]
    criu: Option<String>,
    #[arg(long, global = true, hide = true)]
    rootless: Option<String>,
    #[arg(short = 'v', long = "version")]
    version: bool,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(clap::Args)]
struct CreateArgs {
    #[arg(short = 'b', long, default_value = ".")]
    bundle: PathBuf,
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    /// Accepted for compatibility: the session keyring is never shared with the VM here.
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: i32,
    id: String,
}

#[derive(Subcommand)]
enum Cmd {
    Create(CreateArgs),
    Run {
        #[command(flatten)]
        c: CreateArgs,
        #[arg(short = 'd', long)]
        detach: bool,
        #[arg(long)]
        keep: bool,
    },
    Start {
        id: String,
    },
    State {
        id: String,
    },
    Kill {
        #[arg(short = 'a', long)]
        all: bool,
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    Delete {
        #[arg(short = 'f', long)]
        force: bool,
        id: String,
    },
    Exec {
        #[arg(long = "console-socket")]
        console_socket: Option<PathBuf>,
        #[arg(long)]
        cwd: Option<String>,
        #[arg(short = 'e', long)]
        env: Vec<String>,
        #[arg(short = 't', long)]
        tty: bool,
        #[arg(short = 'u', long)]
        user: Option<String>,
        #[arg(short = 'g', long = "additional-gids")]
        additional_gids: Vec<u32>,
        #[arg(short = 'p', long)]
        process: Option<PathBuf>,
        #[arg(short = 'd', long)]
        detach: bool,
        #[arg(long = "pid-file")]
        pid_file: Option<PathBuf>,
        #[arg(long = "process-label")]
        process_label: Option<String>,
        #[arg(long)]
        apparmor: Option<String>,
        #[arg(long = "no-new-privs")]
        no_new_privs: bool,
        #[arg(short = 'c', long = "cap")]
        cap: Vec<String>,
        #[arg(long = "preserve-fds", default_value_t = 0)]
        preserve_fds: i32,
        #[arg(long)]
        cgroup: Option<String>,
        #[arg(long = "ignore-paused")]
        ignore_paused: bool,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    Ps {
        #[arg(short = 'f', long, default_value = "table")]
        format: String,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    Features,
    Events {
        #[arg(long)]
        stats: bool,
        #[arg(long, default_value = "5s")]
        interval: String,
        id: String,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    Update {
        #[arg(short = 'r', long)]
        resources: Option<PathBuf>,
        #[arg(short = 'm', long)]
        memory: Option<String>,
        #[arg(long = "memory-swap")]
        memory_swap: Option<String>,
        #[arg(long = "memory-reservation")]
        memory_reservation: Option<String>,
        #[arg(long = "cpu-shares")]
        cpu_shares: Option<u64>,
        #[arg(long = "cpu-quota")]
        cpu_quota: Option<i64>,
        #[arg(long = "cpu-period")]
        cpu_period: Option<u64>,
        #[arg(long = "cpuset-cpus")]
        cpuset_cpus: Option<String>,
        #[arg(long = "cpuset-mems")]
        cpuset_mems: Option<String>,
        #[arg(long = "pids-limit")]
        pids_limit: Option<i64>,
        id: String,
    },
    List {
        #[arg(short = 'f', long, default_value = "table")]
        format: String,
        #[arg(short = 'q', long)]
        quiet: bool,
    },
}

fn run() -> eci_runc::Result<i32> {
    let cli = Cli::parse();
    if cli.version {
        println!("eci-runc version {VERSION}\ncommit: eci-{VERSION}\nspec: 1.0.2-dev");
        return Ok(0);
    }
    eci_runc::log::init(
        cli.log.as_ref().map(|p| p.display().to_string()),
        cli.log_format == "json",
        cli.debug,
    );
    eci_runc::log::debug(&format!(
        "eci-runc {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    ));
    let g = Global::from_env(cli.root.clone(), cli.systemd_cgroup, cli.policy.clone());
    let Some(cmd) = cli.cmd else {
        return Err("no command given; see eci-runc --help".into());
    };
    let create_opts = |c: &CreateArgs| CreateOpts {
        id: c.id.clone(),
        bundle: c.bundle.clone(),
        pid_file: c.pid_file.clone(),
        console_socket: c.console_socket.clone(),
        no_pivot: c.no_pivot,
        preserve_fds: c.preserve_fds,
    };
    match cmd {
        Cmd::Create(c) => {
            let _ = c.no_new_keyring;
            commands::create(&g, &create_opts(&c))?;
        }
        Cmd::Run { c, detach, keep } => return commands::run(&g, &create_opts(&c), detach, keep),
        Cmd::Start { id } => commands::start(&g, &id)?,
        Cmd::State { id } => println!(
            "{}",
            serde_json::to_string_pretty(&commands::state(&g, &id)?).expect("json")
        ),
        Cmd::Kill { all, id, signal } => commands::kill(&g, &id, all, &signal)?,
        Cmd::Delete { force, id } => commands::delete(&g, &id, force)?,
        Cmd::Exec {
            console_socket,
            cwd,
            env,
            tty,
            user,
            additional_gids,
            process,
            detach,
            pid_file,
            process_label: _,
            apparmor: _,
            no_new_privs,
            cap,
            preserve_fds,
            cgroup: _,
            ignore_paused: _,
            id,
            args,
        } => {
            let o = ExecOpts {
                id,
                process,
                detach,
                pid_file,
                console_socket,
                tty,
                cwd,
                env,
                user,
                caps: cap,
                no_new_privs,
                preserve_fds,
                additional_gids,
                args,
            };
            return commands::exec(&g, &o);
        }
        Cmd::Ps {
            format,
            id,
            ps_args,
        } => commands::ps(&g, &id, &format, &ps_args)?,
        Cmd::Features => println!(
            "{}",
            serde_json::to_string_pretty(&commands::features()).expect("json")
        ),
        Cmd::Events {
            stats,
            interval,
            id,
        } => commands::events(&g, &id, stats, &interval)?,
        Cmd::Pause { id } => commands::pause(&g, &id)?,
        Cmd::Resume { id } => commands::resume(&g, &id)?,
        Cmd::Update {
            resources,
            memory,
            memory_swap,
            memory_reservation,
            cpu_shares,
            cpu_quota,
            cpu_period,
            cpuset_cpus,
            cpuset_mems,
            pids_limit,
            id,
        } => {
            let o = UpdateOpts {
                resources,
                memory,
                memory_swap,
                memory_reservation,
                cpu_shares,
                cpu_quota,
                cpu_period,
                cpuset_cpus,
                cpuset_mems,
                pids_limit,
            };
            commands::update(&g, &id, &o)?
        }
        Cmd::List { format, quiet } => {
            let f = if quiet {
                ListFormat::Ids
            } else if format == "json" {
                ListFormat::Json
            } else {
                ListFormat::Table
            };
            commands::list(&g, f)?
        }
    }
    Ok(0)
}

fn main() {
    match run() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eci_runc::report(&e);
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_accepts_what_containerd_sends() {
        let c = Cli::try_parse_from([
            "eci-runc",
            "--root",
            "/r",
            "--log",
            "/l",
            "--log-format",
            "json",
            "--systemd-cgroup",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/p",
            "--console-socket",
            "/s",
            "--no-pivot",
            "--no-new-keyring",
            "id1",
        ])
        .unwrap();
        assert!(matches!(c.cmd, Some(Cmd::Create(_))));
        let c = Cli::try_parse_from([
            "eci-runc",
            "--root",
            "/r",
            "exec",
            "--process",
            "/p.json",
            "--detach",
            "--pid-file",
            "/pid",
            "id1",
        ])
        .unwrap();
        assert!(matches!(c.cmd, Some(Cmd::Exec { detach: true, .. })));
        let c = Cli::try_parse_from(["eci-runc", "kill", "--all", "id1", "9"]).unwrap();
        assert!(matches!(c.cmd, Some(Cmd::Kill { all: true, .. })));
        let c =
            Cli::try_parse_from(["eci-runc", "exec", "-t", "id1", "sh", "-c", "ls -l"]).unwrap();
        let Some(Cmd::Exec { args, .. }) = c.cmd else {
            panic!()
        };
        assert_eq!(args, vec!["sh", "-c", "ls -l"]);
        let c = Cli::try_parse_from(["eci-runc", "delete", "--force", "id1"]).unwrap();
        assert!(matches!(c.cmd, Some(Cmd::Delete { force: true, .. })));
        let c = Cli::try_parse_from(["eci-runc", "update", "--resources", "-", "id1"]).unwrap();
        assert!(matches!(c.cmd, Some(Cmd::Update { .. })));
        let c = Cli::try_parse_from(["eci-runc", "ps", "--format", "json", "id1"]).unwrap();
        assert!(matches!(c.cmd, Some(Cmd::Ps { .. })));
    }
}
