//! Small helpers shared by the test files.

use serde_json::{json, Value};

use crate::data::{assert_trees_eq, Tree};
use crate::s3::S3;

/// `multipart:` settings that make 5 MiB objects interesting: threshold 5Mi, parts of 5Mi
/// (the minimum S3 allows).
pub fn small_multipart() -> Value {
    json!({ "threshold": "5Mi", "partSize": "5Mi" })
}

/// Create a bucket named after `hint` and fill it with `tree`.
pub async fn bucket_with(s3: &S3, hint: &str, tree: &Tree) -> String {
    let bucket = s3.create_bucket(hint).await;
    put_tree(s3, &bucket, tree).await;
    bucket
}

/// Put every object of `tree` (a few at a time).
pub async fn put_tree(s3: &S3, bucket: &str, tree: &Tree) {
    s3.put_all(bucket, tree).await;
}

/// Assert that the bucket (Ferry's `.ferry/` keys ignored) holds exactly `expected`.
pub async fn assert_bucket_eq(s3: &S3, bucket: &str, expected: &Tree, what: &str) {
    let actual = s3.contents(bucket).await;
    assert_trees_eq(expected, &actual, &format!("{what} (bucket {bucket})"));
}

/// A tree from `(key, bytes)` pairs.
pub fn tree<K: Into<String>>(items: impl IntoIterator<Item = (K, Vec<u8>)>) -> Tree {
    items.into_iter().map(|(k, v)| (k.into(), v)).collect()
}

/// A subset of `tree` by key.
pub fn only(tree: &Tree, keys: &[&str]) -> Tree {
    let t: Tree = keys
        .iter()
        .map(|k| {
            (
                k.to_string(),
                tree.get(*k)
                    .unwrap_or_else(|| panic!("no key {k:?} in the tree"))
                    .clone(),
            )
        })
        .collect();
    t
}

/// `tree` without the given keys.
pub fn without(tree: &Tree, keys: &[&str]) -> Tree {
    tree.iter()
        .filter(|(k, _)| !keys.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}
