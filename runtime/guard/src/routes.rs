//! Which Docker API call a request is, and which `docker` commands make it (SPEC B6).
//!
//! `commandList` names the commands of `docker --help`; the engine only sees HTTP calls. This
//! table maps each call to the commands that issue it and to the command groups (`container`,
//! `image`, ...) whose subcommands reach it, so `deny: ["push"]` blocks
//! `POST /images/{name}/push` and `deny: ["container*"]` blocks every container endpoint.

use crate::paths::query_first;

/// The API calls the policy looks into. Everything else is `Other`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    ContainerCreate,
    /// `POST /containers/{id}/start`: a body here is the pre-1.24 way to pass a HostConfig.
    ContainerStart,
    /// `POST /containers/{id}/restart` and `/unpause`: like start, they run a container again.
    ContainerResume,
    VolumeCreate,
    Build,
    /// BuildKit's gRPC control API over an h2c upgrade.
    Grpc,
    Session,
    SwarmInitOrJoin,
    ServiceWrite,
    PluginInstall,
    ImagePull,
    Other,
}

/// A classified request: the endpoint, the commands that make it, and their groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub endpoint: Endpoint,
    /// Top-level `docker` commands that send this request.
    pub commands: &'static [&'static str],
    /// Management command groups (`container`, `image`, `volume`, `network`, `build`,
    /// `system`, ...) whose subcommands send it.
    pub groups: &'static [&'static str],
    /// No command at all: version negotiation (`/_ping`). Always allowed.
    pub always_allowed: bool,
}

impl Call {
    fn new(
        endpoint: Endpoint,
        commands: &'static [&'static str],
        groups: &'static [&'static str],
    ) -> Call {
        Call {
            endpoint,
            commands,
            groups,
            always_allowed: false,
        }
    }

    /// A path the table does not know: dockerd 404s it or it is newer than this table.
    pub fn is_unknown(&self) -> bool {
        self.commands.is_empty() && self.groups.is_empty() && !self.always_allowed
    }
}

const C: &[&str] = &["container"];
const I: &[&str] = &["image"];
const B: &[&str] = &["build", "image"];
const S: &[&str] = &["system"];

