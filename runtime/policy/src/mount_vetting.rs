//! Mount vetting (SPEC M1-M4, issue 10): what a container may do with the mount calls the
//! seccomp filter traps and the supervisor answers.
//!
//! The supervisor reads the call's arguments once, resolves its paths inside the caller's root
//! and gathers facts about what they reached ([`Target`], [`Source`]); [`decide`] turns the call
//! and the facts into a [`Verdict`]: an [`Action`] the supervisor performs on the caller's
//! behalf, or a [`Refusal`] with the errno the caller gets. Nothing here touches the system.
//!
//! The rules:
//! - A mount the container starts with (its rootfs, /proc, /sys, /dev, binds, and every mask
//!   and read-only path eci laid over them) is *protected*. SPEC M2 forbids what would *reveal*
//!   what a protected mount hides or undo a restriction it carries, so these are refused with
//!   EPERM: unmounting, detaching or moving it; a non-recursive bind of a protected proc or
//!   sysfs (the copy would not carry the masks laid on submounts); a remount that drops one of
//!   its restrictions; a superblock remount with options (the superblock may be shared with
//!   the VM); a new proc or sysfs, or a move, on top of it.
//! - Covering reveals nothing, so it is allowed on a protected mount (issue 10: Docker-in-Docker's
//!   inner runc lays its own masks on the /proc the supervisor made):
//!   - a new tmpfs (or other filesystem the container may make) on top of a protected mount
//!     or mask adds a layer; the kernel shows the new layer and what is under it stays hidden.
//!     Unmounting that layer again only re-exposes the protected mount under it, which was the
//!     container's view before, so covers are not protected themselves.
//!   - a bind on top of a protected mount, of anything inside the caller's root except a
//!     protected kernel view without its masks: the source is already visible to the caller,
//!     so the cover shows nothing new, and hides the protected mount below it.
//!   - a recursive bind (`MS_BIND|MS_REC`) of a protected path, onto itself or elsewhere: the
//!     recursive copy carries every mask that lies on the source's submounts. The copies (the
//!     top and every submount the copy brought) join the protected mounts, since unmounting a
//!     mask inside the copy would reveal what it hides.
//!   - a remount (bind remount, or a plain remount without filesystem options, done as a
//!     per-mount change) of a protected mount whose requested read-only, nosuid, nodev,
//!     noexec, nodiratime, nosymfollow and atime settings include every restriction the mount
//!     has now (read from the helper's view with statvfs): it can only restrict further.
//! - Propagation changes stay allowed on every mount: the container's mount namespace is its
//!   own, so making `/` shared (systemd does) changes what travels between the container's own
//!   mounts only.
//! - New filesystems the container may make itself (SPEC M3): tmpfs, overlay, devpts, mqueue,
//!   cgroup2 and ramfs (systemd's credentials, SPEC P9), made with the caller's user namespace
//!   and credentials inside its namespaces.
//!   Filesystems that show or change the whole VM (debugfs, tracefs, securityfs, bpf, configfs,
//!   pstore, efivarfs, fusectl, binfmt_misc) and every block-device filesystem are refused (EPERM).
//!   A new proc or sysfs is made by the supervisor (VM root) for the caller's pid or network
//!   namespace and gets the masks of the container's first one before the container sees it
//!   ([`Powers::Supervisor`]).
//! - Binds copy a tree the caller can already reach inside its root; a non-recursive bind of a
//!   protected proc or sysfs mount is refused, since the copy would not carry the masks.
//! - The new mount API (`fsopen`, `fsconfig`, `fsmount`, `fspick`, `move_mount`, `open_tree`,
//!   `mount_setattr`) is answered with ENOSYS, the kernel's answer where the API is missing, so
//!   util-linux and runc fall back to mount(2), which is vetted.
//! - The caller must hold CAP_SYS_ADMIN in its user namespace (what the kernel itself asks) and
//!   be in the container's user namespace or one nested in it (SPEC M7: a user namespace the
//!   container made, at any depth). A nested caller gets the same rules; its calls are made
//!   with its own user namespace's root credentials, so it reaches no further than its
//!   namespace's ids reach (runtime/supervisor: the nested helper), and every mount its mount
//!   namespace inherited counts as protected (the kernel locks them too, MNT_LOCKED), except
//!   the caller's root, which a sandbox detaches after `pivot_root`. The caller's mount
//!   namespace must belong to its own user namespace (each user namespace's helper holds the
//!   record of its mount namespaces), and a new proc or sysfs must show a namespace the
//!   caller's user namespace owns, as the kernel asks.

/// `mount(2)` flags (`linux/mount.h`); the same on every Linux architecture.
pub mod ms {
    pub const RDONLY: u64 = 1;
    pub const NOSUID: u64 = 2;
    pub const NODEV: u64 = 4;
    pub const NOEXEC: u64 = 8;
    pub const SYNCHRONOUS: u64 = 16;
    pub const REMOUNT: u64 = 32;
    pub const MANDLOCK: u64 = 64;
    pub const DIRSYNC: u64 = 128;
    pub const NOSYMFOLLOW: u64 = 256;
    pub const NOATIME: u64 = 1024;
    pub const NODIRATIME: u64 = 2048;
    pub const BIND: u64 = 4096;
    pub const MOVE: u64 = 8192;
    pub const REC: u64 = 16384;
    pub const SILENT: u64 = 32768;
    pub const UNBINDABLE: u64 = 1 << 17;
    pub const PRIVATE: u64 = 1 << 18;
    pub const SLAVE: u64 = 1 << 19;
    pub const SHARED: u64 = 1 << 20;
    pub const RELATIME: u64 = 1 << 21;
    pub const STRICTATIME: u64 = 1 << 24;
    pub const LAZYTIME: u64 = 1 << 25;
    /// The old magic number some callers still put in the top half; the kernel drops it.
    pub const MGC_VAL: u64 = 0xC0ED_0000;
    pub const MGC_MSK: u64 = 0xFFFF_0000;
    pub const PROPAGATION: u64 = UNBINDABLE | PRIVATE | SLAVE | SHARED;
}

