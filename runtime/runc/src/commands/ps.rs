//! `ps`: the container's processes, as pids (`json`) or as `ps` prints them.

use crate::error::{Error, Result};
use crate::state::State;
use crate::Global;

pub fn ps(g: &Global, id: &str, format: &str, ps_args: &[String]) -> Result<()> {
    let st = State::load(&g.root, id)?;
    let pids = st.cgroup.pids();
    if format == "json" {
        println!("{}", serde_json::to_string(&pids).expect("ints"));
        return Ok(());
    }
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .map_err(|e| Error::Setup(format!("run ps: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    let col = header
        .split_whitespace()
        .position(|c| c == "PID")
        .ok_or("ps output has no PID column")?;
    println!("{header}");
    for l in lines {
        if let Some(p) = l
            .split_whitespace()
            .nth(col)
            .and_then(|p| p.parse::<i32>().ok())
        {
            if pids.contains(&p) {
                println!("{l}");
            }
        }
    }
    Ok(())
}
