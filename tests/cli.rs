//! The `ai-background` command line: outputs on real files, and one clear error line with a
//! non-zero exit for bad input.

use obs_ai_background::metrics::{erode, iou, laplacian_energy};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_ai-background");

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn photo() -> PathBuf {
    repo("tests/fixtures/photos/ccp-webcam-dev-0286.jpg")
}

/// The human mask of [`photo`] (true = person).
fn photo_mask() -> (Vec<bool>, usize, usize) {
    let m = image::open(repo("tests/fixtures/photos/ccp-webcam-dev-0286.mask.png"))
        .unwrap()
        .to_luma8();
    let (w, h) = (m.width() as usize, m.height() as usize);
    (m.pixels().map(|p| p[0] >= 128).collect(), w, h)
}

fn clip() -> PathBuf {
    repo("tests/fixtures/clips/thumbs-up-360p-2s.mp4")
}

/// Runs the `ffmpeg` program with `args` split at spaces (test media are made with it, into
/// temporary folders, whose paths have no spaces).
fn ffmpeg(args: &str) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-y"])
        .args(args.split_whitespace())
        .output()
        .expect("run ffmpeg");
    assert!(out.status.success(), "ffmpeg {args}: {}", stderr(&out));
}

/// `(video stream duration, audio stream duration, container duration)` in seconds.
fn durations(path: &Path) -> (Option<f64>, Option<f64>, f64) {
    let v = obs_ai_background::video::probe_json(path).unwrap();
    let num = |x: &serde_json::Value| x.as_str().and_then(|s| s.parse::<f64>().ok());
    let stream = |kind: &str| {
        v["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["codec_type"] == kind)
            .and_then(|s| num(&s["duration"]))
    };
    (
        stream("video"),
        stream("audio"),
        num(&v["format"]["duration"]).unwrap(),
    )
}

/// Presentation time in seconds of the last video packet.
fn last_frame_time(path: &Path) -> f64 {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time",
        ])
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<f64>().ok())
        .fold(f64::MIN, f64::max)
}

/// The first frame of a video, upright, through the library's decoder.
fn first_frame(path: &Path) -> image::RgbaImage {
    let info = obs_ai_background::video::probe(path).unwrap();
    let mut dec = obs_ai_background::video::Decoder::open(path, &info).unwrap();
    let mut buf = Vec::new();
    assert!(dec.next_frame(&mut buf).unwrap());
    image::RgbaImage::from_raw(info.width as u32, info.height as u32, buf).unwrap()
}

/// Mean absolute difference of the RGB channels of two images of one size.
fn mean_abs_diff(a: &image::RgbaImage, b: &image::RgbaImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let sum: u64 = a
        .pixels()
        .zip(b.pixels())
        .map(|(p, q)| (0..3).map(|c| p[c].abs_diff(q[c]) as u64).sum::<u64>())
        .sum();
    sum as f64 / (3 * a.width() * a.height()) as f64
}

/// The names in `dir`, sorted (hidden temporary files included).
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
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

/// True (and says so on stderr) when the tests run as Windows executables without FFmpeg
/// (the Windows build under Wine: scripts/windows-test.sh); video tests then skip.
fn no_ffmpeg_on_windows() -> bool {
    let skip = cfg!(windows) && !obs_ai_background::video::ffprobe_available();
    if skip {
        eprintln!("skipped: no FFmpeg (Windows build under Wine)");
    }
    skip
}

/// A new temporary folder for a video test that makes its media with the `ffmpeg` program;
/// `None` under Wine, where there is no ffmpeg: the test then returns without checking
/// anything.
fn video_test_dir() -> Option<tempfile::TempDir> {
    (!no_ffmpeg_on_windows()).then(|| tempfile::tempdir().unwrap())
}

/// A clip made by the `ffmpeg` program for a video test: `ffmpeg <args> <path>` with `path`
/// the file `name` in a [`video_test_dir`] (kept alive by the returned handle); `None` under
/// Wine.
fn make_clip(name: &str, args: &str) -> Option<(tempfile::TempDir, PathBuf)> {
    let dir = video_test_dir()?;
    let path = dir.path().join(name);
    ffmpeg(&format!("{args} {}", s(&path)));
    Some((dir, path))
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
        ("blur", vec!["--blur", "8"], "blur.png"),
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
        check_mode_content(mode, &img, &bg);
    }
}

