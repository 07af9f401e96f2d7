//! The link names of the bindings when symbols are isolated (see
//! `symbols.rs`): every function of an `extern "C"` block gets
//! `#[cfg_attr(llama_sys_prefixed, link_name = "<PREFIX><name>")]`.
//! Applied to bindgen's output by the `bindgen` feature, and by the test
//! that checks the committed `src/bindings.rs`.

/// The prefix given to every symbol the llama.cpp and ggml archives define.
pub const PREFIX: &str = "llama_safe_";

/// `bindings` with the conditional link name before each foreign function.
#[cfg_attr(not(feature = "bindgen"), allow(dead_code))]
pub fn add_link_names(bindings: &str) -> String {
    let mut out = String::with_capacity(bindings.len() + bindings.len() / 4);
    let mut in_extern = false;
    for line in bindings.lines() {
        if line.starts_with("unsafe extern \"C\" {") || line.starts_with("extern \"C\" {") {
            in_extern = true;
        } else if line == "}" {
            in_extern = false;
        } else if in_extern {
            let name = line
                .strip_prefix("    pub fn ")
                .and_then(|rest| rest.split(['(', '<']).next());
            if let Some(name) = name {
                out.push_str(&format!(
                    "    #[cfg_attr(llama_sys_prefixed, link_name = \"{PREFIX}{name}\")]\n"
                ));
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
