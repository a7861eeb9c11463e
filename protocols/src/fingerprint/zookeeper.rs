//! The ZooKeeper fingerprint text: the operation and the path's pattern, with sequence
//! suffixes and numeric segments normalised.
//!
//! Per path segment, first rule that applies:
//! - the 10 digits ZooKeeper appends to a sequential node are `{seq}`
//!   (`/locks/lock-0000000042` → `/locks/lock-{seq}`);
//! - a segment that looks like a generated id, 8 or more hex digits and dashes mixing decimal
//!   digits with letters or dashes (a UUID, a hex run id), is `{id}`;
//! - a segment's trailing decimal digits, or the whole of a number, are `{n}`
//!   (`/shards/3/replicas/r1` → `/shards/{n}/replicas/r{n}`; `l7tap-load` stays).
//!
//! Other characters stay as they are. Numbered nodes, replicas and sessions so fall into one
//! pattern each: paths are as many as the nodes of a tree, their patterns as many as its shape.

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
    let suffix_start = bytes.len().saturating_sub(SEQUENCE_DIGITS);
    if bytes.len() > SEQUENCE_DIGITS && bytes[suffix_start..].iter().all(u8::is_ascii_digit) {
        // The suffix is ASCII, so `suffix_start` is a char boundary.
        push_digit_runs(&segment[..suffix_start], out);
        out.push_str("{seq}");
        return;
    }
    if looks_like_an_id(bytes) {
        out.push_str("{id}");
        return;
    }
    push_digit_runs(segment, out);
}

/// 8 or more hex digits and dashes, at least one of them a decimal digit and one not (a
/// number alone is `{n}`).
fn looks_like_an_id(bytes: &[u8]) -> bool {
    bytes.len() >= 8
        && bytes.iter().all(|b| b.is_ascii_hexdigit() || *b == b'-')
        && bytes.iter().any(u8::is_ascii_digit)
        && !bytes.iter().all(u8::is_ascii_digit)
}

/// `text` with its trailing decimal digits (all of it, for a number) written `{n}`.
fn push_digit_runs(text: &str, out: &mut String) {
    let kept = text.trim_end_matches(|c: char| c.is_ascii_digit());
    out.push_str(kept);
    if kept.len() < text.len() {
        out.push_str("{n}");
    }
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
                "getData /clickhouse/tables/{n}/t/replicas/r{n}/log",
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
                "getChildren /queue/query-{seq}/shard{n}",
            ),
            ("exists", "", Some("/"), "exists /"),
            ("getData", "", Some("/a/123456789"), "getData /a/{n}"),
            // 10 digits with no prefix is a number; 9 digits after a prefix are not a sequence.
            ("getData", "", Some("/a/0000000001"), "getData /a/{n}"),
            ("getData", "", Some("/a/x-123456789"), "getData /a/x-{n}"),
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
            (
                "getData",
                "",
                Some("/run/2755113e4a/s0/n17"),
                "getData /run/{id}/s{n}/n{n}",
            ),
            (
                "delete",
                "",
                Some("/p/6f1c2b1e-0d3a-4c55-9a43-1f6a2e0c9b7d"),
                "delete /p/{id}",
            ),
            // Words of hex letters only are names, not ids.
            (
                "getData",
                "",
                Some("/deadbeefcafe/facade"),
                "getData /deadbeefcafe/facade",
            ),
            (
                "create",
                "",
                Some("/q/node2-0000000003"),
                "create /q/node2-{seq}",
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
