//! Build script.
//!
//! With the `obs` feature (the default) it generates Rust bindings for the installed libobs
//! headers with bindgen and links `libobs`. The headers and link flags come from
//! `pkg-config libobs` (Debian/Ubuntu package `libobs-dev`; `scripts/deps.sh` installs it);
//! libobs 29.0.2 is the version this crate is tested against. Without the feature it does
//! nothing, so the engine builds on machines without OBS.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "obs")]
    obs::generate();
}

#[cfg(feature = "obs")]
mod obs {
    use std::env;
    use std::path::PathBuf;

    /// The wrapper header bindgen parses: everything the plugin and the headless host call.
    const WRAPPER: &str = r#"
#include <obs.h>
#include <obs-module.h>
#include <obs-nix-platform.h>
#include <graphics/graphics.h>
#include <graphics/vec4.h>
#include <graphics/matrix4.h>
#include <util/text-lookup.h>
#include <util/base.h>
#include <util/bmem.h>
#include <util/platform.h>
#include <callback/calldata.h>
#include <callback/proc.h>
#include <callback/signal.h>
#include <stdio.h>
"#;

    pub fn generate() {
        println!("cargo:rerun-if-env-changed=OBS_INCLUDE_DIR");
        let lib = match pkg_config::Config::new()
            .atleast_version("29.0")
            .probe("libobs")
        {
            Ok(lib) => lib,
            Err(e) => panic!(
                "\n\nlibobs (>= 29.0) was not found through pkg-config: {e}\n\
                 Install the OBS development files first: `scripts/deps.sh` \
                 (Debian/Ubuntu: apt-get install libobs-dev libclang-dev pkg-config),\n\
                 or build the engine alone with `--no-default-features`.\n\n"
            ),
        };

        let mut builder = bindgen::Builder::default()
            .header_contents("obs_wrapper.h", WRAPPER)
            .clang_arg("-DHAVE_OBSCONFIG_H")
            .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
            .allowlist_function("obs_.*")
            .allowlist_function("gs_.*")
            .allowlist_function("video_.*")
            .allowlist_function("text_lookup_.*")
            .allowlist_function("calldata_.*")
            .allowlist_function("proc_handler_.*")
            .allowlist_function("signal_handler_.*")
            .allowlist_function("blog")
            .allowlist_function("base_set_log_handler")
            .allowlist_function("base_get_log_handler")
            .allowlist_function("bfree")
            .allowlist_function("bmalloc")
            .allowlist_function("bnum_allocs")
            .allowlist_function("bstrdup_n")
            .allowlist_function("os_gettime_ns")
            .allowlist_function("vsnprintf")
            .allowlist_type("obs_.*")
            .allowlist_type("gs_.*")
            .allowlist_type("calldata_t")
            .allowlist_type("vec4")
            .allowlist_type("matrix4")
            .allowlist_var("LOG_.*")
            .allowlist_var("OBS_.*")
            .allowlist_var("GS_.*")
            .allowlist_var("LIBOBS_API_.*")
            .allowlist_var("MODULE_.*")
            // Keep C enums as plain integer constants: OBS passes enum values we may not know.
            .default_enum_style(bindgen::EnumVariation::Consts)
            .prepend_enum_name(false)
            .derive_default(true)
            .layout_tests(false)
            .generate_comments(false)
            .size_t_is_usize(true);
        let mut includes = lib.include_paths.clone();
        if let Ok(extra) = env::var("OBS_INCLUDE_DIR") {
            includes.insert(0, PathBuf::from(extra));
        }
        for path in &includes {
            builder = builder.clang_arg(format!("-I{}", path.display()));
        }
        let bindings = builder
            .generate()
            .expect("bindgen failed on the libobs headers (is libclang-dev installed?)");
        let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("obs_bindings.rs");
        bindings
            .write_to_file(&out)
            .expect("cannot write the libobs bindings");
    }
}
