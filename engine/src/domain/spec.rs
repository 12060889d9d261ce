//! The run spec: a TOML document that says what a run does.
//!
//! ```toml
//! name = "deploy-api"
//! labels = { team = "payments" }
//! timeout = "2h"                  # the whole run; it fails when it takes longer
//! concurrency = { key = "deploy-api", limit = 1 }   # runs sharing the key at once
//!
//! [[step]]
//! name = "build"
//! queue = "build"
//! run = "make build"              # a shell string, or: argv = ["make", "build"]
//! timeout = "10m"                # the engine's default_step_timeout when left out
//! quiet_timeout = "5m"            # no output this long marks the step hung
//! max_attempts = 3
//! backoff = "5s"
//! env = { RUST_LOG = "info", API_TOKEN = { secret = "api_token" } }   # from the engine's [secrets]
//!
//! [[step]]
//! name = "approve"
//! approval = { timeout = "1h", on_timeout = "reject", approvals = 2, role = "approver", group = "dba" }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::concurrency::{Concurrency, RawConcurrency};
use super::model::{ApprovalSpec, Command, EnvEntry, ExecSpec, OnTimeout, Role, StepSpec};
use super::params::{self, RawParam};

/// Limits on what a spec may ask for, and on what the API takes. Each is in
/// the engine's config under `[limits]`, named as the field here.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_spec_bytes: usize,
    pub max_steps: usize,
    pub max_command_bytes: usize,
    pub max_env_entries: usize,
    pub max_attempts: u32,
    /// The largest gRPC message the engine decodes.
    pub max_message_bytes: usize,
    /// Connections served at once on each listener; more are answered
    /// RESOURCE_EXHAUSTED and closed. The engine's own user and root on
    /// the Unix socket are never refused.
    pub max_connections: usize,
    /// Connections one peer (an IP address on TCP, a user on the socket)
    /// may hold before they authenticate; more are refused.
    pub max_pending_per_peer: usize,
    /// How long a new connection has to make its first authenticated call
    /// before it is closed.
    #[serde(with = "duration_words")]
    pub handshake_timeout: std::time::Duration,
    /// Streams (calls in flight) on one HTTP/2 connection.
    pub max_streams_per_connection: u32,
    /// Streaming subscriptions (Watch, FollowEvents, FollowOutput, health
    /// Watch) open at once, in all and per identity.
    pub max_subscribers: usize,
    pub max_subscribers_per_identity: usize,
}

/// A duration written as "10s", "2m".
mod duration_words {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration ({e}); write e.g. \"10s\""
            ))
        })
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_spec_bytes: 1024 * 1024,
            max_steps: 100,
            max_command_bytes: 64 * 1024,
            max_env_entries: 256,
            max_attempts: 100,
            max_message_bytes: 16 * 1024 * 1024,
            max_connections: 1024,
            max_pending_per_peer: 64,
            handshake_timeout: std::time::Duration::from_secs(10),
            max_streams_per_connection: 128,
            max_subscribers: 1024,
            max_subscribers_per_identity: 64,
        }
    }
}

/// A run spec, parsed and checked.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The whole run's `timeout`, from its submit.
    pub timeout_ms: Option<u64>,
    pub steps: Vec<StepSpec>,
    /// The parameters' values (given, or their defaults).
    pub params: BTreeMap<String, String>,
    /// The spec's text, kept when it declares parameters: a retry with
    /// other values is made from it.
    pub template: Option<String>,
    /// How many runs sharing a key may run at once.
    pub concurrency: Option<Concurrency>,
}

