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
            let recipe = recipe(name).ok_or_else(|| SourceBuildError::Source {
                package: name.clone(),
                message: format!(
                    "no recipe (known: {})",
                    recipe_names().join(", ")
                ),
            })?;
            let source = lock
                .sources
                .iter()
                .find(|s| s.name == *name)
                .ok_or_else(|| SourceBuildError::NotLocked {
                    package: name.clone(),
                })?;
            // The lock holds the binary package's files no more: the build replaces them.
            if let Some(p) = lock.package(recipe.replaces) {
                return Err(SourceBuildError::Source {
                    package: name.clone(),
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
                if upstream != toolchain.glibc {
                    return Err(SourceBuildError::GlibcMismatch {
                        package: name.clone(),
                        host: toolchain.glibc.clone(),
                        image: libc6.version.clone(),
                        image_upstream: upstream,
                    });
                }
            }
            build_one(recipe, source, cache, &toolchain, epoch)
        })
        .collect()
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
}
