//! The audit log (SPEC S5): one JSON object per line for every decision.
//!
//! Each line is written as its request is decided (see [`AuditLog`]).

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// One audit line.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Record {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    /// `request` for API calls; `settings`, `pin`, `start` for the guard's own events.
    pub event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `allow`, `rewrite`, `refuse` (or `info`/`error` for guard events).
    pub decision: &'static str,
    /// The status the client got: the guard's for refusals, dockerd's otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// SPEC items behind the decision.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<&'static str>,
    /// The error message for refusals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Record {
    pub fn event(
        event: &'static str,
        decision: &'static str,
        message: impl Into<String>,
    ) -> Record {
        Record {
            time: now_rfc3339(),
            event,
            listener: None,
            socket: None,
            peer_pid: None,
            peer_uid: None,
            method: None,
            path: None,
            decision,
            status: None,
            rules: Vec::new(),
            message: Some(message.into()),
            notes: Vec::new(),
        }
    }
}

/// Shared by every connection. Each line is one `write(2)` on an `O_APPEND` file: on disk (in
/// the page cache) when the request's answer goes out, whole even with concurrent writers, and
/// cheaper than waking a writer thread on every request.
#[derive(Clone)]
pub struct AuditLog {
    sink: Arc<Mutex<Sink>>,
    failed: Arc<AtomicBool>,
}

/// Where lines go; a file is rotated by size (the log lives on the data disk and must not fill
/// it): past the limit it becomes `<file>.1` (replacing the previous one) and a new file starts.
struct Sink {
    out: Box<dyn Write + Send>,
    file: Option<Rotation>,
}

struct Rotation {
    path: PathBuf,
    written: u64,
    max_bytes: u64,
}

/// The default size at which the guard's audit log is rotated.
pub const DEFAULT_MAX_BYTES: u64 = 8 << 20;

fn open_append(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

impl AuditLog {
    /// Append to `path` (`-` for standard output), rotating at [`DEFAULT_MAX_BYTES`].
    pub fn open(path: &Path) -> io::Result<AuditLog> {
        Self::open_rotating(path, DEFAULT_MAX_BYTES)
    }

    /// Append to `path` (`-` for standard output), rotating past `max_bytes`.
    pub fn open_rotating(path: &Path, max_bytes: u64) -> io::Result<AuditLog> {
        let sink = if path == Path::new("-") {
            Sink {
                out: Box::new(io::stdout()),
                file: None,
            }
        } else {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let file = open_append(path)?;
            let written = file.metadata()?.len();
            Sink {
                out: Box::new(file),
                file: Some(Rotation {
                    path: path.to_path_buf(),
                    written,
                    max_bytes,
                }),
            }
        };
        Ok(AuditLog {
            sink: Arc::new(Mutex::new(sink)),
            failed: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn write(&self, record: &Record) {
        let mut line = serde_json::to_vec(record).unwrap_or_else(|e| {
            format!("{{\"event\":\"error\",\"message\":\"unserialisable record: {e}\"}}")
                .into_bytes()
        });
        line.push(b'\n');
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        let ok = sink.rotate_for(line.len() as u64).is_ok()
            && sink
                .out
                .write_all(&line)
                .and_then(|_| sink.out.flush())
                .is_ok();
        if ok {
            if let Some(r) = sink.file.as_mut() {
                r.written += line.len() as u64;
            }
        }
        // Report the first failure and the recovery, not every line in between.
        if self.failed.swap(!ok, Ordering::Relaxed) == ok {
            if ok {
                eprintln!("eci-guard: the audit log is writable again");
            } else {
                eprintln!(
                    "eci-guard: cannot write the audit log; decisions go on but are not recorded"
                );
            }
        }
    }
}

impl Sink {
    /// Starts a new file first when `len` more bytes would pass the limit (a single line
    /// longer than the limit still goes into a file of its own).
    fn rotate_for(&mut self, len: u64) -> io::Result<()> {
        let Some(r) = self.file.as_mut() else {
            return Ok(());
        };
        if r.written == 0 || r.written + len <= r.max_bytes {
            return Ok(());
        }
        let mut old = r.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&r.path, &old)?;
        self.out = Box::new(open_append(&r.path)?);
        r.written = 0;
        Ok(())
    }
}

/// `2026-11-29T00:07:37.123Z`
pub fn now_rfc3339() -> String {
    eci_facts::rfc3339(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
        eci_facts::Precision::Millis,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_millisecond_utc_time() {
        let t = now_rfc3339();
        assert_eq!(t.len(), "2026-11-29T00:07:37.123Z".len(), "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
    }

    /// The log lives on the data disk: past its size limit it becomes `<file>.1` and a new
    /// file starts, so at most two files' worth is kept.
    #[test]
    fn the_log_is_rotated_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("guard.log");
        let log = AuditLog::open_rotating(&path, 400).unwrap();
        for i in 0..10 {
            log.write(&Record::event("request", "allow", format!("line {i}")));
        }
        let current = std::fs::read_to_string(&path).unwrap();
        let old = std::fs::read_to_string(dir.path().join("guard.log.1")).unwrap();
        assert!(current.len() <= 400 && old.len() <= 400, "{current}\n{old}");
        assert!(current.contains("line 9"), "{current}");
        assert!(!current.contains("line 0") && !old.contains("line 0"));
        for text in [&current, &old] {
            for l in text.lines() {
                serde_json::from_str::<serde_json::Value>(l).expect("whole lines");
            }
        }
        // Reopening goes on from the file's size.
        drop(log);
        let log = AuditLog::open_rotating(&path, 400).unwrap();
        log.write(&Record::event("start", "info", "again"));
        let all = std::fs::read_to_string(&path).unwrap()
            + &std::fs::read_to_string(dir.path().join("guard.log.1")).unwrap();
        assert!(all.contains("again"));
    }

    #[test]
    fn records_are_single_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path).unwrap();
        let mut r = Record::event("request", "refuse", "can't mount /etc\nbecause");
        r.rules = vec!["B2"];
        r.status = Some(403);
        log.write(&r);
        log.write(&Record::event("start", "info", "listening"));
        let mut text = String::new();
        for _ in 0..200 {
            text = std::fs::read_to_string(&path).unwrap();
            if text.lines().count() == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["decision"], "refuse");
        assert_eq!(v["rules"][0], "B2");
        assert_eq!(v["status"], 403);
        assert!(v.get("listener").is_none());
    }
}
