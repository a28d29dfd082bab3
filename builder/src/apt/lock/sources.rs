//! The machine's apt sources: which archive URI carries which suite.
//!
//! The mirror host never appears in a lockfile (lockfiles are committed and reviewed); it is
//! looked up here at lock and fetch time, so every machine uses the mirror it is configured for.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SourcesError {
    #[error("cannot read apt sources file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Malformed {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("no apt source carries suite `{suite}`{detail} (searched: {searched}{ignored}). Add the suite to the apt sources or pass `--mirror {suite}=URL` (or `--mirror URL` for every suite)")]
    SuiteNotFound {
        suite: String,
        detail: String,
        searched: String,
        ignored: String,
    },
    #[error("`--mirror {arg}`: {message}")]
    BadOverride { arg: String, message: String },
}

/// How a source says its Release file must be signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignedBy {
    /// Absolute keyring paths and/or key fingerprints that must have made a good signature.
    Keys {
        keyrings: Vec<PathBuf>,
        fingerprints: Vec<String>,
    },
    /// An ASCII-armored public key block embedded in a deb822 `Signed-By:` field.
    Inline(String),
}

/// One `deb` entry with a single URI (deb822 stanzas with several URIs are split).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AptSource {
    pub file: PathBuf,
    pub line: usize,
    pub uri: String,
    pub suites: Vec<String>,
    pub components: Vec<String>,
    pub signed_by: Option<SignedBy>,
    /// `None` means every architecture the archive has.
    pub architectures: Option<Vec<String>>,
    pub trusted: bool,
    pub check_valid_until: bool,
}

/// All `deb` sources found under an apt configuration directory, in apt's own order.
#[derive(Clone, Debug, Default)]
pub struct AptSources {
    pub sources: Vec<AptSource>,
    /// Files that were read (for error messages).
    pub searched: Vec<PathBuf>,
    /// Files in `sources.list.d` that apt ignores because of their extension.
    pub ignored: Vec<PathBuf>,
}

impl AptSources {
    /// Loads `ROOT/sources.list` and `ROOT/sources.list.d/*.{list,sources}`. `root` is normally
    /// `/etc/apt`; tests pass a fixture directory.
    pub fn load(root: &Path) -> Result<AptSources, SourcesError> {
        let mut out = AptSources::default();
        let main = root.join("sources.list");
        if main.is_file() {
            let text = read(&main)?;
            out.sources.extend(parse_one_line(&text, &main)?);
            out.searched.push(main);
        }
        let dir = root.join("sources.list.d");
        if dir.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|source| SourcesError::Read {
                    path: dir.clone(),
                    source,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            // apt reads the parts in lexical order, and "first source wins" depends on it.
            entries.sort();
            for path in entries {
                let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
                match ext {
                    "list" => {
                        let text = read(&path)?;
                        out.sources.extend(parse_one_line(&text, &path)?);
                        out.searched.push(path);
                    }
                    "sources" => {
                        let text = read(&path)?;
                        out.sources.extend(parse_deb822(&text, &path)?);
                        out.searched.push(path);
                    }
                    _ => out.ignored.push(path),
                }
            }
        }
        Ok(out)
    }
}

