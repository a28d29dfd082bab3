//! `eci-init`: PID 1 of the eci VM (see the library documentation).
//!
//! - as PID 1 (the kernel runs it through /init): boots the VM and never returns;
//! - `eci-init poweroff`: asks PID 1 for a clean shutdown (the kernel's poweroff helper);
//! - `eci-init --under-init`: the same boot under another init that is PID 1 (WSL2's; the
//!   distribution's boot command runs it): no mounts of /, no disks, no power off; exits once
//!   its services stopped after SIGTERM;
//! - `eci-init --sandbox ROOT [--cmdline TEXT] [--probe-root DIR]`: the test mode, only as PID 1
//!   of a private PID and mount namespace (`unshare --pid --mount --fork`): boots ROOT without
//!   touching anything kernel-global; DIR (inside ROOT) holds the fake kernel tree the kernel
//!   check reads instead of /.

use eci_init::run::{self, Mode};

const USAGE: &str = "usage: eci-init (as PID 1) | eci-init poweroff | eci-init --under-init (under another init) | eci-init --sandbox ROOT [--cmdline TEXT] [--probe-root DIR] (as PID 1 of a new PID namespace)";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pid1 = nix::unistd::getpid().as_raw() == 1;
    let mut mode = Mode::default();
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
            "--under-init" if !pid1 => mode.under_init = true,
            "--sandbox" if i + 1 < args.len() => {
                mode.sandbox = Some(args[i + 1].clone().into());
                i += 1;
            }
            "--cmdline" if i + 1 < args.len() => {
                mode.cmdline = Some(args[i + 1].clone());
                i += 1;
            }
            "--probe-root" if i + 1 < args.len() => {
                mode.probe_root = Some(args[i + 1].clone().into());
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
    // The test-only paths replace what the VM reads; only the sandbox may have them, so no
    // kernel argument or boot command can point the kernel check at a fake kernel.
    let test_only = mode.cmdline.is_some() || mode.probe_root.is_some();
    if mode.under_init {
        if test_only || mode.sandbox.is_some() {
            eprintln!("eci-init: --under-init takes no other option\n{USAGE}");
            std::process::exit(2);
        }
        std::process::exit(run::under_init(mode));
    }
    if !pid1 {
        eprintln!("eci-init: not PID 1; refusing to run (it mounts, signals every process and powers off)\n{USAGE}");
        std::process::exit(2);
    }
    if test_only && mode.sandbox.is_none() {
        eprintln!("eci-init: --cmdline and --probe-root are for --sandbox only\n{USAGE}");
        std::process::exit(2);
    }
    run::pid1(mode)
}
