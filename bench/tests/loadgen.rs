//! loadgen end to end against the embedded broker: verification, report files, the .hgrm
//! format read back, `loadgen compare`, and a run that loses messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use sluice_bench::hgrm;

fn loadgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .output()
        .expect("loadgen runs")
}

/// Segment files (`*.log`) of topic `topic` anywhere under `dir` (in `<topic>-<n>` directories).
fn segment_files(dir: &Path, topic: &str) -> usize {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .map(|p| {
            if p.is_dir() {
                return segment_files(&p, topic);
            }
            let parent = p
                .parent()
                .and_then(|d| d.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let in_topic = parent
                .strip_prefix(topic)
                .and_then(|r| r.strip_prefix('-'))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            usize::from(in_topic && p.extension().is_some_and(|e| e == "log"))
        })
        .sum()
}

/// Asserts the run succeeded and verified all `n` messages with nothing lost, duplicated or
/// reordered; returns its stdout.
fn verified_cleanly(o: &Output, n: u64) -> String {
    assert!(o.status.success(), "{}", text(o));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        stdout.contains(&format!(
            "verified {n}/{n}: 0 lost, 0 duplicated, 0 out of order"
        )),
        "{}",
        text(o)
    );
    stdout
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The report directory named on the "reports written to" line.
fn report_dir(o: &Output) -> PathBuf {
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("reports written to "))
        .unwrap_or_else(|| panic!("no report line\n{}", text(o)));
    PathBuf::from(line.trim())
}

/// A scratch directory on the real disk (the broker's data needs O_DIRECT and fsync).
fn scratch() -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).expect("target tmpdir");
    tempfile::tempdir_in(base).expect("tempdir")
}

fn run_small(out: &Path, data: &Path, label: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "--output",
        out.to_str().expect("utf-8 path"),
        "--data-dir",
        data.to_str().expect("utf-8 path"),
        "--label",
        label,
    ];
    args.extend_from_slice(extra);
    loadgen(&args)
}

/// Sums the intervals of a V2 .hlog file.
fn read_hlog(path: &Path) -> Histogram<u64> {
    let bytes = std::fs::read(path).expect("hlog");
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("hist");
    total.auto(true);
    let mut de = Deserializer::new();
    let mut intervals = 0;
    for entry in IntervalLogIterator::new(&bytes) {
        if let Ok(LogEntry::Interval(h)) = entry {
            let raw = base64_decode(h.encoded_histogram());
            let hist: Histogram<u64> = de
                .deserialize(&mut std::io::Cursor::new(raw))
                .expect("interval histogram");
            total.add(&hist).expect("add");
            intervals += 1;
        }
    }
    assert!(intervals > 0, "no intervals in {}", path.display());
    total
}

