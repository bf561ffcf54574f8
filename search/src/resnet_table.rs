//! The additive structure of a ResNet's costs, compiled: a stem term that depends on the stem's
//! two width choices and whether its residual conv runs, one term per active bottleneck that
//! depends on its expand ratio and on the width choices around it (its stage's and, for a stage's
//! first block, the one before), and a classifier term that depends on the last stage's width.
//! Feature sizes depend on the resolution alone (only a stage's first block strides, and it
//! always runs), so every term is a table entry per resolution.
//!
//! The exact minimum over a choice subset is a dynamic programme over the stages, whose state
//! is the width choice the stage leaves to the next: 4 stages × widths² × depths, not the
//! widths⁶ × … product of every width vector.

use std::collections::HashMap;

use ofa_space::{
    bottleneck_mid, conv_out, ArchConfig, Bottleneck, Choices, ResNetStem, SearchSpace,
};

/// One part of a ResNet handed to [`ResNetTable::compile`]'s value function.
pub(crate) enum ResNetPart {
    /// The stem (its convs and the max-pool) at resolution `r`.
    Stem { r: u32, stem: ResNetStem },
    /// A bottleneck whose input is `f`×`f`.
    Block { b: Bottleneck, f: u32, r: u32 },
    /// Pooling and the classifier on an `f`×`f`×`c` map.
    Head { f: u32, c: u32, r: u32 },
}

/// A partial arch of the dynamic programme: its cost so far and its entries so far.
#[derive(Debug, Clone)]
struct Partial {
    cost: f64,
    d: Vec<u32>,
    e: Vec<ofa_space::Ratio>,
    w: Vec<u32>,
}

/// Which table an entry is in (for missing-key messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Part {
    Stem,
    Block,
    Head,
}

/// A ResNet's cost terms per resolution, as flat arrays (NaN: a value the source lacked).
#[derive(Debug, Clone)]
pub(crate) struct ResNetTable {
    nw: usize,
    ne: usize,
    nr: usize,
    e: Vec<ofa_space::Ratio>,
    max_depth: u32,
    min_depth: u32,
    /// Blocks and base depth of each stage.
    stages: Vec<(usize, u32)>,
    /// `[(ri · nw + w0) · nw + w1] · 2 + middle`
    stem: Vec<f64>,
    /// `[(((j · nw + w_in) · nw + w_out) · ne + e) · nr + ri]`
    block: Vec<f64>,
    /// `[ri · nw + w_last]`
    head: Vec<f64>,
    missing: HashMap<(Part, usize), String>,
}

