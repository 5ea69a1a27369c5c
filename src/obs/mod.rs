//! Thin, safe wrappers over libobs 29 — the only place in the crate with `unsafe` code.
//!
//! Everything the filter (`crate::plugin`) and the headless test host ([`host`]) need from
//! OBS goes through here:
//! - [`sys`]: the raw bindings `build.rs` generates with bindgen from the installed headers;
//! - [`module`]: the `obs_module_*` exports libobs looks up in the `cdylib`, the module's
//!   locale ([`module::text`]) and data files ([`module::data_file`]);
//! - [`logger`]: a [`log::Log`] that forwards to OBS's `blog`;
//! - [`data`], [`properties`]: settings (`obs_data_t`) and the properties UI;
//! - [`source`]: borrowed, strong and weak source references;
//! - [`graphics`]: the graphics-context token [`graphics::Gfx`], effects and their params,
//!   textures, texrenders, stage surfaces and blend/sRGB state guards, all freed on drop;
//! - [`filter`]: the [`filter::VideoFilter`] trait and the `obs_source_info` trampolines that
//!   catch every panic before it reaches OBS;
//! - [`calldata`]: `calldata_t` and per-instance procs;
//! - [`host`]: a headless libobs host (Xvfb + EGL) for tests and benchmarks (Linux only).
//!
//! The module builds for Linux and for Windows x64 (`x86_64-pc-windows-gnu`, linked against
//! `obs.dll` through the import library `build.rs` makes from `obs.def`) from the same
//! sources; the only platform-specific part is [`host`], which uses the X11 platform calls
//! and Linux's `va_list`.
//!
//! Rules kept by every wrapper: pointers handed out by OBS are checked for null; each owned
//! object releases exactly what it acquired, once, in `Drop`; graphics objects are only created
//! or used with a [`graphics::Gfx`] token (proof of being inside the graphics context) and
//! enter the context themselves to free their GPU resources.

#[doc(hidden)]
pub mod sys;

pub mod calldata;
pub mod data;
pub mod filter;
pub mod graphics;
#[cfg(target_os = "linux")]
pub mod host;
pub mod logger;
pub mod module;
pub mod properties;
pub mod source;
pub mod util;

use std::ffi::{CStr, CString};
use std::os::raw::c_char;

/// Converts `s` into a C string, dropping interior NUL bytes (OBS strings cannot hold them).
pub(crate) fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

/// Copies a C string owned by OBS into a `String` (lossy UTF-8); null gives "".
///
/// # Safety
/// `p` is null or points to a NUL-terminated string valid for the duration of the call.
pub(crate) unsafe fn string_from(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: non-null and NUL-terminated per the contract above.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}
