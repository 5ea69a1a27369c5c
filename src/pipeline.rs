//! The per-frame mask pipeline: frame → model input → person probability → smoothing →
//! upsampling → edge refinement. One [`MaskPipeline`] per video stream (per OBS filter
//! worker, per CLI run); the segmenter behind it can be shared.
//!
//! Edge refinement is a fast guided filter (He and Sun 2015, arXiv:1505.00996) split in two:
//! [`MaskPipeline::coefficients`] computes the linear coefficients `(A, b)` at the refinement
//! capture size ([`RefineSettings::capture_size`], what the OBS worker gets), and
//! [`MaskPipeline::process`] applies `q = A * I + b` with the full-resolution luma `I`
//! ([`GuidedUpsampler`]), as the OBS effect does per pixel.

use crate::frame::{FrameRef, PixelFormat};
use crate::mask::Mask;
use crate::model::SegmentationBackend;
use crate::postprocess::{
    flush_tiny, input_luma, refined_band, GuidedFilter, GuidedUpsampler, RefineSettings,
    RefinedHold, SceneCutDetector, TemporalSmoother, MIN_REFINED_IOU,
};
use crate::preprocess::{PlaneResizer, Preprocessor};
use crate::Result;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Default temporal smoothing strength (0..1).
pub const DEFAULT_SMOOTHING: f32 = 0.5;

/// Per-frame settings of the pipeline; cheap to copy, so they can travel with every frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PipelineSettings {
    /// Temporal smoothing strength, 0 (off) ..1 (see [`TemporalSmoother`]).
    pub smoothing: f32,
    /// Guided-filter edge refinement with the frame as guide.
    pub refine: bool,
    /// Radius and epsilon of the refinement.
    pub refine_settings: RefineSettings,
    /// CPU threads for the network: 1 (the calling thread), or 2 with a helper thread that
    /// takes half of every layer ([`crate::model::fused`]; other back ends ignore it).
    pub threads: usize,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            smoothing: DEFAULT_SMOOTHING,
            refine: false,
            refine_settings: RefineSettings::default(),
            threads: 1,
        }
    }
}

/// Wall time of each stage of the last [`MaskPipeline::process`] call.
#[derive(Clone, Copy, Debug, Default)]
pub struct StageTimings {
    /// Frame to model input.
    pub preprocess: Duration,
    /// The network.
    pub inference: Duration,
    /// Smoothing, upsampling and refinement.
    pub postprocess: Duration,
}

/// Whether a frame asked to run the network on 2 CPU threads runs on 2 or on 1: on 2 only
/// while they are measured faster. On a 2-core machine whose other core is busy (OBS
/// rendering on the CPU, an encoder, a game) the helper thread waits for that core at every
/// layer, and 2 threads can take longer than 1 (inside OBS on a 2-vCPU VM with Mesa
/// llvmpipe: 5.9-6.1 ms a frame against 3.4-3.9 ms, docs/obs-plugin.md, "Two CPU threads
/// inside OBS").
///
/// It keeps a decayed mean of the inference time (ms) of the frames run on each count (after
/// the first [`ThreadChoice::WARMUP`] frames, which grow buffers), runs the faster count, and
/// the other one on the frame after [`ThreadChoice::FIRST_PROBE_AFTER`] more and then every
/// [`ThreadChoice::PROBE_EVERY`]-th frame, so that a change of load is seen within a few
/// seconds at 30 fps. The network's output is the same bits on either count
/// (`tests/parity.rs`, `two_threads_equal_one`), so a switch never shows.
#[derive(Clone, Debug, Default)]
pub struct ThreadChoice {
    /// Decayed mean inference time (ms) on 1 and on 2 threads; `None` before the first frame.
    mean: [Option<f64>; 2],
    /// Frames asked for 2 threads since the last probe of the other count.
    since_probe: u32,
    /// Frames asked for 2 threads.
    frames: u64,
}

impl ThreadChoice {
    /// One frame in this many runs on the count that is not the faster one (at 30 fps, one
    /// a second: on a quiet machine where 2 threads run 1.6x faster, about 2 % more time on
    /// average).
    pub const PROBE_EVERY: u32 = 30;
    /// Weight of a new frame in its count's mean (about the last 4 frames of a count count).
    pub const WEIGHT: f64 = 0.25;
    /// Frames not measured at the start: the first frames grow and zero the buffers (a
    /// first frame took several ms more in the OBS bench, docs/obs-plugin.md).
    pub const WARMUP: u64 = 3;
    /// Measured frames on 2 threads before the first frame on 1.
    pub const FIRST_PROBE_AFTER: u64 = 5;

