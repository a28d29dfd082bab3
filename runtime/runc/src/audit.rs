//! eci-runc's audit log (SPEC S5): each of its own refusals (a spec or an exec the isolation
//! rules refuse) and the device rewrite of `--privileged` as one JSON line, in eci-guard's
//! record shape (`runtime/guard/src/audit.rs`, `Record`: `time` RFC 3339 UTC with
//! milliseconds, `event`, `decision`, `rules` as SPEC items, `message`, `notes`), plus the
//! `container` the decision was about. The runtime does not depend on the guard crate; a unit
//! test reads the guard's `Record` and checks that the field names still match.
//!
//! Where: `ECI_RUNC_AUDIT_LOG`, else policy.json's `eciRunc.auditLog`, else
//! `eci_facts::vm_paths::RUNC_AUDIT_LOG` on the data disk (the /var/log tmpfs would lose it at a
//! reboot). Each line is one `write(2)` on an `O_APPEND` file, so concurrent runtimes never
//! interleave; past `eciRunc.auditLogMaxBytes` the file is renamed to `<file>.1` under an
//! exclusive `flock`, and a writer that waited for the lock on the renamed file opens the new
//! one instead.
//!
//! Refusals are plain `String` errors by the time they reach `main`, so the site that refuses
//! notes the rule ([`refusal`]) and `main` writes the record when that very message ends the
//! command ([`flush`]); errors that are not refusals (a missing bundle, a failed syscall) are
//! not audit events.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use eci_policy::{Policy, PolicyError};
use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;

/// Overrides the audit log's path (tests; a VM uses policy.json or the default).
pub const ENV: &str = "ECI_RUNC_AUDIT_LOG";

/// One audit line. Field names and meanings follow eci-guard's `Record`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Record {
    /// RFC 3339, UTC, milliseconds (the guard's format).
    pub time: String,
    /// The runtime command: `create`, `exec`.
    pub event: String,
    /// The container the decision is about (the runtime's addition to the guard's shape).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// `refuse`, or `rewrite` for what the runtime changed instead of failing.
    pub decision: &'static str,
    /// SPEC items behind the decision.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<&'static str>,
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Where records go and when the file is rotated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sink {
    pub path: PathBuf,
    pub max_bytes: u64,
}

impl Sink {
    pub fn from_policy(p: &Policy) -> Sink {
        Sink {
            path: std::env::var_os(ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(&p.audit_log)),
            max_bytes: p.audit_log_max_bytes,
        }
    }

    /// Append `record` as one line. A failure is reported on the runtime's log and does not
    /// change the decision (the container is refused either way).
    pub fn write(&self, record: &Record) {
        let mut line = serde_json::to_vec(record).expect("a record serialises");
        line.push(b'\n');
        if let Err(e) = append(&self.path, self.max_bytes, &line) {
            crate::log::warn(&format!(
                "cannot write the audit log {}: {e}; the decision stands but is not recorded (SPEC S5)",
                self.path.display()
            ));
        }
    }
}

fn append(path: &Path, max_bytes: u64, line: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    // A few rounds: each one either writes or sees the file rotated under it.
    for _ in 0..8 {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        // Released when the lock (and with it the file) is dropped.
        let mut f = Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))?;
        let held = f.metadata()?;
        // Renamed to .1 while we waited for the lock: write to the new file instead.
        match fs::metadata(path) {
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {}
            _ => continue,
        }
        if held.len() > 0 && held.len() + line.len() as u64 > max_bytes {
            let mut old = path.as_os_str().to_owned();
            old.push(".1");
            fs::rename(path, &old)?;
            continue;
        }
        // One write(2): with O_APPEND the kernel places the whole line at the end.
        let n = f.write(line)?;
        if n != line.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write ({n} of {} bytes)", line.len()),
            ));
        }
        return Ok(());
    }
    Err(io::Error::other("the file kept being rotated under us"))
}

/// RFC 3339 UTC with milliseconds, as the guard writes it.
pub fn now_millis() -> String {
    eci_facts::rfc3339(
        SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
        eci_facts::Precision::Millis,
    )
}

