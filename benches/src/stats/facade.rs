//! The `metrics` facade rows of the `stats` workload: latchfree's
//! [`MetricsRecorder`] against `metrics-exporter-prometheus`'s recorder
//! (built with `build_recorder`, no HTTP listener) through the same facade,
//! and `prometheus-client` (`Family<Vec<(String, String)>, Counter>`) through
//! its own API, which is how its users record.
//!
//! * `facade_handle_inc`: a registered handle's `increment(1)` (a
//!   `metrics::Counter` from `counter!` once; the family's `Counter` once).
//! * `facade_labelled_call`: `counter!("requests_total", "route" => R)
//!   .increment(1)` per call, `R` one of four routes by call number (the
//!   family's `get_or_create(&labels).inc()` with prebuilt label sets).
//! * `facade_histogram`: a registered histogram handle's `record(v)`, the
//!   same 11 Prometheus default buckets in all three.
//! * `render_1000`: rendering the text of 1,000 labelled counter series.
//!
//! Every row checks its exact count afterwards: the snapshot's series, the
//! exporter's rendered text, or the family's counter.

use std::hint::black_box;

use metrics::{Key, Label, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use prometheus_client::metrics::counter::Counter as PcCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram as PcHistogram;
use prometheus_client::registry::Registry as PcRegistry;

use crate::{Case, Target, expect_eq};
use latchfree::stats::{DEFAULT_BUCKETS, MetricsRecorder, Stats};

const ROUTES: [&str; 4] = ["/a", "/b", "/c", "/d"];
/// Series rendered by `render_1000`.
pub const RENDER_SERIES: usize = 1_000;

type Labels = Vec<(String, String)>;

/// The facade cases.
pub fn cases() -> Vec<Case> {
    let case = |op, imp, guarantee, make| Case {
        workload: "stats",
        op,
        imp,
        guarantee,
        latency: false,
        make,
    };
    vec![
        case("facade_handle_inc", "latchfree", "exact", |_| {
            Box::new(Facade::latchfree(Op::Handle))
        }),
        case(
            "facade_handle_inc",
            "metrics-exporter-prometheus",
            "exact",
            |_| Box::new(Facade::exporter(Op::Handle)),
        ),
        case("facade_handle_inc", "prometheus-client", "exact", |_| {
            Box::new(Client::new(Op::Handle))
        }),
        case("facade_labelled_call", "latchfree", "exact", |_| {
            Box::new(Facade::latchfree(Op::PerCall))
        }),
        case(
            "facade_labelled_call",
            "metrics-exporter-prometheus",
            "exact",
            |_| Box::new(Facade::exporter(Op::PerCall)),
        ),
        case("facade_labelled_call", "prometheus-client", "exact", |_| {
            Box::new(Client::new(Op::PerCall))
        }),
        case("facade_histogram", "latchfree", "exact", |_| {
            Box::new(Facade::latchfree(Op::Histogram))
        }),
        case(
            "facade_histogram",
            "metrics-exporter-prometheus",
            "exact",
            |_| Box::new(Facade::exporter(Op::Histogram)),
        ),
        case("facade_histogram", "prometheus-client", "exact", |_| {
            Box::new(Client::new(Op::Histogram))
        }),
        case("render_1000", "latchfree", "exact", |_| {
            Box::new(Facade::latchfree(Op::Render))
        }),
        case(
            "render_1000",
            "metrics-exporter-prometheus",
            "exact",
            |_| Box::new(Facade::exporter(Op::Render)),
        ),
        case("render_1000", "prometheus-client", "exact", |_| {
            Box::new(Client::new(Op::Render))
        }),
    ]
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Handle,
    PerCall,
    Histogram,
    Render,
}

/// The recorder behind the facade, and how to read it back.
enum Backend {
    Latchfree(MetricsRecorder),
    Exporter(PrometheusRecorder, PrometheusHandle),
}

/// A facade row: the recorder and the handles registered through it.
struct Facade {
    op: Op,
    backend: Backend,
    counter: metrics::Counter,
    histogram: metrics::Histogram,
}

fn route_key(route: &'static str) -> Key {
    Key::from_parts("requests_total", vec![Label::new("route", route)])
}

impl Facade {
    fn latchfree(op: Op) -> Self {
        Self::new(op, Backend::Latchfree(MetricsRecorder::new(&Stats::new())))
    }

    fn exporter(op: Op) -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&DEFAULT_BUCKETS)
            .expect("non-empty buckets")
            .build_recorder();
        let handle = recorder.handle();
        Self::new(op, Backend::Exporter(recorder, handle))
    }

    fn recorder(&self) -> &dyn Recorder {
        match &self.backend {
            Backend::Latchfree(r) => r,
            Backend::Exporter(r, _) => r,
        }
    }

    fn new(op: Op, backend: Backend) -> Self {
        let mut facade = Self {
            op,
            backend,
            counter: metrics::Counter::noop(),
            histogram: metrics::Histogram::noop(),
        };
        let metadata = metrics::Metadata::new(module_path!(), metrics::Level::INFO, None);
        facade.counter = facade
            .recorder()
            .register_counter(&route_key("/a"), &metadata);
        facade.histogram = facade.recorder().register_histogram(
            &Key::from_parts("latency_seconds", vec![Label::new("route", "/a")]),
            &metadata,
        );
        if op == Op::Render {
            for i in 0..RENDER_SERIES {
                let key = Key::from_parts(
                    "series_total",
                    vec![Label::new("id", i.to_string()), Label::new("zone", "eu")],
                );
                facade
                    .recorder()
                    .register_counter(&key, &metadata)
                    .increment(i as u64);
            }
        }
        facade
    }

    /// The text the backend renders.
    fn render(&self) -> String {
        match &self.backend {
            Backend::Latchfree(r) => r.stats().snapshot().to_prometheus(),
            Backend::Exporter(_, handle) => handle.render(),
        }
    }
}

