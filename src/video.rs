//! Video files through the `ffmpeg` and `ffprobe` programs, with raw RGBA frames on pipes.
//!
//! Decoding: `ffmpeg -i IN -r RATE -f rawvideo -pix_fmt rgba -` gives `width * height * 4`
//! bytes per frame on stdout, upright (ffmpeg applies the display matrix / `rotate` tag, and
//! [`probe`] reports the displayed size) and at a constant rate: a variable-frame-rate input
//! is resampled to its average rate (frames repeated or dropped at their timestamps), so the
//! output keeps the input's duration within a frame and its audio stays in sync. Encoding: raw
//! RGBA on stdin to an encoder chosen from the output's extension, keeping the input's audio
//! track as it is (longer or shorter than the video). Both programs' stderr is read by the
//! helpers: failures report ffmpeg's own error line.

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::thread::JoinHandle;

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
    /// The decoder failed part-way (ffmpeg's own error line).
    #[error("cannot read video {path}: {reason}")]
    Decode {
        /// The input.
        path: PathBuf,
        /// ffmpeg's message.
        reason: String,
    },
    /// The encoder failed or could not write the output (ffmpeg's own error line).
    #[error("cannot write {path}: {reason}")]
    Encode {
        /// The output as the user named it.
        path: PathBuf,
        /// ffmpeg's message.
        reason: String,
    },
    /// A process that could not be started or waited for.
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
    /// Displayed width in pixels (the coded height for a stream rotated by 90 or 270 degrees).
    pub width: usize,
    /// Displayed height in pixels.
    pub height: usize,
    /// Frame rate as a fraction string ffmpeg accepts (e.g. "30000/1001"): the average rate
    /// (frames over duration), which the decoder resamples a variable-rate stream to.
    pub frame_rate: String,
    /// Clockwise display rotation in degrees (0, 90, 180, 270) from the display matrix or the
    /// `rotate` tag; the frames the [`Decoder`] gives are already turned upright.
    pub rotation: u32,
    /// Frames stored in the stream if the container says (`nb_frames`).
    pub stored_frames: Option<u64>,
    /// Frames the decoder will give: duration times rate, or `stored_frames`.
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

/// ffprobe's JSON for `path`: `-show_streams -show_format` (every stream's fields, side data
/// and tags, and the container's duration).
///
/// # Errors
/// As [`probe`].
pub fn probe_json(path: &Path) -> Result<serde_json::Value, VideoError> {
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
    Ok(json)
}

/// Reads the size, rate, frame count and audio presence of `path` with ffprobe.
///
/// # Errors
/// [`VideoError::MissingProgram`] without ffprobe, [`VideoError::Probe`] for unreadable
/// input or a file without a video stream.
pub fn probe(path: &Path) -> Result<VideoInfo, VideoError> {
    let json = probe_json(path)?;
    let fail = |reason: String| VideoError::Probe {
        path: path.to_path_buf(),
        reason,
    };
    let streams = json["streams"].as_array().cloned().unwrap_or_default();
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .ok_or_else(|| fail("no video stream".into()))?;
    let dim = |k: &str| video[k].as_u64().filter(|&v| v > 0).map(|v| v as usize);
    let (coded_w, coded_h) = dim("width")
        .zip(dim("height"))
        .ok_or_else(|| fail("video stream has no size".into()))?;
    let rotation = rotation_of(video);
    let (width, height) = if rotation % 180 == 90 {
        (coded_h, coded_w)
    } else {
        (coded_w, coded_h)
    };
    let frame_rate = video["avg_frame_rate"]
        .as_str()
        .filter(|r| !r.starts_with('0'))
        .or(video["r_frame_rate"].as_str())
        .unwrap_or("30")
        .to_string();
    let rate = parse_rate(&frame_rate);
    let stored_frames = video["nb_frames"].as_str().and_then(|n| n.parse().ok());
    let duration = |v: &serde_json::Value| v["duration"].as_str()?.parse::<f64>().ok();
    let frames = duration(video)
        .or_else(|| duration(&json["format"]))
        .zip(rate)
        .map(|(d, r)| (d * r).round() as u64)
        .or(stored_frames);
    Ok(VideoInfo {
        width,
        height,
        frame_rate,
        rotation,
        stored_frames,
        frames,
        has_audio: streams.iter().any(|s| s["codec_type"] == "audio"),
    })
}

