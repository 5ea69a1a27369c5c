//! The per-instance worker thread: segmenter + mask post-processing off the render thread.
//!
//! The render thread [`Worker::submit`]s small BGRA frames into a one-slot mailbox (a newer
//! frame replaces one the worker has not started, so the worker always works on the newest
//! frame and never queues up). The worker owns a [`MaskPipeline`]; settings travel with each
//! frame, so changes apply on the next one. A model or device change swaps the segmenter,
//! loaded here, never on the render thread. Custom weights that cannot be loaded keep the
//! segmenter that was running (with none, the built-in weights of the same preset), with one
//! log line per selection and [`WorkerStats::weights_error`] for the dialog's status line. The newest mask is published for
//! [`Worker::latest`]; nothing the render thread calls waits for inference (the locks it
//! takes are only held for pointer swaps).
//!
//! Faults: when a frame cannot give a mask (a caught panic, an inference error, a mask with
//! NaN or infinite values) the worker withdraws the published mask (the filter then passes
//! the video through instead of freezing an old mask), logs once, and skips frames for a
//! back-off ([`RETRY_FIRST`], doubling up to [`RETRY_MAX`]) before it tries again; the first
//! mask after a fault is logged once more. [`Worker::inject_faults`] makes the next frames
//! fail on purpose (the headless tests use it through the filter's
//! `ai_background_inject_fault` proc).

use crate::device::DeviceChoice;
use crate::frame::{FrameRef, PixelFormat};
use crate::mask::Mask;
use crate::model::{shared_segmenter, Preset, SegmentationBackend, Segmenter};
use crate::obs::util::thread_cpu_time;
use crate::pipeline::{MaskPipeline, PipelineSettings, ThreadChoice};
use parking_lot::{Condvar, Mutex};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// Wait after the first failed frame before the worker tries again (100 ms: three frames at
/// 30 fps, short enough that a one-off fault costs no visible time).
pub const RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest wait between two attempts while frames keep failing (the wait doubles per failure
/// up to this: a persistent fault costs one failed frame per 5 s).
pub const RETRY_MAX: Duration = Duration::from_secs(5);

/// Worker threads running in this process (all filter instances).
static LIVE_WORKERS: AtomicUsize = AtomicUsize::new(0);

/// Number of worker threads currently running in this process.
pub fn live_workers() -> usize {
    LIVE_WORKERS.load(Ordering::SeqCst)
}

/// What selects the segmenter: a change reloads it (on the worker).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelKey {
    /// Model preset.
    pub preset: Preset,
    /// Requested device.
    pub device: DeviceChoice,
    /// Custom weights file, empty for the embedded weights.
    pub weights: PathBuf,
    /// The file's modification time when the settings were read: a file rewritten in place
    /// is a new selection (loaded again, or retried after a failure).
    pub weights_modified: Option<SystemTime>,
}

impl ModelKey {
    /// The same preset and device with the embedded weights.
    fn built_in(&self) -> ModelKey {
        ModelKey {
            weights: PathBuf::new(),
            weights_modified: None,
            ..self.clone()
        }
    }
}

/// A fault [`Worker::inject_faults`] makes the worker act out, as the real ones would show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A panic inside the pipeline (caught by the worker).
    Panic,
    /// An inference error returned by the segmenter.
    Error,
    /// A mask holding NaN (as NaN weights or a broken device give).
    NonFinite,
}

impl std::str::FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "panic" => Ok(Fault::Panic),
            "error" => Ok(Fault::Error),
            "nan" => Ok(Fault::NonFinite),
            _ => Err(format!("unknown fault '{s}' (panic, error, nan)")),
        }
    }
}

/// One frame for the worker: tightly or loosely packed BGRA rows.
pub struct Job {
    /// Pixels, `height` rows of `stride` bytes.
    pub pixels: Vec<u8>,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Bytes per row.
    pub stride: usize,
    /// Render-thread frame number the pixels were captured on.
    pub frame: u64,
    /// Model selection.
    pub model: ModelKey,
    /// Pipeline settings for this frame.
    pub pipeline: PipelineSettings,
}

