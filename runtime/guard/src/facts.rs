//! What the policy needs to know about the engine and the VM's filesystem, as plain data.
//!
//! The proxy fetches these from dockerd (`GET /images/{name}/json`, `/volumes/{name}`,
//! `/networks/{name}`) and from the filesystem (symlinks of bind sources) before it calls the
//! policy; tests fill them by hand. Keeping the lookups out of the decision makes the decision
//! a pure function.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The parts of `GET /images/{name}/json` the socket-mount rules use.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImageInfo {
    /// `sha256:...`
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// The classic builder's parent image id; empty for pulled, loaded and BuildKit images.
    pub parent: String,
    /// `RootFS.Layers` (diff ids), base first.
    pub layers: Vec<String>,
}

impl ImageInfo {
    /// From dockerd's image inspect JSON.
    pub fn from_inspect(v: &Value) -> Option<ImageInfo> {
        let strings = |key: &str| -> Vec<String> {
            v.get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        Some(ImageInfo {
            id: v.get("Id")?.as_str()?.to_string(),
            repo_tags: strings("RepoTags"),
            repo_digests: strings("RepoDigests"),
            parent: v
                .get("Parent")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            layers: v
                .pointer("/RootFS/Layers")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

/// The parts of `GET /volumes/{name}` that say where a volume's data comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumeInfo {
    pub driver: String,
    pub options: BTreeMap<String, String>,
}

impl VolumeInfo {
    pub fn from_inspect(v: &Value) -> VolumeInfo {
        VolumeInfo {
            driver: v
                .get("Driver")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            options: string_map(v.get("Options")),
        }
    }
}

pub fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The parts of `GET /containers/{id}/json` the start rules (SPEC A5, B2) and `VolumesFrom`
/// use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerInfo {
    /// Without docker's leading `/`.
    pub name: String,
    /// `HostConfig.Runtime`; empty when dockerd recorded none.
    pub runtime: String,
    /// `Mounts`, as dockerd resolved them.
    pub mounts: Vec<ContainerMount>,
}

/// One entry of a container's `Mounts`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerMount {
    /// `bind`, `volume`, `tmpfs`, ...
    pub kind: String,
    /// The volume's name (`volume` mounts).
    pub name: String,
    /// The VM path dockerd mounts (`bind` mounts: the bind source).
    pub source: String,
    /// The volume driver (`volume` mounts).
    pub driver: String,
}

impl ContainerInfo {
    pub fn from_inspect(v: &Value) -> ContainerInfo {
        let s = |v: &Value, p: &str| {
            v.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        ContainerInfo {
            name: s(v, "/Name").trim_start_matches('/').to_string(),
            runtime: s(v, "/HostConfig/Runtime"),
            mounts: v
                .get("Mounts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|m| ContainerMount {
                    kind: s(m, "/Type"),
                    name: s(m, "/Name"),
                    source: s(m, "/Source"),
                    driver: s(m, "/Driver"),
                })
                .collect(),
        }
    }

    /// Names of the named volumes the container mounts.
    pub fn volume_names(&self) -> impl Iterator<Item = &str> {
        self.mounts
            .iter()
            .filter(|m| m.kind == "volume" && !m.name.is_empty())
            .map(|m| m.name.as_str())
    }
}

/// What a `--device` path is in the VM, as `stat` (following symlinks, as dockerd does) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceNode {
    /// A device node: `c` or `b`, major, minor.
    Node { kind: char, major: u32, minor: u32 },
    /// A folder: dockerd would add every device below it.
    Folder,
    /// Anything else (dockerd refuses it).
    Other,
}

/// Lookups the decision may make. Every method answers from data gathered before the call.
pub trait EngineFacts {
    /// An image by reference or id; `None` if the engine does not have it.
    fn image(&self, reference: &str) -> Option<&ImageInfo>;
    /// A volume by name; `None` if it does not exist (yet).
    fn volume(&self, name: &str) -> Option<&VolumeInfo>;
    /// The driver of a network by name or id; `None` if unknown.
    fn network_driver(&self, name: &str) -> Option<&str>;
    /// A container by id or name; `None` if it does not exist.
    fn container(&self, id: &str) -> Option<&ContainerInfo>;
    /// The real location of a VM path with symlinks resolved as far as the path exists;
    /// `None` when nothing is known (the lexical path is used).
    fn real_path(&self, path: &str) -> Option<&str>;
    /// What a VM path named by `--device` is; `None` when it does not exist.
    fn device(&self, path: &str) -> Option<DeviceNode>;
}

/// What to look up before deciding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FactQuery {
    /// Images to inspect; with `image_chains`, their parents too.
    pub images: BTreeSet<String>,
    pub image_chains: bool,
    pub volumes: BTreeSet<String>,
    pub networks: BTreeSet<String>,
    pub containers: BTreeSet<String>,
    pub paths: BTreeSet<String>,
}

