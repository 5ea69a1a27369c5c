//! `ai-background`: the engine of the OBS "AI Background" filter on image and video files.
//!
//! ```text
//! ai-background segment photo.jpg -o mask.png
//! ai-background apply photo.jpg -o out.png --mode blur --blur 12
//! ai-background apply clip.mp4 -o out.mp4 --mode image --image beach.jpg
//! ai-background eval --images DIR --masks DIR --preset landscape --json
//! ai-background eval-video clip.mp4 --raw --json
//! ai-background bench --size 1920x1080
//! ```
//!
//! Errors print one line (`error: ...`) and exit with status 1; bad arguments exit with 2
//! (numbers are checked against the OBS filter's ranges as they are parsed). Outputs are
//! written to a temporary file beside the destination and renamed into place when complete;
//! an output that is one of the inputs is refused before anything is written. SIGINT or
//! SIGTERM stops a run (ffmpeg included) without leaving a partial file, exit status
//! 128 + the signal number; a second one ends the process at once.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use image::RgbaImage;
use indicatif::{ProgressBar, ProgressStyle};
use obs_ai_background::composite::{AlphaSettings, Background, Compositor, Fit};
use obs_ai_background::device::DeviceChoice;
use obs_ai_background::eval::{evaluate_clip, evaluate_pair, find_pairs};
use obs_ai_background::files::{load_image, refuse_same_file, AtomicOutput};
use obs_ai_background::metrics::Summary;
use obs_ai_background::model::{Preset, SegmentationBackend, Segmenter};
use obs_ai_background::postprocess::{
    RefineSettings, DEFAULT_REFINE_EPSILON, MAX_REFINE_RADIUS, REFINE_EPSILON_RANGE,
};
use obs_ai_background::video::{self, Decoder, Encoder};
use obs_ai_background::{FrameRef, MaskPipeline, PipelineSettings, PixelFormat};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "ai-background",
    version,
    about = "Person segmentation and background replacement (the engine of the OBS AI Background filter)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the person probability of an image as a grey PNG (255 = person).
    Segment {
        /// Input image (JPEG, PNG, WebP, BMP).
        image: PathBuf,
        /// Output PNG.
        #[arg(short, long)]
        output: PathBuf,
        /// Write a hard 0/255 mask cut at this probability (0..1) instead of the probability.
        #[arg(long, value_parser = parse_unit, allow_negative_numbers = true)]
        threshold: Option<f32>,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Blur, replace or remove the background of an image or a video.
    Apply(ApplyArgs),
    /// Score the segmenter on images with ground-truth masks (IoU, boundary F at 3 px).
    Eval {
        /// Folder of images (<id>.jpg/.jpeg/.png).
        #[arg(long)]
        images: PathBuf,
        /// Folder of masks (<id>.png, >= 128 = person), same size as their images.
        #[arg(long)]
        masks: PathBuf,
        /// Probability at which a pixel counts as person (0..1).
        #[arg(long, default_value_t = 0.5, value_parser = parse_unit, allow_negative_numbers = true)]
        threshold: f32,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Also write per-image scores to this CSV file.
        #[arg(long)]
        csv: Option<PathBuf>,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Measure the temporal stability of the hard mask on a video: flicker rate, still-area
    /// flicker rate, mean probability change, and mean IoU against keyed alpha masks.
    EvalVideo(EvalVideoArgs),
    /// Time each stage of the frame path (pre-processing, inference, post-processing,
    /// compositing) on a real photo scaled to a frame size.
    Bench {
        /// Frame size, WIDTHxHEIGHT (1 to 16384 each).
        #[arg(long, default_value = "1280x720", value_parser = parse_size)]
        size: (usize, usize),
        /// Frames to time (after 5 warm-up frames), 1 to 100000.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        frames: u64,
        /// Background mode to composite.
        #[arg(long, value_enum, default_value_t = Mode::Blur)]
        mode: Mode,
        /// Photo to use (default: the demo photo shipped in the repository).
        #[arg(long)]
        image: Option<PathBuf>,
        /// Time the network alone in this implementation (fused, portable, stock) against
        /// the fused CPU kernels, interleaved, and print tensor operations per frame.
        #[arg(long, value_enum)]
        path: Option<NetPath>,
        /// CPU threads for the network, 1 or 2 (the filter's "CPU threads"). Several, comma
        /// separated (`1,2`): time the fused network alone on each, interleaved frame by
        /// frame, and print the medians and each one's speed-up over the first.
        #[arg(long, value_delimiter = ',', default_value = "1",
              value_parser = clap::value_parser!(u16).range(1..=2))]
        threads: Vec<u16>,
        /// With several `--threads`: frames of one thread count in a row before the next
        /// (1: frame by frame). In blocks each count runs with its own data in the caches
        /// and its helper thread awake, as frames that come back to back; frame by frame,
        /// each frame follows the other count's (which evicted some of its data, and during
        /// which the helper went to sleep, as it does between frames 33 ms apart).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        block: u64,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Fine-tune the segmenter on images with masks and write the weights (.safetensors)
    /// for --weights and the OBS filter's "Custom weights".
    Train(TrainArgs),
}

/// Implementations of the network (`bench --path`).
#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
enum NetPath {
    /// The fused CPU kernels.
    Fused,
    /// Whole-tensor candle ops, what CUDA and Metal run.
    Portable,
    /// candle's stock ops (grouped conv2d), the previous GPU path.
    Stock,
}

