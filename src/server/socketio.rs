//! The Socket.IO door at `/socket.io/` (socketioxide; WebSocket and long-polling): the seeds'
//! clients chat with Huddle users unchanged. Each Socket.IO socket drives an ordinary
//! [`Session`]: its events become frames of Huddle's protocol, and what the session sends back
//! becomes Socket.IO events and acks. Chat rules, limits, storage and fan-out are the
//! WebSocket endpoint's own; nothing about chat is decided here.

use super::auth::{self, Authenticated};
use super::limits::{self, OpenConnection};
use super::ws::{origin_allowed, Outbound, Session};
use super::AppState;
use crate::protocol::{
    rules, BoardSegment, ChatMessage, ClientMsg, ClientMsgId, ErrorCode, MessageKind, RoomId, Seq, ServerMsg,
    UserRef, BOARD_SCALE, PROTOCOL_VERSION,
};
use axum::extract::ConnectInfo;
use serde_json::{json, Value};
use socketioxide::extract::{AckSender, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use socketioxide::SocketIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

/// The seeds' drawing app uses an 800 x 600 canvas; its coordinates map onto the board.
const SEED_CANVAS: (f64, f64) = (800.0, 600.0);
/// The seeds draw 3 px lines on that canvas: in board units of its width.
const SEED_LINE_WIDTH: u16 = 38;
/// The room a Socket.IO client talks in when an event names none.
const DEFAULT_ROOM: &str = "general";

/// The Socket.IO layer for the router.
pub fn layer(state: AppState) -> SocketIoLayer {
    let max_frame = state.config.max_frame_bytes as usize;
    // One bound for both transports, as on /ws: a bigger message cuts the client off.
    let (layer, io) = SocketIo::builder()
        .max_payload(max_frame as u64)
        .ws_max_message_size(max_frame)
        .ws_max_frame_size(max_frame)
        .ping_interval(Duration::from_secs(state.config.heartbeat_s.into()))
        .with_state(state)
        .build_layer();
    // Everything happens in the middleware, which runs before the client hears it is
    // connected: handlers registered later (the connect handler is spawned) could miss the
    // client's first events.
    io.ns("/", (async || {}).with(admit));
    layer
}

/// Held for the life of a socket: the server-wide and per-IP connection slots.
#[derive(Clone)]
#[allow(dead_code)] // never read: dropping it frees the slots
struct Admission(Arc<(OwnedSemaphorePermit, OpenConnection)>);

/// Refuses a connection before it joins, with a `connect_error` naming the reason: foreign
/// origin, shutting down, too many connections (per IP or in all).
async fn admit(
    socket: SocketRef,
    TryData(auth): TryData<Value>,
    State(state): State<AppState>,
) -> Result<(), String> {
    let parts = socket.req_parts();
    if !origin_allowed(&parts.headers, &state.config.allowed_origins) {
        tracing::warn!("socket.io refused: origin not allowed");
        return Err("origin_not_allowed: this origin may not open a chat connection".into());
    }
    if state.shutdown.is_cancelled() {
        return Err("shutting_down: the server is restarting".into());
    }
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let ip = limits::client_ip(peer, &parts.headers, &state.config.client_ip_header);
    let ip_slot = state
        .ip_gate
        .admit(ip)
        .map_err(|_| "too_many_connections: too many connections from your address".to_owned())?;
    let slot = state
        .connection_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| "server_full: too many connections, retry later".to_owned())?;
    bridge(
        socket,
        auth.unwrap_or(Value::Null),
        state,
        Admission(Arc::new((slot, ip_slot))),
    )
    .await;
    Ok(())
}

/// A request worked out once the rooms of earlier ones are known: the frame to handle, if any.
type LaterRequest = Box<dyn FnOnce(&Bridge) -> Option<ClientMsg> + Send>;

/// What the socket's session task is asked to do, in order.
enum Inbox {
    /// A frame of Huddle's protocol.
    Frame(String),
    /// Someone picked a name (`user-join`): sign in, start, then say so.
    SignIn(Authenticated, tokio::sync::oneshot::Sender<()>),
    /// A request to work out in turn, once the rooms of earlier requests are known: the
    /// frame to handle, if any.
    Later(LaterRequest),
    /// Say hello and subscribe to the user's rooms.
    Start,
    /// The socket is gone.
    Close,
}

