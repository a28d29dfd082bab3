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
pub use eci_facts::vm_paths::SYSCTL_FILE;

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
    let pins = Pins::builtin_with_fragments(target(&spec.target)?, &image_fragments(spec)?)?;
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
        &format!("{}:/boot/config-{release}", spec.kernel.describe()),
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

/// The fragments an image's kernel is held to: always its target's own (container, hardening
/// and the target's fragment), then any the definition adds. A definition can add pins but
/// never drop one: pins are locked.
pub fn image_fragments(spec: &ImageSpec) -> Result<Vec<String>, KernelCheckError> {
    let mut names: Vec<String> = target(&spec.target)?
        .fragments()
        .iter()
        .map(|f| f.to_string())
        .collect();
    for f in &spec.kernel.fragments {
        if !names.contains(f) {
            names.push(f.clone());
        }
    }
    Ok(names)
}

/// Where the image keeps the pins file the in-VM probe (`eci-probe`) reads.
pub const PINS_FILE: &str = eci_kernel_config::IMAGE_PINS_PATH;

/// The contents of [`PINS_FILE`] for an image (SPEC V5): which compiled-in pins apply (target
/// and the definition's fragments), the kernel release the image ships, and the modules it
/// loads at boot (pass what [`check_image`] was given: shipped plus built-in modules).
/// Deterministic: the same inputs give the same bytes.
pub fn pins_file(spec: &ImageSpec, release: &str, boot_modules: &[String]) -> String {
    let mut modules: Vec<String> = boot_modules.to_vec();
    modules.sort();
    modules.dedup();
    eci_kernel_config::ImagePins {
        target: spec.target.clone(),
        fragments: image_fragments(spec).unwrap_or_else(|_| spec.kernel.fragments.clone()),
        kernel_release: release.to_string(),
        boot_modules: modules,
        profile: None,
    }
    .to_json()
}

