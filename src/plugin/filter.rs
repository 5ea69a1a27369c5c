//! The "AI Background" video filter (`ai_background_filter`).
//!
//! Per frame, on the render thread (`video_render`, inside the graphics context):
//! 1. the filter's target is rendered once per frame into a texrender at its own size;
//! 2. on every N-th frame that texture is drawn into a small texrender at the capture size
//!    (the model input times `postprocess::REFINE_CAPTURE_SCALE` with edge refinement, 1:
//!    the model input; the GPU does the resize) and
//!    staged into a ring of three stage surfaces; the surface staged on an earlier frame is
//!    mapped (so the map never waits for the GPU) and its pixels go to the worker's
//!    one-slot mailbox ([`super::worker`]); an async source that delivers no new frames
//!    (paused) is still captured every few frames, and segmented only when the capture's
//!    CRC-32 changed (a seek while paused changes the picture without a new frame);
//! 3. the newest mask the worker published is uploaded into an R32F texture (created once
//!    per mask size), with edge refinement beside a second one: the guided filter's `b` and
//!    `A`, which the effect applies with the full-resolution frame as guide; with
//!    smoothing, the effect's `Hold` pass then holds that probability per pixel where the
//!    picture is still, once per frame, in a state texture at the frame size
//!    ([`super::hold`], `postprocess::RefinedHold`);
//! 4. the effect (`data/ai_background.effect`) composites at full resolution with
//!    premultiplied alpha (blend ONE, INVSRCALPHA): one technique per mode plus the mask
//!    view; blur first runs the Reduce and two BlurPass passes at reduced resolution, the
//!    replace modes the same for foreground estimation and ReduceBackground and two
//!    BlurPass passes for light wrap.
//!
//! Nothing here waits on inference: the mask is at most two frames behind its frame when the
//! worker keeps up (staged on frame n, mapped and sent on n + 1, shown on n + 2 at the
//! latest), and simply older when it does not. With "Match video to mask" each frame is rendered into the
//! next of a ring of [`FRAME_RING`] texrenders and the composite uses the frame the shown mask
//! was computed from (the video is then delayed by up to two frames). Until the first mask exists, and whenever
//! something is wrong (no effect, no segmenter, zero-size source, a caught panic, a worker
//! that cannot produce masks: [`super::worker`] withdraws its mask), the video passes through
//! untouched.
//!
//! Colour: the frame is kept in the source's own colour space (float textures for linear
//! spaces, see [`FRAME_SPACES`]), composited in its encoding and mapped into the render
//! target's space ([`OutputMapping`]); `video_get_color_space` reports the source's space.

use super::hold::HoldState;
use super::settings::{self, Mode, ModelProblem, Problem, Settings};
use super::worker::{Fault, Job, MaskResult, ModelKey, Worker};
use crate::composite::{edge_sigma, MAX_BLUR_REDUCTION};
use crate::obs::calldata::CallDataRef;
use crate::obs::data::{Data, DataRef};
use crate::obs::filter::{Proc, VideoFilter};
use crate::obs::graphics::{
    self, clear, current_color_space, ortho, Blend, ColorSpace, Effect, Format, Gfx, GraphicsGuard,
    Param, StageSurface, StateGuard, TexRender, Texture, TextureRef,
};
use crate::obs::module;
use crate::obs::properties::Properties;
use crate::obs::source::{
    FilterContext, Source, SourceRef, WeakSource, FLAG_ASYNC, FLAG_CUSTOM_DRAW,
};
use image::RgbaImage;
use parking_lot::Mutex;
use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The effect file in the module's data folder.
pub const EFFECT_FILE: &str = "ai_background.effect";
/// Name of each instance's worker thread (Linux shows 15 characters).
pub const WORKER_THREAD: &str = "ai-bg-worker";
/// Number of stage surfaces in the read-back ring.
pub const STAGE_RING: usize = 3;
/// Full-size frame textures kept for "Match video to mask": the current frame and the two
/// before it, enough for a mask two frames behind its frame (the latency of a worker that
/// keeps up). Each is a texrender at the source size, so at 1920x1080 the two extra ones take
/// 2 x 8.3 MB (8-bit) or 2 x 16.6 MB (16-bit float sources) of GPU memory, allocated on the
/// first frames with the setting on (OBS re-creates a texrender's texture only when the size
/// changes).
pub const FRAME_RING: usize = 3;
/// Largest background image side accepted (larger images are refused with a log line):
/// 8192 pixels, the texture size every Direct3D 10-class GPU supports.
pub const MAX_IMAGE_SIDE: u32 = 8192;
/// Environment variable that enables the test hooks (`ai_background_inject_fault`).
pub const TEST_HOOKS_ENV: &str = "AI_BACKGROUND_TEST_HOOKS";
/// Ticks between lookups of a background source that does not exist (yet).
const SOURCE_LOOKUP_TICKS: u64 = 60;
/// Ticks after which a staged frame is dropped instead of segmented.
const STALE_TICKS: u64 = 10;
/// Ticks after which an active background video without a picture is reported.
const VIDEO_EMPTY_TICKS: u64 = 150;
/// Ticks between checks whether the background can be used (for the dialog's status line).
const STATUS_TICKS: u64 = 15;
/// Frames without a new async frame after which the source counts as paused (0.5 s at
/// 30 fps: every webcam delivers faster), so its picture is checked for changes that came
/// without a new frame (a paused media source that is seeked).
const IDLE_FRAMES: u64 = 15;
/// While the source is paused, its capture is checked every this many frames (0.1 s at
/// 30 fps); only a capture whose checksum differs from the last segmented one is segmented.
const IDLE_CHECK_FRAMES: u64 = 3;

/// The effect's params (all required; a mismatch with the file is a load error).
struct Params {
    image: Param,
    mask: Param,
    gain: Param,
    guided: Param,
    hold_state: Param,
    hold_band: Param,
    hold_active: Param,
    background: Param,
    blurred: Param,
    wrapped: Param,
    wrap_strength: Param,
    frame_size: Param,
    mask_size: Param,
    mask_scale: Param,
    threshold: Param,
    feather: Param,
    bg_color: Param,
    bg_map: Param,
    bg_size: Param,
    bg_premultiplied: Param,
    small_size: Param,
    blur_scale: Param,
    block: Param,
    radius: Param,
    sigma: Param,
    direction: Param,
    blur_enabled: Param,
    sharp_weights: Param,
    linear_frame: Param,
    out_mode: Param,
    out_multiplier: Param,
}

/// Values of every effect param for one draw. libobs clears all param values when a
/// technique ends (`gs_technique_end`), so each draw sets all of them.
#[derive(Clone, Copy, Default)]
struct Uniforms<'a> {
    image: Option<TextureRef<'a>>,
    mask: Option<TextureRef<'a>>,
    /// The guided filter's gain `A` (edge refinement), bound when `guided` is 1.
    gain: Option<TextureRef<'a>>,
    /// 1 when `mask` holds the guided filter's `b` and `gain` its `A`.
    guided: f32,
    /// The hold's state ([`HoldState`]): the previous one for technique Hold, this frame's
    /// when `hold_active` is 1.
    hold_state: Option<TextureRef<'a>>,
    /// Band of the Hold step (probability units; 0: pass through).
    hold_band: f32,
    /// 1: the probability is the held one in `hold_state`.
    hold_active: f32,
    background: Option<TextureRef<'a>>,
    blurred: Option<TextureRef<'a>>,
    /// Light wrap planes `Q` (replace modes), bound when `wrap_strength` > 0.
    wrapped: Option<TextureRef<'a>>,
    wrap_strength: f32,
    frame_size: [f32; 2],
    mask_size: [f32; 2],
    mask_scale: [f32; 2],
    threshold: f32,
    feather: f32,
    bg_color: [f32; 4],
    bg_map: [f32; 4],
    bg_size: [f32; 2],
    bg_premultiplied: f32,
    small_size: [f32; 2],
    blur_scale: [f32; 2],
    block: i32,
    radius: i32,
    sigma: f32,
    direction: [f32; 2],
    blur_enabled: f32,
    /// 1: the Reduce pass weighs background pixels `(1 - a)^8` (foreground estimation).
    sharp_weights: f32,
    /// 1 when the frame texture holds linear values (any colour space but 8-bit sRGB).
    linear_frame: f32,
    /// Conversion of the composite into the render target's space ([`OutputMapping`]).
    out_mode: i32,
    /// Factor on linear output (scRGB targets); only the final draw sets it.
    out_multiplier: f32,
}

