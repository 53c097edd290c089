//! `latchfree bench --plot FILE.svg`: the run's rows as a picture.
//!
//! One band per operation (`workload/op`), two panels side by side:
//!
//! * **throughput** (million operations per second, log scale) by thread
//!   count, one line per implementation: scaling, and who leads at each
//!   thread count, at a glance;
//! * **latency** (ns per call, log scale) by thread count: p50 as a solid
//!   line, p99.9 dashed in the same colour, for the rows that sampled
//!   latencies (fsync-bound and batch rows do not; their panel says so).
//!
//! An implementation keeps one colour across the whole figure, so `latchfree`
//! in the stats band and in the cache band read alike. The figure is plain
//! SVG drawn by `plotters` with its SVG backend only: text is left to the
//! viewer's fonts, so nothing here needs a system library.

use std::fmt::Display;
use std::path::Path;

use latchfree_bench::Row;
use plotters::coord::combinators::{LogCoord, WithKeyPoints};
use plotters::prelude::*;

/// Width of the whole figure, in pixels.
const WIDTH: u32 = 1200;
/// Height of one operation's band, in pixels.
const BAND: u32 = 340;

/// Why the figure could not be drawn.
#[derive(Debug)]
pub struct PlotError(String);

impl Display for PlotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(what: impl Display) -> PlotError {
    PlotError(what.to_string())
}

/// One band of the figure: the rows of one `workload/op`, in run order.
struct Band<'a> {
    title: String,
    rows: Vec<&'a Row>,
}

/// Groups `rows` by operation, keeping the order in which operations ran.
fn bands(rows: &[Row]) -> Vec<Band<'_>> {
    let mut bands: Vec<Band<'_>> = Vec::new();
    for r in rows {
        let title = format!("{}/{}", r.workload, r.op);
        match bands.iter_mut().find(|b| b.title == title) {
            Some(b) => b.rows.push(r),
            None => bands.push(Band {
                title,
                rows: vec![r],
            }),
        }
    }
    bands
}

/// The implementations of a run, in the order they first appear: their index
/// picks their colour.
fn implementations(rows: &[Row]) -> Vec<&'static str> {
    let mut imps: Vec<&'static str> = Vec::new();
    for r in rows {
        if !imps.contains(&r.imp) {
            imps.push(r.imp);
        }
    }
    imps
}

fn colour(imps: &[&str], imp: &str) -> RGBColor {
    let i = imps.iter().position(|i| *i == imp).unwrap_or(0);
    let c = Palette99::pick(i).to_rgba();
    RGBColor(c.0, c.1, c.2)
}

/// The series of one implementation in a band: `(threads, value)` sorted by
/// thread count, skipping rows without the value.
fn series(band: &Band<'_>, imp: &str, value: impl Fn(&Row) -> Option<f64>) -> Vec<(f64, f64)> {
    let mut points: Vec<(f64, f64)> = band
        .rows
        .iter()
        .filter(|r| r.imp == imp)
        .filter_map(|r| value(r).filter(|v| *v > 0.0).map(|v| (r.threads as f64, v)))
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    points
}

/// A log axis range that holds every value with some room on both sides.
fn log_range(values: impl Iterator<Item = f64>) -> Option<std::ops::Range<f64>> {
    let (lo, hi) = values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    (hi > 0.0 && lo.is_finite()).then(|| lo / 1.5..hi * 1.5)
}

/// Draws `rows` into an SVG file at `path`.
pub fn write_svg(rows: &[Row], path: &Path) -> Result<(), PlotError> {
    let bands = bands(rows);
    if bands.is_empty() {
        return Err(err("no rows to draw"));
    }
    let imps = implementations(rows);
    let height = BAND * bands.len() as u32;
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    for (band, area) in bands.iter().zip(root.split_evenly((bands.len(), 1))) {
        let (left, right) = area.split_horizontally(WIDTH / 2);
        throughput_panel(band, &imps, &left)?;
        latency_panel(band, &imps, &right)?;
    }
    root.present()
        .map_err(|e| err(format!("{}: {e}", path.display())))
}

/// The x axis: thread counts on a log scale, labelled with the counts run.
fn thread_axis(band: &Band<'_>) -> WithKeyPoints<LogCoord<f64>> {
    let mut counts: Vec<f64> = band.rows.iter().map(|r| r.threads as f64).collect();
    counts.sort_by(f64::total_cmp);
    counts.dedup();
    let min = counts.first().copied().unwrap_or(1.0);
    let max = counts.last().copied().unwrap_or(1.0);
    (min / 1.3..max * 1.3).log_scale().with_key_points(counts)
}

/// A log y axis labelled at 1, 2 and 5 times each power of ten in `range`,
/// so even a range narrower than a decade carries labels.
fn value_axis(range: std::ops::Range<f64>) -> WithKeyPoints<LogCoord<f64>> {
    let mut points = Vec::new();
    let mut decade = 10f64.powi(range.start.log10().floor() as i32);
    while decade <= range.end {
        for step in [1.0, 2.0, 5.0] {
            let v = decade * step;
            if range.contains(&v) {
                points.push(v);
            }
        }
        decade *= 10.0;
    }
    range.log_scale().with_key_points(points)
}

