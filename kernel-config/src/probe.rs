//! The run-time probe (SPEC V5): compares the running kernel with a target's pins before the
//! VM starts isolation, and names everything that drifted.
//!
//! The kernel is read through files only, under a caller-given root (`/` in the VM, a fake tree
//! in tests): `/proc/sys/kernel/osrelease`, the kernel's own config (`/proc/config.gz`, or on
//! targets whose root filesystem is ours and read-only, `/boot/config-RELEASE`), feature files
//! when there is no config, `/sys/module`, the hardening sysctls, `/sys/kernel/security/lockdown`
//! and `/proc/cmdline`. Nothing is written.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::check::{CheckOptions, ProfileSelection, Status};
use crate::error::ProbeError;
use crate::fragment::{normalize_module, Requirement, Want};
use crate::kconfig::KernelConfig;
use crate::profile::{Cmp, LockdownLevel, RuntimeCondition};
use crate::target::{Pins, Target};
use crate::version::KernelVersion;

/// Where in boot the probe runs; the caller states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The boot modules are loaded and the hardening sysctls applied, but module loading is not
    /// yet disabled: `kernel.modules_disabled` is not required yet.
    BeforeModuleLock,
    /// After `kernel.modules_disabled=1` (SPEC V3): the state containers run in. Everything is
    /// required.
    AfterModuleLock,
}

/// Inputs of the probe besides the pins.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    pub phase: Phase,
    /// The image's boot module list (as for [`CheckOptions::boot_modules`]).
    pub boot_modules: Vec<String>,
    /// The pinned kernel release (`uname -r` form); a different running release is drift.
    pub expected_release: Option<String>,
    pub profile: ProfileSelection,
}

impl ProbeOptions {
    pub fn new(phase: Phase) -> Self {
        ProbeOptions {
            phase,
            boot_modules: Vec::new(),
            expected_release: None,
            profile: ProfileSelection::Auto,
        }
    }
}

/// What a probe row is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    /// The running release against the pinned one.
    Release,
    /// A pinned option, checked against the kernel's own config.
    Config,
    /// A pinned option, checked through its run-time traces (no config available).
    Feature,
    /// A module the config says is `=m` and the image loads at boot.
    Module,
    /// A hardening sysctl.
    Sysctl,
    /// Lockdown state or a boot parameter a compensation relies on.
    Runtime,
    /// A minimum kernel version.
    Version,
    /// The probe itself could not run (no pins file, no readable `/proc`): drift of unknown
    /// extent, never a pass.
    Probe,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "snake_case")]
