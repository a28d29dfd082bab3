//! `eci-probe`: the running kernel against the image's kernel pins (SPEC V5), as a table or
//! JSON, for an administrator (on WSL2: `wsl -d eci -e /usr/libexec/eci/eci-probe`) and for
//! tests. The gate itself is eci-init's: before starting any service it runs the same probe
//! through the same library and refuses isolation on drift (runtime/init, kernel_check.rs),
//! excusing boot modules whose hardware is absent, which only it can know from their load
//! errors; here such a module is a drift row like any other.
//!
//! ```text
//! eci-probe [--root DIR] [--pins FILE] [--phase after-module-lock|before-module-lock]
//!           [--format text|json] [--selftest]
//! ```
//!
//! - `--root`: where `/proc`, `/sys` and `/boot` are read (default `/`; tests pass a fake tree).
//! - `--pins`: the image's [`ImagePins`] (default `ROOT/etc/eci/kernel-pins.json`).
//! - `--phase`: `after-module-lock` (default; `kernel.modules_disabled=1` is required) or
//!   `before-module-lock`.
//! - Output: the probe table (or JSON) on stdout. With `--selftest`, stdout carries only the
//!   self-test line `ECI-SELFTEST kernel-drift=none` (or `kernel-drift=N: NAME, NAME`) and
//!   the table goes to stderr when something drifted.
//! - Exit code: 0 no drift, 1 drift, 2 the probe could not run (arguments, pins file, /proc).

use std::io::Write;
use std::path::PathBuf;

use eci_kernel_config::{probe_running_kernel, ImagePins, Phase, ProbeStatus, IMAGE_PINS_PATH};

pub const EXIT_OK: u8 = 0;
pub const EXIT_DRIFT: u8 = 1;
pub const EXIT_ERROR: u8 = 2;

const USAGE: &str = "usage: eci-probe [--root DIR] [--pins FILE] \
[--phase after-module-lock|before-module-lock] [--format text|json] [--selftest]";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

