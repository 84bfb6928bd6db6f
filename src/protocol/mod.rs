//! The wire format shared by the server and the WASM client: JSON text frames, each an object
//! whose `type` field names the message. This module is the one source of truth for message
//! shapes, ids, error codes and limits; `docs/protocol.md` documents it for third-party clients.

pub mod rules;

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

macro_rules! integer_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

integer_id!(
    /// A user (guest or account), stable across connections.
    UserId
);
integer_id!(
    /// A room: public, private or direct.
    RoomId
);
integer_id!(
    /// A stored message, unique across rooms.
    MessageId
);
integer_id!(
    /// Position of a message in its room: 1, 2, 3, ... with no gaps.
    Seq
);

/// Milliseconds since the Unix epoch, UTC.
pub type Timestamp = i64;

/// Chosen by the sender for each message it sends; retrying with the same id is safe.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(transparent)]
pub struct ClientMsgId(pub String);

/// Limits the server enforces, announced in `welcome` so clients can warn before sending.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted message text, in Unicode scalar values (characters).
    pub max_message_chars: u32,
    /// Largest accepted WebSocket frame, in bytes.
    pub max_frame_bytes: u32,
    /// Most messages one `history` request returns.
    pub max_history_page: u32,
    /// Most missed messages one resume replays before it answers with a gap instead.
    pub max_resume: u32,
    /// The server sends `ping` this often (seconds) and closes a connection that sent
    /// nothing for two intervals; a client that hears nothing for as long may assume the
    /// connection is dead.
    pub heartbeat_s: u32,
    /// Most points one `draw` may carry.
    #[serde(default)]
    pub board_points_per_batch: u32,
    /// Most `draw` batches a connection may send per second (bursts of twice that).
    #[serde(default)]
    pub board_batches_per_s: u32,
}

/// Whiteboard coordinates run from 0 to this on both axes of a 4:3 board, so a drawing looks
/// the same at any canvas size. Stroke widths use the same unit.
pub const BOARD_SCALE: u16 = 10_000;

/// One batch of a stroke on a room's whiteboard: a polyline in one colour and width. A stroke
/// drawn over several batches repeats the previous batch's last point as its first.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BoardSegment {
    /// Position on the board: ascending, shared by segments, undos and clears.
    pub seq: i64,
    pub author: UserRef,
    /// The author's id for the stroke this batch belongs to.
    pub stroke: u32,
    /// `#rrggbb`.
    pub color: String,
    /// In board units (see [`BOARD_SCALE`]).
    pub width: u16,
    /// `[x, y]` pairs in board units.
    pub points: Vec<[u16; 2]>,
}

/// How the browser client reconnects. The server renders it into the page as JSON in
/// `<meta name="huddle-client">`, so the retry schedule is configured in one place and
/// applies before the first socket opens.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientSettings {
    /// The first retry waits a random time up to this (ms); each further one up to twice as long.
    pub reconnect_base_ms: u32,
    /// No retry waits longer than this (ms).
    pub reconnect_cap_ms: u32,
    /// Failed attempts in a row before the client stops and waits for a manual retry; 0 = never.
    pub reconnect_max_attempts: u32,
    /// Whether people may continue as guests (pick a name, no password).
    #[serde(default = "yes")]
    pub allow_guests: bool,
}

fn yes() -> bool {
    true
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            reconnect_base_ms: 500,
            reconnect_cap_ms: 10_000,
            reconnect_max_attempts: 0,
            allow_guests: true,
        }
    }
}

impl ClientSettings {
    /// Longest wait before attempt number `failures` + 1: base doubled per failure, capped.
    /// The client waits a uniform random time up to this (full jitter).
    pub fn backoff_bound_ms(&self, failures: u32) -> u32 {
        let doubled = u64::from(self.reconnect_base_ms) << failures.saturating_sub(1).min(20);
        doubled.min(u64::from(self.reconnect_cap_ms)) as u32
    }
}

/// `name` of the meta tag that carries [`ClientSettings`].
pub const CLIENT_SETTINGS_META: &str = "huddle-client";