pub enum ProbeStatus {
    Ok,
    /// The running kernel differs from the pin.
    Drift(String),
    /// Not observable without the kernel's config; not counted as drift.
    Unverified(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeRow {
    pub kind: ProbeKind,
    pub name: String,
    pub wanted: String,
    pub found: String,
    #[serde(flatten)]
    pub status: ProbeStatus,
    /// Extra context, e.g. the compensation a row relies on.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub note: String,
    /// For a drifting row: the boot modules whose absence is its whole cause (empty when
    /// anything else is wrong). [`crate::DriftVerdict`] excuses such a row only if every one of
    /// them is missing because its hardware is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<String>,
}

/// The probe's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub target: Target,
    pub phase: Phase,
    pub kernel_release: String,
    pub kernel_version: Option<KernelVersion>,
    /// The config the full check used, if one was available.
    pub config_source: Option<String>,
    pub profile: Option<String>,
    pub rows: Vec<ProbeRow>,
}

struct Sysctl {
    name: &'static str,
    cmp: Cmp,
    value: i64,
    /// A missing file means the kernel lacks the feature the sysctl restricts.
    missing_ok: bool,
    after_lock_only: bool,
}

const fn sysctl(
    name: &'static str,
    cmp: Cmp,
    value: i64,
    missing_ok: bool,
    after_lock_only: bool,
) -> Sysctl {
    Sysctl {
        name,
        cmp,
        value,
        missing_ok,
        after_lock_only,
    }
}

/// The hardening sysctls the VM init applies at boot (SPEC V3) and the probe requires.
const HARDENING_SYSCTLS: &[Sysctl] = &[
    sysctl("kernel.kptr_restrict", Cmp::AtLeast, 1, false, false),
    sysctl("kernel.dmesg_restrict", Cmp::Eq, 1, false, false),
    sysctl(
        "kernel.unprivileged_bpf_disabled",
        Cmp::AtLeast,
        1,
        true,
        false,
    ),
    sysctl("kernel.perf_event_paranoid", Cmp::AtLeast, 2, true, false),
    sysctl("kernel.yama.ptrace_scope", Cmp::AtLeast, 1, false, false),
    sysctl("fs.protected_symlinks", Cmp::Eq, 1, false, false),
    sysctl("fs.protected_hardlinks", Cmp::Eq, 1, false, false),
    sysctl("fs.protected_fifos", Cmp::AtLeast, 1, false, false),
    sysctl("fs.protected_regular", Cmp::AtLeast, 1, false, false),
    sysctl("vm.unprivileged_userfaultfd", Cmp::Eq, 0, true, false),
    sysctl("kernel.kexec_load_disabled", Cmp::Eq, 1, true, false),
    sysctl("kernel.modules_disabled", Cmp::Eq, 1, true, true),
];

/// Probes the kernel running under `root` against `pins`.
///
/// Errors only when the probe cannot run at all (no readable `/proc`); everything else that is
/// wrong is a drift row, so the caller refuses isolation with the full list.
pub fn probe_running_kernel(
    root: &Path,
    pins: &Pins,
    opts: &ProbeOptions,
) -> Result<ProbeReport, ProbeError> {
    let fs = Fs { root };
    let release_path = fs.path("proc/sys/kernel/osrelease");
    let release = std::fs::read_to_string(&release_path)
        .map_err(|source| ProbeError::Io {
            path: release_path.clone(),
            source,
        })?
        .trim()
        .to_string();
    let version = KernelVersion::from_release(&release);
    let mut report = ProbeReport {
        target: pins.target,
        phase: opts.phase,
        kernel_release: release.clone(),
        kernel_version: version,
        config_source: None,
        profile: None,
        rows: Vec::new(),
    };

    report.rows.push(ProbeRow {
        kind: ProbeKind::Release,
        name: "kernel release".into(),
        wanted: opts
            .expected_release
            .clone()
            .unwrap_or_else(|| "any".into()),
        found: release.clone(),
        status: match &opts.expected_release {
            Some(want) if *want != release => ProbeStatus::Drift(format!(
                "the running kernel is {release}, the pinned kernel is {want}: the kernel was \
                 replaced (e.g. a changed .wslconfig `kernel=` or a kernel update)"
            )),
            _ => ProbeStatus::Ok,
        },
        note: String::new(),
        modules: Vec::new(),
    });

    let config = load_config(&fs, pins.target, &release, &mut report);
    match config {
        Some(config) => config_rows(&fs, pins, opts, config, &release, &mut report)?,
        None => feature_rows(&fs, pins, opts, &release, version, &mut report),
    }

    for s in HARDENING_SYSCTLS {
        if s.after_lock_only && opts.phase == Phase::BeforeModuleLock {
            report.rows.push(ProbeRow {
                kind: ProbeKind::Sysctl,
                name: s.name.into(),
                wanted: format!("{}{}", cmp_str(s.cmp), s.value),
                found: fs.sysctl(s.name).unwrap_or_else(|| "absent".into()),
                status: ProbeStatus::Unverified(
                    "required after module loading is disabled; probe again in that phase".into(),
                ),
                note: String::new(),
                modules: Vec::new(),
            });
            continue;
        }
        report
            .rows
            .push(sysctl_row(&fs, s.name, s.cmp, s.value, s.missing_ok, ""));
    }
    Ok(report)
}

fn cmp_str(cmp: Cmp) -> &'static str {
    match cmp {
        Cmp::Eq => "=",
        Cmp::AtLeast => ">=",
    }
}

