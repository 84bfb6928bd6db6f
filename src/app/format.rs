//! Presentation helpers with no UI of their own: initials and avatar colours, times and day
//! labels, the typing sentence, message grouping, badge counts, and splitting text into plain
//! runs and links.

use crate::protocol::{MessageKind, Timestamp, UserId, UserRef};

/// Up to two initials: "Ada Lovelace" -> "AL", "lin" -> "L".
pub fn initials(name: &str) -> String {
    name.split(|c: char| c.is_whitespace() || c == '_' || c == '-' || c == '.')
        .filter_map(|word| word.chars().next())
        .filter(|c| c.is_alphanumeric())
        .take(2)
        .flat_map(|c| c.to_uppercase())
        .collect()
}

/// A stable colour per user, one of 12 hues 30 degrees apart (style/main.css maps
/// `data-hue` to `hsl(hue 55% 38%)` with white text, WCAG AA in both themes). A class-like
/// attribute rather than an inline style, so the Content-Security-Policy needs no
/// 'unsafe-inline' for styles.
pub fn avatar_hue(user: UserId) -> u32 {
    ((user.0.unsigned_abs().wrapping_mul(2_654_435_761)) % 12) as u32 * 30
}

/// "1 member", "3 members".
pub fn count(n: u32, singular: &str, plural: &str) -> String {
    if n == 1 {
        format!("1 {singular}")
    } else {
        format!("{n} {plural}")
    }
}

/// "Ada is typing…", "Ada and Lin are typing…", "Several people are typing…".
pub fn typing_sentence(users: &[UserRef]) -> String {
    match users {
        [] => String::new(),
        [one] => format!("{} is typing…", one.name),
        [a, b] => format!("{} and {} are typing…", a.name, b.name),
        _ => "Several people are typing…".to_owned(),
    }
}

/// Messages by one author within this window share one header.
pub const GROUP_WINDOW_MS: i64 = 5 * 60 * 1000;

/// Whether a message continues the group of the one before it.
pub fn continues_group(
    prev: Option<(&UserRef, MessageKind, Timestamp)>,
    author: &UserRef,
    kind: MessageKind,
    ts: Timestamp,
) -> bool {
    match prev {
        Some((prev_author, MessageKind::Text, prev_ts)) => {
            kind == MessageKind::Text
                && prev_author.id == author.id
                && ts - prev_ts < GROUP_WINDOW_MS
                && day_number(ts) == day_number(prev_ts)
        }
        _ => false,
    }
}

/// Days since the epoch in the viewer's time zone.
pub fn day_number(ts: Timestamp) -> i64 {
    (ts - tz_offset_ms(ts)).div_euclid(86_400_000)
}

/// The viewer's offset from UTC at `ts`, in ms (browser only; UTC on the server).
fn tz_offset_ms(ts: Timestamp) -> i64 {
    #[cfg(feature = "hydrate")]
    {
        let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ts as f64));
        date.get_timezone_offset() as i64 * 60_000
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = ts;
        0
    }
}

/// "14:05" in the viewer's time zone.
pub fn clock_time(ts: Timestamp) -> String {
    let local = ts - tz_offset_ms(ts);
    let minutes = local.div_euclid(60_000).rem_euclid(1440);
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// "Today", "Yesterday" or a date like "2026-11-21".
pub fn day_label(ts: Timestamp, now: Timestamp) -> String {
    let (day, today) = (day_number(ts), day_number(now));
    match today - day {
        0 => "Today".to_owned(),
        1 => "Yesterday".to_owned(),
        _ => {
            let (y, m, d) = civil_from_days(day);
            format!("{y:04}-{m:02}-{d:02}")
        }
    }
}

/// Gregorian date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A piece of message text: shown as-is, or as a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Text(String),
    Link(String),
}

