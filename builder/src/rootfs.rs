//! The VM root filesystem, assembled in memory from pinned packages and the image definition.
//!
//! Nothing here needs root: ownership, modes, device nodes and file capabilities live in the
//! [`Manifest`] and only become real inside the VM. Maintainer scripts never run; what they
//! would have done for the packages eci ships is declared in the image definition instead:
//!
//! | maintainer script effect                  | done here by                                   |
//! |-------------------------------------------|------------------------------------------------|
//! | base-passwd / adduser: users and groups   | `users:`/`groups:` -> /etc/passwd, group, shadow |
//! | update-alternatives (iptables backend)    | `alternatives:` -> /etc/alternatives symlinks   |
//! | directories created at install time       | `directories:`                                  |
//! | depmod (kernel postinst)                  | [`crate::modules`]: closure + load order         |
//! | dpkg's own database                       | /var/lib/dpkg/status written from control data   |
//! | base-files: /var/run -> /run               | [`run_links`]: the empty folder becomes a link   |
//! | ldconfig (libc-bin trigger)               | not needed: every shipped library lives in a    |
//! |                                           | directory ld.so searches by default             |
//!
//! Packages are unpacked in name order so that a file shipped by two packages resolves the same
//! way on every build.

use crate::apt::deb::{self, DebControl};
use crate::error_chain::error_chain;
use crate::manifest::{Blob, Entry, EntryKind, Manifest, ManifestError};
use crate::modules::{self, Available};
use crate::spec::ImageSpec;
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// One pinned package's bytes, already verified against the lock.
pub struct Package {
    pub name: String,
    pub version: String,
    pub bytes: Vec<u8>,
}

/// What a package contributed, for the SBOM and the dpkg database.
#[derive(Debug, Clone)]
pub struct PackageRecord {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub control: DebControl,
}

/// The kernel that boots the image, taken out of its package.
#[derive(Debug, Clone)]
pub struct KernelImage {
    pub release: String,
    pub vmlinuz: Vec<u8>,
    pub config: String,
}

pub struct Rootfs {
    pub manifest: Manifest,
    /// `None` only for a definition without a kernel (`outputs: [container-rootfs]`).
    pub kernel: Option<KernelImage>,
    pub packages: Vec<PackageRecord>,
    /// Modules shipped, in load order.
    pub modules: Vec<String>,
    /// Requested modules the kernel has built in (nothing to load).
    pub builtin_modules: Vec<String>,
    pub warnings: Vec<String>,
}

