//! Latency lookup-table keys in the reference's style (`tutorial/latency_table.py` for
//! MobileNetV3, `ProxylessNASLatencyTable` for ProxylessNAS): one key per layer of a subnet, in
//! execution order. A table maps each key to a measured time; a subnet's
//! predicted latency is the sum over its keys.

use crate::arch::{ActiveBlock, ArchConfig};
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
    /// Classifier (in ProxylessNAS, pooling and classifier).
    Logits,
}

/// The lookup-table keys of `arch` at its resolution, in execution order. MobileNetV3: middle
/// widths in the keys are `round(cin · e)` (not rounded to a multiple of 8), as in the published
/// tables, and the first block is keyed with `expand` = its width, kernel 3 and its shortcut.
/// ProxylessNAS: `expand` is the ratio (1 for the first block), without `se`/`hs`.
pub fn layer_keys(space: &SearchSpace, arch: &ArchConfig) -> Vec<(LayerKind, String)> {
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
            let expand = if s.index == 0 { s.in_ch } else { s.in_ch * b.e };
            format!(
                "{io}-expand:{expand}-kernel:{}-stride:{}-idskip:{}-se:{}-hs:{}",
                b.ks,
                s.stride,
                u8::from(s.shortcut),
                u8::from(s.se),
                u8::from(s.act == Activation::HSwish),
            )
        }
        Family::ProxylessNas => format!(
            "{io}-expand:{}-kernel:{}-stride:{}-idskip:{}",
            b.e,
            b.ks,
            s.stride,
            u8::from(s.shortcut)
        ),
    }
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
