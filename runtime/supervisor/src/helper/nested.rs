//! Helpers for user namespaces nested in the container's (SPEC M7): Docker-in-Docker with
//! user-namespace remapping, rootless runtimes, bubblewrap and `unshare -r` sandboxes make
//! mounts from a user namespace the container created.
//!
//! Such a call is vetted by the same rules, but made with the nested namespace's credentials:
//! a container's helper is root of the container's user namespace, which owns every nested one,
//! so mounts made with its own credentials would reach further than the caller (a bind source
//! or an overlay lower folder that the nested namespace's ids cannot traverse, a filesystem
//! owned by the container's root). So each nested user namespace gets a process of its own, a
//! fork of the container's helper that entered that namespace and became its root; the
//! container's helper hands it the call with the caller's descriptors and relays its answer.
//! A fork, not a new program: its memory stays the VM's (the helper was executed by the
//! supervisor), so nobody in the container can ptrace it. One per nested namespace, made on
//! its first call and kept (at most [`MAX`], the least recently used ends first), never one
//! per call.
//!
//! Inside a nested user namespace every mount its mount namespaces inherited counts as
//! protected (the kernel locks them too: MNT_LOCKED, MNT_LOCK_READONLY), except the caller's
//! root, which a sandbox detaches after `pivot_root` (the kernel moves its lock to the new root
//! then, and detaching it takes every mount on it along). Each helper acts only in the mount
//! namespaces its own user namespace owns (`eci_policy::mount_vetting::Caller`), so the record
//! of one namespace's protected mounts is in one helper.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use serde::{Deserialize, Serialize};

use crate::notify::CallerCtx;
use crate::proto::{CallArgs, HelperReply};
use crate::sys;

use super::{become_root_of, nsid, Worker};

/// Nested user namespaces served at once by one container's helper; a container making more
/// (a build tool that runs each step in its own sandbox) ends the least recently used helper,
/// and that namespace's next call starts a new one, which protects every mount it finds.
pub const MAX: usize = 16;

/// How deep user namespaces nest (the kernel's limit is 32 levels below the initial one).
const MAX_DEPTH: usize = 33;

/// A call handed to a nested helper. Descriptors, in this order: the caller's root, cwd,
/// mount namespace and user namespace, then the optional ones that are present.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    call: CallArgs,
    userns: (u64, u64),
    sys_admin: bool,
    view_ns: bool,
    target_fd: bool,
    source_fd: bool,
}

/// The container's helper's end of one nested helper.
struct Nested {
    pid: Pid,
    sock: OwnedFd,
    used: u64,
}

/// The nested helpers of one container's helper, by user namespace.
#[derive(Default)]
pub struct NestedHelpers {
    by_userns: HashMap<(u64, u64), Nested>,
    clock: u64,
}

/// `user` is nested in the user namespace `ancestor` (at any depth). The walk up stops at the
/// helper's own user namespace: the kernel answers EPERM for a parent outside it.
pub fn nested_in(user: BorrowedFd<'_>, ancestor: (u64, u64)) -> bool {
    let mut cur: Option<OwnedFd> = None;
    for _ in 0..MAX_DEPTH {
        let here = cur.as_ref().map_or(user, |c| c.as_fd());
        let Ok(parent) = sys::ns_parent(here) else {
            return false;
        };
        if nsid(parent.as_fd()).is_ok_and(|id| id == ancestor) {
            return true;
        }
        cur = Some(parent);
    }
    false
}

impl NestedHelpers {
    /// Hand a call from a nested user namespace to its helper (started if needed) and return
    /// its answer. `w` is the container's helper's state, which a new nested helper starts
    /// from. An error fails the call closed.
    pub fn forward(
        &mut self,
        w: &Worker,
        call: &CallArgs,
        ctx: &CallerCtx,
    ) -> io::Result<HelperReply> {
        self.reap();
        self.clock += 1;
        let now = self.clock;
        if !self.by_userns.contains_key(&ctx.userns) {
            if self.by_userns.len() >= MAX {
                self.end_least_recently_used();
            }
            let n = spawn(w, ctx.user.as_fd(), ctx.userns)?;
            self.by_userns.insert(ctx.userns, n);
        }
        let n = self.by_userns.get_mut(&ctx.userns).expect("inserted above");
        n.used = now;
        let req = Request {
            call: call.clone(),
            userns: ctx.userns,
            sys_admin: ctx.sys_admin,
            view_ns: ctx.view_ns.is_some(),
            target_fd: ctx.target_fd.is_some(),
            source_fd: ctx.source_fd.is_some(),
        };
        let mut fds: Vec<RawFd> = [&ctx.root, &ctx.cwd, &ctx.mnt, &ctx.user]
            .iter()
            .map(|f| f.as_raw_fd())
            .collect();
        for f in [&ctx.view_ns, &ctx.target_fd, &ctx.source_fd]
            .into_iter()
            .flatten()
        {
            fds.push(f.as_raw_fd());
        }
        let answer = sys::send(
            n.sock.as_raw_fd(),
            &serde_json::to_vec(&req).expect("serializable"),
            &fds,
        )
        .and_then(|_| sys::recv(n.sock.as_raw_fd()));
        match answer {
            Ok(Some((b, _))) => serde_json::from_slice(&b).map_err(io::Error::other),
            other => {
                // Gone or broken: the next call of that namespace starts a new one.
                if let Some(n) = self.by_userns.remove(&ctx.userns) {
                    end(n);
                }
                Err(match other {
                    Err(e) => e,
                    _ => io::Error::other("the nested helper is gone"),
                })
            }
        }
    }

