//! The engine's configuration: a TOML file, overridden by `OPSDECK_*`
//! environment variables and flags.
//!
//! ```toml
//! [engine]
//! listen = "127.0.0.1:7465"
//! heartbeat_interval = "5s"
//! lease_ttl = "30s"
//!
//! [[token]]
//! identity = "ci-bot"
//! sha256 = "<hex SHA-256 of the token>"   # opsdeckd token new --identity ci-bot
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::core::CoreConfig;
use crate::domain::spec::Limits;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigFile {
    pub engine: EngineSection,
    pub limits: Limits,
    pub token: Vec<TokenEntry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSection {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub socket: Option<PathBuf>,
    pub database: Option<String>,
    pub local_workers: Option<u32>,
    #[serde(with = "humantime_serde_opt")]
    pub heartbeat_interval: Option<Duration>,
    #[serde(with = "humantime_serde_opt")]
    pub lease_ttl: Option<Duration>,
    #[serde(with = "humantime_serde_opt")]
    pub worker_timeout: Option<Duration>,
    #[serde(with = "humantime_serde_opt")]
    pub cancel_grace: Option<Duration>,
    pub output_cap_bytes: Option<usize>,
    pub subscriber_buffer: Option<usize>,
    /// Stuck leases of one run name within `quarantine_window` that
    /// quarantine it (0: never).
    pub quarantine_after: Option<u32>,
    #[serde(with = "humantime_serde_opt")]
    pub quarantine_window: Option<Duration>,
}

/// A bearer token, stored only as its hash.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub identity: String,
    /// Hex SHA-256 of the token.
    pub sha256: String,
}

/// Durations written as "30s", "5m".
mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| {
            humantime::parse_duration(&t).map_err(|e| {
                serde::de::Error::custom(format!(
                    "{t:?} is not a duration ({e}); write e.g. \"30s\""
                ))
            })
        })
        .transpose()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl ConfigFile {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        for (i, t) in cfg.token.iter().enumerate() {
            let bad = t.sha256.len() != 64 || !t.sha256.chars().all(|c| c.is_ascii_hexdigit());
            if bad {
                return Err(ConfigError::Invalid {
                    path: path.to_owned(),
                    message: format!(
                        "[[token]] #{} ({}): sha256 must be 64 hex digits, the SHA-256 of the token \
                         (`opsdeckd token new --identity NAME` prints one)",
                        i + 1,
                        t.identity
                    ),
                });
            }
            if t.identity.trim().is_empty() {
                return Err(ConfigError::Invalid {
                    path: path.to_owned(),
                    message: format!("[[token]] #{}: identity is empty", i + 1),
                });
            }
        }
        Ok(cfg)
    }

    /// The core's timings and limits: the file's values over the defaults.
    pub fn core_config(&self) -> CoreConfig {
        let d = CoreConfig::default();
        let e = &self.engine;
        CoreConfig {
            heartbeat_interval: e.heartbeat_interval.unwrap_or(d.heartbeat_interval),
            lease_ttl: e.lease_ttl.unwrap_or(d.lease_ttl),
            worker_timeout: e.worker_timeout.unwrap_or(d.worker_timeout),
            cancel_grace: e.cancel_grace.unwrap_or(d.cancel_grace),
            limits: self.limits.clone(),
            output_cap_bytes: e.output_cap_bytes.unwrap_or(d.output_cap_bytes),
            subscriber_buffer: e.subscriber_buffer.unwrap_or(d.subscriber_buffer),
            quarantine_after: e.quarantine_after.unwrap_or(d.quarantine_after),
            quarantine_window: e.quarantine_window.unwrap_or(d.quarantine_window),
        }
    }
}

/// Where state lives by default: `$XDG_STATE_HOME/opsdeck`
/// (~/.local/state/opsdeck), or /var/lib/opsdeck for a service (root, or
/// systemd's `$STATE_DIRECTORY`).
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY") {
        // systemd StateDirectory= may list several, separated by ':'.
        let first = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned();
        if !first.is_empty() {
            return PathBuf::from(first);
        }
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("opsdeck");
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/opsdeck");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/state/opsdeck"),
        None => PathBuf::from("/var/lib/opsdeck"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations_and_tokens() {
        let cfg = ConfigFile::parse(
            "[engine]\nlease_ttl = \"2s\"\n[[token]]\nidentity = \"ci\"\nsha256 = \""
                .to_owned()
                .as_str(),
            Path::new("x.toml"),
        );
        assert!(cfg.is_err());
        let hash = "a".repeat(64);
        let cfg = ConfigFile::parse(
            &format!(
                "[engine]\nlease_ttl = \"2s\"\n[[token]]\nidentity = \"ci\"\nsha256 = \"{hash}\"\n"
            ),
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(cfg.core_config().lease_ttl, Duration::from_secs(2));
        assert_eq!(cfg.token.len(), 1);
    }

    #[test]
    fn mistakes_are_named_with_their_line() {
        let err = ConfigFile::parse("[engine]\nlease_tll = \"2s\"\n", Path::new("e.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("lease_tll") && err.contains("line 2"), "{err}");
        let err = ConfigFile::parse("[engine]\nlease_ttl = \"soon\"\n", Path::new("e.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a duration"), "{err}");
    }
}
