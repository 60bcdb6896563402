//! The listing side of a shard: merges the sorted source and destination listings and decides
//! about each selected key, in key order. Pure over two streams.

use ferry_core::{OverwritePolicy, Selector, Totals, VerifyMode};
use futures::StreamExt;
use std::sync::Arc;
use tokio::sync::mpsc;

use crate::audit::{classify, etags_differ, Listed};
use crate::diff::{etags_in_doubt, needs_copy};
use crate::error::TransferError;
use crate::stores::{Listing, ObjectInfo, Source};

/// What the listing side hands the copying side, in key order.
#[derive(Debug)]
pub enum Work {
    Copy {
        info: ObjectInfo,
        replaced: bool,
    },
    /// Up to date because an earlier attempt of this shard wrote it after its last checkpoint.
    Rewritten {
        info: ObjectInfo,
        checksum: String,
    },
    /// Up to date at the destination; with the MD5 both sides listed, when they did and it
    /// is the same (the object is known to be there with the source's bytes).
    Skip(ObjectInfo, Option<String>),
    WouldCopy {
        info: ObjectInfo,
        replaced: bool,
    },
    /// A selected destination key with no source key: a delete candidate (delete
    /// propagation only).
    Candidate(ObjectInfo),
    Archived(ObjectInfo),
    Invalid(ObjectInfo, String),
    /// Check mode: a selected source key, what the listings say of it, and the destination's
    /// entry for it.
    Check {
        info: ObjectInfo,
        existing: Option<ObjectInfo>,
        listed: Listed,
    },
    /// Check mode: a selected destination key the source does not hold.
    Extra(ObjectInfo),
    ListingFailed(TransferError),
}

/// How the merge decides.
#[derive(Clone)]
pub struct Rules {
    pub selector: Selector,
    pub policy: OverwritePolicy,
    pub dry_run: bool,
    /// Both sides' MD5-shaped ETags are MD5s of the content.
    pub md5_etags: bool,
    /// When resuming, the start of the first attempt (Unix seconds): an up-to-date
    /// destination object written since then was copied by that attempt after its last
    /// checkpoint, and is counted (and listed in the manifest) as copied rather than skipped.
    pub resumed_since: Option<i64>,
    /// Delete propagation: destination keys absent at the source are handed over as
    /// [`Work::Candidate`] (when the selector selects them and they are not `protected`).
    pub deletes: bool,
    /// Key prefixes (relative to the destination) that are never candidates: where backups
    /// of deleted objects go.
    pub protected: Vec<String>,
    /// The source, asked (HEAD) about the rare object whose ETag the listing cannot judge
    /// ([`etags_in_doubt`]); None: such objects are copied.
    pub source: Option<Arc<dyn Source>>,
    /// Check mode: classify each key ([`Work::Check`], [`Work::Extra`]) instead of deciding
    /// about a copy; `verify` says how far the comparison goes.
    pub check: bool,
    pub verify: VerifyMode,
}

impl Rules {
    /// The work for a selected destination key the source lacks.
    fn only_here(&self, d: ObjectInfo) -> Work {
        if self.check {
            Work::Extra(d)
        } else {
            Work::Candidate(d)
        }
    }

    fn candidate(&self, d: &ObjectInfo) -> bool {
        (self.deletes || self.check)
            && !self.protected.iter().any(|p| d.key.starts_with(p.as_str()))
            && self.selector.selects(&d.key, d.size, d.modified)
    }
}

/// A listing of only the given keys, looked up one by one (for retries of failed keys).
pub fn keys_listing(store: Arc<dyn Source>, keys: Vec<String>) -> Listing {
    futures::stream::iter(keys)
        .then(move |k| {
            let store = store.clone();
            async move { store.head(&k).await.map(|o| o.map(|(i, _)| i)) }
        })
        .filter_map(|r| async move { r.transpose() })
        .boxed()
}

