//! Cgroups v1 (including the hybrid layout with cgroup2 at /sys/fs/cgroup/unified) and v2.
//!
//! A container's cgroup is one folder per hierarchy, all recorded in its state so that
//! `delete --force` can find and empty them even after a crash during `create`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eci_policy::spec::{DeviceRule, Resources};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    V1,
    V2,
}

/// One hierarchy's folder for the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dir {
    /// Controllers of the hierarchy (`["memory"]`, `["name=systemd"]`, `[]` for cgroup2).
    pub controllers: Vec<String>,
    pub path: PathBuf,
    /// Where the hierarchy is mounted (to mount it again inside the container).
    pub mount: PathBuf,
    pub v2: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    pub mode: Mode,
    pub dirs: Vec<Dir>,
}

pub fn mode() -> Mode {
    let v2 = nix::sys::statfs::statfs("/sys/fs/cgroup")
        .is_ok_and(|st| st.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
    if v2 {
        Mode::V2
    } else {
        Mode::V1
    }
}

/// The cgroup path for a spec's `cgroupsPath`. With `--systemd-cgroup`, `slice:prefix:name`
/// becomes `/slice/prefix-name.scope` (nested slices expanded as systemd does); the cgroupfs
/// driver is used either way since the VM has no systemd. The rule that checks the result
/// (`eci_policy::check_cgroup_folder`) lives with the expansion in eci-policy.
pub fn resolve_path(spec_path: Option<&str>, systemd: bool, id: &str) -> String {
    eci_policy::cgroup_folder(spec_path, systemd, id)
}

/// mountinfo's octal escapes; one decoder for the runtime and the volume rule.
pub use eci_policy::unescape_mountinfo as unescape;

/// A line of /proc/self/mountinfo.
#[derive(Debug, Clone)]
pub struct MountInfo {
    pub mount_point: String,
    pub fstype: String,
    pub super_options: String,
}

pub fn mountinfo() -> Vec<MountInfo> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (a, b) = l.split_once(" - ")?;
            let f: Vec<&str> = a.split(' ').collect();
            let g: Vec<&str> = b.splitn(3, ' ').collect();
            Some(MountInfo {
                mount_point: unescape(f.get(4)?),
                fstype: g.first()?.to_string(),
                super_options: g.get(2).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

impl Cgroup {
    /// The folders for cgroup path `rel` in every hierarchy (not created yet).
    pub fn plan(rel: &str) -> Cgroup {
        let m = mode();
        let rel = rel.trim_start_matches('/');
        let mut dirs = Vec::new();
        if m == Mode::V2 {
            dirs.push(Dir {
                controllers: vec![],
                path: Path::new("/sys/fs/cgroup").join(rel),
                mount: "/sys/fs/cgroup".into(),
                v2: true,
            });
        } else {
            for mi in mountinfo() {
                if mi.fstype != "cgroup" && mi.fstype != "cgroup2" {
                    continue;
                }
                if !mi.mount_point.starts_with("/sys/fs/cgroup") {
                    continue;
                }
                let v2 = mi.fstype == "cgroup2";
                let controllers = if v2 {
                    vec![]
                } else {
                    mi.super_options
                        .split(',')
                        .filter(|o| {
                            !matches!(
                                *o,
                                "rw" | "ro"
                                    | "relatime"
                                    | "noatime"
                                    | "nosuid"
                                    | "nodev"
                                    | "noexec"
                                    | "clone_children"
                                    | "xattr"
                            ) && !o.starts_with("release_agent")
                        })
                        .map(|s| s.to_string())
                        .collect()
                };
                dirs.push(Dir {
                    controllers,
                    path: Path::new(&mi.mount_point).join(rel),
                    mount: mi.mount_point.into(),
                    v2,
                });
            }
        }
        Cgroup { mode: m, dirs }
    }

    fn dir_with(&self, controller: &str) -> Option<&Dir> {
        self.dirs
            .iter()
            .find(|d| d.controllers.iter().any(|c| c == controller))
    }

    /// The folder to read process lists and v2 files from.
    pub fn main_dir(&self) -> Option<&Dir> {
        if self.mode == Mode::V2 {
            return self.dirs.first();
        }
        self.dir_with("pids")
            .or_else(|| self.dir_with("memory"))
            .or_else(|| self.dirs.first())
    }

    pub fn create(&self) -> Result<(), String> {
        for d in &self.dirs {
            if d.v2 && self.mode == Mode::V2 {
                enable_v2_controllers(&d.mount, &d.path)?;
            }
            if d.controllers.iter().any(|c| c == "cpuset") {
                init_cpuset(&d.mount, &d.path)?;
            }
            fs::create_dir_all(&d.path)
                .map_err(|e| format!("create cgroup {}: {e}", d.path.display()))?;
        }
        Ok(())
    }

    pub fn add_pid(&self, pid: i32) -> Result<(), String> {
        for d in &self.dirs {
            let f = d.path.join("cgroup.procs");
            fs::write(&f, pid.to_string())
                .map_err(|e| format!("add pid {pid} to {}: {e}", f.display()))?;
        }
        Ok(())
    }

    /// Put the calling process (an `exec` into the container) into the container's cgroups,
    /// so that it is counted against the container's limits. On cgroup2 a container that made
    /// sub-cgroups with controllers (Docker-in-Docker moves its processes to `/init`) cannot
    /// take processes in its own folder (EBUSY): the process joins the cgroup of the
    /// container's init instead, which lies in the container's subtree. Failing is an error:
    /// an exec'd process must never run outside the container's limits.
    pub fn join_for_exec(&self, init_pid: i32) -> Result<(), String> {
        for d in &self.dirs {
            let procs = d.path.join("cgroup.procs");
            let first = match fs::write(&procs, "0") {
                Ok(()) => continue,
                Err(e) => e,
            };
            let init = fs::read_to_string(format!("/proc/{init_pid}/cgroup")).unwrap_or_default();
            let Some(dir) = d.v2.then(|| exec_dir_v2(d, &init)).flatten() else {
                return Err(format!("join {}: {first}", procs.display()));
            };
            let procs = dir.join("cgroup.procs");
            fs::write(&procs, "0").map_err(|e| {
                format!(
                    "join {} ({first}) or the init's cgroup {}: {e}",
                    d.path.display(),
                    procs.display()
                )
            })?;
        }
        Ok(())
    }

    /// Attach the device filter to every cgroup2 folder (SPEC P3). On a pure cgroup2 VM it is
    /// the only device control and a failure fails the create; on a hybrid layout the v1
    /// devices controller already enforces the rules, so a failure there is only a warning.
    pub fn restrict_devices(&self, rules: &[DeviceRule]) -> Result<Vec<String>, String> {
        let mut warnings = Vec::new();
        for d in self.dirs.iter().filter(|d| d.v2) {
            match crate::devices::attach(&d.path, rules) {
                Ok(()) => {}
                Err(e) if self.mode == Mode::V1 => warnings.push(format!(
                    "{e}; the v1 devices cgroup still enforces the device rules"
                )),
                Err(e) => return Err(e),
            }
        }
        Ok(warnings)
    }

    /// Let container root manage its own subtree (SPEC P5: only its own subtree is writable).
    /// Limits stay root-owned, so a container cannot raise them.
    pub fn delegate(&self, uid: u32, gid: u32) {
        for d in &self.dirs {
            let _ = crate::sys::chown_path(&d.path, uid, gid);
            for f in [
                "cgroup.procs",
                "tasks",
                "cgroup.threads",
                "cgroup.subtree_control",
            ] {
                let p = d.path.join(f);
                if p.exists() {
                    let _ = crate::sys::chown_path(&p, uid, gid);
                }
            }
        }
    }

    /// The first folder of this cgroup that exists already and holds processes (in it or in
    /// a sub-cgroup), with them: such a cgroup belongs to someone else (a service of the VM,
    /// another container) and is never adopted (SPEC P5), also because a failed create kills
    /// every process in the container's cgroup.
    pub fn populated(&self) -> Option<(PathBuf, Vec<i32>)> {
        self.dirs.iter().find_map(|d| {
            let mut pids = Vec::new();
            collect_pids(&d.path, &mut pids);
            pids.sort_unstable();
            pids.dedup();
            (!pids.is_empty()).then(|| (d.path.clone(), pids))
        })
    }

    pub fn pids(&self) -> Vec<i32> {
        let Some(d) = self.main_dir() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        collect_pids(&d.path, &mut out);
        out.sort_unstable();
        out.dedup();
        out
    }

    pub fn freeze(&self, frozen: bool) -> Result<(), String> {
        if self.mode == Mode::V2 || self.dir_with("freezer").is_none() {
            let d = self
                .dirs
                .iter()
                .find(|d| d.v2)
                .ok_or("no freezer: neither a v1 freezer hierarchy nor cgroup2 is mounted")?;
            write(
                &d.path.join("cgroup.freeze"),
                if frozen { "1" } else { "0" },
            )?;
            let want = if frozen { "frozen 1" } else { "frozen 0" };
            return wait_for(|| {
                fs::read_to_string(d.path.join("cgroup.events"))
                    .map(|s| s.lines().any(|l| l == want))
                    .unwrap_or(true)
            });
        }
        let d = self.dir_with("freezer").expect("checked above");
        let state = if frozen { "FROZEN" } else { "THAWED" };
        write(&d.path.join("freezer.state"), state)?;
        wait_for(|| {
            let cur = fs::read_to_string(d.path.join("freezer.state")).unwrap_or_default();
            if cur.trim() != state && frozen {
                let _ = fs::write(d.path.join("freezer.state"), state);
            }
            cur.trim() == state
        })
    }

    pub fn is_frozen(&self) -> bool {
        if let Some(d) = self.dir_with("freezer").filter(|_| self.mode == Mode::V1) {
            return fs::read_to_string(d.path.join("freezer.state"))
                .map(|s| s.trim() == "FROZEN")
                .unwrap_or(false);
        }
        self.dirs
            .iter()
            .find(|d| d.v2)
            .and_then(|d| fs::read_to_string(d.path.join("cgroup.freeze")).ok())
            .is_some_and(|s| s.trim() == "1")
    }

    /// Remove every folder (children first), retrying while the last processes exit.
    pub fn destroy(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        for d in &self.dirs {
            if !d.path.exists() {
                continue;
            }
            loop {
                match remove_tree(&d.path) {
                    Ok(()) => break,
                    Err(e) if Instant::now() < deadline => {
                        let _ = e;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => return Err(format!("remove cgroup {}: {e}", d.path.display())),
                }
            }
        }
        Ok(())
    }

    pub fn apply(&self, r: &Resources) -> Result<(), String> {
        if self.mode == Mode::V2 {
            return self.apply_v2(r);
        }
        if let Some(d) = self.dir_with("memory") {
            if let Some(m) = &r.memory {
                if let Some(l) = m.limit {
                    let v = if l < 0 {
                        "-1".to_string()
                    } else {
                        l.to_string()
                    };
                    let memsw = d.path.join("memory.memsw.limit_in_bytes");
                    // The kernel refuses a limit above memsw and memsw below the limit: raise
                    // memsw first when the new limit would exceed it.
                    if write(&d.path.join("memory.limit_in_bytes"), &v).is_err() && memsw.exists() {
                        write(&memsw, &v)?;
                        write(&d.path.join("memory.limit_in_bytes"), &v)?;
                    }
                }
                if let Some(s) = m.swap {
                    let memsw = d.path.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        write(&memsw, &s.to_string())?;
                    }
                }
                if let Some(r) = m.reservation {
                    write(&d.path.join("memory.soft_limit_in_bytes"), &r.to_string())?;
                }
                if let Some(s) = m.swappiness.filter(|s| *s <= 100) {
                    let _ = write(&d.path.join("memory.swappiness"), &s.to_string());
                }
                if m.disable_oom_killer == Some(true) {
                    write(&d.path.join("memory.oom_control"), "1")?;
                }
            }
        }
        if let (Some(d), Some(c)) = (self.dir_with("cpu"), &r.cpu) {
            if let Some(s) = c.shares.filter(|s| *s > 0) {
                write(&d.path.join("cpu.shares"), &s.to_string())?;
            }
            if let Some(p) = c.period.filter(|p| *p > 0) {
                write(&d.path.join("cpu.cfs_period_us"), &p.to_string())?;
            }
            if let Some(q) = c.quota.filter(|q| *q != 0) {
                write(&d.path.join("cpu.cfs_quota_us"), &q.to_string())?;
            }
        }
        if let (Some(d), Some(c)) = (self.dir_with("cpuset"), &r.cpu) {
            if let Some(s) = c.cpus.as_ref().filter(|s| !s.is_empty()) {
                write(&d.path.join("cpuset.cpus"), s)?;
            }
            if let Some(s) = c.mems.as_ref().filter(|s| !s.is_empty()) {
                write(&d.path.join("cpuset.mems"), s)?;
            }
        }
        if let (Some(d), Some(p)) = (self.dir_with("pids"), &r.pids) {
            let v = if p.limit > 0 {
                p.limit.to_string()
            } else {
                "max".into()
            };
            write(&d.path.join("pids.max"), &v)?;
        }
        if let Some(d) = self.dir_with("devices") {
            for rule in &r.devices {
                let line = format!(
                    "{} {}:{} {}",
                    rule.kind.as_deref().unwrap_or("a"),
                    rule.major
                        .filter(|m| *m >= 0)
                        .map_or("*".into(), |m| m.to_string()),
                    rule.minor
                        .filter(|m| *m >= 0)
                        .map_or("*".into(), |m| m.to_string()),
                    rule.access.as_deref().unwrap_or("rwm")
                );
                let file = if rule.allow {
                    "devices.allow"
                } else {
                    "devices.deny"
                };
                let line = if rule.kind.as_deref() == Some("a") {
                    "a".to_string()
                } else {
                    line
                };
                write(&d.path.join(file), &line)?;
            }
        }
        Ok(())
    }

    fn apply_v2(&self, r: &Resources) -> Result<(), String> {
        let Some(d) = self.dirs.first() else {
            return Ok(());
        };
        let max = |v: i64| {
            if v < 0 {
                "max".to_string()
            } else {
                v.to_string()
            }
        };
        if let Some(m) = &r.memory {
            if let Some(l) = m.limit {
                write(&d.path.join("memory.max"), &max(l))?;
            }
            if let Some(res) = m.reservation {
                write(&d.path.join("memory.low"), &max(res))?;
            }
            if let Some(s) = m.swap {
                let swap = match (s, m.limit) {
                    (s, _) if s < 0 => "max".to_string(),
                    (s, Some(l)) if l >= 0 => (s - l).max(0).to_string(),
                    (s, _) => s.to_string(),
                };
                let f = d.path.join("memory.swap.max");
                if f.exists() {
                    write(&f, &swap)?;
                }
            }
        }
        if let Some(c) = &r.cpu {
            if let Some(s) = c.shares.filter(|s| *s > 0) {
                let weight = 1 + ((s.clamp(2, 262_144) - 2) * 9999) / 262_142;
                write(&d.path.join("cpu.weight"), &weight.to_string())?;
            }
            if c.quota.is_some() || c.period.is_some() {
                let q = c
                    .quota
                    .filter(|q| *q > 0)
                    .map_or("max".into(), |q| q.to_string());
                let p = c.period.filter(|p| *p > 0).unwrap_or(100_000);
                write(&d.path.join("cpu.max"), &format!("{q} {p}"))?;
            }
            if let Some(s) = c.cpus.as_ref().filter(|s| !s.is_empty()) {
                write(&d.path.join("cpuset.cpus"), s)?;
            }
            if let Some(s) = c.mems.as_ref().filter(|s| !s.is_empty()) {
                write(&d.path.join("cpuset.mems"), s)?;
            }
        }
        if let Some(p) = &r.pids {
            write(
                &d.path.join("pids.max"),
                &max(if p.limit > 0 { p.limit } else { -1 }),
            )?;
        }
        if let Some(u) = &r.unified {
            for (k, v) in u {
                if k.contains('/') || k.starts_with('.') {
                    return Err(format!("unified cgroup key {k:?} is not a file name"));
                }
                write(&d.path.join(k), v)?;
            }
        }
        Ok(())
    }

    /// runc's `events --stats` payload (`data` of a `stats` event).
    pub fn stats(&self) -> serde_json::Value {
        let num = |p: PathBuf| -> u64 {
            fs::read_to_string(p)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0)
        };
        let kv = |p: PathBuf| -> serde_json::Map<String, serde_json::Value> {
            fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    Some((
                        k.to_string(),
                        serde_json::json!(v.trim().parse::<u64>().ok()?),
                    ))
                })
                .collect()
        };
        if self.mode == Mode::V2 {
            let Some(d) = self.dirs.first() else {
                return serde_json::json!({});
            };
            let cpu = kv(d.path.join("cpu.stat"));
            let get = |m: &serde_json::Map<String, serde_json::Value>, k: &str| {
                m.get(k).and_then(|v| v.as_u64()).unwrap_or(0)
            };
            let mem = kv(d.path.join("memory.stat"));
            let max = fs::read_to_string(d.path.join("memory.max")).unwrap_or_default();
            return serde_json::json!({
                "cpu": {"usage": {"total": get(&cpu, "usage_usec") * 1000,
                                  "kernel": get(&cpu, "system_usec") * 1000,
                                  "user": get(&cpu, "user_usec") * 1000},
                        "throttling": {"periods": get(&cpu, "nr_periods"),
                                       "throttledPeriods": get(&cpu, "nr_throttled"),
                                       "throttledTime": get(&cpu, "throttled_usec") * 1000}},
                "memory": {"usage": {"usage": num(d.path.join("memory.current")),
                                     "limit": max.trim().parse::<u64>().unwrap_or(u64::MAX)},
                           "raw": mem},
                "pids": {"current": num(d.path.join("pids.current")),
                         "limit": fs::read_to_string(d.path.join("pids.max")).ok()
                             .and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0)},
            });
        }
        let mut out = serde_json::json!({});
        if let Some(d) = self.dir_with("cpuacct") {
            let st = kv(d.path.join("cpuacct.stat"));
            let tick = 10_000_000u64; // USER_HZ of 100: one tick is 10 ms.
            let per: Vec<u64> = fs::read_to_string(d.path.join("cpuacct.usage_percpu"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|s| s.parse().ok())
                .collect();
            out["cpu"] = serde_json::json!({"usage": {
                "total": num(d.path.join("cpuacct.usage")),
                "percpu": per,
                "kernel": st.get("system").and_then(|v| v.as_u64()).unwrap_or(0) * tick,
                "user": st.get("user").and_then(|v| v.as_u64()).unwrap_or(0) * tick}});
        }
        if let Some(d) = self.dir_with("cpu") {
            let st = kv(d.path.join("cpu.stat"));
            if out.get("cpu").is_none() {
                out["cpu"] = serde_json::json!({});
            }
            out["cpu"]["throttling"] = serde_json::json!({
                "periods": st.get("nr_periods"), "throttledPeriods": st.get("nr_throttled"),
                "throttledTime": st.get("throttled_time")});
        }
        if let Some(d) = self.dir_with("memory") {
            out["memory"] = serde_json::json!({
                "usage": {"usage": num(d.path.join("memory.usage_in_bytes")),
                          "max": num(d.path.join("memory.max_usage_in_bytes")),
                          "failcnt": num(d.path.join("memory.failcnt")),
                          "limit": num(d.path.join("memory.limit_in_bytes"))},
                "swap": {"usage": num(d.path.join("memory.memsw.usage_in_bytes")),
                         "limit": num(d.path.join("memory.memsw.limit_in_bytes"))},
                "raw": kv(d.path.join("memory.stat"))});
        }
        if let Some(d) = self.dir_with("pids") {
            out["pids"] = serde_json::json!({"current": num(d.path.join("pids.current")),
                "limit": fs::read_to_string(d.path.join("pids.max")).ok()
                    .and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0)});
        }
        out
    }
}

