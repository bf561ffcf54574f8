//! `ofa search`: the best subnet for a budget (or the whole Pareto front) from predictors alone.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ofa_extractor::Specialiser;
use ofa_extractor::{Constraints, EvolutionConfig, ParetoConfig};
use ofa_predictors::Metric;
use ofa_supernet::checkpoint::write_atomic;
use serde_json::json;

use crate::plot;

/// Predictor sources and constraints shared by `ofa search` and `ofa extract --package`.
#[derive(Debug, Clone, clap::Args)]
pub struct Budget {
    /// Hardware: the name of a latency table (`PACKAGE/latency/<NAME>.json`, or --latency-table).
    #[arg(long)]
    pub hardware: Option<String>,
    /// Max latency on the hardware, ms.
    #[arg(long)]
    pub max_latency_ms: Option<f64>,
    /// Max MACs, millions.
    #[arg(long)]
    pub max_macs_m: Option<f64>,
    /// Max parameters, millions.
    #[arg(long)]
    pub max_params_m: Option<f64>,
    /// Population size.
    #[arg(long, default_value_t = 100)]
    pub population: usize,
    /// Generations (default: 500 for a budget, as the reference; 300 for a Pareto front).
    #[arg(long)]
    pub generations: Option<usize>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Search strategy, each at the same number of accuracy predictions: the reference's
    /// evolution, regularized (aging) evolution, or random search.
    #[arg(long, value_enum, default_value = "evolution")]
    pub strategy: ofa_search::Strategy,
    /// The most accuracy predictions the search may make, the polish of the winner included
    /// (default: evolution runs its generations; aging and random make as many predictions as
    /// population × (generations + 1)).
    #[arg(long, value_name = "EVALUATIONS")]
    pub budget: Option<usize>,
}

impl Budget {
    /// The constraints asked.
    pub fn constraints(&self) -> Constraints {
        Constraints {
            latency_ms: self.max_latency_ms,
            macs_m: self.max_macs_m,
            params_m: self.max_params_m,
        }
    }

    /// Evolution settings.
    pub fn evolution(&self) -> EvolutionConfig {
        EvolutionConfig {
            population: self.population,
            generations: self.generations.unwrap_or(500),
            seed: self.seed,
            strategy: self.strategy,
            budget: self.budget,
            ..EvolutionConfig::default()
        }
    }

    /// The hardware to use: the one named, or the only table there is.
    pub fn hardware(&self, spec: &Specialiser) -> Option<String> {
        self.hardware.clone().or_else(|| {
            (spec.latency.len() == 1)
                .then(|| spec.latency.keys().next().cloned())
                .flatten()
        })
    }
}

/// Arguments of `ofa search`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Supernet package (space, accuracy.safetensors, latency/*.json); no weights are read.
    #[arg(long, required_unless_present = "space")]
    package: Option<PathBuf>,
    /// Or: a search space (preset name or JSON file) …
    #[arg(long, conflicts_with = "package", requires = "predictor")]
    space: Option<String>,
    /// … its resolutions to search (comma-separated; default: the space's) …
    #[arg(long, value_delimiter = ',', requires = "space")]
    resolutions: Option<Vec<u32>>,
    /// … an accuracy predictor file (ours, the reference library's or the tutorial's) …
    #[arg(long)]
    predictor: Option<PathBuf>,
    /// … and a latency table: our JSON file or a folder of reference `{R}_lookup_table.yaml`
    /// (its name is the file or folder name unless --hardware says otherwise).
    #[arg(long)]
    latency_table: Option<PathBuf>,
    #[command(flatten)]
    budget: Budget,
    /// Instead of one subnet, the whole front of predicted top-1 vs this metric.
    #[arg(long, value_enum)]
    pareto: Option<Metric>,
    /// With --pareto: write front.json, front.csv, front.svg and front.png here.
    #[arg(long, requires = "pareto")]
    out: Option<PathBuf>,
    /// One JSON object on stdout.
    #[arg(long)]
    json: bool,
}

fn specialiser(a: &Args) -> anyhow::Result<Specialiser> {
    if let Some(p) = &a.package {
        if a.latency_table.is_some() || a.predictor.is_some() {
            bail!("--predictor and --latency-table go with --space; a package brings its own");
        }
        return Ok(Specialiser::from_package(p)?);
    }
    let Some(space) = &a.space else {
        bail!("give --package, or --space with --predictor")
    };
    let mut space = super::read_space(space)?;
    if let Some(r) = &a.resolutions {
        space.resolutions = r.clone();
        space.validate()?;
    }
    let predictor = a
        .predictor
        .as_deref()
        .context("--space needs --predictor")?;
    let tables: Vec<(String, PathBuf)> = a
        .latency_table
        .iter()
        .map(|p| {
            let name = a.budget.hardware.clone().unwrap_or_else(|| {
                p.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "table".into())
            });
            (name, p.clone())
        })
        .collect();
    Ok(Specialiser::new(space, predictor, &tables)?)
}

