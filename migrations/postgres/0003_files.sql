-- Uploaded files: the same as migrations/sqlite/0005_files.sql. The bytes live in the files
-- folder shared by the nodes, under their SHA-256.
CREATE TABLE files (
    id           TEXT   PRIMARY KEY,
    sha256       TEXT   NOT NULL,
    room_id      BIGINT NOT NULL REFERENCES rooms (id),
    uploader_id  BIGINT NOT NULL REFERENCES users (id),
    name         TEXT   NOT NULL,
    mime         TEXT   NOT NULL,
    size         BIGINT NOT NULL,
    width        BIGINT,
    height       BIGINT,
    thumb_sha256 TEXT,
    message_id   BIGINT REFERENCES messages (id),
    created_at   BIGINT NOT NULL
);

CREATE INDEX files_by_message ON files (message_id);

ALTER TABLE messages ADD COLUMN attachments TEXT NOT NULL DEFAULT '';