/// `train --best-by` (`train::BestBy`).
#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
enum BestByArg {
    /// Mean IoU (ties: boundary F).
    Iou,
    /// Boundary F (ties: mean IoU).
    BoundaryF,
    /// Mean IoU + boundary F.
    Sum,
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// Model preset: landscape (fast, 256x144 input) or square (256x256).
    #[arg(long, default_value = "landscape", value_parser = parse_preset)]
    preset: Preset,
    /// Compute device: auto, cpu, cuda[:N], metal[:N].
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    device: DeviceChoice,
    /// Load weights from this .safetensors file instead of the embedded ones.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Refine mask edges with a guided filter using the image as guide.
    #[arg(long)]
    refine: bool,
    /// Guided-filter radius in pixels of the refinement capture, 0 to 64 (0: three times its
    /// scale).
    #[arg(long, default_value_t = 0, value_parser = parse_refine_radius)]
    refine_radius: usize,
    /// Guided-filter epsilon, 1e-6 to 1 (variance of the 0..1 guide treated as flat).
    #[arg(long, default_value_t = DEFAULT_REFINE_EPSILON, value_parser = parse_refine_eps, allow_negative_numbers = true)]
    refine_eps: f32,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Blur the background.
    Blur,
    /// Replace the background with an image (--image).
    Image,
    /// Replace the background with a colour (--color).
    Color,
    /// Make the background transparent (PNG/WebP images, WebM/MOV videos).
    Transparent,
}

#[derive(Args)]
struct ApplyArgs {
    /// Input image or video (.mp4, .mkv, .mov, .webm, ...).
    input: PathBuf,
    /// Output file; its extension picks the format.
    #[arg(short, long)]
    output: PathBuf,
    /// What replaces the background.
    #[arg(long, value_enum, default_value_t = Mode::Blur)]
    mode: Mode,
    /// Blur strength: Gaussian sigma in output pixels, 0 to 100.
    #[arg(long, default_value_t = 12.0, value_parser = parse_blur, allow_negative_numbers = true)]
    blur: f32,
    /// Background image for --mode image.
    #[arg(long)]
    image: Option<PathBuf>,
    /// How the background image is fitted.
    #[arg(long, default_value = "cover", value_parser = |s: &str| s.parse::<Fit>())]
    fit: Fit,
    /// Background colour for --mode color: #RRGGBB, #RRGGBBAA or a name (black, white,
    /// green, blue, grey).
    #[arg(long, default_value = "#00b140", value_parser = parse_color)]
    color: [u8; 4],
    /// Probability at which a pixel counts as person (0..1).
    #[arg(long, default_value_t = obs_ai_background::composite::DEFAULT_THRESHOLD, value_parser = parse_unit, allow_negative_numbers = true)]
    threshold: f32,
    /// Edge softness in probability units (0..1).
    #[arg(long, default_value_t = obs_ai_background::composite::DEFAULT_FEATHER, value_parser = parse_unit, allow_negative_numbers = true)]
    feather: f32,
    /// Temporal smoothing strength for videos (0..1).
    #[arg(long, default_value_t = obs_ai_background::pipeline::DEFAULT_SMOOTHING, value_parser = parse_unit, allow_negative_numbers = true)]
    smoothing: f32,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Args)]
struct EvalVideoArgs {
    /// Input video.
    clip: PathBuf,
    /// Folder of keyed alpha masks, one PNG per frame in name order (alpha, or grey without
    /// alpha, >= 128 = person): adds the mean IoU.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Also run the raw model (smoothing 0) on the same frames: its flicker, the ratios and
    /// the worst per-frame IoU between the two masks.
    #[arg(long)]
    raw: bool,
    /// Probability at which a pixel counts as person (0..1).
    #[arg(long, default_value_t = obs_ai_background::composite::DEFAULT_THRESHOLD)]
    threshold: f32,
    /// Temporal smoothing strength (0..1).
    #[arg(long, default_value_t = obs_ai_background::pipeline::DEFAULT_SMOOTHING)]
    smoothing: f32,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    model: ModelArgs,
}

fn parse_preset(s: &str) -> Result<Preset, String> {
    s.parse()
        .map_err(|e: obs_ai_background::EngineError| e.to_string())
}

fn parse_device(s: &str) -> Result<DeviceChoice, String> {
    s.parse()
        .map_err(|e: obs_ai_background::EngineError| e.to_string())
}

/// A finite number in `lo..=hi` (NaN and infinities refused by name).
fn parse_in_range(s: &str, lo: f32, hi: f32) -> Result<f32, String> {
    let v: f32 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a number from {lo} to {hi}"))?;
    if !v.is_finite() {
        return Err(format!("{v} is not a number from {lo} to {hi}"));
    }
    if !(lo..=hi).contains(&v) {
        return Err(format!("{v} is outside {lo} to {hi}"));
    }
    Ok(v)
}

/// Threshold, feather and smoothing: 0..1, as the filter's sliders.
fn parse_unit(s: &str) -> Result<f32, String> {
    parse_in_range(s, 0.0, 1.0)
}

fn parse_blur(s: &str) -> Result<f32, String> {
    let (lo, hi) = obs_ai_background::composite::BLUR_SIGMA_RANGE;
    parse_in_range(s, lo, hi)
}

fn parse_refine_eps(s: &str) -> Result<f32, String> {
    parse_in_range(s, REFINE_EPSILON_RANGE.0, REFINE_EPSILON_RANGE.1)
}

fn parse_refine_radius(s: &str) -> Result<usize, String> {
    s.trim()
        .parse::<usize>()
        .ok()
        .filter(|&r| r <= MAX_REFINE_RADIUS)
        .ok_or_else(|| format!("expected a whole number of pixels from 0 to {MAX_REFINE_RADIUS}"))
}

/// Largest bench frame side, in pixels.
const MAX_BENCH_SIDE: usize = 16384;

fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("expected WIDTHxHEIGHT, got '{s}'"))?;
    let parse = |v: &str| {
        v.trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| (1..=MAX_BENCH_SIDE).contains(&n))
    };
    parse(w).zip(parse(h)).ok_or_else(|| {
        format!("expected WIDTHxHEIGHT with numbers from 1 to {MAX_BENCH_SIDE}, got '{s}'")
    })
}

