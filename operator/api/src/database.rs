//! The `database` source: the rows of a SQLite or PostgreSQL table, one object per row
//! (`docs/database-sources.md`). Its spec types, their checks and their translation into the
//! plan's [`DbConfig`], as one [`Location`]. The connection URL comes from a Secret and
//! reaches the agents as the side secret [`DATABASE_URL`].

use ferry_core::database::{
    ContentTypeRule, DbConfig, Encoding, WriteBackConfig, DATABASE_URL, DEFAULT_BATCH_SIZE,
    MAX_BATCH_SIZE,
};
use ferry_core::stores::StoreConfig;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::endpoint::{Location, Scope, SecretUse, SecretValueUse, Side, VolumeUse};
use crate::validate::{dns_subdomain_problem, err, has_dot_segment, SpecError};

/// A table of a SQLite file or a PostgreSQL database whose rows hold images (base64 text, a
/// `data:` URI, or `bytea`/`BLOB` bytes), copied as one object per row (sources only). Ferry
/// reads it in short read-only transactions, keyset-paged by `idColumn`, and writes to it
/// only with `writeBack`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSource {
    /// The Secret key holding the connection URL: `postgres://user:password@host:5432/db`
    /// (`?sslmode=require` and the like) or `sqlite:///path/to/app.db` (a file the agents can
    /// read). The URL's password never appears in logs, status, Events or reports.
    pub connection_secret_ref: SecretKeyRef,
    /// The table: `name` or `schema.name`.
    #[schemars(length(min = 1, max = 257))]
    pub table: String,
    /// A unique integer or text column (the primary key): rows are paged, sharded and
    /// checkpointed in its order. Text ids are ordered by bytes (declare the column
    /// `COLLATE "C"` in PostgreSQL so the index serves that order).
    #[schemars(length(min = 1, max = 128))]
    pub id_column: String,
    /// The column holding the payload. Rows where it is NULL are not objects.
    #[schemars(length(min = 1, max = 128))]
    pub data_column: String,
    /// How the payload is encoded: `Base64` (standard or URL-safe, padded or not), `DataUri`
    /// (`data:image/png;base64,...`), `Binary` (the bytes as stored: `bytea`, `BLOB`), or
    /// `Auto` (default: per value, a data URI, else base64 text, else bytes). A payload that
    /// does not decode, is empty, or whose bytes contradict its declared type fails its row
    /// as `InvalidData` and is never uploaded.
    #[serde(default)]
    pub encoding: Encoding,
    /// The object key, a template over the row: `{id}` (or `{<idColumn>}`) exactly once,
    /// `{id:012}` zero-padded (keys then sort as ids: streamed, sharded by id ranges),
    /// `{ext}` the content type's extension, `{column}` another column's value, `{{`/`}}`
    /// literal braces. Example: `images/{id:012}.{ext}`. A second row with the key of an
    /// earlier one fails as `DuplicateKey`.
    #[schemars(length(min = 1, max = 1024))]
    pub key: String,
    /// Where each object's content type comes from: a column, and/or the bytes' magic
    /// numbers. Default: the data URI's type, else `application/octet-stream`.
    #[serde(default, skip_serializing_if = "ContentTypeSpec::is_default")]
    pub content_type: ContentTypeSpec,
    /// A timestamp column (timestamptz, timestamp, date, Unix seconds or text): the objects'
    /// modification times, for `filters.modifiedAfter`/`modifiedBefore` and `IfNewer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub modified_column: Option<String>,
    /// An SQL condition the rows to copy meet, for example `deleted_at IS NULL`: the only
    /// SQL you write. No `;`, comments or parameter markers; it is used as one parenthesised
    /// term of Ferry's own statements, in read-only transactions.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096), transform = crate::cel::sql_condition)]
    pub where_clause: Option<String>,
    /// Rows per read transaction (and per write-back transaction); default 500.
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 10000))]
    pub batch_size: u32,
    /// After an object is verified at the destination (or found there with the same MD5),
    /// record where it is in its row. The row is updated only if its payload is still the
    /// one copied; no other column is touched. Needs UPDATE on the columns written; without
    /// it Ferry never writes to the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_back: Option<WriteBackSpec>,
    /// In a cluster, for a SQLite file: the PersistentVolumeClaim that holds it, mounted at
    /// `mountPath` in the planner and agent pods, so that a URL such as
    /// `sqlite:///data/app.db` names the file. Ignored by `ferry run` (which reads local
    /// files) and not needed for PostgreSQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<DatabaseVolume>,
}

