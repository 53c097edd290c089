//! Eight threads log structured events into one audit stream; one of them
//! waits for each event to be on disk before "answering". Then the stream is
//! closed and verified, and its head printed for anchoring.
//!
//! ```text
//! cargo run --release --example audit_log [DIR]
//! ```

use latchfree::audit::{self, AuditLog, Durability, Guarantee};
use serde::Serialize;

#[derive(Serialize)]
struct Event<'a> {
    user: &'a str,
    action: &'a str,
    resource: String,
    amount: u64,
    ok: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let temp = tempfile::tempdir()?;
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| temp.path().to_path_buf(), Into::into);
    let log = AuditLog::builder(&dir)
        .durability(Durability::Interval(std::time::Duration::from_millis(50)))
        .open()?;
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let log = log.clone();
            s.spawn(move || -> Result<(), audit::AuditError> {
                for i in 0..100_000u64 {
                    let event = Event {
                        user: "alice",
                        action: if t == 0 { "transfer" } else { "read" },
                        resource: format!("/accounts/{t}/items/{i}"),
                        amount: i,
                        ok: true,
                    };
                    if t == 0 && i % 1000 == 0 {
                        // A payment: answer only once it survives power loss.
                        log.log_wait(&event, Guarantee::Disk)?;
                    } else {
                        log.log(&event)?;
                    }
                }
                Ok(())
            });
        }
    });
    let head = log.close()?;
    let elapsed = started.elapsed();
    let metrics = log.metrics();
    println!(
        "{} events in {:.2?} ({:.2} M/s), {} batches, {} fsyncs",
        metrics.written,
        elapsed,
        metrics.written as f64 / elapsed.as_secs_f64() / 1e6,
        metrics.batches,
        metrics.fsyncs
    );
    let report = audit::verify(&dir)?;
    println!(
        "verified {} records in {} file(s); head {:?}",
        report.records, report.files, head
    );
    Ok(())
}
