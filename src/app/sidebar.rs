//! The sidebar (app name, online count, rooms and direct messages with unread badges, create
//! and browse) and the members panel (who is online in the current room, start a DM).

use super::format::badge_count;
use super::state::{ChatState, RoomState};
use super::{Avatar, Dialog, UiState};
use crate::protocol::{ClientMsg, RoomKind, UserId, UserRef};
use leptos::prelude::*;

#[component]
pub fn Sidebar() -> impl IntoView {
    let state = expect_context::<ChatState>();
    let ui = expect_context::<UiState>();
    let rooms_of = move |direct: bool| {
        state.rooms.with(|rooms| {
            rooms
                .iter()
                .filter(|r| r.info.with(|i| (i.kind == RoomKind::Direct) == direct))
                .copied()
                .collect::<Vec<RoomState>>()
        })
    };
    let open_dialog = move |dialog: Dialog| {
        ui.drawer_open.set(false);
        ui.dialog.set(Some(dialog));
        if dialog == Dialog::BrowseRooms {
            state.directory.set(None);
            state.request(ClientMsg::ListRooms {});
        }
    };
    let mentions_total = move || {
        state
            .rooms
            .with(|rooms| rooms.iter().map(|r| r.mentions.get()).sum::<u32>())
    };
    view! {
        <aside class="sidebar" id="sidebar">
            <div class="brand">
                <span class="brand-mark" aria-hidden="true">"H"</span>
                <span class="brand-name">"Huddle"</span>
                <span class="online-count" title="People online">
                    <span class="online-dot" aria-hidden="true"></span>
                    {move || format!("{} online", state.online_count.get())}
                </span>
            </div>
            <nav aria-label="Rooms and direct messages" class="sidebar-nav">
                <button class="room-link mentions-link" type="button"
                    class:has-unread={move || mentions_total() > 0}
                    on:click=move |_| {
                        state.show_mentions();
                        ui.drawer_open.set(false);
                    }>
                    <span class="at-sign" aria-hidden="true">"@"</span>
                    <span class="room-name">"Mentions"</span>
                    <Show when=move || { mentions_total() > 0 }>
                        <span class="badge mention-badge" aria-label=move || format!("{} unread mentions", mentions_total())>
                            {move || badge_count(mentions_total())}
                        </span>
                    </Show>
                </button>
                <div class="section-head">
                    <h2 class="section-title">"Rooms"</h2>
                    <div class="section-actions">
                        <button class="icon-button" aria-label="Browse rooms" title="Browse rooms"
                            on:click=move |_| open_dialog(Dialog::BrowseRooms)>
                            <svg viewBox="0 0 20 20" aria-hidden="true"><circle cx="8.5" cy="8.5" r="5.5"/><path d="M13 13l4.5 4.5"/></svg>
                        </button>
                        <button class="icon-button" aria-label="Create room" title="Create room"
                            on:click=move |_| open_dialog(Dialog::CreateRoom)>
                            <svg viewBox="0 0 20 20" aria-hidden="true"><path d="M10 4v12M4 10h12"/></svg>
                        </button>
                    </div>
                </div>
                <ul class="room-list">
                    <For each=move || rooms_of(false) key=|room| room.id let:room>
                        <RoomLink room=room/>
                    </For>
                </ul>
                <div class="section-head">
                    <h2 class="section-title">"Direct messages"</h2>
                </div>
                <ul class="room-list">
                    <For each=move || rooms_of(true) key=|room| room.id let:room>
                        <RoomLink room=room/>
                    </For>
                </ul>
                <Show when=move || rooms_of(true).is_empty() && state.me.get().is_some()>
                    <p class="sidebar-hint">"Pick someone in the members list to message them."</p>
                </Show>
            </nav>
            <Show when=move || state.notifications.get() == "default" && state.me.get().is_some()>
                <button class="notify-button" type="button" on:click=move |_| enable_notifications(state)>
                    <svg viewBox="0 0 20 20" aria-hidden="true"><path d="M5 14V9a5 5 0 0 1 10 0v5l1.5 1.5h-13zM8 17.5h4"/></svg>
                    "Enable notifications"
                </button>
            </Show>
            <div class="me">
                {move || state.me.get().map(|me| view! {
                    <Avatar user=me.clone() small=true/>
                    <span class="me-name">{me.name.clone()}</span>
                    <button class="text-button sidebar-button" type="button" on:click=move |_| log_out(state)>"Log out"</button>
                })}

            </div>
        </aside>
    }
}

