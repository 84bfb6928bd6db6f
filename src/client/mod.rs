//! Browser side of the connection (hydrate build only): opens the WebSocket, says hello,
//! subscribes to every room with the last seq it holds, applies server events to the
//! [`ChatState`], sends the screen's commands, and reconnects with jittered exponential backoff.

pub mod notify;
pub mod upload;

use crate::app::state::{ChatState, Command};
use crate::app::ConnStatus;
use crate::protocol::{
    ChatMessage, ClientMsg, ClientSettings, ErrorCode, MessageKind, RoomId, RoomKind, ServerMsg,
    PROTOCOL_VERSION,
};
use futures::channel::mpsc::UnboundedReceiver;
use futures::{SinkExt, StreamExt};
use gloo_net::websocket::{futures::WebSocket, Message};
use leptos::prelude::*;
use leptos::task::spawn_local;

/// A connection that has not opened by then is given up.
const HANDSHAKE_TIMEOUT_MS: u32 = 10_000;
/// While a room is on screen, read marks go to the server at most this often.
const READ_MARK_DELAY_MS: u32 = 1500;

/// How one connection ended.
enum Ended {
    /// It got as far as `welcome`.
    AfterWelcome,
    /// It never got that far.
    Failed,
    /// The screen asked for a fresh connection (after signing in).
    Requested,
}

/// Starts the connection loop; runs for the life of the page.
pub fn start(state: ChatState) {
    let (tx, mut commands) = futures::channel::mpsc::unbounded::<Command>();
    state.attach(tx, random_prefix());
    state.restore_session();
    state.notifications.set(notify::permission());
    retry_when_network_returns(state);
    let settings = state.settings;
    spawn_local(async move {
        let mut failures: u32 = 0;
        loop {
            match connect_once(state, &mut commands).await {
                Ended::AfterWelcome => failures = 0,
                Ended::Requested => {
                    failures = 0;
                    continue;
                }
                Ended::Failed => {}
            }
            failures = failures.saturating_add(1);
            if settings.reconnect_max_attempts != 0 && failures >= settings.reconnect_max_attempts {
                wait_for_manual_retry(state, &mut commands).await;
                failures = 0;
                continue;
            }
            let retry_at = now() + backoff_ms(&settings, failures) as i64;
            wait_for_retry(state, &mut commands, retry_at).await;
        }
    });
}

fn now() -> i64 {
    js_sys::Date::now() as i64
}

fn browser_online() -> bool {
    window().navigator().on_line()
}

/// Shows the countdown (or "offline") until `retry_at`, a "retry now", or the network
/// coming back, whichever is first.
async fn wait_for_retry(state: ChatState, commands: &mut UnboundedReceiver<Command>, retry_at: i64) {
    let mut ticks = gloo_timers::future::IntervalStream::new(1000);
    loop {
        state.clock.set(now());
        let offline = !browser_online();
        state.status.set(if offline {
            ConnStatus::Offline
        } else {
            ConnStatus::Reconnecting { retry_at }
        });
        if !offline && now() >= retry_at {
            return;
        }
        let next = futures::future::select(ticks.next(), commands.next()).await;
        if let futures::future::Either::Right((Some(Command::RetryNow | Command::Reconnect), _)) = next {
            return;
        }
    }
}

/// After the attempt cap: shows "offline" until "retry now" or the network coming back
/// (the `online` and visibility listeners send the same command).
async fn wait_for_manual_retry(state: ChatState, commands: &mut UnboundedReceiver<Command>) {
    state.status.set(ConnStatus::GaveUp);
    while let Some(command) = commands.next().await {
        if matches!(command, Command::RetryNow | Command::Reconnect) {
            return;
        }
    }
}

