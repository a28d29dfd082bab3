//! Building `bzImage` with fixed build metadata, cached under sha256(source, .config,
//! toolchain, build environment), and installing a build's files.

use super::config::{config_diff, GeneratedConfig};
use super::make::{toolchain, DirLock, Make};
use super::recipe::Recipe;
use super::source::SourceTree;
use super::{
    io_err, KernelBuildError, BUILD_INFO, KERNEL_CONFIG, KERNEL_IMAGE, MODULES_BUILTIN, SYSTEM_MAP,
};
use crate::apt::fetch::Cache;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