impl FactQuery {
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
            && self.volumes.is_empty()
            && self.networks.is_empty()
            && self.containers.is_empty()
            && self.paths.is_empty()
    }
}

/// Gathered facts (the proxy fills it from the engine; tests by hand).
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// By every reference they were looked up with, and by id.
    pub images: BTreeMap<String, ImageInfo>,
    pub volumes: BTreeMap<String, VolumeInfo>,
    pub networks: BTreeMap<String, String>,
    pub containers: BTreeMap<String, ContainerInfo>,
    pub real_paths: BTreeMap<String, String>,
    pub devices: BTreeMap<String, DeviceNode>,
}

impl Facts {
    /// Record an image under `reference` and under its id.
    pub fn add_image(&mut self, reference: &str, info: ImageInfo) {
        self.images.insert(info.id.clone(), info.clone());
        self.images.insert(reference.to_string(), info);
    }
}

impl EngineFacts for Facts {
    fn image(&self, reference: &str) -> Option<&ImageInfo> {
        self.images.get(reference)
    }
    fn volume(&self, name: &str) -> Option<&VolumeInfo> {
        self.volumes.get(name)
    }
    fn network_driver(&self, name: &str) -> Option<&str> {
        self.networks.get(name).map(String::as_str)
    }
    fn container(&self, id: &str) -> Option<&ContainerInfo> {
        self.containers.get(id)
    }
    fn real_path(&self, path: &str) -> Option<&str> {
        self.real_paths.get(path).map(String::as_str)
    }
    fn device(&self, path: &str) -> Option<DeviceNode> {
        self.devices.get(path).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn image_inspect_fields_are_read() {
        let v = json!({"Id": "sha256:aa", "RepoTags": ["x:1"], "RepoDigests": [],
                       "Parent": "sha256:bb", "RootFS": {"Type": "layers", "Layers": ["sha256:l1"]}});
        let i = ImageInfo::from_inspect(&v).unwrap();
        assert_eq!(i.id, "sha256:aa");
        assert_eq!(i.parent, "sha256:bb");
        assert_eq!(i.layers, vec!["sha256:l1"]);
        assert!(ImageInfo::from_inspect(&json!({"RepoTags": null})).is_none());
        let vol = VolumeInfo::from_inspect(
            &json!({"Driver": "local", "Options": {"device": "/etc", "o": "bind"}}),
        );
        assert_eq!(vol.options["device"], "/etc");
        assert!(VolumeInfo::from_inspect(&json!({"Options": null}))
            .options
            .is_empty());
        let c = ContainerInfo::from_inspect(&json!({
            "Name": "/web", "HostConfig": {"Runtime": "eci"},
            "Mounts": [
                {"Type": "volume", "Name": "v", "Source": "/var/lib/docker/volumes/v/_data",
                 "Destination": "/m", "Driver": "local"},
                {"Type": "bind", "Source": "/mnt/host/x", "Destination": "/x"}
            ]
        }));
        assert_eq!(c.name, "web");
        assert_eq!(c.volume_names().collect::<Vec<_>>(), vec!["v"]);
        assert_eq!(c.mounts[1].source, "/mnt/host/x");
        assert!(ContainerInfo::from_inspect(&json!({"Mounts": null}))
            .mounts
            .is_empty());
    }
}
