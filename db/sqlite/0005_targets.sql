-- What IRC's CHATHISTORY TARGETS reads.
--
-- TARGETS lists an account's conversations whose latest message falls
-- between two times, ordered by that message. A room's latest message is
-- one seek of messages_by_room, and an account is in few rooms. Its private
-- conversations are another matter: the peers it wrote to are found only by
-- reading every private message it ever sent (messages_by_conversation
-- starts with the sender and the recipient, not the time), and those who
-- wrote to it not at all. So each conversation is a row here, once per side
-- (A's row for B, B's row for A; one row for a conversation with oneself),
-- with the id of its latest message, kept in the transaction that stores
-- the batch (Store.append_messages): a batch costs one upsert per side of
-- each conversation it holds, a batch of room messages nothing. An
-- account's conversations with activity in a window of ids are then one
-- range of conversations_by_activity, in id order. Ids, not times: a
-- time becomes an id as for every history read (sql.ids_at: ids grow with
-- time, so a bisection of the primary key finds it, and no index on
-- created_at makes every message stored pay for it).
-- WITHOUT ROWID: the rows are small and always found by their key.
CREATE TABLE conversations (
    account_id INTEGER NOT NULL REFERENCES users(id),
    peer_id INTEGER NOT NULL REFERENCES users(id),
    last_id INTEGER NOT NULL,
    PRIMARY KEY (account_id, peer_id)
) WITHOUT ROWID;

-- The conversations so far, from the private messages stored (before the
-- index, which is cheaper to build once than row by row).
INSERT INTO conversations (account_id, peer_id, last_id)
SELECT account_id, peer_id, MAX(id) FROM (
    SELECT sender_id AS account_id, recipient_id AS peer_id, id FROM messages WHERE recipient_id IS NOT NULL
    UNION ALL
    SELECT recipient_id, sender_id, id FROM messages WHERE recipient_id IS NOT NULL AND recipient_id <> sender_id
) AS private GROUP BY account_id, peer_id;

CREATE INDEX conversations_by_activity ON conversations(account_id, last_id);
