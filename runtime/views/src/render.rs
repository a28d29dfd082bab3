//! Pure renderers: the VM's file text plus the container's cgroup numbers give the text the
//! container reads (SPEC F1, F3). Lines the container's numbers do not cover stay the VM's
//! (hugepage sizes, vmalloc, interrupt counters), as they would on a machine of that size.

use std::fmt::Write as _;

use crate::cgroup::{CpuStats, IoStat, MemStats};

/// USER_HZ, the unit of /proc/stat.
pub const TICKS_PER_SEC: u64 = 100;

/// The CPUs a container is shown: its cpuset (or all online CPUs), cut to the whole number of
/// CPUs its quota buys (rounded up; `--cpus 1.5` shows 2), in the cpuset's order.
pub fn visible_cpus(online: &[u32], cpu: &CpuStats) -> Vec<u32> {
    let mut v: Vec<u32> = match &cpu.cpuset {
        Some(set) => online.iter().copied().filter(|c| set.contains(c)).collect(),
        None => online.to_vec(),
    };
    if v.is_empty() {
        v = online.to_vec();
    }
    if let Some((q, p)) = cpu.quota {
        let n = q.div_ceil(p).max(1) as usize;
        v.truncate(n);
    }
    v
}

/// The processor numbers listed in /proc/cpuinfo.
pub fn online_cpus(cpuinfo: &str) -> Vec<u32> {
    cpuinfo
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "processor").then(|| v.trim().parse().ok())?
        })
        .collect()
}

fn kb(bytes: u64) -> u64 {
    bytes / 1024
}

