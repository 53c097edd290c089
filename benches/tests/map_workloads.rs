//! The `sessions` and `cache` bench workloads end to end: every case (each
//! implementation under `hit`, `mix_90_10` and `create_storm`) runs with
//! more threads than cores, and every row's exactness check must pass. This
//! is what makes the bench's "creation counts exact" claim a test: a peer or
//! latchfree creating a value twice in `create_storm`, a hit missing, or a
//! write lost fails here.

use std::time::Duration;

use latchfree_bench::{self as bench, Plan, Row, cache, sessions};

fn run_all(cases: &[bench::Case]) -> Vec<Row> {
    let plan = Plan {
        threads: vec![3],
        duration: Duration::from_millis(90),
        rounds: 3,
    };
    bench::run(cases, &plan, |_| {})
}

fn assert_exact(rows: &[Row], cases: usize) {
    assert_eq!(rows.len(), cases);
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| r.exact != Some(true))
        .map(|r| format!("{}/{} {}: {:?}", r.workload, r.op, r.imp, r.exact_detail))
        .collect();
    assert!(failed.is_empty(), "not exact: {failed:#?}");
    for op in ["hit", "mix_90_10", "create_storm"] {
        assert!(
            rows.iter().any(|r| r.op == op && r.imp == "latchfree"),
            "{op}"
        );
        assert!(rows.iter().any(|r| r.op == op && r.imp == "locked"), "{op}");
    }
}

#[test]
fn every_sessions_case_is_exact() {
    let cases = sessions::cases();
    assert_exact(&run_all(&cases), cases.len());
}

#[test]
fn every_cache_case_is_exact() {
    let cases = cache::cases();
    assert_exact(&run_all(&cases), cases.len());
}
