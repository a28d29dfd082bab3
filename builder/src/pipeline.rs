//! `eci-build image`: definition + lock -> verified packages -> root filesystem -> artifacts.
//!
//! Builds read the lock only; the network is touched just for packages missing from the cache,
//! and the apt sources are consulted only then, so a full cache builds offline on any machine.

use crate::apt::fetch::{self, Cache, FetchItem, FetchOptions, FetchSummary};
use crate::apt::lock::{self, Lockfile};
use crate::artifact::{self, BuildInfo, BuildManifest, SbomPackage};
use crate::initramfs::Compression;
use crate::rootfs::{self, Package};
use crate::spec::{self, CompressionName, ImageSpec, KernelSource};
use crate::workspace::Workspace;
use crate::{binaries, kernel, kernel_build, source_build};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct ImageRequest {
    pub workspace: Workspace,
    pub target: String,
    pub out_dir: PathBuf,
    pub cache: Cache,
    pub fetch: FetchOptions,
    pub sources_root: PathBuf,
    pub mirrors: Vec<String>,
    /// Build the VM binaries with a toolchain other than rust-toolchain.toml's (recorded).
    pub allow_other_toolchain: bool,
}

#[derive(Debug)]
pub struct ImageReport {
    pub manifest: BuildManifest,
    pub fetch: FetchSummary,
    pub warnings: Vec<String>,
    /// The kernel's verdict against its pins (it passed, possibly through compensations);
    /// `None` for a definition without a kernel (a container root filesystem).
    pub kernel: Option<eci_kernel_config::Report>,
    pub seconds_fetch: f64,
    pub seconds_total: f64,
}

pub fn load_spec(workspace: &Workspace, target: &str) -> Result<ImageSpec> {
    let path = workspace.definition(target);
    if !path.is_file() {
        let mut known: Vec<String> = std::fs::read_dir(workspace.images_dir())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        // A target has a lock; shared layers (base.yaml, ...) have none.
                        let name = e.file_name().to_string_lossy().into_owned();
                        name.strip_suffix(".lock").map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        known.sort();
        bail!(
            "no image definition for target `{target}` ({} does not exist); known targets: {}",
            path.display(),
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        );
    }
    let spec = spec::load(&path)?;
    if spec.target != target {
        bail!(
            "{} declares `target: {}` but was asked for as `{target}`; make the file name and the target agree",
            path.display(),
            spec.target
        );
    }
    Ok(spec)
}

/// Checks that the lock still describes the definition: same target and architecture, every
/// requested package locked, and the kernel pin identical.
pub fn check_lock_matches(spec: &ImageSpec, lock: &Lockfile, lock_file: &Path) -> Result<()> {
    let relock = format!("run `eci-build lock --target {}`", spec.target);
    if lock.target != spec.target || lock.architecture != spec.distribution.architecture {
        bail!(
            "{} was made for target {} ({}), not {} ({}); {relock}",
            lock_file.display(),
            lock.target,
            lock.architecture,
            spec.target,
            spec.distribution.architecture
        );
    }
    let mut wanted = spec.packages.include.clone();
    wanted.sort();
    wanted.dedup();
    if wanted != lock.include {
        let added: Vec<&String> = wanted
            .iter()
            .filter(|w| !lock.include.contains(w))
            .collect();
        let dropped: Vec<&String> = lock
            .include
            .iter()
            .filter(|l| !wanted.contains(l))
            .collect();
        bail!(
            "{} is stale: the definition's package list changed (added: {:?}, removed: {:?}); {relock}",
            lock_file.display(),
            added,
            dropped
        );
    }
    let mut built: Vec<&str> = spec
        .source_builds
        .iter()
        .map(|b| b.package.as_str())
        .collect();
    built.sort();
    built.dedup();
    let locked: Vec<&str> = lock.sources.iter().map(|s| s.name.as_str()).collect();
    if built != locked {
        bail!(
            "{} is stale: the definition builds {:?} from source, the lock pins the sources of {:?}; {relock}",
            lock_file.display(),
            built,
            locked
        );
    }
    let Some((package, version, sha256)) = spec.kernel.package() else {
        // Our own kernel: a kernel package in the lock would be a second, unchecked kernel.
        if let Some(p) = lock
            .packages
            .iter()
            .find(|p| p.name.starts_with("linux-image-"))
        {
            bail!(
                "{} builds its own kernel (kernel.build: true) but {} contains the kernel package {}; \
                 remove it from packages.include and {relock}",
                spec.file.display(),
                lock_file.display(),
                p.name
            );
        }
        return Ok(());
    };
    let locked = lock
        .packages
        .iter()
        .find(|p| p.name == package)
        .with_context(|| {
            format!(
                "the kernel package {package} is not in {}; list it under packages.include and {relock}",
                lock_file.display()
            )
        })?;
    if locked.version != version || locked.sha256 != sha256 {
        bail!(
            "kernel pin mismatch: the definition pins {package} {version} sha256 {sha256}, the lock has {} sha256 {}; \
             update kernel.version/kernel.sha256 in the definition (pins are reviewed by hand) or {relock}",
            locked.version,
            locked.sha256
        );
    }
    Ok(())
}

