//! Per-object, per-thread values with a one-entry cache: the lookup that every
//! sharded hot path starts with.
//!
//! # Why not the `thread_local` crate
//!
//! `thread_local::ThreadLocal` is the well-kept answer to "one `T` per thread
//! per object", and we used it first. Its lookup costs a thread-id TLS read,
//! a bucket load and a presence check, about 1.5 ns on the machines we measure
//! on, against 0.3 ns for the increment itself. A cache of "my entry of the
//! object I used last" would remove most of that, but cannot be put in front
//! of `ThreadLocal` soundly: the crate frees a thread's id (and hands its entry
//! to the next new thread) in a TLS destructor that we cannot order against
//! our own. An update made from a later TLS destructor would then write an
//! entry that another thread already owns, and single-writer slots would lose
//! updates. So the hand-off at thread exit is done here, by our own guard, and
//! the cache is cleared before any entry is released.
//!
//! # How
//!
//! * A [`PerThread`] owns an append-only list of entries (newest first, the
//!   head published with `Release`, walked with `Acquire`) and a free list of
//!   entries released by exited threads, behind a `Mutex` (cold path only).
//! * A thread claims an entry on first use (from the free list, or new) and
//!   records the claim in its `CLAIMS` TLS, whose destructor releases every
//!   claim to its set's free list when the thread exits. So an entry has at
//!   most one owner at a time, each owner's writes happen-before the next
//!   owner's (through the mutex), values survive their thread, and memory is
//!   bounded by the peak number of live threads that used the set.
//! * `CACHE` (TLS, no destructor, so always accessible) holds the set id and
//!   entry of the last lookup. Set ids come from a global counter and are
//!   never reused, so a matching id proves the entry belongs to a set that is
//!   alive (the caller holds `&PerThread`) and is claimed by this thread. The
//!   hot path is one TLS read, one compare and one pointer deref.
//! * `CLAIMS`'s destructor clears `CACHE` before releasing anything. A thread
//!   whose `CLAIMS` is already destroyed (an update from a late TLS
//!   destructor) borrows an entry from the free list for that one call and
//!   returns it: slower, never shared.
//!
//! # Each ordering, and the layer that shows it
//!
//! This module runs under Miri, not loom. Loom runs every model thread on
//! one OS thread, so `CACHE` and `CLAIMS` would be one for all of them, and
//! what the hand-off gets right is the order of *std's* TLS destructors
//! (`CLAIMS` against a later one that still updates), which loom's
//! `thread_local!` does not reproduce. Under loom, `crate::sync::PerThread`
//! is a stand-in keyed by loom's thread id, and the models of the stats
//! shards run on that. The orderings here are argued below and shown by the
//! unit tests under Miri (`cargo +nightly miri test --lib -- per_thread::`),
//! whose race detector reports any read not ordered after the write it
//! reads, and by the same tests natively.
//!
//! | what | ordering | why | shown by |
//! |---|---|---|---|
//! | `head` store in `claim` | `Release` | `for_each` takes no lock: the node's value and `next` must be visible to whoever finds the node | `a_visit_racing_a_new_threads_first_use_sees_its_entry_whole` (Miri: a data race on the node with `Relaxed`) |
//! | `head` load in `for_each` | `Acquire` | pairs with the store above | the same test |
//! | `head` load in `claim` | `Relaxed` | `head` is stored only under `free`, which `claim` holds | equivalent (the mutex orders it) |
//! | an entry handed to a new thread | the `free` mutex | the old owner's writes come before its `release` unlocks `free`; the new owner locks `free` to claim it | `joined_threads_hand_their_entry_to_the_next_thread`, `updates_from_late_tls_destructors_are_not_lost` |
//! | `CACHE` | none (TLS) | read and written by its own thread only; `Claims::drop` clears it before releasing any entry | `updates_from_late_tls_destructors_are_not_lost` |
//! | `NEXT_SET_ID` | `Relaxed` | ids are compared, never used to publish anything | - |
//!
//! ## Mutations
//!
//! Rerun by `.ci/mutants P1 P2` (Miri, `per_thread::tests::a_visit_racing`).
//!
//! | # | mutation | caught by |
//! |---|---|---|
//! | P1 | `claim` publishes `head` with `Relaxed` | Miri: a data race on the node, in 19 s |
//! | P2 | `for_each` loads `head` with `Relaxed` | not run yet (`.ci/mutants P2`) |
//!
//! P1 survived every layer before the visiting test existed: the other
//! tests visit only after `join`, which orders everything on its own. The
//! visiting test is the one that can tell; its Miri run is what the table
//! records.

