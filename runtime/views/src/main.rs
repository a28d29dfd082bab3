//! `eci-views serve`: the FUSE server of the per-container /proc and /sys views, until a
//! supervisor hosts it (runtime/README.md, *The /proc and /sys views*).

use std::process::ExitCode;

const USAGE: &str = "usage: eci-views serve [--threads N]\n\
  Serves the /proc and /sys views of every registered container under $ECI_VIEWS_ROOT\n\
  (default /run/eci-views). eci-runc starts it when no server answers.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut threads = 2;
    match args.first().map(String::as_str) {
        Some("serve") => {}
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    }
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.next().and_then(|n| n.parse::<usize>().ok())) {
            ("--threads", Some(n)) if n > 0 => threads = n,
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    match eci_views::server::serve(&eci_views::Layout::from_env(), threads) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ eci_views::Error::AlreadyServing(_)) => {
            eprintln!("eci-views: {e}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("eci-views: {e}");
            ExitCode::FAILURE
        }
    }
}
