//! `loadgen plot-scaling CSV... --output PREFIX`: plots of the scaling curves that
//! `bench/scripts/run-scaling.sh` measures.
//!
//! Every CSV has a header line and plain comma-separated fields (no quoting: the script writes no
//! commas inside a field). Two kinds are recognised by their columns:
//!
//! - throughput curves (`curve`, `x`, `msg_per_sec`, `mb_per_sec`, `p99_ms`, optional
//!   `settings`): one plot per curve, `PREFIX-<curve>.<format>`, with three panels against x
//!   (msg/s, MB/s, p99 send-to-ack);
//! - restart times (`curve`, `x`, `accept_ms`, `serve_ms`, optional `settings`): one plot per
//!   curve with at least two rows of positive x, the time to accept connections and to serve a
//!   produce + fetch against x, with the 1 s goal line.
//!
//! The x axis is logarithmic when x spans ten times or more (partitions 1-4096, connections
//! 1-512, message sizes 24 B-1 MiB, log sizes 1-50 GiB).

use std::path::{Path, PathBuf};

use crate::plot::{self, AxisRange, Panel};

/// A parsed CSV: header names and rows of fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn parse(text: &str) -> Result<Table, String> {
        let mut lines = text
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        let header: Vec<String> = lines
            .next()
            .ok_or("empty CSV")?
            .split(',')
            .map(|h| h.trim().to_string())
            .collect();
        let mut rows = Vec::new();
        for (i, l) in lines.enumerate() {
            let row: Vec<String> = l.split(',').map(|f| f.trim().to_string()).collect();
            if row.len() != header.len() {
                return Err(format!(
                    "row {}: {} fields, the header has {}",
                    i + 2,
                    row.len(),
                    header.len()
                ));
            }
            rows.push(row);
        }
        Ok(Table { header, rows })
    }

    pub fn col(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }

    pub fn has(&self, names: &[&str]) -> bool {
        names.iter().all(|n| self.col(n).is_some())
    }

    /// Field `name` of `row` ("" when the column is missing).
    pub fn get<'a>(&'a self, row: &'a [String], name: &str) -> &'a str {
        self.col(name).map_or("", |i| row[i].as_str())
    }

    /// Field `name` of `row` as a number (None when missing, empty or not a number).
    pub fn num(&self, row: &[String], name: &str) -> Option<f64> {
        self.get(row, name)
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
    }

    /// Curve names in the order they first appear.
    pub fn curves(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.rows {
            let c = self.get(r, "curve");
            if !out.iter().any(|o| o == c) {
                out.push(c.to_string());
            }
        }
        out
    }

    /// The rows of `curve`, sorted by x (rows without a numeric x are left out).
    pub fn curve_rows(&self, curve: &str) -> Vec<&Vec<String>> {
        let mut rows: Vec<&Vec<String>> = self
            .rows
            .iter()
            .filter(|r| self.get(r, "curve") == curve && self.num(r, "x").is_some())
            .collect();
        rows.sort_by(|a, b| {
            let (xa, xb) = (self.num(a, "x"), self.num(b, "x"));
            xa.partial_cmp(&xb).unwrap_or(std::cmp::Ordering::Equal)
        });
        rows
    }

    /// (x, value of column `y`) of `rows`, leaving out rows where either is missing.
    pub fn points(&self, rows: &[&Vec<String>], y: &str) -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|r| Some((self.num(r, "x")?, self.num(r, y)?)))
            .collect()
    }
}

/// The x axis description of a curve.
pub fn x_desc(curve: &str) -> String {
    match curve {
        "partitions" => "Partitions".into(),
        "producers" => "Producer connections".into(),
        "message_size" => "Message size (bytes)".into(),
        "log_size" | "log_size_kill" => "Data in the log before SIGKILL (GiB)".into(),
        "log_size_clean" => "Data in the log before SIGTERM (GiB)".into(),
        other => other.replace('_', " "),
    }
}

fn title(table: &Table, rows: &[&Vec<String>], what: &str, curve: &str) -> String {
    // the axis description without its unit
    let x = x_desc(curve);
    let x = x.split(" (").next().unwrap_or_default();
    let mut c = x.chars();
    let x: String = c
        .next()
        .map(|f| f.to_lowercase().chain(c).collect())
        .unwrap_or_default();
    let settings = rows
        .first()
        .map(|r| table.get(r, "settings").trim().to_string())
        .unwrap_or_default();
    if settings.is_empty() {
        format!("{what} against {x}")
    } else {
        format!("{what} against {x} ({settings})")
    }
}

