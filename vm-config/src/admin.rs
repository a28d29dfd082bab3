//! `admin-settings.json` in Docker Desktop's format (SPEC S1).
//!
//! The file is parsed into a `serde_json::Value` first (syntax errors get serde_json's
//! line/column), then walked by hand: hand-written checks give each wrong value a message that
//! names the dotted key, its position and the fix, and report every problem at once instead of
//! the first one serde would stop at.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

// The policy.json types admin settings share with the guard and the runtime.
pub use eci_policy::{
    CommandList, CommandListType, CommandRule, ImageRule, ProxyMode, ProxySettings,
};

use crate::error::{suggest, Location, Problem, SettingsError, Warning, WarningKind};
use crate::spans::{index, join, Pos, Spans};

/// The newest `configurationFileVersion` this model was written against.
pub const LATEST_CONFIGURATION_FILE_VERSION: u64 = 2;

/// A Docker Desktop setting of the `{"locked": bool, "value": T}` shape. A missing `value`
/// means the built-in default (still locked if `locked` is true).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Locked<T> {
    pub locked: bool,
    pub value: Option<T>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminSettings {
    /// File name (or other label) used in messages.
    pub origin: String,
    pub configuration_file_version: Option<u64>,
    pub enhanced_container_isolation: Option<EnhancedContainerIsolation>,
    /// `linuxVM.dockerDaemonOptions`, already parsed from its JSON string.
    pub docker_daemon_options: Option<Locked<Map<String, Value>>>,
    #[serde(rename = "exposeDockerAPIOnTCP2375")]
    pub expose_docker_api_on_tcp2375: Option<Locked<bool>>,
    pub filesharing_allowed_directories: Option<Vec<AllowedDirectory>>,
    pub containers_proxy: Option<Locked<ProxySettings>>,
}

/// `enhancedContainerIsolation`: a grouped setting; its `locked` also locks `dockerSocketMount`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnhancedContainerIsolation {
    pub locked: bool,
    pub value: Option<bool>,
    pub docker_socket_mount: Option<DockerSocketMount>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerSocketMount {
    pub image_list: ImageList,
    pub command_list: CommandList,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageList {
    pub images: Vec<ImageRule>,
    pub allow_derived_images: bool,
}

/// One entry of `filesharingAllowedDirectories`. `path` is a host path and may use `$HOME`,
/// `%HOME%` or `%USERPROFILE%`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllowedDirectory {
    pub path: String,
    pub shared_by_default: bool,
}

/// Top-level Docker Desktop settings that have no effect inside the eci VM, with the reason
/// shown to the admin.
const NOT_APPLICABLE_TOP: &[(&str, &str)] = &[
    ("proxy", "Docker Desktop's own proxy is not used by eci; give the engine a proxy with `proxies` in linuxVM.dockerDaemonOptions"),
    ("kubernetes", "the eci VM ships no Kubernetes"),
    ("windowsContainers", "the eci VM runs Linux containers only"),
    ("disableUpdate", "the eci VM is updated by rebuilding the image, not by Docker Desktop"),
    ("analyticsEnabled", "eci collects no analytics"),
    ("extensionsEnabled", "the eci VM has no Docker Desktop extensions"),
    ("extensionsPrivateMarketplace", "the eci VM has no Docker Desktop extensions"),
    ("scout", "Docker Scout is a Docker Desktop feature"),
    ("allowExperimentalFeatures", "a Docker Desktop GUI setting"),
    ("allowBetaFeatures", "a Docker Desktop GUI setting"),
    ("blockDockerLoad", "not enforced by eci yet"),
    ("useVirtualizationFrameworkVirtioFS", "a macOS Docker Desktop setting"),
    ("useVirtualizationFrameworkRosetta", "a macOS Docker Desktop setting"),
    ("useGrpcfuse", "a macOS Docker Desktop setting"),
    ("displayedOnboarding", "a Docker Desktop GUI setting"),
    ("desktopTerminalEnabled", "a Docker Desktop GUI setting"),
];

const NOT_APPLICABLE_LINUX_VM: &[(&str, &str)] = &[
    (
        "wslEngineEnabled",
        "the eci artifact itself decides between Hyper-V and WSL 2",
    ),
    ("vpnkitCIDR", "the eci VM does not use vpnkit"),
];

const TOP_KEYS: &[&str] = &[
    "configurationFileVersion",
    "enhancedContainerIsolation",
    "linuxVM",
    "exposeDockerAPIOnTCP2375",
    "filesharingAllowedDirectories",
    "containersProxy",
];