/// What each mode must show: the person kept (its eroded human mask within JPEG noise of the
/// input), and a background that is blurred, the image, the colour or transparent.
fn check_mode_content(mode: &str, out: &image::RgbaImage, bg: &Path) {
    let input = image::open(photo()).unwrap().to_rgba8();
    let (gt, w, h) = photo_mask();
    let person = erode(&gt, w, h, 12);
    let not_gt: Vec<bool> = gt.iter().map(|&p| !p).collect();
    let background = erode(&not_gt, w, h, 16);
    let mean_diff = |region: &[bool], other: &image::RgbaImage| {
        let (mut sum, mut n) = (0u64, 0u64);
        for (i, (p, q)) in out.pixels().zip(other.pixels()).enumerate() {
            if region[i] {
                sum += (0..3).map(|c| p[c].abs_diff(q[c]) as u64).sum::<u64>();
                n += 3;
            }
        }
        sum as f64 / n as f64
    };
    let person_diff = mean_diff(&person, &input);
    assert!(
        person_diff < 3.0,
        "{mode}: person pixels changed by {person_diff:.2}"
    );
    let background_pixels = || {
        out.pixels()
            .zip(&background)
            .filter(|(_, &b)| b)
            .map(|(p, _)| *p)
    };
    match mode {
        "blur" => {
            let before = laplacian_energy(&input, w, h, &background);
            let after = laplacian_energy(out, w, h, &background);
            assert!(
                after < 0.3 * before,
                "background detail {before:.1} -> {after:.1}"
            );
        }
        "image" => {
            // --fit contain: the background image scaled into the frame, centred; compare with
            // the image stretched to its fitted rectangle.
            let b = image::open(bg).unwrap().to_rgba8();
            let scale = (w as f64 / b.width() as f64).min(h as f64 / b.height() as f64);
            let (fw, fh) = (
                (b.width() as f64 * scale).round() as u32,
                (b.height() as f64 * scale).round() as u32,
            );
            let fitted = image::imageops::resize(&b, fw, fh, image::imageops::Triangle);
            let mut expected = image::RgbaImage::new(w as u32, h as u32);
            image::imageops::overlay(
                &mut expected,
                &fitted,
                ((w as u32 - fw) / 2) as i64,
                ((h as u32 - fh) / 2) as i64,
            );
            let inside: Vec<bool> = (0..w * h)
                .map(|i| {
                    let (x, y) = ((i % w) as u32, (i / w) as u32);
                    let (x0, y0) = ((w as u32 - fw) / 2, (h as u32 - fh) / 2);
                    background[i] && x > x0 + 2 && x + 2 < x0 + fw && y > y0 + 2 && y + 2 < y0 + fh
                })
                .collect();
            let to_image = mean_diff(&inside, &expected);
            let to_input = mean_diff(&inside, &input);
            assert!(
                to_image < 6.0 && to_input > 4.0 * to_image,
                "background vs image {to_image:.2}, vs input {to_input:.2}"
            );
        }
        "color" => {
            let exact = background_pixels()
                .filter(|p| p.0 == [0x12, 0x34, 0x56, 255])
                .count();
            assert!(exact * 100 >= background.iter().filter(|&&b| b).count() * 99);
        }
        _ => {
            assert!(
                background_pixels().all(|p| p[3] == 0),
                "background not transparent"
            );
            let opaque = out.pixels().zip(&person).filter(|(_, &b)| b);
            assert!(
                opaque.clone().all(|(p, _)| p[3] == 255),
                "person not opaque"
            );
        }
    }
}

/// A video through ffmpeg: same size and frame count out as in.
#[test]
fn apply_processes_a_video() {
    if no_ffmpeg_on_windows() {
        return;
    }
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

/// `bench --threads 1,2`: the network alone on each thread count, both medians and the
/// speed-up of each over the first, from one run; frame by frame or in blocks (`--block`).
#[test]
fn bench_threads_prints_both_counts_and_the_speed_up() {
    for (block, order) in [("1", "frame by frame"), ("2", "in blocks of 2 frames")] {
        let out = run(&[
            "bench",
            "--threads",
            "1,2",
            "--frames",
            "3",
            "--block",
            block,
            "--image",
            s(&photo()),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(order), "{text}");
        // The table over all rounds, the probe's line, then (only when some rounds had two
        // whole cores, which depends on the host) the same table over those rounds.
        let (all, quiet) = text
            .split_once("two-core probe")
            .unwrap_or_else(|| panic!("no probe line: {text}"));
        let rows = |table: &str| -> Vec<Vec<String>> {
            table
                .lines()
                .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                .filter(|w| w.len() == 3 && (w[0] == "1" || w[0] == "2"))
                .collect()
        };
        // "... before and after: N of M": the second table is there when N > 0.
        let quiet_rounds: usize = quiet
            .lines()
            .next()
            .and_then(|l| l.rsplit(": ").next())
            .and_then(|n| n.split(" of ").next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count of quiet rounds: {text}"));
        let (all, quiet) = (rows(all), rows(quiet));
        assert_eq!(all.len(), 2, "{text}");
        assert_eq!(quiet.len(), if quiet_rounds > 0 { 2 } else { 0 }, "{text}");
        for table in [&all, &quiet].into_iter().filter(|t| !t.is_empty()) {
            for row in table {
                let ms: f64 = row[1].parse().unwrap();
                assert!(ms > 0.0 && ms.is_finite(), "{text}");
                assert!(row[2].ends_with('x'), "{text}");
            }
            assert_eq!(table[0][2], "1.00x", "{text}");
        }
    }
}

// --- Bad input -------------------------------------------------------------------------------

#[test]
fn missing_image_is_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "segment",
        "/nonexistent/photo.jpg",
        "-o",
        s(&dir.path().join("x.png")),
    ]);
    assert_one_error_line(&out, "cannot read image /nonexistent/photo.jpg");
    assert!(listing(dir.path()).is_empty());
}

