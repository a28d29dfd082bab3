//! Downloads pinned files into a content-addressed cache and refuses any byte off its pin.
//!
//! The cache is keyed by sha256 only, so the same .deb shared by two targets (or two
//! checkouts) is fetched once, and a complete cache makes a build work offline. A file enters
//! the cache only after its size and hash were checked while streaming it to a temporary file
//! in the same directory, followed by fsync and rename: a crash or a bad mirror never leaves a
//! half-written or wrong entry under a real key. Two fetches of one object (threads of one
//! process, or two builds) take turns on a per-object `flock`, so the second finds the first's
//! entry instead of racing it.

use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// One file to fetch, as the lockfile pins it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchItem {
    /// What the user recognises in errors, e.g. `containerd 1.6.20~ds1-1+deb12u3`.
    pub label: String,
    pub url: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{label}: downloaded bytes do not match the pin: expected sha256 {expected}, got {actual} from {url}; the mirror serves different content than the lockfile pins: check the mirror or re-run `eci-build lock`")]
    HashMismatch {
        label: String,
        url: String,
        expected: String,
        actual: String,
    },
    #[error("{label}: download from {url} ended after {got} of {expected} bytes (truncated transfer, tried {attempts} times)")]
    Truncated {
        label: String,
        url: String,
        got: u64,
        expected: u64,
        attempts: u32,
    },
    #[error("{label}: {url} answered HTTP {status}{}", if *status == 404 { "; the mirror no longer carries this version: re-run `eci-build lock` to pin current versions" } else { "" })]
    Status {
        label: String,
        url: String,
        status: u16,
    },
    #[error("{label}: cannot download {url} (tried {attempts} times): {message}")]
    Network {
        label: String,
        url: String,
        attempts: u32,
        message: String,
    },
    #[error("{label}: not in the cache ({}) and --offline was given; run once with network access to fill the cache", path.display())]
    Offline { label: String, path: PathBuf },
    #[error("cache {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cache entry {} is corrupt: expected sha256 {expected}, found {actual}; it was removed, run the build again to re-download it", path.display())]
    CorruptCache {
        path: PathBuf,
        expected: String,
        actual: String,
    },
}

