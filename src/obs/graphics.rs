//! Graphics: the context token, effects with their params and techniques, textures,
//! texrenders, stage surfaces, and guards for blend and sRGB state.
//!
//! Every call that touches the GPU takes a [`Gfx`] token, which only exists inside the
//! graphics context: OBS's render callbacks receive one, and [`GraphicsGuard::enter`] makes
//! one elsewhere (`obs_enter_graphics` / `obs_leave_graphics`). Objects free their GPU
//! resources on drop, entering the context themselves (the context is re-entrant).

use super::{cstring, string_from, sys};
use std::ffi::CStr;
use std::marker::PhantomData;
use std::path::Path;
use std::ptr::NonNull;

/// Proof of being inside the OBS graphics context on this thread (not `Send`).
pub struct Gfx<'a> {
    _not_send: PhantomData<*const ()>,
    _life: PhantomData<&'a ()>,
}

impl Gfx<'_> {
    /// # Safety
    /// The calling thread is inside the graphics context for the token's lifetime (OBS's
    /// `video_render` callbacks are).
    pub(crate) unsafe fn assume() -> Gfx<'static> {
        Gfx {
            _not_send: PhantomData,
            _life: PhantomData,
        }
    }
}

/// Holds the graphics context (`obs_enter_graphics`) until dropped.
pub struct GraphicsGuard {
    _not_send: PhantomData<*const ()>,
}

impl GraphicsGuard {
    /// Enters the graphics context (blocks while the video thread renders a frame).
    pub fn enter() -> GraphicsGuard {
        // SAFETY: re-entrant; balanced by Drop.
        unsafe { sys::obs_enter_graphics() };
        GraphicsGuard {
            _not_send: PhantomData,
        }
    }

    /// The token for calls inside this context.
    pub fn gfx(&self) -> Gfx<'_> {
        Gfx {
            _not_send: PhantomData,
            _life: PhantomData,
        }
    }
}

impl Drop for GraphicsGuard {
    fn drop(&mut self) {
        // SAFETY: balances the enter in `enter`.
        unsafe { sys::obs_leave_graphics() };
    }
}

/// Runs `f` inside the graphics context (for freeing GPU objects from any thread).
fn with_graphics(f: impl FnOnce()) {
    let _g = GraphicsGuard::enter();
    f();
}

/// Texture formats used by this crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// 8-bit blue, green, red, alpha (`GS_BGRA`).
    Bgra,
    /// 8-bit red, green, blue, alpha (`GS_RGBA`).
    Rgba,
    /// One 32-bit float channel (`GS_R32F`).
    R32f,
    /// Two 32-bit float channels (`GS_RG32F`).
    Rg32f,
    /// Four 32-bit float channels (`GS_RGBA32F`).
    Rgba32f,
    /// Four 16-bit float channels (`GS_RGBA16F`): what OBS renders extended-range and HDR
    /// colour spaces into.
    Rgba16f,
}

impl Format {
    fn raw(self) -> sys::gs_color_format {
        match self {
            Format::Bgra => sys::GS_BGRA,
            Format::Rgba => sys::GS_RGBA,
            Format::R32f => sys::GS_R32F,
            Format::Rg32f => sys::GS_RG32F,
            Format::Rgba32f => sys::GS_RGBA32F,
            Format::Rgba16f => sys::GS_RGBA16F,
        }
    }

    /// Bytes per pixel.
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            Format::Bgra | Format::Rgba | Format::R32f => 4,
            Format::Rgba16f | Format::Rg32f => 8,
            Format::Rgba32f => 16,
        }
    }
}

/// The colour spaces of OBS 28+ (`enum gs_color_space`), as its "High-precision color spaces
/// (including HDR)" design describes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorSpace {
    /// 8-bit sRGB, values 0..1 stored sRGB-encoded (`GS_CS_SRGB`).
    Srgb,
    /// sRGB primaries in 16-bit float, linear values 0..1 (`GS_CS_SRGB_16F`).
    Srgb16f,
    /// Rec. 709 primaries, linear, values above 1.0 allowed (`GS_CS_709_EXTENDED`; 1.0 is
    /// the SDR white level).
    Rec709Extended,
    /// Rec. 709 primaries, linear, 1.0 = 80 nits (`GS_CS_709_SCRGB`: HDR canvases).
    Rec709Scrgb,
}

