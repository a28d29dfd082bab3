//! WSL2 outputs (SPEC V5): the root filesystem as a gzip-compressed tarball for
//! `wsl --import`, the same bytes as `NAME.wsl` for `wsl --install --from-file` (WSL 2.4.4+),
//! and a `.wslconfig` snippet that points WSL at the shipped kernel.
//!
//! Microsoft's rules for distribution tarballs ("Build a custom Linux distribution for WSL")
//! and how they are met:
//!
//! | rule | here |
//! |---|---|
//! | tar of the root filesystem, gzip recommended | [`super::tar`], gzip ([`super::gzip`], level 6); the root of the tar is `/` |
//! | `.wsl` is the tarball renamed | `NAME.wsl` is a hard link to (or copy of) `rootfs.tar.gz` |
//! | `/etc/wsl.conf`, `/etc/wsl-distribution.conf`, root:root 0644 | rendered from `wsl.conf.tera` and `wsl-distribution.conf.tera` by the definition; checked here |
//! | `oobe.defaultName` set (needed to install by double-click) | checked here |
//! | a root user with uid 0, no password hashes in /etc/shadow | checked here |
//! | no `/etc/resolv.conf` (WSL generates it) | checked here |
//! | no kernel or initramfs in the archive | checked here: no `/boot/vmlinu*`, `/boot/initrd*`; the initramfs is not written for this target |
//! | `shortcut.icon` set | not met: the image has no icon, WSL uses its default |
//!
//! And eci's own (SPEC H5, H3): the default user (`wsl.conf` `[user] default`, the same uid as
//! `[oobe] defaultUid`) is not root and is in the `docker` group, which owns eci-guard's socket;
//! drives, when automounted, appear under the share root `/mnt/host` that B1's binds allow.
//!
//! `/init` (the initramfs init script of the VM targets) stays in the tree: WSL mounts its own
//! init over `/init` in every distribution, so it never runs.

use super::gzip::ParallelGzWriter;
use super::tar::write_tar;
use super::{io, render_template, ArtifactError, ArtifactRecord, BuildInfo};
use crate::manifest::{EntryKind, Manifest};
use crate::rootfs::Rootfs;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::Path;

pub const TARGET: &str = "wsl2";
pub const ROOTFS_FILE: &str = "rootfs.tar.gz";
pub const WSLCONFIG_FILE: &str = "wslconfig";
pub const WSLCONFIG_TEMPLATE: &str = "wslconfig.tera";
/// Where the `.wslconfig` snippet expects the kernel: machine-wide and writable by
/// administrators only, so a user cannot swap the file another user's WSL boots.
pub const KERNEL_INSTALL_PATH: &str = r"C:\ProgramData\eci\wsl2\vmlinuz";

/// The `.wsl` package's file name for an image called `name`.
pub fn package_file(name: &str) -> String {
    format!("{name}.wsl")
}

