//! Boots a build under QEMU and reads what the VM says on its serial console: either the kernel
//! and initramfs directly (`-kernel`/`-initrd`, [`boot`]) or a UEFI boot disk through OVMF
//! firmware, the way Hyper-V Generation 2 boots it ([`boot_uefi`]).
//!
//! KVM is never assumed: `/dev/kvm` can exist and still hang QEMU (seen on the project's own
//! CI machines). `Accel::Auto` runs a short probe boot with KVM and falls back to TCG when the
//! kernel prints nothing within a few seconds.

use crate::boot_phases::{BootPhases, StampedLine};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const QEMU: &str = "qemu-system-x86_64";
const SELFTEST_PREFIX: &str = "ECI-SELFTEST";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Auto,
    Kvm,
    Tcg,
}

impl std::str::FromStr for Accel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Accel::Auto),
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            other => Err(format!(
                "unknown accelerator `{other}`: use auto, kvm or tcg"
            )),
        }
    }
}

/// How the VM gets its kernel: QEMU loads it directly (`-kernel`/`-initrd`, the quick path of
/// the boot tests), or UEFI firmware boots the image's boot disk as Hyper-V Generation 2 does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootPath {
    Direct,
    Uefi,
}

impl BootPath {
    pub fn name(self) -> &'static str {
        match self {
            BootPath::Direct => "direct",
            BootPath::Uefi => "uefi",
        }
    }
}

impl std::str::FromStr for BootPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "direct" => Ok(BootPath::Direct),
            "uefi" => Ok(BootPath::Uefi),
            other => Err(format!(
                "unknown firmware path `{other}`: use direct (QEMU loads vmlinuz and initramfs.img) or uefi (OVMF boots boot.vhdx)"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("{QEMU} is not installed; install it with: apt-get install -y qemu-system-x86")]
    NoQemu,
    #[error("UEFI firmware {} is missing; install it with: apt-get install -y ovmf", path.display())]
    NoFirmware { path: PathBuf },
    #[error("cannot start {QEMU}: {0}")]
    Spawn(std::io::Error),
    #[error("the VM did not finish within {seconds} s (last console line: {last_line:?}); the full console log is in {}", log.display())]
    Timeout {
        seconds: u64,
        last_line: String,
        log: PathBuf,
    },
    #[error("cannot write a boot disk with the self-test token from the build in {}: {detail}; rebuild it with `eci-build image`", out.display())]
    BootDisk { out: PathBuf, detail: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct BootOptions {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub cmdline: Vec<String>,
    pub memory_mib: u32,
    pub cpus: u32,
    pub accel: Accel,
    pub timeout: Duration,
    /// Where the whole console output is kept.
    pub console_log: PathBuf,
    /// Echo console lines to stderr while booting.
    pub echo: bool,
}

/// A UEFI boot from disk images through OVMF (the firmware Hyper-V's is built from).
#[derive(Debug, Clone)]
pub struct UefiBootOptions {
    /// The boot disk; its loader and loader entry decide the kernel command line.
    pub boot_disk: Disk,
    /// Attached after the boot disk. They are opened with `snapshot=on`: the VM may write, the
    /// files stay as they are.
    pub extra_disks: Vec<Disk>,
    pub firmware: Firmware,
    pub memory_mib: u32,
    pub cpus: u32,
    pub accel: Accel,
    pub timeout: Duration,
    /// Where the whole console output is kept.
    pub console_log: PathBuf,
    /// Echo console lines to stderr while booting.
    pub echo: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub path: PathBuf,
    pub format: DiskFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    Raw,
    Vhdx,
}

impl DiskFormat {
    fn qemu_name(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Vhdx => "vhdx",
        }
    }
}

/// OVMF firmware: the code (read-only) and a variable store the VM may write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firmware {
    pub code: PathBuf,
    /// Give every boot its own copy (see [`Firmware::with_private_vars`]): the firmware
    /// records boot entries in it.
    pub vars: PathBuf,
}

