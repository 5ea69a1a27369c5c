//! A persistent helper thread for splitting one frame's network between two threads.
//!
//! [`Helper::join`] runs two closures, one on the calling thread and one on the helper, and
//! returns when both are done, like `rayon::join` but with a thread of its own and without a
//! heap allocation per call: the closure stays on the caller's stack and the helper is told
//! where it is through an atomic hand-off. A frame issues a few dozen joins about 20-100 µs
//! apart, so both sides spin briefly (up to [`SPIN`]) before sleeping: a sleeping thread takes
//! tens of microseconds to wake, as long as a whole layer.
//!
//! Between frames the helper sleeps (`std::thread::park`), so an idle filter costs no CPU.
//! Waking takes tens of microseconds (21-38 µs on the 2-core VM, docs/devices.md), so a
//! caller that knows a frame is coming calls [`Helper::wake`] first (the worker does as it
//! starts pre-processing): the helper then spins, up to [`SPIN`], until the frame's first
//! hand-off.
//! When the helper has not picked up its half by the time the caller finished its own (a busy
//! machine: the helper is waiting for a core), the caller takes it back and runs it itself,
//! so two threads on a loaded machine cost little more than one. A helper that runs, but
//! slower than the caller (its core shared with other work), gets less: [`Balance`] learns
//! from each split's two times the caller's share at which both finish together.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a waiting side spins before it sleeps or yields: longer than the gap between two
/// layers of a frame, much shorter than the gap between frames.
const SPIN: Duration = Duration::from_micros(200);

const IDLE: u8 = 0;
const POSTED: u8 = 1;
const DONE: u8 = 2;
const STOP: u8 = 3;
/// The helper claimed the posted job and is running it.
const TAKEN: u8 = 4;
/// [`Helper::wake`]: no job yet, but one is coming; the helper wakes and spins.
const WAKE: u8 = 5;
/// The helper thread has not run yet ([`Helper::spawn`] waits until it has).
const STARTING: u8 = 6;

/// A type-erased `FnOnce` living on the caller's stack: `run(data)` takes it out and calls it.
#[derive(Clone, Copy)]
struct Job {
    run: unsafe fn(*mut ()),
    data: *mut (),
}

struct Inner {
    state: AtomicU8,
    job: UnsafeCell<Option<Job>>,
    panicked: AtomicBool,
}

// SAFETY: `job` is written by the caller only while the state is IDLE, WAKE or DONE (the helper
// does not touch it then) and read by the helper only after it observed POSTED (acquire), which the
// caller stores (release) after writing it.
unsafe impl Sync for Inner {}
unsafe impl Send for Inner {}

/// One extra thread that [`Helper::join`] hands half of the work to.
pub struct Helper {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
    /// How the work is best shared between the caller and this helper.
    pub balance: Balance,
}

/// The caller's share of a split layer that makes both threads finish together, learnt from
/// the times of the last few dozen splits: when the helper's core is shared with other work
/// (OBS's own threads, another program, a busy host) it runs its half slower, and an even
/// split would leave the caller waiting. Only where the split falls changes, never a value
/// (the kernels give the same bits at every row the split may fall on).
///
/// Each split `i` gave the caller a share `s_i` of the work and took `tc_i` on the caller and
/// `th_i` on the helper. With speeds `rc` and `rh` (work per ns), `tc_i = s_i W_i / rc` and
/// `th_i = (1 - s_i) W_i / rh`, so `sum (1 - s_i) tc_i / sum s_i th_i = rh / rc` whatever
/// the layers' work `W_i`, and the shares that balance them are `rc / (rc + rh)`. The sums
/// decay by [`Balance::DECAY`] per split (a frame has a few dozen).
#[derive(Clone, Debug)]
pub struct Balance {
    /// Decayed `sum (1 - s_i) tc_i` and `sum s_i th_i` (ns).
    caller: f64,
    helper: f64,
    /// The share of this frame ([`Balance::next_frame`]).
    share: f64,
}

