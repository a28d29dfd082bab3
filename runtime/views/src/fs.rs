//! The FUSE filesystem: the root lists containers (VM root only), each container's folder
//! holds its views. Inode numbers are `slot << 8 | node`: a slot is given once per container
//! registration and never reused on one FUSE connection (held.rs keeps them across the
//! connection's servers), so a stale inode of a deleted container cannot reach a new one.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyWrite, Request, WriteFlags,
};

use crate::cgroup::{CgroupFiles, CpuStats};
use crate::held::{Held, HeldDir};
use crate::knobs::{self, Knob};
use crate::notifier::{Answer, Job, Notice, Queue};
use crate::registry::{self, Record, Registry};
use crate::render;

/// How long the kernel may cache names and attributes. A view's size is the length of the text
/// last put in the kernel's page cache (see [`Views::open`]); the knobs have no size (as in
/// procfs) and are read with direct I/O.
pub(crate) const TTL: Duration = Duration::from_secs(1);

/// How long a rendered view is reused for the next opens of the same file of the same
/// container. The cgroup's memory.stat is most of a render and the kernel itself folds its
/// per-CPU counters into it only every few seconds (v2 flushes every 2 s, the VM's vmstat every
/// second), so a text a few ms old shows nothing the reader could have seen otherwise; a
/// container reading in a loop (top, free -s, a benchmark) renders once per period.
/// `ECI_VIEWS_RENDER_MS` (read at start) changes it, 0 renders every open.
const RENDER_TTL: Duration = Duration::from_millis(5);

fn render_ttl() -> Duration {
    static T: OnceLock<Duration> = OnceLock::new();
    *T.get_or_init(|| {
        std::env::var("ECI_VIEWS_RENDER_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(RENDER_TTL, Duration::from_millis)
    })
}

/// What the kernel holds for one cached view file of one container.
#[derive(Debug, Default, Clone)]
enum Stored {
    /// Nothing: the size is 0 as lookup said.
    #[default]
    Nothing,
    /// This text: in the page cache, or to be read into it from an open's own copy (after an
    /// invalidation, or when the kernel dropped the pages); its length is the inode's size.
    Text(Arc<Vec<u8>>),
    /// Not known (a server before stored it, or a notification failed): the next open,
    /// getattr or lookup drops it and stores its own.
    Unknown,
}

/// The server's side of one view file of one container.
#[derive(Debug)]
struct ViewState {
    /// What the kernel holds once the notifications decided so far are sent: one thread sends
    /// them, in the order they were decided (crate::notifier), so the last decision is what
    /// the kernel ends with.
    stored: Stored,
    /// Notifications queued for this view and not sent yet (stores and invalidations, not
    /// [`Notice::Follow`]s): an open of the decided text is answered only after them.
    pending: u32,
    /// The last notification sent for this view went through.
    last_sent: bool,
    /// The size getattr answers: the length the kernel has or is being told (set just before
    /// a notification is sent), not that of a text whose store still waits in the queue.
    /// Set before, not after: a getattr answered between a store and the update would give
    /// the old length, which the kernel takes as a truncation of the new text. 0 until the
    /// first store, also after a restart (the kernel's copy is not known) until an open, a
    /// getattr or a lookup stores a text.
    size: u64,
    /// The text the kernel holds: what the reads of pages it does not hold (after an
    /// invalidation, or dropped) are answered from, for every open served through the page
    /// cache. Set when the kernel's size becomes that text's: before a store (which grows the
    /// size first and then waits for the pages a read holds), after an invalidation (which
    /// leaves the size as it was and waits for those pages too: a read answered with a
    /// shorter text while the old size stands would be padded with zeros). None when not
    /// known.
    kernel_text: Option<Arc<Vec<u8>>>,
    /// When the last notification was sent: getattr renders the view again only once this is
    /// [`TTL`] old (see `getattr`).
    sent_at: Option<Instant>,
    /// The last rendered text and when, reused for [`RENDER_TTL`].
    rendered: Option<(Instant, Arc<Vec<u8>>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    Proc(&'static str),
    Knob(&'static Knob),
    BootId,
    MachineId,
    ProductUuid,
}

#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub parent: usize,
    pub kind: Kind,
}

/// The fixed tree of one container's folder; node 0 is the folder itself.
#[derive(Debug)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    pub fn get() -> &'static Tree {
        static T: OnceLock<Tree> = OnceLock::new();
        T.get_or_init(|| {
            let mut nodes = vec![Node {
                name: String::new(),
                parent: 0,
                kind: Kind::Dir,
            }];
            let mut add = |name: &str, parent: usize, kind: Kind| {
                nodes.push(Node {
                    name: name.into(),
                    parent,
                    kind,
                });
                nodes.len() - 1
            };
            let proc_ = add("proc", 0, Kind::Dir);
            for f in crate::PROC_FILES {
                add(f, proc_, Kind::Proc(f));
            }
            let sysctl = add("sysctl", 0, Kind::Dir);
            for k in knobs::KNOBS {
                add(&knobs::file_name(k), sysctl, Kind::Knob(k));
            }
            add("boot_id", 0, Kind::BootId);
            add("machine-id", 0, Kind::MachineId);
            let dmi = add("dmi", 0, Kind::Dir);
            let id = add("id", dmi, Kind::Dir);
            add("product_uuid", id, Kind::ProductUuid);
            assert!(nodes.len() < 256, "the inode layout has 8 bits per node");
            Tree { nodes }
        })
    }

    /// The node at `path` (`proc/meminfo`) below the container folder.
    pub fn find(&self, path: &str) -> Option<usize> {
        let mut at = 0;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            at = self.child(at, part)?;
        }
        Some(at)
    }

    pub fn child(&self, parent: usize, name: &str) -> Option<usize> {
        self.nodes
            .iter()
            .enumerate()
            .skip(1)
            .find(|(_, n)| n.parent == parent && n.name == name)
            .map(|(i, _)| i)
    }
}