/// The composite is made in the frame's own encoding (see `data/ai_background.effect`);
/// this maps it into the render target's colour space, as OBS's own filters do
/// (`plugins/obs-filters/*.c` of OBS 29: "DrawMultiply" for scRGB targets, decoding to linear
/// for float targets): the effect's `out_mode` and `out_multiplier`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct OutputMapping {
    /// 0: as is; 1: sRGB-encoded to linear; 2: linear to sRGB-encoded (clipped to 0..1).
    mode: i32,
    /// Factor on linear output: SDR white level / 80 nits for scRGB targets, else 1.
    multiplier: f32,
}

impl OutputMapping {
    fn new(frame: ColorSpace, target: ColorSpace) -> OutputMapping {
        let multiplier = if target == ColorSpace::Rec709Scrgb {
            graphics::sdr_white_level() / 80.0
        } else {
            1.0
        };
        let mode = match (frame.is_linear(), target.is_linear()) {
            (false, true) => 1,
            (true, false) => 2,
            _ => 0,
        };
        OutputMapping { mode, multiplier }
    }
}

/// The colour spaces the filter composites in (OBS's own filters offer the same three to
/// their sources): a source in any of them is kept in it, float textures included.
const FRAME_SPACES: [ColorSpace; 3] = [
    ColorSpace::Srgb,
    ColorSpace::Srgb16f,
    ColorSpace::Rec709Extended,
];

/// The compiled effect and its params.
struct Shader {
    effect: Effect,
    p: Params,
}

impl Shader {
    fn load(gfx: &Gfx<'_>) -> Result<Shader, String> {
        let path = module::data_file(EFFECT_FILE)
            .ok_or_else(|| format!("{EFFECT_FILE} is missing from the module's data folder"))?;
        let mut effect = Effect::from_file(gfx, &path)?;
        let mut param = |name: &str| {
            effect
                .param(name)
                .ok_or_else(|| format!("{} has no param '{name}'", path.display()))
        };
        let p = Params {
            image: param("image")?,
            mask: param("mask")?,
            gain: param("gain")?,
            guided: param("guided")?,
            hold_state: param("hold_state")?,
            hold_band: param("hold_band")?,
            hold_active: param("hold_active")?,
            background: param("background")?,
            blurred: param("blurred")?,
            wrapped: param("wrapped")?,
            wrap_strength: param("wrap_strength")?,
            frame_size: param("frame_size")?,
            mask_size: param("mask_size")?,
            mask_scale: param("mask_scale")?,
            threshold: param("threshold")?,
            feather: param("feather")?,
            bg_color: param("bg_color")?,
            bg_map: param("bg_map")?,
            bg_size: param("bg_size")?,
            bg_premultiplied: param("bg_premultiplied")?,
            small_size: param("small_size")?,
            blur_scale: param("blur_scale")?,
            block: param("block")?,
            radius: param("radius")?,
            sigma: param("sigma")?,
            direction: param("direction")?,
            blur_enabled: param("blur_enabled")?,
            sharp_weights: param("sharp_weights")?,
            linear_frame: param("linear_frame")?,
            out_mode: param("out_mode")?,
            out_multiplier: param("out_multiplier")?,
        };
        Ok(Shader { effect, p })
    }

    /// Sets every param from `u` and draws a `w` x `h` sprite with `technique`.
    fn draw(&self, gfx: &Gfx<'_>, u: &Uniforms<'_>, technique: &CStr, w: u32, h: u32) -> bool {
        let (e, p) = (&self.effect, &self.p);
        e.set_texture(p.image, u.image);
        e.set_texture(p.mask, u.mask);
        e.set_texture(p.gain, u.gain);
        e.set_float(p.guided, u.guided);
        e.set_texture(p.hold_state, u.hold_state);
        e.set_float(p.hold_band, u.hold_band);
        e.set_float(p.hold_active, u.hold_active);
        e.set_texture(p.background, u.background);
        e.set_texture(p.blurred, u.blurred);
        e.set_texture(p.wrapped, u.wrapped);
        e.set_float(p.wrap_strength, u.wrap_strength);
        e.set_vec2(p.frame_size, u.frame_size);
        e.set_vec2(p.mask_size, u.mask_size);
        e.set_vec2(p.mask_scale, u.mask_scale);
        e.set_float(p.threshold, u.threshold);
        e.set_float(p.feather, u.feather);
        e.set_vec4(p.bg_color, u.bg_color);
        e.set_vec4(p.bg_map, u.bg_map);
        e.set_vec2(p.bg_size, u.bg_size);
        e.set_float(p.bg_premultiplied, u.bg_premultiplied);
        e.set_vec2(p.small_size, u.small_size);
        e.set_vec2(p.blur_scale, u.blur_scale);
        e.set_int(p.block, u.block);
        e.set_int(p.radius, u.radius);
        e.set_float(p.sigma, u.sigma);
        e.set_vec2(p.direction, u.direction);
        e.set_float(p.blur_enabled, u.blur_enabled);
        e.set_float(p.sharp_weights, u.sharp_weights);
        e.set_float(p.linear_frame, u.linear_frame);
        e.set_int(p.out_mode, u.out_mode);
        e.set_float(p.out_multiplier, u.out_multiplier);
        e.draw_sprite(gfx, technique, w, h)
    }

    /// Draws into `target` (resized to `w` x `h`) without blending, as stored.
    fn draw_into(
        &self,
        gfx: &Gfx<'_>,
        target: &mut TexRender,
        u: &Uniforms<'_>,
        technique: &CStr,
        w: u32,
        h: u32,
    ) -> bool {
        let Some(_scope) = target.render(gfx, w, h) else {
            return false;
        };
        let state = StateGuard::push(gfx);
        state.no_blend();
        state.framebuffer_srgb(false);
        ortho(gfx, w as f32, h as f32);
        self.draw(gfx, u, technique, w, h)
    }
}

/// GPU objects of one instance, created in `create` (inside the graphics context).
struct Gpu {
    shader: Shader,
    /// The target at full size, straight alpha, in the target's colour space (8-bit for
    /// sRGB, 16-bit float for the others: see [`FRAME_SPACES`]): a ring of [`FRAME_RING`]
    /// frames; `sources[current]` holds this tick's frame, the others (with "Match video to
    /// mask" on) the frames before it.
    sources: [TexRender; FRAME_RING],
    /// The frame number (`RenderState::frame`) in each of `sources` (0: none).
    source_frame: [u64; FRAME_RING],
    current: usize,
    /// The target at the capture size (BGRA) for the segmenter.
    capture: TexRender,
    /// Blur planes at reduced size (RGBA32F): box-reduced, then after each Gaussian pass.
    reduce: TexRender,
    blur_h: TexRender,
    blur_v: TexRender,
    /// Light wrap planes at reduced size (RGBA32F).
    wrap: TexRender,
    /// A video or OBS-source background at its own size (premultiplied).
    background: TexRender,
    /// The hold of the refined probability at the frame size.
    hold: HoldState,
}

