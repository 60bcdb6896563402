//! Which jobs hold a running slot under the operator's cap (`--max-running`). Admission is
//! atomic: two jobs reconciled at the same moment cannot both take the last slot. Pure (no
//! I/O): the controller seeds it at start and records every decided phase.

use std::collections::BTreeSet;
use std::sync::Mutex;

/// A job's namespace and name.
pub type JobKey = (String, String);

#[derive(Debug, Default)]
pub struct Admission {
    running: Mutex<BTreeSet<JobKey>>,
}

impl Admission {
    /// Jobs holding a slot, besides `key`.
    pub fn running_besides(&self, key: &JobKey) -> usize {
        let running = self.running.lock().unwrap();
        running.len() - usize::from(running.contains(key))
    }

    /// Jobs of `key`'s namespace holding a slot, besides `key`.
    pub fn running_in_namespace_besides(&self, key: &JobKey) -> usize {
        let running = self.running.lock().unwrap();
        running.iter().filter(|k| k.0 == key.0 && *k != key).count()
    }

    /// Takes a slot for `key` if it has one or one is free: fewer than `max` others hold one,
    /// and fewer than `per_namespace` others of its namespace (when there is such a cap).
    pub fn try_admit(&self, key: &JobKey, max: usize, per_namespace: Option<usize>) -> bool {
        let mut running = self.running.lock().unwrap();
        if running.contains(key) {
            return true;
        }
        if running.len() >= max {
            return false;
        }
        if let Some(cap) = per_namespace {
            if running.iter().filter(|k| k.0 == key.0).count() >= cap {
                return false;
            }
        }
        running.insert(key.clone());
        true
    }

    /// Records whether `key` is running now (it holds a slot) or not (it gives it back).
    pub fn record(&self, key: &JobKey, running: bool) {
        let mut set = self.running.lock().unwrap();
        if running {
            set.insert(key.clone());
        } else {
            set.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: &str) -> JobKey {
        ("ns".into(), n.into())
    }

    #[test]
    fn the_last_slot_goes_to_one_job_only() {
        let a = Admission::default();
        a.record(&key("running"), true);
        assert_eq!(a.running_besides(&key("x")), 1);
        assert_eq!(a.running_besides(&key("running")), 0);
        assert!(a.try_admit(&key("first"), 2, None));
        assert!(!a.try_admit(&key("second"), 2, None), "the cap is taken");
        assert!(a.try_admit(&key("first"), 2, None), "a job keeps its slot");
        a.record(&key("running"), false);
        assert!(a.try_admit(&key("second"), 2, None));
    }

    #[test]
    fn concurrent_admissions_never_exceed_the_cap() {
        let a = std::sync::Arc::new(Admission::default());
        let admitted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|i| {
                    let a = a.clone();
                    s.spawn(move || usize::from(a.try_admit(&key(&format!("j{i}")), 3, None)))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(admitted, 3);
    }

    /// One tenant's jobs take no more than its namespace's cap, even all at once; another
    /// namespace still gets the slots left.
    #[test]
    fn a_namespace_cap_leaves_slots_to_the_others() {
        let a = std::sync::Arc::new(Admission::default());
        let tenant = |n: usize| ("tenant-a".to_string(), format!("j{n}"));
        let admitted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|i| {
                    let a = a.clone();
                    s.spawn(move || usize::from(a.try_admit(&tenant(i), 10, Some(2))))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(admitted, 2);
        assert_eq!(a.running_in_namespace_besides(&tenant(99)), 2);
        assert!(a.try_admit(&("tenant-b".into(), "j".into()), 10, Some(2)));
        assert_eq!(a.running_besides(&("tenant-b".into(), "x".into())), 3);
    }
}
