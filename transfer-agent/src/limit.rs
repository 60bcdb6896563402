//! Limits shared by every task of a shard: requests per second, bytes per second, and the
//! in-flight byte budget that bounds memory whatever the object sizes.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

/// A token bucket that lets a request run into debt: `take(n)` never waits for more tokens
/// than exist, it waits until the debt is paid, so amounts larger than a second's worth work.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn new(per_second: f64) -> Self {
        TokenBucket {
            rate: per_second,
            state: Mutex::new((per_second, Instant::now())),
        }
    }

    pub async fn take(&self, n: f64) {
        let wait = {
            let mut s = self.state.lock().await;
            let now = Instant::now();
            let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
            s.0 = (s.0 + refill).min(self.rate);
            s.1 = now;
            s.0 -= n;
            if s.0 < 0.0 {
                Duration::from_secs_f64(-s.0 / self.rate)
            } else {
                Duration::ZERO
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The budget unit: permits are KiB so that a u32 count covers terabytes.
const UNIT: u64 = 1024;

#[derive(Debug)]
pub struct Limits {
    requests: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
    memory: Arc<Semaphore>,
    memory_units: u32,
}

impl Limits {
    /// `requests_per_second` and `bytes_per_second` of 0 mean unlimited.
    pub fn new(requests_per_second: f64, bytes_per_second: f64, memory_budget: u64) -> Self {
        let units = (memory_budget / UNIT).clamp(1, u32::MAX as u64 / 2) as u32;
        Limits {
            requests: (requests_per_second > 0.0).then(|| TokenBucket::new(requests_per_second)),
            bytes: (bytes_per_second > 0.0).then(|| TokenBucket::new(bytes_per_second)),
            memory: Arc::new(Semaphore::new(units as usize)),
            memory_units: units,
        }
    }

    pub fn unlimited() -> Self {
        Limits::new(0.0, 0.0, 256 << 20)
    }

    /// Waits for the right to send one request.
    pub async fn request(&self) {
        if let Some(b) = &self.requests {
            b.take(1.0).await;
        }
    }

    /// Waits for the right to move `n` bytes.
    pub async fn bandwidth(&self, n: u64) {
        if let Some(b) = &self.bytes {
            b.take(n as f64).await;
        }
    }

    /// Reserves `n` bytes of the in-flight budget (at most the whole budget) until the permit
    /// is dropped.
    pub async fn memory(&self, n: u64) -> OwnedSemaphorePermit {
        let units = n.div_ceil(UNIT).clamp(1, self.memory_units as u64) as u32;
        self.memory
            .clone()
            .acquire_many_owned(units)
            .await
            .expect("the memory semaphore is never closed")
    }
}

/// Makes freed part buffers go back to the system at once, so the process's memory follows
/// the in-flight byte budget. glibc's malloc otherwise raises its mmap threshold after the
/// first large buffer is freed (up to 32 MiB) and serves later part buffers (5-32 MiB) from
/// per-thread arenas, which it keeps: on W2 (8 × 256 MiB, 16 MiB parts, 256 MiB budget) the
/// peak RSS was 494 MiB. A fixed threshold of 1 MiB turns off that adjustment: every buffer
/// of a MiB or more is its own mapping, returned when dropped. Call once at start-up.
pub fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a malloc tunable; it is called before any threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn token_bucket_paces_after_the_first_second() {
        let b = TokenBucket::new(10.0);
        let t0 = tokio::time::Instant::now();
        for _ in 0..30 {
            b.take(1.0).await;
        }
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(1900) && took <= Duration::from_millis(2500),
            "30 requests at 10/s with a 10 burst took {took:?}"
        );
    }

    #[tokio::test]
    async fn memory_budget_blocks_until_released() {
        let l = Limits::new(0.0, 0.0, 64 * 1024);
        let a = l.memory(48 * 1024).await;
        let pending = tokio::time::timeout(Duration::from_millis(50), l.memory(32 * 1024)).await;
        assert!(pending.is_err(), "the budget was exceeded");
        drop(a);
        let got = tokio::time::timeout(Duration::from_millis(500), l.memory(32 * 1024)).await;
        assert!(got.is_ok());
        // A request larger than the budget takes the whole budget instead of waiting forever.
        drop(got);
        let whole = tokio::time::timeout(Duration::from_millis(500), l.memory(1 << 30)).await;
        assert!(whole.is_ok());
    }
}
