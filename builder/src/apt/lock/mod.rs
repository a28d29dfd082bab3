//! The `lock` stage: resolve the dependency closure of an image's package list against the
//! Debian archive named by the machine's apt sources, and pin every .deb by sha256 in
//! `images/TARGET.lock` (SPEC V1).
//!
//! What is verified: InRelease signatures (gpgv, against the source's `Signed-By` keyring or
//! the Debian archive keyring), that InRelease describes the requested suite and architecture,
//! its `Valid-Until`, and every downloaded `Packages` index against the SHA256 and size the
//! signed InRelease lists. What is trusted: the contents of a verified index (package hashes,
//! dependencies); and, when no keyring is installed or a source says `trusted=yes`, the
//! InRelease itself, which the lockfile then records as `verified: false`.

pub mod http;
pub mod index;
pub mod lockfile;
pub mod release;
pub mod resolve;
pub mod source_index;
pub mod sources;
pub mod version;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use http::{FetchError, Http, HttpConfig};
pub use index::{IndexError, Package};
pub use lockfile::{
    LockedChoice, LockedCut, LockedExclusion, LockedPackage, LockedSource, LockedSourceFile,
    LockedSuite, Lockfile, LockfileError,
};
pub use release::{ReleaseError, DEFAULT_KEYRING};
pub use resolve::{ResolveError, SuiteIndex};
pub use sources::{
    mirror_for_suite, AptSources, MirrorOverrides, SignedBy, SourcesError, SuiteMirror,
};
pub use version::Version;

use release::{Keyrings, Release};

/// Progress and warnings of a lock run. Warnings must reach the user: they mark weakened
/// verification that the lockfile alone only shows as `verified: false`.
pub trait Progress {
    fn message(&self, msg: &str);
    fn warning(&self, msg: &str);
    fn download_started(&self, _label: &str, _total: Option<u64>) {}
    fn download_advanced(&self, _bytes: u64) {}
    fn download_finished(&self, _label: &str) {}
}

/// Prints nothing but warnings (to stderr).
pub struct Quiet;

impl Progress for Quiet {
    fn message(&self, _msg: &str) {}
    fn warning(&self, msg: &str) {
        eprintln!("warning: {msg}");
    }
}

/// Human progress on stderr: a byte progress bar per download, a line per step.
pub struct TerminalProgress {
    bar: Mutex<Option<indicatif::ProgressBar>>,
}

impl TerminalProgress {
    pub fn new() -> Self {
        TerminalProgress {
            bar: Mutex::new(None),
        }
    }

    fn with_bar(&self, f: impl FnOnce(&mut Option<indicatif::ProgressBar>)) {
        if let Ok(mut b) = self.bar.lock() {
            f(&mut b);
        }
    }
}

impl Default for TerminalProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress for TerminalProgress {
    fn message(&self, msg: &str) {
        self.with_bar(|b| match b {
            Some(bar) => bar.println(msg),
            None => eprintln!("{msg}"),
        });
    }
    fn warning(&self, msg: &str) {
        self.with_bar(|b| match b {
            Some(bar) => bar.println(format!("warning: {msg}")),
            None => eprintln!("warning: {msg}"),
        });
    }
    fn download_started(&self, label: &str, total: Option<u64>) {
        let bar = match total {
            Some(t) => indicatif::ProgressBar::new(t),
            None => indicatif::ProgressBar::new_spinner(),
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg:40!} {bar:30} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12}",
        ) {
            bar.set_style(style);
        }
        bar.set_message(label.to_string());
        self.with_bar(|b| *b = Some(bar));
    }
    fn download_advanced(&self, bytes: u64) {
        self.with_bar(|b| {
            if let Some(bar) = b {
                bar.inc(bytes);
            }
        });
    }
    fn download_finished(&self, _label: &str) {
        self.with_bar(|b| {
            if let Some(bar) = b.take() {
                bar.finish_and_clear();
            }
        });
    }
}

