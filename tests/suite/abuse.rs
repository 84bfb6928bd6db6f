//! Abuse protection over real sockets: per-connection rate limits, per-IP and global
//! connection limits, the hello deadline, origin checks and security headers.

use crate::common::*;
use huddle::protocol::{ClientMsg, ClientMsgId, ErrorCode, ServerMsg};
use std::collections::BTreeSet;

#[tokio::test]
async fn a_flooding_client_is_rate_limited_and_others_keep_receiving() {
    let server = TestServer::start_with(&[("HUDDLE_MSG_RATE_PER_S", "10"), ("HUDDLE_MSG_BURST", "20")]);
    let mut flooder = server.client("Flood").await;
    let mut reader = server.client("Reader").await;
    let general = flooder.room("general");
    flooder.subscribe(general, None).await;
    reader.subscribe(general, None).await;

    // 1,000 sends as fast as the socket takes them.
    for i in 0..1000 {
        flooder
            .send(ClientMsg::Send {
                room: general,
                client_msg_id: ClientMsgId(format!("f{i}")),
                text: format!("flood {i}"),
                attachments: Vec::new(),
            })
            .await;
    }
    let mut acked = BTreeSet::new();
    let mut limited = 0;
    let mut retry_after = 0;
    while acked.len() + limited < 1000 {
        flooder
            .next(|m| match m {
                ServerMsg::Ack { client_msg_id, .. } => {
                    acked.insert(client_msg_id.0);
                    Some(())
                }
                ServerMsg::Error {
                    code: ErrorCode::RateLimited,
                    client_msg_id: Some(_),
                    retry_after_ms: Some(ms),
                    ..
                } => {
                    limited += 1;
                    retry_after = ms;
                    Some(())
                }
                ServerMsg::Error { code, message, .. } => panic!("unexpected refusal {code}: {message}"),
                _ => None,
            })
            .await;
    }
    assert!(limited > 900, "most of the flood is refused ({limited} refused)");
    assert!(
        acked.len() >= 20,
        "the burst gets through ({} acked)",
        acked.len()
    );
    assert!(retry_after > 0);

    // Exactly the accepted messages were stored and reached the reader, who keeps receiving.
    let stored = server
        .count("SELECT COUNT(*) FROM messages WHERE client_msg_id LIKE 'f%'")
        .await;
    assert_eq!(stored as usize, acked.len());
    let accepted_texts: BTreeSet<String> = acked.iter().map(|id| format!("flood {}", &id[1..])).collect();
    let mut seen = BTreeSet::new();
    while seen.len() < acked.len() {
        seen.insert(reader.next_message().await.text);
    }
    assert_eq!(seen, accepted_texts);
    let mut other = server.client("Other").await;
    other.subscribe(general, None).await;
    other.say(general, "calm", "still working").await;
    reader
        .next(|m| {
            matches!(m, ServerMsg::Message { message } if message.text == "still working").then_some(())
        })
        .await;

    // After the advertised wait the flooder may send again.
    tokio::time::sleep(std::time::Duration::from_millis(retry_after.into())).await;
    flooder.say(general, "after", "sorry").await;
}

#[tokio::test]
async fn a_rate_limited_subscribe_names_its_room_so_the_client_can_retry() {
    let server = TestServer::start_with(&[("HUDDLE_REQUEST_RATE_PER_S", "1"), ("HUDDLE_REQUEST_BURST", "3")]);
    let mut ada = server.client("Ada").await;
    let general = ada.room("general");
    for _ in 0..10 {
        ada.send(ClientMsg::Subscribe {
            room: general,
            after_seq: None,
        })
        .await;
    }
    let (room, retry_after) = ada
        .next(|m| match m {
            ServerMsg::Error {
                code: ErrorCode::RateLimited,
                room,
                retry_after_ms,
                ..
            } => Some((room, retry_after_ms)),
            _ => None,
        })
        .await;
    assert_eq!(
        room,
        Some(general),
        "the refusal says which room to subscribe again"
    );
    assert!(retry_after.is_some_and(|ms| ms > 0));
}

#[tokio::test]
async fn typing_floods_are_dropped_quietly_and_do_not_use_up_the_chat_budget() {
    let server = TestServer::start_with(&[("HUDDLE_MSG_RATE_PER_S", "10"), ("HUDDLE_MSG_BURST", "20")]);
    let mut typist = server.client("Typist").await;
    let general = typist.room("general");
    typist.subscribe(general, None).await;
    for i in 0..500 {
        typist
            .send(ClientMsg::Typing {
                room: general,
                active: i % 2 == 0,
            })
            .await;
    }
    // No error for the dropped typing updates: the next answer is the ack of a chat message.
    typist
        .send(ClientMsg::Send {
            room: general,
            client_msg_id: ClientMsgId("after-typing".into()),
            text: "hi".into(),
            attachments: Vec::new(),
        })
        .await;
    typist
        .next(|m| match m {
            ServerMsg::Ack { client_msg_id, .. } if client_msg_id.0 == "after-typing" => Some(()),
            ServerMsg::Error { code, message, .. } => panic!("unexpected error {code}: {message}"),
            _ => None,
        })
        .await;
}

