//! Accounts and sessions over real HTTP and sockets: register, log in, log out, tokens
//! (cookie, Bearer, hello), expiry, throttling, guests on and off, secret storage.

use crate::common::*;
use huddle::protocol::{ClientMsg, ErrorCode, ServerMsg, PROTOCOL_VERSION};

/// POST a JSON body; returns (status, body, the session cookie if one was set).
async fn post(
    server: &TestServer,
    path: &str,
    body: serde_json::Value,
    cookie: Option<&str>,
) -> (u16, serde_json::Value, Option<String>) {
    let mut request = reqwest::Client::new().post(server.url(path)).json(&body);
    if let Some(cookie) = cookie {
        request = request.header("Cookie", cookie);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let cookie = response
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, body, cookie)
}

/// Says hello and returns who the server thinks we are.
async fn whoami(socket: &mut Socket, token: Option<String>) -> Option<String> {
    send(
        socket,
        &ClientMsg::Hello {
            version: PROTOCOL_VERSION,
            token,
        },
    )
    .await;
    loop {
        match recv(socket).await {
            ServerMsg::Welcome { me, .. } => return me.map(|m| m.name),
            ServerMsg::Error {
                code: ErrorCode::InvalidToken,
                ..
            } => continue,
            other => panic!("expected welcome, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn register_log_out_and_log_in_again() {
    let server = TestServer::start();
    let cookie = server.register("Grace", "correct horse").await;
    let mut tab = server.connect_as(&cookie).await;
    assert_eq!(tab.me.name, "Grace");

    // Names are unique regardless of case, for accounts and guests alike.
    let (status, body, _) = post(
        &server,
        "/api/register",
        serde_json::json!({"name": "grace", "password": "another one"}),
        None,
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (409, Some("name_taken")));
    let (status, body, _) = post(&server, "/api/guest", serde_json::json!({"name": "GRACE"}), None).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("name_taken")));
    let (status, body, _) = post(
        &server,
        "/api/register",
        serde_json::json!({"name": "Short", "password": "1234567"}),
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("weak_password")),
        "{body}"
    );

    // Log-out closes this session's sockets with 1008 and the token stops working.
    let (status, _, cleared) = post(&server, "/api/logout", serde_json::json!({}), Some(&cookie)).await;
    assert_eq!(status, 204);
    assert_eq!(cleared.as_deref(), Some("huddle_session="));
    assert_eq!(expect_close(&mut tab.socket).await, Some(1008));
    let mut stale = server
        .upgrade(&[("Cookie", &cookie)])
        .await
        .expect("guests allowed");
    assert_eq!(
        whoami(&mut stale, None).await,
        None,
        "a logged-out token signs nobody in"
    );

    // Wrong password and unknown name get the same answer.
    let (status, wrong, _) = post(
        &server,
        "/api/login",
        serde_json::json!({"name": "Grace", "password": "wrong horse"}),
        None,
    )
    .await;
    let (status2, unknown, _) = post(
        &server,
        "/api/login",
        serde_json::json!({"name": "Nobody", "password": "wrong horse"}),
        None,
    )
    .await;
    assert_eq!((status, status2), (401, 401));
    assert_eq!(wrong, unknown);
    assert_eq!(wrong["code"], "invalid_credentials");

    let (status, body, cookie) = post(
        &server,
        "/api/login",
        serde_json::json!({"name": "GRACE", "password": "correct horse"}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let again = server.connect_as(&cookie.unwrap()).await;
    assert_eq!(again.me.name, "Grace");

    // The token also works as a Bearer header and inside hello (for non-browser clients).
    let token = body["token"].as_str().unwrap().to_owned();
    let mut bearer = server
        .upgrade(&[("Authorization", &format!("Bearer {token}"))])
        .await
        .unwrap();
    assert_eq!(whoami(&mut bearer, None).await.as_deref(), Some("Grace"));
    let mut plain = server.upgrade(&[]).await.unwrap();
    assert_eq!(whoami(&mut plain, Some(token)).await.as_deref(), Some("Grace"));
}

/// A socket that signs in with the token in its `hello` (no cookie) is closed by log-out too:
/// the connection watches the session it signed into, not the one it started with.
#[tokio::test]
async fn logout_closes_a_socket_signed_in_by_hello() {
    let server = TestServer::start();
    let cookie = server.register("Ada", "analytical engine").await;
    let token = cookie.split_once('=').expect("name=token").1.to_owned();
    let mut raw = server.connect_raw().await;
    send(
        &mut raw,
        &ClientMsg::Hello {
            version: PROTOCOL_VERSION,
            token: Some(token),
        },
    )
    .await;
    match recv(&mut raw).await {
        ServerMsg::Welcome { me: Some(me), .. } => assert_eq!(me.name, "Ada"),
        other => panic!("expected a welcome for Ada, got {other:?}"),
    }
    let (status, _, _) = post(&server, "/api/logout", serde_json::json!({}), Some(&cookie)).await;
    assert_eq!(status, 204);
    assert_eq!(expect_close(&mut raw).await, Some(1008));
}

#[tokio::test]
async fn logout_closes_every_socket_of_that_session_only() {
    let server = TestServer::start();
    let cookie = server.register("Ada", "analytical engine").await;
    let mut tab1 = server.connect_as(&cookie).await;
    let mut tab2 = server.connect_as(&cookie).await;
    let (_, _, other_session) = post(
        &server,
        "/api/login",
        serde_json::json!({"name": "Ada", "password": "analytical engine"}),
        None,
    )
    .await;
    let mut phone = server.connect_as(&other_session.unwrap()).await;

    post(&server, "/api/logout", serde_json::json!({}), Some(&cookie)).await;
    assert_eq!(expect_close(&mut tab1.socket).await, Some(1008));
    assert_eq!(expect_close(&mut tab2.socket).await, Some(1008));
    // The other session is untouched.
    let general = phone.room("general");
    phone.subscribe(general, None).await;
    phone.say(general, "p1", "still here").await;
    server.wait_for_log("logged out").await;
}

#[tokio::test]
async fn forged_and_expired_tokens_sign_nobody_in() {
    let server = TestServer::start_with(&[("HUDDLE_SESSION_TTL_S", "10")]);
    let (_, body, _) = post(
        &server,
        "/api/register",
        serde_json::json!({"name": "Lin", "password": "longer password"}),
        None,
    )
    .await;
    let token = body["token"].as_str().unwrap().to_owned();

    // Bad signature: the same claims re-signed with another key.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[2] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into();
    let forged = parts.join(".");
    for bad in [forged.as_str(), "not-a-token", ""] {
        let mut socket = server
            .upgrade(&[("Authorization", &format!("Bearer {bad}"))])
            .await
            .unwrap();
        assert_eq!(whoami(&mut socket, None).await, None, "{bad}");
    }
    let mut socket = server.upgrade(&[]).await.unwrap();
    send(
        &mut socket,
        &ClientMsg::Hello {
            version: PROTOCOL_VERSION,
            token: Some(forged),
        },
    )
    .await;
    assert!(matches!(
        recv(&mut socket).await,
        ServerMsg::Error {
            code: ErrorCode::InvalidToken,
            ..
        }
    ));
    server.wait_for_log("auth failure").await;

    // A signed-in socket is closed with 1008 when its token expires (TTL 10 s here).
    let mut live = server
        .upgrade(&[("Authorization", &format!("Bearer {token}"))])
        .await
        .unwrap();
    assert_eq!(whoami(&mut live, None).await.as_deref(), Some("Lin"));
    assert_eq!(expect_close(&mut live).await, Some(1008));
    let mut after = server
        .upgrade(&[("Authorization", &format!("Bearer {token}"))])
        .await
        .unwrap();
    assert_eq!(whoami(&mut after, None).await, None, "expired");
}

#[tokio::test]
async fn without_guests_the_upgrade_needs_credentials() {
    let server = TestServer::start_with(&[("HUDDLE_ALLOW_GUESTS", "false")]);
    assert_eq!(server.upgrade(&[]).await.err(), Some(401));
    let (status, body, _) = post(&server, "/api/guest", serde_json::json!({"name": "Guest"}), None).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("guests_disabled")));
    let cookie = server.register("Member", "member password").await;
    assert_eq!(server.connect_as(&cookie).await.me.name, "Member");
}

