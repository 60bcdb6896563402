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
    let mult: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
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

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "maxLength": 32,
            "pattern": "^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$"
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
