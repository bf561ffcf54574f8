//! Analytic MACs and parameter counts, equal to the reference's `count_net_flops` (convolutions,
//! SE convolutions and linear layers; no BN, activations, pooling or additions) and
//! `count_parameters` (every trainable parameter of the extracted subnet).

use crate::arch::{ActiveBlock, ArchConfig};
use crate::resnet::{Bottleneck, ResNetStem};
use crate::space::{conv_out, se_width, Family, SearchSpace};

/// Cost of one subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cost {
    /// Multiply-accumulates for one image.
    pub macs: u64,
    /// Trainable parameters.
    pub params: u64,
}

/// MACs and params of `arch` at its resolution `arch.r`. `arch` must be valid for `space`.
pub fn cost(space: &SearchSpace, arch: &ArchConfig) -> Cost {
    cost_at(space, arch, arch.r)
}

/// MACs and params of `arch` at resolution `r`.
pub fn cost_at(space: &SearchSpace, arch: &ArchConfig, r: u32) -> Cost {
    if space.family == Family::ResNet {
        return resnet_cost_at(space, arch, r);
    }
    let mut total = stem_cost(space, r);
    let mut f = conv_out(r, 2);
    for b in arch.active_blocks(space) {
        total += block_cost(space, &b, f);
        f = conv_out(f, b.spec.stride);
    }
    total + head_cost(space, f)
}

/// The first 3×3 stride-2 conv and its BN at input resolution `r`.
pub fn stem_cost(space: &SearchSpace, r: u32) -> Cost {
    let u = u64::from;
    let stem = u(space.stem_width());
    let cin = u(space.in_channels);
    let f = u(conv_out(r, 2));
    Cost {
        macs: cin * 9 * stem * f * f,
        params: cin * 9 * stem + 2 * stem,
    }
}

/// One MBConv block (block 0 included: it has no expansion conv) whose input is `f_in`×`f_in`.
pub fn block_cost(_space: &SearchSpace, b: &ActiveBlock, f_in: u32) -> Cost {
    let u = u64::from;
    let (ci, m, co, k) = (u(b.spec.in_ch), u(b.mid), u(b.spec.out_ch), u(b.ks));
    let fi = u(f_in) * u(f_in);
    let f = u(conv_out(f_in, b.spec.stride));
    let fo = f * f;
    let mut c = Cost { macs: 0, params: 0 };
    if b.spec.index > 0 {
        // inverted bottleneck 1×1 + BN
        c.macs += ci * m * fi;
        c.params += ci * m + 2 * m;
    }
    // depthwise k×k + BN
    c.macs += k * k * m * fo;
    c.params += k * k * m + 2 * m;
    if b.spec.se {
        let s = u(se_width(b.mid));
        c.macs += 2 * m * s;
        c.params += 2 * m * s + s + m;
    }
    // point linear 1×1 + BN
    c.macs += m * co * fo;
    c.params += m * co + 2 * co;
    c
}

/// The head on the `f`×`f` last feature map: MobileNetV3's final expand conv + BN, feature mix
/// and classifier, or ProxylessNAS's feature mix conv + BN and classifier.
pub fn head_cost(space: &SearchSpace, f: u32) -> Cost {
    let u = u64::from;
    let last_stage = u(*space.stage_widths().last().unwrap_or(&0));
    let lc = u(space.last_channel());
    let nc = u(space.n_classes);
    let ff = u(f) * u(f);
    let classifier = Cost {
        macs: lc * nc,
        params: lc * nc + nc,
    };
    match space.final_expand_width() {
        Some(fe) => {
            let fe = u(fe);
            Cost {
                macs: last_stage * fe * ff + fe * lc,
                params: last_stage * fe + 2 * fe + fe * lc,
            } + classifier
        }
        None => {
            Cost {
                macs: last_stage * lc * ff,
                params: last_stage * lc + 2 * lc,
            } + classifier
        }
    }
}

/// A ResNet arch: the stem's convs, the bottlenecks after the max-pool, the classifier.
fn resnet_cost_at(space: &SearchSpace, arch: &ArchConfig, r: u32) -> Cost {
    let stem = arch.resnet_stem(space);
    let mut total = resnet_stem_cost(space, r, &stem);
    let mut f = conv_out(conv_out(r, 2), 2);
    let mut last = stem.out;
    for b in arch.bottlenecks(space) {
        total += bottleneck_cost(&b, f);
        f = conv_out(f, b.stride);
        last = b.out_ch;
    }
    total + resnet_head_cost(space, last)
}

/// A ResNet's stem at input resolution `r`: its 3×3 convs with BN (the max-pool after them
/// counts nothing).
pub fn resnet_stem_cost(space: &SearchSpace, r: u32, stem: &ResNetStem) -> Cost {
    let u = u64::from;
    let f = conv_out(r, 2);
    let conv3 = |cin: u32, cout: u32| Cost {
        macs: 9 * u(cin) * u(cout) * u(f) * u(f),
        params: 9 * u(cin) * u(cout) + 2 * u(cout),
    };
    let mut c = conv3(space.in_channels, stem.mid) + conv3(stem.mid, stem.out);
    if stem.middle {
        c += conv3(stem.mid, stem.mid);
    }
    c
}

/// A ResNet's classifier on `c` pooled features (pooling counts nothing).
pub fn resnet_head_cost(space: &SearchSpace, c: u32) -> Cost {
    let (c, nc) = (u64::from(c), u64::from(space.n_classes));
    Cost {
        macs: c * nc,
        params: c * nc + nc,
    }
}

/// One ResNet bottleneck whose input is `f_in`×`f_in`: 1×1, 3×3 with the stride, 1×1, each with
/// BN, and the downsample shortcut's 1×1 conv + BN (its average pool is not counted).
pub fn bottleneck_cost(b: &Bottleneck, f_in: u32) -> Cost {
    let u = u64::from;
    let (ci, m, co) = (u(b.in_ch), u(b.mid), u(b.out_ch));
    let fi = u(f_in) * u(f_in);
    let f = u(conv_out(f_in, b.stride));
    let fo = f * f;
    let mut c = Cost {
        macs: ci * m * fi + 9 * m * m * fo + m * co * fo,
        params: ci * m + 9 * m * m + m * co + 4 * m + 2 * co,
    };
    if b.downsample {
        c.macs += ci * co * fo;
        c.params += ci * co + 2 * co;
    }
    c
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost {
            macs: self.macs + o.macs,
            params: self.params + o.params,
        }
    }
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        *self = *self + o;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reference_totals_w10() {
        // OFA-REFERENCE.md §4: largest w1.0 @224: 566.2M MACs, 7.66M params; smallest @128: 41.5M.
        let s = SearchSpace::preset("ofa-mbv3-w1.0").unwrap();
        let mut big = ArchConfig::largest(&s);
        big.r = 224;
        let c = cost(&s, &big);
        assert_eq!((c.macs as f64 / 1e5).round() / 10.0, 566.2);
        assert_eq!((c.params as f64 / 1e4).round() / 100.0, 7.66);
        let small = ArchConfig::smallest(&s);
        assert_eq!((cost(&s, &small).macs as f64 / 1e5).round() / 10.0, 41.5);
    }
}