/// The volume a SQLite file is on, mounted into the planner and the agents.
///
/// Mounted read-only unless `writeBack` is set. With `writeBack` the job must have one shard:
/// SQLite's file locks are not reliable on network filesystems (NFS, CephFS, most
/// ReadWriteMany volumes), so writers in several pods could corrupt the file; one agent is
/// one process, whose writes SQLite serialises itself.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseVolume {
    /// The claim's name, in the job's namespace. ReadWriteMany (or ReadOnlyMany) when the
    /// job has several shards: every agent pod mounts it.
    #[schemars(length(min = 1, max = 253), regex(pattern = crate::validate::DNS_SUBDOMAIN_PATTERN))]
    pub claim_name: String,
    /// Where the pods mount the claim: an absolute directory, default `/data`. Not `/` and
    /// not a system directory (`/dev`, `/etc`, `/proc`, `/sys`, `/usr`, `/tmp`, `/run`,
    /// `/var/run`, `/bin`, `/sbin`, `/lib*`, `/mnt/ferry`, or inside one of them).
    #[serde(default = "default_mount_path")]
    #[schemars(length(min = 2, max = 1024))]
    pub mount_path: String,
    /// A folder inside the claim to mount instead of its root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub sub_path: Option<String>,
    /// Mount read-only. Default: read-only unless `writeBack` is set (which writes the file,
    /// and its journal beside it); `true` with `writeBack` is refused. A database in WAL mode
    /// read through a read-only mount needs its `-wal` and `-shm` files to exist (they do
    /// while the application has it open); otherwise set `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// The directory a SQLite volume is mounted at by default.
pub const DEFAULT_DATABASE_MOUNT: &str = "/data";

fn default_mount_path() -> String {
    DEFAULT_DATABASE_MOUNT.to_string()
}

/// Directories a database volume may not be mounted at or inside: the system's, and where
/// Ferry mounts its own volumes (sides, scratch, URL lists, the ServiceAccount token).
const RESERVED_MOUNTS: &[&str] = &[
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/mnt/ferry",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/tmp",
    "/usr",
    "/var/run",
];

impl DatabaseVolume {
    /// Whether the pods mount it read-only: as asked, else unless `write_back`.
    pub fn read_only(&self, write_back: bool) -> bool {
        self.read_only.unwrap_or(!write_back)
    }

    fn check(&self, p: &str, write_back: bool, errors: &mut Vec<SpecError>) {
        if let Some(why) = dns_subdomain_problem(&self.claim_name) {
            errors.push(err(
                format!("{p}.claimName"),
                format!("not a valid claim name: {why}"),
            ));
        }
        let m = self.mount_path.trim_end_matches('/');
        let reserved = RESERVED_MOUNTS
            .iter()
            .find(|r| m == **r || m.starts_with(&format!("{r}/")));
        if !m.starts_with('/') || m.is_empty() || has_dot_segment(m) || m.contains("//") {
            errors.push(err(
                format!("{p}.mountPath"),
                "must be an absolute directory other than / without '.', '..' or empty segments",
            ));
        } else if let Some(r) = reserved {
            errors.push(err(
                format!("{p}.mountPath"),
                format!("{r} is a system or Ferry directory: mount the volume elsewhere (default /data)"),
            ));
        }
        if let Some(sub) = &self.sub_path {
            if sub.starts_with('/') || has_dot_segment(sub) {
                errors.push(err(
                    format!("{p}.subPath"),
                    "must be a relative folder without '..' segments",
                ));
            }
        }
        if write_back && self.read_only == Some(true) {
            errors.push(err(
                format!("{p}.readOnly"),
                "writeBack writes to the SQLite file: the volume cannot be read-only",
            ));
        }
    }
}

