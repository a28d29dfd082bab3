//! The VM files rendered for the effective settings: dockerd's and containerd's configuration
//! from the templates in `vm-config/templates/`, and `/etc/eci/policy.json` written with
//! serde_json from its one type ([`eci_policy::PolicyFile`]), so the writer and the readers
//! cannot disagree on a field.
//!
//! The templates are compiled into the library so the VM side (which re-renders when admin
//! settings change) needs no template directory; `TEMPLATES_DIR` points at the same files for
//! tools that show or package them. Every rendered file is parsed back before it is returned,
//! so a broken template fails here rather than when dockerd or containerd start.

use std::path::PathBuf;

use serde_json::Value;
use tera::{Context, Tera};

use crate::error::SettingsError;
use crate::merge::Effective;
use crate::policy::policy_file;
use crate::{
    CONTAINERD_CONFIG_PATH, CONTAINERD_ROOT, CONTAINERD_SOCKET, CONTAINERD_STATE, DAEMON_JSON_PATH,
    ECI_RUNC_PATH, ECI_RUNTIME_NAME, POLICY_PATH,
};

/// One file to place in the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmFile {
    /// Absolute path inside the VM.
    pub path: PathBuf,
    pub contents: String,
    /// Unix permission bits.
    pub mode: u32,
}

impl From<VmFile> for (PathBuf, String, u32) {
    fn from(f: VmFile) -> Self {
        (f.path, f.contents, f.mode)
    }
}

enum Check {
    Json,
    Toml,
}

/// (template file, VM path, mode, how to check the output)
const FILES: &[(&str, &str, u32, Check)] = &[
    // Daemon options may carry proxy credentials; only root (dockerd) needs to read them.
    ("daemon.json.tera", DAEMON_JSON_PATH, 0o600, Check::Json),
    (
        "containerd-config.toml.tera",
        CONTAINERD_CONFIG_PATH,
        0o644,
        Check::Toml,
    ),
];

/// policy.json holds the containers' proxy settings (possibly with credentials) and the
/// socket policy: root only.
const POLICY_MODE: u32 = 0o600;

const TEMPLATES: &[(&str, &str)] = &[
    (
        "daemon.json.tera",
        include_str!("../templates/daemon.json.tera"),
    ),
    (
        "containerd-config.toml.tera",
        include_str!("../templates/containerd-config.toml.tera"),
    ),
];

fn tera() -> Result<Tera, SettingsError> {
    let mut t = Tera::default();
    t.add_raw_templates(TEMPLATES.iter().copied())
        .map_err(|e| SettingsError::Render {
            template: "templates/*.tera".into(),
            file: String::new(),
            message: chain(&e),
        })?;
    Ok(t)
}

/// tera's top-level message is generic ("Failed to render ..."); the cause is in the chain.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

fn context(eff: &Effective) -> Context {
    let mut c = Context::new();
    c.insert("daemon_json", &eff.daemon_json);
    c.insert("runtime_name", ECI_RUNTIME_NAME);
    c.insert("runtime_path", ECI_RUNC_PATH);
    c.insert("containerd_socket", CONTAINERD_SOCKET);
    c.insert("containerd_root", CONTAINERD_ROOT);
    c.insert("containerd_state", CONTAINERD_STATE);
    c
}

