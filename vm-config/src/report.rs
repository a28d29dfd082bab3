//! The text `eci-build settings check FILE` prints.

use std::fmt::Write;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::admin::AdminSettings;
use crate::error::{SettingsError, Warning};
use crate::merge::{effective, forced_daemon_keys, Effective, Setting, DAEMON_OPTIONS_KEY};
use crate::render::render_vm_files;
use crate::user::UserSettings;
use crate::DAEMON_JSON_PATH;

/// Validate an admin-settings.json file and describe what the VM would run with. Errors
/// (unreadable, malformed, invalid) carry file:line:column and the fix.
pub fn check_report(path: &Path) -> Result<String, SettingsError> {
    let text = crate::user::read(path)?;
    check_report_text(&text, &path.display().to_string())
}

/// [`check_report`] on text already in memory; `origin` names it.
pub fn check_report_text(text: &str, origin: &str) -> Result<String, SettingsError> {
    let (admin, warnings) = AdminSettings::parse(text, origin)?;
    let eff = effective(&admin, &UserSettings::default(), None);
    let files = render_vm_files(&eff)?;
    let daemon = files
        .iter()
        .find(|f| f.path == Path::new(DAEMON_JSON_PATH))
        .map(|f| f.contents.as_str())
        .unwrap_or_default();
    Ok(format_report(origin, &admin, &warnings, &eff, daemon))
}

fn compact<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn line<T: Serialize>(out: &mut String, key: &str, s: &Setting<T>) {
    let lock = if s.locked { "locked" } else { "unlocked" };
    let _ = writeln!(
        out,
        "  {key} = {}  ({lock}, from {})",
        compact(&s.value),
        s.source
    );
}

