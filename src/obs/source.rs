//! Source references: the filter's own context ([`FilterContext`]), borrowed sources
//! ([`SourceRef`]), strong references ([`Source`], released on drop) and weak references
//! ([`WeakSource`]).

use super::calldata::CallData;
use super::data::Data;
use super::graphics::{ColorSpace, Gfx};
use super::{cstring, string_from, sys};
use std::marker::PhantomData;
use std::os::raw::c_void;
use std::ptr::NonNull;

/// `OBS_SOURCE_ASYNC`: the source pushes frames (webcams, media files).
pub const FLAG_ASYNC: u32 = sys::OBS_SOURCE_ASYNC;
/// `OBS_SOURCE_CUSTOM_DRAW`: the source draws itself without the default effect.
pub const FLAG_CUSTOM_DRAW: u32 = sys::OBS_SOURCE_CUSTOM_DRAW;
/// `OBS_SOURCE_VIDEO`: the source has video.
pub const FLAG_VIDEO: u32 = sys::OBS_SOURCE_VIDEO;

/// A source borrowed from OBS without taking a reference, valid for `'a`.
#[derive(Clone, Copy)]
pub struct SourceRef<'a> {
    ptr: NonNull<sys::obs_source_t>,
    _life: PhantomData<&'a ()>,
}

impl<'a> SourceRef<'a> {
    /// # Safety
    /// `ptr` is null or a source that stays alive for `'a`.
    pub(crate) unsafe fn from_raw(ptr: *mut sys::obs_source_t) -> Option<SourceRef<'a>> {
        NonNull::new(ptr).map(|ptr| SourceRef {
            ptr,
            _life: PhantomData,
        })
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::obs_source_t {
        self.ptr.as_ptr()
    }

    /// The colour space the source renders in, chosen from `preferred` when it can
    /// (`obs_source_get_color_space`; sRGB for sources that do not say).
    pub fn color_space(&self, preferred: &[ColorSpace]) -> ColorSpace {
        let raw: Vec<sys::gs_color_space> = preferred.iter().map(|s| s.raw()).collect();
        // SAFETY: live source; libobs reads `raw.len()` values.
        ColorSpace::from_raw(unsafe {
            sys::obs_source_get_color_space(self.as_ptr(), raw.len(), raw.as_ptr())
        })
    }

    /// Width in pixels (`obs_source_get_width`; 0 before the first frame).
    pub fn width(&self) -> u32 {
        // SAFETY: live source.
        unsafe { sys::obs_source_get_width(self.as_ptr()) }
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        // SAFETY: live source.
        unsafe { sys::obs_source_get_height(self.as_ptr()) }
    }

    /// Base width, before filters and scaling (`obs_source_get_base_width`).
    pub fn base_width(&self) -> u32 {
        // SAFETY: live source.
        unsafe { sys::obs_source_get_base_width(self.as_ptr()) }
    }

    /// Base height.
    pub fn base_height(&self) -> u32 {
        // SAFETY: live source.
        unsafe { sys::obs_source_get_base_height(self.as_ptr()) }
    }

    /// The type's output flags (`OBS_SOURCE_*`).
    pub fn output_flags(&self) -> u32 {
        // SAFETY: live source.
        unsafe { sys::obs_source_get_output_flags(self.as_ptr()) }
    }

    /// The user-visible name.
    pub fn name(&self) -> String {
        // SAFETY: live source; the name is owned by the source.
        unsafe { string_from(sys::obs_source_get_name(self.as_ptr())) }
    }

    /// The type id (e.g. `image_source`).
    pub fn id(&self) -> String {
        // SAFETY: as above.
        unsafe { string_from(sys::obs_source_get_id(self.as_ptr())) }
    }

    /// Whether the source is shown anywhere (preview, program, projector).
    pub fn showing(&self) -> bool {
        // SAFETY: live source.
        unsafe { sys::obs_source_showing(self.as_ptr()) }
    }

    /// Whether the source is enabled (filters can be switched off).
    pub fn enabled(&self) -> bool {
        // SAFETY: live source.
        unsafe { sys::obs_source_enabled(self.as_ptr()) }
    }

    /// True when both refer to the same source.
    pub fn same(&self, other: SourceRef<'_>) -> bool {
        self.ptr == other.ptr
    }