/// Clockwise rotation in degrees of a stream: the display matrix's `rotation` (counter-
/// clockwise in ffprobe's convention) or the older `rotate` tag (clockwise).
fn rotation_of(stream: &serde_json::Value) -> u32 {
    let from_matrix = stream["side_data_list"].as_array().and_then(|list| {
        list.iter()
            .find_map(|d| d["rotation"].as_f64())
            .map(|ccw| -ccw)
    });
    let from_tag = || {
        stream["tags"]["rotate"]
            .as_str()
            .and_then(|r| r.parse::<f64>().ok())
    };
    let deg = from_matrix.or_else(from_tag).unwrap_or(0.0);
    ((deg / 90.0).round() as i64).rem_euclid(4) as u32 * 90
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

/// What an ffmpeg process said on stderr: its error lines and its last `-progress` values.
#[derive(Debug, Default)]
struct Stderr {
    /// The first error lines (up to 8), addresses like `@ 0x55d1...` removed.
    first: Vec<String>,
    /// The last error line.
    last: Option<String>,
    /// How many lines matched "Error while decoding" (one per packet that failed).
    decode_errors: u64,
    /// `-progress` values: `frame`, `dup_frames`, `drop_frames`.
    progress: std::collections::HashMap<String, u64>,
}

impl Stderr {
    /// Reads `pipe` on a thread until ffmpeg closes it.
    fn collect(pipe: ChildStderr) -> JoinHandle<Stderr> {
        std::thread::spawn(move || {
            let mut out = Stderr::default();
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                // `-progress` lines: `key=value`, keys in lower case (`speed=   0x` included).
                if let Some((k, v)) = line.split_once('=') {
                    let is_key = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
                    if !k.is_empty() && k.chars().all(is_key) {
                        if let Ok(n) = v.trim().parse() {
                            out.progress.insert(k.to_string(), n);
                        }
                        continue;
                    }
                }
                let clean = strip_addresses(line);
                if clean.contains("Error while decoding") {
                    out.decode_errors += 1;
                }
                if out.first.len() < 8 {
                    out.first.push(clean.clone());
                }
                out.last = Some(clean);
            }
            out
        })
    }

    /// One line for an error message: ffmpeg's first error line, and its last if different
    /// ("width not divisible by 2 (641x479); Error initializing output stream ...").
    fn message(&self) -> Option<String> {
        let first = self.first.first()?;
        match &self.last {
            Some(last) if last != first => Some(format!("{first}; {last}")),
            _ => Some(first.clone()),
        }
    }
}

/// `[h264 @ 0x55dc2ea01740] error` -> `[h264] error`.
fn strip_addresses(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find(" @ 0x") {
        out.push_str(&rest[..i]);
        rest = &rest[i + 5..];
        rest = rest.trim_start_matches(|c: char| c.is_ascii_hexdigit());
    }
    out.push_str(rest);
    out
}

fn join_stderr(handle: &mut Option<JoinHandle<Stderr>>) -> Stderr {
    handle
        .take()
        .and_then(|h| h.join().ok())
        .unwrap_or_default()
}

/// How a decode went, from [`Decoder::finish`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodeReport {
    /// Frames given (after resampling to the constant rate).
    pub frames: u64,
    /// Input frames (packets) that could not be decoded: the stream's stored frame count
    /// minus the frames the decoder produced before resampling, or at least the number of
    /// "Error while decoding" lines. Inside the clip their neighbours are repeated in their
    /// place (constant rate); missing at the end (a cut download), the output is shorter.
    pub undecodable: u64,
    /// The stream's stored frame count, if the container says.
    pub stored_frames: Option<u64>,
    /// ffmpeg's first error line, if it printed any.
    pub first_error: Option<String>,
}

/// A running ffmpeg decoder yielding upright RGBA frames at a constant rate.
pub struct Decoder {
    child: Child,
    stdout: BufReader<ChildStdout>,
    stderr: Option<JoinHandle<Stderr>>,
    frame_bytes: usize,
    frames: u64,
    stored_frames: Option<u64>,
    path: PathBuf,
}

