//! What a database source reads (`docs/database-sources.md`): the table, its columns, how the
//! payload is encoded, how keys are made, and the optional write-back (the types are
//! `ferry_core::database`'s). Checked once into a [`Checked`] (pure), so nothing downstream
//! re-validates.

use super::sql::{check_where, quote_ident, quote_table};
use super::template::{Template, WriteBackTemplate};

pub use ferry_core::database::{
    ContentTypeRule, DbConfig, Encoding, WriteBackConfig, DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE,
};

/// A configuration that is not usable, with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    pub field: &'static str,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        ConfigError {
            field,
            message: message.into(),
        }
    }
}

/// A checked configuration: identifiers quoted, the condition wrapped, templates parsed.
#[derive(Clone, Debug)]
pub struct Checked {
    pub config: DbConfig,
    /// `"schema"."table"` (as PostgreSQL's privilege functions take it; statements quote
    /// per dialect, [`super::sql::Queries`]).
    pub table: String,
    /// `(condition)`, when there is one.
    pub condition: Option<String>,
    pub key: Template,
    /// The columns the key template names besides the id, unquoted, in template order.
    pub key_columns: Vec<String>,
    /// The write-back value's template.
    pub write_back: Option<WriteBackTemplate>,
}

/// Checks a configuration (the plain data of `ferry-core`) once, before anything is read.
pub trait Check {
    /// Checks every field; the first problem found is the error, with its field.
    fn check(&self) -> Result<Checked, ConfigError>;
}

impl Check for DbConfig {
    fn check(&self) -> Result<Checked, ConfigError> {
        let table = quote_table(&self.table).map_err(|m| ConfigError::new("table", m))?;
        quote_ident(&self.id_column).map_err(|m| ConfigError::new("idColumn", m))?;
        quote_ident(&self.data_column).map_err(|m| ConfigError::new("dataColumn", m))?;
        if self.id_column == self.data_column {
            return Err(ConfigError::new(
                "dataColumn",
                "must be another column than idColumn",
            ));
        }
        if let Some(c) = &self.content_type.column {
            quote_ident(c).map_err(|m| ConfigError::new("contentType.column", m))?;
        }
        if let Some(c) = &self.modified_column {
            quote_ident(c).map_err(|m| ConfigError::new("modifiedColumn", m))?;
        }
        let condition = match &self.where_clause {
            Some(w) => Some(check_where(w).map_err(|m| ConfigError::new("where", m))?),
            None => None,
        };
        if self.batch_size == 0 || self.batch_size > MAX_BATCH_SIZE {
            return Err(ConfigError::new(
                "batchSize",
                format!("must be between 1 and {MAX_BATCH_SIZE}"),
            ));
        }
        let key =
            Template::parse(&self.key, &self.id_column).map_err(|m| ConfigError::new("key", m))?;
        let key_columns = key.columns();
        for c in &key_columns {
            quote_ident(c).map_err(|m| ConfigError::new("key", m))?;
        }
        let write_back = match &self.write_back {
            None => None,
            Some(w) => {
                quote_ident(&w.column).map_err(|m| ConfigError::new("writeBack.column", m))?;
                if [&self.id_column, &self.data_column].contains(&&w.column)
                    || self.modified_column.as_ref() == Some(&w.column)
                    || self.content_type.column.as_ref() == Some(&w.column)
                    || key_columns.contains(&w.column)
                {
                    return Err(ConfigError::new(
                        "writeBack.column",
                        "must be a column the source does not read",
                    ));
                }
                let value = WriteBackTemplate::parse(&w.value)
                    .map_err(|m| ConfigError::new("writeBack.value", m))?;
                Some(value)
            }
        };
        Ok(Checked {
            config: self.clone(),
            table,
            condition,
            key,
            key_columns,
            write_back,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn config() -> DbConfig {
        DbConfig {
            table: "images".into(),
            id_column: "id".into(),
            data_column: "image_data".into(),
            encoding: Encoding::Base64,
            key: "images/{id}.{ext}".into(),
            content_type: ContentTypeRule {
                column: Some("mime_type".into()),
                sniff: false,
            },
            modified_column: Some("updated_at".into()),
            where_clause: Some("deleted_at IS NULL".into()),
            batch_size: 500,
            write_back: Some(WriteBackConfig {
                column: "image_url".into(),
                value: "https://img.example.com/{key}".into(),
                clear_data: false,
            }),
        }
    }

    #[test]
    fn the_issue_example_is_accepted() {
        let c = config().check().unwrap();
        assert_eq!(c.table, "\"images\"");
        assert_eq!(c.condition.as_deref(), Some("(deleted_at IS NULL)"));
        assert!(c.key_columns.is_empty());
        let yaml = r#"{"table":"public.images","idColumn":"id","dataColumn":"d","key":"{id}","where":"x > 1"}"#;
        let parsed: DbConfig = serde_json::from_str(yaml).unwrap();
        assert_eq!(parsed.batch_size, DEFAULT_BATCH_SIZE);
        assert_eq!(parsed.encoding, Encoding::Auto);
        assert_eq!(parsed.check().unwrap().table, "\"public\".\"images\"");
    }

    #[test]
    fn each_field_is_checked() {
        let bad = |f: fn(&mut DbConfig), field: &str| {
            let mut c = config();
            f(&mut c);
            assert_eq!(c.check().unwrap_err().field, field);
        };
        bad(|c| c.table = String::new(), "table");
        bad(|c| c.id_column = "a\0b".into(), "idColumn");
        bad(|c| c.data_column = "id".into(), "dataColumn");
        bad(
            |c| c.where_clause = Some("1=1; DROP TABLE images".into()),
            "where",
        );
        bad(|c| c.batch_size = 0, "batchSize");
        bad(|c| c.key = "images/{name}.png".into(), "key");
        bad(
            |c| c.write_back.as_mut().unwrap().column = "image_data".into(),
            "writeBack.column",
        );
        bad(
            |c| c.write_back.as_mut().unwrap().value = "{nope}".into(),
            "writeBack.value",
        );
    }
}
