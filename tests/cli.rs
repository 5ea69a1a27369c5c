//! The `ai-background` command line: outputs on real files, and one clear error line with a
//! non-zero exit for bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_ai-background");

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn photo() -> PathBuf {
    repo("tests/fixtures/photos/ccp-webcam-dev-0286.jpg")
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run ai-background")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Fails with exit status 1 and exactly one stderr line starting `error:` containing `needle`.
fn assert_one_error_line(out: &Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(lines[0].contains(needle), "'{needle}' not in: {err}");
}

/// Empty `images/` and `masks/` folders under `root`.
fn dataset_dirs(root: &Path) -> (PathBuf, PathBuf) {
    let (images, masks) = (root.join("images"), root.join("masks"));
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&masks).unwrap();
    (images, masks)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn segment_writes_a_mask_of_the_image_size() {
    let dir = tempfile::tempdir().unwrap();
    let mask = dir.path().join("mask.png");
    let out = run(&["segment", s(&photo()), "-o", s(&mask), "--threshold", "0.5"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let m = image::open(&mask).unwrap().to_luma8();
    assert_eq!(m.dimensions(), image::image_dimensions(photo()).unwrap());
    // A hard mask: only 0 and 255, with both present.
    assert!(m.pixels().all(|p| p[0] == 0 || p[0] == 255));
    assert!(m.pixels().any(|p| p[0] == 0) && m.pixels().any(|p| p[0] == 255));
}

#[test]
fn apply_writes_each_mode() {
    let dir = tempfile::tempdir().unwrap();
    let bg = repo("tests/fixtures/photos/ccp-dev-0291.jpg");
    let input = photo();
    for (mode, extra, file) in [
        ("blur", vec!["--blur", "8"], "blur.jpg"),
        (
            "image",
            vec!["--image", s(&bg), "--fit", "contain"],
            "image.png",
        ),
        ("color", vec!["--color", "#123456"], "color.png"),
        ("transparent", vec![], "transparent.png"),
    ] {
        let path = dir.path().join(file);
        let mut args = vec!["apply", s(&input), "-o", s(&path), "--mode", mode];
        args.extend(extra);
        let out = run(&args);
        assert!(out.status.success(), "{mode}: {}", stderr(&out));
        let img = image::open(&path).unwrap().to_rgba8();
        assert_eq!(img.dimensions(), image::image_dimensions(photo()).unwrap());
        if mode == "transparent" {
            assert!(img.pixels().any(|p| p[3] == 0) && img.pixels().any(|p| p[3] == 255));
        }
        if mode == "color" {
            assert!(img.pixels().any(|p| p.0 == [0x12, 0x34, 0x56, 255]));
        }
    }
}

/// A video through ffmpeg: same size and frame count out as in.
#[test]
fn apply_processes_a_video() {
    let dir = tempfile::tempdir().unwrap();
    let input = repo("tests/fixtures/clips/thumbs-up-360p-2s.mp4");
    let output = dir.path().join("out.mp4");
    let out = run(&["apply", s(&input), "-o", s(&output), "--mode", "color"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let info_in = obs_ai_background::video::probe(&input).unwrap();
    let info_out = obs_ai_background::video::probe(&output).unwrap();
    assert_eq!(
        (info_out.width, info_out.height),
        (info_in.width, info_in.height)
    );
    assert_eq!(info_out.frames, info_in.frames);
}

#[test]
fn eval_prints_json_and_writes_csv() {
    let dir = tempfile::tempdir().unwrap();
    let (images, masks) = dataset_dirs(dir.path());
    for id in ["ccp-webcam-dev-0286", "ccp-dev-0135"] {
        std::fs::copy(
            repo(&format!("tests/fixtures/photos/{id}.jpg")),
            images.join(format!("{id}.jpg")),
        )
        .unwrap();
        std::fs::copy(
            repo(&format!("tests/fixtures/photos/{id}.mask.png")),
            masks.join(format!("{id}.png")),
        )
        .unwrap();
    }
    let csv_path = dir.path().join("scores.csv");
    let out = run(&[
        "eval",
        "--images",
        s(&images),
        "--masks",
        s(&masks),
        "--json",
        "--csv",
        s(&csv_path),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["count"], 2);
    for key in ["mean_iou", "pooled_iou", "boundary_f"] {
        let x = v[key].as_f64().unwrap();
        assert!((0.9..=1.0).contains(&x), "{key} = {x}");
    }
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.starts_with("id,intersection,union,iou,boundary_f"));
}

#[test]
fn bench_prints_stage_timings() {
    let out = run(&[
        "bench",
        "--size",
        "320x180",
        "--frames",
        "3",
        "--image",
        s(&photo()),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for stage in [
        "preprocess",
        "inference",
        "postprocess",
        "composite",
        "total",
    ] {
        assert!(text.contains(stage), "{stage} missing: {text}");
    }
}

// --- Bad input -------------------------------------------------------------------------------

#[test]
fn missing_image_is_one_error_line() {
    let out = run(&["segment", "/nonexistent/photo.jpg", "-o", "/tmp/x.png"]);
    assert_one_error_line(&out, "cannot read image /nonexistent/photo.jpg");
}

#[test]
fn corrupt_image_is_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jpg");
    let mut bytes = std::fs::read(photo()).unwrap();
    bytes.truncate(300); // a JPEG header, then nothing
    std::fs::write(&bad, bytes).unwrap();
    let out = run(&["apply", s(&bad), "-o", s(&dir.path().join("o.png"))]);
    assert_one_error_line(&out, "cannot read image");
}

#[test]
fn mask_of_another_size_is_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let (images, masks) = dataset_dirs(dir.path());
    std::fs::copy(photo(), images.join("a.jpg")).unwrap();
    image::GrayImage::new(10, 10)
        .save(masks.join("a.png"))
        .unwrap();
    let out = run(&["eval", "--images", s(&images), "--masks", s(&masks)]);
    assert_one_error_line(&out, "is 10x10 but its image is 550x309");
}

#[test]
fn empty_folder_is_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["eval", "--images", s(dir.path()), "--masks", s(dir.path())]);
    assert_one_error_line(&out, "no images");
}

#[test]
fn unknown_preset_is_rejected() {
    let out = run(&[
        "segment",
        s(&photo()),
        "-o",
        "/tmp/x.png",
        "--preset",
        "huge",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.lines()
            .next()
            .unwrap()
            .contains("unknown model preset 'huge'"),
        "{err}"
    );
}

#[test]
fn missing_ffmpeg_is_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "apply",
            s(&repo("tests/fixtures/clips/thumbs-up-360p-2s.mp4")),
            "-o",
            s(&dir.path().join("o.mp4")),
        ])
        .env("PATH", dir.path())
        .output()
        .unwrap();
    assert_one_error_line(&out, "not found on PATH: install FFmpeg");
}

#[test]
fn transparency_in_a_format_without_alpha_is_one_error_line() {
    let out = run(&[
        "apply",
        s(&photo()),
        "-o",
        "/tmp/o.jpg",
        "--mode",
        "transparent",
    ]);
    assert_one_error_line(&out, "cannot hold transparency");
    let out = run(&[
        "apply",
        s(&repo("tests/fixtures/clips/thumbs-up-360p-2s.mp4")),
        "-o",
        "/tmp/o.mp4",
        "--mode",
        "transparent",
    ]);
    assert_one_error_line(&out, "cannot hold transparency");
}

#[test]
fn unreadable_weights_are_one_error_line() {
    let out = run(&[
        "segment",
        s(&photo()),
        "-o",
        "/tmp/x.png",
        "--weights",
        s(&photo()),
    ]);
    assert_one_error_line(&out, "cannot load weights from");
}

/// `bench --path`: the network alone against the fused kernels, with the tensor operations one
/// frame issues (the portable path must stay far below the stock path's count).
#[test]
fn bench_path_prints_operation_counts() {
    let mut counts = Vec::new();
    for path in ["portable", "stock"] {
        let out = run(&["bench", "--path", path, "--frames", "2", "--device", "cpu"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.contains("ratio"), "{text}");
        let ops: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("tensor operations per frame"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no operation count: {text}"));
        counts.push(ops);
    }
    assert!(
        counts[0] * 5 < counts[1],
        "portable vs stock ops: {counts:?}"
    );
}
