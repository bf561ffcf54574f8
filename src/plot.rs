//! The CLI's plots (SVG and PNG, with plotters): a Pareto front (every evaluated arch in grey, the
//! front as a line with markers), and a training run's curves (loss per logged step, held-out top-1
//! at each phase end).
//!
//! Text is laid out (SVG) and rasterised (PNG) with a TrueType font found on the system (DejaVu
//! Sans, from Debian's `fonts-dejavu-core`, which `make setup` installs). Without one, the plots
//! are skipped and the caller is told why (the JSON and CSV carry the same data).

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use anyhow::Context;
use ofa_extractor::Front;
use ofa_schema::metrics::{read_metrics, MetricsLine, SubnetSize};

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

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

fn err(x: impl std::fmt::Display) -> String {
    x.to_string()
}

/// A padded range over `v` (a unit range around a single value, `default` for none).
fn range(v: impl Iterator<Item = f64>, default: (f64, f64)) -> std::ops::Range<f64> {
    let (a, b) = v.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    let (a, b) = if a.is_finite() && b > a {
        (a, b)
    } else if a.is_finite() {
        (a - 1.0, a + 1.0)
    } else {
        default
    };
    let pad = (b - a) * 0.04;
    (a - pad)..(b + pad)
}

/// Axes with labels on `area`.
fn axes<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
    (x_desc, y_desc): (&str, &str),
) -> Result<Chart<'a, DB>, String>
where
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(x, y)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(err)?;
    Ok(chart)
}

/// A line with a legend entry.
fn line<DB: DrawingBackend>(
    chart: &mut Chart<'_, DB>,
    pts: Vec<(f64, f64)>,
    color: RGBAColor,
    label: &str,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    chart
        .draw_series(LineSeries::new(pts, color.stroke_width(2)))
        .map_err(err)?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    Ok(())
}

fn legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    at: SeriesLabelPosition,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(at)
        .draw()
        .map_err(err)
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    front: &Front,
    title: &str,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(err)?;
    let x = range(front.archive.iter().map(|p| p.1), (0.0, 1.0));
    let y = range(front.archive.iter().map(|p| p.0 * 100.0), (0.0, 100.0));
    let mut chart = axes(
        &root,
        x,
        y,
        (front.objective.as_str(), "predicted top-1 (%)"),
    )?;
    chart
        .draw_series(
            front
                .archive
                .iter()
                .map(|(a, c)| Circle::new((*c, a * 100.0), 2, RGBColor(190, 190, 190).filled())),
        )
        .map_err(err)?;
    let pts: Vec<(f64, f64)> = front
        .points
        .iter()
        .filter_map(|p| {
            p.metrics
                .get(&front.objective)
                .map(|c| (*c, p.accuracy * 100.0))
        })
        .collect();
    line(&mut chart, pts.clone(), BLUE.to_rgba(), "Pareto front")?;
    chart
        .draw_series(pts.iter().map(|p| Circle::new(*p, 4, BLUE.filled())))
        .map_err(err)?;
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Write `front` as an SVG file; `Ok(false)` when no font is available to lay out the text
/// (nothing written).
pub fn svg(front: &Front, path: &Path, title: &str) -> anyhow::Result<bool> {
    if !font() {
        return Ok(false);
    }
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    draw(root, front, title).map_err(|r| anyhow::anyhow!("{}: {r}", path.display()))?;
    Ok(true)
}

/// Write `front` as a PNG file; `Ok(false)` when no font is available (nothing written).
pub fn png(front: &Front, path: &Path, title: &str) -> anyhow::Result<bool> {
    if !font() {
        return Ok(false);
    }
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    draw(root, front, title).map_err(|r| anyhow::anyhow!("{}: {r}", path.display()))?;
    Ok(true)
}

/// What the curves show: loss points per phase (in order), and per phase end the step it came
/// after and the held-out top-1 of its min / mid / max subnets at the largest resolution; for a
/// fine-tuning run, the subnet's held-out top-1 after each epoch (step, top-1).
#[derive(Debug, Default)]
struct Curves {
    loss: Vec<(String, Vec<(f64, f64)>)>,
    ends: Vec<(String, f64, [Option<f64>; 3])>,
    epochs: Vec<(f64, f64)>,
}

impl Curves {
    /// Forget every loss point and epoch at or after `step` (a resumed run logs them again).
    fn rewind(&mut self, step: f64) {
        for (_, pts) in &mut self.loss {
            pts.retain(|p| p.0 < step);
        }
        self.loss.retain(|(_, pts)| !pts.is_empty());
        self.epochs.retain(|e| e.0 < step);
    }
}

fn read_curves(path: &Path) -> anyhow::Result<Curves> {
    // every line must parse; a torn last line (a run killed while appending it) is left out
    let log = read_metrics(path)?;
    // A resumed run logs the steps after its last checkpoint again: a line for a step at or
    // before one already drawn replaces what was drawn from there on.
    let mut c = Curves::default();
    let mut last_step = 0.0;
    for line in log.lines {
        match line {
            MetricsLine::Step(s) => {
                let step = s.global_step as f64;
                if step <= last_step {
                    c.rewind(step);
                }
                last_step = step;
                match c.loss.last_mut() {
                    Some((p, pts)) if *p == s.phase => pts.push((last_step, s.loss)),
                    _ => c.loss.push((s.phase, vec![(last_step, s.loss)])),
                }
            }
            MetricsLine::Validation(t) => {
                let r = t.rows.iter().map(|r| r.resolution).max().unwrap_or(0);
                let pick = |which: SubnetSize| {
                    t.rows
                        .iter()
                        .find(|x| x.subnet == which && x.resolution == r)
                        .map(|x| x.val_top1)
                };
                let ends = [SubnetSize::Min, SubnetSize::Mid, SubnetSize::Max].map(pick);
                c.ends.retain(|(p, _, _)| *p != t.phase);
                c.ends.push((t.phase, last_step, ends));
            }
            MetricsLine::Epoch(e) => {
                let step = e.global_step as f64;
                c.epochs.retain(|x| x.0 < step);
                c.epochs.push((step, e.heldout_top1));
            }
            MetricsLine::Data(_) | MetricsLine::Ranks(_) | MetricsLine::Branch(_) => {}
        }
    }
    anyhow::ensure!(
        !c.loss.is_empty(),
        "{}: no training steps logged yet",
        path.display()
    );
    Ok(c)
}

