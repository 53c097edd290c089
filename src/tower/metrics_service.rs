//! [`MetricsService`]: a [`Stats`] as a `tower` service that answers
//! scrapes, in the Prometheus text format or in OpenMetrics when the
//! scraper's `Accept` header asks for it.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

use http::header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use tower_service::Service;

use crate::stats::Stats;

/// The content type of the Prometheus text format (the default answer).
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The content type of OpenMetrics text, answered when the request's
/// `Accept` lists `application/openmetrics-text` (with a `q` above 0).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves a snapshot of a [`Stats`] per request: `GET` or `HEAD` answer
/// `200` with the text, any other method `405` with `Allow: GET, HEAD`.
/// The path is not looked at: mount it where it belongs (with axum,
/// `Router::route_service("/metrics", MetricsService::new(&stats))`).
///
/// Cheap to clone, `Send + Sync`, never fails (`Error = Infallible`), and
/// ready at once; its future is [`Ready`].
///
/// ```
/// use latchfree::stats::Stats;
/// use latchfree::tower::{MetricsService, OPENMETRICS_CONTENT_TYPE};
/// use tower_service::Service;
///
/// let stats = Stats::new();
/// stats.counter("jobs_total")?.add(3);
/// let mut service = MetricsService::new(&stats);
/// let request = http::Request::get("/metrics")
///     .header("accept", "application/openmetrics-text; version=1.0.0")
///     .body(())?;
/// let response = std::future::Future::poll(
///     std::pin::pin!(service.call(request)),
///     &mut std::task::Context::from_waker(std::task::Waker::noop()),
/// );
/// let std::task::Poll::Ready(Ok(response)) = response else { unreachable!() };
/// assert_eq!(response.headers()["content-type"], OPENMETRICS_CONTENT_TYPE);
/// assert!(response.body().contains("jobs_total 3"));
/// assert!(response.body().ends_with("# EOF\n"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct MetricsService {
    stats: Stats,
}

impl MetricsService {
    /// A service answering with snapshots of `stats` (a clone of the handle).
    pub fn new(stats: &Stats) -> Self {
        Self {
            stats: stats.clone(),
        }
    }

    /// The response to a request with `method` and `headers`.
    fn respond(&self, method: &Method, headers: &HeaderMap) -> Response<String> {
        if method != Method::GET && method != Method::HEAD {
            let mut response = Response::new(String::new());
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let snapshot = self.stats.snapshot();
        let (body, content_type) = if wants_openmetrics(headers) {
            (snapshot.to_openmetrics(), OPENMETRICS_CONTENT_TYPE)
        } else {
            (snapshot.to_prometheus(), PROMETHEUS_CONTENT_TYPE)
        };
        let mut response = Response::new(body);
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }
}

impl<B> Service<Request<B>> for MetricsService {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ready(Ok(self.respond(request.method(), request.headers())))
    }
}

/// Whether an `Accept` header lists `application/openmetrics-text` with a
/// quality above 0 (`q=0` means "not this").
fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("");
            media.eq_ignore_ascii_case("application/openmetrics-text")
                && parts.all(|param| {
                    let Some((key, value)) = param.split_once('=') else {
                        return true;
                    };
                    !key.trim().eq_ignore_ascii_case("q")
                        || value.trim().parse::<f64>().is_ok_and(|q| q > 0.0)
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(ACCEPT, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn openmetrics_is_chosen_only_when_asked_for() {
        assert!(!wants_openmetrics(&accept(&[])));
        assert!(!wants_openmetrics(&accept(&["text/plain"])));
        assert!(wants_openmetrics(&accept(&[
            "application/openmetrics-text"
        ])));
        // What Prometheus sends.
        assert!(wants_openmetrics(&accept(&[
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.1"
        ])));
        assert!(wants_openmetrics(&accept(&[
            "text/plain",
            "Application/OpenMetrics-Text"
        ])));
        assert!(!wants_openmetrics(&accept(&[
            "application/openmetrics-text; q=0"
        ])));
        assert!(!wants_openmetrics(&accept(&[
            "application/openmetrics-text;q=nope"
        ])));
    }

    #[test]
    fn other_methods_are_refused_with_allow() {
        let service = MetricsService::new(&Stats::new());
        let response = service.respond(&Method::POST, &HeaderMap::new());
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[ALLOW], "GET, HEAD");
        let response = service.respond(&Method::GET, &HeaderMap::new());
        assert_eq!(response.headers()[CONTENT_TYPE], PROMETHEUS_CONTENT_TYPE);
    }
}
