//! Video files through the `ffmpeg` and `ffprobe` programs, with raw RGBA frames on pipes.
//!
//! Decoding: `ffmpeg -i IN -f rawvideo -pix_fmt rgba -` gives `width * height * 4` bytes per
//! frame on stdout. Encoding: raw RGBA on stdin to an encoder chosen from the output's
//! extension, keeping the input's audio track when there is one.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// Errors of the video helpers; each message is one complete line.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    /// `ffmpeg` / `ffprobe` is not installed.
    #[error("{0} not found on PATH: install FFmpeg (Debian/Ubuntu: sudo apt install ffmpeg)")]
    MissingProgram(&'static str),
    /// ffprobe could not read the input.
    #[error("cannot read video {path}: {reason}")]
    Probe {
        /// The input.
        path: PathBuf,
        /// ffprobe's message.
        reason: String,
    },
    /// The output container cannot hold what was asked (e.g. transparency in MP4).
    #[error("{0}")]
    Unsupported(String),
    /// A pipe or process failure.
    #[error("ffmpeg failed: {0}")]
    Ffmpeg(String),
}

/// Extensions treated as video by the CLI.
pub const VIDEO_EXTENSIONS: &[&str] = &["mp4", "mkv", "mov", "webm", "avi", "m4v", "flv", "ts"];

/// Whether `path` has a video extension.
pub fn is_video_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| VIDEO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// What ffprobe says about the first video stream.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoInfo {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Frame rate as a fraction string ffmpeg accepts (e.g. "30000/1001").
    pub frame_rate: String,
    /// Frame count if the container knows it (or duration times rate).
    pub frames: Option<u64>,
    /// Whether the file has an audio stream.
    pub has_audio: bool,
}

fn spawn_error(program: &'static str, e: std::io::Error) -> VideoError {
    if e.kind() == std::io::ErrorKind::NotFound {
        VideoError::MissingProgram(program)
    } else {
        VideoError::Ffmpeg(format!("cannot start {program}: {e}"))
    }
}

/// Whether the `ffprobe` program (FFmpeg) can be started from `PATH`. The tests of Windows
/// builds, run under Wine on Linux, skip their video cases when it cannot (no Windows FFmpeg
/// there).
pub fn ffprobe_available() -> bool {
    Command::new("ffprobe")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Reads the size, rate, frame count and audio presence of `path` with ffprobe.
///
/// # Errors
/// [`VideoError::MissingProgram`] without ffprobe, [`VideoError::Probe`] for unreadable
/// input or a file without a video stream.
pub fn probe(path: &Path) -> Result<VideoInfo, VideoError> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-of",
            "json",
            "-show_streams",
            "-show_format",
        ])
        .arg(path)
        .output()
        .map_err(|e| spawn_error("ffprobe", e))?;
    let fail = |reason: String| VideoError::Probe {
        path: path.to_path_buf(),
        reason,
    };
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        return Err(fail(
            msg.lines().last().unwrap_or("ffprobe failed").trim().into(),
        ));
    }
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| fail(e.to_string()))?;
    let streams = json["streams"].as_array().cloned().unwrap_or_default();
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .ok_or_else(|| fail("no video stream".into()))?;
    let dim = |k: &str| video[k].as_u64().filter(|&v| v > 0).map(|v| v as usize);
    let (width, height) = dim("width")
        .zip(dim("height"))
        .ok_or_else(|| fail("video stream has no size".into()))?;
    let frame_rate = video["avg_frame_rate"]
        .as_str()
        .filter(|r| !r.starts_with('0'))
        .or(video["r_frame_rate"].as_str())
        .unwrap_or("30")
        .to_string();
    let rate = parse_rate(&frame_rate);
    let frames = video["nb_frames"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .or_else(|| {
            let duration: f64 = json["format"]["duration"].as_str()?.parse().ok()?;
            Some((duration * rate?).round() as u64)
        });
    Ok(VideoInfo {
        width,
        height,
        frame_rate,
        frames,
        has_audio: streams.iter().any(|s| s["codec_type"] == "audio"),
    })
}

fn parse_rate(r: &str) -> Option<f64> {
    match r.split_once('/') {
        Some((n, d)) => {
            let (n, d): (f64, f64) = (n.parse().ok()?, d.parse().ok()?);
            (d > 0.0).then_some(n / d)
        }
        None => r.parse().ok(),
    }
}

/// A running ffmpeg decoder yielding RGBA frames.
pub struct Decoder {
    child: Child,
    stdout: BufReader<ChildStdout>,
    frame_bytes: usize,
}

