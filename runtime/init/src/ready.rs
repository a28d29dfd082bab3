//! Readiness checks: a unix socket that accepts, or one HTTP request over a unix socket (the
//! Docker API's `GET /_ping`, which answers `200 OK` once dockerd serves requests).

use crate::services::Readiness;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long one probe may block the init's loop.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The request eci-init sends. HTTP/1.0 so the server closes the connection after answering.
pub fn http_request(path: &str) -> String {
    format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nUser-Agent: eci-init\r\n\r\n")
}

/// The status code of an HTTP response's first line, if it is one.
pub fn http_status(response: &[u8]) -> Option<u16> {
    let line_end = response.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&response[..line_end]).ok()?.trim_end();
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Runs one readiness probe.
pub fn check(ready: &Readiness) -> bool {
    match ready {
        Readiness::None => true,
        Readiness::Path(p) => p.exists(),
        Readiness::UnixSocket(p) => UnixStream::connect(p).is_ok(),
        Readiness::HttpUnix { socket, path } => http_ok(socket, path),
    }
}

fn http_ok(socket: &Path, path: &str) -> bool {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(PROBE_TIMEOUT));
    let _ = s.set_write_timeout(Some(PROBE_TIMEOUT));
    if s.write_all(http_request(path).as_bytes()).is_err() {
        return false;
    }
    // The status line is all that matters; read until it is complete.
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < 4096 {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    http_status(&buf) == Some(200)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn status_lines() {
        assert_eq!(
            http_status(b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\n\r\nOK"),
            Some(200)
        );
        assert_eq!(
            http_status(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(http_status(b"HTTP/1.1 200"), None, "incomplete line");
        assert_eq!(http_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert!(http_request("/_ping").starts_with("GET /_ping HTTP/1.0\r\n"));
        assert!(http_request("/_ping").ends_with("\r\n\r\n"));
    }

    #[test]
    fn probes_against_real_sockets() {
        let tmp = tempfile::tempdir().unwrap();
        let sock = tmp.path().join("d.sock");
        let ping = Readiness::HttpUnix {
            socket: sock.clone(),
            path: "/_ping".into(),
        };
        assert!(!check(&ping), "nothing listens yet");
        assert!(!check(&Readiness::UnixSocket(sock.clone())));
        let listener = UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            let mut answers = vec![];
            for reply in [
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK",
                "HTTP/1.1 500 x\r\n\r\n",
            ] {
                let (mut c, _) = listener.accept().unwrap();
                let mut req = [0u8; 512];
                let n = c.read(&mut req).unwrap();
                answers.push(String::from_utf8_lossy(&req[..n]).into_owned());
                c.write_all(reply.as_bytes()).unwrap();
            }
            answers
        });
        assert!(check(&ping));
        assert!(!check(&ping), "a 500 is not ready");
        let seen = server.join().unwrap();
        assert!(seen[0].starts_with("GET /_ping HTTP/1.0"));
        assert!(check(&Readiness::Path(tmp.path().into())));
        assert!(check(&Readiness::None));
    }
}
