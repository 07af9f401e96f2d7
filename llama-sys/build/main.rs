//! Build script of llama-sys: find the llama.cpp source (see `source`), build
//! it with CMake as static libraries, link them, and publish `links` metadata.
//!
//! Everything it reads from the environment goes through `env`; every
//! failure a user can fix goes through `fail` with a short message.

mod cache;
mod cmake_build;
mod dynamic;
mod env;
mod fail;
mod link;
mod link_names;
mod pin;
mod prebuilt;
mod source;
mod symbols;
mod tools;

#[cfg(feature = "bindgen")]
mod bindgen_config;

use fail::{fail, Context};
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build");
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=mtmd_wrapper.h");
    println!("cargo:rerun-if-changed=shim");
    println!("cargo::rustc-check-cfg=cfg(llama_sys_generated_bindings)");
    println!("cargo::rustc-check-cfg=cfg(llama_sys_no_native)");
    println!("cargo::rustc-check-cfg=cfg(llama_sys_prefixed)");

    let manifest_dir = PathBuf::from(env::cargo("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::cargo("OUT_DIR"));
    let vendor_dir = manifest_dir.join("vendor");
    let pin_file = vendor_dir.join("llama-cpp.toml");
    println!("cargo:rerun-if-changed={}", pin_file.display());

    let mut ctx = Context {
        host: env::cargo("HOST"),
        target: env::cargo("TARGET"),
        revision: "(pin unreadable)".into(),
    };
    let pin = pin::Pin::read(&pin_file).unwrap_or_else(|e| {
        fail(
            &ctx,
            &e,
            &["restore vendor/llama-cpp.toml from the repository".into()],
        )
    });
    ctx.revision = format!(
        "{} from {} {}",
        pin.describe, pin.package_name, pin.package_version
    );

    check_target_layout(&ctx);

    // docs.rs has no CMake and no network: document the committed bindings
    // and build nothing native.
    if env::var_os("DOCS_RS").is_some() {
        println!("cargo:rustc-cfg=llama_sys_no_native");
        println!("cargo:rustc-env=LLAMA_SYS_REVISION={}", pin.describe);
        println!("cargo:rustc-env=LLAMA_SYS_SOURCE_ORIGIN=none (docs.rs)");
        return;
    }

    let source = source::locate(&pin, &manifest_dir, &vendor_dir, &out_dir).unwrap_or_else(|e| {
        fail(
            &ctx,
            &e,
            &["see README.md, section \"Where llama.cpp comes from\"".into()],
        )
    });
    ctx.revision = format!("{} ({})", source.revision, source.origin.as_str());
    let prebuilt = env::var_os("LLAMA_SYS_PREBUILT_DIR").map(|dir| {
        prebuilt::open(Path::new(&dir), &source.root).unwrap_or_else(|e| {
            fail(
                &ctx,
                &e,
                &[
                    "point LLAMA_SYS_PREBUILT_DIR at the install prefix (`cmake --install`) \
                   of a build of the pinned llama.cpp, or unset it to build from source"
                        .into(),
                ],
            )
        })
    });
    let linked = match &prebuilt {
        Some(prebuilt) => link_prebuilt(&ctx, prebuilt, &out_dir),
        None => {
            println!(
                "llama-sys: building llama.cpp {} from {} ({})",
                source.revision,
                source.root.display(),
                source.origin.as_str()
            );
            link_source(&ctx, &pin, &source, &out_dir)
        }
    };
    let include_dir = linked.prefix.join("include");
    build_shim(&include_dir, &source.root);
    if let Some((tools, isolated)) = &linked.isolated {
        let shim = out_dir.join("libllama_sys_shim.a");
        symbols::rewrite_references(tools, &isolated.map, &shim)
            .unwrap_or_else(|e| fail(&ctx, &e, &[]));
        println!("cargo:rustc-cfg=llama_sys_prefixed");
        println!("cargo:symbol-prefix={}", symbols::PREFIX);
    }

    generate_bindings(&ctx, &include_dir, &source.root, &out_dir);

    // `links = "llama_safe"` metadata, visible to dependents as DEP_LLAMA_SAFE_*.
    println!("cargo:include={}", include_dir.display());
    println!("cargo:lib={}", linked.c_lib_dir.display());
    println!("cargo:root={}", source.root.display());
    println!("cargo:revision={}", source.revision);
    // The libraries, so a C program can link llama.cpp as Rust does, with
    // its unprefixed names (the workspace's C benchmark).
    linked.c_line.print_metadata();
    let origin = match &prebuilt {
        Some(p) => format!("LLAMA_SYS_PREBUILT_DIR ({})", p.prefix.display()),
        None => source.origin.as_str().to_string(),
    };
    println!("cargo:rustc-env=LLAMA_SYS_REVISION={}", source.revision);
    println!("cargo:rustc-env=LLAMA_SYS_SOURCE_ORIGIN={origin}");
    println!(
        "cargo:rustc-env=LLAMA_SYS_INCLUDE_DIR={}",
        include_dir.display()
    );
    // libmtmd's headers (in the source tree whether or not it is built).
    println!(
        "cargo:rustc-env=LLAMA_SYS_MTMD_INCLUDE_DIR={}",
        source.root.join("tools").join("mtmd").display()
    );
}

/// What the build script linked.
struct Linked {
    /// The install prefix (`include/` under it).
    prefix: PathBuf,
    /// The unprefixed libraries and their link line, for C programs.
    c_lib_dir: PathBuf,
    c_line: link::LinkLine,
    /// The symbol map, when symbols were prefixed.
    isolated: Option<(symbols::Tools, symbols::Isolated)>,
}

/// Builds llama.cpp from `source` and links it.
fn link_source(ctx: &Context, pin: &pin::Pin, source: &source::Source, out_dir: &Path) -> Linked {
    let options = options(ctx);
    let cuda_root = options.cuda.as_ref().map(|c| {
        c.nvcc
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default()
    });
    let prefix = build_llama_cpp(ctx, pin, source, &options);
    let cache = prefix.join("build").join("CMakeCache.txt");
    let libs = link::Libraries {
        rust_dir: &prefix.join("lib"),
        c_dir: &prefix.join("lib"),
        kind: link::Kind::Static,
        openmp: link::OpenMp::CmakeCache(&cache),
        cuda_root: cuda_root.as_deref(),
        vulkan: options.vulkan,
        metal: options.metal,
    };
    link_static(ctx, prefix.clone(), libs, out_dir)
}

/// Links an existing install (`LLAMA_SYS_PREBUILT_DIR`), checked for the
/// features this build asks for.
fn link_prebuilt(ctx: &Context, prebuilt: &prebuilt::Prebuilt, out_dir: &Path) -> Linked {
    println!(
        "llama-sys: linking the prebuilt llama.cpp in {} ({} libraries)",
        prebuilt.prefix.display(),
        if prebuilt.shared { "shared" } else { "static" }
    );
    for (feature, option) in [
        ("cuda", "GGML_CUDA"),
        ("vulkan", "GGML_VULKAN"),
        ("metal", "GGML_METAL"),
        ("rpc", "GGML_RPC"),
    ] {
        if env::feature(feature) && !prebuilt.has(option) {
            fail(
                ctx,
                &format!(
                    "the `{feature}` feature is on, but the prebuilt llama.cpp in {} was built \
                     without {option}",
                    prebuilt.prefix.display()
                ),
                &[format!(
                    "rebuild it with -D{option}=ON, or build without `--features {feature}`"
                )],
            );
        }
    }
    let has_mtmd = [true, false].iter().any(|&shared| {
        prebuilt
            .lib_dir
            .join(prebuilt::library_file("mtmd", shared))
            .is_file()
    });
    if env::feature("mtmd") && !has_mtmd {
        fail(
            ctx,
            &format!(
                "the `mtmd` feature is on, but the prebuilt llama.cpp in {} has no libmtmd",
                prebuilt.prefix.display()
            ),
            &["rebuild it with -DLLAMA_BUILD_MTMD=ON, or build without `--features mtmd`".into()],
        );
    }
    if prebuilt.shared {
        let dir = prebuilt::link_into(prebuilt, out_dir).unwrap_or_else(|e| fail(ctx, &e, &[]));
        let libs = link::Libraries {
            rust_dir: &dir,
            c_dir: &prebuilt.lib_dir,
            kind: link::Kind::Shared,
            openmp: link::OpenMp::Enabled(false),
            cuda_root: None,
            vulkan: false,
            metal: false,
        };
        let line = link::emit(&libs);
        line.print();
        return Linked {
            prefix: prebuilt.prefix.clone(),
            c_lib_dir: prebuilt.lib_dir.clone(),
            c_line: line,
            isolated: None,
        };
    }
    let cuda_root = prebuilt.has("GGML_CUDA").then(|| {
        tools::cuda_toolkit()
            .unwrap_or_else(|e| fail(ctx, &e, &tools::cuda_help()))
            .0
    });
    let libs = link::Libraries {
        rust_dir: &prebuilt.lib_dir,
        c_dir: &prebuilt.lib_dir,
        kind: link::Kind::Static,
        openmp: link::OpenMp::Enabled(prebuilt.has("GGML_OPENMP_ENABLED")),
        cuda_root: cuda_root.as_deref(),
        vulkan: prebuilt.has("GGML_VULKAN"),
        metal: prebuilt.has("GGML_METAL"),
    };
    link_static(ctx, prebuilt.prefix.clone(), libs, out_dir)
}

/// Links static archives: prefixed copies when symbols are isolated, all in
/// one shared library with the `dynamic` feature. `libs` names the
/// unprefixed archives.
fn link_static(ctx: &Context, prefix: PathBuf, libs: link::Libraries, out_dir: &Path) -> Linked {
    let c_line = link::emit(&libs);
    let isolated = isolate_symbols(ctx, libs.c_dir, out_dir);
    let archive_dir = isolated
        .as_ref()
        .map_or_else(|| libs.c_dir.to_path_buf(), |(_, i)| i.lib_dir.clone());
    let rust_libs = link::Libraries {
        rust_dir: &archive_dir,
        ..libs
    };
    let rust_line = link::emit(&rust_libs);
    if env::feature("dynamic") {
        if let Some(why) = dynamic::unsupported() {
            fail(ctx, &why, &["build without `--features dynamic`".into()]);
        }
        let dir = dynamic::build(&archive_dir, &rust_line, out_dir)
            .unwrap_or_else(|e| fail(ctx, &e, &["build without `--features dynamic`".into()]));
        println!(
            "llama-sys: llama.cpp linked as one shared library in {}",
            dir.display()
        );
        let combined = link::Libraries {
            rust_dir: &dir,
            kind: link::Kind::Combined,
            ..rust_libs
        };
        link::emit(&combined).print();
    } else {
        rust_line.print();
    }
    Linked {
        c_lib_dir: libs.c_dir.to_path_buf(),
        prefix,
        c_line,
        isolated,
    }
}

/// Builds llama.cpp: the pinned source once per configuration in the shared
/// cache (see `cache`), a source the user may edit in `OUT_DIR`.
fn build_llama_cpp(
    ctx: &Context,
    pin: &pin::Pin,
    source: &source::Source,
    options: &cmake_build::Options,
) -> PathBuf {
    let pinned = matches!(
        source.origin,
        source::Origin::Packaged | source::Origin::Package
    );
    let Some(cache) = cache::dir().filter(|_| pinned) else {
        return cmake_build::build(&source.root, options, None);
    };
    // What the compilers and CMake's find_package read from the
    // environment: a change must never reuse a build made without it.
    let compilers: Vec<String> = [
        "CC",
        "CXX",
        "CFLAGS",
        "CXXFLAGS",
        "CMAKE_GENERATOR",
        "CMAKE_PREFIX_PATH",
        "PKG_CONFIG_PATH",
        "VULKAN_SDK",
        "CUDA_PATH",
        "CUDA_HOME",
        "CUDAToolkit_ROOT",
    ]
    .iter()
    .map(|name| format!("{name}={}", env::var(name).unwrap_or_default()))
    .collect();
    // The CMake definitions live in cmake_build.rs: its text is part of the
    // key, so editing them can never reuse a build made without the edit.
    let definitions = cache::fingerprint(include_str!("cmake_build.rs"));
    let description = format!(
        "llama-sys {version}\nsource {name} {pkg} sha256 {sha}\ntarget {target} host {host}\n\
         options {options:?}\ncmake {cmake}\ncmake_build.rs {definitions}\n{compilers}\n",
        version = env::cargo("CARGO_PKG_VERSION"),
        name = pin.package_name,
        pkg = pin.package_version,
        sha = pin.sha256,
        target = env::cargo("TARGET"),
        host = env::cargo("HOST"),
        cmake = tools::cmake_version().unwrap_or_default(),
        compilers = compilers.join("\n"),
    );
    cache::build(&cache, &description, |out| {
        cmake_build::build(&source.root, options, Some(out))
    })
    .unwrap_or_else(|e| {
        fail(
            ctx,
            &e,
            &[
                "set LLAMA_SYS_CACHE_DIR to a writable folder, or to `off` to build in OUT_DIR"
                    .into(),
            ],
        )
    })
}

/// Prefixed copies of the static libraries in `lib_dir` (see `symbols`), or
/// `None` when isolation does not apply here (said once, as a warning when
/// a tool is missing).
fn isolate_symbols(
    ctx: &Context,
    lib_dir: &Path,
    out_dir: &Path,
) -> Option<(symbols::Tools, symbols::Isolated)> {
    if let Some(why) = symbols::skip_reason() {
        println!("llama-sys: symbols not prefixed: {why}");
        return None;
    }
    let tools = match symbols::Tools::find() {
        Ok(tools) => tools,
        Err(e) => {
            println!(
                "cargo:warning=llama-sys: symbols not prefixed ({e}); this binary cannot also \
                 link another copy of ggml or llama.cpp. Install binutils, or set \
                 LLAMA_SYS_ISOLATE_SYMBOLS=0 to silence this."
            );
            return None;
        }
    };
    let isolated =
        symbols::isolate(&tools, lib_dir, &out_dir.join("isolated")).unwrap_or_else(|e| {
            fail(
                ctx,
                &e,
                &["set LLAMA_SYS_ISOLATE_SYMBOLS=0 to link the libraries unprefixed".into()],
            )
        });
    println!(
        "llama-sys: {} symbols prefixed with {}",
        isolated.renamed,
        symbols::PREFIX
    );
    Some((tools, isolated))
}

/// The committed bindings assume an LP64 target (64-bit pointers and `long`,
/// enums as `unsigned int`); elsewhere they must be regenerated.
fn check_target_layout(ctx: &Context) {
    let lp64 = env::target_cfg("target_pointer_width") == "64"
        && env::target_cfg("target_os") != "windows";
    if !lp64 && !env::feature("bindgen") {
        fail(
            ctx,
            "the committed bindings are for 64-bit Unix-like targets (LP64) only",
            &["enable the `bindgen` feature (needs libclang) to generate bindings for this target".into()],
        );
    }
}

/// Reads features and environment into CMake options, checking tools first.
fn options(ctx: &Context) -> cmake_build::Options {
    // The cmake crate finds the same binary (CMAKE, else PATH); check it runs.
    if let Err(e) = tools::cmake() {
        fail(ctx, &e, &tools::cmake_help());
    }
    let cross = env::cargo("HOST") != env::cargo("TARGET");
    let cuda = env::feature("cuda").then(|| {
        let (_, nvcc) =
            tools::cuda_toolkit().unwrap_or_else(|e| fail(ctx, &e, &tools::cuda_help()));
        cmake_build::CudaOptions {
            nvcc,
            architectures: env::var("LLAMA_SYS_CUDA_ARCHITECTURES").filter(|a| !a.is_empty()),
        }
    });
    let vulkan = env::feature("vulkan");
    if vulkan && tools::which("glslc").is_none() {
        fail(
            ctx,
            "the `vulkan` feature needs the Vulkan SDK, and `glslc` was not found on PATH",
            &tools::vulkan_help(),
        );
    }
    if vulkan {
        // Before CMake: too old headers fail minutes into the build, deep
        // in its output.
        tools::vulkan_headers().unwrap_or_else(|e| fail(ctx, &e, &tools::vulkan_help()));
        tools::spirv_headers().unwrap_or_else(|e| fail(ctx, &e, &tools::vulkan_help()));
    }
    let metal = env::feature("metal");
    if metal && !matches!(env::target_cfg("target_os").as_str(), "macos" | "ios") {
        fail(
            ctx,
            "the `metal` feature only builds for Apple targets",
            &["build without `--features metal` on this target".into()],
        );
    }
    cmake_build::Options {
        native: !cross && !env::flag("LLAMA_SYS_PORTABLE"),
        amx: env::flag("LLAMA_SYS_AMX"),
        cuda,
        vulkan,
        metal,
        rpc: env::feature("rpc"),
        mtmd: env::feature("mtmd"),
        openmp: !env::flag("LLAMA_SYS_NO_OPENMP"),
    }
}

/// Compiles the C++ shims llama-safe uses: `shim/regex.cpp` (std::regex
/// checks), `shim/firewall.cpp` (entry points that may throw, wrapped so
/// no C++ exception reaches Rust, and the memory breakdown of
/// `src/llama-ext.h`, when the source has it), `shim/grammar_budget.cpp`
/// and `shim/vulkan_devices.cpp` (the Vulkan loader's device list); with
/// the `mtmd` feature, `shim/mtmd_firewall.cpp`.
fn build_shim(include_dir: &Path, source_root: &Path) {
    let mut build = cc::Build::new();
    let ext = source_root.join("src");
    if ext.join("llama-ext.h").is_file() {
        build.include(&ext).define("LLAMA_SYS_HAVE_EXT", None);
        // The grammar budget reads a private struct through a mirror: only
        // where the compiler proves the mirror against this source.
        match prove_grammar_mirror(include_dir, source_root) {
            Ok(()) => {
                build.define("LLAMA_SYS_GRAMMAR_MIRROR", None);
            }
            Err(why) => println!(
                "cargo:warning=llama-sys: the grammar budget is off in this build: \
                 shim/grammar_mirror.h does not match this llama.cpp's \
                 struct llama_sampler_grammar ({why}); an ambiguous grammar is then \
                 not bounded (see UPDATING.md)"
            ),
        }
    }
    // The Vulkan device count (shim/vulkan_devices.cpp) uses the loader's C
    // API, with the headers the build checked (tools::vulkan_headers).
    if env::feature("vulkan") {
        build.define("LLAMA_SYS_VULKAN", None);
        if let Some(sdk) = std::env::var_os("VULKAN_SDK") {
            build.include(Path::new(&sdk).join("include"));
        }
    }
    // libmtmd's firewall (shim/mtmd_firewall.cpp), with its headers from
    // the source tree.
    if env::feature("mtmd") {
        build
            .include(source_root.join("tools").join("mtmd"))
            .file("shim/mtmd_firewall.cpp");
    }
    build
        .cpp(true)
        .std("c++17")
        .include(include_dir)
        .file("shim/regex.cpp")
        .file("shim/firewall.cpp")
        .file("shim/grammar_budget.cpp")
        .file("shim/vulkan_devices.cpp")
        .cpp_link_stdlib(None)
        .warnings(false)
        .compile("llama_sys_shim");
}

/// Compiles (syntax only) a file that includes llama.cpp's
/// `src/llama-sampler.cpp` and `shim/grammar_mirror.h` and asserts that
/// every field of the mirror has the size, alignment, offset and type of
/// the private `struct llama_sampler_grammar`'s: the proof the grammar
/// budget needs before it may read that struct. `Err` says why not.
fn prove_grammar_mirror(include_dir: &Path, source_root: &Path) -> Result<(), String> {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("no OUT_DIR")?);
    let check = out_dir.join("grammar_mirror_check.cpp");
    let mut text = String::from(
        "// Generated by llama-sys's build script (prove_grammar_mirror).\n\
         #include \"llama-sampler.cpp\"\n#include \"grammar_mirror.h\"\n\
         #include <cstddef>\n#include <type_traits>\n\
         using mirror = llama_sys_mirror::grammar_ctx_mirror;\n\
         static_assert(sizeof(llama_sampler_grammar) == sizeof(mirror), \"size\");\n\
         static_assert(alignof(llama_sampler_grammar) == alignof(mirror), \"alignment\");\n",
    );
    for field in ["vocab", "grammar_str", "grammar_root", "grammar"] {
        text += &format!(
            "static_assert(offsetof(llama_sampler_grammar, {field}) == offsetof(mirror, {field}), \"offset of {field}\");\n\
             static_assert(std::is_same<decltype(llama_sampler_grammar::{field}), decltype(mirror::{field})>::value, \"type of {field}\");\n"
        );
    }
    std::fs::write(&check, text).map_err(|e| e.to_string())?;
    let mut build = cc::Build::new();
    build.cpp(true).std("c++17").warnings(false);
    let compiler = build.try_get_compiler().map_err(|e| e.to_string())?;
    let mut cmd = compiler.to_command();
    if compiler.is_like_msvc() {
        cmd.arg("/Zs");
    } else {
        cmd.args(["-fsyntax-only", "-w"]);
    }
    let shim =
        Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").ok_or("no manifest dir")?).join("shim");
    for dir in [
        source_root.join("src"),
        source_root.join("include"),
        source_root.join("ggml").join("include"),
        include_dir.to_path_buf(),
        shim,
    ] {
        cmd.arg(if compiler.is_like_msvc() { "/I" } else { "-I" })
            .arg(dir);
    }
    let out = cmd
        .arg(&check)
        .output()
        .map_err(|e| format!("cannot run the C++ compiler: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr
        .lines()
        .find(|l| l.contains("error"))
        .unwrap_or("the check did not compile");
    Err(first.trim().to_string())
}

#[cfg(feature = "bindgen")]
fn generate_bindings(ctx: &Context, include_dir: &Path, source_root: &Path, out_dir: &Path) {
    let bindings = bindgen_config::builder(Path::new("wrapper.h"), &[include_dir])
        .generate()
        .unwrap_or_else(|e| {
            fail(ctx, &format!("bindgen failed: {e}"), &[
                "install libclang (Debian: `apt-get install libclang-dev`) or set LIBCLANG_PATH".into(),
            ])
        });
    let path = out_dir.join("bindings.rs");
    std::fs::write(&path, link_names::add_link_names(&bindings.to_string()))
        .unwrap_or_else(|e| fail(ctx, &format!("cannot write {}: {e}", path.display()), &[]));
    let mtmd_include = source_root.join("tools").join("mtmd");
    let mtmd =
        bindgen_config::mtmd_builder(Path::new("mtmd_wrapper.h"), &[include_dir, &mtmd_include])
            .generate()
            .unwrap_or_else(|e| fail(ctx, &format!("bindgen failed on mtmd_wrapper.h: {e}"), &[]));
    let path = out_dir.join("mtmd_bindings.rs");
    std::fs::write(&path, link_names::add_link_names(&mtmd.to_string()))
        .unwrap_or_else(|e| fail(ctx, &format!("cannot write {}: {e}", path.display()), &[]));
    println!("cargo:rustc-cfg=llama_sys_generated_bindings");
}

#[cfg(not(feature = "bindgen"))]
fn generate_bindings(_: &Context, _: &Path, _: &Path, _: &Path) {}
