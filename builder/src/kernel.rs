//! The kernel stage: check the image's kernel against its target's pins (SPEC V6).
//!
//! The check itself lives in `eci-kernel-config`; this stage feeds it the kernel the image
//! really ships (its own `/boot/config-*`, the modules the image really loads) and then makes
//! sure the image establishes what the compensated options rely on (sysctls, boot parameters,
//! lockdown). There is no override: a kernel that violates its pins gives no image.

use crate::manifest::Manifest;
use crate::spec::ImageSpec;
use eci_kernel_config::{
    CheckOptions, Cmp, KernelConfig, LockdownLevel, Pins, ProfileSelection, Report,
    RuntimeCondition, Target,
};
use std::collections::BTreeMap;
use std::path::Path;

/// The sysctl file the init applies at boot (rendered from the definition's templates).
pub const SYSCTL_FILE: &str = "/etc/eci/sysctl.conf";

#[derive(Debug, thiserror::Error)]
pub enum KernelCheckError {
    #[error("{0}")]
    Target(String),
    #[error(transparent)]
    Pins(#[from] eci_kernel_config::PinError),
    #[error(transparent)]
    Config(#[from] eci_kernel_config::ConfigError),
    #[error(transparent)]
    Check(#[from] eci_kernel_config::CheckError),
    #[error("kernel {release} violates the {target} pins; no image is written (pins are locked, there is no override):\n{table}")]
    Violations {
        release: String,
        target: String,
        table: String,
    },
    #[error("the kernel passes its pins only through compensations the image does not establish:\n{}\nadd them to kernel.cmdline or to {SYSCTL_FILE}'s template", missing.join("\n"))]
    Unestablished { missing: Vec<String> },
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no /boot/config-* inside; is it a kernel image package?")]
    NoConfigInDeb { path: String },
    #[error("{path}: {message}")]
    Deb { path: String, message: String },
}

pub fn target(name: &str) -> Result<Target, KernelCheckError> {
    name.parse().map_err(KernelCheckError::Target)
}

/// Checks `config` for `spec`'s target with the given modules loaded at boot.
pub fn check(
    spec: &ImageSpec,
    config: &KernelConfig,
    release: Option<&str>,
    boot_modules: Vec<String>,
) -> Result<Report, KernelCheckError> {
    let pins = Pins::builtin_with_fragments(target(&spec.target)?, &spec.kernel.fragments)?;
    let opts = CheckOptions {
        boot_modules,
        kernel_release: release.map(str::to_string),
        kernel_version: None,
        profile: ProfileSelection::Auto,
    };
    Ok(pins.check(config, &opts)?)
}

/// The image-build gate: pins hold, and every compensation's run-time condition is set up.
pub fn check_image(
    spec: &ImageSpec,
    config_text: &str,
    release: &str,
    shipped_modules: &[String],
    builtin_modules: &[String],
    manifest: &Manifest,
) -> Result<Report, KernelCheckError> {
    let config = KernelConfig::parse(
        config_text,
        &format!("{}:/boot/config-{release}", spec.kernel.package),
    )?
    .with_release(release);
    let mut modules: Vec<String> = shipped_modules.to_vec();
    modules.extend(builtin_modules.iter().cloned());
    let report = check(spec, &config, Some(release), modules)?;
    if !report.is_ok() {
        return Err(KernelCheckError::Violations {
            release: release.to_string(),
            target: spec.target.clone(),
            table: report.render_table(),
        });
    }
    let sysctls = manifest
        .get(SYSCTL_FILE)
        .and_then(|e| e.data())
        .map(|b| parse_sysctl_conf(&String::from_utf8_lossy(b)))
        .unwrap_or_default();
    let missing = unestablished(&report, &spec.kernel.cmdline, &sysctls);
    if !missing.is_empty() {
        return Err(KernelCheckError::Unestablished { missing });
    }
    Ok(report)
}

/// `name = value` lines of a sysctl.conf; later lines win, as `sysctl -p` applies them.
pub fn parse_sysctl_conf(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().replace('/', "."), v.trim().to_string()))
        .collect()
}

/// Run-time conditions the report relies on that neither the command line nor the sysctl file
/// provides. `kernel.modules_disabled` is set by the init itself once the modules are loaded.
pub fn unestablished(
    report: &Report,
    cmdline: &[String],
    sysctls: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut missing = Vec::new();
    for req in &report.runtime_requirements {
        let ok = match &req.condition {
            RuntimeCondition::Cmdline { token } => cmdline.iter().any(|t| t == token),
            RuntimeCondition::Lockdown { level } => {
                cmdline.iter().any(|t| match t.strip_prefix("lockdown=") {
                    Some("confidentiality") => true,
                    Some("integrity") => *level != LockdownLevel::Confidentiality,
                    _ => false,
                })
            }
            RuntimeCondition::Sysctl { name, cmp, value } => {
                name == "kernel.modules_disabled"
                    || sysctls
                        .get(name)
                        .and_then(|v| v.parse::<i64>().ok())
                        .is_some_and(|v| match cmp {
                            Cmp::Eq => v == *value,
                            Cmp::AtLeast => v >= *value,
                        })
            }
        };
        if !ok {
            missing.push(format!(
                "  {} (needed by {})",
                req.condition,
                req.required_by.join(", ")
            ));
        }
    }
    missing
}

/// Reads a kernel config from a file, `/proc/config.gz`, a source tree, or a kernel `.deb`.
pub fn read_config(path: &Path) -> Result<(KernelConfig, Option<String>), KernelCheckError> {
    let head = {
        use std::io::Read;
        let mut buf = [0u8; 8];
        let n = std::fs::File::open(path)
            .and_then(|mut f| f.read(&mut buf))
            .unwrap_or(0);
        buf[..n].to_vec()
    };
    if head.starts_with(b"!<arch>\n") {
        let bytes = std::fs::read(path).map_err(|source| KernelCheckError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let name = path.display().to_string();
        let files = crate::deb::read_data_file(&bytes, &name, |p| p.starts_with("/boot/config-"))
            .map_err(|e| KernelCheckError::Deb {
            path: name.clone(),
            message: e.to_string(),
        })?;
        let (file, text) = files
            .into_iter()
            .next()
            .ok_or(KernelCheckError::NoConfigInDeb { path: name.clone() })?;
        let release = file.trim_start_matches("/boot/config-").to_string();
        let config =
            KernelConfig::from_bytes(&text, &format!("{name}:{file}"))?.with_release(&release);
        return Ok((config, Some(release)));
    }
    let config = KernelConfig::from_path(path)?;
    let release = config.release().map(str::to_string);
    Ok((config, release))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_conf_parsing_follows_sysctl_p() {
        let m = parse_sysctl_conf("# c\nkernel.sysrq = 1\n; x\nkernel/sysrq=0\nvm.x=  3 \n");
        assert_eq!(m.get("kernel.sysrq").map(String::as_str), Some("0"));
        assert_eq!(m.get("vm.x").map(String::as_str), Some("3"));
        assert_eq!(m.len(), 2);
    }
}
