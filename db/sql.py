"""The SQL both backends run, written once.

The statements use SQLite's ``?`` placeholders; mysqlclient wants ``%s``,
and ``for_mysql`` makes that one change (no statement here has a ``?`` or a
``%`` of its own). Where the dialects really differ (schema, migrations, a
multi-row INSERT, session settings) the backend keeps its own SQL.
"""

ACCOUNT_COLUMNS = "id, name, password_hash, created_at, ban_reason"

INSERT_ACCOUNT = "INSERT INTO users (name, name_key, password_hash, created_at) VALUES (?, ?, ?, ?)"
FIND_ACCOUNT = "SELECT " + ACCOUNT_COLUMNS + " FROM users WHERE name_key = ?"
FIND_RECIPIENT = "SELECT id, name FROM users WHERE name_key = ?"
INSERT_MESSAGE = "INSERT INTO messages (sender_id, recipient_id, body, created_at) VALUES (?, ?, ?, ?)"
SET_BAN = "UPDATE users SET ban_reason = ?, banned_at = ? WHERE name_key = ?"
BANNED_ACCOUNTS = "SELECT " + ACCOUNT_COLUMNS + " FROM users WHERE ban_reason IS NOT NULL ORDER BY name_key"

# Room messages (no recipient) with their sender's name, in three shapes:
# the first after an id (oldest first), the last before an id, the last of
# all (both newest first: the caller reverses them).
_ROOM = ("SELECT m.id, m.created_at, u.name, NULL, m.body FROM messages m"
         " JOIN users u ON u.id = m.sender_id WHERE m.recipient_id IS NULL")
ROOM_AFTER = _ROOM + " AND m.id > ? ORDER BY m.id LIMIT ?"
ROOM_BEFORE = _ROOM + " AND m.id < ? ORDER BY m.id DESC LIMIT ?"
ROOM_LATEST = _ROOM + " ORDER BY m.id DESC LIMIT ?"


def room_history_query(count, before=None, after=None):
    """(statement, parameters, newest_first) for Store.room_history."""
    if after is not None:
        return ROOM_AFTER, (after, count), False
    if before is not None:
        return ROOM_BEFORE, (before, count), True
    return ROOM_LATEST, (count,), True


def for_mysql(statement: str) -> str:
    return statement.replace("?", "%s")
