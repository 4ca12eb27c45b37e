"""The SQL both backends run, written once.

The statements use SQLite's ``?`` placeholders; mysqlclient wants ``%s``,
and ``for_mysql`` makes that one change (no statement here has a ``?`` or a
``%`` of its own). Where the dialects really differ (schema, migrations, a
multi-row INSERT, session settings) the backend keeps its own SQL.

Every history read has the same shape, so that each is a few ranges of an
index however many messages are stored: each source of messages (a room,
one direction of a conversation, an account's private messages) is a
*branch* that picks at most ``count`` ids from one index range, already in
id order; the branches are put together with UNION ALL, and only the ids
picked are joined to their senders, recipients and rooms, sorted and cut to
``count``. A LIMIT inside each branch is what keeps the work bounded: with
one ORDER BY over all the sources, the database would have to read every
message of every source after ``after`` before it could sort them.
"""

from typing import Callable, List, Optional, Sequence, Tuple

ACCOUNT_COLUMNS = "id, name, password_hash, created_at, ban_reason"

INSERT_ACCOUNT = "INSERT INTO users (name, name_key, password_hash, created_at) VALUES (?, ?, ?, ?)"
FIND_ACCOUNT = "SELECT " + ACCOUNT_COLUMNS + " FROM users WHERE name_key = ?"
FIND_RECIPIENT = "SELECT id, name FROM users WHERE name_key = ?"
INSERT_MESSAGE = "INSERT INTO messages (sender_id, recipient_id, room_id, body, created_at) VALUES (?, ?, ?, ?, ?)"
SET_BAN = "UPDATE users SET ban_reason = ?, banned_at = ? WHERE name_key = ?"
LAST_MESSAGE_ID = "SELECT COALESCE(MAX(id), 0) FROM messages"
REPLACE_PASSWORD = "UPDATE users SET password_hash = ? WHERE name_key = ? AND password_hash = ?"
# Where "while away" and an account's private history start (migration
# 0004). MAX(id) is the end of the primary key: one seek.
LAST_ID = "(" + LAST_MESSAGE_ID + ")"
MARK_OFFLINE = "UPDATE users SET offline_after_id = " + LAST_ID + " WHERE id = ?"
OFFLINE_AFTER = "SELECT offline_after_id FROM users WHERE id = ?"
# A new holder of the account has missed nothing of the old one's either.
START_PRIVATE_HISTORY = "UPDATE users SET private_from_id = " + LAST_ID + ", offline_after_id = " + LAST_ID + \
    " WHERE id = ?"
PRIVATE_FROM = "SELECT private_from_id FROM users WHERE id = ?"
NAMES_WITH_HASH = "SELECT name FROM users WHERE password_hash = ? ORDER BY name_key"
BANNED_ACCOUNTS = "SELECT " + ACCOUNT_COLUMNS + " FROM users WHERE ban_reason IS NOT NULL ORDER BY name_key"

# -- rooms -------------------------------------------------------------------
# A live room is one with a name_key (see migration 0002).

ROOM_COLUMNS = "rooms.id, rooms.name, rooms.topic, rooms.topic_set_by, rooms.topic_set_at, rooms.created_at"
INSERT_ROOM = "INSERT INTO rooms (name, name_key, topic, created_at) VALUES (?, ?, '', ?)"
FIND_ROOM = "SELECT " + ROOM_COLUMNS + " FROM rooms WHERE name_key = ?"
FIND_ROOM_ID = "SELECT id, name FROM rooms WHERE name_key = ?"
ROOM_BY_ID = "SELECT " + ROOM_COLUMNS + " FROM rooms WHERE id = ? AND name_key IS NOT NULL"
LIST_ROOMS = ("SELECT " + ROOM_COLUMNS + ", (SELECT COUNT(*) FROM memberships WHERE memberships.room_id = rooms.id)"
              " FROM rooms WHERE name_key IS NOT NULL ORDER BY name_key")
COUNT_ROOMS = "SELECT COUNT(*) FROM rooms WHERE name_key IS NOT NULL"
# Joins only a live room; a second join breaks the primary key (IntegrityError).
JOIN_ROOM = ("INSERT INTO memberships (account_id, room_id, joined_at)"
             " SELECT ?, id, ? FROM rooms WHERE id = ? AND name_key IS NOT NULL")
