//! Targets and the pins that apply to each: fragments plus kernel exception profiles.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use crate::error::PinError;
use crate::fragment::{Fragment, Requirement, VersionPin};
use crate::profile::Profile;

/// Where the VM runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// Hyper-V Generation 2 VM (SPEC V4).
    Hyperv,
    /// WSL2 distribution on Microsoft's shared kernel (SPEC V5).
    Wsl2,
    /// QEMU, for the end-to-end tests (SPEC V7).
    Qemu,
}

impl Target {
    pub const ALL: [Target; 3] = [Target::Hyperv, Target::Wsl2, Target::Qemu];

    pub fn name(self) -> &'static str {
        match self {
            Target::Hyperv => "hyperv",
            Target::Wsl2 => "wsl2",
            Target::Qemu => "qemu",
        }
    }

    /// The fragments pinned for this target, in report order.
    pub fn fragments(self) -> &'static [&'static str] {
        match self {
            Target::Hyperv => &["container", "hardening", "hyperv"],
            Target::Wsl2 => &["container", "hardening", "wsl2"],
            Target::Qemu => &["container", "hardening", "qemu"],
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Target::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| format!("unknown target `{s}`; targets are hyperv, wsl2 and qemu"))
    }
}

impl Serialize for Target {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// The fragments shipped with this crate, compiled in so the VM init needs no files.
pub const BUILTIN_FRAGMENTS: &[(&str, &str)] = &[
    ("container", include_str!("../fragments/container.config")),
    ("hardening", include_str!("../fragments/hardening.config")),
    ("hyperv", include_str!("../fragments/hyperv.config")),
    ("wsl2", include_str!("../fragments/wsl2.config")),
    ("qemu", include_str!("../fragments/qemu.config")),
];

/// The kernel exception profiles shipped with this crate (`fragments/kernels/*.exceptions`).
pub const BUILTIN_PROFILES: &[(&str, &str)] = &[(
    "debian12-cloud-6.12.exceptions",
    include_str!("../fragments/kernels/debian12-cloud-6.12.exceptions"),
)];

/// Everything pinned for one target.
#[derive(Debug, Clone, Serialize)]
pub struct Pins {
    pub target: Target,
    pub requirements: Vec<Requirement>,
    pub version_pins: Vec<VersionPin>,
    /// Profiles that list this target.
    pub profiles: Vec<Profile>,
}

impl Pins {
    /// The pins compiled into this crate, with the target's own fragments.
    pub fn builtin(target: Target) -> Result<Pins, PinError> {
        Self::builtin_with_fragments(target, target.fragments())
    }

    /// The compiled-in pins with an explicit fragment list (e.g. an image definition's
    /// `fragments`); exception profiles are still chosen by `target`.
    pub fn builtin_with_fragments<S: AsRef<str>>(
        target: Target,
        names: &[S],
    ) -> Result<Pins, PinError> {
        let fragments = names
            .iter()
            .map(|name| {
                let name = name.as_ref();
                let text = BUILTIN_FRAGMENTS
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, t)| *t)
                    .ok_or_else(|| PinError::UnknownFragment {
                        name: name.to_string(),
                        known: BUILTIN_FRAGMENTS
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", "),
                    })?;
                Fragment::parse(name, &format!("fragments/{name}.config"), text)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let profiles = BUILTIN_PROFILES
            .iter()
            .map(|(file, text)| Profile::parse(&format!("fragments/kernels/{file}"), text))
            .collect::<Result<Vec<_>, _>>()?;
        Self::assemble(target, fragments, profiles)
    }

    /// Pins read from a directory laid out like this crate's `fragments/` (NAME.config plus
    /// optional `kernels/*.exceptions`), for reviewing edits before they are compiled in.
    pub fn load(dir: &Path, target: Target) -> Result<Pins, PinError> {
        let mut fragments = Vec::new();
        for name in target.fragments() {
            let path = dir.join(format!("{name}.config"));
            if !path.is_file() {
                return Err(PinError::MissingFragment {
                    dir: dir.to_path_buf(),
                    name: format!("{name}.config"),
                });
            }
            let text = read(&path)?;
            fragments.push(Fragment::parse(name, &path.display().to_string(), &text)?);
        }
        let mut profiles = Vec::new();
        let kernels = dir.join("kernels");
        if kernels.is_dir() {
            let mut paths: Vec<_> = std::fs::read_dir(&kernels)
                .map_err(|source| PinError::Io {
                    path: kernels.clone(),
                    source,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "exceptions"))
                .collect();
            paths.sort();
            for path in paths {
                let text = read(&path)?;
                profiles.push(Profile::parse(&path.display().to_string(), &text)?);
            }
        }
        Self::assemble(target, fragments, profiles)
    }

