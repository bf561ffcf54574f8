//! `ArchConfig`: one subnet of a search space, in the reference's JSON form.

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::SpaceError;
use crate::ratio::Ratio;
use crate::space::{BlockSpec, Family, SearchSpace};

/// A subnet in its family's reference form, and the input resolution.
///
/// - MBConv families (MobileNetV3, ProxylessNAS): kernel size and expand ratio per elastic block
///   (indexed by **supernet** block, entry `i` ↔ block `i + 1`), depth per stage:
///   `{"ks": [..], "e": [..], "d": [..], "r": R}`.
/// - ResNet: `d[0]` the stem (its residual conv runs iff `d[0]` is the largest depth choice),
///   `d[1..]` the depth each stage adds to its base, `e` a ratio per supernet block, `w` the
///   width index of the stem's first convs, of its last conv and of each stage:
///   `{"d": [5], "e": [18], "w": [6], "r": R}`.
///
/// Deserialises the reference's resolution forms too: `"r": [R]`, `"image_size": R` or
/// `"resolution": R`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ArchConfig {
    /// Kernel sizes, one per elastic block (empty in ResNet, whose kernel is fixed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ks: Vec<u32>,
    /// Expand ratios, one per elastic block.
    pub e: Vec<Ratio>,
    /// Depth of each elastic stage (ResNet: the stem's entry first).
    pub d: Vec<u32>,
    /// Width indices into the space's `width_mult_list` (ResNet; empty otherwise).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub w: Vec<u32>,
    /// Input resolution.
    pub r: u32,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Resolution {
    One(u32),
    List(Vec<u32>),
}

#[derive(Deserialize)]
struct RawArch {
    #[serde(default)]
    ks: Vec<u32>,
    e: Option<Vec<Ratio>>,
    d: Option<Vec<u32>>,
    #[serde(default)]
    w: Vec<u32>,
    r: Option<Resolution>,
    image_size: Option<u32>,
    resolution: Option<u32>,
}

impl<'de> Deserialize<'de> for ArchConfig {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let raw = RawArch::deserialize(de)?;
        let missing = |name: &str| D::Error::custom(format!("missing field `{name}`"));
        let r = match (raw.r, raw.image_size, raw.resolution) {
            (Some(Resolution::One(r)), _, _) => r,
            (Some(Resolution::List(l)), _, _) => match l.as_slice() {
                [r] => *r,
                _ => {
                    return Err(D::Error::custom(format!(
                        "`r` must be a number or a one-element list, got {l:?}"
                    )))
                }
            },
            (None, Some(r), _) | (None, None, Some(r)) => r,
            (None, None, None) => {
                return Err(D::Error::custom(
                    "missing resolution: give `r`, `image_size` or `resolution`",
                ))
            }
        };
        Ok(ArchConfig {
            ks: raw.ks,
            e: raw.e.ok_or_else(|| missing("e"))?,
            d: raw.d.ok_or_else(|| missing("d"))?,
            w: raw.w,
            r,
        })
    }
}

/// One active block of a subnet with its resolved widths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveBlock {
    /// The supernet block's shape.
    pub spec: BlockSpec,
    /// Kernel size in use.
    pub ks: u32,
    /// Expand ratio in use (1 for the first block).
    pub e: Ratio,
    /// Middle width in use.
    pub mid: u32,
}

impl ArchConfig {
    /// Parse from JSON (any of the reference's forms).
    pub fn from_json(s: &str) -> Result<ArchConfig, SpaceError> {
        serde_json::from_str(s).map_err(|e| SpaceError::Json(e.to_string()))
    }

