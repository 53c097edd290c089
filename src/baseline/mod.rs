//! The locked twins: the classic designs, built carefully with `std` locks.
//!
//! Each latchfree component has a twin here with the same job and the same
//! guarantees, written the way a careful team writes it without this crate:
//! one `Mutex` or `RwLock` around a `HashMap`, double-checked locking for
//! get-or-create, one lock around the log file. They are correct, and they are
//! the baseline of every benchmark (`impl = "locked"`).

mod audit;
mod cache;
mod persist;
mod session;
mod shared;
mod stats;
mod timed;

pub use audit::LockedAuditLog;
pub use cache::{LockedTtlCache, LockedTtlCacheBuilder};
pub use persist::{LockedPersistentCache, LockedPersistentCacheBuilder};
pub use session::{LockedSessionRegistry, LockedSessionRegistryBuilder};
pub use shared::LockedShared;
pub use stats::LockedStats;
