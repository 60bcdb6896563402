//! Limits shared by every task of a shard: requests per second, bytes per second, and the
//! in-flight byte budget that bounds memory whatever the object sizes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
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
/// Buffers of at least this many bytes are kept for reuse when freed (smaller ones come from
/// malloc's arenas, which reuse them anyway). Their capacity is rounded up to a multiple of it.
const POOLED: u64 = 1 << 20;

#[derive(Debug)]
pub struct Limits {
    requests: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
    memory: Arc<Budget>,
}

/// The in-flight byte budget (permits), and the idle buffers kept for reuse. Buffers in use
/// and idle buffers together stay within the budget: a freed buffer is kept only if it fits,
/// and idle ones are freed, oldest first, when a new buffer has to be allocated. (Permits
/// freed go straight to waiting tasks, so the count of free permits says nothing of what is
/// allocated: the bytes of buffers in use are counted here.)
#[derive(Debug)]
struct Budget {
    permits: Arc<Semaphore>,
    units: u32,
    bytes: u64,
    pool: std::sync::Mutex<Pool>,
}

#[derive(Debug, Default)]
struct Pool {
    idle: Vec<Vec<u8>>,
    idle_bytes: u64,
    /// Capacity of the buffers in use.
    used: u64,
}

impl Budget {
    async fn permit(&self, n: u64) -> OwnedSemaphorePermit {
        let units = n.div_ceil(UNIT).clamp(1, self.units as u64) as u32;
        self.permits
            .clone()
            .acquire_many_owned(units)
            .await
            .expect("the memory semaphore is never closed")
    }

    /// A buffer of `capacity`: an idle one of that capacity if there is one, else a new one
    /// (after freeing idle ones that would not fit beside it).
    fn allocate(&self, capacity: usize) -> Vec<u8> {
        let mut freed = Vec::new();
        let reused = {
            let mut pool = self.pool.lock().unwrap();
            pool.used += capacity as u64;
            match pool.idle.iter().rposition(|b| b.capacity() == capacity) {
                Some(i) => {
                    pool.idle_bytes -= capacity as u64;
                    Some(pool.idle.swap_remove(i))
                }
                None => {
                    while pool.used + pool.idle_bytes > self.bytes && !pool.idle.is_empty() {
                        let b = pool.idle.remove(0);
                        pool.idle_bytes -= b.capacity() as u64;
                        freed.push(b);
                    }
                    None
                }
            }
        };
        drop(freed);
        reused.unwrap_or_else(|| Vec::with_capacity(capacity))
    }

    /// Takes back a buffer no longer in use: kept if it is large and fits, freed otherwise.
    fn give_back(&self, mut b: Vec<u8>, capacity: usize) {
        let mut pool = self.pool.lock().unwrap();
        pool.used -= capacity as u64;
        let cap = b.capacity() as u64;
        if cap >= POOLED && pool.used + pool.idle_bytes + cap <= self.bytes {
            b.clear();
            pool.idle_bytes += cap;
            pool.idle.push(b);
        }
        // else `b` is freed here, after the lock is released (locals drop in reverse order)
    }
}

/// Bytes read for one object or part. Until it, and every `Bytes` made of it by
/// [`Buffer::freeze`], is dropped, its capacity counts against the in-flight budget; then a
/// large one is kept for the next buffer of the same size, within the budget. Reusing part
/// buffers spares the kernel mapping, zeroing and faulting in 16 MiB for every part (a tenth
/// of Ferry's CPU on W2 before), and freeing the ones the budget has no room for keeps the
/// process's memory at the budget.
pub struct Buffer {
    bytes: Vec<u8>,
    /// The capacity counted in the budget.
    capacity: usize,
    permit: Option<OwnedSemaphorePermit>,
    budget: Option<Arc<Budget>>,
}

