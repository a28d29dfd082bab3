//! The user's own settings and daemon options: the values an unlocked admin setting lets the
//! user change (SPEC S2).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::admin::{describe, parse_json, ProxySettings, Validator, PROXY_FIELDS};
use crate::error::SettingsError;
use crate::spans::{index, join};

/// What a user may ask for. `None` means "not set": the admin value or the built-in default
/// applies. The JSON shape uses the admin file's key names with plain values, e.g.
/// `{"exposeDockerAPIOnTCP2375": false, "filesharingDirectories": ["C:\\src"]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UserSettings {
    pub enhanced_container_isolation: Option<bool>,
    #[serde(rename = "exposeDockerAPIOnTCP2375")]
    pub expose_docker_api_on_tcp2375: Option<bool>,
    /// Host directories the user shares with the VM.
    pub filesharing_directories: Option<Vec<String>>,
    pub containers_proxy: Option<ProxySettings>,
    /// The host user's home directory, supplied by the host side, so that `$HOME`, `%HOME%`
    /// and `%USERPROFILE%` in file-sharing paths can be resolved.
    pub host_home: Option<String>,
}

impl UserSettings {
    /// Parse a user settings file. Keys eci does not use are ignored without a warning: a
    /// user's settings file holds many GUI preferences that are none of the VM's business.
    pub fn parse(text: &str, origin: &str) -> Result<UserSettings, SettingsError> {
        let root = parse_json(text, origin)?;
        let mut v = Validator::new(text, origin);
        let mut out = UserSettings::default();
        if let Some(m) = v.object("", &root, "the file must be one JSON object") {
            if let Some(x) = m.get("enhancedContainerIsolation") {
                out.enhanced_container_isolation = v.boolean("enhancedContainerIsolation", x);
            }
            if let Some(x) = m.get("exposeDockerAPIOnTCP2375") {
                out.expose_docker_api_on_tcp2375 = v.boolean("exposeDockerAPIOnTCP2375", x);
            }
            if let Some(x) = m.get("filesharingDirectories") {
                const P: &str = "filesharingDirectories";
                if let Some(items) = v.array(P, x, "directories") {
                    let dirs: Vec<Option<String>> = items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| v.string(&index(P, i), item))
                        .collect();
                    out.filesharing_directories = dirs.into_iter().collect();
                }
            }
            if let Some(x) = m.get("containersProxy") {
                const P: &str = "containersProxy";
                if let Some(pm) = v.object(P, x, "write {\"mode\": \"manual\", \"http\": \"...\"}")
                {
                    for k in pm.keys().filter(|k| !PROXY_FIELDS.contains(&k.as_str())) {
                        v.problem(
                            &join(P, k),
                            "not a proxy field",
                            format!("use only {}", PROXY_FIELDS.join(", ")),
                        );
                    }
                    out.containers_proxy = v.proxy_fields(P, pm);
                }
            }
            if let Some(x) = m.get("hostHome") {
                out.host_home = v.string("hostHome", x);
            }
        }
        v.finish(out).map(|(s, _)| s)
    }

    pub fn load(path: &Path) -> Result<UserSettings, SettingsError> {
        let text = read(path)?;
        UserSettings::parse(&text, &path.display().to_string())
    }
}

/// Parse a user's daemon.json (the "Docker Engine" settings): a JSON object.
pub fn parse_daemon_options(text: &str, origin: &str) -> Result<Map<String, Value>, SettingsError> {
    let root = parse_json(text, origin)?;
    match root {
        Value::Object(m) => Ok(m),
        other => {
            let mut v = Validator::new(text, origin);
            v.problem(
                "",
                format!(
                    "daemon options must be a JSON object, found {}",
                    describe(&other)
                ),
                "write an object such as {\"debug\": false}",
            );
            v.finish(Map::new()).map(|(m, _)| m)
        }
    }
}

pub(crate) fn read(path: &Path) -> Result<String, SettingsError> {
    std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::ProxyMode;

    #[test]
    fn parses_user_values_and_ignores_gui_preferences() {
        let text = r#"{
  "enhancedContainerIsolation": false,
  "exposeDockerAPIOnTCP2375": true,
  "filesharingDirectories": ["C:\\src", "/tmp"],
  "containersProxy": {"mode": "manual", "http": "http://proxy:3128"},
  "hostHome": "C:\\Users\\me",
  "theme": "dark"
}"#;
        let u = UserSettings::parse(text, "settings.json").unwrap();
        assert_eq!(u.enhanced_container_isolation, Some(false));
        assert_eq!(u.expose_docker_api_on_tcp2375, Some(true));
        assert_eq!(
            u.filesharing_directories,
            Some(vec!["C:\\src".into(), "/tmp".into()])
        );
        let p = u.containers_proxy.unwrap();
        assert_eq!(p.mode, ProxyMode::Manual);
        assert_eq!(p.http, "http://proxy:3128");
        assert_eq!(u.host_home.as_deref(), Some("C:\\Users\\me"));
    }

    #[test]
    fn wrong_user_types_are_located() {
        let err = UserSettings::parse("{\n \"exposeDockerAPIOnTCP2375\": \"yes\"}", "s.json")
            .unwrap_err();
        let p = &err.problems()[0];
        assert_eq!(p.key, "exposeDockerAPIOnTCP2375");
        assert_eq!((p.location.line, p.location.column), (2, 30));
        let err =
            UserSettings::parse("{\"containersProxy\": {\"htp\": \"x\"}}", "s.json").unwrap_err();
        assert_eq!(err.problems()[0].key, "containersProxy.htp");
    }

    #[test]
    fn daemon_options_must_be_an_object() {
        assert_eq!(
            parse_daemon_options("{\"debug\": true}", "daemon.json").unwrap()["debug"],
            Value::Bool(true)
        );
        let err = parse_daemon_options("[1]", "daemon.json").unwrap_err();
        assert!(
            err.to_string()
                .contains("daemon.json:1:1: : daemon options must be a JSON object"),
            "{err}"
        );
        assert!(matches!(
            parse_daemon_options("{\"debug\": }", "daemon.json"),
            Err(SettingsError::Syntax { .. })
        ));
    }
}
