//! The kinds of location a side of a job can be, behind one trait: everything the API, the
//! operator and `ferry run` need to know about a kind (its checks, its translation into the
//! plan's store configuration, its Secret, its volume) lives in its [`Location`] impl.
//! [`Endpoint::locations`] is the one place that lists the kinds.

pub use ferry_core::plan::Side;
use ferry_core::stores::{
    FsConfig, S3Auth, S3Config, S3WriteOptions, SecretKey, StoreConfig, S3_SECRET_KEYS,
};

use crate::spec::{Endpoint, FilesystemLocation, PvcRef, S3Location};
use crate::validate::{err, SpecError};

/// The Secret a side's credentials come from and the keys read from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecretUse<'a> {
    pub name: &'a str,
    pub keys: &'static [SecretKey],
    /// The field that names it, below the location (`credentialsSecretRef`).
    pub field: &'static str,
}

/// One key of a Secret whose value the agents get under a name the kind reads
/// (`as_key`), whatever the key is called in the Secret: a database's connection URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecretValueUse<'a> {
    pub name: &'a str,
    /// The key in the Secret.
    pub key: &'a str,
    /// The side secret it becomes (`DATABASE_URL`).
    pub as_key: &'static str,
    /// The field that names it, below the location (`connectionSecretRef`).
    pub field: &'static str,
}

/// A volume the agents mount for a side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VolumeUse<'a> {
    pub claim: &'a PvcRef,
    pub mount_path: &'a str,
}

/// A part of a keyspace two sides may share: sides in the same `space` whose prefixes nest
/// would copy a tree into itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub space: String,
    pub prefix: String,
    /// The field to blame, relative to the side (`s3.prefix`).
    pub field: &'static str,
}

/// One kind of location.
pub trait Location {
    /// The field that holds it in an endpoint (`s3`, `filesystem`).
    fn kind(&self) -> &'static str;
    /// Adds the problems of this location, as side `side` at `path`, to `errors`.
    fn check(&self, path: &str, side: Side, errors: &mut Vec<SpecError>);
    /// The plan's configuration of the store, defaults resolved.
    fn store_config(&self) -> StoreConfig;
    /// The Secret its credentials come from, if any.
    fn secret(&self) -> Option<SecretUse<'_>>;
    /// A volume the agents must mount, if any.
    fn volume(&self) -> Option<VolumeUse<'_>>;
    /// Whether the operator can check it before the agents start. A path lives in the agents'
    /// volume, which only they can see.
    fn checked_by_operator(&self) -> bool;
    /// The part of a keyspace it covers.
    fn scope(&self) -> Scope;
    /// A Secret every key of which the agents get, each with
    /// `ferry_core::stores::URL_LIST_HEADER_PREFIX` after the side's prefix (a URL list's
    /// request headers): passed whole, since its keys are the user's to choose.
    fn whole_secret(&self) -> Option<&str> {
        None
    }
    /// A Secret key whose value the agents get as a side secret of the kind's own name.
    fn secret_value(&self) -> Option<SecretValueUse<'_>> {
        None
    }
}

impl Endpoint {
    /// The kinds an endpoint may hold, as spec fields. Exactly one is set.
    pub const KINDS: &'static [&'static str] = &["s3", "filesystem", "urlList", "database"];

    /// The locations that are set (the only place that lists the kinds' fields).
    fn locations(&self) -> Vec<&dyn Location> {
        let all: [Option<&dyn Location>; 4] = [
            self.s3.as_ref().map(|l| l as &dyn Location),
            self.filesystem.as_ref().map(|l| l as &dyn Location),
            self.url_list.as_ref().map(|l| l as &dyn Location),
            self.database.as_ref().map(|l| l as &dyn Location),
        ];
        all.into_iter().flatten().collect()
    }

    /// The one location set, or why there is not exactly one.
    pub fn location(&self) -> Result<&dyn Location, String> {
        let set = self.locations();
        let kinds = Self::KINDS.join(" or ");
        match set.as_slice() {
            [one] => Ok(*one),
            [] => Err(format!("set exactly one of {kinds}")),
            _ => Err(format!("set exactly one of {kinds}, not {}", set.len())),
        }
    }

    /// Makes relative paths (of a filesystem location) relative to `base`, an absolute
    /// directory (`ferry run` resolves them against the YAML file's directory). `..` may climb
    /// out of it.
    pub fn resolve_relative_paths(&mut self, base: &std::path::Path) {
        if let Some(fs) = self.filesystem.as_mut() {
            let p = std::path::Path::new(&fs.path);
            if p.is_relative() {
                fs.path = normalize(&base.join(p)).to_string_lossy().into_owned();
            }
        }
        if let Some(path) = self.url_list.as_mut().and_then(|u| u.path.as_mut()) {
            let p = std::path::Path::new(path.as_str());
            if p.is_relative() {
                *path = normalize(&base.join(p)).to_string_lossy().into_owned();
            }
        }
    }

    /// A short human description (`s3://bucket/prefix (host)` or a path), without credentials.
    pub fn describe(&self) -> String {
        match self.location() {
            Ok(l) => l.store_config().describe(),
            Err(_) => "(none)".to_string(),
        }
    }
}

