-- Several servers on one database (--cluster): the chain of stored batches.
--
-- Two servers committing at once can make their auto-increment ids visible
-- out of order: a reader may see id 12 before id 11 is committed, and a
-- client that then asks for what came after 12 never sees 11. So a server in
-- a cluster stores each batch of messages while holding a lock on this one
-- row (SELECT ... FOR UPDATE): the batch's ids are taken and committed
-- before the next batch, from any server, can take any. last_id is the
-- highest id stored so far; each batch reads it (the previous link) and
-- writes its own highest id, so every batch is the range (previous, last]
-- of ids, commit order is id order, and a server that hears of a batch
-- whose previous link it has not seen knows exactly which ids it missed and
-- that all of them are committed already.
--
-- A single server does not use it; it only has to be right when a cluster
-- starts, so it starts from the messages already stored.
CREATE TABLE message_chain (
    id TINYINT NOT NULL PRIMARY KEY,
    last_id BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

INSERT INTO message_chain (id, last_id) SELECT 1, COALESCE(MAX(id), 0) FROM messages;
