//! eci-guard in front of a real dockerd started by the test: every policy rule through the
//! docker CLI and through raw HTTP on the socket (SPEC A3, A6, B1-B7, D1, S1, S5), the streams
//! docker and compose depend on, and bad input under load.
//!
//! Under `eci-build test` (SPEC V7) the same tests drive the VM's own guard through its host
//! endpoint: the checks of the audit log (inside the VM) are left out, and the tests that need
//! their own policy, dockerd's socket or this machine's folders are listed as not run with
//! their reason.
//!
//! Needs root, dockerd (docker.io), the docker CLI, runc and busybox-static; skips
//! without them on a laptop, fails in CI.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use eci_e2e::guard_engine::{engine_prerequisites, http, http_stream, policy_json, GuardEngine};
use eci_e2e::runc_engine::not_run_in_vm;
use serde_json::{json, Value};

const IMG: &str = "eci-test/busybox:1";

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "command failed: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The CLI failed and printed the guard's message as a daemon error.
fn refused(o: Output, message: &str) {
    let t = text(&o);
    assert!(
        !o.status.success(),
        "expected a refusal containing {message:?}, got success: {t}"
    );
    assert!(
        t.contains("Error response from daemon: ") && t.contains(message),
        "expected {message:?} in the CLI's error, got: {t}"
    );
}

fn has_rule(v: &Value, rule: &str) -> bool {
    v["rules"]
        .as_array()
        .is_some_and(|r| r.iter().any(|x| x == rule))
}

fn engine(
    name: &str,
    images: &[&str],
    policy: impl FnOnce(&std::path::Path) -> Value,
) -> Option<GuardEngine> {
    if !engine_prerequisites() {
        return None;
    }
    Some(
        GuardEngine::start(name, images, policy).unwrap_or_else(|e| panic!("engine {name}: {e:#}")),
    )
}

fn plain(share: &std::path::Path) -> Value {
    policy_json(share, &[], false, "deny", &[])
}

fn runtime_of(e: &GuardEngine, name: &str) -> String {
    ok(e.docker_read(&["inspect", "-f", "{{.HostConfig.Runtime}}", name]))
}

/// SPEC A3, A1: any runtime a client asks for becomes eci, and the audit log says so.
#[test]
fn guard_rewrites_any_runtime_to_eci() {
    let Some(e) = engine("runtime", &[IMG], plain) else {
        return;
    };
    assert_eq!(
        ok(e.docker(&[
            "run",
            "--runtime=runc",
            "--name",
            "asked-runc",
            IMG,
            "echo",
            "hi"
        ])),
        "hi"
    );
    assert_eq!(runtime_of(&e, "asked-runc"), "eci");
    ok(e.docker(&["create", "--name", "no-runtime", IMG, "true"]));
    assert_eq!(runtime_of(&e, "no-runtime"), "eci");

    // Raw API, versioned and not, HostConfig member and the top-level fallback.
    let a = e.curl(
        &e.guard_sock,
        "POST",
        "/v1.41/containers/create?name=raw1",
        Some(
            &json!({"Image": IMG, "Cmd": ["true"], "HostConfig": {"Runtime": "runc"}}).to_string(),
        ),
    );
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(runtime_of(&e, "raw1"), "eci");
    let a = e.curl(
        &e.guard_sock,
        "POST",
        "/containers/create?name=raw2",
        Some(&json!({"Image": IMG, "Cmd": ["true"], "Runtime": "runc"}).to_string()),
    );
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(runtime_of(&e, "raw2"), "eci");
    if !e.on_this_machine() {
        return; // the audit log is in the VM
    }

    let line = e
        .wait_audit(|v| {
            v["decision"] == "rewrite"
                && v["notes"]
                    .to_string()
                    .contains("\\\"runc\\\" -> \\\"eci\\\"")
        })
        .expect("a rewrite line for the runtime");
    assert_eq!(line["rules"], json!(["A3"]));
    assert_eq!(line["status"], 201);
    assert_eq!(line["listener"], "user");
}

/// SPEC A5: a container created before isolation (here: straight on dockerd, with its default
/// runtime) is not run again through the guard; the message says how to recreate it.
#[test]
fn guard_refuses_to_run_containers_from_before_isolation() {
    if not_run_in_vm(
        "creates its container straight on dockerd, whose socket only the build machine's engine exposes",
    ) {
        return;
    }
    let Some(e) = engine("legacy", &[IMG], plain) else {
        return;
    };
    ok(e.docker_direct(&["create", "--name", "old", IMG, "sleep", "60"]));
    refused(
        e.docker(&["start", "old"]),
        "container old was created before container isolation was enabled (runtime runc)",
    );
    let t = text(&e.docker(&["start", "old"]));
    assert!(t.contains("`docker rm old`"), "{t}");
    ok(e.docker_direct(&["start", "old"]));
    for action in ["restart", "pause"] {
        let a = e.curl(
            &e.guard_sock,
            "POST",
            &format!("/v1.41/containers/old/{action}"),
            None,
        );
        if action == "pause" {
            assert_eq!(a.status, 204, "pause is not a way back in: {}", a.body);
        } else {
            assert_eq!(
                (a.status, a.message().contains("docker rm old")),
                (409, true),
                "{}",
                a.body
            );
        }
    }
    let a = e.curl(&e.guard_sock, "POST", "/v1.41/containers/old/unpause", None);
    assert_eq!(a.status, 409, "{}", a.body);
    // Recreated through the guard, it runs (isolated).
    ok(e.docker(&["rm", "-f", "old"]));
    ok(e.docker(&["run", "-d", "--name", "old", IMG, "sleep", "60"]));
    assert_eq!(runtime_of(&e, "old"), "eci");
    ok(e.docker(&["restart", "-t", "0", "old"]));
    let line = e
        .wait_audit(|v| has_rule(v, "A5"))
        .expect("an A5 refusal in the audit log");
    assert_eq!(line["status"], 409);
}

