//! Scale-out fan-out: nodes sharing one database tell each other about committed messages
//! through Redis pub/sub, and every node hands each room's messages to its hub gaplessly in
//! seq order, whichever node stored them.
//!
//! Each node publishes every message it commits once (channel `huddle:messages`), not once
//! per recipient. Redis pub/sub may lose messages (while Redis or a link is down) and
//! messages of different nodes arrive in any order, so Redis is only a hint: the [`Relay`]
//! keeps, per room, the newest seq it handed to the hub; a message further ahead means others
//! are missing, and those are read from the store, where they are already committed (a
//! writer holds the room's row lock until its commit, so seq N+1 commits after seq N).

use crate::protocol::{ChatMessage, RoomId, Seq, ServerMsg, UserRef};
use crate::server::chat::hub::{Hub, LocalPresence, RemotePresence};
use crate::server::store::Store;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;

const MESSAGES_CHANNEL: &str = "huddle:messages";
const TYPING_CHANNEL: &str = "huddle:typing";
/// Whiteboard changes; best effort like typing (a board reopened loads the stored picture).
const BOARD_CHANNEL: &str = "huddle:board";
/// A node's presence report changed; the payload is its id.
const PRESENCE_CHANNEL: &str = "huddle:presence";
/// The set of node ids that have reported presence.
const NODES_KEY: &str = "huddle:nodes";

/// Messages read from the store per query while filling a gap.
const FILL_PAGE: u32 = 500;

/// What one node tells the others.
#[derive(Serialize, Deserialize)]
struct Envelope {
    node: String,
    message: ChatMessage,
}

/// Orders messages per room on their way to the hub (see the module comment).
pub struct Relay {
    hub: Arc<Hub>,
    /// Set once the store is open (the store's commit callback needs the relay first).
    store: OnceLock<Store>,
    rooms: Mutex<HashMap<RoomId, RoomOrder>>,
    /// Rooms with held messages waiting for a gap to be filled from the store.
    fill: mpsc::UnboundedSender<RoomId>,
    fill_jobs: Mutex<Option<mpsc::UnboundedReceiver<RoomId>>>,
}

#[derive(Default)]
struct RoomOrder {
    /// The newest seq handed to the hub.
    delivered: Seq,
    /// Messages that arrived ahead of a gap, by seq.
    held: BTreeMap<Seq, ChatMessage>,
}

impl Relay {
    pub fn new(hub: Arc<Hub>) -> Arc<Relay> {
        let (fill, fill_jobs) = mpsc::unbounded_channel();
        Arc::new(Relay {
            hub,
            store: OnceLock::new(),
            rooms: Mutex::new(HashMap::new()),
            fill,
            fill_jobs: Mutex::new(Some(fill_jobs)),
        })
    }