/// The value of the sample line `series` (name and labels as rendered) in
/// `text`; 0 if absent.
fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

impl Target for Facade {
    fn run(&self, _thread: usize, n: u64) {
        match self.op {
            Op::Handle => {
                for _ in 0..n {
                    self.counter.increment(1);
                }
            }
            Op::PerCall => metrics::with_local_recorder(self.recorder(), || {
                for i in 0..n {
                    let route = ROUTES[(i % 4) as usize];
                    metrics::counter!("requests_total", "route" => route).increment(1);
                }
            }),
            Op::Histogram => {
                for i in 0..n {
                    self.histogram.record((i % 64) as f64 * 0.002);
                }
            }
            Op::Render => {
                for _ in 0..n {
                    black_box(self.render());
                }
            }
        }
    }

    fn verify(&self, total_ops: u64) -> Option<Result<(), String>> {
        let text = self.render();
        let check = match self.op {
            Op::Handle => expect_eq(
                "requests_total{route=\"/a\"}",
                sample(&text, "requests_total{route=\"/a\"}"),
                total_ops,
            ),
            Op::PerCall => {
                let sum: u64 = ROUTES
                    .iter()
                    .map(|r| sample(&text, &format!("requests_total{{route=\"{r}\"}}")))
                    .sum();
                expect_eq("requests_total over the routes", sum, total_ops)
            }
            Op::Histogram => expect_eq(
                "latency_seconds_count",
                sample(&text, "latency_seconds_count{route=\"/a\"}"),
                total_ops,
            ),
            Op::Render => {
                let lines = text
                    .lines()
                    .filter(|l| l.starts_with("series_total{"))
                    .count();
                expect_eq("rendered series", lines as u64, RENDER_SERIES as u64).and_then(|()| {
                    let total: u64 = text
                        .lines()
                        .filter(|l| l.starts_with("series_total{"))
                        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
                        .sum();
                    expect_eq(
                        "sum of rendered series",
                        total,
                        (0..RENDER_SERIES as u64).sum(),
                    )
                })
            }
        };
        Some(check)
    }
}

/// `prometheus-client`: a registry with a counter family and a histogram
/// family, recorded through its own API.
struct Client {
    op: Op,
    registry: PcRegistry,
    counters: Family<Labels, PcCounter>,
    /// The label set of each route, built once.
    routes: Vec<Labels>,
    handle: PcCounter,
    histogram: PcHistogram,
}

fn new_histogram() -> PcHistogram {
    PcHistogram::new(DEFAULT_BUCKETS)
}

impl Client {
    fn new(op: Op) -> Self {
        let mut registry = PcRegistry::default();
        let counters = Family::<Labels, PcCounter>::default();
        let histograms: Family<Labels, PcHistogram, fn() -> PcHistogram> =
            Family::new_with_constructor(new_histogram);
        registry.register("requests", "Requests.", counters.clone());
        registry.register("latency_seconds", "Latency.", histograms.clone());
        let routes: Vec<Labels> = ROUTES
            .iter()
            .map(|r| vec![("route".to_owned(), (*r).to_owned())])
            .collect();
        let handle = counters.get_or_create(&routes[0]).clone();
        let histogram = histograms.get_or_create(&routes[0]).clone();
        if op == Op::Render {
            let series = Family::<Labels, PcCounter>::default();
            registry.register("series", "Series.", series.clone());
            for i in 0..RENDER_SERIES {
                let labels = vec![
                    ("id".to_owned(), i.to_string()),
                    ("zone".to_owned(), "eu".to_owned()),
                ];
                series.get_or_create(&labels).inc_by(i as u64);
            }
        }
        Self {
            op,
            registry,
            counters,
            routes,
            handle,
            histogram,
        }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Target for Client {
    fn run(&self, _thread: usize, n: u64) {
        match self.op {
            Op::Handle => {
                for _ in 0..n {
                    self.handle.inc();
                }
            }
            Op::PerCall => {
                for i in 0..n {
                    self.counters
                        .get_or_create(&self.routes[(i % 4) as usize])
                        .inc();
                }
            }
            Op::Histogram => {
                for i in 0..n {
                    self.histogram.observe((i % 64) as f64 * 0.002);
                }
            }
            Op::Render => {
                for _ in 0..n {
                    black_box(self.render());
                }
            }
        }
    }

    fn verify(&self, total_ops: u64) -> Option<Result<(), String>> {
        let check = match self.op {
            Op::Handle => expect_eq("requests{route=\"/a\"}", self.handle.get(), total_ops),
            Op::PerCall => {
                let sum = self
                    .routes
                    .iter()
                    .map(|r| self.counters.get_or_create(r).get())
                    .sum();
                expect_eq("requests over the routes", sum, total_ops)
            }
            Op::Histogram => {
                let text = self.render();
                expect_eq(
                    "latency_seconds_count",
                    sample(&text, "latency_seconds_count{route=\"/a\"}"),
                    total_ops,
                )
            }
            Op::Render => {
                let text = self.render();
                let lines = text
                    .lines()
                    .filter(|l| l.starts_with("series_total{"))
                    .count();
                expect_eq("rendered series", lines as u64, RENDER_SERIES as u64)
            }
        };
        Some(check)
    }
}
