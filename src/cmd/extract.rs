//! `ofa extract`: the specialisation pipeline on a package (search → cut → recalibrate BN →
//! write), or a bare cut of a given arch out of a supernet checkpoint.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use ofa_extractor::pipeline::{
    choose, cut, evaluate, since, write_artefacts, Artefacts, EvalOptions, OnnxOptions, Report,
    Target, Times, NET_CONFIG_FILE, ONNX_FILE, REPORT_FILE, SUBNET_FILE,
};
use ofa_extractor::specialiser::space_of_supernet;
use ofa_extractor::{ExtractError, Specialiser};
use ofa_package::measure::Recalibration;
use ofa_package::Package;
use ofa_supernet::checkpoint::{open_model, source_metadata, write_atomic, Model};
use tch::Device;

/// Arguments of `ofa extract`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A supernet package: search if no --arch is given, cut the weights, recalibrate BN, write
    /// DIR/subnet.safetensors, DIR/net.config.json and DIR/report.json.
    #[arg(
        long,
        required_unless_present = "supernet",
        conflicts_with = "supernet"
    )]
    package: Option<PathBuf>,
    /// Or a bare supernet checkpoint (or a reference state_dict, .pth or .safetensors): cut the
    /// weights of --arch into the file --out, nothing else.
    #[arg(long)]
    supernet: Option<PathBuf>,
    /// The subnet: a JSON file `{"ks": [..], "e": [..], "d": [..], "r": R}` (reference forms
    /// accepted), or `largest` / `smallest`.
    #[arg(long, required_unless_present = "package")]
    arch: Option<PathBuf>,
    /// With --package: the output folder; with --supernet: the subnet file.
    #[arg(long)]
    out: PathBuf,
    /// With --supernet: also write the reference `net.config` JSON here.
    #[arg(long)]
    net_config: Option<PathBuf>,
    #[command(flatten)]
    budget: super::search::Budget,
    /// Images for BN recalibration (at most the package's; reference 2000).
    #[arg(long, default_value_t = 2000)]
    calibration_images: usize,
    /// Also measure top-1 (held-out split, or --eval-split test) and the latency on this machine.
    #[arg(long)]
    eval: bool,
    /// Split for --eval.
    #[arg(long, value_enum, default_value = "val")]
    eval_split: EvalSplit,
    /// Images evaluated by --eval.
    #[arg(long, default_value_t = 10_000)]
    eval_images: usize,
    /// Dataset folder for --eval (default: the one named in the package's card).
    #[arg(long)]
    data: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = super::device_arg)]
    device: tch::Device,
    /// With --package: also write DIR/model.onnx.
    #[arg(long)]
    onnx: bool,
    /// ONNX opset, with --onnx.
    #[arg(long, default_value_t = ofa_onnx::DEFAULT_OPSET, requires = "onnx")]
    opset: i64,
    /// Fold BatchNormalization into the convolutions, with --onnx.
    #[arg(long, requires = "onnx")]
    fold_bn: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum EvalSplit {
    Val,
    Test,
}