/// Why a spec was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    /// The spec is not valid: fix the spec.
    #[error("invalid run spec: {0}")]
    Invalid(String),
    /// The spec is over a limit: shrink it, or raise the limit.
    #[error("run spec too large: {0}")]
    TooLarge(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    timeout: Option<String>,
    concurrency: Option<RawConcurrency>,
    #[serde(default)]
    step: Vec<RawStep>,
    #[serde(default)]
    params: BTreeMap<String, RawParam>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: Option<String>,
    queue: Option<String>,
    run: Option<String>,
    argv: Option<Vec<String>>,
    #[serde(default)]
    env: BTreeMap<String, RawEnv>,
    workdir: Option<String>,
    timeout: Option<String>,
    quiet_timeout: Option<String>,
    max_attempts: Option<u32>,
    backoff: Option<String>,
    priority: Option<i32>,
    /// Labels a worker must carry to take the step.
    #[serde(default)]
    worker: BTreeMap<String, String>,
    approval: Option<RawApproval>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawEnv {
    Plain(String),
    Detailed(RawEnvDetailed),
}

/// `{ value = "..." }`, or `{ secret = "NAME" }` naming a secret of the
/// engine's config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvDetailed {
    value: Option<String>,
    secret: Option<RawSecret>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawSecret {
    Name(String),
    /// The old `{ value = "...", secret = true }`: refused, naming the way.
    Flag(bool),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApproval {
    timeout: Option<String>,
    on_timeout: Option<String>,
    #[serde(default)]
    allow_self_approval: bool,
    approvals: Option<u32>,
    role: Option<String>,
    group: Option<String>,
}

const DEFAULT_MAX_ATTEMPTS: u32 = 1;
const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);

/// Parses and checks a spec that takes no parameter values (its
/// parameters, if it declares any, get their defaults).
pub fn parse(text: &str, limits: &Limits) -> Result<RunSpec, SpecError> {
    parse_with(text, limits, &BTreeMap::new())
}

/// Parses and checks a spec, with `given` values for its parameters.
pub fn parse_with(
    text: &str,
    limits: &Limits,
    given: &BTreeMap<String, String>,
) -> Result<RunSpec, SpecError> {
    if text.len() > limits.max_spec_bytes {
        return Err(SpecError::TooLarge(format!(
            "the spec is {} bytes; the limit is {} bytes (limits.max_spec_bytes in the engine config)",
            text.len(),
            limits.max_spec_bytes
        )));
    }
    let mut raw: RawSpec = toml::from_str(text)
        .map_err(|e| SpecError::Invalid(e.to_string().trim_end().to_owned()))?;
    let invalid = |msg: String| Err(SpecError::Invalid(msg));
    let declares_params = !raw.params.is_empty();
    let values =
        params::resolve(std::mem::take(&mut raw.params), given).map_err(SpecError::Invalid)?;
    substitute_params(&mut raw, &values).map_err(SpecError::Invalid)?;
    let name = raw.name.trim().to_owned();
    if name.is_empty() || name.len() > 128 {
        return invalid("`name` must be 1 to 128 characters".into());
    }
    let concurrency = raw
        .concurrency
        .take()
        .map(RawConcurrency::check)
        .transpose()
        .map_err(SpecError::Invalid)?;
    let timeout_ms = raw
        .timeout
        .map(|t| duration_ms(&t, "timeout"))
        .transpose()
        .map_err(SpecError::Invalid)?;
    if raw.step.is_empty() {
        return invalid("the spec has no steps; add at least one [[step]]".into());
    }
    if raw.step.len() > limits.max_steps {
        return Err(SpecError::TooLarge(format!(
            "the spec has {} steps; the limit is {} (limits.max_steps in the engine config)",
            raw.step.len(),
            limits.max_steps
        )));
    }
    let mut steps = Vec::with_capacity(raw.step.len());
    for (i, step) in raw.step.into_iter().enumerate() {
        steps.push(step_spec(i, step, limits)?);
    }
    let mut seen = std::collections::HashSet::new();
    for s in &steps {
        if !seen.insert(s.name.as_str()) {
            return invalid(format!(
                "two steps are named {:?}; step names must be unique",
                s.name
            ));
        }
    }
    Ok(RunSpec {
        name,
        labels: raw.labels,
        timeout_ms,
        steps,
        template: declares_params.then(|| text.to_owned()),
        params: values,
        concurrency,
    })
}

/// Puts the parameters' values where the spec refers to them, and gives
/// each exec step its `OPSDECK_PARAM_*` variables (unless the step sets
/// one itself). A secret entry's name is left as it is.
fn substitute_params(raw: &mut RawSpec, values: &BTreeMap<String, String>) -> Result<(), String> {
    let sub = |what: &str, text: &mut String| -> Result<(), String> {
        *text = params::substitute(text, values).map_err(|e| format!("{what}: {e}"))?;
        Ok(())
    };
    for (k, v) in &mut raw.labels {
        sub(&format!("label {k}"), v)?;
    }
    if let Some(key) = raw.concurrency.as_mut().and_then(|c| c.key.as_mut()) {
        sub("concurrency.key", key)?;
    }
    for (i, step) in raw.step.iter_mut().enumerate() {
        let at = format!("step {}", i + 1);
        if let Some(run) = &mut step.run {
            sub(&format!("{at} run"), run)?;
        }
        for arg in step.argv.iter_mut().flatten() {
            sub(&format!("{at} argv"), arg)?;
        }
        if let Some(w) = &mut step.workdir {
            sub(&format!("{at} workdir"), w)?;
        }
        for (k, v) in &mut step.env {
            match v {
                RawEnv::Plain(text)
                | RawEnv::Detailed(RawEnvDetailed {
                    value: Some(text),
                    secret: None,
                }) => sub(&format!("{at} env {k}"), text)?,
                _ => {}
            }
        }
        if step.approval.is_none() {
            for (name, value) in values {
                step.env
                    .entry(params::env_name(name))
                    .or_insert_with(|| RawEnv::Plain(value.clone()));
            }
        }
    }
    Ok(())
}

fn step_spec(index: usize, raw: RawStep, limits: &Limits) -> Result<StepSpec, SpecError> {
    let name = raw.name.unwrap_or_else(|| format!("step-{}", index + 1));
    let at = format!("step {} ({name:?})", index + 1);
    let invalid = |msg: String| SpecError::Invalid(format!("{at}: {msg}"));
    if name.trim().is_empty() || name.len() > 128 {
        return Err(invalid("`name` must be 1 to 128 characters".into()));
    }
    if let Some(approval) = raw.approval {
        let exec_fields = [
            ("queue", raw.queue.is_some()),
            ("run", raw.run.is_some()),
            ("argv", raw.argv.is_some()),
            ("env", !raw.env.is_empty()),
            ("workdir", raw.workdir.is_some()),
            ("timeout", raw.timeout.is_some()),
            ("quiet_timeout", raw.quiet_timeout.is_some()),
            ("max_attempts", raw.max_attempts.is_some()),
            ("backoff", raw.backoff.is_some()),
            ("priority", raw.priority.is_some()),
            ("worker", !raw.worker.is_empty()),
        ];
        if let Some((field, _)) = exec_fields.iter().find(|(_, set)| *set) {
            return Err(invalid(format!(
                "an approval step cannot have `{field}`; put approval settings inside `approval = {{ ... }}`"
            )));
        }
        let on_timeout = match approval.on_timeout.as_deref() {
            None | Some("reject") => OnTimeout::Reject,
            Some("fail") => OnTimeout::Fail,
            Some(other) => {
                return Err(invalid(format!(
                    "approval.on_timeout is {other:?}; use \"reject\" or \"fail\""
                )));
            }
        };
        let required = approval.approvals.unwrap_or(1);
        if required == 0 || required > 10 {
            return Err(invalid("approval.approvals must be 1 to 10".into()));
        }
        let role = match approval.role.as_deref().map(str::trim) {
            None => None,
            Some(word) => match Role::parse(word) {
                Some(Role::Agent) => {
                    return Err(invalid(
                        "approval.role cannot be \"agent\": workers do not decide approvals; \
                         use \"approver\" or \"admin\""
                            .into(),
                    ));
                }
                Some(role) => Some(role),
                None => {
                    return Err(invalid(format!(
                        "approval.role is {word:?}; use one of \"viewer\", \"operator\", \"approver\", \"admin\" \
                         (to name a team, use approval.group)"
                    )));
                }
            },
        };
        let group = match approval.group.as_deref().map(str::trim) {
            None => None,
            Some("") => {
                return Err(invalid(
                    "approval.group is empty; name a group, or leave it out".into(),
                ));
            }
            Some(g) if g.len() > 256 => {
                return Err(invalid(format!(
                    "approval.group is {} characters long; the limit is 256",
                    g.len()
                )));
            }
            Some(g) => Some(g.to_owned()),
        };
        return Ok(StepSpec::approval(
            name,
            ApprovalSpec {
                timeout_ms: approval
                    .timeout
                    .map(|t| duration_ms(&t, "approval.timeout"))
                    .transpose()
                    .map_err(invalid)?,
                on_timeout,
                allow_self_approval: approval.allow_self_approval,
                required,
                role,
                group,
            },
        ));
    }

    let queue = raw.queue.ok_or_else(|| {
        invalid("`queue` is missing; an exec step names the queue whose workers run it".into())
    })?;
    super::validate_queue_name(&queue).map_err(invalid)?;
    let command = match (raw.run, raw.argv) {
        (Some(_), Some(_)) => return Err(invalid("give either `run` or `argv`, not both".into())),
        (None, None) => {
            return Err(invalid(
                "no command: set `run` (a shell string) or `argv` (a list), or make it an approval step"
                    .into(),
            ));
        }
        (Some(shell), None) if shell.trim().is_empty() => {
            return Err(invalid("`run` is empty".into()));
        }
        (Some(shell), None) => Command::Shell(shell),
        (None, Some(argv)) if argv.is_empty() || argv[0].is_empty() => {
            return Err(invalid(
                "`argv` is empty; its first item is the program to run".into(),
            ));
        }
        (None, Some(argv)) => Command::Argv(argv),
    };
    if command.len() > limits.max_command_bytes {
        return Err(SpecError::TooLarge(format!(
            "{at}: the command is {} bytes; the limit is {} bytes (limits.max_command_bytes in the engine config)",
            command.len(),
            limits.max_command_bytes
        )));
    }
    if raw.env.len() > limits.max_env_entries {
        return Err(SpecError::TooLarge(format!(
            "{at}: {} env entries; the limit is {} (limits.max_env_entries in the engine config)",
            raw.env.len(),
            limits.max_env_entries
        )));
    }
    let mut env = Vec::with_capacity(raw.env.len());
    for (key, value) in raw.env {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(invalid(format!(
                "env name {key:?} is not a valid variable name"
            )));
        }
        let (value, secret) = env_value(&key, value).map_err(invalid)?;
        env.push(EnvEntry {
            name: key,
            value,
            secret,
        });
    }
    let max_attempts = raw.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
    if max_attempts == 0 || max_attempts > limits.max_attempts {
        return Err(invalid(format!(
            "max_attempts is {max_attempts}; use 1 to {} (limits.max_attempts in the engine config)",
            limits.max_attempts
        )));
    }
    let timeout_ms = raw
        .timeout
        .map(|t| duration_ms(&t, "timeout"))
        .transpose()
        .map_err(invalid)?;
    let quiet_timeout_ms = raw
        .quiet_timeout
        .map(|t| duration_ms(&t, "quiet_timeout"))
        .transpose()
        .map_err(invalid)?;
    let backoff_ms = match raw.backoff {
        Some(b) => duration_ms(&b, "backoff").map_err(invalid)?,
        None => DEFAULT_BACKOFF.as_millis() as u64,
    };
    if raw.worker.len() > 16 {
        return Err(invalid(format!(
            "`worker` selects on {} labels; use at most 16",
            raw.worker.len()
        )));
    }
    if let Some(k) = raw
        .worker
        .keys()
        .find(|k| k.trim().is_empty() || k.len() > 128)
    {
        return Err(invalid(format!(
            "`worker` label name {k:?} must be 1 to 128 characters"
        )));
    }
    Ok(StepSpec::exec(
        name,
        ExecSpec {
            queue,
            command,
            env,
            workdir: raw.workdir.filter(|w| !w.is_empty()),
            timeout_ms,
            quiet_timeout_ms,
            max_attempts,
            backoff_ms,
            priority: raw.priority.unwrap_or(0),
            worker: raw.worker,
        },
    ))
}

