//! Efficiency predictors behind one trait: analytic MACs and parameters, and latency from a lookup
//! table.
//!
//! All three are *additive* over a subnet's layers: a fixed part that depends on the resolution only
//! (first conv, block 0, head) plus one term per active elastic block that depends on the block,
//! its kernel, its expand ratio and the resolution (the feature size at every block is a function
//! of the resolution alone, because only the first block of a stage strides and it always runs).
//! [`Additive`] compiles that structure into flat arrays once, so predicting one arch is ~20 adds
//! with no allocation, and the exact minimum over any choice subset is a small dynamic programme
//! (used by the search to state the smallest achievable value of an infeasible constraint).

use std::collections::HashMap;
use std::fmt;

use ofa_space::cost::{
    block_cost, bottleneck_cost, head_cost, resnet_head_cost, resnet_stem_cost, stem_cost,
};
use ofa_space::latency::{
    block_key, bottleneck_key, first_conv_key, head_keys, resnet_head_key, resnet_stem_keys,
};
use ofa_space::{conv_out, ActiveBlock, ArchConfig, Choices, Family, Ratio, SearchSpace};

use crate::resnet_table::{ResNetPart, ResNetTable};

/// What an efficiency predictor measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Latency in milliseconds (from a lookup table).
    #[cfg_attr(feature = "clap", value(name = "latency_ms"))]
    LatencyMs,
    /// Multiply-accumulates, millions.
    #[cfg_attr(feature = "clap", value(name = "macs_m"))]
    MacsM,
    /// Trainable parameters, millions.
    #[cfg_attr(feature = "clap", value(name = "params_m"))]
    ParamsM,
}

