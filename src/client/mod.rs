//! Browser side of the connection (hydrate build only): opens the WebSocket, says hello,
//! tracks the status signal and reconnects with jittered exponential backoff.

use crate::app::ConnStatus;
use crate::protocol::{ClientMsg, ServerMsg, PROTOCOL_VERSION};
use futures::{SinkExt, StreamExt};
use gloo_net::websocket::{futures::WebSocket, Message};
use leptos::prelude::*;
use leptos::task::spawn_local;

/// First retry waits about this long (before jitter).
const BACKOFF_BASE_MS: f64 = 500.0;
/// No retry waits longer than this.
const BACKOFF_CAP_MS: f64 = 10_000.0;

/// Starts the connection loop; runs for the life of the page.
pub fn start(status: RwSignal<ConnStatus>) {
    spawn_local(async move {
        let mut failures: u32 = 0;
        loop {
            if connect_once(status).await {
                failures = 0;
            }
            status.set(ConnStatus::Disconnected);
            failures = failures.saturating_add(1);
            gloo_timers::future::TimeoutFuture::new(backoff_ms(failures)).await;
        }
    });
}

/// Full jitter: a uniform wait between 0 and the capped exponential bound.
fn backoff_ms(failures: u32) -> u32 {
    let bound = (BACKOFF_BASE_MS * 2f64.powi(failures.min(16) as i32 - 1)).min(BACKOFF_CAP_MS);
    (js_sys::Math::random() * bound) as u32
}

/// `ws://host/ws` or `wss://host/ws`, matching how the page was loaded.
fn socket_url() -> String {
    let location = window().location();
    let scheme = if location.protocol().ok().as_deref() == Some("https:") {
        "wss"
    } else {
        "ws"
    };
    let host = location.host().unwrap_or_default();
    format!("{scheme}://{host}/ws")
}

/// One connection's life; returns whether it got as far as `welcome`.
async fn connect_once(status: RwSignal<ConnStatus>) -> bool {
    let Ok(socket) = WebSocket::open(&socket_url()) else {
        return false;
    };
    let (mut sink, mut stream) = socket.split();
    let hello = ClientMsg::Hello {
        version: PROTOCOL_VERSION,
    }
    .encode();
    if sink.send(Message::Text(hello)).await.is_err() {
        return false;
    }
    let mut welcomed = false;
    while let Some(Ok(frame)) = stream.next().await {
        let Message::Text(text) = frame else { continue };
        match ServerMsg::decode(&text) {
            Ok(ServerMsg::Welcome { .. }) => {
                welcomed = true;
                status.set(ConnStatus::Connected);
            }
            Ok(ServerMsg::Error { code, message }) => {
                leptos::logging::warn!("server error {code}: {message}");
            }
            Err(e) => leptos::logging::warn!("unreadable frame from server: {}", e.0),
        }
    }
    welcomed
}
