//! Properties the fuzz targets in `runtime/guard/fuzz` check, kept here so the seed inputs
//! also run as ordinary unit tests (no nightly needed). Each function panics when a property
//! fails and returns quietly for inputs that are merely invalid.

use eci_policy::{ImageRule, PolicyFile};
use eci_vm_config::{
    effective, policy_file, render_vm_files, AdminSettings, UserSettings, POLICY_PATH,
};
use serde_json::Value;

use crate::facts::{Facts, ImageInfo, VolumeInfo};
use crate::images::{first_seen_pins, Pins};
use crate::paths::{parse_query, ApiPath};
use crate::policy::{
    decide, facts_needed, needs_body, paths_to_resolve, Decision, Request, Role, Sockets,
};
use crate::routes::classify;
use crate::settings::{parse_settings, Policy, SettingsFormat};

/// Settings text in either format: parsing never panics; admin settings survive the trip
/// through the rendered policy.json unchanged; every image rule re-parses from its text.
pub fn settings(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(loaded) = parse_settings(text, "fuzz.json") else {
        return;
    };
    for rule in &loaded.policy.socket_images {
        assert_eq!(
            ImageRule::parse(&rule.to_string()).as_ref(),
            Ok(rule),
            "rule {rule} does not re-parse to itself"
        );
    }
    if loaded.format == SettingsFormat::AdminSettings {
        let (admin, _) = AdminSettings::parse(text, "fuzz.json").expect("parsed once already");
        let eff = effective(&admin, &UserSettings::default(), None);
        let files = render_vm_files(&eff).expect("valid settings always render");
        let policy_json = files
            .iter()
            .find(|f| f.path.to_str() == Some(POLICY_PATH))
            .expect("policy.json is rendered");
        let reread = parse_settings(&policy_json.contents, "policy.json")
            .expect("a rendered policy.json parses");
        assert_eq!(
            reread.policy, loaded.policy,
            "admin settings and their rendered policy.json disagree"
        );
        assert_eq!(
            PolicyFile::parse(&policy_json.contents, "p").ok(),
            Some(policy_file(&eff))
        );
    }
}

fn fuzz_policy() -> Policy {
    let share = "/mnt/host/share".to_string();
    Policy {
        allowed_prefixes: vec![share.clone()],
        socket_images: ["docker:cli", "ghcr.io/x/y:*", "*-never-matches-nothing"]
            .iter()
            .filter_map(|r| ImageRule::parse(r).ok())
            .collect(),
        allow_derived: true,
        command_list_type: eci_policy::CommandListType::Deny,
        commands: ["push", "volume*"]
            .iter()
            .filter_map(|c| eci_policy::CommandRule::parse(c).ok())
            .collect(),
        runtime: "eci".into(),
        binds: eci_policy::Policy {
            allowed_bind_prefixes: vec![share],
            ..eci_policy::Policy::default()
        },
    }
}

fn fuzz_facts() -> Facts {
    let mut f = Facts::default();
    let cli = ImageInfo {
        id: "sha256:cli".into(),
        repo_tags: vec!["docker:cli".into()],
        layers: vec!["l1".into()],
        ..ImageInfo::default()
    };
    f.add_image("docker:cli", cli);
    f.add_image(
        "child",
        ImageInfo {
            id: "sha256:child".into(),
            repo_tags: vec!["child:latest".into()],
            parent: "sha256:cli".into(),
            layers: vec!["l1".into(), "l2".into()],
            ..ImageInfo::default()
        },
    );
    f.add_image(
        "other",
        ImageInfo {
            id: "sha256:other".into(),
            ..ImageInfo::default()
        },
    );
    f.volumes.insert(
        "etc".into(),
        VolumeInfo {
            driver: "local".into(),
            options: [
                ("device".to_string(), "/etc".to_string()),
                ("o".to_string(), "bind".to_string()),
            ]
            .into_iter()
            .collect(),
        },
    );
    f.networks.insert("hostnet".into(), "host".into());
    f.real_paths
        .insert("/mnt/host/share/link".into(), "/etc".into());
    f
}