fn x_range(points: &[(f64, f64)]) -> AxisRange {
    let x = AxisRange::fit(points.iter().map(|p| p.0), 10.0);
    if x.log {
        x
    } else {
        // linear x: start at the first point, not at 0
        let lo = points.iter().map(|p| p.0).fold(f64::MAX, f64::min);
        let hi = points.iter().map(|p| p.0).fold(f64::MIN, f64::max);
        let pad = ((hi - lo) * 0.05).max(0.5);
        AxisRange {
            lo: lo - pad,
            hi: hi + pad,
            log: false,
        }
    }
}

/// Writes the plots of one CSV file as `PREFIX-<curve>.<format>`; returns the files written.
pub fn plot_table(table: &Table, prefix: &Path, format: &str) -> Result<Vec<PathBuf>, String> {
    let out_path = |curve: &str| {
        let name = format!(
            "{}-{curve}.{format}",
            prefix
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("scaling")
        );
        prefix.with_file_name(name)
    };
    let mut written = Vec::new();
    if table.has(&["curve", "x", "msg_per_sec", "mb_per_sec", "p99_ms"]) {
        for curve in table.curves() {
            let rows = table.curve_rows(&curve);
            let msgs = table.points(&rows, "msg_per_sec");
            if msgs.is_empty() {
                continue;
            }
            let panels = vec![
                Panel {
                    y_desc: "Messages per second".into(),
                    series: vec![("acknowledged msg/s".into(), msgs.clone())],
                    goal: None,
                },
                Panel {
                    y_desc: "MB/s (10^6 bytes of values)".into(),
                    series: vec![(
                        "acknowledged MB/s".into(),
                        table.points(&rows, "mb_per_sec"),
                    )],
                    goal: None,
                },
                Panel {
                    y_desc: "p99 send-to-ack (ms)".into(),
                    series: vec![("p99 send-to-ack".into(), table.points(&rows, "p99_ms"))],
                    goal: None,
                },
            ];
            let path = out_path(&curve);
            plot::panels_plot(
                &path,
                &title(table, &rows, "Throughput and p99", &curve),
                &x_desc(&curve),
                x_range(&msgs),
                &panels,
            )?;
            written.push(path);
        }
    } else if table.has(&["curve", "x", "accept_ms", "serve_ms"]) {
        let curves = table.curves();
        // `<curve>_<variant>` (e.g. log_size_full_active): points in <curve>'s plot
        let variant_of = |c: &str| {
            curves
                .iter()
                .find(|m| {
                    c.len() > m.len() + 1
                        && c.starts_with(m.as_str())
                        && c[m.len()..].starts_with('_')
                })
                .cloned()
        };
        for curve in &curves {
            if variant_of(curve).is_some() {
                continue;
            }
            let rows: Vec<&Vec<String>> = table
                .curve_rows(curve)
                .into_iter()
                .filter(|r| table.num(r, "x").is_some_and(|x| x > 0.0))
                .collect();
            if rows.len() < 2 {
                continue;
            }
            let accept = table.points(&rows, "accept_ms");
            let serve = table.points(&rows, "serve_ms");
            let mut series = vec![
                ("port accepting connections".into(), accept.clone()),
                ("first produce + fetch answered".into(), serve),
            ];
            let mut all_x = accept.clone();
            for v in curves
                .iter()
                .filter(|c| variant_of(c).as_ref() == Some(curve))
            {
                let pts = table.points(&table.curve_rows(v), "serve_ms");
                all_x.extend(pts.iter().copied());
                let name = match &v[curve.len() + 1..] {
                    "full_active" => "active segment ~1 GiB".to_string(),
                    "clean" => "after SIGTERM".to_string(),
                    other => other.replace('_', " "),
                };
                series.push((format!("first produce + fetch answered, {name}"), pts));
            }
            let panels = vec![Panel {
                y_desc: "Time from restart (ms)".into(),
                series,
                goal: Some(("goal: serving within 1 s".into(), 1000.0)),
            }];
            let path = out_path(curve);
            plot::panels_plot(
                &path,
                &title(table, &rows, "Restart time", curve),
                &x_desc(curve),
                x_range(&all_x),
                &panels,
            )?;
            written.push(path);
        }
    } else {
        return Err(format!(
            "unknown CSV columns {:?}: expected curve,x,msg_per_sec,mb_per_sec,p99_ms or \
             curve,x,accept_ms,serve_ms",
            table.header
        ));
    }
    Ok(written)
}