#[tokio::test]
async fn new_connections_per_ip_are_limited_before_the_upgrade() {
    let server = TestServer::start_with(&[("HUDDLE_IP_CONNECTS_PER_10S", "5")]);
    let mut open = Vec::new();
    for _ in 0..5 {
        open.push(server.upgrade(&[]).await.expect("within the limit"));
    }
    assert_eq!(server.upgrade(&[]).await.err(), Some(429));
    // The refusal is logged with the reason, never with secrets.
    server.wait_for_log("per-IP connection limit").await;
}

#[tokio::test]
async fn open_connections_per_ip_are_capped_and_freed_on_close() {
    let server = TestServer::start_with(&[("HUDDLE_IP_MAX_OPEN", "3")]);
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(server.upgrade(&[]).await.expect("within the cap"));
    }
    assert_eq!(server.upgrade(&[]).await.err(), Some(429));
    // Close one; once the server has let go of it, a new one fits.
    let mut closing = open.pop().unwrap();
    closing.close(None).await.unwrap();
    assert_eq!(
        expect_close(&mut closing).await,
        Some(1000),
        "the close is answered"
    );
    server.wait_for_log("disconnected").await;
    open.push(server.upgrade(&[]).await.expect("a slot was freed"));
}

#[tokio::test]
async fn the_global_connection_cap_answers_503() {
    let server = TestServer::start_with(&[("HUDDLE_MAX_CONNECTIONS", "2")]);
    let _a = server.upgrade(&[]).await.unwrap();
    let _b = server.upgrade(&[]).await.unwrap();
    assert_eq!(server.upgrade(&[]).await.err(), Some(503));
}

#[tokio::test]
async fn a_socket_that_never_says_hello_is_closed() {
    let server = TestServer::start_with(&[("HUDDLE_HELLO_TIMEOUT_S", "1")]);
    let mut silent = server.upgrade(&[]).await.unwrap();
    assert_eq!(expect_close(&mut silent).await, Some(1002));
}

#[tokio::test]
async fn a_greeted_socket_outlives_the_hello_deadline() {
    // One timer serves the hello deadline and the session's expiry: once hello has come,
    // the deadline passing must not close the socket. The heartbeat (2 s) comes after the
    // hello deadline (1 s), so a ping proves the socket is still open past it.
    let server = TestServer::start_with(&[("HUDDLE_HELLO_TIMEOUT_S", "1"), ("HUDDLE_HEARTBEAT_S", "2")]);
    // Other frames (the online count) may come first; a close fails `recv`.
    let mut greeted = server.client("Greta").await;
    let ping = |m: ServerMsg| matches!(m, ServerMsg::Ping {}).then_some(());
    greeted.next(ping).await;
    greeted.send(ClientMsg::Pong {}).await;
    greeted.next(ping).await;
}

#[tokio::test]
async fn foreign_and_look_alike_origins_get_403() {
    let server = TestServer::start();
    let own = format!("http://{}", server.addr);
    assert!(
        server.upgrade(&[("Origin", &own)]).await.is_ok(),
        "own origin is allowed"
    );
    for origin in [
        "https://evil.example".to_owned(),
        format!("http://{}.evil.example", server.addr),
        format!("http://evil.example/{}", server.addr),
        "null".to_owned(),
    ] {
        assert_eq!(
            server.upgrade(&[("Origin", &origin)]).await.err(),
            Some(403),
            "{origin}"
        );
    }
}

#[tokio::test]
async fn pages_carry_a_nonce_based_csp_and_security_headers() {
    let server = TestServer::start();
    let response = reqwest::get(server.url("/")).await.unwrap();
    let headers = response.headers().clone();
    let html = response.text().await.unwrap();
    let csp = headers["content-security-policy"].to_str().unwrap().to_owned();
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("script-src names a nonce");
    assert!(nonce.len() >= 16, "{nonce}");
    assert!(
        html.contains(&format!("nonce=\"{nonce}\"")),
        "the hydration script carries the nonce"
    );
    for part in [
        "frame-ancestors 'none'",
        "'wasm-unsafe-eval'",
        "object-src 'none'",
        "style-src 'self'",
    ] {
        assert!(csp.contains(part), "{part} missing from {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "strict-origin-when-cross-origin");
    assert_eq!(headers["x-frame-options"], "DENY");

    // A second page view gets a different nonce.
    let again = reqwest::get(server.url("/")).await.unwrap();
    assert!(!again.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains(nonce));

    // Other responses get a locked-down default policy.
    let health = reqwest::get(server.url("/health")).await.unwrap();
    assert_eq!(
        health.headers()["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'"
    );
    assert_eq!(health.headers()["x-content-type-options"], "nosniff");
}
