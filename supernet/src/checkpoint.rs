//! Files: safetensors reading and atomic writing, supernet and subnet checkpoints with metadata,
//! and PyTorch `.pth` reading.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use ofa_schema::run::SupernetMetrics;
use ofa_space::{ArchConfig, SearchSpace};
use safetensors::tensor::{Dtype, SafeTensors, View};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use crate::error::{Result, SupernetError};
use crate::subnet::{Subnet, SubnetConfig};
use crate::supernet::Supernet;

/// `format` metadata of a supernet checkpoint.
pub const SUPERNET_FORMAT: &str = "ofa-supernet/1";
/// `format` metadata of a subnet file.
pub const SUBNET_FORMAT: &str = "ofa-subnet/1";

/// Tensors and string metadata of one safetensors file.
#[derive(Debug)]
pub struct TensorFile {
    /// Tensors by name (CPU).
    pub tensors: HashMap<String, Tensor>,
    /// `__metadata__` (empty when absent).
    pub metadata: BTreeMap<String, String>,
}

fn kind_of(d: Dtype) -> Option<Kind> {
    Some(match d {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

fn dtype_of(k: Kind) -> Option<Dtype> {
    Some(match k {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Int16 => Dtype::I16,
        Kind::Int8 => Dtype::I8,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        _ => return None,
    })
}

/// A CPU tensor of `shape` and `kind` copied from `data`, which must hold exactly its bytes:
/// libtorch copies `numel · element size` bytes from the pointer whatever the slice's length, so
/// the length is checked here, with overflow-checked arithmetic, before it is called.
pub fn tensor_from_bytes(
    data: &[u8],
    shape: &[usize],
    kind: Kind,
) -> std::result::Result<Tensor, String> {
    let want = shape
        .iter()
        .try_fold(kind.elt_size_in_bytes(), |n, &d| n.checked_mul(d))
        .filter(|n| i64::try_from(*n).is_ok())
        .ok_or_else(|| format!("shape {shape:?} is too large"))?;
    if want != data.len() {
        return Err(format!(
            "shape {shape:?} of {kind:?} needs {want} bytes, the file holds {}",
            data.len()
        ));
    }
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    Tensor::f_from_data_size(data, &dims, kind).map_err(|e| e.to_string())
}

/// Read a safetensors file; errors name the file and what is wrong (truncated, corrupt header,
/// unsupported dtype).
pub fn read_safetensors(path: &Path) -> Result<TensorFile> {
    let bytes = std::fs::read(path).map_err(|e| SupernetError::io(path, e))?;
    parse_safetensors(&bytes, path)
}

/// Parse safetensors bytes (`path` is only for messages).
pub fn parse_safetensors(bytes: &[u8], path: &Path) -> Result<TensorFile> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| {
        SupernetError::bad_file(path, format!("not a valid safetensors file ({e})"))
    })?;
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| {
        SupernetError::bad_file(path, format!("not a valid safetensors file ({e})"))
    })?;
    // a file without `__metadata__` has none (an `Option`, not a failure)
    let metadata: BTreeMap<String, String> = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        let kind = kind_of(view.dtype()).ok_or_else(|| {
            SupernetError::bad_file(
                path,
                format!("tensor `{name}` has unsupported dtype {:?}", view.dtype()),
            )
        })?;
        let t = tensor_from_bytes(view.data(), view.shape(), kind)
            .map_err(|m| SupernetError::bad_file(path, format!("tensor `{name}`: {m}")))?;
        tensors.insert(name, t);
    }
    Ok(TensorFile { tensors, metadata })
}

struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn to_raw(name: &str, t: &Tensor) -> Result<Raw> {
    let t = t.detach().to_device(Device::Cpu).contiguous();
    let dtype = dtype_of(t.kind()).ok_or_else(|| {
        SupernetError::BadInput(format!(
            "tensor `{name}` has unsupported kind {:?}",
            t.kind()
        ))
    })?;
    let numel = t.numel();
    let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
    t.f_copy_data_u8(&mut data, numel)?;
    Ok(Raw {
        dtype,
        shape: t.size().iter().map(|&d| d as usize).collect(),
        data,
    })
}

