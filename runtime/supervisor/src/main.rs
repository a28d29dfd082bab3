//! eci-supervisor: `serve [--socket PATH]` (what eci-init and eci-runc start) or `helper` (a
//! container's mount helper, started by the supervisor itself).

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
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: eci-supervisor serve [--socket PATH]");
    std::process::exit(2)
}
