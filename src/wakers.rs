//! The wakers of the futures waiting on one event (a flight's end, an audit
//! level), kept under the lock their event is published under.
//!
//! A waiting future registers its waker under that lock after it has
//! checked, under the same lock, that the event has not happened; the
//! publisher changes the state under the lock and takes every waker before
//! it releases it, then wakes them with no lock held. So a registration
//! either sees the event or is taken by its publication: no wake-up is lost
//! (the loom models in `loom_tests/flight.rs` check it).
//!
//! Each registration has an id, so a future polled again replaces its own
//! waker (only if it would not wake the same task) and a future dropped
//! while registered removes its waker: a cancelled waiter leaks nothing. A
//! lookup is a linear scan: a list holds the callers of one key, or the
//! producers waiting for one fsync, tens and not millions, and the scan runs
//! only on a re-poll or a drop, never on the hit path.

use std::task::Waker;

/// Registered wakers, by id.
#[derive(Debug, Default)]
pub(crate) struct WakerList {
    next_id: u64,
    entries: Vec<(u64, Waker)>,
}

impl WakerList {
    /// No waker.
    pub(crate) const fn new() -> Self {
        Self {
            next_id: 0,
            entries: Vec::new(),
        }
    }

    /// Registers `waker` under `id`, or a new id if `id` is `None` or was
    /// taken by [`take`](Self::take) since; a registered waker is replaced
    /// unless it would wake the same task.
    pub(crate) fn register(&mut self, id: &mut Option<u64>, waker: &Waker) {
        if let Some(id) = *id
            && let Some((_, registered)) = self.entries.iter_mut().find(|(k, _)| *k == id)
        {
            if !registered.will_wake(waker) {
                registered.clone_from(waker);
            }
            return;
        }
        let new_id = self.next_id;
        self.next_id += 1;
        self.entries.push((new_id, waker.clone()));
        *id = Some(new_id);
    }

    /// Removes the waker registered under `id`, if it is still there.
    pub(crate) fn remove(&mut self, id: u64) {
        if let Some(at) = self.entries.iter().position(|(k, _)| *k == id) {
            self.entries.swap_remove(at);
        }
    }

    /// Takes every waker, to wake once the lock is released.
    pub(crate) fn take(&mut self) -> Wakers {
        Wakers(std::mem::take(&mut self.entries))
    }

    /// How many wakers are registered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Wakers taken from a [`WakerList`]; [`wake`](Self::wake) them with no lock
/// held.
#[must_use = "taken wakers must be woken"]
pub(crate) struct Wakers(Vec<(u64, Waker)>);

impl Wakers {
    /// Wakes every task.
    pub(crate) fn wake(self) {
        for (_, waker) in self.0 {
            waker.wake();
        }
    }
}

#[cfg(all(test, not(latchfree_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_re_registration_replaces_and_a_removal_forgets() {
        let (a, b) = (
            Arc::new(Count(AtomicUsize::new(0))),
            Arc::new(Count(AtomicUsize::new(0))),
        );
        let mut list = WakerList::new();
        let (mut first, mut second) = (None, None);
        list.register(&mut first, &Waker::from(a.clone()));
        list.register(&mut first, &Waker::from(a.clone()));
        list.register(&mut second, &Waker::from(b.clone()));
        assert_eq!(list.len(), 2);
        list.remove(second.unwrap());
        assert_eq!(list.len(), 1);
        assert_eq!(Arc::strong_count(&b), 1, "a removed waker is dropped");
        list.take().wake();
        assert_eq!(a.0.load(Ordering::Relaxed), 1);
        assert_eq!(b.0.load(Ordering::Relaxed), 0);
        // A registration taken by `take` gets a new id next time.
        list.register(&mut first, &Waker::from(a.clone()));
        assert_eq!(list.len(), 1);
    }
}
