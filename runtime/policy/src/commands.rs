//! `enhancedContainerIsolation.dockerSocketMount.commandList` (SPEC B6): the docker commands a
//! socket-mounting container may (allow) or may not (deny) use.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Top-level commands printed by `docker --help` (common, management and swarm commands, and
/// the plugins Docker Desktop ships). Names only; which API calls each one makes is the guard's
/// table.
pub const DOCKER_COMMANDS: &[&str] = &[
    "attach",
    "build",
    "builder",
    "buildx",
    "checkpoint",
    "commit",
    "compose",
    "config",
    "container",
    "context",
    "cp",
    "create",
    "diff",
    "events",
    "exec",
    "export",
    "history",
    "image",
    "images",
    "import",
    "info",
    "init",
    "inspect",
    "kill",
    "load",
    "login",
    "logout",
    "logs",
    "manifest",
    "network",
    "node",
    "pause",
    "plugin",
    "port",
    "ps",
    "pull",
    "push",
    "rename",
    "restart",
    "rm",
    "rmi",
    "run",
    "save",
    "sbom",
    "scout",
    "search",
    "secret",
    "service",
    "stack",
    "start",
    "stats",
    "stop",
    "swarm",
    "system",
    "tag",
    "top",
    "trust",
    "unpause",
    "update",
    "version",
    "volume",
    "wait",
];

/// The only wildcards Docker Desktop defines; each stands for a command group.
pub const COMMAND_WILDCARDS: &[&str] = &[
    "container*",
    "image*",
    "volume*",
    "network*",
    "build*",
    "system*",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandListType {
    /// The listed commands are blocked, everything else passes (Docker Desktop's default).
    #[default]
    Deny,
    /// Only the listed commands pass.
    Allow,
}

impl fmt::Display for CommandListType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CommandListType::Deny => "deny",
            CommandListType::Allow => "allow",
        })
    }
}

/// A validated command-list entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CommandRule(String);

impl CommandRule {
    pub fn parse(name: &str) -> Result<CommandRule, String> {
        if DOCKER_COMMANDS.contains(&name) || COMMAND_WILDCARDS.contains(&name) {
            return Ok(CommandRule(name.to_string()));
        }
        if name.contains('*') {
            return Err(format!(
                "{name:?} is not a supported wildcard; the wildcards are {}",
                COMMAND_WILDCARDS.join(", ")
            ));
        }
        let lower = name.to_ascii_lowercase();
        let hint = if lower != name && DOCKER_COMMANDS.contains(&lower.as_str()) {
            format!(" (command names are lowercase: {lower:?})")
        } else if let Some(s) = eci_facts::suggest::suggest(name, DOCKER_COMMANDS.iter().copied()) {
            format!(" (did you mean {s:?}?)")
        } else if name.contains(' ') {
            " (list top-level commands only, e.g. \"container\" or \"container*\")".to_string()
        } else {
            String::new()
        };
        Err(format!("{name:?} is not a docker command{hint}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The group prefix of a wildcard (`container*` -> `container`), `None` for a plain name.
    pub fn wildcard_prefix(&self) -> Option<&str> {
        self.0.strip_suffix('*')
    }
}

impl TryFrom<String> for CommandRule {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        CommandRule::parse(&s)
    }
}

impl From<CommandRule> for String {
    fn from(c: CommandRule) -> String {
        c.0
    }
}

impl fmt::Display for CommandRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_docker_help_names_and_the_six_wildcards() {
        for ok in [
            "push",
            "pull",
            "build",
            "container",
            "system",
            "container*",
            "build*",
            "system*",
        ] {
            assert_eq!(CommandRule::parse(ok).unwrap().as_str(), ok);
        }
        assert_eq!(
            CommandRule::parse("image*").unwrap().wildcard_prefix(),
            Some("image")
        );
        assert_eq!(CommandRule::parse("push").unwrap().wildcard_prefix(), None);
    }

    #[test]
    fn rejects_unknown_names_with_a_hint() {
        let e = CommandRule::parse("psuh").unwrap_err();
        assert!(e.contains("did you mean \"push\""), "{e}");
        let e = CommandRule::parse("Push").unwrap_err();
        assert!(e.contains("lowercase"), "{e}");
        let e = CommandRule::parse("service*").unwrap_err();
        assert!(e.contains("container*, image*"), "{e}");
        assert!(CommandRule::parse("*").is_err());
        assert!(CommandRule::parse("").is_err());
        assert!(CommandRule::parse("frobnicate").is_err());
        assert!(CommandRule::parse("container create")
            .unwrap_err()
            .contains("top-level"));
    }

    #[test]
    fn serde_refuses_invalid_names() {
        assert!(serde_json::from_str::<CommandRule>("\"push\"").is_ok());
        assert!(serde_json::from_str::<CommandRule>("\"nope\"").is_err());
    }
}