fn sysctl_row(
    fs: &Fs<'_>,
    name: &str,
    cmp: Cmp,
    want: i64,
    missing_ok: bool,
    note: &str,
) -> ProbeRow {
    let wanted = format!("{}{want}", cmp_str(cmp));
    let (found, status) = match fs.sysctl(name) {
        None if missing_ok => ("absent".to_string(), ProbeStatus::Ok),
        None => (
            "absent".to_string(),
            ProbeStatus::Drift(format!(
                "{name} is missing from /proc/sys: the kernel lacks the feature or /proc/sys is \
                 not mounted"
            )),
        ),
        Some(text) => {
            let first = text.split_whitespace().next().unwrap_or("");
            match first.parse::<i64>() {
                Ok(v) if (cmp == Cmp::Eq && v == want) || (cmp == Cmp::AtLeast && v >= want) => {
                    (text.clone(), ProbeStatus::Ok)
                }
                Ok(v) => (
                    text.clone(),
                    ProbeStatus::Drift(format!("{name} is {v}, wanted {wanted}")),
                ),
                Err(_) => (
                    text.clone(),
                    ProbeStatus::Drift(format!("{name} reads `{text}`, not a number")),
                ),
            }
        }
    };
    ProbeRow {
        kind: ProbeKind::Sysctl,
        name: name.to_string(),
        wanted,
        found,
        status,
        note: note.to_string(),
        modules: Vec::new(),
    }
}

fn load_config(
    fs: &Fs<'_>,
    target: Target,
    release: &str,
    report: &mut ProbeReport,
) -> Option<KernelConfig> {
    let mut candidates = vec![fs.path("proc/config.gz")];
    // Under WSL the distribution's /boot is writable by its root and the kernel is not ours,
    // so only the kernel's own embedded config counts there.
    if target != Target::Wsl2 {
        candidates.push(fs.path(&format!("boot/config-{release}")));
    }
    let path = candidates.into_iter().find(|p| p.is_file())?;
    match KernelConfig::from_path(&path) {
        Ok(config) => {
            report.config_source = Some(path.display().to_string());
            Some(config.with_release(release))
        }
        Err(e) => {
            report.rows.push(ProbeRow {
                kind: ProbeKind::Config,
                name: "kernel config".into(),
                wanted: "readable".into(),
                found: path.display().to_string(),
                status: ProbeStatus::Drift(format!("the kernel's config is unreadable: {e}")),
                note: String::new(),
                modules: Vec::new(),
            });
            None
        }
    }
}

fn config_rows(
    fs: &Fs<'_>,
    pins: &Pins,
    opts: &ProbeOptions,
    config: KernelConfig,
    release: &str,
    report: &mut ProbeReport,
) -> Result<(), ProbeError> {
    let check = pins.check(
        &config,
        &CheckOptions {
            boot_modules: opts.boot_modules.clone(),
            kernel_release: Some(release.to_string()),
            kernel_version: None,
            profile: opts.profile.clone(),
        },
    )?;
    report.profile = check.profile.clone();
    let mut modules = BTreeSet::new();
    for row in &check.rows {
        let (status, note) = match &row.status {
            Status::Ok => (ProbeStatus::Ok, String::new()),
            Status::Compensated(d) => (ProbeStatus::Ok, format!("compensated: {d}")),
            Status::NotApplicable(d) => (ProbeStatus::Ok, format!("not applicable: {d}")),
            Status::Violation(d) => (ProbeStatus::Drift(d.clone()), String::new()),
        };
        report.rows.push(ProbeRow {
            kind: ProbeKind::Config,
            name: row.option.clone(),
            wanted: row.wanted.clone(),
            found: row.found.clone(),
            status,
            note,
            modules: Vec::new(),
        });
        modules.extend(row.boot_modules.iter().cloned());
    }
    for module in modules {
        let loaded = fs.path(&format!("sys/module/{module}")).exists();
        report.rows.push(ProbeRow {
            kind: ProbeKind::Module,
            name: module.clone(),
            wanted: "loaded".into(),
            found: if loaded { "loaded" } else { "not loaded" }.into(),
            status: if loaded {
                ProbeStatus::Ok
            } else {
                ProbeStatus::Drift(format!(
                    "module {module} is not loaded, but the config builds it as a module and the \
                     pin relies on the image loading it at boot"
                ))
            },
            note: String::new(),
            modules: if loaded { Vec::new() } else { vec![module] },
        });
    }
    let base: BTreeSet<(&str, Cmp, i64)> = HARDENING_SYSCTLS
        .iter()
        .map(|s| (s.name, s.cmp, s.value))
        .collect();
    for req in &check.runtime_requirements {
        let note = format!("for {}", req.required_by.join(", "));
        let row = match &req.condition {
            RuntimeCondition::Sysctl { name, cmp, value } => {
                if base.contains(&(name.as_str(), *cmp, *value)) {
                    continue;
                }
                if name == "kernel.modules_disabled" && opts.phase == Phase::BeforeModuleLock {
                    continue;
                }
                sysctl_row(fs, name, *cmp, *value, false, &note)
            }
            RuntimeCondition::Lockdown { level } => lockdown_row(fs, *level, note),
            RuntimeCondition::Cmdline { token } => {
                let cmdline = fs.read("proc/cmdline").unwrap_or_default();
                let present = cmdline.split_whitespace().any(|t| t == token);
                ProbeRow {
                    kind: ProbeKind::Runtime,
                    name: format!("cmdline {token}"),
                    wanted: "present".into(),
                    found: if present { "present" } else { "absent" }.into(),
                    status: if present {
                        ProbeStatus::Ok
                    } else {
                        ProbeStatus::Drift(format!(
                            "the kernel command line lacks `{token}`, which a compensation relies on"
                        ))
                    },
                    note,
                    modules: Vec::new(),
                }
            }
        };
        report.rows.push(row);
    }
    Ok(())
}