/// The load average of one container, sampled while someone reads it.
#[derive(Debug, Default)]
pub struct Load {
    pub avg: [f64; 3],
    pub running: u64,
    pub total: u64,
    pub last_pid: u64,
    /// Read at least once: the sampler then keeps it current.
    pub wanted: bool,
}

/// A registered container as the server holds it.
#[derive(Debug)]
pub struct Container {
    pub rec: Record,
    slot: u64,
    pub cg: CgroupFiles,
    knobs: Mutex<HashMap<&'static str, String>>,
    pub load: Mutex<Load>,
    /// Per node. The lock also orders the stores of two opens of one file.
    views: Mutex<Vec<ViewState>>,
}

impl Container {
    /// `held`: what the server before on this connection kept of it (its knobs; and the kernel
    /// may hold pages of its views that this server did not put there).
    fn new(rec: Record, slot: u64, held: Option<&Held>) -> Container {
        let knobs = held.map_or_else(HashMap::new, |h| {
            knobs::KNOBS
                .iter()
                .filter_map(|k| Some((k.path, h.knobs.get(k.path)?.clone())))
                .collect()
        });
        let stored = if held.is_some() {
            Stored::Unknown
        } else {
            Stored::Nothing
        };
        Container {
            cg: CgroupFiles::new(rec.cgroup.clone()),
            rec,
            slot,
            knobs: Mutex::new(knobs),
            load: Mutex::new(Load::default()),
            views: Mutex::new(
                (0..Tree::get().nodes.len())
                    .map(|_| ViewState {
                        stored: stored.clone(),
                        pending: 0,
                        last_sent: true,
                        size: 0,
                        kernel_text: None,
                        sent_at: None,
                        rendered: None,
                    })
                    .collect(),
            ),
        }
    }

    /// Its part of what the server keeps (held.rs), with these knobs.
    fn held_of(&self, knobs: &HashMap<&'static str, String>) -> Held {
        Held {
            slot: self.slot,
            boot_id: self.rec.boot_id.clone(),
            knobs: knobs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    /// The size to report for `node`: its stored text's length for the cached views, 0 for
    /// folders and knobs.
    pub(crate) fn size(&self, node: usize) -> u64 {
        if !cached(Tree::get().nodes[node].kind) {
            return 0;
        }
        let v = self.views.lock().unwrap_or_else(|e| e.into_inner());
        v.get(node).map_or(0, |v| v.size)
    }

    /// Whether this server does not know what the kernel holds for `node` (a server before
    /// stored it, or a notification failed).
    fn copy_unknown(&self, node: usize) -> bool {
        let v = self.views.lock().unwrap_or_else(|e| e.into_inner());
        v.get(node)
            .is_some_and(|v| matches!(v.stored, Stored::Unknown))
    }

    /// The text the kernel holds for `node`, if known.
    fn kernel_text(&self, node: usize) -> Option<Arc<Vec<u8>>> {
        let v = self.views.lock().unwrap_or_else(|e| e.into_inner());
        v.get(node).and_then(|v| v.kernel_text.clone())
    }

    /// After the kernel dropped `node`'s pages for `text` (an invalidation, alone or before a
    /// store): the pages it reads from now on are that text's.
    pub(crate) fn dropped_for(&self, node: usize, text: &Arc<Vec<u8>>) {
        let mut v = self.views.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = v.get_mut(node) {
            v.kernel_text = Some(text.clone());
        }
    }

    /// Whether `node`'s text was sent to the kernel less than `age` ago.
    fn sent_within(&self, node: usize, age: Duration) -> bool {
        let v = self.views.lock().unwrap_or_else(|e| e.into_inner());
        v.get(node)
            .and_then(|v| v.sent_at)
            .is_some_and(|at| at.elapsed() < age)
    }

    /// The text of a view for an open: the one rendered less than [`RENDER_TTL`] ago, else a
    /// new one.
    fn text(&self, shared: &Shared, node: usize, kind: Kind) -> std::io::Result<Arc<Vec<u8>>> {
        let ttl = render_ttl();
        if !cached(kind) || ttl.is_zero() {
            return shared.render(self, kind).map(Arc::new);
        }
        {
            let v = self.views.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, t)) = v.get(node).and_then(|v| v.rendered.as_ref()) {
                if at.elapsed() < ttl {
                    return Ok(t.clone());
                }
            }
        }
        // Rendered without the lock: the cgroup files are read in that time.
        let t = Arc::new(shared.render(self, kind)?);
        let mut v = self.views.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = v.get_mut(node) {
            v.rendered = Some((Instant::now(), t.clone()));
        }
        Ok(t)
    }

    /// Before the notifier sends `notice` for `node` with `text`: what to send. After a failed
    /// notification a store is sent as drop-and-store (the kernel may hold a longer text than
    /// the one the store was decided against); an invalidation's length is set first, for the
    /// getattr it causes.
    pub(crate) fn before_send(&self, node: usize, notice: Notice, text: &Arc<Vec<u8>>) -> Notice {
        let mut views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        let Some(v) = views.get_mut(node) else {
            return notice;
        };
        let notice = match notice {
            Notice::Store if !v.last_sent => Notice::InvalStore,
            n => n,
        };
        let len = text.len() as u64;
        match notice {
            Notice::Inval | Notice::InvalStore => v.size = len,
            // A store only grows the kernel's size (it is decided only for a text at least as
            // long as the one stored before).
            Notice::Store => v.size = v.size.max(len),
            Notice::Follow => {}
        }
        if notice == Notice::Store {
            v.kernel_text = Some(text.clone());
        }
        if notice != Notice::Follow {
            v.sent_at = Some(Instant::now());
        }
        notice
    }

