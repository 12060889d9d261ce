//! Schedules: a run spec submitted on a cron expression read in a time
//! zone. Cron expressions are parsed and their times computed by `croner`
//! (five fields, or six with seconds first), in a `chrono-tz` zone, so
//! daylight-saving changes move local times the way people expect: a time
//! that does not exist (spring forward) fires at the first time after the
//! gap, a time that happens twice (fall back) fires once.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use serde::{Deserialize, Serialize};

use super::Millis;

/// What a schedule does about fire times that passed while no engine led.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissedPolicy {
    /// None of them runs; the schedule goes on from its next time.
    #[default]
    Skip,
    /// One run for all of them, then the next time.
    RunOnce,
}

/// What a fire does while the schedule's previous run is not final.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    #[default]
    Skip,
    Allow,
    CancelPrevious,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub name: String,
    /// The spec's text, `${params.NAME}` and all.
    pub spec: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// The run name the spec gives.
    pub run_name: String,
    pub cron: String,
    /// An IANA zone name.
    pub timezone: String,
    pub missed: MissedPolicy,
    pub overlap: OverlapPolicy,
    pub paused: bool,
    /// When it fires next; `None` while paused, or when the expression has
    /// no time left.
    pub next_fire_at: Option<Millis>,
    pub last_fire_at: Option<Millis>,
    pub last_run_id: Option<String>,
    pub created_at: Millis,
    pub created_by: String,
    pub updated_at: Millis,
    pub updated_by: String,
}

/// A cron expression in a time zone, ready to compute fire times.
#[derive(Clone, Debug)]
pub struct When {
    cron: Cron,
    zone: chrono_tz::Tz,
}

/// The longest schedule name.
const MAX_NAME: usize = 64;

/// A schedule name: 1 to 64 of letters, digits, `.`, `_` and `-`.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!(
            "invalid schedule name {name:?}: use 1 to {MAX_NAME} of letters, digits, '.', '_' and '-'"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "schedule name {name:?} contains {c:?}; use only letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

impl When {
    /// Parses `cron` (five fields, or six with seconds first) and `zone`
    /// (an IANA name; empty is UTC). Errors name the value to fix.
    pub fn parse(cron: &str, zone: &str) -> Result<Self, String> {
        let fields = cron.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(format!(
                "cron expression {cron:?} has {fields} fields; give 5 (minute hour day-of-month \
                 month day-of-week) or 6 (seconds first), e.g. \"0 3 * * *\" or \"*/2 * * * * *\""
            ));
        }
        let parsed = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(cron)
            .map_err(|e| format!("invalid cron expression {cron:?}: {e}"))?;
        let zone = if zone.is_empty() { "UTC" } else { zone };
        let zone = chrono_tz::Tz::from_str(zone).map_err(|_| {
            format!(
                "unknown time zone {zone:?}: give an IANA zone name such as \"UTC\", \
                 \"Europe/Berlin\" or \"America/New_York\""
            )
        })?;
        Ok(Self { cron: parsed, zone })
    }

    /// The first fire time strictly after `after`; `None` when there is none.
    pub fn next_after(&self, after: Millis) -> Option<Millis> {
        // Cron times are whole seconds: the next one after `after` is the
        // next one after the start of its second.
        let second = after - after.rem_euclid(1000);
        let start = Utc
            .timestamp_millis_opt(second)
            .single()?
            .with_timezone(&self.zone);
        let next: DateTime<chrono_tz::Tz> = self.cron.find_next_occurrence(&start, false).ok()?;
        Some(next.timestamp_millis())
    }

    /// The zone's name.
    pub fn zone(&self) -> &'static str {
        self.zone.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Millis {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn five_fields_are_minutes_and_six_start_with_seconds() {
        let daily = When::parse("0 3 * * *", "").unwrap();
        assert_eq!(
            daily.next_after(at("2026-01-01T03:00:00Z")),
            Some(at("2026-01-02T03:00:00Z"))
        );
        let two = When::parse("*/2 * * * * *", "UTC").unwrap();
        assert_eq!(
            two.next_after(at("2026-01-01T00:00:00.500Z")),
            Some(at("2026-01-01T00:00:02Z"))
        );
    }

    #[test]
    fn local_times_follow_daylight_saving() {
        let berlin = When::parse("0 3 * * *", "Europe/Berlin").unwrap();
        // Winter: 03:00 CET is 02:00 UTC; summer: 03:00 CEST is 01:00 UTC.
        assert_eq!(
            berlin.next_after(at("2026-01-10T00:00:00Z")),
            Some(at("2026-01-10T02:00:00Z"))
        );
        assert_eq!(
            berlin.next_after(at("2026-07-10T00:00:00Z")),
            Some(at("2026-07-10T01:00:00Z"))
        );
        // 02:30 does not exist on 29 March 2026 in Berlin: it fires right
        // after the gap, once.
        let gap = When::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let fire = gap.next_after(at("2026-03-28T12:00:00Z")).unwrap();
        assert_eq!(fire, at("2026-03-29T01:00:00Z"));
        assert_eq!(gap.next_after(fire), Some(at("2026-03-30T00:30:00Z")));
    }

    #[test]
    fn bad_expressions_and_zones_are_named() {
        let e = When::parse("61 * * * *", "UTC").unwrap_err();
        assert!(e.contains("\"61 * * * *\""), "{e}");
        let e = When::parse("* * *", "UTC").unwrap_err();
        assert!(e.contains("3 fields"), "{e}");
        let e = When::parse("0 3 * * *", "Mars/Olympus").unwrap_err();
        assert!(e.contains("\"Mars/Olympus\""), "{e}");
        assert!(validate_name("nightly-backup").is_ok());
        assert!(validate_name("no spaces").is_err());
    }
}
