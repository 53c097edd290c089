//! A simple model of the engine's request path, and the one code path that
//! applies an op sequence to a real [`Engine`] (latchfree or locked) and the
//! model under a manual clock and checks that they agree.
//!
//! Included by the cargo-fuzz target `fuzz/fuzz_targets/engine_ops.rs`
//! (which decodes fuzzer bytes into a [`Config`] and [`Op`]s) and by the
//! integration test `tests/engine_model.rs` (seeded pseudo-random sequences
//! in plain `cargo test`).
//!
//! The model: sessions as id → last access (idle timeout), cached results
//! as key → (value, deadline), and the counters. Capacity bounds are set
//! above the id and key space (their behaviour is the component models'
//! business). After every call: whether it created the session, whether it
//! was cached, its output or error kind, and every counter; at the end,
//! after `shutdown`, the audit file verifies with one line per call.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use latchfree::clock::ManualClock;
use latchfree::engine::{
    CacheConfig, Call, Engine, EngineCounters, EngineError, SessionConfig, ToolError,
};

/// Which engine, and its timeouts.
#[derive(Clone, Debug)]
#[cfg_attr(not(test), derive(arbitrary::Arbitrary))]
pub struct Config {
    /// The locked engine (else latchfree's).
    pub locked: bool,
    /// Session idle timeout in ms: 1 + this.
    pub idle_ms: u8,
    /// Cache TTL in ms: 1 + this.
    pub ttl_ms: u8,
}

/// One operation; ids `0..8`, keys `0..8`.
#[derive(Clone, Debug)]
#[cfg_attr(not(test), derive(arbitrary::Arbitrary))]
pub enum Op {
    /// A call in session `id` of the cached tool (`cached`) or the
    /// uncached one, with argument `key`; the tool returns `value`, or
    /// fails when `fail`.
    Call {
        /// Session id.
        id: u8,
        /// The cached tool `query`, else `echo`.
        cached: bool,
        /// The argument.
        key: u8,
        /// What the tool returns.
        value: u16,
        /// The tool fails.
        fail: bool,
    },
    /// A call with an invalid (empty) session id.
    BadId,
    /// Time passes, in ms.
    Advance(u8),
    /// `Engine::sweep`.
    Sweep,
    /// `Engine::remove_session`.
    Remove(u8),
    /// `Engine::invalidate_cache("query")`.
    Invalidate,
}

const IDS: u8 = 8;
const KEYS: u8 = 8;

#[derive(Default)]
struct Model {
    now: u64,
    idle: u64,
    ttl: u64,
    /// id → last access.
    sessions: BTreeMap<u8, u64>,
    /// key → (value, deadline).
    cache: BTreeMap<u8, (String, u64)>,
    counters: EngineCounters,
}

impl Model {
    fn live_session(&mut self, id: u8) -> Option<u64> {
        match self.sessions.get(&id) {
            Some(&last) if self.now < last + self.idle => Some(last),
            Some(_) => {
                self.sessions.remove(&id);
                None
            }
            None => None,
        }
    }

    fn live_result(&mut self, key: u8) -> Option<String> {
        match self.cache.get(&key) {
            Some((v, deadline)) if self.now < *deadline => Some(v.clone()),
            Some(_) => {
                self.cache.remove(&key);
                None
            }
            None => None,
        }
    }
}

