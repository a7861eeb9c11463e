//! Times of the command line and of the output: UTC text to Unix µs and back.

/// Parses `--since`/`--until`: RFC 3339-like UTC (`2026-11-25T11:30:00Z`, `2026-11-25 11:30:00`,
/// `2026-11-25`) or Unix seconds; returns Unix µs.
pub fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(secs) = text.parse::<f64>() {
        return Ok((secs * 1e6) as i64);
    }
    let t = text.trim_end_matches('Z').replace(' ', "T");
    let (date, time) = t.split_once('T').unwrap_or((&t, "00:00:00"));
    let bad = || format!("bad time {text:?} (use 2026-11-25T11:30:00Z or Unix seconds)");
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let hms: Vec<f64> = time
        .split(':')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    if d.len() != 3 || hms.is_empty() || hms.len() > 3 {
        return Err(bad());
    }
    let days = days_from_civil(d[0], d[1], d[2]);
    let secs = hms[0] * 3600.0 + hms.get(1).unwrap_or(&0.0) * 60.0 + hms.get(2).unwrap_or(&0.0);
    Ok(days * 86_400_000_000 + (secs * 1e6) as i64)
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
}
