//! Plots with plotters, SVG or PNG by the file's extension. Text uses DejaVu Sans compiled in
//! (plotters' ab_glyph feature), so no system fonts are needed.
//!
//! The percentile plot follows HdrHistogram's plotter: latency (ms) against percentile on a
//! log axis of 1/(1-percentile), labelled 0%, 90%, 99%, 99.9%, ...

use std::path::Path;
use std::sync::Once;

use hdrhistogram::Histogram;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::hgrm;

const SIZE: (u32, u32) = (1000, 600);

/// Runs a drawing function on an SVG or PNG backend chosen by the extension of `path`.
macro_rules! render {
    ($path:expr, |$root:ident| $body:expr) => {
        match $path.extension().and_then(|e| e.to_str()) {
            Some("svg") => {
                let $root = SVGBackend::new($path, SIZE).into_drawing_area();
                $body
            }
            Some("png") => {
                let $root = BitMapBackend::new($path, SIZE).into_drawing_area();
                $body
            }
            other => Err(format!("unknown plot format {other:?}")),
        }
    };
}
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
        let _ = register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold());
    });
}

/// Highest x: 1/(1-0.999999).
const X_MAX: f64 = 1e6;

/// (1/(1-percentile), latency ms) from the histogram's percentile distribution (the last point
/// at 100% is put at the right edge).
pub fn percentile_curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    curve_from_rows(
        hgrm::percentile_rows(h, 5)
            .into_iter()
            .map(|(v, pct, _)| (pct / 100.0, v as f64 / 1000.0)),
    )
}

/// The same curve from a parsed `.hgrm` (values already in ms).
pub fn curve_from_distribution(d: &hgrm::Distribution) -> Vec<(f64, f64)> {
    curve_from_rows(d.rows.iter().map(|r| (r.percentile, r.value)))
}

fn curve_from_rows(rows: impl Iterator<Item = (f64, f64)>) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    for (q, ms) in rows {
        let x = if q >= 1.0 {
            X_MAX
        } else {
            (1.0 / (1.0 - q)).min(X_MAX)
        };
        out.push((x, ms));
    }
    out
}

fn percentile_label(x: &f64) -> String {
    let q = 1.0 - 1.0 / x.max(1.0);
    let pct = q * 100.0;
    if pct < 1e-9 {
        "0%".into()
    } else {
        let s = format!("{pct:.6}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        format!("{s}%")
    }
}

/// Latency by percentile, one line per series.
pub fn percentile_plot(
    path: &Path,
    title: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<(), String> {
    fonts();
    render!(path, |root| draw_percentiles(root, title, series))
}

fn draw_percentiles<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let ymax = series
            .iter()
            .flat_map(|(_, pts)| pts.iter().map(|p| p.1))
            .fold(0.0f64, f64::max)
            .max(0.001)
            * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(15)
            .margin_right(45)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d((1.0f64..X_MAX).log_scale(), 0.0f64..ymax)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("Percentile")
            .y_desc("Latency (milliseconds)")
            .x_label_formatter(&percentile_label)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())
    }
}

/// Throughput over time: (seconds, acknowledged msg/s, consumed msg/s).
pub fn throughput_plot(path: &Path, title: &str, points: &[(f64, f64, f64)]) -> Result<(), String> {
    fonts();
    render!(path, |root| draw_throughput(root, title, points))
}

fn draw_throughput<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    points: &[(f64, f64, f64)],
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let xmin = points
            .iter()
            .map(|p| p.0)
            .fold(f64::MAX, f64::min)
            .min(1e12);
        let xmin = if xmin == 1e12 {
            0.0
        } else {
            (xmin - 0.1).max(0.0)
        };
        let xmax = points.iter().map(|p| p.0).fold(xmin + 0.5, f64::max) + 0.05;
        let ymax = points.iter().map(|p| p.1.max(p.2)).fold(1.0f64, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(90)
            .build_cartesian_2d(xmin..xmax, 0.0f64..ymax)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("Time (s)")
            .y_desc("Messages per second")
            .y_label_formatter(&|y| format!("{y:.0}"))
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| e.to_string())?;
        let produced: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.1 > 0.0)
            .map(|p| (p.0, p.1))
            .collect();
        let consumed: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.2 > 0.0)
            .map(|p| (p.0, p.2))
            .collect();
        for (i, (name, pts)) in [("acknowledged", produced), ("consumed", consumed)]
            .into_iter()
            .enumerate()
        {
            if pts.is_empty() {
                continue;
            }
            let color = COLORS[i];
            chart
                .draw_series(
                    pts.iter()
                        .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
                )
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())
    }
}
