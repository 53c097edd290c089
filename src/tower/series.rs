//! The layer's handles, registered once and cached: a route's entry is
//! found in a lock-free index, its method's handles in an array, a status
//! counter in a second index. A miss registers under the registry's lock,
//! once per (route, method) and per status.
//!
//! Admission: a route not yet in the index takes one of `max_routes`
//! places by a `fetch_add` made while its (vacant) index entry is held, so
//! two racing requests for one new route take one place, and racing
//! requests for different routes never take more places than there are.
//! A route that finds no place is recorded under the `other` entry, which
//! is outside the index and takes no place.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use http::Method;
use scc::HashIndex;
use scc::hash_index::Entry;

use crate::audit::AuditLog;
use crate::stats::{Counter, Gauge, Histogram, Layout, Stats};

/// Requests completed with a response, by `method`, `route` and `status`.
pub const REQUESTS_TOTAL: &str = "http_requests_total";
/// Requests handed to the inner service whose future has neither completed
/// nor been dropped, by `method` and `route`.
pub const REQUESTS_IN_FLIGHT: &str = "http_requests_in_flight";
/// Seconds from the call to the response's head, by `method` and `route`.
pub const REQUEST_DURATION_SECONDS: &str = "http_request_duration_seconds";
/// Failed requests by `method`, `route` and `kind`: `5xx` (a response with
/// a 5xx status) or `service` (the inner service returned `Err`).
pub const REQUEST_ERRORS_TOTAL: &str = "http_request_errors_total";
/// Audit records the log refused (with [`StatsLayer::audit`](super::StatsLayer::audit)).
pub const AUDIT_ERRORS_TOTAL: &str = "http_audit_errors_total";

/// The route label of requests over the route limit.
pub(super) const OTHER: &str = "other";

/// The method labels, in the order of [`RouteEntry::methods`].
const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", OTHER,
];

/// `method`'s place in [`METHODS`]: extension methods share `other`.
pub(super) fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::CONNECT => 5,
        Method::OPTIONS => 6,
        Method::TRACE => 7,
        Method::PATCH => 8,
        _ => 9,
    }
}

/// What the layer was configured with.
#[derive(Clone, Debug)]
pub(super) struct Config {
    pub(super) stats: Stats,
    pub(super) layout: Layout,
    pub(super) max_routes: usize,
    pub(super) audit: Option<AuditLog>,
}

/// One (route, method)'s handles.
#[derive(Debug)]
pub(super) struct Series {
    pub(super) method: &'static str,
    pub(super) route: Arc<str>,
    pub(super) in_flight: Gauge,
    pub(super) duration: Histogram,
    pub(super) status_5xx: Counter,
    pub(super) service_errors: Counter,
    /// `http_requests_total` by status code.
    statuses: HashIndex<u16, Counter>,
}

/// One route's series, one per method, registered on first use; `None`
/// when the stats refused the registration.
#[derive(Debug, Default)]
struct RouteEntry {
    methods: [OnceLock<Option<Arc<Series>>>; METHODS.len()],
}

/// The handles of every route the layer has seen, and its counters.
#[derive(Debug)]
pub(super) struct SeriesCache {
    pub(super) config: Config,
    routes: HashIndex<Arc<str>, Arc<RouteEntry>>,
    other: RouteEntry,
    admitted: AtomicUsize,
    rejected: AtomicU64,
    pub(super) audit_errors: Option<Counter>,
}

impl SeriesCache {
    /// A cache over `config`, with the metrics described (help and unit)
    /// before any series of them exists.
    pub(super) fn new(config: Config) -> Self {
        let stats = &config.stats;
        let described = [
            (
                REQUESTS_TOTAL,
                "HTTP requests completed with a response.",
                None,
            ),
            (REQUESTS_IN_FLIGHT, "HTTP requests being handled.", None),
            (
                REQUEST_DURATION_SECONDS,
                "Time from an HTTP request's call to its response's head.",
                Some("seconds"),
            ),
            (
                REQUEST_ERRORS_TOTAL,
                "HTTP requests that failed: kind=\"5xx\" by status, kind=\"service\" by the service's error.",
                None,
            ),
        ];
        let mut rejected = 0;
        for (name, help, unit) in described {
            // The names are constants a test checks; a refusal is counted.
            if stats.describe_family(name, Some(help), unit).is_err() {
                rejected += 1;
            }
        }
        let audit_errors = config.audit.as_ref().and_then(|_| {
            let counter = stats.counter(AUDIT_ERRORS_TOTAL).ok();
            let help = "Per-request audit records the audit log refused.";
            if counter.is_none() || stats.describe(AUDIT_ERRORS_TOTAL, help).is_err() {
                rejected += 1;
            }
            counter
        });
        Self {
            config,
            routes: HashIndex::new(),
            other: RouteEntry::default(),
            admitted: AtomicUsize::new(0),
            rejected: AtomicU64::new(rejected),
            audit_errors,
        }
    }

    /// Registrations the stats refused (their requests were not recorded).
    pub(super) fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Distinct routes admitted (at most `max_routes`).
    pub(super) fn routes(&self) -> usize {
        self.admitted.load(Ordering::Relaxed)
    }

