//! The guard's policy input: `--settings FILE` is either the VM's rendered
//! `/etc/eci/policy.json` or an `admin-settings.json` (SPEC S1). Both become one
//! [`PolicyFile`] (eci-policy's type, the one eci-runc reads): policy.json is parsed into it,
//! admin settings are merged by eci-vm-config and filled into it, never re-serialised. The
//! guard's [`Policy`] is a view derived from that value.

use std::path::Path;

use eci_policy::{CommandListType, CommandRule, ImageRule, PolicyFile};
use eci_vm_config::{
    effective, policy_file, AdminSettings, Location, Problem, SettingsError, UserSettings, Warning,
    ECI_RUNTIME_NAME,
};
use serde_json::Value;

/// What the policy functions need from the settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// VM paths bind mounts may come from (SPEC B1); every other path is restricted (B2).
    pub allowed_prefixes: Vec<String>,
    /// `dockerSocketMount.imageList.images` (B4), normalised.
    pub socket_images: Vec<ImageRule>,
    /// `allowDerivedImages` (B5).
    pub allow_derived: bool,
    /// `commandList` (B6).
    pub command_list_type: CommandListType,
    pub commands: Vec<CommandRule>,
    /// The runtime every container is forced onto (A3).
    pub runtime: String,
    /// The bind-mount rule shared with eci-runc (B1-B3), derived from the same file the way
    /// eci-runc derives it (its `eciRunc` section included), so both judge bind sources alike.
    pub binds: eci_policy::Policy,
}

impl Default for Policy {
    /// Nothing configured: Docker Desktop's defaults (binds from the host-share root only, no
    /// socket mounts, deny list empty).
    fn default() -> Self {
        Policy::from_file(&PolicyFile::default(), "built-in defaults")
            .expect("the default policy file is valid")
    }
}

/// Which of the two formats a settings file was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingsFormat {
    PolicyJson,
    AdminSettings,
}

#[derive(Debug)]
pub struct LoadedSettings {
    pub policy: Policy,
    pub format: SettingsFormat,
    pub warnings: Vec<Warning>,
}

impl Policy {
    /// The guard's view of a policy file; `origin` names it in errors (a value eci-runc would
    /// refuse, such as a relative bind prefix, is refused here too).
    pub fn from_file(p: &PolicyFile, origin: &str) -> Result<Policy, SettingsError> {
        let binds =
            eci_policy::Policy::from_file(p, origin).map_err(|e| SettingsError::Invalid {
                origin: origin.to_string(),
                problems: vec![Problem {
                    key: "policy".to_string(),
                    location: Location {
                        origin: origin.to_string(),
                        line: 1,
                        column: 1,
                    },
                    message: e.to_string(),
                    fix: "regenerate the file from admin-settings.json".to_string(),
                }],
            })?;
        Ok(Policy {
            allowed_prefixes: p.bind_mounts.allowed_vm_prefixes.clone(),
            socket_images: p.docker_socket_mount.images.clone(),
            allow_derived: p.docker_socket_mount.allow_derived_images,
            command_list_type: p.docker_socket_mount.command_list.kind,
            commands: p.docker_socket_mount.command_list.commands.clone(),
            runtime: if p.runtime.name.is_empty() {
                ECI_RUNTIME_NAME.to_string()
            } else {
                p.runtime.name.clone()
            },
            binds,
        })
    }

    /// Whether any rule is `*`.
    pub fn any_image(&self) -> bool {
        self.socket_images
            .iter()
            .any(|r| matches!(r, ImageRule::Any))
    }
}

