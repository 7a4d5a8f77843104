//! Splitting a kernel's work over threads. In the threaded browser build (feature `threads`,
//! wasm atomics) the work goes to rayon's pool of Web Workers once the page has started it
//! (`startThreads`, then [`set_threads`]); everywhere else, and before the pool exists, it runs
//! in order on the calling thread, so the single-threaded builds carry no pool at all.
//!
//! A sampling step runs on a pool thread ([`on_pool`]) while the JS-facing thread waits, with the
//! pool's other threads as its team for the step's length: they spin on a job slot, and the
//! kernels hand them their large loops as a few parts per thread ([`split`], [`for_each`],
//! [`for_each_chunk_mut`]), taking parts themselves too; a part's kernels are not split again.
//! Why a spinning team, not rayon's own `par_iter`: a step is ~100 such loops of 0.1-2 ms, and
//! a rayon worker goes to sleep within microseconds of its last job, so every loop paid for
//! waking it (an `Atomics.notify` to a sleeping Web Worker); XNNPACK's pthreadpool spins the
//! same way.
//!
//! The split never changes a result: each part writes its own outputs, computed exactly as the
//! one-thread loop computes them (no sum is split across threads), so a threaded run is
//! bit-identical to a single-threaded one. The unit tests check each kernel that way natively,
//! with the parts run in reverse order on one thread ([`with_test_threads`]); the browser tests
//! compare the two builds' images (`pkg-tests/threads.test.mjs`).

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The pool's size once it has started; 1 before (and always, without `threads`).
static THREADS: AtomicUsize = AtomicUsize::new(1);

/// Multiply-adds (or element passes) below which a kernel stays on the calling thread: handing a
/// loop to the team and waiting for its last part costs about as much (2^15 measured slower on
/// the shipped model, BENCHMARKS.md "Threads").
pub const MIN_PARALLEL_WORK: usize = 1 << 18;

thread_local! {
    /// Whether this thread is running a part of a split (whose kernels are not split again).
    static IN_PART: Cell<bool> = const { Cell::new(false) };
}

#[cfg(test)]
thread_local! {
    /// The thread count the kernels see on this thread in a unit test (0: the real one).
    static TEST_THREADS: Cell<usize> = const { Cell::new(0) };
}

/// How many threads the kernels split their work over.
pub fn threads() -> usize {
    THREADS.load(Ordering::Relaxed)
}

/// Records that rayon's global pool runs `n` threads (called once it has been built; rayon
/// must not be touched before, as on wasm it cannot spawn a pool of its own).
#[cfg(feature = "threads")]
pub fn set_threads(n: usize) {
    THREADS.store(n.max(1), Ordering::Relaxed);
}

/// Runs `f` with the kernels on this thread splitting their work as if there were `n` threads,
/// every split at any size, the parts run one after the other in reverse order (so that a part
/// reading what another writes, or a result depending on the order, shows).
#[cfg(test)]
pub fn with_test_threads<R>(n: usize, f: impl FnOnce() -> R) -> R {
    let outer = TEST_THREADS.with(|t| t.replace(n));
    let r = f();
    TEST_THREADS.with(|t| t.set(outer));
    r
}

/// Runs `f` as a part of a split (see [`threads_here`]).
#[cfg(any(test, feature = "threads"))]
fn as_part<R>(f: impl FnOnce() -> R) -> R {
    let outer = IN_PART.with(|p| p.replace(true));
    let r = f();
    IN_PART.with(|p| p.set(outer));
    r
}

/// Threads a split made here would run on: 1 inside a part of a split and without a pool.
fn threads_here() -> usize {
    if IN_PART.with(Cell::get) {
        return 1;
    }
    #[cfg(test)]
    if let n @ 1.. = TEST_THREADS.with(Cell::get) {
        return n;
    }
    threads()
}

/// Whether the parts of a split run in a unit test's reverse order ([`with_test_threads`]).
fn test_order() -> bool {
    #[cfg(test)]
    if TEST_THREADS.with(Cell::get) > 1 {
        return true;
    }
    false
}

