//! Latency lookup-table keys in the reference's style (`tutorial/latency_table.py` for
//! MobileNetV3, `ProxylessNASLatencyTable` for ProxylessNAS): one key per layer of a subnet, in
//! execution order. A table maps each key to a measured time; a subnet's
//! predicted latency is the sum over its keys.

use crate::arch::{ActiveBlock, ArchConfig};
use crate::resnet::{Bottleneck, ResNetStem};
use crate::space::{conv_out, Activation, Family, SearchSpace};

/// Which part of the network a key describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerKind {
    /// First conv.
    FirstConv,
    /// An MBConv block (block 0 included).
    Block,
    /// Final expand 1×1 conv (MobileNetV3).
    FinalExpand,
    /// Global average pool (MobileNetV3; ProxylessNAS keys it with the classifier).
    AvgPool,
    /// Feature mix 1×1 conv (after pooling in MobileNetV3, before it in ProxylessNAS).
    FeatureMix,
    /// Classifier (in ProxylessNAS and ResNet, pooling and classifier).
    Logits,
    /// ResNet's stem after its first conv: the residual conv, the third conv, the max-pool.
    Stem,
}

/// The lookup-table keys of `arch` at its resolution, in execution order. MobileNetV3: middle
/// widths in the keys are `round(cin · e)` (not rounded to a multiple of 8), as in the published
/// tables, and the first block is keyed with `expand` = its width, kernel 3 and its shortcut.
/// ProxylessNAS: `expand` is the ratio (1 for the first block), without `se`/`hs`.
pub fn layer_keys(space: &SearchSpace, arch: &ArchConfig) -> Vec<(LayerKind, String)> {
    if space.family == Family::ResNet {
        return resnet_layer_keys(space, arch);
    }
    let r = arch.r;
    let mut keys = Vec::with_capacity(26);
    keys.push((LayerKind::FirstConv, first_conv_key(space, r)));
    let mut f = conv_out(r, 2);
    for b in arch.active_blocks(space) {
        keys.push((LayerKind::Block, block_key(space, &b, f)));
        f = conv_out(f, b.spec.stride);
    }
    keys.extend(head_keys(space, f));
    keys
}

/// Key of the first conv at input resolution `r`.
pub fn first_conv_key(space: &SearchSpace, r: u32) -> String {
    let f = conv_out(r, 2);
    format!(
        "Conv-input:{r}x{r}x{}-output:{f}x{f}x{}",
        space.in_channels,
        space.stem_width()
    )
}

/// Key of one MBConv block (block 0 included) of `space` whose input is `f`×`f`.
pub fn block_key(space: &SearchSpace, b: &ActiveBlock, f: u32) -> String {
    let s = b.spec;
    let fo = conv_out(f, s.stride);
    let io = format!(
        "expanded_conv-input:{f}x{f}x{}-output:{fo}x{fo}x{}",
        s.in_ch, s.out_ch
    );
    match space.family {
        Family::MobileNetV3 => {
            let expand = if s.index == 0 {
                s.in_ch
            } else {
                b.e.times(s.in_ch) as u32
            };
            format!(
                "{io}-expand:{expand}-kernel:{}-stride:{}-idskip:{}-se:{}-hs:{}",
                b.ks,
                s.stride,
                u8::from(s.shortcut),
                u8::from(s.se),
                u8::from(s.act == Activation::HSwish),
            )
        }
        // (ResNet has no MBConv blocks: `layer_keys` keys its bottlenecks)
        Family::ProxylessNas | Family::ResNet => format!(
            "{io}-expand:{}-kernel:{}-stride:{}-idskip:{}",
            b.e,
            b.ks,
            s.stride,
            u8::from(s.shortcut)
        ),
    }
}

/// ResNet's keys (the reference has no ResNet table; these follow its style): the stem's convs
/// and max-pool, one key per bottleneck with its widths, stride and shortcut, then pooling and
/// the classifier.
fn resnet_layer_keys(space: &SearchSpace, arch: &ArchConfig) -> Vec<(LayerKind, String)> {
    let stem = arch.resnet_stem(space);
    let mut keys = resnet_stem_keys(space, arch.r, &stem);
    let (mut f, mut c) = (conv_out(conv_out(arch.r, 2), 2), stem.out);
    for b in arch.bottlenecks(space) {
        keys.push((LayerKind::Block, bottleneck_key(&b, f)));
        (f, c) = (conv_out(f, b.stride), b.out_ch);
    }
    keys.push((LayerKind::Logits, resnet_head_key(space, f, c)));
    keys
}