/// `umount2(2)` flags.
pub mod umount {
    pub const MNT_FORCE: u64 = 1;
    pub const MNT_DETACH: u64 = 2;
    pub const MNT_EXPIRE: u64 = 4;
    pub const NOFOLLOW: u64 = 8;
}

/// `MOUNT_ATTR_*` of `mount_setattr`/`fsmount` (`linux/mount.h`).
pub mod attr {
    pub const RDONLY: u64 = 0x1;
    pub const NOSUID: u64 = 0x2;
    pub const NODEV: u64 = 0x4;
    pub const NOEXEC: u64 = 0x8;
    pub const ATIME_MASK: u64 = 0x70;
    pub const RELATIME: u64 = 0x0;
    pub const NOATIME: u64 = 0x10;
    pub const STRICTATIME: u64 = 0x20;
    pub const NODIRATIME: u64 = 0x80;
    pub const NOSYMFOLLOW: u64 = 0x0020_0000;
}

/// The errno a refused call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Errno {
    /// EPERM: not allowed (the isolation rule, or the caller lacks CAP_SYS_ADMIN).
    Perm,
    /// EINVAL: the call is malformed as the kernel would see it (umount of a non-mount).
    Inval,
    /// ENOSYS: the call is not offered; callers fall back to mount(2).
    NoSys,
}

impl Errno {
    /// The number (the same on every Linux architecture).
    pub fn raw(self) -> i32 {
        match self {
            Errno::Perm => 1,
            Errno::Inval => 22,
            Errno::NoSys => 38,
        }
    }
}

/// A trapped call, with its arguments as read from the caller's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Mount {
        source: Option<String>,
        fstype: Option<String>,
        flags: u64,
        data: Option<String>,
    },
    Umount {
        flags: u64,
    },
    /// One of the new mount API's calls, by name.
    NewApi(&'static str),
}

/// What the resolved target (mount point, or the mount to unmount/change) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Target {
    /// The path is the root of the mount it is on (a mount point seen from above).
    pub is_mount_root: bool,
    /// That mount is one the container started with, or a mask eci laid.
    pub protected: bool,
    /// That mount is read-only now.
    pub read_only: bool,
    /// That mount is a filesystem the container made itself (through the supervisor), so its
    /// read-only state is the container's own choice.
    pub own_fs: bool,
    /// That mount's current per-mount settings as `MOUNT_ATTR_*` (looked up for a remount).
    pub attrs: u64,
}

/// What a bind's or move's source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Source {
    pub is_mount_root: bool,
    pub protected: bool,
    /// The source is on a proc or sysfs mount (a kernel view eci masks).
    pub kernel_view: bool,
}

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// CAP_SYS_ADMIN is in the caller's effective set (relative to its user namespace).
    pub sys_admin: bool,
    /// The caller's user namespace is the container's or nested in it (SPEC M7).
    pub inside_container: bool,
    /// The caller's mount namespace belongs to the caller's own user namespace. Each user
    /// namespace's helper keeps the record of the mounts it protects in the mount namespaces
    /// that namespace owns; a call made in a mount namespace another (nested) user namespace
    /// owns would be judged without that record (SPEC M7).
    pub owns_mount_namespace: bool,
    /// For a new proc or sysfs: the pid or network namespace it would show belongs to the
    /// caller's user namespace or one nested in it, as the kernel itself asks (CAP_SYS_ADMIN
    /// over that namespace's owner). True for every other call.
    pub owns_view_namespace: bool,
}

impl Caller {
    /// A caller of the container's own user namespace and mount namespace, with or without
    /// CAP_SYS_ADMIN.
    pub fn container(sys_admin: bool) -> Caller {
        Caller {
            sys_admin,
            inside_container: true,
            owns_mount_namespace: true,
            owns_view_namespace: true,
        }
    }
}

/// Whose powers make a new filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Powers {
    /// The caller's user namespace and credentials, inside its namespaces.
    Caller,
    /// The supervisor's (VM root): a new proc for the caller's pid namespace or sysfs for its
    /// network namespace, made outside the container and given the masks of the container's
    /// first one before the container gets it (inside, the kernel refuses a new one while the
    /// first has locked masks).
    Supervisor,
}

/// What the supervisor does on the caller's behalf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A new filesystem (`fsopen`, `fsconfig` each option, `fsmount` with `attrs`), attached on
    /// the target.
    NewFs {
        fstype: String,
        /// `fsconfig` keys with their string values (`None`: a flag), `source` first.
        options: Vec<(String, Option<String>)>,
        attrs: u64,
        powers: Powers,
    },
    /// A copy of the source's mount (`open_tree(OPEN_TREE_CLONE)`), attached on the target.
    Bind { recursive: bool, attrs: u64 },
    /// New mount attributes on the target's mount (a bind remount).
    SetAttrs { attrs: u64 },
    /// A superblock remount: the options go to `fsconfig` after `fspick`, then the attributes.
    Reconfigure {
        options: Vec<(String, Option<String>)>,
        attrs: u64,
    },
    /// A propagation change (`MS_SHARED`/`MS_PRIVATE`/`MS_SLAVE`/`MS_UNBINDABLE`).
    Propagation { propagation: u64, recursive: bool },
    /// The source mount moves onto the target.
    Move,
    /// umount2 with these flags (`UMOUNT_NOFOLLOW` is the supervisor's business).
    Umount { flags: u64 },
}

