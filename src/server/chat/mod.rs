//! The chat domain: what each client request does to rooms, memberships and messages, and who
//! hears about it. Transport (frames, handshake, queues) is `ws`; persistence is `store`;
//! live fan-out, presence and typing are [`hub`].

mod board;
pub mod hub;

use crate::protocol::{
    rules, ChatMessage, ClientMsg, ClientMsgId, ConnectionId, ErrorCode, RoomId, RoomInfo, RoomKind, Seq,
    ServerMsg, UserRef, DEFAULT_PAGE,
};
use crate::server::metrics::metrics;
use crate::server::store::{SearchQuery, Store, StoreError, WriteOp, WriteOutcome};
use crate::server::ws::{Outbound, OutboundTx};
use hub::Hub;
use std::sync::Arc;

/// Messages per `backlog` frame when replaying: small frames, because the socket's write
/// buffer keeps the size of the largest frame for the life of the connection.
const BACKLOG_CHUNK: usize = 10;

/// A refused request: stable code plus a sentence for the person.
#[derive(Debug)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

impl From<rules::Invalid> for Refusal {
    fn from(invalid: rules::Invalid) -> Self {
        Refusal::new(invalid.code, invalid.message)
    }
}

impl From<StoreError> for Refusal {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotMember => Refusal::new(
                ErrorCode::NotMember,
                "You are not a member of that room; join it first.",
            ),
            StoreError::NoSuchRoom => Refusal::new(ErrorCode::NoSuchRoom, "There is no such room."),
            StoreError::NameTaken => Refusal::new(ErrorCode::NameTaken, "That name is already taken."),
            StoreError::Forbidden => Refusal::new(
                ErrorCode::Forbidden,
                "Only the author or a moderator of this room may do that.",
            ),
            StoreError::NoSuchMessage => Refusal::new(ErrorCode::NoSuchMessage, "There is no such message."),
            StoreError::Banned => Refusal::new(ErrorCode::Banned, "You are banned from that room."),
            StoreError::NoSuchUser => Refusal::new(ErrorCode::BadRequest, "There is no such user."),
            StoreError::NoSuchFile => Refusal::new(
                ErrorCode::NoSuchFile,
                "That file is not yours to send here (or was already sent); upload it again.",
            ),
            StoreError::NotPrivate => Refusal::new(
                ErrorCode::BadRequest,
                "Only private rooms take invitations; anyone may join a public room.",
            ),
            StoreError::TargetNotMember => {
                Refusal::new(ErrorCode::NotMember, "That person is not a member of this room.")
            }
            StoreError::IdReused => Refusal::new(
                ErrorCode::BadRequest,
                "This client_msg_id was already used for a message in another room; use a new one.",
            ),
            StoreError::Unavailable => Refusal::new(
                ErrorCode::Unavailable,
                "The database is unreachable just now; nothing was stored. Your message will be sent again.",
            ),
            error => {
                tracing::error!(%error, "store failure");
                Refusal::new(
                    ErrorCode::Internal,
                    "The server could not do that just now; please retry.",
                )
            }
        }
    }
}

/// What a subscribe sends back before going live.
struct Replay {
    messages: Vec<ChatMessage>,
    /// Older messages exist that the replay skipped.
    gap: bool,
    /// The client's position, pulled inside the room's range.
    after_seq: Option<Seq>,
}

/// Limits the chat enforces (from configuration).
#[derive(Clone, Copy, Debug)]
pub struct ChatLimits {
    pub max_message_chars: u32,
    pub max_history_page: u32,
    pub max_resume: u32,
    pub board_points_per_batch: u32,
    pub board_max_segments: u32,
}

/// The chat service shared by all sessions.
pub struct Chat {
    pub store: Store,
    pub hub: Arc<Hub>,
    /// Orders committed messages per room on their way to the hub, whichever node sent them.
    pub relay: Arc<crate::server::cluster::Relay>,
    /// The other nodes, when several share the database.
    pub cluster: Option<Arc<crate::server::cluster::Cluster>>,
    pub limits: ChatLimits,
    /// Name keys of registered accounts that moderate every room (configuration `admins`).
    pub admins: Vec<String>,
}

