//! The services eci-init starts, from `/etc/eci/services.json` (rendered from
//! vm-config/templates/services.json.tera). A service is added to the VM by listing it; one
//! whose program is not in the image is skipped with a console message (so the list can name
//! services that land later without the VM crash-looping).
//!
//! ```json
//! {"services": [
//!   {"name": "containerd",
//!    "command": ["/usr/bin/containerd", "--config", "/etc/containerd/config.toml"],
//!    "ready": {"unix_socket": "/run/containerd/containerd.sock"},
//!    "ready_timeout_seconds": 60, "stop_timeout_seconds": 10}
//! ]}
//! ```
//!
//! A service starts once the services it waits for are ready (or their readiness timed out):
//! by default the one listed just before it, so the list is a chain; `"after": [names]` names
//! them instead (only services listed earlier, so the list order stays a valid start order),
//! and `"after": []` starts it with the first. A service that connects to another on its own
//! (dockerd waits for containerd's socket) can so start alongside it: under TCG each program's
//! start-up costs seconds, and overlapping them shortens the boot (issue 13). They stop in
//! reverse list order.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicesFile {
    pub services: Vec<ServiceSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Also names its log: /var/log/eci/NAME.log.
    pub name: String,
    /// Program (absolute path) and arguments; no shell is involved.
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub ready: Readiness,
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout_seconds: u64,
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout_seconds: u64,
    /// The services, listed earlier, whose readiness it waits for before its first start;
    /// `None`: the one listed just before it.
    #[serde(default)]
    pub after: Option<Vec<String>>,
}

fn default_ready_timeout() -> u64 {
    60
}
fn default_stop_timeout() -> u64 {
    10
}

impl ServiceSpec {
    pub fn program(&self) -> PathBuf {
        PathBuf::from(&self.command[0])
    }
    pub fn ready_timeout(&self) -> Duration {
        Duration::from_secs(self.ready_timeout_seconds)
    }
    pub fn stop_timeout(&self) -> Duration {
        Duration::from_secs(self.stop_timeout_seconds)
    }
}

/// How eci-init knows a service is up before starting the next one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Readiness {
    /// Ready once started.
    #[default]
    None,
    /// A unix socket accepts a connection (containerd's gRPC socket).
    UnixSocket(PathBuf),
    /// `GET path` over a unix socket answers 200 (dockerd's `/_ping`).
    HttpUnix { socket: PathBuf, path: String },
    /// A file exists.
    Path(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    #[error("{file}: {message}; fix the file (vm-config/templates/services.json.tera)")]
    Parse { file: String, message: String },
    #[error("{file}: services[{index}].{field}: {message}")]
    Invalid {
        file: String,
        index: usize,
        field: &'static str,
        message: String,
    },
}