impl ColorSpace {
    /// From libobs' value (unknown values count as sRGB).
    pub fn from_raw(v: sys::gs_color_space) -> ColorSpace {
        match v {
            sys::GS_CS_SRGB_16F => ColorSpace::Srgb16f,
            sys::GS_CS_709_EXTENDED => ColorSpace::Rec709Extended,
            sys::GS_CS_709_SCRGB => ColorSpace::Rec709Scrgb,
            _ => ColorSpace::Srgb,
        }
    }

    /// libobs' value.
    pub fn raw(self) -> sys::gs_color_space {
        match self {
            ColorSpace::Srgb => sys::GS_CS_SRGB,
            ColorSpace::Srgb16f => sys::GS_CS_SRGB_16F,
            ColorSpace::Rec709Extended => sys::GS_CS_709_EXTENDED,
            ColorSpace::Rec709Scrgb => sys::GS_CS_709_SCRGB,
        }
    }

    /// The texture format OBS renders this space into (`gs_get_format_from_space`).
    pub fn format(self) -> Format {
        match self {
            ColorSpace::Srgb => Format::Rgba,
            _ => Format::Rgba16f,
        }
    }

    /// Whether values are stored linear (every space but 8-bit sRGB).
    pub fn is_linear(self) -> bool {
        self != ColorSpace::Srgb
    }
}

/// The sRGB transfer function's inverse (IEC 61966-2-1): an sRGB-encoded value 0..1 to
/// linear light 0..1, as `srgb_to_linear` in `data/ai_background.effect` and OBS's
/// `srgb_nonlinear_to_linear`.
pub fn srgb_to_linear(v: f32) -> f32 {
    if v <= 0.04045 {
        v / 12.92
    } else {
        ((v + 0.055) / 1.055).powf(2.4)
    }
}

/// The colour space of the current render target (`gs_get_color_space`).
pub fn current_color_space(_gfx: &Gfx<'_>) -> ColorSpace {
    // SAFETY: inside the graphics context (token).
    ColorSpace::from_raw(unsafe { sys::gs_get_color_space() })
}

/// OBS's default SDR white level in nits (the front-end's "SDR White Level" setting).
pub const DEFAULT_SDR_WHITE_LEVEL: f32 = 300.0;

/// OBS's SDR white level in nits (`obs_get_video_sdr_white_level`): the brightness of 1.0 in
/// the relative spaces; scRGB's 1.0 is 80 nits. [`DEFAULT_SDR_WHITE_LEVEL`] when libobs has
/// none (a host that never called `obs_set_video_levels` reads 0).
pub fn sdr_white_level() -> f32 {
    // SAFETY: plain getter.
    let v = unsafe { sys::obs_get_video_sdr_white_level() };
    if v.is_finite() && v > 0.0 {
        v
    } else {
        DEFAULT_SDR_WHITE_LEVEL
    }
}

/// A texture borrowed from its owner (a [`Texture`] or a [`TexRender`]).
#[derive(Clone, Copy)]
pub struct TextureRef<'a> {
    ptr: NonNull<sys::gs_texture_t>,
    _life: PhantomData<&'a ()>,
}

impl TextureRef<'_> {
    /// The raw texture, for the headless test host's own effect calls (Linux only, as the
    /// host is).
    #[cfg(target_os = "linux")]
    pub(crate) fn as_ptr(&self) -> *mut sys::gs_texture_t {
        self.ptr.as_ptr()
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        // SAFETY: live texture.
        unsafe { sys::gs_texture_get_width(self.ptr.as_ptr()) }
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        // SAFETY: live texture.
        unsafe { sys::gs_texture_get_height(self.ptr.as_ptr()) }
    }
}

/// An owned 2D texture (destroyed on drop).
pub struct Texture {
    ptr: NonNull<sys::gs_texture_t>,
    width: u32,
    height: u32,
    format: Format,
}

// SAFETY: a texture handle may be used and freed from any thread inside the graphics context,
// which every method and Drop enforce.
unsafe impl Send for Texture {}

