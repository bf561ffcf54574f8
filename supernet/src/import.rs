//! Import of reference supernet state_dicts (safetensors or PyTorch `.pth`), in current or legacy
//! naming, with the search space inferred from tensor shapes when no metadata says it.

use std::collections::HashMap;
use std::path::Path;

use ofa_space::{make_divisible, Ratio, SearchSpace, CHANNEL_DIVISIBLE};
use tch::{Device, Tensor};

use crate::checkpoint::{read_pth, read_safetensors, SUPERNET_FORMAT};
use crate::error::{Result, SupernetError};
use crate::supernet::Supernet;

/// Overrides for what shapes cannot tell (or to force a value).
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Use this space (a preset or a full JSON) instead of inferring one.
    pub space: Option<SearchSpace>,
    /// Expand ratio choices (shapes only show the largest).
    pub expand_ratio_list: Option<Vec<Ratio>>,
    /// Width multiplier choices of a ResNet (shapes only show the largest).
    pub width_mult_list: Option<Vec<f64>>,
    /// Depth choices (shapes only show the largest).
    pub depth_list: Option<Vec<u32>>,
    /// Resolutions of the space.
    pub resolutions: Option<Vec<u32>>,
    /// Name of the imported space.
    pub name: Option<String>,
}

/// Read a reference supernet state_dict from `.pth`/`.pt` (zip + pickle) or `.safetensors`.
pub fn read_state_dict(path: &Path) -> Result<HashMap<String, Tensor>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "safetensors" => {
            let f = read_safetensors(path)?;
            if f.metadata.get("format").map(String::as_str) == Some(SUPERNET_FORMAT) {
                tracing::info!("{} is already an ofa supernet checkpoint", path.display());
            }
            Ok(f.tensors)
        }
        _ => read_pth(path),
    }
}

/// Map legacy and current reference names to the current supernet naming:
/// `.mobile_inverted_conv.` → `.conv.`, and for elastic blocks (N ≥ 1) the inner wrapper level
/// (`{layer}.conv.conv.weight`, `{layer}.bn.bn.*`) added where a checkpoint omits it.
///
/// A ResNet in the static naming (`input_stem.0.conv.weight`, `….bn.weight`,
/// `classifier.linear.weight`) gets the elastic one (`….conv.conv.weight`, `….bn.bn.*`,
/// `classifier.linear.linear.*`), as `OFAResNets.load_state_dict` maps it.
pub fn normalize_names(map: HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    let resnet = map.keys().any(|k| k.starts_with("input_stem."));
    if resnet {
        let elastic = map.contains_key("input_stem.0.conv.conv.weight");
        return map
            .into_iter()
            .map(|(name, t)| {
                if elastic {
                    return (name, t);
                }
                let n = if name.contains(".linear.") {
                    name.replace(".linear.", ".linear.linear.")
                } else if name.contains("bn.") {
                    name.replace("bn.", "bn.bn.")
                } else if name.ends_with("conv.weight") {
                    format!(
                        "{}conv.conv.weight",
                        &name[..name.len() - "conv.weight".len()]
                    )
                } else {
                    name
                };
                (n, t)
            })
            .collect();
    }
    map.into_iter()
        .map(|(name, t)| {
            let current = name.replace(".mobile_inverted_conv.", ".conv.");
            let mut n = current.clone();
            if let Some(rest) = current.strip_prefix("blocks.") {
                let (idx, tail) = rest.split_once('.').unwrap_or((rest, ""));
                let elastic = idx.parse::<usize>().is_ok_and(|i| i > 0);
                if elastic {
                    for layer in ["inverted_bottleneck", "depth_conv", "point_linear"] {
                        let conv_short = format!("conv.{layer}.conv.weight");
                        if tail == conv_short {
                            n = format!("blocks.{idx}.conv.{layer}.conv.conv.weight");
                        }
                        let bn_short = format!("conv.{layer}.bn.");
                        let bn_long = format!("conv.{layer}.bn.bn.");
                        if tail.starts_with(&bn_short) && !tail.starts_with(&bn_long) {
                            n = format!("blocks.{idx}.{bn_long}{}", &tail[bn_short.len()..]);
                        }
                    }
                    // Matrices stored directly under depth_conv in some exports.
                    if let Some(m) = tail.strip_prefix("conv.depth_conv.") {
                        if m.ends_with("_matrix") && !m.starts_with("conv.") {
                            n = format!("blocks.{idx}.conv.depth_conv.conv.{m}");
                        }
                    }
                }
            }
            (n, t)
        })
        .collect()
}