fn lockdown_row(fs: &Fs<'_>, want: LockdownLevel, note: String) -> ProbeRow {
    let level = fs.lockdown();
    let (found, status) = match level {
        Some(l) if l >= want => (l.to_string(), ProbeStatus::Ok),
        Some(l) => (
            l.to_string(),
            ProbeStatus::Drift(format!("kernel lockdown is {l}, wanted at least {want}")),
        ),
        None => (
            "unreadable".to_string(),
            ProbeStatus::Drift(
                "cannot read /sys/kernel/security/lockdown (securityfs not mounted, or no lockdown \
                 LSM)"
                    .into(),
            ),
        ),
    };
    ProbeRow {
        kind: ProbeKind::Runtime,
        name: "lockdown".into(),
        wanted: format!(">={want}"),
        found,
        status,
        note,
        modules: Vec::new(),
    }
}

fn feature_rows(
    fs: &Fs<'_>,
    pins: &Pins,
    opts: &ProbeOptions,
    release: &str,
    version: Option<KernelVersion>,
    report: &mut ProbeReport,
) {
    if report.config_source.is_none() && !report.rows.iter().any(|r| r.kind == ProbeKind::Config) {
        report.rows.push(ProbeRow {
            kind: ProbeKind::Config,
            name: "kernel config".into(),
            wanted: "available".into(),
            found: "none".into(),
            status: ProbeStatus::Unverified(
                "no /proc/config.gz (nor, outside WSL2, /boot/config-RELEASE): options are checked \
                 through their run-time traces, and options without one are unverified"
                    .into(),
            ),
            note: String::new(),
            modules: Vec::new(),
        });
    }
    let boot: BTreeSet<String> = opts
        .boot_modules
        .iter()
        .map(|m| normalize_module(m))
        .collect();
    let builtin = fs.builtin_modules(release);
    for pin in &pins.version_pins {
        report.rows.push(version_row(
            &format!("kernel >= {}", pin.min),
            pin.min,
            version,
            &pin.reason,
        ));
    }
    for req in &pins.requirements {
        let name = req.option_label();
        let (mut status, modules) = feature_status(fs, req, &boot, builtin.as_ref());
        if matches!(status, ProbeStatus::Ok) {
            if let Some(min) = req.min_version {
                let v = version_row(&name, min, version, &req.reason);
                status = v.status;
            }
        }
        report.rows.push(ProbeRow {
            kind: ProbeKind::Feature,
            name,
            wanted: req.wanted_label(),
            found: match &status {
                ProbeStatus::Ok => "present".into(),
                ProbeStatus::Drift(_) => "missing".into(),
                ProbeStatus::Unverified(_) => "unknown".into(),
            },
            status,
            note: String::new(),
            modules,
        });
    }
}

