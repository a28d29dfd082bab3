//! `eci-build kernel build`: our own kernel from pinned Debian sources (SPEC V6).
//!
//! Inputs, all reviewable in `kernel-config/`:
//! - `source.yaml` names the Debian source package; `source.lock` pins it by sha256 (made by
//!   `eci-build kernel lock` with the same resolver as image locks, but a lock of its own so
//!   the source never reaches an image's root filesystem).
//! - the target's pins (`fragments/`, the same ones the checker holds every kernel to) and the
//!   build-only settings in `build/` (no modules, embedded config).
//!
//! Steps: fetch the package through the content-addressed cache, unpack its source tarball
//! once per sha256, run the kernel's own kconfig (`ARCH=x86_64 <base>`, then the merged
//! fragment and `make olddefconfig`), check that every requested value survived and that the
//! result passes the target's pins with no exception profile, then build `bzImage` with fixed
//! build metadata. The built files are cached under sha256(source, .config, toolchain,
//! build environment). Every child process gets a cleared environment, so nothing from the
//! caller's shell (ARCH, CROSS_COMPILE, MAKEFLAGS, KCONFIG_*) changes the result.

use crate::fetch::{self, Cache, FetchItem, FetchOptions};
use crate::lock::{self, LockedPackage, Lockfile};
use eci_kernel_config::{
    CheckOptions, Fragment, KernelConfig, Pins, ProfileSelection, Report, Requirement, Target,
    Value, Want,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Files inside the kernel-config directory.
pub const SOURCE_DEFINITION: &str = "source.yaml";
pub const SOURCE_LOCK: &str = "source.lock";
pub const BUILD_FRAGMENTS_DIR: &str = "build";
pub const GENERATED_DIR: &str = "generated";
/// The build-only fragment every real target gets.
pub const OWN_KERNEL_FRAGMENT: &str = "own-kernel";
/// The lockfile's `target` field for the source lock.
pub const SOURCE_LOCK_TARGET: &str = "kernel-source";

/// Debian packages a kernel build needs on the build machine. `dwarves` (pahole) is only used
/// for BTF and `kmod`/`rsync` only for modules and header installs, none of which our configs
/// enable; they are listed because `make` probes for some of them and a config change should
/// not turn into a half-way failure.
pub const HOST_PACKAGES: &[&str] = &[
    "gcc",
    "libc6-dev",
    "make",
    "flex",
    "bison",
    "bc",
    "libelf-dev",
    "libssl-dev",
    "dwarves",
    "cpio",
    "kmod",
    "rsync",
];

/// Outputs of a build, in the cache and in the output folder.
pub const KERNEL_IMAGE: &str = "vmlinuz";
pub const KERNEL_CONFIG: &str = "config";
pub const SYSTEM_MAP: &str = "System.map";
pub const BUILD_INFO: &str = "build.json";
/// Which modules are built in: the image build checks the definition's module list against it.
pub const MODULES_BUILTIN: &str = "modules.builtin";

const ARCH: &str = "x86_64";

#[derive(Debug, thiserror::Error)]
pub enum KernelBuildError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Definition {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("cannot read {}; create it with `eci-build kernel lock`: {source}", path.display())]
    NoLock {
        path: PathBuf,
        #[source]
        source: lock::LockfileError,
    },
    #[error("{}: {message}; run `eci-build kernel lock`", path.display())]
    StaleLock { path: PathBuf, message: String },
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error(transparent)]
    Sources(#[from] lock::SourcesError),
    #[error(transparent)]
    Fetch(#[from] fetch::FetchError),
    #[error(transparent)]
    Pins(#[from] eci_kernel_config::PinError),
    #[error(transparent)]
    Config(#[from] eci_kernel_config::ConfigError),
    #[error(transparent)]
    Check(#[from] eci_kernel_config::CheckError),
    #[error("{package}: {message}")]
    Source { package: String, message: String },
    #[error("missing build dependencies: {}; install them with:\n  {}", missing.join(" "), install_line(missing))]
    HostPackages { missing: Vec<String> },
    #[error("`{command}` failed ({status}); last lines of {}:\n{tail}", log.display())]
    Make {
        command: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Conflict(String),
    #[error("kconfig did not keep {} requested value(s); each needs a dependency that is off. Find it with `make menuconfig` (`/` searches a symbol, its `Depends on:` line shows what is missing) and add it with a reason to {}:\n{}", lost.len(), hint.display(), lost.join("\n"))]
    Lost { lost: Vec<String>, hint: PathBuf },
    #[error("the generated config violates the {target} pins (no exceptions apply to kernels eci builds):\n{table}")]
    Violations { target: String, table: String },
    #[error("{} is not the config the fragments produce:\n{diff}\nregenerate it with `eci-build kernel build --target {target} --config-only`, review `git diff` and commit it", path.display())]
    StaleConfig {
        path: PathBuf,
        target: String,
        diff: String,
    },
    #[error("another kernel build (pid {pid}) is using {}; wait for it or remove {} if that process is gone", dir.display(), lock.display())]
    Busy {
        pid: String,
        dir: PathBuf,
        lock: PathBuf,
    },
    #[error("SOURCE_DATE_EPOCH={0:?} is not a number of seconds since 1970")]
    SourceDateEpoch(String),
}

fn install_line(missing: &[String]) -> String {
    let sudo = if is_root() { "" } else { "sudo " };
    format!(
        "{sudo}apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    )
}

fn is_root() -> bool {
    // /proc/self is owned by the effective uid; avoids an FFI call for one bit.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KernelBuildError + '_ {
    move |source| KernelBuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

// ---------------------------------------------------------------------------------------------
// The source definition and its lock

/// `kernel-config/source.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceDefinition {
    /// The Debian source package, e.g. `linux-source-6.12`.
    pub package: String,
    /// The architecture whose indices are resolved (the package itself is `all`).
    pub architecture: String,
    pub suites: Vec<String>,
    pub components: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<SourceExclusion>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceExclusion {
    pub name: String,
    pub reason: String,
}

impl SourceDefinition {
    pub fn load(path: &Path) -> Result<Self, KernelBuildError> {
        let text = std::fs::read_to_string(path).map_err(io_err(path))?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, KernelBuildError> {
        let def: SourceDefinition = serde_yaml_ng::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            KernelBuildError::Definition {
                path: path.to_path_buf(),
                line,
                column,
                message: e.to_string(),
            }
        })?;
        let invalid = |message: String| KernelBuildError::Definition {
            path: path.to_path_buf(),
            line: 1,
            column: 1,
            message,
        };
        if def.package.is_empty() || def.suites.is_empty() || def.components.is_empty() {
            return Err(invalid(
                "`package`, `suites` and `components` must not be empty".into(),
            ));
        }
        if let Some(x) = def.exclude.iter().find(|x| x.reason.trim().is_empty()) {
            return Err(invalid(format!(
                "exclusion `{}` has no reason; say why the build does not need it",
                x.name
            )));
        }
        Ok(def)
    }

    /// Resolves the package against the archive (the machine's apt sources, or `mirrors`).
    pub fn lock(
        &self,
        sources_root: &Path,
        mirrors: &[String],
    ) -> Result<Lockfile, KernelBuildError> {
        let mut req = lock::LockRequest::new(SOURCE_LOCK_TARGET, &self.architecture);
        req.suites = self.suites.clone();
        req.components = self.components.clone();
        req.include = vec![self.package.clone()];
        req.exclude = self.exclude.iter().map(|x| x.name.clone()).collect();
        req.sources_root = sources_root.to_path_buf();
        req.mirrors = lock::MirrorOverrides::parse(mirrors)?;
        let lockfile = lock::lock(&req, &lock::TerminalProgress::new())?;
        let extra: Vec<&str> = lockfile
            .packages
            .iter()
            .filter(|p| p.name != self.package)
            .map(|p| p.name.as_str())
            .collect();
        if !extra.is_empty() {
            return Err(KernelBuildError::Source {
                package: self.package.clone(),
                message: format!(
                    "it now pulls in {}; the source lock holds the source package only: add \
                     them under `exclude` in {SOURCE_DEFINITION} with a reason",
                    extra.join(", ")
                ),
            });
        }
        Ok(lockfile)
    }
}

const SOURCE_LOCK_HEADER: &str = "\
# Generated by `eci-build kernel lock` from source.yaml. Do not edit by hand: re-run the
# command to pick up a new upload. The package is pinned by sha256 and pool path; the mirror
# host is absent on purpose and comes from the machine's apt sources (or --mirror).
";

/// Writes `source.lock` (atomically: a temporary file renamed over the old one).
pub fn write_source_lock(lockfile: &Lockfile, path: &Path) -> Result<(), KernelBuildError> {
    let text = lockfile.to_yaml().map_err(|e| KernelBuildError::Source {
        package: SOURCE_LOCK.into(),
        message: e.to_string(),
    })?;
    let body = text.strip_prefix(lock::lockfile::HEADER).unwrap_or(&text);
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err(dir))?;
    tmp.write_all(format!("{SOURCE_LOCK_HEADER}{body}").as_bytes())
        .map_err(io_err(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(io_err(path))?;
    }
    tmp.persist(path).map_err(|e| io_err(path)(e.error))?;
    Ok(())
}

/// The pinned source package from `source.lock`, checked against the definition.
pub fn locked_source(
    def: &SourceDefinition,
    lock_path: &Path,
) -> Result<(Lockfile, LockedPackage), KernelBuildError> {
    let lockfile = Lockfile::read(lock_path).map_err(|source| KernelBuildError::NoLock {
        path: lock_path.to_path_buf(),
        source,
    })?;
    let stale = |message: String| KernelBuildError::StaleLock {
        path: lock_path.to_path_buf(),
        message,
    };
    if lockfile.target != SOURCE_LOCK_TARGET {
        return Err(stale(format!(
            "it is the lock of `{}`, not of the kernel source",
            lockfile.target
        )));
    }
    if lockfile.include != [def.package.clone()] {
        return Err(stale(format!(
            "it pins {:?} but {SOURCE_DEFINITION} names {}",
            lockfile.include, def.package
        )));
    }
    let pkg = lockfile
        .package(&def.package)
        .cloned()
        .ok_or_else(|| stale(format!("{} is not in it", def.package)))?;
    Ok((lockfile, pkg))
}

// ---------------------------------------------------------------------------------------------
// Fetching and unpacking the source

/// An unpacked kernel source tree, shared by every build of that source.
#[derive(Debug, Clone)]
pub struct SourceTree {
    pub dir: PathBuf,
    pub package: String,
    pub version: String,
    pub sha256: String,
    /// `6.12.117`, from the top Makefile.
    pub kernel_version: String,
    /// Seconds since 1970 of the lock's newest suite (or `SOURCE_DATE_EPOCH`).
    pub source_date_epoch: u64,
}

/// Where the fetch goes and whether it may use the network.
#[derive(Debug, Clone)]
pub struct SourceFetch {
    pub cache: Cache,
    pub fetch: FetchOptions,
    pub sources_root: PathBuf,
    pub mirrors: Vec<String>,
}

/// Downloads (or finds in the cache) the pinned package and unpacks its tarball once.
pub fn prepare_source(
    lockfile: &Lockfile,
    pkg: &LockedPackage,
    how: &SourceFetch,
) -> Result<SourceTree, KernelBuildError> {
    let url = if how.cache.contains(&pkg.sha256, pkg.size) {
        String::new()
    } else {
        let sources = lock::AptSources::load(&how.sources_root)?;
        let overrides = lock::MirrorOverrides::parse(&how.mirrors)?;
        lock::mirror_for_suite(
            &sources,
            &overrides,
            &pkg.suite,
            &lockfile.architecture,
            &[],
        )?
        .url(&pkg.path)
    };
    let item = FetchItem {
        label: format!("{} {}", pkg.name, pkg.version),
        url,
        sha256: pkg.sha256.clone(),
        size: pkg.size,
    };
    fetch::fetch_all(std::slice::from_ref(&item), &how.cache, &how.fetch)?;

    let root = how.cache.root().join("kernel").join("src");
    let dir = root.join(&pkg.sha256);
    if !dir.is_dir() {
        unpack_source(&how.cache, pkg, &root)?;
    }
    let top = top_dir(&dir)?;
    let kernel_version = makefile_version(&top)?;
    Ok(SourceTree {
        dir: top,
        package: pkg.name.clone(),
        version: pkg.version.clone(),
        sha256: pkg.sha256.clone(),
        kernel_version,
        source_date_epoch: source_date_epoch(lockfile.source_date_epoch)?,
    })
}

fn source_date_epoch(from_lock: i64) -> Result<u64, KernelBuildError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| KernelBuildError::SourceDateEpoch(v)),
        Err(_) => Ok(u64::try_from(from_lock).unwrap_or(0)),
    }
}

/// Unpacks `/usr/src/linux-source-*.tar.xz` of the package into `root/SHA256`, through a
/// temporary directory renamed into place, so an interrupted unpack never looks complete.
fn unpack_source(cache: &Cache, pkg: &LockedPackage, root: &Path) -> Result<(), KernelBuildError> {
    let source_err = |message: String| KernelBuildError::Source {
        package: format!("{} {}", pkg.name, pkg.version),
        message,
    };
    let deb = cache.read_verified(&pkg.sha256)?;
    let mut tarballs = crate::deb::read_data_file(&deb, &pkg.name, |p| {
        p.starts_with("/usr/src/linux-source-") && p.ends_with(".tar.xz")
    })
    .map_err(|e| source_err(e.to_string()))?;
    drop(deb);
    if tarballs.len() != 1 {
        return Err(source_err(format!(
            "expected one /usr/src/linux-source-*.tar.xz inside, found {}; is it a linux-source package?",
            tarballs.len()
        )));
    }
    let (_, tarball) = tarballs.pop().expect("one element");
    std::fs::create_dir_all(root).map_err(io_err(root))?;
    let tmp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(root)
        .map_err(io_err(root))?;
    let mut archive = tar::Archive::new(xz2::read::XzDecoder::new(&tarball[..]));
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(false);
    archive
        .unpack(tmp.path())
        .map_err(|e| source_err(format!("unpacking the source tarball: {e}")))?;
    let dest = root.join(&pkg.sha256);
    match std::fs::rename(tmp.path(), &dest) {
        Ok(()) => {
            // The directory now lives under its final name; nothing is left to clean up.
            let _ = tmp.keep();
            Ok(())
        }
        // Another process finished the same unpack first; its copy is identical.
        Err(_) if dest.is_dir() => Ok(()),
        Err(e) => Err(io_err(&dest)(e)),
    }
}

/// The single top-level directory of an unpacked tarball (`linux-source-6.12`).
fn top_dir(dir: &Path) -> Result<PathBuf, KernelBuildError> {
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Makefile").is_file() && p.join("Kconfig").is_file())
        .collect();
    match entries.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(KernelBuildError::Source {
            package: dir.display().to_string(),
            message: format!(
                "expected one kernel tree (a directory with Makefile and Kconfig), found {}; remove the directory to unpack again",
                entries.len()
            ),
        }),
    }
}

fn makefile_version(tree: &Path) -> Result<String, KernelBuildError> {
    let path = tree.join("Makefile");
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let field = |name: &str| {
        text.lines()
            .take(20)
            .find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == name).then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    let (v, p, s) = (field("VERSION"), field("PATCHLEVEL"), field("SUBLEVEL"));
    if v.is_empty() || p.is_empty() {
        return Err(KernelBuildError::Source {
            package: path.display().to_string(),
            message: "no VERSION/PATCHLEVEL at the top; not a kernel Makefile".into(),
        });
    }
    Ok(if s.is_empty() {
        format!("{v}.{p}")
    } else {
        format!("{v}.{p}.{s}")
    })
}

// ---------------------------------------------------------------------------------------------
// Kconfig symbols of the tree

/// Type of a Kconfig symbol, as declared in `Kconfig*` files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymbolType {
    Bool,
    Tristate,
    String,
    Int,
    Hex,
}

/// Every symbol the tree defines for x86 (other architectures' Kconfig files are skipped, so
/// a symbol only arm64 has counts as unknown).
#[derive(Debug, Clone, Default)]
pub struct Symbols(BTreeMap<String, Option<SymbolType>>);

impl Symbols {
    pub fn scan(tree: &Path) -> Result<Symbols, KernelBuildError> {
        let mut symbols = Symbols::default();
        let mut stack = vec![tree.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
                let entry = entry.map_err(io_err(&dir))?;
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                let file_type = entry.file_type().map_err(io_err(&path))?;
                if file_type.is_dir() {
                    let other_arch = dir == tree.join("arch") && name != "x86";
                    if !other_arch && !name.starts_with('.') {
                        stack.push(path);
                    }
                } else if file_type.is_file() && name.starts_with("Kconfig") {
                    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
                    symbols.add_kconfig(&text);
                }
            }
        }
        Ok(symbols)
    }

    /// Reads `config`/`menuconfig` entries and the type line that follows them.
    pub fn add_kconfig(&mut self, text: &str) {
        let mut current: Option<String> = None;
        for line in text.lines() {
            let line = line.trim();
            let mut words = line.split_whitespace();
            let first = words.next().unwrap_or("");
            match first {
                "config" | "menuconfig" => {
                    if let Some(name) = words.next() {
                        self.0.entry(name.to_string()).or_insert(None);
                        current = Some(name.to_string());
                    }
                    continue;
                }
                "choice" | "endchoice" | "menu" | "endmenu" | "if" | "endif" | "source"
                | "comment" | "mainmenu" => {
                    current = None;
                    continue;
                }
                _ => {}
            }
            let Some(name) = &current else { continue };
            let ty = match first {
                "bool" | "def_bool" => SymbolType::Bool,
                "tristate" | "def_tristate" => SymbolType::Tristate,
                "string" => SymbolType::String,
                "int" => SymbolType::Int,
                "hex" => SymbolType::Hex,
                _ => continue,
            };
            let slot = self.0.get_mut(name).expect("inserted above");
            slot.get_or_insert(ty);
        }
    }

    pub fn knows(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    pub fn kind(&self, name: &str) -> Option<SymbolType> {
        self.0.get(name).copied().flatten()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

// ---------------------------------------------------------------------------------------------
// Recipes: what a kernel is made of

/// The config make starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// `make x86_64_defconfig`: upstream's small configuration that boots PCs and common VMs.
    Defconfig,
    /// `make tinyconfig`: the smallest kernel kconfig can make; for pipeline tests.
    Tinyconfig,
}

impl Base {
    pub fn make_target(self) -> &'static str {
        match self {
            Base::Defconfig => "x86_64_defconfig",
            Base::Tinyconfig => "tinyconfig",
        }
    }
}

/// One kernel eci can build.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// Names the kernel release (`-eci-NAME`), the object directory and the messages.
    pub name: String,
    pub base: Base,
    /// What the result must satisfy, checked without any exception profile.
    pub pins: Pins,
    /// Build-only settings merged before the pins (and with precedence over alternatives).
    pub build: Vec<Fragment>,
    /// Where a missing dependency should be added (named in errors).
    pub hint: PathBuf,
}

