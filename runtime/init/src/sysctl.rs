//! `/etc/eci/sysctl.conf` (rendered from vm-config/templates/sysctl.conf.tera): the hardening
//! sysctls (SPEC V3) and the compensations the kernel pin check requires. eci-init applies the
//! file as `sysctl -p` would, read by eci-facts' parser, the one the image build checks the
//! same file with.

pub use eci_facts::sysctl::{parse, Setting, SysctlError};

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
}
