//! Where a boot's time goes: milestones read from the serial console of one boot (issue 13).
//!
//! Two clocks are kept for each milestone. `uptime` is the guest's own clock (the kernel's
//! printk stamp, or the uptime eci-init and the self-test print); it starts when the kernel
//! starts, so it hides what comes before (QEMU start-up, UEFI firmware, the loader and the
//! kernel's decompression). `wall` is when the line reached the build machine, counted from
//! spawning QEMU: what a user waiting for "Starting the Docker Engine..." pays. The difference
//! between them is that pre-kernel time plus the console's own delay.
//!
//! The milestones, in boot order:
//! - `loader-start`, `initrd-loaded` (UEFI only): OVMF starts the boot disk's loader
//!   (`BdsDxe: starting`), and the kernel's EFI stub has the initramfs the loader read
//!   (`EFI stub: Loaded initrd`). They come before the guest clock starts: their `uptime` is 0
//!   and only `wall` counts.
//! - `kernel`: the kernel's first message (`Linux version`); its wall figure is the
//!   firmware and decompression time.
//! - `initramfs-unpack`, `initramfs-unpacked`: the kernel starts and finishes unpacking the
//!   initramfs (`Unpacking initramfs`, `Freeing initrd memory`).
//! - `init`: the kernel runs `/init` (`Run /init as init process`).
//! - `init-<step>`: eci-init's `phase <step> at <uptime>` lines, printed as each step starts
//!   (mounts, modules, sysctls, var, kernel-check, data-disk, services), in the order printed.
//! - `<service>-ready`: eci-init's `ready:` summary (`containerd:ready@10.80 ...`) gives the
//!   uptime; the wall time is that of the service's own `<service>: ready after` line, which
//!   eci-init prints when the probe passes (the summary only comes once every service is up).
//! - `imported`: the self-test's `imported uptime=` fact: its test image is in dockerd
//!   (imported through the guard).
//! - `first-run`, `guard-answered`: the self-test's `first-run uptime=` fact (its first
//!   `docker run --rm`, through the guard as users run it, ended) and `guard-answered uptime=` fact (`docker version` answered
//!   through the guard's user socket, as the docker CLI reaches the engine).
//!
//! A milestone missing from the console is left out, not guessed: the report is what the
//! console proves.
//!
//! Services may start together (services.json's `after`), so the chain's service phases are
//! the critical path: each ends at a readiness and starts at the milestone before it, which
//! may be another service's readiness. Each service's own start-up, from its start to its
//! readiness, is in `services`, from eci-init's `<service>: ready after <seconds> s` line and
//! the readiness uptime; those overlap and are not part of the chain.

use serde::Serialize;

