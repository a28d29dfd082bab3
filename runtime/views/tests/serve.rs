//! The eci-views binary as the runtime uses it: `register` starts a server in a private
//! ECI_VIEWS_ROOT and prints the bind list; the container's folder serves its views from a
//! cgroup with a 256 MiB limit (v2 or v1, whichever this machine runs); a knob write stays in
//! the folder; a server started after one was killed takes the FUSE connection back from the
//! fd store (the first server started it) and the folder reads again, with its identity and
//! knob; with the server and the store gone, reads fail (ENOTCONN) instead of showing
//! anything. Root only (a FUSE mount and a cgroup); skips without root, fails in CI.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_eci-views");

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

struct Fixture {
    root: tempfile::TempDir,
    cgroups: Vec<PathBuf>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for pid in server_pid(self.root.path())
            .into_iter()
            .chain(store_pid(self.root.path()))
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = nix::mount::umount2(
            &self.root.path().join("views/fs"),
            nix::mount::MntFlags::MNT_DETACH,
        );
        for d in &self.cgroups {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn server_pid(root: &Path) -> Option<i32> {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(root.join("views/serve.sock")).ok()?;
    s.write_all(b"ping\n").ok()?;
    let mut l = String::new();
    BufReader::new(&s).read_line(&mut l).ok()?;
    l.trim().rsplit(' ').next()?.parse().ok()
}

/// The fd store the first server started beside its socket (`eci-views fd-store --socket`).
fn store_pid(root: &Path) -> Option<i32> {
    let want = format!("--socket\0{}", root.join("views/fd-store.sock").display());
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|p| {
        let pid: i32 = p.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(p.path().join("cmdline")).ok()?;
        String::from_utf8_lossy(&cmd).contains(&want).then_some(pid)
    })
}

fn kill_and_wait(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    for _ in 0..200 {
        if std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A file's text read with sendfile(2) into a pipe.
fn sendfile_read(path: &Path) -> String {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    let (r, w) = nix::unistd::pipe().unwrap();
    // SAFETY: both descriptors are open for the call; no offset pointer (the file's own).
    let n = unsafe { libc::sendfile(w.as_raw_fd(), f.as_raw_fd(), std::ptr::null_mut(), 4096) };
    assert!(n >= 0, "sendfile: {}", std::io::Error::last_os_error());
    drop(w);
    let mut out = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(r), &mut out).unwrap();
    out
}

/// The folder `register` printed (its first line), as a name.
fn out_folder(out: &std::process::Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or_default();
    Path::new(first)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// A cgroup limited to 256 MiB, as `--cgroup` arguments.
fn cgroup(name: &str, fx: &mut Fixture) -> Vec<String> {
    let v2 = nix::sys::statfs::statfs("/sys/fs/cgroup")
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
    let mut args = Vec::new();
    if v2 {
        let d = PathBuf::from("/sys/fs/cgroup").join(name);
        std::fs::create_dir_all(&d).unwrap();
        fx.cgroups.push(d.clone());
        std::fs::write(d.join("memory.max"), "268435456").unwrap();
        args.push(format!("v2={}", d.display()));
    } else {
        for c in ["memory", "cpu", "cpuacct", "cpuset", "blkio", "pids"] {
            let base = PathBuf::from("/sys/fs/cgroup").join(c);
            if !base.is_dir() {
                continue;
            }
            let d = base.join(name);
            std::fs::create_dir_all(&d).unwrap();
            fx.cgroups.insert(0, d.clone());
            args.push(format!("{c}={}", d.display()));
        }
        std::fs::write(
            PathBuf::from("/sys/fs/cgroup/memory")
                .join(name)
                .join("memory.limit_in_bytes"),
            "268435456",
        )
        .unwrap();
    }
    args.into_iter()
        .flat_map(|a| ["--cgroup".into(), a])
        .collect()
}

fn views(fx: &Fixture, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("ECI_VIEWS_ROOT", fx.root.path().join("views"))
        // The store the first server starts inherits it.
        .env("ECI_FD_STORE_FUSE_GRACE_MS", "3000")
        .output()
        .unwrap()
}

/// `register` of container `id` (state in the fixture's `state/ID`) in cgroup `cg`, which
/// must succeed.
fn register(fx: &Fixture, id: &str, cg: &[String]) -> std::process::Output {
    let state_root = fx.root.path().join("state");
    let state_dir = state_root.join(id);
    std::fs::create_dir_all(&state_dir).unwrap();
    let mut args: Vec<&str> = vec![
        "register",
        "--state-root",
        state_root.to_str().unwrap(),
        "--id",
        id,
        "--state-dir",
        state_dir.to_str().unwrap(),
        "--uid",
        "100000",
        "--gid",
        "100000",
        "--range",
        "65536",
    ];
    args.extend(cg.iter().map(String::as_str));
    let out = views(fx, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn register_serve_read_take_over_and_fail_closed() {
    if !eci_test_support::prerequisite(is_root(), "the views server mounts FUSE: root only") {
        return;
    }
    let mut fx = Fixture {
        root: tempfile::tempdir().unwrap(),
        cgroups: Vec::new(),
    };
    let name = format!("eci-views-test-{}", std::process::id());
    let cg = cgroup(&name, &mut fx);
    let out = register(&fx, "c1", &cg);
    let text = String::from_utf8(out.stdout).unwrap();
    let folder = PathBuf::from(text.lines().next().unwrap());
    assert!(
        text.contains("\nproc/meminfo /proc/meminfo file\n"),
        "{text}"
    );
    assert!(text.contains("\n- /sys/firmware empty-dir\n"), "{text}");

    // The first open of this server, kept open across its restart (a knob: direct I/O, so
    // every read reaches the server).
    let held_knob = std::fs::File::open(folder.join("sysctl/kernel.panic")).unwrap();
    let meminfo = std::fs::read_to_string(folder.join("proc/meminfo")).unwrap();
    assert!(
        meminfo.starts_with("MemTotal:         262144 kB\n"),
        "{meminfo}"
    );
    let boot_id = std::fs::read_to_string(folder.join("boot_id")).unwrap();
    let vm = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_eq!(boot_id.len(), 37);
    assert_ne!(boot_id, vm);
    let uuid = std::fs::read_to_string(folder.join("dmi/id/product_uuid")).unwrap();
    assert_eq!(uuid.len(), 37);
    // A knob: the folder's copy changes, the VM's does not.
    let knob = folder.join("sysctl/kernel.panic");
    let vm_panic = std::fs::read_to_string("/proc/sys/kernel/panic").unwrap();
    let new = if vm_panic.trim() == "7" { "8" } else { "7" };
    std::fs::write(&knob, new).unwrap();
    assert_eq!(std::fs::read_to_string(&knob).unwrap().trim(), new);
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/panic").unwrap(),
        vm_panic
    );
    assert!(std::fs::write(&knob, "x").is_err());

    // The server killed: the next one (started by the next registration) takes the
    // connection back from the store; the first container's folder reads again, the same.
    let first = server_pid(fx.root.path()).expect("server answers");
    let store = store_pid(fx.root.path()).expect("the server started an fd store");
    kill_and_wait(first);
    let out = register(&fx, "c2", &cg);
    let second = server_pid(fx.root.path()).expect("a new server answers");
    assert_ne!(second, first);
    // The new server's first open (another container's file) never shares a handle number
    // with one the kernel kept from the server before: the old handle reads its own file.
    let other_path = folder.with_file_name(out_folder(&out)).join("proc/meminfo");
    let mut other_file = std::fs::File::open(other_path).unwrap();
    let mut other = String::new();
    std::io::Read::read_to_string(&mut other_file, &mut other).unwrap();
    assert!(other.starts_with("MemTotal:"), "{other}");
    let mut buf = [0u8; 64];
    let n = std::os::unix::fs::FileExt::read_at(&held_knob, &mut buf, 0).unwrap();
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), new);
    drop((other_file, held_knob));
    // Asked for its size first (a stat, as a restarted supervisor's helper does on the
    // container's mounts), then read as busybox `cat` reads, with sendfile, which takes the
    // inode's size as it is: the size must be the text's, not 0.
    // The attributes the kernel has from the server before last 1 s (the views' TTL).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let size = std::fs::metadata(folder.join("boot_id")).unwrap().len();
    assert_eq!(
        sendfile_read(&folder.join("boot_id")),
        boot_id,
        "size {size}"
    );
    // A view the container never read before the restart, the same way.
    let uptime = sendfile_read(&folder.join("proc/uptime"));
    assert!(uptime.ends_with('\n') && uptime.contains('.'), "{uptime:?}");
    let meminfo = std::fs::read_to_string(folder.join("proc/meminfo")).unwrap();
    assert!(
        meminfo.starts_with("MemTotal:         262144 kB\n"),
        "{meminfo}"
    );
    assert_eq!(
        std::fs::read_to_string(folder.join("boot_id")).unwrap(),
        boot_id
    );
    assert_eq!(std::fs::read_to_string(&knob).unwrap().trim(), new);
    let log = std::fs::read_to_string(fx.root.path().join("views/serve.log")).unwrap();
    assert!(
        log.contains("took the FUSE connection") && log.contains("1 containers re-attached"),
        "{log}"
    );
    assert_eq!(store_pid(fx.root.path()), Some(store));

    // No server comes back: once the store's grace for the connection ends (3 s here,
    // ECI_FD_STORE_FUSE_GRACE_MS; 15 s by default) it closes the device, and reads fail
    // instead of waiting; they never show anything else.
    kill_and_wait(second);
    // The store saw each server go, holding the one connection (a server that took it back
    // does not deposit it again).
    let went = "a FUSE server went; 1 connection(s) kept";
    let log_path = fx.root.path().join("views/serve.log");
    for _ in 0..200 {
        if std::fs::read_to_string(&log_path)
            .unwrap()
            .matches(went)
            .count()
            >= 2
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(log.matches(went).count(), 2, "{log}");
    assert!(!log.contains("2 connection(s)"), "{log}");
    let err = std::fs::read_to_string(folder.join("proc/meminfo")).unwrap_err();
    // ENOTCONN once the connection is gone; ECONNABORTED while the kernel is aborting it.
    assert!(
        matches!(
            err.raw_os_error(),
            Some(libc::ENOTCONN | libc::ECONNABORTED)
        ),
        "{err}"
    );
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("no server took eci-views "), "{log}");
    assert_eq!(
        store_pid(fx.root.path()),
        Some(store),
        "the store itself lives on"
    );

    let state_root = fx.root.path().join("state");
    let state_root = state_root.to_str().unwrap();
    let out = views(
        &fx,
        &["unregister", "--state-root", state_root, "--id", "c1"],
    );
    assert!(out.status.success());
    let out = views(
        &fx,
        &["unregister", "--state-root", state_root, "--id", "c2"],
    );
    assert!(out.status.success());
    assert!(std::fs::read_dir(fx.root.path().join("views/containers"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn bad_arguments_say_what_is_wrong() {
    let out = Command::new(BIN).arg("register").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--state-root is missing"));
    let out = Command::new(BIN).arg("nonsense").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage:"));
}

/// Ends the FUSE connection mounted at `mnt` (fusectl's `abort`): a server stalled in the
/// kernel cannot be killed, and its readers wait there until the connection ends. Its number is
/// the mount's device minor, read from mountinfo (a stat would wait for the server too).
fn abort_connection(mnt: &Path) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let Some(minor) = info.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (Path::new(f.get(4)?) == mnt).then(|| f[2].split_once(':').map(|d| d.1.to_string()))?
    }) else {
        return;
    };
    let ctl = Path::new("/sys/fs/fuse/connections");
    if !ctl.join(&minor).exists() {
        let _ = nix::mount::mount(
            Some("fusectl"),
            ctl,
            Some("fusectl"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        );
    }
    let _ = std::fs::write(ctl.join(&minor).join("abort"), "1");
}

/// SPEC F1-F3, issue 10: a reader that drops a view's pages (`posix_fadvise(DONTNEED)`, as
/// memory pressure does) makes its next read a READ request with the page locked until the
/// server answers it. A page-cache notification for that file waits for the lock: sent by the
/// FUSE worker that handles another open, it left no worker to answer the READ, and every
/// view of every container stopped answering (one worker here; two by default only takes two
/// such opens). Readers of one container's uptime, rendered at every open, each dropping its
/// pages: they all finish. Then the first opens of new containers' meminfo at once, which
/// wait for the store of the first of them (`Notice::Follow`): none reads an empty text.
#[test]
fn readers_dropping_pages_never_stall_the_server() {
    if !eci_test_support::prerequisite(is_root(), "the views server mounts FUSE: root only") {
        return;
    }
    let mut fx = Fixture {
        root: tempfile::tempdir().unwrap(),
        cgroups: Vec::new(),
    };
    // A server with one worker, started before `register` finds none and starts its own.
    let mut server = Command::new(BIN)
        .args(["serve", "--threads", "1"])
        .env("ECI_VIEWS_ROOT", fx.root.path().join("views"))
        .env("ECI_VIEWS_RENDER_MS", "0")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..500 {
        if server_pid(fx.root.path()).is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(server_pid(fx.root.path()), Some(server.id() as i32));
    let name = format!("eci-views-stall-{}", std::process::id());
    let cg = cgroup(&name, &mut fx);
    let out = register(&fx, "c1", &cg);
    let text = String::from_utf8(out.stdout).unwrap();
    let uptime = PathBuf::from(text.lines().next().unwrap()).join("proc/uptime");

    let (done, finished) = std::sync::mpsc::channel();
    let readers = 4;
    for _ in 0..readers {
        let (path, done) = (uptime.clone(), done.clone());
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
            let mut reads = 0u32;
            while std::time::Instant::now() < until {
                let mut f = std::fs::File::open(&path).unwrap();
                // SAFETY: a plain advice call on a descriptor open for its duration.
                unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
                let mut s = String::new();
                std::io::Read::read_to_string(&mut f, &mut s).unwrap();
                // Whole: two numbers and the line's end, as procfs writes it.
                let fields: Vec<&str> = s.split_whitespace().collect();
                let whole = s.ends_with('\n')
                    && fields.len() == 2
                    && fields.iter().all(|f| f.parse::<f64>().is_ok());
                if !whole {
                    let _ = done.send(Err(s));
                    return;
                }
                reads += 1;
            }
            let _ = done.send(Ok(reads));
        });
    }
    for _ in 0..readers {
        match finished.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(Ok(reads)) => assert!(reads > 10, "only {reads} reads in 3 s"),
            Ok(Err(text)) => panic!("a reader read {text:?}"),
            Err(_) => {
                abort_connection(&fx.root.path().join("views/fs"));
                panic!("a reader stalled: no worker answered its READ");
            }
        }
    }

    // The first opens of a new container's meminfo, at once: the texts are equal (an idle
    // cgroup), so while the first open's store waits in the notifier's queue the others are
    // answered after it, not before (when the kernel's size was still the 0 lookup gave, and
    // they read nothing).
    for id in ["c2", "c3", "c4", "c5", "c6"] {
        let out = register(&fx, id, &cg);
        let text = String::from_utf8(out.stdout).unwrap();
        let meminfo = PathBuf::from(text.lines().next().unwrap()).join("proc/meminfo");
        let start = std::sync::Arc::new(std::sync::Barrier::new(readers));
        let threads: Vec<_> = (0..readers)
            .map(|_| {
                let (path, start) = (meminfo.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    std::fs::read_to_string(path).unwrap()
                })
            })
            .collect();
        for t in threads {
            let m = t.join().unwrap();
            assert!(
                m.starts_with("MemTotal:") && m.ends_with("kB\n"),
                "{id}: {m:?}"
            );
        }
    }
    let _ = server.kill();
    let _ = server.wait();
}

/// A server with one container `c1` in a cgroup of its own (named after `what`): the fixture,
/// the cgroup's name and the container's folder.
fn one_container(what: &str) -> (Fixture, String, PathBuf) {
    let mut fx = Fixture {
        root: tempfile::tempdir().unwrap(),
        cgroups: Vec::new(),
    };
    let name = format!("eci-views-{what}-{}", std::process::id());
    let cg = cgroup(&name, &mut fx);
    let out = register(&fx, "c1", &cg);
    let text = String::from_utf8_lossy(&out.stdout);
    let folder = PathBuf::from(text.lines().next().unwrap());
    (fx, name, folder)
}

/// The memory cgroup folder of the fixture's cgroup `name` (v2: the cgroup itself).
fn memory_cgroup(name: &str) -> PathBuf {
    let v1 = PathBuf::from("/sys/fs/cgroup/memory").join(name);
    if v1.is_dir() {
        v1
    } else {
        PathBuf::from("/sys/fs/cgroup").join(name)
    }
}

/// Charges `mib` MiB of shared memory to cgroup `name`: a file written in /dev/shm by a
/// process in the cgroup (its pages stay charged to it after the process ended, until the
/// file is removed).
fn charge_shmem(name: &str, file: &Path, mib: u32) {
    let procs = memory_cgroup(name).join("cgroup.procs");
    let st = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {} && head -c {} /dev/zero > {}",
            procs.display(),
            mib << 20,
            file.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
}

fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == key).then(|| v.split_whitespace().next()?.parse().ok())?
    })
}

