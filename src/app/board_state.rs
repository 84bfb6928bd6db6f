//! The browser's view of the open whiteboard: the picture (stroke batches in board order),
//! merging the stored picture with live changes by board seq, who is drawing, and the
//! chosen colour and width. Pure state: painting and pointer input live in `board.rs`.

use crate::protocol::{rules, BoardSegment, RoomId, ServerMsg, Timestamp, UserId, UserRef};
use leptos::prelude::*;

/// Someone counts as drawing this long after their last batch arrived.
pub const DRAWING_SHOWN_MS: Timestamp = 2000;

/// Widths offered, in board units: (label, width).
pub const BOARD_WIDTHS: [(&str, u16); 3] = [("Thin", 15), ("Medium", 40), ("Thick", 100)];

/// Names for the palette colours, in `rules::BOARD_PALETTE` order.
pub const PALETTE_NAMES: [&str; 8] = [
    "Ink", "Red", "Orange", "Yellow", "Green", "Teal", "Blue", "Purple",
];

/// A picture on its way: the frames so far and live events that arrived meanwhile.
#[derive(Default)]
struct Loading {
    segments: Vec<BoardSegment>,
    held: Vec<ServerMsg>,
}

#[derive(Clone, Copy)]
pub struct BoardState {
    /// The room whose board is open, if any.
    pub room: RwSignal<Option<RoomId>>,
    /// The picture in board order (live batches may arrive slightly out of order).
    pub segments: RwSignal<Vec<BoardSegment>>,
    /// Bumped when the picture must be repainted from scratch (loaded, undo, clear).
    pub repaint: RwSignal<u64>,
    /// The stored picture has arrived.
    pub loaded: RwSignal<bool>,
    /// Others who drew recently, with when their last batch arrived.
    pub drawers: RwSignal<Vec<(UserRef, Timestamp)>>,
    /// Picked colour; None draws in the user's default colour.
    pub color: RwSignal<Option<&'static str>>,
    pub width: RwSignal<u16>,
    loading: StoredValue<Option<Loading>>,
    /// Batches with a seq below this were cleared.
    cleared_before: StoredValue<i64>,
}

impl BoardState {
    pub fn new() -> Self {
        BoardState {
            room: RwSignal::new(None),
            segments: RwSignal::new(Vec::new()),
            repaint: RwSignal::new(0),
            loaded: RwSignal::new(false),
            drawers: RwSignal::new(Vec::new()),
            color: RwSignal::new(None),
            width: RwSignal::new(BOARD_WIDTHS[1].1),
            loading: StoredValue::new(None),
            cleared_before: StoredValue::new(0),
        }
    }

    /// The colour `me` draws in now.
    pub fn color_for(&self, me: UserId) -> &'static str {
        self.color.get().unwrap_or_else(|| rules::default_board_color(me))
    }

    /// Starts (re)loading the picture of `room`; the caller sends `open_board`.
    pub fn begin_loading(&self, room: RoomId) {
        self.room.set(Some(room));
        self.loaded.set(false);
        self.loading.set_value(Some(Loading::default()));
    }

    pub fn close(&self) {
        self.room.set(None);
        self.loading.set_value(None);
        self.segments.set(Vec::new());
        self.drawers.set(Vec::new());
        self.loaded.set(false);
    }

    /// One frame of the stored picture; the last one installs it and replays held events.
    pub fn on_picture(
        &self,
        room: RoomId,
        segments: Vec<BoardSegment>,
        upto: i64,
        more: bool,
        now: Timestamp,
    ) {
        if self.room.get_untracked() != Some(room) {
            return;
        }
        let mut loading = self
            .loading
            .try_update_value(Option::take)
            .flatten()
            .unwrap_or_default();
        loading.segments.extend(segments);
        if more {
            self.loading.set_value(Some(loading));
            return;
        }
        self.cleared_before.set_value(0);
        self.segments.set(loading.segments);
        for event in loading.held {
            if event_seq(&event) > upto {
                self.apply(event, now);
            }
        }
        self.loaded.set(true);
        self.repaint.update(|n| *n += 1);
    }

    /// A live change: held while the picture loads, applied otherwise.
    pub fn on_event(&self, event: ServerMsg, now: Timestamp) {
        let room = match &event {
            ServerMsg::Drawn { room, .. }
            | ServerMsg::StrokeUndone { room, .. }
            | ServerMsg::BoardCleared { room, .. } => *room,
            _ => return,
        };
        if self.room.get_untracked() != Some(room) {
            return;
        }
        let held = self.loading.try_update_value(|loading| match loading {
            Some(loading) => {
                loading.held.push(event.clone());
                true
            }
            None => false,
        });
        if held != Some(true) {
            self.apply(event, now);
        }
    }

    fn apply(&self, event: ServerMsg, now: Timestamp) {
        match event {
            ServerMsg::Drawn { segment, .. } => {
                if segment.seq < self.cleared_before.get_value() {
                    return;
                }
                let author = segment.author.clone();
                self.drawers.update(|drawers| {
                    drawers.retain(|(u, _)| u.id != author.id);
                    drawers.push((author, now));
                });
                self.segments.update(|s| s.push(segment));
            }
            ServerMsg::StrokeUndone { author, stroke, .. } => {
                self.segments
                    .update(|s| s.retain(|seg| !(seg.author.id == author && seg.stroke == stroke)));
                self.repaint.update(|n| *n += 1);
            }
            ServerMsg::BoardCleared { seq, .. } => {
                self.cleared_before.set_value(seq);
                self.segments.update(|s| s.retain(|seg| seg.seq > seq));
                self.repaint.update(|n| *n += 1);
            }
            _ => {}
        }
    }

    /// Names of others who drew in the last [`DRAWING_SHOWN_MS`], for "drawing now".
    pub fn drawing_now(&self, me: Option<UserId>, now: Timestamp) -> Vec<String> {
        self.drawers.with(|drawers| {
            drawers
                .iter()
                .filter(|(u, at)| Some(u.id) != me && now - at < DRAWING_SHOWN_MS)
                .map(|(u, _)| u.name.clone())
                .collect()
        })
    }
}

