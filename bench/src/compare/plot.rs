//! PNG plots of a run (plotters, bitmap backend, pure Rust).
//!
//! Text needs a font file: the first of `$VCHAN_BENCH_FONT`, DejaVu Sans or Liberation Sans
//! (Debian's `fonts-dejavu-core` / `fonts-liberation`) that exists is loaded at run time
//! (plotters' `ab_glyph` feature: no fontconfig or freetype). Without one, the plots are
//! drawn without any text and the report says so.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;
use vchan_bench::stats::cdf_points;
use vchan_bench::units::size;

use super::{GRID_IMPLS, LATENCY_IMPLS, Plan, Results};

/// The files drawn (relative to the plot directory) and what went wrong.
#[derive(Debug, Default)]
pub(crate) struct Plots {
    pub(crate) throughput: Vec<String>,
    pub(crate) latency: Vec<String>,
    pub(crate) problems: Vec<String>,
}

const FONT_CANDIDATES: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
];

/// Registers a font for "sans-serif" once; whether text can be drawn.
fn fonts() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let env = std::env::var("VCHAN_BENCH_FONT").ok();
        if env.as_deref() == Some("none") {
            return false;
        }
        for path in env.iter().map(String::as_str).chain(FONT_CANDIDATES) {
            if let Ok(bytes) = std::fs::read(path) {
                // The font table needs 'static bytes: one font, loaded once per process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

fn colour(i: usize) -> RGBColor {
    const C: [RGBColor; 12] = [
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0xff, 0x7f, 0x0e),
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0x94, 0x67, 0xbd),
        RGBColor(0x8c, 0x56, 0x4b),
        RGBColor(0xe3, 0x77, 0xc2),
        RGBColor(0x7f, 0x7f, 0x7f),
        RGBColor(0xbc, 0xbd, 0x22),
        RGBColor(0x17, 0xbe, 0xcf),
        RGBColor(0x00, 0x00, 0x00),
        RGBColor(0x00, 0x3f, 0x7f),
    ];
    C[i % C.len()]
}

type Series = (String, Vec<(f64, f64)>);

/// What a chart says around its data.
struct Chart<'a> {
    title: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    x_fmt: &'a dyn Fn(&f64) -> String,
    /// Log y axis (else linear 0..1, for distributions).
    log_y: bool,
    legend_at: SeriesLabelPosition,
}

