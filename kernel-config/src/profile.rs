//! Kernel exception profiles: explicit, justified, per kernel and target departures from the
//! pin, each with the compensating controls it relies on.
//!
//! ```text
//! profile debian12-cloud-6.12  # what kernel this is
//! release 6.12.*+deb12-cloud-amd64  # the releases (`uname -r` form, `*` wildcard) it covers
//! targets hyperv qemu  # the targets whose pins were reviewed against it
//!
//! CONFIG_KEXEC  sysctl:kernel.kexec_load_disabled=1  lockdown:integrity  # why this is enough
//! ```
//!
//! An exception turns a violation of the named option's pin into "compensated" only when all of
//! its conditions hold. Conditions:
//! - `CONFIG_X=...` (same value syntax as fragments): checked against the same config;
//! - `module:NAME`: the option is built as a module and NAME is in the image's boot module list;
//! - `sysctl:NAME=N` / `sysctl:NAME>=N`, `lockdown:integrity|confidentiality`, `cmdline:TOKEN`:
//!   run-time state the VM init establishes; reported as run-time requirements and verified by
//!   the run-time probe;
//! - `spec:ID`: a control eci itself enforces (a SPEC item), named for the reviewer.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::error::PinError;
use crate::fragment::{normalize_module, Cursor, Term};
use crate::target::Target;

/// Lockdown levels, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LockdownLevel {
    None,
    Integrity,
    Confidentiality,
}

impl fmt::Display for LockdownLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockdownLevel::None => "none",
            LockdownLevel::Integrity => "integrity",
            LockdownLevel::Confidentiality => "confidentiality",
        })
    }
}

impl FromStr for LockdownLevel {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "none" => Ok(LockdownLevel::None),
            "integrity" => Ok(LockdownLevel::Integrity),
            "confidentiality" => Ok(LockdownLevel::Confidentiality),
            _ => Err(()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Cmp {
    #[serde(rename = "=")]
    Eq,
    #[serde(rename = ">=")]
    AtLeast,
}

/// State of the running kernel that the VM init establishes and the probe verifies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RuntimeCondition {
    /// `/proc/sys/NAME` (dots become slashes) compared with `value`.
    Sysctl { name: String, cmp: Cmp, value: i64 },
    /// `/sys/kernel/security/lockdown` at least this level.
    Lockdown { level: LockdownLevel },
    /// A token of `/proc/cmdline`, e.g. `slab_nomerge` or `init_on_free=1`.
    Cmdline { token: String },
}

impl fmt::Display for RuntimeCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeCondition::Sysctl { name, cmp, value } => {
                let op = if *cmp == Cmp::Eq { "=" } else { ">=" };
                write!(f, "sysctl {name}{op}{value}")
            }
            RuntimeCondition::Lockdown { level } => write!(f, "lockdown>={level}"),
            RuntimeCondition::Cmdline { token } => write!(f, "cmdline {token}"),
        }
    }
}

/// One condition of an exception.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Condition {
    Config { term: Term },
    Module { name: String },
    Runtime { condition: RuntimeCondition },
    Spec { id: String },
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Config { term } => write!(f, "{term}"),
            Condition::Module { name } => write!(f, "module {name} loaded at boot"),
            Condition::Runtime { condition } => write!(f, "{condition}"),
            Condition::Spec { id } => write!(f, "SPEC {id}"),
        }
    }
}

/// One exception line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exception {
    /// Symbol name without `CONFIG_`; matches a requirement that mentions it.
    pub option: String,
    pub conditions: Vec<Condition>,
    pub reason: String,
    pub line: usize,
}

/// A parsed exception profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Profile {
    pub name: String,
    pub description: String,
    /// Release patterns with `*` wildcards.
    pub releases: Vec<String>,
    pub targets: Vec<Target>,
    pub exceptions: Vec<Exception>,
    /// File the profile came from, for messages.
    pub file: String,
}