fn default_batch_size() -> u32 {
    DEFAULT_BATCH_SIZE
}

/// A key of a Secret in the resource's own namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253), regex(pattern = crate::validate::DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
    /// The key holding the value; default `DATABASE_URL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: Option<String>,
}

impl SecretKeyRef {
    /// The key, its default filled in.
    pub fn key(&self) -> &str {
        self.key.as_deref().unwrap_or(DATABASE_URL)
    }
}

/// Where an object's content type comes from.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContentTypeSpec {
    /// A column with the declared type (`image/png`); NULL falls back to the data URI's
    /// type, then to `sniff`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub column: Option<String>,
    /// Without a declared type, read the type from the decoded bytes' magic numbers (PNG,
    /// JPEG, GIF, WebP, SVG, ...). A declared type the bytes contradict fails the row in any
    /// case.
    #[serde(default)]
    pub sniff: bool,
}

impl ContentTypeSpec {
    fn is_default(&self) -> bool {
        *self == ContentTypeSpec::default()
    }
}

/// Where a copied row's object is recorded.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WriteBackSpec {
    /// The column that receives the value; not one the source reads.
    #[schemars(length(min = 1, max = 128))]
    pub column: String,
    /// The value, a template over `{key}` (the object's key) and `{id}`:
    /// `https://images.example.com/{key}`.
    #[schemars(length(min = 1, max = 4096))]
    pub value: String,
    /// Also set `dataColumn` to NULL (only once the object is verified). Rows so cleared are
    /// no longer listed; the destination keeps their objects.
    #[serde(default)]
    pub clear_data: bool,
}

impl DatabaseSource {
    /// The plan's configuration (the URL apart, a secret).
    pub fn db_config(&self) -> DbConfig {
        DbConfig {
            table: self.table.clone(),
            id_column: self.id_column.clone(),
            data_column: self.data_column.clone(),
            encoding: self.encoding,
            key: self.key.clone(),
            content_type: ContentTypeRule {
                column: self.content_type.column.clone(),
                sniff: self.content_type.sniff,
            },
            modified_column: self.modified_column.clone(),
            where_clause: self.where_clause.clone(),
            batch_size: self.batch_size,
            write_back: self.write_back.as_ref().map(|w| WriteBackConfig {
                column: w.column.clone(),
                value: w.value.clone(),
                clear_data: w.clear_data,
            }),
        }
    }
}

