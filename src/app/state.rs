//! The browser's view of the chat, as reactive signals: rooms, timelines, presence, typing,
//! unread counts and pending sends. The connection (`client`, hydrate build) writes it from
//! server events; components read it and call its methods to act. On the server it stays in
//! its initial state, so the rendered HTML matches what hydration expects.

use crate::protocol::{
    Attachment, ChatMessage, ClientMsg, ClientMsgId, ClientSettings, Limits, MessageKind, RoomId, RoomInfo,
    RoomKind, SearchHit, Seq, Timestamp, UserId, UserRef,
};
use leptos::prelude::*;

use super::ConnStatus;

/// Where one of the user's own messages is on its way to the server.
#[derive(Clone, Debug, PartialEq)]
pub enum Delivery {
    /// Shown at once; waiting for the server's ack.
    Pending,
    /// Stored by the server.
    Sent,
    /// Refused by the server, with its reason; can be retried or discarded.
    Failed(String),
}

/// One line in a room's timeline: a stored message, or an own message not yet acked.
#[derive(Clone, Debug, PartialEq)]
pub struct TimelineItem {
    /// Stable key for rendering: the client id while pending, then kept.
    pub key: String,
    pub seq: Option<Seq>,
    pub kind: MessageKind,
    pub author: UserRef,
    pub text: String,
    pub ts: Timestamp,
    pub client_msg_id: Option<ClientMsgId>,
    pub delivery: Delivery,
    /// Text messages: changed by the author since sent / deleted (text is empty then).
    pub edited: bool,
    pub deleted: bool,
    /// Edit and delete events: the message they change.
    pub target_seq: Option<Seq>,
    /// Kick and ban events: who was removed.
    pub target: Option<UserRef>,
    /// Files sent with a text message.
    pub attachments: Vec<Attachment>,
}

impl TimelineItem {
    pub fn from_message(message: ChatMessage) -> Self {
        TimelineItem {
            key: message
                .client_msg_id
                .as_ref()
                .map(|c| format!("c-{}", c.0))
                .unwrap_or_else(|| format!("s-{}", message.seq.0)),
            seq: Some(message.seq),
            kind: message.kind,
            author: message.author,
            text: message.text,
            ts: message.ts,
            client_msg_id: message.client_msg_id,
            delivery: Delivery::Sent,
            edited: message.edited,
            deleted: message.deleted,
            target_seq: message.target_seq,
            target: message.target,
            attachments: message.attachments,
        }
    }

    /// One of the user's own messages that the server has not stored yet.
    fn pending(
        author: UserRef,
        text: String,
        attachments: Vec<Attachment>,
        ts: Timestamp,
        client_msg_id: ClientMsgId,
        delivery: Delivery,
    ) -> Self {
        TimelineItem {
            key: format!("c-{}", client_msg_id.0),
            seq: None,
            kind: MessageKind::Text,
            author,
            text,
            ts,
            client_msg_id: Some(client_msg_id),
            delivery,
            edited: false,
            deleted: false,
            target_seq: None,
            target: None,
            attachments,
        }
    }

    /// The ids of its files, as a send carries them.
    pub fn attachment_ids(&self) -> Vec<String> {
        self.attachments.iter().map(|a| a.id.clone()).collect()
    }

    /// The `send` that stores this pending message.
    fn as_send(&self, room: RoomId) -> Option<ClientMsg> {
        Some(ClientMsg::Send {
            room,
            client_msg_id: self.client_msg_id.clone()?,
            text: self.text.clone(),
            attachments: self.attachment_ids(),
        })
    }

    /// Applies an edit or delete event to the message it targets.
    fn amend(&mut self, event: &TimelineItem) {
        match event.kind {
            MessageKind::Edit => {
                self.text = event.text.clone();
                self.edited = true;
            }
            MessageKind::Delete => {
                self.text.clear();
                self.attachments.clear();
                self.deleted = true;
            }
            _ => {}
        }
    }
}

