//! Events in: the mio reactor that drains the kernel's perf (or ring) buffers, the
//! recording file, the router that shards frames into one rtrb ring per actor, and who is at
//! each connection's ends (identities, read from `/proc` at open by a live capture).
//!
//! Architecture invariants:
//! - only this crate reads the kernel's buffers; it decodes no payload, only the header
//!   fields needed to route (the connection id) and open events (identities);
//! - `/proc` is read only by a live capture at open events (`join.rs`, `procfs.rs`); the
//!   identities reach actors and recordings as frames, so a replay reproduces them;
//! - all events of one connection go to the same actor ring, in the order they were read;
//! - live capture and replay push the same frames through the same [`Router`].
pub mod app_name;
pub mod frame;
pub mod identity;
pub mod join;
pub mod pcap;
pub mod procfs;
/// The live reactor reads the kernel's buffers through aya: only the binary's live capture
/// needs it (feature `live`); replay and the actors build without the loader's dependencies.
#[cfg(feature = "live")]
pub mod reactor;
pub mod recording;
pub mod replay;
pub mod ring;
mod router;
mod sock_diag;

pub use frame::Tag;
pub use router::{Router, RouterStats};

/// CLOCK_MONOTONIC now, in ns: the clock of the kernel's event timestamps.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Offset that turns a CLOCK_MONOTONIC timestamp into Unix time (ns).
pub fn monotonic_to_unix_ns() -> i64 {
    clock_ns(libc::CLOCK_REALTIME) as i64 - clock_ns(libc::CLOCK_MONOTONIC) as i64
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
