//! The connection-status indicator: a dot plus words, announced politely to screen readers.

use super::state::{ChatState, Command};
use leptos::prelude::*;

/// What the browser knows about its connection to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnStatus {
    /// First attempt in progress (also what the server renders).
    Connecting,
    /// The server answered `hello` with `welcome`.
    Connected,
    /// The socket dropped; the next attempt is due at `retry_at` (browser clock, ms).
    Reconnecting { retry_at: i64 },
    /// The browser reports no network; retrying as soon as it comes back.
    Offline,
    /// The configured number of attempts failed; waiting for "retry now" or the network.
    GaveUp,
}

impl ConnStatus {
    fn key(self) -> &'static str {
        match self {
            ConnStatus::Connecting => "connecting",
            ConnStatus::Connected => "connected",
            ConnStatus::Reconnecting { .. } => "disconnected",
            ConnStatus::Offline | ConnStatus::GaveUp => "offline",
        }
    }

    /// Words for the indicator; `now` drives the countdown.
    pub fn label(self, now: i64) -> String {
        match self {
            ConnStatus::Connecting => "Connecting…".to_owned(),
            ConnStatus::Connected => "Connected".to_owned(),
            ConnStatus::Reconnecting { retry_at } => {
                let seconds = ((retry_at - now).max(0) + 999) / 1000;
                if seconds == 0 {
                    "Disconnected — reconnecting…".to_owned()
                } else {
                    format!("Disconnected — reconnecting in {seconds} s")
                }
            }
            ConnStatus::Offline => "Offline — messages will be sent when you reconnect".to_owned(),
            ConnStatus::GaveUp => "Offline — can't reach the server".to_owned(),
        }
    }
}

#[component]
pub fn ConnectionStatus() -> impl IntoView {
    let state = expect_context::<ChatState>();
    let status = state.status;
    let can_retry = move || {
        matches!(
            status.get(),
            ConnStatus::Reconnecting { .. } | ConnStatus::Offline | ConnStatus::GaveUp
        )
    };
    view! {
        <div class="conn-status" data-state=move || status.get().key()>
            <span class="conn-dot" aria-hidden="true"></span>
            <span class="conn-label" role="status" aria-live="polite">{move || status.get().label(state.clock.get())}</span>
            <Show when=can_retry>
                <button class="text-button" on:click=move |_| state.command(Command::RetryNow)>"Retry now"</button>
            </Show>
        </div>
    }
}
