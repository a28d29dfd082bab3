//! Admin settings + user settings + daemon options -> what the VM runs with (SPEC S2, S3).
//!
//! Order of precedence, highest first: the keys isolation owns (always forced), a locked admin
//! value, the user's value, an unlocked admin value, the built-in default. Every input that
//! lost to a lock or to a forced key is reported by key, so nobody wonders why a setting "did
//! not take".

use eci_facts::path::is_windows_path;
pub use eci_facts::path::is_within;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::admin::{AdminSettings, AllowedDirectory, DockerSocketMount, Locked, ProxySettings};
use crate::user::UserSettings;
use crate::{
    CONTAINERD_SOCKET, DOCKERD_PIDFILE, DOCKERD_SOCKET, DOCKER_DATA_ROOT, DOCKER_EXEC_ROOT,
    ECI_RUNC_PATH, ECI_RUNTIME_NAME, HOST_SHARE_ROOT,
};

/// Where an effective value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Nobody set it; eci's built-in default.
    Default,
    Admin,
    User,
    /// eci overrode what was set, because isolation depends on it.
    Forced,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Default => "default",
            Source::Admin => "admin",
            Source::User => "user",
            Source::Forced => "forced",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Setting<T> {
    pub value: T,
    /// Whether the user can change it (false) or not (true).
    pub locked: bool,
    pub source: Source,
}

/// A host directory shared with the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SharedDirectory {
    /// As written by the admin or user, variables and all.
    pub host_path: String,
    /// Where it appears inside the VM (under [`HOST_SHARE_ROOT`]); `None` while the path
    /// still holds a variable that could not be resolved (no `hostHome` known).
    pub vm_path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileSharing {
    /// The admin's `filesharingAllowedDirectories`; `None` means no restriction.
    pub allowed: Option<Vec<AllowedDirectory>>,
    pub shared: Vec<SharedDirectory>,
}

