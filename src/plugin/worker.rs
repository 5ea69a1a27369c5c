//! The per-instance worker thread: segmenter + mask post-processing off the render thread.
//!
//! The render thread [`Worker::submit`]s small BGRA frames into a one-slot mailbox (a newer
//! frame replaces one the worker has not started, so the worker always works on the newest
//! frame and never queues up). The worker owns a [`MaskPipeline`]; settings travel with each
//! frame, so changes apply on the next one. A model or device change swaps the segmenter,
//! loaded here, never on the render thread. The newest mask is published for
//! [`Worker::latest`]; nothing the render thread calls waits for inference (the locks it
//! takes are only held for pointer swaps).

use crate::device::DeviceChoice;
use crate::frame::{FrameRef, PixelFormat};
use crate::mask::Mask;
use crate::model::{shared_segmenter, Preset, SegmentationBackend, Segmenter};
use crate::obs::util::thread_cpu_time;
use crate::pipeline::{MaskPipeline, PipelineSettings};
use parking_lot::{Condvar, Mutex};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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

/// A finished mask.
#[derive(Debug)]
pub struct MaskResult {
    /// Person probability at the capture size, 0..1.
    pub mask: Mask,
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
    match open(key.device) {
        Ok(s) => Ok(s),
        Err(e) if !matches!(key.device, DeviceChoice::Auto | DeviceChoice::Cpu) => {
            log::warn!("{e}; falling back to the CPU");
            open(DeviceChoice::Cpu)
        }
        Err(e) => Err(e),
    }
}

fn run(shared: &Shared) {
    let mut loaded: Option<Loaded> = None;
    // The model selection that failed to load (not retried until the selection changes).
    let mut failed: Option<ModelKey> = None;
    let mut serial = 0u64;
    let mut spare: Option<Arc<MaskResult>> = None;
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
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            process(
                shared,
                &job,
                &mut loaded,
                &mut failed,
                &mut serial,
                &mut spare,
            )
        }));
        if let Err(e) = outcome {
            crate::obs::filter::log_panic("the worker thread", &e);
            loaded = None; // rebuild the pipeline from scratch on the next frame
        }
        recycle(shared, job.pixels);
    }
}

fn process(
    shared: &Shared,
    job: &Job,
    loaded: &mut Option<Loaded>,
    failed: &mut Option<ModelKey>,
    serial: &mut u64,
    spare: &mut Option<Arc<MaskResult>>,
) {
    if loaded.as_ref().is_none_or(|l| l.key != job.model) {
        if failed.as_ref() == Some(&job.model) {
            return;
        }
        *loaded = None;
        let t = Instant::now();
        match load(&job.model) {
            Ok(seg) => {
                let describe = seg.describe();
                log::info!(
                    "segmenter ready: {describe} ({} ms)",
                    t.elapsed().as_millis()
                );
                let mut stats = shared.stats.lock();
                stats.model = describe;
                stats.model_id = Arc::as_ptr(&seg) as usize;
                stats.error = None;
                drop(stats);
                *failed = None;
                let backend: Arc<dyn SegmentationBackend> = seg;
                *loaded = Some(Loaded {
                    key: job.model.clone(),
                    pipeline: MaskPipeline::new(backend),
                });
            }
            Err(e) => {
                log::error!("cannot load the segmenter, passing the video through: {e}");
                shared.stats.lock().error = Some(e);
                *failed = Some(job.model.clone());
                *shared.latest.lock() = None;
                return;
            }
        }
    }
    let Some(l) = loaded.as_mut() else { return };
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
            return;
        }
    };
    let (t0, c0) = (Instant::now(), thread_cpu_time());
    let mask = match l.pipeline.process(&frame, &job.pipeline) {
        Ok(m) => m,
        Err(e) => {
            let msg = e.to_string();
            let mut stats = shared.stats.lock();
            if stats.error.as_deref() != Some(msg.as_str()) {
                log::error!("segmentation failed: {msg}");
                stats.error = Some(msg);
            }
            return;
        }
    };
    let (wall, cpu) = (t0.elapsed(), thread_cpu_time().saturating_sub(c0));
    *serial += 1;
    // Double buffering: fill the result published two masks ago if the render thread has
    // let go of it, then swap it in (the lock is held for a pointer swap only).
    let mut next = spare
        .take()
        .filter(|a| Arc::strong_count(a) == 1 && Arc::weak_count(a) == 0)
        .unwrap_or_else(|| {
            Arc::new(MaskResult {
                mask: Mask::default(),
                frame: 0,
                serial: 0,
            })
        });
    if let Some(r) = Arc::get_mut(&mut next) {
        r.mask.clone_from(mask);
        r.frame = job.frame;
        r.serial = *serial;
    }
    *spare = shared.latest.lock().replace(next);
    let inference = l.pipeline.timings().inference;
    let mut stats = shared.stats.lock();
    stats.frames += 1;
    stats.wall += wall;
    stats.cpu += cpu;
    stats.inference += inference;
    stats.error = None;
}