impl Gpu {
    /// The ring slot to composite: with `match_video` and a mask of frame `mask_frame`, the
    /// slot holding that frame, else the oldest one kept of the same size and format (the
    /// nearest to the mask); otherwise the current frame.
    fn composite_slot(&self, match_video: bool, mask_frame: Option<u64>) -> usize {
        let (Some(mask_frame), true) = (mask_frame, match_video) else {
            return self.current;
        };
        let cur = &self.sources[self.current];
        let size = |t: &TexRender| t.texture().map(|t| (t.width(), t.height()));
        (0..FRAME_RING)
            .filter(|&i| {
                let f = self.source_frame[i];
                f != 0
                    && f >= mask_frame
                    && self.sources[i].format() == cur.format()
                    && size(&self.sources[i]) == size(cur)
            })
            .min_by_key(|&i| self.source_frame[i])
            .unwrap_or(self.current)
    }

    fn new(gfx: &Gfx<'_>) -> Result<Gpu, String> {
        let shader = Shader::load(gfx)?;
        let tr = |f: Format| {
            TexRender::new(gfx, f).ok_or_else(|| "cannot create a texrender".to_string())
        };
        Ok(Gpu {
            shader,
            sources: [tr(Format::Rgba)?, tr(Format::Rgba)?, tr(Format::Rgba)?],
            source_frame: [0; FRAME_RING],
            current: 0,
            capture: tr(Format::Bgra)?,
            reduce: tr(Format::Rgba32f)?,
            blur_h: tr(Format::Rgba32f)?,
            blur_v: tr(Format::Rgba32f)?,
            wrap: tr(Format::Rgba32f)?,
            background: tr(Format::Rgba)?,
            hold: HoldState::new(gfx).ok_or_else(|| "cannot create a texrender".to_string())?,
        })
    }
}

#[derive(Default)]
struct Slot {
    surface: Option<StageSurface>,
    /// Frame number staged into the surface and not yet read.
    staged: Option<u64>,
    /// The video tick it was staged on.
    tick: u64,
    /// Staged while the source was paused: segmented only if the picture changed.
    check_only: bool,
}

/// What the worker last got: a capture is segmented again only if one of these differs.
#[derive(Clone, PartialEq)]
struct JobKey {
    /// CRC-32 of the capture's pixels (rows without padding).
    crc: u32,
    size: (u32, u32),
    model: ModelKey,
    pipeline: crate::pipeline::PipelineSettings,
}

/// Render-thread state (only the video thread locks it, plus `destroy`).
#[derive(Default)]
struct RenderState {
    gpu: Option<Gpu>,
    /// The tick whose frame is in `gpu.sources[gpu.current]`.
    rendered_tick: Option<u64>,
    /// The colour space of the frame in `gpu.sources[gpu.current]`.
    space: Option<ColorSpace>,
    /// Frames rendered (one per tick in which the filter was drawn).
    frame: u64,
    /// Frames with new content (every frame of a sync source; new async frames).
    fresh_frames: u64,
    /// The frame number of the last frame with new content.
    last_fresh_frame: u64,
    /// The last capture handed to the worker.
    last_job: Option<JobKey>,
    ring: [Slot; STAGE_RING],
    mask: Option<Texture>,
    /// The guided filter's gain `A` of the shown mask (edge refinement), same size.
    gain: Option<Texture>,
    /// The shown mask's hold band ([`MaskResult::hold_band`]).
    hold_band: f32,
    mask_serial: u64,
    /// The frame number the mask in `mask` was computed from.
    mask_frame: Option<u64>,
    /// Frame numbers of the video and of the mask in the last composite (0: none).
    composited: (u64, u64),
    image: Option<Texture>,
    image_generation: u64,
    zero_size_logged: bool,
    // Statistics.
    render_calls: u64,
    render_time: Duration,
    captures: u64,
    submitted: u64,
    /// Paused-source checks, and those that found the picture unchanged.
    idle_checks: u64,
    idle_unchanged: u64,
    uploads: u64,
    lag_last: u64,
    lag_max: u64,
    lag_sum: u64,
}

/// The private media source playing a background video.
struct VideoBackground {
    source: Source,
    path: PathBuf,
    looping: bool,
    /// Whether this filter holds an active + showing reference on it.
    active: bool,
    active_since: u64,
    empty_logged: bool,
}

impl VideoBackground {
    /// Gives back this filter's activation and releases the media source.
    fn retire(self) {
        if self.active {
            self.source.dec_showing();
            self.source.dec_active();
        }
    }
}

/// Background resources, shared by `update` (UI thread), `video_tick` and `video_render`.
/// Sources are never released while this lock is held (a release can enter the graphics
/// context, which the render thread holds while it waits for this lock).
#[derive(Default)]
struct BackgroundState {
    image_path: PathBuf,
    image_generation: u64,
    pending_image: Option<RgbaImage>,
    /// The image file exists but could not be used (decoding failed, too large).
    image_failed: bool,
    video: Option<VideoBackground>,
    source_name: String,
    source: Option<WeakSource>,
    next_lookup: u64,
    source_missing_logged: bool,
}

/// One instance of the filter.
pub struct AiBackground {
    ctx: FilterContext,
    settings: Mutex<Arc<Settings>>,
    worker: Option<Worker>,
    render: Mutex<RenderState>,
    bg: Mutex<BackgroundState>,
    /// The mask currently in the mask texture (what the last frame was composited with).
    shown: Mutex<Option<Arc<MaskResult>>>,
    tick: AtomicU64,
    /// The problems the two status lines (background, model) last showed (checked every
    /// `STATUS_TICKS`).
    status: Mutex<(Option<Problem>, Option<ModelProblem>)>,
    /// Set by `filter_video` when an async parent delivered a new frame.
    new_async_frame: AtomicBool,
    poisoned: AtomicBool,
}

impl AiBackground {
    fn skip(&self, gfx: &Gfx<'_>) {
        self.ctx.skip_video_filter(gfx);
    }

    /// Applies the background part of new settings (UI thread). Slow work (decoding an
    /// image, creating a media source) happens without holding the background lock, which
    /// the render thread takes every frame. Returns the background videos to retire after the
    /// caller has let go of every lock.
    fn update_background(&self, s: &Settings) -> Vec<VideoBackground> {
        let want_image = s.mode == Mode::Image && !s.image_path.as_os_str().is_empty();
        let want_video = s.mode == Mode::Video && !s.video_path.as_os_str().is_empty();
        let (image_path, keep_video) = {
            let bg = self.bg.lock();
            let keep = bg
                .video
                .as_ref()
                .is_some_and(|v| want_video && v.path == s.video_path && v.looping == s.video_loop);
            (bg.image_path.clone(), keep)
        };

        // Image: decoded here, uploaded by the render thread.
        let image_change = if !want_image {
            (!image_path.as_os_str().is_empty()).then(|| (PathBuf::new(), None))
        } else if image_path != s.image_path {
            Some((s.image_path.clone(), load_image(&s.image_path)))
        } else {
            None
        };
        // Video: a private ffmpeg_source, recreated when the file or looping changes.
        let new_video = if !keep_video && want_video {
            create_video(&self.ctx.name(), &s.video_path, s.video_loop)
        } else {
            None
        };

        let mut retired = Vec::new();
        let mut bg = self.bg.lock();
        if let Some((path, image)) = image_change {
            bg.image_failed = image.is_none() && !path.as_os_str().is_empty();
            bg.image_path = path;
            bg.pending_image = image;
            bg.image_generation += 1;
        }
        if !keep_video {
            retired.extend(bg.video.take());
            bg.video = new_video;
        }
        // OBS source: a weak reference, looked up by name in video_tick.
        let want_source = if s.mode == Mode::Source {
            s.source_name.as_str()
        } else {
            ""
        };
        if bg.source_name != want_source {
            bg.source_name = want_source.to_string();
            bg.source = None;
            bg.next_lookup = 0;
            bg.source_missing_logged = false;
        }
        retired
    }

