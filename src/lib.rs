//! Huddle: a real-time chat server and web app in one crate, built twice by cargo-leptos.
//!
//! - [`protocol`]: the wire format, shared by both builds.
//! - [`app`]: Leptos components, rendered on the server and hydrated in the browser.
//! - `client` (feature `hydrate`): the browser's WebSocket connection.
//! - `server` (feature `ssr`): configuration, HTTP router, WebSocket sessions, shutdown.

// Leptos views are deeply nested types; the chat screen's exceeds the default limit of 128.
#![recursion_limit = "256"]

pub mod app;
pub mod protocol;

#[cfg(feature = "hydrate")]
pub mod client;
#[cfg(feature = "ssr")]
pub mod server;

/// WASM entry point: hydrates the server-rendered page.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}