/// Merges the sorted listings and sends a [`Work`] per selected source key. Returns what was
/// handed over once the source listing has reached its end (the shard's total after the
/// resume point, known long before the copying side has taken the last of it), or None when
/// a listing failed or the receiver went away.
pub async fn produce(
    mut src: Listing,
    dst: Listing,
    rules: Rules,
    tx: mpsc::Sender<Work>,
) -> Option<Totals> {
    let mut dst = dst.peekable();
    let mut sent = Totals::default();
    while let Some(item) = src.next().await {
        let info = match item {
            Ok(i) => i,
            Err(e) => {
                let _ = tx.send(Work::ListingFailed(e)).await;
                return None;
            }
        };
        // Destination keys before this source key exist only at the destination. Every
        // source key, selected or not, moves the destination on: a destination key the
        // source holds is never a candidate.
        let mut existing = None;
        loop {
            match std::pin::Pin::new(&mut dst).peek().await {
                Some(Ok(d)) if d.key < info.key => {
                    if let Some(Ok(d)) = dst.next().await {
                        if rules.candidate(&d) && tx.send(rules.only_here(d)).await.is_err() {
                            return None;
                        }
                    }
                }
                Some(Ok(d)) if d.key == info.key => {
                    existing = dst.next().await.and_then(Result::ok);
                    break;
                }
                Some(Err(_)) => {
                    if let Some(Err(e)) = dst.next().await {
                        let _ = tx.send(Work::ListingFailed(e)).await;
                    }
                    return None;
                }
                _ => break,
            }
        }
        if !rules.selector.selects(&info.key, info.size, info.modified) {
            continue;
        }
        let size = info.size;
        let opaque = match (&rules.source, &existing) {
            (Some(src), Some(d))
                if etags_in_doubt(rules.policy, &info, Some(d), rules.md5_etags)
                    || (rules.check
                        && rules.md5_etags
                        && info.size == d.size
                        && etags_differ(&info, d)) =>
            {
                matches!(src.head(&info.key).await, Ok(Some((_, m))) if m.etag_not_md5)
            }
            _ => false,
        };
        if tx
            .send(decide(&rules, info, existing, opaque))
            .await
            .is_err()
        {
            return None;
        }
        sent.objects += 1;
        sent.bytes += size;
    }
    // The source has ended: what is left of the destination exists only there.
    if rules.deletes || rules.check {
        while let Some(item) = dst.next().await {
            let work = match item {
                Ok(d) if rules.candidate(&d) => rules.only_here(d),
                Ok(_) => continue,
                Err(e) => {
                    let _ = tx.send(Work::ListingFailed(e)).await;
                    return None;
                }
            };
            if tx.send(work).await.is_err() {
                return None;
            }
        }
    }
    Some(sent)
}

/// What to do with one selected source entry, given the destination's entry for its key;
/// `opaque`: the source's HEAD says its ETag is no MD5.
fn decide(rules: &Rules, info: ObjectInfo, existing: Option<ObjectInfo>, opaque: bool) -> Work {
    if let Some(why) = info.invalid.clone() {
        return Work::Invalid(info, why);
    }
    if rules.check {
        let listed = classify(
            &info,
            existing.as_ref(),
            rules.verify,
            rules.md5_etags && !opaque,
        );
        return Work::Check {
            info,
            existing,
            listed,
        };
    }
    if info.archived {
        return Work::Archived(info);
    }
    let md5_etags = rules.md5_etags && !opaque;
    if needs_copy(rules.policy, &info, existing.as_ref(), md5_etags) {
        return if rules.dry_run {
            Work::WouldCopy {
                replaced: existing.is_some(),
                info,
            }
        } else {
            Work::Copy {
                replaced: existing.is_some(),
                info,
            }
        };
    }
    match existing {
        Some(d)
            if rules
                .resumed_since
                .is_some_and(|t| d.modified.is_some_and(|m| m.timestamp() >= t)) =>
        {
            Work::Rewritten {
                checksum: d.plain_md5().unwrap_or_default().to_string(),
                info,
            }
        }
        existing => {
            let md5 = existing.as_ref().and_then(|d| same_md5(&info, d));
            Work::Skip(info, md5)
        }
    }
}

