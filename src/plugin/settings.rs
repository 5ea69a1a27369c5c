//! The filter's settings: keys, locale texts, defaults, ranges, parsing and the properties
//! dialog. Every settings key and locale key is named once, here.

use crate::composite::{Fit, DEFAULT_FEATHER, DEFAULT_LIGHT_WRAP, DEFAULT_THRESHOLD};
use crate::device::DeviceChoice;
use crate::model::Preset;
use crate::obs::data::DataRef;
use crate::obs::module::text;
use crate::obs::properties::{PathKind, Properties, PropertiesRef};
use crate::pipeline::{PipelineSettings, DEFAULT_SMOOTHING};
use crate::postprocess::REFINE_CAPTURE_SCALE;
use std::path::PathBuf;

// ---- settings keys (stored in OBS scene collections: never rename) --------------------
pub const S_MODE: &str = "mode";
pub const S_BLUR: &str = "blur_strength";
pub const S_THRESHOLD: &str = "threshold";
pub const S_FEATHER: &str = "feather";
pub const S_SMOOTHING: &str = "smoothing";
pub const S_REFINE: &str = "refine";
pub const S_MODEL: &str = "model";
pub const S_DEVICE: &str = "device";
pub const S_THREADS: &str = "cpu_threads";
pub const S_EVERY_N: &str = "every_n_frames";
pub const S_IMAGE: &str = "image_path";
pub const S_VIDEO: &str = "video_path";
pub const S_VIDEO_LOOP: &str = "video_loop";
pub const S_SOURCE: &str = "source";
pub const S_FIT: &str = "fit";
pub const S_COLOR: &str = "color";
pub const S_SHOW_MASK: &str = "show_mask";
pub const S_FOREGROUND: &str = "estimate_foreground";
pub const S_LIGHT_WRAP: &str = "light_wrap";
pub const S_MATCH_VIDEO: &str = "match_video";
/// An info text in the dialog, never stored: why the chosen background cannot be used.
pub const S_STATUS: &str = "background_status";
/// An info text in the dialog, never stored: how to tune the mask.
pub const S_MASK_HELP: &str = "mask_help";
/// An info text in the dialog, never stored: how to save CPU.
pub const S_SPEED_HELP: &str = "speed_help";
/// The "Custom weights" file picker (Model = [`MODEL_CUSTOM`]): a `.safetensors` file with
/// the embedded weights' keys and shapes (`models/*.safetensors`, what `ai-background train`
/// writes); empty = the built-in weights of [`S_CUSTOM_MODEL`].
pub const S_CUSTOM_WEIGHTS: &str = "custom_weights";
/// Which network a custom file is for: [`MODEL_FAST`] (landscape input `[1, 3, 144, 256]`,
/// `ai-background train`'s default) or [`MODEL_QUALITY`] (square, `[1, 3, 256, 256]`,
/// `train --preset square`). The file cannot say it: both presets have the same 110 tensors
/// with the same shapes, and `train` writes no metadata.
pub const S_CUSTOM_MODEL: &str = "custom_model";
/// An info text in the dialog, never stored: why the custom weights cannot be used.
pub const S_MODEL_STATUS: &str = "model_status";
/// Legacy, not in the dialog: the hidden weights setting of scene collections from before
/// "Custom weights" (a `.safetensors` file for the preset of [`S_MODEL`]). [`migrate`] moves
/// it to [`S_CUSTOM_WEIGHTS`] when a filter is created; [`Settings::from_data`] still honours
/// it when it arrives later (e.g. through obs-websocket's `SetSourceFilterSettings`).
pub const S_WEIGHTS: &str = "weights_path";

// ---- list values -------------------------------------------------------------------------
pub const MODE_BLUR: &str = "blur";
pub const MODE_IMAGE: &str = "image";
pub const MODE_VIDEO: &str = "video";
pub const MODE_SOURCE: &str = "source";
pub const MODE_COLOR: &str = "color";
pub const MODE_TRANSPARENT: &str = "transparent";
pub const MODEL_FAST: &str = "fast";
pub const MODEL_QUALITY: &str = "quality";
pub const MODEL_CUSTOM: &str = "custom";
pub const FIT_COVER: &str = "cover";
pub const FIT_CONTAIN: &str = "contain";
pub const FIT_STRETCH: &str = "stretch";

