//! UTC calendar arithmetic for partition directories and file names (no time-zone database:
//! everything is UTC), and the conversion of kernel CLOCK_MONOTONIC timestamps to Unix time.

/// Nanoseconds per microsecond, second and hour.
pub const NANOS_PER_MICRO: i64 = 1_000;
pub const MICROS_PER_SECOND: i64 = 1_000_000;
pub const MICROS_PER_HOUR: i64 = 3_600 * MICROS_PER_SECOND;

/// A UTC calendar time, to the second.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct UtcDateTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl UtcDateTime {
    /// The calendar time of a Unix timestamp in microseconds (rounded down to the second).
    pub fn from_unix_micros(unix_micros: i64) -> Self {
        let seconds = unix_micros.div_euclid(MICROS_PER_SECOND);
        let days = seconds.div_euclid(86_400);
        let second_of_day = seconds.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        UtcDateTime {
            year,
            month,
            day,
            hour: (second_of_day / 3_600) as u32,
            minute: (second_of_day / 60 % 60) as u32,
            second: (second_of_day % 60) as u32,
        }
    }

    /// `YYYY-MM-DD`, as in the `date=` partition directory.
    pub fn date_string(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    /// `YYYYMMDDTHHMMSSZ` (ISO 8601 basic format), as in file names.
    pub fn compact_string(&self) -> String {
        format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// (year, month 1..=12, day 1..=31) of a day count since 1970-01-01, proleptic Gregorian
/// (H. Hinnant's `civil_from_days`).
pub fn civil_from_days(days_since_epoch: i64) -> (i64, u32, u32) {
    let z = days_since_epoch + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Unix microseconds of a CLOCK_MONOTONIC timestamp, given the offset `unix - monotonic` in ns.
#[inline]
pub fn monotonic_ns_to_unix_micros(monotonic_ns: u64, monotonic_to_unix_offset_ns: i64) -> i64 {
    (monotonic_ns as i64)
        .saturating_add(monotonic_to_unix_offset_ns)
        .div_euclid(NANOS_PER_MICRO)
}

/// The offset to add to CLOCK_MONOTONIC ns to get Unix ns, measured now by reading both clocks
/// (the tightest of five REALTIME/MONOTONIC/REALTIME samples). A convenience for callers and
/// tests; the capture path may measure it its own way, the sink only needs the number.
pub fn measure_monotonic_to_unix_offset_ns() -> i64 {
    // std::time::Instant is CLOCK_MONOTONIC on Linux but does not expose its raw value.
    let mut best: Option<(i64, i64)> = None;
    for _ in 0..5 {
        let before = clock_ns(libc::CLOCK_REALTIME);
        let monotonic = clock_ns(libc::CLOCK_MONOTONIC);
        let after = clock_ns(libc::CLOCK_REALTIME);
        let spread = after - before;
        let offset = before + spread / 2 - monotonic;
        if best.is_none_or(|(best_spread, _)| spread < best_spread) {
            best = Some((spread, offset));
        }
    }
    best.map(|(_, offset)| offset).unwrap_or(0)
}

#[allow(clippy::useless_conversion)] // time_t and c_long are i32 on 32-bit targets
fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and `clock` is a clock id every Linux kernel
    // supports (REALTIME or MONOTONIC); clock_gettime writes only into `ts`.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0;
    }
    i64::from(ts.tv_sec) * 1_000_000_000 + i64::from(ts.tv_nsec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_matches_known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        // 2000-02-29 is day 11016; 2024-12-31 is day 20088.
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_088), (2024, 12, 31));
        let t = UtcDateTime::from_unix_micros(1_717_243_445 * MICROS_PER_SECOND + 999_999);
        assert_eq!(t.date_string(), "2024-06-01");
        assert_eq!((t.hour, t.minute, t.second), (12, 4, 5));
        assert_eq!(t.compact_string(), "20240601T120405Z");
    }

    #[test]
    fn monotonic_offset_is_plausible() {
        let offset = measure_monotonic_to_unix_offset_ns();
        // Unix time now is after 2020 and the machine booted less than 10 years ago.
        assert!(offset > 1_577_836_800_000_000_000 - 315_360_000_000_000_000);
        assert!(offset < 4_102_444_800_000_000_000);
    }
}
