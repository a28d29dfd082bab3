//! For tests of the seccomp filter: kernel-global system calls made raw, with arguments that
//! make them fail harmlessly, so the errno tells whether the filter answered.

/// Calls from `eci_policy::KERNEL_GLOBAL_SYSCALLS` whose errno, for VM root without the filter, is
/// not EPERM (bad arguments, missing files), so an EPERM after loading the filter can only
/// come from the filter.
pub fn kernel_global_calls() -> Vec<(&'static str, i32)> {
    let missing = c"/nonexistent-eci-seccomp-probe/x";
    let module = c"eci_no_such_module";
    let errno = |rc: libc::c_long| {
        if rc < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        } else {
            0
        }
    };
    // SAFETY: each call gets invalid or harmless arguments and changes nothing: a missing
    // path, an unknown module, reboot with a wrong magic, kexec with unknown flags.
    unsafe {
        vec![
            (
                "swapon",
                errno(libc::syscall(libc::SYS_swapon, missing.as_ptr(), 0)),
            ),
            (
                "swapoff",
                errno(libc::syscall(libc::SYS_swapoff, missing.as_ptr())),
            ),
            (
                "acct",
                errno(libc::syscall(libc::SYS_acct, missing.as_ptr())),
            ),
            (
                "delete_module",
                errno(libc::syscall(
                    libc::SYS_delete_module,
                    module.as_ptr(),
                    libc::O_NONBLOCK,
                )),
            ),
            ("reboot", errno(libc::syscall(libc::SYS_reboot, 1, 2, 3, 0))),
            (
                "kexec_load",
                errno(libc::syscall(libc::SYS_kexec_load, 0, 0, 0, 0xdead_0000u32)),
            ),
        ]
    }
}