impl Buffer {
    /// A buffer outside any budget (reports, probes).
    pub fn unbudgeted(capacity: u64) -> Buffer {
        Buffer {
            bytes: Vec::with_capacity(capacity as usize),
            capacity: capacity as usize,
            permit: None,
            budget: None,
        }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn extend_from_slice(&mut self, b: &[u8]) {
        self.bytes.extend_from_slice(b);
    }

    /// The buffer filled with `len` zero bytes, to read into.
    pub fn zeroed(&mut self, len: usize) -> &mut [u8] {
        self.bytes.clear();
        self.bytes.resize(len, 0);
        &mut self.bytes
    }

    /// The bytes, without a copy; the budget is held until the last clone is dropped.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for Buffer {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.give_back(std::mem::take(&mut self.bytes), self.capacity);
        }
        drop(self.permit.take());
    }
}

impl Limits {
    /// `requests_per_second` and `bytes_per_second` of 0 mean unlimited.
    pub fn new(requests_per_second: f64, bytes_per_second: f64, memory_budget: u64) -> Self {
        let units = (memory_budget / UNIT).clamp(1, u32::MAX as u64 / 2) as u32;
        Limits {
            requests: (requests_per_second > 0.0).then(|| TokenBucket::new(requests_per_second)),
            bytes: (bytes_per_second > 0.0).then(|| TokenBucket::new(bytes_per_second)),
            memory: Arc::new(Budget {
                permits: Arc::new(Semaphore::new(units as usize)),
                units,
                bytes: units as u64 * UNIT,
                pool: Default::default(),
            }),
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

    /// An empty buffer for `len` bytes, reserved in the budget (at most the whole budget),
    /// waiting until that much is free (see [`Buffer`]).
    pub async fn buffer(&self, len: u64) -> Buffer {
        let capacity = if len >= POOLED {
            len.div_ceil(POOLED) * POOLED
        } else {
            len
        } as usize;
        let permit = self.memory.permit(capacity as u64).await;
        Buffer {
            bytes: self.memory.allocate(capacity),
            capacity,
            permit: Some(permit),
            budget: Some(self.memory.clone()),
        }
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
        let a = l.buffer(48 * 1024).await;
        let pending = tokio::time::timeout(Duration::from_millis(50), l.buffer(32 * 1024)).await;
        assert!(pending.is_err(), "the budget was exceeded");
        drop(a);
        let got = tokio::time::timeout(Duration::from_millis(500), l.buffer(32 * 1024)).await;
        assert!(got.is_ok());
        // A request larger than the budget takes the whole budget instead of waiting forever.
        drop(got);
        let whole = tokio::time::timeout(Duration::from_millis(500), l.buffer(1 << 30)).await;
        assert!(whole.is_ok());
    }

    #[tokio::test]
    async fn part_buffers_are_reused_within_the_budget() {
        const M: u64 = 1 << 20;
        let l = Limits::new(0.0, 0.0, 4 * M);
        let pool = |l: &Limits| {
            let p = l.memory.pool.lock().unwrap();
            (p.idle.len(), p.idle_bytes, p.used)
        };
        // A freed part buffer is the next one of its size, whoever frees it.
        let mut a = l.buffer(M).await;
        a.extend_from_slice(&[7; 100]);
        let ptr = a.as_ref().as_ptr();
        let bytes = a.freeze();
        let clone = bytes.clone();
        drop(bytes);
        assert_eq!(pool(&l), (0, 0, M), "a clone still holds it");
        drop(clone);
        assert_eq!(pool(&l), (1, M, 0));
        let b = l.buffer(M).await;
        assert_eq!(
            (b.as_ref().as_ptr(), b.len()),
            (ptr, 0),
            "not reused, or not emptied"
        );
        drop(b);
        // Four 1 MiB buffers fill the budget; freed, they stay, until a 2 MiB one needs room.
        let four = futures::future::join_all((0..4).map(|_| l.buffer(M))).await;
        drop(four);
        assert_eq!(pool(&l), (4, 4 * M, 0));
        let two = l.buffer(2 * M).await;
        let (_, idle, used) = pool(&l);
        assert!(
            idle + used <= 4 * M,
            "idle {idle} + used {used} exceed the budget"
        );
        drop(two);
        let (_, idle, used) = pool(&l);
        assert!(used == 0 && idle <= 4 * M);
        // Small buffers are not kept.
        drop(l.buffer(1000).await);
        assert_eq!(pool(&l).2, 0);
    }
}
