//! The engine's configuration: a TOML file (`--config`, default
//! [`DEFAULT_CONFIG`]), overridden by `OPSDECK_*` environment variables,
//! overridden by flags. `examples/engine.toml` lists every setting with its
//! default.
//!
//! ```toml
//! [engine]
//! listen = "127.0.0.1:7465"
//! heartbeat_interval = "5s"
//! lease_ttl = "30s"
//!
//! [metrics]
//! listen = "127.0.0.1:9465"
//!
//! [log]
//! format = "json"
//! dir = "/var/log/opsdeck"
//!
//! [[token]]
//! identity = "ci-bot"
//! sha256 = "<hex SHA-256 of the token>"   # opsdeckd token new --identity ci-bot --role operator
//! roles = ["operator"]                      # viewer when left out
//!
//! [[unix.user]]                             # callers on the Unix socket, by user
//! name = "alice"
//! roles = ["approver"]
//! ```
//!
//! Every mistake is named with its line: syntax and type errors by the
//! parser, and the checks serde cannot make (addresses, URLs, hashes, how
//! settings relate) by [`ConfigFile::check`], which finds the line of the
//! offending key in the document again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::de::{DeTable, DeValue};

use crate::core::CoreConfig;
use crate::domain::Role;
use crate::domain::spec::Limits;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigFile {
    pub engine: EngineSection,
    pub limits: Limits,
    pub token: Vec<TokenEntry>,
    pub unix: UnixSection,
    pub ha: HaSection,
    pub metrics: MetricsSection,
    pub log: LogSection,
    pub retention: RetentionSection,
    /// TLS on the TCP listener (the Unix socket stays plain).
    pub tls: Option<TlsSection>,
    /// Secrets that run specs name (`env = { X = { secret = "NAME" } }`).
    pub secrets: std::collections::BTreeMap<String, crate::secrets::SecretSource>,
    /// `[[policy]]`: queues whose steps need another person's approval.
    pub policy: Vec<crate::domain::policy::Policy>,
    /// `[[notify]]`: webhooks and commands told of chosen events.
    pub notify: Vec<crate::notifications::NotifierEntry>,
    /// `[notifications]`: derived events and delivery retries.
    pub notifications: crate::notifications::NotificationsSection,
}

/// `[tls]`: the TCP listener's certificate and key (PEM files); with
/// `client_ca`, every TCP client must show a certificate that CA signed.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    /// `[[tls.client]]`: client certificates that are identities of their
    /// own, by the subject Common Name.
    #[serde(default)]
    pub client: Vec<TlsClient>,
}

/// `[[tls.client]]`: a client certificate's Common Name and what its
/// holder may do, like a `[[token]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsClient {
    /// The subject Common Name (CN) of the certificate; also the identity.
    pub name: String,
    /// What the certificate's holder may do; viewer when left out.
    #[serde(default = "viewer_only")]
    pub roles: Vec<Role>,
    /// Groups the identity belongs to, for approval steps that name a
    /// `group`.
    #[serde(default)]
    pub groups: Vec<String>,
    /// For the agent role: the worker ids this credential may register
    /// (glob patterns, e.g. `["build-*"]`); any id when left out.
    #[serde(default)]
    pub workers: Option<crate::domain::scope::Patterns>,
    /// For the agent role: the queues its workers may serve (glob
    /// patterns); any named queue when left out, and the wildcard queue
    /// `*` only when this says `"*"`.
    #[serde(default)]
    pub queues: Option<crate::domain::scope::Patterns>,
}

impl TlsSection {
    pub fn server_tls(&self) -> opsdeck_proto::tls::ServerTls {
        opsdeck_proto::tls::ServerTls {
            cert: self.cert.clone(),
            key: self.key.clone(),
            client_ca: self.client_ca.clone(),
        }
    }
}

/// Where the engine's config is read from when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/opsdeck/engine.toml";

