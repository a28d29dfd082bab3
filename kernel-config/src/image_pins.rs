//! What an image records about its kernel so the VM can probe itself (SPEC V5).
//!
//! eci-build writes this as `/etc/eci/kernel-pins.json` into the read-only root; `eci-probe`
//! reads it at boot. The pins themselves are compiled into this crate, so the file only names
//! which of them apply (target and fragments) and what the build knew that the VM cannot
//! know on its own: the kernel release it shipped and the modules it loads at boot.

use serde::{Deserialize, Serialize};

use crate::check::ProfileSelection;
use crate::error::PinError;
use crate::probe::{Phase, ProbeOptions};
use crate::target::{Pins, Target};

/// Where the image keeps the file.
pub const IMAGE_PINS_PATH: &str = "/etc/eci/kernel-pins.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagePins {
    /// `hyperv`, `wsl2` or `qemu`.
    pub target: String,
    /// The image definition's `kernel.fragments`, e.g. `[container, hardening, hyperv]`.
    pub fragments: Vec<String>,
    /// `uname -r` of the kernel the image ships; another running release is drift.
    pub kernel_release: String,
    /// The modules the image loads at boot (the `=m` rows rely on them being loaded).
    pub boot_modules: Vec<String>,
    /// An exception profile to insist on; absent means the one matching the release, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

impl ImagePins {
    /// Pretty JSON with a trailing newline; the same value always gives the same bytes.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("plain data serialises");
        text.push('\n');
        text
    }

    /// Parses the file; `origin` names it in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<ImagePins, PinError> {
        let pins: ImagePins = serde_json::from_str(text).map_err(|e| PinError::ImagePins {
            origin: origin.to_string(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        pins.target().map_err(|message| PinError::ImagePins {
            origin: origin.to_string(),
            line: 1,
            column: 1,
            message,
        })?;
        Ok(pins)
    }

    pub fn target(&self) -> Result<Target, String> {
        self.target.parse()
    }

    /// The compiled-in pins these fragments select: always the target's own fragments, plus
    /// any the file adds, so an edited file can add pins but never drop one.
    pub fn pins(&self) -> Result<Pins, PinError> {
        let target = self.target().map_err(|message| PinError::ImagePins {
            origin: IMAGE_PINS_PATH.to_string(),
            line: 1,
            column: 1,
            message,
        })?;
        let mut names: Vec<String> = target.fragments().iter().map(|f| f.to_string()).collect();
        for f in &self.fragments {
            if !names.contains(f) {
                names.push(f.clone());
            }
        }
        Pins::builtin_with_fragments(target, &names)
    }

    pub fn probe_options(&self, phase: Phase) -> ProbeOptions {
        ProbeOptions {
            phase,
            boot_modules: self.boot_modules.clone(),
            expected_release: Some(self.kernel_release.clone()),
            profile: match &self.profile {
                Some(name) => ProfileSelection::Named(name.clone()),
                None => ProfileSelection::Auto,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ImagePins {
        ImagePins {
            target: "hyperv".into(),
            fragments: vec!["container".into(), "hardening".into(), "hyperv".into()],
            kernel_release: "6.12.107+deb12-cloud-amd64".into(),
            boot_modules: vec!["overlay".into(), "hv_vmbus".into()],
            profile: None,
        }
    }

    #[test]
    fn round_trips_and_selects_the_builtin_pins() {
        let text = sample().to_json();
        let back = ImagePins::from_json(&text, "kernel-pins.json").unwrap();
        assert_eq!(back, sample());
        assert!(!text.contains("profile"), "{text}");
        let pins = back.pins().unwrap();
        assert_eq!(pins.target, Target::Hyperv);
        assert!(pins.requirement("HYPERV_STORAGE").is_some());
        let opts = back.probe_options(Phase::AfterModuleLock);
        assert_eq!(
            opts.expected_release.as_deref(),
            Some("6.12.107+deb12-cloud-amd64")
        );
        assert_eq!(opts.boot_modules, ["overlay", "hv_vmbus"]);
        assert_eq!(opts.profile, ProfileSelection::Auto);
    }

    #[test]
    fn an_edited_file_cannot_drop_the_targets_pins() {
        let mut edited = sample();
        edited.fragments = vec!["hyperv".into()];
        let pins = edited.pins().unwrap();
        // A hardening and a container pin are still there.
        assert!(pins.requirement("STACKPROTECTOR_STRONG").is_some());
        assert!(pins.requirement("USER_NS").is_some());
    }

    #[test]
    fn errors_name_the_file_and_position() {
        let err = ImagePins::from_json("{\"target\": \"hyperv\",\n \"modules\": []}", "/etc/x")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/etc/x:2:"), "{err}");
        assert!(err.contains("modules"), "{err}");
        let bad = sample().to_json().replace("hyperv\"", "vmware\"");
        let err = ImagePins::from_json(&bad, "/etc/x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("vmware") && err.contains("hyperv, wsl2 and qemu"),
            "{err}"
        );
        let mut unknown = sample();
        unknown.fragments.push("gpu".into());
        let err = unknown.pins().unwrap_err().to_string();
        assert!(err.contains("`gpu`"), "{err}");
    }
}
