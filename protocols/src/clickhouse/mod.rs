//! ClickHouse native protocol (TCP 9000): passive parser producing one record per query.
