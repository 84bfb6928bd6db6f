//! Foundation behaviour over real sockets: handshake, protocol errors, /health, SSR page,
//! graceful shutdown and configuration errors.

use crate::common::*;
use huddle::protocol::{ClientMsg, ErrorCode, ServerMsg};
use std::process::Command;

#[tokio::test]
async fn hello_gets_welcome_with_limits() {
    let server = TestServer::start_with(&[("HUDDLE_MAX_MESSAGE_CHARS", "1234")]);
    let (_socket, welcome) = server.connect().await;
    let ServerMsg::Welcome {
        protocol_version,
        limits,
        server_version,
        ..
    } = welcome
    else {
        unreachable!()
    };
    assert_eq!(protocol_version, 1);
    assert_eq!(limits.max_message_chars, 1234);
    assert_eq!(server_version, env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn each_connection_gets_its_own_id() {
    let server = TestServer::start();
    let (
        _a,
        ServerMsg::Welcome {
            connection_id: first, ..
        },
    ) = server.connect().await
    else {
        unreachable!()
    };
    let (
        _b,
        ServerMsg::Welcome {
            connection_id: second,
            ..
        },
    ) = server.connect().await
    else {
        unreachable!()
    };
    assert_ne!(first, second);
}

#[tokio::test]
async fn wrong_version_gets_error_then_close() {
    let server = TestServer::start();
    let mut socket = server.connect_raw().await;
    send(
        &mut socket,
        &ClientMsg::Hello {
            version: 99,
            token: None,
        },
    )
    .await;
    match recv(&mut socket).await {
        ServerMsg::Error { code, message, .. } => {
            assert_eq!(code, ErrorCode::UnsupportedVersion);
            assert!(message.contains("99"), "{message}");
        }
        other => panic!("expected error, got {other:?}"),
    }
    assert_eq!(expect_close(&mut socket).await, Some(1002));
}

#[tokio::test]
async fn bad_frames_get_bad_request_and_connection_stays_usable() {
    let server = TestServer::start();
    let (mut socket, _) = server.connect().await;
    for frame in [
        "this is not json",
        r#"{"type":"dance","steps":3}"#,
        r#"{"no_type":true}"#,
        r#"{"type":"hello"}"#,
    ] {
        send_text(&mut socket, frame).await;
        match recv(&mut socket).await {
            ServerMsg::Error { code, message, .. } => {
                assert_eq!(code, ErrorCode::BadRequest, "for {frame}");
                assert!(!message.is_empty());
            }
            other => panic!("expected error for {frame}, got {other:?}"),
        }
    }
    // Still usable: a valid hello is answered.
    send(
        &mut socket,
        &ClientMsg::Hello {
            version: 1,
            token: None,
        },
    )
    .await;
    assert!(matches!(recv(&mut socket).await, ServerMsg::Welcome { .. }));
}

#[tokio::test]
async fn oversized_frame_closes_only_that_connection() {
    let server = TestServer::start_with(&[
        ("HUDDLE_MAX_FRAME_BYTES", "9000"),
        ("HUDDLE_MAX_MESSAGE_CHARS", "100"),
    ]);
    let (mut big, _) = server.connect().await;
    let (mut other, _) = server.connect().await;
    send_text(&mut big, &"x".repeat(20_000)).await;
    assert_eq!(expect_close(&mut big).await, Some(1009), "message too big");
    send(
        &mut other,
        &ClientMsg::Hello {
            version: 1,
            token: None,
        },
    )
    .await;
    assert!(matches!(recv(&mut other).await, ServerMsg::Welcome { .. }));
}

#[tokio::test]
async fn health_reports_status_and_connections() {
    let server = TestServer::start();
    let (_socket, _) = server.connect().await;
    let response = reqwest::get(server.url("/health")).await.unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["connections"], 1);
    let backend = if crate::common::services::postgres_selected() {
        "postgres"
    } else {
        "sqlite"
    };
    assert_eq!(
        body["database"],
        serde_json::json!({ "backend": backend, "state": "ok" })
    );
    assert!(!body["node"].as_str().unwrap().is_empty(), "names its node");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["uptime_s"].is_u64());
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
}

