//! BuildKit's RUN steps under eci-runc (SPEC D3).
//!
//! dockerd's built-in BuildKit runs every RUN step with the `runc` on dockerd's PATH (eci-runc in
//! the VM), as `runc run --bundle <data-root>/buildkit/executor/<id> <id>`, not through
//! containerd. What its spec binds was captured from dockerd 20.10 (BuildKit 0.8):
//!
//! - `<data-root>/buildkit/executor/resolv.conf` and `.../hosts.<random>`: files BuildKit wrote;
//! - cache mounts (`RUN --mount=type=cache`) and build-context mounts (`--mount=type=bind`):
//!   dockerd's BuildKit keeps its snapshots in the overlay2 graph driver, so a snapshot without
//!   parents is bound as `<data-root>/overlay2/<layer>/diff`, one with parents (`from=<image or
//!   stage>`) as the overlay dockerd mounted on `<data-root>/overlay2/<layer>/merged`, and a
//!   `source=` sub folder of a snapshot as a folder below a bind mount BuildKit makes of it at
//!   `<data-root>/tmp/buildkit-mount<N>` (dockerd's TMPDIR is `<data-root>/tmp`). No `overlay`
//!   type mount reaches the spec: the graph driver mounts the overlays itself, so the
//!   non-virtual type rule stays as it is;
//! - secrets (`RUN --mount=type=secret`): a file in a tmpfs BuildKit mounts for the step at
//!   `<data-root>/tmp/buildkit-secrets<N>`.
//!
//! Those are VM paths under the data root, and an ordinary container must not bind them
//! (another container's layers hold its files). They are engine-internal only for a container
//! the runtime has proven to be a build step ([`build_step_data_root`] on the bundle path, a
//! folder only dockerd, as VM root, creates), recorded in `Policy::build_step`. The path shape
//! is decided here; the runtime then decides on the opened file that it is on the data root's
//! own mount (so something mounted over one of these paths does not pass), and for `merged`
//! that it is dockerd's overlay with every layer in the data root's overlay2 folder
//! ([`snapshot_overlay_dirs`]).

use crate::mounts::normalize_path;
use crate::volume_data::unescape_mountinfo;

/// A name usable as one path component: not empty, no `/`, not `.` or `..`.
fn plain_component(s: &str) -> bool {
    !s.is_empty() && !s.contains('/') && s != "." && s != ".."
}

/// The data root `root` without a trailing slash (`/` becomes the empty string, so that
/// `format!("{root}/x")` is `/x`).
fn trimmed(root: &str) -> String {
    normalize_path(root).trim_end_matches('/').to_string()
}

/// The data root (of `data_roots`) whose BuildKit made `bundle` for the container
/// `container_id`: BuildKit's executor puts each step's bundle at
/// `<data-root>/buildkit/executor/<id>` and runs it under that same id. `None` for every other
/// container (dockerd's and containerd's bundles live under their exec roots).
pub fn build_step_data_root(
    bundle: &str,
    container_id: &str,
    data_roots: &[String],
) -> Option<String> {
    if !plain_component(container_id) || !bundle.starts_with('/') {
        return None;
    }
    let bundle = normalize_path(bundle);
    data_roots
        .iter()
        .filter(|r| r.starts_with('/'))
        .find(|r| bundle == format!("{}/buildkit/executor/{container_id}", trimmed(r)))
        .map(|r| normalize_path(r))
}

/// A bind source a build step may have, by its (normalised) path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildSource {
    /// `resolv.conf` or `hosts.<random>` in BuildKit's executor folder.
    ExecutorFile,
    /// `<data-root>/overlay2/<layer>/diff` or below it: a snapshot without parents (a cache
    /// mount, the build context). `layer_dir` is the `diff` folder.
    LayerDiff { layer_dir: String },
    /// `<data-root>/overlay2/<layer>/merged` or below it: dockerd's overlay of a snapshot with
    /// parents. `merged` is the mount point dockerd made.
    LayerMerged { merged: String },
    /// `<data-root>/tmp/buildkit-mount<N>` or below it: BuildKit's bind mount of a snapshot
    /// (a `diff` folder or a `merged` overlay), made to bind a sub folder of it.
    TempMount { mount_point: String },
    /// `<data-root>/tmp/buildkit-secrets<N>/<file>`: a secret, in a tmpfs of its own.
    Secret { tmpfs: String },
}

