//! The thread pool every quantized matmul of the model runs on.
//!
//! Why not candle's barrier pool: its calling thread waits for the workers by spinning without
//! ever yielding, and a job is done only when every worker has reported, including one that
//! the OS has descheduled. With one of two cores taken by another process, decode kept 34% of
//! its idle speed, and under other loads 15% (issue 13). Here:
//!
//! - work is handed out in small chunks from a shared cursor, and the job is done when the
//!   chunks are: a worker that never got the CPU during a job is simply not waited for (the
//!   caller runs its share), only a chunk already taken is;
//! - the caller waits by spinning briefly, then yielding its core (`yield_now`), so a
//!   descheduled worker on the same core gets to finish its chunk;
//! - idle workers spin for a short while (a decode step issues a job every few hundred
//!   microseconds), then park until the next job.
//!
//! A second thread calling while a job runs (two conversations on one model) does not queue
//! behind it: it runs its own job inline.

use std::any::Any;
use std::cell::Cell;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;

/// Idle spins of a worker before it starts yielding its core (tens of microseconds), then
/// yields before it parks: a worker that shares a core with the caller (another process
/// holding the other core) must not burn the caller's time slice.
const WORKER_SPINS: u32 = 2_000;
const WORKER_YIELDS: u32 = 200;
/// Spins of the caller waiting for the last chunks before it starts yielding its core.
const CALLER_SPINS: u32 = 2_000;
/// Chunks per thread: small enough that a chunk held by a descheduled worker is short.
const CHUNKS_PER_THREAD: usize = 16;

thread_local! {
    static IN_POOL: Cell<bool> = const { Cell::new(false) };
}

/// The job being run: a type-erased `&dyn Fn(Range<usize>)` plus its item count.
struct Job {
    run: *const (dyn Fn(Range<usize>) + Sync),
    items: usize,
    chunk: usize,
}

struct Shared {
    /// `2 × generation + 1` while a job is open, even when closed.
    state: AtomicUsize,
    /// Workers inside the current job (registered before they touch it).
    active: AtomicUsize,
    cursor: AtomicUsize,
    job: Mutex<Option<JobPtr>>,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

#[derive(Clone, Copy)]
struct JobPtr(*const Job);
// SAFETY: the pointer is only dereferenced by workers registered in `active` while the job is
// open, and the caller keeps the job alive until it has closed it and `active` is zero.
unsafe impl Send for JobPtr {}

/// A fixed set of worker threads plus the calling thread.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<Thread>,
    call: Mutex<()>,
}

