//! Boots a built kernel + initramfs under QEMU and reads what the VM says on its serial console.
//!
//! KVM is never assumed: `/dev/kvm` can exist and still hang QEMU (seen on the project's own
//! CI machines). `Accel::Auto` runs a short probe boot with KVM and falls back to TCG when the
//! kernel prints nothing within a few seconds.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const QEMU: &str = "qemu-system-x86_64";
const SELFTEST_PREFIX: &str = "ECI-SELFTEST";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Auto,
    Kvm,
    Tcg,
}

impl std::str::FromStr for Accel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Accel::Auto),
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            other => Err(format!(
                "unknown accelerator `{other}`: use auto, kvm or tcg"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("{QEMU} is not installed; install it with: apt-get install -y qemu-system-x86")]
    NoQemu,
    #[error("cannot start {QEMU}: {0}")]
    Spawn(std::io::Error),
    #[error("the VM did not finish within {seconds} s (last console line: {last_line:?}); the full console log is in {}", log.display())]
    Timeout {
        seconds: u64,
        last_line: String,
        log: PathBuf,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct BootOptions {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub cmdline: Vec<String>,
    pub memory_mib: u32,
    pub cpus: u32,
    pub accel: Accel,
    pub timeout: Duration,
    /// Where the whole console output is kept.
    pub console_log: PathBuf,
    /// Echo console lines to stderr while booting.
    pub echo: bool,
}

/// What the self-test printed: `ECI-SELFTEST key=value` lines and the final status.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SelfTest {
    pub facts: Vec<String>,
    pub status: Option<String>,
}

impl SelfTest {
    pub fn passed(&self) -> bool {
        self.status.as_deref() == Some("pass")
    }

    /// The value of the first `ECI-SELFTEST key=value` line with this key.
    pub fn fact(&self, key: &str) -> Option<&str> {
        self.facts
            .iter()
            .find_map(|f| f.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    }

    /// Reads self-test lines out of a console transcript; kernel messages may interleave.
    pub fn parse(console: &str) -> SelfTest {
        let mut test = SelfTest::default();
        for line in console.lines() {
            let Some(at) = line.find(SELFTEST_PREFIX) else {
                continue;
            };
            let rest = &line[at + SELFTEST_PREFIX.len()..];
            if let Some(status) = rest.strip_prefix("-END status=") {
                test.status = Some(status.trim().to_string());
            } else if let Some(fact) = rest.strip_prefix(' ') {
                test.facts.push(fact.trim_end().to_string());
            }
        }
        test
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BootResult {
    pub accel: String,
    pub seconds: f64,
    pub exit_code: Option<i32>,
    pub selftest: SelfTest,
    pub console_log: PathBuf,
}

pub fn qemu_available() -> bool {
    Command::new(QEMU)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn base_command(opts: &BootOptions, accel: Accel) -> Command {
    let mut cmd = Command::new(QEMU);
    let accel_name = if accel == Accel::Kvm { "kvm" } else { "tcg" };
    cmd.args(["-machine", "q35", "-accel", accel_name])
        .args(["-m", &opts.memory_mib.to_string()])
        .args(["-smp", &opts.cpus.to_string()])
        .args([
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            "-nodefaults",
        ])
        .args(["-serial", "stdio"])
        .args([
            "-netdev",
            "user,id=n0,restrict=on",
            "-device",
            "virtio-net-pci,netdev=n0",
        ])
        .arg("-kernel")
        .arg(&opts.kernel)
        .arg("-initrd")
        .arg(&opts.initramfs)
        .args(["-append", &opts.cmdline.join(" ")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if accel == Accel::Kvm {
        cmd.args(["-cpu", "host"]);
    }
    cmd
}

/// Starts a KVM boot and waits briefly for the kernel's first console output.
pub fn kvm_works(opts: &BootOptions) -> bool {
    if !Path::new("/dev/kvm").exists() {
        return false;
    }
    let Ok(mut child) = base_command(opts, Accel::Kvm).spawn() else {
        return false;
    };
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let ok = reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false);
        let _ = tx.send(ok);
    });
    let works = rx.recv_timeout(Duration::from_secs(5)).unwrap_or(false);
    kill(&mut child);
    works
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Boots the VM, keeps its console in `console_log`, and returns when QEMU exits (the image
/// powers off after its self-test) or the timeout expires.
pub fn boot(opts: &BootOptions) -> Result<BootResult, BootError> {
    if !qemu_available() {
        return Err(BootError::NoQemu);
    }
    let accel = match opts.accel {
        Accel::Auto if kvm_works(opts) => Accel::Kvm,
        Accel::Auto => Accel::Tcg,
        a => a,
    };
    let started = Instant::now();
    let mut child = base_command(opts, accel)
        .spawn()
        .map_err(BootError::Spawn)?;
    let log_io = |source| BootError::Io {
        path: opts.console_log.clone(),
        source,
    };
    if let Some(dir) = opts.console_log.parent() {
        std::fs::create_dir_all(dir).map_err(log_io)?;
    }
    let mut log = std::fs::File::create(&opts.console_log).map_err(log_io)?;

    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let tx_err = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            // The console carries terminal control bytes; keep the text readable.
            let text = String::from_utf8_lossy(&line).replace('\r', "");
            if tx.send(text).is_err() {
                return;
            }
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx_err.send(format!("[qemu] {line}")).is_err() {
                return;
            }
        }
    });

    let mut transcript = String::new();
    let mut last_line = String::new();
    let exit_code;
    loop {
        let remaining = opts.timeout.saturating_sub(started.elapsed());
        match rx.recv_timeout(remaining.min(Duration::from_millis(200))) {
            Ok(line) => {
                if opts.echo {
                    eprintln!("{line}");
                }
                writeln!(log, "{line}").map_err(log_io)?;
                transcript.push_str(&line);
                transcript.push('\n');
                if !line.trim().is_empty() {
                    last_line = line;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                exit_code = child.wait().ok().and_then(|s| s.code());
                break;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Drain what the reader threads still hold.
            for line in rx.try_iter() {
                writeln!(log, "{line}").map_err(log_io)?;
                transcript.push_str(&line);
                transcript.push('\n');
            }
            exit_code = status.code();
            break;
        }
        if started.elapsed() >= opts.timeout {
            kill(&mut child);
            return Err(BootError::Timeout {
                seconds: opts.timeout.as_secs(),
                last_line,
                log: opts.console_log.clone(),
            });
        }
    }
    log.flush().map_err(log_io)?;
    Ok(BootResult {
        accel: if accel == Accel::Kvm { "kvm" } else { "tcg" }.into(),
        seconds: started.elapsed().as_secs_f64(),
        exit_code,
        selftest: SelfTest::parse(&transcript),
        console_log: opts.console_log.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selftest_lines_are_read_among_kernel_messages() {
        let console = "[    1.0] Run /init as init process\r\nECI-SELFTEST-BEGIN\nECI-SELFTEST kernel=6.12.107\n[    2.1] random: crng init done\nECI-SELFTEST dockerd=Docker version 20.10.24\nECI-SELFTEST-END status=pass\n";
        let t = SelfTest::parse(console);
        assert!(t.passed());
        assert_eq!(t.fact("kernel"), Some("6.12.107"));
        assert_eq!(t.fact("dockerd"), Some("Docker version 20.10.24"));
        assert_eq!(t.fact("missing"), None);
    }

    #[test]
    fn a_missing_or_failed_end_is_not_a_pass() {
        assert!(!SelfTest::parse("ECI-SELFTEST kernel=1\n").passed());
        assert!(!SelfTest::parse("ECI-SELFTEST-END status=fail\n").passed());
    }

    #[test]
    fn accel_names_parse() {
        assert_eq!("tcg".parse::<Accel>(), Ok(Accel::Tcg));
        assert!("xen"
            .parse::<Accel>()
            .unwrap_err()
            .contains("auto, kvm or tcg"));
    }
}