/// SPEC A6: pid/ipc/uts/network host sharing is refused naming the namespace; userns=host
/// is ignored.
#[test]
fn guard_refuses_host_namespaces() {
    let Some(e) = engine("ns", &[IMG], plain) else {
        return;
    };
    for ns in ["pid", "ipc", "uts", "network"] {
        refused(
            e.docker(&["run", "--rm", &format!("--{ns}=host"), IMG, "true"]),
            &format!("sharing the VM's {ns} namespace (--{ns}=host) is not allowed"),
        );
    }
    ok(e.docker(&["run", "--rm", "--userns=host", IMG, "true"]));
    // The host network by its id is the host network.
    let host_id = ok(e.docker_read(&["network", "inspect", "-f", "{{.Id}}", "host"]));
    refused(
        e.docker(&["run", "--rm", &format!("--network={host_id}"), IMG, "true"]),
        "sharing the VM's network namespace",
    );
    // Raw API: the top-level HostConfig fallback and Go's case-insensitive field names.
    for body in [
        json!({"Image": IMG, "PidMode": "host"}),
        json!({"Image": IMG, "HostConfig": {"pidmode": "host"}}),
    ] {
        let a = e.curl(
            &e.guard_sock,
            "POST",
            "/v1.41/containers/create",
            Some(&body.to_string()),
        );
        assert!(
            a.status == 403 || a.status == 400,
            "{body}: {} {}",
            a.status,
            a.body
        );
        assert!(!a.message().is_empty(), "Docker's error shape: {}", a.body);
    }
    assert_eq!(
        ok(e.docker_read(&["ps", "-aq"])).lines().count(),
        0,
        "nothing refused was created"
    );
}

/// SPEC B1, B2: binds only from shared folders, symlinks judged by their target, volumes
/// judged by their source.
#[test]
fn guard_restricts_bind_mounts_and_volume_sources() {
    if not_run_in_vm(
        "binds folders of the engine's machine through a share of its own; eci-build test attaches no shared folder (SPEC H3) to the VM",
    ) {
        return;
    }
    let Some(e) = engine("binds", &[IMG], plain) else {
        return;
    };
    let msg =
        |p: &str| format!("can't mount {p} because it's configured as a restricted host mount");
    refused(
        e.docker(&["run", "--rm", "-v", "/etc:/x", IMG, "true"]),
        &msg("/etc"),
    );
    refused(
        e.docker(&[
            "run",
            "--rm",
            "--mount",
            "type=bind,src=/var/lib,dst=/x",
            IMG,
            "true",
        ]),
        &msg("/var/lib"),
    );

    let share = e.share.to_str().unwrap().to_string();
    std::fs::create_dir_all(e.share.join("work")).unwrap();
    ok(e.docker(&[
        "run",
        "--rm",
        "-v",
        &format!("{share}/work:/w"),
        IMG,
        "sh",
        "-c",
        "echo made > /w/file",
    ]));
    assert_eq!(
        std::fs::read_to_string(e.share.join("work/file"))
            .unwrap()
            .trim(),
        "made"
    );
    ok(e.docker(&[
        "run",
        "--rm",
        "--mount",
        &format!("type=bind,src={share},dst=/s,readonly"),
        IMG,
        "ls",
        "/s/work",
    ]));

    // A symlink inside the share that leads out of it, and `..` games.
    std::os::unix::fs::symlink("/etc", e.share.join("escape")).unwrap();
    refused(
        e.docker(&[
            "run",
            "--rm",
            "-v",
            &format!("{share}/escape:/x"),
            IMG,
            "true",
        ]),
        &msg(&format!("{share}/escape")),
    );
    refused(
        e.docker(&[
            "run",
            "--rm",
            "-v",
            &format!("{share}/../../etc:/x"),
            IMG,
            "true",
        ]),
        &msg(&format!("{share}/../../etc")),
    );

    // Volumes: refused at create through the guard ...
    refused(
        e.docker(&[
            "volume",
            "create",
            "-o",
            "type=none",
            "-o",
            "o=bind",
            "-o",
            "device=/etc",
            "etcvol",
        ]),
        &msg("/etc"),
    );
    ok(e.docker(&[
        "volume",
        "create",
        "-o",
        "type=none",
        "-o",
        "o=bind",
        "-o",
        &format!("device={share}/work"),
        "okvol",
    ]));
    ok(e.docker(&["run", "--rm", "-v", "okvol:/v", IMG, "cat", "/v/file"]));
    // ... and a volume that already points at a VM path (made behind the guard's back) cannot
    // be mounted either.
    ok(e.docker_direct(&[
        "volume",
        "create",
        "-o",
        "type=none",
        "-o",
        "o=bind",
        "-o",
        "device=/etc",
        "oldvol",
    ]));
    refused(
        e.docker(&["run", "--rm", "-v", "oldvol:/x", IMG, "true"]),
        &msg("/etc"),
    );
    refused(
        e.docker(&["run", "--rm", "--mount", "src=oldvol,dst=/x", IMG, "true"]),
        &msg("/etc"),
    );
    ok(e.docker(&["run", "--rm", "-v", "plainvol:/x", IMG, "touch", "/x/ok"]));

    // Raw API.
    let a = e.curl(
        &e.guard_sock,
        "POST",
        "/v1.41/containers/create",
        Some(&json!({"Image": IMG, "HostConfig": {"Binds": ["/root:/r"]}}).to_string()),
    );
    assert_eq!((a.status, a.message()), (403, msg("/root")));
    let a = e.curl(
        &e.guard_sock,
        "POST",
        "/v1.41/volumes/create",
        Some(
            &json!({"Name": "v2", "DriverOpts": {"type": "none", "o": "bind", "device": "/usr"}})
                .to_string(),
        ),
    );
    assert_eq!((a.status, a.message()), (403, msg("/usr")));
    let line = e
        .wait_audit(|v| v["rules"] == json!(["B2"]))
        .expect("a B2 refusal in the audit log");
    assert_eq!(line["decision"], "refuse");
}

