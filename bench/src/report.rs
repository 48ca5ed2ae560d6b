//! Reports of a run: the summary line, summary.json, .hgrm percentile distributions, V2
//! interval logs (.hlog), throughput.csv, plots and an index.html page over them all
//! ([`crate::html`]), under `<output>/<date>-<label>/`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::ProducerMode;
use crate::hgrm;
use crate::html;
use crate::plot;
use crate::run::{BrokerInfo, RunResult, Throughput};
use crate::verify::Verification;

#[derive(Debug, Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("interval log: {0}")]
    Hlog(String),
    #[error("plot {path}: {reason}")]
    Plot { path: String, reason: String },
    #[error("summary.json: {0}")]
    Json(#[from] serde_json::Error),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub avg_ms: f64,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub p9999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        let q = |x: f64| h.value_at_quantile(x) as f64 / 1000.0;
        Latency {
            count: h.len(),
            avg_ms: h.mean() / 1000.0,
            min_ms: h.min() as f64 / 1000.0,
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            p9999_ms: q(0.9999),
            max_ms: h.max() as f64 / 1000.0,
        }
    }
}

/// Facts about the machine the run was on.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Machine {
    pub hostname: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub git_commit: Option<String>,
    /// /proc/loadavg (1, 5, 15 min) when the run started.
    #[serde(default)]
    pub load_average_at_start: String,
}

fn read_trim(p: &str) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

impl Machine {
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<f64>().ok())
            })
            .map_or(0.0, |kb| (kb / 1024.0 / 1024.0 * 10.0).round() / 10.0);
        let kernel = match (
            read_trim("/proc/sys/kernel/ostype"),
            read_trim("/proc/sys/kernel/osrelease"),
        ) {
            (Some(a), Some(b)) => format!("{a} {b}"),
            _ => String::new(),
        };
        let git_commit = std::process::Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty());
        Machine {
            hostname: read_trim("/proc/sys/kernel/hostname").unwrap_or_default(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            memory_gib,
            kernel,
            git_commit,
            load_average_at_start: String::new(),
        }
    }
}

/// summary.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub label: String,
    pub started: String,
    pub run_id: u32,
    pub config: serde_json::Value,
    /// "plain", "idempotent" or "transactional" (summaries from before these modes: "").
    #[serde(default)]
    pub producer_mode: String,
    pub broker: serde_json::Value,
    pub machine: Machine,
    pub produce: Option<ThroughputJson>,
    pub consume: Option<ThroughputJson>,
    pub produce_latency: Option<Latency>,
    pub e2e_latency: Option<Latency>,
    pub verification: Option<serde_json::Value>,
    /// `--transactional` only.
    #[serde(default)]
    pub transactions: Option<TransactionsJson>,
    pub failed_messages: u64,
    pub errors: Vec<String>,
    pub ok: bool,
    pub wall_seconds: f64,
}

/// Transactions of a `--transactional` run: how many were committed, and the round trips of
/// EndTxn (commit latency) and AddPartitionsToTxn (one per transaction).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct TransactionsJson {
    pub committed: u64,
    pub messages_per_transaction: u64,
    pub commit_latency: Latency,
    pub add_partitions_latency: Latency,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ThroughputJson {
    pub messages: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub messages_per_sec: f64,
    pub mb_per_sec: f64,
}

impl From<&Throughput> for ThroughputJson {
    fn from(t: &Throughput) -> Self {
        ThroughputJson {
            messages: t.messages,
            bytes: t.bytes,
            seconds: t.seconds,
            messages_per_sec: t.messages_per_sec,
            mb_per_sec: t.mb_per_sec,
        }
    }
}

