//! Logging in runc's shape. containerd reads the runtime's `--log` file (JSON lines with `level`,
//! `msg`, `time`) after a failed call and shows the last error to the docker user, so every
//! refusal has to end up there, not only on stderr.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

struct Logger {
    path: Option<String>,
    json: bool,
    debug: bool,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

pub fn init(path: Option<String>, json: bool, debug: bool) {
    let _ = LOGGER.set(Logger { path, json, debug });
}

/// RFC 3339 UTC time with nanoseconds, as runc's logrus writes it.
pub fn rfc3339(t: SystemTime) -> String {
    eci_facts::rfc3339(
        t.duration_since(UNIX_EPOCH).unwrap_or_default(),
        eci_facts::Precision::Nanos,
    )
}

fn write(level: &str, msg: &str) {
    let Some(l) = LOGGER.get() else {
        eprintln!("{level}: {msg}");
        return;
    };
    if level == "debug" && !l.debug {
        return;
    }
    let line = if l.json {
        serde_json::json!({"level": level, "msg": msg, "time": rfc3339(SystemTime::now())})
            .to_string()
    } else {
        format!(
            "time=\"{}\" level={level} msg={:?}",
            rfc3339(SystemTime::now()),
            msg
        )
    };
    match &l.path {
        Some(p) => {
            if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(p) {
                let _ = writeln!(f, "{line}");
            }
        }
        None => eprintln!("{line}"),
    }
}

pub fn error(msg: &str) {
    write("error", msg);
    // runc also prints fatal errors on stderr; containerd includes it when the log is empty.
    if LOGGER.get().is_some_and(|l| l.path.is_some()) {
        eprintln!("{msg}");
    }
}

pub fn warn(msg: &str) {
    write("warning", msg);
}

pub fn debug(msg: &str) {
    write("debug", msg);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.000000005Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000000000Z");
    }
}
