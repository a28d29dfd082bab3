//! `eci-build test` (SPEC V7): the end-to-end engine suites of `tests/` ([`SUITES`]) run against the booted VM's engine, through the host endpoint (SPEC H2), and
//! the verdict that comes out of it: JSON on stdout and JUnit XML beside the build.
//!
//! How the suites run. The suites are ordinary `#[test]` functions in cargo test binaries; they
//! drive whatever engine [`VM_DOCKER_HOST_ENV`] names instead of starting a private dockerd. This
//! module asks cargo for the binaries (`--no-run`, the same `--workspace` build `./dev test` made,
//! so nothing is rebuilt), lists each binary's tests (`--list --format terse`, stable libtest
//! output) and runs every test as its own process (`--exact NAME`), one at a time. Why not
//! libtest's JSON: it is unstable (nightly or `RUSTC_BOOTSTRAP`), and a whole-binary run gives
//! no per-test time on stable. One process per test gives exact times from the outside, a
//! per-test timeout (a hung test is killed and reported, the rest still run), and the test's
//! whole output for the failure message. One at a time, because the tests share one VM engine
//! and clean it up after themselves.
//!
//! A test that needs the build machine's side (the allocator's file, eci-runc run directly, a
//! shared folder, dockerd's own socket) prints [`NOT_RUN_MARKER`] and its reason, and is listed
//! as not run; a test that skipped for a missing prerequisite (`SKIPPED: `) counts against the
//! verdict, so a V7 run never passes by skipping.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Names the engine the suites drive (`unix://PATH`). Not `DOCKER_HOST` itself: a developer's
/// DOCKER_HOST may name their own engine, and the suites remove every container of the engine
/// they drive when a test ends.
pub const VM_DOCKER_HOST_ENV: &str = "ECI_E2E_DOCKER_HOST";
/// The line a test prints, followed by its reason, when it does not run against the VM.
pub const NOT_RUN_MARKER: &str = "ECI-E2E-NOT-RUN:";
/// The line `eci_test_support::prerequisite` prints when a test skips.
const SKIPPED_MARKER: &str = "SKIPPED: ";
/// The end-to-end suites `eci-build test` runs, as cargo names their test targets.
/// escapes, vetting, views and dind prove isolation in the VM itself (cgroup v2, the full
/// bounding set), not only on the build machine (issue 10, SPEC P7, M1-M7, F1-F4).
pub const SUITES: &[&str] = &[
    "engine_runc",
    "engine_guard",
    "escapes",
    "vetting",
    "views",
    "dind",
];
/// The package that holds them.
pub const SUITES_PACKAGE: &str = "eci-e2e";
/// How long one test may run against the VM under TCG before it is killed and failed: the
/// slowest that passed on a loaded 2-core machine took 41 s; a stalled stream must not cost CI
/// more than this.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(300);
/// The JUnit file's name in the build folder.
pub const JUNIT_FILE: &str = "junit.xml";

#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("cannot run `{command}` in {}: {detail}", dir.display())]
    Cargo {
        command: String,
        dir: PathBuf,
        detail: String,
    },
    #[error("cargo built no test binary for {suite} of {SUITES_PACKAGE}; is {} the eci checkout?", dir.display())]
    NoBinary { suite: String, dir: PathBuf },
    #[error("cannot list the tests of {}: {detail}", binary.display())]
    List { binary: PathBuf, detail: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// One suite's test binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuiteBinary {
    pub suite: String,
    pub path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Passed,
    Failed,
    /// Not applicable to the VM, with the test's own reason (needs the build machine's side).
    NotRun,
    /// A prerequisite was missing; counts as a failure of the verdict.
    Skipped,
}

/// One entry of the verdict's flat `tests` array.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TestOutcome {
    pub name: String,
    pub suite: String,
    pub status: Status,
    pub seconds: f64,
    /// Why it did not run, or what failed (the panic message or the output's tail).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl TestOutcome {
    /// Whether the verdict can still pass with this test in it.
    pub fn acceptable(&self) -> bool {
        matches!(self.status, Status::Passed | Status::NotRun)
    }
}

/// The suites' test binaries, as `cargo test --workspace --no-run` in `root` reports them.
/// `--workspace` because that is the build `./dev test` made: the same features, so cargo finds
/// everything up to date instead of building the suites again with other features.
pub fn discover(root: &Path) -> Result<Vec<SuiteBinary>, SuiteError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let args = [
        "test",
        "--workspace",
        "--locked",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ];
    let command = format!("cargo {}", args.join(" "));
    let out = Command::new(&cargo)
        .args(args)
        .current_dir(root)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| SuiteError::Cargo {
            command: command.clone(),
            dir: root.to_path_buf(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(SuiteError::Cargo {
            command,
            dir: root.to_path_buf(),
            detail: tail(&String::from_utf8_lossy(&out.stderr), 20),
        });
    }
    let found = binaries_from_cargo(&String::from_utf8_lossy(&out.stdout));
    SUITES
        .iter()
        .map(|suite| {
            found
                .iter()
                .find(|b| b.suite == *suite)
                .cloned()
                .ok_or_else(|| SuiteError::NoBinary {
                    suite: suite.to_string(),
                    dir: root.to_path_buf(),
                })
        })
        .collect()
}