// ---- locale keys (locale/*.ini) ----------------------------------------------------------
pub const T_NAME: &str = "AIBackground";
pub const T_MODE: &str = "Mode";
pub const T_MODE_BLUR: &str = "Mode.Blur";
pub const T_MODE_IMAGE: &str = "Mode.Image";
pub const T_MODE_VIDEO: &str = "Mode.Video";
pub const T_MODE_SOURCE: &str = "Mode.Source";
pub const T_MODE_COLOR: &str = "Mode.Color";
pub const T_MODE_TRANSPARENT: &str = "Mode.Transparent";
pub const T_BLUR: &str = "BlurStrength";
pub const T_THRESHOLD: &str = "Threshold";
pub const T_THRESHOLD_HINT: &str = "Threshold.Hint";
pub const T_FEATHER: &str = "Feather";
pub const T_FEATHER_HINT: &str = "Feather.Hint";
pub const T_SMOOTHING: &str = "Smoothing";
pub const T_SMOOTHING_HINT: &str = "Smoothing.Hint";
pub const T_REFINE: &str = "Refine";
pub const T_REFINE_HINT: &str = "Refine.Hint";
pub const T_MODEL: &str = "Model";
pub const T_MODEL_FAST: &str = "Model.Fast";
pub const T_MODEL_QUALITY: &str = "Model.Quality";
pub const T_MODEL_CUSTOM: &str = "Model.Custom";
pub const T_CUSTOM_WEIGHTS: &str = "CustomWeights";
pub const T_CUSTOM_WEIGHTS_FILTER: &str = "CustomWeights.Filter";
pub const T_CUSTOM_MODEL: &str = "CustomModel";
pub const T_CUSTOM_MODEL_HINT: &str = "CustomModel.Hint";
pub const T_DEVICE: &str = "Device";
pub const T_DEVICE_AUTO: &str = "Device.Auto";
pub const T_DEVICE_CPU: &str = "Device.CPU";
pub const T_DEVICE_CUDA: &str = "Device.CUDA";
pub const T_DEVICE_METAL: &str = "Device.Metal";
pub const T_THREADS: &str = "Threads";
pub const T_THREADS_HINT: &str = "Threads.Hint";
pub const T_EVERY_N: &str = "EveryNFrames";
pub const T_EVERY_N_HINT: &str = "EveryNFrames.Hint";
pub const T_IMAGE: &str = "ImagePath";
pub const T_IMAGE_FILTER: &str = "ImagePath.Filter";
pub const T_VIDEO: &str = "VideoPath";
pub const T_VIDEO_FILTER: &str = "VideoPath.Filter";
pub const T_VIDEO_LOOP: &str = "VideoLoop";
pub const T_SOURCE: &str = "Source";
pub const T_FIT: &str = "Fit";
pub const T_FIT_COVER: &str = "Fit.Cover";
pub const T_FIT_CONTAIN: &str = "Fit.Contain";
pub const T_FIT_STRETCH: &str = "Fit.Stretch";
pub const T_COLOR: &str = "Color";
pub const T_SHOW_MASK: &str = "ShowMask";
pub const T_SHOW_MASK_HINT: &str = "ShowMask.Hint";
pub const T_FOREGROUND: &str = "EstimateForeground";
pub const T_FOREGROUND_HINT: &str = "EstimateForeground.Hint";
pub const T_LIGHT_WRAP: &str = "LightWrap";
pub const T_LIGHT_WRAP_HINT: &str = "LightWrap.Hint";
pub const T_MATCH_VIDEO: &str = "MatchVideo";
pub const T_MATCH_VIDEO_HINT: &str = "MatchVideo.Hint";
pub const T_MASK_HELP: &str = "MaskHelp";
pub const T_SPEED_HELP: &str = "SpeedHelp";
pub const T_STATUS_NO_IMAGE: &str = "Status.NoImage";
pub const T_STATUS_IMAGE_MISSING: &str = "Status.ImageMissing";
pub const T_STATUS_IMAGE_UNREADABLE: &str = "Status.ImageUnreadable";
pub const T_STATUS_NO_VIDEO: &str = "Status.NoVideo";
pub const T_STATUS_VIDEO_MISSING: &str = "Status.VideoMissing";
pub const T_STATUS_VIDEO_NO_PICTURE: &str = "Status.VideoNoPicture";
pub const T_STATUS_NO_SOURCE: &str = "Status.NoSource";
pub const T_STATUS_NO_SOURCES: &str = "Status.NoSources";
pub const T_STATUS_SOURCE_MISSING: &str = "Status.SourceMissing";
pub const T_STATUS_SOURCE_IS_SELF: &str = "Status.SourceIsSelf";
pub const T_STATUS_NO_WEIGHTS: &str = "Status.NoWeights";
pub const T_STATUS_WEIGHTS_MISSING: &str = "Status.WeightsMissing";
pub const T_STATUS_WEIGHTS_UNUSABLE: &str = "Status.WeightsUnusable";

/// Every locale key the filter uses (each `locale/*.ini` must define exactly these).
#[cfg(test)]
pub const ALL_TEXT_KEYS: &[&str] = &[
    T_NAME,
    T_MODE,
    T_MODE_BLUR,
    T_MODE_IMAGE,
    T_MODE_VIDEO,
    T_MODE_SOURCE,
    T_MODE_COLOR,
    T_MODE_TRANSPARENT,
    T_BLUR,
    T_THRESHOLD,
    T_THRESHOLD_HINT,
    T_FEATHER,
    T_FEATHER_HINT,
    T_SMOOTHING,
    T_SMOOTHING_HINT,
    T_REFINE,
    T_REFINE_HINT,
    T_MODEL,
    T_MODEL_FAST,
    T_MODEL_QUALITY,
    T_MODEL_CUSTOM,
    T_CUSTOM_WEIGHTS,
    T_CUSTOM_WEIGHTS_FILTER,
    T_CUSTOM_MODEL,
    T_CUSTOM_MODEL_HINT,
    T_DEVICE,
    T_DEVICE_AUTO,
    T_DEVICE_CPU,
    T_DEVICE_CUDA,
    T_DEVICE_METAL,
    T_THREADS,
    T_THREADS_HINT,
    T_EVERY_N,
    T_EVERY_N_HINT,
    T_IMAGE,
    T_IMAGE_FILTER,
    T_VIDEO,
    T_VIDEO_FILTER,
    T_VIDEO_LOOP,
    T_SOURCE,
    T_FIT,
    T_FIT_COVER,
    T_FIT_CONTAIN,
    T_FIT_STRETCH,
    T_COLOR,
    T_SHOW_MASK,
    T_SHOW_MASK_HINT,
    T_FOREGROUND,
    T_FOREGROUND_HINT,
    T_LIGHT_WRAP,
    T_LIGHT_WRAP_HINT,
    T_MATCH_VIDEO,
    T_MATCH_VIDEO_HINT,
    T_MASK_HELP,
    T_SPEED_HELP,
    T_STATUS_NO_IMAGE,
    T_STATUS_IMAGE_MISSING,
    T_STATUS_IMAGE_UNREADABLE,
    T_STATUS_NO_VIDEO,
    T_STATUS_VIDEO_MISSING,
    T_STATUS_VIDEO_NO_PICTURE,
    T_STATUS_NO_SOURCE,
    T_STATUS_NO_SOURCES,
    T_STATUS_SOURCE_MISSING,
    T_STATUS_SOURCE_IS_SELF,
    T_STATUS_NO_WEIGHTS,
    T_STATUS_WEIGHTS_MISSING,
    T_STATUS_WEIGHTS_UNUSABLE,
];