/// An output in a folder that does not exist: "cannot write", before any work.
#[test]
fn unwritable_output_is_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-folder");
    for (input, name) in [(photo(), "o.png"), (clip(), "o.mp4")] {
        if name == "o.mp4" && no_ffmpeg_on_windows() {
            continue;
        }
        let output = missing.join(name);
        let out = run(&["apply", s(&input), "-o", s(&output), "--mode", "color"]);
        assert_one_error_line(
            &out,
            &format!(
                "cannot write {}: the folder {} does not exist",
                output.display(),
                missing.display()
            ),
        );
    }
    let odd = dir.path().join("o.xyz");
    let out = run(&["apply", s(&photo()), "-o", s(&odd)]);
    assert_one_error_line(&out, "unknown image extension");
    assert!(listing(dir.path()).is_empty());
}

/// A JPEG cut after its header or at half its size, and a PNG cut at half: one error line
/// naming the file, no output (today's decoders fill the missing half of a JPEG with grey).
#[test]
fn corrupt_image_is_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let jpeg = std::fs::read(photo()).unwrap();
    let mut png = Vec::new();
    image::open(photo())
        .unwrap()
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    for (name, bytes) in [
        ("header.jpg", &jpeg[..300]),
        ("half.jpg", &jpeg[..jpeg.len() / 2]),
        ("half.png", &png[..png.len() / 2]),
    ] {
        let bad = dir.path().join(name);
        std::fs::write(&bad, bytes).unwrap();
        let output = dir.path().join("o.png");
        for command in ["apply", "segment"] {
            let out = run(&[command, s(&bad), "-o", s(&output)]);
            assert_one_error_line(&out, &format!("cannot read image {}", bad.display()));
            assert!(!output.exists(), "{name}: {command} wrote an output");
        }
    }
}

/// The format comes from the content: a PNG named `.jpg` reads.
#[test]
fn image_format_is_guessed_from_content() {
    let dir = tempfile::tempdir().unwrap();
    let disguised = dir.path().join("really-a-png.jpg");
    image::open(photo())
        .unwrap()
        .save_with_format(&disguised, image::ImageFormat::Png)
        .unwrap();
    let mask = dir.path().join("mask.png");
    let out = run(&["segment", s(&disguised), "-o", s(&mask)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        image::image_dimensions(&mask).unwrap(),
        image::image_dimensions(photo()).unwrap()
    );
}

/// `photo` stored sideways (pixels turned 90 degrees anticlockwise) with EXIF orientation 6
/// ("turn 90 degrees clockwise to display"), as phones write portrait photos.
fn sideways_jpeg(path: &Path) {
    let upright = image::open(photo()).unwrap().to_rgb8();
    let stored = image::imageops::rotate270(&upright);
    let mut jpeg = Vec::new();
    stored
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    // APP1 "Exif": big-endian TIFF header, one IFD entry: 0x0112 Orientation, SHORT, 1, 6.
    let mut tiff = b"MM\0\x2a\0\0\0\x08\0\x01".to_vec();
    tiff.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0]);
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let len = (app1.len() + 2) as u16;
    let mut out = jpeg[..2].to_vec(); // SOI
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    std::fs::write(path, out).unwrap();
}

