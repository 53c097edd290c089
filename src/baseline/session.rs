//! [`LockedSessionRegistry`]: sessions in one `RwLock<HashMap>`, created
//! with double-checked locking.
//!
//! The classic design, done carefully:
//!
//! 1. **Read lock.** Look the id up; if it is there and not expired, stamp
//!    its last access (a relaxed atomic in the entry) and return a clone of
//!    its `Arc`.
//! 2. **Write lock.** Otherwise take the write lock and look again (another
//!    caller may have created it between the two locks). Still absent: drop
//!    the expired entry if there is one, make room (purge everything expired,
//!    then apply the [`CapacityPolicy`]), run the initialiser **under the
//!    write lock**, and insert.
//!
//! Running the initialiser under the write lock is what makes it exactly-once
//! (every other caller for the id waits on the lock, then finds the session
//! in step 2), and also what makes the design slow: while one id is being
//! created no thread can read or create any other id, and a preempted holder
//! stalls them all. A failed initialiser leaves nothing behind; the callers
//! that were queued behind it then run their own initialiser in turn (there
//! is no shared in-flight slot to hand them its error). A panicking
//! initialiser poisons the lock, which this twin ignores (the map is only
//! modified after the initialiser returns, so it is never half-updated).
//!
//! Expiry is checked on every lookup against the injected [`Clock`], so an
//! expired session is never returned; [`sweep`](LockedSessionRegistry::sweep)
//! removes them all in one full scan under the write lock. The listener runs
//! after the lock is released, once per evicted session.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use super::timed::{self, Lifetimes, Timed};
use crate::clock::{Clock, SystemClock};
use crate::session::{
    BuildError, CapacityPolicy, DEFAULT_MAX_ID_LEN, DEFAULT_MAX_SESSIONS, EvictionCause, InvalidId,
    SessionError,
};

type Listener<S> = Arc<dyn Fn(&str, Arc<S>, EvictionCause) + Send + Sync>;

/// Builds a [`LockedSessionRegistry`].
#[must_use]
pub struct LockedSessionRegistryBuilder<S> {
    lifetimes: Lifetimes,
    max_sessions: usize,
    max_id_len: usize,
    policy: CapacityPolicy,
    clock: Arc<dyn Clock>,
    listener: Option<Listener<S>>,
}