    /// Starts filling gaps from `store`.
    pub fn start(self: &Arc<Self>, store: Store) {
        let _ = self.store.set(store);
        let Some(mut jobs) = self.fill_jobs.lock().unwrap().take() else {
            return;
        };
        let relay = self.clone();
        tokio::spawn(async move {
            while let Some(room) = jobs.recv().await {
                // A failed read (database down) is tried again shortly; the held messages wait.
                while relay.fill_gap(room).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        });
    }

    /// A connection subscribes to `room` whose newest seq is `head`, and will replay up to
    /// at least there: from now on the room's messages are ordered from `head` on.
    pub fn watch(&self, room: RoomId, head: Seq) {
        self.rooms
            .lock()
            .unwrap()
            .entry(room)
            .or_insert_with(|| RoomOrder {
                delivered: head,
                held: BTreeMap::new(),
            });
    }

    /// A committed message, from this node's writer or from another node.
    pub fn offer(&self, message: &ChatMessage) {
        let mut rooms = self.rooms.lock().unwrap();
        let order = rooms.entry(message.room).or_insert_with(|| RoomOrder {
            // No connection here receives the room yet (subscribing calls `watch` first), so
            // nobody waits for earlier messages; start the order at this one.
            delivered: Seq(message.seq.0 - 1),
            held: BTreeMap::new(),
        });
        if message.seq <= order.delivered {
            return; // already delivered: a copy from Redis of what the store gave us
        }
        if message.seq.0 == order.delivered.0 + 1 && order.held.is_empty() {
            order.delivered = message.seq;
            self.hub.publish(message);
            return;
        }
        let room = message.room;
        let first_held = order.held.is_empty();
        order.held.insert(message.seq, message.clone());
        Self::release_contiguous(&self.hub, order);
        if first_held && !order.held.is_empty() {
            let _ = self.fill.send(room);
        }
    }

    /// Hands held messages that now follow `delivered` to the hub.
    fn release_contiguous(hub: &Hub, order: &mut RoomOrder) {
        while let Some(entry) = order.held.first_entry() {
            if entry.key().0 != order.delivered.0 + 1 {
                break;
            }
            let message = entry.remove();
            order.delivered = message.seq;
            hub.publish(&message);
        }
    }

    /// Reads the messages missing before the first held one from the store and delivers
    /// them, then what was held.
    async fn fill_gap(&self, room: RoomId) -> Result<(), crate::server::store::StoreError> {
        let store = self.store.get().expect("relay started").clone();
        loop {
            let (after, until) = {
                let rooms = self.rooms.lock().unwrap();
                let Some(order) = rooms.get(&room) else {
                    return Ok(());
                };
                match order.held.keys().next() {
                    Some(first) if first.0 > order.delivered.0 + 1 => (order.delivered, *first),
                    _ => return Ok(()),
                }
            };
            let missing = (until.0 - after.0 - 1).min(FILL_PAGE as i64) as u32;
            let page = store.messages_after(room, after, missing).await?;
            let mut rooms = self.rooms.lock().unwrap();
            let Some(order) = rooms.get_mut(&room) else {
                return Ok(());
            };
            for message in page {
                if message.seq > order.delivered && message.seq < until {
                    order.held.insert(message.seq, message);
                }
            }
            Self::release_contiguous(&self.hub, order);
            if order.held.is_empty() {
                return Ok(());
            }
        }
    }

    /// Rooms whose newest seq in the store is past what this node delivered: after Redis was
    /// unreachable, messages of other nodes may be missing with nothing newer to reveal it.
    async fn catch_up_all(&self) {
        let Some(store) = self.store.get() else {
            return;
        };
        let rooms: Vec<(RoomId, Seq)> = {
            let rooms = self.rooms.lock().unwrap();
            rooms
                .iter()
                .map(|(room, order)| (*room, order.delivered))
                .collect()
        };
        for (room, delivered) in rooms {
            let Ok(page) = store.messages_after(room, delivered, FILL_PAGE).await else {
                continue;
            };
            for message in &page {
                self.offer(message);
            }
        }
    }
}

/// This node's link to the others: publishes local commits, typing and presence; relays
/// theirs.
pub struct Cluster {
    node: String,
    client: redis::Client,
    hub: Arc<Hub>,
    outgoing: mpsc::UnboundedSender<(&'static str, Vec<u8>)>,
    redis_up: AtomicBool,
    /// Another node's presence changed: read everyone's at the next tick.
    presence_poked: AtomicBool,
    /// Connections on the other nodes, from their last presence reports.
    remote_connections: AtomicUsize,
    /// How long a presence report lives unless refreshed (configuration `presence_ttl_s`).
    presence_ttl: Duration,
}

/// A whiteboard change stored by some node.
#[derive(Serialize, Deserialize)]
struct BoardEvent {
    node: String,
    room: RoomId,
    event: ServerMsg,
}

/// A typing mark set or cleared on some node.
#[derive(Serialize, Deserialize)]
struct TypingEvent {
    node: String,
    room: RoomId,
    user: UserRef,
    active: bool,
}

impl Cluster {
    /// Connects to Redis at `url` in the background (retrying while it is down) and starts
    /// relaying. A node whose Redis is down keeps serving its own members.
    pub fn start(
        url: &str,
        node: String,
        presence_ttl: Duration,
        relay: Arc<Relay>,
    ) -> Result<Arc<Cluster>, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        let cluster = Arc::new(Cluster {
            node,
            client: client.clone(),
            hub: relay.hub.clone(),
            outgoing,
            redis_up: AtomicBool::new(false),
            presence_poked: AtomicBool::new(true),
            remote_connections: AtomicUsize::new(0),
            presence_ttl,
        });
        tokio::spawn(publish_loop(client.clone(), outgoing_rx));
        tokio::spawn(subscribe_loop(client.clone(), cluster.clone(), relay));
        tokio::spawn(presence_loop(client, cluster.clone()));
        Ok(cluster)
    }

