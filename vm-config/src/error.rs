//! Errors and warnings. Every problem found in a settings file names the file, the line and
//! column, the dotted key, and says how to fix it, because the reader is an admin looking at a
//! JSON file, not at our code.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A position in a settings file. Lines and columns are 1-based; columns count characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub origin: String,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.origin, self.line, self.column)
    }
}

/// One invalid value in a settings file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `enhancedContainerIsolation.dockerSocketMount.commandList.type`.
    pub key: String,
    pub location: Location,
    pub message: String,
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}\n  fix: {}",
            self.location, self.key, self.message, self.fix
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WarningKind {
    /// A key neither eci nor Docker Desktop knows; most likely a typo.
    UnknownKey,
    /// A Docker Desktop setting that has no meaning inside the eci VM.
    NotApplicable,
    /// The same key twice in one object; the last one wins, as in Docker Desktop.
    DuplicateKey,
    /// A `configurationFileVersion` newer than the ones eci was written against.
    NewerVersion,
    /// A valid value that eci will not apply as written (e.g. it is forced).
    Overridden,
}

/// Something an admin should look at that does not make the file invalid (SPEC S1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    pub kind: WarningKind,
    pub key: String,
    pub location: Option<Location>,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(loc) = &self.location {
            write!(f, "{loc}: ")?;
        }
        write!(f, "warning: {}: {}", self.key, self.message)
    }
}

fn list_problems(problems: &[Problem]) -> String {
    let mut out = String::new();
    for p in problems {
        out.push('\n');
        out.push_str(&p.to_string());
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read settings file {path}: {source}\n  fix: check that the path exists and is readable")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{location}: not valid JSON: {message}\n  fix: {fix}")]
    Syntax {
        location: Location,
        message: String,
        fix: String,
    },

    #[error("{origin}: {} invalid setting(s); nothing was applied:{}", problems.len(), list_problems(problems))]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
    },

    #[error("rendering VM file {file} from template {template}: {message}\n  fix: correct the template under vm-config/templates/")]
    Render {
        template: String,
        file: String,
        message: String,
    },
}

/// A policy.json that eci-policy's reader refused, in the settings model's terms (the guard
/// reports both of its input formats the same way).
impl From<eci_policy::PolicyFileError> for SettingsError {
    fn from(e: eci_policy::PolicyFileError) -> Self {
        match e {
            eci_policy::PolicyFileError::Read { path, source } => SettingsError::Read {
                path: PathBuf::from(path),
                source,
            },
            eci_policy::PolicyFileError::Invalid {
                origin,
                line,
                column,
                key,
                message,
                fix,
            } => SettingsError::Invalid {
                problems: vec![Problem {
                    key,
                    location: Location {
                        origin: origin.clone(),
                        line,
                        column,
                    },
                    message,
                    fix,
                }],
                origin,
            },
        }
    }
}

impl SettingsError {
    /// Problems of an `Invalid` error, empty otherwise; handy for callers that want to show
    /// each one next to the file.
    pub fn problems(&self) -> &[Problem] {
        match self {
            SettingsError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

pub(crate) use eci_facts::suggest::suggest;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_error_lists_every_problem_with_its_location_and_fix() {
        let err = SettingsError::Invalid {
            origin: "a.json".into(),
            problems: vec![Problem {
                key: "x.y".into(),
                location: Location {
                    origin: "a.json".into(),
                    line: 3,
                    column: 7,
                },
                message: "expected a boolean, found \"yes\"".into(),
                fix: "write true or false".into(),
            }],
        };
        let text = err.to_string();
        assert!(
            text.contains("a.json:3:7: x.y: expected a boolean"),
            "{text}"
        );
        assert!(text.contains("fix: write true or false"), "{text}");
    }
}
