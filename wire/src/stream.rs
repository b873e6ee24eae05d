//! The stream protocol of `GET /ws`: the frames a client sends, the frames the server sends,
//! and the close codes, field for field those of the public Kite protocol (`kite-protocol`
//! 0.1, `ws_messages.rs`), so the public Kite CLI works against kite. The server
//! (`kite-http`) and `kite listen` both speak it through these types.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// Authentication failed.
pub const AUTH_FAILED: u16 = 4001;
/// A frame could not be understood.
pub const INVALID_MESSAGE: u16 = 4002;
/// Too many stream connections (for the team or the key).
pub const RATE_LIMITED: u16 = 4003;
/// The client does not keep up.
pub const SLOW_CONSUMER: u16 = 4004;
/// The protocol version this module speaks.
pub const VERSION: i64 = 1;

/// A frame a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// The first frame: who the client is and what it wants.
    Connect {
        /// Protocol version (1 when absent).
        #[serde(default = "default_version")]
        version: i64,
        /// The API key.
        #[serde(default)]
        token: String,
        /// The key's team, if the client names it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        team_id: Option<String>,
        /// `*`, `source:NAME` or `type:GLOB` (all events when absent); checked by the server.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scopes: Option<Value>,
        /// A name that keeps a durable cursor; checked by the server.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<Value>,
    },
    /// Everything up to `seq` was handled.
    Ack {
        /// The sequence number acknowledged.
        seq: i64,
    },
    /// A call (`hooks.list`, `keys.create`, ...); answered by a [`ServerFrame::Response`]
    /// with the same `id`.
    Request {
        /// The caller's id for the call.
        id: String,
        /// The method.
        method: String,
        /// Its parameters (an object; absent is null).
        #[serde(default)]
        params: Value,
    },
    /// A frame type this side does not know (ignored).
    #[serde(other)]
    Unknown,
}

fn default_version() -> i64 {
    VERSION
}

/// A frame the server sends. Read one with [`ServerFrame::parse`] (serde's tagged enums cannot
/// carry the event as raw text).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The connection is accepted; events after `last_seq` follow.
    Connected {
        /// Where the stream starts.
        last_seq: i64,
        /// The client's id: the one it sent, or one the server made for this connection.
        client_id: String,
    },
    /// The client's cursor points at events retention removed.
    CursorExpired {
        /// The oldest sequence number still available.
        oldest_available_seq: i64,
        /// What happened, for people.
        message: String,
    },
    /// One event.
    Event {
        /// Its sequence number on this instance.
        seq: i64,
        /// The stored CloudEvent, as it is stored (never re-encoded).
        event: Box<RawValue>,
    },
    /// The answer to a [`ClientFrame::Request`].
    Response {
        /// The request's id.
        id: String,
        /// Whether the call succeeded.
        ok: bool,
        /// The result, or `{"error": "..."}` when `ok` is false.
        payload: Value,
    },
    /// Something went wrong; a close with the same code follows.
    Error {
        /// A close code above.
        code: u16,
        /// What happened.
        message: String,
    },
}

impl ServerFrame {
    /// The frame as JSON text.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":4002,"message":"unencodable frame"}"#.to_string()
        })
    }
}

/// Why a server frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Not JSON, or not the shape of its type.
    #[error("invalid frame: {0}")]
    Invalid(#[from] serde_json::Error),
    /// A frame type this side does not know.
    #[error("unknown frame type {0:?}")]
    Unknown(String),
}

