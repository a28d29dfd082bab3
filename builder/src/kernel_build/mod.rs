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

mod compile;
mod config;
mod make;
mod recipe;
mod source;

pub use compile::{build_environment, build_kernel, cache_key, install, BuildInfo, Built};
pub use config::{config_diff, generate_config, obj_dir, GeneratedConfig};
pub use make::{missing_host_packages, toolchain};
pub use recipe::{load_fragment, plan, Base, Recipe, Request, SymbolType, Symbols};
pub use source::{
    locked_source, prepare_source, write_source_lock, SourceDefinition, SourceExclusion,
    SourceFetch, SourceTree,
};

use crate::apt::{fetch, lock};
use make::DirLock;
use std::path::{Path, PathBuf};
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