/// What the socket's handlers and its writer share.
struct Bridge {
    inbox: mpsc::UnboundedSender<Inbox>,
    user: Mutex<Option<UserRef>>,
    /// Names of the rooms the user belongs to, by id.
    rooms: Mutex<HashMap<RoomId, String>>,
    /// Acks owed for `chat-message`s, by client message id, oldest first: a retry sent
    /// while the first is in flight gets its own answer (the session acks each send).
    pending: Mutex<HashMap<String, std::collections::VecDeque<AckSender>>>,
    /// `auth.lastSeq`: where to resume each room (by name or id).
    resume: HashMap<String, i64>,
    /// Board batches of the picture being received (for `init`).
    picture: Mutex<Vec<BoardSegment>>,
    /// Set after someone's undo: the seeds' clients cannot take one line back, so the next
    /// picture is sent as `clear` plus its lines instead of `init`.
    redraw: Mutex<Option<Redraw>>,
    /// `join-room` requests waiting for their `joined`, by lower-case room name.
    joining: Mutex<HashMap<String, tokio::sync::oneshot::Sender<RoomId>>>,
    /// Per room, the seq up to which the socket has everything: where a subscribe that was
    /// refused for now (`rate_limited`, `unavailable`) starts again.
    seen: Mutex<HashMap<RoomId, Seq>>,
    _admission: Admission,
}

impl Bridge {
    fn send(&self, msg: ClientMsg) {
        let _ = self.inbox.send(Inbox::Frame(msg.encode()));
    }

    /// Receives the room live from `after_seq` on (what was missed first).
    fn subscribe(&self, room: RoomId, after_seq: Seq) {
        self.saw(room, after_seq);
        self.send(ClientMsg::Subscribe {
            room,
            after_seq: Some(after_seq),
        });
    }

    fn saw(&self, room: RoomId, seq: Seq) {
        let mut seen = self.seen.lock().expect("seen");
        let newest = seen.entry(room).or_insert(seq);
        *newest = (*newest).max(seq);
    }

    /// A subscribe the server refused for now: the same again after its wait (1 s when it
    /// names none, 10 s at most), from where the socket is, as the web client does.
    fn subscribe_later(&self, room: RoomId, retry_after_ms: Option<u32>) {
        let after_seq = self
            .seen
            .lock()
            .expect("seen")
            .get(&room)
            .copied()
            .unwrap_or(Seq(0));
        let wait = Duration::from_millis(retry_after_ms.unwrap_or(1000).min(10_000).into());
        let inbox = self.inbox.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let subscribe = ClientMsg::Subscribe {
                room,
                after_seq: Some(after_seq),
            };
            let _ = inbox.send(Inbox::Frame(subscribe.encode()));
        });
    }

    /// Queues a request that needs the user's rooms: worked out after every earlier one.
    fn later(&self, request: impl FnOnce(&Bridge) -> Option<ClientMsg> + Send + 'static) {
        let _ = self.inbox.send(Inbox::Later(Box::new(request)));
    }

    /// The oldest ack owed for this client message id.
    fn owed_ack(&self, client_msg_id: &str) -> Option<AckSender> {
        let mut pending = self.pending.lock().expect("pending");
        let queue = pending.get_mut(client_msg_id)?;
        let ack = queue.pop_front();
        if queue.is_empty() {
            pending.remove(client_msg_id);
        }
        ack
    }

    fn room_name(&self, room: RoomId) -> String {
        self.rooms
            .lock()
            .expect("rooms")
            .get(&room)
            .cloned()
            .unwrap_or_default()
    }

    /// The id of a room the user belongs to, by name (any case); `general` when unnamed.
    fn room_id(&self, name: Option<&str>) -> Option<RoomId> {
        let name = name.unwrap_or(DEFAULT_ROOM);
        self.rooms
            .lock()
            .expect("rooms")
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name))
            .map(|(id, _)| *id)
    }

    fn signed_in(&self) -> bool {
        self.user.lock().expect("user").is_some()
    }
}

