//! End-to-end tests of the "AI Background" OBS filter on real libobs 29 (headless, Mesa
//! llvmpipe under Xvfb).
//!
//! libobs can be started only once per process, so this is one test binary with its own
//! harness (`harness = false`): it starts OBS once, loads OBS's `image-source` and
//! `obs-ffmpeg` modules plus the freshly built `libobs_ai_background.so`, runs the named
//! checks below one after the other (each one's panics are caught), prints a table, shuts
//! OBS down, and fails if any check failed or OBS reports leaked memory.
//!
//! Run: `xvfb-run -a -s "-screen 0 1280x720x24" cargo test --test obs_filter`
//! (optionally `-- <substring>` to run only the checks whose name contains it, and
//! `OBS_HOST_LOG=1` to see OBS's log).
//!
//! Real data: person photos with human-annotated masks and a webcam clip in
//! `tests/fixtures/obs/` (sources in its README).

use image::{GrayImage, Rgba, RgbaImage};
use obs_ai_background::composite::{AlphaSettings, Background, Compositor, EdgeSettings, Fit};
use obs_ai_background::device::DeviceChoice;
use obs_ai_background::frame::{FrameRef, PixelFormat};
use obs_ai_background::mask::Mask;
use obs_ai_background::metrics::{erode, iou, laplacian_energy, mean_abs_rgb_diff};
use obs_ai_background::model::{shared_segmenter, Preset, SegmentationBackend};
use obs_ai_background::obs::calldata::CallData;
use obs_ai_background::obs::data::Data;
use obs_ai_background::obs::graphics::{sdr_white_level, srgb_to_linear, ColorSpace};
use obs_ai_background::obs::host::{self, FloatImage, Host, HostConfig, Image};
use obs_ai_background::obs::source::{self, Source};
use obs_ai_background::pipeline::{luma_plane, MaskPipeline, PipelineSettings};
use obs_ai_background::postprocess::{
    threshold_feather, GuidedUpsampler, RefinedHold, REFINE_CAPTURE_SCALE,
};
use obs_ai_background::preprocess::PlaneResizer;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const FILTER_ID: &str = "ai_background_filter";
/// Photos (ccp-webcam-dev ids) with their human-annotated masks.
const PHOTOS: [&str; 4] = ["0001", "0100", "0200", "0300"];
/// The webcam clip (an async `ffmpeg_source`, like a webcam).
const WEBCAM_CLIP: &str = "webcam-livingroom-2s5.mp4";
/// A small clip used as a background video.
const BACKGROUND_CLIP: &str = "background-desk-480p-2s.mp4";
/// Frames rendered before a static scene is considered settled (mask computed, temporal
/// smoothing converged: on a still picture the network's output repeats, so the smoothed mask
/// is the raw one from the first frame on).
const SETTLE_FRAMES: usize = 12;
/// The video thread's rate.
const FPS: u32 = 30;

type CheckResult = Result<String, String>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        let ok: bool = $cond;
        if !ok {
            return Err(format!($($fmt)+));
        }
    };
}

struct Env {
    host: Host,
    fixtures: PathBuf,
    tmp: tempfile::TempDir,
}

// ---- small image helpers -------------------------------------------------------------------

fn fixture(env: &Env, name: &str) -> PathBuf {
    env.fixtures.join(name)
}

fn photo_path(env: &Env, id: &str) -> PathBuf {
    fixture(env, &format!("ccp-webcam-{id}.jpg"))
}

/// The annotated mask as booleans (255 = person; >= 128 counts, as in the evaluation).
fn truth(env: &Env, id: &str) -> (usize, usize, Vec<bool>) {
    let m = image::open(fixture(env, &format!("ccp-webcam-{id}.mask.png")))
        .expect("mask fixture")
        .to_luma8();
    let (w, h) = (m.width() as usize, m.height() as usize);
    (w, h, m.pixels().map(|p| p[0] >= 128).collect())
}

fn not(m: &[bool]) -> Vec<bool> {
    m.iter().map(|v| !v).collect()
}

/// Mean absolute RGB difference (0..255) over `region`.
fn mean_abs_diff(a: &Image, b: &Image, region: &[bool]) -> f64 {
    mean_abs_rgb_diff(&a.rgba, &b.rgba, region)
}

/// Mean RGB (0..255) over `region`.
fn mean_rgb(img: &Image, region: &[bool]) -> [f64; 3] {
    let mut acc = [0.0f64; 3];
    let mut n = 0usize;
    for (i, p) in img.rgba.chunks_exact(4).enumerate() {
        if region[i] {
            for c in 0..3 {
                acc[c] += p[c] as f64;
            }
            n += 1;
        }
    }
    acc.map(|v| v / n.max(1) as f64)
}

fn save_png(env: &Env, name: &str, img: &Image) {
    if let Some(dir) = std::env::var_os("OBS_TEST_OUT") {
        let path = Path::new(&dir).join(name);
        let _ = image::save_buffer(
            path,
            &img.rgba,
            img.width as u32,
            img.height as u32,
            image::ColorType::Rgba8,
        );
    }
    let _ = env;
}

// ---- OBS helpers ---------------------------------------------------------------------------

fn data_from(v: &Value) -> Data {
    Data::from_json(&v.to_string()).expect("valid settings JSON")
}

fn image_source(name: &str, file: &Path) -> Source {
    let d = data_from(&json!({ "file": file.to_string_lossy() }));
    Source::create("image_source", name, Some(&d)).expect("image_source")
}

fn add_filter(src: &Source, name: &str, settings: &Value) -> Source {
    let d = data_from(settings);
    let f = Source::create(FILTER_ID, name, Some(&d)).expect("filter");
    src.filter_add(&f);
    f
}

fn update(f: &Source, settings: &Value) {
    f.update(&data_from(settings));
}

/// A source with a filter on it, shown (like a projector would) for its lifetime.
struct Rig {
    src: Source,
    filter: Source,
}

impl Rig {
    fn new(src: Source, settings: &Value) -> Rig {
        let filter = add_filter(&src, "AI Background", settings);
        // As if it were in the program scene.
        src.inc_active();
        src.inc_showing();
        Rig { src, filter }
    }

    fn size(&self) -> (u32, u32) {
        (self.src.as_ref().width(), self.src.as_ref().height())
    }

    /// Waits for the next video tick and renders the filtered source at its size.
    fn frame(&self, env: &Env) -> Option<Image> {
        env.host.wait_ticks(1, Duration::from_secs(2));
        let (w, h) = self.size();
        env.host.render(self.src.as_ref(), w, h)
    }

    fn frames(&self, env: &Env, n: usize) -> Option<Image> {
        let mut last = None;
        for _ in 0..n {
            last = self.frame(env);
        }
        last
    }

    /// Renders frames until a mask has been composited and `n` more frames passed.
    fn settle(&self, env: &Env, n: usize) -> Result<Image, String> {
        let start = Instant::now();
        while stats(&self.filter)["uploads"].as_u64().unwrap_or(0) == 0 {
            ensure!(
                start.elapsed() < Duration::from_secs(20),
                "no mask after 20 s: {}",
                stats(&self.filter)
            );
            self.frame(env);
        }
        self.frames(env, n)
            .ok_or_else(|| "source has no size".to_string())
    }

    /// The source without the filter (the filter switched off for one render).
    fn input(&self, env: &Env) -> Image {
        self.filter.set_enabled(false);
        let (w, h) = self.size();
        let img = env
            .host
            .render(self.src.as_ref(), w, h)
            .expect("render input");
        self.filter.set_enabled(true);
        img
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.src.dec_showing();
        self.src.dec_active();
        self.src.filter_remove(&self.filter);
        self.src.remove();
    }
}

fn stats(filter: &Source) -> Value {
    let mut cd = CallData::new();
    if !filter.call_proc("ai_background_stats", &mut cd) {
        return Value::Null;
    }
    cd.view()
        .get_string("json")
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null)
}

/// The mask the filter composited its last frame with: the person probability at capture
/// size, or with edge refinement the guided filter's coefficients `b` and `A` there.
struct Shown {
    width: usize,
    height: usize,
    /// Probability, or the offset `b` with refinement.
    b: Vec<f32>,
    /// The gain `A` with refinement.
    gain: Option<Vec<f32>>,
}

fn shown_mask(filter: &Source) -> Option<Shown> {
    let mut cd = CallData::new();
    cd.view().set_ptr("dst", std::ptr::null_mut());
    cd.view().set_ptr("dst_gain", std::ptr::null_mut());
    cd.view().set_int("capacity", 0);
    filter.call_proc("ai_background_mask", &mut cd);
    let w = cd.view().get_int("width")? as usize;
    let h = cd.view().get_int("height")? as usize;
    if w == 0 || h == 0 {
        return None;
    }
    let mut b = vec![0f32; w * h];
    let mut gain = vec![0f32; w * h];
    let mut cd = CallData::new();
    cd.view().set_ptr("dst", b.as_mut_ptr().cast());
    cd.view().set_ptr("dst_gain", gain.as_mut_ptr().cast());
    cd.view().set_int("capacity", b.len() as i64);
    filter.call_proc("ai_background_mask", &mut cd);
    let refined = cd.view().get_int("gain_len")? as usize == w * h;
    (cd.view().get_int("width")? as usize == w).then_some(Shown {
        width: w,
        height: h,
        b,
        gain: refined.then_some(gain),
    })
}

/// The person probability the filter used at the size of `input`: the mask resized with the
/// engine's bilinear convention, or with refinement `clamp(A * Y + b)` with the input's luma
/// (`GuidedUpsampler`, the CPU reference of the effect).
fn mask_at_frame(mask: &Shown, input: &Image) -> Mask {
    let (w, h) = (input.width, input.height);
    let mut out = Mask::filled(w, h, 0.0);
    let small = (mask.width, mask.height);
    match &mask.gain {
        None => PlaneResizer::default().resize(&mask.b, small, &mut out.data, (w, h)),
        Some(gain) => {
            let frame = FrameRef::new(&input.rgba, w, h, w * 4, PixelFormat::Rgba).expect("frame");
            let mut luma = Vec::new();
            luma_plane(&frame, &mut luma);
            GuidedUpsampler::default().apply(gain, &mask.b, small, &luma, (w, h), &mut out.data);
        }
    }
    out
}

/// The frame number the shown mask was computed from (0 before the first mask).
fn shown_mask_frame(filter: &Source) -> u64 {
    let mut cd = CallData::new();
    cd.view().set_ptr("dst", std::ptr::null_mut());
    cd.view().set_int("capacity", 0);
    filter.call_proc("ai_background_mask", &mut cd);
    cd.view().get_int("frame").unwrap_or(0) as u64
}

/// The person alpha the filter used, at the size of `input`.
fn person_alpha(mask: &Shown, input: &Image, alpha: AlphaSettings) -> Vec<f32> {
    mask_at_frame(mask, input)
        .data
        .iter()
        .map(|&p| threshold_feather(p, alpha.threshold, alpha.feather))
        .collect()
}

/// Runs the CPU reference compositor on the same frame and mask with the given edge
/// settings; returns premultiplied RGBA8.
fn cpu_composite_with(
    input: &Image,
    mask: &Shown,
    alpha: AlphaSettings,
    bg: Background<'_>,
    edges: EdgeSettings,
) -> Image {
    let frame = FrameRef::new(
        &input.rgba,
        input.width,
        input.height,
        input.width * 4,
        PixelFormat::Rgba,
    )
    .expect("frame");
    let prob = mask_at_frame(mask, input);
    let mut out = RgbaImage::new(input.width as u32, input.height as u32);
    Compositor::with_edges(edges).composite(&frame, &prob, alpha, bg, &mut out);
    // The CPU writes straight alpha; the GPU output is premultiplied.
    let rgba = out
        .pixels()
        .flat_map(|p| {
            let a = p[3] as f32 / 255.0;
            [
                (p[0] as f32 * a).round() as u8,
                (p[1] as f32 * a).round() as u8,
                (p[2] as f32 * a).round() as u8,
                p[3],
            ]
        })
        .collect();
    Image {
        width: input.width,
        height: input.height,
        rgba,
    }
}

/// (max, mean, share of values off by more than 3) of the channel differences.
fn diff_stats(a: &Image, b: &Image) -> (u8, f64, f64) {
    let mut max = 0u8;
    let (mut sum, mut over) = (0u64, 0usize);
    for (x, y) in a.rgba.iter().zip(&b.rgba) {
        let d = x.abs_diff(*y);
        max = max.max(d);
        sum += d as u64;
        over += usize::from(d > 3);
    }
    let n = a.rgba.len().max(1) as f64;
    (max, sum as f64 / n, over as f64 / n)
}