fn collect_pids(dir: &Path, out: &mut Vec<i32>) {
    if let Ok(s) = fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_pids(&e.path(), out);
            }
        }
    }
}

fn remove_tree(dir: &Path) -> std::io::Result<()> {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path())?;
            }
        }
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

fn write(p: &Path, v: &str) -> Result<(), String> {
    fs::write(p, v).map_err(|e| format!("write {v:?} to {}: {e}", p.display()))
}

fn wait_for(mut ok: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ok() {
        if Instant::now() > deadline {
            return Err("timed out waiting for the freezer".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// cgroup2: enable the available controllers in every ancestor's `cgroup.subtree_control`
/// so the container folder gets memory, cpu, pids, io and cpuset files.
fn enable_v2_controllers(mount: &Path, path: &Path) -> Result<(), String> {
    let rel = path.strip_prefix(mount).map_err(|e| e.to_string())?;
    let mut cur = mount.to_path_buf();
    for comp in rel.components() {
        let avail = fs::read_to_string(cur.join("cgroup.controllers")).unwrap_or_default();
        let want: Vec<String> = avail
            .split_whitespace()
            .filter(|c| matches!(*c, "cpu" | "memory" | "pids" | "io" | "cpuset" | "hugetlb"))
            .map(|c| format!("+{c}"))
            .collect();
        if !want.is_empty() {
            let _ = fs::write(cur.join("cgroup.subtree_control"), want.join(" "));
        }
        cur.push(comp);
        if !cur.exists() {
            fs::create_dir(&cur).map_err(|e| format!("create cgroup {}: {e}", cur.display()))?;
        }
    }
    Ok(())
}

/// cgroup v1 cpuset: a new folder starts with empty cpus/mems and refuses tasks; copy the
/// parent's values down every level that is empty.
fn init_cpuset(mount: &Path, path: &Path) -> Result<(), String> {
    let rel = path.strip_prefix(mount).map_err(|e| e.to_string())?;
    let mut cur = mount.to_path_buf();
    for comp in rel.components() {
        let parent = cur.clone();
        cur.push(comp);
        if !cur.exists() {
            fs::create_dir(&cur).map_err(|e| format!("create cgroup {}: {e}", cur.display()))?;
        }
        for f in ["cpuset.cpus", "cpuset.mems"] {
            let mine = fs::read_to_string(cur.join(f)).unwrap_or_default();
            if mine.trim().is_empty() {
                let v = fs::read_to_string(parent.join(f)).unwrap_or_default();
                write(&cur.join(f), v.trim())?;
            }
        }
    }
    Ok(())
}

/// The cgroup2 folder of the container's init, from its `/proc/PID/cgroup` text, if it lies
/// inside the container's folder `d` (never a folder outside the container).
fn exec_dir_v2(d: &Dir, proc_cgroup: &str) -> Option<PathBuf> {
    let rel = proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let rel = rel.trim().trim_start_matches('/');
    if rel.split('/').any(|c| c == ".." || c == ".") {
        return None;
    }
    let dir = d.mount.join(rel);
    (dir.starts_with(&d.path) && dir != d.path).then_some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_for_both_drivers() {
        assert_eq!(
            resolve_path(Some("/docker/abc"), false, "abc"),
            "/docker/abc"
        );
        assert_eq!(
            resolve_path(Some("docker/abc"), false, "abc"),
            "/docker/abc"
        );
        assert_eq!(resolve_path(None, false, "abc"), "/eci/abc");
        assert_eq!(
            resolve_path(Some("system.slice:docker:abc"), true, "abc"),
            "/system.slice/docker-abc.scope"
        );
        assert_eq!(
            resolve_path(Some("user-1000.slice:cri:x"), true, "x"),
            "/user.slice/user-1000.slice/cri-x.scope"
        );
    }

    #[test]
    fn exec_joins_the_inits_cgroup_only_inside_the_container() {
        let d = Dir {
            controllers: vec![],
            path: "/sys/fs/cgroup/docker/abc".into(),
            mount: "/sys/fs/cgroup".into(),
            v2: true,
        };
        assert_eq!(
            exec_dir_v2(&d, "0::/docker/abc/init\n"),
            Some(PathBuf::from("/sys/fs/cgroup/docker/abc/init"))
        );
        assert_eq!(
            exec_dir_v2(&d, "1:name=systemd:/x\n0::/docker/abc/a/b\n"),
            Some(PathBuf::from("/sys/fs/cgroup/docker/abc/a/b"))
        );
        for outside in [
            "0::/docker/abc\n",
            "0::/docker/abcd/init\n",
            "0::/docker/abc/../xyz\n",
            "0::/\n",
            "",
        ] {
            assert_eq!(exec_dir_v2(&d, outside), None, "{outside:?}");
        }
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("\\134"), "\\");
    }
}
