//! Fine-tuning: the training-mode network against the fused inference path, and
//! `ai-background train` on the fixture photos (a few steps: the loss falls, the file loads
//! with `--weights`, its keys and shapes are the embedded weights').

use candle_core::{DType, Device, Tensor};
use obs_ai_background::model::trainable::TrainableNet;
use obs_ai_background::model::{Preset, SegmentationBackend, Segmenter};
use obs_ai_background::preprocess::Preprocessor;
use obs_ai_background::{FrameRef, PixelFormat};
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// The eight fixture photos with human masks: `(image, mask)`.
fn fixture_pairs() -> Vec<(PathBuf, PathBuf)> {
    let mut pairs = Vec::new();
    for dir in ["photos", "obs"] {
        let mut images: Vec<PathBuf> = std::fs::read_dir(fixture(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
            .collect();
        images.sort();
        for image in images {
            let mask = image.with_extension("mask.png");
            assert!(mask.is_file(), "{}", mask.display());
            pairs.push((image, mask));
        }
    }
    assert_eq!(pairs.len(), 8);
    pairs
}

/// The model input of a photo, `[3 * W * H]` planar RGB 0..1, as inference prepares it.
fn model_input(path: &Path, preset: Preset) -> Vec<f32> {
    let img = image::open(path).unwrap().to_rgb8();
    let (w, h) = preset.input_size();
    let frame = FrameRef::packed(
        img.as_raw(),
        img.width() as usize,
        img.height() as usize,
        PixelFormat::Rgb,
    )
    .unwrap();
    Preprocessor::new(w, h).run(&frame).to_vec()
}

/// Training mode = inference: sigmoid of the trainable network's logits matches the fused
/// CPU kernels within 1e-5 mean absolute difference (1e-4 at most; as the portable path's
/// parity test in `tests/parity.rs`) on real photos, for both presets, and a batch of two gives each
/// image what it gets alone.
#[test]
fn training_forward_matches_fused_inference() {
    let device = Device::Cpu;
    let pairs = fixture_pairs();
    for preset in Preset::ALL {
        let (w, h) = preset.input_size();
        let fused = Segmenter::new(preset, &device).unwrap();
        let net = TrainableNet::embedded(preset, &device).unwrap();
        let inputs: Vec<Vec<f32>> = [&pairs[0].0, &pairs[5].0]
            .iter()
            .map(|p| model_input(p, preset))
            .collect();
        let flat: Vec<f32> = inputs.concat();
        let batch = Tensor::from_vec(flat, (2, 3, h, w), &device).unwrap();
        let probs = candle_nn::ops::sigmoid(&net.logits(&batch).unwrap())
            .unwrap()
            .flatten_from(1)
            .unwrap();
        for (i, input) in inputs.iter().enumerate() {
            let mut want = vec![0f32; w * h];
            fused.segment(input, &mut want).unwrap();
            let got = probs.get(i).unwrap().to_vec1::<f32>().unwrap();
            let diffs: Vec<f32> = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).collect();
            let mad = diffs.iter().sum::<f32>() / diffs.len() as f32;
            let max = diffs.iter().copied().fold(0f32, f32::max);
            eprintln!("{preset} image {i}: mean |diff| {mad:.2e}, max {max:.2e}");
            assert!(mad <= 1e-5, "{preset} image {i}: mean |diff| {mad}");
            assert!(max <= 1e-4, "{preset} image {i}: max |diff| {max}");
            // The photo has a person: the comparison is not between two empty masks.
            let person = want.iter().filter(|&&p| p > 0.5).count();
            assert!(
                person > w * h / 10,
                "{preset} image {i}: {person} person pixels"
            );
        }
    }
}

/// Gradients reach every weight (nothing in the graph is cut: the windows, the taps and the
/// upsampling matrices are all differentiable), and they are finite on this model's large
/// logits.
#[test]
fn every_weight_gets_a_finite_gradient() {
    let device = Device::Cpu;
    let preset = Preset::Landscape;
    let (w, h) = preset.input_size();
    let net = TrainableNet::embedded(preset, &device).unwrap();
    let pair = &fixture_pairs()[2];
    let x = Tensor::from_vec(model_input(&pair.0, preset), (1, 3, h, w), &device).unwrap();
    let y = Tensor::ones((1, 1, h, w), DType::F32, &device).unwrap();
    let logits = net.logits(&x).unwrap();
    let loss = obs_ai_background::train::bce_with_logits(&logits, &y)
        .unwrap()
        .mean_all()
        .unwrap();
    assert!(loss.to_scalar::<f32>().unwrap().is_finite());
    let grads = loss.backward().unwrap();
    for (key, var) in net.vars() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {key}"));
        let v = g
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(v.is_finite() && v > 0.0, "{key}: max |grad| {v}");
    }
}