/// `YYYY-MM-DD` and `YYYY-MM-DDTHH:MM:SSZ` of a time in microseconds since the epoch (UTC).
pub fn date_strings(us: u64) -> (String, String) {
    let secs = (us / 1_000_000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // civil from days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    let date = format!("{y:04}-{m:02}-{d:02}");
    let ts = format!(
        "{date}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    );
    (date, ts)
}

impl Summary {
    pub fn of(r: &RunResult) -> Summary {
        let (_, started) = date_strings(r.started_us);
        let errors = r.errors.1.clone();
        Summary {
            label: r.label.clone(),
            started,
            run_id: r.run_id,
            config: serde_json::to_value(&r.args).unwrap_or_default(),
            producer_mode: r.args.producer_mode().name().to_string(),
            broker: serde_json::to_value::<&BrokerInfo>(&r.broker).unwrap_or_default(),
            machine: Machine {
                load_average_at_start: r.load_average_at_start.clone(),
                ..Machine::probe()
            },
            produce: r.produce.as_ref().map(ThroughputJson::from),
            consume: r.consume.as_ref().map(ThroughputJson::from),
            produce_latency: r.produce.as_ref().map(|_| Latency::of(&r.produce_hist)),
            e2e_latency: (!r.e2e_hist.is_empty()).then(|| Latency::of(&r.e2e_hist)),
            verification: r
                .verification
                .as_ref()
                .map(|v: &Verification| serde_json::to_value(v).unwrap_or_default()),
            transactions: r.args.transactional.then(|| TransactionsJson {
                committed: r.transactions,
                messages_per_transaction: r.args.txn_messages,
                commit_latency: Latency::of(&r.commit_hist),
                add_partitions_latency: Latency::of(&r.add_partitions_hist),
            }),
            failed_messages: r.failed,
            errors,
            ok: r.ok(),
            wall_seconds: r.wall_seconds,
        }
    }
}

/// The lines printed at the end of a run, in kafka-producer-perf-test's shape.
pub fn summary_lines(r: &RunResult) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(p) = &r.produce {
        let l = Latency::of(&r.produce_hist);
        if r.args.warmup > 0 {
            out.push(format!(
                "(after {} warm-up messages, which are verified but not in the figures)",
                r.args.warmup.min(r.args.messages)
            ));
        }
        match r.args.producer_mode() {
            ProducerMode::Plain => {}
            ProducerMode::Idempotent => out.push(
                "(idempotent producers: producer id, epoch and sequence numbers on every batch)"
                    .into(),
            ),
            ProducerMode::Transactional => out.push(format!(
                "(transactional producers: transactions of {} messages per producer, \
                 read_committed consumers; the produce time runs to the last commit)",
                r.args.txn_messages
            )),
        }
        if r.args.acks.0 == 0 {
            out.push(
                "(acks=0: no responses, latency is until the request is handed to the connection)"
                    .into(),
            );
        }
        out.push(format!(
            "{} records sent, {:.1} records/sec ({:.2} MB/sec), {:.2} ms avg latency, {:.2} ms max \
             latency, {:.2} ms 50th, {:.2} ms 95th, {:.2} ms 99th, {:.2} ms 99.9th, {:.2} ms \
             99.99th.",
            p.messages,
            p.messages_per_sec,
            p.mb_per_sec,
            l.avg_ms,
            l.max_ms,
            l.p50_ms,
            l.p95_ms,
            l.p99_ms,
            l.p999_ms,
            l.p9999_ms
        ));
    }
    if r.args.transactional {
        let c = Latency::of(&r.commit_hist);
        let a = Latency::of(&r.add_partitions_hist);
        out.push(format!(
            "{} transactions committed; commit (EndTxn) {:.2} ms avg, {:.2} ms 50th, {:.2} ms \
             99th, {:.2} ms max; AddPartitionsToTxn {:.2} ms avg, {:.2} ms 99th.",
            r.transactions, c.avg_ms, c.p50_ms, c.p99_ms, c.max_ms, a.avg_ms, a.p99_ms
        ));
    }
    if let Some(c) = &r.consume {
        let mut s = format!(
            "{} records consumed, {:.1} records/sec ({:.2} MB/sec)",
            c.messages, c.messages_per_sec, c.mb_per_sec
        );
        if !r.e2e_hist.is_empty() {
            let l = Latency::of(&r.e2e_hist);
            let _ = write!(
                s,
                "; end-to-end latency {:.2} ms avg, {:.2} ms 50th, {:.2} ms 99th, {:.2} ms 99.9th, \
                 {:.2} ms max",
                l.avg_ms, l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms
            );
        }
        s.push('.');
        out.push(s);
    }
    if let Some(v) = &r.verification {
        out.push(v.line());
    }
    if r.failed > 0 {
        out.push(format!("{} messages were not acknowledged", r.failed));
    }
    if r.errors.0 > 0 {
        out.push(format!(
            "{} errors, first: {}",
            r.errors.0,
            r.errors.1.join("; ")
        ));
    }
    let load1: f64 = r
        .load_average_at_start
        .split_whitespace()
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or(0.0);
    if load1 >= 1.0 {
        out.push(format!(
            "note: load average {} when the run started: other work was sharing the CPUs",
            r.load_average_at_start
        ));
    }
    out
}

/// A directory `<root>/<date>-<label>` that does not exist yet (a suffix -2, -3, ... is added
/// when needed).
pub fn fresh_dir(root: &Path, date: &str, label: &str) -> PathBuf {
    let base = root.join(format!("{date}-{label}"));
    if !base.exists() {
        return base;
    }
    (2..)
        .map(|i| root.join(format!("{date}-{label}-{i}")))
        .find(|p| !p.exists())
        .unwrap_or(base)
}

fn write_file(path: &Path, data: &[u8]) -> Result<(), ReportError> {
    let mut f = std::fs::File::create(path).map_err(io_err(path))?;
    f.write_all(data).map_err(io_err(path))?;
    Ok(())
}

fn write_hlog(
    path: &Path,
    r: &RunResult,
    pick: fn(&crate::run::Interval) -> &Histogram<u64>,
) -> Result<(), ReportError> {
    let mut buf = Vec::new();
    {
        let mut ser = V2DeflateSerializer::new();
        let start = UNIX_EPOCH + Duration::from_micros(r.started_us);
        let mut w = IntervalLogWriterBuilder::new()
            .add_comment(&format!("loadgen {} run {}", r.label, r.run_id))
            .with_start_time(start)
            .with_base_time(start)
            .with_max_value_divisor(1000.0)
            .begin_log_with(&mut buf, &mut ser)
            .map_err(|e| ReportError::Hlog(e.to_string()))?;
        for i in &r.intervals {
            w.write_histogram(
                pick(i),
                Duration::from_secs_f64(i.start_s),
                Duration::from_secs_f64(i.duration_s),
                None,
            )
            .map_err(|e| ReportError::Hlog(format!("{e:?}")))?;
        }
    }
    write_file(path, &buf)
}

/// throughput.csv: one row per sampling interval (rates in messages and MB per second).
pub fn throughput_csv(r: &RunResult) -> String {
    let mut s = String::from(
        "time_s,produced_msgs_per_s,produced_mb_per_s,consumed_msgs_per_s,consumed_mb_per_s,\
         produce_p50_ms,produce_p99_ms,produce_max_ms\n",
    );
    for i in &r.intervals {
        let d = i.duration_s.max(1e-6);
        let q = |x: f64| {
            if i.produce.is_empty() {
                0.0
            } else {
                i.produce.value_at_quantile(x) as f64 / 1000.0
            }
        };
        let _ = writeln!(
            s,
            "{:.3},{:.1},{:.3},{:.1},{:.3},{:.3},{:.3},{:.3}",
            i.start_s + i.duration_s,
            i.acked as f64 / d,
            i.acked_bytes as f64 / d / 1048576.0,
            i.consumed as f64 / d,
            i.consumed_bytes as f64 / d / 1048576.0,
            q(0.5),
            q(0.99),
            if i.produce.is_empty() {
                0.0
            } else {
                i.produce.max() as f64 / 1000.0
            }
        );
    }
    s
}

/// Writes every report file of `r` into a fresh directory under `root`; returns it.
pub fn write_reports(r: &RunResult, root: &Path) -> Result<PathBuf, ReportError> {
    let (date, _) = date_strings(r.started_us);
    let dir = fresh_dir(root, &date, &r.label);
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let summary = Summary::of(r);
    write_file(
        &dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    let mut series: Vec<(String, &Histogram<u64>)> = Vec::new();
    if r.produce.is_some() {
        write_file(
            &dir.join("produce-latency.hgrm"),
            hgrm::write_distribution(&r.produce_hist, 5, 1000.0).as_bytes(),
        )?;
        write_hlog(&dir.join("produce-latency.hlog"), r, |i| &i.produce)?;
        series.push(("send-to-ack".into(), &r.produce_hist));
    }
    if r.consume.is_some() {
        write_file(
            &dir.join("e2e-latency.hgrm"),
            hgrm::write_distribution(&r.e2e_hist, 5, 1000.0).as_bytes(),
        )?;
        write_hlog(&dir.join("e2e-latency.hlog"), r, |i| &i.e2e)?;
        if !r.e2e_hist.is_empty() {
            series.push(("end-to-end".into(), &r.e2e_hist));
        }
    }
    write_file(&dir.join("throughput.csv"), throughput_csv(r).as_bytes())?;
    let title = format!("{} — latency by percentile", r.label);
    let curves: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(n, h)| (n.clone(), plot::percentile_curve(h)))
        .collect();
    for ext in ["svg", "png"] {
        let p = dir.join(format!("latency-percentiles.{ext}"));
        plot::percentile_plot(&p, &title, &curves).map_err(|reason| ReportError::Plot {
            path: p.display().to_string(),
            reason,
        })?;
        let p = dir.join(format!("throughput.{ext}"));
        let points: Vec<(f64, f64, f64)> = r
            .intervals
            .iter()
            .map(|i| {
                let d = i.duration_s.max(1e-6);
                (
                    i.start_s + i.duration_s,
                    i.acked as f64 / d,
                    i.consumed as f64 / d,
                )
            })
            .collect();
        plot::throughput_plot(&p, &format!("{} — throughput", r.label), &points).map_err(
            |reason| ReportError::Plot {
                path: p.display().to_string(),
                reason,
            },
        )?;
    }
    // the page over everything written above
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
        let name = entry.map_err(io_err(&dir))?.file_name();
        let name = name.to_string_lossy();
        if name != html::INDEX {
            files.push(name.into_owned());
        }
    }
    files.sort();
    write_file(
        &dir.join(html::INDEX),
        html::index_html(r, &summary, &files).as_bytes(),
    )?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    use crate::config::Cli;
    use crate::run::Interval;
    use crate::stats::{new_histogram, record};

    /// A small run: 1000 messages produced and consumed, latencies of 1..=1000 us (send to
    /// ack) and 2..=2000 us (end to end), two sampling intervals, verified.
    fn small_run(label: &str) -> RunResult {
        let args = Cli::try_parse_from([
            "loadgen",
            "--messages",
            "1000",
            "--partitions",
            "2",
            "--broker-config",
            "log.segment.bytes=1048576",
        ])
        .expect("args")
        .run;
        let mut produce_hist = new_histogram();
        let mut e2e_hist = new_histogram();
        for v in 1..=1000 {
            record(&mut produce_hist, v);
            record(&mut e2e_hist, 2 * v);
        }
        let interval = |start_s: f64| Interval {
            start_s,
            duration_s: 0.1,
            acked: 500,
            acked_bytes: 50_000,
            consumed: 500,
            consumed_bytes: 50_000,
            produce: produce_hist.clone(),
            e2e: e2e_hist.clone(),
        };
        let intervals = vec![interval(0.0), interval(0.1)];
        let throughput = Throughput {
            messages: 1000,
            bytes: 100_000,
            seconds: 0.2,
            messages_per_sec: 5000.0,
            mb_per_sec: 100_000.0 / 0.2 / 1048576.0,
        };
        RunResult {
            args,
            label: label.to_string(),
            run_id: 7,
            started_us: 1_795_315_674_000_000,
            broker: BrokerInfo {
                kind: "sluice (embedded)".into(),
                address: "127.0.0.1:9092".into(),
                cores: Some(1),
                data_dir: None,
                fsync_on_acks_all: Some(true),
            },
            produce: Some(throughput.clone()),
            consume: Some(throughput),
            produce_hist,
            e2e_hist,
            intervals,
            verification: Some(Verification {
                expected: 1000,
                received: 1000,
                lost: 0,
                duplicated: 0,
                out_of_order: 0,
                unexpected: 0,
                failed_but_stored: 0,
                foreign: 0,
                skipped_offsets: 0,
                by_partition: Vec::new(),
            }),
            transactions: 0,
            commit_hist: new_histogram(),
            add_partitions_hist: new_histogram(),
            failed: 0,
            errors: (0, Vec::new()),
            wall_seconds: 1.5,
            load_average_at_start: "0.10 0.20 0.30".into(),
        }
    }

    #[test]
    fn index_html_shows_settings_summary_and_every_plot() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut r = small_run("small");
        r.errors = (1, vec!["<script>alert('x')</script> & more".into()]);
        let dir = write_reports(&r, root.path()).expect("reports");
        let page = std::fs::read_to_string(dir.join("index.html")).expect("index.html");
        assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
        assert!(page.trim_end().ends_with("</html>"));

        // every plot written is on the page, by a relative reference
        let mut plots = 0;
        for entry in std::fs::read_dir(&dir).expect("dir") {
            let name = entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned();
            if name.ends_with(".svg") || name.ends_with(".png") {
                plots += 1;
                assert!(
                    page.contains(&format!("src=\"{name}\""))
                        || page.contains(&format!("href=\"{name}\"")),
                    "{name} is not referenced"
                );
            } else if name != "index.html" {
                assert!(page.contains(&format!("href=\"{name}\"")), "{name}");
            }
        }
        assert_eq!(plots, 4, "latency-percentiles and throughput, svg and png");
        for svg in ["latency-percentiles.svg", "throughput.svg"] {
            assert!(page.contains(&format!("<img src=\"{svg}\"")), "{svg}");
        }
        // self-contained: nothing fetched from elsewhere, no scripts of its own
        assert!(!page.contains("http://") && !page.contains("https://"));
        assert!(!page.contains("<script"), "the error text is escaped");
        assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more"));

        // the summary's numbers: its lines verbatim, and the tables
        for line in summary_lines(&r) {
            assert!(page.contains(&html::escape(&line)), "{line}");
        }
        let l = Latency::of(&r.produce_hist);
        let p = r.produce.as_ref().expect("produce");
        for n in [
            format!("{:.1}", p.messages_per_sec),
            format!("{:.2}", p.mb_per_sec),
            format!("{:.2}", l.avg_ms),
            format!("{:.2}", l.p99_ms),
            format!("{:.2}", l.max_ms),
            format!("{:.2}", Latency::of(&r.e2e_hist).p999_ms),
        ] {
            assert!(page.contains(&format!(">{n}</td>")), "{n} not in a table");
        }
        assert!(page.contains("verified 1000/1000: 0 lost, 0 duplicated, 0 out of order"));

        // every setting
        let config = serde_json::to_value(&r.args).expect("config");
        for (k, v) in config.as_object().expect("object") {
            assert!(page.contains(&format!("<th>{k}</th>")), "setting {k}");
            if let Some(s) = v.as_str() {
                assert!(page.contains(&html::escape(s)), "{k}={s}");
            }
        }
        assert!(page.contains("<td>log.segment.bytes=1048576</td>"));
        assert!(page.contains("<td>1000</td>"), "messages");
    }

    #[test]
    fn dates() {
        assert_eq!(date_strings(0).1, "1970-01-01T00:00:00Z");
        // 2026-11-22T02:47:54Z
        assert_eq!(
            date_strings(1_795_315_674_000_000).1,
            "2026-11-22T02:47:54Z"
        );
        assert_eq!(date_strings(951_782_400_000_000).0, "2000-02-29");
    }
}