/// SPEC B2, issue 9: a volume's options are a mount the guard must judge. Shown first against
/// dockerd directly (plain runc, no guard) to prove the attack is real, then refused through
/// the guard at volume create, at container create and at start, and through --volumes-from.
#[test]
fn volume_options_cannot_reach_vm_paths_through_the_guard() {
    if not_run_in_vm(
        "plants stand-ins for VM folders next to dockerd and sets volumes up on dockerd's own socket, both on the build machine only",
    ) {
        return;
    }
    let Some(e) = engine("volopts", &[IMG], plain) else {
        return;
    };
    // A stand-in for a VM folder such as /etc, reached by a path relative to dockerd's
    // working directory.
    let vm = e.dir.path().join("vmdir");
    std::fs::create_dir_all(&vm).unwrap();
    let relative = ["-o", "type=none", "-o", "o=bind", "-o", "device=vmdir"];

    // Without the guard: the relative device reaches the VM folder and the container writes
    // there as the VM's root.
    let mut args = vec!["volume", "create"];
    args.extend(relative);
    args.push("relvol");
    ok(e.docker_direct(&args));
    ok(e.docker_direct(&["run", "--rm", "-v", "relvol:/m", IMG, "touch", "/m/pwned"]));
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(vm.join("pwned")).expect("the attack works without the guard");
    assert_eq!((meta.uid(), meta.gid()), (0, 0));

    // Through the guard: refused at volume create, naming the volume and the option ...
    let mut args = vec!["volume", "create"];
    args.extend(relative);
    args.push("relvol2");
    refused(e.docker(&args), "volume \"relvol2\" is not allowed");
    refused(e.docker(&args), "device=vmdir");
    let lower = format!("o=lowerdir={},upperdir=/tmp/u,workdir=/tmp/w", vm.display());
    refused(
        e.docker(&[
            "volume",
            "create",
            "-o",
            "type=overlay",
            "-o",
            &lower,
            "-o",
            "device=overlay",
            "ov",
        ]),
        "type=overlay",
    );
    refused(
        e.docker(&["volume", "create", "-d", "someplugin", "pv"]),
        "driver \"someplugin\"",
    );
    // ... when the options come with the container (an anonymous volume) ...
    refused(
        e.docker(&[
            "run",
            "--rm",
            "--mount",
            "type=volume,dst=/m,volume-opt=type=none,volume-opt=o=bind,volume-opt=device=vmdir",
            IMG,
            "true",
        ]),
        "device=vmdir",
    );
    // ... when a container names a volume made behind the guard's back ...
    refused(
        e.docker(&["run", "--rm", "-v", "relvol:/m", IMG, "touch", "/m/again"]),
        "volume \"relvol\" is not allowed",
    );
    // ... and when such a container, created behind the guard's back, is started.
    // (Runtime eci, so the A5 rule for containers from before isolation does not decide.)
    ok(e.docker_direct(&[
        "create",
        "--runtime",
        "eci",
        "--name",
        "pre",
        "-v",
        "relvol:/m",
        IMG,
        "touch",
        "/m/again",
    ]));
    refused(
        e.docker(&["start", "pre"]),
        "volume \"relvol\" is not allowed",
    );
    assert!(!vm.join("again").exists());

    // --volumes-from hands over the source's mounts: judged by the same rules.
    let bind = format!("{}:/m", vm.display());
    ok(e.docker_direct(&[
        "create",
        "--runtime",
        "eci",
        "--name",
        "binder",
        "-v",
        &bind,
        IMG,
        "true",
    ]));
    refused(
        e.docker(&[
            "run",
            "--rm",
            "--volumes-from",
            "binder",
            IMG,
            "touch",
            "/m/x",
        ]),
        &format!(
            "can't mount {} because it's configured as a restricted host mount",
            vm.display()
        ),
    );
    refused(
        e.docker(&["run", "--rm", "--volumes-from", "pre:ro", IMG, "true"]),
        "volume \"relvol\" is not allowed",
    );
    assert!(!vm.join("x").exists());

    // What stays allowed: tmpfs volumes, plain ones, and --volumes-from a clean container.
    ok(e.docker(&[
        "volume",
        "create",
        "-o",
        "type=tmpfs",
        "-o",
        "device=tmpfs",
        "-o",
        "o=size=8m,mode=1777",
        "tv",
    ]));
    assert_eq!(
        ok(e.docker(&[
            "run",
            "--rm",
            "-v",
            "tv:/t",
            IMG,
            "sh",
            "-c",
            "grep -c ' /t tmpfs' /proc/mounts"
        ])),
        "1"
    );
    ok(e.docker(&["create", "--name", "clean", "-v", "plain:/p", IMG, "true"]));
    ok(e.docker(&[
        "run",
        "--rm",
        "--volumes-from",
        "clean",
        IMG,
        "touch",
        "/p/ok",
    ]));
    let line = e
        .wait_audit(|v| {
            v["rules"] == json!(["B2"])
                && v["message"].as_str().is_some_and(|m| m.contains("relvol"))
        })
        .expect("the refusal is audited");
    assert_eq!(line["decision"], "refuse");
}