    /// The thread count (1 or 2) that is faster so far: 2 until 1 has been measured faster.
    pub fn preferred(&self) -> usize {
        match self.mean {
            [Some(one), Some(two)] if one < two => 1,
            _ => 2,
        }
    }

    /// The count to run this frame on, for `asked` threads (the setting): `asked` when it is
    /// 1, otherwise [`ThreadChoice::preferred`] or, on a probe frame, the other count.
    pub fn pick(&mut self, asked: usize) -> usize {
        if asked < 2 {
            return 1;
        }
        self.frames += 1;
        self.since_probe += 1;
        let preferred = self.preferred();
        let other = 3 - preferred;
        let first =
            self.mean[other - 1].is_none() && self.frames > Self::WARMUP + Self::FIRST_PROBE_AFTER;
        if first || self.since_probe >= Self::PROBE_EVERY {
            self.since_probe = 0;
            other
        } else {
            preferred
        }
    }

    /// Adds the inference time on `threads` (1 or 2) of the frame [`ThreadChoice::pick`]
    /// chose last (not measured among the first [`ThreadChoice::WARMUP`]).
    pub fn record(&mut self, threads: usize, inference: Duration) {
        if self.frames <= Self::WARMUP {
            return;
        }
        let ms = inference.as_secs_f64() * 1e3;
        let slot = &mut self.mean[threads.clamp(1, 2) - 1];
        *slot = Some(slot.map_or(ms, |m| m + Self::WEIGHT * (ms - m)));
    }

    /// The decayed mean inference times (ms) on 1 and on 2 threads, where measured.
    pub fn means(&self) -> [Option<f64>; 2] {
        self.mean
    }
}

/// The mask as the pipeline hands it to a compositor: the person probability is
/// `clamp(A * I + b, 0, 1)` with `A` and `b` sampled bilinearly (half-pixel centres,
/// clamp-to-edge) at each frame pixel and `I` the pixel's Rec. 601 luma (0..1, sRGB-encoded);
/// without refinement `A` is absent (0) and `b` is the probability itself.
#[derive(Clone, Copy, Debug)]
pub struct MaskCoefficients<'a> {
    /// Offset `b` (the probability without refinement), at the model size, or at the
    /// refinement capture size with refinement.
    pub b: &'a Mask,
    /// Gain `A` on the luma, same size as `b`; `None` without refinement.
    pub a: Option<&'a Mask>,
    /// Band (probability units) of this frame's hold of the refined probability at full
    /// resolution ([`RefinedHold::apply`] with the frame's luma, after `clamp(A * I + b, 0,
    /// 1)`): 0 without refinement or smoothing, and when the hold restarts (pass the values
    /// through and only fill the state).
    pub hold_band: f32,
}

/// Runs the segmenter on a stream of frames and returns the person probability at frame size.
///
/// Temporal state (smoothing) is reset when the frame size changes and on scene cuts.
pub struct MaskPipeline {
    backend: Arc<dyn SegmentationBackend>,
    pre: Preprocessor,
    probability: Vec<f32>,
    /// Luma of the model input, for the scene-cut detector and the smoother.
    input_luma: Vec<f32>,
    smoother: TemporalSmoother,
    cuts: SceneCutDetector,
    frame_size: (usize, usize),
    mask: Mask,
    guide: Vec<f32>,
    guide_small: Vec<f32>,
    p_capture: Vec<f32>,
    coef_a: Mask,
    coef_b: Mask,
    refined: bool,
    guided: GuidedFilter,
    upsampler: GuidedUpsampler,
    /// The full-resolution hold of the refined probability (CPU reference of the effect's).
    hold: RefinedHold,
    /// The same hold at the capture size, which finds each frame's band.
    hold_proxy: RefinedHold,
    q_capture: Vec<f32>,
    hold_band: f32,
    hold_strength: f32,
    resizer: PlaneResizer,
    /// The probability to the refinement capture size: a resizer of its own keeps its
    /// sample tables (the guide's sizes differ), so a warm frame allocates nothing.
    p_resizer: PlaneResizer,
    timings: StageTimings,
}

