//! Host folders shared with the VM (SPEC H3, U4, B1): the qemu image boots under QEMU with its
//! host endpoint and `eci-build boot --share`'s devices (builder/src/share.rs: a virtiofsd
//! per folder, a vhost-user-fs device and the SMBIOS announcement eci-init mounts it from), and
//! the docker CLI on this machine binds the folder into containers at its VM path.
//!
//! Proves: a file written on the host is read in a container bind, and one written after the
//! boot too; owners are the host's in every container whatever its range (root as 0, uid 1000
//! as 1000; U4 through eci-runc's idmapped binds, which eci-init checked the share allows);
//! what container root writes lands on the host as root, and a chown to 1000 in the container
//! is 1000 on the host; a bind of a VM path outside the share root is still refused (B1, B2).

use eci_build::boot::{self, Accel, BootOptions};
use eci_build::host_endpoint::{self, Relay, StartOptions};
use eci_build::share;
use eci_build::vsock::{ENGINE_PORT, VHOST_VSOCK_DEV};
use eci_e2e::build_image_or_skip;
use eci_e2e::host_vm::{busybox_image_tar, host_endpoint_prerequisites, tail, HostVm};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

const TARGET: &str = "qemu";
const IMAGE: &str = "eci-shares:busybox";

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
}

/// The qemu build in `out` booted with `dir` shared, as `eci-build boot --share` does; the
/// daemons are returned so they outlive the VM.
fn boot_with_share(out: &Path, dir: &Path) -> (HostVm, Vec<share::Daemon>, share::Share) {
    let spec = eci_build::pipeline::load_spec(&eci_e2e::workspace(), TARGET).unwrap();
    let opts = BootOptions {
        kernel: out.join(eci_build::artifact::KERNEL_FILE),
        initramfs: out.join(eci_build::artifact::INITRAMFS_FILE),
        cmdline: spec.kernel.cmdline.clone(),
        memory_mib: 2048,
        cpus: 2,
        // /dev/kvm can hang QEMU on the project's machines (boot.rs).
        accel: Accel::Tcg,
        timeout: Duration::from_secs(600),
        console_log: out.join("console.log"),
        echo: false,
    };
    let run_dir = out.join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    let cache = eci_build::apt::fetch::Cache::default_location();
    let shares = share::plan(&[dir.to_path_buf()]).unwrap();
    let program = share::find_daemon(&cache).unwrap();
    let daemons = share::start_all(&program, &shares, &run_dir).unwrap();
    let (mut command, accel) = boot::direct_command(&opts).expect("QEMU command");
    let vsock_backend = !Path::new(VHOST_VSOCK_DEV).exists();
    command.args(share::qemu_args(&daemons, opts.memory_mib, vsock_backend));
    let mut vm = host_endpoint::start(
        (command, accel),
        &StartOptions {
            run_dir: &run_dir,
            cache_root: &cache,
            memory_mib: opts.memory_mib,
            console_log: &opts.console_log,
            echo: false,
            reach: host_endpoint::EngineReach::Vsock,
        },
    )
    .expect("VM started");
    let engine_ready_seconds = match vm.wait_engine(ENGINE_PORT, opts.timeout) {
        Ok(s) => s,
        Err(e) => panic!("{e}\n--- console tail ---\n{}", tail(&opts.console_log, 40)),
    };
    let relay = Relay::serve(
        &run_dir.join(host_endpoint::DOCKER_SOCKET),
        vm.device.clone(),
        ENGINE_PORT,
    )
    .expect("relay socket");
    let vm = HostVm {
        vm,
        relay: Some(relay),
        engine_ready_seconds,
    };
    (vm, daemons, shares.into_iter().next().unwrap())
}