/// A loop device over a file holding a marker: a stand-in for the VM's disk that the attack
/// reads. Detached when dropped.
struct LoopDisk {
    path: String,
    major: u32,
    minor: u32,
}

const DISK_MARKER: &str = "ECI-DISK-MARKER";

impl LoopDisk {
    fn new(dir: &std::path::Path) -> Option<LoopDisk> {
        use std::os::unix::fs::MetadataExt;
        let backing = dir.join("disk.img");
        let mut bytes = DISK_MARKER.as_bytes().to_vec();
        bytes.resize(1 << 20, 0);
        std::fs::write(&backing, bytes).ok()?;
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&backing)
            .output()
            .ok()?;
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || path.is_empty() {
            return None;
        }
        let rdev = std::fs::metadata(&path).ok()?.rdev();
        let (major, minor) = (libc::major(rdev), libc::minor(rdev));
        Some(LoopDisk { path, major, minor })
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.path]).status();
    }
}

/// SPEC P3: `--device` and `--device-cgroup-rule` reach only the safe set. Shown first against
/// dockerd with plain runc and no guard (the container reads the machine's disk), then refused
/// through the guard; a safe device at a custom path still works.
#[test]
fn guard_refuses_devices_outside_the_safe_set() {
    if not_run_in_vm(
        "attaches a loop disk on the engine's machine and runs containers straight on dockerd, both on the build machine only",
    ) {
        return;
    }
    let Some(e) = engine("devices", &[IMG], plain) else {
        return;
    };
    let loop_disk = LoopDisk::new(e.dir.path());
    if !eci_e2e::prerequisite(loop_disk.is_some(), "a loop device (losetup)") {
        return;
    }
    let loop_disk = loop_disk.unwrap();
    let (disk, major, minor) = (loop_disk.path.as_str(), loop_disk.major, loop_disk.minor);
    let map = format!("{disk}:/dev/xdisk");
    let read = "head -c 15 /dev/xdisk";
    assert_eq!(
        ok(e.docker_direct(&["run", "--rm", "--device", &map, IMG, "sh", "-c", read])),
        DISK_MARKER,
        "without the guard the container reads the disk"
    );
    let rule = format!("b {major}:{minor} rwm");
    let mknod = format!("mknod /xdisk b {major} {minor} && head -c 15 /xdisk");
    assert_eq!(
        ok(e.docker_direct(&[
            "run",
            "--rm",
            "--device-cgroup-rule",
            &rule,
            IMG,
            "sh",
            "-c",
            &mknod
        ])),
        DISK_MARKER,
        "without the guard a cgroup rule and mknod reach the disk"
    );

    refused(
        e.docker(&["run", "--rm", "--device", &map, IMG, "sh", "-c", read]),
        &format!("device {disk} (block {major}:{minor}) is not allowed under Enhanced Container Isolation"),
    );
    refused(
        e.docker(&[
            "run",
            "--rm",
            "--device-cgroup-rule",
            &rule,
            IMG,
            "sh",
            "-c",
            &mknod,
        ]),
        &format!("device cgroup rule {rule:?} is not allowed"),
    );
    // A symlink with a harmless name is judged by the node it leads to.
    let link = e.dir.path().join("null-looking");
    std::os::unix::fs::symlink(disk, &link).unwrap();
    let via_link = format!("{}:/dev/xdisk", link.display());
    refused(
        e.docker(&["run", "--rm", "--device", &via_link, IMG, "true"]),
        &format!("(block {major}:{minor})"),
    );
    assert_eq!(
        ok(e.docker(&[
            "run",
            "--rm",
            "--device",
            "/dev/null:/dev/mynull",
            IMG,
            "sh",
            "-c",
            "echo x > /dev/mynull && echo written"
        ])),
        "written"
    );
    let line = e
        .wait_audit(|v| v["rules"] == json!(["P3"]))
        .expect("the refusal is audited");
    assert_eq!(line["decision"], "refuse");
}

fn socket_policy<'a>(
    images: &'a [&'a str],
    derived: bool,
) -> impl FnOnce(&std::path::Path) -> Value + 'a {
    move |share| policy_json(share, images, derived, "deny", &["push", "volume"])
}

