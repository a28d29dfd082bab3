//! A private containerd driven with `ctr`, as Kubernetes' CRI drives containers of a pod, with
//! eci-runc as the runc binary of `io.containerd.runc.v2`.
//!
//! Each [`Containerd`] has its own root, state folder, sockets, config, containerd namespace,
//! eci-runc policy and id-allocator folder under one temporary folder in /tmp. `Drop` kills and
//! deletes its tasks and containers, stops containerd, detaches leftover mounts under the folder
//! and removes runc's state root for the namespace, even when the test panics.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::runc_engine::{stop_daemon, stop_engine_daemons, tail, unmount_below, write_eci_runc};

/// The name the test image gets in the private containerd.
pub const IMAGE: &str = "eci.test/busybox:pod";

pub struct Containerd {
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    /// The containerd namespace every `ctr` call uses.
    pub ns: String,
    /// eci-runc's id-allocator folder.
    pub ids: PathBuf,
    /// The wrapper `--runc-binary` points at (eci-runc with this policy and allocator folder).
    pub runc: PathBuf,
    child: Option<Child>,
}

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

impl Containerd {
    pub fn start(name: &str) -> Result<Containerd> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("ectr-{name}-"))
            .tempdir_in("/tmp")
            .context("temporary folder")?;
        let d = dir.path().to_path_buf();
        let mut c = Containerd {
            sock: d.join("containerd.sock"),
            ns: format!("eci-ctr-{name}-{}", std::process::id()),
            ids: d.join("ids"),
            runc: d.join("eci-runc"),
            dir,
            child: None,
        };
        c.write_policy()?;
        c.start_daemon()?;
        c.import_image()?;
        Ok(c)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write_policy(&self) -> Result<()> {
        let d = self.path();
        write_eci_runc(d, &d.join("share"), &d.join("root"), &self.ids)?;
        Ok(())
    }

    fn start_daemon(&mut self) -> Result<()> {
        let d = self.path().to_path_buf();
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\n\
             [grpc]\n  address = \"{sock}\"\n\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n\n\
             [debug]\n  level = \"warn\"\n\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = self.sock.display(),
            opt = d.join("opt").display(),
        );
        std::fs::write(d.join("config.toml"), config)?;
        let log = std::fs::File::create(d.join("containerd.log"))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting containerd")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.ctr(&["version"]).status.success() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("containerd exited with {status}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!("containerd did not answer within 60 s:\n{}", self.log())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path().join("containerd.log")).unwrap_or_default()
    }

    /// A busybox-static rootfs as a one-layer OCI image archive, imported as [`IMAGE`].
    fn import_image(&self) -> Result<()> {
        let d = self.path();
        let root = d.join("image");
        for sub in [
            "bin", "sbin", "etc", "tmp", "proc", "sys", "dev", "root", "usr/bin", "var",
        ] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox"))?;
        let list = Command::new("/bin/busybox").arg("--list").output()?;
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
            }
        }
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        )?;
        std::fs::write(root.join("etc/group"), "root:x:0:\nnobody:x:65534:\n")?;
        let layer_tar = d.join("layer.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .args(["--numeric-owner", "--owner=0", "--group=0", "-cf"])
            .arg(&layer_tar)
            .arg(".")
            .status()?;
        if !st.success() {
            bail!("tar of the busybox rootfs failed");
        }
        std::fs::remove_dir_all(&root)?;

        // The OCI image layout: blobs named by digest, one manifest in index.json.
        let layout = d.join("oci");
        let blobs = layout.join("blobs/sha256");
        std::fs::create_dir_all(&blobs)?;
        let layer = std::fs::read(&layer_tar)?;
        let layer_digest = sha256(&layer);
        std::fs::write(blobs.join(&layer_digest), &layer)?;
        std::fs::remove_file(&layer_tar)?;
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/bin:/sbin:/usr/bin"], "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]}
        }))?;
        let config_digest = sha256(&config);
        std::fs::write(blobs.join(&config_digest), &config)?;
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": format!("sha256:{config_digest}"), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": format!("sha256:{layer_digest}"), "size": layer.len()}]
        }))?;
        let manifest_digest = sha256(&manifest);
        std::fs::write(blobs.join(&manifest_digest), &manifest)?;
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "digest": format!("sha256:{manifest_digest}"),
                           "size": manifest.len(),
                           "platform": {"architecture": "amd64", "os": "linux"},
                           "annotations": {"io.containerd.image.name": IMAGE}}]
        });
        std::fs::write(layout.join("index.json"), serde_json::to_vec(&index)?)?;
        std::fs::write(
            layout.join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        let archive = d.join("image.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(&archive)
            .args(["oci-layout", "index.json", "blobs"])
            .status()?;
        if !st.success() {
            bail!("tar of the OCI image layout failed");
        }
        std::fs::remove_dir_all(&layout)?;
        let o = self.ctr(&["images", "import", &archive.display().to_string()]);
        if !o.status.success() {
            bail!(
                "ctr images import: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let list = self.ctr(&["images", "ls", "-q"]);
        if !String::from_utf8_lossy(&list.stdout)
            .lines()
            .any(|l| l.trim() == IMAGE)
        {
            bail!(
                "{IMAGE} not listed after import: {}",
                String::from_utf8_lossy(&list.stdout)
            );
        }
        Ok(())
    }

    /// `ctr -a SOCK -n NS ARGS`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ctr");
        c.arg("-a")
            .arg(&self.sock)
            .args(["-n", &self.ns])
            .args(args)
            .stdin(Stdio::null());
        c
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run ctr")
    }

    /// `ctr ARGS`, asserting success; stdout trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.ctr(args);
        assert!(
            o.status.success(),
            "ctr {args:?} failed: {}{}\n--- containerd log tail:\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            tail(&self.log(), 30)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// Kill, wait for and delete the task and the container `id` (both best effort).
    pub fn remove(&self, id: &str) {
        let _ = self.ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let o = self.ctr(&["tasks", "delete", id]);
            let err = String::from_utf8_lossy(&o.stderr);
            if o.status.success() || err.contains("not found") {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.ctr(&["containers", "delete", id]);
    }

    /// The allocator's table of live ranges (start per container id).
    pub fn ranges(&self) -> Vec<(String, u64)> {
        let text = std::fs::read_to_string(self.ids.join("ranges.json")).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        v["ranges"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        (
                            e["id"].as_str().unwrap_or_default().to_string(),
                            e["start"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            let ids = self.ctr(&["containers", "ls", "-q"]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                self.remove(id);
            }
        }
        if let Some(c) = self.child.take() {
            stop_daemon(c);
        }
        stop_engine_daemons(self.path());
        unmount_below(self.path());
        // The shim points runc's `--root` at /run/containerd/runc/<namespace>.
        let _ = std::fs::remove_dir_all(Path::new("/run/containerd/runc").join(&self.ns));
    }
}
