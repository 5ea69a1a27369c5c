//! Parity of the candle network with the TFLite reference.
//!
//! Fixtures (`tests/fixtures/parity/<preset>/<id>.{input,prob}.png`) were made once by
//! `tools/make_parity_fixtures.py` with the TFLite runtime (`ai-edge-litert` 2.1.0, XNNPACK) on
//! real photos from the development sets: `input.png` is the RGB model input, `prob.png` the
//! reference person probability as 16-bit grey (value / 65535).

use candle_core::{Device, Tensor};
use obs_ai_background::model::{Kernels, Preset, SegmentationBackend, Segmenter};
use std::path::{Path, PathBuf};

fn fixture_dir(preset: Preset) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/parity")
        .join(preset.name())
}

/// `(id, NCHW input in 0..1, reference probability)` for every fixture of a preset.
fn fixtures(preset: Preset) -> Vec<(String, Vec<f32>, Vec<f32>)> {
    let (w, h) = preset.input_size();
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(fixture_dir(preset))
        .expect("fixture dir")
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".input.png"))
        .collect();
    entries.sort();
    for path in entries {
        let id = path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches(".input.png")
            .to_string();
        let rgb = image::open(&path).unwrap().to_rgb8();
        assert_eq!(rgb.dimensions(), (w as u32, h as u32), "{id} input size");
        let mut input = vec![0f32; 3 * w * h];
        for (i, px) in rgb.pixels().enumerate() {
            for c in 0..3 {
                input[c * w * h + i] = px[c] as f32 / 255.0;
            }
        }
        let prob_path = path.with_file_name(format!("{id}.prob.png"));
        let prob = image::open(&prob_path).unwrap().to_luma16();
        assert_eq!(prob.dimensions(), (w as u32, h as u32), "{id} prob size");
        let prob = prob.pixels().map(|p| p[0] as f32 / 65535.0).collect();
        out.push((id, input, prob));
    }
    assert!(out.len() >= 3, "at least three fixtures per preset");
    out
}

/// Mean absolute difference and IoU of the masks at 0.5.
fn compare(ours: &[f32], reference: &[f32]) -> (f32, f32) {
    let mad = ours
        .iter()
        .zip(reference)
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / ours.len() as f32;
    let (mut inter, mut union) = (0usize, 0usize);
    for (&a, &b) in ours.iter().zip(reference) {
        let (a, b) = (a >= 0.5, b >= 0.5);
        inter += (a && b) as usize;
        union += (a || b) as usize;
    }
    (mad, inter as f32 / union.max(1) as f32)
}

fn check_preset(preset: Preset, segmenter: &dyn SegmentationBackend) {
    let (w, h) = preset.input_size();
    for (id, input, reference) in fixtures(preset) {
        let mut ours = vec![0f32; w * h];
        segmenter.segment(&input, &mut ours).unwrap();
        let (mad, iou) = compare(&ours, &reference);
        eprintln!("{preset} {id}: mean abs diff {mad:.2e}, IoU@0.5 {iou:.5}");
        assert!(mad <= 1e-4, "{preset} {id}: mean abs diff {mad} > 1e-4");
        assert!(iou >= 0.999, "{preset} {id}: IoU {iou} < 0.999");
        // The fixture must hold a person, or the IoU above would be trivially 1.
        let person = reference.iter().filter(|&&p| p >= 0.5).count();
        assert!(
            person > w * h / 20,
            "{preset} {id}: fixture shows no person"
        );
    }
}

#[test]
fn landscape_matches_tflite() {
    let seg = Segmenter::new(Preset::Landscape, &Device::Cpu).unwrap();
    check_preset(Preset::Landscape, &seg);
}

#[test]
fn square_matches_tflite() {
    let seg = Segmenter::new(Preset::Square, &Device::Cpu).unwrap();
    check_preset(Preset::Square, &seg);
}

/// Two threads split every layer by pixels, at a row that the helper's learnt balance picks,
/// which does not change any sum's order: the output equals one thread's bit for bit, on every
/// fixture, and repeatedly (the helper thread and its balance are reused across frames).
#[test]
fn two_threads_equal_one() {
    for preset in Preset::ALL {
        let seg = Segmenter::new(preset, &Device::Cpu).unwrap();
        let (w, h) = preset.input_size();
        for (id, input, reference) in fixtures(preset) {
            let mut one = vec![0f32; w * h];
            seg.segment_threads(&input, &mut one, 1).unwrap();
            for _ in 0..3 {
                let mut two = vec![f32::NAN; w * h];
                seg.segment_threads(&input, &mut two, 2).unwrap();
                assert!(one == two, "{preset} {id}: 2 threads differ from 1");
            }
            assert!(compare(&one, &reference).0 <= 1e-4, "{preset} {id}");
        }
    }
}