    /// After a store of a text's last byte went through (an open on direct I/O): the kernel's
    /// size is at least `len`, which getattr must not take back.
    pub(crate) fn grew_to(&self, node: usize, len: usize) {
        let mut views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = views.get_mut(node) {
            v.size = v.size.max(len as u64);
        }
    }

    /// After the notifier sent (or, for [`Notice::Follow`], did not need to send) `notice`:
    /// whether the kernel holds the open's text. A failure leaves the kernel's copy unknown
    /// (the next open drops it and stores its own).
    pub(crate) fn after_send(&self, node: usize, notice: Notice, sent: bool) -> bool {
        let mut views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        let Some(v) = views.get_mut(node) else {
            return false;
        };
        if notice == Notice::Follow {
            return v.last_sent;
        }
        v.pending = v.pending.saturating_sub(1);
        v.last_sent = sent;
        if !sent {
            v.stored = Stored::Unknown;
            v.kernel_text = None;
        }
        sent
    }

    /// The container's users: its id range in VM ids, and VM root.
    fn may_read(&self, uid: u32) -> bool {
        uid == 0
            || (uid >= self.rec.root_uid
                && u64::from(uid) < u64::from(self.rec.root_uid) + u64::from(self.rec.id_range))
    }

    /// Only the container's root writes its knobs (and VM root).
    fn may_write(&self, uid: u32) -> bool {
        uid == 0 || uid == self.rec.root_uid
    }

    fn knob(&self, k: &'static Knob) -> String {
        let mut m = self.knobs.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(k.path)
            .or_insert_with(|| {
                std::fs::read_to_string(format!("/proc/sys/{}", k.path))
                    .unwrap_or_else(|_| "0\n".into())
            })
            .clone()
    }

    fn uptime_secs(&self) -> f64 {
        registry::boottime_ns().saturating_sub(self.rec.started_boottime_ns) as f64 / 1e9
    }
}

/// The VM's files the views start from, cached briefly: their lines that pass through (the
/// VM's interrupt counts, hugepage sizes, CPU models) need not be exact to the millisecond,
/// and reading them is most of a view's cost. The container's own numbers are never cached.
/// A /proc/cpuinfo text and the CPUs it lists.
type OnlineCpus = (Arc<String>, Arc<Vec<u32>>);

#[derive(Debug, Default)]
struct HostFiles {
    cache: Mutex<HashMap<&'static str, (Instant, Arc<String>)>>,
    /// The online CPUs of the cached /proc/cpuinfo (same text, same list).
    online: Mutex<Option<OnlineCpus>>,
}

impl HostFiles {
    fn online(&self, info: &Arc<String>) -> Arc<Vec<u32>> {
        let mut o = self.online.lock().unwrap_or_else(|e| e.into_inner());
        match &*o {
            Some((text, list)) if Arc::ptr_eq(text, info) => list.clone(),
            _ => {
                let list = Arc::new(render::online_cpus(info));
                *o = Some((info.clone(), list.clone()));
                list
            }
        }
    }

    fn get(&self, path: &'static str, ttl: Duration) -> std::io::Result<Arc<String>> {
        {
            let c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, t)) = c.get(path) {
                if at.elapsed() < ttl {
                    return Ok(t.clone());
                }
            }
        }
        let t = Arc::new(std::fs::read_to_string(path)?);
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path, (Instant::now(), t.clone()));
        Ok(t)
    }
}

/// An open file.
#[derive(Debug)]
struct OpenFile {
    ino: INodeNo,
    /// Its text: what its reads are answered from on direct I/O (rendered again by a read at
    /// offset 0, as procfs does after a seek to the start).
    text: Arc<Vec<u8>>,
    /// Answered through the page cache (set just before the answer): its reads of pages the
    /// kernel does not hold are answered from the text the kernel holds
    /// ([`ViewState::kernel_text`]).
    cached: Arc<AtomicBool>,
    opened: Instant,
}

#[derive(Debug, Default)]
struct Slots {
    by_key: HashMap<String, u64>,
    by_slot: HashMap<u64, Arc<Container>>,
}

/// State shared by the FUSE workers, the control socket and the sampler.
#[derive(Debug)]
pub struct Shared {
    registry: Registry,
    held: HeldDir,
    /// Slots the connection's server before gave, to containers not looked up again yet.
    waiting: Mutex<HashMap<u64, String>>,
    slots: RwLock<Slots>,
    next_slot: AtomicU64,
    host: HostFiles,
    handles: Mutex<HashMap<u64, OpenFile>>,
    next_fh: AtomicU64,
    notifier: OnceLock<Queue>,
}

impl Shared {
    /// `generation`: this server's number on the connection ([`HeldDir::next_generation`]),
    /// the high bits of its file handles.
    pub fn new(registry: Registry, held: HeldDir, generation: u64) -> Arc<Shared> {
        Arc::new(Shared {
            registry,
            next_slot: AtomicU64::new(held.next_slot()),
            held,
            waiting: Mutex::new(HashMap::new()),
            slots: RwLock::new(Slots::default()),
            host: HostFiles::default(),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new((generation << 40) | 1),
            notifier: OnceLock::new(),
        })
    }

