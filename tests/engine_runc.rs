//! eci-runc under a real dockerd (SPEC A2, A6, U1, U2, U4, P1-P5, P8, B2, B3): every check goes
//! through the docker CLI against a private engine whose default runtime is eci-runc.

use eci_e2e::runc_engine::{parse_map, prerequisites, RuncEngine, IMAGE};

fn engine(name: &str) -> Option<RuncEngine> {
    if !prerequisites() {
        return None;
    }
    Some(RuncEngine::start(name).unwrap_or_else(|e| panic!("engine {name}: {e:#}")))
}

/// SPEC A2, U1: eci is the default runtime and root maps to an unprivileged 65536-id range.
#[test]
fn containers_get_an_exclusive_user_namespace() {
    let Some(e) = engine("userns") else { return };
    assert_eq!(e.ok(&["info", "--format", "{{.DefaultRuntime}}"]), "eci");
    let out = e.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        IMAGE,
        "cat",
        "/proc/self/uid_map",
        "/proc/self/gid_map",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for l in lines {
        let (inside, outside, count) = parse_map(l).unwrap_or_else(|| panic!("bad map {l:?}"));
        assert_eq!((inside, count), (0, 65536), "{l}");
        assert!(outside >= 100_000, "{l}");
    }
    // --userns=host is ignored (SPEC A6).
    let out = e.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--userns",
        "host",
        IMAGE,
        "cat",
        "/proc/self/uid_map",
    ]);
    let (_, outside, count) = parse_map(&out).unwrap();
    assert!(outside >= 100_000 && count == 65536, "{out}");
    assert!(
        e.ranges().is_empty(),
        "ranges left after --rm: {:?}",
        e.ranges()
    );
}
