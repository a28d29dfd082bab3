//! `eci-probe`: see the library documentation for arguments, output and exit codes.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = eci_probe::run(&args, &mut std::io::stdout(), &mut std::io::stderr());
    ExitCode::from(code)
}
