//! A row judged (pure): the object it becomes (key, bytes, content type, modification time),
//! or why it cannot become one, with a failure class.

use chrono::{DateTime, Utc};
use ferry_core::FailureClass;

use super::config::Checked;
use super::payload::{content_type, decode, extension, sniff};
use super::row::{Id, RawRow, Value};

/// What a source row becomes.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub id: Id,
    pub key: String,
    pub bytes: Vec<u8>,
    pub content_type: String,
    pub modified: Option<DateTime<Utc>>,
}

/// A row that cannot be copied: reported under `key` (made as well as the row allows).
#[derive(Clone, Debug, PartialEq)]
pub struct RowFailure {
    pub id: Id,
    pub key: String,
    pub class: FailureClass,
    pub message: String,
    /// The row's modification time when its column could be read: the filters
    /// (`modifiedAfter`/`Before`) select a failed row as they would its object, so a bad row
    /// they select is reported rather than silently left out.
    pub modified: Option<DateTime<Utc>>,
}

/// The class of rows whose payload or columns cannot make an object.
pub const INVALID: FailureClass = FailureClass::InvalidData;

/// Judges one row.
pub fn judge(c: &Checked, row: RawRow) -> Result<Item, RowFailure> {
    let RawRow {
        id,
        data,
        data_is_text,
        content_type: declared_col,
        modified,
        columns,
    } = row;
    let fail = |message: String, ext: Option<&str>| RowFailure {
        key: fallback_key(c, &id, &columns, ext.unwrap_or("bin")),
        id: id.clone(),
        class: INVALID,
        message: format!("row {id}: {message}"),
        modified: None,
    };
    let declared_col = match declared_col {
        Value::Null => None,
        v => Some(
            v.into_text()
                .map_err(|m| fail(format!("the content type column {m}"), None))?,
        ),
    };
    let decl_ext = declared_col.as_deref().map(extension);
    let modified = modified
        .into_time()
        .map_err(|m| fail(format!("the modified column: {m}"), decl_ext.as_deref()))?;
    // From here on a failure carries the row's time.
    let fail = |message: String, ext: Option<&str>| RowFailure {
        modified,
        ..fail(message, ext)
    };
    let mut texts = Vec::with_capacity(columns.len());
    for (name, v) in c.key_columns.iter().zip(columns.iter().cloned()) {
        texts.push(
            v.into_text()
                .map_err(|m| fail(format!("the key column {name} {m}"), decl_ext.as_deref()))?,
        );
    }
    let decoded =
        decode(c.config.encoding, data, data_is_text).map_err(|m| fail(m, decl_ext.as_deref()))?;
    let declared = declared_col.or(decoded.declared);
    let sniffed = sniff(&decoded.bytes);
    let content_type = content_type(
        declared.as_deref(),
        sniffed.as_deref(),
        c.config.content_type.sniff,
    )
    .map_err(|m| fail(m, declared.as_deref().map(extension).as_deref()))?;
    let ext = extension(&content_type);
    let key = c
        .key
        .render(&id, &texts, &ext)
        .map_err(|m| fail(m, Some(&ext)))?;
    Ok(Item {
        id,
        key,
        bytes: decoded.bytes,
        content_type,
        modified,
    })
}

/// The key a failed row is reported under: rendered with what the row has (NULL or
/// unusable columns as `_`), else the id alone.
fn fallback_key(c: &Checked, id: &Id, columns: &[Value], ext: &str) -> String {
    let texts: Vec<String> = columns
        .iter()
        .map(|v| v.clone().into_text().unwrap_or_else(|_| "_".into()))
        .collect();
    c.key
        .render(id, &texts, ext)
        .unwrap_or_else(|_| format!("{}", id).replace(|ch: char| ch.is_control(), "_"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::config::{tests::config, Check, ContentTypeRule, Encoding};
    use crate::db::payload::tests::{JPEG, PNG};
    use base64::Engine;

    fn b64(b: &[u8]) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .encode(b)
            .into_bytes()
    }

    fn row(id: i64, data: Vec<u8>, mime: Option<&str>) -> RawRow {
        RawRow {
            id: Id::Int(id),
            data,
            data_is_text: true,
            content_type: mime.map_or(Value::Null, |m| Value::Text(m.into())),
            modified: Value::Text("2024-01-02 03:04:05".into()),
            columns: vec![],
        }
    }

    #[test]
    fn rows_become_objects() {
        let c = config().check().unwrap();
        let item = judge(&c, row(7, b64(PNG), Some("image/png"))).unwrap();
        assert_eq!(item.key, "images/7.png");
        assert_eq!(item.bytes, PNG);
        assert_eq!(item.content_type, "image/png");
        assert_eq!(
            item.modified.unwrap().to_rfc3339(),
            "2024-01-02T03:04:05+00:00"
        );
    }

    #[test]
    fn sniffing_gives_the_type_and_the_extension() {
        let mut cfg = config();
        cfg.content_type = ContentTypeRule {
            column: None,
            sniff: true,
        };
        let c = cfg.check().unwrap();
        let item = judge(&c, row(1, b64(JPEG), None)).unwrap();
        assert_eq!(
            (item.key.as_str(), item.content_type.as_str()),
            ("images/1.jpg", "image/jpeg")
        );
        // Without sniffing, no declared type: octet-stream, .bin.
        cfg.content_type.sniff = false;
        let item = judge(&cfg.check().unwrap(), row(1, b64(JPEG), None)).unwrap();
        assert_eq!(item.key, "images/1.bin");
        // A data URI declares its own type.
        cfg.encoding = Encoding::DataUri;
        let uri = [b"data:image/png;base64,".to_vec(), b64(PNG)].concat();
        let item = judge(&cfg.check().unwrap(), row(2, uri, None)).unwrap();
        assert_eq!(item.key, "images/2.png");
    }

    #[test]
    fn bad_rows_fail_with_invalid_data() {
        let c = config().check().unwrap();
        for (r, why) in [
            (
                row(1, b"%%%".to_vec(), Some("image/png")),
                "not valid base64",
            ),
            (row(2, Vec::new(), Some("image/png")), "empty"),
            (row(3, b64(JPEG), Some("image/png")), "contradicts"),
            (
                RawRow {
                    modified: Value::Text("soon".into()),
                    ..row(4, b64(PNG), Some("image/png"))
                },
                "modified",
            ),
        ] {
            let f = judge(&c, r).unwrap_err();
            assert_eq!(f.class, FailureClass::InvalidData);
            assert!(f.message.contains(why), "{}", f.message);
            assert!(f.key.starts_with("images/"), "{}", f.key);
        }
        // A bad payload keeps the row's time, for the filters to select it as they would
        // its object.
        let f = judge(
            &c,
            RawRow {
                modified: Value::Text("2024-01-02 03:04:05".into()),
                ..row(6, Vec::new(), Some("image/png"))
            },
        )
        .unwrap_err();
        assert_eq!(
            f.modified.map(|t| t.to_rfc3339()).as_deref(),
            Some("2024-01-02T03:04:05+00:00")
        );
        // A key column that is NULL.
        let mut cfg = config();
        cfg.key = "{owner}/{id}.{ext}".into();
        let c = cfg.check().unwrap();
        let f = judge(
            &c,
            RawRow {
                columns: vec![Value::Null],
                ..row(5, b64(PNG), Some("image/png"))
            },
        )
        .unwrap_err();
        assert!(f.message.contains("owner is NULL"), "{}", f.message);
        assert_eq!(f.key, "_/5.png");
    }
}