impl<S> LockedSessionRegistryBuilder<S> {
    /// A session idle (not read or created) for `timeout` expires.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.lifetimes.idle = Some(timeout);
        self
    }

    /// A session expires `lifetime` after its creation, however busy.
    pub fn max_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetimes.absolute = Some(lifetime);
        self
    }

    /// At most `max` sessions (default [`DEFAULT_MAX_SESSIONS`]).
    pub fn max_sessions(mut self, max: usize) -> Self {
        self.max_sessions = max;
        self
    }

    /// Ids longer than `max` bytes are refused (default
    /// [`DEFAULT_MAX_ID_LEN`]).
    pub fn max_id_len(mut self, max: usize) -> Self {
        self.max_id_len = max;
        self
    }

    /// What to do at `max_sessions` (default [`CapacityPolicy::Reject`]).
    pub fn capacity_policy(mut self, policy: CapacityPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The clock expiry reads (default [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Called once per session that leaves the registry, with the cause,
    /// after the lock is released.
    pub fn eviction_listener(
        mut self,
        listener: impl Fn(&str, Arc<S>, EvictionCause) + Send + Sync + 'static,
    ) -> Self {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// The registry, or why the settings are unusable (a zero
    /// `max_sessions`, a zero timeout).
    pub fn build(self) -> Result<LockedSessionRegistry<S>, BuildError> {
        self.lifetimes
            .validate(self.max_sessions, "max_lifetime", "idle_timeout")?;
        Ok(self.assemble())
    }

    fn assemble(self) -> LockedSessionRegistry<S> {
        LockedSessionRegistry {
            sessions: RwLock::new(HashMap::new()),
            lifetimes: self.lifetimes,
            max_sessions: self.max_sessions,
            max_id_len: self.max_id_len,
            policy: self.policy,
            clock: self.clock,
            listener: self.listener,
        }
    }
}

/// The classic session registry: one `RwLock<HashMap>`, get-or-create by
/// double-checked locking with the initialiser run under the write lock.
///
/// * **Exactly once.** The initialiser of a live id runs once; every caller
///   gets the same `Arc`.
/// * **Never expired.** Every lookup checks the deadlines against the clock.
/// * **The cost.** A creation holds the write lock for the whole
///   initialiser: reads and creations of every other id wait for it.
///
/// ```
/// use latchfree::baseline::LockedSessionRegistry;
/// use latchfree::clock::ManualClock;
/// use std::time::{Duration, SystemTime};
///
/// let clock = ManualClock::new(SystemTime::UNIX_EPOCH);
/// let sessions = LockedSessionRegistry::builder()
///     .idle_timeout(Duration::from_secs(60))
///     .clock(clock.clone())
///     .build()?;
/// let a = sessions.get_or_create("s-1", || String::from("alice"))?;
/// let b = sessions.get_or_create("s-1", || unreachable!("exists"))?;
/// assert!(std::sync::Arc::ptr_eq(&a, &b));
/// clock.advance(Duration::from_secs(60));
/// assert!(sessions.get("s-1").is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LockedSessionRegistry<S> {
    sessions: RwLock<HashMap<Box<str>, Timed<Arc<S>>>>,
    lifetimes: Lifetimes,
    max_sessions: usize,
    max_id_len: usize,
    policy: CapacityPolicy,
    clock: Arc<dyn Clock>,
    listener: Option<Listener<S>>,
}

impl<S> fmt::Debug for LockedSessionRegistry<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockedSessionRegistry")
            .field("len", &self.read().len())
            .field("max_sessions", &self.max_sessions)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<S> Default for LockedSessionRegistry<S> {
    fn default() -> Self {
        Self::new()
    }
}

/// Sessions removed under the lock, told to the listener once it is released.
type Evicted<S> = Vec<(Box<str>, Arc<S>, EvictionCause)>;

impl<S> LockedSessionRegistry<S> {
    /// A registry of at most [`DEFAULT_MAX_SESSIONS`] sessions with no
    /// expiry, on the system clock.
    pub fn new() -> Self {
        Self::builder().assemble()
    }

    /// A builder with the defaults of [`new`](Self::new).
    pub fn builder() -> LockedSessionRegistryBuilder<S> {
        LockedSessionRegistryBuilder {
            lifetimes: Lifetimes::default(),
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_id_len: DEFAULT_MAX_ID_LEN,
            policy: CapacityPolicy::Reject,
            clock: Arc::new(SystemClock),
            listener: None,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<Box<str>, Timed<Arc<S>>>> {
        self.sessions.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<Box<str>, Timed<Arc<S>>>> {
        // Poisoned only by a panicking initialiser, which runs before the map
        // is touched: the map is consistent.
        self.sessions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> u64 {
        timed::now_nanos(&*self.clock)
    }

    fn notify(&self, evicted: Evicted<S>) {
        if let Some(listener) = &self.listener {
            for (id, session, cause) in evicted {
                listener(&id, session, cause);
            }
        }
    }

    /// Checks `id`: not empty, at most `max_id_len` bytes, no control or
    /// whitespace character.
    pub fn validate_id(&self, id: &str) -> Result<(), InvalidId> {
        crate::session::validate_id(id, self.max_id_len)
    }

    /// The live session `id`, stamping its last access; `None` if absent,
    /// expired or invalid. Takes the read lock.
    pub fn get(&self, id: &str) -> Option<Arc<S>> {
        self.find(id, Arc::clone)
    }

    /// Calls `f` on the live session `id` under the read lock (no `Arc`
    /// clone), stamping its last access.
    pub fn with<R>(&self, id: &str, f: impl FnOnce(&S) -> R) -> Option<R> {
        self.find(id, |s| f(s))
    }

    /// Whether `id` is live.
    pub fn contains(&self, id: &str) -> bool {
        self.find(id, |_| ()).is_some()
    }

    /// Under the read lock: `f` on the live entry of `id`, stamped.
    fn find<R>(&self, id: &str, f: impl FnOnce(&Arc<S>) -> R) -> Option<R> {
        let now = self.now();
        let sessions = self.read();
        let entry = sessions.get(id).filter(|e| !e.is_expired(now))?;
        entry.touch(now);
        Some(f(&entry.value))
    }

    /// The configured bound.
    pub fn max_sessions(&self) -> usize {
        self.max_sessions
    }

    /// The live session `id`, created by `init` if absent (exactly once per
    /// live id: `init` runs under the write lock).
    pub fn get_or_create(
        &self,
        id: &str,
        init: impl FnOnce() -> S,
    ) -> Result<Arc<S>, SessionError> {
        self.try_get_or_create(id, || Ok(init()))
    }

    /// [`get_or_create`](Self::get_or_create) with a fallible initialiser:
    /// its error is returned and nothing is stored.
    pub fn try_get_or_create<E>(
        &self,
        id: &str,
        init: impl FnOnce() -> Result<S, E>,
    ) -> Result<Arc<S>, SessionError<E>> {
        self.validate_id(id)?;
        // First check, under the read lock.
        if let Some(session) = self.get(id) {
            return Ok(session);
        }
        let mut evicted = Vec::new();
        let result = {
            let mut sessions = self.write();
            // The clock is read again: time passed while we queued.
            let now = self.now();
            // Second check, under the write lock.
            match sessions.get(id) {
                Some(e) if !e.is_expired(now) => {
                    e.touch(now);
                    Ok(Arc::clone(&e.value))
                }
                _ => self.create(&mut sessions, id, now, init, &mut evicted),
            }
        };
        self.notify(evicted);
        result
    }

    /// Under the write lock: makes room for `id` and runs `init`.
    fn create<E>(
        &self,
        sessions: &mut HashMap<Box<str>, Timed<Arc<S>>>,
        id: &str,
        now: u64,
        init: impl FnOnce() -> Result<S, E>,
        evicted: &mut Evicted<S>,
    ) -> Result<Arc<S>, SessionError<E>> {
        if let Some((id, e)) = sessions.remove_entry(id) {
            evicted.push((id, e.value, EvictionCause::Expired));
        }
        if sessions.len() >= self.max_sessions {
            let expired = timed::drain_expired(sessions, now);
            evicted.extend(
                expired
                    .into_iter()
                    .map(|(k, v)| (k, v, EvictionCause::Expired)),
            );
        }
        while sessions.len() >= self.max_sessions {
            match self.policy {
                CapacityPolicy::Reject => {
                    return Err(SessionError::Full {
                        max: self.max_sessions,
                    });
                }
                CapacityPolicy::EvictLeastRecentlyUsed => {
                    // `max_sessions >= 1` (checked by `build`), so the map is
                    // not empty here.
                    let Some((k, v)) = timed::evict_lru(sessions) else {
                        break;
                    };
                    evicted.push((k, v, EvictionCause::Capacity));
                }
            }
        }
        let session = Arc::new(init().map_err(|e| SessionError::Failed(Arc::new(e)))?);
        sessions.insert(
            id.into(),
            Timed::new(Arc::clone(&session), now, self.lifetimes, None),
        );
        Ok(session)
    }

    /// Removes `id`, returning it if it was live (an expired one is reported
    /// to the listener as [`EvictionCause::Expired`] and `None` returned).
    pub fn remove(&self, id: &str) -> Option<Arc<S>> {
        let now = self.now();
        let removed = self.write().remove_entry(id);
        let (id, entry) = removed?;
        let live = !entry.is_expired(now);
        let cause = if live {
            EvictionCause::Removed
        } else {
            EvictionCause::Expired
        };
        let session = entry.value;
        self.notify(vec![(id, Arc::clone(&session), cause)]);
        live.then_some(session)
    }

    /// Sessions held, expired ones not yet swept included.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every session ([`EvictionCause::Cleared`]); returns how many.
    pub fn clear(&self) -> usize {
        let drained: Evicted<S> = self
            .write()
            .drain()
            .map(|(k, e)| (k, e.value, EvictionCause::Cleared))
            .collect();
        let n = drained.len();
        self.notify(drained);
        n
    }

    /// Removes every expired session (one full scan under the write lock);
    /// returns how many.
    pub fn sweep(&self) -> usize {
        let now = self.now();
        let expired = timed::drain_expired(&mut self.write(), now);
        let n = expired.len();
        self.notify(
            expired
                .into_iter()
                .map(|(k, v)| (k, v, EvictionCause::Expired))
                .collect(),
        );
        n
    }

    /// Calls `f` with each live session, from a copy taken under the read
    /// lock (so `f` may use the registry).
    pub fn for_each(&self, mut f: impl FnMut(&str, &Arc<S>)) {
        let now = self.now();
        let live: Vec<(Box<str>, Arc<S>)> = self
            .read()
            .iter()
            .filter(|(_, e)| !e.is_expired(now))
            .map(|(k, e)| (k.clone(), Arc::clone(&e.value)))
            .collect();
        for (id, session) in &live {
            f(id, session);
        }
    }
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<LockedSessionRegistry<String>>();
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::SystemTime;

    type Log = Arc<Mutex<Vec<(String, EvictionCause)>>>;
    type Builder = LockedSessionRegistryBuilder<u32>;

    fn registry(
        build: impl FnOnce(Builder) -> Builder,
    ) -> (LockedSessionRegistry<u32>, ManualClock, Log) {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000));
        let log: Log = Arc::default();
        let sink = Arc::clone(&log);
        let builder = LockedSessionRegistry::builder()
            .clock(clock.clone())
            .eviction_listener(move |id, _, cause| {
                sink.lock().unwrap().push((id.to_owned(), cause));
            });
        (build(builder).build().unwrap(), clock, log)
    }

    fn taken(log: &Log) -> Vec<(String, EvictionCause)> {
        std::mem::take(&mut *log.lock().unwrap())
    }

    #[test]
    fn creation_is_exactly_once_across_racing_threads() {
        let (sessions, _, _) = registry(|b| b);
        let ids: Vec<String> = (0..10_000).map(|i| format!("s-{i}")).collect();
        let calls = AtomicUsize::new(0);
        let per_thread: Vec<Vec<Arc<u32>>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        ids.iter()
                            .enumerate()
                            .map(|(i, id)| {
                                sessions
                                    .get_or_create(id, || {
                                        calls.fetch_add(1, Ordering::Relaxed);
                                        i as u32
                                    })
                                    .unwrap()
                            })
                            .collect()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        assert_eq!(calls.load(Ordering::Relaxed), ids.len());
        assert_eq!(sessions.len(), ids.len());
        for (i, first) in per_thread[0].iter().enumerate() {
            assert_eq!(**first, i as u32);
            assert!(per_thread.iter().all(|t| Arc::ptr_eq(&t[i], first)));
        }
    }

    #[test]
    fn idle_and_absolute_expiry_are_exact_and_told_once() {
        let (sessions, clock, log) = registry(|b| {
            b.idle_timeout(Duration::from_secs(10))
                .max_lifetime(Duration::from_secs(25))
        });
        sessions.get_or_create("a", || 1).unwrap();
        clock.advance(Duration::from_secs(9));
        assert_eq!(sessions.get("a").as_deref(), Some(&1), "touched at 9 s");
        clock.advance(Duration::from_secs(9));
        assert!(sessions.get("a").is_some(), "idle 9 s of 10");
        clock.advance(Duration::from_secs(6));
        assert!(sessions.get("a").is_some(), "24 s of a 25 s lifetime");
        clock.advance(Duration::from_secs(1));
        assert!(sessions.get("a").is_none(), "lifetime reached");
        assert_eq!(sessions.len(), 1, "held until swept or replaced");
        assert_eq!(sessions.sweep(), 1);
        assert_eq!(sessions.sweep(), 0);
        assert_eq!(taken(&log), [("a".into(), EvictionCause::Expired)]);

        sessions.get_or_create("b", || 2).unwrap();
        clock.advance(Duration::from_secs(10));
        assert!(sessions.get("b").is_none(), "idle limit reached");
        let b = sessions.get_or_create("b", || 3).unwrap();
        assert_eq!(*b, 3, "an expired id is created afresh");
        assert_eq!(taken(&log), [("b".into(), EvictionCause::Expired)]);
    }

    #[test]
    fn capacity_rejects_by_default_after_purging_the_expired() {
        let (sessions, clock, log) =
            registry(|b| b.max_sessions(2).max_lifetime(Duration::from_secs(5)));
        sessions.get_or_create("a", || 1).unwrap();
        clock.advance(Duration::from_secs(3));
        sessions.get_or_create("b", || 2).unwrap();
        assert!(matches!(
            sessions.get_or_create("c", || 3),
            Err(SessionError::Full { max: 2 })
        ));
        assert!(taken(&log).is_empty());
        clock.advance(Duration::from_secs(2));
        assert_eq!(
            *sessions.get_or_create("c", || 3).unwrap(),
            3,
            "a expired first"
        );
        assert_eq!(taken(&log), [("a".into(), EvictionCause::Expired)]);
        assert_eq!(sessions.len(), 2);
    }

    #[test]
    fn capacity_evicts_the_least_recently_used_when_asked() {
        let (sessions, clock, log) = registry(|b| {
            b.max_sessions(2)
                .capacity_policy(CapacityPolicy::EvictLeastRecentlyUsed)
        });
        sessions.get_or_create("a", || 1).unwrap();
        clock.advance(Duration::from_secs(1));
        sessions.get_or_create("b", || 2).unwrap();
        clock.advance(Duration::from_secs(1));
        sessions.get("a").unwrap();
        sessions.get_or_create("c", || 3).unwrap();
        assert_eq!(taken(&log), [("b".into(), EvictionCause::Capacity)]);
        assert!(sessions.get("a").is_some() && sessions.get("c").is_some());
        assert_eq!(sessions.len(), 2);
    }

    #[test]
    fn a_flood_of_new_ids_stays_within_the_bound_under_either_policy() {
        for policy in [
            CapacityPolicy::Reject,
            CapacityPolicy::EvictLeastRecentlyUsed,
        ] {
            let (sessions, clock, log) =
                registry(|b| b.max_sessions(1_000).capacity_policy(policy));
            let mut rejected = 0;
            for i in 0..20_000 {
                clock.advance(Duration::from_millis(1));
                match sessions.get_or_create(&format!("flood-{i}"), || i) {
                    Ok(s) => assert_eq!(*s, i),
                    Err(SessionError::Full { max: 1_000 }) => rejected += 1,
                    Err(e) => panic!("{e}"),
                }
                assert!(sessions.len() <= 1_000);
            }
            let evicted = taken(&log);
            match policy {
                CapacityPolicy::Reject => {
                    assert_eq!((rejected, evicted.len()), (19_000, 0));
                    assert!(
                        sessions.get("flood-999").is_some() && sessions.get("flood-1000").is_none()
                    );
                }
                CapacityPolicy::EvictLeastRecentlyUsed => {
                    assert_eq!(rejected, 0);
                    assert_eq!(evicted.len(), 19_000);
                    assert!(evicted.iter().all(|(_, c)| *c == EvictionCause::Capacity));
                    assert_eq!(evicted[0].0, "flood-0", "the oldest goes first");
                    assert!(
                        sessions.get("flood-19999").is_some() && sessions.get("flood-0").is_none()
                    );
                }
            }
        }
    }

    #[test]
    fn bad_ids_failures_and_panics_leave_nothing_behind() {
        let (sessions, _, log) = registry(|b| b.max_id_len(8));
        let bad = [
            ("", InvalidId::Empty),
            ("123456789", InvalidId::TooLong { len: 9, max: 8 }),
            ("has sp", InvalidId::NotPrintable { position: 3 }),
            ("tab\t", InvalidId::NotPrintable { position: 3 }),
        ];
        for (id, why) in bad {
            assert_eq!(sessions.validate_id(id), Err(why.clone()), "{id:?}");
            match sessions.get_or_create(id, || 0) {
                Err(SessionError::InvalidId(e)) => assert_eq!(e, why),
                other => panic!("{id:?}: {other:?}"),
            }
        }
        assert!(sessions.get_or_create("12345678", || 0).is_ok());
        assert!(
            sessions.get_or_create("é-ok", || 0).is_ok(),
            "printable non-ASCII"
        );
        match sessions.try_get_or_create("f", || Err::<u32, _>("down")) {
            Err(SessionError::Failed(e)) => assert_eq!(*e, "down"),
            other => panic!("{other:?}"),
        }
        assert!(sessions.get("f").is_none());
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            sessions.get_or_create("p", || panic!("init panics"))
        }));
        assert!(panicked.is_err());
        assert_eq!(
            *sessions.get_or_create("p", || 7).unwrap(),
            7,
            "retry works"
        );
        assert_eq!(sessions.len(), 3);
        assert!(taken(&log).is_empty());
        assert_eq!(
            LockedSessionRegistry::<u32>::builder()
                .max_sessions(0)
                .build()
                .err(),
            Some(BuildError::ZeroCapacity)
        );
        assert_eq!(
            LockedSessionRegistry::<u32>::builder()
                .idle_timeout(Duration::ZERO)
                .build()
                .err(),
            Some(BuildError::ZeroTimeout("idle_timeout"))
        );
    }

    #[test]
    fn remove_clear_and_iteration_tell_the_listener_once_each() {
        let (sessions, _, log) = registry(|b| b);
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            sessions.get_or_create(id, || i as u32).unwrap();
        }
        assert_eq!(sessions.remove("b").as_deref(), Some(&1));
        assert_eq!(sessions.remove("b"), None);
        let mut seen = Vec::new();
        sessions.for_each(|id, s| {
            // The callback may use the registry: it runs outside the lock.
            assert!(sessions.get(id).is_some());
            seen.push((id.to_owned(), **s));
        });
        seen.sort();
        assert_eq!(seen, [("a".into(), 0), ("c".into(), 2)]);
        assert_eq!(sessions.clear(), 2);
        assert!(sessions.is_empty());
        let mut events = taken(&log);
        events.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            events,
            [
                ("a".into(), EvictionCause::Cleared),
                ("b".into(), EvictionCause::Removed),
                ("c".into(), EvictionCause::Cleared),
            ]
        );
    }
}
