//! SPEC A5: a container whose recorded runtime is not eci's predates isolation and is refused
//! at start, with a message that names it and says how to recreate it. eci-init applies the
//! rule to the data disk at boot and the guard to `start` requests, so both say the same thing.

use crate::vm_paths::ECI_RUNTIME_NAME;

/// Whether a recorded runtime (`HostConfig.Runtime`) means the container predates isolation.
/// Docker leaves the field empty for the daemon's default runtime in some versions; before eci
/// that default was runc.
pub fn is_legacy_runtime(runtime: Option<&str>) -> bool {
    runtime != Some(ECI_RUNTIME_NAME)
}

/// The error users see when they start a legacy container.
pub fn refusal_message(name: &str, runtime: &str) -> String {
    let runtime = if runtime.is_empty() {
        "the default (runc)"
    } else {
        runtime
    };
    format!(
        "container {name} was created before container isolation was enabled (runtime {runtime}) and cannot be started; \
         recreate it so it runs isolated: `docker rm {name}` then run it again with the same options \
         (`docker run ...`, or `docker compose up --force-recreate`); its named volumes are kept"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_eci_runtime_is_isolated() {
        assert!(is_legacy_runtime(Some("runc")) && is_legacy_runtime(None));
        assert!(is_legacy_runtime(Some("")));
        assert!(!is_legacy_runtime(Some("eci")));
    }

    #[test]
    fn the_message_names_the_container_and_the_way_out() {
        let m = refusal_message("web", "runc");
        assert!(m.starts_with(
            "container web was created before container isolation was enabled (runtime runc)"
        ));
        assert!(m.contains("`docker rm web`"));
        assert!(refusal_message("x", "").contains("runtime the default (runc)"));
    }
}
