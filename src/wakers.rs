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
//!
//! A waker may carry a tag saying what it waits for (an audit level and a
//! target), so that a publisher takes only the wakers its event satisfies
//! ([`WakerList::take_due`]) and leaves the others registered, under the same
//! lock, which keeps the argument above.

use std::task::Waker;

/// Registered wakers, by id, each with a tag saying what it waits for
/// (`()` where every waker waits for the same event).
#[derive(Debug)]
pub(crate) struct WakerList<T = ()> {
    next_id: u64,
    entries: Vec<(u64, Waker, T)>,
}

impl<T> Default for WakerList<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> WakerList<T> {
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
    pub(crate) fn register(&mut self, id: &mut Option<u64>, waker: &Waker)
    where
        T: Default,
    {
        self.register_tagged(id, waker, T::default());
    }

    /// [`register`](Self::register), waiting for what `tag` says (a
    /// registered waker's tag is replaced).
    pub(crate) fn register_tagged(&mut self, id: &mut Option<u64>, waker: &Waker, tag: T) {
        if let Some(id) = *id
            && let Some((_, registered, registered_tag)) =
                self.entries.iter_mut().find(|(k, _, _)| *k == id)
        {
            if !registered.will_wake(waker) {
                registered.clone_from(waker);
            }
            *registered_tag = tag;
            return;
        }
        let new_id = self.next_id;
        self.next_id += 1;
        self.entries.push((new_id, waker.clone(), tag));
        *id = Some(new_id);
    }

    /// Removes the waker registered under `id`, if it is still there.
    pub(crate) fn remove(&mut self, id: u64) {
        if let Some(at) = self.entries.iter().position(|(k, _, _)| *k == id) {
            self.entries.swap_remove(at);
        }
    }

    /// Takes every waker, to wake once the lock is released.
    pub(crate) fn take(&mut self) -> Wakers {
        Wakers(
            std::mem::take(&mut self.entries)
                .into_iter()
                .map(|(_, waker, _)| waker)
                .collect(),
        )
    }

    /// Takes the wakers whose tag passes `due`, to wake once the lock is
    /// released; the others stay registered.
    pub(crate) fn take_due(&mut self, mut due: impl FnMut(&T) -> bool) -> Wakers {
        let mut taken = Vec::new();
        let mut at = 0;
        while at < self.entries.len() {
            if due(&self.entries[at].2) {
                taken.push(self.entries.swap_remove(at).1);
            } else {
                at += 1;
            }
        }
        Wakers(taken)
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
pub(crate) struct Wakers(Vec<Waker>);

impl Wakers {
    /// How many tasks these wakers wake.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Wakes every task.
    pub(crate) fn wake(self) {
        for waker in self.0 {
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
        let mut list = WakerList::<()>::new();
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

    #[test]
    fn take_due_takes_only_the_wakers_whose_tag_passes() {
        let (a, b) = (
            Arc::new(Count(AtomicUsize::new(0))),
            Arc::new(Count(AtomicUsize::new(0))),
        );
        let mut list = WakerList::<u64>::new();
        let (mut first, mut second) = (None, None);
        list.register_tagged(&mut first, &Waker::from(a.clone()), 1);
        list.register_tagged(&mut second, &Waker::from(b.clone()), 2);
        let taken = list.take_due(|&target| target <= 1);
        assert_eq!(taken.len(), 1);
        taken.wake();
        assert_eq!(a.0.load(Ordering::Relaxed), 1);
        assert_eq!(b.0.load(Ordering::Relaxed), 0);
        assert_eq!(list.len(), 1, "the waker for 2 stays registered");
        // Re-registering the one left replaces it (and its tag) in place.
        list.register_tagged(&mut second, &Waker::from(b.clone()), 3);
        assert_eq!(list.len(), 1);
        assert_eq!(list.take_due(|&target| target <= 2).len(), 0);
        list.take_due(|&target| target <= 3).wake();
        assert_eq!(b.0.load(Ordering::Relaxed), 1);
        assert_eq!(list.len(), 0);
    }
}