fn compression(name: CompressionName) -> Compression {
    match name {
        CompressionName::Zstd => Compression::Zstd,
        CompressionName::Gzip => Compression::Gzip,
        CompressionName::Xz => Compression::Xz,
        CompressionName::Lz4 => Compression::Lz4,
        CompressionName::None => Compression::None,
    }
}

pub fn build_image(req: &ImageRequest) -> Result<ImageReport> {
    let started = Instant::now();
    let spec = load_spec(&req.workspace, &req.target)?;
    let lock_file = req.workspace.lock(&req.target);
    let lock_text = std::fs::read(&lock_file).with_context(|| {
        format!(
            "cannot read {}; create it with `eci-build lock --target {}`",
            lock_file.display(),
            req.target
        )
    })?;
    let lock = Lockfile::read(&lock_file)?;
    check_lock_matches(&spec, &lock, &lock_file)?;

    let items = fetch_items(req, &lock)?;
    let fetch_started = Instant::now();
    let fetched = fetch::fetch_all(&items, &req.cache, &req.fetch)?;
    let seconds_fetch = fetch_started.elapsed().as_secs_f64();

    let mut packages = Vec::with_capacity(lock.packages.len());
    for p in &lock.packages {
        let bytes = req.cache.read_verified(&p.sha256)?;
        packages.push(Package {
            name: p.name.clone(),
            version: p.version.clone(),
            bytes,
        });
    }
    let epoch = source_date_epoch(u64::try_from(lock.source_date_epoch).unwrap_or(0))?;
    let from_source: Vec<String> = spec
        .source_builds
        .iter()
        .map(|b| b.package.clone())
        .collect();
    let source_builds = source_build::build_all(&from_source, &lock, &req.cache, epoch)?;
    let (binaries, cargo_inputs) = binaries::build(
        &spec.binaries,
        &binaries::workspace_root(),
        req.allow_other_toolchain,
    )?;
    let platform = artifact::PlatformInputs::from_spec(&spec, &packages)?;
    let own = match spec.kernel.source {
        KernelSource::Own => Some(own_kernel(req, &spec)?),
        KernelSource::Package { .. } | KernelSource::None => None,
    };
    let mut rootfs = rootfs::assemble(
        &spec,
        packages,
        binaries,
        &source_builds,
        own.as_ref().map(|o| o.kernel.clone()),
        epoch,
    )?;
    // A container root filesystem has no kernel to hold to pins: its engine's kernel is
    // checked where that engine's image is built.
    let kernel_report = match rootfs.kernel.clone() {
        Some(k) => {
            let report = kernel::check_image(
                &spec,
                &k.config,
                &k.release,
                &rootfs.modules,
                &rootfs.builtin_modules,
                &rootfs.manifest,
            )?;
            // What the in-VM probe compares the running kernel with (SPEC V5).
            let mut boot_modules = rootfs.modules.clone();
            boot_modules.extend(rootfs.builtin_modules.iter().cloned());
            let pins = kernel::pins_file(&spec, &k.release, &boot_modules);
            rootfs
                .manifest
                .insert(
                    kernel::PINS_FILE,
                    crate::manifest::Entry::file(pins, 0o644).with_mtime(epoch),
                )
                .with_context(|| format!("adding {}", kernel::PINS_FILE))?;
            Some(report)
        }
        None => None,
    };

    let info = BuildInfo {
        name: spec.name.clone(),
        target: spec.target.clone(),
        outputs: spec.outputs.clone(),
        source_date_epoch: epoch,
        lock_sha256: hex::encode(Sha256::digest(&lock_text)),
        kernel_package: match (&own, spec.kernel.package()) {
            (Some(o), _) => format!(
                "{} (built by eci-build, config {})",
                o.source_package, o.config_path
            ),
            (None, Some((package, _, _))) => package.to_string(),
            (None, None) => "none (container root filesystem)".into(),
        },
        kernel_version: match (&own, spec.kernel.package()) {
            (Some(o), _) => o.source_version.clone(),
            (None, Some((_, version, _))) => version.to_string(),
            (None, None) => String::new(),
        },
        compression: compression(spec.initramfs.compression),
        platform,
        cargo_inputs,
        source_builds: source_builds.iter().map(|b| b.record.clone()).collect(),
    };
    let mut sbom: Vec<SbomPackage> = lock
        .packages
        .iter()
        .map(|p| SbomPackage {
            name: p.name.clone(),
            version: p.version.clone(),
            architecture: p.architecture.clone(),
            sha256: p.sha256.clone(),
        })
        .collect();
    // The own kernel is made from this source package: the SBOM names it.
    if let Some(o) = &own {
        sbom.push(SbomPackage {
            name: o.source_package.clone(),
            version: o.source_version.clone(),
            architecture: "all".into(),
            sha256: o.source_sha256.clone(),
        });
    }
    let manifest = artifact::write_outputs(&req.out_dir, &rootfs, &info, &sbom)?;
    let mut warnings = rootfs.warnings;
    for a in &manifest.artifacts {
        warnings.extend(a.dropped_xattrs.iter().map(|d| {
            format!(
                "{}: extended attributes not stored (format limit): {d}",
                a.path
            )
        }));
    }
    Ok(ImageReport {
        manifest,
        fetch: fetched,
        warnings,
        kernel: kernel_report,
        seconds_fetch,
        seconds_total: started.elapsed().as_secs_f64(),
    })
}

