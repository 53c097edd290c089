//! Re-entry: an initialiser or loader that asks for its own key gets
//! `Recursive` at once instead of waiting on its own flight forever; the
//! initialiser that is running is not affected.
//!
//! Each call that would hang runs on a thread of its own, and the test
//! fails (instead of hanging) if it has not answered within 10 s.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use latchfree::cache::{LoadError, TtlCache};
use latchfree::session::{SessionError, SessionRegistry};
use latchfree::shared::Shared;

/// Runs `f` on its own thread and returns its result, failing the test if
/// it takes longer than 10 s (a hang).
fn within_10_s<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || tx.send(f()).unwrap());
    rx.recv_timeout(Duration::from_secs(10))
        .expect("re-entry hung instead of returning Recursive")
}

#[test]
fn a_session_initialiser_asking_for_its_own_id_gets_recursive() {
    let (inner, outer) = within_10_s(|| {
        let sessions = SessionRegistry::<u32>::new();
        let mut inner = None;
        let outer = sessions.get_or_create("a", || {
            inner = Some(sessions.get_or_create("a", || 2).map(|s| *s));
            1
        });
        (inner.unwrap(), outer.map(|s| *s))
    });
    assert!(matches!(inner, Err(SessionError::Recursive)), "{inner:?}");
    assert_eq!(outer.unwrap(), 1, "the running initialiser is not affected");
}

#[test]
fn cross_recursion_between_two_ids_gets_recursive() {
    let (inner, outer) = within_10_s(|| {
        let sessions = SessionRegistry::<u32>::new();
        let mut inner = None;
        let outer = sessions.get_or_create("a", || {
            let b = sessions.get_or_create("b", || {
                inner = Some(sessions.get_or_create("a", || 3).map(|s| *s));
                2
            });
            *b.unwrap() - 1
        });
        (inner.unwrap(), outer.map(|s| *s))
    });
    assert!(matches!(inner, Err(SessionError::Recursive)), "{inner:?}");
    assert_eq!(outer.unwrap(), 1);
}

#[test]
fn a_loader_asking_for_its_own_key_gets_recursive_and_other_keys_load() {
    let (inner, other, outer) = within_10_s(|| {
        let cache = TtlCache::<u32, u32>::new(100);
        let (mut inner, mut other) = (None, None);
        let outer = cache.get_or_load(7, || {
            inner = Some(cache.get_or_load(7, || 8));
            other = Some(cache.get_or_load(9, || 9));
            7
        });
        (inner.unwrap(), other.unwrap(), outer)
    });
    assert!(matches!(inner, Err(LoadError::Recursive)), "{inner:?}");
    assert_eq!(other.unwrap(), 9, "another key loads from inside a loader");
    assert_eq!(outer.unwrap(), 7);
}

#[test]
fn a_fallible_loader_sees_recursive_as_a_typed_error() {
    let inner = within_10_s(|| {
        let cache = TtlCache::<u32, u32>::new(100);
        let mut inner = None;
        let _ = cache.try_get_or_load(1, || {
            inner = Some(cache.try_get_or_load(1, || Ok::<u32, String>(2)));
            Err::<u32, String>("outer fails".into())
        });
        // Nothing was cached; the key loads normally afterwards.
        assert_eq!(cache.get_or_load(1, || 5).unwrap(), 5);
        inner.unwrap()
    });
    assert!(matches!(inner, Err(LoadError::Recursive)), "{inner:?}");
}

#[test]
fn a_waiter_on_another_thread_is_not_recursive() {
    // Only the leader's own thread is inside the initialiser: a second
    // thread that joins the flight waits and gets the value.
    let sessions = std::sync::Arc::new(SessionRegistry::<u32>::new());
    let (started_tx, started_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let leader = {
        let sessions = sessions.clone();
        thread::spawn(move || {
            sessions
                .get_or_create("x", || {
                    started_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                    4
                })
                .map(|s| *s)
        })
    };
    started_rx.recv().unwrap();
    let waiter = {
        let sessions = sessions.clone();
        thread::spawn(move || sessions.get_or_create("x", || 5).map(|s| *s))
    };
    while sessions.metrics().coalesced == 0 {
        thread::yield_now();
    }
    go_tx.send(()).unwrap();
    assert_eq!(leader.join().unwrap().unwrap(), 4);
    assert_eq!(waiter.join().unwrap().unwrap(), 4);
}

#[test]
fn shared_get_or_init_from_its_own_initialiser_panics_at_once() {
    let (panicked, after) = within_10_s(|| {
        let shared: Shared<u32> = Shared::new();
        let inner = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            shared.get_or_init(|| *shared.get_or_init(|| 2) + 1)
        }));
        // The outer initialiser unwound: nothing installed, nothing poisoned.
        let after = *shared.get_or_init(|| 9);
        (inner.is_err(), after)
    });
    assert!(panicked, "re-entry must panic, not hang or return");
    assert_eq!(after, 9);
}
