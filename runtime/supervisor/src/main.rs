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
        Some("fd-store") => match (args.get(1).map(String::as_str), args.get(2)) {
            (Some("--socket"), Some(p)) => {
                if let Err(e) = fd_store(std::path::Path::new(p)) {
                    eprintln!("eci-supervisor fd-store: {e}");
                    std::process::exit(1);
                }
            }
            _ => usage(),
        },
        _ => usage(),
    }
}

/// Serve the fd store at `socket` until killed; a second store for the same socket exits at
/// once (the lock beside it), so it never replaces one that holds descriptors.
fn fd_store(socket: &std::path::Path) -> std::io::Result<()> {
    let lock_path = socket.with_extension("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)?;
    let _lock = match nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(()),
        Err((_, e)) => return Err(e.into()),
    };
    let s = eci_init::fd_store::bind_socket(socket)?;
    eprintln!("eci-supervisor fd-store: serving {}", socket.display());
    eci_init::fd_store::serve(s, |line| eprintln!("eci-supervisor {line}"));
    Ok(())
}

fn usage() -> ! {
    eprintln!("usage: eci-supervisor serve [--socket PATH] | fd-store --socket PATH");
    std::process::exit(2)
}
