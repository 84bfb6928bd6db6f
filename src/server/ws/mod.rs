//! WebSocket endpoint: the upgrade (origin check, connection cap, frame limit) and the
//! per-connection session, split into a reader loop and a writer task joined by a bounded queue,
//! which a fanned-out message skips when nothing waits in it. The bytes on the wire are
//! [`wire`]'s.

pub mod wire;

use super::auth::{self, Authenticated};
use super::limits::{self, Bucket, ConnectionRates, IpRefusal};
use super::metrics::metrics;
use super::store::now_ms;
use super::AppState;
use crate::protocol::{ClientMsg, ConnectionId, ErrorCode, Limits, ServerMsg, UserRef, PROTOCOL_VERSION};
use crate::server::chat::{hub::ConnHandle, Caller};
use axum::{
    extract::{ConnectInfo, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::error::{SendError, TrySendError};
use tokio_tungstenite::tungstenite::{protocol::WebSocketConfig, Message};
use tokio_util::sync::CancellationToken;

/// Close codes used by the server (RFC 6455 section 7.4.1).
pub mod close_code {
    /// The echo of a client's own close.
    pub const NORMAL: u16 = 1000;
    /// The server is going away (shutdown or restart); reconnect.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the protocol (e.g. unsupported version).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame was not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A frame or message exceeded `max_frame_bytes`.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The session logged out or expired; sign in again.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// The client was too slow to keep up; reconnect and resume.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The client sent nothing for two heartbeat intervals.
    pub const HEARTBEAT_TIMEOUT: u16 = 4408;
}

/// Bytes read from the socket at a time (the library's default is 128 KiB per connection).
/// Allocated for every connection up front, so it is sized for the frames clients mostly
/// send (a chat line, a typing flag); bigger frames still arrive whole, in more reads.
pub const READ_BUFFER_BYTES: usize = 1024;

/// What producers hold of one connection's way out: the bounded queue of frames for its
/// writer and, on a WebSocket, the [`wire::Shortcut`] that lets a frame skip the queue when
/// nothing waits in it. Every frame queued is counted there, so that one written straight
/// through never overtakes it.
#[derive(Clone)]
pub struct OutboundTx {
    queue: tokio::sync::mpsc::Sender<Outbound>,
    shortcut: Option<wire::Shortcut>,
}
pub type OutboundRx = tokio::sync::mpsc::Receiver<Outbound>;

impl OutboundTx {
    /// A queue of `capacity` frames, with the socket's shortcut when there is one.
    pub fn channel(capacity: usize, shortcut: Option<wire::Shortcut>) -> (OutboundTx, OutboundRx) {
        let (queue, rx) = tokio::sync::mpsc::channel(capacity);
        (OutboundTx { queue, shortcut }, rx)
    }

    /// Queues a frame if there is room.
    pub fn try_send(&self, frame: Outbound) -> Result<(), TrySendError<Outbound>> {
        self.count_one();
        let sent = self.queue.try_send(frame);
        self.uncount_if_refused(&sent);
        sent
    }

    /// Queues a frame, waiting for room; an error when the writer is gone.
    pub async fn send(&self, frame: Outbound) -> Result<(), SendError<Outbound>> {
        self.count_one();
        let sent = self.queue.send(frame).await;
        self.uncount_if_refused(&sent);
        sent
    }

    /// Writes a text frame straight to the socket when nothing waits before it and the
    /// socket takes it at once; queues it otherwise.
    pub fn deliver(&self, frame: &Outbound) -> Result<(), TrySendError<Outbound>> {
        if let (Some(shortcut), Some(text)) = (&self.shortcut, frame.as_text()) {
            if shortcut.try_write_text(text) == wire::Straight::Written {
                let metrics = metrics();
                metrics.frames_out.inc();
                metrics.frames_direct.inc();
                return Ok(());
            }
        }
        self.try_send(frame.clone())
    }

    /// Free places in the queue.
    pub fn free_slots(&self) -> usize {
        self.queue.capacity()
    }

    /// Counts a frame about to be queued, before it is: a frame written straight through
    /// must never see an empty count while one is on its way into the queue.
    fn count_one(&self) {
        if let Some(shortcut) = &self.shortcut {
            shortcut.accepted();
        }
    }

    fn uncount_if_refused<E>(&self, sent: &Result<(), E>) {
        if let (Err(_), Some(shortcut)) = (sent, &self.shortcut) {
            shortcut.withdrawn();
        }
    }
}

/// Waits for the next frame, then takes whatever else is queued, up to `limit` in all;
/// 0 once every sender is gone and the queue is empty.
pub async fn next_frames(rx: &mut OutboundRx, batch: &mut Vec<Outbound>, limit: usize) -> usize {
    rx.recv_many(batch, limit).await
}

/// Marks a connection that fell too far behind (its queue filled up, or its catch-up buffer).
/// The reader and a Socket.IO bridge wait on the token; the WebSocket writer is woken through
/// the control signal it already waits on and reads a flag, so its loop, which runs for every
/// delivered frame, polls one waiter instead of also locking the token's mutex.
#[derive(Clone, Default)]
pub struct Lagged(Arc<LaggedState>);

#[derive(Default)]
struct LaggedState {
    marked: std::sync::atomic::AtomicBool,
    token: CancellationToken,
    writer: std::sync::OnceLock<wire::ControlSignal>,
}

impl Lagged {
    /// Marks the connection and wakes its writer; true the first time.
    pub fn mark(&self) -> bool {
        if self.0.marked.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.0.token.cancel();
        if let Some(writer) = self.0.writer.get() {
            writer.notify();
        }
        true
    }

    pub fn is_marked(&self) -> bool {
        self.0.marked.load(Ordering::Acquire)
    }

    /// Resolves once the connection is marked.
    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.0.token.cancelled()
    }

    /// Wakes this writer when the connection is marked.
    fn wake_writer(&self, signal: wire::ControlSignal) {
        let _ = self.0.writer.set(signal);
    }
}

/// One frame for the writer task: a thin shared pointer, because every connection's queue
/// allocates room for 32 of them up front (32 x 8 bytes instead of 32 x 32), and a broadcast
/// shares one encoding among all its recipients.
#[derive(Clone, Debug)]
pub struct Outbound(Arc<OutboundFrame>);

const _: () = assert!(std::mem::size_of::<Outbound>() == 8);

#[derive(Debug)]
enum OutboundFrame {
    Text(String),
    /// Send this close frame, then stop.
    Close(u16, &'static str),
}

impl Outbound {
    /// A message, encoded once for however many connections it goes to.
    pub fn encode(msg: &ServerMsg) -> Outbound {
        Outbound(Arc::new(OutboundFrame::Text(msg.encode())))
    }

    /// A close frame; the writer stops after it.
    pub fn close(code: u16, reason: &'static str) -> Outbound {
        Outbound(Arc::new(OutboundFrame::Close(code, reason)))
    }

    /// The text of a message frame.
    pub fn as_text(&self) -> Option<&str> {
        match &*self.0 {
            OutboundFrame::Text(text) => Some(text),
            OutboundFrame::Close(..) => None,
        }
    }

    /// The code and reason of a close frame.
    pub fn as_close(&self) -> Option<(u16, &'static str)> {
        match *self.0 {
            OutboundFrame::Close(code, reason) => Some((code, reason)),
            OutboundFrame::Text(_) => None,
        }
    }
}

/// `GET /ws`: refuses foreign origins and connections beyond the cap, resolves the guest
/// cookie, then hands the socket to a tracked session task.
pub async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: wire::Upgrade,
) -> Response {
    let ip = limits::client_ip(peer, &headers, &state.config.client_ip_header);
    if !origin_allowed(&headers, &state.config.allowed_origins) {
        tracing::warn!(%ip, origin = ?headers.get(header::ORIGIN), "refused: origin not allowed");
        return (
            StatusCode::FORBIDDEN,
            "origin_not_allowed: this origin may not open a chat connection",
        )
            .into_response();
    }
    if state.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down: the server is restarting",
        )
            .into_response();
    }
    let ip_slot = match state.ip_gate.admit(ip) {
        Ok(slot) => slot,
        Err(refusal) => {
            tracing::warn!(%ip, ?refusal, "refused: per-IP connection limit");
            let body = match refusal {
                IpRefusal::TooManyNew => {
                    "too_many_connections: too many new connections from your address; retry in a few seconds"
                }
                IpRefusal::TooManyOpen => "too_many_connections: too many open connections from your address",
            };
            return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "10")], body).into_response();
        }
    };
    let Ok(slot) = state.connection_slots.clone().try_acquire_owned() else {
        tracing::warn!(%ip, "refused: server connection cap reached");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "server_full: too many connections, retry later",
        )
            .into_response();
    };
    let Ok(signed_in) = auth::check_credentials(&state, &headers).await else {
        // A reconnect storm can keep the store busy past the pool's wait: a client told
        // "signed out" would ask its person to log in again; told "retry", it just does.
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "unavailable: your session could not be checked just now; retry",
        )
            .into_response();
    };
    if signed_in.is_none() && !state.config.allow_guests {
        tracing::warn!(%ip, "auth failure: no valid credentials on upgrade");
        return (
            StatusCode::UNAUTHORIZED,
            "not_signed_in: log in first (session cookie or Authorization: Bearer)",
        )
            .into_response();
    }
    let max_frame = state.config.max_frame_bytes as usize;
    // Reads stop at one frame of at most `max_frame_bytes`. tungstenite writes only control
    // frames (pongs, the close reply), and hands each to the writer at once.
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_frame))
        .max_frame_size(Some(max_frame))
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0);
    // The session becomes a task of its own once the handshake is done, counted by the
    // tracker for graceful shutdown. Everything that can be set up without waiting is done
    // here, so the long-lived future holds each piece once.
    ws.on_upgrade(config, move |reader, writer| {
        let (session, rx) = Session::new(&state, signed_in, Some(writer.shortcut()));
        session.lagged.wake_writer(writer.control_signal());
        let writer = tokio::spawn(write_frames(writer, rx, session.lagged.clone()));
        let held = Held {
            ip,
            _slots: (slot, ip_slot),
        };
        state
            .sessions
            .track_future(run_session(session, reader, writer, held))
    })
}

