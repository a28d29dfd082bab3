//! Unit tests of the request policy: no engine, facts filled by hand.

use eci_vm_config::{CommandListType, CommandRule, ImageRule};
use serde_json::{json, Value};

use super::*;
use crate::facts::{ContainerInfo, ContainerMount, Facts, ImageInfo, VolumeInfo};
use crate::images::{first_seen_pins, Pins};
use crate::paths::{parse_query, ApiPath};
use crate::routes::classify;

const SHARE: &str = "/mnt/host/share";
const CONTAINER_SOCK: &str = "/run/eci/container.sock";

fn policy() -> Policy {
    Policy {
        allowed_prefixes: vec![SHARE.to_string()],
        socket_images: vec![ImageRule::parse("docker:cli").unwrap()],
        allow_derived: false,
        command_list_type: CommandListType::Deny,
        commands: vec![CommandRule::parse("push").unwrap()],
        runtime: "eci".into(),
        binds: eci_policy::Policy {
            allowed_bind_prefixes: vec![SHARE.to_string()],
            ..eci_policy::Policy::default()
        },
    }
}

fn sockets() -> Sockets {
    Sockets {
        engine: vec![
            "/var/run/docker.sock".into(),
            "/run/docker.sock".into(),
            "/run/guard/user.sock".into(),
        ],
        container: Some(CONTAINER_SOCK.into()),
    }
}

fn cli_image() -> ImageInfo {
    ImageInfo {
        id: "sha256:cli".into(),
        repo_tags: vec!["docker:cli".into()],
        repo_digests: vec![],
        parent: String::new(),
        layers: vec!["sha256:l1".into()],
    }
}

fn facts() -> Facts {
    let mut f = Facts::default();
    f.add_image("docker:cli", cli_image());
    f.add_image(
        "evil:1",
        ImageInfo {
            id: "sha256:evil".into(),
            repo_tags: vec!["evil:1".into()],
            layers: vec!["sha256:l9".into()],
            ..ImageInfo::default()
        },
    );
    f
}

fn pins() -> Pins {
    let mut p = Pins::default();
    p.apply(&first_seen_pins(&policy(), &p, &[cli_image()]));
    p
}

struct Case {
    method: &'static str,
    path: String,
    role: Role,
    body: Option<Value>,
    content_type: Option<&'static str>,
}

fn case(method: &'static str, path: &str, body: Option<Value>) -> Case {
    Case {
        method,
        path: path.to_string(),
        role: Role::User,
        body,
        content_type: Some("application/json"),
    }
}

fn run_with(c: &Case, p: &Policy, s: &Sockets, f: &Facts) -> Verdict {
    let (path, q) = c.path.split_once('?').unwrap_or((&c.path, ""));
    let api = ApiPath::parse(path).unwrap();
    let query = parse_query(q);
    let call = classify(c.method, &api.segments(), &query);
    let req = Request {
        method: c.method,
        api: &api,
        query: &query,
        call: &call,
        content_type: c.content_type,
        role: c.role,
        body: if needs_body(&call) {
            c.body.as_ref()
        } else {
            None
        },
    };
    decide(&req, p, s, &pins(), f)
}

fn run(c: &Case) -> Verdict {
    run_with(c, &policy(), &sockets(), &facts())
}

fn create(body: Value) -> Verdict {
    run(&case("POST", "/v1.41/containers/create?name=x", Some(body)))
}

fn refusal(v: &Verdict) -> (u16, String) {
    match &v.decision {
        Decision::Refuse { status, message } => (*status, message.clone()),
        d => panic!("expected a refusal, got {d:?} ({:?})", v.notes),
    }
}

fn rewritten(v: &Verdict) -> Value {
    match &v.decision {
        Decision::Rewrite(b) => b.clone(),
        d => panic!("expected a rewrite, got {d:?}"),
    }
}

// ---- A3: runtime ----

#[test]
fn runtime_is_rewritten_to_eci_wherever_dockerd_reads_it() {
    let v = create(json!({"Image": "alpine", "HostConfig": {"Runtime": "runc"}}));
    assert_eq!(rewritten(&v)["HostConfig"]["Runtime"], "eci");
    assert!(v.rules.contains(&"A3"));
    assert!(
        v.notes.iter().any(|n| n.contains("\"runc\" -> \"eci\"")),
        "{:?}",
        v.notes
    );

    let v = create(json!({"Image": "alpine", "HostConfig": {}}));
    assert_eq!(rewritten(&v)["HostConfig"]["Runtime"], "eci");
    // No HostConfig member: dockerd reads the embedded one at the top level.
    let v = create(json!({"Image": "alpine", "Runtime": "runc"}));
    let b = rewritten(&v);
    assert_eq!(b["Runtime"], "eci");
    assert!(b.get("HostConfig").is_none());
    let v = create(json!({"Image": "alpine", "HostConfig": null}));
    assert_eq!(rewritten(&v)["Runtime"], "eci");
    // A top-level Runtime next to a HostConfig member is set too.
    let v = create(json!({"Image": "a", "Runtime": "runc", "HostConfig": {"Runtime": "runc"}}));
    let b = rewritten(&v);
    assert_eq!(
        (b["Runtime"].as_str(), b["HostConfig"]["Runtime"].as_str()),
        (Some("eci"), Some("eci"))
    );

    let v = create(json!({"Image": "alpine", "HostConfig": {"Runtime": "eci"}}));
    assert_eq!(v.decision, Decision::Allow);
    // Everything else in the body survives the rewrite.
    let body = json!({"Image": "alpine", "Cmd": ["sh"], "Labels": {"a": "b"},
                      "HostConfig": {"Memory": 5, "Runtime": "sysbox-runc"}});
    let b = rewritten(&create(body.clone()));
    let mut expected = body;
    expected["HostConfig"]["Runtime"] = json!("eci");
    assert_eq!(b, expected);
}

