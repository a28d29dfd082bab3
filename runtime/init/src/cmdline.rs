//! What eci-init reads from the kernel command line (`/proc/cmdline`).
//!
//! | token | meaning |
//! |---|---|
//! | `eci.selftest` | run `/usr/lib/eci/selftest` once the services are up, then power off |
//! | `eci.datadisk=none` | never use a data disk: engine data on tmpfs |
//! | `eci.datadisk=/dev/NAME` | only this device may be the data disk (the blank-disk rule still applies) |
//! | `eci.datadisk_wait=SECONDS` | how long to wait for a data disk behind an asynchronously scanned controller |
//!
//! Unknown `eci.*` tokens are reported (a typo must not silently change behaviour); the rest of
//! the command line belongs to the kernel.

use std::time::Duration;

/// Default wait for disks behind controllers that scan asynchronously (Hyper-V storvsc).
pub const DEFAULT_DATADISK_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataDiskChoice {
    /// Find it by label, or format the one blank disk.
    Auto,
    /// Engine data on tmpfs.
    Disabled,
    /// Only this device (e.g. `/dev/vdb`).
    Device(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootOptions {
    pub selftest: bool,
    pub datadisk: DataDiskChoice,
    pub datadisk_wait: Duration,
    /// Problems with `eci.*` tokens, for the console.
    pub warnings: Vec<String>,
}

impl Default for BootOptions {
    fn default() -> Self {
        BootOptions {
            selftest: false,
            datadisk: DataDiskChoice::Auto,
            datadisk_wait: DEFAULT_DATADISK_WAIT,
            warnings: Vec::new(),
        }
    }
}

/// Parses `/proc/cmdline`. Never fails: a bad token keeps the default and adds a warning.
pub fn parse(cmdline: &str) -> BootOptions {
    let mut opts = BootOptions::default();
    for token in cmdline.split_whitespace() {
        let Some(rest) = token.strip_prefix("eci.") else {
            continue;
        };
        let (key, value) = match rest.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (rest, None),
        };
        match (key, value) {
            ("selftest", None | Some("1")) => opts.selftest = true,
            ("selftest", Some("0")) => opts.selftest = false,
            ("datadisk", Some("none")) => opts.datadisk = DataDiskChoice::Disabled,
            ("datadisk", Some("auto")) => opts.datadisk = DataDiskChoice::Auto,
            ("datadisk", Some(dev)) if dev.starts_with("/dev/") && dev.len() > 5 => {
                opts.datadisk = DataDiskChoice::Device(dev.to_string())
            }
            ("datadisk_wait", Some(v)) => match v.parse::<u64>() {
                Ok(s) if s <= 600 => opts.datadisk_wait = Duration::from_secs(s),
                _ => opts.warnings.push(format!(
                    "ignoring `{token}`: the wait is whole seconds from 0 to 600"
                )),
            },
            _ => opts.warnings.push(format!(
                "ignoring unknown or malformed `{token}`; known: eci.selftest, eci.datadisk=none|auto|/dev/NAME, eci.datadisk_wait=SECONDS"
            )),
        }
    }
    opts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_eci_tokens() {
        let o = parse("console=ttyS0 panic=-1 lockdown=integrity slab_nomerge\n");
        assert_eq!(o, BootOptions::default());
    }

    #[test]
    fn selftest_and_disk_choices() {
        let o = parse("console=ttyS0 eci.selftest eci.datadisk=/dev/vdb eci.datadisk_wait=3");
        assert!(o.selftest);
        assert_eq!(o.datadisk, DataDiskChoice::Device("/dev/vdb".into()));
        assert_eq!(o.datadisk_wait, Duration::from_secs(3));
        assert!(o.warnings.is_empty());
        assert_eq!(
            parse("eci.datadisk=none").datadisk,
            DataDiskChoice::Disabled
        );
    }

    #[test]
    fn typos_are_reported_not_guessed() {
        let o = parse("eci.selftets eci.datadisk=vdb eci.datadisk_wait=ten");
        assert!(!o.selftest);
        assert_eq!(o.datadisk, DataDiskChoice::Auto);
        assert_eq!(o.datadisk_wait, DEFAULT_DATADISK_WAIT);
        assert_eq!(o.warnings.len(), 3, "{:?}", o.warnings);
        assert!(o.warnings[0].contains("eci.selftets"));
    }
}
