//! ONNX export of a cut subnet: the eval-mode graph [`Subnet::forward_bn`] runs, written with the
//! ONNX protobuf messages of `onnx-protobuf`.
//!
//! The graph: input `input` `[N, C, R, R]` float32 (N dynamic), output `logits` `[N, classes]`.
//! Conv (depthwise as `group = C`), BatchNormalization (or folded into the preceding Conv),
//! Relu, Clip (ReLU6, bounds as initialisers), HardSwish (opset ≥ 14), HardSigmoid with PyTorch's alpha = 1/6, beta = 0.5 (ONNX's
//! default alpha is 0.2), GlobalAveragePool, Mul for squeeze-excite, Add for residuals, Flatten,
//! Gemm. Initialisers carry the reference subnet's tensor names.

use std::collections::BTreeMap;

#[cfg(feature = "check")]
pub mod check;
pub mod runtime;

use ofa_space::Activation;
use ofa_supernet::layers::{BlockRun, BlockWeights, Bn, Head, Se};
use ofa_supernet::{BottleneckWeights, ConvBn, NetLayers, ResNetNet, Subnet};
use onnx_protobuf as pb;
use protobuf::Message;
use tch::{Device, Kind, Tensor};

/// The opset written unless asked otherwise.
pub const DEFAULT_OPSET: i64 = 17;
/// The lowest opset with HardSwish.
pub const MIN_OPSET: i64 = 14;
/// The highest opset written (every op used is unchanged up to it).
pub const MAX_OPSET: i64 = 21;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// An opset outside [`MIN_OPSET`]..=[`MAX_OPSET`].
    #[error("opset {0} is not written: HardSwish needs opset {MIN_OPSET}, and opsets up to {MAX_OPSET} are supported")]
    Opset(i64),
    /// A resolution the network cannot take.
    #[error("resolution {0} is not a positive image size")]
    Resolution(u32),
    /// libtorch failed reading the weights.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// The protobuf encoder failed.
    #[error("encoding the ONNX model: {0}")]
    Encode(String),
    /// ONNX Runtime is missing, cannot be loaded, or failed on a model.
    #[error("{0}")]
    Runtime(String),
}

/// How to export.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportOptions {
    /// ONNX opset (default [`DEFAULT_OPSET`]).
    pub opset: i64,
    /// Fold every BatchNormalization into the Conv before it.
    pub fold_bn: bool,
    /// Input resolution R of `[N, C, R, R]`.
    pub resolution: u32,
    /// Model metadata (`metadata_props`), e.g. arch, space, source supernet.
    pub metadata: BTreeMap<String, String>,
}

/// The subnet-file metadata an export carries over (JSON, as in subnet files).
pub const METADATA_KEYS: [&str; 3] = ["arch", "space", "source_supernet"];

impl ExportOptions {
    /// Opset 17, BN kept, no metadata.
    pub fn new(resolution: u32) -> ExportOptions {
        ExportOptions {
            opset: DEFAULT_OPSET,
            fold_bn: false,
            resolution,
            metadata: BTreeMap::new(),
        }
    }

    /// With the [`METADATA_KEYS`] found in `meta` (a subnet file's metadata).
    pub fn with_metadata_from(mut self, meta: &BTreeMap<String, String>) -> ExportOptions {
        for k in METADATA_KEYS {
            if let Some(v) = meta.get(k) {
                self.metadata.insert(k.to_string(), v.clone());
            }
        }
        self
    }
}

/// The IR version that goes with `opset` (ONNX's table: opset 14–18 → IR 8, 19–20 → 9, 21 → 10).
pub fn ir_version(opset: i64) -> i64 {
    match opset {
        ..=18 => 8,
        19 | 20 => 9,
        _ => 10,
    }
}

/// `sub` as an ONNX model, serialised.
pub fn export(sub: &Subnet, o: &ExportOptions) -> Result<Vec<u8>, OnnxError> {
    model(sub, o)?
        .write_to_bytes()
        .map_err(|e| OnnxError::Encode(e.to_string()))
}

