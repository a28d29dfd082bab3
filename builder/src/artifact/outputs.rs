//! The output table: for each kind a definition can name under `outputs:`, what it needs
//! before the build and the writer that makes its files. A new platform is one more
//! [`OutputKind`] and one more row here; nothing else matches on target names.

use super::{hyperv, wsl2, ArtifactError, ArtifactRecord, BuildInfo, INITRAMFS_FILE};
use crate::initramfs;
use crate::rootfs::Rootfs;
use crate::spec::OutputKind;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

/// The container-rootfs output's file name.
pub const CONTAINER_ROOTFS_FILE: &str = "rootfs.tar";

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
        OutputKind::ContainerRootfs => Output {
            needs_uefi_loader: false,
            write: write_container_rootfs,
        },
    }
}

/// `rootfs.tar`: the root filesystem as one uncompressed tar that `docker import` takes. Not
/// the WSL writer: that one enforces WSL's distribution rules (wsl.conf and its boot files).
/// Uncompressed because the tarball is imported once, next to where it was built, and gzip
/// would be most of the build's time.
fn write_container_rootfs(
    dir: &Path,
    rootfs: &Rootfs,
    info: &BuildInfo,
) -> Result<Vec<ArtifactRecord>, ArtifactError> {
    let path = dir.join(CONTAINER_ROOTFS_FILE);
    let io = |source| ArtifactError::Io {
        path: path.clone(),
        source,
    };
    let file = std::fs::File::create(&path).map_err(io)?;
    let mut out = HashingWriter {
        inner: std::io::BufWriter::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
    };
    let stats =
        super::tar::write_tar(&rootfs.manifest, info.source_date_epoch, &mut out).map_err(|e| {
            match e {
                super::tar::TarError::Io(source) => io(source),
                other => ArtifactError::Tar(other.to_string()),
            }
        })?;
    out.flush().map_err(io)?;
    let HashingWriter { inner, hasher } = out;
    let file = inner.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    Ok(vec![ArtifactRecord {
        uncompressed_size: Some(stats.bytes),
        ..ArtifactRecord::plain(
            CONTAINER_ROOTFS_FILE,
            "container-rootfs",
            hex::encode(hasher.finalize()),
            size,
        )
    }])
}

struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
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
        assert_eq!(outputs("dind"), [ContainerRootfs]);
        assert!(output(HypervDisks).needs_uefi_loader);
        assert!(!output(Initramfs).needs_uefi_loader && !output(WslRootfs).needs_uefi_loader);
        assert!(!output(ContainerRootfs).needs_uefi_loader);
        assert_eq!(
            crate::spec::load(&checkout().definition("dind"))
                .unwrap()
                .kernel
                .source,
            crate::spec::KernelSource::None
        );
    }
}
