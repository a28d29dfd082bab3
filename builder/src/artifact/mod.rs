//! Writes a build's outputs: the kernel, `manifest.json`, an SPDX SBOM, and each output the
//! definition names under `outputs:` (one writer per kind, the table in [`outputs`]):
//!
//! | output | files | module |
//! |---|---|---|
//! | `initramfs` | `initramfs.img`: the kernel and initramfs boot directly (QEMU `-kernel`/`-initrd`) | [`crate::initramfs`] |
//! | `hyperv-disks` | `boot.vhdx` (GPT + FAT32 ESP, systemd-boot), `data.vhdx`, `create-vm.ps1` | [`hyperv`] |
//! | `wsl-rootfs` | `rootfs.tar.gz`, `NAME.wsl` (the same bytes), `wslconfig` (WSL has no initramfs) | [`wsl2`] |
//! | `container-rootfs` | `rootfs.tar` for `docker import` (no kernel is written) | [`outputs`] |
//!
//! Everything is written into a staging directory beside the output directory and swapped in
//! with renames at the end, so a reader never sees the kernel of one build next to the
//! initramfs of another, and a failed build leaves the previous outputs untouched.
//!
//! Every output is a function of the lock: GUIDs and serial numbers are derived from the lock's
//! hash ([`guid`]), timestamps are `SOURCE_DATE_EPOCH`, so a rebuild is byte-identical (SPEC V1).

pub mod fat;
pub mod gpt;
pub mod guid;
pub mod gzip;
pub mod hyperv;
pub mod outputs;
pub mod tar;
pub mod vhdx;
pub mod wsl2;