/// A refusal: the errno and why (for the audit log; the caller sees only the errno).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub errno: Errno,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow(Action),
    Refuse(Refusal),
}

/// Filesystems a container makes with its own powers. ramfs is systemd's choice for a unit's
/// credentials (`/run/credentials/UNIT`, never swapped out; SPEC P9): memory of the mounting
/// container's cgroup like tmpfs, and the kernel lets a user namespace mount it too.
pub const CONTAINER_FS_TYPES: &[&str] =
    &["tmpfs", "overlay", "devpts", "mqueue", "cgroup2", "ramfs"];

/// Filesystems that show or change the whole VM; named in refusals so the audit log says why.
pub const VM_GLOBAL_FS_TYPES: &[&str] = &[
    "debugfs",
    "tracefs",
    "securityfs",
    "bpf",
    "configfs",
    "pstore",
    "efivarfs",
    "fusectl",
    "binfmt_misc",
    "hugetlbfs",
    "cgroup",
];

/// Syscalls the filter traps for the supervisor (SPEC M1, M6: control path only).
pub const TRAPPED_SYSCALLS: &[&str] = &[
    "mount",
    "umount2",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
];

fn refuse(errno: Errno, why: impl Into<String>) -> Verdict {
    Verdict::Refuse(Refusal {
        errno,
        why: why.into(),
    })
}

/// `MS_*` flags that have a per-mount `MOUNT_ATTR_*` counterpart.
pub fn attrs_of(flags: u64) -> u64 {
    let mut a = 0;
    for (m, at) in [
        (ms::RDONLY, attr::RDONLY),
        (ms::NOSUID, attr::NOSUID),
        (ms::NODEV, attr::NODEV),
        (ms::NOEXEC, attr::NOEXEC),
        (ms::NODIRATIME, attr::NODIRATIME),
        (ms::NOSYMFOLLOW, attr::NOSYMFOLLOW),
    ] {
        if flags & m != 0 {
            a |= at;
        }
    }
    a | if flags & ms::NOATIME != 0 {
        attr::NOATIME
    } else if flags & ms::STRICTATIME != 0 {
        attr::STRICTATIME
    } else {
        attr::RELATIME
    }
}

/// Comma-separated mount data as `fsconfig` keys; `\,` keeps a comma inside a value (overlay's
/// escaped paths).
pub fn split_options(data: &str) -> Vec<(String, Option<String>)> {
    let mut parts = vec![String::new()];
    let mut chars = data.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&',') => {
                parts
                    .last_mut()
                    .expect("one part")
                    .push(chars.next().expect("peeked"));
            }
            ',' => parts.push(String::new()),
            c => parts.last_mut().expect("one part").push(c),
        }
    }
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (p, None),
        })
        .collect()
}

/// Superblock flags that `fsconfig` takes as flag keys.
fn sb_flag_options(flags: u64) -> Vec<(String, Option<String>)> {
    [
        (ms::RDONLY, "ro"),
        (ms::SYNCHRONOUS, "sync"),
        (ms::DIRSYNC, "dirsync"),
        (ms::LAZYTIME, "lazytime"),
    ]
    .into_iter()
    .filter(|(m, _)| flags & m != 0)
    .map(|(_, k)| (k.to_string(), None))
    .collect()
}

/// Whether a new proc or sysfs may carry the option `key`: the superblock flags and proc's
/// `hidepid`, `gid` and `subset`. Never proc's `pidns` (Linux 6.18): it names a pid namespace
/// by a path or descriptor, and the supervisor, which makes the new proc, would resolve it in
/// the VM, where `/proc/1/ns/pid` is the VM's own (SPEC M3, P2).
pub fn kernel_view_option_allowed(fstype: &str, key: &str) -> bool {
    matches!(
        key,
        "ro" | "rw" | "sync" | "async" | "dirsync" | "lazytime" | "nolazytime" | "silent"
    ) || (fstype == "proc" && matches!(key, "hidepid" | "gid" | "subset"))
}

/// The per-mount restrictions (`MOUNT_ATTR_*`) `requested` keeps of `current`: every flag, and
/// an atime setting at least as strict (strictatime < relatime < noatime).
pub fn adds_restrictions(current: u64, requested: u64) -> bool {
    let flags = attr::RDONLY
        | attr::NOSUID
        | attr::NODEV
        | attr::NOEXEC
        | attr::NODIRATIME
        | attr::NOSYMFOLLOW;
    let rank = |a: u64| match a & attr::ATIME_MASK {
        attr::STRICTATIME => 0,
        attr::NOATIME => 2,
        _ => 1,
    };
    requested & current & flags == current & flags && rank(requested) >= rank(current)
}

/// Who may not make any mount call at all, whatever it asks for (also asked before the
/// supervisor looks at the call's paths).
pub fn refuse_caller(caller: Caller) -> Option<Refusal> {
    let why = if !caller.sys_admin {
        "the caller lacks CAP_SYS_ADMIN in its user namespace"
    } else if !caller.inside_container {
        "the caller's user namespace is neither the container's nor nested in it"
    } else if !caller.owns_mount_namespace {
        "the caller's mount namespace belongs to another user namespace (SPEC M7: a namespace's \
         mounts are vetted in its own user namespace)"
    } else {
        return None;
    };
    Some(Refusal {
        errno: Errno::Perm,
        why: why.to_string(),
    })
}