    /// Forget the nested helpers that have exited.
    fn reap(&mut self) {
        self.by_userns.retain(|_, n| {
            matches!(
                waitpid(n.pid, Some(WaitPidFlag::WNOHANG)),
                Ok(WaitStatus::StillAlive)
            )
        });
    }

    fn end_least_recently_used(&mut self) {
        let oldest = self
            .by_userns
            .iter()
            .min_by_key(|(_, n)| n.used)
            .map(|(k, _)| *k);
        if let Some(n) = oldest.and_then(|k| self.by_userns.remove(&k)) {
            if crate::verbose() {
                eprintln!(
                    "eci-supervisor helper: {MAX} nested user namespaces served; ending the \
                     least recently used one's helper (pid {})",
                    n.pid
                );
            }
            end(n);
        }
    }
}

impl Drop for NestedHelpers {
    /// The container's helper ends (its container is gone): so do its nested helpers, reaped
    /// here rather than left to whoever inherits them.
    fn drop(&mut self) {
        for (_, n) in self.by_userns.drain() {
            end(n);
        }
    }
}

fn end(n: Nested) {
    let _ = nix::sys::signal::kill(n.pid, nix::sys::signal::Signal::SIGKILL);
    let _ = waitpid(n.pid, None);
}

/// Fork a nested helper for the user namespace `user` and wait until it is that namespace's
/// root.
fn spawn(w: &Worker, user: BorrowedFd<'_>, userns: (u64, u64)) -> io::Result<Nested> {
    let (mine, theirs) = sys::channel()?;
    let parent = nix::unistd::getpid();
    // SAFETY: the helper is single-threaded (it setns'd into a user namespace, which the
    // kernel allows only then), so the child is a full copy with no lock held by another
    // thread.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Child => {
            drop(mine);
            // A panic must not unwind into the copied frames of the container's helper (whose
            // destructors would end its other nested helpers).
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                child(w, theirs, user, userns, parent)
            }))
            .unwrap_or(1);
            // SAFETY: leaves the forked copy without running the parent's destructors (the
            // container helper's descriptors and children are not this process's to close).
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            let n = Nested {
                pid: child,
                sock: mine,
                used: 0,
            };
            match sys::recv(n.sock.as_raw_fd()) {
                Ok(Some((b, _))) => {
                    let r: HelperReply = match serde_json::from_slice(&b) {
                        Ok(r) => r,
                        Err(e) => {
                            end(n);
                            return Err(io::Error::other(e));
                        }
                    };
                    if r.errno != 0 {
                        end(n);
                        return Err(io::Error::new(
                            io::ErrorKind::PermissionDenied,
                            format!(
                                "the nested user namespace's helper did not start: {}",
                                r.note
                            ),
                        ));
                    }
                    Ok(n)
                }
                Ok(None) => {
                    end(n);
                    Err(io::Error::other(
                        "the nested helper ended before it started",
                    ))
                }
                Err(e) => {
                    end(n);
                    Err(e)
                }
            }
        }
    }
}

