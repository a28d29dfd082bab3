//! Lexical path handling the runtime, the guard and the settings model agree on: a bind source
//! is allowed or refused by the same comparison on both sides (SPEC B1-B3).

/// `path` with `//`, `.` and `..` resolved lexically, as Go's `path.Clean` does for the paths
/// dockerd hands on: `..` at the root stays at the root, no trailing slash except for `/`
/// itself, and relative input stays relative (`a/./b` is `a/b`, `""` stays `""`). Symlinks are
/// not followed: callers that can resolve them check the resolved path too.
///
/// The image builder's manifest keys use a stricter cleaner on purpose (a package member whose
/// `..` climbs above the root is refused there, not clamped), so it is not this function.
pub fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    if path.starts_with('/') {
        format!("/{}", parts.join("/"))
    } else {
        parts.join("/")
    }
}

/// Whether `p` is a Windows path with a drive letter (`C:\x`, `c:/x`).
pub fn is_windows_path(p: &str) -> bool {
    let b = p.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
}

/// Comparable form: Windows paths are case-insensitive and use either separator.
fn comparable(p: &str) -> String {
    let s = if is_windows_path(p) || p.contains('\\') {
        p.replace('\\', "/").to_ascii_lowercase()
    } else {
        p.to_string()
    };
    s.trim_end_matches('/').to_string()
}

/// Whether `child` is `parent` or below it, whole components only (`/tmpx` is not in `/tmp`).
/// Host paths as an admin writes them compare too: `C:\Users` holds `c:/users/me`.
pub fn is_within(child: &str, parent: &str) -> bool {
    let c = comparable(child);
    let p = comparable(parent);
    if p.is_empty() {
        return c.is_empty() || child.starts_with('/');
    }
    c == p || c.strip_prefix(&p).is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_resolves_dots_and_never_climbs_above_the_root() {
        for (input, want) in [
            ("/mnt/host/../../etc", "/etc"),
            ("//mnt///host/./x/", "/mnt/host/x"),
            ("/..", "/"),
            ("/../..", "/"),
            ("/", "/"),
            ("//", "/"),
            ("/a/b/..", "/a"),
            ("/a/./b/../../c", "/c"),
            ("/v1.41/containers/../images/json", "/v1.41/images/json"),
            ("/a%2f..", "/a%2f.."),
            ("/a/...", "/a/..."),
        ] {
            assert_eq!(clean(input), want, "{input}");
        }
    }

    #[test]
    fn clean_keeps_relative_paths_relative() {
        assert_eq!(clean("a/./b"), "a/b");
        assert_eq!(clean("a/../.."), "");
        assert_eq!(clean(""), "");
        assert_eq!(clean("./x/"), "x");
    }

    #[test]
    fn within_is_by_whole_components() {
        assert!(is_within("/tmp/x", "/tmp") && is_within("/tmp", "/tmp/"));
        assert!(!is_within("/tmpx", "/tmp"));
        assert!(is_within("/anything", "/") && !is_within("relative", "/"));
        assert!(is_within(r"c:/users/me", r"C:\Users"));
        assert!(!is_within(r"C:\Usersx", r"C:\Users"));
        assert!(is_windows_path("d:") && !is_windows_path("/d:"));
    }
}
