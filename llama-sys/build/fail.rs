//! Short, actionable failure messages instead of a wall of CMake output.

/// Facts every failure message ends with.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub host: String,
    pub target: String,
    pub revision: String,
}

/// Prints `what` and `fix`, then the host, target and pinned revision, and
/// stops the build script.
pub fn fail(ctx: &Context, what: &str, fix: &[String]) -> ! {
    eprintln!();
    eprintln!("error: llama-sys: {what}");
    for line in fix {
        eprintln!("  help: {line}");
    }
    eprintln!(
        "  note: host {}, target {}, source {}",
        ctx.host, ctx.target, ctx.revision
    );
    eprintln!();
    std::process::exit(1);
}

/// [`fail`] where no [`Context`] is at hand (inside a build step).
pub fn fail_plain(what: &str) -> ! {
    eprintln!();
    eprintln!("error: llama-sys: {what}");
    eprintln!();
    std::process::exit(1);
}
