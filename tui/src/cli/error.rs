//! What can go wrong in a command, and the exit code and words for each.
//!
//! Exit codes: 0 success; 1 when the engine refuses or cannot be reached
//! (or a waited-for run did not succeed); 2 for usage errors, as clap uses.

use std::io;

use tonic::{Code, Status};

use crate::client::ConnectError;

/// A command that did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line asks for something impossible (an unreadable spec
    /// file, …): exit 2, like clap's own usage errors.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The engine answered with an error.
    #[error("{}: {}", code_word(.status.code()), status_text(.status))]
    Engine {
        status: Status,
        hint: Option<String>,
    },
    /// stdout is gone or full.
    #[error("cannot write the output: {0}")]
    Output(#[from] io::Error),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            // The reader went away (`opsdeck events -f | head`): that is how
            // a pipe ends, not a failure.
            Self::Output(e) if e.kind() == io::ErrorKind::BrokenPipe => 0,
            Self::Connect(_) | Self::Engine { .. } | Self::Output(_) => 1,
        }
    }

    /// The error as a JSON document for stdout under `--output json`, so
    /// that a script reading stdout sees why there is no answer:
    /// `{"error": {"code": "NOT_FOUND", "message": "…", "hint": "…"}}`.
    /// `None` when there is nothing to say (a closed pipe).
    pub fn json(&self) -> Option<serde_json::Value> {
        let (code, message, hint) = match self {
            Self::Output(e) if e.kind() == io::ErrorKind::BrokenPipe => return None,
            Self::Usage(m) => ("USAGE", m.clone(), None),
            Self::Connect(e) => ("UNAVAILABLE", e.to_string(), Some(e.hint.clone())),
            Self::Engine { status, hint } => (
                code_word(status.code()),
                status_text(status).to_owned(),
                hint.clone(),
            ),
            Self::Output(e) => ("OUTPUT", e.to_string(), None),
        };
        let mut error = serde_json::json!({ "code": code, "message": message });
        if let Some(hint) = hint {
            error["hint"] = serde_json::Value::String(hint);
        }
        Some(serde_json::json!({ "error": error }))
    }

    /// The lines for stderr: `error: …`, then what to check, if anything.
    /// `None` when there is nothing to say (a closed pipe).
    pub fn report(&self) -> Option<String> {
        let hint = match self {
            Self::Output(e) if e.kind() == io::ErrorKind::BrokenPipe => return None,
            Self::Connect(e) => Some(e.hint.as_str()),
            Self::Engine { hint, .. } => hint.as_deref(),
            Self::Usage(_) | Self::Output(_) => None,
        };
        Some(match hint {
            Some(hint) => format!("error: {self}\nhint: {hint}"),
            None => format!("error: {self}"),
        })
    }
}

/// The message, or the code's own description when the engine sent none.
fn status_text(status: &Status) -> &str {
    match status.message() {
        "" => status.code().description(),
        message => message,
    }
}

/// A gRPC code as its name in the gRPC spec (`NOT_FOUND`), the words
/// operators search for and grpcurl shows.
pub fn code_word(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Advice for the codes where the fix is on this side, unless the engine's
/// message already gives it.
pub fn status_hint(status: &Status, has_token: bool, engine: &str) -> Option<String> {
    match status.code() {
        Code::Unauthenticated if has_token => {
            Some("the engine did not accept the token from --token / OPSDECK_TOKEN".to_owned())
        }
        Code::Unauthenticated if !status.message().contains("OPSDECK_TOKEN") => {
            Some("pass a token with --token TOKEN or set OPSDECK_TOKEN".to_owned())
        }
        Code::Unavailable => Some(format!(
            "the engine at {engine} is not serving (restarting, or a standby: the message \
             above says where the leader is)"
        )),
        Code::Unimplemented => Some(format!(
            "the engine at {engine} does not offer this call: is it an older opsdeckd?"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_read_as_code_words_and_message() {
        let e = CliError::Engine {
            status: Status::not_found("no run r1"),
            hint: None,
        };
        assert_eq!(e.report().unwrap(), "error: NOT_FOUND: no run r1");
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn an_empty_engine_message_falls_back_to_the_code_description() {
        let e = CliError::Engine {
            status: Status::new(Code::FailedPrecondition, ""),
            hint: None,
        };
        assert!(e.to_string().starts_with("FAILED_PRECONDITION: "), "{e}");
        assert!(e.to_string().len() > "FAILED_PRECONDITION: ".len());
    }

    #[test]
    fn hints_follow_the_error_line() {
        let status = Status::unauthenticated("no token");
        let hint = status_hint(&status, false, "unix:///x");
        let e = CliError::Engine { status, hint };
        assert_eq!(
            e.report().unwrap(),
            "error: UNAUTHENTICATED: no token\nhint: pass a token with --token TOKEN or set \
             OPSDECK_TOKEN"
        );
    }

    #[test]
    fn no_hint_repeats_what_the_engine_said() {
        let status = Status::unauthenticated("send a token (opsdeck --token / OPSDECK_TOKEN)");
        assert_eq!(status_hint(&status, false, "unix:///x"), None);
    }

    #[test]
    fn usage_errors_exit_2_and_a_closed_pipe_exits_quietly() {
        assert_eq!(CliError::Usage("bad".into()).exit_code(), 2);
        let pipe = CliError::Output(io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(pipe.exit_code(), 0);
        assert!(pipe.report().is_none());
        assert_eq!(
            CliError::Output(io::Error::other("disk full")).exit_code(),
            1
        );
    }
}