    /// The handles for `method` on `route` (or on `other`, past the route
    /// limit); `None` if the stats refused them.
    pub(super) fn series(&self, method: &Method, route: &str) -> Option<Arc<Series>> {
        let index = method_index(method);
        let found = self
            .routes
            .peek_with(route, |_, entry| entry.methods[index].get().cloned());
        match found {
            Some(Some(series)) => series,
            Some(None) | None => {
                let entry = self.entry(route);
                let (entry, route) = match &entry {
                    Some(entry) => (&**entry, route),
                    None => (&self.other, OTHER),
                };
                entry.methods[index]
                    .get_or_init(|| self.register(METHODS[index], route))
                    .clone()
            }
        }
    }

    /// `route`'s entry, admitted now if there is a place; `None` past the
    /// limit.
    fn entry(&self, route: &str) -> Option<Arc<RouteEntry>> {
        if route == OTHER {
            return None;
        }
        if let Some(entry) = self.routes.peek_with(route, |_, entry| entry.clone()) {
            return Some(entry);
        }
        match self.routes.entry_sync(Arc::from(route)) {
            Entry::Occupied(occupied) => Some(occupied.get().clone()),
            Entry::Vacant(vacant) => {
                // Relaxed: the count is only compared with the limit; the
                // entry lock orders racing admissions of one route.
                if self.admitted.fetch_add(1, Ordering::Relaxed) < self.config.max_routes {
                    let entry = Arc::new(RouteEntry::default());
                    vacant.insert_entry(entry.clone());
                    Some(entry)
                } else {
                    self.admitted.fetch_sub(1, Ordering::Relaxed);
                    None
                }
            }
        }
    }

    /// Registers `method` on `route`'s handles.
    fn register(&self, method: &'static str, route: &str) -> Option<Arc<Series>> {
        let stats = &self.config.stats;
        let labels = [("method", method), ("route", route)];
        let error = |kind| {
            stats.counter_with(
                REQUEST_ERRORS_TOTAL,
                &[("method", method), ("route", route), ("kind", kind)],
            )
        };
        let series = (|| {
            Ok::<_, crate::stats::StatsError>(Series {
                method,
                route: Arc::from(route),
                in_flight: stats.gauge_with(REQUESTS_IN_FLIGHT, &labels)?,
                duration: stats.histogram_with_layout(
                    REQUEST_DURATION_SECONDS,
                    &labels,
                    &self.config.layout,
                )?,
                status_5xx: error("5xx")?,
                service_errors: error("service")?,
                statuses: HashIndex::new(),
            })
        })();
        match series {
            Ok(series) => Some(Arc::new(series)),
            Err(_) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// `series`' counter for `status`, registered on first use.
    pub(super) fn status_counter(&self, series: &Series, status: u16) -> Option<Counter> {
        if let Some(counter) = series.statuses.peek_with(&status, |_, c| c.clone()) {
            return Some(counter);
        }
        match series.statuses.entry_sync(status) {
            Entry::Occupied(occupied) => Some(occupied.get().clone()),
            Entry::Vacant(vacant) => {
                let mut code = itoa_status(status);
                let code = code.as_str();
                let labels = [
                    ("method", series.method),
                    ("route", &*series.route),
                    ("status", code),
                ];
                match self.config.stats.counter_with(REQUESTS_TOTAL, &labels) {
                    Ok(counter) => {
                        vacant.insert_entry(counter.clone());
                        Some(counter)
                    }
                    Err(_) => {
                        self.rejected.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                }
            }
        }
    }
}

/// A status code's digits, without an allocation.
struct StatusDigits([u8; 3]);

impl StatusDigits {
    fn as_str(&mut self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("000")
    }
}

fn itoa_status(status: u16) -> StatusDigits {
    let status = status.min(999);
    StatusDigits([
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(max_routes: usize) -> SeriesCache {
        SeriesCache::new(Config {
            stats: Stats::new(),
            layout: Layout::fixed(crate::stats::DEFAULT_BUCKETS).unwrap(),
            max_routes,
            audit: None,
        })
    }

    #[test]
    fn routes_past_the_limit_share_other_and_take_no_place() {
        let cache = cache(2);
        let a = cache.series(&Method::GET, "/a").unwrap();
        let b = cache.series(&Method::GET, "/b").unwrap();
        let c = cache.series(&Method::GET, "/c").unwrap();
        let d = cache.series(&Method::POST, "/d").unwrap();
        assert_eq!(
            (&*a.route, &*b.route, &*c.route, &*d.route),
            ("/a", "/b", OTHER, OTHER)
        );
        assert_eq!(cache.routes(), 2);
        // An admitted route stays admitted, for every method.
        assert_eq!(&*cache.series(&Method::PUT, "/a").unwrap().route, "/a");
        assert!(Arc::ptr_eq(&a, &cache.series(&Method::GET, "/a").unwrap()));
        assert!(Arc::ptr_eq(&c, &cache.series(&Method::GET, "/e").unwrap()));
        assert_eq!(cache.rejected(), 0);
    }

    #[test]
    fn extension_methods_are_other_and_status_digits_are_exact() {
        let cache = cache(8);
        let method = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(cache.series(&method, "/a").unwrap().method, OTHER);
        for (status, text) in [(200, "200"), (404, "404"), (503, "503"), (999, "999")] {
            assert_eq!(itoa_status(status).as_str(), text);
        }
    }

    #[test]
    fn a_refused_registration_is_counted_not_panicked() {
        let cache = cache(8);
        // Another kind under the layer's name: every registration fails.
        cache
            .config
            .stats
            .counter_with(REQUESTS_IN_FLIGHT, &[("x", "y")])
            .unwrap();
        assert!(cache.series(&Method::GET, "/a").is_none());
        assert_eq!(cache.rejected(), 1);
    }
}