impl FileSharing {
    /// VM path prefixes that bind mounts may use (SPEC B1). With nothing configured at all,
    /// the whole host-share root is allowed, as the spec's default says.
    pub fn allowed_vm_prefixes(&self) -> Vec<String> {
        if self.allowed.is_none() && self.shared.is_empty() {
            return vec![HOST_SHARE_ROOT.to_string()];
        }
        self.shared
            .iter()
            .filter_map(|d| d.vm_path.clone())
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveSettings {
    pub enhanced_container_isolation: Setting<bool>,
    /// Locked together with `enhancedContainerIsolation` (a grouped setting); only the admin
    /// sets it.
    pub docker_socket_mount: Setting<DockerSocketMount>,
    #[serde(rename = "exposeDockerAPIOnTCP2375")]
    pub expose_docker_api_on_tcp2375: Setting<bool>,
    /// Admin and user daemon options merged, before the forced keys are applied.
    pub docker_daemon_options: Setting<Map<String, Value>>,
    pub filesharing: Setting<FileSharing>,
    pub containers_proxy: Setting<ProxySettings>,
}

/// An input that was not applied, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefusedOverride {
    /// Dotted key as in admin-settings.json, e.g. `linuxVM.dockerDaemonOptions.hosts`.
    pub key: String,
    /// Who asked for it: `Admin` or `User`.
    pub by: Source,
    pub attempted: Value,
    /// The value in force instead; `None` when the key is removed.
    pub kept: Option<Value>,
    pub reason: String,
}

impl std::fmt::Display for RefusedOverride {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept = match &self.kept {
            Some(v) => format!("kept {v}"),
            None => "removed".to_string(),
        };
        write!(
            f,
            "{} (set by {}): {} refused, {kept}: {}",
            self.key, self.by, self.attempted, self.reason
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Effective {
    pub settings: EffectiveSettings,
    /// The complete dockerd configuration, forced keys applied.
    pub daemon_json: Value,
    pub refused: Vec<RefusedOverride>,
}

/// A dockerd option isolation owns (SPEC S3). `key` is dotted for nested options
/// (`builder.entitlements.network-host`); `value` `None` means the option is removed.
#[derive(Debug, Clone, PartialEq)]
pub struct ForcedKey {
    pub key: &'static str,
    pub value: Option<Value>,
    pub spec: &'static str,
    pub reason: &'static str,
}

pub const DAEMON_OPTIONS_KEY: &str = "linuxVM.dockerDaemonOptions";

/// The dockerd options isolation owns, in the order they are applied and reported.
pub fn forced_daemon_keys() -> Vec<ForcedKey> {
    let f = |key, value: Option<Value>, spec, reason| ForcedKey {
        key,
        value,
        spec,
        reason,
    };
    vec![
        f(
            "runtimes",
            Some(json!({ ECI_RUNTIME_NAME: { "path": ECI_RUNC_PATH } })),
            "A1, A3, A4",
            "eci-runc is the only runtime dockerd is told about; another entry would run containers without isolation",
        ),
        f(
            "default-runtime",
            Some(json!(ECI_RUNTIME_NAME)),
            "A1, A2",
            "every container created through the API runs under eci",
        ),
        f(
            "containerd",
            Some(json!(CONTAINERD_SOCKET)),
            "A4",
            "dockerd uses the VM's containerd, whose default runtime is eci, instead of starting a private one that defaults to runc",
        ),
        f(
            "hosts",
            Some(json!([format!("unix://{DOCKERD_SOCKET}")])),
            "S4",
            "dockerd listens only on a root-only socket; users and containers reach the engine through the guard",
        ),
        f(
            "group",
            Some(json!("root")),
            "S4",
            "the dockerd socket is owned by root:root, so no docker group can reach it",
        ),
        f("tls", None, "S4", "dockerd has no TCP listener, so TLS options have nothing to protect"),
        f("tlsverify", None, "S4", "dockerd has no TCP listener, so TLS options have nothing to protect"),
        f("tlscacert", None, "S4", "dockerd has no TCP listener, so TLS options have nothing to protect"),
        f("tlscert", None, "S4", "dockerd has no TCP listener, so TLS options have nothing to protect"),
        f("tlskey", None, "S4", "dockerd has no TCP listener, so TLS options have nothing to protect"),
        f(
            "userns-remap",
            None,
            "U1, U2",
            "eci-runc gives each container its own exclusive id range; dockerd's single remap range would make all containers share ids",
        ),
        f(
            "authorization-plugins",
            Some(json!([])),
            "A4, S5",
            "plugins run outside eci and decide outside the audited policy layer; the guard is the one policy point",
        ),
        f(
            "builder.entitlements.network-host",
            Some(json!(false)),
            "D1, D2",
            "BuildKit's network.host entitlement would give a build the VM's network namespace",
        ),
        f(
            "builder.entitlements.security-insecure",
            Some(json!(false)),
            "D2",
            "BuildKit's security.insecure entitlement runs build steps privileged outside eci",
        ),
        f(
            "default-cgroupns-mode",
            Some(json!("private")),
            "P5",
            "each container sees only its own cgroup subtree",
        ),
        f(
            "userland-proxy-path",
            None,
            "A4",
            "it names a binary dockerd runs as VM root, outside any container",
        ),
        f(
            "data-root",
            Some(json!(DOCKER_DATA_ROOT)),
            "V2",
            "engine data lives on the data disk; the root filesystem is read-only",
        ),
        f(
            "exec-root",
            Some(json!(DOCKER_EXEC_ROOT)),
            "S4",
            "dockerd's runtime state stays out of /run/eci, where the root-only socket and the guard live",
        ),
        f(
            "pidfile",
            Some(json!(DOCKERD_PIDFILE)),
            "S4",
            "dockerd writes this file as root; it must not be pointed at another VM file",
        ),
    ]
}

/// Merge admin settings, the user's settings and the user's daemon options into what the VM
/// runs with. Never fails: anything that cannot be applied is reported in `refused`.
pub fn effective(
    admin: &AdminSettings,
    user: &UserSettings,
    user_daemon_options: Option<Value>,
) -> Effective {
    let mut refused = Vec::new();

    let eci_admin = admin.enhanced_container_isolation.as_ref();
    let eci_locked = eci_admin.is_some_and(|e| e.locked);
    let eci_lock = eci_admin.map(|e| Locked {
        locked: e.locked,
        value: e.value,
    });
    let mut eci = merge_locked(
        "enhancedContainerIsolation",
        eci_lock.as_ref(),
        true,
        user.enhanced_container_isolation.as_ref(),
        &mut refused,
    );
    force(
        "enhancedContainerIsolation",
        &mut eci,
        true,
        "SPEC A1: the eci VM runs every container under eci; isolation cannot be turned off",
        &mut refused,
    );

    let docker_socket_mount = match eci_admin.and_then(|e| e.docker_socket_mount.clone()) {
        Some(d) => Setting {
            value: d,
            locked: eci_locked,
            source: Source::Admin,
        },
        None => Setting {
            value: DockerSocketMount::default(),
            locked: eci_locked,
            source: Source::Default,
        },
    };

    let mut tcp = merge_locked(
        "exposeDockerAPIOnTCP2375",
        admin.expose_docker_api_on_tcp2375.as_ref(),
        false,
        user.expose_docker_api_on_tcp2375.as_ref(),
        &mut refused,
    );
    force(
        "exposeDockerAPIOnTCP2375",
        &mut tcp,
        false,
        "SPEC S4: with isolation on, the only engine endpoint is the policy layer; an unauthenticated TCP listener would bypass it",
        &mut refused,
    );

    let containers_proxy = merge_locked(
        "containersProxy",
        admin.containers_proxy.as_ref(),
        ProxySettings::default(),
        user.containers_proxy.as_ref(),
        &mut refused,
    );

    let (docker_daemon_options, daemon_json) =
        merge_daemon_options(admin, user_daemon_options, &mut refused);

    let filesharing = merge_filesharing(admin, user, &mut refused);

    Effective {
        settings: EffectiveSettings {
            enhanced_container_isolation: eci,
            docker_socket_mount,
            expose_docker_api_on_tcp2375: tcp,
            docker_daemon_options,
            filesharing,
            containers_proxy,
        },
        daemon_json,
        refused,
    }
}

fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Locked admin value > user value > unlocked admin value > default.
fn merge_locked<T: Clone + PartialEq + Serialize>(
    key: &str,
    admin: Option<&Locked<T>>,
    default: T,
    user: Option<&T>,
    refused: &mut Vec<RefusedOverride>,
) -> Setting<T> {
    let locked = admin.is_some_and(|a| a.locked);
    let mut setting = match admin.and_then(|a| a.value.clone()) {
        Some(v) => Setting {
            value: v,
            locked,
            source: Source::Admin,
        },
        None => Setting {
            value: default,
            locked,
            source: if locked {
                Source::Admin
            } else {
                Source::Default
            },
        },
    };
    if let Some(u) = user {
        if !locked {
            setting.value = u.clone();
            setting.source = Source::User;
        } else if *u != setting.value {
            refused.push(RefusedOverride {
                key: key.to_string(),
                by: Source::User,
                attempted: to_json(u),
                kept: Some(to_json(&setting.value)),
                reason: format!("{key} is locked by the admin (SPEC S2)"),
            });
        }
    }
    setting
}

fn force<T: Clone + PartialEq + Serialize>(
    key: &str,
    setting: &mut Setting<T>,
    value: T,
    reason: &str,
    refused: &mut Vec<RefusedOverride>,
) {
    if setting.value != value {
        refused.push(RefusedOverride {
            key: key.to_string(),
            by: setting.source,
            attempted: to_json(&setting.value),
            kept: Some(to_json(&value)),
            reason: reason.to_string(),
        });
        setting.value = value;
        setting.source = Source::Forced;
    }
}

fn merge_daemon_options(
    admin: &AdminSettings,
    user: Option<Value>,
    refused: &mut Vec<RefusedOverride>,
) -> (Setting<Map<String, Value>>, Value) {
    let locked = admin
        .docker_daemon_options
        .as_ref()
        .is_some_and(|d| d.locked);
    let admin_map = admin
        .docker_daemon_options
        .as_ref()
        .and_then(|d| d.value.clone());
    let mut source = if admin_map.is_some() || locked {
        Source::Admin
    } else {
        Source::Default
    };
    let mut merged = admin_map.unwrap_or_default();
    // Who set each top-level key, so a forced key is reported against the right party.
    let mut setter: Map<String, Value> =
        merged.keys().map(|k| (k.clone(), json!("admin"))).collect();

    match user {
        None => {}
        Some(Value::Object(user_map)) => {
            for (k, v) in user_map {
                if locked {
                    if merged.get(&k) != Some(&v) {
                        refused.push(RefusedOverride {
                            key: format!("{DAEMON_OPTIONS_KEY}.{k}"),
                            by: Source::User,
                            attempted: v,
                            kept: merged.get(&k).cloned(),
                            reason: format!(
                                "{DAEMON_OPTIONS_KEY} is locked by the admin (SPEC S2)"
                            ),
                        });
                    }
                } else {
                    setter.insert(k.clone(), json!("user"));
                    merged.insert(k, v);
                    source = Source::User;
                }
            }
        }
        Some(other) => refused.push(RefusedOverride {
            key: DAEMON_OPTIONS_KEY.to_string(),
            by: Source::User,
            attempted: other,
            kept: None,
            reason: "daemon options must be a JSON object".to_string(),
        }),
    }

    let mut daemon = Value::Object(merged.clone());
    for fk in forced_daemon_keys() {
        let parts: Vec<&str> = fk.key.split('.').collect();
        let by = match setter.get(parts[0]).and_then(Value::as_str) {
            Some("user") => Source::User,
            _ => Source::Admin,
        };
        let reason = format!("isolation owns this key (SPEC {}): {}", fk.spec, fk.reason);
        // A non-object where a nested forced key must go (e.g. "builder": "x") is replaced.
        for depth in 1..parts.len() {
            if let Some(v) = get_path(&daemon, &parts[..depth]) {
                if !v.is_object() {
                    refused.push(RefusedOverride {
                        key: format!("{DAEMON_OPTIONS_KEY}.{}", parts[..depth].join(".")),
                        by,
                        attempted: v.clone(),
                        kept: None,
                        reason: reason.clone(),
                    });
                    remove_path(&mut daemon, &parts[..depth]);
                }
            }
        }
        let current = get_path(&daemon, &parts).cloned();
        match &fk.value {
            Some(forced) => {
                if let Some(cur) = current.filter(|c| c != forced) {
                    refused.push(RefusedOverride {
                        key: format!("{DAEMON_OPTIONS_KEY}.{}", fk.key),
                        by,
                        attempted: cur,
                        kept: Some(forced.clone()),
                        reason,
                    });
                }
                set_path(&mut daemon, &parts, forced.clone());
            }
            None => {
                if let Some(cur) = current {
                    refused.push(RefusedOverride {
                        key: format!("{DAEMON_OPTIONS_KEY}.{}", fk.key),
                        by,
                        attempted: cur,
                        kept: None,
                        reason,
                    });
                    remove_path(&mut daemon, &parts);
                }
            }
        }
    }

    (
        Setting {
            value: merged,
            locked,
            source,
        },
        daemon,
    )
}

fn get_path<'v>(v: &'v Value, parts: &[&str]) -> Option<&'v Value> {
    parts.iter().try_fold(v, |cur, p| cur.as_object()?.get(*p))
}

fn set_path(v: &mut Value, parts: &[&str], value: Value) {
    let (last, parents) = parts.split_last().expect("forced keys are never empty");
    let mut cur = v;
    for p in parents {
        let obj = cur
            .as_object_mut()
            .expect("parents were made objects above");
        cur = obj
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if let Some(obj) = cur.as_object_mut() {
        obj.insert(last.to_string(), value);
    }
}

fn remove_path(v: &mut Value, parts: &[&str]) {
    let (last, parents) = parts.split_last().expect("forced keys are never empty");
    let mut cur = v;
    for p in parents {
        match cur.as_object_mut().and_then(|o| o.get_mut(*p)) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(obj) = cur.as_object_mut() {
        obj.remove(*last);
    }
}

fn merge_filesharing(
    admin: &AdminSettings,
    user: &UserSettings,
    refused: &mut Vec<RefusedOverride>,
) -> Setting<FileSharing> {
    let allowed = admin.filesharing_allowed_directories.clone();
    let home = user.host_home.as_deref();
    let locked = allowed.is_some();
    let (paths, source): (Vec<String>, Source) = match (&user.filesharing_directories, &allowed) {
        (Some(requested), _) => {
            let mut kept = Vec::new();
            for dir in requested {
                let inside = match &allowed {
                    None => true,
                    Some(list) => list
                        .iter()
                        .any(|a| is_within(&resolve(dir, home), &resolve(&a.path, home))),
                };
                if inside {
                    kept.push(dir.clone());
                } else {
                    let list: Vec<&str> =
                        allowed.iter().flatten().map(|a| a.path.as_str()).collect();
                    refused.push(RefusedOverride {
                        key: "filesharingDirectories".to_string(),
                        by: Source::User,
                        attempted: json!(dir),
                        kept: None,
                        reason: format!(
                            "not inside filesharingAllowedDirectories ({}) set by the admin (SPEC S2, B2)",
                            list.join(", ")
                        ),
                    });
                }
            }
            (kept, Source::User)
        }
        (None, Some(list)) => (
            list.iter()
                .filter(|a| a.shared_by_default)
                .map(|a| a.path.clone())
                .collect(),
            Source::Admin,
        ),
        (None, None) => (Vec::new(), Source::Default),
    };
    let shared = paths
        .into_iter()
        .map(|p| SharedDirectory {
            vm_path: vm_path(&resolve(&p, home)),
            host_path: p,
        })
        .collect();
    Setting {
        value: FileSharing { allowed, shared },
        locked,
        source,
    }
}

const HOME_VARIABLES: &[&str] = &["$HOME", "${HOME}", "%HOME%", "%USERPROFILE%", "~"];

/// Expand a leading home variable when the host's home is known; otherwise leave it.
pub fn resolve(path: &str, home: Option<&str>) -> String {
    if let Some(home) = home {
        for var in HOME_VARIABLES {
            if let Some(rest) = path.strip_prefix(var) {
                if rest.is_empty() || rest.starts_with(['/', '\\']) {
                    return format!("{}{rest}", home.trim_end_matches(['/', '\\']));
                }
            }
        }
    }
    path.to_string()
}

/// Where a host path appears in the VM: `C:\Users\me` -> `/mnt/host/c/Users/me`,
/// `/home/me` -> `/mnt/host/home/me`. `None` for paths still holding a variable or that are
/// relative, which cannot be placed.
pub fn vm_path(host_path: &str) -> Option<String> {
    if is_windows_path(host_path) {
        let drive = host_path[..1].to_ascii_lowercase();
        let rest = host_path[2..].replace('\\', "/");
        let rest = rest.trim_matches('/');
        if rest.split('/').any(|c| c == "..") {
            return None;
        }
        return Some(if rest.is_empty() {
            format!("{HOST_SHARE_ROOT}/{drive}")
        } else {
            format!("{HOST_SHARE_ROOT}/{drive}/{rest}")
        });
    }
    if host_path.starts_with('/') {
        if host_path.split('/').any(|c| c == "..") {
            return None;
        }
        let rest = host_path.trim_matches('/');
        return Some(if rest.is_empty() {
            HOST_SHARE_ROOT.to_string()
        } else {
            format!("{HOST_SHARE_ROOT}/{rest}")
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(text: &str) -> AdminSettings {
        AdminSettings::parse(text, "admin-settings.json").unwrap().0
    }

    fn refused_keys(e: &Effective) -> Vec<(&str, Source)> {
        e.refused.iter().map(|r| (r.key.as_str(), r.by)).collect()
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let e = effective(&admin("{}"), &UserSettings::default(), None);
        let s = &e.settings;
        assert!(s.enhanced_container_isolation.value);
        assert_eq!(s.enhanced_container_isolation.source, Source::Default);
        assert!(!s.enhanced_container_isolation.locked);
        assert!(!s.expose_docker_api_on_tcp2375.value);
        assert!(s.docker_socket_mount.value.image_list.images.is_empty());
        assert_eq!(
            s.filesharing.value.allowed_vm_prefixes(),
            vec![HOST_SHARE_ROOT]
        );
        assert!(e.refused.is_empty(), "{:?}", e.refused);
        assert_eq!(e.daemon_json["default-runtime"], "eci");
    }

    #[test]
    fn locked_admin_value_wins_and_the_attempt_is_reported() {
        let a = admin(
            r#"{"containersProxy": {"locked": true, "mode": "manual", "http": "http://corp:3128"}}"#,
        );
        let user = UserSettings {
            containers_proxy: Some(ProxySettings::default()),
            ..Default::default()
        };
        let e = effective(&a, &user, None);
        let p = &e.settings.containers_proxy;
        assert_eq!(p.value.http, "http://corp:3128");
        assert!(p.locked);
        assert_eq!(p.source, Source::Admin);
        assert_eq!(refused_keys(&e), vec![("containersProxy", Source::User)]);
        assert!(e.refused[0].reason.contains("locked by the admin"));
        assert_eq!(
            e.refused[0].kept.as_ref().unwrap()["http"],
            "http://corp:3128"
        );
    }

    #[test]
    fn unlocked_admin_value_is_a_default_the_user_may_change() {
        let a = admin(
            r#"{"containersProxy": {"locked": false, "mode": "manual", "http": "http://corp:3128"}}"#,
        );
        let e = effective(&a, &UserSettings::default(), None);
        assert_eq!(e.settings.containers_proxy.value.http, "http://corp:3128");
        assert_eq!(e.settings.containers_proxy.source, Source::Admin);

        let mine = ProxySettings {
            http: "http://mine:8080".into(),
            ..Default::default()
        };
        let user = UserSettings {
            containers_proxy: Some(mine.clone()),
            ..Default::default()
        };
        let e = effective(&a, &user, None);
        assert_eq!(e.settings.containers_proxy.value, mine);
        assert_eq!(e.settings.containers_proxy.source, Source::User);
        assert!(e.refused.is_empty());
    }

    #[test]
    fn locking_the_eci_group_locks_the_socket_mount_settings() {
        let a = admin(
            r#"{"enhancedContainerIsolation": {"locked": true, "value": true,
            "dockerSocketMount": {"imageList": {"images": ["docker:cli"]}}}}"#,
        );
        let e = effective(&a, &UserSettings::default(), None);
        let d = &e.settings.docker_socket_mount;
        assert!(d.locked);
        assert_eq!(d.source, Source::Admin);
        assert_eq!(
            d.value.image_list.images[0].to_string(),
            "docker.io/library/docker:cli"
        );

        let a = admin(
            r#"{"enhancedContainerIsolation": {"value": true,
            "dockerSocketMount": {"imageList": {"images": ["docker:cli"]}}}}"#,
        );
        assert!(
            !effective(&a, &UserSettings::default(), None)
                .settings
                .docker_socket_mount
                .locked
        );
    }

    #[test]
    fn isolation_and_tcp_exposure_are_forced_whoever_asks() {
        let a = admin(
            r#"{"enhancedContainerIsolation": {"locked": false, "value": false},
                         "exposeDockerAPIOnTCP2375": {"locked": true, "value": true}}"#,
        );
        let user = UserSettings {
            expose_docker_api_on_tcp2375: Some(false),
            ..Default::default()
        };
        let e = effective(&a, &user, None);
        assert!(e.settings.enhanced_container_isolation.value);
        assert_eq!(
            e.settings.enhanced_container_isolation.source,
            Source::Forced
        );
        assert!(!e.settings.expose_docker_api_on_tcp2375.value);
        assert_eq!(
            refused_keys(&e),
            vec![
                ("enhancedContainerIsolation", Source::Admin),
                // The user's `false` lost to the lock; the admin's `true` lost to S4.
                ("exposeDockerAPIOnTCP2375", Source::User),
                ("exposeDockerAPIOnTCP2375", Source::Admin),
            ]
        );
        assert!(e.refused[2].reason.contains("SPEC S4"));

        let user = UserSettings {
            enhanced_container_isolation: Some(false),
            ..Default::default()
        };
        let e = effective(&admin("{}"), &user, None);
        assert!(e.settings.enhanced_container_isolation.value);
        assert_eq!(
            refused_keys(&e),
            vec![("enhancedContainerIsolation", Source::User)]
        );
    }

    #[test]
    fn daemon_options_merge_per_key_with_user_on_top_when_unlocked() {
        let a = admin(
            r#"{"linuxVM": {"dockerDaemonOptions": {"locked": false,
            "value": "{\"debug\": false, \"log-level\": \"warn\"}"}}}"#,
        );
        let e = effective(
            &a,
            &UserSettings::default(),
            Some(json!({"debug": true, "max-concurrent-downloads": 5})),
        );
        assert_eq!(e.daemon_json["debug"], true);
        assert_eq!(e.daemon_json["log-level"], "warn");
        assert_eq!(e.daemon_json["max-concurrent-downloads"], 5);
        assert_eq!(e.settings.docker_daemon_options.source, Source::User);
        assert!(e.refused.is_empty());
    }

    #[test]
    fn locked_daemon_options_refuse_every_differing_user_key() {
        let a = admin(
            r#"{"linuxVM": {"dockerDaemonOptions": {"locked": true, "value": "{\"debug\": false}"}}}"#,
        );
        let e = effective(
            &a,
            &UserSettings::default(),
            Some(json!({"debug": true, "experimental": true, "log-level": "info"})),
        );
        assert_eq!(e.daemon_json["debug"], false);
        assert!(e.daemon_json.get("experimental").is_none());
        let keys = refused_keys(&e);
        assert_eq!(
            keys,
            vec![
                ("linuxVM.dockerDaemonOptions.debug", Source::User),
                ("linuxVM.dockerDaemonOptions.experimental", Source::User),
                ("linuxVM.dockerDaemonOptions.log-level", Source::User),
            ]
        );
        assert_eq!(e.refused[0].kept, Some(json!(false)));
        assert_eq!(e.refused[1].kept, None);

        // Repeating the admin's own value is not an override.
        let e = effective(&a, &UserSettings::default(), Some(json!({"debug": false})));
        assert!(e.refused.is_empty());
    }

    #[test]
    fn forced_keys_win_even_over_a_locked_admin() {
        let a = admin(
            r#"{"linuxVM": {"dockerDaemonOptions": {"locked": true, "value":
            "{\"hosts\": [\"tcp://0.0.0.0:2375\", \"unix:///var/run/docker.sock\"], \"runtimes\": {\"runc\": {\"path\": \"runc\"}}, \"default-runtime\": \"runc\", \"userns-remap\": \"default\", \"tlsverify\": true, \"authorization-plugins\": [\"authz\"], \"builder\": {\"gc\": {\"enabled\": true}, \"entitlements\": {\"network-host\": true, \"security-insecure\": true}}, \"debug\": true}"}}}"#,
        );
        let e = effective(&a, &UserSettings::default(), None);
        let d = &e.daemon_json;
        assert_eq!(d["runtimes"], json!({"eci": {"path": "/usr/bin/eci-runc"}}));
        assert_eq!(d["default-runtime"], "eci");
        assert_eq!(d["hosts"], json!(["unix:///run/eci/dockerd.sock"]));
        assert_eq!(d["group"], "root");
        assert_eq!(d["containerd"], "/run/containerd/containerd.sock");
        assert!(d.get("userns-remap").is_none());
        assert!(d.get("tlsverify").is_none());
        assert_eq!(d["authorization-plugins"], json!([]));
        assert_eq!(
            d["builder"]["entitlements"],
            json!({"network-host": false, "security-insecure": false})
        );
        // Keys isolation does not own pass through untouched, nested ones included.
        assert_eq!(d["builder"]["gc"], json!({"enabled": true}));
        assert_eq!(d["debug"], true);

        let keys: Vec<&str> = e.refused.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "linuxVM.dockerDaemonOptions.runtimes",
                "linuxVM.dockerDaemonOptions.default-runtime",
                "linuxVM.dockerDaemonOptions.hosts",
                "linuxVM.dockerDaemonOptions.tlsverify",
                "linuxVM.dockerDaemonOptions.userns-remap",
                "linuxVM.dockerDaemonOptions.authorization-plugins",
                "linuxVM.dockerDaemonOptions.builder.entitlements.network-host",
                "linuxVM.dockerDaemonOptions.builder.entitlements.security-insecure",
            ]
        );
        assert!(e
            .refused
            .iter()
            .all(|r| r.by == Source::Admin && r.reason.contains("SPEC")));
        // The merged options keep what was asked for; only daemon_json is forced.
        assert_eq!(
            e.settings.docker_daemon_options.value["default-runtime"],
            "runc"
        );
    }

    #[test]
    fn forced_keys_from_user_options_are_reported_against_the_user() {
        let e = effective(
            &admin("{}"),
            &UserSettings::default(),
            Some(
                json!({"hosts": ["tcp://0.0.0.0:2375"], "builder": "nonsense", "default-runtime": "eci"}),
            ),
        );
        assert_eq!(
            refused_keys(&e),
            vec![
                ("linuxVM.dockerDaemonOptions.hosts", Source::User),
                ("linuxVM.dockerDaemonOptions.builder", Source::User),
            ]
        );
        assert_eq!(
            e.daemon_json["builder"]["entitlements"]["network-host"],
            false
        );
    }

    #[test]
    fn non_object_user_daemon_options_are_refused_whole() {
        let e = effective(&admin("{}"), &UserSettings::default(), Some(json!([1])));
        assert_eq!(
            refused_keys(&e),
            vec![("linuxVM.dockerDaemonOptions", Source::User)]
        );
        assert_eq!(e.daemon_json["default-runtime"], "eci");
    }

    #[test]
    fn every_forced_key_is_in_the_rendered_options_as_promised() {
        let e = effective(&admin("{}"), &UserSettings::default(), None);
        for fk in forced_daemon_keys() {
            let parts: Vec<&str> = fk.key.split('.').collect();
            assert_eq!(
                get_path(&e.daemon_json, &parts).cloned(),
                fk.value,
                "{}",
                fk.key
            );
        }
    }

    #[test]
    fn readme_and_daemon_template_name_every_forced_key() {
        let readme = include_str!("../README.md");
        let template = include_str!("../templates/daemon.json.tera");
        for fk in forced_daemon_keys() {
            assert!(
                readme.contains(&format!("`{}`", fk.key)),
                "README lacks {}",
                fk.key
            );
            let top = fk.key.split('.').next().unwrap();
            assert!(template.contains(top), "daemon.json.tera lacks {top}");
        }
    }

    #[test]
    fn filesharing_limits_user_dirs_to_the_admin_allow_list() {
        let a = admin(
            r#"{"filesharingAllowedDirectories": [
            {"path": "$HOME", "sharedByDefault": true},
            {"path": "D:\\data", "sharedByDefault": false}]}"#,
        );
        let e = effective(&a, &UserSettings::default(), None);
        let f = &e.settings.filesharing;
        assert!(f.locked);
        assert_eq!(f.source, Source::Admin);
        assert_eq!(
            f.value.shared,
            vec![SharedDirectory {
                host_path: "$HOME".into(),
                vm_path: None
            }]
        );
        assert!(f.value.allowed_vm_prefixes().is_empty());

        let user = UserSettings {
            filesharing_directories: Some(vec![
                "C:\\Users\\me\\src".into(),
                "d:/Data/x".into(),
                "C:\\Windows".into(),
                "D:\\database".into(),
            ]),
            host_home: Some("C:\\Users\\me".into()),
            ..Default::default()
        };
        let e = effective(&a, &user, None);
        let f = &e.settings.filesharing.value;
        let shared: Vec<&str> = f.shared.iter().map(|d| d.host_path.as_str()).collect();
        assert_eq!(shared, vec!["C:\\Users\\me\\src", "d:/Data/x"]);
        assert_eq!(
            f.allowed_vm_prefixes(),
            vec!["/mnt/host/c/Users/me/src", "/mnt/host/d/Data/x"]
        );
        let refused: Vec<&Value> = e.refused.iter().map(|r| &r.attempted).collect();
        assert_eq!(refused, vec![&json!("C:\\Windows"), &json!("D:\\database")]);
        assert!(e.refused[0].reason.contains("$HOME, D:\\data"));
    }

    #[test]
    fn home_variables_resolve_only_with_a_known_home() {
        assert_eq!(resolve("$HOME/src", Some("/home/me/")), "/home/me/src");
        assert_eq!(
            resolve("%USERPROFILE%\\src", Some("C:\\Users\\me")),
            "C:\\Users\\me\\src"
        );
        assert_eq!(resolve("~", Some("/home/me")), "/home/me");
        assert_eq!(resolve("$HOMEWORK", Some("/home/me")), "$HOMEWORK");
        assert_eq!(resolve("$HOME/src", None), "$HOME/src");
        // Without a home, variable paths still compare textually.
        assert!(is_within("$HOME/src", "$HOME"));
    }

    #[test]
    fn path_containment_is_by_whole_components() {
        assert!(is_within("/tmp", "/tmp"));
        assert!(is_within("/tmp/x", "/tmp/"));
        assert!(!is_within("/tmpx", "/tmp"));
        assert!(is_within("C:\\Users\\Me\\x", "c:/users/me"));
        assert!(!is_within("/Users/Me", "/users/me"));
        assert!(is_within("/anything", "/"));
    }

    #[test]
    fn host_paths_map_under_the_share_root() {
        assert_eq!(
            vm_path("C:\\Users\\me").as_deref(),
            Some("/mnt/host/c/Users/me")
        );
        assert_eq!(vm_path("c:/").as_deref(), Some("/mnt/host/c"));
        assert_eq!(vm_path("/home/me/").as_deref(), Some("/mnt/host/home/me"));
        assert_eq!(vm_path("/").as_deref(), Some("/mnt/host"));
        assert_eq!(vm_path("$HOME"), None);
        assert_eq!(vm_path("relative/dir"), None);
        assert_eq!(vm_path("/home/../etc"), None);
    }
}
