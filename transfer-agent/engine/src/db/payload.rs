//! A payload as stored turned into the object's bytes and content type (pure): decoding
//! (base64, data URIs, raw bytes), sniffing magic numbers, and the checks that keep garbage
//! out of the destination (invalid encoding, empty payload, a declared type the bytes
//! contradict).

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

use super::config::Encoding;

/// The type given to bytes of unknown type.
pub const OCTET_STREAM: &str = "application/octet-stream";

const PADDING_EITHER: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, PADDING_EITHER);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, PADDING_EITHER);

/// The decoded payload.
#[derive(Debug, PartialEq)]
pub struct Decoded {
    pub bytes: Vec<u8>,
    /// The media type a data URI declared.
    pub declared: Option<String>,
}

/// Decodes a stored payload (`is_text`: the column holds text, not bytes). An empty result is
/// an error: no row becomes an empty object.
pub fn decode(encoding: Encoding, data: Vec<u8>, is_text: bool) -> Result<Decoded, String> {
    let encoding = match encoding {
        Encoding::Auto => detect(&data, is_text)?,
        e => e,
    };
    let decoded = match encoding {
        Encoding::Binary => Decoded {
            bytes: data,
            declared: None,
        },
        Encoding::Base64 => Decoded {
            bytes: base64(&data)?,
            declared: None,
        },
        Encoding::DataUri | Encoding::Auto => data_uri(&data)?,
    };
    if decoded.bytes.is_empty() {
        return Err("the payload is empty".into());
    }
    Ok(decoded)
}

/// `Auto`: a data URI, else base64 text, else (bytes) the bytes themselves.
fn detect(data: &[u8], is_text: bool) -> Result<Encoding, String> {
    if starts_with_ignore_case(data, b"data:") {
        return Ok(Encoding::DataUri);
    }
    let base64ish = !data.is_empty()
        && data
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"+/-_=".contains(b) || b.is_ascii_whitespace());
    match (base64ish, is_text) {
        (true, _) => Ok(Encoding::Base64),
        (false, false) => Ok(Encoding::Binary),
        (false, true) => Err("the text is neither a data: URI nor base64".into()),
    }
}

fn starts_with_ignore_case(data: &[u8], prefix: &[u8]) -> bool {
    data.len() >= prefix.len() && data[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// Base64 in the standard or URL-safe alphabet, padded or not, with line breaks or not.
fn base64(text: &[u8]) -> Result<Vec<u8>, String> {
    let compact;
    let text = if text.iter().any(u8::is_ascii_whitespace) {
        compact = text
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect::<Vec<u8>>();
        &compact[..]
    } else {
        text
    };
    let engine = if text.iter().any(|b| *b == b'-' || *b == b'_') {
        &URL_SAFE
    } else {
        &STANDARD
    };
    engine
        .decode(text)
        .map_err(|e| format!("the payload is not valid base64: {e}"))
}

/// `data:[<media type>][;param=value...][;base64],<data>`.
fn data_uri(text: &[u8]) -> Result<Decoded, String> {
    if !starts_with_ignore_case(text, b"data:") {
        return Err("the payload is not a data: URI".into());
    }
    let comma = text
        .iter()
        .position(|b| *b == b',')
        .ok_or("the data: URI has no ',' before its data")?;
    let header =
        std::str::from_utf8(&text[5..comma]).map_err(|_| "the data: URI's header is not text")?;
    let mut params = header.split(';').map(str::trim);
    let media = params.next().unwrap_or_default().to_ascii_lowercase();
    let is_base64 = params.any(|p| p.eq_ignore_ascii_case("base64"));
    let data = &text[comma + 1..];
    let bytes = if is_base64 {
        base64(data)?
    } else {
        percent_encoding::percent_decode(data).collect()
    };
    let declared = (!media.is_empty()).then_some(media);
    if let Some(m) = &declared {
        if !m.contains('/') {
            return Err(format!(
                "the data: URI's media type {m:?} is not a type/subtype"
            ));
        }
    }
    Ok(Decoded { bytes, declared })
}

/// The content type the bytes' magic numbers say, when they say one.
pub fn sniff(bytes: &[u8]) -> Option<String> {
    // SVG is XML text: infer would call it text/xml.
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]);
    let head = head.trim_start_matches('\u{feff}').trim_start();
    if head.starts_with("<svg") || (head.starts_with("<?xml") && head.contains("<svg")) {
        return Some("image/svg+xml".into());
    }
    infer::get(bytes).map(|t| t.mime_type().to_string())
}