fn parse_color(s: &str) -> Result<[u8; 4], String> {
    let named = match s.to_ascii_lowercase().as_str() {
        "black" => Some([0, 0, 0, 255]),
        "white" => Some([255, 255, 255, 255]),
        "green" => Some([0, 177, 64, 255]),
        "blue" => Some([0, 71, 187, 255]),
        "grey" | "gray" => Some([128, 128, 128, 255]),
        _ => None,
    };
    if let Some(c) = named {
        return Ok(c);
    }
    let hex = s.trim_start_matches('#');
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16);
    let bad = || format!("expected #RRGGBB, #RRGGBBAA or a colour name, got '{s}'");
    match hex.len() {
        6 | 8 if hex.is_ascii() => {
            let a = if hex.len() == 8 { byte(6) } else { Ok(255) };
            Ok([
                byte(0).map_err(|_| bad())?,
                byte(2).map_err(|_| bad())?,
                byte(4).map_err(|_| bad())?,
                a.map_err(|_| bad())?,
            ])
        }
        _ => Err(bad()),
    }
}

impl ModelArgs {
    fn backend(&self) -> Result<Arc<dyn SegmentationBackend>> {
        let device = self.device.resolve()?;
        let segmenter = match &self.weights {
            Some(path) => Segmenter::from_file(path, self.preset, &device)?,
            None => Segmenter::new(self.preset, &device)?,
        };
        log::info!("segmenter: {}", segmenter.describe());
        Ok(Arc::new(segmenter))
    }

    fn pipeline_settings(&self, smoothing: f32) -> PipelineSettings {
        PipelineSettings {
            smoothing,
            refine: self.refine,
            refine_settings: RefineSettings {
                radius: self.refine_radius,
                epsilon: self.refine_eps,
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

/// An image upright (EXIF orientation applied), format from its content.
fn load_rgba(path: &Path) -> Result<RgbaImage> {
    Ok(load_image(path)?.to_rgba8())
}

// --- Stopping on SIGINT / SIGTERM ------------------------------------------------------------

/// The first SIGINT or SIGTERM received (its number), 0 before.
fn signal_flag() -> &'static Arc<AtomicUsize> {
    static FLAG: OnceLock<Arc<AtomicUsize>> = OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicUsize::new(0)))
}

/// Replaces the default action of SIGINT and SIGTERM (end the process at once, leaving a
/// partial output and a running ffmpeg) with a flag the work loops check, so the run unwinds:
/// children are killed and temporary files removed by their destructors. A second signal
/// while unwinding takes the default action.
fn install_signal_handlers() -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let seen = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_default(sig, Arc::clone(&seen))?;
        signal_hook::flag::register_usize(sig, Arc::clone(signal_flag()), sig as usize)?;
        signal_hook::flag::register(sig, Arc::clone(&seen))?;
    }
    Ok(())
}

/// The signal received, if any.
fn received_signal() -> Option<i32> {
    match signal_flag().load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig as i32),
    }
}

/// Fails once SIGINT or SIGTERM has arrived (the caller's destructors clean up).
fn check_interrupt() -> Result<()> {
    match received_signal() {
        Some(sig) => bail!("stopped by signal {sig}"),
        None => Ok(()),
    }
}

/// Writes `img` to `output` in `format` through a temporary file renamed into place.
fn save_image(img: &image::DynamicImage, output: &Path, format: image::ImageFormat) -> Result<()> {
    let out = AtomicOutput::new(output)?;
    img.save_with_format(out.path(), format)
        .with_context(|| format!("cannot write {}", output.display()))?;
    check_interrupt()?;
    out.persist()?;
    Ok(())
}

/// The image format of an output path's extension.
fn output_format(output: &Path) -> Result<image::ImageFormat> {
    image::ImageFormat::from_path(output).map_err(|_| {
        anyhow::anyhow!(
            "cannot write {}: unknown image extension (use .png, .jpg, .webp or .bmp)",
            output.display()
        )
    })
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    let cli = Cli::parse();
    if let Err(e) = install_signal_handlers() {
        log::warn!("cannot handle SIGINT/SIGTERM: {e}");
    }
    let result = match cli.command {
        Command::Segment {
            image,
            output,
            threshold,
            model,
        } => segment(&image, &output, threshold, &model),
        Command::Apply(args) => apply(&args),
        Command::Eval {
            images,
            masks,
            threshold,
            json,
            csv,
            model,
        } => eval(&images, &masks, threshold, json, csv.as_deref(), &model),
        Command::EvalVideo(args) => eval_video(&args),
        Command::Bench {
            frames,
            image,
            model,
            threads,
            block,
            ..
        } if threads.len() > 1 => bench_threads(&threads, frames, block, image.as_deref(), &model),
        Command::Bench {
            frames,
            image,
            model,
            path: Some(path),
            ..
        } => bench_network(path, frames, image.as_deref(), &model),
        Command::Bench {
            size,
            frames,
            mode,
            image,
            model,
            path: None,
            threads,
            ..
        } => bench(
            size,
            frames,
            mode,
            image.as_deref(),
            &model,
            threads[0].into(),
        ),
        Command::Train(args) => train(&args),
    };
    if let Err(e) = result {
        if let Some(sig) = received_signal() {
            let name = if sig == signal_hook::consts::SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
            eprintln!("error: stopped by {name}: no output written, existing files untouched");
            std::process::exit(128 + sig);
        }
        // One line: the message with its causes joined, and any line breaks that libraries put
        // in their messages folded.
        let message = format!("{e:#}");
        let one_line: Vec<&str> = message.split_whitespace().collect();
        eprintln!("error: {}", one_line.join(" "));
        std::process::exit(1);
    }
}

fn segment(input: &Path, output: &Path, threshold: Option<f32>, model: &ModelArgs) -> Result<()> {
    refuse_same_file(output, &[input])?;
    let img = load_rgba(input)?;
    let mut pipeline = MaskPipeline::new(model.backend()?);
    let (w, h) = (img.width() as usize, img.height() as usize);
    let frame = FrameRef::packed(img.as_raw(), w, h, PixelFormat::Rgba)?;
    let mut mask = pipeline
        .process(&frame, &model.pipeline_settings(0.0))?
        .clone();
    if let Some(t) = threshold {
        mask.data
            .iter_mut()
            .for_each(|p| *p = if *p >= t { 1.0 } else { 0.0 });
    }
    save_image(
        &image::DynamicImage::ImageLuma8(mask.to_gray8()),
        output,
        image::ImageFormat::Png,
    )?;
    eprintln!("wrote {} ({w}x{h})", output.display());
    Ok(())
}

