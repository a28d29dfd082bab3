//! The engine endpoint of the WSL stand-in (`eci-build test|boot --target wsl2`, which boots the
//! WSL2 distribution under QEMU, builder/src/wsl_standin.rs). On WSL the host reaches eci-guard
//! over hv_sock, which QEMU cannot offer, and the WSL2 kernel carries no virtio-vsock transport:
//! built in beside hv_sock it would take the one guest-to-host slot on WSL (EBUSY). So the
//! stand-in runs this relay: a TCP listener on the VM's uplink address that accepts only the
//! address QEMU's port forward connects from, each connection relayed to eci-guard's user
//! socket `/run/docker.sock`, the socket WSL's sessions reach. Containers never get through:
//! their packets come from the bridge, not from QEMU's gateway, and a spoofed source never sees
//! the handshake's answer, which goes out the uplink.
//!
//! Not part of the distribution: it exists only in the stand-in's initramfs.

use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the wait for the engine's socket has been said once.
static SAID_WAITING: AtomicBool = AtomicBool::new(false);

/// Where to listen, whom to accept, where to relay to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: SocketAddr,
    pub peer: IpAddr,
    pub target: PathBuf,
}

/// `--listen ADDR:PORT --peer IP --to SOCKET`, all three required.
pub fn parse_args(args: &[String]) -> Result<Config, String> {
    let (mut listen, mut peer, mut target) = (None, None, None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => {
                listen = Some(
                    value
                        .parse::<SocketAddr>()
                        .map_err(|e| format!("--listen {value}: {e} (ADDR:PORT)"))?,
                )
            }
            "--peer" => {
                peer = Some(
                    value
                        .parse::<IpAddr>()
                        .map_err(|e| format!("--peer {value}: {e} (an IP address)"))?,
                )
            }
            "--to" => target = Some(PathBuf::from(value)),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(Config {
        listen: listen.ok_or("--listen ADDR:PORT is required")?,
        peer: peer.ok_or("--peer IP is required")?,
        target: target.ok_or("--to SOCKET is required")?,
    })
}

/// Accepts until the listener fails; one thread pair per connection.
pub fn serve(listener: TcpListener, peer: IpAddr, target: &Path) -> io::Result<()> {
    loop {
        let (client, from) = match listener.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
            Err(e) => return Err(e),
        };
        if from.ip() != peer {
            eprintln!("eci-standin-relay: refused a connection from {from} (only {peer})");
            continue;
        }
        let target = target.to_path_buf();
        std::thread::spawn(move || {
            match relay(client, &target) {
                // Until eci-init has started the guard: the host's readiness probes land here.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !SAID_WAITING.swap(true, Ordering::Relaxed) {
                        eprintln!(
                            "eci-standin-relay: {} does not exist yet; closing connections until it does",
                            target.display()
                        );
                    }
                }
                Err(e) => eprintln!("eci-standin-relay: {}: {e}", target.display()),
                Ok(()) => {}
            }
        });
    }
}

/// Copies both ways; each side's end of input becomes a half close on the other, so `docker
/// load` (closes its upload, then reads) and attach/exec streams work.
fn relay(client: TcpStream, target: &Path) -> io::Result<()> {
    let engine = UnixStream::connect(target)?;
    let (mut client_r, mut engine_w) = (client.try_clone()?, engine.try_clone()?);
    let up = std::thread::spawn(move || {
        let _ = io::copy(&mut client_r, &mut engine_w);
        let _ = engine_w.shutdown(Shutdown::Write);
    });
    let (mut engine_r, mut client_w) = (engine, client);
    let _ = io::copy(&mut engine_r, &mut client_w);
    let _ = client_w.shutdown(Shutdown::Write);
    let _ = up.join();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    #[test]
    fn arguments_are_all_required_and_checked() {
        let args = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
        let c = parse_args(&args(
            "--listen 10.0.2.15:2375 --peer 10.0.2.2 --to /run/docker.sock",
        ))
        .unwrap();
        assert_eq!(c.listen, "10.0.2.15:2375".parse().unwrap());
        assert_eq!(c.target, Path::new("/run/docker.sock"));
        assert!(
            parse_args(&args("--listen 10.0.2.15 --peer 10.0.2.2 --to x"))
                .unwrap_err()
                .contains("ADDR:PORT")
        );
        assert!(parse_args(&args("--listen 10.0.2.15:1 --to x"))
            .unwrap_err()
            .contains("--peer"));
    }

    /// An upload closed by the client still gets its answer, streamed back after the close.
    #[test]
    fn a_half_closed_upload_gets_its_answer_and_only_the_peer_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("engine.sock");
        let engine = UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || {
            for s in engine.incoming() {
                let mut s = s.unwrap();
                let mut got = Vec::new();
                s.read_to_end(&mut got).unwrap();
                s.write_all(format!("got {} bytes", got.len()).as_bytes())
                    .unwrap();
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let target = sock.clone();
        std::thread::spawn(move || serve(listener, "127.0.0.1".parse().unwrap(), &target));
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(&[7u8; 100_000]).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "got 100000 bytes");

        // Another peer is refused: the relay closes without reaching the engine.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || serve(listener, "10.0.2.2".parse().unwrap(), &sock));
        let mut c = TcpStream::connect(addr).unwrap();
        let _ = c.write_all(b"GET /_ping HTTP/1.0\r\n\r\n");
        let mut answer = Vec::new();
        let _ = c.read_to_end(&mut answer);
        assert!(answer.is_empty());
    }
}