fn version_row(
    name: &str,
    min: KernelVersion,
    version: Option<KernelVersion>,
    why: &str,
) -> ProbeRow {
    let status = match version {
        Some(v) if v >= min => ProbeStatus::Ok,
        Some(v) => ProbeStatus::Drift(format!("needs Linux {min} or newer ({why}); running {v}")),
        None => ProbeStatus::Drift(format!(
            "needs Linux {min} or newer; the running release does not start with a version"
        )),
    };
    ProbeRow {
        kind: ProbeKind::Version,
        name: name.to_string(),
        wanted: format!(">={min}"),
        found: version.map_or("unknown".into(), |v| v.to_string()),
        status,
        note: String::new(),
        modules: Vec::new(),
    }
}

/// Evidence that one option is in the running kernel.
enum Evidence {
    Present,
    Absent(String),
    /// Absent only because this module is neither loaded nor built in.
    ModuleAbsent(String, String),
    Unknown,
}

/// The row's status and, when it drifts only because boot modules are missing, those modules.
fn feature_status(
    fs: &Fs<'_>,
    req: &Requirement,
    boot: &BTreeSet<String>,
    builtin: Option<&BTreeSet<String>>,
) -> (ProbeStatus, Vec<String>) {
    let mut absent = Vec::new();
    let mut modules = Vec::new();
    let mut only_modules = true;
    let mut unknown = false;
    for term in &req.terms {
        let evidence = match &term.want {
            Want::BuiltIn | Want::BuiltInOrModule(_) => {
                term_evidence(fs, &term.option, &term.want, boot, builtin)
            }
            _ => Evidence::Unknown,
        };
        match evidence {
            Evidence::Present => return (ProbeStatus::Ok, Vec::new()),
            Evidence::Absent(why) => {
                only_modules = false;
                absent.push(why);
            }
            Evidence::ModuleAbsent(module, why) => {
                modules.push(module);
                absent.push(why);
            }
            Evidence::Unknown => unknown = true,
        }
    }
    if unknown {
        (
            ProbeStatus::Unverified("no run-time trace without the kernel's config".into()),
            Vec::new(),
        )
    } else {
        if !only_modules {
            modules.clear();
        }
        (ProbeStatus::Drift(absent.join("; ")), modules)
    }
}