/// Checks the root filesystem against Microsoft's distribution rules (module docs).
pub fn check_rules(manifest: &Manifest) -> Result<(), ArtifactError> {
    let fail = |rule: &str, fix: &str| {
        Err(ArtifactError::WslRule {
            rule: rule.into(),
            fix: fix.into(),
        })
    };
    for conf in ["/etc/wsl.conf", "/etc/wsl-distribution.conf"] {
        match manifest.get(conf) {
            Some(e) if matches!(e.kind, EntryKind::File(_)) => {
                if (e.uid, e.gid, e.mode) != (0, 0, 0o644) {
                    return fail(
                        &format!("{conf} is {}:{} {:04o}, not root:root 0644", e.uid, e.gid, e.mode),
                        "set `mode: \"0644\"` on it under files: in images/wsl2.yaml",
                    );
                }
            }
            _ => {
                return fail(
                    &format!("{conf} is missing"),
                    "render it under files: in images/wsl2.yaml (templates wsl.conf.tera, wsl-distribution.conf.tera)",
                )
            }
        }
    }
    let text = |p: &str| {
        manifest
            .get(p)
            .and_then(|e| e.data())
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    let dist = text("/etc/wsl-distribution.conf");
    if ini_value(&dist, "oobe", "defaultName").is_none_or(|v| v.is_empty()) {
        return fail(
            "/etc/wsl-distribution.conf sets no [oobe] defaultName",
            "set it in vm-config/templates/wsl-distribution.conf.tera",
        );
    }
    let root_ok = text("/etc/passwd").lines().any(|l| {
        let f: Vec<&str> = l.split(':').collect();
        f.len() >= 3 && f[0] == "root" && f[2] == "0"
    });
    if !root_ok {
        return fail(
            "/etc/passwd has no root user with uid 0",
            "declare it under users: in images/base.yaml",
        );
    }
    for line in text("/etc/shadow").lines() {
        let hash = line.split(':').nth(1).unwrap_or("");
        if !(hash.is_empty() || hash.starts_with('!') || hash.starts_with('*')) {
            return fail(
                &format!(
                    "/etc/shadow holds a password hash for `{}`",
                    line.split(':').next().unwrap_or("")
                ),
                "accounts must stay locked (`!*`)",
            );
        }
    }
    check_default_user(
        &text("/etc/wsl.conf"),
        &dist,
        &text("/etc/passwd"),
        &text("/etc/group"),
    )
    .or_else(|(rule, fix)| fail(&rule, &fix))?;
    check_automount(&text("/etc/wsl.conf")).or_else(|(rule, fix)| fail(&rule, &fix))?;
    if manifest.get("/etc/resolv.conf").is_some() {
        return fail(
            "/etc/resolv.conf is in the image (WSL generates it)",
            "add /etc/resolv.conf to remove: in images/wsl2.yaml",
        );
    }
    if let Some((p, _)) = manifest.iter().find(|(p, e)| {
        !e.is_dir()
            && (p.starts_with("/boot/vmlinu")
                || p.starts_with("/boot/initrd")
                || p.starts_with("/boot/initramfs"))
    }) {
        return fail(
            &format!("{p} is a kernel or initramfs (WSL boots its own)"),
            "add it to remove: in images/wsl2.yaml",
        );
    }
    Ok(())
}

/// The value of `key` in `[section]` of a WSL ini file (names compare case-insensitively, as
/// WSL's do; quotes around the value are dropped).
fn ini_value(text: &str, section: &str, key: &str) -> Option<String> {
    let mut current = String::new();
    let mut found = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = s.trim().to_ascii_lowercase();
        } else if let Some((k, v)) = line.split_once('=') {
            if current.eq_ignore_ascii_case(section) && k.trim().eq_ignore_ascii_case(key) {
                found = Some(v.trim().trim_matches('"').to_string());
            }
        }
    }
    found
}

type RuleBroken = (String, String);

/// SPEC H5: the session user is not root and reaches the engine through the docker group.
fn check_default_user(
    wsl_conf: &str,
    dist: &str,
    passwd: &str,
    group: &str,
) -> Result<(), RuleBroken> {
    let broken = |rule: String, fix: &str| Err((rule, fix.to_string()));
    let Some(name) = ini_value(wsl_conf, "user", "default") else {
        return broken(
            "/etc/wsl.conf names no [user] default, so sessions start as root (SPEC H5)".into(),
            "set `default = eci` under [user] in vm-config/templates/wsl.conf.tera",
        );
    };
    let Some(fields) = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && f[0] == name)
    else {
        return broken(
            format!("/etc/wsl.conf's default user `{name}` is not in /etc/passwd"),
            "declare it under users: in images/wsl2.yaml",
        );
    };
    let (uid, gid) = (fields[2], fields[3]);
    if uid == "0" {
        return broken(
            format!("the default user `{name}` has uid 0: sessions would be root (SPEC H5)"),
            "give it a uid other than 0 under users: in images/wsl2.yaml",
        );
    }
    let docker = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && f[0] == "docker");
    let in_docker = docker
        .is_some_and(|f| f[2] == gid || f.get(3).is_some_and(|m| m.split(',').any(|m| m == name)));
    if !in_docker {
        return broken(
            format!("the default user `{name}` is not in the docker group, so it cannot reach the engine's socket (SPEC H5)"),
            "give it gid 999 (docker, images/base.yaml) under users: in images/wsl2.yaml",
        );
    }
    match ini_value(dist, "oobe", "defaultUid") {
        Some(v) if v == uid => Ok(()),
        other => broken(
            format!(
                "/etc/wsl-distribution.conf's [oobe] defaultUid is {other:?}, not {uid}, the uid of wsl.conf's default user `{name}`"
            ),
            "make them agree in vm-config/templates/wsl-distribution.conf.tera",
        ),
    }
}

