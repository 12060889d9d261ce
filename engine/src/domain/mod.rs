//! The domain: runs, steps, queues, workers, leases and approvals, and the
//! run spec they are made from. Plain data and rules, no I/O: the engine
//! core owns the live values and the store persists them.

pub mod concurrency;
pub mod model;
pub mod params;
pub mod policy;
pub mod schedule;
pub mod scope;
pub mod spec;
#[cfg(test)]
mod spec_props;

pub use model::*;

/// Unix time in milliseconds.
pub type Millis = i64;

/// Now, in Unix milliseconds.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A worker serving this serves every queue (the engine's local workers do).
pub const ANY_QUEUE: &str = "*";

/// A worker id: 1 to 128 characters, none of them white space or a control
/// character (ids go into logs, tables and file names).
pub fn validate_worker_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "invalid worker id {id:?}: use 1 to 128 characters without spaces or control characters"
        ));
    }
    Ok(())
}

/// A queue name: `[a-z0-9._-]{1,64}`.
pub fn validate_queue_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("queue name is empty; use 1 to 64 of a-z, 0-9, '.', '_' and '-'".into());
    }
    if name.len() > 64 {
        return Err(format!(
            "queue name {:?}... is {} characters long; the limit is 64",
            &name[..name.char_indices().nth(16).map_or(name.len(), |(i, _)| i)],
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "queue name {name:?} contains {c:?}; use only a-z, 0-9, '.', '_' and '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_follow_the_pattern() {
        assert!(validate_queue_name("build.linux-x86_64").is_ok());
        assert!(validate_queue_name("").is_err());
        assert!(validate_queue_name("Build").unwrap_err().contains("'B'"));
        assert!(
            validate_queue_name(&"a".repeat(65))
                .unwrap_err()
                .contains("limit is 64")
        );
    }
}