/// What a connection holds for its whole life besides its session: its address and its
/// places under the server-wide and per-IP caps.
struct Held {
    ip: IpAddr,
    _slots: (tokio::sync::OwnedSemaphorePermit, limits::OpenConnection),
}

/// Browsers always send `Origin`; it must match the `Host` we were reached at, or be listed
/// in `allowed_origins`. Non-browser clients (no `Origin`) are allowed.
pub(crate) fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    if allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin.split_once("://").map(|(_, rest)| rest).unwrap_or("");
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

/// Runs one connection to its end. The future stays small (it lives as long as the
/// connection): rare paths that await are boxed, and one timer serves both the hello
/// deadline and the session's expiry. It is a plain `fn` returning an `async move` block
/// because an `async fn` copies its arguments into locals and keeps room for both
/// (rust-lang/rust#62958): 840 bytes more per connection.
#[allow(clippy::manual_async_fn)]
fn run_session(
    mut session: Session,
    mut stream: wire::Reader,
    writer: tokio::task::JoinHandle<()>,
    held: Held,
) -> impl Future<Output = ()> {
    async move {
        let (id, ip) = (session.id, held.ip);
        tracing::info!(connection = %id, %ip, user = ?session.user.as_ref().map(|u| u.id), "connected");
        let config = &session.state.config;
        let hello_by = tokio::time::Instant::now() + Duration::from_secs(config.hello_timeout_s.into());
        let deadline = tokio::time::sleep_until(hello_by.min(session.expiry()));
        tokio::pin!(deadline);
        let interval = Duration::from_secs(config.heartbeat_s as u64);
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = tokio::time::Instant::now();
        // Waiters made once, not per frame: registering and dropping one costs a lock each time.
        let (shutdown, lagged) = (session.state.shutdown.clone(), session.lagged.clone());
        let shutting_down = shutdown.cancelled();
        let too_slow = lagged.cancelled();
        // A hello that signs in brings a new session token: this waiter is made again then.
        let mut watched_sign_in = session.sign_ins;
        let signed_out = session.ended().cancelled_owned();
        tokio::pin!(shutting_down, too_slow, signed_out);
        loop {
            let (code, reason): (u16, &'static str) = tokio::select! {
                _ = heartbeat.tick() => {
                    // Silent for two intervals: a dead peer or a half-open TCP connection.
                    if last_heard.elapsed() >= interval * 2 {
                        (close_code::HEARTBEAT_TIMEOUT, "no heartbeat; reconnect")
                    } else if session.reply_now(ServerMsg::Ping {}) {
                        continue;
                    } else {
                        break;
                    }
                }
                _ = &mut shutting_down => (close_code::GOING_AWAY, "server shutting down; reconnect"),
                _ = &mut too_slow => break, // the writer sends the 1013 close
                _ = &mut signed_out => (close_code::POLICY_VIOLATION, "signed out; sign in again"),
                _ = &mut deadline => {
                    if !session.greeted && tokio::time::Instant::now() >= hello_by {
                        (close_code::PROTOCOL_ERROR, "no hello received")
                    } else if session.expired() {
                        (close_code::POLICY_VIOLATION, "session expired; sign in again")
                    } else {
                        // Greeted before the hello deadline: from now on only expiry counts.
                        deadline.as_mut().reset(session.expiry());
                        continue;
                    }
                }
                frame = stream.next() => {
                    last_heard = tokio::time::Instant::now();
                    match frame {
                        Some(Ok(Message::Text(text))) => {
                            let before = session.signed_in.as_ref().map(|s| s.expires_at);
                            // Boxed: handling a request is a large future, and an idle connection
                            // should not carry its space between requests.
                            let keep_going = Box::pin(session.on_text(text.as_str())).await;
                            if session.sign_ins != watched_sign_in {
                                watched_sign_in = session.sign_ins;
                                signed_out.set(session.ended().cancelled_owned());
                            }
                            if session.signed_in.as_ref().map(|s| s.expires_at) != before {
                                let next = if session.greeted { session.expiry() } else { hello_by.min(session.expiry()) };
                                deadline.as_mut().reset(next);
                            }
                            if keep_going {
                                continue;
                            }
                            break;
                        }
                        Some(Ok(Message::Binary(_))) => {
                            let refusal = ServerMsg::error(ErrorCode::BadRequest,
                                "Binary frames are not supported; send JSON text frames.");
                            if Box::pin(session.reply(refusal)).await {
                                continue;
                            }
                            break;
                        }
                        // Answered here: tungstenite would queue its reply only on a later read.
                        Some(Ok(Message::Close(_))) => (close_code::NORMAL, "closed by the client"),
                        None => break,
                        Some(Ok(_)) => continue, // ping/pong are answered by the library
                        Some(Err(error)) => {
                            tracing::info!(connection = %id, %error, "read failed");
                            match close_for_read_error(error) {
                                Some(close) => close,
                                None => break,
                            }
                        }
                    }
                }
            };
            Box::pin(session.close(code, reason)).await;
            break;
        }
        session.finish();
        let _ = writer.await;
        // Free the places first: once "disconnected" is logged, the place is free.
        drop(held);
        tracing::info!(connection = %id, %ip, "disconnected");
    }
}

