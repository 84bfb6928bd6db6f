//! The hub: who is connected, which connections receive which rooms, presence and typing.
//! It fans each event out to the bounded per-connection queues, encoding it once. Timeline
//! messages are essential: a connection whose queue is full is closed (1013) and resumes by
//! seq. Presence and typing are droppable: they are skipped when a queue is nearly full.
//! One std mutex guards the state; it is never held across an `.await`.

use crate::protocol::{ChatMessage, ConnectionId, RoomId, Seq, ServerMsg, UserId, UserRef};
use crate::server::metrics::metrics;
use crate::server::ws::{self, Outbound, OutboundTx};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::error::TrySendError;

/// A typing indicator lapses this long after its last refresh.
pub const TYPING_TTL: Duration = Duration::from_secs(5);

/// Most names a `presence` frame lists; `total` says how many are online. Big rooms would
/// otherwise send every arriving member a list of everyone (quadratic in a reconnect storm),
/// and each connection's write buffer keeps the size of the largest frame it sent.
pub const PRESENCE_LIST_MAX: usize = 50;

/// Most live messages held for a connection while its backlog is being sent.
const CATCH_UP_BUFFER: usize = 1024;

/// The hub's handle on one connection.
#[derive(Clone)]
pub struct ConnHandle {
    pub user: UserRef,
    pub tx: OutboundTx,
    /// Marked when the connection falls behind; its writer then closes with 1013.
    pub lagged: ws::Lagged,
}

enum Subscription {
    /// Receiving live messages; `sent_up_to` is the newest seq this connection got, so a
    /// message committed before the replay but published after it is not sent twice.
    Live { sent_up_to: Seq },
    /// Backlog still being sent: live messages wait here, in seq order.
    CatchingUp(Vec<(Seq, Outbound)>),
}

#[derive(Default)]
struct RoomLive {
    subscribers: HashMap<ConnectionId, Subscription>,
    /// Distinct users among the subscribers, with how many of their connections subscribe.
    users: HashMap<UserId, (UserRef, u32)>,
    typing: HashMap<UserId, (UserRef, Instant)>,
    /// The encoded `presence` frame, until the user set changes.
    presence_frame: Option<Outbound>,
    /// Subscribers that have the room's whiteboard open.
    board_watchers: HashSet<ConnectionId>,
}

impl RoomLive {
    /// Counts one more subscribed connection of `user`; true if the user was not here yet.
    fn add_user(&mut self, user: &UserRef) -> bool {
        let entry = self.users.entry(user.id).or_insert_with(|| (user.clone(), 0));
        entry.1 += 1;
        let arrived = entry.1 == 1;
        if arrived {
            self.presence_frame = None;
        }
        arrived
    }

    /// Counts one connection of `user` fewer; true if that was their last one.
    fn remove_user(&mut self, user: UserId) -> bool {
        let Some(entry) = self.users.get_mut(&user) else {
            return false;
        };
        entry.1 -= 1;
        let departed = entry.1 == 0;
        if departed {
            self.users.remove(&user);
            self.presence_frame = None;
        }
        departed
    }

    /// The online list (first [`PRESENCE_LIST_MAX`] by name) and the total, encoded once per
    /// change of the user set; `remote` are the room's users online on other nodes.
    fn presence_frame(&mut self, room: RoomId, remote: Option<&HashMap<UserId, UserRef>>) -> Outbound {
        if let Some(frame) = &self.presence_frame {
            return frame.clone();
        }
        let local = self.users.values().map(|(user, _)| user);
        let elsewhere = remote
            .into_iter()
            .flat_map(|users| users.values())
            .filter(|user| !self.users.contains_key(&user.id));
        let mut online: Vec<&UserRef> = local.chain(elsewhere).collect();
        let total = online.len() as u32;
        let by_name = |a: &&UserRef, b: &&UserRef| {
            a.name
                .to_lowercase()
                .cmp(&b.name.to_lowercase())
                .then(a.id.cmp(&b.id))
        };
        if online.len() > PRESENCE_LIST_MAX {
            online.select_nth_unstable_by(PRESENCE_LIST_MAX, by_name);
            online.truncate(PRESENCE_LIST_MAX);
        }
        online.sort_unstable_by(by_name);
        let frame = encode(&ServerMsg::Presence {
            room,
            online: online.into_iter().cloned().collect(),
            total,
        });
        self.presence_frame = Some(frame.clone());
        frame
    }
}

