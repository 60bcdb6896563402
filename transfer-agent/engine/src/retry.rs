//! Retries with exponential backoff and full jitter, honouring the server's Retry-After.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

use crate::error::TransferError;

/// How hard to try.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in all (the first one included).
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 12,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// The pause before attempt `attempt + 1` (full jitter: uniform in [0, min(cap, base·2^n)]).
    pub fn backoff(&self, attempt: u32, err: &TransferError) -> Duration {
        if let Some(ra) = err.retry_after {
            if !ra.is_zero() {
                return ra;
            }
        }
        let ceiling = self
            .base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.cap);
        let ms = ceiling.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(ms / 4..=ms.max(1)))
    }
}

/// Runs `op` until it succeeds, fails with an error that is not worth retrying, or runs out of
/// attempts. A source that changed (`changed`: a 412 on If-Match, a file rewritten) is never
/// asked again the same way: its caller looks it up again. `op` gets the attempt number (0-based) and must redo the whole request, re-opening
/// any body it sends.
pub async fn with_retry<T, F, Fut>(
    policy: &RetryPolicy,
    what: &str,
    mut op: F,
) -> Result<T, TransferError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, TransferError>>,
{
    let mut attempt = 0;
    loop {
        match op(attempt).await {
            Ok(v) => return Ok(v),
            Err(e) if e.retryable && !e.changed && attempt + 1 < policy.max_attempts => {
                let pause = policy.backoff(attempt, &e);
                tracing::debug!(what, attempt, error = %e, pause_ms = pause.as_millis() as u64, "retrying");
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
            Err(mut e) => {
                e.attempts = attempt + 1;
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::FailureClass;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(2),
        }
    }

    #[tokio::test]
    async fn retries_retryable_errors_until_success() {
        let calls = AtomicU32::new(0);
        let r = with_retry(&fast(), "x", |_| async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(TransferError::new(FailureClass::Throttled, "slow down"))
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn gives_up_on_permanent_errors_and_after_max_attempts() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = with_retry(&fast(), "x", |_| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(TransferError::new(FailureClass::InvalidRequest, "bad"))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        calls.store(0, Ordering::SeqCst);
        let r: Result<(), _> = with_retry(&fast(), "x", |_| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(TransferError::new(FailureClass::Network, "reset"))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        // A changed source is handed back at once, even when its class is worth retrying.
        calls.store(0, Ordering::SeqCst);
        let r: Result<(), _> = with_retry(&fast(), "x", |_| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(TransferError::new(FailureClass::Network, "412").changed())
        })
        .await;
        assert!(r.unwrap_err().changed);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let p = RetryPolicy {
            max_attempts: 10,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        let e = TransferError::new(FailureClass::Throttled, "x");
        for _ in 0..50 {
            assert!(p.backoff(0, &e) <= Duration::from_millis(100));
            assert!(p.backoff(9, &e) <= Duration::from_secs(1));
        }
        let mut e2 = e.clone();
        e2.retry_after = Some(Duration::from_secs(3));
        assert_eq!(p.backoff(0, &e2), Duration::from_secs(3));
    }
}