/// F1: procps' top, free -s and vmstat keep /proc/meminfo and /proc/stat open and read them
/// again from the start at every refresh, which procfs answers with a text of now. The
/// server's text of the open, kept in the page cache, showed such a reader the same numbers
/// for as long as it ran: uptime stood still, 20 MiB of shared memory written in the
/// container never appeared, a knob kept its old value (shown failing on the code before).
#[test]
fn a_kept_file_read_again_from_the_start_shows_now() {
    use std::io::{Read, Seek, SeekFrom};
    if !eci_test_support::prerequisite(is_root(), "the views server mounts FUSE: root only") {
        return;
    }
    let (_fx, name, folder) = one_container("kept");
    let shm = PathBuf::from(format!("/dev/shm/eci-views-kept-{}", std::process::id()));

    let reread = |f: &mut std::fs::File| {
        f.seek(SeekFrom::Start(0)).unwrap();
        let mut t = String::new();
        f.read_to_string(&mut t).unwrap();
        t
    };
    let mut uptime = std::fs::File::open(folder.join("proc/uptime")).unwrap();
    let mut meminfo = std::fs::File::open(folder.join("proc/meminfo")).unwrap();
    let mut knob = std::fs::File::open(folder.join("sysctl/kernel.panic")).unwrap();
    let first_uptime = reread(&mut uptime);
    let first_meminfo = reread(&mut meminfo);
    let first_knob = reread(&mut knob);
    // A knob is read with direct I/O: a read from the start renders it again at once.
    let new = if first_knob.trim() == "7" { "8" } else { "7" };
    std::fs::write(folder.join("sysctl/kernel.panic"), new).unwrap();
    assert_eq!(reread(&mut knob).trim(), new, "a kept knob read again");
    assert_eq!(field(&first_meminfo, "Shmem"), Some(0), "{first_meminfo}");
    charge_shmem(&name, &shm, 20);
    // Longer than the attributes' TTL (1 s), after which the kernel asks again.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let second_uptime = reread(&mut uptime);
    let second_meminfo = reread(&mut meminfo);
    let _ = std::fs::remove_file(&shm);
    let secs = |t: &str| -> f64 { t.split_whitespace().next().unwrap().parse().unwrap() };
    assert!(
        secs(&second_uptime) >= secs(&first_uptime) + 1.0,
        "uptime read again from the same file: {first_uptime:?} then {second_uptime:?}"
    );
    assert_eq!(
        field(&second_meminfo, "Shmem"),
        Some(20 << 10),
        "meminfo read again from the same file after 20 MiB of shmem:\n{second_meminfo}"
    );
    // Read whole: the pages and the size are of one text.
    assert_eq!(
        second_meminfo.lines().count(),
        first_meminfo.lines().count()
    );
    assert!(second_meminfo.ends_with(" kB\n"), "{second_meminfo}");
}

