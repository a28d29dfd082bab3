//! `eci-views`: the FUSE server of the per-container /proc and /sys views, and the two calls
//! the runtime makes at create and delete (runtime/README.md, *The /proc and /sys views*).
//!
//! The runtime calls this binary instead of linking the crate: it stays small (no FUSE code in
//! every `create`), and the record format, the key and the bind list have one home here.

use std::path::PathBuf;
use std::process::ExitCode;

use eci_views::cgroup::CgroupDirs;
use eci_views::{client, Layout};

const USAGE: &str = "usage:\n\
  eci-views serve [--threads N]\n\
      serve the views of every registered container (one FUSE mount under $ECI_VIEWS_ROOT,\n\
      default /run/eci-views)\n\
  eci-views register --state-root DIR --id ID --state-dir DIR --uid N --gid N --range N\n\
                     [--cgroup CONTROLLER=FOLDER]...   (CONTROLLER: v2 memory cpu cpuacct cpuset blkio pids)\n\
      register a container (starting a server if none answers) and print its folder, then one\n\
      line per view: `SOURCE TARGET KIND` (KIND: file, dir, empty-file; `- DIR empty-dir`\n\
      for a folder the runtime empties)\n\
  eci-views unregister --state-root DIR --id ID\n\
      drop a container's record and tell the server";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let layout = Layout::from_env();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(&layout, &args[1..]),
        Some("register") => register(&layout, &args[1..]),
        Some("unregister") => unregister(&layout, &args[1..]),
        Some(eci_init::fd_store::SERVE_ALONE_COMMAND) => fd_store(&args[1..]),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("eci-views: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--name value` pairs; every name may repeat.
fn pairs(args: &[String]) -> Result<Vec<(&str, &str)>, String> {
    if !args.len().is_multiple_of(2) {
        return Err(format!("{} needs a value\n{USAGE}", args[args.len() - 1]));
    }
    Ok(args
        .chunks(2)
        .map(|c| (c[0].as_str(), c[1].as_str()))
        .collect())
}

fn one<'a>(p: &[(&str, &'a str)], name: &str) -> Result<&'a str, String> {
    p.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .ok_or_else(|| format!("{name} is missing\n{USAGE}"))
}

fn number(p: &[(&str, &str)], name: &str) -> Result<u32, String> {
    one(p, name)?
        .parse()
        .map_err(|_| format!("{name} must be a number"))
}

fn serve(layout: &Layout, args: &[String]) -> Result<(), String> {
    let p = pairs(args)?;
    let threads = match p.iter().find(|(n, _)| *n == "--threads") {
        Some(_) => number(&p, "--threads")?.max(1) as usize,
        None => 2,
    };
    if let Some((n, _)) = p.iter().find(|(n, _)| *n != "--threads") {
        return Err(format!("unknown option {n}\n{USAGE}"));
    }
    match eci_views::server::serve(layout, threads) {
        // Another server won the race to start: it serves, nothing to do.
        Ok(()) | Err(eci_views::Error::AlreadyServing(_)) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

fn fd_store(args: &[String]) -> Result<(), String> {
    let p = pairs(args)?;
    let socket = one(&p, "--socket")?;
    eci_init::fd_store::serve_alone(socket.as_ref(), |line| eprintln!("eci-views {line}"))
        .map_err(|e| format!("fd store at {socket}: {e}"))
}

fn register(layout: &Layout, args: &[String]) -> Result<(), String> {
    let p = pairs(args)?;
    let mut cgroup = CgroupDirs::default();
    for (n, v) in &p {
        match *n {
            "--cgroup" => {
                let (ctrl, dir) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--cgroup {v}: CONTROLLER=FOLDER"))?;
                let dir = Some(PathBuf::from(dir));
                match ctrl {
                    "v2" => cgroup.v2 = dir,
                    "memory" => cgroup.memory = dir,
                    "cpu" => cgroup.cpu = dir,
                    "cpuacct" => cgroup.cpuacct = dir,
                    "cpuset" => cgroup.cpuset = dir,
                    "blkio" => cgroup.blkio = dir,
                    "pids" => cgroup.pids = dir,
                    other => return Err(format!("--cgroup: unknown controller {other}")),
                }
            }
            "--state-root" | "--id" | "--state-dir" | "--uid" | "--gid" | "--range" => {}
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    let c = client::Container {
        state_root: one(&p, "--state-root")?.into(),
        id: one(&p, "--id")?.into(),
        state_dir: one(&p, "--state-dir")?.into(),
        root_uid: number(&p, "--uid")?,
        root_gid: number(&p, "--gid")?,
        id_range: number(&p, "--range")?,
        cgroup,
    };
    let me = std::env::current_exe().map_err(|e| format!("locate eci-views: {e}"))?;
    let folder = client::register_container(layout, &me, &c).map_err(|e| e.to_string())?;
    let mut out = format!("{}\n", folder.display());
    for b in eci_views::binds() {
        out.push_str(&format!("{} {} {}\n", b.source, b.target, b.kind.as_str()));
    }
    for d in eci_views::EMPTY_DIRS {
        out.push_str(&format!("- {d} empty-dir\n"));
    }
    print!("{out}");
    Ok(())
}

fn unregister(layout: &Layout, args: &[String]) -> Result<(), String> {
    let p = pairs(args)?;
    let key = eci_views::registry::key(one(&p, "--state-root")?.as_ref(), one(&p, "--id")?);
    client::unregister(layout, &key).map_err(|e| e.to_string())
}