/// The close frame owed to a client whose frame the WebSocket layer refused, if the
/// connection can still carry one (RFC 6455 section 7.4.1).
fn close_for_read_error(error: tungstenite::Error) -> Option<(u16, &'static str)> {
    use tungstenite::Error;
    match error {
        Error::Capacity(_) => Some((close_code::MESSAGE_TOO_BIG, "frame too large")),
        Error::Utf8(_) => Some((close_code::INVALID_PAYLOAD, "text frame is not valid UTF-8")),
        Error::Protocol(_) => Some((close_code::PROTOCOL_ERROR, "WebSocket protocol violation")),
        _ => None,
    }
}

/// Most queued frames written with one flush (one `write` system call when they fit the
/// write buffer).
const FRAMES_PER_FLUSH: usize = 32;

/// Drains the outbound queue into the socket until the queue closes, a close is requested,
/// or the connection is marked as lagging (then it closes with 1013 at once). Frames queued
/// together are written together: a busy room costs one system call per batch, not per frame.
/// (A plain `fn` for the reason given at `run_session`.)
#[allow(clippy::manual_async_fn)]
fn write_frames(mut out: wire::Writer, mut rx: OutboundRx, lagged: Lagged) -> impl Future<Output = ()> {
    async move {
        let mut batch = Vec::new(); // grows only as far as bursts need
        let control = out.control_signal();
        loop {
            let received = if lagged.is_marked() {
                batch.clear();
                batch.push(Outbound::close(
                    close_code::TRY_AGAIN_LATER,
                    "too slow; reconnect and resume",
                ));
                0
            } else {
                tokio::select! {
                    biased;
                    // Control frames from tungstenite, the rest of a frame a producer wrote
                    // in part, or the connection was marked as lagging.
                    () = control.signalled() => {
                        if out.acquire().await.is_err() || out.send_control().await.is_err() {
                            break;
                        }
                        out.release(0);
                        continue;
                    }
                    received = next_frames(&mut rx, &mut batch, FRAMES_PER_FLUSH) => {
                        if received == 0 {
                            let _ = out.acquire().await;
                            let _ = out.send_control().await; // e.g. the reply to the client's close
                            break; // the session ended and dropped its sender
                        }
                        received
                    }
                }
            };
            // The socket stays taken from here on if this batch ends the connection.
            if out.acquire().await.is_err() {
                break;
            }
            let texts_end = batch
                .iter()
                .position(|frame| frame.as_close().is_some())
                .unwrap_or(batch.len());
            // Everything before the first close is text.
            let texts = batch[..texts_end]
                .iter()
                .map(|frame| frame.as_text().unwrap_or_default());
            if out.send_texts(texts).await.is_err() {
                break;
            }
            metrics().frames_out.inc_by(texts_end as u64);
            if let Some((code, reason)) = batch.get(texts_end).and_then(Outbound::as_close) {
                let _ = out.send_close(code, reason).await;
                break;
            }
            out.release(received);
            batch.clear();
            // A burst's capacity is not kept: idle connections are the many.
            batch.shrink_to(4);
        }
        out.shutdown();
    }
}

