//! Debian `Sources` indices: which files make up a source package (its .dsc, upstream tarball
//! and Debian packaging), each pinned by sha256 in the suite's signed Release chain.
//!
//! Only the stanzas of the wanted packages are kept: bookworm's `Sources` is 50 MiB unpacked
//! and an image builds a handful of programs from source.

use std::collections::BTreeSet;

use super::index::{IndexError, Stanzas};
use super::lockfile::safe_relative;
use super::version::Version;

/// One file of a source package as `Checksums-Sha256` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// One source package stanza with the fields a build from source needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourcePackage {
    pub name: String,
    pub version: Version,
    /// Pool directory relative to the archive root, e.g. `pool/main/i/iptables`.
    pub directory: String,
    pub files: Vec<SourceFile>,
}

impl SourcePackage {
    /// The `.dsc` among the files (a source package without one is rejected at parse time).
    pub fn dsc(&self) -> &SourceFile {
        self.files
            .iter()
            .find(|f| f.name.ends_with(".dsc"))
            .expect("parse_sources keeps only stanzas with a .dsc")
    }
}

/// Parses the stanzas of `wanted` packages from a whole `Sources` file; `origin` names the
/// index in errors.
pub fn parse_sources(
    bytes: &[u8],
    origin: &str,
    wanted: &BTreeSet<String>,
) -> Result<Vec<SourcePackage>, IndexError> {
    let text = std::str::from_utf8(bytes).map_err(|e| IndexError::NotUtf8 {
        index: origin.to_string(),
        offset: e.valid_up_to(),
    })?;
    let mut out = Vec::new();
    for stanza in Stanzas::new(text, origin) {
        let (start, fields) = stanza?;
        let get = |want: &str| {
            fields
                .iter()
                .find(|(n, _, _)| n.eq_ignore_ascii_case(want))
                .map(|(_, v, l)| (v.as_ref(), *l))
        };
        let Some((name, _)) = get("Package") else {
            return Err(IndexError::MissingField {
                index: origin.to_string(),
                line: start,
                field: "Package",
            });
        };
        // Extra-Source-Only stanzas describe sources kept for license reasons (built-using),
        // not the package's current source.
        let extra = get("Extra-Source-Only").is_some_and(|(v, _)| v.eq_ignore_ascii_case("yes"));
        if !wanted.contains(name) || extra {
            continue;
        }
        let bad = |field: &str, line: usize, message: String| IndexError::BadField {
            index: origin.to_string(),
            line,
            package: name.to_string(),
            field: field.to_string(),
            message,
        };
        let require = |field: &'static str| {
            get(field).ok_or_else(|| IndexError::MissingField {
                index: origin.to_string(),
                line: start,
                field,
            })
        };
        let (version, vline) = require("Version")?;
        let version = Version::parse(version).map_err(|e| bad("Version", vline, e.to_string()))?;
        let (directory, dline) = require("Directory")?;
        if !safe_relative(directory) {
            return Err(bad(
                "Directory",
                dline,
                format!("`{directory}` is not a relative pool path"),
            ));
        }
        let (sums, sline) = require("Checksums-Sha256")?;
        let mut files = Vec::new();
        for line in sums.lines().filter(|l| !l.trim().is_empty()) {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [sha256, size, file] = parts[..] else {
                return Err(bad(
                    "Checksums-Sha256",
                    sline,
                    format!("`{line}` is not `SHA256 SIZE NAME`"),
                ));
            };
            let size: u64 = size
                .parse()
                .map_err(|_| bad("Checksums-Sha256", sline, format!("bad size in `{line}`")))?;
            if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(
                    "Checksums-Sha256",
                    sline,
                    format!("bad sha256 in `{line}`"),
                ));
            }
            if file.contains('/') || file.starts_with('.') || !safe_relative(file) || size == 0 {
                return Err(bad(
                    "Checksums-Sha256",
                    sline,
                    format!("file name `{file}` must be a plain name with a size above 0"),
                ));
            }
            files.push(SourceFile {
                name: file.to_string(),
                size,
                sha256: sha256.to_ascii_lowercase(),
            });
        }
        if !files.iter().any(|f| f.name.ends_with(".dsc")) {
            return Err(bad("Checksums-Sha256", sline, "lists no .dsc file".into()));
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        out.push(SourcePackage {
            name: name.to_string(),
            version,
            directory: directory.to_string(),
            files,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCES: &str = "\
Package: zlib
Version: 1:1.2.13.dfsg-1
Directory: pool/main/z/zlib
Checksums-Sha256:
 1111111111111111111111111111111111111111111111111111111111111111 100 zlib_1.2.13.dfsg-1.dsc

Package: iptables
Binary: iptables, iptables-dev
Version: 1.8.9-2
Directory: pool/main/i/iptables
Files:
 0123 2757 iptables_1.8.9-2.dsc
Checksums-Sha256:
 71825151f8dc92819f2713f17059e987f2f3e7808a1718ac07cf41f4f222e870 2757 iptables_1.8.9-2.dsc
 ef6639a43be8325a4f8ea68123ffac236cb696e8c78501b64e8106afb008c87f 637848 iptables_1.8.9.orig.tar.xz
 5415053f2033a351cf85c33e13d67388770f803e8bdce24f46371ea6e7488a6b 25172 iptables_1.8.9-2.debian.tar.xz
";

    fn wanted(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn keeps_only_the_wanted_packages_with_their_pinned_files() {
        let got = parse_sources(SOURCES.as_bytes(), "Sources", &wanted(&["iptables"])).unwrap();
        assert_eq!(got.len(), 1);
        let p = &got[0];
        assert_eq!(p.name, "iptables");
        assert_eq!(p.version.to_string(), "1.8.9-2");
        assert_eq!(p.directory, "pool/main/i/iptables");
        let names: Vec<&str> = p.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "iptables_1.8.9-2.debian.tar.xz",
                "iptables_1.8.9-2.dsc",
                "iptables_1.8.9.orig.tar.xz"
            ]
        );
        assert_eq!(p.dsc().size, 2757);
        assert_eq!(p.files[2].size, 637848);
    }

    #[test]
    fn rejects_a_traversing_file_name_and_a_stanza_without_dsc() {
        let evil = SOURCES.replace("iptables_1.8.9.orig.tar.xz", "../../etc/passwd");
        let err = parse_sources(evil.as_bytes(), "Sources", &wanted(&["iptables"])).unwrap_err();
        assert!(err.to_string().contains("must be a plain name"), "{err}");
        let no_dsc = SOURCES.replace(" 2757 iptables_1.8.9-2.dsc\n ef", " 2757 iptables.txt\n ef");
        let err = parse_sources(no_dsc.as_bytes(), "Sources", &wanted(&["iptables"])).unwrap_err();
        assert!(err.to_string().contains("no .dsc"), "{err}");
        let abs = SOURCES.replace("Directory: pool/main/i", "Directory: /pool/main/i");
        let err = parse_sources(abs.as_bytes(), "Sources", &wanted(&["iptables"])).unwrap_err();
        assert!(err.to_string().contains("relative pool path"), "{err}");
    }
}
