//! End-to-end test of the real OBS Studio front-end (`obs`, headless under Xvfb) driven by a
//! real client through obs-websocket 5 (shipped with OBS 29), as a streamer's remote control
//! or Stream Deck would drive it.
//!
//! The scene holds the looping webcam clip (`ffmpeg_source`) with the "AI Background" filter,
//! plus an image source used as a background source. The test pauses the clip (so input and
//! output pictures can be compared pixel by pixel), then switches every mode and the main
//! settings with `SetSourceFilterSettings` and checks, on `GetSourceScreenshot` PNGs, what a
//! viewer sees: background detail gone in blur (and more so with a stronger blur), the
//! chosen colour, image or source behind the person, the background video, alpha in
//! transparent mode (and how threshold and edge softness move it), another model and edge
//! refinement off, the mask view. Each change must show in a screenshot requested less than
//! a second after the change. Where the person and the background are comes from the engine
//! on the CPU on the unfiltered picture. Finally OBS's output must hold no warning or error
//! from the filter, and the leak count at shutdown must equal a run without the plugin (OBS's
//! own shutdown crash aside: see `SHUTDOWN_TRIES`).
//!
//! obs-websocket 5.1 in OBS 29.0.2 reads its settings from `global.ini` (`[OBSWebSocket]`),
//! see `../shared/docs/obs-headless.md`. Protocol: Hello (op 0), Identify (op 1, rpcVersion
//! 1), Identified (op 2), Request (op 6), RequestResponse (op 7).
//!
//! Run: `xvfb-run -a -s "-screen 0 1280x720x24" cargo test --test obs_websocket`
//! (needs `obs`: `scripts/deps.sh`); `OBS_TEST_OUT=<dir>` keeps the screenshots.

mod common;

use base64::Engine as _;
use image::RgbaImage;
use obs_ai_background::device::DeviceChoice;
use obs_ai_background::frame::{FrameRef, PixelFormat};
use obs_ai_background::metrics::{erode, iou, laplacian_energy, mean_abs_rgb_diff};
use obs_ai_background::model::{shared_segmenter, Preset, SegmentationBackend};
use obs_ai_background::pipeline::{MaskPipeline, PipelineSettings};
use serde_json::{json, Value};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// The weights file the scene collection names in the legacy hidden `weights_path`.
const LEGACY_WEIGHTS: &str = "models/landscape.safetensors";
/// The filter's log line once the Quality (square) model is loaded.
const SQUARE_READY: &str = "segmenter ready: candle square";
/// Canvas and screenshot size (the clip is 1080x720, fitted into it).
const WIDTH: u32 = 540;
const HEIGHT: u32 = 360;
const CLIP: &str = "tests/fixtures/obs/webcam-livingroom-2s5.mp4";
const BACKGROUND_CLIP: &str = "tests/fixtures/obs/background-desk-480p-2s.mp4";
const FILTER: &str = "AI Background";
const WEBCAM: &str = "Webcam";
/// A change must show in a screenshot requested within this time after the change.
const SHOW_WITHIN: Duration = Duration::from_secs(1);
/// Blue as OBS stores colours (`0xAABBGGRR`).
const BLUE: u32 = 0xFFFF_0000;

type Shot = RgbaImage;

