//! The answered requests' durations per group, in time order, from `requests`: what the batch
//! means of [`super::batch_means`] need, which `intervals` (10 s windows) cannot give.
use std::collections::HashMap;
use std::path::Path;

use arrow::array::{Array, Int64Array, StringArray, TimestampMicrosecondArray};
use l7tap_protocols::fingerprint::Fingerprint;

use super::GroupKey;
use crate::outdir::{
    column, column_if_present, read_projected, table_files, ReadError, Selection, ShownSides,
};

/// Most durations kept per group (beyond them a group's batches come from the rows read
/// first: fewer requests per batch, a wider interval, never a narrower one).
pub const MAX_PER_GROUP: usize = 200_000;
/// Most durations kept in all (16 bytes each with their time: 64 MB).
pub const MAX_TOTAL: usize = 4_000_000;

/// Durations (ns) of the answered requests (status other than `incomplete`) of the side shown
/// per server, by group, each sorted by start time. Empty when the output has no `requests`.
pub fn request_durations(
    dir: &Path,
    selection: &Selection,
    shown: &ShownSides,
) -> Result<HashMap<GroupKey, Vec<u64>>, ReadError> {
    let mut timed: HashMap<GroupKey, Vec<(i64, u64)>> = HashMap::new();
    let mut total = 0usize;
    let columns = [
        "ts",
        "duration_ns",
        "protocol",
        "side",
        "server_addr",
        "operation",
        "status",
        "fingerprint",
    ];
    for path in table_files(dir, "requests", selection)? {
        if total >= MAX_TOTAL {
            break;
        }
        let (batches, _) = read_projected(&path, &columns, "ts", selection, 0)?;
        for batch in &batches {
            let named = |e: ReadError| e.in_file(&path);
            let ts = column::<TimestampMicrosecondArray>(batch, "ts").map_err(named)?;
            let duration = column::<Int64Array>(batch, "duration_ns").map_err(named)?;
            let protocol = column::<StringArray>(batch, "protocol").map_err(named)?;
            let side = column::<StringArray>(batch, "side").map_err(named)?;
            let server = column::<StringArray>(batch, "server_addr").map_err(named)?;
            let operation = column::<StringArray>(batch, "operation").map_err(named)?;
            let status = column::<StringArray>(batch, "status").map_err(named)?;
            let fingerprint =
                column_if_present::<Int64Array>(batch, "fingerprint").map_err(named)?;
            for row in 0..batch.num_rows() {
                if total >= MAX_TOTAL {
                    break;
                }
                if status.value(row) == "incomplete"
                    || !shown.is_shown(protocol.value(row), server.value(row), side.value(row))
                {
                    continue;
                }
                let key = GroupKey {
                    protocol: protocol.value(row).to_owned(),
                    server: server.value(row).to_owned(),
                    operation: operation.value(row).to_owned(),
                    fingerprint: fingerprint
                        .filter(|f| !f.is_null(row))
                        .map(|f| Fingerprint::from_i64(f.value(row))),
                };
                let durations = timed.entry(key).or_default();
                if durations.len() < MAX_PER_GROUP {
                    durations.push((ts.value(row), duration.value(row).max(0) as u64));
                    total += 1;
                }
            }
        }
    }
    Ok(timed
        .into_iter()
        .map(|(key, mut rows)| {
            rows.sort_by_key(|&(ts, _)| ts);
            (key, rows.into_iter().map(|(_, d)| d).collect())
        })
        .collect())
}