/// Signs the socket in (cookie or `auth.token`), starts its session and the tasks that carry
/// events both ways, and registers its event handlers.
async fn bridge(socket: SocketRef, auth: Value, state: AppState, admission: Admission) {
    let mut signed_in = auth::authenticate(&state, &socket.req_parts().headers).await;
    if let (None, Some(token)) = (&signed_in, auth.get("token").and_then(Value::as_str)) {
        signed_in = state.auth.verify(&state.chat.store, token).await.ok();
    }
    let resume = auth
        .get("lastSeq")
        .and_then(Value::as_object)
        .map(|seqs| {
            seqs.iter()
                .filter_map(|(k, v)| Some((k.to_lowercase(), v.as_i64()?)))
                .collect()
        })
        .unwrap_or_default();
    let (inbox, inbox_rx) = mpsc::unbounded_channel();
    let bridge = Arc::new(Bridge {
        inbox,
        user: Mutex::new(signed_in.as_ref().map(|s| s.user.clone())),
        rooms: Mutex::new(HashMap::new()),
        pending: Mutex::new(HashMap::new()),
        resume,
        picture: Mutex::new(Vec::new()),
        redraw: Mutex::new(None),
        joining: Mutex::new(HashMap::new()),
        seen: Mutex::new(HashMap::new()),
        _admission: admission,
    });
    let started = signed_in.is_some();
    let (session, outbound) = Session::new(&state, signed_in, None);
    tracing::info!(connection = %session.id, "socket.io connected");
    tokio::spawn(write_events(
        outbound,
        session.lagged(),
        session.ended(),
        socket.clone(),
        bridge.clone(),
    ));
    tokio::spawn(run_inbox(
        session,
        inbox_rx,
        state.clone(),
        bridge.clone(),
        socket.clone(),
    ));
    if started {
        let _ = bridge.inbox.send(Inbox::Start);
    } else {
        // Like `hello` on /ws: a socket that does not pick a name in time gives its slot back.
        let (socket, bridge) = (socket.clone(), bridge.clone());
        let deadline = Duration::from_secs(state.config.hello_timeout_s.into());
        tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            if !bridge.signed_in() {
                let _ = socket.emit(
                    "error",
                    &json!({ "code": ErrorCode::HelloRequired, "message": "Send user-join sooner." }),
                );
                let _ = socket.disconnect();
            }
        });
    }
    register_handlers(&socket, &bridge, &state);
}

/// Runs the socket's session: one request at a time, in arrival order.
async fn run_inbox(
    mut session: Session,
    mut inbox: mpsc::UnboundedReceiver<Inbox>,
    state: AppState,
    bridge: Arc<Bridge>,
    socket: SocketRef,
) {
    loop {
        let item = tokio::select! {
            item = inbox.recv() => item,
            // Like /ws: a socket whose session token expires is let go.
            _ = tokio::time::sleep_until(session.expiry()) => {
                let _ = socket.emit("error", &json!({ "code": ErrorCode::InvalidToken, "message": "Your session expired; sign in again." }));
                let _ = socket.clone().disconnect();
                None
            }
        };
        let Some(item) = item else { break };
        let keep_going = match item {
            Inbox::Frame(frame) => session.on_text(&frame).await,
            Inbox::SignIn(signed_in, ready) => {
                session.sign_in(signed_in);
                let started = start(&mut session, &state, &bridge).await;
                let _ = ready.send(());
                started
            }
            Inbox::Later(request) => match request(&bridge) {
                Some(msg) => session.on_text(&msg.encode()).await,
                None => true,
            },
            Inbox::Start => start(&mut session, &state, &bridge).await,
            Inbox::Close => false,
        };
        if !keep_going {
            break;
        }
    }
    tracing::info!(connection = %session.id, "socket.io disconnected");
    session.finish();
}

