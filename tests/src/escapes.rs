//! Helpers for the escapes suite (tests/escapes.rs): the two container set-ups every attack is
//! tried in, a runner that reports one `name=worked|refused` line per attack, and a small
//! static C probe for the system calls busybox has no applet for.
//!
//! Plain runc is the baseline. `--privileged` cannot start under it on the development machine
//! (its bounding set lacks CAP_SYS_RESOURCE), and `--privileged` would also switch docker's
//! masks off, so the baseline is the strongest set-up that starts here and keeps the masks:
//! every capability but CAP_SYS_RESOURCE, no seccomp profile, no AppArmor profile.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::runc_engine::{RuncEngine, IMAGE, PLAIN_RUNC};

/// Where a container of an attack runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// Debian's runc with every capability this machine can grant, unconfined.
    PlainRunc,
    /// eci-runc, `docker run --privileged`.
    EciPrivileged,
    /// Plain runc with CAP_SYS_ADMIN added, unconfined (/sys stays read-only as docker mounts
    /// it for a container that is not privileged).
    PlainRuncSysAdmin,
    /// eci-runc with the same flags as `PlainRuncSysAdmin`.
    EciSysAdmin,
}

impl Setup {
    /// `docker run` flags of the set-up, before the image.
    pub fn flags(self) -> Vec<String> {
        let v: &[&str] = match self {
            Setup::PlainRunc => &[
                "--runtime",
                PLAIN_RUNC,
                "--cap-add",
                "ALL",
                "--cap-drop",
                "SYS_RESOURCE",
                "--security-opt",
                "seccomp=unconfined",
                "--security-opt",
                "apparmor=unconfined",
            ],
            Setup::EciPrivileged => &["--privileged"],
            Setup::PlainRuncSysAdmin => &[
                "--runtime",
                PLAIN_RUNC,
                "--cap-add",
                "SYS_ADMIN",
                "--security-opt",
                "seccomp=unconfined",
                "--security-opt",
                "apparmor=unconfined",
            ],
            Setup::EciSysAdmin => &[
                "--cap-add",
                "SYS_ADMIN",
                "--security-opt",
                "seccomp=unconfined",
                "--security-opt",
                "apparmor=unconfined",
            ],
        };
        v.iter().map(|s| s.to_string()).collect()
    }
}

/// One attack: a busybox `sh` script that exits 0 only when the attack reached what it was
/// after (a mask gone, a VM file written, a VM device read).
pub struct Attack {
    pub name: &'static str,
    pub script: String,
}

impl Attack {
    pub fn new(name: &'static str, script: impl Into<String>) -> Attack {
        Attack {
            name,
            script: script.into(),
        }
    }
}

/// Runs every attack in a fresh container of `setup` (plus `extra` flags, e.g. a device rule)
/// and returns `name -> (worked, output)`. Each attack gets its own container, so one that
/// succeeds cannot help the next.
pub fn run_attacks(
    e: &RuncEngine,
    setup: Setup,
    extra: &[&str],
    attacks: &[Attack],
) -> BTreeMap<&'static str, (bool, String)> {
    let mut out = BTreeMap::new();
    for a in attacks {
        let script = format!(
            "exec 2>&1; if ( {} ); then echo '@@{}=worked'; else echo '@@{}=refused'; fi",
            a.script, a.name, a.name
        );
        let mut args: Vec<String> = vec![
            "run".into(),
            "--rm".into(),
            "--network".into(),
            "none".into(),
        ];
        args.extend(setup.flags());
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend([IMAGE.to_string(), "sh".into(), "-c".into(), script]);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = e.docker(&argv);
        let stdout = String::from_utf8_lossy(&o.stdout).to_string();
        let text = format!("{stdout}{}", String::from_utf8_lossy(&o.stderr));
        let worked = stdout.lines().any(|l| l == format!("@@{}=worked", a.name));
        let refused = stdout.lines().any(|l| l == format!("@@{}=refused", a.name));
        assert!(
            worked || refused,
            "{setup:?} {}: the container did not run the attack: {text}",
            a.name
        );
        out.insert(a.name, (worked, text));
    }
    out
}

/// Asserts the baseline: every attack worked under plain runc.
pub fn assert_all_worked(results: &BTreeMap<&'static str, (bool, String)>) {
    for (name, (worked, text)) in results {
        assert!(*worked, "plain runc baseline: {name} did not work:\n{text}");
        println!("plain runc: {name} worked");
    }
}

/// Asserts that every attack was refused under eci-runc.
pub fn assert_all_refused(results: &BTreeMap<&'static str, (bool, String)>) {
    for (name, (worked, text)) in results {
        assert!(!*worked, "eci-runc: {name} WORKED:\n{text}");
        println!("eci-runc: {name} refused: {}", last_line(text));
    }
}

fn last_line(text: &str) -> &str {
    text.lines().rfind(|l| !l.starts_with("@@")).unwrap_or("")
}

/// The C source of the probe: `probe init_module|finit_module|open_by_handle_at|kexec_load|
/// kexec_file_load|bpf`. Exits 0 when the call got past every permission check, printing what
/// it reached; 3 when the kernel has no such call (ENOSYS); 1 with the errno otherwise.
const PROBE_C: &str = r#"
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static int report(const char *what, long rc) {
    if (rc < 0 && errno == EPERM) { printf("%s: EPERM\n", what); return 1; }
    if (rc < 0) { printf("%s: past the permission checks (%s)\n", what, strerror(errno)); return 0; }
    printf("%s: succeeded\n", what);
    return 0;
}

