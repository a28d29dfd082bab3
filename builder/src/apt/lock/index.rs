//! Debian `Packages` indices and the relation syntax of their dependency fields.
//!
//! Relations are reduced for one target architecture at parse time: `[arch]` restrictions and
//! `<profile>` restrictions are evaluated (no build profile active, as for a normal build) and
//! alternatives they rule out are dropped, so the resolver only sees what applies.

use std::borrow::Cow;
use std::fmt;

use super::version::{Constraint, Op, Version};

/// Which architecture a dependency may be satisfied from (`foo:any`, `foo:native`, `foo:ARCH`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArchQualifier {
    /// `:any`: satisfied by a package of any architecture that is `Multi-Arch: allowed`.
    Any,
    /// `:native`: satisfied by the native (target) architecture only.
    Native,
    /// `:ARCH` as written.
    Arch(String),
}

/// One alternative of a relation: `name[:qual] [(op version)]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dependency {
    pub name: String,
    pub arch: Option<ArchQualifier>,
    pub constraint: Option<Constraint>,
}

/// One comma-separated entry of a relation field: alternatives separated by `|`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relation {
    pub alternatives: Vec<Dependency>,
}

/// One `Provides:` entry; only `=` versions are legal there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provide {
    pub name: String,
    pub version: Option<Version>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MultiArch {
    #[default]
    No,
    Same,
    Foreign,
    Allowed,
}

/// One binary package stanza with the fields the lock stage needs.
#[derive(Clone, Debug)]
pub struct Package {
    pub name: String,
    pub version: Version,
    pub architecture: String,
    pub multi_arch: MultiArch,
    pub essential: bool,
    pub priority: Option<String>,
    pub depends: Vec<Relation>,
    pub pre_depends: Vec<Relation>,
    pub provides: Vec<Provide>,
    pub conflicts: Vec<Relation>,
    pub breaks: Vec<Relation>,
    pub replaces: Vec<Relation>,
    /// Pool path relative to the archive root, e.g. `pool/main/a/adduser/adduser_3.134_all.deb`.
    pub filename: String,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
    /// Source package name and, when it differs from the binary version, its version.
    pub source: Option<(String, Option<Version>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{index}:{line}: package stanza lacks the required field `{field}`")]
    MissingField {
        index: String,
        line: usize,
        field: &'static str,
    },
    #[error("{index}:{line}: field `{field}` of package `{package}`: {message}")]
    BadField {
        index: String,
        line: usize,
        package: String,
        field: String,
        message: String,
    },
    #[error("{index}:{line}: `{text}` is neither `Field: value` nor a continuation line")]
    BadLine {
        index: String,
        line: usize,
        text: String,
    },
    #[error(
        "{index} is not valid UTF-8 (byte {offset}); the index is corrupt or not a Packages file"
    )]
    NotUtf8 { index: String, offset: usize },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelationError {
    #[error("empty alternative in `{0}`")]
    EmptyAlternative(String),
    #[error("bad package name `{name}` in `{text}`")]
    BadName { name: String, text: String },
    #[error("bad version constraint `{constraint}` in `{text}`: {reason}")]
    BadConstraint {
        constraint: String,
        text: String,
        reason: String,
    },
    #[error("unterminated `{open}` in `{text}`")]
    Unterminated { open: char, text: String },
    #[error("unexpected `{rest}` after a dependency in `{text}`")]
    Trailing { rest: String, text: String },
    #[error("Provides `{0}` may only use `=` versions")]
    ProvideOperator(String),
}

fn valid_package_name(name: &str) -> bool {
    // Policy 5.6.1 requires a leading alphanumeric and at least two characters; one-letter
    // names do not exist in Debian but we only reject what cannot be a name at all.
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.'))
}

/// The CPU part of a Debian architecture name, for `any-CPU` wildcards.
fn arch_cpu(arch: &str) -> &str {
    match arch {
        "armhf" | "armel" => "arm",
        "x32" => "amd64",
        other => other,
    }
}

