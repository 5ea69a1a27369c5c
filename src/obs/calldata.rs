//! Call data (`calldata_t`, the argument block of OBS procs and signals).
//!
//! The C header implements the typed accessors as `static inline` functions over
//! `calldata_set_data` / `calldata_get_data`; they are re-implemented here with the same
//! layouts (`long long`, `double`, `bool`, `void *`, NUL-terminated strings).

use super::{cstring, string_from, sys};
use std::marker::PhantomData;
use std::os::raw::{c_char, c_longlong, c_void};
use std::ptr::NonNull;

/// Owned call data (freed on drop).
pub struct CallData {
    inner: sys::calldata_t,
}

/// Call data borrowed inside a proc callback.
pub struct CallDataRef<'a> {
    ptr: NonNull<sys::calldata_t>,
    _life: PhantomData<&'a mut ()>,
}

impl CallData {
    /// Empty call data (`calldata_init`).
    pub fn new() -> CallData {
        CallData {
            // calldata_init is a memset to zero.
            inner: sys::calldata_t {
                stack: std::ptr::null_mut(),
                size: 0,
                capacity: 0,
                fixed: false,
            },
        }
    }

    pub(crate) fn as_mut_ptr(&mut self) -> *mut sys::calldata_t {
        &mut self.inner
    }

    /// A borrowed view with the accessors.
    pub fn view(&mut self) -> CallDataRef<'_> {
        CallDataRef {
            ptr: NonNull::from(&mut self.inner),
            _life: PhantomData,
        }
    }
}

impl Default for CallData {
    fn default() -> Self {
        CallData::new()
    }
}

impl Drop for CallData {
    fn drop(&mut self) {
        // calldata_free: the stack is bmalloc'd unless fixed.
        if !self.inner.fixed && !self.inner.stack.is_null() {
            // SAFETY: allocated by libobs' calldata functions with bmalloc.
            unsafe { sys::bfree(self.inner.stack.cast()) };
        }
    }
}

impl<'a> CallDataRef<'a> {
    /// # Safety
    /// `ptr` is null or call data valid (and not aliased) for `'a`.
    pub(crate) unsafe fn from_raw(ptr: *mut sys::calldata_t) -> Option<CallDataRef<'a>> {
        NonNull::new(ptr).map(|ptr| CallDataRef {
            ptr,
            _life: PhantomData,
        })
    }

    fn set_raw<T>(&mut self, name: &str, value: &T) {
        let n = cstring(name);
        // SAFETY: live call data; copies size_of::<T>() bytes.
        unsafe {
            sys::calldata_set_data(
                self.ptr.as_ptr(),
                n.as_ptr(),
                (value as *const T).cast::<c_void>(),
                std::mem::size_of::<T>(),
            )
        };
    }

    fn get_raw<T: Copy>(&self, name: &str, init: T) -> Option<T> {
        let n = cstring(name);
        let mut v = init;
        // SAFETY: live call data; writes at most size_of::<T>() bytes, only when sizes match.
        let ok = unsafe {
            sys::calldata_get_data(
                self.ptr.as_ptr(),
                n.as_ptr(),
                (&mut v as *mut T).cast::<c_void>(),
                std::mem::size_of::<T>(),
            )
        };
        ok.then_some(v)
    }

    /// Sets an integer parameter (`calldata_set_int`).
    pub fn set_int(&mut self, name: &str, value: i64) {
        self.set_raw::<c_longlong>(name, &value);
    }

    /// Reads an integer parameter.
    pub fn get_int(&self, name: &str) -> Option<i64> {
        self.get_raw::<c_longlong>(name, 0)
    }

    /// Sets a float parameter (`double`).
    pub fn set_float(&mut self, name: &str, value: f64) {
        self.set_raw(name, &value);
    }

    /// Reads a float parameter.
    pub fn get_float(&self, name: &str) -> Option<f64> {
        self.get_raw::<f64>(name, 0.0)
    }

    /// Sets a boolean parameter.
    pub fn set_bool(&mut self, name: &str, value: bool) {
        self.set_raw(name, &value);
    }

    /// Reads a boolean parameter.
    pub fn get_bool(&self, name: &str) -> Option<bool> {
        self.get_raw::<bool>(name, false)
    }

    /// Sets a pointer parameter (an address; the receiver decides what it points to).
    pub fn set_ptr(&mut self, name: &str, value: *mut c_void) {
        self.set_raw(name, &value);
    }

    /// Reads a pointer parameter.
    pub fn get_ptr(&self, name: &str) -> Option<*mut c_void> {
        self.get_raw::<*mut c_void>(name, std::ptr::null_mut())
    }

    /// Sets a string parameter (copied).
    pub fn set_string(&mut self, name: &str, value: &str) {
        let (n, v) = (cstring(name), cstring(value));
        let bytes = v.as_bytes_with_nul();
        // SAFETY: live call data; copies the string with its NUL.
        unsafe {
            sys::calldata_set_data(
                self.ptr.as_ptr(),
                n.as_ptr(),
                bytes.as_ptr().cast(),
                bytes.len(),
            )
        };
    }

    /// Reads a string parameter.
    pub fn get_string(&self, name: &str) -> Option<String> {
        let n = cstring(name);
        let mut out: *const c_char = std::ptr::null();
        // SAFETY: live call data; the string stays in the call data while we copy it.
        let ok = unsafe { sys::calldata_get_string(self.ptr.as_ptr(), n.as_ptr(), &mut out) };
        ok.then(|| unsafe { string_from(out) })
    }

    /// Copies `values` into the memory the caller passed as pointer parameter `name` with
    /// capacity (in elements) in integer parameter `capacity_name`; returns how many were
    /// copied (0 when the pointer is null). This is how a proc returns an array: the caller
    /// owns the buffer.
    pub fn copy_into_caller_buffer<T: Copy>(
        &self,
        name: &str,
        capacity_name: &str,
        values: &[T],
    ) -> usize {
        let (Some(ptr), Some(cap)) = (self.get_ptr(name), self.get_int(capacity_name)) else {
            return 0;
        };
        if ptr.is_null() || cap <= 0 {
            return 0;
        }
        let n = values.len().min(cap as usize);
        // SAFETY: the proc's contract: the caller passes a buffer of `capacity` elements of T.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), ptr.cast::<T>(), n) };
        n
    }
}