/// Decide a trapped call. `target` is what the target path reached (for umount, the mount to
/// unmount); `source` what a bind's or move's source reached (`None` for other calls).
pub fn decide(call: &Call, caller: Caller, target: Target, source: Option<Source>) -> Verdict {
    if let Call::NewApi(name) = call {
        return refuse(
            Errno::NoSys,
            format!(
                "{name}: the new mount API is answered with ENOSYS; mount(2) is vetted (SPEC M1)"
            ),
        );
    }
    if let Some(r) = refuse_caller(caller) {
        return Verdict::Refuse(r);
    }
    match call {
        Call::NewApi(_) => unreachable!("answered above"),
        Call::Umount { flags } => {
            if !target.is_mount_root {
                return refuse(Errno::Inval, "umount: not a mount point");
            }
            if target.protected {
                return refuse(
                    Errno::Perm,
                    "umount of a mount the container started with, or of a mask (SPEC M2)",
                );
            }
            Verdict::Allow(Action::Umount {
                flags: flags & (umount::MNT_FORCE | umount::MNT_DETACH | umount::MNT_EXPIRE),
            })
        }
        Call::Mount {
            source: src,
            fstype,
            flags,
            data,
        } => {
            let mut flags = *flags;
            if flags & ms::MGC_MSK == ms::MGC_VAL {
                flags &= !ms::MGC_MSK;
            }
            let covers = target.is_mount_root && target.protected;
            let options = || data.as_deref().map(split_options).unwrap_or_default();
            if flags & ms::REMOUNT != 0 {
                if !target.is_mount_root {
                    return refuse(Errno::Inval, "remount: not a mount point");
                }
                if target.protected {
                    if flags & ms::BIND == 0 && !options().is_empty() {
                        return refuse(
                            Errno::Perm,
                            "remount with filesystem options of a mount the container started with, or of a mask (SPEC M2)",
                        );
                    }
                    if !adds_restrictions(target.attrs, attrs_of(flags)) {
                        return refuse(
                            Errno::Perm,
                            "remount that drops a restriction of a mount the container started with, or of a mask (SPEC M2)",
                        );
                    }
                    // Per mount only: the superblock may be shared with the VM.
                    return Verdict::Allow(Action::SetAttrs {
                        attrs: attrs_of(flags),
                    });
                }
                // A read-only mount stays read-only unless the container made that filesystem
                // itself: a copy of a read-only volume or of a read-only part of the rootfs
                // (a bind, a mount namespace copy) cannot become writable (SPEC M2).
                if target.read_only && !target.own_fs && flags & ms::RDONLY == 0 {
                    return refuse(
                        Errno::Perm,
                        "read-write remount of a read-only mount the container did not make (SPEC M2)",
                    );
                }
                return Verdict::Allow(if flags & ms::BIND != 0 {
                    Action::SetAttrs {
                        attrs: attrs_of(flags),
                    }
                } else {
                    let mut opts = vec![(
                        if flags & ms::RDONLY != 0 { "ro" } else { "rw" }.to_string(),
                        None,
                    )];
                    opts.extend(options());
                    Action::Reconfigure {
                        options: opts,
                        attrs: attrs_of(flags),
                    }
                });
            }
            if flags & ms::BIND != 0 {
                let Some(s) = source else {
                    return refuse(Errno::Inval, "bind: no source");
                };
                if s.kernel_view && s.protected && flags & ms::REC == 0 {
                    return refuse(
                        Errno::Perm,
                        "non-recursive bind of the container's /proc or /sys: the copy would lose its masks (SPEC M2, F)",
                    );
                }
                // A bind on top of a protected mount covers it and reveals nothing: the source
                // is already visible to the caller (module docs).
                // mount(2) ignores the per-mount flags of a plain bind (only a bind remount
                // applies them), so the copy keeps the source's attributes.
                return Verdict::Allow(Action::Bind {
                    recursive: flags & ms::REC != 0,
                    attrs: 0,
                });
            }
            if flags & ms::PROPAGATION != 0 {
                let propagation = flags & ms::PROPAGATION;
                if propagation.count_ones() != 1 {
                    return refuse(Errno::Inval, "more than one propagation type");
                }
                if !target.is_mount_root {
                    return refuse(Errno::Inval, "propagation change: not a mount point");
                }
                return Verdict::Allow(Action::Propagation {
                    propagation,
                    recursive: flags & ms::REC != 0,
                });
            }
            if flags & ms::MOVE != 0 {
                let Some(s) = source else {
                    return refuse(Errno::Inval, "move: no source");
                };
                if !s.is_mount_root {
                    return refuse(Errno::Inval, "move: the source is not a mount point");
                }
                if s.protected {
                    return refuse(
                        Errno::Perm,
                        "move of a mount the container started with, or of a mask (SPEC M2)",
                    );
                }
                if covers {
                    return refuse(
                        Errno::Perm,
                        "move over a mount the container started with, or over a mask (SPEC M2)",
                    );
                }
                return Verdict::Allow(Action::Move);
            }
            let Some(fstype) = fstype.as_deref().filter(|t| !t.is_empty()) else {
                return refuse(Errno::Inval, "mount: no filesystem type");
            };
            // `mount -t overlay` may name the type with a subtype (`fuse.x`); only the part
            // before the dot picks the filesystem.
            let base = fstype.split('.').next().unwrap_or(fstype);
            if VM_GLOBAL_FS_TYPES.contains(&base) {
                return refuse(
                    Errno::Perm,
                    format!("{fstype} shows or changes the whole VM (SPEC M3, P2)"),
                );
            }
            if base == "proc" || base == "sysfs" {
                if !caller.owns_view_namespace {
                    return refuse(
                        Errno::Perm,
                        format!(
                            "a new {base} would show a {} namespace the caller's user namespace \
                             does not own (SPEC M7)",
                            if base == "proc" { "pid" } else { "network" }
                        ),
                    );
                }
                if covers {
                    return refuse(
                        Errno::Perm,
                        "mount over a mount the container started with, or over a mask (SPEC M2)",
                    );
                }
                let mut opts = sb_flag_options(flags);
                opts.extend(options());
                if let Some((k, _)) = opts
                    .iter()
                    .find(|(k, _)| !kernel_view_option_allowed(base, k))
                {
                    return refuse(
                        Errno::Inval,
                        format!(
                            "a new {base} may not carry the option {k} (only its superblock flags{}, SPEC M3)",
                            if base == "proc" { ", hidepid, gid and subset" } else { "" }
                        ),
                    );
                }
                return Verdict::Allow(Action::NewFs {
                    fstype: base.to_string(),
                    options: opts,
                    attrs: attrs_of(flags),
                    powers: Powers::Supervisor,
                });
            }

            if !CONTAINER_FS_TYPES.contains(&base) {
                return refuse(
                    Errno::Perm,
                    format!("{fstype} is not a filesystem containers may mount (block devices and VM filesystems are refused, SPEC M3)"),
                );
            }
            // A new filesystem on top of a protected mount covers it and reveals nothing.
            let mut opts = vec![(
                "source".to_string(),
                Some(src.clone().unwrap_or_else(|| fstype.to_string())),
            )];
            opts.extend(sb_flag_options(flags));
            opts.extend(options());
            Verdict::Allow(Action::NewFs {
                fstype: fstype.to_string(),
                options: opts,
                attrs: attrs_of(flags),
                powers: Powers::Caller,
            })
        }
    }
}