/// A directory of files named by their sha256.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Cache { root: root.into() }
    }

    /// `$ECI_CACHE_DIR`, else `$XDG_CACHE_HOME/eci`, else `~/.cache/eci`.
    pub fn default_location() -> PathBuf {
        if let Some(dir) = std::env::var_os("ECI_CACHE_DIR") {
            return PathBuf::from(dir);
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
            return PathBuf::from(dir).join("eci");
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
        PathBuf::from(home).join(".cache/eci")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path_for(&self, sha256: &str) -> PathBuf {
        self.root.join("sha256").join(sha256)
    }

    pub fn contains(&self, sha256: &str, size: u64) -> bool {
        fs::metadata(self.path_for(sha256))
            .map(|m| m.is_file() && m.len() == size)
            .unwrap_or(false)
    }

    /// Reads an entry and checks its hash again: the cache may live on a shared or damaged disk,
    /// and what goes into an image must match its pin at the moment it is used.
    pub fn read_verified(&self, sha256: &str) -> Result<Vec<u8>, FetchError> {
        let path = self.path_for(sha256);
        let bytes = fs::read(&path).map_err(|source| FetchError::Io {
            path: path.clone(),
            source,
        })?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != sha256 {
            let _ = fs::remove_file(&path);
            return Err(FetchError::CorruptCache {
                path,
                expected: sha256.to_string(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Holds the object's lock until the returned file is dropped. `flock` belongs to the open
    /// file description, so each call opens its own file: threads of one process then exclude
    /// each other as two processes do (an `fcntl` lock would not, it is per process).
    fn lock_object(&self, sha256: &str) -> Result<File, FetchError> {
        let dir = self.root.join("locks");
        fs::create_dir_all(&dir).map_err(|source| FetchError::Io {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(sha256);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| FetchError::Io {
                path: path.clone(),
                source,
            })?;
        file.lock()
            .map_err(|source| FetchError::Io { path, source })?;
        Ok(file)
    }

    fn staging_dir(&self) -> Result<PathBuf, FetchError> {
        let dir = self.root.join("tmp");
        for d in [&dir, &self.root.join("sha256")] {
            fs::create_dir_all(d).map_err(|source| FetchError::Io {
                path: d.clone(),
                source,
            })?;
        }
        Ok(dir)
    }
}

/// How to fetch: parallelism, retries and whether the network may be used at all.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub jobs: usize,
    pub attempts: u32,
    pub first_backoff: Duration,
    pub offline: bool,
    pub progress: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            jobs: 4,
            attempts: 4,
            first_backoff: Duration::from_millis(500),
            offline: false,
            progress: true,
        }
    }
}

/// What a fetch did, for the build report and the benchmark.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchSummary {
    pub cached: usize,
    pub downloaded: usize,
    pub downloaded_bytes: u64,
}

/// Ensures every item is in the cache, downloading the missing ones in parallel.
/// Returns on the first failure after the in-flight downloads finish; nothing partial is kept.
pub fn fetch_all(
    items: &[FetchItem],
    cache: &Cache,
    opts: &FetchOptions,
) -> Result<FetchSummary, FetchError> {
    let missing: Vec<&FetchItem> = items
        .iter()
        .filter(|i| !cache.contains(&i.sha256, i.size))
        .collect();
    let mut summary = FetchSummary {
        cached: items.len() - missing.len(),
        ..Default::default()
    };
    if missing.is_empty() {
        return Ok(summary);
    }
    if opts.offline {
        let first = missing[0];
        return Err(FetchError::Offline {
            label: first.label.clone(),
            path: cache.path_for(&first.sha256),
        });
    }
    let staging = cache.staging_dir()?;
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(20))
        .timeout(Duration::from_secs(600))
        .user_agent(concat!("eci-build/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| FetchError::Network {
            label: "http client".into(),
            url: String::new(),
            attempts: 0,
            message: e.to_string(),
        })?;

    let total: u64 = missing.iter().map(|i| i.size).sum();
    let bar = if opts.progress {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_message("downloading");
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };

    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<FetchError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..opts.jobs.max(1).min(missing.len()) {
            scope.spawn(|| loop {
                if failure.lock().expect("poisoned").is_some() {
                    return;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(item) = missing.get(i) else { return };
                if let Err(e) = fetch_one(&client, item, cache, &staging, opts, &bar) {
                    failure.lock().expect("poisoned").get_or_insert(e);
                    return;
                }
            });
        }
    });
    bar.finish_and_clear();
    if let Some(e) = failure.into_inner().expect("poisoned") {
        return Err(e);
    }
    summary.downloaded = missing.len();
    summary.downloaded_bytes = total;
    Ok(summary)
}

enum Attempt {
    Retry(FetchError),
    Fatal(FetchError),
}

fn fetch_one(
    client: &reqwest::blocking::Client,
    item: &FetchItem,
    cache: &Cache,
    staging: &Path,
    opts: &FetchOptions,
    bar: &indicatif::ProgressBar,
) -> Result<(), FetchError> {
    let _turn = cache.lock_object(&item.sha256)?;
    if cache.contains(&item.sha256, item.size) {
        // Another thread or build fetched it while this one waited for the lock.
        bar.inc(item.size);
        return Ok(());
    }
    let mut backoff = opts.first_backoff;
    let mut last = None;
    for attempt in 1..=opts.attempts.max(1) {
        match try_download(client, item, cache, staging, bar, attempt) {
            Ok(()) => return Ok(()),
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Retry(e)) => {
                last = Some(e);
                if attempt < opts.attempts {
                    std::thread::sleep(backoff);
                    backoff = backoff.saturating_mul(2);
                }
            }
        }
    }
    Err(last.expect("at least one attempt ran"))
}

