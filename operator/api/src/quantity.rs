//! Byte quantities written the Kubernetes way (`64Mi`, `5Gi`, `1500k`, `1024`).

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A number of bytes, written as a Kubernetes quantity string (`1Ki`, `64Mi`, `5Gi`, `200M`)
/// or a plain integer. Kept as the user wrote it so that `kubectl get -o yaml` shows it
/// unchanged; [`ByteSize::bytes`] gives the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ByteSize {
    text: String,
    bytes: u64,
}

/// The longest quantity text the CRD accepts.
pub const MAX_TEXT_LEN: usize = 32;
/// The CRD's pattern for a quantity: the forms [`ByteSize::parse`] reads.
pub const PATTERN: &str = "^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$";
/// The CRD's CEL bound on every quantity: below 2^64 bytes, i.e. at most `u64::MAX`.
pub const BOUND_RULE: &str = "quantity(self).compareTo(quantity('16Ei')) < 0";
const BOUND_MESSAGE: &str = "must be less than 16Ei (at most 18446744073709551615 bytes)";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a byte quantity: write a whole number with an optional suffix Ki, Mi, Gi, Ti, k, M, G or T (for example 64Mi)")]
pub struct QuantityError(pub String);

impl ByteSize {
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let bytes = parse_bytes(text).ok_or_else(|| QuantityError(text.to_string()))?;
        Ok(ByteSize {
            text: text.trim().to_string(),
            bytes,
        })
    }

    pub fn from_bytes(bytes: u64) -> Self {
        ByteSize {
            text: bytes.to_string(),
            bytes,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

fn parse_bytes(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    if num.is_empty() {
        return None;
    }
    let n: u64 = num.parse().ok()?;
    n.checked_mul(multiplier(suffix)?)
}

/// The suffixes a quantity may carry (after a whole number), with what they multiply by.
pub const SUFFIXES: [(&str, u64); 8] = [
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("k", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
];

fn multiplier(suffix: &str) -> Option<u64> {
    if suffix.is_empty() {
        return Some(1);
    }
    SUFFIXES.iter().find(|(s, _)| *s == suffix).map(|(_, m)| *m)
}

/// Formats a byte count for humans (`1.5 GiB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize::from_bytes(n)),
            Raw::Text(t) => ByteSize::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }

    fn inline_schema() -> bool {
        true
    }

    /// The forms [`ByteSize::parse`] reads, and nothing above `u64::MAX` bytes: an integer
    /// quantity below `16Ei` (2^64) is exactly one that fits a u64 (a test checks the edges),
    /// so the API server refuses a value that would make the resource undecodable.
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "maxLength": MAX_TEXT_LEN,
            "pattern": PATTERN,
            "x-kubernetes-validations": [{
                "rule": BOUND_RULE,
                "message": BOUND_MESSAGE,
            }]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_and_decimal_suffixes() {
        assert_eq!(ByteSize::parse("1Ki").unwrap().bytes(), 1024);
        assert_eq!(ByteSize::parse("64Mi").unwrap().bytes(), 64 << 20);
        assert_eq!(ByteSize::parse("5Gi").unwrap().bytes(), 5 << 30);
        assert_eq!(ByteSize::parse("200M").unwrap().bytes(), 200_000_000);
        assert_eq!(ByteSize::parse("1500k").unwrap().bytes(), 1_500_000);
        assert_eq!(ByteSize::parse("42").unwrap().bytes(), 42);
    }

    #[test]
    fn rejects_garbage_and_overflow() {
        for bad in [
            "",
            "Mi",
            "1.5Gi",
            "-1",
            "10 MB",
            "1Pi",
            "99999999999999999999Ti",
        ] {
            assert!(ByteSize::parse(bad).is_err(), "{bad} accepted");
        }
    }

    /// A model of the CRD's checks on a quantity (pattern, maxLength, and the CEL bound
    /// `quantity(self) < 16Ei` computed exactly).
    fn schema_accepts(text: &str) -> bool {
        if text.is_empty() || text.len() > MAX_TEXT_LEN {
            return false;
        }
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (num, suffix) = text.split_at(split);
        let Some(mult) = multiplier(suffix).map(u128::from) else {
            return false;
        };
        if num.is_empty() {
            return false;
        }
        // At most 32 digits: fits a u128 (< 3.4e38) once leading zeros are gone.
        let digits = num.trim_start_matches('0');
        if digits.len() > 38 {
            return false;
        }
        let n: u128 = if digits.is_empty() {
            0
        } else {
            digits.parse().unwrap()
        };
        n.checked_mul(mult).is_some_and(|v| v < 1u128 << 64)
    }

    /// The largest value the CRD accepts parses, and the next one (refused by the CRD) would not:
    /// for every suffix, so `ByteSize` and the schema agree exactly at the edge.
    #[test]
    fn the_crd_bound_is_exactly_what_parses() {
        let suffixes = std::iter::once(("", 1)).chain(SUFFIXES);
        for (suffix, mult) in suffixes {
            let largest = u64::MAX as u128 / mult as u128;
            for n in [0, 1, largest - 1, largest, largest + 1, largest * 10] {
                let text = format!("{n}{suffix}");
                let accepted = schema_accepts(&text);
                assert_eq!(accepted, n <= largest, "{text}");
                assert_eq!(
                    ByteSize::parse(&text).is_ok(),
                    accepted,
                    "{text}: the CRD and the parser disagree"
                );
            }
        }
        let max = ByteSize::parse("18446744073709551615").unwrap();
        assert_eq!(max.bytes(), u64::MAX);
        assert!(!schema_accepts("18446744073709551616"));
        assert!(ByteSize::parse("18446744073709551616").is_err());
        // Leading zeros up to maxLength.
        let padded = format!("{}1Ti", "0".repeat(MAX_TEXT_LEN - 3));
        assert!(schema_accepts(&padded) && ByteSize::parse(&padded).is_ok());
        assert!(!schema_accepts(&format!("0{padded}")));
        // 16Ei itself is the first value refused.
        assert!(!schema_accepts("16777216Ti"));
        assert!(schema_accepts("16777215Ti") && ByteSize::parse("16777215Ti").is_ok());
    }

    #[test]
    fn the_schema_carries_the_bound() {
        let s = serde_json::to_value(schemars::schema_for!(ByteSize)).unwrap();
        assert_eq!(s["pattern"], PATTERN);
        assert_eq!(s["maxLength"], MAX_TEXT_LEN);
        assert_eq!(s["x-kubernetes-validations"][0]["rule"], BOUND_RULE);
    }

    #[test]
    fn yaml_accepts_int_or_string_and_keeps_text() {
        let v: ByteSize = serde_yaml::from_str("64Mi").unwrap();
        assert_eq!(serde_yaml::to_string(&v).unwrap().trim(), "64Mi");
        let v: ByteSize = serde_yaml::from_str("1024").unwrap();
        assert_eq!(v.bytes(), 1024);
    }

    #[test]
    fn human_readable() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }
}