/// Hello, then every room of the user: from `auth.lastSeq` where given (what was missed
/// comes first, in order), else live from now. The general board is opened for `init`.
async fn start(session: &mut Session, state: &AppState, bridge: &Bridge) -> bool {
    let hello = ClientMsg::Hello {
        version: PROTOCOL_VERSION,
        token: None,
    };
    if !session.on_text(&hello.encode()).await {
        return false;
    }
    let Some(user) = session.user.clone() else {
        return true;
    };
    let Ok(rooms) = state.chat.rooms_of(&user).await else {
        return true;
    };
    bridge
        .rooms
        .lock()
        .expect("rooms")
        .extend(rooms.iter().map(|r| (r.id, r.name.clone())));
    for room in &rooms {
        let after = bridge
            .resume
            .get(&room.name.to_lowercase())
            .or_else(|| bridge.resume.get(&room.id.0.to_string()))
            .copied()
            .unwrap_or(room.last_seq.0);
        bridge.saw(room.id, Seq(after));
        let subscribe = ClientMsg::Subscribe {
            room: room.id,
            after_seq: Some(Seq(after)),
        };
        if !session.on_text(&subscribe.encode()).await {
            return false;
        }
    }
    if let Some(general) = bridge.room_id(None) {
        return session
            .on_text(&ClientMsg::OpenBoard { room: general }.encode())
            .await;
    }
    true
}

/// A string field of an event's payload (or the payload itself when it is a string).
fn field<'a>(data: &'a Value, name: &str) -> Option<&'a str> {
    data.get(name).and_then(Value::as_str).or_else(|| data.as_str())
}

fn failure(code: ErrorCode, message: impl Into<String>) -> Value {
    json!({ "success": false, "error": message.into(), "code": code })
}