/// `sub` as an ONNX model.
pub fn model(sub: &Subnet, o: &ExportOptions) -> Result<pb::ModelProto, OnnxError> {
    if !(MIN_OPSET..=MAX_OPSET).contains(&o.opset) {
        return Err(OnnxError::Opset(o.opset));
    }
    if o.resolution == 0 {
        return Err(OnnxError::Resolution(o.resolution));
    }
    let cfg = sub.config();
    let mut g = Graph {
        nodes: Vec::new(),
        inits: Vec::new(),
        fold_bn: o.fold_bn,
        eps: cfg.bn_eps,
    };
    let mut h = "input".to_string();
    for step in 0..n_steps(sub) {
        h = g.step(sub, step, &h)?;
    }
    let r = i64::from(o.resolution);
    let mut graph = pb::GraphProto::new();
    graph.name = "ofa_subnet".into();
    graph.node = g.nodes;
    graph.initializer = g.inits;
    graph.input = vec![value_info(
        "input",
        &[None, Some(i64::from(cfg.in_channels)), Some(r), Some(r)],
    )];
    graph.output = vec![value_info(&h, &[None, Some(i64::from(cfg.n_classes))])];
    Ok(wrap(graph, o))
}

/// The steps of `Subnet::eval_steps`, one per latency-table key. MBConv families: the first
/// conv, each block, and the head's (MobileNetV3: final expand, pooling, feature mix,
/// classifier; ProxylessNAS: feature mix, pooling + classifier). ResNet: the stem's convs, the
/// max-pool, each bottleneck, pooling + classifier.
fn n_steps(sub: &Subnet) -> usize {
    match sub.layers() {
        NetLayers::MbConv { blocks, head, .. } => {
            1 + blocks.len() + if head.post_pool.is_some() { 4 } else { 2 }
        }
        NetLayers::ResNet(r) => r.stem.len() + 1 + r.blocks.len() + 1,
    }
}

/// One layer's model: its input shape at batch 1, and the serialised ONNX model.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerModel {
    /// The input shape, `[1, …]`.
    pub input_shape: Vec<i64>,
    /// The model.
    pub bytes: Vec<u8>,
}

/// One ONNX model per step of `Subnet::eval_steps` (one per latency-table key, in execution
/// order), each taking the step's input at batch 1. The shapes are
/// those of `sub`'s eval forward at resolution `o.resolution`. A runtime's per-layer table is
/// timed on these (`ofa profile --runtime onnxruntime`).
pub fn layer_models(sub: &Subnet, o: &ExportOptions) -> Result<Vec<LayerModel>, OnnxError> {
    if !(MIN_OPSET..=MAX_OPSET).contains(&o.opset) {
        return Err(OnnxError::Opset(o.opset));
    }
    if o.resolution == 0 {
        return Err(OnnxError::Resolution(o.resolution));
    }
    let cfg = sub.config();
    let r = i64::from(o.resolution);
    // the shapes between steps, from the eval forward itself
    let mut x = tch::Tensor::zeros(
        [1, i64::from(cfg.in_channels), r, r],
        (tch::Kind::Float, sub.device()),
    );
    let mut out = Vec::new();
    let steps = sub.eval_steps();
    for (i, step) in steps.iter().enumerate() {
        let shape_in = x.size();
        let y = tch::no_grad(|| step(&x));
        let mut g = Graph {
            nodes: Vec::new(),
            inits: Vec::new(),
            fold_bn: o.fold_bn,
            eps: cfg.bn_eps,
        };
        let h = g.step(sub, i, "input")?;
        let mut graph = pb::GraphProto::new();
        graph.name = format!("ofa_subnet_step_{i}");
        graph.node = g.nodes;
        graph.initializer = g.inits;
        let dims = |s: &[i64]| s.iter().map(|d| Some(*d)).collect::<Vec<_>>();
        graph.input = vec![value_info("input", &dims(&shape_in))];
        graph.output = vec![value_info(&h, &dims(&y.size()))];
        let bytes = wrap(graph, o)
            .write_to_bytes()
            .map_err(|e| OnnxError::Encode(e.to_string()))?;
        out.push(LayerModel {
            input_shape: shape_in,
            bytes,
        });
        x = y;
    }
    Ok(out)
}

