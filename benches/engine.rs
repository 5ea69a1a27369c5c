//! Engine benchmarks: `cargo bench --bench engine` (add `--no-default-features` where libobs
//! is absent).
//!
//! - `inference/<preset>`: the network alone on the fused CPU kernels, `inference-portable/...`
//!   on the portable whole-tensor ops (the path GPUs take) and `inference-stock/...` on candle's
//!   stock ops (the previous GPU path), all on the CPU;
//! - `frame/<size>/<mode>`: the whole per-frame path of the CLI on a real photo scaled to 1280x720
//!   and 1920x1080: pre-processing, inference, smoothing, upsampling (and refinement where
//!   named), then the CPU compositor.
//!
//! Inference runs on one thread by design (see `model::kernels`); criterion reports the median.

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use image::RgbaImage;
use obs_ai_background::composite::{AlphaSettings, Background, Compositor};
use obs_ai_background::model::{Kernels, Preset, Segmenter};
use obs_ai_background::{FrameRef, MaskPipeline, PipelineSettings, PixelFormat};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The demo photo as model input, so the benchmark sees a real image.
fn photo_input(preset: Preset) -> Tensor {
    let (w, h) = preset.input_size();
    let img = image::open(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo/person.jpg"))
        .expect("demo photo")
        .to_rgb8();
    let img = image::imageops::resize(&img, w as u32, h as u32, image::imageops::Triangle);
    let mut data = vec![0f32; 3 * w * h];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            data[c * w * h + i] = p[c] as f32 / 255.0;
        }
    }
    Tensor::from_vec(data, (1, 3, h, w), &Device::Cpu).unwrap()
}

fn inference(c: &mut Criterion) {
    for (name, kernels) in [
        ("inference", Kernels::Cpu),
        ("inference-portable", Kernels::Portable),
        ("inference-stock", Kernels::Stock),
    ] {
        let mut group = c.benchmark_group(name);
        group.measurement_time(Duration::from_secs(5));
        if kernels != Kernels::Cpu {
            group.sample_size(20);
        }
        for preset in Preset::ALL {
            let x = photo_input(preset);
            let seg = Segmenter::with_kernels(preset, &Device::Cpu, kernels).unwrap();
            group.bench_function(preset.name(), |b| b.iter(|| seg.forward(&x).unwrap()));
        }
        group.finish();
    }
}

fn frame_path(c: &mut Criterion) {
    let photo = image::open(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo/person.jpg"))
        .expect("demo photo")
        .to_rgba8();
    let backend = Arc::new(Segmenter::new(Preset::Landscape, &Device::Cpu).unwrap());
    let mut group = c.benchmark_group("frame");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    for (w, h) in [(1280usize, 720usize), (1920, 1080)] {
        let frame_img: RgbaImage =
            image::imageops::resize(&photo, w as u32, h as u32, image::imageops::Triangle);
        let frame = FrameRef::packed(frame_img.as_raw(), w, h, PixelFormat::Rgba).unwrap();
        for (name, refine, background) in [
            ("blur", false, Background::Blur { sigma: 12.0 }),
            ("blur+refine", true, Background::Blur { sigma: 12.0 }),
            ("color", false, Background::Color([0, 177, 64, 255])),
        ] {
            let mut pipeline = MaskPipeline::new(backend.clone());
            let settings = PipelineSettings {
                refine,
                ..Default::default()
            };
            let mut compositor = Compositor::default();
            let mut out = RgbaImage::new(0, 0);
            group.bench_function(format!("{w}x{h}/{name}"), |b| {
                b.iter(|| {
                    let prob = pipeline.process(&frame, &settings).unwrap();
                    compositor.composite(
                        &frame,
                        prob,
                        AlphaSettings::default(),
                        background,
                        &mut out,
                    );
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, inference, frame_path);
criterion_main!(benches);
