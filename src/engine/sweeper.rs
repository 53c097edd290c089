//! The engine's sweeper thread: every `sweep_interval` it sweeps expired
//! sessions and cache entries out, until the engine stops it or is gone.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::Kind;
use super::backend::Components as _;

pub(super) type Stop = Arc<(Mutex<bool>, Condvar)>;

pub(super) fn spawn_sweeper(
    parts: std::sync::Weak<Kind>,
    stop: Stop,
    interval: Duration,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("latchfree-engine-sweep".into())
        .spawn(move || {
            let (flag, wake) = &*stop;
            let mut stopped = flag.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                // `wait_timeout_while` checks the flag before it sleeps: a
                // stop set before this thread first took the lock is seen.
                let (guard, _) = wake
                    .wait_timeout_while(stopped, interval, |stopped| !*stopped)
                    .unwrap_or_else(PoisonError::into_inner);
                if *guard {
                    return;
                }
                drop(guard);
                let Some(parts) = parts.upgrade() else { return };
                with_parts!(&*parts, c => c.sweep());
                drop(parts);
                stopped = flag.lock().unwrap_or_else(PoisonError::into_inner);
            }
        })
}
