//! Deadlines for waiters (`wait_timeout` on the builders): a caller that
//! waits for another's stuck initialiser gives up with a typed `TimedOut`
//! after the timeout; the initialiser is not affected and its value is
//! stored. (A wait deadline, not a TTL: it is measured on the real clock.)

use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use latchfree::cache::{LoadError, TtlCache};
use latchfree::session::{SessionError, SessionRegistry};

const WAIT: Duration = Duration::from_millis(50);

/// Runs `lead` on a thread whose initialiser blocks until released; returns
/// the thread, once the initialiser has started, and its release.
fn stuck_leader<R: Send + 'static>(
    lead: impl FnOnce(Box<dyn FnOnce() + Send>) -> R + Send + 'static,
) -> (thread::JoinHandle<R>, mpsc::Sender<()>) {
    let (started_tx, started_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let leader = thread::spawn(move || {
        lead(Box::new(move || {
            started_tx.send(()).unwrap();
            go_rx.recv().unwrap();
        }))
    });
    started_rx.recv().unwrap();
    (leader, go_tx)
}

#[test]
#[cfg_attr(
    miri,
    ignore = "crossbeam-epoch's tagged pointers need permissive provenance"
)]
fn a_session_waiter_times_out_and_the_initialiser_finishes() {
    let sessions = Arc::new(
        SessionRegistry::<u32>::builder()
            .wait_timeout(WAIT)
            .build()
            .unwrap(),
    );
    let (leader, release) = {
        let sessions = sessions.clone();
        stuck_leader(move |block| {
            sessions.get_or_create("x", || {
                block();
                1
            })
        })
    };
    let started = Instant::now();
    let waited = sessions.get_or_create("x", || 2);
    assert!(
        matches!(waited, Err(SessionError::TimedOut { after }) if after == WAIT),
        "{waited:?}"
    );
    assert!(started.elapsed() >= WAIT);
    release.send(()).unwrap();
    assert_eq!(*leader.join().unwrap().unwrap(), 1);
    assert_eq!(*sessions.get_or_create("x", || 3).unwrap(), 1);
    assert_eq!(sessions.metrics().inits, 1);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "crossbeam-epoch's tagged pointers need permissive provenance"
)]
fn a_cache_waiter_times_out_and_the_loader_finishes() {
    let cache = Arc::new(
        TtlCache::<u32, u32>::builder()
            .wait_timeout(WAIT)
            .build()
            .unwrap(),
    );
    let (leader, release) = {
        let cache = cache.clone();
        stuck_leader(move |block| {
            cache.get_or_load(7, || {
                block();
                70
            })
        })
    };
    let waited = cache.try_get_or_load(7, || Ok::<u32, String>(71));
    assert!(
        matches!(waited, Err(LoadError::TimedOut { after }) if after == WAIT),
        "{waited:?}"
    );
    release.send(()).unwrap();
    assert_eq!(leader.join().unwrap().unwrap(), 70);
    assert_eq!(cache.get(&7), Some(70));
}

#[test]
#[cfg_attr(
    miri,
    ignore = "crossbeam-epoch's tagged pointers need permissive provenance"
)]
fn a_waiter_whose_leader_finishes_in_time_gets_the_value() {
    let cache = Arc::new(
        TtlCache::<u32, u32>::builder()
            .wait_timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    );
    let (leader, release) = {
        let cache = cache.clone();
        stuck_leader(move |block| {
            cache.get_or_load(1, || {
                block();
                10
            })
        })
    };
    let waiter = {
        let cache = cache.clone();
        thread::spawn(move || cache.get_or_load(1, || 11))
    };
    while cache.metrics().coalesced == 0 {
        thread::yield_now();
    }
    release.send(()).unwrap();
    assert_eq!(waiter.join().unwrap().unwrap(), 10);
    assert_eq!(leader.join().unwrap().unwrap(), 10);
}
