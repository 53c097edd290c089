//! What the two map twins ([`LockedSessionRegistry`] and [`LockedTtlCache`])
//! share: an entry with its deadlines, the expiry test, and the scans a
//! classic design runs under its lock (purge the expired, find the least
//! recently used).
//!
//! Times are nanoseconds since the Unix epoch, read from the injected
//! [`Clock`] once per call. An entry expires **at** its deadline: it is live
//! while `now < deadline` and never returned once `now >= deadline`.
//!
//! [`LockedSessionRegistry`]: super::LockedSessionRegistry
//! [`LockedTtlCache`]: super::LockedTtlCache

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::clock::Clock;
use crate::ttl::BuildError;

/// `clock`'s time in nanoseconds since the epoch (0 before it, saturating
/// after year 2554).
pub(super) fn now_nanos(clock: &dyn Clock) -> u64 {
    clock
        .now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `d` in nanoseconds, saturating.
pub(super) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// How long entries live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Lifetimes {
    /// From creation (or insertion); `None`: no absolute limit.
    pub(super) absolute: Option<Duration>,
    /// From the last access; `None`: no idle limit.
    pub(super) idle: Option<Duration>,
}

impl Lifetimes {
    /// The builders' checks, with the same errors as latchfree's: a zero
    /// bound or a zero timeout (named as the builder method that set it).
    pub(super) fn validate(
        &self,
        max: usize,
        absolute_name: &'static str,
        idle_name: &'static str,
    ) -> Result<(), BuildError> {
        if max == 0 {
            return Err(BuildError::ZeroCapacity);
        }
        if self.absolute.is_some_and(|d| d.is_zero()) {
            return Err(BuildError::ZeroTimeout(absolute_name));
        }
        if self.idle.is_some_and(|d| d.is_zero()) {
            return Err(BuildError::ZeroTimeout(idle_name));
        }
        Ok(())
    }
}

/// One value with its deadlines.
#[derive(Debug)]
pub(super) struct Timed<V> {
    pub(super) value: V,
    /// Absolute deadline in epoch nanoseconds (`u64::MAX`: none).
    deadline: u64,
    /// Idle limit in nanoseconds (`u64::MAX`: none).
    idle: u64,
    /// Last access in epoch nanoseconds. Relaxed: a hint read under the map
    /// lock by expiry and LRU; readers holding only a read lock store it, and
    /// the lock's release/acquire orders it before any writer's scan.
    last_access: AtomicU64,
}

impl<V> Timed<V> {
    /// `value`, created at `now`, living per `lifetimes` (`absolute`
    /// overridden by `ttl` where given).
    pub(super) fn new(value: V, now: u64, lifetimes: Lifetimes, ttl: Option<Duration>) -> Self {
        let deadline = ttl
            .or(lifetimes.absolute)
            .map_or(u64::MAX, |d| now.saturating_add(nanos(d)));
        Self {
            value,
            deadline,
            idle: lifetimes.idle.map_or(u64::MAX, nanos),
            last_access: AtomicU64::new(now),
        }
    }

    /// Whether the entry is dead at `now`: past its absolute deadline, or
    /// idle for its idle limit or longer.
    pub(super) fn is_expired(&self, now: u64) -> bool {
        now >= self.deadline
            || now
                >= self
                    .last_access
                    .load(Ordering::Relaxed)
                    .saturating_add(self.idle)
    }

    /// Records an access at `now` (never moves the stamp backwards).
    pub(super) fn touch(&self, now: u64) {
        self.last_access.fetch_max(now, Ordering::Relaxed);
    }

    fn last_access(&self) -> u64 {
        self.last_access.load(Ordering::Relaxed)
    }
}

/// Removes every entry expired at `now` (a full scan, under the caller's
/// lock) and returns them.
pub(super) fn drain_expired<K: Eq + Hash + Clone, V>(
    map: &mut HashMap<K, Timed<V>>,
    now: u64,
) -> Vec<(K, V)> {
    let dead: Vec<K> = map
        .iter()
        .filter(|(_, e)| e.is_expired(now))
        .map(|(k, _)| k.clone())
        .collect();
    dead.into_iter()
        .filter_map(|k| map.remove(&k).map(|e| (k, e.value)))
        .collect()
}

/// Removes the least recently used entry (a full scan, under the caller's
/// lock) and returns it; `None` when the map is empty.
pub(super) fn evict_lru<K: Eq + Hash + Clone, V>(map: &mut HashMap<K, Timed<V>>) -> Option<(K, V)> {
    let victim = map
        .iter()
        .min_by_key(|(_, e)| e.last_access())
        .map(|(k, _)| k.clone())?;
    map.remove(&victim).map(|e| (victim, e.value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_at_the_absolute_deadline_or_after_the_idle_limit() {
        let lifetimes = Lifetimes {
            absolute: Some(Duration::from_nanos(100)),
            idle: Some(Duration::from_nanos(30)),
        };
        let e = Timed::new((), 1_000, lifetimes, None);
        assert!(!e.is_expired(1_029));
        assert!(e.is_expired(1_030));
        e.touch(1_020);
        e.touch(1_010); // never backwards
        assert!(!e.is_expired(1_049));
        assert!(e.is_expired(1_050));
        e.touch(1_090);
        assert!(!e.is_expired(1_099));
        assert!(e.is_expired(1_100), "the absolute deadline wins");
        let custom = Timed::new((), 0, lifetimes, Some(Duration::from_nanos(10)));
        custom.touch(9);
        assert!(
            custom.is_expired(10),
            "a per-entry ttl replaces the absolute one"
        );
        let forever = Timed::new((), 5, Lifetimes::default(), None);
        assert!(!forever.is_expired(u64::MAX - 1));
    }

    #[test]
    fn scans_purge_the_expired_and_pick_the_least_recently_used() {
        let ttl = Lifetimes {
            absolute: Some(Duration::from_nanos(50)),
            idle: None,
        };
        let mut map = HashMap::new();
        map.insert("old", Timed::new(1, 0, ttl, None));
        map.insert("mid", Timed::new(2, 20, ttl, None));
        map.insert("new", Timed::new(3, 40, ttl, None));
        map["mid"].touch(45);
        assert_eq!(drain_expired(&mut map, 50), vec![("old", 1)]);
        assert_eq!(evict_lru(&mut map), Some(("new", 3)));
        assert_eq!(evict_lru(&mut map), Some(("mid", 2)));
        assert_eq!(evict_lru(&mut map), None);
    }
}