/// Linux starts processes at 1,024 open files; a chat server needs one per connection. The
/// server raises its soft limit to the hard one, and says so when even that is too low.
#[tokio::test]
async fn the_server_raises_its_open_file_limit_and_warns_when_the_hard_limit_is_low() {
    use std::os::unix::process::CommandExt;
    let server = TestServer::start_customized("", &[("HUDDLE_MAX_CONNECTIONS", "5000")], |command| {
        // SAFETY: setrlimit is async-signal-safe; the closure allocates nothing.
        unsafe {
            command.pre_exec(|| {
                nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 256, 1024)
                    .map_err(std::io::Error::from)
            });
        }
    });
    let warning = server
        .wait_for_log("open-file limit is below max_connections")
        .await;
    assert!(warning.contains("\"limit\":1024"), "{warning}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
    let open_files = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap();
    let values: Vec<&str> = open_files.split_whitespace().collect();
    assert_eq!(values[3..5], ["1024", "1024"], "{open_files}");
    // Still serving, within the limit it has.
    let (_socket, _) = server.connect().await;
}

#[tokio::test]
async fn home_page_is_server_rendered() {
    let server = TestServer::start();
    let response = reqwest::get(server.url("/")).await.unwrap();
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    assert!(html.contains("<title>Huddle</title>"), "{html}");
    assert!(html.contains("Connecting"), "status is rendered before hydration");
    assert!(html.contains("/pkg/huddle"), "hydration scripts are linked");
}

#[tokio::test]
async fn foreign_origin_is_refused() {
    let server = TestServer::start();
    let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{}/ws", server.addr),
    )
    .unwrap();
    request
        .headers_mut()
        .insert("Origin", "https://evil.example".parse().unwrap());
    let err = tokio_tungstenite::connect_async(request).await.unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
}

#[tokio::test]
async fn sigterm_closes_sockets_with_going_away_and_exits_zero() {
    let mut server = TestServer::start();
    let (mut a, _) = server.connect().await;
    let (mut b, _) = server.connect().await;
    server.terminate();
    assert_eq!(expect_close(&mut a).await, Some(1001));
    assert_eq!(expect_close(&mut b).await, Some(1001));
    assert!(server.wait_exit().success());
}

#[test]
fn bad_configuration_exits_2_naming_the_key() {
    let data = tempfile::tempdir().unwrap();
    let run = |env: &[(&str, &str)], config: &std::path::Path| {
        let output = Command::new(env!("CARGO_BIN_EXE_huddle"))
            .env("HUDDLE_DATA_DIR", data.path())
            .env("HUDDLE_CONFIG", config)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let good = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/Leptos.toml"));

    let (code, err) = run(&[("HUDDLE_ADDR", "not-an-address")], good);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--addr") && err.contains("127.0.0.1:3000"), "{err}");

    let (code, err) = run(&[("HUDDLE_LOG_FORMAT", "loud")], good);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("log-format") && err.contains("json"), "{err}");

    let bad_file = data.path().join("bad.toml");
    std::fs::write(&bad_file, "[huddle]\nmax_message_chars = \"many\"\n").unwrap();
    let (code, err) = run(&[], &bad_file);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("max_message_chars"), "{err}");

    std::fs::write(&bad_file, "[huddle]\noutbound_queue = 2\n").unwrap();
    let (code, err) = run(&[], &bad_file);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("outbound_queue") && err.contains("8..=65536"),
        "{err}"
    );

    let (code, err) = run(
        &[
            ("HUDDLE_RECONNECT_BASE_MS", "2000"),
            ("HUDDLE_RECONNECT_CAP_MS", "1000"),
        ],
        good,
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("reconnect_cap_ms") && err.contains("reconnect_base_ms"),
        "{err}"
    );
}

