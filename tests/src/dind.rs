//! Helpers for the Docker-in-Docker suite (tests/dind.rs, issue 10, SPEC P7, M7): the `dind`
//! image built by eci-build from images/dind.yaml and its lock, imported into a private eci
//! engine, and the script its container runs: Debian's dockerd with bridge networking, an
//! inner image imported from a tarball handed in through the engine's share folder, and one
//! inner container that prints its uid map and what its /proc views show.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::escapes::Attack;
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
    let tarball = crate::build_rootfs_tarball("dind", out)?;
    Some(DindImage {
        tarball,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Puts `tarball` into the engine's share folder as `name` (a hard link when the file system
/// allows one: the tarball is a quarter of a GiB) and returns its path inside the container.
pub fn share_file(e: &RuncEngine, tarball: &Path, name: &str) -> Result<String> {
    let dest = e.share.join(name);
    // A copy onto an earlier hard link of the same file would truncate the source itself.
    let _ = std::fs::remove_file(&dest);
    if std::fs::hard_link(tarball, &dest).is_err() {
        std::fs::copy(tarball, &dest)
            .with_context(|| format!("copying {} to {}", tarball.display(), dest.display()))?;
    }
    Ok(format!("{SHARE_IN_CONTAINER}/{name}"))
}

/// `docker import` of the dind root filesystem as [`DIND_IMAGE`]
/// ([`RuncEngine::import_rootfs`]; a quarter of a GiB through the VM's endpoint takes ~20 s).
pub fn import(e: &RuncEngine, tarball: &Path) -> Result<()> {
    e.import_rootfs(tarball, DIND_IMAGE, &[crate::runc_engine::SHELL_CMD])
}

/// The outer container's script. Each step prints one `key: value` line ([`field`] reads
/// them); a failed step prints the inner engine's log and stops with its own exit code, so
/// the test names the step that failed.
pub fn script(inner_tarball: &str) -> String {
    let start_dockerd = start_dockerd();
    format!(
        r#"
echo "outer-uid-map: $(cat /proc/self/uid_map)"
echo "outer-views: {VIEWS}"
{start_dockerd}
echo "inner-driver: $(docker info --format '{{{{.Driver}}}}')"
echo "inner-bridge: $(docker network inspect bridge --format '{{{{.Driver}}}} {{{{(index .IPAM.Config 0).Subnet}}}}')"
if ! docker import {inner_tarball} inner:test >/tmp/import.out 2>&1; then
  echo "step-failed: import"; sed 's/^/import-error: /' /tmp/import.out
  sed 's/^/dockerd-log: /' /tmp/dockerd.log; exit 4
fi
if ! docker run --rm inner:test sh -c 'echo "inner-uid-map: $(cat /proc/self/uid_map)"; echo "inner-views: {VIEWS}"' >/tmp/run.out 2>/tmp/run.err; then
  echo "step-failed: inner-run"; sed 's/^/inner-error: /' /tmp/run.err
  sed 's/^/dockerd-log: /' /tmp/dockerd.log; exit 5
fi
cat /tmp/run.out
sed 's/^/inner-stderr: /' /tmp/run.err
{BUILD_STEPS}"#
    )
}

/// What a container's /proc views show ([`script`] prints it for the outer and the inner
/// container): MemTotal in kB and boot_id. Shell only, and no single quotes: the inner
/// container's copy is inside `sh -c '...'` in the outer script.
const VIEWS: &str = "$(while read -r k v u; do [ \"$k\" = MemTotal: ] && echo \"$v\"; done </proc/meminfo) $(cat /proc/sys/kernel/random/boot_id)";

/// Starts the inner dockerd and waits until it answers (a minute at most); exit 3 with its
/// log when it does not.
fn start_dockerd() -> String {
    format!(
        r#"
dockerd --storage-driver={INNER_DRIVER} --log-level=warn >/tmp/dockerd.log 2>&1 &
i=0
until docker version >/dev/null 2>&1; do
  i=$((i+1))
  if [ $i -gt 240 ] || ! kill -0 $! 2>/dev/null; then
    echo "step-failed: dockerd"; sed 's/^/dockerd-log: /' /tmp/dockerd.log; exit 3
  fi
  sleep 0.25
done
"#
    )
}

/// Where the attack scripts of [`write_attacks`] live in the share folder.
const ATTACKS: &str = "attacks";

/// Writes one script per attack into the engine's share folder, each reporting
/// `@@NAME=worked|refused` like `escapes::run_attacks` does.
pub fn write_attacks(e: &RuncEngine, attacks: &[Attack]) -> Result<()> {
    let dir = e.share.join(ATTACKS);
    std::fs::create_dir_all(&dir)?;
    for a in attacks {
        std::fs::write(
            dir.join(format!("{}.sh", a.name)),
            format!(
                "exec 2>&1; if ( {} ); then echo '@@{}=worked'; else echo '@@{}=refused'; fi\n",
                a.script, a.name, a.name
            ),
        )?;
    }
    Ok(())
}

/// The outer container's script for attacks from an inner container (issue 10, SPEC M7): the
/// inner dockerd imports `inner_tarball` (the busybox image) and runs each attack of
/// [`write_attacks`] in a container of its own, with `inner_flags` (the strongest set-up its
/// runc can start), the attack scripts and the share folder's `probe` bound in. Every line an
/// attack prints comes out as `NAME: line`.
pub fn attack_script(inner_tarball: &str, inner_flags: &str) -> String {
    let start_dockerd = start_dockerd();
    format!(
        r#"
{start_dockerd}
if ! docker import {inner_tarball} bb:test >/tmp/import.out 2>&1; then
  echo "step-failed: import"; sed 's/^/import-error: /' /tmp/import.out; exit 4
fi
for f in {SHARE_IN_CONTAINER}/{ATTACKS}/*.sh; do
  n=$(basename "$f" .sh)
  docker run --rm --network none {inner_flags} \
    -v {SHARE_IN_CONTAINER}/{ATTACKS}:/{ATTACKS}:ro -v {SHARE_IN_CONTAINER}/probe:/probe:ro \
    bb:test sh /{ATTACKS}/$n.sh >/tmp/a.out 2>&1
  sed "s/^/$n: /" /tmp/a.out
done
echo "attacks-done: yes"
"#
    )
}

/// `name -> (worked, output)` for every attack, from the outer container's output of
/// [`attack_script`]; an attack whose container did not run it panics with its output.
pub fn attack_results(stdout: &str, attacks: &[Attack]) -> BTreeMap<&'static str, (bool, String)> {
    let mut out = BTreeMap::new();
    for a in attacks {
        let prefix = format!("{}: ", a.name);
        let text: String = stdout
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .map(|l| format!("{l}\n"))
            .collect();
        let worked = text.lines().any(|l| l == format!("@@{}=worked", a.name));
        let refused = text.lines().any(|l| l == format!("@@{}=refused", a.name));
        assert!(
            worked || refused,
            "inner container {}: the attack did not run:\n{text}\n--- outer output:\n{stdout}",
            a.name
        );
        out.insert(a.name, (worked, text));
    }
    out
}

/// `docker build` inside the outer container (issue 10, SPEC P7): a Dockerfile with one RUN
/// step on top of the imported inner image, built once by the builder the inner CLI picks by
/// default (Debian's docker 20.10 CLI: the classic builder; no buildx) and once with
/// `DOCKER_BUILDKIT=1` (the engine's BuildKit, which runs its RUN steps with its own runc
/// executor, not through containerd). Each result is run, and prints what the RUN step wrote.
/// The builder that ran is named by its output: the classic builder prints `Step 1/2`,
/// BuildKit `#N [..]` lines (the image has sed, no grep).
const BUILD_STEPS: &str = r#"
has() { [ -n "$(sed -n "/$1/p" "$2")" ]; }
mkdir -p /tmp/ctx
printf 'FROM inner:test\nRUN echo "$(id -u) $(cat /proc/self/uid_map)" > /built\n' > /tmp/ctx/Dockerfile
for b in default buildkit; do
  if [ $b = buildkit ]; then export DOCKER_BUILDKIT=1; fi
  s=$(date +%s%N)
  if ! docker build -t built-$b:test /tmp/ctx >/tmp/build-$b.out 2>&1; then
    echo "build-$b: failed"; sed "s/^/build-$b-error: /" /tmp/build-$b.out
    sed 's/^/dockerd-log: /' /tmp/dockerd.log; unset DOCKER_BUILDKIT; continue
  fi
  e=$(date +%s%N)
  unset DOCKER_BUILDKIT
  if has '^Step 1\/2' /tmp/build-$b.out; then k=classic
  elif has '^#[0-9]' /tmp/build-$b.out; then k=buildkit
  else k=unknown; sed "s/^/build-$b-output: /" /tmp/build-$b.out; fi
  echo "build-$b: $k $(( (e - s) / 1000000 )) ms"
  echo "build-$b-result: $(docker run --rm built-$b:test cat /built 2>&1)"
done
"#;

/// The value of the first `key: value` line of `out`.
pub fn field<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
        .map(str::trim)
}