impl MaskPipeline {
    /// A pipeline running `backend`.
    pub fn new(backend: Arc<dyn SegmentationBackend>) -> Self {
        let (w, h) = backend.input_size();
        Self {
            backend,
            pre: Preprocessor::new(w, h),
            probability: vec![0.0; w * h],
            input_luma: Vec::new(),
            smoother: TemporalSmoother::default(),
            cuts: SceneCutDetector::default(),
            frame_size: (0, 0),
            mask: Mask::default(),
            guide: Vec::new(),
            guide_small: Vec::new(),
            p_capture: Vec::new(),
            coef_a: Mask::default(),
            coef_b: Mask::default(),
            refined: false,
            guided: GuidedFilter::default(),
            upsampler: GuidedUpsampler::default(),
            hold: RefinedHold::default(),
            hold_proxy: RefinedHold::default(),
            q_capture: Vec::new(),
            hold_band: 0.0,
            hold_strength: 0.0,
            resizer: PlaneResizer::default(),
            p_resizer: PlaneResizer::default(),
            timings: StageTimings::default(),
        }
    }

    /// The segmenter this pipeline runs.
    pub fn backend(&self) -> &Arc<dyn SegmentationBackend> {
        &self.backend
    }

    /// Forgets all temporal state (call after a seek, a source switch).
    pub fn reset(&mut self) {
        self.smoother.reset();
        self.hold.reset();
        self.hold_proxy.reset();
        self.cuts.reset();
    }

    /// Stage timings of the last call to [`MaskPipeline::process`].
    pub fn timings(&self) -> StageTimings {
        self.timings
    }

    /// Segments one frame and returns the person probability (0..1) at the frame's size:
    /// [`MaskPipeline::coefficients`], then `b` upsampled bilinearly, or with refinement
    /// `clamp(A * I + b, 0, 1)` with the frame's own luma `I` ([`GuidedUpsampler`]), held
    /// where the picture is still ([`RefinedHold`], with smoothing above 0).
    ///
    /// # Errors
    /// [`crate::EngineError::Inference`] when the network fails on its device.
    pub fn process(&mut self, frame: &FrameRef<'_>, settings: &PipelineSettings) -> Result<&Mask> {
        self.coefficients(frame, settings)?;
        let t = Instant::now();
        let (fw, fh) = (frame.width(), frame.height());
        self.mask.set_size(fw, fh);
        let b = &self.coef_b;
        if self.refined {
            self.upsampler.apply(
                &self.coef_a.data,
                &b.data,
                (b.width, b.height),
                &self.guide,
                (fw, fh),
                &mut self.mask.data,
            );
            self.hold
                .apply(&mut self.mask.data, &self.guide, (fw, fh), self.hold_band);
        } else {
            self.hold.reset();
            self.resizer
                .resize(&b.data, (b.width, b.height), &mut self.mask.data, (fw, fh));
        }
        self.timings.postprocess += t.elapsed();
        Ok(&self.mask)
    }

    /// Segments one frame and returns the mask as coefficients ([`MaskCoefficients`]): the
    /// smoothed probability at the model size, or with `settings.refine` the guided filter's
    /// mean coefficients `(A, b)` at [`RefineSettings::capture_size`], computed with the
    /// frame's luma scaled bilinearly to that size as guide, window radius
    /// [`RefineSettings::radius_for`] capture pixels. This is what the OBS worker publishes.
    ///
    /// # Errors
    /// [`crate::EngineError::Inference`] when the network fails on its device.
    pub fn coefficients(
        &mut self,
        frame: &FrameRef<'_>,
        settings: &PipelineSettings,
    ) -> Result<MaskCoefficients<'_>> {
        let t0 = Instant::now();
        let (fw, fh) = (frame.width(), frame.height());
        if self.frame_size != (fw, fh) {
            self.reset();
            self.frame_size = (fw, fh);
        }
        // The helper thread (2 threads) wakes while the frame is pre-processed.
        self.backend.wake_threads(settings.threads);
        let (mw, mh) = self.pre.size();
        let input = self.pre.run(frame);
        input_luma(input, mw * mh, &mut self.input_luma);
        if self.cuts.is_cut_luma(&self.input_luma, mw, mh) {
            log::debug!("scene cut: temporal smoothing reset");
            self.smoother.reset();
            self.hold.reset();
            self.hold_proxy.reset();
        }
        let t1 = Instant::now();
        self.backend
            .segment_threads(input, &mut self.probability, settings.threads)?;
        let t2 = Instant::now();
        // No subnormals downstream (they are slow on Intel cores).
        flush_tiny(&mut self.probability);
        // With refinement the hold after the guided filter replaces the model-size smoother.
        let hold = settings.refine && settings.smoothing > 0.0;
        if !hold || self.hold_strength != settings.smoothing {
            self.hold_proxy.reset();
            self.hold.reset();
        }
        self.hold_strength = settings.smoothing;
        let model_smoothing = if hold { 0.0 } else { settings.smoothing };
        self.smoother.apply_gated_luma(
            &mut self.probability,
            &self.input_luma,
            mw,
            mh,
            model_smoothing,
        );
        self.refined = settings.refine;
        if settings.refine {
            let rs = settings.refine_settings;
            let (cw, ch) = rs.capture_size((mw, mh), (fw, fh));
            luma_plane(frame, &mut self.guide);
            let guide = at_size(
                &mut self.resizer,
                &self.guide,
                (fw, fh),
                &mut self.guide_small,
                (cw, ch),
            );
            // At the default 1x capture the probability is already at the capture size.
            let p = at_size(
                &mut self.p_resizer,
                &self.probability,
                (mw, mh),
                &mut self.p_capture,
                (cw, ch),
            );
            let radius = rs.radius_for(ch, mh);
            let (a, b) = self
                .guided
                .coefficients(guide, p, cw, ch, radius, rs.epsilon);
            self.coef_a.set_size(cw, ch);
            self.coef_a.data.copy_from_slice(a);
            self.coef_b.set_size(cw, ch);
            self.coef_b.data.copy_from_slice(b);
            self.hold_band = 0.0;
            if hold {
                // The band of this frame's full-resolution hold: the hold run at the capture
                // size, narrowed there to keep MIN_REFINED_IOU.
                self.q_capture.clear();
                self.q_capture.extend(
                    a.iter()
                        .zip(b)
                        .zip(guide)
                        .map(|((&a, &b), &y)| (a * y + b).clamp(0.0, 1.0)),
                );
                self.hold_band = self.hold_proxy.apply_bounded(
                    &mut self.q_capture,
                    guide,
                    (cw, ch),
                    refined_band(settings.smoothing),
                    MIN_REFINED_IOU,
                );
            }
        } else {
            self.hold_band = 0.0;
            self.coef_b.set_size(mw, mh);
            self.coef_b.data.copy_from_slice(&self.probability);
        }
        self.timings = StageTimings {
            preprocess: t1 - t0,
            inference: t2 - t1,
            postprocess: t2.elapsed(),
        };
        Ok(MaskCoefficients {
            b: &self.coef_b,
            a: self.refined.then_some(&self.coef_a),
            hold_band: self.hold_band,
        })
    }
}

