//! Sums of HdrHistogram V2 serializations, added count slot by count slot.
//!
//! `hdrhistogram`'s `Deserializer` builds a whole `Histogram` per serialization (for the
//! `intervals` configuration, 1 µs ..= 1 h at 3 digits, ~35 k counters allocated and zeroed)
//! and `Histogram::add` walks all of them again: over a day of 10 s windows that was most of
//! `l7tap report`'s time. Serializations of one configuration index their counts the same way,
//! so this adds the encoded counts straight into one array per sum and builds a `Histogram`
//! once, by serializing the sum and handing it to the crate's own deserializer.
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;

/// `0x1c849303` with the 0x10 bit of 8-byte words, as the Rust and Java encoders write it.
const V2_COOKIE: u32 = 0x1c84_9313;
/// Cookie and payload length, then the configuration: normalizing offset, significant digits,
/// lowest and highest trackable values, integer-to-double ratio.
const HEADER_LEN: usize = 40;

/// The sum of serialized histograms of one configuration (lowest discernible value and
/// significant digits: what maps values to counter slots; the highest trackable value only
/// sets how many slots there are, and the sum takes the largest).
#[derive(Default)]
pub struct HdrSum {
    /// Bytes 8..40 of the first serialization added, the highest value (24..32) the largest
    /// seen; the other fields must match in every serialization.
    config: Option<[u8; HEADER_LEN - 8]>,
    counts: Vec<u64>,
}

/// Offset of the highest trackable value in the configuration bytes.
const HIGH: std::ops::Range<usize> = 16..24;

impl HdrSum {
    /// Adds one uncompressed V2 serialization.
    pub fn add(&mut self, bytes: &[u8]) -> Result<(), String> {
        if bytes.len() < HEADER_LEN
            || u32::from_be_bytes(bytes[0..4].try_into().expect("4 bytes")) != V2_COOKIE
        {
            return Err("not an uncompressed V2 HdrHistogram".into());
        }
        let payload_len = u32::from_be_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize;
        let config: [u8; HEADER_LEN - 8] = bytes[8..HEADER_LEN].try_into().expect("32 bytes");
        match &mut self.config {
            None => self.config = Some(config),
            Some(c) => {
                if c[..HIGH.start] != config[..HIGH.start] || c[HIGH.end..] != config[HIGH.end..] {
                    return Err("histograms of different configurations".into());
                }
                if config[HIGH] > c[HIGH] {
                    c[HIGH].copy_from_slice(&config[HIGH]);
                }
            }
        }
        let payload = bytes
            .get(HEADER_LEN..HEADER_LEN + payload_len)
            .ok_or("HdrHistogram payload cut short")?;
        let mut pos = 0;
        let mut index = 0usize;
        while pos < payload.len() {
            let (zigzag, used) = read_varint(&payload[pos..])?;
            pos += used;
            let value = ((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64);
            if value < 0 {
                // A run of empty counters.
                index = index.saturating_add(value.unsigned_abs() as usize);
            } else {
                if index >= self.counts.len() {
                    if index > 1 << 24 {
                        return Err("HdrHistogram index out of range".into());
                    }
                    self.counts.resize(index + 1, 0);
                }
                self.counts[index] += value as u64;
                index += 1;
            }
        }
        Ok(())
    }

    /// The sum as a histogram (`None` when nothing was added).
    pub fn histogram(
        &self,
        deserializer: &mut Deserializer,
    ) -> Result<Option<Histogram<u64>>, String> {
        let Some(config) = &self.config else {
            return Ok(None);
        };
        let mut payload = Vec::new();
        let mut zeros = 0i64;
        for &count in &self.counts {
            if count == 0 {
                zeros += 1;
                continue;
            }
            if zeros > 0 {
                write_varint(&mut payload, zigzag(-zeros));
                zeros = 0;
            }
            write_varint(&mut payload, zigzag(count as i64));
        }
        let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
        bytes.extend_from_slice(&V2_COOKIE.to_be_bytes());
        bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(config);
        bytes.extend_from_slice(&payload);
        deserializer
            .deserialize(&mut bytes.as_slice())
            .map(Some)
            .map_err(|e| format!("HdrHistogram sum: {e:?}"))
    }
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// LEB128 limited to 9 bytes, the 9th holding 8 bits (HdrHistogram's encoding).
fn read_varint(bytes: &[u8]) -> Result<(u64, usize), String> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(9) {
        if i == 8 {
            return Ok((value | (u64::from(b) << 56), 9));
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    Err("HdrHistogram payload ends inside a number".into())
}

fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    for _ in 0..8 {
        if value < 0x80 {
            out.push(value as u8);
            return;
        }
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::{Serializer, V2Serializer};

    fn serialized(values: &[(u64, u64)]) -> (Vec<u8>, Histogram<u64>) {
        serialized_up_to(3_600_000_000_000, values)
    }

    fn serialized_up_to(high: u64, values: &[(u64, u64)]) -> (Vec<u8>, Histogram<u64>) {
        let mut h = Histogram::<u64>::new_with_bounds(1_000, high, 3).unwrap();
        for &(v, n) in values {
            h.record_n(v, n).unwrap();
        }
        let mut bytes = Vec::new();
        V2Serializer::new().serialize(&h, &mut bytes).unwrap();
        (bytes, h)
    }

    #[test]
    fn a_sum_equals_added_histograms() {
        let parts = [
            serialized(&[(1_500, 3), (2_000_000, 1), (210_000_000, 7)]),
            serialized(&[
                (1_500, 1),
                (3_599_000_000_000, 2),
                (u64::from(u32::MAX) * 9, 1),
            ]),
            serialized(&[]),
            serialized_up_to(10_000_000, &[(9_000_000, 4), (1_000, 1)]),
        ];
        let mut sum = HdrSum::default();
        let mut expected = Histogram::<u64>::new_with_bounds(1_000, 3_600_000_000_000, 3).unwrap();
        for (bytes, h) in &parts {
            sum.add(bytes).unwrap();
            expected.add(h).unwrap();
        }
        let got = sum.histogram(&mut Deserializer::new()).unwrap().unwrap();
        assert_eq!(got.len(), expected.len());
        assert_eq!(got.min(), expected.min());
        assert_eq!(got.max(), expected.max());
        for q in [0.0, 0.25, 0.5, 0.9, 0.99, 1.0] {
            assert_eq!(got.value_at_quantile(q), expected.value_at_quantile(q));
        }
        let got_counts: Vec<(u64, u64)> = got
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        let expected_counts: Vec<(u64, u64)> = expected
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        assert_eq!(got_counts, expected_counts);
    }

    #[test]
    fn other_configurations_and_garbage_are_refused() {
        let mut sum = HdrSum::default();
        sum.add(&serialized(&[(5_000, 1)]).0).unwrap();
        let mut other = Histogram::<u64>::new_with_bounds(1, 1_000_000, 2).unwrap();
        other.record(7).unwrap();
        let mut bytes = Vec::new();
        V2Serializer::new().serialize(&other, &mut bytes).unwrap();
        assert!(sum.add(&bytes).is_err());
        assert!(sum
            .add(b"not a histogram at all, not at all, no no")
            .is_err());
        assert!(HdrSum::default()
            .histogram(&mut Deserializer::new())
            .unwrap()
            .is_none());
    }
}