fn try_download(
    client: &reqwest::blocking::Client,
    item: &FetchItem,
    cache: &Cache,
    staging: &Path,
    bar: &indicatif::ProgressBar,
    attempt: u32,
) -> Result<(), Attempt> {
    let network = |message: String| {
        Attempt::Retry(FetchError::Network {
            label: item.label.clone(),
            url: item.url.clone(),
            attempts: attempt,
            message,
        })
    };
    let io_err = |path: &Path, source: io::Error| {
        Attempt::Fatal(FetchError::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    let mut response = client
        .get(&item.url)
        .send()
        .map_err(|e| network(e.to_string()))?;
    let status = response.status();
    if !status.is_success() {
        let err = FetchError::Status {
            label: item.label.clone(),
            url: item.url.clone(),
            status: status.as_u16(),
        };
        return Err(if status.is_server_error() {
            Attempt::Retry(err)
        } else {
            Attempt::Fatal(err)
        });
    }

    // The object lock already keeps two writers of one item apart; the process id in the name
    // keeps a crashed build's leftover from being mistaken for a live download.
    let part = staging.join(format!("{}.{}.part", item.sha256, std::process::id()));
    let result = (|| {
        let mut file = File::create(&part).map_err(|e| io_err(&part, e))?;
        let mut hasher = Sha256::new();
        let mut got: u64 = 0;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match response.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break, // a reset mid-body is reported as truncation below
            };
            got += n as u64;
            if got > item.size {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).map_err(|e| io_err(&part, e))?;
            bar.inc(n as u64);
        }
        if got != item.size {
            bar.set_position(bar.position().saturating_sub(got.min(item.size)));
            return Err(Attempt::Retry(FetchError::Truncated {
                label: item.label.clone(),
                url: item.url.clone(),
                got,
                expected: item.size,
                attempts: attempt,
            }));
        }
        let actual = hex::encode(hasher.finalize());
        if actual != item.sha256 {
            return Err(Attempt::Fatal(FetchError::HashMismatch {
                label: item.label.clone(),
                url: item.url.clone(),
                expected: item.sha256.clone(),
                actual,
            }));
        }
        file.sync_all().map_err(|e| io_err(&part, e))?;
        let dest = cache.path_for(&item.sha256);
        fs::rename(&part, &dest).map_err(|e| io_err(&dest, e))?;
        sync_dir(dest.parent().expect("cache entries live in a directory"));
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&part);
    }
    result
}

