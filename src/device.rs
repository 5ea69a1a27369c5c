//! Compute device selection: `auto`, `cpu`, and whichever of `cuda` / `metal` is compiled in.

use crate::model::{interleaved_medians, Preset, Segmenter};
use crate::{EngineError, Result};
use candle_core::Device;
use parking_lot::Mutex;
use std::fmt;
use std::str::FromStr;

/// Which device runs the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum DeviceChoice {
    /// The first compiled-in GPU that opens (CUDA, then Metal) if it runs the model faster
    /// than the CPU, else the CPU, with one log line giving both timings and the choice (see
    /// [`DeviceChoice::resolve_for`]).
    #[default]
    Auto,
    /// The CPU (always available).
    Cpu,
    /// CUDA device `n` (needs the `cuda` feature).
    Cuda(usize),
    /// Metal device `n` (needs the `metal` feature).
    Metal(usize),
}

impl DeviceChoice {
    /// The explicit choices this build can offer, CPU first (for settings lists).
    pub fn compiled_in() -> Vec<DeviceChoice> {
        let mut v = vec![DeviceChoice::Cpu];
        if cfg!(feature = "cuda") {
            v.push(DeviceChoice::Cuda(0));
        }
        if cfg!(feature = "metal") {
            v.push(DeviceChoice::Metal(0));
        }
        v
    }

    /// Opens the device.
    ///
    /// `Auto` never fails: it falls back to the CPU and logs why; it picks for the default
    /// preset ([`DeviceChoice::resolve_for`] picks for a given one). An explicit GPU choice
    /// fails when the feature is not compiled in or the device cannot be opened.
    ///
    /// # Errors
    /// [`EngineError::Device`] for an unavailable explicit choice.
    pub fn resolve(self) -> Result<Device> {
        self.resolve_for(Preset::default())
    }

    /// Opens the device for the model `preset`.
    ///
    /// For `Auto` with a GPU that opens, the preset's embedded weights are loaded on the GPU
    /// (portable path) and on the CPU (fused kernels), each runs [`AUTO_WARMUP`] untimed and
    /// [`AUTO_FRAMES`] timed frames interleaved (upload and read-back included), and the faster
    /// device wins. The decision is made and logged once per preset and process.
    ///
    /// # Errors
    /// [`EngineError::Device`] for an unavailable explicit choice.
    pub fn resolve_for(self, preset: Preset) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda(n) => {
                if !cfg!(feature = "cuda") {
                    return Err(EngineError::Device(
                        self.to_string(),
                        "this build has no CUDA support (cargo feature `cuda`)".into(),
                    ));
                }
                Device::new_cuda(n)
                    .map_err(|e| EngineError::Device(self.to_string(), e.to_string()))
            }
            DeviceChoice::Metal(n) => {
                if !cfg!(feature = "metal") {
                    return Err(EngineError::Device(
                        self.to_string(),
                        "this build has no Metal support (cargo feature `metal`)".into(),
                    ));
                }
                Device::new_metal(n)
                    .map_err(|e| EngineError::Device(self.to_string(), e.to_string()))
            }
            DeviceChoice::Auto => {
                let mut reasons = Vec::new();
                for gpu in [DeviceChoice::Cuda(0), DeviceChoice::Metal(0)] {
                    let compiled = match gpu {
                        DeviceChoice::Cuda(_) => cfg!(feature = "cuda"),
                        _ => cfg!(feature = "metal"),
                    };
                    if !compiled {
                        continue;
                    }
                    match gpu.resolve() {
                        Ok(device) => return Ok(faster_than_cpu(gpu, device, preset)),
                        Err(e) => reasons.push(e.to_string()),
                    }
                }
                if reasons.is_empty() {
                    log::info!("device auto: using cpu (no GPU back end compiled in)");
                } else {
                    log::warn!("device auto: falling back to cpu: {}", reasons.join("; "));
                }
                Ok(Device::Cpu)
            }
        }
    }
}