/// Which build-step source `path` is for the data root `data_root`, or `None` when it is none
/// of them (then the ordinary bind rules decide).
pub fn build_step_source(path: &str, data_root: &str) -> Option<BuildSource> {
    if !path.starts_with('/') || !data_root.starts_with('/') {
        return None;
    }
    let path = normalize_path(path);
    let root = trimmed(data_root);
    if let Some(name) = path.strip_prefix(&format!("{root}/buildkit/executor/")) {
        // Only the two files BuildKit writes for steps; the steps' bundles and rootfs folders
        // next to them belong to other steps.
        let ok = name == "resolv.conf" || name.strip_prefix("hosts.").is_some_and(plain_component);
        return ok.then_some(BuildSource::ExecutorFile);
    }
    if let Some(rest) = path.strip_prefix(&format!("{root}/tmp/")) {
        let mut parts = rest.splitn(3, '/');
        let (folder, below) = (parts.next()?, parts.next());
        let made_by_buildkit = |prefix: &str| {
            folder
                .strip_prefix(prefix)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        };
        let dir = format!("{root}/tmp/{folder}");
        if made_by_buildkit("buildkit-mount") {
            return Some(BuildSource::TempMount { mount_point: dir });
        }
        // The secret file itself, nothing deeper (BuildKit writes one file per secret).
        if made_by_buildkit("buildkit-secrets")
            && below.is_some_and(plain_component)
            && parts.next().is_none()
        {
            return Some(BuildSource::Secret { tmpfs: dir });
        }
        return None;
    }
    let rest = path.strip_prefix(&format!("{root}/overlay2/"))?;
    let mut parts = rest.splitn(3, '/');
    let (layer, part) = (parts.next()?, parts.next()?);
    // `l/` holds dockerd's short-name symlinks, not layers.
    if !plain_component(layer) || layer == "l" {
        return None;
    }
    let dir = format!("{root}/overlay2/{layer}/{part}");
    match part {
        "diff" => Some(BuildSource::LayerDiff { layer_dir: dir }),
        "merged" => Some(BuildSource::LayerMerged { merged: dir }),
        _ => None,
    }
}

/// For the mount `mount_id` (from `/proc/self/mountinfo` text), which must be dockerd's overlay
/// on `merged`: the folders it is made of (every `lowerdir`, `upperdir`, `workdir`, relative ones
/// resolved against `<data-root>/overlay2`, as dockerd's short names are), each of which must lie
/// in `<data-root>/overlay2/`. The runtime then opens each (dockerd's `l/` names are symlinks) and
/// checks the folder reached is in that folder and on the data root's mount. An error names what
/// is wrong: another filesystem type, another mount point, a layer outside the data root.
pub fn snapshot_overlay_dirs(
    mountinfo: &str,
    mount_id: u64,
    merged: &str,
    data_root: &str,
) -> Result<Vec<String>, String> {
    let overlay2 = format!("{}/overlay2", trimmed(data_root));
    let all = mounts(mountinfo);
    let m = find(&all, mount_id, merged)?;
    if m.fstype != "overlay" {
        return Err(format!("{merged} is not an overlay mount"));
    }
    // dockerd mounts the overlay itself on `merged`; a bind of some other overlay (or of a sub
    // folder of one) there is not dockerd's layer.
    if m.root != "/" || m.point != merged {
        return Err(format!(
            "{merged} is not the overlay mounted there by dockerd"
        ));
    }
    let mut dirs = Vec::new();
    for opt in m.options.split(',') {
        let Some((key, value)) = opt.split_once('=') else {
            continue;
        };
        let values: Vec<&str> = match key {
            "lowerdir" => value.split(':').collect(),
            "upperdir" | "workdir" => vec![value],
            _ => continue,
        };
        for v in values {
            let v = unescape_mountinfo(v);
            // Escaped separators would make the option's text ambiguous; dockerd never writes
            // them.
            if v.is_empty() || v.contains('\\') {
                return Err(format!("{merged}: unexpected overlay layer {v:?}"));
            }
            let abs = if v.starts_with('/') {
                normalize_path(&v)
            } else {
                normalize_path(&format!("{overlay2}/{v}"))
            };
            let inside = abs
                .strip_prefix(&format!("{overlay2}/"))
                .is_some_and(|r| !r.is_empty());
            if !inside {
                return Err(format!(
                    "{merged}: overlay layer {abs} is outside the data root's overlay2 folder"
                ));
            }
            dirs.push(abs);
        }
    }
    if dirs.is_empty() {
        return Err(format!("{merged}: overlay mount without layers"));
    }
    Ok(dirs)
}