/// `src` (`from` = (width, height)) at the size `to`: `src` itself when the sizes match, else
/// resized bilinearly into `buf`.
fn at_size<'a>(
    resizer: &mut PlaneResizer,
    src: &'a [f32],
    from: (usize, usize),
    buf: &'a mut Vec<f32>,
    to: (usize, usize),
) -> &'a [f32] {
    if from == to {
        return src;
    }
    buf.resize(to.0 * to.1, 0.0);
    resizer.resize(src, from, buf, to);
    buf
}

/// Rec. 601 luma of a frame, 0..1, into `out` (`width * height` values).
pub fn luma_plane(frame: &FrameRef<'_>, out: &mut Vec<f32>) {
    let (w, h) = (frame.width(), frame.height());
    out.resize(w * h, 0.0);
    // Constant pixel layouts let the loop vectorise (BGRA: the OBS worker's capture).
    match frame.format() {
        PixelFormat::Bgra => luma_rows::<4, 2, 1, 0>(frame, out),
        PixelFormat::Rgba => luma_rows::<4, 0, 1, 2>(frame, out),
        PixelFormat::Rgb => luma_rows::<3, 0, 1, 2>(frame, out),
    }
}

fn luma_rows<const BPP: usize, const R: usize, const G: usize, const B: usize>(
    frame: &FrameRef<'_>,
    out: &mut [f32],
) {
    let w = frame.width();
    let (bpp, r, g, b) = (BPP, R, G, B);
    crate::simd::simd(
        #[inline(always)]
        || {
            for (y, row_out) in out.chunks_exact_mut(w).enumerate() {
                for (o, p) in row_out.iter_mut().zip(frame.row(y).chunks_exact(bpp)) {
                    *o = (0.299 * p[r] as f32 + 0.587 * p[g] as f32 + 0.114 * p[b] as f32)
                        * (1.0 / 255.0);
                }
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A backend that records the calls it gets and answers 0.5 everywhere.
    #[derive(Default)]
    struct Recording(Mutex<Vec<(&'static str, usize)>>);

    impl SegmentationBackend for Recording {
        fn input_size(&self) -> (usize, usize) {
            (16, 16)
        }

        fn segment(&self, input: &[f32], output: &mut [f32]) -> Result<()> {
            self.segment_threads(input, output, 1)
        }

        fn segment_threads(
            &self,
            _input: &[f32],
            output: &mut [f32],
            threads: usize,
        ) -> Result<()> {
            self.0.lock().unwrap().push(("segment", threads));
            output.fill(0.5);
            Ok(())
        }

        fn wake_threads(&self, threads: usize) {
            self.0.lock().unwrap().push(("wake", threads));
        }

        fn describe(&self) -> String {
            "recording".into()
        }
    }

    /// Each frame first tells the backend to wake its helper threads (before pre-processing,
    /// so they are awake when the network starts), then runs it, both with the settings'
    /// thread count.
    #[test]
    fn each_frame_wakes_the_helper_before_the_network() {
        let backend = Arc::new(Recording::default());
        let mut pipeline = MaskPipeline::new(backend.clone());
        let pixels = vec![128u8; 64 * 48 * 4];
        let frame = FrameRef::packed(&pixels, 64, 48, PixelFormat::Rgba).unwrap();
        for threads in [2, 1, 2] {
            let settings = PipelineSettings {
                threads,
                ..PipelineSettings::default()
            };
            pipeline.process(&frame, &settings).unwrap();
        }
        let calls = backend.0.lock().unwrap().clone();
        assert_eq!(
            calls,
            [
                ("wake", 2),
                ("segment", 2),
                ("wake", 1),
                ("segment", 1),
                ("wake", 2),
                ("segment", 2)
            ]
        );
    }

    /// Runs `frames` frames asked for 2 threads whose inference takes `ms(threads, frame)`;
    /// returns the count each frame ran on.
    fn choose(c: &mut ThreadChoice, frames: usize, ms: impl Fn(usize, usize) -> f64) -> Vec<usize> {
        (0..frames)
            .map(|i| {
                let t = c.pick(2);
                c.record(t, Duration::from_secs_f64(ms(t, i) / 1e3));
                t
            })
            .collect()
    }

    #[test]
    fn one_thread_asked_is_one_thread() {
        let mut c = ThreadChoice::default();
        for _ in 0..100 {
            assert_eq!(c.pick(1), 1);
            c.record(1, Duration::from_millis(3));
        }
        assert_eq!(c.means()[1], None);
    }

    /// The frames that probe the other count: the first after the warm-up, then every
    /// [`ThreadChoice::PROBE_EVERY`].
    fn probes(frames: usize) -> Vec<usize> {
        let first = (ThreadChoice::WARMUP + ThreadChoice::FIRST_PROBE_AFTER) as usize;
        (first..frames)
            .step_by(ThreadChoice::PROBE_EVERY as usize)
            .collect()
    }

    #[test]
    fn two_threads_when_faster_with_a_probe_a_second() {
        // A quiet machine: 2 threads 1.6x faster; the first frame, growing its buffers,
        // took 50 ms (not measured).
        let mut c = ThreadChoice::default();
        let ran = choose(&mut c, 300, |t, i| match (t, i) {
            (_, 0) => 50.0,
            (2, _) => 1.0,
            _ => 1.6,
        });
        let ones: Vec<usize> = (0..300).filter(|&i| ran[i] == 1).collect();
        assert_eq!(ones, probes(300));
        assert_eq!(c.preferred(), 2);
        assert_eq!(c.means(), [Some(1.6), Some(1.0)]);
    }

    #[test]
    fn one_thread_when_two_are_slower_and_two_again_when_they_are_faster() {
        // The other core busy: 2 threads 6 ms, 1 thread 3.5 ms (the OBS bench on this VM).
        let mut c = ThreadChoice::default();
        let ran = choose(&mut c, 300, |t, _| if t == 2 { 6.0 } else { 3.5 });
        // The first probe finds 1 faster; from then on 2 only on probes.
        let first = probes(300)[0];
        assert!(ran[..first].iter().all(|&t| t == 2));
        let twos: Vec<usize> = (first + 1..300).filter(|&i| ran[i] == 2).collect();
        assert_eq!(twos, probes(300)[1..]);
        assert_eq!(c.preferred(), 1);
        // The core freed: 2 threads 2.0 ms. Each probe pulls 2's mean down; once below 1's,
        // 1 thread runs only on probes again.
        let ran = choose(&mut c, 300, |t, _| if t == 2 { 2.0 } else { 3.5 });
        let p = ThreadChoice::PROBE_EVERY as usize;
        let back = (0..300 - p)
            .find(|&i| ran[i..i + p - 1].iter().all(|&t| t == 2))
            .expect("2 threads again");
        assert!(back < 5 * p, "2 threads again only after {back} frames");
        let ones_after = ran[back..].iter().filter(|&&t| t == 1).count();
        assert!(
            ones_after <= (300 - back) / p + 1,
            "{ones_after} frames on 1 thread"
        );
        assert_eq!(c.preferred(), 2);
    }
}