/// One signed-in connection, as the chat sees it.
pub struct Caller<'a> {
    pub id: ConnectionId,
    pub user: &'a UserRef,
    pub tx: &'a OutboundTx,
}

impl Caller<'_> {
    async fn reply(&self, msg: ServerMsg) {
        let _ = self.tx.send(Outbound::encode(&msg)).await;
    }
}

impl Chat {
    /// The user's rooms with live online counts, for `welcome`.
    pub async fn rooms_of(&self, user: &UserRef) -> Result<Vec<RoomInfo>, Refusal> {
        let mut rooms = self.store.rooms_of(user.id).await?;
        let mentions = self.store.unread_mentions(user).await?;
        for room in &mut rooms {
            room.online = self.hub.online_in(room.id);
            room.mentions = mentions.get(&room.id).copied().unwrap_or(0);
        }
        Ok(rooms)
    }

    /// Handles one request after the handshake. `Hello` never reaches here.
    pub async fn handle(&self, caller: &Caller<'_>, msg: ClientMsg) -> Result<(), Refusal> {
        match msg {
            ClientMsg::Hello { .. } | ClientMsg::Pong {} => Ok(()),
            ClientMsg::OpenBoard { room } => self.open_board(caller, room).await,
            ClientMsg::CloseBoard { room } => {
                self.close_board(caller, room);
                Ok(())
            }
            ClientMsg::Draw {
                room,
                stroke,
                color,
                width,
                points,
            } => self.draw(caller, room, stroke, color, width, points).await,
            ClientMsg::UndoStroke { room } => self.undo_stroke(caller, room).await,
            ClientMsg::ClearBoard { room } => self.clear_board(caller, room).await,
            ClientMsg::ListRooms {} => {
                let mut rooms = self.store.public_rooms(caller.user.id).await?;
                for room in &mut rooms {
                    room.online = self.hub.online_in(room.id);
                }
                caller.reply(ServerMsg::RoomDirectory { rooms }).await;
                Ok(())
            }
            ClientMsg::CreateRoom {
                name,
                topic,
                private,
                board_open,
            } => {
                let name = rules::room_name(&name)?;
                let topic = rules::room_topic(&topic)?;
                let outcome = self
                    .store
                    .write(WriteOp::CreateRoom {
                        name,
                        topic,
                        creator: caller.user.clone(),
                        private,
                        board_open,
                    })
                    .await;
                let room = match outcome {
                    Err(StoreError::NameTaken) => {
                        return Err(Refusal::new(
                            ErrorCode::NameTaken,
                            "A room with that name already exists.",
                        ))
                    }
                    other => membership_room(other?),
                };
                self.announce_joined(caller.user, room).await
            }
            ClientMsg::Join { room } => {
                let outcome = self
                    .store
                    .write(WriteOp::Join {
                        room,
                        user: caller.user.clone(),
                    })
                    .await?;
                self.announce_joined(caller.user, membership_room(outcome)).await
            }
            ClientMsg::Leave { room } => {
                // Rooms the caller cannot see answer no_such_room, like missing ones.
                self.require_member(room, caller.user).await?;
                let outcome = self
                    .store
                    .write(WriteOp::Leave {
                        room,
                        user: caller.user.clone(),
                    })
                    .await?;
                if let WriteOutcome::Membership { changed: false, .. } = outcome {
                    return Err(Refusal::new(
                        ErrorCode::NotMember,
                        "You are not a member of that room.",
                    ));
                }
                self.hub.unsubscribe_user(caller.user.id, room);
                self.hub.send_to_user(caller.user.id, &ServerMsg::Left { room });
                Ok(())
            }
            ClientMsg::OpenDm { user } => {
                let outcome = self
                    .store
                    .write(WriteOp::OpenDm {
                        user: caller.user.clone(),
                        peer: user,
                    })
                    .await;
                let outcome = outcome.map_err(|e| match e {
                    StoreError::NoSuchRoom => {
                        Refusal::new(ErrorCode::BadRequest, "There is no such other user.")
                    }
                    e => e.into(),
                })?;
                let room = membership_room(outcome);
                self.announce_joined(caller.user, room).await?;
                self.announce_joined_to(user, room).await
            }
            ClientMsg::SetRole { room, user, role } => {
                let op = WriteOp::SetRole {
                    room,
                    actor: caller.user.clone(),
                    target: user,
                    role,
                    admin: self.is_admin(caller.user).await?,
                };
                self.store.write(op).await?;
                // The member's clients learn their new role with the room's info.
                self.announce_joined_to(user, room).await
            }
            ClientMsg::Invite { room, user } => {
                let op = WriteOp::Invite {
                    room,
                    actor: caller.user.clone(),
                    invitee: user,
                    admin: self.is_admin(caller.user).await?,
                };
                if let WriteOutcome::Membership { changed: true, .. } = self.store.write(op).await? {
                    self.announce_joined_to(user, room).await?;
                }
                Ok(())
            }
            ClientMsg::Edit { room, seq, text } => {
                let text = rules::message_text(&text, self.limits.max_message_chars)?;
                let op = WriteOp::Edit {
                    room,
                    seq,
                    editor: caller.user.clone(),
                    text,
                };
                self.store.write(op).await?;
                Ok(())
            }
            ClientMsg::Delete { room, seq } => {
                let op = WriteOp::Delete {
                    room,
                    seq,
                    actor: caller.user.clone(),
                    admin: self.is_admin(caller.user).await?,
                };
                self.store.write(op).await?;
                Ok(())
            }
            ClientMsg::Kick { room, user, ban } => {
                let op = WriteOp::Remove {
                    room,
                    actor: caller.user.clone(),
                    target: user,
                    ban,
                    admin: self.is_admin(caller.user).await?,
                };
                self.store.write(op).await?;
                // They saw the kick event; now their view of the room closes.
                self.hub.unsubscribe_user(user, room);
                self.hub.send_to_user(user, &ServerMsg::Left { room });
                Ok(())
            }
            ClientMsg::Subscribe { room, after_seq } => {
                if let Err(refusal) = self.subscribe(caller, room, after_seq).await {
                    // The room goes with the refusal: a client retries a transient one.
                    caller
                        .reply(ServerMsg::Error {
                            code: refusal.code,
                            message: refusal.message,
                            client_msg_id: None,
                            retry_after_ms: None,
                            room: Some(room),
                        })
                        .await;
                }
                Ok(())
            }
            ClientMsg::History {
                room,
                before_seq,
                limit,
            } => {
                self.require_member(room, caller.user).await?;
                let limit = limit
                    .unwrap_or(DEFAULT_PAGE)
                    .clamp(1, self.limits.max_history_page);
                let messages = self.store.messages_before(room, before_seq, limit).await?;
                let has_more = messages.first().is_some_and(|m| m.seq.0 > 1);
                caller
                    .reply(ServerMsg::History {
                        room,
                        messages,
                        has_more,
                    })
                    .await;
                Ok(())
            }
            ClientMsg::Around { room, seq } => {
                self.require_member(room, caller.user).await?;
                let (_, head) = self.store.room_head(room).await?;
                let half = DEFAULT_PAGE / 2;
                let mut messages = self.store.messages_before(room, seq, half).await?;
                messages.extend(self.store.messages_after(room, Seq(seq.0 - 1), half).await?);
                let has_older = messages.first().is_some_and(|m| m.seq.0 > 1);
                let has_newer = messages.last().is_some_and(|m| m.seq < head);
                caller
                    .reply(ServerMsg::Around {
                        room,
                        seq,
                        messages,
                        has_older,
                        has_newer,
                    })
                    .await;
                Ok(())
            }
            ClientMsg::Mentions {} => {
                let hits = self.store.mentions_of(caller.user).await?;
                caller.reply(ServerMsg::Mentions { hits }).await;
                Ok(())
            }
            ClientMsg::Search {
                query,
                room,
                author,
                since,
                until,
                page,
            } => {
                let query = rules::search_query(&query)?;
                if let Some(room) = room {
                    self.require_member(room, caller.user).await?;
                }
                let search = SearchQuery {
                    text: query.clone(),
                    room,
                    author,
                    since,
                    until,
                    page,
                };
                let (hits, has_more) = self.store.search(caller.user.id, &search).await?;
                caller
                    .reply(ServerMsg::SearchResults {
                        query,
                        page,
                        hits,
                        has_more,
                    })
                    .await;
                Ok(())
            }
            ClientMsg::Send {
                room,
                client_msg_id,
                text,
                attachments,
            } => {
                let result = self
                    .send(caller, room, client_msg_id.clone(), &text, attachments)
                    .await;
                if let Err(refusal) = result {
                    caller
                        .reply(ServerMsg::Error {
                            code: refusal.code,
                            message: refusal.message,
                            client_msg_id: Some(client_msg_id),
                            retry_after_ms: None,
                            room: None,
                        })
                        .await;
                }
                Ok(())
            }
            ClientMsg::Typing { room, active } => {
                // Only for rooms this connection receives; otherwise ignored (typing is best effort).
                if self.hub.is_subscribed(caller.id, room) {
                    self.set_typing(room, caller.user, active);
                }
                Ok(())
            }
            ClientMsg::Read { room, seq } => {
                self.require_member(room, caller.user).await?;
                self.store
                    .write(WriteOp::MarkRead {
                        room,
                        user: caller.user.id,
                        seq,
                    })
                    .await?;
                let unread = self.store.unread(room, caller.user.id).await?;
                self.hub
                    .send_to_user(caller.user.id, &ServerMsg::Unread { room, unread });
                Ok(())
            }
        }
    }