/// Everything the screen shows about one room. Each part is its own signal so a new message
/// does not re-render the member list and so on.
#[derive(Clone, Copy)]
pub struct RoomState {
    pub id: RoomId,
    pub info: RwSignal<RoomInfo>,
    /// Stored messages in seq order, then pending own messages in send order.
    pub timeline: RwSignal<Vec<TimelineItem>>,
    pub online: RwSignal<Vec<UserRef>>,
    pub typing: RwSignal<Vec<UserRef>>,
    pub unread: RwSignal<u32>,
    /// Unread messages that mention this user.
    pub mentions: RwSignal<u32>,
    /// Newest seq received without a gap before it: what a resume asks to continue from.
    pub synced_seq: RwSignal<Option<Seq>>,
    /// Older messages exist on the server that the timeline does not hold yet.
    pub has_older: RwSignal<bool>,
    pub loading_older: RwSignal<bool>,
    /// A message to bring into view and mark (opened from a search result).
    pub highlight: RwSignal<Option<Seq>>,
    /// Files being uploaded or uploaded for the next message, in the composer.
    pub uploads: RwSignal<Vec<Upload>>,
}

/// A file picked for the next message.
#[derive(Clone, Debug, PartialEq)]
pub struct Upload {
    /// Local key (also cancels the transfer).
    pub key: u32,
    pub name: String,
    pub size: f64,
    pub state: UploadState,
}

#[derive(Clone, Debug, PartialEq)]
pub enum UploadState {
    /// Sent so far, 0 to 1.
    Sending(f64),
    Ready(Attachment),
    Failed(String),
}

impl RoomState {
    fn new(info: RoomInfo) -> Self {
        RoomState {
            id: info.id,
            unread: RwSignal::new(info.unread),
            mentions: RwSignal::new(info.mentions),
            info: RwSignal::new(info),
            timeline: RwSignal::new(Vec::new()),
            online: RwSignal::new(Vec::new()),
            typing: RwSignal::new(Vec::new()),
            synced_seq: RwSignal::new(None),
            has_older: RwSignal::new(false),
            loading_older: RwSignal::new(false),
            highlight: RwSignal::new(None),
            uploads: RwSignal::new(Vec::new()),
        }
    }

    /// Adds stored messages (replay, live or history), skipping ones already present and
    /// replacing the pending copy of an own message.
    pub fn merge(&self, messages: Vec<ChatMessage>) {
        if messages.is_empty() {
            return;
        }
        self.timeline.update(|timeline| {
            for message in messages {
                if timeline.iter().any(|item| item.seq == Some(message.seq)) {
                    continue;
                }
                let item = TimelineItem::from_message(message);
                if let Some(cmid) = &item.client_msg_id {
                    timeline.retain(|t| t.seq.is_some() || t.client_msg_id.as_ref() != Some(cmid));
                }
                if item.kind.amends() {
                    if let Some(target) = timeline
                        .iter_mut()
                        .find(|t| t.seq.is_some() && t.seq == item.target_seq)
                    {
                        target.amend(&item);
                    }
                }
                let seq = item.seq;
                // Stored items stay in seq order, ahead of pending ones.
                let position = timeline
                    .iter()
                    .position(|t| t.seq.is_none() || t.seq > seq)
                    .unwrap_or(timeline.len());
                timeline.insert(position, item);
            }
        });
        let newest = self
            .timeline
            .with_untracked(|t| t.iter().filter_map(|i| i.seq).max());
        self.info.update(|info| {
            if let Some(newest) = newest {
                info.last_seq = info.last_seq.max(newest);
            }
        });
    }

    pub fn oldest_seq(&self) -> Option<Seq> {
        self.timeline
            .with_untracked(|t| t.iter().filter_map(|i| i.seq).min())
    }

    pub fn newest_seq(&self) -> Option<Seq> {
        self.timeline
            .with_untracked(|t| t.iter().filter_map(|i| i.seq).max())
    }

    fn set_delivery(&self, client_msg_id: &ClientMsgId, delivery: Delivery, seq: Option<Seq>) {
        self.timeline.update(|timeline| {
            if let Some(item) = timeline
                .iter_mut()
                .find(|t| t.client_msg_id.as_ref() == Some(client_msg_id))
            {
                item.delivery = delivery;
                if item.seq.is_none() {
                    item.seq = seq;
                }
            }
        });
    }
}

