//! The decision for one API request: allow it, rewrite its body, or refuse it.
//!
//! Pure: the request, the settings, the guard's pins and the facts gathered beforehand go in,
//! a [`Verdict`] comes out. The proxy only gathers facts and acts on the verdict.

use eci_vm_config::CommandListType;
use serde_json::{Map, Value};

use crate::facts::{DeviceNode, EngineFacts, FactQuery};
use crate::images::{socket_image_allowed, PinUpdate, Pins, SocketImage};
use crate::paths::{clean, query_values, ApiPath};
use crate::routes::{Call, Endpoint};
use crate::settings::Policy;

/// Which listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The user-facing engine socket.
    User,
    /// The socket bind-mounted into containers allowed to mount the engine socket; requests
    /// here are filtered by `commandList` (SPEC B6).
    Container,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Container => "container",
        }
    }
}

/// The engine socket as containers may name it in bind mounts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sockets {
    /// Paths that are the engine socket: the user listeners and aliases such as
    /// `/var/run/docker.sock`, lexically clean, plus their resolved forms.
    pub engine: Vec<String>,
    /// The container-role listener socket mounts are pointed at.
    pub container: Option<String>,
}

impl Sockets {
    fn is_engine(&self, path: &str) -> bool {
        self.engine.iter().any(|e| e == path) || self.container.as_deref() == Some(path)
    }
}

/// One request as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub api: &'a ApiPath,
    pub query: &'a [(String, String)],
    pub call: &'a Call,
    pub content_type: Option<&'a str>,
    pub role: Role,
    /// The parsed JSON body, for the endpoints where [`needs_body`] is true; `Value::Null`
    /// for an empty body.
    pub body: Option<&'a Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Allow,
    /// Forward with this JSON body instead.
    Rewrite(Value),
    /// Answer with Docker's error shape; nothing reaches dockerd.
    Refuse {
        status: u16,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub decision: Decision,
    /// SPEC items that decided (`A3`, `B2`, ...).
    pub rules: Vec<&'static str>,
    /// What was checked or changed, for the audit log.
    pub notes: Vec<String>,
    /// Pins to record if the request goes ahead.
    pub pins: Vec<PinUpdate>,
}

impl Verdict {
    fn allow() -> Verdict {
        Verdict {
            decision: Decision::Allow,
            rules: Vec::new(),
            notes: Vec::new(),
            pins: Vec::new(),
        }
    }