/// A finished mask, as guided-filter coefficients ([`crate::pipeline::MaskCoefficients`]):
/// the person probability at a frame pixel is `clamp(A * I + b, 0, 1)` with `A` (`gain`) and
/// `b` (`mask`) sampled bilinearly and `I` the pixel's luma; without refinement `gain` is
/// empty (0 x 0) and `mask` is the probability.
#[derive(Debug)]
pub struct MaskResult {
    /// Offset `b`: the person probability (0..1) at the model size without refinement; with
    /// refinement the coefficient `b` at the capture size.
    pub mask: Mask,
    /// Gain `A` on the frame's luma at the capture size; empty without refinement.
    pub gain: Mask,
    /// Band (probability units) of the full-resolution hold of the refined probability for
    /// this mask ([`crate::pipeline::MaskCoefficients::hold_band`]; 0: pass through and
    /// restart the hold).
    pub hold_band: f32,
    /// The frame number the mask was computed from.
    pub frame: u64,
    /// Increases by one per published mask.
    pub serial: u64,
}

/// Counters for the stats proc and the benchmark.
#[derive(Clone, Debug, Default)]
pub struct WorkerStats {
    /// Frames processed.
    pub frames: u64,
    /// Frames replaced in the mailbox before the worker took them.
    pub replaced: u64,
    /// Total wall time inside the pipeline.
    pub wall: Duration,
    /// Total CPU time of the worker thread inside the pipeline (the network's own thread
    /// pool, if any, is not included).
    pub cpu: Duration,
    /// Total model inference wall time (from the pipeline's stage timings).
    pub inference: Duration,
    /// The segmenter in use ("candle landscape on cpu").
    pub model: String,
    /// Address of the shared segmenter (equal across instances that share it).
    pub model_id: usize,
    /// The last error, if the worker cannot produce masks.
    pub error: Option<String>,
    /// The custom weights selection the worker refused, and why (the previous model, or the
    /// built-in weights, keep running). Cleared by the next successful load.
    pub weights_error: Option<(ModelKey, String)>,
    /// Frames that failed (panic, inference error, non-finite mask) since the start.
    pub faults: u64,
    /// Frames skipped while waiting to retry after a fault.
    pub backoff_skipped: u64,
    /// Frames asked for 2 CPU threads that ran on 1, the faster there ([`ThreadChoice`]).
    pub single_thread_frames: u64,
}

#[derive(Default)]
struct Inbox {
    job: Option<Job>,
    stop: bool,
}

struct Shared {
    inbox: Mutex<Inbox>,
    wake: Condvar,
    latest: Mutex<Option<Arc<MaskResult>>>,
    spare: Mutex<Vec<Vec<u8>>>,
    stats: Mutex<WorkerStats>,
    /// Injected faults still to act out: (kind, frames).
    injected: Mutex<Option<(Fault, u32)>>,
}

/// Handle to a worker thread; stops and joins it on drop.
pub struct Worker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts a worker thread named `name`.
    ///
    /// # Errors
    /// When the OS cannot start a thread.
    pub fn spawn(name: &str) -> std::io::Result<Worker> {
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Inbox::default()),
            wake: Condvar::new(),
            latest: Mutex::new(None),
            spare: Mutex::new(Vec::new()),
            stats: Mutex::new(WorkerStats::default()),
            injected: Mutex::new(None),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                LIVE_WORKERS.fetch_add(1, Ordering::SeqCst);
                run(&s);
                LIVE_WORKERS.fetch_sub(1, Ordering::SeqCst);
            })?;
        Ok(Worker {
            shared,
            thread: Some(thread),
        })
    }

    /// A pixel buffer to fill (recycled from earlier jobs when possible).
    pub fn buffer(&self) -> Vec<u8> {
        self.shared.spare.lock().pop().unwrap_or_default()
    }

    /// Puts `job` in the mailbox, replacing a job the worker has not started.
    pub fn submit(&self, job: Job) {
        let old = {
            let mut inbox = self.shared.inbox.lock();
            inbox.job.replace(job)
        };
        self.shared.wake.notify_one();
        if let Some(old) = old {
            self.shared.stats.lock().replaced += 1;
            recycle(&self.shared, old.pixels);
        }
    }

    /// The newest mask, if any.
    pub fn latest(&self) -> Option<Arc<MaskResult>> {
        self.shared.latest.lock().clone()
    }

    /// A copy of the counters.
    pub fn stats(&self) -> WorkerStats {
        self.shared.stats.lock().clone()
    }

    /// Makes the next `frames` frames the worker processes fail with `fault` (a test hook:
    /// the fault goes through the same path as a real one).
    pub fn inject_faults(&self, fault: Fault, frames: u32) {
        *self.shared.injected.lock() = (frames > 0).then_some((fault, frames));
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let t0 = Instant::now();
        self.shared.inbox.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        log::debug!(
            "worker stopped and joined in {:.1} ms",
            t0.elapsed().as_secs_f64() * 1e3
        );
    }
}

