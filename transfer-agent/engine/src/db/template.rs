//! Key templates (pure): `images/{id:012}.{ext}` over a row's values. A template names the
//! id exactly once, so a key leads back to its row ([`Template::id_candidates`]); whether
//! keys sort as ids do ([`Template::ordered`]) decides how a listing is produced
//! (`docs/database-sources.md`).

use super::row::Id;
use super::sql::IdKind;

/// The longest key a store is given.
pub const MAX_KEY_BYTES: usize = 1024;
/// Splits of a key tried at most when looking for its id.
const MAX_MATCH_STEPS: usize = 10_000;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// The id, zero-padded to a width (integers only) when given.
    Id {
        width: Option<usize>,
    },
    /// The file extension of the content type.
    Ext,
    /// Another column's value.
    Column(String),
}

/// A parsed key template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// Where a listing after some key starts, in ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdStart {
    /// From the first row.
    First,
    /// From the rows whose id is greater than this one.
    After(Id),
    /// No row has a key after it.
    Nothing,
}

/// The `{...}` placeholders of `text` and the literal text between them (`{{`, `}}` escape
/// braces), as (is_placeholder, text) pairs.
fn split(text: &str) -> Result<Vec<(bool, String)>, String> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                lit.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                lit.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => return Err("a '{' is not closed".into()),
                    }
                }
                if !lit.is_empty() {
                    out.push((false, std::mem::take(&mut lit)));
                }
                out.push((true, name));
            }
            '}' => return Err("a '}' that closes nothing (write '}}' for a brace)".into()),
            c => lit.push(c),
        }
    }
    if !lit.is_empty() {
        out.push((false, lit));
    }
    Ok(out)
}

fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Template {
    /// Parses `text`, where `{id}` (or `{<id_column>}`) is the id, `{id:012}` the id
    /// zero-padded to 12 digits, `{ext}` the content type's extension and `{column}` another
    /// column's value.
    pub fn parse(text: &str, id_column: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        for (placeholder, s) in split(text)? {
            if !placeholder {
                parts.push(Part::Literal(s));
                continue;
            }
            let (name, format) = match s.split_once(':') {
                Some((n, f)) => (n, Some(f)),
                None => (s.as_str(), None),
            };
            if !is_name(name) {
                return Err(format!("{{{s}}}: a placeholder is a column name"));
            }
            let is_id = name == "id" || name == id_column;
            let width = match format {
                None => None,
                Some(f) if is_id && f.len() >= 2 && f.starts_with('0') => {
                    match f[1..].parse::<usize>() {
                        Ok(w) if (1..=20).contains(&w) => Some(w),
                        _ => return Err(format!("{{{s}}}: the width is 1 to 20 digits")),
                    }
                }
                Some(_) => {
                    return Err(format!(
                        "{{{s}}}: only the id takes a format, a zero-padded width ({{id:012}})"
                    ))
                }
            };
            parts.push(if is_id {
                Part::Id { width }
            } else if name == "ext" {
                Part::Ext
            } else {
                Part::Column(name.to_string())
            });
        }
        let ids = parts
            .iter()
            .filter(|p| matches!(p, Part::Id { .. }))
            .count();
        if ids != 1 {
            return Err(format!(
                "the key must contain the id exactly once ({{id}} or {{{id_column}}}), so that each row has its own key and a key leads back to its row"
            ));
        }
        Ok(Template { parts })
    }

    /// The columns named besides the id and the extension, in order, each once.
    pub fn columns(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in &self.parts {
            if let Part::Column(c) = p {
                if !out.contains(c) {
                    out.push(c.clone());
                }
            }
        }
        out
    }

    /// The key of a row: its id, the values of [`Template::columns`] (in that order) and the
    /// extension of its content type; or why the row has none a store can hold.
    pub fn render(&self, id: &Id, columns: &[String], ext: &str) -> Result<String, String> {
        let names = self.columns();
        let mut key = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(s) => key.push_str(s),
                Part::Ext => key.push_str(ext),
                Part::Column(c) => {
                    let i = names.iter().position(|n| n == c).unwrap_or(0);
                    key.push_str(columns.get(i).map(String::as_str).unwrap_or_default());
                }
                Part::Id { width } => key.push_str(&render_id(id, *width)?),
            }
        }
        check_key(&key)?;
        Ok(key)
    }

    /// Whether keys sort (bytewise) as ids do, so a listing in id order is one in key order:
    /// nothing variable before the id, and an integer id zero-padded (then any suffix), or a
    /// text id at the very end.
    pub fn ordered(&self, kind: IdKind) -> bool {
        let Some(at) = self.parts.iter().position(|p| matches!(p, Part::Id { .. })) else {
            return false;
        };
        let literal_before = self.parts[..at]
            .iter()
            .all(|p| matches!(p, Part::Literal(_)));
        let rest_empty = at + 1 == self.parts.len();
        match (kind, &self.parts[at]) {
            (IdKind::Int, Part::Id { width: Some(_) }) => literal_before,
            (IdKind::Text, Part::Id { width: None }) => literal_before && rest_empty,
            _ => false,
        }
    }

    /// The literal text before the id.
    fn prefix(&self) -> String {
        self.parts
            .iter()
            .take_while(|p| !matches!(p, Part::Id { .. }))
            .map(|p| match p {
                Part::Literal(s) => s.as_str(),
                _ => "",
            })
            .collect()
    }

    fn width(&self) -> Option<usize> {
        self.parts.iter().find_map(|p| match p {
            Part::Id { width } => *width,
            _ => None,
        })
    }

    /// For an [`ordered`](Template::ordered) template: a key bound such that the keys of ids
    /// up to `id` sort at or before it and the keys of greater ids after it (a shard bound).
    pub fn bound(&self, id: &Id) -> Result<String, String> {
        let mut b = self.prefix();
        b.push_str(&render_id(id, self.width())?);
        if matches!(id, Id::Int(_)) {
            // After any suffix of this id's keys, before the next id's digits.
            b.push(char::MAX);
        }
        Ok(b)
    }

    /// For an [`ordered`](Template::ordered) template: the ids whose keys may come after
    /// `after`.
    pub fn start_after(&self, after: &str, kind: IdKind) -> IdStart {
        let prefix = self.prefix();
        let Some(rest) = after.strip_prefix(prefix.as_str()) else {
            // Every key starts with the prefix: `after` sorts before all of them or after all.
            return if after < prefix.as_str() {
                IdStart::First
            } else {
                IdStart::Nothing
            };
        };
        match kind {
            IdKind::Text => IdStart::After(Id::Text(rest.to_string())),
            IdKind::Int => {
                let width = self.width().unwrap_or(20);
                let digits: String = rest
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .take(width)
                    .collect();
                let next = rest[digits.len()..].chars().next();
                // Keys whose digits start with `digits` sort before `after` when the next
                // character of `after` is above the digits; else they may sort after it.
                let fill = if digits.len() < width && next.is_some_and(|c| c > '9') {
                    '9'
                } else {
                    '0'
                };
                let padded: String = digits
                    .chars()
                    .chain(std::iter::repeat(fill))
                    .take(width)
                    .collect();
                match (padded.parse::<i64>(), fill) {
                    (Ok(0), '0') => IdStart::First,
                    (Ok(v), '0') => IdStart::After(Id::Int(v - 1)),
                    (Ok(v), _) => IdStart::After(Id::Int(v)),
                    (Err(_), _) => IdStart::Nothing,
                }
            }
        }
    }

    /// The ids (as text) a key may have been rendered from: every way the template's parts
    /// match the key (an integer id is digits, an extension letters and digits). The row
    /// found under one is the key's only if its key renders the same.
    pub fn id_candidates(&self, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut steps = 0;
        self.match_from(0, key, None, &mut out, &mut steps);
        out.sort();
        out.dedup();
        out
    }

    fn match_from(
        &self,
        part: usize,
        rest: &str,
        id: Option<&str>,
        out: &mut Vec<String>,
        steps: &mut usize,
    ) {
        *steps += 1;
        if *steps > MAX_MATCH_STEPS {
            return;
        }
        let Some(p) = self.parts.get(part) else {
            if rest.is_empty() {
                out.extend(id.map(str::to_string));
            }
            return;
        };
        if let Part::Literal(s) = p {
            if let Some(r) = rest.strip_prefix(s.as_str()) {
                self.match_from(part + 1, r, id, out, steps);
            }
            return;
        }
        // A variable part: try each length it may have.
        let ends: Vec<usize> = rest
            .char_indices()
            .map(|(i, _)| i)
            .skip(1)
            .chain([rest.len()])
            .filter(|&e| e > 0)
            .collect();
        // Characters an extension or a padded id cannot contain end the search; lengths
        // they cannot have are skipped.
        let chars_ok = |s: &str| match p {
            Part::Ext => s.chars().all(|c| c.is_ascii_alphanumeric()),
            Part::Id { width: Some(_) } => s.bytes().all(|b| b.is_ascii_digit()),
            _ => true,
        };
        let len_ok = |s: &str| match p {
            Part::Id { width: Some(w) } => s.len() == *w,
            Part::Column(_) => true,
            _ => !s.is_empty(),
        };
        for end in std::iter::once(0).chain(ends) {
            let (value, r) = rest.split_at(end);
            if !chars_ok(value) {
                break;
            }
            if !len_ok(value) {
                continue;
            }
            let id = if matches!(p, Part::Id { .. }) {
                Some(value)
            } else {
                id
            };
            self.match_from(part + 1, r, id, out, steps);
        }
    }
}