    /// Why the background of settings `s` cannot be used right now, if it cannot (the
    /// background is blurred instead): what the settings show, else what the filter found
    /// when it tried the same file.
    fn problem_for(&self, s: &Settings) -> Option<Problem> {
        let parent = self.ctx.parent().map(|p| p.name());
        let sources = if s.mode == Mode::Source {
            crate::obs::source::video_source_names()
        } else {
            Vec::new()
        };
        settings::settings_problem(s, parent.as_deref(), &sources).or_else(|| {
            let bg = self.bg.lock();
            match s.mode {
                Mode::Image if bg.image_failed && bg.image_path == s.image_path => {
                    Some(Problem::ImageUnreadable(s.image_path.clone()))
                }
                Mode::Video
                    if bg
                        .video
                        .as_ref()
                        .is_some_and(|v| v.empty_logged && v.path == s.video_path) =>
                {
                    Some(Problem::VideoNoPicture(s.video_path.clone()))
                }
                _ => None,
            }
        })
    }

    /// Why the weights of settings `s` are not the ones running, if they are not: what the
    /// settings show, else the worker's refusal of the same file.
    fn model_problem_for(&self, s: &Settings) -> Option<ModelProblem> {
        settings::model_problem(s).or_else(|| {
            let (key, reason) = self.worker.as_ref()?.stats().weights_error?;
            (key == model_key(s)).then_some(ModelProblem::WeightsUnusable(key.weights, reason))
        })
    }

    /// Refreshes an open properties dialog when a status line would change.
    fn refresh_status(&self) {
        let s = self.settings.lock().clone();
        let problem = (self.problem_for(&s), self.model_problem_for(&s));
        let mut shown = self.status.lock();
        if *shown != problem {
            *shown = problem;
            drop(shown);
            self.ctx.as_source().update_properties();
        }
    }

    /// Per-tick background housekeeping: (de)activates the background video with the
    /// filter's visibility and resolves the background source by name.
    fn tick_background(&self, tick: u64) {
        let s = self.settings.lock().clone();
        let visible =
            self.ctx.as_source().enabled() && self.ctx.parent().is_some_and(|p| p.showing());
        let mut release = Vec::new();
        {
            let mut bg = self.bg.lock();
            if let Some(v) = bg.video.as_mut() {
                let want = s.mode == Mode::Video && visible;
                if want != v.active {
                    if want {
                        v.source.inc_active();
                        v.source.inc_showing();
                        v.active_since = tick;
                    } else {
                        v.source.dec_showing();
                        v.source.dec_active();
                    }
                    v.active = want;
                }
                let empty = v.source.as_ref().width() == 0 || v.source.as_ref().height() == 0;
                if v.active && empty && !v.empty_logged && tick - v.active_since > VIDEO_EMPTY_TICKS
                {
                    v.empty_logged = true;
                    log::warn!(
                        "background video {} shows no picture (unreadable file?); using blur",
                        v.path.display()
                    );
                }
            }
            let expired = bg.source.as_ref().is_none_or(|w| w.upgrade().is_none());
            if !bg.source_name.is_empty() && expired && tick >= bg.next_lookup {
                bg.next_lookup = tick + SOURCE_LOOKUP_TICKS;
                bg.source = None;
                match Source::by_name(&bg.source_name) {
                    Some(src) => {
                        let is_parent = self.ctx.parent().is_some_and(|p| p.same(src.as_ref()));
                        if is_parent {
                            if !bg.source_missing_logged {
                                log::warn!(
                                    "'{}' cannot be its own background; using blur",
                                    bg.source_name
                                );
                                bg.source_missing_logged = true;
                            }
                        } else {
                            bg.source = Some(src.weak());
                            bg.source_missing_logged = false;
                        }
                        release.push(src);
                    }
                    None => {
                        if !bg.source_missing_logged {
                            log::warn!(
                                "background source '{}' not found; using blur",
                                bg.source_name
                            );
                            bg.source_missing_logged = true;
                        }
                    }
                }
            }
        }
        drop(release);
    }

    /// Reads the surface staged on an earlier frame and hands it to the worker, then stages
    /// this frame if it is due.
    ///
    /// `fresh` is false when the source is async and no new frame arrived since the last
    /// capture (a 30 fps webcam on a 60 fps canvas): nothing new to segment. Once an async
    /// source has delivered nothing for [`IDLE_FRAMES`] (paused), every [`IDLE_CHECK_FRAMES`]-th
    /// frame is staged anyway and segmented only if its CRC-32 (or the model settings) differ
    /// from the last capture the worker got: a seek while paused changes the picture without
    /// a new async frame, while a still, paused picture costs one small read-back and a
    /// checksum, no inference.
    fn capture(&self, gfx: &Gfx<'_>, rs: &mut RenderState, s: &Settings, tick: u64, fresh: bool) {
        let Some(worker) = self.worker.as_ref() else {
            return;
        };
        let frame = rs.frame;
        // 1. The newest surface staged before this frame; older ones are stale.
        let newest = (0..STAGE_RING)
            .filter(|&i| rs.ring[i].staged.is_some_and(|f| f < frame))
            .max_by_key(|&i| rs.ring[i].staged);
        if let Some(i) = newest {
            let staged = rs.ring[i].staged.take().unwrap_or(0);
            for slot in rs.ring.iter_mut() {
                if slot.staged.is_some_and(|f| f < staged) {
                    slot.staged = None;
                }
            }
            // A frame staged before the filter was hidden is not worth segmenting.
            let stale = rs.ring[i].tick + STALE_TICKS < tick;
            let check_only = rs.ring[i].check_only;
            if let Some(surface) = rs.ring[i].surface.as_ref().filter(|_| !stale) {
                if let Some(map) = surface.map(gfx) {
                    let (w, h) = (surface.width() as usize, surface.height() as usize);
                    let row = w * 4;
                    let rows = || {
                        (0..h).map(|y| &map.data()[y * map.linesize()..y * map.linesize() + row])
                    };
                    let mut crc = crc32fast::Hasher::new();
                    rows().for_each(|r| crc.update(r));
                    let key = JobKey {
                        crc: crc.finalize(),
                        size: (w as u32, h as u32),
                        model: model_key(s),
                        pipeline: s.pipeline(),
                    };
                    if check_only {
                        rs.idle_checks += 1;
                    }
                    if check_only && rs.last_job.as_ref() == Some(&key) {
                        rs.idle_unchanged += 1;
                    } else {
                        let mut pixels = worker.buffer();
                        pixels.clear();
                        rows().for_each(|r| pixels.extend_from_slice(r));
                        drop(map);
                        worker.submit(Job {
                            pixels,
                            width: w,
                            height: h,
                            stride: row,
                            frame: staged,
                            model: key.model.clone(),
                            pipeline: key.pipeline,
                        });
                        rs.last_job = Some(key);
                        rs.submitted += 1;
                    }
                }
            }
        }

        // 2. Stage this frame into a free surface: every N-th new frame, and while the
        // source is paused every IDLE_CHECK_FRAMES-th frame for a change check.
        let due = if fresh {
            rs.last_fresh_frame = frame;
            rs.fresh_frames += 1;
            rs.fresh_frames % u64::from(s.every_n.max(1)) == 0
        } else {
            let idle = frame.saturating_sub(rs.last_fresh_frame);
            idle >= IDLE_FRAMES && idle % IDLE_CHECK_FRAMES == 0
        };
        if !due {
            return;
        }
        let linear = rs.space.is_some_and(ColorSpace::is_linear);
        let Some(gpu) = rs.gpu.as_mut() else { return };
        let (cw, ch) = s.capture_size();
        let Gpu {
            shader,
            sources,
            current,
            capture,
            ..
        } = gpu;
        // The segmenter takes sRGB-encoded 0..1 values: Capture encodes linear frames.
        let u = Uniforms {
            image: sources[*current].texture(),
            linear_frame: if linear { 1.0 } else { 0.0 },
            ..Default::default()
        };
        if u.image.is_none() || !shader.draw_into(gfx, capture, &u, c"Capture", cw, ch) {
            return;
        }
        let Some(small) = capture.texture() else {
            return;
        };
        let Some(i) = (0..STAGE_RING).find(|&i| rs.ring[i].staged.is_none()) else {
            return;
        };
        let slot = &mut rs.ring[i];
        if slot
            .surface
            .as_ref()
            .is_none_or(|sf| (sf.width(), sf.height()) != (cw, ch))
        {
            slot.surface = StageSurface::new(gfx, cw, ch, Format::Bgra);
        }
        if let Some(surface) = slot.surface.as_ref() {
            surface.stage(gfx, small);
            slot.staged = Some(frame);
            slot.tick = tick;
            slot.check_only = !fresh;
            if fresh {
                rs.captures += 1;
            }
        }
    }

