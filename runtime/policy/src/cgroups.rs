//! Where a container's cgroup may be (SPEC P5): `linux.cgroupsPath` as a folder of every
//! hierarchy, checked before the runtime creates, joins or (on a failed create) empties it.
//!
//! The runtime creates the folder below each hierarchy's mount point and writes the
//! container's pids into it; on a failed create it kills every process in it. A spec could
//! otherwise name `../../..` (a folder outside the hierarchy), the VM's own services'
//! cgroups, or another container's cgroup (whose processes a failed create would kill, and
//! whose limits the new container would share). So the path must be below an allowed parent,
//! never contain `..`, and (checked by the runtime, which sees the hierarchy) name no cgroup
//! that already holds processes.

use crate::PolicyError;

/// The folder, relative to each hierarchy's root and starting with `/`, for a spec's
/// `cgroupsPath`. With `systemd` (runc's `--systemd-cgroup`), `slice:prefix:name` becomes
/// `/<slice folders>/prefix-name.scope`, with nested slices expanded as systemd does
/// (`kubepods-besteffort.slice` lies in `kubepods.slice`); an empty slice is `system.slice`.
/// No `cgroupsPath` gives `/eci/<id>`. The folder is not checked here: see
/// [`check_cgroup_folder`].
pub fn cgroup_folder(spec_path: Option<&str>, systemd: bool, id: &str) -> String {
    let p = spec_path.unwrap_or("");
    if systemd && p.split(':').count() == 3 {
        let parts: Vec<&str> = p.split(':').collect();
        let slice = if parts[0].is_empty() {
            "system.slice"
        } else {
            parts[0]
        };
        return format!("{}/{}-{}.scope", slice_folder(slice), parts[1], parts[2]);
    }
    if p.is_empty() {
        return format!("/eci/{id}");
    }
    if p.starts_with('/') {
        p.to_string()
    } else {
        format!("/{p}")
    }
}

/// systemd's folder for a slice: `a-b-c.slice` is `/a.slice/a-b.slice/a-b-c.slice`.
fn slice_folder(slice: &str) -> String {
    let base = slice.strip_suffix(".slice").unwrap_or(slice);
    let mut path = String::new();
    let mut acc = String::new();
    for comp in base.split('-') {
        if !acc.is_empty() {
            acc.push('-');
        }
        acc.push_str(comp);
        path.push_str(&format!("/{acc}.slice"));
    }
    path
}

/// The folder an entry of `eciRunc.cgroupParents` stands for: a path (`/docker`) as written, a
/// systemd slice name (`system.slice`, `kubepods-burstable.slice`) as systemd lays it out.
/// `Err` says why the entry is unusable (for the policy file's error message).
pub fn parent_folder(parent: &str) -> Result<String, &'static str> {
    let folder = if parent.starts_with('/') {
        parent.to_string()
    } else if parent.ends_with(".slice") && !parent.contains('/') {
        slice_folder(parent)
    } else {
        return Err("is neither an absolute cgroup folder (/docker) nor a systemd slice name (system.slice)");
    };
    if folder.split('/').any(|c| c == "..") {
        return Err("contains \"..\"");
    }
    let parts = components(&folder);
    if parts.is_empty() {
        return Err("is the root cgroup, which holds the VM's own services");
    }
    Ok(format!("/{}", parts.join("/")))
}

fn components(path: &str) -> Vec<&str> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect()
}

/// The folders strictly between the (longest) allowed parent that holds `folder` and `folder`
/// itself, e.g. `/docker/A` for `/docker/A/B` under `/docker`. The runtime refuses a container
/// whose cgroup would nest inside one of them that belongs to another container or holds
/// processes: that container could move the new one's processes into its own cgroup, freeze or
/// kill them (a review found `--cgroup-parent=/docker/<id of A>` did exactly that).
pub fn intermediate_folders(folder: &str, parents: &[String]) -> Vec<String> {
    let parts = components(folder);
    let depth = parents
        .iter()
        .filter_map(|p| parent_folder(p).ok())
        .map(|p| components(&p).len())
        .filter(|&n| n < parts.len())
        .filter(|&n| {
            parents
                .iter()
                .filter_map(|p| parent_folder(p).ok())
                .any(|p| {
                    let pp = components(&p);
                    pp.len() == n && parts[..n] == pp[..]
                })
        })
        .max();
    let Some(depth) = depth else {
        return Vec::new();
    };
    (depth + 1..parts.len())
        .map(|i| format!("/{}", parts[..i].join("/")))
        .collect()
}