/// One line of `/proc/self/mountinfo`, with the filesystem's own options (which
/// `volume_data::MountEntry` does not keep).
#[derive(Debug)]
struct Line {
    id: u64,
    /// `major:minor`: two mounts with the same one show the same filesystem.
    dev: String,
    root: String,
    point: String,
    fstype: String,
    options: String,
}

fn mounts(text: &str) -> Vec<Line> {
    text.lines()
        .filter_map(|l| {
            // The optional fields (shared:N, ...) vary in number; " - " ends them.
            let (head, tail) = l.split_once(" - ")?;
            let f: Vec<&str> = head.split(' ').collect();
            let g: Vec<&str> = tail.split(' ').collect();
            Some(Line {
                id: f.first()?.parse().ok()?,
                dev: f.get(2)?.to_string(),
                root: unescape_mountinfo(f.get(3)?),
                point: unescape_mountinfo(f.get(4)?),
                fstype: unescape_mountinfo(g.first()?),
                options: g.get(2).copied().unwrap_or_default().to_string(),
            })
        })
        .collect()
}

fn find<'a>(all: &'a [Line], id: u64, what: &str) -> Result<&'a Line, String> {
    all.iter()
        .find(|m| m.id == id)
        .ok_or_else(|| format!("{what}: its mount {id} is not in mountinfo"))
}

/// What BuildKit's bind mount at `<data-root>/tmp/buildkit-mount<N>` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TempMountOrigin {
    /// A folder of the data root's filesystem, at this VM path (must be a layer's `diff`).
    Folder(String),
    /// dockerd's overlay mounted on `merged` (mount `mount_id`), to be checked with
    /// [`snapshot_overlay_dirs`].
    Merged { merged: String, mount_id: u64 },
}