/// The suites' executables among cargo's JSON messages (one object a line).
pub fn binaries_from_cargo(messages: &str) -> Vec<SuiteBinary> {
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| {
            m["package_id"]
                .as_str()
                .is_some_and(|p| p.contains(SUITES_PACKAGE))
        })
        .filter_map(|m| {
            let suite = m["target"]["name"].as_str()?;
            let test_kind = m["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "test"));
            let path = m["executable"].as_str()?;
            (test_kind && SUITES.contains(&suite)).then(|| SuiteBinary {
                suite: suite.to_string(),
                path: PathBuf::from(path),
            })
        })
        .collect()
}

/// The test names of a libtest binary's `--list --format terse` output (`NAME: test`).
pub fn parse_list(terse: &str) -> Vec<String> {
    terse
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_string)
        .collect()
}

pub fn list(binary: &SuiteBinary) -> Result<Vec<String>, SuiteError> {
    let fail = |detail: String| SuiteError::List {
        binary: binary.path.clone(),
        detail,
    };
    let out = Command::new(&binary.path)
        .args(["--list", "--format", "terse"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(tail(&String::from_utf8_lossy(&out.stderr), 10)));
    }
    Ok(parse_list(&String::from_utf8_lossy(&out.stdout)))
}

/// Runs one test of `binary` against the engine at `docker_host`; kills it after `timeout`.
pub fn run_one(
    binary: &SuiteBinary,
    name: &str,
    docker_host: &str,
    timeout: Duration,
) -> TestOutcome {
    let started = Instant::now();
    let outcome = |status, message: Option<String>| TestOutcome {
        name: name.to_string(),
        suite: binary.suite.clone(),
        status,
        seconds: round_ms(started.elapsed().as_secs_f64()),
        message,
    };
    // stdout and stderr in one file keep the test's lines in the order it wrote them.
    let mut log = match tempfile::tempfile() {
        Ok(f) => f,
        Err(e) => return outcome(Status::Failed, Some(format!("no temporary file: {e}"))),
    };
    let spawned = log.try_clone().and_then(|out| {
        let err = out.try_clone()?;
        Command::new(&binary.path)
            .args(["--exact", name, "--nocapture", "--test-threads", "1"])
            .env(VM_DOCKER_HOST_ENV, docker_host)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
    });
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            return outcome(
                Status::Failed,
                Some(format!("cannot run {}: {e}", binary.path.display())),
            )
        }
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if started.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(100))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let mut text = String::new();
    use std::io::Seek;
    let _ = log.seek(std::io::SeekFrom::Start(0));
    let mut bytes = Vec::new();
    let _ = log.read_to_end(&mut bytes);
    text.push_str(&String::from_utf8_lossy(&bytes));
    match status {
        None => outcome(
            Status::Failed,
            Some(format!(
                "killed after {} s without finishing; its output's tail:\n{}",
                timeout.as_secs(),
                tail(&text, 20)
            )),
        ),
        Some(s) => {
            let (status, message) = classify(s.success(), &text);
            outcome(status, message)
        }
    }
}

/// What one test's run says, from its exit status and its whole output.
pub fn classify(exited_ok: bool, output: &str) -> (Status, Option<String>) {
    // With one test thread libtest writes `test NAME ... ` before the test runs, so the test's
    // first line continues that one: a marker is looked for anywhere in a line.
    let marked = |marker: &str| {
        output
            .lines()
            .find_map(|l| l.find(marker).map(|at| &l[at + marker.len()..]))
            .map(|r| r.trim().to_string())
    };
    if !exited_ok {
        return (Status::Failed, Some(failure_message(output)));
    }
    if let Some(reason) = marked(NOT_RUN_MARKER) {
        return (Status::NotRun, Some(reason));
    }
    if let Some(reason) = marked(SKIPPED_MARKER) {
        return (Status::Skipped, Some(reason));
    }
    match summary(output) {
        Some(Summary {
            passed: 1,
            failed: 0,
            ..
        }) => (Status::Passed, None),
        Some(Summary { ignored: 1, .. }) => {
            (Status::Skipped, Some("the test is #[ignore]d".to_string()))
        }
        _ => (
            Status::Failed,
            Some(format!(
                "the binary ran no test of this name; its output's tail:\n{}",
                tail(output, 10)
            )),
        ),
    }
}

/// libtest's `test result: ok. 1 passed; 0 failed; 0 ignored; ...` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Summary {
    passed: u32,
    failed: u32,
    ignored: u32,
}

fn summary(output: &str) -> Option<Summary> {
    let line = output
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("test result: "))?;
    let mut s = Summary::default();
    for part in line.split(';') {
        let mut words = part.split_whitespace().filter(|w| !w.ends_with('.'));
        let (Some(n), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u32>() else { continue };
        match what {
            "passed" => s.passed = n,
            "failed" => s.failed = n,
            "ignored" => s.ignored = n,
            _ => {}
        }
    }
    Some(s)
}

