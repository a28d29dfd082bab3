//! Request paths and query strings the way dockerd reads them.
//!
//! The guard must decide on exactly what dockerd will execute. dockerd's router matches the
//! percent-decoded path (`/containers%2Fcreate` is `/containers/create`) and reads parameters
//! with Go's `url.ParseQuery` (first value wins, `+` is a space, pairs with `;` or a bad escape
//! are dropped). So the guard decodes and cleans the path, decides on that, and forwards the
//! cleaned form re-encoded, never the raw one.

/// A request path split into its API version prefix and the route dockerd matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiPath {
    /// The decoded, cleaned path, version prefix included (`/v1.41/containers/create`).
    pub path: String,
    /// `1.41` for `/v1.41/...`; `None` for unversioned paths.
    pub version: Option<String>,
    /// The path without the version prefix (`/containers/create`).
    pub route: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("request path is not valid percent-encoded UTF-8")]
    BadEncoding,
    #[error("request path must start with '/'")]
    NotAbsolute,
    #[error("request path contains a NUL or control character")]
    Control,
}

impl ApiPath {
    pub fn parse(raw: &str) -> Result<ApiPath, PathError> {
        if !raw.starts_with('/') {
            return Err(PathError::NotAbsolute);
        }
        let decoded = percent_decode(raw, false).ok_or(PathError::BadEncoding)?;
        if decoded.chars().any(char::is_control) {
            return Err(PathError::Control);
        }
        let path = clean(&decoded);
        let (version, route) = split_version(&path);
        Ok(ApiPath {
            version: version.map(str::to_string),
            route: route.to_string(),
            path,
        })
    }

    /// The path to send upstream: the cleaned path, with only the characters that must be
    /// escaped in a request target escaped, so dockerd decodes it back to `self.path`.
    pub fn encoded(&self) -> String {
        encode_path(&self.path)
    }

    /// Route segments (`["containers", "abc", "start"]`).
    pub fn segments(&self) -> Vec<&str> {
        self.route.split('/').filter(|s| !s.is_empty()).collect()
    }
}

/// `/v1.41/x` -> (`Some("1.41")`, `/x`). dockerd's router accepts `v` followed by digits and dots.
fn split_version(path: &str) -> (Option<&str>, &str) {
    let rest = &path[1..];
    let (first, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    match first.strip_prefix('v') {
        Some(v)
            if !v.is_empty()
                && v.starts_with(|c: char| c.is_ascii_digit())
                && v.chars().all(|c| c.is_ascii_digit() || c == '.') =>
        {
            (Some(v), tail)
        }
        _ => (None, path),
    }
}

/// Lexical cleaning as Go's `path.Clean` (collapse `//`, drop `.`, resolve `..` never above
/// `/`): eci-facts' cleaner, the one eci-policy judges bind sources with.
pub use eci_facts::path::clean;

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decode; `plus_is_space` for query components. `None` on a bad escape or bytes that
/// are not UTF-8.
pub fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hi = hex(*b.get(i + 1)?)?;
                let lo = hex(*b.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for &c in path.as_bytes() {
        let keep = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'/' | b'-'
                    | b'.'
                    | b'_'
                    | b'~'
                    | b':'
                    | b'@'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        if keep {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// Query parameters in order, decoded like Go's `url.ParseQuery`: pairs holding `;` or a bad
/// escape are skipped, a key without `=` has an empty value.
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for pair in query.split('&') {
        if pair.is_empty() || pair.contains(';') {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(k), Some(v)) = (percent_decode(k, true), percent_decode(v, true)) else {
            continue;
        };
        out.push((k, v));
    }
    out
}

/// Every value given for `key` (dockerd reads the first; the guard checks them all).
pub fn query_values<'q>(query: &'q [(String, String)], key: &str) -> Vec<&'q str> {
    query
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The first value of `key`, as Go's `Values.Get`.
pub fn query_first<'q>(query: &'q [(String, String)], key: &str) -> Option<&'q str> {
    query
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_split_and_paths_cleaned() {
        let p = ApiPath::parse("/v1.41/containers/create").unwrap();
        assert_eq!(p.version.as_deref(), Some("1.41"));
        assert_eq!(p.route, "/containers/create");
        assert_eq!(p.segments(), vec!["containers", "create"]);
        let p = ApiPath::parse("/containers/json").unwrap();
        assert_eq!((p.version, p.route.as_str()), (None, "/containers/json"));
        let p = ApiPath::parse("/v1/_ping").unwrap();
        assert_eq!(p.version.as_deref(), Some("1"));
        // Not a version: dockerd treats these as ordinary paths (and 404s them).
        for raw in ["/vx/containers", "/v/containers", "/version"] {
            assert_eq!(ApiPath::parse(raw).unwrap().version, None, "{raw}");
        }
        assert_eq!(ApiPath::parse("/v1.41").unwrap().route, "/");
    }

    #[test]
    fn encoded_and_dotted_paths_become_what_dockerd_routes() {
        let p = ApiPath::parse("/v1.41/containers%2Fcreate").unwrap();
        assert_eq!(p.route, "/containers/create");
        let p = ApiPath::parse("//v1.41/./volumes/x/../create/").unwrap();
        assert_eq!(p.path, "/v1.41/volumes/create");
        let p = ApiPath::parse("/../../containers/create").unwrap();
        assert_eq!(p.route, "/containers/create");
        assert_eq!(ApiPath::parse("/a%zz"), Err(PathError::BadEncoding));
        assert_eq!(ApiPath::parse("/a%ff"), Err(PathError::BadEncoding));
        assert_eq!(ApiPath::parse("/a%00"), Err(PathError::Control));
        assert_eq!(ApiPath::parse("a"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn encoding_round_trips_image_names_and_odd_bytes() {
        for raw in [
            "/v1.41/images/localhost:5000/a/b:1/json",
            "/images/x@sha256:00/json",
            "/a%20b/%3F/%23/%25",
            "/caf%C3%A9",
        ] {
            let p = ApiPath::parse(raw).unwrap();
            let again = ApiPath::parse(&p.encoded()).unwrap();
            assert_eq!(again, p, "{raw} -> {}", p.encoded());
        }
        assert_eq!(ApiPath::parse("/a%3Fb").unwrap().encoded(), "/a%3Fb");
    }

    #[test]
    fn queries_decode_like_go() {
        let q = parse_query("networkmode=host&a=1&a=2&b&c=x+y%21&bad=%zz&semi=1;x=2&=v");
        assert_eq!(query_first(&q, "networkmode"), Some("host"));
        assert_eq!(query_values(&q, "a"), vec!["1", "2"]);
        assert_eq!(query_first(&q, "b"), Some(""));
        assert_eq!(query_first(&q, "c"), Some("x y!"));
        assert_eq!(query_first(&q, "bad"), None);
        assert_eq!(query_first(&q, "semi"), None);
        assert_eq!(query_first(&q, ""), Some("v"));
    }
}
