//! What a dry run says a real run of the same spec would do: objects and bytes to copy, skip
//! and delete, the requests each side would serve, the bytes read out of the source, and how
//! long it would take (`docs/estimates.md`). Pure: computed from the shards' progress records
//! and the transfer settings, nothing is listed again.

use ferry_core::plan::Transfer;
use ferry_core::stores::StoreConfig;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::aggregate::human_duration;
use crate::pricing::Cost;
use crate::quantity::human_bytes;
use crate::status::{Counters, ShardProgress, Transport};

/// Keys per page of a listing (ListObjectsV2 returns at most 1,000).
pub const KEYS_PER_LIST: u64 = 1000;
/// The throughput assumed per shard when `bandwidthLimit` does not set a lower one: 100 MiB/s.
pub const ASSUMED_BYTES_PER_SECOND_PER_SHARD: u64 = 100 << 20;
/// The largest object one CopyObject copies; a server-side copy above it goes in parts.
pub const MAX_SINGLE_COPY: u64 = 5 << 30;
/// S3 allows at most this many parts per object.
const MAX_PARTS: u64 = 10_000;
const MIB: u64 = 1 << 20;

/// Requests one side would serve, by class.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Requests {
    /// ListObjectsV2 pages (1,000 keys each).
    pub list: u64,
    /// HeadObject.
    pub head: u64,
    /// GetObject, ranged GETs of parts included.
    pub get: u64,
    /// PutObject (objects sent in one request).
    pub put: u64,
    /// CreateMultipartUpload.
    pub create_multipart: u64,
    /// UploadPart and UploadPartCopy.
    pub upload_part: u64,
    /// CompleteMultipartUpload.
    pub complete_multipart: u64,
    /// CopyObject (server-side copies, backups before deletes).
    pub copy_object: u64,
    /// DeleteObject.
    pub delete: u64,
}

impl Requests {
    /// Requests that write or list (S3's PUT, COPY, POST, LIST tier; R2's and GCS's Class A).
    pub fn class_a(&self) -> u64 {
        self.list
            + self.put
            + self.create_multipart
            + self.upload_part
            + self.complete_multipart
            + self.copy_object
    }

    /// Requests that read (GET, HEAD; R2's and GCS's Class B).
    pub fn class_b(&self) -> u64 {
        self.get + self.head
    }

    /// Every request.
    pub fn total(&self) -> u64 {
        self.class_a() + self.class_b() + self.delete
    }
}

/// `status.estimate`: what a real run of a dry run's spec would do and cost.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Estimate {
    /// Objects a real run would copy (absent at the destination, or different).
    pub objects_to_copy: u64,
    /// Their bytes.
    pub bytes_to_copy: u64,
    /// Objects already up to date at the destination.
    pub objects_to_skip: u64,
    /// Their bytes.
    pub bytes_to_skip: u64,
    /// With delete propagation: destination keys the source lacks (the delete candidates).
    pub objects_to_delete: u64,
    /// Their bytes.
    pub bytes_to_delete: u64,
    /// Of the objects to copy, those copied in parts.
    pub objects_in_parts: u64,
    /// The parts they are copied in.
    pub parts: u64,
    /// `ServerSide` (copied inside the service: no egress) or `Streamed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
    /// Requests the source would serve.
    pub source_requests: Requests,
    /// Requests the destination would serve.
    pub destination_requests: Requests,
    /// Bytes read out of the source through Ferry (0 for a server-side copy).
    pub egress_bytes: u64,
    /// Bytes read back from the destination (`verify: ReRead`).
    pub destination_egress_bytes: u64,
    /// The throughput assumed for the duration, bytes per second.
    pub assumed_bytes_per_second: u64,
    /// The estimated duration of a real run, in seconds.
    pub duration_seconds: u64,
    /// The same, human-readable.
    pub duration: String,
    /// How the throughput assumption was made.
    pub assumption: String,
    /// What is estimated rather than counted (everything else is exact).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// What it would cost, in USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Cost>,
}

