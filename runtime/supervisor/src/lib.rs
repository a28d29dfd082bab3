//! eci-supervisor: the long-lived side of eci's container isolation (issue 10). It vets the
//! mount calls of every eci container (SPEC M1-M6) and performs the allowed ones on the
//! caller's behalf.
//!
//! The per-container /proc and /sys views (SPEC F1-F4) are not served here but by eci-views
//! (runtime/views), its own service in the VM (eci-init has it ready before dockerd; eci-runc
//! starts one where none answers): a fault in the FUSE server never takes mount vetting down
//! with it, nor the reverse, and the two restart on their own. Both keep their descriptors in
//! an fd store (in the VM the same one, eci-init's; elsewhere each its own beside its socket):
//! the listeners here, the FUSE device there (runtime/views/src/connection.rs), and each
//! takes back only its own kind, in its own scope.
//!
//! # Shape
//!
//! ```text
//! eci-init ── starts ──► eci-supervisor serve ◄── Register + listener (SCM_RIGHTS) ── eci-runc
//!                          │  (create: the init's listener; exec: each exec'd process's)
//!                          │  checks pid and container against eci_runc::State
//!                          └─ one helper process per container (helper.rs), in its namespaces
//!                             as container root, serving all the container's listeners:
//!                             NOTIF_RECV → notify::handle → decide (eci_policy::mount_vetting)
//!                             → act → NOTIF_SEND; a new proc comes from the supervisor
//!                             (powers.rs: made as VM root, masked like the first, detached)
//! ```
//!
//! eci-runc loads, after docker's profile and eci's deny filter, a third filter that turns
//! `mount`, `umount2`, `fsopen`, `fsconfig`, `fsmount`, `fspick`, `move_mount`, `open_tree` and
//! `mount_setattr` into notifications (`SECCOMP_FILTER_FLAG_NEW_LISTENER`), for the init and for
//! every exec, whatever the spec says (`--privileged`, `seccomp=unconfined`). Nothing else is
//! trapped (M6). When no supervisor answers on the socket, eci-runc starts one
//! (`eci_runc::seccomp::hand_off`), so vetting never depends on who started the engine.
//!
//! # The new mount API
//!
//! Answered with ENOSYS (what a kernel without it says), so callers fall back to mount(2),
//! which is vetted. Full support would need `pidfd_getfd` for the fd arguments and
//! `SECCOMP_IOCTL_NOTIF_ADDFD` for the fd results; not done.
//!
//! # TOCTOU analysis (SPEC M4)
//!
//! - *Arguments.* The caller's strings are read exactly once, with `process_vm_readv`, into the
//!   helper's memory (`notify::gather`). Another thread of the caller rewriting them after
//!   that changes nothing: the decision and the act only ever see the copy. The kernel never
//!   reads them either, because the call is not continued (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`
//!   is never used): the container's helper makes the mount itself.
//! - *Which process.* The notification names a pid. The helper reads and opens everything it
//!   needs of that pid (its memory; `root`, `cwd`, `ns/mnt`, `ns/user` through the VM's /proc,
//!   opened before the helper entered the container; its capabilities with `capget`) and
//!   *then* checks `SECCOMP_IOCTL_NOTIF_ID_VALID`: while the notification is valid the caller
//!   is blocked in the call and alive, so its pid was not reused and everything read or opened
//!   before the check belongs to it. An invalid id ends the handling without acting. The id is checked again
//!   before answering (an answer to a dead caller is dropped).
//! - *Paths.* Resolved once in the helper with `openat2(root, path, RESOLVE_IN_ROOT |
//!   RESOLVE_NO_MAGICLINKS)` against the caller's root descriptor (relative ones against its
//!   cwd as seen inside that root). Symlinks cannot lead out of the root; `/proc/PID/...` magic
//!   links are refused. The facts (mount id, mount root, read-only, filesystem type) are read
//!   from the resolved descriptor and the mount is attached onto that same descriptor
//!   (`move_mount` with `MOVE_MOUNT_T_EMPTY_PATH`), binds cloned from the judged source
//!   descriptor (`open_tree`), attributes set on it (`mount_setattr`), superblocks picked from
//!   it (`fspick`). Renaming path components after the decision reaches nothing.
//! - *The caller's descriptors.* runc >= 1.0 (Docker-in-Docker's inner runtime) mounts every
//!   rootfs entry onto `/proc/self/fd/N`, an `O_PATH` descriptor it opened on the mount point;
//!   the resolution above refuses that magic link (and the helper's own pid is not in the
//!   caller's /proc anyway). A target, or a bind's or move's source, spelled exactly
//!   `/proc/self/fd/N` or `/proc/thread-self/fd/N` (`mount_vetting::caller_fd`) is instead
//!   taken from the caller: `notify::gather` opens `/proc/<caller>/fd/N` through the VM's /proc
//!   with `O_PATH` (the group leader's table for `self`, the calling thread's for
//!   `thread-self`), *before* the notification is re-validated, so the descriptor table read
//!   was the live caller's; the helper then holds its own reference to the object, and
//!   whatever the caller does with descriptor N afterwards (close, `dup2` of another file)
//!   reaches nothing. The helper uses it only when the caller's `/proc` (inside its root) is a
//!   proc filesystem, as the kernel would, and only when the object lies inside the caller's
//!   root: with the helper chrooted there, readlink of the helper's *own* copy gives the
//!   kernel's name of the object from that root, which is resolved again inside the root and
//!   must reach the same mount id, device and inode. An object outside the root (or deleted,
//!   or anonymous) has no such name and is refused with EPERM. The copy, not the re-resolved
//!   name, is judged and mounted onto, exactly like a resolved path. Not recognised:
//!   `/proc/<pid>/fd/N` with the caller's pid as its /proc shows it (that /proc's pid
//!   namespace need not be the caller's), which stays a refused magic link.
//! - *Namespace files.* A bind's source spelled `/proc/{self,thread-self,PID}/ns/KIND`
//!   (`mount_vetting::ns_link`; dockerd keeps a container's network namespace with a bind of
//!   `/proc/PID/ns/net`) is bound only if it reaches a namespace file (nsfs). `self` and
//!   `thread-self` are taken from the caller like a descriptor, before re-validation; a PID
//!   is looked up in the caller's own /proc inside its root (`/proc/PID/ns` resolved like any
//!   path, then that one plain last name followed), so it reaches only a process the caller
//!   sees, once, and the bind is cloned from that descriptor.
//! - *umount.* A mount with an open descriptor on it is busy, so umount must go by name: the
//!   folder holding the mount point is pinned by a descriptor, the decision is made on the
//!   mount found below it, and `umount2(name, UMOUNT_NOFOLLOW)` runs from that folder. The name
//!   still reaches the judged mount: the kernel refuses to rename or replace a mount point
//!   (EBUSY), symlinks are not followed, and mounts on top of it change only through the same
//!   helper, which handles one request at a time.
//! - *Order.* All mount changes of a container go through its one single-threaded helper,
//!   serially, so no other vetted change interleaves between a decision and its act.
//! - *Once.* A call is made at most once. A caller whose wait is interrupted by a signal
//!   restarts the call as a new notification, and the helper may already have made the first
//!   (Go's runtime interrupts its threads with SIGURG, and runc, containerd and dockerd are Go
//!   programs). eci-runc loads the filter with `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`
//!   (Linux 5.19), so once the helper has received a call only a fatal signal ends the wait;
//!   a signal before that restarts a call nobody acted on. Kernels without the flag keep the
//!   race (eci-runc's `sys/listener.rs`). The vetting suite's
//!   `calls_interrupted_by_signals_are_made_once` counts duplicates under a signal storm.
//!
//! # Fail closed (SPEC M5)
//!
//! eci-runc fails a create or exec whose listener no supervisor takes. Every listener the
//! supervisor serves is also deposited in an fd store that outlives it ([`store`]; in the VM
//! eci-init holds it, elsewhere `eci-supervisor fd-store`, started beside the socket). If the
//! supervisor dies, its helpers die with it (`PR_SET_PDEATHSIG`) and the store answers the
//! running containers' trapped calls with EPERM; everything else of the containers keeps
//! running. A new supervisor (eci-init restarts it; eci-runc starts one) takes the listeners
//! back before it answers on its socket, makes each container a new helper from its state and
//! serves it again; a container it cannot re-attach (state gone, init replaced) is named in
//! its log and stays failing closed. A killed helper fails its container's calls the same way:
//! the supervisor sees it exit and hands the container's copies to the store, which answers
//! them with EPERM.

pub mod helper;
pub mod notify;
mod powers;
pub mod proto;
pub mod server;
mod step;
pub mod store;
mod sys;

/// Errors of the supervisor's own set-up (its socket); per-call failures become errnos.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
}

/// `ECI_SUPERVISOR_VERBOSE=1` logs every vetted call with its answer.
pub fn verbose() -> bool {
    static V: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *V.get_or_init(|| std::env::var_os("ECI_SUPERVISOR_VERBOSE").is_some_and(|v| v != "0"))
}