impl Texture {
    /// Creates a `width` x `height` texture. `dynamic` textures can be rewritten with
    /// [`Texture::set_image`]; `data`, if given, is the initial content (tightly packed rows).
    /// `None` when the size is zero, `data` is too short, or the device refuses.
    pub fn new(
        _gfx: &Gfx<'_>,
        width: u32,
        height: u32,
        format: Format,
        dynamic: bool,
        data: Option<&[u8]>,
    ) -> Option<Texture> {
        if width == 0 || height == 0 {
            return None;
        }
        let needed = width as usize * height as usize * format.bytes_per_pixel();
        if data.is_some_and(|d| d.len() < needed) {
            return None;
        }
        let mut level: *const u8 = data.map_or(std::ptr::null(), |d| d.as_ptr());
        let levels: *mut *const u8 = if data.is_some() {
            &mut level
        } else {
            std::ptr::null_mut()
        };
        let flags = if dynamic { sys::GS_DYNAMIC } else { 0 };
        // SAFETY: inside the graphics context (token); `levels` points to one level of
        // `needed` bytes or is null.
        let ptr = unsafe { sys::gs_texture_create(width, height, format.raw(), 1, levels, flags) };
        NonNull::new(ptr).map(|ptr| Texture {
            ptr,
            width,
            height,
            format,
        })
    }

    /// Replaces the content of a dynamic texture. `linesize` is the byte distance between
    /// rows of `data`. Returns false (and uploads nothing) if `data` is too short.
    pub fn set_image(&self, _gfx: &Gfx<'_>, data: &[u8], linesize: usize) -> bool {
        let row = self.width as usize * self.format.bytes_per_pixel();
        if linesize < row || data.len() < linesize * (self.height as usize - 1) + row {
            return false;
        }
        // SAFETY: live dynamic texture, inside the context; data holds `height` rows.
        unsafe {
            sys::gs_texture_set_image(self.ptr.as_ptr(), data.as_ptr(), linesize as u32, false)
        };
        true
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The pixel format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// A borrowed handle for binding to effect params.
    pub fn as_ref(&self) -> TextureRef<'_> {
        TextureRef {
            ptr: self.ptr,
            _life: PhantomData,
        }
    }
}

impl Drop for Texture {
    fn drop(&mut self) {
        let p = self.ptr.as_ptr();
        // SAFETY: owned texture, destroyed once inside the context.
        with_graphics(|| unsafe { sys::gs_texture_destroy(p) });
    }
}

/// A render target texture (`gs_texrender_t`): render into it, then sample its texture.
pub struct TexRender {
    ptr: NonNull<sys::gs_texrender_t>,
    format: Format,
}

// SAFETY: as for Texture.
unsafe impl Send for TexRender {}

impl TexRender {
    /// A texrender of `format` without depth buffer.
    pub fn new(_gfx: &Gfx<'_>, format: Format) -> Option<TexRender> {
        // SAFETY: inside the context.
        NonNull::new(unsafe { sys::gs_texrender_create(format.raw(), sys::GS_ZS_NONE) })
            .map(|ptr| TexRender { ptr, format })
    }

    /// The texture format it was created with.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Starts rendering into a `width` x `height` target (resized as needed), with an
    /// identity transform and a viewport of the full target; rendering ends when the returned
    /// scope drops. Resets the texrender first, so it can be used several times a frame.
    /// `None` for a zero size or when the device fails. The target is 8-bit sRGB for what
    /// is drawn into it ([`TexRender::render_in`] for other colour spaces).
    pub fn render<'a>(
        &'a mut self,
        gfx: &'a Gfx<'_>,
        width: u32,
        height: u32,
    ) -> Option<TexRenderScope<'a>> {
        self.render_in(gfx, width, height, ColorSpace::Srgb)
    }

    /// As [`TexRender::render`], with `space` as the colour space sources drawn into it see
    /// ([`current_color_space`]; `gs_texrender_begin_with_color_space`).
    pub fn render_in<'a>(
        &'a mut self,
        _gfx: &'a Gfx<'_>,
        width: u32,
        height: u32,
        space: ColorSpace,
    ) -> Option<TexRenderScope<'a>> {
        if width == 0 || height == 0 {
            return None;
        }
        // SAFETY: live texrender inside the context.
        unsafe { sys::gs_texrender_reset(self.ptr.as_ptr()) };
        // SAFETY: as above.
        let ok = unsafe {
            sys::gs_texrender_begin_with_color_space(self.ptr.as_ptr(), width, height, space.raw())
        };
        ok.then_some(TexRenderScope {
            ptr: self.ptr,
            _life: PhantomData,
        })
    }

    /// The rendered texture (after a completed [`TexRender::render`]).
    pub fn texture(&self) -> Option<TextureRef<'_>> {
        // SAFETY: live texrender; the texture is owned by it.
        NonNull::new(unsafe { sys::gs_texrender_get_texture(self.ptr.as_ptr()) }).map(|ptr| {
            TextureRef {
                ptr,
                _life: PhantomData,
            }
        })
    }
}