/// State of one connection, owned by its reader loop: the same for a WebSocket and for a
/// Socket.IO client (whose events are translated into frames of this protocol).
pub(crate) struct Session {
    pub(crate) id: ConnectionId,
    state: AppState,
    tx: OutboundTx,
    /// The signed-in user, or None until someone signs in.
    pub(crate) user: Option<UserRef>,
    /// The session behind `user`.
    signed_in: Option<Authenticated>,
    /// Cancelled when that session logs out.
    ended: CancellationToken,
    /// How many times `ended` was replaced (each sign-in makes a new one).
    sign_ins: u32,
    lagged: Lagged,
    greeted: bool,
    rates: ConnectionRates,
    /// Whether the last rate check failed; limit hits are logged once per run of them.
    limited: bool,
}

impl Session {
    /// A new connection's session and the receiving end of its outbound queue.
    pub(crate) fn new(
        state: &AppState,
        signed_in: Option<Authenticated>,
        shortcut: Option<wire::Shortcut>,
    ) -> (Session, OutboundRx) {
        let id = ConnectionId(state.next_connection_id.fetch_add(1, Ordering::Relaxed) + 1);
        state.connections.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = OutboundTx::channel(state.config.outbound_queue as usize, shortcut);
        let mut session = Session {
            id,
            state: state.clone(),
            tx,
            user: None,
            signed_in: None,
            ended: CancellationToken::new(),
            sign_ins: 0,
            lagged: Lagged::default(),
            greeted: false,
            rates: ConnectionRates::new(&state.config),
            limited: false,
        };
        if let Some(signed_in) = signed_in {
            session.sign_in(signed_in);
        }
        (session, rx)
    }