    /// Uploads the newest published mask, if it is new.
    fn upload_mask(&self, gfx: &Gfx<'_>, rs: &mut RenderState) {
        let Some(latest) = self.worker.as_ref().and_then(|w| w.latest()) else {
            // No mask, or the worker withdrew it (a fault, a model that cannot load): pass
            // the video through rather than composite with a stale mask.
            rs.gain = None;
            if rs.mask.take().is_some() {
                *self.shown.lock() = None;
            }
            return;
        };
        if latest.serial == rs.mask_serial && rs.mask.is_some() {
            return;
        }
        let m = &latest.mask;
        let (w, h) = (m.width as u32, m.height as u32);
        if rs
            .mask
            .as_ref()
            .is_none_or(|t| (t.width(), t.height()) != (w, h))
        {
            rs.mask = Texture::new(gfx, w, h, Format::R32f, true, None);
        }
        let Some(tex) = rs.mask.as_ref() else { return };
        if !tex.set_image(gfx, bytemuck::cast_slice(&m.data), w as usize * 4) {
            return;
        }
        // Edge refinement: the gain A beside the offset b (same size).
        let g = &latest.gain;
        if g.data.is_empty() || (g.width, g.height) != (m.width, m.height) {
            rs.gain = None;
        } else {
            if rs
                .gain
                .as_ref()
                .is_none_or(|t| (t.width(), t.height()) != (w, h))
            {
                rs.gain = Texture::new(gfx, w, h, Format::R32f, true, None);
            }
            let uploaded = rs
                .gain
                .as_ref()
                .is_some_and(|t| t.set_image(gfx, bytemuck::cast_slice(&g.data), w as usize * 4));
            if !uploaded {
                return;
            }
        }
        rs.mask_serial = latest.serial;
        rs.mask_frame = Some(latest.frame);
        rs.hold_band = latest.hold_band;
        rs.uploads += 1;
        let lag = rs.frame.saturating_sub(latest.frame);
        rs.lag_last = lag;
        rs.lag_max = rs.lag_max.max(lag);
        rs.lag_sum += lag;
        *self.shown.lock() = Some(latest);
    }

    /// Renders an OBS source (background video or source) into `target` at its own size.
    fn render_background_source(gfx: &Gfx<'_>, target: &mut TexRender, src: SourceRef<'_>) -> bool {
        let (w, h) = (src.width(), src.height());
        let Some(_scope) = target.render(gfx, w, h) else {
            return false;
        };
        let state = StateGuard::push(gfx);
        // OBS's default blending, which leaves premultiplied colour in a cleared target.
        state.blend_separate(
            Blend::SrcAlpha,
            Blend::InvSrcAlpha,
            Blend::One,
            Blend::InvSrcAlpha,
        );
        clear(gfx, [0.0; 4]);
        ortho(gfx, w as f32, h as f32);
        src.video_render(gfx);
        true
    }

    fn render_frame(&self, gfx: &Gfx<'_>) {
        if self.poisoned.load(Ordering::Relaxed) {
            return self.skip(gfx);
        }
        let (Some(target), Some(parent)) = (self.ctx.target(), self.ctx.parent()) else {
            return self.skip(gfx);
        };
        let (w, h) = (target.base_width(), target.base_height());
        let s = self.settings.lock().clone();
        let mut guard = self.render.lock();
        let rs = &mut *guard;
        if w == 0 || h == 0 {
            if !rs.zero_size_logged {
                rs.zero_size_logged = true;
                log::info!(
                    "'{}': the source has no picture yet (0x0); passing through",
                    parent.name()
                );
            }
            return self.skip(gfx);
        }
        rs.zero_size_logged = false;
        let Some(gpu) = rs.gpu.as_mut() else {
            return self.skip(gfx);
        };

        // 1. The target at full size, once per frame (straight copy: blend ONE, ZERO), in
        // its own colour space: values above 1.0 of an extended-range source survive.
        let tick = self.tick.load(Ordering::Relaxed);
        let space = target.color_space(&FRAME_SPACES);
        if rs.rendered_tick != Some(tick) || rs.space != Some(space) {
            let direct =
                target.same(parent) && target.output_flags() & (FLAG_CUSTOM_DRAW | FLAG_ASYNC) == 0;
            // A new tick moves on to the next slot of the frame ring when the video is
            // delayed; otherwise every frame goes to slot 0.
            if rs.rendered_tick != Some(tick) {
                gpu.current = if s.match_video {
                    (gpu.current + 1) % FRAME_RING
                } else {
                    0
                };
            }
            let cur = gpu.current;
            gpu.source_frame[cur] = 0;
            if gpu.sources[cur].format() != space.format() {
                match TexRender::new(gfx, space.format()) {
                    Some(t) => gpu.sources[cur] = t,
                    None => return self.skip(gfx),
                }
            }
            rs.space = Some(space);
            {
                let Some(_scope) = gpu.sources[cur].render_in(gfx, w, h, space) else {
                    return self.skip(gfx);
                };
                let state = StateGuard::push(gfx);
                state.blend(Blend::One, Blend::Zero);
                clear(gfx, [0.0; 4]);
                ortho(gfx, w as f32, h as f32);
                if direct {
                    target.default_render(gfx);
                } else {
                    target.video_render(gfx);
                }
            }
            rs.rendered_tick = Some(tick);
            rs.frame += 1;
            gpu.source_frame[cur] = rs.frame;
            // 2. Read-back ring and the worker's mailbox. Async sources report new frames
            // through filter_video while the target renders (just above).
            let async_parent = parent.output_flags() & FLAG_ASYNC != 0;
            let fresh = !async_parent || self.new_async_frame.swap(false, Ordering::Relaxed);
            self.capture(gfx, rs, &s, tick, fresh);
        }

        // 3. The newest mask.
        self.upload_mask(gfx, rs);

        // A background image decoded on the UI thread, uploaded once (outside the lock).
        let pending = {
            let mut bg = self.bg.lock();
            (bg.image_generation != rs.image_generation).then(|| {
                rs.image_generation = bg.image_generation;
                bg.pending_image.take()
            })
        };
        if let Some(pending) = pending {
            rs.image = pending.and_then(|img| {
                let t = Texture::new(
                    gfx,
                    img.width(),
                    img.height(),
                    Format::Rgba,
                    false,
                    Some(img.as_raw()),
                );
                if t.is_none() {
                    log::warn!(
                        "cannot create a {}x{} texture for the background image; using blur",
                        img.width(),
                        img.height()
                    );
                }
                t
            });
        }

        // 4. Composite, with "Match video to mask" the frame the mask was computed from.
        let mask_frame = rs.mask.as_ref().and(rs.mask_frame);
        let slot = rs
            .gpu
            .as_ref()
            .map_or(0, |g| g.composite_slot(s.match_video, mask_frame));
        if let Some(g) = rs.gpu.as_ref() {
            rs.composited = (g.source_frame[slot], mask_frame.unwrap_or(0));
        }
        let RenderState {
            gpu,
            mask,
            gain,
            image,
            hold_band,
            ..
        } = rs;
        let Some(Gpu {
            shader,
            sources,
            reduce,
            blur_h,
            blur_v,
            wrap,
            background,
            hold,
            ..
        }) = gpu.as_mut()
        else {
            return self.skip(gfx);
        };
        let out = OutputMapping::new(space, current_color_space(gfx));
        let mut u = Uniforms {
            image: sources[slot].texture(),
            frame_size: [w as f32, h as f32],
            linear_frame: if space.is_linear() { 1.0 } else { 0.0 },
            out_mode: out.mode,
            out_multiplier: out.multiplier,
            ..Default::default()
        };
        if u.image.is_none() {
            return self.skip(gfx);
        }
        let technique: &CStr = match mask.as_ref() {
            None => {
                hold.reset();
                c"Passthrough"
            }
            Some(m) => {
                let (mw, mh) = (m.width(), m.height());
                u.mask = Some(m.as_ref());
                if let Some(g) = gain.as_ref() {
                    u.gain = Some(g.as_ref());
                    u.guided = 1.0;
                }
                u.mask_size = [mw as f32, mh as f32];
                // As preprocess::BilinearAxis computes its scale.
                u.mask_scale = [mw as f32 / w as f32, mh as f32 / h as f32];
                u.threshold = s.threshold;
                u.feather = s.feather;
                // The hold of the refined probability, stepped once per frame on the frame
                // being composited (src/plugin/hold.rs).
                if u.guided > 0.5 {
                    let base = u;
                    let state = hold.step(tick, (w, h), *hold_band, |target, previous, band| {
                        let hu = Uniforms {
                            hold_state: previous,
                            hold_band: band,
                            ..base
                        };
                        shader.draw_into(gfx, target, &hu, c"Hold", w, h)
                    });
                    if let Some(t) = state {
                        u.hold_state = Some(t);
                        u.hold_active = 1.0;
                    }
                } else {
                    hold.reset();
                }
                if s.show_mask {
                    c"Mask"
                } else {
                    let targets = BlurTargets {
                        reduce,
                        blur_h,
                        blur_v,
                    };
                    self.prepare_mode(
                        gfx,
                        shader,
                        targets,
                        wrap,
                        background,
                        image.as_ref(),
                        &s,
                        &mut u,
                    )
                }
            }
        };
        let state = StateGuard::push(gfx);
        state.blend(Blend::One, Blend::InvSrcAlpha);
        state.framebuffer_srgb(false);
        if !shader.draw(gfx, &u, technique, w, h) {
            drop(state);
            self.skip(gfx);
        }
    }

