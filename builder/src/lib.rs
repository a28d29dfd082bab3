pub mod spec;
pub mod fetch;
