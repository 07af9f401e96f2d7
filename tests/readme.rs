//! The README shows the `simple` example verbatim; keep them the same.

#[test]
fn readme_shows_the_simple_example() {
    let readme = include_str!("../README.md");
    let example = include_str!("../examples/simple.rs");
    let body: String = example
        .lines()
        .skip_while(|l| l.starts_with("//!") || l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        readme.contains(&format!("```rust\n{body}```")),
        "README.md's `simple` listing differs from examples/simple.rs"
    );
}
