//! The bound on how many fingerprints keep their own identity: past it, rare ones fold into
//! [`Fingerprint::OTHER`].
//!
//! Each actor holds one [`FingerprintTable`] of at most [`FINGERPRINT_CAP`] fingerprints. A
//! fingerprint in the table keeps its value; a new one takes a free place; when none is free
//! it is `other`. At the end of each aggregation window ([`FingerprintTable::end_window`])
//! the fingerprints not seen during that window leave the table: a fingerprint that keeps
//! coming back keeps its place, a one-off makes room. Everything depends on the order of the
//! actor's records and its windows, which are event time: a replay folds the same way.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use super::{Fingerprint, FingerprintHasher};

/// Fingerprints with an identity of their own, per actor at a time. Each one is a key of
/// the `intervals` table (times the other key columns): an `intervals` row holds a heatmap of
/// (window / sub-window) × 31 counts and a histogram, ~3 KiB in memory while its window is
/// open. 1000 shapes is more than a benchmark or an application's query set holds (tens to
/// hundreds), and bounds what ad-hoc or generated SQL (a table name per tenant, a literal the
/// normaliser cannot see) can add to the open windows of one actor.
pub const FINGERPRINT_CAP: usize = 1000;

/// See the module documentation.
#[derive(Debug)]
pub struct FingerprintTable {
    /// Fingerprint → seen during the current window.
    seen: HashMap<Fingerprint, bool, BuildHasherDefault<FingerprintHasher>>,
    cap: usize,
    folded: u64,
}

impl Default for FingerprintTable {
    fn default() -> Self {
        FingerprintTable::with_cap(FINGERPRINT_CAP)
    }
}

impl FingerprintTable {
    pub fn with_cap(cap: usize) -> Self {
        FingerprintTable {
            seen: HashMap::with_capacity_and_hasher(cap, Default::default()),
            cap,
            folded: 0,
        }
    }

    /// The fingerprint to record for `fingerprint`: itself, or `other` past the cap.
    #[inline]
    pub fn fold(&mut self, fingerprint: Fingerprint) -> Fingerprint {
        if let Some(seen) = self.seen.get_mut(&fingerprint) {
            *seen = true;
            return fingerprint;
        }
        if self.seen.len() < self.cap {
            self.seen.insert(fingerprint, true);
            return fingerprint;
        }
        self.folded += 1;
        Fingerprint::OTHER
    }

    /// An aggregation window ended: fingerprints it did not see leave the table.
    pub fn end_window(&mut self) {
        self.seen.retain(|_, seen| std::mem::replace(seen, false));
    }

    /// Records folded into `other` so far.
    pub fn folded(&self) -> u64 {
        self.folded
    }
}

#[cfg(test)]
mod tests {
    use super::{Fingerprint, FingerprintTable};

    #[test]
    fn past_the_cap_new_fingerprints_are_other_until_a_window_frees_room() {
        let mut table = FingerprintTable::with_cap(2);
        let (a, b, c) = (Fingerprint(11), Fingerprint(12), Fingerprint(13));
        assert_eq!(table.fold(a), a);
        assert_eq!(table.fold(b), b);
        assert_eq!(table.fold(c), Fingerprint::OTHER);
        assert_eq!(table.fold(a), a);
        assert_eq!(table.folded(), 1);
        // `b` was seen in the window, so it stays; the next window without it frees its place.
        table.end_window();
        assert_eq!(table.fold(a), a);
        assert_eq!(table.fold(c), Fingerprint::OTHER);
        table.end_window();
        assert_eq!(table.fold(c), c);
        assert_eq!(table.fold(b), Fingerprint::OTHER);
        assert_eq!(table.folded(), 3);
    }
}
