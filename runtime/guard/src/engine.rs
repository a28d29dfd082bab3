//! Talking to dockerd's own socket: connections for the proxy, and the lookups that fill
//! [`Facts`] (image, volume and network inspects).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;

use crate::facts::{ContainerInfo, FactQuery, Facts, ImageInfo, VolumeInfo};
use crate::paths::encode_path;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type on both sides of the proxy.
pub type Body = BoxBody<Bytes, BoxError>;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot connect to the engine at {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("engine connection failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("engine did not answer {what} within {secs} s")]
    Timeout { what: String, secs: u64 },
    #[error("engine answered {what} with {status}: {body}")]
    Status {
        what: String,
        status: StatusCode,
        body: String,
    },
    #[error("engine answered {what} with a body that is not what the API documents: {reason}")]
    Body { what: String, reason: String },
}

/// A new HTTP/1 connection to dockerd; upgrades (attach, exec, BuildKit sessions) allowed.
pub async fn connect(path: &Path) -> Result<SendRequest<Body>, EngineError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| EngineError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        // Errors here surface on the request that was using the connection.
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

/// Lookups made before a decision; small JSON bodies only.
#[derive(Debug, Clone)]
pub struct Engine {
    pub socket: PathBuf,
    pub timeout: Duration,
}

const LOOKUP_LIMIT: usize = 16 << 20;

impl Engine {
    pub fn new(socket: impl Into<PathBuf>) -> Engine {
        Engine {
            socket: socket.into(),
            timeout: Duration::from_secs(30),
        }
    }

    /// `GET path`: `Ok(None)` on 404 (and 400, an unparsable name).
    pub async fn get_json(&self, path: &str) -> Result<Option<Value>, EngineError> {
        let what = format!("GET {path}");
        let fut = async {
            let mut sender = connect(&self.socket).await?;
            let req = Request::builder()
                .method(Method::GET)
                .uri(path)
                .header(header::HOST, "docker")
                .body(empty())
                .expect("static request parts are valid");
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), LOOKUP_LIMIT)
                .collect()
                .await
                .map_err(|e| EngineError::Body {
                    what: what.clone(),
                    reason: e.to_string(),
                })?
                .to_bytes();
            // 400 is dockerd's answer to a name it cannot parse: no such object either.
            if status == StatusCode::NOT_FOUND || status == StatusCode::BAD_REQUEST {
                return Ok(None);
            }
            if !status.is_success() {
                return Err(EngineError::Status {
                    what: what.clone(),
                    status,
                    body: String::from_utf8_lossy(&bytes).into_owned(),
                });
            }
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| EngineError::Body {
                    what: what.clone(),
                    reason: e.to_string(),
                })
        };
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(EngineError::Timeout {
                what,
                secs: self.timeout.as_secs(),
            }),
        }
    }

    pub async fn image(&self, reference: &str) -> Result<Option<ImageInfo>, EngineError> {
        let path = format!("/images/{}/json", encode_path(reference));
        match self.get_json(&path).await? {
            None => Ok(None),
            Some(v) => ImageInfo::from_inspect(&v)
                .map(Some)
                .ok_or_else(|| EngineError::Body {
                    what: path,
                    reason: "no Id".into(),
                }),
        }
    }

    pub async fn volume(&self, name: &str) -> Result<Option<VolumeInfo>, EngineError> {
        let path = format!("/volumes/{}", encode_path(name));
        Ok(self
            .get_json(&path)
            .await?
            .map(|v| VolumeInfo::from_inspect(&v)))
    }

    pub async fn container(&self, id: &str) -> Result<Option<ContainerInfo>, EngineError> {
        let path = format!("/containers/{}/json", encode_path(id));
        Ok(self
            .get_json(&path)
            .await?
            .map(|v| ContainerInfo::from_inspect(&v)))
    }

    pub async fn network_driver(&self, name: &str) -> Result<Option<String>, EngineError> {
        let path = format!("/networks/{}", encode_path(name));
        Ok(self
            .get_json(&path)
            .await?
            .and_then(|v| v.get("Driver").and_then(Value::as_str).map(str::to_string)))
    }

    /// Local images with their layers, inspected only when `wanted` accepts one of their
    /// tags (pinning at start looks at the allowed names, not the whole store).
    pub async fn images_tagged(
        &self,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<Vec<ImageInfo>, EngineError> {
        let list = self.get_json("/images/json").await?.unwrap_or(Value::Null);
        let ids: BTreeSet<String> = list
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| {
                i.get("RepoTags")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .any(&wanted)
            })
            .filter_map(|i| i.get("Id").and_then(Value::as_str).map(str::to_string))
            .collect();
        let mut out = Vec::new();
        for id in ids {
            if let Some(info) = self.image(&id).await? {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Fill `facts` with what `q` asks for. An image chain is followed through `Parent`.
    pub async fn gather(&self, q: &FactQuery, facts: &mut Facts) -> Result<(), EngineError> {
        for reference in &q.images {
            let Some(info) = self.image(reference).await? else {
                continue;
            };
            let mut parent = info.parent.clone();
            facts.add_image(reference, info);
            let mut depth = 0;
            while q.image_chains && !parent.is_empty() && depth < 256 {
                if facts.images.contains_key(&parent) {
                    break;
                }
                let Some(p) = self.image(&parent).await? else {
                    break;
                };
                let next = p.parent.clone();
                facts.add_image(&parent, p);
                parent = next;
                depth += 1;
            }
        }
        for name in &q.volumes {
            if let Some(v) = self.volume(name).await? {
                facts.volumes.insert(name.clone(), v);
            }
        }
        for id in &q.containers {
            if let Some(c) = self.container(id).await? {
                // A container's volumes are judged by their options (SPEC B2), so they are
                // looked up with it.
                for name in c.volume_names() {
                    if !facts.volumes.contains_key(name) {
                        if let Some(v) = self.volume(name).await? {
                            facts.volumes.insert(name.to_string(), v);
                        }
                    }
                }
                facts.containers.insert(id.clone(), c);
            }
        }
        for name in &q.networks {
            if let Some(d) = self.network_driver(name).await? {
                facts.networks.insert(name.clone(), d);
            }
        }
        Ok(())
    }
}

/// What `path` is for `--device`: dockerd follows symlinks and adds every device below a
/// folder, so the guard looks the same way. `None` when it does not exist.
pub fn device_node(path: &str) -> Option<crate::facts::DeviceNode> {
    use crate::facts::DeviceNode;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(path).ok()?;
    let ft = meta.file_type();
    let kind = if ft.is_char_device() {
        'c'
    } else if ft.is_block_device() {
        'b'
    } else if ft.is_dir() {
        return Some(DeviceNode::Folder);
    } else {
        return Some(DeviceNode::Other);
    };
    let rdev = meta.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    Some(DeviceNode::Node { kind, major, minor })
}

/// Where `path` really leads: symlinks resolved for the longest existing ancestor, the rest
/// appended. dockerd creates missing bind sources, so a path that does not exist yet is
/// judged by where it will be created.
pub fn real_path(path: &str) -> Option<String> {
    let p = Path::new(path);
    let mut existing = p;
    let mut rest: Vec<&std::ffi::OsStr> = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            let mut out = real;
            for c in rest.iter().rev() {
                out.push(c);
            }
            return out.to_str().map(str::to_string);
        }
        rest.push(existing.file_name()?);
        existing = existing.parent()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_nodes_are_read_through_symlinks() {
        use crate::facts::DeviceNode;
        assert_eq!(
            device_node("/dev/null"),
            Some(DeviceNode::Node {
                kind: 'c',
                major: 1,
                minor: 3
            })
        );
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("n");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert_eq!(
            device_node(link.to_str().unwrap()),
            Some(DeviceNode::Node {
                kind: 'c',
                major: 1,
                minor: 5
            })
        );
        assert_eq!(device_node("/dev"), Some(DeviceNode::Folder));
        assert_eq!(device_node(dir.path().join("none").to_str().unwrap()), None);
    }

    #[test]
    fn real_paths_follow_symlinks_of_existing_ancestors() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(base.join("share")).unwrap();
        std::os::unix::fs::symlink("/etc", base.join("share/link")).unwrap();
        let p = |s: &str| base.join(s).to_str().unwrap().to_string();
        assert_eq!(real_path(&p("share/link")).as_deref(), Some("/etc"));
        assert_eq!(real_path(&p("share/link/x/y")).as_deref(), Some("/etc/x/y"));
        assert_eq!(real_path(&p("share/new/dir")), Some(p("share/new/dir")));
        assert_eq!(real_path("/").as_deref(), Some("/"));
    }
}
