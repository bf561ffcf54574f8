//! Candidate models, their non-negative fit on relative error, the choice by leave-one-out
//! error, and the fitted model written as a latency table.

use std::collections::BTreeMap;
use std::fmt;

use ofa_space::ArchConfig;
use serde::{Deserialize, Serialize};

use super::features::{Feature, Features, Phi};
use super::nnls::nnls_relative;
use super::HardwareError;
use crate::latency::{Correction, Entry, LatencyTable, Meta, FORMAT};
use crate::metrics::spearman;

/// A candidate model: its name and its terms (each a group of features sharing one weight).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Name, as reports and `--model` give it.
    pub name: &'static str,
    /// Terms.
    pub terms: &'static [&'static [Feature]],
}

use Feature::{BaseBlocks, BaseOther, Blocks, DenseMacs, DepthwiseMacs, Elements, Overhead};

/// The candidate models, simplest first.
pub const CANDIDATES: &[Candidate] = &[
    Candidate {
        name: "scale",
        terms: &[&[BaseBlocks, BaseOther]],
    },
    Candidate {
        name: "linear",
        terms: &[&[BaseBlocks, BaseOther], &[Overhead]],
    },
    Candidate {
        name: "macs-linear",
        terms: &[&[DepthwiseMacs, DenseMacs], &[Overhead]],
    },
    Candidate {
        name: "types",
        terms: &[&[BaseBlocks], &[BaseOther], &[Blocks], &[Overhead]],
    },
    Candidate {
        name: "macs",
        terms: &[
            &[DepthwiseMacs],
            &[DenseMacs],
            &[Elements],
            &[Blocks],
            &[Overhead],
        ],
    },
    Candidate {
        name: "types+macs",
        terms: &[
            &[BaseBlocks],
            &[BaseOther],
            &[DepthwiseMacs],
            &[DenseMacs],
            &[Elements],
            &[Blocks],
            &[Overhead],
        ],
    },
];

impl Candidate {
    /// The candidate called `name`.
    pub fn named(name: &str) -> Option<&'static Candidate> {
        CANDIDATES.iter().find(|c| c.name == name)
    }

    /// Whether it needs a base table.
    pub fn needs_base(&self) -> bool {
        self.terms
            .iter()
            .flat_map(|t| t.iter())
            .any(|f| f.needs_base())
    }

    /// Measurements it needs: one per weight, and two more so that every leave-one-out fit is
    /// still determined with one to spare.
    pub fn min_measurements(&self) -> usize {
        self.terms.len() + 2
    }
}

/// A fitted model: a candidate and its weights (one per term).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Candidate name.
    pub name: String,
    /// Its terms.
    pub terms: Vec<Vec<Feature>>,
    /// One weight per term (ms per unit of the term's features).
    pub weights: Vec<f64>,
}

impl Model {
    /// The model's value for features `x`.
    pub fn predict(&self, x: &Phi) -> f64 {
        self.terms
            .iter()
            .zip(&self.weights)
            .map(|(t, w)| w * t.iter().map(|f| x[f.index()]).sum::<f64>())
            .sum()
    }

    /// The weight of the per-network term, ms (0 when the model has none).
    pub fn overhead(&self) -> f64 {
        self.terms
            .iter()
            .zip(&self.weights)
            .filter(|(t, _)| t.contains(&Overhead))
            .map(|(_, w)| *w)
            .sum()
    }

    /// The model's value for one layer (its per-network term left out).
    pub fn layer(&self, phi: &Phi) -> f64 {
        self.terms
            .iter()
            .zip(&self.weights)
            .map(|(t, w)| {
                w * t
                    .iter()
                    .filter(|f| **f != Overhead)
                    .map(|f| phi[f.index()])
                    .sum::<f64>()
            })
            .sum()
    }
}

/// Errors of predictions against measurements.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ErrorStats {
    /// Pairs compared.
    pub n: usize,
    /// Mean absolute percentage error.
    pub mape_pct: f64,
    /// Share of predictions within ±10 % of the measurement, percent.
    pub within_10pct: f64,
    /// Largest absolute percentage error.
    pub max_ape_pct: f64,
    /// Spearman rank correlation.
    pub spearman: f64,
}

impl ErrorStats {
    /// Compare `predicted` with `measured` (same length, measured > 0).
    pub fn of(predicted: &[f64], measured: &[f64]) -> ErrorStats {
        let ape: Vec<f64> = predicted
            .iter()
            .zip(measured)
            .map(|(p, m)| ((p - m) / m).abs() * 100.0)
            .collect();
        let n = ape.len().max(1) as f64;
        ErrorStats {
            n: ape.len(),
            mape_pct: ape.iter().sum::<f64>() / n,
            within_10pct: ape.iter().filter(|e| **e <= 10.0).count() as f64 / n * 100.0,
            max_ape_pct: ape.iter().copied().fold(0.0, f64::max),
            spearman: spearman(predicted, measured),
        }
    }
}

impl fmt::Display for ErrorStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MAPE {:.2} %, {:.0} % within ±10 %, max {:.1} %, Spearman ρ {:.3} (n = {})",
            self.mape_pct, self.within_10pct, self.max_ape_pct, self.spearman, self.n
        )
    }
}

/// One candidate's leave-one-out result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateReport {
    /// Candidate name.
    pub name: String,
    /// Its leave-one-out errors.
    pub loo: ErrorStats,
}

