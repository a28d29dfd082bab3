//! End-to-end tests of the lock pipeline: against a local `file:` archive built in the test
//! (offline, deterministic), and one live run against the machine's real apt sources.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::release::sha256_hex;
use super::release::tests::TestKey;
use super::*;

#[derive(Default)]
struct Recorder {
    messages: Mutex<Vec<String>>,
    warnings: Mutex<Vec<String>>,
    echo: bool,
}

impl Progress for Recorder {
    fn message(&self, msg: &str) {
        if self.echo {
            eprintln!("{msg}");
        }
        self.messages.lock().unwrap().push(msg.to_string());
    }
    fn warning(&self, msg: &str) {
        if self.echo {
            eprintln!("warning: {msg}");
        }
        self.warnings.lock().unwrap().push(msg.to_string());
    }
}

const DATE_BASE: &str = "Sat, 11 Jul 2026 10:16:37 UTC";
const DATE_SEC: &str = "Thu, 26 Nov 2026 21:03:35 UTC";

fn deb_stanza(name: &str, version: &str, arch: &str, extra: &str, pool: &str) -> String {
    let file = format!(
        "pool/{pool}/{}/{name}/{name}_{}_{arch}.deb",
        &name[..1],
        version.rsplit_once(':').map_or(version, |(_, v)| v)
    );
    format!(
        "Package: {name}\nVersion: {version}\nArchitecture: {arch}\n{extra}Filename: {file}\nSize: {}\nSHA256: {}\nDescription: test package\n long description line\n\n",
        100 + name.len(),
        sha256_hex(format!("{name}={version}").as_bytes())
    )
}

struct Archive {
    _dir: tempfile::TempDir,
    root: PathBuf,
    sources: PathBuf,
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

struct SuiteSpec<'s> {
    name: &'s str,
    date: &'s str,
    extra_release: &'s str,
    packages: String,
    by_hash_only: bool,
    gz_only_on_mirror: bool,
}

fn release_text(s: &SuiteSpec<'_>, files: &[(String, Vec<u8>)]) -> String {
    let mut t = format!(
        "Origin: Test\nSuite: {name}\nCodename: {name}\nDate: {date}\n{extra}Architectures: amd64 arm64\nComponents: main\nSHA256:\n",
        name = s.name,
        date = s.date,
        extra = s.extra_release
    );
    for (path, data) in files {
        t.push_str(&format!(" {} {} {path}\n", sha256_hex(data), data.len()));
    }
    t
}

fn fake_clearsign(text: &str) -> Vec<u8> {
    format!(
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n{text}-----BEGIN PGP SIGNATURE-----\n\nnot-a-real-signature\n-----END PGP SIGNATURE-----\n"
    )
    .into_bytes()
}

