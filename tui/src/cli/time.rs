//! Times as people read them in a terminal: "12s ago", "in 20s", "5m12s".
//!
//! The engine sends Unix milliseconds with 0 meaning "not set"; every
//! function here takes `now` explicitly so that tables render the same in
//! tests as on a clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, as the engine counts them.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        // A clock before 1970 is broken; ages then read as "in …", which
        // shows the problem rather than hiding it.
        .unwrap_or(0)
}

/// `at` relative to `now`: "12s ago", "in 20s", "now"; "-" when unset.
pub fn relative(at_ms: i64, now_ms: i64) -> String {
    if at_ms <= 0 {
        return "-".to_owned();
    }
    let diff = now_ms.saturating_sub(at_ms);
    // Under a second either way is "now": clocks of the engine and of this
    // host are rarely closer than that, and "in 0s" reads as a bug.
    if diff.unsigned_abs() < 1000 {
        return "now".to_owned();
    }
    let span = duration(diff.unsigned_abs());
    if diff > 0 {
        format!("{span} ago")
    } else {
        format!("in {span}")
    }
}

/// A span in its two largest units: "850ms", "12s", "5m12s", "3h20m",
/// "2d5h". The second unit is left out when it is zero, and from 10 of the
/// larger unit on, where it no longer matters to a reader.
pub fn duration(ms: u64) -> String {
    const SEC: u64 = 1000;
    const MIN: u64 = 60 * SEC;
    const HOUR: u64 = 60 * MIN;
    const DAY: u64 = 24 * HOUR;
    let two = |big: u64, big_unit: &str, small: u64, small_unit: &str| {
        if small == 0 || big >= 10 {
            format!("{big}{big_unit}")
        } else {
            format!("{big}{big_unit}{small}{small_unit}")
        }
    };
    match ms {
        0 => "0s".to_owned(),
        ms if ms < SEC => format!("{ms}ms"),
        ms if ms < MIN => format!("{}s", ms / SEC),
        ms if ms < HOUR => two(ms / MIN, "m", ms % MIN / SEC, "s"),
        ms if ms < DAY => two(ms / HOUR, "h", ms % HOUR / MIN, "m"),
        ms => two(ms / DAY, "d", ms % DAY / HOUR, "h"),
    }
}

/// A [`Duration`] as [`duration`] words it.
pub fn span(d: Duration) -> String {
    duration(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A span that may be unset (0): "-" then.
pub fn duration_or_dash(ms: u64) -> String {
    if ms == 0 {
        "-".to_owned()
    } else {
        duration(ms)
    }
}

/// A point in time given on the command line: a span ago (`2h`, `1d12h`,
/// `90m`, as humantime writes them) or an RFC 3339 time
/// (`2026-03-01T12:00:00Z`, `2026-03-01T12:00:00+01:00`, or a bare date,
/// taken as midnight UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    Ago(u64),
    At(i64),
}

impl When {
    /// Unix milliseconds, counting a span back from `now_ms`.
    pub fn ms(self, now_ms: i64) -> i64 {
        match self {
            Self::Ago(ms) => now_ms.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX)),
            Self::At(ms) => ms,
        }
    }
}

impl std::str::FromStr for When {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let first_digits = text.bytes().take_while(u8::is_ascii_digit).count();
        // A date starts with four digits and a dash; a span never has one.
        if first_digits == 4 && text.as_bytes().get(4) == Some(&b'-') {
            return rfc3339_ms(text).map(Self::At);
        }
        parse_span(text).map(Self::Ago).map_err(|why| {
            format!(
                "{why}: give a span ago such as 30m, 2h or 1d12h, \
                 or an RFC 3339 time such as 2026-03-01T12:00:00Z"
            )
        })
    }
}

/// A span as humantime writes it: numbers with units, optionally
/// separated by spaces (`1h 30m`, `1h30m`, `90min`, `2days`).
pub fn parse_span(text: &str) -> Result<u64, String> {
    const UNITS: &[(&[&str], u64)] = &[
        (&["ms", "msec", "msecs", "millis"], 1),
        (&["s", "sec", "secs", "second", "seconds"], 1_000),
        (&["m", "min", "mins", "minute", "minutes"], 60_000),
        (&["h", "hr", "hrs", "hour", "hours"], 3_600_000),
        (&["d", "day", "days"], 86_400_000),
        (&["w", "week", "weeks"], 7 * 86_400_000),
    ];
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("no time given".to_owned());
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("{text:?} is not a span"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?} is too long a span"))?;
        rest = rest[digits..].trim_start();
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..letters];
        let Some((_, ms)) = UNITS.iter().find(|(names, _)| names.contains(&unit)) else {
            return Err(if unit.is_empty() {
                format!("{text:?} has a number without a unit (s, m, h, d, w)")
            } else {
                format!("{text:?} has an unknown unit {unit:?}")
            });
        };
        total = number
            .checked_mul(*ms)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{text:?} is too long a span"))?;
        rest = rest[letters..].trim_start();
    }
    Ok(total)
}

