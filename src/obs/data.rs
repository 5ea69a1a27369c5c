//! Settings objects (`obs_data_t`): an owned reference ([`Data`]) and a borrowed one
//! ([`DataRef`], what OBS passes to `update` and `get_defaults`).

use super::{cstring, string_from, sys};
use std::marker::PhantomData;
use std::ptr::NonNull;

/// An owned reference to an `obs_data_t` (released on drop).
pub struct Data {
    ptr: NonNull<sys::obs_data_t>,
}

// SAFETY: obs_data_t is reference counted with atomics; an owned reference may move threads.
unsafe impl Send for Data {}

impl Data {
    /// A new, empty settings object.
    pub fn new() -> Data {
        // SAFETY: plain constructor.
        let ptr = unsafe { sys::obs_data_create() };
        Data {
            ptr: NonNull::new(ptr).expect("obs_data_create returned null"),
        }
    }

    /// Parses JSON into a settings object; `None` when the JSON is invalid.
    pub fn from_json(json: &str) -> Option<Data> {
        let c = cstring(json);
        // SAFETY: NUL-terminated JSON; returns a new reference or null.
        NonNull::new(unsafe { sys::obs_data_create_from_json(c.as_ptr()) }).map(|ptr| Data { ptr })
    }

    /// Takes over a reference the caller owns (e.g. from `obs_source_get_settings`).
    ///
    /// # Safety
    /// `ptr` is null or a reference the caller owns and gives up.
    pub(crate) unsafe fn from_owned(ptr: *mut sys::obs_data_t) -> Option<Data> {
        NonNull::new(ptr).map(|ptr| Data { ptr })
    }

    /// A borrowed view for reading and writing.
    pub fn as_ref(&self) -> DataRef<'_> {
        DataRef {
            ptr: self.ptr,
            _life: PhantomData,
        }
    }

    /// The raw pointer (still owned by `self`).
    pub(crate) fn as_ptr(&self) -> *mut sys::obs_data_t {
        self.ptr.as_ptr()
    }
}

impl Default for Data {
    fn default() -> Self {
        Data::new()
    }
}

impl Drop for Data {
    fn drop(&mut self) {
        // SAFETY: we own one reference.
        unsafe { sys::obs_data_release(self.ptr.as_ptr()) };
    }
}

/// A borrowed `obs_data_t` (no reference count taken), valid for `'a`.
#[derive(Clone, Copy)]
pub struct DataRef<'a> {
    ptr: NonNull<sys::obs_data_t>,
    _life: PhantomData<&'a ()>,
}

impl<'a> DataRef<'a> {
    /// Wraps a pointer OBS passed to a callback.
    ///
    /// # Safety
    /// `ptr` is null or a live `obs_data_t` for `'a`.
    pub(crate) unsafe fn from_raw(ptr: *mut sys::obs_data_t) -> Option<DataRef<'a>> {
        NonNull::new(ptr).map(|ptr| DataRef {
            ptr,
            _life: PhantomData,
        })
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::obs_data_t {
        self.ptr.as_ptr()
    }

    /// The string at `key` ("" when unset).
    pub fn get_string(&self, key: &str) -> String {
        let k = cstring(key);
        // SAFETY: live data, NUL-terminated key; the result is owned by the data object.
        unsafe { string_from(sys::obs_data_get_string(self.as_ptr(), k.as_ptr())) }
    }

    /// The integer at `key` (0 when unset).
    pub fn get_int(&self, key: &str) -> i64 {
        let k = cstring(key);
        // SAFETY: as above.
        unsafe { sys::obs_data_get_int(self.as_ptr(), k.as_ptr()) }
    }

    /// The number at `key` (0 when unset).
    pub fn get_double(&self, key: &str) -> f64 {
        let k = cstring(key);
        // SAFETY: as above.
        unsafe { sys::obs_data_get_double(self.as_ptr(), k.as_ptr()) }
    }

    /// The boolean at `key` (false when unset).
    pub fn get_bool(&self, key: &str) -> bool {
        let k = cstring(key);
        // SAFETY: as above.
        unsafe { sys::obs_data_get_bool(self.as_ptr(), k.as_ptr()) }
    }

    /// Sets a string.
    pub fn set_string(&self, key: &str, value: &str) {
        let (k, v) = (cstring(key), cstring(value));
        // SAFETY: as above; OBS copies both strings.
        unsafe { sys::obs_data_set_string(self.as_ptr(), k.as_ptr(), v.as_ptr()) };
    }

    /// Sets an integer.
    pub fn set_int(&self, key: &str, value: i64) {
        let k = cstring(key);
        // SAFETY: as above.
        unsafe { sys::obs_data_set_int(self.as_ptr(), k.as_ptr(), value) };
    }

    /// Sets a number.
    pub fn set_double(&self, key: &str, value: f64) {
        let k = cstring(key);
        // SAFETY: as above.
        unsafe { sys::obs_data_set_double(self.as_ptr(), k.as_ptr(), value) };
    }

    /// Sets a boolean.
    pub fn set_bool(&self, key: &str, value: bool) {
        let k = cstring(key);
        // SAFETY: as above.
        unsafe { sys::obs_data_set_bool(self.as_ptr(), k.as_ptr(), value) };
    }

    /// Sets the default string of `key`.
    pub fn set_default_string(&self, key: &str, value: &str) {
        let (k, v) = (cstring(key), cstring(value));
        // SAFETY: as above.
        unsafe { sys::obs_data_set_default_string(self.as_ptr(), k.as_ptr(), v.as_ptr()) };
    }

    /// Sets the default integer of `key`.
    pub fn set_default_int(&self, key: &str, value: i64) {
        let k = cstring(key);
        // SAFETY: as above.
        unsafe { sys::obs_data_set_default_int(self.as_ptr(), k.as_ptr(), value) };
    }

    /// Sets the default number of `key`.
    pub fn set_default_double(&self, key: &str, value: f64) {
        let k = cstring(key);
        // SAFETY: as above.
        unsafe { sys::obs_data_set_default_double(self.as_ptr(), k.as_ptr(), value) };
    }

    /// Sets the default boolean of `key`.
    pub fn set_default_bool(&self, key: &str, value: bool) {
        let k = cstring(key);
        // SAFETY: as above.
        unsafe { sys::obs_data_set_default_bool(self.as_ptr(), k.as_ptr(), value) };
    }

    /// The settings as JSON (for logs and tests).
    pub fn json(&self) -> String {
        // SAFETY: live data; the string is owned by the data object.
        unsafe { string_from(sys::obs_data_get_json(self.as_ptr())) }
    }
}
