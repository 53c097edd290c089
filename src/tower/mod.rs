//! HTTP metrics for any `tower` stack (feature `tower`): [`StatsLayer`]
//! records every request into a [`Stats`](crate::stats::Stats), optionally
//! with one audit record each, and [`MetricsService`] serves the stats on
//! `GET /metrics`. axum, tonic and hyper services are `tower` services, so
//! both plug into them; the library depends on the small trait crates
//! (`tower-layer`, `tower-service`, `http`), not on `tower` or axum.
//!
//! # What a request records
//!
//! | series | kind | labels |
//! |---|---|---|
//! | `http_requests_total` | counter | `method`, `route`, `status` |
//! | `http_requests_in_flight` | gauge | `method`, `route` |
//! | `http_request_duration_seconds` | histogram | `method`, `route` |
//! | `http_request_errors_total` | counter | `method`, `route`, `kind` (`5xx` or `service`) |
//! | `http_audit_errors_total` | counter | none (with [`StatsLayer::audit`]) |
//!
//! The in-flight gauge goes up when the request is handed to the inner
//! service and down when its response future completes **or is dropped**:
//! a client that hangs up, a timeout above this layer, a `select!` that
//! loses, none of them leaks a count. A dropped request records nothing
//! else (it has no status). When the future completes, the status counter,
//! the duration sample, the error counter and the in-flight decrement are
//! one [`Stats::batch`](crate::stats::Stats::batch): a scrape sees a
//! request as finished in all of them or in none.
//!
//! The duration is the time to the response's head (the future's output),
//! not to the end of a streamed body, measured with [`Instant`]; the
//! histogram has Prometheus' default buckets ([`DEFAULT_BUCKETS`], 5 ms to
//! 10 s) unless [`StatsLayer::buckets`] chooses others.
//!
//! An inner service's `Err` counts as `kind="service"`; it has no status,
//! so it adds no `http_requests_total` sample (the server above turns it
//! into whatever response it makes). A response with a 5xx status counts
//! in `http_requests_total` under its status and as `kind="5xx"`.
//!
//! # Bounded labels
//!
//! Every label value is a series of its own, with its own slots in every
//! thread's shard, so each label must take few values whatever the
//! clients send:
//!
//! * **method**: the nine standard methods by name; any other (HTTP allows
//!   extension methods) is `other`.
//! * **status**: the three digits; at most 900 values.
//! * **route**: what the [`RouteClassifier`] says. The default,
//!   [`PathRoute`], is the request's path, which is right for a service
//!   whose paths are fixed (`/health`, `/v1/search`) and wrong for one with
//!   ids in them (`/users/42`). A router knows the route *pattern*: axum
//!   puts it in the request's extensions as `MatchedPath` for layers added
//!   with `Router::route_layer`, and [`StatsLayer::route`] takes a closure
//!   that reads it (the `axum_service` example). Whatever the classifier,
//!   the layer admits at most [`StatsLayer::max_routes`] distinct routes
//!   (default [`DEFAULT_MAX_ROUTES`]); requests for any route after those
//!   are recorded as `route="other"`. So a scanner probing ten thousand
//!   paths costs one series, not ten thousand, and the path default is
//!   safe to start with; the first routes admitted are the ones kept, which
//!   is why a service with parameters in its paths should classify.
//!
//! # Cost per request
//!
//! Handles are registered once per (route, method) and per status, and
//! cached in the layer: a request looks its route up in an
//! [`scc::HashIndex`] (lock-free reads), picks its method's handles from an
//! array, and its status counter from a second index; the first request of
//! each registers under the registry's lock. Recording is the batch above:
//! writes to this thread's shard, no shared line.
//!
//! # Audit
//!
//! With [`StatsLayer::audit`], each completed request is logged as
//! `{"method":"GET","route":"/users/{id}","status":200,"duration_ns":81234}`
//! (`status` is `null` for a service error): the same bounded labels, never
//! the path, the query string or a header, so no secret a client sent ends
//! up in the log unless a custom classifier puts it in the route. [`log`]
//! does not block under the log's default guarantee; a refusal (a full ring
//! under `OnFull::Drop`, a closed log) is counted in
//! `http_audit_errors_total` and never fails the request.
//!
//! [`log`]: crate::audit::AuditLog::log
//! [`Instant`]: std::time::Instant
//! [`DEFAULT_BUCKETS`]: crate::stats::DEFAULT_BUCKETS
//!
//! # Example
//!
//! ```
//! use latchfree::stats::Stats;
//! use latchfree::tower::{MetricsService, StatsLayer};
//! use tower_layer::Layer;
//! use tower_service::Service;
//!
//! # #[derive(Clone)]
//! # struct Hello;
//! # impl Service<http::Request<String>> for Hello {
//! #     type Response = http::Response<String>;
//! #     type Error = std::convert::Infallible;
//! #     type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
//! #     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
//! #         std::task::Poll::Ready(Ok(()))
//! #     }
//! #     fn call(&mut self, _: http::Request<String>) -> Self::Future {
//! #         std::future::ready(Ok(http::Response::new("hello".to_owned())))
//! #     }
//! # }
//! # fn block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     let mut f = std::pin::pin!(f);
//! #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
//! #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
//! # }
//! let stats = Stats::new();
//! // `Hello` is any service of `http::Request<_>` to `http::Response<_>`.
//! let mut app = StatsLayer::new(&stats).layer(Hello);
//! let request = http::Request::get("/hello").body(String::new())?;
//! let response = block_on(app.call(request))?;
//! assert_eq!(response.status(), 200);
//!
//! let labels = [("method", "GET"), ("route", "/hello"), ("status", "200")];
//! assert_eq!(stats.snapshot().counter_with("http_requests_total", &labels), Some(1));
//!
//! let mut metrics = MetricsService::new(&stats);
//! let scrape = block_on(metrics.call(http::Request::get("/metrics").body(())?))?;
//! assert!(scrape.body().contains("# HELP http_requests_total"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod layer;
mod metrics_service;
mod series;

pub use layer::{
    DEFAULT_MAX_ROUTES, PathRoute, ResponseFuture, RouteClassifier, StatsLayer, StatsService,
};
pub use metrics_service::{MetricsService, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE};
pub use series::{
    AUDIT_ERRORS_TOTAL, REQUEST_DURATION_SECONDS, REQUEST_ERRORS_TOTAL, REQUESTS_IN_FLIGHT,
    REQUESTS_TOTAL,
};

// What a server needs of them, pinned at compile time: axum's
// `route_layer` and `route_service` require `Send + Sync` services and
// `Send` futures.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    const fn send<T: Send>() {}
    send_sync::<StatsLayer>();
    send_sync::<StatsService<MetricsService>>();
    send_sync::<MetricsService>();
    send::<ResponseFuture<std::future::Ready<()>>>();
};
