//! Limits shared by every task of a shard: requests per second, bytes per second, the
//! in-flight byte budget that bounds memory whatever the object sizes, and the objects in
//! flight. Each may be changed while the shard runs ([`Limits::set`]): waiting tasks go on
//! at the new rate, and the budget grows at once or shrinks as buffers are freed.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// A token bucket that lets a request run into debt: `take(n)` never waits for more tokens
/// than exist, it waits until the debt is paid, so amounts larger than a second's worth work.
/// Its rate may change at any time ([`TokenBucket::set_rate`]); 0 is unlimited.
#[derive(Debug)]
pub struct TokenBucket {
    state: std::sync::Mutex<Bucket>,
    /// Wakes the waiting tasks when the rate changes, to wait again at the new rate.
    changed: Notify,
}

#[derive(Debug)]
struct Bucket {
    /// Tokens per second; 0 is unlimited.
    rate: f64,
    /// Tokens available (negative: the debt of the tasks waiting).
    tokens: f64,
    /// All tokens ever credited: a waiter is through once this reaches its mark.
    credited: f64,
    /// Counts the changes to unlimited, which forgive every debt: a task waiting since an
    /// earlier one is through.
    forgiven: u64,
    last: Instant,
}

impl Bucket {
    /// Credits what accrued since the last look (at most a second's worth in store).
    fn refill(&mut self) {
        let now = Instant::now();
        let accrued = now.duration_since(self.last).as_secs_f64() * self.rate;
        let room = (self.rate - self.tokens).max(0.0);
        let added = accrued.min(room);
        self.tokens += added;
        self.credited += added;
        self.last = now;
    }
}

impl TokenBucket {
    /// A bucket of `per_second` tokens a second (0: unlimited), full.
    pub fn new(per_second: f64) -> Self {
        TokenBucket {
            state: std::sync::Mutex::new(Bucket {
                rate: per_second,
                tokens: per_second,
                credited: 0.0,
                forgiven: 0,
                last: Instant::now(),
            }),
            changed: Notify::new(),
        }
    }

    /// The rate, in tokens per second (0: unlimited).
    pub fn rate(&self) -> f64 {
        self.state.lock().unwrap().rate
    }

    /// Changes the rate. Tasks waiting pay the rest of their debt at the new rate; from
    /// unlimited, the bucket starts full.
    pub fn set_rate(&self, per_second: f64) {
        {
            let mut b = self.state.lock().unwrap();
            if b.rate == per_second {
                return;
            }
            if b.rate > 0.0 {
                b.refill();
            }
            if per_second == 0.0 {
                b.forgiven += 1;
            } else if b.rate == 0.0 {
                b.tokens = per_second;
                b.last = Instant::now();
            }
            b.rate = per_second;
        }
        self.changed.notify_waiters();
    }

    pub async fn take(&self, n: f64) {
        let (mark, forgiven) = {
            let mut b = self.state.lock().unwrap();
            if b.rate == 0.0 {
                return;
            }
            b.refill();
            b.tokens -= n;
            if b.tokens >= 0.0 {
                return;
            }
            // Through once every token owed up to and including these is credited.
            (b.credited - b.tokens, b.forgiven)
        };
        loop {
            // Registered before looking, so a change made after the look wakes it.
            let changed = self.changed.notified();
            let wait = {
                let mut b = self.state.lock().unwrap();
                if b.rate == 0.0 || b.forgiven != forgiven {
                    return;
                }
                b.refill();
                let owed = mark - b.credited;
                if owed <= 0.0 {
                    return;
                }
                Duration::from_secs_f64(owed / b.rate)
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = changed => {}
            }
        }
    }
}

/// The budget unit: permits are KiB so that a u32 count covers terabytes.
const UNIT: u64 = 1024;
/// Buffers of at least this many bytes are kept for reuse when freed (smaller ones come from
/// malloc's arenas, which reuse them anyway). Their capacity is rounded up to a multiple of it.
const POOLED: u64 = 1 << 20;

/// A shard's share of a job's live settings ([`ferry_core::LiveLimits`]), as [`Limits`]
/// applies them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShardLimits {
    /// 0 is unlimited.
    pub requests_per_second: f64,
    /// 0 is unlimited.
    pub bytes_per_second: f64,
    pub memory_budget: u64,
    /// Objects in flight.
    pub concurrency: usize,
}

#[derive(Debug)]
pub struct Limits {
    requests: TokenBucket,
    bytes: TokenBucket,
    memory: Arc<Budget>,
    /// Objects in flight; 0 when never set (the plan's then).
    concurrency: AtomicUsize,
}

