//! The ZooKeeper fingerprint text: the operation and the path's pattern, with sequence
//! suffixes and numeric segments normalised.
//!
//! A segment of digits only is `{n}` (`/shards/3/replicas` → `/shards/{n}/replicas`); a
//! segment ending in the 10 digits ZooKeeper appends to a sequential node is `<prefix>{seq}`
//! (`/locks/lock-0000000042` → `/locks/lock-{seq}`). Other segments stay as they are.

/// Digits ZooKeeper appends to the name of a sequential node.
const SEQUENCE_DIGITS: usize = 10;

/// Writes `operation`, the multi's op names if any, and `path`'s pattern into `out`
/// (cleared first).
pub fn fingerprint_zookeeper_into(
    operation: &str,
    multi_ops: &str,
    path: Option<&str>,
    out: &mut String,
) {
    out.clear();
    out.push_str(operation);
    if !multi_ops.is_empty() {
        out.push(' ');
        out.push_str(multi_ops);
    }
    let Some(path) = path else {
        return;
    };
    out.push(' ');
    for (index, segment) in path.split('/').enumerate() {
        if index > 0 {
            out.push('/');
        }
        push_segment_pattern(segment, out);
    }
}

fn push_segment_pattern(segment: &str, out: &mut String) {
    let bytes = segment.as_bytes();
    if !bytes.is_empty() && bytes.iter().all(u8::is_ascii_digit) {
        out.push_str("{n}");
        return;
    }
    let suffix_start = bytes.len().saturating_sub(SEQUENCE_DIGITS);
    if bytes.len() > SEQUENCE_DIGITS && bytes[suffix_start..].iter().all(u8::is_ascii_digit) {
        // The suffix is ASCII, so `suffix_start` is a char boundary.
        out.push_str(&segment[..suffix_start]);
        out.push_str("{seq}");
        return;
    }
    out.push_str(segment);
}

#[cfg(test)]
mod tests {
    use super::fingerprint_zookeeper_into;

    fn pattern(operation: &str, multi_ops: &str, path: Option<&str>) -> String {
        let mut out = String::new();
        fingerprint_zookeeper_into(operation, multi_ops, path, &mut out);
        out
    }

    #[test]
    fn fixtures() {
        let cases = [
            (
                "getData",
                "",
                Some("/clickhouse/tables/01/t/replicas/r1/log"),
                "getData /clickhouse/tables/{n}/t/replicas/r1/log",
            ),
            (
                "create",
                "",
                Some("/locks/lock-0000000042"),
                "create /locks/lock-{seq}",
            ),
            (
                "getChildren",
                "",
                Some("/queue/query-0000012345/shard1"),
                "getChildren /queue/query-{seq}/shard1",
            ),
            ("exists", "", Some("/"), "exists /"),
            ("getData", "", Some("/a/123456789"), "getData /a/{n}"),
            // 10 digits with no prefix is a number, 9 digits after a prefix is not a sequence.
            ("getData", "", Some("/a/0000000001"), "getData /a/{n}"),
            (
                "getData",
                "",
                Some("/a/x-123456789"),
                "getData /a/x-123456789",
            ),
            (
                "multi",
                "create,setData",
                Some("/log/log-0000000007"),
                "multi create,setData /log/log-{seq}",
            ),
            ("ping", "", None, "ping"),
            ("getData", "", Some("/узел/0000000001"), "getData /узел/{n}"),
            (
                "getData",
                "",
                Some("/узел-0000000001"),
                "getData /узел-{seq}",
            ),
        ];
        for (operation, multi_ops, path, expected) in cases {
            assert_eq!(pattern(operation, multi_ops, path), expected, "{path:?}");
        }
    }

    #[test]
    fn sequential_nodes_of_one_parent_share_a_pattern() {
        assert_eq!(
            pattern("delete", "", Some("/q/query-0000000001")),
            pattern("delete", "", Some("/q/query-0000999999"))
        );
        assert_ne!(
            pattern("delete", "", Some("/q/query-0000000001")),
            pattern("delete", "", Some("/q/task-0000000001"))
        );
    }
}
