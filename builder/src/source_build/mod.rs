//! Programs an image builds from their pinned Debian source package instead of taking
//! Debian's binary (`source_builds:` in an image definition).
//!
//! Why: under TCG every dynamically linked process start costs ~17 ms more than a static one,
//! and dockerd runs iptables 68 times before it is ready; Debian's iptables is a dynamic
//! program that also loads its extensions as shared objects. The same source, patched as
//! Debian patches it and built with Debian's hardening flags as one static PIE, takes 0.37 s
//! instead of 2.3 s for those runs in the VM (runtime/README.md, *Boot phases*).
//!
//! Provenance: the source files are pinned in the image's lock by sha256 through the signed
//! Release and `Sources` index; the compiler, linker and the C library linked in come from
//! the build host and are recorded in manifest.json and the SBOM. The C library must be the
//! image's glibc version: a static glibc still loads NSS modules of the image for some lookups.
//!
//! A build is cached under the cache folder by a key over the recipe, the source files, the
//! toolchain and SOURCE_DATE_EPOCH; the same inputs give the same bytes.

mod compile;
mod unpack;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::apt::fetch::Cache;
use crate::apt::lock::{LockedSource, Lockfile};
pub use compile::Toolchain;

/// How one source package is built and what of it the image gets.
#[derive(Debug, PartialEq, Eq)]
pub struct Recipe {
    /// The Debian source package.
    pub package: &'static str,
    /// The binary package the build replaces (the definition must exclude it).
    pub replaces: &'static str,
    /// `./configure` arguments (compiler flags come from [`compile::cflags`]).
    pub configure: &'static [&'static str],
    /// The program make builds (relative to the tree) and where it goes in the image.
    pub program: (&'static str, &'static str),
    /// Symbolic links in the image to the program: `(path, target)`.
    pub links: &'static [(&'static str, &'static str)],
}

/// iptables with the legacy (x_tables) backend only, the one the image's kernel modules and
/// `alternatives:` select; extensions are linked in (`--disable-shared`), so no shared object
/// is ever loaded. Paths as Debian's rules set them, so messages and lock files match. Unlike
/// Debian's build it has no connlabel match (libnetfilter_conntrack; nothing in the VM uses
/// it), and every optional part is named so the host's -dev packages cannot change it.
const IPTABLES: Recipe = Recipe {
    package: "iptables",
    replaces: "iptables",
    configure: &[
        "--prefix=/usr",
        "--libdir=/usr/lib/x86_64-linux-gnu",
        "--with-xtlibdir=/usr/lib/x86_64-linux-gnu/xtables",
        "--disable-nftables",
        "--disable-connlabel",
        "--disable-bpf-compiler",
        "--disable-nfsynproxy",
        "--disable-libipq",
        "--enable-static",
        "--disable-shared",
    ],
    program: (
        "iptables/xtables-legacy-multi",
        "/usr/sbin/xtables-legacy-multi",
    ),
    links: &[
        ("/usr/sbin/iptables-legacy", "xtables-legacy-multi"),
        ("/usr/sbin/iptables-legacy-save", "xtables-legacy-multi"),
        ("/usr/sbin/iptables-legacy-restore", "xtables-legacy-multi"),
        ("/usr/sbin/ip6tables-legacy", "xtables-legacy-multi"),
        ("/usr/sbin/ip6tables-legacy-save", "xtables-legacy-multi"),
        ("/usr/sbin/ip6tables-legacy-restore", "xtables-legacy-multi"),
    ],
};

const RECIPES: &[Recipe] = &[IPTABLES];

/// Bumped when what a recipe produces changes in a way its fields do not show (the flags in
/// compile.rs, the unpacking), so old cache entries are not reused.
const RECIPE_FORMAT: &str = "eci-source-build-1";

pub fn recipe(package: &str) -> Option<&'static Recipe> {
    RECIPES.iter().find(|r| r.package == package)
}

