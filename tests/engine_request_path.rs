//! The engine's request path, on both kinds (latchfree and locked): what
//! each call counts, caches and audits, exactly, under contention and with
//! time moved by hand.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use latchfree::audit::{Guarantee, verify, verify_from};
use latchfree::clock::ManualClock;
use latchfree::engine::{
    CacheConfig, Call, Engine, EngineBuilder, EngineConfig, EngineError, SessionConfig, ToolError,
    metric,
};

fn both(dir: &std::path::Path) -> [(&'static str, EngineBuilder); 2] {
    [
        (
            "latchfree",
            Engine::builder().audit_dir(dir.join("latchfree")),
        ),
        ("locked", Engine::locked().audit_dir(dir.join("locked"))),
    ]
}

fn audit_lines(engine: &Engine) -> u64 {
    verify(engine.audit_dir())
        .expect("the audit log verifies")
        .records
}

#[test]
fn a_call_creates_the_session_once_caches_the_result_and_audits_every_call() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, builder) in both(dir.path()) {
        let engine = builder
            .cache("query", CacheConfig::default())
            .build()
            .unwrap();
        assert_eq!(engine.is_locked(), kind == "locked");
        let runs = AtomicU64::new(0);
        let tool = |args: &str| {
            runs.fetch_add(1, Ordering::Relaxed);
            Ok(format!("result of {args}"))
        };
        let a = engine
            .call(&Call::new("s1", "query", "{\"q\":1}"), tool)
            .unwrap();
        assert!(a.session_created && !a.cached, "{kind}");
        assert_eq!(&*a.output, "result of {\"q\":1}");
        let b = engine
            .call(&Call::new("s1", "query", "{\"q\":1}"), tool)
            .unwrap();
        assert!(!b.session_created && b.cached, "{kind}");
        assert!(Arc::ptr_eq(&a.session, &b.session), "{kind}");
        assert_eq!(b.session.calls(), 2);
        // Another argument misses; an uncached tool runs every time.
        engine
            .call(&Call::new("s2", "query", "{\"q\":2}"), tool)
            .unwrap();
        let c = engine.call(&Call::new("s2", "echo", "x"), tool).unwrap();
        let d = engine.call(&Call::new("s2", "echo", "x"), tool).unwrap();
        assert!(!c.cached && !d.cached);
        assert_eq!(runs.load(Ordering::Relaxed), 4, "{kind}");

        let counters = engine.counters();
        assert_eq!(counters.calls, 5, "{kind}");
        assert_eq!(counters.errors, 0);
        assert_eq!(counters.cache_hits, 1);
        assert_eq!(counters.sessions_created, 2);
        assert_eq!(counters.bytes_in, 3 * 7 + 2);
        let out = "result of {\"q\":1}".len() as u64;
        assert_eq!(counters.bytes_out, 3 * out + 2 * "result of x".len() as u64);
        assert_eq!(engine.session_count(), 2);
        assert_eq!(engine.cache_len("query"), Some(2));
        assert_eq!(engine.cache_len("echo"), None);
        engine.shutdown().unwrap();
        assert_eq!(audit_lines(&engine), 5, "{kind}");
    }
}