/// The part size a copy uses for an object of `size` bytes: the configured one, raised to a
/// whole MiB so that no object needs more than 10,000 parts (the engine's rule,
/// `transfer-agent/engine/src/copy.rs`).
pub fn part_size_for(size: u64, configured: u64) -> u64 {
    let needed = size.div_ceil(MAX_PARTS);
    configured.max(needed.div_ceil(MIB) * MIB)
}

/// How many parts an object of `size` bytes is copied in (0: in one request), by transport.
pub fn parts_for(size: u64, transfer: &Transfer, transport: Transport) -> u64 {
    let threshold = match transport {
        Transport::ServerSide => MAX_SINGLE_COPY,
        Transport::Streamed if ranged_reads(&transfer.source) => transfer.multipart.threshold,
        Transport::Streamed => u64::MAX,
    };
    if size <= threshold {
        return 0;
    }
    size.div_ceil(part_size_for(size, transfer.multipart.part_size))
}

/// Whether Ferry reads this source in ranges (any other kind, a database row, is read whole).
fn ranged_reads(s: &StoreConfig) -> bool {
    matches!(
        s,
        StoreConfig::S3(_) | StoreConfig::Filesystem(_) | StoreConfig::UrlList(_)
    )
}

/// Pages of a listing of `keys` keys (an empty listing is one request).
fn list_pages(keys: u64) -> u64 {
    keys.div_ceil(KEYS_PER_LIST).max(1)
}

/// Whether a side is served by an object store (its requests count; a filesystem's do not).
fn serves_requests(s: &StoreConfig) -> bool {
    matches!(s, StoreConfig::S3(_) | StoreConfig::UrlList(_))
}

/// Whether a copy between these sides costs anything to price: one of them is a service
/// (a copy between disks and databases has no requests or egress to bill).
pub fn has_a_price(t: &Transfer) -> bool {
    serves_requests(&t.source) || serves_requests(&t.destination)
}

