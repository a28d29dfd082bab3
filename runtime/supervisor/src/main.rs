//! eci-supervisor: `serve [--socket PATH]` (what eci-init and eci-runc start), `helper` (a
//! container's mount helper, started by the supervisor itself) or `fd-store --socket PATH`
//! (the fd store where no eci-init holds one, started by the supervisor; see `store`).

use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("helper") => std::process::exit(eci_supervisor::helper::main()),
        Some("serve") => {
            let socket = match args.get(1).map(String::as_str) {
                Some("--socket") => match args.get(2) {
                    Some(p) => PathBuf::from(p),
                    None => usage(),
                },
                None => eci_runc::seccomp::supervisor_socket(),
                _ => usage(),
            };
            if let Err(e) = eci_supervisor::server::serve(&socket) {
                eprintln!("eci-supervisor: {e}");
                std::process::exit(1);
            }
        }
        Some(eci_init::fd_store::SERVE_ALONE_COMMAND) => {
            match (args.get(1).map(String::as_str), args.get(2)) {
                (Some("--socket"), Some(p)) => {
                    if let Err(e) = fd_store(std::path::Path::new(p)) {
                        eprintln!("eci-supervisor fd-store: {e}");
                        std::process::exit(1);
                    }
                }
                _ => usage(),
            }
        }
        _ => usage(),
    }
}

/// Serve the fd store at `socket` until killed (`eci_init::fd_store::serve_alone`).
fn fd_store(socket: &std::path::Path) -> std::io::Result<()> {
    eci_init::fd_store::serve_alone(socket, |line| eprintln!("eci-supervisor {line}"))
}

fn usage() -> ! {
    eprintln!("usage: eci-supervisor serve [--socket PATH] | fd-store --socket PATH");
    std::process::exit(2)
}
