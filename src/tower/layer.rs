//! [`StatsLayer`], its service and its response future: the per-request
//! bookkeeping (see the [module docs](super) for what is recorded).

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{Request, Response};
use pin_project_lite::pin_project;
use serde::Serialize;
use tower_layer::Layer;
use tower_service::Service;

use super::series::{Config, Series, SeriesCache};
use crate::audit::AuditLog;
use crate::stats::{DEFAULT_BUCKETS, Layout, Stats};

/// Distinct routes a [`StatsLayer`] admits unless
/// [`max_routes`](StatsLayer::max_routes) says otherwise.
pub const DEFAULT_MAX_ROUTES: usize = 100;

/// Names the route of a request: the `route` label of its series.
///
/// Implemented by [`PathRoute`] (the default) and by every closure
/// `Fn(&http::Request<B>) -> R` where `R` is a `String` or a
/// `&'static str` (anything `Into<Cow<'static, str>>`). The answer should
/// take few values (a route pattern, not a path with ids in it); the layer
/// admits at most [`StatsLayer::max_routes`] of them in any case.
pub trait RouteClassifier<B> {
    /// The route of `request`.
    fn route<'r>(&self, request: &'r Request<B>) -> Cow<'r, str>;
}

impl<B, F, R> RouteClassifier<B> for F
where
    F: Fn(&Request<B>) -> R,
    R: Into<Cow<'static, str>>,
{
    fn route<'r>(&self, request: &'r Request<B>) -> Cow<'r, str> {
        self(request).into()
    }
}

/// The default [`RouteClassifier`]: the request's path (no query string),
/// admitted up to [`StatsLayer::max_routes`] distinct paths.
#[derive(Clone, Copy, Debug, Default)]
pub struct PathRoute;

impl<B> RouteClassifier<B> for PathRoute {
    fn route<'r>(&self, request: &'r Request<B>) -> Cow<'r, str> {
        Cow::Borrowed(request.uri().path())
    }
}

/// A [`Layer`] that records every request of the service it wraps into a
/// [`Stats`]: counts by method, route and status, requests in flight,
/// durations and errors, and optionally one audit record per request. See
/// the [module docs](super).
///
/// Cheap to clone: clones share one cache of handles, and every service it
/// makes records into the same series.
///
/// ```
/// use latchfree::stats::{Layout, Stats};
/// use latchfree::tower::StatsLayer;
///
/// let stats = Stats::new();
/// let layer = StatsLayer::new(&stats)
///     .buckets(Layout::fixed([0.001, 0.01, 0.1, 1.0])?)
///     .max_routes(20)
///     // Routes from anything the request carries; here, the first segment.
///     .route(|req: &http::Request<()>| {
///         req.uri().path().split('/').nth(1).unwrap_or("").to_owned()
///     });
/// # let _ = layer;
/// # Ok::<(), latchfree::stats::StatsError>(())
/// ```
#[must_use]
pub struct StatsLayer<C = PathRoute> {
    cache: Arc<SeriesCache>,
    classifier: Arc<C>,
}

impl<C> Clone for StatsLayer<C> {
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<C> std::fmt::Debug for StatsLayer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsLayer")
            .field("max_routes", &self.cache.config.max_routes)
            .field("routes", &self.cache.routes())
            .field("audit", &self.cache.config.audit.is_some())
            .finish_non_exhaustive()
    }
}

impl StatsLayer {
    /// A layer recording into `stats` (a clone of the handle), routes by
    /// path ([`PathRoute`]), durations on [`DEFAULT_BUCKETS`], at most
    /// [`DEFAULT_MAX_ROUTES`] routes, no audit. Describes the metrics
    /// (`# HELP`, and the duration's unit) now.
    pub fn new(stats: &Stats) -> Self {
        let config = Config {
            stats: stats.clone(),
            layout: Layout::fixed(DEFAULT_BUCKETS).unwrap_or_default(),
            max_routes: DEFAULT_MAX_ROUTES,
            audit: None,
        };
        Self {
            cache: Arc::new(SeriesCache::new(config)),
            classifier: Arc::new(PathRoute),
        }
    }
}

