//! `eci-init`: PID 1 of the eci VM (see the library documentation).
//!
//! - as PID 1 (the kernel runs it through /init): boots the VM and never returns;
//! - `eci-init poweroff`: asks PID 1 for a clean shutdown (the kernel's poweroff helper);
//! - `eci-init --sandbox ROOT [--cmdline TEXT]`: the test mode, only as PID 1 of a private PID
//!   and mount namespace (`unshare --pid --mount --fork`): boots ROOT without touching anything
//!   kernel-global.

use eci_init::run::{self, Mode};

const USAGE: &str = "usage: eci-init (as PID 1) | eci-init poweroff | eci-init --sandbox ROOT [--cmdline TEXT] (as PID 1 of a new PID namespace)";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pid1 = eci_init::sys::getpid() == 1;
    let mut mode = Mode {
        sandbox: None,
        cmdline: None,
    };
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "poweroff" if !pid1 => {
                if let Err(e) = run::request_poweroff() {
                    eprintln!("eci-init: {e}");
                    std::process::exit(1);
                }
                return;
            }
            "--sandbox" if i + 1 < args.len() => {
                mode.sandbox = Some(args[i + 1].clone().into());
                i += 1;
            }
            "--cmdline" if i + 1 < args.len() => {
                mode.cmdline = Some(args[i + 1].clone());
                i += 1;
            }
            // The kernel runs /init, a script whose interpreter line names eci-init, so the
            // script's path comes first; kernel arguments init does not know are passed too.
            _ if pid1 => {}
            other => {
                eprintln!("eci-init: unexpected argument {other:?}\n{USAGE}");
                std::process::exit(2);
            }
        }
        i += 1;
    }
    if !pid1 {
        eprintln!("eci-init: not PID 1; refusing to run (it mounts, signals every process and powers off)\n{USAGE}");
        std::process::exit(2);
    }
    if mode.cmdline.is_some() && mode.sandbox.is_none() {
        eprintln!("eci-init: --cmdline is for --sandbox only\n{USAGE}");
        std::process::exit(2);
    }
    run::pid1(mode)
}
