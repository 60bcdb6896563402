//! Reading a URL list, line by line, in its format (`UrlListFormat`): pure.

use base64::Engine;
use ferry_core::stores::{UrlKeys, UrlListFormat};
use url::Url;

use super::keys::{check_key, key_of};

/// The header line of a Storage Transfer list.
pub const TSV_HEADER: &str = "TsvHttpData-1.0";

/// One URL of the list.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// 1-based line number in the list.
    pub line: u64,
    pub url: String,
    /// The key, or why the URL has none.
    pub key: Result<String, String>,
    pub size: Option<u64>,
    pub md5: Option<[u8; 16]>,
}

/// Reads the lines of one list in order.
pub struct Parser {
    format: UrlListFormat,
    keys: UrlKeys,
    first: bool,
}

impl Parser {
    pub fn new(format: UrlListFormat, keys: UrlKeys) -> Self {
        Parser {
            format,
            keys,
            first: true,
        }
    }

    /// The entry of line `n` (1-based), None for a line that names no URL (blank, comment,
    /// header), or why the line is malformed (which makes the whole list unusable).
    pub fn line(&mut self, n: u64, text: &str) -> Result<Option<Entry>, String> {
        let text = text.strip_suffix('\r').unwrap_or(text);
        let text = if self.first {
            text.strip_prefix('\u{feff}').unwrap_or(text)
        } else {
            text
        };
        if text.trim().is_empty() {
            return Ok(None);
        }
        if self.first {
            self.first = false;
            let is_header = text.trim() == TSV_HEADER;
            match self.format {
                UrlListFormat::Auto if is_header => {
                    self.format = UrlListFormat::Tsv;
                    return Ok(None);
                }
                UrlListFormat::Tsv if is_header => return Ok(None),
                UrlListFormat::Tsv => {
                    return Err(format!("the first line must be {TSV_HEADER}"));
                }
                UrlListFormat::Auto if text.contains(',') && !text.contains('\t') => {
                    self.format = UrlListFormat::Csv
                }
                UrlListFormat::Auto => self.format = UrlListFormat::Lines,
                _ => {}
            }
        }
        match self.format {
            UrlListFormat::Tsv => self.tsv(n, text).map(Some),
            UrlListFormat::Csv => self.csv(n, text).map(Some),
            _ if text.trim_start().starts_with('#') => Ok(None),
            _ => self.entry(n, text.trim(), None, None, None).map(Some),
        }
    }

    fn tsv(&self, n: u64, text: &str) -> Result<Entry, String> {
        let mut fields = text.split('\t');
        let url = fields.next().unwrap_or_default().trim();
        let size = match fields.next().map(str::trim).filter(|s| !s.is_empty()) {
            Some(s) => Some(
                s.parse::<u64>()
                    .map_err(|_| format!("the size {s:?} is not a number of bytes"))?,
            ),
            None => None,
        };
        let md5 = match fields.next().map(str::trim).filter(|s| !s.is_empty()) {
            Some(s) => Some(md5_of_base64(s)?),
            None => None,
        };
        if fields.next().is_some() {
            return Err("more than 3 tab-separated fields".into());
        }
        self.entry(n, url, None, size, md5)
    }

    fn csv(&self, n: u64, text: &str) -> Result<Entry, String> {
        let fields = csv_fields(text)?;
        if fields.len() > 2 {
            return Err(
                "more than 2 comma-separated fields (quote a URL or key with commas)".into(),
            );
        }
        let key = fields.get(1).map(|k| k.trim()).filter(|k| !k.is_empty());
        self.entry(n, fields[0].trim(), key, None, None)
    }

    fn entry(
        &self,
        n: u64,
        url: &str,
        key: Option<&str>,
        size: Option<u64>,
        md5: Option<[u8; 16]>,
    ) -> Result<Entry, String> {
        let parsed = parse_url(url)?;
        let key = match key {
            Some(k) => {
                let k = k.trim_start_matches('/');
                check_key(k).map(|()| k.to_string())
            }
            None => key_of(&parsed, &self.keys),
        };
        Ok(Entry {
            line: n,
            url: parsed.to_string(),
            key,
            size,
            md5,
        })
    }
}

