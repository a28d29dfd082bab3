//! The decision the VM takes before it starts isolation (SPEC V5): the probe's report plus the
//! boot modules whose hardware is absent give a verdict, isolation allowed or refused, with every
//! drifted item named and every excused one said why.
//!
//! Only one thing is ever excused: a pinned boot module that is not loaded because the device it
//! drives is not there ("hardware absent"), e.g. the Hyper-V drivers of the hyperv image booted
//! under QEMU. Everything else that drifts refuses isolation: a module that failed for another
//! reason or is missing from the kernel, another kernel release, a missing feature, a weaker
//! hardening sysctl, and a probe that could not run at all.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::fragment::normalize_module;
use crate::probe::{Phase, ProbeKind, ProbeReport, ProbeStatus};
use crate::target::Target;

/// `errno` values of `finit_module` the rule reads. Linux uses the generic numbers for these on
/// every architecture (include/uapi/asm-generic/errno-base.h); this crate does not link libc.
pub const ENOENT: i32 = 2;
pub const ENXIO: i32 = 6;
pub const ENODEV: i32 = 19;

/// The one reason an item is excused.
pub const HARDWARE_ABSENT: &str = "hardware absent";

/// One boot module that did not load, as the init saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleFailure {
    pub name: String,
    /// `finit_module`'s errno; `None` when the module file could not be opened or read, which
    /// is never a hardware question.
    pub errno: Option<i32>,
    /// The module's own `depends=` (its `.modinfo`): tells a module that failed only because a
    /// dependency without hardware did not load from other failures.
    #[serde(default)]
    pub depends: Vec<String>,
    /// Not tried: a module of the boot list it depends on had failed, so its load could only
    /// have failed with unresolved symbols (ENOENT). Judged like that failure.
    #[serde(default)]
    pub skipped: bool,
}

/// Boot modules missing because the device they drive is not there.
///
/// A module is hardware-absent if `finit_module` failed with `ENODEV` or `ENXIO`: a driver's
/// init returns these when its platform or device is not present (`hv_vmbus` outside Hyper-V).
/// A module whose load failed with `ENOENT` (unresolved symbols) is hardware-absent too when
/// at least one of its dependencies is, and every dependency of it that failed is: it could
/// not link against a driver that had nothing to drive (`hv_storvsc`, `hv_netvsc`, ... after
/// `hv_vmbus`). So is a module not tried because such a dependency had failed
/// ([`ModuleFailure::skipped`]). Any other failure is not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HardwareAbsent {
    /// Canonical module name -> why it counts as hardware-absent.
    modules: BTreeMap<String, String>,
}

impl HardwareAbsent {
    pub fn from_failures(failures: &[ModuleFailure]) -> HardwareAbsent {
        let mut modules = BTreeMap::new();
        for f in failures {
            match f.errno {
                Some(ENODEV) => {
                    modules.insert(
                        normalize_module(&f.name),
                        "its load failed with ENODEV (no such device)".to_string(),
                    );
                }
                Some(ENXIO) => {
                    modules.insert(
                        normalize_module(&f.name),
                        "its load failed with ENXIO (no such device or address)".to_string(),
                    );
                }
                _ => {}
            }
        }
        let failed: BTreeMap<String, &ModuleFailure> = failures
            .iter()
            .map(|f| (normalize_module(&f.name), f))
            .collect();
        // Dependency chains (hv_sock needs hv_vmbus, ...) resolve in as many rounds as they are
        // long; each round adds at least one module or ends.
        loop {
            let mut added = Vec::new();
            for (name, f) in &failed {
                if modules.contains_key(name) || !(f.errno == Some(ENOENT) || f.skipped) {
                    continue;
                }
                let deps: Vec<String> = f.depends.iter().map(|d| normalize_module(d)).collect();
                let absent: Vec<&String> =
                    deps.iter().filter(|d| modules.contains_key(*d)).collect();
                let other_failed = deps
                    .iter()
                    .any(|d| failed.contains_key(d) && !modules.contains_key(d));
                if !absent.is_empty() && !other_failed {
                    let names: Vec<&str> = absent.iter().map(|s| s.as_str()).collect();
                    let what = if f.skipped {
                        "it was not loaded"
                    } else {
                        "its load failed with ENOENT"
                    };
                    added.push((
                        name.clone(),
                        format!(
                            "{what} because it needs {}, whose hardware is absent",
                            names.join(", ")
                        ),
                    ));
                }
            }
            if added.is_empty() {
                break;
            }
            modules.extend(added);
        }
        HardwareAbsent { modules }
    }