#[derive(Default)]
struct State {
    connections: HashMap<ConnectionId, Arc<ConnHandle>>,
    /// Online users and their connections (several tabs count once).
    users: HashMap<UserId, HashSet<ConnectionId>>,
    rooms: HashMap<RoomId, RoomLive>,
    /// Rooms each connection is subscribed to, for cleanup on disconnect.
    subscribed: HashMap<ConnectionId, HashSet<RoomId>>,
    /// Rooms whose online list changed since the last [`Hub::flush_presence`]. Lists go out
    /// coalesced, so a thousand arrivals cost a few broadcasts, not a thousand.
    presence_dirty: HashSet<RoomId>,
    /// The global online count changed since the last flush.
    online_count_dirty: bool,
    /// Who is online on the other nodes (empty on a single node).
    remote: RemotePresence,
    /// This node's online users changed since [`Hub::local_presence`] last reported them.
    local_presence_changed: bool,
}

/// Users online on other nodes, merged over all of them.
#[derive(Default, Clone, PartialEq)]
pub struct RemotePresence {
    /// Per room, the users subscribed to it somewhere else.
    pub rooms: HashMap<RoomId, HashMap<UserId, UserRef>>,
    /// Every user connected somewhere else.
    pub users: HashSet<UserId>,
}

/// What this node tells the others about who is online here.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, Default)]
pub struct LocalPresence {
    pub connections: usize,
    pub users: Vec<UserId>,
    pub rooms: Vec<(RoomId, Vec<UserRef>)>,
}

impl State {
    fn presence_frame(&mut self, room: RoomId) -> Option<Outbound> {
        let State { rooms, remote, .. } = self;
        let live = rooms.get_mut(&room)?;
        Some(live.presence_frame(room, remote.rooms.get(&room)))
    }

    fn online_count(&self) -> u32 {
        let elsewhere = self
            .remote
            .users
            .iter()
            .filter(|u| !self.users.contains_key(u))
            .count();
        (self.users.len() + elsewhere) as u32
    }

    /// Marks the room's online list as changed (here or elsewhere).
    fn presence_changed(&mut self, room: RoomId, here: bool) {
        if let Some(live) = self.rooms.get_mut(&room) {
            live.presence_frame = None;
        }
        self.presence_dirty.insert(room);
        self.local_presence_changed |= here;
    }
}

pub struct Hub {
    state: Mutex<State>,
    /// Queue capacity of every connection; droppable events stop at a quarter left.
    queue_capacity: usize,
    /// Rooms with at most this many receiving connections here get their messages written
    /// straight to the sockets by the publishing task; bigger ones through the writer tasks.
    direct_fanout_max: usize,
}

fn encode(msg: &ServerMsg) -> Outbound {
    Outbound::encode(msg)
}

impl ConnHandle {
    /// Sends an essential frame, straight to the socket when nothing waits before it;
    /// a full queue marks the connection as lagged.
    fn send_essential(&self, frame: &Outbound) {
        self.lag_if_full(self.tx.deliver(frame));
    }

    /// Queues an essential frame for the writer task; a full queue marks the connection
    /// as lagged.
    fn queue_essential(&self, frame: Outbound) {
        self.lag_if_full(self.tx.try_send(frame));
    }

    fn lag_if_full(&self, sent: Result<(), TrySendError<Outbound>>) {
        if let Err(TrySendError::Full(_)) = sent {
            if self.lagged.mark() {
                metrics().slow_consumer_closes.inc();
            }
        }
    }

    /// Queues a droppable frame unless the queue is getting full.
    fn send_droppable(&self, frame: Outbound, capacity: usize) {
        if self.tx.free_slots() > capacity / 4 {
            let _ = self.tx.try_send(frame);
        } else {
            metrics().droppable_skipped.inc();
        }
    }
}