/// The in-flight byte budget (permits), and the idle buffers kept for reuse. Buffers in use
/// and idle buffers together stay within the budget: a freed buffer is kept only if it fits,
/// and idle ones are freed, oldest first, when a new buffer has to be allocated. (Permits
/// freed go straight to waiting tasks, so the count of free permits says nothing of what is
/// allocated: the bytes of buffers in use are counted here.)
///
/// The budget may change: growing adds permits at once; shrinking takes back the free
/// permits at once and the rest from buffers as they are freed (never waiting, so it cannot
/// deadlock with the tasks that hold them).
#[derive(Debug)]
struct Budget {
    permits: Arc<Semaphore>,
    /// The budget in units. While a shrink is owed permits, the semaphore holds more.
    units: AtomicU32,
    /// Wakes the tasks waiting for permits when the budget changes: a request clamped to
    /// the old budget is made again (a whole old budget may be more than exists now).
    changed: Notify,
    pool: std::sync::Mutex<Pool>,
    /// Tasks waiting for permits: while any does, nothing is taken for read-ahead
    /// ([`Limits::try_adopt`]).
    starving: AtomicUsize,
    /// What holds permits for read-ahead and gives them back on demand ([`Reclaim`]).
    reclaimers: std::sync::Mutex<Vec<Weak<dyn Reclaim>>>,
}

/// Memory a store holds in the budget ahead of need (a database listing's decoded rows),
/// which it gives back when a task has to wait for the budget: read-ahead never makes a
/// copy wait.
pub trait Reclaim: Send + Sync {
    /// Frees what is held (its buffers dropped).
    fn reclaim(&self);
}

/// Counts a task as waiting for permits while it lives.
struct Starving<'a>(&'a AtomicUsize);

impl<'a> Starving<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Starving(n)
    }
}

impl Drop for Starving<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug, Default)]
struct Pool {
    idle: Vec<Vec<u8>>,
    idle_bytes: u64,
    /// Capacity of the buffers in use.
    used: u64,
    /// The budget in bytes.
    bytes: u64,
    /// Permits a shrink still has to take back, from buffers as they are freed.
    owed: u32,
}

/// The permits of a budget of `bytes`.
fn units_of(bytes: u64) -> u32 {
    (bytes / UNIT).clamp(1, u32::MAX as u64 / 2) as u32
}

impl Budget {
    fn new(bytes: u64) -> Self {
        let units = units_of(bytes);
        Budget {
            permits: Arc::new(Semaphore::new(units as usize)),
            units: AtomicU32::new(units),
            changed: Notify::new(),
            pool: std::sync::Mutex::new(Pool {
                bytes: units as u64 * UNIT,
                ..Default::default()
            }),
            starving: AtomicUsize::new(0),
            reclaimers: Default::default(),
        }
    }

    async fn permit(&self, n: u64) -> OwnedSemaphorePermit {
        loop {
            // Registered before the budget is read, so a change after the read wakes it.
            let changed = self.changed.notified();
            let budget = self.units.load(Ordering::Acquire) as u64;
            let units = n.div_ceil(UNIT).clamp(1, budget) as u32;
            if let Ok(p) = self.permits.clone().try_acquire_many_owned(units) {
                return p;
            }
            // Counted as waiting before the read-ahead is reclaimed, so that none is taken
            // again until this task has its permits (try_adopt looks at the count).
            let _starving = Starving::new(&self.starving);
            self.reclaim();
            tokio::select! {
                biased;
                p = self.permits.clone().acquire_many_owned(units) => {
                    return p.expect("the memory semaphore is never closed");
                }
                _ = changed => {}
            }
        }
    }

    /// Asks every live reclaimer to give its read-ahead back.
    fn reclaim(&self) {
        let live: Vec<Arc<dyn Reclaim>> = {
            let mut r = self.reclaimers.lock().unwrap();
            r.retain(|w| w.strong_count() > 0);
            r.iter().filter_map(Weak::upgrade).collect()
        };
        for r in live {
            r.reclaim();
        }
    }