/// /proc/meminfo: MemTotal is the container's limit (the VM's memory when unlimited or
/// larger), the rest follows from its usage and memory.stat.
pub fn meminfo(host: &str, m: &MemStats) -> String {
    let host_val = |name: &str| -> u64 {
        host.lines()
            .find_map(|l| {
                let rest = l.strip_prefix(name)?.strip_prefix(':')?;
                rest.split_whitespace().next()?.parse().ok()
            })
            .unwrap_or(0)
    };
    let host_total = host_val("MemTotal");
    let total = m.limit.map_or(host_total, |l| kb(l).min(host_total));
    let used = kb(m.usage).min(total);
    let free = total - used;
    let reclaimable = kb(m.inactive_file + m.active_file + m.slab_reclaimable);
    let available = (free + reclaimable).min(total);
    let host_swap = host_val("SwapTotal");
    let swap_total = if host_swap == 0 {
        0
    } else {
        m.swap_limit.map_or(host_swap, |s| kb(s).min(host_swap))
    };
    let swap_free = swap_total.saturating_sub(kb(m.swap_usage));
    let ours: &[(&str, u64)] = &[
        ("MemTotal", total),
        ("MemFree", free),
        ("MemAvailable", available),
        ("Buffers", 0),
        ("Cached", kb(m.file).min(total)),
        ("SwapCached", 0),
        ("Active", kb(m.active_anon + m.active_file)),
        ("Inactive", kb(m.inactive_anon + m.inactive_file)),
        ("Active(anon)", kb(m.active_anon)),
        ("Inactive(anon)", kb(m.inactive_anon)),
        ("Active(file)", kb(m.active_file)),
        ("Inactive(file)", kb(m.inactive_file)),
        ("Unevictable", kb(m.unevictable)),
        ("SwapTotal", swap_total),
        ("SwapFree", swap_free),
        ("Dirty", kb(m.dirty)),
        ("Writeback", kb(m.writeback)),
        ("AnonPages", kb(m.anon)),
        ("Mapped", kb(m.mapped)),
        ("Shmem", kb(m.shmem)),
        ("Slab", kb(m.slab_reclaimable + m.slab_unreclaimable)),
        ("SReclaimable", kb(m.slab_reclaimable)),
        ("SUnreclaim", kb(m.slab_unreclaimable)),
    ];
    let mut out = String::with_capacity(host.len());
    for line in host.lines() {
        let name = line.split(':').next().unwrap_or("");
        match ours.iter().find(|(n, _)| *n == name) {
            Some((n, v)) => {
                let _ = writeln!(out, "{:<16}{v:>8} kB", format!("{n}:"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// /proc/cpuinfo with the visible CPUs only, numbered from 0 (as the container's tools count
/// them); `siblings` and `cpu cores` say how many there are.
pub fn cpuinfo(host: &str, visible: &[u32]) -> String {
    let mut head = Vec::new();
    let mut blocks: Vec<(u32, &str)> = Vec::new();
    let mut tail = Vec::new();
    for block in host.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let num = block.lines().next().and_then(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "processor").then(|| v.trim().parse::<u32>().ok())?
        });
        match num {
            Some(n) => blocks.push((n, block)),
            None if blocks.is_empty() => head.push(block),
            None => tail.push(block),
        }
    }
    let n = visible.len();
    let mut out = String::with_capacity(host.len());
    for b in head {
        out.push_str(b.trim_end_matches('\n'));
        out.push_str("\n\n");
    }
    for (i, cpu) in visible.iter().enumerate() {
        let Some((_, block)) = blocks.iter().find(|(c, _)| c == cpu) else {
            continue;
        };
        for line in block.lines() {
            let key = line.split(':').next().unwrap_or("").trim();
            let tabs = line.split(':').next().unwrap_or("");
            match key {
                "processor" => {
                    let _ = writeln!(out, "{tabs}: {i}");
                }
                "siblings" | "cpu cores" => {
                    let _ = writeln!(out, "{tabs}: {n}");
                }
                "core id" => {
                    let _ = writeln!(out, "{tabs}: {i}");
                }
                _ => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out.push('\n');
    }
    for b in tail {
        out.push_str(b.trim_end_matches('\n'));
        out.push_str("\n\n");
    }
    out
}

/// The container's CPU time per visible CPU in ticks: (user, system, idle). Its time is
/// spread evenly (cgroups count it per container, not per CPU on v2); idle is what is left of
/// the container's uptime on each CPU.
pub fn cpu_ticks(cpu: &CpuStats, ncpus: usize, uptime_secs: f64) -> (u64, u64, u64) {
    let n = ncpus.max(1) as u64;
    let user = cpu.user_usec * TICKS_PER_SEC / 1_000_000 / n;
    let system = cpu.system_usec * TICKS_PER_SEC / 1_000_000 / n;
    let up = (uptime_secs * TICKS_PER_SEC as f64) as u64;
    (user, system, up.saturating_sub(user + system))
}

/// /proc/stat: one `cpuN` line per visible CPU from the container's usage, `cpu` their sum,
/// `btime` the container's start; the remaining lines are the VM's.
pub fn stat(host: &str, cpu: &CpuStats, ncpus: usize, uptime_secs: f64, btime: u64) -> String {
    let (u, s, idle) = cpu_ticks(cpu, ncpus, uptime_secs);
    let n = ncpus as u64;
    let mut out = String::with_capacity(host.len());
    let _ = writeln!(out, "cpu  {} 0 {} {} 0 0 0 0 0 0", u * n, s * n, idle * n);
    for i in 0..ncpus {
        let _ = writeln!(out, "cpu{i} {u} 0 {s} {idle} 0 0 0 0 0 0");
    }
    for line in host.lines() {
        if line.starts_with("cpu") {
            continue;
        }
        if line.starts_with("btime ") {
            let _ = writeln!(out, "btime {btime}");
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// /proc/uptime: seconds since the container started, and the idle seconds of its CPUs.
pub fn uptime(uptime_secs: f64, cpu: &CpuStats, ncpus: usize) -> String {
    let (_, _, idle) = cpu_ticks(cpu, ncpus, uptime_secs);
    let idle_secs = (idle * ncpus as u64) as f64 / TICKS_PER_SEC as f64;
    format!("{uptime_secs:.2} {idle_secs:.2}\n")
}

/// /proc/loadavg from the container's own samples.
pub fn loadavg(avg: [f64; 3], running: u64, total: u64, last_pid: u64) -> String {
    format!(
        "{:.2} {:.2} {:.2} {running}/{total} {last_pid}\n",
        avg[0], avg[1], avg[2]
    )
}

/// /proc/swaps: the VM's header, and one line for the swap the container may use (none when
/// the VM has none or the container is allowed none).
pub fn swaps(host: &str, meminfo_text: &str) -> String {
    let val = |name: &str| -> u64 {
        meminfo_text
            .lines()
            .find_map(|l| {
                let rest = l.strip_prefix(name)?.strip_prefix(':')?;
                rest.split_whitespace().next()?.parse().ok()
            })
            .unwrap_or(0)
    };
    let mut out = String::new();
    out.push_str(
        host.lines()
            .next()
            .unwrap_or("Filename\tType\tSize\tUsed\tPriority"),
    );
    out.push('\n');
    let total = val("SwapTotal");
    if total > 0 {
        let used = total.saturating_sub(val("SwapFree"));
        let _ = writeln!(
            out,
            "{:<40}{:<8}\t{total}\t\t{used}\t\t-2",
            "none", "virtual"
        );
    }
    out
}

/// /proc/diskstats: the devices the container did I/O on, with its own counts (sectors of
/// 512 bytes); times and queue fields are the container's unknowns and read 0. Each line
/// keeps the VM line's number of fields.
pub fn diskstats(host: &str, io: &[IoStat]) -> String {
    let mut out = String::new();
    for line in host.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 14 {
            continue;
        }
        let (Ok(major), Ok(minor)) = (f[0].parse::<u32>(), f[1].parse::<u32>()) else {
            continue;
        };
        let Some(s) = io.iter().find(|s| s.major == major && s.minor == minor) else {
            continue;
        };
        let mut vals = vec![0u64; f.len() - 3];
        vals[0] = s.rios;
        vals[2] = s.rbytes / 512;
        vals[4] = s.wios;
        vals[6] = s.wbytes / 512;
        if vals.len() >= 15 {
            vals[11] = s.dios;
            vals[13] = s.dbytes / 512;
        }
        let _ = write!(out, "{major:>4} {minor:>7} {}", f[2]);
        for v in vals {
            let _ = write!(out, " {v}");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = include_str!("../tests/fixtures/host-meminfo");
    const CPUINFO: &str = include_str!("../tests/fixtures/host-cpuinfo");
    const STAT: &str = include_str!("../tests/fixtures/host-stat");
    const DISKSTATS: &str = include_str!("../tests/fixtures/host-diskstats");
    const SWAPS: &str = include_str!("../tests/fixtures/host-swaps");
    const V1_STAT: &str = include_str!("../tests/fixtures/v1-memory.stat");
    const V2_STAT: &str = include_str!("../tests/fixtures/v2-memory.stat");

    fn field(text: &str, name: &str) -> u64 {
        text.lines()
            .find_map(|l| {
                let rest = l.strip_prefix(name)?.strip_prefix(':')?;
                rest.split_whitespace().next()?.parse().ok()
            })
            .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
    }

    #[test]
    fn meminfo_of_a_256m_container_on_v1() {
        let m = crate::cgroup::mem_v1(V1_STAT, "7340032\n", "");
        let t = meminfo(MEMINFO, &m);
        assert_eq!(field(&t, "MemTotal"), 262144);
        assert_eq!(field(&t, "MemFree"), 262144 - 7168);
        assert_eq!(field(&t, "Cached"), 2072);
        assert!(field(&t, "MemAvailable") <= 262144);
        assert!(field(&t, "MemAvailable") >= field(&t, "MemFree"));
        // Every line of the VM's file is still there, in order.
        let names = |s: &str| -> Vec<String> {
            s.lines()
                .map(|l| l.split(':').next().unwrap().to_string())
                .collect()
        };
        assert_eq!(names(&t), names(MEMINFO));
        assert!(t.contains("MemTotal:         262144 kB\n"), "{t}");
    }

    #[test]
    fn meminfo_of_a_256m_container_on_v2() {
        let m = crate::cgroup::mem_v2("268435456\n", "9502720\n", V2_STAT, "0\n", "0\n");
        let t = meminfo(MEMINFO, &m);
        assert_eq!(field(&t, "MemTotal"), 262144);
        assert_eq!(field(&t, "MemFree"), 262144 - 9280);
        assert_eq!(field(&t, "SwapTotal"), 0);
        assert_eq!(field(&t, "SReclaimable"), 276);
    }

    #[test]
    fn unlimited_memory_shows_the_vms_total() {
        let m = crate::cgroup::mem_v2("max\n", "1048576\n", "", "max\n", "0\n");
        let t = meminfo(MEMINFO, &m);
        assert_eq!(field(&t, "MemTotal"), field(MEMINFO, "MemTotal"));
        assert_eq!(field(&t, "MemFree"), field(MEMINFO, "MemTotal") - 1024);
    }

    #[test]
    fn a_limit_above_the_vm_shows_the_vm() {
        let m = crate::cgroup::mem_v2("1099511627776000\n", "0\n", "", "", "");
        assert_eq!(
            field(&meminfo(MEMINFO, &m), "MemTotal"),
            field(MEMINFO, "MemTotal")
        );
    }

    fn cpu(set: Option<Vec<u32>>, quota: Option<(u64, u64)>) -> CpuStats {
        CpuStats {
            cpuset: set,
            quota,
            user_usec: 2_000_000,
            system_usec: 1_000_000,
        }
    }

    #[test]
    fn visible_cpus_follow_cpuset_and_quota() {
        let online = [0, 1, 2, 3];
        assert_eq!(visible_cpus(&online, &cpu(None, None)), vec![0, 1, 2, 3]);
        assert_eq!(
            visible_cpus(&online, &cpu(Some(vec![2, 3]), None)),
            vec![2, 3]
        );
        assert_eq!(
            visible_cpus(&online, &cpu(None, Some((150_000, 100_000)))),
            vec![0, 1]
        );
        assert_eq!(
            visible_cpus(&online, &cpu(Some(vec![3]), Some((400_000, 100_000)))),
            vec![3]
        );
        assert_eq!(
            visible_cpus(&online, &cpu(None, Some((1_000, 100_000)))),
            vec![0]
        );
        // A cpuset naming only CPUs that are offline falls back to the online ones.
        assert_eq!(visible_cpus(&[0, 1], &cpu(Some(vec![7]), None)), vec![0, 1]);
    }

    #[test]
    fn cpuinfo_keeps_only_visible_cpus_renumbered() {
        let online = online_cpus(CPUINFO);
        assert_eq!(online, vec![0, 1]);
        let t = cpuinfo(CPUINFO, &[1]);
        assert_eq!(online_cpus(&t), vec![0]);
        assert_eq!(t.matches("processor").count(), 1);
        if CPUINFO.contains("siblings") {
            assert!(t.contains("siblings\t: 1\n"), "{t}");
        }
        // The second CPU's own block, renumbered.
        let second = CPUINFO.split("\n\n").nth(1).unwrap();
        let model = second
            .lines()
            .find(|l| l.starts_with("model name"))
            .unwrap();
        assert!(t.contains(model));
        assert_eq!(online_cpus(&cpuinfo(CPUINFO, &[0, 1])), vec![0, 1]);
    }

    #[test]
    fn stat_has_one_line_per_visible_cpu_and_the_containers_btime() {
        let c = cpu(Some(vec![0]), None);
        let t = stat(STAT, &c, 1, 10.0, 1_700_000_000);
        let cpus: Vec<&str> = t.lines().filter(|l| l.starts_with("cpu")).collect();
        assert_eq!(cpus.len(), 2, "{t}");
        // 2 s user, 1 s system, 10 s up: 7 s idle, in ticks.
        assert_eq!(cpus[0], "cpu  200 0 100 700 0 0 0 0 0 0");
        assert_eq!(cpus[1], "cpu0 200 0 100 700 0 0 0 0 0 0");
        assert!(t.contains("\nbtime 1700000000\n"));
        assert!(t.contains("\nctxt "));
        let t = stat(STAT, &c, 2, 10.0, 1);
        assert!(t.starts_with("cpu  200 0 100 1700 0"), "{t}");
        assert!(t.contains("\ncpu1 100 0 50 850 "));
    }

    #[test]
    fn uptime_starts_at_the_containers_start() {
        let c = CpuStats::default();
        assert_eq!(uptime(0.5, &c, 2), "0.50 1.00\n");
        assert_eq!(uptime(10.0, &cpu(None, None), 1), "10.00 7.00\n");
    }

    #[test]
    fn loadavg_format() {
        assert_eq!(
            loadavg([0.5, 0.25, 0.0], 1, 3, 42),
            "0.50 0.25 0.00 1/3 42\n"
        );
    }

    #[test]
    fn swaps_show_the_containers_swap_only() {
        let m = "SwapTotal:       1024 kB\nSwapFree:         1000 kB\n";
        let t = swaps(SWAPS, m);
        assert!(t.starts_with("Filename"));
        assert_eq!(t.lines().count(), 2);
        assert!(t.lines().nth(1).unwrap().contains("\t1024\t\t24\t"));
        assert_eq!(swaps(SWAPS, "SwapTotal: 0 kB\n").lines().count(), 1);
    }

    #[test]
    fn diskstats_show_the_containers_io() {
        let io = [IoStat {
            major: 254,
            minor: 0,
            rbytes: 8192,
            wbytes: 1024,
            rios: 2,
            wios: 1,
            ..IoStat::default()
        }];
        let t = diskstats(DISKSTATS, &io);
        assert_eq!(t.lines().count(), 1, "{t}");
        let f: Vec<&str> = t.split_whitespace().collect();
        assert_eq!(
            &f[..10],
            ["254", "0", "vda", "2", "0", "16", "0", "1", "0", "2"]
        );
        let host_fields = DISKSTATS
            .lines()
            .find(|l| l.contains(" vda "))
            .unwrap()
            .split_whitespace()
            .count();
        assert_eq!(f.len(), host_fields);
        assert_eq!(diskstats(DISKSTATS, &[]), "");
    }
}