/// Asserts GPU == CPU within rounding: mean channel difference < 0.25 and at most 0.2% of
/// values off by more than 3 levels (a pixel on a threshold edge may flip).
fn check_parity(what: &str, gpu: &Image, cpu: &Image) -> CheckResult {
    let (max, mean, over) = diff_stats(gpu, cpu);
    let worst = gpu
        .rgba
        .chunks_exact(4)
        .zip(cpu.rgba.chunks_exact(4))
        .enumerate()
        .max_by_key(|(_, (a, b))| a.iter().zip(*b).map(|(x, y)| x.abs_diff(*y)).max())
        .map(|(i, (a, b))| {
            format!(
                "worst at ({}, {}): gpu {a:?} cpu {b:?}",
                i % gpu.width,
                i / gpu.width
            )
        })
        .unwrap_or_default();
    ensure!(
        mean < 0.25 && over < 0.002,
        "{what}: GPU differs from the CPU compositor: mean {mean:.3}, max {max}, {:.3}% > 3; {worst}",
        over * 100.0
    );
    Ok(format!("{what} mean {mean:.3} max {max}"))
}

fn alpha_of(s: &Value) -> AlphaSettings {
    AlphaSettings {
        threshold: s["threshold"].as_f64().unwrap_or(0.5) as f32,
        feather: s["feather"].as_f64().unwrap_or(0.2) as f32,
    }
}

fn log_contains(env: &Env, mark: usize, needle: &str) -> usize {
    env.host
        .log_since(mark)
        .iter()
        .filter(|l| l.message.contains(needle))
        .count()
}

/// Worker threads running in the process (all filter instances), as `filter` reports them.
fn live_workers(filter: &Source) -> u64 {
    stats(filter)["live_workers"].as_u64().unwrap_or(u64::MAX)
}

/// The "Show mask" view of `mask` at the size of `input`: opaque grey = person alpha.
fn mask_view(mask: &Shown, input: &Image, alpha: AlphaSettings) -> Image {
    let a = person_alpha(mask, input, alpha);
    Image {
        width: input.width,
        height: input.height,
        rgba: a
            .iter()
            .flat_map(|&v| {
                let g = (v * 255.0).round() as u8;
                [g, g, g, 255]
            })
            .collect(),
    }
}

/// A photo with the filter in blur mode, settled, with its unfiltered render and the
/// annotated background 8 px away from the outline.
struct BlurRig {
    rig: Rig,
    input: Image,
    bg: Vec<bool>,
}

impl BlurRig {
    fn new(env: &Env, id: &str, settle: usize) -> Result<BlurRig, String> {
        let (w, h, gt) = truth(env, id);
        let rig = Rig::new(
            image_source(id, &photo_path(env, id)),
            &json!({ "mode": "blur" }),
        );
        rig.settle(env, settle)?;
        let input = rig.input(env);
        Ok(BlurRig {
            rig,
            input,
            bg: erode(&not(&gt), w, h, 8),
        })
    }

    /// Background detail of `out` against the input's (Laplacian energy ratio; blur <= 0.5).
    fn detail(&self, out: &Image) -> f64 {
        let (w, h) = (self.input.width, self.input.height);
        laplacian_energy(&out.rgba, w, h, &self.bg)
            / laplacian_energy(&self.input.rgba, w, h, &self.bg)
    }
}

/// Asks the filter's worker to fail its next `count` frames with `kind` (`panic`, `error`,
/// `nan`): the test hook behind the `ai_background_inject_fault` proc.
fn inject_fault(filter: &Source, kind: &str, count: i64) -> bool {
    let mut cd = CallData::new();
    cd.view().set_string("kind", kind);
    cd.view().set_int("count", count);
    filter.call_proc("ai_background_inject_fault", &mut cd)
        && cd.view().get_bool("ok") == Some(true)
}

/// What the CPU reference compositor makes of `input` with `mask` under the filter's current
/// settings (read back from the filter, defaults included). Image, video and source modes
/// are expected to fall back to blur (the callers give them nothing to show).
fn cpu_expected(filter: &Source, input: &Image, mask: &Shown) -> Image {
    let settings = filter.settings();
    let d = settings.as_ref();
    let alpha = AlphaSettings {
        threshold: d.get_double("threshold") as f32,
        feather: d.get_double("feather") as f32,
    };
    if d.get_bool("show_mask") {
        return mask_view(mask, input, alpha);
    }
    let c = d.get_int("color") as u32;
    let bg = match d.get_string("mode").as_str() {
        "transparent" => Background::Transparent,
        "color" => Background::Color([c as u8, (c >> 8) as u8, (c >> 16) as u8, (c >> 24) as u8]),
        _ => Background::Blur {
            sigma: d.get_double("blur_strength") as f32,
        },
    };
    let edges = EdgeSettings {
        estimate_foreground: d.get_bool("estimate_foreground"),
        light_wrap: d.get_double("light_wrap") as f32,
    };
    cpu_composite_with(input, mask, alpha, bg, edges)
}

/// A safetensors file with the embedded landscape weights' keys and shapes whose every value
/// is NaN (the tensors are float16 or float32).
fn nan_weights(path: &Path) -> Result<(), String> {
    let mut bytes = obs_ai_background::model::LANDSCAPE_WEIGHTS.to_vec();
    let n = u64::from_le_bytes(bytes[..8].try_into().map_err(|_| "short file")?) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).map_err(|e| e.to_string())?;
    let tensors = header.as_object().ok_or("header is not an object")?;
    for (name, t) in tensors.iter().filter(|(k, _)| *k != "__metadata__") {
        let nan: &[u8] = match t["dtype"].as_str() {
            Some("F16") => &[0x00, 0x7E],
            Some("F32") => &[0x00, 0x00, 0xC0, 0x7F],
            other => return Err(format!("{name}: dtype {other:?}")),
        };
        let (a, b) = (
            t["data_offsets"][0].as_u64().ok_or("offsets")? as usize,
            t["data_offsets"][1].as_u64().ok_or("offsets")? as usize,
        );
        for chunk in bytes[8 + n + a..8 + n + b].chunks_exact_mut(nan.len()) {
            chunk.copy_from_slice(nan);
        }
    }
    std::fs::write(path, bytes).map_err(|e| e.to_string())
}

/// The embedded landscape weights with `delta` added to the last layer's bias
/// (`final.bias`, one value: a shift of every logit, so negative values shrink the person
/// area), written as safetensors: a valid custom weights file whose masks differ visibly.
fn shifted_weights(path: &Path, delta: f64) -> Result<(), String> {
    use candle_core::{DType, Device};
    let err = |e: candle_core::Error| e.to_string();
    let mut tensors = candle_core::safetensors::load_buffer(
        obs_ai_background::model::LANDSCAPE_WEIGHTS,
        &Device::Cpu,
    )
    .map_err(err)?;
    let bias = tensors.get("final.bias").ok_or("no final.bias")?;
    let shifted = (bias.to_dtype(DType::F32).map_err(err)? + delta)
        .and_then(|b| b.to_dtype(bias.dtype()))
        .map_err(err)?;
    tensors.insert("final.bias".into(), shifted);
    candle_core::safetensors::save(&tensors, path).map_err(err)
}

/// A safetensors file that is not the network's: one tensor under another name.
fn foreign_weights(path: &Path) -> Result<(), String> {
    let t = candle_core::Tensor::zeros((4, 4), candle_core::DType::F32, &candle_core::Device::Cpu)
        .map_err(|e| e.to_string())?;
    let tensors = std::collections::HashMap::from([("encoder.weight".to_string(), t)]);
    candle_core::safetensors::save(&tensors, path).map_err(|e| e.to_string())
}

/// A PNG file of a `width` x `height` RGBA image that ends after its header (signature,
/// IHDR, an empty IDAT, IEND; PNG spec, ISO/IEC 15948, chunk CRC-32 over type and data).
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in bytes {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]); // 8 bits, RGBA, deflate, no filter, no interlace
    for (kind, data) in [(b"IHDR", ihdr.as_slice()), (b"IDAT", &[]), (b"IEND", &[])] {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut chunk = kind.to_vec();
        chunk.extend_from_slice(data);
        out.extend_from_slice(&chunk);
        out.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }
    out
}

/// A colourful test background with an alpha ramp on the right (exercises premultiplied
/// interpolation): 320 x 200, written as PNG.
fn make_background(path: &Path) -> RgbaImage {
    let img = RgbaImage::from_fn(320, 200, |x, y| {
        let a = if x < 240 {
            255
        } else {
            (255 - (x - 240) * 3) as u8
        };
        Rgba([
            (x * 255 / 319) as u8,
            (y * 255 / 199) as u8,
            ((x / 20 + y / 20) % 2 * 200) as u8,
            a,
        ])
    });
    img.save(path).expect("write background png");
    img
}

// ---- the checks ----------------------------------------------------------------------------

fn check_registration(env: &Env) -> CheckResult {
    let name = source::type_display_name(FILTER_ID);
    ensure!(
        name.as_deref() == Some("AI Background"),
        "display name {name:?}"
    );
    // The module's locale follows OBS's.
    env.host.set_locale("de-DE");
    let german = source::type_display_name(FILTER_ID);
    env.host.set_locale("en-US");
    ensure!(
        german.as_deref() == Some("KI-Hintergrund"),
        "de-DE display name {german:?}"
    );
    Ok("registered as \"AI Background\" (de-DE: \"KI-Hintergrund\")".into())
}