pub fn recipe_names() -> Vec<&'static str> {
    RECIPES.iter().map(|r| r.package).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum SourceBuildError {
    #[error("source build: building programs from source needs host packages that are missing; install them: apt-get install {missing}")]
    HostTools { missing: String },
    #[error("source build: `{program}` failed: {message}")]
    Tool { program: String, message: String },
    #[error("source build: {package}: {message}")]
    Source { package: String, message: String },
    #[error("source build: {package}: the definition builds it from source but the lock pins no such source package; run `eci-build lock --target TARGET`")]
    NotLocked { package: String },
    #[error("source build: {package} would link the build host's glibc {host}, but the image's libc6 is {image}: a static glibc program loads the image's NSS modules for some lookups, which must come from the same glibc version. Build on a host whose glibc is {image_upstream} (Debian 12 for bookworm images)")]
    GlibcMismatch {
        package: String,
        host: String,
        image: String,
        image_upstream: String,
    },
    #[error("source build: {package}: `{step}` failed; the full log is {}; its end:\n{tail}", log.display())]
    Build {
        package: String,
        step: String,
        log: PathBuf,
        tail: String,
    },
    #[error("source build: {package}: make did not produce {}", path.display())]
    NoProgram { package: String, path: PathBuf },
    #[error(transparent)]
    Fetch(#[from] crate::apt::fetch::FetchError),
    #[error("source build: {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SourceBuildError + '_ {
    move |source| SourceBuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A program built from source, ready to go into the root filesystem.
#[derive(Debug, Clone)]
pub struct Built {
    pub recipe: &'static Recipe,
    pub program: Vec<u8>,
    pub record: BuildRecord,
}

/// What manifest.json and the SBOM say about one source build.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BuildRecord {
    pub package: String,
    pub version: String,
    /// The .dsc's sha256: it pins every other file of the source package.
    pub dsc_sha256: String,
    /// Debian's patches applied, in order.
    pub patches: Vec<String>,
    pub tools: Vec<String>,
    pub glibc: String,
    /// Exact versions of the host packages whose files are in the program.
    pub host_packages: Vec<String>,
    pub libc_a_sha256: String,
    pub program: String,
    pub program_sha256: String,
}

/// Builds (or takes from the cache) every source build of the definition. `lock` pins the
/// sources, whose files the fetch stage has put into `cache`.
pub fn build_all(
    packages: &[String],
    lock: &Lockfile,
    cache: &Cache,
    epoch: u64,
) -> Result<Vec<Built>, SourceBuildError> {
    if packages.is_empty() {
        return Ok(Vec::new());
    }
    let toolchain = Toolchain::detect()?;
    packages
        .iter()
        .map(|name| {
            let (recipe, source) = check(name, lock, &toolchain.glibc)?;
            build_one(recipe, source, cache, &toolchain, epoch)
        })
        .collect()
}

/// Whether `name` can be built from source for the image `lock` pins, on a host whose glibc
/// is `host_glibc`: its recipe and locked source, or why not. Pure, so every refusal here is
/// tested without the host tools [`Toolchain::detect`] runs.
fn check<'a>(
    name: &str,
    lock: &'a Lockfile,
    host_glibc: &str,
) -> Result<(&'static Recipe, &'a LockedSource), SourceBuildError> {
    let recipe = recipe(name).ok_or_else(|| SourceBuildError::Source {
        package: name.to_string(),
        message: format!("no recipe (known: {})", recipe_names().join(", ")),
    })?;
    let source = lock
        .sources
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| SourceBuildError::NotLocked {
            package: name.to_string(),
        })?;
    // The lock holds the binary package's files no more: the build replaces them.
    if let Some(p) = lock.package(recipe.replaces) {
        return Err(SourceBuildError::Source {
            package: name.to_string(),
            message: format!(
                "the lock also pins Debian's binary package {} {}, which the build replaces; exclude it in the definition and re-run `eci-build lock`",
                p.name, p.version
            ),
        });
    }
    if let Some(libc6) = lock.package("libc6") {
        let upstream = crate::apt::lock::Version::parse(&libc6.version)
            .map(|v| v.upstream().to_string())
            .unwrap_or_else(|_| libc6.version.clone());
        if upstream != host_glibc {
            return Err(SourceBuildError::GlibcMismatch {
                package: name.to_string(),
                host: host_glibc.to_string(),
                image: libc6.version.clone(),
                image_upstream: upstream,
            });
        }
    }
    Ok((recipe, source))
}

fn cache_key(recipe: &Recipe, source: &LockedSource, toolchain: &Toolchain, epoch: u64) -> String {
    let mut h = Sha256::new();
    h.update(RECIPE_FORMAT);
    h.update(format!(
        "{recipe:?}\n{}\n{}\n",
        compile::CFLAGS,
        compile::LDFLAGS
    ));
    for f in &source.files {
        h.update(format!("{} {} {}\n", f.sha256, f.size, f.name));
    }
    h.update(format!("{toolchain:?}\n{epoch}\n"));
    hex::encode(h.finalize())
}

