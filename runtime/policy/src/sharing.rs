//! Namespace sharing between containers (SPEC U2, A6): `--network/--pid/--ipc container:X`,
//! compose's `network_mode: service:x` and the containers of one pod.
//!
//! The runtime identifies every namespace a spec joins by its nsfs device and inode and by the
//! user namespace that owns it (`NS_GET_USERNS`), and matches that owner against the user
//! namespaces of running eci containers. These rules turn those facts into the container's user
//! namespace plan and the list of containers whose engine files it may bind; they never look at
//! the path text, which says nothing once a pid has been reused.
//!
//! Why joining the owner's user namespace: a namespace belongs to the user namespace that
//! created it, and the kernel only lets a process with CAP_SYS_ADMIN *there* mount `/proc` for a
//! pid namespace, sysfs for a network namespace or mqueue for an ipc namespace, or configure
//! them. A container in a user namespace of its own could join another container's namespaces
//! but not use them. So a container that shares an eci container's namespace joins that
//! container's user namespace too and shares its id range: the group is one isolation unit, and
//! its range stays exclusive against every other group (U2).

use crate::rules::IdRange;
use crate::PolicyError;

/// A namespace's identity: the nsfs device and inode (`stat` of `/proc/PID/ns/X`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NsId {
    pub dev: u64,
    pub ino: u64,
}

/// A container as the allocator and the state folder name it: id and state root (`--root`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ContainerRef {
    pub id: String,
    pub root: String,
}

impl std::fmt::Display for ContainerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.id)
    }
}

/// Running eci containers whose user namespace owns a joined namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The owning user namespace.
    pub userns: NsId,
    /// The id range every member shares (the uid/gid map of that user namespace).
    pub range: IdRange,
    /// A running member: the allocator adds the new container to the range this one holds.
    pub member: ContainerRef,
    /// Members whose own namespace of the joined kind *is* the joined namespace (same device
    /// and inode): dockerd binds their engine files into the joining container.
    pub same_namespace: Vec<String>,
}

/// Who owns a namespace the spec joins, as the runtime found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NsOwner {
    /// It is the VM's own namespace (the VM init's): refused (SPEC A6).
    VmItself,
    /// Owned by the VM's user namespace without being the VM's own, e.g. a CRI pod's network
    /// namespace that containerd pinned under /var/run/netns. Joined with no power over it.
    Vm,
    /// Owned by the user namespace of running eci containers.
    Group(Group),
    /// Owned by a user namespace that no running eci container holds (a stopped container's
    /// pinned namespace, a nested container's, any other process's).
    Unknown,
}

/// One namespace the spec joins by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedNamespace {
    /// OCI kind: `pid`, `network`, `ipc` or `uts`.
    pub kind: String,
    /// The path as the spec gave it, for messages only.
    pub path: String,
    pub owner: NsOwner,
}

/// The container's user namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserNamespacePlan {
    /// A new one with an exclusive range of its own (U1).
    Own,
    /// The group's: no new range, the group's uid/gid map (U2).
    Join {
        userns: NsId,
        range: IdRange,
        member: ContainerRef,
    },
}

/// A container whose engine files (`<data-root>/containers/<id>/...`) the new container may
/// bind, because it shares that container's namespace of `kind` (SPEC B3): dockerd binds the
/// donor's resolv.conf, hosts and hostname for `--network container:X` and its shm folder for
/// `--ipc container:X`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Donor {
    pub kind: String,
    pub container_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharingPlan {
    pub user: UserNamespacePlan,
    pub donors: Vec<Donor>,
}

/// Decide the user namespace and the engine-file donors of a container from the namespaces its
/// spec joins (SPEC A6, U2, B3). Refused: the VM's own namespaces, a namespace whose owner no
/// running eci container holds, namespaces of two different groups, and a pid namespace the
/// VM's user namespace owns (the container could not mount its own /proc there).
pub fn plan_sharing(joined: &[JoinedNamespace]) -> Result<SharingPlan, PolicyError> {
    let mut group: Option<(&JoinedNamespace, &Group)> = None;
    let mut donors = Vec::new();
    for j in joined {
        match &j.owner {
            NsOwner::VmItself => {
                return Err(PolicyError::HostNamespace {
                    kind: j.kind.clone(),
                })
            }
            NsOwner::Unknown => {
                return Err(PolicyError::UnknownNamespaceOwner {
                    kind: j.kind.clone(),
                    path: j.path.clone(),
                })
            }
            NsOwner::Vm if j.kind == "pid" => {
                return Err(PolicyError::VmOwnedPidNamespace {
                    path: j.path.clone(),
                })
            }
            NsOwner::Vm => {}
            NsOwner::Group(g) => {
                if let Some((first, fg)) = group {
                    if fg.userns != g.userns {
                        return Err(PolicyError::TwoNamespaceGroups {
                            first: format!("{} namespace {}", first.kind, first.path),
                            second: format!("{} namespace {}", j.kind, j.path),
                        });
                    }
                } else {
                    group = Some((j, g));
                }
                for id in &g.same_namespace {
                    let d = Donor {
                        kind: j.kind.clone(),
                        container_id: id.clone(),
                    };
                    if !donors.contains(&d) {
                        donors.push(d);
                    }
                }
            }
        }
    }
    let user = match group {
        None => UserNamespacePlan::Own,
        Some((_, g)) => UserNamespacePlan::Join {
            userns: g.userns,
            range: g.range,
            member: g.member.clone(),
        },
    };
    Ok(SharingPlan { user, donors })
}

