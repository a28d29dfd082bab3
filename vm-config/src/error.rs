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

    #[error("settings store {}: {action}: {source}\n  fix: check that the directory exists, is writable by root and the disk is not full", path.display())]
    Store {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("settings store {}: {message}\n  fix: {fix}", path.display())]
    StoreCorrupt {
        path: PathBuf,
        message: String,
        fix: String,
    },
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

/// Edit distance counting an adjacent swap as one edit (optimal string alignment), for "did
/// you mean" hints: "psuh" is one edit from "push", not two.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().map(|c| c.to_ascii_lowercase()).collect();
    let b: Vec<char> = b.chars().map(|c| c.to_ascii_lowercase()).collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The closest candidate within a small distance, if any.
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1) + 1;
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_pick_the_nearest_key_and_reject_far_ones() {
        let keys = [
            "exposeDockerAPIOnTCP2375",
            "enhancedContainerIsolation",
            "linuxVM",
        ];
        assert_eq!(suggest("linuxVm", keys), Some("linuxVM"));
        assert_eq!(
            suggest("enhancedContainerIsolaton", keys),
            Some("enhancedContainerIsolation")
        );
        assert_eq!(suggest("kubernetes", keys), None);
        assert_eq!(edit_distance("psuh", "push"), 1);
        assert_eq!(edit_distance("push", "ps"), 2);
    }

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
