//! The `obs_module_*` exports libobs looks up when it loads the `cdylib`, plus the module's
//! locale and data-file lookups.
//!
//! libobs requires `obs_module_load`, `obs_module_set_pointer` and `obs_module_ver`; the
//! optional ones implemented here are `obs_module_unload`, `obs_module_set_locale`,
//! `obs_module_free_locale`, `obs_module_get_string`, `obs_module_name`,
//! `obs_module_description` and `obs_module_author` (the same set `OBS_DECLARE_MODULE()` and
//! `OBS_MODULE_USE_DEFAULT_LOCALE()` generate in C). The exports take raw pointers, so they
//! live here and call the safe `crate::plugin` functions.
//!
//! Locale files are `<module data>/locale/<locale>.ini` (`locale/*.ini` in the repository,
//! installed to `data/locale/`); the default is `en-US`, and a key missing from both the
//! current and the default locale is returned as is.

use super::{cstring, string_from, sys};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::path::PathBuf;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

/// The locale used when the UI's locale has no translation for a key.
pub const DEFAULT_LOCALE: &CStr = c"en-US";

static MODULE: AtomicPtr<sys::obs_module_t> = AtomicPtr::new(ptr::null_mut());

/// A `lookup_t` from `obs_module_load_locale`, destroyed on drop.
struct Lookup(*mut sys::lookup_t);

// SAFETY: a text lookup is immutable after loading; all access goes through the LOCALE mutex.
unsafe impl Send for Lookup {}

impl Drop for Lookup {
    fn drop(&mut self) {
        // SAFETY: created by obs_module_load_locale, destroyed once.
        unsafe { sys::text_lookup_destroy(self.0) };
    }
}

static LOCALE: Mutex<Option<Lookup>> = Mutex::new(None);

/// Interned translations handed to OBS as `const char *` (`get_name`): they must outlive the
/// call, and a locale change must not free them, so each distinct string is kept for the
/// process lifetime (a few dozen bytes).
static INTERNED: Mutex<Option<HashMap<String, &'static CStr>>> = Mutex::new(None);

/// Runs `f`, catching a panic (logged) so it cannot unwind into C; `fallback` on panic.
fn guarded<R>(what: &str, fallback: R, f: impl FnOnce() -> R) -> R {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(e) => {
            super::filter::log_panic(what, &e);
            fallback
        }
    }
}

#[doc(hidden)]
#[no_mangle]
pub extern "C" fn obs_module_set_pointer(module: *mut sys::obs_module_t) {
    MODULE.store(module, Ordering::Release);
}

#[doc(hidden)]
#[no_mangle]
pub extern "C" fn obs_current_module() -> *mut sys::obs_module_t {
    MODULE.load(Ordering::Acquire)
}

#[doc(hidden)]
#[no_mangle]
pub extern "C" fn obs_module_ver() -> u32 {
    (sys::LIBOBS_API_MAJOR_VER << 24)
        | (sys::LIBOBS_API_MINOR_VER << 16)
        | sys::LIBOBS_API_PATCH_VER
}

#[doc(hidden)]
#[no_mangle]
pub extern "C" fn obs_module_load() -> bool {
    guarded("obs_module_load", false, crate::plugin::load)
}

#[doc(hidden)]
#[no_mangle]
pub extern "C" fn obs_module_unload() {
    guarded("obs_module_unload", (), crate::plugin::unload)
}

/// # Safety
/// `locale` is null or a NUL-terminated string (libobs passes the UI locale).
#[doc(hidden)]
#[no_mangle]
pub unsafe extern "C" fn obs_module_set_locale(locale: *const c_char) {
    let module = MODULE.load(Ordering::Acquire);
    if module.is_null() {
        return;
    }
    let locale = if locale.is_null() {
        DEFAULT_LOCALE.as_ptr()
    } else {
        locale
    };
    // SAFETY: module is the pointer libobs gave us; both strings are NUL-terminated.
    let lookup = unsafe { sys::obs_module_load_locale(module, DEFAULT_LOCALE.as_ptr(), locale) };
    *LOCALE.lock() = (!lookup.is_null()).then_some(Lookup(lookup));
}

#[doc(hidden)]
#[no_mangle]
pub extern "C" fn obs_module_free_locale() {
    *LOCALE.lock() = None;
}

/// # Safety
/// `val` is a NUL-terminated string, `out` a valid pointer (libobs' contract).
#[doc(hidden)]
#[no_mangle]
pub unsafe extern "C" fn obs_module_get_string(
    val: *const c_char,
    out: *mut *const c_char,
) -> bool {
    let guard = LOCALE.lock();
    match guard.as_ref() {
        // SAFETY: a live lookup; val and out per the contract above.
        Some(lookup) if !val.is_null() && !out.is_null() => unsafe {
            sys::text_lookup_getstr(lookup.0, val, out)
        },
        _ => false,
    }
}

#[doc(hidden)]
#[no_mangle]
pub extern "C" fn obs_module_name() -> *const c_char {
    c"AI Background".as_ptr()
}

#[doc(hidden)]
#[no_mangle]
pub extern "C" fn obs_module_description() -> *const c_char {
    c"Blurs, replaces or removes the background behind a person (MediaPipe selfie segmentation)"
        .as_ptr()
}

#[doc(hidden)]
#[no_mangle]
pub extern "C" fn obs_module_author() -> *const c_char {
    c"obs-ai-background contributors".as_ptr()
}

/// The translation of `key` in the current locale (falling back to en-US, then to `key`).
pub fn text(key: &str) -> String {
    let guard = LOCALE.lock();
    let Some(lookup) = guard.as_ref() else {
        return key.to_string();
    };
    let ckey = cstring(key);
    let mut out: *const c_char = ptr::null();
    // SAFETY: live lookup, NUL-terminated key, valid out pointer.
    if unsafe { sys::text_lookup_getstr(lookup.0, ckey.as_ptr(), &mut out) } && !out.is_null() {
        // SAFETY: the lookup owns the string while the lock is held.
        unsafe { string_from(out) }
    } else {
        key.to_string()
    }
}

/// Like [`text`], but as a C string that lives for the rest of the process (for callbacks
/// such as `get_name` whose result OBS keeps without copying).
pub fn static_text(key: &str) -> &'static CStr {
    let value = text(key);
    let mut guard = INTERNED.lock();
    let map = guard.get_or_insert_with(HashMap::new);
    if let Some(s) = map.get(&value) {
        return s;
    }
    let leaked: &'static CStr = Box::leak(cstring(&value).into_boxed_c_str());
    map.insert(value, leaked);
    leaked
}

/// The full path of `name` inside the module's data folder (`obs_module_file`), if it exists.
pub fn data_file(name: &str) -> Option<PathBuf> {
    let module = MODULE.load(Ordering::Acquire);
    if module.is_null() {
        return None;
    }
    let cname = cstring(name);
    // SAFETY: valid module and string; the result is bmalloc'd and freed below.
    let p = unsafe { sys::obs_find_module_file(module, cname.as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: p is a NUL-terminated string from obs_find_module_file.
    let path = unsafe { string_from(p) };
    // SAFETY: allocated by libobs with bmalloc.
    unsafe { sys::bfree(p.cast()) };
    Some(PathBuf::from(path))
}

/// Keeps a C string alive for a registration that stores the pointer (source ids).
pub(crate) fn leak_cstring(s: &str) -> &'static CStr {
    let c: CString = cstring(s);
    Box::leak(c.into_boxed_c_str())
}
