//! What a search optimises: predicted accuracy under efficiency constraints, over a space's
//! choices, through predictors behind traits (so tests can use fakes).

use std::fmt;

use crate::efficiency::{Efficiency, Metric};
use ofa_space::{ArchConfig, Choices, SearchSpace};
use serde::{Deserialize, Serialize};

use crate::SearchError;

/// Predicted accuracy of many archs at once (fraction or percent; higher is better).
pub trait AccuracyModel: Send + Sync {
    /// One score per arch, in order.
    fn predict(&self, archs: &[ArchConfig]) -> Result<Vec<f64>, SearchError>;
}

/// Upper bounds on efficiency metrics. Each must be positive and finite.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    /// Max latency, ms (needs a latency table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Max MACs, millions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macs_m: Option<f64>,
    /// Max parameters, millions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params_m: Option<f64>,
}

impl Constraints {
    /// Check every bound is positive and finite.
    pub fn validate(&self) -> Result<(), SearchError> {
        for (name, v) in self.iter() {
            if !v.is_finite() || v <= 0.0 {
                return Err(SearchError::Constraint(format!(
                    "{name} must be a positive finite number, got {v}"
                )));
            }
        }
        Ok(())
    }

    /// The bounds that are set.
    pub fn iter(&self) -> impl Iterator<Item = (Metric, f64)> {
        [
            (Metric::LatencyMs, self.latency_ms),
            (Metric::MacsM, self.macs_m),
            (Metric::ParamsM, self.params_m),
        ]
        .into_iter()
        .filter_map(|(m, v)| v.map(|v| (m, v)))
    }

    /// Whether no bound is set.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

impl fmt::Display for Constraints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.iter().map(|(m, v)| format!("{m} ≤ {v}")).collect();
        if parts.is_empty() {
            f.write_str("unconstrained")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// One constraint: a predictor and its bound.
pub struct Bound<'a> {
    /// The predictor.
    pub predictor: &'a dyn Efficiency,
    /// The bound (inclusive).
    pub max: f64,
}

impl fmt::Debug for Bound<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ≤ {}", self.predictor.metric(), self.max)
    }
}

/// A search problem.
pub struct Problem<'a> {
    /// The space.
    pub space: &'a SearchSpace,
    /// The choices searched (resolutions included).
    pub choices: Choices,
    /// Predicted accuracy.
    pub accuracy: &'a dyn AccuracyModel,
    /// Constraints.
    pub bounds: Vec<Bound<'a>>,
    /// Predictors reported for every result (besides the constrained ones).
    pub report: Vec<&'a dyn Efficiency>,
}

impl fmt::Debug for Problem<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Problem")
            .field("space", &self.space.name)
            .field("choices", &self.choices)
            .field("bounds", &self.bounds)
            .finish_non_exhaustive()
    }
}

impl Problem<'_> {
    /// Check that the searched choices are non-empty and inside the space.
    pub fn check_choices(&self) -> Result<(), SearchError> {
        self.choices
            .validate(self.space)
            .map_err(|e| SearchError::Constraint(format!("choices: {e}")))
    }

    /// Whether `arch` meets every bound.
    pub fn feasible(&self, arch: &ArchConfig) -> Result<bool, SearchError> {
        for b in &self.bounds {
            if b.predictor.predict(arch)? > b.max {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Every metric of `arch` (constrained and reported), by name.
    pub fn metrics(&self, arch: &ArchConfig) -> Result<Vec<(Metric, f64)>, SearchError> {
        let mut out = Vec::new();
        for p in self
            .bounds
            .iter()
            .map(|b| b.predictor)
            .chain(self.report.iter().copied())
        {
            if !out.iter().any(|(m, _)| *m == p.metric()) {
                out.push((p.metric(), p.predict(arch)?));
            }
        }
        Ok(out)
    }
}