impl Location for DatabaseSource {
    fn kind(&self) -> &'static str {
        "database"
    }

    /// The checks that need no parsing of SQL or templates; the engine checks every field
    /// again (`DbConfig::check`, the field named) before anything is read.
    fn check(&self, path: &str, side: Side, errors: &mut Vec<SpecError>) {
        let p = format!("{path}.database");
        if side != Side::Source {
            errors.push(err(&p, "a database can only be a source"));
        }
        if let Some(why) = dns_subdomain_problem(&self.connection_secret_ref.name) {
            errors.push(err(
                format!("{p}.connectionSecretRef.name"),
                format!("not a valid Secret name: {why}"),
            ));
        }
        for (value, field) in [
            (Some(&self.table), "table"),
            (Some(&self.id_column), "idColumn"),
            (Some(&self.data_column), "dataColumn"),
            (Some(&self.key), "key"),
            (
                self.write_back.as_ref().map(|w| &w.column),
                "writeBack.column",
            ),
            (
                self.write_back.as_ref().map(|w| &w.value),
                "writeBack.value",
            ),
        ] {
            if value.is_some_and(|v| v.trim().is_empty()) {
                errors.push(err(format!("{p}.{field}"), "must not be empty"));
            }
        }
        if self.batch_size == 0 || self.batch_size > MAX_BATCH_SIZE {
            errors.push(err(
                format!("{p}.batchSize"),
                format!("must be between 1 and {MAX_BATCH_SIZE}"),
            ));
        }
        if self.id_column == self.data_column {
            errors.push(err(
                format!("{p}.dataColumn"),
                "must be another column than idColumn",
            ));
        }
        if let Some(v) = &self.volume {
            v.check(&format!("{p}.volume"), self.write_back.is_some(), errors);
        }
    }

    fn store_config(&self) -> StoreConfig {
        StoreConfig::Database(self.db_config())
    }

    fn secret(&self) -> Option<SecretUse<'_>> {
        None
    }

    fn secret_value(&self) -> Option<SecretValueUse<'_>> {
        Some(SecretValueUse {
            name: &self.connection_secret_ref.name,
            key: self.connection_secret_ref.key(),
            as_key: DATABASE_URL,
            field: "connectionSecretRef",
        })
    }

    fn volume(&self) -> Option<VolumeUse<'_>> {
        None
    }

    fn checked_by_operator(&self) -> bool {
        // Read by the planner and the agents, which get the URL.
        false
    }

    fn scope(&self) -> Scope {
        Scope {
            space: format!("database:{}", self.table),
            prefix: String::new(),
            field: "database.table",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(yaml: &str) -> DatabaseSource {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn problems(d: &DatabaseSource, side: Side) -> Vec<String> {
        let mut errors = Vec::new();
        d.check("spec.source", side, &mut errors);
        errors.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn the_issue_example_translates_with_its_defaults() {
        let d = source(
            "{connectionSecretRef: {name: app-db}, table: images, idColumn: id, \
             dataColumn: image_data, key: 'images/{id}.{ext}', contentType: {column: mime_type}, \
             where: 'deleted_at IS NULL', writeBack: {column: image_url, value: 'https://i/{key}'}}",
        );
        assert!(problems(&d, Side::Source).is_empty());
        assert_eq!(d.connection_secret_ref.key(), DATABASE_URL);
        let StoreConfig::Database(c) = d.store_config() else {
            panic!()
        };
        assert_eq!(c.batch_size, DEFAULT_BATCH_SIZE);
        assert_eq!(c.encoding, Encoding::Auto);
        assert_eq!(c.where_clause.as_deref(), Some("deleted_at IS NULL"));
        assert_eq!(c.content_type.column.as_deref(), Some("mime_type"));
        assert!(!c.write_back.unwrap().clear_data);
        let v = d.secret_value().unwrap();
        assert_eq!(
            (v.name, v.key, v.as_key),
            ("app-db", DATABASE_URL, DATABASE_URL)
        );
    }

    #[test]
    fn bad_sources_are_refused_with_their_field() {
        let ok = "connectionSecretRef: {name: db, key: URL}, table: t, idColumn: id, dataColumn: d, key: '{id}'";
        let d = source(&format!("{{{ok}}}"));
        assert!(problems(&d, Side::Destination)
            .iter()
            .any(|p| p.contains("only be a source")));
        let d = source(&format!("{{{ok}, batchSize: 0}}"));
        assert!(problems(&d, Side::Source)
            .iter()
            .any(|p| p.starts_with("spec.source.database.batchSize")));
        let d = source(&format!("{{{ok}, writeBack: {{column: ' ', value: x}}}}"));
        assert!(problems(&d, Side::Source)
            .iter()
            .any(|p| p.starts_with("spec.source.database.writeBack.column")));
        let mut d = source(&format!("{{{ok}}}"));
        d.data_column = "id".into();
        assert!(problems(&d, Side::Source)
            .iter()
            .any(|p| p.starts_with("spec.source.database.dataColumn")));
        d.connection_secret_ref.name = "Not_A_Name".into();
        assert!(problems(&d, Side::Source)
            .iter()
            .any(|p| p.starts_with("spec.source.database.connectionSecretRef.name")));
    }
}