impl Recipe {
    /// The recipe of a VM target: defconfig, `build/own-kernel.config`, `build/TARGET.config`
    /// when present, and the target's pins.
    pub fn for_target(
        target: Target,
        kernel_config_dir: &Path,
    ) -> Result<Recipe, KernelBuildError> {
        let dir = kernel_config_dir.join(BUILD_FRAGMENTS_DIR);
        let mut build = Vec::new();
        for (name, required) in [(OWN_KERNEL_FRAGMENT, true), (target.name(), false)] {
            let path = dir.join(format!("{name}.config"));
            if !required && !path.is_file() {
                continue;
            }
            build.push(load_fragment(name, &path)?);
        }
        Ok(Recipe {
            name: target.name().to_string(),
            base: Base::Defconfig,
            pins: Pins::builtin(target)?,
            build,
            // Dependencies so far were needed by every target; one only a target needs goes
            // in build/TARGET.config, which is merged when it exists.
            hint: dir.join(format!("{OWN_KERNEL_FRAGMENT}.config")),
        })
    }

    /// Where the committed full config of a target lives.
    pub fn generated_path(kernel_config_dir: &Path, target: Target) -> PathBuf {
        kernel_config_dir
            .join(GENERATED_DIR)
            .join(format!("{}.config", target.name()))
    }
}

