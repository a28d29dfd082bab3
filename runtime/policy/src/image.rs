//! Image references the way docker normalises them, and the rules of
//! `enhancedContainerIsolation.dockerSocketMount.imageList.images` (SPEC B4).
//!
//! Pure functions: the guard normalises the names and digests of the image behind a container
//! (its RepoTags and RepoDigests) and asks each rule whether it matches. Comparing by digest is
//! what stops a retagged image from passing.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub const DEFAULT_DOMAIN: &str = "docker.io";
pub const DEFAULT_TAG: &str = "latest";
const OFFICIAL_REPO_PREFIX: &str = "library/";
/// docker refuses repository names longer than this.
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct ImageRefError {
    pub reference: String,
    pub reason: String,
}

fn err(reference: &str, reason: impl Into<String>) -> ImageRefError {
    ImageRefError {
        reference: reference.to_string(),
        reason: reason.into(),
    }
}

/// A fully normalised reference: `domain/path[:tag][@sha256:hex]`, tag `latest` filled in when
/// neither a tag nor a digest was given (docker's `TagNameOnly`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    pub domain: String,
    pub path: String,
    pub tag: Option<String>,
    /// `sha256:<64 lowercase hex>`.
    pub digest: Option<String>,
}

impl ImageRef {
    /// `domain/path`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = ImageRefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        normalise(s)
    }
}

/// Normalise an image reference as `docker pull` would: `alpine` becomes
/// `docker.io/library/alpine:latest`, `index.docker.io` becomes `docker.io`, a registry with a
/// port (`localhost:5000/x`) stays a registry.
pub fn normalise(reference: &str) -> Result<ImageRef, ImageRefError> {
    let parsed = split(reference, false)?;
    let tag = match (&parsed.tag, &parsed.digest) {
        (None, None) => Some(DEFAULT_TAG.to_string()),
        (Some(TagSpec::Exact(t)), _) => Some(t.clone()),
        (Some(TagSpec::Any), _) => unreachable!("wildcards are rejected when not allowed"),
        (None, Some(_)) => None,
    };
    Ok(ImageRef {
        domain: parsed.domain,
        path: parsed.path,
        tag,
        digest: parsed.digest,
    })
}

/// One entry of `imageList.images`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRule {
    /// `*`: every image may mount the engine socket.
    Any,
    /// `name` (tag `latest`) or `name:tag`.
    Tag { name: String, tag: String },
    /// `name:*`: any tag or digest of that repository.
    AnyTag { name: String },
    /// `name@sha256:...` (a tag written before the digest is kept only for display).
    Digest {
        name: String,
        tag: Option<String>,
        digest: String,
    },
}

impl ImageRule {
    pub fn parse(rule: &str) -> Result<ImageRule, ImageRefError> {
        if rule == "*" {
            return Ok(ImageRule::Any);
        }
        let p = split(rule, true)?;
        let name = format!("{}/{}", p.domain, p.path);
        Ok(match (p.tag, p.digest) {
            (tag, Some(digest)) => {
                if matches!(tag, Some(TagSpec::Any)) {
                    return Err(err(
                        rule,
                        "a digest pins one image; `:*` next to it is contradictory (drop one of them)",
                    ));
                }
                ImageRule::Digest {
                    name,
                    tag: tag.map(|t| match t {
                        TagSpec::Exact(t) => t,
                        TagSpec::Any => unreachable!(),
                    }),
                    digest,
                }
            }
            (Some(TagSpec::Any), None) => ImageRule::AnyTag { name },
            (Some(TagSpec::Exact(tag)), None) => ImageRule::Tag { name, tag },
            (None, None) => ImageRule::Tag {
                name,
                tag: DEFAULT_TAG.to_string(),
            },
        })
    }