fn build_one(
    recipe: &'static Recipe,
    source: &LockedSource,
    cache: &Cache,
    toolchain: &Toolchain,
    epoch: u64,
) -> Result<Built, SourceBuildError> {
    let dsc_sha256 = source
        .files
        .iter()
        .find(|f| f.name.ends_with(".dsc"))
        .map(|f| f.sha256.clone())
        .ok_or_else(|| SourceBuildError::NotLocked {
            package: source.name.clone(),
        })?;
    let root = cache.root().join("source-builds");
    let key = cache_key(recipe, source, toolchain, epoch);
    let entry = root.join(&key);
    if let Some(built) = cached(recipe, &entry)? {
        return Ok(built);
    }
    std::fs::create_dir_all(&root).map_err(io_err(&root))?;
    let work = tempfile::Builder::new()
        .prefix(&format!(".build-{}-", recipe.package))
        .tempdir_in(&root)
        .map_err(io_err(&root))?;
    // The work folder's name is random; -ffile-prefix-map maps it to `.` and the program is
    // stripped, so no path of it reaches the bytes (two cache folders give the same program).
    let tree = work.path().join("src");
    let read = |f: &crate::apt::lock::LockedSourceFile| -> Result<Vec<u8>, SourceBuildError> {
        Ok(cache.read_verified(&f.sha256)?)
    };
    let patches = unpack::extract(
        &unpack::SourceFiles {
            source,
            read: &read,
        },
        &tree,
    )?;
    // One log per build, kept where the error message points when it fails.
    let log = work.path().join("build.log");
    if let Err(e) = compile::configure_and_make(recipe, &tree, epoch, &log) {
        let kept = root.join(format!("{}-{}.log", recipe.package, &key[..12]));
        return Err(match (std::fs::copy(&log, &kept), e) {
            (
                Ok(_),
                SourceBuildError::Build {
                    package,
                    step,
                    tail,
                    ..
                },
            ) => SourceBuildError::Build {
                package,
                step,
                log: kept,
                tail,
            },
            (_, e) => e,
        });
    }
    let built_path = tree.join(recipe.program.0);
    let program = std::fs::read(&built_path).map_err(|_| SourceBuildError::NoProgram {
        package: recipe.package.into(),
        path: built_path.clone(),
    })?;
    let record = BuildRecord {
        package: source.name.clone(),
        version: source.version.clone(),
        dsc_sha256: dsc_sha256.clone(),
        patches,
        tools: toolchain.tools.clone(),
        glibc: toolchain.glibc.clone(),
        host_packages: toolchain.packages.clone(),
        libc_a_sha256: toolchain.libc_a_sha256.clone(),
        program: recipe.program.1.to_string(),
        program_sha256: hex::encode(Sha256::digest(&program)),
    };
    // The entry appears whole or not at all: written in the work folder, then renamed.
    let staged = work.path().join("entry");
    std::fs::create_dir(&staged).map_err(io_err(&staged))?;
    write_synced(&staged.join("program"), &program)?;
    let json = serde_json::to_vec_pretty(&record).expect("record serialises");
    write_synced(&staged.join("record.json"), &json)?;
    match std::fs::rename(&staged, &entry) {
        Ok(()) => {}
        // Another build of the same key finished first; its bytes are the same.
        Err(_) if entry.is_dir() => {}
        Err(e) => return Err(io_err(&entry)(e)),
    }
    Ok(Built {
        recipe,
        program,
        record,
    })
}

