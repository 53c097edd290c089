//! The session registry: one session object per live id, created exactly
//! once however many requests race for it, found without a lock, expired by
//! idle timeout and lifetime, bounded in number.
//!
//! ```
//! use latchfree::session::SessionRegistry;
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! struct Session { user: String }
//!
//! let sessions = SessionRegistry::<Session>::builder()
//!     .max_sessions(10_000)
//!     .idle_timeout(Duration::from_secs(30 * 60))
//!     .build()?;
//!
//! let a = sessions.get_or_create("abc123", || Session { user: "ada".into() })?;
//! let b = sessions.get_or_create("abc123", || unreachable!("created once"))?;
//! assert!(Arc::ptr_eq(&a, &b));
//! assert_eq!(sessions.get("abc123").unwrap().user, "ada");
//! assert!(sessions.get_or_create("", || Session { user: "x".into() }).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # How it works
//!
//! The registry is a thin, typed layer over the map shared with
//! [`crate::cache`]; its module docs (in `src/ttl/mod.rs`) describe the
//! algorithm: an `scc::HashIndex` read under an epoch guard (no lock, no
//! shared write), single-flight creation through a map of flights whose
//! waiters park on a condition variable, or, as futures (feature `async`),
//! are woken through their wakers (`crate::flight`), a sharded deadline
//! wheel swept in deadline order, S3-FIFO queues for the evicting policy,
//! and an exact capacity count.
//!
//! # Guarantees
//!
//! * **Exactly once.** For a given id, `init` runs once per live session;
//!   every concurrent caller gets the same `Arc`. A slow `init` blocks only
//!   callers of the same id, who sleep until it ends.
//! * **No self-deadlock.** An `init` that asks for its own id (directly,
//!   or through another id's `init`) gets [`SessionError::Recursive`] at
//!   once instead of waiting for itself.
//! * **Async twins** (feature `async`):
//!   [`get_or_create_async`](SessionRegistry::get_or_create_async) and
//!   [`try_get_or_create_async`](SessionRegistry::try_get_or_create_async)
//!   give the same guarantees to tasks, without parking a thread; each
//!   documents its cancel safety.
//! * **Failures are not cached.** An `init` that returns an error hands it
//!   to every caller waiting on it ([`SessionError::Failed`]) and leaves
//!   nothing behind; one that panics unwinds in its own caller, its waiters
//!   get [`SessionError::Panicked`], and the next call runs `init` anew.
//! * **Never expired.** A session is not returned at or after its deadline
//!   (the earlier of last access + idle timeout and creation + lifetime), as
//!   measured by the registry's time: exactly the clock when the clock is
//!   cheap ([`crate::clock::ManualClock`]) or `time_resolution` is zero,
//!   otherwise a copy refreshed every `time_resolution` (default 1 ms) by
//!   the process-wide ticker thread and by every write.
//! * **Bounded.** Never more than `max_sessions` sessions plus creations in
//!   progress, together. At the bound, expired sessions go first, then the
//!   [`CapacityPolicy`].
//! * **Listener exactly once.** Each session that leaves the registry is
//!   passed to the eviction listener once, with its [`EvictionCause`], on
//!   the thread that removed it and with no internal lock held.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::stats::Stats;
use crate::ttl::{Counters, InitError, Options, SweeperHandle, TtlMap};

pub use crate::ttl::{BuildError, EvictionCause, Sweep};

/// The default bound on an id's length, in bytes.
pub const DEFAULT_MAX_ID_LEN: usize = 256;

/// The default [`SessionRegistryBuilder::max_sessions`].
pub const DEFAULT_MAX_SESSIONS: usize = 100_000;

/// What to do when a new session would exceed `max_sessions` (after expired
/// sessions are evicted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CapacityPolicy {
    /// Refuse the new session with [`SessionError::Full`].
    #[default]
    Reject,
    /// Evict a session that is not being used: the S3-FIFO victim (sessions
    /// created and not used again leave first, then the least used; cause
    /// [`EvictionCause::Capacity`]). Named for the classic policy it
    /// stands in for.
    EvictLeastRecentlyUsed,
}

/// Why a session id was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidId {
    /// The id is empty.
    #[error("the session id is empty")]
    Empty,
    /// The id is longer than the configured bound.
    #[error(
        "the session id is {len} bytes long; the limit is {max} (SessionRegistryBuilder::max_id_len)"
    )]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The id holds a control or whitespace character.
    #[error("the session id has a control or whitespace character at byte {position}")]
    NotPrintable {
        /// Byte offset of the first such character.
        position: usize,
    },
}

