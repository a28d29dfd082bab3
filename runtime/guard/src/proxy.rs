//! The edge: unix-socket listeners, HTTP/1 with upgrades (hyper), forwarding to dockerd.
//!
//! Per request: parse the path like dockerd, read the JSON body only for the endpoints the
//! policy inspects (capped), gather facts from the engine, call [`decide`], audit, and then
//! either answer with Docker's error shape or forward. Everything else (build contexts,
//! image tarballs, log and event streams, attach/exec/BuildKit upgrades) streams through.

use std::convert::Infallible;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin as StdPin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request as HttpRequest, Response, StatusCode};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::{json, Value};
use tokio::net::UnixListener;
use tokio::sync::{Mutex as AsyncMutex, Semaphore};

use crate::audit::{now_rfc3339, AuditLog, Record};
use crate::engine::{connect, empty, full, real_path, Body, Engine};
use crate::facts::Facts;
use crate::images::{first_seen_pins, pull_pins};
use crate::paths::{clean, parse_query, query_first, ApiPath};
use crate::pins::{write_atomic, PinStore};
use crate::policy::{
    decide, facts_needed, needs_body, paths_to_resolve, Decision, Request, Role, Sockets,
};
use crate::routes::{classify, Endpoint};
use crate::settings::{parse_settings, Policy};

/// One listening socket and the role of the requests that arrive on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub path: PathBuf,
    pub role: Role,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listeners: Vec<Listener>,
    pub upstream: PathBuf,
    pub settings: PathBuf,
    pub audit_log: PathBuf,
    /// The audit log becomes `<file>.1` past this size.
    pub audit_log_max_bytes: u64,
    /// Image pins and the last good settings; `None` keeps them in memory.
    pub state_dir: Option<PathBuf>,
    /// Other paths that name the engine socket in bind mounts (`/var/run/docker.sock`).
    pub engine_aliases: Vec<PathBuf>,
    pub socket_mode: u32,
    /// Group given to the user-role sockets (the VM's `docker` group); `None` keeps the
    /// guard's own group. The container socket stays root's: eci-runc idmaps its bind mount,
    /// so container root is its owner.
    pub socket_group: Option<u32>,
    /// Cap on JSON bodies the policy reads.
    pub max_body: usize,
    pub settings_poll: Duration,
    /// How long to wait for dockerd at start before serving without first-seen pins.
    pub upstream_wait: Duration,
    pub max_connections: usize,
    /// AF_VSOCK ports served with the user role to the host only (SPEC H2, [`crate::vsock`]).
    pub vsock_ports: Vec<u32>,
}

impl Config {
    pub fn new(
        listeners: Vec<Listener>,
        upstream: PathBuf,
        settings: PathBuf,
        audit_log: PathBuf,
    ) -> Config {
        Config {
            listeners,
            upstream,
            settings,
            audit_log,
            audit_log_max_bytes: crate::audit::DEFAULT_MAX_BYTES,
            state_dir: None,
            engine_aliases: vec![
                "/var/run/docker.sock".into(),
                eci_facts::vm_paths::ENGINE_SOCKET.into(),
            ],
            socket_mode: 0o660,
            socket_group: None,
            max_body: 16 << 20,
            settings_poll: Duration::from_secs(2),
            upstream_wait: Duration::from_secs(30),
            max_connections: 4096,
            vsock_ports: Vec::new(),
        }
    }
}

pub const LAST_GOOD_SETTINGS: &str = "last-good-settings.json";

/// State shared by every connection.
pub struct Shared {
    policy: RwLock<Arc<Policy>>,
    sockets: Sockets,
    pins: PinStore,
    audit: AuditLog,
    engine: Engine,
    max_body: usize,
    /// Idle upstream connections left by client connections that ended; a new client
    /// connection starts on one of these instead of connecting to dockerd again.
    idle: std::sync::Mutex<Vec<SendRequest<Body>>>,
}

/// Most idle upstream connections kept.
const IDLE_UPSTREAMS: usize = 32;