    /// Tells the other nodes about a message this node committed.
    pub fn announce(&self, message: &ChatMessage) {
        let envelope = Envelope {
            node: self.node.clone(),
            message: message.clone(),
        };
        let payload = serde_json::to_vec(&envelope).expect("envelope serializes");
        let _ = self.outgoing.send((MESSAGES_CHANNEL, payload));
    }

    /// Tells the other nodes about a whiteboard change this node stored.
    pub fn announce_board(&self, room: RoomId, event: &ServerMsg) {
        let event = BoardEvent {
            node: self.node.clone(),
            room,
            event: event.clone(),
        };
        let _ = self.outgoing.send((
            BOARD_CHANNEL,
            serde_json::to_vec(&event).expect("board event serializes"),
        ));
    }

    /// Tells the other nodes that `user` started or stopped typing in `room`.
    pub fn announce_typing(&self, room: RoomId, user: &UserRef, active: bool) {
        let event = TypingEvent {
            node: self.node.clone(),
            room,
            user: user.clone(),
            active,
        };
        let _ = self.outgoing.send((
            TYPING_CHANNEL,
            serde_json::to_vec(&event).expect("typing serializes"),
        ));
    }

    /// On shutdown: takes this node's users off the others' online lists now, rather than
    /// when its presence report expires.
    pub async fn leave(&self) {
        let leave = async {
            let mut conn = self.client.get_multiplexed_async_connection().await?;
            redis::pipe()
                .cmd("DEL")
                .arg(format!("huddle:presence:{}", self.node))
                .ignore()
                .cmd("SREM")
                .arg(NODES_KEY)
                .arg(&self.node)
                .ignore()
                .cmd("PUBLISH")
                .arg(PRESENCE_CHANNEL)
                .arg(&self.node)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
        };
        if let Ok(Err(error)) = tokio::time::timeout(Duration::from_secs(1), leave).await {
            tracing::warn!(%error, "could not withdraw this node's presence");
        }
    }

    /// Whether the subscription to the other nodes is live (for `/health`).
    pub fn redis_up(&self) -> bool {
        self.redis_up.load(Ordering::Relaxed)
    }

    /// Connections to the whole cluster: this node's and the others' last reports.
    pub fn total_connections(&self) -> usize {
        self.hub.local_connections() + self.remote_connections.load(Ordering::Relaxed)
    }