/// Makes a rename durable; failure only weakens crash safety, so it is not an error.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;
    use std::sync::Arc;

    /// A tiny HTTP/1.1 server answering from a script: each request pops the next response.
    struct Server {
        url: String,
        hits: Arc<AtomicUsize>,
    }

    #[derive(Clone)]
    enum Reply {
        Ok(Vec<u8>),
        /// Announces `len` bytes but sends only the body given, then closes.
        Short(Vec<u8>, usize),
        Status(u16),
        /// Answers like `Ok` after a pause, so concurrent fetches overlap for sure.
        Slow(Vec<u8>, Duration),
    }

    fn serve(replies: Vec<Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/pool/x.deb", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { return };
                counter.fetch_add(1, Ordering::SeqCst);
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                    line.clear();
                }
                let mut reply = replies[n.min(replies.len() - 1)].clone();
                if let Reply::Slow(body, pause) = reply {
                    std::thread::sleep(pause);
                    reply = Reply::Ok(body);
                }
                let _ = match reply {
                    Reply::Ok(body) => stream
                        .write_all(
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())
                                .as_bytes(),
                        )
                        .and_then(|_| stream.write_all(&body)),
                    Reply::Short(body, len) => stream
                        .write_all(
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
                                .as_bytes(),
                        )
                        .and_then(|_| stream.write_all(&body)),
                    Reply::Slow(..) => unreachable!("turned into Ok above"),
                    Reply::Status(code) => stream.write_all(
                        format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                            .as_bytes(),
                    ),
                };
            }
        });
        Server { url, hits }
    }

    fn item(url: &str, body: &[u8]) -> FetchItem {
        FetchItem {
            label: "demo 1.0".into(),
            url: url.into(),
            sha256: hex::encode(Sha256::digest(body)),
            size: body.len() as u64,
        }
    }

    fn opts() -> FetchOptions {
        FetchOptions {
            jobs: 2,
            attempts: 3,
            first_backoff: Duration::from_millis(10),
            offline: false,
            progress: false,
        }
    }

    fn leftovers(cache: &Cache) -> usize {
        fs::read_dir(cache.root().join("tmp"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    #[test]
    fn downloads_verifies_and_then_works_offline() {
        let body = b"debian package bytes".to_vec();
        let server = serve(vec![Reply::Ok(body.clone())]);
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let it = item(&server.url, &body);
        let s = fetch_all(std::slice::from_ref(&it), &cache, &opts()).unwrap();
        assert_eq!((s.downloaded, s.cached), (1, 0));
        assert_eq!(cache.read_verified(&it.sha256).unwrap(), body);
        let offline = FetchOptions {
            offline: true,
            ..opts()
        };
        let s = fetch_all(&[it], &cache, &offline).unwrap();
        assert_eq!((s.downloaded, s.cached), (0, 1));
        assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn hash_mismatch_names_package_and_hashes_and_leaves_nothing() {
        let server = serve(vec![Reply::Ok(b"evil bytes!!".to_vec())]);
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let it = item(&server.url, b"good bytes!!");
        let err = fetch_all(std::slice::from_ref(&it), &cache, &opts()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, FetchError::HashMismatch { .. }), "{msg}");
        assert!(
            msg.contains("demo 1.0") && msg.contains(&it.sha256),
            "{msg}"
        );
        assert!(!cache.contains(&it.sha256, it.size));
        assert_eq!(leftovers(&cache), 0);
        // A wrong hash is not retried: the mirror gave a definite answer.
        assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn truncated_download_is_retried_then_reported() {
        let body = vec![7u8; 10_000];
        let server = serve(vec![Reply::Short(body[..100].to_vec(), body.len())]);
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let it = item(&server.url, &body);
        let err = fetch_all(std::slice::from_ref(&it), &cache, &opts()).unwrap_err();
        assert!(
            matches!(err, FetchError::Truncated { got: 100, .. }),
            "{err}"
        );
        assert_eq!(server.hits.load(Ordering::SeqCst), 3);
        assert!(!cache.contains(&it.sha256, it.size));
        assert_eq!(leftovers(&cache), 0);
    }

    #[test]
    fn server_errors_are_retried_with_backoff() {
        let body = b"eventually".to_vec();
        let server = serve(vec![Reply::Status(503), Reply::Ok(body.clone())]);
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        fetch_all(&[item(&server.url, &body)], &cache, &opts()).unwrap();
        assert_eq!(server.hits.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn not_found_says_to_relock() {
        let server = serve(vec![Reply::Status(404)]);
        let dir = tempfile::tempdir().unwrap();
        let err =
            fetch_all(&[item(&server.url, b"x")], &Cache::new(dir.path()), &opts()).unwrap_err();
        assert!(err.to_string().contains("eci-build lock"), "{err}");
        assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn offline_with_incomplete_cache_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let o = FetchOptions {
            offline: true,
            ..opts()
        };
        let err = fetch_all(
            &[item("http://127.0.0.1:9/none", b"x")],
            &Cache::new(dir.path()),
            &o,
        )
        .unwrap_err();
        assert!(matches!(err, FetchError::Offline { .. }), "{err}");
    }

    #[test]
    fn corrupt_cache_entry_is_detected_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let it = item("http://unused", b"original");
        cache.staging_dir().unwrap();
        fs::write(cache.path_for(&it.sha256), b"tampered").unwrap();
        let err = cache.read_verified(&it.sha256).unwrap_err();
        assert!(matches!(err, FetchError::CorruptCache { .. }), "{err}");
        assert!(!cache.path_for(&it.sha256).exists());
    }

    /// Two tests of one test binary fetched the same linux-source at once: one thread's rename
    /// took the other's temporary file away (ENOENT on a fresh cache). Fetches of one object
    /// now take turns, threads of one process included, and the later ones find the entry.
    #[test]
    fn concurrent_fetches_of_one_object_download_it_once() {
        let body = b"one object wanted by four threads".to_vec();
        let server = serve(vec![Reply::Slow(body.clone(), Duration::from_millis(300))]);
        let dir = tempfile::tempdir().unwrap();
        let it = item(&server.url, &body);
        let start = std::sync::Barrier::new(4);
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        // Each thread has its own handle, as two tests of one binary do.
                        let cache = Cache::new(dir.path());
                        start.wait();
                        fetch_all(std::slice::from_ref(&it), &cache, &opts())
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap().expect("every concurrent fetch succeeds");
            }
        });
        assert_eq!(server.hits.load(Ordering::SeqCst), 1, "downloaded once");
        let cache = Cache::new(dir.path());
        assert_eq!(cache.read_verified(&it.sha256).unwrap(), body);
        assert_eq!(leftovers(&cache), 0);
    }
}