/// Where Prometheus metrics, `/healthz` and `/readyz` are served by default.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9465";

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    /// host:port for `/metrics`, `/healthz` and `/readyz`; "" or "none"
    /// turns them off.
    pub listen: Option<String>,
}

/// `[log]`: where the engine's log goes besides stderr.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// "plain" or "json", for stderr and the files alike.
    pub format: Option<String>,
    /// A directory for daily rolling log files (`opsdeckd.YYYY-MM-DD.log`).
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSection {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub socket: Option<PathBuf>,
    pub database: Option<String>,
    pub local_workers: Option<u32>,
    /// Lets `local_workers` run alongside `[secrets]`: their steps run as
    /// the engine's user, which can read the secret files and the database.
    pub trust_local_steps: Option<bool>,
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
    /// Failed or timed-out attempts of one run name within
    /// `failure_quarantine_window` that quarantine it (0: never).
    pub failure_quarantine_after: Option<u32>,
    #[serde(with = "humantime_serde_opt")]
    pub failure_quarantine_window: Option<Duration>,
    /// The timeout of an exec step that sets none.
    #[serde(with = "humantime_serde_opt")]
    pub default_step_timeout: Option<Duration>,
    /// The longest `timeout` a step may ask for.
    #[serde(with = "humantime_serde_opt")]
    pub max_step_timeout: Option<Duration>,
    /// A worker's attempts failed or timed out in a row that open its
    /// breaker (0: never).
    pub breaker_after: Option<u32>,
    /// How long an open breaker waits before it lets one step through.
    #[serde(with = "humantime_serde_opt")]
    pub breaker_cooldown: Option<Duration>,
    /// Finished runs kept in memory for the console: at most this many,
    /// for at most `finished_runs_kept_for`.
    pub finished_runs_kept: Option<usize>,
    #[serde(with = "humantime_serde_opt")]
    pub finished_runs_kept_for: Option<Duration>,
}

/// `[retention]`: how long history stays in the database.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSection {
    /// Finished runs, with their steps, approvals and output (a lease's row
    /// goes when the lease ends; its record is its events).
    #[serde(with = "humantime_serde")]
    pub runs: Duration,
    #[serde(with = "humantime_serde")]
    pub events: Duration,
    #[serde(with = "humantime_serde")]
    pub output: Duration,
    /// Workers offline or stopped this long.
    #[serde(with = "humantime_serde")]
    pub workers: Duration,
    /// How often pruning runs.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The most rows of one table a prune statement deletes.
    pub batch: u32,
}

const DAY: u64 = 24 * 60 * 60;

impl Default for RetentionSection {
    /// A month of history to look back on after an incident; a week of
    /// output, which is most of the bytes.
    fn default() -> Self {
        Self {
            runs: Duration::from_secs(30 * DAY),
            events: Duration::from_secs(30 * DAY),
            output: Duration::from_secs(7 * DAY),
            workers: Duration::from_secs(7 * DAY),
            interval: Duration::from_secs(60),
            batch: 1000,
        }
    }
}

/// A bearer token, stored only as its hash.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub identity: String,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    /// What the token may do; viewer when left out.
    #[serde(default = "viewer_only")]
    pub roles: Vec<Role>,
    /// Groups the token's identity belongs to, for approval steps that name
    /// a `group`.
    #[serde(default)]
    pub groups: Vec<String>,
    /// For the agent role: the worker ids this credential may register
    /// (glob patterns, e.g. `["build-*"]`); any id when left out.
    #[serde(default)]
    pub workers: Option<crate::domain::scope::Patterns>,
    /// For the agent role: the queues its workers may serve (glob
    /// patterns); any named queue when left out, and the wildcard queue
    /// `*` only when this says `"*"`.
    #[serde(default)]
    pub queues: Option<crate::domain::scope::Patterns>,
}

fn viewer_only() -> Vec<Role> {
    vec![Role::Viewer]
}