/// The panic (`thread '...' panicked at FILE:LINE:COL:` and its message, up to the backtrace
/// or the note about one), else the output's tail.
fn failure_message(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    if let Some(at) = lines.iter().position(|l| l.contains("panicked at")) {
        let msg: Vec<&str> = lines[at..]
            .iter()
            .take_while(|l| !l.starts_with("note: ") && !l.starts_with("stack backtrace:"))
            .take(40)
            .copied()
            .collect();
        return msg.join("\n").trim_end().to_string();
    }
    tail(output, 20)
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn round_ms(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

/// What the suites' boot did, for the verdict.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EndpointBoot {
    pub accel: String,
    /// From QEMU's start to the guard's first `/_ping` answer over vsock.
    pub engine_ready_seconds: f64,
    /// The whole boot, suites included, to QEMU's exit.
    pub seconds: f64,
    /// The VM powered off on the ACPI button (false: QEMU had to be stopped).
    pub powered_off_cleanly: bool,
    pub console_log: PathBuf,
    /// A first boot that died before its engine answered, and how (its console log's last
    /// lines): booted once more, and said here, never hidden.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retried_after: Option<Vec<String>>,
}

/// The suites' boot: the VM `command` starts, with its host endpoint in `run_dir`.
pub struct VmSuites<'a> {
    /// The QEMU command line's maker ([`crate::boot::direct_command`]); called again for a
    /// second boot.
    pub command: &'a dyn Fn() -> Result<(Command, crate::boot::Accel), crate::boot::BootError>,
    pub run_dir: &'a Path,
    /// The eci cache, where `./dev` installed the vsock backend.
    pub cache_root: &'a Path,
    pub memory_mib: u32,
    pub console_log: &'a Path,
    /// How long the engine may take to answer.
    pub engine_timeout: Duration,
    /// How long one test may take.
    pub test_timeout: Duration,
    pub reach: crate::host_endpoint::EngineReach,
}

/// A boot that went wrong before the suites could finish, with what the VM said last.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct BootFailure {
    #[source]
    pub source: crate::host_endpoint::EndpointError,
    pub console_log: PathBuf,
}

/// Boots the VM with its host endpoint, waits for the engine, runs every listed test of every
/// suite against it, one at a time, and powers the VM off. `progress` hears each phase and test.
pub fn run_in_vm(
    vm: VmSuites<'_>,
    suites: &[(SuiteBinary, Vec<String>)],
    progress: &dyn Fn(&str),
) -> Result<(EndpointBoot, Vec<TestOutcome>), BootFailure> {
    use crate::host_endpoint::{self, Relay, StartOptions, DOCKER_SOCKET};
    use crate::vsock::ENGINE_PORT;
    let fail = |source| BootFailure {
        source,
        console_log: vm.console_log.to_path_buf(),
    };
    let boot =
        || -> Result<(host_endpoint::RunningVm, f64, Instant), host_endpoint::EndpointError> {
            progress("booting");
            let started = Instant::now();
            let mut running = host_endpoint::start(
                (vm.command)()?,
                &StartOptions {
                    run_dir: vm.run_dir,
                    cache_root: vm.cache_root,
                    memory_mib: vm.memory_mib,
                    console_log: vm.console_log,
                    echo: false,
                    reach: vm.reach,
                },
            )?;
            progress(match vm.reach {
                crate::host_endpoint::EngineReach::Vsock => "waiting for the engine over vsock",
                crate::host_endpoint::EngineReach::StandinRelay { .. } => {
                    "waiting for the engine through the WSL stand-in's relay"
                }
            });
            let ready = running.wait_engine(ENGINE_PORT, vm.engine_timeout)?;
            Ok((running, ready, started))
        };
    // A guest that died before its engine answered gets one more boot: under TCG the Debian
    // kernel has been seen to oops (int3) early, now and then, on this project's machines
    // (runtime/README.md). The first boot's end is kept in the verdict.
    let mut retried_after = None;
    let (mut running, ready, started) = match boot() {
        Err(host_endpoint::EndpointError::Exited { .. }) => {
            retried_after = Some(console_tail(vm.console_log, 15));
            boot().map_err(fail)?
        }
        other => other.map_err(fail)?,
    };
    let accel = match running.accel {
        crate::boot::Accel::Kvm => "kvm",
        _ => "tcg",
    }
    .to_string();
    let relay = Relay::serve(
        &vm.run_dir.join(DOCKER_SOCKET),
        running.device.clone(),
        ENGINE_PORT,
    )
    .map_err(fail)?;
    let total: usize = suites.iter().map(|(_, names)| names.len()).sum();
    let mut outcomes = Vec::with_capacity(total);
    for (binary, names) in suites {
        for name in names {
            if let Some(code) = running.exited() {
                // The VM is gone: the remaining tests cannot run, and say so.
                outcomes.push(TestOutcome {
                    name: name.clone(),
                    suite: binary.suite.clone(),
                    status: Status::Failed,
                    seconds: 0.0,
                    message: Some(format!(
                        "the VM stopped during the suites (QEMU exit {code:?}); console log: {}",
                        vm.console_log.display()
                    )),
                });
                continue;
            }
            progress(&format!(
                "{}/{total} {}::{name}",
                outcomes.len() + 1,
                binary.suite
            ));
            outcomes.push(run_one(binary, name, &relay.docker_host(), vm.test_timeout));
        }
    }
    drop(relay);
    progress("powering off");
    let clean = running.power_off(Duration::from_secs(120));
    Ok((
        EndpointBoot {
            accel,
            engine_ready_seconds: round_ms(ready),
            seconds: round_ms(started.elapsed().as_secs_f64()),
            powered_off_cleanly: clean,
            console_log: vm.console_log.to_path_buf(),
            retried_after,
        },
        outcomes,
    ))
}