/// Asks the browser for permission to notify (only ever from this click).
fn enable_notifications(state: ChatState) {
    #[cfg(feature = "hydrate")]
    crate::client::notify::request(move |answer| state.notifications.set(answer));
    #[cfg(not(feature = "hydrate"))]
    let _ = state;
}

fn log_out(state: ChatState) {
    #[cfg(feature = "hydrate")]
    leptos::task::spawn_local(async move {
        if let Err(message) = crate::client::log_out(state).await {
            state.notice.set(Some(message));
        }
    });
    #[cfg(not(feature = "hydrate"))]
    let _ = state;
}

#[component]
fn RoomLink(room: RoomState) -> impl IntoView {
    let state = expect_context::<ChatState>();
    let ui = expect_context::<UiState>();
    let is_current = move || state.current.get() == Some(room.id);
    let label = move || {
        room.info.with(|i| match i.kind {
            RoomKind::Direct | RoomKind::Private => i.name.clone(),
            RoomKind::Public => format!("# {}", i.name),
        })
    };
    let private = move || room.info.with(|i| i.kind == RoomKind::Private);
    let peer = move || room.info.with(|i| i.peer.clone());
    view! {
        <li>
            <button
                class="room-link"
                class:active=is_current
                class:has-unread={move || room.unread.get() > 0}
                aria-current=move || is_current().then_some("page")
                on:click=move |_| {
                    state.open_room(room.id);
                    ui.drawer_open.set(false);
                }
            >
                {move || peer().map(|p| view! { <Avatar user=p small=true/> })}
                <Show when=private>
                    <svg class="lock" viewBox="0 0 16 16" width="12" height="12" role="img" aria-label="private">
                        <path fill="currentColor" d="M5 7V5a3 3 0 0 1 6 0v2h1a1 1 0 0 1 1 1v6a1 1 0 0 1-1 1H4a1 1 0 0 1-1-1V8a1 1 0 0 1 1-1h1zm1.5 0h3V5a1.5 1.5 0 0 0-3 0v2z"/>
                    </svg>
                </Show>
                <span class="room-name">{label}</span>
                <Show when={move || room.mentions.get() > 0}>
                    <span class="badge mention-badge" aria-label=move || format!("{} mentions", room.mentions.get())>
                        {move || format!("@{}", badge_count(room.mentions.get()))}
                    </span>
                </Show>
                <Show when={move || room.unread.get() > 0}>
                    <span class="badge" aria-label=move || format!("{} unread", room.unread.get())>
                        {move || badge_count(room.unread.get())}
                    </span>
                </Show>
            </button>
        </li>
    }
}

fn invite(state: ChatState, user: UserId) {
    if let Some(room) = state.current_room() {
        state.request(ClientMsg::Invite { room: room.id, user });
    }
}

/// Asks, then removes (or bans) a member from a room.
fn remove(state: ChatState, room: crate::protocol::RoomId, user: crate::protocol::UserId, ban: bool) {
    #[cfg(feature = "hydrate")]
    {
        let question = if ban {
            "Ban this person? They will not be able to rejoin."
        } else {
            "Remove this person from the room? They can rejoin."
        };
        if !window().confirm_with_message(question).unwrap_or(false) {
            return;
        }
    }
    state.request(ClientMsg::Kick { room, user, ban });
}

