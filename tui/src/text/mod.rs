//! Words shared by the CLI and the console: times and durations
//! ([`time`]), step numbers and attempts, what an event is about, text
//! made safe for a terminal, and a step's output as lines ([`output`]).

use opsdeck_proto::v1::{Event, Step};

pub mod output;
pub mod time;

/// A step's number as people count (1-based, as the engine's messages say
/// "step 1"); the API's `index` is 0-based.
pub fn step_number(index: u32) -> u64 {
    u64::from(index) + 1
}

/// A step's attempts as `counted/max`, and how many were given back (their
/// lease lost, not failed by the step), so it never reads `2/1`.
pub fn attempt_text(step: &Step) -> String {
    let counted = if step.attempts_counted == 0 && step.attempts_given_back == 0 {
        step.attempt
    } else {
        step.attempts_counted
    };
    match step.attempts_given_back {
        0 => format!("{counted}/{}", step.max_attempts),
        n => format!("{counted}/{} (+{n} given back)", step.max_attempts),
    }
}

/// The id of what the event is about, as its kind names it (`step.failed`
/// is about a run's step, `worker.drain` about a worker); else the first id
/// it carries.
pub fn subject(event: &Event) -> String {
    let some = |s: &String| (!s.is_empty()).then(|| s.clone());
    let by_kind = match event.kind.split('.').next().unwrap_or_default() {
        "step" => {
            some(&event.run_id).map(|run| format!("{run} #{}", step_number(event.step_index)))
        }
        "run" => some(&event.run_id),
        "worker" => some(&event.worker_id),
        "lease" => some(&event.lease_id),
        "approval" => some(&event.approval_id),
        "queue" => some(&event.queue),
        _ => None,
    };
    by_kind
        .or_else(|| {
            [
                &event.run_id,
                &event.approval_id,
                &event.lease_id,
                &event.worker_id,
                &event.queue,
            ]
            .into_iter()
            .find_map(some)
        })
        .unwrap_or_default()
}

/// Text from the engine or from a step's output, made safe to print on an
/// operator's terminal: ANSI escape sequences are dropped (a step must not
/// be able to move the cursor or retitle the window of whoever reads its
/// log), and any other control character becomes `replacement`.
pub fn clean(text: &str, replacement: char) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            match chars.next() {
                // CSI: parameters, then one final byte in '@'..='~'.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ST (ESC \).
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' {
                            break;
                        }
                        if c == '\x1b' {
                            chars.next_if_eq(&'\\');
                            break;
                        }
                    }
                }
                _ => {}
            }
        } else if c.is_control() {
            out.push(replacement);
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_never_read_more_than_allowed() {
        let step = |attempt, counted, back| Step {
            attempt,
            attempts_counted: counted,
            attempts_given_back: back,
            max_attempts: 1,
            ..Default::default()
        };
        assert_eq!(attempt_text(&step(1, 1, 0)), "1/1");
        assert_eq!(attempt_text(&step(2, 1, 1)), "1/1 (+1 given back)");
    }
}