    /// Marked when the connection falls behind (its queue filled up).
    pub(crate) fn lagged(&self) -> Lagged {
        self.lagged.clone()
    }

    /// Cancelled when the session behind the connection logs out.
    pub(crate) fn ended(&self) -> CancellationToken {
        self.ended.clone()
    }

    /// The connection is gone: leaves the hub and the session's socket list.
    pub(crate) fn finish(self) {
        if self.greeted && self.user.is_some() {
            self.state.chat.hub.unregister(self.id);
        }
        if let Some(signed_in) = &self.signed_in {
            self.state.auth.untrack_socket(&signed_in.session, &self.ended);
        }
        self.state.connections.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn sign_in(&mut self, signed_in: Authenticated) {
        if let Some(previous) = self.signed_in.take() {
            self.state.auth.untrack_socket(&previous.session, &self.ended);
        }
        self.ended = self.state.auth.track_socket(&signed_in.session);
        self.sign_ins += 1;
        self.user = Some(signed_in.user.clone());
        self.signed_in = Some(signed_in);
    }

    /// When the session's token expires (far in the future when signed out).
    pub(crate) fn expiry(&self) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        match &self.signed_in {
            Some(s) => now + Duration::from_millis((s.expires_at - now_ms()).max(0) as u64),
            None => now + Duration::from_secs(100 * 365 * 24 * 3600),
        }
    }

    /// Whether the session's token has expired (in the clock its expiry is written in, so
    /// a timer that fires at [`Session::expiry`] always finds it expired).
    fn expired(&self) -> bool {
        self.signed_in.as_ref().is_some_and(|s| now_ms() >= s.expires_at)
    }