    /// Prepares the background of the current mode in `u` and returns the technique.
    /// Backgrounds that are not available fall back to blur.
    #[allow(clippy::too_many_arguments)]
    fn prepare_mode<'a>(
        &self,
        gfx: &Gfx<'_>,
        shader: &Shader,
        blur: BlurTargets<'a>,
        wrap: &'a mut TexRender,
        background: &'a mut TexRender,
        image: Option<&'a Texture>,
        s: &Settings,
        u: &mut Uniforms<'a>,
    ) -> &'static CStr {
        let technique = self.prepare_background(gfx, background, image, s, u);
        let (solid, wraps) = match technique.to_bytes() {
            b"Image" | b"Video" | b"Source" => (false, true),
            b"Color" => (true, true),
            b"Transparent" => (false, false),
            _ => {
                // Blur mode, or a background that is not available.
                if s.blur_sigma > 0.0 {
                    if let Some(blurred) = blur.run(gfx, shader, *u, s.blur_sigma) {
                        *u = blurred;
                    }
                }
                return c"Blur";
            }
        };
        // Replace modes: light wrap, then foreground estimation (the blur planes at
        // edge_sigma), both at reduced size.
        let sigma = edge_sigma(u.frame_size[1] as usize);
        let BlurTargets {
            reduce,
            blur_h,
            blur_v,
        } = blur;
        if wraps && s.light_wrap > 0.0 {
            light_wrap(
                gfx,
                shader,
                reduce,
                blur_h,
                wrap,
                u,
                sigma,
                solid,
                s.light_wrap,
            );
        }
        if s.estimate_foreground {
            let blur = BlurTargets {
                reduce,
                blur_h,
                blur_v,
            };
            let base = Uniforms {
                sharp_weights: 1.0,
                ..*u
            };
            if let Some(planes) = blur.run(gfx, shader, base, sigma) {
                *u = planes;
            }
        }
        technique
    }

    /// Binds the background of the current mode in `u` and returns the technique: `Image`,
    /// `Video`, `Source`, `Color`, `Transparent`, or `Blur` for blur mode and for
    /// backgrounds that are not available.
    fn prepare_background<'a>(
        &self,
        gfx: &Gfx<'_>,
        background: &'a mut TexRender,
        image: Option<&'a Texture>,
        s: &Settings,
        u: &mut Uniforms<'a>,
    ) -> &'static CStr {
        let (w, h) = (u.frame_size[0] as usize, u.frame_size[1] as usize);
        let fit = |u: &mut Uniforms<'a>, tex: TextureRef<'a>, premultiplied: bool| {
            let (bw, bh) = (tex.width(), tex.height());
            let (sx, sy, ox, oy) = s.fit.mapping((w, h), (bw as usize, bh as usize));
            u.background = Some(tex);
            u.bg_size = [bw as f32, bh as f32];
            u.bg_map = [sx, sy, ox, oy];
            u.bg_premultiplied = if premultiplied { 1.0 } else { 0.0 };
        };
        match s.mode {
            Mode::Image => {
                if let Some(tex) = image {
                    fit(u, tex.as_ref(), false);
                    return c"Image";
                }
            }
            Mode::Video | Mode::Source => {
                let src = {
                    let bg = self.bg.lock();
                    match s.mode {
                        Mode::Video => bg.video.as_ref().map(|v| v.source.clone()),
                        _ => bg.source.as_ref().and_then(|w| w.upgrade()),
                    }
                };
                // Rendered, and the reference released, outside the background lock.
                let ready = src.as_ref().is_some_and(|src| {
                    src.as_ref().width() > 0
                        && src.as_ref().height() > 0
                        && Self::render_background_source(gfx, background, src.as_ref())
                });
                drop(src);
                if ready {
                    let background: &'a TexRender = background;
                    if let Some(tex) = background.texture() {
                        fit(u, tex, true);
                        return if s.mode == Mode::Video {
                            c"Video"
                        } else {
                            c"Source"
                        };
                    }
                }
            }
            Mode::Color => {
                let c = s.color;
                let a = c[3] as f32 / 255.0;
                // In the frame's encoding: linear for float frames.
                let channel = |v: u8| {
                    let v = v as f32 / 255.0;
                    if u.linear_frame > 0.5 {
                        graphics::srgb_to_linear(v)
                    } else {
                        v
                    }
                };
                u.bg_color = [channel(c[0]) * a, channel(c[1]) * a, channel(c[2]) * a, a];
                return c"Color";
            }
            Mode::Transparent => return c"Transparent",
            Mode::Blur => {}
        }
        c"Blur"
    }

    /// Proc `ai_background_mask`: copies the mask the last frame was composited with: its
    /// probability (with edge refinement the guided filter's offset `b`) into `dst` and, with
    /// edge refinement, the gain `A` (`gain_len` values, 0 without) into `dst_gain`; both
    /// `width` x `height` f32, up to `capacity` values each; `hold_band` is the mask's band of
    /// the full-resolution hold (`RefinedHold`).
    fn proc_mask(&self, cd: &mut CallDataRef<'_>) {
        let shown = self.shown.lock().clone();
        match shown {
            Some(r) => {
                cd.copy_into_caller_buffer("dst", "capacity", &r.mask.data);
                cd.copy_into_caller_buffer("dst_gain", "capacity", &r.gain.data);
                cd.set_int("gain_len", r.gain.data.len() as i64);
                cd.set_int("width", r.mask.width as i64);
                cd.set_int("height", r.mask.height as i64);
                cd.set_int("serial", r.serial as i64);
                cd.set_int("frame", r.frame as i64);
                cd.set_float("hold_band", r.hold_band as f64);
            }
            None => {
                cd.set_int("width", 0);
                cd.set_int("height", 0);
                cd.set_int("serial", 0);
                cd.set_int("frame", 0);
                cd.set_int("gain_len", 0);
                cd.set_float("hold_band", 0.0);
            }
        }
    }

    /// Proc `ai_background_inject_fault` (a test hook): the next `count` frames the worker
    /// processes fail with `kind` (`panic`, `error` or `nan`), as real faults would. Acts
    /// only in a process whose environment has [`TEST_HOOKS_ENV`] set (the headless tests);
    /// elsewhere it answers `ok = false` and changes nothing.
    fn proc_inject_fault(&self, cd: &mut CallDataRef<'_>) {
        if std::env::var_os(TEST_HOOKS_ENV).is_none_or(|v| v.is_empty() || v == "0") {
            cd.set_bool("ok", false);
            return;
        }
        let kind = cd.get_string("kind").unwrap_or_default();
        let count = cd
            .get_int("count")
            .unwrap_or(1)
            .clamp(0, i64::from(u32::MAX)) as u32;
        match (kind.parse::<Fault>(), self.worker.as_ref()) {
            (Ok(fault), Some(w)) => {
                w.inject_faults(fault, count);
                cd.set_bool("ok", true);
            }
            (Err(e), _) => {
                log::warn!("ai_background_inject_fault: {e}");
                cd.set_bool("ok", false);
            }
            (_, None) => cd.set_bool("ok", false),
        }
    }

    /// Proc `ai_background_stats`: counters as JSON.
    fn proc_stats(&self, cd: &mut CallDataRef<'_>) {
        let (
            composited,
            frames,
            calls,
            time,
            captures,
            submitted,
            idle,
            uploads,
            lag_last,
            lag_max,
            lag_sum,
            gpu_ok,
        ) = {
            let rs = self.render.lock();
            (
                rs.composited,
                rs.frame,
                rs.render_calls,
                rs.render_time,
                rs.captures,
                rs.submitted,
                (rs.idle_checks, rs.idle_unchanged),
                rs.uploads,
                rs.lag_last,
                rs.lag_max,
                rs.lag_sum,
                rs.gpu.is_some(),
            )
        };
        let w = self.worker.as_ref().map(|w| w.stats()).unwrap_or_default();
        let video = self
            .bg
            .lock()
            .video
            .as_ref()
            .map(|v| if v.active { "active" } else { "inactive" });
        let per = |d: Duration, n: u64| {
            if n == 0 {
                0.0
            } else {
                d.as_secs_f64() * 1e3 / n as f64
            }
        };
        let json = serde_json::json!({
            "frames": frames,
            "composited_video_frame": composited.0,
            "composited_mask_frame": composited.1,
            "render_calls": calls,
            "render_ms_total": time.as_secs_f64() * 1e3,
            "render_ms_avg": per(time, calls),
            "captures": captures,
            "submitted": submitted,
            "idle_checks": idle.0,
            "idle_unchanged": idle.1,
            "replaced": w.replaced,
            "uploads": uploads,
            "mask_lag_last": lag_last,
            "mask_lag_max": lag_max,
            "mask_lag_avg": if uploads == 0 { 0.0 } else { lag_sum as f64 / uploads as f64 },
            "worker_frames": w.frames,
            "live_workers": super::worker::live_workers(),
            "worker_ms_avg": per(w.wall, w.frames),
            "worker_cpu_ms_avg": per(w.cpu, w.frames),
            "inference_ms_avg": per(w.inference, w.frames),
            // Sums since the worker started, so a reader can average over a window of its own.
            "worker_ms_total": w.wall.as_secs_f64() * 1e3,
            "worker_cpu_ms_total": w.cpu.as_secs_f64() * 1e3,
            "inference_ms_total": w.inference.as_secs_f64() * 1e3,
            "model": w.model,
            "model_id": w.model_id,
            "error": w.error,
            "faults": w.faults,
            "backoff_skipped": w.backoff_skipped,
            "single_thread_frames": w.single_thread_frames,
            "effect_loaded": gpu_ok,
            "poisoned": self.poisoned.load(Ordering::Relaxed),
            "background_video": video,
        });
        cd.set_string("json", &json.to_string());
    }
}

