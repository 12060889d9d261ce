//! Which notifiers an event goes to: the `[[notify]]` entries' `on`,
//! `queue`, `run_name` and `label` filters, compiled once.

use std::collections::BTreeMap;

use crate::domain::Run;
use crate::domain::scope::Patterns;

use super::NotifierEntry;

#[derive(Clone, Debug)]
struct Rule {
    name: String,
    on: Patterns,
    queue: Option<Patterns>,
    run_name: Option<Patterns>,
    labels: BTreeMap<String, String>,
}

/// The notifiers' filters. Empty: no notifications.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// Compiles the entries (already checked by the config).
    pub fn new(entries: &[NotifierEntry]) -> Result<Self, String> {
        let glob = |g: &Option<String>| g.clone().map(|g| Patterns::new(vec![g])).transpose();
        let rules = entries
            .iter()
            .map(|e| {
                Ok(Rule {
                    name: e.name.clone(),
                    on: e.on.clone(),
                    queue: glob(&e.queue)?,
                    run_name: glob(&e.run_name)?,
                    labels: e.label.clone(),
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The notifiers an event of `kind` goes to, about `run` (if any) on
    /// `queue` (empty: none).
    pub fn matching<'a>(
        &'a self,
        kind: &'a str,
        queue: &'a str,
        run: Option<&'a Run>,
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.rules
            .iter()
            .filter(move |r| {
                r.on.matches(kind)
                    && r.queue
                        .as_ref()
                        .is_none_or(|q| !queue.is_empty() && q.matches(queue))
                    && r.run_name
                        .as_ref()
                        .is_none_or(|n| run.is_some_and(|run| n.matches(&run.name)))
                    && (r.labels.is_empty()
                        || run.is_some_and(|run| {
                            r.labels.iter().all(|(k, v)| run.labels.get(k) == Some(v))
                        }))
            })
            .map(|r| r.name.as_str())
    }
}
