//! Builds `bench/greedy.c`, the C baseline of the binding-overhead benchmark
//! (`src/bin/moe_bench.rs --compare-c`), against the static libraries
//! llama-sys built, linked exactly as llama-sys links them (its `links`
//! metadata: DEP_LLAMA_SAFE_INCLUDE, _LIB_DIRS, _LIBS). Its path reaches the
//! examples as LLAMA_C_GREEDY; if it cannot be built, that is said once and
//! the benchmark runs without the C comparison.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=bench/greedy.c");
    println!("cargo:rerun-if-changed=build.rs");
    let (Some(include), Some(dirs), Some(libs)) = (
        std::env::var_os("DEP_LLAMA_SAFE_INCLUDE"),
        std::env::var_os("DEP_LLAMA_SAFE_LIB_DIRS"),
        std::env::var("DEP_LLAMA_SAFE_LIBS").ok(),
    ) else {
        // docs.rs-style builds of llama-sys build nothing native.
        return;
    };
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let exe = out.join("llama-greedy-c");
    let compiler = cc::Build::new().opt_level(2).get_compiler();
    let mut cmd = compiler.to_command();
    cmd.arg("-std=c11")
        .arg("-I")
        .arg(&include)
        .arg("bench/greedy.c")
        .arg("-o")
        .arg(&exe);
    for dir in std::env::split_paths(&dirs) {
        cmd.arg("-L").arg(dir);
    }
    // `kind=name` in link order, as in cargo's `rustc-link-lib`.
    for lib in libs.split(',').filter(|l| !l.is_empty()) {
        match lib.split_once('=') {
            Some(("framework", name)) => cmd.args(["-framework", name]),
            Some((_, name)) => cmd.arg(format!("-l{name}")),
            None => cmd.arg(format!("-l{lib}")),
        };
    }
    cmd.arg("-lm");
    match cmd.output() {
        Ok(o) if o.status.success() => {
            println!("cargo:rustc-env=LLAMA_C_GREEDY={}", exe.display());
        }
        Ok(o) => {
            println!(
            "cargo:warning=bench/greedy.c did not build; moe_bench runs without --compare-c: {}",
            String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("")
        )
        }
        Err(e) => println!("cargo:warning=no C compiler for bench/greedy.c: {e}"),
    }
}