/// The properties dialog: every setting has a label, the mode shows its own settings, what a
/// streamer needs is where OBS 29 shows it (info texts, the "?" of check boxes, "Show mask"
/// next to Threshold and Edge softness, blur strength in whole pixels), and a status line
/// says why the chosen background cannot be used, refreshed while the dialog is open.
fn check_properties(env: &Env) -> CheckResult {
    let rig = Rig::new(
        image_source("props", &photo_path(env, PHOTOS[0])),
        &json!({ "mode": "image", "image_path": photo_path(env, PHOTOS[1]) }),
    );
    let props = rig.filter.properties();
    let names: Vec<&str> = props.iter().map(|p| p.name.as_str()).collect();
    let expected = [
        "mode",
        "blur_strength",
        "image_path",
        "video_path",
        "video_loop",
        "source",
        "fit",
        "color",
        "estimate_foreground",
        "light_wrap",
        "background_status",
        "show_mask",
        "threshold",
        "feather",
        "mask_help",
        "smoothing",
        "match_video",
        "refine",
        "model",
        "custom_weights",
        "custom_model",
        "model_status",
        "device",
        "cpu_threads",
        "every_n_frames",
        "speed_help",
    ];
    ensure!(names == expected, "properties {names:?}");
    let unlabeled: Vec<&str> = props
        .iter()
        .filter(|p| p.description.trim().is_empty() || p.description == p.name)
        .filter(|p| !["background_status", "model_status"].contains(&p.name.as_str()))
        .map(|p| p.name.as_str())
        .collect();
    ensure!(unlabeled.is_empty(), "no locale text for {unlabeled:?}");
    let prop = |name: &str| props.iter().find(|p| p.name == name).cloned();
    let blur = prop("blur_strength").ok_or("no blur strength")?;
    ensure!(
        blur.kind == "int" && blur.suffix == " px",
        "blur strength is a {} slider with suffix {:?}",
        blur.kind,
        blur.suffix
    );
    for check_box in ["show_mask", "refine", "match_video"] {
        let p = prop(check_box).ok_or("missing check box")?;
        ensure!(
            p.kind == "bool" && !p.long_description.is_empty(),
            "{check_box}: no \"?\" hint"
        );
    }
    let mask_help = prop("mask_help").ok_or("no mask help")?;
    ensure!(
        mask_help.kind == "info"
            && mask_help.visible
            && ["Show mask", "Threshold", "Edge softness"]
                .iter()
                .all(|w| mask_help.description.contains(w)),
        "mask help: {mask_help:?}"
    );
    let speed_help = prop("speed_help").ok_or("no speed help")?;
    ensure!(
        speed_help.kind == "info" && speed_help.description.contains("Edge refinement"),
        "speed help: {speed_help:?}"
    );
    let visible = |name: &str| props.iter().any(|p| p.name == name && p.visible);
    ensure!(
        visible("image_path")
            && visible("fit")
            && visible("estimate_foreground")
            && visible("light_wrap")
            && !visible("blur_strength")
            && !visible("video_path")
            && !visible("background_status")
            && !visible("custom_weights")
            && !visible("custom_model")
            && !visible("model_status"),
        "image mode shows {:?}",
        props
            .iter()
            .filter(|p| p.visible)
            .map(|p| &p.name)
            .collect::<Vec<_>>()
    );
    // An old scene collection stores the blur strength as a double: it still loads.
    update(
        &rig.filter,
        &json!({ "mode": "blur", "blur_strength": 12.0 }),
    );
    let props = rig.filter.properties();
    let visible = |name: &str| props.iter().any(|p| p.name == name && p.visible);
    ensure!(
        visible("blur_strength")
            && !visible("image_path")
            && !visible("fit")
            && !visible("estimate_foreground")
            && !visible("light_wrap"),
        "blur mode shows the wrong settings"
    );

    // The status line, for each reason a background cannot be used.
    let corrupt = env.tmp.path().join("props-corrupt.png");
    std::fs::write(&corrupt, b"not an image").map_err(|e| e.to_string())?;
    let missing = env.tmp.path().join("missing.png");
    // Updates of video sources apply on the next video tick.
    let status = |settings: Value| -> Result<Option<String>, String> {
        update(&rig.filter, &settings);
        rig.frames(env, 2);
        let props = rig.filter.properties();
        let p = props
            .iter()
            .find(|p| p.name == "background_status")
            .ok_or("no status line")?;
        ensure!(p.kind == "info", "the status line is a {}", p.kind);
        Ok(p.visible.then(|| p.description.clone()))
    };
    let mut lines = Vec::new();
    let others = source::video_source_names().iter().any(|n| n != "props");
    let cases: Vec<(Value, Option<&str>)> = vec![
        (
            json!({ "mode": "image", "image_path": "" }),
            Some("No background image chosen"),
        ),
        (
            json!({ "mode": "image", "image_path": missing }),
            Some("not found: "),
        ),
        (
            json!({ "mode": "image", "image_path": corrupt }),
            Some("Cannot use the background image"),
        ),
        (
            json!({ "mode": "image", "image_path": photo_path(env, PHOTOS[1]) }),
            None,
        ),
        (
            json!({ "mode": "video", "video_path": "" }),
            Some("No background video chosen"),
        ),
        (
            json!({ "mode": "video", "video_path": env.tmp.path().join("nope.mp4") }),
            Some("not found"),
        ),
        (
            json!({ "mode": "source", "source": "" }),
            Some(if others {
                "No background source chosen"
            } else {
                "no other video source"
            }),
        ),
        (
            json!({ "mode": "source", "source": "props" }),
            Some("cannot be its own background"),
        ),
        (
            json!({ "mode": "source", "source": "gone" }),
            Some("'gone' does not exist"),
        ),
        (json!({ "mode": "color" }), None),
    ];
    for (settings, want) in cases {
        let got = status(settings.clone())?;
        if let Some(name) = settings["source"]
            .as_str()
            .filter(|n| ["gone", "props"].contains(n))
        {
            // The gone source stays the list's value (greyed out): OBS's dialog would
            // otherwise pick, and store, the first source.
            let props = rig.filter.properties();
            let list = props
                .iter()
                .find(|p| p.name == "source")
                .ok_or("no source list")?;
            ensure!(
                list.items.contains(&(name.to_string(), false)),
                "source list {:?}",
                list.items
            );
        }
        match (want, &got) {
            (None, None) => {}
            (Some(w), Some(g)) if g.contains(w) => lines.push(w.to_string()),
            _ => return Err(format!("{settings}: status {got:?}, expected {want:?}")),
        }
    }
    // The same reasons in German.
    env.host.set_locale("de-DE");
    let german = status(json!({ "mode": "image", "image_path": "" }));
    env.host.set_locale("en-US");
    let german = german?.unwrap_or_default();
    ensure!(
        german.contains("Hintergrundbild"),
        "de-DE status line {german:?}"
    );

    // An open dialog is asked to rebuild itself when the reason appears or goes away while
    // the filter runs (a source removed, then added again).
    let other = image_source("backdrop", &photo_path(env, PHOTOS[2]));
    update(
        &rig.filter,
        &json!({ "mode": "source", "source": "backdrop" }),
    );
    rig.frames(env, 20);
    ensure!(
        status(json!({}))?.is_none(),
        "status shown for an existing source"
    );
    let refreshes = rig
        .filter
        .count_signal("update_properties")
        .ok_or("no signal handler")?;
    other.remove();
    drop(other);
    let start = Instant::now();
    while refreshes.count() == 0 {
        ensure!(
            start.elapsed() < Duration::from_secs(5),
            "no update_properties after the background source was removed"
        );
        rig.frame(env);
    }
    let gone = status(json!({}))?.unwrap_or_default();
    ensure!(
        gone.contains("'backdrop' does not exist"),
        "after the source was removed: {gone:?}"
    );
    let other = image_source("backdrop", &photo_path(env, PHOTOS[2]));
    let start = Instant::now();
    while refreshes.count() < 2 {
        ensure!(
            start.elapsed() < Duration::from_secs(5),
            "no update_properties after the background source came back"
        );
        rig.frame(env);
    }
    ensure!(
        status(json!({}))?.is_none(),
        "status stays after the source came back"
    );
    drop(refreshes);
    other.remove();
    Ok(format!(
        "{} properties, labelled, hints as info texts and check box hints, int blur, \
         status lines: {}; refreshed on source removal and return",
        names.len(),
        lines.join(" / ")
    ))
}

/// Transparent mode: output alpha against the annotated mask.
fn check_transparent_iou(env: &Env) -> CheckResult {
    let mut ious = Vec::new();
    for id in PHOTOS {
        let rig = Rig::new(
            image_source(id, &photo_path(env, id)),
            &json!({ "mode": "transparent" }),
        );
        let out = rig.settle(env, SETTLE_FRAMES)?;
        save_png(env, &format!("transparent-{id}.png"), &out);
        let (w, h, gt) = truth(env, id);
        ensure!(
            (out.width, out.height) == (w, h),
            "output {}x{} vs mask {w}x{h}",
            out.width,
            out.height
        );
        let person: Vec<bool> = out.rgba.chunks_exact(4).map(|p| p[3] >= 128).collect();
        ious.push((id, iou(&person, &gt)));
    }
    let mean = ious.iter().map(|x| x.1).sum::<f64>() / ious.len() as f64;
    let detail = ious
        .iter()
        .map(|(id, v)| format!("{id}: {v:.3}"))
        .collect::<Vec<_>>()
        .join(", ");
    ensure!(ious.iter().all(|x| x.1 >= 0.85), "IoU below 0.85: {detail}");
    Ok(format!("IoU mean {mean:.3} ({detail})"))
}

/// "CPU threads" 2: the worker splits the network with a helper thread; the network's output
/// is bit-identical to one thread's, so the settled cut-out of a still photo is the same.
fn check_cpu_threads(env: &Env) -> CheckResult {
    let id = PHOTOS[0];
    let alpha = |threads: i64| -> Result<Vec<u8>, String> {
        let rig = Rig::new(
            image_source(id, &photo_path(env, id)),
            &json!({ "mode": "transparent", "cpu_threads": threads }),
        );
        let out = rig.settle(env, SETTLE_FRAMES)?;
        Ok(out.rgba.chunks_exact(4).map(|p| p[3]).collect())
    };
    let (one, two) = (alpha(1)?, alpha(2)?);
    ensure!(one.len() == two.len(), "sizes differ");
    let differ = one.iter().zip(&two).filter(|(a, b)| a != b).count();
    let person = two.iter().filter(|&&a| a >= 128).count();
    ensure!(person > two.len() / 10, "no person cut out with 2 threads");
    ensure!(
        differ * 1000 <= one.len(),
        "{differ} of {} alpha values differ between 1 and 2 threads",
        one.len()
    );
    Ok(format!(
        "{differ} of {} alpha values differ, person {person} px",
        one.len()
    ))
}

/// Blur mode: background detail drops by half or more, the person stays as it was.
fn check_blur(env: &Env) -> CheckResult {
    let mut lines = Vec::new();
    for id in PHOTOS {
        let rig = Rig::new(
            image_source(id, &photo_path(env, id)),
            &json!({ "mode": "blur" }),
        );
        let out = rig.settle(env, SETTLE_FRAMES)?;
        let input = rig.input(env);
        save_png(env, &format!("blur-{id}.png"), &out);
        save_png(env, &format!("input-{id}.png"), &input);
        let (w, h, gt) = truth(env, id);
        // 8 px away from the annotated outline on either side.
        let bg = erode(&not(&gt), w, h, 8);
        let person = erode(&gt, w, h, 8);
        let ratio =
            laplacian_energy(&out.rgba, w, h, &bg) / laplacian_energy(&input.rgba, w, h, &bg);
        let person_diff = mean_abs_diff(&out, &input, &person);
        ensure!(
            ratio <= 0.5,
            "{id}: background detail ratio {ratio:.3} > 0.5"
        );
        ensure!(
            person_diff <= 4.0,
            "{id}: person changed by {person_diff:.2} levels on average"
        );
        lines.push(format!(
            "{id}: detail x{ratio:.3}, person diff {person_diff:.2}"
        ));
    }
    Ok(lines.join("; "))
}

/// Every mode against the CPU reference compositor on the same frame and mask.
fn check_gpu_matches_cpu(env: &Env) -> CheckResult {
    let id = PHOTOS[0];
    let bg_path = env.tmp.path().join("background.png");
    let bg_img = make_background(&bg_path);
    let rig = Rig::new(
        image_source(id, &photo_path(env, id)),
        &json!({ "mode": "transparent" }),
    );
    rig.settle(env, SETTLE_FRAMES)?;
    let input = rig.input(env);
    let mut lines = Vec::new();
    let cases: Vec<(&str, Value)> = vec![
        (
            "transparent",
            json!({ "mode": "transparent", "refine": true }),
        ),
        ("blur 16", json!({ "mode": "blur", "blur_strength": 16.0 })),
        (
            "blur 3",
            json!({ "mode": "blur", "blur_strength": 3.0, "feather": 0.0 }),
        ),
        (
            "blur 60",
            json!({ "mode": "blur", "blur_strength": 60.0, "threshold": 0.3, "feather": 0.5 }),
        ),
        ("blur 0", json!({ "mode": "blur", "blur_strength": 0.0 })),
        (
            "color",
            json!({ "mode": "color", "color": 0x80_30_60_C0u32 }),
        ),
        (
            "image cover",
            json!({ "mode": "image", "image_path": bg_path, "fit": "cover" }),
        ),
        (
            "image contain",
            json!({ "mode": "image", "image_path": bg_path, "fit": "contain" }),
        ),
        (
            "image stretch",
            json!({ "mode": "image", "image_path": bg_path, "fit": "stretch" }),
        ),
        (
            "image light wrap 1",
            json!({ "mode": "image", "image_path": bg_path, "fit": "cover", "light_wrap": 1.0 }),
        ),
        (
            "color light wrap 1",
            json!({ "mode": "color", "color": 0x80_30_60_C0u32, "light_wrap": 1.0 }),
        ),
        (
            "color plain edges",
            json!({ "mode": "color", "color": 0x80_30_60_C0u32, "light_wrap": 0.0,
                    "estimate_foreground": false }),
        ),
        (
            "transparent plain edges",
            json!({ "mode": "transparent", "estimate_foreground": false }),
        ),
        (
            "unrefined",
            json!({ "mode": "color", "color": 0xFF_30_60_C0u32, "refine": false,
                    "estimate_foreground": true, "light_wrap": 0.25 }),
        ),
    ];
    let mut outputs: std::collections::HashMap<&str, Image> = Default::default();
    for (name, mut settings) in cases {
        // obs_source_update merges: give every case its full alpha settings.
        let obj = settings.as_object_mut().ok_or("settings")?;
        obj.entry("threshold").or_insert(json!(0.5));
        obj.entry("feather").or_insert(json!(0.2));
        update(&rig.filter, &settings);
        let gpu = rig.frames(env, 2).ok_or("no frame")?;
        let mask = shown_mask(&rig.filter).ok_or("no mask")?;
        // Edge refinement (the default): guided upsampling of the coefficients A and b.
        let refined = settings["refine"].as_bool() != Some(false);
        ensure!(
            mask.gain.is_some() == refined,
            "{name}: guided coefficients {} with refine {refined}",
            mask.gain.is_some()
        );
        let alpha = alpha_of(&settings);
        let edges = EdgeSettings {
            estimate_foreground: settings["estimate_foreground"].as_bool().unwrap_or(true),
            light_wrap: settings["light_wrap"].as_f64().unwrap_or(0.25) as f32,
        };
        let bg = match settings["mode"].as_str() {
            Some("blur") => Background::Blur {
                sigma: settings["blur_strength"].as_f64().unwrap_or(16.0) as f32,
            },
            Some("color") => {
                let c = settings["color"].as_u64().unwrap_or(0) as u32;
                Background::Color([c as u8, (c >> 8) as u8, (c >> 16) as u8, (c >> 24) as u8])
            }
            Some("image") => Background::Image {
                image: &bg_img,
                fit: settings["fit"]
                    .as_str()
                    .unwrap_or("cover")
                    .parse::<Fit>()
                    .unwrap_or_default(),
            },
            _ => Background::Transparent,
        };
        let cpu = cpu_composite_with(&input, &mask, alpha, bg, edges);
        save_png(
            env,
            &format!("parity-{}-gpu.png", name.replace(' ', "-")),
            &gpu,
        );
        save_png(
            env,
            &format!("parity-{}-cpu.png", name.replace(' ', "-")),
            &cpu,
        );
        lines.push(check_parity(name, &gpu, &cpu)?);
        outputs.insert(name, gpu);
    }
    // The edge treatment is live on the GPU: foreground estimation and light wrap change
    // the edge, and only the edge.
    for (a, b) in [
        ("color", "color plain edges"),
        ("color light wrap 1", "color"),
        ("transparent", "transparent plain edges"),
    ] {
        let (max, mean, _) = diff_stats(&outputs[a], &outputs[b]);
        ensure!(
            max > 8 && mean < 2.0,
            "{a} vs {b}: max difference {max}, mean {mean:.3}"
        );
        lines.push(format!("{a} vs {b}: max {max} mean {mean:.3}"));
    }
    // Transparent output stays premultiplied: no colour channel above alpha.
    for name in ["transparent", "transparent plain edges"] {
        let bad = outputs[name]
            .rgba
            .chunks_exact(4)
            .filter(|p| p[0].max(p[1]).max(p[2]) > p[3])
            .count();
        ensure!(bad == 0, "{name}: {bad} pixels with colour above alpha");
    }
    // The mask view: opaque grey = person alpha.
    update(
        &rig.filter,
        &json!({ "mode": "blur", "show_mask": true, "threshold": 0.5, "feather": 0.2, "refine": true }),
    );
    let gpu = rig.frames(env, 2).ok_or("no frame")?;
    let mask = shown_mask(&rig.filter).ok_or("no mask")?;
    let cpu = mask_view(&mask, &input, AlphaSettings::default());
    lines.push(check_parity("mask view", &gpu, &cpu)?);
    Ok(lines.join("; "))
}