    /// Whether an image known by `reference` (already normalised) is allowed by this rule.
    /// A digest rule needs the digest; a tag rule needs that exact tag.
    pub fn matches(&self, reference: &ImageRef) -> bool {
        match self {
            ImageRule::Any => true,
            ImageRule::AnyTag { name } => *name == reference.name(),
            ImageRule::Tag { name, tag } => {
                *name == reference.name() && reference.tag.as_deref() == Some(tag.as_str())
            }
            ImageRule::Digest { name, digest, .. } => {
                *name == reference.name() && reference.digest.as_deref() == Some(digest.as_str())
            }
        }
    }

    /// Convenience for callers holding a string: normalises `reference` first. An unparsable
    /// reference matches nothing but `*`, so a bad name never widens access.
    pub fn matches_str(&self, reference: &str) -> bool {
        match normalise(reference) {
            Ok(r) => self.matches(&r),
            Err(_) => matches!(self, ImageRule::Any),
        }
    }
}

impl fmt::Display for ImageRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRule::Any => write!(f, "*"),
            ImageRule::Tag { name, tag } => write!(f, "{name}:{tag}"),
            ImageRule::AnyTag { name } => write!(f, "{name}:*"),
            ImageRule::Digest { name, tag, digest } => match tag {
                Some(t) => write!(f, "{name}:{t}@{digest}"),
                None => write!(f, "{name}@{digest}"),
            },
        }
    }
}

impl FromStr for ImageRule {
    type Err = ImageRefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRule::parse(s)
    }
}

// Stored in effective.json in its normalised text form, which re-parses to the same rule.
impl Serialize for ImageRule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ImageRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ImageRule::parse(&s).map_err(serde::de::Error::custom)
    }
}

enum TagSpec {
    Exact(String),
    Any,
}

struct Parsed {
    domain: String,
    path: String,
    tag: Option<TagSpec>,
    digest: Option<String>,
}

fn split(reference: &str, allow_any_tag: bool) -> Result<Parsed, ImageRefError> {
    if reference.is_empty() {
        return Err(err(reference, "empty"));
    }
    if reference.chars().any(|c| c.is_whitespace()) {
        return Err(err(reference, "contains whitespace"));
    }
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, d)) => (rest, Some(parse_digest(reference, d)?)),
        None => (reference, None),
    };
    // A ':' after the last '/' starts the tag; one before it belongs to a registry port.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].find(':') {
        Some(i) => {
            let cut = last_slash + i;
            (&rest[..cut], Some(&rest[cut + 1..]))
        }
        None => (rest, None),
    };
    let tag = match tag {
        None => None,
        Some("*") if allow_any_tag => Some(TagSpec::Any),
        Some("*") => {
            return Err(err(
                reference,
                "`*` is only allowed in image rules, not in image references",
            ))
        }
        Some(t) => {
            validate_tag(reference, t)?;
            Some(TagSpec::Exact(t.to_string()))
        }
    };
    if name.contains('*') {
        return Err(err(
            reference,
            "`*` is allowed only as the whole rule (`*`) or as the tag (`name:*`)",
        ));
    }
    let (domain, path) = split_domain(name);
    validate_domain(reference, &domain)?;
    validate_path(reference, &path)?;
    if domain.len() + 1 + path.len() > MAX_NAME_LEN {
        return Err(err(
            reference,
            format!("name longer than {MAX_NAME_LEN} characters"),
        ));
    }
    Ok(Parsed {
        domain,
        path,
        tag,
        digest,
    })
}

/// docker's rule: the first component is a registry only if it looks like a host (has a '.'
/// or a ':' port, or is `localhost`); otherwise the image lives on Docker Hub.
fn split_domain(name: &str) -> (String, String) {
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    let domain = if domain == "index.docker.io" {
        DEFAULT_DOMAIN.to_string()
    } else {
        domain
    };
    let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
        format!("{OFFICIAL_REPO_PREFIX}{path}")
    } else {
        path
    };
    (domain, path)
}

fn parse_digest(reference: &str, d: &str) -> Result<String, ImageRefError> {
    let Some(hex) = d.strip_prefix("sha256:") else {
        return Err(err(
            reference,
            "digest must be `sha256:` followed by 64 hex digits",
        ));
    };
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(err(
            reference,
            format!(
                "digest must be `sha256:` followed by 64 hex digits, found {} characters",
                hex.len()
            ),
        ));
    }
    if hex.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(err(reference, "digest hex must be lowercase"));
    }
    Ok(d.to_string())
}

