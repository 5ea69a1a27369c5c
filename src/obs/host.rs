//! A headless libobs host for tests and benchmarks (not used by the plugin itself).
//!
//! The steps follow what works with libobs 29.0.2 on Linux without a desktop (see
//! `/work/shared/docs/obs-headless.md` in the development environment):
//! 1. open the X display (run under `xvfb-run -a -s "-screen 0 1280x720x24"`) and hand it to
//!    libobs with `obs_set_nix_platform(OBS_NIX_PLATFORM_X11_EGL)`;
//! 2. `obs_startup`, `obs_reset_audio` (48 kHz stereo), `obs_reset_video` with the
//!    `libobs-opengl` graphics module and BGRA output (RGBA gives all-zero raw frames in
//!    29.0.2 when the output size equals the base size);
//! 3. load modules ([`Host::load_module`], [`Host::load_system_module`]), then
//!    [`Host::post_load`];
//! 4. render sources into a texrender and read the pixels back ([`Host::render`]);
//! 5. [`Host::shutdown`] releases everything and returns libobs' leak count (the number it
//!    logs as "Number of memory leaks").
//!
//! libobs can only be started once per process, so a process has at most one [`Host`].
//! Every line libobs and its modules log is captured ([`Host::log_lines`]); set
//! `OBS_HOST_LOG=1` to echo them to stderr as well (errors are always echoed).

use super::data::DataRef;
use super::graphics::{
    clear, ortho, ColorSpace, Format, GraphicsGuard, StageSurface, StateGuard, TexRender, Texture,
};
use super::source::{Source, SourceRef};
use super::{cstring, string_from, sys};
use parking_lot::Mutex;
use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where distributions install OBS's own plugins (`image-source.so`, `obs-ffmpeg.so`, ...).
pub const SYSTEM_PLUGIN_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/obs-plugins",
    "/usr/lib/aarch64-linux-gnu/obs-plugins",
    "/usr/lib/obs-plugins",
    "/usr/lib64/obs-plugins",
    "/usr/local/lib/obs-plugins",
];
/// Where their data lives (`<dir>/<name>/`).
pub const SYSTEM_PLUGIN_DATA_DIRS: &[&str] = &[
    "/usr/share/obs/obs-plugins",
    "/usr/local/share/obs/obs-plugins",
];

/// Settings of the headless video pipeline.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Canvas (base) and output width in pixels.
    pub width: u32,
    /// Canvas and output height in pixels.
    pub height: u32,
    /// Frames per second of the video thread.
    pub fps: u32,
    /// UI locale handed to modules (e.g. `en-US`).
    pub locale: String,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            width: 640,
            height: 360,
            fps: 30,
            locale: "en-US".into(),
        }
    }
}

/// An 8-bit RGBA image read back from the GPU (rows top to bottom, tightly packed).
#[derive(Clone, Debug)]
pub struct Image {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height * 4` bytes, R, G, B, A.
    pub rgba: Vec<u8>,
}

impl Image {
    /// The RGBA bytes of pixel `(x, y)`.
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 4] {
        let i = (y * self.width + x) * 4;
        [
            self.rgba[i],
            self.rgba[i + 1],
            self.rgba[i + 2],
            self.rgba[i + 3],
        ]
    }
}

/// A float RGBA image read back from the GPU (rows top to bottom, tightly packed).
#[derive(Clone, Debug)]
pub struct FloatImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height * 4` values, R, G, B, A, in the colour space it was rendered in
    /// (linear for every space but 8-bit sRGB; values above 1.0 kept).
    pub rgba: Vec<f32>,
}

/// Source type id of the test source [`Host::register_float_image_source`] registers.
pub const FLOAT_IMAGE_SOURCE: &str = "ai_bg_test_float_image";

/// One captured log line.
#[derive(Clone, Debug)]
pub struct LogLine {
    /// OBS level: 100 error, 200 warning, 300 info, 400 debug.
    pub level: i32,
    /// The formatted message.
    pub message: String,
}

static STARTED: AtomicBool = AtomicBool::new(false);
static LOG: Mutex<Vec<LogLine>> = Mutex::new(Vec::new());
static ECHO_ALL: AtomicBool = AtomicBool::new(false);
static TICKS: AtomicU64 = AtomicU64::new(0);
static RAW_FRAMES: AtomicU64 = AtomicU64::new(0);
static RAW_ACTIVE: AtomicBool = AtomicBool::new(false);