#[test]
fn empty_and_non_object_create_bodies_are_left_to_dockerd() {
    assert_eq!(create(Value::Null).decision, Decision::Allow);
    assert_eq!(create(json!([1])).decision, Decision::Allow);
}

// ---- A6: namespaces ----

#[test]
fn host_namespaces_are_refused_naming_the_namespace() {
    for (field, ns) in [
        ("PidMode", "pid"),
        ("IpcMode", "ipc"),
        ("UTSMode", "uts"),
        ("NetworkMode", "network"),
    ] {
        let (status, msg) = refusal(&create(
            json!({"Image": "a", "HostConfig": {field: "host"}}),
        ));
        assert_eq!(status, 403);
        assert!(
            msg.contains(&format!("{ns} namespace (--{ns}=host)")),
            "{msg}"
        );
        // The same field at the top level (no HostConfig member) is read by dockerd too.
        let (_, msg) = refusal(&create(json!({"Image": "a", field: "host"})));
        assert!(msg.contains(ns), "{msg}");
    }
    for ok in ["container:abc", "bridge", "none", "default", ""] {
        let v = create(json!({"Image": "a", "HostConfig": {"PidMode": ok, "NetworkMode": ok}}));
        assert!(
            !matches!(v.decision, Decision::Refuse { .. }),
            "{ok}: {v:?}"
        );
    }
}

#[test]
fn host_network_by_id_or_endpoint_is_refused() {
    let mut f = facts();
    f.networks.insert("0123abcd".into(), "host".into());
    f.networks.insert("mynet".into(), "bridge".into());
    let c = case(
        "POST",
        "/containers/create",
        Some(json!({"Image": "a", "HostConfig": {"NetworkMode": "0123abcd"}})),
    );
    let (_, msg) = refusal(&run_with(&c, &policy(), &sockets(), &f));
    assert!(msg.contains("network namespace"), "{msg}");
    let c = case(
        "POST",
        "/containers/create",
        Some(json!({"Image": "a", "NetworkingConfig": {"EndpointsConfig": {"host": {}}}})),
    );
    assert_eq!(refusal(&run_with(&c, &policy(), &sockets(), &f)).0, 403);
    let c = case(
        "POST",
        "/containers/create",
        Some(json!({"Image": "a", "HostConfig": {"NetworkMode": "mynet"},
        "NetworkingConfig": {"EndpointsConfig": {"mynet": {}}}})),
    );
    assert!(matches!(
        run_with(&c, &policy(), &sockets(), &f).decision,
        Decision::Rewrite(_)
    ));
}

#[test]
fn userns_host_is_ignored_and_cgroupns_host_made_private() {
    let v =
        create(json!({"Image": "a", "HostConfig": {"UsernsMode": "host", "CgroupnsMode": "host"}}));
    let b = rewritten(&v);
    assert_eq!(b["HostConfig"]["UsernsMode"], "");
    assert_eq!(b["HostConfig"]["CgroupnsMode"], "private");
    assert!(v.rules.contains(&"A6") && v.rules.contains(&"P5"));
}

// ---- B1, B2: bind mounts and volumes ----

#[test]
fn binds_outside_the_shared_folders_are_refused_with_the_spec_message() {
    for spec in [
        "/etc:/x",
        "/etc:/x:ro",
        "/:/host",
        "/mnt/hostx:/x",
        "/mnt/host/share/../../../etc:/x",
    ] {
        let (status, msg) = refusal(&create(
            json!({"Image": "a", "HostConfig": {"Binds": [spec]}}),
        ));
        assert_eq!(status, 403);
        let src = spec.split(':').next().unwrap();
        assert_eq!(
            msg,
            format!("can't mount {src} because it's configured as a restricted host mount")
        );
    }
    let (_, msg) = refusal(&create(
        json!({"Image": "a", "HostConfig": {"Mounts": [{"Type": "bind", "Source": "/var/lib/docker", "Target": "/x"}]}}),
    ));
    assert_eq!(
        msg,
        "can't mount /var/lib/docker because it's configured as a restricted host mount"
    );
    // Top-level Binds (no HostConfig member) count too.
    assert_eq!(
        refusal(&create(json!({"Image": "a", "Binds": ["/etc:/x"]}))).0,
        403
    );
}

#[test]
fn engine_sockets_other_than_the_guards_are_restricted() {
    for src in ["/run/eci/dockerd.sock", "/run/containerd/containerd.sock"] {
        let (_, msg) = refusal(&create(
            json!({"Image": "docker:cli", "HostConfig": {"Binds": [format!("{src}:/s")]}}),
        ));
        assert_eq!(
            msg,
            format!("can't mount {src} because it's configured as a restricted host mount")
        );
    }
    // Engine-internal sources the runtime accepts pass the guard too (eci-policy's rule).
    let v = create(
        json!({"Image": "a", "HostConfig": {"Binds": ["/var/lib/docker/volumes/v/_data:/d"]}}),
    );
    assert!(matches!(v.decision, Decision::Rewrite(_)), "{v:?}");
}

