//! `Ratio`: an expand ratio as the reference writes it, a whole number for the MBConv families
//! (3, 4, 6) or a fraction for ResNet's bottlenecks (0.2, 0.25, 0.35).

use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An expand ratio. A whole ratio serialises as a JSON integer (`6`, so files written before
/// fractions existed keep their bytes), any other as a float (`0.25`). Equality, hashing and order
/// are those of the value (`-0.0` and NaN cannot be made: [`Ratio::new`] refuses them).
#[derive(Clone, Copy)]
pub struct Ratio(f64);

impl fmt::Debug for Ratio {
    /// As [`fmt::Display`]: `[3, 4, 6]`, `[0.2, 0.25]` in lists.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Ratio {
    /// A ratio from a finite, positive value; `None` otherwise.
    #[inline]
    pub fn new(v: f64) -> Option<Ratio> {
        (v.is_finite() && v > 0.0).then_some(Ratio(v))
    }

    /// The value.
    #[inline]
    pub fn get(self) -> f64 {
        self.0
    }

    /// The value when it is a whole number that fits a `u32` (the MBConv families' ratios).
    #[inline]
    pub fn whole(self) -> Option<u32> {
        (self.0.fract() == 0.0 && self.0 <= f64::from(u32::MAX)).then_some(self.0 as u32)
    }

    /// `round(c · ratio)` as Python's `round` (half to even), the reference's middle-width rule
    /// before `make_divisible`.
    #[inline]
    pub fn times(self, c: u32) -> f64 {
        (f64::from(c) * self.0).round_ties_even()
    }
}

impl From<u32> for Ratio {
    #[inline]
    fn from(v: u32) -> Ratio {
        Ratio(f64::from(v))
    }
}

impl PartialEq for Ratio {
    #[inline]
    fn eq(&self, o: &Ratio) -> bool {
        self.0.to_bits() == o.0.to_bits()
    }
}
impl Eq for Ratio {}

impl Hash for Ratio {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.0.to_bits().hash(h);
    }
}

impl PartialOrd for Ratio {
    #[inline]
    fn partial_cmp(&self, o: &Ratio) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ratio {
    #[inline]
    fn cmp(&self, o: &Ratio) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

impl PartialEq<u32> for Ratio {
    #[inline]
    fn eq(&self, o: &u32) -> bool {
        self.0 == f64::from(*o)
    }
}

impl fmt::Display for Ratio {
    /// `6` for a whole ratio, `0.25` otherwise (Rust's shortest round-trip form, as Python's
    /// `repr`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.whole() {
            Some(w) => write!(f, "{w}"),
            None => write!(f, "{}", self.0),
        }
    }
}

impl Serialize for Ratio {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.whole() {
            Some(w) => s.serialize_u32(w),
            None => s.serialize_f64(self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Ratio {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Ratio, D::Error> {
        let v = f64::deserialize(de)?;
        Ratio::new(v).ok_or_else(|| {
            serde::de::Error::custom(format!("an expand ratio must be positive, got {v}"))
        })
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Ratio {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Number)
            .description(Some(
                "an expand ratio: 3, 4, 6 (MBConv) or 0.2, 0.25, 0.35 (ResNet)",
            ))
            .into()
    }
}
#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Ratio {}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn whole_ratios_keep_their_integer_form_and_fractions_round_trip() {
        let v: Vec<Ratio> = serde_json::from_str("[3, 6.0, 0.25, 0.35]").unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), "[3,6,0.25,0.35]");
        assert_eq!(v[0], 3u32);
        assert_eq!(v[2].to_string(), "0.25");
        assert_eq!((v[0].whole(), v[2].whole()), (Some(3), None));
        assert!(serde_json::from_str::<Ratio>("0").is_err());
        assert!(serde_json::from_str::<Ratio>("-1").is_err());
        assert!(v[2] < v[3] && v[3] < v[0]);
    }

    #[test]
    fn times_rounds_half_to_even_as_python() {
        // round(2.5) == 2, round(3.5) == 4 in Python 3
        assert_eq!(Ratio::new(0.5).unwrap().times(5), 2.0);
        assert_eq!(Ratio::new(0.5).unwrap().times(7), 4.0);
        // 256 · 0.35 = 89.6 → 90; 16 · 0.2 = 3.2 → 3
        assert_eq!(Ratio::new(0.35).unwrap().times(256), 90.0);
        assert_eq!(Ratio::new(0.2).unwrap().times(16), 3.0);
        assert_eq!(Ratio::from(6).times(24), 144.0);
    }
}
