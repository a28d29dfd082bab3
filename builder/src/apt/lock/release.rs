//! `InRelease` files: OpenPGP verification through `gpgv`, and parsing of the signed text.
//!
//! Trust chain: the keyring signs InRelease; InRelease pins every index by SHA256 and size;
//! each index pins every .deb by SHA256. Only the text gpgv reports as signed is parsed, so
//! anything an attacker appends outside the signed block is ignored.

use std::collections::BTreeMap;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

/// Used when a source has no `Signed-By:`; this is where Debian's keyring package installs it.
pub const DEFAULT_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("{origin}: not a clear-signed InRelease file ({detail})")]
    NotClearSigned { origin: String, detail: String },
    #[error("{origin}: BAD signature from key {key} — the file was altered or corrupted; do not use this mirror until it serves a correctly signed file")]
    BadSignature { origin: String, key: String },
    #[error("{origin}: no good signature from a trusted key (keyrings: {keyrings}; gpgv said: {status}). Install the archive keyring or fix Signed-By in the apt source")]
    NoValidSignature {
        origin: String,
        keyrings: String,
        status: String,
    },
    #[error("{origin}: signed by {signers} but Signed-By requires one of {wanted}")]
    WrongSigner {
        origin: String,
        signers: String,
        wanted: String,
    },
    #[error("cannot run gpgv to verify {origin}: {message}. Install the `gpgv` package")]
    Gpgv { origin: String, message: String },
    #[error("keyring {path} (Signed-By of {source_origin}) does not exist; install it or fix the apt source")]
    MissingKeyring {
        path: PathBuf,
        source_origin: String,
    },
    #[error("keyring {path}: {message}")]
    BadKeyring { path: String, message: String },
    #[error("{origin}: required field `{field}` is missing")]
    MissingField { origin: String, field: &'static str },
    #[error("{origin}: field `{field}`: {message}")]
    BadField {
        origin: String,
        field: &'static str,
        message: String,
    },
    #[error("{origin}: the Release file is for `{found}`, not the requested suite `{wanted}`; the mirror serves the wrong suite or the apt source is wrong")]
    WrongSuite {
        origin: String,
        wanted: String,
        found: String,
    },
    #[error("{origin}: expired at {valid_until} (Valid-Until); the mirror is stale or replaying old metadata. Use a fresh mirror, or set `Check-Valid-Until: no` on the apt source / allow_expired for archived snapshots")]
    Expired { origin: String, valid_until: String },
    #[error("{origin}: architecture `{arch}` is not in the archive's Architectures ({available})")]
    MissingArchitecture {
        origin: String,
        arch: String,
        available: String,
    },
    #[error("{origin}: component `{component}` is not in the archive's Components ({available})")]
    MissingComponent {
        origin: String,
        component: String,
        available: String,
    },
    #[error(
        "{origin}: none of {candidates} is listed in the SHA256 section, so it cannot be verified"
    )]
    IndexNotListed { origin: String, candidates: String },
    #[error("{index}: checksum mismatch against the signed Release file: expected sha256 {expected} ({expected_size} bytes), got {actual} ({actual_size} bytes). The mirror may be mid-sync; retry later or use another mirror")]
    IndexMismatch {
        index: String,
        expected: String,
        expected_size: u64,
        actual: String,
        actual_size: u64,
    },
    #[error("{index}: cannot decompress: {message}")]
    Decompress { index: String, message: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    pub sha256: String,
    pub size: u64,
}

