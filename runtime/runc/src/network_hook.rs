//! dockerd's network hook, answered without re-executing dockerd (issue 13).
//!
//! dockerd puts one prestart hook into every container with a network namespace of its own:
//! `/proc/<dockerd's pid>/exe libnetwork-setkey -exec-root=DIR <container id> <controller id>`.
//! Re-executed, dockerd reads the container state on stdin and sends its daemon one message on
//! `DIR/libnetwork/<controller id>.sock`: `{"ContainerID":ID,"Key":"/proc/<pid>/ns/net"}`; the
//! daemon moves the container's interfaces into that namespace and answers `success` or its
//! error. The re-exec costs a Go start-up of dockerd's 100 MB binary (a second of every `docker
//! run` under TCG, runtime/README.md *Boot time*) to send forty bytes. The runtime sends the
//! same message itself when the hook has exactly that shape; any other hook, or one it does not
//! recognise in every detail, runs as a program as before. Nothing is gained by a caller: the
//! message is what the hook would send, and the socket is dockerd's, root's alone.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use eci_policy::spec::Hook;

/// The hook's name, its first argument.
const NAME: &str = "libnetwork-setkey";

/// What the hook asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetKey {
    pub socket: PathBuf,
    pub container_id: String,
}

/// `Some` when `h` is dockerd's network hook, in the shape dockerd writes it.
pub fn recognise(h: &Hook) -> Option<SetKey> {
    let pid = h.path.strip_prefix("/proc/")?.strip_suffix("/exe")?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let [name, root, id, ctrl] = h.args.as_slice() else {
        return None;
    };
    if name != NAME {
        return None;
    }
    let root = root
        .strip_prefix("--exec-root=")
        .or_else(|| root.strip_prefix("-exec-root="))?;
    let plain = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if !root.starts_with('/') || !plain(id) || !plain(ctrl) {
        return None;
    }
    Some(SetKey {
        socket: Path::new(root)
            .join("libnetwork")
            .join(format!("{ctrl}.sock")),
        container_id: id.clone(),
    })
}

/// Send the message the hook would, for the container whose state (JSON, as on the hook's
/// stdin) is `state`; `timeout` is the hook's.
pub fn send(k: &SetKey, state: &str, timeout: Option<u64>) -> Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_str(state).map_err(|e| format!("{NAME}: the state: {e}"))?;
    let pid = v["pid"]
        .as_i64()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{NAME}: the state has no pid"))?;
    let msg = serde_json::json!({
        "ContainerID": k.container_id,
        "Key": format!("/proc/{pid}/ns/net"),
    })
    .to_string();
    let fail =
        |what: &str, e: std::io::Error| format!("{NAME}: {what} {}: {e}", k.socket.display());
    let mut c = UnixStream::connect(&k.socket).map_err(|e| fail("connect to", e))?;
    // The hook's timeout (0 is no timeout: a zero socket timeout is refused by the kernel).
    let t = timeout.filter(|s| *s > 0).map(Duration::from_secs);
    c.set_read_timeout(t).map_err(|e| fail("time out", e))?;
    c.set_write_timeout(t).map_err(|e| fail("time out", e))?;
    // One write: the daemon reads the message with a single read.
    c.write_all(msg.as_bytes())
        .map_err(|e| fail("write to", e))?;
    let mut answer = Vec::new();
    c.take(1024)
        .read_to_end(&mut answer)
        .map_err(|e| fail("read from", e))?;
    match String::from_utf8_lossy(&answer).as_ref() {
        "success" => Ok(()),
        other => Err(format!("{NAME}: dockerd answered: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn hook(path: &str, args: &[&str]) -> Hook {
        Hook {
            path: path.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            timeout: None,
        }
    }

    #[test]
    fn only_dockerds_exact_shape_is_recognised() {
        let ok = hook(
            "/proc/812/exe",
            &[NAME, "-exec-root=/run/docker", "c0ffee", "0123456789ab"],
        );
        assert_eq!(
            recognise(&ok),
            Some(SetKey {
                socket: "/run/docker/libnetwork/0123456789ab.sock".into(),
                container_id: "c0ffee".into()
            })
        );
        let mut dashes = ok.clone();
        dashes.args[1] = "--exec-root=/var/run/docker".into();
        assert!(recognise(&dashes).is_some());
        for bad in [
            hook(
                "/usr/bin/dockerd",
                &ok.args.iter().map(String::as_str).collect::<Vec<_>>(),
            ),
            hook(
                "/proc/self/exe",
                &[NAME, "-exec-root=/run/docker", "c", "d"],
            ),
            hook(
                "/proc/812/exe",
                &["other", "-exec-root=/run/docker", "c", "d"],
            ),
            hook(
                "/proc/812/exe",
                &[NAME, "-exec-root", "/run/docker", "c", "d"],
            ),
            hook("/proc/812/exe", &[NAME, "-exec-root=run/docker", "c", "d"]),
            hook(
                "/proc/812/exe",
                &[NAME, "-exec-root=/run/docker", "../c", "d"],
            ),
            hook(
                "/proc/812/exe",
                &[NAME, "-exec-root=/run/docker", "c", "d/../../x"],
            ),
            hook("/proc/812/exe", &[NAME, "-exec-root=/run/docker", "c"]),
        ] {
            assert_eq!(recognise(&bad), None, "{bad:?}");
        }
    }

    /// A stand-in for dockerd's key socket: takes one message, answers `answer`.
    fn daemon(dir: &Path, answer: &'static str) -> std::thread::JoinHandle<String> {
        std::fs::create_dir_all(dir.join("libnetwork")).unwrap();
        let l = UnixListener::bind(dir.join("libnetwork/0123456789ab.sock")).unwrap();
        std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 1280];
            let n = c.read(&mut buf).unwrap();
            c.write_all(answer.as_bytes()).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        })
    }

    #[test]
    fn the_message_is_the_hooks_and_dockerds_error_is_the_hooks_error() {
        let d = tempfile::tempdir().unwrap();
        let root = format!("-exec-root={}", d.path().display());
        // A pid that cannot exist: had the hook been executed, it would fail.
        let h = hook(
            "/proc/4294967295/exe",
            &[NAME, &root, "c0ffee", "0123456789ab"],
        );
        let srv = daemon(d.path(), "success");
        let k = recognise(&h).unwrap();
        send(
            &k,
            r#"{"ociVersion":"1.0.2","id":"c0ffee","pid":4242}"#,
            Some(5),
        )
        .unwrap();
        let got: serde_json::Value = serde_json::from_str(&srv.join().unwrap()).unwrap();
        assert_eq!(
            got,
            serde_json::json!({"ContainerID": "c0ffee", "Key": "/proc/4242/ns/net"})
        );

        std::fs::remove_file(d.path().join("libnetwork/0123456789ab.sock")).unwrap();
        let srv = daemon(d.path(), "failed to set key: sandbox not found");
        let e = send(&k, r#"{"pid":4242}"#, Some(0)).unwrap_err();
        srv.join().unwrap();
        assert!(e.contains("sandbox not found"), "{e}");
        assert!(send(&k, r#"{"id":"x"}"#, None)
            .unwrap_err()
            .contains("no pid"));
    }
}
