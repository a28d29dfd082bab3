//! The id-range allocator (SPEC U1, U2): every live container owns one exclusive 65536-id range.
//!
//! State: `<dir>/ranges.json`, replaced atomically (write a temporary file, rename it over the
//! old one; a reader sees the old or the new table, never a torn one), and `<dir>/ranges.lock`, an flock held for the whole read-modify-write so
//! concurrent creates never hand out one range twice. The lock lives in its own file because
//! `rename` would otherwise swap the locked inode away.
//!
//! Each entry names its owner by container id and state root (`--root`). Recovery is a
//! reconciliation run under the lock before every allocation: an entry whose container state
//! folder `<root>/<id>` no longer exists is freed (its runtime crashed before writing state, or
//! the state root was wiped by a reboot). `delete` releases the entry before removing the folder,
//! so a crash between the two is healed by the same rule.
//!
//! Groups (SPEC U2): a container that shares another eci container's namespaces joins that
//! container's user namespace and range ([`Allocator::join`]). The entry then lists it in
//! `members`; `id`/`root` always name one live holder (when it is deleted, the first member takes
//! its place), and the range is free only once no holder is left. Release and reconciliation
//! handle every holder alike, so the same atomic rewrite keeps a group's range consistent after
//! a crash at any point.
//!
//! No fsync: the table only has to survive crashes of the runtime, dockerd or containerd, which
//! the page cache does. After a VM crash or reboot no container survives and the state roots
//! (in /run) are gone, so reconciliation frees every range anyway; fsync would add several
//! milliseconds to every create and delete for nothing.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use eci_policy::{IdRange, RANGE_SIZE};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Slot number in the pool: the range starts at `pool_start + slot * 65536`.
    pub slot: u32,
    pub start: u32,
    pub size: u32,
    /// A live holder of the range: the container that allocated it, or the member that took
    /// its place after it was deleted.
    pub id: String,
    pub root: String,
    /// Further holders: containers that joined the user namespace of a holder (SPEC U2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Member>,
}

/// A container sharing a range it did not allocate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    pub root: String,
}

impl Entry {
    /// Every container holding the range, the one named by `id`/`root` first.
    pub fn holders(&self) -> impl Iterator<Item = (&str, &str)> {
        std::iter::once((self.id.as_str(), self.root.as_str())).chain(
            self.members
                .iter()
                .map(|m| (m.id.as_str(), m.root.as_str())),
        )
    }

    fn holds(&self, id: &str, root: &str) -> bool {
        self.holders().any(|h| h == (id, root))
    }

    /// Keep the holders `keep` accepts; `false` when none is left (the range is free).
    fn retain_holders(&mut self, keep: impl Fn(&str, &str) -> bool) -> bool {
        let mut left: Vec<Member> = self
            .holders()
            .filter(|(id, root)| keep(id, root))
            .map(|(id, root)| Member {
                id: id.to_string(),
                root: root.to_string(),
            })
            .collect();
        if left.is_empty() {
            return false;
        }
        let first = left.remove(0);
        self.id = first.id;
        self.root = first.root;
        self.members = left;
        true
    }
}

/// 2 added `members`; a version-1 table reads as one without members.
const TABLE_VERSION: u32 = 2;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Table {
    version: u32,
    ranges: Vec<Entry>,
}

pub struct Allocator {
    dir: PathBuf,
    pool_start: u32,
    pool_ranges: u32,
}

