//! Configure and make on the build host, with Debian's hardening flags and the paths that
//! would make the bytes depend on where the cache lives mapped away.

use std::path::Path;
use std::process::{Command, Stdio};

use sha2::Digest;

use super::{Recipe, SourceBuildError};

/// The host programs a build runs, with the Debian package that has each.
const HOST_NEEDS: &[(&str, &str)] = &[
    ("gcc", "gcc"),
    ("make", "make"),
    ("patch", "patch"),
    ("strip", "binutils"),
    ("getconf", "libc-bin"),
];

/// Where the static C library must be for `-static-pie` links.
const STATIC_LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.a";

/// Debian packages whose files end up in the bytes (the static C library and start files,
/// the kernel headers configure probes, the linker): their exact versions key the cache, so
/// a security update of libc6-dev rebuilds the program.
const HOST_PACKAGES: &[&str] = &["libc6-dev", "linux-libc-dev", "binutils", "libgcc-12-dev"];

/// The toolchain a build used: part of the cache key and of the SBOM.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Toolchain {
    /// First lines of `gcc --version`, `ld --version`, `make --version`, `patch --version`.
    pub tools: Vec<String>,
    /// The C library linked in, from `getconf GNU_LIBC_VERSION` (e.g. `2.36`).
    pub glibc: String,
    /// `PACKAGE VERSION` of [`HOST_PACKAGES`] as dpkg knows them (empty without dpkg).
    pub packages: Vec<String>,
    /// sha256 of the static C library, which the program contains whatever dpkg says.
    pub libc_a_sha256: String,
}

impl Toolchain {
    pub fn detect() -> Result<Self, SourceBuildError> {
        let missing: Vec<&(&str, &str)> =
            HOST_NEEDS.iter().filter(|(cmd, _)| !on_path(cmd)).collect();
        let mut packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
        if !Path::new(STATIC_LIBC).is_file() {
            packages.push("libc6-dev");
        }
        if !packages.is_empty() {
            packages.sort();
            packages.dedup();
            return Err(SourceBuildError::HostTools {
                missing: packages.join(" "),
            });
        }
        let mut tools = Vec::new();
        for program in ["gcc", "ld", "make", "patch"] {
            tools.push(first_line(program, &["--version"])?);
        }
        let libc = first_line("getconf", &["GNU_LIBC_VERSION"])?;
        let glibc = libc
            .strip_prefix("glibc ")
            .ok_or_else(|| SourceBuildError::Tool {
                program: "getconf GNU_LIBC_VERSION".into(),
                message: format!("answered `{libc}`, not `glibc VERSION`"),
            })?
            .to_string();
        let libc_a = std::fs::read(STATIC_LIBC).map_err(|e| SourceBuildError::Tool {
            program: format!("reading {STATIC_LIBC}"),
            message: e.to_string(),
        })?;
        let libc_a_sha256 = hex::encode(sha2::Sha256::digest(&libc_a));
        Ok(Toolchain {
            tools,
            glibc,
            packages: dpkg_versions(HOST_PACKAGES),
            libc_a_sha256,
        })
    }
}

/// `PACKAGE VERSION` of the installed ones among `packages` (none on a machine without dpkg).
fn dpkg_versions(packages: &[&str]) -> Vec<String> {
    let Ok(out) = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${Version} ${db:Status-Status}\n"])
        .args(packages)
        .env("LC_ALL", "C")
        .stderr(Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    let mut found: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(" installed"))
        .map(str::to_string)
        .collect();
    found.sort();
    found
}

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|d| {
            std::fs::metadata(d.join(cmd))
                .map(|m| m.is_file())
                .unwrap_or(false)
        })
    })
}

fn first_line(program: &str, args: &[&str]) -> Result<String, SourceBuildError> {
    let out = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .stderr(Stdio::null())
        .output()
        .map_err(|e| SourceBuildError::Tool {
            program: program.into(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(SourceBuildError::Tool {
            program: format!("{program} {}", args.join(" ")),
            message: format!("exited with {}", out.status),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string())
}

/// The compiler flags: Debian's `hardening=+all` for a position-independent static program.
pub const CFLAGS: &str = "-O2 -fPIE -fstack-protector-strong -fstack-clash-protection \
    -fcf-protection -D_FORTIFY_SOURCE=2 -Wformat -Werror=format-security";

/// [`CFLAGS`] for a build in `tree`, whose path is mapped to `.` so it never reaches the
/// bytes. configure splits CFLAGS at white space, so such a path is refused.
pub fn cflags(tree: &Path) -> Result<String, SourceBuildError> {
    let shown = tree.display().to_string();
    if shown.contains(char::is_whitespace) || tree.to_str().is_none() {
        return Err(SourceBuildError::Tool {
            program: "configure".into(),
            message: format!(
                "the build folder {shown} has white space or non-UTF-8 in its path, which CFLAGS cannot carry; set ECI_CACHE_DIR to a folder without"
            ),
        });
    }
    Ok(format!("{CFLAGS} -ffile-prefix-map={shown}=."))
}

/// Linker flags (libtool passes `-Wc,` flags to the compiler driver when it links): a static
/// PIE, so the program keeps address randomisation without an interpreter; full RELRO; no
/// symbols, as Debian strips its binaries.
pub const LDFLAGS: &str = "-Wc,-static-pie -Wl,-z,relro -Wl,-z,now -Wl,--strip-all";

/// Runs configure and make in `tree`, writing their output to `log`.
pub fn configure_and_make(
    recipe: &Recipe,
    tree: &Path,
    epoch: u64,
    log: &Path,
) -> Result<(), SourceBuildError> {
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cflags = cflags(tree)?;
    let logfile = std::fs::File::create(log).map_err(super::io_err(log))?;
    let steps: Vec<(String, Command)> = vec![
        ("./configure".into(), {
            let mut c = Command::new("./configure");
            // gcc: the compiler Toolchain::detect recorded, whatever CC the caller has; as
            // arguments, which configure records, since the environment is cleared below.
            c.args(recipe.configure)
                .arg("CC=gcc")
                .arg(format!("CFLAGS={cflags}"));
            c
        }),
        (format!("make -j{jobs}"), {
            let mut c = Command::new("make");
            c.arg(format!("-j{jobs}"))
                .arg(format!("LDFLAGS={LDFLAGS}"))
                .arg("V=1");
            c
        }),
    ];
    for (label, mut cmd) in steps {
        let out = logfile.try_clone().map_err(super::io_err(log))?;
        let err = logfile.try_clone().map_err(super::io_err(log))?;
        // Nothing of the caller's environment reaches the build but PATH: compiler and
        // pkg-config search paths, an outer make's flags, CONFIG_SITE, the locale and the time
        // zone all change what configure finds or what make does. pkg-config finds nothing,
        // so optional libraries are never linked in by accident of what the host has.
        let status = cmd
            .current_dir(tree)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("PKG_CONFIG_LIBDIR", "")
            .env("PKG_CONFIG_PATH", "")
            .env("LC_ALL", "C")
            .env("TZ", "UTC")
            .env("SOURCE_DATE_EPOCH", epoch.to_string())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .status()
            .map_err(|e| SourceBuildError::Tool {
                program: label.clone(),
                message: e.to_string(),
            })?;
        if !status.success() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            return Err(SourceBuildError::Build {
                package: recipe.package.into(),
                step: label,
                log: log.to_path_buf(),
                tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            });
        }
    }
    Ok(())
}