/// Image, colour, OBS-source and video backgrounds show behind the person.
fn check_backgrounds(env: &Env) -> CheckResult {
    let id = PHOTOS[1];
    let (w, h, gt) = truth(env, id);
    let bg_region = erode(&not(&gt), w, h, 8);
    let person = erode(&gt, w, h, 8);
    let rig = Rig::new(
        image_source(id, &photo_path(env, id)),
        &json!({ "mode": "color", "color": 0xFF_FF_00_00u32 }),
    );
    let out = rig.settle(env, SETTLE_FRAMES)?;
    let input = rig.input(env);
    let mut lines = Vec::new();

    // Colour: pure blue (0xAABBGGRR = opaque blue).
    let c = mean_rgb(&out, &bg_region);
    ensure!(
        c[2] > 240.0 && c[0] < 15.0 && c[1] < 15.0,
        "colour background is {c:?}, not blue"
    );
    ensure!(
        mean_abs_diff(&out, &input, &person) <= 4.0,
        "colour mode changed the person"
    );
    lines.push(format!("colour bg {:.0},{:.0},{:.0}", c[0], c[1], c[2]));

    // Image (cover).
    let bg_path = env.tmp.path().join("background2.png");
    let bg_img = make_background(&bg_path);
    update(
        &rig.filter,
        &json!({ "mode": "image", "image_path": bg_path, "fit": "stretch" }),
    );
    let out = rig.frames(env, 3).ok_or("no frame")?;
    save_png(env, "background-image.png", &out);
    // The stretched image, premultiplied, resampled to the frame (nearest is enough here).
    let expected = Image {
        width: w,
        height: h,
        rgba: (0..w * h)
            .flat_map(|i| {
                let (x, y) = (i % w, i / w);
                let p = bg_img.get_pixel((x * 320 / w) as u32, (y * 200 / h) as u32);
                let a = p[3] as f32 / 255.0;
                [
                    (p[0] as f32 * a) as u8,
                    (p[1] as f32 * a) as u8,
                    (p[2] as f32 * a) as u8,
                    p[3],
                ]
            })
            .collect(),
    };
    let d_img = mean_abs_diff(&out, &expected, &bg_region);
    ensure!(
        d_img < 6.0,
        "image background differs from the image by {d_img:.1} levels"
    );
    ensure!(
        mean_abs_diff(&out, &input, &person) <= 4.0,
        "image mode changed the person"
    );
    lines.push(format!("image bg diff {d_img:.2}"));

    // OBS source: a colour source (opaque green).
    let green = data_from(&json!({ "color": 0xFF_00_FF_00u32, "width": 64, "height": 64 }));
    let colour_src =
        Source::create("color_source_v3", "green screen", Some(&green)).ok_or("no color_source")?;
    update(
        &rig.filter,
        &json!({ "mode": "source", "source": "green screen" }),
    );
    let out = rig.frames(env, 4).ok_or("no frame")?;
    let c = mean_rgb(&out, &bg_region);
    ensure!(
        c[1] > 240.0 && c[0] < 15.0 && c[2] < 15.0,
        "source background is {c:?}, not green"
    );
    lines.push(format!("source bg {:.0},{:.0},{:.0}", c[0], c[1], c[2]));

    // Video file (looping private ffmpeg_source): the background shows the clip and moves.
    update(
        &rig.filter,
        &json!({ "mode": "video", "video_path": fixture(env, BACKGROUND_CLIP), "video_loop": true }),
    );
    let start = Instant::now();
    let mut first = None;
    while first.is_none() && start.elapsed() < Duration::from_secs(10) {
        let out = rig.frame(env).ok_or("no frame")?;
        // Until the clip's first frame arrives the filter falls back to blur.
        if mean_abs_diff(&out, &input, &bg_region) > 20.0 {
            first = Some(out);
        }
    }
    let first = first.ok_or("the background video never showed")?;
    let later = rig.frames(env, 15).ok_or("no frame")?;
    save_png(env, "background-video.png", &later);
    let moved = mean_abs_diff(&first, &later, &bg_region);
    ensure!(
        moved > 0.5,
        "the background video does not play (change {moved:.2})"
    );
    ensure!(
        mean_abs_diff(&later, &input, &person) <= 4.0,
        "video mode changed the person"
    );
    lines.push(format!("video bg changes by {moved:.1} in 0.5 s"));
    update(&rig.filter, &json!({ "mode": "blur" }));
    drop(rig);
    colour_src.remove();
    Ok(lines.join("; "))
}

/// The looping webcam clip as an async `ffmpeg_source` named `name` with the filter, once the
/// clip shows its first frame.
fn webcam_rig(env: &Env, name: &str, settings: &Value) -> Result<Rig, String> {
    webcam_rig_at(env, name, settings, 100)
}

/// [`webcam_rig`] with the clip playing at `speed_percent` of its speed.
fn webcam_rig_at(
    env: &Env,
    name: &str,
    settings: &Value,
    speed_percent: i64,
) -> Result<Rig, String> {
    let d = data_from(&json!({
        "is_local_file": true,
        "local_file": fixture(env, WEBCAM_CLIP),
        "looping": true,
        "speed_percent": speed_percent,
    }));
    let clip = Source::create("ffmpeg_source", name, Some(&d)).ok_or("no ffmpeg_source")?;
    let rig = Rig::new(clip, settings);
    let start = Instant::now();
    while rig.src.as_ref().width() == 0 {
        ensure!(
            start.elapsed() < Duration::from_secs(10),
            "the clip never produced a frame"
        );
        env.host.wait_ticks(1, Duration::from_secs(1));
    }
    Ok(rig)
}

/// The webcam clip as an async ffmpeg_source: masks are made and the background is blurred.
fn check_webcam_clip(env: &Env) -> CheckResult {
    // An old scene collection's double blur strength.
    let rig = webcam_rig(
        env,
        "webcam",
        &json!({ "mode": "blur", "blur_strength": 16.0 }),
    )?;
    rig.settle(env, 30)?;
    let s = stats(&rig.filter);
    rig.src.media_play_pause(true);
    rig.frames(env, 8);
    let out = rig.frame(env).ok_or("no frame")?;
    let mask = shown_mask(&rig.filter).ok_or("no mask")?;
    let input = rig.input(env);
    rig.src.media_play_pause(false);
    save_png(env, "webcam-blur.png", &out);
    save_png(env, "webcam-input.png", &input);
    let (w, h) = (out.width, out.height);
    let a = person_alpha(&mask, &input, AlphaSettings::default());
    let person: Vec<bool> = a.iter().map(|&v| v > 0.99).collect();
    let bg: Vec<bool> = a.iter().map(|&v| v < 0.01).collect();
    let (person, bg) = (erode(&person, w, h, 4), erode(&bg, w, h, 8));
    let share = person.iter().filter(|&&v| v).count() as f64 / (w * h) as f64;
    ensure!(
        (0.05..0.8).contains(&share),
        "implausible person share {share:.2}"
    );
    let ratio = laplacian_energy(&out.rgba, w, h, &bg) / laplacian_energy(&input.rgba, w, h, &bg);
    let person_diff = mean_abs_diff(&out, &input, &person);
    ensure!(ratio <= 0.5, "background detail ratio {ratio:.3} > 0.5");
    ensure!(person_diff <= 4.0, "person changed by {person_diff:.2}");
    Ok(format!(
        "{w}x{h} async, person {:.0}% of frame, detail x{ratio:.3}, person diff {person_diff:.2}, \
         worker {:.1} ms/frame, mask lag {} frames (max {})",
        share * 100.0,
        s["worker_ms_avg"].as_f64().unwrap_or(0.0),
        s["mask_lag_last"],
        s["mask_lag_max"]
    ))
}

/// Frames of the refined-hold check.
const HOLD_FRAMES: usize = 24;

/// The CPU reference of the filter's mask view after one hold step on `input` with the
/// shown `mask`: `q = clamp(A * Y + b, 0, 1)`, held by `hold` with `band`; returns the view
/// and the pixels the hold moved by more than 0.02.
fn held_view(
    hold: &mut RefinedHold,
    mask: &Shown,
    input: &Image,
    band: f32,
    alpha: AlphaSettings,
) -> (Image, usize) {
    let (w, h) = (input.width, input.height);
    let frame = FrameRef::new(&input.rgba, w, h, w * 4, PixelFormat::Rgba).expect("frame");
    let mut luma = Vec::new();
    luma_plane(&frame, &mut luma);
    let mut q = mask_at_frame(mask, input).data;
    let before = q.clone();
    hold.apply(&mut q, &luma, (w, h), band);
    let moved = q
        .iter()
        .zip(&before)
        .filter(|(a, b)| (*a - *b).abs() > 0.02)
        .count();
    let rgba = q
        .iter()
        .flat_map(|&p| {
            let g = (threshold_feather(p, alpha.threshold, alpha.feather) * 255.0).round() as u8;
            [g, g, g, 255]
        })
        .collect();
    (
        Image {
            width: w,
            height: h,
            rgba,
        },
        moved,
    )
}

/// The hold of the refined probability on the GPU (`Hold` technique, stepped once per frame)
/// against its CPU reference (`RefinedHold::apply`) on the webcam clip playing at a fifth of
/// its speed: each frame's
/// mask view (feathered) is compared with the CPU's, which runs the same steps from the masks
/// the filter showed (`A`, `b`, band) on the frames it composited. The picture is read just
/// before and just after each filtered render; when a video tick fell between them (the two
/// differ), the filter composited one of the two and the CPU continues with the one its
/// view matches better. The hold must have held something, or the check could not fail.
fn check_refined_hold(env: &Env) -> CheckResult {
    // At a fifth of its speed each picture of the clip stays for about 5 video ticks, so
    // the picture changes at most once while a frame is rendered and read (the machine may be
    // slow), and the still parts stay still.
    let rig = webcam_rig_at(
        env,
        "hold clip",
        &json!({ "mode": "blur", "refine": false, "show_mask": true }),
        20,
    )?;
    rig.settle(env, 2)?;
    // Unrefined masks stop the hold; it restarts with the first refined mask shown.
    update(
        &rig.filter,
        &json!({ "mode": "blur", "show_mask": true, "threshold": 0.5, "feather": 0.2,
            "refine": true, "smoothing": 0.5 }),
    );
    let alpha = AlphaSettings {
        threshold: 0.5,
        feather: 0.2,
    };
    let mut hold = RefinedHold::default();
    let (mut frames, mut banded, mut held_px) = (0usize, 0usize, 0usize);
    let (mut ambiguous, mut unstepped) = (0usize, 0usize);
    let mut worst = 0f64;
    let start = Instant::now();
    while frames < HOLD_FRAMES {
        ensure!(
            start.elapsed() < Duration::from_secs(30),
            "only {frames} refined frames in 30 s"
        );
        env.host.wait_ticks(1, Duration::from_secs(2));
        let before = rig.input(env);
        let (w, h) = rig.size();
        let stepped = stats(&rig.filter)["frames"].as_u64();
        let gpu = env.host.render(rig.src.as_ref(), w, h).ok_or("no frame")?;
        let stepped = stats(&rig.filter)["frames"].as_u64() != stepped;
        let after = rig.input(env);
        if !stepped {
            // The filter saw no new video tick (none reached it while it was switched off
            // for the reads): it composited its last frame again and its hold did not step.
            unstepped += 1;
            continue;
        }
        let mut cd = CallData::new();
        cd.view().set_ptr("dst", std::ptr::null_mut());
        cd.view().set_int("capacity", 0);
        rig.filter.call_proc("ai_background_mask", &mut cd);
        let band = cd.view().get_float("hold_band").unwrap_or(0.0) as f32;
        let Some(mask) = shown_mask(&rig.filter).filter(|m| m.gain.is_some()) else {
            continue;
        };
        // The first refined frame restarts the hold (no previous state: band 0).
        let band = if frames == 0 { 0.0 } else { band };
        let mut candidates = vec![before];
        if candidates[0].rgba != after.rgba {
            ambiguous += 1;
            candidates.push(after);
        }
        let (cpu, moved, next) = candidates
            .iter()
            .map(|input| {
                let mut h = hold.clone();
                let (view, moved) = held_view(&mut h, &mask, input, band, alpha);
                (view, moved, h)
            })
            .min_by(|a, b| {
                diff_stats(&gpu, &a.0)
                    .1
                    .total_cmp(&diff_stats(&gpu, &b.0).1)
            })
            .expect("a candidate");
        hold = next;
        banded += usize::from(band > 0.0);
        held_px += moved;
        worst = worst.max(diff_stats(&gpu, &cpu).1);
        check_parity(&format!("held mask view, frame {frames}"), &gpu, &cpu)?;
        frames += 1;
    }
    ensure!(
        banded > 0 && held_px > 0,
        "the hold never held: {banded} frames with a band, {held_px} pixels moved by it"
    );
    Ok(format!(
        "{frames} frames ({banded} with a band, {ambiguous} with a tick between the reads, \
         {unstepped} renders without a new tick skipped), {held_px} pixel-frames held by > \
         0.02; worst mean diff {worst:.3}"
    ))
}

