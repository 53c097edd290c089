//! The Streamable HTTP session manager of `latchfree serve`: rmcp's
//! [`LocalSessionManager`] with the engine's idle timeout and session cap.
//!
//! # Why a wrapper
//!
//! rmcp's local manager ends a session after its own `keep_alive` (300 s by
//! default) without a *message*; an open `GET` stream, which carries no
//! message while nothing happens, does not count, so a client that holds one
//! and calls nothing for five minutes finds its session gone, while the
//! engine's registry session (30 minutes by default) lives on. rmcp also
//! creates sessions without a bound. Both belong in rmcp (a keep-alive that
//! counts open streams, a session cap); until it has them this wrapper:
//!
//! * turns rmcp's keep-alive off and reaps sessions itself: a session is
//!   idle when **no stream of it is open** (a `POST` reply stream, a `GET`
//!   stream, a resumed stream) and nothing arrived for `idle` — the engine's
//!   `sessions.idle_timeout`, so one setting governs both;
//! * refuses a new session once `max` are live (the engine's
//!   `sessions.max_sessions`), with [`SessionsError::Limit`];
//! * counts open request (`POST`) streams server-wide, so a shutdown can wait
//!   until every in-flight reply has been delivered ([`Self::requests_done`]).
//!
//! Activity is a timestamp and a stream count per session, in a map behind a
//! short `std` mutex (one insert per session, one lookup per request); the
//! engine's hot path does not go through it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt as _};
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::common::server_side_http::ServerSseMessage;
use rmcp::transport::streamable_http_server::SessionId;
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError,
};

/// Why the session manager refused.
#[derive(Debug)]
pub enum SessionsError {
    /// `max` sessions are live; a new one is refused until one ends.
    Limit(usize),
    /// rmcp's local manager refused (unknown session, a stopped worker, ..).
    Local(LocalSessionManagerError),
}

/// The text [`SessionsError::Limit`] starts with; the HTTP layer finds it in
/// rmcp's plain-text 500 and answers a JSON-RPC error with 503 instead.
pub const SESSION_LIMIT_MESSAGE: &str = "session limit reached";

impl std::fmt::Display for SessionsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionsError::Limit(max) => write!(
                f,
                "{SESSION_LIMIT_MESSAGE}: {max} MCP sessions are open (the engine's max_sessions); close one or retry later"
            ),
            SessionsError::Local(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for SessionsError {}

impl From<LocalSessionManagerError> for SessionsError {
    fn from(err: LocalSessionManagerError) -> Self {
        SessionsError::Local(err)
    }
}

/// One session's activity.
struct Activity {
    /// Milliseconds since [`Sessions::epoch`] of the last message or stream end.
    last_ms: AtomicU64,
    /// Streams of this session open now.
    open_streams: AtomicUsize,
}

/// rmcp's local session manager with an idle timeout that counts open
/// streams and a session cap (see the module docs).
pub struct Sessions {
    inner: LocalSessionManager,
    activity: Mutex<HashMap<SessionId, Arc<Activity>>>,
    /// Sessions created and not yet closed or reaped (reserved before rmcp
    /// creates one, so the cap holds under concurrent `initialize`s).
    live: AtomicUsize,
    max: usize,
    idle: Option<Duration>,
    epoch: Instant,
    /// Open request (`POST`) streams, all sessions.
    open_requests: AtomicUsize,
    requests_changed: tokio::sync::Notify,
}

/// Ends a stream's count when the stream is dropped (delivered or abandoned).
struct StreamGuard {
    sessions: Arc<Sessions>,
    activity: Option<Arc<Activity>>,
    request: bool,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Some(activity) = &self.activity {
            activity
                .last_ms
                .store(self.sessions.now_ms(), Ordering::Relaxed);
            activity.open_streams.fetch_sub(1, Ordering::Relaxed);
        }
        if self.request {
            self.sessions.open_requests.fetch_sub(1, Ordering::Relaxed);
            self.sessions.requests_changed.notify_waiters();
        }
    }
}