#[component]
pub fn MembersPanel() -> impl IntoView {
    let state = expect_context::<ChatState>();
    let ui = expect_context::<UiState>();
    let online = move || state.current_room().map(|r| r.online.get()).unwrap_or_default();
    // Big rooms list only the first names; the count is everyone.
    let online_total = move || {
        state
            .current_room()
            .map(|r| r.info.with(|i| i.online) as usize)
            .unwrap_or_default()
            .max(online().len())
    };
    let unlisted = move || online_total() - online().len();
    // Owners and moderators of a private room may invite people online in their other rooms.
    let invitable = move || {
        let Some(room) = state.current_room() else {
            return Vec::new();
        };
        let private = room.info.with(|i| i.kind == RoomKind::Private);
        if !private || !state.moderates(room.id) {
            return Vec::new();
        }
        let here: Vec<UserId> = room.online.get().iter().map(|u| u.id).collect();
        let mut people: Vec<UserRef> = state
            .rooms
            .get()
            .iter()
            .flat_map(|r| r.online.get())
            .filter(|u| !here.contains(&u.id) && !state.is_me(u.id))
            .collect();
        people.sort_by_key(|u| u.id.0);
        people.dedup_by_key(|u| u.id);
        people
    };
    let open_dm = move |user: UserRef| {
        state.open_next_joined.set_value(true);
        state.request(ClientMsg::OpenDm { user: user.id });
        ui.members_toggled.set(false);
    };
    view! {
        <aside class="members" id="members" aria-label="Members">
            <div class="members-head">
                <h2 class="section-title">{move || format!("Online — {}", online_total())}</h2>
                <button class="icon-button members-close" aria-label="Hide members" on:click=move |_| ui.members_toggled.set(false)>"×"</button>
            </div>
            <ul class="member-list">
                <For each=online key=|user| user.id let:user>
                    {
                        let me = state.is_me(user.id);
                        let name = user.name.clone();
                        let target = user.clone();
                        let user_id = user.id;
                        // Moderators of a room (not a DM) may remove or ban others from it.
                        let moderation = state.current_room().filter(|room| {
                            !me && state.moderates(room.id)
                                && room.info.with_untracked(|i| i.kind != RoomKind::Direct)
                        });
                        view! {
                            <li class="member">
                                <Avatar user=user.clone() small=true/>
                                <span class="member-name">{name.clone()}{me.then_some(" (you)")}</span>
                                // Actions overlay the row's right end on hover or keyboard focus,
                                // so names keep their width.
                                {(!me).then(|| view! {
                                    <span class="member-actions">
                                        <button class="text-button" aria-label=format!("Message {name}")
                                            on:click=move |_| open_dm(target.clone())>"Message"</button>
                                        {moderation.map(|room| {
                                            let name = user.name.clone();
                                            view! {
                                                <button class="text-button" aria-label=format!("Remove {name} from the room")
                                                    on:click=move |_| remove(state, room.id, user_id, false)>"Remove"</button>
                                                <button class="text-button danger" aria-label=format!("Ban {name} from the room")
                                                    on:click=move |_| remove(state, room.id, user_id, true)>"Ban"</button>
                                            }
                                        })}
                                    </span>
                                })}
                            </li>
                        }
                    }
                </For>
            </ul>
            <Show when=move || { unlisted() > 0 }>
                <p class="member-more">{move || format!("and {} more online", unlisted())}</p>
            </Show>
            <Show when=move || !invitable().is_empty()>
                <h2 class="section-title invite-title">"Invite to this private room"</h2>
                <ul class="member-list">
                    <For each=invitable key=|user| user.id let:user>
                        {
                            let name = user.name.clone();
                            let invitee = user.id;
                            view! {
                                <li class="member">
                                    <Avatar user=user.clone() small=true/>
                                    <span class="member-name">{name.clone()}</span>
                                    <button class="text-button always" aria-label=format!("Invite {name}")
                                        on:click=move |_| invite(state, invitee)>"Invite"</button>
                                </li>
                            }
                        }
                    </For>
                </ul>
            </Show>
        </aside>
    }
}