/// Person probability of `img` by the engine on the CPU (no smoothing), at image size.
fn engine_mask(img: &Image) -> Result<Mask, String> {
    let seg = shared_segmenter(Preset::Landscape, DeviceChoice::Cpu).map_err(|e| e.to_string())?;
    engine_mask_with(img, seg)
}

/// The engine's person probability for `img` with `backend` (no smoothing, no refinement),
/// at the image's size.
fn engine_mask_with(img: &Image, backend: Arc<dyn SegmentationBackend>) -> Result<Mask, String> {
    let frame = FrameRef::packed(&img.rgba, img.width, img.height, PixelFormat::Rgba)
        .map_err(|e| e.to_string())?;
    let settings = PipelineSettings {
        smoothing: 0.0,
        ..Default::default()
    };
    let mut pipeline = MaskPipeline::new(backend);
    let mask = pipeline
        .process(&frame, &settings)
        .map_err(|e| e.to_string())?;
    Ok(mask.clone())
}

/// IoU of two probability maps of the same size, each thresholded at 0.5.
fn mask_iou(a: &Mask, b: &Mask) -> f64 {
    let bits = |m: &Mask| m.data.iter().map(|&p| p >= 0.5).collect::<Vec<_>>();
    iou(&bits(a), &bits(b))
}

/// A paused media source: a still picture gets no new inference; a seek while paused (a new
/// picture, with or without a new async frame) gets a new mask within a second.
fn check_paused_seek(env: &Env) -> CheckResult {
    let rig = webcam_rig(env, "paused", &json!({ "mode": "blur", "smoothing": 0.0 }))?;
    rig.settle(env, 10)?;
    // Paused wherever the clip is; a still picture gets no new inference.
    rig.src.media_play_pause(true);
    rig.frames(env, 45);
    let before = stats(&rig.filter);
    rig.frames(env, 2 * FPS as usize);
    let still = stats(&rig.filter);
    let old_mask = shown_mask(&rig.filter).ok_or("no mask")?;
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let new_inference = n(&still, "worker_frames") - n(&before, "worker_frames");
    let checks = n(&still, "idle_checks") - n(&before, "idle_checks");
    ensure!(
        new_inference == 0,
        "a still, paused source got {new_inference} new inferences in 2 s: {still}"
    );
    ensure!(
        checks >= 10 && n(&still, "idle_unchanged") - n(&before, "idle_unchanged") == checks,
        "{checks} change checks in 2 s of pause: {still}"
    );

    // Seek while paused, to the other end of the clip (the head moves between 0.2 and
    // 1.2 s). OBS shows the new picture without a new async frame (obs_source_set_video_frame).
    // Once the picture shows the new position, a mask of it follows within a second.
    let paused_picture = rig.input(env);
    save_png(env, "paused-before-seek.png", &paused_picture);
    // The media time libobs reports can be far from the picture shown (here a seek to the
    // reported time once gave a new picture, and one CI run saw none after a seek to
    // 1500 ms), so the other end is tried when the first shows nothing new.
    let first = if rig.src.media_time() < 800 {
        1500
    } else {
        200
    };
    let region = vec![true; paused_picture.width * paused_picture.height];
    let seek_to_new_picture = |target: i64| {
        rig.src.media_set_time(target);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(4) {
            rig.frame(env);
            let input = rig.input(env);
            if mean_abs_diff(&input, &paused_picture, &region) > 2.0 {
                return Some(input);
            }
        }
        None
    };
    let other = 1700 - first;
    let (target, input) = match seek_to_new_picture(first) {
        Some(input) => (first, input),
        None => (
            other,
            seek_to_new_picture(other).ok_or_else(|| {
                format!(
                    "the paused clip shows no new picture 4 s after seeking to {first} ms, \
                     nor 4 s after seeking to {other} ms"
                )
            })?,
        ),
    };
    let seen_at = n(&stats(&rig.filter), "frames");
    save_png(env, "paused-after-seek.png", &input);
    let reference = engine_mask(&input)?;
    let iou_old = mask_iou(&mask_at_frame(&old_mask, &input), &reference);
    let mut iou_new = 0.0;
    let mut frames_to_new_mask = None;
    for i in 1..=FPS as usize {
        rig.frame(env);
        let m = shown_mask(&rig.filter).ok_or("no mask")?;
        iou_new = mask_iou(&mask_at_frame(&m, &input), &reference);
        // A mask of a capture taken after the picture changed, matching the new picture (and
        // no worse than the old mask, which may match it too when the clip barely moved).
        if shown_mask_frame(&rig.filter) >= seen_at && iou_new >= 0.9 && iou_new + 0.01 >= iou_old {
            frames_to_new_mask = Some(i);
            break;
        }
    }
    rig.src.media_play_pause(false);
    let Some(frames_to_new_mask) = frames_to_new_mask else {
        return Err(format!(
            "{FPS} frames after the seek: mask IoU {iou_new:.3} with the new picture (old mask {iou_old:.3})"
        ));
    };
    Ok(format!(
        "paused 2 s: 0 inferences, {checks} checks; seek to {target} ms: new picture's mask \
         after {frames_to_new_mask} frames, IoU {iou_new:.3} with it (old mask {iou_old:.3})"
    ))
}

/// Live settings changes apply on the next frames without breaking the output.
fn check_live_settings(env: &Env) -> CheckResult {
    let id = PHOTOS[2];
    let rig = Rig::new(
        image_source(id, &photo_path(env, id)),
        &json!({ "mode": "transparent" }),
    );
    rig.settle(env, 4)?;
    let input = rig.input(env);
    // Each frame is what the CPU compositor makes of the input with the mask that frame
    // was composited with, under the settings in force.
    let expect_cpu = |what: &str, out: &Image| -> Result<Shown, String> {
        let m = shown_mask(&rig.filter).ok_or_else(|| format!("{what}: no mask"))?;
        check_parity(what, out, &cpu_expected(&rig.filter, &input, &m))?;
        Ok(m)
    };
    let mark = env.host.log_mark();
    let mut lines = Vec::new();
    let expect_mask = |settings: Value, size: (usize, usize)| -> Result<(), String> {
        update(&rig.filter, &settings);
        let start = Instant::now();
        loop {
            let out = rig.frame(env).ok_or("no frame")?;
            let m = expect_cpu(&settings.to_string(), &out)?;
            // Refinement shows as the guided filter's gain beside the mask.
            let refined = settings["refine"].as_bool() == Some(true);
            if (m.width, m.height) == size && m.gain.is_some() == refined {
                return Ok(());
            }
            ensure!(
                start.elapsed() < Duration::from_secs(15),
                "{settings}: mask stays {}x{}, expected {size:?}",
                m.width,
                m.height
            );
        }
    };
    expect_mask(
        json!({ "mode": "transparent", "model": "quality", "refine": false }),
        (256, 256),
    )?;
    lines.push("quality 256x256".to_string());
    expect_mask(
        json!({ "mode": "transparent", "model": "quality", "refine": true }),
        (256 * REFINE_CAPTURE_SCALE, 256 * REFINE_CAPTURE_SCALE),
    )?;
    expect_mask(
        json!({ "mode": "blur", "model": "fast", "refine": true }),
        (256 * REFINE_CAPTURE_SCALE, 144 * REFINE_CAPTURE_SCALE),
    )?;
    lines.push(format!("refine {REFINE_CAPTURE_SCALE}x capture"));
    expect_mask(
        json!({ "mode": "blur", "model": "fast", "refine": false, "smoothing": 0.0, "threshold": 0.7 }),
        (256, 144),
    )?;

    // Every N frames: captures happen on every 3rd frame.
    update(&rig.filter, &json!({ "mode": "blur", "every_n_frames": 3 }));
    let c0 = stats(&rig.filter)["captures"].as_u64().unwrap_or(0);
    rig.frames(env, 12);
    let c1 = stats(&rig.filter)["captures"].as_u64().unwrap_or(0);
    ensure!(
        (3..=5).contains(&(c1 - c0)),
        "every 3 frames: {} captures in 12 frames",
        c1 - c0
    );
    lines.push(format!("every 3rd frame: {} captures in 12", c1 - c0));

    // A device that is not compiled in: one log line, CPU fallback, masks keep coming.
    let w0 = stats(&rig.filter)["worker_frames"].as_u64().unwrap_or(0);
    update(&rig.filter, &json!({ "mode": "blur", "device": "cuda" }));
    rig.frames(env, 10);
    let w1 = stats(&rig.filter)["worker_frames"].as_u64().unwrap_or(0);
    if !cfg!(feature = "cuda") {
        ensure!(
            log_contains(env, mark, "falling back to the CPU") >= 1,
            "no log line for the unavailable device"
        );
    }
    ensure!(w1 > w0, "no masks after switching the device");
    lines.push("cuda->cpu fallback".to_string());

    // Mode switches frame by frame.
    for mode in [
        "blur",
        "color",
        "transparent",
        "image",
        "video",
        "source",
        "blur",
    ] {
        update(&rig.filter, &json!({ "mode": mode }));
        let out = rig.frame(env).ok_or("no frame")?;
        expect_cpu(&format!("mode {mode}"), &out)?;
    }
    // The very next frame shows a change.
    let (w, h, gt) = truth(env, id);
    let bg_region = erode(&not(&gt), w, h, 8);
    update(
        &rig.filter,
        &json!({ "mode": "color", "color": 0xFF_FF_00_00u32 }),
    );
    let out = rig.frame(env).ok_or("no frame")?;
    let c = mean_rgb(&out, &bg_region);
    ensure!(
        c[2] > 240.0 && c[0] < 15.0,
        "the frame after switching to blue shows {c:?}"
    );
    update(&rig.filter, &json!({ "show_mask": true }));
    let out = rig.frame(env).ok_or("no frame")?;
    ensure!(
        out.rgba
            .chunks_exact(4)
            .all(|p| p[0] == p[1] && p[1] == p[2] && p[3] == 255),
        "the frame after ticking show mask is not an opaque grey mask"
    );
    update(&rig.filter, &json!({ "show_mask": false, "mode": "blur" }));
    let s = stats(&rig.filter);
    ensure!(s["poisoned"] == json!(false), "the filter gave up: {s}");
    lines.push("mode switches, next-frame changes".to_string());
    Ok(lines.join(", "))
}

/// The source changes size under the filter.
fn check_resize(env: &Env) -> CheckResult {
    let id = PHOTOS[3];
    let big = env.tmp.path().join("big.png");
    let small = env.tmp.path().join("small.png");
    let img = image::open(photo_path(env, id)).map_err(|e| e.to_string())?;
    img.resize_exact(1100, 618, image::imageops::FilterType::Triangle)
        .save(&big)
        .map_err(|e| e.to_string())?;
    img.resize_exact(275, 155, image::imageops::FilterType::Triangle)
        .save(&small)
        .map_err(|e| e.to_string())?;
    let rig = Rig::new(
        image_source(id, &photo_path(env, id)),
        &json!({ "mode": "transparent" }),
    );
    rig.settle(env, 3)?;
    let (w, h, gt) = truth(env, id);
    let gt_img = GrayImage::from_raw(
        w as u32,
        h as u32,
        gt.iter().map(|&v| if v { 255 } else { 0 }).collect(),
    )
    .ok_or("mask")?;
    let mut lines = Vec::new();
    for path in [&big, &small, &photo_path(env, id)] {
        update(&rig.src, &json!({ "file": path }));
        let out = rig
            .frames(env, SETTLE_FRAMES)
            .ok_or("no frame after resize")?;
        let gt = image::imageops::resize(
            &gt_img,
            out.width as u32,
            out.height as u32,
            image::imageops::FilterType::Nearest,
        );
        let gt: Vec<bool> = gt.pixels().map(|p| p[0] >= 128).collect();
        let person: Vec<bool> = out.rgba.chunks_exact(4).map(|p| p[3] >= 128).collect();
        let v = iou(&person, &gt);
        ensure!(
            v >= 0.8,
            "{}x{}: IoU {v:.3} after resize",
            out.width,
            out.height
        );
        lines.push(format!("{}x{} IoU {v:.3}", out.width, out.height));
    }
    Ok(lines.join(", "))
}