impl Sessions {
    /// A manager for at most `max` sessions, each ended after `idle` without
    /// a message and without an open stream (`None`: never).
    pub fn new(max: usize, idle: Option<Duration>) -> Self {
        let mut inner = LocalSessionManager::default();
        // Reaped here instead: rmcp's keep-alive ignores open streams.
        inner.session_config.keep_alive = None;
        // No empty priming events (see `serve::run`): nothing is stored to
        // resume from, and clients before 2025-11-25 choke on them.
        inner.session_config.sse_retry = None;
        Sessions {
            inner,
            activity: Mutex::new(HashMap::new()),
            live: AtomicUsize::new(0),
            max,
            idle,
            epoch: Instant::now(),
            open_requests: AtomicUsize::new(0),
            requests_changed: tokio::sync::Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn activity(&self, id: &SessionId) -> Option<Arc<Activity>> {
        let map = self.activity.lock().unwrap_or_else(|e| e.into_inner());
        map.get(id).cloned()
    }

    /// Marks `id` active now.
    fn touch(&self, id: &SessionId) {
        if let Some(activity) = self.activity(id) {
            activity.last_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// Counts `stream` as open on `id` until it is dropped.
    fn track<S>(
        self: &Arc<Self>,
        id: &SessionId,
        stream: S,
        request: bool,
    ) -> impl Stream<Item = ServerSseMessage> + Send + Sync + 'static + use<S>
    where
        S: Stream<Item = ServerSseMessage> + Send + Sync + 'static,
    {
        let activity = self.activity(id);
        if let Some(activity) = &activity {
            activity.last_ms.store(self.now_ms(), Ordering::Relaxed);
            activity.open_streams.fetch_add(1, Ordering::Relaxed);
        }
        if request {
            self.open_requests.fetch_add(1, Ordering::Relaxed);
        }
        let guard = StreamGuard {
            sessions: self.clone(),
            activity,
            request,
        };
        stream.map(move |message| {
            let _ = &guard;
            message
        })
    }

    /// Whether `id` is a live session.
    pub async fn contains(&self, id: &SessionId) -> bool {
        self.inner.has_session(id).await.unwrap_or(false)
    }

    /// Waits until no request (`POST`) stream is open: every reply of the
    /// calls admitted so far has been written to its connection.
    pub async fn requests_done(&self) {
        loop {
            let changed = self.requests_changed.notified();
            if self.open_requests.load(Ordering::Relaxed) == 0 {
                return;
            }
            changed.await;
        }
    }

    /// Forgets `id` (closed by the client, reaped, or its worker gone).
    fn forget(&self, id: &SessionId) {
        let removed = {
            let mut map = self.activity.lock().unwrap_or_else(|e| e.into_inner());
            map.remove(id).is_some()
        };
        if removed {
            self.live.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Ends idle sessions every `tick` until `stop` is cancelled. Returns at
    /// once when sessions never idle out.
    pub async fn reap(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let Some(idle) = self.idle else { return };
        let tick = (idle / 4).clamp(Duration::from_millis(20), Duration::from_secs(5));
        let idle_ms = idle.as_millis() as u64;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(tick) => {}
            }
            let now = self.now_ms();
            let candidates: Vec<(SessionId, Arc<Activity>)> = {
                let map = self.activity.lock().unwrap_or_else(|e| e.into_inner());
                map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
            };
            for (id, activity) in candidates {
                let gone = !self.contains(&id).await;
                let idle_now = activity.open_streams.load(Ordering::Relaxed) == 0
                    && now.saturating_sub(activity.last_ms.load(Ordering::Relaxed)) >= idle_ms;
                if idle_now && !gone {
                    let _ = self.inner.close_session(&id).await;
                }
                if idle_now || gone {
                    self.forget(&id);
                }
            }
        }
    }
}

/// rmcp calls the manager through an `Arc`; the methods forward to the local
/// manager, counting streams and enforcing the cap around it.
#[derive(Clone)]
pub struct SharedSessions(pub Arc<Sessions>);

impl SessionManager for SharedSessions {
    type Error = SessionsError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        let s = &self.0;
        s.live
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < s.max).then_some(n + 1)
            })
            .map_err(|_| SessionsError::Limit(s.max))?;
        match s.inner.create_session().await {
            Ok((id, transport)) => {
                let activity = Arc::new(Activity {
                    last_ms: AtomicU64::new(s.now_ms()),
                    open_streams: AtomicUsize::new(0),
                });
                s.activity
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id.clone(), activity);
                Ok((id, transport))
            }
            Err(err) => {
                s.live.fetch_sub(1, Ordering::Relaxed);
                Err(err.into())
            }
        }
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        self.0.touch(id);
        Ok(self.0.inner.initialize_session(id, message).await?)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        Ok(self.0.inner.has_session(id).await?)
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        let result = self.0.inner.close_session(id).await;
        self.0.forget(id);
        Ok(result?)
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.0.touch(id);
        let stream = self.0.inner.create_stream(id, message).await?;
        Ok(self.0.track(id, stream, true))
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        self.0.touch(id);
        Ok(self.0.inner.accept_message(id, message).await?)
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let stream = self.0.inner.create_standalone_stream(id).await?;
        Ok(self.0.track(id, stream, false))
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let stream = self.0.inner.resume(id, last_event_id).await?;
        Ok(self.0.track(id, stream, false))
    }
}
