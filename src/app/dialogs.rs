//! Modal dialogs: signing in on the first visit (guest, log in, register), creating a room,
//! and browsing public rooms to join. Each is labelled, traps nothing, and closes with Escape.

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

/// How the welcome dialog signs someone in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SignInMode {
    Guest,
    LogIn,
    Register,
}

/// The first screen for someone not signed in: continue as a guest (when the server allows
/// it), log in, or create an account. After a session ends it opens on "Log in".
#[component]
pub fn WelcomeDialog() -> impl IntoView {
    let state = expect_context::<ChatState>();
    let guests = state.settings.allow_guests;
    let first_mode = if guests && !state.session_ended.get_untracked() {
        SignInMode::Guest
    } else {
        SignInMode::LogIn
    };
    let mode = RwSignal::new(first_mode);
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
    let name = RwSignal::new(if first_mode == SignInMode::Guest {
        suggestion
    } else {
        String::new()
    });
    let password = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let input = NodeRef::<leptos::html::Input>::new();
    autofocus(input);
    let switch = move |to: SignInMode| {
        mode.set(to);
        error.set(None);
        password.set(String::new());
    };
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let chosen = match rules::display_name(&name.get_untracked()) {
            Ok(chosen) => chosen,
            Err(invalid) if mode.get_untracked() != SignInMode::LogIn => {
                return error.set(Some(invalid.message))
            }
            Err(_) => name.get_untracked().trim().to_owned(),
        };
        let secret = password.get_untracked();
        if mode.get_untracked() == SignInMode::Register && secret.chars().count() < 8 {
            return error.set(Some("Passwords need at least 8 characters.".to_owned()));
        }
        busy.set(true);
        error.set(None);
        #[cfg(feature = "hydrate")]
        {
            let call = match mode.get_untracked() {
                SignInMode::Guest => crate::client::Account::Guest { name: chosen },
                SignInMode::LogIn => crate::client::Account::LogIn {
                    name: chosen,
                    password: secret,
                },
                SignInMode::Register => crate::client::Account::Register {
                    name: chosen,
                    password: secret,
                },
            };
            leptos::task::spawn_local(async move {
                match crate::client::sign_in(call).await {
                    Ok(()) => state.command(super::state::Command::Reconnect),
                    Err(message) => error.set(Some(message)),
                }
                busy.set(false);
            });
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = (chosen, secret, state);
    };
    let intro = move || match mode.get() {
        SignInMode::Guest => "Pick a display name. Others see it next to your messages.",
        SignInMode::LogIn if state.session_ended.get() => {
            "Your session has ended. Log in again; unsent messages are kept."
        }
        SignInMode::LogIn => "Log in to your account.",
        SignInMode::Register => "Create an account to keep your name and rooms.",
    };
    let needs_password = move || mode.get() != SignInMode::Guest;
    view! {
        <div class="modal-backdrop">
            <form class="modal" role="dialog" aria-modal="true" aria-labelledby="welcome-title" on:submit=submit>
                <h2 id="welcome-title">"Welcome to Huddle"</h2>
                <p class="modal-text">{intro}</p>
                <label class="field">
                    <span>{move || if mode.get() == SignInMode::Guest { "Display name" } else { "Username" }}</span>
                    <input node_ref=input type="text" maxlength="30"
                        autocomplete=move || if mode.get() == SignInMode::Guest { "nickname" } else { "username" }
                        prop:value=move || name.get() on:input=move |ev| name.set(event_target_value(&ev))/>
                </label>
                <Show when=needs_password>
                    <label class="field">
                        <span>"Password"</span>
                        <input type="password" maxlength="256"
                            autocomplete=move || if mode.get() == SignInMode::Register { "new-password" } else { "current-password" }
                            prop:value=move || password.get() on:input=move |ev| password.set(event_target_value(&ev))/>
                    </label>
                </Show>
                <p class="hint">{move || match mode.get() {
                    SignInMode::Register => "Name: 2–30 letters, digits, spaces and _ - . Password: at least 8 characters.",
                    SignInMode::Guest => "2–30 characters: letters, digits, spaces and _ - .",
                    SignInMode::LogIn => "",
                }}</p>
                <Show when=move || error.get().is_some()>
                    <p class="form-error" role="alert">{move || error.get().unwrap_or_default()}</p>
                </Show>
                <div class="modal-actions">
                    <button class="primary-button" type="submit" disabled=move || busy.get()>
                        {move || match mode.get() {
                            SignInMode::Guest => "Start chatting",
                            SignInMode::LogIn => "Log in",
                            SignInMode::Register => "Create account",
                        }}
                    </button>
                </div>
                <p class="modal-switch">
                    <Show when=move || mode.get() != SignInMode::LogIn>
                        <button class="text-button" type="button" on:click=move |_| switch(SignInMode::LogIn)>"I have an account — log in"</button>
                    </Show>
                    <Show when=move || mode.get() != SignInMode::Register>
                        <button class="text-button" type="button" on:click=move |_| switch(SignInMode::Register)>"Create an account"</button>
                    </Show>
                    <Show when=move || guests && mode.get() != SignInMode::Guest>
                        <button class="text-button" type="button" on:click=move |_| switch(SignInMode::Guest)>"Continue as a guest"</button>
                    </Show>
                </p>
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
    let private = RwSignal::new(false);
    let board_open = RwSignal::new(false);
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
                state.request(ClientMsg::CreateRoom {
                    name,
                    topic,
                    private: private.get_untracked(),
                    board_open: board_open.get_untracked(),
                });
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
                <label class="check-field">
                    <input type="checkbox" prop:checked=move || private.get()
                        on:change=move |ev| private.set(event_target_checked(&ev))/>
                    <span>"Private: hidden from the directory, members join by invitation"</span>
                </label>
                <label class="check-field">
                    <input type="checkbox" prop:checked=move || board_open.get()
                        on:change=move |ev| board_open.set(event_target_checked(&ev))/>
                    <span>"Anyone in the room may clear the whiteboard"</span>
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

/// How often the open directory is read again, so that rooms created meanwhile appear and
/// the member and online counts stay current.
#[cfg(feature = "hydrate")]
const DIRECTORY_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

#[component]
pub fn BrowseRoomsDialog() -> impl IntoView {
    let state = expect_context::<ChatState>();
    let ui = expect_context::<UiState>();
    let rooms = move || state.directory.get().unwrap_or_default();
    // Opening the dialog asked for the directory once; while it stays open, ask again.
    #[cfg(feature = "hydrate")]
    if let Ok(handle) =
        set_interval_with_handle(move || state.request(ClientMsg::ListRooms {}), DIRECTORY_REFRESH)
    {
        on_cleanup(move || handle.clear());
    }
    view! {
        <div class="modal-backdrop" on:click=move |ev| close_on_backdrop(ev, ui)>
            <div class="modal wide" role="dialog" aria-modal="true" aria-labelledby="browse-title">
                <h2 id="browse-title">"Browse rooms"</h2>
                <Show when=move || state.directory.get().is_none()>
                    <p class="modal-text">"Loading…"</p>
                </Show>
                <ul class="directory">
                    <For each=rooms key=|room| (room.id, room.joined, room.members, room.online) let:room>
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
