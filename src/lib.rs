//! obs-ai-background: person segmentation for OBS Studio.
//!
//! The crate is three things at once:
//! - the engine (this `rlib`): a U-Net-lite person segmenter written with candle ([`model`]),
//!   frame pre-processing ([`preprocess`]), mask post-processing ([`postprocess`]), a CPU
//!   reference compositor ([`composite`]) and evaluation metrics ([`metrics`]);
//! - the OBS module (the `cdylib`, feature `obs`): the "AI Background" video filter, which runs
//!   the engine on a worker thread and composites on the GPU with an OBS effect;
//! - the `ai-background` command-line tool, which runs the same engine on image and video files.
//!
//! Data flow for one frame: a frame ([`frame::FrameRef`], 8-bit BGRA/RGBA/RGB with a row
//! stride) → [`preprocess::Preprocessor`] (bilinear stretch to the model input, NCHW RGB 0..1)
//! → [`model::Segmenter`] (person probability at the model resolution) →
//! [`pipeline::MaskPipeline`] (upsampling, temporal smoothing, optional guided-filter edge
//! refinement) → [`mask::Mask`] at frame size → threshold and feather
//! ([`postprocess::threshold_feather`]) → [`composite`].

pub mod alloc;
pub mod composite;
pub mod device;
pub mod error;
pub mod eval;
pub mod files;
pub mod frame;
pub mod mask;
pub mod metrics;
pub mod model;
#[cfg(feature = "obs")]
pub mod obs;
pub mod pipeline;
pub mod postprocess;
pub mod preprocess;
pub mod simd;
pub mod train;
pub mod video;

#[cfg(feature = "obs")]
mod plugin;

pub use error::{EngineError, Result};

/// mimalloc with allocation counters ([`alloc`]).
#[global_allocator]
static GLOBAL: alloc::CountingMiMalloc = alloc::CountingMiMalloc;
pub use frame::{FrameRef, PixelFormat};
pub use mask::Mask;
pub use model::{Preset, Segmenter};
pub use pipeline::{MaskPipeline, PipelineSettings};