/// Parses a fragment file with the pin parser (same format, same reason rule).
pub fn load_fragment(name: &str, path: &Path) -> Result<Fragment, KernelBuildError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    Ok(Fragment::parse(name, &path.display().to_string(), &text)?)
}

/// One value handed to kconfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub symbol: String,
    /// `None`: `# CONFIG_X is not set`.
    pub value: Option<String>,
    /// A `>=` pin: a larger value kconfig keeps (from the base or a dependency) is fine.
    pub at_least: bool,
    /// An `if-known` pin: it does not apply when the result has no such symbol at all (as
    /// the checker sees it), e.g. module options in a kernel without modules.
    pub if_known: bool,
    /// `build/own-kernel.config:7` or `fragments/container.config:31`.
    pub origin: String,
    pub reason: String,
}

impl Request {
    fn line(&self) -> String {
        match &self.value {
            Some(v) => format!("CONFIG_{}={v}", self.symbol),
            None => format!("# CONFIG_{} is not set", self.symbol),
        }
    }
}

/// The fragment merged over the base: the build settings, then one chosen term per pin.
pub fn plan(recipe: &Recipe, symbols: &Symbols) -> Result<Vec<Request>, KernelBuildError> {
    let mut out: Vec<Request> = Vec::new();
    let mut by_symbol: BTreeMap<String, usize> = BTreeMap::new();
    let mut add = |req: Request, out: &mut Vec<Request>| -> Result<(), KernelBuildError> {
        if let Some(&i) = by_symbol.get(&req.symbol) {
            if out[i].value != req.value {
                return Err(KernelBuildError::Conflict(format!(
                    "{}: `{}` contradicts `{}` at {}; one of them must change",
                    req.origin,
                    req.line(),
                    out[i].line(),
                    out[i].origin
                )));
            }
            return Ok(());
        }
        by_symbol.insert(req.symbol.clone(), out.len());
        out.push(req);
        Ok(())
    };
    let build_symbols: BTreeSet<&str> = recipe
        .build
        .iter()
        .flat_map(|f| f.requirements.iter())
        .flat_map(|r| r.terms.iter().map(|t| t.option.as_str()))
        .collect();
    let local = Request {
        symbol: "LOCALVERSION".into(),
        value: Some(format!("\"-eci-{}\"", recipe.name)),
        at_least: false,
        if_known: false,
        origin: "eci-build".into(),
        reason: "the kernel release names the recipe it was built from".into(),
    };
    add(local, &mut out)?;
    for fragment in &recipe.build {
        for req in &fragment.requirements {
            if let Some(r) = choose(req, symbols, &BTreeSet::new(), "build") {
                add(r, &mut out)?;
            }
        }
    }
    for req in &recipe.pins.requirements {
        if let Some(r) = choose(req, symbols, &build_symbols, "fragments") {
            add(r, &mut out)?;
        }
    }
    Ok(out)
}