impl Default for Balance {
    fn default() -> Self {
        Self {
            caller: 0.0,
            helper: 0.0,
            share: 0.5,
        }
    }
}

impl Balance {
    /// Weight kept per split: about the last 50 splits count.
    pub const DECAY: f64 = 0.98;
    /// The caller's share stays within `MIN_SHARE..=1 - MIN_SHARE`, so a helper that stalls
    /// once (a page fault, a preempted vCPU) cannot take all the work off it for long.
    pub const MIN_SHARE: f64 = 0.25;

    /// The caller's share (0..1) for this frame's splits: 0.5 before any split, then what
    /// balanced the two threads up to the last [`Balance::next_frame`].
    pub fn share(&self) -> f64 {
        self.share
    }

    /// Starts a frame: its share becomes the one that balances the splits recorded so far,
    /// so every layer of one size splits at the same row within a frame.
    pub fn next_frame(&mut self) {
        let total = self.caller + self.helper;
        if total > 0.0 {
            self.share = (self.helper / total).clamp(Self::MIN_SHARE, 1.0 - Self::MIN_SHARE);
        }
    }

    /// A balance that has seen so much that a few frames hardly move it: the caller's share
    /// is `share` from the next frame on (tests of the split).
    #[cfg(test)]
    pub(crate) fn leaning(share: f64) -> Self {
        Self {
            caller: (1.0 - share) * 1e15,
            helper: share * 1e15,
            share: 0.5,
        }
    }

    /// Adds one split: the caller's share of its work `share` (0..1), the caller's and the
    /// helper's time on their halves (any unit, the same for both).
    pub fn record(&mut self, share: f64, caller: f64, helper: f64) {
        self.caller = self.caller * Self::DECAY + (1.0 - share) * caller;
        self.helper = self.helper * Self::DECAY + share * helper;
    }
}

impl std::fmt::Debug for Helper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Helper")
    }
}

