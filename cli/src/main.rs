//! `latchfree`: benchmarks the crate's components against their locked twins
//! and peer crates, side by side in one run.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use latchfree::audit::Guarantee;
use latchfree_bench::{self as bench, Plan, Row};

mod memory;
mod plot;
mod serve;
mod serve_http;
mod serve_sessions;
mod serve_tools;

#[derive(Parser)]
#[command(
    name = "latchfree",
    version,
    about = "Lock-free shared server state: benchmarks and tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs workloads on latchfree, its locked twin and peers, interleaved in
    /// one process, and prints throughput and ratios.
    Bench(BenchArgs),
    /// Audit log tools.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// An MCP server (stdio and Streamable HTTP at once) on one engine.
    Serve(serve::ServeArgs),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Checks a log directory: every line parses, seq is contiguous across
    /// files, the hash chain is intact. Exits 1 at the first break. If
    /// retention removed older files, the chain starts from the stream's
    /// anchor file (`PREFIX.anchor`).
    Verify {
        /// The log directory.
        dir: std::path::PathBuf,
        /// The stream's file prefix (`audit`, `telemetry`, ...).
        #[arg(long, default_value = "audit")]
        prefix: String,
        /// Start from an exported head `SEQ:HASH` (older files removed);
        /// without it, from the stream's anchor file if it has one.
        #[arg(long, value_name = "SEQ:HASH")]
        from: Option<String>,
        /// The chain must contain this exported head `SEQ:HASH` (catches
        /// files removed or cut from the end, and a recomputed tail).
        #[arg(long, value_name = "SEQ:HASH")]
        head: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// The whole request path of a tool call (`tool_call`: session
    /// get-or-create, cache get-or-load, stats batch, audit event) on the
    /// engine vs the all-locked engine; checks exactness afterwards.
    Mixed,
    /// Every workload (the components', then `mixed`).
    All,
    /// Counters, batches and snapshots (`counter_add`, `batch4`, `snapshot`).
    Stats,
    /// The audit log under each guarantee (`log_async`, `log_os`,
    /// `log_disk`), and `tracing` events through `fmt().json()`
    /// (`tracing_json`); run `--ops log_os,log_disk --threads 64` too, where group
    /// commit shows. Scratch files go under TMPDIR (not a tmpfs, for `disk`).
    Audit,
    /// A swappable shared instance (`load`, `load_during_swaps`, `swap`):
    /// latchfree vs `RwLock<Option<Arc<T>>>` vs crossbeam-epoch.
    Shared,
    /// Session registries: 100k string ids (`hit`, `mix_90_10`,
    /// `create_storm`).
    Sessions,
    /// TTL caches: 100k u64 keys (`hit`, `mix_90_10`, `create_storm` with
    /// `Arc` values; `hit_u64`, `mix_90_10_u64` with `u64` values;
    /// `hit_async`, `create_storm_async` as tasks on a 2-worker tokio runtime).
    Cache,
    /// The cache's disk tier: 100k entries on disk (`read_through` with 64
    /// in memory; `warm_up_100k`: a restart, best with `--threads 1`).
    Persist,
    /// Hit ratios of bounded caches on seeded traces (Zipf 0.99 and 0.7, a
    /// scan, a shifting working set), one thread, then the first trace at
    /// the largest `--threads` count; not part of `all`.
    HitRatio,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Which workload to run.
    #[arg(value_enum, default_value_t = Workload::Mixed)]
    workload: Workload,
    /// Thread counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    threads: Vec<usize>,
    /// Measured seconds per implementation and thread count.
    #[arg(long, default_value_t = 0.6)]
    seconds: f64,
    /// Interleaved rounds per measurement; the median round is reported.
    /// Raised so that no slice (seconds / rounds) runs over 20 s: a long
    /// run (`--seconds 600`) alternates implementations every 20 s, reports
    /// memory after each slice, and keeps the audit files awaiting
    /// verification to one slice's worth.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Only these operations (comma-separated op names), e.g. `counter_add`.
    #[arg(long, value_delimiter = ',')]
    ops: Vec<String>,
    /// Only these implementations (comma-separated), e.g. `latchfree` for a
    /// long run of one engine.
    #[arg(long, value_delimiter = ',')]
    impls: Vec<String>,
    /// One JSON object per line on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Also draw the rows into this SVG file: throughput and latency
    /// percentiles by thread count, one line per implementation.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<std::path::PathBuf>,
    /// `mixed`: distinct session ids.
    #[arg(long, default_value_t = 10_000)]
    ids: u64,
    /// `mixed`: the share of calls whose result is cached, 0 to 1.
    #[arg(long, default_value_t = 0.9)]
    hit_ratio: f64,
    /// `mixed`: the audit guarantee of every call, on both engines.
    #[arg(long, value_enum, default_value_t = Durability::Async)]
    durability: Durability,
}

