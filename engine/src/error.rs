//! The engine's errors, and how each maps to a gRPC status. Every message
//! says what went wrong and what to do about it.

use tonic::{Code, Status};

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Unavailable(String),
}

impl EngineError {
    /// The same error with its sentence rewritten (e.g. to say which item
    /// of a call it is about).
    pub fn map_message(self, f: impl FnOnce(String) -> String) -> Self {
        match self {
            Self::InvalidArgument(m) => Self::InvalidArgument(f(m)),
            Self::NotFound(m) => Self::NotFound(f(m)),
            Self::FailedPrecondition(m) => Self::FailedPrecondition(f(m)),
            Self::PermissionDenied(m) => Self::PermissionDenied(f(m)),
            Self::AlreadyExists(m) => Self::AlreadyExists(f(m)),
            Self::ResourceExhausted(m) => Self::ResourceExhausted(f(m)),
            Self::Unavailable(m) => Self::Unavailable(f(m)),
        }
    }

    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::NotFound(_) => Code::NotFound,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::ResourceExhausted(_) => Code::ResourceExhausted,
            Self::Unavailable(_) => Code::Unavailable,
        }
    }
}

impl EngineError {
    /// The gRPC code as its name in the gRPC spec (`NOT_FOUND`), for an
    /// answer that lists refusals rather than failing.
    pub fn code_word(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) => "INVALID_ARGUMENT",
            Self::NotFound(_) => "NOT_FOUND",
            Self::FailedPrecondition(_) => "FAILED_PRECONDITION",
            Self::PermissionDenied(_) => "PERMISSION_DENIED",
            Self::AlreadyExists(_) => "ALREADY_EXISTS",
            Self::ResourceExhausted(_) => "RESOURCE_EXHAUSTED",
            Self::Unavailable(_) => "UNAVAILABLE",
        }
    }
}

impl From<EngineError> for Status {
    fn from(e: EngineError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

impl From<crate::domain::spec::SpecError> for EngineError {
    fn from(e: crate::domain::spec::SpecError) -> Self {
        use crate::domain::spec::SpecError;
        match e {
            SpecError::Invalid(_) => Self::InvalidArgument(e.to_string()),
            SpecError::TooLarge(_) => Self::ResourceExhausted(e.to_string()),
        }
    }
}

pub type EngineResult<T> = Result<T, EngineError>;