impl Profile {
    pub fn parse(file: &str, text: &str) -> Result<Self, PinError> {
        let mut name: Option<(String, String)> = None;
        let mut releases: Option<Vec<String>> = None;
        let mut targets: Option<Vec<Target>> = None;
        let mut exceptions = Vec::new();
        let mut last_line = 0;
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            last_line = line_no;
            let line = raw.trim_end();
            let mut cur = Cursor::new(line, file, line_no);
            cur.skip_ws();
            if cur.at_end() || cur.rest().starts_with('#') {
                continue;
            }
            if name.is_none() && !cur.rest().starts_with("profile") {
                return Err(cur.error(
                    "an exception profile starts with its name",
                    "begin with `profile NAME  # which kernel this is`",
                ));
            }
            if cur.eat_word("profile") {
                if name.is_some() {
                    return Err(cur.error(
                        "a second `profile` line",
                        "put each profile in its own .exceptions file",
                    ));
                }
                cur.skip_ws();
                let start = cur.pos;
                let n = word(&mut cur, |c| c.is_ascii_alphanumeric() || "._-".contains(c));
                if n.is_empty() {
                    return Err(cur.error_at(
                        start,
                        "missing profile name",
                        "write `profile NAME  # description` (letters, digits, `.`, `_`, `-`)",
                    ));
                }
                let description = cur.reason()?;
                name = Some((n.to_string(), description));
            } else if cur.eat_word("release") {
                let mut patterns = Vec::new();
                while cur.skip_ws() && !cur.at_end() && !cur.rest().starts_with('#') {
                    patterns.push(word(&mut cur, |c| !c.is_whitespace()).to_string());
                }
                if patterns.is_empty() {
                    return Err(cur.error(
                        "missing release pattern",
                        "write `release 6.12.*+deb12-cloud-amd64  # reason` (`*` matches anything)",
                    ));
                }
                cur.reason()?;
                releases = Some(patterns);
            } else if cur.eat_word("targets") {
                let mut list = Vec::new();
                while cur.skip_ws() && !cur.at_end() && !cur.rest().starts_with('#') {
                    let start = cur.pos;
                    let w = word(&mut cur, |c| !c.is_whitespace());
                    let target = w.parse::<Target>().map_err(|e| {
                        cur.error_at(start, &e, "targets are hyperv, wsl2 and qemu")
                    })?;
                    list.push(target);
                }
                if list.is_empty() {
                    return Err(
                        cur.error("missing targets", "write `targets hyperv qemu  # reason`")
                    );
                }
                cur.reason()?;
                targets = Some(list);
            } else if cur.rest().starts_with("CONFIG_") {
                exceptions.push(parse_exception(&mut cur)?);
            } else {
                return Err(cur.error(
                    &format!("unexpected `{}`", cur.word()),
                    "lines are `profile`, `release`, `targets`, or `CONFIG_NAME  CONDITION...  # reason`",
                ));
            }
        }
        let missing = |what: &str, fix: &str| PinError::Syntax {
            file: file.to_string(),
            line: last_line.max(1),
            column: 1,
            message: format!("the profile has no `{what}` line"),
            fix: fix.to_string(),
        };
        let (name, description) =
            name.ok_or_else(|| missing("profile", "add `profile NAME  # description`"))?;
        let releases =
            releases.ok_or_else(|| missing("release", "add `release PATTERN  # reason`"))?;
        let targets =
            targets.ok_or_else(|| missing("targets", "add `targets hyperv qemu  # reason`"))?;
        Ok(Profile {
            name,
            description,
            releases,
            targets,
            exceptions,
            file: file.to_string(),
        })
    }

    /// Whether this profile covers a kernel release.
    pub fn matches_release(&self, release: &str) -> bool {
        self.releases.iter().any(|p| glob_match(p, release))
    }

    pub fn exception_for(&self, option: &str) -> Option<&Exception> {
        self.exceptions.iter().find(|e| e.option == option)
    }
}

fn word<'a>(cur: &mut Cursor<'a>, pred: impl Fn(char) -> bool) -> &'a str {
    let rest = cur.rest();
    let n = rest.find(|c: char| !pred(c)).unwrap_or(rest.len());
    cur.pos += n;
    &rest[..n]
}