fn validate_tag(reference: &str, tag: &str) -> Result<(), ImageRefError> {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !rest_ok || tag.len() > MAX_TAG_LEN {
        return Err(err(
            reference,
            format!(
                "tag {tag:?} is not valid: up to {MAX_TAG_LEN} of [A-Za-z0-9_.-], not starting with '.' or '-'"
            ),
        ));
    }
    Ok(())
}

fn validate_domain(reference: &str, domain: &str) -> Result<(), ImageRefError> {
    let (host, port) = match domain.rsplit_once(':') {
        Some((h, p)) if !domain.starts_with('[') || h.ends_with(']') => (h, Some(p)),
        _ => (domain, None),
    };
    if let Some(p) = port {
        if p.is_empty()
            || !p.chars().all(|c| c.is_ascii_digit())
            || p.parse::<u32>().map_or(true, |n| n > 65535)
        {
            return Err(err(
                reference,
                format!("registry port {p:?} is not a number from 0 to 65535"),
            ));
        }
    }
    let ipv6 = host.starts_with('[') && host.ends_with(']');
    let ok = if ipv6 {
        host[1..host.len() - 1]
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':')
    } else {
        !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    };
    if ok {
        Ok(())
    } else {
        Err(err(
            reference,
            format!("registry {host:?} is not a valid host name"),
        ))
    }
}

/// Repository path components: lowercase alphanumerics joined by `.`, `_`, `__` or runs of `-`.
fn validate_path(reference: &str, path: &str) -> Result<(), ImageRefError> {
    for component in path.split('/') {
        if component.is_empty() {
            return Err(err(
                reference,
                "empty path component (double or trailing '/')",
            ));
        }
        if component.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(err(reference, "repository name must be lowercase"));
        }
        if !component_ok(component) {
            return Err(err(
                reference,
                format!("path component {component:?} must be lowercase letters and digits separated by '.', '_', '__' or '-'"),
            ));
        }
    }
    Ok(())
}

