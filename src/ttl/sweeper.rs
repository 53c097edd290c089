//! The background threads: one sweeper per map, which evicts expired
//! entries every sweep interval, and one process-wide *ticker*, which keeps
//! the coarse time of every map that has one.
//!
//! # Why one ticker
//!
//! A coarse time is only as fresh as its last refresh, so it is refreshed
//! every `time_resolution` (1 ms by default) while sweeps are much rarer
//! (100 ms by default). With a thread per map doing both, a process holding
//! ten maps would wake ten threads a thousand times a second. Instead the
//! ticker, started by the first map that needs it and never stopped, wakes
//! at the finest resolution any live map asked for and refreshes them all
//! (one clock read each, a few tens of nanoseconds); each map's sweeper
//! wakes only at its sweep interval. A map is held by the ticker through a
//! [`Weak`] reference only and leaves its list when it is dropped; with no
//! map left, the ticker parks until one registers.
//!
//! The ticker ticks maps of different resolutions at the finest: a map is
//! never refreshed less often than it asked for.
//!
//! Both are real OS threads, and the ticker's list lives in a process-wide
//! static: no loom model starts them (the models sweep by hand, with
//! `Sweep::Manual`), and the list's lock stays `std` because loom's cannot
//! live in a static. The sweeper's stop flag goes through `crate::sync` like
//! every other atomic of the map.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use super::{BACKGROUND_SWEEP, TtlMap};
use crate::sync::atomic::{AtomicBool, Ordering};

/// Something the ticker refreshes: a map's coarse time.
pub(crate) trait Tick: Send + Sync {
    /// Refreshes the coarse time.
    fn tick(&self);
}

/// One registered map.
struct Registered {
    target: Weak<dyn Tick>,
    resolution: Duration,
}

/// The process-wide ticker: its thread and its maps.
struct Ticker {
    targets: Mutex<Vec<Registered>>,
    thread: Thread,
}

static TICKER: OnceLock<Ticker> = OnceLock::new();

/// The ticker, started on first use.
fn ticker() -> std::io::Result<&'static Ticker> {
    if let Some(ticker) = TICKER.get() {
        return Ok(ticker);
    }
    // Two threads may race to start it: the loser's thread finds another
    // ticker installed and exits at once.
    let handle = thread::Builder::new()
        .name("latchfree-tick".into())
        .spawn(run_ticker)?;
    let mine = Ticker {
        targets: Mutex::new(Vec::new()),
        thread: handle.thread().clone(),
    };
    let _ = TICKER.set(mine);
    let ticker = TICKER.get().expect("just set");
    // Wakes the racing loser too (whose `Thread` is not in the winner).
    handle.thread().unpark();
    Ok(ticker)
}

/// The ticker thread's loop.
fn run_ticker() {
    let me = thread::current().id();
    let ticker = loop {
        match TICKER.get() {
            Some(ticker) if ticker.thread.id() == me => break ticker,
            Some(_) => return,
            None => thread::park(),
        }
    };
    let mut live: Vec<Arc<dyn Tick>> = Vec::new();
    loop {
        let resolution = {
            let mut targets = ticker.targets.lock().unwrap_or_else(|e| e.into_inner());
            targets.retain(|r| match r.target.upgrade() {
                Some(target) => {
                    live.push(target);
                    true
                }
                None => false,
            });
            targets.iter().map(|r| r.resolution).min()
        };
        // Ticked with no lock held; the strong references are dropped
        // before sleeping (a map whose owner drops it meanwhile is freed
        // here, on this thread).
        for target in live.drain(..) {
            target.tick();
        }
        match resolution {
            Some(resolution) => thread::park_timeout(resolution),
            None => thread::park(),
        }
    }
}

/// Registers `target` with the ticker, to be refreshed at least every
/// `resolution` for as long as it lives.
pub(crate) fn register(target: Weak<dyn Tick>, resolution: Duration) -> std::io::Result<()> {
    let ticker = ticker()?;
    ticker
        .targets
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Registered { target, resolution });
    // The new resolution may be finer than the one being slept on.
    ticker.thread.unpark();
    Ok(())
}

/// Stops the sweeper thread when dropped (it is not joined: it notices at
/// once, being unparked).
pub(crate) struct SweeperHandle {
    stop: Arc<AtomicBool>,
    thread: Thread,
}

impl SweeperHandle {
    /// Starts a thread that sweeps `map` every `interval`, until the handle
    /// or the map is dropped.
    pub(crate) fn spawn<K, V>(map: Weak<TtlMap<K, V>>, interval: Duration) -> std::io::Result<Self>
    where
        K: Eq + std::hash::Hash + Clone + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let handle = thread::Builder::new()
            .name("latchfree-sweep".into())
            .spawn(move || {
                let mut next = Instant::now() + interval;
                loop {
                    // Parking may end early (spuriously, or to stop).
                    thread::park_timeout(next.saturating_duration_since(Instant::now()));
                    // Acquire: pairs with the Release store in `drop`.
                    if stopped.load(Ordering::Acquire) {
                        break;
                    }
                    if Instant::now() < next {
                        continue;
                    }
                    let Some(map) = map.upgrade() else { break };
                    map.sweep_expired(BACKGROUND_SWEEP);
                    drop(map);
                    next = Instant::now() + interval;
                }
            })?;
        Ok(Self {
            stop,
            thread: handle.thread().clone(),
        })
    }
}

impl Drop for SweeperHandle {
    fn drop(&mut self) {
        // Release: pairs with the Acquire load in the thread's loop.
        self.stop.store(true, Ordering::Release);
        self.thread.unpark();
    }
}
