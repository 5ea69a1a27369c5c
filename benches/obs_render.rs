//! Benchmark: what the "AI Background" filter adds to OBS's render thread, and what its
//! worker costs, on real libobs 29 (headless, Mesa llvmpipe under Xvfb).
//!
//! Run (it starts one child process per canvas size, since libobs starts once per process):
//!
//! ```text
//! xvfb-run -a -s "-screen 0 1920x1080x24" cargo bench --bench obs_render
//! ```
//!
//! For each canvas (1280x720 and 1920x1080, 30 fps; `OBS_BENCH_CANVASES=320x180,640x360` picks
//! others) a scene shows a person photo scaled to
//! the canvas (an `image_source`), with an active raw output (libobs converts and reads back
//! every frame, as for an encoder). Four runs: the scene without the filter, with the filter
//! in blur mode (the default; the heaviest GPU path), in transparent mode, and in blur mode
//! with "CPU threads" at 2 (the network split over the worker and a helper thread; its
//! inference time against the blur run's is the two threads' speed-up inside OBS). After a warm-up
//! it samples for `OBS_BENCH_SECONDS` (default 6) seconds:
//! - render thread: libobs' own average time per frame of its video thread
//!   (`obs_get_average_frame_time_ns`: tick, render, output staging), sampled once a second;
//!   the filter's cost is the difference to the run without it. Also the wall time spent
//!   inside the filter's own `video_render` callback.
//! - worker: wall and thread-CPU milliseconds per frame it processed in the sampled window, the network's share, and
//!   the whole process' added CPU per output frame (everything: render thread, llvmpipe's
//!   rasterizer threads, worker, the network's thread pool);
//! - lagged frames, and how many frames the mask trails its frame;
//! - destroy: removing and releasing the working filter until libobs' destruction thread is
//!   done with it (the filter stops and joins its worker there).
//!
//! On this kind of machine the "GPU" is llvmpipe, i.e. more CPU threads: the figures are an
//! upper bound for a machine with a real GPU. Unless `LP_NUM_THREADS` is set already, the
//! bench sets it to 0 for its OBS processes: llvmpipe then rasterizes on OBS's render thread
//! alone instead of starting a rasterizer thread per core that competes with the worker for
//! every core, which approximates a machine whose GPU renders (the header prints the setting;
//! `LP_NUM_THREADS=2 cargo bench ...` measures llvmpipe's default on 2 cores).

use obs_ai_background::obs::calldata::CallData;
use obs_ai_background::obs::data::Data;
use obs_ai_background::obs::host::{self, Host, HostConfig};
use obs_ai_background::obs::source::Source;
use obs_ai_background::obs::util::process_cpu_time;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const CANVASES: [(u32, u32); 2] = [(1280, 720), (1920, 1080)];
const FPS: u32 = 30;
const WARMUP: Duration = Duration::from_secs(3);

#[derive(Debug, Default)]
struct Run {
    label: String,
    frame_ms: f64,
    lagged: u64,
    frames: u64,
    cpu_ms_per_frame: f64,
    destroy_ms: f64,
    filter: Value,
}

fn stats(filter: &Source) -> Value {
    let mut cd = CallData::new();
    filter.call_proc("ai_background_stats", &mut cd);
    cd.view()
        .get_string("json")
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null)
}

fn measure(host: &Host, label: &str, filter: Option<&Source>, seconds: u64) -> Run {
    std::thread::sleep(WARMUP);
    let before = filter.map(stats);
    let (lag0, frames0, cpu0) = (host.lagged_frames(), host.raw_frames(), process_cpu_time());
    let mut samples = Vec::new();
    let start = Instant::now();
    for _ in 0..seconds {
        std::thread::sleep(Duration::from_secs(1));
        samples.push(host.average_frame_time_ns() as f64 / 1e6);
    }
    let elapsed = start.elapsed();
    let frames = host.raw_frames() - frames0;
    let cpu = process_cpu_time() - cpu0;
    let after = filter.map(stats);
    // Per-window deltas of the filter's counters.
    let filter_stats = match (before, after) {
        (Some(b), Some(a)) => {
            let d = |k: &str| a[k].as_f64().unwrap_or(0.0) - b[k].as_f64().unwrap_or(0.0);
            let n = d("worker_frames").max(1.0);
            let calls = d("render_calls").max(1.0);
            json!({
                "render_callback_ms": d("render_ms_total") / calls,
                "worker_frames_per_s": d("worker_frames") / elapsed.as_secs_f64(),
                // Over the window only, as the other figures: the averages since the worker
                // started would include its first frames, which grow and zero its buffers
                // (first-touch page faults, several ms).
                "worker_ms": d("worker_ms_total") / n,
                "worker_cpu_ms": d("worker_cpu_ms_total") / n,
                "inference_ms": d("inference_ms_total") / n,
                "worker_cpu_ms_since_start": a["worker_cpu_ms_avg"],
                "mask_lag_avg": a["mask_lag_avg"],
                "mask_lag_max": a["mask_lag_max"],
                "replaced": d("replaced"),
                "single_thread_frames": d("single_thread_frames"),
                "worker_frames": n,
                "model": a["model"],
            })
        }
        _ => Value::Null,
    };
    Run {
        label: label.to_string(),
        frame_ms: samples.iter().sum::<f64>() / samples.len().max(1) as f64,
        lagged: u64::from(host.lagged_frames() - lag0),
        frames,
        cpu_ms_per_frame: cpu.as_secs_f64() * 1e3 / frames.max(1) as f64,
        destroy_ms: 0.0,
        filter: filter_stats,
    }
}

