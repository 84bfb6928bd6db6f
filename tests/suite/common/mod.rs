//! Test harness: starts the real `huddle` binary on 127.0.0.1:0 with a temporary data folder,
//! learns its address from the JSON log, and speaks to it with a real WebSocket client.

pub mod services;

use futures::{SinkExt, StreamExt};
use huddle::protocol::{ClientMsg, ServerMsg, PROTOCOL_VERSION};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Upper bound for any single wait in tests; a hang becomes a failure, not a stuck CI.
pub const WAIT: Duration = Duration::from_secs(20);

pub struct TestServer {
    pub addr: SocketAddr,
    pub child: Child,
    pub data_dir: tempfile::TempDir,
    /// The database it uses: SQLite in `data_dir`, or a PostgreSQL database of its own.
    pub database_url: String,
    /// Log lines after the `listening` line, for assertions about shutdown.
    pub log: std_mpsc::Receiver<String>,
}

/// The session-signing secret of test servers on PostgreSQL.
pub const CLUSTER_JWT_SECRET: &str = "test-cluster-secret-0123456789abcdef";

/// Abuse limits high enough that ordinary tests never meet them.
pub const LOOSE_LIMITS: &[(&str, &str)] = &[
    ("HUDDLE_MSG_RATE_PER_S", "10000"),
    ("HUDDLE_MSG_BURST", "10000"),
    ("HUDDLE_REQUEST_RATE_PER_S", "10000"),
    ("HUDDLE_REQUEST_BURST", "100000"),
    ("HUDDLE_IP_CONNECTS_PER_10S", "1000000"),
    ("HUDDLE_IP_MAX_OPEN", "1000000"),
];

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(&[])
    }

    pub fn start_with(env: &[(&str, &str)]) -> TestServer {
        let database_url = if services::postgres_selected() {
            services::Postgres::shared().new_database()
        } else {
            String::new()
        };
        Self::start_on(&database_url, env)
    }

    /// A server on the database at `database_url` (empty: SQLite in its own data folder).
    pub fn start_on(database_url: &str, env: &[(&str, &str)]) -> TestServer {
        Self::start_customized(database_url, env, |_| {})
    }

    /// As `start_on`, with a last say over the process's `Command` (limits, for one).
    pub fn start_customized(
        database_url: &str,
        env: &[(&str, &str)],
        customize: impl FnOnce(&mut Command),
    ) -> TestServer {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let database_url = if database_url.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                data_dir.path().join("huddle.db").display()
            )
        } else {
            database_url.to_owned()
        };
        let (child, addr, log) = Self::spawn(data_dir.path(), &database_url, env, customize);
        TestServer {
            addr,
            child,
            data_dir,
            database_url,
            log,
        }
    }

    /// Kills the process at once (SIGKILL: no shutdown code runs) and starts a new one on
    /// the same data folder; the address changes.
    pub fn crash_and_restart(&mut self, env: &[(&str, &str)]) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
        let (child, addr, log) = Self::spawn(self.data_dir.path(), &self.database_url, env, |_| {});
        (self.child, self.addr, self.log) = (child, addr, log);
    }

    /// Path of the SQLite database, for checking what was stored.
    pub fn database(&self) -> std::path::PathBuf {
        self.data_dir.path().join("huddle.db")
    }

    /// Runs a `SELECT COUNT(*) ...` on the server's database and returns the count.
    pub async fn count(&self, query: &str) -> i64 {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&self.database_url)
            .await
            .expect("open the database");
        sqlx::query_scalar(query)
            .fetch_one(&mut conn)
            .await
            .expect("count query")
    }

    /// A WebSocket upgrade with these extra headers; Err is the HTTP status of a refusal.
    pub async fn upgrade(&self, headers: &[(&str, &str)]) -> Result<Socket, u16> {
        use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderName, Error};
        let mut request = format!("ws://{}/ws", self.addr).into_client_request().unwrap();
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            request.headers_mut().insert(name, value.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => Ok(socket),
            Err(Error::Http(response)) => Err(response.status().as_u16()),
            Err(other) => panic!("handshake failed unexpectedly: {other}"),
        }
    }

    /// Waits until the server logs a line containing `needle` (consuming earlier lines).
    pub async fn wait_for_log(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(_) => panic!("the server never logged {needle:?}"),
            }
        }
    }

    /// Process id, for reading its memory use.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn spawn(
        data_dir: &std::path::Path,
        database_url: &str,
        env: &[(&str, &str)],
        customize: impl FnOnce(&mut Command),
    ) -> (Child, SocketAddr, std_mpsc::Receiver<String>) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_huddle"));
        command
            .env("HUDDLE_ADDR", "127.0.0.1:0")
            .env("HUDDLE_DATA_DIR", data_dir)
            .env("HUDDLE_DATABASE_URL", database_url)
            .env("HUDDLE_LOG_FORMAT", "json")
            .env(
                "HUDDLE_CONFIG",
                concat!(env!("CARGO_MANIFEST_DIR"), "/Leptos.toml"),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // Tests drive hundreds of clients and fast bursts from one address; the abuse tests
        // set the limits they check explicitly (`env` is applied after these).
        for (key, value) in LOOSE_LIMITS {
            command.env(key, value);
        }
        if database_url.starts_with("postgres") {
            // Nodes sharing a database share the secret that signs sessions.
            command.env("HUDDLE_JWT_SECRET", CLUSTER_JWT_SECRET);
        }
        for (key, value) in env {
            command.env(key, value);
        }
        customize(&mut command);
        let mut child = command.spawn().expect("start huddle binary");
        let stdout = child.stdout.take().expect("stdout piped");
        let (addr_tx, addr_rx) = std_mpsc::channel();
        let (log_tx, log_rx) = std_mpsc::channel();
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) {
                    if value["message"] == "listening" {
                        let addr: SocketAddr = value["addr"].as_str().unwrap().parse().unwrap();
                        let _ = addr_tx.send(addr);
                        continue;
                    }
                }
                let _ = log_tx.send(line);
            }
        });
        let addr = addr_rx.recv_timeout(WAIT).expect("server logged its address");
        (child, addr, log_rx)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Opens a WebSocket to `/ws` without saying hello.
    pub async fn connect_raw(&self) -> Socket {
        let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", self.addr))
            .await
            .expect("websocket connects");
        socket
    }

    /// Opens a WebSocket and completes the hello/welcome handshake.
    pub async fn connect(&self) -> (Socket, ServerMsg) {
        let mut socket = self.connect_raw().await;
        send(
            &mut socket,
            &ClientMsg::Hello {
                version: PROTOCOL_VERSION,
                token: None,
            },
        )
        .await;
        let welcome = recv(&mut socket).await;
        assert!(
            matches!(welcome, ServerMsg::Welcome { .. }),
            "expected welcome, got {welcome:?}"
        );
        (socket, welcome)
    }

    pub fn terminate(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("send SIGTERM");
    }

    /// Waits for the process to exit, failing the test if it does not within [`WAIT`].
    pub fn wait_exit(&mut self) -> ExitStatus {
        use wait_timeout::ChildExt;
        self.child
            .wait_timeout(WAIT)
            .expect("wait for exit")
            .expect("server exits in time")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn send(socket: &mut Socket, msg: &ClientMsg) {
    socket
        .send(Message::text(msg.encode()))
        .await
        .expect("send frame");
}

pub async fn send_text(socket: &mut Socket, text: &str) {
    socket
        .send(Message::text(text.to_owned()))
        .await
        .expect("send frame");
}

/// Next server message, skipping transport frames; fails after [`WAIT`].
pub async fn recv(socket: &mut Socket) -> ServerMsg {
    loop {
        let frame = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a frame arrives in time")
            .expect("socket still open")
            .expect("frame reads");
        match frame {
            Message::Text(text) => return ServerMsg::decode(text.as_str()).expect("server frame decodes"),
            Message::Close(close) => panic!("connection closed unexpectedly: {close:?}"),
            _ => continue,
        }
    }
}

/// Reads until the server closes; returns the close code.
pub async fn expect_close(socket: &mut Socket) -> Option<u16> {
    loop {
        let frame = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("close arrives in time");
        match frame {
            Some(Ok(Message::Close(close))) => return close.map(|c| u16::from(c.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

/// A signed-in test user on one connection.
pub struct Client {
    pub socket: Socket,
    pub me: huddle::protocol::UserRef,
    pub cookie: String,
    /// Rooms listed in `welcome`.
    pub rooms: Vec<huddle::protocol::RoomInfo>,
}

impl TestServer {
    /// Creates a guest user; returns the `Cookie` header value that signs in as them.
    pub async fn guest(&self, name: &str) -> String {
        self.sign_up("/api/guest", serde_json::json!({ "name": name }))
            .await
    }

    /// Registers an account; returns the `Cookie` header value that signs in as it.
    pub async fn register(&self, name: &str, password: &str) -> String {
        self.sign_up(
            "/api/register",
            serde_json::json!({ "name": name, "password": password }),
        )
        .await
    }

    async fn sign_up(&self, path: &str, body: serde_json::Value) -> String {
        let response = reqwest::Client::new()
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("sign-up request");
        assert_eq!(
            response.status(),
            201,
            "{path} {body}: {:?}",
            response.text().await
        );
        let cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(cookie.contains("HttpOnly"), "{cookie}");
        cookie.split(';').next().unwrap().to_owned()
    }

    /// A new guest, connected and greeted.
    pub async fn client(&self, name: &str) -> Client {
        let cookie = self.guest(name).await;
        self.connect_as(&cookie).await
    }

    /// Another connection (a second tab) for the user behind `cookie`.
    pub async fn connect_as(&self, cookie: &str) -> Client {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{}/ws", self.addr).into_client_request().unwrap();
        request.headers_mut().insert("Cookie", cookie.parse().unwrap());
        let (mut socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket connects");
        send(
            &mut socket,
            &ClientMsg::Hello {
                version: PROTOCOL_VERSION,
                token: None,
            },
        )
        .await;
        match recv(&mut socket).await {
            ServerMsg::Welcome {
                me: Some(me), rooms, ..
            } => Client {
                socket,
                me,
                cookie: cookie.to_owned(),
                rooms,
            },
            other => panic!("expected welcome with a user, got {other:?}"),
        }
    }
}

impl Client {
    pub async fn send(&mut self, msg: ClientMsg) {
        send(&mut self.socket, &msg).await;
    }

    /// The next server message `pick` accepts, skipping the rest (presence, typing, ...).
    pub async fn next<T>(&mut self, mut pick: impl FnMut(ServerMsg) -> Option<T>) -> T {
        loop {
            if let Some(found) = pick(recv(&mut self.socket).await) {
                return found;
            }
        }
    }

    /// The id of a room in `welcome` by name.
    pub fn room(&self, name: &str) -> huddle::protocol::RoomId {
        self.rooms
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no room {name}"))
            .id
    }

    /// Subscribes and collects the whole replay: (messages, gap).
    pub async fn subscribe(
        &mut self,
        room: huddle::protocol::RoomId,
        after_seq: Option<huddle::protocol::Seq>,
    ) -> (Vec<huddle::protocol::ChatMessage>, bool) {
        self.send(ClientMsg::Subscribe { room, after_seq }).await;
        let mut all = Vec::new();
        loop {
            let (messages, gap, more) = self
                .next(|m| match m {
                    ServerMsg::Backlog {
                        room: r,
                        messages,
                        gap,
                        more,
                    } if r == room => Some((messages, gap, more)),
                    ServerMsg::Error { code, message, .. } => panic!("subscribe refused: {code} {message}"),
                    _ => None,
                })
                .await;
            all.extend(messages);
            if !more {
                return (all, gap);
            }
        }
    }

    /// Sends a text and waits for its ack; returns the assigned seq.
    pub async fn say(
        &mut self,
        room: huddle::protocol::RoomId,
        id: &str,
        text: &str,
    ) -> huddle::protocol::Seq {
        self.send(ClientMsg::Send {
            room,
            client_msg_id: huddle::protocol::ClientMsgId(id.to_owned()),
            text: text.to_owned(),
            attachments: Vec::new(),
        })
        .await;
        self.next(|m| match m {
            ServerMsg::Ack {
                client_msg_id, seq, ..
            } if client_msg_id.0 == id => Some(seq),
            ServerMsg::Error {
                code,
                message,
                client_msg_id: Some(c),
                ..
            } if c.0 == id => {
                panic!("send {id} refused: {code} {message}")
            }
            _ => None,
        })
        .await
    }

    /// Creates a public room and waits until it is joined; returns its id.
    pub async fn create_room(&mut self, name: &str) -> huddle::protocol::RoomId {
        self.create_room_with(name, false).await
    }

    /// Creates an invite-only room and waits until it is joined; returns its id.
    pub async fn create_private_room(&mut self, name: &str) -> huddle::protocol::RoomId {
        self.create_room_with(name, true).await
    }

    async fn create_room_with(&mut self, name: &str, private: bool) -> huddle::protocol::RoomId {
        self.send(ClientMsg::CreateRoom {
            name: name.into(),
            topic: String::new(),
            private,
            board_open: false,
        })
        .await;
        self.next(|m| match m {
            ServerMsg::Joined { room } if room.name == name => Some(room.id),
            ServerMsg::Error { code, message, .. } => panic!("create {name} refused: {code} {message}"),
            _ => None,
        })
        .await
    }

    /// Joins a public room and waits for `joined`.
    pub async fn join(&mut self, room: huddle::protocol::RoomId) {
        self.send(ClientMsg::Join { room }).await;
        self.next(|m| matches!(m, ServerMsg::Joined { room: r } if r.id == room).then_some(()))
            .await;
    }

    /// The error code answering `msg`; fails if it is answered with an ack, history or backlog.
    pub async fn refusal(&mut self, msg: ClientMsg) -> huddle::protocol::ErrorCode {
        self.send(msg).await;
        self.next(|m| match m {
            ServerMsg::Error { code, .. } => Some(code),
            ServerMsg::Ack { .. } | ServerMsg::History { .. } | ServerMsg::Backlog { .. } => {
                panic!("expected a refusal, got {m:?}")
            }
            _ => None,
        })
        .await
    }

    /// The next live timeline message in any room.
    pub async fn next_message(&mut self) -> huddle::protocol::ChatMessage {
        self.next(|m| match m {
            ServerMsg::Message { message } => Some(message),
            _ => None,
        })
        .await
    }
}