/// `path` and `sha256` of every artifact manifest.json lists.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArtifactHash {
    pub path: String,
    pub sha256: String,
}

/// The artifacts of the build in `out`, from its manifest.json (empty when it cannot be read;
/// the boot then fails and says why).
pub fn artifact_hashes(out: &Path) -> Vec<ArtifactHash> {
    let text =
        std::fs::read_to_string(out.join(crate::artifact::MANIFEST_FILE)).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    v["artifacts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| {
                    Some(ArtifactHash {
                        path: e["path"].as_str()?.to_string(),
                        sha256: e["sha256"].as_str()?.to_string(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The last `n` lines of a console log, for a verdict whose boot failed.
pub fn console_tail(log: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    tail(&text, n).lines().map(str::to_string).collect()
}

/// `eci-build test`'s answer, printed as JSON.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verdict {
    pub target: String,
    pub firmware: String,
    /// Every test passed or was not run for its stated reason, the self-test passed, and
    /// nothing went wrong on the way. The exit code says the same.
    pub passed: bool,
    pub seconds: f64,
    /// What was booted: manifest.json's artifacts.
    pub artifacts: Vec<ArtifactHash>,
    /// The self-test boot: accelerator, boot milestones and phases, the self-test's facts.
    pub boot: Option<crate::boot::BootResult>,
    /// The suites' boot with its host endpoint.
    pub endpoint: Option<EndpointBoot>,
    /// Why no suite ran against this image, when none could.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suites_not_run: Option<String>,
    /// Every test of the suites, then the self-test as one more entry.
    pub tests: Vec<TestOutcome>,
    pub junit: Option<PathBuf>,
    /// What went wrong outside the tests (a boot that failed or timed out, a suite that could
    /// not be listed); empty on a pass.
    pub errors: Vec<String>,
    /// The last console lines of the boot that failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub console_tail: Vec<String>,
}

impl Verdict {
    pub fn new(target: &str, firmware: &str, out: &Path) -> Verdict {
        Verdict {
            target: target.to_string(),
            firmware: firmware.to_string(),
            passed: false,
            seconds: 0.0,
            artifacts: artifact_hashes(out),
            boot: None,
            endpoint: None,
            suites_not_run: None,
            tests: Vec::new(),
            junit: None,
            errors: Vec::new(),
            console_tail: Vec::new(),
        }
    }

    /// Adds the self-test boot and its verdict as the `selftest` entry of `tests`.
    pub fn add_selftest(&mut self, boot: crate::boot::BootResult) {
        self.tests.push(TestOutcome {
            name: "selftest".into(),
            suite: "selftest".into(),
            status: if boot.selftest.passed() {
                Status::Passed
            } else {
                Status::Failed
            },
            seconds: round_ms(boot.seconds),
            message: (!boot.selftest.passed()).then(|| match &boot.selftest.status {
                None => "the self-test never reported its end (ECI-SELFTEST-END)".to_string(),
                Some(s) => format!("status={s}; its facts are in boot.selftest"),
            }),
        });
        self.boot = Some(boot);
    }

    /// Settles `passed` once everything is in.
    pub fn finish(&mut self, seconds: f64) {
        self.seconds = round_ms(seconds);
        self.passed = self.errors.is_empty()
            && self.tests.iter().any(|t| t.suite == "selftest")
            && self.tests.iter().all(TestOutcome::acceptable);
    }
}

/// The kernel module that gives an image its vsock transport under QEMU.
pub const VIRTIO_VSOCK_MODULE: &str = "vmw_vsock_virtio_transport";

/// How a boot of `spec` on `firmware` reaches its engine from the host under QEMU; the reason
/// when it cannot.
pub fn host_endpoint_under_qemu(
    spec: &crate::spec::ImageSpec,
    firmware: crate::boot::BootPath,
) -> Result<crate::host_endpoint::EngineReach, String> {
    use crate::host_endpoint::EngineReach;
    if firmware == crate::boot::BootPath::Uefi {
        return Err(format!(
            "the UEFI path boots the Hyper-V disk, and under QEMU that image has no host endpoint: its only vsock transport is hv_sock (Hyper-V's), it does not load {VIRTIO_VSOCK_MODULE}"
        ));
    }
    if spec.target == crate::artifact::wsl2::TARGET {
        // WSL's own endpoint is hv_sock too; the stand-in relays a forwarded port instead.
        return Ok(EngineReach::StandinRelay {
            guest_port: crate::wsl_standin::RELAY_PORT,
        });
    }
    if !spec.kernel.modules.iter().any(|m| m == VIRTIO_VSOCK_MODULE) {
        return Err(format!(
            "{} loads no {VIRTIO_VSOCK_MODULE}, so under QEMU it has no host endpoint (the qemu target has one)",
            spec.target
        ));
    }
    Ok(EngineReach::Vsock)
}

/// What `eci-build test` runs.
pub struct TestRun<'a> {
    pub target: &'a str,
    pub firmware: crate::boot::BootPath,
    /// The build folder; junit.xml is written there.
    pub out: &'a Path,
    /// The checkout whose suites run (cargo's workspace).
    pub checkout: &'a Path,
    /// The suites' boot (its console log is its own) and how its engine is reached, or why
    /// this image cannot have one.
    pub suites_boot: Result<(crate::boot::BootOptions, crate::host_endpoint::EngineReach), String>,
    pub cache_root: &'a Path,
    pub test_timeout: Duration,
}

/// The test: the suites' boot (when the image has a host endpoint under QEMU), then the
/// self-test boot `selftest` runs; never fails, every failure lands in the verdict.
///
/// Two boots, because the self-test powers the VM off when it ends and the VM has no shell to
/// start it in a running VM (SPEC V4); its boot also sees a VM no suite has touched.
pub fn run_test(
    run: TestRun<'_>,
    progress: &dyn Fn(&str),
    selftest: &mut dyn FnMut() -> anyhow::Result<crate::boot::BootResult>,
) -> Verdict {
    let started = Instant::now();
    let mut v = Verdict::new(run.target, run.firmware.name(), run.out);
    progress("finding the suites (cargo test --no-run)");
    let listed: Result<Vec<(SuiteBinary, Vec<String>)>, SuiteError> = discover(run.checkout)
        .and_then(|bins| {
            bins.into_iter()
                .map(|b| list(&b).map(|names| (b, names)))
                .collect()
        });
    match (listed, run.suites_boot) {
        (Err(e), _) => v.errors.push(e.to_string()),
        (Ok(suites), Err(reason)) => {
            for (b, names) in &suites {
                v.tests.extend(names.iter().map(|n| TestOutcome {
                    name: n.clone(),
                    suite: b.suite.clone(),
                    status: Status::NotRun,
                    seconds: 0.0,
                    message: Some(reason.clone()),
                }));
            }
            v.suites_not_run = Some(reason);
        }
        (Ok(suites), Ok((opts, reach))) => {
            let run_dir = run.out.join("run-test");
            let command = || crate::boot::direct_command(&opts);
            let vm = std::fs::create_dir_all(&run_dir)
                .map_err(|e| format!("cannot create {}: {e}", run_dir.display()))
                .map(|()| VmSuites {
                    command: &command,
                    run_dir: &run_dir,
                    cache_root: run.cache_root,
                    memory_mib: opts.memory_mib,
                    console_log: &opts.console_log,
                    engine_timeout: opts.timeout,
                    test_timeout: run.test_timeout,
                    reach,
                });
            match vm.map(|vm| run_in_vm(vm, &suites, progress)) {
                Err(e) => v.errors.push(e),
                Ok(Err(e)) => {
                    v.errors.push(format!("the suites' boot: {e}"));
                    v.console_tail = console_tail(&e.console_log, 30);
                }
                Ok(Ok((boot, tests))) => {
                    if !boot.powered_off_cleanly {
                        v.errors.push(format!(
                            "the suites' VM did not power off on the ACPI button; console log: {}",
                            boot.console_log.display()
                        ));
                    }
                    v.endpoint = Some(boot);
                    v.tests.extend(tests);
                }
            }
        }
    }
    progress("self-test boot");
    match selftest() {
        Ok(boot) => v.add_selftest(boot),
        Err(e) => {
            v.errors.push(format!("the self-test boot: {e:#}"));
            if v.console_tail.is_empty() {
                v.console_tail = console_tail(&run.out.join("console.log"), 30);
            }
        }
    }
    let junit_path = run.out.join(JUNIT_FILE);
    let name = format!("eci-build test {} {}", run.target, run.firmware.name());
    match std::fs::write(&junit_path, junit(&name, &v.tests)) {
        Ok(()) => v.junit = Some(junit_path),
        Err(e) => v
            .errors
            .push(format!("cannot write {}: {e}", junit_path.display())),
    }
    v.finish(started.elapsed().as_secs_f64());
    v
}

/// The progress line: one spinner whose message is the current phase or test, on a terminal
/// only; hidden when `show` is false (`--format json`).
pub fn progress_bar(show: bool) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !show || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
            .expect("static template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

impl Verdict {
    /// The verdict for a terminal (`--format text`).
    pub fn render_text(&self) -> String {
        let mut t = String::new();
        for test in &self.tests {
            t.push_str(&format!(
                "  {:<8} {:>8.1} s  {}::{}\n",
                match test.status {
                    Status::Passed => "ok",
                    Status::Failed => "FAILED",
                    Status::NotRun => "not run",
                    Status::Skipped => "SKIPPED",
                },
                test.seconds,
                test.suite,
                test.name
            ));
            // Not-run reasons shared by every test are said once, below.
            let shared = test.status == Status::NotRun && self.suites_not_run.is_some();
            if let (Some(m), false) = (&test.message, shared) {
                for l in m.lines().take(8) {
                    t.push_str(&format!("           {l}\n"));
                }
            }
        }
        if let Some(r) = &self.suites_not_run {
            t.push_str(&format!("suites not run: {r}\n"));
        }
        if let Some(e) = &self.endpoint {
            t.push_str(&format!(
                "suites' boot: engine ready after {:.1} s, {:.1} s in all ({})\n",
                e.engine_ready_seconds, e.seconds, e.accel
            ));
        }
        if let Some(b) = &self.boot {
            for p in &b.timeline.phases {
                t.push_str(&format!(
                    "  phase {:<18} {:>7.3} s ({} -> {})\n",
                    p.name, p.seconds, p.from, p.to
                ));
            }
        }
        for e in &self.errors {
            t.push_str(&format!("error: {e}\n"));
        }
        for l in &self.console_tail {
            t.push_str(&format!("  | {l}\n"));
        }
        let count = |s: Status| self.tests.iter().filter(|t| t.status == s).count();
        t.push_str(&format!(
            "{} {}: {} in {:.1} s: {} passed, {} failed, {} not run in the VM, {} skipped\n",
            self.target,
            self.firmware,
            if self.passed { "pass" } else { "FAIL" },
            self.seconds,
            count(Status::Passed),
            count(Status::Failed),
            count(Status::NotRun),
            count(Status::Skipped)
        ));
        t
    }
}

/// JUnit XML for `tests`, one `<testsuite>` per suite in the order they first appear.
pub fn junit(name: &str, tests: &[TestOutcome]) -> String {
    let mut suites: Vec<&str> = Vec::new();
    for t in tests {
        if !suites.contains(&t.suite.as_str()) {
            suites.push(&t.suite);
        }
    }
    let count = |ts: &[&TestOutcome], s: Status| ts.iter().filter(|t| t.status == s).count();
    let all: Vec<&TestOutcome> = tests.iter().collect();
    let seconds = |ts: &[&TestOutcome]| ts.iter().map(|t| t.seconds).sum::<f64>();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<testsuites name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{:.3}\">\n",
        escape(name),
        all.len(),
        count(&all, Status::Failed),
        count(&all, Status::NotRun) + count(&all, Status::Skipped),
        seconds(&all)
    ));
    for suite in suites {
        let ts: Vec<&TestOutcome> = tests.iter().filter(|t| t.suite == suite).collect();
        x.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{:.3}\">\n",
            escape(suite),
            ts.len(),
            count(&ts, Status::Failed),
            count(&ts, Status::NotRun) + count(&ts, Status::Skipped),
            seconds(&ts)
        ));
        for t in ts {
            let open = format!(
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                escape(&t.suite),
                escape(&t.name),
                t.seconds
            );
            let msg = t.message.as_deref().unwrap_or("");
            match t.status {
                Status::Passed => x.push_str(&format!("{open}/>\n")),
                Status::Failed => x.push_str(&format!(
                    "{open}>\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                    escape(msg.lines().next().unwrap_or("failed")),
                    escape(msg)
                )),
                Status::NotRun | Status::Skipped => x.push_str(&format!(
                    "{open}>\n      <skipped message=\"{}{}\"/>\n    </testcase>\n",
                    if t.status == Status::NotRun {
                        "not run in the VM: "
                    } else {
                        "skipped: "
                    },
                    escape(msg)
                )),
            }
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

/// XML text and attribute escaping; characters XML 1.0 cannot carry at all (most control
/// characters, which test output may hold) become U+FFFD.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' => out.push_str("&#9;"),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real output of `engine_runc --exact NAME --nocapture --test-threads 1`, captured byte for
    // byte from the suite binary (stdout and stderr in one file, as run_one keeps them).
    const PASSED: &str = "\nrunning 1 test\ntest docker_lifecycle_works ... ok\n\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 15 filtered out; finished in 21.43s\n\n";

    #[test]
    fn a_passing_test_is_read_from_libtests_summary() {
        assert_eq!(classify(true, PASSED), (Status::Passed, None));
    }

    #[test]
    fn a_binary_that_ran_no_such_test_is_a_failure_not_a_pass() {
        let out = "\nrunning 0 tests\n\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 16 filtered out; finished in 0.00s\n\n";
        let (s, m) = classify(true, out);
        assert_eq!(s, Status::Failed);
        assert!(m.unwrap().contains("ran no test of this name"));
    }

    #[test]
    fn the_not_run_marker_carries_the_tests_reason() {
        let out = "\nrunning 1 test\ntest ranges_are_disjoint_released_and_reused ... ECI-E2E-NOT-RUN: reads the id allocator's table (ranges.json), which is inside the VM\nok\n\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 15 filtered out; finished in 0.00s\n\n";
        assert!(out.contains(NOT_RUN_MARKER));
        assert_eq!(
            classify(true, out),
            (
                Status::NotRun,
                Some(
                    "reads the id allocator's table (ranges.json), which is inside the VM"
                        .to_string()
                )
            )
        );
    }

    #[test]
    fn a_skip_for_a_missing_prerequisite_is_not_a_pass() {
        let out = "\nrunning 1 test\ntest containers_get_an_exclusive_user_namespace ... SKIPPED: the VM's engine does not answer /_ping on /nonexistent\nok\n\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 15 filtered out; finished in 0.00s\n\n";
        let (s, m) = classify(true, out);
        assert_eq!(s, Status::Skipped);
        assert_eq!(
            m.as_deref(),
            Some("the VM's engine does not answer /_ping on /nonexistent")
        );
        assert!(!TestOutcome {
            name: "x".into(),
            suite: "s".into(),
            status: s,
            seconds: 0.0,
            message: m
        }
        .acceptable());
    }

    #[test]
    fn a_failure_keeps_the_panic_message() {
        let out = "\nrunning 1 test\ntest guard_passes_streams_and_upgrades ... \nthread 'guard_passes_streams_and_upgrades' (7419) panicked at tests/engine_guard.rs:1193:5:\nexport of 93947 bytes\nstack backtrace:\nnote: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.\nFAILED\n\nfailures:\n\nfailures:\n    guard_passes_streams_and_upgrades\n\ntest result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 12 filtered out; finished in 211.54s\n\n";
        let (s, m) = classify(false, out);
        assert_eq!(s, Status::Failed);
        assert_eq!(
            m.as_deref(),
            Some("thread 'guard_passes_streams_and_upgrades' (7419) panicked at tests/engine_guard.rs:1193:5:\nexport of 93947 bytes")
        );
    }

    #[test]
    fn terse_listing_names_every_test() {
        let out = "containers_get_an_exclusive_user_namespace: test\ndirect::runc_surface_on_a_bundle: test\n";
        assert_eq!(
            parse_list(out),
            vec![
                "containers_get_an_exclusive_user_namespace",
                "direct::runc_surface_on_a_bundle"
            ]
        );
    }

    #[test]
    fn cargo_messages_name_the_suite_binaries() {
        let msgs = [
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w/tests#eci-e2e@0.1.0","target":{"kind":["test"],"name":"engine_runc"},"executable":"/w/target/debug/deps/engine_runc-1"}"#,
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w/tests#eci-e2e@0.1.0","target":{"kind":["test"],"name":"views"},"executable":"/w/target/debug/deps/views-2"}"#,
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w/tests#eci-e2e@0.1.0","target":{"kind":["test"],"name":"image_boot"},"executable":"/w/target/debug/deps/image_boot-3"}"#,
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w/tests#eci-e2e@0.1.0","target":{"kind":["lib"],"name":"eci_e2e"},"executable":null}"#,
            r#"{"reason":"build-finished","success":true}"#,
        ]
        .join("\n");
        // image_boot boots images itself: not a suite of the VM's engine.
        assert_eq!(
            binaries_from_cargo(&msgs),
            vec![
                SuiteBinary {
                    suite: "engine_runc".into(),
                    path: "/w/target/debug/deps/engine_runc-1".into()
                },
                SuiteBinary {
                    suite: "views".into(),
                    path: "/w/target/debug/deps/views-2".into()
                }
            ]
        );
    }

    fn sample() -> Vec<TestOutcome> {
        let t = |name: &str, suite: &str, status, message: Option<&str>| TestOutcome {
            name: name.into(),
            suite: suite.into(),
            status,
            seconds: 1.5,
            message: message.map(str::to_string),
        };
        vec![
            t("a", "engine_runc", Status::Passed, None),
            t(
                "b",
                "engine_runc",
                Status::Failed,
                Some("panicked at <x> & \"y\"\n\u{1b}[0m"),
            ),
            t(
                "c",
                "engine_guard",
                Status::NotRun,
                Some("needs dockerd's own socket"),
            ),
        ]
    }

    #[test]
    fn junit_counts_and_escapes() {
        let x = junit("eci-build test qemu", &sample());
        assert!(x.contains("<testsuites name=\"eci-build test qemu\" tests=\"3\" failures=\"1\" skipped=\"1\" time=\"4.500\">"), "{x}");
        assert!(x.contains("<testsuite name=\"engine_runc\" tests=\"2\" failures=\"1\" skipped=\"0\" time=\"3.000\">"), "{x}");
        assert!(x.contains("<testcase classname=\"engine_runc\" name=\"a\" time=\"1.500\"/>"));
        assert!(x.contains("<failure message=\"panicked at &lt;x&gt; &amp; &quot;y&quot;\">panicked at &lt;x&gt; &amp; &quot;y&quot;&#10;\u{fffd}[0m</failure>"), "{x}");
        assert!(
            x.contains("<skipped message=\"not run in the VM: needs dockerd&apos;s own socket\"/>")
        );
        assert_eq!(x.matches("<testcase ").count(), 3);
        assert_eq!(x.matches("</testsuite>").count(), 2);
    }

    fn verdict_with(tests: Vec<TestOutcome>) -> Verdict {
        let out = tempfile::tempdir().unwrap();
        std::fs::write(
            out.path().join(crate::artifact::MANIFEST_FILE),
            r#"{"artifacts": [{"path": "vmlinuz", "size": 3, "sha256": "ab"}]}"#,
        )
        .unwrap();
        let mut v = Verdict::new("qemu", "direct", out.path());
        v.tests = tests;
        v
    }

    fn selftest_entry(status: Status) -> TestOutcome {
        TestOutcome {
            name: "selftest".into(),
            suite: "selftest".into(),
            status,
            seconds: 60.0,
            message: None,
        }
    }

    #[test]
    fn the_verdict_passes_only_with_every_test_acceptable_and_the_selftest_in() {
        let mut tests = sample();
        tests.remove(1); // the failure
        let mut v = verdict_with(tests.clone());
        v.finish(1.0);
        assert!(!v.passed, "no self-test entry: not a pass");
        tests.push(selftest_entry(Status::Passed));
        let mut v = verdict_with(tests.clone());
        v.finish(1.0);
        assert!(
            v.passed,
            "passed and not-run tests with a passing self-test"
        );
        let mut v = verdict_with(tests.clone());
        v.errors.push("the suites' boot: timeout".into());
        v.finish(1.0);
        assert!(!v.passed);
        let mut v = verdict_with(sample());
        v.tests.push(selftest_entry(Status::Passed));
        v.finish(1.0);
        assert!(!v.passed, "a failed test fails the verdict");
    }

    #[test]
    fn each_image_says_how_its_engine_is_reached_under_qemu() {
        use crate::boot::BootPath;
        use crate::host_endpoint::EngineReach;
        let ws = crate::testing::checkout();
        let spec = |t: &str| crate::spec::load(&ws.definition(t)).unwrap();
        let (qemu, hyperv, wsl2) = (spec("qemu"), spec("hyperv"), spec("wsl2"));
        // The qemu image loads the virtio transport as a boot module.
        assert_eq!(
            host_endpoint_under_qemu(&qemu, BootPath::Direct),
            Ok(EngineReach::Vsock)
        );
        // The WSL2 kernel has hv_sock only; the stand-in relays a forwarded port.
        assert_eq!(
            host_endpoint_under_qemu(&wsl2, BootPath::Direct),
            Ok(EngineReach::StandinRelay {
                guest_port: crate::wsl_standin::RELAY_PORT
            })
        );
        // Hyper-V's only transport is hv_sock; the UEFI path boots that disk.
        let why = host_endpoint_under_qemu(&hyperv, BootPath::Direct).unwrap_err();
        assert!(why.contains(VIRTIO_VSOCK_MODULE), "{why}");
        let why = host_endpoint_under_qemu(&qemu, BootPath::Uefi).unwrap_err();
        assert!(why.contains("hv_sock"), "{why}");
    }

    #[test]
    fn the_verdict_json_has_the_fields_ci_reads() {
        let mut v = verdict_with(sample());
        v.finish(2.0);
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(j["target"], "qemu");
        assert_eq!(j["firmware"], "direct");
        assert_eq!(j["passed"], false);
        assert_eq!(
            j["artifacts"],
            serde_json::json!([{"path": "vmlinuz", "sha256": "ab"}])
        );
        let tests = j["tests"].as_array().unwrap();
        assert_eq!(tests.len(), 3);
        for t in tests {
            for key in ["name", "suite", "status", "seconds"] {
                assert!(!t[key].is_null(), "{key} missing in {t}");
            }
        }
        assert_eq!(tests[0]["status"], "passed");
        assert_eq!(tests[2]["status"], "not_run");
        assert!(tests[0].get("message").is_none());
        assert!(j.get("console_tail").is_none(), "only when a boot failed");
    }

    /// An independent XML parser (Python's, when this machine has it) must accept the file.
    #[test]
    fn junit_is_well_formed_xml() {
        let python = ["python3", "python"]
            .into_iter()
            .find(|p| eci_test_support::have(p));
        if !eci_test_support::prerequisite(python.is_some(), "python3 (to parse the JUnit XML)") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(JUNIT_FILE);
        std::fs::write(&file, junit("t", &sample())).unwrap();
        let out = crate::testing::run_ok(Command::new(python.unwrap()).arg("-c").arg(
            "import sys, xml.etree.ElementTree as E\nr = E.parse(sys.argv[1]).getroot()\nprint(len(r.findall('testsuite/testcase')), len(r.findall('.//failure')), len(r.findall('.//skipped')))",
        ).arg(&file));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3 1 1");
    }
}
