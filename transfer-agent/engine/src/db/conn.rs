//! Connections (sqlx pools) to SQLite and PostgreSQL, their values as plain [`Value`]s, their
//! errors as classified [`TransferError`]s, and the connection URL, which is a secret: it is
//! shown only by [`DbUrl::redacted`], and its password is scrubbed from every message.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use ferry_core::FailureClass;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{Row, TypeInfo, ValueRef};

use super::row::Value;
use super::sql::Dialect;
use crate::error::TransferError;

/// Connections a source keeps to PostgreSQL for reading at most.
const PG_CONNECTIONS: u32 = 8;
/// Connections a source keeps to a SQLite file for reading.
const SQLITE_READERS: u32 = 4;
/// How long a connection may be waited for, and how long SQLite waits for a lock.
const WAIT: Duration = Duration::from_secs(30);

/// A connection URL: `postgres://user:password@host:5432/db?sslmode=require`,
/// `sqlite:///data/app.db` (an absolute path) or `sqlite:app.db`.
#[derive(Clone)]
pub struct DbUrl {
    url: String,
    pub dialect: Dialect,
    /// What a message may show.
    shown: String,
    /// The password, as written and percent-decoded, to scrub from messages.
    secrets: Vec<String>,
}

impl std::fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl DbUrl {
    pub fn parse(url: &str) -> Result<DbUrl, TransferError> {
        let url = url.trim();
        let invalid = |m: &str| TransferError::new(FailureClass::InvalidRequest, m).fatal();
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.split('?').next().unwrap_or_default();
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(invalid("the SQLite URL names no file"));
            }
            return Ok(DbUrl {
                url: url.to_string(),
                dialect: Dialect::Sqlite,
                shown: format!("sqlite:{path}"),
                secrets: Vec::new(),
            });
        }
        let parsed = url::Url::parse(url).map_err(|_| {
            invalid("the database URL is not a URL (postgres://user:password@host/db or sqlite:///path)")
        })?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(invalid(&format!(
                "databases of kind {:?} are not supported (postgres:// or sqlite:)",
                parsed.scheme()
            )));
        }
        let mut secrets = Vec::new();
        if let Some(pw) = parsed.password().filter(|p| !p.is_empty()) {
            secrets.push(pw.to_string());
            if let Ok(d) = percent_encoding::percent_decode_str(pw).decode_utf8() {
                secrets.push(d.into_owned());
            }
        }
        for (k, v) in parsed.query_pairs() {
            if k.contains("password") && !v.is_empty() {
                secrets.push(v.into_owned());
            }
        }
        let user = parsed.username();
        let host = parsed.host_str().unwrap_or("localhost");
        let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
        let shown = format!(
            "{}://{}{host}{port}{}",
            parsed.scheme(),
            if user.is_empty() {
                String::new()
            } else {
                format!("{user}@")
            },
            parsed.path()
        );
        Ok(DbUrl {
            url: url.to_string(),
            dialect: Dialect::Postgres,
            shown,
            secrets,
        })
    }

    /// The URL without its password and query: user, host, port, database (or the file).
    pub fn redacted(&self) -> &str {
        &self.shown
    }

    /// `msg` without the password anywhere in it (it is also redacted as any message is).
    pub fn scrub(&self, msg: &str) -> String {
        let mut m = msg.replace(&self.url, &self.shown);
        for s in &self.secrets {
            m = m.replace(s.as_str(), "<redacted>");
        }
        m
    }

    /// A classified error of `what`, scrubbed.
    pub fn error(&self, what: &str, e: &sqlx::Error) -> TransferError {
        classify(what, e, |m| self.scrub(m))
    }
}

/// A pool of connections to one database.
#[derive(Clone, Debug)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$p` bound to the pool of either kind (the same code for both).
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            $crate::db::conn::Pool::Sqlite($p) => $body,
            $crate::db::conn::Pool::Postgres($p) => $body,
        }
    };
}
pub(crate) use on_pool;

/// `$query` with a row id bound as its next parameter (an integer or text).
macro_rules! bind_id {
    ($query:expr, $id:expr) => {
        match $id {
            $crate::db::row::Id::Int(i) => $query.bind(*i),
            $crate::db::row::Id::Text(t) => $query.bind(t.clone()),
        }
    };
}
pub(crate) use bind_id;

