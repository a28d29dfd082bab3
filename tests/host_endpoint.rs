//! The VM met from its host: the qemu image boots under QEMU with a vsock device, and the
//! docker CLI on this machine drives its engine through `eci-build boot`'s relayed socket.
//!
//! Proves SPEC H2 (the engine is reached from the host over vsock; what answers is eci-guard,
//! the only listener on the VM's vsock port, with eci as the default runtime), H4 (an image moves
//! in with `docker load` through that endpoint, without a registry, and runs; attach with stdin,
//! `logs -f`, `exec` and `cp` stream through the relay, downloads of megabytes arrive whole), A1/U1 seen from the host (container
//! root is an unprivileged range in the VM) and H1 (the uplink gets its DHCP lease after the
//! engine, its name servers reach containers' resolv.conf, a container's published port
//! answers through it, and a connection to the VM itself is dropped). The refusal of a peer
//! that is not the host is the guard's unit test (runtime/guard/src/vsock.rs).

use eci_e2e::build_image_or_skip;
use eci_e2e::host_vm::{busybox_image_tar, host_endpoint_prerequisites, HostVm};
use std::path::Path;
use std::time::Duration;

const TARGET: &str = "qemu";

#[test]
fn the_host_drives_the_vm_engine_over_vsock() {
    if host_endpoint_prerequisites().is_none() {
        return;
    }
    if !eci_e2e::prerequisite(
        Path::new("/bin/busybox").is_file(),
        "a static busybox for the test image (apt-get install busybox-static)",
    ) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    if build_image_or_skip(TARGET, &out).is_none() {
        return;
    }
    let mut vm = HostVm::boot(&out, TARGET, Duration::from_secs(600));
    eprintln!(
        "engine answered over vsock {:.1} s after QEMU started",
        vm.engine_ready_seconds
    );

    // H2: the server that answers is the VM's engine, through the guard.
    let (version, _) = vm.docker_ok(&["version", "--format", "{{.Server.Version}} {{.Server.Os}}"]);
    assert!(version.trim().ends_with(" linux"), "{version}");
    let mut times = Vec::new();
    for _ in 0..5 {
        times.push(vm.docker_ok(&["version"]).1);
    }
    times.sort_by(f64::total_cmp);
    eprintln!(
        "docker version through the relay: median {:.3} s, min {:.3} s, max {:.3} s",
        times[2], times[0], times[4]
    );
    let (info, _) = vm.docker_ok(&["info", "--format", "{{.DefaultRuntime}}"]);
    assert_eq!(
        info.trim(),
        "eci",
        "the engine behind the endpoint isolates"
    );

    // H4: docker load of an archive made here, then run.
    let tarball = busybox_image_tar(
        Path::new("/bin/busybox"),
        "eci-host-endpoint:busybox",
        work.path(),
    );
    let (loaded, load_secs) = vm.docker_ok(&["load", "--input", tarball.to_str().unwrap()]);
    assert!(
        loaded.contains("Loaded image: eci-host-endpoint:busybox"),
        "{loaded}"
    );
    eprintln!(
        "docker load of {} bytes: {load_secs:.2} s",
        std::fs::metadata(&tarball).unwrap().len()
    );
    let (hello, run_secs) = vm.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "eci-host-endpoint:busybox",
        "/bin/busybox",
        "echo",
        "hello from the VM",
    ]);
    assert_eq!(hello.trim(), "hello from the VM");
    eprintln!("docker run --rm: {run_secs:.2} s");

    // Attach with stdin: the CLI's half close (end of input) crosses the relay and the vsock
    // device, and the answer still comes back.
    let mut cat = std::process::Command::new("docker")
        .args([
            "run",
            "--rm",
            "-i",
            "--network",
            "none",
            "eci-host-endpoint:busybox",
        ])
        .args(["/bin/busybox", "tr", "a-z", "A-Z"])
        .env("DOCKER_HOST", vm.docker_host())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = cat.stdin.take().unwrap();
        stdin.write_all(b"through the relay\n").unwrap();
    }
    let cat = cat.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&cat.stdout),
        "THROUGH THE RELAY\n",
        "stderr: {}",
        String::from_utf8_lossy(&cat.stderr)
    );

    // A1, U1 through the host endpoint: container root is an unprivileged range in the VM.
    let (map, _) = vm.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "eci-host-endpoint:busybox",
        "/bin/busybox",
        "cat",
        "/proc/self/uid_map",
    ]);
    let fields: Vec<u64> = map.split_whitespace().map(|f| f.parse().unwrap()).collect();
    assert!(
        fields.len() == 3 && fields[0] == 0 && fields[1] >= 100_000 && fields[2] == 65_536,
        "uid_map {map:?}"
    );

    // H4's streams: logs -f, exec and cp through the relay.
    vm.docker_ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "eci-h4",
        "eci-host-endpoint:busybox",
        "/bin/busybox",
        "sh",
        "-c",
        "echo first; /bin/busybox sleep 1; echo second; exec /bin/busybox sleep 600",
    ]);
    let follow = std::process::Command::new("timeout")
        .args(["10", "docker", "logs", "-f", "eci-h4"])
        .env("DOCKER_HOST", vm.docker_host())
        .output()
        .unwrap();
    let logs = String::from_utf8_lossy(&follow.stdout);
    assert!(logs.contains("first") && logs.contains("second"), "{logs}");
    let (id, _) = vm.docker_ok(&["exec", "eci-h4", "/bin/busybox", "id", "-u"]);
    assert_eq!(id.trim(), "0");
    let note = work.path().join("note.txt");
    std::fs::write(&note, "from the host\n").unwrap();
    vm.docker_ok(&["cp", note.to_str().unwrap(), "eci-h4:/note.txt"]);
    let (cat, _) = vm.docker_ok(&["exec", "eci-h4", "/bin/busybox", "cat", "/note.txt"]);
    assert_eq!(cat, "from the host\n");
    let back = work.path().join("back.txt");
    vm.docker_ok(&["cp", "eci-h4:/note.txt", back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "from the host\n");
    // Downloads cross in full: 4 MiB of random bytes go in with `docker cp` and come back out,
    // and `docker save` streams the loaded image back as the archive it was loaded from. The
    // guest's vsock packets above ~32 KiB were dropped by vhost-device-vsock (the stream lost
    // them and stalled at 64 KiB) until eci-guard cut its writes (runtime/guard/src/vsock.rs).
    let mut random = vec![0u8; 4 << 20];
    {
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .unwrap()
            .read_exact(&mut random)
            .unwrap();
    }
    let big = work.path().join("big.bin");
    std::fs::write(&big, &random).unwrap();
    vm.docker_ok(&["cp", big.to_str().unwrap(), "eci-h4:/big.bin"]);
    let big_back = work.path().join("big-back.bin");
    let (_, down_secs) = vm.docker_ok(&["cp", "eci-h4:/big.bin", big_back.to_str().unwrap()]);
    let back_bytes = std::fs::read(&big_back).unwrap();
    assert!(
        back_bytes == random,
        "docker cp out of the VM returned {} bytes, not the {} that went in (or other bytes)",
        back_bytes.len(),
        random.len()
    );
    eprintln!(
        "docker cp of {} bytes out of the VM: {down_secs:.2} s",
        random.len()
    );
    vm.docker_ok(&["rm", "-f", "eci-h4"]);
    let saved = work.path().join("saved.tar");
    vm.docker_ok(&[
        "save",
        "--output",
        saved.to_str().unwrap(),
        "eci-host-endpoint:busybox",
    ]);
    let listed = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&saved)
        .output()
        .unwrap();
    assert!(
        listed.status.success()
            && String::from_utf8_lossy(&listed.stdout)
                .lines()
                .any(|l| l == "manifest.json"),
        "docker save through the relay wrote no readable archive ({} bytes): {}",
        std::fs::metadata(&saved).map(|m| m.len()).unwrap_or(0),
        String::from_utf8_lossy(&listed.stderr)
    );

    // H1: the uplink is configured by DHCP (QEMU's, restrict=on) after the engine started.
    let lease = wait_for_console(&vm, "lease bound: ", Duration::from_secs(120));
    assert!(lease.contains("eth0: lease bound: 10.0.2.15/"), "{lease}");
    // DNS reaches containers through dockerd's resolv.conf handling: the event script binds
    // the lease's name servers over the image's /etc/resolv.conf, and a bridged container gets
    // a copy of that file. QEMU's DHCP under restrict=on offers no name server (nor router),
    // so here the copy says so and carries dockerd's fallback servers; with a lease that names
    // servers, they are the copy's.
    let servers: Vec<&str> = lease
        .split(" dns ")
        .nth(1)
        .and_then(|r| r.split(" for ").next())
        .map(|d| d.split_whitespace().filter(|s| *s != "none").collect())
        .unwrap_or_default();
    let (resolv, _) = vm.docker_ok(&[
        "run",
        "--rm",
        "eci-host-endpoint:busybox",
        "/bin/busybox",
        "cat",
        "/etc/resolv.conf",
    ]);
    assert!(
        resolv.contains("# from the DHCP lease on eth0"),
        "the container's resolv.conf is not the lease's:\n{resolv}"
    );
    let named: Vec<&str> = resolv
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver "))
        .collect();
    if servers.is_empty() {
        assert_eq!(named, ["8.8.8.8", "8.8.4.4"], "{resolv}");
    } else {
        assert_eq!(named, servers, "{resolv}");
    }
    // A published port is dockerd's business (nat PREROUTING -> FORWARD): reachable.
    vm.docker_ok(&[
        "run",
        "-d",
        "--name",
        "eci-h1-web",
        "-p",
        "8080:80",
        "eci-host-endpoint:busybox",
        "/bin/busybox",
        "sh",
        "-c",
        "while true; do echo published | /bin/busybox nc -l -p 80; done",
    ]);
    let published = free_port();
    vm.vm.forward_port(published, 8080).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let answer = loop {
        let got = read_from(published, Duration::from_secs(10));
        if got.as_deref().is_ok_and(|t| t.contains("published")) {
            break got.unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the published port never answered: {got:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_eq!(answer.trim(), "published");
    // The VM itself: a connection to a port nobody listens on is dropped, not refused. A
    // refused one (the guest's RST) would end at once; a dropped SYN leaves QEMU's forward
    // hanging with nothing to read.
    let own = free_port();
    vm.vm.forward_port(own, 9).unwrap();
    match read_from(own, Duration::from_secs(8)) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("inbound to the VM itself was answered, not dropped: {other:?}"),
    }
    vm.docker_ok(&["rm", "-f", "eci-h1-web"]);

    assert!(
        vm.power_off(),
        "the VM powers off cleanly on the power button; console:\n{}",
        eci_e2e::host_vm::tail(vm.vm.console_log(), 30)
    );
    let console = std::fs::read_to_string(vm.vm.console_log()).unwrap();
    assert!(
        console.contains("power button pressed"),
        "eci-init saw the power button"
    );
}

/// The first console line containing `needle`, waiting for it up to `timeout`.
fn wait_for_console(vm: &HostVm, needle: &str, timeout: Duration) -> String {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let console = std::fs::read_to_string(vm.vm.console_log()).unwrap_or_default();
        if let Some(line) = console.lines().find(|l| l.contains(needle)) {
            return line.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no console line with {needle:?} within {} s; tail:\n{}",
            timeout.as_secs(),
            eci_e2e::host_vm::tail(vm.vm.console_log(), 30)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A port on 127.0.0.1 free right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Connects to 127.0.0.1:`port` and reads until the peer closes, or fails when nothing comes
/// within `timeout`.
fn read_from(port: u16, timeout: Duration) -> std::io::Result<String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(timeout))?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text)
}