/// Debian's `ovmf` package: 2 MiB non-Secure-Boot build and its empty variable store.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS.fd";

impl Firmware {
    /// The installed OVMF with a fresh copy of its variable store in `dir`.
    pub fn with_private_vars(dir: &Path) -> Result<Firmware, BootError> {
        for p in [OVMF_CODE, OVMF_VARS] {
            if !Path::new(p).is_file() {
                return Err(BootError::NoFirmware { path: p.into() });
            }
        }
        let vars = dir.join("OVMF_VARS.fd");
        std::fs::copy(OVMF_VARS, &vars).map_err(|source| BootError::Io {
            path: vars.clone(),
            source,
        })?;
        Ok(Firmware {
            code: OVMF_CODE.into(),
            vars,
        })
    }

    pub fn installed() -> bool {
        Path::new(OVMF_CODE).is_file() && Path::new(OVMF_VARS).is_file()
    }
}

/// The build's boot disk again, written to `dest` from the build's own outputs (`vmlinuz`,
/// `initramfs.img`, `manifest.json`) and the locked loader, with `cmdline` in its loader entry.
/// The shipped `boot.vhdx` never carries `eci.selftest`, and the command line lives on its ESP:
/// a self-test boot through UEFI needs this disk (the same bytes as `boot.vhdx` but for the
/// entry, which `tests/uefi_boot.rs` proves).
pub fn boot_disk_with_cmdline(
    out: &Path,
    lock: &crate::apt::lock::Lockfile,
    cache: &crate::apt::fetch::Cache,
    cmdline: Vec<String>,
    dest: &Path,
) -> Result<(), BootError> {
    use crate::artifact::hyperv::{self, BootDisk};
    let fail = |detail: String| BootError::BootDisk {
        out: out.to_path_buf(),
        detail,
    };
    let read = |name: &str| {
        std::fs::read(out.join(name))
            .map_err(|e| fail(format!("{}: {e}", out.join(name).display())))
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&read(crate::artifact::MANIFEST_FILE)?)
            .map_err(|e| fail(format!("{}: {e}", crate::artifact::MANIFEST_FILE)))?;
    let field = |v: &serde_json::Value, what: &str| {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| fail(format!("{} has no {what}", crate::artifact::MANIFEST_FILE)))
    };
    let lock_sha256 = field(&manifest["lock_sha256"], "lock_sha256")?;
    let release = field(&manifest["kernel"]["release"], "kernel.release")?;
    let epoch = manifest["source_date_epoch"].as_u64().ok_or_else(|| {
        fail(format!(
            "{} has no source_date_epoch",
            crate::artifact::MANIFEST_FILE
        ))
    })?;
    let locked = lock
        .package(hyperv::LOADER_PACKAGE)
        .ok_or_else(|| fail(format!("{} is not locked", hyperv::LOADER_PACKAGE)))?;
    let deb = cache
        .read_verified(&locked.sha256)
        .map_err(|e| fail(e.to_string()))?;
    let loader =
        hyperv::loader_from_deb(&deb, hyperv::LOADER_PACKAGE).map_err(|e| fail(e.to_string()))?;
    let kernel = read(crate::artifact::KERNEL_FILE)?;
    let initramfs = read(crate::artifact::INITRAMFS_FILE)?;
    BootDisk {
        kernel: &kernel,
        initramfs: &initramfs,
        loader: &loader,
        kernel_release: &release,
        cmdline,
        lock_sha256: &lock_sha256,
        epoch,
    }
    .write_vhdx(dest)
    .map_err(|e| fail(e.to_string()))?;
    Ok(())
}

/// What QEMU boots: the parts of the two option structs the command line needs.
enum Media<'a> {
    Direct {
        kernel: &'a Path,
        initramfs: &'a Path,
        cmdline: &'a [String],
    },
    Uefi(&'a UefiBootOptions),
}

