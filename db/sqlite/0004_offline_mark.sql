-- The highest message id when the account last had no session left (on
-- any server of a cluster): the private messages to it with a higher id
-- came while it was away, and an IRC login replays them (Store.went_offline,
-- Store.missed_private). NULL until it first goes offline: nothing known.
ALTER TABLE users ADD COLUMN offline_after_id INTEGER;
