//! ClickHouse's HTTP interface (ports 8123/8443): a passive parser producing one record per
//! HTTP request/response exchange, of the same family as the native protocol's records
//! ([`crate::Details::ClickHouse`]).
//!
//! Bytes of both directions of one connection come in through [`ClickHouseHttpParser`]
//! (driven by [`crate::stream::StreamDriver`]); a [`crate::RequestRecord`] goes out when a
//! response ends (by its length, its last chunk, or the connection's end), or when the
//! connection closes with an exchange in flight.
//!
//! Code map:
//! - `http`: HTTP/1.x framing (heads checked as they arrive and bounded, Content-Length,
//!   chunked bodies); knows nothing of ClickHouse.
//! - `meaning`: what ClickHouse means by them (URL parameters, `X-ClickHouse-*` headers,
//!   `Authorization: Basic`, the Summary header, exception bodies, INSERT data).
//! - `session`: per-direction states, resynchronisation, pairing, records.
//!
//! Architecture invariants: no I/O, no clock, no unsafe; passwords (`password=`,
//! `X-ClickHouse-Key`, the password of `Authorization`) are read past and never stored;
//! bodies are never buffered (a request body is read as far as its query text goes); no
//! allocation per exchange in steady state (texts go to a reused arena).
mod credentials;
mod http;
mod meaning;
mod session;

pub use credentials::credential_ranges;
pub use session::{ClickHouseHttpCounters, ClickHouseHttpParser};

#[cfg(test)]
mod tests;