use crate::initramfs::Compression;
use crate::manifest::Blob;
use crate::rootfs::{Package, Rootfs};
use crate::spec::{ImageSpec, OutputKind};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const KERNEL_FILE: &str = "vmlinuz";
pub const INITRAMFS_FILE: &str = "initramfs.img";
pub const MANIFEST_FILE: &str = "manifest.json";
pub const SBOM_FILE: &str = "sbom.spdx.json";

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the initramfs: {0}")]
    Initramfs(String),
    #[error("template {}: {message}", path.display())]
    Template { path: PathBuf, message: String },
    #[error("the {target} target's UEFI loader: {message}")]
    Loader { target: String, message: String },
    #[error("building {what}: {message}")]
    Disk { what: &'static str, message: String },
    #[error("the WSL root filesystem breaks Microsoft's distribution rules: {rule}; {fix}")]
    WslRule { rule: String, fix: String },
    #[error("writing the root filesystem tarball: {0}")]
    Tar(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Identity of the build, recorded in the manifest and the SBOM.
#[derive(Debug, Clone)]
pub struct BuildInfo {
    pub name: String,
    pub target: String,
    /// The definition's `outputs:`, written in this order after the kernel.
    pub outputs: Vec<OutputKind>,
    pub source_date_epoch: u64,
    pub lock_sha256: String,
    pub kernel_package: String,
    pub kernel_version: String,
    pub compression: Compression,
    pub platform: PlatformInputs,
    /// The toolchain and crates the VM binaries were built from (none when the image has no
    /// workspace binaries).
    pub cargo_inputs: Option<crate::binaries::CargoInputs>,
    /// Programs built from their Debian source package (`source_builds:`).
    pub source_builds: Vec<crate::source_build::BuildRecord>,
}

/// What the platform outputs need beyond the root filesystem.
#[derive(Debug, Clone, Default)]
pub struct PlatformInputs {
    /// The definition's kernel command line (`kernel.cmdline`).
    pub cmdline: Vec<String>,
    /// Where the definition's templates live (`templates:`); platform files render from there.
    pub templates_dir: PathBuf,
    /// The UEFI boot loader taken from its locked package (hyperv only).
    pub uefi_loader: Option<Blob>,
}

impl PlatformInputs {
    /// Collects the inputs for `spec`'s target; `packages` are the locked packages' bytes (the
    /// loader is read from its package, not from the root filesystem, which does not ship it).
    pub fn from_spec(spec: &ImageSpec, packages: &[Package]) -> Result<Self, ArtifactError> {
        let uefi_loader = if spec
            .outputs
            .iter()
            .any(|k| outputs::output(*k).needs_uefi_loader)
        {
            Some(hyperv::loader_from_packages(&spec.file, packages)?)
        } else {
            None
        };
        Ok(PlatformInputs {
            cmdline: spec.kernel.cmdline.clone(),
            templates_dir: spec.templates_dir.clone(),
            uefi_loader,
        })
    }
}

/// One locked package as the SBOM lists it.
#[derive(Debug, Clone)]
pub struct SbomPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ArtifactRecord {
    pub path: String,
    pub kind: String,
    pub sha256: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uncompressed_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// Size of the disk a disk image presents to its VM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_size: Option<u64>,
    /// Extended attributes (e.g. file capabilities) the format could not carry, as
    /// `PATH: NAME, NAME`; the initramfs (cpio newc) has no place for them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dropped_xattrs: Vec<String>,
}

impl ArtifactRecord {
    fn plain(path: &str, kind: &str, sha256: String, size: u64) -> Self {
        ArtifactRecord {
            path: path.into(),
            kind: kind.into(),
            sha256,
            size,
            uncompressed_size: None,
            compression: None,
            virtual_size: None,
            dropped_xattrs: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildManifest {
    pub name: String,
    pub target: String,
    pub eci_build: String,
    pub source_date_epoch: u64,
    pub lock_sha256: String,
    pub kernel: KernelRecord,
    /// What the VM binaries were built with: a verifier needs the commit, the lock, this
    /// toolchain and this Cargo.lock (SPEC V1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm_binaries: Option<crate::binaries::CargoInputs>,
    /// Programs built from Debian source packages, with the toolchain that built them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub source_builds: Vec<crate::source_build::BuildRecord>,
    pub packages: usize,
    pub files: usize,
    pub artifacts: Vec<ArtifactRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KernelRecord {
    pub package: String,
    pub version: String,
    pub release: String,
    pub modules: Vec<String>,
    pub builtin_modules: Vec<String>,
}

/// Writes all outputs of one build into `out_dir` (replacing what was there).
pub fn write_outputs(
    out_dir: &Path,
    rootfs: &Rootfs,
    info: &BuildInfo,
    packages: &[SbomPackage],
) -> Result<BuildManifest, ArtifactError> {
    let parent = out_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io(parent))?;
    let leaf = out_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let staging = parent.join(format!(".{leaf}.staging-{}", std::process::id()));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    fs::create_dir_all(&staging).map_err(io(&staging))?;
    let result = write_into(&staging, rootfs, info, packages);
    let manifest = match result {
        Ok(m) => m,
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    sync_path(&staging);
    let old = parent.join(format!(".{leaf}.old-{}", std::process::id()));
    if out_dir.exists() {
        fs::rename(out_dir, &old).map_err(io(out_dir))?;
    }
    fs::rename(&staging, out_dir).map_err(io(out_dir))?;
    sync_path(parent);
    if old.exists() {
        fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    Ok(manifest)
}

fn write_into(
    dir: &Path,
    rootfs: &Rootfs,
    info: &BuildInfo,
    packages: &[SbomPackage],
) -> Result<BuildManifest, ArtifactError> {
    let mut artifacts = Vec::new();

    if let Some(kernel) = &rootfs.kernel {
        let kernel_path = dir.join(KERNEL_FILE);
        write_synced(&kernel_path, &kernel.vmlinuz)?;
        artifacts.push(ArtifactRecord::plain(
            KERNEL_FILE,
            "kernel",
            hex::encode(Sha256::digest(&kernel.vmlinuz)),
            kernel.vmlinuz.len() as u64,
        ));
    }

    // The definition's outputs, in the kinds' order (the table: outputs.rs).
    for kind in &info.outputs {
        artifacts.extend((outputs::output(*kind).write)(dir, rootfs, info)?);
    }

    let sbom = serde_json::to_vec_pretty(&spdx(info, packages)).expect("SBOM serialises");
    let sbom_path = dir.join(SBOM_FILE);
    write_synced(&sbom_path, &sbom)?;
    artifacts.push(ArtifactRecord::plain(
        SBOM_FILE,
        "sbom",
        hex::encode(Sha256::digest(&sbom)),
        sbom.len() as u64,
    ));

    let manifest = BuildManifest {
        name: info.name.clone(),
        target: info.target.clone(),
        eci_build: env!("CARGO_PKG_VERSION").into(),
        source_date_epoch: info.source_date_epoch,
        lock_sha256: info.lock_sha256.clone(),
        kernel: KernelRecord {
            package: info.kernel_package.clone(),
            version: info.kernel_version.clone(),
            // Empty for a container root filesystem, which has no kernel.
            release: rootfs
                .kernel
                .as_ref()
                .map(|k| k.release.clone())
                .unwrap_or_default(),
            modules: rootfs.modules.clone(),
            builtin_modules: rootfs.builtin_modules.clone(),
        },
        vm_binaries: info.cargo_inputs.clone(),
        source_builds: info.source_builds.clone(),
        packages: packages.len(),
        files: rootfs.manifest.len(),
        artifacts,
    };
    let mut json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    json.push(b'\n');
    write_synced(&dir.join(MANIFEST_FILE), &json)?;
    Ok(manifest)
}

/// Renders `template` from the definition's templates folder with `context`.
fn render_template(
    templates_dir: &Path,
    template: &str,
    context: &tera::Context,
) -> Result<String, ArtifactError> {
    let path = templates_dir.join(template);
    let source = fs::read_to_string(&path).map_err(io(&path))?;
    tera::Tera::one_off(&source, context, false).map_err(|e| {
        let mut message = e.to_string();
        let mut cur = std::error::Error::source(&e);
        while let Some(s) = cur {
            message.push_str(": ");
            message.push_str(&s.to_string());
            cur = s.source();
        }
        ArtifactError::Template { path, message }
    })
}

/// Year, month, day, hour, minute, second (UTC) of an epoch second.
pub(crate) fn civil(epoch: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    // Civil-from-days (proleptic Gregorian), valid for all dates after 1970.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m as u32,
        d as u32,
        (secs / 3600) as u32,
        ((secs / 60) % 60) as u32,
        (secs % 60) as u32,
    )
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ArtifactError> {
    let mut f = fs::File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

fn sync_path(path: &Path) {
    if let Ok(f) = fs::File::open(path) {
        let _ = f.sync_all();
    }
}

/// SPDX identifiers allow letters, digits, `.` and `-` only.
fn spdx_id(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// An SPDX 2.3 document: the image, and each Debian package it contains with its pinned hash.
pub fn spdx(info: &BuildInfo, packages: &[SbomPackage]) -> serde_json::Value {
    let image_id = format!("SPDXRef-Image-{}", spdx_id(&info.target));
    let mut spdx_packages = vec![serde_json::json!({
        "SPDXID": image_id,
        "name": format!("{}-{}", info.name, info.target),
        "versionInfo": format!("lock-sha256:{}", info.lock_sha256),
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "OPERATING-SYSTEM",
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
    })];
    let mut relationships = vec![serde_json::json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": image_id,
    })];
    for p in packages {
        let id = format!("SPDXRef-deb-{}", spdx_id(&p.name));
        spdx_packages.push(serde_json::json!({
            "SPDXID": id,
            "name": p.name,
            "versionInfo": p.version,
            "supplier": "Organization: Debian",
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "checksums": [{"algorithm": "SHA256", "checksumValue": p.sha256}],
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": format!("pkg:deb/debian/{}@{}?arch={}", purl_escape(&p.name), purl_escape(&p.version), p.architecture),
            }],
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
        }));
        relationships.push(serde_json::json!({
            "spdxElementId": image_id,
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    // The VM binaries come from this workspace: the SBOM names the compiler and the crates'
    // lock they were built from.
    if let Some(c) = &info.cargo_inputs {
        let id = "SPDXRef-eci-vm-binaries";
        spdx_packages.push(serde_json::json!({
            "SPDXID": id,
            "name": "eci-vm-binaries",
            "versionInfo": format!("cargo-lock-sha256:{}", c.cargo_lock_sha256),
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "checksums": [{"algorithm": "SHA256", "checksumValue": c.cargo_lock_sha256}],
            "comment": format!("eci-runc, eci-supervisor, eci-views, eci-guard, eci-init, eci-probe built from the eci workspace (Cargo.lock sha256 {}) with {}{}", c.cargo_lock_sha256, c.rustc, if c.pinned_matches { String::new() } else { format!("; NOT the pinned toolchain {}", c.pinned) }),
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
        }));
        relationships.push(serde_json::json!({
            "spdxElementId": image_id,
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
        let tool = "SPDXRef-rust-toolchain";
        spdx_packages.push(serde_json::json!({
            "SPDXID": tool,
            "name": "rustc",
            "versionInfo": c.release,
            "supplier": "Organization: The Rust Project",
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "comment": format!("{} (commit {}, LLVM {})", c.rustc, c.commit_hash, c.llvm),
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
        }));
        relationships.push(serde_json::json!({
            "spdxElementId": tool,
            "relationshipType": "BUILD_TOOL_OF",
            "relatedSpdxElement": id,
        }));
    }
    // Programs built from a Debian source package: the package (pinned by its .dsc) and the
    // host toolchain and C library that made the bytes.
    for b in &info.source_builds {
        let id = format!("SPDXRef-source-build-{}", spdx_id(&b.package));
        spdx_packages.push(serde_json::json!({
            "SPDXID": id,
            "name": b.package,
            "versionInfo": b.version,
            "supplier": "Organization: Debian",
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "checksums": [{"algorithm": "SHA256", "checksumValue": b.dsc_sha256}],
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": format!("pkg:deb/debian/{}@{}?arch=source", purl_escape(&b.package), purl_escape(&b.version)),
            }],
            "comment": format!("{} (sha256 {}) built by eci-build from this source package (.dsc sha256 {}; Debian patches applied: {}) as a static PIE, with {}; glibc {} linked in (libc.a sha256 {}; host packages: {})", b.program, b.program_sha256, b.dsc_sha256, if b.patches.is_empty() { "none".to_string() } else { b.patches.join(", ") }, b.tools.join("; "), b.glibc, b.libc_a_sha256, if b.host_packages.is_empty() { "unknown (no dpkg)".to_string() } else { b.host_packages.join(", ") }),
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
        }));
        relationships.push(serde_json::json!({
            "spdxElementId": image_id,
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    serde_json::json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}-{}", info.name, info.target),
        "documentNamespace": format!("urn:eci:sbom:{}:{}", info.target, info.lock_sha256),
        "creationInfo": {
            "created": rfc3339(info.source_date_epoch),
            "creators": [format!("Tool: eci-build-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": spdx_packages,
        "relationships": relationships,
    })
}

fn purl_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// UTC timestamp for an epoch second, without pulling in a date crate for one line.
pub fn rfc3339(epoch: u64) -> String {
    eci_facts::rfc3339(
        std::time::Duration::from_secs(epoch),
        eci_facts::Precision::Seconds,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_747_699_200), "2025-05-20T00:00:00Z");
        assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
    }

    #[test]
    fn sbom_lists_every_package_with_valid_ids_and_purls() {
        let info = BuildInfo {
            name: "eci".into(),
            target: "hyperv".into(),
            outputs: vec![OutputKind::Initramfs, OutputKind::HypervDisks],
            source_date_epoch: 1_747_699_200,
            lock_sha256: "ab".repeat(32),
            kernel_package: "k".into(),
            kernel_version: "1".into(),
            compression: Compression::Zstd,
            platform: PlatformInputs::default(),
            cargo_inputs: None,
            source_builds: Vec::new(),
        };
        let pkgs = vec![SbomPackage {
            name: "libstdc++6".into(),
            version: "12.2.0-14+deb12u1".into(),
            architecture: "amd64".into(),
            sha256: "cd".repeat(32),
        }];
        let doc = spdx(&info, &pkgs);
        assert_eq!(doc["spdxVersion"], "SPDX-2.3");
        let p = &doc["packages"][1];
        assert_eq!(p["SPDXID"], "SPDXRef-deb-libstdc--6");
        assert_eq!(p["checksums"][0]["checksumValue"], "cd".repeat(32));
        assert_eq!(
            p["externalRefs"][0]["referenceLocator"],
            "pkg:deb/debian/libstdc%2B%2B6@12.2.0-14%2Bdeb12u1?arch=amd64"
        );
        assert_eq!(doc["relationships"].as_array().unwrap().len(), 2);
        assert_eq!(doc["creationInfo"]["created"], "2025-05-20T00:00:00Z");

        // With workspace binaries the SBOM names their compiler and Cargo.lock, and says when
        // the toolchain was not the pinned one.
        let mut info = info;
        info.cargo_inputs = Some(crate::binaries::CargoInputs {
            rustc: "rustc 1.96.0 (x 2026-05-01)".into(),
            release: "1.96.0".into(),
            commit_hash: "x".into(),
            llvm: "22".into(),
            pinned: "1.95.0".into(),
            pinned_matches: false,
            cargo_lock_sha256: "ef".repeat(32),
        });
        let doc = spdx(&info, &pkgs);
        let by_id = |id: &str| {
            doc["packages"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["SPDXID"] == id)
                .cloned()
                .unwrap_or_else(|| panic!("{id} missing"))
        };
        let bins = by_id("SPDXRef-eci-vm-binaries");
        assert_eq!(bins["checksums"][0]["checksumValue"], "ef".repeat(32));
        assert!(bins["comment"]
            .as_str()
            .unwrap()
            .contains("NOT the pinned toolchain 1.95.0"));
        assert_eq!(by_id("SPDXRef-rust-toolchain")["versionInfo"], "1.96.0");
        assert_eq!(doc["relationships"].as_array().unwrap().len(), 4);

        // A program built from source names its source package, the .dsc that pins it, and
        // the host toolchain and C library in the bytes.
        info.source_builds = vec![crate::source_build::BuildRecord {
            package: "iptables".into(),
            version: "1.8.9-2".into(),
            dsc_sha256: "71".repeat(32),
            patches: vec!["0001-fix.patch".into()],
            tools: vec!["gcc (Debian 12.2.0-14) 12.2.0".into()],
            glibc: "2.36".into(),
            host_packages: vec!["libc6-dev 2.36-9+deb12u13".into()],
            libc_a_sha256: "bb".repeat(32),
            program: "/usr/sbin/xtables-legacy-multi".into(),
            program_sha256: "aa".repeat(32),
        }];
        let doc = spdx(&info, &pkgs);
        let p = doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["SPDXID"] == "SPDXRef-source-build-iptables")
            .cloned()
            .expect("source build in the SBOM");
        assert_eq!(p["checksums"][0]["checksumValue"], "71".repeat(32));
        assert_eq!(
            p["externalRefs"][0]["referenceLocator"],
            "pkg:deb/debian/iptables@1.8.9-2?arch=source"
        );
        let comment = p["comment"].as_str().unwrap();
        for want in [
            "0001-fix.patch",
            "gcc (Debian 12.2.0-14)",
            "glibc 2.36",
            "static PIE",
            "libc6-dev 2.36-9+deb12u13",
        ] {
            assert!(comment.contains(want), "{want}: {comment}");
        }
        assert_eq!(doc["relationships"].as_array().unwrap().len(), 5);
    }
}