#[test]
fn a_host_folder_reaches_containers_with_the_owners_u4_promises() {
    if host_endpoint_prerequisites().is_none() {
        return;
    }
    let cache = eci_build::apt::fetch::Cache::default_location();
    if !eci_e2e::prerequisite(
        Path::new("/bin/busybox").is_file(),
        "a static busybox for the test image (apt-get install busybox-static)",
    ) || !eci_e2e::prerequisite(
        eci_e2e::is_root(),
        "root, to give host files other owners and let virtiofsd keep owners",
    ) || !eci_e2e::prerequisite(
        share::find_daemon(&cache).is_ok(),
        "virtiofsd 1.14.0 (./dev test installs it)",
    ) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    if build_image_or_skip(TARGET, &out).is_none() {
        return;
    }
    let host = work.path().join("shared");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("by-root.txt"), "written on the host\n").unwrap();
    std::fs::write(host.join("by-1000.txt"), "a user's file\n").unwrap();
    chown(&host.join("by-1000.txt"), 1000, 1000);
    let big: Vec<u8> = (0..16u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(host.join("big.bin"), &big).unwrap();
    // Container root may write in the folder.
    std::fs::set_permissions(&host, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();

    let booted = Instant::now();
    let (mut vm, _daemons, shared) = boot_with_share(&out, &host);
    eprintln!(
        "engine answered {:.1} s after QEMU started (with one share); {} is at {} in the VM",
        vm.engine_ready_seconds,
        shared.host_dir.display(),
        shared.vm_path
    );
    let console = std::fs::read_to_string(vm.vm.console_log()).unwrap_or_default();
    assert!(
        console.contains(&format!(
            "share {} mounted at {} (virtiofs, idmapped binds allowed)",
            shared.tag, shared.vm_path
        )),
        "eci-init did not mount the share:\n{}",
        tail(vm.vm.console_log(), 40)
    );

    let tarball = busybox_image_tar(Path::new("/bin/busybox"), IMAGE, work.path());
    vm.docker_ok(&["load", "--input", tarball.to_str().unwrap()]);
    let bind = format!("{}:/x", shared.vm_path);

    // A container holding a range, so the next ones get other ranges (U2) and still agree on
    // the owners (U4).
    vm.docker_ok(&[
        "run",
        "-d",
        "--name",
        "eci-share-holder",
        "--network",
        "none",
        "-v",
        &bind,
        IMAGE,
        "/bin/busybox",
        "sleep",
        "600",
    ]);
    let look = "cat /x/by-root.txt; /bin/busybox stat -c '%u:%g %n' /x/by-root.txt /x/by-1000.txt; cat /proc/self/uid_map";
    let (seen, run_secs) = vm.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &bind,
        IMAGE,
        "/bin/busybox",
        "sh",
        "-c",
        look,
    ]);
    let (held, _) = vm.docker_ok(&["exec", "eci-share-holder", "/bin/busybox", "sh", "-c", look]);
    eprintln!("docker run --rm with the share bound: {run_secs:.2} s");
    for (who, text) in [("a new container", &seen), ("the holder", &held)] {
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "written on the host", "{who}: {text}");
        assert_eq!(lines[1], "0:0 /x/by-root.txt", "{who}: {text}");
        assert_eq!(lines[2], "1000:1000 /x/by-1000.txt", "{who}: {text}");
        let map: Vec<u64> = lines[3]
            .split_whitespace()
            .map(|f| f.parse().unwrap())
            .collect();
        assert!(
            map.len() == 3 && map[0] == 0 && map[1] >= 100_000 && map[2] == 65_536,
            "{who}: uid_map {:?}",
            lines[3]
        );
    }
    assert_ne!(
        seen.lines().nth(3),
        held.lines().nth(3),
        "two live containers must have different ranges for this to prove anything"
    );

    // Writes come back to the host with the container's ids, not its VM range.
    vm.docker_ok(&[
        "run", "--rm", "--network", "none", "-v", &bind, IMAGE, "/bin/busybox", "sh", "-c",
        "echo from the container > /x/from-container.txt && echo mine > /x/to-1000.txt && chown 1000:1000 /x/to-1000.txt",
    ]);
    let meta = std::fs::metadata(host.join("from-container.txt")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (0, 0),
        "container root's file on the host"
    );
    assert_eq!(
        std::fs::read_to_string(host.join("from-container.txt")).unwrap(),
        "from the container\n"
    );
    let meta = std::fs::metadata(host.join("to-1000.txt")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (1000, 1000),
        "chown in the container"
    );

    // A file the host writes while the VM runs.
    std::fs::write(host.join("later.txt"), "after the boot\n").unwrap();
    let (later, _) = vm.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &bind,
        IMAGE,
        "/bin/busybox",
        "cat",
        "/x/later.txt",
    ]);
    assert_eq!(later, "after the boot\n");

    // Read throughput of the share from a container (TCG, so slow; for the record).
    let (sum, read_secs) = vm.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &bind,
        IMAGE,
        "/bin/busybox",
        "md5sum",
        "/x/big.bin",
    ]);
    let want = std::process::Command::new("md5sum")
        .arg(host.join("big.bin"))
        .output()
        .unwrap();
    assert_eq!(
        sum.split_whitespace().next(),
        String::from_utf8_lossy(&want.stdout)
            .split_whitespace()
            .next()
    );
    eprintln!(
        "md5sum of a 16 MiB host file in a container: {read_secs:.2} s (docker run included)"
    );

    // B1, B2: a VM path outside the share root is still refused.
    let refused = vm.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        "/etc:/x",
        IMAGE,
        "/bin/busybox",
        "true",
    ]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("configured as a restricted host mount"),
        "a bind of /etc: {stderr}"
    );

    vm.docker_ok(&["rm", "-f", "eci-share-holder"]);
    assert!(vm.power_off(), "the VM did not power off cleanly");
    eprintln!("whole run {:.1} s", booted.elapsed().as_secs_f64());
}
