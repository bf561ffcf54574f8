//! Channel importance sorting shared by every family's `re_organize_middle_weights`: order a
//! layer's output channels by the L1 norm of the next layer's weights on them, keeping the
//! channels of larger expand ratios in their bands, and permute the tensors that hold them.

use tch::{Kind, Tensor};

use crate::layers::Bn;

/// Input channels of `next` (a conv weight) ordered by the L1 norm of their weights, descending
/// and stable, with the reference's band offsets for `stage` > 0.
pub(crate) fn sorted_by_importance(next: &Tensor, bands: &[i64], stage: usize) -> Tensor {
    let imp = next
        .abs()
        .sum_dim_intlist([0i64, 2, 3].as_slice(), false, Kind::Float);
    if stage > 0 {
        let mut right = imp.size()[0];
        let mut base = -(bands.len() as f64) * 1e5;
        for &left in bands.iter().take(stage + 1) {
            if right > left {
                let _ = imp.narrow(0, left, right - left).g_add_scalar_(base);
            }
            base += 1e5;
            right = left;
        }
    }
    imp.sort_stable(true, 0, true).1
}

pub(crate) fn permute(t: &Tensor, dim: i64, idx: &Tensor) {
    let sorted = t.index_select(dim, idx);
    t.shallow_clone().copy_(&sorted);
}

pub(crate) fn permute_bn(bn: &Bn, idx: &Tensor) {
    for t in [&bn.weight, &bn.bias, &bn.running_mean, &bn.running_var] {
        permute(t, 0, idx);
    }
}
