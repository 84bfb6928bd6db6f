-- Full-text search over live text messages: a generated tsvector with a GIN index. The
-- configuration `huddle` is 'simple' (no stemming, so any language matches word for word)
-- with accents removed, as SQLite's FTS5 unicode61 tokenizer does. Deleted messages have none.
CREATE EXTENSION IF NOT EXISTS unaccent;
CREATE TEXT SEARCH CONFIGURATION huddle (COPY = simple);
ALTER TEXT SEARCH CONFIGURATION huddle
    ALTER MAPPING FOR asciiword, asciihword, hword_asciipart, word, hword, hword_part
    WITH unaccent, simple;

ALTER TABLE messages ADD COLUMN search tsvector GENERATED ALWAYS AS (
    CASE WHEN kind = 'text' AND deleted_at IS NULL THEN to_tsvector('huddle', body) END
) STORED;

CREATE INDEX messages_search ON messages USING GIN (search);