impl Hub {
    pub fn new(queue_capacity: usize, direct_fanout_max: usize) -> Self {
        Hub {
            state: Mutex::new(State::default()),
            queue_capacity,
            direct_fanout_max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a signed-in connection; announces the new online count if the user just came online.
    pub fn register(&self, id: ConnectionId, handle: ConnHandle) {
        let mut state = self.lock();
        let user = handle.user.id;
        state.connections.insert(id, Arc::new(handle));
        let conns = state.users.entry(user).or_default();
        conns.insert(id);
        if conns.len() == 1 {
            state.online_count_dirty = true;
            state.local_presence_changed = true;
        }
    }

    /// Removes a connection and everything it held: subscriptions, typing, presence.
    pub fn unregister(&self, id: ConnectionId) {
        let mut state = self.lock();
        let Some(handle) = state.connections.remove(&id) else {
            return;
        };
        let rooms = state.subscribed.remove(&id).unwrap_or_default();
        for room in rooms {
            self.remove_subscriber(&mut state, room, id, handle.user.id);
        }
        let user_gone = match state.users.get_mut(&handle.user.id) {
            Some(conns) => {
                conns.remove(&id);
                conns.is_empty()
            }
            None => false,
        };
        if user_gone {
            state.users.remove(&handle.user.id);
            state.online_count_dirty = true;
            state.local_presence_changed = true;
        }
    }

    /// Online on this node or another.
    pub fn is_online(&self, user: UserId) -> bool {
        let state = self.lock();
        state.users.contains_key(&user) || state.remote.users.contains(&user)
    }

    /// Distinct users online on any node.
    pub fn online_count(&self) -> u32 {
        self.lock().online_count()
    }

    /// Connections to this node.
    pub fn local_connections(&self) -> usize {
        self.lock().connections.len()
    }

    /// Distinct online users subscribed to `room`, on any node.
    pub fn online_in(&self, room: RoomId) -> u32 {
        let state = self.lock();
        let local = state.rooms.get(&room).map(|live| &live.users);
        let here = local.map_or(0, |users| users.len());
        let elsewhere = state.remote.rooms.get(&room).map_or(0, |users| {
            users
                .keys()
                .filter(|u| local.is_none_or(|l| !l.contains_key(u)))
                .count()
        });
        (here + elsewhere) as u32
    }

    /// Who is online here, for the other nodes; None when nothing changed since the last
    /// call (unless `always`).
    pub fn local_presence(&self, always: bool) -> Option<LocalPresence> {
        let mut state = self.lock();
        if !std::mem::take(&mut state.local_presence_changed) && !always {
            return None;
        }
        Some(LocalPresence {
            connections: state.connections.len(),
            users: state.users.keys().copied().collect(),
            rooms: state
                .rooms
                .iter()
                .map(|(room, live)| (*room, live.users.values().map(|(user, _)| user.clone()).collect()))
                .collect(),
        })
    }

    /// Replaces what is known about the other nodes' users; online lists and counts that
    /// change go out with the next flush.
    pub fn set_remote_presence(&self, remote: RemotePresence) {
        let mut state = self.lock();
        if state.remote == remote {
            return;
        }
        let mut changed: HashSet<RoomId> = HashSet::new();
        for (room, users) in remote.rooms.iter() {
            if state.remote.rooms.get(room) != Some(users) {
                changed.insert(*room);
            }
        }
        for room in state.remote.rooms.keys() {
            if !remote.rooms.contains_key(room) {
                changed.insert(*room);
            }
        }
        if state.remote.users != remote.users {
            state.online_count_dirty = true;
        }
        state.remote = remote;
        for room in changed {
            state.presence_changed(room, false);
        }
    }

    /// Starts a subscription: live messages are held back until [`Hub::finish_subscribe`].
    pub fn begin_subscribe(&self, id: ConnectionId, room: RoomId) {
        let mut state = self.lock();
        let Some(handle) = state.connections.get(&id).cloned() else {
            return;
        };
        let first_time = state.subscribed.entry(id).or_default().insert(room);
        let live = state.rooms.entry(room).or_default();
        // A repeated subscribe replays again: hold live messages anew.
        live.subscribers.insert(id, Subscription::CatchingUp(Vec::new()));
        if first_time && live.add_user(&handle.user) {
            // Everyone, the newcomer included, gets the new list with the next flush.
            state.presence_changed(room, true);
        } else if let Some(frame) = state.presence_frame(room) {
            // Another tab of someone already here: the list is unchanged; send it now.
            handle.send_droppable(frame, self.queue_capacity);
        }
        self.send_typing_to(&state, room, id);
    }

    /// Ends the catch-up: releases held messages newer than `sent_up_to`, then goes live.
    pub fn finish_subscribe(&self, id: ConnectionId, room: RoomId, sent_up_to: Seq) {
        let mut state = self.lock();
        let Some(handle) = state.connections.get(&id).cloned() else {
            return;
        };
        let Some(sub) = state
            .rooms
            .get_mut(&room)
            .and_then(|r| r.subscribers.get_mut(&id))
        else {
            return;
        };
        let mut newest = sent_up_to;
        if let Subscription::CatchingUp(held) = std::mem::replace(sub, Subscription::Live { sent_up_to }) {
            for (seq, frame) in held {
                if seq > newest {
                    handle.queue_essential(frame);
                    newest = seq;
                }
            }
        }
        *sub = Subscription::Live { sent_up_to: newest };
    }

    pub fn unsubscribe(&self, id: ConnectionId, room: RoomId) {
        let mut state = self.lock();
        let Some(user) = state.connections.get(&id).map(|h| h.user.id) else {
            return;
        };
        if let Some(rooms) = state.subscribed.get_mut(&id) {
            rooms.remove(&room);
        }
        self.remove_subscriber(&mut state, room, id, user);
    }

    /// Ends every subscription of `user` to `room` (after leaving it), on all their tabs.
    pub fn unsubscribe_user(&self, user: UserId, room: RoomId) {
        let conns: Vec<ConnectionId> = self
            .lock()
            .users
            .get(&user)
            .map(|c| c.iter().copied().collect())
            .unwrap_or_default();
        for id in conns {
            self.unsubscribe(id, room);
        }
    }

    pub fn is_subscribed(&self, id: ConnectionId, room: RoomId) -> bool {
        self.lock()
            .subscribed
            .get(&id)
            .is_some_and(|rooms| rooms.contains(&room))
    }

    fn remove_subscriber(&self, state: &mut State, room: RoomId, id: ConnectionId, user: UserId) {
        let Some(live) = state.rooms.get_mut(&room) else {
            return;
        };
        if live.subscribers.remove(&id).is_none() {
            return;
        }
        live.board_watchers.remove(&id);
        let departed = live.remove_user(user);
        if live.subscribers.is_empty() {
            state.rooms.remove(&room);
            return;
        }
        if departed {
            let typing_changed = live.typing.remove(&user).is_some();
            state.presence_changed(room, true);
            if typing_changed {
                self.broadcast_typing(state, room);
            }
        }
    }

    /// Fans a committed message out to the room. Called in seq order, one call at a time
    /// (the relay orders and serialises them), which keeps each connection's messages in
    /// order even though the frames are written after the lock is released.
    pub fn publish(&self, message: &ChatMessage) {
        let frame = encode(&ServerMsg::Message {
            message: message.clone(),
        });
        let mut receivers = Vec::new();
        {
            let mut state = self.lock();
            let State {
                rooms, connections, ..
            } = &mut *state;
            let Some(live) = rooms.get_mut(&message.room) else {
                return;
            };
            receivers.reserve(live.subscribers.len());
            for (id, sub) in live.subscribers.iter_mut() {
                let Some(handle) = connections.get(id) else {
                    continue;
                };
                match sub {
                    Subscription::Live { sent_up_to } => {
                        if message.seq > *sent_up_to {
                            *sent_up_to = message.seq;
                            receivers.push(handle.clone());
                        }
                    }
                    Subscription::CatchingUp(held) if held.len() < CATCH_UP_BUFFER => {
                        held.push((message.seq, frame.clone()))
                    }
                    Subscription::CatchingUp(_) => {
                        handle.lagged.mark();
                    }
                }
            }
        }
        // Sockets are written outside the lock: a hundred sends would hold it a millisecond.
        if receivers.len() <= self.direct_fanout_max {
            for handle in &receivers {
                handle.send_essential(&frame);
            }
        } else {
            for handle in &receivers {
                handle.queue_essential(frame.clone());
            }
        }
        metrics().fanout_deliveries.inc_by(receivers.len() as u64);
    }

    /// Starts sending the room's whiteboard events to a subscribed connection; false when
    /// the connection does not receive the room.
    pub fn watch_board(&self, id: ConnectionId, room: RoomId) -> bool {
        let mut state = self.lock();
        match state.rooms.get_mut(&room) {
            Some(live) if live.subscribers.contains_key(&id) => {
                live.board_watchers.insert(id);
                true
            }
            _ => false,
        }
    }

    pub fn unwatch_board(&self, id: ConnectionId, room: RoomId) {
        if let Some(live) = self.lock().rooms.get_mut(&room) {
            live.board_watchers.remove(&id);
        }
    }

    /// Fans a committed whiteboard change out to the connections that have the board open.
    /// Essential like messages: a picture missing a stroke would stay wrong.
    pub fn publish_board(&self, room: RoomId, msg: &ServerMsg) {
        let frame = encode(msg);
        let state = self.lock();
        let Some(live) = state.rooms.get(&room) else {
            return;
        };
        for id in &live.board_watchers {
            if let Some(handle) = state.connections.get(id) {
                handle.queue_essential(frame.clone());
            }
        }
    }

    /// Sends a frame to every connection of `user` (membership changes, unread counts).
    pub fn send_to_user(&self, user: UserId, msg: &ServerMsg) {
        let state = self.lock();
        let Some(conns) = state.users.get(&user) else {
            return;
        };
        let frame = encode(msg);
        for id in conns {
            if let Some(handle) = state.connections.get(id) {
                handle.queue_essential(frame.clone());
            }
        }
    }

    /// Sets or clears `user`'s typing mark in `room`; announces the list when it changed.
    pub fn set_typing(&self, room: RoomId, user: &UserRef, active: bool) {
        let mut state = self.lock();
        let Some(live) = state.rooms.get_mut(&room) else {
            return;
        };
        let changed = if active {
            live.typing
                .insert(user.id, (user.clone(), Instant::now() + TYPING_TTL))
                .is_none()
        } else {
            live.typing.remove(&user.id).is_some()
        };
        if changed {
            self.broadcast_typing(&state, room);
        }
    }

    /// Drops typing marks older than [`TYPING_TTL`]; run about once a second.
    pub fn expire_typing(&self) {
        let mut state = self.lock();
        let now = Instant::now();
        let mut changed = Vec::new();
        for (room, live) in state.rooms.iter_mut() {
            let before = live.typing.len();
            live.typing.retain(|_, (_, until)| *until > now);
            if live.typing.len() != before {
                changed.push(*room);
            }
        }
        for room in changed {
            self.broadcast_typing(&state, room);
        }
    }

    fn typing_msg(state: &State, room: RoomId) -> ServerMsg {
        let mut users: Vec<UserRef> = state
            .rooms
            .get(&room)
            .map(|live| live.typing.values().map(|(u, _)| u.clone()).collect())
            .unwrap_or_default();
        users.sort_by_key(|u| u.id);
        ServerMsg::Typing { room, users }
    }

    fn broadcast_typing(&self, state: &State, room: RoomId) {
        self.broadcast_droppable(state, room, &Self::typing_msg(state, room));
    }

    fn send_typing_to(&self, state: &State, room: RoomId, id: ConnectionId) {
        let has_typers = state.rooms.get(&room).is_some_and(|live| !live.typing.is_empty());
        if let (true, Some(handle)) = (has_typers, state.connections.get(&id)) {
            handle.send_droppable(encode(&Self::typing_msg(state, room)), self.queue_capacity);
        }
    }

    /// Sends the online lists of rooms that changed, and the online count if it changed.
    /// Run a few times a second.
    pub fn flush_presence(&self) {
        let mut state = self.lock();
        for room in std::mem::take(&mut state.presence_dirty) {
            self.broadcast_presence(&mut state, room);
        }
        if std::mem::take(&mut state.online_count_dirty) {
            self.broadcast_online_count(&state);
        }
    }

    fn broadcast_presence(&self, state: &mut State, room: RoomId) {
        let Some(frame) = state.presence_frame(room) else {
            return;
        };
        self.broadcast_frame(state, room, frame);
    }

    fn broadcast_droppable(&self, state: &State, room: RoomId, msg: &ServerMsg) {
        self.broadcast_frame(state, room, encode(msg));
    }

    fn broadcast_frame(&self, state: &State, room: RoomId, frame: Outbound) {
        let Some(live) = state.rooms.get(&room) else {
            return;
        };
        for id in live.subscribers.keys() {
            if let Some(handle) = state.connections.get(id) {
                handle.send_droppable(frame.clone(), self.queue_capacity);
            }
        }
    }

    fn broadcast_online_count(&self, state: &State) {
        let frame = encode(&ServerMsg::OnlineCount {
            online: state.online_count(),
        });
        for handle in state.connections.values() {
            handle.send_droppable(frame.clone(), self.queue_capacity);
        }
    }
}
