//! The shape of `--output json`: the API's messages as JSON, made to say
//! what the text output says.
//!
//! - Steps are numbered from 1, as every message and table counts them:
//!   `step_number` (for the API's 0-based `step_index`), a step's `number`
//!   (for `index`), a run's `current_step_number` (for `current_step`).
//!   An event about no step (`run.*`, `worker.*`, `queue.*`) has
//!   `step_number: null`.
//! - What is not there is `null`, never a 0 that reads as a value: times
//!   not set (`finished_at_ms`, …), `exit_code` of a step that has none
//!   (instead of `exit_code: 0` beside `has_exit_code: false`), the age of
//!   the oldest ready step of an empty queue, a step without a timeout.
//! - A queue's `paused: true` is `"state": "paused"` (or `"active"`), as
//!   runs, workers and leases say theirs.
//!
//! Done on the JSON value of each answer, so every command and every
//! nested message (a run in an event, steps in a run) gets the same shape.

use serde_json::{Map, Value};

/// `value` in the CLI's JSON shape.
pub fn shape(mut value: Value) -> Value {
    reshape(&mut value);
    value
}

fn reshape(value: &mut Value) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(reshape),
        Value::Object(object) => {
            reshape_object(object);
            object.values_mut().for_each(reshape);
        }
        _ => {}
    }
}

/// Event kinds whose events are about no step of their run.
const STEPLESS: &[&str] = &["run.", "run_name.", "worker.", "queue."];

fn reshape_object(o: &mut Map<String, Value>) {
    if let Some(Value::Bool(has)) = o.remove("has_exit_code")
        && !has
    {
        o.insert("exit_code".to_owned(), Value::Null);
    }
    let unset: Vec<String> = o
        .iter()
        .filter(|(key, value)| {
            (key.ends_with("_at_ms") || *key == "oldest_ready_age_ms" || *key == "timeout_ms")
                && value.as_i64() == Some(0)
        })
        .map(|(key, _)| key.clone())
        .collect();
    for key in unset {
        o.insert(key, Value::Null);
    }
    if let Some(index) = o.get("step_index").and_then(Value::as_u64) {
        o.remove("step_index");
        let stepless = o.get("kind").and_then(Value::as_str).is_some_and(|kind| {
            o.contains_key("seq") && STEPLESS.iter().any(|p| kind.starts_with(p))
        });
        let number = if stepless {
            Value::Null
        } else {
            Value::from(index + 1)
        };
        o.insert("step_number".to_owned(), number);
    }
    // A step (or a step's update): the one object with an `index` and a
    // `state`.
    if o.contains_key("state")
        && let Some(index) = o.get("index").and_then(Value::as_u64)
    {
        o.remove("index");
        o.insert("number".to_owned(), Value::from(index + 1));
    }
    if let Some(current) = o.get("current_step").and_then(Value::as_u64) {
        o.remove("current_step");
        o.insert("current_step_number".to_owned(), Value::from(current + 1));
    }
    if !o.contains_key("state")
        && let Some(paused) = o.get("paused").and_then(Value::as_bool)
    {
        o.remove("paused");
        let state = if paused { "paused" } else { "active" };
        o.insert("state".to_owned(), Value::from(state));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opsdeck_proto::v1::{Event, Queue, Run, RunState, Step, StepState};
    use serde_json::json;

    fn shaped<T: serde::Serialize>(value: &T) -> Value {
        shape(serde_json::to_value(value).unwrap())
    }

    #[test]
    fn steps_count_from_one_and_what_is_not_there_is_null() {
        let run = Run {
            id: "01HRUN".into(),
            state: RunState::Running as i32,
            created_at_ms: 5,
            current_step: 1,
            steps: vec![
                Step {
                    index: 0,
                    state: StepState::Failed as i32,
                    exit_code: 0,
                    has_exit_code: true,
                    finished_at_ms: 9,
                    ..Step::default()
                },
                Step {
                    index: 1,
                    state: StepState::Running as i32,
                    ..Step::default()
                },
            ],
            ..Run::default()
        };
        let v = shaped(&run);
        assert_eq!(v["current_step_number"], 2);
        assert_eq!(v.get("current_step"), None);
        assert_eq!(v["finished_at_ms"], Value::Null);
        assert_eq!(v["created_at_ms"], 5);
        let (done, running) = (&v["steps"][0], &v["steps"][1]);
        assert_eq!(
            (done["number"].clone(), done["exit_code"].clone()),
            (json!(1), json!(0))
        );
        assert_eq!(done.get("has_exit_code"), None);
        assert_eq!(running["number"], 2);
        assert_eq!(running["exit_code"], Value::Null);
        assert_eq!(running["finished_at_ms"], Value::Null);
        assert_eq!(running.get("index"), None);
    }

    #[test]
    fn an_event_names_a_step_only_when_it_is_about_one() {
        let event = |kind: &str| Event {
            seq: 3,
            kind: kind.into(),
            step_index: 0,
            at_ms: 7,
            ..Event::default()
        };
        assert_eq!(shaped(&event("step.failed"))["step_number"], 1);
        assert_eq!(shaped(&event("lease.granted"))["step_number"], 1);
        assert_eq!(shaped(&event("run.submitted"))["step_number"], Value::Null);
        assert_eq!(shaped(&event("worker.drain"))["step_number"], Value::Null);
        assert_eq!(shaped(&event("step.failed")).get("step_index"), None);
    }

    #[test]
    fn a_queue_says_its_state_in_a_word() {
        let paused = Queue {
            name: "ops".into(),
            paused: true,
            ..Queue::default()
        };
        let v = shaped(&vec![
            paused.clone(),
            Queue {
                paused: false,
                ..paused
            },
        ]);
        assert_eq!(v[0]["state"], "paused");
        assert_eq!(v[1]["state"], "active");
        assert_eq!(v[0].get("paused"), None);
        assert_eq!(v[0]["oldest_ready_age_ms"], Value::Null);
    }

    #[test]
    fn labels_and_strings_are_left_alone() {
        let v = shape(json!({"labels": {"paused": "true", "index": "0"}, "text": "step_index"}));
        assert_eq!(
            v,
            json!({"labels": {"paused": "true", "index": "0"}, "text": "step_index"})
        );
    }
}