/// The browser's `online` event and the tab becoming visible both cut the wait short;
/// its `offline` event drops the socket at once.
fn retry_when_network_returns(state: ChatState) {
    use leptos::wasm_bindgen::{closure::Closure, JsCast};
    let retry = Closure::<dyn Fn()>::new(move || {
        if !document().hidden() && state.status.get_untracked() != ConnStatus::Connected {
            state.command(Command::RetryNow);
        }
    });
    let callback = retry.as_ref().unchecked_ref();
    let _ = window().add_event_listener_with_callback("online", callback);
    let _ = document().add_event_listener_with_callback("visibilitychange", callback);
    retry.forget(); // lives as long as the page
                    // Going offline usually leaves a socket that will never deliver again: drop it now
                    // rather than waiting for the heartbeat to notice.
    let drop_socket = Closure::<dyn Fn()>::new(move || state.command(Command::Reconnect));
    let _ = window().add_event_listener_with_callback("offline", drop_socket.as_ref().unchecked_ref());
    drop_socket.forget();
}

/// A random tag for this page's client message ids, so ids never repeat across reloads.
fn random_prefix() -> String {
    let a = (js_sys::Math::random() * 4_294_967_296.0) as u64;
    let b = (js_sys::Math::random() * 4_294_967_296.0) as u64;
    format!("{:x}", (a << 32) | b)
}

/// Full jitter: a uniform wait between 0 and the capped exponential bound.
fn backoff_ms(settings: &ClientSettings, failures: u32) -> u32 {
    (js_sys::Math::random() * f64::from(settings.backoff_bound_ms(failures))) as u32
}

/// `ws://host/ws` or `wss://host/ws`, matching how the page was loaded.
fn socket_url() -> String {
    let location = window().location();
    let scheme = if location.protocol().ok().as_deref() == Some("https:") {
        "wss"
    } else {
        "ws"
    };
    let host = location.host().unwrap_or_default();
    format!("{scheme}://{host}/ws")
}

enum Event {
    Frame(Result<Message, gloo_net::websocket::WebSocketError>),
    Command(Command),
    Tick,
}

async fn connect_once(state: ChatState, commands: &mut UnboundedReceiver<Command>) -> Ended {
    // Commands queued while disconnected are stale; pending sends are re-derived from state.
    while commands.try_recv().is_ok() {}
    let Ok(socket) = WebSocket::open(&socket_url()) else {
        return Ended::Failed;
    };
    let (mut sink, stream) = socket.split();
    if state.status.get_untracked() != ConnStatus::Connecting {
        state.clock.set(now());
        state.status.set(ConnStatus::Reconnecting { retry_at: now() });
    }
    // A handshake that hangs (no open, no close) must not hang the client with it.
    let hello = ClientMsg::Hello {
        version: PROTOCOL_VERSION,
        token: None, // the browser's HttpOnly cookie went with the upgrade
    }
    .encode();
    let opened = futures::future::select(
        sink.send(Message::Text(hello)),
        gloo_timers::future::TimeoutFuture::new(HANDSHAKE_TIMEOUT_MS),
    )
    .await;
    if !matches!(opened, futures::future::Either::Left((Ok(()), _))) {
        return Ended::Failed;
    }
    let mut welcomed = false;
    let mut last_heard = now();
    let ticks = gloo_timers::future::IntervalStream::new(1000).map(|_| Event::Tick);
    let frames = stream.map(Event::Frame);
    let mut events = futures::stream::select(
        futures::stream::select(frames, ticks),
        commands.by_ref().map(Event::Command),
    );
    while let Some(event) = events.next().await {
        match event {
            Event::Frame(Ok(Message::Text(text))) => {
                last_heard = now();
                match ServerMsg::decode(&text) {
                    Ok(msg) => {
                        if matches!(msg, ServerMsg::Welcome { .. }) {
                            welcomed = true;
                        }
                        for reply in apply(state, msg) {
                            if sink.send(Message::Text(reply.encode())).await.is_err() {
                                break;
                            }
                        }
                    }
                    Err(e) => leptos::logging::warn!("unreadable frame from server: {}", e.0),
                }
            }
            Event::Frame(Ok(Message::Bytes(_))) => last_heard = now(),
            Event::Frame(Err(_)) => break,
            Event::Tick => {
                // A half-open connection delivers nothing, not even pings: treat silence
                // past two heartbeats as a dead socket.
                let heartbeat_ms = state
                    .limits
                    .with_untracked(|l| l.as_ref().map(|l| l.heartbeat_s))
                    .unwrap_or(20) as i64
                    * 1000;
                if now() - last_heard > 2 * heartbeat_ms + 2000 {
                    leptos::logging::warn!("no traffic from the server; reconnecting");
                    break;
                }
            }
            Event::Command(Command::Send(msg)) => {
                if welcomed && sink.send(Message::Text(msg.encode())).await.is_err() {
                    break;
                }
            }
            Event::Command(Command::Reconnect) => return Ended::Requested,
            Event::Command(Command::RetryNow) => {}
        }
    }
    if welcomed {
        Ended::AfterWelcome
    } else {
        Ended::Failed
    }
}