/// The search panel: what is asked and what came back.
#[derive(Clone, Copy)]
pub struct SearchState {
    pub open: RwSignal<bool>,
    pub query: RwSignal<String>,
    /// Only the room shown when searching.
    pub this_room: RwSignal<bool>,
    /// An author's name, or empty for anyone.
    pub author: RwSignal<String>,
    /// Only the last this many days; 0 for any time.
    pub within_days: RwSignal<u32>,
    pub hits: RwSignal<Vec<SearchHit>>,
    pub has_more: RwSignal<bool>,
    pub page: RwSignal<u32>,
    pub searching: RwSignal<bool>,
    /// The query the shown results answer (None before the first search).
    pub answered: RwSignal<Option<String>>,
    /// The panel lists the messages that mention this user instead of search results.
    pub mentions_mode: RwSignal<bool>,
}

impl SearchState {
    fn new() -> Self {
        SearchState {
            open: RwSignal::new(false),
            query: RwSignal::new(String::new()),
            this_room: RwSignal::new(false),
            author: RwSignal::new(String::new()),
            within_days: RwSignal::new(0),
            hits: RwSignal::new(Vec::new()),
            has_more: RwSignal::new(false),
            page: RwSignal::new(0),
            searching: RwSignal::new(false),
            answered: RwSignal::new(None),
            mentions_mode: RwSignal::new(false),
        }
    }

    /// The list of messages that mention this user arrived.
    pub fn on_mentions(&self, hits: Vec<SearchHit>) {
        self.mentions_mode.set(true);
        self.hits.set(hits);
        self.has_more.set(false);
        self.searching.set(false);
        self.answered.set(None);
    }

    /// A page of results arrived: the first replaces, later ones append.
    pub fn on_results(&self, query: String, page: u32, hits: Vec<SearchHit>, has_more: bool) {
        self.mentions_mode.set(false);
        if page == 0 {
            self.hits.set(hits);
        } else {
            self.hits.update(|all| all.extend(hits));
        }
        self.page.set(page);
        self.has_more.set(has_more);
        self.searching.set(false);
        self.answered.set(Some(query));
    }
}

/// Commands from the screen to the connection.
#[derive(Clone, Debug)]
pub enum Command {
    Send(ClientMsg),
    /// Drop the socket and connect again at once (after signing in).
    Reconnect,
    /// Skip the rest of the backoff wait (button, network back, tab visible again).
    RetryNow,
}

/// The whole client-side state; `Copy`, provided as context.
#[derive(Clone, Copy)]
pub struct ChatState {
    pub status: RwSignal<ConnStatus>,
    /// Browser clock (ms), ticking once a second while disconnected, for countdowns.
    pub clock: RwSignal<Timestamp>,
    pub me: RwSignal<Option<UserRef>>,
    /// The server said this browser has no user yet: show the welcome dialog.
    pub needs_name: RwSignal<bool>,
    /// A signed-in session ended (log-out elsewhere, expiry): the dialog asks to log in again.
    pub session_ended: RwSignal<bool>,
    /// The last user this page was signed in as, to notice a different person signing in.
    pub last_user: StoredValue<Option<UserId>>,
    /// What the server rendered into the page (reconnect schedule, guests allowed).
    pub settings: ClientSettings,
    pub limits: RwSignal<Option<Limits>>,
    pub rooms: RwSignal<Vec<RoomState>>,
    pub current: RwSignal<Option<RoomId>>,
    pub online_count: RwSignal<u32>,
    /// Public rooms, when the directory was asked for.
    pub directory: RwSignal<Option<Vec<RoomInfo>>>,
    /// A notice for the person (refused request, ...); cleared when dismissed.
    pub notice: RwSignal<Option<String>>,
    /// Open the next room the server says we joined (set when this tab asked to join one).
    pub open_next_joined: StoredValue<bool>,
    /// A read mark is already on its way (see `client::schedule_read_mark`).
    pub read_mark_scheduled: StoredValue<bool>,
    /// The open whiteboard.
    pub board: super::board_state::BoardState,
    pub search: SearchState,
    /// Browser notification permission: "default", "granted", "denied" or "unsupported"
    /// (read once hydrated; "unsupported" on the server).
    pub notifications: RwSignal<&'static str>,
    /// Where commands go; set by the connection (hydrate build only).
    commands: StoredValue<Option<futures::channel::mpsc::UnboundedSender<Command>>>,
    /// Counter for client message ids, combined with a random prefix.
    next_local_id: StoredValue<u64>,
    session_prefix: StoredValue<String>,
}

