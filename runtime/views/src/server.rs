//! The long-lived process around the filesystem: one FUSE mount for all containers, a control
//! socket (liveness and "forget this container"), and a sampler for load averages and for
//! records whose container is gone.
//!
//! [`serve`] is the seam for a supervisor: it runs in the calling thread until the mount goes
//! away, so a supervisor can host it in a thread of its own instead of `eci-views serve`.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use crate::fs::{sample, Shared, Views};
use crate::held::HeldDir;
use crate::registry::Registry;
use crate::{Error, Layout};

/// How often load averages are sampled (the kernel's own period).
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Serves the views of every registered container until the mount is taken away. Fails with
/// [`Error::AlreadyServing`] when another server holds the layout's lock.
pub fn serve(layout: &Layout, threads: usize) -> Result<(), Error> {
    std::fs::create_dir_all(&layout.root).map_err(|e| Error::io(&layout.root, e))?;
    // The mount point as mountinfo shows it (no symlink, absolute): a server taking the
    // connection over finds the mount by it.
    let canonical = std::fs::canonicalize(&layout.root).map_err(|e| Error::io(&layout.root, e))?;
    let layout = &Layout::new(canonical);
    let root = &layout.root;
    let _ = std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700));
    let lock_path = layout.lock();
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| Error::io(&lock_path, e))?;
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock)
        .map_err(|_| Error::AlreadyServing(lock_path.clone()))?;

    let mnt = layout.mount();
    // The store first: a store this server starts is not a child that sees the FUSE device.
    let store_path = eci_init::fd_store::socket_for(&layout.socket());
    let mut store = eci_init::fd_store::connect_or_start(&store_path);
    if store.is_none() {
        eprintln!(
            "eci-views: no fd store answers at {}: if this server dies, the running containers' views fail (ENOTCONN) until they are recreated",
            store_path.display()
        );
    }
    let mut conn = crate::connection::open(layout, &mut store)?;
    let (session, shared) = loop {
        let held = HeldDir::new(layout.held());
        if !conn.resumed {
            held.clear().map_err(|e| Error::io(&layout.held(), e))?;
        }
        let generation = held
            .next_generation()
            .map_err(|e| Error::io(&layout.held(), e))?;
        let shared = Shared::new(Registry::new(layout.records()), held, generation);
        let mut config = fuser::Config::default();
        config.acl = fuser::SessionACL::All;
        config.n_threads = Some(threads.max(1));
        config.clone_fd = threads > 1;
        match crate::connection::session(&mut conn, Views(shared.clone()), config, &mnt) {
            Ok(s) => break (s, shared),
            Err(e) if conn.resumed => {
                eprintln!("eci-views: {e}; its containers' views end (ENOTCONN), mounting anew");
                crate::connection::discard(store.as_ref(), layout, conn);
                conn = crate::connection::mount_new(&mnt)?;
            }
            Err(e) => return Err(e),
        }
    };
    if conn.resumed {
        let (found, gone) = shared.resume();
        eprintln!(
            "eci-views: took the FUSE connection of {} back from the fd store: {} containers re-attached{}",
            mnt.display(),
            found.len(),
            if gone.is_empty() {
                String::new()
            } else {
                format!(
                    "; not re-attached (record gone or made anew): {}",
                    gone.join(", ")
                )
            }
        );
    }
    if let Some(store) = &store {
        crate::connection::deposit(store, layout, &conn);
    }
    // The thread that sends page-cache notifications (crate::notifier); a server without it
    // would answer sendfile readers with the size a lookup gave, 0.
    shared
        .set_notifier(session.notifier())
        .map_err(|e| Error::io(&mnt, e))?;

    let sock = layout.socket();
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).map_err(|e| Error::io(&sock, e))?;
    let _ = std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600));
    {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || control(listener, &shared))
            .map_err(|e| Error::io(&sock, e))?;
    }
    {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("sampler".into())
            .spawn(move || sampler(&shared))
            .map_err(|e| Error::io(&sock, e))?;
    }
    let now = || {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        eci_facts::rfc3339(t, eci_facts::Precision::Millis)
    };
    eprintln!(
        "{} eci-views[{}]: serving {} ({} worker threads)",
        now(),
        std::process::id(),
        mnt.display(),
        threads
    );
    let end = session.run();
    // The loop ends when the mount goes away (unmounted, or the connection aborted).
    eprintln!(
        "{} eci-views[{}]: the FUSE session ended ({end:?})",
        now(),
        std::process::id()
    );
    end.map_err(|e| Error::io(&mnt, e))
}

fn control(listener: UnixListener, shared: &Arc<Shared>) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let mut line = String::new();
        if BufReader::new(&conn).read_line(&mut line).is_err() {
            continue;
        }
        let answer = match line.trim().split_once(' ') {
            None if line.trim() == "ping" => format!("ok eci-views {}\n", std::process::id()),
            Some(("forget", key)) => {
                shared.forget(key);
                "ok\n".to_string()
            }
            _ => "error: unknown request (ping | forget KEY)\n".to_string(),
        };
        let _ = conn.write_all(answer.as_bytes());
    }
}

fn sampler(shared: &Arc<Shared>) {
    loop {
        std::thread::sleep(SAMPLE_EVERY);
        for (key, c) in shared.containers() {
            // The runtime removes the record at delete; a runtime that died first leaves a
            // record whose state folder is gone.
            if !shared.registry().exists(&key) {
                shared.forget(&key);
                continue;
            }
            if !c.rec.state_dir.as_os_str().is_empty() && !c.rec.state_dir.exists() {
                let _ = shared.registry().remove(&key);
                shared.forget(&key);
                continue;
            }
            let mut l = c.load.lock().unwrap_or_else(|e| e.into_inner());
            if l.wanted {
                sample(&c, &mut l, SAMPLE_EVERY.as_secs_f64());
            }
        }
    }
}

/// Opens the server's log for appending (the client points the server's stderr there).
pub fn open_log(layout: &Layout) -> std::io::Result<File> {
    std::fs::create_dir_all(&layout.root)?;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(layout.log())
}
