//! What an actor counted, merged across actors into the capture's summary. A replay of a
//! recording must produce exactly the summary of the live run that made it.
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
            .map(|(k, v)| format!("  \"{}\": {v}", json_escape(k)))
            .collect();
        format!("{{\n{}\n}}\n", body.join(",\n"))
    }
}

/// `text` inside a JSON string: keys can hold process names (`connections.*.comm.<name>`),
/// which any process sets for itself, quotes and control characters included.
fn json_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_holding_quotes_or_controls_stay_inside_their_json_string() {
        let mut s = Summary::default();
        s.add("connections.zookeeper.client.comm.x\": 999, \"y", 1);
        s.add("connections.zookeeper.client.comm.\u{1b}[2J\\", 2);
        assert_eq!(
            s.to_json(),
            "{\n  \"connections.zookeeper.client.comm.\\u001b[2J\\\\\": 2,\n  \"connections.zookeeper.client.comm.x\\\": 999, \\\"y\": 1\n}\n"
        );
    }

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
}

/// Counts records by protocol, side, operation, status and error name, for the summary
/// (tests compare these with what the servers and load generators report). Counted by a
/// compact key (names are `'static`); the summary's text keys are built once, at the end.
#[derive(Default)]
pub struct RecordTally {
    operations: HashMap<(Protocol, Side, &'static str, Status), u64, RandomState>,
    errors: HashMap<(Protocol, Side, &'static str), u64, RandomState>,
}

impl RecordTally {
    #[inline]
    pub fn count(&mut self, r: &RequestRecord, side: Side) {
        let key = (r.protocol, side, r.operation, r.status);
        *self.operations.entry(key).or_insert(0) += 1;
        if let Some(name) = r.error_name {
            *self.errors.entry((r.protocol, side, name)).or_insert(0) += 1;
        }
    }

    pub fn add_to(&self, summary: &mut Summary) {
        for ((protocol, side, operation, status), n) in &self.operations {
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
