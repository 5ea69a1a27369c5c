//! The person segmenter: presets, weights and the [`Segmenter`] that runs the network.
//!
//! The weights of both presets are embedded in the library (converted from the MediaPipe
//! selfie-segmentation `.tflite` files by `tools/convert_tflite.py`; see
//! `models/MODEL_CARD.md`), so nothing is looked up at run time. Other weights with the same
//! keys can be loaded from a `.safetensors` file with [`Segmenter::from_file`].

pub mod fused;
pub mod helper;
pub mod kernels;
#[cfg(target_arch = "aarch64")]
mod neon;
pub mod net;
pub mod ops;
pub mod portable;
pub mod trainable;

use crate::device::DeviceChoice;
use crate::{EngineError, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use fused::FusedNet;
pub use net::Kernels;
use net::SelfieSegmentation;
use parking_lot::Mutex;
use portable::PortableNet;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Weak};

/// The landscape weights (`models/landscape.safetensors`, float16, 213 KB).
pub static LANDSCAPE_WEIGHTS: &[u8] = include_bytes!("../../models/landscape.safetensors");
/// The square weights (`models/square.safetensors`, float16, 213 KB).
pub static SQUARE_WEIGHTS: &[u8] = include_bytes!("../../models/square.safetensors");

/// A model preset: the same architecture trained for one input size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Preset {
    /// Input `[1, 3, 144, 256]` (16:9, MediaPipe `selfie_segmentation_landscape.tflite`);
    /// fastest, 33.3 M multiply-adds per frame. "Fast" in the OBS filter.
    #[default]
    Landscape,
    /// Input `[1, 3, 256, 256]` (MediaPipe `selfie_segmentation.tflite`); 59.2 M
    /// multiply-adds. "Quality" in the OBS filter.
    Square,
}

impl Preset {
    /// Both presets.
    pub const ALL: [Preset; 2] = [Preset::Landscape, Preset::Square];

    /// Model input `(width, height)` in pixels.
    pub const fn input_size(self) -> (usize, usize) {
        match self {
            Preset::Landscape => (256, 144),
            Preset::Square => (256, 256),
        }
    }

    /// The preset's name as used on the command line and in file names.
    pub const fn name(self) -> &'static str {
        match self {
            Preset::Landscape => "landscape",
            Preset::Square => "square",
        }
    }

    /// The embedded safetensors weights.
    pub fn embedded_weights(self) -> &'static [u8] {
        match self {
            Preset::Landscape => LANDSCAPE_WEIGHTS,
            Preset::Square => SQUARE_WEIGHTS,
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "landscape" | "fast" => Ok(Preset::Landscape),
            "square" | "quality" => Ok(Preset::Square),
            _ => Err(EngineError::UnknownPreset(s.to_string())),
        }
    }
}

/// Something that turns a model input into a person probability map.
///
/// The candle [`Segmenter`] is the implementation; the trait keeps the pipeline independent of
/// it so other back ends (another runtime, a test double) can be plugged in.
pub trait SegmentationBackend: Send + Sync {
    /// Model input `(width, height)` in pixels.
    fn input_size(&self) -> (usize, usize);

    /// Runs the model. `input` is NCHW `[1, 3, H, W]` RGB in 0..1 (`3 * W * H` values),
    /// `output` receives the person probability `[1, 1, H, W]` (`W * H` values, 0..1).
    ///
    /// # Errors
    /// [`EngineError::InvalidFrame`] on wrong slice lengths, [`EngineError::Inference`] when
    /// the device fails.
    fn segment(&self, input: &[f32], output: &mut [f32]) -> Result<()>;

    /// [`SegmentationBackend::segment`] on up to `threads` CPU threads (the calling one and
    /// `threads - 1` helpers; only the fused CPU network uses a second one, others ignore
    /// it).
    ///
    /// # Errors
    /// As [`SegmentationBackend::segment`], and [`EngineError::Inference`] when a helper
    /// thread cannot be started.
    fn segment_threads(&self, input: &[f32], output: &mut [f32], threads: usize) -> Result<()> {
        let _ = threads;
        self.segment(input, output)
    }

