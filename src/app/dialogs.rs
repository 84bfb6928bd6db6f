//! Modal dialogs: picking a display name on the first visit, creating a room, and browsing
//! public rooms to join. Each is labelled, traps nothing, and closes with Escape.

use super::state::ChatState;
use super::{Dialog, UiState};
use crate::protocol::{rules, ClientMsg};
use leptos::prelude::*;

/// Focuses an input once it is on screen.
fn autofocus(input: NodeRef<leptos::html::Input>) {
    Effect::new(move |_| {
        if let Some(el) = input.get() {
            let _ = el.focus();
        }
    });
}

#[component]
pub fn NamePicker() -> impl IntoView {
    let state = expect_context::<ChatState>();
    let suggestion = {
        #[cfg(feature = "hydrate")]
        {
            let r = || (js_sys::Math::random() * 1000.0) as u32;
            rules::suggested_name(r(), r(), r())
        }
        #[cfg(not(feature = "hydrate"))]
        {
            rules::suggested_name(0, 0, 7)
        }
    };
    let name = RwSignal::new(suggestion);
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let input = NodeRef::<leptos::html::Input>::new();
    autofocus(input);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let chosen = match rules::display_name(&name.get_untracked()) {
            Ok(chosen) => chosen,
            Err(invalid) => return error.set(Some(invalid.message)),
        };
        busy.set(true);
        error.set(None);
        #[cfg(feature = "hydrate")]
        leptos::task::spawn_local(async move {
            match crate::client::sign_in(&chosen).await {
                Ok(()) => state.command(super::state::Command::Reconnect),
                Err(message) => error.set(Some(message)),
            }
            busy.set(false);
        });
        #[cfg(not(feature = "hydrate"))]
        let _ = (chosen, state);
    };
    view! {
        <div class="modal-backdrop">
            <form class="modal" role="dialog" aria-modal="true" aria-labelledby="name-title" on:submit=submit>
                <h2 id="name-title">"Welcome to Huddle"</h2>
                <p class="modal-text">"Pick a display name. Others see it next to your messages."</p>
                <label class="field">
                    <span>"Display name"</span>
                    <input node_ref=input type="text" maxlength="30" autocomplete="nickname"
                        prop:value=move || name.get() on:input=move |ev| name.set(event_target_value(&ev))/>
                </label>
                <p class="hint">"2–30 characters: letters, digits, spaces and _ - ."</p>
                <Show when=move || error.get().is_some()>
                    <p class="form-error" role="alert">{move || error.get().unwrap_or_default()}</p>
                </Show>
                <div class="modal-actions">
                    <button class="primary-button" type="submit" disabled=move || busy.get()>"Start chatting"</button>
                </div>
            </form>
        </div>
    }
}

#[component]
pub fn CreateRoomDialog() -> impl IntoView {
    let state = expect_context::<ChatState>();
    let ui = expect_context::<UiState>();
    let name = RwSignal::new(String::new());
    let topic = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let input = NodeRef::<leptos::html::Input>::new();
    autofocus(input);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let checked = rules::room_name(&name.get_untracked())
            .and_then(|n| Ok((n, rules::room_topic(&topic.get_untracked())?)));
        match checked {
            Ok((name, topic)) => {
                state.open_next_joined.set_value(true);
                state.request(ClientMsg::CreateRoom { name, topic });
                ui.dialog.set(None);
            }
            Err(invalid) => error.set(Some(invalid.message)),
        }
    };
    view! {
        <div class="modal-backdrop" on:click=move |ev| close_on_backdrop(ev, ui)>
            <form class="modal" role="dialog" aria-modal="true" aria-labelledby="create-title" on:submit=submit>
                <h2 id="create-title">"Create a room"</h2>
                <label class="field">
                    <span>"Room name"</span>
                    <input node_ref=input type="text" maxlength="40" placeholder="e.g. rust-help"
                        prop:value=move || name.get() on:input=move |ev| name.set(event_target_value(&ev))/>
                </label>
                <label class="field">
                    <span>"Topic (optional)"</span>
                    <input type="text" maxlength="200" prop:value=move || topic.get()
                        on:input=move |ev| topic.set(event_target_value(&ev))/>
                </label>
                <Show when=move || error.get().is_some()>
                    <p class="form-error" role="alert">{move || error.get().unwrap_or_default()}</p>
                </Show>
                <div class="modal-actions">
                    <button class="text-button" type="button" on:click=move |_| ui.dialog.set(None)>"Cancel"</button>
                    <button class="primary-button" type="submit">"Create room"</button>
                </div>
            </form>
        </div>
    }
}

#[component]
pub fn BrowseRoomsDialog() -> impl IntoView {
    let state = expect_context::<ChatState>();
    let ui = expect_context::<UiState>();
    let rooms = move || state.directory.get().unwrap_or_default();
    view! {
        <div class="modal-backdrop" on:click=move |ev| close_on_backdrop(ev, ui)>
            <div class="modal wide" role="dialog" aria-modal="true" aria-labelledby="browse-title">
                <h2 id="browse-title">"Browse rooms"</h2>
                <Show when=move || state.directory.get().is_none()>
                    <p class="modal-text">"Loading…"</p>
                </Show>
                <ul class="directory">
                    <For each=rooms key=|room| (room.id, room.joined, room.members) let:room>
                        {
                            let id = room.id;
                            let name = room.name.clone();
                            view! {
                                <li class="directory-room">
                                    <div>
                                        <div class="directory-name">{format!("# {}", room.name)}</div>
                                        <div class="directory-meta">
                                            {format!("{} · {} online", super::format::count(room.members, "member", "members"), room.online)}
                                            {(!room.topic.is_empty()).then(|| format!(" · {}", room.topic))}
                                        </div>
                                    </div>
                                    {if room.joined {
                                        view! {
                                            <button class="text-button" on:click=move |_| { state.open_room(id); ui.dialog.set(None); }>"Open"</button>
                                        }.into_any()
                                    } else {
                                        view! {
                                            <button class="primary-button small" aria-label=format!("Join {name}")
                                                on:click=move |_| {
                                                    state.open_next_joined.set_value(true);
                                                    state.request(ClientMsg::Join { room: id });
                                                    ui.dialog.set(None);
                                                }>"Join"</button>
                                        }.into_any()
                                    }}
                                </li>
                            }
                        }
                    </For>
                </ul>
                <div class="modal-actions">
                    <button class="text-button" type="button" on:click=move |_| ui.dialog.set(Some(Dialog::CreateRoom))>"Create a new room"</button>
                    <button class="text-button" type="button" on:click=move |_| ui.dialog.set(None)>"Close"</button>
                </div>
            </div>
        </div>
    }
}

/// Clicking outside the dialog closes it.
fn close_on_backdrop(ev: leptos::ev::MouseEvent, ui: UiState) {
    use leptos::wasm_bindgen::JsCast;
    let on_backdrop = ev
        .target()
        .and_then(|t| t.dyn_into::<leptos::web_sys::Element>().ok())
        .is_some_and(|el| el.class_list().contains("modal-backdrop"));
    if on_backdrop {
        ui.dialog.set(None);
    }
}
