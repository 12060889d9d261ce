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

/// `--time`: how tables and details write points in time.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeStyle {
    /// "12s ago", "in 20s"
    Relative,
    /// RFC 3339 in UTC: 2026-03-01T12:00:00Z
    Absolute,
}

/// Points in time as one answer writes them: relative to the moment the
/// line is written, or absolute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    pub now_ms: i64,
    pub style: TimeStyle,
}

impl Clock {
    /// Relative to `now_ms`.
    pub fn relative(now_ms: i64) -> Self {
        Self {
            now_ms,
            style: TimeStyle::Relative,
        }
    }

    /// `at_ms` as this clock writes it; "-" when unset.
    pub fn at(&self, at_ms: i64) -> String {
        match self.style {
            TimeStyle::Relative => relative(at_ms, self.now_ms),
            TimeStyle::Absolute => absolute(at_ms),
        }
    }
}

/// `at` as an RFC 3339 time in UTC, to the second: "2026-03-01T12:00:00Z";
/// "-" when unset.
pub fn absolute(at_ms: i64) -> String {
    let Ok(ms) = u64::try_from(at_ms) else {
        return "-".to_owned();
    };
    if ms == 0 {
        return "-".to_owned();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
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
/// `90min`, as humantime reads them) or an RFC 3339 time in UTC
/// (`2026-03-01T12:00:00Z`).
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
        let hint = "give a span ago such as 30m, 2h or 1d12h, \
                    or an RFC 3339 time in UTC such as 2026-03-01T12:00:00Z";
        if let Ok(span) = humantime::parse_duration(text) {
            return Ok(Self::Ago(
                u64::try_from(span.as_millis()).unwrap_or(u64::MAX),
            ));
        }
        let at =
            humantime::parse_rfc3339_weak(text).map_err(|e| format!("{text:?}: {e}; {hint}"))?;
        let ms = at
            .duration_since(UNIX_EPOCH)
            .map_err(|_| format!("{text:?} is before 1970; {hint}"))?
            .as_millis();
        Ok(Self::At(i64::try_from(ms).unwrap_or(i64::MAX)))
    }
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
    fn absolute_times_are_rfc_3339_in_utc() {
        assert_eq!(absolute(NOW + 999), "2023-11-14T22:13:20Z");
        assert_eq!(absolute(0), "-");
        let clock = Clock {
            now_ms: NOW,
            style: TimeStyle::Absolute,
        };
        assert_eq!(clock.at(NOW - 12_000), "2023-11-14T22:13:08Z");
        assert_eq!(Clock::relative(NOW).at(NOW - 12_000), "12s ago");
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
    fn spans_and_times_read_as_humantime_writes_them() {
        assert_eq!("2h".parse(), Ok(When::Ago(7_200_000)));
        assert_eq!("1h 30m".parse(), Ok(When::Ago(5_400_000)));
        assert_eq!("1d12h".parse(), Ok(When::Ago(129_600_000)));
        assert_eq!("1970-01-01T00:00:00Z".parse(), Ok(When::At(0)));
        assert_eq!("2023-11-14T22:13:20.5Z".parse(), Ok(When::At(NOW + 500)));
        for bad in ["2", "2 fortnights", "", "2023-02-29T00:00:00Z", "2023-1-14"] {
            assert!(bad.parse::<When>().is_err(), "{bad}");
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
