//! Helpers for the mount-vetting suite (tests/vetting.rs, issue 10, SPEC M, H2): an eci engine
//! whose eci-runc talks to a supervisor of its own, and a static probe program for the calls
//! busybox cannot make (socket(AF_VSOCK), fsopen).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::runc_engine::RuncEngine;
use crate::workspace_root;

/// The eci-supervisor binary next to eci-runc, built when missing (cargo builds only the
/// binaries of the package under test).
pub fn supervisor_binary() -> Result<PathBuf> {
    let runc = crate::runc_engine::eci_runc_binary().context("eci-runc binary")?;
    let p = runc.with_file_name("eci-supervisor");
    if !p.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", "eci-supervisor"])
            .current_dir(workspace_root())
            .status()?
            .success();
        if !ok || !p.is_file() {
            bail!(
                "cargo build -p eci-supervisor did not produce {}",
                p.display()
            );
        }
    }
    Ok(p)
}

/// Point the engine's eci-runc at a supervisor socket inside the engine's folder, so this test
/// starts (and may kill) a supervisor of its own instead of the machine's shared one.
pub fn private_supervisor(e: &RuncEngine) -> Result<PathBuf> {
    e.local_only("a private supervisor");
    supervisor_binary()?;
    let wrapper = e.path().join("eci-runc");
    let text = std::fs::read_to_string(&wrapper)?;
    let sock = e.path().join("supervisor/supervisor.sock");
    let text = text.replacen(
        "\nexec ",
        &format!(
            "\nexport ECI_SUPERVISOR_SOCKET={}\nexport ECI_SUPERVISOR_VERBOSE=1\nexec ",
            sock.display()
        ),
        1,
    );
    std::fs::write(&wrapper, text)?;
    Ok(sock)
}

/// The supervisor that vets a test's containers: here a private one the engine's eci-runc
/// starts ([`private_supervisor`]), stopped when this is dropped (even on panic); against the
/// VM the VM's own (eci-init's service), which the test can neither see nor stop.
pub struct TestSupervisor {
    sock: Option<PathBuf>,
}

impl TestSupervisor {
    pub fn for_engine(e: &RuncEngine) -> Result<TestSupervisor> {
        let sock = if e.on_this_machine() {
            Some(private_supervisor(e)?)
        } else {
            None
        };
        Ok(TestSupervisor { sock })
    }

    /// Its log, for failure messages.
    pub fn log(&self) -> String {
        match &self.sock {
            Some(s) => supervisor_log(s),
            None => "(the VM's supervisor logs to the VM's console log)".into(),
        }
    }

    /// The private supervisor's socket; panics against the VM.
    pub fn sock(&self) -> &Path {
        self.sock
            .as_deref()
            .expect("the VM's supervisor is not the test's: guard with on_this_machine()")
    }
}

impl Drop for TestSupervisor {
    fn drop(&mut self) {
        if let Some(s) = &self.sock {
            stop_supervisor(s);
        }
    }
}

/// The log of the test's supervisor (every vetted call with its answer), for failure messages.
pub fn supervisor_log(sock: &Path) -> String {
    std::fs::read_to_string(sock.with_file_name("supervisor.log")).unwrap_or_default()
}

/// The pid of the supervisor serving `sock` (from its command line).
pub fn supervisor_pid(sock: &Path) -> Option<i32> {
    assert!(
        !crate::runc_engine::in_vm(),
        "the supervisor's process is the VM's: guard the check with on_this_machine()"
    );
    let want = sock.display().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|d| {
        let pid: i32 = d.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        (args.len() > 3
            && args[1] == b"serve"
            && args[3] == want.as_bytes()
            && args[0].ends_with(b"eci-supervisor"))
        .then_some(pid)
    })
}