/// The locales shipped in `locale/` (installed to `data/locale/`).
#[cfg(test)]
pub const LOCALES: &[&str] = &[
    "en-US", "de-DE", "es-ES", "fr-FR", "ja-JP", "pt-BR", "zh-CN",
];

// ---- defaults and ranges -----------------------------------------------------------------
/// Default blur strength: Gaussian sigma in output pixels (16 px blurs a 720p room well).
pub const DEFAULT_BLUR: i64 = 16;
/// Blur strength range in whole output pixels (an integer slider); 0 = no blur. Scene
/// collections from before it was an integer store a double: OBS reads either type with
/// `obs_data_get_int` (truncating, as the dialog shows it).
pub const BLUR_RANGE: (i32, i32) = (0, 100);
/// Default temporal smoothing (the engine's `pipeline::DEFAULT_SMOOTHING`).
pub const DEFAULT_SMOOTHING_F64: f64 = DEFAULT_SMOOTHING as f64;
/// Default edge refinement (guided upsampling: the worker computes the guided filter's
/// coefficients at the model size, the effect applies them at full resolution): on. On the
/// annotated development sets it lifts boundary F by 0.013 to 0.015 and mean IoU by 0.004 to
/// 0.005 over no refinement (landscape, README); `docs/obs-plugin.md` has its cost.
pub const DEFAULT_REFINE: bool = true;
/// Default foreground colour estimation in the replace modes: on (`composite::EdgeSettings`).
pub const DEFAULT_FOREGROUND: bool = true;
/// Default light wrap strength (0..1), `composite::DEFAULT_LIGHT_WRAP`.
pub const DEFAULT_LIGHT_WRAP_F64: f64 = DEFAULT_LIGHT_WRAP as f64;
/// Default: run the segmenter on every frame.
pub const DEFAULT_EVERY_N: i64 = 1;
/// "Process every N frames" range.
pub const EVERY_N_RANGE: (i32, i32) = (1, 10);
/// Default background colour, `0xAABBGGRR` as OBS stores colours: opaque chroma green
/// (R 0, G 177, B 64).
pub const DEFAULT_COLOR: i64 = 0xFF40_B100;

/// What replaces the background.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// The frame's own background, blurred.
    #[default]
    Blur,
    /// An image file.
    Image,
    /// A video file, played by a private `ffmpeg_source`.
    Video,
    /// Another OBS source.
    Source,
    /// A solid colour.
    Color,
    /// Nothing: transparent background (premultiplied alpha).
    Transparent,
}

impl Mode {
    fn parse(s: &str) -> Mode {
        match s {
            MODE_IMAGE => Mode::Image,
            MODE_VIDEO => Mode::Video,
            MODE_SOURCE => Mode::Source,
            MODE_COLOR => Mode::Color,
            MODE_TRANSPARENT => Mode::Transparent,
            _ => Mode::Blur,
        }
    }
}

/// Everything the user set, parsed and clamped. Cheap to clone.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Background mode.
    pub mode: Mode,
    /// Gaussian sigma of the blur in output pixels, `BLUR_RANGE`.
    pub blur_sigma: f32,
    /// Probability at which a pixel is person, 0..1.
    pub threshold: f32,
    /// Width of the soft edge in probability units, 0..1.
    pub feather: f32,
    /// Temporal smoothing strength, 0..1.
    pub smoothing: f32,
    /// Guided-filter edge refinement (captures at twice the model size).
    pub refine: bool,
    /// Model preset (Fast = landscape 256x144, Quality = square 256x256); with custom
    /// weights the one picked in [`S_CUSTOM_MODEL`].
    pub preset: Preset,
    /// "Custom weights" is the chosen model.
    pub custom: bool,
    /// Compute device.
    pub device: DeviceChoice,
    /// CPU threads for the network, 1 or 2 ([`PipelineSettings::threads`]).
    pub threads: usize,
    /// Run the segmenter on every N-th frame, `EVERY_N_RANGE`.
    pub every_n: u32,
    /// Background image file.
    pub image_path: PathBuf,
    /// Background video file.
    pub video_path: PathBuf,
    /// Loop the background video.
    pub video_loop: bool,
    /// Name of the OBS source used as background.
    pub source_name: String,
    /// How images, videos and sources are fitted to the frame.
    pub fit: Fit,
    /// Background colour, straight RGBA 0..255.
    pub color: [u8; 4],
    /// Show the person alpha as grey instead of the composite.
    pub show_mask: bool,
    /// Delay the video by the mask's latency (up to [`super::filter::FRAME_RING`] - 1 frames)
    /// so that each frame is composited with the mask computed from it.
    pub match_video: bool,
    /// The weights file to load: the "Custom weights" file (or the legacy hidden
    /// [`S_WEIGHTS`]), empty for the embedded weights.
    pub weights_path: PathBuf,
    /// Modification time of `weights_path` when the settings were read (`None`: no file,
    /// or unreadable): a file rewritten in place (a new `ai-background train` run) is
    /// loaded again on the next settings change.
    pub weights_modified: Option<std::time::SystemTime>,
    /// Foreground colour estimation in the replace modes.
    pub estimate_foreground: bool,
    /// Light wrap strength, 0..1 (image, video, source and colour backgrounds).
    pub light_wrap: f32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mode: Mode::Blur,
            blur_sigma: DEFAULT_BLUR as f32,
            threshold: DEFAULT_THRESHOLD,
            feather: DEFAULT_FEATHER,
            smoothing: DEFAULT_SMOOTHING,
            refine: DEFAULT_REFINE,
            preset: Preset::Landscape,
            custom: false,
            device: DeviceChoice::Auto,
            threads: 1,
            every_n: DEFAULT_EVERY_N as u32,
            image_path: PathBuf::new(),
            video_path: PathBuf::new(),
            video_loop: true,
            source_name: String::new(),
            fit: Fit::Cover,
            color: color_from_obs(DEFAULT_COLOR),
            show_mask: false,
            match_video: false,
            weights_path: PathBuf::new(),
            weights_modified: None,
            estimate_foreground: DEFAULT_FOREGROUND,
            light_wrap: DEFAULT_LIGHT_WRAP,
        }
    }
}

