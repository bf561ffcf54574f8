//! Branching: a new run that starts from another run's checkpoint at a phase boundary (the arms of
//! an ablation share one trained full network).

use std::path::Path;

use ofa_schema::files::METRICS_FILE;
use ofa_schema::metrics::{read_metrics, BranchLine, MetricsLine};
use ofa_supernet::checkpoint::read_safetensors;

use super::checkpoint::{checkpoint_state, Branched, Loaded, RunState};
use super::{ranks, run_err, Ctx, Outcome, TrainError, TrainOptions};
use crate::recipe::Recipe;

/// Start a new run of `recipe` in `dir` from another run's checkpoint `from`, saved at a phase
/// boundary: the phases done there must be the first phases of `recipe`, and every other setting
/// the same. Both runs then share their trained full network (and teacher), as the arms of an
/// ablation do. The source run's metrics up to the boundary are copied when they lie beside the
/// checkpoint.
pub fn branch(
    recipe: Recipe,
    dir: &Path,
    from: &Path,
    opts: TrainOptions,
) -> Result<Outcome, TrainError> {
    let group = opts.group.clone();
    let prepared = prepare(recipe, dir, from, opts);
    let (ctx, state, loaded) = ranks::all_ok(group.as_deref(), super::SETUP, prepared)?;
    ctx.run_from(loaded.net, loaded.teacher, state, None)
}

/// The new run's context, its starting state and the source checkpoint's networks.
fn prepare(
    recipe: Recipe,
    dir: &Path,
    from: &Path,
    opts: TrainOptions,
) -> Result<(Ctx, RunState, Loaded), TrainError> {
    let f = read_safetensors(from)?;
    let state = checkpoint_state(from, &f.metadata)?;
    let source = match f.metadata.get("recipe") {
        Some(t) => Recipe::from_toml(t, &format!("{}: metadata `recipe`", from.display()))?,
        None => {
            // Checkpoints before the recipe was stored in them: the run's own recipe.toml.
            let p = from.with_file_name("recipe.toml");
            let text = std::fs::read_to_string(&p).map_err(|_| {
                run_err(from, "records no recipe, and no recipe.toml lies beside it")
            })?;
            Recipe::from_toml(&text, &p.display().to_string())?
        }
    };
    drop(f);
    let done = state.phase;
    if state.step != 0 || done == 0 || done >= source.phases.len() {
        return Err(run_err(
            from,
            format!(
                "not at a phase boundary (phase {} of {}, step {}): branch from the checkpoint saved as a phase ends (`--stop-after` its last step)",
                done + 1,
                source.phases.len(),
                state.step
            ),
        ));
    }
    if let Some(why) = branch_mismatch(&source, &recipe, done) {
        return Err(run_err(
            from,
            format!("recipe `{}` cannot continue it: {why}", recipe.name),
        ));
    }
    let ctx = Ctx::create(recipe, dir, opts)?;
    // the source run's log up to the checkpoint (a checkpoint copied away from its run folder
    // has none; a damaged one is an error, a torn last line is left out)
    let src_metrics = from.with_file_name(METRICS_FILE);
    if src_metrics.exists() {
        let log = read_metrics(&src_metrics).map_err(|e| run_err(&src_metrics, e.to_string()))?;
        let mut validations = 0;
        for line in &log.lines {
            let within = line.global_step().is_some_and(|g| g <= state.global_step);
            if matches!(line, MetricsLine::Validation(_)) {
                if validations == done {
                    break;
                }
                validations += 1;
                ctx.log(line)?;
            } else if within {
                ctx.log(line)?;
            }
        }
    }
    let mut state = state;
    state.branched_from = Some(Branched {
        checkpoint: from.display().to_string(),
        recipe: source.name.clone(),
        phases: done,
    });
    ctx.log(&MetricsLine::Branch(BranchLine {
        from: from.display().to_string(),
        recipe: source.name.clone(),
        phases: done,
        global_step: state.global_step,
    }))?;
    let loaded = ctx.load_checkpoint(from)?;
    Ok((ctx, state, loaded))
}

/// Why `to` cannot continue a run of `from` after its first `done` phases (`None`: it can).
pub(super) fn branch_mismatch(from: &Recipe, to: &Recipe, done: usize) -> Option<String> {
    let same = [
        ("space", from.space == to.space),
        ("n_classes", from.n_classes == to.n_classes),
        ("resolutions", from.resolutions == to.resolutions),
        ("[train]", from.train == to.train),
        ("[augment]", from.augment == to.augment),
        ("[validation]", from.validation == to.validation),
    ];
    if let Some((what, _)) = same.iter().find(|(_, eq)| !eq) {
        return Some(format!("its {what} differs from the source run's"));
    }
    if to.phases.len() <= done {
        return Some(format!(
            "it has {} phases, and the checkpoint has done {done}",
            to.phases.len()
        ));
    }
    (0..done)
        .find(|&i| from.phases[i] != to.phases[i])
        .map(|i| {
            format!(
                "its phase {} (`{}`) differs from the source run's (`{}`)",
                i + 1,
                to.phases[i].name,
                from.phases[i].name
            )
        })
}