unsafe extern "C" fn log_handler(
    lvl: c_int,
    msg: *const c_char,
    args: *mut sys::__va_list_tag,
    _p: *mut c_void,
) {
    let mut buf = [0 as c_char; 8192];
    // SAFETY: vsnprintf writes at most buf.len() bytes including the NUL; msg/args come from
    // libobs' blogva.
    let n = unsafe { sys::vsnprintf(buf.as_mut_ptr(), buf.len() as _, msg, args) };
    if n < 0 {
        return;
    }
    // SAFETY: NUL-terminated by vsnprintf.
    let message = unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    if ECHO_ALL.load(Ordering::Relaxed) || lvl <= sys::LOG_ERROR as c_int {
        eprintln!("[obs {lvl}] {message}");
    }
    LOG.lock().push(LogLine {
        level: lvl,
        message,
    });
}

unsafe extern "C" fn tick_counter(_param: *mut c_void, _seconds: f32) {
    TICKS.fetch_add(1, Ordering::Relaxed);
}

unsafe extern "C" fn raw_frame_counter(_param: *mut c_void, _frame: *mut sys::video_data) {
    RAW_FRAMES.fetch_add(1, Ordering::Relaxed);
}

type XOpenDisplay = unsafe extern "C" fn(*const c_char) -> *mut c_void;
type XCloseDisplay = unsafe extern "C" fn(*mut c_void) -> c_int;

extern "C" {
    fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dlerror() -> *const c_char;
}
const RTLD_NOW: c_int = 2;

/// The X display connection (libX11 is loaded at run time, so nothing else links it).
struct Display {
    ptr: *mut c_void,
    close: XCloseDisplay,
}

impl Display {
    fn open() -> Result<Display, String> {
        // SAFETY: dlopen/dlsym with NUL-terminated names; the symbols have the X11 signatures.
        unsafe {
            let lib = dlopen(c"libX11.so.6".as_ptr(), RTLD_NOW);
            if lib.is_null() {
                return Err(format!(
                    "cannot load libX11.so.6: {}",
                    string_from(dlerror())
                ));
            }
            let open = dlsym(lib, c"XOpenDisplay".as_ptr());
            let close = dlsym(lib, c"XCloseDisplay".as_ptr());
            if open.is_null() || close.is_null() {
                return Err("libX11 lacks XOpenDisplay/XCloseDisplay".into());
            }
            let open: XOpenDisplay = std::mem::transmute::<*mut c_void, XOpenDisplay>(open);
            let close: XCloseDisplay = std::mem::transmute::<*mut c_void, XCloseDisplay>(close);
            let ptr = open(std::ptr::null());
            if ptr.is_null() {
                return Err(format!(
                    "cannot open the X display (DISPLAY={:?}); run under \
                     xvfb-run -a -s \"-screen 0 1280x720x24\"",
                    std::env::var("DISPLAY").ok()
                ));
            }
            Ok(Display { ptr, close })
        }
    }
}

/// A running libobs instance (one per process). Shut down on drop if not done explicitly.
pub struct Host {
    display: Option<Display>,
    config: HostConfig,
    running: bool,
}

/// A scene (`obs_scene_t`) holding sources; released on drop.
pub struct Scene {
    ptr: *mut sys::obs_scene_t,
}

impl Scene {
    /// The scene as a source (for [`Host::set_output`]).
    pub fn source(&self) -> SourceRef<'_> {
        // SAFETY: live scene; its source lives as long as the scene.
        unsafe { SourceRef::from_raw(sys::obs_scene_get_source(self.ptr)) }
            .expect("scene without source")
    }

    /// Adds `source` scaled to fit inside `width` x `height` at the top left (like a webcam
    /// filling the canvas).
    pub fn add_fit(&self, source: &Source, width: u32, height: u32) -> bool {
        // SAFETY: live scene and source; the item is owned by the scene.
        unsafe {
            let item = sys::obs_scene_add(self.ptr, source.as_ptr());
            if item.is_null() {
                return false;
            }
            sys::obs_sceneitem_set_bounds_type(item, sys::OBS_BOUNDS_SCALE_INNER);
            let b = sys::vec2 {
                __bindgen_anon_1: sys::vec2__bindgen_ty_1 {
                    ptr: [width as f32, height as f32],
                },
            };
            sys::obs_sceneitem_set_bounds(item, &b);
        }
        true
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        // SAFETY: we own the scene reference from obs_scene_create.
        unsafe {
            sys::obs_source_remove(sys::obs_scene_get_source(self.ptr));
            sys::obs_scene_release(self.ptr);
        }
    }
}

