//! The engine's error type.

use std::path::PathBuf;

/// Everything the engine can fail with. Each variant's message is one complete log line.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A frame whose size, stride or buffer length do not agree (zero-size frames included).
    #[error("invalid frame: {0}")]
    InvalidFrame(String),
    /// Weights that are missing, unreadable or do not fit the architecture.
    #[error("cannot load weights from {source_name}: {reason}")]
    Weights {
        /// Where the weights came from (a path, or "embedded <preset>").
        source_name: String,
        /// What went wrong.
        reason: String,
    },
    /// An unknown model preset name.
    #[error("unknown model preset '{0}' (expected 'landscape' or 'square')")]
    UnknownPreset(String),
    /// An unknown or unavailable compute device.
    #[error("device '{0}' is not available: {1}")]
    Device(String, String),
    /// An image file that cannot be read or decoded.
    #[error("cannot read image {path}: {reason}")]
    Image {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// An output that cannot be created, written or renamed into place.
    #[error("cannot write {path}: {reason}")]
    Output {
        /// The destination.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// An output path that names one of the inputs (same device and inode).
    #[error("refusing to write {output}: it is the same file as the input {input}")]
    SameFile {
        /// The output as given.
        output: PathBuf,
        /// The input it names.
        input: PathBuf,
    },
    /// A failure inside candle while running the network.
    #[error("inference failed: {0}")]
    Inference(#[from] candle_core::Error),
}

/// Result with [`EngineError`].
pub type Result<T> = std::result::Result<T, EngineError>;