/// Ends the transaction begun on `$conn`: COMMIT when `$result` is Ok (its value is the
/// macro's), else ROLLBACK, the connection closed rather than given back to the pool in a
/// transaction, and the error (mapped by `$err`) returned from the enclosing function.
macro_rules! end_transaction {
    ($conn:ident, $result:expr, $err:expr) => {
        match $result {
            Ok(v) => {
                sqlx::query("COMMIT")
                    .execute(&mut *$conn)
                    .await
                    .map_err($err)?;
                v
            }
            Err(e) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *$conn).await;
                $conn.close_on_drop();
                return Err($err(e));
            }
        }
    };
}
pub(crate) use end_transaction;

impl Pool {
    /// Opens a pool (connecting lazily: errors appear at the first query): read-only unless
    /// `write` (a SQLite file opened read-only, PostgreSQL sessions with
    /// `default_transaction_read_only`), one connection when `write`. A SQLite file is never
    /// created.
    pub fn open(url: &DbUrl, write: bool) -> Result<Pool, TransferError> {
        let invalid = |e: sqlx::Error| url.error("the database URL", &e).fatal();
        Ok(match url.dialect {
            Dialect::Sqlite => {
                let opts = SqliteConnectOptions::from_str(&url.url)
                    .map_err(invalid)?
                    .read_only(!write)
                    .create_if_missing(false)
                    .busy_timeout(WAIT);
                Pool::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(if write { 1 } else { SQLITE_READERS })
                        .acquire_timeout(WAIT)
                        .connect_lazy_with(opts),
                )
            }
            Dialect::Postgres => {
                let mut opts = PgConnectOptions::from_str(&url.url)
                    .map_err(invalid)?
                    .application_name("ferry");
                if !write {
                    // Every statement of a reading session is read-only, transaction or not.
                    opts = opts.options([("default_transaction_read_only", "on")]);
                }
                Pool::Postgres(
                    PgPoolOptions::new()
                        .max_connections(if write { 1 } else { PG_CONNECTIONS })
                        .acquire_timeout(WAIT)
                        .connect_lazy_with(opts),
                )
            }
        })
    }

    pub async fn close(&self) {
        on_pool!(self, p => p.close().await)
    }
}

/// A row of either kind whose columns can be read as [`Value`]s.
pub trait ValueRow {
    fn value(&self, i: usize) -> Result<Value, sqlx::Error>;

    /// The column holds text (not bytes).
    fn is_text(&self, i: usize) -> Result<bool, sqlx::Error>;
}

impl ValueRow for SqliteRow {
    fn value(&self, i: usize) -> Result<Value, sqlx::Error> {
        let raw = self.try_get_raw(i)?;
        if raw.is_null() {
            return Ok(Value::Null);
        }
        let kind = raw.type_info().name().to_string();
        Ok(match kind.as_str() {
            "INTEGER" | "BOOLEAN" => Value::Int(self.try_get_unchecked(i)?),
            "REAL" | "NUMERIC" => Value::Real(self.try_get_unchecked(i)?),
            "BLOB" => Value::Bytes(self.try_get_unchecked(i)?),
            _ => Value::Text(self.try_get_unchecked(i)?),
        })
    }

    fn is_text(&self, i: usize) -> Result<bool, sqlx::Error> {
        Ok(self.try_get_raw(i)?.type_info().name() != "BLOB")
    }
}

impl ValueRow for PgRow {
    fn value(&self, i: usize) -> Result<Value, sqlx::Error> {
        let raw = self.try_get_raw(i)?;
        if raw.is_null() {
            return Ok(Value::Null);
        }
        let kind = raw.type_info().name().to_string();
        Ok(match kind.as_str() {
            "INT2" => Value::Int(self.try_get::<i16, _>(i)?.into()),
            "INT4" => Value::Int(self.try_get::<i32, _>(i)?.into()),
            "INT8" => Value::Int(self.try_get(i)?),
            "FLOAT4" => Value::Real(self.try_get::<f32, _>(i)?.into()),
            "FLOAT8" => Value::Real(self.try_get(i)?),
            "BYTEA" => Value::Bytes(self.try_get(i)?),
            "TIMESTAMPTZ" => Value::Time(self.try_get::<DateTime<Utc>, _>(i)?),
            "TIMESTAMP" => Value::Time(self.try_get::<NaiveDateTime, _>(i)?.and_utc()),
            "DATE" => Value::Time(
                self.try_get::<NaiveDate, _>(i)?
                    .and_hms_opt(0, 0, 0)
                    .unwrap_or_default()
                    .and_utc(),
            ),
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" | "UNKNOWN" | "CITEXT" => {
                Value::Text(self.try_get_unchecked(i)?)
            }
            other => {
                return Err(sqlx::Error::ColumnDecode {
                    index: i.to_string(),
                    source: format!(
                        "a column of type {other} cannot be read (cast it in a view: integers, text, bytea, timestamps)"
                    )
                    .into(),
                })
            }
        })
    }

    fn is_text(&self, i: usize) -> Result<bool, sqlx::Error> {
        Ok(self.try_get_raw(i)?.type_info().name() != "BYTEA")
    }
}

