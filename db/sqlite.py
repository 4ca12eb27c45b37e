"""The SQLite backend: the default, needs nothing beyond the standard library.

WAL mode lets readers (a second tool, a backup) work while the server
writes; synchronous=NORMAL makes a commit cost no fsync in WAL mode (a power
cut may lose the last commits, never corrupt the file), which is what lets a
Raspberry Pi's SD card keep up with one commit per loop iteration.

With no fsync, a commit is a write to the page cache, as short as a send():
so the server's loop calls this store itself (``on_loop``), and what could
still make it wait is kept away from it. Checkpoints (copying the WAL back
into the database file, which does fsync) run on a thread of their own with
its own connection; in WAL mode they never block the writer. And another
program writing to the file (the sqlite3 shell) makes the loop wait at most
BUSY_MS before the call fails as StorageUnavailable (ERR 503, try again).

SQLite starts the WAL over at a commit only if a checkpoint has copied all
of it since the last commit. Under a steady load some commit always comes
while a checkpoint runs (its fsync takes a while), and the file grows by
all that is written: 1.3 MB a second at 100 single messages a second, 45 MB
after 35 s. So after a checkpoint of a WAL longer than WAL_RESTART_FRAMES
the server is asked to hold its batches of messages back
(``batches_held``) while a second one copies what came meanwhile. And
when the WAL starts over after a burst, its file is cut back to
WAL_KEPT_BYTES (journal_size_limit): its length is otherwise kept for good.
"""

import sqlite3
import threading
from itertools import chain
from typing import List, Optional, Sequence, Tuple

from . import (DEFAULT_ROOM, Account, Message, NewMessage, RoomInfo, StorageUnavailable, Store, is_room_name,
               name_key, room_key, sql)
from .migrate import migrations

BUSY_MS = 200  # the longest the loop waits for another program's write lock
CHECKPOINT_SECONDS = 5.0  # how often the WAL is copied back into the database file
# A checkpoint of a WAL longer than this (4 MB of 4 KB pages: it has not
# started over for a while) is followed by one while the server holds its
# batches back.
WAL_RESTART_FRAMES = 1024
# What the WAL file is cut back to when it starts over: a burst leaves it
# as long as five seconds of writes at full speed (tens of MB) otherwise,
# for as long as the server runs. Above what a steady chat needs (about 6 MB
# at 100 messages a second), so that it is not cut and grown again each time.
WAL_KEPT_BYTES = 16 * 1024 * 1024
# How long that second checkpoint waits for the server to hold: a server with
# no batch to store writes nothing meanwhile anyway.
HOLD_WAIT = 0.5


class Checkpoints:
    """A thread that checkpoints the WAL every CHECKPOINT_SECONDS, PASSIVE:
    it copies what no reader still needs and never waits for the writer, nor
    makes it wait. Its fsync is the only one, and it is off the loop. Only
    when the WAL has not started over for a while does the loop hold its
    batches back for a moment (_copy_the_rest); it is never blocked."""

    def __init__(self, path, store):
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA busy_timeout=%d" % BUSY_MS)
        self.store = store
        self.hold_wanted = False  # read by the loop (SQLiteStore.batches_held)
        self.loop_holds = threading.Event()  # set by the loop once it holds its batches back
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sae-checkpoint", daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(CHECKPOINT_SECONDS):
            try:
                frames = self.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
                if frames > WAL_RESTART_FRAMES:
                    self._copy_the_rest()
            except sqlite3.Error:
                pass  # busy or failing: the next one tries again, and the WAL only grows meanwhile

    def _copy_the_rest(self):
        """Copy what commits wrote while the checkpoint ran, while the loop
        stores none, so that its next commit starts the WAL over. The loop's
        batches wait for as long as that takes (a few pages and an fsync);
        everything else it does goes on."""
        self.loop_holds.clear()
        self.hold_wanted = True
        try:
            if self.loop_holds.wait(HOLD_WAIT):
                self.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            self.hold_wanted = False
            wake = self.store.on_batches_free
            if wake is not None:
                wake()

    def close(self):
        self._stop.set()
        self._thread.join()
        self.db.close()