/// Whether an architecture wildcard or name from `[...]` matches the (Linux) target `arch`.
pub fn arch_matches(pattern: &str, arch: &str) -> bool {
    if pattern == arch || pattern == "any" || pattern == "linux-any" {
        return true;
    }
    if let Some(cpu) = pattern
        .strip_prefix("any-")
        .or_else(|| pattern.strip_prefix("linux-"))
    {
        return cpu == arch || cpu == arch_cpu(arch);
    }
    false
}

/// Evaluates `[a !b ...]`: a positive list admits the listed architectures, a negated list
/// admits everything else (mixing is invalid in Debian; positives win here).
fn arch_list_admits(list: &str, arch: &str) -> bool {
    let terms: Vec<&str> = list.split_whitespace().collect();
    if terms.is_empty() {
        return true;
    }
    let positives: Vec<&str> = terms
        .iter()
        .filter(|t| !t.starts_with('!'))
        .copied()
        .collect();
    if !positives.is_empty() {
        return positives.iter().any(|p| arch_matches(p, arch));
    }
    !terms
        .iter()
        .filter_map(|t| t.strip_prefix('!'))
        .any(|p| arch_matches(p, arch))
}

/// Evaluates one `<...>` group with no build profile active: it holds only if every term is
/// negated (`<!nocheck>` holds, `<stage1>` does not).
fn profile_group_holds(group: &str) -> bool {
    group.split_whitespace().all(|t| t.starts_with('!'))
}

/// Parses one alternative. Returns `None` when an arch or profile restriction drops it.
fn parse_alternative(
    text: &str,
    whole: &str,
    arch: &str,
) -> Result<Option<Dependency>, RelationError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(RelationError::EmptyAlternative(whole.to_string()));
    }
    let name_end = s
        .find(|c: char| c.is_whitespace() || matches!(c, '(' | '[' | '<'))
        .unwrap_or(s.len());
    let (name_part, mut rest) = (&s[..name_end], s[name_end..].trim_start());
    let (name, qual) = match name_part.split_once(':') {
        Some((n, q)) => (
            n,
            Some(match q {
                "any" => ArchQualifier::Any,
                "native" => ArchQualifier::Native,
                other => ArchQualifier::Arch(other.to_string()),
            }),
        ),
        None => (name_part, None),
    };
    if !valid_package_name(name) {
        return Err(RelationError::BadName {
            name: name.to_string(),
            text: whole.to_string(),
        });
    }
    let mut constraint = None;
    if let Some(r) = rest.strip_prefix('(') {
        let close = r.find(')').ok_or(RelationError::Unterminated {
            open: '(',
            text: whole.to_string(),
        })?;
        let inner = r[..close].trim();
        let op_len = inner
            .find(|c: char| !matches!(c, '<' | '>' | '='))
            .unwrap_or(inner.len());
        let bad = |reason: String| RelationError::BadConstraint {
            constraint: inner.to_string(),
            text: whole.to_string(),
            reason,
        };
        let op = Op::parse(&inner[..op_len])
            .ok_or_else(|| bad(format!("unknown operator `{}`", &inner[..op_len])))?;
        let version = Version::parse(inner[op_len..].trim()).map_err(|e| bad(e.to_string()))?;
        constraint = Some(Constraint { op, version });
        rest = r[close + 1..].trim_start();
    }
    let mut admitted = true;
    if let Some(r) = rest.strip_prefix('[') {
        let close = r.find(']').ok_or(RelationError::Unterminated {
            open: '[',
            text: whole.to_string(),
        })?;
        admitted &= arch_list_admits(&r[..close], arch);
        rest = r[close + 1..].trim_start();
    }
    let mut any_group = false;
    let mut group_holds = false;
    while let Some(r) = rest.strip_prefix('<') {
        let close = r.find('>').ok_or(RelationError::Unterminated {
            open: '<',
            text: whole.to_string(),
        })?;
        any_group = true;
        group_holds |= profile_group_holds(&r[..close]);
        rest = r[close + 1..].trim_start();
    }
    if any_group && !group_holds {
        admitted = false;
    }
    if !rest.is_empty() {
        return Err(RelationError::Trailing {
            rest: rest.to_string(),
            text: whole.to_string(),
        });
    }
    Ok(admitted.then(|| Dependency {
        name: name.to_string(),
        arch: qual,
        constraint,
    }))
}