    /// A hint that [`SegmentationBackend::segment_threads`] with `threads` follows soon
    /// (within about 0.2 ms): the fused CPU network wakes its sleeping helper thread, so the
    /// frame does not wait for it (tens of microseconds). The default does nothing.
    fn wake_threads(&self, threads: usize) {
        let _ = threads;
    }

    /// A short description for logs ("candle landscape on cpu").
    fn describe(&self) -> String;
}

/// The network in one of its two implementations.
enum Net {
    /// [`Kernels::Cpu`]: slices and reused buffers ([`fused`]).
    Fused(Box<FusedNet>),
    /// [`Kernels::Stock`] (boxed: built once per model).
    Layers(Box<SelfieSegmentation>),
    /// [`Kernels::Portable`].
    Portable(Box<PortableNet>),
}

/// The selfie-segmentation network on a candle device.
pub struct Segmenter {
    net: Net,
    preset: Preset,
    device: Device,
    kernels: Kernels,
}

impl fmt::Debug for Segmenter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segmenter")
            .field("preset", &self.preset)
            .field("device", &self.device)
            .field("kernels", &self.kernels)
            .finish()
    }
}

impl Segmenter {
    /// Loads the embedded weights of `preset` on `device`, with the fastest kernels the
    /// device has (the custom CPU kernels on CPU, the portable path elsewhere).
    ///
    /// # Errors
    /// [`EngineError::Weights`] if the weights do not fit the architecture.
    pub fn new(preset: Preset, device: &Device) -> Result<Self> {
        Self::from_bytes(
            preset.embedded_weights(),
            preset,
            device,
            &format!("embedded {preset} weights"),
        )
    }

