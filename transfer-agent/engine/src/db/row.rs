//! A row as read, before it is judged: its id, its payload and the columns the key and the
//! object's headers need, as plain values (no database types past this point).

use std::fmt;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// A row's id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Id {
    Int(i64),
    Text(String),
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Int(i) => write!(f, "{i}"),
            Id::Text(t) => f.write_str(t),
        }
    }
}

/// One value of a row, whatever its database type (in a write-back journal as
/// `"null"`, `{"text": "..."}`, `{"int": 3}`...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Bytes(Vec<u8>),
    Time(DateTime<Utc>),
}

impl Value {
    /// The value as a row id: an integer or text.
    pub fn into_id(self) -> Result<Id, String> {
        match self {
            Value::Int(i) => Ok(Id::Int(i)),
            Value::Text(t) => Ok(Id::Text(t)),
            Value::Null => Err("the id is NULL".into()),
            other => Err(format!(
                "the id column must hold integers or text, not {}",
                other.kind()
            )),
        }
    }

    /// The value as key text: integers in decimal, text as it is.
    pub fn into_text(self) -> Result<String, String> {
        match self {
            Value::Int(i) => Ok(i.to_string()),
            Value::Text(t) => Ok(t),
            Value::Null => Err("is NULL".into()),
            other => Err(format!("holds {}, not text or an integer", other.kind())),
        }
    }

    /// The value as a modification time: a timestamp, Unix seconds, or text in RFC 3339 or
    /// SQL's `YYYY-MM-DD HH:MM:SS[.fff]` (taken as UTC). NULL is no time.
    pub fn into_time(self) -> Result<Option<DateTime<Utc>>, String> {
        match self {
            Value::Null => Ok(None),
            Value::Time(t) => Ok(Some(t)),
            Value::Int(s) => Utc
                .timestamp_opt(s, 0)
                .single()
                .map(Some)
                .ok_or_else(|| format!("{s} is not a time in Unix seconds")),
            Value::Text(t) => parse_time(&t)
                .map(Some)
                .ok_or_else(|| format!("{t:?} is not a time (RFC 3339 or YYYY-MM-DD HH:MM:SS)")),
            other => Err(format!("holds {}, not a time", other.kind())),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Int(_) => "an integer",
            Value::Real(_) => "a real number",
            Value::Text(_) => "text",
            Value::Bytes(_) => "binary data",
            Value::Time(_) => "a timestamp",
        }
    }
}

fn parse_time(t: &str) -> Option<DateTime<Utc>> {
    let t = t.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.with_timezone(&Utc));
    }
    [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
    .map(|n| n.and_utc())
}

/// A row as read.
#[derive(Clone, Debug, PartialEq)]
pub struct RawRow {
    pub id: Id,
    /// The payload as stored (never NULL: NULL payloads are not read).
    pub data: Vec<u8>,
    /// The payload column holds text (not bytes).
    pub data_is_text: bool,
    pub content_type: Value,
    pub modified: Value,
    /// The key template's columns, in order.
    pub columns: Vec<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_from_the_usual_column_types() {
        let t = |v: Value| v.into_time().unwrap().unwrap().to_rfc3339();
        assert_eq!(t(Value::Int(1_700_000_000)), "2023-11-14T22:13:20+00:00");
        assert_eq!(
            t(Value::Text("2024-05-01 10:20:30".into())),
            "2024-05-01T10:20:30+00:00"
        );
        assert_eq!(
            t(Value::Text("2024-05-01T10:20:30.5+02:00".into())),
            "2024-05-01T08:20:30.500+00:00"
        );
        assert_eq!(Value::Null.into_time().unwrap(), None);
        assert!(Value::Text("yesterday".into()).into_time().is_err());
        assert!(Value::Bytes(vec![1]).into_time().is_err());
    }

    #[test]
    fn ids_are_integers_or_text() {
        assert_eq!(Value::Int(3).into_id().unwrap(), Id::Int(3));
        assert_eq!(Value::Text("a".into()).into_id().unwrap().to_string(), "a");
        assert!(Value::Real(1.5).into_id().is_err());
        assert!(Value::Null.into_id().is_err());
    }
}