impl Rootfs {
    /// The kernel of a bootable image. The definition loader gives every definition with a
    /// boot output a kernel, so the boot writers can rely on it.
    pub fn booted_kernel(&self) -> &KernelImage {
        self.kernel
            .as_ref()
            .expect("a definition with a boot output has a kernel (spec::load)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{path} is built from source ({package}, source_builds:) but a locked package ships it too; exclude that package in the definition and re-run `eci-build lock`")]
    SourceBuildClash { package: String, path: String },
    #[error("package {package}: {source}")]
    Deb {
        package: String,
        #[source]
        source: Box<deb::DebError>,
    },
    #[error("{context}: {source}")]
    Manifest {
        context: String,
        #[source]
        source: ManifestError,
    },
    #[error(transparent)]
    Module(#[from] modules::ModuleError),
    #[error("{package}: the image holds {found} kernel images under /boot (expected exactly one vmlinuz-*; a definition with `kernel.build: true` must not also list a kernel package)")]
    Kernel { package: String, found: usize },
    #[error("kernel {release}: /boot/config-{release} is missing from the package; eci needs it to check the kernel against its pins")]
    KernelConfig { release: String },
    #[error("alternatives: `{name}` points at {target}, which no locked package ships; add the package that provides it or fix the path")]
    Alternative { name: String, target: String },
    #[error("remove: `{pattern}` is not a valid glob: {message}")]
    Glob { pattern: String, message: String },
    #[error("files: rendering {path} from template `{template}` failed: {message}")]
    Template {
        path: String,
        template: String,
        message: String,
    },
    #[error("files: cannot read template {path}: {source}")]
    TemplateIo {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("admin settings: {0}")]
    Settings(#[from] eci_vm_config::SettingsError),
    #[error("the image has no {path}; it is needed to boot ({why})")]
    Required {
        path: &'static str,
        why: &'static str,
    },
}

fn man(context: impl Into<String>) -> impl FnOnce(ManifestError) -> RootfsError {
    let context = context.into();
    move |source| RootfsError::Manifest { context, source }
}

/// A kernel eci built itself (`kernel.build: true`), placed where a kernel package would put
/// its files, so that the kernel and module steps below treat both alike.
#[derive(Debug, Clone)]
pub struct OwnKernel {
    pub release: String,
    pub vmlinuz: Vec<u8>,
    pub config: String,
    /// kbuild's `modules.builtin`: every requested module must be in it (the own kernels have
    /// no loadable modules at all).
    pub modules_builtin: String,
}

/// Builds the root filesystem for `spec` from its locked packages (and its own kernel when the
/// definition builds one).
pub fn assemble(
    spec: &ImageSpec,
    mut packages: Vec<Package>,
    binaries: Vec<crate::binaries::Built>,
    source_builds: &[crate::source_build::Built],
    own_kernel: Option<OwnKernel>,
    epoch: u64,
) -> Result<Rootfs, RootfsError> {
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    let mut manifest = Manifest::new();
    let mut records = Vec::new();
    let mut warnings = Vec::new();
    // Decompression dominates a build; packages are read in parallel and applied in order.
    let contents: Vec<Result<deb::DebContents, RootfsError>> = packages
        .par_iter()
        .map(|pkg| {
            deb::read_deb(&pkg.bytes, &pkg.name).map_err(|source| RootfsError::Deb {
                package: format!("{} {}", pkg.name, pkg.version),
                source: Box::new(source),
            })
        })
        .collect();
    for (pkg, read) in packages.iter().zip(contents) {
        let control = read?
            .apply_to(&mut manifest)
            .map_err(|source| RootfsError::Deb {
                package: format!("{} {}", pkg.name, pkg.version),
                source: Box::new(source),
            })?;
        records.push(PackageRecord {
            name: pkg.name.clone(),
            version: pkg.version.clone(),
            architecture: control.field("Architecture").unwrap_or("").to_string(),
            control,
        });
    }
    drop(packages);

    run_links(&mut manifest, epoch)?;

    if let Some(k) = own_kernel {
        let r = &k.release;
        insert(
            &mut manifest,
            &format!("/boot/vmlinuz-{r}"),
            Entry::file(k.vmlinuz, 0o644),
            epoch,
        )?;
        insert(
            &mut manifest,
            &format!("/boot/config-{r}"),
            Entry::file(k.config, 0o644),
            epoch,
        )?;
        insert(
            &mut manifest,
            &format!("/lib/modules/{r}/modules.builtin"),
            Entry::file(k.modules_builtin, 0o644),
            epoch,
        )?;
    }
    let kernel = match spec.kernel.source {
        crate::spec::KernelSource::None => None,
        _ => Some(take_kernel(&mut manifest, &spec.kernel.describe())?),
    };
    let selection = match &kernel {
        Some(k) => select_modules(&mut manifest, &k.release, &spec.kernel.modules)?,
        None => modules::Selection::default(),
    };

    let patterns = remove_patterns(&spec.remove)?;
    manifest.remove_matching(|p| patterns.is_match(p));

    write_accounts(spec, &mut manifest, epoch)?;
    // Before alternatives, which may point at them.
    for b in binaries {
        insert(&mut manifest, &b.path, Entry::file(b.bytes, 0o755), epoch)?;
    }
    install_source_builds(&mut manifest, source_builds, epoch)?;
    for alt in &spec.alternatives {
        if manifest.resolve(&alt.target).is_err() {
            return Err(RootfsError::Alternative {
                name: alt.name.clone(),
                target: alt.target.clone(),
            });
        }
        let managed = format!("/etc/alternatives/{}", alt.name);
        insert(
            &mut manifest,
            &managed,
            Entry::symlink(alt.target.as_str()),
            epoch,
        )?;
        insert(
            &mut manifest,
            &alt.link,
            Entry::symlink(managed.as_str()),
            epoch,
        )?;
    }
    for dir in &spec.directories {
        insert(
            &mut manifest,
            &dir.path,
            Entry::dir(dir.mode).with_owner(dir.uid, dir.gid),
            epoch,
        )?;
    }
    // The kernel opens /dev/console for init's stdio before anything can mount devtmpfs; without
    // the node the VM boots silent.
    let console = Entry::new(EntryKind::CharDevice { major: 5, minor: 1 }, 0o600);
    insert(&mut manifest, "/dev/console", console, epoch)?;
    let null = Entry::new(EntryKind::CharDevice { major: 1, minor: 3 }, 0o666);
    insert(&mut manifest, "/dev/null", null, epoch)?;

    let load_order: String = selection
        .modules
        .iter()
        .map(|m| format!("{}\n", m.path))
        .collect();
    let module_names: Vec<String> = selection.modules.iter().map(|m| m.name.clone()).collect();
    for m in selection.modules {
        insert(&mut manifest, &m.path, Entry::file(m.bytes, 0o644), epoch)?;
    }
    if kernel.is_some() {
        insert(
            &mut manifest,
            eci_facts::vm_paths::MODULES_FILE,
            Entry::file(load_order, 0o644),
            epoch,
        )?;
    }

    // The VM's engine files (daemon.json, containerd's config, eci's policy) configure the VM's
    // engine; a container root filesystem's engine keeps its packages' defaults.
    if kernel.is_some() {
        warnings.extend(bake_settings(spec, &mut manifest, epoch)?);
    }
    render_files(spec, kernel.as_ref(), &module_names, &mut manifest, epoch)?;
    let status = dpkg_status(&records);
    insert(
        &mut manifest,
        "/var/lib/dpkg/status",
        Entry::file(status, 0o644),
        epoch,
    )?;

    // A container root filesystem is started by its engine, not booted.
    for (path, why) in [
        ("/init", "the kernel runs it as PID 1"),
        ("/bin/busybox", "the init script runs with it"),
    ] {
        if kernel.is_some() && manifest.resolve(path).is_err() {
            return Err(RootfsError::Required { path, why });
        }
    }
    Ok(Rootfs {
        manifest,
        kernel,
        packages: records,
        modules: module_names,
        builtin_modules: selection.builtin,
        warnings,
    })
}

/// Programs built from source stand where Debian's binary package would have put them (the
/// definition excludes that package), with their links.
fn install_source_builds(
    manifest: &mut Manifest,
    source_builds: &[crate::source_build::Built],
    epoch: u64,
) -> Result<(), RootfsError> {
    for b in source_builds {
        let (_, path) = b.recipe.program;
        // Nothing else may own these paths: a package file there would be silently replaced.
        for p in std::iter::once(path).chain(b.recipe.links.iter().map(|(l, _)| *l)) {
            if manifest.contains(p) {
                return Err(RootfsError::SourceBuildClash {
                    package: b.recipe.package.to_string(),
                    path: p.to_string(),
                });
            }
        }
        insert(manifest, path, Entry::file(b.program.clone(), 0o755), epoch)?;
        for (link, target) in b.recipe.links {
            insert(manifest, link, Entry::symlink(*target), epoch)?;
        }
    }
    Ok(())
}

/// `/var/run` -> `/run`, as base-files' maintainer script leaves a Debian system (the package
/// ships a folder). Software then reaches the tmpfs /run through the usual paths: the docker
/// CLI's default socket `/var/run/docker.sock`, pid files. A folder a package filled is left
/// alone. (`/var/lock` stays a folder: nothing in the VM creates `/run/lock`.)
fn run_links(manifest: &mut Manifest, epoch: u64) -> Result<(), RootfsError> {
    const PATH: &str = "/var/run";
    let is_empty_dir = manifest.get(PATH).is_some_and(|e| e.is_dir())
        && !manifest
            .iter()
            .any(|(p, _)| p.starts_with(&format!("{PATH}/")));
    if is_empty_dir {
        manifest
            .remove(PATH)
            .map_err(man(format!("replacing {PATH}")))?;
    }
    if manifest.get(PATH).is_none() {
        insert(manifest, PATH, Entry::symlink("/run"), epoch)?;
    }
    Ok(())
}

fn insert(
    manifest: &mut Manifest,
    path: &str,
    entry: Entry,
    epoch: u64,
) -> Result<(), RootfsError> {
    manifest
        .insert(path, entry.with_mtime(epoch))
        .map(|_| ())
        .map_err(man(format!("adding {path}")))
}

fn take_kernel(manifest: &mut Manifest, package: &str) -> Result<KernelImage, RootfsError> {
    let images: Vec<String> = manifest
        .iter()
        .filter(|(p, e)| p.starts_with("/boot/vmlinuz-") && !e.is_dir())
        .map(|(p, _)| p.to_string())
        .collect();
    if images.len() != 1 {
        return Err(RootfsError::Kernel {
            package: package.to_string(),
            found: images.len(),
        });
    }
    let path = &images[0];
    let release = path.trim_start_matches("/boot/vmlinuz-").to_string();
    let vmlinuz = file_bytes(manifest, path)
        .ok_or_else(|| RootfsError::Kernel {
            package: package.to_string(),
            found: 0,
        })?
        .to_vec();
    let config_path = format!("/boot/config-{release}");
    let config = file_bytes(manifest, &config_path)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .ok_or_else(|| RootfsError::KernelConfig {
            release: release.clone(),
        })?;
    // The kernel is booted from outside the image; its config stays for the in-VM pin probe.
    manifest
        .remove(path)
        .map_err(man("removing the kernel image"))?;
    Ok(KernelImage {
        release,
        vmlinuz,
        config,
    })
}

fn file_bytes<'a>(manifest: &'a Manifest, path: &str) -> Option<&'a Blob> {
    let resolved = manifest.resolve(path).ok()?;
    resolved.entry.data()
}

