//! Check mode and the dry run's inventory (`docs/check.md`): the pure classification of a
//! selected key against the destination's entry, the report lines (`check-NNNNNN.jsonl`,
//! `inventory-NNNNNN.jsonl` and `.csv`), and the streamed SHA-256 of an object's bytes.

use ferry_core::VerifyMode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::TransferError;
use crate::limit::Limits;
use crate::retry::{with_retry, RetryPolicy};
use crate::stores::{ObjectInfo, Source};

/// How a key differs between the two sides.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Difference {
    /// The source holds it, the destination does not.
    Missing,
    /// The sizes differ.
    Size,
    /// Same size, but the ETags differ while both are MD5s of the content.
    Etag,
    /// Same size, but the bytes read from both sides hash differently (`verify: ReRead`).
    Content,
    /// The destination holds it (selected by the filters), the source does not.
    Extra,
}

/// What the listings say of one selected source key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listed {
    Identical,
    Different(Difference),
    /// The listings agree as far as they go; the bytes of both sides decide.
    Read,
}

/// Classifies the selected source entry `src` against the destination's entry for its key.
/// `md5_etags`: both sides' MD5-shaped ETags are MD5s of the content (the stores say so and
/// the source's HEAD did not say otherwise). With `verify: Size` only sizes count; with
/// `ReRead` every key of the same size (and ETag, where comparable) is read on both sides.
pub fn classify(
    src: &ObjectInfo,
    dst: Option<&ObjectInfo>,
    verify: VerifyMode,
    md5_etags: bool,
) -> Listed {
    let Some(dst) = dst else {
        return Listed::Different(Difference::Missing);
    };
    if src.size != dst.size {
        return Listed::Different(Difference::Size);
    }
    if verify != VerifyMode::Size && md5_etags && etags_differ(src, dst) {
        return Listed::Different(Difference::Etag);
    }
    if verify == VerifyMode::ReRead {
        return Listed::Read;
    }
    Listed::Identical
}

/// Both sides list an ETag of the form of an MD5, and they differ.
pub fn etags_differ(src: &ObjectInfo, dst: &ObjectInfo) -> bool {
    matches!((src.plain_md5(), dst.plain_md5()), (Some(a), Some(b)) if !a.eq_ignore_ascii_case(b))
}

/// The verdict of the bytes read from both sides.
pub fn by_content(src: &[u8; 32], dst: &[u8; 32]) -> Listed {
    if src == dst {
        Listed::Identical
    } else {
        Listed::Different(Difference::Content)
    }
}

/// One key that is not identical on both sides, as the check report lists it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CheckLine {
    /// The key relative to both sides' prefixes (the same on both).
    pub key: String,
    pub difference: Difference,
    /// The source key as people know it (with the source prefix); absent for `Extra`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_key: Option<String>,
    /// The destination key (with the destination prefix); absent for `Missing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_etag: Option<String>,
    /// `Content`: the SHA-256 (hex) of the bytes read from each side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_sha256: Option<String>,
}

impl CheckLine {
    /// The line of `difference` for the source entry `src` (None: an extra key) and the
    /// destination entry `dst`, with full keys from `src_key` and `dst_key`.
    pub fn of(
        difference: Difference,
        src: Option<&ObjectInfo>,
        dst: Option<&ObjectInfo>,
        src_key: impl Fn(&str) -> String,
        dst_key: impl Fn(&str) -> String,
    ) -> CheckLine {
        let key = src.or(dst).map(|i| i.key.clone()).unwrap_or_default();
        CheckLine {
            source_key: src.map(|s| src_key(&s.key)),
            destination_key: dst.map(|d| dst_key(&d.key)),
            source_size: src.map(|s| s.size),
            destination_size: dst.map(|d| d.size),
            source_etag: src.and_then(|s| s.etag.clone()),
            destination_etag: dst.and_then(|d| d.etag.clone()),
            source_sha256: None,
            destination_sha256: None,
            key,
            difference,
        }
    }
}