    /// Handles one text frame; returns false when the connection should end.
    pub(crate) async fn on_text(&mut self, text: &str) -> bool {
        let decoded = ClientMsg::decode(text);
        let bucket = match &decoded {
            Ok(ClientMsg::Pong {}) => None,
            Ok(ClientMsg::Send { .. }) => Some(Bucket::Chat),
            Ok(ClientMsg::Typing { .. }) => Some(Bucket::Typing),
            Ok(ClientMsg::Draw { .. }) => Some(Bucket::Board),
            _ => Some(Bucket::Request),
        };
        if let Some(Err(wait)) = bucket.map(|bucket| self.rates.take(bucket)) {
            return self
                .rate_limited(bucket.expect("checked"), decoded.ok(), wait)
                .await;
        }
        self.limited = false;
        let msg = match decoded {
            Ok(msg) => msg,
            Err(e) => return self.reply(ServerMsg::error(ErrorCode::BadRequest, e.0)).await,
        };
        match (&msg, self.greeted, &self.user) {
            (ClientMsg::Hello { version, .. }, _, _) if *version != PROTOCOL_VERSION => {
                self.reply(ServerMsg::error(
                    ErrorCode::UnsupportedVersion,
                    format!("This server speaks protocol version {PROTOCOL_VERSION}, not {version}."),
                ))
                .await;
                self.close(close_code::PROTOCOL_ERROR, "unsupported protocol version")
                    .await;
                false
            }
            (
                ClientMsg::Hello {
                    token: Some(token), ..
                },
                false,
                _,
            ) => {
                match self.state.auth.verify(&self.state.chat.store, token).await {
                    Ok(signed_in) => self.sign_in(signed_in),
                    Err(auth::AuthFailure::Store(error)) => {
                        // Not the token's fault: say so and let the client reconnect.
                        tracing::warn!(connection = %self.id, %error, "session check failed: store unavailable");
                        self.reply(ServerMsg::error(
                            ErrorCode::Unavailable,
                            "Your session could not be checked just now; reconnecting.",
                        ))
                        .await;
                        self.close(close_code::TRY_AGAIN_LATER, "busy; reconnect and resume")
                            .await;
                        return false;
                    }
                    Err(failure) => {
                        tracing::warn!(connection = %self.id, ?failure, "auth failure: token in hello refused");
                        self.reply(ServerMsg::error(
                            ErrorCode::InvalidToken,
                            "That session token is invalid, expired or logged out; log in again.",
                        ))
                        .await;
                    }
                }
                self.on_hello().await
            }
            (ClientMsg::Hello { .. }, _, _) => self.on_hello().await,
            (ClientMsg::Pong {}, _, _) => true,
            (_, false, _) => {
                self.reply(ServerMsg::error(
                    ErrorCode::HelloRequired,
                    "Send hello before anything else.",
                ))
                .await
            }
            (_, true, None) => {
                self.reply(ServerMsg::error(
                    ErrorCode::NotSignedIn,
                    "Pick a display name first (POST /api/guest), then reconnect.",
                ))
                .await
            }
            (_, true, Some(user)) => {
                let chat = self.state.chat.clone();
                let caller = Caller {
                    id: self.id,
                    user,
                    tx: &self.tx,
                };
                if let Err(refusal) = chat.handle(&caller, msg).await {
                    return self.reply(ServerMsg::error(refusal.code, refusal.message)).await;
                }
                true
            }
        }
    }