/// Serialise tensors and metadata to safetensors bytes.
pub fn safetensors_bytes(
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let raws = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), to_raw(n, t)?)))
        .collect::<Result<Vec<_>>>()?;
    let meta: HashMap<String, String> = metadata.clone().into_iter().collect();
    let mut bytes =
        safetensors::serialize(raws.iter().map(|(n, r)| (n.as_str(), r)), Some(meta))
            .map_err(|e| SupernetError::BadInput(format!("cannot serialise tensors: {e}")))?;
    canonical_header(&mut bytes)?;
    Ok(bytes)
}

/// Rewrite a safetensors header with its keys (and its metadata's keys) in sorted order.
/// `safetensors::serialize` writes the metadata from a `HashMap`, so the same tensors and metadata
/// came out in a different byte order in every process; content hashes (subnet ids, ETags, cache
/// files shared by replicas) need one byte string per content. Same keys and values, so the
/// header keeps its length.
fn canonical_header(bytes: &mut [u8]) -> Result<()> {
    let bad =
        |m: &str| SupernetError::BadInput(format!("cannot canonicalise a safetensors header: {m}"));
    let n = bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| bad("too short"))? as usize;
    let header = bytes.get_mut(8..8 + n).ok_or_else(|| bad("truncated"))?;
    let mut top: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| bad(&e.to_string()))?;
    if let Some(m) = top.get_mut("__metadata__") {
        let sorted: BTreeMap<String, String> =
            serde_json::from_value(m.take()).map_err(|e| bad(&e.to_string()))?;
        *m = serde_json::to_value(sorted).map_err(|e| bad(&e.to_string()))?;
    }
    let text = serde_json::to_vec(&top).map_err(|e| bad(&e.to_string()))?;
    if text.len() > n {
        return Err(bad("the header grew"));
    }
    header[..text.len()].copy_from_slice(&text);
    header[text.len()..].fill(b' ');
    Ok(())
}

/// Write bytes atomically: a temporary file in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // A temporary file is created 0600; the file it becomes is created as any other file is
    // (0666 less the umask), so that a subnet cut by one user can be served by another.
    let mut b = tempfile::Builder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(0o666));
    }
    // Every failure names the file being written (not the temporary one, which is removed when
    // `tmp` drops): the previous file at `path`, if any, is untouched until the rename.
    let mut tmp = b.tempfile_in(dir).map_err(|e| SupernetError::io(path, e))?;
    tmp.write_all(bytes)
        .map_err(|e| SupernetError::io(path, e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| SupernetError::io(path, e))?;
    tmp.persist(path)
        .map_err(|e| SupernetError::io(path, e.error))?;
    Ok(())
}

/// Write tensors and metadata to a safetensors file atomically.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    write_atomic(path, &safetensors_bytes(tensors, metadata)?)
}

/// The metadata every file cut from a supernet carries: `arch`, `space` (JSON) and
/// `source_supernet` (`{"sha256": …}`), for subnet files and ONNX models alike.
pub fn source_metadata(
    arch: &ArchConfig,
    space: &SearchSpace,
    supernet_sha256: &str,
) -> BTreeMap<String, String> {
    let mut meta = BTreeMap::new();
    meta.insert("arch".to_string(), arch.to_json());
    meta.insert("space".to_string(), space.to_json());
    meta.insert(
        "source_supernet".to_string(),
        serde_json::json!({ "sha256": supernet_sha256 }).to_string(),
    );
    meta
}

/// SHA-256 (hex) of a byte string.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a supernet came from (stored as JSON in the checkpoint's `provenance`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Provenance {
    /// Dataset name or path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// Recipe name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<String>,
    /// Training phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Optimiser step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    /// Seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Free-form origin (e.g. `imported from X.pth`, `random init`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// A loaded supernet checkpoint.
#[derive(Debug)]
pub struct SupernetCheckpoint {
    /// The network.
    pub net: Supernet,
    /// Its provenance.
    pub provenance: Provenance,
    /// What it measured in training, if it says.
    pub metrics: Option<SupernetMetrics>,
    /// SHA-256 of the file.
    pub sha256: String,
}

