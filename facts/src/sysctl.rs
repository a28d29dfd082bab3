//! The sysctl.conf format as procps' `sysctl -p` and sysctl.d(5) read it: `name = value` lines,
//! `#` and `;` comments, later lines win. eci-init applies the VM's file at boot and the image
//! build checks the same file establishes what the kernel pins need, so both read it here.
//!
//! A name's separators: if the first separator is a `/`, the name is a path below `/proc/sys`
//! as written (`net/ipv4/conf/eth0.1/forwarding`); otherwise `.` separates components and a
//! `/` stands for a dot inside one (`net.ipv4.conf.eth0/1.forwarding`). Both spell the same
//! setting; [`Setting::name`] holds the dotted form, which is how sysctl(8) prints names.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// 1-based line in the file.
    pub line: usize,
    /// The dotted name (`kernel.sysrq`, `net.ipv4.conf.eth0/1.forwarding`).
    pub name: String,
    pub value: String,
}

impl Setting {
    /// The file under /proc/sys that holds this setting.
    pub fn proc_path(&self) -> PathBuf {
        PathBuf::from("/proc/sys").join(swap_separators(&self.name))
    }
}

/// A line that is neither blank, a comment nor `name = value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlError {
    pub file: String,
    pub line: usize,
    pub text: String,
}

impl fmt::Display for SysctlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: `{}` is not `name = value`; fix or remove the line",
            self.file, self.line, self.text
        )
    }
}

impl std::error::Error for SysctlError {}

/// `.` and `/` exchanged: a dotted name's path below /proc/sys, and back.
fn swap_separators(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '.' => '/',
            '/' => '.',
            c => c,
        })
        .collect()
}

/// The dotted name for a name as written (see the module comment), or `None` when it is not a
/// name: empty, holding whitespace, or with a component that is empty, `.` or `..` (which
/// would name something other than one file below /proc/sys).
pub fn dotted_name(written: &str) -> Option<String> {
    let path = match written.find(['.', '/']) {
        Some(i) if written.as_bytes()[i] == b'/' => written.to_string(),
        _ => swap_separators(written),
    };
    let valid = !path.is_empty()
        && !path.contains(char::is_whitespace)
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    valid.then(|| swap_separators(&path))
}

/// Parses a file; `file` names it in errors. A malformed line is reported (the image renders
/// this file, so a bad line is a template bug worth seeing) but does not stop the other lines.
pub fn parse(text: &str, file: &str) -> (Vec<Setting>, Vec<SysctlError>) {
    let mut settings = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        match line
            .split_once('=')
            .and_then(|(name, value)| Some((dotted_name(name.trim())?, value)))
        {
            Some((name, value)) => settings.push(Setting {
                line: i + 1,
                name,
                value: value.trim().to_string(),
            }),
            None => errors.push(SysctlError {
                file: file.to_string(),
                line: i + 1,
                text: line.to_string(),
            }),
        }
    }
    (settings, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_separator_decides_how_a_name_is_read() {
        for (written, dotted, path) in [
            ("kernel.sysrq", "kernel.sysrq", "/proc/sys/kernel/sysrq"),
            ("kernel/sysrq", "kernel.sysrq", "/proc/sys/kernel/sysrq"),
            (
                "net/ipv4/conf/eth0.1/forwarding",
                "net.ipv4.conf.eth0/1.forwarding",
                "/proc/sys/net/ipv4/conf/eth0.1/forwarding",
            ),
            (
                "net.ipv4.conf.eth0/1.forwarding",
                "net.ipv4.conf.eth0/1.forwarding",
                "/proc/sys/net/ipv4/conf/eth0.1/forwarding",
            ),
            ("fs", "fs", "/proc/sys/fs"),
        ] {
            let (s, e) = parse(&format!("{written} = 1\n"), "f");
            assert!(e.is_empty(), "{written}: {e:?}");
            assert_eq!(s[0].name, dotted, "{written}");
            assert_eq!(s[0].proc_path(), PathBuf::from(path), "{written}");
        }
    }

    #[test]
    fn names_that_leave_one_file_are_refused() {
        for bad in [
            "kernel..sysrq",
            "kernel/../sysrq",
            "/kernel/sysrq",
            ".kernel",
            "kernel.",
            "kernel./.",
            "two words",
        ] {
            assert_eq!(dotted_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn comments_values_and_bad_lines() {
        let (s, e) = parse(
            "# c\n; c\n\n  kernel.sysrq = 0\nvm.x=  3 \nkernel.core_pattern = |/bin/x %p\nbogus line\n= 3\nk.. = 1\n",
            "f",
        );
        let got: Vec<(usize, &str, &str)> = s
            .iter()
            .map(|s| (s.line, s.name.as_str(), s.value.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (4, "kernel.sysrq", "0"),
                (5, "vm.x", "3"),
                (6, "kernel.core_pattern", "|/bin/x %p"),
            ]
        );
        assert_eq!(e.iter().map(|e| e.line).collect::<Vec<_>>(), vec![7, 8, 9]);
        assert!(e[0].to_string().starts_with("f:7: `bogus line`"));
    }
}
