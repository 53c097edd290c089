//! The `mixed` bench workload's exactness checks, run briefly on both
//! engines: every row must be exact and say what it checked; and a check
//! that cannot pass (a registry too small for the ids) must fail.

#![cfg(feature = "cli")]

use std::time::Duration;

use latchfree::audit::Guarantee;
use latchfree::bench::mixed::{self, MixedParams};
use latchfree::bench::{Plan, Target, run};
use latchfree::engine::Engine;

#[test]
fn mixed_rows_are_exact_under_each_guarantee() {
    for guarantee in [Guarantee::Async, Guarantee::Disk] {
        mixed::set_params(MixedParams {
            ids: 300,
            hit_ratio: 0.8,
            guarantee,
        });
        let plan = Plan {
            threads: vec![1, 4],
            duration: Duration::from_millis(40),
            rounds: 2,
        };
        let cases = mixed::cases();
        let rows = run(&cases, &plan, |_, _| {});
        assert_eq!(rows.len(), 4);
        for row in &rows {
            assert_eq!(row.guarantee, guarantee.as_str());
            assert_eq!(row.exact, Some(true), "{row:?}");
            let detail = row.exact_detail.as_deref().unwrap_or("");
            assert!(detail.contains("audit lines == calls"), "{row:?}");
            assert!(row.ops_per_sec > 0.0);
        }
        assert!(
            rows.iter()
                .any(|r| r.imp == "locked" && r.ratio_vs_locked == Some(1.0))
        );
    }
}

#[test]
fn the_check_fails_when_counts_disagree() {
    let params = MixedParams {
        ids: 50,
        hit_ratio: 0.5,
        guarantee: Guarantee::Async,
    };
    let target = mixed::Mixed::new(Engine::builder(), params);
    target.run(0, 500);
    target.settle();
    // One call more than were made: the counters and the audit file disagree.
    let check = target.verify(501).unwrap();
    assert!(check.unwrap_err().contains("calls"));
}