impl Drop for TexRender {
    fn drop(&mut self) {
        let p = self.ptr.as_ptr();
        // SAFETY: owned, destroyed once inside the context.
        with_graphics(|| unsafe { sys::gs_texrender_destroy(p) });
    }
}

/// An active [`TexRender::render`]; ends the render (restoring the previous target,
/// viewport and projection) on drop.
pub struct TexRenderScope<'a> {
    ptr: NonNull<sys::gs_texrender_t>,
    _life: PhantomData<&'a mut TexRender>,
}

impl Drop for TexRenderScope<'_> {
    fn drop(&mut self) {
        // SAFETY: balances a successful gs_texrender_begin.
        unsafe { sys::gs_texrender_end(self.ptr.as_ptr()) };
    }
}

/// A stage surface: a CPU-readable copy of a texture (`gs_stagesurf_t`).
pub struct StageSurface {
    ptr: NonNull<sys::gs_stagesurf_t>,
    width: u32,
    height: u32,
}

// SAFETY: as for Texture.
unsafe impl Send for StageSurface {}

impl StageSurface {
    /// A `width` x `height` stage surface of `format`.
    pub fn new(_gfx: &Gfx<'_>, width: u32, height: u32, format: Format) -> Option<StageSurface> {
        if width == 0 || height == 0 {
            return None;
        }
        // SAFETY: inside the context.
        NonNull::new(unsafe { sys::gs_stagesurface_create(width, height, format.raw()) })
            .map(|ptr| StageSurface { ptr, width, height })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Queues a copy of `texture` (same size and format) into this surface. The copy runs on
    /// the GPU; map the surface a frame later so that [`StageSurface::map`] does not wait.
    pub fn stage(&self, _gfx: &Gfx<'_>, texture: TextureRef<'_>) {
        // SAFETY: live objects inside the context.
        unsafe { sys::gs_stage_texture(self.ptr.as_ptr(), texture.ptr.as_ptr()) };
    }

    /// Maps the surface for reading; unmapped when the returned view drops.
    pub fn map<'a>(&'a self, _gfx: &'a Gfx<'_>) -> Option<MappedSurface<'a>> {
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut linesize: u32 = 0;
        // SAFETY: live surface inside the context.
        let ok = unsafe { sys::gs_stagesurface_map(self.ptr.as_ptr(), &mut data, &mut linesize) };
        if !ok || data.is_null() || linesize == 0 {
            return None;
        }
        let len = linesize as usize * self.height as usize;
        Some(MappedSurface {
            surface: self,
            // SAFETY: a mapped surface holds `height` rows of `linesize` bytes until unmapped.
            data: unsafe { std::slice::from_raw_parts(data, len) },
            linesize: linesize as usize,
        })
    }
}

impl Drop for StageSurface {
    fn drop(&mut self) {
        let p = self.ptr.as_ptr();
        // SAFETY: owned, destroyed once inside the context.
        with_graphics(|| unsafe { sys::gs_stagesurface_destroy(p) });
    }
}

/// A mapped [`StageSurface`]: `height` rows of `linesize` bytes.
pub struct MappedSurface<'a> {
    surface: &'a StageSurface,
    data: &'a [u8],
    linesize: usize,
}

impl MappedSurface<'_> {
    /// The pixels (`linesize * height` bytes).
    pub fn data(&self) -> &[u8] {
        self.data
    }

    /// Bytes from one row to the next (at least `width * bytes per pixel`).
    pub fn linesize(&self) -> usize {
        self.linesize
    }
}

impl Drop for MappedSurface<'_> {
    fn drop(&mut self) {
        // SAFETY: balances the successful map; still inside the context (the view borrows
        // the Gfx token).
        unsafe { sys::gs_stagesurface_unmap(self.surface.ptr.as_ptr()) };
    }
}

