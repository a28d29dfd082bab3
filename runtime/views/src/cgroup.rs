//! The container's numbers, from either cgroup version (SPEC F3).
//!
//! The parsers take the files' text and are pure, so both versions are unit-tested with
//! fixtures; [`CgroupFiles`] reads the files of one container. On cgroup v1 (and the hybrid
//! layout, where cgroup2 at /sys/fs/cgroup/unified carries no controllers) each controller has
//! its own folder; on v2 one folder holds everything.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// v1 reports "no limit" as a page-rounded i64::MAX; anything at or above this is unlimited.
const V1_UNLIMITED: u64 = 1 << 62;

/// Where a container's cgroup files are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupDirs {
    /// The cgroup2 folder when the VM runs the unified hierarchy only; then the v1 fields are
    /// unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v2: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuacct: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blkio: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<PathBuf>,
}

/// Memory of a container, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemStats {
    /// The effective limit (None: unlimited).
    pub limit: Option<u64>,
    pub usage: u64,
    pub anon: u64,
    /// Page cache, shmem included (as /proc/meminfo's Cached).
    pub file: u64,
    pub shmem: u64,
    pub mapped: u64,
    pub dirty: u64,
    pub writeback: u64,
    pub active_anon: u64,
    pub inactive_anon: u64,
    pub active_file: u64,
    pub inactive_file: u64,
    pub unevictable: u64,
    pub slab_reclaimable: u64,
    pub slab_unreclaimable: u64,
    /// Swap the container may use on top of `limit` (None: unlimited).
    pub swap_limit: Option<u64>,
    pub swap_usage: u64,
}

/// CPU placement and time of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuStats {
    /// The cpuset's effective CPUs (None: not restricted or unknown).
    pub cpuset: Option<Vec<u32>>,
    /// CFS quota and period in microseconds (None: no quota).
    pub quota: Option<(u64, u64)>,
    pub user_usec: u64,
    pub system_usec: u64,
}

/// I/O of a container on one block device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoStat {
    pub major: u32,
    pub minor: u32,
    pub rbytes: u64,
    pub wbytes: u64,
    pub rios: u64,
    pub wios: u64,
    pub dbytes: u64,
    pub dios: u64,
}

/// `key value` lines (memory.stat, cpu.stat, cpuacct.stat).
pub fn keyed(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?, it.next()?.parse().ok()?))
        })
        .collect()
}

/// A v2 limit file (`max` or bytes).
pub fn v2_limit(text: &str) -> Option<u64> {
    let t = text.trim();
    if t == "max" {
        None
    } else {
        t.parse().ok()
    }
}

fn v1_limit(n: u64) -> Option<u64> {
    (n < V1_UNLIMITED).then_some(n)
}

/// A kernel CPU list (`0-3,8,10-11`).
pub fn cpu_list(text: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.trim().parse::<u32>(), b.trim().parse::<u32>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.trim().parse::<u32>().ok()),
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Memory from cgroup v2's memory.max, memory.current, memory.stat, memory.swap.max and
/// memory.swap.current (the swap files are absent without swap accounting).
pub fn mem_v2(max: &str, current: &str, stat: &str, swap_max: &str, swap_cur: &str) -> MemStats {
    let s = keyed(stat);
    let g = |k: &str| s.get(k).copied().unwrap_or(0);
    MemStats {
        limit: v2_limit(max),
        usage: current.trim().parse().unwrap_or(0),
        anon: g("anon"),
        file: g("file"),
        shmem: g("shmem"),
        mapped: g("file_mapped"),
        dirty: g("file_dirty"),
        writeback: g("file_writeback"),
        active_anon: g("active_anon"),
        inactive_anon: g("inactive_anon"),
        active_file: g("active_file"),
        inactive_file: g("inactive_file"),
        unevictable: g("unevictable"),
        slab_reclaimable: g("slab_reclaimable"),
        slab_unreclaimable: g("slab_unreclaimable"),
        swap_limit: if swap_max.trim().is_empty() {
            Some(0)
        } else {
            v2_limit(swap_max)
        },
        swap_usage: swap_cur.trim().parse().unwrap_or(0),
    }
}