LEAVE_ROOM = "DELETE FROM memberships WHERE account_id = ? AND room_id = ?"
ROOMS_OF = ("SELECT " + ROOM_COLUMNS + " FROM memberships JOIN rooms ON rooms.id = memberships.room_id"
            " WHERE memberships.account_id = ? ORDER BY memberships.joined_at, memberships.room_id")
ROOM_IDS_OF = "SELECT room_id FROM memberships WHERE account_id = ?"
COUNT_MEMBERSHIPS = "SELECT COUNT(*) FROM memberships WHERE account_id = ?"
ROOM_MEMBERS = ("SELECT users.name FROM memberships JOIN users ON users.id = memberships.account_id"
                " WHERE memberships.room_id = ? ORDER BY users.name_key")
SET_TOPIC = "UPDATE rooms SET topic = ?, topic_set_by = ?, topic_set_at = ? WHERE id = ? AND name_key IS NOT NULL"
LIVE_ROOMS_AMONG = "SELECT id, name FROM rooms WHERE name_key IS NOT NULL AND id IN (%s)"
ROOM_EXISTS = "SELECT id FROM rooms WHERE id = ?"
# Deleting: the memberships always go; then either the name (history kept)
# or the messages and the row (history removed).
DELETE_MEMBERSHIPS = "DELETE FROM memberships WHERE room_id = ?"
UNNAME_ROOM = "UPDATE rooms SET name_key = NULL WHERE id = ? AND name_key IS NOT NULL"
DELETE_ROOM_MESSAGES = "DELETE FROM messages WHERE room_id = ?"
DELETE_ROOM = "DELETE FROM rooms WHERE id = ?"


def placeholders(count: int) -> str:
    return ", ".join(["?"] * count)


def live_rooms_among(room_ids: Sequence[int]) -> str:
    return LIVE_ROOMS_AMONG % placeholders(len(room_ids))


# -- history -----------------------------------------------------------------

# A stored message as Message wants it: id, created_at, sender, recipient
# (NULL for a room message), body, room (NULL for a private message).
_MESSAGES = ("SELECT m.id, m.created_at, s.name, r.name, m.body, g.name"
             " FROM (%s) AS picked"
             " JOIN messages m ON m.id = picked.id"
             " JOIN users s ON s.id = m.sender_id"
             " LEFT JOIN users r ON r.id = m.recipient_id"
             " LEFT JOIN rooms g ON g.id = m.room_id"
             " ORDER BY m.id %s LIMIT ?")

# The sources of messages, each one range of an index (see migration 0002).
IN_ROOM = "room_id = ?"                                   # messages_by_room
FROM_TO = "sender_id = ? AND recipient_id = ?"            # messages_by_conversation
TO_ACCOUNT = "recipient_id = ?"                           # messages_by_recipient
# (A message to oneself is left to TO_ACCOUNT, or it would come twice.)
FROM_ACCOUNT = "sender_id = ? AND recipient_id IS NOT NULL AND recipient_id <> ?"  # messages_by_conversation

# What an account's own private history is limited to (private_from_id),
# added to the private branches above when it is set: the last column of
# their index, so still one range.
SINCE = " AND id > ?"

Branch = Tuple[str, tuple]  # (one of the conditions above, its parameters)


def _since(branch: Branch, since: Optional[int]) -> Branch:
    condition, parameters = branch
    return branch if since is None else (condition + SINCE, parameters + (since,))


def history_query(branches: Sequence[Branch], count: int, before: Optional[int] = None,
                  after: Optional[int] = None) -> Tuple[str, list, bool]:
    """(statement, parameters, newest_first) for the messages of all the
    branches: the first ``count`` after ``after``, or else the last
    ``count`` (before ``before`` if given). A newest-first answer is the
    caller's to reverse."""
    if after is not None:
        bound, order, bound_parameters = " AND id > ?", "", (after,)
    elif before is not None:
        bound, order, bound_parameters = " AND id < ?", " DESC", (before,)
    else:
        bound, order, bound_parameters = "", " DESC", ()
    selects: List[str] = []
    parameters: list = []
    for number, (condition, condition_parameters) in enumerate(branches):
        # Each branch in a subquery of its own: SQLite takes no ORDER BY or
        # LIMIT on a member of a UNION, MariaDB only in parentheses.
        selects.append("SELECT id FROM (SELECT id FROM messages WHERE %s%s ORDER BY id%s LIMIT ?) AS branch%d"
                       % (condition, bound, order, number))
        parameters.extend(condition_parameters)
        parameters.extend(bound_parameters)
        parameters.append(count)
    parameters.append(count)
    return _MESSAGES % (" UNION ALL ".join(selects), order.strip()), parameters, bool(order)