/// For the mount `mount_id` the opened source lies on, which must be BuildKit's mount at
/// `mount_point`: what it shows. A bind of the data root's filesystem must show a layer's `diff`
/// folder (its mount root, relative to the filesystem, is turned into a VM path through the data
/// root's own mount `data_root_mount_id`); an overlay must be the one dockerd mounted on a
/// layer's `merged` folder. Anything else (a tmpfs, another disk, a bind of another folder of
/// the data disk) is an error naming it.
pub fn temp_mount_origin(
    mountinfo: &str,
    mount_id: u64,
    mount_point: &str,
    data_root: &str,
    data_root_mount_id: u64,
) -> Result<TempMountOrigin, String> {
    let all = mounts(mountinfo);
    let m = find(&all, mount_id, mount_point)?;
    if m.point != mount_point {
        return Err(format!("{mount_point} is not a mount of BuildKit's"));
    }
    let root = trimmed(data_root);
    let d = find(&all, data_root_mount_id, data_root)?;
    if m.dev == d.dev {
        // The data root's place in its filesystem: the data root mount's root plus the data
        // root's path below that mount's mount point.
        let below = if d.point == "/" {
            Some(root.as_str())
        } else {
            root.strip_prefix(d.point.trim_end_matches('/'))
        }
        .filter(|r| r.is_empty() || r.starts_with('/'))
        .ok_or_else(|| format!("{data_root} is not below its mount {}", d.point))?;
        let fs_root = normalize_path(&format!("{}/{below}", d.root));
        let fs_root = fs_root.trim_end_matches('/');
        let rel = if fs_root.is_empty() {
            Some(m.root.as_str())
        } else {
            m.root.strip_prefix(fs_root)
        }
        .filter(|r| r.starts_with('/'))
        .ok_or_else(|| format!("{mount_point} shows {} outside the data root", m.root))?;
        let vm = normalize_path(&format!("{root}{rel}"));
        return match build_step_source(&vm, data_root) {
            Some(BuildSource::LayerDiff { .. }) => Ok(TempMountOrigin::Folder(vm)),
            _ => Err(format!(
                "{mount_point} shows {vm}, not a layer's diff folder"
            )),
        };
    }
    if m.fstype == "overlay" {
        // A bind of dockerd's overlay shares its device number with it.
        let merged = all.iter().find(|o| {
            o.dev == m.dev
                && o.fstype == "overlay"
                && o.root == "/"
                && matches!(
                    build_step_source(&o.point, data_root),
                    Some(BuildSource::LayerMerged { ref merged }) if *merged == o.point
                )
        });
        if let Some(o) = merged {
            return Ok(TempMountOrigin::Merged {
                merged: o.point.clone(),
                mount_id: o.id,
            });
        }
    }
    Err(format!(
        "{mount_point} is a {} mount that is neither a layer folder nor dockerd's overlay",
        m.fstype
    ))
}

/// For the mount `mount_id` a secret file lies on: it must be a tmpfs mounted at `tmpfs` (whole,
/// root `/`) and nowhere else, a fresh one BuildKit made for the secret, not a bind of a VM
/// tmpfs such as `/run`.
pub fn check_secret_tmpfs(mountinfo: &str, mount_id: u64, tmpfs: &str) -> Result<(), String> {
    let all = mounts(mountinfo);
    let m = find(&all, mount_id, tmpfs)?;
    if m.fstype != "tmpfs" || m.root != "/" || m.point != tmpfs {
        return Err(format!("{tmpfs} is not a tmpfs mounted there"));
    }
    if all.iter().any(|o| o.dev == m.dev && o.id != m.id) {
        return Err(format!("{tmpfs} is a tmpfs also mounted elsewhere"));
    }
    Ok(())
}

