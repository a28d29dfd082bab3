pub mod fetch;
pub mod manifest;
pub mod modules;
pub mod spec;
pub mod boot;