/// The MD5 (lower-case hex) of an object both sides list with the same size and MD5.
fn same_md5(src: &ObjectInfo, dst: &ObjectInfo) -> Option<String> {
    let (a, b) = (src.plain_md5()?, dst.plain_md5()?);
    (src.size == dst.size && a.eq_ignore_ascii_case(b)).then(|| a.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stores::MemoryStore;
    use chrono::{TimeZone, Utc};
    use ferry_core::select::Selection;

    fn rules(selection: Selection) -> Rules {
        Rules {
            selector: Selector::new(&selection).unwrap(),
            policy: OverwritePolicy::IfDifferent,
            dry_run: false,
            md5_etags: true,
            resumed_since: None,
            deletes: false,
            protected: Vec::new(),
            source: None,
            check: false,
            verify: VerifyMode::Checksum,
        }
    }

    async fn merged(
        src: &MemoryStore,
        dst: &MemoryStore,
        rules: Rules,
    ) -> (Vec<String>, Option<Totals>) {
        let (tx, mut rx) = mpsc::channel(16);
        let task = tokio::spawn(produce(
            src.list(None, None),
            dst.list(None, None),
            rules,
            tx,
        ));
        let mut out = Vec::new();
        while let Some(w) = rx.recv().await {
            out.push(match w {
                Work::Copy { info, replaced } => format!("copy {} {replaced}", info.key),
                Work::Rewritten { info, .. } => format!("rewritten {}", info.key),
                Work::Skip(i, _) => format!("skip {}", i.key),
                Work::WouldCopy { info, .. } => format!("would {}", info.key),
                Work::Candidate(i) => format!("delete {}", i.key),
                Work::Archived(i) => format!("archived {}", i.key),
                Work::Invalid(i, _) => format!("invalid {}", i.key),
                Work::ListingFailed(e) => format!("failed {e}"),
                Work::Check { info, listed, .. } => format!("check {} {listed:?}", info.key),
                Work::Extra(i) => format!("extra {}", i.key),
            });
        }
        (out, task.await.unwrap())
    }

    #[tokio::test]
    async fn the_merge_copies_what_differs_and_skips_what_is_up_to_date() {
        let (src, dst) = (MemoryStore::new(), MemoryStore::new());
        for (k, v) in [
            ("a", "1"),
            ("b", "2"),
            ("c", "3"),
            ("d", "44"),
            ("skip.tmp", "5"),
        ] {
            src.insert(k, v.as_bytes().to_vec());
        }
        // `b` is up to date, `c` differs in content, `d` in size; `0` and `z` exist only at
        // the destination and are left alone.
        for (k, v) in [("0", "x"), ("b", "2"), ("c", "9"), ("d", "4"), ("z", "x")] {
            dst.insert(k, v.as_bytes().to_vec());
        }
        let (work, total) = merged(
            &src,
            &dst,
            rules(Selection {
                exclude: vec!["*.tmp".into()],
                ..Default::default()
            }),
        )
        .await;
        assert_eq!(
            work,
            ["copy a false", "skip b", "copy c true", "copy d true"]
        );
        assert_eq!(
            total,
            Some(Totals {
                objects: 4,
                bytes: 5
            })
        );
    }

    /// A single object encrypted with SSE-KMS in a bucket without default KMS: its listed
    /// ETag looks like an MD5 and is not one, so it differs from its verified copy's. The
    /// source's HEAD says so and it is up to date, instead of copied again on every run.
    #[tokio::test]
    async fn an_object_whose_etag_is_no_md5_is_not_copied_again() {
        let (src, dst) = (Arc::new(MemoryStore::new()), MemoryStore::new());
        let written = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        let copied = Utc.with_ymd_and_hms(2024, 6, 1, 0, 0, 0).unwrap();
        src.encrypt_with_kms();
        src.insert_at("kms", b"secret".to_vec(), written);
        dst.insert_at("kms", b"secret".to_vec(), copied);
        // Without asking the source, the ETags differ: copied.
        let (work, _) = merged(&src, &dst, rules(Selection::default())).await;
        assert_eq!(work, ["copy kms true"]);
        let mut r = rules(Selection::default());
        r.source = Some(src.clone());
        let reads = src.reads();
        let (work, _) = merged(&src, &dst, r).await;
        assert_eq!(work, ["skip kms"]);
        assert_eq!(src.reads(), reads, "a HEAD, not a GET");
    }

    #[tokio::test]
    async fn a_resumed_shard_counts_its_own_unrecorded_writes_as_copied() {
        let (src, dst) = (MemoryStore::new(), MemoryStore::new());
        let before = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        let after = Utc.with_ymd_and_hms(2024, 6, 1, 0, 0, 0).unwrap();
        src.insert("old", b"1".to_vec());
        src.insert("new", b"2".to_vec());
        dst.insert_at("old", b"1".to_vec(), before);
        dst.insert_at("new", b"2".to_vec(), after);
        let mut r = rules(Selection::default());
        r.resumed_since = Some(
            Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0)
                .unwrap()
                .timestamp(),
        );
        let (work, _) = merged(&src, &dst, r).await;
        assert_eq!(work, ["rewritten new", "skip old"]);
    }

    #[tokio::test]
    async fn destination_keys_absent_at_the_source_are_candidates_when_selected() {
        let (src, dst) = (MemoryStore::new(), MemoryStore::new());
        for k in ["b", "d.tmp", "keep/x"] {
            src.insert(k, b"1".to_vec());
        }
        // `a`, `c` and `z` exist only at the destination; `c.tmp` is excluded by the filters
        // and `trash/a` lies under the protected backup prefix; `d.tmp` is excluded but the
        // source holds it.
        for k in ["a", "b", "c", "c.tmp", "d.tmp", "keep/x", "trash/a", "z"] {
            dst.insert(k, b"1".to_vec());
        }
        let mut r = rules(Selection {
            exclude: vec!["*.tmp".into()],
            ..Default::default()
        });
        r.deletes = true;
        r.protected = vec!["trash/".into()];
        let (work, total) = merged(&src, &dst, r.clone()).await;
        assert_eq!(
            work,
            ["delete a", "skip b", "delete c", "skip keep/x", "delete z"]
        );
        assert_eq!(total.map(|t| t.objects), Some(2));
        // Without delete propagation the same merge names no candidate.
        r.deletes = false;
        let (work, _) = merged(&src, &dst, r).await;
        assert_eq!(work, ["skip b", "skip keep/x"]);
    }

    #[tokio::test]
    async fn an_empty_source_makes_every_selected_destination_key_a_candidate() {
        let (src, dst) = (MemoryStore::new(), MemoryStore::new());
        dst.insert("a", b"1".to_vec());
        dst.insert("b", b"1".to_vec());
        let mut r = rules(Selection::default());
        r.deletes = true;
        // (Whether they may be deleted is the guard's to say, for the whole job.)
        assert_eq!(merged(&src, &dst, r).await.0, ["delete a", "delete b"]);
    }

    #[tokio::test]
    async fn a_dry_run_only_says_what_it_would_copy() {
        let (src, dst) = (MemoryStore::new(), MemoryStore::new());
        src.insert("a", b"1".to_vec());
        let mut r = rules(Selection::default());
        r.dry_run = true;
        assert_eq!(merged(&src, &dst, r).await.0, ["would a"]);
    }

    #[tokio::test]
    async fn a_check_classifies_every_selected_key_of_both_sides() {
        let (src, dst) = (MemoryStore::new(), MemoryStore::new());
        for (k, v) in [
            ("a", "1"),
            ("b", "2"),
            ("c", "3"),
            ("d", "44"),
            ("x.tmp", "5"),
        ] {
            src.insert(k, v.as_bytes().to_vec());
        }
        // `b` is identical, `c` differs in content (same size), `d` in size, `a` is missing;
        // `0` and `z` exist only at the destination, `y.tmp` too but is not selected.
        for (k, v) in [
            ("0", "x"),
            ("b", "2"),
            ("c", "9"),
            ("d", "4"),
            ("y.tmp", "x"),
            ("z", "x"),
        ] {
            dst.insert(k, v.as_bytes().to_vec());
        }
        let mut r = rules(Selection {
            exclude: vec!["*.tmp".into()],
            ..Default::default()
        });
        r.check = true;
        let (work, total) = merged(&src, &dst, r.clone()).await;
        assert_eq!(
            work,
            [
                "extra 0",
                "check a Different(Missing)",
                "check b Identical",
                "check c Different(Etag)",
                "check d Different(Size)",
                "extra z"
            ]
        );
        assert_eq!(total.map(|t| t.objects), Some(4));
        // With `verify: ReRead` the keys the listings cannot tell apart are read.
        r.verify = VerifyMode::ReRead;
        r.md5_etags = false;
        let (work, _) = merged(&src, &dst, r).await;
        assert_eq!(work[2..4], ["check b Read", "check c Read"]);
    }
}