    /// Serialise to JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("derived Serialize of integers cannot fail")
    }

    /// The largest subnet of a space at its largest resolution.
    pub fn largest(space: &SearchSpace) -> ArchConfig {
        crate::Choices::all(space).largest(space)
    }

    /// The smallest subnet of a space at its smallest resolution.
    pub fn smallest(space: &SearchSpace) -> ArchConfig {
        crate::Choices::all(space).smallest(space)
    }

    /// Check every entry against the space; the error names the first offending entry.
    pub fn validate(&self, space: &SearchSpace) -> Result<(), SpaceError> {
        let n = space.n_elastic_blocks();
        let resnet = space.family == Family::ResNet;
        for (field, len, want) in [
            ("ks", self.ks.len(), if resnet { 0 } else { n }),
            ("e", self.e.len(), n),
            ("d", self.d.len(), space.n_stages()),
            (
                "w",
                self.w.len(),
                if resnet { space.stages.len() + 2 } else { 0 },
            ),
        ] {
            if len != want {
                let family = space.family.label();
                return Err(SpaceError::InvalidArch(match (len, want) {
                    (0, _) => {
                        format!("`{field}` is missing: the {family} space needs {want} entries")
                    }
                    (_, 0) => format!("`{field}` has no place in a {family} arch"),
                    _ => format!("`{field}` has {len} entries, the space needs {want}"),
                }));
            }
        }
        fn check<T: PartialEq + std::fmt::Display + std::fmt::Debug>(
            field: &str,
            values: &[T],
            allowed: &[T],
        ) -> Result<(), SpaceError> {
            for (i, v) in values.iter().enumerate() {
                if !allowed.contains(v) {
                    return Err(SpaceError::InvalidArch(format!(
                        "`{field}[{i}]` = {v} is not one of the space's choices {allowed:?}"
                    )));
                }
            }
            Ok(())
        }
        check("ks", &self.ks, &space.ks_list)?;
        check("e", &self.e, &space.expand_ratio_list)?;
        let widths: Vec<u32> = (0..space.width_mult_list.len() as u32).collect();
        check("w", &self.w, &widths)?;
        // ResNet's stem entry is a depth choice like the stages'.
        let stem = resnet.then_some(&self.d[0]);
        if let Some(d) = stem.filter(|d| !space.depth_list.contains(d)) {
            return Err(SpaceError::InvalidArch(format!(
                "`d[0]` = {d} is not one of the space's choices {:?}",
                space.depth_list
            )));
        }
        let stage_d = &self.d[usize::from(resnet)..];
        // A stage of fixed block count takes its count too (the reference's ProxylessNAS samples
        // its last depth as 1 and clips any other to 1).
        for (i, (d, stage)) in stage_d.iter().zip(space.elastic_stages()).enumerate() {
            let i = i + usize::from(resnet);
            if !space.depth_list.contains(d) && stage.blocks != Some(*d) {
                return Err(SpaceError::InvalidArch(format!(
                    "`d[{i}]` = {d} is not one of the space's choices {:?}",
                    space.depth_list
                )));
            }
        }
        if !space.resolutions.contains(&self.r) {
            return Err(SpaceError::InvalidArch(format!(
                "resolution {} is not in the space's resolutions {:?}",
                self.r, space.resolutions
            )));
        }
        Ok(())
    }

    /// Whether elastic block `i` (0-based, i.e. supernet block `i + 1`) of an MBConv family runs
    /// under this config: the reference encoders' rule, exact for both (a stage of fixed count is
    /// the last and holds one block).
    pub fn is_active(&self, i: usize, max_depth: usize) -> bool {
        (i % max_depth) < self.d[i / max_depth] as usize
    }

    /// The active blocks of an MBConv family, block 0 first, with their resolved kernel, expand
    /// and middle width (none for ResNet: its are [`ArchConfig::bottlenecks`]). Assumes a config
    /// validated against `space` (lengths are checked by indexing).
    pub fn active_blocks(&self, space: &SearchSpace) -> Vec<ActiveBlock> {
        if !space.family.is_mbconv() {
            return Vec::new();
        }
        space
            .blocks()
            .into_iter()
            .filter(|b| b.index == 0 || b.pos_in_stage < self.d[b.stage - 1] as usize)
            .map(|b| {
                if b.index == 0 {
                    ActiveBlock {
                        spec: b,
                        ks: 3,
                        e: Ratio::from(1),
                        mid: b.max_mid,
                    }
                } else {
                    let e = self.e[b.index - 1];
                    ActiveBlock {
                        spec: b,
                        ks: self.ks[b.index - 1],
                        e,
                        mid: b.mid(e),
                    }
                }
            })
            .collect()
    }

    /// The same network with the entries of skipped blocks set to the first choice, a fixed
    /// stage's depth set to its count and ResNet's stem entry set to the smallest or the largest
    /// depth choice (the two networks it can mean), so that equal networks compare equal.
    pub fn canonical(&self, space: &SearchSpace) -> ArchConfig {
        let mut c = self.clone();
        c.canonicalize(space);
        c
    }

    /// [`ArchConfig::canonical`] in place (no allocation: the search's hot loops use it).
    pub fn canonicalize(&mut self, space: &SearchSpace) {
        if space.family == Family::ResNet {
            return self.canonicalize_resnet(space);
        }
        for (d, stage) in self.d.iter_mut().zip(space.elastic_stages()) {
            if let Some(n) = stage.blocks {
                *d = n;
            }
        }
        let md = space.max_depth();
        let (k0, e0) = (space.ks_list[0], space.expand_ratio_list[0]);
        for i in 0..self.ks.len() {
            if !self.is_active(i, md) {
                self.ks[i] = k0;
                self.e[i] = e0;
            }
        }
    }

    fn canonicalize_resnet(&mut self, space: &SearchSpace) {
        let (lo, hi) = (
            space.depth_list.iter().copied().min().unwrap_or(0),
            space.max_depth() as u32,
        );
        self.d[0] = if self.d[0] == hi { hi } else { lo };
        let e0 = space.expand_ratio_list[0];
        let mut i = 0;
        // a ResNet stage holds `base_depth + max depth` blocks (no fixed counts)
        for (st, d) in space.stages.iter().zip(&self.d[1..]) {
            for pos in 0..(st.base_depth + hi) as usize {
                if pos >= (st.base_depth + d) as usize {
                    self.e[i] = e0;
                }
                i += 1;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn accepts_reference_json_forms() {
        let base = r#""ks":[3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3],"e":[3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3],"d":[2,2,2,2,2]"#;
        for tail in [
            r#""r":[160]"#,
            r#""r":160"#,
            r#""image_size":160"#,
            r#""resolution":160"#,
        ] {
            let a = ArchConfig::from_json(&format!("{{{base},{tail}}}")).unwrap();
            assert_eq!(a.r, 160);
        }
        let err = ArchConfig::from_json(&format!("{{{base}}}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing resolution"), "{err}");
        let err = ArchConfig::from_json(&format!("{{{base},\"r\":[1,2]}}")).unwrap_err();
        assert!(err.to_string().contains("one-element"), "{err}");
    }

    #[test]
    fn a_fixed_stage_takes_its_count_or_any_depth_and_canonicalises_to_its_count() {
        let s = SearchSpace::preset("ofa-proxyless-tiny").unwrap();
        let big = ArchConfig::largest(&s);
        // the reference samples the last stage's depth as 1
        assert_eq!(big.d, vec![4, 4, 4, 4, 4, 1]);
        big.validate(&s).unwrap();
        let mut a = big.clone();
        a.d[5] = 3; // the reference clips any depth there to its one block
        a.validate(&s).unwrap();
        assert_eq!(a.active_blocks(&s), big.active_blocks(&s));
        assert_eq!(a.canonical(&s), big.canonical(&s));
        a.d[5] = 5;
        let e = a.validate(&s).unwrap_err().to_string();
        assert!(e.contains("`d[5]` = 5"), "{e}");
        // a MobileNetV3 stage takes no depth outside its choices
        let m = SearchSpace::preset("ofa-mbv3-tiny").unwrap();
        let mut a = ArchConfig::largest(&m);
        a.d[4] = 1;
        assert!(a
            .validate(&m)
            .unwrap_err()
            .to_string()
            .contains("`d[4]` = 1"));
        // the last block runs whatever the depth of the stages before it
        let small = ArchConfig::smallest(&s);
        let blocks = small.active_blocks(&s);
        assert_eq!(blocks.len(), 1 + 5 * 2 + 1);
        assert_eq!(blocks.last().unwrap().spec.index, 21);
    }

    #[test]
    fn validation_names_the_entry() {
        let s = SearchSpace::preset("ofa-mbv3-w1.0").unwrap();
        let mut a = ArchConfig::largest(&s);
        a.ks[4] = 4;
        assert!(a
            .validate(&s)
            .unwrap_err()
            .to_string()
            .contains("`ks[4]` = 4"));
        let mut a = ArchConfig::largest(&s);
        a.d[2] = 5;
        assert!(a
            .validate(&s)
            .unwrap_err()
            .to_string()
            .contains("`d[2]` = 5"));
        let mut a = ArchConfig::largest(&s);
        a.e.pop();
        assert!(a
            .validate(&s)
            .unwrap_err()
            .to_string()
            .contains("`e` has 19 entries"));
        let mut a = ArchConfig::largest(&s);
        a.r = 130;
        assert!(a
            .validate(&s)
            .unwrap_err()
            .to_string()
            .contains("resolution 130"));
        ArchConfig::smallest(&s).validate(&s).unwrap();
    }
}
