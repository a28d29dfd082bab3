pub mod apt;
pub mod artifact;
pub mod binaries;
pub mod boot;
pub mod boot_phases;
pub mod diff;
pub mod initramfs;
pub mod inspect;
pub mod kernel;
pub mod kernel_build;
pub mod manifest;
pub mod modules;
pub mod pipeline;
pub mod rootfs;
pub mod spec;
#[cfg(test)]
mod testing;
pub mod workspace;