/// The term of a requirement to hand to kconfig: none for alternatives of which a build
/// fragment already decides one (`MODULE_SIG_FORCE=y || MODULES=n` with MODULES unset; the
/// checker then confirms the pin holds) or for an unknown `if-known` symbol; else the first
/// term kconfig knows (alternatives list the current name first); else the first term, which
/// then fails loudly. A single-term pin is always requested, so a build fragment that
/// contradicts it is reported.
fn choose(
    req: &Requirement,
    symbols: &Symbols,
    decided: &BTreeSet<&str>,
    dir: &str,
) -> Option<Request> {
    if req.terms.len() > 1
        && req
            .terms
            .iter()
            .any(|t| decided.contains(t.option.as_str()))
    {
        return None;
    }
    let known = req.terms.iter().find(|t| symbols.knows(&t.option));
    if known.is_none() && req.if_known {
        return None;
    }
    let term = known.unwrap_or(&req.terms[0]);
    let number = |n: i128| match symbols.kind(&term.option) {
        Some(SymbolType::Hex) => format!("0x{n:x}"),
        _ => n.to_string(),
    };
    let value = match &term.want {
        Want::BuiltIn | Want::BuiltInOrModule(_) => Some("y".to_string()),
        Want::Unset => None,
        Want::Str(s) => Some(format!(
            "\"{}\"",
            s.replace('\\', "\\\\").replace('"', "\\\"")
        )),
        Want::Equals(n) | Want::AtLeast(n) => Some(number(*n)),
    };
    Some(Request {
        symbol: term.option.clone(),
        value,
        at_least: matches!(term.want, Want::AtLeast(_)),
        if_known: req.if_known,
        origin: format!("{dir}/{}.config:{}", req.fragment, req.line),
        reason: req.reason.clone(),
    })
}

/// Whether kconfig's result still holds a request.
fn kept(req: &Request, config: &KernelConfig) -> bool {
    let got = config.get(&req.symbol);
    if req.if_known && got.is_none() {
        return true;
    }
    match (&req.value, got) {
        (None, None | Some(Value::NotSet)) => true,
        (None, _) => false,
        (Some(v), Some(Value::Yes)) => v == "y",
        (Some(v), Some(Value::Str(s))) => {
            *v == format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
        }
        (Some(v), Some(n @ (Value::Num(_) | Value::Hex { .. }))) => {
            let want = match v.strip_prefix("0x") {
                Some(h) => i128::from_str_radix(h, 16).ok(),
                None => v.parse::<i128>().ok(),
            };
            match (want, n.as_number()) {
                (Some(w), Some(g)) => g == w || (req.at_least && g > w),
                _ => false,
            }
        }
        (Some(_), _) => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Running make

/// Runs make on a tree with a cleared environment and a log file.
struct Make<'a> {
    tree: &'a Path,
    obj: &'a Path,
    log: PathBuf,
    echo: bool,
    env: Vec<(String, String)>,
}

impl Make<'_> {
    fn run(&self, args: &[&str]) -> Result<String, KernelBuildError> {
        let mut cmd = Command::new("make");
        cmd.env_clear();
        for key in ["PATH", "HOME", "TMPDIR"] {
            if let Some(v) = std::env::var_os(key) {
                cmd.env(key, v);
            }
        }
        cmd.env("LC_ALL", "C").env("TZ", "UTC");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.arg("-C")
            .arg(self.tree)
            .arg(format!("O={}", self.obj.display()))
            .arg(format!("ARCH={ARCH}"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let shown = format!("make ARCH={ARCH} {}", args.join(" "));
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(io_err(&self.log))?;
        writeln!(log, "$ {shown}").map_err(io_err(&self.log))?;
        let mut child = cmd.spawn().map_err(|source| KernelBuildError::Spawn {
            program: "make".into(),
            source,
        })?;
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let mut readers = Vec::new();
        for stream in [
            Box::new(child.stdout.take().expect("piped")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("piped")),
        ] {
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
                    if tx
                        .send(String::from_utf8_lossy(&line).into_owned())
                        .is_err()
                    {
                        return;
                    }
                }
            }));
        }
        drop(tx);
        let mut output = String::new();
        for line in rx {
            if self.echo {
                eprintln!("{line}");
            }
            writeln!(log, "{line}").map_err(io_err(&self.log))?;
            output.push_str(&line);
            output.push('\n');
        }
        for r in readers {
            let _ = r.join();
        }
        let status = child.wait().map_err(|source| KernelBuildError::Spawn {
            program: "make".into(),
            source,
        })?;
        if !status.success() {
            let lines: Vec<&str> = output.lines().collect();
            return Err(KernelBuildError::Make {
                command: shown,
                status: status.to_string(),
                log: self.log.clone(),
                tail: lines[lines.len().saturating_sub(40)..].join("\n"),
            });
        }
        Ok(output)
    }
}

/// A directory only one build may use at a time; the marker holds the owner's pid.
struct DirLock {
    marker: PathBuf,
}

