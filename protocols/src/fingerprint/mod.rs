//! Query fingerprints: what groups requests of one shape, whatever their literals.
//!
//! A fingerprint is a 64-bit FNV-1a hash of a normalised text: for ClickHouse (native and
//! HTTP) the query with literals, numbers and lists normalised by the `--redact` walk
//! ([`sql`]); for ZooKeeper the operation and the path's pattern ([`zookeeper`]). FNV-1a is
//! fixed by its two constants, so a fingerprint is the same in every run, on every host and
//! in every version of l7tap that normalises the same way (no random seed, unlike std's
//! `RandomState`). `0` is [`Fingerprint::OTHER`], the fold of fingerprints past the cap
//! ([`table`]); a text that hashes to 0 gets 1.
//!
//! Pure: no I/O, no clock. Allocation: the [`Fingerprinter`]'s buffers only, reused.

pub mod sql;
pub mod table;
pub mod zookeeper;

use std::hash::Hasher;

use crate::{Details, Protocol, RequestRecord, TextArena};

pub use sql::{fingerprint_sql_into, redact_query, redact_query_into, FingerprintText};
pub use table::{FingerprintTable, FINGERPRINT_CAP};
pub use zookeeper::fingerprint_zookeeper_into;

/// A query's fingerprint; see the module documentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub u64);

impl Fingerprint {
    /// Fingerprints folded past the cap.
    pub const OTHER: Fingerprint = Fingerprint(0);

    /// The fingerprint of a normalised text.
    pub fn of_text(text: &str) -> Fingerprint {
        match fnv1a_64(text.as_bytes()) {
            0 => Fingerprint(1),
            hash => Fingerprint(hash),
        }
    }

    /// As the tables store it: the same 64 bits as a signed integer (Parquet and its readers
    /// handle signed 64-bit columns everywhere; unsigned ones not).
    pub fn as_i64(self) -> i64 {
        self.0 as i64
    }

    pub fn from_i64(value: i64) -> Fingerprint {
        Fingerprint(value as u64)
    }

    pub fn is_other(self) -> bool {
        self == Fingerprint::OTHER
    }
}

/// `other`, or 16 hex digits.
impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_other() {
            f.write_str("other")
        } else {
            write!(f, "{:016x}", self.0)
        }
    }
}

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

/// A hasher for maps keyed by fingerprints, which are hashes already: the key's bits as they
/// are.
#[derive(Default)]
pub struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0 = bytes
            .iter()
            .fold(self.0, |hash, &byte| (hash << 8) ^ u64::from(byte));
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// Computes fingerprints of records with reused buffers.
#[derive(Debug, Default, Clone)]
pub struct Fingerprinter {
    sql: FingerprintText,
    zookeeper: String,
}

impl Fingerprinter {
    /// The fingerprint of `record`, whose text is in `text`.
    pub fn fingerprint(&mut self, record: &RequestRecord, text: &TextArena) -> Fingerprint {
        let query = record.query.map(|span| text.get(span));
        match record.protocol {
            Protocol::ClickHouse | Protocol::ClickHouseHttp => {
                fingerprint_sql_into(query.unwrap_or(""), &mut self.sql);
                Fingerprint::of_text(self.sql.as_str())
            }
            Protocol::ZooKeeper => {
                let multi_ops = match &record.details {
                    Details::ZooKeeper(details) => text.get(details.multi_ops),
                    Details::ClickHouse(_) => "",
                };
                fingerprint_zookeeper_into(record.operation, multi_ops, query, &mut self.zookeeper);
                Fingerprint::of_text(&self.zookeeper)
            }
        }
    }

    /// The normalised text a fingerprint of `record` hashes (for display and tests).
    pub fn text_of(&mut self, record: &RequestRecord, text: &TextArena) -> &str {
        match record.protocol {
            Protocol::ClickHouse | Protocol::ClickHouseHttp => {
                self.fingerprint(record, text);
                self.sql.as_str()
            }
            Protocol::ZooKeeper => {
                self.fingerprint(record, text);
                &self.zookeeper
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{fingerprint_sql_into, Fingerprint, FingerprintText};

    fn shape(query: &str) -> String {
        let mut out = FingerprintText::default();
        fingerprint_sql_into(query, &mut out);
        out.as_str().to_owned()
    }

    #[test]
    fn sql_fixtures() {
        let cases = [
            ("SELECT * FROM t WHERE id = 42", "SELECT*FROM t WHERE id=?"),
            (
                "select  a,\n\tb from t where x in (1, 2, 3)",
                "select a,b from t where x in(?)",
            ),
            ("SELECT 1 WHERE x IN (7)", "SELECT ? WHERE x IN(?)"),
            (
                "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')",
                "INSERT INTO t VALUES(?)",
            ),
            (
                "INSERT INTO t FORMAT TSV 1\t2\n",
                "INSERT INTO t FORMAT TSV ?",
            ),
            ("SELECT [1, 2, 3], 'x' -- a comment\n", "SELECT[?],?"),
            (
                "SELECT count() FROM `my table` WHERE s = 'it''s'",
                "SELECT count()FROM `my table` WHERE s=?",
            ),
            (
                "SELECT * FROM t WHERE x = {p:UInt8}",
                "SELECT*FROM t WHERE x={p:UInt8}",
            ),
            ("SELECT -1, 2.5e3 /* hint */ FROM t1", "SELECT-? FROM t1"),
            ("", ""),
        ];
        for (query, expected) in cases {
            assert_eq!(shape(query), expected, "{query:?}");
        }
    }

    #[test]
    fn literals_and_list_lengths_do_not_change_a_fingerprint() {
        let of = |q: &str| Fingerprint::of_text(&shape(q));
        let base = of("SELECT * FROM t WHERE id IN (1, 2) AND s = 'a'");
        assert_eq!(
            base,
            of("SELECT * FROM t WHERE id IN (5,6,7,8,9) AND s = 'bbb'")
        );
        assert_eq!(base, of("SELECT  *  FROM t\n WHERE id IN (99)  AND s = ''"));
        assert_ne!(of("SELECT a FROM t"), of("SELECT b FROM t"));
    }

    #[test]
    fn the_hash_is_fixed() {
        // FNV-1a 64 test vectors: the values must never change between versions.
        assert_eq!(super::fnv1a_64(b""), 0xcbf29ce484222325);
        assert_eq!(super::fnv1a_64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(super::fnv1a_64(b"foobar"), 0x85944171f73967e8);
        assert_eq!(
            Fingerprint(0x0123_4567_89ab_cdef).to_string(),
            "0123456789abcdef"
        );
        assert_eq!(Fingerprint::OTHER.to_string(), "other");
        assert_eq!(
            Fingerprint::from_i64(Fingerprint(u64::MAX).as_i64()),
            Fingerprint(u64::MAX)
        );
    }
}
