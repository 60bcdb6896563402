//! The SQL a database source sends, built once from a checked configuration (pure). Every
//! identifier is quoted; the user's `where` is the only SQL not written here, checked by
//! [`check_where`] and only ever inserted as one parenthesised condition; every value is a
//! bound parameter.

use super::config::Checked;

/// The SQL dialect of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// `name` quoted as an identifier (checked by [`quote_ident`] first). SQLite gets
    /// backquotes: a double-quoted name that is no column would silently be a string there.
    pub fn quote(self, name: &str) -> String {
        match self {
            Dialect::Sqlite => format!("`{}`", name.replace('`', "``")),
            Dialect::Postgres => format!("\"{}\"", name.replace('"', "\"\"")),
        }
    }

    /// `table` or `schema.table`, quoted.
    pub fn table(self, table: &str) -> String {
        match table.split_once('.') {
            Some((schema, name)) => format!("{}.{}", self.quote(schema), self.quote(name)),
            None => self.quote(table),
        }
    }

    /// The `n`th (1-based) bound parameter.
    fn param(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}"),
        }
    }
}

/// Whether the id column holds integers or text (byte order: `COLLATE "C"` in PostgreSQL,
/// SQLite's default `BINARY`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum IdKind {
    Int,
    Text,
}

/// `name` as a quoted identifier: `"name"`, inner quotes doubled.
pub fn quote_ident(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("an identifier cannot be empty".into());
    }
    if name.len() > 128 {
        return Err("an identifier is at most 128 bytes".into());
    }
    if name.chars().any(char::is_control) {
        return Err("an identifier cannot contain control characters".into());
    }
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

/// `table` or `schema.table` (split at the first `.`), each part quoted.
pub fn quote_table(table: &str) -> Result<String, String> {
    match table.split_once('.') {
        Some((schema, name)) => Ok(format!("{}.{}", quote_ident(schema)?, quote_ident(name)?)),
        None => quote_ident(table),
    }
}

/// Checks a user's `where` condition and returns it wrapped in parentheses. Refused: `;`
/// anywhere, comments (`--`, `/*`), bound-parameter markers (`?`, `$`, which could also start
/// PostgreSQL dollar quoting) outside string literals, unbalanced parentheses or quotes (which
/// could close the wrapping parenthesis), and an empty condition.
pub fn check_where(cond: &str) -> Result<String, String> {
    if cond.trim().is_empty() {
        return Err("the condition is empty".into());
    }
    if cond.contains(';') {
        return Err("';' is not allowed (one condition, not statements)".into());
    }
    if cond.chars().any(|c| c.is_control() && !c.is_whitespace()) || cond.contains('\0') {
        return Err("control characters are not allowed".into());
    }
    let b = cond.as_bytes();
    let mut depth = 0i32;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"') => {
                // A literal or a quoted identifier; a doubled quote stands for itself.
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err("a quoted string is not closed".into()),
                        Some(&c) if c == q && b.get(i + 1) == Some(&q) => i += 2,
                        Some(&c) if c == q => break,
                        Some(_) => i += 1,
                    }
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => return Err("comments are not allowed".into()),
            b'/' if b.get(i + 1) == Some(&b'*') => return Err("comments are not allowed".into()),
            b'*' if b.get(i + 1) == Some(&b'/') => return Err("comments are not allowed".into()),
            b'?' | b'$' => {
                return Err("parameters ('?', '$') are not allowed outside string literals".into())
            }
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("a ')' closes a parenthesis that was not opened".into());
                }
            }
            _ => {}
        }
        i += 1;
    }
    if depth != 0 {
        return Err("a '(' is not closed".into());
    }
    Ok(format!("({})", cond.trim()))
}

