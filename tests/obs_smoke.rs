//! Smoke test of the installed plugin in the real OBS Studio front-end (`obs`), headless.
//!
//! A throw-away `HOME` gets an OBS configuration that skips the first-run wizard and the exit
//! prompt (`global.ini`), a profile recording 540x360 MKV with x264 (`basic.ini`), a scene
//! collection whose only source is the webcam clip (`ffmpeg_source`) with the "AI Background"
//! filter in blur mode, and the freshly built module installed as a user plugin
//! (`.config/obs-studio/plugins/obs-ai-background/{bin/64bit,data}`), exactly as
//! `scripts/install.sh` lays it out. OBS starts recording at launch and the output-timer
//! module stops it after 5 s. The recording is decoded with ffmpeg, and a frame must show the
//! person sharp on a blurred background, compared with the same frame of the clip (the clip
//! loops, so the clip frame whose person pixels are closest to the recorded ones): the
//! person's pixels must be that frame's (mean difference at most [`MAX_PERSON_DIFF`] levels,
//! the x264 encode's loss) and keep most of their detail, while background detail
//! (Laplacian energy where the engine finds no person) must drop to half or less.
//!
//! Run: `xvfb-run -a -s "-screen 0 1280x720x24" cargo test --test obs_smoke`
//! (needs `obs`, `ffmpeg`: `scripts/deps.sh`).

use obs_ai_background::device::DeviceChoice;
use obs_ai_background::frame::{FrameRef, PixelFormat};
use obs_ai_background::metrics::{erode, laplacian_energy, mean_abs_rgb_diff};
use obs_ai_background::model::{shared_segmenter, Preset, SegmentationBackend};
use obs_ai_background::pipeline::{MaskPipeline, PipelineSettings};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

const WIDTH: u32 = 540;
const HEIGHT: u32 = 360;
const CLIP: &str = "tests/fixtures/obs/webcam-livingroom-2s5.mp4";
const RECORD_SECONDS: u32 = 5;
/// Largest mean difference (0..255 levels) between the recorded person pixels and the same
/// frame of the clip: what the x264 encode at 2500 kb/s and OBS's scaler change.
const MAX_PERSON_DIFF: f64 = 6.0;

/// The scene: the webcam clip (`ffmpeg_source`) with the filter in blur mode; OBS starts
/// recording at launch and the output-timer module stops it after `RECORD_SECONDS`.
fn config(repo: &Path) -> common::Config {
    let webcam = json!({
        "id": "ffmpeg_source", "versioned_id": "ffmpeg_source", "name": "Webcam", "enabled": true,
        "settings": { "is_local_file": true, "local_file": repo.join(CLIP), "looping": true },
        "filters": [{
            "id": common::FILTER_ID, "versioned_id": common::FILTER_ID,
            "name": "AI Background", "enabled": true,
            "settings": { "mode": "blur", "blur_strength": 12.0 }
        }]
    });
    let modules = json!({
        "output-timer": {
            "autoStartRecordTimer": true, "recordTimerHours": 0, "recordTimerMinutes": 0,
            "recordTimerSeconds": RECORD_SECONDS, "autoStartStreamTimer": false,
            "streamTimerHours": 0, "streamTimerMinutes": 0, "streamTimerSeconds": 30,
            "pauseRecordTimer": true
        }
    });
    common::Config {
        size: (WIDTH, HEIGHT),
        collection: common::collection((WIDTH, HEIGHT), vec![webcam], modules),
        global_extra: String::new(),
        with_plugin: true,
    }
}

fn decode_frame(video: &Path, at_seconds: f64, out: &Path) -> Result<image::RgbaImage, String> {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-ss", &format!("{at_seconds}"), "-i"])
        .arg(video)
        .args(["-frames:v", "1", "-vf", &format!("scale={WIDTH}:{HEIGHT}")])
        .arg(out)
        .status()
        .map_err(|e| format!("cannot run ffmpeg: {e}"))?;
    if !status.success() {
        return Err(format!("ffmpeg could not decode {}", video.display()));
    }
    Ok(image::open(out).map_err(|e| e.to_string())?.to_rgba8())
}

/// Every frame of `video` scaled to the canvas size.
fn decode_all(video: &Path) -> Result<Vec<image::RgbaImage>, String> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(video)
        .args(["-vf", &format!("scale={WIDTH}:{HEIGHT}")])
        .args(["-f", "rawvideo", "-pix_fmt", "rgba", "-"])
        .output()
        .map_err(|e| format!("cannot run ffmpeg: {e}"))?;
    if !out.status.success() {
        return Err(format!("ffmpeg could not decode {}", video.display()));
    }
    let size = (WIDTH * HEIGHT * 4) as usize;
    Ok(out
        .stdout
        .chunks_exact(size)
        .filter_map(|f| image::RgbaImage::from_raw(WIDTH, HEIGHT, f.to_vec()))
        .collect())
}