impl DirLock {
    /// Waits while another live process holds the folder (like cargo's "blocking waiting for
    /// file lock"): two image builds of one target share the cached kernel, and the second
    /// one should get it, not an error. A dead owner's marker is taken over.
    fn acquire(dir: &Path) -> Result<DirLock, KernelBuildError> {
        let marker = dir.with_extension("lock");
        if let Some(parent) = marker.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let mut told = false;
        let mut takeovers = 0;
        loop {
            match std::fs::create_dir(&marker) {
                Ok(()) => {
                    let pid = marker.join("pid");
                    std::fs::write(&pid, std::process::id().to_string()).map_err(io_err(&pid))?;
                    return Ok(DirLock { marker });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let pid = std::fs::read_to_string(marker.join("pid")).unwrap_or_default();
                    let pid = pid.trim().to_string();
                    let alive = !pid.is_empty() && Path::new("/proc").join(&pid).exists();
                    if alive {
                        if !told {
                            eprintln!(
                                "waiting for kernel build pid {pid}, which is using {}",
                                dir.display()
                            );
                            told = true;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(500));
                        continue;
                    }
                    // The owner died without cleaning up (or is between mkdir and writing its
                    // pid: give it a moment before taking over).
                    takeovers += 1;
                    if takeovers > 3 {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    let pid_now = std::fs::read_to_string(marker.join("pid")).unwrap_or_default();
                    if pid_now.trim().is_empty() || pid_now.trim() == pid {
                        let _ = std::fs::remove_dir_all(&marker);
                    }
                }
                Err(e) => return Err(io_err(&marker)(e)),
            }
        }
        Err(KernelBuildError::Busy {
            pid: "unknown".into(),
            dir: dir.to_path_buf(),
            lock: marker,
        })
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.marker);
    }
}

// ---------------------------------------------------------------------------------------------
// Host checks

/// Packages of [`HOST_PACKAGES`] dpkg does not list as installed. Without dpkg (not a Debian
/// machine) nothing can be said, and make reports what it lacks.
pub fn missing_host_packages() -> Vec<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${db:Status-Status}\n"])
        .args(HOST_PACKAGES)
        .env("LC_ALL", "C")
        .stderr(Stdio::null())
        .output();
    let Ok(out) = out else { return Vec::new() };
    let text = String::from_utf8_lossy(&out.stdout);
    let installed: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, s)| s.trim() == "installed")
        .map(|(p, _)| p.split(':').next().unwrap_or(p))
        .collect();
    HOST_PACKAGES
        .iter()
        .filter(|p| !installed.contains(*p))
        .map(|p| p.to_string())
        .collect()
}