/// Applies one server event to the state; returns requests to send in answer.
fn apply(state: ChatState, msg: ServerMsg) -> Vec<ClientMsg> {
    let mut replies = Vec::new();
    match msg {
        ServerMsg::Welcome {
            limits,
            me,
            rooms,
            online,
            ..
        } => {
            state.limits.set(Some(limits));
            let previous = state.last_user.get_value();
            match &me {
                // A session that was signed in has ended (logged out elsewhere, expired): keep
                // the screen as it is (drafts, pending messages) behind the log-in dialog.
                None if previous.is_some() => {
                    state.session_ended.set(true);
                    state.needs_name.set(true);
                    state.me.set(None);
                    state.status.set(ConnStatus::Connected);
                    return replies;
                }
                None => {}
                Some(user) => {
                    if previous.is_some_and(|p| p != user.id) {
                        // Someone else signed in: nothing of the previous person stays on screen.
                        for room in state.rooms.get_untracked() {
                            state.remove_room(room.id);
                        }
                        state.current.set(None);
                    }
                    state.last_user.set_value(Some(user.id));
                    state.session_ended.set(false);
                }
            }
            state.needs_name.set(me.is_none());
            state.me.set(me);
            state.online_count.set(online);
            let listed: Vec<RoomId> = rooms.iter().map(|r| r.id).collect();
            for stale in state
                .rooms
                .get_untracked()
                .iter()
                .filter(|r| !listed.contains(&r.id))
            {
                state.remove_room(stale.id);
            }
            for info in rooms {
                let room = state.upsert_room(info);
                replies.push(ClientMsg::Subscribe {
                    room: room.id,
                    after_seq: room.synced_seq.get_untracked(),
                });
            }
            if state.current.get_untracked().is_none() {
                state
                    .current
                    .set(state.rooms.with_untracked(|r| r.first().map(|r| r.id)));
            }
            // Messages written before a reload or while offline go out again, in order,
            // with their original ids, so none is lost and none is stored twice.
            // An open whiteboard loads its picture again: changes made while away are in it.
            if let Some(room) = state.board.room.get_untracked() {
                state.board.begin_loading(room);
                replies.push(ClientMsg::OpenBoard { room });
            }
            state.restore_outbox();
            state.save_session();
            replies.extend(state.pending_sends());
            state.status.set(ConnStatus::Connected);
        }
        ServerMsg::Backlog {
            room,
            messages,
            gap,
            more,
        } => {
            if let Some(room_state) = state.room(room) {
                if gap {
                    // Older local messages no longer join up with this page: drop them and
                    // let the person page backwards from here.
                    room_state.timeline.update(|t| t.retain(|i| i.seq.is_none()));
                }
                let first = messages.first().map(|m| m.seq);
                // The room's unread count (from `welcome` or `joined`) covers messages up to
                // the last seq known then; newer ones in the replay are unread too.
                let known = room_state.info.with_untracked(|i| i.last_seq);
                let fresh: Vec<&ChatMessage> = messages
                    .iter()
                    .filter(|m| m.seq > known && m.kind == MessageKind::Text && !state.is_me(m.author.id))
                    .collect();
                let (fresh_count, fresh_mentions) = (
                    fresh.len() as u32,
                    fresh.iter().filter(|m| state.mentions_me(m)).count() as u32,
                );
                room_state.merge(messages);
                let reading = state.current.get_untracked() == Some(room) && page_visible();
                if fresh_count > 0 && !reading {
                    room_state.unread.update(|n| *n += fresh_count);
                    room_state.mentions.update(|n| *n += fresh_mentions);
                }
                if room_state.synced_seq.get_untracked().is_none() || gap {
                    room_state.has_older.set(first.is_some_and(|s| s.0 > 1));
                }
                room_state.synced_seq.set(room_state.newest_seq());
                if !more && state.current.get_untracked() == Some(room) && page_visible() {
                    state.mark_read(room);
                }
            }
        }
        ServerMsg::Message { message } => {
            let room = message.room;
            if let Some(room_state) = state.room(room) {
                let counts = message.kind == MessageKind::Text && !state.is_me(message.author.id);
                let mentions_me = state.mentions_me(&message);
                let direct = room_state.info.with_untracked(|i| i.kind == RoomKind::Direct);
                if counts && (mentions_me || direct) {
                    notify::message(state, &message, room_state);
                }
                // Live joins and leaves keep the member count current between welcomes.
                match message.kind {
                    MessageKind::Join => room_state.info.update(|i| i.members += 1),
                    MessageKind::Leave => room_state
                        .info
                        .update(|i| i.members = i.members.saturating_sub(1)),
                    _ => {}
                }
                room_state.merge(vec![message]);
                room_state.synced_seq.set(room_state.newest_seq());
                if state.current.get_untracked() == Some(room) && page_visible() {
                    schedule_read_mark(state, room);
                } else if counts {
                    room_state.unread.update(|n| *n += 1);
                    if mentions_me {
                        room_state.mentions.update(|n| *n += 1);
                    }
                }
            }
        }
        ServerMsg::History {
            room,
            messages,
            has_more,
        } => {
            if let Some(room_state) = state.room(room) {
                room_state.merge(messages);
                room_state.has_older.set(has_more);
                room_state.loading_older.set(false);
            }
        }
        ServerMsg::Around {
            room,
            messages,
            has_older,
            ..
        } => state.on_around(room, messages, has_older),
        ServerMsg::SearchResults {
            query,
            page,
            hits,
            has_more,
        } => state.search.on_results(query, page, hits, has_more),
        ServerMsg::Ack {
            room,
            client_msg_id,
            seq,
            ..
        } => state.acked(room, &client_msg_id, seq),
        ServerMsg::Presence { room, online, total } => {
            if let Some(room_state) = state.room(room) {
                room_state
                    .info
                    .update(|i| i.online = total.max(online.len() as u32));
                room_state.online.set(online);
            }
        }
        ServerMsg::OnlineCount { online } => state.online_count.set(online),
        ServerMsg::Typing { room, users } => {
            if let Some(room_state) = state.room(room) {
                room_state
                    .typing
                    .set(users.into_iter().filter(|u| !state.is_me(u.id)).collect());
            }
        }
        ServerMsg::Unread { room, unread } => {
            if let Some(room_state) = state.room(room) {
                room_state.unread.set(unread);
                if unread == 0 {
                    room_state.mentions.set(0);
                }
            }
        }
        ServerMsg::Mentions { hits } => state.search.on_mentions(hits),
        ServerMsg::Joined { room } => {
            let id = room.id;
            let room_state = state.upsert_room(room);
            replies.push(ClientMsg::Subscribe {
                room: id,
                after_seq: room_state.synced_seq.get_untracked(),
            });
            if state.open_next_joined.get_value() {
                state.open_next_joined.set_value(false);
                state.open_room(id);
            }
        }
        ServerMsg::Left { room } => state.remove_room(room),
        ServerMsg::RoomDirectory { rooms } => state.directory.set(Some(rooms)),
        ServerMsg::Ping {} => replies.push(ClientMsg::Pong {}),
        ServerMsg::Board {
            room,
            segments,
            upto,
            more,
        } => state.board.on_picture(room, segments, upto, more, now()),
        event @ (ServerMsg::Drawn { .. }
        | ServerMsg::StrokeUndone { .. }
        | ServerMsg::BoardCleared { .. }) => state.board.on_event(event, now()),
        ServerMsg::Error {
            code: ErrorCode::RateLimited | ErrorCode::Unavailable,
            client_msg_id: Some(id),
            retry_after_ms,
            ..
        } => {
            // Not a refusal: the message stays pending and goes again after the wait.
            spawn_local(async move {
                gloo_timers::future::TimeoutFuture::new(retry_after_ms.unwrap_or(1000)).await;
                state.resend_pending(&id);
            });
        }
        ServerMsg::Error {
            code: ErrorCode::RateLimited | ErrorCode::Unavailable,
            client_msg_id: None,
            room: Some(room),
            retry_after_ms,
            ..
        } => {
            // A refused subscribe: without it the room would stay stale, so it goes again.
            spawn_local(async move {
                gloo_timers::future::TimeoutFuture::new(retry_after_ms.unwrap_or(1000)).await;
                if let Some(room_state) = state.room(room) {
                    state.request(ClientMsg::Subscribe {
                        room,
                        after_seq: room_state.synced_seq.get_untracked(),
                    });
                }
            });
        }
        ServerMsg::Error {
            code,
            message,
            client_msg_id,
            ..
        } => match client_msg_id {
            Some(id) => state.refused(&id, message),
            None => {
                leptos::logging::warn!("server refused a request: {code}: {message}");
                state.search.searching.set(false);
                state.notice.set(Some(message));
            }
        },
    }
    replies
}

