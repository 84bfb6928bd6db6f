//! The composer: an auto-growing textarea (Enter sends, Shift+Enter adds a line), a counter
//! near the limit, the send button, and debounced typing signals.

use super::state::{ChatState, RoomState};
use crate::protocol::{rules, ClientMsg, RoomKind};
use leptos::prelude::*;

/// While typing, the "typing" mark is refreshed at most this often (the server drops it
/// after 5 s without a refresh).
const TYPING_REFRESH_MS: f64 = 3000.0;
/// Default limit until the server's `welcome` says otherwise.
const FALLBACK_LIMIT: u32 = 2000;

#[component]
pub fn Composer(room: RoomState) -> impl IntoView {
    let state = expect_context::<ChatState>();
    let text = RwSignal::new(String::new());
    let typing_sent_at = StoredValue::new(0f64);
    let textarea = NodeRef::<leptos::html::Textarea>::new();
    let limit = move || {
        state
            .limits
            .with(|l| l.as_ref().map_or(FALLBACK_LIMIT, |l| l.max_message_chars))
    };
    let chars = move || text.with(|t| t.trim().chars().count()) as u32;
    let can_send = move || rules::message_text(&text.get(), limit()).is_ok() && state.me.get().is_some();
    let label = move || {
        room.info.with(|i| match i.kind {
            RoomKind::Direct => format!("Message {}", i.name),
            _ => format!("Message #{}", i.name),
        })
    };

    let set_typing = move |active: bool| {
        state.request(ClientMsg::Typing {
            room: room.id,
            active,
        })
    };
    let grow = move || {
        if let Some(el) = textarea.get_untracked() {
            let _ = el.style(("height", "auto"));
            let _ = el.style(("height", format!("{}px", el.scroll_height())));
        }
    };
    let submit = move || {
        let current = text.get_untracked();
        if rules::message_text(&current, limit()).is_err() {
            return;
        }
        state.send_text(room.id, current.trim().to_owned());
        text.set(String::new());
        typing_sent_at.set_value(0.0);
        request_animation_frame(grow);
    };
    let on_input = move |ev: leptos::ev::Event| {
        let value = event_target_value(&ev);
        let now = super::state::now_ms() as f64;
        if value.trim().is_empty() {
            if typing_sent_at.get_value() > 0.0 {
                set_typing(false);
                typing_sent_at.set_value(0.0);
            }
        } else if now - typing_sent_at.get_value() > TYPING_REFRESH_MS {
            set_typing(true);
            typing_sent_at.set_value(now);
        }
        text.set(value);
        grow();
    };
    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
            ev.prevent_default();
            submit();
        }
    };

    view! {
        <form class="composer" on:submit=move |ev| { ev.prevent_default(); submit(); }>
            <textarea
                node_ref=textarea
                class="composer-input"
                rows="1"
                aria-label=label
                placeholder=label
                prop:value=move || text.get()
                on:input=on_input
                on:keydown=on_keydown
                on:blur=move |_| { if typing_sent_at.get_value() > 0.0 { set_typing(false); typing_sent_at.set_value(0.0); } }
            ></textarea>
            <Show when={move || chars() * 10 >= limit() * 9}>
                <span class="counter" class:over={move || chars() > limit()} aria-live="polite">
                    {move || format!("{} left", limit() as i64 - chars() as i64)}
                </span>
            </Show>
            <button class="send-button" type="submit" aria-label="Send" disabled=move || !can_send()>
                <svg viewBox="0 0 20 20" aria-hidden="true"><path d="M3 10l14-6-6 14-2-6z"/></svg>
            </button>
        </form>
    }
}
