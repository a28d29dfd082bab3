//! `/etc/eci/policy.json` as one type: vm-config writes it with serde_json from the effective
//! settings, and the guard and eci-runc read it through [`PolicyFile::parse`] /
//! [`PolicyFile::load`]. Nothing else declares its fields. The runtime's rule input
//! ([`crate::Policy`]) is derived from it by [`crate::Policy::from_file`].
//!
//! Readers tolerate unknown fields (a newer writer may add some) and refuse a newer `version`.
//! Every member has a default, so a missing key means the built-in policy; inside `eciRunc`
//! an unknown key is an error, since that section is written by hand and a typo there would
//! silently keep a default.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use eci_facts::vm_paths::{DOCKERD_SOCKET, ECI_RUNC_PATH, ECI_RUNTIME_NAME, HOST_SHARE_ROOT};

use crate::commands::{CommandListType, CommandRule};
use crate::image::ImageRule;

/// The `version` this library writes and reads.
pub const POLICY_FILE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyFile {
    pub version: u32,
    pub isolation: bool,
    /// dockerd's own socket; no container may reach it (SPEC S4).
    pub dockerd_socket: String,
    pub runtime: PolicyRuntime,
    pub bind_mounts: BindMountPolicy,
    pub docker_socket_mount: SocketMountPolicy,
    pub containers_proxy: ProxySettings,
    /// eci-runc's own settings; absent from what vm-config writes, so the defaults apply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eci_runc: Option<RuncSection>,
}

impl Default for PolicyFile {
    /// Isolation on with nothing configured: binds from the host-share root only, no image may
    /// mount the engine socket.
    fn default() -> Self {
        PolicyFile {
            version: POLICY_FILE_VERSION,
            isolation: true,
            dockerd_socket: DOCKERD_SOCKET.to_string(),
            runtime: PolicyRuntime::default(),
            bind_mounts: BindMountPolicy::default(),
            docker_socket_mount: SocketMountPolicy::default(),
            containers_proxy: ProxySettings::default(),
            eci_runc: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyRuntime {
    pub name: String,
    pub path: String,
}

impl Default for PolicyRuntime {
    fn default() -> Self {
        PolicyRuntime {
            name: ECI_RUNTIME_NAME.to_string(),
            path: ECI_RUNC_PATH.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BindMountPolicy {
    /// VM paths bind mounts may come from (SPEC B1); everything else is restricted (B2).
    pub allowed_vm_prefixes: Vec<String>,
    /// The same shares as the host wrote them (may still hold `$HOME`).
    pub shared_host_paths: Vec<String>,
}

impl Default for BindMountPolicy {
    fn default() -> Self {
        BindMountPolicy {
            allowed_vm_prefixes: vec![HOST_SHARE_ROOT.to_string()],
            shared_host_paths: Vec::new(),
        }
    }
}

/// `dockerSocketMount` flattened: rules already normalised (SPEC B4-B6).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SocketMountPolicy {
    pub images: Vec<ImageRule>,
    pub allow_derived_images: bool,
    pub command_list: CommandList,
}

/// `commandList` (SPEC B6): the docker commands a socket-mounting container may (allow) or may
/// not (deny) use.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandList {
    #[serde(rename = "type")]
    pub kind: CommandListType,
    pub commands: Vec<CommandRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyMode {
    /// Use the host's proxy configuration.
    #[default]
    System,
    /// Use the URLs given here.
    Manual,
}

/// `containersProxy` without its `locked` flag: the proxy containers use.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxySettings {
    pub mode: ProxyMode,
    pub http: String,
    pub https: String,
    pub exclude: Vec<String>,
    pub pac: String,
    pub transparent_ports: String,
}

/// `eciRunc`: what eci-runc alone reads; every key is optional and replaces its default (see
/// the constants in [`crate::Policy`]'s module and runtime/README.md).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct RuncSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_pool: Option<IdPool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_data_roots: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_binaries: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_sockets: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_parents: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_log: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_log_max_bytes: Option<u64>,
}

/// The host ids containers' ranges are cut from: `ranges` ranges of 65536 from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdPool {
    pub start: u32,
    pub ranges: u32,
}

/// A policy file that cannot be read or parsed. The message names the file, the position and
/// the fix; the caller keeps the policy it had.
#[derive(Debug)]
pub enum PolicyFileError {
    Read {
        path: String,
        source: std::io::Error,
    },
    Invalid {
        origin: String,
        /// 1-based; `1:1` when the problem has no position (a newer `version`).
        line: usize,
        column: usize,
        /// The member at fault (`version`), or `policy` for a syntax or type error.
        key: String,
        message: String,
        fix: String,
    },
}

impl PolicyFileError {
    /// The file (or the origin the text was given with).
    pub fn origin(&self) -> &str {
        match self {
            PolicyFileError::Read { path, .. } => path,
            PolicyFileError::Invalid { origin, .. } => origin,
        }
    }

    /// What is wrong, with the position and the fix, without the file name.
    pub fn detail(&self) -> String {
        match self {
            PolicyFileError::Read { source, .. } => format!("cannot read it: {source}"),
            PolicyFileError::Invalid {
                line,
                column,
                message,
                fix,
                ..
            } => format!("line {line} column {column}: {message}; {fix}"),
        }
    }
}

impl fmt::Display for PolicyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "policy file {}: {}", self.origin(), self.detail())
    }
}