/// `graph` as a model of opset `o.opset` with `o.metadata`.
fn wrap(graph: pb::GraphProto, o: &ExportOptions) -> pb::ModelProto {
    let mut m = pb::ModelProto::new();
    m.ir_version = ir_version(o.opset);
    m.producer_name = "ofa".into();
    m.producer_version = env!("CARGO_PKG_VERSION").into();
    m.doc_string = "An Once-for-All MobileNetV3 subnet, exported by ofa".into();
    let mut opset = pb::OperatorSetIdProto::new();
    opset.domain = String::new();
    opset.version = o.opset;
    m.opset_import = vec![opset];
    m.metadata_props = o
        .metadata
        .iter()
        .map(|(k, v)| {
            let mut e = pb::StringStringEntryProto::new();
            e.key = k.clone();
            e.value = v.clone();
            e
        })
        .collect();
    m.graph = protobuf::MessageField::some(graph);
    m
}

/// The initialisers holding ReLU6's bounds (`Clip`'s `min` and `max` inputs).
const RELU6_MIN: &str = "relu6.min";
const RELU6_MAX: &str = "relu6.max";

struct Graph {
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
    fold_bn: bool,
    eps: f64,
}

impl Graph {
    /// Step `i` of the eval forward (see [`n_steps`]) on `x`; returns its output's name.
    fn step(&mut self, sub: &Subnet, i: usize, x: &str) -> Result<String, OnnxError> {
        let (stem, blocks, head) = match sub.layers() {
            NetLayers::MbConv { stem, blocks, head } => (stem, blocks, head),
            NetLayers::ResNet(r) => return self.resnet_step(r, i, x),
        };
        let x = x.to_string();
        let n = blocks.len();
        Ok(match i {
            0 => {
                let h = self.conv_bn(&x, "first_conv", &stem.conv, 2, 1, &stem.bn)?;
                self.act(&h, stem.act)?
            }
            i if i <= n => {
                let (run, w) = &blocks[i - 1];
                self.block(&x, &format!("blocks.{}", i - 1), *run, w)?
            }
            i if i == n + 1 => {
                // MobileNetV3's final expand, ProxylessNAS's feature mix: conv, BN, act
                let name = if head.post_pool.is_some() {
                    "final_expand_layer"
                } else {
                    "feature_mix_layer"
                };
                let h = self.conv_bn(&x, name, &head.pre_pool, 1, 1, &head.pre_pool_bn)?;
                self.act(&h, head.act)?
            }
            i if i == n + 2 && head.post_pool.is_some() => {
                self.op("GlobalAveragePool", vec![x], vec![])
            }
            i if i == n + 2 => {
                let h = self.op("GlobalAveragePool", vec![x], vec![]);
                let h = self.op("Flatten", vec![h], vec![int("axis", 1)]);
                self.classifier(h, head)?
            }
            i if i == n + 3 => {
                let fm = head.post_pool.as_ref().ok_or_else(|| {
                    OnnxError::Encode("a feature mix after pooling in a head without one".into())
                })?;
                let w = self.init("feature_mix_layer.conv.weight", fm)?;
                let h = self.op("Conv", vec![x, w], conv_attrs(fm, 1, 1));
                let h = self.act(&h, head.act)?;
                self.op("Flatten", vec![h], vec![int("axis", 1)])
            }
            _ => self.classifier(x, head)?,
        })
    }

    /// Step `i` of a ResNet's eval forward: a stem conv (+ BN, ReLU, and the identity for the
    /// residual one), the max-pool, a bottleneck, or pooling + classifier.
    fn resnet_step(&mut self, r: &ResNetNet, i: usize, x: &str) -> Result<String, OnnxError> {
        let (n_stem, n) = (r.stem.len(), r.blocks.len());
        let x = x.to_string();
        Ok(match i {
            i if i < n_stem => {
                let residual = r.stem_middle && i == 1;
                let prefix = if residual {
                    "input_stem.1.conv".to_string()
                } else {
                    format!("input_stem.{i}")
                };
                let l = &r.stem[i];
                let stride = if i == 0 { 2 } else { 1 };
                let h = self.conv_bn(&x, &prefix, &l.conv, stride, 1, &l.bn)?;
                let h = self.op("Relu", vec![h], vec![]);
                if residual {
                    self.op("Add", vec![h, x], vec![])
                } else {
                    h
                }
            }
            i if i == n_stem => self.op(
                "MaxPool",
                vec![x],
                vec![
                    ints("kernel_shape", &[3, 3]),
                    ints("strides", &[2, 2]),
                    ints("pads", &[1, 1, 1, 1]),
                ],
            ),
            i if i <= n_stem + n => {
                let j = i - n_stem - 1;
                let (stride, w) = &r.blocks[j];
                self.bottleneck(&x, &format!("blocks.{j}"), *stride, w)?
            }
            _ => {
                let h = self.op("GlobalAveragePool", vec![x], vec![]);
                let h = self.op("Flatten", vec![h], vec![int("axis", 1)]);
                self.gemm_logits(h, &r.classifier_weight, &r.classifier_bias)?
            }
        })
    }

