//! A spec's `concurrency`: runs that share a key run at most `limit` at
//! once. The key may use parameters, so one spec can keep one deploy per
//! environment going at a time:
//!
//! ```toml
//! concurrency = { key = "deploy-${params.env}", limit = 1 }
//! ```
//!
//! A run holds its key from its first lease until it is final, including
//! while it waits at an approval gate between steps.

use serde::{Deserialize, Serialize};

/// The most bytes of a concurrency key, after substitution.
pub const MAX_KEY_BYTES: usize = 256;

/// A run's concurrency key and its limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Concurrency {
    pub key: String,
    pub limit: u32,
}

/// `concurrency = { key = "...", limit = N }` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConcurrency {
    pub(super) key: Option<String>,
    limit: Option<i64>,
}

impl RawConcurrency {
    /// Checks the table once its key has had its parameters substituted.
    /// Errors name the field to fix.
    pub(super) fn check(self) -> Result<Concurrency, String> {
        let Some(key) = self.key else {
            return Err(
                "`concurrency.key` is missing; write e.g. concurrency = { key = \"deploy-${params.env}\", limit = 1 }"
                    .into(),
            );
        };
        let key = key.trim().to_owned();
        if key.is_empty() {
            return Err(
                "`concurrency.key` is empty (after its parameters were substituted); give it a name"
                    .into(),
            );
        }
        if key.len() > MAX_KEY_BYTES || key.chars().any(char::is_control) {
            return Err(format!(
                "`concurrency.key` must be 1 to {MAX_KEY_BYTES} bytes without control characters"
            ));
        }
        let limit = match self.limit {
            None => 1,
            Some(n) if n >= 1 => u32::try_from(n).map_err(|_| {
                format!(
                    "`concurrency.limit` is {n}; it must be at most {}",
                    u32::MAX
                )
            })?,
            Some(n) => {
                return Err(format!("`concurrency.limit` is {n}; it must be at least 1"));
            }
        };
        Ok(Concurrency { key, limit })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::Concurrency;
    use crate::domain::spec::{Limits, parse_with};

    const SPEC: &str = "name = \"deploy\"\n\
        concurrency = { key = \"deploy-${params.env}\", limit = 2 }\n\
        [params]\nenv = { type = \"enum\", values = [\"staging\", \"prod\"], default = \"staging\" }\n\
        [[step]]\nqueue = \"q\"\nrun = \"true\"\n";

    fn with(text: &str, env: Option<&str>) -> Result<Option<Concurrency>, String> {
        let given: BTreeMap<String, String> = env
            .map(|e| [("env".to_owned(), e.to_owned())].into())
            .unwrap_or_default();
        parse_with(text, &Limits::default(), &given)
            .map(|s| s.concurrency)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_key_takes_the_runs_parameters() {
        let c = with(SPEC, Some("prod")).unwrap().unwrap();
        assert_eq!(c.key, "deploy-prod");
        assert_eq!(c.limit, 2);
        assert_eq!(with(SPEC, None).unwrap().unwrap().key, "deploy-staging");
        let plain = "name = \"x\"\n[[step]]\nqueue = \"q\"\nrun = \"true\"\n";
        assert_eq!(with(plain, None).unwrap(), None);
        let no_limit = "name = \"x\"\nconcurrency = { key = \"k\" }\n[[step]]\nqueue = \"q\"\nrun = \"true\"\n";
        assert_eq!(with(no_limit, None).unwrap().unwrap().limit, 1);
    }

    #[test]
    fn bad_values_are_refused_naming_the_field() {
        let spec = |c: &str| {
            format!("name = \"x\"\nconcurrency = {c}\n[[step]]\nqueue = \"q\"\nrun = \"true\"\n")
        };
        for (c, says) in [
            ("{ key = \"k\", limit = 0 }", "`concurrency.limit` is 0"),
            ("{ key = \"k\", limit = -3 }", "`concurrency.limit` is -3"),
            ("{ key = \"  \", limit = 1 }", "`concurrency.key` is empty"),
            ("{ limit = 1 }", "`concurrency.key` is missing"),
            (
                "{ key = \"${params.nope}\" }",
                "concurrency.key: ${params.nope}",
            ),
        ] {
            let err = with(&spec(c), None).unwrap_err();
            assert!(err.contains(says), "{c}: {err}");
        }
        let err = with(&spec("{ key = \"k\", size = 1 }"), None).unwrap_err();
        assert!(err.contains("size"), "{err}");
    }
}