/// An error of the database as a [`TransferError`]: credentials and permissions are fatal,
/// a missing table or column is a fatal invalid request, lost connections and busy locks
/// are retried.
pub fn classify(what: &str, e: &sqlx::Error, scrub: impl Fn(&str) -> String) -> TransferError {
    use sqlx::Error as E;
    let text = scrub(&e.to_string());
    let msg = format!("{what}: {text}");
    match e {
        E::Database(d) => {
            let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
            let lower = d.message().to_ascii_lowercase();
            let (class, fatal, retry) = match code.as_str() {
                // PostgreSQL: invalid authorization, insufficient privilege.
                "28000" | "28P01" | "42501" => (FailureClass::AccessDenied, true, false),
                // Undefined table / column / function, syntax errors.
                c if c.starts_with("42") => (FailureClass::InvalidRequest, true, false),
                "3D000" => (FailureClass::InvalidRequest, true, false),
                // Read-only transaction, too many connections, serialization, lock timeouts.
                c if c.starts_with("53") || c.starts_with("40") || c == "55P03" || c == "57014" => {
                    (FailureClass::Throttled, false, true)
                }
                // SQLite: busy / locked, read-only, cannot open, schema errors.
                "5" | "6" | "261" | "517" => (FailureClass::Throttled, false, true),
                "8" | "14" | "23" => (FailureClass::AccessDenied, true, false),
                "1" if lower.contains("no such") || lower.contains("syntax") => {
                    (FailureClass::InvalidRequest, true, false)
                }
                _ => (FailureClass::Internal, false, false),
            };
            let mut err = TransferError::new(class, msg).with_code(code);
            if fatal {
                err = err.fatal();
            }
            err.retryable(retry && !fatal)
        }
        E::Io(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => {
            TransferError::new(FailureClass::Network, msg).retryable(true)
        }
        E::Tls(_) | E::Configuration(_) => {
            TransferError::new(FailureClass::InvalidRequest, msg).fatal()
        }
        E::ColumnDecode { .. } | E::ColumnNotFound(_) | E::ColumnIndexOutOfBounds { .. } => {
            TransferError::new(FailureClass::InvalidRequest, msg).fatal()
        }
        _ => TransferError::new(FailureClass::Internal, msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_passwords() {
        let u = DbUrl::parse(
            "postgres://app:s3cr%40t@db.internal:5433/media?sslmode=require&sslpassword=k3y",
        )
        .unwrap();
        assert_eq!(u.dialect, Dialect::Postgres);
        assert_eq!(u.redacted(), "postgres://app@db.internal:5433/media");
        assert_eq!(format!("{u:?}"), "postgres://app@db.internal:5433/media");
        let m = u.scrub("failed: s3cr@t and s3cr%40t and k3y in postgres://app:s3cr%40t@db.internal:5433/media?sslmode=require&sslpassword=k3y");
        assert!(!m.contains("s3cr") && !m.contains("k3y"), "{m}");
        let u = DbUrl::parse("sqlite:///data/app.db?mode=ro").unwrap();
        assert_eq!(
            (u.dialect, u.redacted()),
            (Dialect::Sqlite, "sqlite:/data/app.db")
        );
        assert!(DbUrl::parse("mysql://a:b@h/d").is_err());
        assert!(DbUrl::parse("sqlite:").is_err());
        let e = DbUrl::parse("no url with p4ss").unwrap_err();
        assert!(!e.message.contains("p4ss"), "{}", e.message);
    }
}