/// The fields of a Release file the lock stage uses.
#[derive(Clone, Debug)]
pub struct Release {
    pub suite: Option<String>,
    pub codename: Option<String>,
    pub date: String,
    /// `Date` as seconds since the Unix epoch.
    pub date_epoch: i64,
    pub valid_until: Option<String>,
    pub valid_until_epoch: Option<i64>,
    pub architectures: Vec<String>,
    pub components: Vec<String>,
    pub acquire_by_hash: bool,
    /// `No-Support-for-Architecture-all: Packages`: arch-all packages are listed in every
    /// `binary-ARCH/Packages`, so `binary-all` must not be read as well.
    pub arch_all_in_arch_indices: bool,
    /// SHA256 section: path relative to `dists/SUITE/` → hash and size.
    pub files: BTreeMap<String, FileEntry>,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Parses the RFC 2822 dates used by Release files (`Sat, 11 Jul 2026 10:16:37 UTC`) into
/// seconds since the epoch. Accepts `UTC`, `GMT`, `Z` and numeric `+HHMM` zones.
pub fn parse_date(s: &str) -> Option<i64> {
    let s = s.trim();
    let s = match s.split_once(',') {
        Some((_, rest)) => rest.trim(),
        None => s,
    };
    let parts: Vec<&str> = s.split_whitespace().collect();
    if parts.len() < 4 || parts.len() > 5 {
        return None;
    }
    let day: u32 = parts[0].parse().ok()?;
    let month = MONTHS
        .iter()
        .position(|m| parts[1].len() >= 3 && parts[1][..3].eq_ignore_ascii_case(m))?
        as u32
        + 1;
    let year: i64 = parts[2].parse().ok()?;
    let hms: Vec<&str> = parts[3].split(':').collect();
    if hms.len() != 3 || !(1..=31).contains(&day) {
        return None;
    }
    let (h, mi, se): (i64, i64, i64) = (
        hms[0].parse().ok()?,
        hms[1].parse().ok()?,
        hms[2].parse().ok()?,
    );
    if h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let offset = match parts.get(4).copied() {
        None | Some("UTC") | Some("GMT") | Some("Z") | Some("UT") => 0,
        Some(z) if z.len() == 5 && (z.starts_with('+') || z.starts_with('-')) => {
            let hh: i64 = z[1..3].parse().ok()?;
            let mm: i64 = z[3..5].parse().ok()?;
            let off = hh * 3600 + mm * 60;
            if z.starts_with('-') {
                -off
            } else {
                off
            }
        }
        Some(_) => return None,
    };
    Some(days_from_civil(year, month, day) * 86400 + h * 3600 + mi * 60 + se - offset)
}

/// Parses the (already verified or extracted) text of a Release file.
pub fn parse_release(text: &str, origin: &str) -> Result<Release, ReleaseError> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            // A Release file is one stanza; anything after a blank line is not ours to read.
            if fields.is_empty() {
                continue;
            }
            break;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some((_, v)) = fields.last_mut() {
                v.push('\n');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            fields.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let bad = |field: &'static str, message: String| ReleaseError::BadField {
        origin: origin.to_string(),
        field,
        message,
    };
    let date = get("date").ok_or(ReleaseError::MissingField {
        origin: origin.to_string(),
        field: "Date",
    })?;
    let date_epoch =
        parse_date(date).ok_or_else(|| bad("Date", format!("cannot parse `{date}`")))?;
    let (valid_until, valid_until_epoch) = match get("valid-until") {
        Some(v) => (
            Some(v.to_string()),
            Some(parse_date(v).ok_or_else(|| bad("Valid-Until", format!("cannot parse `{v}`")))?),
        ),
        None => (None, None),
    };
    let list = |name: &str| {
        get(name)
            .map(|v| v.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };
    let sha = get("sha256").ok_or(ReleaseError::MissingField {
        origin: origin.to_string(),
        field: "SHA256",
    })?;
    let mut files = BTreeMap::new();
    for line in sha.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [hash, size, path] = parts[..] else {
            return Err(bad(
                "SHA256",
                format!("line `{line}` is not `HASH SIZE PATH`"),
            ));
        };
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("SHA256", format!("`{hash}` is not 64 hex digits")));
        }
        let size = size
            .parse::<u64>()
            .map_err(|_| bad("SHA256", format!("size `{size}` of {path} is not a number")))?;
        files.insert(
            path.to_string(),
            FileEntry {
                sha256: hash.to_ascii_lowercase(),
                size,
            },
        );
    }
    Ok(Release {
        suite: get("suite").map(str::to_string),
        codename: get("codename").map(str::to_string),
        date: date.to_string(),
        date_epoch,
        valid_until,
        valid_until_epoch,
        architectures: list("architectures"),
        components: list("components"),
        acquire_by_hash: get("acquire-by-hash").is_some_and(|v| v.eq_ignore_ascii_case("yes")),
        arch_all_in_arch_indices: get("no-support-for-architecture-all")
            .is_some_and(|v| v.split_whitespace().any(|x| x == "Packages")),
        files,
    })
}

impl Release {
    /// The Release must describe the suite we asked for (by `Suite` or `Codename`), which stops
    /// a mirror from substituting another validly signed suite.
    pub fn check_suite(&self, wanted: &str, origin: &str) -> Result<(), ReleaseError> {
        let names = [self.suite.as_deref(), self.codename.as_deref()];
        if names.iter().flatten().any(|n| *n == wanted) {
            return Ok(());
        }
        Err(ReleaseError::WrongSuite {
            origin: origin.to_string(),
            wanted: wanted.to_string(),
            found: names
                .iter()
                .flatten()
                .copied()
                .collect::<Vec<_>>()
                .join("/"),
        })
    }

    /// Whether `now` is past `Valid-Until` (if the Release has one).
    pub fn is_expired(&self, now: i64) -> bool {
        self.valid_until_epoch.is_some_and(|v| now > v)
    }

    pub fn check_architecture(&self, arch: &str, origin: &str) -> Result<(), ReleaseError> {
        if self.architectures.is_empty() || self.architectures.iter().any(|a| a == arch) {
            return Ok(());
        }
        Err(ReleaseError::MissingArchitecture {
            origin: origin.to_string(),
            arch: arch.to_string(),
            available: self.architectures.join(" "),
        })
    }