#[test]
fn help_lists_options() {
    let output = Command::new(env!("CARGO_BIN_EXE_huddle"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--addr",
        "--data-dir",
        "--log-format",
        "--allowed-origins",
        "--max-message-chars",
        "HUDDLE_ADDR",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
}

#[tokio::test]
async fn silent_connection_is_pinged_then_closed() {
    let server = TestServer::start_with(&[("HUDDLE_HEARTBEAT_S", "1")]);
    let (mut socket, welcome) = server.connect().await;
    let ServerMsg::Welcome { limits, .. } = welcome else {
        unreachable!()
    };
    assert_eq!(limits.heartbeat_s, 1);
    assert_eq!(recv(&mut socket).await, ServerMsg::Ping {});
    // No answer: after two silent intervals the server gives up on us.
    assert_eq!(expect_close(&mut socket).await, Some(4408));
}

#[tokio::test]
async fn answering_pings_keeps_the_connection() {
    let server = TestServer::start_with(&[("HUDDLE_HEARTBEAT_S", "1")]);
    let (mut socket, _) = server.connect().await;
    for _ in 0..4 {
        assert_eq!(recv(&mut socket).await, ServerMsg::Ping {});
        send(&mut socket, &ClientMsg::Pong {}).await;
    }
    send(
        &mut socket,
        &ClientMsg::Hello {
            version: 1,
            token: None,
        },
    )
    .await;
    loop {
        match recv(&mut socket).await {
            ServerMsg::Ping {} => continue,
            other => break assert!(matches!(other, ServerMsg::Welcome { .. }), "{other:?}"),
        }
    }
}

#[tokio::test]
async fn the_socketio_door_opens_by_default_and_can_be_turned_off() {
    let handshake = "/socket.io/?EIO=4&transport=polling";
    let open = TestServer::start();
    let body = reqwest::get(open.url(handshake))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.starts_with("0{\"sid\""),
        "engine.io open packet expected, got {body}"
    );
    let closed = TestServer::start_with(&[("HUDDLE_SOCKETIO", "false")]);
    let body = reqwest::get(closed.url(handshake))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!body.contains("\"sid\""), "the door should be closed, got {body}");
}

/// A client may send its first frame in the same packet as the upgrade request: the server
/// reads past the request then, and those bytes must still reach the WebSocket reader.
#[tokio::test]
async fn a_frame_sent_with_the_upgrade_request_is_read() {
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::{protocol::Role, Message};
    let server = TestServer::start();
    let hello = serde_json::to_vec(&ClientMsg::Hello {
        version: huddle::protocol::PROTOCOL_VERSION,
        token: None,
    })
    .unwrap();
    assert!(hello.len() < 126, "fits the short length form");
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut packet = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        server.addr
    )
    .into_bytes();
    packet.extend_from_slice(&[0x81, 0x80 | hello.len() as u8]);
    packet.extend_from_slice(&mask);
    packet.extend(hello.iter().enumerate().map(|(i, byte)| byte ^ mask[i % 4]));
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(&packet).await.unwrap();

    // The response head, read a byte at a time so that no frame byte is taken with it.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut socket = tokio_tungstenite::WebSocketStream::from_raw_socket(tcp, Role::Client, None).await;
    let reply = tokio::time::timeout(WAIT, socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Message::Text(text) = reply else {
        panic!("expected a text frame, got {reply:?}")
    };
    let welcome: ServerMsg = serde_json::from_str(&text).unwrap();
    assert!(matches!(welcome, ServerMsg::Welcome { .. }), "{welcome:?}");
}

/// The server writes its own frames (`server/ws/wire.rs`): tungstenite's control replies
/// reach the client through the same writer, frames over 125 bytes use the longer length
/// form, a frame bigger than the read buffer arrives whole, and a client's close is answered.
#[tokio::test]
async fn control_frames_long_frames_and_the_close_handshake_work_on_the_wire() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{protocol::CloseFrame, Message};
    let server = TestServer::start_with(&[("HUDDLE_MAX_MESSAGE_CHARS", "4000")]);
    let mut alice = server.client("Alice").await;
    let general = alice.room("general");
    alice.subscribe(general, None).await;

    alice
        .socket
        .send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let pong = loop {
        match tokio::time::timeout(WAIT, alice.socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Pong(payload) => break payload,
            _ => continue,
        }
    };
    assert_eq!(&pong[..], b"are you there");

    // 3,000 characters: three reads of the 1 KiB buffer on the way in; on the way out a live
    // message (16-bit length) and a backlog page of ten of them (30 KB, still 16-bit).
    let long = format!("{}end", "long line ".repeat(300));
    for i in 0..12 {
        alice.say(general, &format!("long-{i}"), &long).await;
    }
    let mut bob = server.client("Bob").await;
    let (backlog, _) = bob.subscribe(general, Some(huddle::protocol::Seq(0))).await;
    assert_eq!(
        backlog.iter().filter(|m| m.text == long).count(),
        12,
        "every long line, whole"
    );

    let bye = CloseFrame {
        code: 1000.into(),
        reason: "bye".into(),
    };
    alice.socket.send(Message::Close(Some(bye))).await.unwrap();
    assert_eq!(
        expect_close(&mut alice.socket).await,
        Some(1000),
        "the close is answered in kind"
    );
}