/// SPEC B4: the engine socket only for allowed images, by id, whatever they are called.
#[test]
fn guard_socket_mount_follows_the_image_allow_list() {
    if not_run_in_vm(
        "needs a policy of its own (a socket-mount allow list) and restarts the guard; the VM's guard has the image's policy",
    ) {
        return;
    }
    let Some(e) = engine(
        "sock",
        &["eci-test/allowed", "eci-test/other:1"],
        socket_policy(&["docker.io/eci-test/allowed:latest"], false),
    ) else {
        return;
    };
    let cli = e.share_docker_cli().unwrap();
    let cli_mount = format!("{}:/cli:ro", cli.display());
    let sock = e.guard_sock.to_str().unwrap().to_string();
    let sock_mount = format!("{sock}:/var/run/docker.sock");

    // Allowed, under each spelling of its name; the socket inside works and is the guard's.
    for name in [
        "eci-test/allowed",
        "eci-test/allowed:latest",
        "docker.io/eci-test/allowed",
    ] {
        let out = ok(e.docker(&[
            "run",
            "--rm",
            "-v",
            &sock_mount,
            "-v",
            &cli_mount,
            name,
            "/cli/docker",
            "version",
            "--format",
            "{{.Server.APIVersion}}",
        ]));
        assert!(!out.is_empty(), "{name}");
    }
    let id = ok(e.docker_direct(&["inspect", "-f", "{{.Id}}", "eci-test/allowed"]));
    ok(e.docker(&["run", "--rm", "-v", &sock_mount, &id, "true"]));
    // /var/run/docker.sock names the engine socket too (the guard's alias list).
    ok(e.docker(&[
        "run",
        "--rm",
        "-v",
        "/var/run/docker.sock:/s",
        "eci-test/allowed",
        "true",
    ]));
    // The mount was re-pointed at the container socket.
    ok(e.docker(&[
        "create",
        "--name",
        "mounted",
        "-v",
        &sock_mount,
        "eci-test/allowed",
        "true",
    ]));
    let src = ok(e.docker_direct(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{.Source}}{{end}}",
        "mounted",
    ]));
    assert_eq!(src, e.container_sock.to_str().unwrap());

    // Not allowed.
    refused(
        e.docker(&["run", "--rm", "-v", &sock_mount, "eci-test/other:1", "true"]),
        "image \"eci-test/other:1\" is not allowed to mount the Docker engine socket",
    );
    // Retagged under the allowed name: the name moved, the pinned id did not.
    ok(e.docker(&["tag", "eci-test/other:1", "eci-test/allowed"]));
    refused(
        e.docker(&["run", "--rm", "-v", &sock_mount, "eci-test/allowed", "true"]),
        "is not allowed to mount the Docker engine socket",
    );
    let t = text(&e.docker(&["run", "--rm", "-v", &sock_mount, "eci-test/allowed", "true"]));
    assert!(t.contains("not the image pinned"), "{t}");
    // ... the pin survives a restart of the guard.
    let mut e = e;
    e.stop_guard();
    e.start_guard().unwrap();
    refused(
        e.docker(&["run", "--rm", "-v", &sock_mount, "eci-test/allowed", "true"]),
        "is not allowed to mount",
    );
    ok(e.docker(&["tag", &id, "eci-test/allowed"]));
    ok(e.docker(&["run", "--rm", "-v", &sock_mount, "eci-test/allowed", "true"]));

    // Raw API: the same refusal, and a missing image answers 404 so the CLI pulls first.
    let a = e.curl(
        &e.guard_sock,
        "POST",
        "/v1.41/containers/create",
        Some(
            &json!({"Image": "eci-test/other:1", "HostConfig": {"Binds": [sock_mount]}})
                .to_string(),
        ),
    );
    assert_eq!(a.status, 403, "{}", a.body);
    let a = e.curl(&e.guard_sock, "POST", "/v1.41/containers/create",
        Some(&json!({"Image": "eci-test/absent:1", "HostConfig": {"Mounts": [{"Type": "bind", "Source": "/var/run/docker.sock", "Target": "/s"}]}}).to_string()));
    assert_eq!(
        (a.status, a.message().as_str()),
        (404, "No such image: eci-test/absent:1")
    );
    // dockerd's own socket is never mountable, allowed image or not.
    let direct = e.dockerd_sock.to_str().unwrap().to_string();
    refused(
        e.docker(&[
            "run",
            "--rm",
            "-v",
            &format!("{direct}:/s"),
            "eci-test/allowed",
            "true",
        ]),
        &format!("can't mount {direct} because it's configured as a restricted host mount"),
    );
    assert!(e
        .wait_audit(|v| v["rules"] == json!(["B4"]) && v["decision"] == "refuse")
        .is_some());
}

/// SPEC B5: with allowDerivedImages, images built FROM an allowed one pass, by parent chain
/// (classic builder) or by layers (images without a parent, as BuildKit makes them).
/// Also SPEC S1: the guard follows settings changes and keeps the last good on a bad file.
#[test]
fn guard_socket_mount_allows_derived_images() {
    if not_run_in_vm(
        "needs a policy of its own (derived images allowed) and rewrites it while running; the VM's guard has the image's policy",
    ) {
        return;
    }
    let Some(e) = engine(
        "derived",
        &["eci-test/base:1", "eci-test/other:1"],
        socket_policy(&["eci-test/base:1"], true),
    ) else {
        return;
    };
    let ctx = e.dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM eci-test/base:1\nRUN echo derived > /derived\n",
    )
    .unwrap();
    let build = e.docker_env(
        &[
            "build",
            "-q",
            "-t",
            "eci-test/child:1",
            ctx.to_str().unwrap(),
        ],
        &[("DOCKER_BUILDKIT", "0")],
    );
    ok(build);
    let sock_mount = format!("{}:/var/run/docker.sock", e.guard_sock.display());
    assert_eq!(
        ok(e.docker(&[
            "run",
            "--rm",
            "-v",
            &sock_mount,
            "eci-test/child:1",
            "cat",
            "/derived"
        ])),
        "derived"
    );
    assert!(e
        .wait_audit(|v| has_rule(v, "B5") && v["notes"].to_string().contains("parent chain"))
        .is_some());

    // The same image without a parent: save, drop the Parent from the manifest, load.
    let tar_dir = e.dir.path().join("saved");
    std::fs::create_dir_all(&tar_dir).unwrap();
    let saved = e.docker_direct(&["save", "eci-test/child:1"]);
    assert!(saved.status.success());
    let mut untar = Command::new("tar")
        .arg("-C")
        .arg(&tar_dir)
        .arg("-x")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    untar
        .stdin
        .take()
        .unwrap()
        .write_all(&saved.stdout)
        .unwrap();
    assert!(untar.wait().unwrap().success());
    let manifest = tar_dir.join("manifest.json");
    let mut m: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    m[0].as_object_mut().unwrap().remove("Parent");
    m[0]["RepoTags"] = json!(["eci-test/orphan:1"]);
    std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();
    ok(e.docker_direct(&["rmi", "eci-test/child:1"]));
    let tarball = Command::new("tar")
        .arg("-C")
        .arg(&tar_dir)
        .args(["-c", "."])
        .output()
        .unwrap();
    let load = e.docker_stdin(&["load", "-q"], &tarball.stdout);
    ok(load);
    assert_eq!(
        ok(e.docker_direct(&["inspect", "-f", "{{.Parent}}", "eci-test/orphan:1"])),
        ""
    );
    ok(e.docker(&[
        "run",
        "--rm",
        "-v",
        &sock_mount,
        "eci-test/orphan:1",
        "true",
    ]));
    assert!(e
        .wait_audit(|v| v["notes"]
            .to_string()
            .contains("its layers are the base of this image"))
        .is_some());
    refused(
        e.docker(&["run", "--rm", "-v", &sock_mount, "eci-test/other:1", "true"]),
        "nor derived from an image in it",
    );

    // S1: the admin turns derived images off; the guard follows. A broken file changes nothing.
    e.write_policy(&policy_json(
        &e.share,
        &["eci-test/base:1"],
        false,
        "deny",
        &[],
    ))
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = e.docker(&[
            "run",
            "--rm",
            "-v",
            &sock_mount,
            "eci-test/orphan:1",
            "true",
        ]);
        if !o.status.success() {
            refused(o, "is not allowed to mount the Docker engine socket");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the guard did not pick up the new settings"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    e.write_settings_text("{\"bindMounts\": ").unwrap();
    assert!(e
        .wait_audit(|v| v["event"] == "settings" && v["decision"] == "error")
        .is_some());
    refused(
        e.docker(&[
            "run",
            "--rm",
            "-v",
            &sock_mount,
            "eci-test/orphan:1",
            "true",
        ]),
        "is not allowed to mount",
    );
    ok(e.docker(&["run", "--rm", "-v", &sock_mount, "eci-test/base:1", "true"]));
}