/// A handle to one param of an [`Effect`] (an index; valid only with the effect that made it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param(usize);

/// A compiled effect file (`gs_effect_t`) with the params looked up by [`Effect::param`].
pub struct Effect {
    ptr: NonNull<sys::gs_effect_t>,
    params: Vec<NonNull<sys::gs_eparam_t>>,
}

// SAFETY: as for Texture.
unsafe impl Send for Effect {}

impl Effect {
    /// Compiles an effect file. Errors carry the compiler's message.
    pub fn from_file(_gfx: &Gfx<'_>, path: &Path) -> Result<Effect, String> {
        let p = cstring(&path.to_string_lossy());
        let mut err: *mut std::os::raw::c_char = std::ptr::null_mut();
        // SAFETY: inside the context; `err` receives a bmalloc'd string or stays null.
        let ptr = unsafe { sys::gs_effect_create_from_file(p.as_ptr(), &mut err) };
        let message = if err.is_null() {
            String::new()
        } else {
            // SAFETY: NUL-terminated, freed right after.
            let m = unsafe { string_from(err) };
            unsafe { sys::bfree(err.cast()) };
            m
        };
        match NonNull::new(ptr) {
            Some(ptr) => Ok(Effect {
                ptr,
                params: Vec::new(),
            }),
            None if message.is_empty() => Err(format!("cannot load effect {}", path.display())),
            None => Err(format!(
                "cannot compile effect {}: {message}",
                path.display()
            )),
        }
    }

    /// Looks up a param by name.
    pub fn param(&mut self, name: &str) -> Option<Param> {
        let n = cstring(name);
        // SAFETY: live effect; the param is owned by it.
        let p = NonNull::new(unsafe {
            sys::gs_effect_get_param_by_name(self.ptr.as_ptr(), n.as_ptr())
        })?;
        self.params.push(p);
        Some(Param(self.params.len() - 1))
    }

    fn raw(&self, p: Param) -> *mut sys::gs_eparam_t {
        self.params[p.0].as_ptr()
    }

    /// Sets a `float` param.
    pub fn set_float(&self, p: Param, v: f32) {
        // SAFETY: a param of this live effect.
        unsafe { sys::gs_effect_set_float(self.raw(p), v) };
    }

    /// Sets an `int` param.
    pub fn set_int(&self, p: Param, v: i32) {
        // SAFETY: as above.
        unsafe { sys::gs_effect_set_int(self.raw(p), v) };
    }

    /// Sets a `float2` param.
    pub fn set_vec2(&self, p: Param, v: [f32; 2]) {
        let v = sys::vec2 {
            __bindgen_anon_1: sys::vec2__bindgen_ty_1 { ptr: v },
        };
        // SAFETY: as above; OBS copies the value.
        unsafe { sys::gs_effect_set_vec2(self.raw(p), &v) };
    }

    /// Sets a `float4` param.
    pub fn set_vec4(&self, p: Param, v: [f32; 4]) {
        let v = sys::vec4 {
            __bindgen_anon_1: sys::vec4__bindgen_ty_1 { ptr: v },
        };
        // SAFETY: as above.
        unsafe { sys::gs_effect_set_vec4(self.raw(p), &v) };
    }

    /// Binds a texture (sampled as stored, without sRGB decoding), or unbinds with `None`.
    pub fn set_texture(&self, p: Param, t: Option<TextureRef<'_>>) {
        let tex = t.map_or(std::ptr::null_mut(), |t| t.ptr.as_ptr());
        // SAFETY: as above; the texture outlives the draw that uses it (caller's duty, and a
        // dangling binding is never drawn: every draw rebinds).
        unsafe { sys::gs_effect_set_texture(self.raw(p), tex) };
    }

    /// Draws a `width` x `height` sprite (UV 0..1 over it) with `technique`, all passes.
    /// Returns false when the technique does not exist.
    pub fn draw_sprite(&self, _gfx: &Gfx<'_>, technique: &CStr, width: u32, height: u32) -> bool {
        // SAFETY: live effect inside the context; every begin is matched by its end.
        unsafe {
            let tech = sys::gs_effect_get_technique(self.ptr.as_ptr(), technique.as_ptr());
            if tech.is_null() {
                return false;
            }
            let passes = sys::gs_technique_begin(tech);
            for i in 0..passes {
                if sys::gs_technique_begin_pass(tech, i) {
                    sys::gs_draw_sprite(std::ptr::null_mut(), 0, width, height);
                    sys::gs_technique_end_pass(tech);
                }
            }
            sys::gs_technique_end(tech);
        }
        true
    }
}