/// The estimate of a dry run whose shards left these records (pricing apart: see
/// [`crate::pricing`]).
pub fn estimate(transfer: &Transfer, shards: &[ShardProgress]) -> Estimate {
    let mut c = Counters::default();
    for s in shards {
        c.add(&s.counters);
    }
    let transport = shards
        .iter()
        .find_map(|s| s.transport)
        .unwrap_or(Transport::Streamed);
    let mut notes = Vec::new();
    let (whole, in_parts, parts) = shape(transfer, &c, transport, &mut notes);
    let mut src = Requests::default();
    let mut dst = Requests::default();

    // Listings: each shard lists its range on both sides; with more than one shard the
    // planner lists the whole source once more to cut the ranges.
    if matches!(transfer.source, StoreConfig::S3(_)) {
        src.list = shards
            .iter()
            .map(|s| list_pages(s.counters.objects_total))
            .sum();
        if shards.len() > 1 {
            src.list += list_pages(c.objects_total);
        }
    }
    let propagate = transfer.deletes.is_some();
    dst.list = shards
        .iter()
        .map(|s| {
            let seen = if propagate {
                s.counters.destination_objects
            } else {
                s.counters.objects_skipped
            };
            list_pages(seen)
        })
        .sum();
    let listed = serves_requests(&transfer.source) || serves_requests(&transfer.destination);
    notes.extend(listed.then(|| if propagate {
        "LIST: pages of 1,000 of the selected keys; keys the filters leave out add pages".into()
    } else {
        "LIST: pages of 1,000 of the selected keys; keys the filters leave out, and destination \
         keys that are not up to date, add pages"
            .into()
    }));

    // The copies.
    let rereads = transfer.verify == ferry_core::VerifyMode::ReRead;
    match transport {
        Transport::ServerSide => {
            dst.copy_object += whole;
            src.head += in_parts;
            dst.create_multipart += in_parts;
            dst.upload_part += parts;
            dst.complete_multipart += in_parts;
            dst.head += in_parts;
            notes.push(
                "a server-side copy whose ETag is not an MD5 is checked with a HEAD: not counted"
                    .into(),
            );
        }
        Transport::Streamed => {
            src.get += whole + parts;
            src.head += in_parts;
            dst.put += whole;
            dst.create_multipart += in_parts;
            dst.upload_part += parts;
            dst.complete_multipart += in_parts;
            if rereads {
                dst.get += whole + parts;
            }
        }
    }

    // The delete stage: each candidate is looked up on both sides, backed up, deleted.
    if let Some(d) = &transfer.deletes {
        let n = c.objects_to_delete;
        src.head += n;
        dst.head += n;
        dst.delete += n;
        if d.backup_prefix.is_some() {
            dst.copy_object += n;
        }
    }

    if !serves_requests(&transfer.source) {
        src = Requests::default();
    }
    if !serves_requests(&transfer.destination) {
        dst = Requests::default();
    }
    // Bytes leave a service when Ferry reads them (a disk has no egress).
    let streamed = transport == Transport::Streamed;
    let egress_bytes = if streamed && serves_requests(&transfer.source) {
        c.bytes_would_copy
    } else {
        0
    };
    let destination_egress_bytes = if streamed && rereads && serves_requests(&transfer.destination)
    {
        c.bytes_would_copy
    } else {
        0
    };

    let shards_n = (shards.len() as u64).max(1);
    let default_rate = ASSUMED_BYTES_PER_SECOND_PER_SHARD * shards_n;
    let (rate, mut assumption) = match transfer.bandwidth_limit {
        Some(limit) if limit < default_rate => {
            (limit, format!("{}/s (bandwidthLimit)", human_bytes(limit)))
        }
        _ => (
            default_rate,
            format!(
                "{}/s: 100Mi/s per shard, {shards_n} shard(s); set bandwidthLimit to assume less",
                human_bytes(default_rate)
            ),
        ),
    };
    let mut seconds = c.bytes_would_copy.div_ceil(rate);
    if transfer.requests_per_second > 0 {
        let rps = u64::from(transfer.requests_per_second);
        let by_requests = (src.total() + dst.total()).div_ceil(rps);
        if by_requests > seconds {
            seconds = by_requests;
            assumption = format!("{assumption}; held to {rps} requests/s (requestsPerSecond)");
        }
    }
    Estimate {
        objects_to_copy: c.objects_would_copy,
        bytes_to_copy: c.bytes_would_copy,
        objects_to_skip: c.objects_skipped,
        bytes_to_skip: c.bytes_skipped,
        objects_to_delete: c.objects_to_delete,
        bytes_to_delete: c.bytes_to_delete,
        objects_in_parts: in_parts,
        parts,
        transport: shards.iter().find_map(|s| s.transport),
        source_requests: src,
        destination_requests: dst,
        egress_bytes,
        destination_egress_bytes,
        assumed_bytes_per_second: rate,
        duration_seconds: seconds,
        duration: human_duration(seconds),
        assumption,
        notes,
        cost: None,
    }
}

/// The estimate with its cost: priced with `pricing` (`spec.pricing`) and the tables of
/// `overrides` (the ConfigMap's, where it was read). When it cannot be priced, the reason is
/// the last note and there is no cost.
pub fn priced(
    transfer: &Transfer,
    shards: &[ShardProgress],
    pricing: Option<&crate::pricing::Pricing>,
    overrides: Option<&str>,
) -> Estimate {
    let mut e = estimate(transfer, shards);
    match crate::pricing::cost(&e, transfer, pricing, overrides) {
        Ok(mut cost) => {
            if overrides.is_none() {
                if let Some(r) = pricing.and_then(|p| p.config_map_ref.as_ref()) {
                    cost.notes.push(format!(
                        "the ConfigMap {} was not read: priced with the built-in tables",
                        r.name
                    ));
                }
            }
            e.cost = Some(cost);
        }
        Err(why) => e.notes.push(format!("no cost: {why}")),
    }
    e
}

