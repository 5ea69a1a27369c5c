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
use obs_ai_background::metrics::{erode, laplacian_energy};
use obs_ai_background::model::{shared_segmenter, Preset, SegmentationBackend};
use obs_ai_background::obs::host;
use obs_ai_background::pipeline::{MaskPipeline, PipelineSettings};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WIDTH: u32 = 540;
const HEIGHT: u32 = 360;
const CLIP: &str = "tests/fixtures/obs/webcam-livingroom-2s5.mp4";
const RECORD_SECONDS: u32 = 5;
/// Largest mean difference (0..255 levels) between the recorded person pixels and the same
/// frame of the clip: what the x264 encode at 2500 kb/s and OBS's scaler change.
const MAX_PERSON_DIFF: f64 = 6.0;
/// libobs 29.0.2 as `global.ini` stores the last run version (skips the "what's new" dialog).
const LAST_VERSION: u32 = (29 << 24) | 2;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write config");
}

fn prepare_home(repo: &Path, home: &Path) -> PathBuf {
    let cfg = home.join(".config/obs-studio");
    let rec = home.join("recordings");
    std::fs::create_dir_all(&rec).expect("mkdir recordings");
    write(
        &cfg.join("global.ini"),
        &format!(
            "[General]\nFirstRun=true\nLastVersion={LAST_VERSION}\nConfirmOnExit=false\n\n\
             [Basic]\nProfile=Smoke\nProfileDir=Smoke\nSceneCollection=Smoke\nSceneCollectionFile=Smoke\n"
        ),
    );
    write(
        &cfg.join("basic/profiles/Smoke/basic.ini"),
        &format!(
            "[General]\nName=Smoke\n\n[Output]\nMode=Simple\n\n[SimpleOutput]\nFilePath={}\n\
             RecFormat=mkv\nRecEncoder=x264\nRecQuality=Stream\nVBitrate=2500\nPreset=ultrafast\n\n\
             [Video]\nBaseCX={WIDTH}\nBaseCY={HEIGHT}\nOutputCX={WIDTH}\nOutputCY={HEIGHT}\n\
             FPSType=0\nFPSCommon=30\n\n[Audio]\nSampleRate=48000\nChannelSetup=Stereo\n",
            rec.display()
        ),
    );
    let collection = json!({
        "name": "Smoke",
        "current_scene": "Scene",
        "current_program_scene": "Scene",
        "scene_order": [{ "name": "Scene" }],
        "sources": [
            {
                "id": "scene", "versioned_id": "scene", "name": "Scene", "enabled": true,
                "settings": {
                    "id_counter": 1,
                    "items": [{
                        "name": "Webcam", "id": 1, "visible": true, "locked": false,
                        "pos": { "x": 0.0, "y": 0.0 }, "rot": 0.0, "scale": { "x": 1.0, "y": 1.0 },
                        "align": 5, "bounds_type": 2, "bounds_align": 0,
                        "bounds": { "x": WIDTH as f64, "y": HEIGHT as f64 }
                    }]
                }
            },
            {
                "id": "ffmpeg_source", "versioned_id": "ffmpeg_source", "name": "Webcam", "enabled": true,
                "settings": { "is_local_file": true, "local_file": repo.join(CLIP), "looping": true },
                "filters": [{
                    "id": "ai_background_filter", "versioned_id": "ai_background_filter",
                    "name": "AI Background", "enabled": true,
                    "settings": { "mode": "blur", "blur_strength": 12.0 }
                }]
            }
        ],
        "modules": {
            "output-timer": {
                "autoStartRecordTimer": true, "recordTimerHours": 0, "recordTimerMinutes": 0,
                "recordTimerSeconds": RECORD_SECONDS, "autoStartStreamTimer": false,
                "streamTimerHours": 0, "streamTimerMinutes": 0, "streamTimerSeconds": 30,
                "pauseRecordTimer": true
            }
        }
    });
    write(
        &cfg.join("basic/scenes/Smoke.json"),
        &collection.to_string(),
    );

    // The plugin, laid out as scripts/install.sh installs it.
    let plugin = cfg.join("plugins/obs-ai-background");
    std::fs::create_dir_all(plugin.join("bin/64bit")).expect("mkdir plugin");
    let module = host::built_module().expect("built module");
    std::fs::copy(&module, plugin.join("bin/64bit/obs-ai-background.so")).expect("copy module");
    host::stage_module_data(repo, &plugin.join("data")).expect("stage data");
    rec
}

fn obs_log(home: &Path) -> String {
    let dir = home.join(".config/obs-studio/logs");
    let mut text = String::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            text.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    text
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

/// Mean absolute RGB difference (0..255) of `a` and `b` over `region`.
fn mean_abs_diff(a: &image::RgbaImage, b: &image::RgbaImage, region: &[bool]) -> f64 {
    let (mut sum, mut n) = (0u64, 0u64);
    for ((pa, pb), _) in a.pixels().zip(b.pixels()).zip(region).filter(|(_, &r)| r) {
        sum += (0..3)
            .map(|c| u64::from(pa[c].abs_diff(pb[c])))
            .sum::<u64>();
        n += 3;
    }
    sum as f64 / n.max(1) as f64
}

fn run() -> Result<String, String> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let obs = ["/usr/bin/obs", "/usr/local/bin/obs"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or("the OBS Studio front-end (obs) is not installed; run scripts/deps.sh")?;
    let home = tempfile::tempdir().map_err(|e| e.to_string())?;
    let rec_dir = prepare_home(&repo, home.path());

    let mut child = Command::new(&obs)
        .args([
            "--startrecording",
            "--multi",
            "--disable-missing-files-check",
            "--disable-shutdown-check",
            "--verbose",
        ])
        .env("HOME", home.path())
        .env_remove("XDG_CONFIG_HOME")
        .env("LIBGL_ALWAYS_SOFTWARE", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start obs: {e}"))?;
    let start = Instant::now();
    let mut stopped = false;
    while start.elapsed() < Duration::from_secs(90) {
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            break;
        }
        if obs_log(home.path()).contains("Recording Stop") {
            stopped = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // A clean exit (ConfirmOnExit=false): SIGINT, then a hard kill if it hangs.
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status();
    let exit_start = Instant::now();
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if exit_start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = obs_log(home.path());
    let tail = |n: usize| {
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    };
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
        .map(|f| mean_abs_diff(f, &frame, &person))
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
