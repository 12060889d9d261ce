//! What a credential may reach: the worker ids and queues an agent
//! credential may serve, the queues a secret may be used on. Written in the
//! config as lists of glob patterns (`["build-*", "test"]`).

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;

/// A list of glob patterns (`*`, `?`, `[a-z]`), matched against a whole
/// name.
#[derive(Clone, Debug)]
pub struct Patterns {
    written: Vec<String>,
    set: GlobSet,
}

impl Patterns {
    /// Compiles `written`, or says which pattern is not one.
    pub fn new(written: Vec<String>) -> Result<Self, String> {
        let mut set = GlobSetBuilder::new();
        for p in &written {
            if p.trim().is_empty() {
                return Err("an empty pattern matches nothing; remove it or write \"*\"".into());
            }
            let glob = Glob::new(p).map_err(|e| format!("{p:?} is not a glob pattern: {e}"))?;
            set.add(glob);
        }
        let set = set
            .build()
            .map_err(|e| format!("the patterns {written:?} cannot be compiled: {e}"))?;
        Ok(Self { written, set })
    }

    /// The patterns of both lists.
    pub fn union(&self, other: &Self) -> Self {
        let mut written = self.written.clone();
        written.extend(other.written.iter().cloned());
        // Both compiled already, so together they compile too.
        Self::new(written).unwrap_or_else(|_| self.clone())
    }

    /// Whether `name` matches one of the patterns.
    pub fn matches(&self, name: &str) -> bool {
        self.set.is_match(name)
    }

    /// Whether the list says "everything": a bare `*`.
    pub fn is_everything(&self) -> bool {
        self.written.iter().any(|p| p == "*")
    }

    /// The patterns as written, for messages.
    pub fn written(&self) -> String {
        self.written.join(", ")
    }
}

impl PartialEq for Patterns {
    fn eq(&self, other: &Self) -> bool {
        self.written == other.written
    }
}

impl Eq for Patterns {}

impl<'de> Deserialize<'de> for Patterns {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let written = Vec::<String>::deserialize(d)?;
        Self::new(written).map_err(serde::de::Error::custom)
    }
}

/// What worker ids and queues an agent credential may serve. A field left
/// out of the config (`None`) puts no bound on ids, and allows any named
/// queue but not the wildcard `*`, which serves every queue and so must be
/// given explicitly.
#[derive(Clone, Debug, Default)]
pub struct AgentScope {
    pub workers: Option<Patterns>,
    pub queues: Option<Patterns>,
    /// The engine's own local workers and its own user: every id, every
    /// queue, the wildcard too.
    pub unbounded: bool,
}

impl AgentScope {
    /// No bound at all.
    pub fn unbounded() -> Self {
        Self {
            unbounded: true,
            ..Self::default()
        }
    }

    /// Why a worker `id` serving `queues` is outside this scope, if it is.
    pub fn refuse(&self, identity: &str, id: &str, queues: &[String]) -> Option<String> {
        if self.unbounded {
            return None;
        }
        if let Some(workers) = &self.workers
            && !workers.matches(id)
        {
            return Some(format!(
                "{identity} may register workers named {} (its `workers` in the engine config), not {id:?}",
                workers.written()
            ));
        }
        for q in queues {
            let allowed = match &self.queues {
                Some(p) if q == super::ANY_QUEUE => p.is_everything(),
                Some(p) => p.matches(q),
                None => q != super::ANY_QUEUE,
            };
            if !allowed {
                let what = if q == super::ANY_QUEUE {
                    "every queue (`*`)".to_owned()
                } else {
                    format!("queue {q:?}")
                };
                let may = match &self.queues {
                    Some(p) => format!("the queues {} (its `queues`", p.written()),
                    None => "named queues only (no `queues` with \"*\"".to_owned(),
                };
                return Some(format!(
                    "{identity} may not serve {what}: it may serve {may} in the engine config)"
                ));
            }
        }
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn p(list: &[&str]) -> Option<Patterns> {
        Some(Patterns::new(list.iter().map(|s| (*s).to_owned()).collect()).unwrap())
    }

    fn q(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_scope_bounds_ids_and_queues() {
        let scope = AgentScope {
            workers: p(&["build-*"]),
            queues: p(&["build", "test"]),
            unbounded: false,
        };
        assert!(scope.refuse("ci", "build-1", &q(&["build"])).is_none());
        assert!(
            scope
                .refuse("ci", "build-1", &q(&["build", "test"]))
                .is_none()
        );
        let id = scope.refuse("ci", "deploy-1", &q(&["build"])).unwrap();
        assert!(id.contains("build-*") && id.contains("deploy-1"), "{id}");
        let queue = scope.refuse("ci", "build-1", &q(&["deploy"])).unwrap();
        assert!(
            queue.contains("\"deploy\"") && queue.contains("build, test"),
            "{queue}"
        );
        let any = scope.refuse("ci", "build-1", &q(&["*"])).unwrap();
        assert!(any.contains("every queue"), "{any}");
    }

    #[test]
    fn the_wildcard_queue_must_be_given_explicitly() {
        let open = AgentScope::default();
        assert!(open.refuse("ci", "w", &q(&["anything"])).is_none());
        assert!(open.refuse("ci", "w", &q(&["*"])).is_some());
        let star = AgentScope {
            queues: p(&["*"]),
            ..AgentScope::default()
        };
        assert!(star.refuse("ci", "w", &q(&["*"])).is_none());
        let globbed = AgentScope {
            queues: p(&["b*"]),
            ..AgentScope::default()
        };
        assert!(globbed.refuse("ci", "w", &q(&["*"])).is_some());
        assert!(
            AgentScope::unbounded()
                .refuse("x", "w", &q(&["*"]))
                .is_none()
        );
    }

    #[test]
    fn bad_patterns_are_named() {
        let e = Patterns::new(vec!["a[".into()]).unwrap_err();
        assert!(e.contains("\"a[\""), "{e}");
        assert!(Patterns::new(vec![" ".into()]).is_err());
    }
}