impl Supernet {
    /// Save with `__metadata__` (`format`, `space`, `provenance`, optional `metrics`).
    pub fn save(
        &self,
        path: &Path,
        provenance: &Provenance,
        metrics: Option<&SupernetMetrics>,
    ) -> Result<()> {
        let tensors: Vec<(String, Tensor)> = self
            .tensors()
            .iter()
            .map(|(s, t)| (s.name.clone(), t.shallow_clone()))
            .collect();
        let mut meta = BTreeMap::new();
        meta.insert("format".into(), SUPERNET_FORMAT.into());
        meta.insert("space".into(), self.space().to_json());
        meta.insert("provenance".into(), ofa_schema::to_json(provenance));
        if let Some(m) = metrics {
            meta.insert("metrics".into(), ofa_schema::to_json(m));
        }
        write_safetensors(path, &tensors, &meta)
    }

    /// Load a supernet checkpoint written by [`Supernet::save`], validating every tensor.
    pub fn load(path: &Path, device: Device) -> Result<SupernetCheckpoint> {
        let bytes = std::fs::read(path).map_err(|e| SupernetError::io(path, e))?;
        let file = parse_safetensors(&bytes, path)?;
        match file.metadata.get("format").map(String::as_str) {
            Some(SUPERNET_FORMAT) => {}
            Some(SUBNET_FORMAT) => {
                return Err(SupernetError::bad_file(path, "this is a subnet, not a supernet checkpoint"))
            }
            Some(other) => {
                return Err(SupernetError::bad_file(path, format!("unknown format `{other}` (expected {SUPERNET_FORMAT})")))
            }
            None => {
                return Err(SupernetError::bad_file(
                    path,
                    "no `format` metadata: not an ofa supernet checkpoint (reference state_dicts are converted with `ofa import`)",
                ))
            }
        }
        let space_json = file
            .metadata
            .get("space")
            .ok_or_else(|| SupernetError::bad_file(path, "metadata has no `space`"))?;
        let space = SearchSpace::from_json(space_json)
            .map_err(|e| SupernetError::bad_file(path, format!("metadata `space`: {e}")))?;
        // absent (an imported or hand-made file): nothing known; present and unreadable: damage
        let provenance = match file.metadata.get("provenance") {
            Some(p) => serde_json::from_str(p).map_err(|e| {
                SupernetError::bad_file(path, format!("metadata `provenance`: {e}"))
            })?,
            None => Provenance::default(),
        };
        let metrics =
            match file.metadata.get("metrics") {
                Some(m) => Some(serde_json::from_str(m).map_err(|e| {
                    SupernetError::bad_file(path, format!("metadata `metrics`: {e}"))
                })?),
                None => None,
            };
        let net = Supernet::from_tensors(&space, file.tensors, device)
            .map_err(|e| SupernetError::bad_file(path, e.to_string()))?;
        Ok(SupernetCheckpoint {
            net,
            provenance,
            metrics,
            sha256: sha256_hex(&bytes),
        })
    }
}

/// A loaded subnet file.
#[derive(Debug)]
pub struct SubnetFile {
    /// The network.
    pub net: Subnet,
    /// Its architecture, when the file records one.
    pub arch: Option<ArchConfig>,
    /// All metadata.
    pub metadata: BTreeMap<String, String>,
}

impl Subnet {
    /// Save with metadata `format`, `net_config`, `ofa_subnet` (the typed config), plus `extra` (e.g. `arch`,
    /// `space`, `predicted`, `source_supernet`).
    pub fn save(&self, path: &Path, extra: &BTreeMap<String, String>) -> Result<()> {
        write_atomic(path, &self.to_safetensors(extra)?)
    }

    /// The bytes [`Subnet::save`] writes: the same tensors and metadata give the same bytes in
    /// any process.
    pub fn to_safetensors(&self, extra: &BTreeMap<String, String>) -> Result<Vec<u8>> {
        let mut meta = extra.clone();
        meta.insert("format".into(), SUBNET_FORMAT.into());
        meta.insert(
            "net_config".into(),
            ofa_schema::to_json(&self.config().to_net_config()),
        );
        meta.insert("ofa_subnet".into(), ofa_schema::to_json(self.config()));
        safetensors_bytes(&self.named_tensors(), &meta)
    }