/// Memory from cgroup v1's memory.stat (its `total_*` lines cover the container's sub-cgroups
/// and `hierarchical_*_limit` is the effective limit, parents included), memory.usage_in_bytes
/// and memory.memsw.usage_in_bytes (empty without swap accounting).
pub fn mem_v1(stat: &str, usage: &str, memsw_usage: &str) -> MemStats {
    let s = keyed(stat);
    let g = |k: &str| {
        s.get(format!("total_{k}").as_str())
            .or_else(|| s.get(k))
            .copied()
            .unwrap_or(0)
    };
    let limit = s
        .get("hierarchical_memory_limit")
        .and_then(|n| v1_limit(*n));
    let usage: u64 = usage.trim().parse().unwrap_or(0);
    let memsw_limit = s.get("hierarchical_memsw_limit").and_then(|n| v1_limit(*n));
    let (swap_limit, swap_usage) = match memsw_usage.trim().parse::<u64>() {
        Ok(sw) => (
            match (memsw_limit, limit) {
                (Some(ms), Some(m)) => Some(ms.saturating_sub(m)),
                (Some(ms), None) => Some(ms),
                (None, _) => None,
            },
            sw.saturating_sub(usage),
        ),
        // No swap accounting: the container's swap is not limited apart from the VM's.
        Err(_) => (None, g("swap")),
    };
    MemStats {
        limit,
        usage,
        anon: g("rss") + g("rss_huge"),
        file: g("cache"),
        shmem: g("shmem"),
        mapped: g("mapped_file"),
        dirty: g("dirty"),
        writeback: g("writeback"),
        active_anon: g("active_anon"),
        inactive_anon: g("inactive_anon"),
        active_file: g("active_file"),
        inactive_file: g("inactive_file"),
        unevictable: g("unevictable"),
        slab_reclaimable: 0,
        slab_unreclaimable: 0,
        swap_limit,
        swap_usage,
    }
}

/// cgroup v2's cpu.max (`max 100000` or `50000 100000`).
pub fn quota_v2(max: &str) -> Option<(u64, u64)> {
    let mut it = max.split_whitespace();
    let q = it.next()?.parse().ok()?;
    let p = it.next().and_then(|p| p.parse().ok()).unwrap_or(100_000);
    (p > 0).then_some((q, p))
}

/// cgroup v1's cpu.cfs_quota_us (-1: none) and cpu.cfs_period_us.
pub fn quota_v1(quota: &str, period: &str) -> Option<(u64, u64)> {
    let q: i64 = quota.trim().parse().ok()?;
    let p: u64 = period.trim().parse().ok()?;
    (q > 0 && p > 0).then_some((q as u64, p))
}

