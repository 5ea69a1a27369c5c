//! The properties UI (`obs_properties_t`): what the filter's settings dialog shows.

use super::data::DataRef;
use super::{cstring, sys};
use std::marker::PhantomData;
use std::os::raw::{c_int, c_void};
use std::ptr::NonNull;

/// A properties set being built; handed to OBS by the filter trampolines (destroyed on
/// drop otherwise).
pub struct Properties {
    ptr: NonNull<sys::obs_properties_t>,
}

/// A property inside a [`Properties`] set (owned by the set).
#[derive(Clone, Copy)]
pub struct Property<'a> {
    ptr: NonNull<sys::obs_property_t>,
    _life: PhantomData<&'a ()>,
}

/// A properties set borrowed inside a modified callback.
#[derive(Clone, Copy)]
pub struct PropertiesRef<'a> {
    ptr: NonNull<sys::obs_properties_t>,
    _life: PhantomData<&'a ()>,
}

/// What a path property picks.
#[derive(Clone, Copy, Debug)]
pub enum PathKind {
    /// An existing file (`OBS_PATH_FILE`).
    File,
    /// A directory (`OBS_PATH_DIRECTORY`).
    Directory,
}

/// Called when a property changes in the dialog; returns true when the dialog must refresh
/// (e.g. after changing which properties are visible).
pub type ModifiedFn = fn(PropertiesRef<'_>, DataRef<'_>) -> bool;

impl Properties {
    /// An empty set.
    pub fn new() -> Properties {
        // SAFETY: plain constructor.
        let ptr = unsafe { sys::obs_properties_create() };
        Properties {
            ptr: NonNull::new(ptr).expect("obs_properties_create returned null"),
        }
    }

    fn wrap(&self, p: *mut sys::obs_property_t) -> Property<'_> {
        Property {
            ptr: NonNull::new(p).expect("OBS refused to add a property (duplicate name?)"),
            _life: PhantomData,
        }
    }

    /// A drop-down list of strings; fill it with [`Property::list_add_string`].
    pub fn add_string_list(&self, key: &str, desc: &str, editable: bool) -> Property<'_> {
        let (k, d) = (cstring(key), cstring(desc));
        let kind = if editable {
            sys::OBS_COMBO_TYPE_EDITABLE
        } else {
            sys::OBS_COMBO_TYPE_LIST
        };
        // SAFETY: live set; OBS copies the strings.
        self.wrap(unsafe {
            sys::obs_properties_add_list(
                self.ptr.as_ptr(),
                k.as_ptr(),
                d.as_ptr(),
                kind,
                sys::OBS_COMBO_FORMAT_STRING,
            )
        })
    }

    /// A float slider from `min` to `max` in steps of `step`.
    pub fn add_float_slider(
        &self,
        key: &str,
        desc: &str,
        min: f64,
        max: f64,
        step: f64,
    ) -> Property<'_> {
        let (k, d) = (cstring(key), cstring(desc));
        // SAFETY: as above.
        self.wrap(unsafe {
            sys::obs_properties_add_float_slider(
                self.ptr.as_ptr(),
                k.as_ptr(),
                d.as_ptr(),
                min,
                max,
                step,
            )
        })
    }

    /// An integer slider.
    pub fn add_int_slider(
        &self,
        key: &str,
        desc: &str,
        min: i32,
        max: i32,
        step: i32,
    ) -> Property<'_> {
        let (k, d) = (cstring(key), cstring(desc));
        // SAFETY: as above.
        self.wrap(unsafe {
            sys::obs_properties_add_int_slider(
                self.ptr.as_ptr(),
                k.as_ptr(),
                d.as_ptr(),
                min as c_int,
                max as c_int,
                step as c_int,
            )
        })
    }

    /// A check box.
    pub fn add_bool(&self, key: &str, desc: &str) -> Property<'_> {
        let (k, d) = (cstring(key), cstring(desc));
        // SAFETY: as above.
        self.wrap(unsafe {
            sys::obs_properties_add_bool(self.ptr.as_ptr(), k.as_ptr(), d.as_ptr())
        })
    }

    /// A file or folder picker. `filter` uses Qt's syntax, e.g. `"Images (*.png *.jpg)"`.
    pub fn add_path(&self, key: &str, desc: &str, kind: PathKind, filter: &str) -> Property<'_> {
        let (k, d, f) = (cstring(key), cstring(desc), cstring(filter));
        let kind = match kind {
            PathKind::File => sys::OBS_PATH_FILE,
            PathKind::Directory => sys::OBS_PATH_DIRECTORY,
        };
        // SAFETY: as above; a null default path is allowed.
        self.wrap(unsafe {
            sys::obs_properties_add_path(
                self.ptr.as_ptr(),
                k.as_ptr(),
                d.as_ptr(),
                kind,
                f.as_ptr(),
                std::ptr::null(),
            )
        })
    }

    /// A colour picker with alpha (stored as an integer `0xAABBGGRR`).
    pub fn add_color_alpha(&self, key: &str, desc: &str) -> Property<'_> {
        let (k, d) = (cstring(key), cstring(desc));
        // SAFETY: as above.
        self.wrap(unsafe {
            sys::obs_properties_add_color_alpha(self.ptr.as_ptr(), k.as_ptr(), d.as_ptr())
        })
    }

    /// A read-only text shown across the dialog (`OBS_TEXT_INFO`): OBS 29 shows the
    /// description as a word-wrapped label when the setting `key` has no value (never set it).
    pub fn add_info(&self, key: &str, desc: &str) -> Property<'_> {
        let (k, d) = (cstring(key), cstring(desc));
        // SAFETY: as above.
        self.wrap(unsafe {
            sys::obs_properties_add_text(
                self.ptr.as_ptr(),
                k.as_ptr(),
                d.as_ptr(),
                sys::OBS_TEXT_INFO,
            )
        })
    }

    /// A borrowed view (for [`PropertiesRef::get`] while building).
    pub fn as_ref(&self) -> PropertiesRef<'_> {
        PropertiesRef {
            ptr: self.ptr,
            _life: PhantomData,
        }
    }

    /// Gives the set to OBS (which destroys it).
    pub(crate) fn into_raw(self) -> *mut sys::obs_properties_t {
        let p = self.ptr.as_ptr();
        std::mem::forget(self);
        p
    }
}