/// Parses a relation field (`Depends`, `Conflicts`, ...) for the target `arch`. Relations whose
/// every alternative is restricted away disappear; empty comma entries are tolerated.
pub fn parse_relations(text: &str, arch: &str) -> Result<Vec<Relation>, RelationError> {
    let mut out = Vec::new();
    for entry in text.split(',') {
        if entry.trim().is_empty() {
            continue;
        }
        let mut alternatives = Vec::new();
        for alt in entry.split('|') {
            if let Some(dep) = parse_alternative(alt, entry.trim(), arch)? {
                alternatives.push(dep);
            }
        }
        if !alternatives.is_empty() {
            out.push(Relation { alternatives });
        }
    }
    Ok(out)
}

pub fn parse_provides(text: &str) -> Result<Vec<Provide>, RelationError> {
    let mut out = Vec::new();
    // Provides never carries arch or profile restrictions; the arch argument is irrelevant.
    for rel in parse_relations(text, "any")? {
        for dep in rel.alternatives {
            let version = match dep.constraint {
                None => None,
                Some(Constraint {
                    op: Op::Eq,
                    version,
                }) => Some(version),
                Some(_) => return Err(RelationError::ProvideOperator(text.trim().to_string())),
            };
            out.push(Provide {
                name: dep.name,
                version,
            });
        }
    }
    Ok(out)
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        match &self.arch {
            Some(ArchQualifier::Any) => f.write_str(":any")?,
            Some(ArchQualifier::Native) => f.write_str(":native")?,
            Some(ArchQualifier::Arch(a)) => write!(f, ":{a}")?,
            None => {}
        }
        if let Some(c) = &self.constraint {
            write!(f, " ({c})")?;
        }
        Ok(())
    }
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, alt) in self.alternatives.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{alt}")?;
        }
        Ok(())
    }
}

/// Iterates over the raw fields of deb822 stanzas: `(line_of_stanza_start, fields)` where each
/// field is `(name, value, line)` and continuation lines are joined with `\n`.
pub(crate) struct Stanzas<'a> {
    lines: std::iter::Peekable<std::iter::Enumerate<std::str::Lines<'a>>>,
    origin: &'a str,
}

pub(crate) type Field<'a> = (&'a str, Cow<'a, str>, usize);

impl<'a> Stanzas<'a> {
    pub(crate) fn new(text: &'a str, origin: &'a str) -> Self {
        Stanzas {
            lines: text.lines().enumerate().peekable(),
            origin,
        }
    }
}

impl<'a> Iterator for Stanzas<'a> {
    type Item = Result<(usize, Vec<Field<'a>>), IndexError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut fields: Vec<Field<'a>> = Vec::new();
        let mut start = 0;
        for (no, line) in self.lines.by_ref() {
            let line_no = no + 1;
            if line.trim().is_empty() {
                if fields.is_empty() {
                    continue;
                }
                return Some(Ok((start, fields)));
            }
            if line.starts_with(' ') || line.starts_with('\t') {
                match fields.last_mut() {
                    Some((_, value, _)) => {
                        let v = value.to_mut();
                        v.push('\n');
                        v.push_str(line.trim());
                    }
                    None => {
                        return Some(Err(IndexError::BadLine {
                            index: self.origin.to_string(),
                            line: line_no,
                            text: line.to_string(),
                        }))
                    }
                }
                continue;
            }
            match line.split_once(':') {
                Some((name, value)) if !name.is_empty() && !name.contains(char::is_whitespace) => {
                    if fields.is_empty() {
                        start = line_no;
                    }
                    fields.push((name, Cow::Borrowed(value.trim()), line_no));
                }
                _ => {
                    return Some(Err(IndexError::BadLine {
                        index: self.origin.to_string(),
                        line: line_no,
                        text: line.to_string(),
                    }))
                }
            }
        }
        if fields.is_empty() {
            None
        } else {
            Some(Ok((start, fields)))
        }
    }
}

