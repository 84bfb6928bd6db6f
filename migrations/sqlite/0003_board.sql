-- Whiteboards: one row per batch of a stroke. A room's board_seq orders segments, undos and
-- clears together, so a client can merge a snapshot with live events without gaps or doubles.
CREATE TABLE board_segments (
    room_id   INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    seq       INTEGER NOT NULL,
    author_id INTEGER NOT NULL REFERENCES users (id),
    stroke    INTEGER NOT NULL,
    color     TEXT    NOT NULL,
    width     INTEGER NOT NULL,
    points    TEXT    NOT NULL, -- JSON [[x, y], ...] in board units
    PRIMARY KEY (room_id, seq)
) WITHOUT ROWID;

CREATE INDEX board_segments_by_author ON board_segments (room_id, author_id, seq);

ALTER TABLE rooms ADD COLUMN board_seq INTEGER NOT NULL DEFAULT 0;
