//! Hostile input: owns the one table test that replays every case of `tests/suite/hostile/corpus.toml`
//! (broken JSON, wrong types, huge numbers, deep nesting, binary, invalid UTF-8 and oversize
//! frames, invisible and control characters, markup, SQL-looking strings, forged identities,
//! rooms and seqs that are not the attacker's) against one real server, and checks for each that
//! it gets its expected answer or close code, that other clients keep working and that nothing
//! is stored. The corpus header documents the case format.

use crate::common::{Socket, TestServer};
use futures::{SinkExt, StreamExt};
use huddle::protocol::{ClientMsg, ClientMsgId, RoomId, RoomKind, ServerMsg, UserRef};
use serde::Deserialize;
use serde_json::Value;
use sqlx::{sqlite::SqliteConnectOptions, ConnectOptions, Row, SqliteConnection};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control as OpCtl, Data as OpData, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
use tokio_tungstenite::tungstenite::{Bytes, Message};

const CORPUS_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/suite/hostile/corpus.toml");

/// Guard for one wait inside a case: a missing answer becomes a reported outcome, not a hang.
const CASE_WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// The corpus format (see the header of corpus.toml)

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Corpus {
    server: ServerLimits,
    case: Vec<Case>,
}

/// Limits the corpus is written against; the server is started with them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerLimits {
    max_message_chars: u32,
    max_frame_bytes: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    category: String,
    #[serde(default)]
    phase: Phase,
    cookie: Option<String>,
    send: Send,
    expect: Expect,
    stores: Option<Stores>,
    known_bug: Option<String>,
    #[allow(dead_code)] // for readers of the corpus
    note: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