/// What a dry run plans for an inventoried object.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Copied by a real run.
    Copy,
    /// Up to date at the destination.
    Skip,
    /// A destination key absent at the source that a real run with delete propagation
    /// would delete (within the guard).
    Delete,
    /// In an archive storage class: not readable without a restore, not copied.
    Archived,
    /// Cannot be copied (see the failure report).
    Invalid,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Copy => "copy",
            Action::Skip => "skip",
            Action::Delete => "delete",
            Action::Archived => "archived",
            Action::Invalid => "invalid",
        }
    }
}

/// One line of the inventory.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InventoryLine {
    /// The source key with the source prefix (for `delete`: the destination key).
    pub key: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The modification time listed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<String>,
    /// `archive` for objects in an archive class (Glacier, Deep Archive), else `standard`
    /// (the listing tells the engine no more than that).
    pub storage_class: String,
    pub action: Action,
    /// With `inventory.checksums: Sha256`: the SHA-256 (hex) of the bytes read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Why the SHA-256 could not be computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The header of every inventory CSV segment.
pub const INVENTORY_CSV_HEADER: &str = "key,size,etag,modified,storage_class,action,sha256\n";

impl InventoryLine {
    pub fn of(key: String, info: &ObjectInfo, action: Action) -> InventoryLine {
        InventoryLine {
            key,
            size: info.size,
            etag: info.etag.clone(),
            modified: info.modified.map(|m| m.to_rfc3339()),
            storage_class: if info.archived { "archive" } else { "standard" }.into(),
            action,
            sha256: None,
            error: None,
        }
    }

    /// The line as CSV (RFC 4180: fields with a comma, quote or line break are quoted).
    pub fn csv(&self) -> String {
        let fields = [
            self.key.clone(),
            self.size.to_string(),
            self.etag.clone().unwrap_or_default(),
            self.modified.clone().unwrap_or_default(),
            self.storage_class.clone(),
            self.action.as_str().to_string(),
            self.sha256.clone().unwrap_or_default(),
        ];
        let mut out = fields.map(|f| csv_field(&f)).join(",");
        out.push('\n');
        out
    }
}

fn csv_field(f: &str) -> String {
    if f.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f.to_string()
    }
}

