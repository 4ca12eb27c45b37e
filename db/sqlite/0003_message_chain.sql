-- The same table as mysql/0003_message_chain.sql (see there for the why),
-- so that both backends have one schema. A cluster of servers needs a
-- database they can all reach, so on SQLite it is never used.
CREATE TABLE message_chain (
    id INTEGER NOT NULL PRIMARY KEY,
    last_id INTEGER NOT NULL
);

INSERT INTO message_chain (id, last_id) SELECT 1, COALESCE(MAX(id), 0) FROM messages;
