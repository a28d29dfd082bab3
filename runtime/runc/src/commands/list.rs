//! `list`: the containers under the state root.

use std::fs;

use crate::error::Result;
use crate::state::State;
use crate::Global;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFormat {
    /// runc's tab-separated table.
    Table,
    /// The `state` JSON of each container, in one array.
    Json,
    /// Ids only (`--quiet`).
    Ids,
}

pub fn list(g: &Global, format: ListFormat) -> Result<()> {
    let mut states = Vec::new();
    if let Ok(rd) = fs::read_dir(&g.root) {
        for e in rd.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if let Ok(st) = State::load(&g.root, &id) {
                states.push(st);
            }
        }
    }
    states.sort_by(|a, b| a.id.cmp(&b.id));
    match format {
        ListFormat::Ids => {
            for s in &states {
                println!("{}", s.id);
            }
        }
        ListFormat::Json => {
            let v: Vec<_> = states.iter().map(|s| s.to_runc(&g.root)).collect();
            println!("{}", serde_json::Value::from(v));
        }
        ListFormat::Table => {
            println!("ID\tPID\tSTATUS\tBUNDLE\tCREATED\tOWNER");
            for s in &states {
                let v = s.to_runc(&g.root);
                println!(
                    "{}\t{}\t{}\t{}\t{}\troot",
                    s.id,
                    v["pid"],
                    v["status"].as_str().unwrap_or(""),
                    s.bundle,
                    s.created
                );
            }
        }
    }
    Ok(())
}