#[test]
fn failed_calls_are_counted_and_audited_and_failures_are_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, builder) in both(dir.path()) {
        let engine = builder
            .cache("query", CacheConfig::default())
            .build()
            .unwrap();
        let call = Call::new("s", "query", "{}");
        let err = engine
            .call(&call, |_| Err(ToolError::new("backend down")))
            .unwrap_err();
        assert!(
            matches!(&err, EngineError::Tool(e) if e.message == "backend down"),
            "{kind}: {err}"
        );
        // Not cached: the next call runs the tool again.
        let ok = engine.call(&call, |_| Ok("up".into())).unwrap();
        assert!(!ok.cached);
        // An invalid session id fails before the tool runs.
        let err = engine
            .call(&Call::new("has space", "query", "{}"), |_| unreachable!())
            .unwrap_err();
        assert!(matches!(err, EngineError::Session(_)), "{kind}: {err}");
        let err = engine
            .call(&Call::new("", "query", "{}"), |_| unreachable!())
            .unwrap_err();
        assert!(matches!(err, EngineError::Session(_)));
        let counters = engine.counters();
        assert_eq!((counters.calls, counters.errors), (4, 3), "{kind}");
        assert_eq!(counters.sessions_created, 1);
        engine.shutdown().unwrap();
        assert_eq!(audit_lines(&engine), 4, "{kind}");
        let text = std::fs::read_to_string(
            std::fs::read_dir(engine.audit_dir())
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(text.matches("\"ok\":false").count(), 3, "{kind}");
        assert!(text.contains("backend down"));
    }
}

#[test]
fn the_registry_bound_refuses_new_sessions_with_a_counted_error() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, builder) in both(dir.path()) {
        let engine = builder
            .sessions(SessionConfig::default().max_sessions(2))
            .build()
            .unwrap();
        for id in ["a", "b", "a"] {
            engine
                .call(&Call::new(id, "t", ""), |_| Ok(String::new()))
                .unwrap();
        }
        let err = engine
            .call(&Call::new("c", "t", ""), |_| unreachable!())
            .unwrap_err();
        assert!(matches!(err, EngineError::Session(_)), "{kind}: {err}");
        assert_eq!(engine.counters().errors, 1);
        assert_eq!(engine.session_count(), 2);
        engine.shutdown().unwrap();
    }
}

#[test]
fn sessions_and_results_expire_by_the_engine_clock() {
    let dir = tempfile::tempdir().unwrap();
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    for (kind, builder) in both(dir.path()) {
        let clock = ManualClock::new(start);
        let engine = builder
            .clock(clock.clone())
            .sessions(SessionConfig::default().idle_timeout(Some(Duration::from_secs(60))))
            .cache(
                "query",
                CacheConfig::default().ttl(Some(Duration::from_secs(10))),
            )
            .build()
            .unwrap();
        let call = Call::new("s", "query", "{}");
        let first = engine.call(&call, |_| Ok("v1".into())).unwrap();
        assert_eq!(first.session.created(), start);
        clock.advance(Duration::from_secs(9));
        assert!(
            engine.call(&call, |_| unreachable!()).unwrap().cached,
            "{kind}"
        );
        clock.advance(Duration::from_secs(1));
        let reloaded = engine.call(&call, |_| Ok("v2".into())).unwrap();
        assert!(!reloaded.cached && &*reloaded.output == "v2", "{kind}");
        assert!(!reloaded.session_created);
        // Idle for the timeout: a new session object under the same id.
        clock.advance(Duration::from_secs(60));
        assert!(engine.session("s").is_none(), "{kind}");
        engine.sweep();
        assert_eq!(engine.session_count(), 0, "{kind}");
        let again = engine.call(&call, |_| Ok("v3".into())).unwrap();
        assert!(again.session_created && !Arc::ptr_eq(&again.session, &first.session));
        assert_eq!(engine.counters().sessions_created, 2);
        engine.shutdown().unwrap();
    }
}

#[test]
fn shutdown_is_idempotent_and_later_calls_fail() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, builder) in both(dir.path()) {
        let engine = builder
            .guarantee(Guarantee::Os)
            .telemetry(true)
            .build()
            .unwrap();
        engine
            .call(&Call::new("s", "t", "{}"), |_| Ok("r".into()))
            .unwrap();
        engine.telemetry(&serde_json::json!({"gauge": 1})).unwrap();
        let clone = engine.clone();
        clone.shutdown().unwrap();
        engine.shutdown().unwrap();
        assert!(
            matches!(
                engine.call(&Call::new("s", "t", "{}"), |_| unreachable!()),
                Err(EngineError::ShutDown)
            ),
            "{kind}"
        );
        assert_eq!(audit_lines(&engine), 1);
        // The locked twin has one file prefix, `audit`; latchfree's
        // telemetry stream is `telemetry`.
        let prefix = if engine.is_locked() {
            "audit"
        } else {
            "telemetry"
        };
        let telemetry = verify_from(&engine.audit_dir().join("telemetry"), prefix, None).unwrap();
        assert_eq!(telemetry.records, 1, "{kind}");
    }
}

