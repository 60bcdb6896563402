//! Database sources (issue 15): the rows of a SQLite or PostgreSQL table as objects, one per
//! row, whose payload column holds base64 text, a data URI or the bytes themselves
//! (`docs/database-sources.md`).
//!
//! - [`config`]: what is read (table, columns, encoding, key template, write-back), checked;
//! - [`sql`]: quoted identifiers, the checked `where`, the statements (pure);
//! - [`template`]: keys from rows and back, and whether keys sort as ids (pure);
//! - [`payload`], [`item`]: decoding, sniffing and judging one row (pure);
//! - [`ranges`]: shard boundaries over ids (pure);
//! - [`conn`]: sqlx pools, values, classified and scrubbed errors, the redacted URL;
//! - [`store`]: [`DbStore`], the engine's [`crate::stores::Source`] over a table;
//! - [`listing`], [`sort`]: listing in key order (streamed, or sorted on disk);
//! - [`readahead`]: the rows a listing has just decoded, kept (bounded) for their copies;
//! - [`writeback`]: recording the objects' locations in their rows, conditionally, journaled;
//! - [`revert`]: the rollback of write-back, from its journal.

pub mod config;
pub mod conn;
pub mod item;
pub mod listing;
pub mod payload;
pub mod ranges;
pub mod readahead;
pub mod revert;
pub mod row;
pub mod sort;
pub mod sql;
pub mod store;
pub mod template;
pub mod writeback;

pub use config::{Check, ContentTypeRule, DbConfig, Encoding, WriteBackConfig};
pub use listing::failure_of;
pub use store::DbStore;

#[cfg(test)]
mod tests;
