//! File uploads from the browser: each picked, dropped or pasted file goes to
//! `/api/rooms/{room}/files` with XMLHttpRequest (fetch cannot report upload progress), shown
//! in the composer with its progress, cancellable, and ready to send once the server has it.

use crate::app::state::{RoomState, Upload, UploadState};
use crate::protocol::Attachment;
use leptos::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;
use wasm_bindgen::prelude::*;
use web_sys::{File, ProgressEvent, XmlHttpRequest};

thread_local! {
    /// Transfers in flight, by upload key, so "cancel" can abort them.
    static IN_FLIGHT: RefCell<HashMap<u32, XmlHttpRequest>> = RefCell::new(HashMap::new());
    static NEXT_KEY: RefCell<u32> = const { RefCell::new(0) };
}

fn set_state(room: RoomState, key: u32, state: UploadState) {
    room.uploads.update(|uploads| {
        if let Some(upload) = uploads.iter_mut().find(|u| u.key == key) {
            upload.state = state;
        }
    });
}

/// Starts uploading `file` for the next message in `room`.
pub fn start(room: RoomState, file: File) {
    let key = NEXT_KEY.with(|k| {
        *k.borrow_mut() += 1;
        *k.borrow()
    });
    room.uploads.update(|uploads| {
        uploads.push(Upload {
            key,
            name: file.name(),
            size: file.size(),
            state: UploadState::Sending(0.0),
        })
    });
    let Ok(xhr) = XmlHttpRequest::new() else {
        return set_state(
            room,
            key,
            UploadState::Failed("This browser cannot upload files.".into()),
        );
    };
    let url = format!(
        "/api/rooms/{}/files?name={}",
        room.id.0,
        js_sys::encode_uri_component(&file.name())
    );
    if xhr.open("POST", &url).is_err() {
        return set_state(
            room,
            key,
            UploadState::Failed("The upload could not start.".into()),
        );
    }
    if let Ok(upload) = xhr.upload() {
        let on_progress = Closure::<dyn Fn(ProgressEvent)>::new(move |event: ProgressEvent| {
            if event.length_computable() && event.total() > 0.0 {
                set_state(room, key, UploadState::Sending(event.loaded() / event.total()));
            }
        });
        upload.set_onprogress(Some(on_progress.as_ref().unchecked_ref()));
        on_progress.forget(); // one per upload, freed with the page
    }
    let finished = xhr.clone();
    let on_done = Closure::<dyn Fn()>::new(move || {
        IN_FLIGHT.with(|f| f.borrow_mut().remove(&key));
        let body = finished.response_text().ok().flatten().unwrap_or_default();
        let status = finished.status().unwrap_or(0);
        let state = if status == 201 {
            match serde_json::from_str::<Attachment>(&body) {
                Ok(attachment) => UploadState::Ready(attachment),
                Err(_) => UploadState::Failed("The server's answer was unreadable.".into()),
            }
        } else {
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "The upload failed; please retry.".into());
            UploadState::Failed(message)
        };
        set_state(room, key, state);
    });
    xhr.set_onload(Some(on_done.as_ref().unchecked_ref()));
    on_done.forget();
    let on_error = Closure::<dyn Fn()>::new(move || {
        IN_FLIGHT.with(|f| f.borrow_mut().remove(&key));
        set_state(
            room,
            key,
            UploadState::Failed("The connection was lost during the upload.".into()),
        );
    });
    xhr.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    on_error.forget();
    if xhr.send_with_opt_blob(Some(&file)).is_err() {
        return set_state(
            room,
            key,
            UploadState::Failed("The upload could not start.".into()),
        );
    }
    IN_FLIGHT.with(|f| f.borrow_mut().insert(key, xhr));
}

/// Stops an upload in progress (if any) and removes it from the composer.
pub fn cancel(room: RoomState, key: u32) {
    if let Some(xhr) = IN_FLIGHT.with(|f| f.borrow_mut().remove(&key)) {
        let _ = xhr.abort();
    }
    room.uploads.update(|uploads| uploads.retain(|u| u.key != key));
}

/// Uploads every file in a list (from a file picker, a drop or a paste).
pub fn start_all(room: RoomState, files: Option<web_sys::FileList>) {
    let Some(files) = files else { return };
    for i in 0..files.length() {
        if let Some(file) = files.get(i) {
            start(room, file);
        }
    }
}