    async fn send(
        &self,
        caller: &Caller<'_>,
        room: RoomId,
        client_msg_id: ClientMsgId,
        text: &str,
        attachments: Vec<String>,
    ) -> Result<(), Refusal> {
        let received = std::time::Instant::now();
        metrics().messages_in.inc();
        rules::client_msg_id(&client_msg_id.0)?;
        let body = rules::message_with_attachments(text, self.limits.max_message_chars, attachments.len())?;
        let outcome = self
            .store
            .write(WriteOp::AppendText {
                room,
                author: caller.user.clone(),
                client_msg_id: client_msg_id.clone(),
                body,
                attachments,
            })
            .await?;
        let WriteOutcome::Appended(appended) = outcome else {
            unreachable!("append answers with Appended")
        };
        self.set_typing(room, caller.user, false);
        let message = appended.message;
        caller
            .reply(ServerMsg::Ack {
                room: message.room,
                client_msg_id,
                id: message.id,
                seq: message.seq,
                ts: message.ts,
            })
            .await;
        metrics()
            .send_to_ack_seconds
            .observe(received.elapsed().as_secs_f64());
        Ok(())
    }

    /// Shows or clears a typing mark here and on the other nodes.
    fn set_typing(&self, room: RoomId, user: &UserRef, active: bool) {
        self.hub.set_typing(room, user, active);
        if let Some(cluster) = &self.cluster {
            cluster.announce_typing(room, user, active);
        }
    }