    /// A server taking the connection over: the containers the one before served are found
    /// again by their slots. Returns the keys found and those whose record is gone (their
    /// containers ended while no server ran; the sampler would have dropped them).
    pub fn resume(&self) -> (Vec<String>, Vec<String>) {
        let (mut found, mut gone) = (Vec::new(), Vec::new());
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        for (key, h) in self.held.all() {
            // The same registration: a container created again under the key is a new one.
            let same = matches!(self.registry.get(&key),
                Ok(Some(r)) if h.boot_id.is_empty() || r.boot_id == h.boot_id);
            if same {
                w.insert(h.slot, key.clone());
                found.push(key);
            } else {
                self.held.remove(&key);
                gone.push(key);
            }
        }
        (found, gone)
    }

    /// The session's notifier (set once the session exists; see [`Views::open`]), handed to
    /// the thread that sends notifications (crate::notifier). Without it opens use direct I/O.
    pub fn set_notifier(&self, n: fuser::Notifier) -> std::io::Result<()> {
        let _ = self.notifier.set(Queue::start(n)?);
        Ok(())
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The container of `key`, loaded from its record on first use.
    fn by_key(&self, key: &str) -> Option<(u64, Arc<Container>)> {
        {
            let s = self.slots.read().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = s.by_key.get(key) {
                return Some((*slot, s.by_slot.get(slot)?.clone()));
            }
        }
        let rec = self.registry.get(key).ok()??;
        let mut s = self.slots.write().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = s.by_key.get(key) {
            return Some((*slot, s.by_slot.get(slot)?.clone()));
        }
        // An entry without a boot_id is from a build before it was kept: taken as the same.
        let c = match self
            .held
            .get(key)
            .filter(|h| h.boot_id.is_empty() || h.boot_id == rec.boot_id)
        {
            Some(h) => {
                self.waiting
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&h.slot);
                Arc::new(Container::new(rec, h.slot, Some(&h)))
            }
            None => {
                let slot = self.next_slot.fetch_add(1, Ordering::Relaxed);
                let c = Arc::new(Container::new(rec, slot, None));
                // On disk before the kernel learns the slot (held.rs).
                if let Err(e) = self
                    .held
                    .set_next_slot(slot + 1)
                    .and_then(|()| self.held.put(key, &c.held_of(&HashMap::new())))
                {
                    eprintln!("eci-views: keep container {key}'s slot: {e}");
                    return None;
                }
                c
            }
        };
        let slot = c.slot;
        s.by_key.insert(key.to_string(), slot);
        s.by_slot.insert(slot, c.clone());
        Some((slot, c))
    }

    fn by_slot(&self, slot: u64) -> Option<Arc<Container>> {
        let c = self
            .slots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_slot
            .get(&slot)
            .cloned();
        if c.is_some() {
            return c;
        }
        // An inode the server before gave out (resume).
        let key = self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&slot)
            .cloned()?;
        self.by_key(&key)
            .filter(|(s, _)| *s == slot)
            .map(|(_, c)| c)
    }

    /// Drops a container (deleted): its views answer ENOENT from now on.
    pub fn forget(&self, key: &str) {
        let mut s = self.slots.write().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = s.by_key.remove(key) {
            s.by_slot.remove(&slot);
        }
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, k| k != key);
        self.held.remove(key);
    }

    /// Containers currently held (for the sampler).
    pub fn containers(&self) -> Vec<(String, Arc<Container>)> {
        let s = self.slots.read().unwrap_or_else(|e| e.into_inner());
        s.by_key
            .iter()
            .filter_map(|(k, slot)| Some((k.clone(), s.by_slot.get(slot)?.clone())))
            .collect()
    }

    fn cpus(&self, c: &Container) -> std::io::Result<(CpuStats, usize, Arc<String>)> {
        let info = self.host.get("/proc/cpuinfo", Duration::from_secs(10))?;
        let cpu = c.cg.cpu()?;
        let n = render::visible_cpus(&self.host.online(&info), &cpu).len();
        Ok((cpu, n.max(1), info))
    }

    /// The text of a view file now.
    pub fn render(&self, c: &Container, kind: Kind) -> std::io::Result<Vec<u8>> {
        let short = Duration::from_secs(1);
        let text = match kind {
            Kind::Dir => return Err(std::io::Error::from_raw_os_error(libc::EISDIR)),
            Kind::Proc("meminfo") => {
                render::meminfo(&self.host.get("/proc/meminfo", short)?, &c.cg.memory()?)
            }
            Kind::Proc("swaps") => {
                let mem = render::meminfo(&self.host.get("/proc/meminfo", short)?, &c.cg.memory()?);
                render::swaps(&self.host.get("/proc/swaps", short)?, &mem)
            }
            Kind::Proc("cpuinfo") => {
                let info = self.host.get("/proc/cpuinfo", Duration::from_secs(10))?;
                let cpu = c.cg.cpu()?;
                let v = render::visible_cpus(&self.host.online(&info), &cpu);
                render::cpuinfo(&info, &v)
            }
            Kind::Proc("stat") => {
                let (cpu, n, _) = self.cpus(c)?;
                let up = c.uptime_secs();
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                let btime = (now - up).max(0.0) as u64;
                render::stat(&self.host.get("/proc/stat", short)?, &cpu, n, up, btime)
            }
            Kind::Proc("uptime") => {
                let (cpu, n, _) = self.cpus(c)?;
                render::uptime(c.uptime_secs(), &cpu, n)
            }
            Kind::Proc("loadavg") => {
                let mut l = c.load.lock().unwrap_or_else(|e| e.into_inner());
                if !l.wanted {
                    l.wanted = true;
                    sample(c, &mut l, 0.0);
                }
                render::loadavg(l.avg, l.running, l.total, l.last_pid)
            }
            Kind::Proc("diskstats") => {
                render::diskstats(&self.host.get("/proc/diskstats", short)?, &c.cg.io()?)
            }
            Kind::Proc(_) => return Err(std::io::Error::from_raw_os_error(libc::ENOENT)),
            Kind::Knob(k) => c.knob(k),
            Kind::BootId => format!("{}\n", c.rec.boot_id),
            Kind::MachineId => format!("{}\n", c.rec.machine_id),
            Kind::ProductUuid => format!("{}\n", c.rec.product_uuid),
        };
        Ok(text.into_bytes())
    }
}

