//! The device filter on cgroup2 (SPEC P3): cgroup2 has no `devices.allow`/`devices.deny`
//! files; the kernel asks an eBPF program of type `BPF_PROG_TYPE_CGROUP_DEVICE` attached to
//! the cgroup instead. This file compiles the spec's device rules (after the policy rewrote them
//! to "deny all, allow the safe set") into such a program and attaches it.
//!
//! The user namespace already forbids `mknod` of devices and the container's `/dev` only holds
//! the safe set, so the filter is a second, independent wall: a device node that reaches the
//! container some other way (a volume holding one, a bug elsewhere) still cannot be opened.
//!
//! Program shape (r1 = `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`,
//! `access_type = access << 16 | type`): load type, access, major and minor into r2-r5, then one
//! block per rule, the spec's last rule first (later rules override earlier ones, as with the
//! v1 files), each returning allow (1) or deny (0) when it matches; no match denies.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use eci_policy::spec::DeviceRule;

use crate::sys::{self, Result};

use crate::sys::bpf::Insn;

const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

const LDX_MEM_W: u8 = 0x61;
const ALU64_AND_K: u8 = 0x57;
const ALU64_RSH_K: u8 = 0x77;
const ALU64_MOV_K: u8 = 0xb7;
const ALU64_MOV_X: u8 = 0xbf;
const JMP_JNE_K: u8 = 0x55;
const JMP_JEQ_K: u8 = 0x15;
const EXIT: u8 = 0x95;

fn access_bits(access: Option<&str>) -> std::result::Result<i32, String> {
    let a = access.unwrap_or("rwm");
    let mut bits = 0;
    for c in a.chars() {
        bits |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => {
                return Err(format!(
                    "device rule access {a:?}: only r, w and m are known"
                ))
            }
        };
    }
    Ok(bits)
}

/// One rule's block. `None` marks the jumps to the block's end (no match).
fn rule_block(rule: &DeviceRule) -> std::result::Result<Vec<(Insn, bool)>, String> {
    let mut b = Vec::new();
    let kind = match rule.kind.as_deref().unwrap_or("a") {
        "a" => None,
        "c" => Some(DEV_CHAR),
        "b" => Some(DEV_BLOCK),
        k => return Err(format!("device rule type {k:?}: use a, b or c")),
    };
    if let Some(t) = kind {
        b.push((insn(JMP_JNE_K, 2, 0, 0, t), true));
    }
    // A wildcard-type rule ("a") covers every device whatever its numbers say.
    if kind.is_some() {
        if let Some(m) = rule.major.filter(|m| *m >= 0) {
            let m = i32::try_from(m).map_err(|_| format!("device major {m} is out of range"))?;
            b.push((insn(JMP_JNE_K, 4, 0, 0, m), true));
        }
        if let Some(m) = rule.minor.filter(|m| *m >= 0) {
            let m = i32::try_from(m).map_err(|_| format!("device minor {m} is out of range"))?;
            b.push((insn(JMP_JNE_K, 5, 0, 0, m), true));
        }
    }
    let acc = access_bits(rule.access.as_deref())?;
    b.push((insn(ALU64_MOV_X, 1, 3, 0, 0), false));
    if rule.allow {
        // Allowed only if every requested access is in the rule's set.
        b.push((insn(ALU64_AND_K, 1, 0, 0, !acc & 7), false));
        b.push((insn(JMP_JNE_K, 1, 0, 0, 0), true));
    } else {
        // Denied if any requested access is in the rule's set.
        b.push((insn(ALU64_AND_K, 1, 0, 0, acc), false));
        b.push((insn(JMP_JEQ_K, 1, 0, 0, 0), true));
    }
    b.push((insn(ALU64_MOV_K, 0, 0, 0, i32::from(rule.allow)), false));
    b.push((insn(EXIT, 0, 0, 0, 0), false));
    Ok(b)
}

/// The filter program for `rules` (OCI order: later rules win; default deny).
pub fn compile(rules: &[DeviceRule]) -> std::result::Result<Vec<Insn>, String> {
    let mut prog = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU64_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU64_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for rule in rules.iter().rev() {
        let block = rule_block(rule)?;
        let len = block.len();
        for (i, (mut ins, to_end)) in block.into_iter().enumerate() {
            if to_end {
                ins.off = i16::try_from(len - i - 1).expect("blocks are short");
            }
            prog.push(ins);
        }
    }
    prog.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    prog.push(insn(EXIT, 0, 0, 0, 0));
    Ok(prog)
}

