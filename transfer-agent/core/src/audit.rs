//! What a job does with the objects it selects, besides copying them: audit the two sides
//! against each other (`mode: Check`), and list the source in an inventory. Part of the
//! `MigrationJob` API too, which re-exports them: their doc comments become `kubectl explain`
//! text (`docs/check.md`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a job does.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Mode {
    /// Copy what the destination lacks or holds in another version (the default).
    #[default]
    Copy,
    /// Audit: list both sides like a copy and compare each selected key, writing nothing but
    /// the report. Each key is identical, missing at the destination, different (size; ETag
    /// where both are MD5s; with `verify: ReRead` the bytes of both sides, read and hashed),
    /// or extra at the destination. The job ends `Completed` when every key is identical,
    /// `PartiallyCompleted` when differences were found.
    Check,
}

impl Mode {
    pub fn is_copy(&self) -> bool {
        *self == Mode::Copy
    }
}

/// The inventory of a dry run: every selected source object with its planned action
/// (`inventory-NNNNNN.jsonl` and `.csv` per shard in the report folder).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    /// `None` (the default) lists what the listings say; `Sha256` also reads every object,
    /// streamed in parts, and records the SHA-256 of its bytes.
    #[serde(default)]
    pub checksums: InventoryChecksums,
}

/// Which checksum an inventory computes from the bytes.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum InventoryChecksums {
    /// None: only the listings' ETags.
    #[default]
    None,
    /// The SHA-256 of each object's bytes (every object is read).
    Sha256,
}