/// The table's lock, held until dropped (`flock`, released when the descriptor closes).
struct Lock(#[allow(dead_code)] Flock<File>);

impl Allocator {
    pub fn new(dir: &Path, pool_start: u32, pool_ranges: u32) -> Allocator {
        Allocator {
            dir: dir.to_path_buf(),
            pool_start,
            pool_ranges,
        }
    }

    fn lock(&self) -> Result<Lock> {
        fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io("create id allocator folder", &self.dir, e))?;
        let p = self.dir.join("ranges.lock");
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| Error::io("open", &p, e))?;
        loop {
            match Flock::lock(f, FlockArg::LockExclusive) {
                Ok(l) => return Ok(Lock(l)),
                Err((back, Errno::EINTR)) => f = back,
                Err((_, e)) => return Err(Error::io("lock", &p, e.into())),
            }
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("ranges.json")
    }

    fn read(&self) -> Result<Table> {
        match fs::read(self.path()) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| Error::CorruptAllocTable {
                path: self.path(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Table {
                version: TABLE_VERSION,
                ranges: Vec::new(),
            }),
            Err(e) => Err(Error::io("read", self.path(), e)),
        }
    }

    fn write(&self, t: &Table) -> Result<()> {
        let tmp = self
            .dir
            .join(format!(".ranges.json.{}", std::process::id()));
        // Numbers and strings only: serialising cannot fail.
        let body = serde_json::to_vec_pretty(t).expect("the range table serialises");
        let res = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(&body)?;
            fs::rename(&tmp, self.path())
        })();
        res.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io("write", self.path(), e)
        })
    }

    fn reconcile(t: &mut Table) {
        t.ranges
            .retain_mut(|e| e.retain_holders(|id, root| Path::new(root).join(id).is_dir()));
    }

    /// The range of container `id` under state root `root`, allocating the lowest free slot
    /// if it has none.
    pub fn allocate(&self, id: &str, root: &Path) -> Result<IdRange> {
        let _l = self.lock()?;
        let mut t = self.read()?;
        Self::reconcile(&mut t);
        let root_s = root.display().to_string();
        if let Some(e) = t.ranges.iter().find(|e| e.holds(id, &root_s)) {
            return Ok(IdRange {
                start: e.start,
                size: e.size,
            });
        }
        // Free means no overlap with any live range by VM ids, not just an unused slot number:
        // ranges allocated under an earlier pool start or size stay taken.
        let overlaps = |start: u32| {
            let end = u64::from(start) + u64::from(RANGE_SIZE);
            t.ranges.iter().any(|e| {
                u64::from(e.start) < end
                    && u64::from(start) < u64::from(e.start) + u64::from(e.size)
            })
        };
        let slot = (0..self.pool_ranges)
            .find(|s| !overlaps(self.pool_start + s * RANGE_SIZE))
            .ok_or(Error::PoolExhausted {
                ranges: self.pool_ranges,
            })?;
        let start = self.pool_start + slot * RANGE_SIZE;
        t.ranges.push(Entry {
            slot,
            start,
            size: RANGE_SIZE,
            id: id.to_string(),
            root: root_s,
            members: Vec::new(),
        });
        t.version = TABLE_VERSION;
        self.write(&t)?;
        Ok(IdRange {
            start,
            size: RANGE_SIZE,
        })
    }

    /// Add container `id` under `root` to the range `range` that container `via` holds: it
    /// joined the user namespace of `via` (SPEC U2). Fails when `via` no longer holds that very
    /// range (deleted meanwhile, its range possibly handed to another container), so a group
    /// never takes over a range it does not share.
    pub fn join(
        &self,
        id: &str,
        root: &Path,
        via: (&str, &str),
        range: IdRange,
    ) -> Result<IdRange> {
        let _l = self.lock()?;
        let mut t = self.read()?;
        Self::reconcile(&mut t);
        let root_s = root.display().to_string();
        if let Some(e) = t.ranges.iter().find(|e| e.holds(id, &root_s)) {
            if e.start == range.start && e.size == range.size {
                return Ok(range);
            }
            return Err(Error::RangeAlreadyHeld {
                id: id.to_string(),
                start: e.start,
            });
        }
        let Some(e) = t
            .ranges
            .iter_mut()
            .find(|e| e.start == range.start && e.size == range.size && e.holds(via.0, via.1))
        else {
            return Err(Error::GroupRangeGone {
                via: via.0.to_string(),
                start: range.start,
                last: range.end() - 1,
            });
        };
        e.members.push(Member {
            id: id.to_string(),
            root: root_s,
        });
        t.version = TABLE_VERSION;
        self.write(&t)?;
        Ok(range)
    }

    /// Drop `id` from the holders of its range, freeing the range when it was the last (no
    /// error if it holds none).
    pub fn release(&self, id: &str, root: &Path) -> Result<()> {
        let _l = self.lock()?;
        let mut t = self.read()?;
        let root_s = root.display().to_string();
        let before: Vec<Entry> = t.ranges.clone();
        t.ranges
            .retain_mut(|e| e.retain_holders(|i, r| !(i == id && r == root_s)));
        if t.ranges != before {
            self.write(&t)?;
        }
        Ok(())
    }

    /// The table as it is now, read without the lock (the file is replaced atomically): who
    /// holds which range, for matching a joined namespace's owner against live containers.
    /// Callers re-check under the lock ([`Allocator::join`]).
    pub fn snapshot(&self) -> Result<Vec<Entry>> {
        Ok(self.read()?.ranges)
    }

    #[cfg(test)]
    fn entries(&self) -> Vec<Entry> {
        self.read().unwrap().ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Allocator, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("state");
        fs::create_dir_all(&root).unwrap();
        let a = Allocator::new(&d.path().join("alloc"), 100_000, 4);
        (d, a, root)
    }

    fn live(root: &Path, id: &str) {
        fs::create_dir_all(root.join(id)).unwrap();
    }

    #[test]
    fn ranges_are_disjoint_lowest_first_and_reused() {
        let (_d, a, root) = setup();
        live(&root, "a");
        live(&root, "b");
        let ra = a.allocate("a", &root).unwrap();
        let rb = a.allocate("b", &root).unwrap();
        assert_eq!(ra.start, 100_000);
        assert_eq!(rb.start, 165_536);
        assert_eq!(a.allocate("a", &root).unwrap(), ra, "idempotent");
        a.release("a", &root).unwrap();
        live(&root, "c");
        assert_eq!(a.allocate("c", &root).unwrap().start, 100_000);
    }

    #[test]
    fn a_changed_pool_start_never_overlaps_live_ranges() {
        let (d, a, root) = setup();
        live(&root, "old");
        assert_eq!(a.allocate("old", &root).unwrap().start, 100_000);
        // The admin moves the pool by half a range while "old" still runs.
        let moved = Allocator::new(&d.path().join("alloc"), 100_000 + 32_768, 4);
        live(&root, "new");
        let r = moved.allocate("new", &root).unwrap();
        assert!(
            r.start >= 100_000 + 65_536,
            "range {} overlaps the live range 100000-165535",
            r.start
        );
    }

    #[test]
    fn pool_exhaustion_is_an_error_naming_the_setting() {
        let (_d, a, root) = setup();
        for i in 0..4 {
            live(&root, &format!("c{i}"));
            a.allocate(&format!("c{i}"), &root).unwrap();
        }
        live(&root, "x");
        let e = a.allocate("x", &root).unwrap_err();
        assert!(matches!(e, Error::PoolExhausted { ranges: 4 }), "{e}");
        assert!(e.to_string().contains("idPool.ranges"), "{e}");
    }

    #[test]
    fn dead_owners_are_reclaimed() {
        let (_d, a, root) = setup();
        live(&root, "gone");
        a.allocate("gone", &root).unwrap();
        fs::remove_dir_all(root.join("gone")).unwrap();
        live(&root, "new");
        assert_eq!(a.allocate("new", &root).unwrap().start, 100_000);
        assert_eq!(a.entries().len(), 1);
    }

    #[test]
    fn same_id_under_different_roots_are_different_containers() {
        let (d, a, root) = setup();
        let root2 = d.path().join("state2");
        live(&root, "x");
        live(&root2, "x");
        let r1 = a.allocate("x", &root).unwrap();
        let r2 = a.allocate("x", &root2).unwrap();
        assert_ne!(r1, r2);
    }

    /// SPEC U2: a group's range is held while any member lives, whichever leaves first, and is
    /// free once the last is gone; other groups never get it.
    #[test]
    fn a_shared_range_is_counted_by_members_and_freed_by_the_last() {
        let (_d, a, root) = setup();
        let r = root.display().to_string();
        live(&root, "a");
        let ra = a.allocate("a", &root).unwrap();
        live(&root, "b");
        live(&root, "c");
        assert_eq!(a.join("b", &root, ("a", &r), ra).unwrap(), ra);
        assert_eq!(
            a.join("c", &root, ("b", &r), ra).unwrap(),
            ra,
            "via a member"
        );
        assert_eq!(a.join("c", &root, ("a", &r), ra).unwrap(), ra, "idempotent");
        assert_eq!(
            a.allocate("c", &root).unwrap(),
            ra,
            "allocate finds members"
        );
        let e = a.entries();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].holders().count(), 3);
        // The allocator leaves: the range stays, named by a member; others get a new one.
        a.release("a", &root).unwrap();
        fs::remove_dir_all(root.join("a")).unwrap();
        live(&root, "x");
        let rx = a.allocate("x", &root).unwrap();
        assert_ne!(rx, ra);
        assert_eq!(
            (a.entries()[0].id.as_str(), a.entries()[0].start),
            ("b", ra.start)
        );
        // A member that died without `delete` is reconciled away like an owner.
        fs::remove_dir_all(root.join("b")).unwrap();
        live(&root, "y");
        assert_ne!(a.allocate("y", &root).unwrap(), ra);
        let shared: Vec<Entry> = a
            .entries()
            .into_iter()
            .filter(|e| e.start == ra.start)
            .collect();
        assert_eq!(shared.len(), 1);
        assert_eq!(
            shared[0].holders().collect::<Vec<_>>(),
            vec![("c", r.as_str())]
        );
        // The last one leaves: the lowest range is free again and reused first.
        a.release("c", &root).unwrap();
        live(&root, "z");
        assert_eq!(a.allocate("z", &root).unwrap(), ra);
        // Joining through a container that no longer holds the range is refused, also when
        // the range went to someone else meanwhile.
        live(&root, "late");
        let e = a
            .join("late", &root, ("a", &r), ra)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("container a ") && e.contains("no longer holds"),
            "{e}"
        );
    }

    #[test]
    fn a_version_1_table_reads_as_one_without_members() {
        let (_d, a, root) = setup();
        fs::create_dir_all(&a.dir).unwrap();
        let r = root.display().to_string();
        fs::write(
            a.path(),
            format!(r#"{{"version":1,"ranges":[{{"slot":0,"start":100000,"size":65536,"id":"old","root":"{r}"}}]}}"#),
        )
        .unwrap();
        live(&root, "old");
        live(&root, "j");
        let ra = a.allocate("old", &root).unwrap();
        a.join("j", &root, ("old", &r), ra).unwrap();
        let text = fs::read_to_string(a.path()).unwrap();
        assert!(
            text.contains("\"version\": 2") && text.contains("\"members\""),
            "{text}"
        );
    }

    #[test]
    fn corrupt_state_is_reported() {
        let (_d, a, root) = setup();
        fs::create_dir_all(&a.dir).unwrap();
        fs::write(a.path(), "{").unwrap();
        live(&root, "x");
        let e = a.allocate("x", &root).unwrap_err();
        assert!(matches!(e, Error::CorruptAllocTable { .. }), "{e}");
        assert!(e.to_string().contains("corrupt"), "{e}");
    }

    #[test]
    fn concurrent_allocations_never_overlap() {
        let (_d, a, root) = setup();
        let a = Allocator::new(&a.dir, 100_000, 64);
        let dir = a.dir.clone();
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let dir = dir.clone();
                let root = root.clone();
                std::thread::spawn(move || {
                    let id = format!("t{i}");
                    live(&root, &id);
                    Allocator::new(&dir, 100_000, 64)
                        .allocate(&id, &root)
                        .unwrap()
                        .start
                })
            })
            .collect();
        let mut starts: Vec<u32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        starts.sort();
        starts.dedup();
        assert_eq!(starts.len(), 16);
        assert_eq!(a.entries().len(), 16);
    }
}