fn load(prog: &[Insn]) -> Result<OwnedFd> {
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 0];
    for attempt in 0..2 {
        if attempt == 1 {
            log = vec![0u8; 16 * 1024];
        }
        let e = match sys::bpf::load_cgroup_device(prog, license, b"eci_devcg", &mut log) {
            Ok(fd) => return Ok(fd),
            Err(e) => e,
        };
        // Only the verifier's refusal has a log worth a second try.
        if attempt == 1 || e != nix::errno::Errno::EINVAL {
            let text = String::from_utf8_lossy(&log);
            let text = text.trim_end_matches('\0').trim();
            return Err(if text.is_empty() {
                format!("load the cgroup2 device filter: {e}")
            } else {
                format!("load the cgroup2 device filter: {e}: {text}")
            });
        }
    }
    unreachable!("the loop returns on its second attempt")
}

/// Compile `rules` and attach the program to the cgroup2 folder `dir`.
pub fn attach(dir: &Path, rules: &[DeviceRule]) -> Result<()> {
    let prog = compile(rules)?;
    let fd = load(&prog)?;
    let cg = sys::open(dir, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    sys::bpf::attach_cgroup_device(cg.as_fd(), fd.as_fd()).map_err(|e| {
        sys::nix_err(
            format!("attach the device filter to cgroup {}", dir.display()),
            e,
        )
    })?;
    // The attached program lives as long as the cgroup; our descriptor is not needed.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        allow: bool,
        kind: &str,
        major: Option<i64>,
        minor: Option<i64>,
        acc: &str,
    ) -> DeviceRule {
        DeviceRule {
            allow,
            kind: Some(kind.into()),
            major,
            minor,
            access: Some(acc.into()),
        }
    }

    /// A small interpreter for the instructions `compile` emits, so the rule semantics are
    /// checked without the kernel; the kernel test below checks the real thing.
    fn run(prog: &[Insn], kind: i32, access: i32, major: i32, minor: i32) -> u64 {
        let ctx = [((access << 16) | kind) as u32, major as u32, minor as u32];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => r[dst] = u64::from(ctx[i.off as usize / 4]),
                ALU64_AND_K => r[dst] &= i.imm as i64 as u64,
                ALU64_RSH_K => r[dst] >>= i.imm,
                ALU64_MOV_K => r[dst] = i.imm as i64 as u64,
                ALU64_MOV_X => r[dst] = r[src],
                JMP_JNE_K if r[dst] != i.imm as i64 as u64 => pc += i.off as usize,
                JMP_JEQ_K if r[dst] == i.imm as i64 as u64 => pc += i.off as usize,
                JMP_JNE_K | JMP_JEQ_K => {}
                EXIT => return r[0],
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    fn policy_rules(fuse: bool) -> Vec<DeviceRule> {
        let mut spec = eci_policy::spec::Spec::default();
        if fuse {
            spec.linux_mut().devices.push(eci_policy::spec::Device {
                kind: "c".into(),
                path: "/dev/fuse".into(),
                major: 10,
                minor: 229,
                file_mode: None,
                uid: None,
                gid: None,
            });
        }
        eci_policy::filter_devices(&mut spec);
        spec.linux.unwrap().resources.unwrap().devices
    }

    #[test]
    fn the_policy_rules_allow_only_the_safe_set() {
        let prog = compile(&policy_rules(false)).unwrap();
        let rw = ACC_READ | ACC_WRITE;
        for (major, minor) in [(1, 3), (1, 5), (1, 9), (5, 2), (136, 0), (136, 7)] {
            assert_eq!(run(&prog, DEV_CHAR, rw, major, minor), 1, "{major}:{minor}");
            assert_eq!(run(&prog, DEV_CHAR, ACC_MKNOD, major, minor), 1);
        }
        for (kind, major, minor) in [
            (DEV_CHAR, 1, 1),    // /dev/mem
            (DEV_CHAR, 1, 11),   // /dev/kmsg
            (DEV_CHAR, 10, 232), // /dev/kvm
            (DEV_CHAR, 10, 229), // /dev/fuse, not asked for
            (DEV_BLOCK, 1, 3),   // same numbers as /dev/null, but a block device
            (DEV_BLOCK, 8, 0),   // /dev/sda
            (DEV_BLOCK, 7, 0),   // /dev/loop0
        ] {
            assert_eq!(
                run(&prog, kind, ACC_READ, major, minor),
                0,
                "{major}:{minor}"
            );
            assert_eq!(run(&prog, kind, ACC_MKNOD, major, minor), 0);
        }
        let prog = compile(&policy_rules(true)).unwrap();
        assert_eq!(run(&prog, DEV_CHAR, ACC_READ | ACC_WRITE, 10, 229), 1);
    }

    #[test]
    fn later_rules_win_and_access_sets_are_respected() {
        let prog = compile(&[
            rule(true, "a", None, None, "rwm"),
            rule(false, "b", None, None, "rwm"),
            rule(false, "c", Some(1), Some(3), "w"),
        ])
        .unwrap();
        assert_eq!(run(&prog, DEV_CHAR, ACC_READ, 4, 1), 1);
        assert_eq!(run(&prog, DEV_BLOCK, ACC_READ, 8, 0), 0);
        assert_eq!(run(&prog, DEV_CHAR, ACC_READ, 1, 3), 1);
        assert_eq!(run(&prog, DEV_CHAR, ACC_WRITE, 1, 3), 0);
        let prog = compile(&[rule(true, "c", Some(1), None, "r")]).unwrap();
        assert_eq!(run(&prog, DEV_CHAR, ACC_READ, 1, 77), 1);
        assert_eq!(run(&prog, DEV_CHAR, ACC_READ | ACC_WRITE, 1, 77), 0);
        assert!(compile(&[rule(true, "x", None, None, "r")]).is_err());
        assert!(compile(&[rule(true, "c", None, None, "q")]).is_err());
    }

    fn cgroup2_mount() -> Option<std::path::PathBuf> {
        crate::cgroup::mountinfo()
            .into_iter()
            .find(|m| m.fstype == "cgroup2")
            .map(|m| std::path::PathBuf::from(m.mount_point))
    }

    /// The kernel enforces the compiled policy: a process in the filtered cgroup, even as VM
    /// root, opens /dev/null but not /dev/mem, and cannot mknod a block device.
    #[test]
    fn the_kernel_enforces_the_filter() {
        use nix::errno::Errno;
        use nix::fcntl::{open, OFlag};
        use nix::sys::stat::{mknod, Mode, SFlag};
        let root = nix::unistd::geteuid().is_root();
        let Some(mount) = cgroup2_mount().filter(|_| root) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs as root with cgroup2 mounted"
            );
            eprintln!("skipped: needs root and a cgroup2 mount");
            return;
        };
        let dir = mount.join(format!("eci-devfilter-test-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        attach(&dir, &policy_rules(false)).unwrap();
        // Device nodes made outside the filter, on devtmpfs (mounted without nodev).
        let tmp = tempfile::tempdir_in("/dev").unwrap();
        let path = |n: &str| std::ffi::CString::new(tmp.path().join(n).to_str().unwrap()).unwrap();
        let (null, mem, blk, chr) = (path("null"), path("mem"), path("blk"), path("chr"));
        let chr_600 = (SFlag::S_IFCHR, Mode::from_bits_truncate(0o600));
        for (p, dev) in [(&null, libc::makedev(1, 3)), (&mem, libc::makedev(1, 1))] {
            mknod(p.as_c_str(), chr_600.0, chr_600.1, dev).unwrap();
        }
        let procs = std::ffi::CString::new(dir.join("cgroup.procs").to_str().unwrap()).unwrap();
        // The test harness has threads: between fork and _exit the child only makes system
        // calls on the C strings prepared above (nix passes a CStr path without allocating).
        let pid = sys::fork().unwrap();
        if pid == 0 {
            let joined = open(procs.as_c_str(), OFlag::O_WRONLY, Mode::empty())
                .and_then(|fd| nix::unistd::write(&fd, b"0"));
            if joined != Ok(1) {
                sys::exit_now(100);
            }
            let mut code = 0;
            if open(null.as_c_str(), OFlag::O_RDWR, Mode::empty()).is_err() {
                code |= 1;
            }
            if open(mem.as_c_str(), OFlag::O_RDONLY, Mode::empty()).err() != Some(Errno::EPERM) {
                code |= 2;
            }
            let blk_600 = Mode::from_bits_truncate(0o600);
            if mknod(blk.as_c_str(), SFlag::S_IFBLK, blk_600, libc::makedev(7, 0)).err()
                != Some(Errno::EPERM)
            {
                code |= 4;
            }
            if mknod(chr.as_c_str(), chr_600.0, chr_600.1, libc::makedev(1, 5)).is_err() {
                code |= 8;
            }
            sys::exit_now(code);
        }
        let code = sys::waitpid(pid).unwrap();
        let _ = std::fs::remove_dir(&dir);
        assert_eq!(
            code, 0,
            "bits: 1 a 1:3 node refused, 2 a 1:1 node (/dev/mem) opened or not EPERM, \
             4 block mknod not refused with EPERM, 8 char 1:5 mknod refused, \
             100 could not join the cgroup"
        );
    }
}
