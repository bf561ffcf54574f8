//! BatchNorm recalibration with the reference semantics (`set_running_statistics`).

use tch::Tensor;

use crate::error::{Result, SupernetError};
use crate::layers::BnMode;
use crate::subnet::Subnet;

/// Recompute every BN layer's running statistics of `net` from `batches`: each batch is
/// normalised with its own mean and biased variance, and the per-batch statistics are averaged
/// (weighted by batch size) into `running_mean` / `running_var`. On a supernet view this writes
/// the first C entries of the supernet's buffers, exactly like the reference. Returns the number
/// of images used.
pub fn recalibrate_bn<I>(net: &Subnet, batches: I) -> Result<i64>
where
    I: IntoIterator<Item = Tensor>,
{
    let bns = net.bns();
    let mut sums: Vec<Option<(Tensor, Tensor)>> = (0..bns.len()).map(|_| None).collect();
    let mut count = 0i64;
    tch::no_grad(|| -> Result<()> {
        for x in batches {
            net.check_input(&x)?;
            let x = x.to_device(net.device());
            let n = x.size()[0];
            let mut rec = Vec::with_capacity(bns.len());
            let _ = net.forward_bn(&x, &mut BnMode::Record(&mut rec));
            for (slot, (m, v)) in sums.iter_mut().zip(rec) {
                let (m, v) = (m * n as f64, v * n as f64);
                *slot = Some(match slot.take() {
                    None => (m, v),
                    Some((sm, sv)) => (sm + m, sv + v),
                });
            }
            count += n;
        }
        Ok(())
    })?;
    if count == 0 {
        return Err(SupernetError::BadInput(
            "BN recalibration got no images".into(),
        ));
    }
    tch::no_grad(|| {
        for (bn, s) in bns.iter().zip(sums) {
            if let Some((sm, sv)) = s {
                bn.running_mean.shallow_clone().copy_(&(sm / count as f64));
                bn.running_var.shallow_clone().copy_(&(sv / count as f64));
            }
        }
    });
    Ok(count)
}