/// A phone photo stored sideways is segmented upright: the mask has the displayed size and
/// matches the human mask of the upright photo (IoU >= 0.9); blur, image and eval see it
/// upright too.
#[test]
fn exif_orientation_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let sideways = dir.path().join("sideways.jpg");
    sideways_jpeg(&sideways);
    let (gt, w, h) = photo_mask();
    let mask = dir.path().join("mask.png");
    let out = run(&[
        "segment",
        s(&sideways),
        "-o",
        s(&mask),
        "--threshold",
        "0.5",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let m = image::open(&mask).unwrap().to_luma8();
    assert_eq!(m.dimensions(), (w as u32, h as u32));
    let pred: Vec<bool> = m.pixels().map(|p| p[0] >= 128).collect();
    let score = iou(&pred, &gt);
    assert!(
        score >= 0.9,
        "IoU {score:.3} against the upright human mask"
    );
    let blurred = dir.path().join("blur.png");
    let out = run(&["apply", s(&sideways), "-o", s(&blurred)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        image::image_dimensions(&blurred).unwrap(),
        (w as u32, h as u32)
    );
    let (images, masks) = dataset_dirs(dir.path());
    std::fs::copy(&sideways, images.join("a.jpg")).unwrap();
    std::fs::copy(
        repo("tests/fixtures/photos/ccp-webcam-dev-0286.mask.png"),
        masks.join("a.png"),
    )
    .unwrap();
    let out = run(&[
        "eval",
        "--images",
        s(&images),
        "--masks",
        s(&masks),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["mean_iou"].as_f64().unwrap() >= 0.9, "{v}");
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
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "segment",
        s(&photo()),
        "-o",
        s(&dir.path().join("x.png")),
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
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "apply",
        s(&photo()),
        "-o",
        s(&dir.path().join("o.jpg")),
        "--mode",
        "transparent",
    ]);
    assert_one_error_line(&out, "cannot hold transparency");
    if no_ffmpeg_on_windows() {
        return;
    }
    let out = run(&[
        "apply",
        s(&clip()),
        "-o",
        s(&dir.path().join("o.mp4")),
        "--mode",
        "transparent",
    ]);
    assert_one_error_line(&out, "cannot hold transparency");
    assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));
}

#[test]
fn unreadable_weights_are_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "segment",
        s(&photo()),
        "-o",
        s(&dir.path().join("x.png")),
        "--weights",
        s(&photo()),
    ]);
    assert_one_error_line(&out, "cannot load weights from");
}

/// `eval-video` on a real clip: every frame counted, the smoothed mask flickers less than the
/// raw model's in the still area, and both rates are shares (0..1).
#[test]
fn eval_video_prints_json_with_raw_comparison() {
    if no_ffmpeg_on_windows() {
        return;
    }
    let clip = repo("tests/fixtures/clips/streamer-desk-360p-2s.mp4");
    let out = run(&["eval-video", s(&clip), "--raw", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (smooth, raw) = (&v["smoothed"], &v["raw"]);
    assert_eq!(smooth["frames"], 60, "{v}");
    assert_eq!(raw["frames"], 60, "{v}");
    let f = |o: &serde_json::Value, k: &str| o[k].as_f64().unwrap();
    assert!(
        f(raw, "flicker_rate") > 0.0 && f(raw, "flicker_rate") < 0.05,
        "{v}"
    );
    assert!(
        f(smooth, "still_flicker_rate") < f(raw, "still_flicker_rate"),
        "{v}"
    );
    // A locked-off camera: most of the picture is still.
    assert!(f(smooth, "still_share") > 0.5, "{v}");
    let worst = v["worst_iou_vs_raw"].as_f64().unwrap();
    assert!(worst > 0.9 && worst <= 1.0, "{v}");
    assert!(smooth["mean_iou"].is_null(), "{v}");
}

/// A keyed mask folder must hold one mask per frame.
#[test]
fn eval_video_key_count_mismatch_is_one_error_line() {
    if no_ffmpeg_on_windows() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    image::GrayImage::from_pixel(640, 360, image::Luma([255]))
        .save(dir.path().join("0001.png"))
        .unwrap();
    let clip = repo("tests/fixtures/clips/thumbs-up-360p-2s.mp4");
    let out = run(&["eval-video", s(&clip), "--key", s(dir.path())]);
    assert_one_error_line(&out, "holds 1 masks (.png) but the clip has 50 frames");
}

/// The embedded landscape weights with one value of the first float16 tensor (by name) set to
/// `bits` (0x7E00 NaN, 0x7C00 +infinity).
fn weights_with(bits: u16) -> Vec<u8> {
    let mut bytes = obs_ai_background::model::Preset::Landscape
        .embedded_weights()
        .to_vec();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let (name, t) = header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, t)| t["dtype"] == "F16")
        .min_by_key(|(name, _)| name.as_str())
        .expect("a float16 tensor");
    let start = 8 + header_len + t["data_offsets"][0].as_u64().unwrap() as usize;
    assert!(!name.is_empty());
    bytes[start..start + 2].copy_from_slice(&bits.to_le_bytes());
    bytes
}