    pub fn contains(&self, module: &str) -> bool {
        self.modules.contains_key(&normalize_module(module))
    }

    /// Why `module` counts as hardware-absent.
    pub fn why(&self, module: &str) -> Option<&str> {
        self.modules
            .get(&normalize_module(module))
            .map(String::as_str)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.modules.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }
}

/// Whether the VM may start isolation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    Allowed,
    Refused,
}

/// Something that differs from the pins and refuses isolation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriftItem {
    pub kind: ProbeKind,
    pub name: String,
    pub wanted: String,
    pub found: String,
    pub reason: String,
}

/// Something that differs from the pins but does not refuse isolation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExcusedItem {
    pub kind: ProbeKind,
    pub name: String,
    pub wanted: String,
    pub found: String,
    /// Always [`HARDWARE_ABSENT`].
    pub reason: String,
    /// Why each module behind it counts as hardware-absent.
    pub detail: String,
}

/// The verdict; serialises as the VM's status file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriftVerdict {
    pub isolation: Isolation,
    pub target: Option<Target>,
    /// `uname -r` of the running kernel (empty if the probe could not read it).
    pub kernel_release: String,
    /// The release the image pins, if it pins one.
    pub pinned_release: Option<String>,
    pub phase: Option<Phase>,
    pub drifted: Vec<DriftItem>,
    pub excused: Vec<ExcusedItem>,
    /// What the administrator should do; empty when isolation is allowed.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub remedy: String,
}

