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
}
