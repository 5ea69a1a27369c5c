//! Build script.
//!
//! With the `obs` feature (the default) it generates Rust bindings for the installed libobs
//! headers with bindgen and links `libobs`. The headers and link flags come from
//! `pkg-config libobs` (Debian/Ubuntu package `libobs-dev`; `scripts/deps.sh` installs it);
//! libobs 29.0.2 is the version this crate is tested against. Without the feature it does
//! nothing, so the engine builds on machines without OBS.
//!
//! For Windows x64 (`--target x86_64-pc-windows-gnu`, MinGW-w64) the same headers are parsed
//! for the Windows target (`OBS_INCLUDE_DIR`, else the host's `pkg-config libobs` include
//! folders: OBS's headers are the same on every platform), and the module links against an
//! import library for `obs.dll` made from `src/obs/obs.def` with `x86_64-w64-mingw32-dlltool`
//! (override with `DLLTOOL`). Debian: `apt-get install mingw-w64`, `rustup target add
//! x86_64-pc-windows-gnu`.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "obs")]
    obs::generate();
}

#[cfg(feature = "obs")]
mod obs {
    use std::env;
    use std::path::{Path, PathBuf};

    /// The wrapper header bindgen parses: everything the plugin and the headless host call.
    const WRAPPER: &str = r#"
#include <obs.h>
#include <obs-module.h>
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

    /// Linux only: the X11/Wayland platform calls of the headless test host.
    const WRAPPER_NIX: &str = "#include <obs-nix-platform.h>\n";

    pub fn generate() {
        println!("cargo:rerun-if-env-changed=OBS_INCLUDE_DIR");
        println!("cargo:rerun-if-env-changed=DLLTOOL");
        println!("cargo:rerun-if-changed=src/obs/obs.def");
        let windows = env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("windows");
        if windows {
            // Only the headers are taken from the host's libobs-dev (the crate refuses
            // cross builds unless told).
            env::set_var("PKG_CONFIG_ALLOW_CROSS", "1");
        }
        let lib = match pkg_config::Config::new()
            .atleast_version("29.0")
            // Cross builds take only the headers from the host's libobs-dev; they link obs.dll.
            .cargo_metadata(!windows)
            .env_metadata(!windows)
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

        let wrapper = if windows {
            WRAPPER.to_string()
        } else {
            format!("{WRAPPER}{WRAPPER_NIX}")
        };
        let mut builder = bindgen::Builder::default()
            .header_contents("obs_wrapper.h", &wrapper)
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
        if windows {
            builder = builder.clang_args(windows_clang_args(&includes));
        }
        let bindings = builder
            .generate()
            .expect("bindgen failed on the libobs headers (is libclang-dev installed?)");
        let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("obs_bindings.rs");
        bindings
            .write_to_file(&out)
            .expect("cannot write the libobs bindings");
        if windows {
            import_library();
        }
    }

    /// Extra clang arguments for parsing the headers for the MinGW target:
    /// - clang's own resource folder (its `stddef.h`, `stdarg.h`, ...), which libclang does
    ///   not find by itself for a foreign target (`CLANG_RESOURCE_DIR` overrides the search
    ///   of `/usr/lib/llvm-*/lib/clang/*`);
    /// - SIMDe (`util/sse-intrin.h` includes `<simde/x86/sse2.h>` on every compiler but
    ///   MSVC; Debian's `libobs-dev` depends on `libsimde-dev`): a folder holding only a link
    ///   to the host's `simde/`, so the rest of the host's `/usr/include` stays out of the
    ///   Windows parse.
    fn windows_clang_args(includes: &[PathBuf]) -> Vec<String> {
        println!("cargo:rerun-if-env-changed=CLANG_RESOURCE_DIR");
        let mut args = Vec::new();
        let simde = includes
            .iter()
            .map(PathBuf::as_path)
            .chain([Path::new("/usr/include"), Path::new("/usr/local/include")])
            .map(|d| d.join("simde"))
            .find(|d| d.join("x86/sse2.h").exists());
        if let Some(simde) = simde {
            let dir = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("simde-include");
            std::fs::create_dir_all(&dir).expect("cannot create OUT_DIR/simde-include");
            let link = dir.join("simde");
            let _ = std::fs::remove_file(&link);
            #[cfg(unix)]
            std::os::unix::fs::symlink(&simde, &link).expect("cannot link simde");
            args.push(format!("-I{}", dir.display()));
        }
        let dir = env::var_os("CLANG_RESOURCE_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib")
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("llvm-"))
                    .flat_map(|e| {
                        std::fs::read_dir(e.path().join("lib/clang"))
                            .into_iter()
                            .flatten()
                    })
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.join("include/stddef.h").exists())
                    .collect();
                found.sort();
                found.pop()
            });
        if let Some(d) = dir {
            args.push(format!("-resource-dir={}", d.display()));
        }
        args
    }

    /// Makes `libobs.dll.a` (the import library for `obs.dll`) from `src/obs/obs.def` in
    /// `OUT_DIR` and links the module against it.
    fn import_library() {
        let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
        let def = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"))
            .join("src/obs/obs.def");
        let lib = out.join("libobs.dll.a");
        let dlltool = env::var("DLLTOOL").unwrap_or_else(|_| "x86_64-w64-mingw32-dlltool".into());
        let status = std::process::Command::new(&dlltool)
            .arg("-d")
            .arg(&def)
            .arg("-l")
            .arg(&lib)
            .args(["-D", "obs.dll", "-m", "i386:x86-64"])
            .status()
            .unwrap_or_else(|e| {
                panic!("\n\ncannot run {dlltool}: {e}\nInstall MinGW-w64 (apt-get install mingw-w64).\n\n")
            });
        assert!(status.success(), "{dlltool} failed on {}", def.display());
        println!("cargo:rustc-link-search=native={}", out.display());
        println!("cargo:rustc-link-lib=dylib=obs");
    }
}