enum Phase {
    /// Signed in, after hello, subscribed to general.
    #[default]
    Member,
    /// The attacker's cookie, before hello.
    Raw,
    /// No (or a forged) cookie, after hello.
    Anonymous,
    /// POST /api/guest instead of a WebSocket frame.
    Http,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Send {
    text: Option<Payload>,
    binary: Option<Payload>,
    frames: Option<Vec<RawFrame>>,
    pad_to: Option<usize>,
    guest_body: Option<String>,
}

/// Bytes described as one string or as parts.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum Payload {
    Whole(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum Part {
    Text(String),
    Repeat { repeat: String, count: usize },
    Hex { hex: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFrame {
    opcode: String,
    #[serde(default = "yes")]
    fin: bool,
    #[serde(default)]
    rsv1: bool,
    data: Option<Payload>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    error: Option<String>,
    close: Option<u16>,
    reply: Option<String>,
    #[serde(default)]
    ok: bool,
    #[serde(default)]
    silent: bool,
    http: Option<u16>,
    code: Option<String>,
    /// The error must carry this `client_msg_id`.
    client_msg_id: Option<String>,
    /// For `ok`: the text as stored and delivered, when not the frame's `text` field.
    stored_text: Option<Payload>,
    /// Dotted path in the answer -> expected value, compared as text.
    #[serde(default)]
    fields: BTreeMap<String, String>,
}

/// Rows a case may add.
#[derive(Deserialize, Default, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Stores {
    #[serde(default)]
    users: i64,
    #[serde(default)]
    rooms: i64,
    #[serde(default)]
    memberships: i64,
    #[serde(default)]
    messages: i64,
}

impl Case {
    /// Rows this case may add: explicit, or one message for an accepted send.
    fn stores(&self) -> Stores {
        self.stores.unwrap_or(Stores {
            messages: i64::from(self.expect.ok),
            ..Stores::default()
        })
    }

    /// Catches corpus mistakes before anything runs.
    fn validate(&self) {
        let name = &self.name;
        let send = &self.send;
        let forms = [
            send.text.is_some(),
            send.binary.is_some(),
            send.frames.is_some(),
            send.guest_body.is_some(),
        ];
        assert_eq!(
            forms.iter().filter(|f| **f).count(),
            1,
            "{name}: send needs exactly one form"
        );
        assert!(
            send.pad_to.is_none() || send.text.is_some(),
            "{name}: pad_to goes with text"
        );
        let e = &self.expect;
        if self.phase == Phase::Http {
            assert!(
                send.guest_body.is_some() && e.http.is_some() && e.code.is_some(),
                "{name}: http phase needs guest_body, expect.http, expect.code"
            );
        } else {
            assert!(
                send.guest_body.is_none() && e.http.is_none(),
                "{name}: guest_body/http only in the http phase"
            );
        }
        let outcomes = [
            e.error.is_some(),
            e.reply.is_some(),
            e.ok,
            e.silent,
            e.http.is_some(),
        ];
        assert!(
            outcomes.iter().filter(|o| **o).count() <= 1,
            "{name}: expect at most one of error, reply, ok, silent, http"
        );
        assert!(
            outcomes.iter().any(|o| *o) || e.close.is_some(),
            "{name}: expect names no outcome"
        );
        assert!(
            !(e.close.is_some() && (e.reply.is_some() || e.ok || e.silent)),
            "{name}: an accepted request cannot also close"
        );
        assert!(
            e.stored_text.is_none() || e.ok,
            "{name}: stored_text goes with ok"
        );
        assert!(
            self.cookie.is_none() || self.phase == Phase::Anonymous,
            "{name}: cookie only in the anonymous phase"
        );
        assert!(
            !(self.phase == Phase::Anonymous && e.reply.as_deref() == Some("welcome")),
            "{name}: the anonymous follow-up is a hello, so a case there cannot expect welcome"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering a case into frames

/// Values known only at run time, used as `{{name}}` in the corpus.
struct Vars(HashMap<&'static str, String>);

impl Vars {
    fn substitute(&self, text: &str, case: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .unwrap_or_else(|| panic!("{case}: unclosed {{{{ in corpus"));
            let key = &after[..end];
            let value = self
                .0
                .get(key)
                .unwrap_or_else(|| panic!("{case}: unknown placeholder {{{{{key}}}}}"));
            out.push_str(value);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        out
    }

    fn bytes(&self, payload: &Payload, case: &str) -> Vec<u8> {
        match payload {
            Payload::Whole(text) => self.substitute(text, case).into_bytes(),
            Payload::Parts(parts) => parts
                .iter()
                .flat_map(|part| match part {
                    Part::Text(text) => self.substitute(text, case).into_bytes(),
                    Part::Repeat { repeat, count } => repeat.repeat(*count).into_bytes(),
                    Part::Hex { hex } => hex::decode(hex).unwrap_or_else(|e| panic!("{case}: bad hex: {e}")),
                })
                .collect(),
        }
    }
}

/// The frames of a case, and the whole message they carry (for checking what was stored).
struct Rendered {
    frames: Vec<Message>,
    message: Vec<u8>,
}

fn render(case: &Case, vars: &Vars) -> Rendered {
    let name = case.name.as_str();
    let send = &case.send;
    if let Some(text) = &send.text {
        let mut bytes = vars.bytes(text, name);
        if let Some(target) = send.pad_to {
            assert!(bytes.len() <= target, "{name}: already longer than pad_to");
            bytes.resize(target, b' ');
        }
        let frame = match String::from_utf8(bytes.clone()) {
            Ok(text) => Message::text(text),
            // Invalid UTF-8 cannot be a `Message::Text`: send the raw frame.
            Err(_) => Message::Frame(Frame::message(bytes.clone(), OpCode::Data(OpData::Text), true)),
        };
        return Rendered {
            frames: vec![frame],
            message: bytes,
        };
    }
    if let Some(binary) = &send.binary {
        let bytes = vars.bytes(binary, name);
        return Rendered {
            frames: vec![Message::binary(bytes.clone())],
            message: bytes,
        };
    }
    let raw = send.frames.as_ref().expect("validated");
    let mut message = Vec::new();
    let frames = raw
        .iter()
        .map(|frame| {
            let data = frame
                .data
                .as_ref()
                .map(|d| vars.bytes(d, name))
                .unwrap_or_default();
            let opcode = match frame.opcode.as_str() {
                "text" => OpCode::Data(OpData::Text),
                "binary" => OpCode::Data(OpData::Binary),
                "continue" => OpCode::Data(OpData::Continue),
                "ping" => OpCode::Control(OpCtl::Ping),
                other => match other.strip_prefix("reserved_").and_then(|n| n.parse().ok()) {
                    Some(n) => OpCode::Data(OpData::Reserved(n)),
                    None => panic!("{name}: unknown opcode {other}"),
                },
            };
            if matches!(opcode, OpCode::Data(_)) {
                message.extend_from_slice(&data);
            }
            let header = FrameHeader {
                is_final: frame.fin,
                rsv1: frame.rsv1,
                opcode,
                ..FrameHeader::default()
            };
            Message::Frame(Frame::from_payload(header, Bytes::from(data)))
        })
        .collect();
    Rendered { frames, message }
}

// ---------------------------------------------------------------------------------------------
// Reading what the server says

enum Incoming {
    Json(Value),
    Closed(Option<u16>),
    Dropped(String),
    TimedOut,
}

async fn next_incoming(socket: &mut Socket) -> Incoming {
    loop {
        let frame = match tokio::time::timeout(CASE_WAIT, socket.next()).await {
            Err(_) => return Incoming::TimedOut,
            Ok(None) => return Incoming::Dropped("stream ended".into()),
            Ok(Some(Err(error))) => return Incoming::Dropped(error.to_string()),
            Ok(Some(Ok(frame))) => frame,
        };
        match frame {
            Message::Text(text) => {
                let value = serde_json::from_str(text.as_str())
                    .unwrap_or_else(|_| serde_json::json!({ "type": "<not JSON>", "raw": text.as_str() }));
                return Incoming::Json(value);
            }
            Message::Binary(_) => return Incoming::Json(serde_json::json!({ "type": "<binary frame>" })),
            Message::Close(close) => return Incoming::Closed(close.map(|c| u16::from(c.code))),
            _ => continue, // ping/pong
        }
    }
}

fn kind(value: &Value) -> &str {
    value["type"].as_str().unwrap_or("<no type>")
}

/// Broadcasts that may arrive at any time and say nothing about the case.
fn is_noise(value: &Value) -> bool {
    matches!(
        kind(value),
        "presence" | "online_count" | "typing" | "ping" | "message"
    )
}

/// The value at a dotted path, as text (strings without quotes).
fn field(value: &Value, path: &str) -> Option<String> {
    let mut at = value;
    for key in path.split('.') {
        at = match key.parse::<usize>() {
            Ok(index) if at.is_array() => at.get(index)?,
            _ => at.get(key)?,
        };
    }
    Some(match at {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// How the attacker's connection ended, if it did.
enum End {
    Closed(Option<u16>),
    Dropped(String),
    TimedOut,
}

/// What the attacker's connection saw after the case's frames.
struct Seen {
    /// Answers (not broadcast noise) before the follow-up request's answer.
    answers: Vec<Value>,
    end: Option<End>,
}

impl Seen {
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(first) = self.answers.first() {
            parts.push(describe_answer(first));
        }
        match &self.end {
            None if parts.is_empty() => parts.push("silent".to_owned()),
            None => {}
            Some(End::Closed(Some(code))) => parts.push(format!("close {code}")),
            Some(End::Closed(None)) => parts.push("close without a status code".to_owned()),
            Some(End::Dropped(why)) => parts.push(format!("dropped without a close frame ({why})")),
            Some(End::TimedOut) if parts.is_empty() => parts.push("no answer within 5 s".to_owned()),
            Some(End::TimedOut) => parts.push("then nothing within 5 s".to_owned()),
        }
        parts.join(", ")
    }
}

fn describe_answer(answer: &Value) -> String {
    match kind(answer) {
        "error" => format!("error {}", answer["code"].as_str().unwrap_or("?")),
        "ack" => "ack".to_owned(),
        other => format!("reply {other}"),
    }
}

fn describe_expect(expect: &Expect) -> String {
    if let Some(status) = expect.http {
        return format!("http {status} {}", expect.code.as_deref().unwrap_or("?"));
    }
    let mut parts = Vec::new();
    if let Some(code) = &expect.error {
        parts.push(format!("error {code}"));
    }
    match expect.reply.as_deref() {
        Some("ack") => parts.push("ack".to_owned()),
        Some(other) => parts.push(format!("reply {other}")),
        None => {}
    }
    if expect.ok {
        parts.push("ack".to_owned());
    }
    if let Some(code) = expect.close {
        parts.push(format!("close {code}"));
    }
    if parts.is_empty() {
        parts.push("silent".to_owned());
    }
    parts.join(", ")
}

// ---------------------------------------------------------------------------------------------
// The database

/// Row counts and integrity facts, compared before and after each case.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    users: i64,
    rooms: i64,
    memberships: i64,
    messages: i64,
    /// Read marks past their room's last seq (must stay 0).
    marks_past_end: i64,
    /// Rooms whose last_seq is not their message count: a gap or a lost row (must stay 0).
    rooms_with_gaps: i64,
    /// Every other user's read marks: the attacker must not move them.
    others_marks: String,
}

async fn snapshot(db: &mut SqliteConnection, attacker: i64) -> Snapshot {
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM users) AS users,
                (SELECT COUNT(*) FROM rooms) AS rooms,
                (SELECT COUNT(*) FROM memberships) AS memberships,
                (SELECT COUNT(*) FROM messages) AS messages,
                (SELECT COUNT(*) FROM memberships m JOIN rooms r ON r.id = m.room_id
                   WHERE m.last_read_seq > r.last_seq) AS marks_past_end,
                (SELECT COUNT(*) FROM rooms r
                   WHERE r.last_seq != (SELECT COUNT(*) FROM messages m WHERE m.room_id = r.id)) AS rooms_with_gaps,
                (SELECT group_concat(mark, ',') FROM
                   (SELECT room_id || ':' || user_id || ':' || last_read_seq AS mark FROM memberships
                     WHERE user_id != ? ORDER BY room_id, user_id)) AS others_marks",
    )
    .bind(attacker)
    .fetch_one(db)
    .await
    .expect("read the database");
    Snapshot {
        users: row.get("users"),
        rooms: row.get("rooms"),
        memberships: row.get("memberships"),
        messages: row.get("messages"),
        marks_past_end: row.get("marks_past_end"),
        rooms_with_gaps: row.get("rooms_with_gaps"),
        others_marks: row.get::<Option<String>, _>("others_marks").unwrap_or_default(),
    }
}

fn compare_snapshots(before: &Snapshot, after: &Snapshot, allowed: Stores, problems: &mut Vec<String>) {
    let added = Stores {
        users: after.users - before.users,
        rooms: after.rooms - before.rooms,
        memberships: after.memberships - before.memberships,
        messages: after.messages - before.messages,
    };
    if added != allowed {
        problems.push(format!("database rows added {added:?}, expected {allowed:?}"));
    }
    if after.marks_past_end != 0 {
        problems.push(format!(
            "{} read mark(s) past their room's last seq",
            after.marks_past_end
        ));
    }
    if after.rooms_with_gaps != 0 {
        problems.push(format!("{} room(s) whose seq has gaps", after.rooms_with_gaps));
    }
    if after.others_marks != before.others_marks {
        problems.push("another user's read marks changed".to_owned());
    }
}

// ---------------------------------------------------------------------------------------------
// The world the cases run in

/// One server with its cast: the attacker (a fresh connection per case), a bystander
/// subscribed to general, a prober whose message must reach the bystander after every case.
struct World {
    server: TestServer,
    vars: Vars,
    db: SqliteConnection,
    attacker: UserRef,
    attacker_cookie: String,
    general: RoomId,
    live_dm: RoomId,
    bystander: Socket,
    prober: Socket,
    probes: usize,
}

/// What a case ended as.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Pass,
    Fail,
    /// Marked `known_bug` and failing, as expected.
    ExpectedFailure,
    /// Marked `known_bug` but passing: the marker is stale.
    UnexpectedPass,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::ExpectedFailure => "known bug",
            Status::UnexpectedPass => "FIXED?",
        }
    }
}

struct Outcome {
    name: String,
    category: String,
    expected: String,
    observed: String,
    problems: Vec<String>,
    status: Status,
}

async fn open_dm(client: &mut crate::common::Client, peer: &UserRef) -> RoomId {
    client.send(ClientMsg::OpenDm { user: peer.id }).await;
    client
        .next(|m| match m {
            ServerMsg::Joined { room } if room.kind == RoomKind::Direct => Some(room.id),
            ServerMsg::Error { code, message, .. } => panic!("open_dm refused: {code} {message}"),
            _ => None,
        })
        .await
}

/// Sends a text and returns the stored message's id.
async fn say(client: &mut crate::common::Client, room: RoomId, id: &str, text: &str) -> i64 {
    client
        .send(ClientMsg::Send {
            room,
            client_msg_id: ClientMsgId(id.to_owned()),
            text: text.to_owned(),
            attachments: Vec::new(),
        })
        .await;
    client
        .next(|m| match m {
            ServerMsg::Ack {
                client_msg_id,
                id: message,
                ..
            } if client_msg_id.0 == id => Some(message.0),
            ServerMsg::Error { code, message, .. } => panic!("send {id} refused: {code} {message}"),
            _ => None,
        })
        .await
}

impl World {
    async fn start(limits: &ServerLimits) -> World {
        let max_chars = limits.max_message_chars.to_string();
        let max_frame = limits.max_frame_bytes.to_string();
        let server = TestServer::start_with(&[
            ("HUDDLE_MAX_MESSAGE_CHARS", max_chars.as_str()),
            ("HUDDLE_MAX_FRAME_BYTES", max_frame.as_str()),
            // Abuse limits stay loose (the harness default): one fresh connection per case.
        ]);
        let (_socket, welcome) = server.connect().await;
        let ServerMsg::Welcome {
            limits: announced, ..
        } = welcome
        else {
            unreachable!()
        };
        assert_eq!(
            (announced.max_message_chars, announced.max_frame_bytes),
            (limits.max_message_chars, limits.max_frame_bytes),
            "the server runs with the corpus's limits"
        );

        // Two other users with a direct room (and a secret in it), and a public room the
        // attacker is not in.
        let mut victim_a = server.client("VictimA").await;
        let victim_b = server.client("VictimB").await;
        let general = victim_a.room("general");
        let dm_others = open_dm(&mut victim_a, &victim_b.me).await;
        say(&mut victim_a, dm_others, "secret-1", "a secret between A and B").await;
        say(&mut victim_a, general, "shared-1", "VictimA's message").await;
        let side = victim_a.create_room("side").await;

        // The attacker, with one message of their own ("mine-1") for the idempotency cases.
        let attacker_cookie = server.guest("Mallory").await;
        let mut mallory = server.connect_as(&attacker_cookie).await;
        let attacker = mallory.me.clone();
        let mine_1 = say(&mut mallory, general, "mine-1", "Mallory's original message").await;
        drop(mallory);

        // The prober shares a direct room with the attacker: reading its history is the
        // follow-up request that proves an attacker connection still works.
        let mut prober = server.client("Prober").await;
        let live_dm = open_dm(&mut prober, &attacker).await;
        let mut bystander = server.client("Bystander").await;
        bystander.subscribe(general, None).await;

        let vars = Vars(HashMap::from([
            ("general", general.0.to_string()),
            ("side", side.0.to_string()),
            ("dm_others", dm_others.0.to_string()),
            ("live_dm", live_dm.0.to_string()),
            ("missing_room", "1000000".to_owned()),
            ("attacker", attacker.id.0.to_string()),
            ("victim", victim_a.me.id.0.to_string()),
            ("mine_1_id", mine_1.to_string()),
        ]));
        drop((victim_a, victim_b));
        let db = SqliteConnectOptions::new()
            .filename(server.database())
            .read_only(true)
            .connect()
            .await
            .expect("open the database read-only");
        World {
            server,
            vars,
            db,
            attacker,
            attacker_cookie,
            general,
            live_dm,
            bystander: bystander.socket,
            prober: prober.socket,
            probes: 0,
        }
    }

    /// Opens a WebSocket, with a Cookie header if given.
    async fn open(&self, cookie: Option<&str>) -> Result<Socket, String> {
        let mut request = format!("ws://{}/ws", self.server.addr)
            .into_client_request()
            .expect("request");
        if let Some(cookie) = cookie {
            let value = cookie.parse().map_err(|e| format!("cookie header: {e}"))?;
            request.headers_mut().insert("Cookie", value);
        }
        let (socket, _) = tokio::time::timeout(CASE_WAIT, tokio_tungstenite::connect_async(request))
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| format!("connect failed: {e}"))?;
        Ok(socket)
    }

    /// Sends `frame` and reads until `done` accepts an answer; other answers are skipped.
    async fn exchange(
        socket: &mut Socket,
        frame: String,
        done: impl Fn(&Value) -> bool,
    ) -> Result<Value, String> {
        socket
            .send(Message::text(frame))
            .await
            .map_err(|e| e.to_string())?;
        loop {
            match next_incoming(socket).await {
                Incoming::Json(value) if done(&value) => return Ok(value),
                Incoming::Json(_) => continue,
                Incoming::Closed(code) => return Err(format!("closed ({code:?})")),
                Incoming::Dropped(why) => return Err(format!("dropped ({why})")),
                Incoming::TimedOut => return Err("timed out".to_owned()),
            }
        }
    }

    /// A connection in the state the case's phase names.
    async fn connect_for(&self, case: &Case) -> Result<Socket, String> {
        let hello = r#"{"type":"hello","version":1}"#.to_owned();
        match case.phase {
            Phase::Raw => self.open(Some(&self.attacker_cookie)).await,
            Phase::Anonymous => {
                let mut socket = self.open(case.cookie.as_deref()).await?;
                Self::exchange(&mut socket, hello, |v| kind(v) == "welcome").await?;
                Ok(socket)
            }
            Phase::Member => {
                let mut socket = self.open(Some(&self.attacker_cookie)).await?;
                let welcome = Self::exchange(&mut socket, hello, |v| kind(v) == "welcome").await?;
                if field(&welcome, "me.id") != Some(self.attacker.id.0.to_string()) {
                    return Err(format!("welcome is not for the attacker: {welcome}"));
                }
                let subscribe = format!(r#"{{"type":"subscribe","room":{}}}"#, self.general.0);
                Self::exchange(&mut socket, subscribe, |v| {
                    kind(v) == "backlog" && v["more"] == Value::Bool(false)
                })
                .await?;
                Ok(socket)
            }
            Phase::Http => unreachable!("no socket in the http phase"),
        }
    }

    /// The request sent after the case: its answer proves the connection still works and marks
    /// the end of the case's own answers (the server answers in order).
    fn follow_up(&self, phase: Phase) -> Vec<String> {
        let history = format!(
            r#"{{"type":"history","room":{},"before_seq":9223372036854775807,"limit":1}}"#,
            self.live_dm.0
        );
        let hello = r#"{"type":"hello","version":1}"#.to_owned();
        match phase {
            Phase::Member => vec![history],
            // Greet first; the welcome this produces is removed from the case's answers.
            Phase::Raw => vec![hello, history],
            Phase::Anonymous => vec![hello],
            Phase::Http => vec![],
        }
    }

    fn is_follow_up_answer(&self, phase: Phase, value: &Value) -> bool {
        match phase {
            Phase::Anonymous => kind(value) == "welcome",
            _ => kind(value) == "history" && value["room"] == serde_json::json!(self.live_dm.0),
        }
    }

    /// Reads the case's answers up to the follow-up's answer, a close, or the time limit.
    async fn collect(&self, socket: &mut Socket, phase: Phase) -> Seen {
        let mut answers: Vec<Value> = Vec::new();
        let end = loop {
            match next_incoming(socket).await {
                Incoming::Json(value) if is_noise(&value) => continue,
                Incoming::Json(value) if self.is_follow_up_answer(phase, &value) => break None,
                Incoming::Json(value) => answers.push(value),
                Incoming::Closed(code) => break Some(End::Closed(code)),
                Incoming::Dropped(why) => break Some(End::Dropped(why)),
                Incoming::TimedOut => break Some(End::TimedOut),
            }
        };
        if phase == Phase::Raw && end.is_none() && answers.last().is_some_and(|a| kind(a) == "welcome") {
            answers.pop(); // the follow-up hello's welcome
        }
        // A replay may span several backlog frames: one answer.
        answers.dedup_by(|later, earlier| kind(later) == "backlog" && kind(earlier) == "backlog");
        Seen { answers, end }
    }

    async fn run(&mut self, case: &Case) -> Outcome {
        let expected = describe_expect(&case.expect);
        let mut problems = Vec::new();
        let before = snapshot(&mut self.db, self.attacker.id.0).await;

        let (observed, mut socket, first) = if case.phase == Phase::Http {
            (self.run_http(case).await, None, None)
        } else {
            self.run_socket(case, &mut problems).await
        };
        // For an accepted send: its ack and (client_msg_id, text) as they must be stored.
        let accepted = match (case.expect.ok, first) {
            (true, Some(ack)) if kind(&ack) == "ack" => Some((ack, expected_send(case, &self.vars))),
            _ => None,
        };

        let after = snapshot(&mut self.db, self.attacker.id.0).await;
        compare_snapshots(&before, &after, case.stores(), &mut problems);
        if let Some((ack, sent)) = &accepted {
            self.check_stored(ack, sent, &mut problems).await;
        }

        // Other clients keep working: a third client's message reaches the bystander, and
        // only the accepted case's message came before it.
        self.probes += 1;
        let probe_text = format!("probe {} after {}", self.probes, case.name);
        match self.probe(&probe_text).await {
            Ok(before_probe) => self.check_bystander(accepted.as_ref(), &before_probe, &mut problems),
            Err(why) => problems.push(format!("the bystander did not get the prober's message: {why}")),
        }
        if let Some(socket) = socket.as_mut() {
            if case.phase == Phase::Member {
                if let Err(why) = wait_for_message(socket, &probe_text).await {
                    problems.push(format!(
                        "the attacker's connection stopped receiving live messages in general: {why}"
                    ));
                }
            }
            if let Err(why) = close(socket).await {
                problems.push(format!("the connection did not close cleanly: {why}"));
            }
        }

        let passed = observed == expected && problems.is_empty();
        let status = match (passed, case.known_bug.is_some()) {
            (true, false) => Status::Pass,
            (false, false) => Status::Fail,
            (false, true) => Status::ExpectedFailure,
            (true, true) => Status::UnexpectedPass,
        };
        Outcome {
            name: case.name.clone(),
            category: case.category.clone(),
            expected,
            observed,
            problems,
            status,
        }
    }

    /// POST /api/guest with the case's body: "http <status> <code>".
    async fn run_http(&self, case: &Case) -> String {
        let body = self
            .vars
            .substitute(case.send.guest_body.as_deref().expect("validated"), &case.name);
        let response = reqwest::Client::new()
            .post(self.server.url("/api/guest"))
            .header("content-type", "application/json")
            .body(body)
            .timeout(CASE_WAIT)
            .send()
            .await;
        match response {
            Err(error) => format!("request failed: {error}"),
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                match serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| field(&v, "code"))
                {
                    Some(code) => format!("http {status} {code}"),
                    None => format!("http {status} (not a JSON error: {text:?})"),
                }
            }
        }
    }

    /// Sends the case over a fresh connection. Returns the observed outcome, the socket if it
    /// is still open, and the first answer.
    async fn run_socket(
        &self,
        case: &Case,
        problems: &mut Vec<String>,
    ) -> (String, Option<Socket>, Option<Value>) {
        let mut socket = match self.connect_for(case).await {
            Ok(socket) => socket,
            Err(why) => {
                return (
                    format!("could not set up the {:?} phase: {why}", case.phase),
                    None,
                    None,
                )
            }
        };
        let mut send_error = None;
        for frame in render(case, &self.vars).frames {
            if let Err(error) = socket.send(frame).await {
                send_error = Some(error.to_string());
                break;
            }
        }
        if send_error.is_none() {
            for frame in self.follow_up(case.phase) {
                if socket.send(Message::text(frame)).await.is_err() {
                    break; // closed: the close is read below
                }
            }
        }
        let seen = self.collect(&mut socket, case.phase).await;
        let observed = seen.describe();
        if let Some(error) = send_error {
            // Expected when the server closes while we write (oversize frames); a clue otherwise.
            if observed != describe_expect(&case.expect) {
                problems.push(format!("sending the case failed: {error}"));
            }
        }
        if seen.answers.len() > 1 {
            let kinds: Vec<String> = seen.answers.iter().map(describe_answer).collect();
            problems.push(format!("more than one answer: {}", kinds.join(", ")));
        }
        let first = seen.answers.first().cloned();
        if let (Some(want), Some(answer)) = (&case.expect.client_msg_id, &first) {
            let got = field(answer, "client_msg_id");
            if got.as_deref() != Some(want.as_str()) {
                problems.push(format!(
                    "the error carries client_msg_id {got:?}, expected {want:?}"
                ));
            }
        }
        if let Some(answer) = &first {
            for (path, want) in &case.expect.fields {
                let want = self.vars.substitute(want, &case.name);
                let got = field(answer, path);
                if got.as_deref() != Some(want.as_str()) {
                    problems.push(format!("answer field {path} is {got:?}, expected {want:?}"));
                }
            }
        }
        let open = seen.end.is_none().then_some(socket);
        (observed, open, first)
    }

    /// For an accepted send: acked under its own id, and the stored row is the attacker's, in
    /// general, with the exact text.
    async fn check_stored(&mut self, ack: &Value, sent: &(String, String), problems: &mut Vec<String>) {
        let (client_msg_id, text) = sent;
        if field(ack, "client_msg_id").as_ref() != Some(client_msg_id) {
            problems.push(format!(
                "ack for client_msg_id {:?}, expected {client_msg_id:?}",
                field(ack, "client_msg_id")
            ));
        }
        let id: i64 = ack["id"].as_i64().unwrap_or(-1);
        let row = sqlx::query("SELECT room_id, author_id, body, client_msg_id FROM messages WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut self.db)
            .await
            .expect("read the database");
        let Some(row) = row else {
            problems.push(format!("acked message {id} is not in the database"));
            return;
        };
        let stored = (
            row.get::<i64, _>("room_id"),
            row.get::<i64, _>("author_id"),
            row.get::<String, _>("body"),
            row.get::<Option<String>, _>("client_msg_id"),
        );
        let want = (
            self.general.0,
            self.attacker.id.0,
            text.clone(),
            Some(client_msg_id.clone()),
        );
        if stored != want {
            problems.push(format!(
                "stored (room, author, body, client_msg_id) = {stored:?}, expected {want:?}"
            ));
        }
    }

    /// The prober sends `text` to general; returns the messages the bystander got before it.
    async fn probe(&mut self, text: &str) -> Result<Vec<Value>, String> {
        let id = format!("probe-{}", self.probes);
        let frame = serde_json::json!({
            "type": "send", "room": self.general.0, "client_msg_id": id, "text": text,
        })
        .to_string();
        let answer = Self::exchange(&mut self.prober, frame, |v| {
            (kind(v) == "ack" && v["client_msg_id"] == id.as_str()) || kind(v) == "error"
        })
        .await?;
        if kind(&answer) == "error" {
            return Err(format!("the prober's send was refused: {answer}"));
        }
        let mut before_probe = Vec::new();
        loop {
            match next_incoming(&mut self.bystander).await {
                Incoming::Json(value) if kind(&value) == "message" => {
                    if value["message"]["text"] == text {
                        return Ok(before_probe);
                    }
                    before_probe.push(value["message"].clone());
                }
                Incoming::Json(_) => continue,
                Incoming::Closed(code) => return Err(format!("bystander closed ({code:?})")),
                Incoming::Dropped(why) => return Err(format!("bystander dropped ({why})")),
                Incoming::TimedOut => return Err("timed out".to_owned()),
            }
        }
    }

    /// The bystander got exactly the accepted message (verbatim, by the attacker), or nothing.
    fn check_bystander(
        &self,
        accepted: Option<&(Value, (String, String))>,
        got: &[Value],
        problems: &mut Vec<String>,
    ) {
        let Some((ack, (_, text))) = accepted else {
            if !got.is_empty() {
                problems.push(format!("the bystander received unexpected messages: {got:?}"));
            }
            return;
        };
        match got {
            [message] => {
                let seen = (
                    message["id"].clone(),
                    message["author"]["id"].as_i64(),
                    message["author"]["name"].as_str(),
                    message["text"].as_str(),
                );
                let want = (
                    ack["id"].clone(),
                    Some(self.attacker.id.0),
                    Some(self.attacker.name.as_str()),
                    Some(text.as_str()),
                );
                if seen != want {
                    problems.push(format!(
                        "the bystander got (id, author id, author name, text) = {seen:?}, expected {want:?}"
                    ));
                }
            }
            other => problems.push(format!(
                "the bystander got {} messages before the probe, expected the accepted one: {other:?}",
                other.len()
            )),
        }
    }
}

/// For an accepted send: (client_msg_id, text as stored), from the frame unless overridden.
fn expected_send(case: &Case, vars: &Vars) -> (String, String) {
    let message = render(case, vars).message;
    let value: Value = serde_json::from_slice(&message)
        .unwrap_or_else(|e| panic!("{}: an ok case must carry JSON: {e}", case.name));
    let client_msg_id = value["client_msg_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{}: an ok case needs a client_msg_id", case.name))
        .to_owned();
    let text = match &case.expect.stored_text {
        Some(payload) => String::from_utf8(vars.bytes(payload, &case.name)).expect("UTF-8 stored_text"),
        None => value["text"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: an ok case needs a text", case.name))
            .to_owned(),
    };
    (client_msg_id, text)
}

/// Reads until a live message with `text` arrives.
async fn wait_for_message(socket: &mut Socket, text: &str) -> Result<(), String> {
    loop {
        match next_incoming(socket).await {
            Incoming::Json(value) if kind(&value) == "message" && value["message"]["text"] == text => {
                return Ok(())
            }
            Incoming::Json(_) => continue,
            Incoming::Closed(code) => return Err(format!("closed ({code:?})")),
            Incoming::Dropped(why) => return Err(format!("dropped ({why})")),
            Incoming::TimedOut => return Err("nothing within 5 s".to_owned()),
        }
    }
}

/// Closes from our side and waits for the server to finish the handshake.
async fn close(socket: &mut Socket) -> Result<(), String> {
    socket.close(None).await.map_err(|e| e.to_string())?;
    loop {
        match next_incoming(socket).await {
            Incoming::Closed(_) | Incoming::Dropped(_) => return Ok(()),
            Incoming::Json(_) => continue,
            Incoming::TimedOut => return Err("no close within 5 s".to_owned()),
        }
    }
}

fn load_corpus() -> Corpus {
    let text = std::fs::read_to_string(CORPUS_PATH).expect("read the corpus");
    let corpus: Corpus = toml::from_str(&text).unwrap_or_else(|e| panic!("corpus.toml: {e}"));
    let mut names = HashSet::new();
    for case in &corpus.case {
        assert!(
            names.insert(case.name.as_str()),
            "duplicate case name {}",
            case.name
        );
        case.validate();
    }
    corpus
}

fn report(outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    let width = outcomes.iter().map(|o| o.name.len()).max().unwrap_or(4);
    let _ = writeln!(out, "{:<width$}  {:<10}  observed (expected)", "case", "status");
    for o in outcomes {
        let versus = if o.observed == o.expected {
            o.observed.clone()
        } else {
            format!("{}  (expected {})", o.observed, o.expected)
        };
        let _ = writeln!(out, "{:<width$}  {:<10}  {versus}", o.name, o.status.label());
        if o.status != Status::Pass {
            for problem in &o.problems {
                let _ = writeln!(out, "{:<width$}    - {problem}", "");
            }
        }
    }
    let mut per_category: BTreeMap<&str, usize> = BTreeMap::new();
    for o in outcomes {
        *per_category.entry(o.category.as_str()).or_default() += 1;
    }
    let _ = writeln!(out, "\n{} cases:", outcomes.len());
    for (category, count) in per_category {
        let _ = writeln!(out, "  {category:<22} {count}");
    }
    let count = |s: Status| outcomes.iter().filter(|o| o.status == s).count();
    let _ = writeln!(
        out,
        "pass {}, known bug {}, FAIL {}, FIXED? {}",
        count(Status::Pass),
        count(Status::ExpectedFailure),
        count(Status::Fail),
        count(Status::UnexpectedPass)
    );
    out
}

#[tokio::test]
async fn hostile_corpus() {
    let corpus = load_corpus();
    assert!(corpus.case.len() >= 60, "the corpus keeps at least 60 cases");
    let mut world = World::start(&corpus.server).await;
    let mut outcomes = Vec::new();
    for case in &corpus.case {
        outcomes.push(world.run(case).await);
    }
    println!("{}", report(&outcomes));

    let unexpected: Vec<String> = outcomes
        .iter()
        .filter(|o| matches!(o.status, Status::Fail | Status::UnexpectedPass))
        .map(|o| {
            let what = if o.status == Status::UnexpectedPass {
                "passes although marked known_bug (remove the marker)".to_owned()
            } else {
                format!("observed {}, expected {}", o.observed, o.expected)
            };
            let mut line = format!("{}: {what}", o.name);
            for problem in &o.problems {
                line.push_str("; ");
                line.push_str(problem);
            }
            line
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "{} case(s) differ from the corpus:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
}