/// `[ha]`: several engines on one PostgreSQL database (README, "Running
/// more than one engine").
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HaSection {
    /// Where clients reach this engine (`--advertise`); default: its TCP
    /// address. Standbys name the leader by it.
    pub advertise: Option<String>,
    /// How long a lead lasts unless renewed; default 10s.
    #[serde(with = "humantime_serde_opt")]
    pub leader_ttl: Option<Duration>,
}

/// Roles of callers on the Unix socket, whom the kernel names.
///
/// A caller gets the roles of the `[[unix.user]]` entry naming it and of
/// every `[[unix.group]]` entry naming one of its groups. One that no entry
/// names gets admin and agent if it is the engine's own user or root, and
/// `others` otherwise.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UnixSection {
    pub others: Vec<Role>,
    pub user: Vec<UnixRoles>,
    pub group: Vec<UnixRoles>,
}

impl Default for UnixSection {
    fn default() -> Self {
        Self {
            others: viewer_only(),
            user: Vec::new(),
            group: Vec::new(),
        }
    }
}

/// `[[unix.user]]` or `[[unix.group]]`: a user or group name and its roles.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnixRoles {
    pub name: String,
    pub roles: Vec<Role>,
    /// For the agent role: the worker ids this credential may register
    /// (glob patterns, e.g. `["build-*"]`); any id when left out.
    #[serde(default)]
    pub workers: Option<crate::domain::scope::Patterns>,
    /// For the agent role: the queues its workers may serve (glob
    /// patterns); any named queue when left out, and the wildcard queue
    /// `*` only when this says `"*"`.
    #[serde(default)]
    pub queues: Option<crate::domain::scope::Patterns>,
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

/// A duration written as "30d", "1m".
pub(crate) mod humantime_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration ({e}); write e.g. \"30d\""
            ))
        })
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

/// One step of the path to a setting: a key, or an index into an array of
/// tables (`[[token]]`).
#[derive(Clone, Copy, Debug)]
pub enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// The semantic mistakes of one config file, each with its line.
pub struct Problems<'t> {
    text: &'t str,
    doc: Option<DeTable<'t>>,
    list: Vec<String>,
}

impl<'t> Problems<'t> {
    fn new(text: &'t str) -> Self {
        Self {
            text,
            doc: DeTable::parse(text).ok().map(|d| d.into_inner()),
            list: Vec::new(),
        }
    }

