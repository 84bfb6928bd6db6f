//! The wire format shared by the server and the WASM client: JSON text frames, each an object
//! whose `type` field names the message. This module is the one source of truth for message
//! shapes, ids, error codes and limits; `docs/protocol.md` documents it for third-party clients.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Version of this wire protocol. A client states it in `hello`; a mismatch is refused.
pub const PROTOCOL_VERSION: u32 = 1;

/// Identifies one WebSocket connection for its lifetime (unique within one server process).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(transparent)]
pub struct ConnectionId(pub u64);

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// Limits the server enforces, announced in `welcome` so clients can warn before sending.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted message text, in Unicode scalar values (characters).
    pub max_message_chars: u32,
    /// Largest accepted WebSocket frame, in bytes.
    pub max_frame_bytes: u32,
}

/// Messages a client sends.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// First frame of every connection: the protocol version the client speaks.
    Hello { version: u32 },
}

/// Messages the server sends.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// Reply to a valid `hello`: the connection is ready.
    Welcome {
        connection_id: ConnectionId,
        server_version: String,
        protocol_version: u32,
        limits: Limits,
    },
    /// A request was refused. The connection stays open unless the code says otherwise.
    Error { code: ErrorCode, message: String },
}

/// Stable, machine-readable error codes. Clients match on these, never on the message text.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame was not valid JSON, not a known message, or had the wrong fields.
    BadRequest,
    /// `hello.version` is not one this server speaks; the server closes the connection.
    UnsupportedVersion,
    /// A message other than `hello` arrived before the handshake finished.
    HelloRequired,
    /// The server failed; the request may be retried.
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::HelloRequired => "hello_required",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an incoming frame could not be turned into a [`ClientMsg`].
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError(pub String);

impl ClientMsg {
    /// Parses one text frame, with a human sentence on failure.
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| DecodeError(format!("The frame is not valid JSON ({e}).")))?;
        let kind = value.get("type").and_then(|t| t.as_str()).map(str::to_owned);
        serde_json::from_value(value).map_err(|e| match kind {
            Some(kind) => DecodeError(format!(
                "The message of type \"{kind}\" was not understood ({e})."
            )),
            None => DecodeError("The message has no \"type\" field naming what it is.".to_owned()),
        })
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("client messages always serialize")
    }
}

impl ServerMsg {
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        serde_json::from_str(text).map_err(|e| DecodeError(e.to_string()))
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("server messages always serialize")
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMsg::Error {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_with_type_tag() {
        let hello = ClientMsg::Hello { version: 1 };
        assert_eq!(hello.encode(), r#"{"type":"hello","version":1}"#);
        assert_eq!(ClientMsg::decode(r#"{"type":"hello","version":1}"#), Ok(hello));
    }

    #[test]
    fn error_codes_are_snake_case_on_the_wire() {
        let msg = ServerMsg::error(ErrorCode::UnsupportedVersion, "no");
        assert_eq!(
            msg.encode(),
            r#"{"type":"error","code":"unsupported_version","message":"no"}"#
        );
        assert_eq!(
            serde_json::to_string(&ErrorCode::BadRequest).unwrap(),
            "\"bad_request\""
        );
    }

    #[test]
    fn decode_explains_what_is_wrong() {
        assert!(ClientMsg::decode("not json")
            .unwrap_err()
            .0
            .contains("not valid JSON"));
        assert!(ClientMsg::decode(r#"{"type":"dance"}"#)
            .unwrap_err()
            .0
            .contains("\"dance\""));
        assert!(ClientMsg::decode(r#"{"version":1}"#)
            .unwrap_err()
            .0
            .contains("no \"type\""));
    }
}
