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
/// holds. Written in one pass by [`Trimmed`], with no `serde_json::Value`
/// in between: this runs for every row a commit writes.
pub fn body<T: Serialize>(v: &T, columns: &[&str]) -> Result<String, StoreError> {
    let encode = |why: String| StoreError::Corrupt {
        what: "encode".into(),
        why,
    };
    let mut out = Vec::with_capacity(256);
    let trimmed = Trimmed {
        out: &mut out,
        columns,
        kept: Vec::new(),
        member: Vec::new(),
    };
    let mut ser = serde_json::Serializer::with_formatter(std::io::sink(), trimmed);
    v.serialize(&mut ser).map_err(|e| encode(e.to_string()))?;
    drop(ser);
    String::from_utf8(out).map_err(|e| encode(e.to_string()))
}

/// A JSON formatter that leaves out the top-level members named in
/// `columns` and every object member whose value is `null`, at any depth
/// (array elements stay as they are). It writes into `out` (the
/// serializer's own writer is a sink): a member is written as usual, then
/// cut off again once its key or its value shows it is to go.
struct Trimmed<'a> {
    out: &'a mut Vec<u8>,
    columns: &'a [&'a str],
    /// For each object being written, how many members it kept so far.
    kept: Vec<usize>,
    /// For each member being written (one per open object): where it
    /// began, where its value begins, and whether its key drops it.
    member: Vec<(usize, usize, bool)>,
}

/// Formatter methods that only write: into `out`, as the compact
/// formatter would.
macro_rules! write_into_out {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $name<W: ?Sized + std::io::Write>(&mut self, _w: &mut W $(, $arg: $ty)*) -> std::io::Result<()> {
            serde_json::ser::CompactFormatter.$name(&mut *self.out $(, $arg)*)
        }
    )*};
}

impl serde_json::ser::Formatter for Trimmed<'_> {
    write_into_out! {
        write_null();
        write_bool(v: bool);
        write_i8(v: i8);
        write_i16(v: i16);
        write_i32(v: i32);
        write_i64(v: i64);
        write_i128(v: i128);
        write_u8(v: u8);
        write_u16(v: u16);
        write_u32(v: u32);
        write_u64(v: u64);
        write_u128(v: u128);
        write_f32(v: f32);
        write_f64(v: f64);
        write_number_str(v: &str);
        begin_string();
        end_string();
        write_string_fragment(v: &str);
        write_char_escape(v: serde_json::ser::CharEscape);
        write_byte_array(v: &[u8]);
        begin_array();
        end_array();
        begin_array_value(first: bool);
        end_array_value();
        write_raw_fragment(v: &str);
    }

    fn begin_object<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> std::io::Result<()> {
        self.kept.push(0);
        self.out.push(b'{');
        Ok(())
    }

    fn end_object<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> std::io::Result<()> {
        self.kept.pop();
        self.out.push(b'}');
        Ok(())
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        _w: &mut W,
        _first: bool,
    ) -> std::io::Result<()> {
        self.member.push((self.out.len(), 0, false));
        // The separator follows what was kept, not what was written.
        if self.kept.last().is_some_and(|kept| *kept > 0) {
            self.out.push(b',');
        }
        Ok(())
    }

    fn end_object_key<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> std::io::Result<()> {
        let top = self.kept.len() == 1;
        if let Some((start, _, dropped)) = self.member.last_mut() {
            let key = &self.out[*start..];
            let key = key.strip_prefix(b",").unwrap_or(key);
            *dropped = top
                && self
                    .columns
                    .iter()
                    .any(|c| key.len() == c.len() + 2 && &key[1..key.len() - 1] == c.as_bytes());
        }
        Ok(())
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        _w: &mut W,
    ) -> std::io::Result<()> {
        self.out.push(b':');
        if let Some((_, value, _)) = self.member.last_mut() {
            *value = self.out.len();
        }
        Ok(())
    }

    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> std::io::Result<()> {
        if let Some((start, value, dropped)) = self.member.pop() {
            if dropped || &self.out[value..] == b"null" {
                self.out.truncate(start);
            } else if let Some(kept) = self.kept.last_mut() {
                *kept += 1;
            }
        }
        Ok(())
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
    stored_event(e, false).encode_to_vec()
}

/// An event without its seq, instant and run (its row's columns say them)
/// nor the ids its objects repeat; without its kind and actor too unless
/// `own_kind` (an event in a row of several has its own).
pub(super) fn stored_event(e: &pb::Event, own_kind: bool) -> pb::Event {
    let mut stored = pb::Event {
        seq: 0,
        at_ms: 0,
        run_id: String::new(),
        ..e.clone()
    };
    if !own_kind {
        stored.kind.clear();
        stored.actor.clear();
    }
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
    stored
}

fn clear_if(field: &mut String, same_as: &str) {
    if field == same_as {
        field.clear();
    }
}

/// Puts back what [`event_body`] left out as repeated: an empty id in an
/// object is the event's.
pub(super) fn restore_ids(e: &mut pb::Event) {
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
    use crate::domain::Step;

    /// What `body` wrote before it was one pass: through a
    /// `serde_json::Value`, columns removed, nulls dropped at every depth.
    fn body_by_value<T: Serialize>(v: &T, columns: &[&str]) -> Value {
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
        let mut value = serde_json::to_value(v).unwrap();
        if let Value::Object(map) = &mut value {
            for c in columns {
                map.remove(*c);
            }
        }
        drop_nulls(&mut value);
        value
    }

    #[test]
    fn a_body_leaves_out_its_columns_and_null_members_at_every_depth() {
        let mut run = crate::store::conformance_runs::two_step_run("01RUN\"quoted\" ü");
        run.message = "line 1\nline 2 \u{1f680}".into();
        run.steps[1].lease_id = Some("01LEASE".into());
        run.steps[1].exit_code = Some(-1);
        let step_columns = ["index", "state"];
        let run_columns = ["id", "name", "state", "steps", "labels", "template"];
        let objects: Vec<(Value, String)> = vec![
            (
                body_by_value(&run, &run_columns),
                body(&run, &run_columns).unwrap(),
            ),
            (
                body_by_value(&run.steps[0], &step_columns),
                body(&run.steps[0], &step_columns).unwrap(),
            ),
            (
                body_by_value(&run.steps[1], &step_columns),
                body(&run.steps[1], &step_columns).unwrap(),
            ),
            // A column's name deeper down is not a column: it stays.
            (
                body_by_value(&serde_json::json!({"a": {"index": 1, "b": null}, "index": 2, "c": [null, {"d": null}]}), &step_columns),
                body(&serde_json::json!({"a": {"index": 1, "b": null}, "index": 2, "c": [null, {"d": null}]}), &step_columns).unwrap(),
            ),
            // Every member dropped: an empty object, no stray comma.
            (
                body_by_value(&serde_json::json!({"index": 1, "x": null}), &step_columns),
                body(&serde_json::json!({"index": 1, "x": null}), &step_columns).unwrap(),
            ),
        ];
        for (expected, written) in objects {
            let read: Value = serde_json::from_str(&written)
                .unwrap_or_else(|e| panic!("{written:?} is not JSON: {e}"));
            assert_eq!(read, expected, "{written}");
            assert!(!written.contains(":null"), "{written}");
        }
        let back: Step = with_columns(
            "step",
            &body(&run.steps[1], &step_columns).unwrap(),
            [
                ("index", Value::from(1)),
                ("state", serde_json::to_value(run.steps[1].state).unwrap()),
            ],
        )
        .unwrap();
        assert_eq!(back, run.steps[1]);
    }

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