/// One console line and when it arrived, in seconds since QEMU was spawned.
#[derive(Debug, Clone, PartialEq)]
pub struct StampedLine {
    pub wall: f64,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Milestone {
    pub name: String,
    /// Guest uptime in seconds.
    pub uptime: f64,
    /// Seconds since QEMU was spawned when the line reached the build machine.
    pub wall: f64,
}

/// The milestones of one boot, in the order of their guest uptime.
pub fn milestones(lines: &[StampedLine]) -> Vec<Milestone> {
    let mut found: Vec<Milestone> = Vec::new();
    // `<service>: ready after` lines seen so far: service name -> wall time.
    let mut ready_walls: Vec<(String, f64)> = Vec::new();
    let mut push = |name: String, uptime: f64, wall: f64| {
        // The first occurrence counts: a service restarted later is not its start-up.
        if !found.iter().any(|m| m.name == name) {
            found.push(Milestone { name, uptime, wall });
        }
    };
    for line in lines {
        let text = line.text.as_str();
        for (needle, name) in FIRMWARE_MARKS {
            if text.contains(needle) {
                push(name.to_string(), 0.0, line.wall);
            }
        }
        if let Some((stamp, message)) = kernel_stamp(text) {
            for (needle, name) in KERNEL_MARKS {
                if message.starts_with(needle) {
                    push(name.to_string(), stamp, line.wall);
                }
            }
        }
        if let Some(rest) = after(text, INIT_PREFIX) {
            if let Some((step, uptime)) = init_phase(rest) {
                push(format!("init-{step}"), uptime, line.wall);
            } else if let Some(summary) = rest.strip_prefix("ready: ") {
                for (service, uptime) in ready_summary(summary) {
                    let wall = ready_walls
                        .iter()
                        .find(|(s, _)| s == service)
                        .map_or(line.wall, |(_, w)| *w);
                    push(format!("{service}-ready"), uptime, wall);
                }
            } else if let Some((service, _)) = rest.split_once(": ready after ") {
                if !ready_walls.iter().any(|(s, _)| s == service) {
                    ready_walls.push((service.to_string(), line.wall));
                }
            }
        }
        if let Some(rest) = after(text, SELFTEST_PREFIX) {
            for (fact, name) in SELFTEST_MARKS {
                if let Some(v) = rest.strip_prefix(fact) {
                    if let Ok(uptime) = v.trim().parse::<f64>() {
                        push(name.to_string(), uptime, line.wall);
                    }
                }
            }
        }
    }
    found.sort_by(|a, b| a.uptime.total_cmp(&b.uptime));
    found
}

/// The time between two milestones, named after what runs in it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phase {
    pub name: String,
    pub from: String,
    pub to: String,
    pub seconds: f64,
}

/// Where one boot's time went: the milestones and the phases between them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BootPhases {
    pub milestones: Vec<Milestone>,
    /// Consecutive, so they add up to the last milestone's uptime, plus `firmware` before the
    /// kernel (wall clock) and `initramfs-unpack`, which runs inside `kernel`.
    pub phases: Vec<Phase>,
    /// Each service's own start-up, in the order they became ready; they may overlap.
    pub services: Vec<ServiceStart>,
}

/// One service from its first start to its readiness, in guest uptime.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceStart {
    pub name: String,
    pub started: f64,
    pub ready: f64,
    pub seconds: f64,
}

impl BootPhases {
    pub fn from_console(lines: &[StampedLine]) -> BootPhases {
        let milestones = milestones(lines);
        let phases = phases(&milestones);
        let services = service_starts(lines, &milestones);
        BootPhases {
            milestones,
            phases,
            services,
        }
    }

    pub fn milestone(&self, name: &str) -> Option<&Milestone> {
        self.milestones.iter().find(|m| m.name == name)
    }
}

/// Whether a milestone is a link of the phase chain.
fn in_chain(milestone: &str) -> bool {
    matches!(milestone, "kernel" | "init" | "imported" | "first-run")
        || milestone.starts_with("init-")
        || milestone.ends_with("-ready")
}

/// The name of the phase between two chain milestones: a service's start-up up to its
/// readiness (services start one after the other, each once the previous one is ready), the
/// self-test up to its first run, otherwise the step that begins at `from`.
fn phase_name(from: &str, to: &str) -> String {
    if let Some(service) = to.strip_suffix("-ready") {
        service.into()
    } else if to == "imported" {
        "import".into()
    } else if to == "first-run" {
        if from == "imported" {
            "first-run"
        } else {
            "to-first-run"
        }
        .into()
    } else if from == "init" {
        "init-start".into()
    } else {
        from.into()
    }
}