/// Render daemon.json, containerd's config.toml and the guard/runtime policy for `eff`.
pub fn render_vm_files(eff: &Effective) -> Result<Vec<VmFile>, SettingsError> {
    let t = tera()?;
    let ctx = context(eff);
    let mut out = Vec::new();
    for (template, path, mode, check) in FILES {
        let render_err = |message: String| SettingsError::Render {
            template: (*template).to_string(),
            file: (*path).to_string(),
            message,
        };
        let rendered = t
            .render(template, &ctx)
            .map_err(|e| render_err(chain(&e)))?;
        // The leading comment block of a template leaves its line break behind.
        let mut contents = rendered.trim_start_matches(['\n', '\r']).to_string();
        if !contents.ends_with('\n') {
            contents.push('\n');
        }
        match check {
            Check::Json => serde_json::from_str::<Value>(&contents)
                .map(drop)
                .map_err(|e| render_err(format!("output is not valid JSON: {e}")))?,
            Check::Toml => toml::from_str::<toml::Value>(&contents)
                .map(drop)
                .map_err(|e| render_err(format!("output is not valid TOML: {e}")))?,
        }
        out.push(VmFile {
            path: PathBuf::from(path),
            contents,
            mode: *mode,
        });
    }
    out.push(VmFile {
        path: PathBuf::from(POLICY_PATH),
        contents: policy_file(eff).to_json(),
        mode: POLICY_MODE,
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::AdminSettings;
    use crate::merge::effective;
    use crate::user::UserSettings;
    use serde_json::json;
    use std::path::Path;

    fn files(admin: &str, user_daemon: Option<Value>) -> Vec<VmFile> {
        let (a, _) = AdminSettings::parse(admin, "a.json").unwrap();
        render_vm_files(&effective(&a, &UserSettings::default(), user_daemon)).unwrap()
    }

    fn file<'f>(files: &'f [VmFile], path: &str) -> &'f VmFile {
        files.iter().find(|f| f.path == Path::new(path)).unwrap()
    }

    #[test]
    fn renders_three_files_at_their_vm_paths() {
        let f = files("{}", None);
        let paths: Vec<(&str, u32)> = f
            .iter()
            .map(|f| (f.path.to_str().unwrap(), f.mode))
            .collect();
        assert_eq!(
            paths,
            vec![
                ("/etc/docker/daemon.json", 0o600),
                ("/etc/containerd/config.toml", 0o644),
                ("/etc/eci/policy.json", 0o600),
            ]
        );
        assert!(f.iter().all(|f| f.contents.ends_with('\n')));
        assert!(f.iter().all(|f| !f.contents.starts_with('\n')));
        let (p, _, m): (PathBuf, String, u32) = f[0].clone().into();
        assert_eq!((p.to_str().unwrap(), m), ("/etc/docker/daemon.json", 0o600));
    }

    #[test]
    fn rendered_daemon_json_has_the_forced_keys_even_against_admin_and_user() {
        let admin = r#"{"linuxVM": {"dockerDaemonOptions": {"locked": false, "value":
            "{\"hosts\": [\"tcp://0.0.0.0:2375\"], \"default-runtime\": \"runc\", \"debug\": true}"}}}"#;
        let f = files(
            admin,
            Some(
                json!({"runtimes": {"runc": {"path": "/usr/bin/runc"}}, "userns-remap": "default", "builder": {"entitlements": {"security-insecure": true}}}),
            ),
        );
        let d: Value = serde_json::from_str(&file(&f, "/etc/docker/daemon.json").contents).unwrap();
        assert_eq!(d["runtimes"], json!({"eci": {"path": "/usr/bin/eci-runc"}}));
        assert_eq!(d["default-runtime"], "eci");
        assert_eq!(d["hosts"], json!(["unix:///run/eci/dockerd.sock"]));
        assert_eq!(d["group"], "root");
        assert_eq!(d["authorization-plugins"], json!([]));
        assert_eq!(d["builder"]["entitlements"]["network-host"], false);
        assert_eq!(d["builder"]["entitlements"]["security-insecure"], false);
        assert!(d.get("userns-remap").is_none());
        assert!(d.get("tls").is_none());
        assert_eq!(d["debug"], true);
    }

    #[test]
    fn rendered_containerd_config_defaults_to_eci_and_has_no_runc() {
        let f = files("{}", None);
        let text = &file(&f, "/etc/containerd/config.toml").contents;
        let c: toml::Value = toml::from_str(text).unwrap();
        assert_eq!(c["version"].as_integer(), Some(2));
        let cri = &c["plugins"]["io.containerd.grpc.v1.cri"]["containerd"];
        assert_eq!(cri["default_runtime_name"].as_str(), Some("eci"));
        let runtimes = cri["runtimes"].as_table().unwrap();
        assert_eq!(runtimes.keys().collect::<Vec<_>>(), vec!["eci"]);
        let eci = &runtimes["eci"];
        assert_eq!(eci["runtime_type"].as_str(), Some("io.containerd.runc.v2"));
        assert_eq!(
            eci["options"]["BinaryName"].as_str(),
            Some("/usr/bin/eci-runc")
        );
        assert_eq!(eci["options"]["SystemdCgroup"].as_bool(), Some(false));
        assert_eq!(
            c["grpc"]["address"].as_str(),
            Some("/run/containerd/containerd.sock")
        );
        assert!(
            !text.contains("runtimes.runc"),
            "a runc runtime entry crept in:\n{text}"
        );
    }

    #[test]
    fn rendered_policy_carries_mounts_socket_rules_and_proxy() {
        let admin = r#"{
  "enhancedContainerIsolation": {"locked": true, "value": true,
    "dockerSocketMount": {"imageList": {"images": ["docker:cli", "ghcr.io/x/y:*"], "allowDerivedImages": true},
                          "commandList": {"type": "allow", "commands": ["container*", "pull"]}}},
  "filesharingAllowedDirectories": [{"path": "C:\\src\\\"quoted\"", "sharedByDefault": true}],
  "containersProxy": {"locked": true, "mode": "manual", "http": "http://proxy:3128", "exclude": ["localhost"]}
}"#;
        let f = files(admin, None);
        let p: Value = serde_json::from_str(&file(&f, "/etc/eci/policy.json").contents).unwrap();
        assert_eq!(p["isolation"], true);
        assert_eq!(p["dockerdSocket"], "/run/eci/dockerd.sock");
        assert_eq!(
            p["bindMounts"]["allowedVmPrefixes"],
            json!(["/mnt/host/c/src/\"quoted\""])
        );
        assert_eq!(
            p["bindMounts"]["sharedHostPaths"],
            json!(["C:\\src\\\"quoted\""])
        );
        assert_eq!(
            p["dockerSocketMount"]["images"],
            json!(["docker.io/library/docker:cli", "ghcr.io/x/y:*"])
        );
        assert_eq!(p["dockerSocketMount"]["allowDerivedImages"], true);
        assert_eq!(
            p["dockerSocketMount"]["commandList"],
            json!({"type": "allow", "commands": ["container*", "pull"]})
        );
        assert_eq!(p["containersProxy"]["http"], "http://proxy:3128");
        assert_eq!(p["containersProxy"]["mode"], "manual");
        assert_eq!(p["containersProxy"]["exclude"], json!(["localhost"]));
    }

    #[test]
    fn rendering_is_deterministic() {
        let admin = r#"{"linuxVM": {"dockerDaemonOptions": {"value": "{\"b\": 1, \"a\": 2}"}}}"#;
        assert_eq!(files(admin, None), files(admin, None));
    }
}