/// A secret's name, as `[secrets]` in the engine config keys it.
pub fn validate_secret_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the secret name {name:?} is not valid; use 1 to 64 of a-z, A-Z, 0-9, '_', '-' and '.'"
        ))
    }
}

/// An env entry's value and, for a secret entry, the secret it names.
fn env_value(key: &str, raw: RawEnv) -> Result<(String, Option<String>), String> {
    let define = "define it in the engine config as [secrets] NAME = { file = \"PATH\" } \
                  (or { env = \"VARIABLE\" }) and write";
    match raw {
        RawEnv::Plain(value) => Ok((value, None)),
        RawEnv::Detailed(RawEnvDetailed {
            value: Some(value),
            secret: None | Some(RawSecret::Flag(false)),
        }) => Ok((value, None)),
        RawEnv::Detailed(RawEnvDetailed {
            value: None,
            secret: Some(RawSecret::Name(name)),
        }) => {
            validate_secret_name(&name).map_err(|e| format!("env {key}: {e}"))?;
            Ok((String::new(), Some(name)))
        }
        RawEnv::Detailed(RawEnvDetailed {
            value: Some(_),
            secret: Some(_),
        }) => Err(format!(
            "env {key}: a secret's value may not be written in the spec, which is stored and shown; \
             {define} {key} = {{ secret = \"NAME\" }}"
        )),
        RawEnv::Detailed(RawEnvDetailed {
            value: None,
            secret: None | Some(RawSecret::Flag(_)),
        }) => Err(format!(
            "env {key}: give a string, {{ value = \"...\" }}, or for a secret {{ secret = \"NAME\" }} \
             ({define} {key} = {{ secret = \"NAME\" }})"
        )),
    }
}

