//! The overwrite and verification policies of a job (`docs/contract.md` §1). They are part of
//! the `MigrationJob` API too, which re-exports them: their doc comments become `kubectl
//! explain` text.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What to do with a key the destination already holds.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OverwritePolicy {
    /// Copy only keys absent at the destination.
    Skip,
    /// Copy every selected object.
    Always,
    /// Copy when the source was modified after the destination object.
    IfNewer,
    /// Copy when sizes differ or a known checksum differs.
    #[default]
    IfDifferent,
}

/// How copies are verified.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum VerifyMode {
    /// The destination checks a checksum of the bytes read (Content-MD5 per part).
    #[default]
    Checksum,
    /// Checksum, and re-read the written object and compare.
    ReRead,
    /// Sizes only: an explicit opt-out.
    Size,
}

impl VerifyMode {
    /// How the status names it: `Checksum`, `ReRead` or `SizeOnly`.
    pub fn reported(self) -> &'static str {
        match self {
            VerifyMode::Checksum => "Checksum",
            VerifyMode::ReRead => "ReRead",
            VerifyMode::Size => "SizeOnly",
        }
    }
}