/// Converts OBS's `0xAABBGGRR` colour integer to straight RGBA bytes.
pub fn color_from_obs(v: i64) -> [u8; 4] {
    let v = v as u32;
    [v as u8, (v >> 8) as u8, (v >> 16) as u8, (v >> 24) as u8]
}

fn unit(v: f64) -> f32 {
    if v.is_finite() {
        v.clamp(0.0, 1.0) as f32
    } else {
        0.0
    }
}

impl Settings {
    /// Reads settings written by the dialog (or a scene collection), clamping every value to
    /// its range; unknown list values fall back to the defaults.
    pub fn from_data(d: DataRef<'_>) -> Settings {
        let device = d.get_string(S_DEVICE);
        let model = d.get_string(S_MODEL);
        let custom = model == MODEL_CUSTOM;
        let (preset, weights_path) = if custom {
            (
                preset_of(&d.get_string(S_CUSTOM_MODEL)),
                PathBuf::from(d.get_string(S_CUSTOM_WEIGHTS)),
            )
        } else {
            (preset_of(&model), PathBuf::from(d.get_string(S_WEIGHTS)))
        };
        let weights_modified = (!weights_path.as_os_str().is_empty())
            .then(|| {
                std::fs::metadata(&weights_path)
                    .and_then(|m| m.modified())
                    .ok()
            })
            .flatten();
        Settings {
            mode: Mode::parse(&d.get_string(S_MODE)),
            blur_sigma: d
                .get_int(S_BLUR)
                .clamp(BLUR_RANGE.0 as i64, BLUR_RANGE.1 as i64) as f32,
            threshold: unit(d.get_double(S_THRESHOLD)),
            feather: unit(d.get_double(S_FEATHER)),
            smoothing: unit(d.get_double(S_SMOOTHING)),
            refine: d.get_bool(S_REFINE),
            preset,
            custom,
            device: device.parse().unwrap_or_else(|_| {
                if !device.is_empty() {
                    log::warn!("unknown device '{device}' in the settings, using auto");
                }
                DeviceChoice::Auto
            }),
            threads: d.get_int(S_THREADS).clamp(1, 2) as usize,
            every_n: d
                .get_int(S_EVERY_N)
                .clamp(EVERY_N_RANGE.0 as i64, EVERY_N_RANGE.1 as i64) as u32,
            image_path: PathBuf::from(d.get_string(S_IMAGE)),
            video_path: PathBuf::from(d.get_string(S_VIDEO)),
            video_loop: d.get_bool(S_VIDEO_LOOP),
            source_name: d.get_string(S_SOURCE),
            fit: d.get_string(S_FIT).parse().unwrap_or_default(),
            color: color_from_obs(d.get_int(S_COLOR)),
            show_mask: d.get_bool(S_SHOW_MASK),
            match_video: d.get_bool(S_MATCH_VIDEO),
            weights_path,
            weights_modified,
            estimate_foreground: d.get_bool(S_FOREGROUND),
            light_wrap: unit(d.get_double(S_LIGHT_WRAP)),
        }
    }

    /// The pipeline settings that travel to the worker with each frame.
    pub fn pipeline(&self) -> PipelineSettings {
        PipelineSettings {
            smoothing: self.smoothing,
            refine: self.refine,
            threads: self.threads,
            ..Default::default()
        }
    }

    /// Size of the frame the segmenter gets: the model input, times
    /// [`REFINE_CAPTURE_SCALE`] with edge refinement (the size at which the worker computes
    /// the guided filter's coefficients; the effect applies them at full resolution).
    pub fn capture_size(&self) -> (u32, u32) {
        let (w, h) = self.preset.input_size();
        let k = if self.refine { REFINE_CAPTURE_SCALE } else { 1 };
        ((w * k) as u32, (h * k) as u32)
    }
}

/// The preset of a Model list value: Quality is square, anything else Fast (landscape).
fn preset_of(model: &str) -> Preset {
    if model == MODEL_QUALITY {
        Preset::Square
    } else {
        Preset::Landscape
    }
}

/// Moves the legacy hidden [`S_WEIGHTS`] of an old scene collection into the dialog's
/// "Custom weights": Model becomes [`MODEL_CUSTOM`], [`S_CUSTOM_MODEL`] the preset it was
/// used with, [`S_CUSTOM_WEIGHTS`] the file, and [`S_WEIGHTS`] is emptied (so choosing Fast
/// later really means the built-in weights). Returns whether anything changed. The filter
/// calls it on its settings when it is created (scene collection load).
pub fn migrate(d: DataRef<'_>) -> bool {
    let legacy = d.get_string(S_WEIGHTS);
    if legacy.is_empty() {
        return false;
    }
    let model = d.get_string(S_MODEL);
    if model != MODEL_CUSTOM {
        let preset = if model == MODEL_QUALITY {
            MODEL_QUALITY
        } else {
            MODEL_FAST
        };
        d.set_string(S_CUSTOM_MODEL, preset);
        d.set_string(S_CUSTOM_WEIGHTS, &legacy);
        d.set_string(S_MODEL, MODEL_CUSTOM);
    }
    d.set_string(S_WEIGHTS, "");
    true
}

/// Writes the defaults.
pub fn defaults(d: DataRef<'_>) {
    d.set_default_string(S_MODE, MODE_BLUR);
    d.set_default_int(S_BLUR, DEFAULT_BLUR);
    d.set_default_double(S_THRESHOLD, DEFAULT_THRESHOLD as f64);
    d.set_default_double(S_FEATHER, DEFAULT_FEATHER as f64);
    d.set_default_double(S_SMOOTHING, DEFAULT_SMOOTHING_F64);
    d.set_default_bool(S_REFINE, DEFAULT_REFINE);
    d.set_default_string(S_MODEL, MODEL_FAST);
    d.set_default_string(S_CUSTOM_MODEL, MODEL_FAST);
    d.set_default_string(S_DEVICE, "auto");
    d.set_default_int(S_THREADS, 1);
    d.set_default_int(S_EVERY_N, DEFAULT_EVERY_N);
    d.set_default_bool(S_VIDEO_LOOP, true);
    d.set_default_string(S_FIT, FIT_COVER);
    d.set_default_int(S_COLOR, DEFAULT_COLOR);
    d.set_default_bool(S_SHOW_MASK, false);
    d.set_default_bool(S_FOREGROUND, DEFAULT_FOREGROUND);
    d.set_default_double(S_LIGHT_WRAP, DEFAULT_LIGHT_WRAP_F64);
    d.set_default_bool(S_MATCH_VIDEO, false);
}

