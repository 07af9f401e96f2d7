//! Proves that the committed `src/bindings.rs` is what bindgen generates from
//! the pinned llama.cpp headers, with the one configuration in
//! `build/bindgen_config.rs`. Skipped, with a message, when libclang is absent,
//! unless `LLAMA_SYS_REQUIRE_BINDINGS_CHECK=1` (set by `.ci/run`), which makes
//! a missing libclang a failure: in CI the check must run.

#[path = "../build/bindgen_config.rs"]
mod bindgen_config;
#[path = "../build/link_names.rs"]
mod link_names;

use std::path::Path;

#[test]
fn committed_bindings_match_the_pinned_header() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let include = Path::new(env!("LLAMA_SYS_INCLUDE_DIR"));
    check(&manifest.join("src/bindings.rs"), || {
        bindgen_config::builder(&manifest.join("wrapper.h"), &[include]).generate()
    });
}

/// libmtmd's bindings, checked whether or not the `mtmd` feature is on:
/// its headers are in the pinned source either way.
#[test]
fn committed_mtmd_bindings_match_the_pinned_headers() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let include = Path::new(env!("LLAMA_SYS_INCLUDE_DIR"));
    let mtmd = Path::new(env!("LLAMA_SYS_MTMD_INCLUDE_DIR"));
    check(&manifest.join("src/mtmd_bindings.rs"), || {
        bindgen_config::mtmd_builder(&manifest.join("mtmd_wrapper.h"), &[include, mtmd]).generate()
    });
}

/// Compares `committed` with what `generate` makes, when the source is the
/// pinned one and libclang is there.
fn check(
    committed: &Path,
    generate: impl FnOnce() -> Result<bindgen::Bindings, bindgen::BindgenError> + std::panic::UnwindSafe,
) {
    if llama_safe_sys::LLAMA_CPP_SOURCE != "pinned package" {
        eprintln!(
            "skipped: built from {} ({}), not the pinned source",
            llama_safe_sys::LLAMA_CPP_SOURCE,
            llama_safe_sys::LLAMA_CPP_REVISION
        );
        return;
    }
    // bindgen loads libclang at run time and panics when it cannot.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let generated = std::panic::catch_unwind(generate);
    std::panic::set_hook(previous);
    let bindings = match generated {
        Err(_) => {
            let required = std::env::var("LLAMA_SYS_REQUIRE_BINDINGS_CHECK").as_deref() == Ok("1");
            assert!(
                !required,
                "libclang was not found and LLAMA_SYS_REQUIRE_BINDINGS_CHECK=1: the bindings \
                 cannot be compared (Debian: apt-get install libclang-dev)"
            );
            eprintln!("skipped: libclang was not found (Debian: apt-get install libclang-dev)");
            return;
        }
        Ok(result) => result.expect("bindgen failed on the pinned header"),
    };
    let generated = link_names::add_link_names(&bindings.to_string());
    let text = std::fs::read_to_string(committed).unwrap_or_default();
    if generated != text {
        let name = committed.file_name().unwrap().to_string_lossy();
        let out = std::env::temp_dir().join(format!("llama-sys-{name}.generated"));
        std::fs::write(&out, &generated).unwrap();
        panic!(
            "{} is stale: the pinned header generates {} (see UPDATING.md)",
            committed.display(),
            out.display()
        );
    }
}