    /// Records a mistake in the setting at `path` (e.g. `[Key("engine"),
    /// Key("listen")]`), naming its line when the file holds it.
    pub fn add(&mut self, path: &[Seg<'_>], message: impl std::fmt::Display) {
        let name = path
            .iter()
            .map(|s| match s {
                Seg::Key(k) => format!(".{k}"),
                Seg::Index(i) => format!("[{i}]"),
            })
            .collect::<String>();
        let name = name.trim_start_matches('.');
        match self.line_of(path) {
            Some(line) => self.list.push(format!("line {line}: {name}: {message}")),
            None => self.list.push(format!("{name}: {message}")),
        }
    }

    /// The line of the deepest part of `path` the document holds.
    pub fn line_of(&self, path: &[Seg<'_>]) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let mut table = Some(doc);
        let mut array: Option<&[toml::Spanned<DeValue<'_>>]> = None;
        let mut at = None;
        for seg in path {
            let value = match *seg {
                Seg::Key(key) => table.and_then(|t| {
                    t.iter()
                        .find(|(k, _)| k.get_ref() == key)
                        .map(|(k, v)| (k.span(), v))
                }),
                Seg::Index(i) => array.and_then(|a| a.get(i)).map(|v| (v.span(), v)),
            };
            let Some((span, value)) = value else { break };
            at = Some(span.start);
            table = None;
            array = None;
            match value.get_ref() {
                DeValue::Table(t) => table = Some(t),
                DeValue::Array(a) => array = Some(a),
                _ => at = Some(value.span().start),
            }
        }
        at.map(|offset| line_at(self.text, offset))
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn into_vec(self) -> Vec<String> {
        self.list
    }
}

/// The 1-based line of a byte offset.
fn line_at(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(0, |before| before.matches('\n').count())
        + 1
}

/// Checks a `host:port` listen address without resolving it.
pub fn check_listen(addr: &str) -> Result<(), String> {
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(format!(
            "{addr:?} is not an address to listen on; write host:port, e.g. \"127.0.0.1:7465\""
        )),
    }
}

/// Checks a database URL: SQLite or PostgreSQL.
pub fn check_database(url: &str) -> Result<(), String> {
    let known = ["sqlite:", "postgres://", "postgresql://"];
    if known.iter().any(|p| url.starts_with(p)) {
        Ok(())
    } else {
        Err(format!(
            "{url:?} is not a database URL; write sqlite:///var/lib/opsdeck/opsdeck.db or postgres://user@host/db"
        ))
    }
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
        let problems = cfg.check(text);
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                message: problems.join("\n  "),
            });
        }
        Ok(cfg)
    }

    /// Every mistake serde cannot see, each with its line in `text`.
    pub fn check(&self, text: &str) -> Vec<String> {
        use Seg::{Index, Key};
        let mut p = Problems::new(text);
        let e = &self.engine;
        check_retention(&self.retention, &mut p);
        check_limits(&self.limits, &mut p);
        self.check_hang_settings(&mut p);
        crate::notifications::check(&self.notifications, &self.notify, &self.secrets, &mut p);
        for (i, policy) in self.policy.iter().enumerate() {
            if !(1..=10).contains(&policy.approvals) {
                p.add(
                    &[Key("policy"), Index(i), Key("approvals")],
                    format!(
                        "approvals is {}; give 1 to 10 distinct approvers",
                        policy.approvals
                    ),
                );
            }
        }
        if let Some(listen) = e.listen.as_deref().filter(|l| *l != "none")
            && let Err(why) = check_listen(listen)
        {
            p.add(&[Key("engine"), Key("listen")], why);
        }
        if let Some(url) = &e.database
            && let Err(why) = check_database(url)
        {
            p.add(&[Key("engine"), Key("database")], why);
        }
        // Only when the file sets both: flags may set the other.
        if let (Some(heartbeat), Some(ttl)) = (e.heartbeat_interval, e.lease_ttl)
            && heartbeat >= ttl
        {
            p.add(
                &[Key("engine"), Key("lease_ttl")],
                format!(
                    "heartbeat_interval ({}) must be shorter than lease_ttl ({}), or leases expire between heartbeats",
                    humantime::format_duration(heartbeat),
                    humantime::format_duration(ttl)
                ),
            );
        }
        if let Some(listen) = self
            .metrics
            .listen
            .as_deref()
            .filter(|l| !l.is_empty() && *l != "none")
            && let Err(why) = check_listen(listen)
        {
            p.add(
                &[Key("metrics"), Key("listen")],
                format!("{why}, or \"none\" for no metrics"),
            );
        }
        if let Some(format) = &self.log.format
            && format != "plain"
            && format != "json"
        {
            p.add(
                &[Key("log"), Key("format")],
                format!("{format:?} is not a log format; write \"plain\" or \"json\""),
            );
        }
        for (i, t) in self.token.iter().enumerate() {
            let bad = t.sha256.len() != 64 || !t.sha256.chars().all(|c| c.is_ascii_hexdigit());
            if bad {
                p.add(
                    &[Key("token"), Index(i), Key("sha256")],
                    format!(
                        "the token of {:?} must be 64 hex digits, the SHA-256 of the token \
                         (`opsdeckd token new --identity NAME` prints one)",
                        t.identity
                    ),
                );
            }
            if t.identity.trim().is_empty() {
                p.add(
                    &[Key("token"), Index(i), Key("identity")],
                    "identity is empty",
                );
            }
            let same = self.token[..i]
                .iter()
                .find(|o| o.sha256.eq_ignore_ascii_case(&t.sha256));
            if let Some(first) = same {
                p.add(
                    &[Key("token"), Index(i), Key("sha256")],
                    format!(
                        "the token of {:?} has the same sha256 as the token of {:?}; make a new token for one of them",
                        t.identity, first.identity
                    ),
                );
            }
        }
        if let Some(tls) = &self.tls {
            check_tls_clients(tls, &mut p);
        }
        for (kind, entries) in [("user", &self.unix.user), ("group", &self.unix.group)] {
            for (i, entry) in entries.iter().enumerate() {
                if entry.name.trim().is_empty() {
                    p.add(
                        &[Key("unix"), Key(kind), Index(i), Key("name")],
                        format!("name is empty; name a Unix {kind}"),
                    );
                }
            }
        }
        p.into_vec()
    }

    /// What is allowed but likely not meant: agent credentials that bound
    /// no queues (their workers may serve every named queue, and get the
    /// secrets of those steps).
    pub fn warnings(&self) -> Vec<String> {
        let tokens = self
            .token
            .iter()
            .filter(|t| t.roles.contains(&Role::Agent) && t.queues.is_none())
            .map(|t| format!("[[token]] {:?}", t.identity));
        let clients = self
            .tls
            .iter()
            .flat_map(|t| &t.client)
            .filter(|c| c.roles.contains(&Role::Agent) && c.queues.is_none())
            .map(|c| format!("[[tls.client]] {:?}", c.name));
        tokens
            .chain(clients)
            .map(|who| {
                format!(
                    "{who} holds the agent role with no `queues`: its workers may serve every named \
                     queue and receive those steps' secrets; list the queues it serves \
                     (queues = [\"build\"])"
                )
            })
            .collect()
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
            failure_quarantine_after: e
                .failure_quarantine_after
                .unwrap_or(d.failure_quarantine_after),
            failure_quarantine_window: e
                .failure_quarantine_window
                .unwrap_or(d.failure_quarantine_window),
            default_step_timeout: e.default_step_timeout.unwrap_or(d.default_step_timeout),
            max_step_timeout: e.max_step_timeout.unwrap_or(d.max_step_timeout),
            breaker_after: e.breaker_after.unwrap_or(d.breaker_after),
            breaker_cooldown: e.breaker_cooldown.unwrap_or(d.breaker_cooldown),
            finished_runs_kept: e.finished_runs_kept.unwrap_or(d.finished_runs_kept),
            finished_runs_kept_for: e.finished_runs_kept_for.unwrap_or(d.finished_runs_kept_for),
            // Read by the caller with `Secrets::load(&self.secrets)`: it can fail.
            secrets: d.secrets,
            // Compiled by the caller with `Rules::new(&self.notify)`: it can fail.
            notify: d.notify,
            approval_overdue_before: self.notifications.approval_overdue_before,
            worker_offline_after: self.notifications.worker_offline_after,
            policies: self.policy.clone(),
        }
    }
}