/// Phases from milestones. The chain runs kernel -> init -> eci-init's steps -> services ->
/// first run; a milestone missing from the console merges its two neighbours' phases into one
/// whose `from` and `to` say so, rather than inventing a boundary.
pub fn phases(milestones: &[Milestone]) -> Vec<Phase> {
    let mut out = Vec::new();
    let find = |n: &str| milestones.iter().find(|m| m.name == n);
    // The guest clock starts with the kernel: a line's arrival minus its uptime is when the
    // kernel started as seen from the host, plus the console's delay; the smallest is the
    // closest. Before it: QEMU's start, the firmware and loader (UEFI) or QEMU's own loader
    // (direct), and the kernel's decompression.
    if let Some(start) = milestones
        .iter()
        .filter(|m| !before_kernel(&m.name))
        .map(|m| m.wall - m.uptime)
        .min_by(f64::total_cmp)
    {
        let start = start.max(0.0);
        // UEFI: split at the loader's start and at the EFI stub's initrd.
        let mut from = ("qemu", 0.0);
        for (name, phase) in [("loader-start", "firmware"), ("initrd-loaded", "loader")] {
            if let Some(m) = find(name).filter(|m| m.wall <= start) {
                out.push(Phase {
                    name: phase.into(),
                    from: from.0.into(),
                    to: name.into(),
                    seconds: round(m.wall - from.1),
                });
                from = (name, m.wall);
            }
        }
        out.push(Phase {
            name: if from.0 == "qemu" {
                "firmware"
            } else {
                "kernel-start"
            }
            .into(),
            from: from.0.into(),
            to: "kernel".into(),
            seconds: round(start - from.1),
        });
    }
    if let (Some(a), Some(b)) = (find("initramfs-unpack"), find("initramfs-unpacked")) {
        out.push(Phase {
            name: "initramfs-unpack".into(),
            from: a.name.clone(),
            to: b.name.clone(),
            seconds: round(b.uptime - a.uptime),
        });
    }
    // `first-run` ends the chain; nothing after it is a boot phase.
    let end = find("first-run").map_or(f64::INFINITY, |m| m.uptime);
    let chain: Vec<&Milestone> = milestones
        .iter()
        .filter(|m| in_chain(&m.name) && !before_kernel(&m.name) && m.uptime <= end)
        .collect();
    for pair in chain.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        out.push(Phase {
            name: phase_name(&a.name, &b.name),
            from: a.name.clone(),
            to: b.name.clone(),
            seconds: round(b.uptime - a.uptime),
        });
    }
    out
}

/// Services with both a `ready after` line (the first one: a later one is a restart) and a
/// readiness uptime from the `ready:` summary.
pub fn service_starts(lines: &[StampedLine], milestones: &[Milestone]) -> Vec<ServiceStart> {
    let mut out: Vec<ServiceStart> = Vec::new();
    for line in lines {
        let Some(rest) = after(&line.text, INIT_PREFIX) else {
            continue;
        };
        let Some((service, took)) = rest.split_once(": ready after ") else {
            continue;
        };
        let Some(took) = took
            .strip_suffix(" s")
            .and_then(|t| t.trim().parse::<f64>().ok())
        else {
            continue;
        };
        let ready = format!("{service}-ready");
        let Some(m) = milestones.iter().find(|m| m.name == ready) else {
            continue;
        };
        if out.iter().all(|s| s.name != service) {
            out.push(ServiceStart {
                name: service.to_string(),
                started: round(m.uptime - took),
                ready: m.uptime,
                seconds: took,
            });
        }
    }
    out.sort_by(|a, b| a.ready.total_cmp(&b.ready));
    out
}

/// Milliseconds are the console's resolution for eci-init's stamps.
fn round(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// UEFI firmware and loader messages, before the kernel's clock starts.
const FIRMWARE_MARKS: &[(&str, &str)] = &[
    ("BdsDxe: starting ", "loader-start"),
    ("EFI stub: Loaded initrd", "initrd-loaded"),
];

fn before_kernel(name: &str) -> bool {
    FIRMWARE_MARKS.iter().any(|(_, n)| *n == name)
}

const INIT_PREFIX: &str = "eci-init: ";
const SELFTEST_PREFIX: &str = "ECI-SELFTEST ";

/// Kernel messages that mark a phase boundary (the message text after the printk stamp).
const KERNEL_MARKS: &[(&str, &str)] = &[
    ("Linux version ", "kernel"),
    ("Unpacking initramfs", "initramfs-unpack"),
    (
        "Trying to unpack rootfs image as initramfs",
        "initramfs-unpack",
    ),
    ("Freeing initrd memory", "initramfs-unpacked"),
    ("Run /init as init process", "init"),
];

/// Self-test facts that carry a guest uptime.
const SELFTEST_MARKS: &[(&str, &str)] = &[
    ("imported uptime=", "imported"),
    ("first-run uptime=", "first-run"),
    ("guard-answered uptime=", "guard-answered"),
];

/// The console may prefix lines (a `[qemu]` tag, a log level): find the marker anywhere.
fn after<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.find(prefix).map(|at| &text[at + prefix.len()..])
}

