-- The same migration as sqlite/0002_rooms.sql, in MariaDB/MySQL's dialect:
-- same tables, columns, indexes and meaning (see there for the why of each);
-- types as in 0001 (DATETIME(3) in UTC, utf8mb4 with the binary collation).
--
-- Deleting a room: only live rooms have a name_key; deleting one sets it to
-- NULL (a UNIQUE column holds any number of NULLs), so a room of the same
-- name can be created again. With its history removed, the room's messages,
-- memberships and row are deleted; with its history kept, its memberships
-- are deleted and the row and messages stay, reachable by room id only.
--
-- DDL commits implicitly in MySQL: the three DDL statements come first, and
-- the data (the #general room, its messages and members) follows in one
-- transaction, committed together with the new schema_version.
CREATE TABLE rooms (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(255) NOT NULL,
    name_key VARCHAR(255) NULL UNIQUE,
    topic TEXT NOT NULL,
    topic_set_by VARCHAR(255) NULL,
    topic_set_at DATETIME(3) NULL,
    created_at DATETIME(3) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE memberships (
    account_id BIGINT NOT NULL,
    room_id BIGINT NOT NULL,
    joined_at DATETIME(3) NOT NULL,
    PRIMARY KEY (account_id, room_id),
    KEY memberships_by_room (room_id, account_id),
    CONSTRAINT memberships_account FOREIGN KEY (account_id) REFERENCES users (id),
    CONSTRAINT memberships_room FOREIGN KEY (room_id) REFERENCES rooms (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- messages_by_conversation starts with sender_id, so it also serves the
-- sender's foreign key, and the index InnoDB made for that key in 0001
-- (named after the constraint) goes: one index fewer to write per message.
ALTER TABLE messages
    ADD COLUMN room_id BIGINT NULL,
    ADD KEY messages_by_room (room_id, id),
    ADD KEY messages_by_conversation (sender_id, recipient_id, id),
    ADD CONSTRAINT messages_room FOREIGN KEY (room_id) REFERENCES rooms (id),
    DROP KEY messages_sender;

INSERT INTO rooms (name, name_key, topic, created_at)
SELECT '#general', '#general', '', COALESCE(MIN(created_at), UTC_TIMESTAMP(3))
FROM users;

UPDATE messages SET room_id = (SELECT id FROM rooms WHERE name_key = '#general')
WHERE recipient_id IS NULL;

INSERT INTO memberships (account_id, room_id, joined_at)
SELECT users.id, rooms.id, users.created_at FROM users JOIN rooms ON rooms.name_key = '#general';