impl Shared {
    fn take_idle(&self) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(s) = idle.pop() {
            if s.is_ready() {
                return Some(s);
            }
        }
        None
    }

    fn give_idle(&self, s: SendRequest<Body>) {
        if s.is_ready() {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < IDLE_UPSTREAMS {
                idle.push(s);
            }
        }
    }

    fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Paths naming the engine socket: as written and with symlinked folders resolved (the
/// socket itself may not exist yet).
fn engine_socket_names(paths: &[PathBuf]) -> Vec<String> {
    let mut out = Vec::new();
    for p in paths {
        let Some(s) = p.to_str() else { continue };
        let lexical = clean(s);
        if let Some(real) = real_path(&lexical) {
            out.push(real);
        }
        out.push(lexical);
    }
    out.sort();
    out.dedup();
    out
}

/// Read and parse the settings file once; the text is returned with the policy so the copy
/// kept as "last good" is exactly what was parsed.
fn read_settings(path: &Path) -> Result<(Policy, Vec<String>, String), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read settings file {}: {e}", path.display()))?;
    let loaded = parse_settings(&text, &path.display().to_string()).map_err(|e| e.to_string())?;
    let warnings = loaded.warnings.iter().map(|w| w.to_string()).collect();
    Ok((loaded.policy, warnings, text))
}

/// Load settings; when the file is bad, fall back to the last good copy in the state folder.
fn initial_policy(config: &Config, audit: &AuditLog) -> anyhow::Result<Policy> {
    let last = config
        .state_dir
        .as_ref()
        .map(|d| d.join(LAST_GOOD_SETTINGS));
    match read_settings(&config.settings) {
        Ok((policy, warnings, text)) => {
            for w in warnings {
                audit.write(&Record::event("settings", "info", w));
            }
            if let (Some(dir), Some(last)) = (&config.state_dir, &last) {
                std::fs::create_dir_all(dir)?;
                write_atomic(last, text.as_bytes())?;
            }
            Ok(policy)
        }
        Err(e) => match last.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
            Some(text) => {
                let msg = format!(
                    "{e}\nusing the last good settings from {}",
                    last.as_ref().expect("read above").display()
                );
                eprintln!("eci-guard: {msg}");
                audit.write(&Record::event("settings", "error", msg));
                Ok(parse_settings(&text, LAST_GOOD_SETTINGS)?.policy)
            }
            None => Err(anyhow::anyhow!("{e}")),
        },
    }
}

/// Pin the allowed references the engine has now (see [`crate::images`]).
async fn pin_first_seen(shared: &Shared) -> Result<usize, String> {
    let policy = shared.policy();
    if policy.socket_images.is_empty() {
        return Ok(0);
    }
    let images = shared
        .engine
        .images_tagged(|tag| crate::images::in_scope(&policy, tag))
        .await
        .map_err(|e| e.to_string())?;
    let updates = first_seen_pins(&policy, &shared.pins.snapshot(), &images);
    shared.pins.apply(&updates).map_err(|e| e.to_string())?;
    for u in &updates {
        shared.audit.write(&Record::event(
            "pin",
            "info",
            format!("{} pinned to {} (first seen)", u.reference, u.pin.id),
        ));
    }
    Ok(updates.len())
}

