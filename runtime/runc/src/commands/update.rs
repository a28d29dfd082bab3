//! `update`: change a running container's resources (a runc JSON file, stdin, or flags).

use std::fs;
use std::io::Read;
use std::path::PathBuf;

use eci_policy::spec::Resources;

use crate::error::{Error, Result};
use crate::state::State;
use crate::Global;

/// runc's `update` options; `resources` (`-` is stdin) is read first, the flags override it.
#[derive(Debug, Default, Clone)]
pub struct UpdateOpts {
    pub resources: Option<PathBuf>,
    pub memory: Option<String>,
    pub memory_swap: Option<String>,
    pub memory_reservation: Option<String>,
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub pids_limit: Option<i64>,
}

pub fn update(g: &Global, id: &str, o: &UpdateOpts) -> Result<()> {
    let st = State::load(&g.root, id)?;
    let mut r: Resources = match &o.resources {
        Some(p) if p.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Error::Setup(format!("read resources from stdin: {e}")))?;
            serde_json::from_str(&s).map_err(|e| Error::Setup(format!("resources JSON: {e}")))?
        }
        Some(p) => {
            let s = fs::read_to_string(p).map_err(|e| Error::io("read", p, e))?;
            serde_json::from_str(&s).map_err(|e| Error::Setup(format!("{}: {e}", p.display())))?
        }
        None => Resources::default(),
    };
    // Device rules never change after create: the safe set is fixed (SPEC P3).
    r.devices.clear();
    {
        let m = r.memory.get_or_insert_with(Default::default);
        if let Some(v) = &o.memory {
            m.limit = Some(parse_bytes(v)?);
        }
        if let Some(v) = &o.memory_swap {
            m.swap = Some(parse_bytes(v)?);
        }
        if let Some(v) = &o.memory_reservation {
            m.reservation = Some(parse_bytes(v)?);
        }
    }
    {
        let c = r.cpu.get_or_insert_with(Default::default);
        c.shares = o.cpu_shares.or(c.shares);
        c.quota = o.cpu_quota.or(c.quota);
        c.period = o.cpu_period.or(c.period);
        if let Some(v) = &o.cpuset_cpus {
            c.cpus = Some(v.clone());
        }
        if let Some(v) = &o.cpuset_mems {
            c.mems = Some(v.clone());
        }
    }
    if let Some(p) = o.pids_limit {
        r.pids = Some(eci_policy::spec::Pids { limit: p });
    }
    Ok(st.cgroup.apply(&r)?)
}

/// A size as runc's flags take it: bytes, or with a k/m/g/t suffix (an optional trailing `b`),
/// or `-1` for unlimited.
pub fn parse_bytes(s: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    if t == "-1" {
        return Ok(-1);
    }
    let t = t.trim_end_matches('b');
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    num.parse::<i64>()
        .map(|n| n * mult)
        .map_err(|_| Error::InvalidSize(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_units() {
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert_eq!(parse_bytes("64m").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1G").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("-1").unwrap(), -1);
        assert!(matches!(parse_bytes("lots"), Err(Error::InvalidSize(_))));
    }
}