/// One load sample: running (R) and uninterruptible (D) threads of the container, folded
/// into the three averages as the kernel does every 5 s (`weight` is the old value's share;
/// 0 starts from the current count).
pub fn sample(c: &Container, l: &mut Load, weight_of: f64) {
    let mut running = 0u64;
    let mut total = 0u64;
    let mut last = 0u32;
    for pid in c.cg.procs() {
        last = last.max(pid);
        let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in rd.flatten() {
            total += 1;
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
            if matches!(state, Some('R') | Some('D')) {
                running += 1;
            }
        }
    }
    // The newest process's pid as the container sees it (the last NSpid column).
    l.last_pid = std::fs::read_to_string(format!("/proc/{last}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|x| x.starts_with("NSpid:"))
                .and_then(|x| x.split_whitespace().last()?.parse().ok())
        })
        .unwrap_or(0);
    for (i, minutes) in [1.0f64, 5.0, 15.0].iter().enumerate() {
        let e = if weight_of == 0.0 {
            0.0
        } else {
            (-weight_of / (minutes * 60.0)).exp()
        };
        l.avg[i] = l.avg[i] * e + running as f64 * (1.0 - e);
    }
    l.running = running;
    l.total = total;
}

/// The views served through the kernel's page cache: read-only texts rendered at open. The
/// knobs are written, so they keep direct I/O.
fn cached(kind: Kind) -> bool {
    !matches!(kind, Kind::Dir | Kind::Knob(_))
}

/// The FUSE side of [`Shared`].
pub struct Views(pub Arc<Shared>);

/// `o` to the notifier thread, or answered here without the page cache if it is gone.
fn push(q: &Queue, o: Job) {
    if let Err(o) = q.push(o) {
        o.answer_without_cache();
    }
}

fn split(ino: INodeNo) -> (u64, usize) {
    (ino.0 >> 8, (ino.0 & 0xff) as usize)
}

fn ino_of(slot: u64, node: usize) -> INodeNo {
    INodeNo(slot << 8 | node as u64)
}