/// A content type in lower case without parameters, with common aliases resolved.
pub fn essence(content_type: &str) -> String {
    let t = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match t.as_str() {
        "image/jpg" | "image/pjpeg" => "image/jpeg".into(),
        "image/x-png" => "image/png".into(),
        "image/x-icon" => "image/vnd.microsoft.icon".into(),
        "image/x-ms-bmp" => "image/bmp".into(),
        _ => t,
    }
}

/// Whether `declared` is a type that says nothing of the bytes.
fn generic(declared: &str) -> bool {
    matches!(
        declared,
        "" | OCTET_STREAM | "binary/octet-stream" | "application/binary"
    )
}

/// The object's content type, from the declared type (column, then data URI) or, when
/// `sniff_missing`, the sniffed one; an error when the magic numbers contradict a declared
/// type.
pub fn content_type(
    declared: Option<&str>,
    sniffed: Option<&str>,
    sniff_missing: bool,
) -> Result<String, String> {
    match (declared.map(str::trim).filter(|d| !d.is_empty()), sniffed) {
        (Some(d), Some(s)) if !generic(&essence(d)) && essence(d) != essence(s) => Err(format!(
            "the declared content type {d:?} contradicts the bytes, which are {s}"
        )),
        (Some(d), _) => Ok(d.to_string()),
        (None, Some(s)) if sniff_missing => Ok(s.to_string()),
        _ => Ok(OCTET_STREAM.to_string()),
    }
}

