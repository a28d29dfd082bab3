//! `state`: the JSON runc prints and containerd's go-runc parses.

use crate::error::Result;
use crate::state::State;
use crate::Global;

pub fn state(g: &Global, id: &str) -> Result<serde_json::Value> {
    Ok(State::load(&g.root, id)?.to_runc(&g.root))
}
