-- Search indexing leaves the send path: indexing one message per transaction cost as much as
-- storing it (FTS5 writes a segment per transaction). New messages are indexed in batches by
-- the writer (at least once a second, and before any search or mention query), up to
-- `indexed_upto`. An edit or delete touches the index only for messages already in it; the
-- others are indexed later with their text as it is then.
CREATE TABLE search_progress (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    indexed_upto INTEGER NOT NULL
);
INSERT INTO search_progress (id, indexed_upto) SELECT 1, COALESCE(MAX(id), 0) FROM messages;

DROP TRIGGER messages_fts_insert;
DROP TRIGGER messages_fts_update;

CREATE TRIGGER messages_fts_update AFTER UPDATE OF body, deleted_at ON messages
WHEN OLD.kind = 'text' AND OLD.id <= (SELECT indexed_upto FROM search_progress)
BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body)
    SELECT 'delete', OLD.id, OLD.body WHERE OLD.deleted_at IS NULL;
    INSERT INTO messages_fts (rowid, body)
    SELECT NEW.id, NEW.body WHERE NEW.deleted_at IS NULL;
END;
