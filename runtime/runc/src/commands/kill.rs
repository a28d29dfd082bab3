//! `kill`: send a signal to the init, or with `--all` to every process of the container.

use crate::error::{Error, Result};
use crate::state::State;
use crate::{sys, Global};

pub fn kill(g: &Global, id: &str, all: bool, signal: &str) -> Result<()> {
    let sig = parse_signal(signal)?;
    let st = State::load(&g.root, id)?;
    if !st.alive() {
        return Err(Error::KillStopped);
    }
    if all {
        for p in st.cgroup.pids() {
            let _ = sys::kill(p, sig);
        }
        if sig == libc::SIGKILL && st.cgroup.is_frozen() {
            let _ = st.cgroup.freeze(false);
        }
        return Ok(());
    }
    Ok(sys::kill(st.pid, sig)?)
}

/// A signal as runc takes it: a number, a name with or without `SIG` in any case, or
/// `RTMIN`, `RTMIN+n`, `RTMAX`.
pub fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return Ok(n);
    }
    let unknown = || Error::UnknownSignal(s.to_string());
    let name = s.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" | "CLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        other => {
            if let Some(rest) = other.strip_prefix("RTMIN+") {
                libc::SIGRTMIN() + rest.parse::<i32>().map_err(|_| unknown())?
            } else if other == "RTMIN" {
                libc::SIGRTMIN()
            } else if other == "RTMAX" {
                libc::SIGRTMAX()
            } else {
                return Err(unknown());
            }
        }
    };
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("SIGTERM").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("term").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("KILL").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("SIGRTMIN+1").unwrap(), libc::SIGRTMIN() + 1);
        assert!(matches!(
            parse_signal("SIGNOPE"),
            Err(Error::UnknownSignal(s)) if s == "SIGNOPE"
        ));
    }
}