/// Bad input: missing and corrupt images and videos, an unknown source, a source without a
/// picture, unreadable weights. Each gives a log line and the filter keeps running.
fn check_bad_input(env: &Env) -> CheckResult {
    let id = PHOTOS[0];
    let corrupt = env.tmp.path().join("corrupt.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nthis is not a png").map_err(|e| e.to_string())?;
    // A PNG whose header says 30000 x 30000 (3.6 GB decoded) with no pixel data: refused by
    // its size, read from the header, not by a failed decode.
    let huge = env.tmp.path().join("huge.png");
    std::fs::write(&huge, png_header_only(30_000, 30_000)).map_err(|e| e.to_string())?;
    let corrupt_weights = env.tmp.path().join("weights.safetensors");
    std::fs::write(&corrupt_weights, b"not safetensors").map_err(|e| e.to_string())?;
    let br = BlurRig::new(env, id, 3)?;
    let rig = &br.rig;
    let blurred_detail = |out: &Image| br.detail(out);
    let mut lines = Vec::new();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "missing image",
            json!({ "mode": "image", "image_path": env.tmp.path().join("nope.png") }),
            "not found",
        ),
        (
            "corrupt image",
            json!({ "mode": "image", "image_path": corrupt }),
            "cannot read background image",
        ),
        (
            "image too large",
            json!({ "mode": "image", "image_path": huge }),
            "larger than 8192 pixels",
        ),
        (
            "missing video",
            json!({ "mode": "video", "video_path": env.tmp.path().join("nope.mp4") }),
            "background video",
        ),
        (
            "unknown source",
            json!({ "mode": "source", "source": "no such source" }),
            "not found",
        ),
    ];
    for (name, settings, needle) in cases {
        let mark = env.host.log_mark();
        update(&rig.filter, &settings);
        let out = rig.frames(env, 4).ok_or("no frame")?;
        let n = log_contains(env, mark, needle);
        ensure!(
            n == 1,
            "{name}: {n} log lines containing '{needle}', expected 1"
        );
        let ratio = blurred_detail(&out);
        ensure!(
            ratio <= 0.5,
            "{name}: no blur fallback (detail x{ratio:.2})"
        );
        lines.push(format!("{name}: 1 log line, blur fallback"));
    }

    // Unreadable weights (the legacy hidden weights_path, as obs-websocket can still set
    // it): one log line, the model in use keeps running, so the background stays blurred.
    // `custom_weights` covers the dialog's "Custom weights".
    let mark = env.host.log_mark();
    update(
        &rig.filter,
        &json!({ "mode": "blur", "weights_path": corrupt_weights }),
    );
    let out = rig.frames(env, 8).ok_or("no frame")?;
    let n = log_contains(
        env,
        mark,
        "cannot load the custom weights, keeping the model",
    );
    ensure!(n == 1, "unreadable weights: {n} log lines");
    let ratio = blurred_detail(&out);
    ensure!(
        ratio <= 0.5,
        "unreadable weights: the previous model stopped (detail x{ratio:.2})"
    );
    lines.push("bad weights: 1 log line, previous model".into());
    update(&rig.filter, &json!({ "mode": "blur", "weights_path": "" }));
    rig.frames(env, 4);
    ensure!(
        stats(&rig.filter)["error"].is_null(),
        "an error after clearing the weights"
    );

    // Weights that load but hold NaN: refused at load (never "segmenter ready" and a
    // NaN mask), one log line, the previous model keeps blurring.
    let nan = env.tmp.path().join("nan.safetensors");
    nan_weights(&nan)?;
    let mark = env.host.log_mark();
    update(&rig.filter, &json!({ "mode": "blur", "weights_path": nan }));
    let out = rig.frames(env, 8).ok_or("no frame")?;
    let (n, ready) = (
        log_contains(env, mark, "cannot load the custom weights"),
        log_contains(env, mark, "segmenter ready"),
    );
    ensure!(
        n == 1 && ready == 0,
        "NaN weights: {n} 'cannot load' and {ready} 'segmenter ready' log lines, expected 1 and 0"
    );
    let ratio = blurred_detail(&out);
    ensure!(
        ratio <= 0.5,
        "NaN weights: the previous model stopped (detail x{ratio:.2})"
    );
    update(&rig.filter, &json!({ "mode": "blur", "weights_path": "" }));
    lines.push("NaN weights: 1 log line, previous model".into());

    // A source without a picture (an image source with no file) on the program output, so
    // OBS's video thread renders it: one log line, pass-through, no crash.
    let mark = env.host.log_mark();
    let empty = Rig::new(
        Source::create("image_source", "empty", None).ok_or("image_source")?,
        &json!({ "mode": "blur" }),
    );
    ensure!(empty.size() == (0, 0), "the empty source has a size");
    env.host.set_output(Some(empty.src.as_ref()));
    env.host.wait_ticks(5, Duration::from_secs(2));
    env.host.set_output(None);
    env.host.wait_ticks(1, Duration::from_secs(1));
    drop(empty);
    let n = log_contains(env, mark, "has no picture yet");
    ensure!(n == 1, "0x0 source: {n} log lines, expected 1");
    lines.push("0x0 source: 1 log line, pass-through".into());
    Ok(lines.join("; "))
}

/// Logit shift of the custom weights file in `custom_weights` (see [`shifted_weights`]).
const CUSTOM_SHIFT: f64 = -4.0;

/// The model status line: its text when shown.
fn model_status(filter: &Source) -> Result<Option<String>, String> {
    let props = filter.properties();
    let p = props
        .iter()
        .find(|p| p.name == "model_status")
        .ok_or("no model status line")?;
    ensure!(p.kind == "info", "the model status line is a {}", p.kind);
    Ok(p.visible.then(|| p.description.clone()))
}

/// "Custom weights": a valid file is loaded and its masks are used; files that cannot be
/// used (missing, not safetensors, the wrong tensors, NaN) keep the previous model's masks
/// coming with one log line and the model status line; a filter that starts with a broken
/// file runs the built-in weights; an old scene collection's hidden `weights_path` moves
/// into the dialog's settings and keeps its file.
fn check_custom_weights(env: &Env) -> CheckResult {
    let id = PHOTOS[1];
    let base = json!({ "mode": "blur", "smoothing": 0.0, "refine": false });
    let rig = Rig::new(image_source("custom", &photo_path(env, id)), &base);
    rig.settle(env, 3)?;
    let input = rig.input(env);
    let shifted = env.tmp.path().join("shifted.safetensors");
    shifted_weights(&shifted, CUSTOM_SHIFT)?;
    let custom_seg = obs_ai_background::Segmenter::from_file(
        &shifted,
        Preset::Landscape,
        &candle_core::Device::Cpu,
    )
    .map_err(|e| e.to_string())?;
    let want_custom = engine_mask_with(&input, Arc::new(custom_seg))?;
    let want_builtin = engine_mask(&input)?;
    let apart = mask_iou(&want_custom, &want_builtin);
    ensure!(
        apart < 0.97,
        "the shifted weights' mask is too close to the built-in one (IoU {apart:.3})"
    );
    // IoU of the shown mask with the custom and the built-in engine masks.
    let ious = |filter: &Source| -> Result<(f64, f64), String> {
        let m = mask_at_frame(&shown_mask(filter).ok_or("no mask")?, &input);
        Ok((mask_iou(&m, &want_custom), mask_iou(&m, &want_builtin)))
    };
    let shown = || ious(&rig.filter);
    let (c, b) = shown()?;
    ensure!(
        b > c + 0.01,
        "built-in weights: shown mask IoU {b:.3} with the built-in, {c:.3} with the custom mask"
    );
    let mut lines = vec![format!(
        "built-in IoU {b:.3} (custom {c:.3}; engine masks apart: IoU {apart:.3})"
    )];

    // The custom file, picked in the dialog.
    let mark = env.host.log_mark();
    update(
        &rig.filter,
        &json!({ "model": "custom", "custom_model": "fast", "custom_weights": shifted }),
    );
    let start = Instant::now();
    let (c, b) = loop {
        rig.frame(env);
        let (c, b) = shown()?;
        if c > b + 0.01 && c >= 0.95 {
            break (c, b);
        }
        ensure!(
            start.elapsed() < Duration::from_secs(10),
            "custom weights not in use after 10 s: shown mask IoU {c:.3} with the custom, \
             {b:.3} with the built-in mask; {}",
            stats(&rig.filter)
        );
    };
    let ready = log_contains(env, mark, "segmenter ready");
    ensure!(
        ready == 1,
        "custom weights: {ready} 'segmenter ready' lines"
    );
    ensure!(
        model_status(&rig.filter)?.is_none(),
        "status line shown for good weights"
    );
    let props = rig.filter.properties();
    let prop = |name: &str| props.iter().find(|p| p.name == name);
    ensure!(
        prop("model").is_some_and(|p| p.items.contains(&("custom".to_string(), true)))
            && prop("custom_weights").is_some_and(|p| p.kind == "path" && p.visible)
            && prop("custom_model").is_some_and(|p| {
                p.visible && p.items.len() == 2 && !p.long_description.is_empty()
            }),
        "the dialog does not show the custom weights settings: {:?}",
        props
            .iter()
            .filter(|p| p.name.starts_with("custom") || p.name == "model")
            .collect::<Vec<_>>()
    );
    lines.push(format!(
        "custom file: shown IoU {c:.3} with its mask (built-in {b:.3})"
    ));

    // Files that cannot be used: the custom model keeps running.
    let broken = env.tmp.path().join("broken.safetensors");
    std::fs::write(&broken, b"not safetensors").map_err(|e| e.to_string())?;
    let foreign = env.tmp.path().join("foreign.safetensors");
    foreign_weights(&foreign)?;
    let nan = env.tmp.path().join("nan-custom.safetensors");
    nan_weights(&nan)?;
    let missing = env.tmp.path().join("missing.safetensors");
    let cases = [
        ("missing", &missing, "not found"),
        ("not safetensors", &broken, "Cannot use the weights"),
        ("wrong tensors", &foreign, "Cannot use the weights"),
        ("NaN", &nan, "Cannot use the weights"),
    ];
    for (name, file, want_status) in cases {
        let mark = env.host.log_mark();
        let before = stats(&rig.filter)["uploads"].as_u64().unwrap_or(0);
        update(&rig.filter, &json!({ "custom_weights": file }));
        rig.frames(env, 8);
        let n = log_contains(
            env,
            mark,
            "cannot load the custom weights, keeping the model",
        );
        let other = log_contains(env, mark, "cannot load") - n;
        let ready = log_contains(env, mark, "segmenter ready");
        ensure!(
            n == 1 && other == 0 && ready == 0,
            "{name}: {n} 'keeping the model' lines, {other} other 'cannot load' lines, \
             {ready} 'segmenter ready' lines; expected 1, 0, 0"
        );
        let after = stats(&rig.filter)["uploads"].as_u64().unwrap_or(0);
        let (c, b) = shown()?;
        ensure!(
            after > before && c >= 0.95 && c > b,
            "{name}: masks {before} -> {after}, shown IoU {c:.3} with the custom mask \
             (built-in {b:.3}): the previous model did not keep running"
        );
        let status = model_status(&rig.filter)?.unwrap_or_default();
        ensure!(
            status.contains(want_status),
            "{name}: model status {status:?}, expected {want_status:?}"
        );
        lines.push(format!("{name}: 1 log line, custom masks go on, status ok"));
    }
    // Back to a good file: no status line, no error.
    update(&rig.filter, &json!({ "custom_weights": shifted }));
    rig.frames(env, 4);
    ensure!(
        model_status(&rig.filter)?.is_none() && stats(&rig.filter)["error"].is_null(),
        "status after picking good weights again: {:?}",
        model_status(&rig.filter)?
    );
    drop(rig);

    // A filter that starts with a broken file runs the built-in weights.
    let mark = env.host.log_mark();
    let rig = Rig::new(
        image_source("custom-start", &photo_path(env, id)),
        &json!({ "mode": "blur", "smoothing": 0.0, "refine": false, "model": "custom",
                 "custom_weights": broken }),
    );
    rig.settle(env, 3)?;
    let n = log_contains(
        env,
        mark,
        "cannot load the custom weights, using the built-in",
    );
    let (c, b) = ious(&rig.filter)?;
    ensure!(
        n == 1 && b > c + 0.01,
        "started with a broken file: {n} log lines, shown IoU {b:.3} with the built-in mask \
         ({c:.3} custom)"
    );
    drop(rig);
    lines.push("started broken: built-in weights, 1 log line".into());

    // An old scene collection: the hidden weights_path with Fast.
    let rig = Rig::new(
        image_source("custom-legacy", &photo_path(env, id)),
        &json!({ "mode": "blur", "smoothing": 0.0, "refine": false, "model": "fast",
                 "weights_path": shifted }),
    );
    let settings = rig.filter.settings();
    let d = settings.as_ref();
    ensure!(
        d.get_string("model") == "custom"
            && d.get_string("custom_model") == "fast"
            && Path::new(&d.get_string("custom_weights")) == shifted
            && d.get_string("weights_path").is_empty(),
        "legacy settings not migrated: {}",
        d.json()
    );
    rig.settle(env, 3)?;
    let (c, b) = ious(&rig.filter)?;
    ensure!(
        c >= 0.95 && c > b,
        "legacy weights_path: shown IoU {c:.3} with the custom mask (built-in {b:.3})"
    );
    lines.push("legacy weights_path: migrated, custom masks".into());
    Ok(lines.join("; "))
}

