//! Video filters: the [`VideoFilter`] trait and the `obs_source_info` trampolines.
//!
//! Every trampoline catches panics ([`std::panic::catch_unwind`]) so that none unwinds into
//! C; a panic is logged through OBS's log (see [`log_panic`]). A panic in `video_render`
//! additionally calls [`VideoFilter::render_panicked`] and passes the video through
//! (`obs_source_skip_video_filter`), so the source stays visible.

use super::calldata::CallDataRef;
use super::data::DataRef;
use super::graphics::{ColorSpace, Gfx};
use super::logger::{blog, Level, PREFIX};
use super::properties::Properties;
use super::source::FilterContext;
use super::{cstring, sys};
use std::any::Any;
use std::ffi::CStr;
use std::os::raw::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};

/// A proc the filter adds to its source's proc handler (callable with
/// `proc_handler_call(obs_source_get_proc_handler(filter), name, calldata)`).
pub struct Proc<F> {
    /// The C declaration, e.g. `"void ai_background_mask(in ptr dst, out int width)"`.
    pub decl: &'static str,
    /// Called with the filter and the caller's call data.
    pub call: fn(&F, &mut CallDataRef<'_>),
}

/// A video filter type. One value per filter instance; OBS calls the methods from its UI,
/// video and task threads, so the type must be `Sync` (use interior mutability).
pub trait VideoFilter: Send + Sync + Sized + 'static {
    /// The type id OBS stores in scene collections (never change it).
    const ID: &'static str;

    /// The translated display name (kept for the process lifetime).
    fn display_name() -> &'static CStr;

