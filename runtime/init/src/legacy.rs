//! SPEC A5: containers that exist from before isolation was enabled are refused at start, with
//! an error that names them and says how to recreate them.
//!
//! A container's runtime is fixed when it is created (`HostConfig.Runtime` in dockerd's
//! `/var/lib/docker/containers/ID/hostconfig.json`). Every container created through eci has
//! runtime `eci`; one with any other runtime was created before isolation was on (a data disk
//! carried over from a plain engine, or an image upgrade) and would otherwise run unprotected.
//!
//! Contract for the callers:
//! - **eci-init** scans the data disk before dockerd starts, logs each legacy container on the
//!   console and writes [`LEGACY_LIST`] (`{"containers": [{"id", "name", "runtime", "message"}]}`,
//!   root-only). Boot never deletes or changes a container.
//! - **The API guard** refuses `POST /containers/{id-or-name}/start` (and `restart`, `unpause`
//!   of such a container, and `docker compose up` which uses the same calls) for a container
//!   that [`is_legacy_runtime`] says is legacy, answering HTTP 409 with [`refusal_message`] as
//!   the `message`. It may learn the runtime from `GET /containers/{id}/json`
//!   (`HostConfig.Runtime`) or from [`LEGACY_LIST`]; both agree, since no new legacy container
//!   can be created (A1, A3 rewrite every runtime to eci).
//! - **eci-runc** is the last line: dockerd refuses to start a container whose runtime is not
//!   configured ("unknown runtime"), which is safe but does not say how to recover; the guard's
//!   message does.

use serde::Serialize;
use std::path::Path;

/// The rule and its message are eci-facts', so the guard applies them without depending on
/// this crate; the list's path is a VM fact both read.
pub use eci_facts::legacy::{is_legacy_runtime, refusal_message};
pub use eci_facts::vm_paths::LEGACY_LIST;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LegacyContainer {
    pub id: String,
    /// Without docker's leading `/`; the id's first 12 characters if the name is unknown.
    pub name: String,
    /// `HostConfig.Runtime` as dockerd recorded it (`runc` for a plain engine's default).
    pub runtime: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    #[error("cannot list {}: {source}", dir.display())]
    List {
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Classifies one container from its `hostconfig.json` and `config.v2.json` texts. Returns
/// `None` for an isolated container. A file that does not parse counts as legacy: refusing to
/// start something unreadable is the safe side, and the message still names it.
pub fn classify(id: &str, hostconfig: &str, config_v2: Option<&str>) -> Option<LegacyContainer> {
    let host: Option<serde_json::Value> = serde_json::from_str(hostconfig).ok();
    let runtime = host
        .as_ref()
        .and_then(|h| h.get("Runtime"))
        .and_then(|r| r.as_str());
    if host.is_some() && !is_legacy_runtime(runtime) {
        return None;
    }
    let runtime = match (&host, runtime) {
        (None, _) => "unreadable hostconfig.json".to_string(),
        (Some(_), r) => r.unwrap_or("").to_string(),
    };
    let name = config_v2
        .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
        .and_then(|c| c.get("Name").and_then(|n| n.as_str()).map(str::to_string))
        .map(|n| n.trim_start_matches('/').to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| id.chars().take(12).collect());
    Some(LegacyContainer {
        id: id.to_string(),
        message: refusal_message(&name, &runtime),
        name,
        runtime,
    })
}

/// Scans dockerd's containers directory (`/var/lib/docker/containers`). A missing directory
/// (first boot, fresh disk) has no legacy containers. Sorted by name.
pub fn scan(containers_dir: &Path) -> Result<Vec<LegacyContainer>, LegacyError> {
    let entries = match std::fs::read_dir(containers_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(LegacyError::List {
                dir: containers_dir.to_path_buf(),
                source,
            })
        }
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        if !dir.is_dir() {
            continue;
        }
        let id = entry.file_name().to_string_lossy().into_owned();
        // A directory without hostconfig.json is a half-created container dockerd cleans up.
        let Ok(hostconfig) = std::fs::read_to_string(dir.join("hostconfig.json")) else {
            continue;
        };
        let config = std::fs::read_to_string(dir.join("config.v2.json")).ok();
        if let Some(c) = classify(&id, &hostconfig, config.as_deref()) {
            found.push(c);
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    Ok(found)
}

/// The text of [`LEGACY_LIST`].
pub fn list_json(containers: &[LegacyContainer]) -> String {
    serde_json::to_string_pretty(&serde_json::json!({ "containers": containers }))
        .expect("plain strings serialise")
        + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID_A: &str = "4f3c2b1a0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b";
    const ID_B: &str = "aa3c2b1a0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b";
    const ID_C: &str = "bb3c2b1a0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b";

    fn container(root: &Path, id: &str, runtime: Option<&str>, name: Option<&str>) {
        let dir = root.join(id);
        std::fs::create_dir_all(&dir).unwrap();
        let host = match runtime {
            Some(r) => serde_json::json!({"Binds": null, "NetworkMode": "default", "Runtime": r}),
            None => serde_json::json!({"NetworkMode": "default"}),
        };
        std::fs::write(dir.join("hostconfig.json"), host.to_string()).unwrap();
        if let Some(n) = name {
            let cfg = serde_json::json!({"ID": id, "Name": n, "Config": {"Image": "nginx"}});
            std::fs::write(dir.join("config.v2.json"), cfg.to_string()).unwrap();
        }
    }

    #[test]
    fn containers_not_created_under_eci_are_listed_by_name_with_the_recreate_hint() {
        let tmp = tempfile::tempdir().unwrap();
        container(tmp.path(), ID_A, Some("runc"), Some("/web"));
        container(tmp.path(), ID_B, Some("eci"), Some("/isolated"));
        container(tmp.path(), ID_C, None, None);
        // Half-created: no hostconfig.json yet.
        std::fs::create_dir(tmp.path().join("deadbeef")).unwrap();
        let found = scan(tmp.path()).unwrap();
        let names: Vec<&str> = found.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["bb3c2b1a0e9d", "web"]);
        let web = &found[1];
        assert_eq!((web.id.as_str(), web.runtime.as_str()), (ID_A, "runc"));
        assert!(web.message.starts_with(
            "container web was created before container isolation was enabled (runtime runc)"
        ));
        assert!(web.message.contains("`docker rm web`"));
        assert!(found[0].message.contains("runtime the default (runc)"));
        let json: serde_json::Value = serde_json::from_str(&list_json(&found)).unwrap();
        assert_eq!(json["containers"][1]["name"], "web");
    }

    #[test]
    fn a_fresh_disk_has_none_and_unreadable_config_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(scan(&tmp.path().join("containers")).unwrap().is_empty());
        let c = classify(ID_A, "{not json", None).unwrap();
        assert_eq!(c.runtime, "unreadable hostconfig.json");
        assert!(classify(ID_A, r#"{"Runtime":"eci"}"#, None).is_none());
        assert!(is_legacy_runtime(Some("runc")) && is_legacy_runtime(None));
        assert!(!is_legacy_runtime(Some("eci")));
    }
}
