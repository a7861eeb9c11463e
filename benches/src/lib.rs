//! Benchmarks live in benches/benches. This library holds what they share with the tests:
//! [`synthetic`], recordings of made-up traffic that `l7tap replay` takes through the real
//! ingest → actors → sinks path, [`process`], which measures an `l7tap` child process, and
//! [`rng`] and [`zookeeper_wire`], the generator and the ZooKeeper bytes of the synthetic
//! workloads.
pub mod process;
pub mod rng;
pub mod synthetic;
pub mod zookeeper_wire;