impl ConfigFile {
    /// Step timeouts, failure quarantine and breaker settings: each long
    /// enough to mean something, the default within the maximum.
    fn check_hang_settings(&self, p: &mut Problems<'_>) {
        use Seg::Key;
        let d = CoreConfig::default();
        let e = &self.engine;
        for (key, value) in [
            ("default_step_timeout", e.default_step_timeout),
            ("max_step_timeout", e.max_step_timeout),
            ("failure_quarantine_window", e.failure_quarantine_window),
            ("breaker_cooldown", e.breaker_cooldown),
        ] {
            if let Some(v) = value
                && v < Duration::from_secs(1)
            {
                p.add(
                    &[Key("engine"), Key(key)],
                    format!(
                        "{key} is {}; give at least \"1s\"",
                        humantime::format_duration(v)
                    ),
                );
            }
        }
        let default = e.default_step_timeout.unwrap_or(d.default_step_timeout);
        let max = e.max_step_timeout.unwrap_or(d.max_step_timeout);
        if default > max {
            let key = if e.default_step_timeout.is_some() {
                "default_step_timeout"
            } else {
                "max_step_timeout"
            };
            p.add(
                &[Key("engine"), Key(key)],
                format!(
                    "default_step_timeout ({}) is longer than max_step_timeout ({}): steps without a \
                     timeout would get one the engine refuses; shorten the default or raise the maximum",
                    humantime::format_duration(default),
                    humantime::format_duration(max)
                ),
            );
        }
    }
}

