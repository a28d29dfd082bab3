//! What the runtime calls: make sure a server answers, register and unregister a container.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::registry::{Record, Registry};
use crate::{Error, Layout};

/// How long a create waits for a server it started.
const START_WAIT: Duration = Duration::from_secs(5);

fn request(layout: &Layout, line: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(layout.socket())?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(format!("{line}\n").as_bytes())?;
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer)?;
    Ok(answer)
}

/// True when a server answers on the layout's socket.
pub fn ping(layout: &Layout) -> bool {
    request(layout, "ping").is_ok_and(|a| a.starts_with("ok"))
}

/// Starts `bin serve` unless a server answers, and waits for it. Concurrent callers may each
/// start one: the servers' lock lets one win and the others exit.
pub fn ensure_server(layout: &Layout, bin: &Path) -> Result<(), Error> {
    if ping(layout) {
        return Ok(());
    }
    let log = crate::server::open_log(layout).map_err(|e| Error::io(&layout.log(), e))?;
    let err = log.try_clone().map_err(|e| Error::io(&layout.log(), e))?;
    // Its own process group and no inherited pipes: the engine's shim waits for the runtime's
    // output to close, and must not wait for the server.
    let mut child = Command::new(bin)
        .arg("serve")
        .env("ECI_VIEWS_ROOT", &layout.root)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .current_dir("/")
        .process_group(0)
        .spawn()
        .map_err(|e| Error::io(bin, e))?;
    let deadline = Instant::now() + START_WAIT;
    while Instant::now() < deadline {
        if ping(layout) {
            return Ok(());
        }
        // Reap a loser of the lock race (or a server that failed) without blocking.
        let _ = child.try_wait();
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(Error::NoServer {
        socket: layout.socket(),
        bin: bin.to_path_buf(),
        secs: START_WAIT.as_secs(),
        log: layout.log(),
    })
}

pub fn register(layout: &Layout, rec: &Record) -> Result<(), Error> {
    Registry::new(layout.records()).put(rec)
}

/// Removes the record and tells the server to drop the container; a server that is not
/// running has nothing to drop.
pub fn unregister(layout: &Layout, key: &str) -> Result<(), Error> {
    Registry::new(layout.records()).remove(key)?;
    let _ = request(layout, &format!("forget {key}"));
    Ok(())
}

/// What the runtime knows of a container at create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The runtime's state root (`--root`) and the container's id: together its key.
    pub state_root: std::path::PathBuf,
    pub id: String,
    /// The container's state folder (gone: the container is gone).
    pub state_dir: std::path::PathBuf,
    pub root_uid: u32,
    pub root_gid: u32,
    pub id_range: u32,
    pub cgroup: crate::cgroup::CgroupDirs,
}

/// Registers a container with a fresh identity, starting `server_bin serve` if no server
/// answers. Returns the container's folder in the mount.
pub fn register_container(
    layout: &Layout,
    server_bin: &Path,
    c: &Container,
) -> Result<std::path::PathBuf, Error> {
    use crate::registry;
    ensure_server(layout, server_bin)?;
    let key = registry::key(&c.state_root, &c.id);
    let urandom =
        |r: std::io::Result<String>| r.map_err(|e| Error::io(Path::new("/dev/urandom"), e));
    let rec = Record {
        key: key.clone(),
        cgroup: c.cgroup.clone(),
        root_uid: c.root_uid,
        root_gid: c.root_gid,
        id_range: c.id_range,
        started_boottime_ns: registry::boottime_ns(),
        boot_id: urandom(registry::new_uuid())?,
        machine_id: urandom(registry::new_machine_id())?,
        product_uuid: urandom(registry::new_uuid())?,
        state_dir: c.state_dir.clone(),
    };
    register(layout, &rec)?;
    Ok(layout.container(&key))
}