/// Removes `.` and `..` components without touching the filesystem.
fn normalize(p: &std::path::Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// A side's region, `us-east-1` when absent or empty.
pub(crate) fn region_or_default(region: &Option<String>) -> String {
    region
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "us-east-1".to_string())
}

/// How an S3 side signs: unsigned, with its Secret's keys, or the default chain.
pub(crate) fn s3_auth(secret: Option<&crate::spec::SecretRef>, anonymous: bool) -> S3Auth {
    match (secret, anonymous) {
        (_, true) => S3Auth::Anonymous,
        (Some(r), false) => S3Auth::Secret {
            name: r.name.clone(),
        },
        (None, false) => S3Auth::DefaultChain,
    }
}

impl Location for S3Location {
    fn kind(&self) -> &'static str {
        "s3"
    }

    fn check(&self, path: &str, side: Side, errors: &mut Vec<SpecError>) {
        let p = format!("{path}.s3");
        if let Some(bad) = crate::validate::bucket_name_problem(&self.bucket) {
            errors.push(err(
                format!("{p}.bucket"),
                format!("{:?} is not a valid bucket name: {bad}", self.bucket),
            ));
        }
        if crate::validate::has_dot_segment(&self.prefix) {
            errors.push(err(
                format!("{p}.prefix"),
                "must not contain '.' or '..' path segments",
            ));
        }
        if let Some(e) = &self.endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                errors.push(err(
                    format!("{p}.endpoint"),
                    format!("{e:?} must start with http:// or https://"),
                ));
            }
            if e.contains('@') {
                errors.push(err(
                    format!("{p}.endpoint"),
                    "must not contain credentials; use credentialsSecretRef",
                ));
            }
        }
        if self.anonymous && side != Side::Source {
            errors.push(err(
                format!("{p}.anonymous"),
                "anonymous access is only for sources",
            ));
        }
        if self.anonymous && self.credentials_secret_ref.is_some() {
            errors.push(err(
                format!("{p}.anonymous"),
                "set either anonymous or credentialsSecretRef, not both",
            ));
        }
        if side == Side::Source {
            for (set, field) in [
                (self.storage_class.is_some(), "storageClass"),
                (
                    self.server_side_encryption.is_some(),
                    "serverSideEncryption",
                ),
                (self.kms_key_id.is_some(), "kmsKeyId"),
                (self.canned_acl.is_some(), "cannedAcl"),
            ] {
                if set {
                    errors.push(err(format!("{p}.{field}"), "is a destination-only option"));
                }
            }
        }
    }

    fn store_config(&self) -> StoreConfig {
        StoreConfig::S3(S3Config {
            endpoint: self.endpoint.clone(),
            region: region_or_default(&self.region),
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            force_path_style: self.force_path_style,
            auth: s3_auth(self.credentials_secret_ref.as_ref(), self.anonymous),
            write: S3WriteOptions {
                storage_class: self.storage_class.clone(),
                server_side_encryption: self.server_side_encryption,
                kms_key_id: self.kms_key_id.clone(),
                canned_acl: self.canned_acl.clone(),
            },
        })
    }

    fn secret(&self) -> Option<SecretUse<'_>> {
        if self.anonymous {
            return None;
        }
        self.credentials_secret_ref.as_ref().map(|r| SecretUse {
            name: &r.name,
            keys: S3_SECRET_KEYS,
            field: "credentialsSecretRef",
        })
    }

    fn volume(&self) -> Option<VolumeUse<'_>> {
        None
    }

    fn checked_by_operator(&self) -> bool {
        true
    }

    fn scope(&self) -> Scope {
        Scope {
            space: format!(
                "s3 {} {}",
                self.endpoint.as_deref().unwrap_or("aws"),
                self.bucket
            ),
            prefix: self.prefix.clone(),
            field: "s3.prefix",
        }
    }
}

impl Location for FilesystemLocation {
    fn kind(&self) -> &'static str {
        "filesystem"
    }

    fn check(&self, path: &str, _side: Side, errors: &mut Vec<SpecError>) {
        if self.path.is_empty() {
            errors.push(err(format!("{path}.filesystem.path"), "must not be empty"));
        }
        if crate::validate::has_dot_segment(&self.path) {
            errors.push(err(
                format!("{path}.filesystem.path"),
                "must not contain '..' segments",
            ));
        }
    }

    fn store_config(&self) -> StoreConfig {
        StoreConfig::Filesystem(FsConfig {
            path: self.path.clone(),
        })
    }

    fn secret(&self) -> Option<SecretUse<'_>> {
        None
    }

    fn volume(&self) -> Option<VolumeUse<'_>> {
        self.persistent_volume_claim
            .as_ref()
            .map(|claim| VolumeUse {
                claim,
                mount_path: &self.path,
            })
    }

    fn checked_by_operator(&self) -> bool {
        false
    }

    fn scope(&self) -> Scope {
        Scope {
            space: "filesystem".into(),
            prefix: format!("{}/", self.path.trim_end_matches('/')),
            field: "filesystem.path",
        }
    }
}