/// Decodes a background image; logs and returns `None` when it cannot be used.
///
/// The size is read from the file's header first (`image::ImageReader::into_dimensions`), so
/// an image larger than [`MAX_IMAGE_SIDE`] per side is refused before it is decoded (a
/// 30000 x 30000 PNG would take 3.6 GB).
fn load_image(path: &Path) -> Option<RgbaImage> {
    if !path.exists() {
        log::warn!("background image {} not found; using blur", path.display());
        return None;
    }
    let unreadable = |e: &dyn std::fmt::Display| {
        log::warn!(
            "cannot read background image {}: {e}; using blur",
            path.display()
        );
    };
    // The format from the content (the extension only as a fallback).
    let open = || {
        image::ImageReader::open(path)
            .and_then(|r| r.with_guessed_format())
            .map_err(image::ImageError::from)
    };
    match open().and_then(|r| r.into_dimensions()) {
        Ok((w, h)) if w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE => {
            log::warn!(
                "background image {} is {w}x{h}, larger than {MAX_IMAGE_SIDE} pixels per side; using blur",
                path.display()
            );
            return None;
        }
        Ok(_) => {}
        Err(e) => {
            unreadable(&e);
            return None;
        }
    }
    match open().and_then(|r| r.decode()) {
        Ok(img) => Some(img.to_rgba8()),
        Err(e) => {
            unreadable(&e);
            None
        }
    }
}

/// Creates the private media source of a background video.
/// The worker's model selection for settings `s`.
fn model_key(s: &Settings) -> ModelKey {
    ModelKey {
        preset: s.preset,
        device: s.device,
        weights: s.weights_path.clone(),
        weights_modified: s.weights_modified,
    }
}

fn create_video(filter_name: &str, path: &Path, looping: bool) -> Option<VideoBackground> {
    if !path.exists() {
        log::warn!("background video {} not found; using blur", path.display());
        return None;
    }
    let d = Data::new();
    let r = d.as_ref();
    r.set_bool("is_local_file", true);
    r.set_string("local_file", &path.to_string_lossy());
    r.set_bool("looping", looping);
    r.set_bool("restart_on_activate", false);
    r.set_bool("close_when_inactive", true);
    r.set_bool("clear_on_media_end", false);
    let source = Source::create_private(
        "ffmpeg_source",
        &format!("{filter_name} (background video)"),
        Some(&d),
    );
    if source.is_none() {
        log::warn!("cannot create a media source (is obs-ffmpeg loaded?); using blur");
    }
    source.map(|source| VideoBackground {
        source,
        path: path.to_path_buf(),
        looping,
        active: false,
        active_since: 0,
        empty_logged: false,
    })
}

/// Light wrap planes for `base` (the final draw's uniforms, background bound): Q = (1 - a) * B
/// reduced like the blur (`d = clamp(round(sigma / 4), 1, 8)`) into `reduce`, blurred by the
/// two BlurPass directions through `blur_h` into `wrap`. On success binds them in `base`
/// with `strength` and the reduced geometry. `solid`: the background is `bg_color`.
#[allow(clippy::too_many_arguments)]
fn light_wrap<'a>(
    gfx: &Gfx<'_>,
    shader: &Shader,
    reduce: &mut TexRender,
    blur_h: &mut TexRender,
    wrap: &'a mut TexRender,
    base: &mut Uniforms<'a>,
    sigma: f32,
    solid: bool,
    strength: f32,
) {
    let (w, h) = (base.frame_size[0] as u32, base.frame_size[1] as u32);
    let d = ((sigma / 4.0).round() as u32).clamp(1, MAX_BLUR_REDUCTION as u32);
    let (sw, sh) = (w.div_ceil(d), h.div_ceil(d));
    let sigma_small = sigma / d as f32;
    let mut u: Uniforms<'_> = Uniforms {
        small_size: [sw as f32, sh as f32],
        block: d as i32,
        radius: (3.0 * sigma_small).ceil() as i32,
        sigma: sigma_small,
        ..*base
    };
    if solid {
        u.bg_premultiplied = -1.0;
    }
    if !shader.draw_into(gfx, reduce, &u, c"ReduceBackground", sw, sh) {
        return;
    }
    let reduce: &TexRender = reduce;
    u.blurred = reduce.texture();
    u.direction = [1.0, 0.0];
    if !shader.draw_into(gfx, blur_h, &u, c"BlurPass", sw, sh) {
        return;
    }
    let blur_h: &TexRender = blur_h;
    u.blurred = blur_h.texture();
    u.direction = [0.0, 1.0];
    if !shader.draw_into(gfx, wrap, &u, c"BlurPass", sw, sh) {
        return;
    }
    let wrap: &'a TexRender = wrap;
    base.wrapped = wrap.texture();
    base.wrap_strength = if base.wrapped.is_some() {
        strength
    } else {
        0.0
    };
    base.small_size = u.small_size;
    // As preprocess::BilinearAxis computes its scale.
    base.blur_scale = [sw as f32 / w as f32, sh as f32 / h as f32];
}

