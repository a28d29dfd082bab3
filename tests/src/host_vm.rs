//! A built image booted under QEMU with its host endpoint (SPEC H2), for suites that drive the
//! VM's engine from this machine with the docker CLI, and the one-binary image tarball they
//! load into it (SPEC H4: no registry).

use eci_build::boot::{self, Accel, BootOptions};
use eci_build::host_endpoint::{self, Relay, RunningVm, StartOptions};
use eci_build::vsock::{ENGINE_PORT, VHOST_VSOCK_DEV};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The VM, its relay and the docker CLI pointed at it. Powered off (forcibly if need be) when
/// dropped; call [`HostVm::power_off`] to check the clean path.
pub struct HostVm {
    pub vm: RunningVm,
    pub relay: Option<Relay>,
    /// Seconds from QEMU's start to the guard's first answer over vsock.
    pub engine_ready_seconds: f64,
}

/// What the host endpoint needs here: QEMU, the docker CLI, and a vsock device (the kernel's
/// vhost-vsock or the backend `./dev test` installs). `None` when the test should skip (the
/// reason printed; in CI that fails).
pub fn host_endpoint_prerequisites() -> Option<()> {
    let cache = eci_build::apt::fetch::Cache::default_location();
    let device =
        Path::new(VHOST_VSOCK_DEV).exists() || host_endpoint::backend_program(&cache).is_some();
    let ok = crate::prerequisite(
        boot::qemu_available(),
        "QEMU (apt-get install qemu-system-x86)",
    ) && crate::prerequisite(
        eci_test_support::have("docker"),
        "the docker CLI (apt-get install docker.io)",
    ) && crate::prerequisite(
        device,
        "a vsock device: /dev/vhost-vsock or vhost-device-vsock (./dev test installs it)",
    );
    ok.then_some(())
}

impl HostVm {
    /// Boots the build in `out` (a target whose image loads the virtio vsock transport) with
    /// TCG and waits up to `timeout` for the engine.
    pub fn boot(out: &Path, target: &str, timeout: Duration) -> HostVm {
        let spec = eci_build::pipeline::load_spec(&crate::workspace(), target).unwrap();
        let opts = BootOptions {
            kernel: out.join(eci_build::artifact::KERNEL_FILE),
            initramfs: out.join(eci_build::artifact::INITRAMFS_FILE),
            cmdline: spec.kernel.cmdline.clone(),
            memory_mib: 2048,
            cpus: 2,
            // /dev/kvm can hang QEMU on the project's machines (boot.rs).
            accel: Accel::Tcg,
            timeout,
            console_log: out.join("console.log"),
            echo: false,
        };
        let run_dir = out.join("run");
        let mut vm = host_endpoint::start(
            boot::direct_command(&opts).expect("QEMU command"),
            &StartOptions {
                run_dir: &run_dir,
                cache_root: &eci_build::apt::fetch::Cache::default_location(),
                memory_mib: opts.memory_mib,
                console_log: &opts.console_log,
                echo: false,
                reach: host_endpoint::EngineReach::Vsock,
            },
        )
        .expect("VM started");
        let engine_ready_seconds = match vm.wait_engine(ENGINE_PORT, timeout) {
            Ok(s) => s,
            Err(e) => panic!("{e}\n--- console tail ---\n{}", tail(&opts.console_log, 40)),
        };
        let relay = Relay::serve(
            &run_dir.join(host_endpoint::DOCKER_SOCKET),
            vm.device.clone(),
            ENGINE_PORT,
        )
        .expect("relay socket");
        HostVm {
            vm,
            relay: Some(relay),
            engine_ready_seconds,
        }
    }

    pub fn docker_host(&self) -> String {
        self.relay.as_ref().expect("relay").docker_host()
    }

    /// `docker ARGS` against the VM's engine through the relayed socket. A command still
    /// running after [`DOCKER_LIMIT`] seconds is ended (exit 124): a stalled stream fails the
    /// test instead of hanging it.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .arg(DOCKER_LIMIT.to_string())
            .arg("docker")
            .args(args)
            .env("DOCKER_HOST", self.docker_host())
            .env_remove("DOCKER_CONTEXT")
            .stdin(Stdio::null())
            .output()
            .expect("docker CLI runs")
    }

    /// Like [`HostVm::docker`], and fails the test with the CLI's stderr unless it succeeds;
    /// returns stdout and the seconds the command took.
    pub fn docker_ok(&self, args: &[&str]) -> (String, f64) {
        let t = Instant::now();
        let out = self.docker(args);
        let secs = t.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}\n--- console tail ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            tail(self.vm.console_log(), 30)
        );
        (String::from_utf8_lossy(&out.stdout).into_owned(), secs)
    }

    /// Stops the relay, presses the power button and waits; true when the guest powered off
    /// by itself.
    pub fn power_off(&mut self) -> bool {
        self.relay.take();
        self.vm.power_off(Duration::from_secs(180))
    }
}

/// Seconds one docker command through the relay may take (see [`HostVm::docker`]).
pub const DOCKER_LIMIT: u64 = 300;

pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Writes a `docker save` archive of a one-layer image named `reference` whose only file is
/// `/bin/busybox`, copied from `busybox` (a static build: nothing else is in the layer). The
/// layout is the one `docker load` reads: `manifest.json`, the config named by its sha256,
/// and the layer tar whose sha256 is the config's diff id.
pub fn busybox_image_tar(busybox: &Path, reference: &str, dir: &Path) -> PathBuf {
    let root = dir.join("image-root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    let archive = dir.join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    // Fixed owners, modes and times: the layer's bytes (and so the image id) do not depend on
    // the machine or the moment.
    let layer = archive.join("layer.tar");
    run_ok(
        Command::new("tar")
            .args([
                "--create",
                "--sort=name",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "--mtime=@0",
                "--mode=go-w",
                "--file",
            ])
            .arg(&layer)
            .arg("-C")
            .arg(&root)
            .arg("bin"),
    );
    let diff_id = hex::encode(Sha256::digest(std::fs::read(&layer).unwrap()));
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/busybox", "true"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
        "history": [{"created_by": "eci tests/src/host_vm.rs"}],
    })
    .to_string();
    let config_id = hex::encode(Sha256::digest(config.as_bytes()));
    std::fs::write(archive.join(format!("{config_id}.json")), &config).unwrap();
    let manifest = serde_json::json!([{
        "Config": format!("{config_id}.json"),
        "RepoTags": [reference],
        "Layers": ["layer.tar"],
    }]);
    std::fs::write(archive.join("manifest.json"), manifest.to_string()).unwrap();
    let tarball = dir.join("image.tar");
    run_ok(
        Command::new("tar")
            .arg("--create")
            .arg("--file")
            .arg(&tarball)
            .arg("-C")
            .arg(&archive)
            .args(["manifest.json", &format!("{config_id}.json"), "layer.tar"]),
    );
    tarball
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().expect("tool runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
