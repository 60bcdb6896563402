//! Plans a job: splits the source keyspace into `shards` contiguous ranges by sampling the
//! listing (never holding every key), and names the report folder.

use ferry_api::ValidatedSpec;
use ferry_core::plan::report_prefix;
use ferry_core::{JobPlan, ShardRange};
use ferry_engine::stores::Source;
use ferry_engine::TransferError;
use futures::StreamExt;

/// Keys sampled per shard to place the boundaries.
const SAMPLES_PER_SHARD: usize = 64;

/// Splits `sorted` sample keys into `shards` ranges of about equal counts. The ranges cover
/// the whole keyspace: the first has no lower bound, the last no upper bound.
pub fn ranges_from_sample(sorted: &[String], shards: u32) -> Vec<ShardRange> {
    let n = shards.max(1) as usize;
    // Bounds b_1..b_{n-1}, non-decreasing because the sample is sorted. With no sample every
    // bound is "" and all keys fall to the last shard (S3 keys are never empty).
    let bound = |i: usize| {
        if sorted.is_empty() {
            String::new()
        } else {
            sorted[i * sorted.len() / n].clone()
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

/// Reservoir-samples the source listing: memory stays at `k` keys whatever the bucket size.
pub async fn sample_keys(src: &dyn Source, k: usize) -> Result<Vec<String>, TransferError> {
    let mut listing = src.list(None, None);
    let mut sample: Vec<String> = Vec::with_capacity(k);
    let mut seen = 0usize;
    while let Some(item) = listing.next().await {
        let key = item?.key;
        seen += 1;
        if sample.len() < k {
            sample.push(key);
        } else {
            let j = rand::random_range(0..seen);
            if j < k {
                sample[j] = key;
            }
        }
    }
    sample.sort();
    Ok(sample)
}

/// The plan of a job. Lists (samples) the source only when there is more than one shard.
pub async fn plan(
    namespace: &str,
    name: &str,
    uid: &str,
    spec: &ValidatedSpec,
    src: &dyn Source,
) -> Result<JobPlan, TransferError> {
    let shards = spec.shards;
    let ranges = if shards == 1 {
        vec![ShardRange {
            index: 0,
            after: None,
            until: None,
        }]
    } else {
        let sample = sample_keys(src, SAMPLES_PER_SHARD * shards as usize).await?;
        ranges_from_sample(&sample, shards)
    };
    Ok(JobPlan {
        namespace: namespace.to_string(),
        name: name.to_string(),
        uid: uid.to_string(),
        transfer: spec.transfer.clone(),
        spec_hash: spec.spec_hash.clone(),
        shards: ranges,
        only_keys: None,
        report_prefix: report_prefix(namespace, name, uid),
        attempt: 0,
        retry_failed_from: None,
        stage: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("k{i:05}")).collect()
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
}