use std::cell::{Cell, RefCell};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use crossbeam_utils::CachePadded;

/// Set ids start at 1; 0 marks an empty cache.
static NEXT_SET_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// `(set id, entry)` of this thread's last lookup; `(0, null)` when empty.
    static CACHE: Cell<(u64, *const ())> = const { Cell::new((0, ptr::null())) };
    /// Every entry this thread has claimed, released when the thread exits.
    static CLAIMS: Claims = const { Claims(RefCell::new(Vec::new())) };
}

/// One thread's claim on one set's entry.
struct Claim {
    set_id: u64,
    set: Weak<dyn Release>,
    entry: *const (),
}

struct Claims(RefCell<Vec<Claim>>);

impl Drop for Claims {
    fn drop(&mut self) {
        // First make the fast path miss: after this no entry is reachable
        // from this thread except through `with_borrowed`.
        CACHE.set((0, ptr::null()));
        for claim in self.0.get_mut().drain(..) {
            if let Some(set) = claim.set.upgrade() {
                set.release(claim.entry);
            }
        }
    }
}

/// Type-erased "give this entry back", so one TLS list serves sets of any `T`.
trait Release: Send + Sync {
    fn release(&self, entry: *const ());
}

struct Node<T> {
    value: CachePadded<T>,
    /// The next older node; written once before the node is published.
    next: *mut Node<T>,
}

/// A node pointer that may cross threads (through the free list).
struct NodePtr<T>(NonNull<Node<T>>);

// SAFETY: a `NodePtr` is only a handle: the node it names is owned by the
// set, and sending the handle moves the *claim* to another thread, which is
// exactly what `T: Send` permits.
unsafe impl<T: Send> Send for NodePtr<T> {}

struct Set<T> {
    id: u64,
    /// Newest node; every node is reachable from here until the set drops.
    head: AtomicPtr<Node<T>>,
    /// Nodes not claimed by any thread.
    free: Mutex<Vec<NodePtr<T>>>,
}

// SAFETY: nodes are reached through `&Set` from many threads: a claimed
// node's `T` is written by its one owner and read by any thread (`T: Sync`),
// and claims move between threads (`T: Send`). Raw pointers are only handed
// out under the rules in the module docs.
unsafe impl<T: Send + Sync> Send for Set<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for Set<T> {}

impl<T: Send + Sync> Set<T> {
    /// Takes a free node, or creates and publishes a new one (`None` only
    /// if there is no free node and `create` yields nothing).
    fn claim(&self, create: impl FnOnce() -> Option<T>) -> Option<NonNull<Node<T>>> {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(NodePtr(node)) = free.pop() {
            return Some(node);
        }
        let node = Box::into_raw(Box::new(Node {
            value: CachePadded::new(create()?),
            // Relaxed: `head` is only stored while holding `free`, which we hold.
            next: self.head.load(Ordering::Relaxed),
        }));
        // Release: pairs with the Acquire load in `for_each`, so a reader
        // that finds the node sees its initialised value and `next`.
        self.head.store(node, Ordering::Release);
        NonNull::new(node)
    }
}

impl<T: Send + Sync> Release for Set<T> {
    fn release(&self, entry: *const ()) {
        if let Some(node) = NonNull::new(entry.cast_mut().cast::<Node<T>>()) {
            let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
            free.push(NodePtr(node));
        }
    }
}

