//! The HdrHistogram percentile-distribution text format (`.hgrm`), as written by Java's
//! `AbstractHistogram.outputPercentileDistribution(out, ticksPerHalfDistance, scalingRatio)`,
//! and a parser for it.
//!
//! The hdrhistogram crate has no writer for this format, so this module follows the Java code:
//! the same percentile iteration (percent arithmetic, `ticksPerHalfDistance` ticks in every half
//! of the remaining distance to 100%, a last line at 100%), the same column formats
//! (`%12.Nf %2.12f %10d %14.2f`, N = significant digits) and the same footer. Java's `%f`
//! rounds the shortest decimal representation half-up; [`java_fixed`] does the same.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum HgrmError {
    #[error("line {line}: {reason}")]
    Parse { line: usize, reason: String },
    #[error("no percentile lines")]
    Empty,
}

/// Formats `x` like Java's `String.format("%.{prec}f", x)`: the shortest decimal digits that
/// identify the double, rounded half-up to `prec` decimals.
pub fn java_fixed(x: f64, prec: usize) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            "NaN".into()
        } else if x > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let neg = x.is_sign_negative() && x != 0.0;
    let s = format!("{}", x.abs()); // shortest round-trip digits, no exponent
    let (int_part, frac_part) = s.split_once('.').unwrap_or((&s, ""));
    let mut digits: Vec<u8> = int_part.bytes().map(|b| b - b'0').collect();
    let int_len = digits.len();
    let frac: Vec<u8> = frac_part.bytes().map(|b| b - b'0').collect();
    for i in 0..prec {
        digits.push(frac.get(i).copied().unwrap_or(0));
    }
    if frac.get(prec).copied().unwrap_or(0) >= 5 {
        // half-up carry
        let mut i = digits.len();
        loop {
            if i == 0 {
                digits.insert(0, 1);
                break;
            }
            i -= 1;
            if digits[i] == 9 {
                digits[i] = 0;
            } else {
                digits[i] += 1;
                break;
            }
        }
    }
    let int_len = int_len + (digits.len() - int_len - prec);
    let mut out = String::with_capacity(digits.len() + 2);
    if neg && digits.iter().any(|&d| d != 0) {
        out.push('-');
    }
    for d in &digits[..int_len] {
        out.push((b'0' + d) as char);
    }
    if prec > 0 {
        out.push('.');
        for d in &digits[int_len..] {
            out.push((b'0' + d) as char);
        }
    }
    out
}

fn pad(s: String, width: usize) -> String {
    format!("{s:>width$}")
}

/// One line of the distribution.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Value in output units (raw value / scaling ratio).
    pub value: f64,
    /// Percentile level as a fraction (0..=1).
    pub percentile: f64,
    pub total_count: u64,
}

/// Java's PercentileIterator over `h`: (raw value iterated to, percentile level in percent,
/// total count to this value).
pub fn percentile_rows(h: &Histogram<u64>, ticks_per_half_distance: u32) -> Vec<(u64, f64, u64)> {
    let total = h.len();
    let mut rows = Vec::new();
    if total == 0 {
        return rows;
    }
    let ticks = f64::from(ticks_per_half_distance.max(1));
    let mut level = 0.0f64; // percent
    let mut running = 0u64;
    for v in h.iter_recorded() {
        let count = v.count_at_value();
        running += count;
        let value = v.value_iterated_to();
        let pct = (100.0 * running as f64) / total as f64;
        // AbstractHistogramIterator.next() with PercentileIterator's hasNext/reachedIterationLevel
        while pct >= level {
            rows.push((value, level, running));
            // incrementIterationLevel
            let halvings = ((100.0 / (100.0 - level)).ln() / 2f64.ln()) as i64 + 1;
            let reporting_ticks = ticks * 2f64.powi(halvings as i32);
            level += 100.0 / reporting_ticks;
            if running >= total {
                // hasNext(): no more counts, so one last step to 100%
                rows.push((value, 100.0, running));
                return rows;
            }
        }
    }
    rows
}

