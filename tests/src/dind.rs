//! Helpers for the Docker-in-Docker suite (tests/dind.rs, issue 10, SPEC P7, M7): the `dind`
//! image built by eci-build from images/dind.yaml and its lock, imported into a private eci
//! engine, and the script its container runs: Debian's dockerd with bridge networking, an
//! inner image imported from a tarball handed in through the engine's share folder, and one
//! inner container that prints its uid map.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::runc_engine::RuncEngine;

/// The outer image's name in the test engine.
pub const DIND_IMAGE: &str = "eci-dind:test";

/// Where the engine's share folder appears inside the outer container.
pub const SHARE_IN_CONTAINER: &str = "/eci-share";

/// The inner engine's storage driver: overlay2, as in the VM. Inside an eci container dockerd
/// mounts it in the container's user namespace (the kernel allows overlay there since 5.11;
/// dockerd adds `userxattr` and gives up its native diff); the supervisor vets each mount and
/// makes it with the caller's powers (SPEC M3).
pub const INNER_DRIVER: &str = "overlay2";

/// The built image: its root filesystem tarball and how long `eci-build image` took.
pub struct DindImage {
    pub tarball: PathBuf,
    pub seconds: f64,
}

/// `eci-build image --target dind` into `out`; `None` when the test should skip (mirror
/// unreachable outside CI, see [`crate::build_image_or_skip`]).
pub fn build_image(out: &Path) -> Option<DindImage> {
    let started = Instant::now();
    let report = crate::build_image_or_skip("dind", out)?;
    let record = report
        .manifest
        .artifacts
        .iter()
        .find(|a| a.kind == "container-rootfs")
        .expect("images/dind.yaml names the container-rootfs output");
    Some(DindImage {
        tarball: out.join(&record.path),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Puts `tarball` into the engine's share folder as `name` (a hard link when the file system
/// allows one: the tarball is a quarter of a GiB) and returns its path inside the container.
pub fn share_file(e: &RuncEngine, tarball: &Path, name: &str) -> Result<String> {
    let dest = e.share.join(name);
    if std::fs::hard_link(tarball, &dest).is_err() {
        std::fs::copy(tarball, &dest)
            .with_context(|| format!("copying {} to {}", tarball.display(), dest.display()))?;
    }
    Ok(format!("{SHARE_IN_CONTAINER}/{name}"))
}

/// `docker import` of the dind root filesystem as [`DIND_IMAGE`], with the command and
/// environment a root filesystem tarball does not carry.
pub fn import(e: &RuncEngine, tarball: &Path) -> Result<()> {
    let out = e.docker(&[
        "import",
        "--change",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--change",
        "CMD [\"/bin/sh\"]",
        &tarball.display().to_string(),
        DIND_IMAGE,
    ]);
    if !out.status.success() {
        bail!(
            "docker import {}: {}",
            tarball.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The outer container's script. Each step prints one `key: value` line ([`field`] reads
/// them); a failed step prints the inner engine's log and stops with its own exit code, so
/// the test names the step that failed.
pub fn script(inner_tarball: &str) -> String {
    format!(
        r#"
echo "outer-uid-map: $(cat /proc/self/uid_map)"
dockerd --storage-driver={INNER_DRIVER} --log-level=warn >/tmp/dockerd.log 2>&1 &
i=0
until docker version >/dev/null 2>&1; do
  i=$((i+1))
  if [ $i -gt 240 ] || ! kill -0 $! 2>/dev/null; then
    echo "step-failed: dockerd"; sed 's/^/dockerd-log: /' /tmp/dockerd.log; exit 3
  fi
  sleep 0.25
done
echo "inner-driver: $(docker info --format '{{{{.Driver}}}}')"
echo "inner-bridge: $(docker network inspect bridge --format '{{{{.Driver}}}} {{{{(index .IPAM.Config 0).Subnet}}}}')"
if ! docker import {inner_tarball} inner:test >/tmp/import.out 2>&1; then
  echo "step-failed: import"; sed 's/^/import-error: /' /tmp/import.out
  sed 's/^/dockerd-log: /' /tmp/dockerd.log; exit 4
fi
if ! docker run --rm inner:test cat /proc/self/uid_map >/tmp/run.out 2>/tmp/run.err; then
  echo "step-failed: inner-run"; sed 's/^/inner-error: /' /tmp/run.err
  sed 's/^/dockerd-log: /' /tmp/dockerd.log; exit 5
fi
sed 's/^/inner-uid-map: /' /tmp/run.out
"#
    )
}

/// The value of the first `key: value` line of `out`.
pub fn field<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
        .map(str::trim)
}