impl ResNetTable {
    /// Every term at every resolution in `resolutions`, from `value`.
    pub fn compile(
        space: &SearchSpace,
        resolutions: &[u32],
        mut value: impl FnMut(ResNetPart) -> Result<f64, String>,
    ) -> ResNetTable {
        let (nw, ne, nr) = (
            space.width_mult_list.len(),
            space.expand_ratio_list.len(),
            resolutions.len(),
        );
        let mids = space.resnet_stem_mid_widths();
        let outs = space.resnet_stem_widths();
        let stage_widths = space.resnet_stage_widths();
        let specs = space.resnet_blocks();
        let mut t = ResNetTable {
            nw,
            ne,
            nr,
            e: space.expand_ratio_list.clone(),
            max_depth: space.max_depth() as u32,
            min_depth: space.depth_list.iter().copied().min().unwrap_or(0),
            stages: space
                .stages
                .iter()
                .zip(space.stage_blocks())
                .map(|(s, n)| (n, s.base_depth))
                .collect(),
            stem: vec![f64::NAN; nr * nw * nw * 2],
            block: vec![f64::NAN; specs.len() * nw * nw * ne * nr],
            head: vec![f64::NAN; nr * nw],
            missing: HashMap::new(),
        };
        let put = |t: &mut ResNetTable, part: Part, slot: usize, v: Result<f64, String>| {
            let table = match part {
                Part::Stem => &mut t.stem,
                Part::Block => &mut t.block,
                Part::Head => &mut t.head,
            };
            match v {
                Ok(v) => table[slot] = v,
                Err(key) => {
                    t.missing.insert((part, slot), key);
                }
            }
        };
        for (ri, &r) in resolutions.iter().enumerate() {
            for (w0, &mid) in mids.iter().enumerate() {
                for (w1, &out) in outs.iter().enumerate() {
                    for middle in [false, true] {
                        let stem = ResNetStem { mid, out, middle };
                        let slot = ((ri * nw + w0) * nw + w1) * 2 + usize::from(middle);
                        put(
                            &mut t,
                            Part::Stem,
                            slot,
                            value(ResNetPart::Stem { r, stem }),
                        );
                    }
                }
            }
            let mut f = conv_out(conv_out(r, 2), 2);
            for spec in &specs {
                let prev = match spec.stage {
                    0 => &outs,
                    s => &stage_widths[s - 1],
                };
                let cur = &stage_widths[spec.stage];
                for (w_in, &prev_width) in prev.iter().enumerate() {
                    for (w_out, &cur_width) in cur.iter().enumerate() {
                        // past a stage's first block, the input is the stage's own width
                        if spec.pos_in_stage > 0 && w_in != w_out {
                            continue;
                        }
                        for (ei, &e) in space.expand_ratio_list.iter().enumerate() {
                            let cin = if spec.pos_in_stage == 0 {
                                prev_width
                            } else {
                                cur_width
                            };
                            let b = Bottleneck {
                                index: spec.index,
                                stage: spec.stage,
                                pos_in_stage: spec.pos_in_stage,
                                in_ch: cin,
                                mid: bottleneck_mid(cur_width, e),
                                out_ch: cur_width,
                                stride: spec.stride,
                                e,
                                downsample: spec.downsample,
                            };
                            let slot =
                                (((spec.index * nw + w_in) * nw + w_out) * ne + ei) * nr + ri;
                            put(
                                &mut t,
                                Part::Block,
                                slot,
                                value(ResNetPart::Block { b, f, r }),
                            );
                        }
                    }
                }
                f = conv_out(f, spec.stride);
            }
            let last = stage_widths.last().cloned().unwrap_or_default();
            for (w, &c) in last.iter().enumerate() {
                put(
                    &mut t,
                    Part::Head,
                    ri * nw + w,
                    value(ResNetPart::Head { f, c, r }),
                );
            }
        }
        t
    }

    /// Keys the source lacked (unsorted, possibly repeated).
    pub fn missing_keys(&self) -> impl Iterator<Item = &str> {
        self.missing.values().map(String::as_str)
    }

    fn e_index(&self, e: ofa_space::Ratio) -> Option<usize> {
        self.e.iter().position(|x| *x == e)
    }

    fn block_slot(&self, j: usize, w_in: usize, w_out: usize, ei: usize, ri: usize) -> usize {
        (((j * self.nw + w_in) * self.nw + w_out) * self.ne + ei) * self.nr + ri
    }

    /// The value of `arch` at resolution slot `ri`; `Err(Some(key))` names a missing entry,
    /// `Err(None)` an entry outside the table (a choice the space does not have).
    pub fn predict(&self, arch: &ArchConfig, ri: usize) -> Result<f64, Option<String>> {
        let nw = self.nw;
        let w = |i: usize| {
            arch.w
                .get(i)
                .map(|w| *w as usize)
                .filter(|w| *w < nw)
                .ok_or(None)
        };
        let get = |part: Part, table: &[f64], slot: usize| {
            let v = table[slot];
            if v.is_nan() {
                Err(self.missing.get(&(part, slot)).cloned())
            } else {
                Ok(v)
            }
        };
        let middle = arch.d.first().ok_or(None)? == &self.max_depth;
        let mut total = get(
            Part::Stem,
            &self.stem,
            ((ri * nw + w(0)?) * nw + w(1)?) * 2 + usize::from(middle),
        )?;
        let mut j0 = 0;
        for (s, &(n, base)) in self.stages.iter().enumerate() {
            let (w_prev, w_cur) = (w(1 + s)?, w(2 + s)?);
            let depth = (base + arch.d.get(1 + s).ok_or(None)?) as usize;
            for pos in 0..depth.min(n) {
                let j = j0 + pos;
                let ei = self.e_index(*arch.e.get(j).ok_or(None)?).ok_or(None)?;
                let w_in = if pos == 0 { w_prev } else { w_cur };
                total += get(
                    Part::Block,
                    &self.block,
                    self.block_slot(j, w_in, w_cur, ei, ri),
                )?;
            }
            j0 += n;
        }
        let last = w(self.stages.len() + 1)?;
        Ok(total + get(Part::Head, &self.head, ri * nw + last)?)
    }

