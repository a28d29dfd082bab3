pub mod deb;
pub mod fetch;
pub mod initramfs;
pub mod manifest;
pub mod modules;
pub mod spec;
pub mod boot;