    /// Renders the source (with its filters, unless called from inside its own filter chain)
    /// at its own size into the current render target.
    pub fn video_render(&self, _gfx: &Gfx<'_>) {
        // SAFETY: live source, inside the graphics context (token).
        unsafe { sys::obs_source_video_render(self.as_ptr()) };
    }

    /// Renders the source's own output without its filters (`obs_source_default_render`).
    pub fn default_render(&self, _gfx: &Gfx<'_>) {
        // SAFETY: as above.
        unsafe { sys::obs_source_default_render(self.as_ptr()) };
    }

    /// The current settings (as the properties dialog sees them: updates of video sources
    /// reach their `update` callback only on the next video tick).
    pub fn settings(&self) -> Data {
        // SAFETY: returns a new reference.
        unsafe { Data::from_owned(sys::obs_source_get_settings(self.as_ptr())) }.unwrap_or_default()
    }

    /// Asks an open properties dialog of this source to rebuild itself
    /// (`obs_source_update_properties`: emits the `update_properties` signal, which OBS's
    /// Filters window answers by calling the properties callback again).
    pub fn update_properties(&self) {
        // SAFETY: live source; thread-safe signal emission.
        unsafe { sys::obs_source_update_properties(self.as_ptr()) };
    }

    /// Takes a strong reference.
    pub fn to_owned(&self) -> Option<Source> {
        // SAFETY: live source; get_ref returns null for a source being destroyed.
        NonNull::new(unsafe { sys::obs_source_get_ref(self.as_ptr()) }).map(|ptr| Source { ptr })
    }
}

/// The `obs_source_t` of a filter instance, as OBS passed it to `create`. Valid for as long
/// as the filter instance exists (OBS destroys the instance before the source).
#[derive(Clone, Copy)]
pub struct FilterContext {
    ptr: NonNull<sys::obs_source_t>,
}

// SAFETY: libobs' source functions used here are thread safe; the pointer outlives the
// filter instance that holds the context.
unsafe impl Send for FilterContext {}
// SAFETY: as above.
unsafe impl Sync for FilterContext {}

impl FilterContext {
    /// # Safety
    /// `ptr` is the filter source OBS passed to `create`.
    pub(crate) unsafe fn from_raw(ptr: *mut sys::obs_source_t) -> Option<FilterContext> {
        NonNull::new(ptr).map(|ptr| FilterContext { ptr })
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::obs_source_t {
        self.ptr.as_ptr()
    }

    /// The filter itself as a source.
    pub fn as_source(&self) -> SourceRef<'_> {
        SourceRef {
            ptr: self.ptr,
            _life: PhantomData,
        }
    }

    /// What this filter renders: the parent source, or the previous filter's output.
    pub fn target(&self) -> Option<SourceRef<'_>> {
        // SAFETY: live filter; the target lives while the filter is attached.
        unsafe { SourceRef::from_raw(sys::obs_filter_get_target(self.as_ptr())) }
    }

    /// The source this filter is attached to.
    pub fn parent(&self) -> Option<SourceRef<'_>> {
        // SAFETY: as above.
        unsafe { SourceRef::from_raw(sys::obs_filter_get_parent(self.as_ptr())) }
    }

    /// Renders the target as if this filter were not there (pass-through).
    pub fn skip_video_filter(&self, _gfx: &Gfx<'_>) {
        // SAFETY: live filter, inside the graphics context.
        unsafe { sys::obs_source_skip_video_filter(self.as_ptr()) };
    }

    /// The filter's name.
    pub fn name(&self) -> String {
        self.as_source().name()
    }

    /// The proc handler of the filter source (the filter trampolines add
    /// [`super::filter::VideoFilter::procs`] to it).
    pub(crate) fn proc_handler(&self) -> *mut sys::proc_handler_t {
        // SAFETY: live filter.
        unsafe { sys::obs_source_get_proc_handler(self.as_ptr()) }
    }
}

/// One entry of a source's properties dialog.
#[derive(Clone, Debug)]
pub struct PropertyInfo {
    /// The settings key.
    pub name: String,
    /// The label shown in the dialog.
    pub description: String,
    /// Whether the dialog shows it for the current settings.
    pub visible: bool,
    /// What it is: `bool`, `int`, `float`, `text`, `info` (a read-only text), `path`,
    /// `list`, `color`, `color_alpha` or `other`.
    pub kind: &'static str,
    /// The tooltip (the "?" next to check boxes), empty when none.
    pub long_description: String,
    /// The unit after a slider's value (`" px"`), empty when none.
    pub suffix: String,
    /// A string list's entries: value and whether it can be picked.
    pub items: Vec<(String, bool)>,
}