/// Whose descriptor table a `/proc/.../fd/N` path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdTable {
    /// `/proc/self/fd/N`: the caller's thread group (its leader's table).
    Process,
    /// `/proc/thread-self/fd/N`: the calling thread's table.
    Thread,
}

/// The caller's own descriptor a mount path names, if it is exactly `/proc/self/fd/N` or
/// `/proc/thread-self/fd/N` (runc >= 1.0 mounts every rootfs entry onto such a path: an
/// `O_PATH` descriptor it opened on the mount point). The supervisor takes that descriptor
/// from the caller instead of resolving the magic link, then checks the object lies inside
/// the caller's root (issue 10, SPEC P7). Any other spelling (`/proc/<pid>/fd/N`, trailing
/// components, a relative path) is resolved like every path, where magic links are refused.
pub fn caller_fd(path: &str) -> Option<(FdTable, i32)> {
    let rest = path.strip_prefix("/proc/")?;
    let (table, n) = if let Some(n) = rest.strip_prefix("self/fd/") {
        (FdTable::Process, n)
    } else {
        (FdTable::Thread, rest.strip_prefix("thread-self/fd/")?)
    };
    if n.is_empty() || n.len() > 10 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let fd: i32 = n.parse().ok()?;
    Some((table, fd))
}

/// Whose namespace a `/proc/.../ns/KIND` bind source names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NsOwner {
    /// `/proc/self/ns/KIND`: the caller's thread group.
    Process,
    /// `/proc/thread-self/ns/KIND`: the calling thread.
    Thread,
    /// `/proc/PID/ns/KIND`: a process as the caller's /proc shows it.
    Pid(u32),
}

