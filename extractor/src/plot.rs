//! Plots of a Pareto front (SVG and PNG, with plotters): every evaluated arch in grey, the front
//! as a line with markers.
//!
//! Text is laid out (SVG) and rasterised (PNG) with a TrueType font found on the system (DejaVu
//! Sans, from Debian's `fonts-dejavu-core`, which `make setup` installs). Without one, the plots
//! are skipped and the caller is told why (the JSON and CSV carry the same data).

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

use crate::pareto::Front;
use crate::ExtractError;

const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Register a system TrueType font for bitmap text once; whether one was found.
fn font() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| {
        for p in FONT_PATHS {
            if let Ok(bytes) = std::fs::read(p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    front: &Front,
    title: &str,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |x: &dyn std::fmt::Display| x.to_string();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let xs = front.archive.iter().map(|p| p.1);
    let ys = front.archive.iter().map(|p| p.0 * 100.0);
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let (y0, y1) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let (x0, x1) = if x0.is_finite() && x1 > x0 {
        (x0, x1)
    } else {
        (0.0, 1.0)
    };
    let (y0, y1) = if y0.is_finite() && y1 > y0 {
        (y0, y1)
    } else {
        (0.0, 100.0)
    };
    let pad = |a: f64, b: f64| (b - a) * 0.03;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (x0 - pad(x0, x1))..(x1 + pad(x0, x1)),
            (y0 - pad(y0, y1))..(y1 + pad(y0, y1)),
        )
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc(front.objective.as_str())
        .y_desc("predicted top-1 (%)")
        .draw()
        .map_err(|x| e(&x))?;
    chart
        .draw_series(
            front
                .archive
                .iter()
                .map(|(a, c)| Circle::new((*c, a * 100.0), 2, RGBColor(190, 190, 190).filled())),
        )
        .map_err(|x| e(&x))?;
    let pts: Vec<(f64, f64)> = front
        .points
        .iter()
        .filter_map(|p| {
            p.metrics
                .get(&front.objective)
                .map(|c| (*c, p.accuracy * 100.0))
        })
        .collect();
    chart
        .draw_series(LineSeries::new(pts.clone(), BLUE.stroke_width(2)))
        .map_err(|x| e(&x))?
        .label("Pareto front")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(pts.iter().map(|p| Circle::new(*p, 4, BLUE.filled())))
        .map_err(|x| e(&x))?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

/// Write `front` as an SVG file; `Ok(false)` when no font is available to lay out the text
/// (nothing written).
pub fn svg(front: &Front, path: &Path, title: &str) -> Result<bool, ExtractError> {
    if !font() {
        return Ok(false);
    }
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    draw(root, front, title).map_err(|r| ExtractError::file(path, r))?;
    Ok(true)
}

/// Write `front` as a PNG file; `Ok(false)` when no font is available (nothing written).
pub fn png(front: &Front, path: &Path, title: &str) -> Result<bool, ExtractError> {
    if !font() {
        return Ok(false);
    }
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    draw(root, front, title).map_err(|r| ExtractError::file(path, r))?;
    Ok(true)
}