/// The files of a donor's engine folder (relative to `<data-root>/containers/<id>`) that dockerd
/// binds into a container sharing its namespace of `kind`, and whether folders below count.
pub fn donor_files(kind: &str) -> &'static [(&'static str, bool)] {
    match kind {
        "network" => &[
            ("resolv.conf", false),
            ("hosts", false),
            ("hostname", false),
        ],
        "ipc" => &[("mounts/shm", true)],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: IdRange = IdRange {
        start: 165_536,
        size: 65_536,
    };
    const UA: NsId = NsId { dev: 4, ino: 100 };

    fn group(userns: NsId, same: &[&str]) -> NsOwner {
        NsOwner::Group(Group {
            userns,
            range: R,
            member: ContainerRef {
                id: "a".into(),
                root: "/run/r".into(),
            },
            same_namespace: same.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn j(kind: &str, owner: NsOwner) -> JoinedNamespace {
        JoinedNamespace {
            kind: kind.into(),
            path: format!("/proc/42/ns/{kind}"),
            owner,
        }
    }

    #[test]
    fn no_joined_namespace_means_an_own_user_namespace() {
        let p = plan_sharing(&[]).unwrap();
        assert_eq!(p.user, UserNamespacePlan::Own);
        assert!(p.donors.is_empty());
    }

    #[test]
    fn a_containers_namespace_joins_its_user_namespace_and_range() {
        let p =
            plan_sharing(&[j("network", group(UA, &["a"])), j("ipc", group(UA, &["a"]))]).unwrap();
        assert_eq!(
            p.user,
            UserNamespacePlan::Join {
                userns: UA,
                range: R,
                member: ContainerRef {
                    id: "a".into(),
                    root: "/run/r".into()
                }
            }
        );
        assert_eq!(
            p.donors,
            vec![
                Donor {
                    kind: "network".into(),
                    container_id: "a".into()
                },
                Donor {
                    kind: "ipc".into(),
                    container_id: "a".into()
                }
            ]
        );
        // --pid container:a shares the user namespace but binds none of a's files; a member
        // that does not hold the joined namespace itself is no donor.
        let p = plan_sharing(&[j("pid", group(UA, &[]))]).unwrap();
        assert!(matches!(p.user, UserNamespacePlan::Join { .. }));
        assert!(p.donors.is_empty());
    }

    #[test]
    fn a_pod_network_namespace_of_the_vm_keeps_an_own_user_namespace() {
        let p = plan_sharing(&[j("network", NsOwner::Vm), j("uts", NsOwner::Vm)]).unwrap();
        assert_eq!(p.user, UserNamespacePlan::Own);
        assert!(p.donors.is_empty());
        // A pod's app container: the pause container's ipc/uts, the pinned network namespace.
        let p = plan_sharing(&[j("network", NsOwner::Vm), j("ipc", group(UA, &["a"]))]).unwrap();
        assert!(matches!(p.user, UserNamespacePlan::Join { .. }));
    }

    #[test]
    fn refusals_name_the_namespace_and_the_fix() {
        let e = plan_sharing(&[j("network", NsOwner::VmItself)]).unwrap_err();
        assert_eq!(
            e,
            PolicyError::HostNamespace {
                kind: "network".into()
            }
        );
        let e = plan_sharing(&[j("ipc", NsOwner::Unknown)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/proc/42/ns/ipc") && e.contains("--ipc container:"),
            "{e}"
        );
        let e = plan_sharing(&[j("pid", NsOwner::Vm)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/proc/42/ns/pid") && e.contains("--pid container:"),
            "{e}"
        );
        let other = NsId { dev: 4, ino: 200 };
        let e = plan_sharing(&[
            j("network", group(UA, &["a"])),
            j("pid", group(other, &["b"])),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("network namespace /proc/42/ns/network")
                && e.contains("pid namespace /proc/42/ns/pid"),
            "{e}"
        );
    }

    #[test]
    fn donors_bind_only_what_dockerd_shares_per_kind() {
        assert_eq!(donor_files("network").len(), 3);
        assert_eq!(donor_files("ipc"), &[("mounts/shm", true)]);
        assert!(donor_files("pid").is_empty() && donor_files("uts").is_empty());
    }
}