impl ChatState {
    pub fn new() -> Self {
        ChatState {
            status: RwSignal::new(ConnStatus::Connecting),
            clock: RwSignal::new(0),
            me: RwSignal::new(None),
            needs_name: RwSignal::new(false),
            session_ended: RwSignal::new(false),
            last_user: StoredValue::new(None),
            settings: page_settings(),
            limits: RwSignal::new(None),
            rooms: RwSignal::new(Vec::new()),
            current: RwSignal::new(None),
            online_count: RwSignal::new(0),
            directory: RwSignal::new(None),
            notice: RwSignal::new(None),
            open_next_joined: StoredValue::new(false),
            read_mark_scheduled: StoredValue::new(false),
            board: super::board_state::BoardState::new(),
            search: SearchState::new(),
            notifications: RwSignal::new("unsupported"),
            commands: StoredValue::new(None),
            next_local_id: StoredValue::new(0),
            session_prefix: StoredValue::new(String::new()),
        }
    }

    /// Connects the state to the connection's command channel.
    pub fn attach(&self, commands: futures::channel::mpsc::UnboundedSender<Command>, session_prefix: String) {
        self.commands.set_value(Some(commands));
        self.session_prefix.set_value(session_prefix);
    }

    pub fn command(&self, command: Command) {
        self.commands.with_value(|tx| {
            if let Some(tx) = tx {
                let _ = tx.unbounded_send(command);
            }
        });
    }

    pub fn request(&self, msg: ClientMsg) {
        self.command(Command::Send(msg));
    }

    pub fn room(&self, id: RoomId) -> Option<RoomState> {
        self.rooms
            .with_untracked(|rooms| rooms.iter().find(|r| r.id == id).copied())
    }

    pub fn current_room(&self) -> Option<RoomState> {
        let id = self.current.get()?;
        self.rooms
            .with(|rooms| rooms.iter().find(|r| r.id == id).copied())
    }

    /// Adds or refreshes a room the user belongs to; returns its state.
    pub fn upsert_room(&self, info: RoomInfo) -> RoomState {
        if let Some(existing) = self.room(info.id) {
            existing.unread.set(info.unread);
            existing.mentions.set(info.mentions);
            existing.info.update(|current| {
                let last_seq = current.last_seq.max(info.last_seq);
                *current = info;
                current.last_seq = last_seq;
            });
            return existing;
        }
        let state = RoomState::new(info);
        self.rooms.update(|rooms| {
            rooms.push(state);
            rooms.sort_by_cached_key(|r| {
                r.info
                    .with_untracked(|i| (i.kind == RoomKind::Direct, i.name.to_lowercase()))
            });
        });
        state
    }

    pub fn remove_room(&self, id: RoomId) {
        self.rooms.update(|rooms| rooms.retain(|r| r.id != id));
        if self.current.get_untracked() == Some(id) {
            let first = self.rooms.with_untracked(|rooms| rooms.first().map(|r| r.id));
            self.current.set(first);
        }
    }

    /// Shows a room and marks it read; a whiteboard of another room closes.
    pub fn open_room(&self, id: RoomId) {
        if self.board.room.get_untracked().is_some_and(|open| open != id) {
            self.close_board();
        }
        self.current.set(Some(id));
        self.mark_read(id);
    }

    /// Opens the panel on the messages that mention this user.
    pub fn show_mentions(&self) {
        self.search.open.set(true);
        self.search.searching.set(true);
        self.request(ClientMsg::Mentions {});
    }

    /// Unread messages and mentions over all rooms, for the tab title.
    pub fn unread_total(&self) -> u32 {
        self.rooms
            .with(|rooms| rooms.iter().map(|r| r.unread.get()).sum())
    }

    /// Asks for page `page` of the search in the panel.
    pub fn run_search(&self, page: u32) {
        let search = self.search;
        let query = search.query.get_untracked();
        if query.trim().is_empty() {
            return;
        }
        let author = search.author.get_untracked().trim().to_owned();
        let days = search.within_days.get_untracked();
        search.searching.set(true);
        self.request(ClientMsg::Search {
            query,
            room: search
                .this_room
                .get_untracked()
                .then(|| self.current.get_untracked())
                .flatten(),
            author: (!author.is_empty()).then_some(author),
            since: (days > 0).then(|| now_ms() - i64::from(days) * 86_400_000),
            until: None,
            page,
        });
    }