impl Default for Properties {
    fn default() -> Self {
        Properties::new()
    }
}

impl Drop for Properties {
    fn drop(&mut self) {
        // SAFETY: still owned (into_raw forgets self).
        unsafe { sys::obs_properties_destroy(self.ptr.as_ptr()) };
    }
}

impl<'a> PropertiesRef<'a> {
    /// The property named `key`, if present.
    pub fn get(&self, key: &str) -> Option<Property<'a>> {
        let k = cstring(key);
        // SAFETY: live set, NUL-terminated key.
        NonNull::new(unsafe { sys::obs_properties_get(self.ptr.as_ptr(), k.as_ptr()) }).map(|ptr| {
            Property {
                ptr,
                _life: PhantomData,
            }
        })
    }
}

unsafe extern "C" fn modified_trampoline(
    private: *mut c_void,
    props: *mut sys::obs_properties_t,
    _property: *mut sys::obs_property_t,
    settings: *mut sys::obs_data_t,
) -> bool {
    let (Some(props), Some(settings)) =
        (NonNull::new(props), unsafe { DataRef::from_raw(settings) })
    else {
        return false;
    };
    // SAFETY: `private` is the ModifiedFn stored by set_modified_callback.
    let f: ModifiedFn = unsafe { std::mem::transmute::<*mut c_void, ModifiedFn>(private) };
    let props = PropertiesRef {
        ptr: props,
        _life: PhantomData,
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(props, settings))).unwrap_or_else(
        |e| {
            super::filter::log_panic("property modified callback", &e);
            false
        },
    )
}

impl Property<'_> {
    /// Adds an entry to a string list; returns its index.
    pub fn list_add_string(&self, name: &str, value: &str) -> usize {
        let (n, v) = (cstring(name), cstring(value));
        // SAFETY: live property; OBS copies the strings.
        unsafe { sys::obs_property_list_add_string(self.ptr.as_ptr(), n.as_ptr(), v.as_ptr()) }
    }

    /// Greys out entry `index` of a list: shown when it is the current value, not pickable.
    pub fn list_item_disable(&self, index: usize) {
        // SAFETY: live property; OBS ignores indices out of range.
        unsafe { sys::obs_property_list_item_disable(self.ptr.as_ptr(), index, true) };
    }

    /// The tooltip.
    pub fn set_long_description(&self, text: &str) {
        let t = cstring(text);
        // SAFETY: as above.
        unsafe { sys::obs_property_set_long_description(self.ptr.as_ptr(), t.as_ptr()) };
    }

    /// The values of a string list's entries.
    pub fn list_strings(&self) -> Vec<String> {
        // SAFETY: live property; OBS returns null for indices of a list of another format.
        unsafe {
            let n = sys::obs_property_list_item_count(self.ptr.as_ptr());
            (0..n)
                .map(|i| {
                    super::string_from(sys::obs_property_list_item_string(self.ptr.as_ptr(), i))
                })
                .collect()
        }
    }

    /// Shows or hides the property.
    pub fn set_visible(&self, visible: bool) {
        // SAFETY: live property.
        unsafe { sys::obs_property_set_visible(self.ptr.as_ptr(), visible) };
    }

    /// Replaces the label (for an info text: the text itself).
    pub fn set_description(&self, text: &str) {
        let t = cstring(text);
        // SAFETY: live property; OBS copies the string.
        unsafe { sys::obs_property_set_description(self.ptr.as_ptr(), t.as_ptr()) };
    }

    /// Shows an info text (`add_info`) as a warning (OBS's `warningLabel` style).
    pub fn set_info_warning(&self) {
        // SAFETY: live property; a no-op for properties that are not info texts.
        unsafe {
            sys::obs_property_text_set_info_type(self.ptr.as_ptr(), sys::OBS_TEXT_INFO_WARNING)
        };
    }

    /// A unit shown after an integer slider's value (e.g. `" px"`).
    pub fn set_int_suffix(&self, suffix: &str) {
        let s = cstring(suffix);
        // SAFETY: as above.
        unsafe { sys::obs_property_int_set_suffix(self.ptr.as_ptr(), s.as_ptr()) };
    }

    /// A unit shown after a slider's value (e.g. `" px"`).
    pub fn set_float_suffix(&self, suffix: &str) {
        let s = cstring(suffix);
        // SAFETY: as above.
        unsafe { sys::obs_property_float_set_suffix(self.ptr.as_ptr(), s.as_ptr()) };
    }

    /// Calls `f` when the user changes this property.
    pub fn set_modified_callback(&self, f: ModifiedFn) {
        // SAFETY: live property; the fn pointer is 'static and round-trips through void*.
        unsafe {
            sys::obs_property_set_modified_callback2(
                self.ptr.as_ptr(),
                Some(modified_trampoline),
                f as *mut c_void,
            )
        };
    }
}