/// What to lock. `LockRequest::new` fills in the defaults for this machine.
#[derive(Clone, Debug)]
pub struct LockRequest {
    /// Image target name; the lockfile is `images/TARGET.lock`.
    pub target: String,
    /// Debian architecture, e.g. `amd64`. Packages of this architecture and `all` are used.
    pub architecture: String,
    /// Suites in priority order for equal versions, e.g. bookworm, bookworm-updates,
    /// bookworm-security. The highest version over all suites wins.
    pub suites: Vec<String>,
    pub components: Vec<String>,
    /// Root packages: `name` or `name=version`.
    pub include: Vec<String>,
    /// Packages that are never installed; what they would have satisfied is recorded.
    pub exclude: Vec<String>,
    /// Source packages whose files (.dsc, tarballs) are pinned too, for programs the image
    /// builds from source. The highest version over all suites wins, as for binaries.
    pub sources: Vec<String>,
    pub mirrors: MirrorOverrides,
    /// Directory holding `sources.list` and `sources.list.d/` (normally `/etc/apt`).
    pub sources_root: PathBuf,
    /// Keyring for sources without `Signed-By:`.
    pub default_keyring: PathBuf,
    /// Accept Release files past their `Valid-Until` for every suite (warns). Needed for
    /// archived snapshots; a source's own `Check-Valid-Until: no` does the same per source.
    pub allow_expired: bool,
    pub http: HttpConfig,
}