fn recycle(shared: &Shared, buf: Vec<u8>) {
    let mut spare = shared.spare.lock();
    if spare.len() < 3 {
        spare.push(buf);
    }
}

/// The loaded segmenter and the pipeline running it.
struct Loaded {
    key: ModelKey,
    pipeline: MaskPipeline,
    /// With "CPU threads" at 2: whether a frame runs on 2 threads or on 1 (2 only while
    /// faster), per model.
    threads: ThreadChoice,
    /// The first fall-back to 1 thread has been logged.
    fallback_logged: bool,
}

fn load(key: &ModelKey) -> Result<Arc<Segmenter>, String> {
    let open = |device: DeviceChoice| -> Result<Arc<Segmenter>, String> {
        if key.weights.as_os_str().is_empty() {
            shared_segmenter(key.preset, device).map_err(|e| e.to_string())
        } else {
            let dev = device.resolve().map_err(|e| e.to_string())?;
            Segmenter::from_file(&key.weights, key.preset, &dev)
                .map(Arc::new)
                .map_err(|e| e.to_string())
        }
    };
    let seg = match open(key.device) {
        Ok(s) => s,
        Err(e) if !matches!(key.device, DeviceChoice::Auto | DeviceChoice::Cpu) => {
            log::warn!("{e}; falling back to the CPU");
            open(DeviceChoice::Cpu)?
        }
        Err(e) => return Err(e),
    };
    probe(seg.as_ref()).map_err(|e| {
        if key.weights.as_os_str().is_empty() {
            e
        } else {
            format!("{}: {e}", key.weights.display())
        }
    })?;
    Ok(seg)
}

/// Runs the network once on a mid-grey input (0.5 in every channel, the model's input size)
/// and refuses a segmenter whose output is not finite: weights holding NaN or infinities, or
/// a device computing garbage, are reported at load instead of compositing a NaN mask. Costs
/// one inference (2-5 ms on the CPU) per model load.
fn probe(seg: &dyn SegmentationBackend) -> Result<(), String> {
    let (w, h) = seg.input_size();
    let input = vec![0.5f32; 3 * w * h];
    let mut output = vec![0f32; w * h];
    seg.segment(&input, &mut output)
        .map_err(|e| format!("{}: test inference failed: {e}", seg.describe()))?;
    match output.iter().find(|v| !v.is_finite()) {
        Some(bad) => Err(format!(
            "{} gives non-finite probabilities ({bad}) on a grey test frame: \
             do the weights hold NaN or infinite values?",
            seg.describe()
        )),
        None => Ok(()),
    }
}

/// What became of one frame.
enum Outcome {
    /// A mask was published.
    Published,
    /// Nothing to do (no segmenter, a bad capture): not a fault.
    Skipped,
    /// The frame could not give a mask.
    Failed(String),
}

/// Failures in a row and when to try again.
#[derive(Default)]
struct Health {
    failures: u32,
    retry_at: Option<Instant>,
}

impl Health {
    /// Wait after the `n`-th failure in a row: [`RETRY_FIRST`] doubled per failure, at most
    /// [`RETRY_MAX`].
    fn backoff(n: u32) -> Duration {
        RETRY_FIRST
            .saturating_mul(1u32 << n.saturating_sub(1).min(16))
            .min(RETRY_MAX)
    }
}

fn run(shared: &Shared) {
    let mut loaded: Option<Loaded> = None;
    // The model selection that failed to load (not retried until the selection changes).
    let mut failed: Option<ModelKey> = None;
    let mut serial = 0u64;
    let mut spare: Option<Arc<MaskResult>> = None;
    let mut health = Health::default();
    loop {
        let job = {
            let mut inbox = shared.inbox.lock();
            loop {
                if inbox.stop {
                    return;
                }
                if let Some(job) = inbox.job.take() {
                    break job;
                }
                shared.wake.wait(&mut inbox);
            }
        };
        // In back-off, frames wait; a different model selection is tried at once.
        // A refused custom file keeps the previous model: that one is in use for this job.
        let same_model = loaded
            .as_ref()
            .is_some_and(|l| l.key == job.model || failed.as_ref() == Some(&job.model));
        if same_model && health.retry_at.is_some_and(|t| Instant::now() < t) {
            shared.stats.lock().backoff_skipped += 1;
            recycle(shared, job.pixels);
            continue;
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            process(
                shared,
                &job,
                &mut loaded,
                &mut failed,
                &mut serial,
                &mut spare,
            )
        }))
        .unwrap_or_else(|e| Outcome::Failed(format!("panic: {}", panic_message(&e))));
        match outcome {
            Outcome::Published => {
                if health.failures > 0 {
                    log::info!(
                        "masks are back after {} failed attempt(s); compositing again",
                        health.failures
                    );
                }
                health = Health::default();
            }
            Outcome::Skipped => {}
            Outcome::Failed(msg) => {
                health.failures += 1;
                let wait = Health::backoff(health.failures);
                health.retry_at = Some(Instant::now() + wait);
                // Never composite with an old mask: the render thread passes through.
                *shared.latest.lock() = None;
                if let Some(l) = loaded.as_mut() {
                    l.pipeline.reset();
                }
                if health.failures == 1 {
                    log::error!(
                        "cannot produce masks ({msg}); passing the video through, retrying in {} ms",
                        wait.as_millis()
                    );
                }
                let mut stats = shared.stats.lock();
                stats.faults += 1;
                stats.error = Some(msg);
            }
        }
        recycle(shared, job.pixels);
    }
}