/// Why `get_or_create` / `try_get_or_create` returned no session.
///
/// `E` is the initialiser's error type ([`Infallible`] for
/// `get_or_create`). The variants share their names with
/// [`LoadError`](crate::cache::LoadError)'s: `Full`, `Failed`,
/// `FailedElsewhere`, `Panicked`, `Recursive`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError<E = Infallible> {
    /// The id is not valid.
    #[error(transparent)]
    InvalidId(#[from] InvalidId),
    /// `max_sessions` is reached and the policy is
    /// [`CapacityPolicy::Reject`] (or nothing could be evicted: every slot
    /// is a creation in progress).
    #[error("the session registry is full ({max} sessions; SessionRegistryBuilder::max_sessions)")]
    Full {
        /// The bound.
        max: usize,
    },
    /// The initialiser returned this error: this call's own, or the one it
    /// waited on. Nothing was stored; the next call runs an initialiser again.
    #[error("the session initialiser failed: {0}")]
    Failed(Arc<E>),
    /// The initialiser this call waited on (another caller's, with another
    /// error type) failed. Nothing was stored.
    #[error("the session initialiser of a concurrent caller failed")]
    FailedElsewhere,
    /// The initialiser this call waited on panicked. Nothing was stored.
    #[error("the session initialiser of a concurrent caller panicked")]
    Panicked,
    /// The call came from inside the initialiser that is creating this id
    /// (on the same thread, or polled by the same task's initialiser future):
    /// it would wait for itself forever, so it returns at once instead.
    /// The initialiser that is running is not affected.
    #[error("get_or_create was called for an id from inside that id's own initialiser")]
    Recursive,
    /// Another caller's initialiser for this id did not finish within the
    /// registry's [`wait_timeout`](SessionRegistryBuilder::wait_timeout);
    /// it keeps running, and a later call gets its session.
    #[error(
        "the session initialiser of a concurrent caller did not finish within {after:?} (SessionRegistryBuilder::wait_timeout)"
    )]
    TimedOut {
        /// The timeout.
        after: Duration,
    },
}

impl<E> SessionError<E> {
    fn from_init(error: InitError<E>, max: usize) -> Self {
        match error {
            InitError::Capacity => SessionError::Full { max },
            InitError::Failed(e) => SessionError::Failed(e),
            InitError::FailedElsewhere => SessionError::FailedElsewhere,
            InitError::Panicked => SessionError::Panicked,
            InitError::Recursive => SessionError::Recursive,
            InitError::TimedOut(after) => SessionError::TimedOut { after },
        }
    }
}

/// The registry's counters, read at one moment (see
/// [`SessionRegistry::metrics`]). Each is also in the [`Stats`] given to
/// the builder, as `PREFIX_hits_total` and so on (prefix `session` unless
/// [`SessionRegistryBuilder::metrics_prefix`] says otherwise), with
/// `PREFIX_live` as a gauge.
///
/// The fields are named as [`CacheMetrics`](crate::cache::CacheMetrics)'s:
/// an initialiser is an `init` in both, and each way out of the map is
/// named for its [`EvictionCause`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionMetrics {
    /// Lookups that found a live session (`get`, and `get_or_create` hits).
    pub hits: u64,
    /// Lookups that found none (every creation starts with one).
    pub misses: u64,
    /// Initialisers run.
    pub inits: u64,
    /// Callers that waited for another caller's initialiser.
    pub coalesced: u64,
    /// Initialisers that returned an error.
    pub init_errors: u64,
    /// Creations refused at the capacity bound.
    pub rejected: u64,
    /// Sessions that left because they expired ([`EvictionCause::Expired`]).
    pub expired: u64,
    /// Sessions removed by `remove` ([`EvictionCause::Removed`]).
    pub removed: u64,
    /// Sessions evicted to make room ([`EvictionCause::Capacity`]).
    pub evicted: u64,
    /// Sessions removed by `clear` ([`EvictionCause::Cleared`]).
    pub cleared: u64,
    /// Sessions in the registry now.
    pub entries: u64,
}

type SessionListener<S> = Box<dyn Fn(&str, Arc<S>, EvictionCause) + Send + Sync>;