impl<C> StatsLayer<C> {
    /// The same layer with its configuration changed by `f`, and a fresh
    /// cache (the builder methods are called before the layer serves).
    fn reconfigure(self, f: impl FnOnce(&mut Config)) -> Self {
        let mut config = self.cache.config.clone();
        f(&mut config);
        Self {
            cache: Arc::new(SeriesCache::new(config)),
            classifier: self.classifier,
        }
    }

    /// Names routes with `classifier` instead of by path; see
    /// [`RouteClassifier`]. With axum, read the route pattern from the
    /// `MatchedPath` extension and add the layer with `Router::route_layer`
    /// (under `Router::layer` the route is not matched yet):
    ///
    /// ```ignore
    /// StatsLayer::new(&stats).route(|req: &http::Request<axum::body::Body>| {
    ///     req.extensions()
    ///         .get::<axum::extract::MatchedPath>()
    ///         .map_or("unmatched", |path| path.as_str())
    ///         .to_owned()
    /// })
    /// ```
    pub fn route<D>(self, classifier: D) -> StatsLayer<D> {
        StatsLayer {
            cache: self.cache,
            classifier: Arc::new(classifier),
        }
    }

    /// The bucket layout of `http_request_duration_seconds`, in seconds.
    pub fn buckets(self, layout: Layout) -> Self {
        self.reconfigure(|config| config.layout = layout)
    }

    /// Distinct routes admitted before further ones are recorded as
    /// `route="other"` (which takes no place). 0 records every request as
    /// `other`.
    pub fn max_routes(self, routes: usize) -> Self {
        self.reconfigure(|config| config.max_routes = routes)
    }

    /// Logs one record per completed request to `log` (a clone of the
    /// handle): `{"method","route","status","duration_ns"}`. A refused
    /// record is counted in `http_audit_errors_total`; the request never
    /// fails for it.
    pub fn audit(self, log: &AuditLog) -> Self {
        self.reconfigure(|config| config.audit = Some(log.clone()))
    }

    /// Registrations the [`Stats`] refused (another kind already under one
    /// of the layer's names, or no slots left): the requests they were for
    /// were not recorded, and were otherwise served as usual.
    pub fn rejected(&self) -> u64 {
        self.cache.rejected()
    }

    /// Distinct routes admitted so far (at most
    /// [`max_routes`](Self::max_routes)).
    pub fn routes(&self) -> usize {
        self.cache.routes()
    }
}

impl<S, C> Layer<S> for StatsLayer<C> {
    type Service = StatsService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        StatsService {
            inner,
            cache: self.cache.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// The service a [`StatsLayer`] wraps around `S`: `S`'s responses, recorded.
pub struct StatsService<S, C = PathRoute> {
    inner: S,
    cache: Arc<SeriesCache>,
    classifier: Arc<C>,
}

impl<S: Clone, C> Clone for StatsService<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            cache: self.cache.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<S: std::fmt::Debug, C> std::fmt::Debug for StatsService<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, C, B, ResBody> Service<Request<B>> for StatsService<S, C>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    C: RouteClassifier<B>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let series = {
            let route = self.classifier.route(&request);
            self.cache.series(request.method(), &route)
        };
        let pending = series.map(|series| {
            series.in_flight.increment();
            Pending {
                series,
                cache: self.cache.clone(),
                start: Instant::now(),
                finished: false,
            }
        });
        ResponseFuture {
            inner: self.inner.call(request),
            pending,
        }
    }
}

pin_project! {
    /// The response future of a [`StatsService`]: the inner service's,
    /// recorded when it completes. Dropping it before then takes the
    /// request out of `http_requests_in_flight` and records nothing else.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        pending: Option<Pending>,
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("pending", &self.pending.is_some())
            .finish_non_exhaustive()
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = ready!(this.inner.poll(cx));
        if let Some(pending) = this.pending.take() {
            pending.finish(output.as_ref().ok().map(|r| r.status().as_u16()));
        }
        Poll::Ready(output)
    }
}

/// A request in flight: counted in the gauge until [`finish`](Self::finish)
/// or its drop takes it out.
struct Pending {
    series: Arc<Series>,
    cache: Arc<SeriesCache>,
    start: Instant,
    finished: bool,
}

