//! Several nodes on one PostgreSQL database: sequence numbers stay gapless and unique under
//! concurrent writers on different nodes, and a node whose database is down refuses sends
//! with `unavailable` (nothing acked that was not stored), then recovers by itself.

use crate::common::services::Postgres;
use crate::common::*;
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
                    seqs.push(
                        client
                            .say(general, &format!("m{i}"), &format!("message {i}"))
                            .await
                            .0,
                    );
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
    let head = node
        .count("SELECT last_seq FROM rooms WHERE name = 'general'")
        .await;
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
        attachments: Vec::new(),
    })
    .await;
    let code = ada
        .next(|m| match m {
            ServerMsg::Error {
                code,
                client_msg_id: Some(id),
                ..
            } if id.0 == "during" => Some(code),
            ServerMsg::Ack { client_msg_id, .. } if client_msg_id.0 == "during" => {
                panic!("acked a message the database never stored")
            }
            _ => None,
        })
        .await;
    assert_eq!(code, ErrorCode::Unavailable);

    // A resume that cannot read the timeline says which room, so the client subscribes again.
    ada.send(ClientMsg::Subscribe {
        room: general,
        after_seq: None,
    })
    .await;
    let refused = ada
        .next(|m| match m {
            ServerMsg::Error { code, room, .. } => Some((code, room)),
            ServerMsg::Backlog { .. } => panic!("a backlog from a database that is down"),
            _ => None,
        })
        .await;
    assert_eq!(refused, (ErrorCode::Unavailable, Some(general)));

    // Nor can a session be checked: a reconnect is told to retry, never that it is signed
    // out (which would send its person back to the log-in screen).
    assert_eq!(server.upgrade(&[("Cookie", &ada.cookie)]).await.err(), Some(503));
    let token = ada.cookie.split_once('=').expect("name=token").1.to_owned();
    let mut raw = server.connect_raw().await;
    send(
        &mut raw,
        &ClientMsg::Hello {
            version: huddle::protocol::PROTOCOL_VERSION,
            token: Some(token),
        },
    )
    .await;
    match recv(&mut raw).await {
        ServerMsg::Error { code, .. } => assert_eq!(code, ErrorCode::Unavailable),
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert_eq!(expect_close(&mut raw).await, Some(1013), "reconnect later");

    postgres.restart();
    // The client's outbox sends it again; the writer reconnects by itself. The first tries
    // may still meet the database starting up.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        ada.send(ClientMsg::Send {
            room: general,
            client_msg_id: ClientMsgId("during".into()),
            text: "while the database is down".into(),
            attachments: Vec::new(),
        })
        .await;
        let acked = ada
            .next(|m| match m {
                ServerMsg::Error {
                    code: ErrorCode::Unavailable,
                    client_msg_id: Some(id),
                    ..
                } if id.0 == "during" => Some(false),
                ServerMsg::Ack { client_msg_id, .. } if client_msg_id.0 == "during" => Some(true),
                _ => None,
            })
            .await;
        if acked {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the node never recovered its database"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        server
            .count("SELECT COUNT(*) FROM messages WHERE client_msg_id = 'during'")
            .await,
        1
    );
    let health = reqwest::get(server.url("/health")).await.unwrap();
    assert_eq!(health.status(), 200);
}

/// Waits until the node's `/health` says its Redis subscription is live.
async fn wait_for_redis(node: &TestServer) {
    wait_for_redis_state(node, "ok").await
}