/// Applies `ops` to a fresh engine of `config` and to the model, checking
/// after every op; panics on the first disagreement.
pub fn run(config: &Config, ops: &[Op]) {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let clock = ManualClock::new(start);
    let mut model = Model {
        idle: 1 + u64::from(config.idle_ms),
        ttl: 1 + u64::from(config.ttl_ms),
        ..Model::default()
    };
    let engine = Engine::builder()
        .locked(config.locked)
        .audit_dir(dir.path())
        .clock(clock.clone())
        // Long enough that the engine's own sweeper rarely runs: sweeps
        // are ops, and an extra one changes nothing observable anyway.
        .sweep_interval(Duration::from_secs(3600))
        .sessions(
            SessionConfig::default()
                .max_sessions(64)
                .idle_timeout(Some(Duration::from_millis(model.idle)))
                .max_lifetime(None),
        )
        .cache(
            "query",
            CacheConfig::default()
                .max_entries(64)
                .ttl(Some(Duration::from_millis(model.ttl)))
                .tti(None),
        )
        .build()
        .expect("the engine builds");
    for (step, op) in ops.iter().enumerate() {
        let ctx = || format!("step {step}: {op:?} ({config:?})");
        match *op {
            Op::Call {
                id,
                cached,
                key,
                value,
                fail,
            } => {
                let (id, key) = (id % IDS, key % KEYS);
                let session_id = format!("s{id}");
                let tool = if cached { "query" } else { "echo" };
                let args = format!("{{\"k\":{key}}}");
                let mut ran = false;
                let result = engine.call(&Call::new(&session_id, tool, &args), |_| {
                    ran = true;
                    match fail {
                        true => Err(ToolError::new("failed")),
                        false => Ok(value.to_string()),
                    }
                });
                // The model.
                let created = model.live_session(id).is_none();
                model.sessions.insert(id, model.now);
                let hit = if cached { model.live_result(key) } else { None };
                let expected: Result<(String, bool), ()> = match (hit, fail) {
                    (Some(v), _) => Ok((v, true)),
                    (None, true) => Err(()),
                    (None, false) => {
                        if cached {
                            let deadline = model.now + model.ttl;
                            model.cache.insert(key, (value.to_string(), deadline));
                        }
                        Ok((value.to_string(), false))
                    }
                };
                let c = &mut model.counters;
                c.calls += 1;
                c.bytes_in += args.len() as u64;
                c.sessions_created += u64::from(created);
                match (&result, &expected) {
                    (Ok(reply), Ok((v, was_cached))) => {
                        assert_eq!(&*reply.output, v.as_str(), "{}", ctx());
                        assert_eq!(reply.cached, *was_cached, "{}", ctx());
                        assert_eq!(ran, !*was_cached, "{}", ctx());
                        assert_eq!(reply.session_created, created, "{}", ctx());
                        c.bytes_out += v.len() as u64;
                        c.cache_hits += u64::from(*was_cached);
                    }
                    (Err(EngineError::Tool(_)), Err(())) => c.errors += 1,
                    (got, want) => panic!("{}: got {got:?}, expected {want:?}", ctx()),
                }
            }
            Op::BadId => {
                let err = engine
                    .call(&Call::new("", "query", "{}"), |_| unreachable!())
                    .unwrap_err();
                assert!(matches!(err, EngineError::Session(_)), "{}", ctx());
                model.counters.calls += 1;
                model.counters.errors += 1;
                model.counters.bytes_in += 2;
            }
            Op::Advance(ms) => {
                clock.advance(Duration::from_millis(u64::from(ms)));
                model.now += u64::from(ms);
            }
            Op::Sweep => {
                engine.sweep();
                for id in 0..IDS {
                    model.live_session(id);
                }
                for key in 0..KEYS {
                    model.live_result(key);
                }
                assert_eq!(engine.session_count(), model.sessions.len(), "{}", ctx());
                assert_eq!(
                    engine.cache_len("query"),
                    Some(model.cache.len()),
                    "{}",
                    ctx()
                );
            }
            Op::Remove(id) => {
                let id = id % IDS;
                let removed = engine.remove_session(&format!("s{id}")).is_some();
                let live = model.live_session(id).is_some();
                model.sessions.remove(&id);
                assert_eq!(removed, live, "{}", ctx());
            }
            Op::Invalidate => {
                engine.invalidate_cache("query");
                model.cache.clear();
            }
        }
        assert_eq!(engine.counters(), model.counters, "{}", ctx());
    }
    engine.shutdown().expect("shutdown");
    let report = latchfree::audit::verify(dir.path()).expect("the audit log verifies");
    assert_eq!(
        report.records, model.counters.calls,
        "audit lines ({config:?})"
    );
}