    /// Creates an instance. Must not fail: problems are logged and the instance passes the
    /// video through until they are fixed.
    fn create(settings: DataRef<'_>, ctx: FilterContext) -> Self;

    /// Applies new settings (UI thread).
    fn update(&self, settings: DataRef<'_>);

    /// Writes the default settings.
    fn defaults(settings: DataRef<'_>);

    /// The settings dialog; `filter` is `None` when OBS asks for the type's properties.
    fn properties(filter: Option<&Self>) -> Properties;

    /// Called once per video frame before rendering (video thread, outside the graphics
    /// context); `seconds` since the previous tick.
    fn video_tick(&self, _seconds: f32) {}

    /// Draws the filtered video into the current render target (video thread, inside the
    /// graphics context).
    fn video_render(&self, gfx: &Gfx<'_>);

    /// The instance's filter context (used to pass the video through after a panic).
    fn context(&self) -> FilterContext;

    /// Called when an async parent source hands a new frame to the filter chain
    /// (`filter_video`; during the render of the parent). The frame passes on unchanged.
    fn async_frame(&self) {}

    /// Called after `video_render` panicked, before the video is passed through.
    fn render_panicked(&self) {}

    /// The colour space the filter draws in, given the spaces the caller prefers, best
    /// first (`video_get_color_space`). The default, 8-bit sRGB, suits filters that only
    /// draw SDR colours.
    fn color_space(&self, _preferred: &[ColorSpace]) -> ColorSpace {
        ColorSpace::Srgb
    }

    /// Called when the filter is removed from its source.
    fn removed(&self) {}

    /// Procs to register on each instance's proc handler.
    fn procs() -> Vec<Proc<Self>> {
        Vec::new()
    }
}

struct ProcRecord<F> {
    filter: *const F,
    call: fn(&F, &mut CallDataRef<'_>),
}

struct Instance<F> {
    filter: F,
    // Boxed so their addresses (registered with OBS) stay put; freed with the instance.
    #[allow(clippy::vec_box)]
    _procs: Vec<Box<ProcRecord<F>>>,
}

static PANICS: AtomicU64 = AtomicU64::new(0);

/// Logs a caught panic through OBS's log: the first 20 with their message, then one line per
/// 1000 (a callback that panics every frame must not flood the log).
pub fn log_panic(what: &str, payload: &Box<dyn Any + Send>) {
    let n = PANICS.fetch_add(1, Ordering::Relaxed) + 1;
    if n > 20 && n % 1000 != 0 {
        return;
    }
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    blog(
        Level::Error,
        &format!("{PREFIX} panic in {what} (caught, passing the video through; {n} so far): {msg}"),
    );
}

fn guard<R>(what: &str, fallback: R, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(e) => {
            log_panic(what, &e);
            fallback
        }
    }
}

/// # Safety
/// `data` is null or an `Instance<F>` made by `create::<F>` and not yet destroyed.
unsafe fn instance<'a, F>(data: *mut c_void) -> Option<&'a Instance<F>> {
    // SAFETY: per the contract.
    unsafe { data.cast::<Instance<F>>().as_ref() }
}

unsafe extern "C" fn get_name<F: VideoFilter>(_type_data: *mut c_void) -> *const c_char {
    guard("get_name", c"AI Background".as_ptr(), || {
        F::display_name().as_ptr()
    })
}

unsafe extern "C" fn create<F: VideoFilter>(
    settings: *mut sys::obs_data_t,
    source: *mut sys::obs_source_t,
) -> *mut c_void {
    // SAFETY: OBS passes the new filter source and its settings.
    let (Some(ctx), Some(settings)) = (unsafe { FilterContext::from_raw(source) }, unsafe {
        DataRef::from_raw(settings)
    }) else {
        return std::ptr::null_mut();
    };
    guard("create", std::ptr::null_mut(), || {
        let filter = F::create(settings, ctx);
        let mut inst = Box::new(Instance {
            filter,
            _procs: Vec::new(),
        });
        let filter_ptr: *const F = &inst.filter;
        let handler = ctx.proc_handler();
        if !handler.is_null() {
            for p in F::procs() {
                let rec = Box::new(ProcRecord {
                    filter: filter_ptr,
                    call: p.call,
                });
                let decl = cstring(p.decl);
                // SAFETY: live handler; OBS parses and copies the declaration; `rec` lives
                // as long as the instance.
                unsafe {
                    sys::proc_handler_add(
                        handler,
                        decl.as_ptr(),
                        Some(proc_trampoline::<F>),
                        (&*rec as *const ProcRecord<F>).cast_mut().cast(),
                    )
                };
                inst._procs.push(rec);
            }
        }
        Box::into_raw(inst).cast()
    })
}

unsafe extern "C" fn proc_trampoline<F: VideoFilter>(data: *mut c_void, cd: *mut sys::calldata_t) {
    // SAFETY: data is a ProcRecord registered by create::<F>, alive with its instance.
    let Some(rec) = (unsafe { data.cast::<ProcRecord<F>>().as_ref() }) else {
        return;
    };
    // SAFETY: OBS passes the caller's call data for the duration of the call.
    let Some(mut cd) = (unsafe { CallDataRef::from_raw(cd) }) else {
        return;
    };
    // SAFETY: the record's filter lives as long as the record.
    let filter = unsafe { &*rec.filter };
    guard("proc", (), || (rec.call)(filter, &mut cd));
}

unsafe extern "C" fn destroy<F: VideoFilter>(data: *mut c_void) {
    if data.is_null() {
        return;
    }
    // SAFETY: made by Box::into_raw in create::<F>; OBS calls destroy once.
    let inst = unsafe { Box::from_raw(data.cast::<Instance<F>>()) };
    guard("destroy", (), move || drop(inst));
}

unsafe extern "C" fn update<F: VideoFilter>(data: *mut c_void, settings: *mut sys::obs_data_t) {
    // SAFETY: instance contract; settings are live for the call.
    if let (Some(inst), Some(settings)) = (unsafe { instance::<F>(data) }, unsafe {
        DataRef::from_raw(settings)
    }) {
        guard("update", (), || inst.filter.update(settings));
    }
}

unsafe extern "C" fn get_defaults<F: VideoFilter>(settings: *mut sys::obs_data_t) {
    // SAFETY: live settings for the call.
    if let Some(settings) = unsafe { DataRef::from_raw(settings) } {
        guard("get_defaults", (), || F::defaults(settings));
    }
}

unsafe extern "C" fn get_properties<F: VideoFilter>(
    data: *mut c_void,
) -> *mut sys::obs_properties_t {
    // SAFETY: instance contract (null allowed).
    let inst = unsafe { instance::<F>(data) };
    guard("get_properties", std::ptr::null_mut(), || {
        F::properties(inst.map(|i| &i.filter)).into_raw()
    })
}

unsafe extern "C" fn video_tick<F: VideoFilter>(data: *mut c_void, seconds: f32) {
    // SAFETY: instance contract.
    if let Some(inst) = unsafe { instance::<F>(data) } {
        guard("video_tick", (), || inst.filter.video_tick(seconds));
    }
}

unsafe extern "C" fn video_render<F: VideoFilter>(
    data: *mut c_void,
    _effect: *mut sys::gs_effect_t,
) {
    // SAFETY: instance contract.
    let Some(inst) = (unsafe { instance::<F>(data) }) else {
        return;
    };
    // SAFETY: OBS calls video_render inside the graphics context.
    let gfx = unsafe { Gfx::assume() };
    if let Err(e) = catch_unwind(AssertUnwindSafe(|| inst.filter.video_render(&gfx))) {
        log_panic("video_render", &e);
        guard("video_render fallback", (), || {
            inst.filter.render_panicked();
            inst.filter.context().skip_video_filter(&gfx);
        });
    }
}

unsafe extern "C" fn filter_video<F: VideoFilter>(
    data: *mut c_void,
    frame: *mut sys::obs_source_frame,
) -> *mut sys::obs_source_frame {
    // SAFETY: instance contract.
    if let Some(inst) = unsafe { instance::<F>(data) } {
        guard("filter_video", (), || inst.filter.async_frame());
    }
    frame
}

unsafe extern "C" fn filter_remove<F: VideoFilter>(
    data: *mut c_void,
    _parent: *mut sys::obs_source_t,
) {
    // SAFETY: instance contract.
    if let Some(inst) = unsafe { instance::<F>(data) } {
        guard("filter_remove", (), || inst.filter.removed());
    }
}

unsafe extern "C" fn video_get_color_space<F: VideoFilter>(
    data: *mut c_void,
    count: usize,
    preferred: *const sys::gs_color_space,
) -> sys::gs_color_space {
    // SAFETY: instance contract.
    let Some(inst) = (unsafe { instance::<F>(data) }) else {
        return sys::GS_CS_SRGB;
    };
    let preferred: Vec<ColorSpace> = if preferred.is_null() {
        Vec::new()
    } else {
        // SAFETY: libobs passes `count` values.
        unsafe { std::slice::from_raw_parts(preferred, count) }
            .iter()
            .map(|&v| ColorSpace::from_raw(v))
            .collect()
    };
    guard("video_get_color_space", sys::GS_CS_SRGB, || {
        inst.filter.color_space(&preferred).raw()
    })
}

/// Registers `F` as a video filter (`obs_register_source`). Call from `obs_module_load`.
pub fn register_video_filter<F: VideoFilter>() {
    let info = sys::obs_source_info {
        id: super::module::leak_cstring(F::ID).as_ptr(),
        type_: sys::OBS_SOURCE_TYPE_FILTER,
        output_flags: sys::OBS_SOURCE_VIDEO | sys::OBS_SOURCE_SRGB,
        get_name: Some(get_name::<F>),
        create: Some(create::<F>),
        destroy: Some(destroy::<F>),
        get_defaults: Some(get_defaults::<F>),
        get_properties: Some(get_properties::<F>),
        update: Some(update::<F>),
        video_tick: Some(video_tick::<F>),
        video_render: Some(video_render::<F>),
        filter_video: Some(filter_video::<F>),
        filter_remove: Some(filter_remove::<F>),
        video_get_color_space: Some(video_get_color_space::<F>),
        ..Default::default()
    };
    // SAFETY: OBS copies the struct; the id string is leaked ('static).
    unsafe { sys::obs_register_source_s(&info, std::mem::size_of::<sys::obs_source_info>()) };
}