/// The file extension of a content type (`png`, `jpg`...), `bin` when it has none.
pub fn extension(content_type: &str) -> String {
    let e = essence(content_type);
    let known = match e.as_str() {
        "image/jpeg" => Some("jpg"),
        "image/png" => Some("png"),
        "image/gif" => Some("gif"),
        "image/webp" => Some("webp"),
        "image/svg+xml" => Some("svg"),
        "image/bmp" => Some("bmp"),
        "image/tiff" => Some("tif"),
        "image/avif" => Some("avif"),
        "image/heic" | "image/heif" => Some("heic"),
        "image/vnd.microsoft.icon" => Some("ico"),
        "application/pdf" => Some("pdf"),
        "text/plain" => Some("txt"),
        OCTET_STREAM => Some("bin"),
        _ => None,
    };
    if let Some(k) = known {
        return k.to_string();
    }
    mime_guess::get_mime_extensions_str(&e)
        .and_then(|exts| exts.first())
        .filter(|x| x.chars().all(|c| c.is_ascii_alphanumeric()))
        .map_or_else(|| "bin".to_string(), |x| x.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A 1x1 PNG's first bytes (enough for its magic number).
    pub const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";
    pub const JPEG: &[u8] = b"\xff\xd8\xff\xe0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0";

    fn b64(b: &[u8]) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .encode(b)
            .into_bytes()
    }

    #[test]
    fn each_encoding_decodes() {
        let d = |e, data: &[u8], text| decode(e, data.to_vec(), text).map(|d| d.bytes);
        assert_eq!(d(Encoding::Base64, &b64(PNG), true).unwrap(), PNG);
        // Unpadded, URL-safe, wrapped at 76 columns.
        assert_eq!(d(Encoding::Base64, b"aGk", true).unwrap(), b"hi");
        assert_eq!(d(Encoding::Base64, b"-_8", true).unwrap(), [0xfb, 0xff]);
        let mut wrapped = b64(&[7u8; 100]);
        wrapped.insert(76, b'\n');
        wrapped.insert(40, b'\r');
        assert_eq!(d(Encoding::Base64, &wrapped, true).unwrap(), [7u8; 100]);
        assert_eq!(d(Encoding::Binary, PNG, false).unwrap(), PNG);
        let uri = [b"data:image/png;base64,".to_vec(), b64(PNG)].concat();
        let got = decode(Encoding::DataUri, uri.clone(), true).unwrap();
        assert_eq!(
            (got.bytes.as_slice(), got.declared.as_deref()),
            (PNG, Some("image/png"))
        );
        let got = decode(
            Encoding::DataUri,
            b"data:text/plain;charset=utf-8,a%20b".to_vec(),
            true,
        )
        .unwrap();
        assert_eq!(
            (got.bytes.as_slice(), got.declared.as_deref()),
            (&b"a b"[..], Some("text/plain"))
        );
        // Auto, per value.
        assert_eq!(d(Encoding::Auto, &uri, true).unwrap(), PNG);
        assert_eq!(d(Encoding::Auto, &b64(JPEG), true).unwrap(), JPEG);
        assert_eq!(d(Encoding::Auto, PNG, false).unwrap(), PNG);
    }

    #[test]
    fn bad_payloads_are_refused() {
        for (e, data, text) in [
            (Encoding::Base64, &b"not base64!"[..], true),
            (Encoding::Base64, b"aGk=x", true),
            (Encoding::Base64, b"", true),
            (Encoding::Base64, b"  \n", true),
            (Encoding::Binary, b"", false),
            (Encoding::DataUri, b"data:image/png;base64", true),
            (Encoding::DataUri, b"data:image/png;base64,", true),
            (Encoding::DataUri, b"data:png;base64,aGk=", true),
            (Encoding::DataUri, b"aGk=", true),
            (Encoding::Auto, b"hello world!", true),
        ] {
            assert!(decode(e, data.to_vec(), text).is_err(), "{e:?} {data:?}");
        }
    }

    #[test]
    fn types_are_sniffed_and_checked() {
        assert_eq!(sniff(PNG).as_deref(), Some("image/png"));
        assert_eq!(sniff(JPEG).as_deref(), Some("image/jpeg"));
        assert_eq!(
            sniff(b"<?xml version=\"1.0\"?><svg/>").as_deref(),
            Some("image/svg+xml")
        );
        assert_eq!(sniff(b"plain words"), None);
        assert_eq!(
            content_type(Some("image/jpg"), Some("image/jpeg"), false).unwrap(),
            "image/jpg"
        );
        assert_eq!(
            content_type(Some("IMAGE/PNG; q=1"), Some("image/png"), false).unwrap(),
            "IMAGE/PNG; q=1"
        );
        assert!(content_type(Some("image/png"), Some("image/jpeg"), true).is_err());
        assert_eq!(
            content_type(Some(OCTET_STREAM), Some("image/png"), true).unwrap(),
            OCTET_STREAM
        );
        assert_eq!(
            content_type(None, Some("image/png"), true).unwrap(),
            "image/png"
        );
        assert_eq!(
            content_type(None, Some("image/png"), false).unwrap(),
            OCTET_STREAM
        );
        assert_eq!(
            content_type(Some("text/csv"), None, true).unwrap(),
            "text/csv"
        );
        assert_eq!(content_type(Some(" "), None, true).unwrap(), OCTET_STREAM);
    }

    #[test]
    fn extensions_of_types() {
        assert_eq!(extension("image/jpeg"), "jpg");
        assert_eq!(extension("image/PNG; x=y"), "png");
        assert_eq!(extension("text/csv"), "csv");
        assert_eq!(extension("application/x-unknown-thing"), "bin");
    }
}
