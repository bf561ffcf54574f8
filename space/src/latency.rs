//! Latency lookup-table keys in the reference's style (`tutorial/latency_table.py`): one key per
//! layer of a subnet, in execution order. A table maps each key to a measured time; a subnet's
//! predicted latency is the sum over its keys.

use crate::arch::ArchConfig;
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
    let mut f = conv_out(r, 2);
    let stem = space.stem_width();
    keys.push((
        LayerKind::FirstConv,
        format!(
            "Conv-input:{r}x{r}x{}-output:{f}x{f}x{stem}",
            space.in_channels
        ),
    ));
    for b in arch.active_blocks(space) {
        let s = b.spec;
        let fo = conv_out(f, s.stride);
        let expand = if s.index == 0 { s.in_ch } else { s.in_ch * b.e };
        keys.push((
            LayerKind::Block,
            format!(
                "expanded_conv-input:{f}x{f}x{}-output:{fo}x{fo}x{}-expand:{expand}-kernel:{}-stride:{}-idskip:{}-se:{}-hs:{}",
                s.in_ch,
                s.out_ch,
                b.ks,
                s.stride,
                u8::from(s.shortcut),
                u8::from(s.se),
                u8::from(s.act == Activation::HSwish),
            ),
        ));
        f = fo;
    }
    let last = space.stage_widths().last().copied().unwrap_or(0);
    let (fe, lc) = (space.final_expand_width(), space.last_channel());
    keys.push((
        LayerKind::FinalExpand,
        format!("Conv_1-input:{f}x{f}x{last}-output:{f}x{f}x{fe}"),
    ));
    keys.push((
        LayerKind::AvgPool,
        format!("AvgPool2D-input:{f}x{f}x{fe}-output:1x1x{fe}"),
    ));
    keys.push((
        LayerKind::FeatureMix,
        format!("Conv_2-input:1x1x{fe}-output:1x1x{lc}"),
    ));
    keys.push((
        LayerKind::Logits,
        format!("Logits-input:1x1x{lc}-output:{}", space.n_classes),
    ));
    keys
}