fn format_report(
    origin: &str,
    admin: &AdminSettings,
    warnings: &[Warning],
    eff: &Effective,
    daemon_json: &str,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{origin}: valid");
    if let Some(v) = admin.configuration_file_version {
        let _ = writeln!(out, "configurationFileVersion: {v}");
    }

    let _ = writeln!(out, "\nWarnings ({}):", warnings.len());
    if warnings.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for w in warnings {
        let _ = writeln!(out, "  {w}");
    }

    let s = &eff.settings;
    let _ = writeln!(
        out,
        "\nEffective configuration (admin settings alone; a user may change the unlocked ones):"
    );
    line(
        &mut out,
        "enhancedContainerIsolation",
        &s.enhanced_container_isolation,
    );
    let dsm = &s.docker_socket_mount;
    let sub = |v: Value| Setting {
        value: v,
        locked: dsm.locked,
        source: dsm.source,
    };
    let p = "enhancedContainerIsolation.dockerSocketMount";
    let images: Vec<String> = dsm
        .value
        .image_list
        .images
        .iter()
        .map(|i| i.to_string())
        .collect();
    line(
        &mut out,
        &format!("{p}.imageList.images"),
        &sub(Value::from(images)),
    );
    line(
        &mut out,
        &format!("{p}.imageList.allowDerivedImages"),
        &sub(Value::from(dsm.value.image_list.allow_derived_images)),
    );
    line(
        &mut out,
        &format!("{p}.commandList.type"),
        &sub(Value::from(dsm.value.command_list.kind.to_string())),
    );
    let commands: Vec<&str> = dsm
        .value
        .command_list
        .commands
        .iter()
        .map(|c| c.as_str())
        .collect();
    line(
        &mut out,
        &format!("{p}.commandList.commands"),
        &sub(Value::from(commands)),
    );
    line(
        &mut out,
        "exposeDockerAPIOnTCP2375",
        &s.expose_docker_api_on_tcp2375,
    );
    line(&mut out, DAEMON_OPTIONS_KEY, &s.docker_daemon_options);
    let fs = &s.filesharing;
    let fs_line = |v: Value| Setting {
        value: v,
        locked: fs.locked,
        source: fs.source,
    };
    match &fs.value.allowed {
        Some(a) => line(
            &mut out,
            "filesharingAllowedDirectories",
            &fs_line(serde_json::to_value(a).unwrap_or_default()),
        ),
        None => {
            let _ = writeln!(
                out,
                "  filesharingAllowedDirectories = not set (any host directory may be shared)"
            );
        }
    }
    let shared: Vec<&str> = fs
        .value
        .shared
        .iter()
        .map(|d| d.host_path.as_str())
        .collect();
    line(
        &mut out,
        "shared directories",
        &fs_line(Value::from(shared)),
    );
    let _ = writeln!(
        out,
        "  bind mounts allowed from (VM paths) = {}",
        compact(&fs.value.allowed_vm_prefixes())
    );
    let unresolved: Vec<&str> = fs
        .value
        .shared
        .iter()
        .filter(|d| d.vm_path.is_none())
        .map(|d| d.host_path.as_str())
        .collect();
    if !unresolved.is_empty() {
        let _ = writeln!(
            out,
            "  resolved in the VM once the host's home is known = {}",
            compact(&unresolved)
        );
    }
    line(&mut out, "containersProxy", &s.containers_proxy);

    let _ = writeln!(out, "\nRefused ({}):", eff.refused.len());
    if eff.refused.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for r in &eff.refused {
        let _ = writeln!(out, "  {r}");
    }

    let _ = writeln!(
        out,
        "\nKeys isolation owns in dockerd's configuration (always forced, SPEC S3):"
    );
    for fk in forced_daemon_keys() {
        let value = match &fk.value {
            Some(v) => format!("= {}", compact(v)),
            None => "removed".to_string(),
        };
        let _ = writeln!(
            out,
            "  {} {value}  (SPEC {}: {})",
            fk.key, fk.spec, fk.reason
        );
    }

    let _ = writeln!(out, "\nRendered {DAEMON_JSON_PATH}:");
    out.push_str(daemon_json);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const ADMIN: &str = r#"{
  "configurationFileVersion": 2,
  "enhancedContainerIsolation": {"locked": true, "value": true,
    "dockerSocketMount": {"imageList": {"images": ["docker.io/testcontainers/ryuk:*"], "allowDerivedImages": true},
                          "commandList": {"type": "deny", "commands": ["push"]}}},
  "linuxVM": {"dockerDaemonOptions": {"locked": true, "value": "{\"debug\": false, \"hosts\": [\"tcp://0.0.0.0:2375\"]}"}},
  "exposeDockerAPIOnTCP2375": {"locked": true, "value": true},
  "kubernetes": {"locked": false, "enabled": false},
  "filesharingAllowedDirectories": [{"path": "$HOME", "sharedByDefault": true}]
}"#;

    #[test]
    fn report_shows_warnings_settings_refusals_forced_keys_and_daemon_json() {
        let r = check_report_text(ADMIN, "admin-settings.json").unwrap();
        assert!(
            r.starts_with("admin-settings.json: valid\nconfigurationFileVersion: 2\n"),
            "{r}"
        );
        assert!(r.contains("Warnings (1):\n  admin-settings.json:8:3: warning: kubernetes: Docker Desktop setting ignored by eci"), "{r}");
        assert!(
            r.contains("  enhancedContainerIsolation = true  (locked, from admin)"),
            "{r}"
        );
        assert!(r.contains(
            "  enhancedContainerIsolation.dockerSocketMount.imageList.images = [\"docker.io/testcontainers/ryuk:*\"]  (locked, from admin)"
        ), "{r}");
        assert!(r.contains("  enhancedContainerIsolation.dockerSocketMount.commandList.commands = [\"push\"]  (locked, from admin)"), "{r}");
        assert!(
            r.contains("  exposeDockerAPIOnTCP2375 = false  (locked, from forced)"),
            "{r}"
        );
        assert!(r.contains("  filesharingAllowedDirectories = [{\"path\":\"$HOME\",\"sharedByDefault\":true}]  (locked, from admin)"), "{r}");
        assert!(
            r.contains("resolved in the VM once the host's home is known = [\"$HOME\"]"),
            "{r}"
        );
        assert!(r.contains("Refused (2):"), "{r}");
        assert!(
            r.contains(
                "  exposeDockerAPIOnTCP2375 (set by admin): true refused, kept false: SPEC S4"
            ),
            "{r}"
        );
        assert!(r.contains("  linuxVM.dockerDaemonOptions.hosts (set by admin): [\"tcp://0.0.0.0:2375\"] refused, kept [\"unix:///run/eci/dockerd.sock\"]"), "{r}");
        assert!(r.contains("  userns-remap removed  (SPEC U1, U2:"), "{r}");
        assert!(
            r.contains("  default-runtime = \"eci\"  (SPEC A1, A2:"),
            "{r}"
        );
        let rendered = r
            .split("Rendered /etc/docker/daemon.json:\n")
            .nth(1)
            .unwrap();
        let d: Value = serde_json::from_str(rendered).unwrap();
        assert_eq!(d["debug"], false);
        assert_eq!(d["default-runtime"], "eci");
    }

    #[test]
    fn report_of_a_broken_file_is_the_located_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin-settings.json");
        std::fs::write(&path, "{\n  \"linuxVM\": [\n}").unwrap();
        let err = check_report(&path).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{}:3:1", path.display())),
            "{err}"
        );
        let missing = check_report(&PathBuf::from("/nonexistent/admin-settings.json")).unwrap_err();
        assert!(matches!(missing, SettingsError::Read { .. }));
    }

    #[test]
    fn report_of_an_empty_settings_object_says_none() {
        let r = check_report_text("{}", "a.json").unwrap();
        assert!(r.contains("Warnings (0):\n  none"), "{r}");
        assert!(r.contains("Refused (0):\n  none"), "{r}");
        assert!(r.contains("filesharingAllowedDirectories = not set"), "{r}");
        assert!(
            r.contains("bind mounts allowed from (VM paths) = [\"/mnt/host\"]"),
            "{r}"
        );
    }
}
