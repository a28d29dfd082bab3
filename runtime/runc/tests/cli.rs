//! The binary's surface without root: version for `docker info`, features, and runc-style
//! JSON error logs that containerd forwards to the docker user.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_eci-runc"))
}

#[test]
fn version_has_the_lines_dockerd_parses() {
    let o = bin().arg("--version").output().unwrap();
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert!(s.starts_with("eci-runc version "), "{s}");
    assert!(s.lines().any(|l| l.starts_with("commit: ")), "{s}");
    assert!(s.lines().any(|l| l.starts_with("spec: ")), "{s}");
}

#[test]
fn features_is_json_with_the_isolation_surface() {
    let o = bin().arg("features").output().unwrap();
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n == "user"));
    assert_eq!(v["linux"]["cgroup"]["v1"], true);
    assert_eq!(v["linux"]["cgroup"]["v2"], true);
}

#[test]
fn errors_go_to_the_log_in_runc_json_shape() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("log.json");
    let o = bin()
        .arg("--root")
        .arg(d.path().join("root"))
        .arg("--log")
        .arg(&log)
        .args(["--log-format", "json", "state", "nope"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(line["level"], "error");
    assert_eq!(line["msg"], "container nope does not exist");
    assert!(line["time"].as_str().unwrap().ends_with('Z'));
}