/// What a finished real run cost (`status.cost`): what it did (objects and bytes copied,
/// skipped, deleted) priced by the estimate's rules, as if a dry run had found exactly those
/// objects to copy. Requests are counted as the estimate counts them (retries, and reads of
/// objects that then failed, are not in it; objects in parts are taken of the mean size when
/// the threshold could be exceeded: said in `notes`). None, with why, when it cannot be
/// priced.
pub fn run_cost(
    transfer: &Transfer,
    shards: &[ShardProgress],
    pricing: Option<&crate::pricing::Pricing>,
    overrides: Option<&str>,
) -> Result<Cost, String> {
    let done: Vec<ShardProgress> = shards
        .iter()
        .map(|s| {
            let mut s = s.clone();
            let c = &mut s.counters;
            (c.objects_would_copy, c.bytes_would_copy) = (c.objects_copied, c.bytes_copied);
            (c.objects_would_copy_whole, c.objects_would_copy_in_parts) = (0, 0);
            c.parts_would_copy = 0;
            (c.objects_to_delete, c.bytes_to_delete) = (c.objects_deleted, c.bytes_deleted);
            s
        })
        .collect();
    let e = estimate(transfer, &done);
    let mut cost = crate::pricing::cost(&e, transfer, pricing, overrides)?;
    cost.notes.extend(e.notes);
    cost.notes.push(
        "from what the run did (objects and bytes copied and deleted), requests counted by the \
         estimate's rules: retries are not counted"
            .into(),
    );
    Ok(cost)
}

