//! How a URL becomes a key (`UrlKeys`): pure.

use ferry_core::stores::{UrlKeyMode, UrlKeys};
use url::Url;

/// The key of `url`, or why it has none a store can hold.
pub fn key_of(url: &Url, rule: &UrlKeys) -> Result<String, String> {
    let decoded = percent_encoding::percent_decode_str(url.path())
        .decode_utf8()
        .map_err(|_| "the URL's path is not UTF-8 once percent-decoded".to_string())?;
    let path: &str = &decoded;
    let path = match &rule.strip_prefix {
        Some(p) => path
            .strip_prefix(p.as_str())
            .ok_or_else(|| format!("the URL's path does not start with stripPrefix {p:?}"))?,
        None => path,
    };
    let path = path.trim_start_matches('/');
    let key = match rule.mode {
        UrlKeyMode::Path => path.to_string(),
        UrlKeyMode::HostAndPath => {
            let host = url.host_str().unwrap_or_default();
            match url.port() {
                Some(port) => format!("{host}:{port}/{path}"),
                None => format!("{host}/{path}"),
            }
        }
    };
    check_key(&key)?;
    Ok(key)
}

/// Refuses keys no destination may be given: empty, `.`/`..` segments (decoded from `%2e`),
/// control characters, or a path into Ferry's own folder.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.ends_with('/') {
        return Err("the URL maps to a folder, not a file name".into());
    }
    if key.split('/').any(|s| s == "." || s == "..") {
        return Err("the key would contain a '.' or '..' segment".into());
    }
    if key.chars().any(char::is_control) {
        return Err("the key would contain a control character".into());
    }
    if key == ".ferry" || key.starts_with(".ferry/") {
        return Err("the key would be in Ferry's own .ferry/ folder".into());
    }
    if key.len() > 1024 {
        return Err("the key would be longer than 1024 bytes".into());
    }
    Ok(())
}

/// `url` without its query string, fragment and userinfo: how URLs appear in logs and
/// messages (signed URLs carry their signature in the query).
pub fn loggable(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// A URL as text, cut at its query string: for messages about a line that may not parse.
pub fn loggable_text(text: &str) -> &str {
    text.split(['?', '#']).next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(url: &str, mode: UrlKeyMode, strip: Option<&str>) -> Result<String, String> {
        let rule = UrlKeys {
            mode,
            strip_prefix: strip.map(String::from),
        };
        key_of(&Url::parse(url).unwrap(), &rule)
    }

    #[test]
    fn paths_are_decoded_and_queries_dropped() {
        use UrlKeyMode::*;
        let u = "https://cdn.example.com:8443/img/a%20b/%C3%A9t%C3%A9.jpg?sig=1#x";
        assert_eq!(key(u, Path, None).unwrap(), "img/a b/été.jpg");
        assert_eq!(
            key(u, HostAndPath, None).unwrap(),
            "cdn.example.com:8443/img/a b/été.jpg"
        );
        assert_eq!(
            key("https://h/img/x.jpg", HostAndPath, None).unwrap(),
            "h/img/x.jpg"
        );
        assert_eq!(key(u, Path, Some("/img/")).unwrap(), "a b/été.jpg");
        assert!(key(u, Path, Some("/other/")).is_err());
        // Unicode typed into the list is percent-encoded by the parser, then decoded again.
        assert_eq!(
            key("https://h/ü/日本.txt", Path, None).unwrap(),
            "ü/日本.txt"
        );
    }

    #[test]
    fn keys_a_store_cannot_hold_are_refused() {
        use UrlKeyMode::*;
        for bad in [
            "https://h/",
            "https://h/dir/",
            "https://h/a%2F..%2Fb",
            "https://h/a%2F.%2Fb",
            "https://h/%FF.jpg",
            "https://h/a%0Ab",
            "https://h/.ferry/x",
        ] {
            assert!(key(bad, Path, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn logged_urls_have_no_query_or_credentials() {
        let u = Url::parse("https://user:pw@h/a.jpg?X-Amz-Signature=abc").unwrap();
        assert_eq!(loggable(&u), "https://h/a.jpg");
    }
}
