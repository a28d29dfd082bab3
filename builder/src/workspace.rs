//! The checkout's layout as eci-build sees it: `images/` holds the definitions and their locks,
//! and beside it `kernel-config/` (pins, source lock, committed configs) and `out/` (builds).
//! Every path built from these folder names comes from here.

use std::path::{Path, PathBuf};

/// Folder names beside one another in a checkout.
pub const IMAGES_DIR: &str = "images";
pub const KERNEL_CONFIG_DIR: &str = "kernel-config";
pub const OUT_DIR: &str = "out";

/// A checkout, found from its images folder (`--images`, or `images/` here, or the one of the
/// checkout eci-build was compiled from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    images: PathBuf,
}

impl Workspace {
    /// The workspace whose images folder is `images`; the other folders are its siblings.
    pub fn new(images: impl Into<PathBuf>) -> Workspace {
        Workspace {
            images: images.into(),
        }
    }

    /// `flag` when given, else `images/` in the current folder, else the checkout eci-build was
    /// built from (so `cargo run` works from anywhere inside it).
    pub fn find(flag: Option<PathBuf>) -> Workspace {
        if let Some(dir) = flag {
            return Workspace::new(dir);
        }
        let local = PathBuf::from(IMAGES_DIR);
        if local.is_dir() {
            return Workspace::new(local);
        }
        Workspace::new(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(IMAGES_DIR),
        )
    }

    pub fn images_dir(&self) -> &Path {
        &self.images
    }

    /// The folder holding `images/` and its siblings (`.` for a bare relative `images`).
    pub fn root(&self) -> &Path {
        self.images
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    }

    /// `images/T.yaml`.
    pub fn definition(&self, target: &str) -> PathBuf {
        self.images.join(format!("{target}.yaml"))
    }

    /// `images/T.lock`.
    pub fn lock(&self, target: &str) -> PathBuf {
        self.images.join(format!("{target}.lock"))
    }

    /// `kernel-config/` beside the images folder.
    pub fn kernel_config_dir(&self) -> PathBuf {
        self.root().join(KERNEL_CONFIG_DIR)
    }

    /// `out/T/`: where `eci-build image --target T` writes by default.
    pub fn out_dir(&self, target: &str) -> PathBuf {
        self.root().join(OUT_DIR).join(target)
    }

    /// `out/kernel/T/`: where `eci-build kernel build --target T` installs by default.
    pub fn kernel_out_dir(&self, target: &str) -> PathBuf {
        self.out_dir("kernel").join(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siblings_of_the_images_folder() {
        let ws = Workspace::new("/src/eci/images");
        assert_eq!(
            ws.definition("wsl2"),
            Path::new("/src/eci/images/wsl2.yaml")
        );
        assert_eq!(ws.lock("wsl2"), Path::new("/src/eci/images/wsl2.lock"));
        assert_eq!(ws.kernel_config_dir(), Path::new("/src/eci/kernel-config"));
        assert_eq!(ws.out_dir("hyperv"), Path::new("/src/eci/out/hyperv"));
        assert_eq!(
            ws.kernel_out_dir("wsl2"),
            Path::new("/src/eci/out/kernel/wsl2")
        );
        // A bare relative images folder: its siblings are in the current folder.
        let here = Workspace::new("images");
        assert_eq!(here.out_dir("qemu"), Path::new("./out/qemu"));
        assert_eq!(here.kernel_config_dir(), Path::new("./kernel-config"));
    }
}
