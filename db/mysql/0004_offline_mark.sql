-- The same column as sqlite/0004_offline_mark.sql (see there for the why).
ALTER TABLE users ADD COLUMN offline_after_id BIGINT NULL;
