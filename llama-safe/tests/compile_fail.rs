//! What must not compile, checked against the compiler's own error (the
//! `.stderr` files next to each case), so a case cannot pass because it
//! fails for another reason, as a plain `compile_fail` doctest can (stable
//! rustdoc ignores the error code).
//!
//! After a toolchain update changes the wording: `TRYBUILD=overwrite cargo
//! test -p llama-safe --test compile_fail`, then read the diff.

#[test]
fn what_must_not_compile() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