    /// The directory prefix of `component` in this Release (`main`, or `updates/main` on
    /// archives that still list components with their historic prefix).
    pub fn component_dir(&self, component: &str, origin: &str) -> Result<String, ReleaseError> {
        if self.components.is_empty() || self.components.iter().any(|c| c == component) {
            return Ok(component.to_string());
        }
        let suffix = format!("/{component}");
        if let Some(c) = self.components.iter().find(|c| c.ends_with(&suffix)) {
            // debian-security lists `updates/main` but serves the files at `main/` too;
            // prefer whichever path the SHA256 list actually contains.
            let plain = format!("{component}/");
            if self.files.keys().any(|k| k.starts_with(&plain)) {
                return Ok(component.to_string());
            }
            return Ok(c.clone());
        }
        Err(ReleaseError::MissingComponent {
            origin: origin.to_string(),
            component: component.to_string(),
            available: self.components.join(" "),
        })
    }

    /// The `Packages` indices to read for one component: one entry per architecture
    /// (`ARCH`, plus `all` where the archive keeps it separate), each listing the variants the
    /// Release pins in order of preference (.xz, .gz, uncompressed), as `(path, entry)`.
    pub fn packages_indices(
        &self,
        component_dir: &str,
        arch: &str,
        origin: &str,
    ) -> Result<Vec<Vec<(String, FileEntry)>>, ReleaseError> {
        let mut archs = vec![arch];
        if !self.arch_all_in_arch_indices && self.architectures.iter().any(|a| a == "all") {
            archs.push("all");
        }
        let mut out = Vec::new();
        for (i, a) in archs.iter().enumerate() {
            let base = format!("{component_dir}/binary-{a}/Packages");
            let candidates = [format!("{base}.xz"), format!("{base}.gz"), base.clone()];
            let variants: Vec<(String, FileEntry)> = candidates
                .iter()
                .filter_map(|c| self.files.get(c).map(|e| (c.clone(), e.clone())))
                .collect();
            if !variants.is_empty() {
                out.push(variants);
            } else if i == 0 {
                // binary-all is optional; binary-ARCH is not.
                return Err(ReleaseError::IndexNotListed {
                    origin: origin.to_string(),
                    candidates: candidates.join(", "),
                });
            }
        }
        Ok(out)
    }