/// Messages a history request returns when it names no limit, and a gap page holds.
pub const DEFAULT_PAGE: u32 = 50;

/// A user as others see them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserRef {
    pub id: UserId,
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum RoomKind {
    Public,
    Private,
    Direct,
}

/// A room as one user sees it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RoomInfo {
    pub id: RoomId,
    /// Display name; for a direct room, the other person's name.
    pub name: String,
    pub kind: RoomKind,
    #[serde(default)]
    pub topic: String,
    /// Members, online or not.
    pub members: u32,
    /// Distinct members with an open connection.
    pub online: u32,
    /// Newest sequence number in the room (0 when empty).
    pub last_seq: Seq,
    /// Messages from others after what this user has read (0 in the directory).
    #[serde(default)]
    pub unread: u32,
    /// Of those, the ones that mention this user (`@name`).
    #[serde(default)]
    pub mentions: u32,
    /// For direct rooms: the other person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<UserRef>,
    /// The receiving user's role (member in the directory).
    #[serde(default)]
    pub role: Role,
    /// Whether the user receiving this is a member.
    #[serde(default)]
    pub joined: bool,
    /// Any member may clear the room's whiteboard (not only owners and moderators).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub board_open: bool,
}

/// What a timeline entry is: a person's text or a system line.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    Text,
    /// "Ada joined"
    Join,
    /// "Ada left"
    Leave,
    /// "Ada created the room"
    Created,
    /// The author changed message `target_seq`; `text` is its new text.
    Edit,
    /// Message `target_seq` was deleted (by its author or a moderator: `author`).
    Delete,
    /// `target` was removed from the room by `author`.
    Kick,
    /// `target` was removed and may not rejoin.
    Ban,
}

impl MessageKind {
    /// Events that change an earlier message rather than showing as a line of their own.
    pub fn amends(self) -> bool {
        matches!(self, MessageKind::Edit | MessageKind::Delete)
    }
}

/// A member's powers in a room.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Created the room: moderates it.
    Owner,
    /// Deletes any message, kicks and bans.
    Moderator,
    #[default]
    Member,
}

impl Role {
    pub fn moderates(self) -> bool {
        matches!(self, Role::Owner | Role::Moderator)
    }
}

/// One stored timeline entry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ChatMessage {
    pub id: MessageId,
    pub room: RoomId,
    pub seq: Seq,
    pub kind: MessageKind,
    pub author: UserRef,
    pub text: String,
    pub ts: Timestamp,
    /// Present on the author's own messages so their pending copy can be matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<ClientMsgId>,
    /// On `edit` and `delete`: the message changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_seq: Option<Seq>,
    /// On `kick` and `ban`: who was removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<UserRef>,
    /// A text message changed since it was sent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub edited: bool,
    /// A text message that was deleted (its text is empty).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// Files sent with a text message (none once it is deleted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

/// A file sent with a message: fetched from `/files/{id}` (and `/files/{id}/thumb` when
/// `thumb`) by members of the room.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Attachment {
    pub id: String,
    /// The name it was uploaded with.
    pub name: String,
    pub size: u64,
    /// The type the server found in the bytes (never what the client claimed).
    pub mime: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// A small preview exists (images).
    #[serde(default)]
    pub thumb: bool,
}

/// Results per `search` page.
pub const SEARCH_PAGE: u32 = 20;

/// One search result: a live text message and where the query's words occur in it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SearchHit {
    pub room: RoomId,
    pub seq: Seq,
    pub author: UserRef,
    pub ts: Timestamp,
    pub text: String,
    /// Matched words as `[start, end)` offsets in characters (Unicode scalar values) of
    /// `text`, ascending and not overlapping. Clients mark them up as text, never as HTML.
    pub highlights: Vec<[u32; 2]>,
}

