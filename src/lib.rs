//! Host package for the workspace examples and integration tests: the
//! command-line pieces the examples share live in [`cli`].

pub mod cli;
