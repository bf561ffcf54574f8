//! One module per subcommand, plus the helpers they share.

pub mod bench;
pub mod bench_data;
pub mod bench_finetune;
pub mod bench_hardware;
pub mod bench_predict;
pub mod bench_quality;
pub mod bench_search;
pub mod bench_serve;
pub mod bench_strategies;
pub mod curves;
pub mod eval;
pub mod export;
pub mod extract;
pub mod finetune;
pub mod hardware;
pub mod import;
pub mod infer;
pub mod inspect;
pub mod launch;
pub mod predict;
pub mod predictor;
pub mod profile;
pub mod search;
pub mod serve;
pub mod train;

use std::path::Path;

use anyhow::Context;
use ofa_space::{ArchConfig, SearchSpace};
use ofa_supernet::SupernetError;

/// 2 for internal (libtorch) failures, 1 for everything the user can fix. A libtorch error is
/// found anywhere in the chain of causes, however many crates' errors wrap it.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    let torch = e.chain().any(|c| {
        c.downcast_ref::<tch::TchError>().is_some()
            || matches!(
                c.downcast_ref::<SupernetError>(),
                Some(SupernetError::Torch(_))
            )
    });
    if torch {
        2
    } else {
        1
    }
}

/// The error as one line: each cause appended after `: `, except a cause the line already ends
/// with (errors that print their source and also expose it, as thiserror's `source` fields do,
/// would otherwise say it twice).
pub fn render(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    let mut last = text.clone();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        // `ofa`'s errors print only their own text; a third-party error may still end its message
        // with its source's (`"{path}: {source}"`): skip exactly that repeat, never a cause that
        // merely occurs inside the message
        if !last.ends_with(&c) {
            text.push_str("\n  Caused by: ");
            text.push_str(&c);
        }
        last = c;
    }
    text
}

/// The error and its causes on one line (`message: cause: cause`), for torchrun's error file.
pub fn render_line(e: &anyhow::Error) -> String {
    ofa_space::chain(e.as_ref())
}

/// Read an arch JSON file (any of the reference's forms).
pub fn read_arch(path: &Path) -> anyhow::Result<ArchConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    ArchConfig::from_json(&text).with_context(|| format!("{}: not a valid arch", path.display()))
}

/// An `--arch` argument: `largest` or `smallest` (the space's largest subnet at its largest
/// resolution, or the smallest at its smallest), else an arch JSON file. A file of that name wins.
pub fn arch_arg(spec: &Path, space: &ofa_space::SearchSpace) -> anyhow::Result<ArchConfig> {
    if !spec.exists() {
        match spec.to_str() {
            Some("largest") => return Ok(ArchConfig::largest(space)),
            Some("smallest") => return Ok(ArchConfig::smallest(space)),
            _ => {}
        }
    }
    read_arch(spec)
}

/// A preset name or a SearchSpace JSON file.
pub fn read_space(spec: &str) -> anyhow::Result<SearchSpace> {
    if Path::new(spec).is_file() {
        let text = std::fs::read_to_string(spec).with_context(|| format!("cannot read {spec}"))?;
        return SearchSpace::from_json(&text)
            .with_context(|| format!("{spec}: not a valid search space"));
    }
    Ok(SearchSpace::preset(spec)?)
}

/// `--device`: cpu, cuda or cuda:N, checked by clap before the command starts (an unknown name
/// or a GPU this machine lacks is a usage error, before any work).
pub fn device_arg(s: &str) -> Result<tch::Device, String> {
    ofa_supernet::device::parse_device(s)
}

/// A device as `--device` names it.
pub fn device_name(d: tch::Device) -> String {
    match d {
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_a_line_of_its_own_and_never_repeated() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(SupernetError::io(Path::new("/x/y"), io()));
        assert_eq!(render(&e), "cannot access /x/y\n  Caused by: no such file");
        let e = e.context("cannot export");
        assert_eq!(
            render(&e),
            "cannot export\n  Caused by: cannot access /x/y\n  Caused by: no such file"
        );
        assert_eq!(
            render_line(&e),
            "cannot export: cannot access /x/y: no such file"
        );
        // a third-party error that ends its message with its source's
        #[derive(Debug)]
        struct Repeats(std::io::Error);
        impl std::fmt::Display for Repeats {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "reading /z: {}", self.0)
            }
        }
        impl std::error::Error for Repeats {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = anyhow::Error::new(Repeats(io()));
        assert_eq!(render(&e), "reading /z: no such file");
        // a cause whose text occurs inside the message, but not as its end, is a real cause
        let short = || std::io::Error::other("EOF");
        let e = anyhow::Error::new(short()).context("EOF marker missing in /w");
        assert_eq!(render(&e), "EOF marker missing in /w\n  Caused by: EOF");
    }

    #[test]
    fn a_libtorch_failure_is_found_under_any_wrapping() {
        let torch = || SupernetError::Torch(tch::TchError::Torch("out of memory".into()));
        let wrapped = ofa_extractor::ExtractError::Package(ofa_package::PackageError::Net(torch()));
        assert_eq!(exit_code(&anyhow::Error::from(wrapped)), 2);
        let in_trainer =
            ofa_trainer::run::TrainError::Package(ofa_package::PackageError::Net(torch()));
        assert_eq!(
            exit_code(&anyhow::Error::from(in_trainer).context("measuring")),
            2
        );
        assert_eq!(exit_code(&anyhow::Error::from(torch())), 2);
        let user = ofa_extractor::ExtractError::NothingToSearch;
        assert_eq!(exit_code(&anyhow::Error::from(user)), 1);
    }
}
