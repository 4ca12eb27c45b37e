"""The MariaDB/MySQL backend, on mysqlclient (``import MySQLdb``).

Chosen by ``mysql://user:password@host:3306/name`` (user, password and name
are URL-decoded; ``?unix_socket=/run/mysqld/mysqld.sock`` connects through a
socket instead of TCP). It behaves as the SQLite backend does; only the
types differ (see mysql/0001_initial.sql and 0002_rooms.sql).

A database server can go away and come back. Every failure to reach it
raises StorageUnavailable and drops the connection; the next call opens a
new one, but not before a short, growing pause after a failed attempt, so a
dead server is not hammered. A call of several statements runs between
START TRANSACTION and one COMMIT: it either stored everything or nothing
(except when the connection dies during COMMIT itself, when the server may
have committed it: the caller is told it failed, so at worst a message is
refused that was in fact stored, never the reverse). A call that is one
statement (a read, or a batch of room messages that is one INSERT) runs
alone in autocommit, which is its own transaction: one round trip to the
database instead of two or three, on the path every message takes.

The store keeps a connection per call running at once: one, as calls come
one after the other, and two while the server writes two batches of
messages at once (concurrent_batches), each on its own connection, so that
the second INSERT goes in while the first one's commit is flushed. Every
connection keeps its own "answered lately" time (FRESH_CONNECTION). For
those batches the store gives the ids itself: reserve_ids, called in the
order the batches are made, hands out consecutive ranges from a count that
starts above the highest id and the table's AUTO_INCREMENT (read again
whenever a connection is opened), so ids follow the order the messages were
accepted whichever INSERT ends first. An id is never given twice; ids
reserved for a batch that is refused, or for a message that is not stored,
are left unused. Another writer on the table (a second server without
--cluster) shows as a duplicate id: that batch is refused (StorageUnavailable),
the count is read again, and the next batches go on. A batch without
reserved ids (a server after a quiet moment, a cluster's chain) is numbered
by AUTO_INCREMENT, and the count goes on above it.

The password is never part of an error text: errors name the database with
describe_url(), and MySQL's own messages do not contain it.
"""

import re
import threading
import time
from datetime import datetime, timezone
from typing import Dict, List, Optional, Sequence, Tuple
from urllib.parse import parse_qsl, unquote, urlsplit

import MySQLdb
from MySQLdb.constants import CLIENT

from . import (DEFAULT_ROOM, Account, Message, NewMessage, RoomInfo, StorageUnavailable, Store, describe_url,
               is_room_name, name_key, room_key, sql)
from .migrate import migrations

CONNECT_TIMEOUT = 3  # seconds; a dead host must not hold the storage thread long
READ_TIMEOUT = 10
WRITE_TIMEOUT = 10
BACKOFF_FIRST = 0.25  # seconds before reconnecting after a failed attempt,
BACKOFF_MAX = 5.0     # doubled after each further failure, up to this
# One INSERT carries at most this much message text; a bigger batch becomes
# several INSERTs in the same transaction (max_allowed_packet is 16 MiB by
# default, 1 MiB on old servers).
INSERT_CHUNK_BYTES = 512 * 1024
# A connection idle longer than this may have been closed by the server
# (wait_timeout, a restart) without our knowing: a batch then goes in a
# transaction, which can be replayed on a new connection, and not alone.
FRESH_CONNECTION = 1.0  # seconds

# Client errors that mean the connection is gone: can't connect (2002 socket,
# 2003 TCP), server has gone away (2006), lost connection during a query
# (2013), lost connection reading the handshake (2055), server shutting down
# (1053), connection killed (1927), disconnected for inactivity (4031).
CONNECTION_LOST = {1053, 1927, 2002, 2003, 2006, 2013, 2055, 4031}

# The statements shared with SQLite (sql.py), with mysqlclient's placeholders.
INSERT_ACCOUNT = sql.for_mysql(sql.INSERT_ACCOUNT)
FIND_ACCOUNT = sql.for_mysql(sql.FIND_ACCOUNT)
# A batch's messages in one INSERT, its rows rendered by _rows_sql.
INSERT_MESSAGE_VALUES = b"INSERT INTO messages (sender_id, recipient_id, room_id, body, created_at) VALUES "
# A conversation's latest message (migration 0005), in the batch's
# transaction: one statement for every conversation of the batch.
UPDATE_CONVERSATIONS = ("INSERT INTO conversations (account_id, peer_id, last_id) VALUES %s"
                        " ON DUPLICATE KEY UPDATE last_id = GREATEST(last_id, VALUES(last_id))")
# With the ids the store reserved itself (reserve_ids).
INSERT_MESSAGE_WITH_ID_VALUES = b"INSERT INTO messages (id, sender_id, recipient_id, room_id, body, created_at) VALUES "
# Where reserved ids start: above the last id and above the table's
# AUTO_INCREMENT, which a deleted history leaves above the last id.
NEXT_IDS = ("SELECT COALESCE(MAX(id), 0) + 1, (SELECT AUTO_INCREMENT FROM information_schema.TABLES"
            " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'messages') FROM messages")