fn term_evidence(
    fs: &Fs<'_>,
    option: &str,
    want: &Want,
    boot: &BTreeSet<String>,
    builtin: Option<&BTreeSet<String>>,
) -> Evidence {
    let file = |rel: &str| {
        if fs.path(rel).exists() {
            Evidence::Present
        } else {
            Evidence::Absent(format!("/{rel} is missing (CONFIG_{option})"))
        }
    };
    let filesystem = |name: &str| match fs.read("proc/filesystems") {
        Some(text) => {
            if text
                .lines()
                .any(|l| l.split_whitespace().last() == Some(name))
            {
                Evidence::Present
            } else {
                Evidence::Absent(format!("/proc/filesystems has no {name} (CONFIG_{option})"))
            }
        }
        None => Evidence::Unknown,
    };
    let controller = |names: &[&str]| fs.controller(option, names);
    match option {
        "NAMESPACES" => file("proc/self/ns"),
        "USER_NS" => file("proc/self/ns/user"),
        "PID_NS" => file("proc/self/ns/pid"),
        "NET_NS" => file("proc/self/ns/net"),
        "IPC_NS" => file("proc/self/ns/ipc"),
        "UTS_NS" => file("proc/self/ns/uts"),
        "CGROUPS" => file("proc/self/ns/cgroup"),
        "MEMCG" => controller(&["memory"]),
        "CGROUP_PIDS" => controller(&["pids"]),
        "CPUSETS" => controller(&["cpuset"]),
        "CGROUP_SCHED" => controller(&["cpu"]),
        "CGROUP_CPUACCT" => controller(&["cpuacct"]),
        "BLK_CGROUP" => controller(&["blkio", "io"]),
        "CGROUP_DEVICE" => controller(&["devices"]),
        "CGROUP_FREEZER" => controller(&["freezer"]),
        "CGROUP_HUGETLB" => controller(&["hugetlb"]),
        "SECCOMP" => match fs.read("proc/self/status") {
            Some(s) if s.lines().any(|l| l.starts_with("Seccomp:")) => Evidence::Present,
            Some(_) => Evidence::Absent("/proc/self/status has no Seccomp: line".into()),
            None => Evidence::Unknown,
        },
        "SECCOMP_FILTER" => match fs.read("proc/sys/kernel/seccomp/actions_avail") {
            Some(s) if s.split_whitespace().any(|a| a == "user_notif") => Evidence::Present,
            Some(s) => Evidence::Absent(format!(
                "seccomp actions_avail is `{}`: no user_notif (CONFIG_SECCOMP_FILTER)",
                s.trim()
            )),
            None => Evidence::Absent(
                "/proc/sys/kernel/seccomp/actions_avail is missing (CONFIG_SECCOMP_FILTER)".into(),
            ),
        },
        "OVERLAY_FS" => filesystem("overlay"),
        "FUSE_FS" => filesystem("fuse"),
        "EXT4_FS" => filesystem("ext4"),
        "TMPFS" => filesystem("tmpfs"),
        "POSIX_MQUEUE" => filesystem("mqueue"),
        "9P_FS" => filesystem("9p"),
        "VIRTIO_FS" => filesystem("virtiofs"),
        "SECURITYFS" => filesystem("securityfs"),
        "KEYS" => file("proc/sys/kernel/keys"),
        "IPV6" => file("proc/sys/net/ipv6"),
        "BRIDGE_NETFILTER" => file("proc/sys/net/bridge"),
        "SECURITY_YAMA" => file("proc/sys/kernel/yama"),
        "IKCONFIG_PROC" => file("proc/config.gz"),
        "SECURITY_LOCKDOWN_LSM" => match fs.lockdown() {
            Some(_) => Evidence::Present,
            None => Evidence::Unknown,
        },
        "LOCK_DOWN_KERNEL_FORCE_INTEGRITY" | "LOCK_DOWN_KERNEL_FORCE_CONFIDENTIALITY" => {
            let want = if option.ends_with("CONFIDENTIALITY") {
                LockdownLevel::Confidentiality
            } else {
                LockdownLevel::Integrity
            };
            match fs.lockdown() {
                Some(l) if l >= want => Evidence::Present,
                Some(l) => Evidence::Absent(format!("kernel lockdown is {l}, wanted {want}")),
                None => Evidence::Unknown,
            }
        }
        _ => match want {
            Want::BuiltInOrModule(mods) => module_evidence(fs, option, mods, boot, builtin),
            _ => Evidence::Unknown,
        },
    }
}

fn module_evidence(
    fs: &Fs<'_>,
    option: &str,
    mods: &[String],
    boot: &BTreeSet<String>,
    builtin: Option<&BTreeSet<String>>,
) -> Evidence {
    for m in mods {
        if fs.path(&format!("sys/module/{m}")).exists() {
            continue;
        }
        if builtin.is_some_and(|b| b.contains(m)) {
            continue;
        }
        if builtin.is_some() {
            let hint = if boot.contains(m) {
                "it is in the boot module list but did not load"
            } else {
                "add it to kernel.modules in the image definition or build it in"
            };
            return Evidence::ModuleAbsent(
                m.clone(),
                format!("module {m} (CONFIG_{option}) is neither loaded nor built in: {hint}"),
            );
        }
        return Evidence::Unknown;
    }
    Evidence::Present
}

/// File access under the probe root.
struct Fs<'a> {
    root: &'a Path,
}

