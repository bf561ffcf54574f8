//! One module per subcommand, plus the helpers they share.

pub mod bench;
pub mod bench_data;
pub mod bench_hardware;
pub mod bench_predict;
pub mod bench_quality;
pub mod bench_search;
pub mod bench_serve;
pub mod curves;
pub mod eval;
pub mod export;
pub mod extract;
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
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        // an error whose message already ends with its source's (`"{path}: {source}"`) printed
        // it: skip exactly that repeat, never a cause that merely occurs inside the message
        if !line.ends_with(&c) {
            line.push_str(": ");
            line.push_str(&c);
        }
    }
    line
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
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(SupernetError::io(Path::new("/x/y"), io()));
        assert_eq!(render(&e), "/x/y: no such file");
        let e = e.context("cannot export");
        assert_eq!(render(&e), "cannot export: /x/y: no such file");
        let e = anyhow::Error::new(io()).context("reading /z");
        assert_eq!(render(&e), "reading /z: no such file");
        // a cause whose text occurs inside the message, but not as its end, is a real cause
        let short = || std::io::Error::other("EOF");
        let e = anyhow::Error::new(short()).context("EOF marker missing in /w");
        assert_eq!(render(&e), "EOF marker missing in /w: EOF");
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