/// The settings of a sysctl.conf by dotted name (`kernel.sysrq`, however the file spells it);
/// later lines win, as `sysctl -p` applies them. Read by eci-facts' parser, the one eci-init
/// applies the file with; a malformed line establishes nothing (eci-init reports it at boot).
pub fn parse_sysctl_conf(text: &str) -> BTreeMap<String, String> {
    eci_facts::sysctl::parse(text, SYSCTL_FILE)
        .0
        .into_iter()
        .map(|s| (s.name, s.value))
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
        let files =
            crate::apt::deb::read_data_file(&bytes, &name, |p| p.starts_with("/boot/config-"))
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

    const RELEASE: &str = "6.12.107+deb12-cloud-amd64";

    fn hyperv_spec() -> ImageSpec {
        let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images");
        crate::spec::load(&images.join("hyperv.yaml")).unwrap()
    }

    /// The pinned kernel's own config, as shipped in its .deb.
    fn pinned_config() -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../kernel-config/testdata/config-{RELEASE}"));
        std::fs::read_to_string(path).unwrap()
    }

    /// A root filesystem holding the sysctl file the image renders.
    fn manifest_with_sysctls() -> Manifest {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../vm-config/templates/sysctl.conf.tera");
        let mut m = Manifest::new();
        m.add_dir("/etc", 0o755, 0, 0).unwrap();
        m.add_dir("/etc/eci", 0o755, 0, 0).unwrap();
        m.add_file(SYSCTL_FILE, std::fs::read(path).unwrap(), 0o644, 0, 0)
            .unwrap();
        m
    }

    #[test]
    fn image_gate_accepts_the_pinned_kernel_with_its_compensations() {
        let spec = hyperv_spec();
        let report = check_image(
            &spec,
            &pinned_config(),
            RELEASE,
            &spec.kernel.modules,
            &[],
            &manifest_with_sysctls(),
        )
        .unwrap();
        assert!(report.is_ok());
        assert_eq!(report.profile.as_deref(), Some("debian12-cloud-6.12"));
    }

    #[test]
    fn image_gate_refuses_a_kernel_that_violates_a_pin() {
        let spec = hyperv_spec();
        let weakened = pinned_config().replace("CONFIG_USER_NS=y", "# CONFIG_USER_NS is not set");
        let err = check_image(
            &spec,
            &weakened,
            RELEASE,
            &spec.kernel.modules,
            &[],
            &manifest_with_sysctls(),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, KernelCheckError::Violations { .. }), "{msg}");
        assert!(
            msg.contains("CONFIG_USER_NS") && msg.contains("no override"),
            "{msg}"
        );
    }

    #[test]
    fn image_gate_refuses_a_module_pin_the_image_does_not_load() {
        let spec = hyperv_spec();
        let modules: Vec<String> = spec
            .kernel
            .modules
            .iter()
            .filter(|m| *m != "hv_storvsc")
            .cloned()
            .collect();
        let err = check_image(
            &spec,
            &pinned_config(),
            RELEASE,
            &modules,
            &[],
            &manifest_with_sysctls(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("CONFIG_HYPERV_STORAGE") && err.contains("hv_storvsc"),
            "{err}"
        );
    }

    #[test]
    fn image_gate_refuses_compensations_the_image_does_not_establish() {
        let mut spec = hyperv_spec();
        spec.kernel.cmdline.retain(|t| t != "slab_nomerge");
        let mut m = Manifest::new();
        m.add_dir("/etc", 0o755, 0, 0).unwrap();
        m.add_dir("/etc/eci", 0o755, 0, 0).unwrap();
        m.add_file(SYSCTL_FILE, b"kernel.sysrq = 1\n".to_vec(), 0o644, 0, 0)
            .unwrap();
        let err = check_image(
            &spec,
            &pinned_config(),
            RELEASE,
            &spec.kernel.modules,
            &[],
            &m,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, KernelCheckError::Unestablished { .. }),
            "{msg}"
        );
        for needle in ["slab_nomerge", "kernel.sysrq", "kernel.kexec_load_disabled"] {
            assert!(msg.contains(needle), "{needle}: {msg}");
        }
    }

    use eci_kernel_config::testdata::boot_modules as test_list;

    #[test]
    fn boot_module_test_lists_match_the_definitions() {
        let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images");
        for target in ["hyperv", "qemu"] {
            let spec = crate::spec::load(&images.join(format!("{target}.yaml"))).unwrap();
            let mut want = test_list("common");
            want.extend(test_list(target));
            assert_eq!(
                spec.kernel.modules, want,
                "kernel-config/testdata/boot-modules/ is out of step with images/{target}.yaml"
            );
        }
    }

    #[test]
    fn a_definition_cannot_drop_its_targets_pins() {
        let mut spec = hyperv_spec();
        spec.kernel.fragments = vec!["hyperv".into()];
        assert_eq!(
            image_fragments(&spec).unwrap(),
            vec!["container", "hardening", "hyperv"]
        );
        // The hardening pins still apply: a config without them fails.
        let config = KernelConfig::parse("CONFIG_HYPERV=y\n", "test").unwrap();
        let report = check(&spec, &config, None, Vec::new()).unwrap();
        assert!(!report.is_ok());
        assert!(
            report.render_table().contains("hardening"),
            "{}",
            report.render_table()
        );
        spec.kernel.fragments = vec!["qemu".into()];
        assert_eq!(
            image_fragments(&spec).unwrap(),
            vec!["container", "hardening", "hyperv", "qemu"]
        );
    }

    #[test]
    fn pins_file_names_the_image_kernel_and_reads_back() {
        let spec = hyperv_spec();
        let modules = vec!["sd_mod".to_string(), "overlay".into(), "sd_mod".into()];
        let text = pins_file(&spec, "6.12.107+deb12-cloud-amd64", &modules);
        assert_eq!(
            text,
            pins_file(&spec, "6.12.107+deb12-cloud-amd64", &modules)
        );
        let back = eci_kernel_config::ImagePins::from_json(&text, PINS_FILE).unwrap();
        assert_eq!(back.target, "hyperv");
        assert_eq!(back.boot_modules, ["overlay", "sd_mod"]);
        assert_eq!(back.kernel_release, "6.12.107+deb12-cloud-amd64");
        let pins = back.pins().unwrap();
        assert!(pins.requirement("HYPERV_STORAGE").is_some());
        assert!(pins.requirement("USER_NS").is_some());
    }

    #[test]
    fn sysctl_conf_parsing_follows_sysctl_p() {
        let m = parse_sysctl_conf(
            "# c\nkernel.sysrq = 1\n; x\nkernel/sysrq=0\nvm.x=  3 \nnet/ipv4/conf/eth0.1/rp_filter = 1\nbad\n",
        );
        assert_eq!(m.get("kernel.sysrq").map(String::as_str), Some("0"));
        assert_eq!(m.get("vm.x").map(String::as_str), Some("3"));
        // A slash path keeps its dotted component: the dotted name spells that dot as `/`.
        assert_eq!(
            m.get("net.ipv4.conf.eth0/1.rp_filter").map(String::as_str),
            Some("1")
        );
        assert_eq!(m.len(), 3);
    }
}