/// Run the guard until the process is stopped.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let audit =
        AuditLog::open_rotating(&config.audit_log, config.audit_log_max_bytes).map_err(|e| {
            anyhow::anyhow!(
                "cannot open the audit log {}: {e}",
                config.audit_log.display()
            )
        })?;
    let policy = initial_policy(&config, &audit)?;
    let pins = match &config.state_dir {
        Some(d) => PinStore::open(d)?,
        None => PinStore::in_memory(),
    };
    let mut engine_paths: Vec<PathBuf> = config
        .listeners
        .iter()
        .filter(|l| l.role == Role::User)
        .map(|l| l.path.clone())
        .collect();
    engine_paths.extend(config.engine_aliases.iter().cloned());
    let container = config
        .listeners
        .iter()
        .find(|l| l.role == Role::Container)
        .map(|l| clean(&l.path.to_string_lossy()));
    let sockets = Sockets {
        engine: engine_socket_names(&engine_paths),
        container,
    };
    let shared = Arc::new(Shared {
        policy: RwLock::new(Arc::new(policy)),
        sockets,
        pins,
        audit,
        engine: Engine::new(&config.upstream),
        max_body: config.max_body,
        idle: std::sync::Mutex::new(Vec::new()),
    });

    // Pin before serving, so the first socket-mount check already knows the allowed images.
    let deadline = tokio::time::Instant::now() + config.upstream_wait;
    loop {
        match pin_first_seen(&shared).await {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                shared.audit.write(&Record::event(
                    "pin",
                    "error",
                    format!("cannot list images yet: {e}; retrying in the background"),
                ));
                let s = shared.clone();
                tokio::spawn(async move {
                    while pin_first_seen(&s).await.is_err() {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                });
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }

    let limit = Arc::new(Semaphore::new(config.max_connections));
    let mut tasks = Vec::new();
    for l in &config.listeners {
        let group = match l.role {
            Role::User => config.socket_group,
            Role::Container => None,
        };
        let listener = bind(&l.path, config.socket_mode, group)?;
        shared.audit.write(&Record::event(
            "start",
            "info",
            format!(
                "listening on {} ({} role), upstream {}",
                l.path.display(),
                l.role.as_str(),
                config.upstream.display()
            ),
        ));
        tasks.push(tokio::spawn(accept_loop(
            listener,
            l.clone(),
            shared.clone(),
            limit.clone(),
        )));
    }
    for &port in &config.vsock_ports {
        // The host endpoint failing must not take the VM's own sockets down with it: say so
        // loudly and serve the rest.
        let listener = match crate::vsock::VsockListener::bind(port) {
            Ok(l) => l,
            Err(e) => {
                let message = format!(
                    "cannot listen on vsock port {port}: {e}; the host cannot reach the engine (SPEC H2)"
                );
                eprintln!("eci-guard: {message}");
                shared
                    .audit
                    .write(&Record::event("start", "error", message));
                continue;
            }
        };
        shared.audit.write(&Record::event(
            "start",
            "info",
            format!(
                "listening on vsock port {port} (user role, host CID {} only), upstream {}",
                crate::vsock::HOST_CID,
                config.upstream.display()
            ),
        ));
        // Through QEMU's user-space vsock backend a half close needs a side channel and tagged
        // streams (crate::vsock says why); both are served beside the plain port.
        let halves = crate::vsock::HalfCloses::default();
        let side = crate::vsock::half_close_port(port);
        let tagged = crate::vsock::tagged_port(port);
        match (
            crate::vsock::VsockListener::bind(side),
            crate::vsock::VsockListener::bind(tagged),
        ) {
            (Ok(side), Ok(tagged)) => {
                tokio::spawn(crate::vsock::serve_half_closes(side, halves.clone()));
                tasks.push(tokio::spawn(vsock_accept_loop(
                    tagged,
                    shared.clone(),
                    limit.clone(),
                    Some(halves),
                )));
            }
            (Err(e), _) | (_, Err(e)) => {
                let message = format!(
                    "cannot listen on vsock ports {side} and {tagged}: {e}; host clients that end their input early (docker run) may lose the answer"
                );
                eprintln!("eci-guard: {message}");
                shared
                    .audit
                    .write(&Record::event("start", "error", message));
            }
        }
        tasks.push(tokio::spawn(vsock_accept_loop(
            listener,
            shared.clone(),
            limit.clone(),
            None,
        )));
    }
    tokio::spawn(watch_settings(config.clone(), shared.clone()));
    for t in tasks {
        t.await?;
    }
    Ok(())
}

fn bind(path: &Path, mode: u32, group: Option<u32>) -> anyhow::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => anyhow::bail!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        ),
        Err(_) => {}
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let l = UnixListener::bind(path)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", path.display()))?;
    // Group before mode: the socket is never group-accessible to the wrong group.
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(|e| anyhow::anyhow!("cannot give {} to group {gid}: {e}", path.display()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(l)
}

async fn accept_loop(
    listener: UnixListener,
    l: Listener,
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
) {
    loop {
        let permit = match limit.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => return,
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                eprintln!("eci-guard: accept on {}: {e}", l.path.display());
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let cred = stream.peer_cred().ok();
        let peer = Peer {
            role: l.role,
            socket: l.path.display().to_string(),
            pid: cred.as_ref().and_then(|c| c.pid()),
            uid: cred.as_ref().map(|c| c.uid()),
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, shared).await;
            drop(permit);
        });
    }
}