impl Pool {
    /// The pool of the process: `CANDLE_NUM_THREADS`, else `RAYON_NUM_THREADS`, else the number
    /// of cores (as candle sizes its own, so `--threads` means the same for both), counting
    /// the calling thread.
    pub fn global() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(|| Pool::new(threads_from_env()))
    }

    /// A pool of `threads` threads in all (the caller and `threads - 1` workers).
    pub fn new(threads: usize) -> Pool {
        let shared = Arc::new(Shared {
            state: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            cursor: AtomicUsize::new(0),
            job: Mutex::new(None),
            panic: Mutex::new(None),
        });
        let workers = (1..threads.max(1))
            .filter_map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("smollm3-pool-{i}"))
                    .spawn(move || worker(&shared))
                    .ok()
                    .map(|handle| handle.thread().clone())
            })
            .collect();
        Pool {
            shared,
            workers,
            call: Mutex::new(()),
        }
    }

    /// Threads that run a job: the workers and the caller.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Calls `f` on disjoint ranges covering `0..items`, on every thread of the pool, and
    /// returns when all are done. A panic in `f` is re-raised here.
    pub fn execute_chunked<F: Fn(Range<usize>) + Sync>(&self, items: usize, f: F) {
        if items == 0 {
            return;
        }
        // Inline: no workers, a call from inside a job, or another caller's job running.
        let inline = self.workers.is_empty() || IN_POOL.with(Cell::get);
        let guard = match self.call.try_lock() {
            _ if inline => None,
            Ok(guard) => Some(guard),
            // A job that panicked re-raised its panic while holding the lock: still usable.
            Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        let Some(_guard) = guard else {
            f(0..items);
            return;
        };
        let chunk = items.div_ceil(self.threads() * CHUNKS_PER_THREAD).max(1);
        let run: &(dyn Fn(Range<usize>) + Sync) = &f;
        let job = Job {
            // SAFETY (lifetime erasure): the job is closed and every registered worker gone
            // before this function returns, so nothing uses `f` after it is dropped.
            run: unsafe {
                std::mem::transmute::<
                    *const (dyn Fn(Range<usize>) + Sync + '_),
                    *const (dyn Fn(Range<usize>) + Sync + 'static),
                >(run)
            },
            items,
            chunk,
        };
        let shared = &*self.shared;
        shared.cursor.store(0, Ordering::SeqCst);
        *lock(&shared.job) = Some(JobPtr(&job));
        let open = shared.state.load(Ordering::SeqCst) + 1;
        shared.state.store(open, Ordering::SeqCst);
        for worker in &self.workers {
            worker.unpark();
        }
        // The caller's share: whatever chunks are left when it gets to them.
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_chunks(shared, &job)));
        // Close the job, then wait for the workers that joined it to finish their last chunk.
        shared.state.store(open + 1, Ordering::SeqCst);
        let mut spins = 0u32;
        while shared.active.load(Ordering::SeqCst) != 0 {
            if spins < CALLER_SPINS {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        *lock(&shared.job) = None;
        if let Err(payload) = result {
            std::panic::resume_unwind(payload);
        }
        if let Some(payload) = lock(&shared.panic).take() {
            std::panic::resume_unwind(payload);
        }
    }
}

/// Odd states are open jobs (see `Shared::state`).
fn is_open(state: usize) -> bool {
    state & 1 == 1
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn run_chunks(shared: &Shared, job: &Job) {
    loop {
        let start = shared.cursor.fetch_add(job.chunk, Ordering::Relaxed);
        if start >= job.items {
            return;
        }
        // SAFETY: see `Job::run`: alive while the job is open or a worker is registered.
        let run = unsafe { &*job.run };
        run(start..job.items.min(start + job.chunk));
    }
}

fn worker(shared: &Shared) {
    IN_POOL.with(|f| f.set(true));
    let mut seen = shared.state.load(Ordering::SeqCst);
    let mut spins = 0u32;
    loop {
        let state = shared.state.load(Ordering::SeqCst);
        if state == seen || !is_open(state) {
            // Nothing new (or the job it announced is already closed): wait.
            if !is_open(state) {
                seen = state;
            }
            spins += 1;
            if spins < WORKER_SPINS {
                std::hint::spin_loop();
            } else if spins < WORKER_SPINS + WORKER_YIELDS {
                std::thread::yield_now();
            } else {
                std::thread::park();
                spins = 0;
            }
            continue;
        }
        spins = 0;
        seen = state;
        // Register, then check the job is still the one announced: a job closed in between
        // may already have been freed by its caller.
        shared.active.fetch_add(1, Ordering::SeqCst);
        if shared.state.load(Ordering::SeqCst) == state {
            let job = *lock(&shared.job);
            if let Some(JobPtr(job)) = job {
                // SAFETY: registered while the job is open: the caller waits for us.
                let job = unsafe { &*job };
                if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run_chunks(shared, job)
                })) {
                    lock(&shared.panic).get_or_insert(payload);
                }
            }
        }
        shared.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Threads for the global pool (see [`Pool::global`]).
fn threads_from_env() -> usize {
    std::env::var("CANDLE_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        // candle's own fallback: RAYON_NUM_THREADS, else the number of cores.
        .unwrap_or_else(candle_core::utils::get_num_threads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_item_runs_exactly_once() {
        let pool = Pool::new(3);
        for items in [1, 2, 7, 100, 4097] {
            let counts: Vec<AtomicU64> = (0..items).map(|_| AtomicU64::new(0)).collect();
            pool.execute_chunked(items, |range| {
                for i in range {
                    counts[i].fetch_add(1, Ordering::Relaxed);
                }
            });
            assert!(
                counts.iter().all(|c| c.load(Ordering::Relaxed) == 1),
                "{items} items"
            );
        }
    }

    #[test]
    fn concurrent_callers_and_nested_calls_complete() {
        let pool = Arc::new(Pool::new(2));
        let total = Arc::new(AtomicU64::new(0));
        let callers: Vec<_> = (0..4)
            .map(|_| {
                let (pool, total) = (Arc::clone(&pool), Arc::clone(&total));
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        pool.execute_chunked(10, |range| {
                            // A nested call runs inline.
                            pool.execute_chunked(range.len(), |inner| {
                                total.fetch_add(inner.len() as u64, Ordering::Relaxed);
                            });
                        });
                    }
                })
            })
            .collect();
        for caller in callers {
            caller.join().unwrap();
        }
        assert_eq!(total.load(Ordering::Relaxed), 4 * 200 * 10);
    }

    #[test]
    fn a_panic_in_a_job_reaches_the_caller_and_the_pool_still_works() {
        let pool = Pool::new(2);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.execute_chunked(64, |range| assert!(!range.contains(&40), "item 40"));
        }));
        assert!(result.is_err());
        // Still in parallel afterwards (not degraded to running every job inline): items that
        // sleep leave the caller's core free, so the worker takes some of them.
        let sum = AtomicU64::new(0);
        let threads = Mutex::new(std::collections::HashSet::new());
        pool.execute_chunked(64, |range| {
            lock(&threads).insert(std::thread::current().id());
            std::thread::sleep(std::time::Duration::from_millis(2));
            sum.fetch_add(range.len() as u64, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 64);
        assert_eq!(
            lock(&threads).len(),
            2,
            "the worker took no chunk after the panic"
        );
    }
}