/// A complete cache entry, checked against its own record.
fn cached(recipe: &'static Recipe, entry: &Path) -> Result<Option<Built>, SourceBuildError> {
    if !entry.exists() {
        return Ok(None);
    }
    let read = || -> Option<(BuildRecord, Vec<u8>)> {
        let record: BuildRecord =
            serde_json::from_slice(&std::fs::read(entry.join("record.json")).ok()?).ok()?;
        let program = std::fs::read(entry.join("program")).ok()?;
        (hex::encode(Sha256::digest(&program)) == record.program_sha256)
            .then_some((record, program))
    };
    let Some((record, program)) = read() else {
        // Damaged on disk: removed, so the new build's entry can take its place.
        std::fs::remove_dir_all(entry).map_err(io_err(entry))?;
        return Ok(None);
    };
    Ok(Some(Built {
        recipe,
        program,
        record,
    }))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), SourceBuildError> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apt::lock::{LockedPackage, LockedSourceFile};

    #[test]
    fn recipes_are_found_by_package_and_link_to_their_program() {
        let r = recipe("iptables").unwrap();
        assert_eq!(r.replaces, "iptables");
        assert!(recipe("nftables").is_none());
        let program_name = r.program.1.rsplit('/').next().unwrap();
        for (path, target) in r.links {
            assert!(path.starts_with("/usr/sbin/"), "{path}");
            assert_eq!(*target, program_name);
        }
    }

    /// The image's glibc as Debian 12 ships it and the host glibc that matches it.
    const IMAGE_LIBC6: &str = "2.36-9+deb12u10";
    const HOST_GLIBC: &str = "2.36";

    fn package(name: &str, version: &str) -> LockedPackage {
        LockedPackage {
            name: name.into(),
            version: version.into(),
            architecture: "amd64".into(),
            size: 1,
            sha256: "a".repeat(64),
            suite: "bookworm".into(),
            path: format!("pool/main/x/{name}/{name}_{version}_amd64.deb"),
        }
    }

    /// The smallest lock `check` accepts for iptables: the image's libc6 and the iptables
    /// source, without Debian's iptables binary package (the definition excludes it).
    fn lock() -> Lockfile {
        Lockfile {
            target: "qemu".into(),
            architecture: "amd64".into(),
            source_date_epoch: 1,
            include: vec![],
            suites: vec![],
            excluded: vec![],
            choices: vec![],
            packages: vec![package("libc6", IMAGE_LIBC6)],
            sources: vec![LockedSource {
                name: "iptables".into(),
                version: "1.8.9-2".into(),
                suite: "bookworm".into(),
                directory: "pool/main/i/iptables".into(),
                files: vec![LockedSourceFile {
                    name: "iptables_1.8.9-2.dsc".into(),
                    size: 1,
                    sha256: "b".repeat(64),
                }],
            }],
        }
    }

    #[test]
    fn check_accepts_a_locked_source_on_a_host_with_the_images_glibc() {
        let lock = lock();
        let (recipe, source) = check("iptables", &lock, HOST_GLIBC).unwrap();
        assert_eq!(recipe.package, "iptables");
        assert_eq!(source.version, "1.8.9-2");
        // An image without libc6 links nothing of it, so any host glibc will do.
        let mut no_libc = lock.clone();
        no_libc.packages.clear();
        assert!(check("iptables", &no_libc, "2.41").is_ok());
    }

    #[test]
    fn check_refuses_a_lock_that_still_pins_the_binary_package_the_build_replaces() {
        // The same lock without the binary package passes: the refusal below is its doing.
        let mut lock = lock();
        assert!(check("iptables", &lock, HOST_GLIBC).is_ok());
        // Debian's dynamic iptables would ship next to the static build (and its libxtables
        // and extensions with it), undoing what the build is for.
        lock.packages.push(package("iptables", "1.8.9-2"));
        lock.packages.sort_by(|a, b| a.name.cmp(&b.name));
        let e = check("iptables", &lock, HOST_GLIBC).unwrap_err();
        assert!(
            matches!(&e, SourceBuildError::Source { package, .. } if package == "iptables"),
            "{e:?}"
        );
        let m = e.to_string();
        assert!(m.starts_with("source build: iptables: "), "{m}");
        assert!(m.contains("binary package iptables 1.8.9-2"), "{m}");
        assert!(
            m.contains("exclude it in the definition and re-run `eci-build lock`"),
            "{m}"
        );
    }

    #[test]
    fn check_refuses_a_host_glibc_other_than_the_images_libc6() {
        let lock = lock();
        assert!(check("iptables", &lock, HOST_GLIBC).is_ok());
        // A static program built on a newer host would load the image's 2.36 NSS modules
        // into its 2.41 glibc.
        let e = check("iptables", &lock, "2.41").unwrap_err();
        match &e {
            SourceBuildError::GlibcMismatch {
                package,
                host,
                image,
                image_upstream,
            } => {
                assert_eq!(package, "iptables");
                assert_eq!(host, "2.41");
                assert_eq!(image, IMAGE_LIBC6);
                assert_eq!(image_upstream, HOST_GLIBC);
            }
            other => panic!("expected GlibcMismatch, got {other:?}"),
        }
        let m = e.to_string();
        assert!(m.starts_with("source build: iptables "), "{m}");
        assert!(
            m.contains("glibc 2.41, but the image's libc6 is 2.36-9+deb12u10"),
            "{m}"
        );
        assert!(m.contains("Build on a host whose glibc is 2.36 "), "{m}");
    }

    #[test]
    fn check_refuses_a_package_without_a_recipe_or_without_a_locked_source() {
        let mut lock = lock();
        // The definition loader refuses unknown names already; this is the build's own guard.
        let e = check("nftables", &lock, HOST_GLIBC).unwrap_err();
        assert!(
            matches!(&e, SourceBuildError::Source { package, .. } if package == "nftables"),
            "{e:?}"
        );
        let m = e.to_string();
        assert!(m.contains("nftables: no recipe (known: iptables)"), "{m}");
        // A lock written before the definition gained `source_builds:` pins no source.
        lock.sources.clear();
        let e = check("iptables", &lock, HOST_GLIBC).unwrap_err();
        assert!(
            matches!(&e, SourceBuildError::NotLocked { package } if package == "iptables"),
            "{e:?}"
        );
        let m = e.to_string();
        assert!(m.contains("iptables: the definition builds it from source but the lock pins no such source package"), "{m}");
        assert!(m.contains("run `eci-build lock --target TARGET`"), "{m}");
    }
}