fn draw_curves<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    c: &Curves,
    title: &str,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(err)?;
    let (top, bottom) = root.split_vertically(root.dim_in_pixel().1 / 2);
    let x = range(
        c.loss
            .iter()
            .flat_map(|(_, p)| p.iter().map(|q| q.0))
            .chain(c.epochs.iter().map(|p| p.0)),
        (0.0, 1.0),
    );
    let y = range(
        c.loss.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)),
        (0.0, 1.0),
    );
    let mut chart = axes(&top, x.clone(), y, ("step", "training loss"))?;
    for (i, (phase, pts)) in c.loss.iter().enumerate() {
        line(&mut chart, pts.clone(), Palette99::pick(i).to_rgba(), phase)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    let y = range(
        c.ends
            .iter()
            .flat_map(|(_, _, v)| v.iter().flatten().copied())
            .chain(c.epochs.iter().map(|p| p.1)),
        (0.0, 100.0),
    );
    let xlabel = if c.epochs.is_empty() {
        "step (phase ends)"
    } else {
        "step (epoch ends)"
    };
    let mut chart = axes(&bottom, x, y, (xlabel, "held-out top-1 (%)"))?;
    if !c.epochs.is_empty() {
        line(&mut chart, c.epochs.clone(), BLUE.to_rgba(), "subnet")?;
        chart
            .draw_series(c.epochs.iter().map(|p| Circle::new(*p, 4, BLUE.filled())))
            .map_err(err)?;
    }
    for (k, (label, color)) in [("smallest", RED), ("middle", GREEN), ("largest", BLUE)]
        .into_iter()
        .enumerate()
    {
        let pts: Vec<(f64, f64)> = c
            .ends
            .iter()
            .filter_map(|(_, x, v)| v[k].map(|y| (*x, y)))
            .collect();
        line(&mut chart, pts.clone(), color.to_rgba(), label)?;
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))
            .map_err(err)?;
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Draw the run in `dir` (its `metrics.jsonl`) as `curves.svg` and `curves.png` in `out` (written
/// whole, then renamed into place). `Ok(false)` when no font is available (nothing written).
pub fn curves(dir: &Path, out: &Path) -> anyhow::Result<bool> {
    let c = read_curves(&dir.join("metrics.jsonl"))?;
    if !font() {
        return Ok(false);
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let title = format!("training run {}", ofa_package::package_name(dir));
    let tmp = out.join(".curves.tmp.svg");
    draw_curves(
        SVGBackend::new(&tmp, (1000, 800)).into_drawing_area(),
        &c,
        &title,
    )
    .map_err(|r| anyhow::anyhow!("{}: {r}", tmp.display()))?;
    std::fs::rename(&tmp, out.join("curves.svg"))?;
    let tmp = out.join(".curves.tmp.png");
    draw_curves(
        BitMapBackend::new(&tmp, (1000, 800)).into_drawing_area(),
        &c,
        &title,
    )
    .map_err(|r| anyhow::anyhow!("{}: {r}", tmp.display()))?;
    std::fs::rename(&tmp, out.join("curves.png"))?;
    Ok(true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn step(n: u64, loss: f64) -> String {
        format!(
            r#"{{"kind":"step","phase":"finetune","step":{n},"global_step":{n},"loss":{loss},"top1":0.5,"lr":0.1,"images_per_s":100.0,"data_wait_s":0.0,"elapsed_s":1.0}}"#
        )
    }

    fn epoch(n: u64, top1: f64) -> String {
        format!(
            r#"{{"kind":"epoch","epoch":{},"global_step":{n},"heldout_top1":{top1},"best":true,"elapsed_s":1.0}}"#,
            n as f64 / 20.0
        )
    }

    #[test]
    fn a_resumed_runs_replayed_lines_replace_the_first_ones() {
        // killed after step 30 with its last checkpoint at step 20: steps 30 and on run again
        let lines = [
            step(10, 2.0),
            step(20, 1.9),
            epoch(20, 50.0),
            step(30, 1.8),
            step(30, 1.7),
            step(40, 1.6),
            epoch(40, 60.0),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let c = read_curves(&path).unwrap();
        assert_eq!(c.loss.len(), 1);
        assert_eq!(
            c.loss[0].1,
            [(10.0, 2.0), (20.0, 1.9), (30.0, 1.7), (40.0, 1.6)]
        );
        assert_eq!(c.epochs, [(20.0, 50.0), (40.0, 60.0)]);

        // a replay from before an epoch drops that epoch until it is logged again
        let lines = [step(10, 2.0), step(20, 1.9), epoch(20, 50.0), step(20, 1.5)];
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let c = read_curves(&path).unwrap();
        assert_eq!(c.loss[0].1, [(10.0, 2.0), (20.0, 1.5)]);
        assert!(c.epochs.is_empty());
    }
}