#[test]
fn binds_inside_shared_folders_and_plain_volumes_pass() {
    let v = create(json!({"Image": "a", "HostConfig": {
        "Binds": ["/mnt/host/share/src:/src", "/mnt/host/share:/all:ro", "named:/data", "/anonymous"],
        "Mounts": [{"Type": "bind", "Source": "/mnt/host/share/x", "Target": "/y"},
                   {"Type": "tmpfs", "Target": "/t"}, {"Type": "volume", "Target": "/v"}]}}));
    assert!(matches!(v.decision, Decision::Rewrite(_)), "{v:?}");
    assert!(v.rules.contains(&"B1"));
}

#[test]
fn symlinks_out_of_a_shared_folder_are_judged_by_their_target() {
    let mut f = facts();
    f.real_paths
        .insert("/mnt/host/share/link".into(), "/etc".into());
    let c = case(
        "POST",
        "/containers/create",
        Some(json!({"Image": "a", "HostConfig": {"Binds": ["/mnt/host/share/link:/x"]}})),
    );
    let (_, msg) = refusal(&run_with(&c, &policy(), &sockets(), &f));
    assert_eq!(
        msg,
        "can't mount /mnt/host/share/link because it's configured as a restricted host mount"
    );
    assert_eq!(
        paths_to_resolve(c.body.as_ref()),
        vec!["/mnt/host/share/link".to_string()]
    );
}

