//! `events`: runc's `stats` events for a running container, once (`--stats`) or every interval.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::state::State;
use crate::Global;

pub fn events(g: &Global, id: &str, stats: bool, interval: &str) -> Result<()> {
    let secs: f64 = interval
        .trim_end_matches('s')
        .parse()
        .map_err(|_| Error::InvalidInterval(interval.to_string()))?;
    loop {
        let st = State::load(&g.root, id)?;
        if !st.alive() {
            return Err(Error::NotRunning { id: id.to_string() });
        }
        let ev = serde_json::json!({"type": "stats", "id": id, "data": st.cgroup.stats()});
        println!("{ev}");
        if stats {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs_f64(secs.max(0.1)));
    }
}
