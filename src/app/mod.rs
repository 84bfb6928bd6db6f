//! Leptos components shared by both builds: the HTML shell, the app root and the screen parts.
//! Server-rendered first, then hydrated in the browser where the live connection drives them.

mod status;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Title};
use leptos_router::{
    components::{Route, Router, Routes},
    StaticSegment,
};
pub use status::{ConnStatus, ConnectionStatus};

/// The document around the app; rendered on the server only.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1, viewport-fit=cover"/>
                <meta name="color-scheme" content="light dark"/>
                <meta name="description" content="Huddle: real-time chat rooms"/>
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

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    let status = RwSignal::new(ConnStatus::Connecting);
    provide_context(status);
    // Effects run only in the browser, so the socket opens after hydration.
    Effect::new(move |_| {
        #[cfg(feature = "hydrate")]
        crate::client::start(status);
    });

    view! {
        <Title text="Huddle"/>
        <Router>
            <Routes fallback=|| view! { <p class="not-found">"Page not found."</p> }>
                <Route path=StaticSegment("") view=ChatScreen/>
            </Routes>
        </Router>
    }
}

/// The main screen: sidebar and conversation.
#[component]
fn ChatScreen() -> impl IntoView {
    view! {
        <div class="layout">
            <aside class="sidebar">
                <div class="brand">
                    <span class="brand-mark" aria-hidden="true">"H"</span>
                    <span class="brand-name">"Huddle"</span>
                </div>
                <nav aria-label="Rooms and direct messages">
                    <h2 class="section-title">"Rooms"</h2>
                    <ul class="room-list">
                        <li><a class="room-link active" href="/" aria-current="page">"# general"</a></li>
                    </ul>
                </nav>
            </aside>
            <main class="conversation">
                <header class="conversation-header">
                    <h1 class="room-title">"# general"</h1>
                    <ConnectionStatus/>
                </header>
                <section class="empty-state">
                    <h2>"Welcome to Huddle"</h2>
                    <p>"Rooms, direct messages and a delivery you can count on."</p>
                </section>
            </main>
        </div>
    }
}