impl ServerFrame {
    /// Reads a frame the server sent; the event stays raw text.
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        #[derive(Deserialize)]
        struct Tag {
            #[serde(rename = "type")]
            ty: String,
        }
        #[derive(Deserialize)]
        struct Event {
            seq: i64,
            event: Box<RawValue>,
        }
        #[derive(Deserialize)]
        struct Connected {
            last_seq: i64,
            #[serde(default)]
            client_id: String,
        }
        #[derive(Deserialize)]
        struct CursorExpired {
            oldest_available_seq: i64,
            #[serde(default)]
            message: String,
        }
        #[derive(Deserialize)]
        struct Response {
            id: String,
            ok: bool,
            #[serde(default)]
            payload: Value,
        }
        #[derive(Deserialize)]
        struct Error {
            code: u16,
            #[serde(default)]
            message: String,
        }
        let tag: Tag = serde_json::from_str(text)?;
        Ok(match tag.ty.as_str() {
            "event" => {
                let e: Event = serde_json::from_str(text)?;
                ServerFrame::Event {
                    seq: e.seq,
                    event: e.event,
                }
            }
            "connected" => {
                let c: Connected = serde_json::from_str(text)?;
                ServerFrame::Connected {
                    last_seq: c.last_seq,
                    client_id: c.client_id,
                }
            }
            "cursor_expired" => {
                let c: CursorExpired = serde_json::from_str(text)?;
                ServerFrame::CursorExpired {
                    oldest_available_seq: c.oldest_available_seq,
                    message: c.message,
                }
            }
            "response" => {
                let r: Response = serde_json::from_str(text)?;
                ServerFrame::Response {
                    id: r.id,
                    ok: r.ok,
                    payload: r.payload,
                }
            }
            "error" => {
                let e: Error = serde_json::from_str(text)?;
                ServerFrame::Error {
                    code: e.code,
                    message: e.message,
                }
            }
            other => return Err(FrameError::Unknown(other.to_string())),
        })
    }
}

/// The text of [`ServerFrame::Event`] for an event already held as JSON text (the stored
/// event, valid since it was stored), without parsing it again.
pub fn event_frame(seq: i64, event_json: &str) -> String {
    format!(r#"{{"type":"event","seq":{seq},"event":{event_json}}}"#)
}

impl ClientFrame {
    /// The frame as JSON text.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_their_wire_form() {
        let c: ClientFrame = serde_json::from_str(
            r#"{"type":"connect","token":"k","scopes":["*"],"client_id":"c"}"#,
        )
        .unwrap();
        assert!(matches!(c, ClientFrame::Connect { version: 1, ref token, .. } if token == "k"));
        let ack: ClientFrame = serde_json::from_str(r#"{"type":"ack","seq":7}"#).unwrap();
        assert_eq!(ack, ClientFrame::Ack { seq: 7 });
        let other: ClientFrame = serde_json::from_str(r#"{"type":"ping"}"#).unwrap();
        assert_eq!(other, ClientFrame::Unknown);
        let ev = ServerFrame::Event {
            seq: 3,
            event: RawValue::from_string(r#"{"id":"x"}"#.into()).unwrap(),
        };
        assert_eq!(
            ev.to_text(),
            r#"{"type":"event","seq":3,"event":{"id":"x"}}"#
        );
        assert_eq!(event_frame(3, r#"{"id":"x"}"#), ev.to_text());
        let back = ServerFrame::parse(&ev.to_text()).unwrap();
        assert!(
            matches!(back, ServerFrame::Event { seq: 3, ref event } if event.get() == r#"{"id":"x"}"#)
        );
        assert!(matches!(
            ServerFrame::parse(r#"{"type":"error","code":4001,"message":"no"}"#).unwrap(),
            ServerFrame::Error { code: 4001, .. }
        ));
        assert!(ServerFrame::parse(r#"{"type":"ping"}"#).is_err());
        assert_eq!(
            ServerFrame::Connected {
                last_seq: 5,
                client_id: "c".into()
            }
            .to_text(),
            r#"{"type":"connected","last_seq":5,"client_id":"c"}"#
        );
        let req: ClientFrame =
            serde_json::from_str(r#"{"type":"request","id":"1","method":"keys.list"}"#).unwrap();
        assert!(
            matches!(req, ClientFrame::Request { ref method, ref params, .. } if method == "keys.list" && params.is_null())
        );
    }
}