fn base64_decode(s: &str) -> Vec<u8> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let Some(v) = T.iter().position(|&t| t == c) else {
            continue; // padding
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn e2e_100k_verifies_and_writes_every_report_and_compare_works() {
    let out = scratch();
    let data = scratch();
    let o = run_small(
        out.path(),
        data.path(),
        "e2e-100k",
        &["--messages", "100000"],
    );
    let stdout = verified_cleanly(&o, 100000);
    assert!(stdout.contains("100000 records sent, "), "{}", text(&o));
    assert!(stdout.contains("ms 99.99th."), "{}", text(&o));
    let dir = report_dir(&o);
    assert!(dir.starts_with(out.path()), "{}", dir.display());
    for f in [
        "summary.json",
        "produce-latency.hgrm",
        "e2e-latency.hgrm",
        "produce-latency.hlog",
        "e2e-latency.hlog",
        "throughput.csv",
        "latency-percentiles.svg",
        "latency-percentiles.png",
        "throughput.svg",
        "throughput.png",
    ] {
        let meta = std::fs::metadata(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(meta.len() > 100, "{f} is {} bytes", meta.len());
    }
    let png = std::fs::read(dir.join("latency-percentiles.png")).expect("png");
    assert_eq!(&png[1..4], b"PNG");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).expect("json"))
            .expect("summary parses");
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["verification"]["lost"], 0);
    assert_eq!(summary["produce"]["messages"], 100000);
    assert!(summary["machine"]["cpus"].as_u64().unwrap_or(0) >= 1);
    assert!(summary["machine"]["kernel"]
        .as_str()
        .unwrap_or("")
        .contains("Linux"));
    let csv = std::fs::read_to_string(dir.join("throughput.csv")).expect("csv");
    assert!(csv.starts_with("time_s,produced_msgs_per_s"), "{csv}");
    assert!(csv.lines().count() >= 2, "{csv}");

    // the .hgrm parses back into the histogram's percentiles (the histogram is rebuilt from the
    // interval log, an independent record of the same latencies)
    let hist = read_hlog(&dir.join("produce-latency.hlog"));
    assert_eq!(hist.len(), 100_000);
    let text_hgrm = std::fs::read_to_string(dir.join("produce-latency.hgrm")).expect("hgrm");
    assert!(text_hgrm.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n"));
    let d = hgrm::parse(&text_hgrm).expect("hgrm parses");
    assert_eq!(d.total_count, Some(100_000));
    assert_eq!(d.sub_buckets, Some(2048));
    assert!(d.rows.len() > 20, "{} rows", d.rows.len());
    for r in &d.rows {
        // the 0% line shows the first recorded value's bucket top, as in Java
        let raw = if r.percentile == 0.0 {
            hist.highest_equivalent(hist.min())
        } else {
            hist.value_at_quantile(r.percentile)
        };
        let want = raw as f64 / 1000.0;
        assert!(
            (r.value - want).abs() < 0.0006,
            "row {r:?}: histogram says {want}"
        );
    }
    let max = hist.max() as f64 / 1000.0;
    assert!((d.max.expect("max") - max).abs() < 0.0006);
    assert!((d.mean.expect("mean") - hist.mean() / 1000.0).abs() < 0.0006);
    let p50 = summary["produce_latency"]["p50_ms"].as_f64().expect("p50");
    assert!((d.value_at(0.5).expect("p50") - p50).abs() < 0.0006);
    let p99 = summary["produce_latency"]["p99_ms"].as_f64().expect("p99");
    assert!(d.value_at(0.99).expect("p99") >= p99 - 0.0006);
    assert!((p99 - hist.value_at_quantile(0.99) as f64 / 1000.0).abs() < 0.0006);

    // a second, smaller run, and the comparison of the two
    let o2 = run_small(
        out.path(),
        data.path(),
        "acks1-10k",
        &["--messages", "10000", "--acks", "1", "--partitions", "2"],
    );
    assert!(o2.status.success(), "{}", text(&o2));
    let dir2 = report_dir(&o2);
    let cmp_out = out.path().join("cmp");
    let c = loadgen(&[
        "compare",
        dir.to_str().expect("utf-8"),
        dir2.to_str().expect("utf-8"),
        "--output",
        cmp_out.to_str().expect("utf-8"),
    ]);
    assert!(c.status.success(), "{}", text(&c));
    let table = String::from_utf8_lossy(&c.stdout);
    for want in [
        "e2e-100k",
        "acks1-10k",
        "produce msg/s",
        "send-to-ack p99 ms",
        "ratio 2/1",
        "x",
    ] {
        assert!(table.contains(want), "{want} missing:\n{table}");
    }
    for f in [
        "compare.txt",
        "compare-percentiles.svg",
        "compare-percentiles.png",
    ] {
        assert!(cmp_out.join(f).exists(), "{f}");
    }
    // comparing a directory that is not a run fails cleanly
    let bad = loadgen(&["compare", dir.to_str().expect("utf-8"), "/nonexistent-run"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
}

#[test]
fn a_broker_that_loses_messages_fails_the_run() {
    let out = scratch();
    let data = scratch();
    // delete partition 0's records once 5000 are acknowledged; consumers start afterwards
    let o = run_small(
        out.path(),
        data.path(),
        "lossy",
        &[
            "--messages",
            "20000",
            "--acks",
            "1",
            "--batch-size",
            "4096",
            "--consume-after",
            "--inject-delete-records-at",
            "5000",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("verified "))
        .unwrap_or_else(|| panic!("no verification line\n{}", text(&o)));
    let lost: u64 = line
        .split(": ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read {line}"));
    assert!(lost >= 5000, "{line}");
    assert!(line.contains("0 duplicated, 0 out of order"), "{line}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("FAILED"),
        "{}",
        text(&o)
    );
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(report_dir(&o).join("summary.json")).expect("summary"),
    )
    .expect("json");
    assert_eq!(summary["ok"], false);
    assert_eq!(summary["verification"]["lost"].as_u64(), Some(lost));
}

#[test]
fn produce_only_null_sink_and_bad_options() {
    let out = scratch();
    let data = scratch();
    let o = run_small(
        out.path(),
        data.path(),
        "null",
        &[
            "--messages",
            "50000",
            "--null-sink",
            "--no-report",
            "--keys",
            "--partitions",
            "3",
            "--linger-ms",
            "5",
            // given twice: the last one counts (run-matrix.sh appends HALF_EXTRA)
            "--linger-ms",
            "0.2",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("50000 records sent"));
    let bad = loadgen(&["--message-size", "10", "--no-report"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--message-size"));
    let bad = loadgen(&["--linger-ms", "1e9", "--no-report"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("linger time"));
    let bad = loadgen(&["--broker-config", "no.such.setting=1", "--no-report"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown setting"));
    let bad = loadgen(&[
        "--broker-config",
        "log.segment.bytes=1048576",
        "--null-sink",
        "--no-report",
    ]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("embedded broker"));
}

#[test]
fn idempotent_producers_verify_cleanly() {
    let out = scratch();
    let data = scratch();
    let o = run_small(
        out.path(),
        data.path(),
        "idempotent",
        &[
            "--messages",
            "20000",
            "--idempotent",
            "--partitions",
            "2",
            "--producers",
            "2",
            "--batch-size",
            "16384",
            // small segments: the producers' state rides across segment rolls
            "--broker-config",
            "log.segment.bytes=262144",
            "--keep-data",
        ],
    );
    let stdout = verified_cleanly(&o, 20000);
    assert!(stdout.contains("(idempotent producers"), "{}", text(&o));
    let segments = segment_files(data.path(), "loadgen");
    assert!(
        segments >= 6,
        "{segments} segment files: log.segment.bytes was not applied"
    );
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(report_dir(&o).join("summary.json")).expect("summary"),
    )
    .expect("json");
    assert_eq!(summary["producer_mode"], "idempotent");
    assert_eq!(summary["config"]["idempotent"], true);
    assert_eq!(summary["ok"], true);
    assert!(summary["transactions"].is_null());
}

#[test]
fn transactional_producers_commit_and_read_committed_consumers_verify_cleanly() {
    let out = scratch();
    let data = scratch();
    // 2 producers x 10000 messages in transactions of 3000: 4 commits each, the last one short;
    // every commit puts a marker into each partition of the transaction, which the consumers
    // must skip
    let o = run_small(
        out.path(),
        data.path(),
        "transactional",
        &[
            "--messages",
            "20000",
            "--transactional",
            "--txn-messages",
            "3000",
            "--partitions",
            "3",
            "--producers",
            "2",
            "--batch-size",
            "16384",
        ],
    );
    let stdout = verified_cleanly(&o, 20000);
    assert!(
        stdout.contains("8 transactions committed; commit (EndTxn) "),
        "{}",
        text(&o)
    );
    let dir = report_dir(&o);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).expect("summary"))
            .expect("json");
    assert_eq!(summary["producer_mode"], "transactional");
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["consume"]["messages"], 20000);
    let t = &summary["transactions"];
    assert_eq!(t["committed"], 8);
    assert_eq!(t["messages_per_transaction"], 3000);
    assert_eq!(t["commit_latency"]["count"], 8);
    assert!(t["commit_latency"]["avg_ms"].as_f64().unwrap_or(0.0) > 0.0);
    assert!(t["add_partitions_latency"]["count"].as_u64().unwrap_or(0) >= 8);

    // compare shows the producer mode and the commit latency
    let cmp_out = out.path().join("cmp");
    let c = loadgen(&[
        "compare",
        dir.to_str().expect("utf-8"),
        dir.to_str().expect("utf-8"),
        "--output",
        cmp_out.to_str().expect("utf-8"),
    ]);
    assert!(c.status.success(), "{}", text(&c));
    let table = String::from_utf8_lossy(&c.stdout);
    assert!(table.contains("transactional"), "{table}");
    assert!(table.contains("commit (EndTxn) p99 ms"), "{table}");
}

#[test]
fn idempotence_needs_acks_all() {
    for mode in ["--idempotent", "--transactional"] {
        let bad = loadgen(&[mode, "--acks", "1", "--no-report"]);
        assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
        assert!(
            String::from_utf8_lossy(&bad.stderr).contains("needs --acks all"),
            "{}",
            text(&bad)
        );
    }
}