/// The SHA-256 of the bytes of `info` in `store`, read in pieces of `piece` bytes (ranged
/// reads where the store has them, else the whole object at once), each piece taken from the
/// memory budget of `limits` and dropped once hashed: memory stays at one piece per object.
/// The listed ETag guards against reading pieces of two versions.
pub async fn sha256_of<S: Source + ?Sized>(
    store: &S,
    info: &ObjectInfo,
    piece: u64,
    limits: &Limits,
    retry: &RetryPolicy,
) -> Result<[u8; 32], TransferError> {
    let size = info.size;
    let piece = if store.caps().ranged_reads {
        piece.max(1)
    } else {
        size.max(1)
    };
    let pieces = size.div_ceil(piece).max(1);
    let mut hasher = Sha256::new();
    for i in 0..pieces {
        let offset = i * piece;
        let len = piece.min(size - offset);
        let body = with_retry(retry, "GetObject", |_| async {
            let buf = limits.buffer(len).await;
            store
                .get(
                    &info.key,
                    offset,
                    len,
                    pieces == 1,
                    info.etag.as_deref(),
                    buf,
                )
                .await
        })
        .await?;
        hasher.update(&body.bytes);
    }
    Ok(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(size: u64, etag: Option<&str>) -> ObjectInfo {
        ObjectInfo {
            key: "k".into(),
            size,
            modified: None,
            etag: etag.map(String::from),
            archived: false,
            invalid: None,
        }
    }

    const A: &str = "0cc175b9c0f1b6a831c399e269772661";
    const B: &str = "92eb5ffee6ae2fec3ad71c777531578f";

    #[test]
    fn each_kind_of_difference_is_told_from_the_listings() {
        use Difference::{Etag, Missing};
        use VerifyMode::Checksum;
        let s = obj(3, Some(A));
        assert_eq!(
            classify(&s, None, Checksum, true),
            Listed::Different(Missing)
        );
        assert_eq!(
            classify(&s, Some(&obj(4, Some(A))), Checksum, true),
            Listed::Different(Difference::Size)
        );
        assert_eq!(
            classify(&s, Some(&obj(3, Some(B))), Checksum, true),
            Listed::Different(Etag)
        );
        assert_eq!(
            classify(&s, Some(&obj(3, Some(&A.to_uppercase()))), Checksum, true),
            Listed::Identical
        );
        // ETags that are no MD5s (a filesystem side, SSE-KMS) are not compared...
        assert_eq!(
            classify(&s, Some(&obj(3, Some(B))), Checksum, false),
            Listed::Identical
        );
        // ...nor multipart ones, nor any with `verify: Size`.
        assert_eq!(
            classify(
                &obj(3, Some("abc-2")),
                Some(&obj(3, Some("def-2"))),
                Checksum,
                true
            ),
            Listed::Identical
        );
        assert_eq!(
            classify(&s, Some(&obj(3, Some(B))), VerifyMode::Size, true),
            Listed::Identical
        );
        assert_eq!(
            classify(&s, Some(&obj(4, Some(A))), VerifyMode::Size, true),
            Listed::Different(Difference::Size)
        );
    }

    #[test]
    fn re_read_reads_what_the_listings_cannot_tell_apart() {
        let s = obj(3, Some(A));
        assert_eq!(
            classify(&s, Some(&obj(3, Some(A))), VerifyMode::ReRead, true),
            Listed::Read
        );
        assert_eq!(
            classify(&s, Some(&obj(3, None)), VerifyMode::ReRead, false),
            Listed::Read
        );
        // Nothing to read when the listings already differ, or the key is missing.
        assert_eq!(
            classify(&s, Some(&obj(5, None)), VerifyMode::ReRead, false),
            Listed::Different(Difference::Size)
        );
        assert_eq!(
            classify(&s, Some(&obj(3, Some(B))), VerifyMode::ReRead, true),
            Listed::Different(Difference::Etag)
        );
        assert_eq!(by_content(&[1; 32], &[1; 32]), Listed::Identical);
        assert_eq!(
            by_content(&[1; 32], &[2; 32]),
            Listed::Different(Difference::Content)
        );
    }

    #[test]
    fn lines_name_both_sides_and_quote_csv_fields() {
        let src = obj(3, Some(A));
        let line = CheckLine::of(
            Difference::Extra,
            None,
            Some(&src),
            |k| format!("src/{k}"),
            |k| format!("dst/{k}"),
        );
        assert_eq!(line.key, "k");
        assert_eq!(line.source_key, None);
        assert_eq!(line.destination_key.as_deref(), Some("dst/k"));
        assert_eq!(
            serde_json::to_string(&line).unwrap(),
            format!(
                r#"{{"key":"k","difference":"Extra","destinationKey":"dst/k","destinationSize":3,"destinationEtag":"{A}"}}"#
            )
        );
        let mut inv = InventoryLine::of("a,\"b\"".into(), &src, Action::Copy);
        inv.sha256 = Some("ff".into());
        assert_eq!(
            inv.csv(),
            format!("\"a,\"\"b\"\"\",3,{A},,standard,copy,ff\n")
        );
        assert_eq!(
            INVENTORY_CSV_HEADER.matches(',').count(),
            inv.csv().matches(',').count() - 1,
            "one column per field (the key holds one comma)"
        );
    }

    #[tokio::test]
    async fn the_sha256_is_streamed_in_pieces_and_matches_the_whole() {
        use crate::stores::MemoryStore;
        use ferry_core::live::LiveLimits;
        let store = MemoryStore::new();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        store.insert("k", data.clone());
        let info = store.head("k").await.unwrap().unwrap().0;
        let limits = Limits::of(&crate::job::shard_share(
            &LiveLimits {
                requests_per_second: 0,
                bandwidth_limit: None,
                concurrency: 1,
                memory_budget: 4096,
            },
            1,
        ));
        let got = sha256_of(&store, &info, 1000, &limits, &RetryPolicy::default())
            .await
            .unwrap();
        let want: [u8; 32] = Sha256::digest(&data).into();
        assert_eq!(got, want);
    }
}
