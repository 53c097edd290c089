//! Registers 100,000 metric series in one `Stats` (60,000 counters, which
//! take a slot each, and 40,000 gauges, which take none) and prints how
//! long registration took, per 10,000 and in all, then how long looking up
//! an existing name takes.
//!
//! ```text
//! cargo run --release --no-default-features --example stats_registration
//! ```

use std::hint::black_box;
use std::time::Instant;

use latchfree::stats::Stats;

const SERIES: usize = 100_000;
const COUNTERS: usize = 60_000;

fn name(i: usize) -> String {
    format!("requests_total:route_{i}")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let stats = Stats::new();
    let names: Vec<String> = (0..SERIES).map(name).collect();
    let start = Instant::now();
    let mut lap = start;
    for (i, name) in names.iter().enumerate() {
        if i < COUNTERS {
            black_box(stats.counter(name)?);
        } else {
            black_box(stats.gauge(name)?);
        }
        if (i + 1) % 10_000 == 0 {
            let now = Instant::now();
            println!(
                "series {:>6}..{:>6}: {:>8.2} ms ({:.2} µs per new series)",
                i + 1 - 10_000,
                i + 1,
                (now - lap).as_secs_f64() * 1e3,
                (now - lap).as_secs_f64() * 1e6 / 10_000.0
            );
            lap = now;
        }
    }
    let total = start.elapsed();
    println!("registered {SERIES} series in {:.3} s", total.as_secs_f64());

    let start = Instant::now();
    for name in names.iter().take(COUNTERS) {
        black_box(stats.counter(name)?);
    }
    println!(
        "lookup of an existing counter: {:.0} ns",
        start.elapsed().as_secs_f64() * 1e9 / COUNTERS as f64
    );
    let start = Instant::now();
    black_box(stats.snapshot());
    println!(
        "first snapshot after registration: {:.2} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}