#[test]
fn volumes_sourced_from_restricted_paths_are_refused() {
    let mut f = facts();
    f.volumes.insert(
        "etcvol".into(),
        VolumeInfo {
            driver: "local".into(),
            options: [("type", "none"), ("o", "bind"), ("device", "/etc")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        },
    );
    f.volumes.insert(
        "nfsvol".into(),
        VolumeInfo {
            driver: "local".into(),
            options: [
                ("type", "nfs"),
                ("o", "addr=10.0.0.1"),
                ("device", ":/export"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        },
    );
    let run_f = |body: Value| {
        run_with(
            &case("POST", "/containers/create", Some(body)),
            &policy(),
            &sockets(),
            &f,
        )
    };
    let (_, msg) = refusal(&run_f(
        json!({"Image": "a", "HostConfig": {"Binds": ["etcvol:/x"]}}),
    ));
    assert_eq!(
        msg,
        "can't mount /etc because it's configured as a restricted host mount"
    );
    assert_eq!(refusal(&run_f(json!({"Image": "a", "HostConfig": {"Mounts": [{"Type": "volume", "Source": "etcvol", "Target": "/x"}]}}))).0, 403);
    assert!(!matches!(
        run_f(json!({"Image": "a", "HostConfig": {"Binds": ["nfsvol:/x"]}})).decision,
        Decision::Refuse { .. }
    ));
    // A new volume with bind options in the request.
    let (_, msg) = refusal(&run_f(
        json!({"Image": "a", "HostConfig": {"Mounts": [{"Type": "volume", "Source": "new", "Target": "/x",
        "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": {"type": "none", "o": "bind", "device": "/root"}}}}]}}),
    ));
    assert!(msg.starts_with("can't mount /root "), "{msg}");
    // A block device is a VM path too.
    assert_eq!(
        refusal(&run_f(
            json!({"Image": "a", "HostConfig": {"Mounts": [{"Type": "volume", "Target": "/x",
        "VolumeOptions": {"DriverConfig": {"Options": {"type": "ext4", "device": "/dev/vda"}}}}]}})
        ))
        .0,
        403
    );
}

#[test]
fn an_existing_volume_pointing_through_a_symlink_is_judged_by_its_target() {
    let mut f = facts();
    f.volumes.insert(
        "sneaky".into(),
        VolumeInfo {
            driver: "local".into(),
            options: [
                ("type", "none"),
                ("o", "bind"),
                ("device", "/mnt/host/share/link"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        },
    );
    assert_eq!(
        volume_device(&f.volumes["sneaky"]).as_deref(),
        Some("/mnt/host/share/link")
    );
    let c = case(
        "POST",
        "/containers/create",
        Some(json!({"Image": "a", "HostConfig": {"Binds": ["sneaky:/x"]}})),
    );
    assert!(!matches!(
        run_with(&c, &policy(), &sockets(), &f).decision,
        Decision::Refuse { .. }
    ));
    f.real_paths
        .insert("/mnt/host/share/link".into(), "/etc".into());
    let (_, msg) = refusal(&run_with(&c, &policy(), &sockets(), &f));
    assert_eq!(
        msg,
        "can't mount /mnt/host/share/link because it's configured as a restricted host mount"
    );
}

#[test]
fn volume_create_checks_the_device() {
    let vc = |opts: Value| {
        run(&case(
            "POST",
            "/v1.41/volumes/create",
            Some(json!({"Name": "v", "Driver": "local", "DriverOpts": opts})),
        ))
    };
    let (status, msg) = refusal(&vc(json!({"type": "none", "o": "bind", "device": "/etc"})));
    assert_eq!(
        (status, msg.as_str()),
        (
            403,
            "can't mount /etc because it's configured as a restricted host mount"
        )
    );
    assert_eq!(
        vc(json!({"type": "none", "o": "bind", "device": "/mnt/host/share/data"})).decision,
        Decision::Allow
    );
    assert_eq!(
        vc(json!({"type": "nfs", "device": ":/x"})).decision,
        Decision::Allow
    );
    assert_eq!(vc(json!({})).decision, Decision::Allow);
    let v = run(&case(
        "POST",
        "/volumes/create",
        Some(json!({"Name": "v", "driveropts": {"device": "/etc"}})),
    ));
    assert_eq!(refusal(&v).0, 400);
}

fn volume(opts: &[(&str, &str)]) -> VolumeInfo {
    VolumeInfo {
        driver: "local".into(),
        options: opts
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// Issue 9's attack: dockerd resolves a relative device against its working directory (`/` in
/// the VM), and other types mount VM filesystems; only the local driver with tmpfs, a bind of a
/// share, nfs or cifs passes, with a message naming the volume and the option.
#[test]
fn volume_create_refuses_relative_devices_other_types_and_drivers() {
    let vc = |driver: &str, opts: Value| {
        run(&case(
            "POST",
            "/v1.41/volumes/create",
            Some(json!({"Name": "v", "Driver": driver, "DriverOpts": opts})),
        ))
    };
    let (status, msg) = refusal(&vc(
        "local",
        json!({"type": "none", "o": "bind", "device": "etc"}),
    ));
    assert_eq!(status, 403);
    assert!(
        msg.contains("volume \"v\"") && msg.contains("device=etc") && msg.contains("relative"),
        "{msg}"
    );
    let (_, msg) = refusal(&vc(
        "",
        json!({"type": "overlay", "device": "overlay",
               "o": "lowerdir=/etc,upperdir=/tmp/u,workdir=/tmp/w"}),
    ));
    assert!(msg.contains("type=overlay"), "{msg}");
    for ty in [
        "proc", "sysfs", "cgroup2", "bpf", "debugfs", "devpts", "ext4",
    ] {
        let v = vc("local", json!({"type": ty, "device": "x"}));
        assert!(refusal(&v).1.contains(&format!("type={ty}")), "{ty}");
        assert_eq!(v.rules, vec!["B2"]);
    }
    assert!(refusal(&vc("rexray/ebs", json!({})))
        .1
        .contains("driver \"rexray/ebs\""));
    assert!(refusal(&vc(
        "local",
        json!({"type": "tmpfs", "o": "size=1m", "x": "1"})
    ))
    .1
    .contains("x=1"));
    assert_eq!(refusal(&vc("local", json!({"type": 1}))).0, 400);
    assert_eq!(
        vc(
            "local",
            json!({"type": "tmpfs", "device": "tmpfs", "o": "size=64m,uid=1000,noexec"})
        )
        .decision,
        Decision::Allow
    );
    assert_eq!(
        vc(
            "",
            json!({"type": "cifs", "device": "//srv/share", "o": "username=u"})
        )
        .decision,
        Decision::Allow
    );
}

/// The same options arriving with a container: an anonymous or new volume in `Mounts`.
#[test]
fn volume_options_in_a_create_request_are_judged_like_volume_create() {
    for opts in [
        json!({"type": "none", "o": "bind", "device": "etc"}),
        json!({"type": "overlay", "o": "lowerdir=/etc"}),
    ] {
        for source in ["", "new"] {
            let v = create(
                json!({"Image": "a", "HostConfig": {"Mounts": [{"Type": "volume",
                "Source": source, "Target": "/m",
                "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": opts}}}]}}),
            );
            assert!(refusal(&v)
                .1
                .contains("is not allowed under Enhanced Container Isolation"));
        }
    }
    let v = create(
        json!({"Image": "a", "HostConfig": {"Mounts": [{"Type": "volume",
        "Source": "n", "Target": "/m", "VolumeOptions": {"DriverConfig": {"Name": "convoy"}}}]}}),
    );
    assert!(refusal(&v).1.contains("driver \"convoy\""));
}

fn with_container(f: &mut Facts, id: &str, mounts: &[(&str, &str, &str)]) {
    f.containers.insert(
        id.into(),
        ContainerInfo {
            name: id.into(),
            runtime: "eci".into(),
            mounts: mounts
                .iter()
                .map(|(kind, name, source)| ContainerMount {
                    kind: kind.to_string(),
                    name: name.to_string(),
                    source: source.to_string(),
                    driver: if *kind == "volume" {
                        "local".into()
                    } else {
                        String::new()
                    },
                })
                .collect(),
        },
    );
}

/// dockerd mounts volumes at every start with their current options: a volume made behind the
/// guard's back (dockerd directly, an older policy) is refused when its container starts.
#[test]
fn starting_a_container_rechecks_its_volumes() {
    let mut f = facts();
    f.volumes.insert(
        "rel".into(),
        volume(&[("type", "none"), ("o", "bind"), ("device", "etc")]),
    );
    f.volumes.insert("fine".into(), volume(&[]));
    with_container(
        &mut f,
        "bad",
        &[("volume", "rel", "/var/lib/docker/volumes/rel/_data")],
    );
    with_container(
        &mut f,
        "good",
        &[("volume", "fine", "/var/lib/docker/volumes/fine/_data")],
    );
    for path in ["/v1.41/containers/bad/start", "/containers/bad/restart"] {
        let v = run_with(&case("POST", path, None), &policy(), &sockets(), &f);
        let (status, msg) = refusal(&v);
        assert_eq!(status, 403, "{path}");
        assert!(
            msg.contains("volume \"rel\"") && msg.contains("device=etc"),
            "{msg}"
        );
    }
    let v = run_with(
        &case("POST", "/containers/good/start", None),
        &policy(),
        &sockets(),
        &f,
    );
    assert_eq!(v.decision, Decision::Allow);
    // The same volume named at create is refused there too.
    let v = run_with(
        &case(
            "POST",
            "/containers/create",
            Some(json!({"Image": "a", "HostConfig": {"Binds": ["rel:/m"]}})),
        ),
        &policy(),
        &sockets(),
        &f,
    );
    assert!(refusal(&v).1.contains("device=etc"));
}

/// `--volumes-from` hands over the source container's mounts: the same rules apply to them.
#[test]
fn volumes_from_is_judged_by_the_source_containers_mounts() {
    let mut f = facts();
    f.volumes.insert(
        "etcvol".into(),
        volume(&[("type", "none"), ("o", "bind"), ("device", "/etc")]),
    );
    f.volumes.insert("fine".into(), volume(&[]));
    with_container(&mut f, "binder", &[("bind", "", "/etc")]);
    with_container(&mut f, "voler", &[("volume", "etcvol", "/x/_data")]);
    with_container(&mut f, "socketer", &[("bind", "", CONTAINER_SOCK)]);
    with_container(
        &mut f,
        "clean",
        &[
            ("volume", "fine", "/x/_data"),
            ("bind", "", "/mnt/host/share/a"),
        ],
    );
    let run_f = |from: &str, image: &str| {
        run_with(
            &case(
                "POST",
                "/containers/create",
                Some(json!({"Image": image, "HostConfig": {"VolumesFrom": [from]}})),
            ),
            &policy(),
            &sockets(),
            &f,
        )
    };
    assert_eq!(
        refusal(&run_f("binder:ro", "a")).1,
        "can't mount /etc because it's configured as a restricted host mount"
    );
    assert_eq!(
        refusal(&run_f("voler", "a")).1,
        "can't mount /etc because it's configured as a restricted host mount"
    );
    // The engine socket comes only with an image allowed to mount it (SPEC B4).
    assert_eq!(refusal(&run_f("socketer", "evil:1")).0, 403);
    assert!(!matches!(
        run_f("socketer", "docker:cli").decision,
        Decision::Refuse { .. }
    ));
    assert!(!matches!(
        run_f("clean:rw", "a").decision,
        Decision::Refuse { .. }
    ));
    // The facts the decision needs are asked for.
    let c = case(
        "POST",
        "/containers/create",
        Some(json!({"Image": "a", "HostConfig": {"VolumesFrom": ["binder:ro"]}})),
    );
    let (path, _) = (c.path.clone(), ());
    let api = ApiPath::parse(&path).unwrap();
    let call = classify("POST", &api.segments(), &[]);
    let req = Request {
        method: "POST",
        api: &api,
        query: &[],
        call: &call,
        content_type: Some("application/json"),
        role: Role::User,
        body: c.body.as_ref(),
    };
    let q = facts_needed(&req, &policy(), &sockets(), &Facts::default());
    assert!(q.containers.contains("binder"), "{q:?}");
    assert!(q.images.contains("a"), "{q:?}");
}

// ---- B4, B5: engine socket ----

#[test]
fn socket_mounts_of_allowed_images_are_pointed_at_the_container_socket() {
    for src in [
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/run/guard/user.sock",
        "/var/run/../run/docker.sock",
        CONTAINER_SOCK,
    ] {
        let v = create(
            json!({"Image": "docker:cli", "HostConfig": {"Binds": [format!("{src}:/var/run/docker.sock:ro")]}}),
        );
        let b = rewritten(&v);
        assert_eq!(
            b["HostConfig"]["Binds"][0],
            format!("{CONTAINER_SOCK}:/var/run/docker.sock:ro"),
            "{src}"
        );
        assert!(v.rules.contains(&"B4"), "{:?}", v.rules);
    }
    let v = create(
        json!({"Image": "docker:cli", "HostConfig": {"Mounts": [{"Type": "bind", "Source": "/var/run/docker.sock", "Target": "/s"}]}}),
    );
    assert_eq!(
        rewritten(&v)["HostConfig"]["Mounts"][0]["Source"],
        CONTAINER_SOCK
    );
    // By id as well as by name: the check is on the image, not on how it was named.
    let v =
        create(json!({"Image": "sha256:cli", "HostConfig": {"Binds": ["/run/docker.sock:/s"]}}));
    assert!(matches!(v.decision, Decision::Rewrite(_)));
}

#[test]
fn socket_mounts_of_other_images_are_refused() {
    let (status, msg) = refusal(&create(
        json!({"Image": "evil:1", "HostConfig": {"Binds": ["/var/run/docker.sock:/s"]}}),
    ));
    assert_eq!(status, 403);
    assert!(
        msg.contains("\"evil:1\" is not allowed to mount the Docker engine socket"),
        "{msg}"
    );
    // Not pulled yet: a 404 makes the CLI pull and try again.
    let (status, msg) = refusal(&create(
        json!({"Image": "nothere:1", "HostConfig": {"Binds": ["/var/run/docker.sock:/s"]}}),
    ));
    assert_eq!((status, msg.as_str()), (404, "No such image: nothere:1"));
    assert_eq!(
        refusal(&create(
            json!({"HostConfig": {"Binds": ["/var/run/docker.sock:/s"]}})
        ))
        .0,
        403
    );
    // A symlink to the socket is the socket.
    let mut f = facts();
    f.real_paths
        .insert("/mnt/host/share/s".into(), "/run/docker.sock".into());
    let c = case(
        "POST",
        "/containers/create",
        Some(json!({"Image": "evil:1", "HostConfig": {"Binds": ["/mnt/host/share/s:/s"]}})),
    );
    assert_eq!(refusal(&run_with(&c, &policy(), &sockets(), &f)).0, 403);
    // Without a container socket, no socket mount at all.
    let no_container = Sockets {
        container: None,
        ..sockets()
    };
    let c = case(
        "POST",
        "/containers/create",
        Some(json!({"Image": "docker:cli", "HostConfig": {"Binds": ["/var/run/docker.sock:/s"]}})),
    );
    let (_, msg) = refusal(&run_with(&c, &policy(), &no_container, &facts()));
    assert!(msg.contains("container socket"), "{msg}");
}

#[test]
fn derived_images_may_mount_the_socket_when_allowed() {
    let mut f = facts();
    f.add_image(
        "mine:1",
        ImageInfo {
            id: "sha256:mine".into(),
            repo_tags: vec!["mine:1".into()],
            parent: "sha256:cli".into(),
            layers: vec!["sha256:l1".into(), "sha256:l2".into()],
            ..ImageInfo::default()
        },
    );
    let c = case(
        "POST",
        "/containers/create",
        Some(json!({"Image": "mine:1", "HostConfig": {"Binds": ["/var/run/docker.sock:/s"]}})),
    );
    assert_eq!(refusal(&run_with(&c, &policy(), &sockets(), &f)).0, 403);
    let derived = Policy {
        allow_derived: true,
        ..policy()
    };
    let v = run_with(&c, &derived, &sockets(), &f);
    assert!(matches!(v.decision, Decision::Rewrite(_)), "{v:?}");
    assert!(v.rules.contains(&"B5"), "{:?}", v.rules);
}

#[test]
fn facts_are_requested_only_when_needed() {
    let p = policy();
    let s = sockets();
    let want = |body: Value| {
        let api = ApiPath::parse("/containers/create").unwrap();
        let call = classify("POST", &api.segments(), &[]);
        let req = Request {
            method: "POST",
            api: &api,
            query: &[],
            call: &call,
            content_type: None,
            role: Role::User,
            body: Some(&body),
        };
        facts_needed(&req, &p, &s, &Facts::default())
    };
    assert!(want(json!({"Image": "a"})).is_empty());
    let q = want(
        json!({"Image": "docker:cli", "HostConfig": {"Binds": ["/var/run/docker.sock:/s", "vol:/v"], "NetworkMode": "mynet"}}),
    );
    assert!(q.images.contains("docker:cli"));
    assert!(q.volumes.contains("vol"));
    assert!(q.networks.contains("mynet"));
    assert!(
        !want(json!({"Image": "a", "HostConfig": {"Binds": ["/mnt/host/share:/s"]}}))
            .images
            .contains("a")
    );
}

// ---- Go's case-insensitive field names ----

#[test]
fn other_spellings_of_inspected_fields_are_refused() {
    for body in [
        json!({"Image": "a", "hostconfig": {"Binds": ["/etc:/x"]}}),
        json!({"Image": "a", "HostConfig": {"binds": ["/etc:/x"]}}),
        json!({"Image": "a", "HostConfig": {"PIDMODE": "host"}}),
        json!({"Image": "a", "HostConfig": {"Mounts": [{"type": "bind", "Source": "/etc", "Target": "/x"}]}}),
        json!({"Image": "a", "HostConfig": {"Mounts": [{"Type": "volume", "VolumeOptions": {"driverconfig": {}}}]}}),
        json!({"Image": "a", "NetworkingConfig": {"endpointsconfig": {"host": {}}}}),
        json!({"Image": "a", "HostConfig": {"Bindſ": ["/etc:/x"]}}),
        json!({"Image": "a", "HostConfig": {"\u{212a}ey": 1}}),
    ] {
        let (status, msg) = refusal(&create(body.clone()));
        assert_eq!(status, 400, "{body}: {msg}");
    }
    // Fields the policy does not read may be spelled any way dockerd accepts.
    assert!(matches!(
        create(json!({"Image": "a", "cmd": ["x"], "ENV": []})).decision,
        Decision::Rewrite(_)
    ));
    assert_eq!(refusal(&create(json!({"image": "a"}))).0, 400);
}

// ---- B6: commandList ----

fn from_container(method: &'static str, path: &str) -> Case {
    Case {
        role: Role::Container,
        ..case(method, path, None)
    }
}

#[test]
fn deny_lists_block_listed_commands_for_socket_mounting_containers_only() {
    let (status, msg) = refusal(&run(&from_container(
        "POST",
        "/v1.41/images/docker.io/x/y/push?tag=1",
    )));
    assert_eq!(
        (status, msg.as_str()),
        (
            403,
            "docker command \"/v1.41/images/docker.io/x/y/push\" is blocked"
        )
    );
    assert_eq!(
        run(&case("POST", "/v1.41/images/x/push", None)).decision,
        Decision::Allow
    );
    assert_eq!(
        run(&from_container("GET", "/v1.41/containers/json")).decision,
        Decision::Allow
    );
    assert_eq!(
        run(&from_container("GET", "/v1.41/frobnicate")).decision,
        Decision::Allow
    );
}

#[test]
fn allow_lists_pass_only_listed_commands_and_groups() {
    let p = Policy {
        command_list_type: CommandListType::Allow,
        commands: vec![
            CommandRule::parse("container*").unwrap(),
            CommandRule::parse("version").unwrap(),
        ],
        ..policy()
    };
    let r = |m: &'static str, path: &str| {
        run_with(&from_container(m, path), &p, &sockets(), &facts()).decision
    };
    assert_eq!(r("GET", "/v1.41/containers/json"), Decision::Allow);
    assert_eq!(r("POST", "/v1.41/containers/abc/stop"), Decision::Allow);
    assert_eq!(r("POST", "/v1.41/exec/abc/start"), Decision::Allow);
    assert_eq!(r("HEAD", "/_ping"), Decision::Allow);
    assert_eq!(r("GET", "/v1.41/version"), Decision::Allow);
    for blocked in [
        "/v1.41/images/json",
        "/v1.41/info",
        "/v1.41/volumes",
        "/v1.41/frobnicate",
    ] {
        assert!(
            matches!(r("GET", blocked), Decision::Refuse { status: 403, .. }),
            "{blocked}"
        );
    }
}

#[test]
fn group_names_and_wildcards_cover_their_subcommands() {
    let with = |rules: &[&str]| Policy {
        commands: rules
            .iter()
            .map(|r| CommandRule::parse(r).unwrap())
            .collect(),
        ..policy()
    };
    let blocked = |p: &Policy, m: &'static str, path: &str| {
        matches!(
            run_with(&from_container(m, path), p, &sockets(), &facts()).decision,
            Decision::Refuse { .. }
        )
    };
    let image_star = with(&["image*"]);
    assert!(blocked(
        &image_star,
        "POST",
        "/images/create?fromImage=alpine&tag=3"
    ));
    assert!(blocked(&image_star, "POST", "/build"));
    assert!(!blocked(&image_star, "GET", "/containers/json"));
    let build_star = with(&["build*"]);
    assert!(blocked(&build_star, "POST", "/session"));
    assert!(blocked(&build_star, "POST", "/build/prune"));
    let system = with(&["system*"]);
    assert!(blocked(&system, "GET", "/info"));
    assert!(blocked(&system, "POST", "/containers/prune"));
    let volume = with(&["volume"]);
    assert!(blocked(&volume, "POST", "/volumes/create"));
    let run_cmd = with(&["run"]);
    assert!(blocked(&run_cmd, "POST", "/containers/create"));
    assert!(blocked(&run_cmd, "POST", "/containers/x/attach"));
    assert!(!blocked(&run_cmd, "GET", "/containers/json"));
}

// ---- D1: builds ----

#[test]
fn builds_with_host_networking_are_refused() {
    for q in [
        "networkmode=host",
        "networkmode=HOST",
        "t=x&networkmode=default&networkmode=host",
        "networkmode=%68ost",
    ] {
        let (status, msg) = refusal(&run(&case("POST", &format!("/v1.41/build?{q}"), None)));
        assert_eq!(status, 403, "{q}");
        assert!(msg.contains("--network=host"), "{msg}");
    }
    for q in [
        "",
        "networkmode=default",
        "networkmode=none",
        "networkmode=bridge",
        "t=host",
    ] {
        assert_eq!(
            run(&case("POST", &format!("/v1.41/build?{q}"), None)).decision,
            Decision::Allow,
            "{q}"
        );
    }
}

#[test]
fn form_bodies_are_refused_because_dockerd_reads_parameters_from_them() {
    for ct in [
        "application/x-www-form-urlencoded",
        "Multipart/Form-Data; boundary=x",
    ] {
        let c = Case {
            content_type: Some(ct),
            ..case("POST", "/v1.41/build", None)
        };
        assert_eq!(refusal(&run(&c)).0, 400, "{ct}");
    }
    let c = Case {
        content_type: Some("application/x-tar"),
        ..case("POST", "/v1.41/build", None)
    };
    assert_eq!(run(&c).decision, Decision::Allow);
}

// ---- other endpoints ----

#[test]
fn start_bodies_swarm_and_plugins_are_refused() {
    let (status, _) = refusal(&run(&case(
        "POST",
        "/v1.23/containers/x/start",
        Some(json!({"Binds": ["/etc:/x"]})),
    )));
    assert_eq!(status, 400);
    assert_eq!(
        run(&case(
            "POST",
            "/v1.41/containers/x/start",
            Some(Value::Null)
        ))
        .decision,
        Decision::Allow
    );
    assert_eq!(
        run(&case("POST", "/v1.41/containers/x/start", Some(json!({})))).decision,
        Decision::Allow
    );
    assert_eq!(
        refusal(&run(&case("POST", "/v1.41/swarm/init", None))).0,
        403
    );
    assert_eq!(
        refusal(&run(&case("POST", "/v1.41/services/create", None))).0,
        403
    );
    assert_eq!(
        refusal(&run(&case("POST", "/v1.41/plugins/pull?remote=x", None))).0,
        403
    );
    assert_eq!(
        run(&case("GET", "/v1.41/plugins", None)).decision,
        Decision::Allow
    );
}

#[test]
fn containers_from_before_isolation_are_not_run_again() {
    let mut f = facts();
    f.containers.insert(
        "old".into(),
        ContainerInfo {
            name: "old".into(),
            runtime: "runc".into(),
            ..ContainerInfo::default()
        },
    );
    f.containers.insert(
        "abc123".into(),
        ContainerInfo {
            name: "".into(),
            runtime: "".into(),
            ..ContainerInfo::default()
        },
    );
    f.containers.insert(
        "new".into(),
        ContainerInfo {
            name: "new".into(),
            runtime: "eci".into(),
            ..ContainerInfo::default()
        },
    );
    for path in [
        "/v1.41/containers/old/start",
        "/v1.41/containers/old/restart",
        "/containers/old/unpause",
    ] {
        let (status, msg) = refusal(&run_with(
            &case("POST", path, None),
            &policy(),
            &sockets(),
            &f,
        ));
        assert_eq!(status, 409, "{path}");
        assert_eq!(msg, eci_facts::legacy::refusal_message("old", "runc"));
        assert!(msg.contains("docker rm old"), "{msg}");
    }
    let (_, msg) = refusal(&run_with(
        &case("POST", "/containers/abc123/start", None),
        &policy(),
        &sockets(),
        &f,
    ));
    assert!(
        msg.contains("container abc123 ") && msg.contains("the default (runc)"),
        "{msg}"
    );
    for path in [
        "/v1.41/containers/new/start",
        "/v1.41/containers/missing/start",
        "/v1.41/containers/old/stop",
    ] {
        assert_eq!(
            run_with(&case("POST", path, None), &policy(), &sockets(), &f).decision,
            Decision::Allow,
            "{path}"
        );
    }
    // The start rule asks for the container, and only for it.
    let api = ApiPath::parse("/v1.41/containers/old/restart").unwrap();
    let call = classify("POST", &api.segments(), &[]);
    let req = Request {
        method: "POST",
        api: &api,
        query: &[],
        call: &call,
        content_type: None,
        role: Role::User,
        body: None,
    };
    let q = facts_needed(&req, &policy(), &sockets(), &Facts::default());
    assert_eq!(
        q.containers.into_iter().collect::<Vec<_>>(),
        vec!["old".to_string()]
    );
}

#[test]
fn verdict_kinds_name_the_audit_decision() {
    assert_eq!(
        run(&case("GET", "/v1.41/containers/json", None)).kind(),
        "allow"
    );
    assert_eq!(create(json!({"Image": "a"})).kind(), "rewrite");
    assert_eq!(
        create(json!({"Image": "a", "HostConfig": {"PidMode": "host"}})).kind(),
        "refuse"
    );
}

// ---- P3: devices ----

/// `--device` and `--device-cgroup-rule` reach only the safe set; the guard judges the node the
/// path really is (through symlinks), as dockerd will.
#[test]
fn devices_outside_the_safe_set_are_refused() {
    use crate::facts::DeviceNode;
    let mut f = facts();
    let node = |kind, major, minor| DeviceNode::Node { kind, major, minor };
    f.devices.insert("/dev/vda".into(), node('b', 254, 0));
    f.devices.insert("/dev/mem".into(), node('c', 1, 1));
    f.devices.insert("/dev/looks-null".into(), node('c', 1, 1));
    f.devices.insert("/dev/null".into(), node('c', 1, 3));
    f.devices.insert("/dev/fuse".into(), node('c', 10, 229));
    f.devices.insert("/dev/snd".into(), DeviceNode::Folder);
    let run_f = |host: Value| {
        run_with(
            &case(
                "POST",
                "/containers/create",
                Some(json!({"Image": "a", "HostConfig": host})),
            ),
            &policy(),
            &sockets(),
            &f,
        )
    };
    let dev = |path: &str| json!({"Devices": [{"PathOnHost": path, "PathInContainer": "/dev/x", "CgroupPermissions": "rwm"}]});
    let (status, msg) = refusal(&run_f(dev("/dev/vda")));
    assert_eq!(status, 403);
    assert!(
        msg.starts_with("device /dev/vda (block 254:0) is not allowed")
            && msg.contains("null, zero")
            && msg.ends_with("remove --device /dev/vda"),
        "{msg}"
    );
    assert_eq!(run_f(dev("/dev/mem")).rules, vec!["P3"]);
    // A harmless name does not help: the numbers decide.
    assert!(refusal(&run_f(dev("/dev/looks-null")))
        .1
        .contains("character 1:1"));
    assert!(refusal(&run_f(dev("/dev/snd")))
        .1
        .contains("device folder /dev/snd"));
    for ok in ["/dev/null", "/dev/fuse", "/dev/not-there"] {
        assert!(
            !matches!(run_f(dev(ok)).decision, Decision::Refuse { .. }),
            "{ok}"
        );
    }
    let rules = |r: &[&str]| json!({"DeviceCgroupRules": r});
    for bad in [
        "a *:* rwm",
        "b 254:0 rwm",
        "c 1:* rwm",
        "c *:* m",
        "c 1:1 r",
        "nonsense",
    ] {
        let (_, msg) = refusal(&run_f(rules(&[bad])));
        assert!(
            msg.contains(&format!("device cgroup rule {bad:?}")),
            "{msg}"
        );
    }
    for good in ["c 1:3 rwm", "c 136:* rwm", "c 10:229 rwm"] {
        assert!(
            !matches!(run_f(rules(&[good])).decision, Decision::Refuse { .. }),
            "{good}"
        );
    }
    assert_eq!(refusal(&run_f(json!({"DeviceCgroupRules": [1]}))).0, 400);
    assert_eq!(
        refusal(&run_f(json!({"Devices": [{"pathonhost": "/dev/vda"}]}))).0,
        400
    );
    assert_eq!(
        devices_to_stat(Some(&json!({"HostConfig": dev("/dev/vda")}))),
        vec!["/dev/vda".to_string()]
    );
}