/// Configures a [`SessionRegistry`].
#[must_use]
pub struct SessionRegistryBuilder<S> {
    max_sessions: usize,
    policy: CapacityPolicy,
    idle_timeout: Option<Duration>,
    max_lifetime: Option<Duration>,
    max_id_len: usize,
    clock: Arc<dyn Clock>,
    sweep: Sweep,
    resolution: Duration,
    listener: Option<SessionListener<S>>,
    stats: Option<Stats>,
    prefix: String,
    wait_timeout: Option<Duration>,
}

impl<S> fmt::Debug for SessionRegistryBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionRegistryBuilder")
            .field("max_sessions", &self.max_sessions)
            .field("policy", &self.policy)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("max_id_len", &self.max_id_len)
            .field("sweep", &self.sweep)
            .field("resolution", &self.resolution)
            .finish_non_exhaustive()
    }
}

impl<S: Send + Sync + 'static> Default for SessionRegistryBuilder<S> {
    fn default() -> Self {
        Self {
            max_sessions: DEFAULT_MAX_SESSIONS,
            policy: CapacityPolicy::Reject,
            idle_timeout: None,
            max_lifetime: None,
            max_id_len: DEFAULT_MAX_ID_LEN,
            clock: Arc::new(SystemClock),
            sweep: Sweep::default(),
            resolution: Duration::from_millis(1),
            listener: None,
            stats: None,
            prefix: "session".into(),
            wait_timeout: None,
        }
    }
}

impl<S: Send + Sync + 'static> SessionRegistryBuilder<S> {
    /// The most sessions held at once (default [`DEFAULT_MAX_SESSIONS`]);
    /// creations in progress count too.
    pub fn max_sessions(mut self, max: usize) -> Self {
        self.max_sessions = max;
        self
    }

    /// What happens at `max_sessions` (default [`CapacityPolicy::Reject`]).
    pub fn capacity_policy(mut self, policy: CapacityPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// A session expires this long after its last access (default: never).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// A session expires this long after its creation (default: never).
    pub fn max_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_lifetime = Some(lifetime);
        self
    }

    /// The longest id accepted, in bytes (default [`DEFAULT_MAX_ID_LEN`]).
    pub fn max_id_len(mut self, max: usize) -> Self {
        self.max_id_len = max;
        self
    }

    /// The clock deadlines are measured with (default [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// When expired sessions are swept out (default: a background thread
    /// every 100 ms). They are never returned either way.
    pub fn sweep(mut self, sweep: Sweep) -> Self {
        self.sweep = sweep;
        self
    }

    /// How stale the time used by reads may be, with a clock that is not
    /// cheap and a background sweeper (default 1 ms; zero reads the clock on
    /// every check, at about 25 ns each). See the module's guarantees.
    pub fn time_resolution(mut self, resolution: Duration) -> Self {
        self.resolution = resolution;
        self
    }

    /// Called once for every session that leaves the registry, with its id
    /// and cause, on the thread that removed it, with no internal lock held.
    pub fn eviction_listener(
        mut self,
        listener: impl Fn(&str, Arc<S>, EvictionCause) + Send + Sync + 'static,
    ) -> Self {
        self.listener = Some(Box::new(listener));
        self
    }

    /// Registers the metrics in `stats` (default: a private [`Stats`]).
    pub fn stats(mut self, stats: &Stats) -> Self {
        self.stats = Some(stats.clone());
        self
    }

    /// The prefix of the metric names (default `session`).
    pub fn metrics_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a blocking caller waits for another caller's initialiser
    /// of the same id before it gives up with [`SessionError::TimedOut`]
    /// (default: as long as it takes). The initialiser is not affected: it
    /// keeps running and its session is stored. A stuck initialiser then
    /// holds only its own caller. Async callers bound their wait with their
    /// runtime's timeout instead (`tokio::time::timeout`): dropping a
    /// waiting [`get_or_create_async`](SessionRegistry::get_or_create_async)
    /// is cancel safe.
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = Some(timeout);
        self
    }

    /// Builds the registry (and starts its sweeper thread, if configured).
    pub fn build(self) -> Result<SessionRegistry<S>, BuildError> {
        let stats = self.stats.unwrap_or_default();
        let counters = Counters::register(&stats, &self.prefix, &[])?;
        let listener = self.listener.map(|l| {
            Box::new(move |id: &Arc<str>, s: Arc<S>, cause: EvictionCause| l(id, s, cause))
                as crate::ttl::Listener<Arc<str>, Arc<S>>
        });
        let options = Options {
            max_entries: self.max_sessions,
            lifetime: self.max_lifetime,
            idle: self.idle_timeout,
            evict_at_capacity: self.policy == CapacityPolicy::EvictLeastRecentlyUsed,
            sweep: self.sweep,
            resolution: self.resolution,
            clock: self.clock,
            listener,
            counters,
            journal: None,
        };
        options.validate("max_lifetime", "idle_timeout")?;
        let (map, sweeper) = TtlMap::start(options)?;
        Ok(SessionRegistry {
            map,
            _sweeper: sweeper,
            max_id_len: self.max_id_len,
            wait_timeout: self.wait_timeout,
        })
    }
}

