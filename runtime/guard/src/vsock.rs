//! The host's engine endpoint (SPEC H2): an AF_VSOCK listener in the VM that only the host may
//! use. hv_sock under Hyper-V and virtio-vsock under QEMU both deliver the host's connections
//! with source CID 2 (`VMADDR_CID_HOST`); anything else (the VM itself over the loopback
//! transport, CID 1, or a sibling VM some transport lets through) is refused before a byte of
//! HTTP is read, and the refusal is audited. Requests that pass are served exactly like those
//! on the user socket: the same policy, the same role.
//!
//! Half closes. Through the kernel's vhost-vsock a host client's `shutdown(SHUT_WR)` reaches the
//! guest as such, but QEMU's user-space backend (vhost-device-vsock) turns the end of its Unix
//! stream into a full shutdown, after which the guest can no longer answer: `docker run -i` with
//! piped input would lose its output (the docker CLI half-closes every attach, even without
//! `-i`). So through the backend the host's relay uses [`tagged_port`]: each stream starts with
//! `ECI-STREAM <token>\n`, and the relay says the end of its input on the side channel,
//! [`half_close_port`]: `SHUT <token> <bytes sent>`. The tagged stream reads as ended once it has
//! delivered exactly that many bytes (never cutting data short). Both ports take the host only.
//!
//! Write size. One `write` becomes vsock packets of at most its own length. Linux 6.17, and
//! 6.12.y from its backports, builds a packet above ~32 KiB (`SKB_WITH_OVERHEAD(PAGE_SIZE <<
//! PAGE_ALLOC_COSTLY_ORDER)`, header included) as a nonlinear skb, which virtio-vsock sends in
//! more than one data descriptor; vhost-device-vsock 0.3.0 (through the virtio-vsock crate,
//! 0.12 too) reads a packet's data from one descriptor only and drops the packet
//! (`DescriptorLengthTooSmall` in its log): the bytes are lost and the host's stream stalls
//! once the guest's send credit is gone (`docker save` stopped at 64 KiB). So every write is cut
//! to [`MAX_WRITE`], which stays linear on any kernel; the cost is one packet per 16 KiB.
//!
//! tokio has no vsock type, so the socket is made with libc and driven by [`AsyncFd`]; the
//! guard already links libc, and the crates that wrap vsock would add a second socket layer
//! for four system calls.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{ready, Context, Poll, Waker};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `VMADDR_CID_HOST`: the source CID of every connection the host makes into the VM.
pub const HOST_CID: u32 = 2;
/// `VMADDR_CID_LOCAL`: the VM talking to itself through the loopback transport.
pub const LOCAL_CID: u32 = 1;
/// The most one `write` on a vsock stream hands the kernel (see the module's notes on write
/// size): below the guest kernel's nonlinear-skb threshold with room for the packet header.
pub const MAX_WRITE: usize = 16 * 1024;

/// Whether a connection from `cid` may reach the engine: the host, and nothing else.
pub fn peer_allowed(cid: u32) -> bool {
    cid == HOST_CID
}

/// Why a peer was turned away, for the audit log and the console.
pub fn refusal(cid: u32, port: u32) -> String {
    let who = match cid {
        LOCAL_CID => "the VM itself (loopback)".to_string(),
        0 => "the hypervisor".to_string(),
        c => format!("CID {c}"),
    };
    format!(
        "vsock port {port}: connection from {who} refused; only the host (CID {HOST_CID}) reaches the engine over vsock (SPEC H2)"
    )
}

/// The side channel of the engine port `port`: the next port.
pub fn half_close_port(port: u32) -> u32 {
    port + 1
}

/// The engine port for tagged streams: the one after the side channel.
pub fn tagged_port(port: u32) -> u32 {
    port + 2
}

/// A listening AF_VSOCK socket on every local CID.
pub struct VsockListener {
    fd: AsyncFd<OwnedFd>,
    port: u32,
}

/// One accepted connection.
pub struct VsockStream {
    fd: AsyncFd<OwnedFd>,
    read: u64,
    end: Arc<End>,
}

/// Where a host stream ends, when the host said so on the side channel.
#[derive(Default)]
struct End {
    /// Bytes after which the stream reads as ended; `u64::MAX` until told.
    at: AtomicU64,
    waker: Mutex<Option<Waker>>,
}

/// The open tagged streams by token, for the side channel to find.
#[derive(Clone, Default)]
pub struct HalfCloses(Arc<Mutex<HashMap<u64, Weak<End>>>>);