/// Writes the percentile distribution of `h` (values divided by `scaling_ratio`) in Java's
/// format with `sigfig` decimals, 5 ticks per half distance being the usual choice.
pub fn write_distribution(
    h: &Histogram<u64>,
    ticks_per_half_distance: u32,
    scaling_ratio: f64,
) -> String {
    let sig = h.sigfig() as usize;
    let mut out = String::new();
    let _ = write!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    for (value, level, total) in percentile_rows(h, ticks_per_half_distance) {
        let v = pad(java_fixed(value as f64 / scaling_ratio, sig), 12);
        let p = pad(java_fixed(level / 100.0, 12), 2);
        if level != 100.0 {
            let inv = 1.0 / (1.0 - level / 100.0);
            let _ = writeln!(out, "{v} {p} {total:>10} {}", pad(java_fixed(inv, 2), 14));
        } else {
            let _ = writeln!(out, "{v} {p} {total:>10}");
        }
    }
    let mean = h.mean() / scaling_ratio;
    let sd = h.stdev() / scaling_ratio;
    let max = h.max() as f64 / scaling_ratio;
    let _ = writeln!(
        out,
        "#[Mean    = {}, StdDeviation   = {}]",
        pad(java_fixed(mean, sig), 12),
        pad(java_fixed(sd, sig), 12)
    );
    let _ = writeln!(
        out,
        "#[Max     = {}, Total count    = {:>12}]",
        pad(java_fixed(max, sig), 12),
        h.len()
    );
    let sub_buckets = (2 * 10u64.pow(u32::from(h.sigfig()))).next_power_of_two();
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        sub_buckets
    );
    out
}

/// A parsed `.hgrm` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Distribution {
    pub rows: Vec<Row>,
    pub mean: Option<f64>,
    pub std_deviation: Option<f64>,
    pub max: Option<f64>,
    pub total_count: Option<u64>,
    pub buckets: Option<u64>,
    pub sub_buckets: Option<u64>,
}

impl Distribution {
    /// The value at percentile level `q` (a fraction): the first row whose level is >= `q`.
    /// Exact for the levels the file lists (the ticks); for other levels it is the value at the
    /// next tick, an upper bound.
    pub fn value_at(&self, q: f64) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.percentile >= q - 1e-12)
            .or(self.rows.last())
            .map(|r| r.value)
    }
}

fn footer_field(line: &str, name: &str) -> Option<String> {
    let i = line.find(name)?;
    let rest = &line[i + name.len()..];
    let rest = rest.trim_start().strip_prefix('=')?.trim_start();
    let end = rest.find([',', ']']).unwrap_or(rest.len());
    Some(rest[..end].trim().to_string())
}