/// Parse settings text. A policy.json is recognised by its `bindMounts`/`dockerSocketMount`
/// members; anything else is read as admin-settings.json and merged with no user settings
/// (eci-build renders policy.json at image build time with the user's side already merged).
pub fn parse_settings(text: &str, origin: &str) -> Result<LoadedSettings, SettingsError> {
    let looks_like_policy = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| {
            v.as_object()
                .map(|o| o.contains_key("bindMounts") || o.contains_key("dockerSocketMount"))
        })
        .unwrap_or(false);
    if looks_like_policy {
        let file = PolicyFile::parse(text, origin)?;
        return Ok(LoadedSettings {
            policy: Policy::from_file(&file, origin)?,
            format: SettingsFormat::PolicyJson,
            warnings: Vec::new(),
        });
    }
    let (admin, warnings) = AdminSettings::parse(text, origin)?;
    let file = policy_file(&effective(&admin, &UserSettings::default(), None));
    Ok(LoadedSettings {
        policy: Policy::from_file(&file, origin)?,
        format: SettingsFormat::AdminSettings,
        warnings,
    })
}

pub fn load_settings(path: &Path) -> Result<LoadedSettings, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_settings(&text, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_settings_are_merged_into_a_policy() {
        let text = r#"{"configurationFileVersion": 2,
          "enhancedContainerIsolation": {"locked": true, "value": true,
            "dockerSocketMount": {"imageList": {"images": ["docker:cli", "ghcr.io/x/y:*"], "allowDerivedImages": true},
                                  "commandList": {"type": "deny", "commands": ["push", "container*"]}}},
          "filesharingAllowedDirectories": [{"path": "/home/me", "sharedByDefault": true}]}"#;
        let l = parse_settings(text, "admin-settings.json").unwrap();
        assert_eq!(l.format, SettingsFormat::AdminSettings);
        let p = l.policy;
        assert_eq!(p.allowed_prefixes, vec!["/mnt/host/home/me"]);
        assert_eq!(
            p.socket_images[0].to_string(),
            "docker.io/library/docker:cli"
        );
        assert!(p.allow_derived);
        assert_eq!(p.command_list_type, CommandListType::Deny);
        assert_eq!(p.commands.len(), 2);
        assert_eq!(p.runtime, "eci");
    }

    #[test]
    fn rendered_policy_json_is_read_directly() {
        let text = r#"{"version": 1, "isolation": true, "dockerdSocket": "/run/eci/dockerd.sock",
          "runtime": {"name": "eci", "path": "/usr/bin/eci-runc"},
          "bindMounts": {"allowedVmPrefixes": ["/srv/share"], "sharedHostPaths": []},
          "dockerSocketMount": {"images": ["*"], "allowDerivedImages": false,
                                "commandList": {"type": "allow", "commands": ["ps"]}}}"#;
        let l = parse_settings(text, "policy.json").unwrap();
        assert_eq!(l.format, SettingsFormat::PolicyJson);
        assert_eq!(l.policy.allowed_prefixes, vec!["/srv/share"]);
        assert!(l.policy.any_image());
        assert_eq!(l.policy.command_list_type, CommandListType::Allow);
    }

    #[test]
    fn bad_settings_are_errors_not_defaults() {
        assert!(parse_settings("{", "a.json").is_err());
        let bad = r#"{"enhancedContainerIsolation": {"dockerSocketMount": {"commandList": {"type": "block"}}}}"#;
        let e = parse_settings(bad, "a.json").unwrap_err();
        assert!(e.to_string().contains("commandList.type"), "{e}");
        let bad_policy = r#"{"bindMounts": {"allowedVmPrefixes": 3}}"#;
        let e = parse_settings(bad_policy, "p.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("p.json:1:38"), "{e}");
        // A value eci-runc refuses is refused by the guard too.
        let relative = r#"{"bindMounts": {"allowedVmPrefixes": ["mnt/host"]}}"#;
        let e = parse_settings(relative, "p.json").unwrap_err().to_string();
        assert!(e.contains("allowedVmPrefixes"), "{e}");
    }

    #[test]
    fn defaults_allow_only_the_host_share_root() {
        let p = Policy::default();
        assert_eq!(p.allowed_prefixes, vec!["/mnt/host"]);
        assert!(p.socket_images.is_empty());
        assert_eq!(p.command_list_type, CommandListType::Deny);
    }
}