impl LockRequest {
    pub fn new(target: impl Into<String>, architecture: impl Into<String>) -> Self {
        LockRequest {
            target: target.into(),
            architecture: architecture.into(),
            suites: Vec::new(),
            components: vec!["main".to_string()],
            include: Vec::new(),
            exclude: Vec::new(),
            sources: Vec::new(),
            mirrors: MirrorOverrides::default(),
            sources_root: PathBuf::from("/etc/apt"),
            default_keyring: PathBuf::from(DEFAULT_KEYRING),
            allow_expired: false,
            http: HttpConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("lock request: {0}")]
    Request(String),
    #[error(transparent)]
    Sources(#[from] SourcesError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Release(#[from] ReleaseError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Lockfile(#[from] LockfileError),
}

/// One suite after download and verification.
struct FetchedSuite {
    name: String,
    release: Release,
    verified: bool,
    inrelease_sha256: String,
    /// The stanzas of the requested source packages found in this suite.
    sources: Vec<source_index::SourcePackage>,
}

fn validate_request(req: &LockRequest) -> Result<(), LockError> {
    let bad = |m: &str| Err(LockError::Request(m.to_string()));
    if req.target.is_empty()
        || !req
            .target
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || req.target.starts_with('.')
    {
        return bad("target must be a plain name like `hyperv` (letters, digits, - _ .)");
    }
    if req.architecture.is_empty() || !req.architecture.chars().all(|c| c.is_ascii_alphanumeric()) {
        return bad("architecture must be a Debian architecture name such as amd64");
    }
    if req.suites.is_empty() {
        return bad("no suites given (e.g. bookworm bookworm-updates bookworm-security)");
    }
    if req.components.is_empty() {
        return bad("no components given (normally `main`)");
    }
    if req.include.is_empty() {
        return bad("no packages to include");
    }
    let mut seen = std::collections::BTreeSet::new();
    for s in &req.suites {
        if s.is_empty() || s.contains(char::is_whitespace) {
            return bad("suite names must be non-empty and contain no whitespace");
        }
        if !seen.insert(s) {
            return Err(LockError::Request(format!("suite `{s}` is listed twice")));
        }
    }
    Ok(())
}

fn now_epoch() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// How a suite's InRelease will be checked.
enum Check {
    Verify(Keyrings),
    /// Not verifiable on this machine (or `trusted=yes`); the reason becomes a warning.
    Skip(String),
}

fn keyrings_for(mirror: &SuiteMirror, req: &LockRequest) -> Result<Check, LockError> {
    if mirror.trusted {
        return Ok(Check::Skip(format!(
            "{} is marked trusted=yes in {}; its InRelease is NOT signature-checked",
            mirror.suite, mirror.origin
        )));
    }
    let default_missing = || {
        format!(
            "no keyring installed ({} does not exist); {} InRelease is NOT signature-checked. Install debian-archive-keyring to verify",
            req.default_keyring.display(),
            mirror.suite
        )
    };
    match &mirror.signed_by {
        None => {
            if !req.default_keyring.is_file() {
                return Ok(Check::Skip(default_missing()));
            }
            Ok(Check::Verify(Keyrings::prepare(
                std::slice::from_ref(&req.default_keyring),
                None,
                &[],
            )?))
        }
        Some(SignedBy::Inline(key)) => Ok(Check::Verify(Keyrings::prepare(&[], Some(key), &[])?)),
        Some(SignedBy::Keys {
            keyrings,
            fingerprints,
        }) => {
            if keyrings.is_empty() {
                if !req.default_keyring.is_file() {
                    return Ok(Check::Skip(default_missing()));
                }
                return Ok(Check::Verify(Keyrings::prepare(
                    std::slice::from_ref(&req.default_keyring),
                    None,
                    fingerprints,
                )?));
            }
            let present: Vec<PathBuf> = keyrings.iter().filter(|k| k.is_file()).cloned().collect();
            if present.is_empty() {
                // The source names its keyring explicitly: a missing file is a broken setup,
                // unless it is the very keyring whose absence the default case tolerates.
                if keyrings.iter().all(|k| k == &req.default_keyring) {
                    return Ok(Check::Skip(default_missing()));
                }
                return Err(ReleaseError::MissingKeyring {
                    path: keyrings[0].clone(),
                    source_origin: mirror.origin.clone(),
                }
                .into());
            }
            Ok(Check::Verify(Keyrings::prepare(
                &present,
                None,
                fingerprints,
            )?))
        }
    }
}

fn fetch_release(
    http: &Http,
    mirror: &SuiteMirror,
    req: &LockRequest,
    progress: &dyn Progress,
) -> Result<(Release, bool, String), LockError> {
    let url = mirror.url(&format!("dists/{}/InRelease", mirror.suite));
    let bytes = http.get(&url, &format!("{} InRelease", mirror.suite), progress)?;
    let inrelease_sha256 = release::sha256_hex(&bytes);
    let (text, verified) = match keyrings_for(mirror, req)? {
        Check::Verify(keyrings) => {
            let signed = release::verify_inrelease(&bytes, &keyrings, &url)?;
            progress.message(&format!(
                "{}: InRelease signature good (key {})",
                mirror.suite,
                signed.signers.join(", ")
            ));
            (signed.text, true)
        }
        Check::Skip(reason) => {
            progress.warning(&reason);
            (release::cleartext_unverified(&bytes, &url)?, false)
        }
    };
    let rel = release::parse_release(&text, &url)?;
    rel.check_suite(&mirror.suite, &url)?;
    rel.check_architecture(&req.architecture, &url)?;
    if let Some(until) = &rel.valid_until {
        if rel.is_expired(now_epoch()) {
            if req.allow_expired || !mirror.check_valid_until {
                progress.warning(&format!(
                    "{}: Release expired at {until} (Valid-Until); accepted because expiry checks are off for it",
                    mirror.suite
                ));
            } else {
                return Err(ReleaseError::Expired {
                    origin: url,
                    valid_until: until.clone(),
                }
                .into());
            }
        } else {
            progress.message(&format!(
                "{}: Release dated {}, valid until {until}",
                mirror.suite, rel.date
            ));
        }
    } else {
        progress.message(&format!(
            "{}: Release dated {} (no Valid-Until)",
            mirror.suite, rel.date
        ));
    }
    Ok((rel, verified, inrelease_sha256))
}

/// Downloads one index, preferring the by-hash path (immune to the mirror updating the index
/// between our InRelease and index requests) and falling back through the variants the
/// Release lists (.xz, then .gz, then uncompressed) when one is missing on the mirror.
fn fetch_index(
    http: &Http,
    mirror: &SuiteMirror,
    rel: &Release,
    variants: &[(String, release::FileEntry)],
    progress: &dyn Progress,
) -> Result<(String, Vec<u8>), LockError> {
    let mut last: Option<FetchError> = None;
    for (path, entry) in variants {
        let plain = format!("dists/{}/{}", mirror.suite, path);
        let mut urls = Vec::new();
        if rel.acquire_by_hash {
            let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
            urls.push(mirror.url(&format!(
                "dists/{}/{}/by-hash/SHA256/{}",
                mirror.suite, dir, entry.sha256
            )));
        }
        urls.push(mirror.url(&plain));
        for url in urls {
            match http.get(&url, &format!("{} {}", mirror.suite, path), progress) {
                Ok(bytes) => {
                    release::check_index(&bytes, entry, &url)?;
                    let data = release::decompress(&bytes, path)?;
                    return Ok((url, data));
                }
                Err(e) if e.is_not_found() => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
    }
    Err(last
        .map(LockError::from)
        .unwrap_or_else(|| LockError::Request("no index variants to fetch".into())))
}

fn fetch_suite(
    http: &Http,
    mirror: &SuiteMirror,
    req: &LockRequest,
    progress: &dyn Progress,
) -> Result<(FetchedSuite, SuiteIndex), LockError> {
    let (rel, verified, inrelease_sha256) = fetch_release(http, mirror, req, progress)?;
    let origin = mirror.url(&format!("dists/{}/InRelease", mirror.suite));
    let mut packages = Vec::new();
    for component in &req.components {
        let dir = rel.component_dir(component, &origin)?;
        for variants in rel.packages_indices(&dir, &req.architecture, &origin)? {
            let (url, data) = fetch_index(http, mirror, &rel, &variants, progress)?;
            let started = Instant::now();
            let parsed = index::parse_packages_bytes(&data, &url, &req.architecture)?;
            progress.message(&format!(
                "{}: {} packages from {} ({} MiB unpacked, parsed in {} ms)",
                mirror.suite,
                parsed.len(),
                variants[0]
                    .0
                    .rsplit_once('.')
                    .map_or(variants[0].0.as_str(), |(b, _)| b),
                data.len() / (1024 * 1024),
                started.elapsed().as_millis()
            ));
            packages.extend(parsed);
        }
    }
    // The Sources index is large (9.5 MB compressed for bookworm's main); only a request
    // that builds from source downloads it.
    let mut sources = Vec::new();
    if !req.sources.is_empty() {
        let wanted: std::collections::BTreeSet<String> = req.sources.iter().cloned().collect();
        for component in &req.components {
            let dir = rel.component_dir(component, &origin)?;
            // A suite without source indices (a binary-only mirror, an updates suite) has none
            // of the packages; pick_sources says so if no suite has them.
            let variants = match rel.sources_index(&dir, &origin) {
                Ok(v) => v,
                Err(ReleaseError::IndexNotListed { .. }) => {
                    progress.message(&format!(
                        "{}: no Sources index for {component}",
                        mirror.suite
                    ));
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let (url, data) = fetch_index(http, mirror, &rel, &variants, progress)?;
            let found = source_index::parse_sources(&data, &url, &wanted)?;
            progress.message(&format!(
                "{}: source packages {} from {}",
                mirror.suite,
                if found.is_empty() {
                    "none of the wanted".to_string()
                } else {
                    found
                        .iter()
                        .map(|p| format!("{} {}", p.name, p.version))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                variants[0].0
            ));
            sources.extend(found);
        }
    }
    Ok((
        FetchedSuite {
            name: mirror.suite.clone(),
            release: rel,
            verified,
            inrelease_sha256,
            sources,
        },
        SuiteIndex {
            suite: mirror.suite.clone(),
            packages,
        },
    ))
}

/// Resolves `req` against the archive and returns the lockfile (not yet written; call
/// [`Lockfile::write`] with [`Lockfile::path_for`]).
pub fn lock(req: &LockRequest, progress: &dyn Progress) -> Result<Lockfile, LockError> {
    let started = Instant::now();
    let (fetched, indices) = fetch_all(req, progress)?;
    let fetch_time = started.elapsed();
    let resolve_start = Instant::now();
    let lock = lock_from(req, &fetched, &indices)?;
    progress.message(&format!(
        "locked {} packages: download+verify+parse {}, resolve {}, total {}",
        lock.packages.len(),
        fmt_duration(fetch_time),
        fmt_duration(resolve_start.elapsed()),
        fmt_duration(started.elapsed())
    ));
    for c in &lock.choices {
        progress.message(&format!(
            "chose {} for `{}` (needed by {}; candidates: {})",
            c.chosen,
            c.relation,
            c.needed_by,
            c.candidates.join(", ")
        ));
    }
    Ok(lock)
}

/// Looks up, downloads and verifies every suite's InRelease and indices.
fn fetch_all(
    req: &LockRequest,
    progress: &dyn Progress,
) -> Result<(Vec<FetchedSuite>, Vec<SuiteIndex>), LockError> {
    validate_request(req)?;
    let sources = AptSources::load(&req.sources_root)?;
    let mirrors: Vec<SuiteMirror> = req
        .suites
        .iter()
        .map(|s| {
            mirror_for_suite(
                &sources,
                &req.mirrors,
                s,
                &req.architecture,
                &req.components,
            )
        })
        .collect::<Result<_, _>>()?;
    let http = Http::new(req.http.clone())?;
    let mut fetched = Vec::new();
    let mut indices = Vec::new();
    for m in &mirrors {
        progress.message(&format!("{}: {} ({})", m.suite, m.base_uri, m.origin));
        let (f, i) = fetch_suite(&http, m, req, progress)?;
        fetched.push(f);
        indices.push(i);
    }
    Ok((fetched, indices))
}

/// Resolves over already fetched suites and builds the lockfile.
fn lock_from(
    req: &LockRequest,
    fetched: &[FetchedSuite],
    indices: &[SuiteIndex],
) -> Result<Lockfile, LockError> {
    let resolution = resolve::resolve(
        indices,
        &resolve::ResolveRequest {
            arch: &req.architecture,
            include: &req.include,
            exclude: &req.exclude,
        },
    )?;
    let sources = pick_sources(req, fetched)?;
    Ok(build_lockfile(req, fetched, &resolution, sources))
}

/// The highest version of each requested source package over all suites (the first suite
/// in the request's order on equal versions).
fn pick_sources(
    req: &LockRequest,
    fetched: &[FetchedSuite],
) -> Result<Vec<LockedSource>, LockError> {
    let mut names = req.sources.clone();
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        let mut best: Option<(&FetchedSuite, &source_index::SourcePackage)> = None;
        for f in fetched {
            for p in f.sources.iter().filter(|p| p.name == name) {
                if best.is_none_or(|(_, b)| p.version > b.version) {
                    best = Some((f, p));
                }
            }
        }
        let Some((suite, p)) = best else {
            return Err(LockError::Request(format!(
                "source package `{name}` is in none of the suites' Sources indices ({}); check the name (`apt-cache showsrc {name}` on a Debian machine) or add the suite that carries it",
                fetched
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        out.push(LockedSource {
            name: p.name.clone(),
            version: p.version.to_string(),
            suite: suite.name.clone(),
            directory: p.directory.clone(),
            files: p
                .files
                .iter()
                .map(|f| LockedSourceFile {
                    name: f.name.clone(),
                    size: f.size,
                    sha256: f.sha256.clone(),
                })
                .collect(),
        });
    }
    Ok(out)
}

fn fmt_duration(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn build_lockfile(
    req: &LockRequest,
    fetched: &[FetchedSuite],
    res: &resolve::Resolution<'_>,
    sources: Vec<LockedSource>,
) -> Lockfile {
    let mut include = req.include.clone();
    include.sort();
    include.dedup();
    Lockfile {
        target: req.target.clone(),
        architecture: req.architecture.clone(),
        source_date_epoch: fetched
            .iter()
            .map(|f| f.release.date_epoch)
            .max()
            .unwrap_or(0),
        include,
        suites: fetched
            .iter()
            .map(|f| LockedSuite {
                name: f.name.clone(),
                date: f.release.date.clone(),
                verified: f.verified,
                inrelease_sha256: f.inrelease_sha256.clone(),
            })
            .collect(),
        excluded: res
            .cuts
            .iter()
            .map(|(name, cuts)| LockedExclusion {
                name: name.clone(),
                cut: cuts
                    .iter()
                    .map(|c| LockedCut {
                        by: c.by.clone(),
                        relation: c.relation.clone(),
                    })
                    .collect(),
            })
            .collect(),
        choices: res
            .choices
            .iter()
            .map(|c| LockedChoice {
                relation: c.relation.clone(),
                needed_by: c.needed_by.clone(),
                chosen: c.chosen.clone(),
                candidates: c.candidates.clone(),
            })
            .collect(),
        packages: res
            .packages
            .iter()
            .map(|r| LockedPackage {
                name: r.package.name.clone(),
                version: r.package.version.to_string(),
                architecture: r.package.architecture.clone(),
                size: r.package.size,
                sha256: r.package.sha256.clone(),
                suite: r.suite.to_string(),
                path: r.package.filename.clone(),
            })
            .collect(),
        sources,
    }
}

/// Convenience for the fetch stage: the URL of a lockfile entry's pool path on the mirror the
/// machine's apt sources (or `overrides`) name for that suite.
pub fn package_url(
    sources_root: &Path,
    overrides: &MirrorOverrides,
    architecture: &str,
    suite: &str,
    path: &str,
) -> Result<String, SourcesError> {
    let sources = AptSources::load(sources_root)?;
    Ok(mirror_for_suite(&sources, overrides, suite, architecture, &[])?.url(path))
}

#[cfg(test)]
mod tests;
