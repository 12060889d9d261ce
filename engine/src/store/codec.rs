//! How objects are written to and read from either database: domain
//! values as JSON, events as encoded protobuf.

use opsdeck_proto::v1 as pb;
use prost::Message;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use super::StoreError;

pub fn json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt {
        what: "encode".into(),
        why: e.to_string(),
    })
}

pub fn parse<T: DeserializeOwned>(what: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        what: what.into(),
        why: e.to_string(),
    })
}

pub fn state_word<T: Serialize>(v: &T) -> Result<String, StoreError> {
    Ok(json(v)?.trim_matches('"').to_owned())
}

pub fn decode_event(body: &[u8]) -> Result<pb::Event, StoreError> {
    pb::Event::decode(body).map_err(|e| StoreError::Corrupt {
        what: "event".into(),
        why: e.to_string(),
    })
}

/// `v` as a JSON object without `columns` (stored beside it, and laid back
/// over it by [`with_columns`]) and without null members (an absent
/// `Option` reads back as `None`): a row's body keeps only what no column
/// holds.
pub fn body<T: Serialize>(v: &T, columns: &[&str]) -> Result<String, StoreError> {
    let mut value = serde_json::to_value(v).map_err(|e| StoreError::Corrupt {
        what: "encode".into(),
        why: e.to_string(),
    })?;
    if let Value::Object(map) = &mut value {
        for c in columns {
            map.remove(*c);
        }
    }
    drop_nulls(&mut value);
    json(&value)
}

fn drop_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Reads a body written by [`body`] (or a whole object, as rows written
/// before the columns were split off hold) with `columns` laid over it.
pub fn with_columns<T: DeserializeOwned>(
    what: &str,
    text: &str,
    columns: impl IntoIterator<Item = (&'static str, Value)>,
) -> Result<T, StoreError> {
    let corrupt = |why: String| StoreError::Corrupt {
        what: what.into(),
        why,
    };
    let mut value: Value = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
    let Value::Object(map) = &mut value else {
        return Err(corrupt("the body is not a JSON object".into()));
    };
    for (k, v) in columns {
        map.insert(k.to_owned(), v);
    }
    serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))
}

/// An event as stored: without what the events table's columns hold, nor
/// the ids its objects repeat from the event (a lease event's lease names
/// the event's lease, run, worker and queue again).
pub fn event_body(e: &pb::Event) -> Vec<u8> {
    let mut stored = pb::Event {
        seq: 0,
        at_ms: 0,
        kind: String::new(),
        actor: String::new(),
        run_id: String::new(),
        ..e.clone()
    };
    if let Some(l) = &mut stored.lease {
        clear_if(&mut l.id, &e.lease_id);
        clear_if(&mut l.run_id, &e.run_id);
        clear_if(&mut l.worker_id, &e.worker_id);
        clear_if(&mut l.queue, &e.queue);
    }
    if let Some(a) = &mut stored.approval {
        clear_if(&mut a.id, &e.approval_id);
        clear_if(&mut a.run_id, &e.run_id);
    }
    if let Some(r) = &mut stored.run {
        clear_if(&mut r.id, &e.run_id);
        for step in &mut r.steps {
            clear_if(&mut step.run_id, &e.run_id);
        }
    }
    if let Some(w) = &mut stored.worker {
        clear_if(&mut w.id, &e.worker_id);
    }
    stored.encode_to_vec()
}

fn clear_if(field: &mut String, same_as: &str) {
    if field == same_as {
        field.clear();
    }
}

/// Puts back what [`event_body`] left out as repeated: an empty id in an
/// object is the event's.
fn restore_ids(e: &mut pb::Event) {
    let fill = |field: &mut String, from: &str| {
        if field.is_empty() {
            *field = from.to_owned();
        }
    };
    if let Some(l) = &mut e.lease {
        fill(&mut l.id, &e.lease_id);
        fill(&mut l.run_id, &e.run_id);
        fill(&mut l.worker_id, &e.worker_id);
        fill(&mut l.queue, &e.queue);
    }
    if let Some(a) = &mut e.approval {
        fill(&mut a.id, &e.approval_id);
        fill(&mut a.run_id, &e.run_id);
    }
    if let Some(r) = &mut e.run {
        fill(&mut r.id, &e.run_id);
        for step in &mut r.steps {
            fill(&mut step.run_id, &e.run_id);
        }
    }
    if let Some(w) = &mut e.worker {
        fill(&mut w.id, &e.worker_id);
    }
}

/// An event read back: its body with the columns laid over it (bodies
/// written before the columns were split off hold the same values).
pub fn event_with_columns(
    body: &[u8],
    seq: i64,
    at: i64,
    kind: String,
    run_id: Option<String>,
    actor: String,
) -> Result<pb::Event, StoreError> {
    let mut e = decode_event(body)?;
    e.seq = seq as u64;
    e.at_ms = at;
    e.kind = kind;
    e.run_id = run_id.unwrap_or_default();
    e.actor = actor;
    restore_ids(&mut e);
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_reads_back_as_it_was_written_without_storing_ids_twice() {
        let e = pb::Event {
            seq: 7,
            at_ms: 1_000,
            kind: "lease.granted".into(),
            actor: "opsdeckd".into(),
            run_id: "01RUN".into(),
            step_index: 2,
            worker_id: "w1".into(),
            lease_id: "01LEASE".into(),
            queue: "build".into(),
            message: "granted".into(),
            lease: Some(Box::new(pb::Lease {
                id: "01LEASE".into(),
                run_id: "01RUN".into(),
                step_index: 2,
                worker_id: "w1".into(),
                queue: "build".into(),
                attempt: 1,
                ..Default::default()
            })),
            ..Default::default()
        };
        let body = event_body(&e);
        let whole = pb::Event {
            seq: 0,
            ..e.clone()
        }
        .encode_to_vec();
        assert!(
            body.len() + 40 < whole.len(),
            "{} vs {}",
            body.len(),
            whole.len()
        );
        let back = event_with_columns(
            &body,
            7,
            1_000,
            "lease.granted".into(),
            Some("01RUN".into()),
            "opsdeckd".into(),
        )
        .unwrap();
        assert_eq!(back, e);
    }
}