struct Pending {
    event: String,
    container: Option<String>,
    sink: Option<Sink>,
    refusal: Option<(Vec<&'static str>, String)>,
}

static PENDING: Mutex<Pending> = Mutex::new(Pending {
    event: String::new(),
    container: None,
    sink: None,
    refusal: None,
});

fn pending() -> std::sync::MutexGuard<'static, Pending> {
    PENDING.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the command is about, and where its records go (once the policy is loaded).
pub fn begin(event: &str, container: &str, policy: &Policy) {
    let mut p = pending();
    p.event = event.to_string();
    p.container = Some(container.to_string());
    p.sink = Some(Sink::from_policy(policy));
}

/// Note a refusal by eci-policy's rules and give its message as the command's error.
pub fn refusal(e: PolicyError) -> String {
    refuse(e.rules(), e.to_string())
}

/// Note a refusal by the runtime's own checks (SPEC items in `rules`).
pub fn refuse(rules: &[&'static str], message: String) -> String {
    pending().refusal = Some((rules.to_vec(), message.clone()));
    message
}

/// Record a rewrite (the runtime changed the spec instead of failing) right away.
pub fn rewrite(rules: &[&'static str], message: &str) {
    let p = pending();
    let Some(sink) = p.sink.clone() else {
        return;
    };
    let r = Record {
        time: now_millis(),
        event: p.event.clone(),
        container: p.container.clone(),
        decision: "rewrite",
        rules: rules.to_vec(),
        message: Some(message.to_string()),
        notes: Vec::new(),
    };
    drop(p);
    sink.write(&r);
}

/// The command ends with `error`: if that is the noted refusal, write its record.
pub fn flush(error: &str) {
    let mut p = pending();
    let Some((rules, message)) = p.refusal.take() else {
        return;
    };
    if message != error {
        return;
    }
    let sink = p
        .sink
        .clone()
        .unwrap_or_else(|| Sink::from_policy(&Policy::default()));
    let r = Record {
        time: now_millis(),
        event: p.event.clone(),
        container: p.container.clone(),
        decision: "refuse",
        rules,
        message: Some(message),
        notes: Vec::new(),
    };
    drop(p);
    sink.write(&r);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(msg: &str) -> Record {
        Record {
            time: now_millis(),
            event: "create".into(),
            container: Some("c1".into()),
            decision: "refuse",
            rules: vec!["P5"],
            message: Some(msg.into()),
            notes: Vec::new(),
        }
    }

    #[test]
    fn time_is_rfc3339_with_milliseconds() {
        let t = now_millis();
        assert_eq!(t.len(), "2026-11-29T00:07:37.123Z".len(), "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
    }

    /// The fields eci-runc writes are the guard's (`runtime/guard/src/audit.rs`), so one
    /// reader handles both logs; `container` is the runtime's only addition.
    #[test]
    fn fields_match_the_guards_record() {
        let guard = include_str!("../../guard/src/audit.rs");
        let start = guard
            .find("pub struct Record {")
            .expect("the guard's Record");
        let body = &guard[start..start + guard[start..].find("\n}").unwrap()];
        let guard_fields: Vec<&str> = body
            .lines()
            .filter_map(|l| l.trim().strip_prefix("pub "))
            .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim()))
            .collect();
        let v = serde_json::to_value(record("x")).unwrap();
        for k in v.as_object().unwrap().keys() {
            assert!(
                k == "container" || guard_fields.contains(&k.as_str()),
                "field {k} is not in the guard's Record {guard_fields:?}"
            );
        }
        // The guard's fields that are always present are present here too.
        for k in ["time", "event", "decision", "message", "rules"] {
            assert!(guard_fields.contains(&k), "{k} left the guard's Record");
            assert!(v.get(k).is_some(), "{k} missing: {v}");
        }
        assert_eq!(v["decision"], "refuse");
        assert_eq!(v["rules"][0], "P5");
    }

    #[test]
    fn lines_are_whole_json_and_the_file_rotates_by_size() {
        let d = tempfile::tempdir().unwrap();
        let sink = Sink {
            path: d.path().join("audit/eci-runc.log"),
            max_bytes: 600,
        };
        sink.write(&record("first\nwith a newline"));
        let text = fs::read_to_string(&sink.path).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["message"], "first\nwith a newline");
        let mode = fs::metadata(&sink.path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        for i in 0..10 {
            sink.write(&record(&format!("line {i}")));
        }
        let old = d.path().join("audit/eci-runc.log.1");
        let cur = fs::read_to_string(&sink.path).unwrap();
        let prev = fs::read_to_string(&old).unwrap();
        assert!(cur.len() as u64 <= 600 && prev.len() as u64 <= 600);
        assert!(cur.contains("line 9"), "{cur}");
        for l in cur.lines().chain(prev.lines()) {
            serde_json::from_str::<serde_json::Value>(l).unwrap();
        }
    }

    /// Several processes appending at once (threads stand in for runtimes; each line is
    /// still one write on its own descriptor): no line is torn or lost without rotation.
    #[test]
    fn concurrent_writers_do_not_interleave() {
        let d = tempfile::tempdir().unwrap();
        let sink = Sink {
            path: d.path().join("a.log"),
            max_bytes: 1 << 30,
        };
        let long = "x".repeat(3000);
        std::thread::scope(|s| {
            for t in 0..8 {
                let sink = sink.clone();
                let long = long.clone();
                s.spawn(move || {
                    for i in 0..25 {
                        sink.write(&record(&format!("{t}-{i}-{long}")));
                    }
                });
            }
        });
        let text = fs::read_to_string(&sink.path).unwrap();
        assert_eq!(text.lines().count(), 200);
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(v["message"].as_str().unwrap().ends_with(&long));
        }
    }

    #[test]
    fn refusals_are_written_only_for_the_error_that_ends_the_command() {
        let d = tempfile::tempdir().unwrap();
        let policy = Policy {
            audit_log: d.path().join("r.log").display().to_string(),
            ..Policy::default()
        };
        // Not under test here: the environment override (other tests may run at once).
        let sink = Sink {
            path: PathBuf::from(&policy.audit_log),
            max_bytes: policy.audit_log_max_bytes,
        };
        {
            let mut p = pending();
            p.event = "create".into();
            p.container = Some("c9".into());
            p.sink = Some(sink.clone());
        }
        let msg = refusal(PolicyError::CgroupPathDots("/docker/..".into()));
        flush("some other error");
        assert!(!sink.path.exists());
        let msg2 = refusal(PolicyError::CgroupPathDots("/docker/../x".into()));
        assert_ne!(msg, msg2);
        flush(&msg2);
        let text = fs::read_to_string(&sink.path).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["event"], "create");
        assert_eq!(v["container"], "c9");
        assert_eq!(v["decision"], "refuse");
        assert_eq!(v["rules"], serde_json::json!(["P5"]));
        assert_eq!(v["message"], msg2);
        // Flushed once.
        flush(&msg2);
        assert_eq!(fs::read_to_string(&sink.path).unwrap().lines().count(), 1);
    }
}
