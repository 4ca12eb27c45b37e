-- Rooms, who is in them, and which room each message belongs to.
--
-- A room's name is kept as it was created ('#Homework'); name_key is that
-- name with A-Z folded to a-z, as for accounts, and it is what makes a name
-- unique. Only live rooms have a name_key: deleting a room sets it to NULL
-- (UNIQUE lets any number of rows have NULL), so a new room of the same name
-- can be created later, beside the old row. A deleted room is deleted one of
-- two ways (Store.delete_room):
--   * history removed: its messages, memberships and row are deleted;
--   * history kept: its memberships are deleted and name_key set to NULL;
--     the row and its messages stay, so they can still be read by room id
--     (an operator's export, a legal hold), but no name leads to it, no
--     account is in it and nobody can join it.
-- AUTOINCREMENT: a room id is never reused, so an id held by a client or a
-- log always means the same room.
CREATE TABLE rooms (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    name_key TEXT UNIQUE,
    topic TEXT NOT NULL DEFAULT '',
    topic_set_by TEXT,
    topic_set_at TEXT,
    created_at TEXT NOT NULL
);

-- Membership belongs to the account, not to a connection: it outlives
-- logins and restarts. The primary key serves "rooms of account A"; the
-- index, "members of room R".
CREATE TABLE memberships (
    account_id INTEGER NOT NULL REFERENCES users(id),
    room_id INTEGER NOT NULL REFERENCES rooms(id),
    joined_at TEXT NOT NULL,
    PRIMARY KEY (account_id, room_id)
);

CREATE INDEX memberships_by_room ON memberships(room_id, account_id);

-- room_id is set for a room message, NULL for a private one (whose
-- recipient_id is set). Ids stay one sequence for every room and
-- conversation, so one after=<id> catches up on all of them.
ALTER TABLE messages ADD COLUMN room_id INTEGER REFERENCES rooms(id);

-- v0.1.0 had one room: its messages (no recipient) go to #general, which
-- has existed since the first account was registered, and every account
-- is in it since its registration. (Before the indexes below: building an
-- index over the rows once is cheaper than updating it row by row.)
INSERT INTO rooms (name, name_key, topic, created_at)
SELECT '#general', '#general', '', COALESCE(MIN(created_at), strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
FROM users;

UPDATE messages SET room_id = (SELECT id FROM rooms WHERE name_key = '#general')
WHERE recipient_id IS NULL;

INSERT INTO memberships (account_id, room_id, joined_at)
SELECT users.id, rooms.id, users.created_at FROM users JOIN rooms ON rooms.name_key = '#general';

-- Each message index is partial: a message is written into only those
-- that can find it, so a room message (most of them) costs one index entry,
-- as it did in v0.1.0, and a private message two. A query uses a partial
-- index only where its own WHERE implies the index's: "room_id = ?" implies
-- "room_id IS NOT NULL", and so on.

-- History of room R (last N, before id, after id): one range of this index.
CREATE INDEX messages_by_room ON messages(room_id, id) WHERE room_id IS NOT NULL;

-- A conversation between A and B is two ranges of this index, A to B and B
-- to A, each already in id order. It also serves "private messages from A".
CREATE INDEX messages_by_conversation ON messages(sender_id, recipient_id, id) WHERE recipient_id IS NOT NULL;

-- "Private messages to A after id". v0.1.0's index had an entry for every
-- room message too (recipient_id NULL), which nothing reads any more.
DROP INDEX messages_by_recipient;
CREATE INDEX messages_by_recipient ON messages(recipient_id, id) WHERE recipient_id IS NOT NULL;