/// An RFC 3339 time (or a bare date, at midnight UTC) as Unix
/// milliseconds.
pub fn rfc3339_ms(text: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "{text:?} is not an RFC 3339 time (such as 2026-03-01T12:00:00Z or \
             2026-03-01T12:00:00+01:00)"
        )
    };
    let num = |s: &str| -> Result<i64, String> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let b = text.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let (year, month, day) = (num(&text[0..4])?, num(&text[5..7])?, num(&text[8..10])?);
    if !(1..=12).contains(&month) || !(1..=days_in_month(year, month)).contains(&day) {
        return Err(bad());
    }
    let days = days_from_civil(year, month, day);
    let mut ms = days * 86_400_000;
    if b.len() == 10 {
        return Ok(ms);
    }
    if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 19 || b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let (hour, minute, second) = (
        num(&text[11..13])?,
        num(&text[14..16])?,
        num(&text[17..19])?,
    );
    if hour > 23 || minute > 59 || second > 60 {
        return Err(bad());
    }
    ms += (hour * 3600 + minute * 60 + second) * 1000;
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let millis: String = fraction[..digits]
            .chars()
            .chain("000".chars())
            .take(3)
            .collect();
        ms += num(&millis)?;
        rest = &fraction[digits..];
    }
    let offset_ms = match rest {
        "Z" | "z" => 0,
        _ => {
            let rb = rest.as_bytes();
            if rb.len() != 6 || !matches!(rb[0], b'+' | b'-') || rb[3] != b':' {
                return Err(bad());
            }
            let (h, m) = (num(&rest[1..3])?, num(&rest[4..6])?);
            if h > 23 || m > 59 {
                return Err(bad());
            }
            let offset = (h * 60 + m) * 60_000;
            if rb[0] == b'-' { -offset } else { offset }
        }
    };
    Ok(ms - offset_ms)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn relative_reads_past_as_ago_and_future_as_in() {
        assert_eq!(relative(NOW - 12_000, NOW), "12s ago");
        assert_eq!(relative(NOW + 20_000, NOW), "in 20s");
        assert_eq!(relative(NOW - 312_000, NOW), "5m12s ago");
        assert_eq!(relative(NOW - 3 * 86_400_000, NOW), "3d ago");
    }

    #[test]
    fn relative_calls_under_a_second_now_and_unset_a_dash() {
        assert_eq!(relative(NOW - 400, NOW), "now");
        assert_eq!(relative(NOW + 999, NOW), "now");
        assert_eq!(relative(0, NOW), "-");
    }

    #[test]
    fn duration_keeps_two_units_while_they_matter() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(59_999), "59s");
        assert_eq!(duration(60_000), "1m");
        assert_eq!(duration(312_000), "5m12s");
        assert_eq!(duration(12 * 60_000 + 5_000), "12m");
        assert_eq!(duration(3 * 3_600_000 + 20 * 60_000), "3h20m");
        assert_eq!(duration(2 * 86_400_000 + 5 * 3_600_000), "2d5h");
        assert_eq!(duration(40 * 86_400_000), "40d");
        assert_eq!(duration_or_dash(0), "-");
    }

    #[test]
    fn spans_read_as_humantime_writes_them() {
        assert_eq!(parse_span("2h"), Ok(7_200_000));
        assert_eq!(parse_span("1h 30m"), Ok(5_400_000));
        assert_eq!(parse_span("1d12h"), Ok(129_600_000));
        assert_eq!(parse_span("90min"), Ok(5_400_000));
        assert_eq!(parse_span("2 days"), Ok(172_800_000));
        assert_eq!(parse_span("250ms"), Ok(250));
        assert!(parse_span("2").unwrap_err().contains("without a unit"));
        assert!(
            parse_span("2 fortnights")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_span("").is_err());
        assert!(parse_span("h").is_err());
    }

    #[test]
    fn rfc3339_times_read_in_utc_whatever_their_offset() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(rfc3339_ms("2023-11-14T22:13:20Z"), Ok(NOW));
        assert_eq!(rfc3339_ms("2023-11-14T23:13:20+01:00"), Ok(NOW));
        assert_eq!(rfc3339_ms("2023-11-14T22:13:20.5Z"), Ok(NOW + 500));
        assert_eq!(rfc3339_ms("2023-11-14"), Ok(NOW - 80_000_000));
        assert_eq!(rfc3339_ms("2024-02-29T00:00:00Z"), Ok(1_709_164_800_000));
        for bad in [
            "2023-02-29T00:00:00Z",
            "2023-11-14T25:00:00Z",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13Z",
            "2023-1-14",
        ] {
            assert!(rfc3339_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn when_is_a_span_ago_or_a_time() {
        let ago: When = "2h".parse().unwrap();
        assert_eq!(ago.ms(NOW), NOW - 7_200_000);
        let at: When = "2023-11-14T22:13:20Z".parse().unwrap();
        assert_eq!(at.ms(0), NOW);
        let e = "yesterday".parse::<When>().unwrap_err();
        assert!(e.contains("RFC 3339"), "{e}");
    }
}