fn parse_exception(cur: &mut Cursor<'_>) -> Result<Exception, PinError> {
    cur.eat("CONFIG_");
    let option = word(cur, |c| c.is_ascii_alphanumeric() || c == '_').to_string();
    if option.is_empty() {
        return Err(cur.error(
            "missing symbol name after `CONFIG_`",
            "name the pinned option the exception is for",
        ));
    }
    let mut conditions = Vec::new();
    loop {
        let had_ws = cur.skip_ws();
        if cur.at_end() || cur.rest().starts_with('#') {
            break;
        }
        if !had_ws {
            return Err(cur.error(
                &format!("unexpected `{}` after CONFIG_{option}", cur.word()),
                "separate the option and each condition with blanks",
            ));
        }
        conditions.push(parse_condition(cur)?);
    }
    if conditions.is_empty() {
        return Err(cur.error(
            &format!("the exception for CONFIG_{option} names no compensating condition"),
            "add what makes it safe: CONFIG_X=..., module:NAME, sysctl:NAME=N, \
             lockdown:integrity, cmdline:TOKEN or spec:ID",
        ));
    }
    let reason = cur.reason()?;
    Ok(Exception {
        option,
        conditions,
        reason,
        line: cur.line,
    })
}

fn parse_condition(cur: &mut Cursor<'_>) -> Result<Condition, PinError> {
    let start = cur.pos;
    if cur.rest().starts_with("CONFIG_") {
        return Ok(Condition::Config { term: cur.term()? });
    }
    let token = word(cur, |c| !c.is_whitespace());
    let bad = |message: String, fix: &str| cur.error_at(start, &message, fix);
    let Some((kind, arg)) = token.split_once(':') else {
        return Err(bad(
            format!("unknown condition `{token}`"),
            "conditions are CONFIG_X=..., module:NAME, sysctl:NAME=N, sysctl:NAME>=N, \
             lockdown:LEVEL, cmdline:TOKEN and spec:ID",
        ));
    };
    match kind {
        "module" => {
            if arg.is_empty()
                || !arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(bad(
                    format!("`{arg}` is not a module name"),
                    "write module:NAME with the bare module name, e.g. module:hv_storvsc",
                ));
            }
            Ok(Condition::Module {
                name: normalize_module(arg),
            })
        }
        "sysctl" => {
            let (name, cmp, value) = if let Some((n, v)) = arg.split_once(">=") {
                (n, Cmp::AtLeast, v)
            } else if let Some((n, v)) = arg.split_once('=') {
                (n, Cmp::Eq, v)
            } else {
                return Err(bad(
                    format!("sysctl condition `{arg}` has no value"),
                    "write sysctl:NAME=N or sysctl:NAME>=N, e.g. sysctl:kernel.kexec_load_disabled=1",
                ));
            };
            let name_ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            let value: Option<i64> = value.parse().ok();
            match (name_ok, value) {
                (true, Some(value)) => Ok(Condition::Runtime {
                    condition: RuntimeCondition::Sysctl {
                        name: name.to_string(),
                        cmp,
                        value,
                    },
                }),
                _ => Err(bad(
                    format!("bad sysctl condition `{arg}`"),
                    "write sysctl:dotted.name=N with a decimal N",
                )),
            }
        }
        "lockdown" => match arg.parse::<LockdownLevel>() {
            Ok(level) if level > LockdownLevel::None => Ok(Condition::Runtime {
                condition: RuntimeCondition::Lockdown { level },
            }),
            _ => Err(bad(
                format!("bad lockdown level `{arg}`"),
                "write lockdown:integrity or lockdown:confidentiality",
            )),
        },
        "cmdline" => {
            if arg.is_empty() {
                return Err(bad(
                    "empty cmdline token".to_string(),
                    "write cmdline:TOKEN, e.g. cmdline:slab_nomerge",
                ));
            }
            Ok(Condition::Runtime {
                condition: RuntimeCondition::Cmdline {
                    token: arg.to_string(),
                },
            })
        }
        "spec" => {
            if arg.is_empty() || !arg.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(bad(
                    format!("bad SPEC id `{arg}`"),
                    "write spec:ID with the SPEC item, e.g. spec:P3",
                ));
            }
            Ok(Condition::Spec {
                id: arg.to_string(),
            })
        }
        other => Err(bad(
            format!("unknown condition kind `{other}`"),
            "conditions are CONFIG_X=..., module:NAME, sysctl:NAME=N, lockdown:LEVEL, \
             cmdline:TOKEN and spec:ID",
        )),
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    if !text.ends_with(last) {
        return false;
    }
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fragment::Want;

    const GOOD: &str = "\
# comment
profile test-kernel  # a test kernel
release 6.12.*+test  6.13.*  # releases
targets hyperv qemu  # reviewed targets

