//! The `mixed` bench workload's exactness checks, run briefly on both
//! engines: every row must be exact and say what it checked; and a check
//! that cannot pass (a registry too small for the ids) must fail.

use std::time::Duration;

use latchfree::audit::Guarantee;
use latchfree::engine::Engine;
use latchfree_bench::mixed::{self, MixedParams};
use latchfree_bench::{Plan, Target, run};

#[test]
fn mixed_rows_are_exact_under_each_guarantee() {
    for guarantee in [Guarantee::Async, Guarantee::Disk] {
        mixed::set_params(MixedParams {
            ids: 300,
            hit_ratio: 0.8,
            guarantee,
            ..MixedParams::default()
        });
        let plan = Plan {
            threads: vec![1, 4],
            duration: Duration::from_millis(40),
            rounds: 2,
        };
        let cases = mixed::cases();
        let rows = run(&cases, &plan, |_| {});
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
        ..MixedParams::default()
    };
    let target = mixed::Mixed::new(Engine::builder(), params);
    target.run(0, 500);
    target.settle();
    // One call more than were made: the counters and the audit file disagree.
    let check = target.verify(501).unwrap();
    assert!(check.unwrap_err().contains("calls"));
}

/// With small audit files, full files are verified and removed between
/// slices (so a long run's disk stays bounded), and the final check still
/// holds every line of every file, removed or not, to one chain.
#[test]
fn full_audit_files_are_verified_and_removed_between_slices() {
    for builder in [Engine::builder(), Engine::locked()] {
        let params = MixedParams {
            ids: 50,
            hit_ratio: 0.5,
            guarantee: Guarantee::Async,
            audit_file_bytes: 16 << 10,
        };
        let target = mixed::Mixed::new(builder, params);
        let dir = target.audit_dir().to_path_buf();
        let files = || latchfree::audit::verify::stream_files(&dir, "audit").unwrap();
        let mut calls = 0;
        for _ in 0..3 {
            target.run(0, 400);
            calls += 400;
            target.settle();
            // The file being written is left, and at most one more: the
            // latchfree writer may start the next file (the last one being
            // full) after the check listed the directory.
            let left = files().len();
            assert!((1..=2).contains(&left), "{left} files left");
        }
        target.verify(calls).unwrap().unwrap();
        let detail = target.report().unwrap();
        let removed: usize = detail
            .split(" verified and removed")
            .next()
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count in {detail:?}"));
        // The latchfree writer rotates between batches, so a file can
        // overshoot the bound; each slice still fills at least one.
        assert!(removed >= 2, "{detail}");
    }
}

/// A removed file that did not verify fails the check: the chain from the
/// removed files must reach the rest exactly.
#[test]
fn a_file_removed_behind_the_check_fails_it() {
    let params = MixedParams {
        ids: 50,
        hit_ratio: 0.5,
        guarantee: Guarantee::Async,
        audit_file_bytes: 16 << 10,
    };
    let target = mixed::Mixed::new(Engine::builder(), params);
    target.run(0, 400);
    target.settle();
    // Until a full file lies behind the one being written. On a loaded
    // machine one write may carry every event of a slice into one file
    // (the writer rotates between writes), so one slice may not do.
    let files = || latchfree::audit::verify::stream_files(target.audit_dir(), "audit").unwrap();
    let mut calls = 400;
    for _ in 0..50 {
        target.run(0, 400);
        calls += 400;
        target.engine().flush().unwrap();
        if files().len() >= 2 {
            break;
        }
    }
    // A full file goes missing before the check reaches it.
    let files = files();
    assert!(files.len() >= 2, "{files:?}");
    std::fs::remove_file(&files[0]).unwrap();
    target.settle();
    let err = target.verify(calls).unwrap().unwrap_err();
    assert!(err.contains("audit::verify"), "{err}");
}