    fn refuse(status: u16, rule: &'static str, message: impl Into<String>) -> Verdict {
        let message = message.into();
        Verdict {
            decision: Decision::Refuse {
                status,
                message: message.clone(),
            },
            rules: vec![rule],
            notes: Vec::new(),
            pins: Vec::new(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self.decision {
            Decision::Allow => "allow",
            Decision::Rewrite(_) => "rewrite",
            Decision::Refuse { .. } => "refuse",
        }
    }
}

/// Whether the proxy must read and parse the JSON body before deciding. Other bodies (build
/// contexts, image tarballs, archive uploads) stream through untouched.
pub fn needs_body(call: &Call) -> bool {
    matches!(
        call.endpoint,
        Endpoint::ContainerCreate | Endpoint::ContainerStart | Endpoint::VolumeCreate
    )
}

/// `docker command "PATH" is blocked` (SPEC B6) for requests from socket-mounting containers.
pub fn command_allowed(policy: &Policy, call: &Call) -> bool {
    if call.always_allowed {
        return true;
    }
    let hit = policy
        .commands
        .iter()
        .any(|rule| match rule.wildcard_prefix() {
            Some(group) => call.groups.contains(&group),
            None => {
                let name = rule.as_str();
                call.commands.contains(&name) || call.groups.contains(&name)
            }
        });
    match policy.command_list_type {
        CommandListType::Deny => !hit,
        CommandListType::Allow => hit,
    }
}

// ---------------------------------------------------------------------------------------
// Field names. Go's encoding/json matches object keys to struct fields case-insensitively
// (and with Unicode folding), so dockerd reads `{"hostconfig": {"binds": [...]}}` as a
// HostConfig with Binds. The guard looks at exact names, so any other spelling of a field it
// inspects is refused rather than guessed at.

const HOST_FIELDS: &[&str] = &[
    "Binds",
    "Mounts",
    "PidMode",
    "IpcMode",
    "UTSMode",
    "NetworkMode",
    "UsernsMode",
    "CgroupnsMode",
    "Runtime",
    "VolumesFrom",
    "Devices",
    "DeviceCgroupRules",
];
const TOP_FIELDS: &[&str] = &["HostConfig", "NetworkingConfig", "Image"];
const MOUNT_FIELDS: &[&str] = &["Type", "Source", "Target", "VolumeOptions"];
const VOLUME_OPTIONS_FIELDS: &[&str] = &["DriverConfig"];
const DRIVER_CONFIG_FIELDS: &[&str] = &["Name", "Options"];
const NETWORKING_FIELDS: &[&str] = &["EndpointsConfig"];
const DEVICE_FIELDS: &[&str] = &["PathOnHost", "PathInContainer", "CgroupPermissions"];
const VOLUME_CREATE_FIELDS: &[&str] = &["Name", "Driver", "DriverOpts"];

fn check_keys(obj: &Map<String, Value>, fields: &[&[&str]], what: &str) -> Result<(), String> {
    for key in obj.keys() {
        if !key.is_ascii() {
            return Err(format!(
                "{what}: field name {key:?} is not ASCII; Docker's API fields are"
            ));
        }
        for canon in fields.iter().flat_map(|f| f.iter()) {
            if key != canon && key.eq_ignore_ascii_case(canon) {
                return Err(format!("{what}: field {key:?} must be spelled {canon:?}"));
            }
        }
    }
    Ok(())
}

fn obj(v: Option<&Value>) -> Option<&Map<String, Value>> {
    v.and_then(Value::as_object)
}

/// Check the spelling of every object the create policy reads.
fn check_create_keys(body: &Map<String, Value>) -> Result<(), String> {
    check_keys(body, &[TOP_FIELDS, HOST_FIELDS], "container config")?;
    for host in host_configs(body) {
        check_keys(host, &[HOST_FIELDS], "HostConfig")?;
        for d in host
            .get("Devices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object)
        {
            check_keys(d, &[DEVICE_FIELDS], "HostConfig.Devices")?;
        }
        if let Some(mounts) = host.get("Mounts").and_then(Value::as_array) {
            for m in mounts.iter().filter_map(Value::as_object) {
                check_keys(m, &[MOUNT_FIELDS], "HostConfig.Mounts")?;
                if let Some(vo) = obj(m.get("VolumeOptions")) {
                    check_keys(vo, &[VOLUME_OPTIONS_FIELDS], "Mounts.VolumeOptions")?;
                    if let Some(dc) = obj(vo.get("DriverConfig")) {
                        check_keys(dc, &[DRIVER_CONFIG_FIELDS], "VolumeOptions.DriverConfig")?;
                    }
                }
            }
        }
    }
    if let Some(nc) = obj(body.get("NetworkingConfig")) {
        check_keys(nc, &[NETWORKING_FIELDS], "NetworkingConfig")?;
    }
    Ok(())
}

/// The HostConfig objects dockerd may read: the `HostConfig` member and, for the fields it
/// falls back to, the top level (dockerd's config wrapper embeds a HostConfig there too).
fn host_configs(body: &Map<String, Value>) -> Vec<&Map<String, Value>> {
    let mut out = vec![body];
    if let Some(h) = obj(body.get("HostConfig")) {
        out.push(h);
    }
    out
}

// ---------------------------------------------------------------------------------------
// Mounts

/// Where a bind or volume source sits in the body, so a socket mount can be re-pointed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Site {
    /// `HostConfig.Binds[i]` (`inner`) or top-level `Binds[i]`.
    Bind {
        inner: bool,
        index: usize,
    },
    Mount {
        inner: bool,
        index: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Path(String),
    /// A named volume, with driver options given in the request (if any).
    Volume {
        name: String,
        driver: Option<String>,
        options: Option<Map<String, Value>>,
    },
}

fn mount_sources(body: &Map<String, Value>) -> Vec<(Site, Source)> {
    let mut out = Vec::new();
    let mut visit = |host: &Map<String, Value>, inner: bool| {
        if let Some(binds) = host.get("Binds").and_then(Value::as_array) {
            for (index, b) in binds.iter().enumerate() {
                let Some(spec) = b.as_str() else { continue };
                let parts: Vec<&str> = spec.splitn(4, ':').collect();
                if parts.len() < 2 || parts[0].is_empty() {
                    continue; // anonymous volume or a spec dockerd rejects
                }
                let src = parts[0];
                let source = if src.starts_with('/') {
                    Source::Path(src.to_string())
                } else {
                    Source::Volume {
                        name: src.to_string(),
                        driver: None,
                        options: None,
                    }
                };
                out.push((Site::Bind { inner, index }, source));
            }
        }
        if let Some(mounts) = host.get("Mounts").and_then(Value::as_array) {
            for (index, m) in mounts.iter().enumerate() {
                let Some(m) = m.as_object() else { continue };
                let ty = m.get("Type").and_then(Value::as_str).unwrap_or_default();
                let src = m.get("Source").and_then(Value::as_str).unwrap_or_default();
                let site = Site::Mount { inner, index };
                match ty {
                    "bind" => out.push((site, Source::Path(src.to_string()))),
                    "volume" => {
                        let dc =
                            obj(obj(m.get("VolumeOptions")).and_then(|v| v.get("DriverConfig")));
                        out.push((
                            site,
                            Source::Volume {
                                name: src.to_string(),
                                driver: dc
                                    .and_then(|d| d.get("Name"))
                                    .and_then(Value::as_str)
                                    .map(str::to_string),
                                options: dc.and_then(|d| obj(d.get("Options"))).cloned(),
                            },
                        ))
                    }
                    _ => {}
                }
            }
        }
    };
    visit(body, false);
    if let Some(h) = obj(body.get("HostConfig")) {
        visit(h, true);
    }
    out
}

/// The VM path a local volume's data comes from: its `device` when that is an absolute path
/// (`type=none,o=bind,device=/x`, or a block device). Remote (`nfs`, `:/export`) and tmpfs
/// devices are not VM paths.
pub fn volume_source_path(driver: &str, options: &Map<String, Value>) -> Option<String> {
    if !(driver.is_empty() || driver == "local") {
        return None;
    }
    let device = options.get("device")?.as_str()?;
    device.starts_with('/').then(|| device.to_string())
}

/// The VM path an existing volume's data comes from (see [`volume_source_path`]), cleaned.
pub fn volume_device(v: &crate::facts::VolumeInfo) -> Option<String> {
    let opts: Map<String, Value> = v
        .options
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    volume_source_path(&v.driver, &opts).map(|p| clean(&p))
}

/// Bind sources (absolute paths) and volume device paths whose real location the proxy
/// should resolve.
pub fn paths_to_resolve(body: Option<&Value>) -> Vec<String> {
    let Some(body) = body.and_then(Value::as_object) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (_, src) in mount_sources(body) {
        match src {
            Source::Path(p) if p.starts_with('/') => out.push(clean(&p)),
            Source::Volume {
                driver, options, ..
            } => {
                if let Some(p) = options
                    .as_ref()
                    .and_then(|o| volume_source_path(driver.as_deref().unwrap_or(""), o))
                {
                    out.push(clean(&p));
                }
            }
            _ => {}
        }
    }
    if let Some(opts) = obj(body.get("DriverOpts")) {
        let driver = body.get("Driver").and_then(Value::as_str).unwrap_or("");
        if let Some(p) = volume_source_path(driver, opts) {
            out.push(clean(&p));
        }
    }
    out
}

/// May `path` be a bind source (SPEC B1-B3)? Both the path as written and where its symlinks
/// lead must pass eci-policy's rule, the one eci-runc applies to the same mount. Engine
/// sockets other than the guard's own (dockerd's, containerd's) never pass here: a container
/// talking to them would bypass the guard.
fn bind_allowed(policy: &Policy, facts: &dyn EngineFacts, path: &str) -> bool {
    let lexical = clean(path);
    let real = facts.real_path(&lexical).unwrap_or(&lexical).to_string();
    let ctx = eci_policy::BindContext {
        container_id: None,
        destination: None,
        donors: &[],
    };
    [lexical.as_str(), real.as_str()].iter().all(|p| {
        matches!(
            eci_policy::check_bind_source(p, &policy.binds, &ctx),
            Ok(eci_policy::BindKind::HostShare | eci_policy::BindKind::EngineInternal)
        )
    })
}

fn restricted(path: &str) -> String {
    eci_policy::restricted_mount_message(path)
}

fn is_engine_socket(sockets: &Sockets, facts: &dyn EngineFacts, path: &str) -> bool {
    let lexical = clean(path);
    sockets.is_engine(&lexical)
        || facts
            .real_path(&lexical)
            .is_some_and(|r| sockets.is_engine(r))
}

/// `PathOnHost` of every `HostConfig.Devices` entry (`--device`): the proxy looks them up in
/// the VM before the decision.
pub fn devices_to_stat(body: Option<&Value>) -> Vec<String> {
    let Some(body) = body.and_then(Value::as_object) else {
        return Vec::new();
    };
    host_configs(body)
        .into_iter()
        .filter_map(|h| h.get("Devices").and_then(Value::as_array))
        .flatten()
        .filter_map(|d| d.get("PathOnHost").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

fn safe_device_names() -> String {
    eci_policy::SAFE_DEVICES
        .iter()
        .map(|d| d.path.trim_start_matches("/dev/"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// SPEC P3: `--device` and `--device-cgroup-rule` only within the safe set, the same set
/// eci-runc keeps (it drops the rest too: neither side relies on the other).
fn device_refusal(host: &Map<String, Value>, facts: &dyn EngineFacts) -> Option<Verdict> {
    let refuse = |what: String, flag: String| {
        Verdict::refuse(
            403,
            "P3",
            format!(
                "{what} is not allowed under Enhanced Container Isolation: containers may only use the devices {}; remove {flag}",
                safe_device_names()
            ),
        )
    };
    for d in host
        .get("Devices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(path) = d.get("PathOnHost").and_then(Value::as_str) else {
            continue; // dockerd refuses a device without a path
        };
        match facts.device(path) {
            Some(DeviceNode::Node { kind, major, minor }) => {
                let k = kind.to_string();
                if eci_policy::safe_device(&k, major.into(), minor.into()).is_none() {
                    let name = if kind == 'b' { "block" } else { "character" };
                    return Some(refuse(
                        format!("device {path} ({name} {major}:{minor})"),
                        format!("--device {path}"),
                    ));
                }
            }
            Some(DeviceNode::Folder) => {
                return Some(refuse(
                    format!("device folder {path} (every device below it)"),
                    format!("--device {path}"),
                ))
            }
            // dockerd answers with its own error for these.
            Some(DeviceNode::Other) | None => {}
        }
    }
    for rule in host
        .get("DeviceCgroupRules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(text) = rule.as_str() else {
            return Some(bad_body(
                "HostConfig.DeviceCgroupRules: every rule must be a string",
            ));
        };
        if !cgroup_rule_safe(text) {
            return Some(refuse(
                format!("device cgroup rule {text:?}"),
                format!("--device-cgroup-rule '{text}'"),
            ));
        }
    }
    None
}

/// `TYPE MAJOR:MINOR ACCESS` (`c 1:3 rwm`; `*` for any number): allowed only when every device
/// it can match is in the safe set.
fn cgroup_rule_safe(rule: &str) -> bool {
    let mut it = rule.split_whitespace();
    let (Some(kind), Some(numbers)) = (it.next(), it.next()) else {
        return false;
    };
    let Some((major, minor)) = numbers.split_once(':') else {
        return false;
    };
    let Ok(major) = major.parse::<i64>() else {
        return false; // `*` or garbage: more than the safe set
    };
    if kind != "c" {
        return false;
    }
    match minor {
        "*" => eci_policy::SAFE_DEVICES
            .iter()
            .any(|d| d.major == major && d.minor.is_none()),
        m => m
            .parse::<i64>()
            .is_ok_and(|m| eci_policy::safe_device("c", major, m).is_some()),
    }
}

/// The containers `HostConfig.VolumesFrom` names (`name[:ro|rw]`).
fn volumes_from(body: &Map<String, Value>) -> Vec<&str> {
    host_configs(body)
        .into_iter()
        .filter_map(|h| h.get("VolumesFrom").and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str)
        .map(|v| v.split_once(':').map_or(v, |(name, _)| name))
        .filter(|n| !n.is_empty())
        .collect()
}

/// SPEC B2 for a named volume: its driver and options (eci-policy's rule), and for a bind
/// volume its device like any bind source. `None` when the volume may be used.
fn volume_refusal<'a>(
    policy: &Policy,
    facts: &dyn EngineFacts,
    name: &str,
    driver: &str,
    options: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<Verdict> {
    match eci_policy::check_volume(name, driver, options) {
        Err(e) => {
            let mut v = Verdict::refuse(403, "B2", e.to_string());
            v.notes.push(format!("volume {name:?} driver {driver:?}"));
            Some(v)
        }
        Ok(eci_policy::VolumeSource::Bind(device)) if !bind_allowed(policy, facts, &device) => {
            let mut v = Verdict::refuse(403, "B2", restricted(&device));
            v.notes
                .push(format!("volume {name:?} is sourced from {device}"));
            Some(v)
        }
        Ok(_) => None,
    }
}

/// [`volume_refusal`] for a volume that exists in the engine.
fn existing_volume_refusal(
    policy: &Policy,
    facts: &dyn EngineFacts,
    name: &str,
    v: &crate::facts::VolumeInfo,
) -> Option<Verdict> {
    volume_refusal(
        policy,
        facts,
        name,
        &v.driver,
        v.options.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )
}

/// Options as dockerd reads them (`map[string]string`); a non-string value is refused rather
/// than guessed at.
fn string_options(
    options: &Map<String, Value>,
    what: &str,
) -> Result<Vec<(String, String)>, Verdict> {
    options
        .iter()
        .map(|(k, v)| match v.as_str() {
            Some(s) => Ok((k.clone(), s.to_string())),
            None => Err(bad_body(format!("{what}: option {k:?} must be a string"))),
        })
        .collect()
}

/// What to look up before deciding on this request (after its paths are resolved).
pub fn facts_needed(
    req: &Request,
    policy: &Policy,
    sockets: &Sockets,
    facts: &dyn EngineFacts,
) -> FactQuery {
    let mut q = FactQuery::default();
    if let Some(id) = resumed_container(req) {
        q.containers.insert(id.to_string());
        return q;
    }
    let Some(body) = req.body.and_then(Value::as_object) else {
        return q;
    };
    if req.call.endpoint != Endpoint::ContainerCreate {
        return q;
    }
    let mut socket = false;
    for source in volumes_from(body) {
        // Their mounts become this container's; judged like its own (SPEC B2, B4).
        q.containers.insert(source.to_string());
    }
    for (_, src) in mount_sources(body) {
        match src {
            Source::Path(p) => socket |= is_engine_socket(sockets, facts, &p),
            Source::Volume { name, .. } if !name.is_empty() => {
                q.volumes.insert(name);
            }
            Source::Volume { .. } => {}
        }
    }
    // A VolumesFrom source may carry the engine socket; its mounts are only known after the
    // lookup, so the image facts are gathered up front.
    socket |= !volumes_from(body).is_empty();
    if socket {
        if let Some(image) = body.get("Image").and_then(Value::as_str) {
            q.images.insert(image.to_string());
        }
        q.image_chains = policy.allow_derived;
        for rule in &policy.socket_images {
            if let eci_vm_config::ImageRule::Digest { .. } = rule {
                q.images.insert(rule.to_string());
            }
        }
    }
    for host in host_configs(body) {
        if let Some(mode) = host.get("NetworkMode").and_then(Value::as_str) {
            if needs_network_lookup(mode) {
                q.networks.insert(mode.to_string());
            }
        }
    }
    if let Some(eps) = obj(obj(body.get("NetworkingConfig")).and_then(|n| n.get("EndpointsConfig")))
    {
        for name in eps.keys().filter(|n| needs_network_lookup(n)) {
            q.networks.insert(name.clone());
        }
    }
    q
}

/// The container a start, restart or unpause names.
fn resumed_container<'r>(req: &Request<'r>) -> Option<&'r str> {
    match req.call.endpoint {
        Endpoint::ContainerStart | Endpoint::ContainerResume => {
            req.api.route.split('/').nth(2).filter(|s| !s.is_empty())
        }
        _ => None,
    }
}

/// SPEC A5: a container whose runtime is not eci was created before isolation; running it
/// again is refused with the message that says how to recreate it (eci-facts' rule and wording,
/// which eci-init logs at boot, so the boot console and the CLI agree).
fn refuse_legacy(req: &Request, facts: &dyn EngineFacts) -> Option<Verdict> {
    let id = resumed_container(req)?;
    let c = facts.container(id)?;
    if !eci_facts::legacy::is_legacy_runtime(Some(c.runtime.as_str())) {
        return None;
    }
    let name = if c.name.is_empty() {
        id
    } else {
        c.name.as_str()
    };
    let mut v = Verdict::refuse(
        409,
        "A5",
        eci_facts::legacy::refusal_message(name, &c.runtime),
    );
    v.notes
        .push(format!("container {name} has runtime {:?}", c.runtime));
    Some(v)
}

fn needs_network_lookup(mode: &str) -> bool {
    !matches!(mode, "" | "default" | "bridge" | "none" | "host") && !mode.starts_with("container:")
}

/// Decide on one request.
pub fn decide(
    req: &Request,
    policy: &Policy,
    sockets: &Sockets,
    pins: &Pins,
    facts: &dyn EngineFacts,
) -> Verdict {
    // dockerd reads query parameters from form bodies too (Go's FormValue), where the guard
    // does not look; no docker client sends them.
    if let Some(ct) = req.content_type {
        let media = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if media == "application/x-www-form-urlencoded" || media == "multipart/form-data" {
            return Verdict::refuse(
                400,
                "S4",
                format!("form-encoded request bodies ({media}) are not accepted by the engine policy; send parameters in the query string"),
            );
        }
    }
    if req.role == Role::Container && !command_allowed(policy, req.call) {
        let mut v = Verdict::refuse(
            403,
            "B6",
            format!("docker command \"{}\" is blocked", req.api.path),
        );
        v.notes.push(format!(
            "commandList {} {:?}; call is {:?} in groups {:?}",
            policy.command_list_type,
            policy
                .commands
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>(),
            req.call.commands,
            req.call.groups
        ));
        return v;
    }
    if let Some(v) = refuse_legacy(req, facts) {
        return v;
    }
    match req.call.endpoint {
        Endpoint::ContainerCreate => decide_create(req, policy, sockets, pins, facts),
        Endpoint::ContainerStart => decide_start(req, policy, facts),
        Endpoint::ContainerResume => recheck_volumes(req, policy, facts),
        Endpoint::VolumeCreate => decide_volume_create(req, policy, facts),
        Endpoint::Build => decide_build(req),
        Endpoint::SwarmInitOrJoin | Endpoint::ServiceWrite => Verdict::refuse(
            403,
            "A1",
            "swarm services are not available under Enhanced Container Isolation: their containers are created inside the engine, where the policy cannot check their mounts and namespaces",
        ),
        Endpoint::PluginInstall => Verdict::refuse(
            403,
            "A4",
            "engine plugins are not allowed under Enhanced Container Isolation: they run with VM root privileges outside the eci runtime",
        ),
        Endpoint::Grpc | Endpoint::Session | Endpoint::ImagePull | Endpoint::Other => {
            Verdict::allow()
        }
    }
}

fn bad_body(message: impl Into<String>) -> Verdict {
    Verdict::refuse(400, "S5", message)
}

fn decide_start(req: &Request, policy: &Policy, facts: &dyn EngineFacts) -> Verdict {
    match req.body {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) if o.is_empty() => {}
        Some(_) => {
            return Verdict::refuse(
                400,
                "A6",
                "a HostConfig in the start request (API before 1.24) is not accepted; give it when the container is created",
            )
        }
    }
    recheck_volumes(req, policy, facts)
}

/// dockerd mounts a container's volumes at every start and restart, with the options the
/// volume has now: a volume made before the guard saw it (or under an older policy) is judged
/// here.
fn recheck_volumes(req: &Request, policy: &Policy, facts: &dyn EngineFacts) -> Verdict {
    let container = resumed_container(req).and_then(|id| facts.container(id));
    for name in container.into_iter().flat_map(|c| c.volume_names()) {
        if let Some(v) = facts.volume(name) {
            if let Some(refusal) = existing_volume_refusal(policy, facts, name, v) {
                return refusal;
            }
        }
    }
    Verdict::allow()
}

fn decide_build(req: &Request) -> Verdict {
    let host = query_values(req.query, "networkmode")
        .iter()
        .any(|v| v.trim().eq_ignore_ascii_case("host"));
    if host {
        return Verdict::refuse(
            403,
            "D1",
            "docker build --network=host is not allowed: build steps would share the VM's network namespace",
        );
    }
    Verdict::allow()
}

fn decide_volume_create(req: &Request, policy: &Policy, facts: &dyn EngineFacts) -> Verdict {
    let Some(body) = req.body.and_then(Value::as_object) else {
        return Verdict::allow();
    };
    if let Err(e) = check_keys(body, &[VOLUME_CREATE_FIELDS], "volume config") {
        return bad_body(e);
    }
    let name = body.get("Name").and_then(Value::as_str).unwrap_or("");
    let driver = body.get("Driver").and_then(Value::as_str).unwrap_or("");
    let options = match obj(body.get("DriverOpts")).map(|o| string_options(o, "DriverOpts")) {
        None => Vec::new(),
        Some(Ok(o)) => o,
        Some(Err(v)) => return v,
    };
    let pairs = options.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    if let Some(refusal) = volume_refusal(policy, facts, name, driver, pairs) {
        return refusal;
    }
    let mut v = Verdict::allow();
    if let Some(path) = obj(body.get("DriverOpts")).and_then(|o| volume_source_path(driver, o)) {
        v.rules.push("B1");
        v.notes
            .push(format!("volume device {path} is in a shared directory"));
    }
    v
}

const NAMESPACES: &[(&str, &str)] = &[
    ("PidMode", "pid"),
    ("IpcMode", "ipc"),
    ("UTSMode", "uts"),
    ("NetworkMode", "network"),
];

fn decide_create(
    req: &Request,
    policy: &Policy,
    sockets: &Sockets,
    pins: &Pins,
    facts: &dyn EngineFacts,
) -> Verdict {
    let body = match req.body {
        Some(Value::Object(o)) => o,
        // Empty or non-object bodies: dockerd answers with its own decode error.
        _ => return Verdict::allow(),
    };
    if let Err(e) = check_create_keys(body) {
        return bad_body(e);
    }
    let mut rules: Vec<&'static str> = Vec::new();
    let mut notes: Vec<String> = Vec::new();

    // A6: host namespaces.
    for host in host_configs(body) {
        for (field, ns) in NAMESPACES {
            let Some(mode) = host.get(*field).and_then(Value::as_str) else {
                continue;
            };
            let host_net = *field == "NetworkMode"
                && needs_network_lookup(mode)
                && facts.network_driver(mode) == Some("host");
            if mode == "host" || host_net {
                let flag = if *ns == "network" { "network" } else { ns };
                return Verdict::refuse(
                    403,
                    "A6",
                    format!("sharing the VM's {ns} namespace (--{flag}=host) is not allowed: containers run in their own {ns} namespace under Enhanced Container Isolation"),
                );
            }
        }
    }
    if let Some(eps) = obj(obj(body.get("NetworkingConfig")).and_then(|n| n.get("EndpointsConfig")))
    {
        for name in eps.keys() {
            if name == "host" || facts.network_driver(name) == Some("host") {
                return Verdict::refuse(
                    403,
                    "A6",
                    format!("connecting to the host network ({name}) is not allowed: containers run in their own network namespace under Enhanced Container Isolation"),
                );
            }
        }
    }

    // P3: devices.
    for host in host_configs(body) {
        if let Some(v) = device_refusal(host, facts) {
            return v;
        }
    }

    // B2, B4: mounts.
    let mut socket_sites: Vec<Site> = Vec::new();
    for (site, src) in mount_sources(body) {
        match src {
            Source::Path(p) => {
                if is_engine_socket(sockets, facts, &p) {
                    socket_sites.push(site);
                } else if !bind_allowed(policy, facts, &p) {
                    let mut v = Verdict::refuse(403, "B2", restricted(&p));
                    v.notes.push(format!("bind source {p}"));
                    return v;
                } else {
                    rules.push("B1");
                }
            }
            Source::Volume {
                name,
                driver,
                options,
            } => {
                // An existing volume keeps its own options; a new one (anonymous ones too)
                // gets the request's. Both are judged: dockerd refuses a driver that differs
                // from the existing volume's but ignores other options.
                let existing = (!name.is_empty()).then(|| facts.volume(&name)).flatten();
                if let Some(v) = existing {
                    if let Some(refusal) = existing_volume_refusal(policy, facts, &name, v) {
                        return refusal;
                    }
                }
                if driver.is_some() || options.is_some() || existing.is_none() {
                    let opts = match options.as_ref().map(|o| string_options(o, "DriverConfig")) {
                        None => Vec::new(),
                        Some(Ok(o)) => o,
                        Some(Err(v)) => return v,
                    };
                    let pairs = opts.iter().map(|(k, v)| (k.as_str(), v.as_str()));
                    let driver = driver.as_deref().unwrap_or("");
                    if let Some(refusal) = volume_refusal(policy, facts, &name, driver, pairs) {
                        return refusal;
                    }
                }
            }
        }
    }

    // VolumesFrom: the source container's mounts, by the same rules (SPEC B2, B4).
    let mut socket_from: Vec<String> = Vec::new();
    for source in volumes_from(body) {
        let Some(c) = facts.container(source) else {
            continue; // dockerd answers "No such container"
        };
        for m in &c.mounts {
            match m.kind.as_str() {
                "bind" if is_engine_socket(sockets, facts, &m.source) => {
                    socket_from.push(source.to_string());
                }
                "bind" if !bind_allowed(policy, facts, &m.source) => {
                    let mut v = Verdict::refuse(403, "B2", restricted(&m.source));
                    v.notes
                        .push(format!("--volumes-from {source}: bind source {}", m.source));
                    return v;
                }
                "volume" => {
                    let Some(info) = facts.volume(&m.name) else {
                        continue;
                    };
                    if let Some(mut refusal) = existing_volume_refusal(policy, facts, &m.name, info)
                    {
                        refusal.notes.push(format!("--volumes-from {source}"));
                        return refusal;
                    }
                }
                _ => {}
            }
        }
    }

    let mut new_body = body.clone();
    let mut pin_updates = Vec::new();
    if !socket_sites.is_empty() || !socket_from.is_empty() {
        let Some(container_socket) = sockets.container.as_deref() else {
            return Verdict::refuse(
                403,
                "B4",
                "mounting the Docker engine socket needs the guard's container socket (eci-guard --listen container=PATH), which is not configured",
            );
        };
        let image = body
            .get("Image")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if image.is_empty() {
            return Verdict::refuse(
                403,
                "B4",
                "a container that mounts the Docker engine socket must name its image",
            );
        }
        if facts.image(image).is_none() {
            // The CLI pulls on a 404 and creates again, as it does against dockerd.
            let mut v = Verdict::refuse(404, "B4", format!("No such image: {image}"));
            v.notes
                .push("socket mount: image not present, cannot check it yet".into());
            return v;
        }
        match socket_image_allowed(policy, pins, facts, image) {
            SocketImage::Denied { reason } => return Verdict::refuse(403, "B4", reason),
            SocketImage::Allowed { via, pins } => {
                rules.push(if via.starts_with("derived") {
                    "B5"
                } else {
                    "B4"
                });
                notes.push(format!(
                    "engine socket mount of {image} allowed by {via}; source -> {container_socket}"
                ));
                for source in &socket_from {
                    notes.push(format!("engine socket from --volumes-from {source}"));
                }
                pin_updates = pins;
                for site in &socket_sites {
                    repoint(&mut new_body, site, container_socket);
                }
            }
        }
    }

    // A6: --userns=host is ignored, --cgroupns=host becomes private (P5).
    for inner in [false, true] {
        let Some(host) = host_mut(&mut new_body, inner) else {
            continue;
        };
        if host.get("UsernsMode").and_then(Value::as_str) == Some("host") {
            host.insert("UsernsMode".into(), Value::String(String::new()));
            rules.push("A6");
            notes.push(
                "UsernsMode \"host\" ignored: the container keeps its own user namespace".into(),
            );
        }
        if host.get("CgroupnsMode").and_then(Value::as_str) == Some("host") {
            host.insert("CgroupnsMode".into(), Value::String("private".into()));
            rules.push("P5");
            notes.push("CgroupnsMode \"host\" -> \"private\"".into());
        }
    }

    // A3: the runtime. Set where dockerd reads it: the HostConfig member if there is one,
    // otherwise the embedded top-level HostConfig.
    let inner = obj(new_body.get("HostConfig")).is_some();
    let host = host_mut(&mut new_body, inner).expect("the top level is an object");
    let was = host.get("Runtime").cloned();
    if was.as_ref().and_then(Value::as_str) != Some(policy.runtime.as_str()) {
        host.insert("Runtime".into(), Value::String(policy.runtime.clone()));
        rules.push("A3");
        notes.push(match was {
            None | Some(Value::Null) => format!("Runtime unset -> {:?}", policy.runtime),
            Some(v) => format!("Runtime {v} -> {:?}", policy.runtime),
        });
    }
    if inner {
        // A top-level Runtime is ignored next to a HostConfig member; make that explicit.
        if let Some(top) = new_body.get_mut("Runtime") {
            *top = Value::String(policy.runtime.clone());
        }
    }

    rules.dedup();
    let new_body = Value::Object(new_body);
    let decision = if Some(&new_body) == req.body {
        Decision::Allow
    } else {
        Decision::Rewrite(new_body)
    };
    Verdict {
        decision,
        rules,
        notes,
        pins: pin_updates,
    }
}

fn host_mut(body: &mut Map<String, Value>, inner: bool) -> Option<&mut Map<String, Value>> {
    if inner {
        body.get_mut("HostConfig").and_then(Value::as_object_mut)
    } else {
        Some(body)
    }
}

fn repoint(body: &mut Map<String, Value>, site: &Site, socket: &str) {
    match site {
        Site::Bind { inner, index } => {
            let Some(host) = host_mut(body, *inner) else {
                return;
            };
            if let Some(Value::String(spec)) = host
                .get_mut("Binds")
                .and_then(Value::as_array_mut)
                .and_then(|a| a.get_mut(*index))
            {
                if let Some((_, rest)) = spec.split_once(':') {
                    *spec = format!("{socket}:{rest}");
                }
            }
        }
        Site::Mount { inner, index } => {
            let Some(host) = host_mut(body, *inner) else {
                return;
            };
            if let Some(m) = host
                .get_mut("Mounts")
                .and_then(Value::as_array_mut)
                .and_then(|a| a.get_mut(*index))
                .and_then(Value::as_object_mut)
            {
                m.insert("Source".into(), Value::String(socket.to_string()));
            }
        }
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