/// Shape of a fuzz input: byte 0 picks the method, byte 1 the listener; then the path, the
/// query and the body separated by newlines.
pub fn request(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let method = ["GET", "POST", "PUT", "DELETE", "HEAD"][usize::from(data[0]) % 5];
    let role = if data[1].is_multiple_of(2) {
        Role::User
    } else {
        Role::Container
    };
    let Ok(rest) = std::str::from_utf8(&data[2..]) else {
        return;
    };
    let mut parts = rest.splitn(3, '\n');
    let path = parts.next().unwrap_or("/");
    let query = parts.next().unwrap_or("");
    let body_text = parts.next().unwrap_or("");
    let Ok(api) = ApiPath::parse(path) else {
        return;
    };
    let q = parse_query(query);
    let call = classify(method, &api.segments(), &q);
    let body: Option<Value> = if needs_body(&call) {
        if body_text.trim().is_empty() {
            Some(Value::Null)
        } else {
            match serde_json::from_str(body_text) {
                Ok(v) => Some(v),
                Err(_) => return,
            }
        }
    } else {
        None
    };
    let policy = fuzz_policy();
    let sockets = Sockets {
        engine: vec!["/var/run/docker.sock".into(), "/run/docker.sock".into()],
        container: Some("/run/eci/container.sock".into()),
    };
    let facts = fuzz_facts();
    let mut pins = Pins::default();
    pins.apply(&first_seen_pins(
        &policy,
        &pins,
        &[facts.images["docker:cli"].clone()],
    ));
    let decide_on = |body: Option<&Value>| {
        let req = Request {
            method,
            api: &api,
            query: &q,
            call: &call,
            content_type: Some("application/json"),
            role,
            body,
        };
        let _ = paths_to_resolve(body);
        let _ = facts_needed(&req, &policy, &sockets, &facts);
        decide(&req, &policy, &sockets, &pins, &facts)
    };
    let verdict = decide_on(body.as_ref());
    match &verdict.decision {
        Decision::Refuse { status, message } => {
            assert!((400..500).contains(status), "refusal status {status}");
            assert!(!message.is_empty());
        }
        Decision::Rewrite(new_body) => {
            let obj = new_body.as_object().expect("only objects are rewritten");
            let host = obj
                .get("HostConfig")
                .and_then(Value::as_object)
                .unwrap_or(obj);
            assert_eq!(host.get("Runtime").and_then(Value::as_str), Some("eci"));
            for mode in ["PidMode", "IpcMode", "UTSMode", "NetworkMode"] {
                assert_ne!(
                    host.get(mode).and_then(Value::as_str),
                    Some("host"),
                    "{mode}"
                );
            }
            // A rewritten body is what the policy wants: deciding on it again changes nothing.
            let again = decide_on(Some(new_body));
            assert_eq!(
                again.decision,
                Decision::Allow,
                "rewrite is not a fixed point: {new_body}"
            );
        }
        Decision::Allow => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds(target: &str) -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/seeds")
            .join(target);
        let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect();
        out.sort();
        assert!(!out.is_empty());
        out
    }

    #[test]
    fn settings_seeds_hold_the_properties() {
        for s in seeds("settings") {
            settings(&s);
        }
        settings(b"\xff");
        settings(b"{\"enhancedContainerIsolation\": {\"dockerSocketMount\": {\"imageList\": {\"images\": [\"alpine\"]}}}}");
    }

    #[test]
    fn request_seeds_hold_the_properties() {
        for s in seeds("request_policy") {
            request(&s);
        }
        request(b"");
        request(b"\x01\x00/v1.41/containers/create\n\n{\"Image\":\"docker:cli\",\"HostConfig\":{\"Binds\":[\"/var/run/docker.sock:/s\"],\"Runtime\":\"runc\"}}");
        request(b"\x01\x01/v1.41/images/x/push\n\n");
    }
}