/* A kernel without kexec (no CONFIG_KEXEC) answers ENOSYS whoever asks: nothing to show. */
static int kexec(const char *what, long rc) {
    if (rc < 0 && errno == ENOSYS) { printf("%s: ENOSYS, not in this kernel\n", what); return 3; }
    return report(what, rc);
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    if (!strcmp(argv[1], "init_module")) {
        /* Not an ELF module: a kernel that lets the call through answers ENOEXEC (or ENOSYS
           without module support), never EPERM. */
        static char junk[64];
        return report("init_module", syscall(SYS_init_module, junk, sizeof junk, ""));
    }
    if (!strcmp(argv[1], "finit_module")) {
        int fd = open("/bin/busybox", O_RDONLY);
        return report("finit_module", syscall(SYS_finit_module, fd, "", 0));
    }
    if (!strcmp(argv[1], "open_by_handle_at")) {
        /* The "shocker" escape: a handle for inode 2 (the root folder of an ext4 filesystem,
           generation 0) opened against a file of the VM's filesystem that is bound into the
           container (/etc/hostname): the result is the VM's root folder. */
        struct { unsigned int bytes; int type; unsigned int ino, gen; } h = { 8, 1, 2, 0 };
        int mfd = open("/etc/hostname", O_RDONLY);
        if (mfd < 0) { perror("open /etc/hostname"); return 2; }
        int fd = syscall(SYS_open_by_handle_at, mfd, &h, O_RDONLY | O_DIRECTORY);
        if (fd < 0) {
            if (errno == EPERM) { printf("open_by_handle_at: EPERM\n"); return 1; }
            printf("open_by_handle_at: %s\n", strerror(errno));
            return 1;
        }
        DIR *d = fdopendir(fd);
        struct dirent *e;
        int etc = 0;
        while (d && (e = readdir(d))) if (!strcmp(e->d_name, "etc")) etc = 1;
        printf("open_by_handle_at: opened the filesystem's root folder (etc %s)\n", etc ? "found" : "not found");
        return etc ? 0 : 1;
    }
    if (!strcmp(argv[1], "kexec_load")) {
        /* Flags no kernel defines: a kernel that lets the caller past its CAP_SYS_BOOT check
           answers EINVAL and loads nothing. */
        return kexec("kexec_load", syscall(SYS_kexec_load, 0UL, 0UL, NULL, 0x40000000UL));
    }
    if (!strcmp(argv[1], "kexec_file_load")) {
        return kexec("kexec_file_load",
                     syscall(SYS_kexec_file_load, -1, -1, 0UL, NULL, 0x40000000UL));
    }
    if (!strcmp(argv[1], "bpf")) {
        /* BPF_MAP_GET_NEXT_ID from 0: the first id of the VM's BPF maps, the step before
           BPF_MAP_GET_FD_BY_ID opens one (both need CAP_SYS_ADMIN in the VM's namespace). */
        union { struct { unsigned int start_id, next_id, open_flags; } s; char pad[128]; } attr;
        memset(&attr, 0, sizeof attr);
        long rc = syscall(SYS_bpf, 12, &attr, sizeof attr);
        if (rc == 0) printf("bpf: the VM's first map id is %u\n", attr.s.next_id);
        return report("bpf", rc);
    }
    return 2;
}
"#;

/// Builds the probe as a static binary at `<dir>/probe` (gcc and the static C library must be
/// installed). Returns its path, or the compiler's complaint.
pub fn build_probe(dir: &Path) -> Result<PathBuf, String> {
    build_static_c(dir, "probe", PROBE_C)
}

/// Builds C `source` as the static binary `<dir>/<name>` (with threads), for containers whose
/// image has no C library. Returns its path, or the compiler's complaint.
pub fn build_static_c(dir: &Path, name: &str, source: &str) -> Result<PathBuf, String> {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).map_err(|e| format!("write {}: {e}", src.display()))?;
    let bin = dir.join(name);
    let o = Command::new("cc")
        .args(["-static", "-O2", "-pthread", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .map_err(|e| format!("run cc: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "cc -static failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(bin)
}

/// The VM's (this machine's) device numbers of the filesystem holding `/`.
pub fn root_block_device() -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata("/").expect("stat /").dev();
    (libc::major(dev), libc::minor(dev))
}

/// The device numbers of a block device of the machine that runs the engine: here the one
/// holding `/`; in the VM the first one its sysfs lists (`/sys/dev/block`, global, read from a
/// container). `None` when the VM has none (its root is the initramfs).
pub fn engine_block_device(e: &RuncEngine) -> Option<(u32, u32)> {
    if e.on_this_machine() {
        return Some(root_block_device());
    }
    let listed = e.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        IMAGE,
        "ls",
        "/sys/dev/block",
    ]);
    listed.split_whitespace().find_map(|d| {
        let (maj, min) = d.split_once(':')?;
        Some((maj.parse().ok()?, min.parse().ok()?))
    })
}

/// The pid (in the VM) of a running container's init.
pub fn container_pid(e: &RuncEngine, name: &str) -> i32 {
    e.ok(&["inspect", "-f", "{{.State.Pid}}", name])
        .parse()
        .expect("a pid")
}

/// Runs busybox `sh -c script` as root of the container's user namespace inside its mount and
/// pid namespaces, entered from the VM with nsenter: no seccomp filter and no mount vetting, so only
/// the kernel's own rules (MNT_LOCKED, MNT_LOCK_READONLY) decide. Returns (exit ok, output).
pub fn in_container_namespaces(pid: i32, script: &str) -> (bool, String) {
    let o = Command::new("nsenter")
        .args([
            "-t",
            &pid.to_string(),
            "-U",
            "-m",
            "-p",
            "--",
            "/bin/busybox",
            "sh",
            "-c",
        ])
        .arg(script)
        .output()
        .expect("run nsenter");
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}