/// Keys of a ResNet's stem at input resolution `r`: its convs and the max-pool.
pub fn resnet_stem_keys(
    space: &SearchSpace,
    r: u32,
    stem: &ResNetStem,
) -> Vec<(LayerKind, String)> {
    let cin = space.in_channels;
    let (m, o) = (stem.mid, stem.out);
    let f = conv_out(r, 2);
    let mut keys = vec![(
        LayerKind::FirstConv,
        format!("Conv-input:{r}x{r}x{cin}-output:{f}x{f}x{m}"),
    )];
    if stem.middle {
        keys.push((
            LayerKind::Stem,
            format!("Conv_res-input:{f}x{f}x{m}-output:{f}x{f}x{m}"),
        ));
    }
    let g = conv_out(f, 2);
    keys.push((
        LayerKind::Stem,
        format!("Conv_stem-input:{f}x{f}x{m}-output:{f}x{f}x{o}"),
    ));
    keys.push((
        LayerKind::Stem,
        format!("MaxPool-input:{f}x{f}x{o}-output:{g}x{g}x{o}"),
    ));
    keys
}

/// Key of one ResNet bottleneck whose input is `f`×`f`.
pub fn bottleneck_key(b: &Bottleneck, f: u32) -> String {
    let fo = conv_out(f, b.stride);
    format!(
        "bottleneck-input:{f}x{f}x{}-output:{fo}x{fo}x{}-mid:{}-stride:{}-downsample:{}",
        b.in_ch,
        b.out_ch,
        b.mid,
        b.stride,
        u8::from(b.downsample)
    )
}

/// Key of a ResNet's pooling + classifier on an `f`×`f`×`c` map.
pub fn resnet_head_key(space: &SearchSpace, f: u32, c: u32) -> String {
    format!("Logits-input:{f}x{f}x{c}-output:{}", space.n_classes)
}

/// Archs at resolution `r` whose layers together have every key an arch of `space` can have.
/// MBConv families: for each (kernel, expand), every block active. ResNet: every block active
/// and, for each expand ratio and pair (a, b) of width choices, widths alternating a, b from the
/// stem's first conv on (so every pair of consecutive width positions takes both (a, b) and
/// (b, a)), with the stem's residual conv run and skipped.
pub fn covering_archs(space: &SearchSpace, r: u32) -> Vec<ArchConfig> {
    let n = space.n_elastic_blocks();
    let d = space.depth_list.iter().copied().max().unwrap_or(1);
    let mut out = Vec::new();
    if space.family == Family::ResNet {
        let lo = space.depth_list.iter().copied().min().unwrap_or(0);
        let widths = space.width_mult_list.len() as u32;
        for &e in &space.expand_ratio_list {
            for a in 0..widths {
                for b in 0..widths {
                    for stem in [d, lo] {
                        let w = (0..space.stages.len() + 2)
                            .map(|i| if i % 2 == 0 { a } else { b })
                            .collect();
                        let mut ds = vec![d; space.n_stages()];
                        ds[0] = stem;
                        out.push(ArchConfig {
                            ks: Vec::new(),
                            e: vec![e; n],
                            d: ds,
                            w,
                            r,
                        });
                    }
                }
            }
        }
        return out;
    }
    for &k in &space.ks_list {
        for &e in &space.expand_ratio_list {
            out.push(ArchConfig {
                ks: vec![k; n],
                e: vec![e; n],
                d: vec![d; space.n_stages()],
                w: Vec::new(),
                r,
            });
        }
    }
    out
}

/// Keys of the head after an `f`×`f` feature map: MobileNetV3's final expand, pool, feature mix
/// and classifier; ProxylessNAS's feature mix and pool + classifier.
pub fn head_keys(space: &SearchSpace, f: u32) -> Vec<(LayerKind, String)> {
    let last = space.stage_widths().last().copied().unwrap_or(0);
    let lc = space.last_channel();
    let nc = space.n_classes;
    match space.final_expand_width() {
        Some(fe) => vec![
            (
                LayerKind::FinalExpand,
                format!("Conv_1-input:{f}x{f}x{last}-output:{f}x{f}x{fe}"),
            ),
            (
                LayerKind::AvgPool,
                format!("AvgPool2D-input:{f}x{f}x{fe}-output:1x1x{fe}"),
            ),
            (
                LayerKind::FeatureMix,
                format!("Conv_2-input:1x1x{fe}-output:1x1x{lc}"),
            ),
            (
                LayerKind::Logits,
                format!("Logits-input:1x1x{lc}-output:{nc}"),
            ),
        ],
        None => vec![
            (
                LayerKind::FeatureMix,
                format!("Conv_1-input:{f}x{f}x{last}-output:{f}x{f}x{lc}"),
            ),
            (
                LayerKind::Logits,
                format!("Logits-input:{f}x{f}x{lc}-output:{nc}"),
            ),
        ],
    }
}
