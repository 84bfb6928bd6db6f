-- Counters kept beside each room so hot paths read one row instead of counting many.

-- A room's last_seq follows its newest message, so one INSERT that reads last_seq + 1 both
-- takes the next seq and (through this trigger) advances it: appending a message is one
-- statement. UNIQUE (room_id, seq) still refuses any gap-filling or duplicate.
CREATE TRIGGER messages_advance_room_seq AFTER INSERT ON messages
BEGIN
    UPDATE rooms SET last_seq = NEW.seq WHERE id = NEW.room_id;
END;

-- Member counts are read on every hello; counting a 20,000-member room each time made
-- sign-in quadratic. The count is kept beside the room instead.
ALTER TABLE rooms ADD COLUMN member_count INTEGER NOT NULL DEFAULT 0;
UPDATE rooms SET member_count = (SELECT COUNT(*) FROM memberships m WHERE m.room_id = rooms.id);

CREATE TRIGGER memberships_count_join AFTER INSERT ON memberships
BEGIN
    UPDATE rooms SET member_count = member_count + 1 WHERE id = NEW.room_id;
END;

CREATE TRIGGER memberships_count_leave AFTER DELETE ON memberships
BEGIN
    UPDATE rooms SET member_count = member_count - 1 WHERE id = OLD.room_id;
END;