    /// A ResNet bottleneck: the shortcut (average pool with `ceil_mode` as the reference's
    /// `AvgPool2d(ceil_mode=True)`, 1×1 conv, BN) or the identity, added to conv1 → conv2 →
    /// conv3, then ReLU.
    fn bottleneck(
        &mut self,
        x: &str,
        prefix: &str,
        stride: i64,
        w: &BottleneckWeights,
    ) -> Result<String, OnnxError> {
        let residual = match &w.downsample {
            Some(ds) => {
                let pooled = if stride > 1 {
                    self.op(
                        "AveragePool",
                        vec![x.to_string()],
                        vec![
                            ints("kernel_shape", &[stride, stride]),
                            ints("strides", &[stride, stride]),
                            int("ceil_mode", 1),
                        ],
                    )
                } else {
                    x.to_string()
                };
                self.conv_bn_layer(&pooled, &format!("{prefix}.downsample"), ds, 1)?
            }
            None => x.to_string(),
        };
        let h = self.conv_bn_layer(x, &format!("{prefix}.conv1"), &w.conv1, 1)?;
        let h = self.op("Relu", vec![h], vec![]);
        let h = self.conv_bn_layer(&h, &format!("{prefix}.conv2"), &w.conv2, stride)?;
        let h = self.op("Relu", vec![h], vec![]);
        let h = self.conv_bn_layer(&h, &format!("{prefix}.conv3"), &w.conv3, 1)?;
        let h = self.op("Add", vec![h, residual], vec![]);
        Ok(self.op("Relu", vec![h], vec![]))
    }

    fn conv_bn_layer(
        &mut self,
        x: &str,
        prefix: &str,
        l: &ConvBn,
        stride: i64,
    ) -> Result<String, OnnxError> {
        self.conv_bn(x, prefix, &l.conv, stride, 1, &l.bn)
    }

    /// The classifier, whose output is the graph's `logits`.
    fn classifier(&mut self, x: String, head: &Head) -> Result<String, OnnxError> {
        self.gemm_logits(x, &head.classifier_weight, &head.classifier_bias)
    }

    /// `x · wᵀ + b` as the graph's `logits`.
    fn gemm_logits(&mut self, x: String, w: &Tensor, b: &Tensor) -> Result<String, OnnxError> {
        let w = self.init("classifier.linear.weight", w)?;
        let b = self.init("classifier.linear.bias", b)?;
        Ok(self.op_to(
            "Gemm",
            vec![x, w, b],
            vec![int("transB", 1)],
            "logits".into(),
        ))
    }

    /// A node `op` on `inputs`; returns its output's name (unique: the node's index).
    fn op(&mut self, op: &str, inputs: Vec<String>, attribute: Vec<pb::AttributeProto>) -> String {
        let out = format!("{}_{}", op.to_lowercase(), self.nodes.len());
        self.op_to(op, inputs, attribute, out)
    }

    /// A node `op` on `inputs` writing `out`; returns `out`.
    fn op_to(
        &mut self,
        op: &str,
        inputs: Vec<String>,
        attribute: Vec<pb::AttributeProto>,
        out: String,
    ) -> String {
        let i = self.nodes.len();
        let mut n = pb::NodeProto::new();
        n.name = format!("{op}_{i}");
        n.op_type = op.into();
        n.input = inputs;
        n.output = vec![out.clone()];
        n.attribute = attribute;
        self.nodes.push(n);
        out
    }

    /// An initialiser named `name` holding `t` as float32; returns the name.
    fn init(&mut self, name: &str, t: &Tensor) -> Result<String, OnnxError> {
        self.inits.push(float_tensor(name, t)?);
        Ok(name.to_string())
    }