/// The host's connections over vsock: the CID is checked before anything is read (SPEC H2).
async fn vsock_accept_loop(
    listener: crate::vsock::VsockListener,
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
    tagged: Option<crate::vsock::HalfCloses>,
) {
    let port = listener.port();
    loop {
        let permit = match limit.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => return,
        };
        let (stream, cid) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("eci-guard: accept on vsock port {port}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !crate::vsock::peer_allowed(cid) {
            let message = crate::vsock::refusal(cid, port);
            eprintln!("eci-guard: {message}");
            shared
                .audit
                .write(&Record::event("vsock", "refuse", message));
            // Dropping the stream closes it: the peer sees its connection end unanswered.
            continue;
        }
        let peer = Peer {
            role: Role::User,
            socket: format!("vsock:{cid}:{port}"),
            pid: None,
            uid: None,
        };
        let shared = shared.clone();
        let tagged = tagged.clone();
        tokio::spawn(async move {
            let stream = match tagged {
                None => stream,
                Some(halves) => {
                    let tag = tokio::time::timeout(
                        Duration::from_secs(10),
                        crate::vsock::read_tag(stream, &halves),
                    )
                    .await;
                    match tag {
                        Ok(Ok(s)) => s,
                        _ => return,
                    }
                }
            };
            serve_connection(stream, peer, shared).await;
            drop(permit);
        });
    }
}

/// Who is on the other end of a client connection, for the policy and the audit log.
struct Peer {
    role: Role,
    /// The listening socket as the audit log names it: a path, or `vsock:CID:PORT`.
    socket: String,
    pid: Option<i32>,
    uid: Option<u32>,
}

/// Per client connection: who it is and the upstream connection it reuses.
struct Conn {
    peer: Peer,
    upstream: AsyncMutex<Option<SendRequest<Body>>>,
    shared: Arc<Shared>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(s) = self.upstream.get_mut().take() {
            self.shared.give_idle(s);
        }
    }
}

async fn serve_connection<S>(stream: S, peer: Peer, shared: Arc<Shared>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(Conn {
        peer,
        upstream: AsyncMutex::new(None),
        shared: shared.clone(),
    });
    let service = service_fn(move |req| {
        let shared = shared.clone();
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(handle(shared, conn, req).await) }
    });
    // Client hang-ups and malformed HTTP end the connection here; hyper has already answered
    // 4xx where an answer was possible, and nothing else is shared with other connections.
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(60))
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
}