impl HalfCloses {
    fn register(&self, token: u64) -> Arc<End> {
        let end = Arc::new(End {
            at: AtomicU64::new(u64::MAX),
            waker: Mutex::new(None),
        });
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, e| e.strong_count() > 0);
        map.insert(token, Arc::downgrade(&end));
        end
    }

    /// `SHUT <token> <bytes>`: that stream ends after `bytes`. False when no open stream has
    /// that token.
    pub fn shut(&self, token: u64, bytes: u64) -> bool {
        let end = {
            let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            map.get(&token).and_then(Weak::upgrade)
        };
        let Some(end) = end else { return false };
        end.at.store(bytes, Ordering::SeqCst);
        if let Some(w) = end.waker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            w.wake();
        }
        true
    }
}

/// Parses one side-channel line, `SHUT <token> <bytes>`.
pub fn parse_shut(line: &str) -> Option<(u64, u64)> {
    let mut f = line.trim_end().split(' ');
    match (f.next(), f.next(), f.next(), f.next()) {
        (Some("SHUT"), Some(token), Some(bytes), None) => {
            Some((token.parse().ok()?, bytes.parse().ok()?))
        }
        _ => None,
    }
}

/// Reads a tagged stream's first line, `ECI-STREAM <token>`, byte by byte (what follows is
/// HTTP), and lets the side channel end the stream by that token.
pub async fn read_tag(
    mut stream: VsockStream,
    half_closes: &HalfCloses,
) -> io::Result<VsockStream> {
    use tokio::io::AsyncReadExt;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 64 {
        if stream.read(&mut byte).await? == 0 {
            break;
        }
        if byte[0] == b'\n' {
            let text = String::from_utf8_lossy(&line);
            let token = text
                .strip_prefix("ECI-STREAM ")
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bad stream tag {text:?}"),
                    )
                })?;
            stream.end = half_closes.register(token);
            return Ok(stream);
        }
        line.push(byte[0]);
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "a tagged stream must start with `ECI-STREAM <token>`",
    ))
}

/// Serves the side channel on `listener` for the streams of `half_closes`, host peers only.
pub async fn serve_half_closes(listener: VsockListener, half_closes: HalfCloses) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    loop {
        let Ok((stream, cid)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        if !peer_allowed(cid) {
            continue;
        }
        let half_closes = half_closes.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            let read = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                reader.read_line(&mut line),
            )
            .await;
            let answer: &[u8] = match (read, parse_shut(&line)) {
                (Ok(Ok(_)), Some((port, bytes))) if half_closes.shut(port, bytes) => b"OK\n",
                _ => b"ERR\n",
            };
            let _ = reader.get_mut().write_all(answer).await;
        });
    }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn sockaddr(cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: sockaddr_vm is plain old data; all-zero is a valid value (and zeroes the
    // reserved and flag bytes the kernel checks).
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    addr
}

fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the OwnedFd is moved into the AsyncFd, which closes it only after deregistering;
    // nothing else holds or replaces the descriptor meanwhile.
    Ok(unsafe { AsyncFd::register(fd) }?)
}

