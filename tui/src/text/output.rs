//! A step's output as text: chunks of one stream joined, and the last
//! lines as a terminal would have shown them.

use opsdeck_proto::v1::OutputChunk;
use serde::Serialize;

use super::clean;

/// Output chunks in a row of the same step, attempt and stream, joined and
/// read as text, so that JSON readers get strings rather than byte arrays.
#[derive(Debug, PartialEq, Serialize)]
pub struct OutputText {
    pub step_index: u32,
    pub attempt: u32,
    pub stream: String,
    pub text: String,
    pub truncated: bool,
}

pub fn join_chunks(chunks: &[OutputChunk]) -> Vec<OutputText> {
    let mut joined: Vec<(u32, u32, &str, Vec<u8>, bool)> = Vec::new();
    for c in chunks {
        match joined.last_mut() {
            Some((step, attempt, stream, data, truncated))
                if (*step, *attempt, *stream) == (c.step_index, c.attempt, c.stream.as_str()) =>
            {
                data.extend_from_slice(&c.data);
                *truncated |= c.truncated;
            }
            _ => joined.push((
                c.step_index,
                c.attempt,
                &c.stream,
                c.data.clone(),
                c.truncated,
            )),
        }
    }
    joined
        .into_iter()
        .map(
            |(step_index, attempt, stream, data, truncated)| OutputText {
                step_index,
                attempt,
                stream: stream.to_owned(),
                text: String::from_utf8_lossy(&data).into_owned(),
                truncated,
            },
        )
        .collect()
}

/// The last `n` lines of a step's output, safe to print. A carriage return
/// rewrites its line (progress bars), so only what follows the last one is
/// kept, as a terminal would have shown it.
pub fn last_lines(text: &str, n: usize) -> Vec<String> {
    let text = text.strip_suffix('\n').unwrap_or(text);
    if text.is_empty() || n == 0 {
        return Vec::new();
    }
    let lines: Vec<&str> = text.split('\n').collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|line| {
            let line = line.strip_suffix('\r').unwrap_or(line);
            let shown = line.rsplit('\r').next().unwrap_or(line);
            clean(&shown.replace('\t', "    "), '?')
        })
        .collect()
}
