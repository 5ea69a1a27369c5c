//! Shared by the tests that run the real OBS Studio front-end (`obs_smoke`, `obs_websocket`):
//! a throw-away `HOME` with an OBS configuration that skips the first-run wizard and the exit
//! prompt, a profile, a scene collection, the freshly built module installed as a user plugin
//! (laid out as `scripts/install.sh` installs it), and starting and stopping `obs` under Xvfb.
//! Facts behind the configuration: `../shared/docs/obs-headless.md`.

#![allow(dead_code)]

use obs_ai_background::obs::host;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// libobs 29.0.2 as `global.ini` stores the last run version (skips the "what's new" dialog).
pub const LAST_VERSION: u32 = (29 << 24) | 2;
/// The filter's source type id.
pub const FILTER_ID: &str = "ai_background_filter";

/// What goes into the throw-away OBS configuration.
pub struct Config {
    /// Canvas and output size in pixels.
    pub size: (u32, u32),
    /// The scene collection (`basic/scenes/<name>.json`), named `Test`.
    pub collection: serde_json::Value,
    /// Extra `global.ini` sections (e.g. `[OBSWebSocket]`), appended as is.
    pub global_extra: String,
    /// Install the freshly built plugin.
    pub with_plugin: bool,
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write config");
}

/// Writes the configuration under `home`; returns the recordings folder of the profile.
pub fn prepare_home(repo: &Path, home: &Path, config: &Config) -> PathBuf {
    let cfg = home.join(".config/obs-studio");
    let rec = home.join("recordings");
    std::fs::create_dir_all(&rec).expect("mkdir recordings");
    let (w, h) = config.size;
    write(
        &cfg.join("global.ini"),
        &format!(
            "[General]\nFirstRun=true\nLastVersion={LAST_VERSION}\nConfirmOnExit=false\n\n\
             [Basic]\nProfile=Test\nProfileDir=Test\nSceneCollection=Test\nSceneCollectionFile=Test\n\n{}",
            config.global_extra
        ),
    );
    write(
        &cfg.join("basic/profiles/Test/basic.ini"),
        &format!(
            "[General]\nName=Test\n\n[Output]\nMode=Simple\n\n[SimpleOutput]\nFilePath={}\n\
             RecFormat=mkv\nRecEncoder=x264\nRecQuality=Stream\nVBitrate=2500\nPreset=ultrafast\n\n\
             [Video]\nBaseCX={w}\nBaseCY={h}\nOutputCX={w}\nOutputCY={h}\n\
             FPSType=0\nFPSCommon=30\n\n[Audio]\nSampleRate=48000\nChannelSetup=Stereo\n",
            rec.display()
        ),
    );
    write(
        &cfg.join("basic/scenes/Test.json"),
        &config.collection.to_string(),
    );
    if config.with_plugin {
        let plugin = cfg.join("plugins/obs-ai-background");
        std::fs::create_dir_all(plugin.join("bin/64bit")).expect("mkdir plugin");
        let module = host::built_module().expect("built module");
        std::fs::copy(&module, plugin.join("bin/64bit/obs-ai-background.so")).expect("copy module");
        host::stage_module_data(repo, &plugin.join("data")).expect("stage data");
    }
    rec
}

/// A scene collection named `Test` with one scene `Scene` showing `sources[0]` fitted to the
/// canvas (the other sources are in the scene too, hidden); `sources` are full source
/// entries (`id`, `name`, `settings`, `filters`...).
pub fn collection(
    size: (u32, u32),
    sources: Vec<serde_json::Value>,
    modules: serde_json::Value,
) -> serde_json::Value {
    let items: Vec<serde_json::Value> = sources
        .iter()
        .enumerate()
        .map(|(i, s)| {
            serde_json::json!({
                "name": s["name"], "id": i + 1, "visible": i == 0, "locked": false,
                "pos": { "x": 0.0, "y": 0.0 }, "rot": 0.0, "scale": { "x": 1.0, "y": 1.0 },
                "align": 5, "bounds_type": 2, "bounds_align": 0,
                "bounds": { "x": size.0 as f64, "y": size.1 as f64 }
            })
        })
        .collect();
    let mut all = vec![serde_json::json!({
        "id": "scene", "versioned_id": "scene", "name": "Scene", "enabled": true,
        "settings": { "id_counter": items.len(), "items": items }
    })];
    all.extend(sources);
    serde_json::json!({
        "name": "Test",
        "current_scene": "Scene",
        "current_program_scene": "Scene",
        "scene_order": [{ "name": "Scene" }],
        "sources": all,
        "modules": modules,
    })
}

/// The `obs` front-end, if installed.
pub fn obs_binary() -> Result<PathBuf, String> {
    ["/usr/bin/obs", "/usr/local/bin/obs"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| {
            "the OBS Studio front-end (obs) is not installed; run scripts/deps.sh".into()
        })
}

/// A running `obs` with a throw-away `HOME`; its stdout and stderr (where OBS prints every
/// log line with its level: `info:`, `warning:`, `error:`) go to `<home>/obs.out`.
pub struct Frontend {
    pub child: Child,
    pub home: PathBuf,
}

impl Frontend {
    /// Starts `obs` (`--multi --disable-missing-files-check --disable-shutdown-check
    /// --verbose` plus `extra_args`) with `HOME=home`.
    pub fn start(home: &Path, extra_args: &[&str]) -> Result<Frontend, String> {
        let obs = obs_binary()?;
        let out = std::fs::File::create(home.join("obs.out")).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(obs)
            .args(extra_args)
            .args([
                "--multi",
                "--disable-missing-files-check",
                "--disable-shutdown-check",
                "--verbose",
            ])
            .env("HOME", home)
            .env_remove("XDG_CONFIG_HOME")
            .env("LIBGL_ALWAYS_SOFTWARE", "1")
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| format!("cannot start obs: {e}"))?;
        Ok(Frontend {
            child,
            home: home.to_path_buf(),
        })
    }

    /// True while `obs` runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// A clean exit (ConfirmOnExit=false): SIGINT, then a hard kill after 20 s. Returns
    /// whether it exited by itself. With `OBS_HANG_DUMP=DIR` (and gdb installed) the threads'
    /// stacks of a run that had to be killed go to `DIR/hang-<pid>.txt` first.
    pub fn stop(&mut self) -> bool {
        if !self.running() {
            return true;
        }
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status();
        let start = Instant::now();
        while self.running() {
            if start.elapsed() > Duration::from_secs(20) {
                if let Ok(dir) = std::env::var("OBS_HANG_DUMP") {
                    let out = Command::new("gdb")
                        .args(["-p", &self.child.id().to_string(), "-batch"])
                        .args(["-ex", "thread apply all bt"])
                        .output();
                    if let Ok(o) = out {
                        let name = format!("{dir}/hang-{}.txt", self.child.id());
                        let _ = std::fs::write(name, o.stdout);
                    }
                }
                let _ = self.child.kill();
                let _ = self.child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    }

    /// OBS's log files (`.config/obs-studio/logs/*.txt`), concatenated.
    pub fn log(&self) -> String {
        let dir = self.home.join(".config/obs-studio/logs");
        let mut text = String::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                text.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        text
    }

    /// What `obs` printed (log lines with their level).
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.home.join("obs.out")).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// "Number of memory leaks: N" from the log of a finished run.
    pub fn leaks(&self) -> Option<i64> {
        self.log()
            .lines()
            .rev()
            .find_map(|l| l.split("Number of memory leaks: ").nth(1))
            .and_then(|n| n.trim().parse().ok())
    }
}

impl Drop for Frontend {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