fn read(path: &Path) -> Result<String, SourcesError> {
    std::fs::read_to_string(path).map_err(|source| SourcesError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn malformed(path: &Path, line: usize, message: impl Into<String>) -> SourcesError {
    SourcesError::Malformed {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" | "on" => Some(true),
        "no" | "false" | "0" | "off" => Some(false),
        _ => None,
    }
}

fn parse_signed_by(value: &str, path: &Path, line: usize) -> Result<SignedBy, SourcesError> {
    if value.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----") {
        return Ok(SignedBy::Inline(value.trim().to_string()));
    }
    let mut keyrings = Vec::new();
    let mut fingerprints = Vec::new();
    for item in value.split(|c: char| c == ',' || c.is_whitespace()) {
        if item.is_empty() {
            continue;
        }
        if item.starts_with('/') {
            keyrings.push(PathBuf::from(item));
            continue;
        }
        // apt allows a trailing `!` to pin a subkey; the fingerprint itself is what we match.
        let fpr = item.trim_end_matches('!');
        if matches!(fpr.len(), 16 | 40 | 64) && fpr.bytes().all(|b| b.is_ascii_hexdigit()) {
            fingerprints.push(fpr.to_ascii_uppercase());
            continue;
        }
        return Err(malformed(
            path,
            line,
            format!("Signed-By `{item}` is neither an absolute keyring path, a key fingerprint, nor an inline key block"),
        ));
    }
    if keyrings.is_empty() && fingerprints.is_empty() {
        return Err(malformed(path, line, "Signed-By is empty"));
    }
    Ok(SignedBy::Keys {
        keyrings,
        fingerprints,
    })
}

fn split_list(v: &str) -> Vec<String> {
    v.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses the classic one-line format: `deb [opt=val ...] URI SUITE [COMPONENT...]`.
pub fn parse_one_line(text: &str, path: &Path) -> Result<Vec<AptSource>, SourcesError> {
    let mut out = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line_no = idx + 1;
        let line = match raw.find('#') {
            Some(i) => &raw[..i],
            None => raw,
        }
        .trim();
        if line.is_empty() {
            continue;
        }
        let (kind, rest) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| malformed(path, line_no, format!("`{line}` has no URI")))?;
        let rest = rest.trim_start();
        let (options, rest) = if let Some(r) = rest.strip_prefix('[') {
            let close = r
                .find(']')
                .ok_or_else(|| malformed(path, line_no, "option list `[` is not closed by `]`"))?;
            (&r[..close], r[close + 1..].trim_start())
        } else {
            ("", rest)
        };
        match kind {
            "deb" => {}
            "deb-src" => continue,
            other => {
                return Err(malformed(
                    path,
                    line_no,
                    format!("unknown source type `{other}` (expected `deb` or `deb-src`)"),
                ))
            }
        }
        let mut words = rest.split_whitespace();
        let uri = words
            .next()
            .ok_or_else(|| malformed(path, line_no, "missing URI"))?;
        let suite = words
            .next()
            .ok_or_else(|| malformed(path, line_no, "missing suite"))?;
        let components: Vec<String> = words.map(str::to_string).collect();
        let mut src = AptSource {
            file: path.to_path_buf(),
            line: line_no,
            uri: uri.trim_end_matches('/').to_string(),
            suites: vec![suite.to_string()],
            components,
            signed_by: None,
            architectures: None,
            trusted: false,
            check_valid_until: true,
        };
        for opt in options.split_whitespace() {
            let (key, value) = opt.split_once('=').ok_or_else(|| {
                malformed(path, line_no, format!("option `{opt}` is not `key=value`"))
            })?;
            let key = key.trim_end_matches(['+', '-']);
            let bad_bool = || malformed(path, line_no, format!("option `{opt}` needs yes or no"));
            match key {
                "arch" => src.architectures = Some(split_list(value)),
                "signed-by" => src.signed_by = Some(parse_signed_by(value, path, line_no)?),
                "trusted" => src.trusted = parse_bool(value).ok_or_else(bad_bool)?,
                "check-valid-until" => {
                    src.check_valid_until = parse_bool(value).ok_or_else(bad_bool)?
                }
                // Options such as lang= or target= do not affect binary index selection.
                _ => {}
            }
        }
        out.push(src);
    }
    Ok(out)
}

/// Parses deb822 `.sources` files: stanzas of `Field: value`, `#` comment lines, continuation
/// lines starting with whitespace (a lone `.` stands for an empty line).
pub fn parse_deb822(text: &str, path: &Path) -> Result<Vec<AptSource>, SourcesError> {
    let mut out = Vec::new();
    let mut stanza: Vec<(String, String, usize)> = Vec::new();
    let mut start = 0usize;
    let lines: Vec<&str> = text.lines().collect();
    for i in 0..=lines.len() {
        let line = lines.get(i).copied();
        let line_no = i + 1;
        match line {
            Some(l) if l.starts_with('#') => continue,
            Some(l) if !l.trim().is_empty() => {
                if l.starts_with(' ') || l.starts_with('\t') {
                    let (_, value, _) = stanza.last_mut().ok_or_else(|| {
                        malformed(path, line_no, "continuation line before any field")
                    })?;
                    let t = l.trim();
                    value.push('\n');
                    if t != "." {
                        value.push_str(t);
                    }
                } else {
                    let (name, value) = l.split_once(':').ok_or_else(|| {
                        malformed(path, line_no, format!("`{l}` is not `Field: value`"))
                    })?;
                    if stanza.is_empty() {
                        start = line_no;
                    }
                    stanza.push((
                        name.trim().to_ascii_lowercase(),
                        value.trim().to_string(),
                        line_no,
                    ));
                }
            }
            _ => {
                if !stanza.is_empty() {
                    out.extend(deb822_stanza(&stanza, path, start)?);
                    stanza.clear();
                }
            }
        }
    }
    Ok(out)
}

