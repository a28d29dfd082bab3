//! Debian version numbers (`[epoch:]upstream[-revision]`) and their ordering.
//!
//! The ordering follows deb-version(7) exactly, because the resolver must pick the same
//! "newest" package apt would: a wrong comparison silently pins an older, vulnerable build.

use std::cmp::Ordering;
use std::fmt;

/// A parsed Debian version. Equality is dpkg equality (`1.0` == `0:1.0` == `1.0-0`), so the
/// type deliberately does not implement `Hash`.
#[derive(Clone, Debug)]
pub struct Version {
    original: String,
    epoch: u64,
    upstream_start: usize,
    upstream_end: usize,
    /// Start of the revision inside `original`, or `None` when there is no `-`.
    revision_start: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("empty version string")]
    Empty,
    #[error("version `{0}`: epoch must be a decimal number")]
    BadEpoch(String),
    #[error("version `{0}`: the upstream part is empty")]
    EmptyUpstream(String),
    #[error("version `{0}`: the revision after the last `-` is empty")]
    EmptyRevision(String),
    #[error("version `{version}`: character {ch:?} is not allowed (only A-Za-z0-9.+~ and, where meaningful, - and :)")]
    BadChar { version: String, ch: char },
}

impl Version {
    pub fn parse(s: &str) -> Result<Version, VersionError> {
        let trimmed = s.trim();
        if trimmed.is_empty() {
            return Err(VersionError::Empty);
        }
        let original = trimmed.to_string();
        let (epoch, upstream_start) = match original.find(':') {
            Some(colon) => {
                let e = &original[..colon];
                if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(VersionError::BadEpoch(original.clone()));
                }
                let epoch = e
                    .parse::<u64>()
                    .map_err(|_| VersionError::BadEpoch(original.clone()))?;
                (epoch, colon + 1)
            }
            None => (0, 0),
        };
        let rest = &original[upstream_start..];
        let (upstream_end, revision_start) = match rest.rfind('-') {
            Some(dash) => (upstream_start + dash, Some(upstream_start + dash + 1)),
            None => (original.len(), None),
        };
        if upstream_end == upstream_start {
            return Err(VersionError::EmptyUpstream(original.clone()));
        }
        if let Some(r) = revision_start {
            if r == original.len() {
                return Err(VersionError::EmptyRevision(original.clone()));
            }
        }
        // Colons are only legal inside upstream when an epoch is present, hyphens only
        // when a revision is present; this mirrors dpkg's own parser.
        let upstream = &original[upstream_start..upstream_end];
        for ch in upstream.chars() {
            let ok = ch.is_ascii_alphanumeric()
                || matches!(ch, '.' | '+' | '~')
                || (ch == '-' && revision_start.is_some())
                || (ch == ':' && upstream_start > 0);
            if !ok {
                return Err(VersionError::BadChar {
                    version: original.clone(),
                    ch,
                });
            }
        }
        if let Some(r) = revision_start {
            for ch in original[r..].chars() {
                if !(ch.is_ascii_alphanumeric() || matches!(ch, '.' | '+' | '~')) {
                    return Err(VersionError::BadChar {
                        version: original.clone(),
                        ch,
                    });
                }
            }
        }
        Ok(Version {
            original,
            epoch,
            upstream_start,
            upstream_end,
            revision_start,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.original
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn upstream(&self) -> &str {
        &self.original[self.upstream_start..self.upstream_end]
    }

    /// The Debian revision; empty when the version has none (dpkg treats that like "0").
    pub fn revision(&self) -> &str {
        match self.revision_start {
            Some(r) => &self.original[r..],
            None => "",
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

impl std::str::FromStr for Version {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Version::parse(s)
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Version {}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| compare_part(self.upstream(), other.upstream()))
            .then_with(|| compare_part(self.revision(), other.revision()))
    }
}

/// Sort weight of one byte in a non-digit run: `~` sorts before the end of the string, the end
/// before letters, letters before everything else.
fn weight(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(c) => c as i32 + 256,
    }
}

/// deb-version(7) comparison of one upstream or revision string: alternate non-digit runs
/// (compared by `weight`) and digit runs (compared numerically, any length).
pub fn compare_part(a: &str, b: &str) -> Ordering {
    let a = a.as_bytes();
    let b = b.as_bytes();
    let (mut i, mut j) = (0usize, 0usize);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let wa = weight(a.get(i).copied());
            let wb = weight(b.get(j).copied());
            if wa != wb {
                return wa.cmp(&wb);
            }
            i += 1;
            j += 1;
        }
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        let si = i;
        let sj = j;
        while i < a.len() && a[i].is_ascii_digit() {
            i += 1;
        }
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        // Leading zeros are gone, so a longer digit run is a larger number; equal lengths
        // compare lexically, which avoids overflow on absurdly long runs.
        let (da, db) = (&a[si..i], &b[sj..j]);
        let ord = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

/// Relation operators of Debian control files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// `<<`
    Lt,
    /// `<=` (also the obsolete `<`)
    Le,
    /// `=`
    Eq,
    /// `>=` (also the obsolete `>`)
    Ge,
    /// `>>`
    Gt,
}

impl Op {
    pub fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "<<" => Op::Lt,
            "<=" | "<" => Op::Le,
            "=" => Op::Eq,
            ">=" | ">" => Op::Ge,
            ">>" => Op::Gt,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<<",
            Op::Le => "<=",
            Op::Eq => "=",
            Op::Ge => ">=",
            Op::Gt => ">>",
        }
    }

    /// Whether `candidate OP reference` holds.
    pub fn holds(self, candidate: &Version, reference: &Version) -> bool {
        let ord = candidate.cmp(reference);
        match self {
            Op::Lt => ord == Ordering::Less,
            Op::Le => ord != Ordering::Greater,
            Op::Eq => ord == Ordering::Equal,
            Op::Ge => ord != Ordering::Less,
            Op::Gt => ord == Ordering::Greater,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A version constraint such as `(>= 1.0)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constraint {
    pub op: Op,
    pub version: Version,
}

impl Constraint {
    pub fn satisfied_by(&self, v: &Version) -> bool {
        self.op.holds(v, &self.version)
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op, self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn check(a: &str, ord: Ordering, b: &str) {
        assert_eq!(v(a).cmp(&v(b)), ord, "{a} vs {b}");
        assert_eq!(v(b).cmp(&v(a)), ord.reverse(), "{b} vs {a}");
    }

    #[test]
    fn required_cases() {
        check("1.0~rc1", Ordering::Less, "1.0");
        check("2:1", Ordering::Greater, "1:9");
        check("1.0-1", Ordering::Less, "1.0-1+deb12u1");
        check("6.1.192-2", Ordering::Greater, "6.1.176-1");
    }

    #[test]
    fn tilde_sorts_before_everything() {
        check("1.0~~", Ordering::Less, "1.0~");
        check("1.0~", Ordering::Less, "1.0");
        check("1.0~~a", Ordering::Less, "1.0~");
        check("1.0~rc1", Ordering::Less, "1.0~rc2");
        check("1.0~beta", Ordering::Less, "1.0~rc");
        check("2.0~1", Ordering::Greater, "1.9");
        check("1.0-1~bpo1", Ordering::Less, "1.0-1");
        check("1.0+~", Ordering::Greater, "1.0");
    }

    #[test]
    fn letters_before_non_letters() {
        check("1.0a", Ordering::Less, "1.0+");
        check("1.0a", Ordering::Less, "1.0.");
        check("1.0a", Ordering::Greater, "1.0");
        check("1.0+", Ordering::Greater, "1.0");
        // Among non-letters plain ASCII order decides: `+` (0x2b) < `.` (0x2e).
        check("1.0.", Ordering::Greater, "1.0+");
        check("a", Ordering::Less, "b");
        check("1a", Ordering::Less, "1b");
        check("1Z", Ordering::Less, "1a");
    }

    #[test]
    fn numeric_runs_compare_numerically() {
        check("1.10", Ordering::Greater, "1.9");
        check("1.010", Ordering::Equal, "1.10");
        check("10", Ordering::Greater, "9");
        check("1.0.0", Ordering::Greater, "1.0");
        check(
            "1.99999999999999999999999999",
            Ordering::Greater,
            "1.99999999999999999999999998",
        );
        check("1.2.3", Ordering::Less, "1.2.10");
    }

    #[test]
    fn epochs_and_revisions() {
        check("0:1.0", Ordering::Equal, "1.0");
        check("1.0", Ordering::Equal, "1.0-0");
        check("1:0", Ordering::Greater, "99999");
        check("1.0-2", Ordering::Greater, "1.0-1");
        check("1.0-10", Ordering::Greater, "1.0-9");
        check("1.0-1.1", Ordering::Greater, "1.0-1");
        check("1.0-1+b1", Ordering::Greater, "1.0-1");
        check("2.36-9+deb12u10", Ordering::Greater, "2.36-9+deb12u9");
        check("1.2-3-4", Ordering::Greater, "1.2-3-3");
        check("1:2.3:4-5", Ordering::Greater, "1:2.3:3-5");
        check(
            "20.10.24+dfsg1-1+deb12u1",
            Ordering::Greater,
            "20.10.24+dfsg1-1+b3",
        );
    }

    #[test]
    fn parts_are_exposed() {
        let x = v("2:1.2-3-4");
        assert_eq!(x.epoch(), 2);
        assert_eq!(x.upstream(), "1.2-3");
        assert_eq!(x.revision(), "4");
        assert_eq!(x.to_string(), "2:1.2-3-4");
        let y = v("1.0");
        assert_eq!(y.revision(), "");
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(Version::parse(""), Err(VersionError::Empty));
        assert!(matches!(
            Version::parse("a:1"),
            Err(VersionError::BadEpoch(_))
        ));
        assert!(matches!(
            Version::parse(":1"),
            Err(VersionError::BadEpoch(_))
        ));
        assert!(matches!(
            Version::parse("1:"),
            Err(VersionError::EmptyUpstream(_))
        ));
        assert!(matches!(
            Version::parse("-1"),
            Err(VersionError::EmptyUpstream(_))
        ));
        assert!(matches!(
            Version::parse("1.0-"),
            Err(VersionError::EmptyRevision(_))
        ));
        assert!(matches!(
            Version::parse("1.0_1"),
            Err(VersionError::BadChar { ch: '_', .. })
        ));
        assert!(matches!(
            Version::parse("1:1.0-1:2"),
            Err(VersionError::BadChar { ch: ':', .. })
        ));
        // A colon in upstream is only legal when there is an epoch.
        assert!(Version::parse("1.0:2").is_err());
        assert!(Version::parse("3:1.0:2").is_ok());
    }

    #[test]
    fn operators() {
        let c = |op, s| Constraint { op, version: v(s) };
        assert!(c(Op::Lt, "1.0").satisfied_by(&v("1.0~rc1")));
        assert!(!c(Op::Lt, "1.0").satisfied_by(&v("1.0")));
        assert!(c(Op::Le, "1.0").satisfied_by(&v("1.0")));
        assert!(!c(Op::Le, "1.0").satisfied_by(&v("1.0+b1")));
        assert!(c(Op::Eq, "1.0").satisfied_by(&v("0:1.0-0")));
        assert!(!c(Op::Eq, "1.0").satisfied_by(&v("1.0-1")));
        assert!(c(Op::Ge, "1.0").satisfied_by(&v("1.0")));
        assert!(!c(Op::Ge, "1.0").satisfied_by(&v("1.0~")));
        assert!(c(Op::Gt, "1.0").satisfied_by(&v("1.0.1")));
        assert!(!c(Op::Gt, "1.0").satisfied_by(&v("1.0")));
        assert_eq!(Op::parse("<"), Some(Op::Le));
        assert_eq!(Op::parse(">"), Some(Op::Ge));
        assert_eq!(Op::parse("=="), None);
    }

    /// Cross-checks every pair of a varied corpus against dpkg itself, when it is installed.
    #[test]
    fn agrees_with_dpkg() {
        let corpus = [
            "0",
            "1",
            "1.0",
            "1.0-0",
            "0:1.0",
            "1.0-1",
            "1.0-1+deb12u1",
            "1.0-1+b1",
            "1.0-1~bpo12+1",
            "1.0~rc1",
            "1.0~rc1-1",
            "1.0~~",
            "1.0a",
            "1.0+",
            "1.0.",
            "1.0.0",
            "1.00",
            "1.0+dfsg",
            "1.0+dfsg-1",
            "1:0.9",
            "2:1",
            "1:9",
            "6.1.192-2",
            "6.1.176-1",
            "2.36-9+deb12u10",
            "2.36-9+deb12u9",
            "20.10.24+dfsg1-1+deb12u1",
            "1.6.20~ds1-1+b1",
            "1.7.24~ds1-1",
            "3.0.17-1~deb12u2",
            "9.2p1-2+deb12u7",
            "1.2-3-4",
            "1.2-3-10",
            "a",
            "A",
            "1Z",
            "1a",
            "1.0-a",
            "1.0-A",
            "1.0-1.1",
            "10",
            "9",
            "1.10",
            "1.9",
        ];
        let probe = duct::cmd!("dpkg", "--compare-versions", "1", "lt", "2")
            .stdout_null()
            .stderr_null()
            .unchecked()
            .run();
        if !eci_test_support::prerequisite(
            matches!(probe, Ok(ref o) if o.status.success()),
            "dpkg cross-check: dpkg is not installed",
        ) {
            return;
        }
        // dpkg's order is total, so agreeing on every adjacent pair of our sorted corpus
        // means agreeing on every pair, at n-1 dpkg runs instead of n^2.
        let mut sorted: Vec<Version> = corpus.iter().map(|s| v(s)).collect();
        sorted.sort();
        let mut mismatches = Vec::new();
        for w in sorted.windows(2) {
            let op = if w[0] == w[1] { "eq" } else { "lt" };
            let ok = duct::cmd!(
                "dpkg",
                "--compare-versions",
                w[0].as_str(),
                op,
                w[1].as_str()
            )
            .stdout_null()
            .stderr_null()
            .unchecked()
            .run()
            .map(|o| o.status.success())
            .unwrap_or(false);
            if !ok {
                mismatches.push(format!("{} {op} {}", w[0], w[1]));
            }
        }
        assert!(mismatches.is_empty(), "dpkg disagrees with: {mismatches:?}");
    }

    #[test]
    fn sorting_is_total_and_stable() {
        let mut xs: Vec<Version> = [
            "1.0", "1.0~rc1", "1:0.1", "1.0-1", "1.0+b1", "0.9", "1.0a", "1.0~~",
        ]
        .iter()
        .map(|s| v(s))
        .collect();
        xs.sort();
        let got: Vec<&str> = xs.iter().map(Version::as_str).collect();
        assert_eq!(
            got,
            ["0.9", "1.0~~", "1.0~rc1", "1.0", "1.0-1", "1.0a", "1.0+b1", "1:0.1"]
        );
    }
}
