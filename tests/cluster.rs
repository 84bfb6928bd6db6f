//! Several nodes on one PostgreSQL database: sequence numbers stay gapless and unique under
//! concurrent writers on different nodes, and a node whose database is down refuses sends
//! with `unavailable` (nothing acked that was not stored), then recovers by itself.

mod common;

use common::services::Postgres;
use common::*;
use huddle::protocol::{ClientMsg, ClientMsgId, ErrorCode, ServerMsg};

/// `n` nodes sharing the database at `url`.
fn nodes(url: &str, n: usize) -> Vec<TestServer> {
    (0..n)
        .map(|i| TestServer::start_on(url, &[("HUDDLE_NODE_ID", &format!("node-{i}"))]))
        .collect()
}

#[tokio::test]
async fn concurrent_senders_on_three_nodes_get_contiguous_seqs() {
    let url = Postgres::shared().new_database();
    let nodes = nodes(&url, 3);
    const PER_CLIENT: usize = 40;
    let mut senders = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for c in 0..2 {
            let mut client = node.client(&format!("Sender{n}x{c}")).await;
            let general = client.room("general");
            senders.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..PER_CLIENT {
                    seqs.push(client.say(general, &format!("m{i}"), &format!("message {i}")).await.0);
                }
                seqs
            }));
        }
    }
    let mut acked: Vec<i64> = Vec::new();
    for sender in senders {
        acked.extend(sender.await.unwrap());
    }
    let total = acked.len();
    acked.sort_unstable();
    acked.dedup();
    assert_eq!(acked.len(), total, "every ack names its own seq");

    let node = &nodes[0];
    let texts = node
        .count("SELECT COUNT(*) FROM messages m JOIN rooms r ON r.id = m.room_id WHERE r.name = 'general' AND m.kind = 'text'")
        .await;
    assert_eq!(texts, total as i64, "every acked message is stored once");
    let rows = node
        .count("SELECT COUNT(*) FROM messages m JOIN rooms r ON r.id = m.room_id WHERE r.name = 'general'")
        .await;
    let max_seq = node
        .count("SELECT MAX(m.seq) FROM messages m JOIN rooms r ON r.id = m.room_id WHERE r.name = 'general'")
        .await;
    assert_eq!(rows, max_seq, "general's seqs run 1..={max_seq} without a gap");
    let head = node.count("SELECT last_seq FROM rooms WHERE name = 'general'").await;
    assert_eq!(head, max_seq, "the room's head is its newest message");
}

#[tokio::test]
async fn database_down_refuses_sends_as_unavailable_then_recovers() {
    let postgres = Postgres::start();
    let url = postgres.new_database();
    let server = TestServer::start_on(&url, &[]);
    let mut ada = server.client("Ada").await;
    let general = ada.room("general");
    ada.say(general, "before", "stored").await;

    postgres.kill();
    let health = reqwest::get(server.url("/health")).await.unwrap();
    assert_eq!(health.status(), 503, "a node without its database is not healthy");
    let body: serde_json::Value = health.json().await.unwrap();
    assert_eq!(body["database"]["state"], "down");
    assert_eq!(body["database"]["backend"], "postgres");

    ada.send(ClientMsg::Send {
        room: general,
        client_msg_id: ClientMsgId("during".into()),
        text: "while the database is down".into(),
    })
    .await;
    let code = ada
        .next(|m| match m {
            ServerMsg::Error { code, client_msg_id: Some(id), .. } if id.0 == "during" => Some(code),
            ServerMsg::Ack { client_msg_id, .. } if client_msg_id.0 == "during" => {
                panic!("acked a message the database never stored")
            }
            _ => None,
        })
        .await;
    assert_eq!(code, ErrorCode::Unavailable);

    postgres.restart();
    // The client's outbox sends it again; the writer reconnects by itself. The first tries
    // may still meet the database starting up.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        ada.send(ClientMsg::Send {
            room: general,
            client_msg_id: ClientMsgId("during".into()),
            text: "while the database is down".into(),
        })
        .await;
        let acked = ada
            .next(|m| match m {
                ServerMsg::Error { code: ErrorCode::Unavailable, client_msg_id: Some(id), .. } if id.0 == "during" => Some(false),
                ServerMsg::Ack { client_msg_id, .. } if client_msg_id.0 == "during" => Some(true),
                _ => None,
            })
            .await;
        if acked {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the node never recovered its database");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(server.count("SELECT COUNT(*) FROM messages WHERE client_msg_id = 'during'").await, 1);
    let health = reqwest::get(server.url("/health")).await.unwrap();
    assert_eq!(health.status(), 200);
}