impl std::error::Error for PolicyFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PolicyFileError::Read { source, .. } => Some(source),
            PolicyFileError::Invalid { .. } => None,
        }
    }
}

const REGENERATE: &str = "regenerate the file from admin-settings.json (eci-build renders it into the image) instead of editing it";

impl PolicyFile {
    /// Parse a policy file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<PolicyFile, PolicyFileError> {
        let policy: PolicyFile =
            serde_json::from_str(text).map_err(|e| PolicyFileError::Invalid {
                origin: origin.to_string(),
                line: e.line().max(1),
                column: char_column(text, e.line(), e.column()),
                key: "policy".to_string(),
                message: strip_position(&e.to_string()),
                fix: REGENERATE.to_string(),
            })?;
        if policy.version > POLICY_FILE_VERSION {
            return Err(PolicyFileError::Invalid {
                origin: origin.to_string(),
                line: 1,
                column: 1,
                key: "version".to_string(),
                message: format!(
                    "policy version {} is newer than this reader ({POLICY_FILE_VERSION})",
                    policy.version
                ),
                fix: "update the reader (eci-guard / eci-runc) to the version that wrote the file"
                    .to_string(),
            });
        }
        Ok(policy)
    }

    /// Read and parse `path`.
    pub fn load(path: &Path) -> Result<PolicyFile, PolicyFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        PolicyFile::parse(&text, &path.display().to_string())
    }

    /// The file's text as vm-config writes it: pretty JSON, one trailing newline.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a policy file serialises") + "\n"
    }
}

/// serde_json appends " at line L column C"; the position is reported separately.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// serde_json counts columns in bytes; editors count characters.
fn char_column(text: &str, line: usize, byte_column: usize) -> usize {
    let Some(l) = text.split('\n').nth(line.max(1) - 1) else {
        return byte_column.max(1);
    };
    let mut cut = byte_column.min(l.len());
    while !l.is_char_boundary(cut) {
        cut -= 1;
    }
    l[..cut].chars().count().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_round_trips_and_an_empty_object_is_the_default() {
        let p = PolicyFile::default();
        assert_eq!(PolicyFile::parse(&p.to_json(), "p").unwrap(), p);
        assert_eq!(PolicyFile::parse("{}", "p").unwrap(), p);
        assert!(!p.to_json().contains("eciRunc"));
        assert_eq!(p.bind_mounts.allowed_vm_prefixes, vec!["/mnt/host"]);
    }

    #[test]
    fn the_runc_section_round_trips() {
        let p = PolicyFile {
            eci_runc: Some(RuncSection {
                id_pool: Some(IdPool {
                    start: 200_000,
                    ranges: 10,
                }),
                cgroup_parents: Some(vec!["/ci".into()]),
                ..RuncSection::default()
            }),
            ..PolicyFile::default()
        };
        let text = p.to_json();
        assert!(text.contains("\"idPool\""), "{text}");
        assert_eq!(PolicyFile::parse(&text, "p").unwrap(), p);
    }

    #[test]
    fn bad_files_are_errors_naming_the_file_the_position_and_the_fix() {
        let e = PolicyFile::parse("{\"version\": 1,\n \"isolation\": \"yes\"}", "p.json")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("policy file p.json: line 2 column "), "{e}");
        assert!(e.contains("regenerate the file"), "{e}");
        let e = PolicyFile::parse(
            r#"{"dockerSocketMount": {"images": ["Not A Ref"]}}"#,
            "p.json",
        )
        .unwrap_err();
        assert!(e.to_string().contains("invalid image reference"), "{e}");
        let e = PolicyFile::parse(r#"{"version": 9}"#, "p.json").unwrap_err();
        assert!(e.to_string().contains("newer than this reader"), "{e}");
        let e = PolicyFile::parse(r#"{"eciRunc": {"idPol": {}}}"#, "p.json").unwrap_err();
        assert!(e.to_string().contains("idPol"), "{e}");
        let future = r#"{"futureField": 1, "bindMounts": {"later": true}}"#;
        assert!(PolicyFile::parse(future, "p.json").is_ok());
        let e = PolicyFile::load(Path::new("/nonexistent/policy.json")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/policy.json"), "{e}");
    }
}
