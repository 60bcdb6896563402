//! Where each side of a job is, as the plan carries it: one [`StoreConfig`] per side, with
//! defaults resolved, and the secret values each side's credentials come from.
//!
//! A store kind is one variant here, one `open` arm in the engine (`ferry_engine::stores`)
//! and one implementation of the engine's `Source`/`Sink` traits; nothing else matches on
//! the kind.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One side of a job.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum StoreConfig {
    /// A bucket (and key prefix) on an S3-compatible service.
    S3(S3Config),
    /// A directory tree.
    Filesystem(FsConfig),
}

impl StoreConfig {
    /// A short description for messages, without credentials.
    pub fn describe(&self) -> String {
        match self {
            StoreConfig::S3(s3) => {
                let host = s3.endpoint.as_deref().unwrap_or("aws");
                format!("s3://{}/{} ({host})", s3.bucket, s3.prefix)
            }
            StoreConfig::Filesystem(fs) => fs.path.clone(),
        }
    }

    /// Where `folder` (below the side's root: the bucket, or the directory) is, for people:
    /// `s3://bucket/folder` or a path.
    pub fn location_of(&self, folder: &str) -> String {
        match self {
            StoreConfig::S3(s3) => format!("s3://{}/{folder}", s3.bucket),
            StoreConfig::Filesystem(fs) => std::path::Path::new(&fs.path)
                .join(folder)
                .display()
                .to_string(),
        }
    }
}

/// A bucket and key prefix on an S3-compatible service.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3Config {
    /// The service URL; AWS S3 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The region requests are signed for.
    pub region: String,
    pub bucket: String,
    /// A raw key prefix: keys are read below it and written below it.
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub force_path_style: bool,
    /// How requests are signed.
    pub auth: S3Auth,
    /// Options of written objects (destinations only).
    #[serde(default)]
    pub write: S3WriteOptions,
}

/// How an S3 side signs its requests.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum S3Auth {
    /// Keys from the named Secret (their values reach the store as [`SideSecrets`]).
    Secret { name: String },
    /// The default AWS provider chain (IRSA, Pod Identity, instance role).
    DefaultChain,
    /// Unsigned requests (public sources).
    Anonymous,
}

/// Options of objects written to an S3 destination.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3WriteOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_side_encryption: Option<ServerSideEncryption>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canned_acl: Option<String>,
}

/// Server-side encryption of written objects.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ServerSideEncryption {
    AES256,
    #[serde(rename = "aws:kms")]
    AwsKms,
}

/// A directory tree; keys are the `/`-separated paths of the files below `path`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FsConfig {
    pub path: String,
}

/// A key a kind of store reads from its side's Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecretKey {
    pub name: &'static str,
    pub required: bool,
}

/// The keys an S3 side reads from its Secret.
pub const S3_SECRET_KEYS: &[SecretKey] = &[
    SecretKey {
        name: S3_ACCESS_KEY_ID,
        required: true,
    },
    SecretKey {
        name: S3_SECRET_ACCESS_KEY,
        required: true,
    },
    SecretKey {
        name: S3_SESSION_TOKEN,
        required: false,
    },
];
pub const S3_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
pub const S3_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
pub const S3_SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";

/// The secret values of one side, by Secret key (`AWS_ACCESS_KEY_ID`...). Empty for a side
/// without a Secret. Never printed: its `Debug` shows the key names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SideSecrets(BTreeMap<String, String>);

impl SideSecrets {
    pub fn new(values: BTreeMap<String, String>) -> Self {
        SideSecrets(values.into_iter().filter(|(_, v)| !v.is_empty()).collect())
    }

    /// The value of `key`, when present and not empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for SideSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SideSecrets(keys: {:?})",
            self.0.keys().collect::<Vec<_>>()
        )
    }
}

/// The secret values of every side of a job.
#[derive(Clone, Debug, Default)]
pub struct JobCredentials {
    pub source: SideSecrets,
    pub destination: SideSecrets,
    pub report: SideSecrets,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_their_values() {
        let s = SideSecrets::new(BTreeMap::from([(
            S3_SECRET_ACCESS_KEY.to_string(),
            "hunter2".to_string(),
        )]));
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.get(S3_SECRET_ACCESS_KEY), Some("hunter2"));
    }
}
