//! How objects are written to and read from either database: domain
//! values as JSON, events as encoded protobuf.

use opsdeck_proto::v1 as pb;
use prost::Message;
use serde::{Serialize, de::DeserializeOwned};

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
