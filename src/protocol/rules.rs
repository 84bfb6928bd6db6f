//! Validation rules for names and message text: the server enforces them, the client uses the
//! same functions to warn before sending. Each rule lives here and nowhere else.

use super::ErrorCode;

/// A refused value: the stable code and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub code: ErrorCode,
    pub message: String,
}

fn invalid(code: ErrorCode, message: impl Into<String>) -> Invalid {
    Invalid {
        code,
        message: message.into(),
    }
}

pub const DISPLAY_NAME_MIN: usize = 2;
pub const DISPLAY_NAME_MAX: usize = 30;
pub const ROOM_NAME_MIN: usize = 2;
pub const ROOM_NAME_MAX: usize = 40;
pub const ROOM_TOPIC_MAX: usize = 200;
pub const CLIENT_MSG_ID_MAX: usize = 64;
pub const SEARCH_QUERY_MAX: usize = 200;

/// Characters allowed in display and room names besides letters and digits.
const NAME_PUNCTUATION: [char; 4] = [' ', '_', '-', '.'];

/// Trims and checks a display name (2-30 characters: letters, digits, space, `_ - .`).
pub fn display_name(raw: &str) -> Result<String, Invalid> {
    name(raw, "Display name", DISPLAY_NAME_MIN, DISPLAY_NAME_MAX)
}

/// Trims and checks a room name (2-40 characters: letters, digits, space, `_ - .`).
pub fn room_name(raw: &str) -> Result<String, Invalid> {
    name(raw, "Room name", ROOM_NAME_MIN, ROOM_NAME_MAX)
}

fn name(raw: &str, what: &str, min: usize, max: usize) -> Result<String, Invalid> {
    let trimmed = raw.trim();
    let chars = trimmed.chars().count();
    if chars > max {
        return Err(invalid(
            ErrorCode::TooLong,
            format!("{what} must be at most {max} characters."),
        ));
    }
    if chars < min {
        return Err(invalid(
            ErrorCode::BadName,
            format!("{what} must be at least {min} characters."),
        ));
    }
    if let Some(bad) = trimmed
        .chars()
        .find(|c| !(c.is_alphanumeric() || NAME_PUNCTUATION.contains(c)))
    {
        return Err(invalid(
            ErrorCode::BadName,
            format!(
                "{what} may use letters, digits, spaces and _ - . only, not {}.",
                describe_char(bad)
            ),
        ));
    }
    if trimmed.contains("  ") {
        return Err(invalid(
            ErrorCode::BadName,
            format!("{what} may not contain double spaces."),
        ));
    }
    Ok(trimmed.to_owned())
}

/// Trims and checks a room topic (at most 200 characters, no control characters).
pub fn room_topic(raw: &str) -> Result<String, Invalid> {
    let trimmed = raw.trim();
    if trimmed.chars().count() > ROOM_TOPIC_MAX {
        return Err(invalid(
            ErrorCode::TooLong,
            format!("Topic must be at most {ROOM_TOPIC_MAX} characters."),
        ));
    }
    if let Some(bad) = trimmed.chars().find(|&c| forbidden_in_text(c) || c == '\n') {
        return Err(invalid(
            ErrorCode::BadCharacters,
            format!("Topic may not contain {}.", describe_char(bad)),
        ));
    }
    Ok(trimmed.to_owned())
}

/// Checks message text: not empty after trimming, at most `max_chars` characters, and no
/// control characters other than newline and tab. Returns the trimmed text to store.
pub fn message_text(raw: &str, max_chars: u32) -> Result<String, Invalid> {
    let trimmed = raw.trim();
    if trimmed.chars().all(|c| c.is_whitespace() || is_invisible(c)) {
        return Err(invalid(ErrorCode::Empty, "Message is empty."));
    }
    let chars = trimmed.chars().count();
    if chars > max_chars as usize {
        return Err(invalid(
            ErrorCode::TooLong,
            format!("Message is {chars} characters long; the limit is {max_chars}."),
        ));
    }
    if let Some(bad) = trimmed.chars().find(|&c| forbidden_in_text(c)) {
        return Err(invalid(
            ErrorCode::BadCharacters,
            format!("Message contains {}.", describe_char(bad)),
        ));
    }
    Ok(trimmed.to_owned())
}

/// Most files one message carries.
pub const ATTACHMENTS_MAX: usize = 10;

