//! The emulated /proc/sys knobs (SPEC F2): kernel-global settings that container workloads
//! write at start-up and fail without. Each container gets its own copy, starting from the
//! VM's value; a write changes that copy only, never the VM's kernel, and no other container
//! or the VM sees it. The kernel goes on using the VM's value: the emulation lets a setup
//! step pass, it does not grant the setting.
//!
//! Left out on purpose: knobs SPEC P4 names as refused (`kernel.core_pattern`,
//! `kernel.modprobe`, `kernel.sysrq`), knobs whose value a workload acts on as a real limit
//! (`vm.max_map_count`, `fs.file-max`, `fs.nr_open`: a program that reads back a raised value
//! would then fail at the real one), and namespaced knobs (`net.*` of the container's own
//! network namespace, among them the conntrack timeouts and `net.bridge.bridge-nf-call-*`;
//! `kernel.hostname`, ...), which the kernel already keeps per container: emulating them would
//! hide a setting that really takes effect there.

/// One emulated knob: its path below /proc/sys and who writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knob {
    pub path: &'static str,
    pub written_by: &'static str,
}

/// The documented list (runtime/README.md repeats it).
pub const KNOBS: &[Knob] = &[
    Knob {
        path: "kernel/panic",
        written_by: "kubelet (--protect-kernel-defaults expects 10)",
    },
    Knob {
        path: "kernel/panic_on_oops",
        written_by: "kubelet (expects 1)",
    },
    Knob {
        path: "kernel/keys/root_maxkeys",
        written_by: "kubelet (raises it to 1000000)",
    },
    Knob {
        path: "kernel/keys/root_maxbytes",
        written_by: "kubelet (raises it to 25000000)",
    },
    Knob {
        path: "vm/overcommit_memory",
        written_by: "kubelet (expects 1)",
    },
    Knob {
        path: "vm/panic_on_oom",
        written_by: "kubelet (expects 0)",
    },
    Knob {
        path: "kernel/pid_max",
        written_by: "systemd (50-pid-max.conf raises it)",
    },
    Knob {
        path: "fs/protected_hardlinks",
        written_by: "systemd (50-default.conf)",
    },
    Knob {
        path: "fs/protected_symlinks",
        written_by: "systemd (50-default.conf)",
    },
    Knob {
        path: "fs/protected_regular",
        written_by: "systemd (50-default.conf)",
    },
    Knob {
        path: "fs/protected_fifos",
        written_by: "systemd (50-default.conf)",
    },
    Knob {
        path: "fs/inotify/max_user_watches",
        written_by: "kind and k3s nodes, systemd units of IDE servers",
    },
    Knob {
        path: "fs/inotify/max_user_instances",
        written_by: "kind and k3s nodes",
    },
    Knob {
        path: "net/netfilter/nf_conntrack_max",
        written_by: "kube-proxy (from --conntrack-min and -max-per-core; read-only outside the VM's network namespace)",
    },
];

/// The knob's file name in a container's view folder (`kernel.panic`).
pub fn file_name(k: &Knob) -> String {
    k.path.replace('/', ".")
}

/// The knob for a view file name.
pub fn by_file_name(name: &str) -> Option<&'static Knob> {
    KNOBS.iter().find(|k| file_name(k) == name)
}

/// A written value as the kernel would keep it: integers separated by whitespace, as many as
/// the knob holds (`like`: its current value). None when the kernel would refuse it (EINVAL).
pub fn normalize(written: &str, like: &str) -> Option<String> {
    let want = like.split_whitespace().count().max(1);
    let vals: Vec<i64> = written
        .split_whitespace()
        .map(|t| t.parse::<i64>().ok())
        .collect::<Option<_>>()?;
    if vals.is_empty() || vals.len() > want {
        return None;
    }
    let mut s = vals
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join("\t");
    s.push('\n');
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        for k in KNOBS {
            assert_eq!(by_file_name(&file_name(k)), Some(k));
            assert!(!k.written_by.is_empty());
        }
        let mut names: Vec<_> = KNOBS.iter().map(file_name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), KNOBS.len());
    }

    #[test]
    fn refused_knobs_are_not_emulated() {
        for p in [
            "kernel/core_pattern",
            "kernel/modprobe",
            "kernel/sysrq",
            "vm/max_map_count",
        ] {
            assert!(KNOBS.iter().all(|k| k.path != p), "{p}");
        }
    }

    #[test]
    fn values_are_checked_like_the_kernel() {
        assert_eq!(normalize("10\n", "0\n").as_deref(), Some("10\n"));
        assert_eq!(normalize(" 1 ", "0").as_deref(), Some("1\n"));
        assert_eq!(normalize("abc", "0"), None);
        assert_eq!(normalize("", "0"), None);
        assert_eq!(normalize("1 2", "0"), None);
        assert_eq!(normalize("1 2", "4 4").as_deref(), Some("1\t2\n"));
    }
}
