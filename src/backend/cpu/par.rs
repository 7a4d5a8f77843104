//! Splitting a kernel's work over threads. In the threaded browser build (feature `threads`,
//! wasm atomics) the work goes to rayon's pool of Web Workers once the page has started it
//! (`startThreads`, then [`set_threads`]); everywhere else, and before the pool exists, it runs
//! in order on the calling thread, so the single-threaded builds carry no pool at all.
//!
//! A sampling step runs on a pool thread ([`on_pool`]) while the JS-facing thread waits, and the
//! kernels split their large loops into one part per thread ([`split`], [`for_each`],
//! [`for_each_chunk_mut`]); a part's kernels are not split again.
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

/// Multiply-adds (or element passes) below which a kernel stays on the calling thread: waking
/// the pool's workers costs tens of microseconds in a browser, about as long as this much work.
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
    /// As parts over the pool.
    #[cfg(feature = "threads")]
    Pool,
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
    return Parts::Pool;
    #[allow(unreachable_code)]
    Parts::Here
}

/// Into how many parts (at most `max_parts`) to cut `work` multiply-adds: one per thread when
/// the work is worth splitting, else 1.
pub fn split(work: usize, max_parts: usize) -> usize {
    let t = threads_here();
    if t <= 1 || (work < MIN_PARALLEL_WORK && !test_order()) {
        1
    } else {
        t.min(max_parts).max(1)
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
        // `scope` runs its closure on a pool thread and returns once it has returned.
        return rayon::scope(|_| f());
    }
    f()
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
        Parts::Pool => {
            use rayon::prelude::*;
            (0..n).into_par_iter().for_each(|i| as_part(|| f(i)));
        }
        #[cfg(test)]
        Parts::Reversed => (0..n).rev().for_each(|i| as_part(|| f(i))),
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
        Parts::Pool => {
            use rayon::prelude::*;
            out.par_chunks_mut(chunk_len)
                .enumerate()
                .for_each(|(i, c)| as_part(|| f(i, c)));
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