fn select_modules(
    manifest: &mut Manifest,
    release: &str,
    wanted: &[String],
) -> Result<modules::Selection, RootfsError> {
    let base = format!("/lib/modules/{release}/");
    let mut available = BTreeMap::new();
    for (path, entry) in manifest.iter() {
        if !path.starts_with(&base) || entry.is_dir() {
            continue;
        }
        if let Some(name) = modules::name_from_path(path) {
            available.insert(
                name,
                Available {
                    path: path.to_string(),
                },
            );
        }
    }
    let builtin: BTreeSet<String> = file_bytes(manifest, &format!("{base}modules.builtin"))
        .map(|b| {
            String::from_utf8_lossy(b)
                .lines()
                .filter_map(modules::name_from_path)
                .collect()
        })
        .unwrap_or_default();
    let selection = modules::select(release, &available, &builtin, wanted, |p| {
        file_bytes(manifest, p).map(|b| b.to_vec())
    })?;
    let all: Vec<String> = available.into_values().map(|a| a.path).collect();
    for path in all {
        manifest
            .remove(&path)
            .map_err(man("pruning kernel modules"))?;
    }
    Ok(selection)
}

fn remove_patterns(patterns: &[String]) -> Result<globset::GlobSet, RootfsError> {
    let mut set = globset::GlobSetBuilder::new();
    for p in patterns {
        let glob = globset::GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map_err(|e| RootfsError::Glob {
                pattern: p.clone(),
                message: e.to_string(),
            })?;
        set.add(glob);
    }
    set.build().map_err(|e| RootfsError::Glob {
        pattern: patterns.join(", "),
        message: e.to_string(),
    })
}