impl AdminSettings {
    /// Parse and validate the text of an admin-settings.json. `origin` names the file in
    /// messages. Warnings are returned beside the value; any invalid value is an error and
    /// nothing of the file is used (the caller keeps its last good settings).
    pub fn parse(text: &str, origin: &str) -> Result<(AdminSettings, Vec<Warning>), SettingsError> {
        let root = parse_json(text, origin)?;
        let mut v = Validator::new(text, origin);
        for (path, pos) in v.spans.duplicates.clone() {
            let location = v.at(pos);
            v.warnings.push(Warning {
                kind: WarningKind::DuplicateKey,
                key: path,
                location: Some(location),
                message: "appears more than once in the same object; the last one wins".into(),
            });
        }
        let settings = v.admin(&root);
        v.finish(settings)
    }

    /// Read and parse a file; its path is the origin in messages.
    pub fn load(path: &Path) -> Result<(AdminSettings, Vec<Warning>), SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        AdminSettings::parse(&text, &path.display().to_string())
    }
}

/// Parse a JSON text, mapping a syntax error to file:line:column with a fix.
pub(crate) fn parse_json(text: &str, origin: &str) -> Result<Value, SettingsError> {
    serde_json::from_str::<Value>(text).map_err(|e| {
        let line = e.line().max(1);
        let column = char_column(text, line, e.column());
        let message = strip_position(&e.to_string());
        SettingsError::Syntax {
            fix: syntax_fix(&message),
            location: Location {
                origin: origin.to_string(),
                line,
                column,
            },
            message,
        }
    })
}

/// serde_json counts columns in bytes; editors count characters.
fn char_column(text: &str, line: usize, byte_column: usize) -> usize {
    let Some(l) = text.split('\n').nth(line - 1) else {
        return byte_column.max(1);
    };
    let mut cut = byte_column.min(l.len());
    while !l.is_char_boundary(cut) {
        cut -= 1;
    }
    let chars = l[..cut].chars().count();
    // serde_json points at the last byte it read; a multi-byte char there still counts as one.
    let partial = usize::from(cut < byte_column.min(l.len()));
    (chars + partial).max(1)
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn syntax_fix(message: &str) -> String {
    let m = message.to_ascii_lowercase();
    if m.contains("trailing comma") {
        "remove the comma after the last member".into()
    } else if m.contains("key must be a string") {
        "put the key in double quotes".into()
    } else if m.contains("expected `,` or `}`") {
        "add a comma between the members or close the object with `}`".into()
    } else if m.contains("expected `,` or `]`") {
        "add a comma between the items or close the list with `]`".into()
    } else if m.contains("eof while parsing") {
        "the file ends early: close every `{` and `[` and finish the last value".into()
    } else if m.contains("expected value") {
        "write a JSON value there (strings in double quotes; JSON has no comments)".into()
    } else if m.contains("control character") {
        "escape newlines and tabs inside strings as \\n and \\t".into()
    } else {
        "correct the JSON at that position; admin-settings.json must be strict JSON".into()
    }
}

/// Short description of a JSON value for "found ..." messages.
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => {
            let shown: String = s.chars().take(60).collect();
            format!("string {shown:?}")
        }
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

pub(crate) struct Validator<'t> {
    origin: &'t str,
    spans: Spans,
    problems: Vec<Problem>,
    warnings: Vec<Warning>,
}

