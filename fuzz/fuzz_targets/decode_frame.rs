//! Fuzzes what the server does first with every text frame: decode it into a client message,
//! then run the shared validation rules on its fields. Nothing may panic, and what the rules
//! accept must keep their promises (non-empty, within limits, no forbidden characters).
#![no_main]

use huddle::protocol::{rules, ClientMsg};
use libfuzzer_sys::fuzz_target;

const MAX_CHARS: u32 = 2000;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = std::str::from_utf8(data) else {
        return; // the WebSocket layer refuses invalid UTF-8 before decoding
    };
    if let Ok(msg) = ClientMsg::decode(frame) {
        // What decodes re-encodes to something that decodes to the same message.
        let again = ClientMsg::decode(&msg.encode()).expect("an encoded message decodes");
        assert_eq!(again, msg);
        match &msg {
            ClientMsg::Send { text, client_msg_id, .. } => {
                check_text(text);
                let _ = rules::client_msg_id(&client_msg_id.0);
            }
            ClientMsg::Edit { text, .. } => check_text(text),
            ClientMsg::CreateRoom { name, topic, .. } => {
                if let Ok(name) = rules::room_name(name) {
                    assert!(!name.is_empty() && name == name.trim());
                }
                let _ = rules::room_topic(topic);
            }
            _ => {}
        }
    }
    if let Ok(name) = rules::display_name(frame) {
        assert!(name.chars().count() >= 2 && name == name.trim());
    }
});

fn check_text(raw: &str) {
    if let Ok(text) = rules::message_text(raw, MAX_CHARS) {
        assert!(!text.trim().is_empty(), "accepted an empty message");
        assert!(text.chars().count() <= MAX_CHARS as usize, "accepted an over-long message");
        assert!(
            !text.chars().any(|c| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')),
            "accepted a bidi override"
        );
    }
}