    /// The exact minimum of `Σ weight · table` over the archs `choices` allow at resolution
    /// `r`, each table at its resolution slot, with the arch reaching it.
    pub fn minimize(
        terms: &[(&ResNetTable, f64, usize)],
        choices: &Choices,
        r: u32,
    ) -> Option<(f64, ArchConfig)> {
        let first = terms.first()?.0;
        let nw = first.nw;
        let sum = |f: &dyn Fn(&ResNetTable, usize) -> f64| -> f64 {
            let v: f64 = terms.iter().map(|(t, w, ri)| w * f(t, *ri)).sum();
            if v.is_nan() {
                f64::INFINITY
            } else {
                v
            }
        };
        let ws: Vec<usize> = choices
            .w
            .iter()
            .map(|w| *w as usize)
            .filter(|w| *w < nw)
            .collect();
        let es: Vec<(usize, ofa_space::Ratio)> = choices
            .e
            .iter()
            .filter_map(|e| first.e_index(*e).map(|i| (i, *e)))
            .collect();
        // best expand of block j for (w_in, w_out)
        let best_e = |j: usize, w_in: usize, w_out: usize| {
            es.iter()
                .map(|&(ei, e)| {
                    let v = sum(&|t, ri| t.block[t.block_slot(j, w_in, w_out, ei, ri)]);
                    (v, e)
                })
                .min_by(|a, b| a.0.total_cmp(&b.0))
        };
        let d0s: Vec<u32> = [first.max_depth, first.min_depth]
            .into_iter()
            .filter(|d| choices.d.contains(d))
            .collect();
        let mut best: Option<(f64, ArchConfig)> = None;
        for &w0 in &ws {
            for &w1 in &ws {
                for &d0 in &d0s {
                    let middle = usize::from(d0 == first.max_depth);
                    let stem = sum(&|t, ri| t.stem[((ri * nw + w0) * nw + w1) * 2 + middle]);
                    // dp[w]: the best partial arch with the last width position at w
                    let mut dp: Vec<Partial> = ws
                        .iter()
                        .map(|&w| Partial {
                            cost: if w == w1 { stem } else { f64::INFINITY },
                            d: vec![d0],
                            e: Vec::new(),
                            w: vec![w0 as u32, w1 as u32],
                        })
                        .collect();
                    let mut j0 = 0;
                    for &(n, base) in &first.stages {
                        let mut next = Vec::with_capacity(ws.len());
                        for &wc in &ws {
                            let mut cell = Partial {
                                cost: f64::INFINITY,
                                d: Vec::new(),
                                e: Vec::new(),
                                w: Vec::new(),
                            };
                            for (pi, &wp) in ws.iter().enumerate() {
                                if !dp[pi].cost.is_finite() {
                                    continue;
                                }
                                // the stage's blocks: the best expand each, the best depth
                                let picks: Vec<Option<(f64, ofa_space::Ratio)>> = (0..n)
                                    .map(|pos| best_e(j0 + pos, if pos == 0 { wp } else { wc }, wc))
                                    .collect();
                                for &d in &choices.d {
                                    let depth = (base + d) as usize;
                                    if depth > n {
                                        continue;
                                    }
                                    let stage: Option<f64> =
                                        picks[..depth].iter().map(|p| p.map(|p| p.0)).sum();
                                    let Some(stage) = stage else { continue };
                                    let c = dp[pi].cost + stage;
                                    if c < cell.cost {
                                        let mut next = dp[pi].clone();
                                        next.cost = c;
                                        next.d.push(d);
                                        next.e.extend((0..n).map(|pos| match picks[pos] {
                                            Some((_, x)) if pos < depth => x,
                                            _ => first.e[0],
                                        }));
                                        next.w.push(wc as u32);
                                        cell = next;
                                    }
                                }
                            }
                            next.push(cell);
                        }
                        dp = next;
                        j0 += n;
                    }
                    for (wi, Partial { cost, d, e, w }) in dp.into_iter().enumerate() {
                        let total = cost + sum(&|t, ri| t.head[ri * nw + ws[wi]]);
                        if total.is_finite() && best.as_ref().is_none_or(|b| total < b.0) {
                            best = Some((
                                total,
                                ArchConfig {
                                    ks: Vec::new(),
                                    e,
                                    d,
                                    w,
                                    r,
                                },
                            ));
                        }
                    }
                }
            }
        }
        best
    }
}