/// How a loop of several parts runs here.
enum Parts {
    /// In order on this thread.
    Here,
    /// As parts over the step's team.
    #[cfg(feature = "threads")]
    Pool(&'static team::Team),
    /// As parts on this thread, last first ([`with_test_threads`]).
    #[cfg(test)]
    Reversed,
}

fn parts_mode(several: bool) -> Parts {
    if !several || threads_here() <= 1 {
        return Parts::Here;
    }
    #[cfg(test)]
    if test_order() {
        return Parts::Reversed;
    }
    #[cfg(feature = "threads")]
    if let Some(team) = team::current() {
        return Parts::Pool(team);
    }
    Parts::Here
}

/// Parts per thread in a split: the threads take parts as they come free, so a thread the
/// browser or the OS holds up for a while (2 vCPUs shared with the browser's own threads) leaves
/// a small part to the others instead of half of the work.
const PARTS_PER_THREAD: usize = 4;

/// Into how many parts (at most `max_parts`) to cut `work` multiply-adds: a few per thread
/// ([`PARTS_PER_THREAD`]) when the work is worth splitting, else 1.
pub fn split(work: usize, max_parts: usize) -> usize {
    let t = threads_here();
    if t <= 1 || (work < MIN_PARALLEL_WORK && !test_order()) {
        1
    } else {
        (t * PARTS_PER_THREAD).min(max_parts).max(1)
    }
}

/// The length of a part when `units` units of `unit_len` values each (`work` passes over a
/// value) are split ([`split`]) in whole units: all of them when there is one part.
pub fn part_len(units: usize, unit_len: usize, work: usize) -> usize {
    let parts = split(units * unit_len * work, units);
    units.div_ceil(parts).max(1) * unit_len.max(1)
}

/// Runs `f` on a thread of the pool while the calling thread waits (a whole sampling step, so
/// that the parts its kernels split off run beside it: with a pool of one thread per core, every
/// core computes and the caller sleeps); without a pool, or on a pool thread, here. `f` must not
/// touch JS values: a pool thread is another worker with JS objects of its own.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    #[cfg(feature = "threads")]
    if threads() > 1 && rayon::current_thread_index().is_none() {
        // `scope` runs its closure on a pool thread and returns once it and the helpers it
        // spawned have returned.
        let team = team::Team::new();
        let team = &team;
        let t0 = stats::now();
        let r = rayon::scope(move |s| {
            for _ in 1..threads() {
                s.spawn(move |_| team.help());
            }
            let r = team.lead(f);
            team.dismiss();
            r
        });
        stats::add_step(t0);
        return r;
    }
    f()
}