struct Machine<'a> {
    media: Media<'a>,
    memory_mib: u32,
    cpus: u32,
    accel: Accel,
    timeout: Duration,
    console_log: &'a Path,
    echo: bool,
}

impl<'a> Machine<'a> {
    fn direct(o: &'a BootOptions) -> Self {
        Machine {
            media: Media::Direct {
                kernel: &o.kernel,
                initramfs: &o.initramfs,
                cmdline: &o.cmdline,
            },
            memory_mib: o.memory_mib,
            cpus: o.cpus,
            accel: o.accel,
            timeout: o.timeout,
            console_log: &o.console_log,
            echo: o.echo,
        }
    }

    fn uefi(o: &'a UefiBootOptions) -> Self {
        Machine {
            media: Media::Uefi(o),
            memory_mib: o.memory_mib,
            cpus: o.cpus,
            accel: o.accel,
            timeout: o.timeout,
            console_log: &o.console_log,
            echo: o.echo,
        }
    }
}

/// What the self-test printed: `ECI-SELFTEST key=value` lines and the final status.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SelfTest {
    pub facts: Vec<String>,
    pub status: Option<String>,
}

impl SelfTest {
    pub fn passed(&self) -> bool {
        self.status.as_deref() == Some("pass")
    }

    /// The value of the first `ECI-SELFTEST key=value` line with this key.
    pub fn fact(&self, key: &str) -> Option<&str> {
        self.facts
            .iter()
            .find_map(|f| f.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    }

    /// Reads self-test lines out of a console transcript; kernel messages may interleave.
    pub fn parse(console: &str) -> SelfTest {
        let mut test = SelfTest::default();
        for line in console.lines() {
            let Some(at) = line.find(SELFTEST_PREFIX) else {
                continue;
            };
            let rest = &line[at + SELFTEST_PREFIX.len()..];
            if let Some(status) = rest.strip_prefix("-END status=") {
                test.status = Some(status.trim().to_string());
            } else if let Some(fact) = rest.strip_prefix(' ') {
                test.facts.push(fact.trim_end().to_string());
            }
        }
        test
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BootResult {
    pub accel: String,
    /// `direct` or `uefi` ([`BootPath`]).
    pub firmware: String,
    pub seconds: f64,
    pub exit_code: Option<i32>,
    pub selftest: SelfTest,
    /// Where the boot's time went, from the console (issue 13; `bench/boot.sh` takes medians).
    #[serde(flatten)]
    pub timeline: BootPhases,
    pub console_log: PathBuf,
}

pub fn qemu_available() -> bool {
    Command::new(QEMU)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The first QEMU release whose multi-threaded TCG locks a guest page before translating it
/// ("accel/tcg: Always lock pages before translation", 8.1).
const MTTCG_SAFE_FROM: (u32, u32) = (8, 1);

/// `-accel`'s value. Before QEMU 8.1, multi-threaded TCG (one host thread per vCPU, the
/// default) can translate a block while another vCPU rewrites it: a guest that patches its
/// own code across CPUs, as Linux does for jump labels (`text_poke`), now and then runs a
/// half-patched block and oopses. Under Debian 12's 7.2 that was about one boot in twenty
/// here: an int3 oops in `flow_hash_from_keys` while dockerd set up its network, a NULL
/// dereference in `ttwu_queue_wakelist` during early initcalls, a double fault. So there TCG
/// runs every vCPU on one thread; the guest still sees `cpus` CPUs.
pub fn accel_arg(accel: Accel) -> &'static str {
    if accel == Accel::Kvm {
        "kvm"
    } else if qemu_version().is_some_and(|v| v >= MTTCG_SAFE_FROM) {
        "tcg"
    } else {
        "tcg,thread=single"
    }
}

/// `-cpu`'s value. Under KVM the host's CPU. Under TCG QEMU's default model plus RDRAND, as every
/// CPU Hyper-V and WSL2 run on has it: without a CPU random source the guest kernel's random
/// generator was seeded only at 7-8 s of uptime under TCG, and dockerd, whose start-up reads
/// crypto/rand (hashicorp/memberlist's init seeds math/rand from it), sat blocked in getrandom
/// until then (issue 13: engine ready 12.3 -> 10.0 s). Without CMPXCHG16B: three CI boots
/// under QEMU 7.2's TCG died of a double fault right after the guest's `cmpxchg16b` in SLUB's
/// lockless allocation, with EFLAGS holding a register's bits (0x42768242, RAX ...42768000);
/// without the flag the kernel takes SLUB's locked path. Hyper-V's and WSL2's CPUs keep it.
pub fn cpu_arg(accel: Accel) -> &'static str {
    if accel == Accel::Kvm {
        "host"
    } else {
        "qemu64,+rdrand,-cx16"
    }
}

/// QEMU's major and minor version from `--version`, read once; None when it does not run or
/// says something else (taken as old).
fn qemu_version() -> Option<(u32, u32)> {
    static VERSION: std::sync::OnceLock<Option<(u32, u32)>> = std::sync::OnceLock::new();
    *VERSION.get_or_init(|| {
        let out = Command::new(QEMU).arg("--version").output().ok()?;
        parse_qemu_version(&String::from_utf8_lossy(&out.stdout))
    })
}

/// `QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)` -> (7, 2).
fn parse_qemu_version(text: &str) -> Option<(u32, u32)> {
    let rest = text.split("version ").nth(1)?;
    let mut parts = rest.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn base_command(m: &Machine<'_>, accel: Accel) -> Command {
    let mut cmd = Command::new(QEMU);
    cmd.args(["-machine", "q35", "-accel", accel_arg(accel)])
        .args(["-m", &m.memory_mib.to_string()])
        .args(["-smp", &m.cpus.to_string()])
        .args([
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            "-nodefaults",
        ])
        .args(["-serial", "stdio"])
        .args(["-netdev", "user,id=n0,restrict=on"]);
    match &m.media {
        Media::Direct {
            kernel,
            initramfs,
            cmdline,
        } => {
            cmd.args(["-device", "virtio-net-pci,netdev=n0"])
                .arg("-kernel")
                .arg(kernel)
                .arg("-initrd")
                .arg(initramfs)
                .args(["-append", &cmdline.join(" ")]);
        }
        Media::Uefi(u) => {
            // No option ROM: the firmware must boot the disk, never fall back to network boot.
            cmd.args(["-device", "virtio-net-pci,netdev=n0,romfile="])
                .arg("-drive")
                .arg(drive_arg(
                    "if=pflash,format=raw,unit=0,readonly=on",
                    &u.firmware.code,
                ))
                .arg("-drive")
                .arg(drive_arg("if=pflash,format=raw,unit=1", &u.firmware.vars))
                .arg("-drive")
                .arg(drive_arg(
                    &format!(
                        "if=virtio,format={},readonly=on",
                        u.boot_disk.format.qemu_name()
                    ),
                    &u.boot_disk.path,
                ));
            for d in &u.extra_disks {
                cmd.arg("-drive").arg(drive_arg(
                    &format!("if=virtio,format={},snapshot=on", d.format.qemu_name()),
                    &d.path,
                ));
            }
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.args(["-cpu", cpu_arg(accel)]);
    cmd
}

/// `-drive` value with `file=PATH` last; QEMU's option syntax escapes a comma by doubling it.
fn drive_arg(options: &str, path: &Path) -> std::ffi::OsString {
    let mut arg = std::ffi::OsString::from(format!("{options},file="));
    arg.push(path.to_string_lossy().replace(',', ",,"));
    arg
}

/// Starts a KVM boot and waits briefly for the kernel's first console output.
pub fn kvm_works(opts: &BootOptions) -> bool {
    kvm_probe(&Machine::direct(opts))
}

fn kvm_probe(m: &Machine<'_>) -> bool {
    if !Path::new("/dev/kvm").exists() {
        return false;
    }
    let Ok(mut child) = base_command(m, Accel::Kvm).spawn() else {
        return false;
    };
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let ok = reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false);
        let _ = tx.send(ok);
    });
    let works = rx.recv_timeout(Duration::from_secs(5)).unwrap_or(false);
    kill(&mut child);
    works
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The QEMU command [`boot`] would run for `opts`, with the accelerator resolved (a KVM probe
/// for `Accel::Auto`), for callers that add devices and supervise the VM themselves (the host
/// endpoint, `host_endpoint.rs`). Console on the child's stdout, QEMU's messages on stderr.
pub fn direct_command(opts: &BootOptions) -> Result<(Command, Accel), BootError> {
    machine_command(&Machine::direct(opts))
}

fn machine_command(m: &Machine<'_>) -> Result<(Command, Accel), BootError> {
    if !qemu_available() {
        return Err(BootError::NoQemu);
    }
    let accel = match m.accel {
        Accel::Auto if kvm_probe(m) => Accel::Kvm,
        Accel::Auto => Accel::Tcg,
        a => a,
    };
    Ok((base_command(m, accel), accel))
}

/// Boots the VM, keeps its console in `console_log`, and returns when QEMU exits (the image
/// powers off after its self-test) or the timeout expires.
pub fn boot(opts: &BootOptions) -> Result<BootResult, BootError> {
    run(&Machine::direct(opts))
}

/// Boots `opts.boot_disk` through OVMF like a UEFI VM with no boot entries: the firmware
/// finds the loader at the removable-media path (`EFI/BOOT/BOOTX64.EFI`).
pub fn boot_uefi(opts: &UefiBootOptions) -> Result<BootResult, BootError> {
    for p in [&opts.firmware.code, &opts.firmware.vars] {
        if !p.is_file() {
            return Err(BootError::NoFirmware { path: p.clone() });
        }
    }
    for d in std::iter::once(&opts.boot_disk).chain(&opts.extra_disks) {
        if !d.path.is_file() {
            return Err(BootError::Io {
                path: d.path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "disk image not found"),
            });
        }
    }
    run(&Machine::uefi(opts))
}

fn run(m: &Machine<'_>) -> Result<BootResult, BootError> {
    if !qemu_available() {
        return Err(BootError::NoQemu);
    }
    let accel = match m.accel {
        Accel::Auto if kvm_probe(m) => Accel::Kvm,
        Accel::Auto => Accel::Tcg,
        a => a,
    };
    let started = Instant::now();
    let mut child = base_command(m, accel).spawn().map_err(BootError::Spawn)?;
    let log_io = |source| BootError::Io {
        path: m.console_log.to_path_buf(),
        source,
    };
    if let Some(dir) = m.console_log.parent() {
        std::fs::create_dir_all(dir).map_err(log_io)?;
    }
    let mut log = std::fs::File::create(m.console_log).map_err(log_io)?;

    // Each line carries its arrival time: the boot phases' wall clock (boot_phases.rs).
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let tx_err = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            // The console carries terminal control bytes; keep the text readable.
            let text = String::from_utf8_lossy(&line).replace('\r', "");
            if tx.send((Instant::now(), text)).is_err() {
                return;
            }
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx_err
                .send((Instant::now(), format!("[qemu] {line}")))
                .is_err()
            {
                return;
            }
        }
    });

