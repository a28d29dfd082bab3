//! Checking a kernel config against a target's pins.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::Serialize;

use crate::error::CheckError;
use crate::fragment::{normalize_module, Requirement, Term, Want};
use crate::kconfig::{KernelConfig, Value};
use crate::profile::{Condition, Profile, RuntimeCondition};
use crate::target::{Pins, Target};
use crate::version::KernelVersion;

/// Which kernel exception profile to apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ProfileSelection {
    /// The profile (listing the target) whose release patterns match the kernel release, if
    /// any. Without a known release no profile applies.
    #[default]
    Auto,
    /// No exceptions: the strict pin.
    Disabled,
    /// This profile; an error if it does not exist for the target or does not match the release.
    Named(String),
}

/// Inputs besides the config itself.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Modules the image loads at boot before module loading is disabled (the image
    /// definition's `kernel.modules`). Only these make an `=m` acceptable.
    pub boot_modules: Vec<String>,
    /// `uname -r` form, e.g. `6.12.107+deb12-cloud-amd64`. Defaults to the config's own
    /// (from a `config-RELEASE` file name).
    pub kernel_release: Option<String>,
    /// Overrides the version from the config header.
    pub kernel_version: Option<KernelVersion>,
    pub profile: ProfileSelection,
}

/// The verdict on one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "snake_case")]
pub enum Status {
    Ok,
    /// The pin is not met, but an exception of the applied profile holds; the detail says
    /// which compensating controls it relies on.
    Compensated(String),
    /// The pin does not apply to this kernel (an `if-known` symbol it does not have).
    NotApplicable(String),
    Violation(String),
}

impl Status {
    fn rank(&self) -> u8 {
        match self {
            Status::Violation(_) => 0,
            Status::Compensated(_) => 1,
            Status::NotApplicable(_) => 2,
            Status::Ok => 3,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Compensated(_) => "compensated",
            Status::NotApplicable(_) => "n/a",
            Status::Violation(_) => "VIOLATION",
        }
    }

    fn detail(&self) -> Option<&str> {
        match self {
            Status::Ok => None,
            Status::Compensated(d) | Status::NotApplicable(d) | Status::Violation(d) => Some(d),
        }
    }

    pub fn is_violation(&self) -> bool {
        matches!(self, Status::Violation(_))
    }
}

/// One checked pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// `CONFIG_USER_NS`, `CONFIG_A || CONFIG_B`, or `kernel version`.
    pub option: String,
    pub wanted: String,
    pub found: String,
    /// Why the VM needs this (from the fragment).
    pub reason: String,
    /// Fragment name, e.g. `container`.
    pub fragment: String,
    pub line: usize,
    #[serde(flatten)]
    pub status: Status,
    /// Modules this row relies on being loaded at boot (it was found as `=m`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub boot_modules: Vec<String>,
}

/// Run-time state that compensations rely on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuntimeRequirement {
    pub condition: RuntimeCondition,
    /// Rows (option labels) whose compensation needs it.
    pub required_by: Vec<String>,
}

/// The result of a check.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: Target,
    pub origin: String,
    pub kernel_version: Option<KernelVersion>,
    pub kernel_release: Option<String>,
    /// The exception profile applied, if any.
    pub profile: Option<String>,
    pub rows: Vec<Row>,
    pub runtime_requirements: Vec<RuntimeRequirement>,
    pub warnings: Vec<String>,
}

