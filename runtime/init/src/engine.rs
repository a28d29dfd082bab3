//! dockerd's run-time configuration. The image's /etc/docker/daemon.json (rendered by vm-config
//! from the admin settings, SPEC S1-S4) is used as it is, plus one key: dockerd 20.10 writes its
//! trust key (the engine ID) to /etc/docker/key.json unless `deprecated-key-path` says
//! otherwise, and /etc is read-only (SPEC V2). eci-init writes the result to
//! [`RUN_DAEMON_JSON`] before dockerd starts; on the data disk the key, and so the engine ID,
//! survives reboots. If daemon.json ever sets the key itself, it is kept as it is.

use serde_json::Value;

/// dockerd's configuration as the image ships it (rendered by vm-config).
pub use eci_facts::vm_paths::DAEMON_JSON_PATH as IMAGE_DAEMON_JSON;
/// What dockerd is started with (`--config-file`), root-only like /run/eci.
pub const RUN_DAEMON_JSON: &str = "/run/eci/dockerd.json";
pub const TRUST_KEY_KEY: &str = "deprecated-key-path";
/// Under dockerd's data root, which is the data disk or the /var tmpfs.
pub const TRUST_KEY_PATH: &str = "/var/lib/docker/key.json";

#[derive(Debug, thiserror::Error)]
#[error(
    "{IMAGE_DAEMON_JSON}: {message}; the image's settings rendering is broken, rebuild the image"
)]
pub struct EngineConfigError {
    message: String,
}

/// The run-time daemon.json from the image's.
pub fn runtime_daemon_json(image: &str) -> Result<String, EngineConfigError> {
    let mut v: Value = serde_json::from_str(image).map_err(|e| EngineConfigError {
        message: e.to_string(),
    })?;
    let obj = v.as_object_mut().ok_or_else(|| EngineConfigError {
        message: "not a JSON object".into(),
    })?;
    obj.entry(TRUST_KEY_KEY)
        .or_insert_with(|| Value::String(TRUST_KEY_PATH.into()));
    Ok(serde_json::to_string_pretty(&v).expect("a parsed value serialises") + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_settings_are_kept_and_the_trust_key_moves_off_etc() {
        let (admin, _) = eci_vm_config::AdminSettings::parse("{}", "defaults").unwrap();
        let effective = eci_vm_config::effective(&admin, &Default::default(), None);
        let files = eci_vm_config::render_vm_files(&effective).unwrap();
        let image = files
            .iter()
            .find(|f| f.path == std::path::Path::new(IMAGE_DAEMON_JSON))
            .expect("vm-config renders daemon.json");
        let before: Value = serde_json::from_str(&image.contents).unwrap();
        let after: Value =
            serde_json::from_str(&runtime_daemon_json(&image.contents).unwrap()).unwrap();
        let mut expected = before.clone();
        expected[TRUST_KEY_KEY] = Value::String(TRUST_KEY_PATH.into());
        assert_eq!(after, expected, "only the key path is added");
        assert!(TRUST_KEY_PATH.starts_with(eci_vm_config::DOCKER_DATA_ROOT));
        assert!(
            RUN_DAEMON_JSON.starts_with("/run/eci/"),
            "root-only directory (S4)"
        );
    }

    #[test]
    fn an_explicit_key_path_is_kept_and_garbage_is_refused() {
        let out = runtime_daemon_json(r#"{"deprecated-key-path": "/x/key.json"}"#).unwrap();
        assert!(out.contains("/x/key.json") && !out.contains(TRUST_KEY_PATH));
        assert!(runtime_daemon_json("[1]")
            .unwrap_err()
            .to_string()
            .contains("not a JSON object"));
        assert!(runtime_daemon_json("{").is_err());
    }
}