/// Checks a message that may carry files: with files, the text may be empty (but is checked
/// like any text when present); at most [`ATTACHMENTS_MAX`] files.
pub fn message_with_attachments(raw: &str, max_chars: u32, files: usize) -> Result<String, Invalid> {
    if files > ATTACHMENTS_MAX {
        return Err(invalid(
            ErrorCode::TooLong,
            format!("A message may carry at most {ATTACHMENTS_MAX} files."),
        ));
    }
    if files > 0 && raw.trim().is_empty() {
        return Ok(String::new());
    }
    message_text(raw, max_chars)
}

/// Checks a search query: some letters or digits, at most 200 characters. Returns it trimmed.
pub fn search_query(raw: &str) -> Result<String, Invalid> {
    let trimmed = raw.trim();
    if !trimmed.chars().any(char::is_alphanumeric) {
        return Err(invalid(ErrorCode::Empty, "Type a word to search for."));
    }
    if trimmed.chars().count() > SEARCH_QUERY_MAX {
        return Err(invalid(
            ErrorCode::TooLong,
            format!("A search may be at most {SEARCH_QUERY_MAX} characters."),
        ));
    }
    Ok(trimmed.to_owned())
}

/// Checks a client message id: 1-64 characters from `A-Z a-z 0-9 _ -`.
pub fn client_msg_id(raw: &str) -> Result<(), Invalid> {
    let ok = !raw.is_empty()
        && raw.len() <= CLIENT_MSG_ID_MAX
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            ErrorCode::BadRequest,
            format!("client_msg_id must be 1-{CLIENT_MSG_ID_MAX} characters from A-Z a-z 0-9 _ -."),
        ))
    }
}

/// Control characters (except newline and tab) and bidirectional overrides, which can make
/// text display differently from what it is.
fn forbidden_in_text(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Characters that render as nothing: zero-width spaces and joiners, word joiner, invisible
/// operators, soft hyphen, byte-order mark, variation selectors. Allowed inside text (emoji
/// and some scripts need them) but a message of only these is empty.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}' | '\u{034F}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}'
            | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
    )
}

fn describe_char(c: char) -> String {
    if c.is_control() || c.is_whitespace() || !c.is_alphanumeric() && (c as u32) >= 0x2000 {
        format!("the invisible or control character U+{:04X}", c as u32)
    } else {
        format!("\"{c}\"")
    }
}

const ADJECTIVES: [&str; 24] = [
    "Brave", "Calm", "Clever", "Cosy", "Curious", "Eager", "Gentle", "Happy", "Jolly", "Kind", "Lucky",
    "Merry", "Nimble", "Plucky", "Quick", "Quiet", "Sunny", "Swift", "Tidy", "Witty", "Bold", "Bright",
    "Keen", "Spry",
];
const ANIMALS: [&str; 24] = [
    "Otter", "Badger", "Falcon", "Heron", "Lynx", "Marten", "Panda", "Puffin", "Quokka", "Raven", "Seal",
    "Stoat", "Tapir", "Walrus", "Wombat", "Yak", "Fox", "Hare", "Ibis", "Koala", "Lemur", "Mole", "Newt",
    "Owl",
];

/// A friendly random name like "Nimble Otter 42", from three random numbers.
pub fn suggested_name(a: u32, b: u32, n: u32) -> String {
    format!(
        "{} {} {}",
        ADJECTIVES[a as usize % ADJECTIVES.len()],
        ANIMALS[b as usize % ANIMALS.len()],
        n % 100
    )
}

/// Colours offered by the whiteboard; any `#rrggbb` is accepted.
pub const BOARD_PALETTE: [&str; 8] = [
    "#1f2937", "#dc2626", "#ea580c", "#ca8a04", "#16a34a", "#0891b2", "#2563eb", "#9333ea",
];
/// Stroke widths in board units (see `BOARD_SCALE`): thinnest and thickest.
pub const BOARD_WIDTH_MIN: u16 = 5;
pub const BOARD_WIDTH_MAX: u16 = 400;

/// Checks one whiteboard batch: a `#rrggbb` colour, a width in range, 1 to `max_points`
/// points inside the board.
pub fn stroke(color: &str, width: u16, points: &[[u16; 2]], max_points: usize) -> Result<(), Invalid> {
    let hex = color.strip_prefix('#').unwrap_or("");
    if hex.len() != 6 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(invalid(
            ErrorCode::BadStroke,
            "Stroke colour must look like #1a2b3c.",
        ));
    }
    if !(BOARD_WIDTH_MIN..=BOARD_WIDTH_MAX).contains(&width) {
        return Err(invalid(
            ErrorCode::BadStroke,
            format!("Stroke width must be {BOARD_WIDTH_MIN} to {BOARD_WIDTH_MAX}."),
        ));
    }
    if points.is_empty() || points.len() > max_points {
        return Err(invalid(
            ErrorCode::BadStroke,
            format!("A stroke batch carries 1 to {max_points} points."),
        ));
    }
    let scale = super::BOARD_SCALE;
    if points.iter().any(|[x, y]| *x > scale || *y > scale) {
        return Err(invalid(
            ErrorCode::BadStroke,
            format!("Stroke points must lie on the board (0 to {scale})."),
        ));
    }
    Ok(())
}

