//! What `/etc/eci/policy.json` holds for a set of effective settings (SPEC B1-B6). The file's
//! type is eci-policy's [`PolicyFile`], which the guard and the runtime read; this is the one
//! place that fills it from the settings, and `render_vm_files` writes it with serde_json.

use eci_policy::{
    BindMountPolicy, PolicyFile, PolicyRuntime, SocketMountPolicy, POLICY_FILE_VERSION,
};

use crate::merge::Effective;
use crate::{DOCKERD_SOCKET, ECI_RUNC_PATH, ECI_RUNTIME_NAME};

/// The policy the VM runs with for these effective settings.
pub fn policy_file(eff: &Effective) -> PolicyFile {
    let s = &eff.settings;
    let fs = &s.filesharing.value;
    let dsm = &s.docker_socket_mount.value;
    PolicyFile {
        version: POLICY_FILE_VERSION,
        isolation: s.enhanced_container_isolation.value,
        dockerd_socket: DOCKERD_SOCKET.to_string(),
        runtime: PolicyRuntime {
            name: ECI_RUNTIME_NAME.to_string(),
            path: ECI_RUNC_PATH.to_string(),
        },
        bind_mounts: BindMountPolicy {
            allowed_vm_prefixes: fs.allowed_vm_prefixes(),
            shared_host_paths: fs.shared.iter().map(|d| d.host_path.clone()).collect(),
        },
        docker_socket_mount: SocketMountPolicy {
            images: dsm.image_list.images.clone(),
            allow_derived_images: dsm.image_list.allow_derived_images,
            command_list: dsm.command_list.clone(),
        },
        containers_proxy: s.containers_proxy.value.clone(),
        // eci-runc's defaults; an admin who needs other ones edits the section by hand.
        eci_runc: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::AdminSettings;
    use crate::merge::effective;
    use crate::render::render_vm_files;
    use crate::user::UserSettings;
    use crate::POLICY_PATH;
    use std::path::Path;

    fn eff(admin: &str) -> Effective {
        let (a, _) = AdminSettings::parse(admin, "a.json").unwrap();
        effective(&a, &UserSettings::default(), None)
    }

    #[test]
    fn the_written_file_is_in_the_vm_files_and_parses_back_to_the_same_policy() {
        for admin in [
            "{}",
            r#"{"enhancedContainerIsolation": {"locked": true, "value": true,
                "dockerSocketMount": {"imageList": {"images": ["docker:cli", "ghcr.io/x/y:*", "*"], "allowDerivedImages": true},
                                      "commandList": {"type": "allow", "commands": ["container*", "pull"]}}},
               "filesharingAllowedDirectories": [{"path": "/home/me", "sharedByDefault": true}],
               "containersProxy": {"locked": true, "mode": "manual", "http": "http://proxy:3128"}}"#,
        ] {
            let e = eff(admin);
            let files = render_vm_files(&e).unwrap();
            let file = files
                .iter()
                .find(|f| f.path == Path::new(POLICY_PATH))
                .expect("policy.json is one of the VM files");
            assert_eq!(file.mode, 0o600);
            let parsed = PolicyFile::parse(&file.contents, "policy.json").unwrap();
            assert_eq!(parsed, policy_file(&e), "{admin}");
        }
        let p = policy_file(&eff("{}"));
        assert_eq!(p.bind_mounts.allowed_vm_prefixes, vec!["/mnt/host"]);
        assert_eq!(p.runtime.name, "eci");
        // Nothing configured is the built-in policy the runtime falls back to without a file.
        assert_eq!(p, PolicyFile::default());
    }
}