    /// Replays what the client missed, then switches the subscription to live. Messages
    /// committed meanwhile are held by the hub and released after the replay, without
    /// duplicates (filtered by seq) and without gaps (the replay reads after the hold began).
    async fn subscribe(
        &self,
        caller: &Caller<'_>,
        room: RoomId,
        after_seq: Option<Seq>,
    ) -> Result<(), Refusal> {
        self.require_member(room, caller.user).await?;
        self.hub.begin_subscribe(caller.id, room);
        let replay = self.replay(room, after_seq).await;
        let Replay {
            messages,
            gap,
            after_seq,
        } = match replay {
            Ok(found) => found,
            Err(refusal) => {
                self.hub.unsubscribe(caller.id, room);
                return Err(refusal);
            }
        };
        let sent_up_to = messages.last().map(|m| m.seq).or(after_seq).unwrap_or(Seq(0));
        let chunks = frames_of(&messages, BACKLOG_CHUNK);
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            caller
                .reply(ServerMsg::Backlog {
                    room,
                    messages: chunk.to_vec(),
                    gap,
                    more: i < last,
                })
                .await;
        }
        self.hub.finish_subscribe(caller.id, room, sent_up_to);
        Ok(())
    }

    /// What to replay: everything after `after_seq` when that is at most `max_resume`
    /// messages; otherwise (or on a first visit) the newest page, with `gap` if older exist.
    async fn replay(&self, room: RoomId, after_seq: Option<Seq>) -> Result<Replay, Refusal> {
        let (_, last) = self.store.room_head(room).await?;
        self.relay.watch(room, last);
        // A claimed position outside 0..=last (forged, or from before a restore) is pulled
        // inside, so live delivery is never filtered against a seq that does not exist.
        let after_seq = after_seq.map(|after| Seq(after.0.clamp(0, last.0)));
        let resume_from = after_seq.filter(|after| last.0 - after.0 <= self.limits.max_resume as i64);
        let (messages, gap) = match resume_from {
            Some(after) => (
                self.store
                    .messages_after(room, after, self.limits.max_resume)
                    .await?,
                false,
            ),
            None => {
                let page = self
                    .store
                    .messages_before(room, Seq(last.0 + 1), DEFAULT_PAGE)
                    .await?;
                let gap = page
                    .first()
                    .is_some_and(|m| m.seq.0 > after_seq.map_or(1, |a| a.0 + 1));
                (page, gap)
            }
        };
        Ok(Replay {
            messages,
            gap,
            after_seq,
        })
    }

    /// Configured admins moderate everywhere, once they have registered (a guest cannot hold
    /// an admin's name, but could before the admin registers: so guests never count).
    async fn is_admin(&self, user: &UserRef) -> Result<bool, Refusal> {
        if !self.admins.contains(&crate::server::store::name_key(&user.name)) {
            return Ok(false);
        }
        Ok(self.store.is_registered(user.id).await?)
    }

    async fn require_member(&self, room: RoomId, user: &UserRef) -> Result<(), Refusal> {
        if self.store.is_member(room, user.id).await? {
            return Ok(());
        }
        let (kind, _) = self.store.room_head(room).await?;
        Err(match kind {
            RoomKind::Public => Refusal::new(
                ErrorCode::NotMember,
                "You are not a member of that room; join it first.",
            ),
            _ => Refusal::new(ErrorCode::NoSuchRoom, "There is no such room."),
        })
    }

    async fn announce_joined(&self, user: &UserRef, room: RoomId) -> Result<(), Refusal> {
        self.announce_joined_to(user.id, room).await
    }

    /// Tells every connection of `user` about a room they now belong to.
    async fn announce_joined_to(&self, user: crate::protocol::UserId, room: RoomId) -> Result<(), Refusal> {
        let mut info = self.store.room_for(room, user).await?;
        info.online = self.hub.online_in(room);
        self.hub.send_to_user(user, &ServerMsg::Joined { room: info });
        Ok(())
    }
}

/// Splits a reply list into frames of at most `size` items; an empty list is one empty frame.
fn frames_of<T>(items: &[T], size: usize) -> Vec<&[T]> {
    if items.is_empty() {
        vec![&[]]
    } else {
        items.chunks(size).collect()
    }
}

fn membership_room(outcome: WriteOutcome) -> RoomId {
    match outcome {
        WriteOutcome::Membership { room, .. } => room,
        other => unreachable!("membership writes answer with Membership, not {other:?}"),
    }
}