/// Everything `apply` needs per frame, kept across the frames of a video.
struct Applier<'a> {
    args: &'a ApplyArgs,
    pipeline: MaskPipeline,
    compositor: Compositor,
    background_image: Option<RgbaImage>,
    settings: PipelineSettings,
}

impl Applier<'_> {
    fn frame(&mut self, frame: &FrameRef<'_>, out: &mut RgbaImage) -> Result<()> {
        let prob = self.pipeline.process(frame, &self.settings)?;
        let background = match self.args.mode {
            Mode::Blur => Background::Blur {
                sigma: self.args.blur,
            },
            Mode::Image => Background::Image {
                image: self
                    .background_image
                    .as_ref()
                    .expect("loaded for image mode"),
                fit: self.args.fit,
            },
            Mode::Color => Background::Color(self.args.color),
            Mode::Transparent => Background::Transparent,
        };
        let alpha = AlphaSettings {
            threshold: self.args.threshold,
            feather: self.args.feather,
        };
        self.compositor
            .composite(frame, prob, alpha, background, out);
        Ok(())
    }
}

fn apply(args: &ApplyArgs) -> Result<()> {
    let mut inputs = vec![args.input.as_path()];
    inputs.extend(args.image.as_deref());
    refuse_same_file(&args.output, &inputs)?;
    let background_image = match (args.mode, &args.image) {
        (Mode::Image, Some(path)) => Some(load_rgba(path)?),
        (Mode::Image, None) => bail!("--mode image needs --image PATH"),
        _ => None,
    };
    let is_video = video::is_video_path(&args.input);
    let transparent = args.mode == Mode::Transparent;
    let format = if is_video {
        None
    } else {
        Some(output_format(&args.output)?)
    };
    if !is_video && transparent {
        let ext = args
            .output
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("");
        if !matches!(ext.to_ascii_lowercase().as_str(), "png" | "webp") {
            bail!("a .{ext} image cannot hold transparency: write .png or .webp instead");
        }
    }
    let mut applier = Applier {
        args,
        pipeline: MaskPipeline::new(args.model.backend()?),
        compositor: Compositor::default(),
        background_image,
        settings: args
            .model
            .pipeline_settings(if is_video { args.smoothing } else { 0.0 }),
    };
    if is_video {
        return apply_video(args, &mut applier);
    }
    let img = load_rgba(&args.input)?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let frame = FrameRef::packed(img.as_raw(), w, h, PixelFormat::Rgba)?;
    let mut out = RgbaImage::new(0, 0);
    applier.frame(&frame, &mut out)?;
    let out = image::DynamicImage::ImageRgba8(out);
    let format = format.expect("images have a format");
    // JPEG has no alpha channel: drop it (the background is opaque in these modes).
    let out = if format == image::ImageFormat::Jpeg {
        image::DynamicImage::ImageRgb8(out.to_rgb8())
    } else {
        out
    };
    save_image(&out, &args.output, format)?;
    eprintln!("wrote {} ({w}x{h})", args.output.display());
    Ok(())
}

fn apply_video(args: &ApplyArgs, applier: &mut Applier<'_>) -> Result<()> {
    let info = video::probe(&args.input)?;
    if info.rotation != 0 {
        log::info!(
            "{} is displayed rotated by {} degrees: writing it upright at {}x{}",
            args.input.display(),
            info.rotation,
            info.width,
            info.height
        );
    }
    // Declared before the decoder and encoder, so it is dropped (the temporary file removed)
    // only after they have stopped their ffmpeg processes.
    let out_file = AtomicOutput::new(&args.output)?;
    let mut decoder = Decoder::open(&args.input, &info)?;
    let mut encoder = Encoder::create(
        out_file.path(),
        &args.output,
        &info,
        Some(&args.input),
        args.mode == Mode::Transparent,
    )?;
    let bar = ProgressBar::new(info.frames.unwrap_or(0));
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} frames, {per_sec}, eta {eta}")
            .expect("valid template"),
    );
    let (w, h) = (info.width, info.height);
    let mut buf = Vec::new();
    let mut out = RgbaImage::new(w as u32, h as u32);
    let mut count = 0u64;
    while decoder.next_frame(&mut buf)? {
        check_interrupt()?;
        let frame = FrameRef::packed(&buf, w, h, PixelFormat::Rgba)?;
        applier.frame(&frame, &mut out)?;
        encoder.write_frame(out.as_raw())?;
        count += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    check_interrupt()?;
    let report = decoder.finish()?;
    if count == 0 {
        bail!("{} has no frames", args.input.display());
    }
    encoder.finish()?;
    check_interrupt()?;
    out_file.persist()?;
    if report.undecodable > 0 {
        let of = report
            .stored_frames
            .map(|n| format!(" of {n}"))
            .unwrap_or_default();
        eprintln!(
            "warning: {}: {}{of} frames could not be decoded (ffmpeg: {}); the output has {count} \
             frames",
            args.input.display(),
            report.undecodable,
            report.first_error.as_deref().unwrap_or("no message")
        );
    }
    eprintln!("wrote {} ({count} frames, {w}x{h})", args.output.display());
    Ok(())
}

