//! The output table: for each kind a definition can name under `outputs:`, what it needs
//! before the build and the writer that makes its files. A new platform is one more
//! [`OutputKind`] and one more row here; nothing else matches on target names.

use super::{hyperv, wsl2, ArtifactError, ArtifactRecord, BuildInfo, INITRAMFS_FILE};
use crate::initramfs;
use crate::rootfs::Rootfs;
use crate::spec::OutputKind;
use std::path::Path;

/// Writes one output's files into the staging folder and returns their manifest records.
pub type Writer = fn(&Path, &Rootfs, &BuildInfo) -> Result<Vec<ArtifactRecord>, ArtifactError>;

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// Reads the UEFI loader out of its locked package (it goes onto an ESP, not into the root
    /// filesystem): see [`super::PlatformInputs::from_spec`].
    pub needs_uefi_loader: bool,
    pub write: Writer,
}

/// The row of `kind`; the `match` is the table, and the compiler holds it complete.
pub fn output(kind: OutputKind) -> Output {
    match kind {
        OutputKind::Initramfs => Output {
            needs_uefi_loader: false,
            write: write_initramfs,
        },
        OutputKind::HypervDisks => Output {
            needs_uefi_loader: true,
            write: hyperv::write,
        },
        OutputKind::WslRootfs => Output {
            needs_uefi_loader: false,
            write: wsl2::write,
        },
    }
}

fn write_initramfs(
    dir: &Path,
    rootfs: &Rootfs,
    info: &BuildInfo,
) -> Result<Vec<ArtifactRecord>, ArtifactError> {
    let initrd_path = dir.join(INITRAMFS_FILE);
    let written = initramfs::write_initramfs(
        &rootfs.manifest,
        info.source_date_epoch,
        info.compression,
        &initrd_path,
    )
    .map_err(|e| ArtifactError::Initramfs(e.to_string()))?;
    Ok(vec![ArtifactRecord {
        uncompressed_size: Some(written.uncompressed_size),
        compression: Some(info.compression.name().into()),
        dropped_xattrs: written
            .dropped_xattrs
            .iter()
            .map(|d| format!("{}: {}", d.path, d.names.join(", ")))
            .collect(),
        ..ArtifactRecord::plain(
            INITRAMFS_FILE,
            "initramfs",
            written.sha256.clone(),
            written.compressed_size,
        )
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::checkout;

    /// Each committed target names the outputs it wrote when the writers were chosen by target
    /// name: the files of a build stay the same.
    #[test]
    fn committed_definitions_name_their_platform_outputs() {
        let outputs = |target: &str| {
            crate::spec::load(&checkout().definition(target))
                .unwrap()
                .outputs
        };
        use OutputKind::*;
        assert_eq!(outputs("hyperv"), [Initramfs, HypervDisks]);
        assert_eq!(outputs("qemu"), [Initramfs]);
        assert_eq!(outputs("wsl2"), [WslRootfs]);
        assert!(output(HypervDisks).needs_uefi_loader);
        assert!(!output(Initramfs).needs_uefi_loader && !output(WslRootfs).needs_uefi_loader);
    }
}