/// Docker's error shape; the CLI prints `Error response from daemon: <message>`.
pub fn docker_error(status: u16, message: &str) -> Response<Body> {
    let body = serde_json::to_vec(&json!({ "message": message })).expect("json");
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .body(full(body))
        .expect("static response parts are valid")
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Copy end-to-end headers. For upgrades, `Connection` and `Upgrade` are the point of the
/// request and go through.
fn copy_headers(from: &HeaderMap, upgrade: bool) -> HeaderMap {
    let listed: Vec<String> = from
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::with_capacity(from.len());
    for (name, value) in from {
        let n = name.as_str();
        let hop = HOP_BY_HOP.contains(&n) || listed.iter().any(|l| l == n);
        let keep_for_upgrade = upgrade && (n == "connection" || n == "upgrade");
        if !hop || keep_for_upgrade {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

fn wants_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

struct AuditCtx<'a> {
    shared: &'a Shared,
    conn: &'a Conn,
    method: String,
    path: String,
}

impl AuditCtx<'_> {
    fn write(
        &self,
        decision: &'static str,
        status: u16,
        rules: Vec<&'static str>,
        message: Option<String>,
        notes: Vec<String>,
    ) {
        self.shared.audit.write(&Record {
            time: now_rfc3339(),
            event: "request",
            listener: Some(self.conn.peer.role.as_str()),
            socket: Some(self.conn.peer.socket.clone()),
            peer_pid: self.conn.peer.pid,
            peer_uid: self.conn.peer.uid,
            method: Some(self.method.clone()),
            path: Some(self.path.clone()),
            decision,
            status: Some(status),
            rules,
            message,
            notes,
        });
    }

    fn refuse(
        &self,
        status: u16,
        rules: Vec<&'static str>,
        message: String,
        notes: Vec<String>,
    ) -> Response<Body> {
        self.write("refuse", status, rules, Some(message.clone()), notes);
        docker_error(status, &message)
    }
}

enum Outgoing {
    /// Replayable: buffered JSON, a rewritten body, or nothing.
    Bytes(Option<Bytes>),
    Stream(Incoming),
}

async fn handle(
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    mut req: HttpRequest<Incoming>,
) -> Response<Body> {
    let raw_path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().as_str().to_string();
    let mut ctx = AuditCtx {
        shared: &shared,
        conn: &conn,
        method: method.clone(),
        path: raw_path.clone(),
    };
    let api = match ApiPath::parse(&raw_path) {
        Ok(a) => a,
        Err(e) => return ctx.refuse(400, vec![], format!("bad request path: {e}"), vec![]),
    };
    ctx.path = api.path.clone();
    let query = parse_query(&raw_query);
    let call = classify(&method, &api.segments(), &query);
    let upgrade = wants_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let policy = shared.policy();
    let (parts, body) = req.into_parts();

    let mut json_body: Option<Value> = None;
    let mut outgoing = if needs_body(&call) {
        let mut body = body;
        let bytes = match read_capped(&mut body, shared.max_body).await {
            Ok(b) => b,
            Err(ReadError::TooLarge) => {
                // Let the client finish sending so it reads the answer instead of a reset.
                drain(body).await;
                return ctx.refuse(
                    413,
                    vec![],
                    format!(
                        "request body is larger than the {} bytes the engine policy reads",
                        shared.max_body
                    ),
                    vec![],
                );
            }
            Err(ReadError::Body(e)) => {
                return ctx.refuse(
                    400,
                    vec![],
                    format!("cannot read the request body: {e}"),
                    vec![],
                )
            }
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            json_body = Some(Value::Null);
        } else {
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) => json_body = Some(v),
                Err(e) => {
                    return ctx.refuse(
                        400,
                        vec![],
                        format!("malformed JSON in the request body: {e}"),
                        vec![],
                    )
                }
            }
        }
        Outgoing::Bytes(Some(bytes))
    } else if body.is_end_stream() {
        Outgoing::Bytes(None)
    } else {
        Outgoing::Stream(body)
    };

    let view = Request {
        method: &method,
        api: &api,
        query: &query,
        call: &call,
        content_type: content_type.as_deref(),
        role: conn.peer.role,
        body: json_body.as_ref(),
    };
    let mut facts = Facts::default();
    for p in paths_to_resolve(json_body.as_ref()) {
        if let Some(real) = real_path(&p) {
            facts.real_paths.insert(p, real);
        }
    }
    for p in crate::policy::devices_to_stat(json_body.as_ref()) {
        if let Some(node) = crate::engine::device_node(&p) {
            facts.devices.insert(p, node);
        }
    }
    let q = facts_needed(&view, &policy, &shared.sockets, &facts);
    if !q.is_empty() {
        if let Err(e) = shared.engine.gather(&q, &mut facts).await {
            return ctx.refuse(
                502,
                vec![],
                format!("the engine policy could not inspect the request: {e}"),
                vec![],
            );
        }
        // Existing volumes' devices and the bind sources of containers named by VolumesFrom
        // are bind sources too; resolve their symlinks as well.
        let devices: Vec<String> = facts
            .volumes
            .values()
            .filter_map(crate::policy::volume_device)
            .chain(
                facts
                    .containers
                    .values()
                    .flat_map(|c| &c.mounts)
                    .filter(|m| m.kind == "bind")
                    .map(|m| crate::paths::clean(&m.source)),
            )
            .collect();
        for p in devices {
            if let Some(real) = real_path(&p) {
                facts.real_paths.insert(p, real);
            }
        }
    }
    let pins = shared.pins.snapshot();
    let verdict = decide(&view, &policy, &shared.sockets, &pins, &facts);
    if let Decision::Refuse { status, message } = &verdict.decision {
        if let Outgoing::Stream(incoming) = outgoing {
            drain(incoming).await;
        }
        return ctx.refuse(
            *status,
            verdict.rules.clone(),
            message.clone(),
            verdict.notes.clone(),
        );
    }
    if let Err(e) = shared.pins.apply(&verdict.pins) {
        shared
            .audit
            .write(&Record::event("pin", "error", e.to_string()));
    }
    let mut headers = copy_headers(&parts.headers, upgrade);
    if let Decision::Rewrite(v) = &verdict.decision {
        let bytes = serde_json::to_vec(v).expect("a JSON value serialises");
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        outgoing = Outgoing::Bytes(Some(Bytes::from(bytes)));
    }

    let mut uri = api.encoded();
    if !raw_query.is_empty() {
        uri.push('?');
        uri.push_str(&raw_query);
    }
    let build = |body: Body| -> HttpRequest<Body> {
        let mut r = HttpRequest::builder()
            .method(parts.method.clone())
            .uri(uri.as_str())
            .body(body)
            .expect("method and uri came from a parsed request");
        *r.headers_mut() = headers.clone();
        r
    };

    let sent = match outgoing {
        Outgoing::Bytes(bytes) if !upgrade => send_reusing(&shared, &conn, &build, bytes).await,
        Outgoing::Bytes(bytes) => {
            send_fresh(&shared, build(bytes.map(full).unwrap_or_else(empty))).await
        }
        Outgoing::Stream(incoming) => {
            send_fresh(&shared, build(incoming.map_err(Into::into).boxed())).await
        }
    };
    let mut resp = match sent {
        Ok(r) => r,
        Err(e) => {
            return ctx.refuse(
                502,
                verdict.rules,
                format!("cannot reach the engine: {e}"),
                verdict.notes,
            )
        }
    };
    let status = resp.status();
    ctx.write(
        verdict.kind(),
        status.as_u16(),
        verdict.rules.clone(),
        None,
        verdict.notes.clone(),
    );

    if status == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let grpc = call.endpoint == Endpoint::Grpc;
            let (shared, conn) = (shared.clone(), conn.clone());
            tokio::spawn(async move {
                let (Ok(client), Ok(upstream)) = tokio::join!(client_upgrade, upstream_upgrade)
                else {
                    return;
                };
                if grpc {
                    grpc_passthrough(client, upstream, shared, conn).await;
                    return;
                }
                let mut client = TokioIo::new(client);
                let mut upstream = TokioIo::new(upstream);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
            let mut out = Response::builder().status(status);
            *out.headers_mut().expect("builder") = resp.headers().clone();
            return out.body(empty()).expect("valid response");
        }
    }

    let (rparts, rbody) = resp.into_parts();
    let mut out = Response::builder().status(rparts.status);
    *out.headers_mut().expect("builder") = copy_headers(&rparts.headers, false);
    let mut body: Body = rbody.map_err(Into::into).boxed();
    if call.endpoint == Endpoint::ImagePull && status.is_success() {
        if let Some(reference) = pulled_reference(&query) {
            body = OnEnd::wrap(body, repin_after_pull(shared.clone(), reference));
        }
    }
    out.body(body).expect("valid response")
}