/// Run `ofa search`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let spec = specialiser(&a)?;
    let constraints = a.budget.constraints();
    let hardware = a.budget.hardware(&spec);
    if let Some(m) = a.pareto {
        return front(&a, &spec, m, &constraints, hardware.as_deref());
    }
    if constraints.is_empty() {
        bail!("give at least one constraint: --max-latency-ms, --max-macs-m or --max-params-m (or --pareto)");
    }
    let r = spec.search(
        &constraints,
        hardware.as_deref(),
        &a.budget.evolution(),
        None,
    )?;
    let mut predicted = json!({"top1": r.best.accuracy * 100.0});
    for (k, v) in &r.best.metrics {
        predicted[k] = json!(v);
    }
    let out = json!({
        "arch": r.best.arch,
        "predicted": predicted,
        "constraints": constraints,
        "hardware": hardware,
        "search": {"strategy": a.budget.strategy, "budget": a.budget.budget,
                   "evaluated": r.evaluated, "generations": r.history.len(),
                   "abandoned_children": r.abandoned_children, "draws": r.draws,
                   "seconds": r.seconds, "predict_seconds": r.predict_seconds},
    });
    if a.json {
        outln!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    outln!(
        "best subnet for {constraints}{}: predicted top-1 {:.2} % at r={}",
        hardware
            .as_ref()
            .map(|h| format!(" on {h}"))
            .unwrap_or_default(),
        r.best.accuracy * 100.0,
        r.best.arch.r
    );
    for (k, v) in &r.best.metrics {
        outln!("  {k:<11} {v:.3}");
    }
    outln!("  arch        {}", r.best.arch.to_json());
    let steps = match a.budget.strategy {
        ofa_search::Strategy::Evolution => "generations",
        _ => "batches",
    };
    outln!(
        "  search      {}: {} archs evaluated over {} {steps} in {:.2} s",
        a.budget.strategy,
        r.evaluated,
        r.history.len(),
        r.seconds
    );
    Ok(())
}

fn front(
    a: &Args,
    spec: &Specialiser,
    objective: Metric,
    constraints: &Constraints,
    hardware: Option<&str>,
) -> anyhow::Result<()> {
    if a.budget.budget.is_some() {
        bail!("--budget bounds the search for one budget's best subnet; a --pareto front evaluates population × (generations + 1) archs at most (set --population and --generations)");
    }
    let cfg = ParetoConfig {
        population: a.budget.population,
        generations: a
            .budget
            .generations
            .unwrap_or(ParetoConfig::default().generations),
        seed: a.budget.seed,
        strategy: a.budget.strategy,
        ..ParetoConfig::default()
    };
    let f = spec.pareto(objective, constraints, hardware, &cfg, None)?;
    if let Some(dir) = &a.out {
        write_front(
            &f,
            dir,
            &format!(
                "{} — predicted top-1 vs {}{}",
                spec.space.name,
                objective,
                hardware.map(|h| format!(" on {h}")).unwrap_or_default()
            ),
        )?;
    }
    if a.json {
        outln!("{}", serde_json::to_string(&f)?);
        return Ok(());
    }
    outln!(
        "Pareto front, predicted top-1 vs {objective}: {} points from {} archs in {:.2} s",
        f.points.len(),
        f.evaluated,
        f.seconds
    );
    outln!("  {:>12} {:>10}  arch", objective.name(), "top-1 %");
    for p in &f.points {
        outln!(
            "  {:>12.3} {:>10.2}  {}",
            p.metrics.get(objective.name()).copied().unwrap_or(f64::NAN),
            p.accuracy * 100.0,
            p.arch.to_json()
        );
    }
    Ok(())
}

/// front.json, front.csv, front.svg, front.png into `dir`.
fn write_front(f: &ofa_extractor::Front, dir: &Path, title: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_atomic(
        &dir.join("front.json"),
        serde_json::to_string_pretty(f)?.as_bytes(),
    )?;
    write_atomic(&dir.join("front.csv"), f.to_csv().as_bytes())?;
    let tmp = dir.join(".front.tmp.svg");
    if plot::svg(f, &tmp, title)? {
        std::fs::rename(&tmp, dir.join("front.svg"))?;
        let tmp = dir.join(".front.tmp.png");
        plot::png(f, &tmp, title)?;
        std::fs::rename(&tmp, dir.join("front.png"))?;
        eprintln!("wrote {}/front.{{json,csv,svg,png}}", dir.display());
    } else {
        eprintln!(
            "wrote {}/front.{{json,csv}}; plots skipped: no TrueType font found (install fonts-dejavu-core)",
            dir.display()
        );
    }
    Ok(())
}
