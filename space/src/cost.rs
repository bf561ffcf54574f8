//! Analytic MACs and parameter counts, equal to the reference's `count_net_flops` (convolutions,
//! SE convolutions and linear layers; no BN, activations, pooling or additions) and
//! `count_parameters` (every trainable parameter of the extracted subnet).

use crate::arch::ArchConfig;
use crate::space::{conv_out, se_width, SearchSpace};

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
    let u = u64::from;
    let mut macs = 0u64;
    let mut params = 0u64;
    // first conv 3×3 stride 2, BN.
    let stem = u(space.stem_width());
    let cin = u(space.in_channels);
    let mut f = conv_out(r, 2);
    macs += cin * 9 * stem * u(f * f);
    params += cin * 9 * stem + 2 * stem;
    for b in arch.active_blocks(space) {
        let (ci, m, co, k) = (u(b.spec.in_ch), u(b.mid), u(b.spec.out_ch), u(b.ks));
        let f_in = u(f * f);
        f = conv_out(f, b.spec.stride);
        let f_out = u(f * f);
        if b.spec.index > 0 {
            // inverted bottleneck 1×1 + BN
            macs += ci * m * f_in;
            params += ci * m + 2 * m;
        }
        // depthwise k×k + BN
        macs += k * k * m * f_out;
        params += k * k * m + 2 * m;
        if b.spec.se {
            let s = u(se_width(b.mid));
            macs += 2 * m * s;
            params += 2 * m * s + s + m;
        }
        // point linear 1×1 + BN
        macs += m * co * f_out;
        params += m * co + 2 * co;
    }
    let last_stage = u(*space.stage_widths().last().unwrap_or(&0));
    let fe = u(space.final_expand_width());
    let lc = u(space.last_channel());
    let nc = u(space.n_classes);
    macs += last_stage * fe * u(f * f);
    params += last_stage * fe + 2 * fe;
    macs += fe * lc;
    params += fe * lc;
    macs += lc * nc;
    params += lc * nc + nc;
    Cost { macs, params }
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
