//! Kernel version numbers as they appear in config headers, release strings and pins.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// `major.minor.patch` of a Linux kernel. Distribution suffixes (`+deb12-cloud-amd64`,
/// `.2-microsoft-standard-WSL2`, `-18-amd64`) are not part of the version: feature minimums are
/// stated against upstream releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl KernelVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        KernelVersion {
            major,
            minor,
            patch,
        }
    }

    /// Reads the leading `X.Y[.Z]` of a release string such as `6.12.107+deb12-cloud-amd64`
    /// or `6.6.87.2-microsoft-standard-WSL2`. Returns `None` when it does not start that way.
    pub fn from_release(release: &str) -> Option<Self> {
        let mut parts = [0u32; 3];
        let mut count = 0;
        let mut rest = release.trim();
        while count < 3 {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                break;
            }
            parts[count] = rest[..digits].parse().ok()?;
            count += 1;
            rest = &rest[digits..];
            match rest.strip_prefix('.') {
                Some(r) if r.starts_with(|c: char| c.is_ascii_digit()) => rest = r,
                _ => break,
            }
        }
        if count < 2 {
            return None;
        }
        Some(KernelVersion::new(parts[0], parts[1], parts[2]))
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for KernelVersion {
    type Err = String;

    /// Strict form used in pins: `X.Y` or `X.Y.Z`, nothing else.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fields: Vec<&str> = s.split('.').collect();
        if !(2..=3).contains(&fields.len()) {
            return Err(format!(
                "`{s}` is not a kernel version: write X.Y or X.Y.Z, e.g. 5.19"
            ));
        }
        let mut parts = [0u32; 3];
        for (i, field) in fields.iter().enumerate() {
            if field.is_empty() || !field.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "`{s}` is not a kernel version: write X.Y or X.Y.Z, e.g. 5.19"
                ));
            }
            parts[i] = field
                .parse()
                .map_err(|_| format!("`{s}`: version field `{field}` is too large"))?;
        }
        Ok(KernelVersion::new(parts[0], parts[1], parts[2]))
    }
}

impl Serialize for KernelVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_strings() {
        assert_eq!(
            KernelVersion::from_release("6.12.107+deb12-cloud-amd64"),
            Some(KernelVersion::new(6, 12, 107))
        );
        assert_eq!(
            KernelVersion::from_release("6.6.87.2-microsoft-standard-WSL2"),
            Some(KernelVersion::new(6, 6, 87))
        );
        assert_eq!(
            KernelVersion::from_release("6.1.0-18-amd64"),
            Some(KernelVersion::new(6, 1, 0))
        );
        assert_eq!(
            KernelVersion::from_release("5.19-rc3"),
            Some(KernelVersion::new(5, 19, 0))
        );
        assert_eq!(KernelVersion::from_release("6"), None);
        assert_eq!(KernelVersion::from_release("linux"), None);
    }

    #[test]
    fn strict_form_and_ordering() {
        let v: KernelVersion = "5.19".parse().unwrap();
        assert_eq!(v, KernelVersion::new(5, 19, 0));
        assert!(KernelVersion::new(5, 15, 200) < v);
        assert!(KernelVersion::new(6, 1, 0) > v);
        assert!("5.19.x".parse::<KernelVersion>().is_err());
        assert!("5".parse::<KernelVersion>().is_err());
        assert!("5.19.1.2".parse::<KernelVersion>().is_err());
    }
}