/// Keys, shapes of a safetensors file (sorted).
fn keys_and_shapes(path: &Path) -> Vec<(String, Vec<usize>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<usize>)> = st
        .tensors()
        .into_iter()
        .map(|(k, t)| (k, t.shape().to_vec()))
        .collect();
    v.sort();
    v
}

#[test]
fn train_a_few_steps_on_fixture_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("images")).unwrap();
    std::fs::create_dir_all(data.join("masks")).unwrap();
    for (i, (image, mask)) in fixture_pairs().iter().enumerate() {
        std::fs::copy(image, data.join(format!("images/{i:04}.jpg"))).unwrap();
        std::fs::copy(mask, data.join(format!("masks/{i:04}.png"))).unwrap();
    }
    let out = dir.path().join("tuned.safetensors");
    let bin = env!("CARGO_BIN_EXE_ai-background");
    let run = Command::new(bin)
        .args(["train", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .args([
            "--steps", "6", "--batch", "4", "--lr", "3e-4", "--warmup", "1",
        ])
        .args(["--no-keep", "--json"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    // The loss on the training pairs (whole images, no augmentation) falls.
    let (before, after) = (
        report["fit_before"].as_f64().unwrap(),
        report["fit_after"].as_f64().unwrap(),
    );
    assert!(after < 0.9 * before, "loss {before} -> {after}");
    // Same keys and shapes as the embedded weights.
    assert_eq!(
        keys_and_shapes(&out),
        keys_and_shapes(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("models/landscape.safetensors")
        )
    );
    // The file loads with --weights and segments a photo.
    let mask = dir.path().join("mask.png");
    let seg = Command::new(bin)
        .arg("segment")
        .arg(fixture("photos/ccp-webcam-dev-0095.jpg"))
        .arg("-o")
        .arg(&mask)
        .arg("--weights")
        .arg(&out)
        .args(["--device", "cpu"])
        .output()
        .unwrap();
    assert!(
        seg.status.success(),
        "{}",
        String::from_utf8_lossy(&seg.stderr)
    );
    let m = image::open(&mask).unwrap().to_luma8();
    let person = m.pixels().filter(|p| p[0] >= 128).count();
    assert!(person > m.len() / 10, "{person} person pixels");
    // Never over an input: --out equal to --from is refused with one error line.
    let written = std::fs::read(&out).unwrap();
    let refused = Command::new(bin)
        .args(["train", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .arg("--from")
        .arg(&out)
        .args(["--steps", "1", "--no-keep"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.starts_with("error: ") && err.lines().count() == 1,
        "{err}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), written);
}

/// The direct depthwise op equals the gather form and the shifted form (values, gradient of the
/// input, gradient of the weight, within 1e-5 of the largest magnitude, or of 1 when that is
/// smaller) for every kernel and stride of the network, on odd and even sizes (TensorFlow SAME
/// padding is asymmetric at stride 2), a batch of two. (The forms sum in different orders: at
/// 9x16 a weight gradient adds 288 random products, up to about 37 in all, and the rounding
/// alone differed by up to 1.1e-5 in 3 of 200 runs against the absolute 1e-5 this test had.)
#[test]
fn direct_depthwise_matches_the_gather_form_and_its_gradients() {
    use obs_ai_background::model::trainable::{
        depthwise_direct, depthwise_gather, depthwise_shifted, DepthwiseGeometry,
    };
    type Form = fn(&Tensor, &Tensor, DepthwiseGeometry) -> candle_core::Result<Tensor>;
    let forms: [(&str, Form); 3] = [
        ("direct", depthwise_direct),
        ("gather", depthwise_gather),
        ("shifted", depthwise_shifted),
    ];
    let device = Device::Cpu;
    let c = 3;
    for (k, s) in [(3, 1), (3, 2), (5, 1), (5, 2)] {
        for (h, w) in [(9, 16), (8, 7)] {
            let geo = DepthwiseGeometry { n: 2, h, w, k, s };
            let x = candle_core::Var::randn(0f32, 1.0, (c, 2 * h * w), &device).unwrap();
            let wt = candle_core::Var::randn(0f32, 1.0, (c, k * k), &device).unwrap();
            let (ho, wo) = geo.output();
            // A random projection of the output makes every output gradient different.
            let r = Tensor::randn(0f32, 1.0, (c, 2 * ho * wo), &device).unwrap();
            let mut results = Vec::new();
            for (_, f) in forms {
                let y = f(x.as_tensor(), wt.as_tensor(), geo).unwrap();
                let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
                let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                results.push([
                    flat(&y),
                    flat(grads.get(x.as_tensor()).unwrap()),
                    flat(grads.get(wt.as_tensor()).unwrap()),
                ]);
            }
            for ((form, _), other) in forms.iter().zip(&results).skip(1) {
                for (what, (a, b)) in ["value", "input gradient", "weight gradient"]
                    .iter()
                    .zip(results[0].iter().zip(other))
                {
                    assert_eq!(a.len(), b.len());
                    let max = a
                        .iter()
                        .zip(b)
                        .map(|(p, q)| (p - q).abs())
                        .fold(0f32, f32::max);
                    let scale = a.iter().fold(1f32, |m, v| m.max(v.abs()));
                    assert!(
                        max <= 1e-5 * scale,
                        "k {k} s {s} {h}x{w}: {form} {what} differs by {max} (largest {scale})"
                    );
                    assert!(
                        b.iter().any(|&v| v.abs() > 0.1),
                        "{form} {what} is all zero"
                    );
                }
            }
        }
    }
}

/// On the whole network (batch 2, a real photo and its mask), every weight gradient of the
/// direct depthwise op matches the shifted form's (the network's form off the CPU) within 1e-5
/// of the largest gradient.
#[test]
fn direct_and_shifted_networks_give_the_same_gradients() {
    let device = Device::Cpu;
    let preset = Preset::Landscape;
    let (w, h) = preset.input_size();
    let pairs = fixture_pairs();
    let x: Vec<f32> = [&pairs[1].0, &pairs[6].0]
        .iter()
        .flat_map(|p| model_input(p, preset))
        .collect();
    let x = Tensor::from_vec(x, (2, 3, h, w), &device).unwrap();
    let y = Tensor::ones((2, 1, h, w), DType::F32, &device).unwrap();
    let mut grads = Vec::new();
    for direct in [true, false] {
        let mut net = TrainableNet::embedded(preset, &device).unwrap();
        net.set_direct_depthwise(direct).unwrap();
        let loss = obs_ai_background::train::bce_with_logits(&net.logits(&x).unwrap(), &y)
            .unwrap()
            .mean_all()
            .unwrap();
        let g = loss.backward().unwrap();
        let by_key: Vec<(String, Vec<f32>)> = net
            .vars()
            .iter()
            .map(|(k, v)| {
                let t = g.get(v.as_tensor()).unwrap();
                (
                    k.clone(),
                    t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                )
            })
            .collect();
        grads.push(by_key);
    }
    for ((key, a), (_, b)) in grads[0].iter().zip(&grads[1]) {
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let max = a
            .iter()
            .zip(b)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(
            max <= 1e-5 * scale.max(1e-3),
            "{key}: differs by {max} (max |grad| {scale})"
        );
    }
}