    /// Loads weights with the keys of `models/*.safetensors` from a file.
    ///
    /// # Errors
    /// [`EngineError::Weights`] if the file is missing, unreadable or does not fit.
    pub fn from_file(path: &Path, preset: Preset, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| EngineError::Weights {
            source_name: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_bytes(&bytes, preset, device, &path.display().to_string())
    }

    /// Loads weights from safetensors bytes. `source_name` names them in errors.
    ///
    /// # Errors
    /// [`EngineError::Weights`] if the bytes are not safetensors or do not fit.
    pub fn from_bytes(
        bytes: &[u8],
        preset: Preset,
        device: &Device,
        source_name: &str,
    ) -> Result<Self> {
        let kernels = if device.is_cpu() {
            Kernels::Cpu
        } else {
            Kernels::Portable
        };
        Self::build(bytes, preset, device, kernels, source_name)
    }

    /// Like [`Segmenter::new`] but forcing candle's stock ops even on CPU (the path GPU
    /// devices take). Used to check the custom kernels against them, and by the benchmark.
    ///
    /// # Errors
    /// As [`Segmenter::new`].
    pub fn with_stock_ops(preset: Preset, device: &Device) -> Result<Self> {
        Self::with_kernels(preset, device, Kernels::Stock)
    }

    /// Loads the embedded weights of `preset` on `device` with the given implementation
    /// ([`Kernels::Cpu`] needs [`Device::Cpu`]).
    ///
    /// # Errors
    /// As [`Segmenter::new`], and [`EngineError::Device`] for the CPU kernels on another
    /// device.
    pub fn with_kernels(preset: Preset, device: &Device, kernels: Kernels) -> Result<Self> {
        if kernels == Kernels::Cpu && !device.is_cpu() {
            return Err(EngineError::Device(
                crate::device::device_name(device).into(),
                "the fused kernels run on the CPU only".into(),
            ));
        }
        Self::build(
            preset.embedded_weights(),
            preset,
            device,
            kernels,
            &format!("embedded {preset} weights"),
        )
    }

    fn build(
        bytes: &[u8],
        preset: Preset,
        device: &Device,
        kernels: Kernels,
        source_name: &str,
    ) -> Result<Self> {
        let weights_error = |e: candle_core::Error| EngineError::Weights {
            source_name: source_name.to_string(),
            reason: e.to_string(),
        };
        check_finite(bytes).map_err(|reason| EngineError::Weights {
            source_name: source_name.to_string(),
            reason,
        })?;
        let vb =
            VarBuilder::from_slice_safetensors(bytes, DType::F32, device).map_err(weights_error)?;
        let net = match kernels {
            Kernels::Cpu => Net::Fused(Box::new(FusedNet::new(vb).map_err(weights_error)?)),
            Kernels::Portable => Net::Portable(Box::new(
                PortableNet::new(vb, device).map_err(weights_error)?,
            )),
            _ => Net::Layers(Box::new(
                SelfieSegmentation::new(kernels, vb).map_err(weights_error)?,
            )),
        };
        Ok(Self {
            net,
            preset,
            device: device.clone(),
            kernels,
        })
    }

    /// The preset the weights were loaded for.
    pub fn preset(&self) -> Preset {
        self.preset
    }

    /// The device the network runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Runs the network: `[1, 3, H, W]` RGB 0..1 -> `[1, 1, H, W]` person probability.
    ///
    /// # Errors
    /// [`EngineError::Inference`] on a shape mismatch or device failure.
    pub fn forward(&self, input: &Tensor) -> Result<Tensor> {
        Ok(match &self.net {
            Net::Fused(net) => {
                let (n, c, h, w) = input.dims4()?;
                if n != 1 || c != 3 {
                    return Err(EngineError::InvalidFrame(format!(
                        "the network takes [1, 3, H, W], got {:?}",
                        input.dims()
                    )));
                }
                let x = input.flatten_all()?.to_vec1::<f32>()?;
                let mut y = vec![0f32; h * w];
                net.run(&x, &mut y, h, w, 1)?;
                Tensor::from_vec(y, (1, 1, h, w), &self.device)?
            }
            Net::Layers(net) => net.forward(input)?,
            Net::Portable(net) => net.forward(input)?,
        })
    }

    /// [`Segmenter::forward`] plus the number of tensor operations it issued (see
    /// [`ops`]; the fused CPU kernels are not counted and give 0).
    ///
    /// # Errors
    /// As [`Segmenter::forward`].
    pub fn forward_counted(&self, input: &Tensor) -> Result<(Tensor, usize)> {
        let (y, n) = ops::counted(|| self.forward(input));
        Ok((y?, n))
    }

    /// The implementation the network runs with.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }
}

impl SegmentationBackend for Segmenter {
    fn input_size(&self) -> (usize, usize) {
        self.preset.input_size()
    }

    fn segment(&self, input: &[f32], output: &mut [f32]) -> Result<()> {
        self.segment_threads(input, output, 1)
    }

    fn wake_threads(&self, threads: usize) {
        if let Net::Fused(net) = &self.net {
            net.wake(threads);
        }
    }

    /// The fused CPU network runs on the slices directly with buffers kept between frames
    /// (no allocation once warm) and a helper thread for `threads >= 2`; the other paths
    /// ignore `threads` and go through candle tensors.
    fn segment_threads(&self, input: &[f32], output: &mut [f32], threads: usize) -> Result<()> {
        let (w, h) = self.preset.input_size();
        if input.len() != 3 * w * h || output.len() != w * h {
            return Err(EngineError::InvalidFrame(format!(
                "model input/output must hold {} and {} values, got {} and {}",
                3 * w * h,
                w * h,
                input.len(),
                output.len()
            )));
        }
        if let Net::Fused(net) = &self.net {
            return Ok(net.run(input, output, h, w, threads)?);
        }
        let x = Tensor::from_slice(input, (1, 3, h, w), &self.device)?;
        let y = self.forward(&x)?.flatten_all()?;
        // On CPU this copies straight out of the storage; elsewhere it is the device read-back.
        output.copy_from_slice(&y.to_vec1::<f32>()?);
        Ok(())
    }