/// Worker faults (a panic, an inference error, a NaN mask), injected through the test hook:
/// the stale mask is dropped at once (the video passes through untouched), one log line, the
/// worker retries with a back-off, and when masks come back one more line and blur again.
fn check_worker_faults(env: &Env) -> CheckResult {
    const FAULTS: u64 = 3;
    let br = BlurRig::new(env, PHOTOS[3], 4)?;
    let (rig, input) = (&br.rig, &br.input);
    let mut lines = Vec::new();
    for kind in ["panic", "error", "nan"] {
        let before = stats(&rig.filter);
        let mark = env.host.log_mark();
        ensure!(
            inject_fault(&rig.filter, kind, FAULTS as i64),
            "{kind}: the filter has no ai_background_inject_fault hook"
        );
        // The first fault: the worker withdraws its mask.
        let start = Instant::now();
        while stats(&rig.filter)["error"].is_null() {
            ensure!(
                start.elapsed() < Duration::from_secs(5),
                "{kind}: no fault reported after 5 s: {}",
                stats(&rig.filter)
            );
            rig.frame(env);
        }
        let out = rig.frames(env, 2).ok_or("no frame")?;
        let (_, mean, _) = diff_stats(&out, input);
        ensure!(
            mean < 0.5 && shown_mask(&rig.filter).is_none(),
            "{kind}: a mask is still composited during the fault (diff from the input {mean:.2})"
        );
        // Back-off and retries until the faults are used up, then masks again.
        let start = Instant::now();
        while !stats(&rig.filter)["error"].is_null() || shown_mask(&rig.filter).is_none() {
            ensure!(
                start.elapsed() < Duration::from_secs(15),
                "{kind}: no mask 15 s after the fault: {}",
                stats(&rig.filter)
            );
            rig.frame(env);
        }
        let out = rig.frames(env, SETTLE_FRAMES).ok_or("no frame")?;
        let after = stats(&rig.filter);
        let faults = after["faults"].as_u64().unwrap_or(0) - before["faults"].as_u64().unwrap_or(0);
        let skipped = after["backoff_skipped"].as_u64().unwrap_or(0)
            - before["backoff_skipped"].as_u64().unwrap_or(0);
        ensure!(
            faults == FAULTS && skipped > 0,
            "{kind}: {faults} failed attempts (expected {FAULTS}), {skipped} frames skipped in back-off"
        );
        let (down, up) = (
            log_contains(env, mark, "cannot produce masks"),
            log_contains(env, mark, "masks are back"),
        );
        ensure!(
            down == 1 && up == 1,
            "{kind}: {down} 'cannot produce masks' and {up} 'masks are back' log lines, expected 1 and 1"
        );
        let ratio = br.detail(&out);
        ensure!(
            ratio <= 0.5,
            "{kind}: no blur after recovery (detail x{ratio:.2})"
        );
        ensure!(
            after["poisoned"] == json!(false),
            "{kind}: the filter gave up: {after}"
        );
        lines.push(format!(
            "{kind}: pass-through, {faults} attempts, {skipped} frames of back-off, blur again (x{ratio:.3})"
        ));
    }
    Ok(lines.join("; "))
}

/// The top-left corner of the first `size` x `size` block (on an 8 px grid) inside `region`.
fn find_block(region: &[bool], w: usize, h: usize, size: usize) -> Option<(usize, usize)> {
    (0..h.saturating_sub(size))
        .step_by(8)
        .flat_map(|y| (0..w.saturating_sub(size)).step_by(8).map(move |x| (x, y)))
        .find(|&(x, y)| {
            (y..y + size).all(|yy| region[yy * w + x..yy * w + x + size].iter().all(|&v| v))
        })
}

/// Mean over `region` of `f(pixel)` for a float image.
fn mean_float(img: &FloatImage, region: &[bool], f: impl Fn(&[f32]) -> f32) -> f64 {
    let (mut sum, mut n) = (0.0f64, 0usize);
    for (p, _) in img.rgba.chunks_exact(4).zip(region).filter(|(_, &r)| r) {
        sum += f64::from(f(p));
        n += 1;
    }
    sum / n.max(1) as f64
}

/// Colour spaces: a Rec. 709 extended source (a float texture of a photo, a background patch
/// several times brighter than SDR white) keeps its values above 1.0 through the filter into
/// a float target; the person stays as it was; an 8-bit target gets the photo back; a
/// colour background is composited in linear light. The filter reports the source's space.
fn check_color_spaces(env: &Env) -> CheckResult {
    const PATCH: usize = 64;
    let id = PHOTOS[0];
    let (w, h, gt) = truth(env, id);
    let (px, py) = find_block(&erode(&not(&gt), w, h, 16), w, h, PATCH)
        .ok_or("no background block in the photo")?;
    let inner: Vec<bool> = (0..w * h)
        .map(|i| {
            let (x, y) = (i % w, i / w);
            (px + PATCH / 4..px + 3 * PATCH / 4).contains(&x)
                && (py + PATCH / 4..py + 3 * PATCH / 4).contains(&y)
        })
        .collect();
    let person = erode(&gt, w, h, 8);
    let photo = image::open(photo_path(env, id))
        .map_err(|e| e.to_string())?
        .to_rgba8();
    // A gain that puts the patch's brightest channel at 3.0 on average.
    let patch_max = (py..py + PATCH)
        .flat_map(|y| (px..px + PATCH).map(move |x| (x, y)))
        .map(|(x, y)| {
            let p = photo.get_pixel(x as u32, y as u32);
            (0..3)
                .map(|c| srgb_to_linear(f32::from(p[c]) / 255.0))
                .fold(0.0f32, f32::max)
        })
        .sum::<f32>()
        / (PATCH * PATCH) as f32;
    let gain = 3.0 / patch_max.max(0.02);
    let settings = json!({
        "file": photo_path(env, id), "space": 2, "gain": gain,
        "gain_x": px, "gain_y": py, "gain_w": PATCH, "gain_h": PATCH,
    });
    let src = Source::create(host::FLOAT_IMAGE_SOURCE, "hdr", Some(&data_from(&settings)))
        .ok_or("no float image source")?;
    let rig = Rig::new(src, &json!({ "mode": "blur", "blur_strength": 4.0 }));
    ensure!(
        rig.size() == (w as u32, h as u32),
        "source size {:?}",
        rig.size()
    );
    let all = [
        ColorSpace::Srgb,
        ColorSpace::Srgb16f,
        ColorSpace::Rec709Extended,
    ];
    let (reported, sdr_only) = (
        rig.filter.as_ref().color_space(&all),
        rig.filter.as_ref().color_space(&[ColorSpace::Srgb]),
    );
    ensure!(
        reported == ColorSpace::Rec709Extended && sdr_only == ColorSpace::Srgb,
        "the filter reports {reported:?} (offered all) and {sdr_only:?} (offered sRGB) for an extended source"
    );
    let sdr = rig.settle(env, SETTLE_FRAMES)?;
    let hdr = |enabled: bool| {
        rig.filter.set_enabled(enabled);
        let img = env.host.render_float(
            rig.src.as_ref(),
            w as u32,
            h as u32,
            ColorSpace::Rec709Extended,
        );
        rig.filter.set_enabled(true);
        img.ok_or("no float frame")
    };
    env.host.wait_ticks(1, Duration::from_secs(2));
    let (out, input) = (hdr(true)?, hdr(false)?);
    let max_rgb = |p: &[f32]| p[0].max(p[1]).max(p[2]);
    let (patch_out, patch_in) = (
        mean_float(&out, &inner, max_rgb),
        mean_float(&input, &inner, max_rgb),
    );
    ensure!(
        patch_in > 1.5 && patch_out > 1.5 && (patch_out / patch_in - 1.0).abs() < 0.1,
        "extended-range patch: {patch_in:.3} in, {patch_out:.3} out (clipped to SDR?)"
    );
    let diff: Vec<f32> = out
        .rgba
        .chunks_exact(4)
        .zip(input.rgba.chunks_exact(4))
        .map(|(a, b)| (0..3).map(|c| (a[c] - b[c]).abs()).sum::<f32>() / 3.0)
        .collect();
    // An scRGB target (1.0 = 80 nits): the same light, scaled by SDR white / 80 nits.
    let scrgb = env
        .host
        .render_float(
            rig.src.as_ref(),
            w as u32,
            h as u32,
            ColorSpace::Rec709Scrgb,
        )
        .ok_or("no scRGB frame")?;
    let scale = mean_float(&scrgb, &inner, max_rgb) / patch_out;
    let want_scale = f64::from(sdr_white_level()) / 80.0;
    ensure!(
        (scale / want_scale - 1.0).abs() < 0.05,
        "scRGB target: patch scaled by {scale:.3}, expected SDR white / 80 = {want_scale:.3}"
    );
    let person_diff = diff
        .iter()
        .zip(&person)
        .filter(|(_, &p)| p)
        .map(|(d, _)| f64::from(*d))
        .sum::<f64>()
        / person.iter().filter(|&&p| p).count().max(1) as f64;
    ensure!(
        person_diff < 0.01,
        "extended source: the person changed by {person_diff:.4} (linear units)"
    );
    // An 8-bit target gets the photo back (linear -> sRGB-encoded) where the person is.
    let photo_img = Image {
        width: w,
        height: h,
        rgba: photo.into_raw(),
    };
    let sdr_diff = mean_abs_diff(&sdr, &photo_img, &person);
    ensure!(
        sdr_diff <= 2.0,
        "extended source on an 8-bit target: the person differs from the photo by {sdr_diff:.2} levels"
    );
    // Colour mode: (255, 128, 0) composited in linear light.
    update(
        &rig.filter,
        &json!({ "mode": "color", "color": 0xFF_00_80_FFu32 }),
    );
    env.host.wait_ticks(1, Duration::from_secs(2));
    let out = hdr(true)?;
    let bg = erode(&not(&gt), w, h, 8);
    let c = [0, 1, 2].map(|i| mean_float(&out, &bg, |p| p[i]));
    let want = [1.0, f64::from(srgb_to_linear(128.0 / 255.0)), 0.0];
    ensure!(
        c.iter().zip(want).all(|(a, b)| (a - b).abs() < 0.01),
        "colour background in linear light is {c:?}, expected {want:?}"
    );
    Ok(format!(
        "reports Rec709Extended; patch {patch_in:.2} in -> {patch_out:.2} out (float target), x{scale:.2} on scRGB, person diff {person_diff:.4}, 8-bit target person diff {sdr_diff:.2} levels, colour bg {:.3},{:.3},{:.3}",
        c[0], c[1], c[2]
    ))
}