/// The palette colour a user draws in until they pick another.
pub fn default_board_color(user: super::UserId) -> &'static str {
    BOARD_PALETTE[user.0.rem_euclid(BOARD_PALETTE.len() as i64) as usize]
}

/// Characters of `text` inside code: inline spans between equal runs of backticks, and
/// fenced blocks (a run of three). A run without its closing twin is plain text.
fn code_mask(chars: &[char]) -> Vec<bool> {
    let mut mask = vec![false; chars.len()];
    let run_at = |i: usize| chars[i..].iter().take_while(|c| **c == '`').count();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            i += 1;
            continue;
        }
        let run = run_at(i);
        let mut j = i + run;
        let mut close = None;
        while j < chars.len() {
            if chars[j] == '`' {
                let other = run_at(j);
                if other == run {
                    close = Some(j + other);
                    break;
                }
                j += other;
            } else {
                j += 1;
            }
        }
        match close {
            Some(end) => {
                mask[i..end].iter_mut().for_each(|m| *m = true);
                i = end;
            }
            None => i += run,
        }
    }
    mask
}

/// The mentions in `text` of people named in `names`: `@` at the start of a word, then a
/// name (any case, spaces included, as the composer inserts it), then the end of that word;
/// the longest name wins; mentions inside code do not count. Returns `[start, end)` in
/// characters (the `@` included) and the index of the name, in text order.
pub fn mentions(text: &str, names: &[&str]) -> Vec<([u32; 2], usize)> {
    let chars: Vec<char> = text.chars().collect();
    let code = code_mask(&chars);
    let names: Vec<Vec<char>> = names.iter().map(|n| n.chars().collect()).collect();
    let same = |a: char, b: char| a == b || a.to_lowercase().eq(b.to_lowercase());
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts_word = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '@');
        if chars[i] != '@' || !starts_word || code[i] {
            i += 1;
            continue;
        }
        let rest = &chars[i + 1..];
        let best = names
            .iter()
            .enumerate()
            .filter(|(_, name)| {
                !name.is_empty()
                    && rest.len() >= name.len()
                    && rest.iter().zip(name.iter()).all(|(a, b)| same(*a, *b))
                    && rest.get(name.len()).is_none_or(|next| !next.is_alphanumeric())
            })
            .max_by_key(|(_, name)| name.len());
        match best {
            Some((index, name)) => {
                let end = i + 1 + name.len();
                found.push(([i as u32, end as u32], index));
                i = end;
            }
            None => i += 1,
        }
    }
    found
}

/// Whether `text` mentions the person called `name`.
pub fn mentions_name(text: &str, name: &str) -> bool {
    !mentions(text, &[name]).is_empty()
}

#[cfg(test)]
mod tests {

    #[test]
    fn mentions_are_at_words_with_names_as_inserted_and_not_in_code() {
        let names = ["Ada", "Ada Lovelace", "Lin"];
        let found = |text: &str| -> Vec<(u32, u32, usize)> {
            super::mentions(text, &names)
                .into_iter()
                .map(|([s, e], i)| (s, e, i))
                .collect()
        };
        assert_eq!(
            found("@Ada Lovelace, see this"),
            [(0, 13, 1)],
            "the longest name wins"
        );
        assert_eq!(found("hi @ada and @LIN!"), [(3, 7, 0), (12, 16, 2)], "any case");
        assert_eq!(found("@Adam is someone else"), [], "the name must end the word");
        assert_eq!(
            found("mail ada@lin.org or @@Lin"),
            [],
            "inside a word, or after another @"
        );
        assert_eq!(
            found("`@Ada` and ```\n@Lin\n``` but @Lin"),
            [(28, 32, 2)],
            "code spans and blocks do not count"
        );
        assert_eq!(found("unclosed ` @Ada"), [(11, 15, 0)], "a lone backtick is text");
        assert_eq!(found("ünï @Lin"), [(4, 8, 2)], "offsets in characters");
        assert!(super::mentions_name("ping @Lin.", "lin"));
        assert!(!super::mentions_name("ping Lin", "Lin"));
    }

