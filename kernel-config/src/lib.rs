pub const FRAGMENTS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fragments");