    /// Sets the budget to `bytes`.
    fn resize(&self, bytes: u64) {
        let new = units_of(bytes);
        let mut freed = Vec::new();
        {
            let mut pool = self.pool.lock().unwrap();
            let old = self.units.swap(new, Ordering::AcqRel);
            if new > old {
                let more = new - old;
                let repaid = more.min(pool.owed);
                pool.owed -= repaid;
                self.permits.add_permits((more - repaid) as usize);
            } else if new < old {
                let fewer = old - new;
                let taken = self.permits.forget_permits(fewer as usize) as u32;
                pool.owed += fewer - taken;
            }
            pool.bytes = new as u64 * UNIT;
            while pool.used + pool.idle_bytes > pool.bytes && !pool.idle.is_empty() {
                let b = pool.idle.remove(0);
                pool.idle_bytes -= b.capacity() as u64;
                freed.push(b);
            }
        }
        drop(freed);
        self.changed.notify_waiters();
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
                    while pool.used + pool.idle_bytes > pool.bytes && !pool.idle.is_empty() {
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
    /// Its permits go back, less what a shrink is still owed.
    fn give_back(&self, mut b: Vec<u8>, capacity: usize, permit: Option<OwnedSemaphorePermit>) {
        let mut permit = permit;
        let mut pool = self.pool.lock().unwrap();
        pool.used -= capacity as u64;
        if let Some(p) = permit.as_mut() {
            let repay = pool.owed.min(p.num_permits() as u32);
            if repay > 0 {
                pool.owed -= repay;
                match p.split(repay as usize) {
                    Some(taken) => taken.forget(),
                    None => unreachable!("a permit holds what it counts"),
                }
            }
        }
        let cap = b.capacity() as u64;
        // Only buffers of the sizes `buffer` allocates (adopted ones have any size).
        if cap >= POOLED
            && cap.is_multiple_of(POOLED)
            && pool.used + pool.idle_bytes + cap <= pool.bytes
        {
            b.clear();
            pool.idle_bytes += cap;
            pool.idle.push(b);
        }
        drop(pool);
        // `b` (unless kept) and the rest of the permit are freed here, after the lock.
        drop(permit);
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

    /// The bytes counted in the budget.
    pub fn capacity(&self) -> usize {
        self.capacity
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
        let permit = self.permit.take();
        if let Some(budget) = &self.budget {
            budget.give_back(std::mem::take(&mut self.bytes), self.capacity, permit);
        }
    }
}

impl Limits {
    /// `requests_per_second` and `bytes_per_second` of 0 mean unlimited.
    pub fn new(requests_per_second: f64, bytes_per_second: f64, memory_budget: u64) -> Self {
        Limits {
            requests: TokenBucket::new(requests_per_second),
            bytes: TokenBucket::new(bytes_per_second),
            memory: Arc::new(Budget::new(memory_budget)),
            concurrency: AtomicUsize::new(0),
        }
    }

    /// Limits set to `l`.
    pub fn of(l: &ShardLimits) -> Self {
        let limits = Limits::new(l.requests_per_second, l.bytes_per_second, l.memory_budget);
        limits.concurrency.store(l.concurrency, Ordering::Release);
        limits
    }

    pub fn unlimited() -> Self {
        Limits::new(0.0, 0.0, 256 << 20)
    }

    /// Changes every limit to `l`, for the tasks running and those to come (see
    /// [`TokenBucket::set_rate`] and [`Budget`]).
    pub fn set(&self, l: &ShardLimits) {
        self.requests.set_rate(l.requests_per_second);
        self.bytes.set_rate(l.bytes_per_second);
        if units_of(l.memory_budget) != self.memory.units.load(Ordering::Acquire) {
            self.memory.resize(l.memory_budget);
        }
        self.concurrency.store(l.concurrency, Ordering::Release);
    }

    /// The objects to keep in flight, when set ([`Limits::of`], [`Limits::set`]).
    pub fn concurrency(&self) -> Option<usize> {
        Some(self.concurrency.load(Ordering::Acquire)).filter(|&c| c > 0)
    }

    /// The in-flight budget in bytes, as it is now.
    pub fn memory_budget(&self) -> u64 {
        self.memory.units.load(Ordering::Acquire) as u64 * UNIT
    }

    /// Whether a task is waiting for the budget.
    pub fn starving(&self) -> bool {
        self.memory.starving.load(Ordering::SeqCst) > 0
    }

    /// Registers memory held ahead of need, to be given back whenever a task has to wait
    /// for the budget (kept while `r` lives).
    pub fn add_reclaimer(&self, r: Weak<dyn Reclaim>) {
        self.memory.reclaimers.lock().unwrap().push(r);
    }

    /// `bytes` counted in the budget from now on (until the buffer and every `Bytes` made of
    /// it are dropped), without waiting: given back when no task waits for the budget and
    /// its capacity is free. For read-ahead, which must give way to the copies
    /// ([`Limits::add_reclaimer`]).
    pub fn try_adopt(&self, bytes: Vec<u8>) -> Result<Buffer, Vec<u8>> {
        if self.starving() {
            return Err(bytes);
        }
        let capacity = bytes.capacity();
        let units = (capacity as u64).div_ceil(UNIT).max(1);
        let Ok(units) = u32::try_from(units) else {
            return Err(bytes);
        };
        let Ok(permit) = self.memory.permits.clone().try_acquire_many_owned(units) else {
            return Err(bytes);
        };
        self.memory.pool.lock().unwrap().used += capacity as u64;
        Ok(Buffer {
            bytes,
            capacity,
            permit: Some(permit),
            budget: Some(self.memory.clone()),
        })
    }

    /// Waits for the right to send one request.
    pub async fn request(&self) {
        self.requests.take(1.0).await;
    }

    /// Waits for the right to move `n` bytes.
    pub async fn bandwidth(&self, n: u64) {
        self.bytes.take(n as f64).await;
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

    /// Starts `n` tasks that each take one token of `b`, and returns the count of those
    /// through (and the tasks).
    fn takers(b: &Arc<TokenBucket>, n: usize) -> Arc<std::sync::atomic::AtomicUsize> {
        let through = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for _ in 0..n {
            let (b, through) = (b.clone(), through.clone());
            tokio::spawn(async move {
                b.take(1.0).await;
                through.fetch_add(1, Ordering::SeqCst);
            });
        }
        through
    }

    /// The count through at `secs` seconds after `t0`.
    async fn at(t0: Instant, secs: f64, through: &std::sync::atomic::AtomicUsize) -> usize {
        tokio::time::sleep_until(t0 + Duration::from_secs_f64(secs)).await;
        through.load(Ordering::SeqCst)
    }

    #[tokio::test(start_paused = true)]
    async fn a_raised_rate_applies_to_the_tasks_already_waiting() {
        // 4/s with a burst of 4: 100 takers would need 24 s. Raised to 200/s after 2 s, the
        // 88 still waiting get through within the next half second.
        let b = Arc::new(TokenBucket::new(4.0));
        let t0 = Instant::now();
        let through = takers(&b, 100);
        let early = at(t0, 1.9, &through).await;
        assert!((8..=12).contains(&early), "{early} through in 1.9 s at 4/s");
        tokio::time::sleep_until(t0 + Duration::from_secs(2)).await;
        b.set_rate(200.0);
        let later = at(t0, 2.6, &through).await;
        assert_eq!(later, 100, "the waiting tasks did not go on at 200/s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lowered_rate_slows_the_tasks_already_waiting() {
        let b = Arc::new(TokenBucket::new(100.0));
        let t0 = Instant::now();
        let through = takers(&b, 300);
        let early = at(t0, 0.5, &through).await;
        assert!(
            (140..=160).contains(&early),
            "{early} through in 0.5 s at 100/s"
        );
        b.set_rate(2.0);
        let later = at(t0, 5.5, &through).await;
        assert!(
            (early..=early + 12).contains(&later),
            "{later} through at 5.5 s: the rate was lowered to 2/s at 0.5 s after {early}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_releases_the_waiting_and_limited_again_paces() {
        let b = Arc::new(TokenBucket::new(1.0));
        let t0 = Instant::now();
        let through = takers(&b, 50);
        assert!(at(t0, 1.5, &through).await <= 3);
        b.set_rate(0.0);
        assert_eq!(
            at(t0, 1.6, &through).await,
            50,
            "unlimited let none through"
        );
        b.set_rate(5.0);
        let again = takers(&b, 50);
        // A full bucket (5), then 5/s: about 15 by 2 s after the change.
        let n = at(t0, 3.6, &again).await;
        assert!((12..=18).contains(&n), "{n} through in 2 s at 5/s");
        // And back to unlimited while these wait: the waiting are forgiven their debt.
        b.set_rate(0.0);
        assert_eq!(at(t0, 3.7, &again).await, 50);
    }

    #[tokio::test(start_paused = true)]
    async fn a_grown_budget_lets_waiting_buffers_through() {
        let l = Arc::new(Limits::new(0.0, 0.0, 64 * 1024));
        let a = l.buffer(48 * 1024).await;
        let waiting = tokio::spawn({
            let l = l.clone();
            async move { l.buffer(32 * 1024).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the budget was exceeded");
        l.set(&shard(0.0, 0.0, 128 * 1024, 1));
        let b = tokio::time::timeout(Duration::from_millis(50), waiting)
            .await
            .expect("a grown budget let the buffer through")
            .unwrap();
        drop((a, b));
    }

    #[tokio::test(start_paused = true)]
    async fn a_shrunk_budget_takes_back_permits_as_buffers_are_freed() {
        const K: u64 = 1024;
        let l = Arc::new(Limits::new(0.0, 0.0, 64 * K));
        let a = l.buffer(48 * K).await;
        // 16 KiB free now; shrunk to 32: the 16 free are taken back at once, 16 are owed.
        l.set(&shard(0.0, 0.0, 32 * K, 1));
        assert_eq!(l.memory.permits.available_permits(), 0);
        assert_eq!(l.memory.pool.lock().unwrap().owed, 16);
        drop(a);
        assert_eq!(
            l.memory.permits.available_permits(),
            32,
            "not repaid from the freed buffer"
        );
        assert_eq!(l.memory.pool.lock().unwrap().owed, 0);
        // A task waiting for the whole old budget (clamped to 64 KiB) is not left waiting
        // for permits that no longer exist: it asks again for the whole new one.
        let b = l.buffer(16 * K).await;
        let whole = tokio::spawn({
            let l = l.clone();
            async move { l.buffer(1 << 30).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        l.set(&shard(0.0, 0.0, 24 * K, 1));
        drop(b);
        let got = tokio::time::timeout(Duration::from_millis(50), whole)
            .await
            .expect("the whole-budget request waits for ever")
            .unwrap();
        assert_eq!(got.permit.as_ref().unwrap().num_permits(), 24);
    }

    #[test]
    fn concurrency_is_the_last_set() {
        let l = Limits::unlimited();
        assert_eq!(l.concurrency(), None);
        l.set(&shard(0.0, 0.0, 1 << 20, 7));
        assert_eq!(l.concurrency(), Some(7));
        assert_eq!(
            Limits::of(&shard(1.0, 1.0, 1 << 20, 3)).concurrency(),
            Some(3)
        );
    }

    fn shard(rps: f64, bps: f64, memory: u64, concurrency: usize) -> ShardLimits {
        ShardLimits {
            requests_per_second: rps,
            bytes_per_second: bps,
            memory_budget: memory,
            concurrency,
        }
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

    /// Holds adopted buffers, gives them all back when asked.
    struct Held(std::sync::Mutex<Vec<Buffer>>);

    impl Reclaim for Held {
        fn reclaim(&self) {
            let taken = std::mem::take(&mut *self.0.lock().unwrap());
            drop(taken);
        }
    }

    #[tokio::test]
    async fn read_ahead_counts_in_the_budget_and_gives_way_to_copies() {
        let l = Limits::new(0.0, 0.0, 64 * 1024);
        assert_eq!(l.memory_budget(), 64 * 1024);
        let held = Arc::new(Held(Default::default()));
        let weak: Weak<dyn Reclaim> = Arc::downgrade(&held) as Weak<dyn Reclaim>;
        l.add_reclaimer(weak);
        // Adopted without a copy, counted in the budget: 48 KiB of it.
        let v = vec![1u8; 48 * 1024];
        let ptr = v.as_ptr();
        let a = l.try_adopt(v).unwrap();
        assert_eq!(a.as_ref().as_ptr(), ptr);
        held.0.lock().unwrap().push(a);
        // No room for 32 KiB more: refused, never waited for.
        let Err(refused) = l.try_adopt(vec![2u8; 32 * 1024]) else {
            panic!("adopted beyond the budget")
        };
        assert_eq!(refused.len(), 32 * 1024);
        // A copy that needs the room gets it at once: the read-ahead is reclaimed.
        let copy = tokio::time::timeout(Duration::from_millis(500), l.buffer(32 * 1024)).await;
        assert!(copy.is_ok(), "the copy waited for the read-ahead");
        assert!(held.0.lock().unwrap().is_empty());
        // While a copy waits for the budget, nothing is adopted, though room is free.
        let copy = copy.unwrap();
        let big = l.buffer(48 * 1024);
        tokio::pin!(big);
        assert!(futures::poll!(&mut big).is_pending());
        assert!(l.starving());
        assert!(l.try_adopt(vec![3u8; 1024]).is_err());
        drop(copy);
        let big = big.await;
        assert!(!l.starving());
        // Without reclaimers left, a waiting copy just waits.
        drop(held);
        assert!(l.try_adopt(vec![4u8; 1024]).is_ok());
        drop(big);
    }
}