impl Host {
    /// Starts libobs with `config`.
    ///
    /// # Errors
    /// A message when libobs was already started in this process, there is no X display,
    /// or startup / audio / video initialisation fails.
    pub fn start(config: HostConfig) -> Result<Host, String> {
        if STARTED.swap(true, Ordering::SeqCst) {
            return Err("libobs can only be started once per process".into());
        }
        ECHO_ALL.store(
            std::env::var("OBS_HOST_LOG").is_ok_and(|v| !v.is_empty() && v != "0"),
            Ordering::Relaxed,
        );
        // SAFETY: installs a 'static handler before anything logs.
        unsafe { sys::base_set_log_handler(Some(log_handler), std::ptr::null_mut()) };
        let display = Display::open()?;
        let locale = cstring(&config.locale);
        let module = cstring("libobs-opengl");
        // SAFETY: the documented startup sequence; all strings outlive the calls.
        unsafe {
            sys::obs_set_nix_platform(sys::OBS_NIX_PLATFORM_X11_EGL);
            sys::obs_set_nix_platform_display(display.ptr);
            if !sys::obs_startup(locale.as_ptr(), std::ptr::null(), std::ptr::null_mut()) {
                return Err("obs_startup failed".into());
            }
        }
        let mut host = Host {
            display: Some(display),
            config: config.clone(),
            running: true,
        };
        let audio = sys::obs_audio_info {
            samples_per_sec: 48_000,
            speakers: sys::SPEAKERS_STEREO,
        };
        // SAFETY: valid struct.
        if !unsafe { sys::obs_reset_audio(&audio) } {
            host.shutdown();
            return Err("obs_reset_audio failed".into());
        }
        let video = sys::obs_video_info {
            graphics_module: module.as_ptr(),
            fps_num: config.fps.max(1),
            fps_den: 1,
            base_width: config.width,
            base_height: config.height,
            output_width: config.width,
            output_height: config.height,
            output_format: sys::VIDEO_FORMAT_BGRA,
            adapter: 0,
            gpu_conversion: true,
            colorspace: sys::VIDEO_CS_709,
            range: sys::VIDEO_RANGE_PARTIAL,
            scale_type: sys::OBS_SCALE_BICUBIC,
        };
        // SAFETY: valid struct; libobs copies the module name.
        let rc = unsafe { sys::obs_reset_video(&video as *const _ as *mut _) };
        if rc != sys::OBS_VIDEO_SUCCESS as c_int {
            host.shutdown();
            return Err(format!("obs_reset_video failed ({rc})"));
        }
        // SAFETY: plain setters; the front-end's defaults (SDR white 300 nits, HDR nominal
        // peak 1000 nits), which a bare libobs leaves at 0.
        unsafe {
            sys::obs_set_video_levels(super::graphics::DEFAULT_SDR_WHITE_LEVEL, 1000.0);
            sys::obs_add_tick_callback(Some(tick_counter), std::ptr::null_mut());
        }
        Ok(host)
    }

    /// The configuration the host was started with.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// Loads and initialises the module at `so` with data folder `data`.
    ///
    /// # Errors
    /// When libobs cannot open or initialise the module.
    pub fn load_module(&self, so: &Path, data: &Path) -> Result<(), String> {
        let (p, d) = (
            cstring(&so.to_string_lossy()),
            cstring(&data.to_string_lossy()),
        );
        let mut module: *mut sys::obs_module_t = std::ptr::null_mut();
        // SAFETY: valid strings and out pointer.
        let rc = unsafe { sys::obs_open_module(&mut module, p.as_ptr(), d.as_ptr()) };
        if rc != sys::MODULE_SUCCESS as c_int || module.is_null() {
            let why = match rc {
                -2 => " (file not found)",
                -3 => " (missing obs_module_* exports: built without the `obs` feature?)",
                -4 => " (built for another libobs version)",
                _ => "",
            };
            return Err(format!(
                "obs_open_module({}) failed with {rc}{why}",
                so.display()
            ));
        }
        // SAFETY: a freshly opened module.
        if !unsafe { sys::obs_init_module(module) } {
            return Err(format!("obs_init_module({}) failed", so.display()));
        }
        Ok(())
    }

