//! The OBS worker's CPU path per frame, without OBS: `MaskPipeline::coefficients` on a BGRA
//! capture at the model size (what the filter's worker gets), default settings with edge
//! refinement (the filter's default), 1 thread. Prints the medians over 400 warm frames of the
//! thread's CPU time, wall time and the pipeline's stages, in ms. With `WORKER_PATH_GAP_MS=N`
//! it sleeps N ms before each of 40 frames, as the filter's worker waits between captures.
//!
//! ```text
//! cargo run --release --example worker_path [PHOTO]
//! WORKER_PATH_GAP_MS=33 cargo run --release --example worker_path [PHOTO]
//! ```
//!
//! The photo (default: `tests/fixtures/obs/ccp-webcam-0001.jpg`) is scaled to 256x144.
//! `docs/obs-plugin.md` ("Where the worker's CPU goes") compares two builds with it,
//! alternately in one run.

use obs_ai_background::frame::{FrameRef, PixelFormat};
use obs_ai_background::model::{Preset, SegmentationBackend, Segmenter};
use obs_ai_background::obs::util::thread_cpu_time;
use obs_ai_background::pipeline::{MaskPipeline, PipelineSettings};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let photo = std::env::args().nth(1).unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/obs/ccp-webcam-0001.jpg"
        )
        .into()
    });
    let (w, h) = Preset::Landscape.input_size();
    let rgba = image::open(&photo)?
        .resize_exact(w as u32, h as u32, image::imageops::FilterType::Triangle)
        .to_rgba8();
    let bgra: Vec<u8> = rgba
        .as_raw()
        .chunks_exact(4)
        .flat_map(|p| [p[2], p[1], p[0], 255])
        .collect();
    let frame = FrameRef::packed(&bgra, w, h, PixelFormat::Bgra)?;
    let seg: Arc<dyn SegmentationBackend> = Arc::new(Segmenter::new(
        Preset::Landscape,
        &candle_core::Device::Cpu,
    )?);
    let mut pipeline = MaskPipeline::new(seg);
    let settings = PipelineSettings {
        refine: true,
        ..Default::default()
    };
    // The worker sleeps between captures (33 ms at 30 fps; about 430 ms in `obs_render` at
    // 1920x1080, where llvmpipe renders 2-3 frames a second): WORKER_PATH_GAP_MS sleeps
    // as long before each frame, so the frame starts with caches that other work had.
    let gap = Duration::from_millis(
        std::env::var("WORKER_PATH_GAP_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    let frames = if gap.is_zero() { 405 } else { 45 };
    let mut samples: [Vec<Duration>; 5] = Default::default();
    for i in 0..frames {
        std::thread::sleep(gap);
        let (t, c) = (Instant::now(), thread_cpu_time());
        pipeline.coefficients(&frame, &settings)?;
        let (cpu, wall) = (thread_cpu_time().saturating_sub(c), t.elapsed());
        if i >= 5 {
            let st = pipeline.timings();
            for (s, d) in
                samples
                    .iter_mut()
                    .zip([cpu, wall, st.preprocess, st.inference, st.postprocess])
            {
                s.push(d);
            }
        }
    }
    let names = [
        "thread CPU",
        "wall",
        "preprocess",
        "inference",
        "postprocess",
    ];
    for (name, mut s) in names.into_iter().zip(samples) {
        s.sort();
        print!("{name} {:.3}  ", s[s.len() / 2].as_secs_f64() * 1e3);
    }
    println!();
    Ok(())
}
