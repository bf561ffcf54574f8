//! Latency lookup-table keys in the reference's style (`tutorial/latency_table.py`): one key per
//! layer of a subnet, in execution order. A table maps each key to a measured time; a subnet's
//! predicted latency is the sum over its keys.

use crate::arch::{ActiveBlock, ArchConfig};
use crate::space::{conv_out, Activation, SearchSpace};

/// Which part of the network a key describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerKind {
    /// First conv.
    FirstConv,
    /// An MBConv block (block 0 included).
    Block,
    /// Final expand 1×1 conv.
    FinalExpand,
    /// Global average pool.
    AvgPool,
    /// Feature mix 1×1 conv.
    FeatureMix,
    /// Classifier.
    Logits,
}

/// The lookup-table keys of `arch` at its resolution, in execution order. Middle widths in the
/// keys are `round(cin · e)` (not rounded to a multiple of 8), as in the published tables; the
/// first block is keyed with `expand` = its width, kernel 3 and its shortcut.
pub fn layer_keys(space: &SearchSpace, arch: &ArchConfig) -> Vec<(LayerKind, String)> {
    let r = arch.r;
    let mut keys = Vec::with_capacity(26);
    keys.push((LayerKind::FirstConv, first_conv_key(space, r)));
    let mut f = conv_out(r, 2);
    for b in arch.active_blocks(space) {
        keys.push((LayerKind::Block, block_key(&b, f)));
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

/// Key of one MBConv block (block 0 included) whose input is `f`×`f`.
pub fn block_key(b: &ActiveBlock, f: u32) -> String {
    let s = b.spec;
    let fo = conv_out(f, s.stride);
    let expand = if s.index == 0 { s.in_ch } else { s.in_ch * b.e };
    format!(
        "expanded_conv-input:{f}x{f}x{}-output:{fo}x{fo}x{}-expand:{expand}-kernel:{}-stride:{}-idskip:{}-se:{}-hs:{}",
        s.in_ch,
        s.out_ch,
        b.ks,
        s.stride,
        u8::from(s.shortcut),
        u8::from(s.se),
        u8::from(s.act == Activation::HSwish),
    )
}

/// Keys of the head (final expand, pool, feature mix, classifier) after an `f`×`f` feature map.
pub fn head_keys(space: &SearchSpace, f: u32) -> [(LayerKind, String); 4] {
    let last = space.stage_widths().last().copied().unwrap_or(0);
    let (fe, lc) = (space.final_expand_width(), space.last_channel());
    [
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
            format!("Logits-input:1x1x{lc}-output:{}", space.n_classes),
        ),
    ]
}
