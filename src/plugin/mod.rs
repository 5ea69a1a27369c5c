//! The OBS module: registers the "AI Background" video filter ([`filter::AiBackground`]).
//!
//! Only safe Rust lives here; everything that touches libobs goes through [`crate::obs`].

mod filter;
mod hold;
mod settings;
mod worker;

use crate::obs::filter::register_video_filter;

/// Called from `obs_module_load`: sets up logging and registers the filter.
pub(crate) fn load() -> bool {
    crate::obs::logger::install();
    register_video_filter::<filter::AiBackground>();
    let devices: Vec<String> = crate::device::DeviceChoice::compiled_in()
        .iter()
        .map(ToString::to_string)
        .collect();
    log::info!(
        "version {} loaded (devices: auto, {})",
        env!("CARGO_PKG_VERSION"),
        devices.join(", ")
    );
    true
}

/// Called from `obs_module_unload`.
pub(crate) fn unload() {
    log::info!("unloaded");
}