/// Untimed frames per device before [`DeviceChoice::Auto`] times them.
pub const AUTO_WARMUP: usize = 3;
/// Timed frames per device for [`DeviceChoice::Auto`] (about 10 ms of CPU for the landscape
/// model).
pub const AUTO_FRAMES: usize = 5;

/// `gpu` if `preset` runs faster on it than on the CPU, else the CPU; decided once per
/// preset and GPU (a timing or load error counts against the GPU), with one log line.
fn faster_than_cpu(choice: DeviceChoice, gpu: Device, preset: Preset) -> Device {
    type Decision = ((DeviceChoice, Preset), bool);
    static DECIDED: Mutex<Vec<Decision>> = Mutex::new(Vec::new());
    let mut decided = DECIDED.lock();
    if let Some((_, use_gpu)) = decided.iter().find(|(k, _)| *k == (choice, preset)) {
        return if *use_gpu { gpu } else { Device::Cpu };
    }
    let timed = (|| -> Result<_> {
        let on_gpu = Segmenter::new(preset, &gpu)?;
        let on_cpu = Segmenter::new(preset, &Device::Cpu)?;
        let (w, h) = preset.input_size();
        let input = vec![0.5f32; 3 * w * h];
        interleaved_medians(&[&on_gpu, &on_cpu], &input, AUTO_WARMUP, AUTO_FRAMES)
    })();
    let use_gpu = match timed {
        Ok(t) => {
            let use_gpu = t[0] < t[1];
            log::info!(
                "device auto: {preset} model {:.2} ms on {choice}, {:.2} ms on cpu (median of {AUTO_FRAMES}): using {}",
                t[0].as_secs_f64() * 1e3,
                t[1].as_secs_f64() * 1e3,
                if use_gpu { choice.to_string() } else { "cpu".into() }
            );
            use_gpu
        }
        Err(e) => {
            log::warn!("device auto: {choice} failed to run the {preset} model ({e}); using cpu");
            false
        }
    };
    decided.push(((choice, preset), use_gpu));
    if use_gpu {
        gpu
    } else {
        Device::Cpu
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(0) => f.write_str("cuda"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceChoice::Metal(0) => f.write_str("metal"),
            DeviceChoice::Metal(n) => write!(f, "metal:{n}"),
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = EngineError;

    /// Parses `auto`, `cpu`, `cuda`, `cuda:N`, `metal`, `metal:N`.
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let (kind, index) = match lower.split_once(':') {
            Some((k, n)) => (
                k,
                n.parse::<usize>()
                    .map_err(|_| EngineError::Device(s.to_string(), "bad device index".into()))?,
            ),
            None => (lower.as_str(), 0),
        };
        match kind {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(index)),
            "metal" => Ok(DeviceChoice::Metal(index)),
            _ => Err(EngineError::Device(
                s.to_string(),
                "expected auto, cpu, cuda[:N] or metal[:N]".into(),
            )),
        }
    }
}

/// A short name for a candle device ("cpu", "cuda", "metal").
pub fn device_name(device: &Device) -> &'static str {
    match device {
        Device::Cpu => "cpu",
        Device::Cuda(_) => "cuda",
        Device::Metal(_) => "metal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for s in ["auto", "cpu", "cuda", "cuda:1", "metal"] {
            assert_eq!(s.parse::<DeviceChoice>().unwrap().to_string(), s);
        }
        assert!("tpu".parse::<DeviceChoice>().is_err());
    }

    #[test]
    fn auto_always_resolves() {
        assert!(DeviceChoice::Auto.resolve().is_ok());
        assert!(DeviceChoice::Cpu.resolve().unwrap().is_cpu());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn uncompiled_gpu_is_a_clear_error() {
        let err = DeviceChoice::Cuda(0).resolve().unwrap_err().to_string();
        assert!(err.contains("feature `cuda`"), "{err}");
    }
}