def room_history_query(room_id: int, count: int, before: Optional[int] = None,
                       after: Optional[int] = None) -> Tuple[str, list, bool]:
    return history_query([(IN_ROOM, (room_id,))], count, before, after)


def conversation_query(account_id: int, peer_id: int, count: int, before: Optional[int] = None,
                       after: Optional[int] = None, since: Optional[int] = None) -> Tuple[str, list, bool]:
    """The conversation as ``account_id`` may read it: from ``since`` (its
    private_from_id) on, when that is set."""
    # One branch per direction; talking to oneself is one direction only
    # (twice would show each message twice).
    branches = [(FROM_TO, (account_id, peer_id))]
    if peer_id != account_id:
        branches.append((FROM_TO, (peer_id, account_id)))
    return history_query([_since(branch, since) for branch in branches], count, before, after)


def to_account_query(account_id: int, count: int) -> Tuple[str, list, bool]:
    """The last ``count`` private messages to the account."""
    return history_query([(TO_ACCOUNT, (account_id,))], count)


def missed_since_offline(account_id: int, offline_after: Optional[int], messages: Sequence, count: int):
    """Of ``messages`` (the last count + 1 to the account, oldest first),
    those that came while it was away (none if it never went offline), the
    last ``count``; and whether there were more."""
    if offline_after is None:
        return [], False
    missed = [message for message in messages if message.id > offline_after]
    more = len(missed) > count
    return missed[-count:] if count else [], more


def missed_query(account_id: int, room_ids: Sequence[int], after: int, count: int,
                 since: Optional[int] = None) -> Tuple[str, list, bool]:
    """The messages after ``after`` in the rooms ``room_ids`` (the account's,
    read just before in the same transaction) and to or from the account
    (from ``since`` on, when set: see conversation_query)."""
    branches = [(IN_ROOM, (room_id,)) for room_id in sorted(room_ids)]
    branches.append(_since((TO_ACCOUNT, (account_id,)), since))
    branches.append(_since((FROM_ACCOUNT, (account_id, account_id)), since))
    return history_query(branches, count, after=after)


# -- conversations (CHATHISTORY TARGETS) -------------------------------------
# Each side of each private conversation, with its latest message's id
# (migration 0005), kept by the transaction that stores the batch.

def latest_in_conversations(rows: Sequence[tuple], ids: Sequence[int]) -> List[Tuple[int, int, int]]:
    """(account_id, peer_id, last_id) for each side of each conversation
    among the inserted ``rows`` (INSERT_MESSAGE's parameters, sender_id and
    recipient_id first) with their ``ids``: the batch's latest message of
    each, in key order (so that two transactions lock rows in one order)."""
    latest = {}
    for row, message_id in zip(rows, ids):
        sender_id, recipient_id = row[0], row[1]
        if recipient_id is not None:
            latest[(sender_id, recipient_id)] = message_id
            latest[(recipient_id, sender_id)] = message_id
    return sorted(key + (message_id,) for key, message_id in latest.items())


# TARGETS: the live rooms among the account's, each with its latest message
# (one seek of messages_by_room each), and the account's conversations with
# a latest message in the window (one range of conversations_by_activity, cut
# to ``count`` in id order), joined to their messages for the time, sorted
# and cut to ``count`` again. A room or conversation whose latest message is
# outside the window is left out even if it has others inside it.
_TARGET_ROOMS = ("SELECT g.name AS name,"
                 " (SELECT id FROM messages WHERE messages.room_id = g.id ORDER BY id DESC LIMIT 1) AS id"
                 " FROM rooms g WHERE g.id IN (%s) AND g.name_key IS NOT NULL")