/// `v` with at most three significant digits and no trailing zeros.
fn short(v: f64) -> String {
    let s = if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Nanoseconds in the unit that reads best: `750 ns`, `20 µs`, `3 ms`.
fn duration_label(ns: f64) -> String {
    match ns {
        n if n >= 1e9 => format!("{} s", short(n / 1e9)),
        n if n >= 1e6 => format!("{} ms", short(n / 1e6)),
        n if n >= 1e3 => format!("{} µs", short(n / 1e3)),
        n => format!("{} ns", short(n)),
    }
}

/// Both panels' axes: thread counts across, values up, log scales.
type Axes = Cartesian2d<WithKeyPoints<LogCoord<f64>>, WithKeyPoints<LogCoord<f64>>>;

/// A panel's chart, captioned, its mesh drawn: threads across (see
/// [`thread_axis`]), `y` up (see [`value_axis`]), described and labelled as
/// `y_axis` says.
fn chart<'a, DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    band: &Band<'_>,
    caption: String,
    y: std::ops::Range<f64>,
    y_axis: (&str, &dyn Fn(&f64) -> String),
) -> Result<ChartContext<'a, DB, Axes>, PlotError>
where
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(thread_axis(band), value_axis(y))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("threads")
        .y_desc(y_axis.0)
        .x_label_formatter(&|x| format!("{}", x.round()))
        .y_label_formatter(y_axis.1)
        .draw()
        .map_err(err)?;
    Ok(chart)
}

fn throughput_panel<DB: DrawingBackend>(
    band: &Band<'_>,
    imps: &[&'static str],
    area: &DrawingArea<DB, plotters::coord::Shift>,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let mops = |r: &Row| Some(r.ops_per_sec / 1e6);
    let Some(y) = log_range(band.rows.iter().filter_map(|r| mops(r))) else {
        return Ok(());
    };
    let mut chart = chart(
        area,
        band,
        format!("{} — throughput", band.title),
        y,
        ("M ops/s", &|y| short(*y)),
    )?;
    for imp in imps {
        let points = series(band, imp, mops);
        if points.is_empty() {
            continue;
        }
        let c = colour(imps, imp);
        chart
            .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))
            .map_err(err)?
            .label(*imp)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        chart
            .draw_series(points.into_iter().map(|p| Circle::new(p, 3, c.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(err)
}

fn latency_panel<DB: DrawingBackend>(
    band: &Band<'_>,
    imps: &[&'static str],
    area: &DrawingArea<DB, plotters::coord::Shift>,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let p50 = |r: &Row| r.p50_ns.map(|v| v as f64);
    let p999 = |r: &Row| r.p999_ns.map(|v| v as f64);
    let values = band.rows.iter().flat_map(|r| [p50(r), p999(r)]).flatten();
    let Some(y) = log_range(values) else {
        let style = ("sans-serif", 16).into_font().color(&BLACK.mix(0.6));
        return area
            .draw_text(
                &format!("{} — no per-call latency samples", band.title),
                &style,
                (20, BAND as i32 / 2),
            )
            .map_err(err);
    };
    let mut chart = chart(
        area,
        band,
        format!("{} — latency p50 (solid), p99.9 (dashed)", band.title),
        y,
        ("time per call", &|y| duration_label(*y)),
    )?;
    for imp in imps {
        let c = colour(imps, imp);
        let median = series(band, imp, p50);
        if !median.is_empty() {
            chart
                .draw_series(LineSeries::new(median, c.stroke_width(2)))
                .map_err(err)?;
        }
        let tail = series(band, imp, p999);
        if !tail.is_empty() {
            chart
                .draw_series(DashedLineSeries::new(tail, 6, 4, c.stroke_width(1)))
                .map_err(err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(op: &'static str, imp: &'static str, threads: usize, mops: f64) -> Row {
        Row {
            workload: "stats",
            op,
            imp,
            guarantee: "exact",
            threads,
            ops_per_sec: mops * 1e6,
            ns_per_op: threads as f64 * 1e3 / mops,
            ratio_vs_locked: None,
            p50_ns: Some(40 * threads as u64),
            p99_ns: Some(90 * threads as u64),
            p999_ns: Some(400 * threads as u64),
            exact: Some(true),
            exact_detail: None,
        }
    }

    #[test]
    fn draws_one_band_per_operation_and_one_line_per_implementation() {
        let rows = vec![
            row("counter_add", "latchfree", 1, 50.0),
            row("counter_add", "locked", 1, 20.0),
            row("counter_add", "latchfree", 2, 99.0),
            row("counter_add", "locked", 2, 11.0),
            row("snapshot", "latchfree", 1, 0.5),
            row("snapshot", "locked", 1, 0.25),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.svg");
        write_svg(&rows, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert_eq!(svg.matches("stats/counter_add — throughput").count(), 1);
        assert_eq!(svg.matches("stats/snapshot — throughput").count(), 1);
        // The legend names each implementation once per band.
        assert_eq!(svg.matches(">\nlatchfree\n<").count(), 2, "{svg}");
        assert_eq!(svg.matches(">\nlocked\n<").count(), 2);
        // Two bands of the fixed height.
        assert!(svg.contains(&format!("height=\"{}\"", 2 * BAND)));
    }

    #[test]
    fn a_band_without_latency_samples_says_so_and_no_rows_is_an_error() {
        let mut r = row("log_disk", "latchfree", 1, 0.01);
        r.p50_ns = None;
        r.p999_ns = None;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.svg");
        write_svg(&[r], &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("no per-call latency samples"));
        assert!(write_svg(&[], &path).is_err());
    }

    #[test]
    fn an_unwritable_path_is_an_error_not_a_panic() {
        let rows = vec![row("counter_add", "latchfree", 1, 50.0)];
        let e = write_svg(&rows, Path::new("/nonexistent-dir/x/run.svg")).unwrap_err();
        assert!(e.to_string().contains("nonexistent-dir"), "{e}");
    }
}