/// The audit guarantee of the `mixed` workload's calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Durability {
    /// In memory when the call returns (locked: a `BufWriter`).
    Async,
    /// In the OS page cache when the call returns.
    Os,
    /// fsynced when the call returns (latchfree: group commit).
    Disk,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(args) => bench_command(&args),
        Command::Serve(args) => serve::serve_command(args),
        Command::Audit(AuditCommand::Verify {
            dir,
            prefix,
            from,
            head,
        }) => verify_command(&dir, &prefix, from.as_deref(), head.as_deref()),
    }
}

fn verify_command(
    dir: &std::path::Path,
    prefix: &str,
    from: Option<&str>,
    head: Option<&str>,
) -> ExitCode {
    use latchfree::audit::record::ChainHash;
    use latchfree::audit::verify::{Head, VerifyError, verify_from, verify_to};
    let parse = |flag: &str, arg: Option<&str>| match arg.map(|s| s.split_once(':')) {
        None => Ok(None),
        Some(Some((seq, hash))) => match (seq.parse(), ChainHash::from_hex(hash)) {
            (Ok(seq), Some(hash)) => Ok(Some(Head { seq, hash })),
            _ => Err(format!(
                "{flag} needs SEQ:HASH (a number, then 64 lowercase hex digits)"
            )),
        },
        Some(None) => Err(format!("{flag} needs SEQ:HASH")),
    };
    let (start, end) = match (parse("--from", from), parse("--head", head)) {
        (Ok(start), Ok(end)) => (start, end),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match end {
        Some(end) => verify_to(dir, prefix, start, end),
        None => verify_from(dir, prefix, start),
    };
    match result {
        Ok(report) => {
            println!(
                "ok: {} files, {} records ({} gap markers, {} events dropped)",
                report.files, report.records, report.gap_markers, report.dropped
            );
            if start.is_none()
                && let Ok(Some(anchor)) = latchfree::audit::anchor::read_anchor(dir, prefix)
            {
                println!(
                    "from: {}:{} (the anchor {prefix}.anchor: older files were removed by retention)",
                    anchor.seq, anchor.hash
                );
            }
            match report.head {
                Some(head) => println!("head: {}:{}", head.seq, head.hash),
                None => println!("head: none (no records)"),
            }
            ExitCode::SUCCESS
        }
        Err(
            e @ (VerifyError::Broken { .. }
            | VerifyError::HeadNotReached { .. }
            | VerifyError::Anchor { .. }),
        ) => {
            eprintln!("BROKEN: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Prints `rows` on stdout: one JSON object per line, or as `table` lays
/// them out.
fn print_rows<R: serde::Serialize>(json: bool, rows: &[R], table: impl Fn(&[R]) -> String) {
    let mut out = std::io::stdout().lock();
    if json {
        for row in rows {
            let line =
                serde_json::to_string(row).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            let _ = writeln!(out, "{line}");
        }
    } else {
        let _ = write!(out, "{}", table(rows));
    }
}

/// `latchfree bench hit-ratio`: replays the traces, prints the table.
fn hit_ratio_command(args: &BenchArgs) -> ExitCode {
    if args.plot.is_some() {
        eprintln!("error: --plot draws throughput by thread count; hit-ratio rows have none");
        return ExitCode::from(2);
    }
    let threads = args.threads.iter().copied().max().unwrap_or(1);
    let bar = ProgressBar::new_spinner();
    let rows = bench::hit_ratio::run(
        bench::hit_ratio::REQUESTS,
        threads,
        |trace, capacity, imp| {
            bar.set_message(format!("{trace} / {capacity}: {imp}"));
            bar.tick();
        },
    );
    bar.finish_and_clear();
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    print_rows(args.json, &rows, bench::hit_ratio::table);
    ExitCode::SUCCESS
}

fn bench_command(args: &BenchArgs) -> ExitCode {
    if args.threads.is_empty() || args.threads.contains(&0) {
        eprintln!("error: --threads needs positive thread counts, e.g. --threads 1,2,4");
        return ExitCode::from(2);
    }
    if !(args.seconds.is_finite() && args.seconds > 0.0 && args.seconds <= 3600.0) {
        eprintln!("error: --seconds must be a positive number of seconds, at most 3600");
        return ExitCode::from(2);
    }
    if args.ids == 0 {
        eprintln!("error: --ids must be at least 1");
        return ExitCode::from(2);
    }
    if !(0.0..=1.0).contains(&args.hit_ratio) {
        eprintln!("error: --hit-ratio must be between 0 and 1, e.g. 0.9");
        return ExitCode::from(2);
    }
    if args.workload == Workload::HitRatio {
        return hit_ratio_command(args);
    }
    bench::mixed::set_params(bench::mixed::MixedParams {
        ids: args.ids,
        hit_ratio: args.hit_ratio,
        guarantee: match args.durability {
            Durability::Async => Guarantee::Async,
            Durability::Os => Guarantee::Os,
            Durability::Disk => Guarantee::Disk,
        },
        ..bench::mixed::MixedParams::default()
    });
    let cases: Vec<bench::Case> = bench::workloads()
        .into_iter()
        .filter(|(name, _)| match args.workload {
            Workload::All => true,
            Workload::Mixed => *name == "mixed",
            Workload::Stats => *name == "stats",
            Workload::Audit => *name == "audit",
            Workload::Shared => *name == "shared",
            Workload::Sessions => *name == "sessions",
            Workload::Cache => *name == "cache",
            Workload::Persist => *name == "persist",
            Workload::HitRatio => false,
        })
        .flat_map(|(_, cases)| cases)
        .filter(|c| args.ops.is_empty() || args.ops.iter().any(|op| op == c.op))
        .filter(|c| args.impls.is_empty() || args.impls.iter().any(|i| i == c.imp))
        .collect();
    if cases.is_empty() {
        eprintln!(
            "error: no operation matches --ops {} --impls {}",
            args.ops.join(","),
            args.impls.join(",")
        );
        return ExitCode::from(2);
    }
    let plan = Plan {
        threads: args.threads.clone(),
        duration: Duration::from_secs_f64(args.seconds),
        rounds: args
            .rounds
            .max((args.seconds / MAX_SLICE_SECONDS).ceil() as usize)
            .max(1),
    };
    let slices = cases.len() * plan.threads.len() * plan.rounds;
    let bar = ProgressBar::new(slices as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // Memory at the start, after each slice, and once every target has
    // dropped: a long run (`--seconds 600`) must keep it flat.
    let mut memory = Vec::with_capacity(slices + 2);
    memory.push(memory::Sample::now());
    let rows = bench::run(&cases, &plan, |event| match event {
        bench::Progress::Slice { case, threads } => {
            memory.push(memory::Sample::now());
            bar.set_message(format!(
                "{}/{} {} ×{threads}",
                case.workload, case.op, case.imp
            ));
            bar.inc(1);
        }
        // The next targets start on what these leave: hand freed pages back
        // so each group's resident memory is its own.
        bench::Progress::Dropped => memory::release_free_pages(),
    });
    bar.finish_and_clear();
    bench::persist::remove_fixtures();
    memory.push(memory::Sample::now());

    print_rows(args.json, &rows, table);
    if let Some(path) = &args.plot {
        match plot::write_svg(&rows, path) {
            Ok(()) => eprintln!("plot: {}", path.display()),
            Err(e) => {
                eprintln!("error: --plot {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    for r in rows.iter().filter(|r| r.exact == Some(true)) {
        if let Some(detail) = &r.exact_detail {
            eprintln!(
                "exact: {}/{} {} ×{}: {detail}",
                r.workload, r.op, r.imp, r.threads
            );
        }
    }
    // Flat across slices is what a long run (`--seconds 600`) must show.
    if let Some(line) = memory::mib(&memory, |m| m.resident) {
        eprintln!("memory: resident MiB at the start, after each slice, after the run: {line}");
    }
    if let Some(line) = memory::mib(&memory, |m| m.heap) {
        eprintln!("memory: heap in use MiB at the start, after each slice, after the run: {line}");
    }
    let inexact: Vec<&Row> = rows.iter().filter(|r| r.exact == Some(false)).collect();
    for r in &inexact {
        eprintln!(
            "NOT EXACT: {}/{} {} ×{}: {}",
            r.workload,
            r.op,
            r.imp,
            r.threads,
            r.exact_detail.as_deref().unwrap_or("")
        );
    }
    if inexact.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The longest timed slice `latchfree bench` runs, in seconds.
const MAX_SLICE_SECONDS: f64 = 20.0;

fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    let head = format!(
        "{:<10} {:<12} {:<17} {:>7} {:>12} {:>10} {:>10} {:>9} {:>9} {:>9}  {}\n",
        "workload",
        "op",
        "impl",
        "threads",
        "Mops/s",
        "ns/op",
        "vs locked",
        "p50 ns",
        "p99 ns",
        "p99.9 ns",
        "exact"
    );
    s.push_str(&head);
    s.push_str(&"-".repeat(head.len() + 4));
    s.push('\n');
    let mut last = None;
    for r in rows {
        if last.is_some_and(|l| l != (r.workload, r.op, r.threads)) {
            s.push('\n');
        }
        last = Some((r.workload, r.op, r.threads));
        let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        s.push_str(&format!(
            "{:<10} {:<12} {:<17} {:>7} {:>12} {:>10.2} {:>10} {:>9} {:>9} {:>9}  {}\n",
            r.workload,
            r.op,
            r.imp,
            r.threads,
            mops(r.ops_per_sec),
            r.ns_per_op,
            r.ratio_vs_locked
                .map_or("-".to_string(), |x| format!("{x:.2}x")),
            opt(r.p50_ns),
            opt(r.p99_ns),
            opt(r.p999_ns),
            match r.exact {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            }
        ));
    }
    s
}

/// Millions of operations per second, with at least three significant
/// digits (an fsync-bound row runs at thousandths of a million).
fn mops(ops_per_sec: f64) -> String {
    let m = ops_per_sec / 1e6;
    let decimals = match m {
        m if m >= 1.0 => 2,
        m if m >= 0.01 => 4,
        _ => 6,
    };
    format!("{m:.decimals$}")
}