/// Whether `path` (already resolved through symlinks) lies in the data root's overlay2 folder,
/// other than the short-name folder `l`.
pub fn in_overlay2(path: &str, data_root: &str) -> bool {
    let rest = normalize_path(path);
    let Some(rest) = rest.strip_prefix(&format!("{}/overlay2/", trimmed(data_root))) else {
        return false;
    };
    let first = rest.split('/').next().unwrap_or_default();
    plain_component(first) && first != "l"
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "/var/lib/docker";

    fn roots() -> Vec<String> {
        vec!["/var/lib/docker".into(), "/tmp/e2e/data/".into()]
    }

    #[test]
    fn only_buildkits_own_bundle_folder_makes_a_build_step() {
        let r = roots();
        assert_eq!(
            build_step_data_root("/var/lib/docker/buildkit/executor/abc", "abc", &r),
            Some(ROOT.to_string())
        );
        assert_eq!(
            build_step_data_root("/tmp/e2e/data/buildkit/executor/x1/", "x1", &r),
            Some("/tmp/e2e/data".to_string())
        );
        for (bundle, id) in [
            // Another id than the bundle's, another folder, or an unknown data root.
            ("/var/lib/docker/buildkit/executor/abc", "abd"),
            ("/var/lib/docker/buildkit/executor/abc/x", "abc"),
            ("/var/lib/docker/buildkit/abc", "abc"),
            ("/run/docker/containerd/abc", "abc"),
            (
                "/run/containerd/io.containerd.runtime.v2.task/moby/abc",
                "abc",
            ),
            ("/other/buildkit/executor/abc", "abc"),
            // Ids that are no single folder name.
            ("/var/lib/docker/buildkit/executor", ".."),
            ("/var/lib/docker/buildkit/executor/", ""),
            ("var/lib/docker/buildkit/executor/abc", "abc"),
        ] {
            assert_eq!(build_step_data_root(bundle, id, &r), None, "{bundle} {id}");
        }
        // `..` in the bundle path is resolved before comparing.
        assert_eq!(
            build_step_data_root("/var/lib/docker/x/../buildkit/executor/abc", "abc", &r),
            Some(ROOT.to_string())
        );
    }

    /// The bind rule: build-step sources pass only for a container the runtime proved to be a
    /// build step (`Policy::build_step`); the guard's view and ordinary containers keep B2.
    #[test]
    fn check_bind_source_accepts_build_sources_only_for_build_steps() {
        use crate::{check_bind_source, BindContext, BindKind, Policy};
        let mut p = Policy {
            engine_data_roots: vec![ROOT.into()],
            ..Policy::default()
        };
        let sources = [
            "/var/lib/docker/buildkit/executor/resolv.conf",
            "/var/lib/docker/buildkit/executor/hosts.abc",
            "/var/lib/docker/overlay2/abc/diff",
            "/var/lib/docker/overlay2/abc/merged/etc",
            "/var/lib/docker/tmp/buildkit-mount12/sub",
            "/var/lib/docker/tmp/buildkit-secrets34/s1",
        ];
        for src in sources {
            let e = check_bind_source(src, &p, &BindContext::default()).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("can't mount {src} because it's configured as a restricted host mount")
            );
        }
        p.build_step = Some(ROOT.into());
        for src in sources {
            assert_eq!(
                check_bind_source(src, &p, &BindContext::default()),
                Ok(BindKind::BuildStep),
                "{src}"
            );
        }
        // Still refused in a build step: the rest of the data root, VM paths, escapes, and the
        // engine's private paths (checked before any rule that allows).
        for src in [
            "/var/lib/docker",
            "/var/lib/docker/buildkit/executor/abc/rootfs",
            "/var/lib/docker/overlay2/abc/work",
            "/var/lib/docker/overlay2/abc/diff/../../../../etc",
            "/var/lib/docker/image/overlay2/repositories.json",
            "/etc",
            "/run/containerd/containerd.sock",
        ] {
            assert!(
                check_bind_source(src, &p, &BindContext::default()).is_err(),
                "{src}"
            );
        }
    }

    #[test]
    fn build_step_sources_by_path_shape() {
        use BuildSource::*;
        for (path, want) in [
            (
                "/var/lib/docker/buildkit/executor/resolv.conf",
                ExecutorFile,
            ),
            (
                "/var/lib/docker/buildkit/executor/hosts.rvxiucl7shm",
                ExecutorFile,
            ),
            (
                "/var/lib/docker/overlay2/16okddx4/diff",
                LayerDiff {
                    layer_dir: "/var/lib/docker/overlay2/16okddx4/diff".into(),
                },
            ),
            (
                "/var/lib/docker/overlay2/16okddx4/diff/sub/dir",
                LayerDiff {
                    layer_dir: "/var/lib/docker/overlay2/16okddx4/diff".into(),
                },
            ),
            (
                "/var/lib/docker/overlay2/abc/merged/src",
                LayerMerged {
                    merged: "/var/lib/docker/overlay2/abc/merged".into(),
                },
            ),
            (
                "/var/lib/docker//overlay2/./abc/merged",
                LayerMerged {
                    merged: "/var/lib/docker/overlay2/abc/merged".into(),
                },
            ),
        ] {
            assert_eq!(build_step_source(path, ROOT), Some(want), "{path}");
        }
        for path in [
            // BuildKit's own state and the other steps' bundles and root folders.
            "/var/lib/docker/buildkit",
            "/var/lib/docker/buildkit/executor",
            "/var/lib/docker/buildkit/executor/abc/rootfs",
            "/var/lib/docker/buildkit/executor/abc/config.json",
            "/var/lib/docker/buildkit/executor/hosts.",
            "/var/lib/docker/buildkit/executor/runc-log.json",
            "/var/lib/docker/buildkit/cache.db",
            "/var/lib/docker/buildkit/content/blobs",
            // Layer folders other than diff/merged, the short names, overlay2 itself.
            "/var/lib/docker/overlay2",
            "/var/lib/docker/overlay2/abc",
            "/var/lib/docker/overlay2/abc/work",
            "/var/lib/docker/overlay2/abc/link",
            "/var/lib/docker/overlay2/abc/lower",
            "/var/lib/docker/overlay2/l/XRGTKNXQK3ZGX5NRBWFMPYYMKE",
            "/var/lib/docker/overlay2/l/diff",
            // Escapes and other roots.
            "/var/lib/docker/overlay2/abc/diff/../../../../../etc",
            "/var/lib/docker/overlay2/../containers/x/hosts",
            "/var/lib/docker/buildkit/executor/../../volumes/v/_data",
            "/var/lib/docker/containers/abc/hosts",
            "/etc/resolv.conf",
            "/var/lib/docker-other/overlay2/abc/diff",
            "relative/overlay2/abc/diff",
        ] {
            assert_eq!(build_step_source(path, ROOT), None, "{path}");
        }
        assert_eq!(
            build_step_source("/buildkit/executor/resolv.conf", "/"),
            Some(ExecutorFile)
        );
    }

    #[test]
    fn buildkits_temporary_mounts_by_path_shape() {
        use BuildSource::*;
        let mount = || TempMount {
            mount_point: "/var/lib/docker/tmp/buildkit-mount668846578".into(),
        };
        assert_eq!(
            build_step_source("/var/lib/docker/tmp/buildkit-mount668846578", ROOT),
            Some(mount())
        );
        assert_eq!(
            build_step_source("/var/lib/docker/tmp/buildkit-mount668846578/sub/x", ROOT),
            Some(mount())
        );
        assert_eq!(
            build_step_source(
                "/var/lib/docker/tmp/buildkit-secrets2824088878/ldtxpqns3js3b",
                ROOT
            ),
            Some(Secret {
                tmpfs: "/var/lib/docker/tmp/buildkit-secrets2824088878".into()
            })
        );
        for path in [
            "/var/lib/docker/tmp",
            "/var/lib/docker/tmp/buildkit-mount",
            "/var/lib/docker/tmp/buildkit-mountx1",
            "/var/lib/docker/tmp/buildkit-mount1/../../../etc",
            "/var/lib/docker/tmp/other",
            "/var/lib/docker/tmp/docker-builder123",
            // The secret tmpfs itself, or deeper than its one file.
            "/var/lib/docker/tmp/buildkit-secrets1",
            "/var/lib/docker/tmp/buildkit-secrets1/a/b",
            "/var/lib/docker/tmp/buildkit-secrets/a",
            "/tmp/buildkit-secrets1/a",
            "/tmp/buildkit-mount1",
        ] {
            assert_eq!(build_step_source(path, ROOT), None, "{path}");
        }
    }

    const DATA_MOUNT: &str =
        "45 27 254:0 / /var/lib/docker rw,relatime shared:1 - ext4 /dev/vdb rw\n";

    #[test]
    fn a_temporary_mount_of_a_layer_folder_passes() {
        let point = "/var/lib/docker/tmp/buildkit-mount1";
        // The VM: the data disk mounted at the data root, so mount roots are relative to it.
        let text = format!(
            "{DATA_MOUNT}53 45 254:0 /overlay2/abc/diff {point} ro,relatime shared:1 - ext4 /dev/vdb rw\n"
        );
        assert_eq!(
            temp_mount_origin(&text, 53, point, ROOT, 45),
            Ok(TempMountOrigin::Folder(
                "/var/lib/docker/overlay2/abc/diff".into()
            ))
        );
        // This machine: the data root is a folder of the root filesystem, bound on itself.
        let root = "/tmp/bkx/data";
        let point = "/tmp/bkx/data/tmp/buildkit-mount2";
        let text = format!(
            "45 27 254:0 /tmp/bkx/data /tmp/bkx/data rw shared:1 - ext4 /dev/vda rw\n\
             53 45 254:0 /tmp/bkx/data/overlay2/96d/diff {point} ro shared:1 - ext4 /dev/vda rw\n"
        );
        assert_eq!(
            temp_mount_origin(&text, 53, point, root, 45),
            Ok(TempMountOrigin::Folder(
                "/tmp/bkx/data/overlay2/96d/diff".into()
            ))
        );
        // A bind of dockerd's overlay on a layer's merged folder.
        let text = "45 27 254:0 / /var/lib/docker rw - ext4 /dev/vdb rw\n\
             48 45 0:40 / /var/lib/docker/overlay2/abc/merged rw - overlay overlay rw,lowerdir=l/X\n\
             53 45 0:40 /etc /var/lib/docker/tmp/buildkit-mount3 rw - overlay overlay rw,lowerdir=l/X\n";
        assert_eq!(
            temp_mount_origin(text, 53, "/var/lib/docker/tmp/buildkit-mount3", ROOT, 45),
            Ok(TempMountOrigin::Merged {
                merged: "/var/lib/docker/overlay2/abc/merged".into(),
                mount_id: 48
            })
        );
    }

    #[test]
    fn temporary_mounts_of_anything_else_are_refused() {
        let point = "/var/lib/docker/tmp/buildkit-mount1";
        for (line, why) in [
            // Another folder of the data disk, a layer's work folder, the data root itself.
            (
                format!("53 45 254:0 /containers/x {point} rw - ext4 /dev/vdb rw"),
                "not a layer's diff",
            ),
            (
                format!("53 45 254:0 /overlay2/abc/work {point} rw - ext4 /dev/vdb rw"),
                "not a layer's diff",
            ),
            (
                format!("53 45 254:0 / {point} rw - ext4 /dev/vdb rw"),
                "not a layer's diff",
            ),
            // Another disk, a tmpfs, an overlay that is not on a layer's merged folder.
            (
                format!("53 45 254:1 /etc {point} rw - ext4 /dev/vda rw"),
                "neither",
            ),
            (
                format!("53 45 0:50 / {point} rw - tmpfs tmpfs rw"),
                "neither",
            ),
            (
                format!("53 45 0:41 / {point} rw - overlay overlay rw"),
                "neither",
            ),
            // Not mounted at BuildKit's folder (a plain folder of something mounted above).
            (
                "53 45 254:0 /overlay2/abc/diff /var/lib/docker/tmp rw - ext4 /dev/vdb rw"
                    .to_string(),
                "not a mount of BuildKit's",
            ),
        ] {
            let text = format!(
                "45 27 254:0 / /var/lib/docker rw - ext4 /dev/vdb rw\n\
                 60 45 0:41 / /var/lib/docker/overlay2/abc/other rw - overlay overlay rw\n{line}\n"
            );
            let e = temp_mount_origin(&text, 53, point, ROOT, 45).unwrap_err();
            assert!(e.contains(why), "{line}: {e}");
        }
    }

    #[test]
    fn secrets_need_a_fresh_tmpfs_of_their_own() {
        let dir = "/var/lib/docker/tmp/buildkit-secrets1";
        let fresh = format!("50 45 0:42 / {dir} rw,nosuid - tmpfs tmpfs rw\n");
        check_secret_tmpfs(&fresh, 50, dir).unwrap();
        for (text, why) in [
            // The VM's /run tmpfs bound there.
            (
                format!("30 1 0:42 / /run rw - tmpfs tmpfs rw\n50 45 0:42 / {dir} rw - tmpfs tmpfs rw\n"),
                "also mounted elsewhere",
            ),
            (format!("50 45 0:42 /x {dir} rw - tmpfs tmpfs rw\n"), "not a tmpfs mounted there"),
            (format!("50 45 254:0 / {dir} rw - ext4 /dev/vdb rw\n"), "not a tmpfs mounted there"),
            ("50 45 0:42 / /var/lib/docker/tmp rw - tmpfs tmpfs rw\n".to_string(), "not a tmpfs mounted there"),
            (fresh.clone(), "not in mountinfo"),
        ] {
            let id = if why == "not in mountinfo" { 51 } else { 50 };
            let e = check_secret_tmpfs(&text, id, dir).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    fn line(id: u64, root: &str, point: &str, fstype: &str, opts: &str) -> String {
        format!("{id} 45 0:40 {root} {point} rw,relatime shared:2 - {fstype} overlay {opts}\n")
    }

    #[test]
    fn dockers_layer_overlay_passes_with_its_folders() {
        let merged = "/var/lib/docker/overlay2/abc/merged";
        let text = format!(
            "45 27 254:0 / /var/lib/docker rw - ext4 /dev/vda rw\n{}",
            line(
                48,
                "/",
                merged,
                "overlay",
                "rw,lowerdir=/var/lib/docker/overlay2/l/XRG:l/ABC,\
                 upperdir=/var/lib/docker/overlay2/abc/diff,\
                 workdir=/var/lib/docker/overlay2/abc/work,uuid=on",
            )
        );
        assert_eq!(
            snapshot_overlay_dirs(&text, 48, merged, ROOT).unwrap(),
            vec![
                "/var/lib/docker/overlay2/l/XRG",
                "/var/lib/docker/overlay2/l/ABC",
                "/var/lib/docker/overlay2/abc/diff",
                "/var/lib/docker/overlay2/abc/work",
            ]
        );
    }

    #[test]
    fn other_mounts_on_merged_are_refused() {
        let merged = "/var/lib/docker/overlay2/abc/merged";
        let good = "lowerdir=/var/lib/docker/overlay2/l/X,upperdir=/var/lib/docker/overlay2/abc/diff,workdir=/var/lib/docker/overlay2/abc/work";
        for (text, why) in [
            (line(48, "/", merged, "ext4", "rw"), "not an overlay"),
            (
                line(48, "/sub", merged, "overlay", good),
                "not the overlay mounted",
            ),
            (
                line(48, "/", "/var/lib/docker/overlay2/abc", "overlay", good),
                "not the overlay mounted",
            ),
            (
                line(
                    48,
                    "/",
                    merged,
                    "overlay",
                    "lowerdir=/etc,upperdir=/var/lib/docker/overlay2/abc/diff",
                ),
                "outside",
            ),
            (
                line(
                    48,
                    "/",
                    merged,
                    "overlay",
                    "lowerdir=/var/lib/docker/overlay2/l/X:../../../etc",
                ),
                "outside",
            ),
            (
                line(
                    48,
                    "/",
                    merged,
                    "overlay",
                    "lowerdir=/var/lib/docker/overlay2/l/X,upperdir=/run/x",
                ),
                "outside",
            ),
            (
                line(
                    48,
                    "/",
                    merged,
                    "overlay",
                    "lowerdir=/var/lib/docker/overlay2",
                ),
                "outside",
            ),
            (
                line(48, "/", merged, "overlay", "rw,xino=off"),
                "without layers",
            ),
            (line(49, "/", merged, "overlay", good), "not in mountinfo"),
        ] {
            let e = snapshot_overlay_dirs(&text, 48, merged, ROOT).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn resolved_layer_folders_must_be_in_overlay2() {
        assert!(in_overlay2("/var/lib/docker/overlay2/abc/diff", ROOT));
        assert!(in_overlay2("/var/lib/docker/overlay2/abc/work", ROOT));
        for p in [
            "/var/lib/docker/overlay2",
            "/var/lib/docker/overlay2/l/X",
            "/var/lib/docker/overlay2/abc/../../containers",
            "/var/lib/docker/volumes/v/_data",
            "/etc",
        ] {
            assert!(!in_overlay2(p, ROOT), "{p}");
        }
    }
}
