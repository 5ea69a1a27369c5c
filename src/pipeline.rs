//! The per-frame mask pipeline: frame → model input → person probability → smoothing →
//! upsampling → edge refinement. One [`MaskPipeline`] per video stream (per OBS filter
//! worker, per CLI run); the segmenter behind it can be shared.

use crate::frame::FrameRef;
use crate::mask::Mask;
use crate::model::SegmentationBackend;
use crate::postprocess::{GuidedFilter, RefineSettings, SceneCutDetector, TemporalSmoother};
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
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            smoothing: DEFAULT_SMOOTHING,
            refine: false,
            refine_settings: RefineSettings::default(),
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

/// Runs the segmenter on a stream of frames and returns the person probability at frame size.
///
/// Temporal state (smoothing) is reset when the frame size changes and on scene cuts.
pub struct MaskPipeline {
    backend: Arc<dyn SegmentationBackend>,
    pre: Preprocessor,
    probability: Vec<f32>,
    smoother: TemporalSmoother,
    cuts: SceneCutDetector,
    frame_size: (usize, usize),
    mask: Mask,
    guide: Vec<f32>,
    guided: GuidedFilter,
    resizer: PlaneResizer,
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
            smoother: TemporalSmoother::default(),
            cuts: SceneCutDetector::default(),
            frame_size: (0, 0),
            mask: Mask::default(),
            guide: Vec::new(),
            guided: GuidedFilter::default(),
            resizer: PlaneResizer::default(),
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
        self.cuts.reset();
    }

    /// Stage timings of the last call to [`MaskPipeline::process`].
    pub fn timings(&self) -> StageTimings {
        self.timings
    }

    /// Segments one frame and returns the person probability (0..1) at the frame's size.
    ///
    /// # Errors
    /// [`crate::EngineError::Inference`] when the network fails on its device.
    pub fn process(&mut self, frame: &FrameRef<'_>, settings: &PipelineSettings) -> Result<&Mask> {
        let t0 = Instant::now();
        let (fw, fh) = (frame.width(), frame.height());
        if self.frame_size != (fw, fh) {
            self.reset();
            self.frame_size = (fw, fh);
        }
        let (mw, mh) = self.pre.size();
        let input = self.pre.run(frame);
        if self.cuts.is_cut(input, mw, mh) {
            log::debug!("scene cut: temporal smoothing reset");
            self.smoother.reset();
        }
        let t1 = Instant::now();
        self.backend.segment(input, &mut self.probability)?;
        let t2 = Instant::now();
        self.smoother
            .apply_gated(&mut self.probability, input, mw, mh, settings.smoothing);
        self.mask.set_size(fw, fh);
        self.resizer
            .resize(&self.probability, (mw, mh), &mut self.mask.data, (fw, fh));
        if settings.refine {
            luma_plane(frame, &mut self.guide);
            let radius = settings.refine_settings.radius_for(fh, mh);
            self.guided.apply(
                &self.guide,
                &mut self.mask.data,
                fw,
                fh,
                radius,
                settings.refine_settings.epsilon,
            );
        }
        self.timings = StageTimings {
            preprocess: t1 - t0,
            inference: t2 - t1,
            postprocess: t2.elapsed(),
        };
        Ok(&self.mask)
    }
}

/// Rec. 601 luma of a frame, 0..1, into `out` (`width * height` values).
pub fn luma_plane(frame: &FrameRef<'_>, out: &mut Vec<f32>) {
    let (w, h) = (frame.width(), frame.height());
    out.resize(w * h, 0.0);
    let bpp = frame.format().bytes_per_pixel();
    let [r, g, b] = frame.format().rgb_offsets();
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