/// What [`fit`] found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitReport {
    /// The chosen model, fitted on every measurement.
    pub model: Model,
    /// Measurements used.
    pub measurements: usize,
    /// Leave-one-out errors of the chosen model.
    pub loo: ErrorStats,
    /// In-sample errors of the chosen model.
    pub fit: ErrorStats,
    /// Every candidate tried, with its leave-one-out errors.
    pub candidates: Vec<CandidateReport>,
}

/// One whole-network measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// Its id (the probe's, or the subnet's).
    pub id: String,
    /// The subnet.
    pub arch: ArchConfig,
    /// Measured latency, ms.
    pub latency_ms: f64,
}

/// Which model [`fit`] uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ModelChoice {
    /// The candidate with the lowest leave-one-out MAPE among those the data supports.
    Auto,
    /// This one.
    Fixed(&'static Candidate),
}

/// Fit a latency model to `measurements` (see the module documentation).
pub fn fit(
    features: &Features<'_>,
    measurements: &[Measurement],
    choice: ModelChoice,
) -> Result<FitReport, HardwareError> {
    let xs: Vec<Phi> = measurements
        .iter()
        .map(|m| features.of(&m.arch))
        .collect::<Result<_, _>>()?;
    let ys: Vec<f64> = measurements.iter().map(|m| m.latency_ms).collect();
    let has_base = features.base().is_some();
    let pool: Vec<&'static Candidate> = match choice {
        ModelChoice::Fixed(c) => {
            if c.needs_base() && !has_base {
                return Err(HardwareError::Model(format!(
                    "the latency model `{}` needs a base table, and none was given",
                    c.name
                )));
            }
            vec![c]
        }
        ModelChoice::Auto => CANDIDATES
            .iter()
            .filter(|c| has_base || !c.needs_base())
            .collect(),
    };
    let usable: Vec<&'static Candidate> = pool
        .iter()
        .copied()
        .filter(|c| ys.len() >= c.min_measurements())
        .collect();
    if usable.is_empty() {
        let smallest = pool
            .iter()
            .min_by_key(|c| c.min_measurements())
            .ok_or_else(|| HardwareError::Model("no latency model applies".into()))?;
        return Err(HardwareError::TooFewMeasurements {
            got: ys.len(),
            model: smallest.name.to_string(),
            need: smallest.min_measurements(),
        });
    }
    let mut reports = Vec::new();
    let mut best: Option<(&'static Candidate, ErrorStats)> = None;
    for c in usable {
        let loo = leave_one_out(c, &xs, &ys);
        reports.push(CandidateReport {
            name: c.name.to_string(),
            loo,
        });
        // NaN (a degenerate fold) never wins
        if loo.mape_pct.is_finite() && best.is_none_or(|(_, b)| loo.mape_pct < b.mape_pct) {
            best = Some((c, loo));
        }
    }
    let (c, loo) = best.ok_or_else(|| HardwareError::Degenerate(reports[0].name.clone()))?;
    let model =
        fit_candidate(c, &xs, &ys).ok_or_else(|| HardwareError::Degenerate(c.name.into()))?;
    let pred: Vec<f64> = xs.iter().map(|x| model.predict(x)).collect();
    Ok(FitReport {
        fit: ErrorStats::of(&pred, &ys),
        model,
        measurements: ys.len(),
        loo,
        candidates: reports,
    })
}

fn term_values(c: &Candidate, x: &Phi) -> Vec<f64> {
    c.terms
        .iter()
        .map(|t| t.iter().map(|f| x[f.index()]).sum())
        .collect()
}

fn fit_candidate(c: &Candidate, xs: &[Phi], ys: &[f64]) -> Option<Model> {
    let a: Vec<Vec<f64>> = xs.iter().map(|x| term_values(c, x)).collect();
    let w = nnls_relative(&a, ys)?;
    Some(Model {
        name: c.name.to_string(),
        terms: c.terms.iter().map(|t| t.to_vec()).collect(),
        weights: w,
    })
}

fn leave_one_out(c: &Candidate, xs: &[Phi], ys: &[f64]) -> ErrorStats {
    let mut pred = Vec::with_capacity(ys.len());
    for i in 0..ys.len() {
        let (mut xt, mut yt) = (xs.to_vec(), ys.to_vec());
        xt.remove(i);
        yt.remove(i);
        pred.push(fit_candidate(c, &xt, &yt).map_or(f64::NAN, |m| m.predict(&xs[i])));
    }
    if pred.iter().any(|p| !p.is_finite()) {
        return ErrorStats {
            n: ys.len(),
            mape_pct: f64::NAN,
            within_10pct: 0.0,
            max_ape_pct: f64::NAN,
            spearman: f64::NAN,
        };
    }
    ErrorStats::of(&pred, ys)
}

/// The fitted model as a latency table over every layer of the space at the resolutions the
/// features cover; the per-network term is the table's correction (`a = 1`, `b` = overhead).
pub fn to_table(
    features: &Features<'_>,
    report: &FitReport,
    mut meta: Meta,
) -> Result<LatencyTable, HardwareError> {
    let mut tables = BTreeMap::new();
    for r in features.resolutions() {
        let mut t = BTreeMap::new();
        for l in features.layers_at(r)? {
            t.insert(
                l.key.clone(),
                Entry {
                    count: report.measurements as u64,
                    mean: report.model.layer(&l.phi),
                    std: 0.0,
                },
            );
        }
        tables.insert(r, t);
    }
    meta.correction = Some(Correction {
        a: 1.0,
        b: report.model.overhead(),
    });
    meta.fit = Some(report.clone());
    Ok(LatencyTable {
        format: FORMAT.to_string(),
        meta,
        tables,
    })
}
