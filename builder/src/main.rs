//! `eci-build`: turns an image definition into verified VM artifacts and proves them by booting.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use eci_build::apt::fetch::{Cache, FetchOptions};
use eci_build::boot::{self, Accel, BootOptions, BootPath, BootResult, UefiBootOptions};
use eci_build::workspace::Workspace;
use eci_build::{inspect, kernel, kernel_build, pipeline};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "eci-build",
    version,
    about = "Build and prove the eci container VM"
)]
struct Cli {
    /// Folder with the image definitions (`T.yaml`) and their locks (`T.lock`).
    #[arg(long, global = true, value_name = "DIR")]
    images: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Resolve the definition's packages from the Debian mirror and pin them in `images/T.lock`.
    Lock {
        #[arg(long)]
        target: String,
        /// Mirror for every suite (`URL`) or one suite (`SUITE=URL`); default: the apt sources.
        #[arg(long, value_name = "[SUITE=]URL")]
        mirror: Vec<String>,
        /// Where apt's sources live.
        #[arg(long, default_value = "/etc/apt", value_name = "DIR")]
        sources_root: PathBuf,
    },
    /// Build the target's kernel, initramfs, manifest.json and SBOM from its lock.
    Image {
        #[arg(long)]
        target: String,
        /// Output folder (default: out/TARGET).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Never touch the network; fail if the cache lacks a package.
        #[arg(long)]
        offline: bool,
        /// Parallel downloads.
        #[arg(long, default_value_t = 4)]
        jobs: usize,
        /// Package cache (default: $ECI_CACHE_DIR, $XDG_CACHE_HOME/eci or ~/.cache/eci).
        #[arg(long, value_name = "DIR")]
        cache: Option<PathBuf>,
        #[arg(long, value_name = "[SUITE=]URL")]
        mirror: Vec<String>,
        #[arg(long, default_value = "/etc/apt", value_name = "DIR")]
        sources_root: PathBuf,
        /// Build the VM binaries with another Rust toolchain than rust-toolchain.toml names;
        /// manifest.json and the SBOM record it, and the image is not a verifiable rebuild.
        #[arg(long)]
        allow_other_toolchain: bool,
    },
    /// List what an artifact contains: an initramfs, a .deb, or an output folder.
    Inspect {
        artifact: PathBuf,
        /// Compare with this build folder or artifact instead: name every file (and member of
        /// an initramfs or tarball) that differs; exit 1 when anything does.
        #[arg(long, value_name = "OTHER")]
        diff: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check kernels against the target's pinned configuration; lock and build our own.
    Kernel {
        #[command(subcommand)]
        command: KernelCommand,
    },
    /// Validate an admin-settings.json and print the effective engine configuration.
    Settings {
        #[command(subcommand)]
        command: SettingsCommand,
    },
    /// Boot the built image under QEMU and serve its engine on a host socket until stopped
    /// (Ctrl-C or `eci-build stop`): prints `export DOCKER_HOST=unix://...` once the engine
    /// answers (SPEC H2). An image without the virtio vsock transport boots with its console
    /// on this terminal until it powers off.
    Boot {
        #[command(flatten)]
        boot: BootArgs,
        /// Show the VM's console on this terminal (it is always kept in console.log).
        #[arg(long)]
        console: bool,
        /// Share a folder of this machine with the VM (repeatable; SPEC H3): it appears under
        /// /mnt/host at its own path (/home/me/src at /mnt/host/home/me/src), where
        /// `docker run -v` binds it, owners as the host has them (virtiofs, needs virtiofsd).
        #[arg(long, value_name = "HOSTDIR")]
        share: Vec<PathBuf>,
    },
    /// Power off the VM a running `eci-build boot` serves, cleanly (the ACPI power button).
    Stop {
        #[arg(long)]
        target: String,
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Boot the built image, run the end-to-end suites against its engine through the host
    /// endpoint (SPEC V7; where the image has one under QEMU), then the in-VM self-test; print
    /// the verdict, write junit.xml beside the build; exit code = verdict.
    Test {
        #[command(flatten)]
        boot: BootArgs,
        /// Output format of the verdict.
        #[arg(long, default_value = "json")]
        format: Format,
    },
}

#[derive(Subcommand)]
enum KernelCommand {
    /// Print option, wanted, found and reason for every pin; exit 1 on any violation.
    Check {
        #[arg(long)]
        target: String,
        /// A kernel config file, /proc/config.gz, a source tree or a kernel .deb
        /// (default: the kernel package pinned in images/TARGET.lock, from the cache).
        config: Option<PathBuf>,
        #[arg(long, default_value = "text")]
        format: Format,
        #[arg(long, value_name = "DIR")]
        cache: Option<PathBuf>,
    },
    /// Pin the kernel source package (kernel-config/source.yaml) in kernel-config/source.lock.
    Lock {
        #[arg(long, value_name = "[SUITE=]URL")]
        mirror: Vec<String>,
        #[arg(long, default_value = "/etc/apt", value_name = "DIR")]
        sources_root: PathBuf,
        /// The kernel-config folder (default: next to the images folder).
        #[arg(long, value_name = "DIR")]
        kernel_config: Option<PathBuf>,
    },
    /// Build our own kernel for a target from the pinned source, its fragments and
    /// kernel-config/generated/TARGET.config.
    Build {
        #[arg(long)]
        target: String,
        /// Only regenerate kernel-config/generated/TARGET.config (review the diff, commit it).
        #[arg(long)]
        config_only: bool,
        /// Parallel compile jobs (default: the number of CPUs).
        #[arg(long)]
        jobs: Option<usize>,
        /// Output folder (default: out/kernel/TARGET).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Never touch the network; fail if the cache lacks the source package.
        #[arg(long)]
        offline: bool,
        #[arg(long, value_name = "DIR")]
        cache: Option<PathBuf>,
        #[arg(long, value_name = "[SUITE=]URL")]
        mirror: Vec<String>,
        #[arg(long, default_value = "/etc/apt", value_name = "DIR")]
        sources_root: PathBuf,
        #[arg(long, value_name = "DIR")]
        kernel_config: Option<PathBuf>,
        /// Do not show make's output.
        #[arg(long)]
        quiet: bool,
    },
}

#[derive(Subcommand)]
enum SettingsCommand {
    /// Check FILE (Docker Desktop's admin-settings.json format) and show what it produces.
    Check { file: PathBuf },
}

#[derive(clap::Args)]
struct BootArgs {
    #[arg(long)]
    target: String,
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// auto probes KVM briefly and falls back to TCG.
    #[arg(long, default_value = "auto")]
    accel: Accel,
    /// direct: QEMU loads vmlinuz and initramfs.img itself; uefi: OVMF boots boot.vhdx (with
    /// data.vhdx attached, writes discarded), as Hyper-V Generation 2 does.
    #[arg(long, default_value = "direct")]
    firmware: BootPath,
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    #[arg(long, default_value_t = 2048)]
    memory: u32,
    #[arg(long, default_value_t = 2)]
    cpus: u32,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Json,
    Text,
}

fn kernel_config_dir(ws: &Workspace, flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| ws.kernel_config_dir())
}

fn out_dir(ws: &Workspace, target: &str, flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| ws.out_dir(target))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let ws = Workspace::find(cli.images);
    match cli.command {
        Command::Lock {
            target,
            mirror,
            sources_root,
        } => {
            let spec = pipeline::load_spec(&ws, &target)?;
            let path = ws.lock(&target);
            let lockfile = pipeline::lock_target(&spec, &sources_root, &mirror)?;
            lockfile
                .write(&path)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "locked {} packages for {target} in {} (source date {})",
                lockfile.packages.len(),
                path.display(),
                eci_build::artifact::rfc3339(lockfile.source_date_epoch.max(0) as u64)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Image {
            target,
            out,
            offline,
            jobs,
            cache,
            mirror,
            sources_root,
            allow_other_toolchain,
        } => {
            let out = out_dir(&ws, &target, out);
            let req = pipeline::ImageRequest {
                workspace: ws,
                target: target.clone(),
                out_dir: out.clone(),
                cache: Cache::new(cache.unwrap_or_else(Cache::default_location)),
                fetch: FetchOptions {
                    jobs,
                    offline,
                    ..FetchOptions::default()
                },
                sources_root,
                mirrors: mirror,
                allow_other_toolchain,
            };
            let report = pipeline::build_image(&req)?;
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            eprintln!(
                "fetched {} files ({} bytes), {} from cache, in {:.1} s",
                report.fetch.downloaded,
                report.fetch.downloaded_bytes,
                report.fetch.cached,
                report.seconds_fetch
            );
            for a in &report.manifest.artifacts {
                eprintln!("  {:<16} {:>12} bytes  sha256 {}", a.path, a.size, a.sha256);
            }
            eprintln!(
                "built {target} in {:.1} s: {}",
                report.seconds_total,
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect {
            artifact,
            diff: Some(other),
            json,
        } => {
            // `inspect --diff A B`: A is the baseline.
            let report = eci_build::diff::diff(&other, &artifact)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            Ok(if report.identical() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Inspect {
            artifact,
            diff: None,
            json,
        } => {
            let listing = inspect::inspect(&artifact)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&listing)?);
            } else {
                print!("{}", listing.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Kernel {
            command:
                KernelCommand::Check {
                    target,
                    config,
                    format,
                    cache,
                },
        } => {
            let spec = pipeline::load_spec(&ws, &target)?;
            let path = match (config, spec.kernel.package()) {
                (Some(p), _) => p,
                (None, Some((package, _, sha256))) => {
                    let cache = Cache::new(cache.unwrap_or_else(Cache::default_location));
                    let p = cache.path_for(sha256);
                    anyhow::ensure!(
                        p.is_file(),
                        "the pinned kernel {package} is not in the cache ({}); run `eci-build image --target {target}` once or pass a CONFIG",
                        p.display()
                    );
                    p
                }
                (None, None) => {
                    let t = kernel::target(&target)?;
                    let p = kernel_build::Recipe::generated_path(&ws.kernel_config_dir(), t);
                    anyhow::ensure!(
                        p.is_file(),
                        "{target} builds its own kernel and its committed config {} is missing; run `eci-build kernel build --target {target} --config-only` or pass a CONFIG",
                        p.display()
                    );
                    p
                }
            };
            let (config, release) = kernel::read_config(&path)?;
            let report = kernel::check(
                &spec,
                &config,
                release.as_deref(),
                spec.kernel.modules.clone(),
            )?;
            match format {
                Format::Json => println!("{}", report.to_json()),
                Format::Text => print!("{}", report.render_table()),
            }
            Ok(if report.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Kernel {
            command:
                KernelCommand::Lock {
                    mirror,
                    sources_root,
                    kernel_config,
                },
        } => {
            let dir = kernel_config_dir(&ws, kernel_config);
            let def_path = dir.join(kernel_build::SOURCE_DEFINITION);
            let def = kernel_build::SourceDefinition::load(&def_path)?;
            let lockfile = def.lock(&sources_root, &mirror)?;
            let path = dir.join(kernel_build::SOURCE_LOCK);
            kernel_build::write_source_lock(&lockfile, &path)?;
            let pkg = &lockfile.packages[0];
            eprintln!(
                "locked {} {} ({} bytes, sha256 {}) from {} in {}",
                pkg.name,
                pkg.version,
                pkg.size,
                pkg.sha256,
                pkg.suite,
                path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Kernel {
            command:
                KernelCommand::Build {
                    target,
                    config_only,
                    jobs,
                    out,
                    offline,
                    cache,
                    mirror,
                    sources_root,
                    kernel_config,
                    quiet,
                },
        } => {
            let dir = kernel_config_dir(&ws, kernel_config);
            let t = kernel::target(&target)?;
            let jobs = jobs.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            });
            let out = out.unwrap_or_else(|| ws.kernel_out_dir(&target));
            let req = kernel_build::BuildRequest {
                recipe: kernel_build::Recipe::for_target(t, &dir)?,
                definition: dir.join(kernel_build::SOURCE_DEFINITION),
                lock: dir.join(kernel_build::SOURCE_LOCK),
                source: kernel_build::SourceFetch {
                    cache: Cache::new(cache.unwrap_or_else(Cache::default_location)),
                    fetch: FetchOptions {
                        offline,
                        ..FetchOptions::default()
                    },
                    sources_root,
                    mirrors: mirror,
                },
                committed: Some(kernel_build::Recipe::generated_path(&dir, t)),
                config_only,
                jobs,
                out_dir: Some(out.clone()),
                echo: !quiet,
            };
            let outcome = kernel_build::run(&req)?;
            for w in &outcome.generated.warnings {
                eprintln!("kconfig: {w}");
            }
            let committed = kernel_build::Recipe::generated_path(&dir, t);
            let rows = &outcome.generated.report.rows;
            eprintln!(
                "{target}: {} {} (kernel {}), {} requested values, pins: {} ok, {} n/a, no violations",
                outcome.tree.package,
                outcome.tree.version,
                outcome.tree.kernel_version,
                outcome.generated.requests.len(),
                rows.iter()
                    .filter(|r| r.status == eci_kernel_config::Status::Ok)
                    .count(),
                rows.iter()
                    .filter(|r| matches!(r.status, eci_kernel_config::Status::NotApplicable(_)))
                    .count(),
            );
            if config_only {
                if outcome.config_changes.is_empty() {
                    eprintln!("{} is up to date", committed.display());
                } else {
                    eprintln!(
                        "{} rewritten; changed lines:\n{}",
                        committed.display(),
                        outcome.config_changes
                    );
                }
            }
            if let Some(built) = &outcome.built {
                eprintln!(
                    "{} {}: {} ({} in {:.0} s with {} jobs), sha256 {}",
                    if built.cached { "cached" } else { "built" },
                    built.info.kernel_release,
                    out.join(kernel_build::KERNEL_IMAGE).display(),
                    if built.cached {
                        "built earlier"
                    } else {
                        "compiled"
                    },
                    built.info.seconds,
                    built.info.jobs,
                    built.info.image_sha256
                );
            }
            eprintln!(
                "source {:.1} s, config {:.1} s, total {:.1} s",
                outcome.seconds_source, outcome.seconds_config, outcome.seconds_total
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Settings {
            command: SettingsCommand::Check { file },
        } => {
            print!("{}", eci_vm_config::check_report(&file)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Boot {
            boot: args,
            console,
            share,
        } => {
            if let Some(code) = serve_engine(&ws, &args, console, &share)? {
                return Ok(code);
            }
            let result = run_boot(&ws, &args, false, true)?;
            eprintln!(
                "VM exited after {:.1} s ({}, {}); console log: {}",
                result.seconds,
                result.accel,
                result.firmware,
                result.console_log.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Stop { target, out } => {
            let run_dir = out_dir(&ws, &target, out).join(RUN_DIR);
            stop_boot(&run_dir)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Test { boot: args, format } => {
            use eci_build::suites::{self, TestRun};
            // The suites' boot has its own console log: the self-test boot writes console.log.
            let spec = pipeline::load_spec(&ws, &args.target)?;
            let out = out_dir(&ws, &args.target, args.out.clone());
            let suites_boot =
                suites::host_endpoint_under_qemu(&spec, args.firmware).and_then(|reach| {
                    let mut o =
                        boot_options(&ws, &args, false, false).map_err(|e| format!("{e:#}"))?;
                    o.console_log = o.console_log.with_file_name("console-suites.log");
                    Ok((o, reach))
                });
            let progress = suites::progress_bar(matches!(format, Format::Text));
            let verdict = suites::run_test(
                TestRun {
                    target: &args.target,
                    firmware: args.firmware,
                    out: &out,
                    checkout: ws.root(),
                    suites_boot,
                    cache_root: &Cache::default_location(),
                    test_timeout: suites::TEST_TIMEOUT,
                },
                &|m| progress.set_message(m.to_string()),
                &mut || run_boot(&ws, &args, true, false),
            );
            progress.finish_and_clear();
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&verdict)?),
                Format::Text => print!("{}", verdict.render_text()),
            }
            Ok(if verdict.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// Sockets, logs and the pid file of a running `eci-build boot`, inside the build folder.
const RUN_DIR: &str = "run";

/// `eci-build boot` with the host endpoint (builder/src/host_endpoint.rs): `None` when the
/// image cannot reach its host under QEMU, so the caller boots it with its console instead.
fn serve_engine(
    ws: &Workspace,
    args: &BootArgs,
    console: bool,
    share: &[PathBuf],
) -> Result<Option<ExitCode>> {
    use eci_build::host_endpoint::{self, signals, Relay, StartOptions};
    use eci_build::vsock::ENGINE_PORT;
    let spec = pipeline::load_spec(ws, &args.target)?;
    let out = out_dir(ws, &args.target, args.out.clone());
    // Under QEMU the guest's vsock transport is virtio's; hv_sock needs Hyper-V.
    let reach = match eci_build::suites::host_endpoint_under_qemu(&spec, args.firmware) {
        Ok(reach) => reach,
        Err(why) => {
            eprintln!("{why}; booting with the console until it powers off");
            if !share.is_empty() {
                anyhow::bail!("--share needs the host endpoint's boot; use --target qemu");
            }
            return Ok(None);
        }
    };
    if spec.target == eci_build::artifact::wsl2::TARGET && !share.is_empty() {
        anyhow::bail!(
            "--share is not stood in for the WSL2 distribution: WSL shares the Windows drives itself ([automount], drvfs over 9P); use --target qemu"
        );
    }
    let direct = boot_options(ws, args, false, console)?;
    let run_dir = out.join(RUN_DIR);
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    let pid_file = run_dir.join(host_endpoint::PID_FILE);
    if let Some(pid) = running_pid(&pid_file) {
        anyhow::bail!(
            "another `eci-build boot` (pid {pid}) serves {}; stop it with `eci-build stop --target {}`",
            out.display(),
            args.target
        );
    }
    // host_endpoint_under_qemu refused the UEFI path above.
    let command = boot::direct_command(&direct)?;
    let (command, _shares) = share_folders(command, share, &run_dir, args.memory)?;
    signals::install();
    let started = std::time::Instant::now();
    let mut vm = host_endpoint::start(
        command,
        &StartOptions {
            run_dir: &run_dir,
            cache_root: &Cache::default_location(),
            memory_mib: args.memory,
            console_log: &direct.console_log,
            echo: console,
            reach,
        },
    )?;
    std::fs::write(&pid_file, std::process::id().to_string())
        .with_context(|| format!("cannot write {}", pid_file.display()))?;
    eprintln!(
        "booting {} under QEMU ({}); console log: {}",
        args.target,
        match vm.accel {
            Accel::Kvm => "kvm",
            _ => "tcg",
        },
        vm.console_log().display()
    );
    let outcome = (|| -> Result<Option<i32>> {
        let waited = std::time::Instant::now();
        let timeout = Duration::from_secs(args.timeout);
        // Wait in slices so Ctrl-C during the boot still powers off cleanly.
        loop {
            match vm.wait_engine(ENGINE_PORT, Duration::from_secs(2)) {
                Ok(_) => break,
                Err(host_endpoint::EndpointError::NotReady { .. })
                    if waited.elapsed() < timeout && !signals::stop_requested() => {}
                Err(e) => return Err(e.into()),
            }
        }
        let relay = Relay::serve(
            &run_dir.join(host_endpoint::DOCKER_SOCKET),
            vm.device.clone(),
            ENGINE_PORT,
        )?;
        eprintln!(
            "engine ready after {:.1} s; stop with Ctrl-C or `eci-build stop --target {}`",
            started.elapsed().as_secs_f64(),
            args.target
        );
        println!("export DOCKER_HOST={}", relay.docker_host());
        while !signals::stop_requested() {
            if let Some(code) = vm.exited() {
                return Ok(code);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        drop(relay);
        Ok(None)
    })();
    let clean = vm.power_off(Duration::from_secs(120));
    let _ = std::fs::remove_file(&pid_file);
    match outcome {
        Ok(Some(code)) => {
            eprintln!("the VM powered off by itself (QEMU exit {code:?})");
            Ok(Some(ExitCode::from(1)))
        }
        Ok(None) => {
            eprintln!(
                "VM {} after {:.1} s",
                if clean {
                    "powered off"
                } else {
                    "stopped by force"
                },
                started.elapsed().as_secs_f64()
            );
            Ok(Some(if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }))
        }
        Err(e) => Err(e),
    }
}

/// `--share`: a virtiofsd per folder and QEMU's devices for them (builder/src/share.rs). The
/// daemons must outlive the VM.
fn share_folders(
    (mut command, accel): (std::process::Command, Accel),
    dirs: &[PathBuf],
    run_dir: &std::path::Path,
    memory_mib: u32,
) -> Result<(
    (std::process::Command, Accel),
    Vec<eci_build::share::Daemon>,
)> {
    use eci_build::share;
    if dirs.is_empty() {
        return Ok(((command, accel), Vec::new()));
    }
    let shares = share::plan(dirs)?;
    let program = share::find_daemon(&Cache::default_location())?;
    let daemons = share::start_all(&program, &shares, run_dir)?;
    // host_endpoint::device puts guest RAM in shared memory for the vsock backend whenever the
    // kernel's vhost-vsock is missing; then it must not be declared twice.
    let vsock_backend = !std::path::Path::new(eci_build::vsock::VHOST_VSOCK_DEV).exists();
    command.args(share::qemu_args(&daemons, memory_mib, vsock_backend));
    for s in &shares {
        eprintln!(
            "sharing {} at {} in the VM (virtiofs tag {})",
            s.host_dir.display(),
            s.vm_path,
            s.tag
        );
    }
    Ok(((command, accel), daemons))
}

/// The pid in `pid_file` when that process still runs.
fn running_pid(pid_file: &std::path::Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    std::path::Path::new(&format!("/proc/{pid}"))
        .exists()
        .then_some(pid)
}

/// `eci-build stop`: SIGTERM to the `eci-build boot` serving `run_dir`, which powers the VM off
/// and exits; waits for that.
fn stop_boot(run_dir: &std::path::Path) -> Result<()> {
    use eci_build::host_endpoint::{signals, PID_FILE};
    let pid_file = run_dir.join(PID_FILE);
    let Some(pid) = running_pid(&pid_file) else {
        anyhow::bail!(
            "no `eci-build boot` is running for {} ({} names no live process)",
            run_dir.parent().unwrap_or(run_dir).display(),
            pid_file.display()
        );
    };
    anyhow::ensure!(signals::terminate(pid), "cannot signal pid {pid}");
    eprintln!("powering off the VM of pid {pid}...");
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "pid {pid} still runs after 180 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("stopped");
    Ok(())
}

/// Boots the build in `args.out` the way `args.firmware` says; with `selftest`, the VM runs its
/// self-test and powers off.
fn run_boot(ws: &Workspace, args: &BootArgs, selftest: bool, echo: bool) -> Result<BootResult> {
    let direct = boot_options(ws, args, selftest, echo)?;
    Ok(match args.firmware {
        BootPath::Direct => boot::boot(&direct)?,
        BootPath::Uefi => {
            use eci_build::artifact::hyperv::{BOOT_DISK_FILE, DATA_DISK_FILE};
            use eci_build::boot::{Disk, DiskFormat, Firmware};
            let out = out_dir(ws, &args.target, args.out.clone());
            let shipped = out.join(BOOT_DISK_FILE);
            if !shipped.is_file() {
                anyhow::bail!(
                    "{} has no {BOOT_DISK_FILE}: the UEFI path boots the Hyper-V boot disk; use --target hyperv or --firmware direct",
                    out.display()
                );
            }
            // Firmware variables and the self-test's boot disk live as long as the boot.
            let tmp = tempfile::tempdir().context("cannot create a temporary folder")?;
            let boot_disk = if selftest {
                let lock = eci_build::apt::lock::Lockfile::read(&ws.lock(&args.target))?;
                let disk = tmp.path().join("selftest-boot.vhdx");
                boot::boot_disk_with_cmdline(
                    &out,
                    &lock,
                    &Cache::new(Cache::default_location()),
                    direct.cmdline.clone(),
                    &disk,
                )?;
                disk
            } else {
                shipped
            };
            let data = out.join(DATA_DISK_FILE);
            boot::boot_uefi(&UefiBootOptions {
                boot_disk: Disk {
                    path: boot_disk,
                    format: DiskFormat::Vhdx,
                },
                extra_disks: data
                    .is_file()
                    .then_some(Disk {
                        path: data,
                        format: DiskFormat::Vhdx,
                    })
                    .into_iter()
                    .collect(),
                firmware: Firmware::with_private_vars(tmp.path())?,
                memory_mib: direct.memory_mib,
                cpus: direct.cpus,
                accel: direct.accel,
                timeout: direct.timeout,
                console_log: direct.console_log.clone(),
                echo,
            })?
        }
    })
}

fn boot_options(
    ws: &Workspace,
    args: &BootArgs,
    selftest: bool,
    echo: bool,
) -> Result<BootOptions> {
    let out = out_dir(ws, &args.target, args.out.clone());
    let manifest = out.join(eci_build::artifact::MANIFEST_FILE);
    if !manifest.is_file() {
        anyhow::bail!(
            "{} has no build ({} is missing); run `eci-build image --target {}` first",
            out.display(),
            manifest.display(),
            args.target
        );
    }
    let spec = pipeline::load_spec(ws, &args.target)?;
    let (initramfs, cmdline) = if spec.target == eci_build::artifact::wsl2::TARGET {
        wsl_standin_media(&spec, &out, args.firmware, selftest)?
    } else {
        let mut cmdline = spec.kernel.cmdline.clone();
        if selftest {
            cmdline.push("eci.selftest".into());
        }
        (out.join(eci_build::artifact::INITRAMFS_FILE), cmdline)
    };
    Ok(BootOptions {
        kernel: out.join(eci_build::artifact::KERNEL_FILE),
        initramfs,
        cmdline,
        memory_mib: args.memory,
        cpus: args.cpus,
        accel: args.accel,
        timeout: Duration::from_secs(args.timeout),
        console_log: out.join("console.log"),
        echo,
    })
}

/// The WSL2 distribution boots under the WSL stand-in (builder/src/wsl_standin.rs): an
/// initramfs made from the shipped tarball for this boot, and the stand-in's command line.
fn wsl_standin_media(
    spec: &eci_build::spec::ImageSpec,
    out: &std::path::Path,
    firmware: BootPath,
    selftest: bool,
) -> Result<(PathBuf, Vec<String>)> {
    use eci_build::wsl_standin;
    if firmware == BootPath::Uefi {
        anyhow::bail!(
            "the WSL2 distribution has no boot disk (WSL boots its kernel itself); drop --firmware uefi"
        );
    }
    let tarball = out.join(eci_build::artifact::wsl2::ROOTFS_FILE);
    let initramfs = out.join(wsl_standin::INITRAMFS_FILE);
    let (built, _) = eci_build::binaries::build(
        &[wsl_standin::relay_binary()],
        &eci_build::binaries::workspace_root(),
        false,
    )?;
    let written = wsl_standin::write_initramfs(&tarball, &built[0].bytes, &initramfs)?;
    eprintln!(
        "WSL stand-in: {} from {} ({} entries, {} MiB)",
        initramfs.display(),
        tarball.display(),
        written.entries,
        written.bytes >> 20
    );
    if !written.dropped_xattrs.is_empty() {
        let paths: Vec<&str> = written
            .dropped_xattrs
            .iter()
            .map(|d| d.path.as_str())
            .collect();
        eprintln!(
            "WSL stand-in: cpio cannot carry extended attributes; in this boot these files lack theirs (WSL's ext4 keeps them): {}",
            paths.join(", ")
        );
    }
    Ok((
        initramfs,
        wsl_standin::cmdline(&spec.kernel.cmdline, selftest),
    ))
}