    /// Loads one of OBS's own plugins by name (e.g. `image-source`, `obs-ffmpeg`) from the
    /// system plugin folders.
    ///
    /// # Errors
    /// When it is not installed or fails to load.
    pub fn load_system_module(&self, name: &str) -> Result<(), String> {
        let so = SYSTEM_PLUGIN_DIRS
            .iter()
            .map(|d| Path::new(d).join(format!("{name}.so")))
            .find(|p| p.exists())
            .ok_or_else(|| {
                format!("{name}.so not found in {SYSTEM_PLUGIN_DIRS:?} (install obs-studio)")
            })?;
        let data = SYSTEM_PLUGIN_DATA_DIRS
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from(SYSTEM_PLUGIN_DATA_DIRS[0]).join(name));
        self.load_module(&so, &data)
    }

    /// Finishes module loading (`obs_post_load_modules`).
    pub fn post_load(&self) {
        // SAFETY: after loading modules.
        unsafe { sys::obs_post_load_modules() };
    }

    /// Renders `source` (with its filters) scaled to `width` x `height` into a cleared,
    /// transparent RGBA texrender and reads it back (waits for the GPU). `None` when the
    /// source has no size yet.
    pub fn render(&self, source: SourceRef<'_>, width: u32, height: u32) -> Option<Image> {
        let rgba = self.read_back(source, width, height, Format::Rgba, ColorSpace::Srgb)?;
        Some(Image {
            width: width as usize,
            height: height as usize,
            rgba,
        })
    }

    /// Renders `source` scaled to `width` x `height` into a cleared texrender of `format`
    /// whose colour space is `space` and returns its rows, tightly packed.
    fn read_back(
        &self,
        source: SourceRef<'_>,
        width: u32,
        height: u32,
        format: Format,
        space: ColorSpace,
    ) -> Option<Vec<u8>> {
        let (sw, sh) = (source.width(), source.height());
        if sw == 0 || sh == 0 || width == 0 || height == 0 {
            return None;
        }
        let guard = GraphicsGuard::enter();
        let gfx = guard.gfx();
        let mut tr = TexRender::new(&gfx, format)?;
        {
            let _scope = tr.render_in(&gfx, width, height, space)?;
            let state = StateGuard::push(&gfx);
            // OBS's own default for drawing sources: premultiplied-friendly alpha blending.
            state.blend(
                super::graphics::Blend::One,
                super::graphics::Blend::InvSrcAlpha,
            );
            clear(&gfx, [0.0; 4]);
            ortho(&gfx, sw as f32, sh as f32);
            source.video_render(&gfx);
        }
        let tex = tr.texture()?;
        let stage = StageSurface::new(&gfx, width, height, format)?;
        stage.stage(&gfx, tex);
        let map = stage.map(&gfx)?;
        let row = width as usize * format.bytes_per_pixel();
        let mut out = Vec::with_capacity(row * height as usize);
        for y in 0..height as usize {
            out.extend_from_slice(&map.data()[y * map.linesize()..y * map.linesize() + row]);
        }
        Some(out)
    }

    /// Registers [`FLOAT_IMAGE_SOURCE`], a test source that shows an image file as an
    /// RGBA32F texture in a colour space of choice, to test colour handling. Settings:
    /// `file` (path), `space` (`enum gs_color_space`: 0 sRGB, 1 sRGB 16F, 2 Rec. 709
    /// extended, 3 scRGB; values are decoded to linear for all but 0), `gain` with
    /// `gain_x`, `gain_y`, `gain_w`, `gain_h`: a rectangle whose RGB values are multiplied
    /// by `gain` (above 1.0: extended range); `frames` (default 1) with `shift` (pixels): a
    /// numbered sequence of `frames` pictures, picture `k` the image shifted right by
    /// `k * shift` pixels (wrapping round), showing picture `tick % frames` on each video
    /// tick, so that a rendered frame tells which tick it is from; with `per_render` (bool)
    /// picture `renders % frames` instead, the next picture on every render, so that
    /// consecutive rendered frames differ however many ticks pass between them. Call once,
    /// before creating such sources.
    pub fn register_float_image_source(&self) {
        let info = sys::obs_source_info {
            id: super::module::leak_cstring(FLOAT_IMAGE_SOURCE).as_ptr(),
            type_: sys::OBS_SOURCE_TYPE_INPUT,
            output_flags: sys::OBS_SOURCE_VIDEO,
            get_name: Some(fis_name),
            create: Some(fis_create),
            destroy: Some(fis_destroy),
            get_width: Some(fis_width),
            get_height: Some(fis_height),
            video_render: Some(fis_render),
            video_tick: Some(fis_tick),
            video_get_color_space: Some(fis_color_space),
            ..Default::default()
        };
        // SAFETY: libobs copies the struct; the id is leaked ('static).
        unsafe { sys::obs_register_source_s(&info, std::mem::size_of::<sys::obs_source_info>()) };
    }

    /// Renders `source` like [`Host::render`], into a float target whose colour space
    /// (what the filters see as the current space) is `space`, and reads the values back.
    pub fn render_float(
        &self,
        source: SourceRef<'_>,
        width: u32,
        height: u32,
        space: ColorSpace,
    ) -> Option<FloatImage> {
        let bytes = self.read_back(source, width, height, Format::Rgba32f, space)?;
        Some(FloatImage {
            width: width as usize,
            height: height as usize,
            rgba: bytes
                .chunks_exact(4)
                .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        })
    }

    /// Number of video ticks (frames of the video thread) since startup.
    pub fn ticks(&self) -> u64 {
        TICKS.load(Ordering::Relaxed)
    }

    /// Waits until the video thread has ticked `n` more times (or `timeout` passed).
    pub fn wait_ticks(&self, n: u64, timeout: Duration) -> bool {
        let target = self.ticks() + n;
        let start = Instant::now();
        while self.ticks() < target {
            if start.elapsed() > timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    /// Switches the UI locale (`obs_set_locale`: every module reloads its texts).
    pub fn set_locale(&self, locale: &str) {
        let l = cstring(locale);
        // SAFETY: NUL-terminated; libobs copies it.
        unsafe { sys::obs_set_locale(l.as_ptr()) };
    }

    /// Waits until libobs has destroyed the released sources (libobs 28+ destroys sources on
    /// a background task queue).
    pub fn wait_for_destroy_queue(&self) {
        // SAFETY: plain call.
        unsafe { sys::obs_wait_for_destroy_queue() };
    }

    /// Creates an empty scene.
    pub fn create_scene(&self, name: &str) -> Option<Scene> {
        let n = cstring(name);
        // SAFETY: returns a new reference or null.
        let ptr = unsafe { sys::obs_scene_create(n.as_ptr()) };
        (!ptr.is_null()).then_some(Scene { ptr })
    }

    /// Shows `source` on output channel 0 (the program output the video thread renders each
    /// frame), or clears the channel with `None`.
    pub fn set_output(&self, source: Option<SourceRef<'_>>) {
        let p = source.map_or(std::ptr::null_mut(), |s| s.as_ptr());
        // SAFETY: libobs takes its own reference.
        unsafe { sys::obs_set_output_source(0, p) };
    }

    /// The video thread's average time per frame in nanoseconds (`obs_get_average_frame_time_ns`:
    /// ticking, rendering and staging the program output).
    pub fn average_frame_time_ns(&self) -> u64 {
        // SAFETY: plain getter.
        unsafe { sys::obs_get_average_frame_time_ns() }
    }

    /// Frames the video thread rendered late (`obs_get_lagged_frames`).
    pub fn lagged_frames(&self) -> u32 {
        // SAFETY: plain getter.
        unsafe { sys::obs_get_lagged_frames() }
    }

    /// Attaches a raw video callback to the program output, which makes libobs convert and
    /// read back every frame as it does for an encoder (an "active output").
    pub fn start_raw_output(&self) {
        if !RAW_ACTIVE.swap(true, Ordering::SeqCst) {
            // SAFETY: 'static callback without data; removed in stop_raw_output / shutdown.
            unsafe {
                sys::obs_add_raw_video_callback(
                    std::ptr::null(),
                    Some(raw_frame_counter),
                    std::ptr::null_mut(),
                )
            };
        }
    }

    /// Detaches the callback of [`Host::start_raw_output`].
    pub fn stop_raw_output(&self) {
        if RAW_ACTIVE.swap(false, Ordering::SeqCst) {
            // SAFETY: removes the callback added in start_raw_output.
            unsafe {
                sys::obs_remove_raw_video_callback(Some(raw_frame_counter), std::ptr::null_mut())
            };
        }
    }

    /// Frames delivered to the raw output since startup.
    pub fn raw_frames(&self) -> u64 {
        RAW_FRAMES.load(Ordering::Relaxed)
    }

    /// All log lines captured so far.
    pub fn log_lines(&self) -> Vec<LogLine> {
        LOG.lock().clone()
    }

    /// Number of log lines captured so far (a mark for [`Host::log_since`]).
    pub fn log_mark(&self) -> usize {
        LOG.lock().len()
    }

    /// Log lines captured after `mark`.
    pub fn log_since(&self, mark: usize) -> Vec<LogLine> {
        LOG.lock().iter().skip(mark).cloned().collect()
    }

    /// Shuts libobs down (after the caller dropped all its sources) and returns the number of
    /// allocations libobs still holds: its "Number of memory leaks".
    pub fn shutdown(&mut self) -> i64 {
        if !self.running {
            // SAFETY: plain getter.
            return unsafe { sys::bnum_allocs() } as i64;
        }
        self.running = false;
        // SAFETY: the documented teardown order.
        self.stop_raw_output();
        let leaks = unsafe {
            sys::obs_remove_tick_callback(Some(tick_counter), std::ptr::null_mut());
            sys::obs_set_output_source(0, std::ptr::null_mut());
            sys::obs_shutdown();
            sys::bnum_allocs() as i64
        };
        if let Some(d) = self.display.take() {
            // SAFETY: the display we opened; libobs no longer uses it.
            unsafe { (d.close)(d.ptr) };
        }
        leaks
    }
}

/// The test source behind [`FLOAT_IMAGE_SOURCE`]: an image file as a float texture.
struct FloatImageSource {
    /// One texture per picture of the sequence (one for a still image).
    textures: Vec<Texture>,
    /// Video ticks seen, or with `per_render` renders done: the picture shown is this
    /// count modulo the number of pictures.
    ticks: AtomicU64,
    /// Advance the picture on each render instead of each video tick.
    per_render: bool,
    width: u32,
    height: u32,
    space: ColorSpace,
}

/// Reads the settings of [`Host::register_float_image_source`] and builds the texture.
fn float_image_source(settings: DataRef<'_>) -> FloatImageSource {
    let space = ColorSpace::from_raw(settings.get_int("space").clamp(0, 3) as u32);
    let gain = settings.get_double("gain") as f32;
    let rect = ["gain_x", "gain_y", "gain_w", "gain_h"].map(|k| settings.get_int(k).max(0) as u32);
    let Ok(img) = image::open(settings.get_string("file")).map(|i| i.to_rgba8()) else {
        return FloatImageSource {
            textures: Vec::new(),
            ticks: AtomicU64::new(0),
            per_render: false,
            width: 0,
            height: 0,
            space,
        };
    };
    let (w, h) = img.dimensions();
    let frames = settings.get_int("frames").clamp(1, 16) as u32;
    let shift = settings.get_int("shift").max(0) as u32;
    let per_render = settings.get_bool("per_render");
    let guard = GraphicsGuard::enter();
    let textures = (0..frames)
        .filter_map(|k| {
            let mut shifted = img.clone();
            for (x, y, p) in shifted.enumerate_pixels_mut() {
                *p = *img.get_pixel((x + w - (k * shift) % w) % w, y);
            }
            float_texture(&guard, &shifted, space, gain, rect)
        })
        .collect();
    FloatImageSource {
        textures,
        ticks: AtomicU64::new(0),
        per_render,
        width: w,
        height: h,
        space,
    }
}

/// `img` as an RGBA32F texture in `space`, RGB times `gain` inside `rect` (x, y, w, h).
fn float_texture(
    guard: &GraphicsGuard,
    img: &image::RgbaImage,
    space: ColorSpace,
    gain: f32,
    rect: [u32; 4],
) -> Option<Texture> {
    let (w, h) = img.dimensions();
    let mut values = Vec::with_capacity(w as usize * h as usize * 4);
    for (x, y, p) in img.enumerate_pixels() {
        let inside = x >= rect[0] && x < rect[0] + rect[2] && y >= rect[1] && y < rect[1] + rect[3];
        for c in 0..3 {
            let v = f32::from(p[c]) / 255.0;
            let v = if space.is_linear() {
                super::graphics::srgb_to_linear(v)
            } else {
                v
            };
            values.push(if inside { v * gain } else { v });
        }
        values.push(f32::from(p[3]) / 255.0);
    }
    Texture::new(
        &guard.gfx(),
        w,
        h,
        Format::Rgba32f,
        false,
        Some(bytemuck::cast_slice(&values)),
    )
}

unsafe extern "C" fn fis_tick(data: *mut c_void, _seconds: f32) {
    // SAFETY: instance contract.
    if let Some(s) = unsafe { fis(data) }.filter(|s| !s.per_render) {
        s.ticks.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe extern "C" fn fis_name(_type_data: *mut c_void) -> *const c_char {
    c"Float image (test)".as_ptr()
}

unsafe extern "C" fn fis_create(
    settings: *mut sys::obs_data_t,
    _source: *mut sys::obs_source_t,
) -> *mut c_void {
    // SAFETY: libobs passes the new source's settings for the call.
    let Some(settings) = (unsafe { DataRef::from_raw(settings) }) else {
        return std::ptr::null_mut();
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Box::into_raw(Box::new(float_image_source(settings))).cast()
    }))
    .unwrap_or(std::ptr::null_mut())
}

unsafe extern "C" fn fis_destroy(data: *mut c_void) {
    if !data.is_null() {
        // SAFETY: made by Box::into_raw in fis_create; libobs destroys once.
        drop(unsafe { Box::from_raw(data.cast::<FloatImageSource>()) });
    }
}

/// # Safety
/// `data` is null or a live `FloatImageSource` from `fis_create`.
unsafe fn fis<'a>(data: *mut c_void) -> Option<&'a FloatImageSource> {
    // SAFETY: per the contract.
    unsafe { data.cast::<FloatImageSource>().as_ref() }
}

unsafe extern "C" fn fis_width(data: *mut c_void) -> u32 {
    // SAFETY: instance contract.
    unsafe { fis(data) }.map_or(0, |s| s.width)
}

unsafe extern "C" fn fis_height(data: *mut c_void) -> u32 {
    // SAFETY: instance contract.
    unsafe { fis(data) }.map_or(0, |s| s.height)
}

unsafe extern "C" fn fis_render(data: *mut c_void, effect: *mut sys::gs_effect_t) {
    // SAFETY: instance contract.
    let Some(s) = (unsafe { fis(data) }) else {
        return;
    };
    let n = s.textures.len().max(1) as u64;
    let count = if s.per_render {
        s.ticks.fetch_add(1, Ordering::Relaxed)
    } else {
        s.ticks.load(Ordering::Relaxed)
    };
    let Some(tex) = s.textures.get((count % n) as usize) else {
        return;
    };
    // SAFETY: libobs calls video_render inside the graphics context with its default
    // effect's "Draw" technique active (the source is not OBS_SOURCE_CUSTOM_DRAW).
    unsafe {
        let param = sys::gs_effect_get_param_by_name(effect, c"image".as_ptr());
        sys::gs_effect_set_texture(param, tex.as_ref().as_ptr());
        sys::gs_draw_sprite(tex.as_ref().as_ptr(), 0, s.width, s.height);
    }
}

unsafe extern "C" fn fis_color_space(
    data: *mut c_void,
    _count: usize,
    _preferred: *const sys::gs_color_space,
) -> sys::gs_color_space {
    // SAFETY: instance contract.
    unsafe { fis(data) }.map_or(sys::GS_CS_SRGB, |s| s.space.raw())
}

/// The module this crate builds, next to the running test or benchmark executable
/// (`target/<profile>/deps/<exe>` → `target/<profile>/libobs_ai_background.so`; cargo builds
/// the `cdylib` before tests and benches).
///
/// # Errors
/// When the file is not there.
pub fn built_module() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join("libobs_ai_background.so"))
        .collect();
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .ok_or_else(|| {
            format!("libobs_ai_background.so not found in {candidates:?}; run `cargo build` first")
        })
}

/// Lays out the module's data folder the way OBS installs it: the effect files of `repo/data`
/// in `dest/`, the locale files of `repo/locale` in `dest/locale/`.
///
/// # Errors
/// On I/O errors.
pub fn stage_module_data(repo: &Path, dest: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dest.join("locale"))?;
    for (from, to) in [
        (repo.join("data"), dest.to_path_buf()),
        (repo.join("locale"), dest.join("locale")),
    ] {
        for entry in std::fs::read_dir(&from)? {
            let path = entry?.path();
            if path.is_file() {
                std::fs::copy(&path, to.join(path.file_name().unwrap_or_default()))?;
            }
        }
    }
    Ok(())
}

impl Drop for Host {
    fn drop(&mut self) {
        self.shutdown();
    }
}