/// Sessions by id: get-or-create exactly once, lock-free lookups, expiry,
/// a capacity bound and eviction events. See the [module docs](self).
///
/// Share it by reference or in an `Arc`; dropping it stops its sweeper.
pub struct SessionRegistry<S> {
    map: Arc<TtlMap<Arc<str>, Arc<S>>>,
    _sweeper: Option<SweeperHandle>,
    max_id_len: usize,
    wait_timeout: Option<Duration>,
}

impl<S> fmt::Debug for SessionRegistry<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionRegistry")
            .field("map", &self.map)
            .finish_non_exhaustive()
    }
}

impl<S: Send + Sync + 'static> Default for SessionRegistry<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Send + Sync + 'static> SessionRegistry<S> {
    /// A registry with the default configuration (see the builder).
    ///
    /// # Panics
    ///
    /// Never: the defaults pass the builder's checks, and the metrics are
    /// registered in a [`Stats`] of the registry's own, which holds no other
    /// name (so registration cannot fail). A registry that shares a `Stats`
    /// is built with [`builder`](Self::builder), which returns the error.
    pub fn new() -> Self {
        Self::builder()
            .build()
            .expect("the default configuration is valid and its Stats is private")
    }

    /// A builder.
    pub fn builder() -> SessionRegistryBuilder<S> {
        SessionRegistryBuilder::default()
    }

    /// Checks `id` against the registry's rules: non-empty, at most
    /// `max_id_len` bytes, no control or whitespace characters.
    pub fn validate_id(&self, id: &str) -> Result<(), InvalidId> {
        validate_id(id, self.max_id_len)
    }

    /// The live session under `id`, if any. Lock-free; writes at most the
    /// session's relaxed last-access stamp. An invalid id is simply absent.
    #[inline]
    pub fn get(&self, id: &str) -> Option<Arc<S>> {
        self.map.get(id)
    }

    /// Calls `f` on the live session under `id` without cloning its `Arc`
    /// (no reference-count write). `f` runs inside an epoch guard: keep it
    /// short and do not call the registry from it.
    #[inline]
    pub fn with<R>(&self, id: &str, f: impl FnOnce(&S) -> R) -> Option<R> {
        self.map.read(id, |s| f(s))
    }

    /// The live session under `id`, or a new one from `init`, which runs at
    /// most once per live id however many callers race (the others wait
    /// for it, sleeping).
    pub fn get_or_create(
        &self,
        id: &str,
        init: impl FnOnce() -> S,
    ) -> Result<Arc<S>, SessionError> {
        self.try_get_or_create(id, || Ok::<S, Infallible>(init()))
    }

