//! `/etc/eci/policy.json` as a type: what the guard and the runtime read (SPEC B1-B6).
//!
//! The file is rendered by `render_vm_files` from `templates/policy.json.tera`; this type is the
//! reader's side of the same shape, so a consumer never re-declares the fields. A test renders
//! the template and parses it back, which keeps the two in step.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::admin::{parse_json, CommandList, ProxySettings};
use crate::error::{Location, Problem, SettingsError};
use crate::image::ImageRule;
use crate::merge::Effective;
use crate::{DOCKERD_SOCKET, ECI_RUNC_PATH, ECI_RUNTIME_NAME};

/// The `version` this library writes and reads.
pub const POLICY_FILE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyFile {
    pub version: u32,
    pub isolation: bool,
    pub dockerd_socket: String,
    pub runtime: PolicyRuntime,
    pub bind_mounts: BindMountPolicy,
    pub docker_socket_mount: SocketMountPolicy,
    #[serde(default)]
    pub containers_proxy: ProxySettings,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRuntime {
    pub name: String,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BindMountPolicy {
    /// VM paths bind mounts may come from (SPEC B1); everything else is restricted (B2).
    pub allowed_vm_prefixes: Vec<String>,
    /// The same shares as the host wrote them (may still hold `$HOME`).
    #[serde(default)]
    pub shared_host_paths: Vec<String>,
}

/// `dockerSocketMount` flattened: rules already normalised (SPEC B4-B6).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SocketMountPolicy {
    pub images: Vec<ImageRule>,
    #[serde(default)]
    pub allow_derived_images: bool,
    #[serde(default)]
    pub command_list: CommandList,
}

impl PolicyFile {
    /// The policy the VM runs with for these effective settings; equal to what
    /// `render_vm_files` writes to `POLICY_PATH`, parsed back.
    pub fn from_effective(eff: &Effective) -> PolicyFile {
        let s = &eff.settings;
        let fs = &s.filesharing.value;
        let dsm = &s.docker_socket_mount.value;
        PolicyFile {
            version: POLICY_FILE_VERSION,
            isolation: s.enhanced_container_isolation.value,
            dockerd_socket: DOCKERD_SOCKET.to_string(),
            runtime: PolicyRuntime {
                name: ECI_RUNTIME_NAME.to_string(),
                path: ECI_RUNC_PATH.to_string(),
            },
            bind_mounts: BindMountPolicy {
                allowed_vm_prefixes: fs.allowed_vm_prefixes(),
                shared_host_paths: fs.shared.iter().map(|d| d.host_path.clone()).collect(),
            },
            docker_socket_mount: SocketMountPolicy {
                images: dsm.image_list.images.clone(),
                allow_derived_images: dsm.image_list.allow_derived_images,
                command_list: dsm.command_list.clone(),
            },
            containers_proxy: s.containers_proxy.value.clone(),
        }
    }

    /// Parse a policy file. Unknown fields are ignored (a newer writer may add some); a newer
    /// `version`, a wrong type or an invalid image rule or command name is an error with the
    /// position, and the caller keeps the policy it had.
    pub fn parse(text: &str, origin: &str) -> Result<PolicyFile, SettingsError> {
        parse_json(text, origin)?;
        let policy: PolicyFile = serde_json::from_str(text).map_err(|e| SettingsError::Invalid {
            origin: origin.to_string(),
            problems: vec![Problem {
                key: "policy".to_string(),
                location: Location {
                    origin: origin.to_string(),
                    line: e.line().max(1),
                    column: e.column().max(1),
                },
                message: strip_position(&e.to_string()),
                fix: "regenerate the file from admin-settings.json (eci-build settings / the settings agent) instead of editing it".to_string(),
            }],
        })?;
        if policy.version > POLICY_FILE_VERSION {
            return Err(SettingsError::Invalid {
                origin: origin.to_string(),
                problems: vec![Problem {
                    key: "version".to_string(),
                    location: Location {
                        origin: origin.to_string(),
                        line: 1,
                        column: 1,
                    },
                    message: format!(
                        "policy version {} is newer than this reader ({POLICY_FILE_VERSION})",
                        policy.version
                    ),
                    fix: "update the reader (eci-guard / eci-runc) to the version that wrote the file".to_string(),
                }],
            });
        }
        Ok(policy)
    }

    pub fn load(path: &Path) -> Result<PolicyFile, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        PolicyFile::parse(&text, &path.display().to_string())
    }
}

/// serde_json appends " at line L column C"; the location is reported separately.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::AdminSettings;
    use crate::merge::effective;
    use crate::render::render_vm_files;
    use crate::user::UserSettings;
    use crate::POLICY_PATH;

    fn eff(admin: &str) -> Effective {
        let (a, _) = AdminSettings::parse(admin, "a.json").unwrap();
        effective(&a, &UserSettings::default(), None)
    }

    fn rendered(e: &Effective) -> String {
        render_vm_files(e)
            .unwrap()
            .into_iter()
            .find(|f| f.path == Path::new(POLICY_PATH))
            .unwrap()
            .contents
    }

    #[test]
    fn rendered_template_parses_to_from_effective() {
        for admin in [
            "{}",
            r#"{"enhancedContainerIsolation": {"locked": true, "value": true,
                "dockerSocketMount": {"imageList": {"images": ["docker:cli", "ghcr.io/x/y:*", "*"], "allowDerivedImages": true},
                                      "commandList": {"type": "allow", "commands": ["container*", "pull"]}}},
               "filesharingAllowedDirectories": [{"path": "/home/me", "sharedByDefault": true}],
               "containersProxy": {"locked": true, "mode": "manual", "http": "http://proxy:3128"}}"#,
        ] {
            let e = eff(admin);
            let parsed = PolicyFile::parse(&rendered(&e), "policy.json").unwrap();
            assert_eq!(parsed, PolicyFile::from_effective(&e), "{admin}");
        }
        let p = PolicyFile::from_effective(&eff("{}"));
        assert_eq!(p.bind_mounts.allowed_vm_prefixes, vec!["/mnt/host"]);
        assert_eq!(p.runtime.name, "eci");
    }

    #[test]
    fn bad_files_are_errors_with_positions() {
        let e = PolicyFile::parse("{\"version\": 1,", "p.json").unwrap_err();
        assert!(matches!(e, SettingsError::Syntax { .. }), "{e}");
        let good = rendered(&eff("{}"));
        let bad_rule = good.replace("\"images\": []", "\"images\": [\"Not A Ref\"]");
        let e = PolicyFile::parse(&bad_rule, "p.json").unwrap_err();
        assert!(e.to_string().contains("invalid image reference"), "{e}");
        let newer = good.replace("\"version\": 1", "\"version\": 9");
        let e = PolicyFile::parse(&newer, "p.json").unwrap_err();
        assert!(e.to_string().contains("newer than this reader"), "{e}");
        let extra = good.replacen('{', "{\"futureField\": 1,", 1);
        assert!(PolicyFile::parse(&extra, "p.json").is_ok());
    }
}