impl Metric {
    /// The name used in JSON and on the command line (`latency_ms`, `macs_m`, `params_m`).
    pub fn name(self) -> &'static str {
        match self {
            Metric::LatencyMs => "latency_ms",
            Metric::MacsM => "macs_m",
            Metric::ParamsM => "params_m",
        }
    }

    /// Unit for display.
    pub fn unit(self) -> &'static str {
        match self {
            Metric::LatencyMs => "ms",
            Metric::MacsM => "M MACs",
            Metric::ParamsM => "M params",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an efficiency prediction failed.
#[derive(Debug, thiserror::Error)]
pub enum EfficiencyError {
    /// The arch's resolution is not covered.
    #[error("{metric}: resolution {resolution} is not covered (covered: {covered:?})")]
    Resolution {
        /// Which predictor.
        metric: Metric,
        /// Asked resolution.
        resolution: u32,
        /// What it covers.
        covered: Vec<u32>,
    },
    /// A choice value the compiled table does not know.
    #[error("{metric}: `{field}` = {value} is not a choice of the space")]
    Choice {
        /// Which predictor.
        metric: Metric,
        /// `ks` or `e`.
        field: &'static str,
        /// The value.
        value: f64,
    },
    /// The lookup table lacks a layer this arch needs.
    #[error("{metric}: arch {arch} does not fit the space (a list's length or a choice)")]
    OutsideSpace { metric: Metric, arch: String },
    #[error("the latency table has no entry `{key}` (needed by arch {arch})")]
    MissingLayer {
        /// The layer's key.
        key: String,
        /// The arch, as JSON.
        arch: String,
    },
}

/// An efficiency predictor: one number per architecture, lower is better.
pub trait Efficiency: Send + Sync {
    /// What it predicts.
    fn metric(&self) -> Metric;
    /// The predicted value for `arch` (which must fit the predictor's space).
    fn predict(&self, arch: &ArchConfig) -> Result<f64, EfficiencyError>;
    /// The additive structure, when the predictor has one (enables exact minima).
    fn additive(&self) -> Option<&Additive> {
        None
    }
}

/// A compiled additive cost model (see the module documentation).
#[derive(Debug, Clone)]
pub struct Additive {
    metric: Metric,
    n_blocks: usize,
    max_depth: usize,
    /// Per stage: its blocks, and its fixed depth where it is not elastic.
    stages: Vec<(usize, Option<u32>)>,
    ks: Vec<u32>,
    e: Vec<Ratio>,
    /// Value → position in `ks` / `e` (`u8::MAX`: not a choice), for values below 64 (the space validation bounds them).
    ks_index: [u8; 64],
    e_index: [u8; 64],
    resolutions: Vec<u32>,
    /// Per resolution index.
    fixed: Vec<f64>,
    /// `[((block · |ks| + k) · |e| + e) · |R| + r]`; NaN where a table lacks the entry.
    block: Vec<f64>,
    /// Keys of the NaN entries (`fixed` slots use `usize::MAX - r`), for error messages.
    missing: HashMap<usize, String>,
    /// A ResNet space's terms (the MBConv tables above are then empty).
    resnet: Option<Box<ResNetTable>>,
}

impl Additive {
    /// Analytic MACs (millions) for `space`, as [`ofa_space::cost`] counts them.
    pub fn macs(space: &SearchSpace) -> Additive {
        Self::analytic(space, Metric::MacsM, |c| c.macs as f64 / 1e6)
    }

    /// Analytic parameters (millions) for `space`.
    pub fn params(space: &SearchSpace) -> Additive {
        Self::analytic(space, Metric::ParamsM, |c| c.params as f64 / 1e6)
    }

    fn analytic(space: &SearchSpace, metric: Metric, v: fn(ofa_space::Cost) -> f64) -> Additive {
        if space.family == Family::ResNet {
            let t = ResNetTable::compile(space, &space.resolutions, |part| {
                Ok(v(match part {
                    ResNetPart::Stem { r, stem } => resnet_stem_cost(space, r, &stem),
                    ResNetPart::Block { b, f, .. } => bottleneck_cost(&b, f),
                    ResNetPart::Head { c, .. } => resnet_head_cost(space, c),
                }))
            });
            return Self::resnet(metric, &space.resolutions, t);
        }
        Self::compile(space, &space.resolutions, metric, |part| {
            Ok(match part {
                Part::Fixed {
                    r,
                    block0,
                    f_block0,
                    f_head,
                } => {
                    let c = stem_cost(space, r)
                        + block_cost(space, &block0, f_block0)
                        + head_cost(space, f_head);
                    v(c)
                }
                Part::Block { block, f, .. } => v(block_cost(space, &block, f)),
            })
        })
    }

    /// A model read from per-layer values at each resolution in `resolutions`: `lookup(r, key)`
    /// is the value of the layer `key` (the reference's lookup-table keys) at resolution `r`, and
    /// a network's value is `a · Σ layers + b` (a lookup table's linear correction, which keeps
    /// the model additive). Layers `lookup` lacks are remembered and reported, with the arch that
    /// needs them, by [`Additive::predict`].
    pub fn from_lookup(
        space: &SearchSpace,
        resolutions: &[u32],
        metric: Metric,
        (a, b): (f64, f64),
        lookup: impl Fn(u32, &str) -> Option<f64>,
    ) -> Additive {
        if space.family == Family::ResNet {
            let get = |r: u32, key: String| lookup(r, &key).ok_or(key);
            let t = ResNetTable::compile(space, resolutions, |part| match part {
                ResNetPart::Stem { r, stem } => {
                    let mut total = 0.0;
                    for (_, k) in resnet_stem_keys(space, r, &stem) {
                        total += get(r, k)?;
                    }
                    Ok(a * total + b)
                }
                ResNetPart::Block { b: blk, f, r } => Ok(a * get(r, bottleneck_key(&blk, f))?),
                ResNetPart::Head { f, c, r } => Ok(a * get(r, resnet_head_key(space, f, c))?),
            });
            return Self::resnet(metric, resolutions, t);
        }
        Self::compile(space, resolutions, metric, |part| {
            let get = |r: u32, key: String| lookup(r, &key).ok_or(key);
            match part {
                Part::Fixed {
                    r,
                    block0,
                    f_block0,
                    f_head,
                } => {
                    let mut total = get(r, first_conv_key(space, r))?;
                    total += get(r, block_key(space, &block0, f_block0))?;
                    for (_, k) in head_keys(space, f_head) {
                        total += get(r, k)?;
                    }
                    Ok(a * total + b)
                }
                Part::Block { block, f, r } => Ok(a * get(r, block_key(space, &block, f))?),
            }
        })
    }

    /// A model of a ResNet space: its terms in `t`.
    fn resnet(metric: Metric, resolutions: &[u32], t: ResNetTable) -> Additive {
        Additive {
            metric,
            n_blocks: 0,
            max_depth: 0,
            stages: Vec::new(),
            ks: Vec::new(),
            e: Vec::new(),
            ks_index: [u8::MAX; 64],
            e_index: [u8::MAX; 64],
            resolutions: resolutions.to_vec(),
            fixed: Vec::new(),
            block: Vec::new(),
            missing: HashMap::new(),
            resnet: Some(Box::new(t)),
        }
    }

    fn compile(
        space: &SearchSpace,
        resolutions: &[u32],
        metric: Metric,
        mut value: impl FnMut(Part) -> Result<f64, String>,
    ) -> Additive {
        let blocks = space.blocks();
        let n_blocks = space.n_elastic_blocks();
        let (nk, ne, nr) = (
            space.ks_list.len(),
            space.expand_ratio_list.len(),
            resolutions.len(),
        );
        let mut fixed = vec![f64::NAN; nr];
        let mut block = vec![f64::NAN; n_blocks * nk * ne * nr];
        let mut missing = HashMap::new();
        for (ri, &r) in resolutions.iter().enumerate() {
            // feature size at the input of every block
            let mut f = conv_out(r, 2);
            let mut f_in = Vec::with_capacity(blocks.len());
            for b in &blocks {
                f_in.push(f);
                f = conv_out(f, b.stride);
            }
            let b0 = blocks[0];
            let block0 = ActiveBlock {
                spec: b0,
                ks: 3,
                e: 1.into(),
                mid: b0.max_mid,
            };
            match value(Part::Fixed {
                r,
                block0,
                f_block0: f_in[0],
                f_head: f,
            }) {
                Ok(v) => fixed[ri] = v,
                Err(key) => {
                    missing.insert(usize::MAX - ri, key);
                }
            }
            for spec in &blocks[1..] {
                let i = spec.index - 1;
                for (ki, &ks) in space.ks_list.iter().enumerate() {
                    for (ei, &e) in space.expand_ratio_list.iter().enumerate() {
                        let ab = ActiveBlock {
                            spec: *spec,
                            ks,
                            e,
                            mid: spec.mid(e),
                        };
                        let slot = ((i * nk + ki) * ne + ei) * nr + ri;
                        match value(Part::Block {
                            block: ab,
                            f: f_in[spec.index],
                            r,
                        }) {
                            Ok(v) => block[slot] = v,
                            Err(key) => {
                                missing.insert(slot, key);
                            }
                        }
                    }
                }
            }
        }
        Additive {
            metric,
            n_blocks,
            max_depth: space.max_depth(),
            stages: space
                .stage_blocks()
                .into_iter()
                .zip(space.stages.iter().skip(1).map(|s| s.blocks))
                .collect(),
            ks: space.ks_list.clone(),
            e: space.expand_ratio_list.clone(),
            ks_index: index_table(space.ks_list.iter().map(|k| Some(*k))),
            e_index: index_table(space.expand_ratio_list.iter().map(|e| e.whole())),
            resolutions: resolutions.to_vec(),
            fixed,
            block,
            missing,
            resnet: None,
        }
    }
}

/// Value → position for small whole choice values (the space validation keeps kernel sizes and
/// MBConv expand ratios whole and below 64; `None` is a value the table cannot hold).
fn index_table(values: impl Iterator<Item = Option<u32>>) -> [u8; 64] {
    let mut t = [u8::MAX; 64];
    for (i, v) in values.enumerate() {
        if let Some(slot) = v.and_then(|v| t.get_mut(v as usize)) {
            *slot = i as u8;
        }
    }
    t
}

/// One part of a network handed to [`Additive::compile`]'s value function.
enum Part {
    /// Everything that does not depend on the elastic choices, at resolution `r`.
    Fixed {
        r: u32,
        block0: ActiveBlock,
        f_block0: u32,
        f_head: u32,
    },
    /// One elastic block with its choices, input `f`×`f`, at resolution `r`.
    Block { block: ActiveBlock, f: u32, r: u32 },
}

impl Additive {
    /// What it predicts.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// Lookup-table keys the space needs and the table lacks (sorted).
    pub fn missing_keys(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.missing.values().map(String::as_str).collect();
        if let Some(t) = &self.resnet {
            v.extend(t.missing_keys());
        }
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The resolutions it covers.
    pub fn resolutions(&self) -> &[u32] {
        &self.resolutions
    }

    fn r_index(&self, r: u32) -> Result<usize, EfficiencyError> {
        self.resolutions
            .iter()
            .position(|x| *x == r)
            .ok_or_else(|| EfficiencyError::Resolution {
                metric: self.metric,
                resolution: r,
                covered: self.resolutions.clone(),
            })
    }

    fn slot(&self, i: usize, ks: u32, e: Ratio, ri: usize) -> Result<usize, EfficiencyError> {
        let find = |l: &[u8; 64], v: Option<u32>, value: f64, field| match v
            .and_then(|v| l.get(v as usize).copied())
            .unwrap_or(u8::MAX)
        {
            u8::MAX => Err(EfficiencyError::Choice {
                metric: self.metric,
                field,
                value,
            }),
            i => Ok(usize::from(i)),
        };
        let ki = find(&self.ks_index, Some(ks), f64::from(ks), "ks")?;
        let ei = find(&self.e_index, e.whole(), e.get(), "e")?;
        let (nk, ne, nr) = (self.ks.len(), self.e.len(), self.resolutions.len());
        Ok(((i * nk + ki) * ne + ei) * nr + ri)
    }

    fn missing_error(&self, slot: usize, arch: &ArchConfig) -> EfficiencyError {
        EfficiencyError::MissingLayer {
            key: self
                .missing
                .get(&slot)
                .cloned()
                .expect("a missing slot is recorded with its key when the table is compiled"),
            arch: arch.to_json(),
        }
    }

    /// Predicted value of `arch` (whose lists must have the space's lengths).
    pub fn predict(&self, arch: &ArchConfig) -> Result<f64, EfficiencyError> {
        let ri = self.r_index(arch.r)?;
        if let Some(t) = &self.resnet {
            return t.predict(arch, ri).map_err(|key| match key {
                Some(key) => EfficiencyError::MissingLayer {
                    key,
                    arch: arch.to_json(),
                },
                None => EfficiencyError::OutsideSpace {
                    metric: self.metric,
                    arch: arch.to_json(),
                },
            });
        }
        let mut total = self.fixed[ri];
        if total.is_nan() {
            return Err(self.missing_error(usize::MAX - ri, arch));
        }
        for i in 0..self.n_blocks.min(arch.ks.len()) {
            if arch.is_active(i, self.max_depth) {
                let slot = self.slot(i, arch.ks[i], arch.e[i], ri)?;
                let v = self.block[slot];
                if v.is_nan() {
                    return Err(self.missing_error(slot, arch));
                }
                total += v;
            }
        }
        Ok(total)
    }

    /// The exact minimum of `Σ wⱼ · modelⱼ(arch)` over the archs allowed by `choices`, with the
    /// arch reaching it (`None` when no allowed arch has every entry it needs). All models must
    /// come from the same space.
    pub fn minimize(terms: &[(&Additive, f64)], choices: &Choices) -> Option<(f64, ArchConfig)> {
        let first = terms.first()?.0;
        if first.resnet.is_some() {
            return Self::minimize_resnet(terms, choices);
        }
        let n = first.n_blocks;
        let mut best: Option<(f64, ArchConfig)> = None;
        for &r in &choices.r {
            let ris: Option<Vec<usize>> = terms
                .iter()
                .map(|(m, _)| m.resolutions.iter().position(|x| *x == r))
                .collect();
            let Some(ris) = ris else { continue };
            let mut total: f64 = terms
                .iter()
                .zip(&ris)
                .map(|((m, w), ri)| w * m.fixed[*ri])
                .sum();
            let mut ks = vec![choices.ks[0]; n];
            let mut e = vec![choices.e[0]; n];
            let mut d = Vec::new();
            // best (ks, e) of each block
            let mut block_best = vec![(f64::INFINITY, 0u32, Ratio::from(1)); n];
            for (i, bb) in block_best.iter_mut().enumerate() {
                for &k in &choices.ks {
                    for &x in &choices.e {
                        let v: Option<f64> = terms
                            .iter()
                            .zip(&ris)
                            .map(|((m, w), ri)| m.slot(i, k, x, *ri).ok().map(|s| w * m.block[s]))
                            .sum();
                        if let Some(v) = v.filter(|v| !v.is_nan()) {
                            if v < bb.0 {
                                *bb = (v, k, x);
                            }
                        }
                    }
                }
            }
            let mut start = 0;
            for &(len, fixed) in &first.stages {
                // a fixed stage runs all its blocks; an elastic one the best allowed depth
                let depths = fixed.map_or(choices.d.clone(), |count| vec![count]);
                let mut stage_best = (f64::INFINITY, 0u32);
                for depth in depths {
                    let v: f64 = (0..(depth as usize).min(len))
                        .map(|j| block_best[start + j].0)
                        .sum();
                    if v < stage_best.0 {
                        stage_best = (v, depth);
                    }
                }
                total += stage_best.0;
                d.push(stage_best.1);
                for j in 0..(stage_best.1 as usize).min(len) {
                    let (_, k, x) = block_best[start + j];
                    ks[start + j] = k;
                    e[start + j] = x;
                }
                start += len;
            }
            if total.is_finite() && best.as_ref().is_none_or(|b| total < b.0) {
                best = Some((
                    total,
                    ArchConfig {
                        ks,
                        e,
                        d,
                        w: Vec::new(),
                        r,
                    },
                ));
            }
        }
        best
    }
}

impl Additive {
    /// [`Additive::minimize`] for a ResNet space: its dynamic programme at each resolution.
    fn minimize_resnet(terms: &[(&Additive, f64)], choices: &Choices) -> Option<(f64, ArchConfig)> {
        let mut best: Option<(f64, ArchConfig)> = None;
        for &r in &choices.r {
            let at_r: Option<Vec<(&ResNetTable, f64, usize)>> = terms
                .iter()
                .map(|(m, w)| {
                    let ri = m.resolutions.iter().position(|x| *x == r)?;
                    Some((m.resnet.as_deref()?, *w, ri))
                })
                .collect();
            let Some(at_r) = at_r else { continue };
            if let Some(found) = ResNetTable::minimize(&at_r, choices, r) {
                if best.as_ref().is_none_or(|b| found.0 < b.0) {
                    best = Some(found);
                }
            }
        }
        best
    }
}

impl Efficiency for Additive {
    fn metric(&self) -> Metric {
        self.metric
    }
    fn predict(&self, arch: &ArchConfig) -> Result<f64, EfficiencyError> {
        Additive::predict(self, arch)
    }
    fn additive(&self) -> Option<&Additive> {
        Some(self)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ofa_space::{cost, sample};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn analytic_tables_equal_the_direct_count() {
        for preset in [
            "ofa-mbv3-w1.0",
            "ofa-mbv3-w1.2",
            "ofa-mbv3-small32",
            "ofa-proxyless-w1.3",
            "ofa-proxyless-small32",
            "ofa-resnet50",
            "ofa-resnet-small32",
        ] {
            let s = SearchSpace::preset(preset).unwrap();
            let (macs, params) = (Additive::macs(&s), Additive::params(&s));
            let mut rng = ChaCha8Rng::seed_from_u64(1);
            for _ in 0..200 {
                let a = sample(&s, &Choices::all(&s), &mut rng);
                let c = cost(&s, &a);
                assert!((macs.predict(&a).unwrap() - c.macs as f64 / 1e6).abs() < 1e-9);
                assert!((params.predict(&a).unwrap() - c.params as f64 / 1e6).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn minimum_is_the_smallest_arch_for_macs_and_no_sample_beats_it() {
        for preset in ["ofa-proxyless-w1.3", "ofa-mbv3-w1.0", "ofa-resnet50"] {
            let s = SearchSpace::preset(preset).unwrap();
            let macs = Additive::macs(&s);
            let all = Choices::all(&s);
            let (v, a) = Additive::minimize(&[(&macs, 1.0)], &all).unwrap();
            a.validate(&s).unwrap();
            assert_eq!(a.canonical(&s), ArchConfig::smallest(&s).canonical(&s));
            assert!((macs.predict(&a).unwrap() - v).abs() < 1e-9);
            let mut rng = ChaCha8Rng::seed_from_u64(2);
            for _ in 0..500 {
                assert!(macs.predict(&sample(&s, &all, &mut rng)).unwrap() >= v);
            }
        }
        let s = SearchSpace::preset("ofa-mbv3-w1.0").unwrap();
        let macs = Additive::macs(&s);
        let all = Choices::all(&s);
        // restricted choices are honoured
        let mut c = all.clone();
        c.r = vec![160];
        c.d = vec![3, 4];
        let (_, a) = Additive::minimize(&[(&macs, 1.0)], &c).unwrap();
        assert_eq!(a.r, 160);
        assert!(a.d.iter().all(|d| *d == 3));
    }

    #[test]
    fn a_resnet_minimum_under_mixed_signs_is_exact_and_no_sample_beats_it() {
        // MACs minus parameters: not monotonic in any choice, so the programme must weigh widths
        // against each other across stages
        let s = SearchSpace::preset("ofa-resnet-tiny").unwrap();
        let (macs, params) = (Additive::macs(&s), Additive::params(&s));
        let all = Choices::all(&s);
        let terms = [(&macs, 1.0), (&params, -40.0)];
        let (v, a) = Additive::minimize(&terms, &all).unwrap();
        a.validate(&s).unwrap();
        let value = |a: &ArchConfig| macs.predict(a).unwrap() - 40.0 * params.predict(a).unwrap();
        assert!((value(&a) - v).abs() < 1e-9);
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for _ in 0..3000 {
            let b = sample(&s, &all, &mut rng);
            assert!(
                value(&b) >= v - 1e-9,
                "{} beats the minimum {v}",
                b.to_json()
            );
        }
        // its coordinate neighbours do not beat it either
        for (i, w) in a.w.iter().enumerate() {
            for o in (0..3).filter(|o| o != w) {
                let mut b = a.clone();
                b.w[i] = o;
                assert!(value(&b) >= v - 1e-9);
            }
        }
        // a lookup model keyed like the profiler's tables predicts the sum of its layers
        let table = |r: u32, key: &str| {
            let h = key
                .bytes()
                .fold(r as u64, |h, c| h.wrapping_mul(31).wrapping_add(c as u64));
            Some((h % 1000) as f64 / 100.0)
        };
        let lat = Additive::from_lookup(&s, &s.resolutions, Metric::LatencyMs, (1.5, 0.25), table);
        for _ in 0..200 {
            let b = sample(&s, &all, &mut rng);
            let want: f64 = ofa_space::latency::layer_keys(&s, &b)
                .iter()
                .map(|(_, k)| table(b.r, k).unwrap())
                .sum();
            assert!((lat.predict(&b).unwrap() - (1.5 * want + 0.25)).abs() < 1e-9);
        }
    }

    #[test]
    fn unknown_choice_and_resolution_are_errors() {
        let s = SearchSpace::preset("ofa-mbv3-w1.0").unwrap();
        let macs = Additive::macs(&s);
        let mut a = ArchConfig::largest(&s);
        a.r = 1000;
        assert!(macs
            .predict(&a)
            .unwrap_err()
            .to_string()
            .contains("resolution 1000"));
        let mut a = ArchConfig::largest(&s);
        a.ks[0] = 9;
        assert!(macs
            .predict(&a)
            .unwrap_err()
            .to_string()
            .contains("`ks` = 9"));
    }
}