/// The statements of one source, with the select list in the order [`Columns`] gives.
#[derive(Clone, Debug)]
pub struct Queries {
    pub dialect: Dialect,
    /// Bound: the last id of the previous batch (`$1`).
    pub batch_after: String,
    /// The first batch.
    pub batch_first: String,
    /// Bound: an id.
    pub by_id: String,
    /// The smallest and largest id.
    pub bounds: String,
    /// The first id, to learn its kind.
    pub first_id: String,
    /// Bound: how many ids to draw (text ids' shard boundaries).
    pub sample: String,
    /// Reads nothing, but needs every column (the write-back one too), the condition and
    /// SELECT privilege.
    pub probe: String,
    /// Starts a read-only transaction.
    pub begin_read: &'static str,
    /// Starts a write transaction (write-back).
    pub begin_write: &'static str,
    /// Bound: an id. The row (as [`Queries::by_id`], then the write-back column), locked
    /// until the end of the transaction.
    pub lock_by_id: String,
    /// Bound: the value, the id. Sets the write-back column (and clears the data).
    pub update: Option<String>,
    /// Bound: an id. The write-back column of the row, whatever the condition, locked until
    /// the end of the transaction (a rollback's revert).
    pub written_by_id: Option<String>,
    /// Bound: the value from before, the id. Sets the write-back column back.
    pub revert: Option<String>,
}

/// Positions of the columns in every select list.
pub struct Columns;

impl Columns {
    pub const ID: usize = 0;
    pub const DATA: usize = 1;
    pub const CONTENT_TYPE: usize = 2;
    pub const MODIFIED: usize = 3;
    /// The key template's own columns follow, in [`Checked::key_columns`] order.
    pub const KEY_COLUMNS: usize = 4;
}