impl VsockListener {
    /// Binds `port` on any CID. Ports below 1024 need CAP_NET_BIND_SERVICE in the VM, so no
    /// unprivileged process can hold the engine's port before the guard does.
    pub fn bind(port: u32) -> io::Result<VsockListener> {
        // SAFETY: socket() takes no pointers; the result is checked and owned at once.
        let fd = cvt(unsafe {
            libc::socket(
                libc::AF_VSOCK,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        })?;
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let addr = sockaddr(libc::VMADDR_CID_ANY, port);
        // SAFETY: addr lives across the call and the length is its size.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_vm as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
            )
        })?;
        // SAFETY: plain call on a descriptor we own.
        cvt(unsafe { libc::listen(fd.as_raw_fd(), 128) })?;
        Ok(VsockListener {
            fd: register(fd)?,
            port,
        })
    }

    pub fn port(&self) -> u32 {
        self.port
    }

    /// The next connection and its peer's CID.
    pub async fn accept(&self) -> io::Result<(VsockStream, u32)> {
        loop {
            let mut guard = self.fd.readable().await?;
            let r = guard.try_io(|fd| {
                let mut addr = sockaddr(0, 0);
                let mut len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
                // SAFETY: addr and len are valid for writes of the sizes given.
                let c = cvt(unsafe {
                    libc::accept4(
                        fd.as_raw_fd(),
                        &mut addr as *mut libc::sockaddr_vm as *mut libc::sockaddr,
                        &mut len,
                        libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    )
                })?;
                // SAFETY: accept4 returned a fresh descriptor.
                Ok((unsafe { OwnedFd::from_raw_fd(c) }, addr.svm_cid))
            });
            match r {
                Ok(Ok((fd, cid))) => {
                    let stream = VsockStream {
                        fd: register(fd)?,
                        read: 0,
                        end: Arc::new(End {
                            at: AtomicU64::new(u64::MAX),
                            waker: Mutex::new(None),
                        }),
                    };
                    return Ok((stream, cid));
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncRead for VsockStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            // The waker first, then the check: a SHUT between the two still wakes this read.
            *this.end.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
            let left = this.end.at.load(Ordering::SeqCst).saturating_sub(this.read);
            if left == 0 {
                return Poll::Ready(Ok(()));
            }
            let mut guard = ready!(this.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let cap = unfilled
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            let unfilled = &mut unfilled[..cap];
            match guard.try_io(|fd| {
                // SAFETY: unfilled is valid for writes of its length.
                let n = unsafe {
                    libc::read(
                        fd.as_raw_fd(),
                        unfilled.as_mut_ptr() as *mut libc::c_void,
                        unfilled.len(),
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    this.read += n as u64;
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for VsockStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let data = &data[..data.len().min(MAX_WRITE)];
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|fd| {
                // SAFETY: data is valid for reads of its length.
                let n = unsafe {
                    libc::write(
                        fd.as_raw_fd(),
                        data.as_ptr() as *const libc::c_void,
                        data.len(),
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // SAFETY: plain call on a descriptor we own.
        let r = unsafe { libc::shutdown(self.fd.get_ref().as_raw_fd(), libc::SHUT_WR) };
        Poll::Ready(cvt(r).map(|_| ()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_host_cid_is_let_in() {
        assert!(peer_allowed(HOST_CID));
        // The VM itself over the loopback transport, the hypervisor, the VM's own or another
        // guest's CID, and VMADDR_CID_ANY are all someone other than the host.
        for cid in [LOCAL_CID, 0, 3, 4, 1000, u32::MAX] {
            assert!(!peer_allowed(cid), "CID {cid} must be refused");
        }
    }

    #[test]
    fn side_channel_lines_end_the_named_stream_only() {
        assert_eq!(parse_shut("SHUT 1024 23\n"), Some((1024, 23)));
        for bad in [
            "SHUT 1024\n",
            "SHUT x 1\n",
            "shut 1 2\n",
            "SHUT 1 2 3\n",
            "",
        ] {
            assert_eq!(parse_shut(bad), None, "{bad:?}");
        }
        let h = HalfCloses::default();
        let a = h.register(1024);
        let b = h.register(1025);
        assert!(h.shut(1024, 23));
        assert_eq!(a.at.load(Ordering::SeqCst), 23);
        assert_eq!(
            b.at.load(Ordering::SeqCst),
            u64::MAX,
            "another stream is untouched"
        );
        drop(b);
        assert!(!h.shut(1025, 0), "a closed stream is gone");
        assert!(!h.shut(7, 0), "an unknown port is refused");
    }

    #[test]
    fn refusals_name_the_peer_and_the_rule() {
        let m = refusal(LOCAL_CID, 375);
        assert!(
            m.contains("the VM itself") && m.contains("port 375") && m.contains("H2"),
            "{m}"
        );
        assert!(refusal(7, 375).contains("CID 7"));
    }

    /// Needs the vsock loopback transport (vsock_loopback) on the machine running the test;
    /// where it is missing there is nothing to connect through, and the test says so.
    #[tokio::test]
    async fn a_loopback_peer_is_seen_with_cid_1() {
        if !std::path::Path::new("/sys/module/vsock_loopback").exists() {
            eprintln!("skipped: the vsock loopback transport (vsock_loopback) is not loaded here");
            return;
        }
        let port = 40000 + (std::process::id() % 20000);
        let listener = match VsockListener::bind(port) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("skipped: no AF_VSOCK here ({e})");
                return;
            }
        };
        let client = std::thread::spawn(move || -> io::Result<()> {
            // SAFETY: socket() takes no pointers; the result is checked and owned at once.
            let fd = cvt(unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0) })?;
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let addr = sockaddr(LOCAL_CID, port);
            // SAFETY: addr lives across the call.
            cvt(unsafe {
                libc::connect(
                    fd.as_raw_fd(),
                    &addr as *const libc::sockaddr_vm as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
                )
            })?;
            Ok(())
        });
        let accepted =
            tokio::time::timeout(std::time::Duration::from_secs(5), listener.accept()).await;
        match client.join().unwrap() {
            Err(e) => eprintln!("skipped: no vsock loopback transport here ({e})"),
            Ok(()) => {
                let (_, cid) = accepted.expect("accepted in time").unwrap();
                assert_eq!(cid, LOCAL_CID);
                assert!(!peer_allowed(cid));
            }
        }
    }
}