/// The three reduced-size targets of the blur.
struct BlurTargets<'a> {
    reduce: &'a mut TexRender,
    blur_h: &'a mut TexRender,
    blur_v: &'a mut TexRender,
}

impl<'a> BlurTargets<'a> {
    /// Blur for a sigma of `sigma` output pixels: Reduce by
    /// `d = clamp(round(sigma / 4), 1, 8)`, then the two BlurPass directions with
    /// `sigma / d` (radius `ceil(3 sigma / d)`). Returns `base` with the blurred planes bound
    /// and `blur_enabled` set, or `None` when a pass could not run.
    fn run(
        self,
        gfx: &Gfx<'_>,
        shader: &Shader,
        base: Uniforms<'a>,
        sigma: f32,
    ) -> Option<Uniforms<'a>> {
        let (w, h) = (base.frame_size[0] as u32, base.frame_size[1] as u32);
        let d = ((sigma / 4.0).round() as u32).clamp(1, MAX_BLUR_REDUCTION as u32);
        let (sw, sh) = (w.div_ceil(d), h.div_ceil(d));
        let sigma_small = sigma / d as f32;
        let mut u = Uniforms {
            small_size: [sw as f32, sh as f32],
            block: d as i32,
            radius: (3.0 * sigma_small).ceil() as i32,
            sigma: sigma_small,
            ..base
        };
        if !shader.draw_into(gfx, self.reduce, &u, c"Reduce", sw, sh) {
            return None;
        }
        let reduce: &'a TexRender = self.reduce;
        u.blurred = reduce.texture();
        u.direction = [1.0, 0.0];
        if !shader.draw_into(gfx, self.blur_h, &u, c"BlurPass", sw, sh) {
            return None;
        }
        let blur_h: &'a TexRender = self.blur_h;
        u.blurred = blur_h.texture();
        u.direction = [0.0, 1.0];
        if !shader.draw_into(gfx, self.blur_v, &u, c"BlurPass", sw, sh) {
            return None;
        }
        let blur_v: &'a TexRender = self.blur_v;
        u.blurred = blur_v.texture();
        // As preprocess::BilinearAxis computes its scale.
        u.blur_scale = [sw as f32 / w as f32, sh as f32 / h as f32];
        u.blur_enabled = 1.0;
        Some(u)
    }
}

impl VideoFilter for AiBackground {
    const ID: &'static str = "ai_background_filter";

    fn display_name() -> &'static CStr {
        module::static_text(settings::T_NAME)
    }

    fn create(data: DataRef<'_>, ctx: FilterContext) -> Self {
        if settings::migrate(data) {
            log::info!(
                "'{}': the hidden weights_path setting moved to \"Custom weights\"",
                ctx.name()
            );
        }
        let gpu = {
            let g = GraphicsGuard::enter();
            match Gpu::new(&g.gfx()) {
                Ok(gpu) => Some(gpu),
                Err(e) => {
                    log::error!("'{}': {e}; the filter passes the video through", ctx.name());
                    None
                }
            }
        };
        let worker = match Worker::spawn(WORKER_THREAD) {
            Ok(w) => Some(w),
            Err(e) => {
                log::error!(
                    "'{}': cannot start the worker thread: {e}; passing through",
                    ctx.name()
                );
                None
            }
        };
        let filter = AiBackground {
            ctx,
            settings: Mutex::new(Arc::new(Settings::default())),
            worker,
            render: Mutex::new(RenderState {
                gpu,
                ..Default::default()
            }),
            bg: Mutex::new(BackgroundState::default()),
            shown: Mutex::new(None),
            tick: AtomicU64::new(0),
            status: Mutex::new((None, None)),
            new_async_frame: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
        };
        filter.update(data);
        filter
    }

    fn update(&self, data: DataRef<'_>) {
        let s = Settings::from_data(data);
        let retired = self.update_background(&s);
        *self.settings.lock() = Arc::new(s);
        self.poisoned.store(false, Ordering::Relaxed);
        retired.into_iter().for_each(VideoBackground::retire);
    }

    fn defaults(data: DataRef<'_>) {
        settings::defaults(data);
    }

    fn properties(filter: Option<&Self>) -> Properties {
        let parent = filter.and_then(|f| f.ctx.parent().map(|p| p.name()));
        // The settings the dialog shows, which may be newer than the ones in use (updates
        // apply on the next video tick).
        let (problem, model_problem) = filter
            .map(|f| {
                let data = f.ctx.as_source().settings();
                let s = Settings::from_data(data.as_ref());
                (f.problem_for(&s), f.model_problem_for(&s))
            })
            .unwrap_or_default();
        settings::properties(parent.as_deref(), problem.as_ref(), model_problem.as_ref())
    }

    fn video_tick(&self, _seconds: f32) {
        let tick = self.tick.fetch_add(1, Ordering::Relaxed) + 1;
        self.tick_background(tick);
        if tick % STATUS_TICKS == 0 {
            self.refresh_status();
        }
    }

    fn video_render(&self, gfx: &Gfx<'_>) {
        let t0 = Instant::now();
        self.render_frame(gfx);
        let mut rs = self.render.lock();
        rs.render_calls += 1;
        rs.render_time += t0.elapsed();
    }

    fn context(&self) -> FilterContext {
        self.ctx
    }

    /// The target's colour space when the caller takes it, else the caller's last choice
    /// (what OBS 29's own filters answer); the composite is mapped into whatever space the
    /// render target then has ([`OutputMapping`]).
    fn color_space(&self, preferred: &[ColorSpace]) -> ColorSpace {
        let source = self
            .ctx
            .target()
            .map_or(ColorSpace::Srgb, |t| t.color_space(&FRAME_SPACES));
        match preferred.last() {
            Some(&last) if !preferred.contains(&source) => last,
            _ => source,
        }
    }

    fn async_frame(&self) {
        self.new_async_frame.store(true, Ordering::Relaxed);
    }

    fn render_panicked(&self) {
        self.poisoned.store(true, Ordering::Relaxed);
    }

    fn procs() -> Vec<Proc<Self>> {
        vec![
            Proc {
                decl: "void ai_background_mask(in ptr dst, in int capacity, in ptr dst_gain, \
                       out int width, out int height, out int serial, out int frame, out int gain_len, \
                       out float hold_band)",
                call: AiBackground::proc_mask,
            },
            Proc {
                decl: "void ai_background_stats(out string json)",
                call: AiBackground::proc_stats,
            },
            Proc {
                decl: "void ai_background_inject_fault(in string kind, in int count, out bool ok)",
                call: AiBackground::proc_inject_fault,
            },
        ]
    }
}

impl Drop for AiBackground {
    fn drop(&mut self) {
        // Stop the worker first (joins within one inference), then give back the background
        // video's activation; GPU objects free themselves in the graphics context.
        self.worker = None;
        if let Some(v) = self.bg.get_mut().video.take() {
            v.retire();
        }
    }
}
