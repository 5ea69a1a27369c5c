//! The evaluation against the TFLite reference (`tools/eval_tflite.py`), image by image, and
//! the effect of edge refinement, on the annotated development sets; and the scene-cut
//! threshold on the webcam clips of `../shared/videos`.
//!
//! `tests/fixtures/reference/<set>-<preset>.csv` holds the reference's per-image scores on the
//! whole sets (`python tools/eval_tflite.py ... --per-image`). The committed photos are always
//! checked; the checks over many images read `../shared/datasets` (present in CI, where
//! `.ci/run` sets `AI_BG_REQUIRE_SHARED=1` so a missing folder fails instead of skipping).

use candle_core::Device;
use obs_ai_background::eval::{evaluate_pair, find_pairs, Pair};
use obs_ai_background::metrics::Summary;
use obs_ai_background::model::{Preset, Segmenter};
use obs_ai_background::postprocess::{SceneCutDetector, SCENE_CUT_CHANGE};
use obs_ai_background::preprocess::Preprocessor;
use obs_ai_background::video::{probe, Decoder};
use obs_ai_background::{FrameRef, MaskPipeline, PipelineSettings, PixelFormat};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// `(iou, boundary_f)` per image id from a reference CSV.
fn reference(set: &str, preset: Preset) -> HashMap<String, (f64, f64)> {
    let path = repo(&format!("tests/fixtures/reference/{set}-{preset}.csv"));
    let mut rdr = csv::Reader::from_path(&path).unwrap();
    rdr.records()
        .map(|r| {
            let r = r.unwrap();
            (
                r[0].to_string(),
                (r[3].parse().unwrap(), r[4].parse().unwrap()),
            )
        })
        .collect()
}

/// `../shared/<rel>`, or `None` (with a note) where it is absent and not required.
fn shared(rel: &str) -> Option<PathBuf> {
    let dir = repo("../shared").join(rel);
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("AI_BG_REQUIRE_SHARED").is_none(),
        "{} is missing",
        dir.display()
    );
    eprintln!("skipped: {} is not here", dir.display());
    None
}

/// `../shared/datasets/<set>` (see [`shared`]).
fn shared_dataset(set: &str) -> Option<PathBuf> {
    shared(&format!("datasets/{set}"))
}

fn pipeline(preset: Preset) -> MaskPipeline {
    MaskPipeline::new(Arc::new(Segmenter::new(preset, &Device::Cpu).unwrap()))
}

fn settings(refine: bool) -> PipelineSettings {
    PipelineSettings {
        smoothing: 0.0,
        refine,
        ..Default::default()
    }
}

/// The committed photos score as in the TFLite evaluation: IoU within 0.005 and boundary F
/// within 0.03 per image (the JPEG decoders differ by a few levels on some pixels).
#[test]
fn committed_photos_score_as_in_the_reference() {
    for preset in Preset::ALL {
        let mut pipe = pipeline(preset);
        for (set, num) in [
            ("ccp-webcam-dev", "0286"),
            ("ccp-webcam-dev", "0095"),
            ("ccp-dev", "0291"),
            ("ccp-dev", "0135"),
        ] {
            let id = format!("{set}-{num}");
            let pair = Pair {
                id: id.clone(),
                image: repo(&format!("tests/fixtures/photos/{id}.jpg")),
                mask: repo(&format!("tests/fixtures/photos/{id}.mask.png")),
            };
            let ours = evaluate_pair(&mut pipe, &pair, &settings(false), 0.5).unwrap();
            let (iou, bf) = reference(set, preset)[num];
            assert!(
                (ours.iou - iou).abs() <= 0.005,
                "{preset} {id}: IoU {:.4} vs reference {iou:.4}",
                ours.iou
            );
            assert!(
                (ours.boundary_f - bf).abs() <= 0.03,
                "{preset} {id}: boundary F {:.4} vs reference {bf:.4}",
                ours.boundary_f
            );
        }
    }
}

/// First `n` pairs of a shared set.
fn subset(set: &Path, n: usize) -> Vec<Pair> {
    let mut pairs = find_pairs(&set.join("images"), &set.join("masks")).unwrap();
    pairs.truncate(n);
    pairs
}