    /// As [`get_or_create`](Self::get_or_create) with a fallible `init`:
    /// its error reaches this caller and every caller waiting on it, and
    /// nothing is stored.
    pub fn try_get_or_create<E: Send + Sync + 'static>(
        &self,
        id: &str,
        init: impl FnOnce() -> Result<S, E>,
    ) -> Result<Arc<S>, SessionError<E>> {
        validate_id(id, self.max_id_len)?;
        self.map
            .get_or_init(
                id,
                || Arc::from(id),
                None,
                self.wait_timeout,
                || init().map(Arc::new),
            )
            .map_err(|e| SessionError::from_init(e, self.map.max_entries()))
    }

    /// As [`get_or_create`](Self::get_or_create), for async callers: `init`
    /// is a future, and a caller that joins another caller's creation
    /// awaits it instead of parking its thread. The same flight serves
    /// blocking and async callers of one id at once.
    ///
    /// A hit completes on the first poll, with no lock and no waker.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future (`select!`, a timeout, an aborted task) never
    /// leaves a session half-created or a caller stranded:
    ///
    /// * while it **waits** for another caller's `init`: its waker is
    ///   removed and nothing else changes;
    /// * while it **leads** (its `init` is running): `init` is dropped, the
    ///   id's capacity reservation is given back, and every caller waiting
    ///   on it starts over: one of them runs its own `init` (the waiters
    ///   never see an error for it), and a later call leads a new creation.
    ///
    /// So it is cancel safe in tokio's sense: dropping it and calling again
    /// creates the session at most once, but an `init` dropped mid-way may
    /// have done part of its work (its own side effects are its own).
    ///
    /// # Re-entry
    ///
    /// Called for `id` from inside `id`'s own `init` (its future, polled by
    /// this call's leader) it returns [`SessionError::Recursive`] at once.
    #[cfg(feature = "async")]
    pub async fn get_or_create_async(
        &self,
        id: &str,
        init: impl Future<Output = S>,
    ) -> Result<Arc<S>, SessionError> {
        self.try_get_or_create_async(id, async { Ok::<S, Infallible>(init.await) })
            .await
    }

    /// As [`get_or_create_async`](Self::get_or_create_async) with a fallible
    /// `init`, as [`try_get_or_create`](Self::try_get_or_create). Cancel
    /// safe in the same way.
    #[cfg(feature = "async")]
    pub async fn try_get_or_create_async<E: Send + Sync + 'static>(
        &self,
        id: &str,
        init: impl Future<Output = Result<S, E>>,
    ) -> Result<Arc<S>, SessionError<E>> {
        validate_id(id, self.max_id_len)?;
        self.map
            .get_or_init_async(id, || Arc::from(id), None, async {
                init.await.map(Arc::new)
            })
            .await
            .map_err(|e| SessionError::from_init(e, self.map.max_entries()))
    }

    /// Removes the session under `id`; returns it if it was live. The
    /// listener gets it with [`EvictionCause::Removed`] (or `Expired`).
    pub fn remove(&self, id: &str) -> Option<Arc<S>> {
        self.map.remove(id)
    }

    /// Whether a live session is under `id` (no stamp, no metric).
    pub fn contains(&self, id: &str) -> bool {
        self.map.contains(id)
    }

    /// Sessions held (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The capacity bound.
    pub fn max_sessions(&self) -> usize {
        self.map.max_entries()
    }

    /// Removes every session ([`EvictionCause::Cleared`]); returns how many.
    /// Creations in progress finish and are kept.
    pub fn clear(&self) -> usize {
        self.map.clear()
    }

    /// Calls `f` on every live session. Safe during any concurrent
    /// operation (including sweeps); weakly consistent: sessions added or
    /// removed meanwhile may or may not be seen.
    pub fn for_each(&self, mut f: impl FnMut(&str, &Arc<S>)) {
        self.map.for_each(|id, s| f(id, s));
    }

    /// Evicts every expired session now; returns how many.
    pub fn sweep(&self) -> usize {
        self.map.sweep()
    }

    /// The counters, read now.
    pub fn metrics(&self) -> SessionMetrics {
        let c = &self.map.counters;
        let ev = |cause: EvictionCause| c.evictions[cause as usize].get();
        SessionMetrics {
            hits: c.hits.get(),
            misses: c.misses.get(),
            inits: c.inits.get(),
            coalesced: c.coalesced.get(),
            init_errors: c.init_errors.get(),
            rejected: c.rejected.get(),
            expired: ev(EvictionCause::Expired),
            removed: ev(EvictionCause::Removed),
            evicted: ev(EvictionCause::Capacity),
            cleared: ev(EvictionCause::Cleared),
            entries: self.len() as u64,
        }
    }
}

pub(crate) fn validate_id(id: &str, max: usize) -> Result<(), InvalidId> {
    if id.is_empty() {
        return Err(InvalidId::Empty);
    }
    if id.len() > max {
        return Err(InvalidId::TooLong { len: id.len(), max });
    }
    if let Some((position, _)) = id
        .char_indices()
        .find(|(_, c)| c.is_control() || c.is_whitespace())
    {
        return Err(InvalidId::NotPrintable { position });
    }
    Ok(())
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<SessionRegistry<String>>();
    send_sync::<SessionError<std::io::Error>>();
};