/// Most a BuildKit Solve request may carry (its LLB definition) for the guard to read it.
const SOLVE_LIMIT: usize = 64 << 20;

/// BuildKit's control API after the h2c upgrade: HTTP/2 terminated on both sides, Solve
/// calls checked (SPEC D2), every other stream forwarded as it comes.
async fn grpc_passthrough(
    client: hyper::upgrade::Upgraded,
    upstream: hyper::upgrade::Upgraded,
    shared: Arc<Shared>,
    conn: Arc<Conn>,
) {
    let Ok((sender, connection)) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, Body>(upstream)
        .await
    else {
        return;
    };
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let service = service_fn(move |req: HttpRequest<Incoming>| {
        let sender = sender.clone();
        let shared = shared.clone();
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(grpc_forward(sender, &shared, &conn, req).await) }
    });
    // Upgraded streams already speak hyper's IO traits.
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(client, service)
        .await;
}

/// A trailers-only gRPC error: what a gRPC client reports as `rpc error: code = ... desc = ...`.
fn grpc_error(code: u8, message: &str) -> Response<Body> {
    let printable: String = message
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect::<String>()
        .replace('%', "%25");
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/grpc")
        .header("grpc-status", code.to_string())
        .header("grpc-message", printable)
        .body(empty())
        .expect("valid response")
}

async fn grpc_forward(
    mut sender: hyper::client::conn::http2::SendRequest<Body>,
    shared: &Shared,
    conn: &Conn,
    req: HttpRequest<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let (parts, mut body) = req.into_parts();
    let ctx = AuditCtx {
        shared,
        conn,
        method: parts.method.to_string(),
        path: format!("/grpc{path}"),
    };
    let body: Body = if path == crate::grpc::SOLVE_PATH {
        let bytes = match read_capped(&mut body, SOLVE_LIMIT).await {
            Ok(b) => b,
            Err(_) => {
                let msg = format!("BuildKit Solve request larger than {SOLVE_LIMIT} bytes or unreadable; the guard must read it");
                ctx.write("refuse", 200, vec!["D2"], Some(msg.clone()), vec![]);
                return grpc_error(8, &msg);
            }
        };
        if let Some(reason) = crate::grpc::check_solve_body(&bytes) {
            ctx.write(
                "refuse",
                200,
                vec!["D2"],
                Some(reason.clone()),
                vec!["grpc-status 7".into()],
            );
            return grpc_error(7, &reason);
        }
        ctx.write(
            "allow",
            200,
            vec!["D2"],
            None,
            vec!["no forbidden entitlements".into()],
        );
        full(bytes)
    } else {
        body.map_err(Into::into).boxed()
    };
    match sender
        .send_request(HttpRequest::from_parts(parts, body))
        .await
    {
        Ok(resp) => resp.map(|b| b.map_err(Into::into).boxed()),
        Err(e) => grpc_error(14, &format!("the engine's BuildKit did not answer: {e}")),
    }
}

