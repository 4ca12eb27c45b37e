-- The same schema as sqlite/0001_initial.sql, in MariaDB/MySQL's dialect:
-- same tables, columns and meaning. Differences are only of type:
--   * timestamps are DATETIME(3) in UTC (the session runs with time_zone
--     '+00:00'); the store converts to and from the text form
--     2026-11-24T13:05:01.123Z at its boundary;
--   * text is utf8mb4 (emoji take four bytes) with the binary collation, so
--     that comparing and sorting behave as in SQLite; name_key, the
--     lower-cased name, is what makes names unique case-insensitively;
--   * InnoDB for transactions and foreign keys. Its AUTO_INCREMENT counter
--     is persistent since MariaDB 10.2.4 / MySQL 8.0, so a message id is
--     never reused, as with SQLite's AUTOINCREMENT.
-- Names are at most 32 characters in the protocol; 255 leaves room.
-- DDL commits implicitly in MySQL, so a migration is not atomic; plain
-- CREATE TABLE (no IF NOT EXISTS) makes start-up stop with a clear error
-- instead of mixing our tables with someone else's "users" table.
CREATE TABLE users (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(255) NOT NULL,
    name_key VARCHAR(255) NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at DATETIME(3) NOT NULL,
    banned_at DATETIME(3) NULL,
    ban_reason TEXT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- recipient_id is NULL for the room. The index is declared inside the table
-- so that the foreign key uses it instead of adding one of its own.
CREATE TABLE messages (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    sender_id BIGINT NOT NULL,
    recipient_id BIGINT NULL,
    body TEXT NOT NULL,
    created_at DATETIME(3) NOT NULL,
    KEY messages_by_recipient (recipient_id, id),
    CONSTRAINT messages_sender FOREIGN KEY (sender_id) REFERENCES users (id),
    CONSTRAINT messages_recipient FOREIGN KEY (recipient_id) REFERENCES users (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