/// The id as text: zero-padded to `width` when given (non-negative integers that fit only).
fn render_id(id: &Id, width: Option<usize>) -> Result<String, String> {
    match (id, width) {
        (Id::Int(i), Some(w)) => {
            let s = format!("{i:0w$}");
            if *i < 0 || s.len() > w {
                return Err(format!("the id {i} does not fit the key's {w} digits"));
            }
            Ok(s)
        }
        (Id::Int(i), None) => Ok(i.to_string()),
        (Id::Text(t), None) => Ok(t.clone()),
        (Id::Text(_), Some(_)) => Err("a text id cannot be zero-padded".into()),
    }
}

/// Refuses keys no destination may be given: empty, starting or ending with `/`, empty or
/// `.`/`..` segments, control characters, Ferry's own `.ferry/` folder, over 1024 bytes.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("the key would be empty".into());
    }
    if key
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(format!(
            "the key {key:?} would have an empty, '.' or '..' segment"
        ));
    }
    if key.chars().any(char::is_control) {
        return Err("the key would contain a control character".into());
    }
    if key == ".ferry" || key.starts_with(".ferry/") {
        return Err("the key would be in Ferry's own .ferry/ folder".into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "the key would be longer than {MAX_KEY_BYTES} bytes"
        ));
    }
    Ok(())
}

/// The write-back value: a template over `{key}` and `{id}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteBackTemplate {
    parts: Vec<(bool, String)>,
}

impl WriteBackTemplate {
    pub fn parse(text: &str) -> Result<WriteBackTemplate, String> {
        let parts = split(text)?;
        for (placeholder, name) in &parts {
            if *placeholder && name != "key" && name != "id" {
                return Err(format!("{{{name}}}: only {{key}} and {{id}} can be used"));
            }
        }
        if parts.is_empty() {
            return Err("the value cannot be empty".into());
        }
        Ok(WriteBackTemplate { parts })
    }

