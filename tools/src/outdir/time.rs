//! Times of the command line and of the output: UTC text to Unix µs and back.

/// Latest time accepted: 9999-12-31T23:59:59Z, in Unix seconds (later ones do not format
/// as `YYYY`, and far later ones overflow µs in an i64).
const MAX_UNIX_SECONDS: i64 = 253_402_300_799;

/// Parses `--since`/`--until`: RFC 3339-like UTC (`2026-11-25T11:30:00Z`, `2026-11-25 11:30:00`,
/// `2026-11-25`) or Unix seconds; returns Unix µs. Impossible dates and times (month 13, hour
/// 99, `nan`) and times outside 1970..=9999 are errors.
pub fn parse_time(text: &str) -> Result<i64, String> {
    let range = || format!("time {text:?} is out of range (1970-01-01 to 9999-12-31)");
    if let Ok(secs) = text.parse::<f64>() {
        if !secs.is_finite() {
            return Err(format!("bad time {text:?}"));
        }
        if !(0.0..=MAX_UNIX_SECONDS as f64).contains(&secs) {
            return Err(range());
        }
        return Ok((secs * 1e6) as i64);
    }
    let t = text.trim_end_matches('Z').replace(' ', "T");
    let (date, time) = t.split_once('T').unwrap_or((&t, "00:00:00"));
    let bad = || format!("bad time {text:?} (use 2026-11-25T11:30:00Z or Unix seconds)");
    let d: Vec<i64> = date
        .split('-')
        .map(|p| {
            // Digits only: no sign, no spaces (`i64::from_str` takes a leading `+`).
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 4 {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        })
        .collect::<Result<_, _>>()?;
    let hms: Vec<f64> = time
        .split(':')
        .map(|p| {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        })
        .collect::<Result<_, _>>()?;
    if d.len() != 3 || hms.is_empty() || hms.len() > 3 {
        return Err(bad());
    }
    let (year, month, day) = (d[0], d[1], d[2]);
    if !(1970..=9999).contains(&year) {
        return Err(range());
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(format!(
            "bad date in {text:?}: no day {day} in month {month}"
        ));
    }
    let (hour, minute, second) = (
        hms[0],
        *hms.get(1).unwrap_or(&0.0),
        *hms.get(2).unwrap_or(&0.0),
    );
    if hour.fract() != 0.0
        || minute.fract() != 0.0
        || hour >= 24.0
        || minute >= 60.0
        || second >= 60.0
    {
        return Err(format!(
            "bad time of day in {text:?} (hours 0-23, minutes and seconds 0-59)"
        ));
    }
    let days = days_from_civil(year, month, day);
    let secs = hour * 3600.0 + minute * 60.0 + second;
    Ok(days * 86_400_000_000 + (secs * 1e6) as i64)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SSZ` of Unix µs.
pub fn format_time_us(t_us: i64) -> String {
    let secs = t_us.div_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_and_format_in_utc() {
        let t = parse_time("2024-06-01T10:00:00Z").unwrap();
        assert_eq!(t, 1_717_236_000_000_000);
        assert_eq!(parse_time("2024-06-01 10:00:00").unwrap(), t);
        assert_eq!(parse_time("1717236000").unwrap(), t);
        assert_eq!(format_time_us(t), "2024-06-01T10:00:00Z");
        assert_eq!(
            format_time_us(parse_time("2000-02-29T23:59:59Z").unwrap()),
            "2000-02-29T23:59:59Z"
        );
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn impossible_times_are_errors() {
        for text in [
            "2024-13-01T00:00:00Z",
            "2024-00-10",
            "2024-02-30",
            "2023-02-29",
            "2024-06-01T99:00:00Z",
            "2024-06-01T10:60:00Z",
            "2024-06-01T10:00:61Z",
            "2024-06-01T-1:00:00Z",
            "nan",
            "NaN",
            "inf",
            "-5",
            "1e300",
            "300000-01-01",
            "+2024-06-01",
            "1969-12-31",
        ] {
            assert!(parse_time(text).is_err(), "{text} was accepted");
        }
        assert!(parse_time("2024-02-29").is_ok());
        assert_eq!(
            format_time_us(parse_time("9999-12-31T23:59:59Z").unwrap()),
            "9999-12-31T23:59:59Z"
        );
    }
}
