//! Host package for the workspace examples and integration tests.