enum ReadError {
    TooLarge,
    Body(hyper::Error),
}

/// The whole body, or `TooLarge` as soon as it passes `max` (the rest stays unread).
async fn read_capped(body: &mut Incoming, max: usize) -> Result<Bytes, ReadError> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(ReadError::Body)?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(ReadError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Most a refused request's body is read and thrown away, and for how long, before the
/// answer goes out anyway.
const DRAIN_BYTES: usize = 1 << 30;
const DRAIN_TIME: Duration = Duration::from_secs(30);

/// Read and discard a refused request's body: a client still writing (a build context) gets
/// a broken pipe instead of the refusal if the connection is answered and closed under it.
async fn drain(mut body: Incoming) {
    let deadline = tokio::time::Instant::now() + DRAIN_TIME;
    let mut seen = 0usize;
    while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, body.frame()).await {
        if let Some(d) = frame.data_ref() {
            seen += d.len();
            if seen > DRAIN_BYTES {
                return;
            }
        }
    }
}

async fn send_fresh(shared: &Shared, req: HttpRequest<Body>) -> Result<Response<Incoming>, String> {
    let mut sender = connect(&shared.engine.socket)
        .await
        .map_err(|e| e.to_string())?;
    sender.send_request(req).await.map_err(|e| e.to_string())
}

/// Send on the connection's cached upstream connection when it is idle; a request the old
/// connection could not send at all is sent once more on a new one (its body is bytes).
async fn send_reusing(
    shared: &Shared,
    conn: &Conn,
    build: &(dyn Fn(Body) -> HttpRequest<Body> + Sync),
    bytes: Option<Bytes>,
) -> Result<Response<Incoming>, String> {
    let body = || bytes.clone().map(full).unwrap_or_else(empty);
    let mut slot = conn.upstream.lock().await;
    if slot.is_none() {
        *slot = shared.take_idle();
    }
    if let Some(mut sender) = slot.take() {
        if sender.ready().await.is_ok() {
            match sender.send_request(build(body())).await {
                Ok(resp) => {
                    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
                        *slot = Some(sender);
                    }
                    return Ok(resp);
                }
                // Closed before the request went out: safe to send again on a new connection.
                // Anything else may have reached dockerd, and a create must not run twice.
                Err(e) if e.is_canceled() => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    let mut sender = connect(&shared.engine.socket)
        .await
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(build(body()))
        .await
        .map_err(|e| e.to_string())?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        *slot = Some(sender);
    }
    Ok(resp)
}

/// `fromImage` + `tag` as dockerd combines them.
fn pulled_reference(query: &[(String, String)]) -> Option<String> {
    let image = query_first(query, "fromImage").filter(|s| !s.is_empty())?;
    match query_first(query, "tag").filter(|s| !s.is_empty()) {
        Some(t) if t.starts_with("sha256:") => Some(format!("{image}@{t}")),
        Some(t) => Some(format!("{image}:{t}")),
        None => Some(image.to_string()),
    }
}

fn repin_after_pull(
    shared: Arc<Shared>,
    reference: String,
) -> impl FnOnce() + Send + Sync + 'static {
    move || {
        tokio::spawn(async move {
            let policy = shared.policy();
            if policy.socket_images.is_empty() {
                return;
            }
            let Ok(Some(img)) = shared.engine.image(&reference).await else {
                return;
            };
            let updates = pull_pins(&policy, &reference, &img);
            match shared.pins.apply(&updates) {
                Ok(true) => shared.audit.write(&Record::event(
                    "pin",
                    "info",
                    format!("{reference} re-pinned to {} after a pull", img.id),
                )),
                Ok(false) => {}
                Err(e) => shared
                    .audit
                    .write(&Record::event("pin", "error", e.to_string())),
            }
        });
    }
}