/// Counts emissions of one signal of a source (disconnects on drop).
pub struct SignalCounter {
    handler: NonNull<sys::signal_handler_t>,
    signal: std::ffi::CString,
    count: Box<std::sync::atomic::AtomicU64>,
    /// Keeps the source (and so its signal handler) alive.
    _source: Source,
}

unsafe extern "C" fn count_signal(param: *mut c_void, _cd: *mut sys::calldata_t) {
    // SAFETY: param is the counter boxed in SignalCounter, alive until disconnect.
    let count = unsafe { &*param.cast::<std::sync::atomic::AtomicU64>() };
    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

impl SignalCounter {
    /// Emissions so far.
    pub fn count(&self) -> u64 {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn param(&self) -> *mut c_void {
        (&*self.count as *const std::sync::atomic::AtomicU64)
            .cast_mut()
            .cast()
    }
}

impl Drop for SignalCounter {
    fn drop(&mut self) {
        // SAFETY: the same handler, signal, callback and param as connected.
        unsafe {
            sys::signal_handler_disconnect(
                self.handler.as_ptr(),
                self.signal.as_ptr(),
                Some(count_signal),
                self.param(),
            )
        };
    }
}

/// A strong reference to a source (released on drop).
pub struct Source {
    ptr: NonNull<sys::obs_source_t>,
}

// SAFETY: sources are reference counted with atomics and their API is thread safe.
unsafe impl Send for Source {}
// SAFETY: as above.
unsafe impl Sync for Source {}

impl Source {
    /// Creates a source of type `id` (`obs_source_create`); `None` for an unknown type.
    pub fn create(id: &str, name: &str, settings: Option<&Data>) -> Option<Source> {
        let (i, n) = (cstring(id), cstring(name));
        let s = settings.map_or(std::ptr::null_mut(), |d| d.as_ptr());
        // SAFETY: valid strings; settings are copied/referenced by OBS.
        let ptr =
            unsafe { sys::obs_source_create(i.as_ptr(), n.as_ptr(), s, std::ptr::null_mut()) };
        NonNull::new(ptr).map(|ptr| Source { ptr })
    }

    /// Creates a private source (not listed in the UI, not saved), e.g. a filter's own media
    /// source.
    pub fn create_private(id: &str, name: &str, settings: Option<&Data>) -> Option<Source> {
        let (i, n) = (cstring(id), cstring(name));
        let s = settings.map_or(std::ptr::null_mut(), |d| d.as_ptr());
        // SAFETY: as above.
        let ptr = unsafe { sys::obs_source_create_private(i.as_ptr(), n.as_ptr(), s) };
        NonNull::new(ptr).map(|ptr| Source { ptr })
    }

    /// Looks a source up by name.
    pub fn by_name(name: &str) -> Option<Source> {
        let n = cstring(name);
        // SAFETY: returns a new reference or null.
        NonNull::new(unsafe { sys::obs_get_source_by_name(n.as_ptr()) }).map(|ptr| Source { ptr })
    }

    /// A borrowed view.
    pub fn as_ref(&self) -> SourceRef<'_> {
        SourceRef {
            ptr: self.ptr,
            _life: PhantomData,
        }
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::obs_source_t {
        self.ptr.as_ptr()
    }

    /// Applies settings (merged into the current ones) and calls the type's `update`.
    pub fn update(&self, settings: &Data) {
        // SAFETY: live source and data.
        unsafe { sys::obs_source_update(self.as_ptr(), settings.as_ptr()) };
    }

    /// The current settings.
    pub fn settings(&self) -> Data {
        // SAFETY: returns a new reference.
        unsafe { Data::from_owned(sys::obs_source_get_settings(self.as_ptr())) }.unwrap_or_default()
    }

    /// A weak reference.
    pub fn weak(&self) -> WeakSource {
        // SAFETY: live source; returns a new weak reference.
        let ptr = unsafe { sys::obs_source_get_weak_source(self.as_ptr()) };
        WeakSource {
            ptr: NonNull::new(ptr).expect("obs_source_get_weak_source returned null"),
        }
    }

    /// Appends `filter` to this source's filter chain.
    pub fn filter_add(&self, filter: &Source) {
        // SAFETY: live sources.
        unsafe { sys::obs_source_filter_add(self.as_ptr(), filter.as_ptr()) };
    }

    /// Removes `filter` from this source's filter chain.
    pub fn filter_remove(&self, filter: &Source) {
        // SAFETY: live sources.
        unsafe { sys::obs_source_filter_remove(self.as_ptr(), filter.as_ptr()) };
    }

    /// Enables or disables the source (for filters: switches the filter on or off).
    pub fn set_enabled(&self, enabled: bool) {
        // SAFETY: live source.
        unsafe { sys::obs_source_set_enabled(self.as_ptr(), enabled) };
    }

    /// Marks the source as shown somewhere (like a projector does); undo with
    /// [`Source::dec_showing`].
    pub fn inc_showing(&self) {
        // SAFETY: live source.
        unsafe { sys::obs_source_inc_showing(self.as_ptr()) };
    }

    /// Undoes one [`Source::inc_showing`].
    pub fn dec_showing(&self) {
        // SAFETY: live source.
        unsafe { sys::obs_source_dec_showing(self.as_ptr()) };
    }

    /// Marks the source as active (playing to the program output); undo with
    /// [`Source::dec_active`].
    pub fn inc_active(&self) {
        // SAFETY: live source.
        unsafe { sys::obs_source_inc_active(self.as_ptr()) };
    }

    /// Undoes one [`Source::inc_active`].
    pub fn dec_active(&self) {
        // SAFETY: live source.
        unsafe { sys::obs_source_dec_active(self.as_ptr()) };
    }

    /// Marks the source as removed (it is destroyed when the last reference goes).
    pub fn remove(&self) {
        // SAFETY: live source.
        unsafe { sys::obs_source_remove(self.as_ptr()) };
    }

    /// The properties dialog as OBS would build it for the current settings (modified
    /// callbacks applied), flattened.
    pub fn properties(&self) -> Vec<PropertyInfo> {
        let mut out = Vec::new();
        // SAFETY: live source; the properties and settings references are released below.
        unsafe {
            let props = sys::obs_source_properties(self.as_ptr());
            if props.is_null() {
                return out;
            }
            let settings = sys::obs_source_get_settings(self.as_ptr());
            sys::obs_properties_apply_settings(props, settings);
            let mut p = sys::obs_properties_first(props);
            while !p.is_null() {
                let kind = match sys::obs_property_get_type(p) {
                    sys::OBS_PROPERTY_BOOL => "bool",
                    sys::OBS_PROPERTY_INT => "int",
                    sys::OBS_PROPERTY_FLOAT => "float",
                    sys::OBS_PROPERTY_TEXT
                        if sys::obs_property_text_type(p) == sys::OBS_TEXT_INFO =>
                    {
                        "info"
                    }
                    sys::OBS_PROPERTY_TEXT => "text",
                    sys::OBS_PROPERTY_PATH => "path",
                    sys::OBS_PROPERTY_LIST => "list",
                    sys::OBS_PROPERTY_COLOR => "color",
                    sys::OBS_PROPERTY_COLOR_ALPHA => "color_alpha",
                    _ => "other",
                };
                let suffix = match kind {
                    "int" => string_from(sys::obs_property_int_suffix(p)),
                    "float" => string_from(sys::obs_property_float_suffix(p)),
                    _ => String::new(),
                };
                let items = if kind == "list" {
                    (0..sys::obs_property_list_item_count(p))
                        .map(|i| {
                            (
                                string_from(sys::obs_property_list_item_string(p, i)),
                                !sys::obs_property_list_item_disabled(p, i),
                            )
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                out.push(PropertyInfo {
                    name: string_from(sys::obs_property_name(p)),
                    description: string_from(sys::obs_property_description(p)),
                    visible: sys::obs_property_visible(p),
                    kind,
                    long_description: string_from(sys::obs_property_long_description(p)),
                    suffix,
                    items,
                });
                if !sys::obs_property_next(&mut p) {
                    break;
                }
            }
            sys::obs_data_release(settings);
            sys::obs_properties_destroy(props);
        }
        out
    }

    /// Counts the source's `signal` emissions (e.g. `"update_properties"`) from now on.
    pub fn count_signal(&self, signal: &str) -> Option<SignalCounter> {
        // SAFETY: live source; its signal handler lives as long as the source, which the
        // counter keeps a reference to.
        let handler = NonNull::new(unsafe { sys::obs_source_get_signal_handler(self.as_ptr()) })?;
        let counter = SignalCounter {
            handler,
            signal: cstring(signal),
            count: Box::new(std::sync::atomic::AtomicU64::new(0)),
            _source: self.clone(),
        };
        // SAFETY: the callback only touches the boxed counter, disconnected before it drops.
        unsafe {
            sys::signal_handler_connect(
                handler.as_ptr(),
                counter.signal.as_ptr(),
                Some(count_signal),
                counter.param(),
            )
        };
        Some(counter)
    }

    /// Pauses or resumes a media source (`obs_source_media_play_pause`).
    pub fn media_play_pause(&self, pause: bool) {
        // SAFETY: live source; a no-op for sources that are not media.
        unsafe { sys::obs_source_media_play_pause(self.as_ptr(), pause) };
    }

    /// Seeks a media source to `ms` milliseconds (`obs_source_media_set_time`); works while
    /// paused.
    pub fn media_set_time(&self, ms: i64) {
        // SAFETY: live source; a no-op for sources that are not media.
        unsafe { sys::obs_source_media_set_time(self.as_ptr(), ms) };
    }

    /// The position of a media source in milliseconds (`obs_source_media_get_time`).
    pub fn media_time(&self) -> i64 {
        // SAFETY: live source; 0 for sources that are not media.
        unsafe { sys::obs_source_media_get_time(self.as_ptr()) }
    }

    /// Calls the proc `name` on the source's proc handler; false when there is no such proc.
    pub fn call_proc(&self, name: &str, data: &mut CallData) -> bool {
        let n = cstring(name);
        // SAFETY: live source; the handler belongs to it.
        unsafe {
            let ph = sys::obs_source_get_proc_handler(self.as_ptr());
            !ph.is_null() && sys::proc_handler_call(ph, n.as_ptr(), data.as_mut_ptr())
        }
    }
}

impl Clone for Source {
    fn clone(&self) -> Self {
        // SAFETY: adds a reference to a live source.
        unsafe { sys::obs_source_addref(self.as_ptr()) };
        Source { ptr: self.ptr }
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        // SAFETY: we own one reference.
        unsafe { sys::obs_source_release(self.as_ptr()) };
    }
}

/// A weak reference to a source (released on drop); does not keep the source alive.
pub struct WeakSource {
    ptr: NonNull<sys::obs_weak_source_t>,
}

// SAFETY: weak references are reference counted with atomics.
unsafe impl Send for WeakSource {}
// SAFETY: as above.
unsafe impl Sync for WeakSource {}

impl WeakSource {
    /// A strong reference, if the source still exists.
    pub fn upgrade(&self) -> Option<Source> {
        // SAFETY: live weak reference; returns a new strong reference or null.
        NonNull::new(unsafe { sys::obs_weak_source_get_source(self.ptr.as_ptr()) })
            .map(|ptr| Source { ptr })
    }

    /// True when this refers to `source`.
    pub fn references(&self, source: SourceRef<'_>) -> bool {
        // SAFETY: live weak reference and source.
        unsafe { sys::obs_weak_source_references_source(self.ptr.as_ptr(), source.as_ptr()) }
    }
}

impl Drop for WeakSource {
    fn drop(&mut self) {
        // SAFETY: we own one weak reference.
        unsafe { sys::obs_weak_source_release(self.ptr.as_ptr()) };
    }
}

unsafe extern "C" fn collect_video_source(
    param: *mut c_void,
    source: *mut sys::obs_source_t,
) -> bool {
    // SAFETY: param is the Vec passed by video_source_names; source is live during the call.
    let out = unsafe { &mut *param.cast::<Vec<String>>() };
    if let Some(s) = unsafe { SourceRef::from_raw(source) } {
        if s.output_flags() & FLAG_VIDEO != 0 {
            out.push(s.name());
        }
    }
    true
}

/// Names of all public input sources that have video (for a "pick a source" list).
pub fn video_source_names() -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    // SAFETY: the callback only touches `names` during the call.
    unsafe {
        sys::obs_enum_sources(
            Some(collect_video_source),
            (&mut names as *mut Vec<String>).cast(),
        )
    };
    names.sort();
    names
}

/// The display name of a registered source type (e.g. `"AI Background"`), if registered.
pub fn type_display_name(id: &str) -> Option<String> {
    let i = cstring(id);
    // SAFETY: returns a string owned by the type, or null.
    let p = unsafe { sys::obs_source_get_display_name(i.as_ptr()) };
    (!p.is_null()).then(|| unsafe { string_from(p) })
}