fn dim(map: &HashMap<String, Tensor>, name: &str, d: usize) -> Result<u32> {
    let t = map.get(name).ok_or_else(|| SupernetError::MissingTensor {
        name: name.into(),
        shape: vec![],
    })?;
    t.size()
        .get(d)
        .map(|&x| x as u32)
        .ok_or_else(|| SupernetError::BadInput(format!("tensor `{name}` has too few dimensions")))
}

/// Infer the search space of a (normalised) reference supernet state_dict from its shapes.
pub fn infer_space(map: &HashMap<String, Tensor>, opts: &ImportOptions) -> Result<SearchSpace> {
    if map.contains_key("input_stem.0.conv.conv.weight") {
        return infer_resnet_space(map, opts);
    }
    // The family from its head: MobileNetV3 has a final expand layer, ProxylessNAS a feature mix
    // with BN before pooling (and a last stage of one block after five of equal depth). (ResNet
    // state_dicts, with their `input_stem`, went to their own inference above.)
    let proxyless = if map.contains_key("final_expand_layer.conv.weight") {
        false
    } else if map.contains_key("feature_mix_layer.bn.weight") {
        true
    } else {
        return Err(SupernetError::BadInput(
            "cannot infer the family: neither `final_expand_layer` (MobileNetV3) nor a \
             `feature_mix_layer.bn` (ProxylessNAS)"
                .into(),
        ));
    };
    let fixed = usize::from(proxyless);
    let n_blocks = (1..)
        .take_while(|i| map.contains_key(&format!("blocks.{i}.conv.point_linear.conv.conv.weight")))
        .count();
    if n_blocks <= fixed || (n_blocks - fixed) % 5 != 0 {
        return Err(SupernetError::BadInput(format!(
            "cannot infer the space: found {n_blocks} elastic blocks, expected 5 stages of equal depth{}",
            if fixed > 0 { " and one more" } else { "" }
        )));
    }
    let max_depth = (n_blocks - fixed) / 5;
    let stem = dim(map, "first_conv.conv.weight", 0)?;
    let in_channels = dim(map, "first_conv.conv.weight", 1)?;
    let first_block = dim(map, "blocks.0.conv.point_linear.conv.weight", 0)?;
    let mut widths = vec![first_block];
    for s in 0..5 + fixed {
        widths.push(dim(
            map,
            &format!(
                "blocks.{}.conv.point_linear.conv.conv.weight",
                1 + s * max_depth
            ),
            0,
        )?);
    }
    let final_expand = if proxyless {
        None
    } else {
        Some(dim(map, "final_expand_layer.conv.weight", 0)?)
    };
    let last_channel = dim(map, "feature_mix_layer.conv.weight", 0)?;
    let n_classes = dim(map, "classifier.linear.weight", 0)?;
    let max_ks = dim(map, "blocks.1.conv.depth_conv.conv.conv.weight", 2)?;
    let max_mid = dim(map, "blocks.1.conv.inverted_bottleneck.conv.conv.weight", 0)?;
    // Kernel choices from the transform matrices' names.
    let mut ks: Vec<u32> = vec![max_ks];
    let prefix = "blocks.1.conv.depth_conv.conv.";
    for name in map.keys() {
        if let Some(m) = name
            .strip_prefix(prefix)
            .and_then(|m| m.strip_suffix("_matrix"))
        {
            if let Some((a, b)) = m.split_once("to") {
                for v in [a, b] {
                    if let Ok(k) = v.parse::<u32>() {
                        if !ks.contains(&k) {
                            ks.push(k);
                        }
                    }
                }
            }
        }
    }
    ks.sort_unstable();
    // Width multiplier: the smallest multiple of 0.05 (then 0.01) that reproduces every width.
    let family_space = |name: &str, wm: f64, n_classes: u32, resolutions: Vec<u32>| {
        if proxyless {
            SearchSpace::proxyless(name, wm, n_classes, resolutions)
        } else {
            SearchSpace::mobilenet_v3(name, wm, n_classes, resolutions)
        }
    };
    let base = family_space("x", 1.0, 1, vec![224]);
    let all_widths: Vec<u32> = std::iter::once(stem)
        .chain(widths.iter().copied())
        .chain(final_expand)
        .chain([last_channel])
        .collect();
    let bases: Vec<u32> = std::iter::once(base.stem_base_width)
        .chain(base.stages.iter().map(|s| s.base_width))
        .chain(base.final_expand_base_width)
        .chain(base.last_channel_base_width)
        .collect();
    let fits = |wm: f64| {
        bases
            .iter()
            .zip(&all_widths)
            .all(|(b, w)| make_divisible(f64::from(*b) * wm, CHANNEL_DIVISIBLE) == *w)
    };
    let width_mult = roundest_multiplier(None, fits).ok_or_else(|| {
        SupernetError::BadInput(format!(
            "cannot infer width_mult from widths {all_widths:?}"
        ))
    })?;
    let max_e = max_mid / widths[0];
    let expand = opts.expand_ratio_list.clone().unwrap_or_else(|| {
        if max_e == 6 {
            vec![3.into(), 4.into(), 6.into()]
        } else {
            vec![max_e.into()]
        }
    });
    let depth = opts.depth_list.clone().unwrap_or_else(|| {
        if max_depth == 4 {
            vec![2, 3, 4]
        } else {
            (1..=max_depth as u32).collect()
        }
    });
    let resolutions = opts.resolutions.clone().unwrap_or_else(|| {
        if n_classes == 1000 {
            (128..=224).step_by(4).collect()
        } else {
            (32..=48).step_by(4).collect()
        }
    });
    let name = opts
        .name
        .clone()
        .unwrap_or_else(|| format!("imported-w{width_mult}"));
    let mut space = family_space(&name, width_mult, n_classes, resolutions);
    space.in_channels = in_channels;
    space.ks_list = ks;
    space.expand_ratio_list = expand;
    space.depth_list = depth;
    space.validate()?;
    if space.max_expand() != Ratio::from(max_e)
        || space.max_depth() != max_depth
        || space.max_ks() != max_ks
    {
        return Err(SupernetError::BadInput(format!(
            "the given choices (max expand {}, max depth {}) do not match the checkpoint (max expand {max_e}, max depth {max_depth})",
            space.max_expand(),
            space.max_depth()
        )));
    }
    Ok(space)
}

