//! Open-file budget: every proxied connection holds two descriptors (the client's and
//! dockerd's), so 4096 concurrent clients need more than the 1024 a service inherits from
//! eci-init by default. The guard raises its own limit at start, or serves fewer connections
//! and says so, instead of failing accept() with EMFILE under load.

/// Descriptors kept free for listeners, the audit log, settings reloads and the runtime.
const RESERVE: u64 = 256;

fn get() -> Result<libc::rlimit, String> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: r is a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(format!(
            "getrlimit(NOFILE): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(r)
}

fn set(cur: u64, max: u64) -> bool {
    let r = libc::rlimit {
        rlim_cur: cur,
        rlim_max: max,
    };
    // SAFETY: r is a valid rlimit.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) == 0 }
}

/// Raises RLIMIT_NOFILE for `max_connections` (the hard limit too, which root may do) and
/// returns how many connections the limit allows: `max_connections`, or fewer with a warning
/// when the limit cannot be raised that far.
pub fn fit_open_files(max_connections: usize) -> Result<(usize, Option<String>), String> {
    let want = (max_connections as u64)
        .saturating_mul(2)
        .saturating_add(RESERVE);
    let now = get()?;
    if now.rlim_cur < want {
        let raised = (now.rlim_max >= want && set(want, now.rlim_max)) || set(want, want);
        if !raised && now.rlim_cur < now.rlim_max {
            set(now.rlim_max, now.rlim_max);
        }
    }
    let have = get()?.rlim_cur;
    if have >= want {
        return Ok((max_connections, None));
    }
    let fits = (have.saturating_sub(RESERVE) / 2).max(1) as usize;
    Ok((
        fits,
        Some(format!(
            "open-file limit {have} allows {fits} concurrent connections, not {max_connections}; \
             raise RLIMIT_NOFILE for eci-guard"
        )),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_covers_the_connections_it_reports() {
        let (n, warning) = fit_open_files(600).unwrap();
        let cur = get().unwrap().rlim_cur;
        assert!(
            2 * n as u64 + RESERVE <= cur,
            "{n} connections, limit {cur}"
        );
        if warning.is_none() {
            assert_eq!(n, 600);
        }
        // More than any kernel allows (fs.nr_open): fewer connections, said.
        let (n, warning) = fit_open_files(usize::MAX / 4).unwrap();
        assert!((1..usize::MAX / 4).contains(&n));
        assert!(warning.unwrap().contains("RLIMIT_NOFILE"));
        assert!(2 * n as u64 + RESERVE <= get().unwrap().rlim_cur);
    }
}