impl Queries {
    pub fn new(c: &Checked, dialect: Dialect, kind: IdKind) -> Queries {
        let cfg = &c.config;
        let q = |n: &str| dialect.quote(n);
        let t = &dialect.table(&cfg.table);
        let id_col = q(&cfg.id_column);
        let data = q(&cfg.data_column);
        // Byte order of text ids, whatever the database's default collation.
        let id = match (dialect, kind) {
            (Dialect::Postgres, IdKind::Text) => format!("{id_col} COLLATE \"C\""),
            _ => id_col.clone(),
        };
        let wb = cfg
            .write_back
            .as_ref()
            .map_or_else(|| "NULL".to_string(), |w| q(&w.column));
        let null = "NULL".to_string();
        let mut select = vec![
            id_col.clone(),
            data.clone(),
            cfg.content_type
                .column
                .as_deref()
                .map_or_else(|| null.clone(), q),
            cfg.modified_column.as_deref().map_or(null, q),
        ];
        select.extend(c.key_columns.iter().map(|k| q(k)));
        let select = select.join(", ");
        // NULL payloads are no objects; the user's condition, wrapped, is one more term.
        let mut conds = vec![format!("{data} IS NOT NULL")];
        conds.extend(c.condition.clone());
        let filter = conds.join(" AND ");
        let limit = c.config.batch_size;
        let p1 = dialect.param(1);
        let p2 = dialect.param(2);
        let order = format!("ORDER BY {id} LIMIT {limit}");
        let random = "random()";
        Queries {
            dialect,
            batch_after: format!("SELECT {select} FROM {t} WHERE {filter} AND {id} > {p1} {order}"),
            batch_first: format!("SELECT {select} FROM {t} WHERE {filter} {order}"),
            by_id: format!("SELECT {select} FROM {t} WHERE {id_col} = {p1} AND {filter}"),
            bounds: format!("SELECT MIN({id}), MAX({id}) FROM {t} WHERE {filter}"),
            first_id: format!("SELECT {id_col} FROM {t} WHERE {filter} ORDER BY {id} LIMIT 1"),
            sample: format!("SELECT {id_col} FROM {t} WHERE {filter} ORDER BY {random} LIMIT {p1}"),
            probe: format!("SELECT {select}, {wb} FROM {t} WHERE {filter} AND 1 = 0"),
            begin_read: match dialect {
                Dialect::Sqlite => "BEGIN",
                Dialect::Postgres => "BEGIN READ ONLY",
            },
            begin_write: match dialect {
                Dialect::Sqlite => "BEGIN IMMEDIATE",
                Dialect::Postgres => "BEGIN",
            },
            lock_by_id: format!(
                "SELECT {select}, {wb} FROM {t} WHERE {id_col} = {p1} AND {filter}{}",
                match dialect {
                    Dialect::Sqlite => "",
                    Dialect::Postgres => " FOR UPDATE",
                }
            ),
            update: cfg.write_back.as_ref().map(|w| {
                let clear = if w.clear_data {
                    format!(", {data} = NULL")
                } else {
                    String::new()
                };
                format!("UPDATE {t} SET {wb} = {p1}{clear} WHERE {id_col} = {p2}")
            }),
            written_by_id: cfg.write_back.as_ref().map(|_| {
                format!(
                    "SELECT {wb} FROM {t} WHERE {id_col} = {p1}{}",
                    match dialect {
                        Dialect::Sqlite => "",
                        Dialect::Postgres => " FOR UPDATE",
                    }
                )
            }),
            revert: cfg
                .write_back
                .as_ref()
                .map(|_| format!("UPDATE {t} SET {wb} = {p1} WHERE {id_col} = {p2}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::config::{tests::config, Check};

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("id").unwrap(), "\"id\"");
        assert_eq!(quote_ident("a\"b").unwrap(), "\"a\"\"b\"");
        assert_eq!(
            quote_ident("x\"; DROP TABLE t; --").unwrap(),
            "\"x\"\"; DROP TABLE t; --\""
        );
        assert_eq!(quote_table("s.t").unwrap(), "\"s\".\"t\"");
        assert!(quote_ident("").is_err());
        assert!(quote_ident("a\nb").is_err());
    }

    #[test]
    fn conditions_are_one_wrapped_expression() {
        assert_eq!(
            check_where(" a = 'x;'' y' ").unwrap_err(),
            "';' is not allowed (one condition, not statements)"
        );
        assert_eq!(
            check_where("a = 'it''s' AND (b IS NULL)").unwrap(),
            "(a = 'it''s' AND (b IS NULL))"
        );
        assert_eq!(check_where("name <> ')'").unwrap(), "(name <> ')')");
        for bad in [
            "",
            "  ",
            "1=1) OR (1=1",
            "a = 1 -- x",
            "a = 1 /* x */",
            "a = $1",
            "a = ?",
            "a = $$x$$",
            "(a = 1",
            "a = 'open",
            "a = \"open",
            "a = 1\0",
        ] {
            assert!(check_where(bad).is_err(), "{bad:?}");
        }
        // Comment markers inside a literal are text.
        assert!(check_where("note = '--' OR note = '/*'").is_ok());
    }

    #[test]
    fn keyset_pages_never_offset() {
        let c = config().check().unwrap();
        let q = Queries::new(&c, Dialect::Postgres, IdKind::Int);
        assert_eq!(
            q.batch_after,
            "SELECT \"id\", \"image_data\", \"mime_type\", \"updated_at\" FROM \"images\" WHERE \"image_data\" IS NOT NULL AND (deleted_at IS NULL) AND \"id\" > $1 ORDER BY \"id\" LIMIT 500"
        );
        assert!(!q.batch_first.contains("OFFSET"));
        let q = Queries::new(&c, Dialect::Postgres, IdKind::Text);
        assert!(q
            .batch_after
            .contains("\"id\" COLLATE \"C\" > $1 ORDER BY \"id\" COLLATE \"C\""));
        let q = Queries::new(&c, Dialect::Sqlite, IdKind::Int);
        assert!(q.batch_after.contains("`id` > ?1"));
        assert_eq!(Dialect::Sqlite.table("s.a`b"), "`s`.`a``b`");
        assert_eq!(
            q.update.as_deref(),
            Some("UPDATE `images` SET `image_url` = ?1 WHERE `id` = ?2")
        );
        let mut cfg = config();
        cfg.write_back.as_mut().unwrap().clear_data = true;
        let q = Queries::new(&cfg.check().unwrap(), Dialect::Postgres, IdKind::Int);
        assert_eq!(
            q.update.as_deref(),
            Some(
                "UPDATE \"images\" SET \"image_url\" = $1, \"image_data\" = NULL WHERE \"id\" = $2"
            )
        );
        assert!(q.lock_by_id.ends_with("FOR UPDATE"));
        // The revert sets the one column back, and never the data.
        assert_eq!(
            q.written_by_id.as_deref(),
            Some("SELECT \"image_url\" FROM \"images\" WHERE \"id\" = $1 FOR UPDATE")
        );
        assert_eq!(
            q.revert.as_deref(),
            Some("UPDATE \"images\" SET \"image_url\" = $1 WHERE \"id\" = $2")
        );
    }
}
