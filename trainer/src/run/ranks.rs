//! What the ranks of a data-parallel run agree on, through their c10d process group: that every
//! rank got through a stage (setup, the final writes), where the run stands, when to stop and, at
//! each phase end, that their weights are still bit-identical; and the one start they share
//! (rank 0's parameters and buffers). On one process every function here is a no-op.

use std::hash::{DefaultHasher, Hash, Hasher};

use ofa_dist::{ProcessGroup, BUCKET_BYTES};
use tch::{Device, Kind, Tensor};

use crate::error::TrainError;
use crate::step::Params;

/// A fingerprint of `net`'s trainable tensors: a hash of their values in registry order, laid out
/// as NCHW (so a channels-last training copy and the saved package give the same value). Ranks
/// whose fingerprints agree hold bit-identical weights.
pub fn weights_fingerprint(net: &impl Params) -> u64 {
    let mut h = DefaultHasher::new();
    let mut buf = Vec::new();
    for (spec, t) in net.params() {
        if !spec.role.trainable() {
            continue;
        }
        let t = t.to_device(Device::Cpu).contiguous();
        let n = t.numel();
        buf.resize(n * t.kind().elt_size_in_bytes(), 0);
        t.copy_data_u8(&mut buf, n);
        spec.name.hash(&mut h);
        buf.hash(&mut h);
    }
    h.finish()
}

/// `result` on this rank, once every rank has got this far (`stage`: what they were doing, as
/// "while setting up"): the first failing rank's error on
/// that rank, and [`TrainError::PeerFailed`] on the others (instead of each waiting at its next
/// collective for a rank that is gone).
pub(crate) fn all_ok<T>(
    group: Option<&ProcessGroup>,
    stage: &'static str,
    result: Result<T, TrainError>,
) -> Result<T, TrainError> {
    let Some(g) = group else { return result };
    let flags = match g.exchange(i64::from(result.is_err())) {
        Ok(f) => f,
        // this rank's own error first: the exchange failing after it (a peer gone, or the
        // group poisoned by the failed collective) says less
        Err(e) => return result.and(Err(e.into())),
    };
    match result {
        Err(e) => Err(e),
        Ok(v) => match flags.iter().position(|&f| f != 0) {
            Some(rank) => Err(TrainError::PeerFailed {
                rank,
                world: g.world(),
                stage,
            }),
            None => Ok(v),
        },
    }
}

/// Fail unless every rank passes the same `value` for `what`.
pub(crate) fn agree(
    group: Option<&ProcessGroup>,
    what: &'static str,
    value: u64,
) -> Result<(), TrainError> {
    let Some(g) = group else { return Ok(()) };
    match g.agree(what, value) {
        Err(ofa_dist::DistError::Disagree { what, values }) => {
            Err(TrainError::RanksDisagree { what, values })
        }
        r => Ok(r?),
    }
}

/// The layout of `net`'s gradient buckets (its trainable tensors in registry order, their shapes
/// and types), for [`agree`]: ranks that would reduce different layouts stop with an error
/// instead of summing unrelated numbers. Every trainable tensor's gradient is in the buckets:
/// the optimiser defines them all at its start and zeroes them, never drops them, so the
/// gradients reduced are exactly these tensors.
pub(crate) fn bucket_layout(net: &impl Params) -> u64 {
    let trainable: Vec<Tensor> = net
        .params()
        .iter()
        .filter(|(spec, _)| spec.role.trainable())
        .map(|(_, t)| t.shallow_clone())
        .collect();
    ofa_dist::bucket_layout(&trainable)
}

/// A hash of `parts` (for [`agree`]).
pub(crate) fn hash_of(parts: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

/// Overwrite `net`'s parameters and buffers on every rank with rank 0's (float tensors in
/// buckets; the int64 batch counters one by one).
pub(crate) fn broadcast_from_first(
    group: Option<&ProcessGroup>,
    net: &impl Params,
) -> Result<(), TrainError> {
    let Some(g) = group else { return Ok(()) };
    let (mut floats, others): (Vec<Tensor>, Vec<Tensor>) = net
        .params()
        .iter()
        .map(|(_, t)| t.shallow_clone())
        .partition(|t| t.kind() == Kind::Float);
    g.broadcast_in_buckets(&mut floats, 0, BUCKET_BYTES)?;
    for mut t in others {
        let mut host = t.to_device(Device::Cpu).contiguous();
        g.broadcast(&mut host, 0)?;
        tch::no_grad(|| t.copy_(&host));
    }
    Ok(())
}

/// The step's metrics averaged over the ranks, and whether any rank asked to stop: one small
/// all-reduce per step, so that every rank stops after the same step.
pub(crate) fn step_consensus(
    group: Option<&ProcessGroup>,
    loss: f64,
    top1: f64,
    stop: bool,
) -> Result<(f64, f64, bool), TrainError> {
    let Some(g) = group else {
        return Ok((loss, top1, stop));
    };
    let v = g.sum_f64(&[loss, top1, f64::from(u8::from(stop))])?;
    let w = g.world() as f64;
    Ok((v[0] / w, v[1] / w, v[2] > 0.0))
}

/// Whether any rank asked to stop.
pub(crate) fn any_stop(group: Option<&ProcessGroup>, stop: bool) -> Result<bool, TrainError> {
    let Some(g) = group else { return Ok(stop) };
    Ok(g.exchange(i64::from(stop))?.iter().any(|&f| f != 0))
}