/// A log–log (or log-x, linear-y) line chart with markers.
fn line_chart(path: &Path, spec: Chart<'_>, series: &[Series]) -> Result<(), String> {
    let Chart {
        title,
        x_desc,
        y_desc,
        x_fmt,
        log_y,
        legend_at,
    } = spec;
    let text = fonts();
    let pts = series.iter().flat_map(|s| s.1.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        if x > 0.0 && y > 0.0 && x.is_finite() && y.is_finite() {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if x0 > x1 {
        return Err(format!("{}: nothing to plot", path.display()));
    }
    let (x0, x1) = (x0 / 1.2, x1 * 1.2);
    let root = BitMapBackend::new(path, (1100, 650)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut b = ChartBuilder::on(&root);
    b.margin(14);
    if text {
        b.caption(title, ("sans-serif", 24))
            .x_label_area_size(48)
            .y_label_area_size(72);
    } else {
        b.x_label_area_size(8).y_label_area_size(8);
    }
    macro_rules! draw {
        ($y:expr) => {{
            let mut chart = b
                .build_cartesian_2d((x0..x1).log_scale(), $y)
                .map_err(|e| e.to_string())?;
            if text {
                chart
                    .configure_mesh()
                    .x_desc(x_desc)
                    .y_desc(y_desc)
                    .x_label_formatter(x_fmt)
                    .y_label_formatter(&|v: &f64| {
                        if *v >= 10.0 || *v == 0.0 {
                            format!("{v:.0}")
                        } else {
                            format!("{v:.1}")
                        }
                    })
                    .label_style(("sans-serif", 15))
                    .draw()
                    .map_err(|e| e.to_string())?;
            }
            // Without a font, no mesh either: plotters lays out its labels even when there
            // are none to draw, and that needs a font.
            for (i, (name, points)) in series.iter().enumerate() {
                let c = colour(i);
                let pts: Vec<(f64, f64)> = points
                    .iter()
                    .copied()
                    .filter(|&(x, y)| x > 0.0 && y > 0.0 && y.is_finite())
                    .collect();
                let drawn = chart
                    .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                    .map_err(|e| e.to_string())?;
                if text {
                    drawn.label(name.as_str()).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 22, y)], c.stroke_width(3))
                    });
                }
                if pts.len() <= 40 {
                    chart
                        .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
                        .map_err(|e| e.to_string())?;
                }
            }
            if text {
                chart
                    .configure_series_labels()
                    .position(legend_at.clone())
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .label_font(("sans-serif", 15))
                    .draw()
                    .map_err(|e| e.to_string())?;
            }
        }};
    }
    if log_y {
        let (y0, y1) = (y0 / 1.5, y1 * 1.5);
        draw!((y0..y1).log_scale());
    } else {
        draw!(0.0..1.0);
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

/// Draws every plot into `dir`.
pub(crate) fn draw(dir: &Path, plan: &Plan, res: &Results) -> Plots {
    let mut plots = Plots::default();
    if !fonts() {
        plots.problems.push(
            "no font file found (install fonts-dejavu-core or set VCHAN_BENCH_FONT): drawn without text".into(),
        );
    }
    for &ring in &plan.rings {
        let series: Vec<Series> = GRID_IMPLS
            .iter()
            .map(|&imp| {
                let pts = plan
                    .msgs
                    .iter()
                    .filter_map(|&msg| {
                        res.grid
                            .get(&(ring, msg, imp))
                            .and_then(|c| c.median())
                            .map(|v| (msg as f64, v))
                    })
                    .collect();
                (imp.label(), pts)
            })
            .filter(|s: &Series| !s.1.is_empty())
            .collect();
        if series.is_empty() {
            continue;
        }
        let name = format!("throughput-ring-{}.png", size(ring));
        let title = format!(
            "Throughput vs write size, {} rings (median MB/s)",
            size(ring)
        );
        let spec = Chart {
            title: &title,
            x_desc: "bytes per write (log)",
            y_desc: "MB/s (log)",
            x_fmt: &|v| size(v.round() as usize),
            log_y: true,
            legend_at: SeriesLabelPosition::UpperLeft,
        };
        match line_chart(&dir.join(&name), spec, &series) {
            Ok(()) => plots.throughput.push(name),
            Err(e) => plots.problems.push(e),
        }
    }
    let series: Vec<Series> = LATENCY_IMPLS
        .iter()
        .filter_map(|&imp| {
            let (_, samples) = res.latency.iter().find(|(i, _)| *i == imp)?;
            if samples.is_empty() {
                return None;
            }
            let mut s: Vec<f64> = samples.iter().map(|ns| ns / 1000.0).collect();
            s.sort_by(f64::total_cmp);
            Some((imp.label(), cdf_points(&s, 400)))
        })
        .collect();
    if !series.is_empty() {
        let name = "latency-64B-cdf.png".to_owned();
        let label = |v: &f64| {
            if *v >= 1.0 {
                format!("{v:.0} µs")
            } else {
                format!("{:.0} ns", v * 1000.0)
            }
        };
        let spec = Chart {
            title: "64-byte round trips: cumulative distribution",
            x_desc: "round trip (µs, log)",
            y_desc: "fraction of round trips at or below",
            x_fmt: &label,
            log_y: false,
            legend_at: SeriesLabelPosition::LowerRight,
        };
        match line_chart(&dir.join(&name), spec, &series) {
            Ok(()) => plots.latency.push(name),
            Err(e) => plots.problems.push(e),
        }
    }
    plots
}