DUPLICATE_KEY = 1062
DEADLOCK = 1213
SET_BAN = sql.for_mysql(sql.SET_BAN)
REPLACE_PASSWORD = sql.for_mysql(sql.REPLACE_PASSWORD)
MARK_OFFLINE = sql.for_mysql(sql.MARK_OFFLINE)
START_PRIVATE_HISTORY = sql.for_mysql(sql.START_PRIVATE_HISTORY)
PRIVATE_FROM = sql.for_mysql(sql.PRIVATE_FROM)
OFFLINE_AFTER = sql.for_mysql(sql.OFFLINE_AFTER)
BANNED_ACCOUNTS = sql.for_mysql(sql.BANNED_ACCOUNTS)
NAMES_WITH_HASH = sql.for_mysql(sql.NAMES_WITH_HASH)
INSERT_ROOM = sql.for_mysql(sql.INSERT_ROOM)
FIND_ROOM = sql.for_mysql(sql.FIND_ROOM)
FIND_ROOM_ID = sql.for_mysql(sql.FIND_ROOM_ID)
ROOM_BY_ID = sql.for_mysql(sql.ROOM_BY_ID)
LIST_ROOMS = sql.for_mysql(sql.LIST_ROOMS)
COUNT_ROOMS = sql.for_mysql(sql.COUNT_ROOMS)
JOIN_ROOM = sql.for_mysql(sql.JOIN_ROOM)
LEAVE_ROOM = sql.for_mysql(sql.LEAVE_ROOM)
ROOMS_OF = sql.for_mysql(sql.ROOMS_OF)
ROOM_IDS_OF = sql.for_mysql(sql.ROOM_IDS_OF)
COUNT_MEMBERSHIPS = sql.for_mysql(sql.COUNT_MEMBERSHIPS)
ROOM_MEMBERS = sql.for_mysql(sql.ROOM_MEMBERS)
SET_TOPIC = sql.for_mysql(sql.SET_TOPIC)
ROOM_EXISTS = sql.for_mysql(sql.ROOM_EXISTS)
DELETE_MEMBERSHIPS = sql.for_mysql(sql.DELETE_MEMBERSHIPS)
UNNAME_ROOM = sql.for_mysql(sql.UNNAME_ROOM)
DELETE_ROOM_MESSAGES = sql.for_mysql(sql.DELETE_ROOM_MESSAGES)
DELETE_ROOM = sql.for_mysql(sql.DELETE_ROOM)
# The chain of batches, for a cluster of servers (see mysql/0003_message_chain.sql).
LOCK_CHAIN = "SELECT last_id FROM message_chain WHERE id = 1 FOR UPDATE"
EXTEND_CHAIN = "UPDATE message_chain SET last_id = %s WHERE id = 1"
CHAIN_LAST = "SELECT last_id FROM message_chain WHERE id = 1"
CHAINED_MESSAGES = ("SELECT m.id, m.created_at, s.name, r.name, m.body, g.name, m.room_id FROM messages m"
                    " JOIN users s ON s.id = m.sender_id"
                    " LEFT JOIN users r ON r.id = m.recipient_id"
                    " LEFT JOIN rooms g ON g.id = m.room_id"
                    " WHERE m.id > %s AND m.id <= %s ORDER BY m.id LIMIT %s")

_SESSION_SQL = [
    # DATETIME is not converted by time_zone, but NOW() and friends are:
    # everything this session does is UTC.
    "SET time_zone = '+00:00'",
    # The same strict rules on every server: refuse bad data instead of
    # truncating it, and fail instead of silently using another engine.
    "SET sql_mode = 'STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,"
    "ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'",
]