impl Pins {
    /// Checks `config` against these pins.
    pub fn check(&self, config: &KernelConfig, opts: &CheckOptions) -> Result<Report, CheckError> {
        let release = opts
            .kernel_release
            .clone()
            .or_else(|| config.release().map(str::to_string));
        let release_version = release.as_deref().and_then(KernelVersion::from_release);
        let version = opts.kernel_version.or(config.version()).or(release_version);
        let profile = self.select_profile(&opts.profile, release.as_deref())?;
        let boot: BTreeSet<String> = opts
            .boot_modules
            .iter()
            .map(|m| normalize_module(m))
            .collect();

        let mut report = Report {
            target: self.target,
            origin: config.origin().to_string(),
            kernel_version: version,
            kernel_release: release.clone(),
            profile: profile.map(|p| p.name.clone()),
            rows: Vec::new(),
            runtime_requirements: Vec::new(),
            warnings: config.warnings().to_vec(),
        };

        if let (Some(header), Some(rel_v), Some(rel)) =
            (config.version(), release_version, release.as_deref())
        {
            let status = if header == rel_v {
                Status::Ok
            } else {
                Status::Violation(format!(
                    "the config header says Linux {header} but the kernel release is {rel}: \
                     this config does not belong to that kernel"
                ))
            };
            report.rows.push(Row {
                option: "kernel version".into(),
                wanted: format!("{rel_v} (release {rel})"),
                found: format!("{header} (config header)"),
                reason: "the config checked must be the kernel's own".into(),
                fragment: "-".into(),
                line: 0,
                status,
                boot_modules: Vec::new(),
            });
        }
        for pin in &self.version_pins {
            let status = version_status(version, pin.min, &pin.reason);
            report.rows.push(Row {
                option: format!("kernel >= {}", pin.min),
                wanted: format!(">={}", pin.min),
                found: version.map_or("unknown".into(), |v| v.to_string()),
                reason: pin.reason.clone(),
                fragment: pin.fragment.clone(),
                line: pin.line,
                status: status.unwrap_or(Status::Ok),
                boot_modules: Vec::new(),
            });
        }

        let mut used_exceptions = BTreeSet::new();
        for req in &self.requirements {
            let row = self.check_requirement(
                req,
                config,
                &boot,
                version,
                profile,
                &mut report.runtime_requirements,
                &mut used_exceptions,
            );
            report.rows.push(row);
        }

        if let Some(profile) = profile {
            for e in &profile.exceptions {
                let pinned = self.requirement(&e.option).is_some();
                if pinned && !used_exceptions.contains(&e.option) {
                    report.warnings.push(format!(
                        "{}:{}: the exception for CONFIG_{} is unused: the kernel meets the pin \
                         without it; remove it from profile {}",
                        profile.file, e.line, e.option, profile.name
                    ));
                }
            }
        }
        Ok(report)
    }