fn deb822_stanza(
    fields: &[(String, String, usize)],
    path: &Path,
    start: usize,
) -> Result<Vec<AptSource>, SourcesError> {
    let get = |name: &str| {
        fields
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, v, l)| (v.as_str(), *l))
    };
    let bool_field = |name: &str, default: bool| -> Result<bool, SourcesError> {
        match get(name) {
            None => Ok(default),
            Some((v, l)) => parse_bool(v)
                .ok_or_else(|| malformed(path, l, format!("{name}: `{v}` must be yes or no"))),
        }
    };
    if !bool_field("enabled", true)? {
        return Ok(Vec::new());
    }
    let types = get("types").map(|(v, _)| split_list(v)).unwrap_or_default();
    if types.is_empty() {
        return Err(malformed(path, start, "stanza has no `Types:` field"));
    }
    if !types.iter().any(|t| t == "deb") {
        return Ok(Vec::new());
    }
    let uris = get("uris").map(|(v, _)| split_list(v)).unwrap_or_default();
    if uris.is_empty() {
        return Err(malformed(path, start, "stanza has no `URIs:` field"));
    }
    let suites = get("suites")
        .map(|(v, _)| split_list(v))
        .unwrap_or_default();
    if suites.is_empty() {
        return Err(malformed(path, start, "stanza has no `Suites:` field"));
    }
    let components = get("components")
        .map(|(v, _)| split_list(v))
        .unwrap_or_default();
    let signed_by = match get("signed-by") {
        Some((v, l)) => Some(parse_signed_by(v, path, l)?),
        None => None,
    };
    let architectures = get("architectures").map(|(v, _)| split_list(v));
    let trusted = bool_field("trusted", false)?;
    let check_valid_until = bool_field("check-valid-until", true)?;
    Ok(uris
        .into_iter()
        .map(|uri| AptSource {
            file: path.to_path_buf(),
            line: start,
            uri: uri.trim_end_matches('/').to_string(),
            suites: suites.clone(),
            components: components.clone(),
            signed_by: signed_by.clone(),
            architectures: architectures.clone(),
            trusted,
            check_valid_until,
        })
        .collect())
}

/// `--mirror` overrides: one URL for every suite and/or `SUITE=URL` for single suites.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MirrorOverrides {
    pub all: Option<String>,
    pub per_suite: BTreeMap<String, String>,
}

fn scheme_supported(uri: &str) -> bool {
    uri.starts_with("http://") || uri.starts_with("https://") || uri.starts_with("file:/")
}

impl MirrorOverrides {
    /// Parses the values of repeated `--mirror` options.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<MirrorOverrides, SourcesError> {
        let mut out = MirrorOverrides::default();
        for arg in args {
            let arg = arg.as_ref().trim();
            let bad = |message: String| SourcesError::BadOverride {
                arg: arg.to_string(),
                message,
            };
            // A suite name never contains `:` or `/`, a URL always does before any `=`.
            let (suite, url) = match arg.split_once('=') {
                Some((s, u)) if !s.is_empty() && !s.contains([':', '/']) => (Some(s), u),
                _ => (None, arg),
            };
            if !scheme_supported(url) {
                return Err(bad(
                    "the URL must start with http://, https:// or file:/".to_string()
                ));
            }
            let url = url.trim_end_matches('/').to_string();
            match suite {
                Some(s) => {
                    if out.per_suite.insert(s.to_string(), url).is_some() {
                        return Err(bad(format!("suite `{s}` is overridden twice")));
                    }
                }
                None => {
                    if out.all.replace(url).is_some() {
                        return Err(bad(
                            "more than one all-suites mirror given; use SUITE=URL for per-suite mirrors"
                                .to_string(),
                        ));
                    }
                }
            }
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_none() && self.per_suite.is_empty()
    }
}

/// Where a suite's archive lives, and how its Release file must be verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuiteMirror {
    pub suite: String,
    /// Archive root without trailing slash; `dists/` and `pool/` are below it.
    pub base_uri: String,
    /// Human-readable origin: `FILE:LINE` or `--mirror`.
    pub origin: String,
    pub signed_by: Option<SignedBy>,
    /// `trusted=yes`: apt skips signature checks; so do we, and the lockfile says so.
    pub trusted: bool,
    pub check_valid_until: bool,
}

