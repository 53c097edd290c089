//! The async twins of the audit log's waits (feature `async`):
//! [`AuditLog::log_wait_async`], [`AuditLog::wait_async`] and
//! [`AuditLog::flush_async`].
//!
//! Each asks the writer for what it waits for when it is *called* (not when
//! first polled) and then sleeps on the same levels as the blocking waits
//! (`progress::Progress::wait_async`): many tasks waiting at once share one
//! write and one fsync, as many threads do, without a thread each. An async
//! wait never writes or fsyncs on the caller's behalf (a blocking one may
//! take the idle writer's turn): the executor's thread never blocks on the
//! file.
//!
//! A waiting task is woken once, by the raise that reaches its target (see
//! "Async waiters" in `progress`), not by every write and fsync while it
//! waits. With 64 tasks on a 2-worker runtime logging with
//! [`Guarantee::Disk`], each fsync covers more records than 64 blocking
//! threads' do (about 35 against 30 on the 2-core machine measured), and
//! the tasks log as fast as the threads or faster (median 1.2× over six
//! runs, the disk's fsync time varying run to run); on a tmpfs, where
//! fsync costs nothing and the wake-ups are most of the cost, 1.2× to 1.4×
//! as fast as with every task woken on every raise.

use std::future::Future;

use serde::Serialize;

use super::log::{AuditError, AuditLog, Guarantee, Ticket};
use super::record::Head;

impl AuditLog {
    /// Logs one event now and returns a future that resolves once it has
    /// the `guarantee`, as [`log_wait`](Self::log_wait) does for threads.
    ///
    /// The event is serialised and queued **by this call**, before the
    /// future is first polled; the future only waits.
    ///
    /// With [`OnFull::Block`](super::OnFull::Block) (the default) and a full
    /// ring, queuing waits for room as [`log`](Self::log) does: the writer
    /// drains the ring in microseconds.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the event is queued exactly once whether or not the
    /// future is polled to the end; dropping it only stops the wait (its
    /// waker is removed). Do not call it again to "retry" a dropped wait,
    /// which would log the event twice: to keep the ticket, use
    /// [`log`](Self::log) and [`wait_async`](Self::wait_async).
    pub fn log_wait_async<E: Serialize + ?Sized>(
        &self,
        event: &E,
        guarantee: Guarantee,
    ) -> impl Future<Output = Result<Ticket, AuditError>> + '_ {
        let logged = self.log(event);
        let wait = logged.as_ref().ok().map(|t| self.wait_async(*t, guarantee));
        async move {
            let ticket = logged?;
            if let Some(wait) = wait {
                wait.await?;
            }
            Ok(ticket)
        }
    }

    /// Waits, as a future, until the event of `ticket` (and every event
    /// queued before it) has the `guarantee`, as [`wait`](Self::wait) does
    /// for threads. A [`Guarantee::Disk`] wait asks the writer for the fsync
    /// when called.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: waiting changes nothing but the waiter list; a dropped
    /// future removes its waker and may be replaced by a new call with the
    /// same ticket.
    pub fn wait_async(
        &self,
        ticket: Ticket,
        guarantee: Guarantee,
    ) -> impl Future<Output = Result<(), AuditError>> + '_ {
        self.wait_below_async(ticket.covered_at(), guarantee)
    }

    /// Waits, as a future, until every event logged before the call is
    /// written (and fsynced unless the durability is
    /// [`Durability::None`](super::Durability::None)), as
    /// [`flush`](Self::flush) does for threads; returns the head reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`wait_async`](Self::wait_async): the flush it asked
    /// for happens anyway; dropping the future only stops the wait.
    pub fn flush_async(&self) -> impl Future<Output = Result<Option<Head>, AuditError>> + '_ {
        let (target, guarantee) = self.flush_target();
        let wait = self.wait_below_async(target, guarantee);
        async move {
            wait.await?;
            Ok(self.head_at(guarantee))
        }
    }

    /// Asks the writer for `guarantee` on every position below `target`
    /// now, and returns the future that waits for it.
    fn wait_below_async(
        &self,
        target: u64,
        guarantee: Guarantee,
    ) -> impl Future<Output = Result<(), AuditError>> + '_ {
        let wanted = self.want(target, guarantee);
        async move {
            let Some((level, _poll)) = wanted else {
                return Ok(());
            };
            self.progress()
                .wait_async(level, target)
                .await
                .map_err(|e| self.stalled(e))
        }
    }
}