/// Splits text into plain runs and `http(s)://` links. Only those two schemes become links,
/// so `javascript:` and friends stay text; trailing punctuation stays outside the link.
pub fn segments(text: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = find_link_start(rest) {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '<' || c == '>' || c == '"')
            .unwrap_or(tail.len());
        let mut link = &tail[..end];
        while let Some(last) = link.chars().last().filter(|c| ".,;:!?)]}'".contains(*c)) {
            link = &link[..link.len() - last.len_utf8()];
        }
        let scheme_only = link.trim_end_matches('/').ends_with(':');
        if scheme_only {
            out.push(Segment::Text(rest[..start + link.len().max(1)].to_owned()));
            rest = &rest[start + link.len().max(1)..];
            continue;
        }
        if start > 0 {
            out.push(Segment::Text(rest[..start].to_owned()));
        }
        out.push(Segment::Link(link.to_owned()));
        rest = &rest[start + link.len()..];
    }
    if !rest.is_empty() {
        out.push(Segment::Text(rest.to_owned()));
    }
    out
}

fn find_link_start(text: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    match (lower.find("https://"), lower.find("http://")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Splits `text` at the `[start, end)` character ranges of `marks` (ascending, from a
/// search result): `(piece, marked)` in order. Ranges past the end are cut; bad ones ignored.
pub fn marked(text: &str, marks: &[[u32; 2]]) -> Vec<(String, bool)> {
    let chars: Vec<char> = text.chars().collect();
    let mut pieces = Vec::new();
    let mut at = 0usize;
    for [start, end] in marks
        .iter()
        .map(|[s, e]| [*s as usize, (*e as usize).min(chars.len())])
    {
        if start < at || start >= end {
            continue;
        }
        if start > at {
            pieces.push((chars[at..start].iter().collect(), false));
        }
        pieces.push((chars[start..end].iter().collect(), true));
        at = end;
    }
    if at < chars.len() {
        pieces.push((chars[at..].iter().collect(), false));
    }
    pieces
}

/// The mention being typed at `caret` (in characters): the position of its `@` (at the start
/// of a word) and what follows it up to the caret (spaces allowed, as names have them).
pub fn mention_query(text: &str, caret: usize) -> Option<(usize, String)> {
    let chars: Vec<char> = text.chars().take(caret).collect();
    let at = chars.iter().rposition(|c| *c == '@')?;
    let starts_word = at == 0 || !(chars[at - 1].is_alphanumeric() || chars[at - 1] == '@');
    let fragment: String = chars[at + 1..].iter().collect();
    let plausible = fragment.chars().count() <= crate::protocol::rules::DISPLAY_NAME_MAX
        && !fragment.contains('\n')
        && !fragment.starts_with(' ');
    (starts_word && plausible).then_some((at, fragment))
}

/// `text` with the mention typed from `at` to `caret` replaced by `@name ` ; the new caret.
pub fn complete_mention(text: &str, at: usize, caret: usize, name: &str) -> (String, usize) {
    let chars: Vec<char> = text.chars().collect();
    let before: String = chars[..at.min(chars.len())].iter().collect();
    let after: String = chars[caret.min(chars.len())..].iter().collect();
    let inserted = format!("@{name} ");
    let caret = before.chars().count() + inserted.chars().count();
    (format!("{before}{inserted}{after}"), caret)
}

/// A file size for people: "812 B", "4.2 KB", "3.1 MB".
pub fn file_size(bytes: u64) -> String {
    match bytes {
        0..=999 => format!("{bytes} B"),
        1_000..=999_999 => format!("{:.1} KB", bytes as f64 / 1_000.0),
        _ => format!("{:.1} MB", bytes as f64 / 1_000_000.0),
    }
}

/// A count in a sidebar badge: exact up to 99, then "99+" (the label says the number).
pub fn badge_count(count: u32) -> String {
    if count > 99 {
        "99+".to_owned()
    } else {
        count.to_string()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn badges_count_to_99_then_say_more() {
        assert_eq!(badge_count(7), "7");
        assert_eq!(badge_count(99), "99");
        assert_eq!(badge_count(100), "99+");
        assert_eq!(badge_count(1000), "99+");
    }

    #[test]
    fn mentions_being_typed_are_found_and_completed() {
        assert_eq!(mention_query("hi @Li", 6), Some((3, "Li".to_owned())));
        assert_eq!(
            mention_query("hi @Lin Ch", 10),
            Some((3, "Lin Ch".to_owned())),
            "names have spaces"
        );
        assert_eq!(mention_query("@", 1), Some((0, String::new())));
        assert_eq!(mention_query("mail a@b", 8), None, "inside a word");
        assert_eq!(mention_query("hi @ there", 10), None, "a space right after @");
        assert_eq!(mention_query("hi @Lin\nnext", 12), None);
        assert_eq!(
            mention_query("hi @Li and more", 6),
            Some((3, "Li".to_owned())),
            "up to the caret"
        );
        assert_eq!(
            complete_mention("hi @Li and more", 3, 6, "Lin Chen"),
            ("hi @Lin Chen  and more".to_owned(), 13)
        );
        assert_eq!(complete_mention("ü@", 1, 2, "Ada"), ("ü@Ada ".to_owned(), 6));
    }

    #[test]
    fn marked_splits_at_character_ranges() {
        let pieces = marked("héllo wörld <b>", &[[0, 5], [6, 11], [20, 30]]);
        assert_eq!(
            pieces,
            vec![
                ("héllo".to_owned(), true),
                (" ".to_owned(), false),
                ("wörld".to_owned(), true),
                (" <b>".to_owned(), false)
            ]
        );
        assert_eq!(
            marked("abc", &[[2, 1], [1, 2], [0, 1]]),
            vec![
                ("a".to_owned(), false),
                ("b".to_owned(), true),
                ("c".to_owned(), false)
            ]
        );
    }

    use super::*;

    fn user(id: i64, name: &str) -> UserRef {
        UserRef {
            id: UserId(id),
            name: name.into(),
        }
    }

    #[test]
    fn initials_take_two_words() {
        assert_eq!(initials("Ada Lovelace"), "AL");
        assert_eq!(initials("lin"), "L");
        assert_eq!(initials("nimble_otter 42"), "NO");
    }

    #[test]
    fn typing_sentences() {
        assert_eq!(typing_sentence(&[user(1, "Ada")]), "Ada is typing…");
        assert_eq!(
            typing_sentence(&[user(1, "Ada"), user(2, "Lin")]),
            "Ada and Lin are typing…"
        );
        assert_eq!(
            typing_sentence(&[user(1, "A"), user(2, "B"), user(3, "C")]),
            "Several people are typing…"
        );
    }

    #[test]
    fn links_are_found_and_only_http() {
        assert_eq!(
            segments("see https://example.com/a?b=1, ok"),
            vec![
                Segment::Text("see ".into()),
                Segment::Link("https://example.com/a?b=1".into()),
                Segment::Text(", ok".into())
            ]
        );
        assert_eq!(
            segments("javascript:alert(1)"),
            vec![Segment::Text("javascript:alert(1)".into())]
        );
        assert_eq!(
            segments("<img src=x onerror=alert(1)>"),
            vec![Segment::Text("<img src=x onerror=alert(1)>".into())]
        );
        assert_eq!(
            segments("(http://a.b)"),
            vec![
                Segment::Text("(".into()),
                Segment::Link("http://a.b".into()),
                Segment::Text(")".into())
            ]
        );
    }

    #[test]
    fn grouping_and_days() {
        let ada = user(1, "Ada");
        let t = 1_700_000_000_000;
        assert!(continues_group(
            Some((&ada, MessageKind::Text, t)),
            &ada,
            MessageKind::Text,
            t + 60_000
        ));
        assert!(!continues_group(
            Some((&ada, MessageKind::Text, t)),
            &ada,
            MessageKind::Text,
            t + GROUP_WINDOW_MS
        ));
        assert!(!continues_group(
            Some((&ada, MessageKind::Join, t)),
            &ada,
            MessageKind::Text,
            t + 1
        ));
        assert_eq!(day_label(t, t), "Today");
        assert_eq!(day_label(t - 86_400_000, t), "Yesterday");
        assert_eq!(day_label(0, t), "1970-01-01");
        assert_eq!(clock_time(0), "00:00");
    }
}
