//! Actors: worker threads that each own a shard of connections. An actor restores the
//! timestamp order of its events, reassembles each connection's two byte streams, runs the
//! protocol parser the kernel's classification chose, and sends finished records on.
//!
//! Architecture invariants:
//! - an actor talks to the rest only through its input ring (frames) and its output
//!   channel (record batches); it shares no connection state with other actors;
//! - an actor's behaviour depends only on the frames it reads (events and watermarks), never
//!   on the clock, so replaying a recording reproduces a live run exactly.
mod actor;
mod filter;
mod pool;
mod reorder;
mod summary;

pub use actor::{Actor, ActorConfig, ActorOutput, ActorState, WindowStats};
pub use filter::ConnFilter;
pub use pool::BatchPool;
pub use summary::Summary;