/// The stock-op path (what CUDA and Metal run) must agree with the custom CPU kernels.
#[test]
fn stock_ops_match_cpu_kernels() {
    let preset = Preset::Landscape;
    let (w, h) = preset.input_size();
    let fast = Segmenter::new(preset, &Device::Cpu).unwrap();
    let stock = Segmenter::with_stock_ops(preset, &Device::Cpu).unwrap();
    let (_, input, _) = fixtures(preset).remove(0);
    let x = Tensor::from_vec(input, (1, 3, h, w), &Device::Cpu).unwrap();
    let a = fast.forward(&x).unwrap();
    let b = stock.forward(&x).unwrap();
    let diff = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-4, "max diff between kernels {diff}");
}

#[test]
fn corrupt_weights_are_a_clear_error() {
    let err = Segmenter::from_bytes(b"not safetensors", Preset::Landscape, &Device::Cpu, "junk")
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot load weights from junk"), "{err}");
    // The other preset's weights load, but a truncated file must not.
    let w = Preset::Square.embedded_weights();
    let err = Segmenter::from_bytes(&w[..w.len() / 2], Preset::Square, &Device::Cpu, "half")
        .unwrap_err()
        .to_string();
    assert!(err.contains("half"), "{err}");
}

/// Mean absolute difference of two probability tensors.
fn mean_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The portable path (what CUDA and Metal run), on the CPU, equals the fused kernels within
/// 1e-5 mean absolute difference on every parity fixture of both presets, and issues a few
/// hundred tensor operations where the stock path issues thousands.
#[test]
fn portable_path_matches_fused_kernels() {
    for preset in Preset::ALL {
        let (w, h) = preset.input_size();
        let fused = Segmenter::new(preset, &Device::Cpu).unwrap();
        let portable = Segmenter::with_kernels(preset, &Device::Cpu, Kernels::Portable).unwrap();
        for (id, input, _) in fixtures(preset) {
            let x = Tensor::from_vec(input, (1, 3, h, w), &Device::Cpu).unwrap();
            let a = fused.forward(&x).unwrap();
            let (b, ops) = portable.forward_counted(&x).unwrap();
            let mad = mean_abs_diff(&a, &b);
            eprintln!("{preset} {id}: portable vs fused mean abs diff {mad:.2e}, {ops} ops");
            assert!(mad <= 1e-5, "{preset} {id}: mean abs diff {mad} > 1e-5");
            assert!((100..500).contains(&ops), "{preset}: {ops} tensor ops");
        }
    }
    let stock = Segmenter::with_stock_ops(Preset::Landscape, &Device::Cpu).unwrap();
    let x = Tensor::zeros((1, 3, 144, 256), candle_core::DType::F32, &Device::Cpu).unwrap();
    let (_, stock_ops) = stock.forward_counted(&x).unwrap();
    let portable = Segmenter::with_kernels(Preset::Landscape, &Device::Cpu, Kernels::Portable);
    let (_, ops) = portable.unwrap().forward_counted(&x).unwrap();
    eprintln!("tensor ops per landscape frame: stock {stock_ops}, portable {ops}");
    assert!(
        5 * ops < stock_ops,
        "portable {ops} vs stock {stock_ops} ops"
    );
}

/// On a CUDA GPU (builds with `--features cuda`, run by `scripts/gpu-check.sh`): the portable
/// path there gives the fused CPU kernels' probabilities within 1e-3 on every fixture. Skips
/// with a line where no GPU opens.
#[cfg(feature = "cuda")]
#[test]
fn cuda_matches_cpu() {
    let gpu = match Device::new_cuda(0) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("no CUDA device, skipped: {e}");
            return;
        }
    };
    for preset in Preset::ALL {
        let (w, h) = preset.input_size();
        let cpu = Segmenter::new(preset, &Device::Cpu).unwrap();
        let cuda = Segmenter::new(preset, &gpu).unwrap();
        assert_eq!(cuda.kernels(), Kernels::Portable);
        for (id, input, _) in fixtures(preset) {
            let (mut a, mut b) = (vec![0f32; w * h], vec![0f32; w * h]);
            cpu.segment(&input, &mut a).unwrap();
            cuda.segment(&input, &mut b).unwrap();
            let max = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            eprintln!("{preset} {id}: cuda vs cpu max abs diff {max:.2e}");
            assert!(max <= 1e-3, "{preset} {id}: max abs diff {max} > 1e-3");
        }
    }
}
