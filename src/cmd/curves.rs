//! `ofa curves`: a training run's curves as pictures.

use std::path::{Path, PathBuf};

/// Arguments of `ofa curves`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A run directory (its metrics.jsonl; a run still training works too).
    run: PathBuf,
    /// Where to write curves.svg and curves.png (default: the run directory).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Draw `run`'s curves into `out`, saying what was written; a failure is a warning (training
/// itself succeeded).
pub fn write(run: &Path, out: &Path) {
    match crate::plot::curves(run, out) {
        Ok(true) => eprintln!("wrote {}/curves.{{svg,png}}", out.display()),
        Ok(false) => {
            eprintln!("curves skipped: no TrueType font found (install fonts-dejavu-core)")
        }
        Err(e) => eprintln!("warning: curves not drawn: {}", super::render_line(&e)),
    }
}

/// Run `ofa curves`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let out = a.out.clone().unwrap_or_else(|| a.run.clone());
    if !crate::plot::curves(&a.run, &out)? {
        anyhow::bail!("no TrueType font found to draw with (install fonts-dejavu-core)");
    }
    eprintln!("wrote {}/curves.{{svg,png}}", out.display());
    Ok(())
}