/// The roundest width multiplier up to 4 for which `fits` holds: `first` when given and it fits,
/// then multiples of 0.05, 0.01 and 0.005 (each rounded to thousandths, so 0.15 is 0.15 and not
/// 3 · 0.05 in floating point).
fn roundest_multiplier(first: Option<f64>, fits: impl Fn(f64) -> bool) -> Option<f64> {
    first
        .into_iter()
        .chain((1..=80).map(|i| f64::from(i) * 0.05))
        .chain((1..=400).map(|i| f64::from(i) * 0.01))
        .chain((1..=800).map(|i| f64::from(i) * 0.005))
        .map(|m| (m * 1000.0).round() / 1000.0)
        .find(|m| fits(*m))
}

/// The space of an `OFAResNets` state_dict (elastic naming): stem and stage widths, blocks per
/// stage (the first of each holds the downsample shortcut) above `ResNets.BASE_DEPTH_LIST`, the
/// largest expand ratio from the first block's middle width. Width and expand choices other than
/// the largest are not in the shapes: the published `ofa_resnet50`'s (widths 0.65, 0.8, 1.0;
/// ratios 0.2, 0.25, 0.35) when the largest are its, else the given ones or the largest alone.
fn infer_resnet_space(map: &HashMap<String, Tensor>, opts: &ImportOptions) -> Result<SearchSpace> {
    let bad =
        |what: String| SupernetError::BadInput(format!("cannot infer the ResNet space: {what}"));
    let in_channels = dim(map, "input_stem.0.conv.conv.weight", 1)?;
    let stem_out = dim(map, "input_stem.2.conv.conv.weight", 0)?;
    let n_blocks = (0..)
        .take_while(|j| map.contains_key(&format!("blocks.{j}.conv1.conv.conv.weight")))
        .count();
    let firsts: Vec<usize> = (0..n_blocks)
        .filter(|j| map.contains_key(&format!("blocks.{j}.downsample.conv.conv.weight")))
        .collect();
    if firsts.len() != 4 || firsts.first() != Some(&0) {
        return Err(bad(format!(
            "found {n_blocks} blocks in {} stages (by their downsample shortcuts), OFAResNets has 4",
            firsts.len()
        )));
    }
    let sizes: Vec<usize> = firsts
        .iter()
        .zip(firsts.iter().skip(1).chain([&n_blocks]))
        .map(|(a, b)| b - a)
        .collect();
    let extra: Vec<i64> = sizes
        .iter()
        .zip(ofa_space::RESNET_BASE_DEPTHS)
        .map(|(n, base)| *n as i64 - i64::from(base))
        .collect();
    if extra.iter().any(|e| *e < 0 || *e != extra[0]) {
        return Err(bad(format!(
            "stages of {sizes:?} blocks are not the base depths {:?} plus one depth",
            ofa_space::RESNET_BASE_DEPTHS
        )));
    }
    let max_depth = extra[0] as u32;
    let widths: Vec<u32> = firsts
        .iter()
        .map(|j| dim(map, &format!("blocks.{j}.conv3.conv.conv.weight"), 0))
        .collect::<Result<_>>()?;
    let n_classes = dim(map, "classifier.linear.linear.weight", 0)?;
    let max_mid = dim(map, "blocks.0.conv1.conv.conv.weight", 0)?;
    // the largest multiplier: the one that gives every largest width
    let probe = SearchSpace::resnet("x", vec![1.0], 1, vec![224]);
    let fits = |m: f64| {
        let mut s = probe.clone();
        s.width_mult_list = vec![m];
        s.resnet_stem_widths() == [stem_out]
            && s.resnet_stage_widths()
                .iter()
                .map(|w| w[0])
                .eq(widths.iter().copied())
    };
    // the given largest first, then the roundest multiplier that fits
    let given = opts
        .width_mult_list
        .as_ref()
        .map(|l| l.iter().copied().fold(0.0, f64::max));
    let largest = roundest_multiplier(given, fits).ok_or_else(|| {
        bad(format!(
            "no width multiplier gives the widths {stem_out}, {widths:?}"
        ))
    })?;
    let published = SearchSpace::preset("ofa-resnet50")?;
    let width_mult_list = opts.width_mult_list.clone().unwrap_or_else(|| {
        if largest == 1.0 {
            published.width_mult_list.clone()
        } else {
            vec![largest]
        }
    });
    let expand = match &opts.expand_ratio_list {
        Some(e) => e.clone(),
        None if ofa_space::bottleneck_mid(widths[0], published.max_expand()) == max_mid => {
            published.expand_ratio_list.clone()
        }
        None => {
            return Err(bad(format!(
                "the first block's middle width {max_mid} is not the published ratios' (0.35 of \
                 {}): give the expand choices",
                widths[0]
            )))
        }
    };
    let resolutions = opts.resolutions.clone().unwrap_or_else(|| {
        if n_classes == 1000 {
            published.resolutions.clone()
        } else {
            (32..=48).step_by(4).collect()
        }
    });
    let name = opts
        .name
        .clone()
        .unwrap_or_else(|| format!("imported-resnet-w{largest}"));
    let mut space = SearchSpace::resnet(&name, width_mult_list, n_classes, resolutions);
    space.in_channels = in_channels;
    space.expand_ratio_list = expand;
    space.depth_list = opts
        .depth_list
        .clone()
        .unwrap_or_else(|| (0..=max_depth).collect());
    space.validate()?;
    let widest = space.width_mult_list.iter().copied().fold(0.0, f64::max);
    if space.max_depth() as u32 != max_depth
        || (widest - largest).abs() > 1e-9
        || ofa_space::bottleneck_mid(widths[0], space.max_expand()) != max_mid
    {
        return Err(SupernetError::BadInput(format!(
            "the given choices (largest width {widest}, depth {}, expand {}) do not match the \
             checkpoint (largest width {largest}, depth {max_depth}, middle width {max_mid})",
            space.max_depth(),
            space.max_expand()
        )));
    }
    Ok(space)
}

/// Import a reference supernet checkpoint: read, normalise names, infer (or take) the space,
/// validate every tensor.
pub fn import_supernet(path: &Path, opts: &ImportOptions, device: Device) -> Result<Supernet> {
    let map = normalize_names(read_state_dict(path)?);
    let space = match &opts.space {
        Some(s) => s.clone(),
        None => {
            infer_space(&map, opts).map_err(|e| SupernetError::bad_file(path, e.to_string()))?
        }
    };
    Supernet::from_tensors(&space, map, device)
        .map_err(|e| SupernetError::bad_file(path, e.to_string()))
}