impl Decoder {
    /// Starts decoding `path` (of size `info.width` x `info.height`) to RGBA.
    ///
    /// # Errors
    /// [`VideoError::MissingProgram`] without ffmpeg.
    pub fn open(path: &Path, info: &VideoInfo) -> Result<Self, VideoError> {
        let mut child = Command::new("ffmpeg")
            .args(["-v", "error", "-nostdin", "-i"])
            .arg(path)
            .args(["-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgba", "-"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| spawn_error("ffmpeg", e))?;
        let stdout = BufReader::with_capacity(1 << 20, child.stdout.take().expect("piped"));
        Ok(Self {
            child,
            stdout,
            frame_bytes: info.width * info.height * 4,
        })
    }

    /// Reads the next frame into `buf` (resized to `width * height * 4`); `false` at the end.
    ///
    /// # Errors
    /// [`VideoError::Ffmpeg`] on a truncated frame or a pipe error.
    pub fn next_frame(&mut self, buf: &mut Vec<u8>) -> Result<bool, VideoError> {
        buf.resize(self.frame_bytes, 0);
        let mut filled = 0;
        while filled < buf.len() {
            match self.stdout.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(VideoError::Ffmpeg(e.to_string())),
            }
        }
        match filled {
            0 => Ok(false),
            n if n == buf.len() => Ok(true),
            n => Err(VideoError::Ffmpeg(format!(
                "truncated frame ({n} of {} bytes)",
                buf.len()
            ))),
        }
    }

    /// Waits for ffmpeg to exit.
    ///
    /// # Errors
    /// [`VideoError::Ffmpeg`] if it failed.
    pub fn finish(mut self) -> Result<(), VideoError> {
        let status = self
            .child
            .wait()
            .map_err(|e| VideoError::Ffmpeg(e.to_string()))?;
        if status.success() {
            Ok(())
        } else {
            Err(VideoError::Ffmpeg(format!("decoder exited with {status}")))
        }
    }
}

impl Drop for Decoder {
    /// Stops ffmpeg if the frames were not all read (an error, or an early stop).
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A running ffmpeg encoder fed RGBA frames.
pub struct Encoder {
    child: Child,
    stdin: Option<BufWriter<ChildStdin>>,
}

impl Encoder {
    /// Starts encoding `width` x `height` RGBA frames at `info.frame_rate` into `output`,
    /// copying the audio of `audio_from` if it has any. With `alpha`, the container must
    /// hold transparency: `.webm` (VP9, yuva420p) or `.mov` (ProRes 4444).
    ///
    /// # Errors
    /// [`VideoError::Unsupported`] for transparency in another container,
    /// [`VideoError::MissingProgram`] without ffmpeg.
    pub fn create(
        output: &Path,
        info: &VideoInfo,
        audio_from: Option<&Path>,
        alpha: bool,
    ) -> Result<Self, VideoError> {
        let ext = output
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let codec: &[&str] = match (ext.as_str(), alpha) {
            ("webm", true) => &[
                "-c:v",
                "libvpx-vp9",
                "-pix_fmt",
                "yuva420p",
                "-b:v",
                "0",
                "-crf",
                "30",
            ],
            ("webm", false) => &[
                "-c:v",
                "libvpx-vp9",
                "-pix_fmt",
                "yuv420p",
                "-b:v",
                "0",
                "-crf",
                "30",
            ],
            ("mov", true) => &[
                "-c:v",
                "prores_ks",
                "-profile:v",
                "4444",
                "-pix_fmt",
                "yuva444p10le",
            ],
            (_, true) => {
                return Err(VideoError::Unsupported(format!(
                    "a .{ext} video cannot hold transparency: write .webm or .mov instead"
                )))
            }
            _ => &[
                "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
            ],
        };
        let size = format!("{}x{}", info.width, info.height);
        let mut cmd = Command::new("ffmpeg");
        cmd.args([
            "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgba", "-s",
        ])
        .arg(&size)
        .args(["-r", &info.frame_rate, "-i", "-"]);
        let with_audio = audio_from.filter(|_| info.has_audio);
        if let Some(src) = with_audio {
            cmd.arg("-i")
                .arg(src)
                .args(["-map", "0:v", "-map", "1:a", "-c:a"]);
            cmd.arg(if ext == "webm" { "libopus" } else { "aac" });
            cmd.arg("-shortest");
        }
        cmd.args(codec).arg(output);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| spawn_error("ffmpeg", e))?;
        let stdin = BufWriter::with_capacity(1 << 20, child.stdin.take().expect("piped"));
        Ok(Self {
            child,
            stdin: Some(stdin),
        })
    }

    /// Writes one RGBA frame.
    ///
    /// # Errors
    /// [`VideoError::Ffmpeg`] when the encoder has gone away.
    pub fn write_frame(&mut self, rgba: &[u8]) -> Result<(), VideoError> {
        self.stdin
            .as_mut()
            .expect("open until finish")
            .write_all(rgba)
            .map_err(|e| VideoError::Ffmpeg(format!("encoder pipe: {e}")))
    }

    /// Closes the input and waits for the encoder to finish the file. Dropping an encoder
    /// without calling this stops ffmpeg and leaves an incomplete file.
    ///
    /// # Errors
    /// [`VideoError::Ffmpeg`] if it failed.
    pub fn finish(mut self) -> Result<(), VideoError> {
        if let Some(mut stdin) = self.stdin.take() {
            stdin
                .flush()
                .map_err(|e| VideoError::Ffmpeg(format!("encoder pipe: {e}")))?;
        }
        let status = self
            .child
            .wait()
            .map_err(|e| VideoError::Ffmpeg(e.to_string()))?;
        if status.success() {
            Ok(())
        } else {
            Err(VideoError::Ffmpeg(format!("encoder exited with {status}")))
        }
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        if self.stdin.take().is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
