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
    ResourceExhausted(String),
    #[error("{0}")]
    Unavailable(String),
}

impl EngineError {
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::NotFound(_) => Code::NotFound,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::ResourceExhausted(_) => Code::ResourceExhausted,
            Self::Unavailable(_) => Code::Unavailable,
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