/// First lines of `gcc --version`, `ld --version` and `make --version`: part of the cache key.
pub fn toolchain() -> Result<String, KernelBuildError> {
    let mut parts = Vec::new();
    for (program, arg) in [
        ("gcc", "--version"),
        ("ld", "--version"),
        ("make", "--version"),
    ] {
        let out = Command::new(program)
            .arg(arg)
            .env("LC_ALL", "C")
            .output()
            .map_err(|source| KernelBuildError::Spawn {
                program: program.into(),
                source,
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        parts.push(text.lines().next().unwrap_or("").trim().to_string());
    }
    Ok(parts.join("\n"))
}

// ---------------------------------------------------------------------------------------------
// Config generation

/// What kconfig made of a recipe.
#[derive(Debug, Clone)]
pub struct GeneratedConfig {
    /// `.config` exactly as kconfig wrote it: what the kernel is built from.
    pub kconfig: String,
    /// The committed form: a header naming the inputs, then `kconfig`.
    pub committed: String,
    pub requests: Vec<Request>,
    /// The recipe's pins checked without exceptions; always free of violations here.
    pub report: Report,
    /// kconfig's warnings (unmet dependencies and the like).
    pub warnings: Vec<String>,
    /// The object directory holding `.config`.
    pub obj_dir: PathBuf,
}

/// Where the build of `recipe` from `tree` keeps its objects between runs.
pub fn obj_dir(cache: &Cache, tree: &SourceTree, recipe: &Recipe) -> PathBuf {
    cache
        .root()
        .join("kernel")
        .join("obj")
        .join(format!("{}-{}", &tree.sha256[..16], recipe.name))
}

/// Runs kconfig: base config, merged fragment, `olddefconfig`; then checks the result.
pub fn generate_config(
    tree: &SourceTree,
    recipe: &Recipe,
    obj: &Path,
    echo: bool,
) -> Result<GeneratedConfig, KernelBuildError> {
    std::fs::create_dir_all(obj).map_err(io_err(obj))?;
    let symbols = Symbols::scan(&tree.dir)?;
    let requests = plan(recipe, &symbols)?;
    let make = Make {
        tree: &tree.dir,
        obj,
        log: obj.join("eci-config.log"),
        echo,
        env: Vec::new(),
    };
    let _ = std::fs::remove_file(&make.log);
    make.run(&[recipe.base.make_target()])?;

    // Merge: the base's lines for symbols we do not request, then ours, so each symbol appears
    // once and kconfig never has to resolve an override.
    let dot_config = obj.join(".config");
    let base = std::fs::read_to_string(&dot_config).map_err(io_err(&dot_config))?;
    let requested: BTreeSet<&str> = requests.iter().map(|r| r.symbol.as_str()).collect();
    let mut merged = String::new();
    for line in base.lines() {
        let symbol = line
            .strip_prefix("CONFIG_")
            .and_then(|l| l.split_once('=').map(|(s, _)| s))
            .or_else(|| {
                line.strip_prefix("# CONFIG_")
                    .and_then(|l| l.strip_suffix(" is not set"))
            });
        if symbol.is_some_and(|s| requested.contains(s)) {
            continue;
        }
        merged.push_str(line);
        merged.push('\n');
    }
    merged.push_str(&format!("# --- eci recipe `{}` ---\n", recipe.name));
    for r in &requests {
        merged.push_str(&format!("{}\n", r.line()));
    }
    std::fs::write(&dot_config, &merged).map_err(io_err(&dot_config))?;
    let output = make.run(&["olddefconfig"])?;
    let warnings: Vec<String> = output
        .lines()
        .filter(|l| l.contains("WARNING") || l.contains("warning:"))
        .map(str::to_string)
        .collect();

    let kconfig = std::fs::read_to_string(&dot_config).map_err(io_err(&dot_config))?;
    let config = KernelConfig::parse(&kconfig, &dot_config.display().to_string())?;
    let lost: Vec<String> = requests
        .iter()
        .filter(|r| !kept(r, &config))
        .map(|r| {
            format!(
                "  {:<48} from {} (got {}): {}",
                r.line(),
                r.origin,
                config
                    .get(&r.symbol)
                    .map_or("absent".to_string(), |v| v.to_string()),
                r.reason
            )
        })
        .collect();
    if !lost.is_empty() {
        return Err(KernelBuildError::Lost {
            lost,
            hint: recipe.hint.clone(),
        });
    }
    let report = recipe.pins.check(
        &config,
        &CheckOptions {
            boot_modules: Vec::new(),
            kernel_release: None,
            kernel_version: None,
            profile: ProfileSelection::Disabled,
        },
    )?;
    if !report.is_ok() {
        return Err(KernelBuildError::Violations {
            target: recipe.name.clone(),
            table: report.render_table(),
        });
    }
    let committed = format!("{}{kconfig}", header(tree, recipe, &requests));
    Ok(GeneratedConfig {
        kconfig,
        committed,
        requests,
        report,
        warnings,
        obj_dir: obj.to_path_buf(),
    })
}

fn header(tree: &SourceTree, recipe: &Recipe, requests: &[Request]) -> String {
    let mut fragments: Vec<String> = recipe
        .build
        .iter()
        .map(|f| format!("build/{}", f.name))
        .collect();
    for r in &recipe.pins.requirements {
        let name = format!("fragments/{}", r.fragment);
        if !fragments.contains(&name) {
            fragments.push(name);
        }
    }
    format!(
        "# eci: generated by `eci-build kernel build --target {name} --config-only`; do not edit.\n\
         # Source: {package} {version} (sha256 {sha}), kernel {kernel}, pinned in {SOURCE_LOCK}.\n\
         # Made by: make ARCH={ARCH} {base}; {count} values merged from\n\
         #   {fragments};\n\
         # make olddefconfig; checked against the {name} pins without exception profiles.\n",
        name = recipe.name,
        package = tree.package,
        version = tree.version,
        sha = tree.sha256,
        kernel = tree.kernel_version,
        base = recipe.base.make_target(),
        count = requests.len(),
        fragments = fragments.join(", "),
    )
}

/// Lines only in `old` (-) and only in `new` (+), ignoring order; empty when equal.
pub fn config_diff(old: &str, new: &str, limit: usize) -> String {
    let a: BTreeSet<&str> = old.lines().collect();
    let b: BTreeSet<&str> = new.lines().collect();
    // Ordered by symbol, old before new, so a changed value reads as a pair.
    let key = |l: &str| -> String {
        let l = l.trim_start_matches("# ");
        l.split(['=', ' ']).next().unwrap_or(l).to_string()
    };
    let mut changed: Vec<(String, u8, &str)> = Vec::new();
    changed.extend(a.difference(&b).map(|l| (key(l), 0, *l)));
    changed.extend(b.difference(&a).map(|l| (key(l), 1, *l)));
    changed.sort();
    let mut out: Vec<String> = changed
        .iter()
        .map(|(_, side, l)| format!("  {} {l}", if *side == 0 { '-' } else { '+' }))
        .collect();
    if old != new && out.is_empty() {
        out.push("  (same lines, different order)".into());
    }
    let total = out.len();
    out.truncate(limit);
    if total > limit {
        out.push(format!("  ... and {} more", total - limit));
    }
    out.join("\n")
}

// ---------------------------------------------------------------------------------------------
// Building

/// What `bzImage` was built with; written as `build.json` next to it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BuildInfo {
    pub recipe: String,
    pub source_package: String,
    pub source_version: String,
    pub source_sha256: String,
    pub kernel_release: String,
    pub config_sha256: String,
    pub toolchain: String,
    pub environment: BTreeMap<String, String>,
    /// sha256 over all of the above: the cache key.
    pub key: String,
    pub image_sha256: String,
    pub seconds: f64,
    pub jobs: usize,
}

/// The fixed build metadata (`KBUILD_BUILD_*`), from the lock's source date.
pub fn build_environment(tree: &SourceTree) -> BTreeMap<String, String> {
    let stamp = crate::artifact::rfc3339(tree.source_date_epoch)
        .replace('T', " ")
        .replace('Z', " UTC");
    [
        ("KBUILD_BUILD_TIMESTAMP", stamp),
        ("KBUILD_BUILD_USER", "eci".to_string()),
        ("KBUILD_BUILD_HOST", "eci".to_string()),
        ("KBUILD_BUILD_VERSION", "1".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// sha256 of everything that decides the output.
pub fn cache_key(
    tree: &SourceTree,
    kconfig: &str,
    toolchain: &str,
    env: &BTreeMap<String, String>,
) -> String {
    let mut h = Sha256::new();
    h.update(b"eci kernel build v1\n");
    h.update(tree.sha256.as_bytes());
    h.update(b"\n");
    h.update(Sha256::digest(kconfig.as_bytes()));
    h.update(toolchain.as_bytes());
    for (k, v) in env {
        h.update(format!("\n{k}={v}").as_bytes());
    }
    hex::encode(h.finalize())
}

/// A finished build: where its files are and whether it came from the cache.
#[derive(Debug, Clone)]
pub struct Built {
    pub dir: PathBuf,
    pub info: BuildInfo,
    pub cached: bool,
}

/// Builds `bzImage` for a generated config, or returns the cached result of an identical build.
pub fn build_kernel(
    cache: &Cache,
    tree: &SourceTree,
    recipe: &Recipe,
    generated: &GeneratedConfig,
    jobs: usize,
    echo: bool,
) -> Result<Built, KernelBuildError> {
    let toolchain = toolchain()?;
    let env = build_environment(tree);
    let key = cache_key(tree, &generated.kconfig, &toolchain, &env);
    let out_root = cache.root().join("kernel").join("out");
    let dir = out_root.join(&key);
    let info_path = dir.join(BUILD_INFO);
    if info_path.is_file() {
        let text = std::fs::read_to_string(&info_path).map_err(io_err(&info_path))?;
        if let Ok(info) = serde_json::from_str::<BuildInfo>(&text) {
            let image = dir.join(KERNEL_IMAGE);
            let bytes = std::fs::read(&image).map_err(io_err(&image))?;
            if hex::encode(Sha256::digest(&bytes)) == info.image_sha256
                && complete_entry(&dir, &generated.obj_dir, &generated.kconfig)
            {
                return Ok(Built {
                    dir,
                    info,
                    cached: true,
                });
            }
        }
        // A damaged entry is rebuilt.
        let _ = std::fs::remove_dir_all(&dir);
    }

    let obj = &generated.obj_dir;
    let _lock = DirLock::acquire(obj)?;
    let make = Make {
        tree: &tree.dir,
        obj,
        log: obj.join("eci-build.log"),
        echo,
        env: env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    };
    let _ = std::fs::remove_file(&make.log);
    let started = Instant::now();
    make.run(&[&format!("-j{}", jobs.max(1)), "bzImage"])?;
    let seconds = started.elapsed().as_secs_f64();

    let release_path = obj.join("include/config/kernel.release");
    let kernel_release = std::fs::read_to_string(&release_path)
        .map_err(io_err(&release_path))?
        .trim()
        .to_string();
    let built_config = std::fs::read_to_string(obj.join(".config")).map_err(io_err(obj))?;
    if built_config != generated.kconfig {
        return Err(KernelBuildError::Conflict(format!(
            "{}: kconfig changed .config during the build (a toolchain-dependent option?):\n{}",
            obj.join(".config").display(),
            config_diff(&generated.kconfig, &built_config, 20)
        )));
    }
    std::fs::create_dir_all(&out_root).map_err(io_err(&out_root))?;
    let tmp = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(&out_root)
        .map_err(io_err(&out_root))?;
    for (from, to) in [
        (obj.join("arch/x86/boot/bzImage"), KERNEL_IMAGE),
        (obj.join(".config"), KERNEL_CONFIG),
        (obj.join("System.map"), SYSTEM_MAP),
        (obj.join(MODULES_BUILTIN), MODULES_BUILTIN),
    ] {
        std::fs::copy(&from, tmp.path().join(to)).map_err(io_err(&from))?;
    }
    let image = std::fs::read(tmp.path().join(KERNEL_IMAGE)).map_err(io_err(tmp.path()))?;
    let info = BuildInfo {
        recipe: recipe.name.clone(),
        source_package: tree.package.clone(),
        source_version: tree.version.clone(),
        source_sha256: tree.sha256.clone(),
        kernel_release,
        config_sha256: hex::encode(Sha256::digest(generated.kconfig.as_bytes())),
        toolchain,
        environment: env,
        key: key.clone(),
        image_sha256: hex::encode(Sha256::digest(&image)),
        seconds,
        jobs,
    };
    let json = serde_json::to_string_pretty(&info).expect("plain data serialises");
    std::fs::write(tmp.path().join(BUILD_INFO), format!("{json}\n")).map_err(io_err(tmp.path()))?;
    match std::fs::rename(tmp.path(), &dir) {
        Ok(()) => {
            let _ = tmp.keep();
        }
        // A concurrent identical build won; keep its entry.
        Err(_) if dir.join(BUILD_INFO).is_file() => {}
        Err(e) => return Err(io_err(&dir)(e)),
    }
    Ok(Built {
        dir,
        info,
        cached: false,
    })
}

/// True when a cache entry has every file a build now stores. Entries written before
/// `modules.builtin` was kept get it from the object folder of the same config (kbuild writes
/// it there), instead of a rebuild that takes most of an hour.
fn complete_entry(dir: &Path, obj: &Path, kconfig: &str) -> bool {
    let want = dir.join(MODULES_BUILTIN);
    if want.is_file() {
        return true;
    }
    let from = obj.join(MODULES_BUILTIN);
    let same_build = std::fs::read_to_string(obj.join(".config")).is_ok_and(|c| c == kconfig);
    if !same_build || !from.is_file() {
        return false;
    }
    let tmp = dir.join(format!(".{MODULES_BUILTIN}.tmp"));
    std::fs::copy(&from, &tmp).is_ok() && std::fs::rename(&tmp, &want).is_ok()
}

/// Copies a build's files into `out` (replacing older ones).
pub fn install(built: &Built, out: &Path) -> Result<(), KernelBuildError> {
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    for name in [
        KERNEL_IMAGE,
        KERNEL_CONFIG,
        SYSTEM_MAP,
        MODULES_BUILTIN,
        BUILD_INFO,
    ] {
        let from = built.dir.join(name);
        std::fs::copy(&from, out.join(name)).map_err(io_err(&from))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The whole command

/// `eci-build kernel build`: everything from the lock to the installed files.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub recipe: Recipe,
    pub definition: PathBuf,
    pub lock: PathBuf,
    pub source: SourceFetch,
    /// The committed full config: rewritten with `config_only`, else the generated config
    /// must equal it. `None` for recipes without a committed config (tests).
    pub committed: Option<PathBuf>,
    pub config_only: bool,
    pub jobs: usize,
    /// Where `vmlinuz`, `config`, `System.map`, `modules.builtin` and `build.json` are copied
    /// (`None`: used from the cache, as the image build does).
    pub out_dir: Option<PathBuf>,
    /// Show make's output while it runs.
    pub echo: bool,
}

#[derive(Debug, Clone)]
pub struct BuildOutcome {
    pub tree: SourceTree,
    pub generated: GeneratedConfig,
    /// Lines that changed in the committed config (`config_only`), empty when none.
    pub config_changes: String,
    pub built: Option<Built>,
    pub seconds_source: f64,
    pub seconds_config: f64,
    pub seconds_total: f64,
}

pub fn run(req: &BuildRequest) -> Result<BuildOutcome, KernelBuildError> {
    let started = Instant::now();
    let missing = missing_host_packages();
    if !missing.is_empty() {
        return Err(KernelBuildError::HostPackages { missing });
    }
    let def = SourceDefinition::load(&req.definition)?;
    let (lockfile, pkg) = locked_source(&def, &req.lock)?;
    let tree = prepare_source(&lockfile, &pkg, &req.source)?;
    let seconds_source = started.elapsed().as_secs_f64();

    let obj = obj_dir(&req.source.cache, &tree, &req.recipe);
    let generated = {
        let _lock = DirLock::acquire(&obj)?;
        generate_config(&tree, &req.recipe, &obj, req.echo)?
    };
    let seconds_config = started.elapsed().as_secs_f64() - seconds_source;

    let mut config_changes = String::new();
    if let Some(path) = &req.committed {
        let old = std::fs::read_to_string(path).unwrap_or_default();
        if req.config_only {
            config_changes = if old.is_empty() {
                "  (new file)".into()
            } else {
                config_diff(&old, &generated.committed, 200)
            };
            if old != generated.committed {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
                }
                std::fs::write(path, &generated.committed).map_err(io_err(path))?;
            }
        } else if old != generated.committed {
            return Err(KernelBuildError::StaleConfig {
                path: path.clone(),
                target: req.recipe.name.clone(),
                diff: if old.is_empty() {
                    "  (the file does not exist)".into()
                } else {
                    config_diff(&old, &generated.committed, 30)
                },
            });
        }
    }
    if req.config_only {
        if let Some(out) = &req.out_dir {
            std::fs::create_dir_all(out).map_err(io_err(out))?;
            let path = out.join(KERNEL_CONFIG);
            std::fs::write(&path, &generated.kconfig).map_err(io_err(&path))?;
        }
        return Ok(BuildOutcome {
            tree,
            generated,
            config_changes,
            built: None,
            seconds_source,
            seconds_config,
            seconds_total: started.elapsed().as_secs_f64(),
        });
    }
    let built = build_kernel(
        &req.source.cache,
        &tree,
        &req.recipe,
        &generated,
        req.jobs,
        req.echo,
    )?;
    if let Some(out) = &req.out_dir {
        install(&built, out)?;
    }
    Ok(BuildOutcome {
        tree,
        generated,
        config_changes,
        built: Some(built),
        seconds_source,
        seconds_config,
        seconds_total: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_object_folder_is_waited_for_and_a_dead_owners_lock_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let obj = dir.path().join("obj");
        // A lock left by a process that no longer exists.
        std::fs::create_dir_all(obj.with_extension("lock")).unwrap();
        std::fs::write(obj.with_extension("lock").join("pid"), "999999999").unwrap();
        let held = DirLock::acquire(&obj).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let obj2 = obj.clone();
        let waiter = std::thread::spawn(move || {
            let lock = DirLock::acquire(&obj2).unwrap();
            tx.send(()).unwrap();
            drop(lock);
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(700))
                .is_err(),
            "a second build must wait while the first holds the folder"
        );
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("the waiting build gets the folder once it is free");
        waiter.join().unwrap();
        assert!(!obj.with_extension("lock").exists());
    }

    fn symbols(text: &str) -> Symbols {
        let mut s = Symbols::default();
        s.add_kconfig(text);
        s
    }

    const KCONFIG: &str = "\
config MODULES
\tbool \"Enable loadable module support\"
menuconfig NETFILTER
\tbool \"Network packet filtering\"
config MAGIC_SYSRQ_DEFAULT_ENABLE
\thex \"Enable magic SysRq key functions by default\"
\tdefault 0x1
config DEFAULT_MMAP_MIN_ADDR
\tint \"Low address space to protect\"
config OVERLAY_FS
\ttristate \"Overlay filesystem support\"
config CPU_MITIGATIONS
\tdef_bool y
choice
\tprompt \"x\"
config LOCALVERSION
\tstring \"Local version\"
endchoice
";

    fn recipe(pins: &str, build: &str) -> Recipe {
        let frag = Fragment::parse("container", "fragments/container.config", pins).unwrap();
        Recipe {
            name: "unit".into(),
            base: Base::Tinyconfig,
            pins: Pins {
                target: Target::Qemu,
                requirements: frag.requirements,
                version_pins: frag.version_pins,
                profiles: Vec::new(),
            },
            build: vec![Fragment::parse("own-kernel", "build/own-kernel.config", build).unwrap()],
            hint: PathBuf::from("build/unit.config"),
        }
    }

    #[test]
    fn kconfig_scan_reads_names_and_types() {
        let s = symbols(KCONFIG);
        assert_eq!(s.kind("MODULES"), Some(SymbolType::Bool));
        assert_eq!(s.kind("NETFILTER"), Some(SymbolType::Bool));
        assert_eq!(s.kind("MAGIC_SYSRQ_DEFAULT_ENABLE"), Some(SymbolType::Hex));
        assert_eq!(s.kind("DEFAULT_MMAP_MIN_ADDR"), Some(SymbolType::Int));
        assert_eq!(s.kind("OVERLAY_FS"), Some(SymbolType::Tristate));
        assert_eq!(s.kind("CPU_MITIGATIONS"), Some(SymbolType::Bool));
        assert_eq!(s.kind("LOCALVERSION"), Some(SymbolType::String));
        assert!(!s.knows("SPECULATION_MITIGATIONS"));
    }

    #[test]
    fn plan_turns_pins_into_kconfig_lines() {
        let r = recipe(
            "CONFIG_OVERLAY_FS=y|m:overlay  # layers\n\
             CONFIG_SPECULATION_MITIGATIONS=y || CONFIG_CPU_MITIGATIONS=y  # renamed\n\
             CONFIG_MODULE_SIG_FORCE=y || CONFIG_MODULES=n  # signed or none\n\
             CONFIG_MAGIC_SYSRQ_DEFAULT_ENABLE=0  # no sysrq\n\
             CONFIG_DEFAULT_MMAP_MIN_ADDR>=65536  # null deref\n\
             CONFIG_HYPERV_VMBUS=y  if-known  # newer kernels\n\
             # CONFIG_DEVMEM is not set  # /dev/mem\n",
            "# CONFIG_MODULES is not set  # no modules\n",
        );
        let lines: Vec<String> = plan(&r, &symbols(KCONFIG))
            .unwrap()
            .iter()
            .map(Request::line)
            .collect();
        assert_eq!(
            lines,
            [
                "CONFIG_LOCALVERSION=\"-eci-unit\"",
                "# CONFIG_MODULES is not set",
                "CONFIG_OVERLAY_FS=y",
                // The first alternative kconfig knows; the build fragment decides MODULES.
                "CONFIG_CPU_MITIGATIONS=y",
                "CONFIG_MAGIC_SYSRQ_DEFAULT_ENABLE=0x0",
                "CONFIG_DEFAULT_MMAP_MIN_ADDR=65536",
                // Unknown symbols without if-known are still requested, so they fail loudly.
                "# CONFIG_DEVMEM is not set",
            ]
        );
    }

    #[test]
    fn contradicting_requests_name_both_origins() {
        let r = recipe(
            "CONFIG_OVERLAY_FS=y|m:overlay  # layers\n",
            "# CONFIG_OVERLAY_FS is not set  # smaller\n",
        );
        let err = plan(&r, &symbols(KCONFIG)).unwrap_err().to_string();
        assert!(
            err.contains("fragments/container.config:1")
                && err.contains("build/own-kernel.config:1"),
            "{err}"
        );
    }

    #[test]
    fn kept_compares_what_kconfig_wrote() {
        let config = KernelConfig::parse(
            "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x\\\"y\"\nCONFIG_D=70000\n",
            "t",
        )
        .unwrap();
        let req = |symbol: &str, value: Option<&str>| Request {
            symbol: symbol.into(),
            value: value.map(str::to_string),
            at_least: symbol == "D",
            if_known: symbol == "K",
            origin: String::new(),
            reason: String::new(),
        };
        assert!(kept(&req("A", Some("y")), &config));
        assert!(!kept(&req("B", Some("y")), &config));
        assert!(kept(&req("B", None), &config));
        assert!(kept(&req("Z", None), &config));
        assert!(!kept(&req("A", None), &config));
        assert!(kept(&req("C", Some("\"x\\\"y\"")), &config));
        assert!(!kept(&req("Z", Some("y")), &config));
        assert!(kept(&req("K", Some("y")), &config));
        assert!(kept(&req("D", Some("65536")), &config));
        assert!(!kept(&req("D", Some("80000")), &config));
        let exact = Request {
            at_least: false,
            ..req("D", Some("65536"))
        };
        assert!(!kept(&exact, &config));
    }

    #[test]
    fn source_definition_is_strict_and_wants_reasons() {
        let p = Path::new("kernel-config/source.yaml");
        let ok = "package: linux-source-6.12\narchitecture: amd64\nsuites: [bookworm-security]\ncomponents: [main]\nexclude:\n  - {name: binutils, reason: host toolchain}\n";
        assert_eq!(
            SourceDefinition::parse(ok, p).unwrap().package,
            "linux-source-6.12"
        );
        let typo = ok.replace("suites", "suite");
        let err = SourceDefinition::parse(&typo, p).unwrap_err().to_string();
        assert!(
            err.contains("source.yaml:3") && err.contains("suite"),
            "{err}"
        );
        let no_reason = ok.replace("host toolchain", "\"\"");
        let err = SourceDefinition::parse(&no_reason, p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("binutils") && err.contains("reason"), "{err}");
    }

    #[test]
    fn the_committed_source_definition_and_lock_agree() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel-config");
        let def = SourceDefinition::load(&dir.join(SOURCE_DEFINITION)).unwrap();
        let (lock, pkg) = locked_source(&def, &dir.join(SOURCE_LOCK)).unwrap();
        assert_eq!(pkg.name, def.package);
        assert_eq!(
            lock.packages.len(),
            1,
            "the source lock holds the source only"
        );
    }

    #[test]
    fn build_environment_is_fixed_by_the_source_date() {
        let tree = SourceTree {
            dir: PathBuf::new(),
            package: "linux-source-6.12".into(),
            version: "1".into(),
            sha256: "a".repeat(64),
            kernel_version: "6.12.1".into(),
            source_date_epoch: 1_795_727_015,
        };
        let env = build_environment(&tree);
        assert_eq!(env["KBUILD_BUILD_TIMESTAMP"], "2026-11-26 21:03:35 UTC");
        assert_eq!(env["KBUILD_BUILD_USER"], "eci");
        let a = cache_key(&tree, "CONFIG_A=y\n", "gcc 12", &env);
        assert_eq!(a, cache_key(&tree, "CONFIG_A=y\n", "gcc 12", &env));
        assert_ne!(a, cache_key(&tree, "CONFIG_A=m\n", "gcc 12", &env));
        assert_ne!(a, cache_key(&tree, "CONFIG_A=y\n", "gcc 13", &env));
    }

    #[test]
    fn config_diff_lists_changed_lines() {
        assert_eq!(config_diff("a\nb\n", "a\nb\n", 10), "");
        let d = config_diff("a\nb\n", "a\nc\n", 10);
        assert_eq!(d, "  - b\n  + c");
        let d = config_diff(
            "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=1\n",
            "# CONFIG_A is not set\nCONFIG_B=y\nCONFIG_C=1\n",
            10,
        );
        assert_eq!(
            d,
            "  - CONFIG_A=y\n  + # CONFIG_A is not set\n  - # CONFIG_B is not set\n  + CONFIG_B=y"
        );
        let d = config_diff("", "1\n2\n3\n", 2);
        assert!(d.ends_with("... and 1 more"), "{d}");
    }
}