#[tokio::test]
async fn log_in_attempts_are_throttled_per_name_and_ip() {
    let server = TestServer::start_with(&[("HUDDLE_LOGIN_ATTEMPTS_PER_MIN", "3")]);
    server.register("Target", "the real password").await;
    for _ in 0..3 {
        let (status, _, _) = post(
            &server,
            "/api/login",
            serde_json::json!({"name": "Target", "password": "guess"}),
            None,
        )
        .await;
        assert_eq!(status, 401);
    }
    let (status, body, _) = post(
        &server,
        "/api/login",
        serde_json::json!({"name": "Target", "password": "the real password"}),
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("rate_limited")),
        "even the right password waits"
    );
    server.wait_for_log("log-in throttled").await;
}

#[tokio::test]
async fn passwords_are_argon2id_and_the_secret_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let server = TestServer::start();
    server.register("Kay", "kay's password").await;
    let argon = server
        .count("SELECT COUNT(*) FROM users WHERE name = 'Kay' AND password_hash LIKE '$argon2id$%'")
        .await;
    assert_eq!(argon, 1);
    let plain = server
        .count("SELECT COUNT(*) FROM users WHERE password_hash LIKE '%kay''s password%'")
        .await;
    assert_eq!(plain, 0);
    if crate::common::services::postgres_selected() {
        return; // nodes sharing PostgreSQL are given their secret; none is generated
    }
    let secret = server.database().with_file_name("jwt_secret");
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", secret.display());
}