/// Parses the text written by [`write_distribution`] (or by Java's HdrHistogram).
pub fn parse(text: &str) -> Result<Distribution, HgrmError> {
    let mut d = Distribution {
        rows: Vec::new(),
        mean: None,
        std_deviation: None,
        max: None,
        total_count: None,
        buckets: None,
        sub_buckets: None,
    };
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        let err = |reason: &str| HgrmError::Parse {
            line: i + 1,
            reason: reason.to_string(),
        };
        if t.is_empty() || t.starts_with("Value") {
            continue;
        }
        if t.starts_with("#[") {
            let num = |name: &str| -> Result<Option<f64>, HgrmError> {
                footer_field(t, name)
                    .map(|s| s.parse::<f64>().map_err(|_| err(&format!("bad {name}"))))
                    .transpose()
            };
            let int = |name: &str| -> Result<Option<u64>, HgrmError> {
                footer_field(t, name)
                    .map(|s| s.parse::<u64>().map_err(|_| err(&format!("bad {name}"))))
                    .transpose()
            };
            d.mean = d.mean.or(num("Mean")?);
            d.std_deviation = d.std_deviation.or(num("StdDeviation")?);
            d.max = d.max.or(num("Max")?);
            d.total_count = d.total_count.or(int("Total count")?);
            d.buckets = d.buckets.or(int("Buckets")?);
            d.sub_buckets = d.sub_buckets.or(int("SubBuckets")?);
            continue;
        }
        if t.starts_with('#') {
            continue;
        }
        let mut f = t.split_whitespace();
        let value = f
            .next()
            .and_then(|s| s.parse::<f64>().ok())
            .ok_or_else(|| err("bad value"))?;
        let percentile = f
            .next()
            .and_then(|s| s.parse::<f64>().ok())
            .ok_or_else(|| err("bad percentile"))?;
        let total_count = f
            .next()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| err("bad total count"))?;
        d.rows.push(Row {
            value,
            percentile,
            total_count,
        });
    }
    if d.rows.is_empty() {
        return Err(HgrmError::Empty);
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_fixed_rounds_half_up_on_shortest_digits() {
        assert_eq!(java_fixed(0.125, 2), "0.13");
        assert_eq!(java_fixed(2.5, 0), "3");
        assert_eq!(java_fixed(9.9996, 3), "10.000");
        assert_eq!(java_fixed(0.0, 12), "0.000000000000");
        assert_eq!(java_fixed(1.0 / 3.0, 12), "0.333333333333");
        assert_eq!(java_fixed(123.0, 3), "123.000");
        assert_eq!(java_fixed(1e-7, 3), "0.000");
        assert_eq!(java_fixed(-1.5, 1), "-1.5");
    }

    /// A histogram holding 1..=10000 (us, printed in ms): the header, the tick rows (values are
    /// the highest equivalent value of each sub-bucket: 5000 lies in [5000, 5003] at this
    /// magnitude), the half-up rounding of 0.9998291015625, the 100% line and the footer.
    #[test]
    fn layout_matches_java() {
        let mut h = Histogram::<u64>::new(3).expect("hist");
        for v in 1..=10_000u64 {
            h.record(v).expect("record");
        }
        let text = write_distribution(&h, 5, 1000.0);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        assert_eq!(
            lines[2],
            "       0.001 0.000000000000          1           1.00"
        );
        assert_eq!(
            lines[3],
            "       1.000 0.100000000000       1000           1.11"
        );
        assert!(lines.contains(&"       5.003 0.500000000000       5003           2.00"));
        assert!(lines.contains(&"       9.999 0.999829101563       9999        5851.43"));
        let last_row = lines[lines.len() - 4];
        assert_eq!(last_row, "      10.007 1.000000000000      10000");
        assert_eq!(
            lines[lines.len() - 3],
            "#[Mean    =        5.001, StdDeviation   =        2.887]"
        );
        assert_eq!(
            lines[lines.len() - 2],
            "#[Max     =       10.007, Total count    =        10000]"
        );
        assert_eq!(
            lines[lines.len() - 1],
            "#[Buckets =            4, SubBuckets     =         2048]"
        );
    }

    #[test]
    fn parses_back() {
        let mut h = Histogram::<u64>::new(3).expect("hist");
        let mut x: u64 = 12345;
        for _ in 0..100_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            h.record(50 + (x >> 40) % 20_000).expect("record");
        }
        let d = parse(&write_distribution(&h, 5, 1000.0)).expect("parse");
        assert_eq!(d.total_count, Some(100_000));
        for r in &d.rows {
            let want = h.value_at_quantile(r.percentile) as f64 / 1000.0;
            assert!((r.value - want).abs() < 0.0005, "{r:?} vs {want}");
        }
        assert_eq!(
            d.max,
            Some((h.max() as f64 / 1000.0 * 1000.0).round() / 1000.0)
        );
        assert!(d.value_at(0.5).is_some());
    }
}
