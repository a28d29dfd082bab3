//! The run-time probe against fake /proc and /sys trees, and once, read-only, against this
//! machine.

use std::io::Write;
use std::path::{Path, PathBuf};

use eci_kernel_config::{
    probe_running_kernel, Phase, Pins, ProbeError, ProbeKind, ProbeOptions, ProbeReport,
    ProbeStatus, Target,
};

const RELEASE: &str = "6.12.107+deb12-cloud-amd64";
const WSL_RELEASE: &str = "6.6.87.2-microsoft-standard-WSL2";

fn fixture_text() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("testdata/config-{RELEASE}"));
    std::fs::read_to_string(path).unwrap()
}

struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new(release: &str) -> Tree {
        let t = Tree {
            dir: tempfile::tempdir().unwrap(),
        };
        t.write("proc/sys/kernel/osrelease", &format!("{release}\n"));
        t
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.root().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn mkdir(&self, rel: &str) {
        std::fs::create_dir_all(self.root().join(rel)).unwrap();
    }

    fn remove(&self, rel: &str) {
        let p = self.root().join(rel);
        if p.is_dir() {
            std::fs::remove_dir_all(p).unwrap();
        } else {
            std::fs::remove_file(p).unwrap();
        }
    }

    fn sysctl(&self, name: &str, value: &str) {
        self.write(
            &format!("proc/sys/{}", name.replace('.', "/")),
            &format!("{value}\n"),
        );
    }

    /// What the VM init establishes on the pinned kernel (SPEC V3 plus the compensations).
    fn hardened(&self) {
        for (name, value) in [
            ("kernel.kptr_restrict", "1"),
            ("kernel.dmesg_restrict", "1"),
            ("kernel.unprivileged_bpf_disabled", "2"),
            ("kernel.perf_event_paranoid", "3"),
            ("kernel.yama.ptrace_scope", "1"),
            ("fs.protected_symlinks", "1"),
            ("fs.protected_hardlinks", "1"),
            ("fs.protected_fifos", "2"),
            ("fs.protected_regular", "2"),
            ("vm.unprivileged_userfaultfd", "0"),
            ("kernel.kexec_load_disabled", "1"),
            ("kernel.modules_disabled", "1"),
            ("kernel.sysrq", "0"),
            ("kernel.panic_on_oops", "1"),
            ("dev.tty.ldisc_autoload", "0"),
            ("vm.mmap_rnd_bits", "32"),
            ("net.core.bpf_jit_enable", "1"),
        ] {
            self.sysctl(name, value);
        }
        self.write(
            "sys/kernel/security/lockdown",
            "none [integrity] confidentiality\n",
        );
        self.write(
            "proc/cmdline",
            "BOOT_IMAGE=/vmlinuz root=LABEL=root ro lockdown=integrity slab_nomerge quiet\n",
        );
    }
}

use eci_kernel_config::testdata::boot_modules;

fn hyperv_modules() -> Vec<String> {
    let mut m = boot_modules("common");
    m.extend(boot_modules("hyperv"));
    m
}

/// A Hyper-V VM on the pinned kernel after boot: config in /boot, modules loaded.
fn hyperv_vm() -> Tree {
    let t = Tree::new(RELEASE);
    t.write(&format!("boot/config-{RELEASE}"), &fixture_text());
    for m in hyperv_modules() {
        t.mkdir(&format!("sys/module/{m}"));
    }
    t.hardened();
    t
}

fn opts(phase: Phase) -> ProbeOptions {
    ProbeOptions {
        boot_modules: hyperv_modules(),
        expected_release: Some(RELEASE.into()),
        ..ProbeOptions::new(phase)
    }
}

fn probe(t: &Tree, target: Target, o: &ProbeOptions) -> ProbeReport {
    probe_running_kernel(t.root(), &Pins::builtin(target).unwrap(), o).unwrap()
}

fn drift_names(r: &ProbeReport) -> Vec<String> {
    r.drifts().map(|d| d.name.clone()).collect()
}

#[test]
fn pinned_kernel_after_boot_matches() {
    let t = hyperv_vm();
    let r = probe(&t, Target::Hyperv, &opts(Phase::AfterModuleLock));
    assert!(r.is_ok(), "{}", r.render_table());
    assert_eq!(r.profile.as_deref(), Some("debian12-cloud-6.12"));
    assert!(r
        .config_source
        .as_deref()
        .unwrap()
        .ends_with(&format!("boot/config-{RELEASE}")));
    assert!(r.summary().contains("matches the hyperv pin"));
    // the compensations' run-time conditions were checked, not assumed
    for name in [
        "lockdown",
        "cmdline slab_nomerge",
        "kernel.sysrq",
        "vm.mmap_rnd_bits",
    ] {
        let row = r
            .rows
            .iter()
            .find(|x| x.name == name)
            .unwrap_or_else(|| panic!("{name}"));
        assert_eq!(row.status, ProbeStatus::Ok);
    }
    assert!(r
        .rows
        .iter()
        .any(|x| x.kind == ProbeKind::Module && x.name == "overlay"));
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(json["passed"], true);
}