/// The own kernel of a definition with `kernel.build: true`, and where it came from.
struct Own {
    kernel: rootfs::OwnKernel,
    source_package: String,
    source_version: String,
    source_sha256: String,
    config_path: String,
}

/// `eci-build kernel build --target T` as a step of the image build: the kernel-config folder
/// beside the images folder gives the pinned source and the committed config; the result comes
/// from the cache when this exact source, config and toolchain were built before.
fn own_kernel(req: &ImageRequest, spec: &ImageSpec) -> Result<Own> {
    let dir = req.workspace.kernel_config_dir();
    let target = kernel::target(&spec.target)?;
    let committed = kernel_build::Recipe::generated_path(&dir, target);
    let jobs = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    eprintln!(
        "{}: own kernel from {} and {} (cached after the first build; a first build takes 30-45 min on 2 cores, log in the cache's kernel/obj folder)",
        spec.file.display(),
        dir.join(kernel_build::SOURCE_LOCK).display(),
        committed.display()
    );
    let outcome = kernel_build::run(&kernel_build::BuildRequest {
        recipe: kernel_build::Recipe::for_target(target, &dir)?,
        definition: dir.join(kernel_build::SOURCE_DEFINITION),
        lock: dir.join(kernel_build::SOURCE_LOCK),
        source: kernel_build::SourceFetch {
            cache: req.cache.clone(),
            fetch: req.fetch.clone(),
            sources_root: req.sources_root.clone(),
            mirrors: req.mirrors.clone(),
        },
        committed: Some(committed.clone()),
        config_only: false,
        jobs,
        out_dir: None,
        echo: false,
    })
    .with_context(|| format!("building the own kernel for {}", spec.file.display()))?;
    let built = outcome
        .built
        .context("the kernel build returned no kernel")?;
    let read = |name: &str| {
        let p = built.dir.join(name);
        std::fs::read(&p).with_context(|| format!("reading {}", p.display()))
    };
    Ok(Own {
        kernel: rootfs::OwnKernel {
            release: built.info.kernel_release.clone(),
            vmlinuz: read(kernel_build::KERNEL_IMAGE)?,
            config: String::from_utf8_lossy(&read(kernel_build::KERNEL_CONFIG)?).into_owned(),
            modules_builtin: String::from_utf8_lossy(&read(kernel_build::MODULES_BUILTIN)?)
                .into_owned(),
        },
        source_package: outcome.tree.package.clone(),
        source_version: outcome.tree.version.clone(),
        source_sha256: outcome.tree.sha256.clone(),
        config_path: committed
            .strip_prefix(req.workspace.images_dir().parent().unwrap_or(Path::new("")))
            .unwrap_or(&committed)
            .display()
            .to_string(),
    })
}