impl DriftVerdict {
    /// Judges a probe report. A drifting row is excused only if it names the modules whose
    /// absence is its whole cause and every one of them is in `absent`.
    pub fn new(report: &ProbeReport, absent: &HardwareAbsent) -> DriftVerdict {
        let mut drifted = Vec::new();
        let mut excused = Vec::new();
        for row in &report.rows {
            let ProbeStatus::Drift(reason) = &row.status else {
                continue;
            };
            let excusable =
                !row.modules.is_empty() && row.modules.iter().all(|m| absent.contains(m));
            if excusable {
                let detail = row
                    .modules
                    .iter()
                    .map(|m| format!("{m}: {}", absent.why(m).unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join("; ");
                excused.push(ExcusedItem {
                    kind: row.kind,
                    name: row.name.clone(),
                    wanted: row.wanted.clone(),
                    found: row.found.clone(),
                    reason: HARDWARE_ABSENT.to_string(),
                    detail,
                });
            } else {
                drifted.push(DriftItem {
                    kind: row.kind,
                    name: row.name.clone(),
                    wanted: row.wanted.clone(),
                    found: row.found.clone(),
                    reason: reason.clone(),
                });
            }
        }
        let pinned_release = report
            .rows
            .iter()
            .find(|r| r.kind == ProbeKind::Release && r.wanted != "any")
            .map(|r| r.wanted.clone());
        let mut verdict = DriftVerdict {
            isolation: if drifted.is_empty() {
                Isolation::Allowed
            } else {
                Isolation::Refused
            },
            target: Some(report.target),
            kernel_release: report.kernel_release.clone(),
            pinned_release,
            phase: Some(report.phase),
            drifted,
            excused,
            remedy: String::new(),
        };
        if verdict.is_refused() {
            verdict.remedy = remedy(report.target, verdict.pinned_release.as_deref());
        }
        verdict
    }

    /// The probe could not run (`what` is a short label such as "no kernel pins file", `error`
    /// the full message): refused, since nothing was verified.
    pub fn probe_failed(target: Option<Target>, what: &str, error: &str) -> DriftVerdict {
        DriftVerdict {
            isolation: Isolation::Refused,
            target,
            kernel_release: String::new(),
            pinned_release: None,
            phase: None,
            drifted: vec![DriftItem {
                kind: ProbeKind::Probe,
                name: what.to_string(),
                wanted: "a completed probe of the running kernel".into(),
                found: "the probe could not run".into(),
                reason: error.to_string(),
            }],
            excused: Vec::new(),
            remedy: "the image's kernel pins or the kernel's /proc could not be read, so nothing \
                     was verified: rebuild the image with eci-build (it writes \
                     /etc/eci/kernel-pins.json) and boot it unchanged"
                .into(),
        }
    }

    pub fn is_refused(&self) -> bool {
        self.isolation == Isolation::Refused
    }

    /// The self-test's `kernel-drift=` value: `none`, `N: NAME, NAME`, or `unknown: WHAT` when
    /// the probe could not run (the same forms `eci-probe --selftest` prints).
    pub fn selftest_value(&self) -> String {
        if let Some(p) = self.drifted.iter().find(|d| d.kind == ProbeKind::Probe) {
            return format!("unknown: {}", p.name);
        }
        if self.drifted.is_empty() {
            return "none".into();
        }
        let names: Vec<&str> = self.drifted.iter().map(|d| d.name.as_str()).collect();
        format!("{}: {}", names.len(), names.join(", "))
    }

    /// The excused items' names, comma-separated (empty if none).
    pub fn excused_value(&self) -> String {
        let names: Vec<&str> = self.excused.iter().map(|e| e.name.as_str()).collect();
        names.join(", ")
    }

    /// One line per item for the console, drifted first, then the remedy: the caller puts
    /// its own header (what it did not start) and footer (where the status file is) around it.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut head = String::new();
        let _ = write!(
            head,
            "running kernel {}",
            if self.kernel_release.is_empty() {
                "(unknown)"
            } else {
                &self.kernel_release
            }
        );
        if let Some(t) = self.target {
            let _ = write!(head, ", target {t}");
        }
        if let Some(p) = &self.pinned_release {
            let _ = write!(head, ", pinned kernel {p}");
        }
        if self.drifted.is_empty() {
            let _ = write!(head, ": matches the image's kernel pins");
        } else {
            let _ = write!(
                head,
                ": {} item(s) differ from the image's kernel pins",
                self.drifted.len()
            );
        }
        out.push(head);
        for d in &self.drifted {
            out.push(format!(
                "  DRIFT {}: wanted {}, found {}: {}",
                d.name, d.wanted, d.found, d.reason
            ));
        }
        for e in &self.excused {
            out.push(format!(
                "  excused ({}) {}: wanted {}, found {}: {}",
                e.reason, e.name, e.wanted, e.found, e.detail
            ));
        }
        if !self.remedy.is_empty() {
            out.push(format!("what to do: {}", self.remedy));
        }
        out
    }

    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("plain data serialises");
        text.push('\n');
        text
    }
}