/// Why the chosen background cannot be used (the filter then blurs the background). Shown
/// in the dialog's status line; the filter also writes a log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Image mode without a file.
    NoImage,
    /// The image file does not exist.
    ImageMissing(PathBuf),
    /// The image file exists but cannot be decoded (or is too large).
    ImageUnreadable(PathBuf),
    /// Video mode without a file.
    NoVideo,
    /// The video file does not exist.
    VideoMissing(PathBuf),
    /// The media source shows no picture (an unreadable file).
    VideoNoPicture(PathBuf),
    /// Source mode without a source picked.
    NoSource,
    /// Source mode, and there is no other video source to pick.
    NoSources,
    /// The picked source does not exist (renamed or removed).
    SourceMissing(String),
    /// The picked source is the one the filter is on.
    SourceIsSelf(String),
}

impl Problem {
    /// The status text in the user's language (`{path}` / `{name}` filled in).
    pub fn text(&self) -> String {
        let with = |key: &str, what: &str, value: &str| text(key).replace(what, value);
        match self {
            Problem::NoImage => text(T_STATUS_NO_IMAGE),
            Problem::ImageMissing(p) => {
                with(T_STATUS_IMAGE_MISSING, "{path}", &p.to_string_lossy())
            }
            Problem::ImageUnreadable(p) => {
                with(T_STATUS_IMAGE_UNREADABLE, "{path}", &p.to_string_lossy())
            }
            Problem::NoVideo => text(T_STATUS_NO_VIDEO),
            Problem::VideoMissing(p) => {
                with(T_STATUS_VIDEO_MISSING, "{path}", &p.to_string_lossy())
            }
            Problem::VideoNoPicture(p) => {
                with(T_STATUS_VIDEO_NO_PICTURE, "{path}", &p.to_string_lossy())
            }
            Problem::NoSource => text(T_STATUS_NO_SOURCE),
            Problem::NoSources => text(T_STATUS_NO_SOURCES),
            Problem::SourceMissing(n) => with(T_STATUS_SOURCE_MISSING, "{name}", n),
            Problem::SourceIsSelf(n) => with(T_STATUS_SOURCE_IS_SELF, "{name}", n),
        }
    }
}

