-- Rooms whose whiteboard any member may clear (not only owners and moderators). `general`,
-- everyone's room with no owner, is one: as in the seeds' drawing app, anyone clears it.
ALTER TABLE rooms ADD COLUMN board_open INTEGER NOT NULL DEFAULT 0;
UPDATE rooms SET board_open = 1 WHERE name_key = 'general';