impl Decoder {
    /// Starts decoding `path` to RGBA frames of `info.width` x `info.height` (the displayed
    /// size: ffmpeg turns rotated streams upright) at `info.frame_rate`, constant.
    ///
    /// # Errors
    /// [`VideoError::MissingProgram`] without ffmpeg.
    pub fn open(path: &Path, info: &VideoInfo) -> Result<Self, VideoError> {
        let mut child = Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-nostdin",
                "-nostats",
                "-progress",
                "pipe:2",
                "-i",
            ])
            .arg(path)
            .args(["-map", "0:v:0", "-r", &info.frame_rate])
            .args(["-f", "rawvideo", "-pix_fmt", "rgba", "-"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| spawn_error("ffmpeg", e))?;
        let stdout = BufReader::with_capacity(1 << 20, child.stdout.take().expect("piped"));
        let stderr = Stderr::collect(child.stderr.take().expect("piped"));
        Ok(Self {
            child,
            stdout,
            stderr: Some(stderr),
            frame_bytes: info.width * info.height * 4,
            frames: 0,
            stored_frames: info.stored_frames,
            path: path.to_path_buf(),
        })
    }

    /// The decoder's failure, with ffmpeg's own error line when it printed one.
    fn failure(&mut self, fallback: String) -> VideoError {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let said = join_stderr(&mut self.stderr);
        VideoError::Decode {
            path: self.path.clone(),
            reason: said.message().unwrap_or(fallback),
        }
    }

    /// Reads the next frame into `buf` (resized to `width * height * 4`); `false` at the end.
    ///
    /// # Errors
    /// [`VideoError::Decode`] on a truncated frame or a pipe error.
    pub fn next_frame(&mut self, buf: &mut Vec<u8>) -> Result<bool, VideoError> {
        buf.resize(self.frame_bytes, 0);
        let mut filled = 0;
        while filled < buf.len() {
            match self.stdout.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.failure(e.to_string())),
            }
        }
        match filled {
            0 => Ok(false),
            n if n == buf.len() => {
                self.frames += 1;
                Ok(true)
            }
            n => Err(self.failure(format!("truncated frame ({n} of {} bytes)", buf.len()))),
        }
    }

    /// Waits for ffmpeg to exit and says how many input frames it could not decode.
    ///
    /// # Errors
    /// [`VideoError::Decode`] with ffmpeg's error line if it failed.
    pub fn finish(mut self) -> Result<DecodeReport, VideoError> {
        let status = self
            .child
            .wait()
            .map_err(|e| VideoError::Ffmpeg(e.to_string()))?;
        let said = join_stderr(&mut self.stderr);
        if !status.success() {
            return Err(VideoError::Decode {
                path: self.path.clone(),
                reason: said
                    .message()
                    .unwrap_or_else(|| format!("decoder exited with {status}")),
            });
        }
        let p = |k: &str| said.progress.get(k).copied().unwrap_or(0);
        let decoded = (p("frame") + p("drop_frames")).saturating_sub(p("dup_frames"));
        let missing = match self.stored_frames {
            Some(stored) if said.last.is_some() => stored.saturating_sub(decoded),
            _ => 0,
        };
        Ok(DecodeReport {
            frames: self.frames,
            undecodable: missing.max(said.decode_errors),
            stored_frames: self.stored_frames,
            first_error: said.first.first().cloned(),
        })
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
    stderr: Option<JoinHandle<Stderr>>,
    /// The output as the user named it (errors name it, not a temporary file).
    name: PathBuf,
    /// `(width, height)` of the frames given, and of the frames encoded (even for 4:2:0).
    size: (usize, usize),
    padded: (usize, usize),
    pad_buf: Vec<u8>,
}