/// The audit record of a request.
#[derive(Serialize)]
struct RequestRecord<'a> {
    method: &'a str,
    route: &'a str,
    status: Option<u16>,
    duration_ns: u64,
}

impl Pending {
    /// Records the completed request: `status` of its response, or `None`
    /// for the service's error.
    fn finish(mut self, status: Option<u16>) {
        self.finished = true;
        let elapsed = self.start.elapsed();
        let series = &*self.series;
        let cache = &*self.cache;
        let status_counter = status.and_then(|code| cache.status_counter(series, code));
        cache.config.stats.batch(|b| {
            if let Some(counter) = &status_counter {
                b.inc(counter);
            }
            match status {
                Some(code) if (500..600).contains(&code) => b.inc(&series.status_5xx),
                Some(_) => {}
                None => b.inc(&series.service_errors),
            }
            b.record_f64(&series.duration, elapsed.as_secs_f64());
            b.add_gauge(&series.in_flight, -1.0);
        });
        if let Some(log) = &cache.config.audit {
            let record = RequestRecord {
                method: series.method,
                route: &series.route,
                status,
                duration_ns: u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            };
            if log.log(&record).is_err()
                && let Some(errors) = &cache.audit_errors
            {
                errors.inc();
            }
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.finished {
            self.series.in_flight.decrement();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tower::REQUESTS_IN_FLIGHT;
    use std::convert::Infallible;
    use std::sync::mpsc;

    /// Answers with the status in the request's body once `release` fires.
    #[derive(Clone)]
    struct Gate {
        release: Arc<std::sync::Mutex<Option<mpsc::Receiver<()>>>>,
    }

    struct GateFuture(Arc<std::sync::Mutex<Option<mpsc::Receiver<()>>>>, u16);

    impl Future for GateFuture {
        type Output = Result<Response<String>, Infallible>;
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
            let guard = self.0.lock().unwrap();
            match guard.as_ref().map(|rx| rx.try_recv()) {
                Some(Ok(())) => {
                    let mut response = Response::new(String::new());
                    *response.status_mut() = http::StatusCode::from_u16(self.1).unwrap();
                    Poll::Ready(Ok(response))
                }
                _ => Poll::Pending,
            }
        }
    }

    impl Service<Request<u16>> for Gate {
        type Response = Response<String>;
        type Error = Infallible;
        type Future = GateFuture;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, request: Request<u16>) -> GateFuture {
            GateFuture(self.release.clone(), *request.body())
        }
    }

    fn poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(std::task::Waker::noop()))
    }

    fn in_flight(stats: &Stats) -> Option<f64> {
        stats
            .snapshot()
            .gauge_with(REQUESTS_IN_FLIGHT, &[("method", "GET"), ("route", "/slow")])
    }

    #[test]
    fn a_dropped_pending_future_leaves_the_in_flight_gauge() {
        let stats = Stats::new();
        let (tx, rx) = mpsc::channel();
        let gate = Gate {
            release: Arc::new(std::sync::Mutex::new(Some(rx))),
        };
        let mut service = StatsLayer::new(&stats).layer(gate);
        let request = || Request::get("/slow").body(503).unwrap();

        let mut first = Box::pin(service.call(request()));
        let mut second = Box::pin(service.call(request()));
        assert!(poll_once(first.as_mut()).is_pending());
        assert!(poll_once(second.as_mut()).is_pending());
        assert_eq!(in_flight(&stats), Some(2.0));

        // Cancelled: out of flight, and counted nowhere else.
        drop(first);
        assert_eq!(in_flight(&stats), Some(1.0));

        tx.send(()).unwrap();
        let response = match poll_once(second.as_mut()) {
            Poll::Ready(Ok(response)) => response,
            _ => panic!("released"),
        };
        assert_eq!(response.status(), 503);
        drop(second);
        let snap = stats.snapshot();
        assert_eq!(in_flight(&stats), Some(0.0));
        let labels = [("method", "GET"), ("route", "/slow")];
        let status = [labels[0], labels[1], ("status", "503")];
        assert_eq!(snap.counter_with("http_requests_total", &status), Some(1));
        let five = [labels[0], labels[1], ("kind", "5xx")];
        assert_eq!(
            snap.counter_with("http_request_errors_total", &five),
            Some(1)
        );
        let duration = snap
            .histogram_with("http_request_duration_seconds", &labels)
            .unwrap();
        assert_eq!(duration.count(), 1);
    }

    #[test]
    fn a_future_dropped_before_its_first_poll_leaves_it_too() {
        let stats = Stats::new();
        let gate = Gate {
            release: Arc::new(std::sync::Mutex::new(None)),
        };
        let mut service = StatsLayer::new(&stats).layer(gate);
        let future = service.call(Request::get("/slow").body(200).unwrap());
        assert_eq!(in_flight(&stats), Some(1.0));
        drop(future);
        assert_eq!(in_flight(&stats), Some(0.0));
        assert_eq!(
            stats.snapshot().counter_with(
                "http_requests_total",
                &[("method", "GET"), ("route", "/slow"), ("status", "200")]
            ),
            None
        );
    }

    /// Fails every request with the error in its body.
    #[derive(Clone)]
    struct Failing;

    impl Service<Request<&'static str>> for Failing {
        type Response = Response<String>;
        type Error = &'static str;
        type Future = std::future::Ready<Result<Response<String>, &'static str>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), &'static str>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, request: Request<&'static str>) -> Self::Future {
            std::future::ready(Err(*request.body()))
        }
    }

    #[test]
    fn a_service_error_is_counted_and_audited_without_a_status() {
        let stats = Stats::new();
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        let layer = StatsLayer::new(&stats)
            .audit(&log)
            .route(|_: &Request<&'static str>| "all");
        let mut service = layer.layer(Failing);
        for _ in 0..3 {
            let future = service.call(Request::post("/x?token=t").body("boom").unwrap());
            let out = poll_once(std::pin::pin!(future));
            assert!(matches!(out, Poll::Ready(Err("boom"))));
        }
        let snap = stats.snapshot();
        let labels = [("method", "POST"), ("route", "all")];
        let service_kind = [labels[0], labels[1], ("kind", "service")];
        assert_eq!(
            snap.counter_with("http_request_errors_total", &service_kind),
            Some(3)
        );
        let five = [labels[0], labels[1], ("kind", "5xx")];
        assert_eq!(
            snap.counter_with("http_request_errors_total", &five),
            Some(0)
        );
        assert_eq!(snap.gauge_with(REQUESTS_IN_FLIGHT, &labels), Some(0.0));
        let duration = snap.histogram_with("http_request_duration_seconds", &labels);
        assert_eq!(duration.map(|h| h.count()), Some(3));
        assert!(!snap.to_prometheus().contains("http_requests_total{"));

        log.close().unwrap();
        let file = crate::audit::verify::stream_files(dir.path(), "audit").unwrap();
        let text = std::fs::read_to_string(&file[0]).unwrap();
        let events: Vec<_> = text
            .lines()
            .map(|line| {
                crate::audit::record::decode(line.as_bytes())
                    .unwrap()
                    .event
                    .unwrap()
            })
            .collect();
        assert_eq!(events.len(), 3);
        for event in events {
            assert_eq!(event["method"], "POST");
            assert_eq!(event["route"], "all");
            assert!(event["status"].is_null());
            assert!(!event.to_string().contains("token"));
        }
        assert_eq!(snap.counter("http_audit_errors_total"), Some(0));
    }

    #[test]
    fn a_refused_audit_record_is_counted_and_the_request_still_served() {
        let stats = Stats::new();
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        let gate = Gate {
            release: Arc::new(std::sync::Mutex::new(None)),
        };
        let (tx, rx) = mpsc::channel();
        *gate.release.lock().unwrap() = Some(rx);
        let mut service = StatsLayer::new(&stats).audit(&log).layer(gate);
        log.close().unwrap();
        tx.send(()).unwrap();
        let future = service.call(Request::get("/slow").body(200).unwrap());
        let out = poll_once(std::pin::pin!(future));
        assert!(matches!(out, Poll::Ready(Ok(ref r)) if r.status() == 200));
        assert_eq!(stats.snapshot().counter("http_audit_errors_total"), Some(1));
    }
}
