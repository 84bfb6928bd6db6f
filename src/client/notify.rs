//! Browser notifications for mentions and direct messages while the tab is hidden. The
//! permission is asked only when the person clicks "Enable notifications", never on load.

use crate::app::state::{ChatState, RoomState};
use crate::protocol::{ChatMessage, RoomKind};
use leptos::prelude::*;
use wasm_bindgen::prelude::*;
use web_sys::{Notification, NotificationOptions, NotificationPermission};

/// Longest notification body, in characters.
const BODY_MAX: usize = 140;

/// Whether this browser offers notifications at all.
fn supported() -> bool {
    js_sys::Reflect::has(&window(), &JsValue::from_str("Notification")).unwrap_or(false)
}

/// "default" (not asked yet), "granted", "denied", or "unsupported".
pub fn permission() -> &'static str {
    if !supported() {
        return "unsupported";
    }
    match Notification::permission() {
        NotificationPermission::Granted => "granted",
        NotificationPermission::Denied => "denied",
        _ => "default",
    }
}

/// Asks for permission (call from a click); `done` gets the answer.
pub fn request(done: impl Fn(&'static str) + 'static) {
    if !supported() {
        return done("unsupported");
    }
    match Notification::request_permission() {
        Ok(promise) => leptos::task::spawn_local(async move {
            let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
            done(permission());
        }),
        Err(_) => done(permission()),
    }
}

/// Shows a notification for `message` when the tab is hidden and notifications are allowed;
/// clicking it brings the tab back at the room.
pub fn message(state: ChatState, message: &ChatMessage, room: RoomState) {
    if !document().hidden() || permission() != "granted" {
        return;
    }
    let title = room.info.with_untracked(|info| match info.kind {
        RoomKind::Direct => message.author.name.clone(),
        _ => format!("{} in #{}", message.author.name, info.name),
    });
    let mut body: String = message.text.chars().take(BODY_MAX).collect();
    if message.text.chars().count() > BODY_MAX {
        body.push('…');
    }
    let options = NotificationOptions::new();
    options.set_body(&body);
    options.set_tag(&format!("huddle-room-{}", room.id.0));
    let Ok(notification) = Notification::new_with_options(&title, &options) else {
        return;
    };
    let room_id = room.id;
    let on_click = Closure::<dyn Fn()>::new(move || {
        let _ = window().focus();
        state.open_room(room_id);
    });
    notification.set_onclick(Some(on_click.as_ref().unchecked_ref()));
    on_click.forget(); // lives as long as the notification may be clicked
}
