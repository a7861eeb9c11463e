//! ClickHouse native protocol (TCP 9000): a passive parser producing one record per query.
//!
//! Bytes of both directions of one connection come in through [`ClickHouseParser`] (driven
//! by [`crate::stream::StreamDriver`]); a [`crate::RequestRecord`] goes out when the server
//! ends a query's response with `EndOfStream` or `Exception`, or when the connection closes
//! with a query still in flight. A query whose response end was not seen before a later
//! Query may have started (one that cannot be read) goes out incomplete: no later end is
//! paired with it (`parse.clickhouse.unanswered_queries` counts them).
//!
//! Code map:
//! - `wire`: VarUInt, String, fixed-width reads over a byte slice (`Short` vs `Bad`).
//! - [`codes`]: packet codes as newtypes, revision thresholds, compression method bytes;
//!   `error_codes`: the static error code → name table.
//! - `packets`: packet bodies (Hello, Addendum, Query with ClientInfo and settings for
//!   every revision, Exception, Progress, ProfileInfo, TablesStatus, ...).
//! - `block`: walking an uncompressed Block column by column to find its end.
//! - `compression`: walking compression frames by size, without decompressing.
//! - `statement`: statement type from the query text's first keyword.
//! - `session`: the parser's state, handshake facts, the pairing of each Query with the end
//!   of its response, and the `Parser` entry points.
//! - `client`, `server`: the state machines of the two directions.
//! - `resync`: finding packets again after garbage, a gap or a mid-stream start, and a
//!   response's end in the tail of a cut read.
//! - `layout`: the revision's packet layout, negotiated or inferred without a handshake.
//!
//! Architecture invariants: no I/O, no clock, no unsafe of its own; the password of the
//! Hello is read past and never stored; no allocation per packet in steady state (vectors
//! of the block walker are reused; a record allocates its strings once per query).
mod block;
mod client;
pub mod codes;
mod compression;
mod credentials;
mod error_codes;
mod layout;
mod packets;
mod resync;
mod server;
mod session;
mod statement;
mod wire;

pub use codes::{revision, ClientPacket, CompressionMethod, ServerPacket};
pub use credentials::hello_password_range;
pub use error_codes::error_name;
pub use session::{ClickHouseConfig, ClickHouseParser, OPERATION_LOGIN};
/// Shared with the HTTP interface's parser (`crate::clickhouse_http`).
pub(crate) use statement::statement_type;
pub(crate) use wire::bounded_text;

#[cfg(test)]
mod tests;