CONFIG_KEXEC  sysctl:kernel.kexec_load_disabled=1 lockdown:integrity  # kexec off at boot
CONFIG_DEVMEM  CONFIG_STRICT_DEVMEM=y  spec:P3  # strict devmem
CONFIG_HYPERV_STORAGE  module:hv-storvsc  # initramfs
CONFIG_X  sysctl:vm.mmap_rnd_bits>=32 cmdline:slab_nomerge  # both
";

    #[test]
    fn parses_a_profile() {
        let p = Profile::parse("k.exceptions", GOOD).unwrap();
        assert_eq!(p.name, "test-kernel");
        assert_eq!(p.targets, vec![Target::Hyperv, Target::Qemu]);
        assert!(p.matches_release("6.12.107+test"));
        assert!(p.matches_release("6.13.1"));
        assert!(!p.matches_release("6.12.107+deb12-cloud-amd64"));
        assert_eq!(p.exceptions.len(), 4);
        let kexec = p.exception_for("KEXEC").unwrap();
        assert_eq!(
            kexec.conditions,
            vec![
                Condition::Runtime {
                    condition: RuntimeCondition::Sysctl {
                        name: "kernel.kexec_load_disabled".into(),
                        cmp: Cmp::Eq,
                        value: 1
                    }
                },
                Condition::Runtime {
                    condition: RuntimeCondition::Lockdown {
                        level: LockdownLevel::Integrity
                    }
                },
            ]
        );
        let devmem = p.exception_for("DEVMEM").unwrap();
        assert_eq!(
            devmem.conditions[0],
            Condition::Config {
                term: Term {
                    option: "STRICT_DEVMEM".into(),
                    want: Want::BuiltIn
                }
            }
        );
        assert_eq!(
            p.exception_for("HYPERV_STORAGE").unwrap().conditions[0],
            Condition::Module {
                name: "hv_storvsc".into()
            }
        );
    }

    fn err(text: &str) -> String {
        Profile::parse("k.exceptions", text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn profile_errors() {
        let head = "profile p  # d\nrelease 6.*  # r\ntargets qemu  # t\n";
        let e = err(&format!("{head}CONFIG_KEXEC  # nothing\n"));
        assert!(
            e.contains("k.exceptions:4:") && e.contains("no compensating"),
            "{e}"
        );
        let e = err(&format!("{head}CONFIG_KEXEC sysctl:kernel.x=1\n"));
        assert!(e.contains("missing reason"), "{e}");
        let e = err(&format!("{head}CONFIG_KEXEC hope:yes  # r\n"));
        assert!(e.contains("unknown condition kind `hope`"), "{e}");
        let e = err(&format!("{head}CONFIG_KEXEC sysctl:kernel.x  # r\n"));
        assert!(e.contains("has no value"), "{e}");
        let e = err(&format!("{head}CONFIG_KEXEC lockdown:none  # r\n"));
        assert!(e.contains("bad lockdown level"), "{e}");
        let e = err("release 6.*  # r\n");
        assert!(e.contains("starts with its name"), "{e}");
        let e = err("profile p  # d\ntargets mars  # t\nrelease 6.*  # r\n");
        assert!(e.contains("unknown target `mars`"), "{e}");
        let e = err("profile p  # d\nrelease 6.*  # r\n");
        assert!(e.contains("no `targets` line"), "{e}");
    }

    #[test]
    fn globs() {
        assert!(glob_match(
            "6.12.*+deb12-cloud-amd64",
            "6.12.107+deb12-cloud-amd64"
        ));
        assert!(!glob_match(
            "6.12.*+deb12-cloud-amd64",
            "6.12.107+deb12-amd64"
        ));
        assert!(!glob_match(
            "6.12.*+deb12-cloud-amd64",
            "6.1.107+deb12-cloud-amd64"
        ));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a*b*c", "a-x-b-y-c"));
        assert!(!glob_match("a*b*c", "a-x-c-y-b"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("ab*ba", "aba"));
    }
}