/// A body that runs a callback once it has been read to the end.
struct OnEnd {
    inner: Body,
    on_end: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl OnEnd {
    fn wrap(inner: Body, f: impl FnOnce() + Send + Sync + 'static) -> Body {
        BodyExt::boxed(OnEnd {
            inner,
            on_end: Some(Box::new(f)),
        })
    }
}

impl HttpBody for OnEnd {
    type Data = Bytes;
    type Error = crate::engine::BoxError;

    fn poll_frame(
        mut self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let r = StdPin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = r {
            if let Some(f) = self.on_end.take() {
                f();
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Re-read the settings file when it changes. A bad file is reported and the last good
/// settings stay in force (SPEC S1).
async fn watch_settings(config: Config, shared: Arc<Shared>) {
    let stamp = |p: &Path| -> Option<(SystemTime, u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(p).ok()?;
        Some((m.modified().ok()?, m.len(), m.ino()))
    };
    let mut last = stamp(&config.settings);
    loop {
        tokio::time::sleep(config.settings_poll).await;
        let now = stamp(&config.settings);
        if now == last {
            continue;
        }
        last = now;
        match read_settings(&config.settings) {
            Ok((policy, _, text)) => {
                *shared.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
                if let Some(dir) = &config.state_dir {
                    let _ = write_atomic(&dir.join(LAST_GOOD_SETTINGS), text.as_bytes());
                }
                shared.audit.write(&Record::event(
                    "settings",
                    "info",
                    format!("reloaded {}", config.settings.display()),
                ));
                if let Err(e) = pin_first_seen(&shared).await {
                    shared.audit.write(&Record::event("pin", "error", e));
                }
            }
            Err(e) => {
                eprintln!("eci-guard: {e}\nkeeping the settings in force");
                shared.audit.write(&Record::event(
                    "settings",
                    "error",
                    format!("{e}; keeping the settings in force"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sockets_get_the_mode_and_group_asked_for() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let own_gid = std::fs::metadata(dir.path()).unwrap().gid();
        let plain = dir.path().join("c.sock");
        let c = bind(&plain, 0o600, None).unwrap();
        let m = std::fs::metadata(&plain).unwrap();
        assert_eq!((m.mode() & 0o7777, m.gid()), (0o600, own_gid));
        // A stale socket is replaced; any other file is left alone.
        drop(c);
        bind(&plain, 0o600, None).unwrap();
        let file = dir.path().join("not-a-socket");
        std::fs::write(&file, "x").unwrap();
        assert!(bind(&file, 0o600, None).is_err());

        let user = dir.path().join("docker.sock");
        let is_root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
        match bind(&user, 0o660, Some(4242)) {
            Ok(_u) => {
                assert!(is_root, "only root can hand a socket to another group");
                let m = std::fs::metadata(&user).unwrap();
                assert_eq!((m.mode() & 0o7777, m.gid()), (0o660, 4242));
            }
            Err(e) => {
                assert!(!is_root, "{e}");
                assert!(e.to_string().contains("group 4242"), "{e}");
            }
        }
    }

    #[test]
    fn hop_by_hop_headers_are_dropped_except_for_upgrades() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Upgrade, X-Private"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let plain = copy_headers(&h, false);
        assert_eq!(plain.len(), 1);
        assert!(plain.contains_key(header::CONTENT_TYPE));
        let up = copy_headers(&h, true);
        assert!(up.contains_key(header::UPGRADE) && up.contains_key(header::CONNECTION));
        assert!(!up.contains_key("x-private"));
        assert!(wants_upgrade(&h));
        assert!(!wants_upgrade(&HeaderMap::new()));
    }

    #[test]
    fn pulled_references_combine_image_and_tag() {
        let q = |s: &str| parse_query(s);
        assert_eq!(
            pulled_reference(&q("fromImage=docker&tag=cli")).as_deref(),
            Some("docker:cli")
        );
        assert_eq!(
            pulled_reference(&q("fromImage=docker&tag=sha256:ab")).as_deref(),
            Some("docker@sha256:ab")
        );
        assert_eq!(
            pulled_reference(&q("fromImage=docker:cli")).as_deref(),
            Some("docker:cli")
        );
        assert_eq!(pulled_reference(&q("fromSrc=-")), None);
    }

    #[test]
    fn docker_errors_have_the_message_shape() {
        let r = docker_error(403, "no");
        assert_eq!(r.status(), 403);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    }
}
