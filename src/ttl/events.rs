//! What a map tells the world about its entries: the cause of an eviction,
//! the listener that hears it, and the journal that sees every change of a
//! key in order.

use std::fmt;

/// Why an entry left the map: the cause given to an eviction listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum EvictionCause {
    /// Its deadline passed (idle timeout, lifetime or per-entry TTL).
    Expired,
    /// It was removed explicitly (`remove`, `invalidate`).
    Removed,
    /// It was evicted to make room at the capacity bound.
    Capacity,
    /// It was removed by `clear` / `invalidate_all`.
    Cleared,
    /// A newer value was inserted under its key (caches only).
    Replaced,
}

impl EvictionCause {
    /// Every cause, in declaration order.
    pub const ALL: [EvictionCause; 5] = [
        EvictionCause::Expired,
        EvictionCause::Removed,
        EvictionCause::Capacity,
        EvictionCause::Cleared,
        EvictionCause::Replaced,
    ];

    /// The lower-case name used in metric names: `expired`, `removed`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            EvictionCause::Expired => "expired",
            EvictionCause::Removed => "removed",
            EvictionCause::Capacity => "capacity",
            EvictionCause::Cleared => "cleared",
            EvictionCause::Replaced => "replaced",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for EvictionCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The listener's type.
pub(crate) type Listener<K, V> = Box<dyn Fn(&K, V, EvictionCause) + Send + Sync>;

/// Told of every change to a key, **while the key's bucket lock in the
/// index is held**: the calls for one key come in exactly the order of the
/// changes they describe. Implementations must be short and must not call
/// the map (the persistent tier sends a message to its writer thread).
pub(crate) trait Journal<K, V>: Send + Sync {
    /// `key` now holds `value` until `deadline` (nanoseconds of the clock,
    /// [`NO_DEADLINE`](super::entry::NO_DEADLINE) for none).
    fn put(&self, key: &K, value: &V, deadline: u64);
    /// `key` left the map for `cause` (`Removed` also when it held nothing:
    /// see [`TtlMap::remove_key`](super::TtlMap::remove_key)).
    fn remove(&self, key: &K, cause: EvictionCause);
}