fn child(w: &Worker, sock: OwnedFd, user: BorrowedFd<'_>, userns: (u64, u64), parent: Pid) -> i32 {
    let keep = [
        sock.as_raw_fd(),
        user.as_raw_fd(),
        w.powers.as_raw_fd(),
        w.proc.as_raw_fd(),
    ];
    if close_all_but(w.proc.as_fd(), &keep).is_err() {
        return 1;
    }
    let reply = |errno: i32, note: String| {
        sys::send(
            sock.as_raw_fd(),
            &serde_json::to_vec(&HelperReply { errno, note }).expect("serializable"),
            &[],
        )
    };
    if let Err(e) = become_root_of(user) {
        let _ = reply(libc::EPERM, e);
        return 1;
    }
    // After the change of ids, which clears the parent-death signal.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    if nix::unistd::getppid() != parent {
        return 1;
    }
    let mut me = match w.for_nested(userns) {
        Ok(me) => me,
        Err(e) => {
            let _ = reply(libc::EPERM, format!("copy the helper's descriptors: {e}"));
            return 1;
        }
    };
    if reply(0, "ready".into()).is_err() {
        return 1;
    }
    loop {
        let Ok(Some((b, fds))) = sys::recv(sock.as_raw_fd()) else {
            return 0;
        };
        let answer = match serde_json::from_slice::<Request>(&b) {
            Ok(req) => match context(&req, fds) {
                Some(ctx) => {
                    let (errno, note) = me.handle(&req.call, &ctx);
                    HelperReply { errno, note }
                }
                None => HelperReply {
                    errno: libc::EINVAL,
                    note: "descriptors do not match the request".into(),
                },
            },
            Err(e) => HelperReply {
                errno: libc::EINVAL,
                note: format!("bad request: {e}"),
            },
        };
        if sys::send(
            sock.as_raw_fd(),
            &serde_json::to_vec(&answer).expect("serializable"),
            &[],
        )
        .is_err()
        {
            return 0;
        }
    }
}

/// The caller's context from a request's descriptors.
fn context(req: &Request, fds: Vec<OwnedFd>) -> Option<CallerCtx> {
    let want = 4 + [req.view_ns, req.target_fd, req.source_fd]
        .iter()
        .filter(|b| **b)
        .count();
    if fds.len() != want {
        return None;
    }
    let mut it = fds.into_iter();
    let (root, cwd, mnt, user) = (it.next()?, it.next()?, it.next()?, it.next()?);
    let mut take = |present: bool| if present { it.next() } else { None };
    let view_ns = take(req.view_ns);
    let target_fd = take(req.target_fd);
    let source_fd = take(req.source_fd);
    Some(CallerCtx {
        root,
        cwd,
        mnt,
        user,
        userns: req.userns,
        sys_admin: req.sys_admin,
        view_ns,
        target_fd,
        source_fd,
    })
}

/// Close every descriptor but stdout, stderr and `keep`: the copies of the container's
/// helper's socket to the supervisor (stdin), its listeners and its other nested helpers'
/// sockets are not this process's (a copy of the supervisor's socket would keep the
/// supervisor from seeing its helper end).
fn close_all_but(proc: BorrowedFd<'_>, keep: &[RawFd]) -> io::Result<()> {
    let dir = nix::dir::Dir::openat(
        proc,
        "thread-self/fd",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
        nix::sys::stat::Mode::empty(),
    )?;
    let own = dir.as_raw_fd();
    let fds: Vec<RawFd> = dir
        .into_iter()
        .flatten()
        .filter_map(|e| e.file_name().to_str().ok()?.parse().ok())
        .filter(|fd| *fd != 1 && *fd != 2 && *fd != own && !keep.contains(fd))
        .collect();
    for fd in fds {
        // SAFETY: these numbers are copies the fork made of the parent's descriptors, which
        // nothing in this process uses any more (it leaves by _exit, no destructor runs).
        unsafe { libc::close(fd) };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A user namespace made by a child process is nested in this process's; this process's
    /// own is nested neither in itself nor in the child's.
    #[test]
    fn nested_user_namespaces_are_found_by_their_parents() {
        let mine = std::fs::File::open("/proc/self/ns/user").unwrap();
        let me = nsid(mine.as_fd()).unwrap();
        assert!(!nested_in(mine.as_fd(), me));
        let mut child = std::process::Command::new("unshare")
            .args(["--user", "sleep", "30"])
            .spawn()
            .expect("unshare(1), from util-linux");
        let path = format!("/proc/{}/ns/user", child.id());
        // unshare(1) makes the namespace just after it starts.
        let mut nested = None;
        for _ in 0..100 {
            let f = std::fs::File::open(&path).unwrap();
            if nsid(f.as_fd()).unwrap() != me {
                nested = Some(f);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let nested = nested.expect("unshare made no user namespace");
        let id = nsid(nested.as_fd()).unwrap();
        assert!(nested_in(nested.as_fd(), me));
        assert!(!nested_in(mine.as_fd(), id));
        let _ = child.kill();
        let _ = child.wait();
    }
}