fn package(a: &Args, dir: &std::path::Path) -> anyhow::Result<()> {
    let device = a.device;
    let mut times = Times::default();
    let t = Instant::now();
    let space = space_of_supernet(&dir.join(ofa_package::SUPERNET_FILE))?;
    let target = match a.arch.as_deref() {
        Some(spec) => Target::Arch(super::arch_arg(spec, &space)?),
        None => Target::Search {
            constraints: a.budget.constraints(),
            search: a.budget.evolution(),
        },
    };
    // Predictors score a given arch when the package has them; a search needs them.
    let spec = match &target {
        Target::Search { .. } => Some(Specialiser::from_package(dir)?),
        Target::Arch(_) if dir.join(ofa_package::ACCURACY_FILE).is_file() => {
            Some(Specialiser::from_package(dir)?)
        }
        Target::Arch(_) => None,
    };
    times.load_predictors_s = since(t);
    let hardware = match (&a.budget.hardware, &spec) {
        (Some(h), _) => Some(h.clone()),
        // the only table of the package, if there is exactly one
        (None, Some(s)) if a.budget.max_latency_ms.is_some() => a.budget.hardware(s),
        _ => None,
    };
    let t = Instant::now();
    let choice = choose(spec.as_ref(), &space, &target, hardware.as_deref(), None)?;
    times.search_s = since(t);
    let t = Instant::now();
    let pkg = Package::open(dir, device)?;
    times.load_supernet_s = since(t);
    let recal = Recalibration {
        images: a.calibration_images,
        ..Recalibration::default()
    };
    let t = Instant::now();
    let sub = cut(&pkg, &choice.arch, &recal)?;
    times.cut_s = since(t);
    let measured = if a.eval {
        let splits = ofa_trainer::package::splits(&pkg, a.data.as_deref())?;
        let (name, split) = match a.eval_split {
            EvalSplit::Test => (
                "test",
                splits
                    .test
                    .ok_or_else(|| ExtractError::MissingSplit("test".into()))?
                    .load()?,
            ),
            EvalSplit::Val => ("val", splits.val),
        };
        let o = EvalOptions {
            images: a.eval_images,
            batch: recal.batch,
            latency_repeats: 30,
        };
        Some(evaluate(
            &sub,
            &choice.arch,
            &pkg.augment,
            (name, &split),
            &o,
            &mut times,
        )?)
    } else {
        None
    };
    let t = Instant::now();
    let mut art = Artefacts::new(
        &sub,
        &pkg,
        &choice.arch,
        &recal,
        choice.predicted.as_ref(),
        measured.as_ref(),
    )?;
    let mut files = vec![SUBNET_FILE, NET_CONFIG_FILE, REPORT_FILE];
    if a.onnx {
        let o = OnnxOptions {
            opset: a.opset,
            fold_bn: a.fold_bn,
        };
        art = art.with_onnx(&sub, &choice.arch, &o)?;
        files.push(ONNX_FILE);
    }
    let mut report = Report {
        arch: choice.arch,
        constraints: a.budget.constraints(),
        hardware,
        predicted: choice.predicted,
        measured,
        recalibration: recal,
        times,
        search: choice.search,
        files: files.into_iter().map(String::from).collect(),
    };
    report.times.write_s = since(t);
    write_artefacts(&a.out, &art, &report)?;
    if a.json {
        outln!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    eprintln!("wrote {}/{{{}}}", a.out.display(), report.files.join(", "));
    outln!("arch      {}", report.arch.to_json());
    if let Some(p) = &report.predicted {
        outln!("predicted {}", serde_json::to_string(p)?);
    }
    if let Some(m) = &report.measured {
        outln!("measured  {}", serde_json::to_string(m)?);
    }
    let steps = serde_json::to_value(report.times)?;
    let steps: Vec<String> = steps
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            format!(
                "{} {:.3}",
                k.trim_end_matches("_s"),
                v.as_f64().unwrap_or(0.0)
            )
        })
        .collect();
    outln!("seconds   {}", steps.join(", "));
    Ok(())
}

/// Run `ofa extract`.
pub fn run(a: Args) -> anyhow::Result<()> {
    if let Some(dir) = &a.package {
        return package(&a, dir);
    }
    let (Some(supernet), Some(arch_path)) = (&a.supernet, &a.arch) else {
        bail!("give --package, or --supernet with --arch");
    };
    if a.onnx {
        bail!("--onnx writes DIR/model.onnx beside a package's subnet; export a bare cut with `ofa export --model SUBNET --out FILE`");
    }
    let ck = match open_model(supernet, Device::Cpu)? {
        Model::Supernet(ck) => ck,
        Model::Subnet(_) => bail!(
            "{} is a subnet; extraction needs a supernet",
            supernet.display()
        ),
    };
    let arch = super::arch_arg(arch_path, ck.net.space())?;
    arch.validate(ck.net.space())
        .with_context(|| format!("{} does not fit the supernet", arch_path.display()))?;
    let t0 = Instant::now();
    let sub = ck.net.extract(&arch)?;
    let took = t0.elapsed();
    let meta = source_metadata(&arch, ck.net.space(), &ck.sha256);
    sub.save(&a.out, &meta)?;
    if let Some(p) = &a.net_config {
        let text = serde_json::to_string_pretty(&sub.config().to_net_config())?;
        write_atomic(p, text.as_bytes())?;
    }
    let c = ofa_space::cost(ck.net.space(), &arch);
    eprintln!(
        "wrote {} ({} blocks, {:.2}M params, {:.1}M MACs at r={}, extracted in {:.2} ms)",
        a.out.display(),
        sub.config().n_blocks(),
        c.params as f64 / 1e6,
        c.macs as f64 / 1e6,
        arch.r,
        took.as_secs_f64() * 1e3
    );
    Ok(())
}