impl<'t> Validator<'t> {
    pub(crate) fn new(text: &'t str, origin: &'t str) -> Validator<'t> {
        Validator {
            origin,
            spans: Spans::scan(text),
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn at(&self, pos: Pos) -> Location {
        Location {
            origin: self.origin.to_string(),
            line: pos.line,
            column: pos.column,
        }
    }

    fn value_loc(&self, path: &str) -> Location {
        self.at(self.spans.value(path))
    }

    pub(crate) fn problem(
        &mut self,
        path: &str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.problems.push(Problem {
            key: path.to_string(),
            location: self.value_loc(path),
            message: message.into(),
            fix: fix.into(),
        });
    }

    fn warn(&mut self, kind: WarningKind, path: &str, message: impl Into<String>) {
        let location = Some(self.at(self.spans.key(path)));
        self.warnings.push(Warning {
            kind,
            key: path.to_string(),
            location,
            message: message.into(),
        });
    }

    pub(crate) fn finish<T>(mut self, value: T) -> Result<(T, Vec<Warning>), SettingsError> {
        if self.problems.is_empty() {
            self.warnings.sort_by_key(|w| {
                w.location
                    .as_ref()
                    .map(|l| (l.line, l.column))
                    .unwrap_or((0, 0))
            });
            Ok((value, self.warnings))
        } else {
            self.problems
                .sort_by_key(|p| (p.location.line, p.location.column));
            Err(SettingsError::Invalid {
                origin: self.origin.to_string(),
                problems: self.problems,
            })
        }
    }

    /// Warn about members not in `known`; `not_applicable` members get their own reason.
    fn check_keys(
        &mut self,
        path: &str,
        map: &Map<String, Value>,
        known: &[&str],
        not_applicable: &[(&str, &str)],
    ) {
        for key in map.keys() {
            if known.contains(&key.as_str()) {
                continue;
            }
            let child = join(path, key);
            if let Some((_, why)) = not_applicable.iter().find(|(k, _)| k == key) {
                self.warn(
                    WarningKind::NotApplicable,
                    &child,
                    format!("Docker Desktop setting ignored by eci: {why}"),
                );
                continue;
            }
            let all = known
                .iter()
                .copied()
                .chain(not_applicable.iter().map(|(k, _)| *k));
            let hint = match suggest(key, all) {
                Some(s) => format!("; did you mean {s:?}?"),
                None => String::new(),
            };
            self.warn(
                WarningKind::UnknownKey,
                &child,
                format!("unknown key, ignored{hint}"),
            );
        }
    }

    pub(crate) fn object<'v>(
        &mut self,
        path: &str,
        v: &'v Value,
        fix: &str,
    ) -> Option<&'v Map<String, Value>> {
        match v {
            Value::Object(m) => Some(m),
            other => {
                self.problem(
                    path,
                    format!("expected an object, found {}", describe(other)),
                    fix,
                );
                None
            }
        }
    }

    pub(crate) fn boolean(&mut self, path: &str, v: &Value) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            other => {
                let fix = match other {
                    Value::String(s) if s == "true" || s == "false" => {
                        format!("drop the quotes: {s}")
                    }
                    _ => "write true or false (no quotes)".to_string(),
                };
                self.problem(
                    path,
                    format!("expected a boolean, found {}", describe(other)),
                    fix,
                );
                None
            }
        }
    }

    pub(crate) fn string(&mut self, path: &str, v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            other => {
                self.problem(
                    path,
                    format!("expected a string, found {}", describe(other)),
                    "write the value in double quotes",
                );
                None
            }
        }
    }

    pub(crate) fn array<'v>(
        &mut self,
        path: &str,
        v: &'v Value,
        what: &str,
    ) -> Option<&'v Vec<Value>> {
        match v {
            Value::Array(a) => Some(a),
            other => {
                self.problem(
                    path,
                    format!("expected a list of {what}, found {}", describe(other)),
                    format!("write a JSON list, e.g. [] or [{}]", example_item(what)),
                );
                None
            }
        }
    }

    /// `{"locked": bool, "value": ...}` with `extra` members allowed beside them.
    fn locked_flag(&mut self, path: &str, m: &Map<String, Value>) -> bool {
        m.get("locked")
            .and_then(|v| self.boolean(&join(path, "locked"), v))
            .unwrap_or(false)
    }

    fn locked_bool(&mut self, path: &str, v: &Value) -> Option<Locked<bool>> {
        let m = self.object(path, v, LOCKED_FIX)?;
        self.check_keys(path, m, &["locked", "value"], &[]);
        let locked = self.locked_flag(path, m);
        let value = m
            .get("value")
            .and_then(|x| self.boolean(&join(path, "value"), x));
        Some(Locked { locked, value })
    }

    fn admin(&mut self, root: &Value) -> AdminSettings {
        let mut s = AdminSettings {
            origin: self.origin.to_string(),
            configuration_file_version: None,
            enhanced_container_isolation: None,
            docker_daemon_options: None,
            expose_docker_api_on_tcp2375: None,
            filesharing_allowed_directories: None,
            containers_proxy: None,
        };
        let Some(top) = self.object(
            "",
            root,
            "the file must be one JSON object, e.g. {\"configurationFileVersion\": 2, ...}",
        ) else {
            return s;
        };
        self.check_keys("", top, TOP_KEYS, NOT_APPLICABLE_TOP);
        if let Some(v) = top.get("configurationFileVersion") {
            s.configuration_file_version = self.version(v);
        }
        if let Some(v) = top.get("enhancedContainerIsolation") {
            s.enhanced_container_isolation = self.eci(v);
        }
        if let Some(v) = top.get("linuxVM") {
            s.docker_daemon_options = self.linux_vm(v);
        }
        if let Some(v) = top.get("exposeDockerAPIOnTCP2375") {
            s.expose_docker_api_on_tcp2375 = self.locked_bool("exposeDockerAPIOnTCP2375", v);
        }
        if let Some(v) = top.get("filesharingAllowedDirectories") {
            s.filesharing_allowed_directories = self.filesharing(v);
        }
        if let Some(v) = top.get("containersProxy") {
            s.containers_proxy = self.containers_proxy(v);
        }
        s
    }

    fn version(&mut self, v: &Value) -> Option<u64> {
        const KEY: &str = "configurationFileVersion";
        match v.as_u64() {
            Some(n) if n >= 1 => {
                if n > LATEST_CONFIGURATION_FILE_VERSION {
                    self.warn(
                        WarningKind::NewerVersion,
                        KEY,
                        format!(
                            "version {n} is newer than {LATEST_CONFIGURATION_FILE_VERSION}, the newest eci knows; settings eci does not know are ignored"
                        ),
                    );
                }
                Some(n)
            }
            _ => {
                self.problem(
                    KEY,
                    format!("expected a positive whole number, found {}", describe(v)),
                    format!("write {LATEST_CONFIGURATION_FILE_VERSION}"),
                );
                None
            }
        }
    }

    fn eci(&mut self, v: &Value) -> Option<EnhancedContainerIsolation> {
        const P: &str = "enhancedContainerIsolation";
        let m = self.object(P, v, LOCKED_FIX)?;
        self.check_keys(P, m, &["locked", "value", "dockerSocketMount"], &[]);
        let locked = self.locked_flag(P, m);
        let value = m
            .get("value")
            .and_then(|x| self.boolean(&join(P, "value"), x));
        let docker_socket_mount = m
            .get("dockerSocketMount")
            .and_then(|x| self.socket_mount(&join(P, "dockerSocketMount"), x));
        Some(EnhancedContainerIsolation {
            locked,
            value,
            docker_socket_mount,
        })
    }

    fn socket_mount(&mut self, path: &str, v: &Value) -> Option<DockerSocketMount> {
        let m = self.object(
            path,
            v,
            "write {\"imageList\": {\"images\": [...]}, \"commandList\": {\"type\": \"deny\", \"commands\": [...]}}",
        )?;
        self.check_keys(path, m, &["imageList", "commandList"], &[]);
        // Both halves are checked even when the first is wrong, so every problem is reported.
        let image_list = match m.get("imageList") {
            Some(x) => self.image_list(&join(path, "imageList"), x),
            None => Some(ImageList::default()),
        };
        let command_list = match m.get("commandList") {
            Some(x) => self.command_list(&join(path, "commandList"), x),
            None => Some(CommandList::default()),
        };
        Some(DockerSocketMount {
            image_list: image_list?,
            command_list: command_list?,
        })
    }

    fn image_list(&mut self, path: &str, v: &Value) -> Option<ImageList> {
        let m = self.object(
            path,
            v,
            "write {\"images\": [\"docker.io/testcontainers/ryuk:*\"], \"allowDerivedImages\": false}",
        )?;
        self.check_keys(path, m, &["images", "allowDerivedImages"], &[]);
        let mut out = ImageList::default();
        let mut ok = true;
        if let Some(x) = m.get("images") {
            let p = join(path, "images");
            if let Some(items) = self.array(&p, x, "image names") {
                for (i, item) in items.iter().enumerate() {
                    let ip = index(&p, i);
                    let Some(s) = self.string(&ip, item) else {
                        ok = false;
                        continue;
                    };
                    match ImageRule::parse(&s) {
                        Ok(rule) => out.images.push(rule),
                        Err(e) => {
                            ok = false;
                            self.problem(
                                &ip,
                                e.to_string(),
                                "use `name[:tag]`, `name:*`, `name@sha256:<64 hex>` or `*`, e.g. \"docker.io/testcontainers/ryuk:*\"",
                            );
                        }
                    }
                }
            } else {
                ok = false;
            }
        }
        if let Some(x) = m.get("allowDerivedImages") {
            match self.boolean(&join(path, "allowDerivedImages"), x) {
                Some(b) => out.allow_derived_images = b,
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn command_list(&mut self, path: &str, v: &Value) -> Option<CommandList> {
        let m = self.object(
            path,
            v,
            "write {\"type\": \"deny\", \"commands\": [\"push\"]}",
        )?;
        self.check_keys(path, m, &["type", "commands"], &[]);
        let mut out = CommandList::default();
        let mut ok = true;
        if let Some(x) = m.get("type") {
            let p = join(path, "type");
            match x.as_str() {
                Some("deny") => out.kind = CommandListType::Deny,
                Some("allow") => out.kind = CommandListType::Allow,
                _ => {
                    ok = false;
                    let found = match x {
                        Value::String(s) => format!("{s:?}"),
                        other => describe(other),
                    };
                    self.problem(
                        &p,
                        format!("expected \"allow\" or \"deny\", found {found}"),
                        "write \"deny\" to block the listed commands or \"allow\" to permit only them",
                    );
                }
            }
        }
        if let Some(x) = m.get("commands") {
            let p = join(path, "commands");
            if let Some(items) = self.array(&p, x, "docker command names") {
                for (i, item) in items.iter().enumerate() {
                    let ip = index(&p, i);
                    let Some(s) = self.string(&ip, item) else {
                        ok = false;
                        continue;
                    };
                    match CommandRule::parse(&s) {
                        Ok(c) => out.commands.push(c),
                        Err(msg) => {
                            ok = false;
                            self.problem(
                                &ip,
                                msg,
                                "use a command from `docker --help` (e.g. \"push\", \"build\") or one of container*, image*, volume*, network*, build*, system*",
                            );
                        }
                    }
                }
            } else {
                ok = false;
            }
        }
        ok.then_some(out)
    }

    fn linux_vm(&mut self, v: &Value) -> Option<Locked<Map<String, Value>>> {
        const P: &str = "linuxVM";
        let m = self.object(
            P,
            v,
            "write {\"dockerDaemonOptions\": {\"locked\": true, \"value\": \"{}\"}}",
        )?;
        self.check_keys(P, m, &["dockerDaemonOptions"], NOT_APPLICABLE_LINUX_VM);
        let p = join(P, "dockerDaemonOptions");
        let d = m.get("dockerDaemonOptions")?;
        let dm = self.object(&p, d, LOCKED_FIX)?;
        self.check_keys(&p, dm, &["locked", "value"], &[]);
        let locked = self.locked_flag(&p, dm);
        let value = match dm.get("value") {
            None => None,
            Some(x) => Some(self.daemon_options_value(&join(&p, "value"), x)?),
        };
        Some(Locked { locked, value })
    }

    /// Docker Desktop stores daemon options as JSON inside a JSON string.
    fn daemon_options_value(&mut self, path: &str, v: &Value) -> Option<Map<String, Value>> {
        let Value::String(s) = v else {
            self.problem(
                path,
                format!("expected a string holding the daemon options as JSON, found {}", describe(v)),
                "write the options as one JSON string, e.g. \"value\": \"{\\\"debug\\\": false}\" (Docker Desktop's format)",
            );
            return None;
        };
        if s.trim().is_empty() {
            return Some(Map::new());
        }
        match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => Some(m),
            Ok(other) => {
                self.problem(
                    path,
                    format!(
                        "the daemon options must be a JSON object, found {}",
                        describe(&other)
                    ),
                    "write an object such as \"{\\\"debug\\\": false}\"",
                );
                None
            }
            Err(e) => {
                self.problem(
                    path,
                    format!(
                        "the string is not valid JSON: {} at line {} column {} of the string",
                        strip_position(&e.to_string()),
                        e.line(),
                        e.column()
                    ),
                    "fix the JSON inside the string; inner quotes must be escaped as \\\"",
                );
                None
            }
        }
    }

    fn filesharing(&mut self, v: &Value) -> Option<Vec<AllowedDirectory>> {
        const P: &str = "filesharingAllowedDirectories";
        let items = self.array(P, v, "directories")?;
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let ip = index(P, i);
            let Some(m) = self.object(
                &ip,
                item,
                "write {\"path\": \"$HOME\", \"sharedByDefault\": true}",
            ) else {
                ok = false;
                continue;
            };
            self.check_keys(&ip, m, &["path", "sharedByDefault"], &[]);
            let path = match m.get("path") {
                Some(p) => self.string(&join(&ip, "path"), p),
                None => {
                    self.problem(
                        &ip,
                        "missing \"path\"",
                        "add \"path\": the host directory users may share, e.g. \"$HOME\"",
                    );
                    None
                }
            };
            let path = match path {
                Some(p) if p.trim().is_empty() => {
                    self.problem(
                        &join(&ip, "path"),
                        "empty path",
                        "name a host directory, e.g. \"$HOME\" or \"C:\\\\src\"",
                    );
                    None
                }
                other => other,
            };
            let shared_by_default = match m.get("sharedByDefault") {
                Some(b) => self.boolean(&join(&ip, "sharedByDefault"), b),
                None => Some(false),
            };
            match (path, shared_by_default) {
                (Some(path), Some(shared_by_default)) => out.push(AllowedDirectory {
                    path,
                    shared_by_default,
                }),
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn containers_proxy(&mut self, v: &Value) -> Option<Locked<ProxySettings>> {
        const P: &str = "containersProxy";
        let m = self.object(
            P,
            v,
            "write {\"locked\": true, \"mode\": \"manual\", \"http\": \"\", \"https\": \"\", \"exclude\": [], \"pac\": \"\", \"transparentPorts\": \"\"}",
        )?;
        let mut fields = vec!["locked"];
        fields.extend(PROXY_FIELDS);
        self.check_keys(P, m, &fields, &[]);
        let locked = self.locked_flag(P, m);
        let value = self.proxy_fields(P, m)?;
        Some(Locked {
            locked,
            value: Some(value),
        })
    }

    pub(crate) fn proxy_fields(
        &mut self,
        path: &str,
        m: &Map<String, Value>,
    ) -> Option<ProxySettings> {
        let mut out = ProxySettings::default();
        let mut ok = true;
        if let Some(x) = m.get("mode") {
            match x.as_str() {
                Some("system") => out.mode = ProxyMode::System,
                Some("manual") => out.mode = ProxyMode::Manual,
                _ => {
                    ok = false;
                    let found = match x {
                        Value::String(s) => format!("{s:?}"),
                        other => describe(other),
                    };
                    self.problem(
                        &join(path, "mode"),
                        format!("expected \"system\" or \"manual\", found {found}"),
                        "write \"manual\" to use the URLs given here or \"system\" to use the host's proxy",
                    );
                }
            }
        }
        for (key, slot) in [
            ("http", &mut out.http),
            ("https", &mut out.https),
            ("pac", &mut out.pac),
            ("transparentPorts", &mut out.transparent_ports),
        ] {
            if let Some(x) = m.get(key) {
                match self.string(&join(path, key), x) {
                    Some(s) => *slot = s,
                    None => ok = false,
                }
            }
        }
        if let Some(x) = m.get("exclude") {
            let p = join(path, "exclude");
            // Docker Desktop has written this both as a list and as one comma-separated string.
            match x {
                Value::String(s) => {
                    out.exclude = s
                        .split(',')
                        .map(str::trim)
                        .filter(|e| !e.is_empty())
                        .map(String::from)
                        .collect();
                }
                _ => match self.array(&p, x, "host names") {
                    Some(items) => {
                        for (i, item) in items.iter().enumerate() {
                            match self.string(&index(&p, i), item) {
                                Some(s) => out.exclude.push(s),
                                None => ok = false,
                            }
                        }
                    }
                    None => ok = false,
                },
            }
        }
        ok.then_some(out)
    }
}

pub(crate) const PROXY_FIELDS: [&str; 6] = [
    "mode",
    "http",
    "https",
    "exclude",
    "pac",
    "transparentPorts",
];

const LOCKED_FIX: &str =
    "write the setting as an object, e.g. {\"locked\": true, \"value\": false} (Docker Desktop's format)";

fn example_item(what: &str) -> &'static str {
    match what {
        "image names" => "\"docker.io/testcontainers/ryuk:*\"",
        "docker command names" => "\"push\"",
        "directories" => "{\"path\": \"$HOME\", \"sharedByDefault\": true}",
        _ => "\"...\"",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const EXAMPLE: &str = r#"{
  "configurationFileVersion": 2,
  "enhancedContainerIsolation": {
    "locked": true,
    "value": true,
    "dockerSocketMount": {
      "imageList": {
        "images": ["docker.io/localstack/localstack:*", "docker.io/testcontainers/ryuk:*"],
        "allowDerivedImages": true
      },
      "commandList": {"type": "deny", "commands": ["push"]}
    }
  },
  "linuxVM": {"dockerDaemonOptions": {"locked": true, "value": "{\"debug\": false}"}},
  "exposeDockerAPIOnTCP2375": {"locked": true, "value": false},
  "filesharingAllowedDirectories": [{"path": "$HOME", "sharedByDefault": true}],
  "containersProxy": {"locked": true, "mode": "manual", "http": "", "https": "", "exclude": [], "pac": "", "transparentPorts": ""}
}"#;

    fn invalid(text: &str) -> Vec<Problem> {
        match AdminSettings::parse(text, "admin-settings.json") {
            Err(SettingsError::Invalid { problems, .. }) => problems,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_docker_desktop_example() {
        let (s, warnings) = AdminSettings::parse(EXAMPLE, "admin-settings.json").unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(s.configuration_file_version, Some(2));
        let eci = s.enhanced_container_isolation.unwrap();
        assert!(eci.locked);
        assert_eq!(eci.value, Some(true));
        let dsm = eci.docker_socket_mount.unwrap();
        assert_eq!(dsm.image_list.images.len(), 2);
        assert!(dsm.image_list.allow_derived_images);
        assert_eq!(dsm.command_list.kind, CommandListType::Deny);
        assert_eq!(dsm.command_list.commands[0].as_str(), "push");
        let d = s.docker_daemon_options.unwrap();
        assert!(d.locked);
        assert_eq!(d.value.unwrap()["debug"], Value::Bool(false));
        assert_eq!(
            s.expose_docker_api_on_tcp2375,
            Some(Locked {
                locked: true,
                value: Some(false)
            })
        );
        assert_eq!(
            s.filesharing_allowed_directories.unwrap(),
            vec![AllowedDirectory {
                path: "$HOME".into(),
                shared_by_default: true
            }]
        );
        let proxy = s.containers_proxy.unwrap();
        assert!(proxy.locked);
        assert_eq!(proxy.value.unwrap().mode, ProxyMode::Manual);
    }

    #[test]
    fn the_shipped_example_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/admin-settings.json");
        let (s, warnings) = AdminSettings::load(&path).unwrap();
        assert!(s.enhanced_container_isolation.is_some());
        assert!(
            warnings
                .iter()
                .all(|w| w.kind == WarningKind::NotApplicable),
            "{warnings:?}"
        );
    }

    #[test]
    fn malformed_json_reports_line_column_and_fix() {
        let text = "{\n  \"exposeDockerAPIOnTCP2375\": {\"locked\": true,}\n}";
        match AdminSettings::parse(text, "a.json") {
            Err(SettingsError::Syntax {
                location,
                message,
                fix,
            }) => {
                assert_eq!((location.line, location.column), (2, 47), "{message}");
                assert_eq!(location.origin, "a.json");
                assert!(fix.contains("comma"), "{fix}");
            }
            other => panic!("{other:?}"),
        }
        let err = AdminSettings::parse("{\"a\": 1", "b.json").unwrap_err();
        assert!(err.to_string().starts_with("b.json:1:"), "{err}");
        assert!(
            err.to_string().contains("fix: the file ends early"),
            "{err}"
        );
    }

    #[test]
    fn syntax_columns_count_characters_not_bytes() {
        let text = "{\"é\": tru}";
        match AdminSettings::parse(text, "a.json").unwrap_err() {
            SettingsError::Syntax { location, .. } => assert_eq!(location.column, 10),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrong_command_list_type_is_located_and_explained() {
        let text = "{\"enhancedContainerIsolation\": {\"locked\": true, \"value\": true,\n  \"dockerSocketMount\": {\"commandList\": {\"type\": \"block\", \"commands\": []}}}}";
        let problems = invalid(text);
        assert_eq!(problems.len(), 1);
        let p = &problems[0];
        assert_eq!(
            p.key,
            "enhancedContainerIsolation.dockerSocketMount.commandList.type"
        );
        assert_eq!(p.message, "expected \"allow\" or \"deny\", found \"block\"");
        assert_eq!((p.location.line, p.location.column), (2, 49));
        assert!(p.to_string().starts_with(
            "admin-settings.json:2:49: enhancedContainerIsolation.dockerSocketMount.commandList.type: expected"
        ));
    }

    #[test]
    fn wrong_types_are_all_reported_at_once() {
        let text = r#"{
  "configurationFileVersion": "2",
  "enhancedContainerIsolation": {"locked": "yes", "value": "true"},
  "exposeDockerAPIOnTCP2375": false,
  "filesharingAllowedDirectories": [{"path": 3}, {"sharedByDefault": true}],
  "containersProxy": {"mode": "auto", "exclude": [1]}
}"#;
        let problems = invalid(text);
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "configurationFileVersion",
                "enhancedContainerIsolation.locked",
                "enhancedContainerIsolation.value",
                "exposeDockerAPIOnTCP2375",
                "filesharingAllowedDirectories[0].path",
                "filesharingAllowedDirectories[1]",
                "containersProxy.mode",
                "containersProxy.exclude[0]",
            ]
        );
        let value = &problems[2];
        assert_eq!(value.message, "expected a boolean, found string \"true\"");
        assert_eq!(value.fix, "drop the quotes: true");
        assert_eq!((value.location.line, value.location.column), (3, 60));
        assert!(problems[3]
            .message
            .contains("expected an object, found boolean false"));
        assert!(problems[3]
            .fix
            .contains("{\"locked\": true, \"value\": false}"));
    }

    #[test]
    fn unknown_keys_warn_with_location_and_suggestion() {
        let text = "{\n  \"exposeDockerAPIOnTCP2375\": {\"locked\": true, \"value\": false, \"lokced\": 1},\n  \"linuxVm\": {},\n  \"kubernetes\": {\"locked\": false},\n  \"frobnicate\": 1\n}";
        let (_, warnings) = AdminSettings::parse(text, "a.json").unwrap();
        let got: Vec<(WarningKind, &str, usize)> = warnings
            .iter()
            .map(|w| (w.kind, w.key.as_str(), w.location.as_ref().unwrap().line))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    WarningKind::UnknownKey,
                    "exposeDockerAPIOnTCP2375.lokced",
                    2
                ),
                (WarningKind::UnknownKey, "linuxVm", 3),
                (WarningKind::NotApplicable, "kubernetes", 4),
                (WarningKind::UnknownKey, "frobnicate", 5),
            ]
        );
        assert!(warnings[0].message.contains("did you mean \"locked\""));
        assert!(warnings[1].message.contains("did you mean \"linuxVM\""));
        assert_eq!(warnings[1].location.as_ref().unwrap().column, 3);
    }

    #[test]
    fn newer_versions_and_duplicate_keys_warn() {
        let text = "{\"configurationFileVersion\": 3,\n \"exposeDockerAPIOnTCP2375\": {\"locked\": false, \"locked\": true}}";
        let (s, warnings) = AdminSettings::parse(text, "a.json").unwrap();
        assert!(s.expose_docker_api_on_tcp2375.unwrap().locked);
        let kinds: Vec<WarningKind> = warnings.iter().map(|w| w.kind).collect();
        assert_eq!(
            kinds,
            vec![WarningKind::NewerVersion, WarningKind::DuplicateKey]
        );
        assert!(invalid("{\"configurationFileVersion\": 0}")[0]
            .message
            .contains("positive whole number"));
    }

    #[test]
    fn daemon_options_string_must_hold_a_json_object() {
        let text = "{\"linuxVM\": {\"dockerDaemonOptions\": {\"locked\": true, \"value\": \"{\\\"debug\\\": fals}\"}}}";
        let p = &invalid(text)[0];
        assert_eq!(p.key, "linuxVM.dockerDaemonOptions.value");
        assert!(p.message.contains("not valid JSON"), "{}", p.message);
        assert!(p.message.contains("line 1 column"), "{}", p.message);
        assert_eq!(p.location.column, 63);

        let p = &invalid("{\"linuxVM\": {\"dockerDaemonOptions\": {\"value\": \"[1]\"}}}")[0];
        assert!(p.message.contains("must be a JSON object, found a list"));
        let p =
            &invalid("{\"linuxVM\": {\"dockerDaemonOptions\": {\"value\": {\"debug\": true}}}}")[0];
        assert!(p
            .message
            .contains("expected a string holding the daemon options"));

        let (s, _) = AdminSettings::parse(
            "{\"linuxVM\": {\"dockerDaemonOptions\": {\"value\": \"\"}}}",
            "a",
        )
        .unwrap();
        assert_eq!(s.docker_daemon_options.unwrap().value, Some(Map::new()));
    }

    #[test]
    fn image_and_command_entries_are_validated() {
        let text = r#"{"enhancedContainerIsolation": {"dockerSocketMount": {
  "imageList": {"images": ["docker.io/*", "Alpine", "ok:1", 7], "allowDerivedImages": "no"},
  "commandList": {"type": "allow", "commands": ["push", "psuh", "service*"]}}}}"#;
        let problems = invalid(text);
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "enhancedContainerIsolation.dockerSocketMount.imageList.images[0]",
                "enhancedContainerIsolation.dockerSocketMount.imageList.images[1]",
                "enhancedContainerIsolation.dockerSocketMount.imageList.images[3]",
                "enhancedContainerIsolation.dockerSocketMount.imageList.allowDerivedImages",
                "enhancedContainerIsolation.dockerSocketMount.commandList.commands[1]",
                "enhancedContainerIsolation.dockerSocketMount.commandList.commands[2]",
            ]
        );
        assert!(problems[1].message.contains("lowercase"));
        assert!(problems[4].message.contains("did you mean \"push\""));
    }

    #[test]
    fn proxy_exclude_accepts_a_comma_separated_string() {
        let text = r#"{"containersProxy": {"mode": "manual", "http": "http://p:3128", "exclude": "localhost, *.corp"}}"#;
        let (s, _) = AdminSettings::parse(text, "a").unwrap();
        let p = s.containers_proxy.unwrap();
        assert!(!p.locked);
        assert_eq!(p.value.unwrap().exclude, vec!["localhost", "*.corp"]);
    }

    #[test]
    fn root_must_be_an_object_and_empty_objects_are_fine() {
        assert_eq!(invalid("[]")[0].key, "");
        let (s, w) = AdminSettings::parse("{}", "a").unwrap();
        assert!(w.is_empty());
        assert_eq!(s.enhanced_container_isolation, None);
    }
}