impl Fs<'_> {
    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.path(rel)).ok()
    }

    fn sysctl(&self, name: &str) -> Option<String> {
        self.read(&format!("proc/sys/{}", name.replace('.', "/")))
            .map(|s| s.trim().to_string())
    }

    /// `none [integrity] confidentiality` -> Integrity
    fn lockdown(&self) -> Option<LockdownLevel> {
        let text = self.read("sys/kernel/security/lockdown")?;
        let start = text.find('[')?;
        let end = text[start..].find(']')? + start;
        text[start + 1..end].parse().ok()
    }

    /// Module names from `/lib/modules/RELEASE/modules.builtin`, when the tree has it.
    fn builtin_modules(&self, release: &str) -> Option<BTreeSet<String>> {
        let text = self.read(&format!("lib/modules/{release}/modules.builtin"))?;
        Some(
            text.lines()
                .filter_map(|l| l.rsplit('/').next())
                .filter_map(|f| f.split(".ko").next())
                .filter(|n| !n.is_empty())
                .map(normalize_module)
                .collect(),
        )
    }

    fn controller(&self, option: &str, names: &[&str]) -> Evidence {
        if let Some(text) = self.read("proc/cgroups") {
            let present = text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split_whitespace().next())
                .any(|n| names.contains(&n));
            return if present {
                Evidence::Present
            } else {
                Evidence::Absent(format!(
                    "/proc/cgroups lists no {} controller (CONFIG_{option})",
                    names.join("/")
                ))
            };
        }
        for rel in [
            "sys/fs/cgroup/cgroup.controllers",
            "sys/fs/cgroup/unified/cgroup.controllers",
        ] {
            if let Some(text) = self.read(rel) {
                if text.split_whitespace().any(|n| names.contains(&n)) {
                    return Evidence::Present;
                }
            }
        }
        Evidence::Unknown
    }
}

impl ProbeReport {
    /// No drift.
    pub fn is_ok(&self) -> bool {
        self.drifts().next().is_none()
    }

    pub fn drifts(&self) -> impl Iterator<Item = &ProbeRow> {
        self.rows
            .iter()
            .filter(|r| matches!(r.status, ProbeStatus::Drift(_)))
    }

    /// One line for logs and the refusal message: what drifted, every item named.
    pub fn summary(&self) -> String {
        let drifts: Vec<String> = self
            .drifts()
            .map(|r| match &r.status {
                ProbeStatus::Drift(d) => format!("{}: {d}", r.name),
                _ => unreachable!(),
            })
            .collect();
        if drifts.is_empty() {
            format!(
                "kernel {} matches the {} pin ({})",
                self.kernel_release,
                self.target,
                self.phase_name()
            )
        } else {
            format!(
                "kernel {} drifted from the {} pin in {} place(s) ({}); isolation must not start: {}",
                self.kernel_release,
                self.target,
                drifts.len(),
                self.phase_name(),
                drifts.join(" | ")
            )
        }
    }