/// Weights holding NaN or infinity are refused at load (the CLI and the filter share the
/// loader) instead of producing an all-NaN probability.
#[test]
fn non_finite_weights_are_refused() {
    use obs_ai_background::model::{Preset, Segmenter};
    let dir = tempfile::tempdir().unwrap();
    for (bits, what) in [(0x7E00u16, "nan"), (0x7C00, "inf")] {
        let bytes = weights_with(bits);
        let err = Segmenter::from_bytes(&bytes, Preset::Landscape, &candle_core::Device::Cpu, what)
            .unwrap_err()
            .to_string();
        assert!(err.contains("NaN or infinite"), "{err}");
        let path = dir.path().join(format!("{what}.safetensors"));
        std::fs::write(&path, &bytes).unwrap();
        let output = dir.path().join("x.png");
        let out = run(&[
            "segment",
            s(&photo()),
            "-o",
            s(&output),
            "--weights",
            s(&path),
        ]);
        assert_one_error_line(&out, "NaN or infinite");
        assert!(!output.exists());
    }
}

/// Every numeric option is checked as it is parsed, with the filter's ranges; NaN and
/// infinities are refused by name. Exit status 2 (clap's), nothing written.
#[test]
fn numeric_options_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("o.png");
    let input = photo();
    let apply = |extra: &[&str]| {
        let mut args = vec!["apply", s(&input), "-o", s(&output)];
        args.extend_from_slice(extra);
        run(&args)
    };
    for (args, needle) in [
        (
            vec!["--threshold", "NaN"],
            "NaN is not a number from 0 to 1",
        ),
        (vec!["--threshold", "1.5"], "1.5 is outside 0 to 1"),
        (vec!["--feather", "inf"], "inf is not a number"),
        (vec!["--feather", "-0.1"], "-0.1 is outside 0 to 1"),
        (vec!["--smoothing", "2"], "outside 0 to 1"),
        (vec!["--blur", "1e9"], "outside 0 to 100"),
        (vec!["--blur=-inf"], "-inf is not a number"),
        (vec!["--refine-eps", "0"], "outside 0.000001 to 1"),
        (vec!["--refine-eps", "NaN"], "NaN is not a number"),
        (vec!["--refine-radius", "1000"], "from 0 to 64"),
        (vec!["--threshold", "abc"], "expected a number"),
    ] {
        let out = apply(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("error: invalid value"), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: '{needle}' not in {err}");
        assert!(!output.exists());
    }
    for args in [
        vec![
            "segment",
            s(&photo()),
            "-o",
            s(&output),
            "--threshold",
            "NaN",
        ],
        vec!["eval", "--images", "x", "--masks", "y", "--threshold", "-1"],
        vec!["bench", "--frames", "0"],
        vec!["bench", "--threads", "3"],
        vec!["bench", "--threads", "1,2", "--block", "0"],
        vec!["bench", "--size", "100000x10"],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).starts_with("error: invalid value"), "{args:?}");
    }
}

// --- Files are never lost --------------------------------------------------------------------

/// An output that is the input, under any spelling, is refused before anything is written.
// Unix only: symlinks, and hard links told apart by device and inode.
#[cfg(unix)]
#[test]
fn output_that_is_an_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let jpg = d.join("in.jpg");
    let mp4 = d.join("in.mp4");
    std::fs::copy(photo(), &jpg).unwrap();
    std::fs::copy(clip(), &mp4).unwrap();
    std::os::unix::fs::symlink(&jpg, d.join("link.jpg")).unwrap();
    std::fs::hard_link(&jpg, d.join("hard.jpg")).unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    let before = listing(d);
    let run_in = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .current_dir(d)
            .output()
            .unwrap()
    };
    let abs_mp4 = s(&mp4).to_string();
    let abs_jpg = s(&jpg).to_string();
    for args in [
        vec!["apply", "in.jpg", "-o", "in.jpg"],
        vec!["apply", "in.jpg", "-o", "./sub/../in.jpg"],
        vec!["apply", "in.jpg", "-o", &abs_jpg],
        vec!["apply", "in.jpg", "-o", "link.jpg"],
        vec!["apply", "link.jpg", "-o", "hard.jpg"],
        vec!["segment", "in.jpg", "-o", "hard.jpg"],
        vec!["apply", "in.mp4", "-o", &abs_mp4, "--mode", "color"],
        // The background image as the output.
        vec![
            "apply", "in.mp4", "-o", "in.jpg", "--mode", "image", "--image", "link.jpg",
        ],
    ] {
        let out = run_in(&args);
        assert_one_error_line(&out, "it is the same file as the input");
        assert_eq!(listing(d), before, "{args:?}");
        assert_eq!(
            std::fs::read(&jpg).unwrap(),
            std::fs::read(photo()).unwrap()
        );
        assert_eq!(std::fs::read(&mp4).unwrap(), std::fs::read(clip()).unwrap());
    }
}

