//! Inputs the fuzz targets once crashed on, run through the same checks as the targets
//! (`fuzz/fuzz_targets/`), so each stays fixed. Input format: `stream::feed_fuzz_input`.
use l7tap_protocols::stream::{feed_fuzz_input, StreamDriver};
use l7tap_protocols::zookeeper::{ZooKeeperParser, ZooKeeperSettings};

/// A server chunk that parses as a reply came before any request; the request with its
/// xid came later. The reply was held until then and paired with it: a record that ended
/// before it started.
#[test]
fn zookeeper_a_reply_before_its_request_answers_nothing() {
    let data = include_bytes!("fuzz_regressions/zookeeper-reply-before-request.bin");
    let mut outputs = Vec::new();
    for fast_path in [true, false] {
        let settings = ZooKeeperSettings {
            fast_path,
            ..ZooKeeperSettings::default()
        };
        let mut driver = StreamDriver::new(ZooKeeperParser::new(settings));
        let out = feed_fuzz_input(&mut driver, data, |_| {});
        assert!(!out.is_empty(), "fast path {fast_path}: no record at all");
        for r in &out {
            assert!(r.end_ns >= r.start_ns, "fast path {fast_path}: {r:?}");
        }
        outputs.push(out.to_owned_records());
    }
    assert_eq!(
        outputs[0], outputs[1],
        "the fast path and the general decoder differ"
    );
}