#[derive(Debug)]
struct Args {
    root: PathBuf,
    pins: Option<PathBuf>,
    phase: Phase,
    format: Format,
    selftest: bool,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut parsed = Args {
        root: PathBuf::from("/"),
        pins: None,
        phase: Phase::AfterModuleLock,
        format: Format::Text,
        selftest: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag {
            "--root" => parsed.root = PathBuf::from(value("--root")?),
            "--pins" => parsed.pins = Some(PathBuf::from(value("--pins")?)),
            "--phase" => {
                parsed.phase = match value("--phase")?.as_str() {
                    "after-module-lock" => Phase::AfterModuleLock,
                    "before-module-lock" => Phase::BeforeModuleLock,
                    other => {
                        return Err(format!(
                            "unknown phase `{other}`: use after-module-lock or before-module-lock"
                        ))
                    }
                }
            }
            "--format" => {
                parsed.format = match value("--format")?.as_str() {
                    "text" => Format::Text,
                    "json" => Format::Json,
                    other => return Err(format!("unknown format `{other}`: use text or json")),
                }
            }
            "--selftest" if inline.is_none() => parsed.selftest = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(parsed)
}

/// The self-test line: `kernel-drift=none`, or the number of drifts and their names.
pub fn selftest_line(report: &eci_kernel_config::ProbeReport) -> String {
    let names: Vec<&str> = report
        .rows
        .iter()
        .filter(|r| matches!(r.status, ProbeStatus::Drift(_)))
        .map(|r| r.name.as_str())
        .collect();
    if names.is_empty() {
        "ECI-SELFTEST kernel-drift=none".to_string()
    } else {
        format!(
            "ECI-SELFTEST kernel-drift={}: {}",
            names.len(),
            names.join(", ")
        )
    }
}

/// Runs the probe with command-line `args` (without the program name); returns the exit code.
pub fn run(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(msg) if msg.is_empty() => {
            let _ = writeln!(out, "{USAGE}");
            return EXIT_OK;
        }
        Err(msg) => {
            let _ = writeln!(err, "eci-probe: {msg}\n{USAGE}");
            return EXIT_ERROR;
        }
    };
    let pins_path = args
        .pins
        .clone()
        .unwrap_or_else(|| args.root.join(IMAGE_PINS_PATH.trim_start_matches('/')));
    let failed = |out: &mut dyn Write, err: &mut dyn Write, what: &str, msg: String| {
        let _ = writeln!(err, "eci-probe: {msg}");
        // The self-test must never read a missing line as a pass: a probe that could not
        // run reports drift of unknown extent.
        if args.selftest {
            let _ = writeln!(out, "ECI-SELFTEST kernel-drift=unknown: {what}");
        }
        EXIT_ERROR
    };
    let text = match std::fs::read_to_string(&pins_path) {
        Ok(t) => t,
        Err(e) => {
            let msg = format!(
                "cannot read {}: {e}; the image writes it at build time",
                pins_path.display()
            );
            return failed(out, err, "no kernel pins file", msg);
        }
    };
    let image = match ImagePins::from_json(&text, &pins_path.display().to_string()) {
        Ok(p) => p,
        Err(e) => return failed(out, err, "unreadable kernel pins file", e.to_string()),
    };
    let pins = match image.pins() {
        Ok(p) => p,
        Err(e) => return failed(out, err, "unknown kernel pins", e.to_string()),
    };
    let report = match probe_running_kernel(&args.root, &pins, &image.probe_options(args.phase)) {
        Ok(r) => r,
        Err(e) => return failed(out, err, "cannot read /proc", e.to_string()),
    };
    let detail = match args.format {
        Format::Text => report.render_table(),
        Format::Json => format!("{}\n", report.to_json()),
    };
    if args.selftest {
        let _ = writeln!(out, "{}", selftest_line(&report));
        if !report.is_ok() {
            let _ = write!(err, "{detail}");
        }
    } else {
        let _ = write!(out, "{detail}");
    }
    if report.is_ok() {
        EXIT_OK
    } else {
        EXIT_DRIFT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments_parse_with_and_without_equals() {
        let a = parse_args(&args(&[
            "--root=/tmp/x",
            "--phase",
            "before-module-lock",
            "--format=json",
            "--selftest",
        ]))
        .unwrap();
        assert_eq!(a.root, PathBuf::from("/tmp/x"));
        assert_eq!(a.phase, Phase::BeforeModuleLock);
        assert_eq!(a.format, Format::Json);
        assert!(a.selftest);
        assert!(a.pins.is_none());
        let d = parse_args(&[]).unwrap();
        assert_eq!(d.phase, Phase::AfterModuleLock);
        assert_eq!(d.root, PathBuf::from("/"));
    }

    #[test]
    fn bad_arguments_exit_2_with_the_reason() {
        for (list, needle) in [
            (&["--phase", "later"][..], "unknown phase `later`"),
            (&["--root"][..], "--root needs a value"),
            (&["--verbose"][..], "unknown argument `--verbose`"),
            (&["--selftest=yes"][..], "unknown argument `--selftest`"),
        ] {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            assert_eq!(run(&args(list), &mut out, &mut err), EXIT_ERROR);
            let err = String::from_utf8(err).unwrap();
            assert!(err.contains(needle), "{err}");
            assert!(err.contains("usage:"), "{err}");
        }
    }

    #[test]
    fn a_missing_pins_file_is_an_error_not_a_pass() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(&args(&["--root", root, "--selftest"]), &mut out, &mut err);
        assert_eq!(code, EXIT_ERROR);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            "ECI-SELFTEST kernel-drift=unknown: no kernel pins file\n"
        );
        let err = String::from_utf8(err).unwrap();
        assert!(err.contains("etc/eci/kernel-pins.json"), "{err}");
    }
}