fn eval(
    images: &Path,
    masks: &Path,
    threshold: f32,
    json: bool,
    csv_path: Option<&Path>,
    model: &ModelArgs,
) -> Result<()> {
    let pairs = find_pairs(images, masks)?;
    if let Some(csv) = csv_path {
        let inputs: Vec<&Path> = pairs
            .iter()
            .flat_map(|p| [p.image.as_path(), p.mask.as_path()])
            .collect();
        refuse_same_file(csv, &inputs)?;
    }
    let mut pipeline = MaskPipeline::new(model.backend()?);
    let settings = model.pipeline_settings(0.0);
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(pairs.len() as u64)
    };
    let mut scores = Vec::with_capacity(pairs.len());
    for pair in &pairs {
        check_interrupt()?;
        scores.push(evaluate_pair(&mut pipeline, pair, &settings, threshold)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    if let Some(path) = csv_path {
        let out = AtomicOutput::new(path)?;
        let write = || -> Result<()> {
            let mut w = csv::Writer::from_path(out.path())?;
            for s in &scores {
                w.serialize(s)?;
            }
            w.flush()?;
            Ok(())
        };
        write().with_context(|| format!("cannot write {}", path.display()))?;
        check_interrupt()?;
        out.persist()?;
    }
    let summary = Summary::of(&scores);
    if json {
        let mut v = serde_json::to_value(&summary)?;
        v["preset"] = model.preset.name().into();
        v["refine"] = model.refine.into();
        println!("{v}");
    } else {
        println!("preset      {}", model.preset);
        println!("images      {}", summary.count);
        println!("mean IoU    {:.4}", summary.mean_iou);
        println!("pooled IoU  {:.4}", summary.pooled_iou);
        println!("boundary F  {:.4}  (3 px)", summary.boundary_f);
    }
    Ok(())
}

fn eval_video(args: &EvalVideoArgs) -> Result<()> {
    let mut pipeline = MaskPipeline::new(args.model.backend()?);
    let settings = args.model.pipeline_settings(args.smoothing);
    let score = evaluate_clip(
        &mut pipeline,
        &args.clip,
        &settings,
        args.threshold,
        args.raw,
        args.key.as_deref(),
    )?;
    if args.json {
        let mut v = serde_json::to_value(&score)?;
        v["clip"] = args.clip.display().to_string().into();
        v["smoothing"] = args.smoothing.into();
        v["preset"] = args.model.preset.name().into();
        v["refine"] = args.model.refine.into();
        println!("{v}");
        return Ok(());
    }
    let s = &score.smoothed;
    println!("clip                {}", args.clip.display());
    println!("frames              {}", s.frames);
    println!("smoothing           {}", args.smoothing);
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("  ({:.2}x raw)", a / b)
        } else {
            String::new()
        }
    };
    let raw = score.raw.clone().unwrap_or_default();
    let with_raw = |a: f64, b: f64| {
        if score.raw.is_some() {
            ratio(a, b)
        } else {
            String::new()
        }
    };
    println!(
        "flicker rate        {:.6}{}",
        s.flicker_rate,
        with_raw(s.flicker_rate, raw.flicker_rate)
    );
    println!(
        "still flicker rate  {:.6}{}  (still: {:.1} % of pixel steps)",
        s.still_flicker_rate,
        with_raw(s.still_flicker_rate, raw.still_flicker_rate),
        100.0 * s.still_share
    );
    println!(
        "mean |dp|           {:.6}{}",
        s.mean_abs_dp,
        with_raw(s.mean_abs_dp, raw.mean_abs_dp)
    );
    if let Some(iou) = s.mean_iou {
        println!("mean IoU            {iou:.4}");
    }
    if let Some(worst) = score.worst_iou_vs_raw {
        println!("worst IoU vs raw    {worst:.4}");
    }
    Ok(())
}

/// Path of the demo photo shipped in the repository.
fn demo_photo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo/person.jpg")
}

fn bench(
    size: (usize, usize),
    frames: u64,
    mode: Mode,
    image: Option<&Path>,
    model: &ModelArgs,
    threads: usize,
) -> Result<()> {
    let photo = image.map(Path::to_path_buf).unwrap_or_else(demo_photo);
    let src = load_rgba(&photo)?;
    let (w, h) = size;
    let frame_img = image::imageops::resize(&src, w as u32, h as u32, image::imageops::Triangle);
    let frame = FrameRef::packed(frame_img.as_raw(), w, h, PixelFormat::Rgba)?;
    let backend = model.backend()?;
    let describe = backend.describe();
    let mut pipeline = MaskPipeline::new(backend);
    let settings = PipelineSettings {
        threads,
        ..model.pipeline_settings(obs_ai_background::pipeline::DEFAULT_SMOOTHING)
    };
    let mut compositor = Compositor::default();
    let colour_bg = RgbaImage::from_pixel(64, 36, image::Rgba([20, 120, 200, 255]));
    let background = match mode {
        Mode::Blur => Background::Blur { sigma: 12.0 },
        Mode::Image => Background::Image {
            image: &colour_bg,
            fit: Fit::Cover,
        },
        Mode::Color => Background::Color([0, 177, 64, 255]),
        Mode::Transparent => Background::Transparent,
    };
    let mut out = RgbaImage::new(w as u32, h as u32);
    let mut stages: [Vec<Duration>; 5] = Default::default();
    for i in 0..frames + 5 {
        check_interrupt()?;
        let t0 = Instant::now();
        let prob = pipeline.process(&frame, &settings)?;
        let t1 = Instant::now();
        compositor.composite(&frame, prob, AlphaSettings::default(), background, &mut out);
        let t2 = Instant::now();
        if i >= 5 {
            let t = pipeline.timings();
            for (s, d) in
                stages
                    .iter_mut()
                    .zip([t.preprocess, t.inference, t.postprocess, t2 - t1, t2 - t0])
            {
                s.push(d);
            }
        }
    }
    println!(
        "{describe}, {w}x{h}, {frames} frames, refine {}, {threads} thread(s):",
        model.refine
    );
    println!("{:<14} {:>10} {:>10}", "stage", "median ms", "p90 ms");
    let names = [
        "preprocess",
        "inference",
        "postprocess",
        "composite",
        "total",
    ];
    for (name, mut s) in names.into_iter().zip(stages) {
        s.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{name:<14} {:>10.2} {:>10.2}",
            ms(s[s.len() / 2]),
            ms(s[s.len() * 9 / 10])
        );
    }
    Ok(())
}