    /// Opens `room` at message `seq`, marked, loading it and its neighbours if needed.
    pub fn jump_to(&self, room: RoomId, seq: Seq) {
        let Some(room_state) = self.room(room) else {
            return;
        };
        self.open_room(room);
        room_state.highlight.set(Some(seq));
        let loaded = room_state
            .timeline
            .with_untracked(|t| t.iter().any(|i| i.seq == Some(seq)));
        if !loaded {
            self.request(ClientMsg::Around { room, seq });
        }
    }

    /// The window around a search result arrived: it joins the timeline, maybe with a hole
    /// before the newer messages, which the person fills with "Load newer messages".
    pub fn on_around(&self, room: RoomId, messages: Vec<ChatMessage>, has_older: bool) {
        let Some(room_state) = self.room(room) else {
            return;
        };
        let window_start = messages.first().map(|m| m.seq);
        let older_than_loaded = match (window_start, room_state.oldest_seq()) {
            (Some(start), Some(oldest)) => start < oldest,
            (Some(_), None) => true,
            _ => false,
        };
        room_state.merge(messages);
        if older_than_loaded {
            room_state.has_older.set(has_older);
        }
    }

    /// Shows the room's whiteboard (the picture, then live changes).
    pub fn open_board(&self, room: RoomId) {
        if self.board.room.get_untracked().is_some_and(|open| open != room) {
            self.close_board();
        }
        self.board.begin_loading(room);
        self.request(ClientMsg::OpenBoard { room });
    }

    pub fn close_board(&self) {
        if let Some(room) = self.board.room.get_untracked() {
            self.request(ClientMsg::CloseBoard { room });
        }
        self.board.close();
    }

    /// Tells the server the user has seen the room's newest message.
    pub fn mark_read(&self, id: RoomId) {
        let Some(room) = self.room(id) else { return };
        room.unread.set(0);
        room.mentions.set(0);
        if let Some(seq) = room.newest_seq() {
            self.request(ClientMsg::Read { room: id, seq });
        }
    }

    /// Posts a message: shown at once as pending, then sent (or kept until reconnected).
    /// Sends `text` with the room's uploaded files (which leave the composer).
    pub fn send_text(&self, room_id: RoomId, text: String) {
        let (Some(room), Some(me)) = (self.room(room_id), self.me.get_untracked()) else {
            return;
        };
        let attachments: Vec<Attachment> = room.uploads.with_untracked(|uploads| {
            uploads
                .iter()
                .filter_map(|u| match &u.state {
                    UploadState::Ready(attachment) => Some(attachment.clone()),
                    _ => None,
                })
                .collect()
        });
        room.uploads
            .update(|uploads| uploads.retain(|u| !matches!(u.state, UploadState::Ready(_))));
        let n = self.next_local_id.get_value() + 1;
        self.next_local_id.set_value(n);
        let client_msg_id = ClientMsgId(format!("{}-{n}", self.session_prefix.get_value()));
        let item = TimelineItem::pending(me, text, attachments, now_ms(), client_msg_id, Delivery::Pending);
        let send = item.as_send(room_id);
        room.timeline.update(|t| t.push(item));
        self.save_outbox();
        if let Some(send) = send {
            self.request(send);
        }
    }

    /// Sends a failed message again under its original id.
    pub fn retry(&self, room_id: RoomId, client_msg_id: ClientMsgId) {
        let Some(room) = self.room(room_id) else { return };
        let send = room.timeline.with_untracked(|t| {
            t.iter()
                .find(|i| i.client_msg_id.as_ref() == Some(&client_msg_id))
                .and_then(|i| i.as_send(room_id))
        });
        if let Some(send) = send {
            room.set_delivery(&client_msg_id, Delivery::Pending, None);
            self.save_outbox();
            self.request(send);
        }
    }

    /// Sends a still-pending message again (after the server said to slow down).
    pub fn resend_pending(&self, client_msg_id: &ClientMsgId) {
        let found = self.rooms.with_untracked(|rooms| {
            rooms.iter().find_map(|room| {
                room.timeline.with_untracked(|t| {
                    t.iter()
                        .find(|i| {
                            i.client_msg_id.as_ref() == Some(client_msg_id) && i.delivery == Delivery::Pending
                        })
                        .and_then(|i| i.as_send(room.id))
                })
            })
        });
        if let Some(send) = found {
            self.request(send);
        }
    }