class SQLiteStore(Store):
    on_loop = True

    def __init__(self, path: str):
        self.checkpoints = None
        self._live_rooms = {}  # {room_id: (id, name)}, as _rooms_for finds them
        try:
            # check_same_thread=False: the store is opened on the main thread
            # (so start-up errors are reported there), then used only by the
            # storage thread.
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            wal = self.db.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.execute("PRAGMA busy_timeout=%d" % BUSY_MS)
            self._migrate()
            if wal and path != ":memory:":
                # Checkpoints move to their own thread; without WAL (a file
                # system that cannot share memory) SQLite keeps doing them.
                self.db.execute("PRAGMA wal_autocheckpoint=0")
                self.db.execute("PRAGMA journal_size_limit=%d" % WAL_KEPT_BYTES)
                self.checkpoints = Checkpoints(path, self)
        except sqlite3.Error as error:
            raise StorageUnavailable("cannot open SQLite database %s: %s" % (path, error)) from None

    def batches_held(self) -> bool:
        checkpoints = self.checkpoints
        if checkpoints is None or not checkpoints.hold_wanted:
            return False
        checkpoints.loop_holds.set()  # asked on the loop, between two transactions
        return True

    def _migrate(self) -> None:
        db = self.db
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        current = row[0] or 0
        for version, statements in migrations("sqlite"):
            if version <= current:
                continue
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in statements:
                    db.execute(statement)
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _run(self, operation, *args):
        try:
            return operation(*args)
        except sqlite3.OperationalError as error:
            # Locked, disk full, I/O error: may pass, so the caller retries.
            raise StorageUnavailable(str(error)) from None

    def _in_transaction(self, operation, *args):
        """``operation(*args)`` in one transaction: all of it is stored, or none."""
        def transaction():
            self.db.execute("BEGIN")
            try:
                result = operation(*args)
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            return result
        return self._run(transaction)

    def _select(self, statement, parameters=()):
        return self._run(lambda: self.db.execute(statement, parameters).fetchall())

    # -- accounts --

    def create_account(self, name: str, password_hash: str, created_at: str,
                       room_id: Optional[int] = None) -> Optional[Account]:
        def insert():
            try:
                cursor = self.db.execute(sql.INSERT_ACCOUNT, (name, name_key(name), password_hash, created_at))
            except sqlite3.IntegrityError:
                return None
            if room_id is not None:
                self.db.execute(sql.JOIN_ROOM, (cursor.lastrowid, created_at, room_id))
            return Account(cursor.lastrowid, name, password_hash, created_at)
        return self._in_transaction(insert)

    def find_account(self, name: str) -> Optional[Account]:
        def select():
            row = self.db.execute(sql.FIND_ACCOUNT, (name_key(name),)).fetchone()
            return Account(*row) if row else None
        return self._run(select)

    # -- rooms --

    def ensure_room(self, name: str, created_at: str) -> RoomInfo:
        key = room_key(name)

        def find_or_insert():
            row = self.db.execute(sql.FIND_ROOM, (key,)).fetchone()
            if row is None:
                self.db.execute(sql.INSERT_ROOM, (name, key, created_at))
                row = self.db.execute(sql.FIND_ROOM, (key,)).fetchone()
            return RoomInfo(*row)
        return self._in_transaction(find_or_insert)

    def find_room(self, name: str) -> Optional[RoomInfo]:
        if not is_room_name(name):
            return None
        rows = self._select(sql.FIND_ROOM, (room_key(name),))
        return RoomInfo(*rows[0]) if rows else None

    def list_rooms(self) -> List[Tuple[RoomInfo, int]]:
        return [(RoomInfo(*row[:6]), row[6]) for row in self._select(sql.LIST_ROOMS)]

    def count_rooms(self) -> int:
        return self._select(sql.COUNT_ROOMS)[0][0]

    def join_room(self, account_id: int, room_id: int, at: str) -> bool:
        def insert():
            try:
                return self.db.execute(sql.JOIN_ROOM, (account_id, at, room_id)).rowcount > 0
            except sqlite3.IntegrityError:
                return False  # already a member
        return self._run(insert)

    def leave_room(self, account_id: int, room_id: int) -> bool:
        return self._run(lambda: self.db.execute(sql.LEAVE_ROOM, (account_id, room_id)).rowcount > 0)

    def rooms_of(self, account_id: int) -> List[RoomInfo]:
        return [RoomInfo(*row) for row in self._select(sql.ROOMS_OF, (account_id,))]

    def count_memberships(self, account_id: int) -> int:
        return self._select(sql.COUNT_MEMBERSHIPS, (account_id,))[0][0]

    def room_members(self, room_id: int) -> List[str]:
        return [name for (name,) in self._select(sql.ROOM_MEMBERS, (room_id,))]

    def set_topic(self, room_id: int, text: str, by: str, at: str) -> Optional[RoomInfo]:
        def update():
            self.db.execute(sql.SET_TOPIC, (text, by, at, room_id))
            row = self.db.execute(sql.ROOM_BY_ID, (room_id,)).fetchone()
            return RoomInfo(*row) if row else None
        return self._in_transaction(update)

    def delete_room(self, room_id: int, keep_history: bool) -> bool:
        self._live_rooms.clear()

        def delete():
            db = self.db
            if db.execute(sql.ROOM_EXISTS, (room_id,)).fetchone() is None:
                return False
            db.execute(sql.DELETE_MEMBERSHIPS, (room_id,))
            if keep_history:
                return db.execute(sql.UNNAME_ROOM, (room_id,)).rowcount > 0
            db.execute(sql.DELETE_ROOM_MESSAGES, (room_id,))
            db.execute(sql.DELETE_ROOM, (room_id,))
            return True
        return self._in_transaction(delete)

    # -- messages --

    def append_messages(self, batch: Sequence[NewMessage]) -> List[Optional[Message]]:
        def insert():
            db = self.db
            rows = []  # (sender_id, recipient_id, body, created_at) to insert, in order
            kept: List[Optional[tuple]] = []  # per message: (message, recipient as registered), or None
            recipients = {}
            rooms = self._rooms_for(batch)
            for message in batch:
                if message.recipient is None:
                    target = rooms.get(message.room_id)
                    if target is None:
                        kept.append(None)  # the room was deleted meanwhile
                        continue
                    room_id, room = target
                    rows.append((message.sender_id, None, room_id, message.body, message.created_at))
                    kept.append((message, None, room))
                    continue
                key = name_key(message.recipient)
                if key not in recipients:
                    recipients[key] = db.execute(sql.FIND_RECIPIENT, (key,)).fetchone()
                if recipients[key] is None:
                    kept.append(None)
                    continue
                recipient_id, recipient = recipients[key]
                rows.append((message.sender_id, recipient_id, None, message.body, message.created_at))
                kept.append((message, recipient, None))
            # The ids are consecutive: this transaction holds the write
            # lock, and AUTOINCREMENT gives each row the next one.
            if rows:
                _insert_rows(db, rows)
                next_id = db.execute("SELECT last_insert_rowid()").fetchone()[0] - len(rows) + 1
                if recipients:  # each conversation's latest message (migration 0005)
                    _insert_rows(db, sql.latest_in_conversations(rows, range(next_id, next_id + len(rows))),
                                 _MULTI_UPDATE_CONVERSATIONS)
            stored: List[Optional[Message]] = []
            for each in kept:
                if each is None:
                    stored.append(None)
                    continue
                message, recipient, room = each
                stored.append(Message(next_id, message.created_at, message.sender, recipient, message.body, room))
                next_id += 1
            return stored
        if not batch:
            return []
        return self._in_transaction(insert)

    def _rooms_for(self, batch):
        """{room_id: (id, name)} of the live rooms, the batch's among them;
        the key None stands for the default room. Kept from batch to batch:
        only this server deletes rooms, with delete_room, which forgets
        them, so a batch to rooms seen before reads nothing before its INSERT."""
        live = self._live_rooms
        wanted = {m.room_id for m in batch if m.recipient is None}
        if wanted.issubset(live):
            return live
        wanted.difference_update(live)
        if None in wanted:
            wanted.discard(None)
            row = self.db.execute(sql.FIND_ROOM_ID, (DEFAULT_ROOM,)).fetchone()
            if row is not None:
                live[None] = tuple(row)
        if wanted:
            ids = sorted(wanted)
            for room_id, name in self.db.execute(sql.live_rooms_among(ids), ids):
                live[room_id] = (room_id, name)
        return live

    def room_history(self, count: int, before: Optional[int] = None,
                     after: Optional[int] = None, room_id: Optional[int] = None) -> List[Message]:
        def select():
            target = room_id
            if target is None:
                row = self.db.execute(sql.FIND_ROOM_ID, (DEFAULT_ROOM,)).fetchone()
                if row is None:
                    return []
                target = row[0]
            return self._history(sql.room_history_query(target, count, before, after))
        return self._run(select)

    def conversation_history(self, account_id: int, peer_id: int, count: int, before: Optional[int] = None,
                             after: Optional[int] = None) -> List[Message]:
        def select():
            since = self._private_from(account_id)
            return self._history(sql.conversation_query(account_id, peer_id, count, before, after, since))
        return self._in_transaction(select)

    def missed(self, account_id: int, after: int, count: int) -> List[Message]:
        def select():
            room_ids = [room_id for (room_id,) in self.db.execute(sql.ROOM_IDS_OF, (account_id,))]
            since = self._private_from(account_id)
            return self._history(sql.missed_query(account_id, room_ids, after, count, since))
        # One transaction: the rooms and their messages as of one moment.
        return self._in_transaction(select)

    def _private_from(self, account_id):
        row = self.db.execute(sql.PRIVATE_FROM, (account_id,)).fetchone()
        return row[0] if row else None

    def start_private_history(self, account_id: int) -> None:
        self._run(self.db.execute, sql.START_PRIVATE_HISTORY, (account_id,))

    def went_offline(self, account_id: int) -> None:
        self._run(self.db.execute, sql.MARK_OFFLINE, (account_id,))

    def missed_private(self, account_id: int, count: int) -> Tuple[List[Message], bool]:
        def read_and_mark():
            (offline_after,), = self.db.execute(sql.OFFLINE_AFTER, (account_id,)).fetchall() or [(None,)]
            latest = self._history(sql.to_account_query(account_id, count + 1)) if offline_after is not None else []
            self.db.execute(sql.MARK_OFFLINE, (account_id,))
            return sql.missed_since_offline(account_id, offline_after, latest, count)
        return self._in_transaction(read_and_mark)

    def _history(self, query):
        statement, parameters, newest_first = query
        messages = [Message(*row) for row in self.db.execute(statement, parameters)]
        return messages[::-1] if newest_first else messages

    def set_ban(self, name: str, reason: Optional[str], at: str) -> bool:
        def update():
            cursor = self.db.execute(sql.SET_BAN, (reason, at if reason is not None else None, name_key(name)))
            return cursor.rowcount > 0
        return self._run(update)

    def last_message_id(self) -> int:
        return self._select(sql.LAST_MESSAGE_ID)[0][0]

    def ids_at(self, at: str) -> Tuple[Optional[int], Optional[int]]:
        # One transaction: every probe sees the same messages.
        return self._in_transaction(sql.ids_at, self._first_row, at)

    def _first_row(self, statement, *parameters):
        return self.db.execute(statement, parameters).fetchone()

    def targets(self, account_id: int, room_ids: Sequence[int], after_time: Optional[str],
                before_time: Optional[str], limit: int, newest: bool = False) -> List[Tuple[str, str]]:
        def select():
            # Strictly after the last message at or before after_time, and
            # before the first at or after before_time.
            after = sql.ids_at(self._first_row, after_time)[0] if after_time is not None else None
            before = sql.ids_at(self._first_row, before_time)[1] if before_time is not None else None
            statement, parameters, newest_first = sql.targets_query(
                account_id, room_ids, after, before, limit, newest, self._private_from(account_id))
            found = [tuple(row) for row in self.db.execute(statement, parameters)]
            return found[::-1] if newest_first else found
        # One transaction: the bounds and the conversations as of one moment.
        return self._in_transaction(select)

    def replace_password(self, name: str, old_hash: str, new_hash: str) -> bool:
        def update():
            cursor = self.db.execute(sql.REPLACE_PASSWORD, (new_hash, name_key(name), old_hash))
            return cursor.rowcount > 0
        return self._run(update)

    def banned_accounts(self) -> List[Account]:
        def select():
            return [Account(*row) for row in self.db.execute(sql.BANNED_ACCOUNTS)]
        return self._run(select)

    def names_with_hash(self, password_hash: str) -> List[str]:
        return [name for (name,) in self._select(sql.NAMES_WITH_HASH, (password_hash,))]

    def ping(self) -> None:
        self._run(self.db.execute, "SELECT 1")

    def close(self) -> None:
        if self.checkpoints is not None:
            self.checkpoints.close()
        self.db.close()


