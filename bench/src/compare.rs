//! `loadgen compare RUN_A RUN_B [...]`: a side-by-side table with ratios to the first run, and
//! one overlaid percentile plot of the send-to-ack latencies.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::hgrm;
use crate::plot;
use crate::report::{date_strings, fresh_dir, Latency, Summary};

#[derive(Debug, Error)]
pub enum CompareError {
    #[error("{path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{0}")]
    Write(String),
}

/// One run loaded from its directory.
pub struct LoadedRun {
    pub dir: PathBuf,
    pub summary: Summary,
    pub produce: Option<hgrm::Distribution>,
}

pub fn load(dir: &Path) -> Result<LoadedRun, CompareError> {
    let read = |p: PathBuf| {
        std::fs::read_to_string(&p).map_err(|e| CompareError::Read {
            path: p.display().to_string(),
            reason: e.to_string(),
        })
    };
    let text = read(dir.join("summary.json"))?;
    let summary: Summary = serde_json::from_str(&text).map_err(|e| CompareError::Read {
        path: dir.join("summary.json").display().to_string(),
        reason: e.to_string(),
    })?;
    let hp = dir.join("produce-latency.hgrm");
    let produce = if hp.exists() {
        Some(
            hgrm::parse(&read(hp.clone())?).map_err(|e| CompareError::Read {
                path: hp.display().to_string(),
                reason: e.to_string(),
            })?,
        )
    } else {
        None
    };
    Ok(LoadedRun {
        dir: dir.to_path_buf(),
        summary,
        produce,
    })
}

fn cfg_str(s: &Summary, key: &str) -> String {
    match s.config.get(key) {
        Some(serde_json::Value::String(v)) => v.clone(),
        Some(serde_json::Value::Null) | None => "-".into(),
        Some(v) => v.to_string(),
    }
}