/// Parses a whole `Packages` file. `origin` names the index in errors; `arch` is the target
/// architecture, used to evaluate `[arch]` restrictions. Stanzas for other architectures than
/// `arch` and `all` are skipped.
pub fn parse_packages(text: &str, origin: &str, arch: &str) -> Result<Vec<Package>, IndexError> {
    let mut out = Vec::new();
    for stanza in Stanzas::new(text, origin) {
        let (start, fields) = stanza?;
        if let Some(p) = parse_stanza(&fields, start, origin, arch)? {
            out.push(p);
        }
    }
    Ok(out)
}

/// Like [`parse_packages`] but takes raw bytes and reports invalid UTF-8 as an index error.
pub fn parse_packages_bytes(
    bytes: &[u8],
    origin: &str,
    arch: &str,
) -> Result<Vec<Package>, IndexError> {
    let text = std::str::from_utf8(bytes).map_err(|e| IndexError::NotUtf8 {
        index: origin.to_string(),
        offset: e.valid_up_to(),
    })?;
    parse_packages(text, origin, arch)
}

fn parse_stanza(
    fields: &[Field<'_>],
    start: usize,
    origin: &str,
    arch: &str,
) -> Result<Option<Package>, IndexError> {
    let get = |want: &str| {
        fields
            .iter()
            .find(|(n, _, _)| n.eq_ignore_ascii_case(want))
            .map(|(_, v, l)| (v.as_ref(), *l))
    };
    let require = |field: &'static str| {
        get(field).ok_or_else(|| IndexError::MissingField {
            index: origin.to_string(),
            line: start,
            field,
        })
    };
    let (name, _) = require("Package")?;
    let name = name.to_string();
    let (architecture, _) = require("Architecture")?;
    if architecture != arch && architecture != "all" {
        return Ok(None);
    }
    let bad = |field: &str, line: usize, message: String| IndexError::BadField {
        index: origin.to_string(),
        line,
        package: name.clone(),
        field: field.to_string(),
        message,
    };
    let (version, vline) = require("Version")?;
    let version = Version::parse(version).map_err(|e| bad("Version", vline, e.to_string()))?;
    let (filename, _) = require("Filename")?;
    let (size, sline) = require("Size")?;
    let size = size
        .parse::<u64>()
        .map_err(|e| bad("Size", sline, format!("`{size}` is not a byte count: {e}")))?;
    let (sha256, hline) = require("SHA256")?;
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(
            "SHA256",
            hline,
            format!("`{sha256}` is not 64 hex digits"),
        ));
    }
    let relations = |field: &str| -> Result<Vec<Relation>, IndexError> {
        match get(field) {
            Some((text, line)) => {
                parse_relations(text, arch).map_err(|e| bad(field, line, e.to_string()))
            }
            None => Ok(Vec::new()),
        }
    };
    let provides = match get("Provides") {
        Some((text, line)) => {
            parse_provides(text).map_err(|e| bad("Provides", line, e.to_string()))?
        }
        None => Vec::new(),
    };
    let multi_arch = match get("Multi-Arch") {
        None | Some(("no", _)) => MultiArch::No,
        Some(("same", _)) => MultiArch::Same,
        Some(("foreign", _)) => MultiArch::Foreign,
        Some(("allowed", _)) => MultiArch::Allowed,
        Some((other, line)) => {
            return Err(bad("Multi-Arch", line, format!("unknown value `{other}`")));
        }
    };
    let source = match get("Source") {
        None => None,
        Some((text, line)) => {
            let (sname, rest) = match text.split_once('(') {
                Some((n, r)) => (n.trim(), Some(r)),
                None => (text.trim(), None),
            };
            let sversion = match rest {
                None => None,
                Some(r) => {
                    let inner = r.strip_suffix(')').ok_or_else(|| {
                        bad("Source", line, format!("`{text}` lacks the closing `)`"))
                    })?;
                    Some(Version::parse(inner).map_err(|e| bad("Source", line, e.to_string()))?)
                }
            };
            Some((sname.to_string(), sversion))
        }
    };
    Ok(Some(Package {
        version,
        architecture: architecture.to_string(),
        multi_arch,
        essential: matches!(get("Essential"), Some(("yes", _))),
        priority: get("Priority").map(|(p, _)| p.to_string()),
        depends: relations("Depends")?,
        pre_depends: relations("Pre-Depends")?,
        provides,
        conflicts: relations("Conflicts")?,
        breaks: relations("Breaks")?,
        replaces: relations("Replaces")?,
        filename: filename.to_string(),
        size,
        sha256: sha256.to_ascii_lowercase(),
        source,
        name,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(s: &str) -> Vec<Relation> {
        parse_relations(s, "amd64").unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn show(rs: &[Relation]) -> String {
        rs.iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    #[test]
    fn relations_round_trip_and_operators() {
        let r = rel("libc6 (>= 2.34), debconf (>= 0.5) | debconf-2.0, foo (<< 1:2~), bar (<= 1), baz (= 1.0-1), qux (>> 0)");
        assert_eq!(
            show(&r),
            "libc6 (>= 2.34), debconf (>= 0.5) | debconf-2.0, foo (<< 1:2~), bar (<= 1), baz (= 1.0-1), qux (>> 0)"
        );
        assert_eq!(r[1].alternatives.len(), 2);
        assert_eq!(r[2].alternatives[0].constraint.as_ref().unwrap().op, Op::Lt);
        // Obsolete single-character operators keep their historic meaning.
        let old = rel("a (< 1), b (> 2)");
        assert_eq!(show(&old), "a (<= 1), b (>= 2)");
        // No whitespace is needed around the operator.
        assert_eq!(show(&rel("a(>=1.0)")), "a (>= 1.0)");
    }

    #[test]
    fn arch_qualifiers() {
        let r = rel("perl:any, python3:native (>= 3.11), libfoo:amd64");
        assert_eq!(r[0].alternatives[0].arch, Some(ArchQualifier::Any));
        assert_eq!(r[1].alternatives[0].arch, Some(ArchQualifier::Native));
        assert_eq!(
            r[2].alternatives[0].arch,
            Some(ArchQualifier::Arch("amd64".into()))
        );
        assert_eq!(show(&r), "perl:any, python3:native (>= 3.11), libfoo:amd64");
    }

    #[test]
    fn arch_restrictions() {
        let r = rel("a [amd64], b [!amd64], c [i386 arm64] | d, e [linux-any], f [any-amd64], g [!i386], h [armhf]");
        assert_eq!(show(&r), "a, d, e, f, g");
        let arm = parse_relations("x [any-arm], y [armel]", "armhf").unwrap();
        assert_eq!(show(&arm), "x");
    }

    #[test]
    fn profile_restrictions_as_normal_build() {
        let r = rel("a <!nocheck>, b <stage1>, c <!stage1 !cross>, d <stage1> <!nocheck>, e [amd64] <!nodoc>, f <cross !nocheck>");
        assert_eq!(show(&r), "a, c, d, e");
    }

    #[test]
    fn whole_relation_dropped_when_every_alternative_is_restricted() {
        let r = rel("a [i386] | b <stage1>, c");
        assert_eq!(show(&r), "c");
    }

    #[test]
    fn relation_errors() {
        assert!(matches!(
            parse_relations("a | , b", "amd64"),
            Err(RelationError::EmptyAlternative(_))
        ));
        assert!(matches!(
            parse_relations("a (>= 1", "amd64"),
            Err(RelationError::Unterminated { open: '(', .. })
        ));
        assert!(matches!(
            parse_relations("a (~= 1)", "amd64"),
            Err(RelationError::BadConstraint { .. })
        ));
        assert!(matches!(
            parse_relations("A_b", "amd64"),
            Err(RelationError::BadName { .. })
        ));
        assert!(matches!(
            parse_relations("a (>= 1) junk", "amd64"),
            Err(RelationError::Trailing { .. })
        ));
        // Trailing commas are tolerated like dpkg does.
        assert_eq!(show(&rel("a, b,")), "a, b");
    }

    #[test]
    fn provides_with_and_without_versions() {
        let p = parse_provides("awk, libfoo-abi-2 (= 2.1-1), c").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].version, None);
        assert_eq!(p[1].version.as_ref().unwrap().as_str(), "2.1-1");
        assert!(matches!(
            parse_provides("x (>= 1)"),
            Err(RelationError::ProvideOperator(_))
        ));
    }

    const SHA_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[test]
    fn packages_stanzas_with_continuations() {
        let text = r#"Package: adduser
Version: 3.134
Installed-Size: 849
Maintainer: Adduser Developers <adduser@example.org>
Architecture: all
Multi-Arch: foreign
Depends: passwd
Pre-Depends: debconf (>= 0.5)
 | debconf-2.0
Recommends: something-ignored
Description: add and remove users and groups
 This package includes the 'adduser' and 'deluser' commands.
 .
 More text.
Priority: important
Filename: pool/main/a/adduser/adduser_3.134_all.deb
Size: 1234
SHA256: @SHA@


Package: libfoo1
Source: foo (1.2-1)
Version: 1.2-1+b1
Architecture: amd64
Essential: yes
Multi-Arch: same
Provides: libfoo-abi (= 1), foo-virtual
Conflicts: libfoo0
Breaks: oldthing (<< 2)
Replaces: libfoo0
Filename: pool/main/f/foo/libfoo1_1.2-1+b1_amd64.deb
Size: 99
SHA256: @UPPER@

Package: libfoo1
Version: 1.2-1
Architecture: i386
Filename: pool/main/f/foo/libfoo1_1.2-1_i386.deb
Size: 99
SHA256: @SHA@
"#
        .replace("@SHA@", SHA_A)
        .replace("@UPPER@", &SHA_A.to_uppercase());
        let pkgs = parse_packages(&text, "fixture", "amd64").unwrap();
        assert_eq!(pkgs.len(), 2, "the i386 stanza is skipped");
        let a = &pkgs[0];
        assert_eq!(a.name, "adduser");
        assert_eq!(a.multi_arch, MultiArch::Foreign);
        assert_eq!(a.priority.as_deref(), Some("important"));
        assert_eq!(show(&a.pre_depends), "debconf (>= 0.5) | debconf-2.0");
        assert_eq!(show(&a.depends), "passwd");
        assert_eq!(a.size, 1234);
        let f = &pkgs[1];
        assert!(f.essential);
        assert_eq!(f.multi_arch, MultiArch::Same);
        assert_eq!(f.sha256, SHA_A, "hashes are normalised to lower case");
        let (sname, sver) = f.source.as_ref().unwrap();
        assert_eq!(sname, "foo");
        assert_eq!(sver.as_ref().unwrap().as_str(), "1.2-1");
        assert_eq!(f.provides.len(), 2);
        assert_eq!(show(&f.conflicts), "libfoo0");
        assert_eq!(show(&f.breaks), "oldthing (<< 2)");
        assert_eq!(show(&f.replaces), "libfoo0");
    }

    #[test]
    fn packages_errors_name_index_and_line() {
        let text = "Package: a\nVersion: 1\nArchitecture: all\nFilename: x.deb\nSize: 1\n";
        let e = parse_packages(text, "idx", "amd64")
            .unwrap_err()
            .to_string();
        assert!(e.contains("idx:1") && e.contains("SHA256"), "{e}");

        let text = format!(
            "Package: a\nVersion: 1\nArchitecture: all\nDepends: b (>= \nFilename: x.deb\nSize: 1\nSHA256: {SHA_A}\n"
        );
        let e = parse_packages(&text, "idx", "amd64")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("idx:4") && e.contains("Depends") && e.contains("`a`"),
            "{e}"
        );

        let text = "Package: a\nthis is not a field\n";
        let e = parse_packages(text, "idx", "amd64")
            .unwrap_err()
            .to_string();
        assert!(e.contains("idx:2"), "{e}");

        let text = format!(
            "Package: a\nVersion: 1\nArchitecture: all\nFilename: x.deb\nSize: 1\nSHA256: {}\n",
            &SHA_A[1..]
        );
        let e = parse_packages(&text, "idx", "amd64")
            .unwrap_err()
            .to_string();
        assert!(e.contains("64 hex"), "{e}");

        let e = parse_packages_bytes(b"Package: \xff\n", "idx", "amd64")
            .unwrap_err()
            .to_string();
        assert!(e.contains("UTF-8"), "{e}");
    }
}
