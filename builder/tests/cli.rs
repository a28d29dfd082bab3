//! The `eci-build` command line: its error paths must name the file and the fix, and leave
//! nothing behind.

use std::path::Path;
use std::process::Command;

fn eci_build(args: &[&str], images: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_eci-build"))
        .arg("--images")
        .arg(images)
        .args(args)
        .output()
        .expect("eci-build runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn repo_images() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../images")
}

#[test]
fn unknown_target_lists_the_known_ones() {
    let (code, _, err) = eci_build(&["image", "--target", "vmware"], &repo_images());
    assert_eq!(code, 1);
    assert!(
        err.contains("no image definition for target `vmware`"),
        "{err}"
    );
    assert!(err.contains("hyperv") && err.contains("wsl2"), "{err}");
}

#[test]
fn a_typo_in_a_definition_is_located_and_nothing_is_built() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.yaml"),
        "name: x\ntarget: t\nkernal: {}\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let (code, _, err) = eci_build(
        &["image", "--target", "t", "--out", out.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(code, 1);
    assert!(err.contains("t.yaml:3:1"), "{err}");
    assert!(err.contains("did you mean `kernel`?"), "{err}");
    assert!(!out.exists());
}

#[test]
fn a_stale_lock_is_refused_with_the_relock_command() {
    let dir = tempfile::tempdir().unwrap();
    let images = repo_images();
    for f in [
        "base.yaml",
        "debian-kernel.yaml",
        "hyperv.yaml",
        "hyperv.lock",
        "admin-settings.json",
    ] {
        std::fs::copy(images.join(f), dir.path().join(f)).unwrap();
    }
    // The copied definitions refer to the templates relative to the images folder.
    let base = std::fs::read_to_string(dir.path().join("base.yaml"))
        .unwrap()
        .replace(
            "templates: ../vm-config/templates",
            &format!(
                "templates: {}",
                images.join("../vm-config/templates").display()
            ),
        )
        .replace("    - tini ", "    - tini\n    - strace ");
    std::fs::write(dir.path().join("base.yaml"), base).unwrap();
    let (code, _, err) = eci_build(&["image", "--target", "hyperv", "--offline"], dir.path());
    assert_eq!(code, 1);
    assert!(err.contains("is stale"), "{err}");
    assert!(err.contains("strace"), "{err}");
    assert!(err.contains("eci-build lock --target hyperv"), "{err}");
}

#[test]
fn settings_check_reports_effective_configuration_and_errors() {
    let (code, out, err) = eci_build(
        &[
            "settings",
            "check",
            repo_images().join("admin-settings.json").to_str().unwrap(),
        ],
        &repo_images(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("default-runtime"), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("admin-settings.json");
    std::fs::write(
        &bad,
        "{\n  \"enhancedContainerIsolation\": {\"locked\": tru}\n}\n",
    )
    .unwrap();
    let (code, _, err) = eci_build(
        &["settings", "check", bad.to_str().unwrap()],
        &repo_images(),
    );
    assert_eq!(code, 1);
    assert!(err.contains("admin-settings.json:2:"), "{err}");
}

#[test]
fn boot_without_a_build_says_what_to_run() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = eci_build(
        &[
            "boot",
            "--target",
            "hyperv",
            "--out",
            dir.path().join("none").to_str().unwrap(),
        ],
        &repo_images(),
    );
    assert_eq!(code, 1);
    assert!(err.contains("eci-build image --target hyperv"), "{err}");
}

/// SPEC V6: `eci-build kernel check` on a config file: table and JSON, exit code by verdict.
/// eci's own qemu kernel config passes strictly; the same config without user namespaces and
/// with /dev/mem fails, and both rows are named.
#[test]
fn kernel_check_reports_verdicts_with_exit_codes() {
    let generated = repo_images().join("../kernel-config/generated/qemu.config");
    let good = generated.to_str().unwrap();
    let (code, out, err) = eci_build(
        &["kernel", "check", "--target", "qemu", good],
        &repo_images(),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("CONFIG_USER_NS"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("config");
    let text = std::fs::read_to_string(&generated).unwrap();
    assert!(text.contains("CONFIG_USER_NS=y\n"));
    let text =
        text.replace("CONFIG_USER_NS=y\n", "# CONFIG_USER_NS is not set\n") + "CONFIG_DEVMEM=y\n";
    std::fs::write(&bad, text).unwrap();
    let bad = bad.to_str().unwrap();
    let (code, out, _) = eci_build(
        &["kernel", "check", "--target", "qemu", bad],
        &repo_images(),
    );
    assert_eq!(code, 1, "{out}");
    let (code, json, _) = eci_build(
        &[
            "kernel", "check", "--target", "qemu", "--format", "json", bad,
        ],
        &repo_images(),
    );
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON on stdout");
    let violations: Vec<String> = v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["status"].to_string().to_lowercase().contains("violation"))
        .map(|r| r["option"].to_string())
        .collect();
    assert!(
        violations.iter().any(|o| o.contains("USER_NS"))
            && violations.iter().any(|o| o.contains("DEVMEM")),
        "{violations:?}\n{json}"
    );
    let (code, _, err) = eci_build(
        &["kernel", "check", "--target", "qemu", "/nonexistent/config"],
        &repo_images(),
    );
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/config"), "{err}");
}