impl Drop for Effect {
    fn drop(&mut self) {
        let p = self.ptr.as_ptr();
        // SAFETY: owned, destroyed once inside the context.
        with_graphics(|| unsafe { sys::gs_effect_destroy(p) });
    }
}

/// Blend factors.
#[derive(Clone, Copy, Debug)]
pub enum Blend {
    /// 0.
    Zero,
    /// 1.
    One,
    /// Source alpha.
    SrcAlpha,
    /// 1 - source alpha.
    InvSrcAlpha,
}

impl Blend {
    fn raw(self) -> sys::gs_blend_type {
        match self {
            Blend::Zero => sys::GS_BLEND_ZERO,
            Blend::One => sys::GS_BLEND_ONE,
            Blend::SrcAlpha => sys::GS_BLEND_SRCALPHA,
            Blend::InvSrcAlpha => sys::GS_BLEND_INVSRCALPHA,
        }
    }
}

/// Saves the blend state and framebuffer-sRGB flag; restores both on drop.
pub struct StateGuard<'a> {
    srgb: bool,
    _gfx: PhantomData<&'a Gfx<'a>>,
}

impl<'a> StateGuard<'a> {
    /// Pushes the blend state and remembers the sRGB flag.
    pub fn push(_gfx: &'a Gfx<'_>) -> StateGuard<'a> {
        // SAFETY: inside the context; popped on drop.
        let srgb = unsafe {
            sys::gs_blend_state_push();
            sys::gs_framebuffer_srgb_enabled()
        };
        StateGuard {
            srgb,
            _gfx: PhantomData,
        }
    }

    /// Sets the blend function (`src * source + dst * destination`) and enables blending.
    pub fn blend(&self, src: Blend, dst: Blend) {
        // SAFETY: inside the context.
        unsafe {
            sys::gs_enable_blending(true);
            sys::gs_blend_function(src.raw(), dst.raw());
        }
    }

    /// Sets separate colour and alpha blend functions and enables blending.
    pub fn blend_separate(&self, src_c: Blend, dst_c: Blend, src_a: Blend, dst_a: Blend) {
        // SAFETY: inside the context.
        unsafe {
            sys::gs_enable_blending(true);
            sys::gs_blend_function_separate(src_c.raw(), dst_c.raw(), src_a.raw(), dst_a.raw());
        }
    }

    /// Turns blending off (the shader output is written as is).
    pub fn no_blend(&self) {
        // SAFETY: inside the context.
        unsafe { sys::gs_enable_blending(false) };
    }

    /// Turns the framebuffer's linear-to-sRGB conversion on or off.
    pub fn framebuffer_srgb(&self, enabled: bool) {
        // SAFETY: inside the context.
        unsafe { sys::gs_enable_framebuffer_srgb(enabled) };
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: balances the push.
        unsafe {
            sys::gs_enable_framebuffer_srgb(self.srgb);
            sys::gs_blend_state_pop();
        }
    }
}

/// Clears the colour of the current render target to `rgba`.
pub fn clear(_gfx: &Gfx<'_>, rgba: [f32; 4]) {
    let c = sys::vec4 {
        __bindgen_anon_1: sys::vec4__bindgen_ty_1 { ptr: rgba },
    };
    // SAFETY: inside the context.
    unsafe { sys::gs_clear(sys::GS_CLEAR_COLOR, &c, 0.0, 0) };
}

/// Sets an orthographic projection mapping `(0, 0)..(width, height)` to the render target.
pub fn ortho(_gfx: &Gfx<'_>, width: f32, height: f32) {
    // SAFETY: inside the context.
    unsafe { sys::gs_ortho(0.0, width, 0.0, height, -100.0, 100.0) };
}

/// Flushes queued GPU commands (lets the GPU start on them; does not wait).
pub fn flush(_gfx: &Gfx<'_>) {
    // SAFETY: inside the context.
    unsafe { sys::gs_flush() };
}