/// Classify `method` + route (version prefix already removed) + query.
pub fn classify(method: &str, segments: &[&str], query: &[(String, String)]) -> Call {
    use Endpoint as E;
    let m = method;
    let other = |commands, groups| Call::new(E::Other, commands, groups);
    match segments {
        ["_ping"] => Call {
            endpoint: E::Other,
            commands: &[],
            groups: &[],
            always_allowed: true,
        },
        ["version"] => other(&["version"], S),
        ["info"] => other(&["info"], S),
        ["events"] => other(&["events"], S),
        ["system", "df"] => other(&["system"], S),
        ["auth"] => other(&["login"], &[]),

        ["containers", "json"] => other(&["ps"], C),
        ["containers", "create"] if m == "POST" => {
            Call::new(E::ContainerCreate, &["create", "run"], C)
        }
        ["containers", "prune"] => other(&[], &["container", "system"]),
        ["containers", _, "start"] if m == "POST" => {
            Call::new(E::ContainerStart, &["start", "run"], C)
        }
        ["containers", _, rest @ ..] => match rest {
            ["json"] => other(&["inspect", "port", "run", "start"], C),
            ["top"] => other(&["top"], C),
            ["logs"] => other(&["logs"], C),
            ["changes"] => other(&["diff"], C),
            ["export"] => other(&["export"], C),
            ["stats"] => other(&["stats"], C),
            ["resize"] => other(&["attach", "run", "start"], C),
            ["stop"] => other(&["stop"], C),
            ["restart"] if m == "POST" => Call::new(E::ContainerResume, &["restart"], C),
            ["kill"] => other(&["kill", "attach", "run", "start"], C),
            ["update"] => other(&["update"], C),
            ["rename"] => other(&["rename"], C),
            ["pause"] => other(&["pause"], C),
            ["unpause"] if m == "POST" => Call::new(E::ContainerResume, &["unpause"], C),
            ["attach"] | ["attach", "ws"] => other(&["attach", "run", "start"], C),
            ["wait"] => other(&["wait", "run", "start"], C),
            ["archive"] => other(&["cp"], C),
            ["exec"] => other(&["exec"], C),
            ["checkpoints", ..] => other(&["checkpoint"], C),
            [] if m == "DELETE" => other(&["rm", "run"], C),
            _ => other(&[], C),
        },
        ["exec", _, ..] => other(&["exec"], C),
        ["commit"] => other(&["commit"], C),

        ["build"] => Call::new(E::Build, &["build", "builder", "buildx"], B),
        ["build", "prune"] => other(&["builder"], &["build", "system"]),
        ["build", "cancel"] => other(&["build", "buildx"], B),
        ["session"] => Call::new(E::Session, &["build", "buildx"], B),
        ["grpc"] => Call::new(E::Grpc, &["build", "buildx"], B),

        ["images", "json"] => other(&["images"], I),
        ["images", "create"] => {
            if query_first(query, "fromSrc").is_some_and(|s| !s.is_empty()) {
                other(&["import"], I)
            } else {
                Call::new(E::ImagePull, &["pull", "run", "create"], I)
            }
        }
        ["images", "search"] => other(&["search"], &[]),
        ["images", "prune"] => other(&[], &["image", "system"]),
        ["images", "load"] => other(&["load"], I),
        ["images", "get"] => other(&["save"], I),
        ["images", .., "json"] => other(&["inspect", "run", "create"], I),
        ["images", .., "history"] => other(&["history"], I),
        ["images", .., "push"] => other(&["push"], I),
        ["images", .., "tag"] => other(&["tag"], I),
        ["images", .., "get"] => other(&["save"], I),
        ["images", _, ..] if m == "DELETE" => other(&["rmi"], I),
        ["images", ..] => other(&[], I),
        ["distribution", ..] => other(&["pull", "run", "create", "buildx", "manifest"], I),

        ["volumes", "create"] if m == "POST" => {
            Call::new(E::VolumeCreate, &["volume"], &["volume"])
        }
        ["volumes", "prune"] => other(&["volume"], &["volume", "system"]),
        ["volumes", ..] => other(&["volume"], &["volume"]),
        ["networks", "prune"] => other(&["network"], &["network", "system"]),
        ["networks", ..] => other(&["network"], &["network"]),

        ["swarm", "init"] | ["swarm", "join"] => {
            Call::new(E::SwarmInitOrJoin, &["swarm"], &["swarm"])
        }
        ["swarm", ..] => other(&["swarm"], &["swarm"]),
        ["nodes", ..] => other(&["node"], &["node"]),
        ["services", "create"] => Call::new(E::ServiceWrite, &["service", "stack"], &["service"]),
        ["services", _, "update"] => {
            Call::new(E::ServiceWrite, &["service", "stack"], &["service"])
        }
        ["services", ..] | ["tasks", ..] => other(&["service", "stack"], &["service"]),
        ["secrets", ..] => other(&["secret"], &["secret"]),
        ["configs", ..] => other(&["config"], &["config"]),
        ["plugins", "pull"] | ["plugins", "create"] => {
            Call::new(E::PluginInstall, &["plugin"], &["plugin"])
        }
        ["plugins", .., "upgrade"] | ["plugins", .., "enable"] => {
            Call::new(E::PluginInstall, &["plugin"], &["plugin"])
        }
        ["plugins", ..] => other(&["plugin"], &["plugin"]),
        _ => other(&[], &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::{parse_query, ApiPath};

    fn call(method: &str, path: &str) -> Call {
        let (p, q) = path.split_once('?').unwrap_or((path, ""));
        let api = ApiPath::parse(p).unwrap();
        classify(method, &api.segments(), &parse_query(q))
    }

    #[test]
    fn policy_endpoints_are_recognised_with_and_without_versions() {
        assert_eq!(
            call("POST", "/v1.41/containers/create").endpoint,
            Endpoint::ContainerCreate
        );
        assert_eq!(
            call("POST", "/containers/create?name=x").endpoint,
            Endpoint::ContainerCreate
        );
        assert_eq!(
            call("POST", "/v1.23/containers/abc/start").endpoint,
            Endpoint::ContainerStart
        );
        assert_eq!(
            call("POST", "/v1.41/containers/abc/restart").endpoint,
            Endpoint::ContainerResume
        );
        assert_eq!(
            call("POST", "/v1.41/containers/abc/unpause").endpoint,
            Endpoint::ContainerResume
        );
        assert_eq!(
            call("POST", "/v1.41/volumes/create").endpoint,
            Endpoint::VolumeCreate
        );
        assert_eq!(
            call("POST", "/v1.41/build?networkmode=host").endpoint,
            Endpoint::Build
        );
        assert_eq!(call("POST", "/grpc").endpoint, Endpoint::Grpc);
        assert_eq!(call("POST", "/v1.41/session").endpoint, Endpoint::Session);
        assert_eq!(
            call("POST", "/v1.41/swarm/init").endpoint,
            Endpoint::SwarmInitOrJoin
        );
        assert_eq!(
            call("POST", "/v1.41/services/create").endpoint,
            Endpoint::ServiceWrite
        );
        assert_eq!(
            call("POST", "/v1.41/plugins/pull?remote=x").endpoint,
            Endpoint::PluginInstall
        );
        assert_eq!(
            call("POST", "/v1.41/plugins/x/enable").endpoint,
            Endpoint::PluginInstall
        );
        assert_eq!(
            call("POST", "/images/create?fromImage=alpine").endpoint,
            Endpoint::ImagePull
        );
        assert_eq!(
            call("GET", "/v1.41/containers/create").endpoint,
            Endpoint::Other
        );
    }

    #[test]
    fn commands_and_groups_follow_the_cli() {
        let push = call("POST", "/v1.41/images/localhost:5000/a/b/push?tag=1");
        assert_eq!(push.commands, &["push"]);
        assert_eq!(push.groups, &["image"]);
        let import = call("POST", "/images/create?fromSrc=-&repo=x");
        assert_eq!(import.commands, &["import"]);
        assert_eq!(
            call("GET", "/v1.41/containers/json?all=1").commands,
            &["ps"]
        );
        assert_eq!(
            call("DELETE", "/v1.41/containers/abc").commands,
            &["rm", "run"]
        );
        assert_eq!(call("DELETE", "/v1.41/images/alpine:3").commands, &["rmi"]);
        assert_eq!(call("POST", "/v1.41/exec/abc/start").commands, &["exec"]);
        assert_eq!(call("GET", "/v1.41/images/a/b/json").commands[0], "inspect");
        assert!(call("HEAD", "/_ping").always_allowed);
        assert!(call("GET", "/v1.41/frobnicate").is_unknown());
        assert!(call("POST", "/v1.41/containers/prune")
            .groups
            .contains(&"system"));
    }
}