/// Stop the test's own supervisor (and its helpers, which die with it).
pub fn stop_supervisor(sock: &Path) {
    if let Some(pid) = supervisor_pid(sock) {
        let _ = nix_kill(pid);
        for _ in 0..100 {
            if supervisor_pid(sock).is_none() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

fn nix_kill(pid: i32) -> std::io::Result<()> {
    // SAFETY: kill with a pid this test found for its own supervisor and a valid signal.
    if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

const PROBE_C: &str = r#"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "";
    long r = -1;
    if (!strcmp(what, "vsock")) r = socket(40 /* AF_VSOCK */, SOCK_STREAM, 0);
    else if (!strcmp(what, "fsopen")) r = syscall(SYS_fsopen, "tmpfs", 0);
    else if (!strcmp(what, "open_tree")) r = syscall(SYS_open_tree, -100, "/", 1);
    else { fprintf(stderr, "usage: probe vsock|fsopen|open_tree\n"); return 2; }
    if (r < 0) printf("%s errno %d\n", what, errno); else printf("%s ok\n", what);
    return 0;
}
"#;

/// Compile the probe (static, so it runs in the busybox image) into the engine's share folder,
/// which containers may bind; returns its path there.
pub fn probe(e: &RuncEngine) -> Result<PathBuf> {
    let dir = e.share.join("probe");
    std::fs::create_dir_all(&dir)?;
    crate::escapes::build_static_c(&dir, "probe", PROBE_C).map_err(anyhow::Error::msg)
}

/// `signaled-mounts DIR N`: N times mounts a tmpfs on DIR and unmounts it while a second thread
/// keeps interrupting the first with a signal whose handler does nothing (`SA_RESTART`), as Go's
/// runtime does with SIGURG to runc's and dockerd's threads. Each call must be made exactly
/// once: after the mount DIR is a mount point, after the umount it is not (a mount made twice
/// stays stacked; an umount made twice fails with EINVAL). Prints `signaled-mounts:
/// iterations=N signals=S anomalies=A` and the first anomaly; exits 1 when there was one.
const SIGNALED_MOUNTS_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static volatile int done;
static pid_t target;
static volatile long sent;
static int anomalies;
static char first[256];

static void on_signal(int s) { (void)s; }

static void *storm(void *arg) {
    unsigned seed = 7;
    (void)arg;
    while (!done) {
        syscall(SYS_tgkill, getpid(), target, SIGUSR1);
        sent++;
        /* Up to 1 ms apart: often enough to land while the supervisor acts, rarely enough
           that a call is received at all under an emulated CPU. */
        struct timespec ts = {0, (long)(rand_r(&seed) % 1000) * 1000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static int mounted(const char *dir) {
    char up[4096];
    struct stat a, b;
    snprintf(up, sizeof up, "%s/..", dir);
    if (stat(dir, &a) || stat(up, &b)) return -1;
    return a.st_dev != b.st_dev;
}

static void anomaly(int i, const char *what) {
    if (!anomalies++)
        snprintf(first, sizeof first, "iteration %d: %s", i, what);
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: signaled-mounts DIR N\n"); return 2; }
    const char *dir = argv[1];
    int n = atoi(argv[2]);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    target = (pid_t)syscall(SYS_gettid);
    pthread_t t;
    pthread_create(&t, NULL, storm, NULL);
    /* At least N iterations, and on until the storm has sent N signals too: on a quiet
       machine N pairs take a few dozen milliseconds, too few signals to prove anything.
       Bounded, should the storm thread never run. */
    int i;
    for (i = 0; i < n || (sent < n && i < 100 * n); i++) {
        char why[128];
        if (mount("t", dir, "tmpfs", 0, "size=64k")) {
            snprintf(why, sizeof why, "mount: %s", strerror(errno));
            anomaly(i, why);
        } else if (mounted(dir) != 1) {
            anomaly(i, "not a mount point after the mount");
        }
        if (umount2(dir, 0)) {
            snprintf(why, sizeof why, "umount: %s", strerror(errno));
            anomaly(i, why);
        }
        int left = 0;
        while (mounted(dir) == 1 && left < 100 && !umount2(dir, MNT_DETACH)) left++;
        if (left) {
            snprintf(why, sizeof why, "%d more mounts left after the umount", left);
            anomaly(i, why);
        }
    }
    done = 1;
    pthread_join(t, NULL);
    printf("signaled-mounts: iterations=%d signals=%ld anomalies=%d\n", i, sent, anomalies);
    if (anomalies) printf("signaled-mounts: first: %s\n", first);
    return anomalies ? 1 : 0;
}
"#;

/// Compile [`SIGNALED_MOUNTS_C`] into the engine's share folder as `signaled/signaled-mounts`.
pub fn signaled_mounts(e: &RuncEngine) -> Result<PathBuf> {
    let dir = e.share.join("signaled");
    std::fs::create_dir_all(&dir)?;
    crate::escapes::build_static_c(&dir, "signaled-mounts", SIGNALED_MOUNTS_C)
        .map_err(anyhow::Error::msg)
}