fn register_handlers(socket: &SocketRef, bridge: &Arc<Bridge>, state: &AppState) {
    let (b, st) = (bridge.clone(), state.clone());
    socket.on("user-join", async move |TryData(data): TryData<Value>, ack: AckSender| {
        let data = data.unwrap_or(Value::Null);
        if let Some(user) = b.user.lock().expect("user").clone() {
            // Already signed in (the identity cookie): the name stays.
            let _ = ack.send(&json!({ "success": true, "userId": user.id, "username": user.name }));
            return;
        }
        if !st.config.allow_guests {
            let _ = ack.send(&failure(ErrorCode::GuestsDisabled, "This server allows no guests; log in first."));
            return;
        }
        let Some(name) = data.get("username").and_then(Value::as_str) else {
            let _ = ack.send(&failure(ErrorCode::BadName, "Send {username} with a display name."));
            return;
        };
        match auth::new_user(&st, name, None).await {
            Ok((user, token)) => match st.auth.verify(&st.chat.store, &token).await {
                Ok(signed_in) => {
                    *b.user.lock().expect("user") = Some(user.clone());
                    // The answer waits until the user's rooms are received: a message sent
                    // right after it finds them.
                    let (ready, started) = tokio::sync::oneshot::channel();
                    let _ = b.inbox.send(Inbox::SignIn(signed_in, ready));
                    let _ = tokio::time::timeout(Duration::from_secs(10), started).await;
                    let _ = ack.send(&json!({ "success": true, "userId": user.id, "username": user.name, "token": token }));
                }
                Err(_) => {
                    let _ = ack.send(&failure(ErrorCode::Internal, "The server could not sign you in; retry."));
                }
            },
            Err((_, code, message)) => {
                let _ = ack.send(&failure(code, message));
            }
        }
    });

    let b = bridge.clone();
    socket.on(
        "chat-message",
        async move |TryData(data): TryData<Value>, ack: AckSender| {
            let data = data.unwrap_or(Value::Null);
            let text = field(&data, "text").unwrap_or_default().to_owned();
            send_text(
                &b,
                data.get("room").and_then(Value::as_str),
                text,
                data.get("clientMsgId").and_then(Value::as_str),
                ack,
            );
        },
    );
    let b = bridge.clone();
    socket.on(
        "message",
        async move |TryData(data): TryData<Value>, ack: AckSender| {
            let data = data.unwrap_or(Value::Null);
            let text = field(&data, "text")
                .or_else(|| field(&data, "message"))
                .unwrap_or_default()
                .to_owned();
            send_text(&b, None, text, None, ack);
        },
    );
    let b = bridge.clone();
    socket.on(
        "room-message",
        async move |TryData(data): TryData<Value>, ack: AckSender| {
            let data = data.unwrap_or(Value::Null);
            let text = data
                .get("text")
                .or_else(|| data.get("message"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            send_text(
                &b,
                data.get("room").and_then(Value::as_str),
                text.to_owned(),
                data.get("clientMsgId").and_then(Value::as_str),
                ack,
            );
        },
    );

    let (b, st) = (bridge.clone(), state.clone());
    socket.on(
        "join-room",
        async move |socket: SocketRef, TryData(data): TryData<Value>, ack: AckSender| {
            let data = data.unwrap_or(Value::Null);
            let name = field(&data, "room").unwrap_or_default().to_owned();
            let result = join_room(&b, &st, &name).await;
            let reply = match result {
                Ok(room) => json!({ "success": true, "room": name, "roomId": room }),
                Err((code, message)) => failure(code, message),
            };
            if reply["success"] == false {
                let _ = socket.emit("error", &reply);
            }
            let _ = ack.send(&reply);
        },
    );

    for (event, active) in [
        ("typing", true),
        ("stop-typing", false),
        ("typing-indicator", true),
    ] {
        let b = bridge.clone();
        socket.on(event, async move |TryData(data): TryData<Value>| {
            let data = data.unwrap_or(Value::Null);
            let active = data
                .get("isTyping")
                .or_else(|| data.get("active"))
                .and_then(Value::as_bool)
                .unwrap_or(active);
            let room = data.get("room").and_then(Value::as_str).map(str::to_owned);
            b.later(move |b| {
                Some(ClientMsg::Typing {
                    room: b.room_id(room.as_deref())?,
                    active,
                })
            });
        });
    }

    let b = bridge.clone();
    socket.on("draw", async move |socket: SocketRef, TryData(data): TryData<Value>| {
        let data = data.unwrap_or(Value::Null);
        let Some(line) = SeedLine::parse(&data) else {
            let _ = socket.emit(
                "error",
                &json!({ "code": ErrorCode::BadStroke, "message": "A line needs numbers x0, y0, x1, y1 on the 800 x 600 canvas." }),
            );
            return;
        };
        let color = data.get("color").and_then(Value::as_str).map(str::to_owned);
        let room = data.get("room").and_then(Value::as_str).map(str::to_owned);
        b.later(move |b| {
            let user = b.user.lock().expect("user").clone()?;
            // Colour, width and points beyond the board are the session's to refuse.
            Some(ClientMsg::Draw {
                room: b.room_id(room.as_deref())?,
                stroke: rand_stroke(),
                color: color.unwrap_or_else(|| rules::default_board_color(user.id).to_owned()),
                width: line.width,
                points: line.points.to_vec(),
            })
        });
    });
    let b = bridge.clone();
    socket.on("clear", async move |TryData(data): TryData<Value>| {
        let data = data.unwrap_or(Value::Null);
        let room = data.get("room").and_then(Value::as_str).map(str::to_owned);
        b.later(move |b| {
            Some(ClientMsg::ClearBoard {
                room: b.room_id(room.as_deref())?,
            })
        });
    });

    let b = bridge.clone();
    socket.on_disconnect(async move || {
        // Acks still owed are dropped with the socket; the client retries with its id.
        b.pending.lock().expect("pending").clear();
        let _ = b.inbox.send(Inbox::Close);
    });
}

/// A `draw` of the seeds' drawing app: one line on its 800 x 600 canvas, in board units.
struct SeedLine {
    points: [[u16; 2]; 2],
    width: u16,
}

impl SeedLine {
    /// None when a coordinate is missing, not a number or negative. Values past the canvas
    /// are kept (capped), so the session refuses them like any point off the board.
    fn parse(data: &Value) -> Option<SeedLine> {
        let unit = |key: &str, span: f64| -> Option<u16> {
            let v = data.get(key)?.as_f64().filter(|v| v.is_finite() && *v >= 0.0)?;
            Some((v / span * BOARD_SCALE as f64).round().min(u16::MAX as f64) as u16)
        };
        let (w, h) = SEED_CANVAS;
        let points = [[unit("x0", w)?, unit("y0", h)?], [unit("x1", w)?, unit("y1", h)?]];
        // Clients that send a width (`width` or `lineWidth`, canvas pixels) get it.
        let width = match data.get("width").or_else(|| data.get("lineWidth")) {
            None => SEED_LINE_WIDTH,
            Some(_) => unit(
                if data.get("width").is_some() {
                    "width"
                } else {
                    "lineWidth"
                },
                w,
            )
            .unwrap_or(0),
        };
        Some(SeedLine { points, width })
    }
}

/// An undo seen and the picture asked for again.
struct Redraw {
    /// Live batches that came meanwhile; those newer than the picture follow it.
    live: Vec<BoardSegment>,
    /// Board seq of the newest undo seen: a picture older than it is asked for again.
    undo_seq: i64,
}

fn rand_stroke() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

/// A chat message from a Socket.IO client: the ack comes when the session acks it.
fn send_text(bridge: &Bridge, room: Option<&str>, text: String, client_id: Option<&str>, ack: AckSender) {
    let room = room.map(str::to_owned);
    let client_msg_id = client_id.map(str::to_owned).unwrap_or_else(|| {
        format!(
            "sio-{:x}-{:x}",
            rand_stroke(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros())
        )
    });
    bridge.later(move |bridge| {
        if !bridge.signed_in() {
            let _ = ack.send(&failure(
                ErrorCode::NotSignedIn,
                "Send user-join with a username first.",
            ));
            return None;
        }
        let Some(room) = bridge.room_id(room.as_deref()) else {
            let _ = ack.send(&failure(
                ErrorCode::NotMember,
                "You are not in that room; send join-room first.",
            ));
            return None;
        };
        bridge
            .pending
            .lock()
            .expect("pending")
            .entry(client_msg_id.clone())
            .or_default()
            .push_back(ack);
        Some(ClientMsg::Send {
            room,
            client_msg_id: ClientMsgId(client_msg_id),
            text,
            attachments: Vec::new(),
        })
    });
}

/// Joins (creating if needed) a public room by name, then receives it live.
async fn join_room(bridge: &Bridge, state: &AppState, name: &str) -> Result<RoomId, (ErrorCode, String)> {
    let Some(user) = bridge.user.lock().expect("user").clone() else {
        return Err((
            ErrorCode::NotSignedIn,
            "Send user-join with a username first.".into(),
        ));
    };
    if let Some(room) = bridge.room_id(Some(name)) {
        return Ok(room);
    }
    let name = rules::room_name(name).map_err(|i| (i.code, i.message))?;
    let existing = state
        .chat
        .store
        .public_rooms(user.id)
        .await
        .map_err(|_| {
            (
                ErrorCode::Internal,
                "The server could not do that just now; please retry.".to_owned(),
            )
        })?
        .into_iter()
        .find(|r| r.name.eq_ignore_ascii_case(&name));
    let msg = match existing {
        Some(room) => ClientMsg::Join { room: room.id },
        None => ClientMsg::CreateRoom {
            name: name.clone(),
            topic: String::new(),
            private: false,
            board_open: false,
        },
    };
    // The session answers with `joined`; the writer subscribes, then this request is done.
    let (done, joined) = tokio::sync::oneshot::channel();
    bridge
        .joining
        .lock()
        .expect("joining")
        .insert(name.to_lowercase(), done);
    bridge.send(msg);
    match tokio::time::timeout(Duration::from_secs(10), joined).await {
        Ok(Ok(room)) => Ok(room),
        _ => Err((
            ErrorCode::Internal,
            "Joining the room did not finish; please retry.".into(),
        )),
    }
}

/// Emits to one socket and remembers whether any emit failed (its buffer was full).
struct Emitter<'a> {
    socket: &'a SocketRef,
    failed: std::cell::Cell<bool>,
}

impl Emitter<'_> {
    fn emit<T: serde::Serialize + ?Sized>(&self, event: &'static str, data: &T) {
        if self.socket.emit(event, data).is_err() {
            self.failed.set(true);
        }
    }
}