# A batch is inserted with multi-row INSERTs of these sizes, biggest first
# (150 rows: 128 + 16 + 4 + 2): half the cost of executemany(), which runs
# the one-row statement once per row. Few sizes, so that the sqlite3
# module's statement cache keeps them all compiled; 128 rows of 5 fields is
# under the 999 parameters old SQLite builds allow in one statement.
_CHUNKS = (128, 64, 32, 16, 8, 4, 2, 1)
_MULTI_INSERT = {size: sql.INSERT_MESSAGE + ", (?, ?, ?, ?, ?)" * (size - 1) for size in _CHUNKS}
# The same for the conversations of a batch, each row inserted or, for a
# conversation that has one, made to say the batch's latest message.
_MULTI_UPDATE_CONVERSATIONS = {
    size: "INSERT INTO conversations (account_id, peer_id, last_id) VALUES (?, ?, ?)" + ", (?, ?, ?)" * (size - 1)
    + " ON CONFLICT (account_id, peer_id) DO UPDATE SET last_id = MAX(last_id, excluded.last_id)"
    for size in _CHUNKS}


def _insert_rows(db, rows, statements=_MULTI_INSERT):
    """Insert the rows, in order: the messages', or with ``statements`` another table's."""
    start = 0
    for size in _CHUNKS:
        while len(rows) - start >= size:
            db.execute(statements[size], list(chain.from_iterable(rows[start:start + size])))
            start += size
