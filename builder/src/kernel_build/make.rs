//! Running `make` on the host: a cleared environment and a log file, a folder only one build
//! uses at a time, and the host's build dependencies and toolchain.

use super::{io_err, KernelBuildError, ARCH, HOST_PACKAGES};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs make on a tree with a cleared environment and a log file.
pub(super) struct Make<'a> {
    pub(super) tree: &'a Path,
    pub(super) obj: &'a Path,
    pub(super) log: PathBuf,
    pub(super) echo: bool,
    pub(super) env: Vec<(String, String)>,
}

impl Make<'_> {
    pub(super) fn run(&self, args: &[&str]) -> Result<String, KernelBuildError> {
        let mut cmd = Command::new("make");
        cmd.env_clear();
        for key in ["PATH", "HOME", "TMPDIR"] {
            if let Some(v) = std::env::var_os(key) {
                cmd.env(key, v);
            }
        }
        cmd.env("LC_ALL", "C").env("TZ", "UTC");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.arg("-C")
            .arg(self.tree)
            .arg(format!("O={}", self.obj.display()))
            .arg(format!("ARCH={ARCH}"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let shown = format!("make ARCH={ARCH} {}", args.join(" "));
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(io_err(&self.log))?;
        writeln!(log, "$ {shown}").map_err(io_err(&self.log))?;
        let mut child = cmd.spawn().map_err(|source| KernelBuildError::Spawn {
            program: "make".into(),
            source,
        })?;
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let mut readers = Vec::new();
        for stream in [
            Box::new(child.stdout.take().expect("piped")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("piped")),
        ] {
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
                    if tx
                        .send(String::from_utf8_lossy(&line).into_owned())
                        .is_err()
                    {
                        return;
                    }
                }
            }));
        }
        drop(tx);
        let mut output = String::new();
        for line in rx {
            if self.echo {
                eprintln!("{line}");
            }
            writeln!(log, "{line}").map_err(io_err(&self.log))?;
            output.push_str(&line);
            output.push('\n');
        }
        for r in readers {
            let _ = r.join();
        }
        let status = child.wait().map_err(|source| KernelBuildError::Spawn {
            program: "make".into(),
            source,
        })?;
        if !status.success() {
            let lines: Vec<&str> = output.lines().collect();
            return Err(KernelBuildError::Make {
                command: shown,
                status: status.to_string(),
                log: self.log.clone(),
                tail: lines[lines.len().saturating_sub(40)..].join("\n"),
            });
        }
        Ok(output)
    }
}

/// A directory only one build may use at a time; the marker holds the owner's pid.
pub(super) struct DirLock {
    marker: PathBuf,
}

impl DirLock {
    /// Waits while another live process holds the folder (like cargo's "blocking waiting for
    /// file lock"): two image builds of one target share the cached kernel, and the second
    /// one should get it, not an error. A dead owner's marker is taken over.
    pub(super) fn acquire(dir: &Path) -> Result<DirLock, KernelBuildError> {
        let marker = dir.with_extension("lock");
        if let Some(parent) = marker.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let mut told = false;
        let mut takeovers = 0;
        loop {
            match std::fs::create_dir(&marker) {
                Ok(()) => {
                    let pid = marker.join("pid");
                    std::fs::write(&pid, std::process::id().to_string()).map_err(io_err(&pid))?;
                    return Ok(DirLock { marker });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let pid = std::fs::read_to_string(marker.join("pid")).unwrap_or_default();
                    let pid = pid.trim().to_string();
                    let alive = !pid.is_empty() && Path::new("/proc").join(&pid).exists();
                    if alive {
                        if !told {
                            eprintln!(
                                "waiting for kernel build pid {pid}, which is using {}",
                                dir.display()
                            );
                            told = true;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(500));
                        continue;
                    }
                    // The owner died without cleaning up (or is between mkdir and writing its
                    // pid: give it a moment before taking over).
                    takeovers += 1;
                    if takeovers > 3 {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    let pid_now = std::fs::read_to_string(marker.join("pid")).unwrap_or_default();
                    if pid_now.trim().is_empty() || pid_now.trim() == pid {
                        let _ = std::fs::remove_dir_all(&marker);
                    }
                }
                Err(e) => return Err(io_err(&marker)(e)),
            }
        }
        Err(KernelBuildError::Busy {
            pid: "unknown".into(),
            dir: dir.to_path_buf(),
            lock: marker,
        })
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.marker);
    }
}

// ---------------------------------------------------------------------------------------------
// Host checks

/// Packages of [`HOST_PACKAGES`] dpkg does not list as installed. Without dpkg (not a Debian
/// machine) nothing can be said, and make reports what it lacks.
pub fn missing_host_packages() -> Vec<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${db:Status-Status}\n"])
        .args(HOST_PACKAGES)
        .env("LC_ALL", "C")
        .stderr(Stdio::null())
        .output();
    let Ok(out) = out else { return Vec::new() };
    let text = String::from_utf8_lossy(&out.stdout);
    let installed: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, s)| s.trim() == "installed")
        .map(|(p, _)| p.split(':').next().unwrap_or(p))
        .collect();
    HOST_PACKAGES
        .iter()
        .filter(|p| !installed.contains(*p))
        .map(|p| p.to_string())
        .collect()
}

/// First lines of `gcc --version`, `ld --version` and `make --version`: part of the cache key.
pub fn toolchain() -> Result<String, KernelBuildError> {
    let mut parts = Vec::new();
    for (program, arg) in [
        ("gcc", "--version"),
        ("ld", "--version"),
        ("make", "--version"),
    ] {
        let out = Command::new(program)
            .arg(arg)
            .env("LC_ALL", "C")
            .output()
            .map_err(|source| KernelBuildError::Spawn {
                program: program.into(),
                source,
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        parts.push(text.lines().next().unwrap_or("").trim().to_string());
    }
    Ok(parts.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_object_folder_is_waited_for_and_a_dead_owners_lock_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let obj = dir.path().join("obj");
        // A lock left by a process that no longer exists.
        std::fs::create_dir_all(obj.with_extension("lock")).unwrap();
        std::fs::write(obj.with_extension("lock").join("pid"), "999999999").unwrap();
        let held = DirLock::acquire(&obj).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let obj2 = obj.clone();
        let waiter = std::thread::spawn(move || {
            let lock = DirLock::acquire(&obj2).unwrap();
            tx.send(()).unwrap();
            drop(lock);
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(700))
                .is_err(),
            "a second build must wait while the first holds the folder"
        );
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("the waiting build gets the folder once it is free");
        waiter.join().unwrap();
        assert!(!obj.with_extension("lock").exists());
    }
}