fn iso_time(ms: i64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)).to_string()
}

/// The seeds' `new-message` and `message` payloads for one stored text.
fn emit_message(out: &Emitter, room: &str, message: &ChatMessage) {
    out.emit(
        "new-message",
        &json!({
            "id": message.id, "text": message.text, "username": message.author.name,
            "userId": message.author.id, "timestamp": iso_time(message.ts), "room": room, "seq": message.seq,
        }),
    );
    out.emit(
        "message",
        &json!({ "text": message.text, "user": message.author.name, "room": room, "timestamp": iso_time(message.ts), "seq": message.seq }),
    );
}

fn seed_lines(segment: &BoardSegment) -> Vec<Value> {
    let scale = BOARD_SCALE as f64;
    let at = |[x, y]: [u16; 2]| (x as f64 / scale * SEED_CANVAS.0, y as f64 / scale * SEED_CANVAS.1);
    segment
        .points
        .windows(2)
        .map(|pair| {
            let ((x0, y0), (x1, y1)) = (at(pair[0]), at(pair[1]));
            json!({ "x0": x0, "y0": y0, "x1": x1, "y1": y1, "color": segment.color, "username": segment.author.name })
        })
        .collect()
}

/// Turns what the session sends into Socket.IO events and acks; disconnects when the
/// session closes, falls behind, or its user logs out.
async fn write_events(
    mut outbound: crate::server::ws::OutboundRx,
    lagged: crate::server::ws::Lagged,
    ended: tokio_util::sync::CancellationToken,
    socket: SocketRef,
    bridge: Arc<Bridge>,
) {
    loop {
        let frame = tokio::select! {
            frame = outbound.recv() => frame,
            _ = lagged.cancelled() => break,
            _ = ended.cancelled() => break,
        };
        let Some(text) = frame.as_ref().and_then(Outbound::as_text) else {
            break; // a close, or the session is gone
        };
        let Ok(msg) = ServerMsg::decode(text) else {
            continue;
        };
        let out = Emitter {
            socket: &socket,
            failed: std::cell::Cell::new(false),
        };
        translate(&out, &bridge, msg);
        if out.failed.get() {
            // The client is not reading (its buffer is full): cut it off rather than skip
            // events; it reconnects and resumes by seq, like a slow WebSocket client.
            tracing::warn!(socket = %socket.id, "socket.io client too slow; disconnecting");
            break;
        }
    }
    let _ = socket.disconnect();
}

