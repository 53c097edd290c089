//! A simple model of the expiring maps (`latchfree::session::SessionRegistry`
//! and `latchfree::cache::TtlCache`), and the one code path that applies an
//! op sequence to a real map and the model under a virtual clock and checks
//! that they agree.
//!
//! Included by the cargo-fuzz targets `fuzz/fuzz_targets/session_ops.rs`
//! and `cache_ops.rs` (which decode fuzzer bytes into a [`Config`] and
//! [`Op`]s) and by the integration test `tests/ttl_model.rs` (seeded
//! pseudo-random sequences in plain `cargo test`).
//!
//! The model is a `BTreeMap` from key to (value, absolute deadline, idle
//! timeout, last access) and the time in milliseconds. The real map runs
//! with a [`ManualClock`] and `Sweep::Manual` on one thread. Which entry a
//! capacity eviction picks is the real map's business: the model does not
//! predict it but checks every eviction the listener reports against itself
//! (the entry existed with that value; `Expired` only once its deadline has
//! passed; `Capacity` only when the map was full; `Removed`, `Cleared`,
//! `Replaced` only from the op that causes them) and then applies it. After
//! every op: each result exactly (values, `None`, capacity rejection, init
//! errors, counts), the length, and the bound.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use latchfree::cache::{LoadError, TtlCache};
use latchfree::clock::ManualClock;
use latchfree::session::{CapacityPolicy, SessionError, SessionRegistry};
use latchfree::ttl::{EvictionCause, Sweep};

/// Which map, and its configuration.
#[derive(Clone, Debug)]
#[cfg_attr(not(test), derive(arbitrary::Arbitrary))]
pub struct Config {
    /// The session registry (else the cache).
    pub session: bool,
    /// Capacity: 1 + this % 16.
    pub cap: u8,
    /// Lifetime / TTL in ms (0: none).
    pub ttl_ms: u16,
    /// Idle timeout in ms (0: none).
    pub idle_ms: u16,
    /// Registry only: evict at capacity (else reject).
    pub evict: bool,
}

/// One operation, on keys `0..32`.
#[derive(Clone, Debug)]
#[cfg_attr(not(test), derive(arbitrary::Arbitrary))]
pub enum Op {
    /// `get`.
    Get(u8),
    /// `get_or_create` / `get_or_load` with this value.
    GetOrInit(u8, u16),
    /// `try_get_or_create` / `try_get_or_load` whose init fails.
    GetOrFail(u8),
    /// `insert` (cache; a `get_or_create` on the registry).
    Insert(u8, u16),
    /// `insert_with_ttl` in ms (cache; a `get_or_create` on the registry).
    InsertTtl(u8, u16, u16),
    /// `remove` / `invalidate`.
    Remove(u8),
    /// `clear` / `invalidate_all`.
    Clear,
    /// Moves the clock forward this many ms.
    Advance(u16),
    /// `sweep`.
    Sweep,
    /// `get_or_create_async` / `get_or_load_async` with this value, driven
    /// to the end (with feature `async`; else as `GetOrInit`).
    GetOrInitAsync(u8, u16),
    /// `get_or_create_async` / `get_or_load_async` whose init is still
    /// pending when the future is dropped: a cancelled leader (with
    /// feature `async`; else as `Get`). A hit completes at once instead.
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    CancelledInit(u8, u16),
}

/// Polls `future` once with a waker that does nothing.
#[cfg(feature = "async")]
fn poll_once<F: std::future::Future>(future: std::pin::Pin<&mut F>) -> std::task::Poll<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    future.poll(&mut cx)
}