/// An absolute http(s) URL with a host.
pub fn parse_url(text: &str) -> Result<Url, String> {
    let shown = super::keys::loggable_text(text);
    let url = Url::parse(text).map_err(|e| format!("{shown:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{shown:?}: only http and https URLs can be copied"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{shown:?} has no host"));
    }
    Ok(url)
}

/// The 16 bytes of a base64 MD5 (Storage Transfer's third column).
fn md5_of_base64(s: &str) -> Result<[u8; 16], String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| format!("the MD5 {s:?} is not base64"))?;
    bytes
        .try_into()
        .map_err(|_| format!("the MD5 {s:?} is not 16 bytes"))
}

/// The fields of one CSV line (RFC 4180 quoting; no line breaks inside a field).
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match c {
            '"' if at_start => {
                quoted = true;
                at_start = false;
            }
            '"' if quoted => {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    quoted = false;
                }
            }
            ',' if !quoted => {
                fields.push(std::mem::take(&mut field));
                at_start = true;
            }
            c => {
                field.push(c);
                at_start = false;
            }
        }
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    fields.push(field);
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(format: UrlListFormat, text: &str) -> Result<Vec<Entry>, String> {
        let mut p = Parser::new(format, UrlKeys::default());
        let mut out = Vec::new();
        for (i, l) in text.split('\n').enumerate() {
            if let Some(e) = p
                .line(i as u64 + 1, l)
                .map_err(|e| format!("line {}: {e}", i + 1))?
            {
                out.push(e);
            }
        }
        Ok(out)
    }

    #[test]
    fn tsv_with_optional_size_and_md5() {
        let text = "TsvHttpData-1.0\r\nhttps://h/a.jpg\t3\tkAFQmDzST7DWlj99KOF/cg==\r\nhttps://h/b.jpg\t10\r\nhttps://h/c.jpg\n\n";
        for format in [UrlListFormat::Auto, UrlListFormat::Tsv] {
            let e = parse(format, text).unwrap();
            assert_eq!(e.len(), 3);
            assert_eq!(e[0].key.as_deref(), Ok("a.jpg"));
            assert_eq!(e[0].size, Some(3));
            assert_eq!(
                hex::encode(e[0].md5.unwrap()),
                "900150983cd24fb0d6963f7d28e17f72"
            );
            assert_eq!((e[1].size, e[1].md5), (Some(10), None));
            assert_eq!((e[2].size, e[2].line), (None, 4));
        }
        assert!(parse(UrlListFormat::Tsv, "https://h/a\n").is_err());
        assert!(parse(UrlListFormat::Tsv, "TsvHttpData-1.0\nhttps://h/a\tx\n").is_err());
        assert!(parse(
            UrlListFormat::Tsv,
            "TsvHttpData-1.0\nhttps://h/a\t1\tnot-md5\n"
        )
        .is_err());
    }

    #[test]
    fn lines_skip_comments_and_blanks() {
        let e = parse(
            UrlListFormat::Auto,
            "# photos\nhttps://h/a.jpg\n\n  https://h/b.jpg  \n",
        )
        .unwrap();
        let keys: Vec<_> = e.iter().map(|e| e.key.clone().unwrap()).collect();
        assert_eq!(keys, ["a.jpg", "b.jpg"]);
        assert_eq!(e[1].line, 4);
    }

    #[test]
    fn csv_gives_explicit_keys() {
        let text = "https://h/a.jpg,photos/one.jpg\n\"https://h/b,c.jpg\",\"x \"\"y\"\".jpg\"\nhttps://h/d.jpg,\n";
        let e = parse(UrlListFormat::Auto, text).unwrap();
        let keys: Vec<_> = e.iter().map(|e| e.key.clone().unwrap()).collect();
        assert_eq!(keys, ["photos/one.jpg", "x \"y\".jpg", "d.jpg"]);
        assert_eq!(e[1].url, "https://h/b,c.jpg");
        assert!(parse(UrlListFormat::Csv, "https://h/a,../x\n").unwrap()[0]
            .key
            .is_err());
    }

    #[test]
    fn only_http_urls() {
        for bad in ["ftp://h/a", "file:///etc/passwd", "not a url", "http://"] {
            assert!(parse(UrlListFormat::Lines, bad).is_err(), "{bad}");
        }
    }
}