/// Polls `/health` until it reports Redis as `state` (`ok` or `down`).
async fn wait_for_redis_state(node: &TestServer, state: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let body: serde_json::Value = reqwest::get(node.url("/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if body["redis"] == state {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "redis never {state} on {}: {body}",
            node.url("")
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Reads live messages of `room` until `texts` text messages have arrived; checks that the
/// seqs (of every kind) follow each other without a gap or a repeat; returns the texts.
async fn collect_texts(
    client: &mut Client,
    room: huddle::protocol::RoomId,
    after: i64,
    texts: usize,
) -> Vec<String> {
    collect_texts_upto(client, room, after, texts).await.0
}

/// [`collect_texts`], also returning the newest seq seen.
async fn collect_texts_upto(
    client: &mut Client,
    room: huddle::protocol::RoomId,
    after: i64,
    texts: usize,
) -> (Vec<String>, i64) {
    let mut seen = Vec::new();
    let mut previous = after;
    while seen.len() < texts {
        let message = client.next_message().await;
        if message.room != room {
            continue;
        }
        assert_eq!(
            message.seq.0,
            previous + 1,
            "{} got seq {} after {previous}",
            client.me.name,
            message.seq.0
        );
        previous = message.seq.0;
        if message.kind == huddle::protocol::MessageKind::Text {
            seen.push(message.text);
        }
    }
    (seen, previous)
}

/// Three nodes on one database and one Redis; presence reports live 3 s.
async fn three_nodes(redis: &crate::common::services::Redis) -> Vec<TestServer> {
    nodes_with_presence_ttl(redis, 3, "3").await
}

/// `n` nodes on one database and one Redis, presence reports living `ttl_s`.
async fn nodes_with_presence_ttl(
    redis: &crate::common::services::Redis,
    n: usize,
    ttl_s: &str,
) -> Vec<TestServer> {
    let url = Postgres::shared().new_database();
    let nodes: Vec<TestServer> = (0..n)
        .map(|i| {
            TestServer::start_on(
                &url,
                &[
                    ("HUDDLE_NODE_ID", &format!("node-{i}")),
                    ("HUDDLE_REDIS_URL", &redis.url()),
                    ("HUDDLE_PRESENCE_TTL_S", ttl_s),
                ],
            )
        })
        .collect();
    for node in &nodes {
        wait_for_redis(node).await;
    }
    nodes
}

/// Three nodes, one client on each, all in `general`, all talking at once.
async fn three_node_room(
    redis: &crate::common::services::Redis,
) -> (Vec<TestServer>, Vec<Client>, huddle::protocol::RoomId, i64) {
    let nodes = three_nodes(redis).await;
    let mut clients = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        clients.push(node.client(&format!("Person{i}")).await);
    }
    let general = clients[0].room("general");
    let mut head = 0;
    for client in &mut clients {
        let (backlog, _) = client.subscribe(general, None).await;
        head = backlog.last().map_or(0, |m| m.seq.0);
    }
    // Everyone starts from the same point: the last of the three sign-ups' join lines.
    (nodes, clients, general, head)
}

#[tokio::test]
async fn clients_on_three_nodes_see_every_message_once_in_the_same_order() {
    let redis = crate::common::services::Redis::start();
    let (_nodes, mut clients, general, head) = three_node_room(&redis).await;
    const EACH: usize = 15;
    for i in 0..EACH {
        for (c, client) in clients.iter_mut().enumerate() {
            client
                .send(ClientMsg::Send {
                    room: general,
                    client_msg_id: ClientMsgId(format!("{c}-{i}")),
                    text: format!("from {c}: {i}"),
                    attachments: Vec::new(),
                })
                .await;
        }
    }
    let mut timelines = Vec::new();
    for client in &mut clients {
        timelines.push(collect_texts(client, general, head, EACH * 3).await);
    }
    let mut expected: Vec<String> = (0..EACH)
        .flat_map(|i| (0..3).map(move |c| format!("from {c}: {i}")))
        .collect();
    let mut first = timelines[0].clone();
    first.sort();
    expected.sort();
    assert_eq!(first, expected, "every message arrives once");
    assert!(
        timelines.iter().all(|t| *t == timelines[0]),
        "every node shows the same order"
    );
}

#[tokio::test]
async fn after_a_redis_restart_every_member_has_every_message_once() {
    let mut redis = crate::common::services::Redis::start();
    let (nodes, mut clients, general, head) = three_node_room(&redis).await;
    // Each person talks from a second tab and reads in the first, which keeps every frame.
    let mut tabs = Vec::new();
    for (node, client) in nodes.iter().zip(&clients) {
        tabs.push(node.connect_as(&client.cookie).await);
    }
    /// Each client says one line and waits for its ack.
    async fn say_round(clients: &mut [Client], room: huddle::protocol::RoomId, round: &str) {
        for (c, client) in clients.iter_mut().enumerate() {
            let id = format!("{round}-{c}");
            client.say(room, &id, &format!("text {id}")).await;
        }
    }
    // A reader on node 0 that only its own node can serve while Redis is away.
    let mut local = nodes[0].connect_as(&clients[0].cookie).await;
    local.subscribe(general, None).await;
    say_round(&mut tabs, general, "before").await;
    redis.kill();
    for node in &nodes {
        wait_for_redis_state(node, "down").await;
    }
    // Stored and acked while the nodes cannot tell each other; each node still serves its
    // own members live.
    say_round(&mut tabs, general, "during").await;
    loop {
        if local.next_message().await.text == "text during-0" {
            break;
        }
    }
    redis.restart();
    for node in &nodes {
        wait_for_redis(node).await;
    }
    say_round(&mut tabs, general, "after").await;
    let sent = 9;
    let mut timelines = Vec::new();
    for client in &mut clients {
        timelines.push(collect_texts(client, general, head, sent).await);
    }
    for timeline in &timelines {
        assert_eq!(timeline, &timelines[0], "same messages, same order on every node");
        let mut unique = timeline.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), sent, "no repeats: {timeline:?}");
    }
}

