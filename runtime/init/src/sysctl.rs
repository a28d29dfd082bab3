//! `/etc/eci/sysctl.conf` (rendered from vm-config/templates/sysctl.conf.tera): the hardening
//! sysctls (SPEC V3) and the compensations the kernel pin check requires. eci-init applies the
//! file as `sysctl -p` would: `name = value` lines, `#`/`;` comments, later lines win.

use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub line: usize,
    pub name: String,
    pub value: String,
}

impl Setting {
    /// The file under /proc/sys that holds this setting. Dots separate components unless the
    /// name already uses slashes (sysctl's notation for names with dots in a component).
    pub fn proc_path(&self) -> PathBuf {
        let rel = if self.name.contains('/') {
            self.name.clone()
        } else {
            self.name.replace('.', "/")
        };
        PathBuf::from("/proc/sys").join(rel)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: `{text}` is not `name = value`; fix or remove the line")]
pub struct SysctlError {
    pub file: String,
    pub line: usize,
    pub text: String,
}

/// Parses the file; a malformed line is an error naming it (the image build renders this file,
/// so a bad line is a template bug worth seeing), but it does not stop the other lines.
pub fn parse(text: &str, file: &str) -> (Vec<Setting>, Vec<SysctlError>) {
    let mut settings = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        match line.split_once('=') {
            Some((name, value))
                if !name.trim().is_empty()
                    && !name.trim().contains(char::is_whitespace)
                    && !name.contains("..") =>
            {
                settings.push(Setting {
                    line: i + 1,
                    name: name.trim().to_string(),
                    value: value.trim().to_string(),
                })
            }
            _ => errors.push(SysctlError {
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
    fn the_shipped_template_parses_and_hardens() {
        let text = include_str!("../../../vm-config/templates/sysctl.conf.tera");
        let (settings, errors) = parse(text, "sysctl.conf");
        assert!(errors.is_empty(), "{errors:?}");
        let get = |n: &str| {
            settings
                .iter()
                .find(|s| s.name == n)
                .map(|s| s.value.as_str())
        };
        // The list (SPEC V3); modules_disabled is eci-init's own step, after loading.
        for (name, value) in [
            ("kernel.kptr_restrict", "2"),
            ("kernel.dmesg_restrict", "1"),
            ("kernel.unprivileged_bpf_disabled", "1"),
            ("kernel.perf_event_paranoid", "3"),
            ("kernel.yama.ptrace_scope", "1"),
            ("fs.protected_symlinks", "1"),
            ("fs.protected_hardlinks", "1"),
            ("kernel.kexec_load_disabled", "1"),
        ] {
            assert_eq!(get(name), Some(value), "{name}");
        }
        assert_eq!(get("kernel.modules_disabled"), None);
    }

    #[test]
    fn paths_comments_and_bad_lines() {
        let (s, e) = parse(
            "# c\n; c\nkernel.sysrq = 0\nnet/ipv4/conf/eth0.1/forwarding=1\nbogus line\n= 3\n",
            "f",
        );
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].proc_path(), PathBuf::from("/proc/sys/kernel/sysrq"));
        assert_eq!(
            s[1].proc_path(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.1/forwarding")
        );
        assert_eq!(e.iter().map(|e| e.line).collect::<Vec<_>>(), vec![5, 6]);
        assert!(e[0].to_string().starts_with("f:5:"));
    }
}