_TARGET_PEERS = ("SELECT u.name AS name, c.last_id AS id FROM (SELECT peer_id, last_id FROM conversations"
                 " WHERE account_id = ? AND last_id > ? AND last_id < ? ORDER BY last_id%s LIMIT ?) AS c"
                 " JOIN users u ON u.id = c.peer_id")
_TARGETS = ("SELECT t.name, m.created_at FROM (%s) AS t JOIN messages m ON m.id = t.id"
            " WHERE t.id > ? AND t.id < ? ORDER BY t.id%s LIMIT ?")


# An id bound past every message, for a window with no end (the history
# reads' and CHATHISTORY's too).
BEYOND_EVERY_ID = 2 ** 62


def targets_query(account_id: int, room_ids: Sequence[int], after: Optional[int], before: Optional[int],
                  count: int, newest: bool = False, since: Optional[int] = None) -> Tuple[str, list, bool]:
    """(statement, parameters, newest_first) for the rooms ``room_ids`` and
    the account's conversations (from ``since`` on, its private_from_id)
    whose latest message has an id in (after, before) (None: no bound, as
    ids_at gives for a moment before or after every message): (name,
    created_at) of each, the first ``count`` in id order, or the last with
    ``newest`` (then newest first, the caller's to reverse)."""
    after = after or 0
    before = before or BEYOND_EVERY_ID
    order = " DESC" if newest else ""
    selects: List[str] = []
    parameters: list = []
    if room_ids:
        selects.append(_TARGET_ROOMS % placeholders(len(room_ids)))
        parameters.extend(sorted(room_ids))
    selects.append(_TARGET_PEERS % order)
    parameters.extend((account_id, max(after, since or 0), before, count))
    parameters.extend((after, before, count))
    return _TARGETS % (" UNION ALL ".join(selects), order), parameters, newest


# -- a moment as ids (CHATHISTORY's timestamp=) ------------------------------
# Ids grow with created_at (one clock, one writer), so the messages at or
# before a moment are those up to some id, and a time becomes an id bound
# for the history reads. That id is found by bisecting the ids, each probe
# one seek of the primary key (about 20 for a million messages), rather than
# with an index on created_at, which every message stored would pay for: a
# fifth of SQLite's batched rate, for what only a timestamp= reference reads.

# The last message with an id at or below ?, and the first above ?.
MESSAGE_AT_OR_BELOW = "SELECT id, created_at FROM messages WHERE id <= ? ORDER BY id DESC LIMIT 1"
MESSAGE_ABOVE = "SELECT id, created_at FROM messages WHERE id > ? ORDER BY id LIMIT 1"


def ids_at(first_row: Callable[[str, int], Optional[tuple]], at) -> Tuple[Optional[int], Optional[int]]:
    """Store.ids_at, from ``first_row(statement, id)`` (the first row of one
    of the statements above, or None) and ``at`` in the form the backend's
    created_at comes back in: the id of the last message at or before
    ``at`` and of the first at or after it."""
    until = _last_fitting(first_row, lambda moment: moment <= at)
    before = until
    if until is not None and until[1] == at:
        # Several messages in that millisecond: the first of them.
        before = _last_fitting(first_row, lambda moment: moment < at, until[0])
    after = first_row(MESSAGE_ABOVE, before[0] if before else 0)
    return until[0] if until else None, after[0] if after else None


def _last_fitting(first_row, fits, top: int = BEYOND_EVERY_ID) -> Optional[tuple]:
    """(id, created_at) of the last message up to the id ``top`` whose time
    ``fits`` (the messages that do come first), or None."""
    last = first_row(MESSAGE_AT_OR_BELOW, top)
    if last is None or fits(last[1]):
        return last
    # Every message up to ``low`` fits (``found`` is the last of them);
    # none above ``high`` does.
    found, low, high = None, 0, last[0] - 1
    while low < high:
        middle = (low + high + 1) // 2
        row = first_row(MESSAGE_AT_OR_BELOW, middle)
        if row is None or row[0] <= low or fits(row[1]):
            found = row if row is not None and row[0] > low else found
            low = middle
        else:
            high = row[0] - 1
    return found


def for_mysql(statement: str) -> str:
    return statement.replace("?", "%s")
