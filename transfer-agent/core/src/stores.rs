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
    /// A list of http(s) URLs (read only): each URL is one object.
    UrlList(UrlListConfig),
    /// The rows of a database table (read only): each row is one object. The connection URL
    /// is the side secret [`crate::database::DATABASE_URL`].
    Database(crate::database::DbConfig),
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
            StoreConfig::UrlList(u) => format!("the URL list {}", u.list.describe()),
            StoreConfig::Database(d) => format!("the database table {}", d.table),
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
            // Never a report location (read only): named for messages only.
            StoreConfig::UrlList(u) => format!("{}/{folder}", u.list.describe()),
            StoreConfig::Database(d) => format!("table {}/{folder}", d.table),
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

/// A list of URLs to copy, and how to read them.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UrlListConfig {
    /// Where the list is.
    pub list: UrlListLocation,
    pub format: UrlListFormat,
    /// How a URL becomes a key.
    pub keys: UrlKeys,
    /// At most this many requests per second to one host; 0: no limit.
    #[serde(default)]
    pub requests_per_second_per_host: u32,
    /// URLs may resolve to loopback, link-local or private addresses.
    #[serde(default)]
    pub allow_private_networks: bool,
}

/// Where a URL list is read from.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum UrlListLocation {
    /// A file (on the agent's volume, or the machine of `ferry run`).
    Path { path: String },
    /// An object in a bucket; `s3.prefix` is unused.
    S3 { s3: S3Config, key: String },
    /// A key of a ConfigMap, mounted into the agents at [`url_list_mount_path`].
    ConfigMap { name: String, key: String },
    /// To be collected from a paginated JSON API by the planner, which then replaces it
    /// with [`UrlListLocation::Collected`] in the plan it answers.
    Collect {
        collect: crate::collect::CollectConfig,
    },
    /// The list the collector wrote: the object `key` of the report location `at` (its
    /// root, not its prefix), read with the report location's secrets
    /// ([`crate::collect::source_secrets`]).
    Collected { at: Box<StoreConfig>, key: String },
}

impl UrlListLocation {
    /// For messages.
    pub fn describe(&self) -> String {
        match self {
            UrlListLocation::Path { path } => path.clone(),
            UrlListLocation::S3 { s3, key } => format!("s3://{}/{key}", s3.bucket),
            UrlListLocation::ConfigMap { name, key } => format!("ConfigMap {name}, key {key}"),
            UrlListLocation::Collect { collect } => {
                format!("to be collected from {}", loggable_url(&collect.url))
            }
            UrlListLocation::Collected { at, key } => at.location_of(key),
        }
    }
}

/// `url` without its query string or user info (for messages: signed URLs).
pub fn loggable_url(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or_default();
    match no_query.split_once("://") {
        Some((scheme, rest)) => {
            let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = host.rsplit('@').next().unwrap_or(host);
            format!("{scheme}://{host}/{path}")
        }
        None => no_query.to_string(),
    }
}

/// The folder the operator mounts a URL list's ConfigMap in (`configMapRef`): the list is the
/// file named after its key there. The one home of this path for the operator and the agent.
pub const URL_LIST_MOUNT_DIR: &str = "/etc/ferry/url-list";

/// The variable that names the folder a ConfigMap list is mounted in, when set: the operator
/// sets it to [`URL_LIST_MOUNT_DIR`] in the pods it makes (so the pod spec says where the list
/// is); a stand-in kubelet that materializes the volume elsewhere (the e2e harness, which runs
/// pods as local processes) points it there. Unset: [`URL_LIST_MOUNT_DIR`].
pub const URL_LIST_DIR_VAR: &str = "FERRY_URL_LIST_DIR";

/// The file a ConfigMap list's `key` is read from in an agent: `key` in the folder of
/// [`URL_LIST_DIR_VAR`], else in [`URL_LIST_MOUNT_DIR`].
pub fn url_list_mount_path(key: &str) -> String {
    let dir = std::env::var(URL_LIST_DIR_VAR)
        .ok()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| URL_LIST_MOUNT_DIR.to_string());
    format!("{}/{key}", dir.trim_end_matches('/'))
}

/// The layout of a URL list.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum UrlListFormat {
    /// From the first line: `TsvHttpData-1.0` is Tsv; a first line with a comma is Csv;
    /// anything else is Lines.
    #[default]
    Auto,
    /// One URL per line; blank lines and lines starting with `#` are skipped.
    Lines,
    /// Google Storage Transfer's `TsvHttpData-1.0`: that header line, then per line the URL,
    /// optionally its size in bytes and the base64 MD5 of its bytes, separated by tabs.
    Tsv,
    /// `URL,KEY` per line (as `rclone copyurl --urls`): an explicit key per URL; an empty or
    /// missing KEY maps the URL as `keys` says. Fields may be double-quoted.
    Csv,
}

/// How the key of a URL is made.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UrlKeys {
    pub mode: UrlKeyMode,
    /// Removed from the start of the URL's (percent-decoded) path before the key is made; a
    /// URL whose path does not start with it cannot be copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strip_prefix: Option<String>,
}

/// What of a URL makes its key. The query string is always dropped.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum UrlKeyMode {
    /// The path without its leading `/`, percent-decoded: `https://cdn/a/b%20c.jpg` is
    /// `a/b c.jpg`.
    #[default]
    Path,
    /// The host (with a port other than the scheme's), `/`, then the path as for `Path`:
    /// `cdn/a/b c.jpg` (Storage Transfer's mapping).
    HostAndPath,
}

/// The Secret keys of a URL-list source that are request headers carry this prefix in the
/// side's secrets (the operator passes the whole `headersSecretRef` Secret with it; `ferry run`
/// adds it): `HEADER_Authorization` is the header `Authorization`.
pub const URL_LIST_HEADER_PREFIX: &str = "HEADER_";

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

    /// The values whose key starts with `prefix`, by the rest of the key.
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.0
            .iter()
            .filter_map(move |(k, v)| k.strip_prefix(prefix).map(|rest| (rest, v.as_str())))
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
