//! `[[notify]]` entries and the `[notifications]` settings of the engine's
//! config, and the checks serde cannot make.
//!
//! ```toml
//! [notifications]
//! approval_overdue_before = "15m"   # approval.overdue this long before a deadline
//! worker_offline_after = "5m"       # worker.offline_long once offline this long
//! give_up_after = "24h"             # then notification.failed
//!
//! [[notify]]
//! name = "oncall"
//! url = "https://hooks.example.com/opsdeck"
//! secret = "oncall_hook"            # a [secrets] entry: the HMAC-SHA256 key
//! on = ["run.failed", "step.dead", "approval.*"]
//! queue = "deploy"
//! run_name = "deploy-*"
//! label = { team = "payments" }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{Problems, Seg};
use crate::domain::scope::Patterns;

/// `[notifications]`: when derived events fire, and how deliveries are
/// retried.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationsSection {
    /// `approval.overdue` is recorded this long before a pending
    /// approval's deadline.
    #[serde(with = "crate::config::humantime_serde")]
    pub approval_overdue_before: Duration,
    /// `worker.offline_long` is recorded once a worker has been offline
    /// this long.
    #[serde(with = "crate::config::humantime_serde")]
    pub worker_offline_after: Duration,
    /// A notification not delivered this long after its event is given up
    /// on, with a `notification.failed` event.
    #[serde(with = "crate::config::humantime_serde")]
    pub give_up_after: Duration,
    /// The wait after a first failed attempt; it doubles (with jitter) up
    /// to `retry_max`.
    #[serde(with = "crate::config::humantime_serde")]
    pub retry_min: Duration,
    #[serde(with = "crate::config::humantime_serde")]
    pub retry_max: Duration,
    /// How often the outbox is looked at for due notifications.
    #[serde(with = "crate::config::humantime_serde")]
    pub poll_interval: Duration,
}

impl Default for NotificationsSection {
    fn default() -> Self {
        Self {
            approval_overdue_before: Duration::from_secs(15 * 60),
            worker_offline_after: Duration::from_secs(5 * 60),
            give_up_after: Duration::from_secs(24 * 3600),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(5 * 60),
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// One `[[notify]]` entry: where to deliver, and which events.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifierEntry {
    pub name: String,
    /// A webhook: the JSON is POSTed here.
    pub url: Option<String>,
    /// A command: run with the JSON on its stdin.
    pub exec: Option<Vec<String>>,
    /// A `[secrets]` entry whose value signs webhook bodies (HMAC-SHA256).
    pub secret: Option<String>,
    /// How long one attempt may take.
    #[serde(default = "default_timeout", with = "crate::config::humantime_serde")]
    pub timeout: Duration,
    /// Event kinds or families (`run.failed`, `approval.*`).
    pub on: Patterns,
    /// Only events of steps on this queue (glob).
    pub queue: Option<String>,
    /// Only events of runs with a matching name (glob).
    pub run_name: Option<String>,
    /// Only events of runs carrying every one of these labels.
    #[serde(default)]
    pub label: BTreeMap<String, String>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Whether a notifier's name may be part of an idempotency id and a
/// metric label: letters, digits, `-` and `_`.
fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Checks `[notifications]` and every `[[notify]]` entry, naming the entry
/// and field of each mistake.
pub fn check(
    section: &NotificationsSection,
    entries: &[NotifierEntry],
    secrets: &BTreeMap<String, crate::secrets::SecretSource>,
    p: &mut Problems<'_>,
) {
    use Seg::{Index, Key};
    for (key, value) in [
        ("give_up_after", section.give_up_after),
        ("retry_min", section.retry_min),
        ("retry_max", section.retry_max),
        ("poll_interval", section.poll_interval),
        ("worker_offline_after", section.worker_offline_after),
    ] {
        if value < Duration::from_millis(10) {
            p.add(
                &[Key("notifications"), Key(key)],
                format!(
                    "{key} is {}; give at least \"10ms\"",
                    humantime::format_duration(value)
                ),
            );
        }
    }
    if section.retry_min > section.retry_max {
        p.add(
            &[Key("notifications"), Key("retry_min")],
            "retry_min is longer than retry_max; the first wait cannot exceed the longest",
        );
    }
    for (i, n) in entries.iter().enumerate() {
        let at = |field| [Key("notify"), Index(i), Key(field)];
        let who = format!("[[notify]] {:?}", n.name);
        if !name_ok(&n.name) {
            p.add(
                &at("name"),
                format!(
                    "{who}: name it with 1 to 64 letters, digits, '-' or '_' (it is part of each delivery's idempotency id)"
                ),
            );
        }
        if entries[..i].iter().any(|o| o.name == n.name) {
            p.add(
                &at("name"),
                format!("{who}: another [[notify]] has this name; name each once"),
            );
        }
        match (&n.url, &n.exec) {
            (Some(_), Some(_)) | (None, None) => p.add(
                &at("name"),
                format!(
                    "{who}: give exactly one of url = \"https://…\" or exec = [\"command\", …]"
                ),
            ),
            (Some(url), None) => match url::Url::parse(url) {
                Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                _ => p.add(
                    &at("url"),
                    format!("{who}: {url:?} is not an http:// or https:// URL"),
                ),
            },
            (None, Some(cmd)) => {
                if cmd.first().is_none_or(|c| c.trim().is_empty()) {
                    p.add(
                        &at("exec"),
                        format!("{who}: exec is empty; name the command to run"),
                    );
                }
            }
        }
        if let Some(secret) = &n.secret {
            if n.exec.is_some() {
                p.add(
                    &at("secret"),
                    format!("{who}: secret signs webhook bodies; an exec notifier takes none"),
                );
            } else if !secrets.contains_key(secret) {
                p.add(
                    &at("secret"),
                    format!("{who}: no [secrets] entry is named {secret:?}; add it there and name it here"),
                );
            }
        }
        if n.timeout < Duration::from_millis(10) || n.timeout > Duration::from_secs(600) {
            p.add(
                &at("timeout"),
                format!("{who}: timeout must be between \"10ms\" and \"10m\""),
            );
        }
        for (field, glob) in [("queue", &n.queue), ("run_name", &n.run_name)] {
            if let Some(g) = glob
                && let Err(why) = Patterns::new(vec![g.clone()])
            {
                p.add(&at(field), format!("{who}: {why}"));
            }
        }
    }
}
