//! Property test of the frame path on any input the filter or the CLI can be given: frame
//! sizes 1..4096 (including 1-pixel rows and columns), padded row strides, every pixel format,
//! every threshold, feather, smoothing, refinement and background setting in its range. The
//! pre-processing, the mask pipeline (the real network) and the compositor must not panic and
//! must keep their outputs in range.
//!
//! Few cases, most of them small: the run stays within a few seconds (`cargo test --test
//! robustness`); `PROPTEST_CASES=500` runs more.

use obs_ai_background::composite::{AlphaSettings, Background, Compositor, EdgeSettings, Fit};
use obs_ai_background::model::{Preset, Segmenter};
use obs_ai_background::postprocess::{threshold_feather, RefineSettings};
use obs_ai_background::preprocess::Preprocessor;
use obs_ai_background::{FrameRef, MaskPipeline, PipelineSettings, PixelFormat};
use proptest::prelude::*;
use std::sync::{Arc, OnceLock};

fn segmenter() -> Arc<Segmenter> {
    static SEG: OnceLock<Arc<Segmenter>> = OnceLock::new();
    SEG.get_or_init(|| {
        Arc::new(Segmenter::new(Preset::Landscape, &candle_core::Device::Cpu).unwrap())
    })
    .clone()
}

/// Frame sizes: mostly small, some medium, a few long and thin or large (one side up to
/// 4096, the area bounded so that a case stays fast).
fn frame_size() -> impl Strategy<Value = (usize, usize)> {
    prop_oneof![
        6 => (1usize..=64, 1usize..=64),
        3 => (1usize..=640, 1usize..=480),
        2 => (1usize..=4096, 1usize..=8, any::<bool>())
            .prop_map(|(a, b, swap)| if swap { (b, a) } else { (a, b) }),
        1 => (1usize..=4096, 1usize..=256, any::<bool>())
            .prop_map(|(a, b, swap)| if swap { (b, a) } else { (a, b) }),
    ]
}

/// Deterministic pseudo-random bytes (a 32-bit LCG), cheap for large frames.
fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Blur(f32),
    Image(Fit, (u32, u32)),
    Color([u8; 4]),
    Transparent,
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        (0.0f32..=100.0).prop_map(Mode::Blur),
        (
            prop_oneof![Just(Fit::Cover), Just(Fit::Contain), Just(Fit::Stretch)],
            (1u32..=64, 1u32..=64)
        )
            .prop_map(|(f, s)| Mode::Image(f, s)),
        any::<[u8; 4]>().prop_map(Mode::Color),
        Just(Mode::Transparent),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn frame_path_never_panics_and_stays_in_range(
        (w, h) in frame_size(),
        pad in 0usize..=64,
        format in prop_oneof![Just(PixelFormat::Bgra), Just(PixelFormat::Rgba), Just(PixelFormat::Rgb)],
        seed in any::<u32>(),
        threshold in 0.0f32..=1.0,
        feather in 0.0f32..=1.0,
        smoothing in 0.0f32..=1.0,
        refine in any::<bool>(),
        radius in 0usize..=64,
        epsilon in 1e-6f32..=1.0,
        mode in mode(),
    ) {
        let stride = w * format.bytes_per_pixel() + pad;
        let data = noise(stride * h, seed);
        let frame = FrameRef::new(&data, w, h, stride, format).unwrap();

        // Pre-processing: NCHW [1, 3, 144, 256], 0..1.
        let mut pre = Preprocessor::new(256, 144);
        let input = pre.run(&frame);
        prop_assert_eq!(input.len(), 3 * 256 * 144);
        prop_assert!(input.iter().all(|v| (0.0..=1.0).contains(v)));

        // Mask pipeline, two frames (the second goes through temporal smoothing).
        let settings = PipelineSettings {
            smoothing,
            refine,
            refine_settings: RefineSettings {
                radius,
                epsilon,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut pipeline = MaskPipeline::new(segmenter());
        pipeline.process(&frame, &settings).unwrap();
        let prob = pipeline.process(&frame, &settings).unwrap().clone();
        prop_assert_eq!((prob.width, prob.height), (w, h));
        prop_assert!(prob.data.iter().all(|v| (0.0..=1.0).contains(v)), "probability out of 0..1");

        // Compositor: person pixels (alpha 1) are the input, opaque; background pixels
        // (alpha 0) are transparent or, for a colour, the colour.
        let bg_image = match mode {
            Mode::Image(_, (bw, bh)) => image::RgbaImage::from_raw(
                bw, bh, noise((bw * bh * 4) as usize, seed ^ 0x5555)).unwrap(),
            _ => image::RgbaImage::new(1, 1),
        };
        let background = match mode {
            Mode::Blur(sigma) => Background::Blur { sigma },
            Mode::Image(fit, _) => Background::Image { image: &bg_image, fit },
            Mode::Color(c) => Background::Color(c),
            Mode::Transparent => Background::Transparent,
        };
        let alpha = AlphaSettings { threshold, feather };
        let mut out = image::RgbaImage::new(0, 0);
        // Light wrap tints the person's pixels next to the background on purpose; the
        // checks below are about the plain composite (foreground estimation stays on: it
        // leaves alpha-1 pixels as they are).
        let edges = EdgeSettings { light_wrap: 0.0, ..EdgeSettings::default() };
        Compositor::with_edges(edges).composite(&frame, &prob, alpha, background, &mut out);
        prop_assert_eq!(out.dimensions(), (w as u32, h as u32));
        let offsets = format.rgb_offsets();
        let bpp = format.bytes_per_pixel();
        for (i, o) in out.pixels().enumerate() {
            let a = threshold_feather(prob.data[i], threshold, feather);
            prop_assert!((0.0..=1.0).contains(&a));
            let (x, y) = (i % w, i / w);
            let px = &data[y * stride + x * bpp..];
            let rgb = [px[offsets[0]], px[offsets[1]], px[offsets[2]]];
            let in_alpha = if bpp == 4 { px[3] } else { 255 };
            if a == 1.0 {
                // The input pixel, with its own alpha (straight colour within rounding).
                prop_assert_eq!(o[3], in_alpha, "person pixel {} alpha", i);
                if in_alpha > 0 {
                    let close = (0..3).all(|c| o[c].abs_diff(rgb[c]) <= 1);
                    prop_assert!(close, "person pixel {}: {:?} vs {:?}", i, o, rgb);
                }
            } else if a == 0.0 {
                match mode {
                    Mode::Transparent => prop_assert_eq!(o[3], 0),
                    Mode::Color(c) if c[3] == 255 => prop_assert_eq!(o.0, c),
                    _ => {}
                }
            }
        }
    }
}
