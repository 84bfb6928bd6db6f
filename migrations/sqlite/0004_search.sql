-- Full-text search over live text messages (FTS5, external content: the text stays in
-- `messages`). Edits re-index; deleted messages (body erased, deleted_at set) leave the index.
CREATE VIRTUAL TABLE messages_fts USING fts5(
    body,
    content = 'messages',
    content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 2'
);

INSERT INTO messages_fts (rowid, body)
SELECT id, body FROM messages WHERE kind = 'text' AND deleted_at IS NULL;

CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages WHEN NEW.kind = 'text'
BEGIN
    INSERT INTO messages_fts (rowid, body) VALUES (NEW.id, NEW.body);
END;

CREATE TRIGGER messages_fts_update AFTER UPDATE OF body, deleted_at ON messages
WHEN OLD.kind = 'text'
BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body)
    SELECT 'delete', OLD.id, OLD.body WHERE OLD.deleted_at IS NULL;
    INSERT INTO messages_fts (rowid, body)
    SELECT NEW.id, NEW.body WHERE NEW.deleted_at IS NULL;
END;
