//! What an actor counted, merged across actors into the capture's summary. A replay of a
//! recording must produce exactly the summary of the live run that made it.
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use foldhash::fast::RandomState;
use l7tap_protocols::{Protocol, RequestRecord, Side, Status};

/// Named counters; keys are stable identifiers (`connections.clickhouse.server`, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    counters: BTreeMap<String, u64>,
}

impl Summary {
    pub fn add(&mut self, key: &str, n: u64) {
        if n == 0 {
            return;
        }
        match self.counters.get_mut(key) {
            Some(v) => *v += n,
            None => {
                self.counters.insert(key.to_owned(), n);
            }
        }
    }

    pub fn get(&self, key: &str) -> u64 {
        self.counters.get(key).copied().unwrap_or(0)
    }

    pub fn merge(&mut self, other: &Summary) {
        for (k, v) in &other.counters {
            self.add(k, *v);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.counters.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// Sum of every counter whose key starts with `prefix`.
    pub fn sum_prefix(&self, prefix: &str) -> u64 {
        self.counters
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }

    /// A flat JSON object, keys sorted.
    pub fn to_json(&self) -> String {
        let body: Vec<String> = self
            .counters
            .iter()
            .map(|(k, v)| format!("  \"{k}\": {v}"))
            .collect();
        format!("{{\n{}\n}}\n", body.join(",\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_sums_by_prefix() {
        let mut a = Summary::default();
        a.add("connections.clickhouse.client", 2);
        a.add("connections.zookeeper.server", 1);
        let mut b = Summary::default();
        b.add("connections.clickhouse.client", 3);
        b.add("events.data", 0);
        a.merge(&b);
        assert_eq!(a.get("connections.clickhouse.client"), 5);
        assert_eq!(a.sum_prefix("connections."), 6);
        assert_eq!(a.get("events.data"), 0);
        assert_eq!(
            a.to_json(),
            "{\n  \"connections.clickhouse.client\": 5,\n  \"connections.zookeeper.server\": 1\n}\n"
        );
    }

    #[test]
    fn the_record_tally_counts_every_record_whatever_its_slot() {
        use l7tap_protocols::{Details, ZooKeeperDetails};
        let record = |operation: Cow<'static, str>, status| RequestRecord {
            protocol: Protocol::ZooKeeper,
            start_ns: 0,
            end_ns: 0,
            operation,
            status,
            error_code: None,
            error_name: None,
            error_message: None,
            query: None,
            query_truncated: false,
            bytes_sent: 0,
            bytes_received: 0,
            details: Details::ZooKeeper(ZooKeeperDetails::default()),
        };
        let mut tally = RecordTally::default();
        let mut expected: BTreeMap<String, u64> = BTreeMap::new();
        // Many distinct owned names (evictions, reused addresses) between static ones.
        for i in 0..5000u32 {
            let (operation, status) = match i % 4 {
                0 => (Cow::Borrowed("getData"), Status::Ok),
                1 => (Cow::Owned(format!("op{}", i % 97)), Status::Error),
                2 => (Cow::Borrowed("exists"), Status::Error),
                _ => (Cow::Owned(format!("op{}", i % 89)), Status::Ok),
            };
            let side = if i % 3 == 0 {
                Side::Server
            } else {
                Side::Client
            };
            *expected
                .entry(format!(
                    "records.zookeeper.{}.op.{operation}.{}",
                    side.name(),
                    status.name()
                ))
                .or_default() += 1;
            tally.count(&record(operation, status), side);
        }
        let mut summary = Summary::default();
        tally.add_to(&mut summary);
        let counted: BTreeMap<String, u64> = summary
            .iter()
            .map(|(key, n)| (key.to_string(), n))
            .collect();
        assert_eq!(counted, expected);
    }
}

/// Counts records by protocol, side, operation, status and error name, for the summary
/// (tests compare these with what the servers and load generators report). Counted by a
/// compact key (names are `'static` but for rare unknown codes); the summary's text keys
/// are built once, at the end.
#[derive(Default)]
pub struct RecordTally {
    operations: HashMap<OperationKey, u64, RandomState>,
    errors: HashMap<(Protocol, Side, Cow<'static, str>), u64, RandomState>,
    /// Counts not yet in `operations`, for the keys seen last, found by the address of the
    /// operation's text (almost always a `'static` name): no hashing of the name and no
    /// clone of the key per record (which were 1.7 % of a replay's instructions).
    recent: [RecentOperation; RECENT_OPERATIONS],
}

type OperationKey = (Protocol, Side, Cow<'static, str>, Status);

/// Slots of [`RecordTally::recent`] (direct-mapped).
const RECENT_OPERATIONS: usize = 32;

#[derive(Default)]
struct RecentOperation {
    key: Option<OperationKey>,
    count: u64,
}

impl RecordTally {
    #[inline]
    pub fn count(&mut self, r: &RequestRecord, side: Side) {
        let address = r.operation.as_ptr() as usize;
        let slot = (address >> 3 ^ address >> 11 ^ (r.status as usize) << 2 ^ side as usize)
            % RECENT_OPERATIONS;
        let recent = &mut self.recent[slot];
        match &recent.key {
            // The text is compared too: an owned name's address can be reused by another.
            Some((protocol, s, operation, status))
                if operation.as_ptr() as usize == address
                    && (*protocol, *s, *status) == (r.protocol, side, r.status)
                    && *operation == r.operation =>
            {
                recent.count += 1;
            }
            _ => {
                if let Some(evicted) = recent.key.take() {
                    *self.operations.entry(evicted).or_insert(0) += recent.count;
                }
                recent.key = Some((r.protocol, side, r.operation.clone(), r.status));
                recent.count = 1;
            }
        }
        if let Some(name) = &r.error_name {
            *self
                .errors
                .entry((r.protocol, side, name.clone()))
                .or_insert(0) += 1;
        }
    }

    pub fn add_to(&self, summary: &mut Summary) {
        let recent = self
            .recent
            .iter()
            .filter_map(|slot| slot.key.as_ref().map(|key| (key, &slot.count)));
        // A key may be both in a slot and in the map: `Summary::add` sums them.
        for ((protocol, side, operation, status), n) in self.operations.iter().chain(recent) {
            let key = format!(
                "records.{}.{}.op.{operation}.{}",
                protocol.name(),
                side.name(),
                status.name()
            );
            summary.add(&key, *n);
        }
        for ((protocol, side, name), n) in &self.errors {
            let key = format!("records.{}.{}.error.{name}", protocol.name(), side.name());
            summary.add(&key, *n);
        }
    }
}
