-- Huddle schema, SQLite. Times are Unix milliseconds.

CREATE TABLE users (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL,
    -- lower-cased name: display names are unique, case-insensitively
    name_key    TEXT    NOT NULL UNIQUE,
    -- argon2id PHC string for registered accounts; NULL for guests (who cannot log in again)
    password_hash TEXT,
    created_at  INTEGER NOT NULL
);

-- One row per signed-in browser or client; the session token (a JWT) names its id. Logging
-- out deletes the row, which invalidates the token before it expires.
CREATE TABLE sessions (
    id         TEXT    PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX sessions_by_user ON sessions (user_id);

CREATE TABLE rooms (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    -- lower-cased name for public/private rooms; 'dm:<low id>:<high id>' for direct rooms
    name_key   TEXT    NOT NULL UNIQUE,
    kind       TEXT    NOT NULL CHECK (kind IN ('public', 'private', 'direct')),
    topic      TEXT    NOT NULL DEFAULT '',
    created_by INTEGER REFERENCES users (id),
    created_at INTEGER NOT NULL,
    -- newest assigned sequence number; bumped in the same transaction as each insert
    last_seq   INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE memberships (
    room_id       INTEGER NOT NULL REFERENCES rooms (id),
    user_id       INTEGER NOT NULL REFERENCES users (id),
    joined_at     INTEGER NOT NULL,
    last_read_seq INTEGER NOT NULL DEFAULT 0,
    -- owners (room creators) and moderators delete any message, kick and ban
    role          TEXT    NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'moderator', 'member')),
    PRIMARY KEY (room_id, user_id)
) WITHOUT ROWID;

-- Banned users cannot join the room again.
CREATE TABLE bans (
    room_id    INTEGER NOT NULL REFERENCES rooms (id),
    user_id    INTEGER NOT NULL REFERENCES users (id),
    banned_by  INTEGER NOT NULL REFERENCES users (id),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
) WITHOUT ROWID;

CREATE INDEX memberships_by_user ON memberships (user_id);

CREATE TABLE messages (
    id            INTEGER PRIMARY KEY,
    room_id       INTEGER NOT NULL REFERENCES rooms (id),
    seq           INTEGER NOT NULL,
    author_id     INTEGER NOT NULL REFERENCES users (id),
    -- set for text messages; null for system lines (joins, leaves)
    client_msg_id TEXT,
    -- edit/delete/kick/ban are events in the room's sequence, so a resume replays them too
    kind          TEXT    NOT NULL CHECK (kind IN ('text', 'join', 'leave', 'created', 'edit', 'delete', 'kick', 'ban')),
    body          TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    -- on text messages: when last edited / deleted (a deleted message keeps no body)
    edited_at     INTEGER,
    deleted_at    INTEGER,
    -- on edit/delete events: the message they change; on kick/ban: who was removed
    target_seq    INTEGER,
    target_user_id INTEGER REFERENCES users (id),
    UNIQUE (room_id, seq),
    UNIQUE (author_id, client_msg_id)
);

INSERT INTO rooms (name, name_key, kind, topic, created_at)
VALUES ('general', 'general', 'public', 'Everyone is here', 0);