    #[test]
    fn strokes_need_a_hex_colour_a_width_in_range_and_points_on_the_board() {
        let ok = [[0, 0], [10_000, 10_000]];
        assert!(stroke("#1a2B3c", 40, &ok, 2).is_ok());
        for (color, width, points, max) in [
            ("red", 40, &ok[..], 2),
            ("#1a2b3", 40, &ok[..], 2),
            ("#1a2b3g", 40, &ok[..], 2),
            ("#1a2b3c", 4, &ok[..], 2),
            ("#1a2b3c", 401, &ok[..], 2),
            ("#1a2b3c", 40, &[][..], 2),
            ("#1a2b3c", 40, &ok[..], 1),
            ("#1a2b3c", 40, &[[10_001, 0]][..], 2),
        ] {
            let refused = stroke(color, width, points, max).unwrap_err();
            assert_eq!(
                refused.code,
                ErrorCode::BadStroke,
                "{color} {width} {points:?} {max}"
            );
        }
    }

    #[test]
    fn everyone_gets_a_palette_colour_by_default() {
        use crate::protocol::UserId;
        assert_eq!(default_board_color(UserId(0)), BOARD_PALETTE[0]);
        assert_eq!(default_board_color(UserId(9)), BOARD_PALETTE[1]);
        assert_eq!(default_board_color(UserId(-1)), BOARD_PALETTE[7]);
    }

    use super::*;

    #[test]
    fn display_names() {
        assert_eq!(display_name("  Ada Lovelace ").unwrap(), "Ada Lovelace");
        assert_eq!(display_name("zoë_o-k.9").unwrap(), "zoë_o-k.9");
        assert_eq!(display_name("A").unwrap_err().code, ErrorCode::BadName);
        assert_eq!(
            display_name(&"a".repeat(31)).unwrap_err().code,
            ErrorCode::TooLong
        );
        assert_eq!(display_name("Ada\u{200B}x").unwrap_err().code, ErrorCode::BadName);
        assert_eq!(display_name("<script>").unwrap_err().code, ErrorCode::BadName);
        assert_eq!(display_name("a\u{0007}b").unwrap_err().code, ErrorCode::BadName);
        assert!(display_name("Ada\u{200B}x")
            .unwrap_err()
            .message
            .contains("U+200B"));
    }

    #[test]
    fn room_names_and_topics() {
        assert_eq!(room_name(" rust-beginners ").unwrap(), "rust-beginners");
        assert_eq!(room_name(&"r".repeat(41)).unwrap_err().code, ErrorCode::TooLong);
        assert_eq!(room_name("#x").unwrap_err().code, ErrorCode::BadName);
        assert_eq!(
            room_topic("line\nbreak").unwrap_err().code,
            ErrorCode::BadCharacters
        );
    }

    #[test]
    fn message_text_rules() {
        assert_eq!(message_text("  hi\n there\t ", 10).unwrap(), "hi\n there");
        assert_eq!(message_text(" \n\t ", 10).unwrap_err().code, ErrorCode::Empty);
        assert_eq!(
            message_text("\u{200B}\u{200D} \u{FEFF}", 10).unwrap_err().code,
            ErrorCode::Empty,
            "only invisible characters"
        );
        assert!(
            message_text("👩\u{200D}💻", 10).is_ok(),
            "zero-width joiner inside an emoji"
        );
        assert_eq!(
            message_text(&"é".repeat(11), 10).unwrap_err().code,
            ErrorCode::TooLong
        );
        assert!(
            message_text(&"é".repeat(10), 10).is_ok(),
            "limit counts characters, not bytes"
        );
        assert_eq!(
            message_text("a\u{0000}b", 10).unwrap_err().code,
            ErrorCode::BadCharacters
        );
        assert_eq!(
            message_text("a\u{202E}b", 10).unwrap_err().code,
            ErrorCode::BadCharacters
        );
        assert!(
            message_text("<img src=x onerror=alert(1)>", 100).is_ok(),
            "markup is just text"
        );
    }

    #[test]
    fn client_msg_ids() {
        assert!(client_msg_id("m-1_A").is_ok());
        assert!(client_msg_id("").is_err());
        assert!(client_msg_id(&"a".repeat(65)).is_err());
        assert!(client_msg_id("a b").is_err());
    }

    #[test]
    fn suggestions_are_valid_names() {
        for i in 0..50 {
            let name = suggested_name(i * 7, i * 13, i * 31);
            assert!(display_name(&name).is_ok(), "{name}");
        }
    }
}
