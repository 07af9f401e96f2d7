//! Symbol isolation: every symbol the static llama.cpp and ggml libraries
//! define gets the prefix [`PREFIX`], so one binary can also link another
//! copy of ggml or llama.cpp (`whisper-rs-sys`, `llama-cpp-sys-2`, ...)
//! without duplicate-symbol errors or, worse, silently merged weak symbols
//! of two different versions.
//!
//! How: `nm` lists the symbols the archives define and `readelf` their
//! COMDAT group signatures (a constructor's or destructor's group is named
//! by a `C5`/`D5` symbol that is defined nowhere: left alone, the linker
//! would keep another library's group of that name and drop ours, and our
//! renamed references would resolve to address 0); `objcopy
//! --redefine-syms` rewrites definitions *and* references in copies of the
//! archives (and, with the same map, the references of the shim, whose own
//! `llama_sys_*` functions keep their names). The bindings carry
//! `#[cfg_attr(llama_sys_prefixed, link_name = "llama_safe_…")]`, and the
//! build script sets that cfg only when this step ran. The unprefixed
//! archives stay where CMake installed them, for C programs (`links`
//! metadata).
//!
//! ELF targets only (Linux, Android, the BSDs): Mach-O and COFF name symbols
//! differently and are not handled; there the libraries link unprefixed.

use crate::env;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

pub use crate::link_names::PREFIX;

/// Why isolation is off for this build, or `None` when it applies.
pub fn skip_reason() -> Option<String> {
    let name = "LLAMA_SYS_ISOLATE_SYMBOLS";
    if env::var(name).is_some() && !env::flag(name) {
        return Some("LLAMA_SYS_ISOLATE_SYMBOLS is off".into());
    }
    env::non_elf_os().map(|os| format!("{os} is not an ELF target"))
}

/// The binutils-style tools: `LLAMA_SYS_NM`/`NM`,
/// `LLAMA_SYS_READELF`/`READELF` and `LLAMA_SYS_OBJCOPY`/`OBJCOPY`, else
/// `nm`, `readelf`, `objcopy`, else the LLVM ones.
pub struct Tools {
    nm: PathBuf,
    readelf: PathBuf,
    objcopy: PathBuf,
}

impl Tools {
    /// Finds the three tools, or says which is missing.
    pub fn find() -> Result<Tools, String> {
        let pick = |vars: [&str; 2], names: [&str; 2]| {
            vars.iter()
                .find_map(|v| env::var_os(v))
                .map(PathBuf::from)
                .or_else(|| names.iter().find_map(|n| crate::tools::which(n)))
                .ok_or_else(|| format!("neither `{}` nor `{}` is on PATH", names[0], names[1]))
        };
        Ok(Tools {
            nm: pick(["LLAMA_SYS_NM", "NM"], ["nm", "llvm-nm"])?,
            readelf: pick(
                ["LLAMA_SYS_READELF", "READELF"],
                ["readelf", "llvm-readelf"],
            )?,
            objcopy: pick(
                ["LLAMA_SYS_OBJCOPY", "OBJCOPY"],
                ["objcopy", "llvm-objcopy"],
            )?,
        })
    }

    /// The global symbols the archives define (strong, weak and unique),
    /// and the signatures of their COMDAT groups.
    fn renamed(&self, archives: &[&Path]) -> Result<BTreeSet<String>, String> {
        let symbols = run(&self.nm, &["-g", "--defined-only", "-P"], archives)?;
        // `-P`: "name type value size"; archive member headers end in ':'.
        let defined = symbols.lines().filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (name, kind) = (fields.next()?, fields.next()?);
            (!name.ends_with(':') && kind != "U").then_some(name)
        });
        // "COMDAT group section [    1] `.group' [signature] contains 2 sections"
        let groups = run(&self.readelf, &["-g", "-W"], archives)?;
        let signatures = groups.lines().filter_map(|line| {
            let rest = line.trim_start().strip_prefix("COMDAT group section")?;
            let (_, tail) = rest.split_once("' [")?;
            tail.split_once(']').map(|(signature, _)| signature)
        });
        Ok(defined
            .chain(signatures)
            .filter(|name| !name.starts_with(PREFIX))
            .map(str::to_string)
            .collect())
    }

    /// Rewrites `input` into `output` with the `old new` pairs of `map`.
    fn redefine(&self, map: &Path, input: &Path, output: &Path) -> Result<(), String> {
        let option = format!("--redefine-syms={}", map.display());
        run(&self.objcopy, &[&option], &[input, output]).map(drop)
    }
}

/// Runs `tool args files`, returning its standard output.
fn run(tool: &Path, args: &[&str], files: &[&Path]) -> Result<String, String> {
    let out = Command::new(tool)
        .args(args)
        .args(files)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", tool.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        Err(format!(
            "{} failed on {}: {}",
            tool.display(),
            files.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The prefixed copies of one set of archives, and the map that made them.
pub struct Isolated {
    /// Folder holding the prefixed archives, under the same file names.
    pub lib_dir: PathBuf,
    /// The `old new` symbol map, for rewriting the references of objects
    /// compiled later (the shim).
    pub map: PathBuf,
    /// How many symbols were renamed.
    pub renamed: usize,
}

/// Writes prefixed copies of the llama.cpp and ggml archives of `lib_dir`
/// (those `link` links, and no others: a symbol map that also named what an
/// unlinked archive defines would rename references nothing then resolves)
/// into `dest`.
pub fn isolate(tools: &Tools, lib_dir: &Path, dest: &Path) -> Result<Isolated, String> {
    let archives = crate::link::archives(lib_dir);
    if archives.is_empty() {
        return Err(format!("no static libraries in {}", lib_dir.display()));
    }
    let paths: Vec<&Path> = archives.iter().map(PathBuf::as_path).collect();
    let symbols = tools.renamed(&paths)?;
    std::fs::create_dir_all(dest).map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    let map = dest.join("symbols.map");
    let text: String = symbols
        .iter()
        .map(|s| format!("{s} {PREFIX}{s}\n"))
        .collect();
    std::fs::write(&map, text).map_err(|e| format!("cannot write {}: {e}", map.display()))?;
    for archive in &archives {
        let name = archive
            .file_name()
            .expect("archive paths end in a file name");
        tools.redefine(&map, archive, &dest.join(name))?;
    }
    Ok(Isolated {
        lib_dir: dest.to_path_buf(),
        map,
        renamed: symbols.len(),
    })
}

/// Rewrites, in place, the references an archive compiled against the
/// unprefixed headers makes to the renamed symbols.
pub fn rewrite_references(tools: &Tools, map: &Path, archive: &Path) -> Result<(), String> {
    let tmp = archive.with_extension("prefixing");
    tools.redefine(map, archive, &tmp)?;
    std::fs::rename(&tmp, archive).map_err(|e| format!("cannot replace {}: {e}", archive.display()))
}