/// Waits for an online list of `room` naming exactly `names`.
async fn wait_for_online(client: &mut Client, room: huddle::protocol::RoomId, names: &[&str]) {
    let mut want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    want.sort();
    client
        .next(|m| match m {
            ServerMsg::Presence {
                room: r,
                online,
                total,
            } if r == room => {
                let mut got: Vec<String> = online.into_iter().map(|u| u.name).collect();
                got.sort();
                (got == want && total as usize == want.len()).then_some(())
            }
            _ => None,
        })
        .await
}

#[tokio::test]
async fn presence_is_cluster_wide_and_a_killed_node_takes_its_users_offline() {
    let redis = crate::common::services::Redis::start();
    let mut nodes = three_nodes(&redis).await;
    let mut ada = nodes[0].client("Ada").await;
    let mut bo = nodes[1].client("Bo").await;
    let mut cy = nodes[2].client("Cy").await;
    let mut dee = nodes[2].client("Dee").await;
    let general = ada.room("general");
    for client in [&mut ada, &mut bo, &mut cy, &mut dee] {
        client.subscribe(general, None).await;
    }
    let everyone = ["Ada", "Bo", "Cy", "Dee"];
    wait_for_online(&mut ada, general, &everyone).await;
    wait_for_online(&mut bo, general, &everyone).await;
    let (_, head) = cy
        .subscribe(general, None)
        .await
        .0
        .last()
        .map(|m| ((), m.seq.0))
        .unwrap();

    // Traffic before the crash reaches Cy on node 2.
    let mut ada_tab = nodes[0].connect_as(&ada.cookie).await;
    for i in 0..5 {
        ada_tab
            .say(general, &format!("before-{i}"), &format!("before {i}"))
            .await;
    }
    let (_, cy_seen) = collect_texts_upto(&mut cy, general, head, 5).await;

    // Node 2 dies (SIGKILL: it says goodbye to nobody); traffic goes on meanwhile.
    nodes[2].child.kill().unwrap();
    nodes[2].child.wait().unwrap();
    for i in 0..5 {
        ada_tab
            .say(general, &format!("during-{i}"), &format!("during {i}"))
            .await;
    }

    // Cy's client reconnects to another node and resumes from the last seq it saw.
    let mut cy = nodes[1].connect_as(&cy.cookie).await;
    let (missed, _) = cy.subscribe(general, Some(huddle::protocol::Seq(cy_seen))).await;
    let texts: Vec<&str> = missed
        .iter()
        .filter(|m| m.kind == huddle::protocol::MessageKind::Text)
        .map(|m| m.text.as_str())
        .collect();
    assert_eq!(texts, (0..5).map(|i| format!("during {i}")).collect::<Vec<_>>());
    assert!(
        missed.windows(2).all(|w| w[1].seq.0 == w[0].seq.0 + 1),
        "resume has no gap"
    );
    assert_eq!(
        missed.first().map(|m| m.seq.0),
        Some(cy_seen + 1),
        "resume starts right after"
    );

    // Dee, who did not come back, leaves the online lists once node 2's report expires.
    wait_for_online(&mut ada, general, &["Ada", "Bo", "Cy"]).await;
    wait_for_online(&mut bo, general, &["Ada", "Bo", "Cy"]).await;
    let health: serde_json::Value = reqwest::get(nodes[0].url("/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Ada's two tabs here; Bo and Cy on node 1.
    assert_eq!(health["cluster"]["connections"], 4, "{health}");
}

#[tokio::test]
async fn typing_on_one_node_shows_on_another() {
    let redis = crate::common::services::Redis::start();
    let nodes = three_nodes(&redis).await;
    let mut ada = nodes[0].client("Ada").await;
    let mut bo = nodes[1].client("Bo").await;
    let general = ada.room("general");
    ada.subscribe(general, None).await;
    bo.subscribe(general, None).await;
    wait_for_online(&mut bo, general, &["Ada", "Bo"]).await;
    ada.send(ClientMsg::Typing {
        room: general,
        active: true,
    })
    .await;
    bo.next(|m| match m {
        ServerMsg::Typing { room, users } if room == general && users.iter().any(|u| u.name == "Ada") => {
            Some(())
        }
        _ => None,
    })
    .await;
    ada.send(ClientMsg::Typing {
        room: general,
        active: false,
    })
    .await;
    bo.next(|m| match m {
        ServerMsg::Typing { room, users } if room == general && users.is_empty() => Some(()),
        _ => None,
    })
    .await;
}

#[tokio::test]
async fn a_node_that_shuts_down_takes_its_users_offline_at_once() {
    let redis = crate::common::services::Redis::start();
    // Reports live an hour: only the node's goodbye can take Bo offline within the test.
    let mut nodes = nodes_with_presence_ttl(&redis, 2, "3600").await;
    let mut ada = nodes[0].client("Ada").await;
    let mut bo = nodes[1].client("Bo").await;
    let general = ada.room("general");
    ada.subscribe(general, None).await;
    bo.subscribe(general, None).await;
    wait_for_online(&mut ada, general, &["Ada", "Bo"]).await;
    nodes[1].terminate();
    nodes[1].wait_exit();
    wait_for_online(&mut ada, general, &["Ada"]).await;
}

#[tokio::test]
async fn whiteboard_strokes_reach_viewers_on_other_nodes() {
    let redis = crate::common::services::Redis::start();
    let nodes = nodes_with_presence_ttl(&redis, 2, "3").await;
    let mut ada = nodes[0].client("Ada").await;
    let mut bo = nodes[1].client("Bo").await;
    let general = ada.room("general");
    for client in [&mut ada, &mut bo] {
        client.subscribe(general, None).await;
        client.send(ClientMsg::OpenBoard { room: general }).await;
        client
            .next(|m| matches!(m, ServerMsg::Board { more: false, .. }).then_some(()))
            .await;
    }
    ada.send(ClientMsg::Draw {
        room: general,
        stroke: 1,
        color: "#2563eb".into(),
        width: 30,
        points: vec![[100, 100], [200, 150]],
    })
    .await;
    let segment = bo
        .next(|m| match m {
            ServerMsg::Drawn { room, segment } if room == general => Some(segment),
            _ => None,
        })
        .await;
    assert_eq!(
        (segment.author.name.as_str(), segment.points),
        ("Ada", vec![[100, 100], [200, 150]])
    );
}
