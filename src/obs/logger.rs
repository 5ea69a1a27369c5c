//! Logging through OBS's log (`blog`), so messages land in OBS's log files and log viewer.
//!
//! [`install`] sets a [`log::Log`] that forwards every record of this crate (the filter and
//! the engine) to `blog` with the prefix `[obs-ai-background]`. Levels map as error →
//! `LOG_ERROR`, warn → `LOG_WARNING`, info → `LOG_INFO`, debug/trace → `LOG_DEBUG`. The
//! environment variable `OBS_AI_BACKGROUND_LOG` (`error`, `warn`, `info`, `debug`, `trace`)
//! sets the most verbose level forwarded; the default is `info`.

use super::{cstring, sys};
use std::os::raw::c_int;

/// The prefix of every line this module writes to OBS's log.
pub const PREFIX: &str = "[obs-ai-background]";

/// OBS log levels (`util/base.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// `LOG_ERROR` (100).
    Error,
    /// `LOG_WARNING` (200).
    Warning,
    /// `LOG_INFO` (300).
    Info,
    /// `LOG_DEBUG` (400).
    Debug,
}

impl Level {
    fn raw(self) -> c_int {
        (match self {
            Level::Error => sys::LOG_ERROR,
            Level::Warning => sys::LOG_WARNING,
            Level::Info => sys::LOG_INFO,
            Level::Debug => sys::LOG_DEBUG,
        }) as c_int
    }
}

/// Writes one line to OBS's log as is (no prefix added).
pub fn blog(level: Level, message: &str) {
    let msg = cstring(message);
    // SAFETY: a "%s" format with one NUL-terminated string argument.
    unsafe { sys::blog(level.raw(), c"%s".as_ptr(), msg.as_ptr()) };
}

struct ObsLogger;

impl log::Log for ObsLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => Level::Error,
            log::Level::Warn => Level::Warning,
            log::Level::Info => Level::Info,
            log::Level::Debug | log::Level::Trace => Level::Debug,
        };
        blog(level, &format!("{PREFIX} {}", record.args()));
    }

    fn flush(&self) {}
}

static LOGGER: ObsLogger = ObsLogger;

/// Routes the `log` crate to OBS's log. Returns false when another logger was set first (the
/// existing one is kept).
pub fn install() -> bool {
    let level = std::env::var("OBS_AI_BACKGROUND_LOG")
        .ok()
        .and_then(|s| s.parse::<log::LevelFilter>().ok())
        .unwrap_or(log::LevelFilter::Info);
    match log::set_logger(&LOGGER) {
        Ok(()) => {
            log::set_max_level(level);
            true
        }
        Err(_) => false,
    }
}