/// The message of a caught panic.
fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

fn process(
    shared: &Shared,
    job: &Job,
    loaded: &mut Option<Loaded>,
    failed: &mut Option<ModelKey>,
    serial: &mut u64,
    spare: &mut Option<Arc<MaskResult>>,
) -> Outcome {
    if loaded.as_ref().is_none_or(|l| l.key != job.model) && failed.as_ref() != Some(&job.model) {
        let t = Instant::now();
        let custom = !job.model.weights.as_os_str().is_empty();
        let result = load(&job.model);
        if let Err(e) = &result {
            *failed = Some(job.model.clone());
            if custom {
                shared.stats.lock().weights_error = Some((job.model.clone(), e.clone()));
            }
        }
        // A custom file that cannot be used keeps the previous model; with none running,
        // the built-in weights of the same preset take its place.
        let result = match result {
            Err(e) if custom => match loaded.as_ref() {
                Some(l) => {
                    log::error!(
                        "cannot load the custom weights, keeping the model in use ({}): {e}",
                        l.pipeline.backend().describe()
                    );
                    None
                }
                None => {
                    log::error!(
                        "cannot load the custom weights, using the built-in {} weights: {e}",
                        job.model.preset
                    );
                    let key = job.model.built_in();
                    Some(load(&key).map(|seg| (key, seg)))
                }
            },
            other => Some(other.map(|seg| (job.model.clone(), seg))),
        };
        match result {
            None => {}
            Some(Ok((key, seg))) => {
                let describe = seg.describe();
                log::info!(
                    "segmenter ready: {describe} ({} ms)",
                    t.elapsed().as_millis()
                );
                let mut stats = shared.stats.lock();
                stats.model = describe;
                stats.model_id = Arc::as_ptr(&seg) as usize;
                stats.error = None;
                if key == job.model {
                    stats.weights_error = None;
                    *failed = None;
                }
                drop(stats);
                let backend: Arc<dyn SegmentationBackend> = seg;
                *loaded = Some(Loaded {
                    key,
                    pipeline: MaskPipeline::new(backend),
                    threads: ThreadChoice::default(),
                    fallback_logged: false,
                });
            }
            Some(Err(e)) => {
                log::error!("cannot load the segmenter, passing the video through: {e}");
                shared.stats.lock().error = Some(e);
                *loaded = None;
                *shared.latest.lock() = None;
                return Outcome::Skipped;
            }
        }
    }
    let Some(l) = loaded.as_mut() else {
        return Outcome::Skipped;
    };
    let frame = match FrameRef::new(
        &job.pixels,
        job.width,
        job.height,
        job.stride,
        PixelFormat::Bgra,
    ) {
        Ok(f) => f,
        Err(e) => {
            log::warn!("skipping a captured frame: {e}");
            return Outcome::Skipped;
        }
    };
    let injected = {
        let mut slot = shared.injected.lock();
        let fault = slot.map(|(f, _)| f);
        *slot = slot.and_then(|(f, n)| (n > 1).then_some((f, n - 1)));
        fault
    };
    let (t0, c0) = (Instant::now(), thread_cpu_time());
    if injected == Some(Fault::Panic) {
        panic!("injected test fault");
    }
    let asked = job.pipeline.threads;
    let settings = PipelineSettings {
        threads: l.threads.pick(asked),
        ..job.pipeline
    };
    let coef = match l.pipeline.coefficients(&frame, &settings) {
        Ok(_) if injected == Some(Fault::Error) => {
            return Outcome::Failed("inference error: injected test fault".into())
        }
        Ok(m) => m,
        Err(e) => return Outcome::Failed(format!("inference error: {e}")),
    };
    let (wall, cpu) = (t0.elapsed(), thread_cpu_time().saturating_sub(c0));
    // Double buffering: fill the result published two masks ago if the render thread has
    // let go of it, then swap it in (the lock is held for a pointer swap only).
    let mut next = spare
        .take()
        .filter(|a| Arc::strong_count(a) == 1 && Arc::weak_count(a) == 0)
        .unwrap_or_else(|| {
            Arc::new(MaskResult {
                mask: Mask::default(),
                gain: Mask::default(),
                hold_band: 0.0,
                frame: 0,
                serial: 0,
            })
        });
    let Some(r) = Arc::get_mut(&mut next) else {
        return Outcome::Skipped;
    };
    r.mask.clone_from(coef.b);
    r.hold_band = coef.hold_band;
    match coef.a {
        Some(a) => r.gain.clone_from(a),
        None => r.gain.set_size(0, 0),
    }
    if injected == Some(Fault::NonFinite) {
        if let Some(v) = r.mask.data.first_mut() {
            *v = f32::NAN;
        }
    }
    // A NaN or infinite probability would composite as garbage (NaN weights, a faulty
    // device): never publish one.
    if let Some(bad) = r
        .mask
        .data
        .iter()
        .chain(&r.gain.data)
        .find(|v| !v.is_finite())
    {
        let msg = format!("the segmenter gave a non-finite probability ({bad})");
        *spare = Some(next);
        return Outcome::Failed(msg);
    }
    *serial += 1;
    r.frame = job.frame;
    r.serial = *serial;
    *spare = shared.latest.lock().replace(next);
    let inference = l.pipeline.timings().inference;
    if asked >= 2 {
        l.threads.record(settings.threads, inference);
        if let [Some(one), Some(two)] = l.threads.means() {
            if l.threads.preferred() == 1 && !l.fallback_logged {
                log::info!(
                    "CPU threads 2: {two:.1} ms a frame against {one:.1} ms on 1 thread (other \
                     work holds the second core); running on 1 while that holds, trying 2 \
                     every {} frames",
                    ThreadChoice::PROBE_EVERY
                );
                l.fallback_logged = true;
            }
        }
    }
    let mut stats = shared.stats.lock();
    if asked >= 2 && settings.threads == 1 {
        stats.single_thread_frames += 1;
    }
    stats.frames += 1;
    stats.wall += wall;
    stats.cpu += cpu;
    stats.inference += inference;
    stats.error = None;
    Outcome::Published
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_100_ms_to_5_s() {
        let ms: Vec<u128> = (1..=9).map(|n| Health::backoff(n).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(Health::backoff(u32::MAX), RETRY_MAX);
    }

    /// A backend that answers every pixel with `value`.
    struct Constant(f32);

    impl SegmentationBackend for Constant {
        fn input_size(&self) -> (usize, usize) {
            (16, 9)
        }

        fn segment(&self, _input: &[f32], output: &mut [f32]) -> crate::error::Result<()> {
            output.fill(self.0);
            Ok(())
        }

        fn describe(&self) -> String {
            format!("constant {}", self.0)
        }
    }

    #[test]
    fn probe_refuses_non_finite_output() {
        assert!(probe(&Constant(0.3)).is_ok());
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let e = probe(&Constant(bad)).unwrap_err();
            assert!(e.contains("non-finite"), "{e}");
        }
    }

    #[test]
    fn probe_refuses_nan_weights_of_the_real_network() {
        use crate::model::Preset;
        let mut bytes = Preset::Landscape.embedded_weights().to_vec();
        // Every float16 value of the data section (after the 8-byte length and the JSON
        // header) becomes NaN (0x7E00).
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        for v in bytes[8 + n..].chunks_exact_mut(2) {
            v.copy_from_slice(&[0x00, 0x7E]);
        }
        let device = candle_core::Device::Cpu;
        match Segmenter::from_bytes(&bytes, Preset::Landscape, &device, "nan weights") {
            // The engine may refuse them itself; if it loads them the probe must.
            Err(_) => {}
            Ok(seg) => assert!(probe(&seg).is_err()),
        }
    }

    #[test]
    fn fault_names() {
        assert_eq!("panic".parse::<Fault>(), Ok(Fault::Panic));
        assert_eq!("error".parse::<Fault>(), Ok(Fault::Error));
        assert_eq!("nan".parse::<Fault>(), Ok(Fault::NonFinite));
        assert!("oops".parse::<Fault>().is_err());
    }
}