/// On 60 images of each development set, the mean IoU agrees with the TFLite reference's on
/// the same images within 0.002 (the acceptance bound for the whole sets).
#[test]
fn dev_subset_agrees_with_the_reference() {
    for set_name in ["ccp-webcam-dev", "ccp-dev"] {
        let Some(set) = shared_dataset(set_name) else {
            return;
        };
        let pairs = subset(&set, 60);
        for preset in Preset::ALL {
            let mut pipe = pipeline(preset);
            let scores: Vec<_> = pairs
                .iter()
                .map(|p| evaluate_pair(&mut pipe, p, &settings(false), 0.5).unwrap())
                .collect();
            let reference = reference(set_name, preset);
            let ref_mean = pairs.iter().map(|p| reference[&p.id].0).sum::<f64>() / 60.0;
            let ours = Summary::of(&scores).mean_iou;
            eprintln!("{set_name} {preset}: mean IoU {ours:.4}, reference {ref_mean:.4}");
            assert!(
                (ours - ref_mean).abs() <= 0.002,
                "{set_name} {preset}: mean IoU {ours:.4} vs reference {ref_mean:.4}"
            );
        }
    }
}

/// Guided-filter refinement moves the mask's edges towards the annotated ones: on 60 images of
/// ccp-webcam-dev it lifts boundary F by more than 0.005 (measured 0.810 -> 0.823; on all 300,
/// 0.793 -> 0.807, see README).
#[test]
fn refinement_improves_edges_on_the_dev_subset() {
    let Some(set) = shared_dataset("ccp-webcam-dev") else {
        return;
    };
    let pairs = subset(&set, 60);
    let mut pipe = pipeline(Preset::Landscape);
    let mut run = |refine: bool| {
        let scores: Vec<_> = pairs
            .iter()
            .map(|p| evaluate_pair(&mut pipe, p, &settings(refine), 0.5).unwrap())
            .collect();
        Summary::of(&scores)
    };
    let (plain, refined) = (run(false), run(true));
    eprintln!(
        "boundary F {:.4} -> {:.4}, mean IoU {:.4} -> {:.4}",
        plain.boundary_f, refined.boundary_f, plain.mean_iou, refined.mean_iou
    );
    assert!(refined.boundary_f > plain.boundary_f + 0.005);
    assert!(refined.mean_iou >= plain.mean_iou);
}

/// The scene-cut threshold separates cuts from motion on real webcam clips: no two consecutive
/// frames of one clip differ by as much, the first frames of any two different clips do.
#[test]
fn scene_cut_threshold_separates_cuts_from_motion() {
    if cfg!(windows) && !obs_ai_background::video::ffprobe_available() {
        return eprintln!("skipped: no FFmpeg (Windows build under Wine)");
    }
    let Some(dir) = shared("videos") else {
        return;
    };
    let mut clips: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "mp4"))
        .collect();
    clips.sort();
    assert!(clips.len() >= 2, "no clips in {}", dir.display());
    let (mw, mh) = Preset::Landscape.input_size();
    let mut pre = Preprocessor::new(mw, mh);
    let mut firsts = Vec::new();
    for clip in &clips {
        let info = probe(clip).unwrap();
        let mut decoder = Decoder::open(clip, &info).unwrap();
        let mut cuts = SceneCutDetector::default();
        let (mut buf, mut max_change, mut first) = (Vec::new(), 0f32, true);
        while decoder.next_frame(&mut buf).unwrap() {
            let frame = FrameRef::packed(&buf, info.width, info.height, PixelFormat::Rgba).unwrap();
            let input = pre.run(&frame);
            if first {
                firsts.push(input.to_vec());
                first = false;
            }
            if let Some(c) = cuts.change(input, mw, mh) {
                max_change = max_change.max(c);
            }
        }
        decoder.finish().unwrap();
        let name = clip.file_name().unwrap().to_string_lossy();
        eprintln!("{name}: largest change between consecutive frames {max_change:.4}");
        assert!(max_change < SCENE_CUT_CHANGE, "{name}: {max_change}");
    }
    for i in 0..firsts.len() {
        for j in i + 1..firsts.len() {
            let mut cuts = SceneCutDetector::default();
            cuts.change(&firsts[i], mw, mh);
            let c = cuts.change(&firsts[j], mw, mh).unwrap();
            eprintln!("clip {i} -> clip {j}: change {c:.3}");
            assert!(c > SCENE_CUT_CHANGE, "clips {i} and {j}: {c}");
        }
    }
}
