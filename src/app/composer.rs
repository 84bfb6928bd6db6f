//! The composer: an auto-growing textarea (Enter sends, Shift+Enter adds a line), a counter
//! near the limit, the send button, debounced typing signals, and `@` mention completion
//! from the room's people (arrows choose, Enter or Tab inserts, Escape closes).

use super::format;
use super::state::{ChatState, RoomState, UploadState};
use crate::protocol::{rules, ClientMsg, RoomKind, UserRef};
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
    let ready_files = move || {
        room.uploads.with(|u| {
            u.iter()
                .filter(|u| matches!(u.state, UploadState::Ready(_)))
                .count()
        })
    };
    let uploading = move || {
        room.uploads
            .with(|u| u.iter().any(|u| matches!(u.state, UploadState::Sending(_))))
    };
    let can_send = move || {
        state.me.get().is_some()
            && !uploading()
            && rules::message_with_attachments(&text.get(), limit(), ready_files()).is_ok()
    };
    let label = move || {
        room.info.with(|i| match i.kind {
            RoomKind::Direct => format!("Message {}", i.name),
            _ => format!("Message #{}", i.name),
        })
    };

    // Mention completion: the `@` being typed, the people it may mean, the chosen one.
    let mention = RwSignal::new(None::<(usize, String)>);
    let chosen = RwSignal::new(0usize);
    let candidates = move || -> Vec<UserRef> {
        let Some((_, fragment)) = mention.get() else {
            return Vec::new();
        };
        let fragment = fragment.to_lowercase();
        let mut people: Vec<UserRef> = room.online.get();
        room.timeline
            .with(|t| people.extend(t.iter().map(|i| i.author.clone())));
        people.retain(|u| !state.is_me(u.id) && u.name.to_lowercase().starts_with(&fragment));
        people.sort_by_key(|u| (u.name.to_lowercase(), u.id.0));
        people.dedup_by_key(|u| u.id);
        people.truncate(8);
        people
    };
    let caret = move || -> usize {
        textarea.get_untracked().map_or(0, |el| {
            // The browser counts UTF-16 units; the rules count characters.
            let units = el.selection_start().ok().flatten().unwrap_or(0) as usize;
            let value = el.value();
            let mut seen = 0;
            value
                .chars()
                .take_while(|c| {
                    seen += c.len_utf16();
                    seen <= units
                })
                .count()
        })
    };
    let insert = move |person: &UserRef| {
        let Some((at, _)) = mention.get_untracked() else {
            return;
        };
        let (value, caret_at) = format::complete_mention(&text.get_untracked(), at, caret(), &person.name);
        text.set(value.clone());
        mention.set(None);
        if let Some(el) = textarea.get_untracked() {
            el.set_value(&value);
            let units: u32 = value.chars().take(caret_at).map(|c| c.len_utf16() as u32).sum();
            let _ = el.set_selection_range(units, units);
            let _ = el.focus();
        }
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
        if !can_send() {
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
        mention.set(format::mention_query(&value, caret()));
        chosen.set(0);
        text.set(value);
        grow();
    };
    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        let people = candidates();
        if !people.is_empty() {
            let n = people.len();
            match ev.key().as_str() {
                "ArrowDown" => {
                    ev.prevent_default();
                    chosen.update(|i| *i = (*i + 1) % n);
                    return;
                }
                "ArrowUp" => {
                    ev.prevent_default();
                    chosen.update(|i| *i = (*i + n - 1) % n);
                    return;
                }
                "Enter" | "Tab" if !ev.shift_key() => {
                    ev.prevent_default();
                    insert(&people[chosen.get_untracked().min(n - 1)]);
                    return;
                }
                "Escape" => {
                    ev.prevent_default();
                    ev.stop_propagation();
                    mention.set(None);
                    return;
                }
                _ => {}
            }
        }
        if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
            ev.prevent_default();
            submit();
        }
    };
    let option_id = move |i: usize| format!("mention-option-{}-{i}", room.id.0);
    let file_input = NodeRef::<leptos::html::Input>::new();
    // A pasted image (or file) is uploaded like a picked one.
    let on_paste = move |ev: leptos::ev::ClipboardEvent| {
        #[cfg(feature = "hydrate")]
        {
            let files = ev.clipboard_data().and_then(|data| data.files());
            if files.as_ref().is_some_and(|f| f.length() > 0) {
                ev.prevent_default();
                crate::client::upload::start_all(room, files);
            }
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = ev;
    };
    let on_pick = move |_| {
        #[cfg(feature = "hydrate")]
        if let Some(input) = file_input.get_untracked() {
            crate::client::upload::start_all(room, input.files());
            input.set_value("");
        }
    };

    view! {
        <Show when=move || room.uploads.with(|u| !u.is_empty())>
            <ul class="upload-list" aria-label="Files to send">
                <For each=move || room.uploads.get() key=|u| (u.key, format!("{:?}", u.state)) let:upload>
                    <UploadChip room=room upload=upload/>
                </For>
            </ul>
        </Show>
        <form class="composer" on:submit=move |ev| { ev.prevent_default(); submit(); }>
            <input type="file" multiple class="file-input" node_ref=file_input tabindex="-1" aria-hidden="true"
                on:change=on_pick/>
            <button class="icon-button attach-button" type="button" aria-label="Attach files" title="Attach files"
                on:click=move |_| if let Some(input) = file_input.get_untracked() { input.click() }>
                <svg viewBox="0 0 20 20" aria-hidden="true"><path d="M14.5 9.5l-5.3 5.3a3.2 3.2 0 0 1-4.5-4.5l6-6a2.1 2.1 0 0 1 3 3l-6 6a1 1 0 0 1-1.5-1.5l5.3-5.3"/></svg>
            </button>
            <Show when=move || !candidates().is_empty()>
                <ul class="mention-menu" role="listbox" id=move || format!("mention-menu-{}", room.id.0) aria-label="Mention someone">
                    {move || candidates().into_iter().enumerate().map(|(i, person)| {
                        let name = person.name.clone();
                        let selected = move || chosen.get() == i;
                        view! {
                            <li class="mention-option" role="option" id=option_id(i)
                                aria-selected=move || selected().to_string()
                                on:mousedown=move |ev| { ev.prevent_default(); insert(&person); }>
                                <super::Avatar user=person.clone() small=true/>
                                <span>{name}</span>
                            </li>
                        }
                    }).collect_view()}
                </ul>
            </Show>
            <textarea
                node_ref=textarea
                class="composer-input"
                rows="1"
                aria-autocomplete="list"
                aria-controls=move || format!("mention-menu-{}", room.id.0)
                aria-activedescendant=move || (!candidates().is_empty()).then(|| option_id(chosen.get()))
                aria-label=label
                placeholder=label
                prop:value=move || text.get()
                on:input=on_input
                on:keydown=on_keydown
                on:paste=on_paste
                on:blur=move |_| {
                    mention.set(None);
                    if typing_sent_at.get_value() > 0.0 { set_typing(false); typing_sent_at.set_value(0.0); }
                }
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

/// One file in the composer: its name and size, progress while sending, the reason if it
/// failed, and a button to cancel or remove it.
#[component]
fn UploadChip(room: RoomState, upload: super::state::Upload) -> impl IntoView {
    let name = upload.name.clone();
    let key = upload.key;
    let remove = move |_| {
        #[cfg(feature = "hydrate")]
        crate::client::upload::cancel(room, key);
        #[cfg(not(feature = "hydrate"))]
        let _ = (room, key);
    };
    let (label, detail) = match &upload.state {
        UploadState::Sending(_) => (format!("Cancel upload of {name}"), None),
        UploadState::Ready(_) => (format!("Remove {name}"), None),
        UploadState::Failed(reason) => (format!("Remove {name}"), Some(reason.clone())),
    };
    view! {
        <li class="upload-chip" class:failed=detail.is_some()>
            <span class="upload-name">{name.clone()}</span>
            <span class="upload-size">{format::file_size(upload.size as u64)}</span>
            {match upload.state {
                UploadState::Sending(done) => view! {
                    <progress max="100" value=(done * 100.0).round().to_string()
                        aria-label=format!("Uploading {name}")></progress>
                }.into_any(),
                UploadState::Ready(_) => view! { <span class="upload-ready">"Ready"</span> }.into_any(),
                UploadState::Failed(_) => view! { <span class="upload-error" role="alert">{detail.clone()}</span> }.into_any(),
            }}
            <button class="icon-button small" type="button" aria-label=label on:click=remove>"×"</button>
        </li>
    }
}
