//! The installed Debian package, loaded by libobs 29 from the system plugin folders.
//!
//! Runs only with `AI_BG_SYSTEM_MODULE=1`, after `dpkg -i obs-ai-background_*.deb`
//! (`scripts/package-test.sh` does both, as root, and removes the package afterwards);
//! otherwise it prints why it skipped. Under Xvfb (`xvfb-run -a -s "-screen 0 1280x720x24"`).
//!
//! Checks: the module and its data are where the package puts them
//! (`/usr/lib/x86_64-linux-gnu/obs-plugins/obs-ai-background.so`,
//! `/usr/share/obs/obs-plugins/obs-ai-background/`); libobs opens it from there the way OBS
//! does at startup ([`Host::load_system_module`]); its display name comes from the installed
//! locale; on an annotated photo in transparent mode the GPU output (the installed effect
//! file) keeps the person: alpha IoU against the human mask >= 0.85; no error lines and no
//! leaked memory at shutdown.

use obs_ai_background::metrics::iou;
use obs_ai_background::obs::calldata::CallData;
use obs_ai_background::obs::data::Data;
use obs_ai_background::obs::host::{Host, HostConfig, SYSTEM_PLUGIN_DATA_DIRS, SYSTEM_PLUGIN_DIRS};
use obs_ai_background::obs::source::{self, Source};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MODULE: &str = "obs-ai-background";
const FILTER_ID: &str = "ai_background_filter";
/// An annotated photo of `tests/fixtures/obs` (its README gives the source).
const PHOTO: &str = "ccp-webcam-0100";

fn fail(msg: &str) -> ! {
    eprintln!("deb_install: FAIL: {msg}");
    std::process::exit(1);
}

/// Masks composited so far (the filter's `ai_background_stats` proc).
fn uploads(filter: &Source) -> u64 {
    let mut cd = CallData::new();
    if !filter.call_proc("ai_background_stats", &mut cd) {
        return 0;
    }
    cd.view()
        .get_string("json")
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v["uploads"].as_u64())
        .unwrap_or(0)
}

fn main() {
    if std::env::var("AI_BG_SYSTEM_MODULE").as_deref() != Ok("1") {
        eprintln!(
            "deb_install: skipped (set AI_BG_SYSTEM_MODULE=1 after installing the .deb; \
             scripts/package-test.sh does)"
        );
        return;
    }
    let so = SYSTEM_PLUGIN_DIRS
        .iter()
        .map(|d| Path::new(d).join(format!("{MODULE}.so")))
        .find(|p| p.exists())
        .unwrap_or_else(|| fail("obs-ai-background.so is in no system plugin folder"));
    let data = SYSTEM_PLUGIN_DATA_DIRS
        .iter()
        .map(|d| Path::new(d).join(MODULE))
        .find(|p| p.join("ai_background.effect").exists())
        .unwrap_or_else(|| fail("no ai_background.effect in the system plugin data folders"));
    assert!(
        data.join("locale/en-US.ini").exists(),
        "no installed locale"
    );
    println!("installed: {} with data {}", so.display(), data.display());

    let host = Host::start(HostConfig::default()).unwrap_or_else(|e| fail(&e));
    for m in ["image-source", MODULE] {
        host.load_system_module(m)
            .unwrap_or_else(|e| fail(&format!("load {m}: {e}")));
    }
    host.post_load();
    let name = source::type_display_name(FILTER_ID);
    if name.as_deref() != Some("AI Background") {
        fail(&format!(
            "display name {name:?} (installed locale not found?)"
        ));
    }

    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/obs");
    let photo = fixtures.join(format!("{PHOTO}.jpg"));
    let settings = Data::from_json(&format!(
        "{{\"file\": {}}}",
        serde_json::to_string(&photo.to_string_lossy()).expect("json")
    ))
    .expect("settings");
    let src = Source::create("image_source", "photo", Some(&settings))
        .unwrap_or_else(|| fail("no image_source"));
    let fs = Data::from_json(r#"{"mode": "transparent"}"#).expect("settings");
    let filter = Source::create(FILTER_ID, "AI Background", Some(&fs))
        .unwrap_or_else(|| fail("cannot create the filter"));
    src.filter_add(&filter);
    src.inc_active();
    src.inc_showing();
    let start = Instant::now();
    let mut out = None;
    // Until a mask is composited, then a few frames for temporal smoothing to settle.
    let mut after = 0;
    while after < 12 {
        if start.elapsed() > Duration::from_secs(30) {
            fail("no mask after 30 s");
        }
        host.wait_ticks(1, Duration::from_secs(2));
        let (w, h) = (src.as_ref().width(), src.as_ref().height());
        out = host.render(src.as_ref(), w, h);
        if uploads(&filter) > 0 {
            after += 1;
        }
    }
    let out = out.unwrap_or_else(|| fail("nothing rendered"));
    let truth = image::open(fixtures.join(format!("{PHOTO}.mask.png")))
        .expect("mask fixture")
        .to_luma8();
    assert_eq!(
        (out.width, out.height),
        (truth.width() as usize, truth.height() as usize)
    );
    let gt: Vec<bool> = truth.pixels().map(|p| p[0] >= 128).collect();
    let person: Vec<bool> = out.rgba.chunks_exact(4).map(|p| p[3] >= 128).collect();
    let score = iou(&person, &gt);
    println!("transparent mode on {PHOTO}: alpha IoU {score:.3} against the annotation");

    src.dec_showing();
    src.dec_active();
    src.filter_remove(&filter);
    src.remove();
    // Every OBS reference goes before obs_shutdown, or it counts as a leak.
    drop((filter, src, fs, settings));
    host.wait_for_destroy_queue();
    let errors: Vec<String> = host
        .log_lines()
        .into_iter()
        .filter(|l| l.level <= 100 && l.message.contains("[obs-ai-background]"))
        .map(|l| l.message)
        .collect();
    let loaded = host
        .log_lines()
        .iter()
        .any(|l| l.message.contains("[obs-ai-background] version"));
    let mut host = host;
    let leaks = host.shutdown();
    if score < 0.85 {
        fail(&format!("alpha IoU {score:.3} < 0.85"));
    }
    if !loaded || !errors.is_empty() {
        fail(&format!("load line logged: {loaded}; errors: {errors:?}"));
    }
    if leaks != 0 {
        fail(&format!("{leaks} memory leaks at obs_shutdown"));
    }
    println!("deb_install: ok (loaded from the system folders, 0 leaks)");
}
