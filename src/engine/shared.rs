//! The engine's named shared instances: [`Engine::shared`](super::Engine::shared)
//! hands out [`EngineShared`] handles to a [`Shared`] (latchfree engine) or a
//! [`LockedShared`] (locked engine), one instance per name.
//!
//! The name map is a cold path (one `Mutex<HashMap>` taken when a handle is
//! requested); a handle holds its instance directly and never touches it.

use std::any::{Any, type_name};
use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError};

use super::{EngineError, Kind};
#[cfg(feature = "baseline")]
use crate::baseline::LockedShared;
use crate::shared::{Shared, SharedGuard};
use crate::stats::{StatsError, validate_name};

/// The label that tells the metrics of one shared instance from another's:
/// `shared_inits_total{shared="NAME"}`.
const INSTANCE_LABEL: &str = "shared";

/// Checks that `name` is a metric name, on either kind (the locked engine
/// registers no metric, but names mean the same on both).
fn validate(name: &str) -> Result<(), StatsError> {
    validate_name(name)
}

/// One registered instance: an `Arc<Shared<T>>` or `Arc<LockedShared<T>>`,
/// and the name of its `T` for the error of a mismatch.
struct Entry {
    instance: Arc<dyn Any + Send + Sync>,
    type_name: &'static str,
}

/// The instances of one engine, by name.
#[derive(Default)]
pub(super) struct Instances {
    by_name: Mutex<HashMap<String, Entry>>,
}

impl Instances {
    /// The instance `name` of type `T`, created empty on first request.
    pub(super) fn get<T: Send + Sync + 'static>(
        &self,
        kind: &Kind,
        name: &str,
    ) -> Result<EngineShared<T>, EngineError> {
        let inner = match kind {
            Kind::Latchfree(c) => Inner::Latchfree(self.get_or_insert::<T, _>(name, || {
                Shared::builder()
                    .prefix("shared")
                    .labels([(INSTANCE_LABEL, name)])
                    .stats(c.stats())
                    .build()
            })?),
            #[cfg(feature = "baseline")]
            Kind::Locked(_) => {
                Inner::Locked(self.get_or_insert::<T, _>(name, || Ok(LockedShared::new()))?)
            }
        };
        Ok(EngineShared { inner })
    }

    fn get_or_insert<T: 'static, S: Send + Sync + 'static>(
        &self,
        name: &str,
        create: impl FnOnce() -> Result<S, StatsError>,
    ) -> Result<Arc<S>, EngineError> {
        // Entries are inserted whole: a panic cannot leave the map
        // half-updated.
        let mut map = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = map.get(name) {
            return Arc::clone(&entry.instance).downcast::<S>().map_err(|_| {
                EngineError::SharedTypeMismatch {
                    name: name.to_owned(),
                    existing: entry.type_name,
                    requested: type_name::<T>(),
                }
            });
        }
        let metrics = |source| EngineError::SharedMetrics {
            name: name.to_owned(),
            source,
        };
        validate(name).map_err(metrics)?;
        let instance = Arc::new(create().map_err(metrics)?);
        map.insert(
            name.to_owned(),
            Entry {
                instance: Arc::clone(&instance) as Arc<dyn Any + Send + Sync>,
                type_name: type_name::<T>(),
            },
        );
        Ok(instance)
    }
}

enum Inner<T> {
    Latchfree(Arc<Shared<T>>),
    #[cfg(feature = "baseline")]
    Locked(Arc<LockedShared<T>>),
}

/// A handle to one of an engine's named shared instances (see
/// [`Engine::shared`](super::Engine::shared)): a [`Shared<T>`] on the
/// latchfree engine, a [`LockedShared<T>`] on the locked one, with their
/// common API. Cloning it is one reference-count increment; every clone
/// reaches the same instance.
///
/// Each operation is one `match` on the kind and then the instance's own
/// operation: a [`load`](Self::load) on the latchfree engine is
/// [`Shared::load`] (lock-free, no shared reference-count write), on the
/// locked engine [`LockedShared::load`] (read lock, `Arc` clone).
///
/// The instance lives as long as its engine or any handle of it; its
/// current value is dropped with the last of those (or when it is replaced
/// or reset and its last reader lets go). [`Engine::shutdown`](super::Engine::shutdown)
/// does not touch it.
pub struct EngineShared<T> {
    inner: Inner<T>,
}

impl<T> Clone for EngineShared<T> {
    fn clone(&self) -> Self {
        let inner = match &self.inner {
            Inner::Latchfree(s) => Inner::Latchfree(Arc::clone(s)),
            #[cfg(feature = "baseline")]
            Inner::Locked(s) => Inner::Locked(Arc::clone(s)),
        };
        Self { inner }
    }
}

impl<T> fmt::Debug for EngineShared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineShared")
            .field("latchfree", &matches!(self.inner, Inner::Latchfree(_)))
            .field("set", &self.is_set())
            .finish()
    }
}