/// Builds `dists/` for the given suites under a temp dir plus an apt sources dir pointing at
/// it through a `file:` URI. `sign` turns release text into InRelease bytes.
fn build_archive(
    suites: &[SuiteSpec<'_>],
    sign: &dyn Fn(&str) -> Vec<u8>,
    signed_by: Option<&Path>,
) -> Archive {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    for s in suites {
        let d = root.join("dists").join(s.name);
        let bin = d.join("main/binary-amd64");
        std::fs::create_dir_all(&bin).unwrap();
        let plain = s.packages.as_bytes().to_vec();
        let files = vec![
            ("main/binary-amd64/Packages".to_string(), plain.clone()),
            ("main/binary-amd64/Packages.gz".to_string(), gz(&plain)),
            ("main/binary-amd64/Packages.xz".to_string(), xz(&plain)),
        ];
        for (path, data) in &files {
            if s.by_hash_only {
                let h = d.join("main/binary-amd64/by-hash/SHA256");
                std::fs::create_dir_all(&h).unwrap();
                std::fs::write(h.join(sha256_hex(data)), data).unwrap();
            } else if !s.gz_only_on_mirror || path.ends_with(".gz") {
                std::fs::write(d.join(path), data).unwrap();
            }
        }
        std::fs::write(d.join("InRelease"), sign(&release_text(s, &files))).unwrap();
    }
    let sources = dir.path().join("apt");
    std::fs::create_dir_all(sources.join("sources.list.d")).unwrap();
    let names: Vec<&str> = suites.iter().map(|s| s.name).collect();
    let mut stanza = format!(
        "Types: deb\nURIs: file://{}\nSuites: {}\nComponents: main\n",
        root.display(),
        names.join(" ")
    );
    if let Some(k) = signed_by {
        stanza.push_str(&format!("Signed-By: {}\n", k.display()));
    }
    std::fs::write(sources.join("sources.list.d/test.sources"), stanza).unwrap();
    Archive {
        _dir: dir,
        root,
        sources,
    }
}

fn base_packages() -> String {
    [
        deb_stanza(
            "app",
            "1.0-1",
            "amd64",
            "Depends: libc6 (>= 2.36), helper | other, awk\nPre-Depends: init-system-helpers\n",
            "main",
        ),
        deb_stanza("libc6", "2.36-9+deb12u9", "amd64", "", "main"),
        deb_stanza("helper", "2.0", "all", "Depends: libc6\n", "main"),
        deb_stanza("other", "1.0", "amd64", "", "main"),
        deb_stanza(
            "init-system-helpers",
            "1.65.2",
            "all",
            "Depends: systemd-light | sysvinit-utils\n",
            "main",
        ),
        deb_stanza("systemd-light", "252", "amd64", "", "main"),
        deb_stanza("sysvinit-utils", "3.06", "amd64", "", "main"),
        deb_stanza("mawk", "1.3.4", "amd64", "Provides: awk\n", "main"),
        deb_stanza("gawk", "5.2.1", "amd64", "Provides: awk\n", "main"),
        deb_stanza("app", "1.0-1", "arm64", "", "main"),
    ]
    .concat()
}

fn security_packages() -> String {
    deb_stanza("libc6", "2.36-9+deb12u10", "amd64", "", "updates/main")
}

fn suites(base_extra: &'static str) -> Vec<SuiteSpec<'static>> {
    vec![
        SuiteSpec {
            name: "testing-base",
            date: DATE_BASE,
            extra_release: base_extra,
            packages: base_packages(),
            by_hash_only: false,
            gz_only_on_mirror: false,
        },
        SuiteSpec {
            name: "testing-security",
            date: DATE_SEC,
            extra_release: "Acquire-By-Hash: yes\n",
            packages: security_packages(),
            by_hash_only: true,
            gz_only_on_mirror: false,
        },
    ]
}

fn request(a: &Archive) -> LockRequest {
    let mut req = LockRequest::new("test", "amd64");
    req.suites = vec!["testing-base".into(), "testing-security".into()];
    req.include = vec!["app".into()];
    req.exclude = vec!["systemd-light".into()];
    req.sources_root = a.sources.clone();
    req.default_keyring = a.root.join("no-such-keyring.gpg");
    req
}

#[test]
fn offline_lock_end_to_end_unverified() {
    let a = build_archive(&suites(""), &fake_clearsign, None);
    let rec = Recorder::default();
    let lock = lock(&request(&a), &rec).unwrap();
    let got: Vec<String> = lock
        .packages
        .iter()
        .map(|p| format!("{} {} {} {}", p.name, p.version, p.architecture, p.suite))
        .collect();
    assert_eq!(
        got,
        [
            "app 1.0-1 amd64 testing-base",
            "gawk 5.2.1 amd64 testing-base",
            "helper 2.0 all testing-base",
            "init-system-helpers 1.65.2 all testing-base",
            "libc6 2.36-9+deb12u10 amd64 testing-security",
            "sysvinit-utils 3.06 amd64 testing-base",
        ]
    );
    let libc = lock.package("libc6").unwrap();
    assert_eq!(
        libc.path,
        "pool/updates/main/l/libc6/libc6_2.36-9+deb12u10_amd64.deb"
    );
    assert_eq!(libc.sha256, sha256_hex(b"libc6=2.36-9+deb12u10"));
    assert_eq!(
        lock.source_date_epoch,
        release::parse_date(DATE_SEC).unwrap()
    );
    assert_eq!(lock.excluded.len(), 1);
    assert!(
        lock.excluded[0].cut.is_empty(),
        "sysvinit-utils satisfied the alternative"
    );
    assert_eq!(lock.choices.len(), 1);
    assert_eq!(lock.choices[0].chosen, "gawk");
    assert!(lock.suites.iter().all(|s| !s.verified));
    let base_inrelease = std::fs::read(a.root.join("dists/testing-base/InRelease")).unwrap();
    assert_eq!(lock.suites[0].inrelease_sha256, sha256_hex(&base_inrelease));
    let warnings = rec.warnings.lock().unwrap();
    assert_eq!(
        warnings.len(),
        2,
        "one warning per unverified suite: {warnings:?}"
    );
    assert!(
        warnings[0].contains("NOT signature-checked"),
        "{warnings:?}"
    );

    // The lockfile names no mirror and survives a write/read cycle.
    let out = tempfile::tempdir().unwrap();
    let path = Lockfile::path_for(out.path(), &lock.target);
    lock.write(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains(&a.root.display().to_string()) && !text.contains("file:"),
        "{text}"
    );
    assert_eq!(Lockfile::read(&path).unwrap(), lock);

    // The fetch stage turns (suite, path) back into a URL on the configured mirror.
    let url = package_url(
        &a.sources,
        &MirrorOverrides::default(),
        "amd64",
        &libc.suite,
        &libc.path,
    )
    .unwrap();
    assert_eq!(url, format!("file://{}/{}", a.root.display(), libc.path));
}

#[test]
fn offline_lock_is_deterministic() {
    let a = build_archive(&suites(""), &fake_clearsign, None);
    let one = lock(&request(&a), &Recorder::default())
        .unwrap()
        .to_yaml()
        .unwrap();
    let two = lock(&request(&a), &Recorder::default())
        .unwrap()
        .to_yaml()
        .unwrap();
    assert_eq!(one, two);
}

#[test]
fn exclusion_cut_is_recorded_in_the_lockfile() {
    let a = build_archive(&suites(""), &fake_clearsign, None);
    let mut req = request(&a);
    req.exclude = vec!["systemd-light".into(), "sysvinit-utils".into()];
    let lock = lock(&req, &Recorder::default()).unwrap();
    assert!(lock.package("sysvinit-utils").is_none());
    let cut: Vec<(String, Vec<String>)> = lock
        .excluded
        .iter()
        .map(|x| {
            (
                x.name.clone(),
                x.cut
                    .iter()
                    .map(|c| format!("{}: {}", c.by, c.relation))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        cut,
        [
            (
                "systemd-light".to_string(),
                vec!["init-system-helpers: systemd-light | sysvinit-utils".to_string()]
            ),
            (
                "sysvinit-utils".to_string(),
                vec!["init-system-helpers: systemd-light | sysvinit-utils".to_string()]
            ),
        ]
    );
}

#[test]
fn index_hash_mismatch_is_fatal_and_names_both_hashes() {
    let a = build_archive(&suites(""), &fake_clearsign, None);
    let xz_path = a
        .root
        .join("dists/testing-base/main/binary-amd64/Packages.xz");
    let good = std::fs::read(&xz_path).unwrap();
    let evil = xz(base_packages()
        .replace("Package: gawk", "Package: gawq")
        .as_bytes());
    std::fs::write(&xz_path, &evil).unwrap();
    let e = lock(&request(&a), &Recorder::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("main/binary-amd64/Packages.xz"), "{e}");
    assert!(
        e.contains(&sha256_hex(&good)) && e.contains(&sha256_hex(&evil)),
        "{e}"
    );
}

#[test]
fn missing_xz_falls_back_to_gz() {
    let mut s = suites("");
    s[0].gz_only_on_mirror = true;
    let a = build_archive(&s, &fake_clearsign, None);
    assert!(!a
        .root
        .join("dists/testing-base/main/binary-amd64/Packages.xz")
        .exists());
    let lock = lock(&request(&a), &Recorder::default()).unwrap();
    assert!(lock.package("app").is_some());
}

#[test]
fn expired_release_is_refused_unless_allowed() {
    let a = build_archive(
        &suites("Valid-Until: Sun, 12 Jul 2026 10:16:37 UTC\n"),
        &fake_clearsign,
        None,
    );
    let mut req = request(&a);
    // The fixture date is only "expired" if the clock says so; make it unambiguous.
    if release::parse_date("Sun, 12 Jul 2026 10:16:37 UTC").unwrap() > now_epoch() {
        eprintln!("skipping expiry test: the system clock is before the fixture's Valid-Until");
        return;
    }
    let e = lock(&req, &Recorder::default()).unwrap_err().to_string();
    assert!(e.contains("expired") && e.contains("Valid-Until"), "{e}");
    req.allow_expired = true;
    let rec = Recorder::default();
    assert!(lock(&req, &rec).is_ok());
    assert!(rec
        .warnings
        .lock()
        .unwrap()
        .iter()
        .any(|w| w.contains("expired")));
}

#[test]
fn wrong_suite_in_release_is_refused() {
    let a = build_archive(&suites(""), &fake_clearsign, None);
    let p = a.root.join("dists/testing-base/InRelease");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("testing-base", "other-suite");
    std::fs::write(&p, text).unwrap();
    let e = lock(&request(&a), &Recorder::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("other-suite") && e.contains("`testing-base`"),
        "{e}"
    );
}

#[test]
fn missing_suite_points_at_mirror_option() {
    let a = build_archive(&suites(""), &fake_clearsign, None);
    let mut req = request(&a);
    req.suites.push("testing-updates".into());
    let e = lock(&req, &Recorder::default()).unwrap_err().to_string();
    assert!(
        e.contains("`testing-updates`") && e.contains("--mirror") && e.contains("test.sources"),
        "{e}"
    );
    // ... and --mirror SUITE=URL supplies it.
    let mut s = suites("");
    s.push(SuiteSpec {
        name: "testing-updates",
        date: DATE_BASE,
        extra_release: "",
        packages: deb_stanza("gawk", "5.2.1-2", "amd64", "Provides: awk\n", "main"),
        by_hash_only: false,
        gz_only_on_mirror: false,
    });
    let b = build_archive(&s, &fake_clearsign, None);
    req.mirrors =
        MirrorOverrides::parse(&[format!("testing-updates=file://{}", b.root.display())]).unwrap();
    let lock = lock(&req, &Recorder::default()).unwrap();
    assert_eq!(lock.package("gawk").unwrap().version, "5.2.1-2");
    assert_eq!(lock.package("gawk").unwrap().suite, "testing-updates");
}

#[test]
fn request_validation() {
    let mut req = LockRequest::new("../evil", "amd64");
    req.suites = vec!["s".into()];
    req.include = vec!["a".into()];
    assert!(matches!(lock(&req, &Quiet), Err(LockError::Request(_))));
    let mut req = LockRequest::new("ok", "amd64");
    req.include = vec!["a".into()];
    assert!(lock(&req, &Quiet)
        .unwrap_err()
        .to_string()
        .contains("no suites"));
}

#[test]
fn signed_archive_verifies_and_tampering_is_fatal() {
    let Some(key) = TestKey::generate() else {
        return;
    };
    let sign = |t: &str| key.clearsign(t);
    let a = build_archive(&suites(""), &sign, Some(&key.binary));
    let rec = Recorder::default();
    let lock = lock(&request(&a), &rec).unwrap();
    assert!(lock.suites.iter().all(|s| s.verified), "{:?}", lock.suites);
    assert!(rec.warnings.lock().unwrap().is_empty());

    // Change a pinned index hash inside the signed text: the signature must fail.
    let p = a.root.join("dists/testing-base/InRelease");
    let text = std::fs::read_to_string(&p).unwrap();
    let xz_hash = sha256_hex(
        &std::fs::read(
            a.root
                .join("dists/testing-base/main/binary-amd64/Packages.xz"),
        )
        .unwrap(),
    );
    let tampered = text.replace(&xz_hash, &"0".repeat(64));
    assert_ne!(tampered, text);
    std::fs::write(&p, tampered).unwrap();
    let e = super::lock(&request(&a), &Recorder::default()).unwrap_err();
    assert!(
        matches!(e, LockError::Release(ReleaseError::BadSignature { .. })),
        "{e}"
    );

    // An unsigned InRelease where a keyring is configured is refused, not downgraded.
    std::fs::write(&p, fake_clearsign(&text)).unwrap();
    let e = super::lock(&request(&a), &Recorder::default()).unwrap_err();
    assert!(matches!(e, LockError::Release(_)), "{e}");

    // A Signed-By keyring that does not exist is a configuration error.
    let b = build_archive(&suites(""), &sign, Some(Path::new("/nonexistent/key.gpg")));
    let e = super::lock(&request(&b), &Recorder::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/nonexistent/key.gpg") && e.contains("does not exist"),
        "{e}"
    );
}

/// Live lock against the machine's own apt sources. Skips (with the reason printed) when no
/// source carries the suites or the mirror does not answer quickly, except in CI, where the
/// image build needs the mirror anyway; fails on anything else.
#[test]
fn live_lock_docker_bookworm() {
    let suites = ["bookworm", "bookworm-updates", "bookworm-security"];
    let apt = Path::new("/etc/apt");
    let sources = match AptSources::load(apt) {
        Ok(s) => s,
        Err(e) => {
            eci_test_support::prerequisite(
                false,
                &format!("live lock test: cannot read apt sources: {e}"),
            );
            return;
        }
    };
    let main = vec!["main".to_string()];
    let mut first = None;
    for s in suites {
        match mirror_for_suite(&sources, &MirrorOverrides::default(), s, "amd64", &main) {
            Ok(m) => {
                first.get_or_insert(m);
            }
            Err(e) => {
                eci_test_support::prerequisite(false, &format!("live lock test: {e}"));
                return;
            }
        }
    }
    let first = first.unwrap();
    let probe = Http::new(HttpConfig {
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
        attempts: 1,
        initial_backoff: Duration::from_millis(0),
    })
    .unwrap();
    if let Err(e) = probe.get(&first.url("dists/bookworm/InRelease"), "probe", &Quiet) {
        eci_test_support::prerequisite(
            false,
            &format!("live lock test: mirror not reachable within 10 s: {e}"),
        );
        return;
    }

    let mut req = LockRequest::new("live-test", "amd64");
    req.suites = suites.iter().map(|s| s.to_string()).collect();
    req.include = vec!["docker.io".into(), "containerd".into(), "iptables".into()];
    req.http = HttpConfig {
        connect_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(40),
        attempts: 2,
        initial_backoff: Duration::from_millis(500),
    };
    let rec = Recorder {
        echo: true,
        ..Default::default()
    };
    let started = Instant::now();
    let (fetched, indices) = match fetch_all(&req, &rec) {
        Ok(x) => x,
        Err(LockError::Fetch(e @ FetchError::Transport { .. })) => {
            eci_test_support::prerequisite(
                false,
                &format!("live lock test: mirror stopped answering: {e}"),
            );
            return;
        }
        Err(e) => panic!("live lock failed: {e}"),
    };
    let fetched_at = started.elapsed();
    let lock = lock_from(&req, &fetched, &indices).unwrap_or_else(|e| panic!("{e}"));
    let total = started.elapsed();
    eprintln!(
        "LIVE LOCK TIMING: {} packages; download+verify+parse {:.2} s, resolve {:.3} s, total {:.2} s",
        lock.packages.len(),
        fetched_at.as_secs_f64(),
        (total - fetched_at).as_secs_f64(),
        total.as_secs_f64()
    );

    for name in ["libc6", "docker.io", "containerd", "iptables", "runc"] {
        assert!(
            lock.package(name).is_some(),
            "{name} missing from {:?}",
            lock.packages.iter().map(|p| &p.name).collect::<Vec<_>>()
        );
    }
    for p in &lock.packages {
        assert_eq!(p.sha256.len(), 64, "{p:?}");
        assert!(p.sha256.bytes().all(|b| b.is_ascii_hexdigit()), "{p:?}");
        assert!(
            p.path.starts_with("pool/") && p.path.ends_with(".deb"),
            "{p:?}"
        );
        assert!(
            p.architecture == "amd64" || p.architecture == "all",
            "{p:?}"
        );
        assert!(p.size > 0);
    }
    assert!(
        lock.packages.windows(2).all(|w| w[0].name < w[1].name),
        "sorted by name"
    );

    // containerd must be the newest version any suite offers, with that index's hash.
    let best = indices
        .iter()
        .flat_map(|i| i.packages.iter().map(move |p| (p, i.suite.as_str())))
        .filter(|(p, _)| p.name == "containerd" && p.architecture == "amd64")
        .max_by(|a, b| a.0.version.cmp(&b.0.version))
        .expect("containerd is in the bookworm indices");
    let locked = lock.package("containerd").unwrap();
    assert_eq!(locked.version, best.0.version.as_str());
    assert_eq!(locked.sha256, best.0.sha256);
    assert_eq!(locked.path, best.0.filename);

    // Verification status follows the keyring situation on this machine.
    for (s, f) in lock.suites.iter().zip(&fetched) {
        assert_eq!(s.name, f.name);
        let keyring_present = match mirror_for_suite(
            &sources,
            &MirrorOverrides::default(),
            &s.name,
            "amd64",
            &main,
        )
        .unwrap()
        .signed_by
        {
            Some(SignedBy::Keys { keyrings, .. }) if !keyrings.is_empty() => {
                keyrings.iter().any(|k| k.is_file())
            }
            _ => Path::new(DEFAULT_KEYRING).is_file(),
        };
        assert_eq!(s.verified, keyring_present, "{s:?}");
    }
    assert_eq!(
        lock.source_date_epoch,
        fetched.iter().map(|f| f.release.date_epoch).max().unwrap()
    );

    // Committed artifact: no mirror host, strict round trip.
    let yaml = lock.to_yaml().unwrap();
    let host = first
        .base_uri
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or("");
    assert!(
        !host.is_empty() && !yaml.contains(host),
        "mirror host leaked into the lockfile"
    );
    let out = tempfile::tempdir().unwrap();
    // ECI_LIVE_LOCK_OUT keeps the real lockfile for inspection.
    let path = match std::env::var_os("ECI_LIVE_LOCK_OUT") {
        Some(p) => PathBuf::from(p),
        None => Lockfile::path_for(out.path(), "live-test"),
    };
    lock.write(&path).unwrap();
    assert_eq!(Lockfile::read(&path).unwrap(), lock);
    assert!(total < Duration::from_secs(120), "live lock took {total:?}");
}