/// An obs-websocket 5 client (JSON over a WebSocket, no authentication).
struct Client {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

/// A TCP port that is free now (the OS picks it), for obs-websocket to listen on.
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

impl Client {
    /// Connects and identifies, retrying while OBS starts (up to `timeout`).
    fn connect(obs: &mut common::Frontend, port: u16, timeout: Duration) -> Result<Client, String> {
        let start = Instant::now();
        loop {
            let mut req = format!("ws://127.0.0.1:{port}")
                .into_client_request()
                .map_err(|e| e.to_string())?;
            req.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                "obswebsocket.json".parse().map_err(|_| "header")?,
            );
            match tungstenite::connect(req) {
                Ok((ws, _)) => {
                    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
                        s.set_read_timeout(Some(Duration::from_secs(20)))
                            .map_err(|e| e.to_string())?;
                    }
                    let mut c = Client { ws, next_id: 0 };
                    let hello = c.read()?;
                    if hello["op"] != 0 {
                        return Err(format!("expected Hello, got {hello}"));
                    }
                    c.send(json!({ "op": 1, "d": { "rpcVersion": 1, "eventSubscriptions": 0 } }))?;
                    let identified = c.read()?;
                    if identified["op"] != 2 {
                        return Err(format!("expected Identified, got {identified}"));
                    }
                    return Ok(c);
                }
                Err(e) => {
                    if !obs.running() {
                        return Err(format!(
                            "obs exited before obs-websocket answered; log tail:\n{}",
                            obs.log_tail(30)
                        ));
                    }
                    if start.elapsed() > timeout {
                        return Err(format!(
                            "no obs-websocket on port {port} after {timeout:?}: {e}"
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            }
        }
    }

    fn send(&mut self, v: Value) -> Result<(), String> {
        self.ws
            .send(Message::text(v.to_string()))
            .map_err(|e| format!("websocket send: {e}"))
    }

    fn read(&mut self) -> Result<Value, String> {
        loop {
            let msg = self.ws.read().map_err(|e| format!("websocket read: {e}"))?;
            if let Message::Text(t) = msg {
                return serde_json::from_str(t.as_str()).map_err(|e| e.to_string());
            }
        }
    }

    /// Sends a request (op 6) and returns its `responseData` (op 7).
    fn request(&mut self, kind: &str, data: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id.to_string();
        self.send(json!({
            "op": 6,
            "d": { "requestType": kind, "requestId": id, "requestData": data }
        }))?;
        loop {
            let v = self.read()?;
            if v["op"] == 7 && v["d"]["requestId"] == id.as_str() {
                let status = &v["d"]["requestStatus"];
                if status["result"] != true {
                    return Err(format!("{kind} failed: {status}"));
                }
                return Ok(v["d"]["responseData"].clone());
            }
        }
    }

    /// `GetSourceScreenshot` of the webcam source, as OBS renders it (filters included).
    fn screenshot(&mut self) -> Result<Shot, String> {
        let r = self.request(
            "GetSourceScreenshot",
            json!({ "sourceName": WEBCAM, "imageFormat": "png",
                    "imageWidth": WIDTH, "imageHeight": HEIGHT }),
        )?;
        let data = r["imageData"].as_str().ok_or("no imageData")?;
        let b64 = data.split_once("base64,").map_or(data, |(_, b)| b);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| e.to_string())?;
        Ok(image::load_from_memory(&png)
            .map_err(|e| e.to_string())?
            .to_rgba8())
    }

    fn set_filter(&mut self, settings: Value) -> Result<(), String> {
        self.request(
            "SetSourceFilterSettings",
            json!({ "sourceName": WEBCAM, "filterName": FILTER,
                    "filterSettings": settings, "overlay": true }),
        )
        .map(drop)
    }

    fn enable_filter(&mut self, enabled: bool) -> Result<(), String> {
        self.request(
            "SetSourceFilterEnabled",
            json!({ "sourceName": WEBCAM, "filterName": FILTER, "filterEnabled": enabled }),
        )
        .map(drop)
    }
}

/// Where the person and the background are in the unfiltered picture.
struct Regions {
    /// Person probability by the engine (CPU, no smoothing), at screenshot size.
    prob: Vec<f32>,
    person: Vec<bool>,
    background: Vec<bool>,
}

fn regions(input: &Shot) -> Result<Regions, String> {
    let (w, h) = (input.width() as usize, input.height() as usize);
    let seg = shared_segmenter(Preset::Landscape, DeviceChoice::Cpu).map_err(|e| e.to_string())?;
    let backend: Arc<dyn SegmentationBackend> = seg;
    let mut pipeline = MaskPipeline::new(backend);
    let f = FrameRef::packed(input.as_raw(), w, h, PixelFormat::Rgba).map_err(|e| e.to_string())?;
    let settings = PipelineSettings {
        smoothing: 0.0,
        ..Default::default()
    };
    let prob = pipeline
        .process(&f, &settings)
        .map_err(|e| e.to_string())?
        .data
        .clone();
    let person = erode(&prob.iter().map(|&p| p > 0.9).collect::<Vec<_>>(), w, h, 4);
    let background = erode(&prob.iter().map(|&p| p < 0.1).collect::<Vec<_>>(), w, h, 8);
    Ok(Regions {
        prob,
        person,
        background,
    })
}

/// Mean over `region` of `f(pixel)`.
fn mean_over(img: &Shot, region: &[bool], f: impl Fn(&[u8]) -> f64) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for (p, &r) in img.as_raw().chunks_exact(4).zip(region) {
        if r {
            sum += f(p);
            n += 1;
        }
    }
    sum / n.max(1) as f64
}

/// Mean absolute RGB difference (0..255) over `region`.
fn rgb_diff(a: &Shot, b: &Shot, region: &[bool]) -> f64 {
    mean_abs_rgb_diff(a.as_raw(), b.as_raw(), region)
}

/// A background image with four coloured quadrants, and how it looks stretched to the
/// screenshot.
fn quadrants(path: &Path, colours: [[u8; 3]; 4]) -> Result<Shot, String> {
    let (w, h) = (320, 180);
    let img = RgbaImage::from_fn(w, h, |x, y| {
        let c = colours[usize::from(x >= w / 2) + 2 * usize::from(y >= h / 2)];
        image::Rgba([c[0], c[1], c[2], 255])
    });
    img.save(path).map_err(|e| e.to_string())?;
    Ok(image::imageops::resize(
        &img,
        WIDTH,
        HEIGHT,
        image::imageops::FilterType::Nearest,
    ))
}

fn save(name: &str, img: &Shot) {
    if let Some(dir) = std::env::var_os("OBS_TEST_OUT") {
        let _ = img.save(Path::new(&dir).join(format!("ws-{name}.png")));
    }
}

/// The scene collection: the webcam clip with the filter (blur), and an image source that
/// serves as the background source.
fn config(repo: &Path, backdrop: &Path, with_plugin: bool, port: u16) -> common::Config {
    let mut webcam = json!({
        "id": "ffmpeg_source", "versioned_id": "ffmpeg_source", "name": WEBCAM, "enabled": true,
        "settings": { "is_local_file": true, "local_file": repo.join(CLIP), "looping": true },
    });
    if with_plugin {
        // As a scene collection from before "Custom weights" stored custom weights: the
        // hidden `weights_path` (here the shipped landscape weights, so the pictures are
        // those of the built-in Fast model). The filter moves it into "Custom weights".
        webcam["filters"] = json!([{
            "id": common::FILTER_ID, "versioned_id": common::FILTER_ID,
            "name": FILTER, "enabled": true,
            "settings": { "mode": "blur", "blur_strength": 16, "model": "fast",
                          "weights_path": repo.join(LEGACY_WEIGHTS) }
        }]);
    }
    let backdrop = json!({
        "id": "image_source", "versioned_id": "image_source", "name": "Backdrop", "enabled": true,
        "settings": { "file": backdrop }
    });
    common::Config {
        size: (WIDTH, HEIGHT),
        collection: common::collection((WIDTH, HEIGHT), vec![webcam, backdrop], json!({})),
        global_extra: format!(
            "[OBSWebSocket]\nFirstLoad=false\nServerEnabled=true\nServerPort={port}\n\
             AlertsEnabled=false\nAuthRequired=false\nServerPassword=\n"
        ),
        with_plugin,
    }
}

/// OBS 29 now and then dies in its own shutdown, with or without the plugin, after "All scene
/// data cleared" (every source and filter already destroyed) and before it logs the leak
/// count: a SIGSEGV, or a hang killed after 20 s. Its SIGINT handler closes the main window
/// from inside the signal handler; when the signal lands while the main thread waits on the X
/// connection, `obs_display_destroy` waits for the graphics thread, which waits for that X
/// connection (gdb of a hung run, `OBS_HANG_DUMP=DIR`). Seen 5 times in about 130 launches
/// here, twice in one CI run. A run that dies there is repeated, up to three times in all.
const SHUTDOWN_TRIES: usize = 3;

/// A short run (launch, one screenshot, quit) with or without the plugin: the leak count OBS
/// reports at shutdown, trying again when OBS died after clearing the scene (see
/// [`SHUTDOWN_TRIES`]).
fn short_run_leaks(repo: &Path, backdrop: &Path, with_plugin: bool) -> Result<i64, String> {
    let mut last = String::new();
    for attempt in 1..=SHUTDOWN_TRIES {
        match short_run_leaks_once(repo, backdrop, with_plugin) {
            Ok(n) => return Ok(n),
            Err((e, false)) => return Err(e),
            Err((e, true)) => {
                eprintln!(
                    "short run (plugin: {with_plugin}) {attempt} of {SHUTDOWN_TRIES} gave no \
                     leak count: {e}"
                );
                last = e;
            }
        }
    }
    Err(last)
}

/// One short run; an error says whether OBS got as far as clearing the scene (worth a retry).
fn short_run_leaks_once(
    repo: &Path,
    backdrop: &Path,
    with_plugin: bool,
) -> Result<i64, (String, bool)> {
    let fatal = |e: String| (e, false);
    let home = tempfile::tempdir().map_err(|e| fatal(e.to_string()))?;
    let port = free_port().map_err(fatal)?;
    common::prepare_home(
        repo,
        home.path(),
        &config(repo, backdrop, with_plugin, port),
    );
    let mut obs = common::Frontend::start(home.path(), &[]).map_err(fatal)?;
    let mut client = Client::connect(&mut obs, port, Duration::from_secs(60)).map_err(fatal)?;
    client.request("GetVersion", json!({})).map_err(fatal)?;
    client.screenshot().map_err(fatal)?;
    drop(client);
    let exited = obs.stop();
    let status = obs.child.try_wait().ok().flatten();
    obs.leaks().ok_or_else(|| {
        (
            format!(
                "no leak count in the log (exited by itself: {exited}, status {status:?}); \
                 tail:\n{}",
                obs.log_tail(6)
            ),
            obs.log().contains("All scene data cleared"),
        )
    })
}

/// Looks at a screenshot: what it found, or why it is not what the viewer must see.
type Check = dyn Fn(&Shot) -> Result<String, String>;

/// One settings change and what the viewer must see after it (each check fails on what the
/// step before it shows, so a screenshot taken before the change applies cannot pass).
struct Step {
    name: &'static str,
    settings: Value,
    check: Box<Check>,
}

fn run() -> Result<Vec<String>, String> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let files = tempfile::tempdir().map_err(|e| e.to_string())?;
    let backdrop = files.path().join("backdrop.png");
    let backdrop_look = quadrants(
        &backdrop,
        [[230, 40, 40], [40, 200, 40], [40, 40, 230], [230, 220, 40]],
    )?;
    let image_path = files.path().join("image.png");
    let image_look = quadrants(
        &image_path,
        [[250, 150, 0], [0, 160, 170], [150, 0, 170], [250, 250, 250]],
    )?;
    let mut lines = Vec::new();