/// "Match video to mask": a numbered source (seven copies of a photo shifted by 1/8 of its width,
/// the next one on every render) in transparent mode, smoothing 0. Each output frame's picture
/// (its colour where it is opaque) and mask (its alpha) are identified among the seven by
/// comparison with the pictures and with the CPU engine's alpha of each. With the setting on,
/// the two are the same picture on every frame once running; off (the lowest latency), the
/// mask is the picture of the earlier frame the filter reports it from.
fn check_match_video(env: &Env) -> CheckResult {
    // Seven pictures, the next on each rendered frame: a mask 1 to 6 frames behind is of
    // another picture. (Advancing per video tick instead, a loaded host that lets 7 ticks pass
    // between frames showed the same picture frame after frame.)
    const K: u32 = 7;
    let photo = photo_path(env, PHOTOS[0]);
    let img = image::open(&photo).map_err(|e| e.to_string())?.to_rgba8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let shift = img.width() / 8;
    let pictures: Vec<RgbaImage> = (0..K)
        .map(|k| {
            let mut p = img.clone();
            for (x, y, px) in p.enumerate_pixels_mut() {
                *px = *img.get_pixel(
                    (x + img.width() - (k * shift) % img.width()) % img.width(),
                    y,
                );
            }
            p
        })
        .collect();
    let fs =
        json!({ "mode": "transparent", "smoothing": 0.0, "refine": false, "match_video": true });
    let segmenter = obs_ai_background::Segmenter::new(
        obs_ai_background::Preset::Landscape,
        &candle_core::Device::Cpu,
    )
    .map_err(|e| e.to_string())?;
    let mut pipe = obs_ai_background::MaskPipeline::new(std::sync::Arc::new(segmenter));
    let settings0 = obs_ai_background::PipelineSettings {
        smoothing: 0.0,
        ..Default::default()
    };
    let alphas: Vec<Vec<f32>> = pictures
        .iter()
        .map(|p| {
            pipe.reset();
            let frame = FrameRef::packed(p.as_raw(), w, h, PixelFormat::Rgba).expect("frame");
            let m = pipe.process(&frame, &settings0).expect("mask");
            let a = alpha_of(&fs);
            m.data
                .iter()
                .map(|&p| threshold_feather(p, a.threshold, a.feather))
                .collect()
        })
        .collect();
    let settings = json!({
        "file": photo.to_string_lossy(),
        "space": 0,
        "frames": K,
        "shift": shift,
        "per_render": true,
    });
    let src = Source::create(
        host::FLOAT_IMAGE_SOURCE,
        "numbered",
        Some(&data_from(&settings)),
    )
    .ok_or("cannot create the numbered source")?;
    let rig = Rig::new(src, &fs);
    rig.settle(env, 4)?;
    // (picture, mask) of an output frame.
    let identify = |out: &Image| -> (usize, usize) {
        let argmin = |f: &dyn Fn(usize) -> f64| {
            (0..K as usize)
                .min_by(|&a, &b| f(a).total_cmp(&f(b)))
                .unwrap_or(0)
        };
        let mask = argmin(&|k| {
            out.rgba
                .chunks_exact(4)
                .zip(&alphas[k])
                .map(|(p, &a)| (f64::from(p[3]) / 255.0 - f64::from(a)).abs())
                .sum::<f64>()
        });
        let picture = argmin(&|k| {
            out.rgba
                .chunks_exact(4)
                .zip(pictures[k].as_raw().chunks_exact(4))
                .filter(|(p, _)| p[3] == 255)
                .map(|(p, q)| {
                    (0..3)
                        .map(|c| (i32::from(p[c]) - i32::from(q[c])).abs() as f64)
                        .sum::<f64>()
                })
                .sum::<f64>()
        });
        (picture, mask)
    };
    // Frames four ticks apart (133 ms): on this shared 2-core VM the worker can take 70 ms
    // and more per mask, and the ring covers a mask at most two rendered frames behind. The
    // first frames at this pace let the mask catch up with the frames.
    // Each frame: (picture, mask, the filter's frame number of each).
    let num = |st: &Value, key: &str| st[key].as_u64().unwrap_or(0);
    let run = |n: usize| -> Result<Vec<(usize, usize, u64, u64)>, String> {
        (0..n)
            .map(|_| {
                env.host.wait_ticks(3, Duration::from_secs(2));
                let out = rig.frame(env).ok_or("no frame")?;
                let (p, m) = identify(&out);
                let st = stats(&rig.filter);
                Ok((
                    p,
                    m,
                    num(&st, "composited_video_frame"),
                    num(&st, "composited_mask_frame"),
                ))
            })
            .collect()
    };
    let show = |frames: &[(usize, usize, u64, u64)]| {
        frames
            .iter()
            .map(|(p, m, v, f)| format!("picture {p} of frame {v}, mask {m} of frame {f}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mut seen = run(4)?;
    let on = run(30)?;
    let bad: Vec<_> = on
        .iter()
        .filter(|(p, m, v, f)| p != m || v != f)
        .copied()
        .collect();
    ensure!(bad.is_empty(), "match video on: {}", show(&bad));
    // The frames were not all the same picture (the source moves on every frame).
    let distinct = on
        .iter()
        .map(|t| t.0)
        .collect::<std::collections::HashSet<_>>()
        .len();
    ensure!(
        distinct >= 3,
        "only {distinct} distinct pictures in 30 frames"
    );
    seen.extend_from_slice(&on);
    update(
        &rig.filter,
        &json!({ "mode": "transparent", "smoothing": 0.0, "refine": false, "match_video": false }),
    );
    seen.extend(run(4)?);
    let off = run(30)?;
    seen.extend_from_slice(&off);
    // The picture each rendered frame showed, by the filter's frame number.
    let picture_of: std::collections::HashMap<u64, usize> =
        seen.iter().map(|&(p, _, v, _)| (v, p)).collect();
    // Off: every frame shows the newest mask, of an earlier frame, and that mask is the
    // picture that frame showed.
    let wrong: Vec<_> = off
        .iter()
        .filter(|&&(_, m, v, f)| f >= v || picture_of.get(&f).is_some_and(|&q| q != m))
        .copied()
        .collect();
    ensure!(wrong.is_empty(), "match video off: {}", show(&wrong));
    let known = off
        .iter()
        .filter(|(_, _, _, f)| picture_of.contains_key(f))
        .count();
    let trailing = off.iter().filter(|(p, m, _, _)| p != m).count();
    ensure!(
        known >= 25 && trailing >= 25,
        "match video off: mask of an earlier rendered frame on {known} of 30, of another \
         picture on {trailing} of 30: {}",
        show(&off)
    );
    let lag = off.iter().map(|(_, _, v, f)| v - f).sum::<u64>() as f64 / off.len() as f64;
    Ok(format!(
        "on: picture = mask on 30 of 30 frames ({distinct} pictures); off: the mask is of an \
         earlier frame on 30 of 30 (mean {lag:.1} frames behind), the picture that frame \
         showed on {known}, another picture than the frame's on {trailing}"
    ))
}

/// Switching the filter off stops the work; two instances share one model with a worker each.
fn check_instances_and_visibility(env: &Env) -> CheckResult {
    env.host.wait_for_destroy_queue();
    let a = Rig::new(
        image_source("a", &photo_path(env, PHOTOS[0])),
        &json!({ "mode": "blur" }),
    );
    let b = Rig::new(
        image_source("b", &photo_path(env, PHOTOS[1])),
        &json!({ "mode": "blur" }),
    );
    a.settle(env, 2)?;
    b.settle(env, 2)?;
    let (sa, sb) = (stats(&a.filter), stats(&b.filter));
    ensure!(
        sa["model_id"] == sb["model_id"] && sa["model_id"].as_u64().unwrap_or(0) != 0,
        "instances do not share the model: {} vs {}",
        sa["model_id"],
        sb["model_id"]
    );
    let threads = live_workers(&a.filter);
    ensure!(threads == 2, "{threads} worker threads for 2 instances");

    a.filter.set_enabled(false);
    let before = stats(&a.filter);
    for _ in 0..8 {
        a.frame(env);
    }
    let after = stats(&a.filter);
    ensure!(
        before["captures"] == after["captures"]
            && before["worker_frames"] == after["worker_frames"],
        "a disabled filter kept working: {before} -> {after}"
    );
    a.filter.set_enabled(true);
    a.frames(env, 4);
    let resumed = stats(&a.filter);
    ensure!(
        resumed["captures"].as_u64() > after["captures"].as_u64(),
        "no work after re-enabling"
    );
    // A background video plays only while the filter is visible.
    update(
        &a.filter,
        &json!({ "mode": "video", "video_path": fixture(env, BACKGROUND_CLIP) }),
    );
    a.frames(env, 2);
    let shown = stats(&a.filter)["background_video"].clone();
    // Off the program output and out of every preview.
    a.src.dec_showing();
    a.src.dec_active();
    env.host.wait_ticks(2, Duration::from_secs(1));
    let hidden = stats(&a.filter)["background_video"].clone();
    a.src.inc_active();
    a.src.inc_showing();
    env.host.wait_ticks(2, Duration::from_secs(1));
    let again = stats(&a.filter)["background_video"].clone();
    ensure!(
        shown == json!("active") && hidden == json!("inactive") && again == json!("active"),
        "background video while shown/hidden/shown: {shown}/{hidden}/{again}"
    );
    Ok(format!(
        "shared model id {}, {threads} workers, disabled = idle, hidden = video paused",
        sa["model_id"]
    ))
}

/// 100 create/destroy cycles: no crash, no leaked worker threads.
fn check_create_destroy(env: &Env) -> CheckResult {
    // A long-lived instance elsewhere, to ask how many workers run.
    let probe = Rig::new(
        image_source("probe", &photo_path(env, PHOTOS[1])),
        &json!({ "mode": "blur" }),
    );
    let src = image_source("cycles", &photo_path(env, PHOTOS[2]));
    src.inc_showing();
    let (w, h) = (src.as_ref().width(), src.as_ref().height());
    env.host.wait_for_destroy_queue();
    let threads_before = live_workers(&probe.filter);
    let modes = ["blur", "transparent", "color", "image", "video", "source"];
    let start = Instant::now();
    let mut slowest_release = Duration::ZERO;
    for i in 0..100 {
        let f = add_filter(
            &src,
            &format!("cycle {i}"),
            &json!({ "mode": modes[i % modes.len()] }),
        );
        if i % 10 == 0 {
            // Give some instances time to load the model and process frames.
            env.host.wait_ticks(3, Duration::from_secs(1));
        }
        env.host.render(src.as_ref(), w, h).ok_or("render")?;
        src.filter_remove(&f);
        let t = Instant::now();
        drop(f);
        env.host.wait_for_destroy_queue();
        slowest_release = slowest_release.max(t.elapsed());
    }
    let elapsed = start.elapsed();
    let threads_after = live_workers(&probe.filter);
    src.dec_showing();
    src.remove();
    drop(src);
    drop(probe);
    ensure!(
        threads_before == 1 && threads_after == 1,
        "worker threads: {threads_before} before, {threads_after} after (1 expected: the probe)"
    );
    Ok(format!(
        "100 cycles in {:.1} s, slowest destroy incl. libobs destruction queue {:.1} ms, worker threads {threads_before} -> {threads_after}",
        elapsed.as_secs_f64(),
        slowest_release.as_secs_f64() * 1e3
    ))
}

type Check = (&'static str, fn(&Env) -> CheckResult);

fn main() {
    let filter_arg: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let checks: Vec<Check> = vec![
        ("registration", check_registration),
        ("properties", check_properties),
        ("transparent_iou", check_transparent_iou),
        ("cpu_threads", check_cpu_threads),
        ("blur_detail", check_blur),
        ("gpu_matches_cpu", check_gpu_matches_cpu),
        ("backgrounds", check_backgrounds),
        ("webcam_clip_async", check_webcam_clip),
        ("refined_hold", check_refined_hold),
        ("paused_seek", check_paused_seek),
        ("live_settings", check_live_settings),
        ("source_resize", check_resize),
        ("bad_input", check_bad_input),
        ("custom_weights", check_custom_weights),
        ("worker_faults", check_worker_faults),
        ("color_spaces", check_color_spaces),
        ("match_video", check_match_video),
        ("instances_visibility", check_instances_and_visibility),
        ("create_destroy_100", check_create_destroy),
    ];
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("module-data");
    host::stage_module_data(&repo, &data).expect("stage module data");
    let module = host::built_module().expect("built module");
    let config = HostConfig {
        width: 640,
        height: 360,
        fps: FPS,
        locale: "en-US".into(),
    };
    // The filter's test hooks (ai_background_inject_fault) act only with this set; set while
    // the process has a single thread, before OBS starts.
    std::env::set_var("AI_BACKGROUND_TEST_HOOKS", "1");
    let host = match Host::start(config) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("cannot start OBS: {e}");
            std::process::exit(1);
        }
    };
    for m in ["image-source", "obs-ffmpeg"] {
        host.load_system_module(m).expect("system module");
    }
    host.load_module(&module, &data).expect("load the plugin");
    host.register_float_image_source();
    host.post_load();
    let mut env = Env {
        host,
        fixtures: repo.join("tests/fixtures/obs"),
        tmp,
    };

    let mut results: Vec<(&str, CheckResult, Duration)> = Vec::new();
    for (name, check) in checks {
        if filter_arg.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let t = Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&env)))
            .unwrap_or_else(|e| {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(format!("panicked: {msg}"))
            });
        println!(
            "{} {name} ({:.1} s): {}",
            if r.is_ok() { "ok  " } else { "FAIL" },
            t.elapsed().as_secs_f64(),
            match &r {
                Ok(s) | Err(s) => s,
            }
        );
        results.push((name, r, t.elapsed()));
    }
    let leaks = env.host.shutdown();
    let leak_result: CheckResult = if leaks == 0 {
        Ok("0 memory leaks reported by obs_shutdown".into())
    } else {
        Err(format!("{leaks} memory leaks reported by obs_shutdown"))
    };
    println!(
        "{} shutdown_leaks: {}",
        if leak_result.is_ok() { "ok  " } else { "FAIL" },
        match &leak_result {
            Ok(s) | Err(s) => s,
        }
    );
    results.push(("shutdown_leaks", leak_result, Duration::ZERO));
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| r.1.is_err())
        .map(|r| r.0)
        .collect();
    drop(env.tmp);
    if failed.is_empty() {
        println!("obs_filter: {} checks passed", results.len());
    } else {
        println!("obs_filter: FAILED checks: {}", failed.join(", "));
        std::process::exit(1);
    }
}