/// A buffer whose parts a split's parts write, each its own values (disjoint runs that need not
/// be contiguous chunks, e.g. the columns of a Winograd chunk's tiles in every output row): it
/// hands out each run as its own slice instead of the whole buffer.
pub struct Disjoint<'a, T> {
    ptr: *mut T,
    len: usize,
    _buf: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: a `&mut [T]` handed out in disjoint runs (the promise of `run`'s callers).
unsafe impl<T: Send> Send for Disjoint<'_, T> {}
unsafe impl<T: Send> Sync for Disjoint<'_, T> {}

impl<'a, T> Disjoint<'a, T> {
    pub fn new(buf: &'a mut [T]) -> Self {
        Self {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
            _buf: std::marker::PhantomData,
        }
    }

    /// The `len` values at `start`.
    ///
    /// # Safety
    /// No other slice of the same values is alive: the caller writes its own values only.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn run(&self, start: usize, len: usize) -> &mut [T] {
        assert!(
            start <= self.len && len <= self.len - start,
            "Disjoint::run: out of bounds"
        );
        // SAFETY: in bounds (asserted); exclusive by the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

/// A step's team: the thread running the step (the lead) publishes a loop as a job; the helpers,
/// spinning until the step ends, and the lead take its indices one at a time.
#[cfg(feature = "threads")]
mod team {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::SeqCst};

    /// One loop: `f(i)` for `i < n`; `next` hands out indices, `done` counts finished ones.
    struct Job<'a> {
        f: &'a (dyn Fn(usize) + Sync),
        n: usize,
        next: AtomicUsize,
        done: AtomicUsize,
    }

    impl Job<'_> {
        fn work(&self) {
            loop {
                let i = self.next.fetch_add(1, SeqCst);
                if i >= self.n {
                    return;
                }
                (self.f)(i);
                self.done.fetch_add(1, SeqCst);
            }
        }
    }

    pub struct Team {
        /// The job in progress (on the lead's stack), or null.
        job: AtomicPtr<Job<'static>>,
        /// Bumped when a job is published.
        generation: AtomicUsize,
        /// Helpers that may be reading `job`: the lead waits for 0 before the job goes.
        busy: AtomicUsize,
        stop: AtomicBool,
    }

    thread_local! {
        /// The team of the step running on this thread (the lead's).
        static CURRENT: Cell<*const Team> = const { Cell::new(std::ptr::null()) };
    }

    /// The team of the step running on this thread, if this thread leads one.
    pub fn current() -> Option<&'static Team> {
        let p = CURRENT.with(Cell::get);
        // SAFETY: set only by `lead`, for the length of the step, while the team lives.
        (!p.is_null()).then(|| unsafe { &*p })
    }

    impl Team {
        pub fn new() -> Self {
            Self {
                job: AtomicPtr::new(std::ptr::null_mut()),
                generation: AtomicUsize::new(0),
                busy: AtomicUsize::new(0),
                stop: AtomicBool::new(false),
            }
        }

        /// Runs the step `f` on this thread as the team's lead.
        pub fn lead<R>(&self, f: impl FnOnce() -> R) -> R {
            let outer = CURRENT.with(|c| c.replace(self));
            let r = f();
            CURRENT.with(|c| c.set(outer));
            r
        }

        /// Ends the step: the helpers return.
        pub fn dismiss(&self) {
            self.stop.store(true, SeqCst);
        }

        /// A helper's loop until the step ends: take part in every job published.
        pub fn help(&self) {
            let mut seen = self.generation.load(SeqCst);
            while !self.stop.load(SeqCst) {
                let g = self.generation.load(SeqCst);
                if g == seen {
                    std::hint::spin_loop();
                    continue;
                }
                seen = g;
                self.busy.fetch_add(1, SeqCst);
                let job = self.job.load(SeqCst);
                if !job.is_null() {
                    // SAFETY: the lead keeps the job alive until `busy` is back to 0, and
                    // clears `job` before it waits for that.
                    unsafe { &*job }.work();
                }
                self.busy.fetch_sub(1, SeqCst);
            }
        }

        /// `f(i)` for every `i < n`, over the lead and the helpers; returns when all are done.
        pub fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
            let job = Job {
                f,
                n,
                next: AtomicUsize::new(0),
                done: AtomicUsize::new(0),
            };
            // The job lives on this stack frame; `job` is cleared and the helpers out of it
            // (busy == 0) before it returns, so the erased lifetime never outlives it.
            let ptr = (&job as *const Job<'_>).cast::<Job<'static>>().cast_mut();
            let t0 = super::stats::now();
            self.job.store(ptr, SeqCst);
            self.generation.fetch_add(1, SeqCst);
            job.work();
            let t1 = super::stats::now();
            while job.done.load(SeqCst) < n {
                std::hint::spin_loop();
            }
            super::stats::add_region(t0, t1);
            self.job.store(std::ptr::null_mut(), SeqCst);
            while self.busy.load(SeqCst) != 0 {
                std::hint::spin_loop();
            }
        }
    }
}

/// Runs `f` on every thread of the pool and on the calling thread (to free thread-local
/// scratch everywhere).
pub fn on_every_thread(f: impl Fn() + Sync + Send) {
    #[cfg(feature = "threads")]
    if threads() > 1 {
        rayon::broadcast(|_| f());
    }
    f();
}

/// Runs `f(i)` for every `i` in `0..n`, as parts over the pool's threads when there are
/// several (each index once, in no particular order), else in order.
pub fn for_each(n: usize, f: impl Fn(usize) + Sync + Send) {
    match parts_mode(n > 1) {
        Parts::Here => (0..n).for_each(f),
        #[cfg(feature = "threads")]
        Parts::Pool(team) => team.run(n, &|i| as_part(|| f(i))),
        #[cfg(test)]
        Parts::Reversed => (0..n).rev().for_each(|i| as_part(|| f(i))),
    }
}

