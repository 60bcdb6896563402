//! Shard boundaries over ids (pure): strides between the smallest and largest integer id, or
//! quantiles of a sample of text ids. A boundary `b` between two shards means: ids up to `b`
//! in the first, above `b` in the next, so the shards partition every id, inserted later or
//! not.

use ferry_core::ShardRange;

/// `shards - 1` boundaries splitting `min..=max` into strides of about equal width.
pub fn int_bounds(min: i64, max: i64, shards: u32) -> Vec<i64> {
    let n = i128::from(shards.max(1));
    let (lo, hi) = (i128::from(min.min(max)), i128::from(max.max(min)));
    (1..n).map(|i| (lo + (hi - lo) * i / n) as i64).collect()
}

/// `shards - 1` boundaries at the quantiles of a sorted sample.
pub fn sample_bounds<T: Clone>(sorted: &[T], shards: u32) -> Vec<T> {
    let n = shards.max(1) as usize;
    if sorted.is_empty() {
        return Vec::new();
    }
    (1..n)
        .map(|i| sorted[i * sorted.len() / n].clone())
        .collect()
}

/// The shard ranges between key boundaries (`after < key <= until`), the first open below,
/// the last open above. No boundaries: one shard.
pub fn ranges(bounds: &[String]) -> Vec<ShardRange> {
    let n = bounds.len() + 1;
    (0..n)
        .map(|i| ShardRange {
            index: i as u32,
            after: (i > 0).then(|| bounds[i - 1].clone()),
            until: (i + 1 < n).then(|| bounds[i].clone()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::row::Id;
    use crate::db::template::Template;

    /// Every id in exactly one shard, whatever its distribution.
    #[test]
    fn integer_ranges_partition_ids() {
        let ids = [1i64, 2, 3, 1000, 1001, 1_000_000_000];
        let k = Template::parse("img/{id:012}.{ext}", "id").unwrap();
        let bounds: Vec<String> = int_bounds(1, 1_000_000_000, 4)
            .iter()
            .map(|b| k.bound(&Id::Int(*b)).unwrap())
            .collect();
        let shards = ranges(&bounds);
        assert_eq!(shards.len(), 4);
        for id in ids {
            let key = k.render(&Id::Int(id), &[], "png").unwrap();
            let n = shards.iter().filter(|s| s.contains(&key)).count();
            assert_eq!(n, 1, "{key}");
        }
        // The ids 1..=3 and 1000, 1001 land in the first shard, 10^9 in the last.
        let last = k.render(&Id::Int(1_000_000_000), &[], "png").unwrap();
        assert!(shards[3].contains(&last));
        assert_eq!(int_bounds(5, 5, 3), [5, 5]);
        assert_eq!(int_bounds(i64::MIN, i64::MAX, 2), [-1]);
        assert!(int_bounds(0, 10, 1).is_empty());
    }

    #[test]
    fn text_ranges_from_a_sample() {
        let mut sample: Vec<String> = ["m", "b", "x", "d", "q", "a", "z", "k"]
            .map(String::from)
            .to_vec();
        sample.sort();
        let b = sample_bounds(&sample, 4);
        assert_eq!(b, ["d", "m", "x"]);
        let k = Template::parse("t/{id}", "id").unwrap();
        let bounds: Vec<String> = b
            .iter()
            .map(|s| k.bound(&Id::Text(s.clone())).unwrap())
            .collect();
        let shards = ranges(&bounds);
        for id in ["", "a", "d", "da", "m", "zz", "\u{10ffff}"] {
            let key = format!("t/{id}");
            assert_eq!(
                shards.iter().filter(|s| s.contains(&key)).count(),
                1,
                "{id}"
            );
        }
        assert!(sample_bounds::<String>(&[], 3).is_empty());
        assert_eq!(ranges(&[]).len(), 1);
    }
}
