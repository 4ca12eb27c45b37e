-- The same table and index as sqlite/0005_targets.sql (see there for the
-- why), in MariaDB/MySQL's dialect. The foreign key on peer_id gets an index
-- of its own from InnoDB (named after the constraint); it is written only
-- when a conversation starts, not for each message.
--
-- DDL commits implicitly in MySQL: the DDL comes first, and the data (the
-- conversations so far) follows in one transaction, committed together
-- with the new schema_version.
CREATE TABLE conversations (
    account_id BIGINT NOT NULL,
    peer_id BIGINT NOT NULL,
    last_id BIGINT NOT NULL,
    PRIMARY KEY (account_id, peer_id),
    KEY conversations_by_activity (account_id, last_id),
    CONSTRAINT conversations_account FOREIGN KEY (account_id) REFERENCES users (id),
    CONSTRAINT conversations_peer FOREIGN KEY (peer_id) REFERENCES users (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

INSERT INTO conversations (account_id, peer_id, last_id)
SELECT account_id, peer_id, MAX(id) FROM (
    SELECT sender_id AS account_id, recipient_id AS peer_id, id FROM messages WHERE recipient_id IS NOT NULL
    UNION ALL
    SELECT recipient_id, sender_id, id FROM messages WHERE recipient_id IS NOT NULL AND recipient_id <> sender_id
) AS private GROUP BY account_id, peer_id;
