//! No heap allocation per frame once warm: the path the OBS worker runs for every frame
//! (pre-processing, the fused CPU network, scene-cut check, guided filter coefficients, the
//! refined hold's band at the capture size, and the copy into the published result) under a
//! counting global
//! allocator, over 100 frames after a warm-up frame, on 1 and on 2 threads.
//!
//! The library's global allocator counts allocations ([`obs_ai_background::alloc`]); the test
//! reads the count of all threads (the network's helper thread included), so this file holds
//! a single test: no other test runs beside it.

use candle_core::Device;
use obs_ai_background::alloc::{thread_allocations, total_allocations};
use obs_ai_background::model::{Preset, Segmenter};
use obs_ai_background::{FrameRef, Mask, MaskPipeline, PipelineSettings, PixelFormat};
use std::path::Path;
use std::sync::Arc;

/// Eight BGRA frames the size of the worker's refinement capture (512x288): two fixture
/// photos, each shifted by 0..3 pixels, so consecutive frames move (smoothing gates) and
/// the photo changes every fourth frame (scene cuts reset the smoother).
fn frames() -> (Vec<Vec<u8>>, usize, usize) {
    let (w, h) = (512usize, 288usize);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/photos");
    let mut out = Vec::new();
    for id in ["ccp-webcam-dev-0286", "ccp-webcam-dev-0095"] {
        let img = image::open(dir.join(format!("{id}.jpg")))
            .unwrap()
            .to_rgba8();
        let img = image::imageops::resize(
            &img,
            w as u32 + 4,
            h as u32,
            image::imageops::FilterType::Triangle,
        );
        for shift in 0..4 {
            let mut bgra = vec![0u8; 4 * w * h];
            for y in 0..h {
                for x in 0..w {
                    let p = img.get_pixel((x + shift) as u32, y as u32);
                    bgra[4 * (y * w + x)..4 * (y * w + x) + 4]
                        .copy_from_slice(&[p[2], p[1], p[0], 255]);
                }
            }
            out.push(bgra);
        }
    }
    (out, w, h)
}

/// Allocations during frames 2..=101 of the worker's per-frame path on `threads` threads:
/// (on the measuring thread, on all threads).
fn allocations_per_100_frames(preset: Preset, threads: usize) -> (u64, u64) {
    let (frames, w, h) = frames();
    let segmenter = Arc::new(Segmenter::new(preset, &Device::Cpu).unwrap());
    let mut pipeline = MaskPipeline::new(segmenter);
    let settings = PipelineSettings {
        refine: true,
        threads,
        ..Default::default()
    };
    // What the worker publishes: copies of the coefficients into a reused result.
    let (mut a, mut b) = (Mask::default(), Mask::default());
    let mut run = |i: usize, pipeline: &mut MaskPipeline| {
        let frame = FrameRef::packed(&frames[i % frames.len()], w, h, PixelFormat::Bgra).unwrap();
        let coef = pipeline.coefficients(&frame, &settings).unwrap();
        b.clone_from(coef.b);
        a.clone_from(coef.a.expect("refinement gives a gain"));
    };
    run(0, &mut pipeline); // frame 1: warm-up (buffers grow, the helper thread starts)
    let (thread0, total0) = (thread_allocations(), total_allocations());
    for i in 1..=100 {
        run(i, &mut pipeline);
    }
    let counts = (thread_allocations() - thread0, total_allocations() - total0);
    // The frames really went through the network: the person is in the middle of the frame.
    let frame = FrameRef::packed(&frames[0], w, h, PixelFormat::Bgra).unwrap();
    let mask = pipeline.process(&frame, &settings).unwrap();
    let centre = mask.data[mask.width * h / 2 + w / 2];
    let corner = mask.data[mask.width + 1];
    assert!(
        centre > 0.9 && corner < 0.1,
        "centre {centre}, corner {corner}"
    );
    counts
}

#[test]
fn the_worker_path_allocates_nothing_once_warm() {
    for preset in Preset::ALL {
        for threads in [1, 2] {
            let (here, all) = allocations_per_100_frames(preset, threads);
            assert_eq!(
                (here, all),
                (0, 0),
                "{preset}, {threads} thread(s): heap allocations in frames 2..=101 \
                 (measuring thread, all threads)"
            );
        }
    }
}