impl<T> EngineShared<T> {
    /// The current value, or `None` when empty.
    ///
    /// A guard rather than an `Arc`: on the latchfree engine it wraps a
    /// [`SharedGuard`], so a read costs no shared reference-count write;
    /// on the locked engine it holds the `Arc` the read lock handed out.
    /// Hold it for one request; for a long hold take
    /// [`load_arc`](Self::load_arc) or [`EngineSharedGuard::into_arc`].
    #[inline]
    pub fn load(&self) -> Option<EngineSharedGuard<T>> {
        match &self.inner {
            Inner::Latchfree(s) => s.load().map(EngineSharedGuard::latchfree),
            #[cfg(feature = "baseline")]
            Inner::Locked(s) => s.load().map(EngineSharedGuard::locked),
        }
    }

    /// The current value as an `Arc`, for holding long.
    pub fn load_arc(&self) -> Option<Arc<T>> {
        match &self.inner {
            Inner::Latchfree(s) => s.load_arc(),
            #[cfg(feature = "baseline")]
            Inner::Locked(s) => s.load(),
        }
    }

    /// Whether a value is set (at this instant).
    pub fn is_set(&self) -> bool {
        match &self.inner {
            Inner::Latchfree(s) => s.is_set(),
            #[cfg(feature = "baseline")]
            Inner::Locked(s) => s.with(|v| v.is_some()),
        }
    }

    /// The current value, or the value `init` returns when empty; one
    /// initialiser runs however many callers race (see
    /// [`Shared::get_or_init`] and [`LockedShared::get_or_init`]).
    pub fn get_or_init(&self, init: impl FnOnce() -> T) -> EngineSharedGuard<T> {
        match &self.inner {
            Inner::Latchfree(s) => EngineSharedGuard::latchfree(s.get_or_init(init)),
            #[cfg(feature = "baseline")]
            Inner::Locked(s) => EngineSharedGuard::locked(s.get_or_init(init)),
        }
    }

    /// As [`get_or_init`](Self::get_or_init), with an initialiser that may
    /// fail.
    ///
    /// # Errors
    ///
    /// `init`'s error; nothing is installed and the next caller runs its
    /// own initialiser.
    pub fn get_or_try_init<E>(
        &self,
        init: impl FnOnce() -> Result<T, E>,
    ) -> Result<EngineSharedGuard<T>, E> {
        match &self.inner {
            Inner::Latchfree(s) => s.get_or_try_init(init).map(EngineSharedGuard::latchfree),
            #[cfg(feature = "baseline")]
            Inner::Locked(s) => s.get_or_try_init(init).map(EngineSharedGuard::locked),
        }
    }

    /// Replaces the value with `value`; the old one is dropped when its
    /// last reader lets go.
    pub fn store(&self, value: T) {
        drop(self.swap(value));
    }

    /// Replaces the value with `value` and returns the old one.
    pub fn swap(&self, value: T) -> Option<Arc<T>> {
        match &self.inner {
            Inner::Latchfree(s) => s.swap(value),
            #[cfg(feature = "baseline")]
            Inner::Locked(s) => s.swap(Some(value)),
        }
    }

    /// Empties the instance and returns the value it held.
    pub fn take(&self) -> Option<Arc<T>> {
        match &self.inner {
            Inner::Latchfree(s) => s.take(),
            #[cfg(feature = "baseline")]
            Inner::Locked(s) => s.take(),
        }
    }

    /// Empties the instance; its value is dropped when its last reader
    /// lets go. The next [`get_or_init`](Self::get_or_init) initialises it
    /// again.
    pub fn reset(&self) {
        drop(self.take());
    }
}

enum GuardInner<T> {
    Latchfree(SharedGuard<T>),
    #[cfg(feature = "baseline")]
    Locked(Arc<T>),
}

/// A read of an [`EngineShared`]: dereferences to `T` and keeps that value
/// alive (even if it is replaced or reset meanwhile) until dropped.
pub struct EngineSharedGuard<T> {
    inner: GuardInner<T>,
}

impl<T> EngineSharedGuard<T> {
    fn latchfree(guard: SharedGuard<T>) -> Self {
        Self {
            inner: GuardInner::Latchfree(guard),
        }
    }

    #[cfg(feature = "baseline")]
    fn locked(arc: Arc<T>) -> Self {
        Self {
            inner: GuardInner::Locked(arc),
        }
    }

    /// The value as an `Arc`, for holding long.
    pub fn into_arc(self) -> Arc<T> {
        match self.inner {
            GuardInner::Latchfree(g) => g.into_arc(),
            #[cfg(feature = "baseline")]
            GuardInner::Locked(a) => a,
        }
    }

    /// Whether `a` and `b` are reads of the same value.
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        std::ptr::eq(&**a, &**b)
    }
}

impl<T> Deref for EngineSharedGuard<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        match &self.inner {
            GuardInner::Latchfree(g) => g,
            #[cfg(feature = "baseline")]
            GuardInner::Locked(a) => a,
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for EngineSharedGuard<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

const _: () = {
    const fn send_sync<X: Send + Sync>() {}
    send_sync::<EngineShared<Vec<u8>>>();
    send_sync::<EngineSharedGuard<Vec<u8>>>();
};