    /// Answers a request over its rate limit: `rate_limited` with the wait, except typing,
    /// which is dropped silently (it is best effort anyway).
    async fn rate_limited(&mut self, bucket: Bucket, msg: Option<ClientMsg>, wait: Duration) -> bool {
        metrics().rate_limit_hits.inc();
        if !self.limited {
            tracing::warn!(connection = %self.id, ?bucket, "rate limit hit");
            self.limited = true;
        }
        if bucket == Bucket::Typing {
            return true;
        }
        let (client_msg_id, room) = match msg {
            Some(ClientMsg::Send { client_msg_id, .. }) => (Some(client_msg_id), None),
            Some(ClientMsg::Subscribe { room, .. }) => (None, Some(room)),
            _ => (None, None),
        };
        let retry_after_ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX).max(1);
        self.reply(ServerMsg::Error {
            code: ErrorCode::RateLimited,
            message: format!("You are sending too fast; wait {retry_after_ms} ms."),
            client_msg_id,
            retry_after_ms: Some(retry_after_ms),
            room,
        })
        .await
    }

    async fn on_hello(&mut self) -> bool {
        let chat = self.state.chat.clone();
        let rooms = match &self.user {
            Some(user) => match chat.rooms_of(user).await {
                Ok(rooms) => rooms,
                Err(refusal) => return self.reply(ServerMsg::error(refusal.code, refusal.message)).await,
            },
            None => Vec::new(),
        };
        let first_hello = !self.greeted;
        self.greeted = true;
        // Counted as online from now on; the hub hears of it only after `welcome` is queued,
        // so `welcome` is always the first answer to `hello`.
        let joining = first_hello && self.user.as_ref().is_some_and(|u| !chat.hub.is_online(u.id));
        let config = &self.state.config;
        let sent = self
            .reply(ServerMsg::Welcome {
                connection_id: self.id,
                server_version: env!("CARGO_PKG_VERSION").to_owned(),
                protocol_version: PROTOCOL_VERSION,
                limits: Limits {
                    max_message_chars: config.max_message_chars,
                    max_frame_bytes: config.max_frame_bytes,
                    max_history_page: config.max_history_page,
                    max_resume: config.max_resume,
                    heartbeat_s: config.heartbeat_s,
                    board_points_per_batch: config.board_points_per_batch,
                    board_batches_per_s: config.board_batches_per_s,
                },
                me: self.user.clone(),
                rooms,
                online: chat.hub.online_count() + u32::from(joining),
            })
            .await;
        if let (true, Some(user)) = (first_hello, &self.user) {
            let handle = ConnHandle {
                user: user.clone(),
                tx: self.tx.clone(),
                lagged: self.lagged.clone(),
            };
            chat.hub.register(self.id, handle);
        }
        sent
    }

    /// Queues a frame that may be dropped when the queue is full (a full queue means the
    /// connection is about to be closed as too slow anyway); false if the writer is gone.
    fn reply_now(&self, msg: ServerMsg) -> bool {
        !matches!(
            self.tx.try_send(Outbound::encode(&msg)),
            Err(TrySendError::Closed(_))
        )
    }

    /// Queues a reply to this client; false if the writer is gone.
    async fn reply(&self, msg: ServerMsg) -> bool {
        self.tx.send(Outbound::encode(&msg)).await.is_ok()
    }

    async fn close(&self, code: u16, reason: &'static str) {
        let _ = self.tx.send(Outbound::close(code, reason)).await;
    }
}

#[cfg(test)]
mod tests {
    //! The way out of a connection over real loopback sockets: frames written straight
    //! through by producers and frames the writer task sends from the queue must reach the
    //! peer whole and in each producer's order, also when the socket's buffer fills.

