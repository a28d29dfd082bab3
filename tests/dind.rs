//! Docker-in-Docker under eci (issue 10, SPEC P7, M7): the `dind` image, built by eci-build
//! from images/dind.yaml and its lock, runs `--privileged` under eci-runc with a private
//! mount-vetting supervisor; inside it Debian's dockerd (overlay2, bridge network) imports an
//! image from a tarball handed in and runs an inner container with Debian's runc. The inner
//! container lives in the outer container's user namespace: its uid map is the outer one, the
//! exclusive range eci allocated, never the machine's ids. `docker build` of a Dockerfile with
//! a RUN step works inside, with the classic builder (the default of Debian's docker 20.10
//! CLI) and with BuildKit (`DOCKER_BUILDKIT=1`), and its RUN step runs in that range too.
//!
//! Needs root, dockerd (docker.io) and the Debian mirror of the machine's apt sources (or a
//! package cache holding images/dind.lock); skips without them, fails in CI.

use eci_e2e::dind::{
    build_image, field, import, script, share_file, DIND_IMAGE, INNER_DRIVER, SHARE_IN_CONTAINER,
};
use eci_e2e::runc_engine::{parse_map, prerequisites, tail, RuncEngine};
use eci_e2e::vetting::{private_supervisor, stop_supervisor, supervisor_log};

/// Stops the test's own supervisor when the test ends, even on panic.
struct Supervisor(std::path::PathBuf);

impl Drop for Supervisor {
    fn drop(&mut self) {
        stop_supervisor(&self.0);
    }
}

#[test]
fn inner_containers_run_in_the_outer_containers_range() {
    if !prerequisites() {
        return;
    }
    let out = tempfile::Builder::new()
        .prefix("dind-image-")
        .tempdir_in("/tmp")
        .unwrap();
    let Some(image) = build_image(out.path()) else {
        return;
    };
    eprintln!(
        "eci-build image --target dind: {:.1} s ({})",
        image.seconds,
        image.tarball.display()
    );
    let e = RuncEngine::start("dind").unwrap_or_else(|e| panic!("engine: {e:#}"));
    let sock = private_supervisor(&e).unwrap_or_else(|e| panic!("supervisor: {e:#}"));
    let _supervisor = Supervisor(sock.clone());
    import(&e, &image.tarball).unwrap_or_else(|e| panic!("{e:#}"));
    let inner = share_file(&e, &image.tarball, "inner.tar").unwrap();
    std::fs::write(e.share.join("dind.sh"), script(&inner)).unwrap();

    let share = format!("{}:{SHARE_IN_CONTAINER}", e.share.display());
    let script_path = format!("{SHARE_IN_CONTAINER}/dind.sh");
    let id = e.ok(&[
        "run",
        "-d",
        "--privileged",
        "--name",
        "dind",
        "-v",
        "/var/lib/docker",
        "-v",
        &share,
        DIND_IMAGE,
        "/bin/sh",
        &script_path,
    ]);
    // The range is the container's while it runs (released when it stops): read the
    // allocator's table now, while dockerd starts inside.
    let holders = e.range_holders();
    let exit = e.ok(&["wait", "dind"]);
    let logs = e.docker(&["logs", "dind"]);
    let stdout = String::from_utf8_lossy(&logs.stdout).to_string();
    let report = format!(
        "exit {exit}\n--- stdout:\n{stdout}\n--- stderr:\n{}\n--- supervisor log tail:\n{}\n--- outer dockerd log tail:\n{}",
        String::from_utf8_lossy(&logs.stderr),
        tail(&supervisor_log(&sock), 30),
        tail(&e.dockerd_log(), 20)
    );
    eprintln!("{report}");

    // The outer container: eci's exclusive range, as the allocator recorded it.
    let outer = field(&stdout, "outer-uid-map")
        .and_then(parse_map)
        .unwrap_or_else(|| panic!("no outer uid map\n{report}"));
    assert!(
        holders
            .iter()
            .any(|(start, ids)| *start == outer.1 && ids.contains(&id)),
        "outer map {outer:?} is not the range allocated to {id}: {holders:?}\n{report}"
    );
    assert_eq!((outer.0, outer.2), (0, 65536), "{report}");
    assert!(outer.1 >= 100_000, "{report}");

    assert_eq!(exit, "0", "the dind container failed\n{report}");
    assert_eq!(
        field(&stdout, "inner-driver"),
        Some(INNER_DRIVER),
        "{report}"
    );
    assert!(
        field(&stdout, "inner-bridge").is_some_and(|b| b.starts_with("bridge ")),
        "{report}"
    );
    // The inner container is in the outer one's user namespace: same map, no ids of its own
    // beyond the range eci gave the outer container.
    let inner_map = field(&stdout, "inner-uid-map")
        .and_then(parse_map)
        .unwrap_or_else(|| panic!("no inner uid map\n{report}"));
    assert_eq!(inner_map, outer, "{report}");

    // `docker build` inside (SPEC P7): the RUN step ran as root of the outer container's
    // range, and the image it made runs. The 20.10 CLI's default is the classic builder;
    // BuildKit is asked for with DOCKER_BUILDKIT=1.
    for (build, builder) in [("default", "classic"), ("buildkit", "buildkit")] {
        let ran = field(&stdout, &format!("build-{build}"))
            .unwrap_or_else(|| panic!("no build-{build} line\n{report}"));
        assert!(
            ran.starts_with(&format!("{builder} ")),
            "docker build ({build}): {ran}\n{report}"
        );
        eprintln!("docker build inside DinD ({build}): {ran}");
        let result = field(&stdout, &format!("build-{build}-result"))
            .unwrap_or_else(|| panic!("no build-{build}-result line\n{report}"));
        let (uid, map) = result
            .split_once(' ')
            .unwrap_or_else(|| panic!("build-{build}-result: {result}\n{report}"));
        assert_eq!(uid, "0", "{report}");
        assert_eq!(parse_map(map), Some(outer), "{report}");
    }
}
