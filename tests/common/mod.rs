//! Test harness: starts the real `huddle` binary on 127.0.0.1:0 with a temporary data folder,
//! learns its address from the JSON log, and speaks to it with a real WebSocket client.
#![allow(dead_code)] // each test binary uses a different part of the harness

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
    /// Log lines after the `listening` line, for assertions about shutdown.
    pub log: std_mpsc::Receiver<String>,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(&[])
    }

    pub fn start_with(env: &[(&str, &str)]) -> TestServer {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut command = Command::new(env!("CARGO_BIN_EXE_huddle"));
        command
            .env("HUDDLE_ADDR", "127.0.0.1:0")
            .env("HUDDLE_DATA_DIR", data_dir.path())
            .env("HUDDLE_LOG_FORMAT", "json")
            .env(
                "HUDDLE_CONFIG",
                concat!(env!("CARGO_MANIFEST_DIR"), "/Leptos.toml"),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
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
        TestServer {
            addr,
            child,
            data_dir,
            log: log_rx,
        }
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