fn component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn n(s: &str) -> String {
        normalise(s).unwrap().to_string()
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(n("alpine"), "docker.io/library/alpine:latest");
        assert_eq!(n("alpine:3.19"), "docker.io/library/alpine:3.19");
        assert_eq!(n("docker.io/alpine"), "docker.io/library/alpine:latest");
        assert_eq!(
            n("index.docker.io/library/alpine"),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(
            n("testcontainers/ryuk:0.6"),
            "docker.io/testcontainers/ryuk:0.6"
        );
        assert_eq!(n("localhost/x"), "localhost/x:latest");
        assert_eq!(n("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(n("localhost:5000/x:1"), "localhost:5000/x:1");
        assert_eq!(n("ghcr.io/a/b/c:v1"), "ghcr.io/a/b/c:v1");
        assert_eq!(n("[::1]:5000/x"), "[::1]:5000/x:latest");
        assert_eq!(
            n(&format!("alpine@{D}")),
            format!("docker.io/library/alpine@{D}")
        );
        assert_eq!(
            n(&format!("alpine:3@{D}")),
            format!("docker.io/library/alpine:3@{D}")
        );
        // A first component without '.', ':' or "localhost" is a Hub namespace, not a registry.
        assert_eq!(n("myregistry/x"), "docker.io/myregistry/x:latest");
    }

    #[test]
    fn rejects_what_docker_rejects() {
        for bad in [
            "",
            "Alpine",
            "docker.io/Library/alpine",
            "alpine:",
            "alpine:-x",
            "alpine@sha256:abc",
            &format!("alpine@sha256:{}", "A".repeat(64)),
            "alpine@md5:0123",
            "a//b",
            "a/",
            "a..b",
            "a b",
            "localhost:port/x",
            "localhost:99999/x",
            "-bad.io/x",
            "alpine:*",
        ] {
            assert!(normalise(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(
            normalise("Alpine").unwrap_err().reason,
            "repository name must be lowercase"
        );
        assert!(normalise(&format!("a/{}", "b".repeat(260))).is_err());
    }

    #[test]
    fn path_separators_follow_the_distribution_grammar() {
        for good in ["a.b", "a_b", "a__b", "a-b", "a---b", "a1/b2"] {
            assert!(normalise(good).is_ok(), "{good}");
        }
        for bad in ["a___b", "a._b", "_a", "a-", "a.-b"] {
            assert!(normalise(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rules_parse_wildcards_digests_and_default_tags() {
        assert_eq!(ImageRule::parse("*").unwrap(), ImageRule::Any);
        assert_eq!(
            ImageRule::parse("docker.io/localstack/localstack:*").unwrap(),
            ImageRule::AnyTag {
                name: "docker.io/localstack/localstack".into()
            }
        );
        assert_eq!(
            ImageRule::parse("docker:cli").unwrap().to_string(),
            "docker.io/library/docker:cli"
        );
        assert_eq!(
            ImageRule::parse("busybox").unwrap().to_string(),
            "docker.io/library/busybox:latest"
        );
        assert!(matches!(
            ImageRule::parse(&format!("x@{D}")).unwrap(),
            ImageRule::Digest { .. }
        ));
        for bad in ["docker.io/*", "*/x", "x:*@sha256:0", "x*:1", "**"] {
            assert!(ImageRule::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(ImageRule::parse(&format!("x:*@{D}")).is_err());
    }

    #[test]
    fn rules_match_normalised_references() {
        let r = |s: &str| normalise(s).unwrap();
        let any_tag = ImageRule::parse("docker.io/testcontainers/ryuk:*").unwrap();
        assert!(any_tag.matches(&r("testcontainers/ryuk:0.5.1")));
        assert!(any_tag.matches(&r("testcontainers/ryuk")));
        assert!(any_tag.matches(&r(&format!("testcontainers/ryuk@{D}"))));
        assert!(!any_tag.matches(&r("testcontainers/ryuk-evil:1")));
        assert!(!any_tag.matches(&r("ghcr.io/testcontainers/ryuk:1")));

        let latest = ImageRule::parse("alpine").unwrap();
        assert!(latest.matches(&r("docker.io/library/alpine:latest")));
        assert!(latest.matches(&r("alpine")));
        assert!(!latest.matches(&r("alpine:3.19")));
        // A reference known only by digest does not prove it is `latest`.
        assert!(!latest.matches(&r(&format!("alpine@{D}"))));

        let pinned = ImageRule::parse(&format!("localhost:5000/tools/cli@{D}")).unwrap();
        assert!(pinned.matches(&r(&format!("localhost:5000/tools/cli@{D}"))));
        assert!(pinned.matches(&r(&format!("localhost:5000/tools/cli:v2@{D}"))));
        assert!(!pinned.matches(&r("localhost:5000/tools/cli:latest")));
        assert!(!pinned.matches(&r(&format!("localhost:5001/tools/cli@{D}"))));
        let other = D.replace('0', "1");
        assert!(!pinned.matches(&r(&format!("localhost:5000/tools/cli@{other}"))));

        assert!(ImageRule::Any.matches(&r("anything/at:all")));
        assert!(!latest.matches_str("Not A Reference"));
        assert!(ImageRule::Any.matches_str("Not A Reference"));
    }

    #[test]
    fn rules_round_trip_through_their_text_form() {
        for s in [
            "*",
            "docker.io/library/alpine:3",
            "ghcr.io/x/y:*",
            &format!("localhost:5000/a@{D}"),
        ] {
            let rule = ImageRule::parse(s).unwrap();
            assert_eq!(ImageRule::parse(&rule.to_string()).unwrap(), rule);
            let json = serde_json::to_string(&rule).unwrap();
            assert_eq!(serde_json::from_str::<ImageRule>(&json).unwrap(), rule);
        }
    }
}
