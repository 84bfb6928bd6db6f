-- Uploaded files. The bytes live in the files folder under their SHA-256 (the same bytes are
-- stored once); a row is one upload into one room, with a random id that names it in URLs
-- (knowing a file's hash grants nothing). Sending a message attaches the uploader's unsent
-- files to it; only members of the room fetch them, and not once the message is deleted.
CREATE TABLE files (
    id           TEXT    PRIMARY KEY,
    sha256       TEXT    NOT NULL,
    room_id      INTEGER NOT NULL REFERENCES rooms (id),
    uploader_id  INTEGER NOT NULL REFERENCES users (id),
    name         TEXT    NOT NULL,
    mime         TEXT    NOT NULL,
    size         INTEGER NOT NULL,
    width        INTEGER,
    height       INTEGER,
    -- SHA-256 of the preview image (images only)
    thumb_sha256 TEXT,
    message_id   INTEGER REFERENCES messages (id),
    created_at   INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX files_by_message ON files (message_id);

-- The attachments of a message as the clients see them (JSON array; '' for none), kept with
-- the message so timelines read one row per message.
ALTER TABLE messages ADD COLUMN attachments TEXT NOT NULL DEFAULT '';