    pub fn discard(&self, room_id: RoomId, client_msg_id: &ClientMsgId) {
        if let Some(room) = self.room(room_id) {
            room.timeline
                .update(|t| t.retain(|i| i.seq.is_some() || i.client_msg_id.as_ref() != Some(client_msg_id)));
        }
        self.save_outbox();
    }

    /// Own messages waiting to go out (not acked, not refused), in send order: what to send
    /// again after reconnecting.
    pub fn pending_sends(&self) -> Vec<ClientMsg> {
        self.unacked()
            .into_iter()
            .filter(|entry| entry.failed.is_none())
            .map(|entry| ClientMsg::Send {
                room: entry.room,
                client_msg_id: entry.client_msg_id,
                text: entry.text,
                attachments: entry.attachments.iter().map(|a| a.id.clone()).collect(),
            })
            .collect()
    }

    pub fn acked(&self, room: RoomId, client_msg_id: &ClientMsgId, seq: Seq) {
        if let Some(state) = self.room(room) {
            state.set_delivery(client_msg_id, Delivery::Sent, Some(seq));
        }
        self.save_outbox();
    }

    pub fn refused(&self, client_msg_id: &ClientMsgId, reason: String) {
        for room in self.rooms.get_untracked() {
            room.set_delivery(client_msg_id, Delivery::Failed(reason.clone()), None);
        }
        self.save_outbox();
    }