def _to_datetime(text: str) -> datetime:
    """'2026-11-24T13:05:01.123Z' -> a naive UTC datetime, to milliseconds."""
    moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _to_text(moment: Optional[datetime]) -> Optional[str]:
    if moment is None:
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (moment.microsecond // 1000)


def connect_args(url: str) -> Dict[str, object]:
    """mysqlclient's connect() arguments for a mysql:// URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("mysql", "mariadb"):
        raise ValueError("not a mysql:// URL: %s" % describe_url(url))
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise ValueError("a MySQL URL is mysql://USER:PASSWORD@HOST:PORT/NAME: %s" % describe_url(url))
    args = {
        "host": parts.hostname or "localhost",
        "port": parts.port or 3306,
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "database": database,
        "charset": "utf8mb4",
        # On: a call of one statement is its own transaction (see _run).
        "autocommit": True,
        "connect_timeout": CONNECT_TIMEOUT,
        "read_timeout": READ_TIMEOUT,
        "write_timeout": WRITE_TIMEOUT,
        # UPDATE reports the rows it matched, not only those it changed, as
        # SQLite does: banning an account twice still finds the account.
        "client_flag": CLIENT.FOUND_ROWS,
    }
    for key, value in parse_qsl(parts.query):
        if key == "unix_socket":
            args["unix_socket"] = value
        elif key in ("connect_timeout", "read_timeout", "write_timeout"):
            args[key] = int(value)
        else:
            raise ValueError("unknown MySQL URL option %r: %s" % (key, describe_url(url)))
    return args


ACCESS_DENIED = 1045
_REFUSED_RE = re.compile(r"for user '([^']*)'@'([^']*)'")


def _access_denied_hint(error: Exception) -> str:
    """For MySQL error 1045, why it most likely happened and what to do: a
    user is a name *and* a host, and a server that skips name resolution
    (Debian's MariaDB) sees a TCP client from 127.0.0.1 as user@'127.0.0.1',
    not user@'localhost', which is the user the usual CREATE USER makes."""
    if not error.args or error.args[0] != ACCESS_DENIED:
        return ""
    refused = _REFUSED_RE.search(str(error.args[-1]))
    user, host = refused.groups() if refused else ("USER", "HOST")
    return (". The database server refused user '%s' connecting from '%s': either the password is wrong, or "
            "no user '%s'@'%s' exists (a user created as '%s'@'localhost' is another user when the server "
            "skips name resolution, as Debian's MariaDB does). The two usual fixes: create '%s'@'%s' with "
            "the same password and grants (README, \"MariaDB or MySQL\"), or connect through the Unix "
            "socket, as '%s'@'localhost': mysql://%s:PASSWORD@localhost/NAME?unix_socket=/run/mysqld/mysqld.sock"
            % (user, host, user, host, user, user, host, user, user))


def _chunks(values, multirow):
    """The rows (sender_id, recipient_id, room_id, body, created_at) in runs
    of one INSERT each: up to INSERT_CHUNK_BYTES of text, or one row each."""
    if not multirow:
        return [[row] for row in values]
    chunks, size = [], INSERT_CHUNK_BYTES
    for row in values:
        if size >= INSERT_CHUNK_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(row)
        size += len(row[3]) + 64
    return chunks


def _rows_sql(db, rows, ids=None) -> bytes:
    """The VALUES of a multi-row INSERT of messages: the rows (sender_id,
    recipient_id, room_id, body, created_at), each with its id from ``ids``
    if given. Rendered here, not by mysqlclient's literal() field by field,
    which took a quarter of a batch's time on the storage thread, holding
    the interpreter's lock: the ids must be ints (%d refuses anything
    else), and the texts are escaped by the connection itself
    (mysql_real_escape_string, as literal() does)."""
    quote = db.string_literal
    texts: Dict[str, bytes] = {}  # a batch has few timestamps
    rendered = []
    for n, (sender_id, recipient_id, room_id, body, created_at) in enumerate(rows):
        at = texts.get(created_at)
        if at is None:
            at = texts[created_at] = quote(created_at.encode("utf-8"))
        row = b"%d, %s, %s, %s, %s" % (sender_id, b"NULL" if recipient_id is None else b"%d" % recipient_id,
                                       b"NULL" if room_id is None else b"%d" % room_id,
                                       quote(body.encode("utf-8")), at)
        rendered.append(b"(%d, %s)" % (ids[n], row) if ids is not None else b"(%s)" % row)
    return b", ".join(rendered)


def _error_code(error: Exception) -> Optional[int]:
    return error.args[0] if error.args and isinstance(error.args[0], int) else None


def _connection_lost(error: Exception) -> bool:
    if isinstance(error, MySQLdb.InterfaceError):
        return True  # e.g. (0, '') on a connection that is already closed
    return _error_code(error) in CONNECTION_LOST


class _Connection:
    """One connection of the store's, and when it last answered."""
    __slots__ = ("db", "used_at")

    def __init__(self, db):
        self.db = db
        self.used_at = 0.0  # time.monotonic(); 0: not yet


class _IdsTaken(Exception):
    """A row with one of the ids reserved for the batch is already there."""


class MySQLStore(Store):
    chained = True
    # Two batches of messages may be stored at once, each on a connection of
    # its own, with ids reserved beforehand (reserve_ids): a server alone on
    # its database starts the next batch while the last one's commit is
    # being flushed. The chain (append_chained) takes them one at a time.
    concurrent_batches = 2

    def __init__(self, url: str):
        self.url = url
        self.where = describe_url(url)
        self._connect_args = connect_args(url)
        # Connections that answered and are free, the last one used last:
        # calls one after the other keep to one connection, calls at the
        # same time (two batches) each take one.
        self._idle: List[_Connection] = []
        self._lock = threading.Lock()  # for _idle and _next_id
        self._retry_at = 0.0
        self._backoff = 0.0
        # Whether one multi-row INSERT may store a batch: only if the server
        # hands it consecutive ids (see _insert_messages), and if whoever
        # holds this store allows it (a benchmark or a test of the other way).
        self.allow_multirow = True
        self._multirow = True
        self._increment = 1
        # The live rooms messages were last stored in, {room_id: (id, name)}
        # as _rooms_for gives them: a server alone on its database is the
        # only one to delete a room, with delete_room, which forgets them,
        # so a batch to rooms seen before needs no read before its INSERT.
        # A cluster's servers delete each other's rooms and never use it.
        self._live_rooms: Dict[Optional[int], Tuple[int, str]] = {}
        # The id the next reserved range starts at: above every id stored
        # and above the table's AUTO_INCREMENT (which a deleted history
        # leaves above the last id), read when a connection is opened.
        self._next_id = 1
        self._ids_read = False  # not before the schema is there
        self._run(self._migrate)
        self._run(self._read_next_id, alone="read")
        self._ids_read = True

    # -- connection, transactions, errors ---------------------------------

    def _take(self) -> Tuple[_Connection, bool]:
        """A connection for one call, and whether it is one that was open."""
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._open(), False

    def _give_back(self, connection: _Connection) -> None:
        with self._lock:
            self._idle.append(connection)

    def _open(self) -> _Connection:
        now = time.monotonic()
        if now < self._retry_at:
            raise StorageUnavailable("database %s unreachable; next attempt in %.1fs"
                                     % (self.where, self._retry_at - now))
        try:
            db = MySQLdb.connect(**self._connect_args)
            try:
                cursor = db.cursor()
                for statement in _SESSION_SQL:
                    cursor.execute(statement)
                cursor.execute("SELECT @@innodb_autoinc_lock_mode, @@auto_increment_increment")
                lock_mode, increment = cursor.fetchone()
                if self._ids_read:
                    # Whatever was written while this store had no
                    # connection (another writer, a restored backup).
                    self._read_next_id(cursor)
                cursor.close()
            except BaseException:
                db.close()
                raise
        except MySQLdb.Error as error:
            self._backoff = min(max(self._backoff * 2, BACKOFF_FIRST), BACKOFF_MAX)
            self._retry_at = now + self._backoff
            raise StorageUnavailable("cannot connect to database %s: %s%s"
                                     % (self.where, error, _access_denied_hint(error))) from None
        # Modes 0 and 1 give the rows of one multi-row INSERT consecutive ids
        # (MariaDB's default is 1); mode 2 (MySQL 8's default) may interleave
        # them with another client's.
        self._multirow = int(lock_mode) in (0, 1)
        self._increment = int(increment)
        return _Connection(db)

    @staticmethod
    def _drop(connection: _Connection) -> None:
        try:
            connection.db.close()
        except MySQLdb.Error:
            pass

    def _drop_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            self._drop(connection)

    def _run(self, operation, *args, alone=False):
        """Run ``operation(cursor, *args)`` in one transaction and commit it.
        ``alone``: the operation is a single statement, run in autocommit,
        which is a transaction of its own; "read" if it changes nothing;
        "if fresh": a write, alone only on a connection that answered less
        than FRESH_CONNECTION ago, else in a transaction."""
        for attempt in (1, 2):
            connection, reused = self._take()
            single = alone
            if alone == "if fresh":
                single = reused and time.monotonic() - connection.used_at < FRESH_CONNECTION
            try:
                cursor = connection.db.cursor()
                try:
                    if not single:
                        cursor.execute("START TRANSACTION")
                    result = operation(cursor, *args)
                finally:
                    cursor.close()
            except (MySQLdb.OperationalError, MySQLdb.InterfaceError) as error:
                if _connection_lost(error):
                    # The other one is most likely gone too (a restart):
                    # found out now, not by the next batch it would refuse.
                    self._drop(connection)
                    self._drop_idle()
                    # Nothing was committed, so the whole call can be
                    # replayed once: a connection that sat idle while the
                    # server restarted is no reason to refuse a message.
                    # (A write alone may have been committed as the
                    # connection died; see append_messages.)
                    if reused and attempt == 1 and single in (False, "read"):
                        continue
                else:  # a deadlock, a lock wait timeout, a full disk...
                    self._rollback(connection)
                    # InnoDB undid the whole transaction to break a deadlock
                    # (two batches at once updating the same conversations,
                    # say): nothing of it is left, so it is replayed once.
                    if _error_code(error) == DEADLOCK and attempt == 1:
                        continue
                raise StorageUnavailable("database %s: %s" % (self.where, error)) from None
            except BaseException:
                self._rollback(connection)
                raise
            if not single:
                try:
                    connection.db.commit()
                except MySQLdb.Error as error:
                    self._drop(connection)
                    raise StorageUnavailable("database %s: commit failed: %s" % (self.where, error)) from None
            self._backoff = 0.0
            connection.used_at = time.monotonic()
            self._give_back(connection)
            return result
        raise AssertionError("unreachable")

    def _rollback(self, connection: _Connection) -> None:
        try:
            connection.db.rollback()
        except MySQLdb.Error:
            self._drop(connection)
            return
        self._give_back(connection)

    def _migrate(self, cursor) -> None:
        # Two servers starting at once must not both migrate. GET_LOCK is
        # server-wide, so the lock is named after the database.
        cursor.execute("SELECT GET_LOCK(CONCAT('sae_schema.', DATABASE()), 30)")
        if cursor.fetchone()[0] != 1:
            raise StorageUnavailable("database %s: another process holds the schema lock" % self.where)
        try:
            cursor.execute("CREATE TABLE IF NOT EXISTS schema_version (version INT NOT NULL)"
                           " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")
            cursor.execute("SELECT MAX(version) FROM schema_version")
            current = cursor.fetchone()[0] or 0
            for version, statements in migrations("mysql"):
                if version <= current:
                    continue
                try:
                    for statement in statements:
                        cursor.execute(statement)
                    cursor.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
                    cursor.connection.commit()
                except MySQLdb.Error as error:
                    if _connection_lost(error):
                        raise
                    raise StorageUnavailable("database %s: schema migration %04d failed: %s"
                                             % (self.where, version, error)) from None
        finally:
            cursor.execute("SELECT RELEASE_LOCK(CONCAT('sae_schema.', DATABASE()))")
            cursor.fetchall()

    # -- the Store interface ----------------------------------------------

    def _select(self, statement, parameters=()):
        def select(cursor):
            cursor.execute(statement, parameters)
            return cursor.fetchall()
        return self._run(select, alone="read")

    # -- accounts --

    def create_account(self, name: str, password_hash: str, created_at: str,
                       room_id: Optional[int] = None) -> Optional[Account]:
        moment = _to_datetime(created_at)

        def insert(cursor):
            try:
                cursor.execute(INSERT_ACCOUNT, (name, name_key(name), password_hash, moment))
            except MySQLdb.IntegrityError:
                return None
            account_id = cursor.lastrowid
            if room_id is not None:
                cursor.execute(JOIN_ROOM, (account_id, moment, room_id))
            return Account(account_id, name, password_hash, _to_text(moment))
        return self._run(insert)

    def find_account(self, name: str) -> Optional[Account]:
        def select(cursor):
            cursor.execute(FIND_ACCOUNT, (name_key(name),))
            row = cursor.fetchone()
            return self._account(row) if row else None
        return self._run(select, alone="read")

    # -- rooms --

    def ensure_room(self, name: str, created_at: str) -> RoomInfo:
        key = room_key(name)
        moment = _to_datetime(created_at)

        def find_or_insert(cursor):
            cursor.execute(FIND_ROOM, (key,))
            row = cursor.fetchone()
            if row is None:
                try:
                    cursor.execute(INSERT_ROOM, (name, key, moment))
                except MySQLdb.IntegrityError:
                    pass  # another connection (another server) created it since: that one is the room
                # A locking read sees the latest commit; a plain one would
                # see this transaction's snapshot, taken before the other
                # server's INSERT was committed, without the room.
                cursor.execute(FIND_ROOM + " LOCK IN SHARE MODE", (key,))
                row = cursor.fetchone()
            return self._room(row)
        return self._run(find_or_insert)

    def find_room(self, name: str) -> Optional[RoomInfo]:
        if not is_room_name(name):
            return None
        rows = self._select(FIND_ROOM, (room_key(name),))
        return self._room(rows[0]) if rows else None

    def list_rooms(self) -> List[Tuple[RoomInfo, int]]:
        return [(self._room(row[:6]), int(row[6])) for row in self._select(LIST_ROOMS)]

    def count_rooms(self) -> int:
        return int(self._select(COUNT_ROOMS)[0][0])

    def join_room(self, account_id: int, room_id: int, at: str) -> bool:
        moment = _to_datetime(at)

        def insert(cursor):
            try:
                cursor.execute(JOIN_ROOM, (account_id, moment, room_id))
            except MySQLdb.IntegrityError:
                return False  # already a member
            return cursor.rowcount > 0
        return self._run(insert)

    def leave_room(self, account_id: int, room_id: int) -> bool:
        def delete(cursor):
            cursor.execute(LEAVE_ROOM, (account_id, room_id))
            return cursor.rowcount > 0
        return self._run(delete)

    def rooms_of(self, account_id: int) -> List[RoomInfo]:
        return [self._room(row) for row in self._select(ROOMS_OF, (account_id,))]

    def count_memberships(self, account_id: int) -> int:
        return int(self._select(COUNT_MEMBERSHIPS, (account_id,))[0][0])

    def room_members(self, room_id: int) -> List[str]:
        return [name for (name,) in self._select(ROOM_MEMBERS, (room_id,))]

    def set_topic(self, room_id: int, text: str, by: str, at: str) -> Optional[RoomInfo]:
        moment = _to_datetime(at)

        def update(cursor):
            cursor.execute(SET_TOPIC, (text, by, moment, room_id))
            cursor.execute(ROOM_BY_ID, (room_id,))
            row = cursor.fetchone()
            return self._room(row) if row else None
        return self._run(update)

    def delete_room(self, room_id: int, keep_history: bool) -> bool:
        self._live_rooms.clear()

        def delete(cursor):
            cursor.execute(ROOM_EXISTS, (room_id,))
            if cursor.fetchone() is None:
                return False
            cursor.execute(DELETE_MEMBERSHIPS, (room_id,))
            if keep_history:
                cursor.execute(UNNAME_ROOM, (room_id,))
                return cursor.rowcount > 0
            cursor.execute(DELETE_ROOM_MESSAGES, (room_id,))
            cursor.execute(DELETE_ROOM, (room_id,))
            return True
        return self._run(delete)

    # -- messages --

    def reserve_ids(self, count: int) -> int:
        with self._lock:
            first = self._next_id
            self._next_id += count
        return first

    def _read_next_id(self, cursor) -> None:
        cursor.execute(NEXT_IDS)
        after_last, counter = cursor.fetchone()
        with self._lock:
            self._next_id = max(self._next_id, int(after_last), int(counter or 0))

    def append_messages(self, batch: Sequence[NewMessage],
                        first_id: Optional[int] = None) -> List[Optional[Message]]:
        if not batch:
            return []
        # The batch every message goes through is usually room messages to
        # rooms seen before: one INSERT, alone. If the connection dies during
        # it, the INSERT may or may not have been committed; the caller is
        # told it failed, as when a COMMIT is cut, and it is not replayed.
        one_insert = self.allow_multirow and (first_id is not None or self._multirow)
        alone = "if fresh" if (one_insert
                               and all(m.recipient is None and m.room_id in self._live_rooms for m in batch)
                               and sum(len(m.body) + 64 for m in batch) < INSERT_CHUNK_BYTES) else False
        try:
            return self._run(self._store_batch, batch, self._live_rooms, first_id, alone=alone)
        except _IdsTaken:
            # Someone else writes messages here (a second server without
            # --cluster?). The ids from the table are taken up again, so the
            # next batches get free ones; this one is refused, not lost.
            self._run(self._read_next_id, alone="read")
            raise StorageUnavailable("database %s: message id %d was taken by another writer (is another server "
                                     "without --cluster on this database?)" % (self.where, first_id)) from None

    def append_chained(self, batch: Sequence[NewMessage]) -> Tuple[int, int, List[Optional[Message]]]:
        def insert(cursor):
            # The lock on the chain's row is held until COMMIT: no other
            # server takes an id until this batch's are committed.
            cursor.execute(LOCK_CHAIN)
            previous = cursor.fetchone()[0]
            stored = self._store_batch(cursor, batch, None)
            last = max((m.id for m in stored if m is not None), default=previous)
            if last != previous:
                cursor.execute(EXTEND_CHAIN, (last,))
            return previous, last, stored
        return self._run(insert)

    def last_message_id(self) -> int:
        return self._select(sql.LAST_MESSAGE_ID)[0][0]

    def chain_last(self) -> int:
        return self._select(CHAIN_LAST)[0][0]

    def chain_since(self, after: int, count: int) -> Tuple[int, List[Tuple[Message, Optional[int]]]]:
        def select(cursor):
            # One snapshot (REPEATABLE READ) for both reads: every id up to
            # the chain's last is committed in it.
            cursor.execute(CHAIN_LAST)
            last = cursor.fetchone()[0]
            cursor.execute(CHAINED_MESSAGES, (after, last, count))
            found = [(self._message(row[:6]), row[6]) for row in cursor.fetchall()]
            if len(found) == count:
                last = found[-1][0].id
            return max(last, after), found
        return self._run(select)

    def _store_batch(self, cursor, batch, live_rooms, first_id=None):
        """Insert the batch (see Store.append_messages) in the transaction;
        ``live_rooms``, if not None, is what _rooms_for found before, kept
        up to date here; ``first_id``, if not None, the first of the ids
        reserved for it."""
        if not batch:
            return []
        keys = {name_key(m.recipient) for m in batch if m.recipient is not None}
        room_ids = {m.room_id for m in batch if m.recipient is None}
        recipients: Dict[str, Tuple[int, str]] = {}
        if keys:
            cursor.execute("SELECT id, name, name_key FROM users WHERE name_key IN (%s)"
                           % ", ".join(["%s"] * len(keys)), sorted(keys))
            recipients = {key: (user_id, name) for user_id, name, key in cursor.fetchall()}
        if live_rooms is None:
            rooms = self._rooms_for(cursor, room_ids)
        else:
            unknown = room_ids.difference(live_rooms)
            if unknown:
                live_rooms.update(self._rooms_for(cursor, unknown))
            rooms = live_rooms
        stored: List[Optional[tuple]] = []
        values = []  # (sender_id, recipient_id, room_id, body, created_at) to insert
        moments: Dict[str, Tuple[str, str]] = {}  # created_at: (as SQL, as stored); a batch has few
        for message in batch:
            moment = moments.get(message.created_at)
            if moment is None:
                exact = _to_datetime(message.created_at)
                moment = moments[message.created_at] = (exact.isoformat(" ", "milliseconds"), _to_text(exact))
            recipient_id = room_id = room = None
            recipient = message.recipient
            if recipient is not None:
                found = recipients.get(name_key(recipient))
                if found is None:
                    stored.append(None)
                    continue
                recipient_id, recipient = found
            else:
                target = rooms.get(message.room_id)
                if target is None:
                    stored.append(None)  # the room was deleted meanwhile
                    continue
                room_id, room = target
            values.append((message.sender_id, recipient_id, room_id, message.body, moment[0]))
            stored.append((moment[1], message.sender, recipient, message.body, room))  # a Message once it has its id
        ids = self._insert_messages(cursor, values, first_id)
        conversations = sql.latest_in_conversations(values, ids)
        if conversations:
            cursor.execute(UPDATE_CONVERSATIONS % ", ".join(["(%s, %s, %s)"] * len(conversations)),
                           [field for row in conversations for field in row])
        next_id = iter(ids)
        return [Message(next(next_id), *m) if m is not None else None for m in stored]

    @staticmethod
    def _rooms_for(cursor, room_ids):
        """{room_id: (id, name)} of the live rooms among ``room_ids``, in one
        query; the key None stands for the default room."""
        if not room_ids:
            return {}
        ids = sorted(room_id for room_id in room_ids if room_id is not None)
        conditions, parameters = [], []
        if ids:
            conditions.append("id IN (%s)" % ", ".join(["%s"] * len(ids)))
            parameters.extend(ids)
        if None in room_ids:
            conditions.append("name_key = %s")
            parameters.append(DEFAULT_ROOM)
        cursor.execute("SELECT id, name, name_key FROM rooms WHERE name_key IS NOT NULL AND (%s)"
                       % " OR ".join(conditions), parameters)
        found = {}
        for room_id, name, key in cursor.fetchall():
            if room_id in room_ids:
                found[room_id] = (room_id, name)
            if key == DEFAULT_ROOM and None in room_ids:
                found[None] = (room_id, name)
        return found

    def _insert_messages(self, cursor, values, first_id=None) -> List[int]:
        """Insert the rows in order; their ids, in the same order: from
        ``first_id`` on when the batch has ids reserved, else the
        AUTO_INCREMENT counter's."""
        ids: List[int] = []
        # One INSERT per chunk, not executemany(): mysqlclient splits a long
        # executemany() into several statements and reports only the last
        # one's first id.
        multirow = self.allow_multirow and (first_id is not None or self._multirow)
        for chunk in _chunks(values, multirow):
            if first_id is None:
                cursor.execute(INSERT_MESSAGE_VALUES + _rows_sql(cursor.connection, chunk))
                # LAST_INSERT_ID() (lastrowid) is the first id of a
                # multi-row INSERT, and the others follow it.
                ids.extend(cursor.lastrowid + n * self._increment for n in range(len(chunk)))
                continue
            # Reserved in the order the batches were made, whichever of two
            # concurrent INSERTs comes first. Those a batch leaves unused (a
            # batch refused, a message to an account that is not there) are
            # a gap, never used again.
            chunk_ids = range(first_id + len(ids), first_id + len(ids) + len(chunk))
            try:
                cursor.execute(INSERT_MESSAGE_WITH_ID_VALUES + _rows_sql(cursor.connection, chunk, chunk_ids))
            except MySQLdb.IntegrityError as error:
                if _error_code(error) == DUPLICATE_KEY:
                    raise _IdsTaken() from None
                raise
            ids.extend(chunk_ids)
        if ids and first_id is None:
            with self._lock:  # ids reserved later come after these
                self._next_id = max(self._next_id, ids[-1] + 1)
        return ids

    def room_history(self, count: int, before: Optional[int] = None,
                     after: Optional[int] = None, room_id: Optional[int] = None) -> List[Message]:
        def select(cursor):
            target = room_id
            if target is None:
                cursor.execute(FIND_ROOM_ID, (DEFAULT_ROOM,))
                row = cursor.fetchone()
                if row is None:
                    return []
                target = row[0]
            return self._history(cursor, sql.room_history_query(target, count, before, after))
        return self._run(select)

    def conversation_history(self, account_id: int, peer_id: int, count: int, before: Optional[int] = None,
                             after: Optional[int] = None) -> List[Message]:
        def select(cursor):
            since = self._private_from(cursor, account_id)
            return self._history(cursor, sql.conversation_query(account_id, peer_id, count, before, after, since))
        return self._run(select)

    def missed(self, account_id: int, after: int, count: int) -> List[Message]:
        def select(cursor):
            cursor.execute(ROOM_IDS_OF, (account_id,))
            room_ids = [room_id for (room_id,) in cursor.fetchall()]
            since = self._private_from(cursor, account_id)
            return self._history(cursor, sql.missed_query(account_id, room_ids, after, count, since))
        return self._run(select)

    @staticmethod
    def _private_from(cursor, account_id):
        cursor.execute(PRIVATE_FROM, (account_id,))
        row = cursor.fetchone()
        return row[0] if row else None

    def start_private_history(self, account_id: int) -> None:
        def update(cursor):
            cursor.execute(START_PRIVATE_HISTORY, (account_id,))
        self._run(update)

    def went_offline(self, account_id: int) -> None:
        def update(cursor):
            cursor.execute(MARK_OFFLINE, (account_id,))
        self._run(update)

    def missed_private(self, account_id: int, count: int) -> Tuple[List[Message], bool]:
        def read_and_mark(cursor):
            cursor.execute(OFFLINE_AFTER, (account_id,))
            (offline_after,), = cursor.fetchall() or [(None,)]
            latest = self._history(cursor, sql.to_account_query(account_id, count + 1)) \
                if offline_after is not None else []
            cursor.execute(MARK_OFFLINE, (account_id,))
            return sql.missed_since_offline(account_id, offline_after, latest, count)
        return self._run(read_and_mark)

    def _history(self, cursor, query):
        statement, parameters, newest_first = query
        cursor.execute(sql.for_mysql(statement), parameters)
        messages = [self._message(row) for row in cursor.fetchall()]
        return messages[::-1] if newest_first else messages

    def set_ban(self, name: str, reason: Optional[str], at: str) -> bool:
        moment = _to_datetime(at) if reason is not None else None

        def update(cursor):
            cursor.execute(SET_BAN, (reason, moment, name_key(name)))
            return cursor.rowcount > 0
        return self._run(update)

    def ids_at(self, at: str) -> Tuple[Optional[int], Optional[int]]:
        return self._run(lambda cursor: sql.ids_at(self._first_row(cursor), _to_datetime(at)))

    @staticmethod
    def _first_row(cursor):
        """sql.ids_at's ``first_row`` on this cursor."""
        def first_row(statement, *parameters):
            cursor.execute(sql.for_mysql(statement), parameters)
            return cursor.fetchone()
        return first_row

    def targets(self, account_id: int, room_ids: Sequence[int], after_time: Optional[str],
                before_time: Optional[str], limit: int, newest: bool = False) -> List[Tuple[str, str]]:
        def select(cursor):
            # Strictly after the last message at or before after_time, and
            # before the first at or after before_time.
            first_row = self._first_row(cursor)
            after = sql.ids_at(first_row, _to_datetime(after_time))[0] if after_time is not None else None
            before = sql.ids_at(first_row, _to_datetime(before_time))[1] if before_time is not None else None
            statement, parameters, newest_first = sql.targets_query(
                account_id, room_ids, after, before, limit, newest, self._private_from(cursor, account_id))
            cursor.execute(sql.for_mysql(statement), parameters)
            found = [(name, _to_text(moment)) for name, moment in cursor.fetchall()]
            return found[::-1] if newest_first else found
        return self._run(select)

    def replace_password(self, name: str, old_hash: str, new_hash: str) -> bool:
        def update(cursor):
            cursor.execute(REPLACE_PASSWORD, (new_hash, name_key(name), old_hash))
            return cursor.rowcount > 0
        return self._run(update)

    def banned_accounts(self) -> List[Account]:
        def select(cursor):
            cursor.execute(BANNED_ACCOUNTS)
            return [self._account(row) for row in cursor.fetchall()]
        return self._run(select)

    def names_with_hash(self, password_hash: str) -> List[str]:
        return [name for (name,) in self._select(NAMES_WITH_HASH, (password_hash,))]

    def ping(self) -> None:
        self._run(lambda cursor: cursor.execute("SELECT 1"), alone="read")

    def close(self) -> None:
        self._drop_idle()

    @staticmethod
    def _account(row) -> Account:
        user_id, name, password_hash, created_at, ban_reason = row
        return Account(user_id, name, password_hash, _to_text(created_at), ban_reason)

    @staticmethod
    def _message(row) -> Message:
        message_id, created_at, sender, recipient, body, room = row
        return Message(message_id, _to_text(created_at), sender, recipient, body, room)

    @staticmethod
    def _room(row) -> RoomInfo:
        room_id, name, topic, topic_set_by, topic_set_at, created_at = row
        return RoomInfo(room_id, name, topic, topic_set_by, _to_text(topic_set_at), _to_text(created_at))
