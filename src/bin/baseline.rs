//! `huddle-baseline`: the yardstick for the benchmarks. A bare tokio-tungstenite room
//! broadcaster speaking Huddle's frame shapes (hello, create_room, join, subscribe, send ->
//! ack + message) with no application logic: no accounts, no storage, no limits, no presence.
//! What Huddle costs beyond this is the price of durability and safety.

use futures::{SinkExt, StreamExt};
use huddle::protocol::{ChatMessage, ClientMsg, MessageId, MessageKind, Seq, ServerMsg, UserId, UserRef};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{protocol::WebSocketConfig, Message, Utf8Bytes};

/// The same read buffer as Huddle's, so memory figures compare like with like.
const READ_BUFFER_BYTES: usize = huddle::server::ws::READ_BUFFER_BYTES;
/// tungstenite's write buffer, sized as Huddle's was before it wrote its own frames.
const WRITE_BUFFER_BYTES: usize = 2 * 1024;
/// Frames queued per connection before new ones are dropped.
const QUEUE: usize = 1024;

#[derive(Default)]
struct Room {
    seq: i64,
    subscribers: Vec<(u64, mpsc::Sender<Utf8Bytes>)>,
}

#[derive(Default)]
struct Rooms {
    by_id: HashMap<i64, Room>,
    by_name: HashMap<String, i64>,
    next_message_id: i64,
}

type Shared = Arc<Mutex<Rooms>>;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    // The same start-up line Huddle logs, so tools find the address the same way.
    println!(
        "{}",
        serde_json::json!({"message": "listening", "addr": listener.local_addr()?.to_string()})
    );
    let rooms = Shared::default();
    let mut next_connection = 0u64;
    loop {
        let (stream, peer) = listener.accept().await?;
        next_connection += 1;
        tokio::spawn(serve(stream, peer, next_connection, rooms.clone()));
    }
}

fn encode(msg: &ServerMsg) -> Utf8Bytes {
    msg.encode().into()
}

async fn serve(stream: TcpStream, _peer: SocketAddr, id: u64, rooms: Shared) {
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(WRITE_BUFFER_BYTES + 2 * 65536);
    let Ok(socket) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if sink.send(Message::Text(frame)).await.is_err() {
                break;
            }
        }
    });
    let me = UserRef {
        id: UserId(id as i64),
        name: format!("u{id}"),
    };
    while let Some(Ok(frame)) = stream.next().await {
        let Message::Text(text) = frame else { continue };
        let Ok(msg) = ClientMsg::decode(text.as_str()) else {
            continue;
        };
        let reply = match msg {
            ClientMsg::Hello { .. } => Some(Utf8Bytes::from(format!(
                r#"{{"type":"welcome","connection_id":{id},"me":{{"id":{id},"name":"u{id}"}}}}"#
            ))),
            ClientMsg::CreateRoom { name, .. } => {
                let mut rooms = rooms.lock().unwrap();
                let next = rooms.by_name.len() as i64 + 1;
                let room = *rooms.by_name.entry(name).or_insert(next);
                rooms.by_id.entry(room).or_default();
                Some(joined(room))
            }
            ClientMsg::Join { room } => Some(joined(room.0)),
            ClientMsg::Subscribe { room, .. } => {
                rooms
                    .lock()
                    .unwrap()
                    .by_id
                    .entry(room.0)
                    .or_default()
                    .subscribers
                    .push((id, tx.clone()));
                Some(encode(&ServerMsg::Backlog {
                    room,
                    messages: Vec::new(),
                    gap: false,
                    more: false,
                }))
            }
            ClientMsg::Send {
                room,
                client_msg_id,
                text,
                ..
            } => {
                let mut guard = rooms.lock().unwrap();
                guard.next_message_id += 1;
                let message_id = guard.next_message_id;
                let live = guard.by_id.entry(room.0).or_default();
                live.seq += 1;
                let message = ChatMessage {
                    id: MessageId(message_id),
                    room,
                    seq: Seq(live.seq),
                    kind: MessageKind::Text,
                    author: me.clone(),
                    text,
                    ts: now_ms(),
                    client_msg_id: Some(client_msg_id.clone()),
                    target_seq: None,
                    target: None,
                    edited: false,
                    deleted: false,
                    attachments: Vec::new(),
                };
                let frame = encode(&ServerMsg::Message {
                    message: message.clone(),
                });
                for (_, subscriber) in &live.subscribers {
                    let _ = subscriber.try_send(frame.clone());
                }
                Some(encode(&ServerMsg::Ack {
                    room,
                    client_msg_id,
                    id: message.id,
                    seq: message.seq,
                    ts: message.ts,
                }))
            }
            _ => None,
        };
        if let Some(reply) = reply {
            if tx.send(reply).await.is_err() {
                break;
            }
        }
    }
    for room in rooms.lock().unwrap().by_id.values_mut() {
        room.subscribers.retain(|(subscriber, _)| *subscriber != id);
    }
    drop(tx);
    let _ = writer.await;
}

fn joined(room: i64) -> Utf8Bytes {
    Utf8Bytes::from(format!(r#"{{"type":"joined","room":{{"id":{room}}}}}"#))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