/// [`for_each`] when `work` multiply-adds over all of `0..n` are worth splitting ([`split`]),
/// else in order here.
pub fn for_each_sized(n: usize, work: usize, f: impl Fn(usize) + Sync + Send) {
    if split(work, n) > 1 {
        for_each(n, f);
    } else {
        (0..n).for_each(f);
    }
}

/// Runs `f(i, chunk)` over `out` cut into chunks of `chunk_len` (the last one shorter), chunk
/// `i` starting at `i * chunk_len`; as parts over the pool's threads when there are several.
pub fn for_each_chunk_mut<T: Send>(
    out: &mut [T],
    chunk_len: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    let chunk_len = chunk_len.max(1);
    match parts_mode(out.len() > chunk_len) {
        Parts::Here => out
            .chunks_mut(chunk_len)
            .enumerate()
            .for_each(|(i, c)| f(i, c)),
        #[cfg(feature = "threads")]
        Parts::Pool(team) => {
            let len = out.len();
            let buf = Disjoint::new(out);
            team.run(len.div_ceil(chunk_len), &|i| {
                let start = i * chunk_len;
                // SAFETY: chunk i is out[start .. start + chunk_len] cut at len, and no two
                // indices (each run once) share a value.
                let chunk = unsafe { buf.run(start, chunk_len.min(len - start)) };
                as_part(|| f(i, chunk))
            });
        }
        #[cfg(test)]
        Parts::Reversed => out
            .chunks_mut(chunk_len)
            .enumerate()
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .for_each(|(i, c)| as_part(|| f(i, c))),
    }
}

/// Where a threaded step's time goes, for benchmarks (`threadStats()` in the threaded build; off
/// unless asked for, as each reading is a call into JS): the steps' wall time, the part of it in
/// split loops (the lead's own parts, then its wait for the last helper), and the rest, which ran
/// on one thread.
#[cfg(feature = "threads")]
pub mod stats {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    static ON: AtomicBool = AtomicBool::new(false);

    #[derive(Default, Clone, Copy, Debug)]
    pub struct Stats {
        pub steps: u64,
        pub step_ms: f64,
        /// Loops split over the team, and the time the lead spent in them.
        pub regions: u64,
        pub parallel_ms: f64,
        /// The part of `parallel_ms` the lead waited for helpers after its own parts.
        pub wait_ms: f64,
    }

    static STATS: Mutex<Stats> = Mutex::new(Stats {
        steps: 0,
        step_ms: 0.0,
        regions: 0,
        parallel_ms: 0.0,
        wait_ms: 0.0,
    });

    /// Turns the counting on or off and returns the counts so far, zeroing them.
    pub fn take(on: bool) -> Stats {
        ON.store(on, Ordering::Relaxed);
        std::mem::take(&mut *STATS.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// `performance.now()` of this thread's JS realm when counting, else 0.
    pub fn now() -> f64 {
        if !ON.load(Ordering::Relaxed) {
            return 0.0;
        }
        let global = js_sys::global();
        let perf = js_sys::Reflect::get(&global, &"performance".into()).unwrap_or_default();
        let now = js_sys::Reflect::get(&perf, &"now".into()).unwrap_or_default();
        use wasm_bindgen::JsCast;
        now.dyn_ref::<js_sys::Function>()
            .and_then(|f| f.call0(&perf).ok())
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0)
    }

    fn with(f: impl FnOnce(&mut Stats)) {
        if ON.load(Ordering::Relaxed) {
            f(&mut STATS.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }

    pub fn add_step(t0: f64) {
        let t = now();
        with(|s| {
            s.steps += 1;
            s.step_ms += t - t0;
        });
    }

    /// A split loop that started at `t0`, whose last part of the lead's ended at `t1`.
    pub fn add_region(t0: f64, t1: f64) {
        let t = now();
        with(|s| {
            s.regions += 1;
            s.parallel_ms += t - t0;
            s.wait_ms += t - t1;
        });
    }
}