/// The photo (default: the demo photo) scaled to the preset's input, NCHW RGB 0..1.
fn model_input(image: Option<&Path>, preset: Preset) -> Result<Vec<f32>> {
    let photo = load_rgba(&image.map(Path::to_path_buf).unwrap_or_else(demo_photo))?;
    let (w, h) = preset.input_size();
    let small = image::imageops::resize(&photo, w as u32, h as u32, image::imageops::Triangle);
    let mut input = vec![0f32; 3 * w * h];
    for (i, p) in small.pixels().enumerate() {
        for c in 0..3 {
            input[c * w * h + i] = p[c] as f32 / 255.0;
        }
    }
    Ok(input)
}

/// `bench --threads 1,2`: the fused CPU network alone on each thread count, interleaved
/// frame by frame or in blocks of `block` frames (after 5 warm-up frames of each), medians
/// and speed-ups over the first count. Around every round (one block of each count) the
/// host's second core is probed ([`TwoCoreProbe`]); the medians are printed again over the
/// rounds that had two whole cores before and after them ([`TWO_CORES`]).
fn bench_threads(
    threads: &[u16],
    frames: u64,
    block: u64,
    image: Option<&Path>,
    model: &ModelArgs,
) -> Result<()> {
    let preset = model.preset;
    let input = model_input(image, preset)?;
    let (w, h) = preset.input_size();
    let seg = Segmenter::new(preset, &candle_core::Device::Cpu)?;
    let mut output = vec![0f32; w * h];
    // Per round: the probe's ratio before it, and each count's times.
    let mut rounds: Vec<(f64, Vec<Vec<Duration>>)> = Vec::new();
    for &n in threads {
        for _ in 0..5 {
            seg.segment_threads(&input, &mut output, n.into())?;
        }
    }
    let probe = TwoCoreProbe::calibrate();
    let mut done = 0;
    while done < frames {
        let k = block.min(frames - done);
        let before = probe.ratio();
        let mut times = vec![Vec::with_capacity(k as usize); threads.len()];
        for (&n, t) in threads.iter().zip(&mut times) {
            check_interrupt()?;
            for _ in 0..k {
                let start = Instant::now();
                seg.segment_threads(&input, &mut output, n.into())?;
                t.push(start.elapsed());
            }
        }
        rounds.push((before, times));
        done += k;
    }
    let after_last = probe.ratio();
    let order = match block {
        1 => "frame by frame".to_string(),
        b => format!("in blocks of {b} frames"),
    };
    println!(
        "{}, {frames} frames, thread counts interleaved {order}:",
        seg.describe()
    );
    let print_medians = |rounds: &[&Vec<Vec<Duration>>]| {
        let medians: Vec<f64> = (0..threads.len())
            .map(|i| {
                let mut t: Vec<Duration> =
                    rounds.iter().flat_map(|r| r[i].iter().copied()).collect();
                t.sort();
                t[t.len() / 2].as_secs_f64() * 1e3
            })
            .collect();
        println!("{:<8} {:>10} {:>10}", "threads", "median ms", "speed-up");
        for (n, m) in threads.iter().zip(&medians) {
            println!("{n:<8} {m:>10.3} {:>9.2}x", medians[0] / m);
        }
    };
    print_medians(&rounds.iter().map(|r| &r.1).collect::<Vec<_>>());
    // A round counts as quiet when the probe found two whole cores before it and after it
    // (the next round's "before", or the final probe).
    let mut ratios: Vec<f64> = rounds.iter().map(|r| r.0).collect();
    ratios.push(after_last);
    let quiet: Vec<&Vec<Vec<Duration>>> = rounds
        .iter()
        .enumerate()
        .filter(|(i, _)| ratios[*i] >= TWO_CORES && ratios[i + 1] >= TWO_CORES)
        .map(|(_, r)| &r.1)
        .collect();
    ratios.sort_by(f64::total_cmp);
    println!(
        "two-core probe (compute alone on 2 threads against 1): median {:.2}x, {:.2}-{:.2}x; \
         rounds with at least {TWO_CORES:.2}x before and after: {} of {}",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1],
        quiet.len(),
        rounds.len()
    );
    if !quiet.is_empty() {
        print_medians(&quiet);
    }
    Ok(())
}

/// A round of `bench --threads` counts as run on two whole cores when [`TwoCoreProbe`]
/// measured at least this throughput ratio before and after it (2.0 is two whole cores;
/// on this project's 2-vCPU VM, whose host shares the cores, it measured 0.86-2.5x a few
/// tens of ms apart).
const TWO_CORES: f64 = 1.9;

/// Measures how much of a second core the host gives right now: the same register-only
/// arithmetic (multiply-adds on 64 accumulators, no memory traffic, about 0.3 ms) on one
/// thread, then on two at once; the ratio of their throughputs is 2.0 on two whole cores
/// and 1.0 when both threads share one (SMT siblings, or a host that time-slices them).
struct TwoCoreProbe {
    iters: u64,
}

impl TwoCoreProbe {
    /// Target time of one run of the arithmetic on one thread.
    const RUN: Duration = Duration::from_micros(300);

    /// Picks the iterations that take about [`Self::RUN`] on one thread.
    fn calibrate() -> Self {
        let mut iters = 1000;
        loop {
            let start = Instant::now();
            Self::spin(iters);
            let took = start.elapsed();
            if took >= Self::RUN / 4 || iters >= 1 << 30 {
                let scale = Self::RUN.as_secs_f64() / took.as_secs_f64().max(1e-9);
                return Self {
                    iters: ((iters as f64 * scale) as u64).max(1),
                };
            }
            iters *= 4;
        }
    }