impl Default for BoardState {
    fn default() -> Self {
        Self::new()
    }
}

fn event_seq(event: &ServerMsg) -> i64 {
    match event {
        ServerMsg::Drawn { segment, .. } => segment.seq,
        ServerMsg::StrokeUndone { seq, .. } | ServerMsg::BoardCleared { seq, .. } => *seq,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(seq: i64, author: i64, stroke: u32) -> BoardSegment {
        BoardSegment {
            seq,
            author: UserRef {
                id: UserId(author),
                name: format!("u{author}"),
            },
            stroke,
            color: "#000000".into(),
            width: 40,
            points: vec![[1, 1]],
        }
    }

    fn seqs(board: &BoardState) -> Vec<i64> {
        board
            .segments
            .with_untracked(|s| s.iter().map(|s| s.seq).collect())
    }

    #[test]
    fn live_events_during_loading_are_merged_by_seq_once() {
        Owner::new().with(live_events_during_loading_are_merged_by_seq_once_body);
    }

    fn live_events_during_loading_are_merged_by_seq_once_body() {
        let board = BoardState::new();
        let room = RoomId(1);
        board.begin_loading(room);
        // Arrive before the picture: one already in it (seq 2), one newer (seq 3).
        board.on_event(
            ServerMsg::Drawn {
                room,
                segment: segment(2, 7, 1),
            },
            0,
        );
        board.on_event(
            ServerMsg::Drawn {
                room,
                segment: segment(3, 8, 4),
            },
            0,
        );
        board.on_picture(room, vec![segment(1, 7, 1)], 0, true, 0);
        assert!(!board.loaded.get_untracked());
        board.on_picture(room, vec![segment(2, 7, 1)], 2, false, 0);
        assert!(board.loaded.get_untracked());
        assert_eq!(seqs(&board), [1, 2, 3]);
        // Other rooms' events are ignored.
        board.on_event(
            ServerMsg::Drawn {
                room: RoomId(2),
                segment: segment(9, 7, 1),
            },
            0,
        );
        assert_eq!(seqs(&board), [1, 2, 3]);
    }

    #[test]
    fn undo_removes_one_stroke_and_clear_drops_everything_older() {
        Owner::new().with(undo_and_clear_body);
    }

    fn undo_and_clear_body() {
        let board = BoardState::new();
        let room = RoomId(1);
        board.begin_loading(room);
        board.on_picture(
            room,
            vec![
                segment(1, 7, 1),
                segment(2, 7, 1),
                segment(3, 8, 1),
                segment(4, 7, 2),
            ],
            4,
            false,
            0,
        );
        board.on_event(
            ServerMsg::StrokeUndone {
                room,
                seq: 5,
                author: UserId(7),
                stroke: 1,
            },
            0,
        );
        assert_eq!(seqs(&board), [3, 4]);
        let by = UserRef {
            id: UserId(7),
            name: "u7".into(),
        };
        board.on_event(ServerMsg::BoardCleared { room, seq: 6, by }, 0);
        assert!(seqs(&board).is_empty());
        // A batch committed before the clear but delivered after it stays gone.
        board.on_event(
            ServerMsg::Drawn {
                room,
                segment: segment(5, 8, 3),
            },
            0,
        );
        board.on_event(
            ServerMsg::Drawn {
                room,
                segment: segment(7, 8, 3),
            },
            100,
        );
        assert_eq!(seqs(&board), [7]);
        assert_eq!(board.drawing_now(Some(UserId(7)), 1000), ["u8"]);
        assert!(board
            .drawing_now(Some(UserId(7)), 100 + DRAWING_SHOWN_MS)
            .is_empty());
    }
}