    fn select_profile(
        &self,
        selection: &ProfileSelection,
        release: Option<&str>,
    ) -> Result<Option<&Profile>, CheckError> {
        match selection {
            ProfileSelection::Disabled => Ok(None),
            ProfileSelection::Auto => {
                Ok(release.and_then(|r| self.profiles.iter().find(|p| p.matches_release(r))))
            }
            ProfileSelection::Named(name) => {
                let profile = self
                    .profile(name)
                    .ok_or_else(|| CheckError::UnknownProfile {
                        name: name.clone(),
                        target: self.target.to_string(),
                        known: if self.profiles.is_empty() {
                            "none".into()
                        } else {
                            self.profiles
                                .iter()
                                .map(|p| p.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        },
                    })?;
                let release =
                    release.ok_or_else(|| CheckError::ReleaseUnknown { name: name.clone() })?;
                if !profile.matches_release(release) {
                    return Err(CheckError::ProfileMismatch {
                        name: name.clone(),
                        patterns: profile.releases.join(" "),
                        release: release.to_string(),
                    });
                }
                Ok(Some(profile))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_requirement(
        &self,
        req: &Requirement,
        config: &KernelConfig,
        boot: &BTreeSet<String>,
        version: Option<KernelVersion>,
        profile: Option<&Profile>,
        runtime: &mut Vec<RuntimeRequirement>,
        used_exceptions: &mut BTreeSet<String>,
    ) -> Row {
        let label = req.option_label();
        let results: Vec<TermResult> = req
            .terms
            .iter()
            .map(|t| eval_term(t, config, boot))
            .collect();
        let found = if results.len() == 1 {
            results[0].found.clone()
        } else {
            req.terms
                .iter()
                .zip(&results)
                .map(|(t, r)| format!("{}={}", t.option, r.found))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut wanted = req.wanted_label();
        if let Some(min) = req.min_version {
            let _ = write!(wanted, ", Linux>={min}");
        }
        let mut row = Row {
            option: label.clone(),
            wanted,
            found,
            reason: req.reason.clone(),
            fragment: req.fragment.clone(),
            line: req.line,
            status: Status::Ok,
            boot_modules: Vec::new(),
        };

        if req.if_known && req.terms.iter().all(|t| config.get(&t.option).is_none()) {
            row.status = Status::NotApplicable(
                "this kernel's config does not have the symbol; the pin applies only to \
                 kernels that do"
                    .into(),
            );
            return row;
        }

        if let Some(ok) = results.iter().find(|r| r.ok) {
            row.boot_modules = ok.boot_modules.clone();
        } else {
            let problems = req
                .terms
                .iter()
                .zip(&results)
                .map(|(t, r)| {
                    if results.len() == 1 {
                        r.problem.clone()
                    } else {
                        format!("CONFIG_{}: {}", t.option, r.problem)
                    }
                })
                .collect::<Vec<_>>()
                .join("; ");
            let exception = profile.and_then(|p| {
                req.terms
                    .iter()
                    .find_map(|t| p.exception_for(&t.option))
                    .map(|e| (p, e))
            });
            row.status = match exception {
                None => Status::Violation(problems),
                Some((p, e)) => {
                    used_exceptions.insert(e.option.clone());
                    let mut failures = Vec::new();
                    let mut modules = Vec::new();
                    let mut runtime_here = Vec::new();
                    for cond in &e.conditions {
                        match cond {
                            Condition::Config { term } => {
                                let r = eval_term(term, config, boot);
                                if !r.ok {
                                    failures.push(format!("{term}: {}", r.problem));
                                }
                            }
                            Condition::Module { name } => {
                                let built_as_module = req
                                    .terms
                                    .iter()
                                    .any(|t| config.get(&t.option) == Some(&Value::Module));
                                if !built_as_module {
                                    failures.push(format!(
                                        "module:{name} needs the option built as a module"
                                    ));
                                } else if !boot.contains(name) {
                                    failures.push(format!(
                                        "add {name} to kernel.modules in the image definition \
                                         (the exception relies on it being loaded at boot)"
                                    ));
                                } else {
                                    modules.push(name.clone());
                                }
                            }
                            Condition::Runtime { condition } => {
                                runtime_here.push(condition.clone())
                            }
                            Condition::Spec { .. } => {}
                        }
                    }
                    if failures.is_empty() {
                        for condition in runtime_here {
                            add_runtime(runtime, condition, &label);
                        }
                        row.boot_modules = modules;
                        let conds = e
                            .conditions
                            .iter()
                            .map(|c| c.to_string())
                            .collect::<Vec<_>>()
                            .join(", ");
                        Status::Compensated(format!(
                            "{problems}; compensated by {conds} ({}: {})",
                            p.name, e.reason
                        ))
                    } else {
                        Status::Violation(format!(
                            "{problems}; the exception at {}:{} does not hold: {}",
                            p.file,
                            e.line,
                            failures.join("; ")
                        ))
                    }
                }
            };
        }

        if !row.status.is_violation() {
            if let Some(min) = req.min_version {
                if let Some(status) = version_status(version, min, &req.reason) {
                    row.status = status;
                }
            }
        }
        row
    }
}

fn version_status(version: Option<KernelVersion>, min: KernelVersion, why: &str) -> Option<Status> {
    match version {
        Some(v) if v >= min => None,
        Some(v) => Some(Status::Violation(format!(
            "needs Linux {min} or newer ({why}); the kernel is {v}"
        ))),
        None => Some(Status::Violation(format!(
            "needs Linux {min} or newer, but the kernel version is unknown: pass it, or check a \
             config that has its `# Linux/ARCH X.Y.Z Kernel Configuration` header"
        ))),
    }
}

fn add_runtime(list: &mut Vec<RuntimeRequirement>, condition: RuntimeCondition, by: &str) {
    if let Some(existing) = list.iter_mut().find(|r| r.condition == condition) {
        if !existing.required_by.iter().any(|b| b == by) {
            existing.required_by.push(by.to_string());
        }
    } else {
        list.push(RuntimeRequirement {
            condition,
            required_by: vec![by.to_string()],
        });
    }
}

struct TermResult {
    ok: bool,
    found: String,
    problem: String,
    boot_modules: Vec<String>,
}

fn eval_term(term: &Term, config: &KernelConfig, boot: &BTreeSet<String>) -> TermResult {
    let value = config.get(&term.option);
    let found = match value {
        None => "absent".to_string(),
        Some(v) => v.to_string(),
    };
    let mut result = TermResult {
        ok: false,
        found,
        problem: String::new(),
        boot_modules: Vec::new(),
    };
    let missing = |value: Option<&Value>| match value {
        None => "absent from the config".to_string(),
        Some(Value::NotSet) => "not set".to_string(),
        Some(v) => format!("is {v}"),
    };
    match (&term.want, value) {
        (Want::BuiltIn, Some(Value::Yes)) => result.ok = true,
        (Want::BuiltIn, Some(Value::Module)) => {
            result.problem = "built as a module; this pin needs it built in (=y)".into()
        }
        (Want::BuiltIn, v) => result.problem = format!("{}; wanted built in (=y)", missing(v)),
        (Want::BuiltInOrModule(_), Some(Value::Yes)) => result.ok = true,
        (Want::BuiltInOrModule(mods), Some(Value::Module)) => {
            let absent: Vec<&String> = mods.iter().filter(|m| !boot.contains(*m)).collect();
            if absent.is_empty() {
                result.ok = true;
                result.boot_modules = mods.clone();
            } else {
                let names = absent
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                result.problem = format!(
                    "built as a module, but {names} is not loaded at boot: add {names} to \
                     kernel.modules in the image definition or build it in"
                );
            }
        }
        (Want::BuiltInOrModule(_), v) => {
            result.problem = format!("{}; wanted built in or a boot-loaded module", missing(v))
        }
        (Want::Unset, None | Some(Value::NotSet)) => result.ok = true,
        (Want::Unset, Some(Value::Yes)) => {
            result.problem = "is set (=y); it must not be set".into()
        }
        (Want::Unset, Some(Value::Module)) => {
            result.problem = "is built as a module (=m); it must not be set".into()
        }
        (Want::Unset, Some(v)) => result.problem = format!("has value {v}; it must not be set"),
        (Want::Str(want), Some(Value::Str(have))) if want == have => result.ok = true,
        (Want::Str(want), v) => result.problem = format!("{}; wanted {want:?}", missing(v)),
        (Want::Equals(n), Some(v)) if v.as_number() == Some(*n) => result.ok = true,
        (Want::Equals(n), v) => result.problem = format!("{}; wanted {n}", missing(v)),
        (Want::AtLeast(n), Some(v)) if v.as_number().is_some_and(|x| x >= *n) => result.ok = true,
        (Want::AtLeast(n), v) => result.problem = format!("{}; wanted at least {n}", missing(v)),
    }
    result
}

#[derive(Serialize)]
struct Summary {
    ok: usize,
    compensated: usize,
    not_applicable: usize,
    violations: usize,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    passed: bool,
    summary: Summary,
    #[serde(flatten)]
    report: &'a Report,
}

impl Report {
    /// No row is a violation.
    pub fn is_ok(&self) -> bool {
        !self.rows.iter().any(|r| r.status.is_violation())
    }

    pub fn violations(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| r.status.is_violation())
    }

    /// The row for an option (`USER_NS` or `CONFIG_USER_NS`), including alternatives rows.
    pub fn row(&self, option: &str) -> Option<&Row> {
        let name = option.strip_prefix("CONFIG_").unwrap_or(option);
        let full = format!("CONFIG_{name}");
        self.rows
            .iter()
            .find(|r| r.option == full || r.option.split(" || ").any(|o| o == full))
    }

    fn summary(&self) -> Summary {
        let count = |rank: u8| self.rows.iter().filter(|r| r.status.rank() == rank).count();
        Summary {
            violations: count(0),
            compensated: count(1),
            not_applicable: count(2),
            ok: count(3),
        }
    }

    /// A human-readable table: violations first, then compensated rows, then the rest.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let version = self
            .kernel_version
            .map_or("version unknown".into(), |v| format!("Linux {v}"));
        let _ = write!(
            out,
            "Kernel config check, target {}: {} ({}",
            self.target, self.origin, version
        );
        if let Some(release) = &self.kernel_release {
            let _ = write!(out, ", release {release}");
        }
        match &self.profile {
            Some(p) => {
                let _ = write!(out, ", exception profile {p}");
            }
            None => out.push_str(", no exception profile"),
        }
        out.push_str(")\n\n");

        let mut rows: Vec<&Row> = self.rows.iter().collect();
        rows.sort_by_key(|r| r.status.rank());
        let headers = ["STATUS", "OPTION", "WANTED", "FOUND", "FRAGMENT"];
        let cells: Vec<[String; 5]> = rows
            .iter()
            .map(|r| {
                [
                    r.status.label().to_string(),
                    r.option.clone(),
                    r.wanted.clone(),
                    r.found.clone(),
                    r.fragment.clone(),
                ]
            })
            .collect();
        let mut widths = headers.map(str::len);
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |out: &mut String, cols: [&str; 5], reason: &str| {
            for (col, w) in cols.iter().zip(widths) {
                let _ = write!(out, "{col:<w$}  ");
            }
            let _ = writeln!(out, "{reason}");
        };
        line(&mut out, headers, "REASON");
        let indent = widths[0] + 2;
        for (row, c) in rows.iter().zip(&cells) {
            line(&mut out, [&c[0], &c[1], &c[2], &c[3], &c[4]], &row.reason);
            if let Some(detail) = row.status.detail() {
                let _ = writeln!(out, "{:indent$}-> {detail}", "");
            }
        }

        if !self.runtime_requirements.is_empty() {
            out.push_str(
                "\nRun-time requirements of the compensations (the VM init establishes them; the \
                 run-time probe verifies them):\n",
            );
            for r in &self.runtime_requirements {
                let _ = writeln!(out, "  {}  (for {})", r.condition, r.required_by.join(", "));
            }
        }
        if !self.warnings.is_empty() {
            out.push_str("\nWarnings:\n");
            for w in &self.warnings {
                let _ = writeln!(out, "  {w}");
            }
        }
        let s = self.summary();
        let _ = writeln!(
            out,
            "\n{}: {} violation(s), {} compensated, {} ok, {} not applicable",
            if self.is_ok() { "PASS" } else { "FAIL" },
            s.violations,
            s.compensated,
            s.ok,
            s.not_applicable
        );
        out
    }

    /// The report as JSON, with `passed` and a `summary` of the counts.
    pub fn to_json(&self) -> String {
        let doc = JsonReport {
            passed: self.is_ok(),
            summary: self.summary(),
            report: self,
        };
        serde_json::to_string_pretty(&doc).expect("a report always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fragment::Fragment;
    use crate::profile::Profile;

    fn pins(fragment: &str, profile: Option<&str>) -> Pins {
        Pins {
            target: Target::Qemu,
            requirements: Fragment::parse("test", "test.config", fragment)
                .unwrap()
                .requirements,
            version_pins: Fragment::parse("test", "test.config", fragment)
                .unwrap()
                .version_pins,
            profiles: profile
                .map(|p| vec![Profile::parse("p.exceptions", p).unwrap()])
                .unwrap_or_default(),
        }
    }

    fn config(text: &str) -> KernelConfig {
        KernelConfig::parse(
            &format!("# Linux/x86 6.12.107 Kernel Configuration\n{text}"),
            "crafted",
        )
        .unwrap()
    }

    fn opts(modules: &[&str]) -> CheckOptions {
        CheckOptions {
            boot_modules: modules.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn status<'a>(r: &'a Report, option: &str) -> &'a Status {
        &r.row(option)
            .unwrap_or_else(|| panic!("no row {option}"))
            .status
    }

    const FRAG: &str = "\
CONFIG_USER_NS=y  # user namespaces
CONFIG_OVERLAY_FS=y|m:overlay  min-version=5.19  # layers
# CONFIG_DEVMEM is not set  # raw memory
CONFIG_MMAP_MIN>=65536  # null pages
CONFIG_DRM_HYPERV=y|m:hyperv_drm || CONFIG_FB_HYPERV=y|m:hyperv_fb  # console
CONFIG_NEW_SYMBOL=y  if-known  # newer kernels only
";

    #[test]
    fn all_satisfied() {
        let r = pins(FRAG, None)
            .check(
                &config(
                    "CONFIG_USER_NS=y\nCONFIG_OVERLAY_FS=y\n# CONFIG_DEVMEM is not set\n\
                     CONFIG_MMAP_MIN=65536\nCONFIG_FB_HYPERV=m\n",
                ),
                &opts(&["hyperv_fb"]),
            )
            .unwrap();
        assert!(r.is_ok(), "{}", r.render_table());
        assert!(matches!(status(&r, "NEW_SYMBOL"), Status::NotApplicable(_)));
        assert_eq!(r.row("FB_HYPERV").unwrap().boot_modules, vec!["hyperv_fb"]);
        assert_eq!(
            r.row("DRM_HYPERV").unwrap().found,
            "DRM_HYPERV=absent, FB_HYPERV=m"
        );
    }

    #[test]
    fn verdicts_on_crafted_configs() {
        let p = pins(FRAG, None);
        // missing option, module not listed, forbidden option set, number too small
        let r = p
            .check(
                &config(
                    "CONFIG_OVERLAY_FS=m\nCONFIG_DEVMEM=y\nCONFIG_MMAP_MIN=4096\n\
                     CONFIG_FB_HYPERV=m\n# CONFIG_NEW_SYMBOL is not set\n",
                ),
                &opts(&[]),
            )
            .unwrap();
        assert!(!r.is_ok());
        let Status::Violation(d) = status(&r, "USER_NS") else {
            panic!()
        };
        assert!(d.contains("absent"), "{d}");
        let Status::Violation(d) = status(&r, "OVERLAY_FS") else {
            panic!()
        };
        assert!(
            d.contains("add overlay to kernel.modules in the image definition or build it in"),
            "{d}"
        );
        let Status::Violation(d) = status(&r, "DEVMEM") else {
            panic!()
        };
        assert!(d.contains("must not be set"), "{d}");
        let Status::Violation(d) = status(&r, "MMAP_MIN") else {
            panic!()
        };
        assert!(d.contains("at least 65536"), "{d}");
        let Status::Violation(d) = status(&r, "FB_HYPERV") else {
            panic!()
        };
        assert!(
            d.contains("CONFIG_DRM_HYPERV: absent") && d.contains("hyperv_fb"),
            "{d}"
        );
        // `is not set` means the kernel knows the symbol, so if-known applies
        let Status::Violation(d) = status(&r, "NEW_SYMBOL") else {
            panic!()
        };
        assert!(d.contains("not set"), "{d}");

        // the same module listed: now fine; built in: fine without listing
        let r = p
            .check(&config("CONFIG_OVERLAY_FS=m\n"), &opts(&["overlay"]))
            .unwrap();
        assert_eq!(status(&r, "OVERLAY_FS"), &Status::Ok);
        let r = p
            .check(&config("CONFIG_OVERLAY_FS=y\n"), &opts(&[]))
            .unwrap();
        assert_eq!(status(&r, "OVERLAY_FS"), &Status::Ok);
        // module where built-in is required
        let r = p.check(&config("CONFIG_USER_NS=m\n"), &opts(&[])).unwrap();
        let Status::Violation(d) = status(&r, "USER_NS") else {
            panic!()
        };
        assert!(d.contains("built in"), "{d}");
        // `is not set` for a wanted option
        let r = p
            .check(&config("# CONFIG_USER_NS is not set\n"), &opts(&[]))
            .unwrap();
        assert_eq!(r.row("USER_NS").unwrap().found, "not set");
        assert!(status(&r, "USER_NS").is_violation());
    }

    #[test]
    fn min_version_against_header_and_override() {
        let p = pins(
            "CONFIG_OVERLAY_FS=y|m:overlay  min-version=5.19  # idmapped layers\n\
             @min-version 5.12  # mount_setattr\n",
            None,
        );
        let old = KernelConfig::parse(
            "# Linux/x86 5.15.0 Kernel Configuration\nCONFIG_OVERLAY_FS=y\n",
            "old",
        )
        .unwrap();
        let r = p.check(&old, &opts(&[])).unwrap();
        let Status::Violation(d) = status(&r, "OVERLAY_FS") else {
            panic!()
        };
        assert!(
            d.contains("5.19.0") && d.contains("5.15.0") && d.contains("idmapped"),
            "{d}"
        );
        assert_eq!(
            r.rows
                .iter()
                .find(|r| r.option == "kernel >= 5.12.0")
                .unwrap()
                .status,
            Status::Ok
        );
        let r = p
            .check(
                &old,
                &CheckOptions {
                    kernel_version: Some(KernelVersion::new(6, 1, 0)),
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(r.is_ok());
        let headerless = KernelConfig::parse("CONFIG_OVERLAY_FS=y\n", "bare").unwrap();
        let r = p.check(&headerless, &opts(&[])).unwrap();
        assert!(r.violations().all(|v| match &v.status {
            Status::Violation(d) => d.contains("version is unknown"),
            _ => false,
        }));
        assert_eq!(r.violations().count(), 2);
    }

    const PROFILE: &str = "\
profile crafted  # crafted
release 6.12.*+crafted  # r
targets qemu  # t
CONFIG_DEVMEM  CONFIG_STRICT_DEVMEM=y  lockdown:integrity  # strict devmem plus lockdown
CONFIG_USER_NS  module:userns  # pretend
CONFIG_MMAP_MIN  sysctl:vm.mmap_min_addr>=65536  # sysctl raises it
";

    #[test]
    fn exceptions_compensate_only_when_their_conditions_hold() {
        let p = pins(FRAG, Some(PROFILE));
        let c = config(
            "CONFIG_USER_NS=m\nCONFIG_OVERLAY_FS=y\nCONFIG_DEVMEM=y\nCONFIG_STRICT_DEVMEM=y\n\
             CONFIG_MMAP_MIN=4096\nCONFIG_FB_HYPERV=y\n",
        )
        .with_release("6.12.107+crafted");
        let r = p.check(&c, &opts(&["userns"])).unwrap();
        assert!(r.is_ok(), "{}", r.render_table());
        assert_eq!(r.profile.as_deref(), Some("crafted"));
        let Status::Compensated(d) = status(&r, "DEVMEM") else {
            panic!()
        };
        assert!(
            d.contains("CONFIG_STRICT_DEVMEM=y") && d.contains("lockdown>=integrity"),
            "{d}"
        );
        assert_eq!(r.row("USER_NS").unwrap().boot_modules, vec!["userns"]);
        let rt: Vec<String> = r
            .runtime_requirements
            .iter()
            .map(|x| x.condition.to_string())
            .collect();
        assert_eq!(
            rt,
            vec!["lockdown>=integrity", "sysctl vm.mmap_min_addr>=65536"]
        );
        let table = r.render_table();
        assert!(
            table.contains("compensated") && table.contains("PASS"),
            "{table}"
        );

        // a failing condition keeps the violation and says why
        let mut c2 = c.clone();
        c2.remove("STRICT_DEVMEM");
        let r = p.check(&c2, &opts(&[])).unwrap();
        let Status::Violation(d) = status(&r, "DEVMEM") else {
            panic!()
        };
        assert!(
            d.contains("does not hold") && d.contains("CONFIG_STRICT_DEVMEM=y: absent"),
            "{d}"
        );
        let Status::Violation(d) = status(&r, "USER_NS") else {
            panic!()
        };
        assert!(d.contains("add userns to kernel.modules"), "{d}");

        // the strict pin ignores the profile; another release does not match it
        let strict = CheckOptions {
            profile: ProfileSelection::Disabled,
            ..opts(&["userns"])
        };
        assert!(!p.check(&c, &strict).unwrap().is_ok());
        let other = c.clone().with_release("6.12.107+other");
        let r = p.check(&other, &opts(&["userns"])).unwrap();
        assert_eq!(r.profile, None);
        assert!(!r.is_ok());
        let named = CheckOptions {
            profile: ProfileSelection::Named("crafted".into()),
            ..Default::default()
        };
        assert!(matches!(
            p.check(&other, &named),
            Err(CheckError::ProfileMismatch { .. })
        ));
        let unknown = CheckOptions {
            profile: ProfileSelection::Named("nope".into()),
            ..Default::default()
        };
        assert!(matches!(
            p.check(&c, &unknown),
            Err(CheckError::UnknownProfile { .. })
        ));
    }

    #[test]
    fn unused_exceptions_and_duplicate_keys_are_warnings() {
        let p = pins(FRAG, Some(PROFILE));
        let c = KernelConfig::parse(
            "# Linux/x86 6.12.107 Kernel Configuration\nCONFIG_USER_NS=m\nCONFIG_USER_NS=y\n",
            "dup",
        )
        .unwrap()
        .with_release("6.12.107+crafted");
        let r = p.check(&c, &opts(&[])).unwrap();
        assert!(r
            .warnings
            .iter()
            .any(|w| w.contains("CONFIG_USER_NS is set again")));
        assert!(r
            .warnings
            .iter()
            .any(|w| w.contains("exception for CONFIG_USER_NS is unused")));
    }

    #[test]
    fn header_and_release_must_agree() {
        let p = pins("CONFIG_A=y  # a\n", None);
        let c = config("CONFIG_A=y\n").with_release("6.1.0-18-amd64");
        let r = p.check(&c, &opts(&[])).unwrap();
        let Status::Violation(d) = &r.rows[0].status else {
            panic!("{:?}", r.rows[0])
        };
        assert!(d.contains("does not belong"), "{d}");
    }

    #[test]
    fn json_and_table_shapes() {
        let p = pins(FRAG, None);
        let r = p.check(&config("CONFIG_DEVMEM=y\n"), &opts(&[])).unwrap();
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["passed"], false);
        assert_eq!(v["target"], "qemu");
        assert_eq!(v["kernel_version"], "6.12.107");
        let rows = v["rows"].as_array().unwrap();
        let devmem = rows
            .iter()
            .find(|r| r["option"] == "CONFIG_DEVMEM")
            .unwrap();
        assert_eq!(devmem["status"], "violation");
        assert_eq!(devmem["wanted"], "unset");
        assert_eq!(devmem["found"], "y");
        assert_eq!(devmem["reason"], "raw memory");
        assert_eq!(devmem["fragment"], "test");
        assert!(v["summary"]["violations"].as_u64().unwrap() >= 1);

        let table = r.render_table();
        let lines: Vec<&str> = table.lines().collect();
        let header = lines.iter().position(|l| l.starts_with("STATUS")).unwrap();
        assert!(lines[header + 1].starts_with("VIOLATION"), "{table}");
        // aligned: the OPTION column starts at the same offset on every row line
        let col = lines[header].find("OPTION").unwrap();
        for l in lines[header + 1..]
            .iter()
            .take_while(|l| !l.is_empty())
            .filter(|l| !l.trim_start().starts_with("->"))
        {
            assert_eq!(&l[col..col + 7], "CONFIG_", "{l}");
        }
        assert!(table.trim_end().ends_with("not applicable"));
        assert!(table.contains("FAIL"));
    }
}