/// A folder with a fake `ffmpeg` whose encoder writes a few bytes to its output, says why it
/// fails and exits 1 (a full disk, a codec error); decoding and `ffprobe` are the real ones.
// Unix only: the fake ffmpeg is a shell script.
#[cfg(unix)]
fn failing_encoder_path(dir: &Path) -> String {
    let real = |p: &str| {
        let out = Command::new("sh")
            .args(["-c", &format!("command -v {p}")])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let script = format!(
        "#!/bin/sh\nfor a; do last=$a; done\ncase \" $* \" in *\" -i - \"*)\n  printf partial > \"$last\"\n  echo '[libx264 @ 0x55d1c0ffee00] simulated failure: No space left on device' >&2\n  exit 1;;\nesac\nexec {} \"$@\"\n",
        real("ffmpeg")
    );
    let ffmpeg = bin.join("ffmpeg");
    std::fs::write(&ffmpeg, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ffmpeg, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(real("ffprobe"), bin.join("ffprobe")).unwrap();
    s(&bin).to_string()
}

/// A failed encode reports ffmpeg's own error line (not "Broken pipe"), leaves the existing
/// output as it was and no temporary file.
// Unix only: the fake ffmpeg is a shell script.
#[cfg(unix)]
#[test]
fn failed_encode_leaves_the_existing_output() {
    let dir = tempfile::tempdir().unwrap();
    let path = failing_encoder_path(dir.path());
    let output = dir.path().join("out.mp4");
    std::fs::write(&output, b"the user's earlier video").unwrap();
    let before = listing(dir.path());
    let out = Command::new(BIN)
        .args(["apply", s(&clip()), "-o", s(&output), "--mode", "color"])
        .env("PATH", path)
        .output()
        .unwrap();
    assert_one_error_line(
        &out,
        &format!(
            "cannot write {}: [libx264] simulated failure: No space left on device",
            output.display()
        ),
    );
    assert_eq!(std::fs::read(&output).unwrap(), b"the user's earlier video");
    assert_eq!(listing(dir.path()), before);
}

/// Process ids of the running children of `pid` (from `/proc/*/stat`).
// Unix only: reads /proc.
#[cfg(unix)]
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|st| {
                    let rest = &st[st.rfind(')')? + 2..];
                    let mut f = rest.split(' ');
                    let state = f.next()?;
                    let ppid: u32 = f.next()?.parse().ok()?;
                    Some(ppid == pid && state != "Z")
                })
                .unwrap_or(false)
        })
        .collect()
}

/// Whether process `pid` still runs (a zombie counts as ended).
// Unix only: reads /proc.
#[cfg(unix)]
fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|st| st[st.rfind(')')? + 2..].split(' ').next().map(|s| s != "Z"))
        .unwrap_or(false)
}

