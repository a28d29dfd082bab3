//! Opt-in (`ECI_KERNEL_BUILD_TARGET=wsl2`; the first run builds the WSL2 kernel, 30-45 min on
//! two cores, later runs take it from the cache in seconds): the WSL2 image end to end
//! (SPEC V5, V6, V1). `images/wsl2.yaml` boots our own kernel (`kernel.build: true`), because
//! no Debian kernel meets the wsl2 pins; this proves the image build takes that kernel from the
//! kernel build, checks it against the pins, and writes a tarball WSL can import with the
//! kernel beside it and nothing of a Debian kernel inside; and (SPEC H5, H3) that `wsl -d eci`
//! opens a session as a user that is not root, in the docker group, whose only engine endpoint
//! is eci-guard's socket, with the Windows drives automounted under the share root.

use eci_build::pipeline;
use eci_e2e::{image_request, workspace_root};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::Command;

fn tar_list(tarball: &Path) -> Vec<String> {
    let out = Command::new("tar")
        .arg("-tzf")
        .arg(tarball)
        .output()
        .expect("tar");
    assert!(out.status.success(), "tar -t {}", tarball.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| format!("/{}", l.trim_start_matches("./")))
        .collect()
}

fn tar_file(tarball: &Path, path: &str) -> String {
    let out = Command::new("tar")
        .arg("-xzOf")
        .arg(tarball)
        .arg(path.trim_start_matches('/'))
        .output()
        .expect("tar");
    assert!(
        out.status.success(),
        "{path} is not in {}",
        tarball.display()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn wsl2_image_ships_the_own_kernel_and_passes_its_pins() {
    if std::env::var("ECI_KERNEL_BUILD_TARGET").as_deref() != Ok("wsl2") {
        eprintln!("opt-in: set ECI_KERNEL_BUILD_TARGET=wsl2 to run (builds the WSL2 kernel once)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("wsl2");
    let report = pipeline::build_image(&image_request("wsl2", &out))
        .unwrap_or_else(|e| panic!("wsl2 image: {e:#}"));
    let m = &report.manifest;
    assert!(report.kernel.as_ref().is_some_and(|k| k.is_ok()));
    assert!(
        m.kernel.release.ends_with("-eci-wsl2"),
        "{}",
        m.kernel.release
    );
    assert!(
        m.kernel.package.starts_with("linux-source-"),
        "{}",
        m.kernel.package
    );
    assert!(
        m.kernel.modules.is_empty(),
        "own kernels load no modules: {:?}",
        m.kernel.modules
    );
    assert!(m.kernel.builtin_modules.contains(&"overlay".to_string()));

    // The kernel beside the tarball is the cached kernel build's bzImage.
    let kernel = m
        .artifacts
        .iter()
        .find(|a| a.kind == "kernel")
        .expect("a kernel artifact");
    let bytes = std::fs::read(out.join(&kernel.path)).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&bytes)), kernel.sha256);
    let cached =
        std::fs::read_dir(eci_build::apt::fetch::Cache::default_location().join("kernel/out"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read_to_string(e.path().join("build.json")).ok())
            .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .find(|b| b["recipe"] == "wsl2" && b["kernel_release"] == m.kernel.release.as_str())
            .expect("the wsl2 kernel build in the cache");
    assert_eq!(cached["image_sha256"], kernel.sha256.as_str());

    let tarball = out.join(eci_build::artifact::wsl2::ROOTFS_FILE);
    let entries = tar_list(&tarball);
    assert!(
        !entries
            .iter()
            .any(|e| e.ends_with(".ko") || e.starts_with("/boot/vmlinuz")),
        "no kernel or modules inside the distribution"
    );
    assert!(entries.contains(&format!("/boot/config-{}", m.kernel.release)));
    let pins: serde_json::Value =
        serde_json::from_str(&tar_file(&tarball, eci_kernel_config::IMAGE_PINS_PATH)).unwrap();
    assert_eq!(pins["kernel_release"], m.kernel.release.as_str());
    assert!(pins["fragments"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "wsl2"));
    let status = tar_file(&tarball, "/var/lib/dpkg/status");
    assert!(
        !status.contains("Package: linux-image-"),
        "a Debian kernel package is recorded as installed"
    );
    let sbom = std::fs::read_to_string(out.join("sbom.spdx.json")).unwrap();
    assert!(
        sbom.contains("linux-source-"),
        "the SBOM names the kernel's source"
    );
    session_user_reaches_only_the_guard(&tarball);
    let snippet =
        std::fs::read_to_string(out.join(eci_build::artifact::wsl2::WSLCONFIG_FILE)).unwrap();
    assert!(snippet.contains("kernel="), "{snippet}");

    // Same inputs, same bytes (SPEC V1), the kernel coming from the cache this time.
    let again = work.path().join("again");
    pipeline::build_image(&image_request("wsl2", &again)).unwrap();
    for a in &m.artifacts {
        assert_eq!(
            std::fs::read(out.join(&a.path)).unwrap(),
            std::fs::read(again.join(&a.path)).unwrap(),
            "{} differs between two builds",
            a.path
        );
    }
    assert!(workspace_root()
        .join("kernel-config/generated/wsl2.config")
        .is_file());
}

/// SPEC H5, H3, read from the tarball as WSL would: wsl.conf's session user, its account and
/// groups, its home, the engine sockets' owners and modes, and where the drives are mounted.
fn session_user_reaches_only_the_guard(tarball: &Path) {
    let conf = tar_file(tarball, "/etc/wsl.conf");
    let value = |section: &str, key: &str| {
        let mut current = String::new();
        let mut found = None;
        for line in conf.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
            if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                current = s.to_string();
            } else if let Some((k, v)) = line.split_once('=') {
                if current == section && k.trim() == key {
                    found = Some(v.trim().to_string());
                }
            }
        }
        found.unwrap_or_else(|| panic!("wsl.conf has no [{section}] {key}:\n{conf}"))
    };
    let user = value("user", "default");
    let passwd = tar_file(tarball, "/etc/passwd");
    let account: Vec<&str> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f[0] == user)
        .unwrap_or_else(|| panic!("{user} is not in /etc/passwd:\n{passwd}"));
    let (uid, gid) = (account[2], account[3]);
    assert_ne!(uid, "0", "the session user is root");
    let group = tar_file(tarball, "/etc/group");
    let docker: Vec<&str> = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f[0] == "docker")
        .expect("a docker group");
    assert!(
        docker[2] == gid || docker[3].split(',').any(|m| m == user),
        "{user} (gid {gid}) is not in the docker group: {docker:?}"
    );
    let dist = tar_file(tarball, "/etc/wsl-distribution.conf");
    assert!(dist.contains(&format!("defaultUid = {uid}")), "{dist}");
    // The home is the user's own.
    let listing = Command::new("tar")
        .args(["-tvzf"])
        .arg(tarball)
        .arg("--numeric-owner")
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    let home = account[5].trim_start_matches('/');
    assert!(
        listing
            .lines()
            .any(|l| l.contains(&format!(" {uid}/{gid} "))
                && (l.ends_with(&format!(" {home}/")) || l.ends_with(&format!(" ./{home}/")))),
        "{home} is not owned by {uid}/{gid}"
    );
    // The engine the user reaches: eci-guard's socket, root:docker 0660; dockerd's own socket
    // lives in /run/eci, which eci-init makes root-only (runtime/init).
    let services = tar_file(tarball, "/etc/eci/services.json");
    let services: serde_json::Value = serde_json::from_str(&services).unwrap();
    let guard = services["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "eci-guard")
        .expect("eci-guard is a service");
    let args: Vec<&str> = guard["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let after = |flag: &str| {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1])
            .collect::<Vec<_>>()
    };
    assert!(
        after("--listen").contains(&"user=/run/docker.sock"),
        "{args:?}"
    );
    assert_eq!(after("--socket-mode"), ["660"], "{args:?}");
    assert_eq!(after("--socket-group"), ["docker"], "{args:?}");
    assert!(
        after("--upstream")
            .iter()
            .all(|u| u.starts_with("/run/eci/")),
        "dockerd's socket must be in root-only /run/eci: {args:?}"
    );
    // H3: the Windows drives appear under the share root, where B1 allows binds.
    assert_eq!(value("automount", "enabled"), "true");
    assert_eq!(value("automount", "root"), "/mnt/host/");
}
