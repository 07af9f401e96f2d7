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
    if llama_safe_sys::LLAMA_CPP_SOURCE != "pinned package" {
        eprintln!(
            "skipped: built from {} ({}), not the pinned source",
            llama_safe_sys::LLAMA_CPP_SOURCE,
            llama_safe_sys::LLAMA_CPP_REVISION
        );
        return;
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let include = Path::new(env!("LLAMA_SYS_INCLUDE_DIR"));
    let wrapper = manifest.join("wrapper.h");
    // bindgen loads libclang at run time and panics when it cannot.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let generated =
        std::panic::catch_unwind(|| bindgen_config::builder(&wrapper, &[include]).generate());
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
    let committed = std::fs::read_to_string(manifest.join("src/bindings.rs")).unwrap();
    if generated != committed {
        let out = std::env::temp_dir().join("llama-sys-bindings.generated.rs");
        std::fs::write(&out, &generated).unwrap();
        panic!(
            "src/bindings.rs is stale: the pinned header generates {} (see UPDATING.md)",
            out.display()
        );
    }
}
