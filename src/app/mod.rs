//! Leptos components shared by both builds: the HTML shell, the app root and the chat screen.
//! Server-rendered first, then hydrated in the browser where the live connection drives them.

mod board;
pub mod board_state;
mod composer;
mod dialogs;
pub mod format;
mod search;
mod sidebar;
pub mod state;
mod status;
mod timeline;

use crate::protocol::{ClientSettings, CLIENT_SETTINGS_META};
use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Title};
use leptos_router::{
    components::{Route, Router, Routes},
    StaticSegment,
};
use state::ChatState;
pub use status::{ConnStatus, ConnectionStatus};

/// The document around the app; rendered on the server only.
pub fn shell(options: LeptosOptions, client: ClientSettings) -> impl IntoView {
    let client_json = serde_json::to_string(&client).unwrap_or_default();
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1, viewport-fit=cover, interactive-widget=resizes-content"/>
                <meta name="color-scheme" content="light dark"/>
                <meta name="description" content="Huddle: real-time chat rooms"/>
                <meta name=CLIENT_SETTINGS_META content=client_json/>
                <link rel="icon" type="image/svg+xml" href="/favicon.svg"/>
                <AutoReload options=options.clone()/>
                <HydrationScripts options=options.clone()/>
                <leptos_meta::HashedStylesheet options id="leptos"/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// Screen-level UI state that several parts share: drawer, members panel, open dialog.
#[derive(Clone, Copy)]
pub struct UiState {
    pub drawer_open: RwSignal<bool>,
    /// Flipped by the members button: hides the panel on wide screens, shows it as a sheet on narrow ones.
    pub members_toggled: RwSignal<bool>,
    pub dialog: RwSignal<Option<Dialog>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialog {
    CreateRoom,
    BrowseRooms,
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    let state = ChatState::new();
    provide_context(state);
    provide_context(UiState {
        drawer_open: RwSignal::new(false),
        members_toggled: RwSignal::new(false),
        dialog: RwSignal::new(None),
    });
    // Effects run only in the browser, so the socket opens after hydration.
    Effect::new(move |_| {
        #[cfg(feature = "hydrate")]
        crate::client::start(state);
    });

    view! {
        // The tab shows how much is unread, so a hidden tab still says when to look.
        <Title text=move || match state.unread_total() {
            0 => "Huddle".to_owned(),
            n => format!("({n}) Huddle"),
        }/>
        <Router>
            <Routes fallback=|| view! { <p class="not-found">"Page not found."</p> }>
                <Route path=StaticSegment("") view=ChatScreen/>
            </Routes>
        </Router>
    }
}

/// The main screen: sidebar, conversation, members; dialogs on top.
#[component]
fn ChatScreen() -> impl IntoView {
    let state = expect_context::<ChatState>();
    let ui = expect_context::<UiState>();
    let close_overlays = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Escape" {
            ui.drawer_open.set(false);
            ui.dialog.set(None);
        }
    };
    view! {
        <div
            class="layout"
            class:drawer-open=move || ui.drawer_open.get()
            class:members-toggled=move || ui.members_toggled.get()
            class:search-open=move || state.search.open.get()
            on:keydown=close_overlays
        >
            <sidebar::Sidebar/>
            <div class="scrim" aria-hidden="true" on:click=move |_| ui.drawer_open.set(false)></div>
            <timeline::Conversation/>
            <sidebar::MembersPanel/>
            <Show when=move || state.search.open.get()>
                <search::SearchPanel/>
            </Show>
            <Show when=move || ui.dialog.get() == Some(Dialog::CreateRoom)>
                <dialogs::CreateRoomDialog/>
            </Show>
            <Show when=move || ui.dialog.get() == Some(Dialog::BrowseRooms)>
                <dialogs::BrowseRoomsDialog/>
            </Show>
            <Show when=move || state.needs_name.get()>
                <dialogs::WelcomeDialog/>
            </Show>
            <Notice/>
        </div>
    }
}

/// A dismissible notice for refused requests.
#[component]
fn Notice() -> impl IntoView {
    let state = expect_context::<ChatState>();
    view! {
        <Show when=move || state.notice.get().is_some()>
            <div class="notice" role="alert">
                <span>{move || state.notice.get().unwrap_or_default()}</span>
                <button class="icon-button" aria-label="Dismiss" on:click=move |_| state.notice.set(None)>"×"</button>
            </div>
        </Show>
    }
}

/// A round avatar with initials on a colour derived from the user id.
#[component]
pub fn Avatar(user: crate::protocol::UserRef, #[prop(optional)] small: bool) -> impl IntoView {
    let hue = format::avatar_hue(user.id);
    view! {
        <span class="avatar" class:small=small data-hue=hue aria-hidden="true">{format::initials(&user.name)}</span>
    }
}