fn write_accounts(
    spec: &ImageSpec,
    manifest: &mut Manifest,
    epoch: u64,
) -> Result<(), RootfsError> {
    let mut users = spec.users.clone();
    users.sort_by_key(|u| u.uid);
    let mut groups = spec.groups.clone();
    groups.sort_by_key(|g| g.gid);
    let passwd: String = users
        .iter()
        .map(|u| {
            format!(
                "{}:x:{}:{}:{}:{}:{}\n",
                u.name, u.uid, u.gid, u.comment, u.home, u.shell
            )
        })
        .collect();
    // No account has a usable password: the VM has no login (SPEC V4).
    let shadow: String = users
        .iter()
        .map(|u| format!("{}:!*:0::::::\n", u.name))
        .collect();
    let group: String = groups
        .iter()
        .map(|g| format!("{}:x:{}:{}\n", g.name, g.gid, g.members.join(",")))
        .collect();
    let gshadow: String = groups
        .iter()
        .map(|g| format!("{}:!*::{}\n", g.name, g.members.join(",")))
        .collect();
    for (path, text, mode) in [
        ("/etc/passwd", passwd, 0o644),
        ("/etc/group", group, 0o644),
        ("/etc/shadow", shadow, 0o600),
        ("/etc/gshadow", gshadow, 0o600),
    ] {
        insert(manifest, path, Entry::file(text, mode), epoch)?;
    }
    Ok(())
}

