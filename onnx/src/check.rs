//! Exported models run by tract, an independent pure-Rust ONNX runtime (feature `check`): the
//! tests' witness that a file computes what the subnet computes.

use tract_onnx::prelude::*;

/// tract's output for the float input `x` (`[N, C, H, W]`) through the ONNX model `onnx`, as a
/// flat vector. Errors are tract's, as text.
pub fn tract_logits(onnx: &[u8], x: &tch::Tensor) -> Result<Vec<f32>, String> {
    let shape: Vec<usize> = x.size().iter().map(|&d| d as usize).collect();
    let data = Vec::<f32>::try_from(x.contiguous().flatten(0, -1)).map_err(|e| e.to_string())?;
    let run = || -> TractResult<Vec<f32>> {
        let plan = tract_onnx::onnx()
            .model_for_read(&mut &onnx[..])?
            .with_input_fact(0, f32::fact(&shape).into())?
            .into_optimized()?
            .into_runnable()?;
        let input = tract_ndarray::ArrayD::from_shape_vec(shape.clone(), data.clone())?;
        let out = plan.run(tvec!(TValue::from(Tensor::from(input))))?;
        Ok(out[0]
            .to_plain_array_view::<f32>()?
            .iter()
            .copied()
            .collect())
    };
    run().map_err(|e| format!("{e:?}"))
}

/// The largest `|a − b| / (1 + |b|)` (the fixtures' tolerance measure).
pub fn max_rel_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "outputs of different sizes");
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from((x - y).abs()) / (1.0 + f64::from(y.abs())))
        .fold(0.0, f64::max)
}