    /// Conv (no bias) then BN, or the two folded into one biased Conv.
    fn conv_bn(
        &mut self,
        x: &str,
        prefix: &str,
        w: &Tensor,
        stride: i64,
        groups: i64,
        bn: &Bn,
    ) -> Result<String, OnnxError> {
        let attrs = conv_attrs(w, stride, groups);
        if self.fold_bn {
            let (wf, bf) = fold(w, bn, self.eps);
            let wn = self.init(&format!("{prefix}.conv.weight"), &wf)?;
            let bname = self.init(&format!("{prefix}.conv.bias"), &bf)?;
            return Ok(self.op("Conv", vec![x.to_string(), wn, bname], attrs));
        }
        let wn = self.init(&format!("{prefix}.conv.weight"), w)?;
        let h = self.op("Conv", vec![x.to_string(), wn], attrs);
        let names = [
            ("weight", &bn.weight),
            ("bias", &bn.bias),
            ("running_mean", &bn.running_mean),
            ("running_var", &bn.running_var),
        ];
        let mut inputs = vec![h];
        for (n, t) in names {
            inputs.push(self.init(&format!("{prefix}.bn.{n}"), t)?);
        }
        Ok(self.op(
            "BatchNormalization",
            inputs,
            vec![float("epsilon", self.eps as f32)],
        ))
    }

    fn act(&mut self, x: &str, a: Activation) -> Result<String, OnnxError> {
        Ok(match a {
            Activation::Relu => self.op("Relu", vec![x.to_string()], vec![]),
            Activation::Relu6 => {
                // Clip's bounds are inputs from opset 11; one pair of scalars serves the graph
                if !self.inits.iter().any(|t| t.name == RELU6_MIN) {
                    self.init(RELU6_MIN, &Tensor::from(0f32))?;
                    self.init(RELU6_MAX, &Tensor::from(6f32))?;
                }
                let inputs = vec![x.to_string(), RELU6_MIN.into(), RELU6_MAX.into()];
                self.op("Clip", inputs, vec![])
            }
            Activation::HSwish => self.op("HardSwish", vec![x.to_string()], vec![]),
        })
    }

    fn se(&mut self, x: &str, prefix: &str, se: &Se) -> Result<String, OnnxError> {
        let pooled = self.op("GlobalAveragePool", vec![x.to_string()], vec![]);
        let w = self.init(&format!("{prefix}.fc.reduce.weight"), &se.reduce_weight)?;
        let b = self.init(&format!("{prefix}.fc.reduce.bias"), &se.reduce_bias)?;
        let h = self.op(
            "Conv",
            vec![pooled, w, b],
            conv_attrs(&se.reduce_weight, 1, 1),
        );
        let h = self.op("Relu", vec![h], vec![]);
        let w = self.init(&format!("{prefix}.fc.expand.weight"), &se.expand_weight)?;
        let b = self.init(&format!("{prefix}.fc.expand.bias"), &se.expand_bias)?;
        let h = self.op("Conv", vec![h, w, b], conv_attrs(&se.expand_weight, 1, 1));
        // PyTorch's hardsigmoid: relu6(x + 3) / 6
        let gate = self.op(
            "HardSigmoid",
            vec![h],
            vec![float("alpha", 1.0 / 6.0), float("beta", 0.5)],
        );
        Ok(self.op("Mul", vec![x.to_string(), gate], vec![]))
    }

    fn block(
        &mut self,
        x: &str,
        prefix: &str,
        run: BlockRun,
        w: &BlockWeights,
    ) -> Result<String, OnnxError> {
        let mut h = x.to_string();
        if let Some((conv, bn)) = &w.inverted_bottleneck {
            h = self.conv_bn(
                &h,
                &format!("{prefix}.conv.inverted_bottleneck"),
                conv,
                1,
                1,
                bn,
            )?;
            h = self.act(&h, run.act)?;
        }
        let m = w.depth_conv.size()[0];
        h = self.conv_bn(
            &h,
            &format!("{prefix}.conv.depth_conv"),
            &w.depth_conv,
            run.stride,
            m,
            &w.depth_bn,
        )?;
        h = self.act(&h, run.act)?;
        if let Some(se) = &w.se {
            h = self.se(&h, &format!("{prefix}.conv.depth_conv.se"), se)?;
        }
        h = self.conv_bn(
            &h,
            &format!("{prefix}.conv.point_linear"),
            &w.point_linear,
            1,
            1,
            &w.point_bn,
        )?;
        if run.shortcut {
            h = self.op("Add", vec![h, x.to_string()], vec![]);
        }
        Ok(h)
    }
}