    /// Load a subnet file: ours, or a reference subnet state_dict whose metadata holds
    /// `net_config` (the reference `MobileNetV3.config`).
    pub fn load(path: &Path, device: Device) -> Result<SubnetFile> {
        let file = read_safetensors(path)?;
        let config = if let Some(c) = file.metadata.get("ofa_subnet") {
            serde_json::from_str::<SubnetConfig>(c)
                .map_err(|e| SupernetError::bad_file(path, format!("metadata `ofa_subnet`: {e}")))?
        } else if let Some(nc) = file.metadata.get("net_config") {
            let v: Value = serde_json::from_str(nc).map_err(|e| {
                SupernetError::bad_file(path, format!("metadata `net_config`: {e}"))
            })?;
            SubnetConfig::from_net_config(&v).map_err(|e| SupernetError::bad_file(path, e))?
        } else {
            return Err(SupernetError::bad_file(
                path,
                "not a subnet file: metadata has neither `ofa_subnet` nor `net_config`",
            ));
        };
        // Ours store `arch`; the reference fixtures call it `subnet_config`.
        let arch = ["arch", "subnet_config"].iter().find_map(|k| {
            file.metadata
                .get(*k)
                .and_then(|a| ArchConfig::from_json(a).ok())
        });
        let net = Subnet::from_tensors(config, file.tensors, device)
            .map_err(|e| SupernetError::bad_file(path, e.to_string()))?;
        Ok(SubnetFile {
            net,
            arch,
            metadata: file.metadata,
        })
    }
}

/// Read the tensors of a PyTorch checkpoint (`torch.save`, zip + pickle, or legacy formats) in
/// pure Rust; a top-level `state_dict` (or `model`) entry is unwrapped.
pub fn read_pth(path: &Path) -> Result<HashMap<String, Tensor>> {
    use pytorch_reader::{DType, PytorchReader};
    // Nothing is interpreted before the file is known to name only what a state_dict needs.
    let bytes = std::fs::read(path).map_err(|e| SupernetError::io(path, e))?;
    crate::pth_guard::check(path, &bytes)?;
    drop(bytes);
    let open = |key: Option<&str>| match key {
        Some(k) => PytorchReader::with_top_level_key(path, k),
        None => PytorchReader::new(path),
    };
    let reader = open(Some("state_dict"))
        .or_else(|_| open(Some("model")))
        .or_else(|_| open(None))
        .map_err(|e| {
            SupernetError::bad_file(path, format!("not a readable PyTorch checkpoint ({e})"))
        })?;
    let mut out = HashMap::new();
    for (name, t) in reader.tensors() {
        let kind = match t.dtype() {
            DType::F32 => Kind::Float,
            DType::F64 => Kind::Double,
            DType::F16 => Kind::Half,
            DType::BF16 => Kind::BFloat16,
            DType::I64 => Kind::Int64,
            DType::I32 => Kind::Int,
            DType::I16 => Kind::Int16,
            DType::I8 => Kind::Int8,
            DType::U8 => Kind::Uint8,
            DType::Bool => Kind::Bool,
            other => {
                return Err(SupernetError::bad_file(
                    path,
                    format!("tensor `{name}` has unsupported dtype {other:?}"),
                ))
            }
        };
        let bytes = t
            .read()
            .map_err(|e| SupernetError::bad_file(path, e.to_string()))?;
        let t = tensor_from_bytes(&bytes, t.shape(), kind)
            .map_err(|m| SupernetError::bad_file(path, format!("tensor `{name}`: {m}")))?;
        out.insert(name.clone(), t);
    }
    if out.is_empty() {
        return Err(SupernetError::bad_file(
            path,
            "the checkpoint holds no tensors",
        ));
    }
    Ok(out)
}

/// Any network file the CLI accepts as a model.
#[derive(Debug)]
pub enum Model {
    /// A supernet (our checkpoint, or an imported reference state_dict).
    Supernet(Box<SupernetCheckpoint>),
    /// A static subnet.
    Subnet(Box<SubnetFile>),
}

