//! Image definitions: `images/*.yaml`, parsed strictly and merged along their `extends` chain.
//!
//! Each file is parsed on its own into a [`Layer`] (every field optional, unknown fields refused),
//! so a type error or typo is reported against the file and line the user actually wrote. Layers
//! are then merged base-first: scalars are overridden by the extending file, lists are appended.
//! Only the merged result is checked for completeness and turned into an [`ImageSpec`].

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where in a definition file something was found (1-based, like editors show).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read image definition {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{location}: {message}{}", hint_suffix(hint))]
    Syntax {
        location: Location,
        message: String,
        hint: Option<String>,
    },
    #[error("{}: `extends` forms a cycle: {}; remove one of these `extends` lines", chain[0].display(), chain.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" -> "))]
    Cycle { chain: Vec<PathBuf> },
    #[error("{location}: template `{template}` not found in {}; create it there or fix the name", dir.display())]
    MissingTemplate {
        location: Location,
        template: String,
        dir: PathBuf,
    },
    #[error("{location}: `{field}`: {message}")]
    Invalid {
        location: Location,
        field: String,
        message: String,
    },
    #[error("{}: required field `{field}` is not set by this file or any file it extends ({}); add it to one of them", chain[0].display(), chain.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    Missing { chain: Vec<PathBuf>, field: String },
}

fn hint_suffix(hint: &Option<String>) -> String {
    hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default()
}

/// The fully merged, validated definition of one target image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSpec {
    /// The definition file that was asked for (the leaf of the `extends` chain).
    pub file: PathBuf,
    /// Every file that contributed, leaf first.
    pub chain: Vec<PathBuf>,
    pub name: String,
    pub target: String,
    pub distribution: Distribution,
    pub packages: Packages,
    pub kernel: KernelPin,
    pub templates_dir: PathBuf,
    pub files: Vec<RenderedFile>,
    pub users: Vec<User>,
    pub groups: Vec<Group>,
    pub alternatives: Vec<Alternative>,
    pub directories: Vec<Directory>,
    pub remove: Vec<String>,
    pub settings: Option<PathBuf>,
    pub initramfs: InitramfsOptions,
    pub binaries: Vec<WorkspaceBinary>,
    /// Programs built from their pinned Debian source package (`source_builds:`).
    pub source_builds: Vec<SourceBuild>,
    /// What the build writes besides the kernel, `manifest.json` and the SBOM, in writing order.
    pub outputs: Vec<OutputKind>,
}

/// An output a definition names under `outputs:`; each kind has one writer in
/// `artifact::outputs` (a new platform is a new kind and its writer, no target-name match).
/// The order of the variants is the order the outputs are written and listed in the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputKind {
    /// `initramfs.img`: the root filesystem for kernels booted with an initramfs.
    Initramfs,
    /// Hyper-V Generation 2: `boot.vhdx` (UEFI, systemd-boot), `data.vhdx`, `create-vm.ps1`.
    HypervDisks,
    /// WSL2: `rootfs.tar.gz`, the same bytes as `NAME.wsl`, and a `.wslconfig` snippet.
    WslRootfs,
    /// A container image's root filesystem, `rootfs.tar` for `docker import`: no kernel, no
    /// boot files (a definition whose only output this is has no `kernel:`).
    ContainerRootfs,
}

/// A binary built from this workspace (`cargo build --release --bin NAME`) and installed in
/// the VM: the runtime side of eci ships this way.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceBinary {
    /// The cargo binary target name.
    pub bin: String,
    /// Where it goes in the VM.
    pub path: String,
}

/// A program the image builds from its Debian source package (pinned in the lock) instead of
/// installing the binary package; `builder/src/source_build/` holds one recipe per package.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceBuild {
    /// The Debian source package, which also names the recipe.
    pub package: String,
    /// Why the image does not take Debian's binary: a reviewer must see it.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distribution {
    pub suites: Vec<String>,
    pub components: Vec<String>,
    pub architecture: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packages {
    pub include: Vec<String>,
    pub exclude: Vec<Exclusion>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exclusion {
    pub name: String,
    /// Why the image can live without it: excluding is a decision a reviewer must see.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelPin {
    pub source: KernelSource,
    pub fragments: Vec<String>,
    pub modules: Vec<String>,
    pub cmdline: Vec<String>,
}

/// Where the image's kernel comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSource {
    /// A Debian kernel package, pinned by version and sha256 (and listed in the lock).
    Package {
        package: String,
        version: String,
        sha256: String,
    },
    /// Our own kernel for the image's target (`kernel.build: true`): `eci-build kernel build
    /// --target T` from the pinned source (kernel-config/source.lock) and the committed config
    /// (kernel-config/generated/T.config), taken from its cache or built on demand.
    Own,
    /// No kernel: a container root filesystem (`outputs: [container-rootfs]`), run on the
    /// kernel of whatever engine imports it.
    None,
}

