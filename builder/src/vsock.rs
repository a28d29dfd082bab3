//! The host side of the VM's vsock device (SPEC H2): which QEMU device carries it, and how a
//! host program opens a stream to a port in the guest.
//!
//! Two devices exist. With the kernel's vhost-vsock (`/dev/vhost-vsock`), QEMU's
//! `vhost-vsock-pci` puts the guest on the host's own AF_VSOCK: a host socket connects to
//! (guest CID, port). Without it, QEMU's `vhost-user-vsock-pci` hands the device to a
//! user-space backend, rust-vmm's `vhost-device-vsock`, which exposes the guest as one Unix
//! socket: a client connects, writes `CONNECT <port>\n`, and reads `OK <host port>\n` before
//! the stream is the guest's. vhost-user needs the guest's RAM shared with the backend, hence
//! the memfd memory backend in [`VsockDevice::qemu_args`].

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The kernel's vhost-vsock device node; its presence selects `vhost-vsock-pci`.
pub const VHOST_VSOCK_DEV: &str = "/dev/vhost-vsock";

/// The guard's vsock port in the VM (vm-config/templates/services.json.tera passes it as
/// `--listen-vsock`; a unit test keeps the two in step). Below 1024, so inside the VM only
/// root may bind it.
pub const ENGINE_PORT: u32 = 375;

/// The guard's side channel for half closes (runtime/guard/src/vsock.rs): the backend turns the
/// end of a host stream into a full shutdown, so through it the relay opens tagged streams on
/// [`TAGGED_PORT`] (`ECI-STREAM <token>\n` first) and says `SHUT <token> <bytes sent>` here
/// instead of closing, and the guest still answers.
pub const HALF_CLOSE_PORT: u32 = ENGINE_PORT + 1;
pub const TAGGED_PORT: u32 = ENGINE_PORT + 2;

/// How the VM's vsock device is provided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VsockDevice {
    /// `vhost-vsock-pci`: the host kernel's vhost-vsock; host programs reach the guest at `cid`.
    Kernel { cid: u32 },
    /// `vhost-user-vsock-pci` served by `vhost-device-vsock`: QEMU talks to it on `control`,
    /// host programs connect to `uds` and send `CONNECT <port>`.
    User { control: PathBuf, uds: PathBuf },
    /// Not vsock: a guest TCP port that QEMU's user network forwards from `127.0.0.1:host_port`
    /// (the WSL stand-in's relay, [`crate::wsl_standin`]: the WSL2 kernel has no virtio-vsock
    /// transport). Every guest port maps to that one.
    Forwarded { host_port: u16 },
}

impl VsockDevice {
    /// QEMU arguments for the device. `memory_mib` must equal `-m`: a vhost-user backend maps
    /// the guest's RAM, which therefore comes from a shared memfd.
    pub fn qemu_args(&self, memory_mib: u32) -> Vec<OsString> {
        match self {
            VsockDevice::Kernel { cid } => vec![
                "-device".into(),
                format!("vhost-vsock-pci,guest-cid={cid}").into(),
            ],
            VsockDevice::User { control, .. } => {
                let mut chardev = OsString::from("socket,id=eci-vsock,path=");
                chardev.push(control.to_string_lossy().replace(',', ",,"));
                vec![
                    "-object".into(),
                    format!("memory-backend-memfd,id=eci-mem,size={memory_mib}M,share=on").into(),
                    "-machine".into(),
                    "memory-backend=eci-mem".into(),
                    "-chardev".into(),
                    chardev,
                    "-device".into(),
                    "vhost-user-vsock-pci,chardev=eci-vsock".into(),
                ]
            }
            // The forward is added through QMP once QEMU runs (host_endpoint::start).
            VsockDevice::Forwarded { .. } => Vec::new(),
        }
    }

    /// A stream to `port` in the guest. `timeout` bounds the handshake, not the stream's life.
    pub fn connect(&self, port: u32, timeout: Duration) -> io::Result<Stream> {
        match self {
            VsockDevice::Kernel { cid } => connect_kernel(*cid, port).map(Stream::Kernel),
            VsockDevice::User { uds, .. } => connect_user(uds, port, timeout).map(Stream::User),
            VsockDevice::Forwarded { host_port } => {
                // One handshake at a time: QEMU's user network listens for a forward with a
                // backlog of one, and connections beyond it wait out SYN retransmits (1, 3,
                // 7 s...): a burst of 100 clients took over a minute that way.
                static CONNECTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
                let _one = CONNECTING.lock().unwrap_or_else(|e| e.into_inner());
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], *host_port));
                std::net::TcpStream::connect_timeout(&addr, timeout).map(Stream::Tcp)
            }
        }
    }
}

/// A connected stream to the guest, readable and writable from two threads (see
/// [`Stream::try_clone`]).
#[derive(Debug)]
pub enum Stream {
    Kernel(std::fs::File),
    User(UnixStream),
    Tcp(std::net::TcpStream),
}

impl Stream {
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Kernel(f) => Stream::Kernel(f.try_clone()?),
            Stream::User(s) => Stream::User(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }

    /// Tells the guest nothing more comes from this side (a half close; through the backend
    /// it ends both directions, see [`HALF_CLOSE_PORT`]).
    pub fn shutdown_write(&self) {
        match self {
            Stream::Kernel(f) => {
                use std::os::fd::AsRawFd;
                // SAFETY: plain call on a descriptor the File owns.
                unsafe { sys::shutdown(f.as_raw_fd(), sys::SHUT_WR) };
            }
            Stream::User(s) => {
                let _ = s.shutdown(std::net::Shutdown::Write);
            }
            Stream::Tcp(s) => {
                let _ = s.shutdown(std::net::Shutdown::Write);
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Kernel(f) => f.read(buf),
            Stream::User(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Kernel(f) => f.write(buf),
            Stream::User(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The backend's handshake: `CONNECT <port>\n`, answered `OK <host port>\n`. Anything else
/// (the backend closes the connection when nothing listens on the port) is an error.
fn connect_user(uds: &Path, port: u32, timeout: Duration) -> io::Result<UnixStream> {
    let mut s = UnixStream::connect(uds)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())?;
    // Byte by byte: whatever follows the newline is already the guest's data.
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 64 {
        match s.read(&mut byte)? {
            0 => break,
            _ if byte[0] == b'\n' => {
                s.set_read_timeout(None)?;
                return check_ok(&line, port).map(|()| s);
            }
            _ => line.push(byte[0]),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::ConnectionRefused,
        format!(
            "vsock port {port}: the vhost-device-vsock backend at {} closed the handshake ({:?}); nothing listens on the port in the guest yet",
            uds.display(),
            String::from_utf8_lossy(&line)
        ),
    ))
}

fn check_ok(line: &[u8], port: u32) -> io::Result<()> {
    let text = String::from_utf8_lossy(line);
    let ok = text
        .strip_prefix("OK ")
        .is_some_and(|p| p.trim().parse::<u32>().is_ok());
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("vsock port {port}: the backend answered {text:?} instead of `OK <port>`"),
        ))
    }
}

fn connect_kernel(cid: u32, port: u32) -> io::Result<std::fs::File> {
    // SAFETY: socket() takes no pointers; the result is checked and owned at once.
    let fd = unsafe { sys::socket(sys::AF_VSOCK, sys::SOCK_STREAM | sys::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is fresh and owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let addr = sys::SockaddrVm::new(cid, port);
    use std::os::fd::AsRawFd;
    // SAFETY: addr lives across the call and the length is its size.
    let r = unsafe { sys::connect(fd.as_raw_fd(), &addr, std::mem::size_of_val(&addr) as u32) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // read(2) and write(2) on a socket are what File does with its descriptor.
    Ok(std::fs::File::from(fd))
}

/// The few libc declarations AF_VSOCK needs, declared here instead of adding the libc crate
/// to eci-build for them (x86_64 Linux values, the only host eci builds on).
mod sys {
    pub const AF_VSOCK: i32 = 40;
    pub const SOCK_STREAM: i32 = 1;
    pub const SOCK_CLOEXEC: i32 = 0o2000000;
    pub const SHUT_WR: i32 = 1;

    /// `struct sockaddr_vm` from <linux/vm_sockets.h>.
    #[repr(C)]
    pub struct SockaddrVm {
        family: u16,
        reserved1: u16,
        port: u32,
        cid: u32,
        flags: u8,
        zero: [u8; 3],
    }

    impl SockaddrVm {
        pub fn new(cid: u32, port: u32) -> SockaddrVm {
            SockaddrVm {
                family: AF_VSOCK as u16,
                reserved1: 0,
                port,
                cid,
                flags: 0,
                zero: [0; 3],
            }
        }
    }

    extern "C" {
        pub fn socket(domain: i32, ty: i32, protocol: i32) -> i32;
        pub fn connect(fd: i32, addr: *const SockaddrVm, len: u32) -> i32;
        pub fn shutdown(fd: i32, how: i32) -> i32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn vhost_user_shares_guest_memory_with_the_backend() {
        let d = VsockDevice::User {
            control: "/run/x,y/vhost.sock".into(),
            uds: "/run/vm.vsock".into(),
        };
        let a: Vec<String> = d
            .qemu_args(2048)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = a.join(" ");
        assert!(
            joined.contains("memory-backend-memfd,id=eci-mem,size=2048M,share=on"),
            "{joined}"
        );
        assert!(
            joined.contains("-machine memory-backend=eci-mem"),
            "{joined}"
        );
        // QEMU's option syntax doubles a comma inside a value.
        assert!(joined.contains("path=/run/x,,y/vhost.sock"), "{joined}");
        assert!(joined.contains("vhost-user-vsock-pci,chardev=eci-vsock"));
        let k = VsockDevice::Kernel { cid: 7 }.qemu_args(2048);
        assert_eq!(k[1], OsString::from("vhost-vsock-pci,guest-cid=7"));
    }

    /// A stand-in backend: the handshake line is read exactly, and the bytes after the answer
    /// are the guest's.
    #[test]
    fn the_backend_handshake_is_connect_then_ok() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("vm.vsock");
        let listener = UnixListener::bind(&uds).unwrap();
        let backend = std::thread::spawn(move || {
            for answer in ["OK 1024\nPONG", "ERR\n", ""] {
                let (mut c, _) = listener.accept().unwrap();
                let mut got = [0u8; 12];
                c.read_exact(&mut got).unwrap();
                assert_eq!(&got, b"CONNECT 375\n");
                c.write_all(answer.as_bytes()).unwrap();
            }
        });
        let d = VsockDevice::User {
            control: dir.path().join("unused"),
            uds,
        };
        let mut s = d.connect(ENGINE_PORT, Duration::from_secs(5)).unwrap();
        let mut rest = [0u8; 4];
        s.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"PONG");
        let e = d.connect(ENGINE_PORT, Duration::from_secs(5)).unwrap_err();
        assert!(e.to_string().contains("\"ERR\""), "{e}");
        let e = d.connect(ENGINE_PORT, Duration::from_secs(5)).unwrap_err();
        assert!(e.to_string().contains("nothing listens"), "{e}");
        backend.join().unwrap();
    }
}