/// The objects to copy in one request, those in parts, and their parts: as the shards counted
/// them when they did; else exact when no object can exceed the threshold, and otherwise from
/// objects of the mean size (said in `notes`).
fn shape(
    transfer: &Transfer,
    c: &Counters,
    transport: Transport,
    notes: &mut Vec<String>,
) -> (u64, u64, u64) {
    let n = c.objects_would_copy;
    if c.objects_would_copy_whole + c.objects_would_copy_in_parts == n {
        return (
            c.objects_would_copy_whole,
            c.objects_would_copy_in_parts,
            c.parts_would_copy,
        );
    }
    // No object is larger than all of them together.
    if parts_for(c.bytes_would_copy, transfer, transport) == 0 {
        return (n, 0, 0);
    }
    notes.push(format!(
        "parts: the shards did not count object sizes; estimated from objects of the mean size ({})",
        human_bytes(c.bytes_would_copy / n.max(1))
    ));
    let per_object = parts_for(c.bytes_would_copy / n.max(1), transfer, transport);
    if per_object == 0 {
        (n, 0, 0)
    } else {
        (0, n, n * per_object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::ShardState;

    const KIB: u64 = 1024;

    fn transfer(yaml: &str) -> Transfer {
        let spec: crate::MigrationJobSpec = serde_yaml::from_str(yaml).unwrap();
        crate::validate(&spec).unwrap().transfer
    }

    const S3_TO_S3: &str = "source: {s3: {bucket: src}}\n\
        destination: {s3: {endpoint: 'https://acct.r2.cloudflarestorage.com', bucket: dst}}\n";

    #[test]
    fn only_a_copy_touching_a_service_has_a_price() {
        assert!(has_a_price(&transfer(S3_TO_S3)));
        let local = "source: {filesystem: {path: /a}}\ndestination: {filesystem: {path: /b}}\n";
        assert!(!has_a_price(&transfer(local)));
        let upload = "source: {filesystem: {path: /a}}\ndestination: {s3: {bucket: dst}}\n";
        assert!(has_a_price(&transfer(upload)));
    }

    fn shard(i: u32, c: Counters, transport: Transport) -> ShardProgress {
        ShardProgress {
            shard: i,
            state: ShardState::Completed,
            listing_complete: true,
            counters: c,
            transport: Some(transport),
            ..Default::default()
        }
    }

    /// `n` objects of `size` bytes that would be copied whole, and `skip` up to date of 1 KiB.
    fn counted(n: u64, size: u64, skip: u64) -> Counters {
        let mut c = Counters::default();
        for _ in 0..n {
            c.add(&Counters::would_copy(size, 0));
        }
        c.objects_skipped = skip;
        c.bytes_skipped = skip * KIB;
        c.objects_total = n + skip;
        c.bytes_total = n * size + skip * KIB;
        c
    }

    #[test]
    fn part_size_is_raised_to_a_whole_mib_beyond_ten_thousand_parts() {
        assert_eq!(part_size_for(100 * MIB, 16 * MIB), 16 * MIB);
        // 200 GiB / 10,000 = 20.48 MiB, raised to 21 MiB.
        assert_eq!(part_size_for(200 << 30, 16 * MIB), 21 * MIB);
        let t = transfer(S3_TO_S3); // threshold 64Mi, parts 16Mi
        assert_eq!(parts_for(64 * MIB, &t, Transport::Streamed), 0);
        assert_eq!(parts_for(64 * MIB + 1, &t, Transport::Streamed), 5);
        assert_eq!(parts_for(100 * MIB, &t, Transport::Streamed), 7);
        // Server-side: one CopyObject up to 5 GiB.
        assert_eq!(parts_for(5 << 30, &t, Transport::ServerSide), 0);
        assert_eq!(parts_for((5 << 30) + 1, &t, Transport::ServerSide), 321);
    }

    #[test]
    fn streamed_requests_by_hand() {
        // Shard 0: 2,500 objects of 1 KiB to copy, 10 up to date; shard 1: 3 objects of
        // 100 MiB (7 parts of 16 MiB each) counted by the shard, 1 whole of 1 MiB.
        let t = transfer(&format!("{S3_TO_S3}parallelism: {{shards: 2}}\n"));
        let a = counted(2500, KIB, 10);
        let mut b = Counters::default();
        for _ in 0..3 {
            b.add(&Counters::would_copy(100 * MIB, 7));
        }
        b.add(&Counters::would_copy(MIB, 0));
        b.objects_total = 4;
        b.bytes_total = 301 * MIB;
        let e = estimate(
            &t,
            &[
                shard(0, a, Transport::Streamed),
                shard(1, b, Transport::Streamed),
            ],
        );
        assert_eq!((e.objects_to_copy, e.objects_to_skip), (2504, 10));
        assert_eq!(e.bytes_to_copy, 2500 * KIB + 301 * MIB);
        assert_eq!((e.objects_in_parts, e.parts), (3, 21));
        // LIST: shard 0 has 2,510 keys (3 pages), shard 1 4 (1 page), the planner 2,514 (3).
        let src = &e.source_requests;
        assert_eq!((src.list, src.get, src.head), (3 + 1 + 3, 2501 + 21, 3));
        let dst = &e.destination_requests;
        // The destination listings hold the 10 up-to-date keys (1 page) and none (1 page).
        assert_eq!((dst.list, dst.put, dst.upload_part), (2, 2501, 21));
        assert_eq!((dst.create_multipart, dst.complete_multipart), (3, 3));
        assert_eq!((dst.get, dst.copy_object, dst.delete), (0, 0, 0));
        assert_eq!(e.egress_bytes, e.bytes_to_copy);
        assert_eq!(e.destination_egress_bytes, 0);
        // 200 MiB/s for two shards: 303.44 MiB take 2 s.
        assert_eq!(e.assumed_bytes_per_second, 200 * MIB);
        assert_eq!(e.duration_seconds, 2);
        assert!(
            e.notes.iter().all(|n| !n.starts_with("parts")),
            "{:?}",
            e.notes
        );
    }

    #[test]
    fn server_side_copies_have_no_egress() {
        let t = transfer(S3_TO_S3);
        let mut c = counted(1000, KIB, 0);
        c.add(&Counters::would_copy(6 << 30, 384)); // 6 GiB in 16 MiB parts
        c.objects_total += 1;
        let e = estimate(&t, &[shard(0, c, Transport::ServerSide)]);
        let (src, dst) = (&e.source_requests, &e.destination_requests);
        assert_eq!((src.get, src.head, src.list), (0, 1, 2));
        assert_eq!((dst.copy_object, dst.upload_part, dst.put), (1000, 384, 0));
        assert_eq!(
            (dst.create_multipart, dst.complete_multipart, dst.head),
            (1, 1, 1)
        );
        assert_eq!((e.egress_bytes, e.destination_egress_bytes), (0, 0));
    }

    #[test]
    fn deletes_rereads_and_filesystems() {
        let t = transfer(&format!(
            "{S3_TO_S3}verify: ReRead\ndeletes: {{policy: Propagate, backupPrefix: bak/}}\n"
        ));
        let mut c = counted(10, KIB, 5);
        c.objects_to_delete = 3;
        c.bytes_to_delete = 3 * KIB;
        c.destination_objects = 2008; // 5 up to date, 3 candidates, 2,000 replaced
        let e = estimate(&t, &[shard(0, c.clone(), Transport::Streamed)]);
        let (src, dst) = (&e.source_requests, &e.destination_requests);
        assert_eq!((src.head, src.get), (3, 10));
        assert_eq!(
            (dst.list, dst.head, dst.delete, dst.copy_object),
            (3, 3, 3, 3)
        );
        assert_eq!(dst.get, 10, "ReRead reads each copy back");
        assert_eq!(e.destination_egress_bytes, 10 * KIB);
        assert_eq!((e.objects_to_delete, e.bytes_to_delete), (3, 3 * KIB));

        // A filesystem destination serves no requests.
        let t = transfer("source: {s3: {bucket: src}}\ndestination: {filesystem: {path: /d}}\n");
        let e = estimate(&t, &[shard(0, c, Transport::Streamed)]);
        assert_eq!(e.destination_requests, Requests::default());
        assert_eq!(e.source_requests.get, 10);
        assert_eq!((e.egress_bytes, e.destination_egress_bytes), (10 * KIB, 0));
    }

    #[test]
    fn sizes_not_counted_are_estimated_and_said() {
        let t = transfer(S3_TO_S3);
        // Older shards counted only objects and bytes: 4 objects, 400 MiB.
        let c = Counters {
            objects_would_copy: 4,
            bytes_would_copy: 400 * MIB,
            objects_total: 4,
            bytes_total: 400 * MIB,
            ..Default::default()
        };
        let e = estimate(&t, &[shard(0, c, Transport::Streamed)]);
        assert_eq!((e.objects_in_parts, e.parts), (4, 28), "4 × ceil(100/16)");
        assert!(
            e.notes.iter().any(|n| n.starts_with("parts")),
            "{:?}",
            e.notes
        );
        // Together below the threshold: no object can be above it, exact.
        let c = Counters {
            objects_would_copy: 4,
            bytes_would_copy: 64 * MIB,
            ..Default::default()
        };
        let e = estimate(&t, &[shard(0, c, Transport::Streamed)]);
        assert_eq!(
            (e.objects_in_parts, e.parts, e.destination_requests.put),
            (0, 0, 4)
        );
        assert!(e.notes.iter().all(|n| !n.starts_with("parts")));
    }

    #[test]
    fn duration_follows_bandwidth_and_request_limits() {
        let t = transfer(&format!("{S3_TO_S3}bandwidthLimit: 1Mi\n"));
        let e = estimate(&t, &[shard(0, counted(10, MIB, 0), Transport::Streamed)]);
        assert_eq!((e.assumed_bytes_per_second, e.duration_seconds), (MIB, 10));
        assert_eq!(e.duration, "10s");
        // 10 GETs + 10 PUTs + 1 LIST on each side = 22 requests at 2/s: 11 s.
        let t = transfer(&format!("{S3_TO_S3}requestsPerSecond: 2\n"));
        let e = estimate(&t, &[shard(0, counted(10, KIB, 0), Transport::Streamed)]);
        assert_eq!(e.duration_seconds, 11);
        assert!(
            e.assumption.contains("requestsPerSecond"),
            "{}",
            e.assumption
        );
    }
}