/// SPEC B6, B7: requests arriving on the container socket are filtered by commandList;
/// containers they create are isolated like any other.
#[test]
fn guard_command_list_filters_socket_mounting_containers() {
    if not_run_in_vm(
        "needs a policy of its own (a command list) and the guard's container listener, which is inside the VM",
    ) {
        return;
    }
    let Some(e) = engine(
        "cmds",
        &["eci-test/allowed:1"],
        socket_policy(&["eci-test/allowed:1"], false),
    ) else {
        return;
    };
    let cli = e.share_docker_cli().unwrap();
    let mounts = [
        "-v".to_string(),
        format!("{}:/var/run/docker.sock", e.guard_sock.display()),
        "-v".to_string(),
        format!("{}:/cli:ro", cli.display()),
    ];
    let run_inside = |script: &str| {
        let mut args: Vec<&str> = vec!["run", "--rm"];
        args.extend(mounts.iter().map(String::as_str));
        args.extend(["eci-test/allowed:1", "sh", "-c", script]);
        e.docker(&args)
    };
    let out = run_inside("/cli/docker volume ls 2>&1; echo rc=$?");
    let t = text(&out);
    assert!(
        t.contains("docker command \"/v1.41/volumes\" is blocked") && t.contains("rc=1"),
        "{t}"
    );
    let t = text(&run_inside(
        "/cli/docker push eci-test/allowed:1 2>&1; echo rc=$?",
    ));
    assert!(
        t.contains("/push\" is blocked") && t.contains("rc=1"),
        "{t}"
    );
    // Not listed: passes. A container it starts still runs under eci (B7, A1).
    let t = ok(run_inside(
        "/cli/docker ps -q >/dev/null && /cli/docker run --name nested --runtime=runc eci-test/allowed:1 echo nested-ok",
    ));
    assert_eq!(t, "nested-ok");
    assert_eq!(runtime_of(&e, "nested"), "eci");

    // Raw API: which socket a request arrives on decides, not who sends it.
    let a = e.curl(&e.container_sock, "GET", "/v1.41/volumes", None);
    assert_eq!(
        (a.status, a.message().as_str()),
        (403, "docker command \"/v1.41/volumes\" is blocked")
    );
    assert_eq!(
        e.curl(&e.guard_sock, "GET", "/v1.41/volumes", None).status,
        200
    );
    assert_eq!(
        e.curl(&e.container_sock, "GET", "/v1.41/containers/json", None)
            .status,
        200
    );
    assert_eq!(
        e.curl(&e.container_sock, "HEAD", "/_ping", None).status,
        200
    );
    let line = e
        .wait_audit(|v| v["listener"] == "container" && v["rules"] == json!(["B6"]))
        .expect("a B6 line");
    assert_eq!(line["decision"], "refuse");
}

/// SPEC D1: builds with the host network are refused; other builds pass.
#[test]
fn guard_refuses_host_network_builds() {
    let Some(e) = engine("build", &[IMG], plain) else {
        return;
    };
    let ctx = e.dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {IMG}\nRUN echo built > /b\n"),
    )
    .unwrap();
    let classic = [("DOCKER_BUILDKIT", "0")];
    refused(
        e.docker_env(
            &[
                "build",
                "--network=host",
                "-q",
                "-t",
                "x:1",
                ctx.to_str().unwrap(),
            ],
            &classic,
        ),
        "docker build --network=host is not allowed",
    );
    ok(e.docker_env(
        &["build", "-q", "-t", "built:1", ctx.to_str().unwrap()],
        &classic,
    ));
    assert_eq!(
        ok(e.docker(&["run", "--rm", "built:1", "cat", "/b"])),
        "built"
    );
    let a = e.curl(
        &e.guard_sock,
        "POST",
        "/v1.41/build?t=y&networkmode=host",
        None,
    );
    assert_eq!(a.status, 403);
    assert!(a.message().contains("--network=host"), "{}", a.body);
    if e.on_this_machine() {
        assert!(e.wait_audit(|v| v["rules"] == json!(["D1"])).is_some());
    }
}