/// `[    1.234567] message` -> (1.234567, "message").
fn kernel_stamp(text: &str) -> Option<(f64, &str)> {
    let rest = text.trim_start().strip_prefix('[')?;
    let (stamp, message) = rest.split_once(']')?;
    let uptime = stamp.trim().parse::<f64>().ok()?;
    Some((uptime, message.trim_start()))
}

/// `phase mounts at 7.712` -> ("mounts", 7.712).
fn init_phase(rest: &str) -> Option<(&str, f64)> {
    let rest = rest.strip_prefix("phase ")?;
    let (step, at) = rest.split_once(" at ")?;
    let uptime = at.trim().parse::<f64>().ok()?;
    (!step.is_empty() && !step.contains(' ')).then_some((step, uptime))
}

/// `containerd:ready@10.80 dockerd:ready@17.20 eci-guard:not-ready` -> the ready ones.
fn ready_summary(summary: &str) -> Vec<(&str, f64)> {
    summary
        .split_whitespace()
        .filter_map(|item| {
            let (service, state) = item.split_once(':')?;
            let uptime = state.strip_prefix("ready@")?.parse::<f64>().ok()?;
            Some((service, uptime))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamped(lines: &[(f64, &str)]) -> Vec<StampedLine> {
        lines
            .iter()
            .map(|(wall, text)| StampedLine {
                wall: *wall,
                text: text.to_string(),
            })
            .collect()
    }

    #[test]
    fn a_boot_transcript_gives_its_milestones_in_order() {
        let console = stamped(&[
            (2.0, "[    0.000000] Linux version 6.1.0-eci (gcc) #1 SMP"),
            (3.5, "[    1.601000] Unpacking initramfs..."),
            (7.9, "[    5.912000] Freeing initrd memory: 98304K"),
            (9.8, "[    7.700000] Run /init as init process"),
            (9.9, "eci-init: phase mounts at 7.75"),
            (10.0, "eci-init: phase modules at 7.91"),
            (
                13.0,
                "eci-init: ready: containerd:ready@10.80 dockerd:ready@17.20 eci-guard:ready@17.35",
            ),
            (20.0, "ECI-SELFTEST first-run uptime=18.02"),
            (22.0, "ECI-SELFTEST guard-ready uptime=17.35"),
            (22.1, "ECI-SELFTEST guard-answered uptime=19.40"),
        ]);
        let got = milestones(&console);
        let names: Vec<&str> = got.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "kernel",
                "initramfs-unpack",
                "initramfs-unpacked",
                "init",
                "init-mounts",
                "init-modules",
                "containerd-ready",
                "dockerd-ready",
                "eci-guard-ready",
                "first-run",
                "guard-answered",
            ]
        );
        assert_eq!(got[0].wall, 2.0);
        assert_eq!(got[2].uptime, 5.912);
        assert_eq!(got[7].uptime, 17.2);
        assert_eq!(got[10].wall, 22.1);
    }

    #[test]
    fn missing_or_malformed_markers_are_left_out_not_guessed() {
        let console = stamped(&[
            (1.0, "[garbage] Linux version"),
            (1.1, "eci-init: phase at 3"),
            (1.2, "eci-init: phase two words at 3"),
            (1.3, "eci-init: ready: dockerd:not-ready containerd:ready@x"),
            (1.4, "ECI-SELFTEST guard-not-ready uptime=40.1"),
            (1.5, "Run /init as init process"),
        ]);
        assert_eq!(milestones(&console), Vec::new());
    }

    #[test]
    fn a_service_ready_line_gives_its_wall_time_the_summary_its_uptime() {
        let console = stamped(&[
            (11.0, "eci-init: containerd: ready after 3.05 s"),
            (17.5, "eci-init: dockerd: ready after 6.40 s"),
            (
                18.0,
                "eci-init: ready: containerd:ready@10.80 dockerd:ready@17.20",
            ),
        ]);
        let got = milestones(&console);
        assert_eq!((got[0].uptime, got[0].wall), (10.8, 11.0));
        assert_eq!((got[1].uptime, got[1].wall), (17.2, 17.5));
    }

    #[test]
    fn phases_follow_the_chain_and_add_up_to_the_first_run() {
        let console = stamped(&[
            (2.5, "[    0.000000] Linux version 6.12.107 (gcc) #1 SMP"),
            (
                4.0,
                "[    1.600000] Trying to unpack rootfs image as initramfs...",
            ),
            (8.2, "[    5.900000] Freeing initrd memory: 98304K"),
            (9.95, "[    7.700000] Run /init as init process"),
            (10.0, "eci-init: phase mounts at 7.75"),
            (10.2, "eci-init: phase modules at 7.90"),
            (11.0, "eci-init: phase services at 8.50"),
            (
                19.7,
                "eci-init: ready: containerd:ready@10.80 dockerd:ready@17.20 eci-guard:ready@17.35",
            ),
            (20.5, "ECI-SELFTEST imported uptime=18.20"),
            (21.0, "ECI-SELFTEST first-run uptime=18.70"),
            (22.0, "ECI-SELFTEST guard-answered uptime=19.40"),
        ]);
        let report = BootPhases::from_console(&console);
        let got: Vec<(&str, &str, &str, f64)> = report
            .phases
            .iter()
            .map(|p| (p.name.as_str(), p.from.as_str(), p.to.as_str(), p.seconds))
            .collect();
        assert_eq!(
            got,
            [
                // The smallest arrival-minus-uptime: the `init` line, 9.95 - 7.70.
                ("firmware", "qemu", "kernel", 2.25),
                (
                    "initramfs-unpack",
                    "initramfs-unpack",
                    "initramfs-unpacked",
                    4.3
                ),
                ("kernel", "kernel", "init", 7.7),
                ("init-start", "init", "init-mounts", 0.05),
                ("init-mounts", "init-mounts", "init-modules", 0.15),
                ("init-modules", "init-modules", "init-services", 0.6),
                ("containerd", "init-services", "containerd-ready", 2.3),
                ("dockerd", "containerd-ready", "dockerd-ready", 6.4),
                ("eci-guard", "dockerd-ready", "eci-guard-ready", 0.15),
                ("import", "eci-guard-ready", "imported", 0.85),
                ("first-run", "imported", "first-run", 0.5),
            ]
        );
        let chained: f64 = report.phases[2..].iter().map(|p| p.seconds).sum();
        assert!((chained - 18.7).abs() < 1e-9, "{chained}");
        assert_eq!(report.milestone("eci-guard-ready").unwrap().wall, 19.7);
    }

    #[test]
    fn a_missing_milestone_merges_its_neighbours_and_says_so() {
        let console = stamped(&[
            (1.0, "[    0.000000] Linux version 6.12.107"),
            (9.0, "eci-init: phase services at 8.00"),
            (
                12.0,
                "eci-init: ready: containerd:ready@10.00 dockerd:not-ready",
            ),
        ]);
        let phases = phases(&milestones(&console));
        let last = phases.last().unwrap();
        assert_eq!(
            (last.name.as_str(), last.from.as_str(), last.to.as_str()),
            ("containerd", "init-services", "containerd-ready")
        );
        let kernel = phases.iter().find(|p| p.name == "kernel").unwrap();
        assert_eq!((kernel.to.as_str(), kernel.seconds), ("init-services", 8.0));
    }

    #[test]
    fn a_uefi_boot_splits_the_time_before_the_kernel_at_the_loader() {
        let console = stamped(&[
            (
                9.0,
                "BdsDxe: loading Boot0001 \"UEFI Misc Device\" from PciRoot(0x0)",
            ),
            (
                9.5,
                "BdsDxe: starting Boot0001 \"UEFI Misc Device\" from PciRoot(0x0)",
            ),
            (
                15.0,
                "EFI stub: Loaded initrd from LINUX_EFI_INITRD_MEDIA_GUID device path",
            ),
            (17.0, "[    0.000000] Linux version 6.12.107"),
            (20.0, "[    2.500000] Run /init as init process"),
        ]);
        let report = BootPhases::from_console(&console);
        let got: Vec<(&str, f64)> = report
            .phases
            .iter()
            .map(|p| (p.name.as_str(), p.seconds))
            .collect();
        // The kernel's clock started at 20.0 - 2.5, not at 17.0 when its first line arrived.
        assert_eq!(
            got,
            [
                ("firmware", 9.5),
                ("loader", 5.5),
                ("kernel-start", 2.0),
                ("kernel", 2.5)
            ]
        );
    }

    #[test]
    fn each_service_is_a_phase_up_to_its_readiness() {
        let console = stamped(&[
            (9.0, "eci-init: phase services at 8.50"),
            (16.0, "eci-init: ready: eci-supervisor:ready@9.00 containerd:ready@10.00 dockerd:ready@15.00 eci-guard:ready@15.20 uplink:ready@15.25"),
        ]);
        let names: Vec<(String, f64)> = phases(&milestones(&console))
            .into_iter()
            .filter(|p| p.name != "firmware")
            .map(|p| (p.name, p.seconds))
            .collect();
        let want = [
            ("eci-supervisor", 0.5),
            ("containerd", 1.0),
            ("dockerd", 5.0),
            ("eci-guard", 0.2),
            ("uplink", 0.05),
        ];
        assert_eq!(names, want.map(|(n, s)| (n.to_string(), s)));
    }

    #[test]
    fn services_started_together_each_get_their_own_span() {
        let console = stamped(&[
            (9.0, "eci-init: phase services at 5.00"),
            (9.1, "eci-init: eci-supervisor: ready after 0.20 s"),
            (9.3, "eci-init: containerd: ready after 1.30 s"),
            (14.0, "eci-init: dockerd: ready after 4.80 s"),
            (14.1, "eci-init: dockerd: ready after 9.99 s"),
            (14.2, "eci-init: uplink: ready after soon"),
            (
                14.5,
                "eci-init: ready: eci-supervisor:ready@5.20 containerd:ready@6.30 dockerd:ready@10.00 uplink:ready@10.05",
            ),
        ]);
        let report = BootPhases::from_console(&console);
        let got: Vec<(&str, f64, f64, f64)> = report
            .services
            .iter()
            .map(|s| (s.name.as_str(), s.started, s.ready, s.seconds))
            .collect();
        assert_eq!(
            got,
            [
                ("eci-supervisor", 5.0, 5.2, 0.2),
                ("containerd", 5.0, 6.3, 1.3),
                ("dockerd", 5.2, 10.0, 4.8),
            ]
        );
        // The chain is unchanged: dockerd's phase there is what it added after containerd.
        let dockerd = report.phases.iter().find(|p| p.name == "dockerd").unwrap();
        assert_eq!(
            (dockerd.from.as_str(), dockerd.seconds),
            ("containerd-ready", 3.7)
        );
    }

    #[test]
    fn the_first_occurrence_of_a_milestone_counts() {
        let console = stamped(&[
            (1.0, "eci-init: ready: dockerd:ready@9.00"),
            (5.0, "eci-init: ready: dockerd:ready@30.00"),
        ]);
        let got = milestones(&console);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].uptime, 9.0);
    }
}