#[test]
fn prometheus_text_parses_and_matches_the_counters_on_both_kinds() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, builder) in both(dir.path()) {
        let engine = builder.build().unwrap();
        for i in 0..7 {
            engine
                .call(&Call::new("s", "t", &i.to_string()), |a| Ok(a.into()))
                .unwrap();
        }
        let text = engine.prometheus();
        let scrape =
            prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        let value = |name: &str| {
            scrape
                .samples
                .iter()
                .find(|s| s.metric == name)
                .map(|s| match s.value {
                    prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                    _ => f64::NAN,
                })
        };
        assert_eq!(value(metric::CALLS), Some(7.0), "{kind}:\n{text}");
        assert_eq!(value(metric::SESSIONS_CREATED), Some(1.0), "{kind}");
        let count = format!("{}_count", metric::LATENCY);
        assert!(
            scrape
                .samples
                .iter()
                .any(|s| s.metric == metric::LATENCY || s.metric == count),
            "{kind}:\n{text}"
        );
        engine.shutdown().unwrap();
    }
}

/// More threads than cores, few ids and keys so that creations and loads
/// race: afterwards every count is exact.
#[test]
fn concurrent_calls_are_exact() {
    const THREADS: usize = 8;
    const CALLS: usize = 2_000;
    const IDS: usize = 50;
    const KEYS: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    for (kind, builder) in both(dir.path()) {
        let engine = builder
            .cache("query", CacheConfig::default())
            .build()
            .unwrap();
        let runs: Vec<AtomicU64> = (0..KEYS).map(|_| AtomicU64::new(0)).collect();
        let created = AtomicU64::new(0);
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (engine, runs, created) = (&engine, &runs, &created);
                s.spawn(move || {
                    for i in 0..CALLS {
                        let n = (i * 7 + t * 13) % 1_000;
                        let id = format!("session-{}", n % IDS);
                        let key = n % KEYS;
                        let args = format!("{{\"k\":{key}}}");
                        let reply = engine
                            .call(&Call::new(&id, "query", &args), |a| {
                                runs[key].fetch_add(1, Ordering::Relaxed);
                                Ok(a.to_uppercase())
                            })
                            .unwrap();
                        assert_eq!(&*reply.output, args.to_uppercase());
                        created.fetch_add(u64::from(reply.session_created), Ordering::Relaxed);
                    }
                });
            }
        });
        let total = (THREADS * CALLS) as u64;
        let counters = engine.counters();
        assert_eq!(counters.calls, total, "{kind}");
        assert_eq!(counters.errors, 0);
        assert_eq!(counters.sessions_created, IDS as u64, "{kind}");
        assert_eq!(created.load(Ordering::Relaxed), IDS as u64, "{kind}");
        // Single flight: each key's tool ran once.
        let per_key: Vec<u64> = runs.iter().map(|r| r.load(Ordering::Relaxed)).collect();
        assert!(per_key.iter().all(|&r| r == 1), "{kind}: {per_key:?}");
        assert_eq!(counters.cache_hits, total - KEYS as u64, "{kind}");
        let mut calls_per_session: HashMap<String, u64> = HashMap::new();
        for i in 0..IDS {
            let id = format!("session-{i}");
            calls_per_session.insert(id.clone(), engine.session(&id).unwrap().calls());
        }
        assert_eq!(calls_per_session.values().sum::<u64>(), total, "{kind}");
        engine.shutdown().unwrap();
        assert_eq!(audit_lines(&engine), total, "{kind}");
    }
}

