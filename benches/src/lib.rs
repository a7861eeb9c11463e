//! Benchmarks live in benches/benches. This library holds what they share with the tests:
//! [`synthetic`], recordings of made-up traffic that `l7tap replay` takes through the real
//! ingest → actors → sinks path, and [`process`], which measures an `l7tap` child process.
pub mod process;
pub mod synthetic;