#[test]
fn every_drift_is_named() {
    let t = hyperv_vm();
    t.sysctl("kernel.kexec_load_disabled", "0");
    t.sysctl("kernel.kptr_restrict", "0");
    t.remove("sys/module/overlay");
    t.write(
        "sys/kernel/security/lockdown",
        "[none] integrity confidentiality\n",
    );
    t.write("proc/cmdline", "root=LABEL=root ro lockdown=integrity\n");
    t.remove("proc/sys/kernel/yama");
    let mut o = opts(Phase::AfterModuleLock);
    o.expected_release = Some("6.12.110+deb12-cloud-amd64".into());
    let r = probe(&t, Target::Hyperv, &o);
    assert!(!r.is_ok());
    let names = drift_names(&r);
    for want in [
        "kernel release",
        "kernel.kexec_load_disabled",
        "kernel.kptr_restrict",
        "overlay",
        "lockdown",
        "cmdline slab_nomerge",
        "kernel.yama.ptrace_scope",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    let summary = r.summary();
    assert!(summary.contains("isolation must not start"), "{summary}");
    for n in &names {
        assert!(summary.contains(n.as_str()), "{n} not in {summary}");
    }
    let table = r.render_table();
    assert!(
        table.lines().nth(3).unwrap().starts_with("DRIFT"),
        "{table}"
    );
}

#[test]
fn phase_decides_whether_module_loading_must_be_off() {
    let t = hyperv_vm();
    t.sysctl("kernel.modules_disabled", "0");
    let before = probe(&t, Target::Hyperv, &opts(Phase::BeforeModuleLock));
    assert!(before.is_ok(), "{}", before.render_table());
    let row = before
        .rows
        .iter()
        .find(|x| x.name == "kernel.modules_disabled")
        .unwrap();
    assert!(matches!(row.status, ProbeStatus::Unverified(_)));
    let after = probe(&t, Target::Hyperv, &opts(Phase::AfterModuleLock));
    assert_eq!(drift_names(&after), vec!["kernel.modules_disabled"]);
}

#[test]
fn a_replaced_config_is_drift() {
    let t = hyperv_vm();
    let edited: String = fixture_text()
        .lines()
        .map(|l| {
            if l == "CONFIG_USER_NS=y" {
                "# CONFIG_USER_NS is not set"
            } else {
                l
            }
        })
        .map(|l| format!("{l}\n"))
        .collect();
    // /proc/config.gz wins over /boot and is read by its gzip magic
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(edited.as_bytes()).unwrap();
    std::fs::write(t.root().join("proc/config.gz"), enc.finish().unwrap()).unwrap();
    let r = probe(&t, Target::Hyperv, &opts(Phase::AfterModuleLock));
    assert_eq!(drift_names(&r), vec!["CONFIG_USER_NS"]);
    assert!(r.config_source.unwrap().ends_with("proc/config.gz"));

    std::fs::write(t.root().join("proc/config.gz"), b"CONFIG_BROKEN=maybe\n").unwrap();
    let r = probe(&t, Target::Hyperv, &opts(Phase::AfterModuleLock));
    assert!(drift_names(&r).contains(&"kernel config".to_string()));
}

/// A WSL2 kernel without /proc/config.gz: feature traces only.
fn wsl_without_config() -> Tree {
    let t = Tree::new(WSL_RELEASE);
    // a planted /boot config is ignored under WSL2
    t.write(&format!("boot/config-{WSL_RELEASE}"), &fixture_text());
    for ns in ["user", "pid", "net", "ipc", "uts", "cgroup", "mnt"] {
        t.write(&format!("proc/self/ns/{ns}"), "");
    }
    t.write(
        "proc/cgroups",
        "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t0\t1\t1\ncpu\t0\t1\t1\n\
         cpuacct\t0\t1\t1\nblkio\t0\t1\t1\nmemory\t0\t1\t1\ndevices\t0\t1\t1\n\
         freezer\t0\t1\t1\nhugetlb\t0\t1\t1\npids\t0\t1\t1\n",
    );
    t.write(
        "proc/filesystems",
        "nodev\tsysfs\nnodev\ttmpfs\nnodev\tproc\nnodev\tmqueue\nnodev\tsecurityfs\n\
         \text4\nnodev\toverlay\nnodev\tfuse\nnodev\t9p\nnodev\tvirtiofs\n",
    );
    t.write(
        "proc/self/status",
        "Name:\tprobe\nSeccomp:\t0\nSeccomp_filters:\t0\n",
    );
    t.write(
        "proc/sys/kernel/seccomp/actions_avail",
        "kill_process kill_thread trap errno user_notif trace log allow\n",
    );
    t.mkdir("proc/sys/kernel/keys");
    t.mkdir("proc/sys/net/ipv6");
    t.mkdir("proc/sys/net/bridge");
    let builtin: String = boot_modules("common")
        .iter()
        .map(|m| format!("kernel/net/{m}.ko\n"))
        .collect();
    t.write(
        &format!("lib/modules/{WSL_RELEASE}/modules.builtin"),
        &builtin,
    );
    t.hardened();
    t
}

fn wsl_opts() -> ProbeOptions {
    ProbeOptions {
        expected_release: Some(WSL_RELEASE.into()),
        ..ProbeOptions::new(Phase::AfterModuleLock)
    }
}

#[test]
fn wsl2_without_config_probes_features_and_flags_the_missing_config() {
    let t = wsl_without_config();
    let r = probe(&t, Target::Wsl2, &wsl_opts());
    assert_eq!(r.config_source, None, "/boot is not trusted under WSL2");
    // the pin requires /proc/config.gz on WSL2, so its absence is itself drift
    assert_eq!(
        drift_names(&r),
        vec!["CONFIG_IKCONFIG_PROC"],
        "{}",
        r.render_table()
    );
    let row = |n: &str| r.rows.iter().find(|x| x.name == n).unwrap().status.clone();
    assert_eq!(row("CONFIG_USER_NS"), ProbeStatus::Ok);
    assert_eq!(row("CONFIG_OVERLAY_FS"), ProbeStatus::Ok);
    assert_eq!(row("CONFIG_MEMCG"), ProbeStatus::Ok);
    assert_eq!(row("CONFIG_SECCOMP_FILTER"), ProbeStatus::Ok);
    assert_eq!(
        row("CONFIG_VETH"),
        ProbeStatus::Ok,
        "built in per modules.builtin"
    );
    assert_eq!(
        row("CONFIG_LOCK_DOWN_KERNEL_FORCE_INTEGRITY || CONFIG_LOCK_DOWN_KERNEL_FORCE_CONFIDENTIALITY"),
        ProbeStatus::Ok
    );
    assert!(matches!(
        row("CONFIG_STRICT_KERNEL_RWX"),
        ProbeStatus::Unverified(_)
    ));
    assert!(matches!(row("CONFIG_DEVMEM"), ProbeStatus::Unverified(_)));
}

#[test]
fn wsl2_feature_drifts_are_named() {
    let t = wsl_without_config();
    t.write("proc/filesystems", "nodev\ttmpfs\n\text4\nnodev\tfuse\n");
    t.write(
        "proc/sys/kernel/seccomp/actions_avail",
        "kill_process errno allow\n",
    );
    t.remove("proc/self/ns/user");
    t.write(
        &format!("lib/modules/{WSL_RELEASE}/modules.builtin"),
        "kernel/net/veth.ko\n",
    );
    t.write(
        "sys/kernel/security/lockdown",
        "[none] integrity confidentiality\n",
    );
    let r = probe(&t, Target::Wsl2, &wsl_opts());
    let names = drift_names(&r);
    for want in [
        "CONFIG_USER_NS",
        "CONFIG_OVERLAY_FS",
        "CONFIG_SECCOMP_FILTER",
        "CONFIG_BRIDGE",
        "CONFIG_9P_FS",
        "CONFIG_LOCK_DOWN_KERNEL_FORCE_INTEGRITY || CONFIG_LOCK_DOWN_KERNEL_FORCE_CONFIDENTIALITY",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    assert!(!names.iter().any(|n| n == "CONFIG_VETH"), "{names:?}");
    let summary = r.summary();
    assert!(summary.contains("add it to kernel.modules"), "{summary}");
}

#[test]
fn too_old_a_kernel_is_drift() {
    let t = wsl_without_config();
    t.write(
        "proc/sys/kernel/osrelease",
        "5.15.153.1-microsoft-standard-WSL2\n",
    );
    let mut o = wsl_opts();
    o.expected_release = None;
    let r = probe(&t, Target::Wsl2, &o);
    let overlay = r
        .rows
        .iter()
        .find(|x| x.name == "CONFIG_OVERLAY_FS")
        .unwrap();
    let ProbeStatus::Drift(d) = &overlay.status else {
        panic!("{overlay:?}")
    };
    assert!(d.contains("5.19.0") && d.contains("5.15.153"), "{d}");
}

#[test]
fn no_proc_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = probe_running_kernel(
        dir.path(),
        &Pins::builtin(Target::Qemu).unwrap(),
        &ProbeOptions::new(Phase::AfterModuleLock),
    )
    .unwrap_err();
    assert!(matches!(err, ProbeError::Io { .. }));
    assert!(err.to_string().contains("osrelease"), "{err}");
}

/// Read-only against this machine: it is not the VM, so only that a report comes back.
#[test]
fn probes_this_machine_read_only() {
    let pins = Pins::builtin(Target::Qemu).unwrap();
    let r = probe_running_kernel(
        Path::new("/"),
        &pins,
        &ProbeOptions::new(Phase::AfterModuleLock),
    )
    .expect("the probe runs against the real /proc");
    assert!(!r.kernel_release.is_empty());
    assert!(r.rows.len() > 20);
    println!("{}", r.summary());
}
