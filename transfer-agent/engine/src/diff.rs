//! The overwrite policy (`docs/contract.md` §1): whether a selected source object must be
//! copied over what the destination holds under the same key. Pure.

use ferry_core::OverwritePolicy;

use crate::stores::ObjectInfo;

/// Whether `src` must be copied, given the destination entry for the same key (if any).
/// `md5_etags`: both sides' ETags of the form of an MD5 are MD5s of the content, so equal
/// ones mean equal bytes.
///
/// Times are compared in whole seconds: S3 keeps `LastModified` to the second, so a file
/// modified at 10.5 s and copied at 10.7 s must not look newer than its copy.
pub fn needs_copy(
    policy: OverwritePolicy,
    src: &ObjectInfo,
    dst: Option<&ObjectInfo>,
    md5_etags: bool,
) -> bool {
    let Some(dst) = dst else { return true };
    let newer = newer_than(src, dst);
    match policy {
        OverwritePolicy::Skip => false,
        OverwritePolicy::Always => true,
        OverwritePolicy::IfNewer => newer,
        OverwritePolicy::IfDifferent => {
            if src.size != dst.size {
                return true;
            }
            match (src.plain_md5(), dst.plain_md5()) {
                (Some(a), Some(b)) if md5_etags => !a.eq_ignore_ascii_case(b),
                // No comparable checksum (a filesystem side, multipart ETags): a source
                // modified after its copy was written is different.
                _ => newer,
            }
        }
    }
}

/// Whether `src` was modified in a later second than `dst` (false when a time is missing).
fn newer_than(src: &ObjectInfo, dst: &ObjectInfo) -> bool {
    match (src.modified, dst.modified) {
        (Some(s), Some(d)) => s.timestamp() > d.timestamp(),
        _ => false,
    }
}

/// Whether `needs_copy` would copy `src` only because MD5-shaped ETags differ while the source
/// is not newer than its copy: a single object encrypted with SSE-KMS or SSE-C in a bucket
/// without default KMS has an MD5-shaped ETag that is no MD5, which a listing cannot tell.
/// Then the source's HEAD (its encryption headers) decides, so such an object is not copied
/// again on every `IfDifferent` run.
pub fn etags_in_doubt(
    policy: OverwritePolicy,
    src: &ObjectInfo,
    dst: Option<&ObjectInfo>,
    md5_etags: bool,
) -> bool {
    let Some(dst) = dst else { return false };
    let src_newer = newer_than(src, dst);
    policy == OverwritePolicy::IfDifferent
        && md5_etags
        && src.size == dst.size
        && !src_newer
        && matches!((src.plain_md5(), dst.plain_md5()), (Some(a), Some(b)) if !a.eq_ignore_ascii_case(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn obj(size: u64, etag: Option<&str>, modified: &str) -> ObjectInfo {
        ObjectInfo {
            key: "k".into(),
            size,
            modified: Some(modified.parse::<DateTime<Utc>>().unwrap()),
            etag: etag.map(String::from),
            archived: false,
            invalid: None,
        }
    }

    fn nc(p: OverwritePolicy, s: &ObjectInfo, d: Option<&ObjectInfo>) -> bool {
        needs_copy(p, s, d, true)
    }

    const A: &str = "0cc175b9c0f1b6a831c399e269772661";
    const B: &str = "92eb5ffee6ae2fec3ad71c777531578f";

    #[test]
    fn absent_destination_is_always_copied() {
        for p in [
            OverwritePolicy::Skip,
            OverwritePolicy::Always,
            OverwritePolicy::IfNewer,
            OverwritePolicy::IfDifferent,
        ] {
            assert!(nc(p, &obj(1, None, "2024-01-01T00:00:00Z"), None));
        }
    }

    #[test]
    fn skip_and_always() {
        let s = obj(1, Some(A), "2024-01-01T00:00:00Z");
        let d = obj(2, Some(B), "2023-01-01T00:00:00Z");
        assert!(!nc(OverwritePolicy::Skip, &s, Some(&d)));
        assert!(nc(OverwritePolicy::Always, &s, Some(&s.clone())));
    }

    #[test]
    fn if_newer_compares_seconds() {
        let old = obj(1, None, "2024-01-01T00:00:00Z");
        let new = obj(1, None, "2024-01-01T00:00:01Z");
        let same_second = obj(1, None, "2024-01-01T00:00:00.900Z");
        assert!(nc(OverwritePolicy::IfNewer, &new, Some(&old)));
        assert!(!nc(OverwritePolicy::IfNewer, &old, Some(&new)));
        assert!(!nc(OverwritePolicy::IfNewer, &same_second, Some(&old)));
    }

    #[test]
    fn if_different_uses_size_then_md5_then_time() {
        let t = "2024-01-01T00:00:00Z";
        assert!(nc(
            OverwritePolicy::IfDifferent,
            &obj(1, Some(A), t),
            Some(&obj(2, Some(A), t))
        ));
        assert!(nc(
            OverwritePolicy::IfDifferent,
            &obj(1, Some(A), t),
            Some(&obj(1, Some(B), t))
        ));
        assert!(!nc(
            OverwritePolicy::IfDifferent,
            &obj(1, Some(A), t),
            Some(&obj(1, Some(A), "2025-01-01T00:00:00Z"))
        ));
        // Multipart ETags are not MD5s of the content: fall back to time.
        let mp = obj(1, Some("abc-2"), "2024-06-01T00:00:00Z");
        assert!(nc(
            OverwritePolicy::IfDifferent,
            &mp,
            Some(&obj(1, Some(A), t))
        ));
        assert!(!nc(
            OverwritePolicy::IfDifferent,
            &obj(1, Some("abc-2"), t),
            Some(&obj(1, Some(A), "2024-06-01T00:00:00Z"))
        ));
    }

    #[test]
    fn differing_md5_shaped_etags_of_an_older_source_are_in_doubt() {
        let t = "2024-01-01T00:00:00Z";
        let later = "2024-06-01T00:00:00Z";
        let doubt = |s: &ObjectInfo, d: &ObjectInfo| {
            etags_in_doubt(OverwritePolicy::IfDifferent, s, Some(d), true)
        };
        // Copied after the source was written, yet other ETags: the source's may be no MD5.
        assert!(doubt(&obj(1, Some(A), t), &obj(1, Some(B), later)));
        // Not when the source is newer, the sizes differ, the ETags agree, or not IfDifferent.
        assert!(!doubt(&obj(1, Some(A), later), &obj(1, Some(B), t)));
        assert!(!doubt(&obj(1, Some(A), t), &obj(2, Some(B), later)));
        assert!(!doubt(&obj(1, Some(A), t), &obj(1, Some(A), later)));
        assert!(!etags_in_doubt(
            OverwritePolicy::Always,
            &obj(1, Some(A), t),
            Some(&obj(1, Some(B), later)),
            true
        ));
    }

    #[test]
    fn etags_that_are_not_md5s_are_not_compared() {
        let t = "2024-01-01T00:00:00Z";
        // Equal-looking but opaque ETags (an HTTP source) prove nothing; nor do differing
        // ones: same size and not newer is up to date.
        assert!(!needs_copy(
            OverwritePolicy::IfDifferent,
            &obj(1, Some(A), t),
            Some(&obj(1, Some(B), t)),
            false
        ));
    }
}