    fn assemble(
        target: Target,
        fragments: Vec<Fragment>,
        profiles: Vec<Profile>,
    ) -> Result<Pins, PinError> {
        let mut seen: HashMap<String, String> = HashMap::new();
        let mut requirements = Vec::new();
        let mut version_pins = Vec::new();
        for fragment in fragments {
            for req in fragment.requirements {
                let here = format!("fragments/{}.config:{}", req.fragment, req.line);
                for term in &req.terms {
                    if let Some(first) = seen.insert(term.option.clone(), here.clone()) {
                        return Err(PinError::Duplicate {
                            option: term.option.clone(),
                            first,
                            second: here,
                        });
                    }
                }
                requirements.push(req);
            }
            version_pins.extend(fragment.version_pins);
        }
        let mut names: HashMap<String, String> = HashMap::new();
        for p in &profiles {
            if let Some(first) = names.insert(p.name.clone(), p.file.clone()) {
                return Err(PinError::DuplicateProfile {
                    name: p.name.clone(),
                    first,
                    second: p.file.clone(),
                });
            }
        }
        let profiles = profiles
            .into_iter()
            .filter(|p| p.targets.contains(&target))
            .collect();
        Ok(Pins {
            target,
            requirements,
            version_pins,
            profiles,
        })
    }

    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.name == name)
    }

    /// The requirement that pins `option` (without `CONFIG_`), if any.
    pub fn requirement(&self, option: &str) -> Option<&Requirement> {
        let option = option.strip_prefix("CONFIG_").unwrap_or(option);
        self.requirements.iter().find(|r| r.mentions(option))
    }
}

fn read(path: &Path) -> Result<String, PinError> {
    std::fs::read_to_string(path).map_err(|source| PinError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_pins_parse_for_every_target() {
        for target in Target::ALL {
            let pins = Pins::builtin(target).unwrap_or_else(|e| panic!("{target}: {e}"));
            assert!(pins.requirements.len() > 20, "{target}");
            let frags: Vec<&str> = pins
                .requirements
                .iter()
                .map(|r| r.fragment.as_str())
                .collect();
            for name in target.fragments() {
                assert!(frags.contains(name), "{target} lacks fragment {name}");
            }
        }
    }

    #[test]
    fn on_disk_fragments_match_the_compiled_ones() {
        let dir = Path::new(crate::FRAGMENTS_DIR);
        for target in Target::ALL {
            let disk = Pins::load(dir, target).unwrap();
            let built = Pins::builtin(target).unwrap();
            assert_eq!(disk.requirements, built.requirements);
            assert_eq!(disk.profiles.len(), built.profiles.len());
        }
    }

    #[test]
    fn every_builtin_exception_names_a_pinned_option_of_its_targets() {
        for target in Target::ALL {
            let pins = Pins::builtin(target).unwrap();
            for profile in &pins.profiles {
                for e in &profile.exceptions {
                    let pinned_somewhere = profile
                        .targets
                        .iter()
                        .any(|t| Pins::builtin(*t).unwrap().requirement(&e.option).is_some());
                    assert!(
                        pinned_somewhere,
                        "{}:{}: CONFIG_{} is not pinned for any of {:?}",
                        profile.file, e.line, e.option, profile.targets
                    );
                }
            }
        }
    }

    #[test]
    fn duplicate_option_across_fragments_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["container", "hardening", "qemu"] {
            std::fs::write(dir.path().join(format!("{name}.config")), "# empty\n").unwrap();
        }
        std::fs::write(
            dir.path().join("container.config"),
            "CONFIG_VSOCKETS=y|m:vsock  # a\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("qemu.config"), "\nCONFIG_VSOCKETS=y  # b\n").unwrap();
        let err = Pins::load(dir.path(), Target::Qemu)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("fragments/qemu.config:2")
                && err.contains("fragments/container.config:1")
                && err.contains("VSOCKETS"),
            "{err}"
        );
        let err = Pins::load(dir.path(), Target::Hyperv)
            .unwrap_err()
            .to_string();
        assert!(err.contains("hyperv.config"), "{err}");
    }

    #[test]
    fn explicit_fragment_lists() {
        let pins = Pins::builtin_with_fragments(Target::Hyperv, &["container", "hyperv"]).unwrap();
        assert!(pins.requirement("USER_NS").is_some());
        assert!(pins.requirement("DEVMEM").is_none());
        assert!(pins.requirement("HYPERV_STORAGE").is_some());
        let err = Pins::builtin_with_fragments(Target::Hyperv, &["container", "gpu"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`gpu`") && err.contains("hardening"), "{err}");
    }

    #[test]
    fn target_names() {
        assert_eq!("wsl2".parse::<Target>(), Ok(Target::Wsl2));
        assert!("vmware"
            .parse::<Target>()
            .unwrap_err()
            .contains("hyperv, wsl2 and qemu"));
    }
}