    /// Own messages the server has not stored yet (pending or failed), oldest first.
    fn unacked(&self) -> Vec<OutboxEntry> {
        self.rooms.with_untracked(|rooms| {
            rooms
                .iter()
                .flat_map(|room| {
                    room.timeline.with_untracked(|t| {
                        t.iter()
                            .filter(|i| i.seq.is_none())
                            .filter_map(|i| {
                                Some(OutboxEntry {
                                    room: room.id,
                                    client_msg_id: i.client_msg_id.clone()?,
                                    text: i.text.clone(),
                                    attachments: i.attachments.clone(),
                                    ts: i.ts,
                                    failed: match &i.delivery {
                                        Delivery::Failed(reason) => Some(reason.clone()),
                                        _ => None,
                                    },
                                })
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect()
        })
    }

    /// Remembers who is signed in and their rooms, so a reload without a connection still
    /// shows them (and their unsent messages).
    pub fn save_session(&self) {
        let Some(me) = self.me.get_untracked() else { return };
        let rooms = self
            .rooms
            .with_untracked(|rooms| rooms.iter().map(|r| r.info.get_untracked()).collect());
        storage::write(
            SESSION_KEY,
            &SavedSession {
                me,
                rooms,
                limits: self.limits.get_untracked(),
            },
        );
    }

    /// Forgets the remembered session (after logging out); outboxes stay, per user.
    pub fn forget_session(&self) {
        storage::remove(SESSION_KEY);
    }

    /// Shows the remembered session until the server's `welcome` replaces it.
    pub fn restore_session(&self) {
        let Some(saved) = storage::read::<SavedSession>(SESSION_KEY) else {
            return;
        };
        self.me.set(Some(saved.me));
        self.limits.set(saved.limits);
        for info in saved.rooms {
            self.upsert_room(info);
        }
        self.current
            .set(self.rooms.with_untracked(|r| r.first().map(|r| r.id)));
        self.restore_outbox();
    }

    /// Writes the unacked messages to localStorage, so a reload or a closed tab loses none.
    pub fn save_outbox(&self) {
        let Some(user) = self.me.with_untracked(|me| me.as_ref().map(|m| m.id)) else {
            return;
        };
        let saved = SavedOutbox {
            user,
            entries: self.unacked(),
        };
        storage::write(&outbox_key(user), &saved);
    }

    /// Puts saved unacked messages of this user back into their rooms' timelines (once the
    /// rooms are known), skipping any already there.
    pub fn restore_outbox(&self) {
        let Some(me) = self.me.get_untracked() else { return };
        let Some(saved) = storage::read::<SavedOutbox>(&outbox_key(me.id)) else {
            return;
        };
        if saved.user != me.id {
            return;
        }
        for entry in saved.entries {
            let Some(room) = self.room(entry.room) else {
                continue;
            };
            let present = room.timeline.with_untracked(|t| {
                t.iter()
                    .any(|i| i.client_msg_id.as_ref() == Some(&entry.client_msg_id))
            });
            if present {
                continue;
            }
            room.timeline.update(|t| {
                t.push(TimelineItem::pending(
                    me.clone(),
                    entry.text,
                    entry.attachments,
                    entry.ts,
                    entry.client_msg_id,
                    entry.failed.map(Delivery::Failed).unwrap_or(Delivery::Pending),
                ))
            });
        }
    }

    /// Whether `user` is the person using this browser.
    /// Whether this user may delete others' messages in the room (owner or moderator).
    pub fn moderates(&self, room: RoomId) -> bool {
        self.room(room)
            .is_some_and(|r| r.info.with_untracked(|i| i.role.moderates()))
    }

    /// Asks the server to change the text of one of the user's stored messages.
    pub fn edit_message(&self, room: RoomId, seq: Seq, text: String) {
        self.request(ClientMsg::Edit { room, seq, text });
    }

    /// Asks the server to delete a stored message.
    pub fn delete_message(&self, room: RoomId, seq: Seq) {
        self.request(ClientMsg::Delete { room, seq });
    }

    /// Whether a message of someone else mentions this user (`@` + their name).
    pub fn mentions_me(&self, message: &ChatMessage) -> bool {
        message.kind == MessageKind::Text
            && !self.is_me(message.author.id)
            && self.me.with_untracked(|me| {
                me.as_ref()
                    .is_some_and(|me| crate::protocol::rules::mentions_name(&message.text, &me.name))
            })
    }

    pub fn is_me(&self, user: UserId) -> bool {
        self.me
            .with_untracked(|me| me.as_ref().is_some_and(|m| m.id == user))
    }
}

impl Default for ChatState {
    fn default() -> Self {
        Self::new()
    }
}

/// One outbox per user, so a different person signing in on this browser neither sends nor
/// loses the previous person's unsent messages.
fn outbox_key(user: UserId) -> String {
    format!("huddle.outbox.v2.{}", user.0)
}

/// The settings the server rendered into `<meta name="huddle-client">`; defaults elsewhere.
fn page_settings() -> ClientSettings {
    #[cfg(feature = "hydrate")]
    {
        leptos::prelude::document()
            .query_selector(&format!(
                "meta[name=\"{}\"]",
                crate::protocol::CLIENT_SETTINGS_META
            ))
            .ok()
            .flatten()
            .and_then(|meta| meta.get_attribute("content"))
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default()
    }
    #[cfg(not(feature = "hydrate"))]
    ClientSettings::default()
}
const SESSION_KEY: &str = "huddle.session.v1";

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedSession {
    me: UserRef,
    rooms: Vec<RoomInfo>,
    limits: Option<Limits>,
}

/// One unacked own message as kept in localStorage.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
struct OutboxEntry {
    room: RoomId,
    client_msg_id: ClientMsgId,
    text: String,
    #[serde(default)]
    attachments: Vec<Attachment>,
    ts: Timestamp,
    failed: Option<String>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedOutbox {
    user: UserId,
    entries: Vec<OutboxEntry>,
}

/// JSON values in the browser's localStorage (nothing on the server).
mod storage {
    #[cfg(feature = "hydrate")]
    fn local() -> Option<leptos::web_sys::Storage> {
        leptos::prelude::window().local_storage().ok().flatten()
    }

    pub fn write<T: serde::Serialize>(key: &str, value: &T) {
        #[cfg(feature = "hydrate")]
        if let (Some(storage), Ok(text)) = (local(), serde_json::to_string(value)) {
            let _ = storage.set_item(key, &text);
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = (key, value);
    }

    pub fn remove(key: &str) {
        #[cfg(feature = "hydrate")]
        if let Some(storage) = local() {
            let _ = storage.remove_item(key);
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = key;
    }

    pub fn read<T: serde::de::DeserializeOwned>(key: &str) -> Option<T> {
        #[cfg(feature = "hydrate")]
        {
            let text = local()?.get_item(key).ok().flatten()?;
            serde_json::from_str(&text).ok()
        }
        #[cfg(not(feature = "hydrate"))]
        {
            let _ = key;
            None
        }
    }
}

/// Milliseconds since the Unix epoch, from the browser's clock (0 on the server).
pub fn now_ms() -> Timestamp {
    #[cfg(feature = "hydrate")]
    {
        js_sys::Date::now() as Timestamp
    }
    #[cfg(not(feature = "hydrate"))]
    {
        0
    }
}