    /// The arithmetic: `iters` steps of `x = x * b + c` on 64 independent accumulators.
    fn spin(iters: u64) -> f32 {
        let mut acc = [[0f32; 8]; 8];
        let (b, c) = (
            std::hint::black_box(0.999f32),
            std::hint::black_box(1e-3f32),
        );
        for _ in 0..iters {
            for a in acc.iter_mut() {
                for x in a.iter_mut() {
                    *x = *x * b + c;
                }
            }
        }
        std::hint::black_box(acc)[0][0]
    }

    /// Two threads' throughput over one thread's: `2 t1 / t2`, with `t1` the faster of a run
    /// before and one after the two-thread run, and `t2` the slower thread's time.
    fn ratio(&self) -> f64 {
        let one = || {
            let start = Instant::now();
            Self::spin(self.iters);
            start.elapsed()
        };
        let before = one();
        let barrier = std::sync::Barrier::new(2);
        let both = std::thread::scope(|s| {
            let other = s.spawn(|| {
                barrier.wait();
                one()
            });
            barrier.wait();
            let mine = one();
            mine.max(other.join().unwrap_or(Duration::MAX))
        });
        let t1 = before.min(one());
        2.0 * t1.as_secs_f64() / both.as_secs_f64()
    }
}

/// `bench --path`: the network alone in one implementation on `--device` against the fused
/// CPU kernels, interleaved frame by frame, medians and their ratio.
fn bench_network(
    path: NetPath,
    frames: u64,
    image: Option<&Path>,
    model: &ModelArgs,
) -> Result<()> {
    use obs_ai_background::model::{interleaved_medians, Kernels};
    let preset = model.preset;
    let (w, h) = preset.input_size();
    let input = model_input(image, preset)?;
    let kernels = match path {
        NetPath::Fused => Kernels::Cpu,
        NetPath::Portable => Kernels::Portable,
        NetPath::Stock => Kernels::Stock,
    };
    let device = match (path, model.device) {
        (NetPath::Fused, _) | (_, DeviceChoice::Auto) => DeviceChoice::Cpu.resolve()?,
        (_, choice) => choice.resolve()?,
    };
    let seg = Segmenter::with_kernels(preset, &device, kernels)?;
    let fused = Segmenter::new(preset, &candle_core::Device::Cpu)?;
    let x = candle_core::Tensor::from_slice(&input, (1, 3, h, w), &device)?;
    let (_, ops) = seg.forward_counted(&x)?;
    let t = interleaved_medians(&[&seg, &fused], &input, 5, frames as usize)?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{}, {frames} frames interleaved with the fused CPU kernels:",
        seg.describe()
    );
    println!("tensor operations per frame  {ops}");
    println!("median ms                    {:.3}", ms(t[0]));
    println!("fused CPU median ms          {:.3}", ms(t[1]));
    println!("ratio                        {:.2}x", ms(t[0]) / ms(t[1]));
    Ok(())
}

#[derive(Args)]
struct TrainArgs {
    /// Folder with images/<id>.jpg and masks/<id>.png (255 = person); repeat for more.
    #[arg(long, required = true)]
    data: Vec<PathBuf>,
    /// Output weights (.safetensors); written atomically, never over an input.
    #[arg(long)]
    out: PathBuf,
    /// Model preset to train: landscape (256x144) or square (256x256).
    #[arg(long, default_value = "landscape", value_parser = parse_preset)]
    preset: Preset,
    /// Budget: minutes of training (the schedule follows the clock).
    #[arg(long, required_unless_present = "steps")]
    minutes: Option<f64>,
    /// Budget: steps of one batch each.
    #[arg(long)]
    steps: Option<usize>,
    /// Validation folder (images/, masks/): scored every --val-every steps, the best kept.
    #[arg(long)]
    val: Option<PathBuf>,
    /// Start from these weights instead of the embedded ones.
    #[arg(long)]
    from: Option<PathBuf>,
    /// Unlabelled frames to stay close to the original model on: a folder of images or a
    /// video (default: the demo photo in assets/demo).
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Do not distil on unlabelled frames.
    #[arg(long, conflicts_with = "keep")]
    no_keep: bool,
    /// Weight of the distillation loss.
    #[arg(long, default_value_t = 1.0)]
    keep_weight: f32,
    /// Weight of the L2 pull towards the starting weights (0: off).
    #[arg(long, default_value_t = 0.0)]
    l2: f64,
    /// Extra weight of the pixels within 2 px of a mask's edge in the BCE loss (0: none;
    /// weight 1 + this).
    #[arg(long, default_value_t = obs_ai_background::train::DEFAULT_EDGE_WEIGHT)]
    edge_weight: f32,
    /// Weight of the soft Dice loss next to the BCE loss.
    #[arg(long, default_value_t = 1.0)]
    dice_weight: f32,
    /// Labelled images per step.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Validate and write an exponential moving average of the weights with this decay
    /// (e.g. 0.998; 0: off, the last step's weights).
    #[arg(long, default_value_t = 0.0)]
    ema: f64,
    /// Share of samples framed as the whole image (as the filter sees a frame), 0..1; the
    /// rest are random windows.
    #[arg(long, default_value_t = obs_ai_background::train::DEFAULT_WHOLE)]
    whole: f32,
    /// Peak learning rate (AdamW, warm-up then cosine decay).
    #[arg(long, default_value_t = 2e-4)]
    lr: f64,
    /// Steps of linear learning-rate warm-up.
    #[arg(long, default_value_t = 100)]
    warmup: usize,
    /// Validate every this many steps.
    #[arg(long, default_value_t = 200)]
    val_every: usize,
    /// The validation score that picks the checkpoint kept.
    #[arg(long, value_enum, default_value = "iou")]
    best_by: BestByArg,
    /// Random seed (sampling, augmentation).
    #[arg(long, default_value_t = 0x5eed)]
    seed: u64,
    /// Compute device: auto, cpu, cuda[:N], metal[:N].
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: DeviceChoice,
    /// After training, report the agreement of the written weights with the starting ones on
    /// frames of these videos or image folders, where the starting ones are confident.
    #[arg(long)]
    agree: Vec<PathBuf>,
    /// Print one JSON summary at the end instead of the progress bar and table.
    #[arg(long)]
    json: bool,
}