fn page_visible() -> bool {
    !document().hidden()
}

/// Sends one read mark for `room` a little later, however many messages arrive meanwhile.
fn schedule_read_mark(state: ChatState, room: RoomId) {
    if state.read_mark_scheduled.get_value() {
        return;
    }
    state.read_mark_scheduled.set_value(true);
    spawn_local(async move {
        gloo_timers::future::TimeoutFuture::new(READ_MARK_DELAY_MS).await;
        state.read_mark_scheduled.set_value(false);
        if state.current.get_untracked() == Some(room) {
            state.mark_read(room);
        }
    });
}

/// The ways the welcome dialog signs someone in.
pub enum Account {
    Guest { name: String },
    LogIn { name: String, password: String },
    Register { name: String, password: String },
}

/// Signs in over HTTP; the session cookie comes back HttpOnly, so the next socket carries it.
pub async fn sign_in(account: Account) -> Result<(), String> {
    let (path, body) = match account {
        Account::Guest { name } => ("/api/guest", serde_json::json!({ "name": name })),
        Account::LogIn { name, password } => (
            "/api/login",
            serde_json::json!({ "name": name, "password": password }),
        ),
        Account::Register { name, password } => (
            "/api/register",
            serde_json::json!({ "name": name, "password": password }),
        ),
    };
    post_json(path, body).await
}

/// Logs out: the server ends the session and closes its sockets; the page starts afresh.
pub async fn log_out(state: ChatState) -> Result<(), String> {
    post_json("/api/logout", serde_json::json!({})).await?;
    state.forget_session();
    let _ = window().location().reload();
    Ok(())
}

async fn post_json(path: &str, body: serde_json::Value) -> Result<(), String> {
    let request = gloo_net::http::Request::post(path)
        .json(&body)
        .map_err(|e| e.to_string())?;
    let response = request
        .send()
        .await
        .map_err(|_| "Could not reach the server; please retry.".to_owned())?;
    if response.ok() {
        return Ok(());
    }
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    Err(body["message"]
        .as_str()
        .unwrap_or("That did not work; please retry.")
        .to_owned())
}