fn render_files(
    spec: &ImageSpec,
    kernel: Option<&KernelImage>,
    modules: &[String],
    manifest: &mut Manifest,
    epoch: u64,
) -> Result<(), RootfsError> {
    for file in &spec.files {
        let template_path = spec.templates_dir.join(&file.template);
        let source =
            std::fs::read_to_string(&template_path).map_err(|source| RootfsError::TemplateIo {
                path: template_path.display().to_string(),
                source,
            })?;
        let mut context = tera::Context::new();
        context.insert(
            "image",
            &serde_json::json!({ "name": spec.name, "target": spec.target }),
        );
        context.insert(
            "kernel",
            &serde_json::json!({ "release": kernel.map(|k| &k.release), "modules": modules }),
        );
        for (k, v) in &file.vars {
            context.insert(k, v);
        }
        let rendered =
            tera::Tera::one_off(&source, &context, false).map_err(|e| RootfsError::Template {
                path: file.path.clone(),
                template: file.template.clone(),
                message: error_chain(&e),
            })?;
        insert(
            manifest,
            &file.path,
            Entry::file(rendered, file.mode),
            epoch,
        )?;
    }
    Ok(())
}

/// Writes the engine configuration that the admin settings produce, with isolation-owned keys
/// forced; without a settings file the defaults (isolation on, nothing allowed) apply.
/// Returns the settings parser's warnings (unknown keys and the like) for the build report.
fn bake_settings(
    spec: &ImageSpec,
    manifest: &mut Manifest,
    epoch: u64,
) -> Result<Vec<String>, RootfsError> {
    let mut warnings = Vec::new();
    let admin = match &spec.settings {
        Some(path) => {
            // Read once: the bytes checked are the bytes baked in.
            let text = std::fs::read_to_string(path).map_err(|source| RootfsError::TemplateIo {
                path: path.display().to_string(),
                source,
            })?;
            let (admin, parse_warnings) =
                eci_vm_config::AdminSettings::parse(&text, &path.display().to_string())?;
            warnings.extend(parse_warnings.iter().map(|w| w.to_string()));
            insert(
                manifest,
                "/etc/eci/admin-settings.json",
                Entry::file(text, 0o600),
                epoch,
            )?;
            admin
        }
        None => eci_vm_config::AdminSettings::parse("{}", "built-in defaults")?.0,
    };
    let effective = eci_vm_config::effective(&admin, &eci_vm_config::UserSettings::default(), None);
    for file in eci_vm_config::render_vm_files(&effective)? {
        let path = file.path.to_string_lossy().into_owned();
        insert(
            manifest,
            &path,
            Entry::file(file.contents, file.mode),
            epoch,
        )?;
    }
    Ok(warnings)
}

