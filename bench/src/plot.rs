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
        render!($path, SIZE, |$root| $body)
    };
    ($path:expr, $size:expr, |$root:ident| $body:expr) => {
        match $path.extension().and_then(|e| e.to_str()) {
            Some("svg") => {
                let $root = SVGBackend::new($path, $size).into_drawing_area();
                $body
            }
            Some("png") => {
                let $root = BitMapBackend::new($path, $size).into_drawing_area();
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

/// One panel of [`panels_plot`]: a y axis, its lines (name, (x, y) points) and an optional
/// horizontal goal line (name, y).
pub struct Panel {
    pub y_desc: String,
    pub series: Vec<(String, Vec<(f64, f64)>)>,
    pub goal: Option<(String, f64)>,
}

/// An axis range, and whether it is drawn on a log scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AxisRange {
    pub lo: f64,
    pub hi: f64,
    pub log: bool,
}

impl AxisRange {
    /// The range that shows `values` (and 0 for a linear axis): log when every value is positive
    /// and they span at least `log_from` times (largest / smallest).
    pub fn fit(values: impl IntoIterator<Item = f64>, log_from: f64) -> AxisRange {
        let (mut lo, mut hi) = (f64::MAX, f64::MIN);
        for v in values.into_iter().filter(|v| v.is_finite()) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if lo > hi {
            return AxisRange {
                lo: 0.0,
                hi: 1.0,
                log: false,
            };
        }
        if lo > 0.0 && hi / lo >= log_from {
            AxisRange {
                lo: lo / 1.6,
                hi: hi * 1.6,
                log: true,
            }
        } else {
            AxisRange {
                lo: 0.0,
                hi: (hi * 1.15).max(1e-3),
                log: false,
            }
        }
    }
}

/// 1 234 567 as `1.23M`, 4096 as `4.1k`, 0.5 as `0.5`.
pub fn si_label(v: f64) -> String {
    let a = v.abs();
    let (d, suffix) = if a >= 1e9 {
        (1e9, "G")
    } else if a >= 1e6 {
        (1e6, "M")
    } else if a >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    let x = v / d;
    let s = if x.abs() >= 100.0 || (x.fract() == 0.0 && suffix.is_empty()) {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    };
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s}{suffix}")
}

/// Panels stacked one above the other, sharing the x axis (`x`), each with its own y range
/// (log when its values span 20x or more). Points are marked; PNG or SVG by extension.
pub fn panels_plot(
    path: &Path,
    title: &str,
    x_desc: &str,
    x: AxisRange,
    panels: &[Panel],
) -> Result<(), String> {
    fonts();
    let height = 60 + 300 * panels.len().max(1) as u32;
    render!(path, (1000, height), |root| draw_panels(
        root, title, x_desc, x, panels
    ))
}

fn draw_panels<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    x_desc: &str,
    x: AxisRange,
    panels: &[Panel],
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let area = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| e.to_string())?;
    let areas = area.split_evenly((panels.len().max(1), 1));
    for (a, p) in areas.iter().zip(panels) {
        let y = AxisRange::fit(
            p.series
                .iter()
                .flat_map(|(_, pts)| pts.iter().map(|q| q.1))
                .chain(p.goal.as_ref().map(|g| g.1)),
            20.0,
        );
        match (x.log, y.log) {
            (true, true) => draw_panel(
                a,
                (x.lo..x.hi).log_scale(),
                (y.lo..y.hi).log_scale(),
                x,
                x_desc,
                p,
            ),
            (true, false) => draw_panel(a, (x.lo..x.hi).log_scale(), y.lo..y.hi, x, x_desc, p),
            (false, true) => draw_panel(a, x.lo..x.hi, (y.lo..y.hi).log_scale(), x, x_desc, p),
            (false, false) => draw_panel(a, x.lo..x.hi, y.lo..y.hi, x, x_desc, p),
        }?;
    }
    root.present().map_err(|e| e.to_string())
}

fn draw_panel<DB, X, Y>(
    area: &DrawingArea<DB, Shift>,
    xs: X,
    ys: Y,
    x: AxisRange,
    x_desc: &str,
    panel: &Panel,
) -> Result<(), String>
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
    X: plotters::coord::ranged1d::AsRangedCoord<Value = f64>,
    Y: plotters::coord::ranged1d::AsRangedCoord<Value = f64>,
    X::CoordDescType: plotters::coord::ranged1d::ValueFormatter<f64>,
    Y::CoordDescType: plotters::coord::ranged1d::ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .margin_right(30)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(xs, ys)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(panel.y_desc.as_str())
        .x_label_formatter(&|v| si_label(*v))
        .y_label_formatter(&|v| si_label(*v))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (name, pts)) in panel.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(
                pts.iter()
                    .map(|&(px, py)| Circle::new((px, py), 4, color.filled())),
            )
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(name.clone())
            .legend(move |(lx, ly)| {
                PathElement::new(vec![(lx, ly), (lx + 20, ly)], color.stroke_width(2))
            });
    }
    if let Some((name, gy)) = &panel.goal {
        let color = RGBColor(110, 110, 110);
        chart
            .draw_series(DashedLineSeries::new(
                [(x.lo, *gy), (x.hi, *gy)],
                8,
                6,
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(name.clone())
            .legend(move |(lx, ly)| {
                PathElement::new(vec![(lx, ly), (lx + 20, ly)], color.stroke_width(2))
            });
    }
    if panel.series.len() < 2 && panel.goal.is_none() {
        // one line: the y axis says what it is
        return Ok(());
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| e.to_string())
}