fn duration_ms(text: &str, field: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(text).map_err(|e| {
        format!(
            "`{field}` is {text:?}: {e}; write a duration such as \"30s\", \"10m\" or \"1h 30m\""
        )
    })?;
    if d.is_zero() {
        return Err(format!("`{field}` must be longer than zero"));
    }
    u64::try_from(d.as_millis()).map_err(|_| format!("`{field}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::StepKindSpec;

    fn parse_ok(text: &str) -> RunSpec {
        parse(text, &Limits::default()).unwrap()
    }

    fn parse_err(text: &str) -> String {
        parse(text, &Limits::default()).unwrap_err().to_string()
    }

    #[test]
    fn parses_exec_and_approval_steps() {
        let spec = parse_ok(
            r#"
            name = "deploy"
            labels = { team = "payments" }
            [[step]]
            name = "build"
            queue = "build"
            run = "make"
            timeout = "10m"
            max_attempts = 3
            backoff = "2s"
            env = { A = "1", TOKEN = { secret = "api_token" }, B = { value = "2" } }
            [[step]]
            name = "ok"
            approval = { timeout = "1h", on_timeout = "fail", allow_self_approval = true }
            [[step]]
            queue = "deploy"
            argv = ["echo", "hi"]
            "#,
        );
        assert_eq!(spec.steps.len(), 3);
        let StepKindSpec::Exec(exec) = &spec.steps[0].kind else {
            panic!("exec")
        };
        assert_eq!(exec.timeout_ms, Some(600_000));
        assert_eq!(exec.backoff_ms, 2000);
        let token = exec.env.iter().find(|e| e.name == "TOKEN").unwrap();
        assert_eq!(token.secret.as_deref(), Some("api_token"));
        assert!(token.value.is_empty());
        let plain = exec.env.iter().find(|e| e.name == "B").unwrap();
        assert_eq!((plain.value.as_str(), &plain.secret), ("2", &None));
        let StepKindSpec::Approval(a) = &spec.steps[1].kind else {
            panic!("approval")
        };
        assert_eq!(a.on_timeout, OnTimeout::Fail);
        assert!(a.allow_self_approval);
        assert_eq!(spec.steps[2].name, "step-3");
    }

    #[test]
    fn a_run_timeout_and_a_steps_quiet_timeout_are_read() {
        let spec = parse_ok(
            "name = \"x\"\ntimeout = \"2h\"\n[[step]]\nqueue = \"q\"\nrun = \"true\"\nquiet_timeout = \"5m\"\n",
        );
        assert_eq!(spec.timeout_ms, Some(7_200_000));
        let StepKindSpec::Exec(exec) = &spec.steps[0].kind else {
            panic!("exec")
        };
        assert_eq!(
            (exec.timeout_ms, exec.quiet_timeout_ms),
            (None, Some(300_000))
        );
        let err = parse_err("name = \"x\"\n[[step]]\napproval = {}\nquiet_timeout = \"1m\"\n");
        assert!(err.contains("`quiet_timeout`"), "{err}");
        let err =
            parse_err("name = \"x\"\ntimeout = \"0s\"\n[[step]]\nqueue = \"q\"\nrun = \"true\"\n");
        assert!(err.contains("`timeout` must be longer than zero"), "{err}");
    }

    #[test]
    fn approval_steps_may_name_a_role_and_a_group() {
        let spec = parse_ok(
            "name = \"x\"\n[[step]]\napproval = { approvals = 2, role = \"admin\", group = \"dba\" }\n",
        );
        let StepKindSpec::Approval(a) = &spec.steps[0].kind else {
            panic!("approval")
        };
        assert_eq!(
            (a.required, a.role, a.group.as_deref()),
            (2, Some(Role::Admin), Some("dba"))
        );
        let unknown = parse_err("name = \"x\"\n[[step]]\napproval = { role = \"dba\" }\n");
        assert!(
            unknown.contains("approval.role") && unknown.contains("approval.group"),
            "{unknown}"
        );
        let agent = parse_err("name = \"x\"\n[[step]]\napproval = { role = \"agent\" }\n");
        assert!(agent.contains("cannot be \"agent\""), "{agent}");
        assert!(
            parse_err("name = \"x\"\n[[step]]\napproval = { group = \" \" }\n")
                .contains("approval.group is empty")
        );
    }

    #[test]
    fn a_secret_value_in_the_spec_is_refused_pointing_at_the_engines_secrets() {
        let step = |env: &str| {
            format!("name = \"x\"\n[[step]]\nqueue = \"q\"\nrun = \"true\"\nenv = {env}")
        };
        let err = parse_err(&step("{ T = { value = \"s3cr3t\", secret = true } }"));
        assert!(err.contains("env T") && err.contains("[secrets]"), "{err}");
        assert!(!err.contains("s3cr3t"), "{err}");
        let err = parse_err(&step("{ T = { secret = \"no good\" } }"));
        assert!(err.contains("secret name"), "{err}");
        let err = parse_err(&step("{ T = { secret = true } }"));
        assert!(err.contains("{ secret = \"NAME\" }"), "{err}");
    }

    #[test]
    fn errors_name_what_to_fix() {
        assert!(parse_err("name = ").contains("line 1"));
        assert!(parse_err("name = \"x\"").contains("no steps"));
        assert!(parse_err("name = \"x\"\n[[step]]\nrun = \"true\"").contains("`queue` is missing"));
        assert!(
            parse_err("name = \"x\"\n[[step]]\nqueue = \"Q!\"\nrun = \"true\"").contains("'Q'")
        );
        assert!(
            parse_err("name = \"x\"\n[[step]]\nqueue = \"q\"\nrun = \"true\"\ntimeout = \"soon\"")
                .contains("duration")
        );
        assert!(
            parse_err("name = \"x\"\n[[step]]\nqueue = \"q\"\nrun = \"true\"\nbogus = 1")
                .contains("bogus")
        );
        assert!(
            parse_err("name = \"x\"\n[[step]]\napproval = {}\nqueue = \"q\"").contains("`queue`")
        );
    }

    #[test]
    fn limits_are_enforced_with_their_names() {
        let big = format!(
            "name = \"x\"\n[[step]]\nqueue = \"q\"\nrun = \"{}\"",
            "a".repeat(70_000)
        );
        let err = parse(&big, &Limits::default()).unwrap_err();
        assert!(matches!(&err, SpecError::TooLarge(m) if m.contains("max_command_bytes")));
        let huge = "#".repeat(2 * 1024 * 1024);
        assert!(
            matches!(parse(&huge, &Limits::default()), Err(SpecError::TooLarge(m)) if m.contains("max_spec_bytes"))
        );
    }
}