impl ServicesFile {
    pub fn parse(text: &str, file: &str) -> Result<ServicesFile, ServicesError> {
        let parsed: ServicesFile =
            serde_json::from_str(text).map_err(|e| ServicesError::Parse {
                file: file.to_string(),
                message: e.to_string(),
            })?;
        let invalid = |index, field, message: String| ServicesError::Invalid {
            file: file.to_string(),
            index,
            field,
            message,
        };
        let mut seen = std::collections::BTreeSet::new();
        for (i, s) in parsed.services.iter().enumerate() {
            let name_ok = !s.name.is_empty()
                && s.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !name_ok {
                return Err(invalid(
                    i,
                    "name",
                    format!(
                        "{:?} must be letters, digits, - or _ (it names the log file)",
                        s.name
                    ),
                ));
            }
            if !seen.insert(s.name.clone()) {
                return Err(invalid(i, "name", format!("{:?} is listed twice", s.name)));
            }
            match s.command.first() {
                Some(p) if p.starts_with('/') => {}
                _ => {
                    return Err(invalid(
                        i,
                        "command",
                        "must start with the program's absolute path".into(),
                    ))
                }
            }
            if let Readiness::HttpUnix { path, .. } = &s.ready {
                if !path.starts_with('/') || path.contains(char::is_whitespace) {
                    return Err(invalid(
                        i,
                        "ready.http_unix.path",
                        format!("{path:?} must be an absolute request path without spaces"),
                    ));
                }
            }
            for dep in s.after.iter().flatten() {
                if !parsed.services[..i].iter().any(|e| &e.name == dep) {
                    return Err(invalid(
                        i,
                        "after",
                        format!("{dep:?} is not a service listed before this one (services start in list order and stop in reverse)"),
                    ));
                }
            }
            if s.ready_timeout_seconds == 0 || s.stop_timeout_seconds == 0 {
                return Err(invalid(
                    i,
                    "ready_timeout_seconds",
                    "timeouts must be at least 1 second".into(),
                ));
            }
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The template with its leading Tera comment removed (it renders to exactly this).
    fn shipped() -> &'static str {
        let t = include_str!("../../../vm-config/templates/services.json.tera");
        t.split_once("-#}").map_or(t, |(_, rest)| rest)
    }

    #[test]
    fn the_shipped_list_starts_the_engine_in_order_on_the_configured_sockets() {
        let f = ServicesFile::parse(shipped(), "services.json").unwrap();
        let names: Vec<&str> = f.services.iter().map(|s| s.name.as_str()).collect();
        // The mount-vetting supervisor and the /proc views server are up before any container
        // can start (SPEC M5, F1).
        assert_eq!(
            &names[..4],
            &["eci-supervisor", "eci-views", "containerd", "dockerd"]
        );
        assert_eq!(
            f.services[0].command[1..],
            ["serve", "--socket", "/run/eci/supervisor.sock"]
        );
        let containerd = &f.services[2];
        assert_eq!(
            containerd.ready,
            Readiness::UnixSocket(eci_vm_config::CONTAINERD_SOCKET.into())
        );
        assert!(containerd
            .command
            .windows(2)
            .any(|w| w == ["--config", eci_vm_config::CONTAINERD_CONFIG_PATH]));
        let dockerd = &f.services[3];
        assert_eq!(
            dockerd.ready,
            Readiness::HttpUnix {
                socket: eci_vm_config::DOCKERD_SOCKET.into(),
                path: "/_ping".into()
            }
        );
        // daemon.json owns hosts, group and containerd: a flag repeating one of its keys makes
        // dockerd refuse to start (vm-config/README.md). The file is the image's daemon.json
        // plus the writable trust-key path (crate::engine).
        assert_eq!(
            dockerd.command[1..],
            ["--config-file", crate::engine::RUN_DAEMON_JSON]
        );
        // Started together where nothing depends on the order (issue 13): containerd with the
        // first service; dockerd, the only client creating containers, once the mount-vetting
        // supervisor and the views server are up (it waits for containerd's socket itself).
        assert_eq!(containerd.after, Some(vec![]));
        assert_eq!(
            dockerd.after,
            Some(vec!["eci-supervisor".to_string(), "eci-views".to_string()])
        );
        if let Some(guard) = f.services.iter().position(|s| s.name == "eci-guard") {
            assert!(
                guard > 3,
                "the guard proxies dockerd, so it starts after it"
            );
        }
    }

    #[test]
    fn mistakes_name_the_entry_and_field() {
        let e = ServicesFile::parse(r#"{"services":[{"name":"a","command":["rel"]}]}"#, "s.json")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "s.json: services[0].command: must start with the program's absolute path"
        );
        let e = ServicesFile::parse(
            r#"{"services":[{"name":"a","command":["/a"]},{"name":"a","command":["/b"]}]}"#,
            "s.json",
        )
        .unwrap_err();
        assert!(e.to_string().contains("services[1].name"), "{e}");
        let e = ServicesFile::parse(
            r#"{"services":[{"name":"a/b","command":["/a"]}]}"#,
            "s.json",
        )
        .unwrap_err();
        assert!(e.to_string().contains("log file"), "{e}");
        let e = ServicesFile::parse(
            r#"{"services":[{"name":"a","command":["/a"],"ready":{"tcp":1}}]}"#,
            "s.json",
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("s.json: unknown variant `tcp`"),
            "{e}"
        );
    }

    #[test]
    fn after_names_only_services_listed_before() {
        let f = ServicesFile::parse(
            r#"{"services":[{"name":"a","command":["/a"]},{"name":"b","command":["/b"],"after":[]},{"name":"c","command":["/c"],"after":["a","b"]}]}"#,
            "s.json",
        )
        .unwrap();
        assert_eq!(f.services[0].after, None);
        assert_eq!(f.services[1].after, Some(vec![]));
        assert_eq!(f.services[2].after, Some(vec!["a".into(), "b".into()]));
        for after in [r#"["b"]"#, r#"["a"]"#, r#"["nope"]"#] {
            let text = format!(
                r#"{{"services":[{{"name":"a","command":["/a"],"after":{after}}},{{"name":"b","command":["/b"]}}]}}"#
            );
            let e = ServicesFile::parse(&text, "s.json").unwrap_err();
            assert!(
                e.to_string().starts_with("s.json: services[0].after: ")
                    && e.to_string()
                        .contains("not a service listed before this one"),
                "{after}: {e}"
            );
        }
    }

    #[test]
    fn defaults() {
        let f =
            ServicesFile::parse(r#"{"services":[{"name":"a","command":["/a"]}]}"#, "s").unwrap();
        assert_eq!(f.services[0].ready, Readiness::None);
        assert_eq!(f.services[0].ready_timeout(), Duration::from_secs(60));
        assert_eq!(f.services[0].stop_timeout(), Duration::from_secs(10));
    }
}
