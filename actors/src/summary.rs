//! What an actor counted, merged across actors into the capture's summary. A replay of a
//! recording must produce exactly the summary of the live run that made it.
use std::collections::BTreeMap;

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
}

/// Counts records by protocol, side, operation, status and error name, for the summary
/// (tests compare these with what the servers and load generators report). Keys are built
/// in one reused buffer: no allocation per record once a key has been seen.
#[derive(Default)]
pub struct RecordTally {
    counts: std::collections::HashMap<String, u64>,
    key: String,
}

impl RecordTally {
    pub fn count(&mut self, r: &l7tap_protocols::RequestRecord, side: l7tap_protocols::Side) {
        use std::fmt::Write;
        let base_len = {
            self.key.clear();
            let _ = write!(self.key, "records.{}.{}.", r.protocol.name(), side.name());
            self.key.len()
        };
        let _ = write!(self.key, "op.{}.{}", r.operation, r.status.name());
        self.bump();
        if let Some(name) = &r.error_name {
            self.key.truncate(base_len);
            let _ = write!(self.key, "error.{name}");
            self.bump();
        }
    }

    fn bump(&mut self) {
        match self.counts.get_mut(self.key.as_str()) {
            Some(n) => *n += 1,
            None => {
                self.counts.insert(self.key.clone(), 1);
            }
        }
    }

    pub fn add_to(&self, summary: &mut Summary) {
        for (k, v) in &self.counts {
            summary.add(k, *v);
        }
    }
}
