//! A database source as the plan carries it (`docs/database-sources.md`): the table, its
//! columns, how the payload is encoded, how keys are made and the optional write-back. Plain
//! data: the engine (`ferry_engine::db`) checks it and reads the table. The connection URL is
//! a secret, apart: [`DATABASE_URL`] of the side's secrets.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The side secret that holds a database source's connection URL
/// (`postgres://user:password@host/db`, `sqlite:///data/app.db`).
pub const DATABASE_URL: &str = "DATABASE_URL";
/// The largest `batchSize`: a batch is one short read transaction.
pub const MAX_BATCH_SIZE: u32 = 10_000;
/// The default `batchSize`.
pub const DEFAULT_BATCH_SIZE: u32 = 500;

/// A table of a SQLite file or a PostgreSQL database, one object per row.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DbConfig {
    /// `table` or `schema.table`.
    pub table: String,
    /// An integer or text column, unique and ordered (the primary key): paging, shard
    /// ranges and checkpoints follow it.
    pub id_column: String,
    /// The column holding the payload.
    pub data_column: String,
    #[serde(default)]
    pub encoding: Encoding,
    /// The object key, a template over column values: `images/{id:012}.{ext}`.
    pub key: String,
    #[serde(default)]
    pub content_type: ContentTypeRule,
    /// A timestamp column (or Unix seconds): the objects' modification times (filters,
    /// `IfNewer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_column: Option<String>,
    /// An SQL condition rows must meet, the only SQL the user writes.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub where_clause: Option<String>,
    /// Rows per read transaction.
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_back: Option<WriteBackConfig>,
}

fn default_batch_size() -> u32 {
    DEFAULT_BATCH_SIZE
}

/// How the payload column is encoded.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Encoding {
    /// Base64 text (standard or URL-safe alphabet, padded or not, line breaks allowed).
    Base64,
    /// A `data:` URI (`data:image/png;base64,...`, or percent-encoded without `;base64`).
    DataUri,
    /// The bytes themselves (`bytea`, `BLOB`).
    Binary,
    /// Per value: a `data:` URI, else base64 text, else (a binary value) the bytes.
    #[default]
    Auto,
}

/// Where an object's content type comes from.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContentTypeRule {
    /// A column with the declared type; NULL falls back to the data URI's type, then to
    /// sniffing when `sniff` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// Without a declared type, the type is read from the bytes' magic numbers. (A declared
    /// type the magic numbers contradict fails the row in any case.)
    #[serde(default)]
    pub sniff: bool,
}

/// After a verified upload, record where the object is.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WriteBackConfig {
    /// The column that receives the value.
    pub column: String,
    /// A template over `{key}` and `{id}`: `https://images.example.com/{key}`.
    pub value: String,
    /// Also set the data column to NULL.
    #[serde(default)]
    pub clear_data: bool,
}