    let mut transcript = String::new();
    let mut stamped: Vec<StampedLine> = Vec::new();
    let mut last_line = String::new();
    let exit_code;
    loop {
        let remaining = m.timeout.saturating_sub(started.elapsed());
        match rx.recv_timeout(remaining.min(Duration::from_millis(200))) {
            Ok((at, line)) => {
                if m.echo {
                    eprintln!("{line}");
                }
                writeln!(log, "{line}").map_err(log_io)?;
                transcript.push_str(&line);
                transcript.push('\n');
                if !line.trim().is_empty() {
                    last_line = line.clone();
                }
                stamped.push(StampedLine {
                    wall: at.saturating_duration_since(started).as_secs_f64(),
                    text: line,
                });
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                exit_code = child.wait().ok().and_then(|s| s.code());
                break;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Drain what the reader threads still hold.
            for (at, line) in rx.try_iter() {
                writeln!(log, "{line}").map_err(log_io)?;
                transcript.push_str(&line);
                transcript.push('\n');
                stamped.push(StampedLine {
                    wall: at.saturating_duration_since(started).as_secs_f64(),
                    text: line,
                });
            }
            exit_code = status.code();
            break;
        }
        if started.elapsed() >= m.timeout {
            kill(&mut child);
            return Err(BootError::Timeout {
                seconds: m.timeout.as_secs(),
                last_line,
                log: m.console_log.to_path_buf(),
            });
        }
    }
    log.flush().map_err(log_io)?;
    Ok(BootResult {
        accel: if accel == Accel::Kvm { "kvm" } else { "tcg" }.into(),
        firmware: match m.media {
            Media::Direct { .. } => BootPath::Direct,
            Media::Uefi(_) => BootPath::Uefi,
        }
        .name()
        .into(),
        seconds: started.elapsed().as_secs_f64(),
        exit_code,
        selftest: SelfTest::parse(&transcript),
        timeline: BootPhases::from_console(&stamped),
        console_log: m.console_log.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selftest_lines_are_read_among_kernel_messages() {
        let console = "[    1.0] Run /init as init process\r\nECI-SELFTEST-BEGIN\nECI-SELFTEST kernel=6.12.107\n[    2.1] random: crng init done\nECI-SELFTEST dockerd=Docker version 20.10.24\nECI-SELFTEST-END status=pass\n";
        let t = SelfTest::parse(console);
        assert!(t.passed());
        assert_eq!(t.fact("kernel"), Some("6.12.107"));
        assert_eq!(t.fact("dockerd"), Some("Docker version 20.10.24"));
        assert_eq!(t.fact("missing"), None);
    }

    #[test]
    fn a_missing_or_failed_end_is_not_a_pass() {
        assert!(!SelfTest::parse("ECI-SELFTEST kernel=1\n").passed());
        assert!(!SelfTest::parse("ECI-SELFTEST-END status=fail\n").passed());
    }

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn qemu_versions_are_read_from_the_version_line() {
        assert_eq!(
            parse_qemu_version(
                "QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)\nCopyright"
            ),
            Some((7, 2))
        );
        assert_eq!(
            parse_qemu_version("QEMU emulator version 8.1.0\n"),
            Some((8, 1))
        );
        assert_eq!(parse_qemu_version("something else"), None);
        assert!(
            (7, 2) < MTTCG_SAFE_FROM && (8, 1) >= MTTCG_SAFE_FROM && (10, 0) >= MTTCG_SAFE_FROM
        );
    }

    #[test]
    fn tcg_runs_on_one_thread_where_qemu_lacks_the_translation_lock() {
        let Some(version) = qemu_version() else {
            eprintln!("skipped: {QEMU} does not run here");
            return;
        };
        let want = if version >= MTTCG_SAFE_FROM {
            "tcg"
        } else {
            "tcg,thread=single"
        };
        assert_eq!(accel_arg(Accel::Tcg), want, "QEMU {version:?}");
        assert_eq!(accel_arg(Accel::Kvm), "kvm");
    }

    #[test]
    fn direct_boot_passes_kernel_initrd_and_cmdline() {
        let opts = BootOptions {
            kernel: "/out/vmlinuz".into(),
            initramfs: "/out/initramfs.img".into(),
            cmdline: vec!["console=ttyS0".into(), "eci.selftest".into()],
            memory_mib: 2048,
            cpus: 2,
            accel: Accel::Tcg,
            timeout: Duration::from_secs(1),
            console_log: "/tmp/c.log".into(),
            echo: false,
        };
        let a = args(&base_command(&Machine::direct(&opts), Accel::Tcg)).join(" ");
        assert!(
            a.contains("-kernel /out/vmlinuz -initrd /out/initramfs.img"),
            "{a}"
        );
        assert!(a.contains("-append console=ttyS0 eci.selftest"), "{a}");
        assert!(!a.contains("pflash"), "{a}");
        assert!(a.contains("-cpu qemu64,+rdrand,-cx16"), "{a}");
        let kvm = args(&base_command(&Machine::direct(&opts), Accel::Kvm)).join(" ");
        assert!(kvm.contains("-cpu host"), "{kvm}");
    }

    #[test]
    fn uefi_boot_uses_firmware_and_disks_never_the_kernel() {
        let opts = UefiBootOptions {
            boot_disk: Disk {
                path: "/out/my,boot.vhdx".into(),
                format: DiskFormat::Vhdx,
            },
            extra_disks: vec![Disk {
                path: "/out/data.vhdx".into(),
                format: DiskFormat::Vhdx,
            }],
            firmware: Firmware {
                code: OVMF_CODE.into(),
                vars: "/tmp/vars.fd".into(),
            },
            memory_mib: 2048,
            cpus: 2,
            accel: Accel::Tcg,
            timeout: Duration::from_secs(1),
            console_log: "/tmp/c.log".into(),
            echo: false,
        };
        let a = args(&base_command(&Machine::uefi(&opts), Accel::Tcg));
        let joined = a.join(" ");
        assert!(
            !joined.contains("-kernel") && !joined.contains("-append"),
            "{joined}"
        );
        assert!(a.contains(&format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
        )));
        assert!(a.contains(&"if=pflash,format=raw,unit=1,file=/tmp/vars.fd".to_string()));
        assert!(
            a.contains(&"if=virtio,format=vhdx,readonly=on,file=/out/my,,boot.vhdx".to_string())
        );
        assert!(a.contains(&"if=virtio,format=vhdx,snapshot=on,file=/out/data.vhdx".to_string()));
        assert!(a.contains(&"virtio-net-pci,netdev=n0,romfile=".to_string()));
    }

    #[test]
    fn uefi_boot_reports_missing_firmware() {
        let dir = tempfile::tempdir().unwrap();
        let opts = UefiBootOptions {
            boot_disk: Disk {
                path: dir.path().join("none.vhdx"),
                format: DiskFormat::Vhdx,
            },
            extra_disks: vec![],
            firmware: Firmware {
                code: dir.path().join("missing-code.fd"),
                vars: dir.path().join("missing-vars.fd"),
            },
            memory_mib: 256,
            cpus: 1,
            accel: Accel::Tcg,
            timeout: Duration::from_secs(1),
            console_log: dir.path().join("c.log"),
            echo: false,
        };
        let e = boot_uefi(&opts).unwrap_err().to_string();
        assert!(
            e.contains("missing-code.fd") && e.contains("apt-get install -y ovmf"),
            "{e}"
        );
    }

    #[test]
    fn firmware_paths_parse() {
        assert_eq!("direct".parse::<BootPath>(), Ok(BootPath::Direct));
        assert_eq!("uefi".parse::<BootPath>().map(BootPath::name), Ok("uefi"));
        assert!("bios"
            .parse::<BootPath>()
            .unwrap_err()
            .contains("direct (QEMU loads"));
    }

    #[test]
    fn accel_names_parse() {
        assert_eq!("tcg".parse::<Accel>(), Ok(Accel::Tcg));
        assert!("xen"
            .parse::<Accel>()
            .unwrap_err()
            .contains("auto, kvm or tcg"));
    }
}