    fn describe(&self) -> String {
        let path = match self.kernels {
            Kernels::Cpu => "",
            Kernels::Portable => ", portable ops",
            Kernels::Stock => ", stock ops",
        };
        format!(
            "candle {} on {}{path}",
            self.preset,
            crate::device::device_name(&self.device)
        )
    }
}

/// Checks that every tensor of safetensors `bytes` holds only finite values: a NaN or an
/// infinity in one weight turns every probability into NaN, which the pipeline would show as
/// an all-background (or all-person) mask instead of an error.
///
/// # Errors
/// The reason, naming the first bad tensor (by name order) and how many values are bad; or
/// the parse error if `bytes` are not safetensors.
fn check_finite(bytes: &[u8]) -> std::result::Result<(), String> {
    let tensors =
        candle_core::safetensors::load_buffer(bytes, &Device::Cpu).map_err(|e| e.to_string())?;
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        let values = tensors[name]
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| e.to_string())?;
        let bad = values.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            return Err(format!(
                "tensor '{name}' holds {bad} NaN or infinite value(s) of {}",
                values.len()
            ));
        }
    }
    Ok(())
}

/// Median wall time of [`SegmentationBackend::segment`] (upload, network, read-back) for each
/// segmenter, timed in turn frame by frame so that drift of a shared machine affects all alike:
/// `warmup` untimed rounds, then `frames` timed rounds. `input` is NCHW `[1, 3, H, W]` RGB
/// 0..1 for the segmenters' common preset.
///
/// # Errors
/// The first error of a segmenter, or [`EngineError::InvalidFrame`] for mixed presets.
pub fn interleaved_medians(
    segmenters: &[&Segmenter],
    input: &[f32],
    warmup: usize,
    frames: usize,
) -> Result<Vec<std::time::Duration>> {
    let preset = segmenters.first().map_or(Preset::default(), |s| s.preset);
    if segmenters.iter().any(|s| s.preset != preset) {
        return Err(EngineError::InvalidFrame(
            "segmenters to compare must share a preset".into(),
        ));
    }
    let (w, h) = preset.input_size();
    let mut output = vec![0f32; w * h];
    let mut times = vec![Vec::with_capacity(frames); segmenters.len()];
    for round in 0..warmup + frames {
        for (seg, t) in segmenters.iter().zip(&mut times) {
            let start = std::time::Instant::now();
            seg.segment(input, &mut output)?;
            if round >= warmup {
                t.push(start.elapsed());
            }
        }
    }
    Ok(times
        .into_iter()
        .map(|mut t| {
            t.sort();
            t.get(t.len() / 2).copied().unwrap_or_default()
        })
        .collect())
}

/// Returns the segmenter for `preset` on `choice`, loading it only if no live one exists.
///
/// Several OBS filter instances share one loaded model this way; it is dropped when the last
/// [`Arc`] goes.
///
/// # Errors
/// As [`DeviceChoice::resolve`] and [`Segmenter::new`].
pub fn shared_segmenter(preset: Preset, choice: DeviceChoice) -> Result<Arc<Segmenter>> {
    // A handful of entries at most, so a vector (which has a const constructor) suffices.
    type Entry = ((Preset, DeviceChoice), Weak<Segmenter>);
    static CACHE: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock();
    cache.retain(|(_, weak)| weak.strong_count() > 0);
    if let Some(live) = cache
        .iter()
        .find(|(key, _)| *key == (preset, choice))
        .and_then(|(_, weak)| weak.upgrade())
    {
        return Ok(live);
    }
    let device = choice.resolve_for(preset)?;
    let segmenter = Arc::new(Segmenter::new(preset, &device)?);
    cache.push(((preset, choice), Arc::downgrade(&segmenter)));
    Ok(segmenter)
}