impl Encoder {
    /// Starts encoding `info.width` x `info.height` RGBA frames at `info.frame_rate` into
    /// `output`, copying the audio of `audio_from` if it has any, as it is (it may be longer or
    /// shorter than the video). With `alpha`, the container must hold transparency: `.webm`
    /// (VP9, yuva420p) or `.mov` (ProRes 4444). Other outputs are H.264 4:2:0, which needs even
    /// sizes: an odd width or height is padded by one column or row repeating the last one
    /// (logged). Errors name `name` (the destination the user gave) instead of `output`
    /// (which may be a temporary file beside it).
    ///
    /// # Errors
    /// [`VideoError::Unsupported`] for transparency in another container,
    /// [`VideoError::MissingProgram`] without ffmpeg.
    pub fn create(
        output: &Path,
        name: &Path,
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
        let size = (info.width, info.height);
        let padded = if codec.contains(&"libx264") {
            (size.0 + size.0 % 2, size.1 + size.1 % 2)
        } else {
            size
        };
        if padded != size {
            log::warn!(
                "{}: H.264 4:2:0 needs an even size: {}x{} padded to {}x{} by repeating the \
                 last column/row",
                name.display(),
                size.0,
                size.1,
                padded.0,
                padded.1
            );
        }
        let mut cmd = Command::new("ffmpeg");
        cmd.args(["-v", "error", "-nostdin", "-y", "-f", "rawvideo"])
            .args(["-pix_fmt", "rgba", "-s"])
            .arg(format!("{}x{}", padded.0, padded.1))
            .args(["-r", &info.frame_rate, "-i", "-"]);
        let with_audio = audio_from.filter(|_| info.has_audio);
        if let Some(src) = with_audio {
            cmd.arg("-i")
                .arg(src)
                .args(["-map", "0:v", "-map", "1:a", "-c:a"]);
            cmd.arg(if ext == "webm" { "libopus" } else { "aac" });
        }
        cmd.args(codec).arg(output);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| spawn_error("ffmpeg", e))?;
        let stdin = BufWriter::with_capacity(1 << 20, child.stdin.take().expect("piped"));
        let stderr = Stderr::collect(child.stderr.take().expect("piped"));
        Ok(Self {
            child,
            stdin: Some(stdin),
            stderr: Some(stderr),
            name: name.to_path_buf(),
            size,
            padded,
            pad_buf: Vec::new(),
        })
    }

    /// The encoder's failure: ffmpeg's own error line (it has exited or is stopped here).
    fn failure(&mut self, fallback: String) -> VideoError {
        drop(self.stdin.take());
        let status = self.child.wait();
        let said = join_stderr(&mut self.stderr);
        let reason = said.message().unwrap_or_else(|| match status {
            Ok(s) if !s.success() => format!("encoder exited with {s}"),
            _ => fallback,
        });
        VideoError::Encode {
            path: self.name.clone(),
            reason,
        }
    }

    /// Writes one RGBA frame of the size given to [`Encoder::create`].
    ///
    /// # Errors
    /// [`VideoError::Encode`] with ffmpeg's error line when the encoder has gone away.
    pub fn write_frame(&mut self, rgba: &[u8]) -> Result<(), VideoError> {
        let frame = if self.padded == self.size {
            rgba
        } else {
            pad_frame(rgba, self.size, self.padded, &mut self.pad_buf);
            &self.pad_buf
        };
        let result = self
            .stdin
            .as_mut()
            .expect("open until finish")
            .write_all(frame);
        result.map_err(|e| self.failure(e.to_string()))
    }

    /// Closes the input and waits for the encoder to finish the file. Dropping an encoder
    /// without calling this stops ffmpeg and leaves an incomplete file.
    ///
    /// # Errors
    /// [`VideoError::Encode`] with ffmpeg's error line if it failed.
    pub fn finish(mut self) -> Result<(), VideoError> {
        if let Some(mut stdin) = self.stdin.take() {
            if let Err(e) = stdin.flush() {
                return Err(self.failure(e.to_string()));
            }
        }
        let status = self
            .child
            .wait()
            .map_err(|e| VideoError::Ffmpeg(e.to_string()))?;
        if status.success() {
            Ok(())
        } else {
            Err(self.failure(String::new()))
        }
    }
}

/// Copies a `size` RGBA frame into a larger `padded` one, repeating the last column and row.
fn pad_frame(rgba: &[u8], size: (usize, usize), padded: (usize, usize), out: &mut Vec<u8>) {
    let (w, h) = size;
    let (pw, ph) = padded;
    out.resize(pw * ph * 4, 0);
    for y in 0..ph {
        let src = &rgba[y.min(h - 1) * w * 4..][..w * 4];
        let dst = &mut out[y * pw * 4..][..pw * 4];
        dst[..w * 4].copy_from_slice(src);
        for x in w..pw {
            dst.copy_within((w - 1) * 4..w * 4, x * 4);
        }
    }
}

impl Drop for Encoder {
    /// Stops ffmpeg if the file was not finished (an error, or an interruption).
    fn drop(&mut self) {
        if self.stdin.take().is_some() || matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