/// Streams and hijacked connections as docker and compose use them: attach, exec with stdin,
/// logs -f, events, stats, cp (archive up and down), export.
#[test]
fn guard_passes_streams_and_upgrades() {
    let Some(e) = engine("streams", &[IMG], plain) else {
        return;
    };
    // attach with stdin (run -i) and a tty.
    assert_eq!(
        String::from_utf8_lossy(
            &e.docker_stdin(&["run", "--rm", "-i", IMG, "cat"], b"through-stdin\n")
                .stdout
        )
        .trim(),
        "through-stdin"
    );
    ok(e.docker(&[
        "run",
        "-d",
        "--name",
        "svc",
        IMG,
        "sh",
        "-c",
        "i=0; while true; do echo line$i; i=$((i+1)); sleep 0.1; done",
    ]));
    // exec: stdin, exit code, tty.
    assert_eq!(
        String::from_utf8_lossy(
            &e.docker_stdin(&["exec", "-i", "svc", "cat"], b"exec-stdin\n")
                .stdout
        )
        .trim(),
        "exec-stdin"
    );
    let code = e.docker(&["exec", "svc", "sh", "-c", "exit 7"]);
    assert_eq!(code.status.code(), Some(7));
    assert_eq!(ok(e.docker(&["exec", "-t", "svc", "echo", "tty"])), "tty");

    // logs -f streams while the container writes.
    let mut follow = Command::new("docker")
        .env("DOCKER_HOST", format!("unix://{}", e.guard_sock.display()))
        .args(["logs", "-f", "svc"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let first: Vec<String> = (0..20).map(|_| lines.next().unwrap().unwrap()).collect();
    assert_eq!(first[0], "line0");
    assert_eq!(first[19], "line19");
    let _ = follow.kill();
    let _ = follow.wait();

    // events: a stream that stays open; see the pause/unpause as they happen.
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let mut events = Command::new("docker")
        .env("DOCKER_HOST", format!("unix://{}", e.guard_sock.display()))
        .args([
            "events",
            "--since",
            &since,
            "--filter",
            "container=svc",
            "--filter",
            "event=pause",
        ])
        .args(["--filter", "event=unpause", "--format", "{{.Action}}"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    ok(e.docker(&["pause", "svc"]));
    ok(e.docker(&["unpause", "svc"]));
    let mut ev = BufReader::new(events.stdout.take().unwrap()).lines();
    assert_eq!(ev.next().unwrap().unwrap(), "pause");
    assert_eq!(ev.next().unwrap().unwrap(), "unpause");
    let _ = events.kill();
    let _ = events.wait();

    assert!(
        ok(e.docker(&["stats", "--no-stream", "--format", "{{.Name}}", "svc"])).contains("svc")
    );
    // cp both ways (tar bodies streamed through), export.
    let src = e.dir.path().join("cp-in");
    std::fs::write(&src, "copied").unwrap();
    ok(e.docker(&["cp", src.to_str().unwrap(), "svc:/cp-in"]));
    assert_eq!(ok(e.docker(&["exec", "svc", "cat", "/cp-in"])), "copied");
    let back = e.dir.path().join("cp-out");
    ok(e.docker(&["cp", "svc:/cp-in", back.to_str().unwrap()]));
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "copied");
    let export = e.docker(&["export", "svc"]);
    assert!(
        export.status.success() && export.stdout.len() > 1_000_000,
        "export of {} bytes",
        export.stdout.len()
    );

    // Raw chunked logs stream: lines arrive while the request is still open.
    let (status, streamed) = http_stream(
        &e.guard_sock,
        "/v1.41/containers/svc/logs?stdout=1&follow=1&tail=3",
        Duration::from_secs(2),
    );
    assert_eq!(status, 200);
    let streamed = String::from_utf8_lossy(&streamed);
    assert!(
        streamed.matches("line").count() >= 5,
        "streamed: {streamed:?}"
    );
}

fn raw_get(sock: &std::path::Path, path: &str) -> String {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Bad and oversized requests get a 4xx in Docker's shape, never a crash; 100 concurrent
/// clients are served; every line of the audit log is one JSON object (SPEC S5).
#[test]
fn guard_answers_bad_requests_and_serves_100_clients() {
    let Some(e) = engine("load", &[IMG], plain) else {
        return;
    };
    let a = e.curl(
        &e.guard_sock,
        "POST",
        "/v1.41/containers/create",
        Some("{\"Image\": "),
    );
    assert_eq!(a.status, 400);
    assert!(a.message().starts_with("malformed JSON"), "{}", a.body);
    let a = e.curl(&e.guard_sock, "POST", "/v1.41/volumes/create", Some("[1,2"));
    assert_eq!(a.status, 400);
    let big = format!("{{\"Image\": \"{}\"}}", "a".repeat(17 << 20));
    let a = e.curl(
        &e.guard_sock,
        "POST",
        "/v1.41/containers/create",
        Some(&big),
    );
    assert_eq!(a.status, 413, "{}", a.body);
    assert!(a.message().contains("larger than"), "{}", a.body);
    assert!(raw_get(&e.guard_sock, "/v1.41/containers%zz/json").starts_with("HTTP/1.1 400"));
    // Malformed HTTP: hyper's answers, and the guard keeps serving.
    let raw = |bytes: Vec<u8>| {
        let mut s = UnixStream::connect(&e.guard_sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(&bytes);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.lines().next().unwrap_or_default().to_string()
    };
    let many_headers: String = (0..300).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_eq!(
        raw(format!("GET /_ping HTTP/1.1\r\nHost: d\r\n{many_headers}\r\n").into_bytes()),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    assert_eq!(
        raw(format!("GET /{} HTTP/1.1\r\nHost: d\r\n\r\n", "a".repeat(200_000)).into_bytes()),
        "HTTP/1.1 414 URI Too Long"
    );
    for bad in [
        "POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: 99999999999999999999\r\n\r\n",
        "POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ] {
        assert_eq!(raw(bad.as_bytes().to_vec()), "HTTP/1.1 400 Bad Request", "{bad:?}");
    }
    let mut s = UnixStream::connect(&e.guard_sock).unwrap();
    s.write_all(b"NOT HTTP AT ALL\r\n\r\n").unwrap();
    let mut junk = String::new();
    let _ = s.read_to_string(&mut junk);
    assert!(junk.is_empty() || junk.starts_with("HTTP/1.1 4"), "{junk}");
    let form = http(
        &e.guard_sock,
        "POST",
        "/v1.41/build",
        Some("application/x-www-form-urlencoded"),
        b"networkmode=host".to_vec(),
    );
    assert_eq!(form.status, 400, "{}", form.body);

    // 100 clients at once, each several requests on its own connection.
    ok(e.docker(&["run", "-d", "--name", "busy", IMG, "sleep", "60"]));
    let started = Instant::now();
    let handles: Vec<_> = (0..100)
        .map(|i| {
            let sock = e.guard_sock.clone();
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&sock).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                let paths = ["/_ping", "/v1.41/containers/json", "/v1.41/version", "/v1.41/containers/busy/json"];
                for (n, p) in paths.iter().enumerate() {
                    let close = if n + 1 == paths.len() { "close" } else { "keep-alive" };
                    write!(s, "GET {p} HTTP/1.1\r\nHost: docker\r\nX-Client: {i}\r\nConnection: {close}\r\n\r\n").unwrap();
                }
                let mut out = String::new();
                s.read_to_string(&mut out).unwrap();
                out.matches("HTTP/1.1 200 OK").count()
            })
        })
        .collect();
    let served: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(served, 400, "every request of every client answered 200");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(
        ok(e.docker(&["inspect", "-f", "{{.State.Running}}", "busy"])),
        "true"
    );

    if !e.on_this_machine() {
        return; // the audit log is in the VM
    }
    // S5: every decision is one JSON line with its outcome.
    let lines = e.audit();
    let requests: Vec<&Value> = lines.iter().filter(|v| v["event"] == "request").collect();
    assert!(requests.len() >= 400, "{} request lines", requests.len());
    for v in &requests {
        assert!(
            ["allow", "rewrite", "refuse"].contains(&v["decision"].as_str().unwrap()),
            "{v}"
        );
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        assert!(
            v["status"].is_u64() && v["method"].is_string() && v["path"].is_string(),
            "{v}"
        );
    }
    assert!(requests
        .iter()
        .any(|v| v["status"] == 413 && v["decision"] == "refuse"));
}

/// SPEC D2 (and D1 for buildx): BuildKit Solve calls asking for network.host or
/// security.insecure are refused inside the h2c control connection; other calls go through.
#[test]
fn guard_refuses_buildkit_entitlements() {
    use bytes::Bytes;
    use eci_guard::grpc::encode_solve_request;
    use http_body_util::{BodyExt, Empty, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let Some(e) = engine("grpc", &[IMG], plain) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sock = tokio::net::UnixStream::connect(&e.guard_sock)
            .await
            .unwrap();
        let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(sock))
            .await
            .unwrap();
        tokio::spawn(conn.with_upgrades());
        let upgrade = hyper::Request::post("/grpc")
            .header("Host", "docker")
            .header("Connection", "Upgrade")
            .header("Upgrade", "h2c")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = h1.send_request(upgrade).await.unwrap();
        assert_eq!(resp.status(), 101);
        let io = hyper::upgrade::on(resp).await.unwrap();
        let (mut h2, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        let call = |method: &str, body: Vec<u8>| {
            hyper::Request::post(format!("http://docker/moby.buildkit.v1.Control/{method}"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(Full::new(Bytes::from(body)))
                .unwrap()
        };
        for (entitlements, attrs, word) in [
            (vec!["network.host"], vec![], "network.host"),
            (vec!["security.insecure"], vec![], "security.insecure"),
            (vec![], vec![("force-network-mode", "host")], "network.host"),
        ] {
            let resp = h2
                .send_request(call(
                    "Solve",
                    encode_solve_request("ref", &entitlements, &attrs),
                ))
                .await
                .unwrap();
            assert_eq!(
                resp.headers()["grpc-status"],
                "7",
                "{entitlements:?} {attrs:?}"
            );
            let msg = resp.headers()["grpc-message"].to_str().unwrap().to_string();
            assert!(
                msg.contains(word) && msg.contains("is not allowed"),
                "{msg}"
            );
        }
        // A call the guard does not inspect reaches dockerd's BuildKit and comes back.
        let resp = h2
            .send_request(call("ListWorkers", vec![0, 0, 0, 0, 0]))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let collected = resp.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let data = collected.to_bytes();
        assert_eq!(
            trailers.get("grpc-status").map(|v| v.to_str().unwrap()),
            Some("0"),
            "{trailers:?}"
        );
        assert!(data.len() > 5, "ListWorkers answered {} bytes", data.len());
    });
    if !e.on_this_machine() {
        return; // the audit log is in the VM
    }
    let line = e
        .wait_audit(|v| has_rule(v, "D2") && v["decision"] == "refuse")
        .expect("a D2 refusal in the audit log");
    assert_eq!(line["path"], "/grpc/moby.buildkit.v1.Control/Solve");
}
