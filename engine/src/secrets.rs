//! The engine's secrets: values named in its config's `[secrets]`, read
//! when the engine starts, and put only in the assignments of the steps
//! whose env names them. A run spec holds a secret's name, never its value,
//! so the value is in no event, answer or database row.
//!
//! ```toml
//! [secrets]
//! db_pass = { file = "/etc/opsdeck/secrets/db_pass" }   # one trailing newline is dropped
//! api_token = { env = "OPSDECK_SECRET_API_TOKEN" }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use crate::domain::spec::validate_secret_name;

/// What an environment variable holding a secret must be named like: steps
/// never inherit `OPSDECK_SECRET_*` variables of their worker's (or, for
/// local workers, the engine's) environment.
pub const SECRET_VAR_PREFIX: &str = "OPSDECK_SECRET_";

/// Where a secret's value is read from: a file or an environment variable
/// of the engine's process.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    pub file: Option<PathBuf>,
    pub env: Option<String>,
    /// The queues whose steps may use it (glob patterns); any queue when
    /// left out.
    #[serde(default)]
    pub queues: Option<crate::domain::scope::Patterns>,
    /// The identities whose runs may use it (glob patterns); anyone's when
    /// left out.
    #[serde(default)]
    pub submitters: Option<crate::domain::scope::Patterns>,
}

/// Where a secret may be used: steps on these queues, of runs these
/// identities submit.
#[derive(Clone, Debug, Default)]
struct Scope {
    queues: Option<crate::domain::scope::Patterns>,
    submitters: Option<crate::domain::scope::Patterns>,
}

/// Secret values by name. Its `Debug` shows the names only.
#[derive(Clone, Default)]
pub struct Secrets {
    values: Arc<BTreeMap<String, String>>,
    scopes: Arc<BTreeMap<String, Scope>>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.values.keys()).finish()
    }
}

impl Secrets {
    /// Reads every secret, or says which one could not be read and why.
    pub fn load(sources: &BTreeMap<String, SecretSource>) -> Result<Self, String> {
        let mut values = BTreeMap::new();
        let mut scopes = BTreeMap::new();
        for (name, source) in sources {
            scopes.insert(
                name.clone(),
                Scope {
                    queues: source.queues.clone(),
                    submitters: source.submitters.clone(),
                },
            );
            validate_secret_name(name).map_err(|e| format!("[secrets] {e}"))?;
            let value = match (&source.file, &source.env) {
                (Some(path), None) => {
                    let mut text = std::fs::read_to_string(path).map_err(|e| {
                        format!(
                            "[secrets] {name}: cannot read {}: {e}; check the path and that the engine's user may read it",
                            path.display()
                        )
                    })?;
                    if text.ends_with('\n') {
                        text.pop();
                        if text.ends_with('\r') {
                            text.pop();
                        }
                    }
                    text
                }
                (None, Some(var)) if !var.starts_with(SECRET_VAR_PREFIX) => {
                    return Err(format!(
                        "[secrets] {name}: env = \"{var}\": name the variable {SECRET_VAR_PREFIX}*; \
                         steps never inherit those, while any other variable of the \
                         engine's environment reaches the steps its --local-workers run"
                    ));
                }
                (None, Some(var)) => std::env::var(var).map_err(|_| {
                    format!(
                        "[secrets] {name}: the environment variable {var} is not set (or not UTF-8) in the engine's environment"
                    )
                })?,
                _ => {
                    return Err(format!(
                        "[secrets] {name}: give exactly one of file = \"PATH\" or env = \"VARIABLE\""
                    ));
                }
            };
            if value.is_empty() {
                return Err(format!(
                    "[secrets] {name}: the value is empty; an empty secret cannot be kept out of output"
                ));
            }
            values.insert(name.clone(), value);
        }
        Ok(Self {
            values: Arc::new(values),
            scopes: Arc::new(scopes),
        })
    }

    /// Why a step on `queue` of a run `submitter` submits may not use
    /// secret `name`, if it may not.
    pub fn refuse(&self, name: &str, queue: &str, submitter: &str) -> Option<String> {
        let scope = self.scopes.get(name)?;
        if let Some(queues) = &scope.queues
            && !queues.matches(queue)
        {
            return Some(format!(
                "the secret {name:?} is for steps on the queues {} only ([secrets.{name}] queues in \
                 the engine config), not queue {queue:?}",
                queues.written()
            ));
        }
        if let Some(who) = &scope.submitters
            && !who.matches(submitter)
        {
            return Some(format!(
                "the secret {name:?} is for runs of {} only ([secrets.{name}] submitters in the \
                 engine config), not of {submitter}",
                who.written()
            ));
        }
        None
    }

    /// Secrets given directly, for tests and embedding.
    pub fn from_values(values: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            values: Arc::new(values.into_iter().collect()),
            scopes: Arc::default(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_files_and_variables_and_debug_shows_names_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("db_pass");
        std::fs::write(&file, "hunter2-file\n").unwrap();
        let sources: BTreeMap<String, SecretSource> = toml::from_str(&format!(
            "db_pass = {{ file = {:?} }}\n",
            file.display().to_string()
        ))
        .unwrap();
        let secrets = Secrets::load(&sources).unwrap();
        assert_eq!(secrets.get("db_pass"), Some("hunter2-file"));
        let debug = format!("{secrets:?}");
        assert!(
            debug.contains("db_pass") && !debug.contains("hunter2"),
            "{debug}"
        );
    }

    #[test]
    fn a_variable_steps_would_inherit_cannot_hold_a_secret() {
        let sources: BTreeMap<String, SecretSource> =
            toml::from_str("path = { env = \"PATH\" }").unwrap();
        let err = Secrets::load(&sources).unwrap_err();
        assert!(
            err.contains("[secrets] path") && err.contains("OPSDECK_SECRET_*"),
            "{err}"
        );
        let unset: BTreeMap<String, SecretSource> =
            toml::from_str("gone = { env = \"OPSDECK_SECRET_NOT_SET_ANYWHERE\" }").unwrap();
        let err = Secrets::load(&unset).unwrap_err();
        assert!(err.contains("is not set"), "{err}");
    }

    #[test]
    fn an_unreadable_or_ambiguous_secret_is_named() {
        let sources: BTreeMap<String, SecretSource> =
            toml::from_str("gone = { file = \"/nonexistent/opsdeck/secret\" }").unwrap();
        let err = Secrets::load(&sources).unwrap_err();
        assert!(
            err.contains("[secrets] gone") && err.contains("cannot read"),
            "{err}"
        );
        let sources: BTreeMap<String, SecretSource> =
            toml::from_str("both = { file = \"/x\", env = \"Y\" }").unwrap();
        let err = Secrets::load(&sources).unwrap_err();
        assert!(err.contains("exactly one"), "{err}");
    }
}
