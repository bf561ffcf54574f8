//! `ofa hardware`: onboard a device from a few whole-network measurements.
//!
//! `probes` exports subnets chosen to span the package's latency range as ONNX files with a
//! manifest and a timing script that needs only Python and ONNX Runtime; `fit` turns the device's
//! measurements into a latency table of the package; `check` scores a table against measurements
//! of other subnets (held out).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use ofa_extractor::calibrate::{time_archs_in, CalibrateOptions, Runtime};
use ofa_predictors::hardware::{
    choose_probes, fit, read_measurements, to_table, Candidate, Environment, ErrorStats, Features,
    FitReport, ModelChoice, Probe, ProbeManifest, ProbeSelection, CANDIDATES, MANIFEST_FORMAT,
};
use ofa_predictors::latency::Meta;
use ofa_predictors::LatencyTable;
use ofa_space::{cost, Choices};
use ofa_supernet::checkpoint::write_atomic;

/// The timing script written beside the probes.
const TIMING_SCRIPT: &str = include_str!("../../scripts/time_probes.py");

/// Arguments of `ofa hardware`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Export probe subnets (ONNX), a manifest and a timing script for a device.
    Probes(ProbesArgs),
    /// Fit a latency table of a device from its probe measurements.
    Fit(FitArgs),
    /// Score a latency table against measured subnets (e.g. held-out probes).
    Check(CheckArgs),
    /// Time a probe folder's subnets here (libtorch or ONNX Runtime, at --threads):
    /// measurements-RUNTIME.csv and environment-RUNTIME.json.
    Time(TimeArgs),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RuntimeArg {
    Libtorch,
    Onnxruntime,
}

#[derive(Debug, clap::Args)]
struct TimeArgs {
    /// The supernet package the probes were made from.
    #[arg(long)]
    package: PathBuf,
    /// The probe folder (its manifest.json); repeat to time several sets interleaved.
    #[arg(long, required = true)]
    dir: Vec<PathBuf>,
    /// Timed runs per probe and pass (the median is kept).
    #[arg(long, default_value_t = 30)]
    repeats: usize,
    /// Untimed runs per probe and pass.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Passes over the probes in rotated orders; a probe's latency is its lowest median.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Where to time them: libtorch, or ONNX Runtime on their ONNX graphs (CPU, at --threads).
    #[arg(long, value_enum, default_value = "libtorch")]
    runtime: RuntimeArg,
    /// CSV to write, with one --dir (default DIR/measurements-RUNTIME.csv; environment-RUNTIME.json
    /// beside).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ProbesArgs {
    /// The supernet package.
    #[arg(long)]
    package: PathBuf,
    /// Number of probes.
    #[arg(long, default_value_t = 20)]
    count: usize,
    /// Seed of the selection.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder (must not exist, or be empty).
    #[arg(long)]
    out: PathBuf,
    /// Base table the probes are spread by: a hardware of the package, or `none` for MACs
    /// (default: the package's first table).
    #[arg(long)]
    base: Option<String>,
    /// Uniformly random subnets instead of a spread (a held-out set for `ofa hardware check`).
    #[arg(long)]
    random: bool,
}

