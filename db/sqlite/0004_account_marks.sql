-- Two message ids kept with each account, both NULL until first set.
--
-- offline_after_id: the highest message id when the account last had no
-- session left (on any server of a cluster). The private messages to it with
-- a higher id came while it was away, and an IRC login replays them
-- (Store.went_offline, Store.missed_private).
--
-- private_from_id: the account's private conversations start after this id
-- for it; what is older was someone else's. An IRC guest's account (its
-- password hash the guest mark) is taken by whoever connects with that nick
-- while it is free, and registered by whoever asks first: each new holder
-- starts here (Store.start_private_history), so that it cannot read the
-- private messages of the ones before it. The other side of a conversation
-- keeps all of it.
ALTER TABLE users ADD COLUMN offline_after_id INTEGER;
ALTER TABLE users ADD COLUMN private_from_id INTEGER;