/// Open a supernet checkpoint, a subnet file, or a reference supernet state_dict (`.pth` or
/// `.safetensors` without our metadata, imported in memory with an inferred space).
pub fn open_model(path: &Path, device: Device) -> Result<Model> {
    let is_safetensors = path.extension().and_then(|e| e.to_str()) == Some("safetensors");
    if is_safetensors {
        let bytes = std::fs::read(path).map_err(|e| SupernetError::io(path, e))?;
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| {
            SupernetError::bad_file(path, format!("not a valid safetensors file ({e})"))
        })?;
        // a file without `__metadata__` has none (an `Option`, not a failure)
        let meta = meta.metadata().clone().unwrap_or_default();
        match meta.get("format").map(String::as_str) {
            Some(SUPERNET_FORMAT) => {
                return Ok(Model::Supernet(Box::new(Supernet::load(path, device)?)))
            }
            Some(SUBNET_FORMAT) => return Ok(Model::Subnet(Box::new(Subnet::load(path, device)?))),
            _ if meta.contains_key("net_config") => {
                return Ok(Model::Subnet(Box::new(Subnet::load(path, device)?)))
            }
            // another of our files (a training run's checkpoint, a fine-tune's state, the
            // calibration images): not a reference state_dict either, so say what it is (other
            // writers' `format`, such as safetensors' own "pt", is left to the import)
            Some(other) if other.starts_with("ofa-") => {
                let hint = if other.starts_with("ofa-run/") {
                    ": a training run's checkpoint (weights and optimiser state); `ofa train \
                     --resume` takes its folder, and a finished run's model is the folder's \
                     `supernet.safetensors`"
                } else {
                    ""
                };
                return Err(SupernetError::bad_file(
                    path,
                    format!(
                        "an `{other}` file, not a model (a supernet `{SUPERNET_FORMAT}`, a \
                         subnet `{SUBNET_FORMAT}` or a reference state_dict){hint}"
                    ),
                ));
            }
            _ => {}
        }
    }
    let net = crate::import::import_supernet(path, &Default::default(), device)?;
    let bytes = std::fs::read(path).map_err(|e| SupernetError::io(path, e))?;
    Ok(Model::Supernet(Box::new(SupernetCheckpoint {
        net,
        provenance: Provenance {
            source: Some(format!("reference state_dict {}", path.display())),
            ..Default::default()
        },
        metrics: None,
        sha256: sha256_hex(&bytes),
    })))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tch::Kind;

    /// Our other safetensors files are named for what they are, not imported as a reference
    /// state_dict (whose family inference would fail on their names).
    #[test]
    fn another_of_our_files_is_not_taken_for_a_model() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.safetensors");
        let open_with_format = |format: &str| {
            let header = format!(
                r#"{{"__metadata__":{{"format":"{format}"}},"x":{{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}}}"#
            );
            let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(header.as_bytes());
            bytes.extend_from_slice(&[0u8; 4]);
            std::fs::write(&path, bytes).unwrap();
            super::open_model(&path, tch::Device::Cpu)
                .err()
                .unwrap()
                .to_string()
        };
        let e = open_with_format("ofa-run/1");
        assert!(e.contains("an `ofa-run/1` file, not a model"), "{e}");
        assert!(e.contains("ofa train --resume"), "{e}");
        // a state_dict saved by safetensors' torch helpers carries `format: pt`: still imported
        // (and refused here by the family inference, as a file without metadata would be)
        let e = open_with_format("pt");
        assert!(e.contains("cannot infer the family"), "{e}");
    }

    #[test]
    fn a_tensor_is_built_only_from_exactly_its_bytes() {
        let t = super::tensor_from_bytes(&[0u8; 8], &[2], Kind::Float).unwrap();
        assert_eq!(t.size(), vec![2]);
        // a short slice: libtorch would read past it
        let e = super::tensor_from_bytes(&[0u8; 4], &[2], Kind::Float).unwrap_err();
        assert!(e.contains("needs 8 bytes, the file holds 4"), "{e}");
        let e = super::tensor_from_bytes(&[0u8; 12], &[2], Kind::Float).unwrap_err();
        assert!(e.contains("needs 8 bytes"), "{e}");
        // a shape whose byte count overflows
        let e = super::tensor_from_bytes(&[0u8; 8], &[usize::MAX, 2], Kind::Float).unwrap_err();
        assert!(e.contains("too large"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn an_atomically_written_file_has_the_mode_of_any_other_new_file() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let ours = d.path().join("a.json");
        super::write_atomic(&ours, b"{}").unwrap();
        let plain = d.path().join("b.json");
        std::fs::write(&plain, b"{}").unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode(&ours),
            mode(&plain),
            "0666 less the umask, not tempfile's 0600"
        );
    }
}
