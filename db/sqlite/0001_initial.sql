-- Accounts and messages. name_key is the lower-cased name: it makes names
-- unique case-insensitively the same way on every backend.
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    banned_at TEXT,
    ban_reason TEXT
);

-- AUTOINCREMENT: an id is never reused, even after the newest row is
-- deleted, so ids stay strictly increasing for clients that resume with
-- HISTORY after=<id>. recipient_id is NULL for the room.
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sender_id INTEGER NOT NULL REFERENCES users(id),
    recipient_id INTEGER REFERENCES users(id),
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE INDEX messages_by_recipient ON messages(recipient_id, id);