/// Refuse a cgroup folder (from [`cgroup_folder`]) that has a `..` component or does not lie
/// strictly below one of `parents` (`eciRunc.cgroupParents`; entries that are not usable allow
/// nothing). `spec_path` is the spec's `cgroupsPath` as written, for the message.
pub fn check_cgroup_folder(
    folder: &str,
    spec_path: &str,
    parents: &[String],
) -> Result<(), PolicyError> {
    if folder.split('/').any(|c| c == "..") {
        return Err(PolicyError::CgroupPathDots(spec_path.to_string()));
    }
    let parts = components(folder);
    let inside = parents.iter().any(|parent| {
        let Ok(p) = parent_folder(parent) else {
            return false;
        };
        let pp = components(&p);
        if parts.len() <= pp.len() || parts[..pp.len()] != pp[..] {
            return false;
        }
        // Below a slice, only what the systemd driver makes: nested slices, then the
        // container's scope. A slice also holds the VM's services (`containerd.service`).
        let below = &parts[pp.len()..];
        let (last, middle) = below.split_last().expect("below is not empty");
        !parent.ends_with(".slice")
            || (last.ends_with(".scope") && middle.iter().all(|c| c.ends_with(".slice")))
    });
    if inside {
        Ok(())
    } else {
        Err(PolicyError::CgroupOutsideParents {
            path: spec_path.to_string(),
            parents: parents.join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_CGROUP_PARENTS;

    #[test]
    fn folders_between_the_parent_and_the_cgroup_are_listed() {
        let parents = vec!["/docker".to_string(), "/kubepods".to_string()];
        assert_eq!(
            intermediate_folders("/docker/c1", &parents),
            Vec::<String>::new()
        );
        assert_eq!(
            intermediate_folders("/docker/A/B", &parents),
            vec!["/docker/A"]
        );
        assert_eq!(
            intermediate_folders("/kubepods/burstable/pod1/c2", &parents),
            vec!["/kubepods/burstable", "/kubepods/burstable/pod1"]
        );
        assert_eq!(
            intermediate_folders("/elsewhere/x", &parents),
            Vec::<String>::new()
        );
    }

    fn defaults() -> Vec<String> {
        DEFAULT_CGROUP_PARENTS
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn check(spec: &str, systemd: bool) -> Result<(), PolicyError> {
        check_cgroup_folder(
            &cgroup_folder(Some(spec), systemd, "id1"),
            spec,
            &defaults(),
        )
    }

    #[test]
    fn systemd_paths_expand_like_systemd() {
        assert_eq!(
            cgroup_folder(Some("system.slice:docker:abc"), true, "x"),
            "/system.slice/docker-abc.scope"
        );
        assert_eq!(
            cgroup_folder(
                Some("kubepods-besteffort-pod12.slice:cri-containerd:abc"),
                true,
                "x"
            ),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/cri-containerd-abc.scope"
        );
        assert_eq!(
            cgroup_folder(Some(":docker:abc"), true, "x"),
            "/system.slice/docker-abc.scope"
        );
        assert_eq!(cgroup_folder(None, false, "abc"), "/eci/abc");
        assert_eq!(cgroup_folder(Some(""), true, "abc"), "/eci/abc");
        assert_eq!(cgroup_folder(Some("docker/abc"), false, "x"), "/docker/abc");
        // Without --systemd-cgroup the colon form is a plain (odd) folder name.
        assert_eq!(
            cgroup_folder(Some("system.slice:docker:abc"), false, "x"),
            "/system.slice:docker:abc"
        );
    }

    /// What dockerd and containerd's CRI plugin really send passes with the defaults.
    #[test]
    fn engine_paths_pass_with_the_defaults() {
        for (spec, systemd) in [
            ("/docker/0123abcd", false),
            ("/docker/buildkit/xyz", false),
            ("system.slice:docker:0123abcd", true),
            ("/kubepods/besteffort/pod1234/abcd", false),
            ("/kubepods/pod1234/abcd", false),
            ("kubepods-burstable-pod1234.slice:cri-containerd:abcd", true),
            ("kubepods-pod1234.slice:cri-containerd:abcd", true),
            ("/eci/c1", false),
        ] {
            check(spec, systemd).unwrap_or_else(|e| panic!("{spec}: {e}"));
        }
        // No cgroupsPath: the runtime's own default.
        check_cgroup_folder(&cgroup_folder(None, false, "c1"), "", &defaults()).unwrap();
    }

    #[test]
    fn dot_dot_is_refused_wherever_it_is() {
        for (spec, systemd) in [
            ("/docker/../../../etc", false),
            ("/docker/..", false),
            ("../x", false),
            ("/docker/a/../../init.scope", false),
            ("system.slice:docker:../../x", true),
            ("system.slice:..:x", false),
        ] {
            let e = check(spec, systemd).unwrap_err();
            // The colon form without systemd is outside the parents; with `..` as a
            // component everything else is the dot-dot refusal.
            if spec.split('/').any(|c| c == "..") || systemd {
                assert_eq!(e, PolicyError::CgroupPathDots(spec.into()), "{spec}");
                let m = e.to_string();
                assert!(m.contains("linux.cgroupsPath") && m.contains(".."), "{m}");
            } else {
                assert!(
                    matches!(e, PolicyError::CgroupOutsideParents { .. }),
                    "{spec}"
                );
            }
        }
        // A name merely containing dots is fine.
        check("/docker/a..b", false).unwrap();
    }

    #[test]
    fn folders_outside_the_parents_are_refused() {
        for (spec, systemd) in [
            ("/", false),
            ("/docker", false),
            ("/docker2/x", false),
            ("/dockerx", false),
            ("/system.slice/containerd.service", false),
            ("/system.slice/docker.service/x.scope", false),
            ("system.slice:docker:abc/d", true),
            ("/init.scope", false),
            ("/user.slice/user-0.slice", false),
            ("user.slice:docker:x", true),
            ("/eci", false),
            ("/kubepods", false),
        ] {
            let e = check(spec, systemd).unwrap_err();
            assert!(
                matches!(e, PolicyError::CgroupOutsideParents { .. }),
                "{spec}: {e:?}"
            );
            let m = e.to_string();
            assert!(m.contains("eciRunc.cgroupParents"), "{m}");
            assert!(m.contains("/docker") && m.contains("kubepods.slice"), "{m}");
        }
    }

    #[test]
    fn cgroup_refusals_cite_p5() {
        for e in [
            PolicyError::CgroupPathDots("/x/..".into()),
            PolicyError::CgroupOutsideParents {
                path: "/x".into(),
                parents: "/docker".into(),
            },
            PolicyError::CgroupInUse {
                path: "/docker/x".into(),
                folder: "/sys/fs/cgroup/docker/x".into(),
                pids: "pid 1".into(),
            },
        ] {
            assert_eq!(e.rules(), &["P5"], "{e}");
        }
    }

    #[test]
    fn parent_entries_are_validated() {
        assert_eq!(parent_folder("/docker/").unwrap(), "/docker");
        assert_eq!(parent_folder("system.slice").unwrap(), "/system.slice");
        assert_eq!(
            parent_folder("kubepods-burstable.slice").unwrap(),
            "/kubepods.slice/kubepods-burstable.slice"
        );
        for bad in ["/", "", "docker", "/a/../b", "x/y.slice"] {
            assert!(parent_folder(bad).is_err(), "{bad}");
        }
        // An unusable entry allows nothing, so "/" never opens the whole tree.
        let e = check_cgroup_folder("/x/y", "/x/y", &["/".to_string()]).unwrap_err();
        assert!(matches!(e, PolicyError::CgroupOutsideParents { .. }));
    }
}
