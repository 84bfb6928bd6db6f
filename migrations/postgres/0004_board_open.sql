-- The same as migrations/sqlite/0006_board_open.sql.
ALTER TABLE rooms ADD COLUMN board_open BIGINT NOT NULL DEFAULT 0;
UPDATE rooms SET board_open = 1 WHERE name_key = 'general';