/// The namespace a bind's source names, if it is exactly `/proc/{self,thread-self,PID}/ns/KIND`
/// with a plain kind name: dockerd keeps a container's network namespace alive with a bind of
/// `/proc/PID/ns/net`, `ip netns add` with one of `/proc/self/ns/net`. The supervisor follows
/// only that last magic link and binds the namespace file only if it is one (nsfs): a
/// namespace of a process the caller can already see, which the kernel lets it bind too.
pub fn ns_link(path: &str) -> Option<(NsOwner, &str)> {
    let rest = path.strip_prefix("/proc/")?;
    let (who, rest) = rest.split_once('/')?;
    let kind = rest.strip_prefix("ns/")?;
    if kind.is_empty()
        || kind.len() > 32
        || !kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    {
        return None;
    }
    let owner = match who {
        "self" => NsOwner::Process,
        "thread-self" => NsOwner::Thread,
        n if !n.is_empty() && n.len() <= 10 && n.bytes().all(|b| b.is_ascii_digit()) => {
            NsOwner::Pid(n.parse().ok()?)
        }
        _ => return None,
    };
    Some((owner, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_namespace_links_name_a_namespace() {
        assert_eq!(
            ns_link("/proc/185/ns/net"),
            Some((NsOwner::Pid(185), "net"))
        );
        assert_eq!(
            ns_link("/proc/self/ns/net"),
            Some((NsOwner::Process, "net"))
        );
        assert_eq!(
            ns_link("/proc/thread-self/ns/pid_for_children"),
            Some((NsOwner::Thread, "pid_for_children"))
        );
        for p in [
            "/proc/185/ns/",
            "/proc/185/ns/net/x",
            "/proc/185/ns/../root",
            "/proc/185/root/ns/net",
            "/proc//ns/net",
            "/proc/x1/ns/net",
            "proc/self/ns/net",
            "/proc/self/fd/3",
        ] {
            assert_eq!(ns_link(p), None, "{p}");
        }
    }

    #[test]
    fn only_the_exact_fd_link_forms_name_a_caller_descriptor() {
        assert_eq!(caller_fd("/proc/self/fd/6"), Some((FdTable::Process, 6)));
        assert_eq!(
            caller_fd("/proc/thread-self/fd/12"),
            Some((FdTable::Thread, 12))
        );
        for p in [
            "/proc/self/fd/",
            "/proc/self/fd/6/x",
            "/proc/self/fd/-1",
            "/proc/self/fd/+6",
            "/proc/self/fd/99999999999",
            "proc/self/fd/6",
            "/proc/1/fd/6",
            "/proc/self/fdinfo/6",
            "/proc//self/fd/6",
        ] {
            assert_eq!(caller_fd(p), None, "{p}");
        }
    }

    const ROOT: Caller = Caller {
        sys_admin: true,
        inside_container: true,
        owns_mount_namespace: true,
        owns_view_namespace: true,
    };
    const DIR: Target = Target {
        is_mount_root: false,
        protected: true,
        read_only: false,
        own_fs: false,
        attrs: 0,
    };
    const INITIAL_ROOT: Target = Target {
        is_mount_root: true,
        protected: true,
        read_only: false,
        own_fs: false,
        attrs: 0,
    };
    const OWN_ROOT: Target = Target {
        is_mount_root: true,
        protected: false,
        read_only: false,
        own_fs: true,
        attrs: 0,
    };

    fn mount(fstype: &str, flags: u64, data: Option<&str>) -> Call {
        Call::Mount {
            source: Some("x".into()),
            fstype: Some(fstype.into()),
            flags,
            data: data.map(String::from),
        }
    }

    fn errno(v: Verdict) -> Errno {
        match v {
            Verdict::Refuse(r) => r.errno,
            Verdict::Allow(a) => panic!("allowed: {a:?}"),
        }
    }

    #[test]
    fn tmpfs_on_a_folder_of_the_rootfs_is_made_with_the_callers_powers() {
        let v = decide(
            &mount("tmpfs", ms::NOSUID | ms::MGC_VAL, Some("size=1m,mode=755")),
            ROOT,
            DIR,
            None,
        );
        assert_eq!(
            v,
            Verdict::Allow(Action::NewFs {
                fstype: "tmpfs".into(),
                options: vec![
                    ("source".into(), Some("x".into())),
                    ("size".into(), Some("1m".into())),
                    ("mode".into(), Some("755".into())),
                ],
                attrs: attr::NOSUID,
                powers: Powers::Caller,
            })
        );
    }

    #[test]
    fn ramfs_for_systemds_credentials_is_made_with_the_callers_powers() {
        let v = decide(
            &mount(
                "ramfs",
                ms::NOSUID | ms::NODEV | ms::NOEXEC,
                Some("mode=0700"),
            ),
            ROOT,
            DIR,
            None,
        );
        assert_eq!(
            v,
            Verdict::Allow(Action::NewFs {
                fstype: "ramfs".into(),
                options: vec![
                    ("source".into(), Some("x".into())),
                    ("mode".into(), Some("0700".into())),
                ],
                attrs: attr::NOSUID | attr::NODEV | attr::NOEXEC,
                powers: Powers::Caller,
            })
        );
    }

    #[test]
    fn vm_global_and_block_filesystems_are_refused_with_eperm() {
        for t in [
            "debugfs",
            "tracefs",
            "securityfs",
            "bpf",
            "configfs",
            "ext4",
            "xfs",
            "btrfs",
            "cgroup",
        ] {
            assert_eq!(
                errno(decide(&mount(t, 0, None), ROOT, DIR, None)),
                Errno::Perm,
                "{t}"
            );
        }
    }

    #[test]
    fn a_new_proc_cannot_name_a_pid_namespace_or_carry_other_options() {
        for (fstype, data) in [
            ("proc", "pidns=/proc/1/ns/pid"),
            ("proc", "hidepid=2,pidns=/proc/1/ns/pid"),
            ("proc", "subset=pid,source=x"),
            ("sysfs", "hidepid=2"),
        ] {
            assert_eq!(
                errno(decide(&mount(fstype, 0, Some(data)), ROOT, DIR, None)),
                Errno::Inval,
                "{fstype} -o {data}"
            );
        }
        assert!(matches!(
            decide(
                &mount(
                    "proc",
                    ms::RDONLY,
                    Some("hidepid=invisible,gid=5,subset=pid")
                ),
                ROOT,
                DIR,
                None
            ),
            Verdict::Allow(Action::NewFs { .. })
        ));
    }

    #[test]
    fn a_new_proc_or_sysfs_is_made_with_the_supervisors_powers() {
        assert_eq!(
            decide(
                &mount("proc", ms::NOSUID, Some("hidepid=2")),
                ROOT,
                DIR,
                None
            ),
            Verdict::Allow(Action::NewFs {
                fstype: "proc".into(),
                options: vec![("hidepid".into(), Some("2".into()))],
                attrs: attr::NOSUID,
                powers: Powers::Supervisor,
            })
        );
        assert!(matches!(
            decide(&mount("sysfs", ms::RDONLY, None), ROOT, DIR, None),
            Verdict::Allow(Action::NewFs {
                powers: Powers::Supervisor,
                ..
            })
        ));
        assert_eq!(
            errno(decide(&mount("proc", 0, None), ROOT, INITIAL_ROOT, None)),
            Errno::Perm
        );
        assert_eq!(
            errno(decide(&mount("sysfs", 0, None), ROOT, INITIAL_ROOT, None)),
            Errno::Perm
        );
    }

    #[test]
    fn initial_mounts_and_masks_cannot_be_unmounted_moved_or_loosened() {
        let um = Call::Umount {
            flags: umount::MNT_DETACH,
        };
        assert_eq!(errno(decide(&um, ROOT, INITIAL_ROOT, None)), Errno::Perm);
        let ro = Target {
            attrs: attr::RDONLY | attr::NOSUID,
            read_only: true,
            ..INITIAL_ROOT
        };
        for flags in [
            ms::REMOUNT | ms::BIND,
            ms::REMOUNT,
            ms::REMOUNT | ms::BIND | ms::RDONLY,
        ] {
            assert_eq!(
                errno(decide(&mount("", flags, None), ROOT, ro, None)),
                Errno::Perm,
                "{flags:#x}"
            );
        }
        let noatime = Target {
            attrs: attr::NOATIME,
            ..INITIAL_ROOT
        };
        assert_eq!(
            errno(decide(
                &mount("", ms::REMOUNT | ms::BIND | ms::RDONLY, None),
                ROOT,
                noatime,
                None
            )),
            Errno::Perm
        );
        assert_eq!(
            errno(decide(
                &mount("", ms::REMOUNT | ms::RDONLY, Some("hidepid=0")),
                ROOT,
                INITIAL_ROOT,
                None
            )),
            Errno::Perm
        );
        let src = Source {
            is_mount_root: true,
            protected: true,
            kernel_view: false,
        };
        assert_eq!(
            errno(decide(&mount("", ms::MOVE, None), ROOT, DIR, Some(src))),
            Errno::Perm
        );
        let own = Source {
            protected: false,
            ..src
        };
        assert_eq!(
            errno(decide(
                &mount("", ms::MOVE, None),
                ROOT,
                INITIAL_ROOT,
                Some(own)
            )),
            Errno::Perm
        );
        assert_eq!(
            errno(decide(&mount("proc", 0, None), ROOT, INITIAL_ROOT, None)),
            Errno::Perm
        );
    }

    #[test]
    fn remounts_of_protected_mounts_that_only_add_restrictions_are_per_mount() {
        let t = Target {
            attrs: attr::NOSUID | attr::NODEV | attr::NOEXEC,
            ..INITIAL_ROOT
        };
        let all = ms::NOSUID | ms::NODEV | ms::NOEXEC | ms::RDONLY;
        for flags in [ms::REMOUNT | ms::BIND | all, ms::REMOUNT | all] {
            assert_eq!(
                decide(&mount("", flags, None), ROOT, t, None),
                Verdict::Allow(Action::SetAttrs {
                    attrs: attr::RDONLY | attr::NOSUID | attr::NODEV | attr::NOEXEC
                }),
                "{flags:#x}"
            );
        }
        assert!(adds_restrictions(attr::RELATIME, attr::NOATIME));
        assert!(!adds_restrictions(attr::RELATIME, attr::STRICTATIME));
        assert!(!adds_restrictions(attr::RDONLY | attr::NODEV, attr::RDONLY));
    }

    #[test]
    fn covers_on_protected_mounts_are_allowed() {
        assert!(matches!(
            decide(&mount("tmpfs", ms::RDONLY, None), ROOT, INITIAL_ROOT, None),
            Verdict::Allow(Action::NewFs {
                powers: Powers::Caller,
                ..
            })
        ));
        let dev_null = Source {
            is_mount_root: false,
            protected: true,
            kernel_view: false,
        };
        assert_eq!(
            decide(
                &mount("/dev/null", ms::BIND, None),
                ROOT,
                INITIAL_ROOT,
                Some(dev_null)
            ),
            Verdict::Allow(Action::Bind {
                recursive: false,
                attrs: 0
            })
        );
    }

    #[test]
    fn protected_kernel_views_are_bound_only_recursively() {
        let bus = Source {
            is_mount_root: false,
            protected: true,
            kernel_view: true,
        };
        for target in [INITIAL_ROOT, DIR] {
            assert_eq!(
                decide(
                    &mount("/proc/bus", ms::BIND | ms::REC, None),
                    ROOT,
                    target,
                    Some(bus)
                ),
                Verdict::Allow(Action::Bind {
                    recursive: true,
                    attrs: 0
                })
            );
            assert_eq!(
                errno(decide(
                    &mount("/proc/bus", ms::BIND, None),
                    ROOT,
                    target,
                    Some(bus)
                )),
                Errno::Perm
            );
        }
    }

    #[test]
    fn the_containers_own_mounts_change_freely() {
        assert_eq!(
            decide(
                &Call::Umount {
                    flags: umount::MNT_DETACH | umount::NOFOLLOW
                },
                ROOT,
                OWN_ROOT,
                None
            ),
            Verdict::Allow(Action::Umount {
                flags: umount::MNT_DETACH
            })
        );
        assert_eq!(
            decide(
                &mount("", ms::REMOUNT | ms::BIND | ms::RDONLY, None),
                ROOT,
                OWN_ROOT,
                None
            ),
            Verdict::Allow(Action::SetAttrs {
                attrs: attr::RDONLY
            })
        );
        let own = Source {
            is_mount_root: true,
            protected: false,
            kernel_view: false,
        };
        assert_eq!(
            decide(&mount("", ms::MOVE, None), ROOT, DIR, Some(own)),
            Verdict::Allow(Action::Move)
        );
    }

    #[test]
    fn read_only_copies_stay_read_only_but_own_filesystems_change() {
        let copy = Target {
            is_mount_root: true,
            protected: false,
            read_only: true,
            own_fs: false,
            attrs: attr::RDONLY,
        };
        for flags in [ms::REMOUNT | ms::BIND, ms::REMOUNT] {
            assert_eq!(
                errno(decide(&mount("", flags, None), ROOT, copy, None)),
                Errno::Perm
            );
            assert!(matches!(
                decide(&mount("", flags | ms::RDONLY, None), ROOT, copy, None),
                Verdict::Allow(_)
            ));
        }
        let own = Target {
            read_only: true,
            ..OWN_ROOT
        };
        assert_eq!(
            decide(&mount("", ms::REMOUNT, Some("size=2m")), ROOT, own, None),
            Verdict::Allow(Action::Reconfigure {
                options: vec![("rw".into(), None), ("size".into(), Some("2m".into()))],
                attrs: attr::RELATIME,
            })
        );
    }

    #[test]
    fn binds_inside_the_tree_work_but_not_of_the_masked_kernel_views() {
        let file = Source {
            is_mount_root: false,
            protected: true,
            kernel_view: false,
        };
        assert_eq!(
            decide(&mount("", ms::BIND | ms::REC, None), ROOT, DIR, Some(file)),
            Verdict::Allow(Action::Bind {
                recursive: true,
                attrs: 0
            })
        );
        let proc = Source {
            kernel_view: true,
            ..file
        };
        assert_eq!(
            errno(decide(&mount("", ms::BIND, None), ROOT, DIR, Some(proc))),
            Errno::Perm
        );
    }

    #[test]
    fn propagation_changes_are_allowed_even_on_initial_mounts() {
        assert_eq!(
            decide(
                &mount("", ms::SHARED | ms::REC, None),
                ROOT,
                INITIAL_ROOT,
                None
            ),
            Verdict::Allow(Action::Propagation {
                propagation: ms::SHARED,
                recursive: true
            })
        );
        assert_eq!(
            errno(decide(
                &mount("", ms::SHARED | ms::SLAVE, None),
                ROOT,
                INITIAL_ROOT,
                None
            )),
            Errno::Inval
        );
    }

    #[test]
    fn callers_without_sys_admin_or_outside_the_container_are_refused() {
        let t = mount("tmpfs", 0, None);
        let no_cap = Caller::container(false);
        let outside = Caller {
            inside_container: false,
            ..ROOT
        };
        // Container root acting in a mount namespace a nested user namespace owns (nsenter -m
        // into a sandbox): the nested namespace's helper holds that namespace's record.
        let foreign_mnt = Caller {
            owns_mount_namespace: false,
            ..ROOT
        };
        for c in [no_cap, outside, foreign_mnt] {
            assert_eq!(errno(decide(&t, c, DIR, None)), Errno::Perm, "{c:?}");
            assert!(refuse_caller(c).is_some());
        }
        assert!(refuse_caller(ROOT).is_none());
        assert_eq!(
            decide(&t, ROOT, DIR, None),
            decide(&t, Caller::container(true), DIR, None)
        );
    }

    /// The kernel asks for CAP_SYS_ADMIN over the owner of the pid (network) namespace a new
    /// proc (sysfs) shows; a nested caller without its own gets EPERM, not the container's.
    #[test]
    fn a_new_proc_or_sysfs_of_a_namespace_the_caller_does_not_own_is_refused() {
        let borrowed = Caller {
            owns_view_namespace: false,
            ..ROOT
        };
        for fs in ["proc", "sysfs"] {
            let m = mount(fs, 0, None);
            assert_eq!(errno(decide(&m, borrowed, DIR, None)), Errno::Perm, "{fs}");
            assert!(matches!(
                decide(&m, ROOT, DIR, None),
                Verdict::Allow(Action::NewFs {
                    powers: Powers::Supervisor,
                    ..
                })
            ));
        }
        // Other filesystems do not show a namespace.
        assert!(matches!(
            decide(&mount("tmpfs", 0, None), borrowed, DIR, None),
            Verdict::Allow(_)
        ));
    }

    #[test]
    fn the_new_mount_api_is_answered_with_enosys() {
        for n in [
            "fsopen",
            "open_tree",
            "move_mount",
            "mount_setattr",
            "fspick",
        ] {
            let name: &'static str = TRAPPED_SYSCALLS.iter().find(|s| **s == n).unwrap();
            assert_eq!(
                errno(decide(&Call::NewApi(name), ROOT, DIR, None)),
                Errno::NoSys
            );
        }
    }

    #[test]
    fn umount_of_a_plain_folder_is_einval_as_the_kernel_says() {
        assert_eq!(
            errno(decide(&Call::Umount { flags: 0 }, ROOT, DIR, None)),
            Errno::Inval
        );
    }

    #[test]
    fn options_keep_escaped_commas_and_sb_flags() {
        assert_eq!(
            split_options("lowerdir=/a\\,b:/c,upperdir=/u,ro"),
            vec![
                ("lowerdir".into(), Some("/a,b:/c".into())),
                ("upperdir".into(), Some("/u".into())),
                ("ro".into(), None)
            ]
        );
        let v = decide(
            &mount("tmpfs", ms::RDONLY | ms::NOATIME, None),
            ROOT,
            DIR,
            None,
        );
        let Verdict::Allow(Action::NewFs { options, attrs, .. }) = v else {
            panic!()
        };
        assert!(options.contains(&("ro".into(), None)));
        assert_eq!(attrs, attr::RDONLY | attr::NOATIME);
    }
}
