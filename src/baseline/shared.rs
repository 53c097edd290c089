//! [`LockedShared`]: a shared instance in one `RwLock<Option<Arc<T>>>`.

use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The classic swappable shared instance: an `Arc` behind a read-write lock,
/// initialised with double-checked locking.
///
/// Correct: a reader clones the `Arc` under the read lock, so a value
/// replaced or reset meanwhile lives until that reader drops its clone, and
/// the initialiser runs once (the check is repeated under the write lock and
/// the initialiser runs while it is held). But every read takes the lock and
/// bumps the shared reference count, readers queue behind a writer, and a
/// slow initialiser blocks every reader until it finishes.
///
/// ```
/// use latchfree::baseline::LockedShared;
/// let config: LockedShared<String> = LockedShared::new();
/// assert_eq!(*config.get_or_init(|| "v1".into()), "v1");
/// let old = config.swap(Some("v2".into()));
/// assert_eq!(old.as_deref().map(String::as_str), Some("v1"));
/// assert_eq!(config.load().as_deref().map(String::as_str), Some("v2"));
/// ```
#[derive(Debug)]
pub struct LockedShared<T> {
    value: RwLock<Option<Arc<T>>>,
    /// Serialises initialisers that fail, so failures are retried one at a
    /// time like the successful path.
    init: Mutex<()>,
}

impl<T> Default for LockedShared<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> LockedShared<T> {
    /// An empty instance.
    pub fn new() -> Self {
        Self {
            value: RwLock::new(None),
            init: Mutex::new(()),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Option<Arc<T>>> {
        // Writers only assign whole `Option<Arc<T>>`s: a panic cannot leave
        // a half-written value.
        self.value.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Option<Arc<T>>> {
        self.value.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current value (a clone of the `Arc`, taken under the read lock).
    pub fn load(&self) -> Option<Arc<T>> {
        self.read().clone()
    }

    /// Calls `f` on the current value under the read lock (no `Arc` clone;
    /// writers wait until `f` returns).
    pub fn with<R>(&self, f: impl FnOnce(Option<&T>) -> R) -> R {
        f(self.read().as_deref())
    }

    /// The current value, or `init`'s, installed under the write lock.
    pub fn get_or_init(&self, init: impl FnOnce() -> T) -> Arc<T> {
        match self.get_or_try_init(|| Ok::<T, std::convert::Infallible>(init())) {
            Ok(v) => v,
            Err(never) => match never {},
        }
    }

    /// As [`get_or_init`](Self::get_or_init), with a fallible initialiser.
    ///
    /// # Errors
    ///
    /// `init`'s error; nothing is cached.
    pub fn get_or_try_init<E>(&self, init: impl FnOnce() -> Result<T, E>) -> Result<Arc<T>, E> {
        if let Some(v) = self.load() {
            return Ok(v);
        }
        let _init = self.init.lock().unwrap_or_else(PoisonError::into_inner);
        let mut slot = self.write();
        if let Some(v) = &*slot {
            return Ok(Arc::clone(v));
        }
        let v = Arc::new(init()?);
        *slot = Some(Arc::clone(&v));
        Ok(v)
    }

    /// Replaces the value and returns the old one.
    pub fn swap(&self, value: Option<T>) -> Option<Arc<T>> {
        let value = value.map(Arc::new);
        std::mem::replace(&mut *self.write(), value)
    }

    /// Replaces the value; the old one is freed when its last reader drops it.
    pub fn store(&self, value: T) {
        drop(self.swap(Some(value)));
    }

    /// Empties the instance and returns the old value.
    pub fn take(&self) -> Option<Arc<T>> {
        self.write().take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn init_runs_once_among_racing_callers() {
        let shared = LockedShared::new();
        let calls = AtomicUsize::new(0);
        let got: Vec<Arc<u32>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        shared.get_or_init(|| {
                            calls.fetch_add(1, Ordering::Relaxed);
                            9
                        })
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        assert!(got.iter().all(|v| Arc::ptr_eq(v, &got[0])));
        assert_eq!(shared.take().as_deref(), Some(&9));
        assert_eq!(shared.get_or_try_init(|| Err::<u32, _>(1)).err(), Some(1));
        assert!(shared.with(|v| v.is_none()));
    }
}