/// `[limits]` on connections and streams: each lets at least one through,
/// and a new connection has time to authenticate.
fn check_limits(l: &crate::domain::spec::Limits, p: &mut Problems<'_>) {
    use Seg::Key;
    for (key, n) in [
        ("max_connections", l.max_connections),
        ("max_pending_per_peer", l.max_pending_per_peer),
        (
            "max_streams_per_connection",
            l.max_streams_per_connection as usize,
        ),
        ("max_subscribers", l.max_subscribers),
        (
            "max_subscribers_per_identity",
            l.max_subscribers_per_identity,
        ),
    ] {
        if n == 0 {
            p.add(
                &[Key("limits"), Key(key)],
                format!("{key} is 0, which refuses everyone; give 1 or more"),
            );
        }
    }
    if l.handshake_timeout < Duration::from_secs(1) {
        p.add(
            &[Key("limits"), Key("handshake_timeout")],
            format!(
                "handshake_timeout is {}; give a new connection at least 1s to authenticate",
                humantime::format_duration(l.handshake_timeout)
            ),
        );
    }
}

/// `[retention]`: every period long enough to look back on, pruning often
/// enough to keep up, in batches small enough not to hold the database.
fn check_retention(r: &RetentionSection, p: &mut Problems<'_>) {
    use Seg::Key;
    for (key, d) in [
        ("runs", r.runs),
        ("events", r.events),
        ("output", r.output),
        ("workers", r.workers),
    ] {
        if d < Duration::from_secs(1) {
            p.add(
                &[Key("retention"), Key(key)],
                format!(
                    "{} is too short to look back on; keep history at least \"1s\" (the default is {})",
                    humantime::format_duration(d),
                    humantime::format_duration(match key {
                        "output" | "workers" => Duration::from_secs(7 * DAY),
                        _ => Duration::from_secs(30 * DAY),
                    })
                ),
            );
        }
    }
    if r.interval < Duration::from_secs(1) || r.interval > Duration::from_secs(DAY) {
        p.add(
            &[Key("retention"), Key("interval")],
            "interval must be between \"1s\" and \"1d\" (the default is \"1m\")",
        );
    }
    if !(1..=100_000).contains(&r.batch) {
        p.add(
            &[Key("retention"), Key("batch")],
            format!(
                "batch is {}; give 1 to 100000 rows (the default is 1000)",
                r.batch
            ),
        );
    }
}

/// `[[tls.client]]` entries: named, each once, and only where client
/// certificates are verified (`client_ca`).
fn check_tls_clients(tls: &TlsSection, p: &mut Problems<'_>) {
    use Seg::{Index, Key};
    for (i, c) in tls.client.iter().enumerate() {
        let at = [Key("tls"), Key("client"), Index(i), Key("name")];
        if c.name.trim().is_empty() {
            p.add(
                &at,
                "name is empty; write the Common Name (CN) of the client's certificate",
            );
        } else if tls.client[..i].iter().any(|o| o.name == c.name) {
            p.add(
                &at,
                format!(
                    "{:?} is named by an earlier [[tls.client]] entry; give each certificate name one entry",
                    c.name
                ),
            );
        }
    }
    if tls.client_ca.is_none() && !tls.client.is_empty() {
        p.add(
            &[Key("tls"), Key("client"), Index(0)],
            "[[tls.client]] entries need [tls] client_ca: without it the engine asks no client for a certificate",
        );
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
mod tests;