fn remedy(target: Target, pinned: Option<&str>) -> String {
    let kernel = pinned.map_or("the image's pinned kernel".to_string(), |r| {
        format!("the image's pinned kernel {r}")
    });
    match target {
        // WSL shares one kernel between distributions and `.wslconfig` picks it.
        Target::Wsl2 => format!(
            "boot {kernel}: point `kernel=` in %UserProfile%\\.wslconfig at the kernel shipped \
             with the image and keep its `kernelCommandLine` (the image's .wslconfig snippet), \
             run `wsl --shutdown`, then start the distribution again"
        ),
        Target::Hyperv | Target::Qemu => format!(
            "boot {kernel} with the image's own initramfs and command line, unchanged, and \
             restart the VM (boot applies the hardening again)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::ProbeRow;

    fn row(kind: ProbeKind, name: &str, status: ProbeStatus, modules: &[&str]) -> ProbeRow {
        ProbeRow {
            kind,
            name: name.into(),
            wanted: "w".into(),
            found: "f".into(),
            status,
            note: String::new(),
            modules: modules.iter().map(|m| m.to_string()).collect(),
        }
    }

    fn drift(why: &str) -> ProbeStatus {
        ProbeStatus::Drift(why.into())
    }

    fn module_row(name: &str) -> ProbeRow {
        let mut r = row(ProbeKind::Module, name, drift("not loaded"), &[name]);
        r.wanted = "loaded".into();
        r.found = "not loaded".into();
        r
    }

    fn report(target: Target, rows: Vec<ProbeRow>) -> ProbeReport {
        let mut all = vec![ProbeRow {
            kind: ProbeKind::Release,
            name: "kernel release".into(),
            wanted: "6.12.107+deb12-cloud-amd64".into(),
            found: "6.12.107+deb12-cloud-amd64".into(),
            status: ProbeStatus::Ok,
            note: String::new(),
            modules: Vec::new(),
        }];
        all.extend(rows);
        ProbeReport {
            target,
            phase: Phase::AfterModuleLock,
            kernel_release: "6.12.107+deb12-cloud-amd64".into(),
            kernel_version: None,
            config_source: None,
            profile: None,
            rows: all,
        }
    }

    fn failure(name: &str, errno: Option<i32>, depends: &[&str]) -> ModuleFailure {
        ModuleFailure {
            name: name.into(),
            errno,
            depends: depends.iter().map(|d| d.to_string()).collect(),
            skipped: false,
        }
    }

    fn skipped(name: &str, depends: &[&str]) -> ModuleFailure {
        ModuleFailure {
            skipped: true,
            ..failure(name, None, depends)
        }
    }

    /// eci-init does not try a module whose dependency failed (issue 13): such a module counts
    /// as its dependency does, hardware-absent or not, and a module that could not be read is
    /// still never hardware-absent.
    #[test]
    fn modules_not_tried_after_their_dependency_failed_count_like_it() {
        let failures = vec![
            failure("hv_vmbus", Some(ENODEV), &[]),
            skipped("hv_netvsc", &["hv_vmbus"]),
            skipped("hid_hyperv", &["hv_netvsc"]),
            failure("veth", Some(1), &[]),
            skipped("br_netfilter", &["veth"]),
            failure("fuse", None, &[]),
        ];
        let absent = HardwareAbsent::from_failures(&failures);
        assert_eq!(
            absent.names().collect::<Vec<_>>(),
            ["hid_hyperv", "hv_netvsc", "hv_vmbus"]
        );
        assert!(absent
            .why("hv_netvsc")
            .unwrap()
            .contains("not loaded because it needs hv_vmbus"));
        let json = serde_json::to_string(&failures[1]).unwrap();
        let back: ModuleFailure = serde_json::from_str(&json).unwrap();
        assert_eq!(back, failures[1]);
        let old: ModuleFailure =
            serde_json::from_str(r#"{"name":"x","errno":2,"depends":[]}"#).unwrap();
        assert!(!old.skipped, "a record without the field was a real load");
    }

    /// What the hyperv image's boot under QEMU produces: hv_vmbus finds no VMBus, everything
    /// built on it cannot resolve its symbols.
    fn hyperv_under_qemu() -> Vec<ModuleFailure> {
        vec![
            failure("hv_vmbus", Some(ENODEV), &[]),
            failure("hv_storvsc", Some(ENOENT), &["scsi_mod", "hv_vmbus"]),
            failure("hv_netvsc", Some(ENOENT), &["hv_vmbus"]),
            failure("hv_sock", Some(ENOENT), &["vsock", "hv_vmbus"]),
            failure("hyperv-keyboard", Some(ENOENT), &["hv_vmbus"]),
            failure("pci-hyperv", Some(ENOENT), &["pci-hyperv-intf", "hv_vmbus"]),
        ]
    }

    #[test]
    fn enodev_enxio_and_their_dependents_are_hardware_absent_nothing_else() {
        let mut failures = hyperv_under_qemu();
        failures.extend([
            failure("vmw_vmci", Some(ENXIO), &[]),
            // Unresolved symbols with no hardware-absent dependency: a broken module.
            failure("overlay", Some(ENOENT), &[]),
            // Refused by signature checking or lockdown.
            failure("veth", Some(1), &[]),
            failure("bridge", Some(-1), &[]),
            // The file is not in the image.
            failure("fuse", None, &[]),
            // Needs a hardware-absent module and one that failed otherwise.
            failure("br_netfilter", Some(ENOENT), &["hv_vmbus", "veth"]),
            // A chain: needs a dependent that is only absent through hv_vmbus.
            failure("hid_hyperv", Some(ENOENT), &["hv_netvsc"]),
        ]);
        let absent = HardwareAbsent::from_failures(&failures);
        let names: Vec<&str> = absent.names().collect();
        assert_eq!(
            names,
            [
                "hid_hyperv",
                "hv_netvsc",
                "hv_sock",
                "hv_storvsc",
                "hv_vmbus",
                "hyperv_keyboard",
                "pci_hyperv",
                "vmw_vmci"
            ]
        );
        assert!(
            absent.contains("hyperv-keyboard"),
            "dashes and underscores are one name"
        );
        assert!(absent.why("hv_vmbus").unwrap().contains("ENODEV"));
        assert!(absent.why("vmw_vmci").unwrap().contains("ENXIO"));
        assert!(absent
            .why("hv_storvsc")
            .unwrap()
            .contains("ENOENT because it needs hv_vmbus"));
        for other in ["overlay", "veth", "bridge", "fuse", "br_netfilter"] {
            assert!(!absent.contains(other), "{other}");
        }
        // Without the ENODEV root, the same ENOENTs excuse nothing.
        let absent = HardwareAbsent::from_failures(&hyperv_under_qemu()[1..]);
        assert!(absent.is_empty(), "{absent:?}");
    }

    #[test]
    fn missing_hyperv_drivers_are_excused_and_the_image_may_start() {
        let r = report(
            Target::Hyperv,
            vec![
                module_row("hv_vmbus"),
                module_row("hv_storvsc"),
                module_row("hyperv_keyboard"),
                row(
                    ProbeKind::Sysctl,
                    "kernel.kptr_restrict",
                    ProbeStatus::Ok,
                    &[],
                ),
            ],
        );
        let v = DriftVerdict::new(&r, &HardwareAbsent::from_failures(&hyperv_under_qemu()));
        assert_eq!(v.isolation, Isolation::Allowed, "{v:?}");
        assert!(v.drifted.is_empty());
        assert_eq!(v.excused.len(), 3);
        assert!(v.excused.iter().all(|e| e.reason == HARDWARE_ABSENT));
        assert!(v.excused[0].detail.contains("ENODEV"), "{:?}", v.excused[0]);
        assert_eq!(v.selftest_value(), "none");
        assert_eq!(v.excused_value(), "hv_vmbus, hv_storvsc, hyperv_keyboard");
        assert!(v.remedy.is_empty());
        assert_eq!(
            v.pinned_release.as_deref(),
            Some("6.12.107+deb12-cloud-amd64")
        );
        let json: serde_json::Value = serde_json::from_str(&v.to_json()).unwrap();
        assert_eq!(json["isolation"], "allowed");
        assert_eq!(json["excused"][0]["reason"], "hardware absent");
        assert!(json.get("remedy").is_none());
    }

    #[test]
    fn every_other_drift_refuses_and_is_named() {
        let absent = HardwareAbsent::from_failures(&hyperv_under_qemu());
        let mut release = row(
            ProbeKind::Release,
            "kernel release",
            drift("the running kernel is 6.12.999, the pinned kernel is 6.12.107"),
            &[],
        );
        release.wanted = "6.12.107+deb12-cloud-amd64".into();
        release.found = "6.12.999".into();
        let r = report(
            Target::Hyperv,
            vec![
                module_row("hv_vmbus"),
                // A module that failed for another reason, and one that is simply not there.
                module_row("overlay"),
                module_row("veth"),
                release,
                row(
                    ProbeKind::Config,
                    "CONFIG_USER_NS",
                    drift("not set; wanted built in"),
                    &[],
                ),
                row(
                    ProbeKind::Sysctl,
                    "kernel.kptr_restrict",
                    drift("kernel.kptr_restrict is 0, wanted >=1"),
                    &[],
                ),
                row(
                    ProbeKind::Version,
                    "kernel >= 6.1",
                    drift("needs Linux 6.1 or newer"),
                    &[],
                ),
                // A feature row with a hardware-absent module and another cause is drift.
                row(
                    ProbeKind::Feature,
                    "CONFIG_HYPERV_NET",
                    drift("gone"),
                    &["hv_netvsc", "overlay"],
                ),
                // A row without named modules is never excused, whatever its text says.
                row(ProbeKind::Feature, "CONFIG_HYPERV", drift("hv_vmbus"), &[]),
            ],
        );
        let v = DriftVerdict::new(&r, &absent);
        assert_eq!(v.isolation, Isolation::Refused);
        let names: Vec<&str> = v.drifted.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "overlay",
                "veth",
                "kernel release",
                "CONFIG_USER_NS",
                "kernel.kptr_restrict",
                "kernel >= 6.1",
                "CONFIG_HYPERV_NET",
                "CONFIG_HYPERV"
            ]
        );
        assert_eq!(v.excused.len(), 1);
        assert_eq!(
            v.selftest_value(),
            "8: overlay, veth, kernel release, CONFIG_USER_NS, kernel.kptr_restrict, \
             kernel >= 6.1, CONFIG_HYPERV_NET, CONFIG_HYPERV"
        );
        let lines = v.lines();
        assert!(lines[0].contains("8 item(s) differ"), "{lines:?}");
        assert!(lines[0].contains("pinned kernel 6.12.107+deb12-cloud-amd64"));
        assert!(lines.iter().any(|l| l
            == "  DRIFT kernel.kptr_restrict: wanted w, found f: kernel.kptr_restrict is 0, wanted >=1"));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("  excused (hardware absent) hv_vmbus")));
        let last = lines.last().unwrap();
        assert!(
            last.starts_with("what to do: boot the image's pinned kernel 6.12.107"),
            "{last}"
        );
        let json: serde_json::Value = serde_json::from_str(&v.to_json()).unwrap();
        assert_eq!(json["isolation"], "refused");
        assert_eq!(json["drifted"][4]["kind"], "sysctl");
        assert_eq!(json["drifted"][4]["wanted"], "w");
        assert_eq!(json["drifted"][4]["found"], "f");
        assert!(json["drifted"][4]["reason"]
            .as_str()
            .unwrap()
            .contains("is 0"));
    }

    #[test]
    fn nothing_is_excused_without_failures_and_wsl_says_how_to_fix_wslconfig() {
        let r = report(Target::Wsl2, vec![module_row("hv_vmbus")]);
        let v = DriftVerdict::new(&r, &HardwareAbsent::default());
        assert!(v.is_refused());
        assert_eq!(v.selftest_value(), "1: hv_vmbus");
        assert!(v.remedy.contains(".wslconfig") && v.remedy.contains("wsl --shutdown"));
    }

    #[test]
    fn a_probe_that_could_not_run_refuses() {
        let v = DriftVerdict::probe_failed(
            None,
            "no kernel pins file",
            "cannot read /etc/eci/kernel-pins.json: No such file or directory",
        );
        assert!(v.is_refused());
        assert_eq!(v.selftest_value(), "unknown: no kernel pins file");
        assert!(v.lines()[0].starts_with("running kernel (unknown): 1 item(s) differ"));
        assert!(v.lines()[1].contains("kernel-pins.json"));
        let json: serde_json::Value = serde_json::from_str(&v.to_json()).unwrap();
        assert_eq!(json["drifted"][0]["kind"], "probe");
    }
}