/// One canvas size, in this process.
fn child(width: u32, height: u32) -> Result<Vec<Run>, String> {
    let seconds: u64 = std::env::var("OBS_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let data = tmp.path().join("module-data");
    host::stage_module_data(&repo, &data).map_err(|e| e.to_string())?;
    // A person photo at the canvas size (ccp-webcam-dev 0001, upscaled).
    let photo = tmp.path().join("person.png");
    image::open(repo.join("tests/fixtures/obs/ccp-webcam-0001.jpg"))
        .map_err(|e| e.to_string())?
        .resize_exact(width, height, image::imageops::FilterType::Triangle)
        .save(&photo)
        .map_err(|e| e.to_string())?;

    let mut host = Host::start(HostConfig {
        width,
        height,
        fps: FPS,
        locale: "en-US".into(),
    })?;
    host.load_system_module("image-source")?;
    host.load_system_module("obs-ffmpeg")?;
    host.load_module(&host::built_module()?, &data)?;
    host.post_load();

    let settings = Data::from_json(&json!({ "file": photo }).to_string()).ok_or("json")?;
    let src = Source::create("image_source", "camera", Some(&settings)).ok_or("image_source")?;
    let scene = host.create_scene("bench").ok_or("scene")?;
    scene.add_fit(&src, width, height);
    host.set_output(Some(scene.source()));
    host.start_raw_output();

    let mut runs = vec![measure(&host, "without filter", None, seconds)];
    // The third run: the worker's network on two threads (the "CPU threads" setting).
    for (mode, threads) in [("blur", 1), ("transparent", 1), ("blur", 2)] {
        // OBS_BENCH_REFINE=0/1 overrides the filter's default edge refinement.
        let mut fj = json!({ "mode": mode, "cpu_threads": threads });
        if let Ok(v) = std::env::var("OBS_BENCH_REFINE") {
            fj["refine"] = json!(v == "1");
        }
        // OBS_BENCH_SMOOTHING=0..1 overrides the temporal smoothing (0: no hold pass).
        if let Some(v) = std::env::var("OBS_BENCH_SMOOTHING")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
        {
            fj["smoothing"] = json!(v);
        }
        let fs = Data::from_json(&fj.to_string()).ok_or("json")?;
        let filter =
            Source::create("ai_background_filter", "AI Background", Some(&fs)).ok_or("filter")?;
        src.filter_add(&filter);
        let label = if threads == 1 {
            format!("with filter ({mode})")
        } else {
            format!("with filter ({mode}, {threads} CPU threads)")
        };
        runs.push(measure(&host, &label, Some(&filter), seconds));
        // Removing the filter while it works: OBS destroys it (and the filter joins its
        // worker) on its destruction thread.
        let t = Instant::now();
        src.filter_remove(&filter);
        drop(filter);
        host.wait_for_destroy_queue();
        if let Some(run) = runs.last_mut() {
            run.destroy_ms = t.elapsed().as_secs_f64() * 1e3;
        }
    }
    host.stop_raw_output();
    host.set_output(None);
    drop(scene);
    src.remove();
    drop(src);
    drop(settings);
    let leaks = host.shutdown();
    if leaks != 0 {
        eprintln!("warning: {leaks} memory leaks reported at shutdown");
    }
    Ok(runs)
}

fn main() {
    // `cargo bench` passes `--bench`; a child gets its canvas in OBS_BENCH_CANVAS.
    if let Ok(canvas) = std::env::var("OBS_BENCH_CANVAS") {
        let (w, h) = canvas
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
            .expect("OBS_BENCH_CANVAS=WxH");
        match child(w, h) {
            Ok(runs) => {
                for r in runs {
                    println!(
                        "RESULT {}",
                        json!({
                            "label": r.label,
                            "frame_ms": r.frame_ms,
                            "lagged": r.lagged,
                            "frames": r.frames,
                            "cpu_ms_per_frame": r.cpu_ms_per_frame,
                            "destroy_ms": r.destroy_ms,
                            "filter": r.filter,
                        })
                    );
                }
            }
            Err(e) => {
                eprintln!("benchmark failed: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list`: nothing to list.
    }
    let exe = std::env::current_exe().expect("current exe");
    // llvmpipe's rasterizer threads: 0 (on the render thread) unless the caller chose.
    let lp_threads = std::env::var("LP_NUM_THREADS").unwrap_or_else(|_| "0".into());
    println!(
        "obs_render: filter cost per frame on libobs 29, llvmpipe (LP_NUM_THREADS={lp_threads}), {FPS} fps, active raw output"
    );
    println!("command: xvfb-run -a -s \"-screen 0 1920x1080x24\" cargo bench --bench obs_render\n");
    // OBS_BENCH_CANVASES=WxH,WxH picks other canvases (e.g. small ones, where llvmpipe's
    // rendering leaves the worker more CPU).
    let canvases: Vec<(u32, u32)> = match std::env::var("OBS_BENCH_CANVASES") {
        Ok(list) => list
            .split(',')
            .map(|c| {
                c.trim()
                    .split_once('x')
                    .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
                    .expect("OBS_BENCH_CANVASES=WxH,WxH")
            })
            .collect(),
        Err(_) => CANVASES.to_vec(),
    };
    for (w, h) in canvases {
        let out = std::process::Command::new(&exe)
            .env("OBS_BENCH_CANVAS", format!("{w}x{h}"))
            .env("LP_NUM_THREADS", &lp_threads)
            .output()
            .expect("run the benchmark child");
        if !out.status.success() {
            eprintln!("{w}x{h}: {}", String::from_utf8_lossy(&out.stderr));
            std::process::exit(1);
        }
        let runs: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("RESULT "))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let base = runs
            .first()
            .and_then(|r| r["frame_ms"].as_f64())
            .unwrap_or(0.0);
        let base_cpu = runs
            .first()
            .and_then(|r| r["cpu_ms_per_frame"].as_f64())
            .unwrap_or(0.0);
        println!("## {w}x{h}");
        println!(
            "| run | render thread ms/frame | added | filter callback ms | lagged | process CPU ms/frame (added) | worker ms/frame (thread CPU) | inference ms | masks/s | mask lag avg/max | destroy ms |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        for r in &runs {
            let f = &r["filter"];
            let frame = r["frame_ms"].as_f64().unwrap_or(0.0);
            let cpu = r["cpu_ms_per_frame"].as_f64().unwrap_or(0.0);
            let num = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.2}"));
            println!(
                "| {} | {frame:.2} | {} | {} | {} | {cpu:.1} ({}) | {} ({}) | {} | {} | {}/{} | {} |",
                r["label"].as_str().unwrap_or(""),
                if f.is_null() {
                    "-".into()
                } else {
                    format!("{:+.2}", frame - base)
                },
                num(&f["render_callback_ms"]),
                r["lagged"],
                if f.is_null() {
                    "-".into()
                } else {
                    format!("{:+.1}", cpu - base_cpu)
                },
                num(&f["worker_ms"]),
                num(&f["worker_cpu_ms"]),
                num(&f["inference_ms"]),
                num(&f["worker_frames_per_s"]),
                num(&f["mask_lag_avg"]),
                f["mask_lag_max"],
                if f.is_null() { "-".into() } else { num(&r["destroy_ms"]) },
            );
        }
        let since_start: Vec<String> = runs
            .iter()
            .filter(|r| !r["filter"].is_null())
            .map(|r| {
                format!(
                    "{} {:.2} ms",
                    r["label"].as_str().unwrap_or(""),
                    r["filter"]["worker_cpu_ms_since_start"]
                        .as_f64()
                        .unwrap_or(0.0)
                )
            })
            .collect();
        for r in &runs {
            let f = &r["filter"];
            let ones = f["single_thread_frames"].as_f64().unwrap_or(0.0);
            if r["label"]
                .as_str()
                .is_some_and(|l| l.contains("2 CPU threads"))
            {
                println!(
                    "\n{}: {ones:.0} of {:.0} masks in the window ran on 1 thread (the faster \
                     there, measured every {} frames)",
                    r["label"].as_str().unwrap_or(""),
                    f["worker_frames"].as_f64().unwrap_or(0.0),
                    obs_ai_background::pipeline::ThreadChoice::PROBE_EVERY
                );
            }
        }
        println!(
            "\nWorker thread CPU per frame averaged since the worker started (its first frames, \
             which grow and zero its buffers, included): {}",
            since_start.join(", ")
        );
        println!();
    }
}