    fn on_event(&self, channel: &str, payload: &[u8], relay: &Relay) {
        match channel {
            MESSAGES_CHANNEL => match serde_json::from_slice::<Envelope>(payload) {
                Ok(envelope) if envelope.node != self.node => relay.offer(&envelope.message),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "unreadable cluster message"),
            },
            TYPING_CHANNEL => match serde_json::from_slice::<TypingEvent>(payload) {
                Ok(event) if event.node != self.node => {
                    self.hub.set_typing(event.room, &event.user, event.active)
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "unreadable typing event"),
            },
            BOARD_CHANNEL => match serde_json::from_slice::<BoardEvent>(payload) {
                Ok(event) if event.node != self.node => self.hub.publish_board(event.room, &event.event),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "unreadable board event"),
            },
            PRESENCE_CHANNEL if payload != self.node.as_bytes() => {
                self.presence_poked.store(true, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// Sends what this node announces, in order; while Redis is down it is dropped (the other
/// nodes catch up on messages from the store when it returns; typing is best effort).
async fn publish_loop(client: redis::Client, mut outgoing: mpsc::UnboundedReceiver<(&'static str, Vec<u8>)>) {
    let mut connection = None;
    while let Some((channel, payload)) = outgoing.recv().await {
        if connection.is_none() {
            connection = client.get_multiplexed_async_connection().await.ok();
        }
        let Some(conn) = connection.as_mut() else {
            continue;
        };
        let sent: redis::RedisResult<()> = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async(conn)
            .await;
        if let Err(error) = sent {
            tracing::warn!(%error, "redis publish failed; other nodes will catch up from the store");
            connection = None;
        }
    }
}

/// Subscribes, relays what other nodes announce, and after every (re)connection catches up
/// on what may have been missed meanwhile.
async fn subscribe_loop(client: redis::Client, cluster: Arc<Cluster>, relay: Arc<Relay>) {
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => {
                if pubsub
                    .subscribe(&[MESSAGES_CHANNEL, TYPING_CHANNEL, BOARD_CHANNEL, PRESENCE_CHANNEL])
                    .await
                    .is_ok()
                {
                    cluster.redis_up.store(true, Ordering::Relaxed);
                    cluster.presence_poked.store(true, Ordering::Relaxed);
                    tracing::info!("redis subscription live");
                    relay.catch_up_all().await;
                    let mut events = pubsub.on_message();
                    while let Some(event) = events.next().await {
                        if let Ok(payload) = event.get_payload::<Vec<u8>>() {
                            cluster.on_event(event.get_channel_name(), &payload, &relay);
                        }
                    }
                    tracing::warn!("redis subscription lost; serving local members only");
                }
            }
            Err(error) => tracing::debug!(%error, "redis unreachable"),
        }
        cluster.redis_up.store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every node keeps its online users under a key that expires unless refreshed (every
/// quarter of its lifetime), so a node that dies takes its users offline within about
/// `presence_ttl`.
async fn presence_loop(client: redis::Client, cluster: Arc<Cluster>) {
    let refresh = cluster.presence_ttl / 4;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut connection: Option<redis::aio::MultiplexedConnection> = None;
    let mut last_report = std::time::Instant::now() - refresh;
    let mut last_read = std::time::Instant::now();
    loop {
        tick.tick().await;
        if connection.is_none() {
            connection = client.get_multiplexed_async_connection().await.ok();
        }
        let heartbeat = last_report.elapsed() >= refresh;
        let result = match connection.as_mut() {
            Some(conn) => exchange_presence(conn, &cluster, heartbeat).await,
            None => Err(redis::RedisError::from((redis::ErrorKind::Io, "not connected"))),
        };
        match result {
            Ok(reported) => {
                if reported {
                    last_report = std::time::Instant::now();
                }
                if heartbeat || reported {
                    last_read = std::time::Instant::now();
                }
            }
            Err(error) => {
                tracing::debug!(%error, "presence exchange failed");
                connection = None;
                // Without Redis for longer than a report lives, what we know has expired too.
                if last_read.elapsed() > cluster.presence_ttl {
                    cluster.hub.set_remote_presence(RemotePresence::default());
                    cluster.remote_connections.store(0, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Reports this node's presence when it changed (or on `heartbeat`), and reads the others'
/// when one of them changed (or on `heartbeat`). Ok(true) when a report went out.
async fn exchange_presence(
    conn: &mut redis::aio::MultiplexedConnection,
    cluster: &Cluster,
    heartbeat: bool,
) -> redis::RedisResult<bool> {
    let key = |node: &str| format!("huddle:presence:{node}");
    let reported = match cluster.hub.local_presence(heartbeat) {
        Some(mine) => {
            let json = serde_json::to_string(&mine).expect("presence serializes");
            redis::pipe()
                .cmd("SET")
                .arg(key(&cluster.node))
                .arg(json)
                .arg("PX")
                .arg(cluster.presence_ttl.as_millis() as u64)
                .ignore()
                .cmd("SADD")
                .arg(NODES_KEY)
                .arg(&cluster.node)
                .ignore()
                .cmd("PUBLISH")
                .arg(PRESENCE_CHANNEL)
                .arg(&cluster.node)
                .ignore()
                .query_async::<()>(conn)
                .await?;
            true
        }
        None => false,
    };
    if !(heartbeat || cluster.presence_poked.swap(false, Ordering::Relaxed)) {
        return Ok(reported);
    }
    let nodes: Vec<String> = redis::cmd("SMEMBERS").arg(NODES_KEY).query_async(conn).await?;
    let others: Vec<&String> = nodes.iter().filter(|n| **n != cluster.node).collect();
    let mut remote = RemotePresence::default();
    let mut connections = 0;
    if !others.is_empty() {
        let keys: Vec<String> = others.iter().map(|n| key(n)).collect();
        let reports: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(conn).await?;
        for (node, report) in others.iter().zip(reports) {
            let Some(report) = report.and_then(|r| serde_json::from_str::<LocalPresence>(&r).ok()) else {
                // Its report expired: the node is gone.
                let _: () = redis::cmd("SREM")
                    .arg(NODES_KEY)
                    .arg(node.as_str())
                    .query_async(conn)
                    .await?;
                continue;
            };
            connections += report.connections;
            remote.users.extend(report.users);
            for (room, users) in report.rooms {
                let entry = remote.rooms.entry(room).or_default();
                entry.extend(users.into_iter().map(|u| (u.id, u)));
            }
        }
    }
    cluster.remote_connections.store(connections, Ordering::Relaxed);
    cluster.hub.set_remote_presence(remote);
    Ok(reported)
}