/// Spins until `done()` holds, then calls `sleep` between checks.
#[inline]
fn wait(mut done: impl FnMut() -> bool, sleep: impl Fn()) {
    let start = Instant::now();
    let mut spins = 0u32;
    while !done() {
        spins = spins.wrapping_add(1);
        if spins % 64 == 0 && start.elapsed() > SPIN {
            sleep();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// The helper thread's loop: waits (spinning, then parked) for a job, a wake hint or the
/// stop, and runs each job it claims.
fn helper_loop(theirs: &Inner) {
    loop {
        wait(
            || matches!(theirs.state.load(Ordering::Acquire), POSTED | STOP | WAKE),
            thread::park,
        );
        let claimed =
            theirs
                .state
                .compare_exchange(POSTED, TAKEN, Ordering::Acquire, Ordering::Relaxed);
        match claimed.unwrap_or_else(|now| now) {
            POSTED => {
                // SAFETY: see `Inner`; the caller keeps the closure alive until DONE.
                let job = unsafe { (*theirs.job.get()).take() };
                if let Some(job) = job {
                    let ok = std::panic::catch_unwind(|| unsafe { (job.run)(job.data) });
                    theirs.panicked.store(ok.is_err(), Ordering::Relaxed);
                }
                theirs.state.store(DONE, Ordering::Release);
            }
            STOP => return,
            // Back to waiting, with a fresh spin; a job posted meanwhile stays.
            WAKE => {
                let _ =
                    theirs
                        .state
                        .compare_exchange(WAKE, IDLE, Ordering::Relaxed, Ordering::Relaxed);
            }
            _ => std::hint::spin_loop(),
        }
    }
}

impl Helper {
    /// Starts the helper thread and returns once it runs: a new thread makes a heap
    /// allocation of its own as it starts (std's stack-overflow handler records the thread's
    /// info), which would otherwise come whenever the thread first gets a core, on a busy
    /// machine during a later frame (`tests/no_alloc.rs` failed about one run in four that
    /// way while a build ran beside it).
    ///
    /// # Errors
    /// When the operating system cannot start a thread.
    pub fn spawn() -> std::io::Result<Helper> {
        let inner = Arc::new(Inner {
            state: AtomicU8::new(STARTING),
            job: UnsafeCell::new(None),
            panicked: AtomicBool::new(false),
        });
        let theirs = Arc::clone(&inner);
        let thread = thread::Builder::new()
            .name("ai-background-net".into())
            .spawn(move || {
                theirs.state.store(IDLE, Ordering::Release);
                helper_loop(&theirs)
            })?;
        wait(
            || inner.state.load(Ordering::Acquire) != STARTING,
            thread::yield_now,
        );
        Ok(Helper {
            inner,
            thread: Some(thread),
            balance: Balance::default(),
        })
    }

    /// Tells the helper that a [`Helper::join`] is coming soon: a sleeping helper wakes now
    /// and spins for up to [`SPIN`], so the join does not wait for it to wake. Does nothing
    /// when the helper is already awake or busy. Call it a little ahead of the work (the
    /// wake-up takes tens of microseconds); a helper that gets no job within [`SPIN`]
    /// sleeps again. (The worker calls it before pre-processing, which took 0.44 ms at
    /// 1280x720 in `ai-background bench --threads 2`; even so the helper started the
    /// frame's first split layer 7 µs after it was posted instead of 30 µs, docs/devices.md,
    /// presumably because a vCPU that slept a moment ago wakes faster.)
    pub fn wake(&self) {
        let hinted =
            self.inner
                .state
                .compare_exchange(IDLE, WAKE, Ordering::Release, Ordering::Relaxed);
        if hinted.is_ok() {
            if let Some(t) = &self.thread {
                t.thread().unpark();
            }
        }
    }

    /// Runs `a` on the calling thread and `b` on the helper; returns `a`'s result once both
    /// have finished.
    ///
    /// # Panics
    /// Resumes a panic of `b` on the calling thread (after both sides finished), so the
    /// caller's own panic handling sees it; a panic of `a` waits for `b` first.
    pub fn join<A, B, R>(&mut self, a: A, b: B) -> R
    where
        A: FnOnce() -> R,
        B: FnOnce() + Send,
    {
        unsafe fn trampoline<B: FnOnce()>(data: *mut ()) {
            // SAFETY: `data` points at the `Option<B>` on `join`'s stack, alive until DONE.
            if let Some(f) = unsafe { (*(data as *mut Option<B>)).take() } {
                f();
            }
        }
        let mut slot = Some(b);
        // SAFETY: the helper is IDLE or WAKE (every join waits for DONE before it returns or
        // unwinds), so it does not read `job` now.
        unsafe {
            *self.inner.job.get() = Some(Job {
                run: trampoline::<B>,
                data: &mut slot as *mut Option<B> as *mut (),
            });
        }
        self.inner.state.store(POSTED, Ordering::Release);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
        /// Waits for the helper on every exit, unwinding included: it uses `slot`.
        struct WaitDone<'a>(&'a Inner);
        impl Drop for WaitDone<'_> {
            fn drop(&mut self) {
                wait(
                    || self.0.state.load(Ordering::Acquire) == DONE,
                    thread::yield_now,
                );
                self.0.state.store(IDLE, Ordering::Relaxed);
            }
        }
        let guard = WaitDone(&self.inner);
        let r = a();
        // Not picked up yet: take the job back and run it here.
        if self
            .inner
            .state
            .compare_exchange(POSTED, DONE, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            // SAFETY: the helper failed (or will fail) its claim, so it never reads `job` now.
            unsafe { *self.inner.job.get() = None };
            if let Some(b) = slot.take() {
                b();
            }
        }
        drop(guard);
        if self.inner.panicked.swap(false, Ordering::Relaxed) {
            panic!("the network's helper thread panicked");
        }
        r
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.inner.state.store(STOP, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The share starts even, stays fixed within a frame, and converges to the one at which
    /// both threads finish together: frames of splits whose times follow two fixed speeds
    /// (the helper 1.5x slower: 60 % to the caller), then the clamp for a helper 10x slower.
    #[test]
    fn balance_finds_the_share_that_finishes_both_together() {
        let mut b = Balance::default();
        assert_eq!(b.share(), 0.5);
        b.next_frame();
        assert_eq!(b.share(), 0.5, "nothing recorded yet");
        let frame = |b: &mut Balance, helper_slowdown: f64| {
            b.next_frame();
            let s = b.share();
            // Layers of different work, each split at the frame's share.
            for work in [10.0, 200.0, 35.0, 80.0] {
                b.record(s, s * work, (1.0 - s) * work * helper_slowdown);
                assert_eq!(b.share(), s, "the share changed within a frame");
            }
        };
        for _ in 0..30 {
            frame(&mut b, 1.5);
        }
        b.next_frame();
        assert!((b.share() - 0.6).abs() < 1e-9, "{}", b.share());
        for _ in 0..30 {
            frame(&mut b, 10.0);
        }
        b.next_frame();
        assert_eq!(b.share(), 1.0 - Balance::MIN_SHARE);
        for _ in 0..200 {
            frame(&mut b, 1.0);
        }
        b.next_frame();
        assert!((b.share() - 0.5).abs() < 1e-6, "{}", b.share());
    }

    #[test]
    fn join_runs_both_sides_and_sees_their_writes() {
        let mut h = Helper::spawn().unwrap();
        let mut left = vec![0u32; 1000];
        let mut right = vec![0u32; 1000];
        for round in 1..200u32 {
            let total = h.join(
                || {
                    left.iter_mut().for_each(|v| *v += round);
                    left[0]
                },
                || right.iter_mut().for_each(|v| *v += 2 * round),
            );
            assert_eq!(total, left[999]);
        }
        let sum = |v: &[u32]| v.iter().map(|&x| u64::from(x)).sum::<u64>();
        assert_eq!(sum(&right), 2 * sum(&left));
        assert_eq!(left[0], (1..200).sum::<u32>());
    }

    /// A wake reaches a helper asleep in `park` (it takes the hint and is back to waiting),
    /// and wakes at any moment (asleep, spinning, twice, just before a join, just before the
    /// helper stops) leave every join's results right.
    #[test]
    fn wake_reaches_a_sleeping_helper_and_joins_stay_right() {
        let mut h = Helper::spawn().unwrap();
        // Long past SPIN: the helper is asleep.
        thread::sleep(Duration::from_millis(20));
        h.wake();
        let deadline = Instant::now() + Duration::from_secs(10);
        while h.inner.state.load(Ordering::Acquire) == WAKE {
            assert!(
                Instant::now() < deadline,
                "the sleeping helper never took the wake"
            );
            thread::yield_now();
        }
        assert_eq!(h.inner.state.load(Ordering::Acquire), IDLE);
        let mut sum = 0u64;
        let mut other = 0u64;
        for round in 0..300u64 {
            match round % 4 {
                0 => h.wake(),
                1 => {
                    h.wake();
                    h.wake();
                }
                2 => {
                    h.wake();
                    thread::sleep(Duration::from_micros(round * 5));
                }
                _ => {}
            }
            let r = h.join(|| round, || other += round);
            sum += r;
        }
        assert_eq!(sum, (0..300).sum::<u64>());
        assert_eq!(other, sum);
        h.wake();
        drop(h);
    }

    #[test]
    fn a_panic_on_the_helper_reaches_the_caller_and_the_helper_survives() {
        let mut h = Helper::spawn().unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            h.join(|| 1, || panic!("boom"))
        }));
        assert!(r.is_err());
        let mut x = 0;
        assert_eq!(h.join(|| 7, || x = 3), 7);
        assert_eq!(x, 3);
    }
}
