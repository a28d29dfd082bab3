pub mod fetch;
pub mod modules;
pub mod spec;
