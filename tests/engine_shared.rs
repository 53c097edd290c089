//! The engine's named shared instances (`Engine::shared`), on both kinds
//! (latchfree and locked): one instance per name, a typed error for another
//! type or a bad name, the same behaviour on either kind, and readers that
//! never see an empty or half-built value while a writer swaps, with every
//! replaced value dropped exactly once.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use latchfree::engine::{Engine, EngineBuilder, EngineError, EngineSharedGuard};
use latchfree::stats::{Stats, StatsError};

fn both(dir: &std::path::Path) -> [(&'static str, EngineBuilder); 2] {
    [
        (
            "latchfree",
            Engine::builder().audit_dir(dir.join("latchfree")),
        ),
        ("locked", Engine::locked().audit_dir(dir.join("locked"))),
    ]
}

/// Runs `test` on a latchfree and on a locked engine, each with its own
/// temporary audit directory, and shuts each down after (shutdown is
/// idempotent: a test may shut down first).
fn on_both(test: impl Fn(&'static str, &Engine)) {
    let dir = tempfile::tempdir().unwrap();
    for (kind, builder) in both(dir.path()) {
        let engine = builder.build().unwrap();
        test(kind, &engine);
        engine.shutdown().unwrap();
    }
}

#[derive(Debug, PartialEq)]
struct Model {
    version: u64,
}

#[test]
fn the_same_name_is_the_same_instance_and_both_kinds_behave_alike() {
    on_both(|kind, engine| {
        let a = engine.shared::<Model>("model").unwrap();
        let b = engine.shared::<Model>("model").unwrap();
        let other = engine.shared::<Model>("other").unwrap();
        assert!(a.load().is_none() && !a.is_set(), "{kind}: created empty");

        // A failed initialiser installs nothing.
        assert_eq!(
            a.get_or_try_init(|| Err::<Model, _>("no")).err(),
            Some("no"),
            "{kind}"
        );
        assert!(!b.is_set(), "{kind}");

        let first = a.get_or_init(|| Model { version: 1 });
        let seen = b.get_or_init(|| unreachable!("{kind}: already set"));
        assert!(EngineSharedGuard::ptr_eq(&first, &seen), "{kind}");
        assert!(
            Arc::ptr_eq(&a.load_arc().unwrap(), &b.load_arc().unwrap()),
            "{kind}: one instance per name"
        );
        let c = a.clone();
        assert!(Arc::ptr_eq(
            &c.load().unwrap().into_arc(),
            &engine.shared::<Model>("model").unwrap().load_arc().unwrap()
        ));
        assert!(!other.is_set(), "{kind}: another name, another instance");

        // Writes through one handle are seen through every other.
        let old = b.swap(Model { version: 2 }).unwrap();
        assert!(Arc::ptr_eq(&old, &first.into_arc()), "{kind}");
        assert_eq!(*a.load().unwrap(), Model { version: 2 }, "{kind}");
        assert_eq!(
            *seen,
            Model { version: 1 },
            "{kind}: a reader keeps its value"
        );
        c.store(Model { version: 3 });
        assert_eq!(a.load_arc().unwrap().version, 3, "{kind}");
        assert_eq!(b.take().map(|m| m.version), Some(3), "{kind}");
        assert!(a.take().is_none() && !a.is_set(), "{kind}");
        assert_eq!(a.get_or_init(|| Model { version: 4 }).version, 4);
        a.reset();
        assert!(b.load().is_none(), "{kind}");

        // Shutdown leaves shared instances alone.
        engine.shutdown().unwrap();
        b.store(Model { version: 5 });
        let after = engine.shared::<Model>("model").unwrap();
        assert_eq!(after.load().map(|m| m.version), Some(5), "{kind}");
    });
}

#[test]
fn another_type_under_an_existing_name_is_a_typed_error() {
    on_both(|kind, engine| {
        let count = engine.shared::<u32>("count").unwrap();
        count.store(7);
        let err = engine.shared::<String>("count").unwrap_err();
        match &err {
            EngineError::SharedTypeMismatch {
                name,
                existing,
                requested,
            } => {
                assert_eq!(name, "count", "{kind}");
                assert_eq!(*existing, "u32", "{kind}");
                assert!(requested.ends_with("String"), "{kind}: {requested}");
            }
            other => panic!("{kind}: {other:?}"),
        }
        assert!(err.to_string().contains("\"count\""), "{kind}: {err}");
        // The instance is untouched and still reachable with its type.
        assert_eq!(
            engine.shared::<u32>("count").unwrap().load_arc(),
            Some(Arc::new(7))
        );
    });
}

#[test]
fn a_name_that_is_not_a_metric_name_is_a_typed_error_on_both_kinds() {
    on_both(|kind, engine| {
        let long = "a".repeat(latchfree::stats::MAX_NAME_LEN + 1);
        for bad in ["", "no spaces", "9lives", "query-index", long.as_str()] {
            match engine.shared::<u8>(bad) {
                Err(EngineError::SharedMetrics {
                    name,
                    source: StatsError::InvalidName { .. },
                }) => assert_eq!(name, bad, "{kind}"),
                other => panic!("{kind}: {bad:?} gave {other:?}"),
            }
        }
        // Nothing was registered under a refused name.
        assert!(engine.shared::<u8>("query_index").is_ok(), "{kind}");
    });
}

#[test]
fn the_latchfree_engine_counts_each_instance_in_its_stats() {
    let dir = tempfile::tempdir().unwrap();
    let stats = Stats::new();
    let engine = Engine::builder()
        .audit_dir(dir.path())
        .stats(&stats)
        .build()
        .unwrap();
    let model = engine.shared::<Model>("model").unwrap();
    model.get_or_init(|| Model { version: 1 });
    model.store(Model { version: 2 });
    drop(model.swap(Model { version: 3 }));
    model.reset();
    let snap = stats.snapshot();
    let model_label = [("shared", "model")];
    for (name, want) in [
        ("shared_inits_total", 1),
        ("shared_replacements_total", 2),
        ("shared_resets_total", 1),
        ("shared_init_failures_total", 0),
    ] {
        assert_eq!(snap.counter_with(name, &model_label), Some(want), "{name}");
        assert_eq!(engine.counter_with(name, &model_label), want, "{name}");
        assert_eq!(snap.counter(name), None, "{name}: no unlabelled series");
    }
    assert!(
        engine
            .prometheus()
            .contains("shared_inits_total{shared=\"model\"} 1")
    );
    // A second instance is a second series of the same names.
    engine.shared::<u8>("busy").unwrap().get_or_init(|| 1);
    let snap = stats.snapshot();
    assert_eq!(
        snap.counter_with("shared_inits_total", &[("shared", "busy")]),
        Some(1)
    );
    assert_eq!(
        snap.counter_with("shared_inits_total", &model_label),
        Some(1)
    );
    engine.shutdown().unwrap();

    // A metric name that is already another kind in the engine's stats.
    let stats = Stats::new();
    stats.gauge("shared_inits_total").unwrap();
    let engine = Engine::builder()
        .audit_dir(dir.path().join("clash"))
        .stats(&stats)
        .build()
        .unwrap();
    assert!(matches!(
        engine.shared::<u8>("busy"),
        Err(EngineError::SharedMetrics {
            source: StatsError::KindMismatch { .. },
            ..
        })
    ));
    engine.shutdown().unwrap();

    // The locked engine keeps no metrics for them.
    let locked = Engine::locked()
        .audit_dir(dir.path().join("locked"))
        .build()
        .unwrap();
    locked
        .shared::<Model>("model")
        .unwrap()
        .store(Model { version: 1 });
    assert_eq!(
        locked.counter_with("shared_replacements_total", &[("shared", "model")]),
        0
    );
    locked.shutdown().unwrap();
}

#[test]
fn racing_first_requests_reach_one_instance_and_run_one_initialiser() {
    on_both(|kind, engine| {
        let inits = AtomicUsize::new(0);
        let start = Barrier::new(8);
        let got: Vec<Arc<Model>> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        let model = engine.shared::<Model>("model").unwrap();
                        model
                            .get_or_init(|| {
                                inits.fetch_add(1, Ordering::Relaxed);
                                Model { version: 1 }
                            })
                            .into_arc()
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        assert_eq!(inits.load(Ordering::Relaxed), 1, "{kind}");
        assert!(got.iter().all(|m| Arc::ptr_eq(m, &got[0])), "{kind}");
    });
}

/// A value that checks it was fully built and counts its drops.
struct Versioned {
    version: u64,
    /// `version ^ MAGIC`: a reader of a half-built or freed value would
    /// (most likely) see a mismatch.
    check: u64,
    drops: Arc<AtomicUsize>,
}

const MAGIC: u64 = 0x5eed_cafe_f00d_d00d;

impl Versioned {
    fn new(version: u64, drops: &Arc<AtomicUsize>) -> Self {
        Self {
            version,
            check: version ^ MAGIC,
            drops: Arc::clone(drops),
        }
    }
}

impl Drop for Versioned {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn readers_see_an_initialised_value_while_one_thread_swaps_and_old_values_are_dropped() {
    const READERS: usize = 8;
    const SWAPS: u64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    for (kind, builder) in both(dir.path()) {
        let engine = builder.build().unwrap();
        let drops = Arc::new(AtomicUsize::new(0));
        let model = engine.shared::<Versioned>("model").unwrap();
        model.get_or_init(|| Versioned::new(0, &drops));
        let done = AtomicBool::new(false);
        let reads = AtomicU64::new(0);
        let start = Barrier::new(READERS + 1);
        std::thread::scope(|s| {
            for r in 0..READERS {
                let (model, done, reads, start) = (model.clone(), &done, &reads, &start);
                s.spawn(move || {
                    start.wait();
                    let mut last = 0;
                    let mut n = 0;
                    // At least a few reads even if the writer finishes first.
                    while n < 100 || !done.load(Ordering::Acquire) {
                        let v = if r % 2 == 0 {
                            model.load().expect("never empty")
                        } else {
                            model.get_or_init(|| unreachable!("never empty"))
                        };
                        assert_eq!(v.check, v.version ^ MAGIC, "a whole value");
                        assert!(v.version >= last, "versions only go forward");
                        last = v.version;
                        n += 1;
                    }
                    reads.fetch_add(n, Ordering::Relaxed);
                });
            }
            start.wait();
            for version in 1..=SWAPS {
                let old = model.swap(Versioned::new(version, &drops));
                assert_eq!(old.map(|v| v.version), Some(version - 1), "{kind}");
                if version % 64 == 0 {
                    std::thread::yield_now();
                }
            }
            done.store(true, Ordering::Release);
        });
        assert!(reads.load(Ordering::Relaxed) >= 100 * READERS as u64);
        // Every replaced value is gone, each dropped once; the current one
        // lives on while the engine or a handle holds the instance.
        assert_eq!(drops.load(Ordering::Relaxed), SWAPS as usize, "{kind}");
        engine.shutdown().unwrap();
        assert_eq!(model.load().map(|v| v.version), Some(SWAPS), "{kind}");
        drop(model);
        assert_eq!(drops.load(Ordering::Relaxed), SWAPS as usize, "{kind}");
        drop(engine);
        assert_eq!(drops.load(Ordering::Relaxed), SWAPS as usize + 1, "{kind}");
        assert_eq!(Arc::strong_count(&drops), 1, "{kind}: no value left");
    }
}