    pub fn render(&self, key: &str, id: &Id) -> String {
        self.parts
            .iter()
            .map(|(placeholder, s)| match (placeholder, s.as_str()) {
                (true, "key") => key.to_string(),
                (true, _) => id.to_string(),
                (false, _) => s.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> Template {
        Template::parse(text, "image_id").unwrap()
    }

    #[test]
    fn keys_render_from_rows() {
        let k = t("images/{id}.{ext}");
        assert_eq!(k.render(&Id::Int(17), &[], "png").unwrap(), "images/17.png");
        let k = t("u/{user}/{image_id:06}-{name}.{ext}");
        assert_eq!(k.columns(), ["user", "name"]);
        let cols = ["ada".to_string(), "cat".to_string()];
        assert_eq!(
            k.render(&Id::Int(42), &cols, "jpg").unwrap(),
            "u/ada/000042-cat.jpg"
        );
        assert!(k.render(&Id::Int(-1), &cols, "jpg").is_err());
        assert!(k.render(&Id::Int(1_000_000), &cols, "jpg").is_err());
        assert_eq!(
            t("{{x}}/{id}")
                .render(&Id::Text("a".into()), &[], "")
                .unwrap(),
            "{x}/a"
        );
        // Keys a store cannot hold.
        for bad in ["../x", "a/./b", "/a", "a/", ".ferry/r", "a\nb"] {
            assert!(
                t("{id}").render(&Id::Text(bad.into()), &[], "").is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn templates_are_checked() {
        for bad in [
            "images/x.png",
            "{id}/{id}",
            "{id",
            "{id}}",
            "{id:12}",
            "{ext:03}",
            "{a b}/{id}",
            "{id:099}",
        ] {
            assert!(Template::parse(bad, "image_id").is_err(), "{bad}");
        }
        assert!(Template::parse("{image_id:08}", "image_id").is_ok());
    }

    #[test]
    fn keys_lead_back_to_ids() {
        assert_eq!(
            t("images/{id}.{ext}").id_candidates("images/17.png"),
            ["17"]
        );
        assert_eq!(
            t("images/{id:06}.{ext}").id_candidates("images/000017.png"),
            ["000017"]
        );
        assert!(t("images/{id:06}.{ext}")
            .id_candidates("images/17.png")
            .is_empty());
        // Every split the parts allow is a candidate; the row decides.
        assert_eq!(t("{id}.{ext}").id_candidates("a.b.png"), ["a.b"]);
        assert_eq!(t("{id}-{name}").id_candidates("a-b-c"), ["a", "a-b"]);
        assert_eq!(t("{user}/{id}").id_candidates("ada/7"), ["7"]);
        assert_eq!(t("{user}/{id}").id_candidates("a/b/7"), ["7", "b/7"]);
        assert!(t("images/{id}.{ext}")
            .id_candidates("other/1.png")
            .is_empty());
    }

    #[test]
    fn ordered_templates_sort_as_ids() {
        assert!(!t("images/{id}.{ext}").ordered(IdKind::Int));
        assert!(t("images/{id:012}.{ext}").ordered(IdKind::Int));
        assert!(!t("{user}/{id:012}").ordered(IdKind::Int));
        assert!(t("img/{id}").ordered(IdKind::Text));
        assert!(!t("img/{id}.png").ordered(IdKind::Text));
        // The claim itself, over ids that render with different lengths and suffixes.
        let k = t("i/{id:05}.{ext}");
        let mut keys: Vec<(String, i64)> = [3i64, 10, 9, 99999, 100, 0]
            .iter()
            .zip(["png", "jpeg", "gif", "a", "webp", "bin"])
            .map(|(i, e)| (k.render(&Id::Int(*i), &[], e).unwrap(), *i))
            .collect();
        keys.sort();
        let ids: Vec<i64> = keys.iter().map(|(_, i)| *i).collect();
        assert_eq!(ids, [0, 3, 9, 10, 100, 99999]);
    }

    #[test]
    fn key_bounds_split_ids() {
        let k = t("i/{id:04}.{ext}");
        let b = k.bound(&Id::Int(12)).unwrap();
        assert!(k.render(&Id::Int(12), &[], "zzzz").unwrap() < b);
        assert!(k.render(&Id::Int(13), &[], "a").unwrap() > b);
        assert_eq!(k.start_after(&b, IdKind::Int), IdStart::After(Id::Int(11)));
        assert_eq!(
            k.start_after("i/0012.png", IdKind::Int),
            IdStart::After(Id::Int(11))
        );
        assert_eq!(k.start_after("i/00", IdKind::Int), IdStart::First);
        assert_eq!(
            k.start_after("i/01", IdKind::Int),
            IdStart::After(Id::Int(99))
        );
        assert_eq!(k.start_after("a", IdKind::Int), IdStart::First);
        assert_eq!(
            k.start_after("i/01z", IdKind::Int),
            IdStart::After(Id::Int(199))
        );
        assert_eq!(
            k.start_after("i/z", IdKind::Int),
            IdStart::After(Id::Int(9999))
        );
        assert_eq!(k.start_after("j", IdKind::Int), IdStart::Nothing);
        let k = t("t/{id}");
        assert_eq!(k.bound(&Id::Text("m".into())).unwrap(), "t/m");
        assert_eq!(
            k.start_after("t/m", IdKind::Text),
            IdStart::After(Id::Text("m".into()))
        );
    }

    #[test]
    fn write_back_values() {
        let v = WriteBackTemplate::parse("https://img.example.com/{key}?id={id}").unwrap();
        assert_eq!(
            v.render("a/1.png", &Id::Int(1)),
            "https://img.example.com/a/1.png?id=1"
        );
        assert!(WriteBackTemplate::parse("{name}").is_err());
        assert!(WriteBackTemplate::parse("").is_err());
    }
}