/// A future that is pending on its first poll and ready with `v` after.
#[cfg(feature = "async")]
async fn pending_once(v: u16) -> u16 {
    let mut first = true;
    std::future::poll_fn(|_| {
        if std::mem::take(&mut first) {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    v
}

struct ModelEntry {
    value: u16,
    expires: Option<u64>,
    last: u64,
}

struct Model {
    now: u64,
    idle: Option<u64>,
    entries: BTreeMap<u8, ModelEntry>,
}

impl Model {
    fn deadline(&self, e: &ModelEntry) -> Option<u64> {
        let idle = self.idle.map(|i| e.last + i);
        match (e.expires, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn is_live(&self, k: u8) -> bool {
        self.entries
            .get(&k)
            .is_some_and(|e| self.deadline(e).is_none_or(|d| self.now < d))
    }

    fn live_value(&self, k: u8) -> Option<u16> {
        self.is_live(k).then(|| self.entries[&k].value)
    }

    fn touch(&mut self, k: u8) {
        let now = self.now;
        if let Some(e) = self.entries.get_mut(&k) {
            e.last = now;
        }
    }

    fn any_expired(&self) -> bool {
        self.entries.keys().any(|&k| !self.is_live(k))
    }
}

type Events = Arc<Mutex<Vec<(u8, u16, EvictionCause)>>>;

enum Real {
    Session(SessionRegistry<u16>),
    Cache(TtlCache<u8, u16>),
}

fn id(k: u8) -> String {
    format!("s{k}")
}

/// Applies `ops` to a map built from `config` and to the model; panics on
/// the first disagreement.
pub fn run(config: &Config, ops: &[Op]) {
    let cap = 1 + usize::from(config.cap % 16);
    let ttl = (config.ttl_ms > 0).then(|| Duration::from_millis(config.ttl_ms.into()));
    let idle = (config.idle_ms > 0).then(|| Duration::from_millis(config.idle_ms.into()));
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let clock = ManualClock::new(start);
    let events: Events = Arc::default();
    let real = if config.session {
        let ev = events.clone();
        let mut b = SessionRegistry::<u16>::builder()
            .clock(clock.clone())
            .max_sessions(cap)
            .sweep(Sweep::Manual)
            .capacity_policy(if config.evict {
                CapacityPolicy::EvictLeastRecentlyUsed
            } else {
                CapacityPolicy::Reject
            })
            .eviction_listener(move |id, v, cause| {
                ev.lock()
                    .unwrap()
                    .push((id[1..].parse().unwrap(), *v, cause))
            });
        if let Some(t) = ttl {
            b = b.max_lifetime(t);
        }
        if let Some(i) = idle {
            b = b.idle_timeout(i);
        }
        Real::Session(b.build().unwrap())
    } else {
        let ev = events.clone();
        let mut b = TtlCache::<u8, u16>::builder()
            .clock(clock.clone())
            .max_entries(cap)
            .sweep(Sweep::Manual)
            .eviction_listener(move |k, v, cause| ev.lock().unwrap().push((*k, v, cause)));
        if let Some(t) = ttl {
            b = b.time_to_live(t);
        }
        if let Some(i) = idle {
            b = b.time_to_idle(i);
        }
        Real::Cache(b.build().unwrap())
    };
    let evicts = !config.session || config.evict;
    let ttl_ms = ttl.map(|t| t.as_millis() as u64);
    let mut model = Model {
        now: 0,
        idle: idle.map(|i| i.as_millis() as u64),
        entries: BTreeMap::new(),
    };

    // Checks and applies the listener's reports; `allowed` are the causes
    // the op may produce besides `Expired`.
    let drain = |model: &mut Model, allowed: &[EvictionCause]| {
        for (k, v, cause) in events.lock().unwrap().drain(..) {
            let e = model
                .entries
                .get(&k)
                .unwrap_or_else(|| panic!("evicted {k}, not in model"));
            assert_eq!(e.value, v, "evicted {k} with the wrong value");
            match cause {
                EvictionCause::Expired => {
                    assert!(!model.is_live(k), "{k} evicted as expired while live")
                }
                EvictionCause::Capacity => {
                    assert!(evicts, "capacity eviction under the reject policy");
                    assert!(model.is_live(k), "an expired entry evicted for capacity");
                    assert!(allowed.contains(&cause), "{cause} from this op");
                }
                _ => assert!(allowed.contains(&cause), "{cause} from this op"),
            }
            model.entries.remove(&k);
        }
    };

    for op in ops {
        #[cfg(not(feature = "async"))]
        let op = &match *op {
            Op::GetOrInitAsync(k, v) => Op::GetOrInit(k, v),
            Op::CancelledInit(k, _) => Op::Get(k),
            ref other => other.clone(),
        };
        match *op {
            Op::Get(k) => {
                let k = k % 32;
                let want = model.live_value(k);
                let got = match &real {
                    Real::Session(r) => r.get(&id(k)).map(|v| *v),
                    Real::Cache(c) => c.get(&k),
                };
                assert_eq!(got, want, "get {k}");
                drain(&mut model, &[]);
                if want.is_some() {
                    model.touch(k);
                }
            }
            Op::GetOrInit(k, v)
            | Op::GetOrInitAsync(k, v)
            | Op::Insert(k, v)
            | Op::InsertTtl(k, v, _)
                if config.session || matches!(op, Op::GetOrInit(..) | Op::GetOrInitAsync(..)) =>
            {
                let k = k % 32;
                let live = model.live_value(k);
                let full = model.entries.len()
                    - usize::from(model.entries.contains_key(&k) && live.is_none())
                    >= cap;
                let reject = live.is_none() && full && !evicts && !model.any_expired();
                let mut ran = false;
                let created = match (&real, matches!(op, Op::GetOrInitAsync(..))) {
                    (Real::Session(r), false) => r
                        .get_or_create(&id(k), || {
                            ran = true;
                            v
                        })
                        .map(|s| *s),
                    (Real::Cache(c), false) => Ok(c
                        .get_or_load(k, || {
                            ran = true;
                            v
                        })
                        .unwrap()),
                    #[cfg(feature = "async")]
                    (Real::Session(r), true) => {
                        let name = id(k);
                        let future = std::pin::pin!(r.get_or_create_async(&name, async {
                            ran = true;
                            v
                        }));
                        match poll_once(future) {
                            std::task::Poll::Ready(result) => result.map(|s| *s),
                            std::task::Poll::Pending => panic!("a ready init left {k} pending"),
                        }
                    }
                    #[cfg(feature = "async")]
                    (Real::Cache(c), true) => {
                        let future = std::pin::pin!(c.get_or_load_async(k, async {
                            ran = true;
                            v
                        }));
                        match poll_once(future) {
                            std::task::Poll::Ready(result) => Ok(result.unwrap()),
                            std::task::Poll::Pending => panic!("a ready load left {k} pending"),
                        }
                    }
                    #[cfg(not(feature = "async"))]
                    (_, true) => unreachable!("mapped to GetOrInit above"),
                };
                let got = match created {
                    Ok(s) => Some(s),
                    Err(SessionError::Full { max }) => {
                        assert_eq!(max, cap);
                        None
                    }
                    Err(e) => panic!("{e}"),
                };
                drain(&mut model, &[EvictionCause::Capacity]);
                match live {
                    Some(old) => {
                        assert_eq!(got, Some(old), "hit on {k}");
                        assert!(!ran, "init ran on a hit");
                        model.touch(k);
                    }
                    None if reject => assert_eq!(got, None, "{k} should be rejected"),
                    None => {
                        assert_eq!(got, Some(v), "created {k}");
                        assert!(ran);
                        model.entries.insert(
                            k,
                            ModelEntry {
                                value: v,
                                expires: ttl_ms.map(|t| model.now + t),
                                last: model.now,
                            },
                        );
                    }
                }
            }
            Op::GetOrFail(k) => {
                let k = k % 32;
                let live = model.live_value(k);
                let got = match &real {
                    Real::Session(r) => match r.try_get_or_create(&id(k), || Err("no")) {
                        Ok(s) => Ok(*s),
                        Err(SessionError::Failed(e)) => Err(Some(*e)),
                        Err(SessionError::Full { .. }) => Err(None),
                        Err(e) => panic!("{e}"),
                    },
                    Real::Cache(c) => match c.try_get_or_load(k, || Err("no")) {
                        Ok(v) => Ok(v),
                        Err(LoadError::Failed(e)) => Err(Some(*e)),
                        Err(e) => panic!("{e}"),
                    },
                };
                drain(&mut model, &[EvictionCause::Capacity]);
                match live {
                    Some(v) => {
                        assert_eq!(got, Ok(v));
                        model.touch(k);
                    }
                    None => assert!(got.is_err(), "a failed init stored nothing"),
                }
            }
            Op::GetOrInit(..) | Op::GetOrInitAsync(..) => unreachable!("matched above"),
            #[cfg(not(feature = "async"))]
            Op::CancelledInit(..) => unreachable!("mapped to Get above"),
            #[cfg(feature = "async")]
            Op::CancelledInit(k, v) => {
                let k = k % 32;
                let live = model.live_value(k);
                let polled = match &real {
                    Real::Session(r) => {
                        let name = id(k);
                        let future = std::pin::pin!(r.get_or_create_async(&name, pending_once(v)));
                        match poll_once(future) {
                            std::task::Poll::Ready(Ok(s)) => Some(Some(*s)),
                            std::task::Poll::Ready(Err(SessionError::Full { .. })) => Some(None),
                            std::task::Poll::Ready(Err(e)) => panic!("{e}"),
                            // Dropped here, while its init is pending.
                            std::task::Poll::Pending => None,
                        }
                    }
                    Real::Cache(c) => {
                        let future = std::pin::pin!(c.get_or_load_async(k, pending_once(v)));
                        match poll_once(future) {
                            std::task::Poll::Ready(result) => Some(Some(result.unwrap())),
                            std::task::Poll::Pending => None,
                        }
                    }
                };
                // Room may have been made for the load before it was dropped.
                drain(&mut model, &[EvictionCause::Capacity]);
                match (live, polled) {
                    (Some(old), got) => {
                        assert_eq!(got, Some(Some(old)), "a hit on {k} completes at once");
                        model.touch(k);
                    }
                    // Refused for capacity, as a blocking call would be.
                    (None, Some(None)) => {}
                    (None, Some(Some(got))) => panic!("{k} loaded {got} with its init pending"),
                    // Cancelled: nothing stored, the room given back.
                    (None, None) => assert!(model.live_value(k).is_none()),
                }
            }
            Op::Insert(k, v) | Op::InsertTtl(k, v, _) => {
                let Real::Cache(c) = &real else {
                    unreachable!("matched above")
                };
                let k = k % 32;
                let own = match *op {
                    Op::InsertTtl(_, _, t) => Some(u64::from(t).max(1)),
                    _ => None,
                };
                match own {
                    Some(t) => c.insert_with_ttl(k, v, Duration::from_millis(t)),
                    None => c.insert(k, v),
                }
                .expect("a plain insert always finds room");
                drain(
                    &mut model,
                    &[EvictionCause::Capacity, EvictionCause::Replaced],
                );
                model.entries.insert(
                    k,
                    ModelEntry {
                        value: v,
                        expires: own.or(ttl_ms).map(|t| model.now + t),
                        last: model.now,
                    },
                );
            }
            Op::Remove(k) => {
                let k = k % 32;
                let want = model.live_value(k);
                let got = match &real {
                    Real::Session(r) => r.remove(&id(k)).map(|v| *v),
                    Real::Cache(c) => c.invalidate(&k),
                };
                assert_eq!(got, want, "remove {k}");
                drain(&mut model, &[EvictionCause::Removed]);
                assert!(!model.entries.contains_key(&k));
            }
            Op::Clear => {
                let want = model.entries.len();
                let got = match &real {
                    Real::Session(r) => r.clear(),
                    Real::Cache(c) => c.invalidate_all(),
                };
                assert_eq!(got, want, "clear");
                drain(&mut model, &[EvictionCause::Cleared]);
                assert!(model.entries.is_empty());
            }
            Op::Advance(ms) => {
                model.now += u64::from(ms);
                clock.advance(Duration::from_millis(ms.into()));
            }
            Op::Sweep => {
                let want = model.entries.keys().filter(|&&k| !model.is_live(k)).count();
                let got = match &real {
                    Real::Session(r) => r.sweep(),
                    Real::Cache(c) => c.sweep(),
                };
                assert_eq!(got, want, "sweep");
                drain(&mut model, &[]);
            }
        }
        let len = match &real {
            Real::Session(r) => r.len(),
            Real::Cache(c) => c.len(),
        };
        assert_eq!(len, model.entries.len(), "len after {op:?}");
        assert!(len <= cap);
    }
}