/// The comparison table.
pub fn table(runs: &[LoadedRun]) -> String {
    type Num = Option<f64>;
    let lat = |r: &LoadedRun, f: fn(&Latency) -> f64| -> Num {
        r.summary.produce_latency.as_ref().map(f)
    };
    let e2e =
        |r: &LoadedRun, f: fn(&Latency) -> f64| -> Num { r.summary.e2e_latency.as_ref().map(f) };
    let rows: Vec<(&str, Vec<Num>, bool)> = vec![
        (
            "produce msg/s",
            runs.iter()
                .map(|r| r.summary.produce.as_ref().map(|p| p.messages_per_sec))
                .collect(),
            true,
        ),
        (
            "produce MB/s",
            runs.iter()
                .map(|r| r.summary.produce.as_ref().map(|p| p.mb_per_sec))
                .collect(),
            true,
        ),
        (
            "consume msg/s",
            runs.iter()
                .map(|r| r.summary.consume.as_ref().map(|p| p.messages_per_sec))
                .collect(),
            true,
        ),
        (
            "send-to-ack avg ms",
            runs.iter().map(|r| lat(r, |l| l.avg_ms)).collect(),
            false,
        ),
        (
            "send-to-ack p50 ms",
            runs.iter().map(|r| lat(r, |l| l.p50_ms)).collect(),
            false,
        ),
        (
            "send-to-ack p95 ms",
            runs.iter().map(|r| lat(r, |l| l.p95_ms)).collect(),
            false,
        ),
        (
            "send-to-ack p99 ms",
            runs.iter().map(|r| lat(r, |l| l.p99_ms)).collect(),
            false,
        ),
        (
            "send-to-ack p99.9 ms",
            runs.iter().map(|r| lat(r, |l| l.p999_ms)).collect(),
            false,
        ),
        (
            "send-to-ack p99.99 ms",
            runs.iter().map(|r| lat(r, |l| l.p9999_ms)).collect(),
            false,
        ),
        (
            "send-to-ack max ms",
            runs.iter().map(|r| lat(r, |l| l.max_ms)).collect(),
            false,
        ),
        (
            "commit (EndTxn) avg ms",
            runs.iter()
                .map(|r| {
                    r.summary
                        .transactions
                        .as_ref()
                        .map(|t| t.commit_latency.avg_ms)
                })
                .collect(),
            false,
        ),
        (
            "commit (EndTxn) p99 ms",
            runs.iter()
                .map(|r| {
                    r.summary
                        .transactions
                        .as_ref()
                        .map(|t| t.commit_latency.p99_ms)
                })
                .collect(),
            false,
        ),
        (
            "end-to-end p50 ms",
            runs.iter().map(|r| e2e(r, |l| l.p50_ms)).collect(),
            false,
        ),
        (
            "end-to-end p99 ms",
            runs.iter().map(|r| e2e(r, |l| l.p99_ms)).collect(),
            false,
        ),
    ];
    // the commit rows only when a transactional run is among them
    let rows: Vec<(&str, Vec<Num>, bool)> = rows
        .into_iter()
        .filter(|(name, vals, _)| !name.starts_with("commit") || vals.iter().any(|v| v.is_some()))
        .collect();
    let mut header: Vec<String> = vec!["".into()];
    for (i, r) in runs.iter().enumerate() {
        header.push(r.summary.label.clone());
        if i > 0 {
            header.push(format!("ratio {}/1", i + 1));
        }
    }
    let mut lines: Vec<Vec<String>> = vec![header];
    let text_row = |name: &str, f: &dyn Fn(&LoadedRun) -> String| -> Vec<String> {
        let mut row = vec![name.to_string()];
        for (i, r) in runs.iter().enumerate() {
            row.push(f(r));
            if i > 0 {
                row.push(String::new());
            }
        }
        row
    };
    lines.push(text_row("broker", &|r| {
        r.summary
            .broker
            .get("kind")
            .and_then(|v| v.as_str())
            .unwrap_or("-")
            .to_string()
    }));
    lines.push(text_row("producer", &|r| {
        if r.summary.producer_mode.is_empty() {
            "plain".into()
        } else {
            r.summary.producer_mode.clone()
        }
    }));
    for key in [
        "acks",
        "partitions",
        "message_size",
        "messages",
        "compression",
    ] {
        lines.push(text_row(key, &|r| cfg_str(&r.summary, key)));
    }
    lines.push(text_row("verified", &|r| {
        r.summary
            .verification
            .as_ref()
            .map(|v| {
                format!(
                    "{} lost, {} dup",
                    v.get("lost").and_then(|x| x.as_u64()).unwrap_or(0),
                    v.get("duplicated").and_then(|x| x.as_u64()).unwrap_or(0)
                )
            })
            .unwrap_or_else(|| "-".into())
    }));
    for (name, vals, _higher_better) in rows {
        let mut row = vec![name.to_string()];
        for (i, v) in vals.iter().enumerate() {
            row.push(v.map_or("-".into(), |x| {
                if x >= 1000.0 {
                    format!("{x:.0}")
                } else {
                    format!("{x:.3}")
                }
            }));
            if i > 0 {
                row.push(match (vals[0], v) {
                    (Some(a), Some(b)) if a > 0.0 => {
                        let r = b / a;
                        if r >= 0.1 {
                            format!("{r:.2}x")
                        } else {
                            format!("{r:.4}x (1/{:.0})", 1.0 / r.max(1e-12))
                        }
                    }
                    _ => "-".into(),
                });
            }
        }
        lines.push(row);
    }
    let ncol = lines.iter().map(|l| l.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..ncol)
        .map(|c| {
            lines
                .iter()
                .map(|l| l.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (li, l) in lines.iter().enumerate() {
        let mut s = String::new();
        for (c, cell) in l.iter().enumerate() {
            if c == 0 {
                let _ = write!(s, "{cell:<w$}", w = widths[c]);
            } else {
                let _ = write!(s, "  {cell:>w$}", w = widths[c]);
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
        if li == 0 {
            out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (ncol - 1)));
            out.push('\n');
        }
    }
    out
}

/// Runs the comparison; returns (table, directory written).
pub fn compare(dirs: &[PathBuf], output: Option<&Path>) -> Result<(String, PathBuf), CompareError> {
    let runs: Vec<LoadedRun> = dirs.iter().map(|d| load(d)).collect::<Result<_, _>>()?;
    let t = table(&runs);
    let out_dir = match output {
        Some(o) => o.to_path_buf(),
        None => {
            let root = dirs[0]
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64);
            let labels: Vec<&str> = runs.iter().map(|r| r.summary.label.as_str()).collect();
            let mut label = format!("compare-{}", labels.join("-vs-"));
            label.truncate(120);
            fresh_dir(&root, &date_strings(now).0, &label)
        }
    };
    std::fs::create_dir_all(&out_dir).map_err(|e| CompareError::Write(e.to_string()))?;
    let mut text = String::new();
    for (i, r) in runs.iter().enumerate() {
        let _ = writeln!(text, "run {}: {}", i + 1, r.dir.display());
    }
    text.push('\n');
    text.push_str(&t);
    std::fs::write(out_dir.join("compare.txt"), &text)
        .map_err(|e| CompareError::Write(e.to_string()))?;
    let series: Vec<(String, Vec<(f64, f64)>)> = runs
        .iter()
        .filter_map(|r| {
            r.produce
                .as_ref()
                .map(|d| (r.summary.label.clone(), plot::curve_from_distribution(d)))
        })
        .collect();
    for ext in ["svg", "png"] {
        let p = out_dir.join(format!("compare-percentiles.{ext}"));
        plot::percentile_plot(&p, "send-to-ack latency by percentile", &series)
            .map_err(|e| CompareError::Write(format!("{}: {e}", p.display())))?;
    }
    Ok((text, out_dir))
}