#[derive(Debug, clap::Args)]
struct FitArgs {
    /// The supernet package; the table is written to PACKAGE/latency/NAME.json.
    #[arg(long)]
    package: PathBuf,
    /// `id,latency_ms` lines, as the timing script writes them.
    #[arg(long)]
    measurements: PathBuf,
    /// Hardware name of the new table.
    #[arg(long)]
    name: String,
    /// The probes' manifest (default: manifest.json beside the measurements).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Base table: a hardware of the package, or `none` for MACs and counts alone (default: the
    /// manifest's base).
    #[arg(long)]
    base: Option<String>,
    /// Latency model: auto (lowest leave-one-out error), or one of the candidates.
    #[arg(long, default_value = "auto")]
    model: String,
    /// Replace an existing table of that name.
    #[arg(long)]
    replace: bool,
    /// Print the fit report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// The supernet package.
    #[arg(long)]
    package: PathBuf,
    /// Hardware (a table of the package), or a table file.
    #[arg(long)]
    hardware: String,
    /// `id,latency_ms` lines of measured subnets.
    #[arg(long)]
    measurements: PathBuf,
    /// Their manifest (default: manifest.json beside the measurements).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Run `ofa hardware`.
pub fn run(a: Args) -> anyhow::Result<()> {
    match a.command {
        Sub::Probes(p) => probes(p),
        Sub::Fit(f) => fit_cmd(f),
        Sub::Check(c) => check(c),
        Sub::Time(t) => time(t),
    }
}

/// The package's table called `name` (`None` for `none`), or its first table by default.
fn base_table(
    package: &Path,
    name: Option<&str>,
) -> anyhow::Result<Option<(String, LatencyTable)>> {
    let tables = ofa_package::latency_tables(package);
    let pick = match name {
        Some("none") => return Ok(None),
        Some(n) => tables
            .iter()
            .find(|(t, _)| t == n)
            .cloned()
            .with_context(|| {
                format!(
                    "the package {} has no hardware `{n}` (it has: {})",
                    package.display(),
                    names(&tables)
                )
            })?,
        None => match tables.first() {
            Some(t) => t.clone(),
            None => return Ok(None),
        },
    };
    let t = LatencyTable::load(&pick.1)?;
    Ok(Some((pick.0, t)))
}

fn names(tables: &[(String, PathBuf)]) -> String {
    if tables.is_empty() {
        "none".into()
    } else {
        tables
            .iter()
            .map(|t| t.0.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn probes(a: ProbesArgs) -> anyhow::Result<()> {
    if a.count < 2 {
        bail!("--count must be at least 2, got {}", a.count);
    }
    if a.out.exists()
        && std::fs::read_dir(&a.out)
            .with_context(|| format!("cannot read {}", a.out.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} exists and is not empty: give a new folder for the probes",
            a.out.display()
        );
    }
    let t0 = Instant::now();
    let pkg = ofa_package::Package::open(&a.package, tch::Device::Cpu)
        .with_context(|| format!("{}: not a supernet package", a.package.display()))?;
    let space = pkg.space().clone();
    let base = base_table(&a.package, a.base.as_deref())?;
    let features = Features::new(&space, base.as_ref().map(|b| &b.1));
    let how = if a.random {
        ProbeSelection::Random
    } else {
        ProbeSelection::Spread
    };
    let archs = choose_probes(&features, &Choices::all(&space), a.count, a.seed, how)?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let base_lat = base.as_ref().map(|b| b.1.additive(&space));
    let mut probes = Vec::with_capacity(archs.len());
    for (i, arch) in archs.iter().enumerate() {
        let id = format!("p{i:03}");
        let file = format!("{id}.onnx");
        let sub = pkg.net().extract(arch)?;
        let bytes = ofa_onnx::export(&sub, &ofa_onnx::ExportOptions::new(arch.r))?;
        write_atomic(&a.out.join(&file), &bytes)?;
        let c = cost(&space, arch);
        probes.push(Probe {
            id,
            file,
            arch: arch.clone(),
            input_shape: [1, space.in_channels, arch.r, arch.r],
            macs_m: c.macs as f64 / 1e6,
            params_m: c.params as f64 / 1e6,
            base_latency_ms: match &base_lat {
                Some(l) => Some(l.predict(arch)?),
                None => None,
            },
        });
    }
    let manifest = ProbeManifest {
        format: MANIFEST_FORMAT.to_string(),
        package: pkg.name(),
        supernet_sha256: pkg.supernet_sha256().to_string(),
        space: space.name.clone(),
        base: base.as_ref().map(|b| b.0.clone()),
        selection: if a.random { "random" } else { "spread" }.to_string(),
        seed: a.seed,
        probes,
    };
    write_atomic(
        &a.out.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
    )?;
    let script = a.out.join("time_probes.py");
    write_atomic(&script, TIMING_SCRIPT.as_bytes())?;
    let secs = t0.elapsed().as_secs_f64();
    outln!(
        "wrote {} probes ({}) to {} in {secs:.2} s",
        manifest.probes.len(),
        manifest.selection,
        a.out.display()
    );
    outln!("time them on the device:  python3 {}", script.display());
    outln!(
        "then:  ofa hardware fit --package {} --measurements {} --name NAME",
        a.package.display(),
        a.out.join("measurements.csv").display()
    );
    Ok(())
}

fn manifest_of(measurements: &Path, manifest: Option<&PathBuf>) -> anyhow::Result<ProbeManifest> {
    let path = match manifest {
        Some(m) => m.clone(),
        None => measurements
            .parent()
            .unwrap_or(Path::new("."))
            .join("manifest.json"),
    };
    Ok(ProbeManifest::load(&path)?)
}

fn fit_cmd(a: FitArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    if a.name.is_empty()
        || !a
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || a.name.starts_with('.')
    {
        bail!(
            "--name `{}`: a hardware name is letters, digits, `-`, `_` and `.` (not first)",
            a.name
        );
    }
    let out = a.package.join("latency").join(format!("{}.json", a.name));
    if out.exists() && !a.replace {
        bail!(
            "{} exists: the package already has a hardware `{}` (give --replace to fit it anew)",
            out.display(),
            a.name
        );
    }
    let manifest = manifest_of(&a.measurements, a.manifest.as_ref())?;
    let space =
        ofa_extractor::specialiser::space_of_supernet(&a.package.join("supernet.safetensors"))?;
    if space.name != manifest.space {
        bail!(
            "the probes were made for the space `{}`, the package's is `{}`",
            manifest.space,
            space.name
        );
    }
    let base_name = a.base.clone().or(manifest.base.clone());
    let base = base_table(&a.package, Some(base_name.as_deref().unwrap_or("none")))?;
    let features = Features::new(&space, base.as_ref().map(|b| &b.1));
    let choice = match a.model.as_str() {
        "auto" => ModelChoice::Auto,
        m => ModelChoice::Fixed(Candidate::named(m).with_context(|| {
            format!(
                "unknown latency model `{m}` (auto, {})",
                CANDIDATES
                    .iter()
                    .map(|c| c.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?),
    };
    let ms = read_measurements(&a.measurements, &manifest.archs())?;
    let report = fit(&features, &ms, choice)?;
    let env_path = environment_beside(&a.measurements);
    let env = if env_path.is_file() {
        Some(Environment::load(&env_path)?)
    } else {
        None
    };
    let mut libraries = std::collections::BTreeMap::from([(
        "ofa".to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    )]);
    if let Some(e) = &env {
        libraries.insert(e.runtime.clone(), e.version.clone());
    }
    let meta = Meta {
        device: env
            .as_ref()
            .map_or_else(|| a.name.clone(), |e| format!("CPU: {}", e.cpu)),
        batch: Some(1),
        threads: env.as_ref().map(|e| e.threads),
        libraries,
        date: Some(humantime_now()),
        source: Some(format!(
            "ofa hardware fit: {} measurements of {}, model `{}`, base {}",
            report.measurements,
            a.measurements.display(),
            report.model.name,
            base.as_ref().map_or("none", |b| b.0.as_str())
        )),
        correction: None,
        runtime: env.as_ref().map(|e| e.runtime.clone()),
        fit: None,
    };
    let table = to_table(&features, &report, meta)?;
    std::fs::create_dir_all(a.package.join("latency"))?;
    write_atomic(&out, table.to_json().as_bytes())?;
    let secs = t0.elapsed().as_secs_f64();
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["table"] = serde_json::Value::String(out.display().to_string());
        v["fit_s"] = serde_json::json!(secs);
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_fit(&report);
        outln!("wrote {} in {secs:.2} s", out.display());
    }
    Ok(())
}

/// The environment file that goes with a measurements file: `measurements*.csv` →
/// `environment*.json` in the same folder (the timing script's and `ofa hardware time`'s names).
fn environment_beside(csv: &Path) -> PathBuf {
    let stem = csv
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| s.contains("measurements"))
        .map_or_else(
            || "environment".into(),
            |s| s.replace("measurements", "environment"),
        );
    csv.with_file_name(format!("{stem}.json"))
}

fn humantime_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

fn print_fit(r: &FitReport) {
    outln!(
        "latency model `{}` from {} measurements",
        r.model.name,
        r.measurements
    );
    for (t, w) in r.model.terms.iter().zip(&r.model.weights) {
        let names: Vec<String> = t
            .iter()
            .map(|f| match serde_json::to_value(f) {
                Ok(serde_json::Value::String(name)) => name,
                _ => format!("{f:?}"),
            })
            .collect();
        outln!("  {:>12.6}  × {}", w, names.join(" + "));
    }
    outln!("leave-one-out: {}", r.loo);
    outln!("in sample:     {}", r.fit);
    outln!("candidates (leave-one-out MAPE):");
    for c in &r.candidates {
        let mark = if c.name == r.model.name { "*" } else { " " };
        outln!("  {mark} {:<12} {:>7.2} %", c.name, c.loo.mape_pct);
    }
}

fn check(a: CheckArgs) -> anyhow::Result<()> {
    let manifest = manifest_of(&a.measurements, a.manifest.as_ref())?;
    let space =
        ofa_extractor::specialiser::space_of_supernet(&a.package.join("supernet.safetensors"))?;
    let path = {
        let p = PathBuf::from(&a.hardware);
        if p.is_file() {
            p
        } else {
            a.package
                .join("latency")
                .join(format!("{}.json", a.hardware))
        }
    };
    let table = LatencyTable::load(&path)?;
    let lat = table.additive(&space);
    let ms = read_measurements(&a.measurements, &manifest.archs())?;
    let mut pred = Vec::with_capacity(ms.len());
    for m in &ms {
        pred.push(lat.predict(&m.arch)?);
    }
    let measured: Vec<f64> = ms.iter().map(|m| m.latency_ms).collect();
    let stats = ErrorStats::of(&pred, &measured);
    if a.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "hardware": a.hardware,
                "table": path.display().to_string(),
                "heldout_mape_pct": stats.mape_pct,
                "within_10pct": stats.within_10pct,
                "spearman": stats.spearman,
                "max_ape_pct": stats.max_ape_pct,
                "n": stats.n,
            }))?
        );
    } else {
        outln!(
            "{} against {}: {stats}",
            a.hardware,
            a.measurements.display()
        );
    }
    Ok(())
}