fn attr(ino: INodeNo, kind: Kind, size: u64, uid: u32, gid: u32) -> FileAttr {
    let (ft, perm, nlink) = match kind {
        Kind::Dir => (FileType::Directory, 0o555, 2),
        Kind::Knob(_) => (FileType::RegularFile, 0o644, 1),
        _ => (FileType::RegularFile, 0o444, 1),
    };
    let now = SystemTime::now();
    FileAttr {
        ino,
        size,
        blocks: 0,
        atime: now,
        mtime: now,
        ctime: now,
        crtime: now,
        kind: ft,
        perm,
        nlink,
        uid,
        gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn root_attr() -> FileAttr {
    let mut a = attr(INodeNo::ROOT, Kind::Dir, 0, 0, 0);
    a.perm = 0o711;
    a
}

impl Views {
    /// Puts a text in the kernel's page cache for the inode before the request is answered: an
    /// open's text, so the reads of this open (and sendfile, splice) are served by the kernel
    /// without another round trip (one request per read of a view instead of three: open,
    /// read, the read that finds the end), or the text of now for a getattr, which a reader
    /// that keeps its file open causes when it reads again (see `getattr`), or for a lookup of
    /// a view a server before stored (see `lookup`). When the kernel does not take it, an open
    /// uses direct I/O.
    ///
    /// A store only grows the inode's size. When the text is shorter than the one before, the
    /// kernel is told to drop the inode's pages and attributes instead: the reader's first
    /// read then asks for the size (getattr answers the new length) and the page. When it is
    /// the text the kernel already holds, nothing is sent and the request is answered here. A
    /// text the server does not know the kernel's copy of ([`Stored::Unknown`]: a server before
    /// put it there, or a notification failed) is dropped and then stored, which also sets the
    /// size (a lookup may have said 0).
    ///
    /// The cache is the inode's, and an inode is one file of one container, so another
    /// container never sees it. Every page the kernel asks for, whichever open's read asks, is
    /// answered from the text the kernel holds ([`ViewState::kernel_text`]), so an open
    /// reading after a later one stored its text (or dropped the pages of a longer one) reads
    /// that later, current text whole; before, its pages came from its own text, cut to the
    /// other's length. Two opens at once may thus read each other's (both current) text, and
    /// one that reads in more than one `read(2)` across the other's store may see them mixed:
    /// a store overwrites cached pages in place (runtime/README.md, *Not done yet*).
    ///
    /// The notifications are sent, and the request answered, by the notifier thread
    /// (crate::notifier: a notification waits for page locks that only a worker's answer
    /// releases).
    fn store(&self, q: &Queue, mut o: Job) {
        let c = o.c.clone();
        let back = {
            let mut views = c.views.lock().unwrap_or_else(|e| e.into_inner());
            let Some(v) = views.get_mut(o.node) else {
                drop(views);
                return push(q, o);
            };
            let notice = match &v.stored {
                // The text the kernel holds, or will once the queued notifications are sent:
                // answered after them.
                Stored::Text(t) if (Arc::ptr_eq(t, &o.text) || **t == *o.text) && v.pending > 0 => {
                    Notice::Follow
                }
                Stored::Text(t) if Arc::ptr_eq(t, &o.text) || **t == *o.text => {
                    drop(views);
                    return o.answer_cached();
                }
                Stored::Text(t) if o.text.len() >= t.len() => Notice::Store,
                Stored::Text(_) => Notice::Inval,
                Stored::Nothing => Notice::Store,
                // Pages of a text this server did not store, and a size it does not know
                // (0 if a lookup said so before a text was stored): dropped, then the text stored, which sets the size.
                Stored::Unknown => Notice::InvalStore,
            };
            v.stored = Stored::Text(o.text.clone());
            if notice != Notice::Follow {
                v.pending += 1;
            }
            o.store = Some(notice);
            // Queued under the lock (the queue never blocks): the stores of one file are sent
            // in the order they were decided.
            match q.push(o) {
                Ok(()) => return,
                Err(o) => o,
            }
        };
        back.answer_without_cache();
    }

    /// The container and node of an inode the caller may read.
    fn resolve(&self, req: &Request, ino: INodeNo) -> Result<(Arc<Container>, usize), Errno> {
        let (slot, node) = split(ino);
        let c = self.0.by_slot(slot).ok_or(Errno::ENOENT)?;
        if node >= Tree::get().nodes.len() {
            return Err(Errno::ENOENT);
        }
        if !c.may_read(req.uid()) {
            return Err(Errno::EACCES);
        }
        Ok((c, node))
    }
}

impl Filesystem for Views {
    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str() else {
            return reply.error(Errno::ENOENT);
        };
        if parent == INodeNo::ROOT {
            if req.uid() != 0 {
                return reply.error(Errno::EACCES);
            }
            return match self.0.by_key(name) {
                Some((slot, c)) => reply.entry(
                    &TTL,
                    &attr(
                        ino_of(slot, 0),
                        Kind::Dir,
                        0,
                        c.rec.root_uid,
                        c.rec.root_gid,
                    ),
                    Generation(0),
                ),
                None => reply.error(Errno::ENOENT),
            };
        }
        match self.resolve(req, parent) {
            Ok((c, node)) => match Tree::get().child(node, name) {
                Some(i) => {
                    let (slot, _) = split(parent);
                    let ino = ino_of(slot, i);
                    let kind = Tree::get().nodes[i].kind;
                    let a = attr(ino, kind, c.size(i), c.rec.root_uid, c.rec.root_gid);
                    // A view this server does not know the kernel's copy of (a server before
                    // stored it): its size is not known either, and a size answered here
                    // that differs from the kernel's would cut the inode's pages to it (a 0
                    // did: a reader in the middle of the text met its end). So the text of now
                    // is stored first, through the notifier like an open's: the invalidation
                    // before it drops the kernel's pages and makes it discard this answer's
                    // attributes, and the store sets the size. The length answered counts
                    // where the kernel has no inode for the file yet. Without a text to store,
                    // EIO: the kernel drops the entry and keeps the inode as it is.
                    if cached(kind) && c.copy_unknown(i) {
                        let text = c.text(&self.0, i, kind);
                        return match (self.0.notifier.get(), text) {
                            (Some(q), Ok(text)) => self.store(
                                q,
                                Job {
                                    c,
                                    ino,
                                    node: i,
                                    text,
                                    store: None,
                                    answer: Answer::Entry {
                                        attr: Box::new(a),
                                        reply,
                                    },
                                },
                            ),
                            _ => reply.error(Errno::EIO),
                        };
                    }
                    reply.entry(&TTL, &a, Generation(0))
                }
                None => reply.error(Errno::ENOENT),
            },
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        if ino == INodeNo::ROOT {
            return reply.attr(&TTL, &root_attr());
        }
        let (c, node) = match self.resolve(req, ino) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        let kind = Tree::get().nodes[node].kind;
        let a = attr(ino, kind, c.size(node), c.rec.root_uid, c.rec.root_gid);
        // A size for a view whose copy in the kernel is not known would cut the kernel's
        // pages to it (see `lookup`): only a text stored now gives one.
        let unknown = cached(kind) && c.copy_unknown(node);
        let Some(q) = self.0.notifier.get().filter(|_| cached(kind)) else {
            if unknown {
                return reply.error(Errno::EIO);
            }
            return reply.attr(&TTL, &a);
        };
        // The kernel asks on a stat, and on a read that reaches past the size it has (any read
        // to the end) once its attributes are older than TTL or a store or an invalidation
        // made them stale. A reader that keeps its file open and reads it again (procps' top,
        // free -s and vmstat keep /proc/meminfo and /proc/stat open and read them again from
        // the start at every refresh) gets a text of now, stored before the answer; rendering
        // nothing here left it the text of its open for as long as it ran. Not within TTL of
        // the last store, nor for a read of a file opened less than TTL ago: a new text stored
        // under a reader that is reading one (whose last read asks) would end its text with
        // the other's tail.
        let reading = fh.is_some_and(|fh| {
            let handles = self.0.handles.lock().unwrap_or_else(|e| e.into_inner());
            handles.get(&fh.0).is_some_and(|h| h.opened.elapsed() < TTL)
        });
        if reading || c.sent_within(node, TTL) {
            return reply.attr(&TTL, &a);
        }
        let text = match c.text(&self.0, node, kind) {
            Ok(t) => t,
            Err(_) if unknown => return reply.error(Errno::EIO),
            // The size the kernel has is still right for the text it holds.
            Err(_) => return reply.attr(&TTL, &a),
        };
        self.store(
            q,
            Job {
                c,
                ino,
                node,
                text,
                store: None,
                answer: Answer::Attr {
                    attr: Box::new(a),
                    reply,
                },
            },
        );
    }

    /// Only the truncation of `echo N > knob` (O_TRUNC) is accepted, as a no-op.
    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.resolve(req, ino) {
            Ok((c, node)) => {
                let kind = Tree::get().nodes[node].kind;
                let truncate_only = mode.is_none() && uid.is_none() && gid.is_none();
                if matches!(kind, Kind::Knob(_))
                    && truncate_only
                    && size.is_none_or(|s| s == 0)
                    && c.may_write(req.uid())
                {
                    reply.attr(&TTL, &attr(ino, kind, 0, c.rec.root_uid, c.rec.root_gid))
                } else {
                    reply.error(Errno::EPERM)
                }
            }
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        if ino == INodeNo::ROOT {
            return if req.uid() == 0 {
                reply.ok()
            } else {
                reply.error(Errno::EACCES)
            };
        }
        match self.resolve(req, ino) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let (c, node) = match self.resolve(req, ino) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        let kind = Tree::get().nodes[node].kind;
        let writes = !matches!(flags.acc_mode(), OpenAccMode::O_RDONLY);
        if writes && !(matches!(kind, Kind::Knob(_)) && c.may_write(req.uid())) {
            return reply.error(Errno::EACCES);
        }
        // One text per open, as procfs renders once on the first read: a reader that reads in
        // pieces sees one consistent text (but see `store` for two opens at once).
        let text = match c.text(&self.0, node, kind) {
            Ok(t) => t,
            Err(e) => return reply.error(Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))),
        };
        let fh = self.0.next_fh.fetch_add(1, Ordering::Relaxed);
        let flag = Arc::new(AtomicBool::new(false));
        self.0
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                fh,
                OpenFile {
                    ino,
                    text: text.clone(),
                    cached: flag.clone(),
                    opened: Instant::now(),
                },
            );
        let Some(q) = self.0.notifier.get() else {
            return reply.opened(
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NOFLUSH,
            );
        };
        let o = Job {
            c,
            ino,
            node,
            text,
            store: None,
            answer: Answer::Open {
                fh,
                cached: flag,
                reply,
            },
        };
        if cached(kind) {
            self.store(q, o)
        } else {
            push(q, o)
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let handle = self
            .0
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh.0)
            .filter(|h| h.ino == ino)
            .map(|h| (h.text.clone(), h.cached.load(Ordering::Acquire)));
        let render = || {
            self.resolve(req, ino).and_then(|(c, node)| {
                c.text(&self.0, node, Tree::get().nodes[node].kind)
                    .map_err(|e| Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO)))
            })
        };
        let text = match handle {
            // A page for the cache: from the text whose length the kernel has as the size,
            // which is this open's or a later one's (an open or a getattr stored it).
            Some((own, true)) => {
                let (slot, node) = split(ino);
                self.0
                    .by_slot(slot)
                    .and_then(|c| c.kernel_text(node))
                    .unwrap_or(own)
            }
            // Direct I/O from the start: a text of now, kept for the reads that follow, as
            // procfs renders again after a seek to the start. Not a longer one: sendfile and
            // splice read these through the page cache, up to the size the open's text set
            // (crate::notifier), and would cut it.
            Some((own, false)) if offset == 0 => match render() {
                Ok(t) if t.len() > own.len() => own,
                Ok(t) => {
                    if let Some(h) = self
                        .0
                        .handles
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_mut(&fh.0)
                    {
                        h.text = t.clone();
                    }
                    t
                }
                Err(e) => return reply.error(e),
            },
            Some((own, false)) => own,
            // No handle: opened from a server before on this connection (handles carry the
            // server's generation, so it is never one of this server's). The text the kernel
            // holds, as for a cached open of this server, when this server stored one (an
            // open, getattr or lookup since the restart): its length is the inode's size.
            // Else a text of now, for a caller who may read it (a reader that read part of
            // the old text may see a seam). A READ does not say how its file was opened: an
            // open the server before answered with direct I/O (it does so only when a
            // notification failed) reads the stored text too, new only when another open,
            // getattr or lookup stores one.
            None => {
                // Only cached views have one (knobs are never stored).
                let held = self.resolve(req, ino).map(|(c, node)| c.kernel_text(node));
                match held.and_then(|held| held.map_or_else(render, Ok)) {
                    Ok(t) => t,
                    Err(e) => return reply.error(e),
                }
            }
        };
        let start = (offset as usize).min(text.len());
        let end = start.saturating_add(size as usize).min(text.len());
        reply.data(&text[start..end])
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let (c, node) = match self.resolve(req, ino) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        let Kind::Knob(k) = Tree::get().nodes[node].kind else {
            return reply.error(Errno::EACCES);
        };
        if !c.may_write(req.uid()) {
            return reply.error(Errno::EACCES);
        }
        let current = c.knob(k);
        match std::str::from_utf8(data)
            .ok()
            .and_then(|s| knobs::normalize(s, &current))
        {
            Some(v) => {
                // Kept before the container learns it took (held.rs), under the lock, so two
                // writes at once are kept in the order they took.
                let mut m = c.knobs.lock().unwrap_or_else(|e| e.into_inner());
                let before = m.insert(k.path, v);
                match self.0.held.put(&c.rec.key, &c.held_of(&m)) {
                    Ok(()) => reply.written(data.len() as u32),
                    Err(e) => {
                        match before {
                            Some(b) => m.insert(k.path, b),
                            None => m.remove(k.path),
                        };
                        eprintln!("eci-views: keep container {}'s knobs: {e}", c.rec.key);
                        reply.error(Errno::EIO)
                    }
                }
            }
            None => reply.error(Errno::EINVAL),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        // ENOSYS tells the kernel never to send flush again: one message less per close.
        reply.error(Errno::ENOSYS)
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.0
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh.0);
        reply.ok()
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino == INodeNo::ROOT {
            return if req.uid() == 0 {
                reply.opened(FileHandle(0), FopenFlags::empty())
            } else {
                reply.error(Errno::EACCES)
            };
        }
        match self.resolve(req, ino) {
            Ok((_, node)) if Tree::get().nodes[node].kind == Kind::Dir => {
                reply.opened(FileHandle(0), FopenFlags::empty())
            }
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut entries: Vec<(INodeNo, FileType, String)> = Vec::new();
        if ino == INodeNo::ROOT {
            if req.uid() != 0 {
                return reply.error(Errno::EACCES);
            }
            entries.push((INodeNo::ROOT, FileType::Directory, ".".into()));
            entries.push((INodeNo::ROOT, FileType::Directory, "..".into()));
            let mut keys = self.0.registry().keys();
            keys.sort();
            for k in keys {
                if let Some((slot, _)) = self.0.by_key(&k) {
                    entries.push((ino_of(slot, 0), FileType::Directory, k));
                }
            }
        } else {
            let (_, node) = match self.resolve(req, ino) {
                Ok(x) => x,
                Err(e) => return reply.error(e),
            };
            let (slot, _) = split(ino);
            entries.push((ino, FileType::Directory, ".".into()));
            entries.push((ino, FileType::Directory, "..".into()));
            for (i, n) in Tree::get().nodes.iter().enumerate().skip(1) {
                if n.parent == node {
                    let ft = if n.kind == Kind::Dir {
                        FileType::Directory
                    } else {
                        FileType::RegularFile
                    };
                    entries.push((ino_of(slot, i), ft, n.name.clone()));
                }
            }
        }
        for (i, (ino, ft, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(ino, i as u64 + 1, ft, name) {
                break;
            }
        }
        reply.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_paths() {
        let t = Tree::get();
        assert_eq!(t.find(""), Some(0));
        let m = t.find("proc/meminfo").unwrap();
        assert_eq!(t.nodes[m].kind, Kind::Proc("meminfo"));
        assert!(t.find("proc/nope").is_none());
        let u = t.find("dmi/id/product_uuid").unwrap();
        assert_eq!(t.nodes[u].kind, Kind::ProductUuid);
        assert!(matches!(
            t.nodes[t.find("sysctl/vm.overcommit_memory").unwrap()].kind,
            Kind::Knob(_)
        ));
    }

    #[test]
    fn inodes_split_back() {
        for (slot, node) in [(1u64, 0usize), (7, 3), (1 << 40, 255)] {
            assert_eq!(split(ino_of(slot, node)), (slot, node));
        }
        assert_ne!(ino_of(1, 0), INodeNo::ROOT);
    }

    fn rec(uid: u32) -> Record {
        Record {
            key: "k".into(),
            cgroup: Default::default(),
            root_uid: uid,
            root_gid: uid,
            id_range: 65536,
            started_boottime_ns: registry::boottime_ns(),
            boot_id: "b".into(),
            machine_id: "m".into(),
            product_uuid: "p".into(),
            state_dir: "/nonexistent".into(),
        }
    }

    #[test]
    fn only_the_containers_ids_read_and_only_its_root_writes() {
        let c = Container::new(rec(100_000), 1, None);
        assert!(c.may_read(0) && c.may_read(100_000) && c.may_read(165_535));
        assert!(!c.may_read(165_536) && !c.may_read(99_999) && !c.may_read(1000));
        assert!(c.may_write(100_000) && c.may_write(0));
        assert!(!c.may_write(101_000));
    }

    #[test]
    fn a_rendered_view_is_reused_only_briefly_and_only_for_its_file() {
        let s = Shared::new(
            Registry::new("/nonexistent"),
            HeldDir::new("/nonexistent/held"),
            1,
        );
        let c = Container::new(rec(1), 1, None);
        let t = Tree::get();
        let up = t.find("proc/uptime").unwrap();
        let boot = t.find("boot_id").unwrap();
        let a = c.text(&s, up, Kind::Proc("uptime")).unwrap();
        let b = c.text(&s, up, Kind::Proc("uptime")).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(*c.text(&s, boot, Kind::BootId).unwrap(), b"b\n");
        std::thread::sleep(render_ttl() + Duration::from_millis(2));
        let later = c.text(&s, up, Kind::Proc("uptime")).unwrap();
        assert!(!Arc::ptr_eq(&a, &later));
        // Another container's file of the same name is its own.
        let other = Container::new(rec(2), 2, None);
        let o = other.text(&s, up, Kind::Proc("uptime")).unwrap();
        assert!(!Arc::ptr_eq(&later, &o));
    }

    #[test]
    fn identity_files_are_the_records() {
        let s = Shared::new(
            Registry::new("/nonexistent"),
            HeldDir::new("/nonexistent/held"),
            1,
        );
        let c = Container::new(rec(1), 1, None);
        assert_eq!(s.render(&c, Kind::BootId).unwrap(), b"b\n");
        assert_eq!(s.render(&c, Kind::ProductUuid).unwrap(), b"p\n");
        let up = String::from_utf8(s.render(&c, Kind::Proc("uptime")).unwrap()).unwrap();
        let secs: f64 = up.split_whitespace().next().unwrap().parse().unwrap();
        assert!(secs < 5.0, "{up}");
    }
}