/// Resolves the definition's packages and pins them (`eci-build lock`).
pub fn lock_target(spec: &ImageSpec, sources_root: &Path, mirrors: &[String]) -> Result<Lockfile> {
    let mut req = lock::LockRequest::new(&spec.target, &spec.distribution.architecture);
    req.suites = spec.distribution.suites.clone();
    req.components = spec.distribution.components.clone();
    req.include = spec.packages.include.clone();
    req.exclude = spec
        .packages
        .exclude
        .iter()
        .map(|e| e.name.clone())
        .collect();
    req.sources = spec
        .source_builds
        .iter()
        .map(|b| b.package.clone())
        .collect();
    req.sources_root = sources_root.to_path_buf();
    req.mirrors = lock::sources::MirrorOverrides::parse(mirrors)?;
    let lockfile = lock::lock(&req, &lock::TerminalProgress::new())?;
    if let Some((package, version, sha256)) = spec.kernel.package() {
        if let Some(p) = lockfile.packages.iter().find(|p| p.name == package) {
            if p.version != version || p.sha256 != sha256 {
                eprintln!(
                    "warning: the mirror now offers {package} {} (sha256 {}); the definition pins {version} (sha256 {sha256}): \
                     review the new kernel and update kernel.version and kernel.sha256 before building",
                    p.version, p.sha256
                );
            }
        }
    }
    Ok(lockfile)
}

/// `SOURCE_DATE_EPOCH` from the environment wins (the reproducible-builds convention); the
/// default is the lock's, so the same lock always gives the same timestamps.
fn source_date_epoch(from_lock: u64) -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.trim().parse().with_context(|| {
            format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds since 1970")
        }),
        Err(_) => Ok(from_lock),
    }
}

/// Maps locked packages (and the files of locked source packages) to URLs, consulting apt
/// sources only when something must be downloaded.
fn fetch_items(req: &ImageRequest, lock: &Lockfile) -> Result<Vec<FetchItem>> {
    // (label, suite, pool path, sha256, size)
    let mut pins: Vec<(String, &str, String, &str, u64)> = lock
        .packages
        .iter()
        .map(|p| {
            (
                format!("{} {}", p.name, p.version),
                p.suite.as_str(),
                p.path.clone(),
                p.sha256.as_str(),
                p.size,
            )
        })
        .collect();
    for src in &lock.sources {
        for f in &src.files {
            pins.push((
                format!("{} {} (source: {})", src.name, src.version, f.name),
                src.suite.as_str(),
                src.path_of(f),
                f.sha256.as_str(),
                f.size,
            ));
        }
    }
    let all_cached = pins
        .iter()
        .all(|(_, _, _, sha256, size)| req.cache.contains(sha256, *size));
    let mut resolver = None;
    let mut items = Vec::with_capacity(pins.len());
    for (label, suite, path, sha256, size) in pins {
        let url = if all_cached {
            String::new()
        } else {
            if resolver.is_none() {
                let sources = lock::sources::AptSources::load(&req.sources_root)?;
                let overrides = lock::sources::MirrorOverrides::parse(&req.mirrors)?;
                resolver = Some((sources, overrides, std::collections::BTreeMap::new()));
            }
            let (sources, overrides, cache) = resolver.as_mut().expect("set above");
            if !cache.contains_key(suite) {
                let m = lock::sources::mirror_for_suite(
                    sources,
                    overrides,
                    suite,
                    &lock.architecture,
                    &[],
                )?;
                cache.insert(suite.to_string(), m);
            }
            cache[suite].url(&path)
        };
        items.push(FetchItem {
            label,
            url,
            sha256: sha256.to_string(),
            size,
        });
    }
    Ok(items)
}