/// Limits cgroup `name` to one CPU's time (`--cpus 1`), which the views show as one CPU.
fn limit_to_one_cpu(name: &str) {
    let v1 = PathBuf::from("/sys/fs/cgroup/cpu").join(name);
    if v1.is_dir() {
        std::fs::write(v1.join("cpu.cfs_period_us"), "100000").unwrap();
        std::fs::write(v1.join("cpu.cfs_quota_us"), "100000").unwrap();
    } else {
        std::fs::write(
            PathBuf::from("/sys/fs/cgroup").join(name).join("cpu.max"),
            "100000 100000",
        )
        .unwrap();
    }
}

/// Two opens of one view at once, the second's text shorter (the container's CPU limit went
/// from none to one CPU between them, so /proc/stat lost a `cpuN` line): the first open,
/// reading after the second's open dropped its pages, read its own longer text cut to the
/// second's length (its last line broken). Now the pages are always read from the text whose
/// length the kernel has: the first reader gets a whole text, the second's (shown failing on
/// the code before).
#[test]
fn an_open_reading_after_a_shorter_text_reads_a_whole_text() {
    use std::io::Read;
    if !eci_test_support::prerequisite(is_root(), "the views server mounts FUSE: root only") {
        return;
    }
    // One CPU shows one `cpuN` line with the limit or without.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if !eci_test_support::prerequisite(cpus >= 2, "two CPUs, to show one less") {
        return;
    }
    let (_fx, name, folder) = one_container("shrink");
    let view = folder.join("proc/stat");

    // Its text is stored at this open; nothing read yet.
    let mut first = std::fs::File::open(&view).unwrap();
    limit_to_one_cpu(&name);
    // Past the 5 ms a render is reused for.
    std::thread::sleep(std::time::Duration::from_millis(20));
    // The second open drops the pages of the first's text (its own is shorter) and the
    // first reads before it: its pages are read anew.
    let mut second_file = std::fs::File::open(&view).unwrap();
    let mut text = String::new();
    first.read_to_string(&mut text).unwrap();
    let mut second = String::new();
    second_file.read_to_string(&mut second).unwrap();
    let cpus = |t: &str| {
        t.lines()
            .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
            .count()
    };
    let keys = |t: &str| -> Vec<String> {
        t.lines()
            .map(|l| l.split(' ').next().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(cpus(&second), 1, "{second}");
    // Whole texts of the same shape (a getattr may store a text of a moment later in between,
    // whose numbers differ): the first open's not cut, and not the older text's pages.
    assert!(
        text.ends_with('\n') && keys(&text) == keys(&second),
        "the first open read a broken text:\n{text}\n(the second read:\n{second})"
    );
}

/// A reader in the middle of a view when the server is replaced reads on to the end of a
/// whole text, also once another process's lookup reached the new server (which does not
/// know what the kernel holds). Before, that lookup answered a size of 0, the kernel cut the
/// inode to it, and the reader met the end of its text early.
#[test]
fn a_reader_in_the_middle_of_a_text_reads_on_across_a_restart() {
    if !eci_test_support::prerequisite(is_root(), "the views server mounts FUSE: root only") {
        return;
    }
    use std::io::Read;
    let mut fx = Fixture {
        root: tempfile::tempdir().unwrap(),
        cgroups: Vec::new(),
    };
    let name = format!("eci-views-restart-read-{}", std::process::id());
    let cg = cgroup(&name, &mut fx);
    let out = register(&fx, "c1", &cg);
    let folder = PathBuf::from(String::from_utf8_lossy(&out.stdout).lines().next().unwrap());
    // boot_id: a fixed text, so the new server's text is the old one's and any cut shows.
    let whole = std::fs::read_to_string(folder.join("boot_id")).unwrap();
    assert_eq!(whole.len(), 37, "{whole:?}");
    let mut held = std::fs::File::open(folder.join("boot_id")).unwrap();
    let mut head = [0u8; 8];
    held.read_exact(&mut head).unwrap();
    // /proc/stat, whose text the new server makes shorter: the container's CPU limit set
    // during the restart takes a `cpuN` line away (with two CPUs or more).
    let mut held_stat = std::fs::File::open(folder.join("proc/stat")).unwrap();
    let mut stat_head = [0u8; 16];
    held_stat.read_exact(&mut stat_head).unwrap();

    kill_and_wait(server_pid(fx.root.path()).expect("server answers"));
    register(&fx, "c2", &cg);
    limit_to_one_cpu(&name);
    // The kernel's entries for the files expire (the views' TTL, 1 s): the stats below ask
    // the new server with a lookup, as any other process of the container opening them would.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let size = std::fs::metadata(folder.join("boot_id")).unwrap().len();
    std::fs::metadata(folder.join("proc/stat")).unwrap();
    let mut rest = String::new();
    held.read_to_string(&mut rest).unwrap();
    assert_eq!(
        format!("{}{rest}", String::from_utf8_lossy(&head)),
        whole,
        "the held reader's text (a stat after the lookup said size {size})"
    );
    assert_eq!(size, 37);

    // The held /proc/stat reads on in the new server's text (its head from the old one: a
    // seam inside the first line): a whole text of the new shape, not cut, not padded.
    let mut stat_rest = Vec::new();
    held_stat.read_to_end(&mut stat_rest).unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&stat_head),
        String::from_utf8_lossy(&stat_rest)
    );
    let now = std::fs::read_to_string(folder.join("proc/stat")).unwrap();
    let keys = |t: &str| -> Vec<String> {
        t.lines()
            .map(|l| l.split(' ').next().unwrap_or_default().to_string())
            .collect()
    };
    assert!(
        !text.contains('\0') && text.ends_with('\n') && keys(&text) == keys(&now),
        "the held reader's /proc/stat:\n{text}\n(read now:\n{now})"
    );
}