impl SuiteMirror {
    /// The URL of a path relative to the archive root (`dists/...` or `pool/...`).
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base_uri, path.trim_start_matches('/'))
    }
}

impl fmt::Display for SuiteMirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} from {} ({})", self.suite, self.base_uri, self.origin)
    }
}

/// Finds the archive that carries `suite` for `arch` and every one of `components` (an empty
/// slice accepts any source). The first matching source in apt's order wins; an override in
/// `overrides` replaces the URI but keeps the signing configuration of a matching source.
pub fn mirror_for_suite(
    sources: &AptSources,
    overrides: &MirrorOverrides,
    suite: &str,
    arch: &str,
    components: &[String],
) -> Result<SuiteMirror, SourcesError> {
    let carries_suite = |s: &&AptSource| s.suites.iter().any(|x| x == suite);
    let fits = |s: &AptSource| -> Result<(), String> {
        if let Some(archs) = &s.architectures {
            if !archs.iter().any(|a| a == arch) {
                return Err(format!(
                    "{}:{} is limited to architectures {}",
                    s.file.display(),
                    s.line,
                    archs.join(",")
                ));
            }
        }
        let missing: Vec<&str> = components
            .iter()
            .filter(|c| !s.components.contains(c))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "{}:{} lacks component(s) {}",
                s.file.display(),
                s.line,
                missing.join(",")
            ));
        }
        if !scheme_supported(&s.uri) {
            return Err(format!(
                "{}:{} uses an unsupported URI scheme ({})",
                s.file.display(),
                s.line,
                s.uri
            ));
        }
        Ok(())
    };
    let mut notes = Vec::new();
    let mut found = None;
    for s in sources.sources.iter().filter(carries_suite) {
        match fits(s) {
            Ok(()) => {
                found = Some(s);
                break;
            }
            Err(note) => notes.push(note),
        }
    }
    let override_uri = overrides.per_suite.get(suite).or(overrides.all.as_ref());
    if let Some(uri) = override_uri {
        // Signing configuration is about the archive, not the host serving it, so a matching
        // source (even one that does not fit otherwise) still supplies it.
        let signing = found.or_else(|| sources.sources.iter().find(carries_suite));
        return Ok(SuiteMirror {
            suite: suite.to_string(),
            base_uri: uri.clone(),
            origin: "--mirror".to_string(),
            signed_by: signing.and_then(|s| s.signed_by.clone()),
            trusted: false,
            check_valid_until: signing.map(|s| s.check_valid_until).unwrap_or(true),
        });
    }
    match found {
        Some(s) => Ok(SuiteMirror {
            suite: suite.to_string(),
            base_uri: s.uri.clone(),
            origin: format!("{}:{}", s.file.display(), s.line),
            signed_by: s.signed_by.clone(),
            trusted: s.trusted,
            check_valid_until: s.check_valid_until,
        }),
        None => {
            let join = |v: &[PathBuf]| {
                v.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let searched = if sources.searched.is_empty() {
                "no sources.list or sources.list.d/*.list|*.sources files exist".to_string()
            } else {
                join(&sources.searched)
            };
            let ignored = if sources.ignored.is_empty() {
                String::new()
            } else {
                format!("; ignored by extension: {}", join(&sources.ignored))
            };
            let detail = if notes.is_empty() {
                format!(" for {arch}")
            } else {
                format!(" for {arch} usably: {}", notes.join("; "))
            };
            Err(SourcesError::SuiteNotFound {
                suite: suite.to_string(),
                detail,
                searched,
                ignored,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE_LINE: &str = "\
# a comment
deb http://mirror.example/debian bookworm main contrib # trailing comment
deb-src http://mirror.example/debian bookworm main
deb [ arch=amd64,arm64 signed-by=/usr/share/keyrings/x.gpg ] http://mirror.example/debian/ bookworm-updates main
deb [trusted=yes check-valid-until=no] file:/srv/repo stable main

";

    const DEB822: &str = "\
Types: deb deb-src
# a comment inside a stanza
URIs: http://one.example/debian https://two.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main
Enabled: no

Types: deb-src
URIs: http://src.example/debian
Suites: trixie
Components: main

Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main non-free-firmware
Check-Valid-Until: no
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mDMEZfakeKEY
 -----END PGP PUBLIC KEY BLOCK-----
";

    #[test]
    fn one_line_format() {
        let s = parse_one_line(ONE_LINE, Path::new("sources.list")).unwrap();
        assert_eq!(s.len(), 3, "deb-src and comments are skipped: {s:#?}");
        assert_eq!(s[0].uri, "http://mirror.example/debian");
        assert_eq!(s[0].suites, ["bookworm"]);
        assert_eq!(
            s[0].components,
            ["main", "contrib"],
            "trailing comment dropped"
        );
        assert_eq!(s[0].line, 2);
        assert_eq!(
            s[1].uri, "http://mirror.example/debian",
            "trailing slash trimmed"
        );
        assert_eq!(
            s[1].architectures.as_deref(),
            Some(&["amd64".to_string(), "arm64".to_string()][..])
        );
        assert_eq!(
            s[1].signed_by,
            Some(SignedBy::Keys {
                keyrings: vec![PathBuf::from("/usr/share/keyrings/x.gpg")],
                fingerprints: vec![]
            })
        );
        assert!(s[2].trusted);
        assert!(!s[2].check_valid_until);
        assert!(s[0].check_valid_until && !s[0].trusted);
    }

    #[test]
    fn one_line_errors_name_file_and_line() {
        let e = parse_one_line(
            "\n\ndeb [arch=amd64 http://x.example/ s m\n",
            Path::new("f.list"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("f.list:3:"), "{e}");
        let e = parse_one_line("deb http://x.example/\n", Path::new("f.list"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing suite"), "{e}");
        let e = parse_one_line("rpm http://x.example/ s\n", Path::new("f.list"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown source type"), "{e}");
        let e = parse_one_line(
            "deb [signed-by=relative.gpg] http://x.example/ s\n",
            Path::new("f.list"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("Signed-By"), "{e}");
    }

    #[test]
    fn deb822_format() {
        let s = parse_deb822(DEB822, Path::new("d.sources")).unwrap();
        assert_eq!(
            s.len(),
            3,
            "two URIs expand, disabled and deb-src-only skipped: {s:#?}"
        );
        assert_eq!(s[0].uri, "http://one.example/debian");
        assert_eq!(s[1].uri, "https://two.example/debian");
        assert_eq!(s[0].suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(s[0].line, 1);
        assert_eq!(
            s[0].signed_by,
            Some(SignedBy::Keys {
                keyrings: vec![PathBuf::from(
                    "/usr/share/keyrings/debian-archive-keyring.gpg"
                )],
                fingerprints: vec![]
            })
        );
        let sec = &s[2];
        assert_eq!(sec.suites, ["bookworm-security"]);
        assert_eq!(sec.components, ["main", "non-free-firmware"]);
        assert!(!sec.check_valid_until);
        match &sec.signed_by {
            Some(SignedBy::Inline(k)) => {
                assert!(
                    k.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZfakeKEY\n"),
                    "{k:?}"
                );
            }
            other => panic!("expected an inline key, got {other:?}"),
        }
    }

    #[test]
    fn deb822_fingerprints_and_errors() {
        let s = parse_deb822(
            "Types: deb\nURIs: http://x.example/d\nSuites: s\nComponents: main\nSigned-By: 4CB50190207B4758A3F73A796ED0E7B82643E131, /k.gpg\n",
            Path::new("f.sources"),
        )
        .unwrap();
        assert_eq!(
            s[0].signed_by,
            Some(SignedBy::Keys {
                keyrings: vec![PathBuf::from("/k.gpg")],
                fingerprints: vec!["4CB50190207B4758A3F73A796ED0E7B82643E131".into()]
            })
        );
        let e = parse_deb822("Types: deb\nSuites: s\n", Path::new("f.sources"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("f.sources:1") && e.contains("URIs"), "{e}");
        let e = parse_deb822(
            "Types: deb\nURIs: http://x.example/\nSuites: s\nEnabled: maybe\n",
            Path::new("f.sources"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("f.sources:4") && e.contains("yes or no"), "{e}");
        let e = parse_deb822(" leading continuation\n", Path::new("f.sources"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("continuation"), "{e}");
    }

    fn fixture_root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("sources.list"),
            "deb http://main.example/debian bookworm main\n",
        )
        .unwrap();
        let d = dir.path().join("sources.list.d");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("b.sources"), DEB822).unwrap();
        std::fs::write(
            d.join("a.list"),
            "deb [arch=arm64] http://arm.example/debian bookworm-updates main\n",
        )
        .unwrap();
        std::fs::write(
            d.join("c.list.disabled-by-farm"),
            "deb http://never.example/debian trixie main\n",
        )
        .unwrap();
        std::fs::write(
            d.join("d.sources.disabled"),
            "Types: deb\nURIs: http://never.example/debian\nSuites: trixie\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn load_orders_files_and_ignores_other_extensions() {
        let root = fixture_root();
        let s = AptSources::load(root.path()).unwrap();
        let files: Vec<String> = s
            .searched
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(files, ["sources.list", "a.list", "b.sources"]);
        assert_eq!(s.ignored.len(), 2);
        assert!(s.sources.iter().all(|x| !x.uri.contains("never")));
    }

    #[test]
    fn suite_lookup_and_overrides() {
        let root = fixture_root();
        let s = AptSources::load(root.path()).unwrap();
        let main = vec!["main".to_string()];
        let none = MirrorOverrides::default();

        let m = mirror_for_suite(&s, &none, "bookworm", "amd64", &main).unwrap();
        assert_eq!(
            m.base_uri, "http://main.example/debian",
            "sources.list comes first"
        );
        assert!(m.origin.ends_with("sources.list:1"), "{}", m.origin);
        assert_eq!(
            m.url("dists/bookworm/InRelease"),
            "http://main.example/debian/dists/bookworm/InRelease"
        );

        // a.list carries bookworm-updates only for arm64, so amd64 falls through to b.sources.
        let m = mirror_for_suite(&s, &none, "bookworm-updates", "amd64", &main).unwrap();
        assert_eq!(m.base_uri, "http://one.example/debian");
        let m = mirror_for_suite(&s, &none, "bookworm-updates", "arm64", &main).unwrap();
        assert_eq!(m.base_uri, "http://arm.example/debian");

        // The disabled stanza is skipped; the later enabled one wins.
        let m = mirror_for_suite(&s, &none, "bookworm-security", "amd64", &main).unwrap();
        assert!(matches!(m.signed_by, Some(SignedBy::Inline(_))));
        assert!(!m.check_valid_until);

        let e = mirror_for_suite(&s, &none, "trixie", "amd64", &main)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`trixie`"), "{e}");
        assert!(
            e.contains("b.sources") && e.contains("c.list.disabled-by-farm"),
            "{e}"
        );
        assert!(e.contains("--mirror trixie=URL"), "{e}");

        let e = mirror_for_suite(&s, &none, "bookworm", "amd64", &["contrib".to_string()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("lacks component(s) contrib"), "{e}");

        let o = MirrorOverrides::parse(&[
            "http://snap.example/debian/",
            "bookworm-security=http://snap.example/sec",
        ])
        .unwrap();
        let m = mirror_for_suite(&s, &o, "bookworm", "amd64", &main).unwrap();
        assert_eq!(m.base_uri, "http://snap.example/debian");
        assert_eq!(m.origin, "--mirror");
        let m = mirror_for_suite(&s, &o, "bookworm-security", "amd64", &main).unwrap();
        assert_eq!(m.base_uri, "http://snap.example/sec");
        assert!(
            matches!(m.signed_by, Some(SignedBy::Inline(_))),
            "signing config is kept"
        );
        let m = mirror_for_suite(&s, &o, "trixie", "amd64", &main).unwrap();
        assert_eq!(
            m.base_uri, "http://snap.example/debian",
            "overrides need no source"
        );
        assert_eq!(m.signed_by, None);
    }

    #[test]
    fn override_parsing_errors() {
        assert!(MirrorOverrides::parse(&["ftp://x.example/"]).is_err());
        assert!(MirrorOverrides::parse(&["http://a.example/", "http://b.example/"]).is_err());
        assert!(MirrorOverrides::parse(&["s=http://a.example/", "s=http://b.example/"]).is_err());
        let o = MirrorOverrides::parse(&["http://a.example/x?y=z"]).unwrap();
        assert_eq!(o.all.as_deref(), Some("http://a.example/x?y=z"));
        assert!(MirrorOverrides::parse::<&str>(&[]).unwrap().is_empty());
    }

    #[test]
    fn missing_root_reports_no_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = AptSources::load(dir.path()).unwrap();
        let e = mirror_for_suite(&s, &MirrorOverrides::default(), "bookworm", "amd64", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no sources.list"), "{e}");
    }
}