/// Messages a client sends.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// First frame of every connection: the protocol version the client speaks.
    Hello {
        version: u32,
        /// A session token, for clients that cannot send the cookie or an `Authorization`
        /// header with the upgrade.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// Ask for the public room directory; answered by `room_directory`.
    ListRooms {},
    /// Create a public room and join it; answered by `joined`.
    CreateRoom {
        name: String,
        #[serde(default)]
        topic: String,
        /// Invite-only: hidden from the directory; members are added by `invite`.
        #[serde(default)]
        private: bool,
        /// Any member may clear the whiteboard.
        #[serde(default)]
        board_open: bool,
    },
    /// Owners and moderators of a private room add someone; they get `joined`.
    Invite { room: RoomId, user: UserId },
    /// The owner (or an admin) makes a member a moderator, or a moderator a member again.
    SetRole { room: RoomId, user: UserId, role: Role },
    /// Become a member of a public room; answered by `joined`.
    Join { room: RoomId },
    /// Stop being a member; answered by `left`.
    Leave { room: RoomId },
    /// Change the text of one's own message; everyone gets an `edit` event.
    Edit { room: RoomId, seq: Seq, text: String },
    /// Delete one's own message, or any message as a moderator; everyone gets a `delete` event.
    Delete { room: RoomId, seq: Seq },
    /// Moderators: remove a member (`ban: true` also keeps them from rejoining).
    Kick {
        room: RoomId,
        user: UserId,
        #[serde(default)]
        ban: bool,
    },
    /// Open (or find) the direct room with another user; answered by `joined`.
    OpenDm { user: UserId },
    /// Start receiving a room the user is a member of. `after_seq` is the last sequence number
    /// the client has (omit it for a first visit): the server replays what came after, then live.
    Subscribe {
        room: RoomId,
        #[serde(default)]
        after_seq: Option<Seq>,
    },
    /// Older messages: those before `before_seq`, newest last; answered by `history`.
    History {
        room: RoomId,
        before_seq: Seq,
        #[serde(default)]
        limit: Option<u32>,
    },
    /// The messages around `seq` (half before, half after), to open a room at a search
    /// result; answered by `around`.
    Around { room: RoomId, seq: Seq },
    /// The newest messages that mention the user; answered by `mentions`.
    Mentions {},
    /// Full-text search over the text messages of the rooms the user is in, best matches
    /// first, [`SEARCH_PAGE`] per page; answered by `search_results`. Filters are optional.
    Search {
        query: String,
        #[serde(default)]
        room: Option<RoomId>,
        /// An author's name (any case).
        #[serde(default)]
        author: Option<String>,
        /// Only messages sent at or after this time (Unix ms).
        #[serde(default)]
        since: Option<Timestamp>,
        /// Only messages sent before this time (Unix ms).
        #[serde(default)]
        until: Option<Timestamp>,
        /// Page number, from 0.
        #[serde(default)]
        page: u32,
    },
    /// Post a message; answered by `ack` (or `error` with the same `client_msg_id`).
    /// `attachments` are ids of files this user uploaded to the room and not sent yet; with
    /// any, the text may be empty.
    Send {
        room: RoomId,
        client_msg_id: ClientMsgId,
        text: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attachments: Vec<String>,
    },
    /// The user started (`active: true`) or stopped typing in a room.
    Typing { room: RoomId, active: bool },
    /// The user has read the room up to `seq`; clears its unread count on every tab.
    Read { room: RoomId, seq: Seq },
    /// Answer to the server's `ping`; any frame counts as a sign of life, this one is free.
    Pong {},
    /// Show the room's whiteboard: answered by `board` (the picture so far), then live
    /// `drawn`, `stroke_undone` and `board_cleared` until `close_board` or leaving.
    OpenBoard { room: RoomId },
    /// Stop receiving the room's whiteboard.
    CloseBoard { room: RoomId },
    /// One batch of a stroke (see [`BoardSegment`]); everyone with the board open gets `drawn`.
    Draw {
        room: RoomId,
        stroke: u32,
        color: String,
        width: u16,
        points: Vec<[u16; 2]>,
    },
    /// Take back one's own newest stroke; everyone gets `stroke_undone`.
    UndoStroke { room: RoomId },
    /// Wipe the board (owners and moderators; both people of a direct room); everyone gets
    /// `board_cleared`.
    ClearBoard { room: RoomId },
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
        /// The signed-in user, or null when the client must first pick a name.
        me: Option<UserRef>,
        /// Rooms the user is a member of (empty when `me` is null).
        rooms: Vec<RoomInfo>,
        /// Distinct users online on the whole server.
        online: u32,
    },
    /// Answer to `list_rooms`: public rooms with member and online counts.
    RoomDirectory { rooms: Vec<RoomInfo> },
    /// The user became a member of a room (sent to all the user's connections).
    Joined { room: RoomInfo },
    /// The user is no longer a member of a room (sent to all the user's connections).
    Left { room: RoomId },
    /// The replay after `subscribe`, ascending `seq`, in one or more frames. `gap: true` means
    /// more was missed than one replay carries: this is the newest page and older messages
    /// must be fetched with `history`. `more: true` means another backlog frame follows.
    /// Live `message` frames follow the last one.
    Backlog {
        room: RoomId,
        messages: Vec<ChatMessage>,
        gap: bool,
        more: bool,
    },
    /// Answer to `history`, ascending `seq`; `has_more` when older messages exist.
    History {
        room: RoomId,
        messages: Vec<ChatMessage>,
        has_more: bool,
    },
    /// Answer to `around`: ascending `seq`, containing `seq` if it exists; `has_older` /
    /// `has_newer` when the room has messages beyond either end.
    Around {
        room: RoomId,
        seq: Seq,
        messages: Vec<ChatMessage>,
        has_older: bool,
        has_newer: bool,
    },
    /// Answer to `mentions`: newest first, `highlights` marking the mentions.
    Mentions { hits: Vec<SearchHit> },
    /// Answer to `search`.
    SearchResults {
        query: String,
        page: u32,
        hits: Vec<SearchHit>,
        has_more: bool,
    },
    /// A new timeline entry, live.
    Message { message: ChatMessage },
    /// The sender's message is durably stored (same answer for a retry with the same id).
    Ack {
        room: RoomId,
        client_msg_id: ClientMsgId,
        id: MessageId,
        seq: Seq,
        ts: Timestamp,
    },
    /// Who of the room's members is online now.
    /// In big rooms `online` lists only the first names by name; `total` counts everyone.
    Presence {
        room: RoomId,
        online: Vec<UserRef>,
        #[serde(default)]
        total: u32,
    },
    /// Distinct users online on the server.
    OnlineCount { online: u32 },
    /// Who is typing in a room now; clients leave themselves out when showing it.
    Typing { room: RoomId, users: Vec<UserRef> },
    /// The room's unread count for this user changed (after `read` on any tab).
    Unread { room: RoomId, unread: u32 },
    /// Heartbeat, every `limits.heartbeat_s`; answer with `pong`.
    Ping {},
    /// Answer to `open_board`: the stored picture, ascending `seq`, in one or more frames
    /// (`more: true` means another follows). Live events with a `seq` up to `upto` are
    /// already in it.
    Board {
        room: RoomId,
        segments: Vec<BoardSegment>,
        upto: i64,
        more: bool,
    },
    /// A batch of a stroke, live.
    Drawn { room: RoomId, segment: BoardSegment },
    /// `author` took back their stroke `stroke`.
    StrokeUndone {
        room: RoomId,
        seq: i64,
        author: UserId,
        stroke: u32,
    },
    /// Everything drawn before `seq` is gone.
    BoardCleared { room: RoomId, seq: i64, by: UserRef },
    /// A request was refused. The connection stays open unless the code says otherwise.
    Error {
        code: ErrorCode,
        message: String,
        /// Present when the refused request was a `send`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_msg_id: Option<ClientMsgId>,
        /// With `rate_limited`: how long to wait before sending again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u32>,
        /// Present when the refused request was a `subscribe`, so a client can tell which
        /// room to subscribe again after a transient refusal (`unavailable`, `rate_limited`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<RoomId>,
    },
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
    /// The request needs a signed-in user; pick a name first (`POST /api/guest`).
    NotSignedIn,
    /// The message text is empty after trimming.
    Empty,
    /// The text (or name) is longer than the limit.
    TooLong,
    /// The text contains control or invisible characters.
    BadCharacters,
    /// A name is too short or uses characters outside the allowed set.
    BadName,
    /// The name is already used by someone else.
    NameTaken,
    /// The user is not a member of that room.
    NotMember,
    /// No room with that id (or the user may not see it).
    NoSuchRoom,
    /// The sender is sending too fast.
    RateLimited,
    /// Log-in refused: no such account or a wrong password (deliberately not saying which).
    InvalidCredentials,
    /// Registration refused: the password is too short.
    WeakPassword,
    /// This server allows no guests; register or log in.
    GuestsDisabled,
    /// The session token in `hello` is invalid, expired or logged out.
    InvalidToken,
    /// The server failed; the request may be retried.
    Internal,
    /// The database is unreachable: nothing was stored; the client keeps the message and
    /// sends it again later.
    Unavailable,
    /// The user's role does not allow that (not the author, not a moderator).
    Forbidden,
    /// No such message in that room (or it was deleted).
    NoSuchMessage,
    /// The user is banned from that room.
    Banned,
    /// A whiteboard batch with a bad colour, width or points; nothing was stored or sent.
    BadStroke,
    /// An upload larger than `max_upload_bytes`.
    TooLarge,
    /// An upload whose bytes are not of an allowed type (images, PDF, ZIP, plain text).
    UnsupportedType,
    /// An image that cannot be decoded within the limits (size, dimensions, memory).
    BadImage,
    /// No such file, or not one this user may see or send.
    NoSuchFile,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::HelloRequired => "hello_required",
            ErrorCode::NotSignedIn => "not_signed_in",
            ErrorCode::Empty => "empty",
            ErrorCode::TooLong => "too_long",
            ErrorCode::BadCharacters => "bad_characters",
            ErrorCode::BadName => "bad_name",
            ErrorCode::NameTaken => "name_taken",
            ErrorCode::NotMember => "not_member",
            ErrorCode::NoSuchRoom => "no_such_room",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::WeakPassword => "weak_password",
            ErrorCode::GuestsDisabled => "guests_disabled",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NoSuchMessage => "no_such_message",
            ErrorCode::Banned => "banned",
            ErrorCode::BadStroke => "bad_stroke",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnsupportedType => "unsupported_type",
            ErrorCode::BadImage => "bad_image",
            ErrorCode::NoSuchFile => "no_such_file",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
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
        // Valid frames parse straight into the message; only a refused one goes through a
        // `Value` (its own allocations) to find the words for what is wrong with it.
        if let Ok(msg) = serde_json::from_str(text) {
            return Ok(msg);
        }
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
            client_msg_id: None,
            retry_after_ms: None,
            room: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_with_type_tag() {
        let hello = ClientMsg::Hello {
            version: 1,
            token: None,
        };
        assert_eq!(hello.encode(), r#"{"type":"hello","version":1}"#);
        assert_eq!(ClientMsg::decode(r#"{"type":"hello","version":1}"#), Ok(hello));
    }

    /// The fast path (straight into the message) refuses a repeated field; the frame still
    /// decodes as it always did through a `Value`, where the last one wins.
    #[test]
    fn a_repeated_field_decodes_with_its_last_value() {
        assert_eq!(
            ClientMsg::decode(r#"{"type":"hello","version":2,"version":1}"#),
            Ok(ClientMsg::Hello {
                version: 1,
                token: None
            })
        );
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

    #[test]
    fn reconnect_backoff_doubles_from_the_base_up_to_the_cap() {
        let settings = ClientSettings {
            reconnect_base_ms: 500,
            reconnect_cap_ms: 10_000,
            ..ClientSettings::default()
        };
        let bounds: Vec<u32> = (1..=7).map(|n| settings.backoff_bound_ms(n)).collect();
        assert_eq!(bounds, [500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
        assert_eq!(settings.backoff_bound_ms(u32::MAX), 10_000);
        assert_eq!(settings.backoff_bound_ms(0), 500);
    }
}