#[test]
fn the_toml_config_builds_either_kind() {
    let dir = tempfile::tempdir().unwrap();
    for locked in [false, true] {
        let text = format!(
            "sweep_interval = \"50ms\"\n[audit]\ndir = {:?}\nguarantee = \"disk\"\n\
             [sessions]\nmax_sessions = 10\nidle_timeout = \"5m\"\n[caches.query]\nmax_entries = 3\nttl = \"1s\"\n",
            dir.path().join(format!("l{locked}"))
        );
        let config = EngineConfig::from_toml(&text).unwrap();
        assert_eq!(EngineConfig::from_toml(&config.to_toml()).unwrap(), config);
        let engine = EngineBuilder::from_config(config)
            .locked(locked)
            .build()
            .unwrap();
        assert_eq!(engine.is_locked(), locked);
        assert_eq!(engine.guarantee(), Guarantee::Disk);
        assert_eq!(engine.cached_tools().collect::<Vec<_>>(), ["query"]);
        engine
            .call(&Call::new("s", "query", "1"), |_| Ok("x".into()))
            .unwrap();
        engine.shutdown().unwrap();
        assert_eq!(audit_lines(&engine), 1);
    }
    for bad in [
        "[audit]\ndir = \"x\"\nguarantee = \"sometimes\"\n",
        "[audit]\ndir = \"x\"\nextra = 1\n",
        "[sessions]\nmax_sessions = 1\n",
        "[audit]\ndir = \"x\"\n[sessions]\nidle_timeout = \"soon\"\n",
    ] {
        assert!(EngineConfig::from_toml(bad).is_err(), "{bad}");
    }
    assert!(matches!(
        Engine::builder().build(),
        Err(latchfree::engine::EngineBuildError::NoAuditDir)
    ));
}

/// `Engine::counters` is one snapshot: with every call failing, `errors`
/// equals `calls` and `bytes_in` is exactly `calls` arguments in every
/// reading taken while calls run (separate reads of each counter would see
/// a call's `calls` without its `errors`, or the other way round).
#[test]
fn counters_are_read_at_one_moment_while_calls_run() {
    const ARGS: &str = "{\"q\":1}";
    let dir = tempfile::tempdir().unwrap();
    for (kind, builder) in both(dir.path()) {
        let engine = builder.build().unwrap();
        let done = std::sync::atomic::AtomicBool::new(false);
        let readings = std::thread::scope(|s| {
            for t in 0..3 {
                let engine = &engine;
                s.spawn(move || {
                    for i in 0..2_000 {
                        let session = format!("s{t}-{}", i % 8);
                        let err = engine
                            .call(&Call::new(&session, "fails", ARGS), |_| {
                                Err(ToolError::new("no"))
                            })
                            .unwrap_err();
                        assert!(matches!(err, EngineError::Tool(_)), "{kind}: {err}");
                    }
                });
            }
            let reader = s.spawn(|| {
                let mut readings = 0u64;
                while !done.load(Ordering::Relaxed) {
                    let c = engine.counters();
                    assert_eq!(c.errors, c.calls, "{kind}: {c:?}");
                    assert_eq!(c.bytes_in, c.calls * ARGS.len() as u64, "{kind}: {c:?}");
                    readings += 1;
                }
                readings
            });
            // The writers are the scope's other threads: wait for them by
            // polling the total, then stop the reader.
            while engine.counters().calls < 6_000 {
                std::thread::yield_now();
            }
            done.store(true, Ordering::Relaxed);
            reader.join().unwrap()
        });
        assert!(readings > 0);
        let c = engine.counters();
        assert_eq!((c.calls, c.errors), (6_000, 6_000), "{kind}");
        engine.shutdown().unwrap();
    }
}