impl<T> Drop for Set<T> {
    fn drop(&mut self) {
        let mut node = *self.head.get_mut();
        while !node.is_null() {
            // SAFETY: every node was made by `Box::into_raw` in `claim` and is
            // reachable exactly once from `head`; `&mut self` means no thread
            // still uses the set (claims hold only `Weak` references, and a
            // cache entry is used only through a live `&PerThread`).
            let boxed = unsafe { Box::from_raw(node) };
            node = boxed.next;
        }
    }
}

/// One `T` per thread that uses this object; any thread can visit them all.
///
/// See the module docs for the protocol. `T` is created on a thread's first
/// use (or an entry released by an exited thread is reused, values intact).
pub(crate) struct PerThread<T: Send + Sync + 'static> {
    /// `set.id`, kept inline so the hot path compares without a pointer chase.
    id: u64,
    set: Arc<Set<T>>,
}

impl<T: Send + Sync + 'static> PerThread<T> {
    pub(crate) fn new() -> Self {
        let id = NEXT_SET_ID.fetch_add(1, Ordering::Relaxed);
        Self {
            id,
            set: Arc::new(Set {
                id,
                head: AtomicPtr::new(ptr::null_mut()),
                free: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Runs `f` on the calling thread's entry, creating it on first use.
    #[inline(always)]
    pub(crate) fn with<R>(&self, create: impl FnOnce() -> T, f: impl FnOnce(&T) -> R) -> R {
        let (id, entry) = CACHE.get();
        if id == self.id {
            // SAFETY: the cache holds this set's id only while this thread
            // owns `entry` in this set (module docs); the set is alive because
            // we hold `&self`, and it frees nodes only when dropped.
            return f(unsafe { &(*entry.cast::<Node<T>>()).value });
        }
        self.with_slow(create, f)
    }

    #[cold]
    #[inline(never)]
    fn with_slow<R>(&self, create: impl FnOnce() -> T, f: impl FnOnce(&T) -> R) -> R {
        // `create` runs at most once: in the claim below, or in the borrow.
        let mut create = Some(create);
        let mut make = || create.take().map(|create| create());
        let claimed = CLAIMS.try_with(|claims| {
            let mut claims = claims.0.borrow_mut();
            let entry = match claims.iter().find(|c| c.set_id == self.set.id) {
                Some(claim) => claim.entry,
                None => {
                    claims.retain(|c| c.set.strong_count() > 0);
                    let entry = self
                        .set
                        .claim(&mut make)?
                        .as_ptr()
                        .cast_const()
                        .cast::<()>();
                    let set: Arc<dyn Release> = self.set.clone();
                    claims.push(Claim {
                        set_id: self.set.id,
                        set: Arc::downgrade(&set),
                        entry,
                    });
                    entry
                }
            };
            CACHE.set((self.set.id, entry));
            Some(entry)
        });
        match claimed {
            // SAFETY: this thread owns `entry` (just found or claimed above),
            // and the set is alive while we hold `&self`.
            Ok(Some(entry)) => f(unsafe { &(*entry.cast::<Node<T>>()).value }),
            _ => self.with_borrowed(make, f),
        }
    }

    /// The path of a thread whose claims are already released (it is running
    /// late TLS destructors): borrow an entry for this one call.
    fn with_borrowed<R>(&self, make: impl FnOnce() -> Option<T>, f: impl FnOnce(&T) -> R) -> R {
        struct GiveBack<'a, T: Send + Sync>(&'a Set<T>, NonNull<Node<T>>);
        impl<T: Send + Sync> Drop for GiveBack<'_, T> {
            fn drop(&mut self) {
                self.0.release(self.1.as_ptr().cast_const().cast());
            }
        }
        // A free entry if there is one; otherwise a new one, which joins the
        // free list afterwards.
        let Some(node) = self.set.claim(make) else {
            unreachable!("`make` is still unused when the claim path did not run")
        };
        let guard = GiveBack(&self.set, node);
        // SAFETY: the node is out of the free list, so this thread is its only
        // owner until `guard` returns it; the set outlives this call.
        f(unsafe { &guard.1.as_ref().value })
    }

    /// Visits every entry ever created (live threads' and released ones).
    pub(crate) fn for_each(&self, mut f: impl FnMut(&T)) {
        // Acquire: pairs with the Release store in `claim`.
        let mut node = self.set.head.load(Ordering::Acquire);
        while !node.is_null() {
            // SAFETY: published nodes stay allocated until the set drops (we
            // hold `&self`); their `value` and `next` were written before the
            // Release store that published them.
            let n = unsafe { &*node };
            f(&n.value);
            node = n.next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A single-writer counter: load + store, as the stats shards do.
    fn bump(set: &PerThread<AtomicU64>, n: u64) {
        set.with(
            || AtomicU64::new(0),
            |v| v.store(v.load(Ordering::Relaxed) + n, Ordering::Relaxed),
        );
    }

    fn total(set: &PerThread<AtomicU64>) -> (u64, usize) {
        let (mut sum, mut entries) = (0, 0);
        set.for_each(|v| {
            sum += v.load(Ordering::Relaxed);
            entries += 1;
        });
        (sum, entries)
    }

    #[test]
    fn values_survive_their_thread() {
        let set = PerThread::new();
        for _wave in 0..5 {
            std::thread::scope(|s| {
                for _ in 0..4 {
                    s.spawn(|| (0..1000).for_each(|_| bump(&set, 1)));
                }
            });
        }
        assert_eq!(total(&set).0, 20_000);
    }

    #[test]
    fn a_visit_racing_a_new_threads_first_use_sees_its_entry_whole() {
        // Nothing orders the visitor after the claiming thread but `head`
        // itself: no join, no lock. Miri's race detector reports the
        // visitor's read of the node if `head` is published without
        // `Release` or loaded without `Acquire`.
        let set = PerThread::new();
        std::thread::scope(|s| {
            s.spawn(|| bump(&set, 5));
            s.spawn(|| {
                let mut visited = (0, 0);
                while visited.1 == 0 {
                    visited = total(&set);
                    std::thread::yield_now();
                }
                // The claimer stores 5 after it publishes the node: the visit
                // may come first, but never sees the node half-made.
                assert!(matches!(visited, (0 | 5, 1)), "{visited:?}");
            });
        });
        assert_eq!(total(&set), (5, 1));
    }

    #[test]
    fn joined_threads_hand_their_entry_to_the_next_thread() {
        // `join` returns after the thread's TLS destructors ran, so each new
        // thread finds the previous one's entry on the free list: one entry.
        let set = Arc::new(PerThread::new());
        for _ in 0..10 {
            let set = set.clone();
            std::thread::spawn(move || bump(&set, 1)).join().unwrap();
        }
        assert_eq!(total(&set), (10, 1));
    }

    #[test]
    fn alternating_sets_on_one_thread_stay_separate() {
        let (a, b) = (PerThread::new(), PerThread::new());
        for i in 0..100 {
            bump(&a, 1);
            bump(&b, i);
        }
        assert_eq!(total(&a), (100, 1));
        assert_eq!(total(&b), ((0..100).sum(), 1));
        drop(a);
        let c = PerThread::new();
        bump(&c, 7);
        bump(&b, 1);
        assert_eq!(total(&c), (7, 1));
    }

    static LATE_DROPS: AtomicUsize = AtomicUsize::new(0);

    struct LateUpdate(Cell<Option<Arc<PerThread<AtomicU64>>>>);
    impl Drop for LateUpdate {
        fn drop(&mut self) {
            if let Some(set) = self.0.take() {
                // Runs after `CLAIMS` was destroyed: the borrow path.
                bump(&set, 10);
                LATE_DROPS.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    thread_local! {
        static LATE: LateUpdate = const { LateUpdate(Cell::new(None)) };
    }

    #[test]
    fn updates_from_late_tls_destructors_are_not_lost() {
        let set = Arc::new(PerThread::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let set = set.clone();
                std::thread::spawn(move || {
                    // Registered before `CLAIMS`, so destroyed after it
                    // (destructors run in reverse order of registration).
                    LATE.with(|late| late.0.set(Some(set.clone())));
                    bump(&set, 1);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(LATE_DROPS.load(Ordering::Relaxed), 4);
        assert_eq!(total(&set).0, 44);
    }
}