/// What can be told from the settings alone: no file picked, a file that does not exist, no
/// source picked or none to pick, a source that does not exist or is the filter's own
/// (`parent`). `sources` are the names of the video sources that exist (the parent included).
/// Problems only the running filter sees (an unreadable image or video) are its own.
pub fn settings_problem(s: &Settings, parent: Option<&str>, sources: &[String]) -> Option<Problem> {
    match s.mode {
        Mode::Image if s.image_path.as_os_str().is_empty() => Some(Problem::NoImage),
        Mode::Image if !s.image_path.is_file() => Some(Problem::ImageMissing(s.image_path.clone())),
        Mode::Video if s.video_path.as_os_str().is_empty() => Some(Problem::NoVideo),
        Mode::Video if !s.video_path.is_file() => Some(Problem::VideoMissing(s.video_path.clone())),
        Mode::Source => {
            let name = s.source_name.as_str();
            let others = sources
                .iter()
                .filter(|n| Some(n.as_str()) != parent)
                .count();
            if name.is_empty() {
                Some(if others == 0 {
                    Problem::NoSources
                } else {
                    Problem::NoSource
                })
            } else if Some(name) == parent {
                Some(Problem::SourceIsSelf(name.to_string()))
            } else if !sources.iter().any(|n| n == name) {
                Some(Problem::SourceMissing(name.to_string()))
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Why the chosen weights are not the ones running. The previous model keeps running (the
/// built-in weights of the chosen preset when there was none): shown in the dialog's model
/// status line; the worker also writes one log line per selection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelProblem {
    /// "Custom weights" without a file: the built-in weights of the chosen preset run.
    NoWeights,
    /// The weights file does not exist.
    WeightsMissing(PathBuf),
    /// The worker could not load the file (not safetensors, wrong keys or shapes, NaN
    /// output); the engine's reason, in English.
    WeightsUnusable(PathBuf, String),
}

impl ModelProblem {
    /// The status text in the user's language (`{path}` and `{reason}` filled in).
    pub fn text(&self) -> String {
        match self {
            ModelProblem::NoWeights => text(T_STATUS_NO_WEIGHTS),
            ModelProblem::WeightsMissing(p) => {
                text(T_STATUS_WEIGHTS_MISSING).replace("{path}", &p.to_string_lossy())
            }
            ModelProblem::WeightsUnusable(p, reason) => text(T_STATUS_WEIGHTS_UNUSABLE)
                .replace("{path}", &p.to_string_lossy())
                .replace("{reason}", reason),
        }
    }
}

/// What can be told about the weights from the settings alone: "Custom weights" without a
/// file, or a file that does not exist (also for the legacy hidden [`S_WEIGHTS`]).
pub fn model_problem(s: &Settings) -> Option<ModelProblem> {
    if s.weights_path.as_os_str().is_empty() {
        s.custom.then_some(ModelProblem::NoWeights)
    } else if !s.weights_path.is_file() {
        Some(ModelProblem::WeightsMissing(s.weights_path.clone()))
    } else {
        None
    }
}

/// Shows the file picker and the preset list when Model is "Custom weights", and the model
/// status line for what the settings alone show (a file the worker refused stays reported
/// until the filter refreshes the dialog).
fn model_changed(props: PropertiesRef<'_>, d: DataRef<'_>) -> bool {
    let s = Settings::from_data(d);
    for key in [S_CUSTOM_WEIGHTS, S_CUSTOM_MODEL] {
        if let Some(p) = props.get(key) {
            p.set_visible(s.custom);
        }
    }
    let problem = model_problem(&s);
    if problem.is_some() || !s.custom {
        show_status(props, S_MODEL_STATUS, problem.map(|p| p.text()));
    }
    true
}

/// Shows `text` in the status line `key` ([`S_STATUS`], [`S_MODEL_STATUS`]), or hides the
/// line.
fn show_status(props: PropertiesRef<'_>, key: &str, text: Option<String>) {
    if let Some(p) = props.get(key) {
        p.set_visible(text.is_some());
        if let Some(text) = text {
            p.set_description(&text);
        }
    }
}

/// Shows `problem` in the background status line, or hides the line.
pub fn show_problem(props: PropertiesRef<'_>, problem: Option<&Problem>) {
    show_status(props, S_STATUS, problem.map(Problem::text));
}

/// Shows the settings that belong to the selected mode, and the status line for the new
/// settings (the filter also refreshes the dialog when a problem appears or goes away
/// while it runs).
fn mode_changed(props: PropertiesRef<'_>, d: DataRef<'_>) -> bool {
    let mode = Mode::parse(&d.get_string(S_MODE));
    let show = |key: &str, visible: bool| {
        if let Some(p) = props.get(key) {
            p.set_visible(visible);
        }
    };
    show(S_BLUR, mode == Mode::Blur);
    show(S_IMAGE, mode == Mode::Image);
    show(S_VIDEO, mode == Mode::Video);
    show(S_VIDEO_LOOP, mode == Mode::Video);
    show(S_SOURCE, mode == Mode::Source);
    show(
        S_FIT,
        matches!(mode, Mode::Image | Mode::Video | Mode::Source),
    );
    show(S_COLOR, mode == Mode::Color);
    show(S_FOREGROUND, mode != Mode::Blur);
    show(
        S_LIGHT_WRAP,
        !matches!(mode, Mode::Blur | Mode::Transparent),
    );
    // A problem seen in the settings shows at once. Without one, a background mode keeps
    // what the filter reported (an unreadable file) until the filter refreshes the dialog.
    // The dialog's source list leaves out the filter's own source (which this callback
    // cannot name): a picked source missing from the list but existing is that one.
    let sources = props
        .get(S_SOURCE)
        .map(|p| p.list_strings())
        .unwrap_or_default();
    let problem = match settings_problem(&Settings::from_data(d), None, &sources) {
        Some(Problem::SourceMissing(name))
            if crate::obs::source::Source::by_name(&name).is_some() =>
        {
            Some(Problem::SourceIsSelf(name))
        }
        p => p,
    };
    if problem.is_some() || !matches!(mode, Mode::Image | Mode::Video | Mode::Source) {
        show_problem(props, problem.as_ref());
    }
    true
}

/// Builds the dialog. `parent_name` is left out of the background source list (a source
/// cannot be its own background); `problem` fills the status line under the background
/// settings.
///
/// Layout (OBS 29 shows a tooltip only when hovering a slider's number box, and a "?" only
/// next to check boxes, so advice a streamer needs is an info text where it is seen):
/// background mode and its settings, the status line (only when the background cannot be
/// used), "Show mask" next to Threshold and Edge softness with how to tune them, then
/// smoothing, refinement, model (with "Custom weights": the file, the preset it is for and
/// the model status line `model_problem`), device, every N frames and how to save CPU.
pub fn properties(
    parent_name: Option<&str>,
    problem: Option<&Problem>,
    model_problem: Option<&ModelProblem>,
) -> Properties {
    let props = Properties::new();
    let mode = props.add_string_list(S_MODE, &text(T_MODE), false);
    for (value, key) in [
        (MODE_BLUR, T_MODE_BLUR),
        (MODE_IMAGE, T_MODE_IMAGE),
        (MODE_VIDEO, T_MODE_VIDEO),
        (MODE_SOURCE, T_MODE_SOURCE),
        (MODE_COLOR, T_MODE_COLOR),
        (MODE_TRANSPARENT, T_MODE_TRANSPARENT),
    ] {
        mode.list_add_string(&text(key), value);
    }
    mode.set_modified_callback(mode_changed);

    props
        .add_int_slider(S_BLUR, &text(T_BLUR), BLUR_RANGE.0, BLUR_RANGE.1, 1)
        .set_int_suffix(" px");

    props
        .add_path(
            S_IMAGE,
            &text(T_IMAGE),
            PathKind::File,
            &text(T_IMAGE_FILTER),
        )
        .set_modified_callback(mode_changed);
    props
        .add_path(
            S_VIDEO,
            &text(T_VIDEO),
            PathKind::File,
            &text(T_VIDEO_FILTER),
        )
        .set_modified_callback(mode_changed);
    props.add_bool(S_VIDEO_LOOP, &text(T_VIDEO_LOOP));
    let source = props.add_string_list(S_SOURCE, &text(T_SOURCE), false);
    // A picked source that is gone (or is the filter's own) stays the list's value (greyed
    // out, the status line says why): OBS's dialog would otherwise show, and store, the
    // first source of the list.
    if let Some(Problem::SourceMissing(name) | Problem::SourceIsSelf(name)) = problem {
        let i = source.list_add_string(&format!("\u{26a0} {name}"), name);
        source.list_item_disable(i);
    }
    for name in crate::obs::source::video_source_names() {
        if Some(name.as_str()) != parent_name {
            source.list_add_string(&name, &name);
        }
    }
    source.set_modified_callback(mode_changed);
    let fit = props.add_string_list(S_FIT, &text(T_FIT), false);
    for (value, key) in [
        (FIT_COVER, T_FIT_COVER),
        (FIT_CONTAIN, T_FIT_CONTAIN),
        (FIT_STRETCH, T_FIT_STRETCH),
    ] {
        fit.list_add_string(&text(key), value);
    }
    props.add_color_alpha(S_COLOR, &text(T_COLOR));
    props
        .add_bool(S_FOREGROUND, &text(T_FOREGROUND))
        .set_long_description(&text(T_FOREGROUND_HINT));
    props
        .add_float_slider(S_LIGHT_WRAP, &text(T_LIGHT_WRAP), 0.0, 1.0, 0.01)
        .set_long_description(&text(T_LIGHT_WRAP_HINT));
    let status = props.add_info(S_STATUS, " ");
    status.set_info_warning();
    show_problem(props.as_ref(), problem);

    props
        .add_bool(S_SHOW_MASK, &text(T_SHOW_MASK))
        .set_long_description(&text(T_SHOW_MASK_HINT));
    props
        .add_float_slider(S_THRESHOLD, &text(T_THRESHOLD), 0.0, 1.0, 0.01)
        .set_long_description(&text(T_THRESHOLD_HINT));
    props
        .add_float_slider(S_FEATHER, &text(T_FEATHER), 0.0, 1.0, 0.01)
        .set_long_description(&text(T_FEATHER_HINT));
    props.add_info(S_MASK_HELP, &text(T_MASK_HELP));

    props
        .add_float_slider(S_SMOOTHING, &text(T_SMOOTHING), 0.0, 1.0, 0.01)
        .set_long_description(&text(T_SMOOTHING_HINT));
    props
        .add_bool(S_MATCH_VIDEO, &text(T_MATCH_VIDEO))
        .set_long_description(&text(T_MATCH_VIDEO_HINT));
    props
        .add_bool(S_REFINE, &text(T_REFINE))
        .set_long_description(&text(T_REFINE_HINT));

    let model = props.add_string_list(S_MODEL, &text(T_MODEL), false);
    model.list_add_string(&text(T_MODEL_FAST), MODEL_FAST);
    model.list_add_string(&text(T_MODEL_QUALITY), MODEL_QUALITY);
    model.list_add_string(&text(T_MODEL_CUSTOM), MODEL_CUSTOM);
    model.set_modified_callback(model_changed);
    props
        .add_path(
            S_CUSTOM_WEIGHTS,
            &text(T_CUSTOM_WEIGHTS),
            PathKind::File,
            &text(T_CUSTOM_WEIGHTS_FILTER),
        )
        .set_modified_callback(model_changed);
    let custom = props.add_string_list(S_CUSTOM_MODEL, &text(T_CUSTOM_MODEL), false);
    custom.list_add_string(&text(T_MODEL_FAST), MODEL_FAST);
    custom.list_add_string(&text(T_MODEL_QUALITY), MODEL_QUALITY);
    custom.set_long_description(&text(T_CUSTOM_MODEL_HINT));
    custom.set_modified_callback(model_changed);
    let model_status = props.add_info(S_MODEL_STATUS, " ");
    model_status.set_info_warning();
    show_status(
        props.as_ref(),
        S_MODEL_STATUS,
        model_problem.map(ModelProblem::text),
    );

    let device = props.add_string_list(S_DEVICE, &text(T_DEVICE), false);
    device.list_add_string(&text(T_DEVICE_AUTO), "auto");
    for choice in DeviceChoice::compiled_in() {
        let key = match choice {
            DeviceChoice::Cuda(_) => T_DEVICE_CUDA,
            DeviceChoice::Metal(_) => T_DEVICE_METAL,
            _ => T_DEVICE_CPU,
        };
        device.list_add_string(&text(key), &choice.to_string());
    }
    props
        .add_int_slider(S_THREADS, &text(T_THREADS), 1, 2, 1)
        .set_long_description(&text(T_THREADS_HINT));

    props
        .add_int_slider(
            S_EVERY_N,
            &text(T_EVERY_N),
            EVERY_N_RANGE.0,
            EVERY_N_RANGE.1,
            1,
        )
        .set_long_description(&text(T_EVERY_N_HINT));
    props.add_info(S_SPEED_HELP, &text(T_SPEED_HELP));
    props
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn obs_colours_are_abgr() {
        assert_eq!(color_from_obs(0xFF40_B100), [0x00, 0xB1, 0x40, 0xFF]);
        assert_eq!(color_from_obs(0x8000_00FF), [0xFF, 0, 0, 0x80]);
    }

    fn read_locale(name: &str) -> Vec<(String, String)> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("locale")
            .join(format!("{name}.ini"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        text.lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with(';') && !l.starts_with('#'))
            .map(|l| {
                let (k, v) = l
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{name}: bad line {l:?}"));
                let v = v.trim();
                assert!(
                    v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                    "{name}: unquoted {l:?}"
                );
                (k.trim().to_string(), v[1..v.len() - 1].to_string())
            })
            .collect()
    }

    #[test]
    fn every_locale_defines_exactly_the_used_keys() {
        let mut expected: Vec<&str> = ALL_TEXT_KEYS.to_vec();
        expected.sort_unstable();
        let english = read_locale("en-US");
        for locale in LOCALES {
            let entries = read_locale(locale);
            let mut keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
            keys.sort_unstable();
            assert_eq!(
                keys, expected,
                "{locale}: keys differ from the ones the filter uses"
            );
            assert!(
                entries
                    .iter()
                    .all(|(_, v)| !v.trim().is_empty() && !v.contains('"')),
                "{locale}"
            );
            if *locale != "en-US" {
                // Translated: only names such as "CPU" or "Image" may stay as in English.
                let same = entries
                    .iter()
                    .zip(&english)
                    .filter(|(a, b)| a.1 == b.1)
                    .count();
                assert!(same <= 6, "{locale}: {same} texts identical to en-US");
            }
        }
    }

    #[test]
    fn status_texts_keep_their_placeholders() {
        let english: std::collections::HashMap<String, String> =
            read_locale("en-US").into_iter().collect();
        for locale in LOCALES {
            for (key, value) in read_locale(locale) {
                let en = &english[&key];
                for placeholder in ["{path}", "{name}", "{reason}"] {
                    assert_eq!(
                        value.contains(placeholder),
                        en.contains(placeholder),
                        "{locale}: {key} and en-US differ in {placeholder}"
                    );
                }
            }
        }
    }

    #[test]
    fn problems_seen_in_the_settings() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bg.png");
        std::fs::write(&file, b"x").unwrap();
        let missing = dir.path().join("nope.png");
        let sources = ["Cam".to_string(), "Browser".to_string()];
        let with = |mode, path: &std::path::Path, source: &str| Settings {
            mode,
            image_path: path.to_path_buf(),
            video_path: path.to_path_buf(),
            source_name: source.to_string(),
            ..Settings::default()
        };
        let check = |s: &Settings, sources: &[String]| settings_problem(s, Some("Cam"), sources);
        let none = std::path::Path::new("");
        assert_eq!(check(&with(Mode::Blur, none, ""), &sources), None);
        assert_eq!(check(&with(Mode::Color, &missing, "x"), &sources), None);
        assert_eq!(
            check(&with(Mode::Image, none, ""), &sources),
            Some(Problem::NoImage)
        );
        assert_eq!(
            check(&with(Mode::Image, &missing, ""), &sources),
            Some(Problem::ImageMissing(missing.clone()))
        );
        // A folder is not an image.
        assert_eq!(
            check(&with(Mode::Image, dir.path(), ""), &sources),
            Some(Problem::ImageMissing(dir.path().to_path_buf()))
        );
        assert_eq!(check(&with(Mode::Image, &file, ""), &sources), None);
        assert_eq!(
            check(&with(Mode::Video, none, ""), &sources),
            Some(Problem::NoVideo)
        );
        assert_eq!(
            check(&with(Mode::Video, &missing, ""), &sources),
            Some(Problem::VideoMissing(missing.clone()))
        );
        assert_eq!(check(&with(Mode::Video, &file, ""), &sources), None);
        assert_eq!(
            check(&with(Mode::Source, none, ""), &sources),
            Some(Problem::NoSource)
        );
        assert_eq!(
            check(&with(Mode::Source, none, ""), &sources[..1]),
            Some(Problem::NoSources),
            "only the filter's own source exists"
        );
        assert_eq!(
            check(&with(Mode::Source, none, "Gone"), &sources),
            Some(Problem::SourceMissing("Gone".into()))
        );
        assert_eq!(
            check(&with(Mode::Source, none, "Cam"), &sources),
            Some(Problem::SourceIsSelf("Cam".into()))
        );
        assert_eq!(check(&with(Mode::Source, none, "Browser"), &sources), None);
    }

    #[test]
    fn custom_weights_picker_filters_safetensors() {
        for locale in LOCALES {
            let entries: std::collections::HashMap<String, String> =
                read_locale(locale).into_iter().collect();
            assert!(
                entries[T_CUSTOM_WEIGHTS_FILTER].contains("(*.safetensors)"),
                "{locale}: {}",
                entries[T_CUSTOM_WEIGHTS_FILTER]
            );
        }
    }

    #[test]
    fn custom_weights_and_the_legacy_setting() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mine.safetensors");
        std::fs::write(&file, b"x").unwrap();
        let file_str = file.to_str().unwrap();
        let read = |json: &str| {
            let d = crate::obs::data::Data::from_json(json).unwrap();
            defaults(d.as_ref());
            (Settings::from_data(d.as_ref()), d)
        };
        // The dialog's "Custom weights": the file and the preset it is for.
        let (s, _) = read(&format!(
            r#"{{"model": "custom", "custom_model": "quality", "custom_weights": "{file_str}"}}"#
        ));
        assert!(s.custom && s.preset == Preset::Square && s.weights_path == file);
        assert!(s.weights_modified.is_some());
        assert_eq!(model_problem(&s), None);
        // Fast / Quality ignore the picker's file.
        let (s, _) = read(&format!(
            r#"{{"model": "quality", "custom_weights": "{file_str}"}}"#
        ));
        assert!(!s.custom && s.preset == Preset::Square && s.weights_path.as_os_str().is_empty());
        assert_eq!(model_problem(&s), None);
        // No file yet; a file that is not there.
        let (s, _) = read(r#"{"model": "custom"}"#);
        assert!(s.custom && s.preset == Preset::Landscape);
        assert_eq!(model_problem(&s), Some(ModelProblem::NoWeights));
        let missing = dir.path().join("gone.safetensors");
        let (s, _) = read(&format!(
            r#"{{"model": "custom", "custom_weights": "{}"}}"#,
            missing.to_str().unwrap()
        ));
        assert_eq!(
            model_problem(&s),
            Some(ModelProblem::WeightsMissing(missing))
        );
        // An old scene collection: the hidden weights_path with Quality is used as it is,
        // and `migrate` moves it into the dialog's settings.
        let (old, d) = read(&format!(
            r#"{{"model": "quality", "weights_path": "{file_str}"}}"#
        ));
        assert!(!old.custom && old.preset == Preset::Square && old.weights_path == file);
        assert!(migrate(d.as_ref()));
        assert!(!migrate(d.as_ref()), "migrates once");
        let s = Settings::from_data(d.as_ref());
        assert!(s.custom && s.preset == Preset::Square && s.weights_path == file);
        assert_eq!(d.as_ref().get_string(S_WEIGHTS), "");
        // Nothing to migrate without the legacy setting.
        let (_, d) = read(r#"{"model": "fast"}"#);
        assert!(!migrate(d.as_ref()));
        assert_eq!(d.as_ref().get_string(S_MODEL), MODEL_FAST);
    }

    #[test]
    fn capture_scales_for_refinement() {
        let mut s = Settings {
            refine: false,
            ..Settings::default()
        };
        assert_eq!(s.capture_size(), (256, 144));
        s.refine = true;
        let k = REFINE_CAPTURE_SCALE as u32;
        assert_eq!(s.capture_size(), (256 * k, 144 * k));
        s.preset = Preset::Square;
        assert_eq!(s.capture_size(), (256 * k, 256 * k));
    }
}