/// SPEC H3, B1: automounted drives land under the share root, where binds are allowed.
fn check_automount(wsl_conf: &str) -> Result<(), RuleBroken> {
    let enabled =
        ini_value(wsl_conf, "automount", "enabled").is_none_or(|v| v.eq_ignore_ascii_case("true"));
    if !enabled {
        return Ok(());
    }
    let root = ini_value(wsl_conf, "automount", "root").unwrap_or_else(|| "/mnt/".into());
    let share_root = eci_facts::vm_paths::HOST_SHARE_ROOT;
    if root.trim_end_matches('/') != share_root {
        return Err((
            format!("/etc/wsl.conf automounts the Windows drives at {root}, not under the share root {share_root}/ that bind mounts may use (SPEC H3, B1)"),
            format!("set `root = {share_root}/` under [automount] in vm-config/templates/wsl.conf.tera"),
        ));
    }
    Ok(())
}

/// Kernel command-line tokens for `.wslconfig`'s `kernelCommandLine`: the definition's, except
/// `console=`, which WSL sets itself (a second console on ttyS0 would only slow every boot).
pub fn wsl_cmdline(cmdline: &[String]) -> String {
    cmdline
        .iter()
        .filter(|t| !t.starts_with("console="))
        .cloned()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes the WSL outputs into `dir` (the kernel is already there).
pub fn write(
    dir: &Path,
    rootfs: &Rootfs,
    info: &BuildInfo,
) -> Result<Vec<ArtifactRecord>, ArtifactError> {
    check_rules(&rootfs.manifest)?;
    let tar_path = dir.join(ROOTFS_FILE);
    let (sha256, size, uncompressed) =
        write_tarball(&tar_path, &rootfs.manifest, info.source_date_epoch)?;
    let tarball = ArtifactRecord {
        uncompressed_size: Some(uncompressed),
        compression: Some("gzip".into()),
        ..ArtifactRecord::plain(ROOTFS_FILE, "rootfs-tarball", sha256.clone(), size)
    };
    let package_name = package_file(&info.name);
    let package_path = dir.join(&package_name);
    if fs::hard_link(&tar_path, &package_path).is_err() {
        fs::copy(&tar_path, &package_path).map_err(io(&package_path))?;
    }
    let package = ArtifactRecord {
        uncompressed_size: Some(uncompressed),
        compression: Some("gzip".into()),
        ..ArtifactRecord::plain(&package_name, "wsl-package", sha256, size)
    };

    let mut context = tera::Context::new();
    context.insert(
        "image",
        &serde_json::json!({ "name": info.name, "target": info.target }),
    );
    context.insert("lock_sha256", &info.lock_sha256);
    context.insert(
        "kernel",
        &serde_json::json!({
            "release": rootfs.booted_kernel().release,
            // .wslconfig values are Windows paths with doubled backslashes.
            "path": KERNEL_INSTALL_PATH.replace('\\', "\\\\"),
            "cmdline": wsl_cmdline(&info.platform.cmdline),
        }),
    );
    let snippet = render_template(&info.platform.templates_dir, WSLCONFIG_TEMPLATE, &context)?;
    let snippet = snippet.replace("\r\n", "\n").replace('\n', "\r\n");
    let snippet_path = dir.join(WSLCONFIG_FILE);
    super::write_synced(&snippet_path, snippet.as_bytes())?;
    let wslconfig = ArtifactRecord::plain(
        WSLCONFIG_FILE,
        "wslconfig",
        hex::encode(Sha256::digest(snippet.as_bytes())),
        snippet.len() as u64,
    );
    Ok(vec![tarball, package, wslconfig])
}

/// Writes `manifest` as a gzip tarball; returns its sha256, size and uncompressed size.
fn write_tarball(
    path: &Path,
    manifest: &Manifest,
    epoch: u64,
) -> Result<(String, u64, u64), ArtifactError> {
    let file = fs::File::create(path).map_err(io(path))?;
    let mut hashed = Hashed {
        inner: std::io::BufWriter::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
        written: 0,
    };
    // Level 6, not the `gzip --best` of Microsoft's example: on this root filesystem level 9
    // takes three times as long for a tarball under 1% smaller (measured with GNU gzip: 23.7 s
    // and 102.1 MB at -6, 78.2 s and 101.3 MB at -9). Compression runs on every core.
    let mut gz = ParallelGzWriter::new(&mut hashed, flate2::Compression::default());
    let stats = write_tar(manifest, epoch, &mut gz).map_err(|e| match e {
        super::tar::TarError::Io(source) => ArtifactError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => ArtifactError::Tar(other.to_string()),
    })?;
    gz.finish().map_err(io(path))?;
    hashed.flush().map_err(io(path))?;
    let Hashed {
        inner,
        hasher,
        written,
    } = hashed;
    let file = inner.into_inner().map_err(|e| ArtifactError::Io {
        path: path.to_path_buf(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io(path))?;
    Ok((hex::encode(hasher.finalize()), written, stats.bytes))
}

struct Hashed<W: Write> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for Hashed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::{write_outputs, PlatformInputs, SbomPackage};
    use crate::initramfs::Compression;
    use crate::manifest::Entry;
    use crate::rootfs::KernelImage;
    use std::io::Read;

    const EPOCH: u64 = 1_747_699_200;

    fn templates() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../vm-config/templates")
    }

    fn render(template: &str) -> String {
        let mut ctx = tera::Context::new();
        ctx.insert(
            "image",
            &serde_json::json!({"name": "eci", "target": "wsl2"}),
        );
        ctx.insert(
            "kernel",
            &serde_json::json!({"release": "6.12.0-test", "modules": ["overlay"]}),
        );
        render_template(&templates(), template, &ctx).unwrap()
    }

    /// A root filesystem shaped like the real one, with the WSL files rendered from the same
    /// templates images/wsl2.yaml names.
    fn synthetic() -> Rootfs {
        let mut m = super::super::tar::tests::sample();
        let mut put = |p: &str, e: Entry| {
            m.insert(p, e.with_mtime(EPOCH)).unwrap();
        };
        put("/etc/wsl.conf", Entry::file(render("wsl.conf.tera"), 0o644));
        put(
            "/etc/wsl-distribution.conf",
            Entry::file(render("wsl-distribution.conf.tera"), 0o644),
        );
        put(
            "/etc/passwd",
            Entry::file(
                "root:x:0:0:root:/root:/usr/sbin/nologin\neci:x:1000:999:eci:/home/eci:/bin/sh\n",
                0o644,
            ),
        );
        put(
            "/etc/group",
            Entry::file("root:x:0:\ndocker:x:999:\n", 0o644),
        );
        put("/etc/shadow", Entry::file("root:!*:0::::::\n", 0o600));
        put("/usr/libexec", Entry::dir(0o755));
        put("/usr/libexec/eci", Entry::dir(0o755));
        put(
            "/usr/libexec/eci/wsl-boot",
            Entry::file(render("wsl-boot.sh.tera"), 0o755),
        );
        Rootfs {
            manifest: m,
            kernel: Some(KernelImage {
                release: "6.12.0-test".into(),
                vmlinuz: b"MZ kernel".to_vec(),
                config: String::new(),
            }),
            packages: vec![],
            modules: vec![],
            builtin_modules: vec![],
            warnings: vec![],
        }
    }

    fn info() -> BuildInfo {
        BuildInfo {
            name: "eci".into(),
            target: TARGET.into(),
            outputs: vec![crate::spec::OutputKind::WslRootfs],
            source_date_epoch: EPOCH,
            lock_sha256: "ab".repeat(32),
            kernel_package: "linux-image-test".into(),
            kernel_version: "1".into(),
            compression: Compression::Zstd,
            platform: PlatformInputs {
                cmdline: ["console=ttyS0", "panic=-1", "lockdown=integrity"]
                    .map(String::from)
                    .to_vec(),
                templates_dir: templates(),
                uefi_loader: None,
            },
            cargo_inputs: None,
            source_builds: Vec::new(),
        }
    }

    fn sbom() -> Vec<SbomPackage> {
        vec![SbomPackage {
            name: "base-files".into(),
            version: "12".into(),
            architecture: "amd64".into(),
            sha256: "cd".repeat(32),
        }]
    }

    #[test]
    fn writes_tarball_package_and_snippet_deterministically() {
        let work = tempfile::tempdir().unwrap();
        let (a, b) = (work.path().join("a"), work.path().join("b"));
        let rootfs = synthetic();
        let manifest = write_outputs(&a, &rootfs, &info(), &sbom()).unwrap();
        write_outputs(&b, &rootfs, &info(), &sbom()).unwrap();
        let kinds: Vec<&str> = manifest.artifacts.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "kernel",
                "rootfs-tarball",
                "wsl-package",
                "wslconfig",
                "sbom"
            ]
        );
        assert!(!a.join(crate::artifact::INITRAMFS_FILE).exists());
        for r in &manifest.artifacts {
            let x = fs::read(a.join(&r.path)).unwrap();
            assert_eq!(hex::encode(Sha256::digest(&x)), r.sha256, "{}", r.path);
            assert_eq!(x.len() as u64, r.size);
            assert!(
                x == fs::read(b.join(&r.path)).unwrap(),
                "{} differs",
                r.path
            );
        }
        assert_eq!(
            fs::read(a.join(ROOTFS_FILE)).unwrap(),
            fs::read(a.join("eci.wsl")).unwrap(),
            "the .wsl package is the tarball renamed"
        );
        let snippet = fs::read_to_string(a.join(WSLCONFIG_FILE)).unwrap();
        assert!(
            snippet.contains("kernel=C:\\\\ProgramData\\\\eci\\\\wsl2\\\\vmlinuz\r\n"),
            "{snippet}"
        );
        assert!(
            snippet.contains("kernelCommandLine=panic=-1 lockdown=integrity\r\n"),
            "{snippet}"
        );
        assert!(snippet.contains("[wsl2]"));
    }

    #[test]
    fn tarball_is_gzip_with_fixed_header_and_the_rendered_configs() {
        let work = tempfile::tempdir().unwrap();
        write_outputs(work.path(), &synthetic(), &info(), &sbom()).unwrap();
        let bytes = fs::read(work.path().join(ROOTFS_FILE)).unwrap();
        assert_eq!(
            &bytes[..4],
            &[0x1f, 0x8b, 8, 0],
            "gzip, no name or extra fields"
        );
        assert_eq!(&bytes[4..8], &[0, 0, 0, 0], "gzip mtime 0");
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(bytes.as_slice())
            .read_to_end(&mut tar)
            .unwrap();
        let mut ar = ::tar::Archive::new(tar.as_slice());
        let mut found = std::collections::BTreeMap::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let h = e.header().clone();
            let mut data = String::new();
            if h.entry_type().is_file() {
                e.read_to_string(&mut data).unwrap_or_default();
            }
            found.insert(path, (h.mode().unwrap(), h.uid().unwrap(), data));
        }
        let (mode, uid, conf) = &found["etc/wsl.conf"];
        assert_eq!((*mode, *uid), (0o644, 0));
        assert!(conf.contains("systemd = false"), "{conf}");
        assert!(
            conf.contains("command = /usr/libexec/eci/wsl-boot"),
            "{conf}"
        );
        assert!(conf.contains("default = eci"), "{conf}");
        assert!(conf.contains("root = /mnt/host/"), "{conf}");
        let (_, _, dist) = &found["etc/wsl-distribution.conf"];
        assert!(dist.contains("defaultName = eci"), "{dist}");
        assert!(dist.contains("defaultUid = 1000"), "{dist}");
        assert_eq!(found["usr/libexec/eci/wsl-boot"].0, 0o755);
        assert!(!found.keys().any(|k| k.is_empty() || k == "/" || k == "./"));
    }

    #[test]
    fn distribution_rules_are_enforced() {
        let broken = |f: &dyn Fn(&mut Manifest)| {
            let mut r = synthetic();
            f(&mut r.manifest);
            check_rules(&r.manifest).unwrap_err().to_string()
        };
        assert!(check_rules(&synthetic().manifest).is_ok());
        let e = broken(&|m| {
            m.remove("/etc/wsl.conf").unwrap();
        });
        assert!(e.contains("/etc/wsl.conf is missing"), "{e}");
        let e = broken(&|m| {
            m.get_mut("/etc/wsl-distribution.conf").unwrap().mode = 0o600;
        });
        assert!(e.contains("not root:root 0644"), "{e}");
        let e = broken(&|m| {
            m.insert(
                "/etc/resolv.conf",
                Entry::file("nameserver 1.1.1.1\n", 0o644),
            )
            .unwrap();
        });
        assert!(e.contains("resolv.conf"), "{e}");
        let e = broken(&|m| {
            m.insert(
                "/etc/shadow",
                Entry::file("root:$6$salt$hash:0::::::\n", 0o600),
            )
            .unwrap();
        });
        assert!(e.contains("password hash for `root`"), "{e}");
        let e = broken(&|m| {
            m.insert("/boot", Entry::dir(0o755)).unwrap();
            m.insert("/boot/vmlinuz-6.12", Entry::file("k", 0o644))
                .unwrap();
        });
        assert!(e.contains("kernel or initramfs"), "{e}");
        let e = broken(&|m| {
            m.insert("/etc/wsl-distribution.conf", Entry::file("[oobe]\n", 0o644))
                .unwrap();
        });
        assert!(e.contains("defaultName"), "{e}");
        let e = broken(&|m| {
            m.insert(
                "/etc/passwd",
                Entry::file("daemon:x:1:1::/:/bin/false\n", 0o644),
            )
            .unwrap();
        });
        assert!(e.contains("root user"), "{e}");
    }

    #[test]
    fn the_session_user_is_not_root_and_reaches_the_engine_through_docker() {
        let broken = |f: &dyn Fn(&mut Manifest)| {
            let mut r = synthetic();
            f(&mut r.manifest);
            check_rules(&r.manifest).unwrap_err().to_string()
        };
        let conf = render("wsl.conf.tera");
        let swap = |from: &'static str, to: &'static str| {
            let text = conf.replace(from, to);
            move |m: &mut Manifest| {
                m.insert("/etc/wsl.conf", Entry::file(text.clone(), 0o644))
                    .unwrap();
            }
        };
        let e = broken(&swap("default = eci", "default = root"));
        assert!(e.contains("uid 0"), "{e}");
        let e = broken(&swap("default = eci", "# no user"));
        assert!(e.contains("no [user] default"), "{e}");
        let e = broken(&swap("default = eci", "default = alice"));
        assert!(e.contains("`alice` is not in /etc/passwd"), "{e}");
        let e = broken(&|m| {
            m.insert(
                "/etc/passwd",
                Entry::file(
                    "root:x:0:0::/root:/bin/sh\neci:x:1000:1000::/home/eci:/bin/sh\n",
                    0o644,
                ),
            )
            .unwrap();
        });
        assert!(e.contains("not in the docker group"), "{e}");
        // A supplementary membership counts as well as the primary group.
        let mut r = synthetic();
        r.manifest
            .insert(
                "/etc/passwd",
                Entry::file(
                    "root:x:0:0::/root:/bin/sh\neci:x:1000:1000::/home/eci:/bin/sh\n",
                    0o644,
                ),
            )
            .unwrap();
        r.manifest
            .insert(
                "/etc/group",
                Entry::file("eci:x:1000:\ndocker:x:999:eci\n", 0o644),
            )
            .unwrap();
        check_rules(&r.manifest).unwrap();
        let e = broken(&|m| {
            m.insert(
                "/etc/wsl-distribution.conf",
                Entry::file("[oobe]\ndefaultName = eci\ndefaultUid = 0\n", 0o644),
            )
            .unwrap();
        });
        assert!(e.contains("defaultUid"), "{e}");
        let e = broken(&swap("root = /mnt/host/", "root = /mnt/"));
        assert!(e.contains("not under the share root /mnt/host/"), "{e}");
        // Drives not mounted at all break no rule.
        let mut r = synthetic();
        swap("enabled = true\nroot", "enabled = false\nroot")(&mut r.manifest);
        check_rules(&r.manifest).unwrap();
    }

    #[test]
    fn wsl_command_line_leaves_the_console_to_wsl() {
        let c = ["console=ttyS0", "panic=-1", "slab_nomerge"].map(String::from);
        assert_eq!(wsl_cmdline(&c), "panic=-1 slab_nomerge");
    }

    #[test]
    fn the_wsl2_definition_renders_the_wsl_files() {
        let spec = crate::spec::load(&crate::testing::checkout().definition("wsl2")).unwrap();
        for (path, template) in [
            ("/etc/wsl.conf", "wsl.conf.tera"),
            ("/etc/wsl-distribution.conf", "wsl-distribution.conf.tera"),
            ("/usr/libexec/eci/wsl-boot", "wsl-boot.sh.tera"),
        ] {
            let f = spec
                .files
                .iter()
                .find(|f| f.path == path)
                .unwrap_or_else(|| panic!("images/wsl2.yaml does not render {path}"));
            assert_eq!(f.template, template);
        }
        // The boot command wsl.conf names is the file the definition installs.
        assert!(render("wsl.conf.tera").contains("command = /usr/libexec/eci/wsl-boot"));
        // SPEC H5: the user wsl.conf names is declared, not root, in the docker group, and
        // has a home it owns.
        let user = spec
            .users
            .iter()
            .find(|u| u.name == "eci")
            .expect("images/wsl2.yaml declares the eci user");
        let docker = spec.groups.iter().find(|g| g.name == "docker").unwrap();
        assert!(user.uid != 0 && user.gid == docker.gid, "{user:?}");
        let home = spec
            .directories
            .iter()
            .find(|d| d.path == user.home)
            .expect("the user's home is declared");
        assert_eq!((home.uid, home.gid), (user.uid, user.gid));
    }
}