fn time(a: TimeArgs) -> anyhow::Result<()> {
    if a.repeats == 0 || a.rounds == 0 {
        bail!("--repeats and --rounds must be positive");
    }
    if a.out.is_some() && a.dir.len() > 1 {
        bail!("--out names one file: give it with one --dir");
    }
    let pkg = ofa_package::Package::open(&a.package, tch::Device::Cpu)
        .with_context(|| format!("{}: not a supernet package", a.package.display()))?;
    let mut sets = Vec::with_capacity(a.dir.len());
    for dir in &a.dir {
        let manifest = ProbeManifest::load(&dir.join("manifest.json"))?;
        if pkg.supernet_sha256() != manifest.supernet_sha256 {
            bail!(
                "the probes in {} were made from another supernet (sha256 {}…, this package's is {}…)",
                dir.display(),
                &manifest.supernet_sha256[..12.min(manifest.supernet_sha256.len())],
                &pkg.supernet_sha256()[..12]
            );
        }
        sets.push((dir, manifest));
    }
    // every folder's probes in one interleaved timing, so a drift of the machine reaches all
    // sets alike
    let archs: Vec<_> = sets
        .iter()
        .flat_map(|(_, m)| m.probes.iter().map(|p| p.arch.clone()))
        .collect();
    let o = CalibrateOptions {
        warmup: a.warmup,
        repeats: a.repeats,
        rounds: a.rounds,
        ..CalibrateOptions::default()
    };
    let (runtime, name, version) = match a.runtime {
        RuntimeArg::Libtorch => (Runtime::Libtorch, "libtorch", "2.11.0".to_string()),
        RuntimeArg::Onnxruntime => (
            Runtime::OnnxRuntime,
            "onnxruntime",
            ofa_onnx::runtime::version()?,
        ),
    };
    let mut times = time_archs_in(&pkg, &archs, &o, runtime)?.into_iter();
    let env = Environment {
        runtime: name.into(),
        version,
        threads: tch::get_num_threads().max(1) as u32,
        cpu: ofa_predictors::profile::describe_device(tch::Device::Cpu)
            .trim_start_matches("CPU: ")
            .to_string(),
    };
    for (dir, manifest) in &sets {
        let out = a
            .out
            .clone()
            .unwrap_or_else(|| dir.join(format!("measurements-{name}.csv")));
        let mut csv = String::from("id,latency_ms\n");
        for (p, ms) in manifest.probes.iter().zip(times.by_ref()) {
            csv.push_str(&format!("{},{ms:.6}\n", p.id));
        }
        write_atomic(&out, csv.as_bytes())?;
        let env_path = environment_beside(&out);
        write_atomic(&env_path, serde_json::to_string_pretty(&env)?.as_bytes())?;
        outln!(
            "timed {} probes in {name} ({} thread(s)): {} and {}",
            manifest.probes.len(),
            env.threads,
            out.display(),
            env_path.display()
        );
    }
    Ok(())
}