    /// The variants of one component's `Sources` index the Release pins, in order of
    /// preference (.xz, .gz, uncompressed), as `(path, entry)`.
    pub fn sources_index(
        &self,
        component_dir: &str,
        origin: &str,
    ) -> Result<Vec<(String, FileEntry)>, ReleaseError> {
        let base = format!("{component_dir}/source/Sources");
        let candidates = [format!("{base}.xz"), format!("{base}.gz"), base.clone()];
        let variants: Vec<(String, FileEntry)> = candidates
            .iter()
            .filter_map(|c| self.files.get(c).map(|e| (c.clone(), e.clone())))
            .collect();
        if variants.is_empty() {
            return Err(ReleaseError::IndexNotListed {
                origin: origin.to_string(),
                candidates: candidates.join(", "),
            });
        }
        Ok(variants)
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks a downloaded index against its Release entry.
pub fn check_index(bytes: &[u8], entry: &FileEntry, index: &str) -> Result<(), ReleaseError> {
    let actual = sha256_hex(bytes);
    if actual != entry.sha256 || bytes.len() as u64 != entry.size {
        return Err(ReleaseError::IndexMismatch {
            index: index.to_string(),
            expected: entry.sha256.clone(),
            expected_size: entry.size,
            actual,
            actual_size: bytes.len() as u64,
        });
    }
    Ok(())
}

/// Decompresses an index according to its file name.
pub fn decompress(bytes: &[u8], name: &str) -> Result<Vec<u8>, ReleaseError> {
    use std::io::Read;
    let mut out = Vec::new();
    let res = if name.ends_with(".xz") {
        xz2::read::XzDecoder::new_multi_decoder(bytes).read_to_end(&mut out)
    } else if name.ends_with(".gz") {
        flate2::read::MultiGzDecoder::new(bytes).read_to_end(&mut out)
    } else {
        out.extend_from_slice(bytes);
        Ok(bytes.len())
    };
    res.map_err(|e| ReleaseError::Decompress {
        index: name.to_string(),
        message: e.to_string(),
    })?;
    Ok(out)
}

/// Extracts the signed text of a clear-signed message *without* verifying it. Only used when
/// no keyring is available; the lockfile then records `verified: false`.
pub fn cleartext_unverified(bytes: &[u8], origin: &str) -> Result<String, ReleaseError> {
    let not = |detail: &str| ReleaseError::NotClearSigned {
        origin: origin.to_string(),
        detail: detail.to_string(),
    };
    let text = std::str::from_utf8(bytes).map_err(|_| not("not UTF-8"))?;
    let mut lines = text.lines();
    if lines.next().map(str::trim_end) != Some("-----BEGIN PGP SIGNED MESSAGE-----") {
        return Err(not("missing `-----BEGIN PGP SIGNED MESSAGE-----`"));
    }
    // Armor headers (`Hash: SHA256`) end at the first empty line.
    for l in lines.by_ref() {
        if l.trim().is_empty() {
            break;
        }
    }
    let mut out = String::new();
    for l in lines {
        if l.trim_end() == "-----BEGIN PGP SIGNATURE-----" {
            return Ok(out);
        }
        out.push_str(l.strip_prefix("- ").unwrap_or(l));
        out.push('\n');
    }
    Err(not("missing `-----BEGIN PGP SIGNATURE-----`"))
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        if c.is_ascii_whitespace() {
            continue;
        }
        if c == b'=' {
            break;
        }
        let v = B64.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Converts ASCII-armored public key blocks to binary OpenPGP packets, which is all gpgv reads.
pub fn dearmor(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut lines = text.lines().map(str::trim);
    let mut found = false;
    while let Some(l) = lines.next() {
        if l != "-----BEGIN PGP PUBLIC KEY BLOCK-----" {
            continue;
        }
        // Skip armor headers such as `Comment:`; they end at the first empty line, but an
        // inline deb822 key may have had that line folded away, so stop at base64 too.
        let mut body = String::new();
        let mut in_headers = true;
        for l in lines.by_ref() {
            if l.starts_with("-----END PGP PUBLIC KEY BLOCK-----") {
                break;
            }
            if in_headers {
                if l.is_empty() {
                    in_headers = false;
                    continue;
                }
                if l.contains(": ") {
                    continue;
                }
                in_headers = false;
            }
            // The `=XXXX` CRC24 line is optional armor integrity; gpgv checks key signatures.
            if l.starts_with('=') {
                continue;
            }
            body.push_str(l);
        }
        out.extend(base64_decode(&body)?);
        found = true;
    }
    (found && !out.is_empty()).then_some(out)
}

/// The outcome of reading one InRelease.
#[derive(Clone, Debug)]
pub struct SignedRelease {
    pub text: String,
    pub verified: bool,
    /// Primary fingerprints of the keys that made good signatures.
    pub signers: Vec<String>,
}

/// Keyrings to check an InRelease against, resolved to binary files gpgv can read.
pub struct Keyrings {
    pub paths: Vec<PathBuf>,
    pub fingerprints: Vec<String>,
    /// Keeps dearmored copies alive while gpgv runs.
    _tmp: Option<tempfile::TempDir>,
}

impl Keyrings {
    /// `files` are keyring files (binary or armored); `inline` is an armored key block.
    pub fn prepare(
        files: &[PathBuf],
        inline: Option<&str>,
        fingerprints: &[String],
    ) -> Result<Keyrings, ReleaseError> {
        let mut tmp: Option<tempfile::TempDir> = None;
        let mut paths = Vec::new();
        let mut tmpdir = || -> Result<PathBuf, ReleaseError> {
            if tmp.is_none() {
                tmp = Some(tempfile::tempdir().map_err(|e| ReleaseError::BadKeyring {
                    path: "(temporary directory)".into(),
                    message: e.to_string(),
                })?);
            }
            Ok(tmp
                .as_ref()
                .map(|t| t.path().to_path_buf())
                .unwrap_or_default())
        };
        let mut n = 0;
        let mut write_binary = |bytes: Vec<u8>, dir: PathBuf| -> Result<PathBuf, ReleaseError> {
            n += 1;
            let p = dir.join(format!("keyring-{n}.gpg"));
            std::fs::write(&p, bytes).map_err(|e| ReleaseError::BadKeyring {
                path: p.display().to_string(),
                message: e.to_string(),
            })?;
            Ok(p)
        };
        for f in files {
            let bytes = std::fs::read(f).map_err(|e| ReleaseError::BadKeyring {
                path: f.display().to_string(),
                message: e.to_string(),
            })?;
            let text = std::str::from_utf8(&bytes).ok();
            match text.filter(|t| t.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----")) {
                Some(t) => {
                    let bin = dearmor(t).ok_or_else(|| ReleaseError::BadKeyring {
                        path: f.display().to_string(),
                        message: "cannot decode the ASCII-armored key block".into(),
                    })?;
                    let dir = tmpdir()?;
                    paths.push(write_binary(bin, dir)?);
                }
                None => paths.push(std::path::absolute(f).unwrap_or_else(|_| f.clone())),
            }
        }
        if let Some(key) = inline {
            let bin = dearmor(key).ok_or_else(|| ReleaseError::BadKeyring {
                path: "inline Signed-By".into(),
                message: "cannot decode the ASCII-armored key block".into(),
            })?;
            let dir = tmpdir()?;
            paths.push(write_binary(bin, dir)?);
        }
        Ok(Keyrings {
            paths,
            fingerprints: fingerprints.to_vec(),
            _tmp: tmp,
        })
    }

    fn describe(&self) -> String {
        self.paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Default)]
struct SigStatus {
    good: bool,
    bad: bool,
    key: String,
    fingerprints: Vec<String>,
    notes: Vec<String>,
}

/// Verifies a clear-signed InRelease with gpgv and returns exactly the text gpgv says is signed.
///
/// Accepts when at least one signature is good (and, with fingerprints, made by one of them);
/// any BAD signature is fatal. Signatures by keys that are not in the keyring are ignored, as
/// apt does: Debian signs with several keys and a keyring may carry only some of them.
pub fn verify_inrelease(
    bytes: &[u8],
    keyrings: &Keyrings,
    origin: &str,
) -> Result<SignedRelease, ReleaseError> {
    let dir = tempfile::tempdir().map_err(|e| ReleaseError::Gpgv {
        origin: origin.to_string(),
        message: format!("cannot create a temporary directory: {e}"),
    })?;
    let input = dir.path().join("InRelease");
    let output = dir.path().join("signed.txt");
    let home = dir.path().join("gnupg");
    let io = |e: std::io::Error| ReleaseError::Gpgv {
        origin: origin.to_string(),
        message: e.to_string(),
    };
    std::fs::write(&input, bytes).map_err(io)?;
    std::fs::create_dir(&home).map_err(io)?;
    // A private, empty home keeps the user's ~/.gnupg (and its trustedkeys) out of the decision.
    let mut args: Vec<std::ffi::OsString> = vec![
        "--homedir".into(),
        home.into_os_string(),
        "--status-fd".into(),
        "1".into(),
        "--output".into(),
        output.clone().into_os_string(),
    ];
    for k in &keyrings.paths {
        args.push("--keyring".into());
        args.push(k.clone().into_os_string());
    }
    args.push(input.into_os_string());
    let out = duct::cmd("gpgv", args)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .map_err(|e| ReleaseError::Gpgv {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
    let status = String::from_utf8_lossy(&out.stdout);
    let mut sigs: Vec<SigStatus> = Vec::new();
    for line in status.lines() {
        let Some(rest) = line.strip_prefix("[GNUPG:] ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let kw = words.next().unwrap_or("");
        if kw == "NEWSIG" {
            sigs.push(SigStatus::default());
            continue;
        }
        let Some(cur) = sigs.last_mut() else { continue };
        let args: Vec<&str> = words.collect();
        match kw {
            "GOODSIG" => {
                cur.good = true;
                cur.key = args.first().unwrap_or(&"").to_string();
            }
            "BADSIG" => {
                cur.bad = true;
                cur.key = args.first().unwrap_or(&"").to_string();
            }
            "VALIDSIG" => {
                cur.fingerprints
                    .push(args.first().unwrap_or(&"").to_ascii_uppercase());
                if let Some(primary) = args.get(9) {
                    cur.fingerprints.push(primary.to_ascii_uppercase());
                }
            }
            "EXPSIG" | "EXPKEYSIG" | "REVKEYSIG" | "NO_PUBKEY" | "ERRSIG" => {
                cur.notes
                    .push(format!("{kw} {}", args.first().unwrap_or(&"")));
            }
            _ => {}
        }
    }
    if let Some(bad) = sigs.iter().find(|s| s.bad) {
        return Err(ReleaseError::BadSignature {
            origin: origin.to_string(),
            key: bad.key.clone(),
        });
    }
    let good: Vec<&SigStatus> = sigs
        .iter()
        .filter(|s| s.good && !s.fingerprints.is_empty())
        .collect();
    if good.is_empty() {
        let mut notes: Vec<String> = sigs.iter().flat_map(|s| s.notes.clone()).collect();
        if notes.is_empty() {
            notes.push(
                String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .replace('\n', " / "),
            );
        }
        return Err(ReleaseError::NoValidSignature {
            origin: origin.to_string(),
            keyrings: keyrings.describe(),
            status: notes.join(", "),
        });
    }
    let signers: Vec<String> = good
        .iter()
        .map(|s| s.fingerprints.last().cloned().unwrap_or_default())
        .collect();
    if !keyrings.fingerprints.is_empty() {
        // 16-digit long key IDs match the end of a full fingerprint.
        let ok = good.iter().any(|s| {
            s.fingerprints.iter().any(|f| {
                keyrings
                    .fingerprints
                    .iter()
                    .any(|w| f.ends_with(w.as_str()))
            })
        });
        if !ok {
            return Err(ReleaseError::WrongSigner {
                origin: origin.to_string(),
                signers: signers.join(", "),
                wanted: keyrings.fingerprints.join(", "),
            });
        }
    }
    let text = std::fs::read(&output).map_err(|e| ReleaseError::Gpgv {
        origin: origin.to_string(),
        message: format!("gpgv reported a good signature but wrote no signed text: {e}"),
    })?;
    let text = String::from_utf8(text).map_err(|_| ReleaseError::NotClearSigned {
        origin: origin.to_string(),
        detail: "signed text is not UTF-8".into(),
    })?;
    Ok(SignedRelease {
        text,
        verified: true,
        signers,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const RELEASE: &str = "\
Origin: Debian
Label: Debian
Suite: oldstable
Codename: bookworm
Date: Sat, 11 Jul 2026 10:16:37 UTC
Valid-Until: Sat, 18 Jul 2026 10:16:37 UTC
Acquire-By-Hash: yes
No-Support-for-Architecture-all: Packages
Architectures: all amd64 arm64
Components: main contrib
Description: Debian 12
MD5Sum:
 0ed6d4c8891eb86358b94bb35d9e4da4  1484322 contrib/Contents-all
SHA256:
 515e692f2c4121c6fcec444ef100cc18f79a991910615f3a88c8b7becfc94d2f 50060337 main/binary-amd64/Packages
 6777ea16514725f9427f48c240d92e0a6b8496138e37a1491d8597e66774e309 12084798 main/binary-amd64/Packages.gz
 9E0B5AABB2465B3D2E7A7FE27F9913846277833F7A2826E7767ACCCFF5B588C5  8790396 main/binary-amd64/Packages.xz
 743228b0bd99db92c91c5c133952cea0ff0c93a2b5b47a058973f3cab40d6481  4231936 main/binary-all/Packages.xz
 6777ea16514725f9427f48c240d92e0a6b8496138e37a1491d8597e66774e309 12084798 contrib/binary-amd64/Packages.gz
";

    #[test]
    fn parses_release_fields() {
        let r = parse_release(RELEASE, "fixture").unwrap();
        assert_eq!(r.codename.as_deref(), Some("bookworm"));
        assert_eq!(r.suite.as_deref(), Some("oldstable"));
        assert_eq!(r.date, "Sat, 11 Jul 2026 10:16:37 UTC");
        assert_eq!(r.date_epoch, 1_783_764_997);
        assert_eq!(r.valid_until_epoch, Some(1_783_764_997 + 7 * 86400));
        assert_eq!(r.architectures, ["all", "amd64", "arm64"]);
        assert_eq!(r.components, ["main", "contrib"]);
        assert!(r.acquire_by_hash);
        assert!(r.arch_all_in_arch_indices);
        assert_eq!(r.files.len(), 5, "only the SHA256 section is read");
        assert_eq!(
            r.files["main/binary-amd64/Packages.xz"],
            FileEntry {
                sha256: "9e0b5aabb2465b3d2e7a7fe27f9913846277833f7a2826e7767acccff5b588c5".into(),
                size: 8790396
            }
        );
        assert!(r.check_suite("bookworm", "f").is_ok());
        assert!(r.check_suite("oldstable", "f").is_ok());
        let e = r
            .check_suite("bookworm-security", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("oldstable/bookworm"), "{e}");
        assert!(!r.is_expired(r.date_epoch));
        assert!(r.is_expired(r.date_epoch + 8 * 86400));
        assert!(r.check_architecture("amd64", "f").is_ok());
        assert!(r.check_architecture("riscv64", "f").is_err());
    }

    #[test]
    fn picks_xz_and_skips_binary_all_when_merged() {
        let r = parse_release(RELEASE, "f").unwrap();
        let idx = r.packages_indices("main", "amd64", "f").unwrap();
        assert_eq!(idx.len(), 1);
        let variants: Vec<&str> = idx[0].iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            variants,
            [
                "main/binary-amd64/Packages.xz",
                "main/binary-amd64/Packages.gz",
                "main/binary-amd64/Packages"
            ]
        );
        // Without the No-Support header, binary-all is read too.
        let split = RELEASE.replace("No-Support-for-Architecture-all: Packages\n", "");
        let r = parse_release(&split, "f").unwrap();
        let idx = r.packages_indices("main", "amd64", "f").unwrap();
        let names: Vec<&str> = idx.iter().map(|v| v[0].0.as_str()).collect();
        assert_eq!(
            names,
            [
                "main/binary-amd64/Packages.xz",
                "main/binary-all/Packages.xz"
            ]
        );
        // contrib has only .gz: fall back.
        let idx = r.packages_indices("contrib", "amd64", "f").unwrap();
        assert_eq!(idx[0].len(), 1);
        assert_eq!(idx[0][0].0, "contrib/binary-amd64/Packages.gz");
        let e = r
            .packages_indices("main", "arm64", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("main/binary-arm64/Packages.xz"), "{e}");
    }

    #[test]
    fn component_prefixes_like_debian_security() {
        let text = "Suite: bookworm-security\nDate: Thu, 26 Nov 2026 21:03:35 UTC\nComponents: updates/main updates/contrib\nSHA256:\n 30beba3da390282e6130d9949f8c269844f0d64183ffbeeb4f482ee97e204fcf 2553701 main/binary-amd64/Packages\n";
        let r = parse_release(text, "f").unwrap();
        assert_eq!(r.component_dir("main", "f").unwrap(), "main");
        let text2 = text.replace(" main/binary", " updates/main/binary");
        let r2 = parse_release(&text2, "f").unwrap();
        assert_eq!(r2.component_dir("main", "f").unwrap(), "updates/main");
        let e = r.component_dir("non-free", "f").unwrap_err().to_string();
        assert!(e.contains("`non-free`"), "{e}");
        assert!(r.valid_until.is_none() && !r.is_expired(i64::MAX));
    }

    #[test]
    fn release_errors() {
        let e = parse_release("Suite: x\nSHA256:\n", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Date"), "{e}");
        let e = parse_release("Date: yesterday\nSHA256:\n", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("yesterday"), "{e}");
        let e = parse_release("Date: Sat, 11 Jul 2026 10:16:37 UTC\n", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("SHA256"), "{e}");
        let e = parse_release(
            "Date: Sat, 11 Jul 2026 10:16:37 UTC\nSHA256:\n abc 1 x\n",
            "f",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("64 hex"), "{e}");
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
        assert_eq!(
            parse_date("Sat, 11 Jul 2026 10:16:37 UTC"),
            Some(1_783_764_997)
        );
        assert_eq!(
            parse_date("11 Jul 2026 12:16:37 +0200"),
            Some(1_783_764_997)
        );
        assert_eq!(
            parse_date("Thu, 29 Feb 2024 23:59:59 GMT"),
            Some(1_709_251_199)
        );
        assert_eq!(parse_date("Sat, 11 Foo 2026 10:16:37 UTC"), None);
        assert_eq!(parse_date("Sat, 11 Jul 2026 25:16:37 UTC"), None);
        assert_eq!(parse_date("Sat, 11 Jul 2026 10:16:37 CEST"), None);
    }

    #[test]
    fn index_checks_and_decompression() {
        use std::io::Write;
        let plain = b"Package: a\n";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(plain).unwrap();
        let gz = gz.finish().unwrap();
        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(plain).unwrap();
        let xz = xz.finish().unwrap();
        assert_eq!(decompress(&gz, "x/Packages.gz").unwrap(), plain);
        assert_eq!(decompress(&xz, "x/Packages.xz").unwrap(), plain);
        assert!(decompress(b"garbage", "x/Packages.xz").is_err());
        let entry = FileEntry {
            sha256: sha256_hex(&xz),
            size: xz.len() as u64,
        };
        assert!(check_index(&xz, &entry, "idx").is_ok());
        let e = check_index(&gz, &entry, "main/binary-amd64/Packages.xz")
            .unwrap_err()
            .to_string();
        assert!(e.contains("main/binary-amd64/Packages.xz"), "{e}");
        assert!(
            e.contains(&entry.sha256) && e.contains(&sha256_hex(&gz)),
            "{e}"
        );
    }

    #[test]
    fn cleartext_extraction() {
        let signed = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nOrigin: X\n- -dash escaped\n-----BEGIN PGP SIGNATURE-----\nabc\n-----END PGP SIGNATURE-----\n";
        assert_eq!(
            cleartext_unverified(signed.as_bytes(), "f").unwrap(),
            "Origin: X\n-dash escaped\n"
        );
        assert!(cleartext_unverified(b"Origin: X\n", "f").is_err());
    }

    #[test]
    fn base64_and_dearmor() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8h").unwrap(), b"hello!");
        assert_eq!(base64_decode("aGV s\nbG8=").unwrap(), b"hello");
        assert!(base64_decode("a*b").is_none());
        let armored = "-----BEGIN PGP PUBLIC KEY BLOCK-----\nComment: x\n\naGVs\nbG8=\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n";
        assert_eq!(dearmor(armored).unwrap(), b"hello");
        // Inline deb822 keys lose their blank separator line when it was written as `.`-less.
        let folded =
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\naGVsbG8=\n-----END PGP PUBLIC KEY BLOCK-----";
        assert_eq!(dearmor(folded).unwrap(), b"hello");
        assert!(dearmor("no key here").is_none());
    }

    /// A throwaway signing key in a private GNUPGHOME, for offline signature tests.
    pub(crate) struct TestKey {
        pub home: tempfile::TempDir,
        pub armored: String,
        pub binary: PathBuf,
        pub fingerprint: String,
    }

    impl TestKey {
        /// `None` (with a printed reason) when gpg is not installed.
        pub(crate) fn generate() -> Option<TestKey> {
            let home = tempfile::tempdir().unwrap();
            let gpg = |args: &[&str]| {
                duct::cmd("gpg", args)
                    .env("GNUPGHOME", home.path())
                    .stdout_capture()
                    .stderr_capture()
                    .unchecked()
                    .run()
            };
            let gen = gpg(&[
                "--batch",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--quick-gen-key",
                "eci test <test@example.invalid>",
                "ed25519",
                "sign",
                "never",
            ]);
            match gen {
                Ok(o) if o.status.success() => {}
                Ok(o) => {
                    eci_test_support::prerequisite(
                        false,
                        &format!(
                            "signature test: gpg failed: {}",
                            String::from_utf8_lossy(&o.stderr)
                        ),
                    );
                    return None;
                }
                Err(e) => {
                    eci_test_support::prerequisite(
                        false,
                        &format!("signature test: gpg is not installed ({e})"),
                    );
                    return None;
                }
            }
            let armored = String::from_utf8(gpg(&["--armor", "--export"]).unwrap().stdout).unwrap();
            let bin = gpg(&["--export"]).unwrap().stdout;
            let binary = home.path().join("key.gpg");
            std::fs::write(&binary, bin).unwrap();
            let listing =
                String::from_utf8(gpg(&["--with-colons", "--list-keys"]).unwrap().stdout).unwrap();
            let fingerprint = listing
                .lines()
                .find(|l| l.starts_with("fpr:"))
                .and_then(|l| l.split(':').nth(9))
                .unwrap()
                .to_string();
            Some(TestKey {
                home,
                armored,
                binary,
                fingerprint,
            })
        }

        pub(crate) fn clearsign(&self, text: &str) -> Vec<u8> {
            let out = duct::cmd!("gpg", "--batch", "--clearsign", "--digest-algo", "SHA256")
                .env("GNUPGHOME", self.home.path())
                .stdin_bytes(text.as_bytes().to_vec())
                .stdout_capture()
                .stderr_capture()
                .run()
                .unwrap();
            out.stdout
        }
    }

    #[test]
    fn gpgv_verification() {
        let Some(key) = TestKey::generate() else {
            return;
        };
        let signed = key.clearsign(RELEASE);

        let binary = Keyrings::prepare(std::slice::from_ref(&key.binary), None, &[]).unwrap();
        let ok = verify_inrelease(&signed, &binary, "InRelease").unwrap();
        assert!(ok.verified);
        assert_eq!(ok.text, RELEASE);
        assert_eq!(ok.signers, std::slice::from_ref(&key.fingerprint));

        // Armored keyring files and inline keys are dearmored for gpgv.
        let asc = key.home.path().join("key.asc");
        std::fs::write(&asc, &key.armored).unwrap();
        let armored = Keyrings::prepare(&[asc], None, &[]).unwrap();
        assert!(verify_inrelease(&signed, &armored, "InRelease").is_ok());
        let inline = Keyrings::prepare(&[], Some(&key.armored), &[]).unwrap();
        assert!(verify_inrelease(&signed, &inline, "InRelease").is_ok());

        // Fingerprint restrictions.
        let right = Keyrings::prepare(
            std::slice::from_ref(&key.binary),
            None,
            std::slice::from_ref(&key.fingerprint),
        )
        .unwrap();
        assert!(verify_inrelease(&signed, &right, "InRelease").is_ok());
        let wrong = Keyrings::prepare(
            std::slice::from_ref(&key.binary),
            None,
            &["4CB50190207B4758A3F73A796ED0E7B82643E131".to_string()],
        )
        .unwrap();
        let e = verify_inrelease(&signed, &wrong, "InRelease").unwrap_err();
        assert!(matches!(e, ReleaseError::WrongSigner { .. }), "{e}");

        // A tampered body is a BAD signature, never a silent fallback.
        let tampered = String::from_utf8(signed.clone())
            .unwrap()
            .replace("Codename: bookworm", "Codename: bookwork");
        let e = verify_inrelease(tampered.as_bytes(), &binary, "InRelease").unwrap_err();
        assert!(matches!(e, ReleaseError::BadSignature { .. }), "{e}");

        // A keyring without the signing key gives no valid signature.
        let other = tempfile::tempdir().unwrap();
        let empty = other.path().join("empty.gpg");
        std::fs::write(&empty, b"").unwrap();
        let none = Keyrings::prepare(&[empty], None, &[]).unwrap();
        let e = verify_inrelease(&signed, &none, "InRelease").unwrap_err();
        assert!(matches!(e, ReleaseError::NoValidSignature { .. }), "{e}");
        assert!(e.to_string().contains("NO_PUBKEY"), "{e}");

        // Text appended after the signature is not part of what we parse.
        let mut appended = signed.clone();
        appended.extend_from_slice(b"\nSHA256:\n 00 1 evil\n");
        if let Ok(r) = verify_inrelease(&appended, &binary, "InRelease") {
            assert_eq!(r.text, RELEASE);
        }
    }
}
