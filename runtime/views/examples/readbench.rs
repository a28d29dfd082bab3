//! Read-cost measurement for bench/views.sh: the time of one open + read-to-end + close of a
//! view file against the same for the VM's own file, measured in one run.
//!
//! `readbench single VIEW NATIVE N`: N reads of each in alternating batches; prints the median
//! batch cost of each in µs and the median ratio of neighbouring batches.
//! `readbench load SECONDS VIEW:KB...`: one thread per VIEW reads it in a loop for SECONDS and
//! checks that MemTotal is KB every time; prints reads, wrong reads and the latency quantiles.

use std::io::Read;
use std::time::{Duration, Instant};

fn read_once(path: &str, buf: &mut Vec<u8>) -> usize {
    buf.clear();
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    f.read_to_end(buf).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// One batch of `n` reads, per read, in µs.
fn batch(path: &str, n: usize, buf: &mut Vec<u8>) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        read_once(path, buf);
    }
    t.elapsed().as_secs_f64() * 1e6 / n as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `a` and `b` timed in alternating batches (`n` reads each in all): the machine's load, which
/// moves within a second on a shared machine, hits both alike. The medians of the batches and
/// the median of the ratios of neighbouring batches.
fn paired(a: &str, b: &str, n: usize) -> (f64, f64, f64) {
    const BATCHES: usize = 41;
    let per = (n / BATCHES).max(1);
    let mut buf = Vec::with_capacity(1 << 16);
    batch(a, per, &mut buf);
    batch(b, per, &mut buf);
    let (mut ta, mut tb, mut r) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..BATCHES {
        // Which goes first alternates too.
        let (x, y) = if i % 2 == 0 {
            let x = batch(a, per, &mut buf);
            (x, batch(b, per, &mut buf))
        } else {
            let y = batch(b, per, &mut buf);
            (batch(a, per, &mut buf), y)
        };
        ta.push(x);
        tb.push(y);
        r.push(x / y);
    }
    (median(ta), median(tb), median(r))
}

fn mem_total(text: &[u8]) -> Option<u64> {
    std::str::from_utf8(text).ok()?.lines().find_map(|l| {
        l.strip_prefix("MemTotal:")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("single") if args.len() == 4 => {
            let n: usize = args[3].parse().expect("N");
            let (v, h, r) = paired(&args[1], &args[2], n);
            println!(
                "{:<28} view {v:7.1} µs  native {h:7.1} µs  ratio {r:.2}",
                args[2]
            );
        }
        Some("load") if args.len() >= 3 => {
            let secs: f64 = args[1].parse().expect("SECONDS");
            let until = Instant::now() + Duration::from_secs_f64(secs);
            let results: Vec<(u64, u64, Vec<f64>)> = std::thread::scope(|s| {
                let hs: Vec<_> = args[2..]
                    .iter()
                    .map(|a| {
                        let (path, kb) = a.rsplit_once(':').expect("VIEW:KB");
                        let kb: u64 = kb.parse().expect("KB");
                        s.spawn(move || {
                            let (mut reads, mut wrong, mut lat) = (0u64, 0u64, Vec::new());
                            let mut buf = Vec::with_capacity(1 << 16);
                            while Instant::now() < until {
                                let t = Instant::now();
                                read_once(path, &mut buf);
                                lat.push(t.elapsed().as_secs_f64() * 1e6);
                                reads += 1;
                                if mem_total(&buf) != Some(kb) {
                                    wrong += 1;
                                }
                            }
                            (reads, wrong, lat)
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().expect("reader")).collect()
            });
            let reads: u64 = results.iter().map(|r| r.0).sum();
            let wrong: u64 = results.iter().map(|r| r.1).sum();
            let mut lat: Vec<f64> = results.into_iter().flat_map(|r| r.2).collect();
            lat.sort_by(f64::total_cmp);
            let q = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
            println!(
                "{} readers, {secs} s: {reads} reads, {wrong} wrong; latency p50 {:.1} µs, p99 {:.1} µs",
                args.len() - 2,
                q(0.5),
                q(0.99)
            );
            if wrong > 0 {
                std::process::exit(1);
            }
        }
        _ => {
            eprintln!("usage: readbench single VIEW NATIVE N | readbench load SECONDS VIEW:KB...");
            std::process::exit(2);
        }
    }
}