fn translate(out: &Emitter, bridge: &Bridge, msg: ServerMsg) {
    match msg {
        ServerMsg::Message { message } => live_entry(out, bridge, &message),
        ServerMsg::Backlog { messages, .. } => {
            for message in &messages {
                live_entry(out, bridge, message);
            }
        }
        ServerMsg::Ack {
            room,
            client_msg_id,
            id,
            seq,
            ..
        } => {
            if let Some(ack) = bridge.owed_ack(&client_msg_id.0) {
                let _ = ack.send(
                    &json!({ "success": true, "messageId": id, "seq": seq, "room": bridge.room_name(room) }),
                );
            }
        }
        ServerMsg::Error {
            code: ErrorCode::RateLimited | ErrorCode::Unavailable,
            room: Some(room),
            client_msg_id: None,
            retry_after_ms,
            ..
        } => {
            // One of the subscribes the bridge makes itself, not the client's to answer.
            bridge.subscribe_later(room, retry_after_ms);
        }
        ServerMsg::Error {
            code,
            message,
            client_msg_id,
            ..
        } => {
            let owed = client_msg_id.and_then(|c| bridge.owed_ack(&c.0));
            match owed {
                Some(ack) => drop(ack.send(&failure(code, message))),
                None => out.emit("error", &json!({ "code": code, "message": message })),
            }
        }
        ServerMsg::Joined { room } => {
            let known = bridge
                .rooms
                .lock()
                .expect("rooms")
                .insert(room.id, room.name.clone())
                .is_some();
            if !known {
                // Receive the new room live from here on.
                bridge.subscribe(room.id, room.last_seq);
            }
            if let Some(done) = bridge
                .joining
                .lock()
                .expect("joining")
                .remove(&room.name.to_lowercase())
            {
                let _ = done.send(room.id);
            }
        }
        ServerMsg::Left { room } => {
            bridge.rooms.lock().expect("rooms").remove(&room);
        }
        ServerMsg::Typing { room, users } => {
            let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
            out.emit(
                "typing-indicator",
                &json!({ "room": bridge.room_name(room), "users": names }),
            );
        }
        ServerMsg::Presence { room, online, total } => {
            let names: Vec<&str> = online.iter().map(|u| u.name.as_str()).collect();
            out.emit(
                "online-users",
                &json!({ "room": bridge.room_name(room), "users": names, "total": total }),
            );
        }
        ServerMsg::OnlineCount { online } => out.emit("user count", &online),
        ServerMsg::Board {
            room,
            segments,
            more,
            upto,
        } => {
            let mut picture = bridge.picture.lock().expect("picture");
            picture.extend(segments);
            if more {
                return;
            }
            let picture: Vec<BoardSegment> = picture.drain(..).collect();
            let mut pending = bridge.redraw.lock().expect("redraw");
            if pending.as_ref().is_some_and(|r| r.undo_seq > upto) {
                // Another undo came after this picture was read.
                bridge.send(ClientMsg::OpenBoard { room });
                return;
            }
            match pending.take() {
                Some(Redraw { live, .. }) => {
                    out.emit("clear", &());
                    let newer = live.into_iter().filter(|s| s.seq > upto);
                    for line in picture
                        .iter()
                        .chain(newer.collect::<Vec<_>>().iter())
                        .flat_map(seed_lines)
                    {
                        out.emit("draw", &line);
                    }
                }
                None => {
                    let strokes: Vec<Value> = picture.iter().flat_map(seed_lines).collect();
                    let user = bridge.user.lock().expect("user").clone();
                    let color = user.as_ref().map(|u| rules::default_board_color(u.id));
                    out.emit(
                        "init",
                        &json!({ "id": out.socket.id.to_string(), "color": color, "strokes": strokes }),
                    );
                }
            }
        }
        ServerMsg::Drawn { segment, .. } => {
            if let Some(redraw) = bridge.redraw.lock().expect("redraw").as_mut() {
                redraw.live.push(segment);
                return;
            }
            for line in seed_lines(&segment) {
                out.emit("draw", &line);
            }
        }
        ServerMsg::StrokeUndone { room, seq, .. } => {
            // Ask for the picture without the undone stroke; it is drawn anew when it comes.
            let mut redraw = bridge.redraw.lock().expect("redraw");
            match redraw.as_mut() {
                Some(pending) => pending.undo_seq = pending.undo_seq.max(seq),
                None => {
                    *redraw = Some(Redraw {
                        live: Vec::new(),
                        undo_seq: seq,
                    });
                    bridge.send(ClientMsg::OpenBoard { room });
                }
            }
        }
        ServerMsg::BoardCleared { .. } => out.emit("clear", &()),
        ServerMsg::Welcome { .. }
        | ServerMsg::RoomDirectory { .. }
        | ServerMsg::History { .. }
        | ServerMsg::Around { .. }
        | ServerMsg::SearchResults { .. }
        | ServerMsg::Mentions { .. }
        | ServerMsg::Unread { .. }
        | ServerMsg::Ping {} => {}
    }
}

/// A timeline entry as the seeds' clients know them: texts, joins and leaves.
fn live_entry(out: &Emitter, bridge: &Bridge, message: &ChatMessage) {
    bridge.saw(message.room, message.seq);
    let room = bridge.room_name(message.room);
    match message.kind {
        MessageKind::Text if !message.deleted => emit_message(out, &room, message),
        MessageKind::Join => out.emit(
            "user-joined",
            &json!({ "user": message.author.name, "username": message.author.name, "userId": message.author.id, "room": room }),
        ),
        MessageKind::Leave => out.emit(
            "user-left",
            &json!({ "user": message.author.name, "username": message.author.name, "userId": message.author.id, "room": room }),
        ),
        _ => {}
    }
}