fn run() -> Result<String, String> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let home = tempfile::tempdir().map_err(|e| e.to_string())?;
    let rec_dir = common::prepare_home(&repo, home.path(), &config(&repo));
    let mut obs = common::Frontend::start(home.path(), &["--startrecording"])?;
    let start = Instant::now();
    let mut stopped = false;
    while start.elapsed() < Duration::from_secs(90) && obs.running() {
        if obs.log().contains("Recording Stop") {
            stopped = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    obs.stop();
    let log = obs.log();
    let tail = |n: usize| obs.log_tail(n);
    if !stopped {
        return Err(format!(
            "OBS did not finish a recording within 90 s; log tail:\n{}",
            tail(40)
        ));
    }
    for needle in ["[obs-ai-background] version", "segmenter ready"] {
        if !log.contains(needle) {
            return Err(format!(
                "'{needle}' missing from the OBS log; tail:\n{}",
                tail(40)
            ));
        }
    }
    if log.contains("[obs-ai-background] panic") {
        return Err("a panic was caught in the filter".into());
    }
    let recording = std::fs::read_dir(&rec_dir)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "mkv"))
        .ok_or("no recording file")?;

    // A frame late in the recording (the filter's mask exists by then), and the clip's frames.
    let frame = decode_frame(
        &recording,
        f64::from(RECORD_SECONDS) - 1.5,
        &home.path().join("frame.png"),
    )?;
    let clip = decode_all(&repo.join(CLIP))?;
    let (w, h) = (WIDTH as usize, HEIGHT as usize);

    // Where the person is in the recorded frame, found by the engine on the CPU.
    let segmenter =
        shared_segmenter(Preset::Landscape, DeviceChoice::Cpu).map_err(|e| e.to_string())?;
    let backend: Arc<dyn SegmentationBackend> = segmenter;
    let mut pipeline = MaskPipeline::new(backend);
    let f = FrameRef::packed(frame.as_raw(), w, h, PixelFormat::Rgba).map_err(|e| e.to_string())?;
    let settings = PipelineSettings {
        smoothing: 0.0,
        ..Default::default()
    };
    let mask = pipeline.process(&f, &settings).map_err(|e| e.to_string())?;
    let person = erode(
        &mask.data.iter().map(|&p| p > 0.9).collect::<Vec<_>>(),
        w,
        h,
        6,
    );
    let background = erode(
        &mask.data.iter().map(|&p| p < 0.1).collect::<Vec<_>>(),
        w,
        h,
        10,
    );
    let share = person.iter().filter(|&&v| v).count() as f64 / (w * h) as f64;
    if !(0.03..0.8).contains(&share) {
        return Err(format!(
            "no person found in the recording (share {share:.2})"
        ));
    }
    // The same frame of the clip: the filter leaves the person's pixels as they are.
    let (index, person_diff) = clip
        .iter()
        .map(|f| mean_abs_rgb_diff(f.as_raw(), frame.as_raw(), &person))
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .ok_or("the clip has no frames")?;
    let reference = &clip[index];
    let detail = |img: &image::RgbaImage, region: &[bool]| laplacian_energy(img, w, h, region);
    let bg_ratio = detail(&frame, &background) / detail(reference, &background);
    let person_ratio = detail(&frame, &person) / detail(reference, &person);
    if person_diff > MAX_PERSON_DIFF || bg_ratio > 0.5 || person_ratio < 0.5 {
        return Err(format!(
            "recorded frame against clip frame {index}: person differs by {person_diff:.2} levels \
             (want <= {MAX_PERSON_DIFF}), background detail x{bg_ratio:.2} (want <= 0.5), \
             person detail x{person_ratio:.2} (want >= 0.5)"
        ));
    }
    Ok(format!(
        "OBS recorded {} ({} KB); frame at {:.1} s = clip frame {index} (person differs by {person_diff:.2} levels): background detail x{bg_ratio:.3}, person detail x{person_ratio:.2}, person {:.0}% of frame",
        recording.file_name().unwrap_or_default().to_string_lossy(),
        std::fs::metadata(&recording).map(|m| m.len() / 1024).unwrap_or(0),
        f64::from(RECORD_SECONDS) - 1.5,
        share * 100.0
    ))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("obs_smoke: test");
        return;
    }
    match run() {
        Ok(summary) => println!("ok   obs_smoke: {summary}"),
        Err(e) => {
            println!("FAIL obs_smoke: {e}");
            std::process::exit(1);
        }
    }
}
