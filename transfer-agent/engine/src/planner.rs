//! The planner: checks the Secrets a job names and both endpoints (writing nothing), then
//! splits the source keyspace into contiguous shard ranges by sampling the listing (never
//! holding every key). In a cluster it runs in the job's planner pod (`transfer-agent plan`),
//! under a deadline and the pod's memory limit; `ferry run` calls it in its own process.

use std::sync::Arc;
use std::time::Duration;

use ferry_core::collect::{collect_of, source_secrets, CollectProgress};
use ferry_core::planning::{missing_vars, PlanOutcome, PlanRequest, Probe, ProbeError};
use ferry_core::{FailureClass, JobCredentials, JobPlan, ShardRange, Side, Transfer};
use futures::StreamExt;

use crate::limit::Limits;
use crate::retry::RetryPolicy;
use crate::stores::{self, Source};
use crate::TransferError;

/// Keys sampled per shard to place the boundaries.
const SAMPLES_PER_SHARD: usize = 64;
/// The longest shard bound kept (bytes): a prefix of a sampled key is as good a boundary
/// (truncation keeps sorted keys sorted), and the plan of the most shards stays far below
/// a ConfigMap's 1 MiB.
pub const MAX_BOUND_BYTES: usize = 200;
/// How long the checks may take at most, whatever the endpoint does.
const PROBE_DEADLINE: Duration = Duration::from_secs(60);

/// Splits `sorted` sample keys into `shards` ranges of about equal counts. The ranges cover
/// the whole keyspace: the first has no lower bound, the last no upper bound.
pub fn ranges_from_sample(sorted: &[String], shards: u32) -> Vec<ShardRange> {
    let n = shards.max(1) as usize;
    // Bounds b_1..b_{n-1}, non-decreasing because the sample is sorted and truncation keeps
    // order. With no sample every bound is "" and all keys fall to the last shard (S3 keys are
    // never empty).
    let bound = |i: usize| {
        if sorted.is_empty() {
            String::new()
        } else {
            truncated(&sorted[i * sorted.len() / n]).to_string()
        }
    };
    (0..n)
        .map(|i| ShardRange {
            index: i as u32,
            after: (i > 0).then(|| bound(i)),
            until: (i + 1 < n).then(|| bound(i + 1)),
        })
        .collect()
}

/// The longest prefix of `key` of at most [`MAX_BOUND_BYTES`] bytes on a char boundary.
fn truncated(key: &str) -> &str {
    if key.len() <= MAX_BOUND_BYTES {
        return key;
    }
    let mut end = MAX_BOUND_BYTES;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    &key[..end]
}

/// Reservoir-samples the source listing (keys only: [`Source::list_keys`]): memory stays at `k` keys whatever the bucket size.
/// The draw is seeded with `seed`, so the same listing always gives the same sample (a plan
/// made again for the same job and spec cuts the same ranges).
pub async fn sample_keys(
    src: &dyn Source,
    k: usize,
    seed: u64,
) -> Result<Vec<String>, TransferError> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut listing = src.list_keys(None, None);
    let mut sample: Vec<String> = Vec::with_capacity(k);
    let mut seen = 0usize;
    while let Some(item) = listing.next().await {
        let key = item?.key;
        seen += 1;
        if sample.len() < k {
            sample.push(key);
        } else {
            let j = rng.random_range(0..seen);
            if j < k {
                sample[j] = key;
            }
        }
    }
    sample.sort();
    Ok(sample)
}