/// The tighter of two limits (None: unlimited).
pub fn tighter(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// The tighter of two CPU quotas (quota, period): the smaller share of a CPU.
pub fn tighter_quota(a: Option<(u64, u64)>, b: Option<(u64, u64)>) -> Option<(u64, u64)> {
    match (a, b) {
        (Some((q1, p1)), Some((q2, p2))) => {
            // q1/p1 <= q2/p2 without division; periods are at most 1 s in microseconds.
            if (q1 as u128) * (p2 as u128) <= (q2 as u128) * (p1 as u128) {
                Some((q1, p1))
            } else {
                Some((q2, p2))
            }
        }
        (x, y) => x.or(y),
    }
}

/// cgroup v2's cpu.stat.
pub fn cpu_v2(cpu_stat: &str, cpu_max: &str, cpuset: &str) -> CpuStats {
    let s = keyed(cpu_stat);
    CpuStats {
        cpuset: Some(cpu_list(cpuset)).filter(|c| !c.is_empty()),
        quota: quota_v2(cpu_max),
        user_usec: s.get("user_usec").copied().unwrap_or(0),
        system_usec: s.get("system_usec").copied().unwrap_or(0),
    }
}

/// cgroup v1's cpuacct.stat (USER_HZ ticks) and cpuacct.usage (ns): the split comes from the
/// ticks, the total from the precise counter.
pub fn cpu_v1(
    acct_stat: &str,
    acct_usage: &str,
    quota: &str,
    period: &str,
    cpuset: &str,
) -> CpuStats {
    let s = keyed(acct_stat);
    let user_t = s.get("user").copied().unwrap_or(0);
    let sys_t = s.get("system").copied().unwrap_or(0);
    let total_us = acct_usage
        .trim()
        .parse::<u64>()
        .map(|ns| ns / 1000)
        .unwrap_or((user_t + sys_t) * 10_000);
    // No ticks yet: all of it counts as user time.
    let user_usec = (total_us * user_t)
        .checked_div(user_t + sys_t)
        .unwrap_or(total_us);
    let system_usec = total_us - user_usec;
    CpuStats {
        cpuset: Some(cpu_list(cpuset)).filter(|c| !c.is_empty()),
        quota: quota_v1(quota, period),
        user_usec,
        system_usec,
    }
}

/// cgroup v2's io.stat (`8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0`).
pub fn io_v2(text: &str) -> Vec<IoStat> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let Some((major, minor)) = it.next().and_then(dev) else {
            continue;
        };
        let mut s = IoStat {
            major,
            minor,
            ..IoStat::default()
        };
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let v = v.parse().unwrap_or(0);
            match k {
                "rbytes" => s.rbytes = v,
                "wbytes" => s.wbytes = v,
                "rios" => s.rios = v,
                "wios" => s.wios = v,
                "dbytes" => s.dbytes = v,
                "dios" => s.dios = v,
                _ => {}
            }
        }
        out.push(s);
    }
    out
}