    fn phase_name(&self) -> &'static str {
        match self.phase {
            Phase::BeforeModuleLock => "before module loading is disabled",
            Phase::AfterModuleLock => "after module loading is disabled",
        }
    }

    /// Drifts first, then unverified rows, then the rest.
    pub fn render_table(&self) -> String {
        let rank = |s: &ProbeStatus| match s {
            ProbeStatus::Drift(_) => 0,
            ProbeStatus::Unverified(_) => 1,
            ProbeStatus::Ok => 2,
        };
        let mut rows: Vec<&ProbeRow> = self.rows.iter().collect();
        rows.sort_by_key(|r| rank(&r.status));
        let label = |s: &ProbeStatus| match s {
            ProbeStatus::Drift(_) => "DRIFT",
            ProbeStatus::Unverified(_) => "unverified",
            ProbeStatus::Ok => "ok",
        };
        let kind = |k: ProbeKind| {
            serde_json::to_value(k)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        };
        let cells: Vec<[String; 5]> = rows
            .iter()
            .map(|r| {
                [
                    label(&r.status).to_string(),
                    kind(r.kind),
                    r.name.clone(),
                    r.wanted.clone(),
                    r.found.clone(),
                ]
            })
            .collect();
        let headers = ["STATUS", "KIND", "NAME", "WANTED", "FOUND"];
        let mut widths = headers.map(str::len);
        for c in &cells {
            for (w, s) in widths.iter_mut().zip(c) {
                *w = (*w).max(s.chars().count());
            }
        }
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Kernel probe, target {}, {}: release {}{}\n",
            self.target,
            self.phase_name(),
            self.kernel_release,
            self.config_source
                .as_ref()
                .map_or(", no kernel config".to_string(), |c| format!(
                    ", config {c}"
                ))
        );
        let line = |cols: [&str; 5]| {
            let text = cols
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ");
            format!("{}\n", text.trim_end())
        };
        out.push_str(&line(headers));
        for (r, c) in rows.iter().zip(&cells) {
            out.push_str(&line([&c[0], &c[1], &c[2], &c[3], &c[4]]));
            let detail = match &r.status {
                ProbeStatus::Drift(d) | ProbeStatus::Unverified(d) => Some(d.as_str()),
                ProbeStatus::Ok => None,
            };
            let indent = widths[0] + 2;
            if let Some(d) = detail {
                let _ = writeln!(out, "{:indent$}-> {d}", "");
            }
        }
        let _ = writeln!(out, "\n{}", self.summary());
        out
    }

    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Doc<'a> {
            passed: bool,
            summary: String,
            #[serde(flatten)]
            report: &'a ProbeReport,
        }
        serde_json::to_string_pretty(&Doc {
            passed: self.is_ok(),
            summary: self.summary(),
            report: self,
        })
        .expect("a probe report always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(release: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let put = |rel: &str, text: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        put("proc/sys/kernel/osrelease", &format!("{release}\n"));
        dir
    }

    fn row<'r>(r: &'r ProbeReport, name: &str) -> &'r ProbeRow {
        r.rows.iter().find(|x| x.name == name).unwrap()
    }

    #[test]
    fn a_missing_boot_module_row_names_its_module_and_nothing_else_does() {
        let release = "6.12.107+deb12-cloud-amd64";
        let dir = tree(release);
        let config = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("testdata/config-{release}")),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("boot")).unwrap();
        std::fs::write(dir.path().join(format!("boot/config-{release}")), config).unwrap();
        std::fs::create_dir_all(dir.path().join("sys/module/hv_sock")).unwrap();
        let opts = ProbeOptions {
            boot_modules: vec!["hv_vmbus".into(), "hv_sock".into(), "vsock".into()],
            ..ProbeOptions::new(Phase::AfterModuleLock)
        };
        let pins = Pins::builtin(Target::Hyperv).unwrap();
        let r = probe_running_kernel(dir.path(), &pins, &opts).unwrap();
        let vmbus = row(&r, "hv_vmbus");
        assert!(matches!(vmbus.status, ProbeStatus::Drift(_)), "{vmbus:?}");
        assert_eq!(vmbus.modules, ["hv_vmbus"]);
        assert_eq!(row(&r, "hv_sock").status, ProbeStatus::Ok);
        assert!(row(&r, "hv_sock").modules.is_empty());
        // Sysctls are absent in this tree: drift, with no module to blame.
        let kptr = row(&r, "kernel.kptr_restrict");
        assert!(matches!(kptr.status, ProbeStatus::Drift(_)));
        assert!(kptr.modules.is_empty());
        let json = r.to_json();
        assert!(
            json.contains("\"modules\": [\n        \"hv_vmbus\""),
            "{json}"
        );
    }

    #[test]
    fn a_feature_missing_only_for_a_module_names_it() {
        let release = "6.6.87.2-microsoft-standard-WSL2";
        let dir = tree(release);
        let modules = dir.path().join(format!("lib/modules/{release}"));
        std::fs::create_dir_all(&modules).unwrap();
        std::fs::write(modules.join("modules.builtin"), "kernel/net/veth.ko\n").unwrap();
        let pins = Pins::builtin(Target::Wsl2).unwrap();
        let r = probe_running_kernel(
            dir.path(),
            &pins,
            &ProbeOptions::new(Phase::AfterModuleLock),
        )
        .unwrap();
        let bridge = row(&r, "CONFIG_BRIDGE");
        assert!(matches!(bridge.status, ProbeStatus::Drift(_)), "{bridge:?}");
        assert_eq!(bridge.modules, ["bridge"]);
        assert_eq!(row(&r, "CONFIG_VETH").status, ProbeStatus::Ok);
        // Missing for a reason that is not a module: no module named.
        let userns = row(&r, "CONFIG_USER_NS");
        assert!(matches!(userns.status, ProbeStatus::Drift(_)), "{userns:?}");
        assert!(userns.modules.is_empty());
    }
}