    use super::{wire, write_frames, Lagged, Outbound, OutboundTx, ServerMsg};
    use crate::protocol::ErrorCode;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpSocket, TcpStream};

    /// A connected pair: the peer's end (with a small receive buffer when `small` is set)
    /// and the server's writer (with a small send buffer then).
    async fn pair(small: bool) -> (TcpStream, wire::Writer) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = TcpSocket::new_v4().unwrap();
        if small {
            socket.set_recv_buffer_size(4096).unwrap();
        }
        let (peer, accepted) =
            tokio::join!(socket.connect(listener.local_addr().unwrap()), listener.accept());
        let server = accepted.unwrap().0;
        if small {
            socket2::SockRef::from(&server)
                .set_send_buffer_size(4096)
                .unwrap();
        }
        let (_read, writer) = wire::writer_over(server);
        std::mem::forget(_read); // the socket stays open for the writer
        (peer.unwrap(), writer)
    }

    /// The next server frame's text, or None at the end of the stream.
    async fn next_text(peer: &mut TcpStream) -> Option<String> {
        let mut head = [0u8; 2];
        if peer.read_exact(&mut head).await.is_err() {
            return None;
        }
        assert_eq!(head[0], 0x81, "a final text frame");
        let len = match head[1] {
            126 => peer.read_u16().await.unwrap() as usize,
            127 => peer.read_u64().await.unwrap() as usize,
            len => len as usize,
        };
        let mut payload = vec![0u8; len];
        peer.read_exact(&mut payload).await.unwrap();
        Some(String::from_utf8(payload).unwrap())
    }

    /// A frame whose text says who sent it and which of theirs it is, padded to `pad` bytes.
    fn frame(producer: u32, n: u32, pad: usize) -> Outbound {
        Outbound::encode(&ServerMsg::error(
            ErrorCode::BadRequest,
            format!("{producer}/{n}/{}", "x".repeat(pad)),
        ))
    }

    /// (producer, n) of a frame made by [`frame`].
    fn origin(text: &str) -> (u32, u32) {
        let ServerMsg::Error { message, .. } = ServerMsg::decode(text).unwrap() else {
            panic!("not an error frame: {text}");
        };
        let mut parts = message.split('/');
        (
            parts.next().unwrap().parse().unwrap(),
            parts.next().unwrap().parse().unwrap(),
        )
    }

    #[tokio::test]
    async fn a_frame_skips_the_queue_only_when_nothing_waits_before_it() {
        let (mut peer, writer) = pair(false).await;
        let (tx, rx) = OutboundTx::channel(8, Some(writer.shortcut()));
        tx.deliver(&frame(0, 1, 0)).unwrap();
        assert!(
            rx.is_empty(),
            "an idle connection's frame goes straight to the socket"
        );
        assert_eq!(origin(&next_text(&mut peer).await.unwrap()), (0, 1));

        tx.try_send(frame(0, 2, 0)).unwrap();
        tx.deliver(&frame(0, 3, 0)).unwrap();
        assert_eq!(rx.len(), 2, "a frame behind a queued one waits in the queue");
        let writer = tokio::spawn(write_frames(writer, rx, Lagged::default()));
        assert_eq!(origin(&next_text(&mut peer).await.unwrap()), (0, 2));
        assert_eq!(origin(&next_text(&mut peer).await.unwrap()), (0, 3));
        tx.deliver(&frame(0, 4, 0)).unwrap();
        assert_eq!(origin(&next_text(&mut peer).await.unwrap()), (0, 4));
        drop(tx);
        writer.await.unwrap();
        assert_eq!(
            next_text(&mut peer).await,
            None,
            "the writer ends the stream after the last frame"
        );
    }

    #[tokio::test]
    async fn frames_stay_whole_and_in_order_when_the_socket_fills() {
        let (mut peer, writer) = pair(true).await;
        let (tx, rx) = OutboundTx::channel(1024, Some(writer.shortcut()));
        // Nobody reads yet: the first frames fit the socket, one is cut where it fills (its
        // rest is left for the writer task), and the others queue behind it.
        for n in 0..300 {
            let frame = frame(0, n, 3000);
            if n % 7 == 3 {
                tx.try_send(frame).unwrap();
            } else {
                tx.deliver(&frame).unwrap();
            }
        }
        let queued = 1024 - tx.free_slots();
        assert!(
            queued > 0 && queued < 300,
            "{queued} of 300 queued: both ways were taken"
        );
        let writer = tokio::spawn(write_frames(writer, rx, Lagged::default()));
        drop(tx);
        for n in 0..300 {
            let text = next_text(&mut peer).await.expect("every frame arrives");
            assert_eq!(origin(&text), (0, n));
        }
        writer.await.unwrap();
        assert_eq!(next_text(&mut peer).await, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_producers_and_the_writer_keep_each_producers_order() {
        const PER_PRODUCER: u32 = 2000;
        let (mut peer, writer) = pair(true).await;
        let (tx, rx) = OutboundTx::channel(64, Some(writer.shortcut()));
        let writer = tokio::spawn(write_frames(writer, rx, Lagged::default()));
        let producers: Vec<_> = (0..2)
            .map(|producer| {
                let tx = tx.clone();
                tokio::spawn(async move {
                    for n in 0..PER_PRODUCER {
                        // Sizes vary so that writes are cut at different places.
                        let frame = frame(producer, n, (n as usize * 37) % 700);
                        let refused = if n % 5 == 0 {
                            tx.try_send(frame).err()
                        } else {
                            tx.deliver(&frame).err()
                        };
                        if let Some(refused) = refused {
                            // A full queue: wait for room, as a reply does.
                            let frame = refused.into_inner();
                            tx.send(frame).await.unwrap();
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        let mut next = [0u32; 2];
        while let Some(text) = next_text(&mut peer).await {
            let (producer, n) = origin(&text);
            assert_eq!(
                n, next[producer as usize],
                "producer {producer}'s frames in order"
            );
            next[producer as usize] += 1;
        }
        assert_eq!(next, [PER_PRODUCER; 2], "every frame arrived");
        for producer in producers {
            producer.await.unwrap();
        }
        writer.await.unwrap();
    }
}