fn train(args: &TrainArgs) -> Result<()> {
    use obs_ai_background::train::{self, KeepSource, TrainConfig};
    let mut cfg = TrainConfig::new(args.data.clone(), args.out.clone(), args.preset);
    cfg.val = args.val.clone();
    cfg.from = args.from.clone();
    cfg.steps = args.steps;
    cfg.minutes = args.minutes;
    cfg.batch = args.batch;
    cfg.lr = args.lr;
    cfg.val_every = args.val_every;
    cfg.warmup = args.warmup;
    cfg.keep_weight = args.keep_weight;
    cfg.l2 = args.l2;
    cfg.edge_weight = args.edge_weight;
    cfg.dice_weight = args.dice_weight;
    cfg.ema = args.ema;
    cfg.whole = args.whole;
    cfg.best_by = match args.best_by {
        BestByArg::Iou => train::BestBy::MeanIou,
        BestByArg::BoundaryF => train::BestBy::BoundaryF,
        BestByArg::Sum => train::BestBy::Sum,
    };
    cfg.seed = args.seed;
    cfg.keep = match (&args.keep, args.no_keep) {
        (_, true) => KeepSource::None,
        (Some(p), _) => KeepSource::Path(p.clone()),
        (None, _) => KeepSource::Demo,
    };
    let device = args.device.resolve()?;
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(1000)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {percent:>3}% {msg}").expect("valid template"),
    );
    let mut on_step = |p: &train::Progress| {
        bar.set_position((p.fraction * 1000.0) as u64);
        let left = if p.fraction > 0.0 {
            p.elapsed.as_secs_f64() * (1.0 - p.fraction) / p.fraction
        } else {
            0.0
        };
        let val = p.val.as_ref().map_or(String::from("-"), |v| {
            format!("IoU {:.4} BF {:.4}", v.mean_iou, v.boundary_f)
        });
        bar.set_message(format!(
            "step {} loss {:.4} val {val} left {:.0}:{:02.0}",
            p.step,
            p.loss,
            (left / 60.0).floor(),
            left % 60.0
        ));
    };
    // One thread: on the 2-core reference machine candle's multi-threaded matmuls spent half
    // of the CPU time spinning at their barrier during training (see docs/training.md).
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    let report = train::train(&cfg, &device, &|| received_signal().is_some(), &mut on_step)?;
    bar.finish_and_clear();
    let start_bytes = match &args.from {
        Some(f) => std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?,
        None => args.preset.embedded_weights().to_vec(),
    };
    let written = std::fs::read(&args.out)?;
    let mut agreements = Vec::new();
    for source in &args.agree {
        let frames = train::keep_frames(&KeepSource::Path(source.clone()))?;
        let (agree, confident) = train::agreement(&start_bytes, &written, args.preset, &frames)?;
        agreements.push(serde_json::json!({
            "source": source, "frames": frames.len(), "agreement": agree, "confident": confident
        }));
    }
    let first =
        report.losses.iter().take(10).sum::<f32>() / report.losses.len().clamp(1, 10) as f32;
    let last =
        report.losses.iter().rev().take(10).sum::<f32>() / report.losses.len().clamp(1, 10) as f32;
    let t = &report.times;
    if args.json {
        let v = serde_json::json!({
            "out": args.out,
            "steps": report.steps,
            "interrupted": report.interrupted,
            "loss_first10": first,
            "loss_last10": last,
            "losses": report.losses,
            "fit_before": report.fit_before,
            "fit_after": report.fit_after,
            "keep_losses": report.keep_losses,
            "start": report.start,
            "best_step": report.best.as_ref().map(|b| b.0),
            "best": report.best.as_ref().map(|b| &b.1),
            "history": report.history.iter().map(|(s, v)| serde_json::json!({"step": s, "val": v})).collect::<Vec<_>>(),
            "seconds_per_image": report.seconds_per_image(),
            "agreement": agreements,
            "batch": report.batch,
            "keep_batch": report.keep_batch,
            "seconds": {
                "data": t.data.as_secs_f64(),
                "forward": t.forward.as_secs_f64(),
                "backward": t.backward.as_secs_f64(),
                "update": t.update.as_secs_f64(),
                "validation": t.validation.as_secs_f64(),
            },
        });
        println!("{v}");
        return Ok(());
    }
    if report.interrupted {
        println!("stopped      at step {} (Ctrl-C)", report.steps);
    }
    println!("steps        {}", report.steps);
    println!(
        "fit          {:.4} -> {:.4} (loss on the first 8 training pairs, whole images)",
        report.fit_before, report.fit_after
    );
    println!("loss         {first:.4} (first 10 steps) -> {last:.4} (last 10)");
    if let (Some(s), Some((step, b))) = (&report.start, &report.best) {
        println!(
            "val start    mean IoU {:.4}  boundary F {:.4}",
            s.mean_iou, s.boundary_f
        );
        println!(
            "val best     mean IoU {:.4}  boundary F {:.4}  (step {step})",
            b.mean_iou, b.boundary_f
        );
    }
    println!(
        "time         {:.3} s per image forward+backward+update (batch {} + {} keep frames); data {:.0} s, forward {:.0} s, backward {:.0} s, update {:.0} s, validation {:.0} s",
        report.seconds_per_image(),
        report.batch,
        report.keep_batch,
        t.data.as_secs_f64(),
        t.forward.as_secs_f64(),
        t.backward.as_secs_f64(),
        t.update.as_secs_f64(),
        t.validation.as_secs_f64()
    );
    for a in &agreements {
        println!(
            "agreement    {:.4} with the start where it is confident ({:.1} % of pixels), {} frames of {}",
            a["agreement"].as_f64().unwrap_or(0.0),
            100.0 * a["confident"].as_f64().unwrap_or(0.0),
            a["frames"],
            a["source"]
        );
    }
    println!("wrote        {}", args.out.display());
    Ok(())
}