impl KernelPin {
    /// The pinned package, for a definition that boots one.
    pub fn package(&self) -> Option<(&str, &str, &str)> {
        match &self.source {
            KernelSource::Package {
                package,
                version,
                sha256,
            } => Some((package, version, sha256)),
            KernelSource::Own | KernelSource::None => None,
        }
    }

    /// Names the kernel's origin in messages.
    pub fn describe(&self) -> String {
        match &self.source {
            KernelSource::Package { package, .. } => package.clone(),
            KernelSource::Own => "eci's own kernel (eci-build kernel build)".into(),
            KernelSource::None => "no kernel (a container root filesystem)".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RenderedFile {
    pub path: String,
    pub template: String,
    pub mode: u32,
    pub vars: BTreeMap<String, serde_yaml_ng::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    #[serde(default = "default_home")]
    pub home: String,
    #[serde(default = "default_shell")]
    pub shell: String,
    #[serde(default)]
    pub comment: String,
}

fn default_home() -> String {
    "/nonexistent".into()
}

fn default_shell() -> String {
    "/usr/sbin/nologin".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    #[serde(default)]
    pub members: Vec<String>,
}

/// What `update-alternatives` would have set up: `link` -> /etc/alternatives/`name` -> `target`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alternative {
    pub name: String,
    pub link: String,
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directory {
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionName {
    Zstd,
    Gzip,
    Xz,
    Lz4,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitramfsOptions {
    pub compression: CompressionName,
}

// ---- the per-file layer, exactly as written -------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Layer {
    extends: Option<String>,
    name: Option<String>,
    target: Option<String>,
    #[allow(dead_code)]
    // documentation for readers of the YAML, kept so it is not an unknown field
    description: Option<String>,
    distribution: Option<DistributionLayer>,
    packages: Option<PackagesLayer>,
    kernel: Option<KernelLayer>,
    templates: Option<String>,
    #[serde(default)]
    files: Vec<FileLayer>,
    #[serde(default)]
    users: Vec<User>,
    #[serde(default)]
    groups: Vec<Group>,
    #[serde(default)]
    alternatives: Vec<Alternative>,
    #[serde(default)]
    directories: Vec<DirectoryLayer>,
    #[serde(default)]
    remove: Vec<String>,
    settings: Option<String>,
    initramfs: Option<InitramfsLayer>,
    #[serde(default)]
    binaries: Vec<WorkspaceBinary>,
    #[serde(default)]
    source_builds: Vec<SourceBuild>,
    #[serde(default)]
    outputs: Vec<OutputKind>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DistributionLayer {
    suites: Option<Vec<String>>,
    components: Option<Vec<String>>,
    architecture: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PackagesLayer {
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    exclude: Vec<Exclusion>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KernelLayer {
    build: Option<bool>,
    package: Option<String>,
    version: Option<String>,
    sha256: Option<String>,
    #[serde(default)]
    fragments: Vec<String>,
    #[serde(default)]
    modules: Vec<String>,
    #[serde(default)]
    cmdline: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLayer {
    path: String,
    template: String,
    #[serde(default = "default_file_mode")]
    mode: String,
    #[serde(default)]
    vars: BTreeMap<String, serde_yaml_ng::Value>,
}

fn default_file_mode() -> String {
    "0644".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectoryLayer {
    path: String,
    #[serde(default = "default_dir_mode")]
    mode: String,
    #[serde(default)]
    uid: u32,
    #[serde(default)]
    gid: u32,
}

fn default_dir_mode() -> String {
    "0755".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InitramfsLayer {
    compression: CompressionName,
}

/// One parsed file with the text kept for locating values in later checks.
struct Parsed {
    path: PathBuf,
    text: String,
    layer: Layer,
}

impl Parsed {
    /// Best-effort location of a value the user wrote, for checks serde cannot do (a template
    /// that does not exist, a malformed mode). Falls back to the top of the file.
    fn locate(&self, needle: &str) -> Location {
        for (i, line) in self.text.lines().enumerate() {
            if let Some(col) = line.find(needle) {
                return Location {
                    file: self.path.clone(),
                    line: i + 1,
                    column: col + 1,
                };
            }
        }
        Location {
            file: self.path.clone(),
            line: 1,
            column: 1,
        }
    }
}

/// Reads `path` and everything it extends, and returns the merged, validated definition.
pub fn load(path: &Path) -> Result<ImageSpec, SpecError> {
    let chain = read_chain(path)?;
    merge(chain)
}

fn read_chain(path: &Path) -> Result<Vec<Parsed>, SpecError> {
    let mut chain: Vec<Parsed> = Vec::new();
    let mut next = Some(path.to_path_buf());
    while let Some(p) = next.take() {
        let canonical = p.canonicalize().map_err(|source| SpecError::Io {
            path: p.clone(),
            source,
        })?;
        if chain
            .iter()
            .any(|c| c.path.canonicalize().ok().as_ref() == Some(&canonical))
        {
            let mut cycle: Vec<PathBuf> = chain.iter().map(|c| c.path.clone()).collect();
            cycle.push(p);
            return Err(SpecError::Cycle { chain: cycle });
        }
        let parsed = parse_file(&p)?;
        if let Some(parent) = &parsed.layer.extends {
            next = Some(relative_to(&p, parent));
        }
        chain.push(parsed);
    }
    Ok(chain)
}

fn relative_to(file: &Path, reference: &str) -> PathBuf {
    let base = file.parent().unwrap_or_else(|| Path::new("."));
    base.join(reference)
}

fn parse_file(path: &Path) -> Result<Parsed, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|source| SpecError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let layer = parse_layer(&text, path)?;
    Ok(Parsed {
        path: path.to_path_buf(),
        text,
        layer,
    })
}

fn parse_layer(text: &str, path: &Path) -> Result<Layer, SpecError> {
    // An empty document is a valid (empty) layer; serde_yaml_ng would call it a type error.
    if text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#')
    }) {
        return Ok(Layer::default());
    }
    serde_yaml_ng::from_str::<Layer>(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        let message = e.to_string();
        // serde_yaml_ng appends " at line X column Y"; the location is printed in front already.
        let message = match message.find(" at line ") {
            Some(i) => message[..i].to_string(),
            None => message,
        };
        let hint = suggest_field(&message);
        SpecError::Syntax {
            location: Location {
                file: path.to_path_buf(),
                line,
                column,
            },
            message,
            hint,
        }
    })
}

/// For "unknown field `pakages`, expected one of `a`, `b`" proposes the closest known name.
fn suggest_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (unknown, rest) = rest.split_once('`')?;
    let candidates: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let best = candidates
        .iter()
        .map(|c| (edit_distance(unknown, c), *c))
        .min()?;
    if best.0 <= 3 {
        Some(format!("did you mean `{}`?", best.1))
    } else {
        Some(format!("known fields: {}", candidates.join(", ")))
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn parse_mode(parsed: &Parsed, field: &str, mode: &str) -> Result<u32, SpecError> {
    let digits = mode.strip_prefix("0o").unwrap_or(mode);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(SpecError::Invalid {
            location: parsed.locate(mode),
            field: field.to_string(),
            message: format!("`{mode}` is not an octal file mode; write it quoted, e.g. \"0755\""),
        }),
    }
}

fn check_absolute(parsed: &Parsed, field: &str, path: &str) -> Result<(), SpecError> {
    if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
        return Err(SpecError::Invalid {
            location: parsed.locate(path),
            field: field.to_string(),
            message: format!("`{path}` must be an absolute path inside the VM without `..`"),
        });
    }
    Ok(())
}

/// Merges base-first so the leaf wins scalars and lists grow in reading order.
fn merge(chain: Vec<Parsed>) -> Result<ImageSpec, SpecError> {
    let leaf_first: Vec<PathBuf> = chain.iter().map(|p| p.path.clone()).collect();
    let missing = |field: &str| SpecError::Missing {
        chain: leaf_first.clone(),
        field: field.to_string(),
    };

    let mut name = None;
    let mut target = None;
    let (mut suites, mut components, mut architecture) = (None, None, None);
    let (mut include, mut exclude) = (Vec::new(), Vec::new());
    let (mut kpackage, mut kversion, mut ksha) = (None, None, None);
    let mut kbuild: Option<(bool, usize)> = None;
    let (mut fragments, mut modules, mut cmdline) = (Vec::new(), Vec::new(), Vec::new());
    let mut templates_dir: Option<PathBuf> = None;
    let mut file_layers: Vec<(usize, FileLayer)> = Vec::new();
    let (mut users, mut groups, mut alternatives) = (Vec::new(), Vec::new(), Vec::new());
    let mut directories = Vec::new();
    let mut remove = Vec::new();
    let mut settings = None;
    let mut compression = CompressionName::Zstd;
    let mut binaries: Vec<WorkspaceBinary> = Vec::new();
    let mut source_builds: Vec<(usize, SourceBuild)> = Vec::new();
    let mut outputs: Vec<OutputKind> = Vec::new();

    for (idx, parsed) in chain.iter().enumerate().rev() {
        let layer = &parsed.layer;
        let file = &parsed.path;
        if layer.name.is_some() {
            name = layer.name.clone();
        }
        if layer.target.is_some() {
            target = layer.target.clone();
        }
        if let Some(d) = &layer.distribution {
            suites = d.suites.clone().or(suites);
            components = d.components.clone().or(components);
            architecture = d.architecture.clone().or(architecture);
        }
        if let Some(p) = &layer.packages {
            include.extend(p.include.iter().cloned());
            exclude.extend(p.exclude.iter().cloned());
        }
        if let Some(k) = &layer.kernel {
            if let Some(b) = k.build {
                kbuild = Some((b, idx));
            }
            kpackage = k.package.clone().or(kpackage);
            kversion = k.version.clone().or(kversion);
            ksha = k.sha256.clone().or(ksha);
            fragments.extend(k.fragments.iter().cloned());
            modules.extend(k.modules.iter().cloned());
            cmdline.extend(k.cmdline.iter().cloned());
        }
        if let Some(t) = &layer.templates {
            templates_dir = Some(relative_to(file, t));
        }
        for f in &layer.files {
            file_layers.push((
                idx,
                FileLayer {
                    path: f.path.clone(),
                    template: f.template.clone(),
                    mode: f.mode.clone(),
                    vars: f.vars.clone(),
                },
            ));
        }
        users.extend(layer.users.iter().cloned());
        groups.extend(layer.groups.iter().cloned());
        alternatives.extend(layer.alternatives.iter().cloned());
        for d in &layer.directories {
            check_absolute(parsed, "directories.path", &d.path)?;
            directories.push(Directory {
                path: d.path.clone(),
                mode: parse_mode(parsed, "directories.mode", &d.mode)?,
                uid: d.uid,
                gid: d.gid,
            });
        }
        remove.extend(layer.remove.iter().cloned());
        outputs.extend(layer.outputs.iter().copied());
        if let Some(s) = &layer.settings {
            settings = Some(relative_to(file, s));
        }
        if let Some(i) = &layer.initramfs {
            compression = i.compression;
        }
        for b in &layer.binaries {
            check_absolute(parsed, "binaries.path", &b.path)?;
            if b.bin.is_empty()
                || !b
                    .bin
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(SpecError::Invalid {
                    location: parsed.locate(&b.bin),
                    field: "binaries.bin".into(),
                    message: format!("`{}` is not a cargo binary name", b.bin),
                });
            }
            binaries.retain(|x| x.path != b.path);
            binaries.push(b.clone());
        }
        for b in &layer.source_builds {
            if crate::source_build::recipe(&b.package).is_none() {
                return Err(SpecError::Invalid {
                    location: parsed.locate(&b.package),
                    field: "source_builds.package".into(),
                    message: format!(
                        "no recipe builds `{}` from source; eci-build has recipes for: {}",
                        b.package,
                        crate::source_build::recipe_names().join(", ")
                    ),
                });
            }
            if b.reason.trim().is_empty() {
                return Err(SpecError::Invalid {
                    location: parsed.locate(&b.package),
                    field: "source_builds.reason".into(),
                    message: format!(
                        "`{}` has no reason; say why the image builds it instead of taking Debian's binary",
                        b.package
                    ),
                });
            }
            source_builds.retain(|(_, x)| x.package != b.package);
            source_builds.push((idx, b.clone()));
        }
        for a in &layer.alternatives {
            check_absolute(parsed, "alternatives.link", &a.link)?;
            check_absolute(parsed, "alternatives.target", &a.target)?;
        }
        if let Some(sha) = layer.kernel.as_ref().and_then(|k| k.sha256.as_ref()) {
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(SpecError::Invalid {
                    location: parsed.locate(sha),
                    field: "kernel.sha256".into(),
                    message: "expected 64 hexadecimal characters (the SHA-256 of the kernel .deb, as in the lockfile)".into(),
                });
            }
        }
    }

    // A container root filesystem runs on its engine's kernel: its definition names none, and
    // a kernel key there would be a pin nothing checks.
    let container_only =
        !outputs.is_empty() && outputs.iter().all(|k| *k == OutputKind::ContainerRootfs);
    if container_only {
        if let Some(parsed) = chain.iter().find(|p| p.layer.kernel.is_some()) {
            return Err(SpecError::Invalid {
                location: parsed.locate("kernel"),
                field: "kernel".into(),
                message: "a definition whose only output is container-rootfs has no kernel (the engine that imports it brings its own); remove `kernel:` from this file or do not extend it".into(),
            });
        }
    }
    let templates_dir = templates_dir.ok_or_else(|| missing("templates"))?;
    let mut files = Vec::new();
    // A later (more specific) file replaces an earlier entry for the same VM path.
    for (idx, f) in file_layers {
        let parsed = &chain[idx];
        check_absolute(parsed, "files.path", &f.path)?;
        if !templates_dir.join(&f.template).is_file() {
            return Err(SpecError::MissingTemplate {
                location: parsed.locate(&f.template),
                template: f.template.clone(),
                dir: templates_dir.clone(),
            });
        }
        let mode = parse_mode(parsed, "files.mode", &f.mode)?;
        files.retain(|existing: &RenderedFile| existing.path != f.path);
        files.push(RenderedFile {
            path: f.path,
            template: f.template,
            mode,
            vars: f.vars,
        });
    }
    // The built program replaces the binary package's: both in one image would be two
    // versions of one program, and which one a PATH lookup finds would be an accident.
    for (idx, b) in &source_builds {
        let recipe = crate::source_build::recipe(&b.package).expect("checked above");
        if !exclude.iter().any(|x| x.name == recipe.replaces) {
            return Err(SpecError::Invalid {
                location: chain[*idx].locate(&b.package),
                field: "source_builds".into(),
                message: format!(
                    "`{}` is built from source, so its binary package `{}` must be in `packages.exclude` (with the reason that it is built from source)",
                    b.package, recipe.replaces
                ),
            });
        }
    }
    check_unique(
        &chain,
        "users",
        users.iter().map(|u| u.name.as_str()).collect(),
    )?;
    check_unique(
        &chain,
        "groups",
        groups.iter().map(|g| g.name.as_str()).collect(),
    )?;
    if let Some(s) = &settings {
        if !s.is_file() {
            let leaf = chain
                .iter()
                .find(|p| p.layer.settings.is_some())
                .expect("settings came from some layer");
            let written = leaf.layer.settings.clone().unwrap_or_default();
            return Err(SpecError::Invalid {
                location: leaf.locate(&written),
                field: "settings".into(),
                message: format!(
                    "admin settings file {} does not exist; the path is relative to the definition file",
                    s.display()
                ),
            });
        }
    }

    Ok(ImageSpec {
        file: leaf_first[0].clone(),
        chain: leaf_first.clone(),
        name: name.ok_or_else(|| missing("name"))?,
        target: target.ok_or_else(|| missing("target"))?,
        distribution: Distribution {
            suites: suites.ok_or_else(|| missing("distribution.suites"))?,
            components: components.unwrap_or_else(|| vec!["main".into()]),
            architecture: architecture.ok_or_else(|| missing("distribution.architecture"))?,
        },
        packages: Packages { include, exclude },
        kernel: KernelPin {
            source: match kbuild {
                _ if container_only => KernelSource::None,
                Some((true, idx)) => {
                    if kpackage.is_some() || kversion.is_some() || ksha.is_some() {
                        return Err(SpecError::Invalid {
                            location: chain[idx].locate("build"),
                            field: "kernel.build".into(),
                            message: "`build: true` (our own kernel) and `kernel.package`/`version`/`sha256` (a Debian kernel package) exclude each other, and a file of this chain sets both; keep the package pin only in the definitions that boot it".into(),
                        });
                    }
                    KernelSource::Own
                }
                _ => KernelSource::Package {
                    package: kpackage
                        .ok_or_else(|| missing("kernel.package (or kernel.build: true)"))?,
                    version: kversion.ok_or_else(|| missing("kernel.version"))?,
                    sha256: ksha.ok_or_else(|| missing("kernel.sha256"))?,
                },
            },
            fragments,
            modules,
            cmdline,
        },
        templates_dir,
        files,
        users,
        groups,
        alternatives,
        directories,
        remove,
        settings,
        initramfs: InitramfsOptions { compression },
        binaries,
        source_builds: source_builds.into_iter().map(|(_, b)| b).collect(),
        outputs: {
            // Lists append along `extends`; one output of a kind, in the kinds' order.
            outputs.sort();
            outputs.dedup();
            outputs
        },
    })
}

fn check_unique(chain: &[Parsed], field: &str, names: Vec<&str>) -> Result<(), SpecError> {
    let mut seen = std::collections::BTreeSet::new();
    for n in names {
        if !seen.insert(n) {
            let parsed = chain
                .iter()
                .rev()
                .find(|p| p.text.contains(n))
                .unwrap_or(&chain[0]);
            return Err(SpecError::Invalid {
                location: parsed.locate(n),
                field: field.into(),
                message: format!("`{n}` is declared twice; keep one entry"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("templates")).unwrap();
            std::fs::write(dir.path().join("templates/init.tera"), "#!/bin/sh\n").unwrap();
            Fixture { dir }
        }
        fn write(&self, name: &str, text: &str) -> PathBuf {
            let p = self.dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        }
    }

    const BASE: &str = r#"
name: eci
templates: templates
distribution:
  suites: [bookworm, bookworm-security]
  architecture: amd64
packages:
  include: [busybox, docker.io]
  exclude:
    - name: initramfs-tools
      reason: we write our own initramfs
kernel:
  package: linux-image-cloud
  version: "6.12.1-1"
  sha256: 0000000000000000000000000000000000000000000000000000000000000000
  fragments: [container, hardening]
  modules: [overlay]
files:
  - path: /init
    template: init.tera
    mode: "0755"
users:
  - {name: root, uid: 0, gid: 0, home: /root}
groups:
  - {name: root, gid: 0}
"#;

    /// A container root filesystem has no kernel; a VM definition without one is still an
    /// error, and a kernel key in a container definition's chain is refused, not ignored.
    #[test]
    fn container_rootfs_definitions_have_no_kernel() {
        let fx = Fixture::new();
        let container = "name: c\ntarget: c\ntemplates: templates\ndistribution:\n  suites: [bookworm]\n  architecture: amd64\noutputs: [container-rootfs]\n";
        let spec = load(&fx.write("c.yaml", container)).unwrap();
        assert_eq!(spec.kernel.source, KernelSource::None);
        assert_eq!(spec.outputs, [OutputKind::ContainerRootfs]);

        let vm = container.replace("[container-rootfs]", "[initramfs]");
        let err = load(&fx.write("vm.yaml", &vm)).unwrap_err().to_string();
        assert!(err.contains("kernel.package"), "{err}");

        fx.write("base.yaml", BASE);
        let err = load(&fx.write(
            "c2.yaml",
            "extends: base.yaml\ntarget: c2\noutputs: [container-rootfs]\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("has no kernel"), "{err}");
    }

    #[test]
    fn extends_merges_lists_and_overrides_scalars() {
        let fx = Fixture::new();
        fx.write("base.yaml", BASE);
        let leaf = fx.write(
            "hyperv.yaml",
            "extends: base.yaml\ntarget: hyperv\nkernel:\n  fragments: [hyperv]\n  modules: [hv_sock]\npackages:\n  include: [iptables]\n",
        );
        let spec = load(&leaf).unwrap();
        assert_eq!(spec.target, "hyperv");
        assert_eq!(spec.name, "eci");
        assert_eq!(
            spec.kernel.fragments,
            vec!["container", "hardening", "hyperv"]
        );
        assert_eq!(spec.kernel.modules, vec!["overlay", "hv_sock"]);
        assert_eq!(
            spec.packages.include,
            vec!["busybox", "docker.io", "iptables"]
        );
        assert_eq!(spec.files[0].mode, 0o755);
        assert_eq!(spec.chain.len(), 2);
    }

    #[test]
    fn unknown_field_names_file_line_column_and_suggests() {
        let fx = Fixture::new();
        let p = fx.write("bad.yaml", "name: eci\npakages:\n  include: [x]\n");
        let err = load(&p).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("bad.yaml:2:1"), "{msg}");
        assert!(msg.contains("unknown field `pakages`"), "{msg}");
        assert!(msg.contains("did you mean `packages`?"), "{msg}");
    }

    #[test]
    fn wrong_type_is_located() {
        let fx = Fixture::new();
        let p = fx.write(
            "bad.yaml",
            "name: eci\ndistribution:\n  suites: bookworm\n  architecture: amd64\n",
        );
        let msg = load(&p).unwrap_err().to_string();
        assert!(msg.contains("bad.yaml:3:"), "{msg}");
        assert!(msg.contains("suites"), "{msg}");
    }

    #[test]
    fn include_cycle_is_refused() {
        let fx = Fixture::new();
        fx.write("a.yaml", "extends: b.yaml\n");
        fx.write("b.yaml", "extends: c.yaml\n");
        let c = fx.write("c.yaml", "extends: a.yaml\n");
        let err = load(&c).unwrap_err();
        assert!(matches!(err, SpecError::Cycle { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("cycle"), "{msg}");
        // The chain starts where the user started and ends where it loops back.
        assert!(msg.contains("c.yaml -> "), "{msg}");
        assert!(msg.contains("a.yaml -> "), "{msg}");
        assert!(msg.contains("b.yaml -> "), "{msg}");
        assert!(
            msg.trim_end()
                .ends_with("c.yaml; remove one of these `extends` lines"),
            "{msg}"
        );
    }

    #[test]
    fn missing_template_is_located() {
        let fx = Fixture::new();
        fx.write("base.yaml", BASE);
        let p = fx.write(
            "t.yaml",
            "extends: base.yaml\ntarget: t\nfiles:\n  - path: /etc/x\n    template: nope.tera\n",
        );
        let msg = load(&p).unwrap_err().to_string();
        assert!(msg.contains("t.yaml:5:15"), "{msg}");
        assert!(msg.contains("template `nope.tera` not found"), "{msg}");
    }

    #[test]
    fn own_kernel_excludes_a_package_pin() {
        let fx = Fixture::new();
        // Without the package pin (as the real base.yaml: targets pick their kernel).
        let base = BASE
            .replace("  package: linux-image-cloud\n", "")
            .replace("  version: \"6.12.1-1\"\n", "")
            .replace(
                "  sha256: 0000000000000000000000000000000000000000000000000000000000000000\n",
                "",
            );
        fx.write("base.yaml", &base);
        let own = fx.write(
            "wsl2.yaml",
            "extends: base.yaml\ntarget: wsl2\nkernel:\n  build: true\n  fragments: [wsl2]\n",
        );
        let spec = load(&own).unwrap();
        assert_eq!(spec.kernel.source, KernelSource::Own);
        assert_eq!(spec.kernel.package(), None);
        assert_eq!(spec.kernel.modules, vec!["overlay"]);

        let neither = fx.write("t.yaml", "extends: base.yaml\ntarget: t\n");
        let msg = load(&neither).unwrap_err().to_string();
        assert!(
            msg.contains("kernel.package (or kernel.build: true)"),
            "{msg}"
        );

        fx.write("pkgbase.yaml", BASE);
        let both = fx.write(
            "both.yaml",
            "extends: pkgbase.yaml\ntarget: wsl2\nkernel:\n  build: true\n",
        );
        let msg = load(&both).unwrap_err().to_string();
        assert!(msg.contains("both.yaml:4:"), "{msg}");
        assert!(msg.contains("exclude each other"), "{msg}");
    }

    #[test]
    fn missing_required_field_names_the_chain() {
        let fx = Fixture::new();
        fx.write("base.yaml", BASE);
        let p = fx.write("t.yaml", "extends: base.yaml\n");
        let msg = load(&p).unwrap_err().to_string();
        assert!(msg.contains("required field `target`"), "{msg}");
        assert!(msg.contains("base.yaml"), "{msg}");
    }

    #[test]
    fn bad_mode_and_sha_are_located() {
        let fx = Fixture::new();
        fx.write("base.yaml", BASE);
        let p = fx.write(
            "t.yaml",
            "extends: base.yaml\ntarget: t\nfiles:\n  - path: /etc/x\n    template: init.tera\n    mode: \"0999\"\n",
        );
        let msg = load(&p).unwrap_err().to_string();
        assert!(msg.contains("t.yaml:6:"), "{msg}");
        assert!(msg.contains("octal"), "{msg}");
        let p = fx.write(
            "u.yaml",
            "extends: base.yaml\ntarget: t\nkernel:\n  sha256: abc\n",
        );
        let msg = load(&p).unwrap_err().to_string();
        assert!(msg.contains("u.yaml:4:"), "{msg}");
        assert!(msg.contains("64 hexadecimal"), "{msg}");
    }

    #[test]
    fn relative_path_escape_and_duplicates_are_refused() {
        let fx = Fixture::new();
        fx.write("base.yaml", BASE);
        let p = fx.write(
            "t.yaml",
            "extends: base.yaml\ntarget: t\ndirectories:\n  - path: var/lib\n",
        );
        assert!(load(&p).unwrap_err().to_string().contains("absolute"));
        let p = fx.write(
            "d.yaml",
            "extends: base.yaml\ntarget: t\nusers:\n  - {name: root, uid: 0, gid: 0}\n",
        );
        let msg = load(&p).unwrap_err().to_string();
        assert!(msg.contains("declared twice"), "{msg}");
    }

    #[test]
    fn workspace_binaries_are_validated_and_replaced_by_path() {
        let fx = Fixture::new();
        fx.write("base.yaml", BASE);
        let p = fx.write(
            "t.yaml",
            "extends: base.yaml\ntarget: t\nbinaries:\n  - {bin: eci-runc, path: /usr/bin/eci-runc}\n  - {bin: eci-runc2, path: /usr/bin/eci-runc}\n",
        );
        let spec = load(&p).unwrap();
        assert_eq!(spec.binaries.len(), 1);
        assert_eq!(spec.binaries[0].bin, "eci-runc2");
        let p = fx.write(
            "u.yaml",
            "extends: base.yaml\ntarget: t\nbinaries:\n  - {bin: \"../x\", path: /usr/bin/x}\n",
        );
        let msg = load(&p).unwrap_err().to_string();
        assert!(
            msg.contains("u.yaml:4:") && msg.contains("cargo binary name"),
            "{msg}"
        );
    }

    #[test]
    fn leaf_file_replaces_base_file_for_the_same_path() {
        let fx = Fixture::new();
        fx.write("base.yaml", BASE);
        std::fs::write(fx.dir.path().join("templates/other.tera"), "x").unwrap();
        let p = fx.write(
            "t.yaml",
            "extends: base.yaml\ntarget: t\nfiles:\n  - path: /init\n    template: other.tera\n",
        );
        let spec = load(&p).unwrap();
        assert_eq!(spec.files.len(), 1);
        assert_eq!(spec.files[0].template, "other.tera");
        assert_eq!(spec.files[0].mode, 0o644);
    }

    #[test]
    fn empty_file_is_an_empty_layer_and_missing_file_is_io_error() {
        let fx = Fixture::new();
        let p = fx.write("empty.yaml", "# nothing\n");
        assert!(matches!(load(&p).unwrap_err(), SpecError::Missing { .. }));
        let err = load(&fx.dir.path().join("absent.yaml")).unwrap_err();
        assert!(matches!(err, SpecError::Io { .. }), "{err}");
    }
}