/// A dpkg status database, so scanners that read it (SBOM and CVE tools) see what is installed.
fn dpkg_status(records: &[PackageRecord]) -> String {
    let mut out = String::new();
    for r in records {
        for (key, value) in &r.control.fields {
            out.push_str(key);
            out.push(':');
            if !value.starts_with('\n') {
                out.push(' ');
            }
            // Continuation lines were stored without their indenting space; put it back.
            out.push_str(&value.replace('\n', "\n "));
            out.push('\n');
            if key == "Package" {
                out.push_str("Status: install ok installed\n");
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source_build::{BuildRecord, Built};

    const EPOCH: u64 = 1_700_000_000;
    const PROGRAM: &str = "/usr/sbin/xtables-legacy-multi";

    /// The iptables source build as `source_build::build_all` hands it over; the bytes stand in
    /// for the static program.
    fn iptables_build() -> Built {
        let recipe = crate::source_build::recipe("iptables").unwrap();
        Built {
            recipe,
            program: b"\x7fELF static xtables-legacy-multi".to_vec(),
            record: BuildRecord {
                package: "iptables".into(),
                version: "1.8.9-2".into(),
                dsc_sha256: "a".repeat(64),
                patches: vec![],
                tools: vec![],
                glibc: "2.36".into(),
                host_packages: vec![],
                libc_a_sha256: "b".repeat(64),
                program: recipe.program.1.into(),
                program_sha256: "c".repeat(64),
            },
        }
    }

    /// /usr/sbin as the locked packages leave it (coreutils and friends ship files there).
    fn unpacked_packages() -> Manifest {
        let mut m = Manifest::new();
        m.add_file("/usr/sbin/chroot", b"ELF chroot".to_vec(), 0o755, 0, 0)
            .unwrap();
        m
    }

    #[test]
    fn a_source_build_installs_its_program_and_links() {
        let mut m = unpacked_packages();
        install_source_builds(&mut m, &[iptables_build()], EPOCH).unwrap();
        let program = m.get(PROGRAM).unwrap();
        assert_eq!(program.mode, 0o755);
        assert_eq!(program.mtime, EPOCH);
        assert_eq!(
            program.data().unwrap().as_slice(),
            b"\x7fELF static xtables-legacy-multi"
        );
        // Every name dockerd and the alternatives call reaches the one program.
        let links = iptables_build().recipe.links;
        assert!(links.len() >= 6, "{links:?}");
        for (link, _) in links {
            let resolved = m.resolve(link).unwrap();
            assert_eq!(resolved.path, PROGRAM, "{link}");
        }
        assert!(m.contains("/usr/sbin/chroot"));
    }

    #[test]
    fn a_package_file_where_the_source_build_goes_is_refused_not_replaced() {
        // Debian's dynamic iptables, left in the lock, ships the program; another package could
        // ship any of the link names (a wrapper script, say).
        let debian = b"ELF dynamic xtables-legacy-multi".to_vec();
        let with_package_file_at = |path: &str| {
            let mut m = unpacked_packages();
            m.add_file(path, debian.clone(), 0o755, 0, 0).unwrap();
            m
        };
        // Without the check, inserting the build silently takes the package's file away: the
        // image would run a program other than the one its lock and SBOM name for that path.
        let mut unchecked = with_package_file_at(PROGRAM);
        insert(
            &mut unchecked,
            PROGRAM,
            Entry::file(iptables_build().program, 0o755),
            EPOCH,
        )
        .unwrap();
        assert_eq!(
            unchecked.get(PROGRAM).unwrap().data().unwrap().as_slice(),
            &iptables_build().program[..]
        );
        // With it, both the program's path and a link's path are refused, naming the path and
        // the fix, and the package's files are left as they were.
        for path in [PROGRAM, "/usr/sbin/iptables-legacy-save"] {
            let mut m = with_package_file_at(path);
            let before: Vec<(String, Entry)> =
                m.iter().map(|(p, e)| (p.to_string(), e.clone())).collect();
            let e = install_source_builds(&mut m, &[iptables_build()], EPOCH).unwrap_err();
            match &e {
                RootfsError::SourceBuildClash { package, path: at } => {
                    assert_eq!(package, "iptables");
                    assert_eq!(at, path);
                }
                other => panic!("expected SourceBuildClash, got {other:?}"),
            }
            let message = e.to_string();
            assert!(
                message.starts_with(&format!("{path} is built from source (iptables")),
                "{message}"
            );
            assert!(
                message
                    .contains("exclude that package in the definition and re-run `eci-build lock`"),
                "{message}"
            );
            let after: Vec<(String, Entry)> =
                m.iter().map(|(p, e)| (p.to_string(), e.clone())).collect();
            assert_eq!(after, before, "{path}");
        }
    }
}