    let leaks_without = short_run_leaks(&repo, &backdrop, false)?;

    let home = tempfile::tempdir().map_err(|e| e.to_string())?;
    let port = free_port()?;
    common::prepare_home(&repo, home.path(), &config(&repo, &backdrop, true, port));
    let t_start = Instant::now();
    let mut obs = common::Frontend::start(home.path(), &[])?;
    let mut client = Client::connect(&mut obs, port, Duration::from_secs(60))?;
    lines.push(format!(
        "obs-websocket answered {:.1} s after launch",
        t_start.elapsed().as_secs_f64()
    ));
    let filter = client.request(
        "GetSourceFilter",
        json!({ "sourceName": WEBCAM, "filterName": FILTER }),
    )?;
    if filter["filterKind"] != common::FILTER_ID {
        return Err(format!("the scene's filter is {filter}"));
    }
    // The old scene collection's hidden weights_path became the dialog's "Custom weights".
    let fs = &filter["filterSettings"];
    let legacy = repo.join(LEGACY_WEIGHTS);
    if fs["model"] != "custom"
        || fs["custom_model"] != "fast"
        || fs["custom_weights"].as_str().map(Path::new) != Some(legacy.as_path())
        || fs["weights_path"].as_str().is_some_and(|p| !p.is_empty())
    {
        return Err(format!(
            "the legacy weights_path was not moved to Custom weights: {fs}"
        ));
    }
    lines.push("legacy weights_path loaded as Custom weights (Fast)".into());
    // The filter works on the playing clip: wait for its first mask (a blurred background).
    let playing = {
        let t0 = Instant::now();
        loop {
            client.enable_filter(false)?;
            let input = client.screenshot()?;
            client.enable_filter(true)?;
            let out = client.screenshot()?;
            let r = regions(&input)?;
            let (w, h) = (WIDTH as usize, HEIGHT as usize);
            let ratio = laplacian_energy(&out, w, h, &r.background)
                / laplacian_energy(&input, w, h, &r.background);
            if ratio < 0.5 {
                save("playing-blur", &out);
                break ratio;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "no blurred background on the playing clip within 30 s (detail x{ratio:.2})"
                ));
            }
        }
    };
    lines.push(format!(
        "playing clip: background detail x{playing:.2} (two screenshots a moment apart)"
    ));

    // Paused: the unfiltered picture and where the person is.
    client.request(
        "TriggerMediaInputAction",
        json!({ "inputName": WEBCAM, "mediaAction": "OBS_WEBSOCKET_MEDIA_INPUT_ACTION_PAUSE" }),
    )?;
    std::thread::sleep(Duration::from_millis(500));
    client.enable_filter(false)?;
    let input = Arc::new(client.screenshot()?);
    client.enable_filter(true)?;
    save("input", &input);
    let r = Arc::new(regions(&input)?);
    let (w, h) = (WIDTH as usize, HEIGHT as usize);
    let share = r.person.iter().filter(|&&v| v).count() as f64 / (w * h) as f64;
    if !(0.05..0.8).contains(&share) {
        return Err(format!("implausible person share {share:.2} in the clip"));
    }
    let bg_detail_in = laplacian_energy(&input, w, h, &r.background);

    let person_kept = {
        let (input, r) = (input.clone(), r.clone());
        move |out: &Shot| -> Result<f64, String> {
            let d = rgb_diff(out, &input, &r.person);
            if d > 8.0 {
                return Err(format!("the person changed by {d:.1} levels"));
            }
            Ok(d)
        }
    };
    let alpha = |p: &[u8]| p[3] as f64;
    let coverage = move |img: &Shot| {
        img.as_raw()
            .chunks_exact(4)
            .map(|p| p[3] as f64 / 255.0)
            .sum::<f64>()
            / (w * h) as f64
    };
    let soft = move |img: &Shot| {
        img.as_raw()
            .chunks_exact(4)
            .filter(|p| p[3] > 10 && p[3] < 245)
            .count()
    };
    let blur2 = Arc::new(std::sync::Mutex::new(1.0f64));
    let coverage_05 = Arc::new(std::sync::Mutex::new(0.0f64));
    let soft_0 = Arc::new(std::sync::Mutex::new(0usize));

    let steps: Vec<Step> = vec![
        Step {
            name: "blur 2 px",
            settings: json!({ "mode": "blur", "blur_strength": 2 }),
            check: Box::new({
                let (r, pk, b16) = (r.clone(), person_kept.clone(), blur2.clone());
                move |out| {
                    let ratio = laplacian_energy(out, w, h, &r.background) / bg_detail_in;
                    // Softened, but far from the 16 px blur the scene starts with (x0.002).
                    if !(0.02..=0.6).contains(&ratio) {
                        return Err(format!("background detail x{ratio:.3}"));
                    }
                    let d = pk(out)?;
                    *b16.lock().unwrap() = ratio;
                    Ok(format!("detail x{ratio:.3}, person diff {d:.1}"))
                }
            }),
        },
        Step {
            name: "blur 16 px",
            settings: json!({ "blur_strength": 16 }),
            check: Box::new({
                let (r, pk, b16) = (r.clone(), person_kept.clone(), blur2.clone());
                move |out| {
                    let ratio = laplacian_energy(out, w, h, &r.background) / bg_detail_in;
                    let before = *b16.lock().unwrap();
                    if ratio >= before * 0.5 {
                        return Err(format!("detail x{ratio:.3}, at 2 px x{before:.3}"));
                    }
                    let d = pk(out)?;
                    Ok(format!("detail x{ratio:.3}, person diff {d:.1}"))
                }
            }),
        },
        Step {
            name: "colour",
            settings: json!({ "mode": "color", "color": BLUE }),
            check: Box::new({
                let (r, pk) = (r.clone(), person_kept.clone());
                move |out| {
                    let c = [0, 1, 2].map(|i| mean_over(out, &r.background, |p| p[i] as f64));
                    if c[0] > 15.0 || c[1] > 15.0 || c[2] < 240.0 {
                        return Err(format!("background {c:.0?}, want blue"));
                    }
                    let d = pk(out)?;
                    Ok(format!("background {c:.0?}, person diff {d:.1}"))
                }
            }),
        },
        Step {
            name: "image",
            settings: json!({ "mode": "image", "image_path": image_path, "fit": "stretch" }),
            check: Box::new({
                let (r, pk) = (r.clone(), person_kept.clone());
                move |out| {
                    let d = rgb_diff(out, &image_look, &r.background);
                    if d > 20.0 {
                        return Err(format!("background {d:.1} levels from the image"));
                    }
                    let p = pk(out)?;
                    Ok(format!(
                        "background {d:.1} levels from the image, person diff {p:.1}"
                    ))
                }
            }),
        },
        Step {
            name: "OBS source",
            settings: json!({ "mode": "source", "source": "Backdrop", "fit": "stretch" }),
            check: Box::new({
                let (r, pk) = (r.clone(), person_kept.clone());
                move |out| {
                    let d = rgb_diff(out, &backdrop_look, &r.background);
                    if d > 20.0 {
                        return Err(format!("background {d:.1} levels from the source"));
                    }
                    let p = pk(out)?;
                    Ok(format!(
                        "background {d:.1} levels from the source, person diff {p:.1}"
                    ))
                }
            }),
        },
        Step {
            name: "video",
            settings: json!({ "mode": "video", "video_path": repo.join(BACKGROUND_CLIP),
                              "video_loop": true, "fit": "cover" }),
            check: Box::new({
                let (r, pk, input) = (r.clone(), person_kept.clone(), input.clone());
                move |out| {
                    let d = rgb_diff(out, &input, &r.background);
                    let detail = laplacian_energy(out, w, h, &r.background) / bg_detail_in;
                    // Another room, sharp: neither the webcam's background nor a blur of it.
                    if d < 25.0 || detail < 0.1 {
                        return Err(format!(
                            "background {d:.1} levels from the webcam's, detail x{detail:.2}"
                        ));
                    }
                    let p = pk(out)?;
                    Ok(format!("background {d:.1} levels from the webcam's, detail x{detail:.2}, person diff {p:.1}"))
                }
            }),
        },
        Step {
            name: "transparent",
            settings: json!({ "mode": "transparent", "threshold": 0.5, "feather": 0.0 }),
            check: Box::new({
                let (r, cov, soft0) = (r.clone(), coverage_05.clone(), soft_0.clone());
                move |out| {
                    let (a_bg, a_person) = (
                        mean_over(out, &r.background, alpha),
                        mean_over(out, &r.person, alpha),
                    );
                    if a_bg > 5.0 || a_person < 250.0 {
                        return Err(format!("alpha: background {a_bg:.1}, person {a_person:.1}"));
                    }
                    *cov.lock().unwrap() = coverage(out);
                    *soft0.lock().unwrap() = soft(out);
                    Ok(format!("alpha: background {a_bg:.1}, person {a_person:.1}"))
                }
            }),
        },
        Step {
            name: "threshold 0.95",
            settings: json!({ "threshold": 0.95 }),
            check: Box::new({
                let cov = coverage_05.clone();
                move |out| {
                    let (c, before) = (coverage(out), *cov.lock().unwrap());
                    if c >= before - 0.005 {
                        return Err(format!("person area {c:.3}, at 0.5 {before:.3}"));
                    }
                    Ok(format!("person area {c:.3} (at 0.5: {before:.3})"))
                }
            }),
        },
        Step {
            name: "edge softness 0.8",
            settings: json!({ "threshold": 0.5, "feather": 0.8 }),
            check: Box::new({
                let soft0 = soft_0.clone();
                move |out| {
                    let (n, before) = (soft(out), *soft0.lock().unwrap());
                    if n < before * 2 + 100 {
                        return Err(format!("{n} soft-edge pixels, at 0: {before}"));
                    }
                    Ok(format!("{n} soft-edge pixels (at 0: {before})"))
                }
            }),
        },
        Step {
            name: "Quality model, no edge refinement",
            settings: json!({ "feather": 0.0, "model": "quality", "refine": false }),
            check: Box::new({
                let r = r.clone();
                move |out| {
                    // Edge softness back to 0 (after 0.8) tells that the change applied.
                    let n = soft(out);
                    if n > 2000 {
                        return Err(format!("{n} soft-edge pixels"));
                    }
                    let person: Vec<bool> =
                        out.as_raw().chunks_exact(4).map(|p| p[3] >= 128).collect();
                    let truth: Vec<bool> = r.prob.iter().map(|&p| p >= 0.5).collect();
                    let v = iou(&person, &truth);
                    if v < 0.9 {
                        return Err(format!("alpha IoU {v:.3} with the Fast model's mask"));
                    }
                    Ok(format!("alpha IoU {v:.3} with the Fast model's mask"))
                }
            }),
        },
        Step {
            name: "show mask",
            settings: json!({ "show_mask": true, "model": "fast", "refine": true }),
            check: Box::new({
                let r = r.clone();
                move |out| {
                    let grey = out
                        .as_raw()
                        .chunks_exact(4)
                        .filter(|p| p[0] == p[1] && p[1] == p[2] && p[3] == 255)
                        .count() as f64
                        / (w * h) as f64;
                    let (bg, person) = (
                        mean_over(out, &r.background, |p| p[0] as f64),
                        mean_over(out, &r.person, |p| p[0] as f64),
                    );
                    if grey < 0.99 || bg > 30.0 || person < 225.0 {
                        return Err(format!(
                            "{:.1}% opaque grey, background {bg:.0}, person {person:.0}",
                            grey * 100.0
                        ));
                    }
                    Ok(format!(
                        "opaque grey, background {bg:.0}, person {person:.0}"
                    ))
                }
            }),
        },
        Step {
            name: "back to blur",
            settings: json!({ "show_mask": false, "mode": "blur", "blur_strength": 16 }),
            check: Box::new({
                let (r, pk) = (r.clone(), person_kept.clone());
                move |out| {
                    let ratio = laplacian_energy(out, w, h, &r.background) / bg_detail_in;
                    if ratio > 0.35 {
                        return Err(format!("background detail x{ratio:.3}"));
                    }
                    pk(out)?;
                    Ok(format!("detail x{ratio:.3}"))
                }
            }),
        },
    ];

    let mut failures = Vec::new();
    for step in &steps {
        let t0 = Instant::now();
        client.set_filter(step.settings.clone())?;
        let mut shots = 0;
        loop {
            let asked = t0.elapsed();
            let shot = client.screenshot()?;
            shots += 1;
            match (step.check)(&shot) {
                Ok(msg) => {
                    save(&step.name.replace(' ', "-"), &shot);
                    lines.push(format!(
                        "{}: {msg}; shown in screenshot {shots}, asked {:.2} s after the change",
                        step.name,
                        asked.as_secs_f64()
                    ));
                    break;
                }
                Err(e) if asked >= SHOW_WITHIN => {
                    save(&step.name.replace(' ', "-"), &shot);
                    failures.push(format!(
                        "{}: {e} (screenshot asked {:.2} s after the change)",
                        step.name,
                        asked.as_secs_f64()
                    ));
                    break;
                }
                Err(_) => {}
            }
        }
        // The Quality step's picture can pass on its edge softness before the worker has
        // loaded the square model (slow on a loaded machine); wait for that load before the
        // next step switches back to Fast, or the model would never be used.
        if step.settings["model"] == "quality" {
            let t = Instant::now();
            while !obs.log().contains(SQUARE_READY) && t.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    drop(client);
    let exited = obs.stop();
    let status = obs.child.try_wait().ok().flatten();

    let output = obs.output();
    let log = obs.log();
    if !log.contains(SQUARE_READY) {
        let ours: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("[obs-ai-background]"))
            .collect();
        failures.push(format!(
            "the Quality (square) model was never loaded; the filter's log lines: {ours:?}"
        ));
    }
    if !log.contains("[obs-ai-background] version") {
        failures.push(format!(
            "the plugin did not load; log tail:\n{}",
            obs.log_tail(30)
        ));
    }
    // OBS prints every log line with its level (`info:`, `warning:`, `error:`).
    if !output.contains("info: [obs-ai-background] version") {
        failures.push(format!(
            "OBS's output lacks the filter's lines; tail:\n{}",
            output.lines().rev().take(20).collect::<Vec<_>>().join("\n")
        ));
    }
    let complaints: Vec<&str> = output
        .lines()
        .filter(|l| {
            (l.starts_with("error:") || l.starts_with("warning:"))
                && l.contains("[obs-ai-background]")
        })
        .collect();
    if !complaints.is_empty() {
        failures.push(format!("the filter complained: {complaints:?}"));
    }
    // OBS's own shutdown crash (see SHUTDOWN_TRIES) after it destroyed every source: the
    // count then comes from short runs with the plugin.
    let (leaks, whose) = match obs.leaks() {
        None if log.contains("All scene data cleared") => {
            eprintln!(
                "OBS died after clearing the scene (exited by itself: {exited}, status \
                 {status:?}); counting leaks in a short run with the plugin instead"
            );
            (
                short_run_leaks(&repo, &backdrop, true)
                    .map_err(|e| eprintln!("the short run with the plugin failed: {e}"))
                    .ok(),
                "in a short run with the plugin (the long run died after clearing the scene)",
            )
        }
        n => (n, "at shutdown"),
    };
    match leaks {
        Some(n) if n == leaks_without => lines.push(format!(
            "{n} memory leaks {whose}, as without the plugin; no warning or error from the filter"
        )),
        other => failures.push(format!(
            "leaks {whose}: {other:?}, without the plugin {leaks_without} (exited by itself: \
             {exited}, status {status:?}); log tail:\n{}\noutput tail:\n{}",
            obs.log_tail(12),
            output.lines().rev().take(12).collect::<Vec<_>>().join("\n")
        )),
    }
    if failures.is_empty() {
        Ok(lines)
    } else {
        Err(format!(
            "{}\n(passed: {})",
            failures.join("\n"),
            lines.join("; ")
        ))
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("obs_websocket: test");
        return;
    }
    let t = Instant::now();
    match run() {
        Ok(lines) => {
            for l in &lines {
                println!("ok   {l}");
            }
            println!(
                "ok   obs_websocket: {} checks in {:.0} s",
                lines.len(),
                t.elapsed().as_secs_f64()
            );
        }
        Err(e) => {
            println!("FAIL obs_websocket: {e}");
            std::process::exit(1);
        }
    }
}