/// `loadgen plot-scaling`: plots every CSV in `files`.
pub fn plot_scaling(
    files: &[PathBuf],
    prefix: &Path,
    format: &str,
) -> Result<Vec<PathBuf>, String> {
    if format != "svg" && format != "png" {
        return Err(format!("--format must be svg or png, not {format:?}"));
    }
    let mut written = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let table = Table::parse(&text).map_err(|e| format!("{}: {e}", f.display()))?;
        written.extend(
            plot_table(&table, prefix, format).map_err(|e| format!("{}: {e}", f.display()))?,
        );
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CURVES: &str = "curve,x,msg_per_sec,mb_per_sec,p99_ms,settings\n\
        partitions,16,2000000,200,8.5,1 producer; 100 B\n\
        partitions,1,3000000,300,7.0,1 producer; 100 B\n\
        # a comment\n\
        message_size,1048576,150,157,40,1 producer\n\
        message_size,24,4000000,96,9,1 producer\n";

    #[test]
    fn parses_and_groups_by_curve() {
        let t = Table::parse(CURVES).expect("csv");
        assert_eq!(t.rows.len(), 4);
        assert_eq!(t.curves(), vec!["partitions", "message_size"]);
        let rows = t.curve_rows("partitions");
        assert_eq!(
            t.points(&rows, "msg_per_sec"),
            vec![(1.0, 3e6), (16.0, 2e6)]
        );
        assert_eq!(t.get(rows[0], "settings"), "1 producer; 100 B");
        assert_eq!(t.num(rows[0], "missing"), None);
    }

    #[test]
    fn rejects_ragged_rows_and_unknown_columns() {
        assert!(Table::parse("a,b\n1\n").is_err());
        let t = Table::parse("a,b\n1,2\n").expect("csv");
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(plot_table(&t, &dir.path().join("s"), "svg").is_err());
    }

    #[test]
    fn writes_one_svg_per_curve() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Table::parse(CURVES).expect("csv");
        let files = plot_table(&t, &dir.path().join("scaling"), "svg").expect("plots");
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().expect("name").to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec!["scaling-partitions.svg", "scaling-message_size.svg"]
        );
        let svg = std::fs::read_to_string(&files[1]).expect("svg");
        assert!(svg.contains("<svg"));
        assert!(svg.contains("Message size (bytes)"));
    }

    #[test]
    fn restart_plot_skips_curves_without_two_positive_points() {
        let csv = "curve,x,accept_ms,serve_ms,settings\n\
            log_size,1,40,120,1 partition\n\
            log_size,10,45,300,1 partition\n\
            log_size_full_active,11,900,1500,1 partition\n\
            cold_start,0,30,80,empty\n";
        let t = Table::parse(csv).expect("csv");
        let dir = tempfile::tempdir().expect("tempdir");
        let files = plot_table(&t, &dir.path().join("r"), "svg").expect("plots");
        assert_eq!(files.len(), 1);
        assert!(files[0].ends_with("r-log_size.svg"));
        let svg = std::fs::read_to_string(&files[0]).expect("svg");
        assert!(svg.contains("goal: serving within 1 s"));
        assert!(svg.contains("answered, active segment ~1 GiB"));
    }

    #[test]
    fn axis_ranges_and_labels() {
        let r = AxisRange::fit([1.0, 4096.0], 10.0);
        assert!(r.log && r.lo < 1.0 && r.hi > 4096.0);
        let r = AxisRange::fit([2.0, 5.0], 10.0);
        assert!(!r.log && r.lo == 0.0 && r.hi > 5.0);
        assert_eq!(plot::si_label(4096.0), "4.1k");
        assert_eq!(plot::si_label(1_048_576.0), "1.05M");
        assert_eq!(plot::si_label(16.0), "16");
        assert_eq!(plot::si_label(0.5), "0.5");
        assert_eq!(plot::si_label(250_000.0), "250k");
    }
}