/// `w` and BN folded: `w · γ/√(σ²+ε)` per output channel and bias `β − μ·γ/√(σ²+ε)`, computed
/// in float64.
fn fold(w: &Tensor, bn: &Bn, eps: f64) -> (Tensor, Tensor) {
    tch::no_grad(|| {
        let d = |t: &Tensor| t.to_device(Device::Cpu).to_kind(Kind::Double);
        let scale = d(&bn.weight) / (d(&bn.running_var) + eps).sqrt();
        let wf = d(w) * scale.view([-1, 1, 1, 1]);
        let bf = d(&bn.bias) - d(&bn.running_mean) * &scale;
        (wf.to_kind(Kind::Float), bf.to_kind(Kind::Float))
    })
}

fn conv_attrs(w: &Tensor, stride: i64, groups: i64) -> Vec<pb::AttributeProto> {
    let k = w.size()[2];
    let p = k / 2;
    vec![
        ints("kernel_shape", &[k, k]),
        ints("strides", &[stride, stride]),
        ints("pads", &[p, p, p, p]),
        ints("dilations", &[1, 1]),
        int("group", groups),
    ]
}

fn attr(name: &str, t: pb::attribute_proto::AttributeType) -> pb::AttributeProto {
    let mut a = pb::AttributeProto::new();
    a.name = name.into();
    a.type_ = protobuf::EnumOrUnknown::new(t);
    a
}

fn int(name: &str, v: i64) -> pb::AttributeProto {
    let mut a = attr(name, pb::attribute_proto::AttributeType::INT);
    a.i = v;
    a
}

fn ints(name: &str, v: &[i64]) -> pb::AttributeProto {
    let mut a = attr(name, pb::attribute_proto::AttributeType::INTS);
    a.ints = v.to_vec();
    a
}

fn float(name: &str, v: f32) -> pb::AttributeProto {
    let mut a = attr(name, pb::attribute_proto::AttributeType::FLOAT);
    a.f = v;
    a
}

/// A float32 initialiser (little-endian `raw_data`) of `t`, whatever its layout or device.
fn float_tensor(name: &str, t: &Tensor) -> Result<pb::TensorProto, OnnxError> {
    let t = t
        .detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous();
    let values = Vec::<f32>::try_from(t.flatten(0, -1))?;
    let mut p = pb::TensorProto::new();
    p.name = name.into();
    p.dims = t.size();
    p.data_type = pb::tensor_proto::DataType::FLOAT as i32;
    p.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    Ok(p)
}

/// A float32 value of `dims` (`None`: the dynamic batch dimension `N`).
fn value_info(name: &str, dims: &[Option<i64>]) -> pb::ValueInfoProto {
    let mut shape = pb::TensorShapeProto::new();
    shape.dim = dims
        .iter()
        .map(|d| {
            let mut dim = pb::tensor_shape_proto::Dimension::new();
            match d {
                Some(v) => dim.set_dim_value(*v),
                None => dim.set_dim_param("N".into()),
            }
            dim
        })
        .collect();
    let mut tt = pb::type_proto::Tensor::new();
    tt.elem_type = pb::tensor_proto::DataType::FLOAT as i32;
    tt.shape = protobuf::MessageField::some(shape);
    let mut ty = pb::TypeProto::new();
    ty.value = Some(pb::type_proto::Value::TensorType(tt));
    let mut v = pb::ValueInfoProto::new();
    v.name = name.into();
    v.type_ = protobuf::MessageField::some(ty);
    v
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ir_versions_follow_the_onnx_table() {
        assert_eq!(ir_version(14), 8);
        assert_eq!(ir_version(17), 8);
        assert_eq!(ir_version(18), 8);
        assert_eq!(ir_version(19), 9);
        assert_eq!(ir_version(21), 10);
    }
}
