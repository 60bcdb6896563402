//! Resume with bounded rework: the watermark of a shard, and where progress records live.

use std::collections::VecDeque;
use std::path::PathBuf;

use ferry_core::{Counters, ProgressStore, ShardProgress};
use futures::future::BoxFuture;

use crate::report::{DeleteLine, FailureLine, ManifestLine};

/// What one object's outcome adds to the checkpoint once every key before it is done too.
#[derive(Debug, Default, Clone)]
pub struct Recorded {
    pub delta: Counters,
    pub failure: Option<FailureLine>,
    pub written: Option<ManifestLine>,
    pub candidate: Option<DeleteLine>,
    /// Check mode: a key that is not identical on both sides.
    pub check: Option<crate::audit::CheckLine>,
    /// A dry run's inventory line of the object.
    pub inventory: Option<crate::audit::InventoryLine>,
    /// Of a selected source object (as opposed to a delete candidate).
    pub source: bool,
}

/// Keys in listing order with their outcomes; the watermark is the last key of the done
/// prefix. Memory is bounded by the window the caller allows (in flight plus finished
/// out of order).
#[derive(Debug, Default)]
pub struct Watermark {
    window: VecDeque<(String, Option<Recorded>)>,
    base: u64,
}

impl Watermark {
    /// Registers the next key in listing order; returns its sequence number.
    pub fn push(&mut self, key: String) -> u64 {
        self.window.push_back((key, None));
        self.base + self.window.len() as u64 - 1
    }

    pub fn complete(&mut self, seq: u64, rec: Recorded) {
        let i = (seq - self.base) as usize;
        self.window[i].1 = Some(rec);
    }

    /// The next key of the done prefix, in listing order.
    pub fn pop_ready(&mut self) -> Option<(String, Recorded)> {
        if self.window.front().is_some_and(|(_, r)| r.is_some()) {
            self.base += 1;
            let (k, r) = self.window.pop_front().expect("front exists");
            return Some((k, r.expect("checked")));
        }
        None
    }

    /// The last key registered and not yet popped.
    pub fn last_key(&self) -> Option<&str> {
        self.window.back().map(|(k, _)| k.as_str())
    }

    /// Keys registered and not yet popped.
    pub fn len(&self) -> usize {
        self.window.len()
    }

    pub fn is_empty(&self) -> bool {
        self.window.is_empty()
    }
}

/// A JSON file, replaced atomically on every save.
pub struct FileProgressStore {
    pub path: PathBuf,
}

impl ProgressStore for FileProgressStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<ShardProgress>, String>> {
        Box::pin(async move {
            match tokio::fs::read(&self.path).await {
                Ok(bytes) => serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| format!("{}: {e}", self.path.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(format!("{}: {e}", self.path.display())),
            }
        })
    }

    fn save<'a>(&'a self, p: &'a ShardProgress) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let json = serde_json::to_vec_pretty(p).expect("serializes");
            if let Some(dir) = self.path.parent() {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            let path = self.path.clone();
            tokio::task::spawn_blocking(move || replace_durably(&path, &json))
                .await
                .map_err(|e| format!("{}: {e}", self.path.display()))?
        })
    }
}

/// Replaces `path` with `bytes` so that a crash at any point leaves either the old record or
/// the new one, complete, on disk: write a temporary file, fsync it, rename it over `path`,
/// fsync the directory (without the syncs, a power loss after the rename can leave an empty
/// or short file where the checkpoint was, and the shard would start over or fail to load).
fn replace_durably(path: &std::path::Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let at = |p: &std::path::Path, e: std::io::Error| format!("{}: {e}", p.display());
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| at(&tmp, e))?;
    f.write_all(bytes).map_err(|e| at(&tmp, e))?;
    f.sync_all().map_err(|e| at(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| at(path, e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| at(dir, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u64) -> Recorded {
        Recorded {
            delta: Counters {
                objects_copied: n,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn watermark_advances_only_over_a_done_prefix() {
        let mut w = Watermark::default();
        let a = w.push("a".into());
        let b = w.push("b".into());
        let c = w.push("c".into());
        w.complete(c, rec(1));
        w.complete(b, rec(1));
        assert!(w.pop_ready().is_none(), "a is still in flight");
        w.complete(a, rec(1));
        let keys: Vec<String> = std::iter::from_fn(|| w.pop_ready())
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert!(w.is_empty());
        let d = w.push("d".into());
        assert_eq!(d, 3);
    }

    #[tokio::test]
    async fn file_store_round_trips_and_replaces() {
        let d = tempfile::tempdir().unwrap();
        let s = FileProgressStore {
            path: d.path().join("x/shard-0.json"),
        };
        assert_eq!(s.load().await.unwrap(), None);
        let mut p = ShardProgress {
            shard: 0,
            spec_hash: "h".into(),
            ..Default::default()
        };
        p.checkpoint.watermark = Some("k".into());
        s.save(&p).await.unwrap();
        p.checkpoint.watermark = Some("m".into());
        s.save(&p).await.unwrap();
        assert_eq!(
            s.load()
                .await
                .unwrap()
                .unwrap()
                .checkpoint
                .watermark
                .as_deref(),
            Some("m")
        );
    }
}