/// A stable seed from `text` (FNV-1a): the job's uid and spec hash.
pub fn seed_of(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The shard ranges of `shards` shards: those the source cuts itself
/// ([`Source::own_shard_ranges`]: a database's id ranges), else from a sample of its listing
/// when there is more than one; the same listing and `seed` give the same ranges.
pub async fn shard_ranges(
    src: &dyn Source,
    shards: u32,
    seed: u64,
) -> Result<Vec<ShardRange>, TransferError> {
    if shards <= 1 {
        return Ok(vec![ShardRange {
            index: 0,
            after: None,
            until: None,
        }]);
    }
    // (A source's own cut that is not one range per shard, an empty table's, is not used.)
    if let Some(ranges) = src.own_shard_ranges(shards).await? {
        if ranges.len() == shards as usize {
            return Ok(ranges);
        }
    }
    let sample = sample_keys(src, SAMPLES_PER_SHARD * shards as usize, seed).await?;
    Ok(ranges_from_sample(&sample, shards))
}

/// Probes the sides for which `check(side)` holds; the others count as fine. Each side is
/// given [`PROBE_DEADLINE`] at most.
pub async fn probe(
    t: &Transfer,
    credentials: &JobCredentials,
    attempts: u32,
    check: impl Fn(Side) -> bool,
) -> Probe {
    let limits = Arc::new(Limits::unlimited());
    let retry = RetryPolicy {
        max_attempts: attempts,
        ..Default::default()
    };
    let source = if check(Side::Source) {
        let res = within(PROBE_DEADLINE, async {
            let opened = stores::open(
                &t.source,
                &credentials.source,
                limits.clone(),
                retry.clone(),
            )
            .await?;
            opened.source().probe().await
        })
        .await;
        problem(res, Side::Source)
    } else {
        None
    };
    let destination = if check(Side::Destination) {
        let res = within(PROBE_DEADLINE, async {
            let opened =
                stores::open(&t.destination, &credentials.destination, limits, retry).await?;
            // A dry run and a Check write nothing to the destination (a Check's report aside).
            let writes = !t.dry_run && t.mode == ferry_core::Mode::Copy;
            opened.sink()?.probe_destination(!writes).await
        })
        .await;
        problem(res, Side::Destination)
    } else {
        None
    };
    Probe {
        source,
        destination,
    }
}

async fn within(
    limit: Duration,
    f: impl std::future::Future<Output = Result<(), TransferError>>,
) -> Result<(), TransferError> {
    tokio::time::timeout(limit, f).await.unwrap_or_else(|_| {
        Err(TransferError::new(
            FailureClass::Network,
            format!("no answer within {}s", limit.as_secs()),
        ))
    })
}

fn problem(res: Result<(), TransferError>, side: Side) -> Option<ProbeError> {
    res.err().map(|e| ProbeError {
        message: format!("{}: {e}", side.field()),
        credentials: matches!(
            e.class,
            FailureClass::AccessDenied | FailureClass::AuthExpired
        ),
        // A busy or failing server (503 SlowDown, 500) is not a refusal: asked again later.
        transient: matches!(
            e.class,
            FailureClass::Network | FailureClass::Throttled | FailureClass::Internal
        ),
    })
}

/// Answers `req`: the Secrets' variables in `vars` (the planner's environment), then both
/// endpoints, then the shard ranges. The plan is returned only when everything passed.
pub async fn answer(
    req: &PlanRequest,
    vars: &std::collections::BTreeMap<String, String>,
    credentials: &JobCredentials,
    attempts: u32,
) -> (Option<JobPlan>, PlanOutcome) {
    answer_with(req, vars, credentials, attempts, &|_| {}).await
}

/// [`answer`], which for a `collect` source first collects the URL list into the report
/// location (calling `on_collect` after each page) and plans the copy of that list.
pub async fn answer_with(
    req: &PlanRequest,
    vars: &std::collections::BTreeMap<String, String>,
    credentials: &JobCredentials,
    attempts: u32,
    on_collect: &(dyn Fn(&CollectProgress) + Send + Sync),
) -> (Option<JobPlan>, PlanOutcome) {
    let mut outcome = PlanOutcome {
        uid: req.plan.uid.clone(),
        spec_hash: req.plan.spec_hash.clone(),
        ..Default::default()
    };
    let stamp = |mut o: PlanOutcome| {
        o.at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        o
    };
    outcome.secret_problems = missing_vars(&req.required, vars);
    if !outcome.secret_problems.is_empty() {
        return (None, stamp(outcome));
    }
    let t = &req.plan.transfer;
    let probe = probe(t, credentials, attempts, |side| match side {
        Side::Source => req.check_source,
        Side::Destination => req.check_destination,
        Side::Report => false,
    })
    .await;
    let fine = probe.is_fine();
    outcome.probe = Some(probe);
    if !fine {
        return (None, stamp(outcome));
    }
    let mut plan = req.plan.clone();
    if collect_of(t).is_some() {
        match crate::stores::http::collect::collect_plan(&plan, credentials, on_collect).await {
            Ok((source, progress)) => {
                plan.transfer.source = source;
                outcome.collect = Some(progress);
            }
            Err(e) => {
                outcome.error = Some(e.to_string());
                return (None, stamp(outcome));
            }
        }
    }
    let t = &plan.transfer;
    let ranges = async {
        let src = stores::open(
            &t.source,
            &source_secrets(t, credentials),
            Arc::new(Limits::unlimited()),
            RetryPolicy::default(),
        )
        .await?
        .source();
        let seed = seed_of(&format!("{}/{}", req.plan.uid, req.plan.spec_hash));
        shard_ranges(src.as_ref(), req.shards, seed).await
    };
    match ranges.await {
        Ok(shards) => {
            plan.shards = shards;
            (Some(plan), stamp(outcome))
        }
        Err(e) => {
            outcome.error = Some(format!("listing the source: {e}"));
            (None, stamp(outcome))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("k{i:05}")).collect()
    }

    /// A busy or failing endpoint waits (Pending, asked again); a refusal fails the job.
    #[test]
    fn busy_servers_are_transient_refusals_are_not() {
        let p = |class| problem(Err(TransferError::new(class, "x")), Side::Destination).unwrap();
        for class in [
            FailureClass::Network,
            FailureClass::Throttled,
            FailureClass::Internal,
        ] {
            assert!(p(class).transient, "{class:?}");
        }
        for class in [FailureClass::NoSuchBucket, FailureClass::AccessDenied] {
            assert!(!p(class).transient, "{class:?}");
        }
        assert!(p(FailureClass::AccessDenied).credentials);
    }

    #[test]
    fn ranges_partition_the_keyspace() {
        let all = keys(1000);
        let ranges = ranges_from_sample(&all, 4);
        assert_eq!(ranges.len(), 4);
        assert_eq!(ranges[0].after, None);
        assert_eq!(ranges[3].until, None);
        for k in &all {
            let owners = ranges.iter().filter(|r| r.contains(k)).count();
            assert_eq!(owners, 1, "{k} belongs to {owners} shards");
        }
        let sizes: Vec<usize> = ranges
            .iter()
            .map(|r| all.iter().filter(|k| r.contains(k)).count())
            .collect();
        assert!(sizes.iter().all(|&s| (200..=300).contains(&s)), "{sizes:?}");
    }

    #[test]
    fn fewer_keys_than_shards_still_covers_everything_once() {
        let all = keys(2);
        let ranges = ranges_from_sample(&all, 5);
        assert_eq!(ranges.len(), 5);
        for k in all
            .iter()
            .chain(["a".to_string(), "zzz".to_string()].iter())
        {
            assert_eq!(ranges.iter().filter(|r| r.contains(k)).count(), 1, "{k}");
        }
        let empty = ranges_from_sample(&[], 3);
        assert_eq!(empty.iter().filter(|r| r.contains("x")).count(), 1);
    }

    /// The largest plan (999 shards of 1 KiB keys) stays well below a ConfigMap's 1 MiB, and
    /// long keys still fall in exactly one range.
    #[test]
    fn long_keys_make_short_bounds_that_still_partition() {
        let all: Vec<String> = (0..999 * 4)
            .map(|i| format!("{i:06}/{}é", "x".repeat(1018)))
            .collect();
        let ranges = ranges_from_sample(&all, 999);
        let json = serde_json::to_string(&ranges).unwrap();
        assert!(json.len() < 512 * 1024, "{} bytes", json.len());
        for k in all.iter().step_by(7) {
            assert_eq!(ranges.iter().filter(|r| r.contains(k)).count(), 1, "{k}");
        }
    }

    /// A plan made again for the same job and spec (a lost plan, a second leader) cuts the
    /// same ranges from the same listing: no key moves to another shard's checkpoint.
    #[tokio::test]
    async fn the_same_seed_cuts_the_same_ranges() {
        let store = crate::stores::MemoryStore::default();
        for i in 0..5_000 {
            store.insert(&format!("k/{i:05}"), vec![0]);
        }
        let seed = seed_of("uid-1/hash-1");
        let a = shard_ranges(&store, 8, seed).await.unwrap();
        let b = shard_ranges(&store, 8, seed).await.unwrap();
        assert_eq!(a, b);
        let other = shard_ranges(&store, 8, seed_of("uid-2/hash-1"))
            .await
            .unwrap();
        assert_ne!(a, other, "another job draws another sample");
    }
}
