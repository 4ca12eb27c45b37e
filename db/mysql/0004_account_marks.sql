-- The same columns as sqlite/0004_account_marks.sql (see there for the why).
ALTER TABLE users ADD COLUMN offline_after_id BIGINT NULL;
ALTER TABLE users ADD COLUMN private_from_id BIGINT NULL;