fn dev(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// cgroup v1's blkio.throttle.io_service_bytes and blkio.throttle.io_serviced
/// (`8:0 Read 4096` lines; `Total` lines and totals skipped).
pub fn io_v1(bytes: &str, ios: &str) -> Vec<IoStat> {
    let mut map: std::collections::BTreeMap<(u32, u32), IoStat> = Default::default();
    for (text, is_bytes) in [(bytes, true), (ios, false)] {
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let (Some(d), Some(op), Some(v)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            let Some((major, minor)) = dev(d) else {
                continue;
            };
            let v: u64 = v.parse().unwrap_or(0);
            let e = map.entry((major, minor)).or_insert(IoStat {
                major,
                minor,
                ..IoStat::default()
            });
            match (op, is_bytes) {
                ("Read", true) => e.rbytes = v,
                ("Write", true) => e.wbytes = v,
                ("Discard", true) => e.dbytes = v,
                ("Read", false) => e.rios = v,
                ("Write", false) => e.wios = v,
                ("Discard", false) => e.dios = v,
                _ => {}
            }
        }
    }
    map.into_values().collect()
}

/// The ancestors of `dir` that have `file`, nearest first, up to the first that lacks it (the
/// hierarchy's root has no limit files) or 64 levels.
fn ancestors_with(dir: Option<&Path>, file: &str) -> Vec<PathBuf> {
    dir.into_iter()
        .flat_map(|d| d.ancestors().skip(1))
        .take(64)
        .take_while(|a| a.join(file).is_file())
        .map(Path::to_path_buf)
        .collect()
}

/// The open cgroup files of one container. Files are opened once and re-read with
/// `pread(0)`, which makes the kernel render them afresh; a view read then costs no path
/// lookups (the read budget is 50 µs, SPEC F3 under load).
#[derive(Debug)]
pub struct CgroupFiles {
    dirs: CgroupDirs,
    /// The container's cgroup's ancestors that hold the limit files, nearest first: their
    /// limits bind the container too (a pod's cgroup, a `--cgroup-parent` slice; SPEC F3). v1's
    /// memory.stat folds the parents in itself (`hierarchical_memory_limit`); v2's files and
    /// v1's CPU quota do not.
    v2_memory_up: Vec<PathBuf>,
    v2_cpu_up: Vec<PathBuf>,
    v1_cpu_up: Vec<PathBuf>,
    /// Open files, and None for files the kernel does not have (swap accounting off): a
    /// controller's files do not come and go while the cgroup exists.
    open: Mutex<HashMap<PathBuf, Option<std::sync::Arc<File>>>>,
}

impl CgroupFiles {
    pub fn new(dirs: CgroupDirs) -> CgroupFiles {
        CgroupFiles {
            v2_memory_up: ancestors_with(dirs.v2.as_deref(), "memory.max"),
            v2_cpu_up: ancestors_with(dirs.v2.as_deref(), "cpu.max"),
            v1_cpu_up: ancestors_with(dirs.cpu.as_deref(), "cpu.cfs_quota_us"),
            dirs,
            open: Mutex::new(HashMap::new()),
        }
    }

    pub fn dirs(&self) -> &CgroupDirs {
        &self.dirs
    }

    /// The text of `name` in `dir`; "" when the file does not exist (a controller the kernel
    /// lacks, swap accounting off).
    fn read(&self, dir: Option<&PathBuf>, name: &str) -> io::Result<String> {
        let Some(dir) = dir else {
            return Ok(String::new());
        };
        let path = dir.join(name);
        let f = {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            match open.get(&path) {
                Some(Some(f)) => f.clone(),
                Some(None) => return Ok(String::new()),
                None => match File::open(&path) {
                    Ok(f) => {
                        let f = std::sync::Arc::new(f);
                        open.insert(path.clone(), Some(f.clone()));
                        f
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound && dir.is_dir() => {
                        open.insert(path.clone(), None);
                        return Ok(String::new());
                    }
                    Err(e) => return Err(e),
                },
            }
        };
        read_all_at(&f)
    }

    pub fn memory(&self) -> io::Result<MemStats> {
        let d = &self.dirs;
        if let Some(v2) = &d.v2 {
            let v2 = Some(v2);
            let mut m = mem_v2(
                &self.read(v2, "memory.max")?,
                &self.read(v2, "memory.current")?,
                &self.read(v2, "memory.stat")?,
                &self.read(v2, "memory.swap.max")?,
                &self.read(v2, "memory.swap.current")?,
            );
            for up in &self.v2_memory_up {
                m.limit = tighter(m.limit, v2_limit(&self.read(Some(up), "memory.max")?));
                let swap = self.read(Some(up), "memory.swap.max")?;
                if !swap.trim().is_empty() {
                    m.swap_limit = tighter(m.swap_limit, v2_limit(&swap));
                }
            }
            return Ok(m);
        }
        let m = d.memory.as_ref();
        Ok(mem_v1(
            &self.read(m, "memory.stat")?,
            &self.read(m, "memory.usage_in_bytes")?,
            &self.read(m, "memory.memsw.usage_in_bytes")?,
        ))
    }

    pub fn cpu(&self) -> io::Result<CpuStats> {
        let d = &self.dirs;
        if let Some(v2) = &d.v2 {
            let v2 = Some(v2);
            let mut c = cpu_v2(
                &self.read(v2, "cpu.stat")?,
                &self.read(v2, "cpu.max")?,
                &self.read(v2, "cpuset.cpus.effective")?,
            );
            for up in &self.v2_cpu_up {
                c.quota = tighter_quota(c.quota, quota_v2(&self.read(Some(up), "cpu.max")?));
            }
            return Ok(c);
        }
        let acct = d.cpuacct.as_ref().or(d.cpu.as_ref());
        let cpu = d.cpu.as_ref();
        let mut c = cpu_v1(
            &self.read(acct, "cpuacct.stat")?,
            &self.read(acct, "cpuacct.usage")?,
            &self.read(cpu, "cpu.cfs_quota_us")?,
            &self.read(cpu, "cpu.cfs_period_us")?,
            &self.read(d.cpuset.as_ref(), "cpuset.effective_cpus")?,
        );
        for up in &self.v1_cpu_up {
            let q = quota_v1(
                &self.read(Some(up), "cpu.cfs_quota_us")?,
                &self.read(Some(up), "cpu.cfs_period_us")?,
            );
            c.quota = tighter_quota(c.quota, q);
        }
        Ok(c)
    }

    pub fn io(&self) -> io::Result<Vec<IoStat>> {
        let d = &self.dirs;
        if let Some(v2) = &d.v2 {
            return Ok(io_v2(&self.read(Some(v2), "io.stat")?));
        }
        let b = d.blkio.as_ref();
        // The recursive files (kernel 4.17+) include the container's sub-cgroups.
        let either = |name: &str| -> io::Result<String> {
            let r = self.read(b, &format!("{name}_recursive"))?;
            if r.trim().is_empty() {
                self.read(b, name)
            } else {
                Ok(r)
            }
        };
        Ok(io_v1(
            &either("blkio.throttle.io_service_bytes")?,
            &either("blkio.throttle.io_serviced")?,
        ))
    }

    /// The processes of the container (its subtree's cgroup.procs).
    pub fn procs(&self) -> Vec<u32> {
        let d = &self.dirs;
        let Some(dir) = d.v2.as_ref().or(d.pids.as_ref()).or(d.memory.as_ref()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        collect_procs(dir, &mut out, 0);
        out
    }
}

fn collect_procs(dir: &Path, out: &mut Vec<u32>, depth: usize) {
    if let Ok(t) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(t.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    if depth > 16 {
        return;
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_procs(&e.path(), out, depth + 1);
            }
        }
    }
}

/// Reads a whole kernel file from offset 0 without moving any file position.
pub fn read_all_at(f: &File) -> io::Result<String> {
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = f.read_at(&mut buf[len..], len as u64)?;
        if n == 0 {
            break;
        }
        len += n;
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_STAT: &str = include_str!("../tests/fixtures/v1-memory.stat");
    const V2_STAT: &str = include_str!("../tests/fixtures/v2-memory.stat");

    #[test]
    fn cpu_lists_expand() {
        assert_eq!(cpu_list("0-3,8,10-11\n"), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(cpu_list("1"), vec![1]);
        assert!(cpu_list("\n").is_empty());
    }

    #[test]
    fn v1_memory_uses_hierarchical_limit_and_totals() {
        let m = mem_v1(V1_STAT, "7340032\n", "");
        assert_eq!(m.limit, Some(268435456));
        assert_eq!(m.usage, 7340032);
        assert_eq!(m.file, 2121728);
        assert_eq!(m.anon, 540672);
        assert_eq!(m.inactive_file, 1458176);
        assert_eq!(m.swap_limit, None);
    }

    #[test]
    fn v1_unlimited_is_none() {
        let m = mem_v1(
            "hierarchical_memory_limit 9223372036854771712\n",
            "10\n",
            "10\n",
        );
        assert_eq!(m.limit, None);
        assert_eq!(m.swap_limit, None);
    }

    #[test]
    fn v1_memsw_gives_the_swap_part() {
        let m = mem_v1(
            "hierarchical_memory_limit 100\nhierarchical_memsw_limit 300\n",
            "80\n",
            "120\n",
        );
        assert_eq!(m.swap_limit, Some(200));
        assert_eq!(m.swap_usage, 40);
    }

    #[test]
    fn v2_memory() {
        let m = mem_v2("268435456\n", "9502720\n", V2_STAT, "0\n", "0\n");
        assert_eq!(m.limit, Some(268435456));
        assert_eq!(m.anon, 1372160);
        assert_eq!(m.file, 6893568);
        assert_eq!(m.slab_reclaimable, 283000);
        assert_eq!(m.swap_limit, Some(0));
        let m = mem_v2("max\n", "1\n", "", "max\n", "0\n");
        assert_eq!((m.limit, m.swap_limit), (None, None));
    }

    #[test]
    fn quotas() {
        assert_eq!(quota_v2("max 100000\n"), None);
        assert_eq!(quota_v2("150000 100000\n"), Some((150000, 100000)));
        assert_eq!(quota_v1("-1\n", "100000\n"), None);
        assert_eq!(quota_v1("50000\n", "100000\n"), Some((50000, 100000)));
    }

    #[test]
    fn the_tighter_limit_and_quota_win() {
        assert_eq!(tighter(None, Some(5)), Some(5));
        assert_eq!(tighter(Some(7), Some(5)), Some(5));
        assert_eq!(tighter(Some(7), None), Some(7));
        assert_eq!(tighter(None, None), None);
        // Half a CPU (50 ms of 100 ms) is less than 0.6 of one (60 ms of 100 ms, 30 of 50).
        assert_eq!(
            tighter_quota(Some((60_000, 100_000)), Some((50_000, 100_000))),
            Some((50_000, 100_000))
        );
        assert_eq!(
            tighter_quota(Some((30_000, 50_000)), Some((50_000, 100_000))),
            Some((50_000, 100_000))
        );
        assert_eq!(tighter_quota(None, Some((1, 2))), Some((1, 2)));
    }

    /// A cgroup v2 tree as files: the hierarchy's root (no limit files), a parent slice with a
    /// 1 GiB memory limit, a swap limit and half a CPU, and the container's cgroup without
    /// limits of its own. The container sees its parent's limits (SPEC F3); the root stops the
    /// walk.
    #[test]
    fn a_parents_v2_limits_bind_the_container() {
        let root = tempfile::tempdir().unwrap();
        let parent = root.path().join("pod.slice");
        let own = parent.join("ctr.scope");
        std::fs::create_dir_all(&own).unwrap();
        let put =
            |dir: &Path, name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
        put(root.path(), "cgroup.procs", "");
        put(&parent, "memory.max", "1073741824\n");
        put(&parent, "memory.swap.max", "536870912\n");
        put(&parent, "cpu.max", "50000 100000\n");
        put(&own, "memory.max", "max\n");
        put(&own, "memory.swap.max", "max\n");
        put(&own, "memory.current", "4096\n");
        put(&own, "memory.swap.current", "0\n");
        put(&own, "memory.stat", "anon 4096\n");
        put(&own, "cpu.max", "max 100000\n");
        put(
            &own,
            "cpu.stat",
            "usage_usec 10\nuser_usec 6\nsystem_usec 4\n",
        );
        put(&own, "cpuset.cpus.effective", "0-1\n");
        let files = CgroupFiles::new(CgroupDirs {
            v2: Some(own.clone()),
            ..CgroupDirs::default()
        });
        let m = files.memory().unwrap();
        assert_eq!((m.limit, m.swap_limit), (Some(1 << 30), Some(1 << 29)));
        assert_eq!(files.cpu().unwrap().quota, Some((50_000, 100_000)));
        // The container's own tighter limit wins over its parent's.
        put(&own, "memory.max", "268435456\n");
        assert_eq!(files.memory().unwrap().limit, Some(1 << 28));
        // Without the parent's limit files (the root's case) nothing but its own counts.
        let alone = CgroupFiles::new(CgroupDirs {
            v2: Some(parent.clone()),
            ..CgroupDirs::default()
        });
        assert_eq!(alone.memory().unwrap().limit, Some(1 << 30));
    }

    #[test]
    fn cpu_time_from_both_versions() {
        let c = cpu_v2(
            "usage_usec 3000\nuser_usec 2000\nsystem_usec 1000\n",
            "200000 100000\n",
            "0-1\n",
        );
        assert_eq!(c.cpuset, Some(vec![0, 1]));
        assert_eq!(c.quota, Some((200000, 100000)));
        assert_eq!((c.user_usec, c.system_usec), (2000, 1000));
        let c = cpu_v1(
            "user 3\nsystem 1\n",
            "40000000\n",
            "-1\n",
            "100000\n",
            "0\n",
        );
        assert_eq!((c.user_usec, c.system_usec), (30000, 10000));
        assert_eq!(c.cpuset, Some(vec![0]));
    }

    #[test]
    fn io_from_both_versions() {
        let v2 = io_v2("8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n");
        assert_eq!(v2.len(), 1);
        assert_eq!((v2[0].major, v2[0].rbytes, v2[0].wios), (8, 4096, 2));
        let v1 = io_v1(
            "8:0 Read 4096\n8:0 Write 512\n8:0 Sync 0\n8:0 Total 4608\nTotal 4608\n",
            "8:0 Read 1\n8:0 Write 1\nTotal 2\n",
        );
        assert_eq!(
            v1,
            vec![IoStat {
                major: 8,
                minor: 0,
                rbytes: 4096,
                wbytes: 512,
                rios: 1,
                wios: 1,
                ..IoStat::default()
            }]
        );
    }
}