/// SIGINT or SIGTERM during a video: exit status 128 + signal with one error line, no partial
/// file, an existing output untouched, and both ffmpeg processes ended.
// Unix only: Unix signals, and /proc for the ffmpeg children.
#[cfg(unix)]
#[test]
fn interrupted_apply_leaves_no_partial_file() {
    // 8 s: long enough that the signal lands mid-way.
    let (dir, long) = make_clip(
        "long.mp4",
        &format!("-stream_loop 3 -i {} -c copy", s(&clip())),
    )
    .expect("ffmpeg on Unix");
    for (signal, code, existing) in [("INT", 130, false), ("TERM", 143, true)] {
        let work = tempfile::tempdir_in(dir.path()).unwrap();
        let output = work.path().join("out.mp4");
        if existing {
            std::fs::write(&output, b"the user's earlier video").unwrap();
        }
        let before = listing(work.path());
        let mut child = Command::new(BIN)
            .args(["apply", s(&long), "-o", s(&output), "--mode", "color"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the encoder has written something (to a new file, or over the existing
        // one) and both ffmpeg run.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let ffmpegs = loop {
            let writing_started = std::fs::read_dir(work.path()).unwrap().any(|e| {
                let e = e.unwrap();
                let len = e.metadata().unwrap().len();
                let name = e.file_name().to_string_lossy().into_owned();
                (!before.contains(&name) && len > 0)
                    || (before.contains(&name)
                        && std::fs::read(e.path()).unwrap() != b"the user's earlier video")
            });
            let kids = children_of(child.id());
            if writing_started && kids.len() == 2 {
                break kids;
            }
            assert!(child.try_wait().unwrap().is_none(), "apply ended early");
            assert!(
                std::time::Instant::now() < deadline,
                "encoding never started"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let kill = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "SIG{signal}: {}",
            stderr(&out)
        );
        assert_one_error_line_with_code(&out, code, &format!("stopped by SIG{signal}"));
        assert_eq!(listing(work.path()), before, "SIG{signal}");
        if existing {
            assert_eq!(std::fs::read(&output).unwrap(), b"the user's earlier video");
        }
        for pid in ffmpegs {
            assert!(
                !is_running(pid),
                "ffmpeg {pid} still runs after SIG{signal}"
            );
        }
    }
}

// Unix only: used by the signal test.
#[cfg(unix)]
fn assert_one_error_line_with_code(out: &Output, code: i32, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(needle),
        "{err}"
    );
}

// --- Video as people have it ------------------------------------------------------------------

/// A clip whose display matrix turns it by 90 degrees comes out upright at the displayed
/// size: with `--blur 0` the output frame is the picture as displayed, not the stored one.
#[test]
fn rotated_video_comes_out_upright() {
    let Some(dir) = video_test_dir() else {
        return;
    };
    let upright = image::open(photo()).unwrap().to_rgba8();
    // Even sizes, so H.264 keeps them exact.
    let upright = image::imageops::crop_imm(&upright, 0, 0, 320, 180).to_image();
    let frame = dir.path().join("frame.png");
    // Stored turned 90 degrees clockwise. ffmpeg 5.1 writes the tag `rotate=90` as a display
    // matrix that turns the picture 90 degrees anticlockwise (ffprobe: "rotation": 90), back
    // upright.
    image::imageops::rotate90(&upright).save(&frame).unwrap();
    let stored = dir.path().join("stored.mp4");
    ffmpeg(&format!(
        "-loop 1 -i {} -t 0.3 -r 10 -c:v libx264 -crf 10 -pix_fmt yuv420p {}",
        s(&frame),
        s(&stored)
    ));
    let rotated = dir.path().join("rotated.mp4");
    ffmpeg(&format!(
        "-i {} -c copy -metadata:s:v rotate=90 {}",
        s(&stored),
        s(&rotated)
    ));
    let output = dir.path().join("out.mp4");
    let out = run(&["apply", s(&rotated), "-o", s(&output), "--blur", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let info = obs_ai_background::video::probe(&rotated).unwrap();
    assert_eq!((info.width, info.height, info.rotation), (320, 180, 270));
    let info = obs_ai_background::video::probe(&output).unwrap();
    assert_eq!((info.width, info.height, info.rotation), (320, 180, 0));
    let got = first_frame(&output);
    let upright_diff = mean_abs_diff(&got, &upright);
    let other_way = image::imageops::rotate180(&upright);
    assert!(
        upright_diff < 4.0 && mean_abs_diff(&got, &other_way) > 4.0 * upright_diff,
        "output frame differs from the upright input by {upright_diff:.2}"
    );
}

/// A variable-frame-rate clip with audio (1 s at 30 fps, then 10 fps) keeps its duration
/// within one output frame, and its audio; the frames are resampled to the average rate.
#[test]
fn variable_frame_rate_keeps_duration_and_audio() {
    let Some((dir, vfr)) = make_clip(
        "vfr.mp4",
        "-f lavfi -i testsrc2=size=160x90:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
         -t 2.9 -vf setpts='if(lt(N,30),N/30,1+(N-30)/10)/TB' -fps_mode vfr -c:v libx264 \
         -pix_fmt yuv420p -c:a aac",
    ) else {
        return;
    };
    let output = dir.path().join("out.mp4");
    let out = run(&["apply", s(&vfr), "-o", s(&output), "--mode", "color"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let info = obs_ai_background::video::probe(&vfr).unwrap();
    let rate = {
        let (n, d) = info.frame_rate.split_once('/').unwrap();
        n.parse::<f64>().unwrap() / d.parse::<f64>().unwrap()
    };
    let (v_in, a_in, d_in) = durations(&vfr);
    let (v_out, a_out, d_out) = durations(&output);
    let frame = 1.0 / rate;
    assert!(
        (d_out - d_in).abs() <= frame,
        "duration {d_in:.3} s -> {d_out:.3} s (frame {frame:.3} s)"
    );
    assert!(v_in.is_some() && v_out.is_some());
    // The last frame shows at the same time (the stream durations differ: the input's last
    // frame has the muxer's guessed length).
    let (last_in, last_out) = (last_frame_time(&vfr), last_frame_time(&output));
    assert!(
        (last_out - last_in).abs() <= frame,
        "last frame at {last_in:.3} s -> {last_out:.3} s"
    );
    let (a_in, a_out) = (a_in.unwrap(), a_out.unwrap());
    assert!(
        (a_out - a_in).abs() <= 0.05,
        "audio {a_in:.3} -> {a_out:.3}"
    );
}

/// Audio shorter or longer than the video is kept as it is (no `-shortest` cut).
#[test]
fn audio_of_another_length_is_kept() {
    let Some(dir) = video_test_dir() else {
        return;
    };
    for (video_s, audio_s) in [("2", "1"), ("1", "2")] {
        let input = dir.path().join(format!("v{video_s}a{audio_s}.mkv"));
        ffmpeg(&format!(
            "-f lavfi -i testsrc2=size=160x90:rate=10:duration={video_s} -f lavfi \
         -i sine=sample_rate=48000:duration={audio_s} -c:v libx264 -pix_fmt yuv420p -c:a aac {}",
            s(&input)
        ));
        let output = dir.path().join(format!("out{video_s}{audio_s}.mp4"));
        let out = run(&["apply", s(&input), "-o", s(&output), "--mode", "color"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let (v, a, _) = durations(&output);
        let (v, a) = (v.unwrap(), a.unwrap());
        let (ve, ae): (f64, f64) = (video_s.parse().unwrap(), audio_s.parse().unwrap());
        assert!((v - ve).abs() <= 0.1, "video {v:.3} s, expected {ve}");
        assert!((a - ae).abs() <= 0.1, "audio {a:.3} s, expected {ae}");
    }
}

/// 641x479 to .mp4 (H.264 4:2:0 needs even sizes): padded to 642x480 with the last
/// column/row repeated, logged; the picture itself is the input's.
#[test]
fn odd_frame_size_encodes() {
    let Some((dir, odd)) = make_clip(
        "odd.mkv",
        "-f lavfi -i testsrc2=size=640x480:rate=10 -t 0.5 -vf scale=641:479 -c:v ffv1",
    ) else {
        return;
    };
    let output = dir.path().join("out.mp4");
    let out = run(&["apply", s(&odd), "-o", s(&output), "--blur", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("padded to 642x480"),
        "{}",
        stderr(&out)
    );
    let info = obs_ai_background::video::probe(&output).unwrap();
    assert_eq!((info.width, info.height, info.frames), (642, 480, Some(5)));
    let got = first_frame(&output);
    let want = first_frame(&odd);
    let got = image::imageops::crop_imm(&got, 0, 0, 641, 479).to_image();
    let diff = mean_abs_diff(&got, &want);
    assert!(diff < 4.0, "picture differs by {diff:.2}");
}

/// A clip with a damaged stretch, and a download cut at half its size: the run completes and
/// reports how many frames could not be decoded, with ffmpeg's first error line.
#[test]
fn damaged_video_reports_undecodable_frames() {
    let Some((dir, clean)) = make_clip(
        "clean.mp4",
        "-f lavfi -i testsrc2=size=160x120:rate=30 -t 2 -c:v libx264 -g 10 -pix_fmt yuv420p \
         -movflags +faststart",
    ) else {
        return;
    };
    let bytes = std::fs::read(&clean).unwrap();
    let mut damaged = bytes.clone();
    // 3000 pseudo-random bytes (a fixed LCG) a third of the way in.
    let mut x = 12345u32;
    let start = bytes.len() / 3;
    for b in &mut damaged[start..start + 3000] {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *b = (x >> 16) as u8;
    }
    let cut = bytes[..bytes.len() / 2].to_vec();
    for (name, content) in [("damaged.mp4", damaged), ("cut.mp4", cut)] {
        let input = dir.path().join(name);
        std::fs::write(&input, content).unwrap();
        let output = dir.path().join(format!("out-{name}"));
        let out = run(&["apply", s(&input), "-o", s(&output), "--mode", "color"]);
        let err = stderr(&out);
        assert!(out.status.success(), "{name}: {err}");
        let warning = err
            .lines()
            .find(|l| l.starts_with("warning: ") && l.contains("of 60 frames could not be decoded"))
            .unwrap_or_else(|| panic!("{name}: no warning in: {err}"));
        let count: u64 = warning
            .split(": ")
            .nth(2)
            .and_then(|t| t.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count in {warning}"));
        assert!((1..60).contains(&count), "{warning}");
        assert!(warning.contains("(ffmpeg: ["), "{warning}");
        let written = obs_ai_background::video::probe(&output)
            .unwrap()
            .stored_frames;
        assert!(warning.ends_with(&format!("the output has {} frames", written.unwrap())));
    }
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
