//! The connection-status indicator: a dot plus words, announced politely to screen readers.

use super::state::ChatState;
use leptos::prelude::*;

/// What the browser knows about its connection to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnStatus {
    /// First attempt in progress (also what the server renders).
    Connecting,
    /// The server answered `hello` with `welcome`.
    Connected,
    /// The socket dropped; a retry is scheduled.
    Disconnected,
}

impl ConnStatus {
    pub fn label(self) -> &'static str {
        match self {
            ConnStatus::Connecting => "Connecting…",
            ConnStatus::Connected => "Connected",
            ConnStatus::Disconnected => "Disconnected",
        }
    }

    fn key(self) -> &'static str {
        match self {
            ConnStatus::Connecting => "connecting",
            ConnStatus::Connected => "connected",
            ConnStatus::Disconnected => "disconnected",
        }
    }
}

#[component]
pub fn ConnectionStatus() -> impl IntoView {
    let status = expect_context::<ChatState>().status;
    view! {
        <div class="conn-status" role="status" aria-live="polite" data-state=move || status.get().key()>
            <span class="conn-dot" aria-hidden="true"></span>
            <span class="conn-label">{move || status.get().label()}</span>
        </div>
    }
}
